//! `dls-bench storm`: a rack powering on at once.
//!
//! Each simulated machine does, in order, what a diskless machine does after
//! its firmware starts: a DHCP exchange, a TFTP fetch of the iPXE binary and
//! then of the iPXE script, an iSCSI login and a read of the first K MiB of
//! its disk. Every phase is timed per client; the report gives percentiles
//! per phase, the slowest machine's total, and every failure with its phase.
//! A storm passes only when every machine got through every phase.
//!
//! One thread per machine: the phases of one machine are sequential, and
//! what is measured is the server under many machines at once, not this
//! client's efficiency. The DHCP phase goes through one relay socket
//! (LOCAL_IP:67 with giaddr = LOCAL_IP, as `dls-bench dhcp` does), shared by
//! all machines and demultiplexed by xid, because replies to a relay all
//! come back to that one port. The address a machine leases is recorded,
//! not used: on loopback every machine talks from the same host.

mod dhcp;
mod iscsi;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args as ClapArgs;
use hdrhistogram::Histogram;
use serde_json::json;

use crate::tftp;

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Machines booting at once.
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// Spread the machines' start over this long (0: all at once).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    ramp: Duration,
    /// DHCP server address (requests are relayed to its port 67).
    #[arg(long)]
    dhcp_server: Ipv4Addr,
    /// The server's DHCP port.
    #[arg(long, default_value_t = 67)]
    dhcp_port: u16,
    /// Local address to relay from (bound at port 67, sent as giaddr); the
    /// server's subnet must contain it.
    #[arg(long)]
    relay: Ipv4Addr,
    /// TFTP server, e.g. 127.0.0.1:69.
    #[arg(long)]
    tftp_server: SocketAddr,
    /// The iPXE binary's name on the TFTP server.
    #[arg(long, default_value = "undionly.kpxe")]
    binary: String,
    /// A local copy of the binary: every byte received is compared with it.
    #[arg(long)]
    binary_source: PathBuf,
    /// The iPXE script's name on the TFTP server.
    #[arg(long, default_value = "boot.ipxe")]
    script: String,
    /// A local copy of the script, to compare.
    #[arg(long)]
    script_source: PathBuf,
    /// TFTP blksize asked for (1432 is what iPXE asks).
    #[arg(long, default_value_t = 1432)]
    blksize: u16,
    /// iSCSI portal, e.g. 127.0.0.1:3260.
    #[arg(long)]
    portal: SocketAddr,
    /// Target IQN each machine boots from.
    #[arg(long)]
    target: String,
    /// Its LUN (tgt puts disks at LUN 1, dls at the configured number).
    #[arg(long, default_value_t = 0)]
    lun: u64,
    /// MiB each machine reads from the start of its LUN.
    #[arg(long, default_value_t = 16)]
    read_mib: u64,
    /// Size of each READ.
    #[arg(long, default_value = "128k", value_parser = parse_size)]
    io_size: u32,
    /// Every machine must be done within this long of the storm's start.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn parse_size(s: &str) -> Result<u32, String> {
    let lower = s.to_ascii_lowercase();
    let (digits, unit) = match lower.strip_suffix('k') {
        Some(d) => (d, 1024),
        None => match lower.strip_suffix('m') {
            Some(d) => (d, 1 << 20),
            None => (lower.as_str(), 1),
        },
    };
    let n: u32 = digits.parse().map_err(|_| format!("`{s}`: not a size"))?;
    n.checked_mul(unit)
        .filter(|&v| v > 0 && v <= 16 << 20)
        .ok_or_else(|| format!("`{s}`: must be within 1..=16m"))
}

/// The phases, in the order a machine goes through them.
const PHASES: [&str; 5] = [
    "dhcp",
    "tftp_binary",
    "tftp_script",
    "iscsi_login",
    "iscsi_read",
];

/// What one machine went through.
struct Outcome {
    /// Duration of each phase it finished, in order.
    phases: Vec<Duration>,
    /// The phase that failed and why.
    failure: Option<(&'static str, String)>,
    leased: Option<Ipv4Addr>,
}

pub fn run(args: &Args) -> io::Result<bool> {
    if args.clients == 0 || args.clients > 4096 {
        return Err(io::Error::other("--clients must be within 1..=4096"));
    }
    let binary = Arc::new(std::fs::read(&args.binary_source)?);
    let script = Arc::new(std::fs::read(&args.script_source)?);
    let relay = dhcp::Relay::start(
        args.relay,
        SocketAddr::from((args.dhcp_server, args.dhcp_port)),
    )?;
    let start = Instant::now();
    let deadline = start + args.timeout;
    // Locally administered (bit 1), unicast (bit 0 clear), per run.
    let prefix = (std::process::id() as u8 & 0xfc) | 0x02;

    let outcomes = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..args.clients)
            .map(|i| {
                let relay = &relay;
                let (binary, script) = (binary.clone(), script.clone());
                let delay = args.ramp.mul_f64(i as f64 / args.clients as f64);
                scope.spawn(move || {
                    std::thread::sleep(delay);
                    boot_one(args, i, prefix, relay, &binary, &script, deadline)
                })
            })
            .collect();
        let mut done = Vec::with_capacity(handles.len());
        let mut last = Instant::now();
        for h in handles {
            while !h.is_finished() {
                std::thread::sleep(Duration::from_millis(50));
                if last.elapsed() >= Duration::from_secs(1) {
                    last = Instant::now();
                    eprintln!(
                        "[{:>5.1}s] {} of {} machines done",
                        start.elapsed().as_secs_f64(),
                        done.len(),
                        args.clients
                    );
                }
            }
            done.push(h.join().unwrap_or_else(|_| Outcome {
                phases: Vec::new(),
                failure: Some(("client", "thread panicked".into())),
                leased: None,
            }));
        }
        done
    });
    let elapsed = start.elapsed();
    relay.stop();
    report(args, &outcomes, elapsed)
}

