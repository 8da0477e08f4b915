//! One PNG per scenario: a panel per (metric, client), a bar per server at
//! the median of its repeats, a min/max whisker and every repeat as a dot.
//!
//! Text goes through plotters' `ab_glyph` feature with a TrueType file read
//! at run time (Debian's fonts-dejavu-core by default), so building needs no
//! fontconfig or freetype and the dependency keeps its features minimal.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::ranged1d::SegmentValue;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};

use super::{chart_file, fmt_value, Group};

const PANEL_WIDTH: u32 = 460;
const PANEL_HEIGHT: u32 = 360;
const TITLE_HEIGHT: u32 = 40;
const COLUMNS: usize = 3;
/// A scenario with more panels than this is a driver writing too many
/// metrics; the rest are in the tables.
const MAX_PANELS: usize = 9;

const DLS_BLUE: RGBColor = RGBColor(31, 119, 180);
const PEER_GREYS: [RGBColor; 4] = [
    RGBColor(150, 150, 150),
    RGBColor(190, 120, 80),
    RGBColor(120, 160, 110),
    RGBColor(170, 140, 190),
];

/// Draws every scenario's chart; returns (scenario, path) pairs.
pub fn draw_all(groups: &[Group], out: &Path, font: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    load_font(font)?;
    let mut scenarios: Vec<&str> = groups.iter().map(|g| g.scenario.as_str()).collect();
    scenarios.dedup();
    let mut charts = Vec::new();
    for s in scenarios {
        let path = chart_file(out, s);
        let of_scenario: Vec<&Group> = groups.iter().filter(|g| g.scenario == s).collect();
        draw(s, &of_scenario, &path)
            .map_err(|e| io::Error::other(format!("chart {}: {e}", path.display())))?;
        charts.push((s.to_string(), path));
    }
    Ok(charts)
}

/// plotters keeps fonts as `&'static [u8]`: the file is read and leaked once
/// per process (a few hundred KiB, for the life of a short command).
fn load_font(path: &Path) -> io::Result<()> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    let loaded = LOADED.get_or_init(|| {
        let bytes = std::fs::read(path).map_err(|e| {
            format!(
                "{}: {e} (install fonts-dejavu-core or pass --font, or --no-charts)",
                path.display()
            )
        })?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{}: not a usable TrueType font", path.display()))
    });
    loaded.clone().map_err(io::Error::other)
}

fn draw(scenario: &str, groups: &[&Group], path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let mut panels: Vec<(&str, &str)> = Vec::new();
    for g in groups {
        let key = (g.metric.as_str(), g.client.as_str());
        if !panels.contains(&key) {
            panels.push(key);
        }
    }
    panels.truncate(MAX_PANELS);
    let cols = panels.len().clamp(1, COLUMNS);
    let rows = panels.len().div_ceil(cols).max(1);
    let size = (
        cols as u32 * PANEL_WIDTH,
        rows as u32 * PANEL_HEIGHT + TITLE_HEIGHT,
    );

    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(scenario, ("sans-serif", 24))?;
    for (area, (metric, client)) in root.split_evenly((rows, cols)).iter().zip(&panels) {
        let series: Vec<&Group> = groups
            .iter()
            .filter(|g| g.metric == *metric && g.client == *client)
            .copied()
            .collect();
        panel(area, metric, client, &series)?;
    }
    root.present()?;
    Ok(())
}

fn panel(
    area: &DrawingArea<BitMapBackend, Shift>,
    metric: &str,
    client: &str,
    series: &[&Group],
) -> Result<(), Box<dyn std::error::Error>> {
    let Some(first) = series.first() else {
        return Ok(());
    };
    let top = series.iter().map(|g| g.max).fold(0.0, f64::max);
    let top = if top > 0.0 { top * 1.18 } else { 1.0 };
    let direction = if first.higher_is_better {
        "higher is better"
    } else {
        "lower is better"
    };
    // A segmented i32 range has one segment per value, end included; a
    // single bar gets a spare empty segment, as 0..0 cannot be drawn.
    let last_segment = (series.len() as i32 - 1).max(1);

    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("{metric}, {direction} ({client})"),
            ("sans-serif", 15),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d((0..last_segment).into_segmented(), 0.0..top)?;
    let labels: Vec<String> = series.iter().map(|g| g.label()).collect();
    let label_of = |v: &SegmentValue<i32>| match v {
        SegmentValue::CenterOf(i) => labels.get(*i as usize).cloned().unwrap_or_default(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(series.len())
        .x_label_formatter(&label_of)
        .y_label_formatter(&|v| fmt_value(*v))
        .y_desc(metric)
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 14))
        .draw()?;

    let mut peer = 0;
    let colours: Vec<RGBColor> = series
        .iter()
        .map(|g| {
            if g.is_dls() {
                DLS_BLUE
            } else {
                peer += 1;
                PEER_GREYS[(peer - 1) % PEER_GREYS.len()]
            }
        })
        .collect();
    chart.draw_series(series.iter().zip(&colours).enumerate().map(|(i, (g, c))| {
        let i = i as i32;
        let mut bar = Rectangle::new(
            [
                (SegmentValue::Exact(i), 0.0),
                (SegmentValue::Exact(i + 1), g.median),
            ],
            c.filled(),
        );
        bar.set_margin(0, 0, 14, 14);
        bar
    }))?;
    chart.draw_series(series.iter().enumerate().map(|(i, g)| {
        let x = || SegmentValue::CenterOf(i as i32);
        PathElement::new(vec![(x(), g.min), (x(), g.max)], BLACK.stroke_width(2))
    }))?;
    chart.draw_series(series.iter().enumerate().flat_map(|(i, g)| {
        g.values
            .iter()
            .map(move |v| Circle::new((SegmentValue::CenterOf(i as i32), *v), 3, BLACK.filled()))
    }))?;
    let value_style =
        TextStyle::from(("sans-serif", 13).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    chart.draw_series(series.iter().enumerate().map(|(i, g)| {
        let x = SegmentValue::CenterOf(i as i32);
        Text::new(
            fmt_value(g.median),
            (x, g.max + top * 0.02),
            value_style.clone(),
        )
    }))?;
    Ok(())
}
