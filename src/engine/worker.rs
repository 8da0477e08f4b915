//! One worker thread: a poll loop over the sockets it owns.
//!
//! Each turn of the loop waits for readiness or for the earliest timer,
//! handles what is ready with per-source bounds, then runs expired timers and
//! commands. Sources that hit their bound are kept in a backlog and the next
//! wait does not block, so no source starves and no event is lost with
//! edge-triggered readiness.
//!
//! After a turn that found work the worker polls without sleeping for a
//! short while (`engine.busy_poll`) before it blocks again. A lock-step
//! transfer is one round trip per block, and on this machine's virtual CPUs
//! waking a thread blocked in epoll costs about as much as the rest of the
//! round trip together: spinning for the next ACK measured 2.7x the
//! single-stream throughput at blksize 1432 (perf/README.md). The price is
//! up to one core per worker while requests keep arriving; an idle worker
//! sleeps after one `busy_poll` period.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::Receiver;
use log::{debug, error, info};
use mio::{Events, Poll, Token};

use super::iscsi::{IscsiContext, IscsiService};
use super::stats::WorkerStats;
use super::tftp as tftp_shared;
use super::tftp::{TftpContext, TftpService};
use super::Command;
use crate::config::EngineConfig;

pub const WAKER: Token = Token(0);

/// Readiness events taken per wait.
const EVENTS_CAPACITY: usize = 1024;

pub struct Worker {
    id: usize,
    poll: Poll,
    commands: Receiver<Command>,
    grace: Duration,
    busy_poll: Duration,
    tftp: Option<TftpService>,
    iscsi: Option<IscsiService>,
    /// Set once shutdown was asked: the moment transfers must be over.
    stop_by: Option<Instant>,
}

impl Worker {
    pub fn new(
        id: usize,
        poll: Poll,
        commands: Receiver<Command>,
        stats: Arc<WorkerStats>,
        engine: &EngineConfig,
        tftp: Option<(
            Arc<TftpContext>,
            Arc<tftp_shared::Shared>,
            Vec<mio::net::UdpSocket>,
        )>,
        iscsi: Option<(Arc<IscsiContext>, Vec<mio::net::TcpListener>)>,
    ) -> io::Result<Worker> {
        let tftp = match tftp {
            Some((ctx, cache, listeners)) => Some(TftpService::new(
                ctx,
                cache,
                stats.clone(),
                listeners,
                poll.registry(),
            )?),
            None => None,
        };
        let iscsi = match iscsi {
            Some((ctx, listeners)) => Some(IscsiService::new(
                ctx,
                stats.iscsi.clone(),
                id,
                listeners,
                poll.registry(),
            )?),
            None => None,
        };
        Ok(Worker {
            id,
            poll,
            commands,
            grace: engine.shutdown_grace,
            busy_poll: engine.busy_poll,
            tftp,
            iscsi,
            stop_by: None,
        })
    }

