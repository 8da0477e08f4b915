//! Per-worker counters and latency histograms.
//!
//! Each worker owns one [`WorkerStats`] and is its only writer: counters are
//! relaxed atomics bumped on the packet path, so a reader (the control
//! thread, the exit summary) sums them across workers at any time without
//! stopping anyone. The transfer-time histogram sits behind a mutex that the
//! worker takes once per finished transfer, never per packet.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam::utils::CachePadded;
use hdrhistogram::Histogram;

/// Why a TFTP request or transfer did not end in a completed transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TftpError {
    /// Not a TFTP packet, or a request without its NULs.
    Malformed,
    /// File not found (ERROR 1).
    NotFound,
    /// Refused name or file (ERROR 2): traversal, symlink escape, not a file.
    AccessDenied,
    /// Mode other than octet/netascii.
    BadMode,
    /// WRQ: uploads are not accepted.
    WriteRefused,
    /// Over the concurrent transfer limit.
    Busy,
    /// A packet from a stranger on a transfer's port (ERROR 5 sent).
    UnknownTid,
    /// The client ended the transfer with an ERROR (UEFI's size probe does).
    ClientAbort,
    /// Retries ran out.
    Timeout,
    /// The file shrank under a transfer.
    FileChanged,
    /// A send failed for another reason, or the server shut down mid-way.
    Aborted,
    /// The server could not open, map or read a file it found.
    Internal,
}

impl TftpError {
    pub const ALL: [TftpError; 12] = [
        TftpError::Malformed,
        TftpError::NotFound,
        TftpError::AccessDenied,
        TftpError::BadMode,
        TftpError::WriteRefused,
        TftpError::Busy,
        TftpError::UnknownTid,
        TftpError::ClientAbort,
        TftpError::Timeout,
        TftpError::FileChanged,
        TftpError::Aborted,
        TftpError::Internal,
    ];

    /// Label for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            TftpError::Malformed => "malformed",
            TftpError::NotFound => "not_found",
            TftpError::AccessDenied => "access_denied",
            TftpError::BadMode => "bad_mode",
            TftpError::WriteRefused => "write_refused",
            TftpError::Busy => "busy",
            TftpError::UnknownTid => "unknown_tid",
            TftpError::ClientAbort => "client_abort",
            TftpError::Timeout => "timeout",
            TftpError::FileChanged => "file_changed",
            TftpError::Aborted => "aborted",
            TftpError::Internal => "internal",
        }
    }
}

/// Counters of one worker's TFTP service.
#[derive(Debug)]
pub struct TftpStats {
    pub requests: AtomicU64,
    pub completed: AtomicU64,
    /// Payload bytes in DATA packets, retransmissions included.
    pub bytes_sent: AtomicU64,
    pub packets_sent: AtomicU64,
    /// DATA packets sent again after a timeout or a window restart.
    pub retransmits: AtomicU64,
    /// Transfers in flight now (a gauge).
    pub active: AtomicU64,
    errors: [AtomicU64; TftpError::ALL.len()],
    /// Duration of completed transfers, in microseconds.
    pub durations: Mutex<Histogram<u64>>,
}

impl Default for TftpStats {
    fn default() -> Self {
        TftpStats {
            requests: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            packets_sent: AtomicU64::new(0),
            retransmits: AtomicU64::new(0),
            active: AtomicU64::new(0),
            errors: Default::default(),
            durations: Mutex::new(new_histogram()),
        }
    }
}

/// Microseconds from 1 µs to one hour, 3 significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    // Constant bounds that satisfy the crate's rules (low >= 1, high >= 2 * low,
    // sigfig <= 5), so this cannot fail.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid constant histogram bounds")
}

impl TftpStats {
    pub fn count_error(&self, kind: TftpError) {
        self.errors[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn errors(&self, kind: TftpError) -> u64 {
        self.errors[kind as usize].load(Ordering::Relaxed)
    }

    pub fn record_duration(&self, d: Duration) {
        let micros = d.as_micros().clamp(1, 3_600_000_000) as u64;
        if let Ok(mut h) = self.durations.lock() {
            let _ = h.record(micros);
        }
    }
}

/// Everything one worker counts.
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub tftp: CachePadded<TftpStats>,
    pub iscsi: Arc<crate::engine::iscsi::IscsiStats>,
}

/// Counters summed over workers at one moment.
#[derive(Debug, Clone)]
pub struct TftpSnapshot {
    pub requests: u64,
    pub completed: u64,
    pub bytes_sent: u64,
    pub packets_sent: u64,
    pub retransmits: u64,
    pub active: u64,
    pub errors: Vec<(TftpError, u64)>,
    pub durations: Histogram<u64>,
}

impl TftpSnapshot {
    pub fn sum(workers: &[Arc<WorkerStats>]) -> TftpSnapshot {
        let load = |f: fn(&TftpStats) -> &AtomicU64| {
            workers
                .iter()
                .map(|w| f(&w.tftp).load(Ordering::Relaxed))
                .sum()
        };
        let mut durations = new_histogram();
        for w in workers {
            if let Ok(h) = w.tftp.durations.lock() {
                let _ = durations.add(&*h);
            }
        }
        TftpSnapshot {
            requests: load(|s| &s.requests),
            completed: load(|s| &s.completed),
            bytes_sent: load(|s| &s.bytes_sent),
            packets_sent: load(|s| &s.packets_sent),
            retransmits: load(|s| &s.retransmits),
            active: load(|s| &s.active),
            errors: TftpError::ALL
                .iter()
                .map(|&k| (k, workers.iter().map(|w| w.tftp.errors(k)).sum()))
                .collect(),
            durations,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_sums_workers() {
        let a = Arc::new(WorkerStats::default());
        let b = Arc::new(WorkerStats::default());
        a.tftp.requests.fetch_add(2, Ordering::Relaxed);
        b.tftp.requests.fetch_add(3, Ordering::Relaxed);
        b.tftp.count_error(TftpError::UnknownTid);
        a.tftp.record_duration(Duration::from_millis(5));
        b.tftp.record_duration(Duration::from_millis(7));
        let s = TftpSnapshot::sum(&[a, b]);
        assert_eq!(s.requests, 5);
        assert_eq!(
            s.errors
                .iter()
                .find(|(k, _)| *k == TftpError::UnknownTid)
                .unwrap()
                .1,
            1
        );
        assert_eq!(s.durations.len(), 2);
    }
}
