//! The iSCSI read paths (sendfile and pread) give the same bytes, a resized
//! store is seen by the next session, and a reload while a copy runs leaves
//! the copy intact. Clients: qemu-img (qemu's iSCSI driver) and libiscsi.

mod common;

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use common::*;

const IQN: &str = "iqn.2026-12.org.example:paths";

fn free_tcp() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn iscsi_section(port: u16, lun: &std::path::Path, read_path: &str) -> String {
    format!(
        "[iscsi]\nlisten = [\"127.0.0.1:{port}\"]\nread_path = \"{read_path}\"\n[[iscsi.target]]\niqn = \"{IQN}\"\nluns = [{{ path = {lun:?} }}]\n"
    )
}

fn copy_lun(port: u16, out: &std::path::Path) -> (bool, String) {
    run(
        Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "raw"])
            .arg(format!("iscsi://127.0.0.1:{port}/{IQN}/0"))
            .arg(out),
        Duration::from_secs(120),
    )
}

#[test]
fn sendfile_and_pread_paths_serve_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let lun = dir.path().join("lun.img");
    // 24 MiB of pattern data plus a sparse tail.
    let mut data = pattern(24 << 20, 42);
    data.resize(32 << 20, 0);
    std::fs::write(&lun, &data).unwrap();
    for path in ["sendfile", "pread"] {
        let port = free_tcp();
        let server = Server::start("", &iscsi_section(port, &lun, path));
        let out = server.dir.path().join("copy.raw");
        let (ok, text) = copy_lun(port, &out);
        assert!(ok, "{path}: qemu-img: {text}\n{}", server.log());
        assert_eq!(sha256_file(&out), sha256(&data), "{path}: bytes differ");
    }
}

#[test]
fn a_grown_store_is_seen_by_the_next_session() {
    let dir = tempfile::tempdir().unwrap();
    let lun = dir.path().join("lun.img");
    std::fs::File::create(&lun)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let port = free_tcp();
    let server = Server::start("", &iscsi_section(port, &lun, "sendfile"));
    let url = format!("iscsi://127.0.0.1:{port}/{IQN}/0");
    let size = || {
        let (ok, text) = run(
            Command::new("iscsi-readcapacity16").args(["-s", &url]),
            Duration::from_secs(20),
        );
        assert!(ok, "{text}\n{}", server.log());
        text.trim()
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("{text}"))
    };
    assert_eq!(size(), 8 << 20);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&lun)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    assert_eq!(size(), 16 << 20);
}

#[test]
fn reload_during_a_copy_leaves_it_intact() {
    let dir = tempfile::tempdir().unwrap();
    let lun = dir.path().join("lun.img");
    let data = pattern(48 << 20, 9);
    std::fs::write(&lun, &data).unwrap();
    let port = free_tcp();
    let server = Server::start("", &iscsi_section(port, &lun, "sendfile"));
    let out = server.dir.path().join("copy.raw");
    let mut copy = Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "raw"])
        .arg(format!("iscsi://127.0.0.1:{port}/{IQN}/0"))
        .arg(&out)
        .spawn()
        .unwrap();
    server.wait_for_log("logged in", Duration::from_secs(20));
    // Reload three times while the copy runs: once valid, once broken.
    let _ = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status();
    server.wait_for_log("generation 2 applied", Duration::from_secs(10));
    let config = std::fs::read_to_string(&server.config_path).unwrap();
    std::fs::write(
        &server.config_path,
        config.replace("[iscsi]\n", "[iscsi]\nqueue_depth = 0\n"),
    )
    .unwrap();
    let _ = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status();
    server.wait_for_log("iscsi.queue_depth", Duration::from_secs(10));
    let status = copy.wait().unwrap();
    assert!(status.success(), "{}", server.log());
    assert_eq!(sha256_file(&out), sha256(&data));
}

#[test]
fn sixteen_sessions_at_once_all_read_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let lun = dir.path().join("lun.img");
    let data = pattern(8 << 20, 77);
    std::fs::write(&lun, &data).unwrap();
    let port = free_tcp();
    let server = Server::start("", &iscsi_section(port, &lun, "sendfile"));
    let copies: Vec<_> = (0..16)
        .map(|i| {
            let out = server.dir.path().join(format!("copy{i}.raw"));
            let child = Command::new("qemu-img")
                .args(["convert", "-f", "raw", "-O", "raw"])
                .arg(format!("iscsi://127.0.0.1:{port}/{IQN}/0"))
                .arg(&out)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            (child, out)
        })
        .collect();
    for (child, out) in copies {
        let result = child.wait_with_output().unwrap();
        assert!(
            result.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&result.stderr),
            server.log()
        );
        assert_eq!(sha256_file(&out), sha256(&data));
    }
    assert_eq!(
        server.log().matches("logged in (Normal").count(),
        16,
        "{}",
        server.log()
    );
}
