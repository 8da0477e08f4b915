//! `dls-bench report`: turns the rows the perf/ drivers append to
//! `rows.jsonl` into `summary.md`, `summary.json` and one PNG chart per
//! scenario.
//!
//! A row is one measurement (see perf/README.md for the contract):
//! `{"scenario", "server", "client", "metric", "value", "higher_is_better",
//! "repeat", "workers"?, "note"?}`. Rows are grouped by (scenario, server,
//! client, metric, workers) and each group is reduced to its median, because
//! the machines these runs happen on are shared and noisy: one repeat says
//! little, the median of several says more. For every scenario, client and
//! metric, each dls group is compared with the best peer measured with the
//! same client in the same run; the ratio is oriented so that above 1 means
//! dls did better (dls / peer when higher is better, peer / dls when lower
//! is better). A ratio is left out when either median is 0 (failure counts).

mod chart;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use clap::Args as ClapArgs;
use serde::{Deserialize, Serialize};

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// The rows the drivers appended (JSON lines).
    #[arg(long)]
    input: PathBuf,
    /// Directory for summary.md, summary.json and the PNG charts.
    #[arg(long)]
    out: PathBuf,
    /// A TrueType font for the chart text (Debian: fonts-dejavu-core).
    #[arg(
        long,
        default_value = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    )]
    font: PathBuf,
    /// Write the tables only, no charts.
    #[arg(long)]
    no_charts: bool,
}

/// One measurement, as a driver wrote it.
#[derive(Deserialize, Debug, Clone)]
pub struct Row {
    pub scenario: String,
    pub server: String,
    pub client: String,
    pub metric: String,
    pub value: f64,
    pub higher_is_better: bool,
    #[serde(default)]
    pub workers: Option<u32>,
    #[serde(default)]
    pub note: Option<String>,
}

/// The repeats of one (scenario, server, client, metric, workers).
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Group {
    pub scenario: String,
    pub server: String,
    pub client: String,
    pub metric: String,
    pub workers: Option<u32>,
    pub higher_is_better: bool,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub values: Vec<f64>,
    pub note: Option<String>,
}

impl Group {
    /// "dls w2" for dls, the server name for peers.
    pub fn label(&self) -> String {
        match self.workers {
            Some(w) => format!("{} w{w}", self.server),
            None => self.server.clone(),
        }
    }

    pub fn is_dls(&self) -> bool {
        self.server == "dls"
    }
}

/// One dls group against the best peer of its scenario, client and metric.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Ratio {
    pub scenario: String,
    pub client: String,
    pub metric: String,
    pub dls: String,
    pub dls_median: f64,
    pub best_peer: String,
    pub peer_median: f64,
    /// Above 1: dls did better.
    pub ratio: Option<f64>,
}

pub fn run(args: &Args) -> io::Result<bool> {
    let text = std::fs::read_to_string(&args.input)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", args.input.display())))?;
    let rows = parse_rows(&text)?;
    if rows.is_empty() {
        return Err(io::Error::other(format!(
            "{}: no rows",
            args.input.display()
        )));
    }
    let groups = group(&rows);
    let ratios = ratios(&groups);
    std::fs::create_dir_all(&args.out)?;

    // The tables matter more than the pictures: a chart that cannot be
    // drawn (no font, say) is reported and the tables are written anyway.
    let charts = if args.no_charts {
        Vec::new()
    } else {
        match chart::draw_all(&groups, &args.out, &args.font) {
            Ok(charts) => charts,
            Err(e) => {
                eprintln!(
                    "dls-bench report: no charts ({}: {e}); tables only",
                    args.font.display()
                );
                Vec::new()
            }
        }
    };
    let md = markdown(&groups, &ratios, &charts);
    std::fs::write(args.out.join("summary.md"), &md)?;
    let json = serde_json::json!({ "groups": groups, "ratios": ratios });
    let json = serde_json::to_string_pretty(&json).map_err(io::Error::other)?;
    std::fs::write(args.out.join("summary.json"), json)?;
    print!("{md}");
    Ok(true)
}

/// Parses JSON lines; blank lines are skipped, anything else that is not a
/// row is an error naming its line, so a broken driver cannot go unnoticed.
pub fn parse_rows(text: &str) -> io::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row: Row = serde_json::from_str(line)
            .map_err(|e| io::Error::other(format!("rows line {}: {e}", n + 1)))?;
        if !row.value.is_finite() {
            return Err(io::Error::other(format!(
                "rows line {}: value not finite",
                n + 1
            )));
        }
        rows.push(row);
    }
    Ok(rows)
}

