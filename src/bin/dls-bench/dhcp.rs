//! `dls-bench dhcp`: full DISCOVER/OFFER/REQUEST/ACK exchanges from many
//! distinct MACs against any DHCPv4 server, as a relay agent.
//!
//! One UDP socket on RELAY:67 sends every request with giaddr = RELAY, so
//! dlsd, dnsmasq and kea-dhcp4 all answer to it by unicast (RFC 2131 section
//! 4.1) and no raw socket or interface per client is needed. The server's
//! subnet must contain RELAY.
//!
//! Exchanges start flat out (at most `--in-flight` at once) or at `--rate`
//! per second, for `--duration` or `--exchanges`. Each takes the next idle
//! client: N clients cycle, and a client never has two exchanges at once.
//! Replies are matched by xid; the REQUEST reuses the OFFER's xid and
//! carries its server identifier (54) and address (50).
//!
//! Retry policy: a message unanswered after `--timeout` is sent again, the
//! same bytes, at most `--retries` times; then the exchange is dropped. A
//! retried exchange's latency counts from its first send. Late or duplicate
//! replies (unknown xid, or the wrong type for the phase) are counted, not
//! used. Two clients holding the same address at once is counted as a
//! conflict (it means the server gave one address twice).

pub mod wire;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args as ClapArgs;
use hdrhistogram::Histogram;
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use serde_json::json;

/// Datagrams read per wakeup before the loop looks at timers and starts.
const MAX_RECV_PER_WAKE: usize = 256;

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// The DHCP server's unicast address.
    #[arg(long)]
    server: Ipv4Addr,
    /// The server's port.
    #[arg(long, default_value_t = 67)]
    port: u16,
    /// Local address to relay from: bound on port 67 and sent as giaddr.
    #[arg(long)]
    relay: Ipv4Addr,
    /// Distinct client MACs; exchanges cycle through them.
    #[arg(long, default_value_t = 1000)]
    clients: u32,
    /// Exchanges started per second; 0 starts them flat out.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Exchanges in flight at most.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Stop starting exchanges after this long.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Stop after starting this many exchanges (0: only --duration limits).
    #[arg(long, default_value_t = 0)]
    exchanges: u64,
    /// Resend an unanswered DISCOVER or REQUEST after this long.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Resends per message before the exchange counts as dropped.
    #[arg(long, default_value_t = 2)]
    retries: u32,
    /// Second byte of every MAC (default: random per run).
    #[arg(long)]
    mac_prefix: Option<u8>,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Discovering,
    Requesting { yiaddr: Ipv4Addr },
}

struct Exchange {
    client: u32,
    phase: Phase,
    /// When the exchange and its current message were first sent.
    started: Instant,
    phase_started: Instant,
    /// The bytes of the current message, for a resend.
    message: Vec<u8>,
    last_sent: Instant,
    resends: u32,
}

/// Counts and latencies of one run (microseconds).
struct Totals {
    started: u64,
    completed: u64,
    dropped: u64,
    naks: u64,
    resends: u64,
    unexpected: u64,
    conflicts: u64,
    send_errors: u64,
    offer_us: Histogram<u64>,
    ack_us: Histogram<u64>,
    exchange_us: Histogram<u64>,
}

impl Totals {
    fn new() -> io::Result<Totals> {
        let h = || Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).map_err(io::Error::other);
        Ok(Totals {
            started: 0,
            completed: 0,
            dropped: 0,
            naks: 0,
            resends: 0,
            unexpected: 0,
            conflicts: 0,
            send_errors: 0,
            offer_us: h()?,
            ack_us: h()?,
            exchange_us: h()?,
        })
    }
}

/// The run: the socket, exchanges in flight by xid, idle clients, and who
/// holds which address.
struct Run<'a> {
    args: &'a Args,
    socket: UdpSocket,
    to: SocketAddr,
    prefix: u8,
    next_xid: u32,
    in_flight: HashMap<u32, Exchange>,
    idle: VecDeque<u32>,
    holder: HashMap<Ipv4Addr, u32>,
    address_of: HashMap<u32, Ipv4Addr>,
    totals: Totals,
}

