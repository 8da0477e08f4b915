//! A first end-to-end check: each real client fetches one file.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// Fetches `name` from the server with curl into `out`; asserts curl
/// succeeded.
fn curl_get(server: &Server, name: &str, blksize: Option<&str>, out: &std::path::Path) {
    let url = format!("tftp://127.0.0.1:{}/{name}", server.port());
    let mut cmd = Command::new("curl");
    cmd.arg("-sS");
    if let Some(b) = blksize {
        cmd.args(["--tftp-blksize", b]);
    }
    let (ok, text) = run(cmd.arg("-o").arg(out).arg(&url), Duration::from_secs(60));
    assert!(ok, "curl: {text}\n{}", server.log());
}

#[test]
fn curl_atftp_and_tftp_hpa_fetch_identical_bytes() {
    let server = Server::start("", "");
    let data = pattern(300_000, 1);
    server.put("a.bin", &data);
    let out = server.dir.path().join("out");
    curl_get(&server, "a.bin", Some("1432"), &out);
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

/// The scheduler state letter of each worker thread of `pid` ("R" running
/// or runnable, "S" sleeping, ...), from /proc/PID/task/TID/stat.
fn worker_states(pid: i32) -> Vec<(String, char)> {
    let mut states = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.starts_with("dls-worker") {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // The state follows the parenthesised command name.
        if let Some(state) = stat.rfind(')').and_then(|i| stat[i + 2..].chars().next()) {
            states.push((comm.trim().to_owned(), state));
        }
    }
    states
}

/// Workers poll without sleeping for `engine.busy_poll` after work; once the
/// transfers are over they must block in the kernel again, not spin on an
/// idle box. A spinning thread is runnable ("R") whenever it is looked at,
/// however loaded the machine is; a blocked one is sleeping ("S").
#[test]
fn idle_workers_sleep_after_a_transfer() {
    let server = Server::start("", "");
    let data = pattern(4 << 20, 2);
    server.put("b.bin", &data);
    let out = server.dir.path().join("out");
    curl_get(&server, "b.bin", Some("1432"), &out);
    assert_eq!(sha256_file(&out), sha256(&data));
    // The transfer's last timers (lingering for a lost final ACK) end well
    // within this.
    std::thread::sleep(Duration::from_millis(300));
    let mut seen = 0;
    for _ in 0..20 {
        let states = worker_states(server.pid());
        assert_eq!(states.len(), 2, "two workers expected: {states:?}");
        for (name, state) in &states {
            assert_eq!(
                *state,
                'S',
                "{name} is not asleep with nothing to do ({state})\n{}",
                server.log()
            );
        }
        seen += states.len();
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(seen, 40);
}

/// An `[iscsi]` section on a free port with one 16 MiB LUN in `dir`.
fn iscsi_section(dir: &std::path::Path) -> (String, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let lun = dir.join("lun.img");
    std::fs::File::create(&lun)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let text = format!(
        "[iscsi]\nlisten = [\"127.0.0.1:{port}\"]\n[[iscsi.target]]\niqn = \"iqn.2026-12.dls.test:twice\"\nluns = [{{ path = {lun:?} }}]\n"
    );
    (text, port)
}

/// Listeners use SO_REUSEPORT, which would let a second dlsd (same user)
/// join the first one's ports and take half of its clients without a word.
/// It must refuse to start instead, for TFTP and iSCSI alike, and the first
/// must go on serving.
#[test]
fn a_second_dlsd_on_the_same_ports_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (iscsi, _) = iscsi_section(dir.path());
    let server = Server::start("", &iscsi);
    server.put("c.bin", b"still mine");

    let iscsi_only = dir.path().join("iscsi-only.toml");
    std::fs::write(&iscsi_only, format!("[http]\nenabled = false\n{iscsi}")).unwrap();
    for (config, key) in [
        (&server.config_path, "tftp.listen"),
        (&iscsi_only, "iscsi.listen"),
    ] {
        let (ok, text) = run(
            Command::new(env!("CARGO_BIN_EXE_dlsd"))
                .args(["serve", "--config"])
                .arg(config),
            Duration::from_secs(10),
        );
        assert!(!ok, "a second dlsd started on {key}: {text}");
        assert!(
            text.contains(key) && text.contains("already in use"),
            "{key}: {text}"
        );
    }

    let out = server.dir.path().join("out");
    curl_get(&server, "c.bin", None, &out);
    assert_eq!(std::fs::read(&out).unwrap(), b"still mine");
}

/// Starts `dlsd serve --config config` and waits (10 s at most) for it to
/// say it runs; returns it and what it logged.
fn start_again(config: &std::path::Path) -> (std::process::Child, String) {
    let (child, log) = spawn_logged(
        Command::new(env!("CARGO_BIN_EXE_dlsd"))
            .args(["serve", "--config"])
            .arg(config),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline && !log.lock().unwrap().contains("running") {
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = log.lock().unwrap().clone();
    (child, text)
}

/// Sockets in TIME_WAIT (state 06) with local port `port`, from /proc/net/tcp.
fn time_wait_on(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&local) && f[3] == "06"
        })
        .count()
}

/// The check above must not stop a restart: neither one started the moment
/// the old dlsd was told to stop (its listeners close a moment later), nor
/// one that finds the old run's iSCSI connections in TIME_WAIT.
#[test]
fn a_restart_on_the_same_ports_starts() {
    let dir = tempfile::tempdir().unwrap();
    let (iscsi, iscsi_port) = iscsi_section(dir.path());
    let mut first = Server::start("", &iscsi);
    let client = std::net::TcpStream::connect(("127.0.0.1", iscsi_port)).unwrap();
    std::thread::sleep(Duration::from_millis(100));

    // SIGTERM, and at once the next dlsd on the same file.
    send_signal(first.pid(), 15);
    let (mut second, log) = start_again(&first.config_path);
    let started = log.contains("running");
    send_signal(second.id() as i32, 15);
    let _ = second.wait();
    assert!(started, "restart right after SIGTERM did not start:\n{log}");
    assert!(
        first.stop_with(15, Duration::from_secs(10)).is_some(),
        "first dlsd did not exit\n{}",
        first.log()
    );

    // The first dlsd closed the connection when it exited; the client's
    // close now leaves the server side in TIME_WAIT.
    drop(client);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        time_wait_on(iscsi_port) > 0,
        "no TIME_WAIT on port {iscsi_port}: the test would prove nothing"
    );
    let (mut third, log) = start_again(&first.config_path);
    let started = log.contains("running");
    send_signal(third.id() as i32, 15);
    let _ = third.wait();
    assert!(
        started,
        "restart with TIME_WAIT connections did not start:\n{log}"
    );
}
