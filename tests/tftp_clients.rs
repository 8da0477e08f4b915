//! Real clients (curl, atftp, tftp-hpa) against dlsd on loopback: edge
//! sizes, 100 MiB, block-number rollover, 200 concurrent transfers, every
//! send path, and files truncated or replaced while they are being served.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::*;

/// The big tests take the machine's two cores; running them one at a time
/// keeps their time limits meaningful.
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

const LIMIT: Duration = Duration::from_secs(60);

fn out_path(server: &Server, tag: &str) -> PathBuf {
    server.dir.path().join(format!("out-{tag}"))
}

/// Asserts the client succeeded and wrote exactly `want`.
fn assert_download(server: &Server, client: &str, res: (bool, String), out: &Path, want: &[u8]) {
    let (ok, text) = res;
    assert!(ok, "{client} failed: {text}\n{}", server.log());
    let got = std::fs::read(out)
        .unwrap_or_else(|e| panic!("{client}: no output {}: {e}\n{text}", out.display()));
    assert_eq!(
        (got.len(), sha256(&got)),
        (want.len(), sha256(want)),
        "{client}: bytes differ\n{text}"
    );
}

fn curl(server: &Server, name: &str, out: &Path, args: &[&str]) -> (bool, String) {
    require_tool("curl", "curl");
    let _ = std::fs::remove_file(out);
    let url = format!("tftp://127.0.0.1:{}/{name}", server.port());
    run(
        Command::new("curl")
            .args(["-sS", "--max-time", "120"])
            .args(args)
            .arg("-o")
            .arg(out)
            .arg(url),
        LIMIT * 2,
    )
}

fn atftp(server: &Server, name: &str, out: &Path, options: &[&str]) -> (bool, String) {
    require_tool("atftp", "atftp");
    let _ = std::fs::remove_file(out);
    let mut cmd = Command::new("atftp");
    cmd.args(["-g", "-r", name, "-l"]).arg(out);
    for o in options {
        cmd.args(["--option", o]);
    }
    cmd.arg("127.0.0.1").arg(server.port().to_string());
    run(&mut cmd, LIMIT)
}

fn tftp_hpa(server: &Server, name: &str, out: &Path, mode: &str) -> (bool, String) {
    require_tool("tftp", "tftp-hpa");
    let _ = std::fs::remove_file(out);
    let port = server.port().to_string();
    let (ok, text) = run(
        Command::new("tftp")
            .args(["127.0.0.1", &port, "-m", mode, "-c", "get", name])
            .arg(out),
        LIMIT * 2,
    );
    // tftp-hpa exits 0 even after an ERROR; it prints the error though.
    let failed = text.contains("Error code") || text.contains("Transfer timed out");
    (ok && !failed, text)
}

/// Files of the edge sizes; `block` is the negotiated block size.
fn edge_files(server: &Server, block: usize) -> Vec<(String, Vec<u8>)> {
    let mut sizes = vec![0, 1, 511, 512, 513, block, block + 1, 3 * block];
    sizes.dedup();
    sizes
        .into_iter()
        .map(|n| {
            let name = format!("edge-{n}.bin");
            let data = pattern(n, n as u64 + 11);
            server.put(&name, &data);
            (name, data)
        })
        .collect()
}

#[test]
fn curl_fetches_edge_sizes_with_blksize_and_without_options() {
    let server = Server::start("", "");
    let out = out_path(&server, "curl");
    for (name, data) in edge_files(&server, 1432) {
        let res = curl(&server, &name, &out, &["--tftp-no-options"]);
        assert_download(
            &server,
            &format!("curl no options {name}"),
            res,
            &out,
            &data,
        );
        if data.is_empty() {
            // curl 7.88 sends tsize with its options and rejects the right
            // answer for an empty file, OACK tsize=0 ("invalid tsize"); the
            // server side of that is BC-03 c in tftp_cases.rs.
            let (ok, text) = curl(&server, &name, &out, &["-v", "--tftp-blksize", "1432"]);
            assert!(
                ok || text.contains("invalid tsize -:0:- value in OACK"),
                "curl empty file: {text}\n{}",
                server.log()
            );
            continue;
        }
        let res = curl(&server, &name, &out, &["--tftp-blksize", "1432"]);
        assert_download(&server, &format!("curl blksize {name}"), res, &out, &data);
    }
}

