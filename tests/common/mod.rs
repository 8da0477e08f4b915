//! Shared support for integration tests: start `dlsd` on loopback with a
//! private config and root, find free ports, hash files, and stop the
//! server by its PID (and only it) when the test ends, even on panic.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// A running dlsd. Dropping it sends SIGTERM, waits, then SIGKILLs.
pub struct Server {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub addr: SocketAddr,
    pub config_path: PathBuf,
    /// Everything the server wrote to stderr so far.
    pub log: Arc<Mutex<String>>,
}

/// A UDP port that was free a moment ago on 127.0.0.1.
pub fn free_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind ephemeral");
    s.local_addr().unwrap().port()
}

impl Server {
    /// Starts dlsd with a fresh root directory; `extra_tftp` is appended to
    /// the `[tftp]` section, `extra` after it (other sections).
    pub fn start(extra_tftp: &str, extra: &str) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        Server::start_in(dir, root, extra_tftp, extra)
    }

    pub fn start_in(
        dir: tempfile::TempDir,
        root: PathBuf,
        extra_tftp: &str,
        extra: &str,
    ) -> Server {
        Server::start_full(dir, root, "", extra_tftp, extra)
    }

    /// Like [`Server::start_in`], with `extra_engine` added to `[engine]`.
    pub fn start_full(
        dir: tempfile::TempDir,
        root: PathBuf,
        extra_engine: &str,
        extra_tftp: &str,
        extra: &str,
    ) -> Server {
        let port = free_udp_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let config_path = dir.path().join("dls.toml");
        let config = format!(
            "[engine]\nworkers = 2\nshutdown_grace = \"3s\"\n{extra_engine}\n[http]\nlisten = \"127.0.0.1:0\"\n[tftp]\nlisten = [\"{addr}\"]\nroot = {:?}\n{extra_tftp}\n{extra}\n",
            root
        );
        std::fs::write(&config_path, config).unwrap();
        Server::spawn(dir, root, addr, config_path, &[])
    }

    /// Starts dlsd listening on `addr` under a command prefix such as
    /// `ip netns exec NS` (which execs, so the PID stays dlsd's).
    pub fn start_wrapped(wrapper: &[&str], addr: SocketAddr, extra_tftp: &str) -> Server {
        Server::start_wrapped_with(wrapper, addr, extra_tftp, "")
    }

    /// Like [`Server::start_wrapped`], with `extra` (whole sections such as
    /// `[http]` or `[dhcp]`) written after `[tftp]`.
    pub fn start_wrapped_with(
        wrapper: &[&str],
        addr: SocketAddr,
        extra_tftp: &str,
        extra: &str,
    ) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let config_path = dir.path().join("dls.toml");
        let config = format!(
            "[engine]\nworkers = 2\nshutdown_grace = \"3s\"\n[tftp]\nlisten = [\"{addr}\"]\nroot = {:?}\n{extra_tftp}\n{extra}\n",
            root
        );
        std::fs::write(&config_path, config).unwrap();
        Server::spawn(dir, root, addr, config_path, wrapper)
    }

    fn spawn(
        dir: tempfile::TempDir,
        root: PathBuf,
        addr: SocketAddr,
        config_path: PathBuf,
        wrapper: &[&str],
    ) -> Server {
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(env!("CARGO_BIN_EXE_dlsd"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_dlsd")),
        };
        let (child, log) = spawn_logged(
            cmd.args(["--log-level", "debug", "serve", "--config"])
                .arg(&config_path),
        );
        let server = Server {
            child,
            dir,
            root,
            addr,
            config_path,
            log,
        };
        server.wait_for_log("running", Duration::from_secs(10));
        server
    }

    /// Waits until the log contains `needle`; panics with the log if not.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.log.lock().unwrap().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("dlsd log never showed {needle:?}:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Writes a file below the root and returns its path.
    pub fn put(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.root.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// True while the dlsd process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `signal` to the server (by its PID) and waits for it to exit.
    pub fn stop_with(&mut self, signal: i32, limit: Duration) -> Option<std::process::ExitStatus> {
        send_signal(self.pid(), signal);
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// Spawns `cmd` with its stderr collected, line by line, into the
/// returned log as it comes.
pub fn spawn_logged(cmd: &mut Command) -> (Child, Arc<Mutex<String>>) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dlsd");
    let log = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().unwrap();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut l = sink.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    (child, log)
}

/// `kill -SIG PID` for our own child only.
pub fn send_signal(pid: i32, signal: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if self.stop_with(15, Duration::from_secs(5)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

pub fn sha256_file(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    format!("{:x}", h.finalize())
}

/// Runs a command with a time limit; returns (success, stdout+stderr).
pub fn run(cmd: &mut Command, limit: Duration) -> (bool, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {cmd:?}: {e} (the README's test command installs it)")
        });
    let start = Instant::now();
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            return (
                false,
                format!(
                    "TIMED OUT after {limit:?}\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Panics unless `tool` is on PATH, naming the Debian package to install.
pub fn require_tool(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` not found: install the Debian package `{package}` (tests/run.sh does)"
    );
}

// A TFTP client written from RFC 1350/2347 by hand, independent of the
// server's own codec, so a bug shared by both cannot hide.

pub const OP_RRQ: u16 = 1;
pub const OP_WRQ: u16 = 2;

/// RRQ or WRQ bytes: opcode, name, NUL, mode, NUL, then name/value pairs.
pub fn request(opcode: u16, name: &[u8], mode: &str, options: &[(&str, &str)]) -> Vec<u8> {
    let mut out = opcode.to_be_bytes().to_vec();
    out.extend_from_slice(name);
    out.push(0);
    out.extend_from_slice(mode.as_bytes());
    out.push(0);
    for (k, v) in options {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

pub fn rrq(name: &str, options: &[(&str, &str)]) -> Vec<u8> {
    request(OP_RRQ, name.as_bytes(), "octet", options)
}

pub fn ack(block: u16) -> Vec<u8> {
    let b = block.to_be_bytes();
    vec![0, 4, b[0], b[1]]
}

pub fn error_packet(code: u16, message: &str) -> Vec<u8> {
    let mut out = vec![0, 5];
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(message.as_bytes());
    out.push(0);
    out
}

/// A datagram from the server, decoded just enough to check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Data {
        block: u16,
        payload: Vec<u8>,
    },
    Oack(Vec<(String, String)>),
    Error {
        code: u16,
        message: String,
    },
    /// Anything a server must never send (ACK, RRQ, short junk).
    Other(Vec<u8>),
}

impl Reply {
    pub fn parse(buf: &[u8]) -> Reply {
        let op = match buf {
            [a, b, ..] => u16::from_be_bytes([*a, *b]),
            _ => return Reply::Other(buf.to_vec()),
        };
        match (op, buf.len() >= 4) {
            (3, true) => Reply::Data {
                block: u16::from_be_bytes([buf[2], buf[3]]),
                payload: buf[4..].to_vec(),
            },
            (5, true) => Reply::Error {
                code: u16::from_be_bytes([buf[2], buf[3]]),
                message: String::from_utf8_lossy(&buf[4..])
                    .trim_end_matches('\0')
                    .to_owned(),
            },
            (6, _) => {
                let strings: Vec<String> = buf[2..]
                    .split(|&b| b == 0)
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect();
                // A well-formed OACK ends with a NUL, leaving one empty tail.
                let pairs = strings[..strings.len().saturating_sub(1)]
                    .chunks(2)
                    .map(|c| (c[0].clone(), c.get(1).cloned().unwrap_or_default()))
                    .collect();
                Reply::Oack(pairs)
            }
            _ => Reply::Other(buf.to_vec()),
        }
    }
}

/// One client socket on 127.0.0.1 (or any local address) talking to dlsd.
pub struct Peer {
    pub sock: UdpSocket,
    /// The server's request port.
    pub server: SocketAddr,
    /// The server's TID for the current transfer, once seen.
    pub tid: Option<SocketAddr>,
    /// The block number after 65535 the server is configured for (0 or 1).
    pub wrap_to: u16,
    /// The bytes of the last datagram received, exactly as they came.
    pub last_raw: Vec<u8>,
}

/// What a completed download looked like on the wire.
#[derive(Debug, Default)]
pub struct Download {
    pub bytes: Vec<u8>,
    pub oack: Option<Vec<(String, String)>>,
    /// The OACK datagram exactly as received.
    pub oack_raw: Option<Vec<u8>>,
    /// Every DATA block number in arrival order (duplicates included).
    pub blocks: Vec<u16>,
    pub data_packets: usize,
}

impl Peer {
    pub fn new(server: SocketAddr) -> Peer {
        let sock = UdpSocket::bind(SocketAddr::new(server.ip(), 0)).expect("bind client socket");
        Peer {
            sock,
            server,
            tid: None,
            wrap_to: 0,
            last_raw: Vec::new(),
        }
    }

    /// Sends to the request port (a new transfer).
    pub fn send_request(&mut self, bytes: &[u8]) {
        self.tid = None;
        self.sock.send_to(bytes, self.server).expect("send request");
    }

    /// Sends to the current transfer's TID.
    pub fn send(&self, bytes: &[u8]) {
        let tid = self.tid.expect("no transfer TID yet");
        self.sock.send_to(bytes, tid).expect("send to TID");
    }

    /// The next datagram within `limit`, with its source; records the TID
    /// from the first reply of a transfer.
    pub fn recv_from(&mut self, limit: Duration) -> Option<(Reply, SocketAddr)> {
        let deadline = Instant::now() + limit;
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            self.sock
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    if self.tid.is_none() && from != self.server {
                        self.tid = Some(from);
                    }
                    self.last_raw = buf[..n].to_vec();
                    return Some((Reply::parse(&buf[..n]), from));
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return None
                }
                // An ICMP error from an earlier send; keep listening.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                Err(e) => panic!("recv: {e}"),
            }
        }
    }

    pub fn recv(&mut self, limit: Duration) -> Option<Reply> {
        self.recv_from(limit).map(|(r, _)| r)
    }

    /// The wire number that follows `block`.
    pub fn next_block(&self, block: u16) -> u16 {
        match block {
            65535 => self.wrap_to,
            b => b + 1,
        }
    }

    /// Runs a whole read transfer: sends `req`, ACKs the OACK, accepts
    /// windows of the negotiated size and ACKs each (or the last in-order
    /// block on a gap); re-ACKs after `idle` of silence. 16-bit block
    /// numbers are followed across the wrap to 0.
    pub fn download(&mut self, req: &[u8], limit: Duration) -> Result<Download, String> {
        let idle = Duration::from_millis(500);
        let deadline = Instant::now() + limit;
        self.send_request(req);
        let mut d = Download::default();
        let (mut blksize, mut windowsize) = (512usize, 1usize);
        let mut acked: u16 = 0;
        let mut in_window = 0usize;
        let mut gap_reported = false;
        let mut silent = 0;
        loop {
            if Instant::now() > deadline {
                return Err(format!(
                    "no end after {limit:?}: {} bytes so far",
                    d.bytes.len()
                ));
            }
            let Some((reply, from)) = self.recv_from(idle) else {
                silent += 1;
                if silent > 10 {
                    return Err(format!("server silent; {} bytes so far", d.bytes.len()));
                }
                if self.tid.is_some() {
                    self.send(&ack(acked));
                } else {
                    self.sock.send_to(req, self.server).unwrap();
                }
                continue;
            };
            silent = 0;
            if Some(from) != self.tid {
                return Err(format!("reply from {from}, not the TID {:?}", self.tid));
            }
            match reply {
                Reply::Oack(pairs) => {
                    if d.oack.is_none() {
                        for (k, v) in &pairs {
                            match k.to_ascii_lowercase().as_str() {
                                "blksize" => blksize = v.parse().map_err(|_| "bad blksize")?,
                                "windowsize" => {
                                    windowsize = v.parse().map_err(|_| "bad windowsize")?
                                }
                                _ => {}
                            }
                        }
                        d.oack = Some(pairs);
                        d.oack_raw = Some(self.last_raw.clone());
                    }
                    self.send(&ack(0));
                }
                Reply::Data { block, payload } => {
                    d.data_packets += 1;
                    d.blocks.push(block);
                    if block != self.next_block(acked) {
                        // A gap: say where we are, once until progress, so
                        // the server restarts the window after `acked`.
                        if !gap_reported {
                            self.send(&ack(acked));
                            gap_reported = true;
                            in_window = 0;
                        }
                        continue;
                    }
                    gap_reported = false;
                    if payload.len() > blksize {
                        return Err(format!("DATA {block} carries {} bytes", payload.len()));
                    }
                    d.bytes.extend_from_slice(&payload);
                    acked = block;
                    in_window += 1;
                    let last = payload.len() < blksize;
                    if last || in_window == windowsize {
                        self.send(&ack(acked));
                        in_window = 0;
                    }
                    if last {
                        return Ok(d);
                    }
                }
                Reply::Error { code, message } => {
                    return Err(format!(
                        "ERROR {code} {message:?} after {} bytes",
                        d.bytes.len()
                    ))
                }
                Reply::Other(b) => return Err(format!("unexpected datagram {b:?}")),
            }
        }
    }
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_tcp_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind ephemeral");
    l.local_addr().unwrap().port()
}

/// How many file descriptors process `pid` holds open now.
pub fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
        .count()
}

// iSCSI: LUN images made before dlsd starts, a config section per target,
// and libiscsi's tools run with a time limit.

/// The target most iSCSI tests export.
pub const ISCSI_DISK0: &str = "iqn.2026-01.example:disk0";

/// One `[[iscsi.target]]` section; `luns` are (path, read_only).
pub fn iscsi_target(iqn: &str, luns: &[(&Path, bool)], extra: &str) -> String {
    let luns: Vec<String> = luns
        .iter()
        .map(|(p, ro)| format!("{{ path = {:?}, read_only = {ro} }}", p.to_str().unwrap()))
        .collect();
    format!(
        "[[iscsi.target]]\niqn = \"{iqn}\"\nluns = [{}]\n{extra}\n",
        luns.join(", ")
    )
}

/// A server directory whose `luns/` holds the images a test makes before
/// the server starts.
pub struct IscsiSetup {
    pub dir: tempfile::TempDir,
}

impl IscsiSetup {
    pub fn fresh() -> IscsiSetup {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("luns")).unwrap();
        std::fs::create_dir(dir.path().join("root")).unwrap();
        IscsiSetup { dir }
    }

    pub fn image(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join("luns").join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// A sparse file of `len` bytes.
    pub fn sparse(&self, name: &str, len: u64) -> PathBuf {
        let p = self.dir.path().join("luns").join(name);
        std::fs::File::create(&p).unwrap().set_len(len).unwrap();
        p
    }

    /// Starts dlsd with `[iscsi]` on a free port, `settings` and `targets`.
    pub fn start(self, settings: &str, targets: &str) -> (Server, String) {
        let port = free_tcp_port();
        let portal = format!("127.0.0.1:{port}");
        let extra = format!("[iscsi]\nlisten = [\"{portal}\"]\n{settings}\n{targets}");
        let root = self.dir.path().join("root");
        let server = Server::start_in(self.dir, root, "", &extra);
        (server, portal)
    }
}

pub fn iscsi_url(portal: &str, iqn: &str, lun: u32) -> String {
    format!("iscsi://{portal}/{iqn}/{lun}")
}

/// Runs a tool (30 s at most) and returns (success, output), failing the test if it hangs.
pub fn tool(program: &str, args: &[&str]) -> (bool, String) {
    let (ok, out) = run(Command::new(program).args(args), Duration::from_secs(30));
    assert!(
        !out.starts_with("TIMED OUT"),
        "{program} {args:?} hung:\n{out}"
    );
    (ok, out)
}

/// Runs a tool that must succeed and returns its output.
pub fn tool_ok(program: &str, args: &[&str]) -> String {
    let (ok, out) = tool(program, args);
    assert!(ok, "{program} {args:?} failed:\n{out}");
    out
}

pub fn require_libiscsi() {
    for t in [
        "iscsi-test-cu",
        "iscsi-ls",
        "iscsi-inq",
        "iscsi-readcapacity16",
    ] {
        require_tool(t, "libiscsi-bin");
    }
}
