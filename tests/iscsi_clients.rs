//! The iSCSI target against real initiators: libiscsi's tools `iscsi-ls`,
//! `iscsi-inq`, `iscsi-readcapacity16` (Debian libiscsi-bin) and qemu's
//! iscsi block driver through `qemu-img` and `qemu-io` (qemu-utils,
//! qemu-block-extra). This kernel has no SCSI layer, so every initiator is
//! userspace. Discovery and ACLs, VPD pages, capacity, byte-identical
//! copies, CHAP one-way and mutual, backing stores (sparse file, a loop
//! device standing in for a zvol, broken paths) and writes that must reach
//! the backing file.
//!
//! Everything listens on 127.0.0.1. Each test starts its own dlsd with its
//! LUN images in the server's private directory.

mod common;

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    free_tcp_port, iscsi_target, iscsi_url, pattern, require_libiscsi, require_tool, sha256,
    sha256_file, tool, tool_ok, IscsiSetup, ISCSI_DISK0 as DISK0,
};

fn require_qemu() {
    require_tool("qemu-img", "qemu-utils");
    require_tool("qemu-io", "qemu-utils");
    // Debian builds qemu's iscsi driver as a module of its own package.
    let driver = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .any(|d| d.path().join("qemu/block-iscsi.so").is_file());
    assert!(
        driver,
        "qemu's iscsi driver (block-iscsi.so) not found: install the Debian package \
         `qemu-block-extra` (tests/run.sh does)"
    );
}

/// Copies a LUN to a file with qemu's iscsi driver and returns the sha256.
fn qemu_copy(lun_url: &str, out: &Path) -> String {
    let (ok, text) = tool(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            lun_url,
            out.to_str().unwrap(),
        ],
    );
    assert!(ok, "qemu-img convert {lun_url} failed:\n{text}");
    sha256_file(out)
}

// ---------------------------------------------------------------------------
// Discovery, INQUIRY, capacity, copies

/// `(target, portal)` of every `Target:` line of `iscsi-ls`.
fn listed(out: &str) -> BTreeSet<(String, String)> {
    out.lines()
        .filter_map(|l| l.strip_prefix("Target:"))
        .filter_map(|l| l.split_once(" Portal:"))
        .map(|(t, p)| (t.trim().to_owned(), p.trim().to_owned()))
        .collect()
}

