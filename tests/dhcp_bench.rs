//! `dls-bench dhcp` against the real `dlsd`: a few hundred relayed
//! DISCOVER/OFFER/REQUEST/ACK exchanges in a lab of two namespaces made
//! here, then the same clients again, then a server that is not there.
//! What the bench reports is checked against what dlsd says it leased
//! (/metrics), so neither can be wrong alone.
//!
//! Needs root, iproute2 and curl; the namespaces carry this test's PID and
//! are deleted on drop, dlsd is stopped by its PID (tests/common).

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{require_tool, run, Server};

const NET: u8 = 213;

/// Two namespaces joined by a veth pair: the server end holds 10.NET.0.1/16,
/// the client end 10.NET.0.2/16 (the relay address).
struct Lab {
    srv: String,
    cli: String,
    srv_if: String,
}

impl Lab {
    fn new() -> Lab {
        require_tool("ip", "iproute2");
        let id = std::process::id() % 100_000;
        let lab = Lab {
            srv: format!("dls-db-{id}-s"),
            cli: format!("dls-db-{id}-c"),
            srv_if: format!("dbs{id}"),
        };
        let cli_if = format!("dbc{id}");
        let (srv_cidr, cli_cidr) = (format!("10.{NET}.0.1/16"), format!("10.{NET}.0.2/16"));
        let steps: [&[&str]; 8] = [
            &["netns", "add", &lab.srv],
            &["netns", "add", &lab.cli],
            &["-n", &lab.srv, "link", "set", "lo", "up"],
            &["-n", &lab.cli, "link", "set", "lo", "up"],
            &[
                "link",
                "add",
                &lab.srv_if,
                "netns",
                &lab.srv,
                "type",
                "veth",
                "peer",
                "name",
                &cli_if,
                "netns",
                &lab.cli,
            ],
            &["-n", &lab.srv, "addr", "add", &srv_cidr, "dev", &lab.srv_if],
            &["-n", &lab.cli, "addr", "add", &cli_cidr, "dev", &cli_if],
            &["-n", &lab.srv, "link", "set", &lab.srv_if, "up"],
        ];
        for step in steps {
            ip(step);
        }
        ip(&["-n", &lab.cli, "link", "set", &cli_if, "up"]);
        lab
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.cli, &self.srv] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `dls-bench dhcp` in the client namespace; its exit success and JSON.
fn bench(lab: &Lab, dir: &Path, name: &str, args: &[&str]) -> (bool, serde_json::Value) {
    let json = dir.join(format!("{name}.json"));
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        &lab.cli,
        env!("CARGO_BIN_EXE_dls-bench"),
        "dhcp",
    ])
    .args(["--server", &format!("10.{NET}.0.1")])
    .args(["--relay", &format!("10.{NET}.0.2")])
    .args(args)
    .arg("--json")
    .arg(&json);
    let (ok, out) = run(&mut cmd, Duration::from_secs(60));
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| panic!("{name}: {e}\n{out}"));
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
    (ok, value)
}

/// A counter from dlsd's /metrics, fetched with curl inside the namespace.
fn metric(lab: &Lab, server: &Server, name: &str) -> f64 {
    let log = server.log();
    let port = log
        .lines()
        .find_map(|l| l.split("http: listening on 127.0.0.1:").nth(1))
        .and_then(|p| p.trim().parse::<u16>().ok())
        .unwrap_or_else(|| panic!("no HTTP port in the log:\n{log}"));
    let mut curl = Command::new("ip");
    curl.args(["netns", "exec", &lab.srv, "curl", "-sS", "--max-time", "5"])
        .arg(format!("http://127.0.0.1:{port}/metrics"));
    let (ok, text) = run(&mut curl, Duration::from_secs(10));
    assert!(ok, "curl /metrics: {text}");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

fn n(v: &serde_json::Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("no {key} in {v}"))
}

#[test]
fn bench_leases_hundreds_of_clients_from_dlsd() {
    require_tool("curl", "curl");
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("leases");
    let dhcp = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[dhcp]\ninterface = \"{}\"\n\
         range = [\"10.{NET}.1.0\", \"10.{NET}.3.255\"]\nsubnet = \"10.{NET}.0.0/16\"\n\
         lease_store = {store:?}\n",
        lab.srv_if
    );
    let wrapper = ["ip", "netns", "exec", lab.srv.as_str()];
    let tftp = SocketAddr::from((Ipv4Addr::new(10, NET, 0, 1), 69));
    let server = Server::start_wrapped_with(&wrapper, tftp, "", &dhcp);
    server.wait_for_log("dhcp: listening on", Duration::from_secs(5));

    // 400 new clients, 32 at a time: every one completes, each with its own
    // address, and dlsd holds exactly those leases.
    let first = [
        "--clients",
        "400",
        "--exchanges",
        "400",
        "--in-flight",
        "32",
    ];
    let (ok, r) = bench(
        &lab,
        dir.path(),
        "first",
        &[&first[..], &["--mac-prefix", "7"]].concat(),
    );
    assert!(ok, "{r:#}");
    assert_eq!(n(&r, "completed"), 400, "{r:#}");
    assert_eq!(
        n(&r, "dropped") + n(&r, "naks") + n(&r, "conflicts"),
        0,
        "{r:#}"
    );
    assert_eq!(n(&r, "distinct_addresses"), 400, "{r:#}");
    assert!(
        r["exchange_ms"]["p99"].as_f64().unwrap_or(0.0) > 0.0,
        "{r:#}"
    );
    assert_eq!(metric(&lab, &server, "dls_dhcp_active_leases"), 400.0);
    assert_eq!(metric(&lab, &server, "dls_dhcp_acks_total"), 400.0);

    // The same 400 clients twice over: they get their addresses back, so
    // the lease count does not grow.
    let again = [
        "--clients",
        "400",
        "--exchanges",
        "800",
        "--mac-prefix",
        "7",
    ];
    let (ok, r) = bench(&lab, dir.path(), "again", &again);
    assert!(ok, "{r:#}");
    assert_eq!(n(&r, "completed"), 800, "{r:#}");
    assert_eq!(n(&r, "distinct_addresses"), 400, "{r:#}");
    assert_eq!(metric(&lab, &server, "dls_dhcp_active_leases"), 400.0);
    assert_eq!(metric(&lab, &server, "dls_dhcp_acks_total"), 1200.0);

    // Paced: 200 exchanges at 400/s take half a second, not less.
    let paced = ["--clients", "400", "--exchanges", "200", "--rate", "400"];
    let (ok, r) = bench(
        &lab,
        dir.path(),
        "paced",
        &[&paced[..], &["--mac-prefix", "7"]].concat(),
    );
    assert!(ok, "{r:#}");
    assert_eq!(n(&r, "completed"), 200, "{r:#}");
    let seconds = r["seconds"].as_f64().unwrap_or(0.0);
    assert!((0.49..5.0).contains(&seconds), "{r:#}");

    // Nothing listens on port 6767: every exchange is a drop, and the run
    // fails instead of reporting a rate.
    let nobody = ["--port", "6767", "--clients", "5", "--exchanges", "5"];
    let quick = ["--timeout", "100ms", "--retries", "1"];
    let (ok, r) = bench(&lab, dir.path(), "nobody", &[&nobody[..], &quick].concat());
    assert!(!ok, "{r:#}");
    assert_eq!((n(&r, "completed"), n(&r, "dropped")), (0, 5), "{r:#}");
    assert_eq!(n(&r, "resent"), 5, "{r:#}");
}
