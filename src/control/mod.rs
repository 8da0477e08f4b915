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
use std::time::{Duration, Instant, SystemTime};

use log::{error, info, warn};
use mio::{Events, Interest, Poll, Token};
use serde_json::json;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::config::Config;
use crate::dhcp::server::unix_secs;
use crate::dhcp::socket::Service as DhcpService;
use crate::engine::stats::TftpSnapshot;
use crate::engine::tftp::TftpContext;
use crate::engine::Engine;
use http::{HttpServer, Request, Response};
use metrics::ProcessInfo;

const SIGNALS: Token = Token(0);
/// DHCP sockets are `DHCP_BASE..DHCP_BASE + 2`.
const DHCP_BASE: usize = 3 << 20;
/// How often the loop wakes without events, to notice workers that ended.
const TICK: Duration = Duration::from_millis(200);

/// The control thread's state.
pub struct Control {
    poll: Poll,
    signals: Signals,
    http: Option<HttpServer>,
    dhcp: Option<DhcpService>,
    /// DHCP sockets that hit their per-call bound and must be read again.
    dhcp_backlog: Vec<Token>,
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
        let dhcp = match &config.dhcp {
            Some(c) => {
                let mut service = DhcpService::open(c.clone(), SystemTime::now())
                    .map_err(|e| io::Error::new(e.kind(), format!("dhcp: {e}")))?;
                service.register(poll.registry(), DHCP_BASE)?;
                Some(service)
            }
            None => None,
        };
        Ok(Control {
            poll,
            signals,
            http,
            dhcp,
            dhcp_backlog: Vec::new(),
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
            let timeout = if self.dhcp_backlog.is_empty() {
                self.http
                    .as_ref()
                    .and_then(|h| h.next_deadline())
                    .map_or(TICK, |d| d.saturating_duration_since(now).min(TICK))
            } else {
                Duration::ZERO
            };
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
                    t if (DHCP_BASE..DHCP_BASE + 16).contains(&t.0) => self.dhcp_backlog.push(t),
                    _ => {}
                }
            }
            self.dhcp_ready();
            if let Some(h) = self.http.as_mut() {
                h.expire(self.poll.registry(), now);
            }
            // While stopping, keep serving signals (a second one ends the
            // grace early) and HTTP (health says 503) until every worker is
            // done; a worker that ends unasked is a failure: stop at once.
            if self.engine.all_finished() || (!self.stopping && self.engine.any_finished()) {
                break;
            }
        }
        let stats = self.engine.stats().to_vec();
        let stopping = self.stopping;
        let clean = self.engine.join();
        if self.config.tftp.is_some() {
            log_summary(&TftpSnapshot::sum(&stats));
        }
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

    /// Serves the DHCP sockets that are readable, a bounded number of
    /// datagrams each, so signals and HTTP get their turn in a flood.
    fn dhcp_ready(&mut self) {
        let Some(dhcp) = self.dhcp.as_mut() else {
            self.dhcp_backlog.clear();
            return;
        };
        let now = SystemTime::now();
        let mut again = Vec::new();
        for token in self.dhcp_backlog.drain(..) {
            if dhcp.on_readable(token, now) && !again.contains(&token) {
                again.push(token);
            }
        }
        self.dhcp_backlog = again;
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
        let mut resp = self.route_get(req);
        if req.method == "HEAD" {
            // Same head (Content-Length included), no body.
            resp.head_only = true;
        }
        resp
    }

    fn route_get(&self, req: &Request) -> Response {
        if req.method != "GET" && req.method != "HEAD" {
            return Response::text(405, "only GET\n");
        }
        let path = req.path.split('?').next().unwrap_or("");
        match path {
            "/metrics" => Response {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: self.metrics().into_bytes(),
                head_only: false,
            },
            "/health" => {
                let (ok, body) = self.health();
                Response {
                    status: if ok { 200 } else { 503 },
                    content_type: "application/json",
                    body: body.to_string().into_bytes(),
                    head_only: false,
                }
            }
            "/api/v1/status" => Response {
                status: 200,
                content_type: "application/json",
                body: self.status().to_string().into_bytes(),
                head_only: false,
            },
            _ => Response::text(404, "not found\n"),
        }
    }

    fn metrics(&self) -> String {
        let tftp = self.config.tftp.as_ref().map(|_| self.tftp_snapshot());
        let mut text = metrics::render(tftp.as_ref(), &self.process_info());
        if self.config.iscsi.is_some() {
            metrics::render_iscsi(&mut text, self.engine.stats());
        }
        if let Some(d) = &self.dhcp {
            let now = unix_secs(SystemTime::now());
            metrics::render_dhcp(&mut text, d.counters(), d.bindings().active(now).count());
        }
        text
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
        let state = |on: bool| on.then_some(if workers_ok { "running" } else { "stopped" });
        let services = json!({
            "tftp": state(self.config.tftp.is_some()),
            "dhcp": state(self.dhcp.is_some()),
            "iscsi": state(self.config.iscsi.is_some()),
        });
        let status = if workers_ok { "ok" } else { "unavailable" };
        (
            workers_ok,
            json!({ "status": status, "services": services }),
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
                "dhcp": self.dhcp_status(),
                "iscsi": self.config.iscsi.as_ref().map(|c| json!({
                    "listen": c.listen,
                    "targets": c.target.iter().map(|t| json!({
                        "iqn": t.iqn,
                        "luns": t.luns.iter().map(|l| json!({"path": l.path, "read_only": l.read_only})).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                })),
            },
        })
    }

    fn dhcp_status(&self) -> serde_json::Value {
        let (Some(d), Some(c)) = (&self.dhcp, &self.config.dhcp) else {
            return serde_json::Value::Null;
        };
        let now = unix_secs(SystemTime::now());
        let leases: Vec<serde_json::Value> = d
            .bindings()
            .active(now)
            .map(|(ip, lease)| json!({ "ip": ip, "lease": format!("{lease:?}") }))
            .collect();
        let k = d.counters();
        json!({
            "interface": c.interface,
            "mode": c.mode,
            "counters": {
                "received": k.received, "offers": k.offers, "acks": k.acks, "naks": k.naks,
                "ignored": k.ignored, "store_errors": k.store_errors, "send_errors": k.send_errors,
            },
            "leases": leases,
        })
    }

    /// Re-reads the file; applies it if valid, keeps the running one if not.
    /// Everything that can fail is checked before anything is applied.
    fn reload(&mut self) {
        let mut new = match Config::load(&self.path) {
            Ok(c) => c,
            Err(e) => {
                error!("reload refused, keeping the running configuration: {e}");
                return;
            }
        };
        if new.tftp.is_some() != self.config.tftp.is_some()
            || new.dhcp.is_some() != self.config.dhcp.is_some()
            || new.iscsi.is_some() != self.config.iscsi.is_some()
        {
            error!("reload refused: adding or removing a service needs a restart");
            return;
        }
        // Sockets stay as they are; what is reported must say so too.
        if let (Some(t), Some(old)) = (new.tftp.as_mut(), &self.config.tftp) {
            if t.listen != old.listen {
                warn!(
                    "reload: tftp.listen changes need a restart; keeping {:?}",
                    old.listen
                );
                t.listen = old.listen.clone();
            }
        }
        if new.http != self.config.http {
            warn!("reload: [http] changes need a restart");
            new.http = self.config.http.clone();
        }
        if new.engine != self.config.engine {
            warn!(
                "reload: [engine] changes need a restart; keeping {:?}",
                self.config.engine
            );
            new.engine = self.config.engine.clone();
        }
        let tftp_ctx = match &new.tftp {
            Some(t) => match TftpContext::new(t, crate::ipxe::generated_files(&new)) {
                Ok(ctx) => Some(Arc::new(ctx)),
                Err(e) => {
                    error!("reload refused, keeping the running configuration: {e}");
                    return;
                }
            },
            None => None,
        };
        if let (Some(i), Some(old)) = (new.iscsi.as_mut(), &self.config.iscsi) {
            if i.listen != old.listen {
                warn!(
                    "reload: iscsi.listen changes need a restart; keeping {:?}",
                    old.listen
                );
                i.listen = old.listen.clone();
            }
        }
        let iscsi_ctx = match &new.iscsi {
            Some(i) => match crate::engine::iscsi::IscsiContext::new(i) {
                Ok(ctx) => Some(Arc::new(ctx)),
                Err(e) => {
                    error!("reload refused, keeping the running configuration: {e}");
                    return;
                }
            },
            None => None,
        };
        if let (Some(d), Some(service)) = (&new.dhcp, self.dhcp.as_mut()) {
            if let Err((key, reason)) = service.reconfigure(d.clone()) {
                error!("reload refused: {key} {reason}; keeping the running configuration");
                return;
            }
        }
        if let Some(ctx) = tftp_ctx {
            self.engine.reload_tftp(ctx);
        }
        if let Some(ctx) = iscsi_ctx {
            self.engine.reload_iscsi(ctx);
        }
        self.generation += 1;
        self.config = new;
        info!(
            "reload: configuration generation {} applied to new requests",
            self.generation
        );
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
