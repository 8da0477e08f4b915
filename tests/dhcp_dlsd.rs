//! The DHCP service of the real `dlsd` binary against real clients: busybox
//! `udhcpc`, ISC `dhclient`, dnsmasq as the address server beside proxy
//! mode, and a DHCP client written here from RFC 2131 for the packets those
//! tools cannot make (relays, NAKs, the PXE port-4011 leg, lease bursts,
//! hostile input).
//!
//! Each test builds its own lab: two network namespaces named after the
//! test's PID and a tag, joined by a veth pair, with its own 10.N.0.0/24.
//! dlsd runs in the server namespace under `ip netns exec`, bound to the
//! server end of the veth. [`Lab`]'s Drop deletes the namespaces and the
//! harness's `Server` stops dlsd by its PID, panic or not; daemons that fork
//! away (dhclient, dnsmasq) are stopped through their pid files by
//! [`Daemon`]. Nothing runs on a real interface.
//!
//! Needs root and the Debian packages iproute2, udhcpc, isc-dhcp-client,
//! dnsmasq, curl and prometheus (promtool); a test without them fails and
//! names the package.

mod common;

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{require_tool, run, Server};

// ---------------------------------------------------------------------------
// The lab: namespaces, veth, processes.

/// Two namespaces joined by a veth pair; the server end holds 10.N.0.1/24,
/// the client end starts without an address.
struct Lab {
    srv: String,
    cli: String,
    srv_if: String,
    cli_if: String,
    /// N in 10.N.0.0/24, distinct per test.
    net: u8,
    cli_mac: [u8; 6],
}

impl Lab {
    fn new(tag: &str, net: u8) -> Lab {
        require_root();
        require_tool("ip", "iproute2");
        let id = std::process::id() % 100_000;
        let lab = Lab {
            srv: format!("dls-dd-{id}-{tag}-s"),
            cli: format!("dls-dd-{id}-{tag}-c"),
            srv_if: format!("ds{id}{tag}"),
            cli_if: format!("dc{id}{tag}"),
            net,
            cli_mac: [0x52, 0x54, 0x00, net, 0x00, 0x01],
        };
        // `lab` exists before the first step, so a failing step still
        // deletes whatever was created.
        let server_cidr = format!("{}/24", lab.server());
        let mac = mac_text(lab.cli_mac);
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
                &server_cidr,
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
                &mac,
                "up",
            ],
        ];
        for step in steps {
            ip(step);
        }
        lab
    }

    fn addr(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.net, 0, host)
    }

    fn server(&self) -> Ipv4Addr {
        self.addr(1)
    }

    /// Adds `addr`/24 to the interface of namespace `ns`.
    fn add_addr(&self, ns: &str, dev: &str, addr: Ipv4Addr) {
        ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev]);
    }

    /// `program` run inside the client namespace.
    fn in_cli(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.cli, program]);
        c
    }

    fn in_srv(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.srv, program]);
        c
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth end, and with it the pair.
        for ns in [&self.cli, &self.srv] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (Debian package iproute2)");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "these tests create network namespaces and need root"
    );
}

fn mac_text(mac: [u8; 6]) -> String {
    let parts: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    parts.join(":")
}

/// A process that forked away from us (dnsmasq, dhclient), stopped on drop
/// by the PID it wrote to its pid file: SIGTERM, then SIGKILL.
struct Daemon {
    pidfile: PathBuf,
}

impl Daemon {
    fn pid(&self) -> Option<i32> {
        fs::read_to_string(&self.pidfile).ok()?.trim().parse().ok()
    }

