//! The DHCP service against busybox `udhcpc`, inside two network namespaces
//! and a veth pair this test creates (and always deletes, through `Lab`'s
//! Drop). The service runs on a thread that entered the server namespace;
//! nothing touches a real interface.
//!
//! Needs root, `ip` and `udhcpc`; without them each test says so and passes.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use dls::dhcp::config::{DhcpConfig, Mode};
use dls::dhcp::socket::{Counters, Service};
use mio::{Events, Poll, Token};

/// Two namespaces joined by a veth pair; the server side is 10.77.0.1/24.
struct Lab {
    srv: String,
    cli: String,
    srv_if: String,
    cli_if: String,
}

fn ip(args: &[&str]) -> Output {
    Command::new("ip").args(args).output().expect("run ip")
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

impl Lab {
    fn new(tag: &str) -> Option<Lab> {
        if
        // SAFETY-free root check: geteuid never fails.
        !is_root() || !have("ip") || !have("udhcpc") {
            eprintln!("skipped: needs root, ip and udhcpc");
            return None;
        }
        let id = std::process::id() % 100_000;
        let lab = Lab {
            srv: format!("dls-dhcp-{id}-{tag}-s"),
            cli: format!("dls-dhcp-{id}-{tag}-c"),
            srv_if: format!("vs{id}{tag}"),
            cli_if: format!("vc{id}{tag}"),
        };
        let steps: [&[&str]; 8] = [
            &["netns", "add", &lab.srv],
            &["netns", "add", &lab.cli],
            &["-n", &lab.srv, "link", "set", "lo", "up"],
            &["-n", &lab.cli, "link", "set", "lo", "up"],
            &[
                "link",
                "add",
                &lab.srv_if,
                "netns",
                &lab.srv,
                "type",
                "veth",
                "peer",
                "name",
                &lab.cli_if,
                "netns",
                &lab.cli,
            ],
            &[
                "-n",
                &lab.srv,
                "addr",
                "add",
                "10.77.0.1/24",
                "dev",
                &lab.srv_if,
            ],
            &["-n", &lab.srv, "link", "set", &lab.srv_if, "up"],
            &[
                "-n",
                &lab.cli,
                "link",
                "set",
                &lab.cli_if,
                "address",
                "52:54:00:00:00:01",
                "up",
            ],
        ];
        for step in steps {
            let out = ip(step);
            assert!(
                out.status.success(),
                "ip {step:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Some(lab)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end inside it, and with it the pair.
        ip(&["netns", "del", &self.cli]);
        ip(&["netns", "del", &self.srv]);
    }
}

/// The service on a thread inside the server namespace.
struct Running {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Counters>>,
}

impl Running {
    fn start(lab: &Lab, config: DhcpConfig) -> Running {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let netns = format!("/run/netns/{}", lab.srv);
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let ns = fs::File::open(&netns).expect("open netns");
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let mut svc = Service::open(config, SystemTime::now()).expect("open service");
            let mut poll = Poll::new().expect("poll");
            svc.register(poll.registry(), 0).expect("register");
            ready_tx.send(()).expect("ready");
            let mut events = Events::with_capacity(16);
            let mut again: Vec<Token> = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let timeout = if again.is_empty() { 50 } else { 0 };
                poll.poll(&mut events, Some(Duration::from_millis(timeout)))
                    .expect("poll");
                let mut ready: Vec<Token> = events.iter().map(|e| e.token()).collect();
                ready.append(&mut again);
                for token in ready {
                    if svc.on_readable(token, SystemTime::now()) {
                        again.push(token);
                    }
                }
            }
            svc.counters().clone()
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("service started");
        Running {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> Counters {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("service thread")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn config(lab: &Lab, store: &Path) -> DhcpConfig {
    let text = format!(
        r#"
interface = "{}"
range = ["10.77.0.100", "10.77.0.199"]
subnet = "10.77.0.0/24"
router = "10.77.0.1"
dns = ["10.77.0.1"]
lease_time = "1h"
lease_store = {:?}
[boot]
bios = "undionly.kpxe"
uefi_x64 = "ipxe.efi"
ipxe_script = "boot.ipxe"
"#,
        lab.srv_if, store
    );
    let c: DhcpConfig = toml::from_str(&text).expect("config");
    c.validate().expect("valid config");
    assert_eq!(c.mode, Mode::Server);
    c
}

/// Runs udhcpc once in the client namespace; returns the environment its
/// script saw on `bound`, as `key=value` lines.
fn udhcpc(lab: &Lab, dir: &Path, arch: &str) -> String {
    let out = dir.join(format!("env-{arch}"));
    let script = dir.join("script.sh");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = bound ] && env > {}\nexit 0\n",
            out.display()
        ),
    )
    .unwrap();
    Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .unwrap();
    let class = format!(
        "PXEClient:Arch:{:0>5}:UNDI:003016",
        arch.trim_start_matches('0')
    );
    let status = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.cli,
            "udhcpc",
            "-i",
            &lab.cli_if,
            "-f",
            "-q",
            "-n",
            "-t",
            "5",
            "-T",
            "1",
        ])
        .arg("-s")
        .arg(&script)
        .args([
            "-V",
            &class,
            "-x",
            &format!("0x5d:{arch}"),
            "-O",
            "bootfile",
        ])
        .output()
        .expect("run udhcpc");
    assert!(
        status.status.success(),
        "udhcpc: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    fs::read_to_string(&out).expect("udhcpc bound")
}

fn var<'a>(env: &'a str, key: &str) -> Option<&'a str> {
    env.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn udhcpc_gets_lease_and_boot_file() {
    let Some(lab) = Lab::new("a") else { return };
    let dir = tempfile::tempdir().unwrap();
    let running = Running::start(&lab, config(&lab, &dir.path().join("leases")));

    let env = udhcpc(&lab, dir.path(), "0007");
    let addr: std::net::Ipv4Addr = var(&env, "ip").expect("ip").parse().unwrap();
    assert!(
        (100..=199).contains(&addr.octets()[3]) && addr.octets()[..3] == [10, 77, 0],
        "{env}"
    );
    assert_eq!(var(&env, "siaddr"), Some("10.77.0.1"), "{env}");
    assert_eq!(var(&env, "boot_file"), Some("ipxe.efi"), "{env}");
    assert_eq!(var(&env, "bootfile"), Some("ipxe.efi"), "{env}");
    assert_eq!(var(&env, "router"), Some("10.77.0.1"), "{env}");

    let bios = udhcpc(&lab, dir.path(), "0000");
    assert_eq!(var(&bios, "boot_file"), Some("undionly.kpxe"), "{bios}");
    assert_eq!(
        var(&bios, "ip"),
        var(&env, "ip"),
        "same client, same address"
    );

    let counters = running.stop();
    assert_eq!(counters.acks, 2, "{counters:?}");
    assert!(counters.offers >= 2, "{counters:?}");
}

#[test]
fn lease_survives_restart() {
    let Some(lab) = Lab::new("b") else { return };
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("leases");

    let running = Running::start(&lab, config(&lab, &store));
    let first = udhcpc(&lab, dir.path(), "0000");
    running.stop();
    let journal = fs::read_to_string(&store).unwrap();
    assert!(
        journal.contains(&format!(" G {} ", var(&first, "ip").unwrap())),
        "{journal}"
    );

    // A new server with a range where the first address would otherwise be
    // someone else's still gives this client its address back.
    let running = Running::start(&lab, config(&lab, &store));
    let second = udhcpc(&lab, dir.path(), "0007");
    assert_eq!(var(&second, "ip"), var(&first, "ip"));
    running.stop();
}
