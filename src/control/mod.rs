//! The control thread: everything that is not the dataplane.
//!
//! It owns its own mio poll with the signal pipe and the HTTP endpoint, and
//! talks to the workers only through [`Engine`]'s channels and the
//! counters they publish; it never waits on a worker, and they never wait on
//! it. SIGHUP reloads the configuration; SIGINT/SIGTERM stop the workers
//! gracefully (a second one ends their transfers at once).

pub mod http;
pub mod metrics;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use mio::{Events, Interest, Poll, Token};
use serde_json::json;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::config::Config;
use crate::engine::stats::TftpSnapshot;
use crate::engine::tftp::TftpContext;
use crate::engine::Engine;
use http::{HttpServer, Request, Response};
use metrics::ProcessInfo;

const SIGNALS: Token = Token(0);
/// How often the loop wakes without events, to notice workers that ended.
const TICK: Duration = Duration::from_millis(200);

/// The control thread's state.
pub struct Control {
    poll: Poll,
    signals: Signals,
    http: Option<HttpServer>,
    engine: Engine,
    path: PathBuf,
    config: Config,
    generation: u64,
    started: Instant,
    stopping: bool,
}

impl Control {
    /// Sets up signals and the HTTP endpoint around a started engine.
    pub fn new(path: &Path, config: Config, engine: Engine) -> io::Result<Control> {
        let poll = Poll::new()?;
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        let http = if config.http.enabled {
            let server = HttpServer::bind(config.http.listen, poll.registry())?;
            info!("http: listening on {}", server.local_addr()?);
            Some(server)
        } else {
            None
        };
        Ok(Control {
            poll,
            signals,
            http,
            engine,
            path: path.to_owned(),
            config,
            generation: 1,
            started: Instant::now(),
            stopping: false,
        })
    }