    /// Waits until the pid file names a live process: a forking daemon may
    /// write it only after its parent, the process we waited for, exited.
    fn wait_running(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.pid().is_some_and(alive) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Stops it; true if it was running and is gone now.
    fn stop(&self) -> bool {
        let Some(pid) = self.pid() else { return false };
        if !alive(pid) {
            return false;
        }
        for signal in ["-TERM", "-KILL"] {
            let _ = Command::new("kill")
                .args([signal, &pid.to_string()])
                .output();
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if !alive(pid) {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        false
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether `pid` exists and is not a zombie.
fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

// ---------------------------------------------------------------------------
// dlsd.

/// `[dhcp]` in server mode for the lab's subnet, range .100-.199; `keys`
/// go into `[dhcp]`, `tail` after `[dhcp.boot]` (e.g. `[[dhcp.host]]`).
fn server_config(lab: &Lab, store: &Path, keys: &str, tail: &str) -> String {
    let n = lab.net;
    format!(
        r#"[dhcp]
interface = "{}"
range = ["10.{n}.0.100", "10.{n}.0.199"]
subnet = "10.{n}.0.0/24"
router = "10.{n}.0.1"
dns = ["10.{n}.0.1"]
lease_time = "1h"
lease_store = {store:?}
{keys}
{BOOT}
{tail}
"#,
        lab.srv_if
    )
}

const BOOT: &str = r#"[dhcp.boot]
bios = "undionly.kpxe"
uefi_x64 = "ipxe.efi"
uefi_arm64 = "ipxe-arm64.efi"
ipxe_script = "boot.ipxe"
"#;

/// dlsd in the server namespace: TFTP on `tftp`:69, HTTP on a free port of
/// the namespace's loopback, and `dhcp` (whole sections).
fn start_dlsd(lab: &Lab, tftp: Ipv4Addr, dhcp: &str) -> Server {
    let wrapper = ["ip", "netns", "exec", lab.srv.as_str()];
    let extra = format!("[http]\nlisten = \"127.0.0.1:0\"\n{dhcp}");
    let server = Server::start_wrapped_with(&wrapper, SocketAddr::from((tftp, 69)), "", &extra);
    server.wait_for_log("dhcp: listening on", Duration::from_secs(5));
    server
}

/// GET `path` from dlsd's HTTP endpoint, with curl inside the namespace.
fn http_get(lab: &Lab, server: &Server, path: &str) -> String {
    require_tool("curl", "curl");
    let log = server.log();
    let port = log
        .lines()
        .find_map(|l| l.split("http: listening on 127.0.0.1:").nth(1))
        .and_then(|p| p.trim().parse::<u16>().ok())
        .unwrap_or_else(|| panic!("no HTTP port in the log:\n{log}"));
    let url = format!("http://127.0.0.1:{port}{path}");
    let mut curl = lab.in_srv("curl");
    curl.args(["-sS", "--fail", "--max-time", "5", &url]);
    let (ok, body) = run(&mut curl, Duration::from_secs(10));
    assert!(ok, "curl {url}: {body}");
    body
}

/// The value of the sample `name` (with labels, if any) in a scrape.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Runs `promtool check metrics` on a scrape.
fn promtool_check(dir: &Path, scrape: &str) {
    require_tool("promtool", "prometheus");
    let file = dir.join("scrape.prom");
    fs::write(&file, scrape).unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("promtool check metrics < {:?}", file));
    let (ok, out) = run(&mut cmd, Duration::from_secs(20));
    assert!(ok, "promtool check metrics: {out}\n{scrape}");
}

/// Scrapes /metrics, checks it with promtool, and checks the DHCP counters
/// against what the clients saw.
fn check_metrics(lab: &Lab, server: &Server, dir: &Path, acks: u64, naks: u64) -> String {
    let text = http_get(lab, server, "/metrics");
    promtool_check(dir, &text);
    assert_eq!(
        sample(&text, "dls_dhcp_acks_total"),
        Some(acks as f64),
        "{text}"
    );
    assert_eq!(
        sample(&text, "dls_dhcp_naks_total"),
        Some(naks as f64),
        "{text}"
    );
    text
}

// ---------------------------------------------------------------------------
// Real clients.

/// The environment a client script saw, one `key=value` per line.
struct Env(String);

impl Env {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
    }

    fn ip(&self, key: &str) -> Ipv4Addr {
        self.get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no address in {key}:\n{}", self.0))
    }
}

/// Runs `udhcpc -q` once in the client namespace with `args` added; the
/// environment its script saw on `bound`.
fn udhcpc(lab: &Lab, dir: &Path, name: &str, args: &[&str]) -> Env {
    require_tool("udhcpc", "udhcpc");
    let out = dir.join(format!("udhcpc-{name}.env"));
    let script = dir.join(format!("udhcpc-{name}.sh"));
    let body = format!("#!/bin/sh\n[ \"$1\" = bound ] && env > {out:?}\nexit 0\n");
    write_script(&script, &body);
    let mut cmd = lab.in_cli("udhcpc");
    cmd.args([
        "-i",
        &lab.cli_if,
        "-f",
        "-q",
        "-n",
        "-t",
        "3",
        "-T",
        "2",
        "-s",
    ])
    .arg(&script)
    .args(["-O", "bootfile", "-O", "tftp"])
    .args(args);
    let (ok, log) = run(&mut cmd, Duration::from_secs(20));
    assert!(ok, "udhcpc {args:?} got no lease:\n{log}");
    let env = fs::read_to_string(&out).unwrap_or_else(|_| panic!("udhcpc never bound:\n{log}"));
    Env(env)
}

fn write_script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, body).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Runs `dhclient -1` in the client namespace with `conf`; returns the
/// environment of its BOUND (or REBOOT) call and the daemon it left running.
fn dhclient(lab: &Lab, dir: &Path, name: &str, conf: &str) -> (Env, Daemon) {
    require_tool("dhclient", "isc-dhcp-client");
    let path = |ext: &str| dir.join(format!("dhclient-{name}.{ext}"));
    let (cf, sf, out) = (path("conf"), path("sh"), path("env"));
    fs::write(&cf, conf).unwrap();
    // BOUND after a DISCOVER, REBOOT after an INIT-REBOOT REQUEST.
    let body =
        format!("#!/bin/sh\ncase \"$reason\" in BOUND|REBOOT) env > {out:?};; esac\nexit 0\n");
    write_script(&sf, &body);
    // The lease file is shared between runs, as on a real machine.
    let daemon = Daemon {
        pidfile: dir.join("dhclient.pid"),
    };
    let _ = fs::remove_file(&daemon.pidfile);
    let mut cmd = lab.in_cli("dhclient");
    cmd.args(["-4", "-v", "-1", "-cf"])
        .arg(&cf)
        .arg("-sf")
        .arg(&sf)
        .arg("-lf")
        .arg(dir.join("dhclient.leases"))
        .arg("-pf")
        .arg(&daemon.pidfile)
        .arg(&lab.cli_if);
    let (ok, log) = run(&mut cmd, Duration::from_secs(30));
    assert!(ok, "dhclient got no lease:\n{log}");
    assert!(
        daemon.wait_running(Duration::from_secs(5)),
        "dhclient did not stay in the background after binding:\n{log}"
    );
    let env = fs::read_to_string(&out).unwrap_or_else(|_| panic!("dhclient never bound:\n{log}"));
    (Env(env), daemon)
}

// ---------------------------------------------------------------------------
// A DHCP client written from RFC 2131 section 2 and RFC 2132, independent of
// the server's codec, for crafted packets.

const MAGIC: [u8; 4] = [99, 130, 83, 99];
const DISCOVER: u8 = 1;
const OFFER: u8 = 2;
const REQUEST: u8 = 3;
const ACK: u8 = 5;
const NAK: u8 = 6;
const BROADCAST: u16 = 0x8000;
const PXE_BIOS: &[u8] = b"PXEClient:Arch:00000:UNDI:002001";

/// One BOOTP/DHCP message.
#[derive(Debug, Clone)]
struct Packet {
    op: u8,
    hops: u8,
    xid: u32,
    flags: u16,
    ciaddr: Ipv4Addr,
    yiaddr: Ipv4Addr,
    siaddr: Ipv4Addr,
    giaddr: Ipv4Addr,
    chaddr: [u8; 6],
    file: Vec<u8>,
    options: Vec<(u8, Vec<u8>)>,
    /// The datagram as received (empty for one built here).
    raw: Vec<u8>,
}

impl Packet {
    /// A BOOTREQUEST of DHCP message type `msg_type`.
    fn new(msg_type: u8, chaddr: [u8; 6], xid: u32) -> Packet {
        Packet {
            op: 1,
            hops: 0,
            xid,
            flags: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr,
            file: Vec::new(),
            options: vec![(53, vec![msg_type])],
            raw: Vec::new(),
        }
    }

    /// A PXE BIOS client's DISCOVER (options 60 and 93), broadcast flag set.
    fn pxe_discover(chaddr: [u8; 6], xid: u32) -> Packet {
        let mut p = Packet::new(DISCOVER, chaddr, xid)
            .opt(60, PXE_BIOS)
            .opt(93, &[0, 0]);
        p.flags = BROADCAST;
        p
    }

    /// The SELECTING REQUEST answering `offer`.
    fn request_for(offer: &Packet, chaddr: [u8; 6], xid: u32) -> Packet {
        let sid = offer.option_ip(54).expect("offer without option 54");
        let mut p = Packet::new(REQUEST, chaddr, xid)
            .opt(54, &sid.octets())
            .opt(50, &offer.yiaddr.octets());
        p.flags = BROADCAST;
        p
    }

    /// INIT-REBOOT (RFC 2131 section 4.3.2): option 50, no 54, no ciaddr.
    fn init_reboot(ip: Ipv4Addr, chaddr: [u8; 6], xid: u32) -> Packet {
        let mut p = Packet::new(REQUEST, chaddr, xid).opt(50, &ip.octets());
        p.flags = BROADCAST;
        p
    }

    fn opt(mut self, code: u8, value: &[u8]) -> Packet {
        self.options.push((code, value.to_vec()));
        self
    }

    fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; 236];
        b[0] = self.op;
        b[1] = 1; // Ethernet
        b[2] = 6;
        b[3] = self.hops;
        b[4..8].copy_from_slice(&self.xid.to_be_bytes());
        b[10..12].copy_from_slice(&self.flags.to_be_bytes());
        for (at, a) in [
            (12, self.ciaddr),
            (16, self.yiaddr),
            (20, self.siaddr),
            (24, self.giaddr),
        ] {
            b[at..at + 4].copy_from_slice(&a.octets());
        }
        b[28..34].copy_from_slice(&self.chaddr);
        b[108..108 + self.file.len()].copy_from_slice(&self.file);
        b.extend_from_slice(&MAGIC);
        for (code, value) in &self.options {
            b.push(*code);
            b.push(u8::try_from(value.len()).expect("option under 256 bytes"));
            b.extend_from_slice(value);
        }
        b.push(255);
        b.resize(b.len().max(300), 0);
        b
    }

    /// A reply; `None` unless it is a well-formed BOOTP message with the
    /// DHCP cookie. Option overload is not read: dlsd does not send it.
    fn parse(buf: &[u8]) -> Option<Packet> {
        if buf.len() < 240 || buf[236..240] != MAGIC {
            return None;
        }
        let ip = |at: usize| Ipv4Addr::new(buf[at], buf[at + 1], buf[at + 2], buf[at + 3]);
        let mut options = Vec::new();
        let mut i = 240;
        while let Some(&code) = buf.get(i) {
            match code {
                0 => i += 1,
                255 => break,
                _ => {
                    let len = usize::from(*buf.get(i + 1)?);
                    options.push((code, buf.get(i + 2..i + 2 + len)?.to_vec()));
                    i += 2 + len;
                }
            }
        }
        let file = &buf[108..236];
        let file_len = file.iter().position(|&b| b == 0).unwrap_or(file.len());
        Some(Packet {
            op: buf[0],
            hops: buf[3],
            xid: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
            flags: u16::from_be_bytes([buf[10], buf[11]]),
            ciaddr: ip(12),
            yiaddr: ip(16),
            siaddr: ip(20),
            giaddr: ip(24),
            chaddr: buf[28..34].try_into().ok()?,
            file: file[..file_len].to_vec(),
            options,
            raw: buf.to_vec(),
        })
    }