#[test]
fn atftp_fetches_edge_sizes_with_blksize_windowsize_and_tsize() {
    let server = Server::start("", "");
    let out = out_path(&server, "atftp");
    // A file of exactly one window ends with an empty block in the next.
    let mut files = edge_files(&server, 1468);
    let window = pattern(8 * 1468, 99);
    server.put("window.bin", &window);
    files.push(("window.bin".into(), window));
    for (name, data) in files {
        for opts in [
            &["blksize 1468", "windowsize 8", "tsize enable"][..],
            &["blksize 1468", "windowsize 1"][..],
            &["tsize enable"][..],
        ] {
            let res = atftp(&server, &name, &out, opts);
            assert_download(&server, &format!("atftp {opts:?} {name}"), res, &out, &data);
        }
    }
}

#[test]
fn tftp_hpa_fetches_edge_sizes_at_512_byte_blocks() {
    let server = Server::start("", "");
    let out = out_path(&server, "hpa");
    for (name, data) in edge_files(&server, 512) {
        let res = tftp_hpa(&server, &name, &out, "binary");
        assert_download(&server, &format!("tftp-hpa {name}"), res, &out, &data);
    }
}

#[test]
fn tftp_hpa_netascii_gives_back_the_original_lf_text() {
    let server = Server::start("", "");
    let mut text = String::new();
    for i in 0..2000 {
        text.push_str(&format!("line {i}: kernel /vmlinuz initrd=/initrd.img\n"));
    }
    server.put("menu.txt", text.as_bytes());
    let out = out_path(&server, "netascii");
    let res = tftp_hpa(&server, "menu.txt", &out, "netascii");
    // tftp-hpa turns the CR LF the server sends back into LF.
    assert_download(&server, "tftp-hpa netascii", res, &out, text.as_bytes());
}

#[test]
fn curl_and_atftp_fetch_100_mib_identically() {
    let _g = heavy();
    let server = Server::start("", "");
    let data = pattern(100 << 20, 100);
    server.put("big.bin", &data);
    let out = out_path(&server, "big");
    let start = Instant::now();
    let res = curl(&server, "big.bin", &out, &["--tftp-blksize", "65464"]);
    assert_download(&server, "curl 100 MiB", res, &out, &data);
    let curl_time = start.elapsed();
    let start = Instant::now();
    let res = atftp(&server, "big.bin", &out, &["blksize 8192", "windowsize 16"]);
    assert_download(&server, "atftp 100 MiB", res, &out, &data);
    eprintln!("100 MiB: curl {curl_time:?}, atftp {:?}", start.elapsed());
}

#[test]
fn rollover_over_32_mib_at_512_with_tftp_hpa_and_curl_no_options() {
    let _g = heavy();
    let server = Server::start("", "");
    // BC-01 realistic: blocks 1..65535, 0, 1, 2, then 3 with 100 bytes.
    let data = pattern(33_555_556, 101);
    server.put("initrd.img", &data);
    let out = out_path(&server, "rollover");
    let res = tftp_hpa(&server, "initrd.img", &out, "binary");
    assert_download(&server, "tftp-hpa rollover", res, &out, &data);
    let res = curl(&server, "initrd.img", &out, &["--tftp-no-options"]);
    assert_download(&server, "curl rollover", res, &out, &data);
}

#[test]
fn rollover_at_blksize_8_with_atftp() {
    let _g = heavy();
    let server = Server::start("", "");
    // BC-01 fast: 75,000 full blocks of 8 bytes and an empty one.
    let data = pattern(600_000, 102);
    server.put("wrap.bin", &data);
    let out = out_path(&server, "wrap");
    let res = atftp(&server, "wrap.bin", &out, &["blksize 8"]);
    assert_download(&server, "atftp blksize 8", res, &out, &data);
}

