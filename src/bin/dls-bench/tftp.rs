//! `dls-bench tftp`: N concurrent TFTP clients in one mio loop.
//!
//! Each client sends an RRQ (with blksize, tsize and windowsize when asked),
//! acknowledges per window like an RFC 7440 receiver, compares every DATA
//! payload with the source file at its offset, and re-acknowledges on
//! timeout. ACKs can be dropped on purpose (`--drop-acks`) to exercise the
//! server's retransmission. Results: throughput, packets/s, transfer-time
//! percentiles, failures and duplicate DATA seen (the server's retransmits).

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args as ClapArgs;
use hdrhistogram::Histogram;
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use serde_json::json;

use dls::tftp::wire::{self, Packet, OP_RRQ};

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Server address, e.g. 127.0.0.1:69.
    #[arg(long)]
    server: SocketAddr,
    /// File name to request.
    #[arg(long)]
    file: String,
    /// Local copy of the file: every byte received is compared with it.
    #[arg(long)]
    source: PathBuf,
    /// Concurrent clients.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Transfers in total (each client starts another when one ends).
    #[arg(long, default_value_t = 1)]
    transfers: usize,
    /// Stop starting transfers after this long (and give up on the rest 30 s later).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// blksize to ask for (0: send no blksize option).
    #[arg(long, default_value_t = 1468)]
    blksize: u16,
    /// windowsize to ask for (0 or 1: lock-step, no option sent).
    #[arg(long, default_value_t = 0)]
    windowsize: u16,
    /// Ask for tsize.
    #[arg(long)]
    tsize: bool,
    /// Percent of ACKs to drop on purpose (0-100).
    #[arg(long, default_value_t = 0.0)]
    drop_acks: f64,
    /// Client retransmission timeout.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    Requesting,
    Receiving,
    Done,
    Failed(String),
}

struct Client {
    socket: UdpSocket,
    tid: Option<SocketAddr>,
    blksize: usize,
    windowsize: u64,
    /// Next block expected (64-bit), and bytes verified so far.
    expected: u64,
    received: u64,
    in_window: u64,
    /// The last ACK sent (or dropped on purpose), and when.
    last_ack: Option<u16>,
    last_ack_at: Instant,
    last_heard: Instant,
    retries: u32,
    started: Instant,
    state: State,
    duplicates: u64,
    packets: u64,
}

/// Totals of one run.
#[derive(Default)]
struct Totals {
    completed: u64,
    failed: u64,
    bytes: u64,
    packets: u64,
    duplicates: u64,
    acks_dropped: u64,
    failures: Vec<String>,
}

const MAX_RETRIES: u32 = 8;

pub fn run(args: &Args) -> io::Result<bool> {
    if args.clients == 0 || args.transfers == 0 {
        return Err(io::Error::other(
            "--clients and --transfers must be at least 1",
        ));
    }
    let source = std::fs::read(&args.source)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", args.source.display())))?;
    if !(0.0..=100.0).contains(&args.drop_acks) {
        return Err(io::Error::other("--drop-acks must be within 0..=100"));
    }
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut clients: Vec<Option<Client>> = (0..args.clients.max(1)).map(|_| None).collect();
    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).map_err(io::Error::other)?;
    let mut totals = Totals::default();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut started = 0usize;
    let start = Instant::now();
    let hard_stop = start + args.duration + Duration::from_secs(30);
    let mut buf = vec![0u8; 65536];
    let mut last_report = start;

    loop {
        let now = Instant::now();
        // Fill free slots while transfers and time remain.
        for (i, slot) in clients.iter_mut().enumerate() {
            if slot.is_none() && started < args.transfers && now < start + args.duration {
                *slot = Some(start_client(args, &poll, i, now)?);
                started += 1;
            }
        }
        if clients.iter().all(Option::is_none) || now >= hard_stop {
            break;
        }
        poll.poll(&mut events, Some(Duration::from_millis(10)))?;
        let now = Instant::now();
        for event in events.iter() {
            if let Some(Some(c)) = clients.get_mut(event.token().0) {
                receive(c, args, &source, &mut buf, &mut rng, &mut totals, now);
            }
        }
        for slot in clients.iter_mut() {
            let Some(c) = slot.as_mut() else { continue };
            if c.state == State::Requesting || c.state == State::Receiving {
                check_timeout(c, args, &mut rng, &mut totals, now);
            }
            if matches!(c.state, State::Done | State::Failed(_)) {
                if let Some(mut c) = slot.take() {
                    let _ = poll.registry().deregister(&mut c.socket);
                    finish(c, &mut histogram, &mut totals, now);
                }
            }
        }
        if now.duration_since(last_report) >= Duration::from_secs(2) {
            last_report = now;
            eprintln!(
                "[{:>5.1}s] {} done, {} failed, {:.1} MB/s",
                now.duration_since(start).as_secs_f64(),
                totals.completed,
                totals.failed,
                totals.bytes as f64 / now.duration_since(start).as_secs_f64() / 1e6
            );
        }
    }
    // Transfers still open at the hard stop are failures.
    for c in clients.into_iter().flatten() {
        totals.failed += 1;
        totals
            .failures
            .push(format!("{}: still running at the time limit", c.expected));
    }
    let elapsed = start.elapsed();
    report(args, &totals, &histogram, elapsed)?;
    Ok(totals.failed == 0 && totals.completed as usize == started)
}