    fn option(&self, code: u8) -> Option<&[u8]> {
        self.options
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.as_slice())
    }

    fn option_ip(&self, code: u8) -> Option<Ipv4Addr> {
        let v: [u8; 4] = self.option(code)?.try_into().ok()?;
        Some(Ipv4Addr::from(v))
    }

    fn message_type(&self) -> Option<u8> {
        match self.option(53)? {
            [t] => Some(*t),
            _ => None,
        }
    }

    fn file_name(&self) -> String {
        String::from_utf8_lossy(&self.file).into_owned()
    }

    fn text(&self, code: u8) -> Option<String> {
        self.option(code)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// A UDP socket in the client namespace, bound to its veth.
struct Client {
    sock: UdpSocket,
    /// Every DHCPACK that arrived, wanted or not (for the metrics check).
    acks: Cell<u64>,
}

const TO_SERVERS: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);

impl Client {
    /// Binds `local` inside the lab's client namespace, on its veth, with
    /// SO_BROADCAST and SO_REUSEADDR (dhclient may hold port 68 too).
    fn open(lab: &Lab, local: SocketAddrV4) -> Client {
        let netns = format!("/run/netns/{}", lab.cli);
        let iface = lab.cli_if.clone();
        // setns changes only the calling thread; the socket keeps the
        // namespace it was created in after the thread ends.
        let sock = std::thread::spawn(move || -> std::io::Result<UdpSocket> {
            let ns = fs::File::open(&netns)?;
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
            let s = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::DGRAM,
                Some(socket2::Protocol::UDP),
            )?;
            s.set_reuse_address(true)?;
            s.bind_device(Some(iface.as_bytes()))?;
            s.set_broadcast(true)?;
            s.bind(&local.into())?;
            Ok(s.into())
        })
        .join()
        .expect("socket thread")
        .unwrap_or_else(|e| panic!("client socket on {local}: {e}"));
        Client {
            sock,
            acks: Cell::new(0),
        }
    }

    /// The ACKs received since the last call, late duplicates included.
    fn take_acks(&self) -> u64 {
        self.recv(Duration::from_millis(200), |_| false);
        self.acks.replace(0)
    }

    fn send(&self, p: &Packet, to: SocketAddrV4) {
        self.send_raw(&p.encode(), to);
    }

    fn send_raw(&self, bytes: &[u8], to: SocketAddrV4) {
        self.sock
            .send_to(bytes, to)
            .unwrap_or_else(|e| panic!("send to {to}: {e}"));
    }

    /// The next reply within `limit` that `want` accepts; others are skipped.
    fn recv(
        &self,
        limit: Duration,
        mut want: impl FnMut(&Packet) -> bool,
    ) -> Option<(Packet, SocketAddr)> {
        let deadline = Instant::now() + limit;
        let mut buf = vec![0u8; 4096];
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            self.sock
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    if let Some(p) = Packet::parse(&buf[..n]) {
                        if p.op == 2 && p.message_type() == Some(ACK) {
                            self.acks.set(self.acks.get() + 1);
                        }
                        if p.op == 2 && want(&p) {
                            return Some((p, from));
                        }
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(e) => panic!("recv: {e}"),
            }
        }
    }

    /// Sends `p` to `to` and waits for a reply with its xid that `want`
    /// accepts, resending every second (RFC 2131 section 4.1) until `limit`.
    fn ask(
        &self,
        p: &Packet,
        to: SocketAddrV4,
        limit: Duration,
        mut want: impl FnMut(&Packet) -> bool,
    ) -> Option<(Packet, SocketAddr)> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            self.send(p, to);
            let wait = left.min(Duration::from_secs(1));
            if let Some(r) = self.recv(wait, |r| r.xid == p.xid && want(r)) {
                return Some(r);
            }
        }
    }

    /// DISCOVER, then REQUEST of the offered address; the ACK.
    fn lease(&self, chaddr: [u8; 6], xid: u32) -> Packet {
        let discover = {
            let mut p = Packet::new(DISCOVER, chaddr, xid);
            p.flags = BROADCAST;
            p
        };
        let (offer, _) = self
            .ask(&discover, TO_SERVERS, Duration::from_secs(5), |r| {
                r.message_type() == Some(OFFER)
            })
            .unwrap_or_else(|| panic!("no OFFER for {}", mac_text(chaddr)));
        let request = Packet::request_for(&offer, chaddr, xid);
        let (ack, _) = self
            .ask(&request, TO_SERVERS, Duration::from_secs(5), |r| {
                matches!(r.message_type(), Some(ACK | NAK))
            })
            .unwrap_or_else(|| panic!("no ACK for {}", mac_text(chaddr)));
        assert_eq!(ack.message_type(), Some(ACK), "{ack:?}");
        assert_eq!(ack.yiaddr, offer.yiaddr, "ACK for another address");
        ack
    }
}

fn in_range(lab: &Lab, ip: Ipv4Addr, first: u8, last: u8) -> bool {
    let [a, b, c, d] = ip.octets();
    [a, b, c] == [10, lab.net, 0] && (first..=last).contains(&d)
}

// ---------------------------------------------------------------------------
// Tests.

/// udhcpc as a PXE client of each architecture, then as iPXE (BC-15, BC-16).
#[test]
fn udhcpc_gets_boot_file_by_arch() {
    let lab = Lab::new("u", 211);
    let dir = tempfile::tempdir().unwrap();
    let config = server_config(&lab, &dir.path().join("leases"), "", "");
    let server = start_dlsd(&lab, lab.server(), &config);

    let bios = "PXEClient:Arch:00000:UNDI:002001";
    let uefi = "PXEClient:Arch:00007:UNDI:003016";
    let cases: [(&str, &[&str], &str); 5] = [
        ("bios", &["-V", bios, "-x", "0x5d:0000"], "undionly.kpxe"),
        ("x64-7", &["-V", uefi, "-x", "0x5d:0007"], "ipxe.efi"),
        ("x64-9", &["-V", uefi, "-x", "0x5d:0009"], "ipxe.efi"),
        ("arm64", &["-V", uefi, "-x", "0x5d:000b"], "ipxe-arm64.efi"),
        // iPXE's bare-string user class (option 77), as iPXE sends it.
        (
            "ipxe",
            &["-V", bios, "-x", "0x5d:0000", "-x", "0x4d:69505845"],
            "boot.ipxe",
        ),
    ];
    let mut first_ip = None;
    for (name, args, file) in cases {
        let env = udhcpc(&lab, dir.path(), name, args);
        let ip = env.ip("ip");
        assert!(in_range(&lab, ip, 100, 199), "{name}: {}", env.0);
        assert_eq!(
            *first_ip.get_or_insert(ip),
            ip,
            "{name}: same client, same address"
        );
        assert_eq!(
            env.get("boot_file"),
            Some(file),
            "{name}: BOOTP file\n{}",
            env.0
        );
        assert_eq!(
            env.get("bootfile"),
            Some(file),
            "{name}: option 67\n{}",
            env.0
        );
        assert_eq!(env.ip("siaddr"), lab.server(), "{name}: next-server");
        assert_eq!(env.ip("serverid"), lab.server(), "{name}");
        assert_eq!(env.get("tftp"), Some("10.211.0.1"), "{name}: option 66");
        assert_eq!(env.get("vendor"), Some("PXEClient"), "{name}: option 60");
        assert_eq!(env.ip("router"), lab.server(), "{name}");
        // Option 175 sub-option 176 (no-pxedhcp) only for iPXE.
        let no_proxy = (name == "ipxe").then_some("b00101");
        assert_eq!(env.get("opt175"), no_proxy, "{name}: option 175\n{}", env.0);
    }
    check_metrics(&lab, &server, dir.path(), 5, 0);
}

