//! libiscsi's conformance suite `iscsi-test-cu` (Debian libiscsi-bin)
//! against dlsd on loopback: the suites of every SCSI command dls implements
//! on a scratch writable file LUN, and the ReadOnly suite on a read-only one.
//!
//! CUnit counts a skipped test as passed, so the output is parsed here: no
//! test may fail, and a test that skips must be in [`EXPECTED_SKIPS`] with
//! the reason. The counts are printed for the README (`--nocapture`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{iscsi_target, iscsi_url, require_libiscsi, tool, IscsiSetup, ISCSI_DISK0 as DISK0};

// libiscsi's conformance suite

/// The suites of the commands dls implements (`iscsi-test-cu --list`).
/// Debian's libiscsi 1.19 has no SynchronizeCache or ReportLUNs suite.
const SUITES: &[&str] = &[
    "TestUnitReady",
    "Inquiry",
    "ReadCapacity10",
    "ReadCapacity16",
    "Read6",
    "Read10",
    "Read12",
    "Read16",
    "Write10",
    "Write12",
    "Write16",
    "WriteVerify10",
    "WriteVerify12",
    "WriteVerify16",
    "Verify10",
    "Verify12",
    "Verify16",
    "WriteSame10",
    "WriteSame16",
    "Unmap",
    "ModeSense6",
    "Prefetch10",
    "Prefetch16",
    "StartStopUnit",
    "ReportSupportedOpcodes",
    "NoMedia",
    "Mandatory",
    "iSCSIcmdsn",
    "iSCSIResiduals",
    "iSCSITMF",
    "iSCSIdatasn",
];

/// Tests that print `[SKIPPED]` against dls, how many times, and why. Each
/// is a consequence of what dls declares, not a missing command. A test that
/// skips and is not listed here, or skips more often, fails the run.
const EXPECTED_SKIPS: &[(&str, usize, &str)] = &[
    (
        "StartStopUnit.Simple",
        1,
        "RMB=0: LOEJ only applies to removable media",
    ),
    (
        "WriteSame10.ZeroBlocks",
        1,
        "WSNZ=1 in VPD B0: a 0-block WRITE SAME is refused, as declared",
    ),
    ("WriteSame16.ZeroBlocks", 1, "WSNZ=1, as above"),
    (
        "WriteSame10.UnmapUnaligned",
        1,
        "LBPPB exponent 0: one logical block per physical block",
    ),
    ("WriteSame16.UnmapUnaligned", 1, "LBPPB exponent 0"),
    ("WriteSame10.InvalidDataOutSize", 1, "LBPPB exponent 0"),
    ("WriteSame16.InvalidDataOutSize", 1, "LBPPB exponent 0"),
    (
        "ReadOnly.ReadOnlySBC",
        4,
        "its COMPARE AND WRITE and ORWRITE checks: neither is implemented",
    ),
];

/// What one `iscsi-test-cu` run printed.
#[derive(Debug, Default)]
struct CuRun {
    total: usize,
    ran: usize,
    passed: usize,
    failed: usize,
    suites: BTreeSet<String>,
    /// `Suite.Test` -> `[SKIPPED]` lines printed while that test ran.
    skips: BTreeMap<String, usize>,
    /// `[SKIPPED]` lines printed between tests (suite set-up: libiscsi probes
    /// PERSISTENT RESERVE IN once per suite); they skip no test.
    between: usize,
}

impl CuRun {
    /// Reads CUnit's basic-mode output. A test runs from `  Test: NAME ...`
    /// to CUnit's verdict `passed` or `FAILED` (libiscsi's own messages say
    /// `[FAILED]`, in brackets), which may be lines later.
    fn parse(out: &str) -> CuRun {
        let mut run = CuRun::default();
        let mut suite = String::new();
        let mut current: Option<String> = None;
        for line in out.lines() {
            if let Some(s) = line.strip_prefix("Suite: ") {
                suite = s.trim().to_owned();
                run.suites.insert(suite.clone());
                current = None;
                continue;
            }
            let mut rest = line;
            if let Some(t) = line.strip_prefix("  Test: ") {
                let (name, after) = t.split_once(" ...").unwrap_or((t, ""));
                current = Some(format!("{suite}.{}", name.trim()));
                rest = after;
            }
            let verdict = verdict_at(rest);
            let (inside, after) = rest.split_at(verdict.unwrap_or(rest.len()));
            let n = inside.matches("[SKIPPED]").count();
            match &current {
                Some(t) if n > 0 => *run.skips.entry(t.clone()).or_default() += n,
                Some(_) => {}
                None => run.between += n,
            }
            if verdict.is_some() {
                current = None;
                run.between += after.matches("[SKIPPED]").count();
            }
            if line.trim_start().starts_with("tests ") {
                let n: Vec<usize> = line
                    .split_whitespace()
                    .skip(1)
                    .filter_map(|w| w.parse().ok())
                    .collect();
                if let [total, ran, passed, failed, ..] = n[..] {
                    (run.total, run.ran, run.passed, run.failed) = (total, ran, passed, failed);
                }
            }
        }
        run
    }