pub fn run(args: &Args) -> io::Result<bool> {
    if args.clients == 0 || args.in_flight == 0 {
        return Err(io::Error::other(
            "--clients and --in-flight must be at least 1",
        ));
    }
    // Below one exchange a day the schedule's durations would overflow.
    if !args.rate.is_finite() || args.rate < 0.0 || (args.rate > 0.0 && args.rate < 1e-5) {
        return Err(io::Error::other(
            "--rate must be 0 (flat out) or at least 0.00001 exchanges/s",
        ));
    }
    let bind = SocketAddr::V4(SocketAddrV4::new(args.relay, 67));
    let mut socket = open_socket(bind)
        .map_err(|e| io::Error::new(e.kind(), format!("bind {bind} (the relay address): {e}")))?;
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut socket, Token(0), Interest::READABLE)?;
    let prefix = args.mac_prefix.unwrap_or_else(random_byte);
    let mut run = Run {
        args,
        socket,
        to: SocketAddr::V4(SocketAddrV4::new(args.server, args.port)),
        prefix,
        next_xid: u32::from(prefix) << 24,
        in_flight: HashMap::new(),
        idle: (0..args.clients).collect(),
        holder: HashMap::new(),
        address_of: HashMap::new(),
        totals: Totals::new()?,
    };
    let elapsed = run.drive(&mut poll)?;
    report(&run, elapsed)?;
    let t = &run.totals;
    Ok(t.completed > 0 && t.dropped == 0 && t.naks == 0 && t.conflicts == 0)
}

/// The relay socket, with a receive buffer large enough for a burst of
/// replies (a server that group-commits sends a whole batch at once; the
/// default buffer would drop some and the bench would blame the server).
fn open_socket(bind: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    const RCVBUF: usize = 8 << 20;
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    if nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::RcvBufForce, &RCVBUF)
        .is_err()
    {
        socket.set_recv_buffer_size(RCVBUF)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&bind.into())?;
    Ok(UdpSocket::from_std(socket.into()))
}

/// A byte that differs between runs started at the same moment.
fn random_byte() -> u8 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mixed = (u64::from(nanos) ^ u64::from(std::process::id()).rotate_left(17))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed >> 56) as u8
}