/// Reads a child's stdout and compares it with `want` as it streams;
/// returns None when identical, else what went wrong.
fn compare_stream(mut stdout: impl Read, want: &[u8]) -> Option<String> {
    let mut buf = vec![0u8; 1 << 16];
    let mut at = 0usize;
    loop {
        let n = match stdout.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => return Some(format!("read: {e}")),
        };
        if at + n > want.len() || buf[..n] != want[at..at + n] {
            return Some(format!("bytes differ within [{at}, {})", at + n));
        }
        at += n;
    }
    (at != want.len()).then(|| format!("{at} of {} bytes", want.len()))
}

#[test]
fn two_hundred_concurrent_transfers_of_one_30_mib_file_are_identical() {
    require_tool("curl", "curl");
    let _g = heavy();
    let server = Server::start("", "");
    let data = Arc::new(pattern(30 << 20, 200));
    server.put("storm.bin", &data);
    let url = format!("tftp://127.0.0.1:{}/storm.bin", server.port());
    let start = Instant::now();
    let mut children = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..200 {
        let mut child = Command::new("curl")
            .args(["-sS", "--max-time", "150", "--tftp-blksize", "65464", &url])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn curl");
        let stdout = child.stdout.take().unwrap();
        let want = data.clone();
        readers.push(std::thread::spawn(move || compare_stream(stdout, &want)));
        children.push(child);
    }
    // Bounded: curl's --max-time ends every client; the wait is a backstop.
    let mut failures = Vec::new();
    for (i, (mut child, reader)) in children.into_iter().zip(readers).enumerate() {
        let deadline = start + Duration::from_secs(170);
        let status = loop {
            if let Ok(Some(s)) = child.try_wait() {
                break Some(s);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let diff = reader.join().unwrap();
        if !status.is_some_and(|s| s.success()) || diff.is_some() {
            failures.push(format!("client {i}: {status:?} {diff:?}"));
        }
    }
    let elapsed = start.elapsed();
    assert!(failures.is_empty(), "{failures:#?}\n{}", server.log());
    // The server logs a completion when the final ACK arrives, which may
    // be just after curl exits.
    let served = || {
        server
            .log()
            .lines()
            .filter(|l| l.contains("sent \"storm.bin\""))
            .count()
    };
    let wait = Instant::now();
    while served() < 200 && wait.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(served(), 200, "completed transfers in the log");
    eprintln!("200 x 30 MiB in {elapsed:?}");
}

#[test]
fn every_send_path_serves_identical_bytes() {
    // Style point 23: one file through every path, windows of 1, 16, 64.
    let lf_text: Vec<u8> = (0..3000)
        .flat_map(|i| format!("row {i}\r\n\n").into_bytes())
        .collect();
    for path in ["gso", "sendmmsg", "sendmsg", "pread", "auto"] {
        let server = Server::start(&format!("send_path = \"{path}\""), "");
        let multi = pattern(1468 * 37 + 123, 23);
        let exact = pattern(1468 * 16, 24);
        server.put("multi.bin", &multi);
        server.put("exact.bin", &exact);
        server.put("text.txt", &lf_text);
        let out = out_path(&server, path);
        for (name, data) in [("multi.bin", &multi), ("exact.bin", &exact)] {
            for w in ["1", "16", "64"] {
                let opts = ["blksize 1468".to_string(), format!("windowsize {w}")];
                let opts: Vec<&str> = opts.iter().map(String::as_str).collect();
                let res = atftp(&server, name, &out, &opts);
                assert_download(&server, &format!("{path} w{w} {name}"), res, &out, data);
            }
        }
        // netascii comes from a buffer, not the mapping: LF -> CR LF and a
        // bare CR -> CR NUL (RFC 764), through the same path.
        let mut want = Vec::new();
        for &b in &lf_text {
            match b {
                b'\n' => want.extend_from_slice(b"\r\n"),
                b'\r' => want.extend_from_slice(b"\r\0"),
                b => want.push(b),
            }
        }
        let mut peer = Peer::new(server.addr);
        let opts = [("blksize", "1468"), ("windowsize", "16")];
        let req = request(OP_RRQ, b"text.txt", "netascii", &opts);
        let d = peer
            .download(&req, LIMIT)
            .unwrap_or_else(|e| panic!("{path} netascii: {e}\n{}", server.log()));
        assert_eq!(sha256(&d.bytes), sha256(&want), "{path} netascii");
        let log = server.log();
        assert!(!log.contains(" WARN "), "{path}: {log}");
    }
}

/// A client that reads `name` slowly: it ACKs `first` blocks, then hands
/// control back so the test can change the file, then goes on.
struct SlowReader {
    peer: Peer,
    got: Vec<u8>,
    block: u16,
    blksize: usize,
}

impl SlowReader {
    fn start(server: &Server, name: &str, blksize: usize, first: u16) -> SlowReader {
        let mut peer = Peer::new(server.addr);
        let b = blksize.to_string();
        peer.send_request(&rrq(name, &[("blksize", &b)]));
        match peer.recv(Duration::from_secs(3)) {
            Some(Reply::Oack(_)) => peer.send(&ack(0)),
            other => panic!("{other:?}\n{}", server.log()),
        }
        let mut r = SlowReader {
            peer,
            got: Vec::new(),
            block: 0,
            blksize,
        };
        for _ in 0..first {
            assert!(r.step(server).is_none(), "ended early");
        }
        r
    }

    /// Takes the next DATA and ACKs it; Some(outcome) once the transfer ended.
    fn step(&mut self, server: &Server) -> Option<Result<(), String>> {
        let want = self.block.wrapping_add(1);
        loop {
            match self.peer.recv(Duration::from_secs(5)) {
                Some(Reply::Data { block, payload }) if block == want => {
                    self.got.extend_from_slice(&payload);
                    self.block = block;
                    self.peer.send(&ack(block));
                    return (payload.len() < self.blksize).then_some(Ok(()));
                }
                // A resend of the block before: our ACK crossed it.
                Some(Reply::Data { block, .. }) if block == self.block => continue,
                Some(Reply::Error { code, message }) => {
                    return Some(Err(format!("ERROR {code} {message}")))
                }
                other => panic!("slow reader: {other:?}\n{}", server.log()),
            }
        }
    }

    fn finish(&mut self, server: &Server) -> Result<(), String> {
        for _ in 0..200_000 {
            if let Some(end) = self.step(server) {
                return end;
            }
        }
        panic!("no end in 200,000 blocks");
    }
}

#[test]
fn truncation_in_place_ends_the_transfer_and_the_server_lives_on() {
    for (path, windowsize) in [
        ("auto", 1),
        ("gso", 16),
        ("sendmmsg", 16),
        ("sendmsg", 4),
        ("pread", 1),
    ] {
        let mut server = Server::start(&format!("send_path = \"{path}\""), "");
        let data = pattern(8 << 20, 300);
        let file = server.put("shrink.bin", &data);
        let other = pattern(70_000, 301);
        server.put("other.bin", &other);

        // Windows matter for GSO/sendmmsg: a whole window is read at once.
        let mut peer = Peer::new(server.addr);
        let w = windowsize.to_string();
        peer.send_request(&rrq(
            "shrink.bin",
            &[("blksize", "1024"), ("windowsize", &w)],
        ));
        let mut d = Download::default();
        let mut acked = 0u16;
        let mut ended = None;
        let mut truncated = false;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            match peer.recv(Duration::from_secs(5)) {
                Some(Reply::Oack(_)) => peer.send(&ack(0)),
                Some(Reply::Data { block, payload }) => {
                    if block != acked.wrapping_add(1) {
                        continue;
                    }
                    d.bytes.extend_from_slice(&payload);
                    acked = block;
                    if payload.len() < 1024 {
                        ended = Some("short DATA".to_string());
                        break;
                    }
                    if block % windowsize == 0 {
                        // Slowly, so the truncation lands mid-transfer.
                        std::thread::sleep(Duration::from_millis(1));
                        peer.send(&ack(block));
                    }
                    if block == 64 && !truncated {
                        std::fs::OpenOptions::new()
                            .write(true)
                            .open(&file)
                            .unwrap()
                            .set_len(0)
                            .unwrap();
                        truncated = true;
                    }
                }
                Some(Reply::Error { code, message }) => {
                    ended = Some(format!("ERROR {code} {message}"));
                    break;
                }
                Some(other) => panic!("{path}: {other:?}"),
                None => break,
            }
        }
        assert!(truncated, "{path}: transfer ended before block 64");
        assert!(
            server.is_running(),
            "{path}: dlsd died after truncation\n{}",
            server.log()
        );
        assert!(
            d.bytes.len() < data.len(),
            "{path}: all {} bytes arrived from a file truncated to 0 ({ended:?})",
            data.len()
        );
        assert_eq!(
            d.bytes[..],
            data[..d.bytes.len()],
            "{path}: served bytes that were never in the file"
        );
        assert!(
            ended.as_deref().is_some_and(|e| e.starts_with("ERROR")),
            "{path}: the client was not told ({ended:?}) after {} bytes\n{}",
            d.bytes.len(),
            server.log()
        );
        // Still serving: another file, and the truncated one (now empty).
        let mut peer = Peer::new(server.addr);
        let got = peer
            .download(&rrq("other.bin", &[("blksize", "1024")]), LIMIT)
            .unwrap_or_else(|e| panic!("{path}: {e}\n{}", server.log()));
        assert_eq!(sha256(&got.bytes), sha256(&other), "{path}");
        let got = peer
            .download(&rrq("shrink.bin", &[]), LIMIT)
            .unwrap_or_else(|e| panic!("{path}: {e}\n{}", server.log()));
        assert!(got.bytes.is_empty(), "{path}: truncated file not empty");
    }
}

#[test]
fn file_replaced_by_rename_serves_old_bytes_to_old_transfers_new_to_new() {
    for path in ["auto", "pread"] {
        let server = Server::start(&format!("send_path = \"{path}\""), "");
        let old = pattern(3 << 20, 400);
        let new = pattern((3 << 20) + 777, 402);
        server.put("kernel.img", &old);
        let mut slow = SlowReader::start(&server, "kernel.img", 1024, 100);

        let tmp = server.root.join(".kernel.img.new");
        std::fs::write(&tmp, &new).unwrap();
        std::fs::rename(&tmp, server.root.join("kernel.img")).unwrap();

        let mut peer = Peer::new(server.addr);
        let got = peer
            .download(&rrq("kernel.img", &[("blksize", "1468")]), LIMIT)
            .unwrap_or_else(|e| panic!("{path}: {e}\n{}", server.log()));
        assert_eq!(sha256(&got.bytes), sha256(&new), "{path}: new request");

        slow.finish(&server)
            .unwrap_or_else(|e| panic!("{path}: old transfer: {e}\n{}", server.log()));
        assert_eq!(
            (slow.got.len(), sha256(&slow.got)),
            (old.len(), sha256(&old)),
            "{path}: the transfer in flight must finish with the old bytes"
        );
    }
}

#[test]
fn file_rewritten_in_place_never_yields_a_mix_of_old_and_new_bytes() {
    // `cp new.img kernel.img` truncates in place and writes again: the
    // truncation is real but short-lived, and a transfer in flight must
    // end with an ERROR rather than splice new bytes onto old ones.
    for path in ["auto", "pread"] {
        let server = Server::start(&format!("send_path = \"{path}\""), "");
        let old = pattern(3 << 20, 500);
        let new = pattern(3 << 20, 502);
        let file = server.put("kernel.img", &old);
        let mut slow = SlowReader::start(&server, "kernel.img", 1024, 100);
        std::fs::write(&file, &new).unwrap();
        let end = slow.finish(&server);
        let got = &slow.got;
        eprintln!(
            "{path}: rewrite in place: {end:?} after {} bytes",
            got.len()
        );
        let whole = |want: &[u8]| got.len() == want.len() && sha256(got) == sha256(want);
        assert!(
            end.is_err() || whole(&old) || whole(&new),
            "{path}: a completed transfer of {} bytes mixing old and new \
             (old prefix {} bytes)\n{}",
            got.len(),
            got.iter().zip(&old).take_while(|(a, b)| a == b).count(),
            server.log()
        );
    }
}
