//! Prometheus text exposition (format 0.0.4) of the workers' counters.
//!
//! Counters are summed over workers at scrape time; the transfer-time
//! histogram is rebuilt from the merged hdrhistogram into fixed buckets.

use std::fmt::Write;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::engine::stats::TftpSnapshot;

/// Facts about the process shown beside the counters.
#[derive(Debug, Clone)]
pub struct ProcessInfo {
    pub version: &'static str,
    pub uptime: Duration,
    pub config_generation: u64,
    pub workers: usize,
}

/// Upper bounds of the transfer-time buckets, in seconds.
const COMMAND_BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0,
];
const REPLY_BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 1.0,
];
const DURATION_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Renders every metric.
pub fn render(tftp: Option<&TftpSnapshot>, info: &ProcessInfo) -> String {
    let mut out = String::with_capacity(4096);
    gauge(
        &mut out,
        "dls_uptime_seconds",
        "Seconds since dlsd started.",
        info.uptime.as_secs_f64(),
    );
    gauge(
        &mut out,
        "dls_config_generation",
        "Configurations applied since start (1 = the one loaded at start).",
        info.config_generation as f64,
    );
    gauge(
        &mut out,
        "dls_workers",
        "Dataplane worker threads.",
        info.workers as f64,
    );
    let _ = writeln!(out, "# HELP dls_build_info Build of the running dlsd.");
    let _ = writeln!(out, "# TYPE dls_build_info gauge");
    let _ = writeln!(out, "dls_build_info{{version=\"{}\"}} 1", info.version);

    if let Some(t) = tftp {
        counter(
            &mut out,
            "dls_tftp_requests_total",
            "TFTP requests received (RRQ and WRQ).",
            t.requests,
        );
        counter(
            &mut out,
            "dls_tftp_transfers_completed_total",
            "TFTP transfers acknowledged to the last block.",
            t.completed,
        );
        counter(
            &mut out,
            "dls_tftp_bytes_sent_total",
            "TFTP DATA payload bytes sent, retransmissions included.",
            t.bytes_sent,
        );
        counter(
            &mut out,
            "dls_tftp_packets_sent_total",
            "TFTP DATA packets sent.",
            t.packets_sent,
        );
        counter(
            &mut out,
            "dls_tftp_retransmits_total",
            "TFTP DATA packets sent more than once.",
            t.retransmits,
        );
        gauge(
            &mut out,
            "dls_tftp_active_transfers",
            "TFTP transfers in flight.",
            t.active as f64,
        );
        let _ = writeln!(
            out,
            "# HELP dls_tftp_errors_total TFTP requests and transfers that failed, by kind."
        );
        let _ = writeln!(out, "# TYPE dls_tftp_errors_total counter");
        for (kind, n) in &t.errors {
            let _ = writeln!(out, "dls_tftp_errors_total{{kind=\"{}\"}} {n}", kind.name());
        }
        histogram(
            &mut out,
            "dls_tftp_transfer_duration_seconds",
            "Time from request to last ACK of completed TFTP transfers.",
            &t.durations,
            &DURATION_BUCKETS,
        );
    }
    out
}

/// Appends the DHCP service's counters and its active lease count.
pub fn render_dhcp(out: &mut String, c: &crate::dhcp::socket::Counters, active_leases: usize) {
    counter(
        out,
        "dls_dhcp_received_total",
        "DHCP datagrams received.",
        c.received,
    );
    counter(
        out,
        "dls_dhcp_offers_total",
        "DHCPOFFERs sent (proxy offers included).",
        c.offers,
    );
    counter(out, "dls_dhcp_acks_total", "DHCPACKs sent.", c.acks);
    counter(out, "dls_dhcp_naks_total", "DHCPNAKs sent.", c.naks);
    counter(
        out,
        "dls_dhcp_store_errors_total",
        "Lease journal writes that failed (reply withheld).",
        c.store_errors,
    );
    counter(
        out,
        "dls_dhcp_send_errors_total",
        "DHCP replies the kernel refused.",
        c.send_errors,
    );
    let _ = writeln!(
        out,
        "# HELP dls_dhcp_ignored_total DHCP datagrams answered with silence, by reason."
    );
    let _ = writeln!(out, "# TYPE dls_dhcp_ignored_total counter");
    for (reason, n) in &c.ignored {
        let _ = writeln!(out, "dls_dhcp_ignored_total{{reason=\"{reason}\"}} {n}");
    }
    histogram(
        out,
        "dls_dhcp_reply_seconds",
        "Time from receiving a DHCP request to sending its reply (journal sync included).",
        &c.reply_time_us,
        &REPLY_BUCKETS,
    );
    gauge(
        out,
        "dls_dhcp_active_leases",
        "Leases granted and not expired.",
        active_leases as f64,
    );
}

