//! The project's headline test (issue 6): qemu VMs network-boot a real
//! Debian kernel from dlsd alone, through `tests/lab/lab.sh` (private
//! network namespaces, SeaBIOS or OVMF, iPXE, Linux's own iSCSI initiator;
//! see tests/lab/README.md). One scenario at a time, each within a time
//! bound; each asserts the marker on every VM's console, the proof each VM
//! wrote into its own LUN (lab.sh reads it back), and the requests dlsd
//! logged. One peer scenario (dnsmasq + tgt) boots the same image for the
//! side-by-side figure.
//!
//! Needs root (namespaces, taps); lab.sh installs its Debian packages and
//! builds the disk image on first use (cached under ~/.cache/dls-lab).
//! Without root each scenario fails, saying so.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

/// The VMs share two cores: boot them one scenario at a time.
static LAB: Mutex<()> = Mutex::new(());

/// Writes to the test's stderr past libtest's capture (which takes only
/// the print macros), so the timelines and boot times show in the test
/// command's output, as the netboot issue asks, also when the test passes.
fn shown(text: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(text.as_bytes());
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// What one lab.sh run left behind.
struct Run {
    stdout: String,
    work: tempfile::TempDir,
}

impl Run {
    fn dlsd_log(&self) -> String {
        fs::read_to_string(self.work.path().join("dlsd.log")).unwrap_or_default()
    }

    /// The `TIMES MODE vmN: key=value ...` lines, one per VM.
    fn times(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|l| l.starts_with("TIMES "))
            .collect()
    }

    /// Seconds from power-on to the marker on the slowest VM.
    fn marker_secs(&self) -> f64 {
        self.times()
            .iter()
            .map(|l| field(l, "marker").parse::<f64>().expect("marker seconds"))
            .fold(0.0, f64::max)
    }
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

/// Runs `lab.sh MODE`; the VMs get `marker_bound` to print the marker, the
/// whole run (image check, servers, checks) `marker_bound` + 120 s, after
/// which lab.sh gets SIGTERM (it tears its namespaces down on it).
fn lab(mode: &str, marker_bound: Duration) -> Run {
    assert!(
        is_root(),
        "the netboot lab needs root (namespaces, taps, apt-get)"
    );
    let _one_at_a_time = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let work = tempfile::Builder::new()
        .prefix("dls-netboot.")
        .tempdir()
        .expect("tempdir");
    let stdout_path = work.path().join("lab.stdout");
    let started = Instant::now();
    let mut child = Command::new(repo().join("tests/lab/lab.sh"))
        .arg(mode)
        .env("DLSD", env!("CARGO_BIN_EXE_dlsd"))
        .env("LAB_WORK", work.path())
        .env("LAB_TIMEOUT", marker_bound.as_secs().to_string())
        .stdout(fs::File::create(&stdout_path).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run tests/lab/lab.sh");
    let bound = marker_bound + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for lab.sh") {
            break Some(status);
        }
        if started.elapsed() > bound {
            break None;
        }
        thread::sleep(Duration::from_millis(200));
    };
    let Some(status) = status else {
        // lab.sh cleans up on TERM; give it time, then stop it for good.
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(200));
        }
        let _ = child.kill();
        let _ = child.wait();
        let work = work.keep();
        panic!("{mode}: lab.sh still running after {bound:?}; kept {work:?}");
    };
    let stdout = fs::read_to_string(&stdout_path).unwrap_or_default();
    shown(&stdout);
    if !status.success() {
        let work = work.keep();
        panic!("{mode}: lab.sh failed ({status}); work directory kept: {work:?}");
    }
    shown(&format!(
        "{mode}: lab.sh passed in {:.1}s\n",
        started.elapsed().as_secs_f64()
    ));
    Run { stdout, work }
}