#[test]
fn libiscsi_tools_and_qemu_see_targets_vpd_capacity_and_data() {
    require_libiscsi();
    require_qemu();
    let setup = IscsiSetup::fresh();
    // BC-17: 2048 blocks and a partial tail block that must not show.
    let small = pattern(1_048_600, 17);
    let big = pattern((5 << 20) + 4096, 18);
    let small_path = setup.image("small.img", &small);
    let big_path = setup.image("big.img", &big);
    let acl_path = setup.sparse("acl.img", 1 << 20);
    let work = setup.dir.path().to_owned();
    let acl_iqn = "iqn.2026-01.example:acl";
    let allowed = "iqn.2026-01.example:allowed";
    let targets = iscsi_target(DISK0, &[(&small_path, false), (&big_path, true)], "")
        + &iscsi_target(
            acl_iqn,
            &[(&acl_path, false)],
            &format!("initiators = [\"{allowed}\"]"),
        );
    let (_server, portal) = setup.start("", &targets);
    let base = format!("iscsi://{portal}");
    let tpgt = format!("{portal},1");

    // Discovery: exactly the targets this initiator may see, with the portal.
    let out = tool_ok("iscsi-ls", &["-s", &base]);
    let want: BTreeSet<_> = [(DISK0.to_owned(), tpgt.clone())].into();
    assert_eq!(listed(&out), want, "{out}");
    let luns = out.lines().filter(|l| l.starts_with("Lun:")).count();
    assert_eq!(luns, 2, "{out}");
    let out = tool_ok("iscsi-ls", &["-s", "-i", allowed, &base]);
    let want: BTreeSet<_> = [
        (DISK0.to_owned(), tpgt.clone()),
        (acl_iqn.to_owned(), tpgt.clone()),
    ]
    .into();
    assert_eq!(listed(&out), want, "{out}");
    let out = tool_ok("iscsi-ls", &["-i", "iqn.2026-01.example:other", &base]);
    let want: BTreeSet<_> = [(DISK0.to_owned(), tpgt.clone())].into();
    assert_eq!(listed(&out), want, "{out}");

    // The ACL refuses the login with an authorization failure (0x0202).
    let acl_url = iscsi_url(&portal, acl_iqn, 0);
    let (ok, out) = tool("iscsi-inq", &["-i", "iqn.2026-01.example:other", &acl_url]);
    assert!(!ok && out.contains("Authorization failure"), "{out}");
    let out = tool_ok("iscsi-inq", &["-i", allowed, &acl_url]);
    assert!(out.contains("DIRECT_ACCESS"), "{out}");

    // INQUIRY: standard data and VPD pages 00, 80, 83 (BC-25).
    let lun0 = iscsi_url(&portal, DISK0, 0);
    let out = tool_ok("iscsi-inq", &[&lun0]);
    for want in [
        "Peripheral Device Type:DIRECT_ACCESS",
        "Removable:0",
        "Vendor:DLS",
    ] {
        assert!(out.contains(want), "no {want:?} in:\n{out}");
    }
    let out = tool_ok("iscsi-inq", &["-e", "1", "-c", "0", &lun0]);
    let pages: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("Page:"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(pages.len() >= 3, "{out}");
    assert_eq!(&pages[..3], ["0x00", "0x80", "0x83"], "{out}");
    let mut sorted = pages.clone();
    sorted.sort();
    assert_eq!(pages, sorted, "VPD page list must ascend:\n{out}");
    let out = tool_ok("iscsi-inq", &["-e", "1", "-c", "128", &lun0]);
    let serial = out
        .split_once("Unit Serial Number:[")
        .and_then(|(_, s)| s.split_once(']'))
        .map(|(s, _)| s.trim())
        .unwrap_or_default();
    assert!(!serial.is_empty(), "{out}");
    let out = tool_ok("iscsi-inq", &["-e", "1", "-c", "131", &lun0]);
    assert!(out.contains(&format!("Designator:[{DISK0}]")), "{out}");
    assert!(out.contains("SCSI_NAME_STRING"), "{out}");
    // Page 86h is not implemented: ILLEGAL REQUEST, INVALID FIELD IN CDB.
    let (ok, out) = tool("iscsi-inq", &["-e", "1", "-c", "134", &lun0]);
    assert!(!ok && out.contains("INVALID_FIELD_IN_CDB"), "{out}");

    // Capacity: the last LBA, not the count; the partial block is hidden.
    let out = tool_ok("iscsi-readcapacity16", &[&lun0]);
    assert!(out.contains("RETURNED LOGICAL BLOCK ADDRESS:2047"), "{out}");
    assert!(out.contains("LOGICAL BLOCK LENGTH IN BYTES:512"), "{out}");
    let out = tool_ok(
        "iscsi-readcapacity16",
        &["-s", &iscsi_url(&portal, DISK0, 1)],
    );
    assert_eq!(out.trim(), big.len().to_string(), "{out}");

    // qemu's driver copies both LUNs byte for byte.
    let got = qemu_copy(&lun0, &work.join("copy0.raw"));
    assert_eq!(got, sha256(&small[..1_048_576]), "LUN 0 copy differs");
    let got = qemu_copy(&iscsi_url(&portal, DISK0, 1), &work.join("copy1.raw"));
    assert_eq!(got, sha256(&big), "LUN 1 copy differs");
}

// ---------------------------------------------------------------------------
// CHAP

#[test]
fn chap_accepts_the_right_secret_only_and_mutual_chap_proves_the_target() {
    require_libiscsi();
    let setup = IscsiSetup::fresh();
    let lun = setup.sparse("chap.img", 1 << 20);
    let one_way = "iqn.2026-01.example:chap";
    let mutual = "iqn.2026-01.example:mutual";
    let chap = "chap = { user = \"u\", secret = \"twelve-bytes\" }";
    let targets = iscsi_target(one_way, &[(&lun, true)], chap)
        + &iscsi_target(
            mutual,
            &[(&lun, true)],
            &format!("{chap}\nmutual_chap = {{ user = \"t\", secret = \"target-secret\" }}"),
        );
    let (server, portal) = setup.start("", &targets);
    let with =
        |creds: &str, iqn: &str, query: &str| format!("iscsi://{creds}{portal}/{iqn}/0{query}");

    for iqn in [one_way, mutual] {
        let out = tool_ok("iscsi-inq", &[&with("u%twelve-bytes@", iqn, "")]);
        assert!(out.contains("DIRECT_ACCESS"), "{iqn}: {out}");
        for creds in ["u%wrong-secret@", "", "v%twelve-bytes@"] {
            let (ok, out) = tool("iscsi-inq", &[&with(creds, iqn, "")]);
            assert!(
                !ok && out.contains("Authentication failure"),
                "{iqn} with {creds:?} must be refused (0x0201):\n{out}"
            );
        }
    }

    // Mutual CHAP: libiscsi takes the target's credentials as URL arguments
    // and checks the target's CHAP_R against them.
    let right = with(
        "u%twelve-bytes@",
        mutual,
        "?target_user=t&target_password=target-secret",
    );
    let out = tool_ok("iscsi-inq", &[&right]);
    assert!(out.contains("DIRECT_ACCESS"), "{out}");
    let wrong = with(
        "u%twelve-bytes@",
        mutual,
        "?target_user=t&target_password=not-the-secret",
    );
    let (ok, out) = tool("iscsi-inq", &[&wrong]);
    assert!(
        !ok && out.contains("Invalid CHAP_R"),
        "the initiator must catch a target proving the wrong secret:\n{out}"
    );
    // The target never logs a secret.
    let log = server.log();
    assert!(
        !log.contains("twelve-bytes") && !log.contains("target-secret"),
        "{log}"
    );
}

// ---------------------------------------------------------------------------
// Backing stores and writes

/// A loop device over a file, detached on drop (also on panic).
struct LoopDevice {
    path: String,
}

impl LoopDevice {
    fn attach(file: &Path) -> LoopDevice {
        require_tool("losetup", "mount");
        let out = tool_ok("losetup", &["-f", "--show", file.to_str().unwrap()]);
        let path = out.trim().to_owned();
        assert!(path.starts_with("/dev/loop"), "losetup said {out:?}");
        LoopDevice { path }
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.path]).status();
    }
}

