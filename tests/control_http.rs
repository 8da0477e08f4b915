//! The control thread's HTTP endpoint, driven with curl and raw sockets,
//! and its metrics checked with Prometheus' own promtool.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::*;

fn http_addr(server: &Server) -> SocketAddr {
    server.wait_for_log("http: listening on ", Duration::from_secs(5));
    let log = server.log();
    let line = log
        .lines()
        .find(|l| l.contains("http: listening on "))
        .unwrap();
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

fn get(addr: SocketAddr, path: &str) -> (bool, String) {
    run(
        Command::new("curl").args([
            "-sS",
            "-w",
            "\\n%{http_code}",
            &format!("http://{addr}{path}"),
        ]),
        Duration::from_secs(10),
    )
}

fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn metrics_count_what_clients_did_and_pass_promtool() {
    let server = Server::start("", "");
    let addr = http_addr(&server);
    let data = pattern(100_000, 7);
    server.put("f.bin", &data);
    let out = server.dir.path().join("out");
    for _ in 0..3 {
        let (ok, text) = run(
            Command::new("curl")
                .args(["-sS", "--tftp-blksize", "1432", "-o"])
                .arg(&out)
                .arg(format!("tftp://127.0.0.1:{}/f.bin", server.port())),
            Duration::from_secs(20),
        );
        assert!(ok, "{text}");
    }
    let (ok, _) = run(
        Command::new("curl")
            .args(["-sS", "-o", "/dev/null"])
            .arg(format!("tftp://127.0.0.1:{}/missing", server.port())),
        Duration::from_secs(20),
    );
    assert!(!ok, "a missing file must fail");

    let (ok, body) = get(addr, "/metrics");
    assert!(ok && body.ends_with("\n200"), "{body}");
    let metrics = body.trim_end_matches("200");
    assert!(metrics.contains("dls_tftp_requests_total 4\n"), "{metrics}");
    assert!(
        metrics.contains("dls_tftp_transfers_completed_total 3\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("dls_tftp_bytes_sent_total 300000\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("dls_tftp_errors_total{kind=\"not_found\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("dls_tftp_transfer_duration_seconds_count 3\n"),
        "{metrics}"
    );

    let file = server.dir.path().join("metrics.txt");
    std::fs::write(&file, metrics).unwrap();
    let (ok, text) = run(
        Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::fs::File::open(&file).unwrap()),
        Duration::from_secs(20),
    );
    assert!(ok, "promtool: {text}");
}

#[test]
fn health_status_and_errors() {
    let server = Server::start("", "");
    let addr = http_addr(&server);
    let (ok, body) = get(addr, "/health");
    assert!(
        ok && body.ends_with("\n200") && body.contains("\"tftp\":\"running\""),
        "{body}"
    );
    let (ok, body) = get(addr, "/api/v1/status");
    assert!(
        ok && body.ends_with("\n200") && body.contains("\"requests\":0"),
        "{body}"
    );
    let (_, body) = get(addr, "/nope");
    assert!(body.ends_with("\n404"), "{body}");
    assert!(raw(addr, b"\x01\x02garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
    assert!(raw(
        addr,
        b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
    )
    .starts_with("HTTP/1.1 413"));
    let mut big = b"GET /metrics HTTP/1.1\r\nX-Big: ".to_vec();
    big.resize(20_000, b'a');
    assert!(raw(addr, &big).starts_with("HTTP/1.1 431"));
    assert!(raw(addr, b"DELETE /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
}

#[test]
fn a_slow_client_does_not_block_others_and_is_dropped() {
    let server = Server::start("", "");
    let addr = http_addr(&server);
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /met").unwrap();
    let (ok, body) = get(addr, "/health");
    assert!(ok && body.ends_with("\n200"), "{body}");
    // The slow one is closed after the connection timeout (5 s).
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 16];
    let n = slow.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "expected the server to close the idle connection");
}

#[test]
fn a_request_followed_by_a_half_close_is_answered_and_head_has_no_body() {
    let server = Server::start("", "");
    let addr = http_addr(&server);
    // What `printf 'GET ...' | nc` does: send, then shut the write side.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /health HTTP/1.0\r\n\r\n").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out:?}");
    let head = raw(addr, b"HEAD /health HTTP/1.1\r\n\r\n");
    assert!(
        head.starts_with("HTTP/1.1 200") && head.ends_with("\r\n\r\n"),
        "{head:?}"
    );
}