/// The median of a non-empty list (mean of the middle two when even).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[mid],
        _ => (v[mid - 1] + v[mid]) / 2.0,
    }
}

/// Groups rows, keeping the order in which scenarios, servers and metrics
/// first appear (drivers write the main metric of a scenario first).
pub fn group(rows: &[Row]) -> Vec<Group> {
    type Key = (String, String, String, String, Option<u32>);
    let mut order: Vec<Key> = Vec::new();
    let mut by_key: BTreeMap<Key, Vec<&Row>> = BTreeMap::new();
    for r in rows {
        let key = (
            r.scenario.clone(),
            r.server.clone(),
            r.client.clone(),
            r.metric.clone(),
            r.workers,
        );
        let entry = by_key.entry(key.clone()).or_default();
        if entry.is_empty() {
            order.push(key);
        }
        entry.push(r);
    }
    let scenario_rank = |s: &str| order.iter().position(|k| k.0 == s);
    let mut groups: Vec<Group> = order
        .iter()
        .filter_map(|key| {
            let rows = by_key.get(key)?;
            let first = rows.first()?;
            let values: Vec<f64> = rows.iter().map(|r| r.value).collect();
            Some(Group {
                scenario: key.0.clone(),
                server: key.1.clone(),
                client: key.2.clone(),
                metric: key.3.clone(),
                workers: key.4,
                higher_is_better: first.higher_is_better,
                median: median(&values),
                min: values.iter().copied().fold(f64::INFINITY, f64::min),
                max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                values,
                note: rows.iter().find_map(|r| r.note.clone()),
            })
        })
        .collect();
    // Scenarios stay together even when drivers interleave them.
    groups.sort_by_key(|g| scenario_rank(&g.scenario));
    groups
}

/// For each dls group, the best peer with the same scenario, client and
/// metric, and the ratio oriented so that above 1 means dls did better.
pub fn ratios(groups: &[Group]) -> Vec<Ratio> {
    let mut out = Vec::new();
    for d in groups.iter().filter(|g| g.is_dls()) {
        let peers = groups.iter().filter(|p| {
            !p.is_dls() && p.scenario == d.scenario && p.client == d.client && p.metric == d.metric
        });
        let best = peers.fold(None::<&Group>, |best, p| match best {
            Some(b) if better(b.median, p.median, d.higher_is_better) => Some(b),
            _ => Some(p),
        });
        let Some(best) = best else { continue };
        let ratio = match (d.median, best.median) {
            (a, b) if a == 0.0 || b == 0.0 => None,
            (a, b) if d.higher_is_better => Some(a / b),
            (a, b) => Some(b / a),
        };
        out.push(Ratio {
            scenario: d.scenario.clone(),
            client: d.client.clone(),
            metric: d.metric.clone(),
            dls: d.label(),
            dls_median: d.median,
            best_peer: best.label(),
            peer_median: best.median,
            ratio,
        });
    }
    out
}

/// Whether `a` is at least as good as `b`.
fn better(a: f64, b: f64, higher_is_better: bool) -> bool {
    if higher_is_better {
        a >= b
    } else {
        a <= b
    }
}

/// Three significant digits or so, without exponent noise.
pub fn fmt_value(v: f64) -> String {
    match v.abs() {
        x if x >= 100.0 || x == 0.0 => format!("{v:.0}"),
        x if x >= 10.0 => format!("{v:.1}"),
        x if x >= 1.0 => format!("{v:.2}"),
        _ => format!("{v:.3}"),
    }
}

fn markdown(groups: &[Group], ratios: &[Ratio], charts: &[(String, PathBuf)]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# dls side by side\n");
    let _ = writeln!(
        md,
        "Medians of the repeats; ratio = dls against the best peer measured with the \
         same client in the same run, above 1 means dls did better (dls / peer when \
         higher is better, peer / dls when lower is better).\n"
    );
    let _ = writeln!(md, "## Ratios\n");
    let _ = writeln!(
        md,
        "| scenario | client | metric | dls | best peer | ratio |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    for r in ratios {
        let ratio = r.ratio.map_or("n/a".into(), |x| format!("{x:.2}x"));
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} {} | {} {} | {} |",
            r.scenario,
            r.client,
            r.metric,
            r.dls,
            fmt_value(r.dls_median),
            r.best_peer,
            fmt_value(r.peer_median),
            ratio
        );
    }
    let mut scenarios: Vec<&str> = groups.iter().map(|g| g.scenario.as_str()).collect();
    scenarios.dedup();
    for s in scenarios {
        let _ = writeln!(md, "\n## {s}\n");
        if let Some((_, png)) = charts.iter().find(|(name, _)| name == s) {
            let file = png.file_name().map(|f| f.to_string_lossy().into_owned());
            let _ = writeln!(md, "![{s}]({})\n", file.unwrap_or_default());
        }
        let _ = writeln!(
            md,
            "| server | client | metric | median | min | max | n | note |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
        for g in groups.iter().filter(|g| g.scenario == s) {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                g.label(),
                g.client,
                g.metric,
                fmt_value(g.median),
                fmt_value(g.min),
                fmt_value(g.max),
                g.values.len(),
                g.note.as_deref().unwrap_or("")
            );
        }
    }
    md
}

