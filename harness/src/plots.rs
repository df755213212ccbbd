//! The run's charts, as PNG: raw latency, latency quantiles and throughput over time, with fault
//! intervals shaded and labelled. Text is drawn with an embedded font (DejaVu Sans, licence in
//! `assets/DejaVuSans-LICENSE.txt`) so a machine with no system fonts renders the same charts.

use crate::checks::FaultInterval;
use anyhow::{anyhow, Result};
use ordeal_checker::{History, Operation, Outcome};
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Once;

static FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER_FONT: Once = Once::new();

const WIDTH_PX: u32 = 1200;
const HEIGHT_PX: u32 = 520;
/// More points than this in the raw latency chart are thinned evenly: the picture is the same
/// and the PNG stays quick to draw.
const MAX_RAW_POINTS: usize = 60_000;

fn register_font() {
    REGISTER_FONT.call_once(|| {
        // The bytes are a valid TTF shipped in the crate; failure would be a build mistake.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT_BYTES);
    });
}

fn f_colour(f: &str) -> RGBColor {
    match f {
        "read" => RGBColor(31, 119, 180),
        "write" => RGBColor(255, 127, 14),
        "cas" => RGBColor(148, 103, 189),
        "append" => RGBColor(23, 190, 207),
        "txn" => RGBColor(140, 86, 75),
        _ => RGBColor(127, 127, 127),
    }
}

fn outcome_colour(f: &str, outcome: Outcome) -> RGBAColor {
    let c = f_colour(f);
    match outcome {
        Outcome::Ok => c.to_rgba(),
        // Failures in a red-shifted shade of the op's colour, unknowns faded.
        Outcome::Fail => RGBColor(214, 39, 40).mix(0.55),
        Outcome::Info => RGBColor(c.0 / 2, c.1 / 2, c.2 / 2).mix(0.5),
    }
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Ok => "ok",
        Outcome::Fail => "fail",
        Outcome::Info => "info",
    }
}

fn fault_colour(f: &str) -> RGBAColor {
    match f {
        "pause" => RGBColor(255, 215, 0).mix(0.18),
        "kill" => RGBColor(214, 39, 40).mix(0.15),
        "start-network" => RGBColor(31, 119, 180).mix(0.15),
        _ => RGBColor(44, 160, 44).mix(0.15),
    }
}

fn secs(ns: i64) -> f64 {
    ns as f64 / 1e9
}

struct Data {
    ops: Vec<Operation>,
    end_s: f64,
}

fn data(history: &History) -> Result<Data> {
    let ops = history.operations().map_err(|e| anyhow!("history: {e}"))?;
    let end_s = history
        .events
        .iter()
        .map(|e| secs(e.time))
        .fold(1.0, f64::max);
    Ok(Data { ops, end_s })
}

fn draw_faults<DB: DrawingBackend>(
    chart: &mut ChartContext<
        '_,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, impl Ranged<ValueType = f64>>,
    >,
    faults: &[FaultInterval],
    y_low: f64,
    y_high: f64,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    for f in faults {
        let (a, b) = (secs(f.start_ns), secs(f.end_ns));
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(a, y_low), (b, y_high)],
                fault_colour(&f.f).filled(),
            )))
            .map_err(|e| anyhow!("drawing a fault: {e}"))?;
        chart
            .draw_series(std::iter::once(Text::new(
                f.label.clone(),
                (a, y_high),
                ("sans-serif", 13).into_font().color(&BLACK.mix(0.75)),
            )))
            .map_err(|e| anyhow!("drawing a fault label: {e}"))?;
    }
    Ok(())
}