impl Run<'_> {
    /// Runs until every exchange ended or the drain limit passed; returns
    /// the time from the first start to the last completion or drop.
    fn drive(&mut self, poll: &mut Poll) -> io::Result<Duration> {
        let args = self.args;
        let start = Instant::now();
        let stop_starting = start + args.duration;
        // Time enough for the last exchange started to use every retry of
        // both its messages.
        let drain = args.timeout * (args.retries + 1) * 2 + Duration::from_millis(100);
        let mut events = Events::with_capacity(64);
        let mut buf = vec![0u8; 4096];
        let mut last_progress = start;
        let mut last_scan = start;
        let mut finished = start;
        loop {
            let now = Instant::now();
            let starting = now < stop_starting
                && (args.exchanges == 0 || self.totals.started < args.exchanges);
            if starting {
                self.start_due(start, now);
            } else if self.in_flight.is_empty() || now >= stop_starting + drain {
                break;
            }
            let wait = if starting && args.rate > 0.0 {
                let due = start + Duration::from_secs_f64(self.totals.started as f64 / args.rate);
                due.saturating_duration_since(now)
                    .min(Duration::from_millis(10))
            } else {
                Duration::from_millis(10)
            };
            poll.poll(&mut events, Some(wait))?;
            if !events.is_empty() {
                self.receive(&mut buf);
            }
            let now = Instant::now();
            if now.duration_since(last_scan) >= Duration::from_millis(5) {
                last_scan = now;
                self.check_timeouts(now);
            }
            if self.totals.completed + self.totals.dropped + self.totals.naks > 0 {
                finished = now;
            }
            if now.duration_since(last_progress) >= Duration::from_secs(1) {
                last_progress = now;
                self.progress(now.duration_since(start));
            }
        }
        // Whatever is still open at the drain limit is dropped.
        self.totals.dropped += self.in_flight.len() as u64;
        self.in_flight.clear();
        Ok(finished.duration_since(start))
    }

    /// Starts the exchanges due now: all that fit when flat out, those the
    /// rate allows otherwise.
    fn start_due(&mut self, start: Instant, now: Instant) {
        let args = self.args;
        while self.in_flight.len() < args.in_flight
            && (args.exchanges == 0 || self.totals.started < args.exchanges)
        {
            if args.rate > 0.0 {
                let due = start + Duration::from_secs_f64(self.totals.started as f64 / args.rate);
                if due > now {
                    break;
                }
            }
            let Some(client) = self.idle.pop_front() else {
                break;
            };
            let xid = self.next_xid;
            // The low 24 bits count; the top byte is the run's prefix.
            self.next_xid =
                (self.next_xid & 0xff00_0000) | (self.next_xid.wrapping_add(1) & 0xff_ffff);
            let message = wire::discover(xid, wire::mac(self.prefix, client), args.relay);
            self.send(&message);
            self.totals.started += 1;
            self.in_flight.insert(
                xid,
                Exchange {
                    client,
                    phase: Phase::Discovering,
                    started: now,
                    phase_started: now,
                    message,
                    last_sent: now,
                    resends: 0,
                },
            );
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        // A refused send (a full socket buffer) is a lost packet: the
        // resend timer recovers it like any other loss.
        if self.socket.send_to(bytes, self.to).is_err() {
            self.totals.send_errors += 1;
        }
    }

    fn receive(&mut self, buf: &mut [u8]) {
        for _ in 0..MAX_RECV_PER_WAKE {
            let len = match self.socket.recv_from(buf) {
                Ok((len, _)) => len,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // ICMP errors from an earlier send, and the like.
                Err(_) => continue,
            };
            let now = Instant::now();
            match buf.get(..len).and_then(wire::Reply::parse) {
                Some(reply) => self.handle(reply, now),
                None => self.totals.unexpected += 1,
            }
        }
    }

    fn handle(&mut self, reply: wire::Reply, now: Instant) {
        let Some(ex) = self.in_flight.get_mut(&reply.xid) else {
            self.totals.unexpected += 1;
            return;
        };
        match (ex.phase, reply.message_type) {
            (Phase::Discovering, Some(wire::OFFER)) => {
                let Some(server_id) = reply.server_id else {
                    self.totals.unexpected += 1;
                    return;
                };
                record(
                    &mut self.totals.offer_us,
                    now.duration_since(ex.phase_started),
                );
                let chaddr = wire::mac(self.prefix, ex.client);
                ex.message =
                    wire::request(reply.xid, chaddr, self.args.relay, server_id, reply.yiaddr);
                ex.phase = Phase::Requesting {
                    yiaddr: reply.yiaddr,
                };
                ex.phase_started = now;
                ex.last_sent = now;
                ex.resends = 0;
                let message = ex.message.clone();
                self.send(&message);
            }
            (Phase::Requesting { yiaddr, .. }, Some(wire::ACK)) if reply.yiaddr == yiaddr => {
                record(
                    &mut self.totals.ack_us,
                    now.duration_since(ex.phase_started),
                );
                record(&mut self.totals.exchange_us, now.duration_since(ex.started));
                let client = ex.client;
                self.in_flight.remove(&reply.xid);
                self.totals.completed += 1;
                self.bind(client, yiaddr);
                self.idle.push_back(client);
            }
            (Phase::Requesting { .. }, Some(wire::NAK)) => {
                let client = ex.client;
                self.in_flight.remove(&reply.xid);
                self.totals.naks += 1;
                self.idle.push_back(client);
            }
            _ => self.totals.unexpected += 1,
        }
    }

    /// Notes that `client` holds `ip`; another live client holding it too is
    /// a conflict (leases outlive the run, so none may be given twice).
    fn bind(&mut self, client: u32, ip: Ipv4Addr) {
        if let Some(old) = self.address_of.insert(client, ip) {
            if old != ip && self.holder.get(&old) == Some(&client) {
                self.holder.remove(&old);
            }
        }
        match self.holder.insert(ip, client) {
            Some(other) if other != client => self.totals.conflicts += 1,
            _ => {}
        }
    }

    fn check_timeouts(&mut self, now: Instant) {
        let (timeout, retries) = (self.args.timeout, self.args.retries);
        let mut resend = Vec::new();
        let mut dropped = Vec::new();
        for (xid, ex) in &self.in_flight {
            if now.duration_since(ex.last_sent) < timeout {
                continue;
            }
            if ex.resends >= retries {
                dropped.push(*xid);
            } else {
                resend.push(*xid);
            }
        }
        for xid in dropped {
            if let Some(ex) = self.in_flight.remove(&xid) {
                self.totals.dropped += 1;
                self.idle.push_back(ex.client);
            }
        }
        for xid in resend {
            let Some(ex) = self.in_flight.get_mut(&xid) else {
                continue;
            };
            ex.resends += 1;
            ex.last_sent = now;
            let message = ex.message.clone();
            self.totals.resends += 1;
            self.send(&message);
        }
    }

    fn progress(&self, elapsed: Duration) {
        let t = &self.totals;
        eprintln!(
            "[{:>5.1}s] {} done ({:.0}/s), {} dropped, {} NAK, {} resent, {} in flight",
            elapsed.as_secs_f64(),
            t.completed,
            t.completed as f64 / elapsed.as_secs_f64().max(1e-9),
            t.dropped,
            t.naks,
            t.resends,
            self.in_flight.len()
        );
    }
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1));
}