/// dhclient, first in INIT (DISCOVER) and then, with the lease file of the
/// first run, in INIT-REBOOT as a UEFI client.
#[test]
fn dhclient_gets_lease_and_boot_file() {
    let lab = Lab::new("d", 212);
    let dir = tempfile::tempdir().unwrap();
    let config = server_config(&lab, &dir.path().join("leases"), "", "");
    let server = start_dlsd(&lab, lab.server(), &config);

    let conf = |arch: u16, class: &str| {
        format!(
            "option pxe-arch code 93 = unsigned integer 16;\nsend pxe-arch {arch};\n\
             send vendor-class-identifier \"{class}\";\ntimeout 20;\n"
        )
    };
    let (env, daemon) = dhclient(
        &lab,
        dir.path(),
        "bios",
        &conf(0, "PXEClient:Arch:00000:UNDI:002001"),
    );
    let ip = env.ip("new_ip_address");
    assert!(in_range(&lab, ip, 100, 199), "{}", env.0);
    assert_eq!(env.get("new_filename"), Some("undionly.kpxe"), "{}", env.0);
    assert_eq!(
        env.get("new_bootfile_name"),
        Some("undionly.kpxe"),
        "{}",
        env.0
    );
    assert_eq!(env.ip("new_next_server"), lab.server(), "{}", env.0);
    assert_eq!(env.get("new_tftp_server_name"), Some("10.212.0.1"));
    assert_eq!(env.ip("new_dhcp_server_identifier"), lab.server());
    assert_eq!(env.get("new_dhcp_lease_time"), Some("3600"));
    assert!(daemon.stop(), "dhclient was not running after BOUND");

    let (env, daemon) = dhclient(
        &lab,
        dir.path(),
        "uefi",
        &conf(7, "PXEClient:Arch:00007:UNDI:003016"),
    );
    assert_eq!(
        env.ip("new_ip_address"),
        ip,
        "INIT-REBOOT keeps the address"
    );
    assert_eq!(env.get("new_filename"), Some("ipxe.efi"), "{}", env.0);
    assert!(daemon.stop());
    check_metrics(&lab, &server, dir.path(), 2, 0);
}

/// `[[dhcp.host]]` by the client's MAC: its address (outside the range),
/// host name and root path (option 17) for iPXE `sanboot`.
#[test]
fn reservation_by_mac_gets_address_and_root_path() {
    let lab = Lab::new("r", 213);
    let dir = tempfile::tempdir().unwrap();
    let root_path = "iscsi:10.213.0.1::::iqn.2026-12.org.example:node01";
    let host = format!(
        "[[dhcp.host]]\nmac = \"{}\"\nip = \"10.213.0.10\"\nhostname = \"node01\"\nroot_path = \"{root_path}\"\n",
        mac_text(lab.cli_mac)
    );
    let config = server_config(&lab, &dir.path().join("leases"), "", &host);
    let server = start_dlsd(&lab, lab.server(), &config);

    let env = udhcpc(
        &lab,
        dir.path(),
        "node01",
        &["-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000"],
    );
    assert_eq!(env.ip("ip"), lab.addr(10), "{}", env.0);
    assert_eq!(env.get("rootpath"), Some(root_path), "{}", env.0);
    assert_eq!(env.get("hostname"), Some("node01"), "{}", env.0);
    assert_eq!(env.get("boot_file"), Some("undionly.kpxe"), "{}", env.0);

    // Another machine gets a pool address and none of node01's options.
    let client = Client::open(&lab, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68));
    let other = client.lease([0x52, 0x54, 0, 213, 0, 2], 0x2130_0002);
    assert!(in_range(&lab, other.yiaddr, 100, 199), "{other:?}");
    assert_eq!(other.option(17), None, "root path leaked to another host");
    assert_eq!(other.option(12), None, "host name leaked to another host");
    check_metrics(&lab, &server, dir.path(), 1 + client.take_acks(), 0);
}

/// `generate_ipxe_script`: dlsd serves, under the `ipxe_script` name, a
/// script made from the reservations, in place of any file of that name on
/// the root; an iPXE client is told that name; a reload that adds a host
/// changes what the next fetch gets.
#[test]
fn generated_ipxe_script_follows_reservations() {
    let lab = Lab::new("i", 220);
    let dir = tempfile::tempdir().unwrap();
    let node = |n: u8| {
        format!(
            "[[dhcp.host]]\nmac = \"52:54:00:dc:00:{n:02x}\"\nip = \"10.220.0.{n}\"\nroot_path = \"iscsi:10.220.0.1::::iqn.2026-12.org.example:node{n:02}\"\n"
        )
    };
    let keys = "generate_ipxe_script = true\n";
    let config = server_config(&lab, &dir.path().join("leases"), "", &node(11)).replace(
        "ipxe_script = \"boot.ipxe\"\n",
        &format!("ipxe_script = \"boot.ipxe\"\n{keys}"),
    );
    let server = start_dlsd(&lab, lab.server(), &config);
    // A stale hand-written script on the root is shadowed, and said so.
    server.put("boot.ipxe", b"#!ipxe\necho stale\n");

    let fetch = |server: &Server| {
        let out = dir.path().join("boot.ipxe.out");
        let _ = fs::remove_file(&out);
        let url = format!("tftp://{}/boot.ipxe", lab.server());
        let mut curl = lab.in_srv("curl");
        curl.args(["-sS", "--max-time", "10", "-o"])
            .arg(&out)
            .arg(&url);
        let (ok, text) = run(&mut curl, Duration::from_secs(15));
        assert!(ok, "curl {url}: {text}\n{}", server.log());
        fs::read_to_string(&out).unwrap()
    };
    let script = fetch(&server);
    assert!(script.starts_with("#!ipxe\n"), "{script}");
    assert!(
        !script.contains("stale"),
        "the root's file was served:\n{script}"
    );
    assert!(
        script.contains("iseq ${mac} 52:54:00:dc:00:0b && goto host-0 ||"),
        "{script}"
    );
    assert!(
        script
            .contains("sanboot iscsi:10.220.0.1::::iqn.2026-12.org.example:node11 || goto failed"),
        "{script}"
    );
    assert!(!script.contains("node12"), "{script}");
    // The script is what `dlsd ipxe-script` prints for the same file.
    let printed = Command::new(env!("CARGO_BIN_EXE_dlsd"))
        .args(["ipxe-script", "--config"])
        .arg(&server.config_path)
        .output()
        .unwrap();
    assert!(printed.status.success(), "{printed:?}");
    assert_eq!(String::from_utf8_lossy(&printed.stdout), script);

    // An iPXE client (user class "iPXE") is told the script's name.
    let client = Client::open(&lab, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68));
    let mut discover = Packet::pxe_discover([0x52, 0x54, 0, 0xdc, 0, 11], 0x2200_0001);
    discover = discover.opt(77, b"iPXE");
    let (offer, _) = client
        .ask(&discover, TO_SERVERS, Duration::from_secs(5), |r| {
            r.message_type() == Some(OFFER)
        })
        .unwrap_or_else(|| panic!("no OFFER\n{}", server.log()));
    assert_eq!(offer.file_name(), "boot.ipxe", "{offer:?}");
    assert_eq!(offer.yiaddr, lab.addr(11), "{offer:?}");

    // Reload with a second host: the next fetch dispatches it too.
    let text = fs::read_to_string(&server.config_path).unwrap();
    fs::write(&server.config_path, format!("{text}\n{}", node(12))).unwrap();
    let _ = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status();
    server.wait_for_log("generation 2 applied", Duration::from_secs(5));
    let script = fetch(&server);
    assert!(
        script.contains("iseq ${mac} 52:54:00:dc:00:0c && goto host-1 ||"),
        "{script}"
    );
    assert!(server
        .log()
        .contains("is not served: dlsd serves its generated boot.ipxe"));
}

