//! A first end-to-end check: each real client fetches one file.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn curl_atftp_and_tftp_hpa_fetch_identical_bytes() {
    let server = Server::start("", "");
    let data = pattern(300_000, 1);
    server.put("a.bin", &data);
    let out = server.dir.path().join("out");
    let url = format!("tftp://127.0.0.1:{}/a.bin", server.port());
    let (ok, text) = run(
        Command::new("curl")
            .args(["-sS", "--tftp-blksize", "1432", "-o"])
            .arg(&out)
            .arg(&url),
        Duration::from_secs(30),
    );
    assert!(ok, "curl: {text}\n{}", server.log());
    assert_eq!(sha256_file(&out), sha256(&data));
    std::fs::remove_file(&out).unwrap();
    let (ok, text) = run(
        Command::new("atftp")
            .args(["-g", "-r", "a.bin", "-l"])
            .arg(&out)
            .args([
                "--option",
                "blksize 1468",
                "--option",
                "windowsize 4",
                "127.0.0.1",
            ])
            .arg(server.port().to_string()),
        Duration::from_secs(30),
    );
    assert!(ok, "atftp: {text}\n{}", server.log());
    assert_eq!(sha256_file(&out), sha256(&data));
    std::fs::remove_file(&out).unwrap();
    let (ok, text) = run(
        Command::new("tftp")
            .args([
                "127.0.0.1",
                &server.port().to_string(),
                "-m",
                "binary",
                "-c",
                "get",
                "a.bin",
            ])
            .arg(&out),
        Duration::from_secs(30),
    );
    assert!(ok, "tftp-hpa: {text}\n{}", server.log());
    assert_eq!(sha256_file(&out), sha256(&data));
}

#[test]
fn sigterm_exits_zero_with_summary() {
    let mut server = Server::start("", "");
    let status = server
        .stop_with(15, Duration::from_secs(10))
        .expect("dlsd did not exit on SIGTERM");
    assert!(status.success(), "{status:?}\n{}", server.log());
    server.wait_for_log("tftp summary", Duration::from_secs(2));
}
