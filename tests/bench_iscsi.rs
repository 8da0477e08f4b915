//! `dls-bench iscsi` against dlsd: writes of a known pattern must land in
//! the backing file byte for byte, a mixed random run must report non-zero
//! figures and no failures while every read is compared with the pattern,
//! and a wrong expectation must be reported as a failure (the check can fail).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{iscsi_target, pattern, run, sha256, sha256_file, IscsiSetup};

const IQN: &str = "iqn.2026-12.org.example:bench";
const LUN_LEN: usize = 16 << 20;

fn bench(portal: &str, args: &[&str]) -> (bool, String) {
    run(
        Command::new(env!("CARGO_BIN_EXE_dls-bench"))
            .args(["iscsi", "--portal", portal, "--target", IQN])
            .args(args),
        Duration::from_secs(60),
    )
}

fn json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn written_pattern_lands_and_mixed_load_reads_it_back() {
    let setup = IscsiSetup::fresh();
    let lun = setup.sparse("lun.img", LUN_LEN as u64);
    let expected = pattern(LUN_LEN, 7);
    let data = setup.dir.path().join("expected.bin");
    std::fs::write(&data, &expected).unwrap();
    let out = setup.dir.path().join("mixed.json");
    let (server, portal) = setup.start("", &iscsi_target(IQN, &[(&lun, false)], ""));
    let data_arg = data.to_str().unwrap();

    // 32 commands of 512 KiB walk the whole LUN once: beyond the
    // FirstBurstLength the target declares, so R2Ts are exercised too.
    let (ok, text) = bench(
        &portal,
        &[
            "--pattern",
            "seq",
            "--write-percent",
            "100",
            "--block-size",
            "512k",
            "--ios",
            "32",
            "--queue-depth",
            "4",
            "--data",
            data_arg,
        ],
    );
    assert!(ok, "seq write: {text}\n{}", server.log());
    assert_eq!(
        sha256_file(&lun),
        sha256(&expected),
        "the LUN file differs from what was written"
    );

    let (ok, text) = bench(
        &portal,
        &[
            "--sessions",
            "4",
            "--queue-depth",
            "16",
            "--write-percent",
            "30",
            "--duration",
            "1s",
            "--data",
            data_arg,
            "--json",
            out.to_str().unwrap(),
        ],
    );
    assert!(ok, "mixed: {text}\n{}", server.log());
    let r = json(&out);
    assert_eq!(r["failures"], 0, "{r}");
    assert!(
        r["reads"].as_u64().unwrap() > 0 && r["writes"].as_u64().unwrap() > 0,
        "{r}"
    );
    assert!(
        r["iops"].as_f64().unwrap() > 0.0 && r["mb_per_s"].as_f64().unwrap() > 0.0,
        "{r}"
    );
    assert!(r["latency_us"]["p99"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(
        sha256_file(&lun),
        sha256(&expected),
        "mixed writes changed the pattern"
    );
}

#[test]
fn a_read_that_differs_from_the_expectation_is_a_failure() {
    let setup = IscsiSetup::fresh();
    let lun = setup.image("lun.img", &pattern(1 << 20, 1));
    let wrong = setup.dir.path().join("wrong.bin");
    std::fs::write(&wrong, pattern(1 << 20, 2)).unwrap();
    let out = setup.dir.path().join("r.json");
    let (server, portal) = setup.start("", &iscsi_target(IQN, &[(&lun, true)], ""));
    let (ok, text) = bench(
        &portal,
        &[
            "--ios",
            "64",
            "--data",
            wrong.to_str().unwrap(),
            "--json",
            out.to_str().unwrap(),
        ],
    );
    assert!(!ok, "a mismatch went unnoticed: {text}\n{}", server.log());
    let r = json(&out);
    assert!(r["failures"].as_u64().unwrap() >= 64, "{r}");
    assert!(
        r["failure_reasons"][0]
            .as_str()
            .unwrap()
            .contains("data mismatch"),
        "{r}"
    );
}

/// Small reads leave copied behind their header, large ones by sendfile,
/// and `read_path = "pread"` reads everything: each is compared byte for
/// byte with the LUN file.
#[test]
fn every_read_path_serves_the_lun_bytes() {
    for read_path in ["sendfile", "pread"] {
        let setup = IscsiSetup::fresh();
        let bytes = pattern(8 << 20, 3);
        let lun = setup.image("lun.img", &bytes);
        let copy = setup.dir.path().join("copy.bin");
        std::fs::write(&copy, &bytes).unwrap();
        let settings = format!("read_path = \"{read_path}\"");
        let (server, portal) = setup.start(&settings, &iscsi_target(IQN, &[(&lun, true)], ""));
        for bs in ["4k", "32k", "36k", "1m"] {
            let (ok, text) = bench(
                &portal,
                &[
                    "--block-size",
                    bs,
                    "--ios",
                    "400",
                    "--data",
                    copy.to_str().unwrap(),
                ],
            );
            assert!(ok, "{read_path} {bs}: {text}\n{}", server.log());
        }
    }
}
