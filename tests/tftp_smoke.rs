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

/// CPU time (user + system) of a process, from /proc/PID/stat.
fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// Workers poll without sleeping for `engine.busy_poll` after work; once the
/// transfers are over they must go back to sleep, not spin on an idle box.
#[test]
fn idle_workers_sleep_after_a_transfer() {
    let server = Server::start("", "");
    let data = pattern(4 << 20, 2);
    server.put("b.bin", &data);
    let out = server.dir.path().join("out");
    let url = format!("tftp://127.0.0.1:{}/b.bin", server.port());
    let (ok, text) = run(
        Command::new("curl")
            .args(["-sS", "--tftp-blksize", "1432", "-o"])
            .arg(&out)
            .arg(&url),
        Duration::from_secs(60),
    );
    assert!(ok, "curl: {text}\n{}", server.log());
    assert_eq!(sha256_file(&out), sha256(&data));
    // The transfer's last timers (lingering for a lost final ACK) end well
    // within this.
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_time(server.pid());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_time(server.pid()) - before;
    // A worker that kept spinning would use about 2 s here.
    assert!(
        used < Duration::from_millis(100),
        "dlsd used {used:?} of CPU in 2 s with nothing to do\n{}",
        server.log()
    );
}