/// REQUESTs that must be refused (RFC 2131 section 4.3.2) or ignored.
#[test]
fn nak_for_wrong_requests() {
    let lab = Lab::new("n", 214);
    let dir = tempfile::tempdir().unwrap();
    let config = server_config(&lab, &dir.path().join("leases"), "", "");
    let server = start_dlsd(&lab, lab.server(), &config);
    let client = Client::open(&lab, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68));
    let mac = [0x52, 0x54, 0, 214, 0, 9];
    let limit = Duration::from_secs(3);
    let any = |_: &Packet| true;

    // INIT-REBOOT for an address of another network: NAK, broadcast.
    let foreign = Packet::init_reboot(Ipv4Addr::new(192, 0, 2, 77), mac, 0x2140_0001);
    let (nak, _) = client
        .ask(&foreign, TO_SERVERS, limit, any)
        .expect("no reply to a REQUEST off the subnet");
    assert_eq!(nak.message_type(), Some(NAK), "{nak:?}");
    assert_eq!(
        nak.option_ip(54),
        Some(lab.server()),
        "NAK names its server"
    );
    assert_eq!(nak.yiaddr, Ipv4Addr::UNSPECIFIED);
    assert_eq!(nak.option(51), None, "a NAK carries no lease");

    // SELECTING, naming us, for an address we never offered: NAK.
    let mut selecting = Packet::new(REQUEST, mac, 0x2140_0002)
        .opt(54, &lab.server().octets())
        .opt(50, &lab.addr(250).octets());
    selecting.flags = BROADCAST;
    let (nak, _) = client
        .ask(&selecting, TO_SERVERS, limit, any)
        .expect("no reply to a SELECTING REQUEST");
    assert_eq!(nak.message_type(), Some(NAK), "{nak:?}");

    // INIT-REBOOT from a client we have no record of: silence (4.3.2).
    let unknown = Packet::init_reboot(lab.addr(150), mac, 0x2140_0003);
    client.send(&unknown, TO_SERVERS);
    assert!(client
        .recv(Duration::from_millis(700), |r| r.xid == unknown.xid)
        .is_none());

    // Once bound, INIT-REBOOT for another address of the subnet: NAK.
    let ack = client.lease(mac, 0x2140_0004);
    let other = if ack.yiaddr == lab.addr(150) {
        151
    } else {
        150
    };
    let wrong = Packet::init_reboot(lab.addr(other), mac, 0x2140_0005);
    let (nak, _) = client
        .ask(&wrong, TO_SERVERS, limit, any)
        .expect("no reply to INIT-REBOOT for the wrong address");
    assert_eq!(nak.message_type(), Some(NAK), "{nak:?}");
    // ... and for its own address: ACK.
    let right = Packet::init_reboot(ack.yiaddr, mac, 0x2140_0006);
    let (again, _) = client
        .ask(&right, TO_SERVERS, limit, any)
        .expect("INIT-REBOOT");
    assert_eq!(again.message_type(), Some(ACK), "{again:?}");
    assert_eq!(again.yiaddr, ack.yiaddr);
    let acks = client.take_acks();
    assert_eq!(acks, 2);
    check_metrics(&lab, &server, dir.path(), acks, 3);
}

/// Relayed requests (RFC 1542, BC-11 a/b): replies go to giaddr:67, with
/// flags and giaddr unchanged and option 82 echoed; a relay outside the
/// subnet is not answered.
#[test]
fn relayed_requests_are_answered_to_giaddr() {
    let lab = Lab::new("g", 215);
    let dir = tempfile::tempdir().unwrap();
    let config = server_config(&lab, &dir.path().join("leases"), "", "");
    let server = start_dlsd(&lab, lab.server(), &config);
    let (relay, hop) = (lab.addr(254), lab.addr(253));
    lab.add_addr(&lab.cli, &lab.cli_if, relay);
    lab.add_addr(&lab.cli, &lab.cli_if, hop);
    // The client namespace plays the relay agent: one socket on the relay's
    // port 67 receives what the server sends to giaddr.
    let agent = Client::open(&lab, SocketAddrV4::new(relay, 67));
    let second_hop = Client::open(&lab, SocketAddrV4::new(hop, 6767));
    let to_server = SocketAddrV4::new(lab.server(), 67);
    let mac = [0x52, 0x54, 0, 215, 0, 7];
    let circuit = [1, 4, b'p', b'o', b'r', b't'];
    let relayed = |msg: u8, xid: u32| {
        let mut p = Packet::new(msg, mac, xid).opt(82, &circuit);
        p.giaddr = relay;
        p.hops = 1;
        p.flags = BROADCAST;
        p
    };

    let discover = relayed(DISCOVER, 0x2150_0001);
    agent.send(&discover, to_server);
    let (offer, from) = agent
        .recv(Duration::from_secs(3), |r| r.xid == discover.xid)
        .expect("no OFFER at the relay's port 67");
    assert_eq!(from, SocketAddr::from((lab.server(), 67)));
    assert_eq!(offer.message_type(), Some(OFFER), "{offer:?}");
    assert!(in_range(&lab, offer.yiaddr, 100, 199), "{offer:?}");
    assert_eq!(offer.giaddr, relay, "giaddr unchanged");
    assert_eq!(offer.flags, BROADCAST, "flags echoed");
    assert_eq!(offer.option(82), Some(&circuit[..]), "option 82 echoed");

    let sid = offer.option_ip(54).expect("server identifier");
    let request = relayed(REQUEST, 0x2150_0002)
        .opt(54, &sid.octets())
        .opt(50, &offer.yiaddr.octets());
    agent.send(&request, to_server);
    let (ack, _) = agent
        .recv(Duration::from_secs(3), |r| r.xid == request.xid)
        .expect("no ACK at the relay");
    assert_eq!(ack.message_type(), Some(ACK), "{ack:?}");
    assert_eq!(ack.yiaddr, offer.yiaddr);

    // Sent by a second hop from another address: still to giaddr:67.
    let discover = relayed(DISCOVER, 0x2150_0003);
    second_hop.send(&discover, to_server);
    let (offer, _) = agent
        .recv(Duration::from_secs(3), |r| r.xid == discover.xid)
        .expect("no OFFER at giaddr for a second-hop relay");
    assert_eq!(offer.yiaddr, ack.yiaddr, "same client, same address");

    // A relay on a network this server does not serve: silence.
    let mut stranger = relayed(DISCOVER, 0x2150_0004);
    stranger.giaddr = Ipv4Addr::new(198, 51, 100, 254);
    agent.send(&stranger, to_server);
    assert!(agent
        .recv(Duration::from_millis(700), |r| r.xid == stranger.xid)
        .is_none());
    let text = check_metrics(&lab, &server, dir.path(), agent.take_acks(), 0);
    assert_eq!(
        sample(&text, "dls_dhcp_ignored_total{reason=\"wrong_subnet\"}"),
        Some(1.0),
        "{text}"
    );
}