/// Per-operation latency against invocation time, log scale.
pub fn latency_raw(history: &History, faults: &[FaultInterval], path: &Path) -> Result<()> {
    register_font();
    let d = data(history)?;
    let points: Vec<(&str, Outcome, f64, f64)> = d
        .ops
        .iter()
        .filter_map(|op| {
            let done = op.complete_time?;
            let latency_ms = ((done - op.invoke_time) as f64 / 1e6).max(0.01);
            Some((op.f.as_str(), op.outcome, secs(op.invoke_time), latency_ms))
        })
        .collect();
    let step = (points.len() / MAX_RAW_POINTS).max(1);
    let max_ms = points.iter().map(|p| p.3).fold(10.0, f64::max) * 1.5;
    let root = BitMapBackend::new(path, (WIDTH_PX, HEIGHT_PX)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Latency of each operation (faults shaded)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..d.end_s, (0.01f64..max_ms).log_scale())
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("time since start (s)")
        .y_desc("latency (ms, log)")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    draw_faults(&mut chart, faults, 0.01, max_ms)?;
    let mut groups: BTreeMap<(String, &'static str), Vec<(f64, f64)>> = BTreeMap::new();
    let mut kinds: BTreeMap<(String, &'static str), (String, Outcome)> = BTreeMap::new();
    for p in points.iter().step_by(step) {
        let key = (p.0.to_string(), outcome_name(p.1));
        groups.entry(key.clone()).or_default().push((p.2, p.3));
        kinds.insert(key, (p.0.to_string(), p.1));
    }
    for (key, pts) in &groups {
        let (f, outcome) = &kinds[key];
        let colour = outcome_colour(f, *outcome);
        let label = format!("{} {}", key.0, key.1);
        let series = chart
            .draw_series(pts.iter().map(|&(x, y)| match outcome {
                Outcome::Ok => Circle::new((x, y), 2, colour.filled()).into_dyn(),
                Outcome::Fail => Cross::new((x, y), 3, colour.stroke_width(1)).into_dyn(),
                Outcome::Info => TriangleMarker::new((x, y), 3, colour.filled()).into_dyn(),
            }))
            .map_err(|e| anyhow!("{e}"))?;
        series
            .label(label)
            .legend(move |(x, y)| Circle::new((x, y), 4, colour.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present()
        .map_err(|e| anyhow!("writing {}: {e}", path.display()))?;
    Ok(())
}

fn bucket_s(end_s: f64) -> f64 {
    // About 100 buckets across the run, never finer than 0.25 s.
    (end_s / 100.0).max(0.25)
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// p50 / p95 / p99 / max latency of ok operations per time bucket and operation.
pub fn latency_quantiles(history: &History, faults: &[FaultInterval], path: &Path) -> Result<()> {
    register_font();
    let d = data(history)?;
    let bucket = bucket_s(d.end_s);
    let mut per: BTreeMap<(String, i64), Vec<f64>> = BTreeMap::new();
    for op in &d.ops {
        let (Some(done), Outcome::Ok) = (op.complete_time, op.outcome) else {
            continue;
        };
        let b = (secs(op.invoke_time) / bucket).floor() as i64;
        per.entry((op.f.clone(), b))
            .or_default()
            .push(((done - op.invoke_time) as f64 / 1e6).max(0.01));
    }
    let mut lines: BTreeMap<(String, &'static str), Vec<(f64, f64)>> = BTreeMap::new();
    let mut max_ms: f64 = 10.0;
    for ((f, b), mut v) in per {
        v.sort_by(|a, b| a.total_cmp(b));
        let x = (b as f64 + 0.5) * bucket;
        for (name, q) in [("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0)] {
            let y = quantile(&v, q);
            max_ms = max_ms.max(y);
            lines.entry((f.clone(), name)).or_default().push((x, y));
        }
    }
    let max_ms = max_ms * 1.5;
    let root = BitMapBackend::new(path, (WIDTH_PX, HEIGHT_PX)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Latency quantiles of ok operations per {bucket:.2} s (faults shaded)"),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..d.end_s, (0.01f64..max_ms).log_scale())
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("time since start (s)")
        .y_desc("latency (ms, log)")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    draw_faults(&mut chart, faults, 0.01, max_ms)?;
    for ((f, q), pts) in &lines {
        let base = f_colour(f);
        let (opacity, width) = match *q {
            "p50" => (1.0, 2),
            "p95" => (0.7, 1),
            "p99" => (0.45, 1),
            _ => (0.25, 1),
        };
        let style = base.mix(opacity).stroke_width(width);
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), style))
            .map_err(|e| anyhow!("{e}"))?
            .label(format!("{f} {q}"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style));
    }
    finish(&mut chart, &root, path)
}

/// Completions per second, per operation and outcome.
pub fn rate(history: &History, faults: &[FaultInterval], path: &Path) -> Result<()> {
    register_font();
    let d = data(history)?;
    let bucket = bucket_s(d.end_s);
    let n_buckets = (d.end_s / bucket).ceil() as usize + 1;
    let mut counts: BTreeMap<(String, &'static str), (Outcome, Vec<u64>)> = BTreeMap::new();
    for op in &d.ops {
        let Some(done) = op.complete_time else {
            continue;
        };
        let b = ((secs(done) / bucket).floor() as usize).min(n_buckets - 1);
        let entry = counts
            .entry((op.f.clone(), outcome_name(op.outcome)))
            .or_insert_with(|| (op.outcome, vec![0; n_buckets]));
        entry.1[b] += 1;
    }
    let max_rate = counts
        .values()
        .flat_map(|(_, v)| v.iter())
        .map(|&c| c as f64 / bucket)
        .fold(1.0, f64::max)
        * 1.15;
    let root = BitMapBackend::new(path, (WIDTH_PX, HEIGHT_PX)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Throughput: completions per second (faults shaded)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..d.end_s, 0f64..max_rate)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("time since start (s)")
        .y_desc("operations / s")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    draw_faults(&mut chart, faults, 0.0, max_rate)?;
    for ((f, o), (outcome, v)) in &counts {
        let colour = outcome_colour(f, *outcome);
        let style = colour.stroke_width(if *outcome == Outcome::Ok { 2 } else { 1 });
        chart
            .draw_series(LineSeries::new(
                v.iter()
                    .enumerate()
                    .map(|(i, &c)| ((i as f64 + 0.5) * bucket, c as f64 / bucket)),
                style,
            ))
            .map_err(|e| anyhow!("{e}"))?
            .label(format!("{f} {o}"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style));
    }
    finish(&mut chart, &root, path)
}

/// Draws the legend in the upper right corner and writes the PNG: the last step of every chart.
fn finish<'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, CT>,
    root: &DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>,
    path: &Path,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 12))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present()
        .map_err(|e| anyhow!("writing {}: {e}", path.display()))?;
    Ok(())
}

/// Draws all three charts into `dir`.
pub fn draw_all(history: &History, faults: &[FaultInterval], dir: &Path) -> Result<()> {
    latency_raw(history, faults, &dir.join("latency-raw.png"))?;
    latency_quantiles(history, faults, &dir.join("latency-quantiles.png"))?;
    rate(history, faults, &dir.join("rate.png"))?;
    Ok(())
}