/// Percentiles in milliseconds, for the table and the JSON.
fn percentiles(h: &Histogram<u64>) -> serde_json::Value {
    let ms = |v: u64| v as f64 / 1000.0;
    json!({
        "p50": ms(h.value_at_quantile(0.5)),
        "p90": ms(h.value_at_quantile(0.9)),
        "p99": ms(h.value_at_quantile(0.99)),
        "p99_9": ms(h.value_at_quantile(0.999)),
        "max": ms(h.max()),
    })
}

fn report(run: &Run, elapsed: Duration) -> io::Result<()> {
    let (args, t) = (run.args, &run.totals);
    let secs = elapsed.as_secs_f64().max(1e-9);
    let rate = t.completed as f64 / secs;
    println!(
        "dls-bench dhcp: {} clients against {}:{} relayed from {} (MAC prefix 02:{:02x})",
        args.clients, args.server, args.port, args.relay, run.prefix
    );
    println!(
        "  started {:>8}   completed {:>8}   dropped {:>6}   NAK {:>6}   time {:.2} s",
        t.started, t.completed, t.dropped, t.naks, secs
    );
    println!(
        "  {rate:.1} exchanges/s   resent {}   unexpected replies {}   address conflicts {}",
        t.resends, t.unexpected, t.conflicts
    );
    println!("  latency ms         p50      p90      p99    p99.9      max");
    for (name, h) in [
        ("DISCOVER->OFFER", &t.offer_us),
        ("REQUEST->ACK", &t.ack_us),
        ("exchange", &t.exchange_us),
    ] {
        let ms = |v: u64| v as f64 / 1000.0;
        println!(
            "  {name:<16} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.9)),
            ms(h.value_at_quantile(0.99)),
            ms(h.value_at_quantile(0.999)),
            ms(h.max())
        );
    }
    let Some(path) = &args.json else {
        return Ok(());
    };
    let v = json!({
        "scenario": "dhcp",
        "server": format!("{}:{}", args.server, args.port),
        "relay": args.relay.to_string(),
        "clients": args.clients,
        "rate": args.rate,
        "in_flight": args.in_flight,
        "timeout_s": args.timeout.as_secs_f64(),
        "retries": args.retries,
        "mac_prefix": run.prefix,
        "started": t.started,
        "completed": t.completed,
        "dropped": t.dropped,
        "naks": t.naks,
        "resent": t.resends,
        "unexpected": t.unexpected,
        "conflicts": t.conflicts,
        "send_errors": t.send_errors,
        "distinct_addresses": run.holder.len(),
        "seconds": secs,
        "exchanges_per_s": rate,
        "discover_offer_ms": percentiles(&t.offer_us),
        "request_ack_ms": percentiles(&t.ack_us),
        "exchange_ms": percentiles(&t.exchange_us),
    });
    let text = serde_json::to_string_pretty(&v).map_err(io::Error::other)?;
    std::fs::write(path, text)
}