/// proxyDHCP beside dnsmasq (BC-14): dnsmasq hands out addresses, dlsd
/// only boot information, on port 67 and on the port-4011 leg.
#[test]
fn proxy_beside_dnsmasq() {
    require_tool("dnsmasq", "dnsmasq");
    let lab = Lab::new("p", 216);
    let dir = tempfile::tempdir().unwrap();
    // dnsmasq answers from the interface's first address, dlsd from a
    // second one, so a client can tell the two servers apart.
    let proxy = lab.addr(2);
    lab.add_addr(&lab.srv, &lab.srv_if, proxy);
    let config = format!(
        "[dhcp]\ninterface = \"{}\"\nmode = \"proxy\"\nserver_address = \"{proxy}\"\n\
         subnet = \"10.216.0.0/24\"\nlease_store = {:?}\n{BOOT}",
        lab.srv_if,
        dir.path().join("leases")
    );
    let server = start_dlsd(&lab, proxy, &config);
    let dnsmasq = start_dnsmasq(&lab, dir.path());

    // A client that is not PXE: its address from dnsmasq, nothing from dlsd.
    let env = udhcpc(&lab, dir.path(), "plain", &["-V", "not-pxe"]);
    assert!(in_range(&lab, env.ip("ip"), 50, 99), "{}", env.0);
    assert_eq!(env.ip("serverid"), lab.server(), "{}", env.0);
    assert_eq!(env.get("bootfile"), None, "{}", env.0);

    // A real client sending PXEClient. Unlike a PXE ROM it takes a single
    // offer, so `require subnet-mask` makes dhclient pass over the proxy
    // offer (no lease in it) and bind dnsmasq's. (udhcpc cannot be told
    // so: it takes the first OFFER even with yiaddr 0.0.0.0.)
    let conf = "option pxe-arch code 93 = unsigned integer 16;\nsend pxe-arch 0;\n\
        send vendor-class-identifier \"PXEClient:Arch:00000:UNDI:002001\";\n\
        require subnet-mask;\ntimeout 20;\n";
    let (env, daemon) = dhclient(&lab, dir.path(), "pxe", conf);
    assert!(
        in_range(&lab, env.ip("new_ip_address"), 50, 99),
        "{}",
        env.0
    );
    assert_eq!(env.ip("new_dhcp_server_identifier"), lab.server());
    assert!(daemon.stop(), "dhclient was not running after BOUND");

    // A PXE ROM: DISCOVER collects both offers.
    let mac = lab.cli_mac;
    let client = Client::open(&lab, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68));
    let uuid: Vec<u8> = std::iter::once(0).chain(1..=16).collect();
    let discover = Packet::pxe_discover(mac, 0x2160_0001).opt(97, &uuid);
    let (mut address_offer, mut boot_offer) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(8);
    while (address_offer.is_none() || boot_offer.is_none()) && Instant::now() < deadline {
        client.send(&discover, TO_SERVERS);
        while let Some((p, _)) = client.recv(Duration::from_millis(700), |r| {
            r.xid == discover.xid && r.message_type() == Some(OFFER)
        }) {
            match p.option_ip(54) {
                Some(id) if id == proxy => boot_offer = Some(p),
                Some(id) if id == lab.server() => address_offer = Some(p),
                _ => panic!("OFFER from an unknown server: {p:?}"),
            }
        }
    }
    let address_offer = address_offer.expect("no OFFER from dnsmasq");
    let boot_offer = boot_offer.expect("no proxyDHCP OFFER from dlsd");
    assert!(in_range(&lab, address_offer.yiaddr, 50, 99));
    assert_eq!(
        boot_offer.yiaddr,
        Ipv4Addr::UNSPECIFIED,
        "proxy assigns nothing"
    );
    assert_eq!(boot_offer.siaddr, proxy, "next-server");
    assert_eq!(boot_offer.file_name(), "undionly.kpxe");
    assert_eq!(boot_offer.text(67).as_deref(), Some("undionly.kpxe"));
    assert_eq!(boot_offer.text(60).as_deref(), Some("PXEClient"));
    assert!(
        boot_offer
            .option(43)
            .is_some_and(|v| v.starts_with(&[6, 1, 8])),
        "option 43: {boot_offer:?}"
    );
    assert_eq!(boot_offer.option(97), Some(&uuid[..]), "option 97 echoed");
    assert_eq!(boot_offer.option(51), None, "proxy offers carry no lease");

    // REQUEST of dnsmasq's address, broadcast: dnsmasq ACKs, dlsd is silent.
    let request = Packet::request_for(&address_offer, mac, 0x2160_0002)
        .opt(60, PXE_BIOS)
        .opt(93, &[0, 0]);
    let mut replies = Vec::new();
    let (ack, _) = client
        .ask(&request, TO_SERVERS, Duration::from_secs(5), |r| {
            replies.push(r.option_ip(54));
            r.message_type() == Some(ACK)
        })
        .expect("no ACK from dnsmasq");
    assert_eq!(ack.option_ip(54), Some(lab.server()));
    assert!(client
        .recv(Duration::from_millis(500), |r| r.xid == request.xid)
        .is_none_or(|(r, _)| r.option_ip(54) != Some(proxy)));
    assert!(
        !replies.contains(&Some(proxy)),
        "dlsd answered dnsmasq's REQUEST"
    );

    // The port-4011 leg, from the address dnsmasq gave, as UEFI x64: ACK
    // unicast back to ciaddr and the port it came from. A socket bound to
    // that address receives no broadcasts, so arriving there proves unicast.
    lab.add_addr(&lab.cli, &lab.cli_if, ack.yiaddr);
    let bound = Client::open(&lab, SocketAddrV4::new(ack.yiaddr, 68));
    let mut pxe = Packet::new(REQUEST, mac, 0x2160_0003)
        .opt(60, b"PXEClient:Arch:00007:UNDI:003016")
        .opt(93, &[0, 7])
        .opt(97, &uuid);
    pxe.ciaddr = ack.yiaddr;
    let (boot_ack, from) = bound
        .ask(
            &pxe,
            SocketAddrV4::new(proxy, 4011),
            Duration::from_secs(5),
            |_| true,
        )
        .expect("no ACK on the port-4011 leg");
    assert_eq!(boot_ack.message_type(), Some(ACK), "{boot_ack:?}");
    assert_eq!(boot_ack.file_name(), "ipxe.efi");
    assert_eq!(boot_ack.text(60).as_deref(), Some("PXEClient"));
    assert_eq!(boot_ack.ciaddr, ack.yiaddr);
    assert_eq!(boot_ack.yiaddr, Ipv4Addr::UNSPECIFIED);
    assert_eq!(boot_ack.option_ip(54), Some(proxy));
    assert_eq!(boot_ack.option(97), Some(&uuid[..]));

    let text = check_metrics(&lab, &server, dir.path(), bound.take_acks(), 0);
    assert!(
        sample(&text, "dls_dhcp_ignored_total{reason=\"not_pxe\"}").is_some_and(|n| n >= 1.0),
        "udhcpc's DISCOVERs without PXEClient were not counted as ignored:\n{text}"
    );
    assert!(
        sample(&text, "dls_dhcp_ignored_total{reason=\"other_server\"}").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(dnsmasq.stop(), "dnsmasq died during the test");
    // RFC 1122 section 4.1.3.5: a multihomed host answers a UDP request
    // from the address the request was sent to; a client that matches the
    // reply against the boot server it asked drops anything else.
    assert_eq!(
        from,
        SocketAddr::from((proxy, 4011)),
        "port-4011 ACK sent from another address than the REQUEST went to"
    );
}

/// dnsmasq as the address server in the lab's server namespace, DHCP only
/// (no DNS, no PXE), on .50-.99, with its files in `dir`.
fn start_dnsmasq(lab: &Lab, dir: &Path) -> Daemon {
    let daemon = Daemon {
        pidfile: dir.join("dnsmasq.pid"),
    };
    let mut cmd = lab.in_srv("dnsmasq");
    cmd.args([
        "--conf-file=/dev/null",
        "--port=0",
        "--bind-interfaces",
        "--no-ping",
        "--user=root",
        "--log-dhcp",
    ])
    .arg(format!("--interface={}", lab.srv_if))
    .arg(format!("--dhcp-range={},{},1h", lab.addr(50), lab.addr(99)))
    .arg(format!(
        "--dhcp-leasefile={}",
        dir.join("dnsmasq.leases").display()
    ))
    .arg(format!("--pid-file={}", daemon.pidfile.display()))
    .arg(format!(
        "--log-facility={}",
        dir.join("dnsmasq.log").display()
    ));
    let (ok, out) = run(&mut cmd, Duration::from_secs(10));
    assert!(ok, "dnsmasq did not start: {out}");
    assert!(
        daemon.wait_running(Duration::from_secs(5)),
        "no dnsmasq pid file"
    );
    daemon
}

/// A MAC for the n-th client of a burst.
fn burst_mac(n: u16) -> [u8; 6] {
    let [hi, lo] = n.to_be_bytes();
    [0x02, 0x00, 0x00, 0xb0, hi, lo]
}

