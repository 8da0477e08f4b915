//! Live reconfiguration: SIGHUP and `dlsd reload` apply a new TFTP root to
//! new requests while transfers in flight finish untouched; a broken file is
//! refused with its key named and the server keeps serving.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn reload_switches_root_for_new_requests_only() {
    let server = Server::start("", "");
    let old = pattern(8 << 20, 11);
    server.put("f.bin", &old);
    let root2 = server.dir.path().join("root2");
    std::fs::create_dir(&root2).unwrap();
    let new = pattern(1000, 12);
    std::fs::write(root2.join("f.bin"), &new).unwrap();

    // A slow transfer: 512-byte blocks in lockstep, 16k packets.
    let out_old = server.dir.path().join("old.out");
    let mut slow = Command::new("tftp")
        .args([
            "127.0.0.1",
            &server.port().to_string(),
            "-m",
            "binary",
            "-c",
            "get",
            "f.bin",
        ])
        .arg(&out_old)
        .spawn()
        .unwrap();
    server.wait_for_log("RRQ \"f.bin\"", Duration::from_secs(10));

    let config = std::fs::read_to_string(&server.config_path).unwrap();
    let pid_file = server.dir.path().join("dlsd.pid");
    let edited = config
        .replace(
            &format!("root = {:?}", server.root),
            &format!("root = {:?}", root2),
        )
        .replace(
            "[engine]\n",
            &format!("[engine]\npid_file = {pid_file:?}\n"),
        );
    std::fs::write(&server.config_path, edited).unwrap();
    // pid_file is only written at start, so signal by PID for this first one.
    let _ = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status();
    server.wait_for_log("generation 2 applied", Duration::from_secs(5));

    let out_new = server.dir.path().join("new.out");
    let (ok, text) = run(
        Command::new("curl")
            .arg("-sS")
            .arg("-o")
            .arg(&out_new)
            .arg(format!("tftp://127.0.0.1:{}/f.bin", server.port())),
        Duration::from_secs(20),
    );
    assert!(ok, "{text}");
    assert_eq!(
        sha256_file(&out_new),
        sha256(&new),
        "new request must see the new root"
    );

    let status = slow.wait().unwrap();
    assert!(status.success());
    assert_eq!(
        sha256_file(&out_old),
        sha256(&old),
        "transfer in flight must finish with its bytes"
    );
}

#[test]
fn broken_config_is_refused_and_old_one_stays() {
    let server = Server::start("", "");
    let data = pattern(5000, 3);
    server.put("f.bin", &data);
    let good = std::fs::read_to_string(&server.config_path).unwrap();
    std::fs::write(
        &server.config_path,
        good.replace("[tftp]\n", "[tftp]\nmax_blksize = 3\n"),
    )
    .unwrap();
    let _ = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status();
    server.wait_for_log("reload refused", Duration::from_secs(5));
    assert!(
        server.log().contains("tftp.max_blksize"),
        "{}",
        server.log()
    );

    // `dlsd reload` validates first and says why, with exit 1.
    let (ok, text) = run(
        Command::new(env!("CARGO_BIN_EXE_dlsd"))
            .args(["reload", "--config"])
            .arg(&server.config_path),
        Duration::from_secs(10),
    );
    assert!(!ok && text.contains("tftp.max_blksize"), "{text}");

    let out = server.dir.path().join("out");
    let (ok, text) = run(
        Command::new("curl")
            .arg("-sS")
            .arg("-o")
            .arg(&out)
            .arg(format!("tftp://127.0.0.1:{}/f.bin", server.port())),
        Duration::from_secs(20),
    );
    assert!(ok, "{text}");
    assert_eq!(sha256_file(&out), sha256(&data));
}

#[test]
fn dlsd_reload_signals_through_the_pid_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let pid_file = dir.path().join("dlsd.pid");
    let server = Server::start_full(dir, root, &format!("pid_file = {pid_file:?}"), "", "");
    let written = std::fs::read_to_string(&pid_file).unwrap();
    assert_eq!(written.trim(), server.pid().to_string());
    let (ok, text) = run(
        Command::new(env!("CARGO_BIN_EXE_dlsd"))
            .args(["reload", "--config"])
            .arg(&server.config_path),
        Duration::from_secs(10),
    );
    assert!(ok, "{text}");
    server.wait_for_log("generation 2 applied", Duration::from_secs(5));
}