impl Args {
    /// The settings of one fetch in a larger run (the boot storm): one
    /// transfer of `file`, compared with `source`.
    pub fn one_fetch(
        server: SocketAddr,
        file: &str,
        source: PathBuf,
        blksize: u16,
        windowsize: u16,
    ) -> Args {
        Args {
            server,
            file: file.to_owned(),
            source,
            clients: 1,
            transfers: 1,
            duration: Duration::from_secs(60),
            blksize,
            windowsize,
            tsize: true,
            drop_acks: 0.0,
            timeout: Duration::from_secs(1),
            json: None,
        }
    }
}

/// One transfer, driven to its end on a poll of its own (the caller's
/// thread), with `source` already read. Returns the bytes received, or why
/// the transfer failed. Used by the boot storm, one thread per client.
pub fn fetch_one(args: &Args, source: &[u8]) -> io::Result<Result<u64, String>> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(16);
    let mut totals = Totals::default();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut buf = vec![0u8; 65536];
    let mut c = start_client(args, &poll, 0, Instant::now())?;
    let hard_stop = Instant::now() + args.duration;
    while matches!(c.state, State::Requesting | State::Receiving) {
        if Instant::now() >= hard_stop {
            c.state = State::Failed("still running at the time limit".into());
            break;
        }
        poll.poll(&mut events, Some(Duration::from_millis(50)))?;
        let now = Instant::now();
        if !events.is_empty() {
            receive(&mut c, args, source, &mut buf, &mut rng, &mut totals, now);
        }
        if matches!(c.state, State::Requesting | State::Receiving) {
            check_timeout(&mut c, args, &mut rng, &mut totals, now);
        }
    }
    let _ = poll.registry().deregister(&mut c.socket);
    Ok(match c.state {
        State::Done => Ok(c.received),
        State::Failed(why) => Err(why),
        _ => Err("unfinished".into()),
    })
}

fn start_client(args: &Args, poll: &Poll, index: usize, now: Instant) -> io::Result<Client> {
    let bind: SocketAddr = if args.server.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    }
    .parse()
    .map_err(io::Error::other)?;
    let mut socket = UdpSocket::bind(bind)?;
    poll.registry()
        .register(&mut socket, Token(index), Interest::READABLE)?;
    let mut options: Vec<(&str, String)> = Vec::new();
    if args.blksize != 0 {
        options.push(("blksize", args.blksize.to_string()));
    }
    if args.tsize {
        options.push(("tsize", "0".into()));
    }
    if args.windowsize > 1 {
        options.push(("windowsize", args.windowsize.to_string()));
    }
    let pairs: Vec<(&str, &str)> = options.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut rrq = Vec::new();
    wire::encode_request(&mut rrq, OP_RRQ, args.file.as_bytes(), "octet", &pairs);
    socket.send_to(&rrq, args.server)?;
    Ok(Client {
        socket,
        tid: None,
        blksize: 512,
        windowsize: 1,
        expected: 1,
        received: 0,
        in_window: 0,
        last_ack: None,
        last_ack_at: now,
        last_heard: now,
        retries: 0,
        started: now,
        state: State::Requesting,
        duplicates: 0,
        packets: 0,
    })
}

fn xorshift(x: &mut u64) -> f64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    (*x % 10_000) as f64 / 100.0
}

fn send_ack(c: &mut Client, block: u16, args: &Args, rng: &mut u64, totals: &mut Totals) {
    c.last_ack = Some(block);
    c.last_ack_at = Instant::now();
    if args.drop_acks > 0.0 && xorshift(rng) < args.drop_acks {
        totals.acks_dropped += 1;
        return;
    }
    let mut out = Vec::with_capacity(4);
    wire::encode_ack(&mut out, block);
    if let Some(tid) = c.tid {
        let _ = c.socket.send_to(&out, tid);
    }
}