/// Leases across kill -9 in the middle of a burst, then across a clean
/// restart: every ACKed client keeps its address (INIT-REBOOT), and no
/// address is held by two clients.
#[test]
fn leases_survive_kill_9_and_restart() {
    const CLIENTS: u16 = 90;
    const KILL_AFTER: usize = 15;
    const PACE: Duration = Duration::from_millis(2);
    let lab = Lab::new("k", 217);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("leases");
    let config = server_config(&lab, &store, "", "");
    let mut server = start_dlsd(&lab, lab.server(), &config);
    let client = Client::open(&lab, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68));
    let xid = |n: u16, round: u32| 0x2170_0000 + (round << 12) + u32::from(n);

    // OFFERs for everyone, then the REQUESTs one every PACE; kill -9 on
    // the KILL_AFTER-th ACK, while the later REQUESTs are still coming.
    let mut requests = Vec::new();
    for n in 0..CLIENTS {
        let mut d = Packet::new(DISCOVER, burst_mac(n), xid(n, 0));
        d.flags = BROADCAST;
        let (offer, _) = client
            .ask(&d, TO_SERVERS, Duration::from_secs(5), |r| {
                r.message_type() == Some(OFFER)
            })
            .expect("OFFER");
        requests.push(Packet::request_for(&offer, burst_mac(n), xid(n, 1)));
    }
    let sender = client.sock.try_clone().unwrap();
    let mut acked: BTreeMap<[u8; 6], Ipv4Addr> = BTreeMap::new();
    let mut killed = false;
    std::thread::scope(|s| {
        s.spawn(|| {
            for r in &requests {
                sender.send_to(&r.encode(), TO_SERVERS).unwrap();
                std::thread::sleep(PACE);
            }
        });
        while let Some((ack, _)) =
            client.recv(Duration::from_secs(2), |r| r.message_type() == Some(ACK))
        {
            acked.insert(ack.chaddr, ack.yiaddr);
            if acked.len() == KILL_AFTER && !killed {
                let status = server.stop_with(9, Duration::from_secs(5));
                assert!(status.is_some(), "dlsd survived kill -9");
                killed = true;
            }
        }
    });
    assert!(
        killed,
        "only {} ACKs before the kill:\n{}",
        acked.len(),
        server.log()
    );
    assert!(
        acked.len() < usize::from(CLIENTS),
        "the kill came after the burst"
    );
    eprintln!(
        "kill -9 after {KILL_AFTER} ACKs; {} of {CLIENTS} ACKed in all",
        acked.len()
    );
    drop(server);
    client.take_acks();

    // Restart on the same store: ACKed clients get their address back,
    // the others a fresh one; no address twice.
    let server = start_dlsd(&lab, lab.server(), &config);
    let mut all = rebind_all(&lab, &client, &acked, CLIENTS, 2);
    assert_unique(&all);
    check_status(&lab, &server, &all);
    check_metrics(&lab, &server, dir.path(), client.take_acks(), 0);

    // A clean restart (SIGTERM) keeps every lease too; scrape while the
    // clients come back, and check that scrape as well.
    let mut server = server;
    let status = server.stop_with(15, Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "SIGTERM: {status:?}");
    drop(server);
    let server = start_dlsd(&lab, lab.server(), &config);
    let under_load = std::thread::scope(|s| {
        let scrape = s.spawn(|| http_get(&lab, &server, "/metrics"));
        all = rebind_all(&lab, &client, &all, CLIENTS, 3);
        scrape.join().expect("scrape")
    });
    promtool_check(dir.path(), &under_load);
    check_status(&lab, &server, &all);
    let acks = client.take_acks();
    assert_eq!(
        acks,
        u64::from(CLIENTS),
        "one ACK per client after the restart"
    );
    let text = check_metrics(&lab, &server, dir.path(), acks, 0);
    assert_eq!(
        sample(&text, "dls_dhcp_active_leases"),
        Some(CLIENTS as f64)
    );
}

/// INIT-REBOOT for every client in `known` (which must be ACKed with the
/// same address), a full exchange for the rest of `0..clients`.
fn rebind_all(
    lab: &Lab,
    client: &Client,
    known: &BTreeMap<[u8; 6], Ipv4Addr>,
    clients: u16,
    round: u32,
) -> BTreeMap<[u8; 6], Ipv4Addr> {
    let mut out = BTreeMap::new();
    for n in 0..clients {
        let mac = burst_mac(n);
        let xid = 0x2170_0000 + (round << 12) + u32::from(n);
        let ip = match known.get(&mac) {
            Some(&ip) => {
                let p = Packet::init_reboot(ip, mac, xid);
                let (ack, _) = client
                    .ask(&p, TO_SERVERS, Duration::from_secs(5), |_| true)
                    .unwrap_or_else(|| panic!("{}: no answer to INIT-REBOOT", mac_text(mac)));
                assert_eq!(
                    ack.message_type(),
                    Some(ACK),
                    "{} lost its lease of {ip}: {:?}",
                    mac_text(mac),
                    ack.text(56)
                );
                assert_eq!(ack.yiaddr, ip);
                ip
            }
            None => client.lease(mac, xid).yiaddr,
        };
        assert!(in_range(lab, ip, 100, 199), "{ip}");
        out.insert(mac, ip);
    }
    out
}

fn assert_unique(leases: &BTreeMap<[u8; 6], Ipv4Addr>) {
    let distinct: BTreeSet<&Ipv4Addr> = leases.values().collect();
    assert_eq!(
        distinct.len(),
        leases.len(),
        "an address held twice: {leases:?}"
    );
}

/// /api/v1/status lists exactly these bindings: each address once, each
/// client (htype 1 + MAC) once, at the address it was ACKed.
fn check_status(lab: &Lab, server: &Server, leases: &BTreeMap<[u8; 6], Ipv4Addr>) {
    let body = http_get(lab, server, "/api/v1/status");
    let status: serde_json::Value = serde_json::from_str(&body).expect("status JSON");
    let listed = status["services"]["dhcp"]["leases"]
        .as_array()
        .unwrap_or_else(|| panic!("no leases in {body}"));
    let mut by_client = BTreeMap::new();
    for lease in listed {
        let ip: Ipv4Addr = lease["ip"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("ip");
        let text = lease["lease"].as_str().unwrap_or_default();
        let client = text
            .split("ClientId(")
            .nth(1)
            .and_then(|s| s.split(')').next())
            .unwrap_or_else(|| panic!("no client in {text}"))
            .to_owned();
        let earlier = by_client.insert(client.clone(), ip);
        assert!(
            earlier.is_none(),
            "client {client} holds {earlier:?} and {ip}"
        );
    }
    assert_eq!(listed.len(), leases.len(), "{body}");
    for (mac, ip) in leases {
        let key = format!("01{}", mac_text(*mac).replace(':', ""));
        assert_eq!(by_client.get(&key), Some(ip), "{key}: {body}");
    }
}

/// Malformed datagrams get silence and a counter, and the server keeps
/// answering (issue 3: "dropped with a debug log and a counter").
#[test]
fn hostile_packets_are_dropped_and_service_continues() {
    let lab = Lab::new("h", 218);
    let dir = tempfile::tempdir().unwrap();
    let config = server_config(&lab, &dir.path().join("leases"), "", "");
    let mut server = start_dlsd(&lab, lab.server(), &config);
    let client = Client::open(&lab, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68));
    let mac = lab.cli_mac;
    let valid = |xid: u32| Packet::pxe_discover(mac, xid).encode();

    let truncated = valid(0x2180_0001)[..120].to_vec();
    let mut bad_cookie = valid(0x2180_0002);
    bad_cookie[236..240].copy_from_slice(&[99, 130, 83, 98]);
    // Option 60 claims 200 bytes where the datagram has 20 left.
    let mut overflowing = valid(0x2180_0003);
    overflowing.truncate(240);
    overflowing.extend_from_slice(&[53, 1, DISCOVER, 60, 200]);
    overflowing.extend_from_slice(&[b'P'; 20]);
    // Option 52 sends the reader into `file`, where an option overruns.
    let mut overload = Packet::new(DISCOVER, mac, 0x2180_0004).opt(52, &[1]);
    overload.file = vec![12, 200, b'x', b'y'];
    let overload = overload.encode();
    let mut bad_hlen = valid(0x2180_0005);
    bad_hlen[2] = 200;
    let oversize = {
        let mut p = valid(0x2180_0006);
        p.resize(5000, 0);
        p
    };
    let mut reply_op = valid(0x2180_0007);
    reply_op[0] = 2;
    let hostile = [
        ("truncated BOOTP header", truncated),
        ("bad magic cookie", bad_cookie),
        ("option past the end", overflowing),
        ("overloaded file with a bad option", overload),
        ("hlen 200", bad_hlen),
        ("5000-byte datagram", oversize),
        ("BOOTREPLY sent to the server", reply_op),
        ("empty datagram", Vec::new()),
    ];
    for (_, bytes) in &hostile {
        client.send_raw(bytes, TO_SERVERS);
    }
    let discover = Packet::pxe_discover(mac, 0x2180_0100);
    let (offer, _) = client
        .ask(&discover, TO_SERVERS, Duration::from_secs(5), |_| true)
        .unwrap_or_else(|| panic!("no OFFER after hostile input:\n{}", server.log()));
    assert_eq!(offer.message_type(), Some(OFFER));
    // Anything answered among the hostile datagrams would have arrived by
    // now, before or beside the OFFER.
    if let Some((r, _)) = client.recv(Duration::from_millis(300), |_| true) {
        panic!("a reply to hostile input: {r:?}");
    }
    assert!(server.is_running(), "dlsd died:\n{}", server.log());
    let text = check_metrics(&lab, &server, dir.path(), 0, 0);
    let ignored = |reason: &str| {
        sample(
            &text,
            &format!("dls_dhcp_ignored_total{{reason=\"{reason}\"}}"),
        )
        .unwrap_or(0.0)
    };
    assert_eq!(ignored("too_short"), 2.0, "{text}");
    assert_eq!(ignored("bad_cookie"), 1.0, "{text}");
    assert_eq!(ignored("truncated_option"), 2.0, "{text}");
    assert_eq!(ignored("bad_hardware"), 1.0, "{text}");
    assert_eq!(ignored("too_long"), 1.0, "{text}");
    assert_eq!(ignored("not_request"), 1.0, "{text}");
    assert_eq!(sample(&text, "dls_dhcp_offers_total"), Some(1.0), "{text}");
}