/// Where a scenario's chart goes: its name, with anything but ASCII letters,
/// digits and '-' replaced, so a driver's scenario name cannot leave `out`.
pub fn chart_file(out: &Path, scenario: &str) -> PathBuf {
    let safe: String = scenario
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    out.join(format!("{safe}.png"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(server: &str, workers: Option<u32>, metric: &str, value: f64, hib: bool) -> Row {
        Row {
            scenario: "s".into(),
            server: server.into(),
            client: "c".into(),
            metric: metric.into(),
            value,
            higher_is_better: hib,
            workers,
            note: None,
        }
    }

    #[test]
    fn median_odd_even_and_unsorted() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[7.0]), 7.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn groups_split_by_workers_and_keep_first_seen_order() {
        let rows = vec![
            row("dls", Some(1), "MB/s", 10.0, true),
            row("peer", None, "MB/s", 5.0, true),
            row("dls", Some(2), "MB/s", 30.0, true),
            row("dls", Some(1), "MB/s", 12.0, true),
            row("dls", Some(1), "MB/s", 100.0, true),
        ];
        let g = group(&rows);
        assert_eq!(g.len(), 3);
        assert_eq!(g[0].label(), "dls w1");
        assert_eq!(g[0].values, vec![10.0, 12.0, 100.0]);
        assert_eq!(g[0].median, 12.0);
        assert_eq!((g[0].min, g[0].max), (10.0, 100.0));
        assert_eq!(g[1].label(), "peer");
        assert_eq!(g[2].label(), "dls w2");
    }

    #[test]
    fn ratio_against_best_peer_higher_is_better() {
        let rows = vec![
            row("dls", Some(1), "MB/s", 300.0, true),
            row("a", None, "MB/s", 100.0, true),
            row("b", None, "MB/s", 150.0, true),
        ];
        let r = ratios(&group(&rows));
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].best_peer, "b");
        assert_eq!(r[0].ratio, Some(2.0));
    }

    #[test]
    fn ratio_against_best_peer_lower_is_better() {
        let rows = vec![
            row("dls", Some(2), "peak_rss_MiB", 10.0, false),
            row("a", None, "peak_rss_MiB", 40.0, false),
            row("b", None, "peak_rss_MiB", 5.0, false),
        ];
        let r = ratios(&group(&rows));
        assert_eq!(r[0].best_peer, "b");
        assert_eq!(
            r[0].ratio,
            Some(0.5),
            "dls uses twice the best peer's memory"
        );
    }

    #[test]
    fn ratio_only_against_same_client_and_none_on_zero() {
        let mut other_client = row("a", None, "MB/s", 1000.0, true);
        other_client.client = "curl".into();
        let rows = vec![
            row("dls", Some(1), "MB/s", 50.0, true),
            other_client,
            row("b", None, "MB/s", 25.0, true),
            row("dls", Some(1), "failures", 0.0, false),
            row("b", None, "failures", 0.0, false),
        ];
        let r = ratios(&group(&rows));
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].best_peer.as_str(), r[0].ratio), ("b", Some(2.0)));
        assert_eq!(r[1].ratio, None);
    }

    #[test]
    fn no_peer_no_ratio() {
        let r = ratios(&group(&[row("dls", Some(1), "MB/s", 1.0, true)]));
        assert!(r.is_empty());
    }

    #[test]
    fn chart_names_stay_inside_the_output_directory() {
        let p = chart_file(Path::new("/out"), "../tftp storm/200");
        assert_eq!(p, Path::new("/out/___tftp_storm_200.png"));
    }

    #[test]
    fn bad_lines_are_errors_with_their_number() {
        let ok = r#"{"scenario":"s","server":"dls","client":"c","metric":"m","value":1,"higher_is_better":true,"repeat":1,"workers":2}"#;
        assert_eq!(parse_rows(&format!("{ok}\n\n{ok}\n")).unwrap().len(), 2);
        let err = parse_rows(&format!("{ok}\n{{\"scenario\":1}}\n")).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }
}