/// Appends the iSCSI counters summed over workers.
pub fn render_iscsi(
    out: &mut String,
    workers: &[std::sync::Arc<crate::engine::stats::WorkerStats>],
) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let sum = |f: fn(&crate::engine::iscsi::IscsiStats) -> &AtomicU64| -> u64 {
        workers
            .iter()
            .map(|w| f(&w.iscsi).load(Ordering::Relaxed))
            .sum()
    };
    type Field = fn(&crate::engine::iscsi::IscsiStats) -> &AtomicU64;
    let counters: [(&str, &str, Field); 7] = [
        (
            "dls_iscsi_connections_total",
            "TCP connections accepted.",
            |s| &s.connections,
        ),
        (
            "dls_iscsi_logins_total",
            "Logins that reached full feature phase.",
            |s| &s.logins,
        ),
        (
            "dls_iscsi_login_failures_total",
            "Logins refused, failed or timed out.",
            |s| &s.login_failures,
        ),
        ("dls_iscsi_commands_total", "SCSI commands executed.", |s| {
            &s.commands
        }),
        (
            "dls_iscsi_data_in_bytes_total",
            "Bytes sent to initiators in Data-In.",
            |s| &s.data_in_bytes,
        ),
        (
            "dls_iscsi_data_out_bytes_total",
            "Bytes received from initiators (immediate and Data-Out).",
            |s| &s.data_out_bytes,
        ),
        ("dls_iscsi_rejects_total", "Reject PDUs sent.", |s| {
            &s.rejects
        }),
    ];
    for (name, help, field) in counters {
        counter(out, name, help, sum(field));
    }
    let mut latency = crate::engine::stats::new_histogram();
    for w in workers {
        if let Ok(h) = w.iscsi.latency.lock() {
            let _ = latency.add(&*h);
        }
    }
    histogram(
        out,
        "dls_iscsi_command_seconds",
        "SCSI command latency, from the command PDU to its status.",
        &latency,
        &COMMAND_BUCKETS,
    );
    gauge(
        out,
        "dls_iscsi_active_connections",
        "Connections open now.",
        sum(|s| &s.active) as f64,
    );
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

/// A Prometheus histogram from an hdrhistogram of microseconds.
fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram<u64>, buckets: &[f64]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for &le in buckets {
        let micros = (le * 1e6) as u64;
        let count = h
            .iter_recorded()
            .filter(|v| v.value_iterated_to() <= micros)
            .map(|v| v.count_at_value())
            .sum::<u64>();
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {count}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.len());
    let sum_micros: f64 = h
        .iter_recorded()
        .map(|v| v.value_iterated_to() as f64 * v.count_at_value() as f64)
        .sum();
    let _ = writeln!(out, "{name}_sum {}", sum_micros / 1e6);
    let _ = writeln!(out, "{name}_count {}", h.len());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::stats::WorkerStats;
    use std::sync::Arc;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let w = Arc::new(WorkerStats::default());
        w.tftp.record_duration(Duration::from_millis(3));
        w.tftp.record_duration(Duration::from_millis(300));
        let snap = TftpSnapshot::sum(&[w]);
        let info = ProcessInfo {
            version: "0.1.0",
            uptime: Duration::from_secs(5),
            config_generation: 1,
            workers: 1,
        };
        let text = render(Some(&snap), &info);
        assert!(
            text.contains("dls_tftp_transfer_duration_seconds_bucket{le=\"0.005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("dls_tftp_transfer_duration_seconds_bucket{le=\"0.5\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("dls_tftp_transfer_duration_seconds_count 2\n"));
        assert!(text.contains("dls_tftp_errors_total{kind=\"unknown_tid\"} 0\n"));
    }
}
