//! `dls-bench iscsi`: S initiator sessions in one mio loop, each keeping Q
//! READ(16) or WRITE(16) commands in flight against any iSCSI target.
//!
//! Every session logs in like a real initiator ([`login`]), sizes the LUN
//! with READ CAPACITY(16), then runs [`session::Session`] until `--duration`
//! or `--ios` ends the run; commands in flight are then waited for and the
//! session logs out. Results: IOPS, MB/s, latency percentiles from an
//! hdrhistogram, and failures (Reject, CHECK CONDITION, short reads, data
//! mismatches with `--data`).

pub mod login;
mod session;

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args as ClapArgs, ValueEnum};
use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};
use serde_json::json;

use session::{Phase, Plan, Session};

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Target portal, e.g. 127.0.0.1:3260.
    #[arg(long)]
    portal: SocketAddr,
    /// Target name (IQN).
    #[arg(long)]
    target: String,
    /// LUN (tgt puts its controller at LUN 0 and data at 1).
    #[arg(long, default_value_t = 0)]
    lun: u64,
    /// Initiator name sent at login.
    #[arg(long, default_value = "iqn.2026-01.org.dls:bench")]
    initiator: String,
    /// Sessions (one TCP connection each).
    #[arg(long, default_value_t = 1)]
    sessions: usize,
    /// Commands in flight per session.
    #[arg(long, default_value_t = 32)]
    queue_depth: usize,
    /// Bytes per command: 4k, 128k, 1m, or a number of bytes.
    #[arg(long, default_value = "4k", value_parser = parse_size)]
    block_size: u32,
    /// Sequential (each session walks its own stripe) or random aligned LBAs.
    #[arg(long, value_enum, default_value_t = Pattern::Rand)]
    pattern: Pattern,
    /// Percent of commands that are writes (0-100).
    #[arg(long, default_value_t = 0)]
    write_percent: u32,
    /// Stop issuing commands after this long.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Stop after this many commands in all.
    #[arg(long)]
    ios: Option<u64>,
    /// A local copy of the LUN: writes send its bytes, reads are compared.
    #[arg(long)]
    data: Option<PathBuf>,
    /// MaxRecvDataSegmentLength this initiator declares.
    #[arg(long, default_value_t = 262_144)]
    max_recv_data_segment_length: u32,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Pattern {
    Seq,
    Rand,
}

fn parse_size(s: &str) -> Result<u32, String> {
    let lower = s.to_ascii_lowercase();
    let (digits, unit) = match lower.trim_end_matches(['b', 'i']).strip_suffix(['k', 'm']) {
        Some(d) if lower.contains('k') => (d.to_string(), 1024),
        Some(d) => (d.to_string(), 1024 * 1024),
        None => (lower.clone(), 1),
    };
    let n: u32 = digits.parse().map_err(|_| format!("bad size {s:?}"))?;
    n.checked_mul(unit)
        .filter(|&b| b > 0 && b <= 16 << 20)
        .ok_or_else(|| format!("size {s:?} must be within 1 byte..16 MiB"))
}

/// Figures of one run, shared by every session.
pub struct Stats {
    latency: Histogram<u64>,
    reads: u64,
    writes: u64,
    bytes: u64,
    failures: u64,
    reasons: Vec<String>,
    last_completion: Option<Instant>,
}

/// Failure reasons kept for the report; the count goes on.
const MAX_REASONS: usize = 10;

impl Stats {
    fn new() -> io::Result<Stats> {
        Ok(Stats {
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).map_err(io::Error::other)?,
            reads: 0,
            writes: 0,
            bytes: 0,
            failures: 0,
            reasons: Vec::new(),
            last_completion: None,
        })
    }

    pub fn record(&mut self, write: bool, bytes: u32, latency: Duration) {
        if write {
            self.writes += 1;
        } else {
            self.reads += 1;
        }
        self.bytes += u64::from(bytes);
        self.latency.saturating_record(latency.as_micros() as u64);
        self.last_completion = Some(Instant::now());
    }

    pub fn fail(&mut self, reason: String) {
        self.failures += 1;
        if self.reasons.len() < MAX_REASONS {
            self.reasons.push(reason);
        }
    }

    fn completed(&self) -> u64 {
        self.reads + self.writes
    }
}