fn boot_one(
    args: &Args,
    index: usize,
    prefix: u8,
    relay: &dhcp::Relay,
    binary: &[u8],
    script: &[u8],
    deadline: Instant,
) -> Outcome {
    let mut out = Outcome {
        phases: Vec::new(),
        failure: None,
        leased: None,
    };
    let mac = [
        prefix,
        0x4c,
        0x53,
        (index >> 16) as u8,
        (index >> 8) as u8,
        index as u8,
    ];
    let phase =
        |name: &'static str, out: &mut Outcome, f: &mut dyn FnMut() -> Result<(), String>| {
            if out.failure.is_some() {
                return;
            }
            if Instant::now() >= deadline {
                out.failure = Some((name, "storm time limit reached".into()));
                return;
            }
            let t = Instant::now();
            match f() {
                Ok(()) => out.phases.push(t.elapsed()),
                Err(why) => out.failure = Some((name, why)),
            }
        };

    let mut leased = None;
    phase("dhcp", &mut out, &mut || {
        leased = Some(relay.exchange(mac, deadline)?);
        Ok(())
    });
    out.leased = leased;
    for (name, file, source, bytes) in [
        ("tftp_binary", &args.binary, &args.binary_source, binary),
        ("tftp_script", &args.script, &args.script_source, script),
    ] {
        phase(name, &mut out, &mut || {
            let fetch =
                tftp::Args::one_fetch(args.tftp_server, file, source.clone(), args.blksize, 0);
            match tftp::fetch_one(&fetch, bytes) {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(why)) => Err(why),
                Err(e) => Err(e.to_string()),
            }
        });
    }
    let mut session = None;
    phase("iscsi_login", &mut out, &mut || {
        let initiator = format!(
            "iqn.2026-12.dev.dls:bench.storm.{:02x}{:02x}{:02x}",
            mac[3], mac[4], mac[5]
        );
        session = Some(iscsi::Session::login(
            args.portal,
            &initiator,
            &args.target,
            index as u16,
            deadline,
        )?);
        Ok(())
    });
    phase("iscsi_read", &mut out, &mut || {
        let s = session.as_mut().ok_or("no session")?;
        s.read_start(args.lun, args.read_mib << 20, args.io_size, deadline)
    });
    if let Some(mut s) = session {
        s.logout();
    }
    out
}

fn report(args: &Args, outcomes: &[Outcome], elapsed: Duration) -> io::Result<bool> {
    let new_histogram =
        || Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).map_err(io::Error::other);
    let mut per_phase = Vec::new();
    for _ in PHASES {
        per_phase.push(new_histogram()?);
    }
    let mut total = new_histogram()?;
    let mut failures = Vec::new();
    let mut leases = std::collections::BTreeSet::new();
    for o in outcomes {
        for (h, d) in per_phase.iter_mut().zip(&o.phases) {
            let _ = h.record(d.as_micros().max(1) as u64);
        }
        if let Some((phase, why)) = &o.failure {
            failures.push(format!("{phase}: {why}"));
        } else {
            let sum: Duration = o.phases.iter().sum();
            let _ = total.record(sum.as_micros().max(1) as u64);
        }
        leases.extend(o.leased);
    }
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let ok = failures.is_empty();
    println!(
        "dls-bench storm: {} machines, {} MiB each over iSCSI, {:.2} s, {} failed",
        args.clients,
        args.read_mib,
        elapsed.as_secs_f64(),
        failures.len()
    );
    println!(
        "  {:<12} {:>7} {:>9} {:>9} {:>9} {:>9}",
        "phase", "done", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    let mut phases_json = serde_json::Map::new();
    for (name, h) in PHASES.iter().zip(&per_phase).chain([(&"total", &total)]) {
        println!(
            "  {:<12} {:>7} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            name,
            h.len(),
            ms(h, 0.5),
            ms(h, 0.9),
            ms(h, 0.99),
            h.max() as f64 / 1000.0
        );
        phases_json.insert(
            name.to_string(),
            json!({"done": h.len(), "p50": ms(h, 0.5), "p90": ms(h, 0.9), "p99": ms(h, 0.99), "max": h.max() as f64 / 1000.0}),
        );
    }
    println!("  distinct leased addresses {}", leases.len());
    for f in failures.iter().take(20) {
        println!("  failure: {f}");
    }
    if let Some(path) = &args.json {
        let v = json!({
            "scenario": "storm",
            "clients": args.clients,
            "read_mib": args.read_mib,
            "io_size": args.io_size,
            "seconds": elapsed.as_secs_f64(),
            "completed": outcomes.len() - failures.len(),
            "failed": failures.len(),
            "slowest_total_ms": total.max() as f64 / 1000.0,
            "distinct_leases": leases.len(),
            "phase_ms": phases_json,
            "failures": failures.iter().take(100).collect::<Vec<_>>(),
        });
        std::fs::write(
            path,
            serde_json::to_string_pretty(&v).map_err(io::Error::other)?,
        )?;
    }
    Ok(ok)
}
