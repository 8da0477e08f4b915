//! The boot-storm harness end to end, small: `PERF_QUICK=1 perf/storm.sh`
//! runs `dls-bench storm` (DHCP relayed, TFTP of the iPXE binary and
//! script, iSCSI login and read, every byte of the TFTP files compared)
//! against dlsd with one and two workers and against dnsmasq + tgt, in
//! namespaces the script makes and removes. The script fails when any
//! machine of any storm fails a phase; here every row it wrote is checked
//! too, so a storm that quietly did nothing cannot pass.

mod common;

use std::process::Command;
use std::time::Duration;

use common::run;

#[test]
fn quick_storm_against_dls_and_the_peer_stack() {
    // Not root: the script says so and exits 1, which fails the test.
    let out = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/perf/storm.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(script)
        .arg(out.path())
        .env("PERF_QUICK", "1")
        .env("DLSD", env!("CARGO_BIN_EXE_dlsd"))
        .env("DLS_BENCH", env!("CARGO_BIN_EXE_dls-bench"));
    let (ok, text) = run(&mut cmd, Duration::from_secs(240));
    assert!(ok, "perf/storm.sh failed:\n{text}");

    let rows = std::fs::read_to_string(out.path().join("rows.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = rows
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (server, workers) in [("dls", Some(1)), ("dls", Some(2)), ("dnsmasq+tgt", None)] {
        let of = |metric: &str| {
            rows.iter()
                .find(|r| {
                    r["server"] == server
                        && r["metric"] == metric
                        && r["workers"].as_u64() == workers
                })
                .and_then(|r| r["value"].as_f64())
                .unwrap_or_else(|| panic!("no {metric} row for {server} {workers:?}:\n{text}"))
        };
        assert_eq!(of("failed"), 0.0, "{server}: {text}");
        assert!(of("seconds") > 0.0, "{server}: {text}");
        assert!(of("peak_rss_MiB") > 0.0, "{server}: {text}");
        for phase in [
            "dhcp",
            "tftp_binary",
            "tftp_script",
            "iscsi_login",
            "iscsi_read",
        ] {
            assert!(
                of(&format!("{phase}_p99_ms")) > 0.0,
                "{server} {phase}: {text}"
            );
        }
    }
}
