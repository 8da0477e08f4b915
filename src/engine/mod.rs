//! The dataplane engine: one worker thread per core, each with its own mio
//! poll (epoll on Linux, kqueue on FreeBSD), its own sockets and its own
//! timers, pinned to its core.
//!
//! Requests are spread by the kernel: every worker binds its own listener to
//! each configured address with SO_REUSEPORT (SO_REUSEPORT_LB on FreeBSD),
//! and a transfer stays on the worker that accepted it. Nothing on the packet
//! path is shared between workers except the read-only file images.
//!
//! Other threads talk to a worker only through its command channel and its
//! mio waker ([`Engine::shutdown`], [`Engine::reload_tftp`]); the worker
//! never waits on them. Counters are read through [`Engine::stats`].

pub mod image;
pub mod iscsi;
pub mod outq;
pub mod stats;
pub mod tftp;
mod timers;
mod worker;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Sender};
use log::{info, warn};
use mio::{Poll, Waker};
use socket2::{Domain, Socket, Type};

use crate::config::Config;
use crate::sys;
use stats::WorkerStats;
use tftp::TftpContext;
use worker::Worker;

/// What other threads may ask of a worker.
#[derive(Debug)]
pub enum Command {
    /// Stop accepting; let transfers finish within the grace period.
    Shutdown,
    /// End every transfer now.
    Abort,
    /// Use this TFTP context for new requests.
    ReloadTftp(Arc<TftpContext>),
    /// Use this iSCSI context for new logins.
    ReloadIscsi(Arc<iscsi::IscsiContext>),
}

struct WorkerHandle {
    thread: JoinHandle<()>,
    commands: Sender<Command>,
    waker: Arc<Waker>,
}

/// The running workers.
pub struct Engine {
    workers: Vec<WorkerHandle>,
    stats: Vec<Arc<WorkerStats>>,
    tftp: Arc<tftp::Shared>,
}

/// Fails when another socket already holds `addr`: a bind without
/// SO_REUSEPORT is refused if any socket, sharing or not, is bound there.
/// A dlsd restarted right after SIGTERM may find its predecessor's
/// listeners for a moment (they close a millisecond or so after the
/// signal), so the probe is tried again for up to [`CLAIM_WAIT`] before the
/// start is refused. The probe is closed at once; two dlsd started at the
/// same instant, or a program that binds later with SO_REUSEPORT, can still
/// share the address. For TCP, SO_REUSEADDR lets the probe past
/// connections of an earlier run in TIME_WAIT, never past a listener.
/// (FreeBSD: the same rule with SO_REUSEPORT_LB; untested here.)
fn refuse_claimed_port(addr: SocketAddr, kind: Type, key: &str) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let waited_since = Instant::now();
    let mut told = false;
    loop {
        let probe = Socket::new(Domain::for_address(addr), kind, None)?;
        if addr.is_ipv6() {
            probe.set_only_v6(true)?;
        }
        if kind == Type::STREAM {
            probe.set_reuse_address(true)?;
        }
        match probe.bind(&addr.into()) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                if waited_since.elapsed() >= CLAIM_WAIT {
                    return Err(io::Error::new(
                        e.kind(),
                        format!(
                            "{key} {addr}: already in use (by another process, \
                             or by connections of one that ended)"
                        ),
                    ));
                }
                if !told {
                    told = true;
                    info!(
                        "{key} {addr}: in use; waiting up to {CLAIM_WAIT:?} for it to be released"
                    );
                }
                std::thread::sleep(CLAIM_RETRY);
            }
            _ => return Ok(()),
        }
    }
}

/// How long a start waits for a listen address another process holds.
const CLAIM_WAIT: Duration = Duration::from_secs(1);
const CLAIM_RETRY: Duration = Duration::from_millis(50);