    /// Runs until the workers have stopped; true after a clean stop.
    pub fn run(mut self) -> bool {
        let mut events = Events::with_capacity(256);
        loop {
            let now = Instant::now();
            let timeout = self
                .http
                .as_ref()
                .and_then(|h| h.next_deadline())
                .map_or(TICK, |d| d.saturating_duration_since(now).min(TICK));
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    error!("control: poll failed: {e}");
                    break;
                }
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    SIGNALS => self.handle_signals(),
                    t if HttpServer::owns(t) => self.http_ready(t, now),
                    _ => {}
                }
            }
            if let Some(h) = self.http.as_mut() {
                h.expire(self.poll.registry(), now);
            }
            if self.engine.any_finished() {
                break;
            }
        }
        let stats = self.engine.stats().to_vec();
        let stopping = self.stopping;
        let clean = self.engine.join();
        log_summary(&TftpSnapshot::sum(&stats));
        if !(clean && stopping) {
            error!("a worker thread ended unexpectedly");
        }
        clean && stopping
    }

    fn handle_signals(&mut self) {
        let pending: Vec<i32> = self.signals.pending().collect();
        for signal in pending {
            match signal {
                SIGHUP => self.reload(),
                _ if self.stopping => {
                    warn!("second stop signal: ending transfers now");
                    self.engine.abort();
                }
                _ => {
                    info!("stop signal: no new requests; finishing transfers in flight");
                    self.stopping = true;
                    self.engine.shutdown();
                }
            }
        }
    }

    fn http_ready(&mut self, token: Token, now: Instant) {
        let Some(mut server) = self.http.take() else {
            return;
        };
        let registry = self.poll.registry().try_clone();
        if let Ok(registry) = registry {
            server.ready(token, &registry, now, &mut |req| self.route(req));
        }
        self.http = Some(server);
    }

    fn route(&self, req: &Request) -> Response {
        if req.method != "GET" && req.method != "HEAD" {
            return Response::text(405, "only GET\n");
        }
        let path = req.path.split('?').next().unwrap_or("");
        match path {
            "/metrics" => Response {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: metrics::render(Some(&self.tftp_snapshot()), &self.process_info())
                    .into_bytes(),
            },
            "/health" => {
                let (ok, body) = self.health();
                Response {
                    status: if ok { 200 } else { 503 },
                    content_type: "application/json",
                    body: body.to_string().into_bytes(),
                }
            }
            "/api/v1/status" => Response {
                status: 200,
                content_type: "application/json",
                body: self.status().to_string().into_bytes(),
            },
            _ => Response::text(404, "not found\n"),
        }
    }

    fn tftp_snapshot(&self) -> TftpSnapshot {
        TftpSnapshot::sum(self.engine.stats())
    }

    fn process_info(&self) -> ProcessInfo {
        ProcessInfo {
            version: env!("CARGO_PKG_VERSION"),
            uptime: self.started.elapsed(),
            config_generation: self.generation,
            workers: self.engine.stats().len(),
        }
    }

    fn health(&self) -> (bool, serde_json::Value) {
        let workers_ok = !self.engine.any_finished() && !self.stopping;
        let tftp = self
            .config
            .tftp
            .as_ref()
            .map(|_| if workers_ok { "running" } else { "stopped" });
        (
            workers_ok,
            json!({ "status": if workers_ok { "ok" } else { "unavailable" }, "services": { "tftp": tftp } }),
        )
    }

    fn status(&self) -> serde_json::Value {
        let t = self.tftp_snapshot();
        let errors: serde_json::Map<String, serde_json::Value> = t
            .errors
            .iter()
            .map(|(k, n)| (k.name().to_owned(), json!(n)))
            .collect();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": self.started.elapsed().as_secs_f64(),
            "config_generation": self.generation,
            "workers": self.engine.stats().len(),
            "services": {
                "tftp": self.config.tftp.as_ref().map(|c| json!({
                    "listen": c.listen,
                    "root": c.root,
                    "counters": {
                        "requests": t.requests,
                        "completed": t.completed,
                        "bytes_sent": t.bytes_sent,
                        "packets_sent": t.packets_sent,
                        "retransmits": t.retransmits,
                        "active": t.active,
                        "errors": errors,
                    },
                })),
            },
        })
    }

    /// Re-reads the file; applies it if valid, keeps the running one if not.
    fn reload(&mut self) {
        let mut new = match Config::load(&self.path) {
            Ok(c) => c,
            Err(e) => {
                error!("reload refused, keeping the running configuration: {e}");
                return;
            }
        };
        let (Some(t), Some(old)) = (new.tftp.as_mut(), &self.config.tftp) else {
            error!("reload refused: adding or removing a service needs a restart");
            return;
        };
        // Sockets stay as they are; what is reported must say so too.
        if t.listen != old.listen {
            warn!(
                "reload: tftp.listen changes need a restart; keeping {:?}",
                old.listen
            );
            t.listen = old.listen.clone();
        }
        if new.http != self.config.http {
            warn!("reload: [http] changes need a restart");
            new.http = self.config.http.clone();
        }
        let Some(t) = &new.tftp else { return };
        match TftpContext::new(t, self.engine.stats().len()) {
            Ok(ctx) => {
                self.engine.reload_tftp(Arc::new(ctx));
                self.generation += 1;
                self.config = new;
                info!(
                    "reload: configuration generation {} applied to new requests",
                    self.generation
                );
            }
            Err(e) => error!("reload refused, keeping the running configuration: {e}"),
        }
    }
}

fn log_summary(s: &TftpSnapshot) {
    let errors: Vec<String> = s
        .errors
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{}={n}", k.name()))
        .collect();
    info!(
        "tftp summary: requests={} completed={} bytes_sent={} packets_sent={} retransmits={} errors=[{}] p50={}us p99={}us max={}us",
        s.requests,
        s.completed,
        s.bytes_sent,
        s.packets_sent,
        s.retransmits,
        errors.join(" "),
        s.durations.value_at_quantile(0.5),
        s.durations.value_at_quantile(0.99),
        s.durations.max()
    );
}