/// The checks every dls scenario shares: one PASS line, one TIMES line per
/// VM with each milestone present, and dlsd's log with the requests each
/// VM made (lab.sh checks the same per VM; this catches a lab.sh that
/// stopped checking).
fn assert_dls_boot(run: &Run, mode: &str, vms: usize) {
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with(&format!("PASS {mode}: marker after "))),
        "{mode}: no PASS line"
    );
    let times = run.times();
    assert_eq!(times.len(), vms, "{mode}: TIMES lines {times:?}");
    for line in &times {
        for key in [
            "dhcp_ack",
            "first_tftp",
            "iscsi_login",
            "first_read",
            "root",
            "marker",
        ] {
            let value = field(line, key);
            assert!(
                value.parse::<f64>().is_ok(),
                "{mode}: {key}={value} in {line}"
            );
        }
    }
    let log = run.dlsd_log();
    let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    assert!(
        count(": sent \"boot.ipxe\"") >= vms,
        "{mode}: boot.ipxe not sent to each VM"
    );
    assert!(
        count(": first READ data sent") >= vms,
        "{mode}: no READ per VM"
    );
    assert!(
        count(": first WRITE data received") >= vms,
        "{mode}: no WRITE per VM (the proof)"
    );
    assert_eq!(count("Z ERROR "), 0, "{mode}: dlsd logged errors");
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Power-on to marker, per scenario. An idle 2-core machine boots in
/// 15-60 s; with other builds and benchmarks sharing the cores TCG slows
/// to ~180 s (seen at load 14), so the bound leaves room for that.
const BOUND: Duration = Duration::from_secs(300);

/// BIOS sanboot from dlsd, then the same boot through dnsmasq + tgt and
/// the ratio (one test, so the dls-bios boot serves both).
#[test]
fn bios_sanboot_from_dlsd_and_side_by_side() {
    let run = lab("dls-bios", BOUND);
    assert_dls_boot(&run, "dls-bios", 1);
    side_by_side_bios(&run);
    let log = run.dlsd_log();
    // iPXE's two sessions (probe, then the int13 drive) and Linux's.
    let logins = log
        .lines()
        .filter(|l| l.contains(" logged in (Normal, "))
        .count();
    assert!(
        logins >= 3,
        "dls-bios: {logins} iSCSI logins, expected iPXE's two and Linux's"
    );
}

#[test]
fn uefi_pxe_chainloads_ipxe_then_sanboots() {
    let run = lab("dls-uefi", BOUND);
    assert_dls_boot(&run, "dls-uefi", 1);
    let log = run.dlsd_log();
    assert!(
        log.contains(": sent \"ipxe.efi\", 850528 bytes"),
        "ipxe.efi not sent"
    );
    // The firmware got the binary, iPXE the script: no chainload loop.
    assert!(log.contains(" boot \"ipxe.efi\""), "no ACK with ipxe.efi");
    assert_eq!(
        log.matches(": sent \"ipxe.efi\"").count(),
        1,
        "ipxe.efi sent more than once: a chainload loop"
    );
}

#[test]
fn kernel_and_initrd_over_tftp() {
    let run = lab("dls-kernel", BOUND);
    assert_dls_boot(&run, "dls-kernel", 1);
    let log = run.dlsd_log();
    assert!(log.contains(": sent \"vmlinuz\""), "vmlinuz not sent");
    assert!(log.contains(": sent \"initrd.img\""), "initrd.img not sent");
}

#[test]
fn two_vms_with_reservations_boot_their_own_luns() {
    let run = lab("dls-two-vm", BOUND + secs(120));
    assert_dls_boot(&run, "dls-two-vm", 2);
    let log = run.dlsd_log();
    for (vm, ip) in [(0, "11"), (1, "12")] {
        let line = run.times()[vm];
        assert!(
            field(line, "ip").ends_with(&format!(".{ip}")),
            "vm{vm} did not use its reservation: {line}"
        );
        // Each host's iPXE logged in to its own target, named by its
        // reservation's hostname.
        assert!(
            log.lines().any(
                |l| l.contains(&format!("iqn.2010-04.org.ipxe:vm{vm} logged in"))
                    && l.contains(&format!(".vm{vm})"))
            ),
            "vm{vm} did not log in to its own target"
        );
    }
}

