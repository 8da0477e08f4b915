//! The DHCP service against busybox `udhcpc`, inside two network namespaces
//! and a veth pair this test creates (and always deletes, through `Lab`'s
//! Drop). The service runs on a thread that entered the server namespace;
//! nothing touches a real interface.
//!
//! Needs root, `ip` and `udhcpc`; without them each test fails, naming the tool.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use std::net::Ipv4Addr;

use dls::dhcp::config::{DhcpConfig, Mode};
use dls::dhcp::socket::{Counters, Service};
use dls::dhcp::wire::{code, Request};
use mio::{Events, Poll, Token};

/// Namespaces around a bridge in the server namespace (10.77.0.1/24 on
/// `srv_if`): a client namespace, and with `peer` a third one for another
/// DHCP server (10.77.0.2/24 on `peer_if`).
struct Lab {
    srv: String,
    cli: String,
    peer: Option<String>,
    srv_if: String,
    cli_if: String,
    peer_if: String,
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

fn must(args: &[&str]) {
    let out = ip(args);
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Lab {
    fn new(tag: &str, tools: &[&str], with_peer: bool) -> Option<Lab> {
        // Never a silent skip: a missing tool or privilege is a failure the
        // README's test command prevents (it installs the tools, as root).
        assert!(is_root(), "this test needs root (network namespaces)");
        for t in tools {
            assert!(
                have(t),
                "missing {t}: tests/run.sh installs it (iproute2, udhcpc, isc-dhcp-client, dnsmasq)"
            );
        }
        let id = std::process::id() % 100_000;
        let name = |role: &str| format!("dls-dhcp-{id}-{tag}-{role}");
        let lab = Lab {
            srv: name("s"),
            cli: name("c"),
            peer: with_peer.then(|| name("p")),
            srv_if: format!("br{id}{tag}"),
            cli_if: format!("vc{id}{tag}"),
            peer_if: format!("vp{id}{tag}"),
        };
        // From here on, Drop cleans up whatever was created.
        must(&["netns", "add", &lab.srv]);
        must(&["netns", "add", &lab.cli]);
        let (srv, br) = (lab.srv.as_str(), lab.srv_if.as_str());
        must(&["-n", srv, "link", "set", "lo", "up"]);
        must(&["-n", &lab.cli, "link", "set", "lo", "up"]);
        must(&["-n", srv, "link", "add", br, "type", "bridge"]);
        must(&[
            "-n",
            srv,
            "link",
            "set",
            br,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ]);
        must(&["-n", srv, "addr", "add", "10.77.0.1/24", "dev", br]);
        must(&["-n", srv, "link", "set", br, "up"]);
        lab.attach(&lab.cli, &lab.cli_if, "1");
        must(&[
            "-n",
            &lab.cli,
            "link",
            "set",
            &lab.cli_if,
            "address",
            "52:54:00:00:00:01",
            "up",
        ]);
        if let Some(peer) = &lab.peer {
            must(&["netns", "add", peer]);
            lab.attach(peer, &lab.peer_if, "2");
            must(&[
                "-n",
                peer,
                "addr",
                "add",
                "10.77.0.2/24",
                "dev",
                &lab.peer_if,
            ]);
            must(&["-n", peer, "link", "set", &lab.peer_if, "up"]);
        }
        Some(lab)
    }

    /// A veth pair: `ifname` in `ns`, its other end on the bridge.
    fn attach(&self, ns: &str, ifname: &str, n: &str) {
        let port = format!("{}p{n}", self.cli_if);
        must(&[
            "-n", &self.srv, "link", "add", &port, "type", "veth", "peer", "name", ifname, "netns",
            ns,
        ]);
        must(&[
            "-n",
            &self.srv,
            "link",
            "set",
            &port,
            "master",
            &self.srv_if,
            "up",
        ]);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth ends in it, and so the pairs.
        for ns in [Some(&self.cli), self.peer.as_ref(), Some(&self.srv)]
            .into_iter()
            .flatten()
        {
            ip(&["netns", "del", ns]);
        }
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
    let Some(lab) = Lab::new("a", &["ip", "udhcpc"], false) else {
        return;
    };
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
    assert!(counters.reply_time_us.len() >= 4, "{counters:?}");
    assert!(counters.offers >= 2, "{counters:?}");
}

#[test]
fn lease_survives_restart() {
    let Some(lab) = Lab::new("b", &["ip", "udhcpc"], false) else {
        return;
    };
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

/// A child process killed (by its own pid) when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A PXE client written for the test: a UDP socket on port 68 in the
/// client namespace, sending crafted requests and collecting replies.
struct PxeClient {
    socket: std::net::UdpSocket,
}

const XID: u32 = 0x5078_6531;

impl PxeClient {
    fn new(lab: &Lab) -> PxeClient {
        let (tx, rx) = mpsc::channel();
        let netns = format!("/run/netns/{}", lab.cli);
        let ifname = lab.cli_if.clone();
        // A socket belongs to the namespace of the thread that created it;
        // a short-lived thread enters the client namespace to make it.
        std::thread::spawn(move || {
            let ns = fs::File::open(&netns).expect("open netns");
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
            s.bind_device(Some(ifname.as_bytes())).unwrap();
            s.set_broadcast(true).unwrap();
            s.set_reuse_address(true).unwrap();
            s.bind(&std::net::SocketAddr::from(([0, 0, 0, 0], 68)).into())
                .unwrap();
            tx.send(std::net::UdpSocket::from(s)).unwrap();
        })
        .join()
        .unwrap();
        let socket = rx.recv().unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        PxeClient { socket }
    }

    fn send(&self, to: (Ipv4Addr, u16), msg_type: u8, ciaddr: Ipv4Addr, extra: &[u8]) {
        let mut b = vec![0u8; 240];
        b[..4].copy_from_slice(&[1, 1, 6, 0]);
        b[4..8].copy_from_slice(&XID.to_be_bytes());
        b[10] = 0x80;
        b[12..16].copy_from_slice(&ciaddr.octets());
        b[28..34].copy_from_slice(&[0x52, 0x54, 0, 0, 0, 1]);
        b[236..240].copy_from_slice(&[99, 130, 83, 99]);
        b.extend_from_slice(&[53, 1, msg_type, 60, 32]);
        b.extend_from_slice(b"PXEClient:Arch:00007:UNDI:003016");
        b.extend_from_slice(&[93, 2, 0, 7, 94, 3, 1, 3, 16, 97, 17, 0]);
        b.extend_from_slice(&[0x11; 16]);
        b.extend_from_slice(extra);
        b.push(255);
        self.socket.send_to(&b, to).unwrap();
    }

    /// Replies for our xid that arrive within `wait`, parsed.
    fn collect(&self, wait: Duration) -> Vec<Request> {
        let deadline = std::time::Instant::now() + wait;
        let mut out = Vec::new();
        let mut buf = [0u8; 1500];
        while std::time::Instant::now() < deadline {
            let Ok((n, _)) = self.socket.recv_from(&mut buf) else {
                continue;
            };
            let mut b = buf[..n].to_vec();
            if b.first() != Some(&2) || b[4..8] != XID.to_be_bytes() {
                continue;
            }
            b[0] = 1; // parse the BOOTREPLY with the request parser
            out.push(Request::parse(&b).expect("reply parses"));
        }
        out
    }
}

fn file_field(r: &Request) -> Option<&[u8]> {
    r.option(code::BOOTFILE)
}

/// proxyDHCP beside dnsmasq (BC-14 end to end): dnsmasq gives the address,
/// dls the boot file, on 67 and then on 4011; dls keeps out of dnsmasq's
/// REQUEST/ACK.
#[test]
fn proxy_beside_dnsmasq() {
    let Some(lab) = Lab::new("p", &["ip", "dnsmasq"], true) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let peer = lab.peer.clone().unwrap();
    let _dnsmasq = Child(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &peer,
                "dnsmasq",
                "--no-daemon",
                "--conf-file=/dev/null",
                "--port=0",
            ])
            .args([
                "--bind-interfaces",
                &format!("--interface={}", lab.peer_if),
                "--no-ping",
            ])
            .args(["--dhcp-range=10.77.0.100,10.77.0.150,255.255.255.0,1h"])
            .arg(format!(
                "--dhcp-leasefile={}",
                dir.path().join("dnsmasq.leases").display()
            ))
            .arg(format!(
                "--pid-file={}",
                dir.path().join("dnsmasq.pid").display()
            ))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start dnsmasq"),
    );
    let text = format!(
        "interface = \"{}\"\nmode = \"proxy\"\nsubnet = \"10.77.0.0/24\"\nlease_store = {:?}\n[boot]\nuefi_x64 = \"ipxe.efi\"\n",
        lab.srv_if,
        dir.path().join("leases")
    );
    let config: DhcpConfig = toml::from_str(&text).unwrap();
    config.validate().unwrap();
    let running = Running::start(&lab, config);
    let client = PxeClient::new(&lab);
    let ours = Ipv4Addr::new(10, 77, 0, 1);
    let theirs = Ipv4Addr::new(10, 77, 0, 2);

    // DISCOVER: two OFFERs, the address from dnsmasq, the boot file from us.
    let mut offers = Vec::new();
    for _ in 0..20 {
        client.send((Ipv4Addr::BROADCAST, 67), 1, Ipv4Addr::UNSPECIFIED, &[]);
        offers.extend(client.collect(Duration::from_millis(500)));
        if offers.iter().any(|o| o.server_id() == Some(theirs))
            && offers.iter().any(|o| o.server_id() == Some(ours))
        {
            break;
        }
    }
    let address = offers
        .iter()
        .find(|o| o.server_id() == Some(theirs))
        .expect("dnsmasq offer");
    let proxy = offers
        .iter()
        .find(|o| o.server_id() == Some(ours))
        .expect("proxy offer");
    assert_eq!(proxy.yiaddr, Ipv4Addr::UNSPECIFIED);
    assert_eq!(proxy.siaddr, ours);
    assert_eq!(file_field(proxy), Some(&b"ipxe.efi"[..]));
    assert_eq!(proxy.option(code::VENDOR_CLASS), Some(&b"PXEClient"[..]));
    let yiaddr = address.yiaddr;

    // REQUEST to dnsmasq: its ACK, and silence from us.
    let mut req = vec![50, 4];
    req.extend_from_slice(&yiaddr.octets());
    req.extend_from_slice(&[54, 4, 10, 77, 0, 2]);
    client.send((Ipv4Addr::BROADCAST, 67), 3, Ipv4Addr::UNSPECIFIED, &req);
    let acks = client.collect(Duration::from_millis(800));
    assert!(
        acks.iter()
            .any(|a| a.server_id() == Some(theirs) && a.yiaddr == yiaddr),
        "dnsmasq ACK"
    );
    assert!(
        acks.iter().all(|a| a.server_id() != Some(ours)),
        "proxy must stay silent"
    );

    // Boot server leg: REQUEST to us on 4011 from the new address.
    must(&[
        "-n",
        &lab.cli,
        "addr",
        "add",
        &format!("{yiaddr}/24"),
        "dev",
        &lab.cli_if,
    ]);
    let mut ack = Vec::new();
    for _ in 0..10 {
        client.send((ours, 4011), 3, yiaddr, &[]);
        ack = client.collect(Duration::from_millis(300));
        if !ack.is_empty() {
            break;
        }
    }
    let ack = ack
        .iter()
        .find(|a| a.server_id() == Some(ours))
        .expect("ACK from port 4011");
    assert_eq!(ack.message_type, Some(dhcproto::v4::MessageType::Ack));
    assert_eq!(file_field(ack), Some(&b"ipxe.efi"[..]));
    assert_eq!(ack.ciaddr, yiaddr);

    let counters = running.stop();
    assert!(
        counters.ignored.get("other_server").copied().unwrap_or(0) >= 1,
        "{counters:?}"
    );
}

/// ISC dhclient, declaring and sending option 93 = 0 (BIOS).
#[test]
fn dhclient_gets_lease_and_boot_file() {
    let Some(lab) = Lab::new("d", &["ip", "dhclient"], false) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let running = Running::start(&lab, config(&lab, &dir.path().join("leases")));
    let d = dir.path();
    let (conf, script, env) = (
        d.join("dhclient.conf"),
        d.join("dhclient-script"),
        d.join("env"),
    );
    fs::write(
        &conf,
        "option pxe-arch code 93 = unsigned integer 16;\nsend pxe-arch 0;\n\
         send vendor-class-identifier \"PXEClient:Arch:00000:UNDI:002001\";\n\
         request subnet-mask, routers, domain-name-servers;\n",
    )
    .unwrap();
    let body = format!(
        "#!/bin/sh\n[ \"$reason\" = BOUND ] && env > {}\nexit 0\n",
        env.display()
    );
    fs::write(&script, body).unwrap();
    Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .unwrap();
    let pidfile = d.join("dhclient.pid");
    let out = Command::new("timeout")
        .args([
            "30", "ip", "netns", "exec", &lab.cli, "dhclient", "-4", "-v", "-1",
        ])
        .arg("-cf")
        .arg(&conf)
        .arg("-sf")
        .arg(&script)
        .arg("-lf")
        .arg(d.join("dhclient.leases"))
        .arg("-pf")
        .arg(&pidfile)
        .arg(&lab.cli_if)
        .output()
        .expect("run dhclient");
    // dhclient stays behind as a daemon after BOUND, even with -1.
    if let Ok(pid) = fs::read_to_string(&pidfile) {
        if let Ok(pid) = pid.trim().parse::<i32>() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let env = fs::read_to_string(&env).unwrap_or_else(|_| panic!("dhclient not bound: {stderr}"));
    let addr: Ipv4Addr = var(&env, "new_ip_address")
        .expect("address")
        .parse()
        .unwrap();
    assert_eq!(addr.octets()[..3], [10, 77, 0], "{env}");
    assert_eq!(var(&env, "new_filename"), Some("undionly.kpxe"), "{env}");
    assert_eq!(var(&env, "new_routers"), Some("10.77.0.1"), "{env}");
    let counters = running.stop();
    assert_eq!(counters.acks, 1, "{counters:?}");
}

/// A DORA burst from many clients (distinct chaddr) over real sockets: every
/// client gets an ACK, no address is ACKed twice, and the exchange rate is
/// printed. `DLS_DHCP_LOAD_CLIENTS` scales it (default 400, pool of 1000).
#[test]
fn burst_of_clients_gets_distinct_addresses() {
    let Some(lab) = Lab::new("l", &["ip"], false) else {
        return;
    };
    let clients: u32 = std::env::var("DLS_DHCP_LOAD_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&lab, &dir.path().join("leases"));
    cfg.subnet = Some("10.77.0.0/16".parse().unwrap());
    cfg.range = Some([Ipv4Addr::new(10, 77, 1, 0), Ipv4Addr::new(10, 77, 4, 231)]);
    let running = Running::start(&lab, cfg);
    let client = PxeClient::new(&lab);
    client
        .socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();

    let packet = |i: u32, msg_type: u8, extra: &[u8]| {
        let mut b = vec![0u8; 240];
        b[..4].copy_from_slice(&[1, 1, 6, 0]);
        b[4..8].copy_from_slice(&i.to_be_bytes());
        b[10] = 0x80;
        b[28..34].copy_from_slice(&[0x02, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8, 1]);
        b[236..240].copy_from_slice(&[99, 130, 83, 99]);
        b.extend_from_slice(&[53, 1, msg_type]);
        b.extend_from_slice(extra);
        b.push(255);
        b
    };
    let start = std::time::Instant::now();
    let mut acked: std::collections::HashMap<u32, Ipv4Addr> = Default::default();
    let mut offered: std::collections::HashMap<u32, Ipv4Addr> = Default::default();
    let mut buf = [0u8; 1500];
    for _round in 0..50 {
        if acked.len() as u32 == clients {
            break;
        }
        // Window: DISCOVER for clients without an offer, REQUEST for those with one.
        let pending: Vec<u32> = (0..clients).filter(|i| !acked.contains_key(i)).collect();
        for i in pending {
            let bytes = match offered.get(&i) {
                None => packet(i, 1, &[]),
                Some(ip) => {
                    let mut o = vec![50, 4];
                    o.extend_from_slice(&ip.octets());
                    o.extend_from_slice(&[54, 4, 10, 77, 0, 1]);
                    packet(i, 3, &o)
                }
            };
            client
                .socket
                .send_to(&bytes, (Ipv4Addr::BROADCAST, 67))
                .unwrap();
            if i % 32 == 31 {
                // Let the server drain before the socket buffers fill.
                while let Ok((n, _)) = client.socket.recv_from(&mut buf) {
                    note_reply(&buf[..n], &mut offered, &mut acked);
                }
            }
        }
        while let Ok((n, _)) = client.socket.recv_from(&mut buf) {
            note_reply(&buf[..n], &mut offered, &mut acked);
        }
    }
    let elapsed = start.elapsed();
    let counters = running.stop();
    assert_eq!(acked.len() as u32, clients, "{counters:?}");
    let distinct: std::collections::HashSet<_> = acked.values().collect();
    assert_eq!(distinct.len(), acked.len(), "an address was ACKed twice");
    eprintln!(
        "{clients} DORA exchanges in {elapsed:?} ({:.0}/s); reply p50 {} us, p99 {} us",
        f64::from(clients) / elapsed.as_secs_f64(),
        counters.reply_time_us.value_at_quantile(0.5),
        counters.reply_time_us.value_at_quantile(0.99)
    );
}

fn note_reply(
    b: &[u8],
    offered: &mut std::collections::HashMap<u32, Ipv4Addr>,
    acked: &mut std::collections::HashMap<u32, Ipv4Addr>,
) {
    let mut b = b.to_vec();
    if b.first() != Some(&2) {
        return;
    }
    b[0] = 1;
    let Ok(r) = Request::parse(&b) else { return };
    match r.message_type {
        Some(dhcproto::v4::MessageType::Offer) => {
            offered.insert(r.xid, r.yiaddr);
        }
        Some(dhcproto::v4::MessageType::Ack) => {
            acked.insert(r.xid, r.yiaddr);
        }
        _ => {}
    }
}