#[test]
fn sparse_file_and_loop_device_stores_serve_the_right_bytes() {
    require_libiscsi();
    require_qemu();
    let setup = IscsiSetup::fresh();
    let sparse = setup.sparse("sparse.img", 64 << 20);
    let image = pattern(6 << 20, 4);
    let backing = setup.image("zvol.img", &image);
    let work = setup.dir.path().to_owned();
    let dev = LoopDevice::attach(&backing);
    let targets = iscsi_target(DISK0, &[(&sparse, false)], "")
        + &iscsi_target(
            "iqn.2026-01.example:zvol",
            &[(Path::new(&dev.path), false)],
            "",
        );
    let (_server, portal) = setup.start("", &targets);

    // A fresh sparse file: its whole size, all zeros, still sparse after.
    let lun = iscsi_url(&portal, DISK0, 0);
    let out = tool_ok("iscsi-readcapacity16", &["-s", &lun]);
    assert_eq!(out.trim(), (64u64 << 20).to_string());
    let got = qemu_copy(&lun, &work.join("sparse.raw"));
    assert_eq!(got, sha256(&vec![0u8; 64 << 20]));
    let blocks = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&sparse).unwrap());
    assert!(
        blocks < 1024,
        "reading allocated the sparse file ({blocks} blocks)"
    );

    // The block device: size from BLKGETSIZE64, the bytes of its file.
    let zvol = iscsi_url(&portal, "iqn.2026-01.example:zvol", 0);
    let out = tool_ok("iscsi-readcapacity16", &["-s", &zvol]);
    assert_eq!(out.trim(), image.len().to_string());
    let got = qemu_copy(&zvol, &work.join("zvol.raw"));
    assert_eq!(got, sha256(&image), "loop device copy differs");

    // A FUA write and a flush through the device reach its file.
    tool_ok(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -f -P 0x5a 1048576 65536",
            "-c",
            "flush",
            &zvol,
        ],
    );
    let now = std::fs::read(&backing).unwrap();
    assert!(now[1 << 20..(1 << 20) + 65536].iter().all(|&b| b == 0x5a));
    assert_eq!(now[..1 << 20], image[..1 << 20]);
    assert_eq!(now[(1 << 20) + 65536..], image[(1 << 20) + 65536..]);
}