    fn skipped_tests(&self) -> usize {
        self.skips.len()
    }

    fn skip_lines(&self) -> usize {
        self.skips.values().sum()
    }

    /// Fails on any failure, on a run that ran nothing, on a missing suite,
    /// or on a skip beyond [`EXPECTED_SKIPS`].
    fn check(&self, what: &str, suites: &[&str], out: &str) {
        assert!(
            self.ran > 0 && self.ran == self.total,
            "{what}: ran {} of {} tests:\n{out}",
            self.ran,
            self.total
        );
        assert_eq!(self.failed, 0, "{what}: failures:\n{out}");
        assert_eq!(self.passed, self.ran, "{what}:\n{out}");
        for s in suites {
            assert!(self.suites.contains(*s), "{what}: suite {s} did not run");
        }
        for (test, &n) in &self.skips {
            let expected = EXPECTED_SKIPS.iter().find(|(t, _, _)| t == test);
            match expected {
                Some((_, max, _)) => assert!(
                    n <= *max,
                    "{what}: {test} skipped {n} checks, expected at most {max}:\n{out}"
                ),
                None => panic!("{what}: {test} newly skips ({n} lines):\n{out}"),
            }
        }
        let lines = out.matches("[SKIPPED]").count();
        println!(
            "iscsi-test-cu {what}: {} tests, {} passed, {} failed; {} tests skip \
             something ({} [SKIPPED] lines in tests, {} between tests, {lines} in all): {:?}",
            self.ran,
            self.passed,
            self.failed,
            self.skipped_tests(),
            self.skip_lines(),
            self.between,
            self.skips
        );
        for test in self.skips.keys() {
            if let Some((_, _, why)) = EXPECTED_SKIPS.iter().find(|(t, _, _)| t == test) {
                println!("  {test}: {why}");
            }
        }
    }
}

/// Where CUnit's verdict starts in `s`: `passed`, or `FAILED` not inside
/// libiscsi's `[FAILED]`.
fn verdict_at(s: &str) -> Option<usize> {
    let passed = s.find("passed");
    let failed = s
        .match_indices("FAILED")
        .find(|(i, _)| !s[..*i].ends_with('['))
        .map(|(i, _)| i);
    match (passed, failed) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[test]
fn conformance_suites_pass_on_writable_and_read_only_luns() {
    require_libiscsi();
    let setup = IscsiSetup::fresh();
    let scratch = setup.sparse("scratch.img", 64 << 20);
    let ro = setup.sparse("ro.img", 16 << 20);
    let targets = iscsi_target(DISK0, &[(&scratch, false)], "")
        + &iscsi_target("iqn.2026-01.example:ro", &[(&ro, true)], "");
    let (_server, portal) = setup.start("", &targets);
    let started = Instant::now();

    let list: Vec<String> = SUITES.iter().map(|s| format!("ALL.{s}")).collect();
    let (_, out) = tool(
        "iscsi-test-cu",
        &["-d", "-t", &list.join(","), &iscsi_url(&portal, DISK0, 0)],
    );
    CuRun::parse(&out).check("writable file LUN", SUITES, &out);

    let (_, out) = tool(
        "iscsi-test-cu",
        &[
            "-d",
            "-t",
            "ALL.ReadOnly",
            &iscsi_url(&portal, "iqn.2026-01.example:ro", 0),
        ],
    );
    CuRun::parse(&out).check("read-only LUN", &["ReadOnly"], &out);
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "the suites took {:?}",
        started.elapsed()
    );
}

#[test]
fn cunit_output_parser_counts_skips_per_test() {
    let out = r#"    [SKIPPED] PERSISTENT RESERVE IN is not implemented.
Suite: WriteSame16
  Test: Simple ...passed
  Test: ZeroBlocks ...    [SKIPPED] WRITESAME16 does not support 0-blocks.
passed
  Test: Bad ...    [FAILED] WRITE10 command failed
FAILED
    1. x.c:1  - 0
  Test: Last ...passed    [SKIPPED] PERSISTENT RESERVE IN is not implemented.

Run Summary:    Type  Total    Ran Passed Failed Inactive
              suites      1      1    n/a      0        0
               tests      4      4      3      1        0
"#;
    let r = CuRun::parse(out);
    assert_eq!((r.total, r.ran, r.passed, r.failed), (4, 4, 3, 1));
    assert_eq!(r.between, 2);
    assert_eq!(r.skips.len(), 1);
    assert_eq!(r.skips["WriteSame16.ZeroBlocks"], 1);
}