/// Crafted DISCOVERs for the architecture table and iPXE's encodings
/// (BC-12, BC-15, BC-16), checked byte by byte; then the local reply
/// addressing cases of BC-11 (c, d, e).
#[test]
fn crafted_discovers_by_arch() {
    let lab = Lab::new("a", 219);
    let dir = tempfile::tempdir().unwrap();
    let config = server_config(&lab, &dir.path().join("leases"), "", "");
    let server = start_dlsd(&lab, lab.server(), &config);
    let client = Client::open(&lab, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68));
    let http_url = format!("http://{}/ipxe.efi", lab.server());
    let uefi: &[u8] = b"PXEClient:Arch:00007:UNDI:003016";
    let http: &[u8] = b"HTTPClient:Arch:00016:UNDI:003001";
    type Case<'a> = (&'a str, &'a [u8], Vec<(u8, Vec<u8>)>, &'a str);
    let cases: Vec<Case> = vec![
        ("bios", PXE_BIOS, vec![(93, vec![0, 0])], "undionly.kpxe"),
        ("x64 7", uefi, vec![(93, vec![0, 7])], "ipxe.efi"),
        ("x64 9", uefi, vec![(93, vec![0, 9])], "ipxe.efi"),
        ("arm64", uefi, vec![(93, vec![0, 11])], "ipxe-arm64.efi"),
        ("list 7,0", uefi, vec![(93, vec![0, 7, 0, 0])], "ipxe.efi"),
        ("no 93, class 7", uefi, vec![], "ipxe.efi"),
        (
            "odd 93, class 7",
            uefi,
            vec![(93, vec![0, 0, 0])],
            "ipxe.efi",
        ),
        (
            "iPXE bare 77",
            PXE_BIOS,
            vec![(77, b"iPXE".to_vec())],
            "boot.ipxe",
        ),
        (
            "iPXE RFC 3004 77",
            PXE_BIOS,
            vec![(77, b"\x04iPXE".to_vec())],
            "boot.ipxe",
        ),
        (
            "iPXE 175",
            PXE_BIOS,
            vec![(175, vec![19, 1, 1])],
            "boot.ipxe",
        ),
        ("HTTP boot 16", http, vec![(93, vec![0, 16])], &http_url),
    ];
    for (i, (name, class, options, file)) in cases.into_iter().enumerate() {
        let mut p = Packet::new(DISCOVER, lab.cli_mac, 0x2190_0000 + i as u32).opt(60, class);
        p.flags = BROADCAST;
        for (code, value) in options {
            p = p.opt(code, &value);
        }
        let (offer, _) = client
            .ask(&p, TO_SERVERS, Duration::from_secs(3), |_| true)
            .unwrap_or_else(|| panic!("{name}: no OFFER"));
        assert_eq!(offer.message_type(), Some(OFFER), "{name}");
        assert_eq!(offer.flags, BROADCAST, "{name}: flags echoed (BC-11 c)");
        assert_eq!(offer.file_name(), file, "{name}: BOOTP file");
        assert_eq!(offer.text(67).as_deref(), Some(file), "{name}: option 67");
        assert!(offer.raw.len() >= 300, "{name}: {} bytes", offer.raw.len());
        // BC-12: the byte after option 67's value is a NUL (or PAD), and
        // `file` is NUL-padded to its 128 bytes.
        let at = option_end(&offer.raw, 67).expect("option 67 in the options area");
        assert_eq!(offer.raw.get(at), Some(&0), "{name}: byte after option 67");
        assert!(
            offer.raw[108 + file.len()..236].iter().all(|&b| b == 0),
            "{name}"
        );
        let http_boot = class.starts_with(b"HTTPClient");
        let echoed = if http_boot { "HTTPClient" } else { "PXEClient" };
        assert_eq!(offer.text(60).as_deref(), Some(echoed), "{name}: option 60");
        if !http_boot {
            assert_eq!(offer.siaddr, lab.server(), "{name}: siaddr");
            assert_eq!(
                offer.text(66),
                Some(lab.server().to_string()),
                "{name}: option 66"
            );
        }
    }

    // BC-11 d: without the broadcast bit, flags still come back unchanged
    // (the reply is broadcast: this client has no address to unicast to).
    let mut quiet = Packet::pxe_discover(lab.cli_mac, 0x2190_0100);
    quiet.flags = 0;
    let (offer, _) = client
        .ask(&quiet, TO_SERVERS, Duration::from_secs(3), |_| true)
        .expect("no OFFER with flags 0");
    assert_eq!(offer.flags, 0, "flags echoed");

    // BC-11 e: INFORM from a configured client is answered by an ACK
    // unicast to ciaddr, without a lease (RFC 2131 section 4.3.5).
    let own = lab.addr(60);
    lab.add_addr(&lab.cli, &lab.cli_if, own);
    let bound = Client::open(&lab, SocketAddrV4::new(own, 68));
    let mut inform = Packet::new(8, lab.cli_mac, 0x2190_0101)
        .opt(60, PXE_BIOS)
        .opt(93, &[0, 0]);
    inform.ciaddr = own;
    let to_server = SocketAddrV4::new(lab.server(), 67);
    let (ack, _) = bound
        .ask(&inform, to_server, Duration::from_secs(3), |_| true)
        .expect("no ACK to INFORM at ciaddr");
    assert_eq!(ack.message_type(), Some(ACK), "{ack:?}");
    assert_eq!(ack.yiaddr, Ipv4Addr::UNSPECIFIED, "INFORM assigns nothing");
    assert_eq!(ack.ciaddr, own);
    assert_eq!(ack.option(51), None, "no lease time in an INFORM ACK");
    assert_eq!(ack.file_name(), "undionly.kpxe");
    check_metrics(&lab, &server, dir.path(), bound.take_acks(), 0);
}

/// The offset just past the value of `code` in a DHCP message's options.
fn option_end(raw: &[u8], code: u8) -> Option<usize> {
    let mut i = 240;
    loop {
        match *raw.get(i)? {
            0 => i += 1,
            255 => return None,
            c => {
                let end = i + 2 + usize::from(*raw.get(i + 1)?);
                if c == code {
                    return Some(end);
                }
                i = end;
            }
        }
    }
}