/// Runs `dlsd serve` on `config` and returns (exit code, stderr).
fn serve_once(config: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dlsd"))
        .args(["serve", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dlsd");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status.code(), err);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("dlsd kept running with a broken backing store");
}

#[test]
fn missing_or_unusable_store_stops_start_up_naming_key_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such.img");
    let good = dir.path().join("good.img");
    std::fs::File::create(&good)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let tiny = dir.path().join("tiny.img");
    std::fs::write(&tiny, [0u8; 511]).unwrap();
    // Read-only, so that the directory opens and is refused for its type.
    let cases = [
        (missing.clone(), "iscsi.target[1].luns[1]", "No such file"),
        (
            dir.path().to_owned(),
            "iscsi.target[1].luns[1]",
            "not a regular file",
        ),
        (
            tiny.clone(),
            "iscsi.target[1].luns[1]",
            "smaller than one 512-byte block",
        ),
    ];
    for (bad, key, reason) in cases {
        let config = dir.path().join("dls.toml");
        let targets = iscsi_target(DISK0, &[(&good, false)], "")
            + &iscsi_target("iqn.2026-01.example:b", &[(&good, false), (&bad, true)], "");
        let text = format!(
            "[engine]\nworkers = 1\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [iscsi]\nlisten = [\"127.0.0.1:{}\"]\n{targets}",
            free_tcp_port()
        );
        std::fs::write(&config, text).unwrap();
        let (code, err) = serve_once(&config);
        assert_eq!(code, Some(1), "{err}");
        let path = bad.to_str().unwrap();
        assert!(
            err.contains(key) && err.contains(path) && err.contains(reason),
            "stderr must name {key}, {path} and {reason:?}:\n{err}"
        );
    }
}

#[test]
fn writes_through_qemu_reach_the_backing_file() {
    require_qemu();
    let setup = IscsiSetup::fresh();
    let lun_path = setup.sparse("w.img", 8 << 20);
    // Pattern data with a zeroed megabyte, which qemu may send as zeroes.
    let mut src = pattern(8 << 20, 5);
    src[2 << 20..3 << 20].fill(0);
    let src_path = setup.image("src.img", &src);
    let (_server, portal) = setup.start("", &iscsi_target(DISK0, &[(&lun_path, false)], ""));
    let lun = iscsi_url(&portal, DISK0, 0);

    let (ok, out) = tool(
        "qemu-img",
        &[
            "convert",
            "-n",
            "-f",
            "raw",
            "-O",
            "raw",
            src_path.to_str().unwrap(),
            &lun,
        ],
    );
    assert!(ok, "qemu-img convert into the LUN failed:\n{out}");
    assert_eq!(sha256_file(&lun_path), sha256(&src), "the file differs");

    // Plain, FUA and zero writes, a discard, then read back over iSCSI.
    tool_ok(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-d",
            "unmap",
            "-c",
            "write -P 0xa5 4096 131072",
            "-c",
            "write -f -P 0x3c 1048576 512",
            "-c",
            "write -z 4194304 1048576",
            "-c",
            "discard 6291456 1048576",
            "-c",
            "read -P 0xa5 4096 131072",
            "-c",
            "flush",
            &lun,
        ],
    );
    src[4096..4096 + 131072].fill(0xa5);
    src[1 << 20..(1 << 20) + 512].fill(0x3c);
    src[4 << 20..5 << 20].fill(0);
    src[6 << 20..7 << 20].fill(0);
    let file = std::fs::read(&lun_path).unwrap();
    assert_eq!(file.len(), src.len());
    if let Some(at) = file.iter().zip(&src).position(|(a, b)| a != b) {
        panic!("the file differs first at byte {at}");
    }
}
