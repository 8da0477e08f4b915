//! Graceful stop: SIGTERM stops new requests, lets transfers in flight
//! finish within the grace period, and exits 0; a second signal ends them.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn sigterm_lets_a_transfer_in_flight_finish() {
    let mut server = Server::start("", "");
    let data = pattern(4 << 20, 5);
    server.put("big.bin", &data);
    let out = server.dir.path().join("out");
    // tftp-hpa: 512-byte lockstep, several thousand round trips.
    let mut client = Command::new("tftp")
        .args([
            "127.0.0.1",
            &server.port().to_string(),
            "-m",
            "binary",
            "-c",
            "get",
            "big.bin",
        ])
        .arg(&out)
        .spawn()
        .unwrap();
    server.wait_for_log("RRQ \"big.bin\"", Duration::from_secs(10));
    let status = server
        .stop_with(15, Duration::from_secs(10))
        .expect("dlsd did not exit within the grace");
    assert!(status.success(), "{status:?}\n{}", server.log());
    assert!(client.wait().unwrap().success());
    assert_eq!(
        sha256_file(&out),
        sha256(&data),
        "the transfer in flight must complete"
    );
    assert!(server.log().contains("completed=1"), "{}", server.log());
}

#[test]
fn no_new_requests_after_sigterm_and_grace_is_bounded() {
    // A transfer that cannot finish (the client never ACKs) must not hold
    // the server past the grace period (3 s in the test config).
    let mut server = Server::start("", "");
    server.put("f.bin", &pattern(100_000, 6));
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(b"\x00\x01f.bin\x00octet\x00timeout\x0030\x00", server.addr)
        .unwrap();
    server.wait_for_log("RRQ \"f.bin\"", Duration::from_secs(10));
    let started = Instant::now();
    let status = server
        .stop_with(15, Duration::from_secs(15))
        .expect("dlsd did not exit");
    assert!(status.success());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(8),
        "{took:?}"
    );
    // The stuck client was told.
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 600];
    let mut saw_error = false;
    while let Ok((n, _)) = sock.recv_from(&mut buf) {
        if n >= 4 && buf[1] == 5 {
            saw_error = true;
        }
    }
    assert!(
        saw_error,
        "the client in flight gets an ERROR at the end of the grace"
    );
}

#[test]
fn a_second_sigterm_ends_the_grace_at_once() {
    // Two workers, one of them idle: the idle one ends at the first signal,
    // and the control thread must still hear the second.
    let mut server = Server::start("", "");
    server.put("f.bin", &pattern(100_000, 8));
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    // timeout=30 and no ACK: this transfer alone would hold the 3 s grace.
    sock.send_to(b"\x00\x01f.bin\x00octet\x00timeout\x0030\x00", server.addr)
        .unwrap();
    server.wait_for_log("RRQ \"f.bin\"", Duration::from_secs(10));
    let _ = Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status();
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let status = server
        .stop_with(15, Duration::from_secs(10))
        .expect("dlsd did not exit");
    assert!(status.success(), "{}", server.log());
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}\n{}",
        started.elapsed(),
        server.log()
    );
    assert!(
        server.log().contains("second stop signal"),
        "{}",
        server.log()
    );
}