impl Engine {
    /// Binds every listener of every worker, then starts the workers. All
    /// errors an operator can cause (address in use, missing root) surface
    /// here, before anything serves.
    pub fn start(config: &Config) -> io::Result<Engine> {
        let count = config.worker_count();
        let cores = sys::allowed_cores();
        let shared = Arc::new(tftp::Shared::default());
        let tftp_ctx = match &config.tftp {
            Some(t) => Some(Arc::new(TftpContext::new(
                t,
                crate::ipxe::generated_files(config),
            )?)),
            None => None,
        };
        let iscsi_ctx = match &config.iscsi {
            Some(i) => Some(Arc::new(iscsi::IscsiContext::new(i)?)),
            None => None,
        };

        // SO_REUSEPORT would let these binds join the listeners of another
        // running dlsd (same user) and split its clients with it, silently.
        if let Some(t) = &config.tftp {
            for addr in &t.listen {
                refuse_claimed_port(*addr, Type::DGRAM, "tftp.listen")?;
            }
        }
        if let Some(i) = &config.iscsi {
            for addr in &i.listen {
                refuse_claimed_port(*addr, Type::STREAM, "iscsi.listen")?;
            }
        }

        let mut workers = Vec::with_capacity(count);
        let mut all_stats = Vec::with_capacity(count);
        let mut pending = Vec::with_capacity(count);
        for id in 0..count {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), worker::WAKER)?);
            let (tx, rx) = channel::unbounded();
            let stats = Arc::new(WorkerStats::default());
            let mut listeners = Vec::new();
            if let Some(t) = &config.tftp {
                for addr in &t.listen {
                    listeners.push(tftp::bind_listener(*addr)?);
                }
            }
            let mut iscsi_listeners = Vec::new();
            if let Some(i) = &config.iscsi {
                for addr in &i.listen {
                    iscsi_listeners.push(iscsi::bind_listener(*addr)?);
                }
            }
            let core = if config.engine.pin_workers && !cores.is_empty() {
                Some(cores[id % cores.len()])
            } else {
                None
            };
            let worker = Worker::new(
                id,
                poll,
                rx,
                stats.clone(),
                &config.engine,
                tftp_ctx.clone().map(|ctx| (ctx, shared.clone(), listeners)),
                iscsi_ctx.clone().map(|ctx| (ctx, iscsi_listeners)),
            )?;
            pending.push((worker, core, tx, waker));
            all_stats.push(stats);
        }
        for (worker, core, tx, waker) in pending {
            let id = worker.id();
            let thread = std::thread::Builder::new()
                .name(format!("dls-worker-{id}"))
                .spawn(move || {
                    if let Some(core) = core {
                        if let Err(e) = sys::pin_to_core(core) {
                            warn!("worker {id}: cannot pin to core {core}: {e}");
                        }
                    }
                    worker.run();
                })?;
            workers.push(WorkerHandle {
                thread,
                commands: tx,
                waker,
            });
        }
        if let Some(i) = &config.iscsi {
            info!(
                "iscsi: {} targets on {:?} with {count} workers",
                i.target.len(),
                i.listen
            );
        }
        if let Some(t) = &config.tftp {
            info!(
                "tftp: serving {} on {:?} with {count} workers",
                t.root.display(),
                t.listen
            );
        }
        Ok(Engine {
            workers,
            stats: all_stats,
            tftp: shared,
        })
    }

    fn broadcast(&self, make: impl Fn() -> Command) {
        for w in &self.workers {
            // A worker that already exited has dropped its receiver; fine.
            let _ = w.commands.send(make());
            let _ = w.waker.wake();
        }
    }

    /// Asks every worker to stop accepting and to finish within the grace.
    pub fn shutdown(&self) {
        self.broadcast(|| Command::Shutdown);
    }

    /// Asks every worker to end everything now.
    pub fn abort(&self) {
        self.broadcast(|| Command::Abort);
    }

    /// New TFTP requests use `ctx`; transfers in flight are untouched.
    pub fn reload_tftp(&self, ctx: Arc<TftpContext>) {
        self.broadcast(|| Command::ReloadTftp(ctx.clone()));
    }

    /// New iSCSI logins use `ctx`; sessions in flight are untouched.
    pub fn reload_iscsi(&self, ctx: Arc<iscsi::IscsiContext>) {
        self.broadcast(|| Command::ReloadIscsi(ctx.clone()));
    }

    /// Counters of every worker, readable while they run.
    pub fn stats(&self) -> &[Arc<WorkerStats>] {
        &self.stats
    }

    /// What the TFTP services share (file images, transfers in flight).
    pub fn tftp_shared(&self) -> &Arc<tftp::Shared> {
        &self.tftp
    }

    /// True once any worker thread has ended (normally only after shutdown).
    pub fn any_finished(&self) -> bool {
        self.workers.iter().any(|w| w.thread.is_finished())
    }

    /// True once every worker thread has ended.
    pub fn all_finished(&self) -> bool {
        self.workers.iter().all(|w| w.thread.is_finished())
    }

    /// Waits for every worker; false if one panicked.
    pub fn join(self) -> bool {
        let mut clean = true;
        for w in self.workers {
            if w.thread.join().is_err() {
                clean = false;
            }
        }
        clean
    }
}