fn receive(
    c: &mut Client,
    args: &Args,
    source: &[u8],
    buf: &mut [u8],
    rng: &mut u64,
    totals: &mut Totals,
    now: Instant,
) {
    loop {
        let (len, from) = match c.socket.recv_from(buf) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => {
                c.state = State::Failed(format!("receive: {e}"));
                return;
            }
        };
        if from.ip() != args.server.ip() || c.tid.is_some_and(|t| t != from) {
            continue;
        }
        c.tid = Some(from);
        c.last_heard = now;
        c.retries = 0;
        match Packet::parse(&buf[..len]) {
            Ok(Packet::Oack { options }) if c.state == State::Requesting => {
                for (k, v) in options {
                    let v: usize = std::str::from_utf8(v)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    if k.eq_ignore_ascii_case(b"blksize") && v > 0 {
                        c.blksize = v;
                    } else if k.eq_ignore_ascii_case(b"windowsize") && v > 0 {
                        c.windowsize = v as u64;
                    }
                }
                c.state = State::Receiving;
                send_ack(c, 0, args, rng, totals);
            }
            Ok(Packet::Data { block, data }) => {
                if c.state == State::Requesting {
                    c.state = State::Receiving;
                }
                c.packets += 1;
                if block != c.expected as u16 {
                    c.duplicates += 1;
                    // A gap, or a window the server sent again because our
                    // ACK was lost: acknowledge what is in order, once per
                    // half timeout so a resent window gets one ACK, not one
                    // per packet.
                    let last = (c.expected - 1) as u16;
                    if c.last_ack != Some(last)
                        || now.duration_since(c.last_ack_at) >= args.timeout / 2
                    {
                        c.in_window = 0;
                        send_ack(c, last, args, rng, totals);
                    }
                    continue;
                }
                let offset = (c.expected - 1) as usize * c.blksize;
                if source.get(offset..offset + data.len()) != Some(data) {
                    c.state =
                        State::Failed(format!("block {} differs from the source", c.expected));
                    return;
                }
                c.expected += 1;
                c.received += data.len() as u64;
                c.in_window += 1;
                if data.len() < c.blksize {
                    if c.received != source.len() as u64 {
                        c.state = State::Failed(format!(
                            "ended after {} of {} bytes",
                            c.received,
                            source.len()
                        ));
                        return;
                    }
                    send_ack(c, block, args, rng, totals);
                    c.state = State::Done;
                    return;
                }
                if c.in_window >= c.windowsize {
                    c.in_window = 0;
                    send_ack(c, block, args, rng, totals);
                }
            }
            Ok(Packet::Error { code, message }) => {
                c.state = State::Failed(format!(
                    "ERROR {}: {}",
                    code.to_u16(),
                    String::from_utf8_lossy(message)
                ));
                return;
            }
            _ => {}
        }
    }
}

fn check_timeout(c: &mut Client, args: &Args, rng: &mut u64, totals: &mut Totals, now: Instant) {
    if now.duration_since(c.last_heard) < args.timeout {
        return;
    }
    c.retries += 1;
    c.last_heard = now;
    if c.retries > MAX_RETRIES {
        c.state = State::Failed(format!("timed out at block {}", c.expected));
        return;
    }
    match c.last_ack {
        Some(block) => {
            c.in_window = 0;
            send_ack(c, block, args, rng, totals);
        }
        // No answer to the RRQ at all: the server is not there or lost it;
        // a retransmitted RRQ would start a second transfer, so give up.
        None if c.retries > 2 => c.state = State::Failed("no answer to the RRQ".into()),
        None => {}
    }
}

fn finish(c: Client, histogram: &mut Histogram<u64>, totals: &mut Totals, now: Instant) {
    totals.bytes += c.received;
    totals.packets += c.packets;
    totals.duplicates += c.duplicates;
    match c.state {
        State::Done => {
            totals.completed += 1;
            let _ = histogram.record(now.duration_since(c.started).as_micros().max(1) as u64);
        }
        State::Failed(why) => {
            totals.failed += 1;
            if totals.failures.len() < 20 {
                totals.failures.push(why);
            }
        }
        _ => {}
    }
}

fn report(args: &Args, t: &Totals, h: &Histogram<u64>, elapsed: Duration) -> io::Result<()> {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "dls-bench tftp: {} x {} against {} ({} clients)",
        args.transfers, args.file, args.server, args.clients
    );
    println!(
        "  completed {:>8}   failed {:>6}   time {:.2} s",
        t.completed, t.failed, secs
    );
    println!(
        "  throughput {:>8.1} MB/s   {:>10.0} packets/s",
        t.bytes as f64 / secs / 1e6,
        t.packets as f64 / secs
    );
    println!(
        "  transfer ms: p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        h.max() as f64 / 1000.0
    );
    println!(
        "  duplicate DATA (server retransmits) {}   ACKs dropped on purpose {}",
        t.duplicates, t.acks_dropped
    );
    for f in &t.failures {
        println!("  failure: {f}");
    }
    if let Some(path) = &args.json {
        let v = json!({
            "scenario": "tftp",
            "server": args.server.to_string(),
            "file": args.file,
            "clients": args.clients,
            "transfers": args.transfers,
            "blksize": args.blksize,
            "windowsize": args.windowsize,
            "drop_acks_percent": args.drop_acks,
            "completed": t.completed,
            "failed": t.failed,
            "seconds": secs,
            "bytes": t.bytes,
            "mb_per_s": t.bytes as f64 / secs / 1e6,
            "packets_per_s": t.packets as f64 / secs,
            "duplicates": t.duplicates,
            "transfer_ms": {"p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "p99_9": ms(0.999), "max": h.max() as f64 / 1000.0},
            "failures": t.failures,
        });
        std::fs::write(
            path,
            serde_json::to_string_pretty(&v).map_err(io::Error::other)?,
        )?;
    }
    Ok(())
}
