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
        let port = free_udp_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let config_path = dir.path().join("dls.toml");
        let config = format!(
            "[engine]\nworkers = 2\nshutdown_grace = \"3s\"\n[http]\nlisten = \"127.0.0.1:0\"\n[tftp]\nlisten = [\"{addr}\"]\nroot = {:?}\n{extra_tftp}\n{extra}\n",
            root
        );
        std::fs::write(&config_path, config).unwrap();
        Server::spawn(dir, root, addr, config_path, &[])
    }

    /// Starts dlsd listening on `addr` under a command prefix such as
    /// `ip netns exec NS` (which execs, so the PID stays dlsd's).
    pub fn start_wrapped(wrapper: &[&str], addr: SocketAddr, extra_tftp: &str) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let config_path = dir.path().join("dls.toml");
        let config = format!(
            "[engine]\nworkers = 2\nshutdown_grace = \"3s\"\n[tftp]\nlisten = [\"{addr}\"]\nroot = {:?}\n{extra_tftp}\n",
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
        let mut child = cmd
            .args(["--log-level", "debug", "serve", "--config"])
            .arg(&config_path)
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

/// `kill -SIG PID` for our own child only.
fn send_signal(pid: i32, signal: i32) {
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