#[test]
fn proxy_dhcp_beside_dnsmasq() {
    let run = lab("dls-proxy", BOUND);
    assert_dls_boot(&run, "dls-proxy", 1);
    let log = run.dlsd_log();
    assert!(
        log.contains("dhcp: proxy Offer to "),
        "no proxyDHCP offer in dlsd's log"
    );
    assert!(
        !log.contains("dhcp: ACK "),
        "dlsd handed out an address in proxy mode"
    );
}

/// The same BIOS boot through dnsmasq + tgt, and the ratio to dlsd's.
fn side_by_side_bios(dls: &Run) {
    let peer = lab("peer-bios", BOUND);
    assert!(peer.stdout.contains("PASS peer-bios: marker after "));
    let (p, d) = (peer.marker_secs(), dls.marker_secs());
    // The guest decompressing its kernel under TCG dominates the total
    // and swings with the host's load, so the total is reported, not held
    // to a bound. The stretches the servers serve (power-on to grub
    // starting Linux; Linux's lease to the marker) must not be slower with
    // dlsd than with the peers by more than the noise.
    let net = |run: &Run| {
        let line = run.times()[0];
        let get = |k| field(line, k).parse::<f64>().unwrap();
        get("loader") + get("root")
    };
    let (dn, pn) = (net(dls), net(&peer));
    shown(&format!(
        "side by side (bios): power-on to marker dls {d:.1}s, peer {p:.1}s (dls/peer {:.2}); \
         served stretches dls {dn:.2}s, peer {pn:.2}s (dls/peer {:.2})\n",
        d / p,
        dn / pn
    ));
    assert!(
        dn <= pn * 1.5 + 1.0,
        "dlsd's stretches ({dn:.2}s) are much slower than the peers' ({pn:.2}s)"
    );
}

#[test]
fn lab_toml_passes_check_config() {
    let dlsd = env!("CARGO_BIN_EXE_dlsd");
    let example = repo().join("deployment/configs/lab.toml");
    let check = |args: &[&Path]| {
        Command::new(dlsd)
            .arg("check-config")
            .args(args)
            .output()
            .expect("run dlsd check-config")
    };

    // This machine is not the lab's server: give the copy a TFTP root.
    let dir = tempfile::tempdir().unwrap();
    let tftp_root = dir.path().join("tftp");
    fs::create_dir(&tftp_root).unwrap();
    let mut text = fs::read_to_string(&example)
        .unwrap()
        .replace("\"/srv/dls/tftp\"", &format!("{tftp_root:?}"));
    let server_copy = dir.path().join("server.toml");
    fs::write(&server_copy, &text).unwrap();

    // Before the volumes exist: everything else is valid.
    let out = check(&[Path::new("--skip-luns"), &server_copy]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for node in ["node01", "node02", "node03"] {
        assert!(printed.contains(&format!("/dev/zvol/tank/dls/{node}")));
    }

    // The script dlsd serves as boot.ipxe sanboots each host's target.
    let out = Command::new(dlsd)
        .args(["ipxe-script", "--config"])
        .arg(&server_copy)
        .output()
        .expect("run dlsd ipxe-script");
    let script = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (mac, node) in [("01", "node01"), ("02", "node02"), ("03", "node03")] {
        assert!(script.contains(&format!("iseq ${{mac}} 52:54:00:20:00:{mac} && goto")));
        assert!(script.contains(&format!(
            "sanboot iscsi:10.20.0.1::::iqn.2026-12.org.example.lab:{node}"
        )));
    }

    // Without the zvols, the full check names the missing one.
    let out = check(&[&server_copy]);
    assert!(!out.status.success(), "check-config opened a missing zvol");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/dev/zvol/tank/dls/node01"), "{err}");

    // With the zvols replaced by image files it passes the full check, so
    // nothing but the paths is specific to the real server.
    for node in ["node01", "node02", "node03"] {
        let image = dir.path().join(node);
        fs::File::create(&image).unwrap().set_len(64 << 20).unwrap();
        text = text.replace(
            &format!("/dev/zvol/tank/dls/{node}"),
            image.to_str().unwrap(),
        );
    }
    let copy = dir.path().join("lab.toml");
    fs::write(&copy, text).unwrap();
    let out = check(&[&copy]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