/// How long sessions may take to finish after issuing stops.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);
/// Socket timeout of the blocking login.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);

pub fn run(args: &Args) -> io::Result<bool> {
    if args.write_percent > 100 || args.sessions == 0 || args.queue_depth == 0 {
        return Err(io::Error::other(
            "need --write-percent <= 100, --sessions and --queue-depth >= 1",
        ));
    }
    if args.queue_depth > 0xffff {
        return Err(io::Error::other("--queue-depth is at most 65535"));
    }
    let mut stats = Stats::new()?;
    let (mut sessions, plan) = connect_all(args)?;

    let mut poll = Poll::new()?;
    for (i, s) in sessions.iter_mut().enumerate() {
        poll.registry().register(
            &mut s.stream,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
    }
    let mut events = Events::with_capacity(1024);
    let start = Instant::now();
    let stop_issuing = start + args.duration;
    let hard_stop = stop_issuing + DRAIN_LIMIT;
    let mut budget = args.ios.unwrap_or(u64::MAX);
    let mut next_progress = start + Duration::from_secs(1);
    let mut last_count = 0;

    loop {
        let now = Instant::now();
        let issuing = now < stop_issuing && budget > 0;
        let mut live = 0;
        for s in sessions.iter_mut().filter(|s| s.failed.is_none()) {
            if issuing {
                s.issue(&plan, &mut budget, now);
            } else {
                s.drain();
            }
            if let Err(e) = s.flush() {
                s.failed = Some(e.to_string());
            }
            if s.failed.is_none() && s.phase != Phase::Done {
                live += 1;
            }
        }
        if live == 0 || now >= hard_stop {
            break;
        }
        if now >= next_progress {
            let done = stats.completed();
            eprintln!(
                "{:>4.0}s  {} IOPS  {} in flight  {} failures",
                now.duration_since(start).as_secs_f64(),
                done - last_count,
                sessions.iter().map(Session::outstanding).sum::<usize>(),
                stats.failures
            );
            last_count = done;
            next_progress += Duration::from_secs(1);
        }
        poll.poll(&mut events, Some(Duration::from_millis(100)))?;
        let now = Instant::now();
        for event in events.iter() {
            let Some(s) = sessions.get_mut(event.token().0) else {
                continue;
            };
            if s.failed.is_some() || !event.is_readable() {
                continue;
            }
            if let Err(e) = s.receive(&plan, &mut stats, now) {
                s.failed = Some(e.to_string());
            }
        }
    }

    for s in &sessions {
        if let Some(reason) = &s.failed {
            stats.fail(format!("session failed: {reason}"));
        } else if s.phase != Phase::Done {
            stats.fail(format!("session still in {:?} at the time limit", s.phase));
        }
    }
    let elapsed = stats.last_completion.unwrap_or(start).duration_since(start);
    report(args, &plan, &stats, elapsed)
}

/// Logs every session in (blocking, one after another) and sizes the LUN.
fn connect_all(args: &Args) -> io::Result<(Vec<Session>, Plan)> {
    let mut ready = Vec::new();
    let mut capacity = None;
    for i in 0..args.sessions {
        let mut stream = TcpStream::connect_timeout(&args.portal, LOGIN_TIMEOUT)?;
        stream.set_read_timeout(Some(LOGIN_TIMEOUT))?;
        stream.set_nodelay(true)?;
        // ISID: type 0x80 "random" qualifier (RFC 7143 §11.12.5), unique per session.
        let isid = [0x80, 0xd1, 0x5b, (i >> 16) as u8, (i >> 8) as u8, i as u8];
        let offer = login::Offer {
            initiator: &args.initiator,
            target: &args.target,
            isid,
            max_recv_data: args.max_recv_data_segment_length,
            max_burst: 1 << 20,
            first_burst: 256 * 1024,
        };
        let (neg, mut n) = login::login(&mut stream, &offer)?;
        let cap = login::read_capacity(&mut stream, args.lun, &mut n)?;
        capacity.get_or_insert(cap);
        ready.push((stream, neg, n));
    }
    let (blocks, block_len) = capacity.expect("at least one session");
    if block_len == 0 || !args.block_size.is_multiple_of(block_len) {
        return Err(io::Error::other(format!(
            "--block-size {} is not a multiple of the LUN's {block_len}-byte blocks",
            args.block_size
        )));
    }
    let blocks_per_io = u64::from(args.block_size / block_len);
    let positions = blocks / blocks_per_io;
    if positions == 0 {
        return Err(io::Error::other("the LUN is smaller than one command"));
    }
    let data = match &args.data {
        Some(p) => {
            let d = std::fs::read(p)?;
            if (d.len() as u64) < blocks * u64::from(block_len) {
                return Err(io::Error::other(format!(
                    "{} is shorter than the LUN",
                    p.display()
                )));
            }
            Some(d)
        }
        None => None,
    };
    let plan = Plan {
        lun: args.lun,
        block_size: args.block_size,
        blocks_per_io,
        positions,
        random: args.pattern == Pattern::Rand,
        write_percent: args.write_percent,
        queue_depth: args.queue_depth,
        sessions: args.sessions as u64,
        data,
        fill: (0..args.block_size).map(|i| (i % 251) as u8).collect(),
    };
    let mut sessions = Vec::new();
    for (i, (stream, neg, n)) in ready.into_iter().enumerate() {
        stream.set_nonblocking(true)?;
        let stream = mio::net::TcpStream::from_std(stream);
        let max = args.max_recv_data_segment_length;
        sessions.push(Session::new(stream, neg, n, max, i as u64, &plan));
    }
    Ok((sessions, plan))
}

fn report(args: &Args, plan: &Plan, stats: &Stats, elapsed: Duration) -> io::Result<bool> {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let iops = stats.completed() as f64 / secs;
    let mb_s = stats.bytes as f64 / secs / 1e6;
    let h = &stats.latency;
    let pct = |q: f64| h.value_at_quantile(q);
    println!(
        "iscsi {} x QD {} {} B {:?} ({}% writes): {} reads, {} writes in {:.2} s",
        args.sessions,
        args.queue_depth,
        plan.block_size,
        args.pattern,
        args.write_percent,
        stats.reads,
        stats.writes,
        secs
    );
    println!(
        "  {:>12} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "IOPS", "MB/s", "p50", "p90", "p99", "p99.9", "max"
    );
    println!(
        "  {iops:>12.1} {mb_s:>10.1} {:>6}us {:>6}us {:>6}us {:>6}us {:>6}us",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(0.999),
        h.max()
    );
    println!("  failures: {}", stats.failures);
    for r in &stats.reasons {
        println!("    {r}");
    }
    if let Some(path) = &args.json {
        let doc = json!({
            "portal": args.portal.to_string(),
            "target": args.target,
            "lun": args.lun,
            "sessions": args.sessions,
            "queue_depth": args.queue_depth,
            "block_size": plan.block_size,
            "pattern": format!("{:?}", args.pattern).to_lowercase(),
            "write_percent": args.write_percent,
            "seconds": secs,
            "reads": stats.reads,
            "writes": stats.writes,
            "bytes": stats.bytes,
            "iops": iops,
            "mb_per_s": mb_s,
            "latency_us": {
                "p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99),
                "p99_9": pct(0.999), "max": h.max(),
            },
            "failures": stats.failures,
            "failure_reasons": stats.reasons,
        });
        std::fs::write(
            path,
            serde_json::to_vec_pretty(&doc).map_err(io::Error::other)?,
        )?;
    }
    Ok(stats.failures == 0 && stats.completed() > 0)
}