    pub fn id(&self) -> usize {
        self.id
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        // When a wakeup last found something to do (the waker aside).
        let mut worked_at: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let timeout = next_timeout(self.poll_timeout(now), worked_at, self.busy_poll, now);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                error!("worker {}: poll failed: {e}", self.id);
                break;
            }
            let now = Instant::now();
            let mut worked = false;
            for event in events.iter() {
                let token = event.token();
                if token == WAKER {
                    continue;
                }
                worked = true;
                if let Some(tftp) = self.tftp.as_mut().filter(|_| TftpService::owns(token)) {
                    tftp.ready(token, self.poll.registry(), now);
                } else if let Some(iscsi) =
                    self.iscsi.as_mut().filter(|_| IscsiService::owns(token))
                {
                    iscsi.ready(token, self.poll.registry(), now);
                }
            }
            if let Some(iscsi) = self.iscsi.as_mut() {
                iscsi.run_pending(self.poll.registry(), now);
            }
            if let Some(tftp) = self.tftp.as_mut() {
                tftp.run_pending(self.poll.registry(), now);
            }
            if !self.handle_commands(now) {
                break;
            }
            // The spin is counted from the end of the work, so a turn that
            // took longer than `busy_poll` (a large window, a 1 MiB read)
            // is still followed by one.
            if worked {
                worked_at = Some(Instant::now());
            }
            if let Some(stop_by) = self.stop_by {
                if self.active() == 0 {
                    break;
                }
                if now >= stop_by {
                    info!(
                        "worker {}: grace period over, ending {} transfers",
                        self.id,
                        self.active()
                    );
                    self.abort_all(now);
                    break;
                }
            }
        }
        debug!("worker {}: stopped", self.id);
    }

    fn active(&self) -> usize {
        self.tftp.as_ref().map_or(0, |t| t.active()) + self.iscsi.as_ref().map_or(0, |i| i.active())
    }

    fn abort_all(&mut self, now: Instant) {
        if let Some(tftp) = self.tftp.as_mut() {
            tftp.abort_all(self.poll.registry(), now);
        }
        if let Some(iscsi) = self.iscsi.as_mut() {
            iscsi.close_all(self.poll.registry());
        }
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        let tftp = self.tftp.as_ref();
        let iscsi = self.iscsi.as_ref();
        if tftp.is_some_and(|t| t.has_backlog()) || iscsi.is_some_and(|i| i.has_backlog()) {
            return Some(Duration::ZERO);
        }
        let deadline = [
            tftp.and_then(|t| t.next_deadline()),
            iscsi.and_then(|i| i.next_deadline()),
            self.stop_by,
        ]
        .into_iter()
        .flatten()
        .min();
        deadline.map(|d| d.saturating_duration_since(now))
    }

    /// Applies queued commands; false when the worker must exit now.
    fn handle_commands(&mut self, now: Instant) -> bool {
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                Command::Shutdown => {
                    if self.stop_by.is_none() {
                        self.stop_by = Some(now + self.grace);
                        if let Some(tftp) = self.tftp.as_mut() {
                            tftp.stop_listening(self.poll.registry());
                        }
                        if let Some(iscsi) = self.iscsi.as_mut() {
                            iscsi.stop_listening(self.poll.registry());
                        }
                        debug!(
                            "worker {}: shutting down, {} transfers in flight",
                            self.id,
                            self.active()
                        );
                    }
                }
                Command::Abort => {
                    self.abort_all(now);
                    return false;
                }
                Command::ReloadIscsi(ctx) => {
                    if let Some(iscsi) = self.iscsi.as_mut() {
                        iscsi.reload(ctx);
                    }
                }
                Command::ReloadTftp(ctx) => {
                    if let Some(tftp) = self.tftp.as_mut() {
                        tftp.reload(ctx);
                    }
                }
            }
        }
        true
    }
}

/// The wait before the next turn: `timers` (what the timers and backlog
/// ask for, `None` for no deadline), shortened to a poll that does not
/// sleep while the last turn with work is less than `busy_poll` ago.
fn next_timeout(
    timers: Option<Duration>,
    worked_at: Option<Instant>,
    busy_poll: Duration,
    now: Instant,
) -> Option<Duration> {
    let spinning = worked_at.is_some_and(|t| now.saturating_duration_since(t) < busy_poll);
    if spinning {
        Some(Duration::ZERO)
    } else {
        timers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPIN: Duration = Duration::from_micros(50);

    #[test]
    fn spins_only_within_busy_poll_of_the_last_work() {
        let t0 = Instant::now();
        let timers = Some(Duration::from_millis(200));
        // Work 10 us ago: poll without sleeping.
        let now = t0 + Duration::from_micros(10);
        assert_eq!(
            next_timeout(timers, Some(t0), SPIN, now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            next_timeout(None, Some(t0), SPIN, now),
            Some(Duration::ZERO)
        );
        // One busy_poll period later the worker sleeps until its timers.
        let now = t0 + SPIN;
        assert_eq!(next_timeout(timers, Some(t0), SPIN, now), timers);
        assert_eq!(next_timeout(None, Some(t0), SPIN, now), None);
    }

    #[test]
    fn never_spins_without_work_or_when_turned_off() {
        let t0 = Instant::now();
        let timers = Some(Duration::from_millis(5));
        assert_eq!(next_timeout(timers, None, SPIN, t0), timers);
        assert_eq!(next_timeout(None, None, SPIN, t0), None);
        assert_eq!(next_timeout(timers, Some(t0), Duration::ZERO, t0), timers);
    }
}
