//! The run's charts, as PNG: raw latency, latency quantiles and throughput over time, with fault
//! intervals shaded and labelled. Text is drawn with an embedded font (DejaVu Sans, licence in
//! `assets/DejaVuSans-LICENSE.txt`) so a machine with no system fonts renders the same charts.

use crate::checks::FaultInterval;
use anyhow::{anyhow, Result};
use ordeal_checker::{History, Operation, Outcome};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
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

pub(crate) fn register_font() {
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
        // Failures in a red-shifted shade of the op's colour (so a failed read and a failed
        // write stay apart), unknowns faded.
        Outcome::Fail => RGBColor(
            ((c.0 as u16 + 2 * 214) / 3) as u8,
            ((c.1 as u16 + 2 * 39) / 3) as u8,
            ((c.2 as u16 + 2 * 40) / 3) as u8,
        )
        .mix(0.7),
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

/// An axis tick without trailing zeros or binary noise: `5`, `2.5`, `0.01`.
fn tick_label(v: f64) -> String {
    format!("{}", (v * 1000.0).round() / 1000.0)
}

/// A latency tick: whole milliseconds from 1 ms up, else as many decimals as it needs.
fn ms_label(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.0}")
    } else {
        tick_label(v)
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

/// Colours for kinds missing from [`crate::faults::FAULTS`] (an older history's), in order of
/// first appearance; those get a lane named after their `f`.
const SPARE_FAULT_COLOURS: &[RGBColor] = &[
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Opacity of a fault's shading over the plot: light, so points stay visible where kinds overlap.
const FAULT_SHADE_ALPHA: f64 = 0.13;
/// Opacity of a fault's bar in its lane.
const FAULT_BAR_ALPHA: f64 = 0.35;
const LANE_PX: i32 = 17;
const LANE_FONT_PX: u32 = 12;
/// Space kept between one label and the next fault's start in the same lane.
const LABEL_GAP_PX: i32 = 4;

/// One lane per kind of fault present, in [`crate::faults::FAULTS`] order (its lane name and
/// colour), then unknown kinds in order of appearance: (f, name, colour).
fn fault_lanes(faults: &[FaultInterval]) -> Vec<(String, String, RGBColor)> {
    let mut lanes: Vec<(String, String, RGBColor)> = crate::faults::FAULTS
        .iter()
        .filter(|k| faults.iter().any(|f| f.f == k.start_f))
        .map(|k| {
            let (r, g, b) = k.colour;
            (k.start_f.to_string(), k.lane.to_string(), RGBColor(r, g, b))
        })
        .collect();
    let mut spare = SPARE_FAULT_COLOURS.iter().cycle();
    for f in faults {
        if !lanes.iter().any(|l| l.0 == f.f) {
            let name = f.f.strip_prefix("start-").unwrap_or(&f.f).to_string();
            let colour = *spare.next().unwrap_or(&RGBColor(127, 127, 127));
            lanes.push((f.f.clone(), name, colour));
        }
    }
    lanes
}

/// What a fault's label can say, longest first, once its lane names the kind:
/// `pause majority ["n2" "n3"]` -> `majority n2 n3`, then `n2 n3`.
fn label_choices(label: &str, kind_name: &str) -> Vec<String> {
    let cleaned: String = label
        .chars()
        .filter(|c| !matches!(c, '"' | '[' | ']'))
        .collect();
    let mut words: Vec<&str> = cleaned.split_whitespace().collect();
    if words.len() > 1 && (words[0] == kind_name || kind_name.starts_with(words[0])) {
        words.remove(0);
    }
    let mut choices = vec![words.join(" ")];
    if words.len() > 1 {
        choices.push(words[1..].join(" "));
    }
    choices.retain(|c| !c.is_empty());
    choices
}

/// A fault to place in the band: its lane, its interval in pixels, and its label choices, longest
/// first.
#[derive(Clone, Debug)]
struct BandFault {
    lane: usize,
    x0_px: i32,
    x1_px: i32,
    labels: Vec<String>,
}

/// A placed label: the fault it belongs to, its lane, its text and the pixels it covers.
#[derive(Clone, Debug, PartialEq)]
struct PlacedLabel {
    fault: usize,
    lane: usize,
    text: String,
    x0_px: i32,
    x1_px: i32,
}

/// Lays out the labels of the band: each label starts where its fault starts and ends before
/// the next fault of its lane starts (and before `right_px`); the longest choice that fits is
/// taken, and a fault with no fitting choice goes unlabelled (its bar and shading remain, and
/// report.html lists every fault). Labels never overlap: a lane's labels are taken in order of
/// start, each ending before the next begins.
fn layout_band(
    faults: &[BandFault],
    right_px: i32,
    text_width_px: impl Fn(&str) -> i32,
) -> Vec<PlacedLabel> {
    let mut order: Vec<usize> = (0..faults.len()).collect();
    order.sort_by_key(|&i| (faults[i].lane, faults[i].x0_px, i));
    let mut placed: Vec<PlacedLabel> = Vec::new();
    for (n, &i) in order.iter().enumerate() {
        let f = &faults[i];
        // Where this lane stops being free: the next fault of the lane that starts later.
        let next_start = order[n + 1..]
            .iter()
            .map(|&j| &faults[j])
            .take_while(|g| g.lane == f.lane)
            .map(|g| g.x0_px)
            .find(|&x| x > f.x0_px)
            .unwrap_or(right_px);
        // And where the previous label of the lane ended (faults starting together share).
        let free_from = placed
            .last()
            .filter(|p| p.lane == f.lane)
            .map_or(i32::MIN, |p| p.x1_px + LABEL_GAP_PX);
        let x0_px = f.x0_px.max(free_from);
        let limit = next_start.min(right_px) - LABEL_GAP_PX;
        let fits = |t: &String| x0_px + text_width_px(t) <= limit;
        // Failing every choice, the shortest cut with an ellipsis, down to two characters.
        let cut = || {
            let last: Vec<char> = f.labels.last()?.chars().collect();
            (2..last.len())
                .rev()
                .map(|n| format!("{}…", last[..n].iter().collect::<String>()))
                .find(fits)
        };
        if let Some(text) = f.labels.iter().find(|t| fits(t)).cloned().or_else(cut) {
            placed.push(PlacedLabel {
                fault: i,
                lane: f.lane,
                x0_px,
                x1_px: x0_px + text_width_px(&text),
                text,
            });
        }
    }
    placed
}

/// Shades each fault's interval over the plot, in its kind's colour.
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
    let lanes = fault_lanes(faults);
    for f in faults {
        let colour = lanes
            .iter()
            .find(|l| l.0 == f.f)
            .map_or(RGBColor(127, 127, 127), |l| l.2);
        let (a, b) = (secs(f.start_ns), secs(f.end_ns));
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(a, y_low), (b, y_high)],
                colour.mix(FAULT_SHADE_ALPHA).filled(),
            )))
            .map_err(|e| anyhow!("drawing a fault: {e}"))?;
    }
    Ok(())
}

/// The band above the plot: one lane per kind of fault, named on the left, each fault a bar over
/// its interval with as much of its label as fits. `x_px` maps seconds to absolute pixels.
fn draw_fault_band(
    band: &DrawingArea<BitMapBackend<'_>, Shift>,
    faults: &[FaultInterval],
    x_px: &dyn Fn(f64) -> i32,
    x_range_px: (i32, i32),
) -> Result<()> {
    let lanes = fault_lanes(faults);
    if lanes.is_empty() {
        return Ok(());
    }
    let (base_x, _) = band.get_base_pixel();
    let font = ("sans-serif", LANE_FONT_PX).into_font();
    let width = |t: &str| {
        band.estimate_text_size(t, &font.clone().into())
            .map_or(t.chars().count() as i32 * 8, |(w, _)| w as i32)
    };
    let inputs: Vec<BandFault> = faults
        .iter()
        .map(|f| {
            let lane = lanes.iter().position(|l| l.0 == f.f).unwrap_or(0);
            // A fault may start at the chart's right edge (at the end of the main phase) or
            // end past it: keep it in range, at least 2 px wide.
            let x0 = x_px(secs(f.start_ns)).clamp(x_range_px.0, x_range_px.1);
            BandFault {
                lane,
                x0_px: x0,
                x1_px: x_px(secs(f.end_ns)).min(x_range_px.1).max(x0 + 2),
                labels: label_choices(&f.label, &lanes[lane].1),
            }
        })
        .collect();
    let err = |e| anyhow!("drawing the fault band: {e}");
    for (lane, (_, name, colour)) in lanes.iter().enumerate() {
        let y = lane as i32 * LANE_PX;
        band.draw(&Rectangle::new(
            [
                (x_range_px.0 - base_x, y + 1),
                (x_range_px.1 - base_x, y + LANE_PX - 1),
            ],
            RGBColor(246, 246, 246).filled(),
        ))
        .map_err(err)?;
        let w = width(name);
        band.draw(&Text::new(
            name.clone(),
            (x_range_px.0 - base_x - 6 - w, y + 2),
            font.color(&RGBColor(colour.0 / 2, colour.1 / 2, colour.2 / 2)),
        ))
        .map_err(err)?;
    }
    for f in &inputs {
        let y = f.lane as i32 * LANE_PX;
        let colour = lanes[f.lane].2;
        band.draw(&Rectangle::new(
            [
                (f.x0_px - base_x, y + 1),
                (f.x1_px - base_x, y + LANE_PX - 1),
            ],
            colour.mix(FAULT_BAR_ALPHA).filled(),
        ))
        .map_err(err)?;
        band.draw(&Rectangle::new(
            [
                (f.x0_px - base_x, y + 1),
                (f.x0_px - base_x + 1, y + LANE_PX - 1),
            ],
            colour.filled(),
        ))
        .map_err(err)?;
    }
    for p in layout_band(&inputs, x_range_px.1, width) {
        band.draw(&Text::new(
            p.text,
            (p.x0_px - base_x + 3, p.lane as i32 * LANE_PX + 2),
            font.color(&BLACK.mix(0.85)),
        ))
        .map_err(err)?;
    }
    Ok(())
}

/// The caption, then the band of fault lanes (when there are faults), then the area for the
/// chart itself.
fn layout<'a>(
    root: &DrawingArea<BitMapBackend<'a>, Shift>,
    caption: &str,
    faults: &[FaultInterval],
) -> Result<(
    DrawingArea<BitMapBackend<'a>, Shift>,
    DrawingArea<BitMapBackend<'a>, Shift>,
)> {
    let lanes = fault_lanes(faults).len() as i32;
    let caption = if faults.is_empty() {
        format!("{caption} (no faults)")
    } else {
        format!("{caption} (faults shaded)")
    };
    let area = root
        .margin(8, 0, 0, 0)
        .titled(&caption, ("sans-serif", 20))
        .map_err(|e| anyhow!("{e}"))?;
    let band_px = if lanes == 0 { 0 } else { lanes * LANE_PX + 4 };
    Ok(area.split_vertically(band_px))
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
    let (band, plot) = layout(&root, "Latency of each operation", faults)?;
    let mut chart = axes(
        &plot,
        &band,
        faults,
        d.end_s,
        (0.01f64..max_ms).log_scale(),
        (0.01, max_ms),
        "latency (ms, log)",
        &|v| ms_label(*v),
    )?;
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
        // The legend shows the same marker as the plot: circle ok, cross fail, triangle info.
        let outcome = *outcome;
        series.label(label).legend(move |(x, y)| match outcome {
            Outcome::Ok => Circle::new((x, y), 4, colour.filled()).into_dyn(),
            Outcome::Fail => Cross::new((x, y), 4, colour.stroke_width(2)).into_dyn(),
            Outcome::Info => TriangleMarker::new((x, y), 5, colour.filled()).into_dyn(),
        });
    }
    finish(&mut chart, &root, path, 13)
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
    let (band, plot) = layout(
        &root,
        &format!("Latency quantiles of ok operations per {bucket:.2} s"),
        faults,
    )?;
    let mut chart = axes(
        &plot,
        &band,
        faults,
        d.end_s,
        (0.01f64..max_ms).log_scale(),
        (0.01, max_ms),
        "latency (ms, log)",
        &|v| ms_label(*v),
    )?;
    for ((f, q), pts) in &lines {
        let base = f_colour(f);
        let (opacity, width) = match *q {
            "p50" => (1.0, 2),
            "p95" => (0.7, 1),
            "p99" => (0.45, 1),
            _ => (0.25, 1),
        };
        let style = base.mix(opacity).stroke_width(width);
        // A bucket with no ok operation breaks the line rather than bridging the gap, which
        // would draw latencies where nothing completed; a lone bucket is a dot.
        let segments = pts.chunk_by(|a, b| b.0 - a.0 < 1.5 * bucket);
        for (n, seg) in segments.enumerate() {
            let series = if seg.len() == 1 {
                chart.draw_series(std::iter::once(Circle::new(seg[0], 2, style.filled())))
            } else {
                chart.draw_series(LineSeries::new(seg.iter().copied(), style))
            }
            .map_err(|e| anyhow!("{e}"))?;
            if n == 0 {
                series
                    .label(format!("{f} {q}"))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style));
            }
        }
    }
    finish(&mut chart, &root, path, 12)
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
    let (band, plot) = layout(&root, "Throughput: completions per second", faults)?;
    let mut chart = axes(
        &plot,
        &band,
        faults,
        d.end_s,
        0f64..max_rate,
        (0.0, max_rate),
        "operations / s",
        &|v| format!("{v:.0}"),
    )?;
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
    finish(&mut chart, &root, path, 12)
}

/// The frame every chart shares: time in seconds across, `y_desc` up, the fault lanes drawn in
/// `band` and the faults shaded over the plot from `y_low` to `y_high`.
#[allow(clippy::too_many_arguments)]
fn axes<'a, 'b, Y>(
    plot: &'a DrawingArea<BitMapBackend<'b>, Shift>,
    band: &DrawingArea<BitMapBackend<'b>, Shift>,
    faults: &[FaultInterval],
    end_s: f64,
    y: Y,
    (y_low, y_high): (f64, f64),
    y_desc: &str,
    y_label: &dyn Fn(&f64) -> String,
) -> Result<ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, Y::CoordDescType>>>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(plot)
        .margin(12)
        .margin_top(6)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..end_s, y)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("time since start (s)")
        .x_label_formatter(&|v| tick_label(*v))
        .y_desc(y_desc)
        .y_label_formatter(y_label)
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    let x_px = |t: f64| chart.backend_coord(&(t, y_low)).0;
    draw_fault_band(band, faults, &x_px, (x_px(0.0), x_px(end_s)))?;
    draw_faults(&mut chart, faults, y_low, y_high)?;
    Ok(chart)
}

/// Draws the legend in the upper right corner and writes the PNG: the last step of every chart.
fn finish<'a, 'b: 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, BitMapBackend<'b>, CT>,
    root: &DrawingArea<BitMapBackend<'b>, plotters::coord::Shift>,
    path: &Path,
    legend_font_px: u32,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", legend_font_px))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// 7 px per character, like the band's 12 px font on average.
    fn width_px(t: &str) -> i32 {
        7 * t.chars().count() as i32
    }

    fn fault(lane: usize, x0_px: i32, len_px: i32, label: &str) -> BandFault {
        BandFault {
            lane,
            x0_px,
            x1_px: x0_px + len_px,
            labels: label_choices(label, ["pause", "kill", "partition"][lane]),
        }
    }

    /// Faults every few pixels, overlapping within and across lanes (a `--nemesis all` run with
    /// short intervals), from a fixed pseudo-random sequence.
    fn close_faults(n: usize, seed: u64) -> Vec<BandFault> {
        let mut x = seed;
        let mut next = |m: u64| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) % m
        };
        let labels = [
            "pause majority [\"n2\" \"n3\"]",
            "kill one [\"n1\"]",
            "partition majorities-ring",
            "pause all [\"n1\" \"n2\" \"n3\"]",
        ];
        let mut at = 80;
        (0..n)
            .map(|i| {
                at += next(40) as i32;
                let lane = next(3) as usize;
                fault(lane, at, 5 + next(90) as i32, labels[i % labels.len()])
            })
            .collect()
    }

    /// A fault that starts where the chart ends (a kill at the last instant of the main phase)
    /// or outlives it must still draw: it once made `clamp` panic with min > max.
    #[test]
    fn faults_at_and_past_the_chart_edge_draw() {
        use ordeal_checker::{Event, EventType, Process, Value};
        let mut events = Vec::new();
        for i in 0..40i64 {
            let p = Process::Client((i % 4) as u64);
            events.push(
                Event::new(p, EventType::Invoke, "read", Value::Null).with_time(i * 100_000_000),
            );
            events.push(
                Event::new(p, EventType::Ok, "read", Value::Int(1))
                    .with_time(i * 100_000_000 + 5_000_000),
            );
        }
        let history = History::new(events);
        let end_ns = 39 * 100_000_000 + 5_000_000;
        let faults = vec![
            FaultInterval {
                f: "kill".into(),
                label: "one n2".into(),
                start_ns: end_ns,
                end_ns,
            },
            FaultInterval {
                f: "start-partition".into(),
                label: "halves".into(),
                start_ns: end_ns - 1_000,
                end_ns: end_ns + 5_000_000_000,
            },
            FaultInterval {
                f: "pause".into(),
                label: "leader n1".into(),
                start_ns: end_ns + 1_000_000_000,
                end_ns: end_ns + 2_000_000_000,
            },
        ];
        let dir = std::env::temp_dir().join(format!("ordeal-plots-edge-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        draw_all(&history, &faults, &dir).unwrap();
        for png in ["latency-raw.png", "latency-quantiles.png", "rate.png"] {
            let len = std::fs::metadata(dir.join(png))
                .map(|m| m.len())
                .unwrap_or(0);
            assert!(len > 1000, "{png}: {len} bytes");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn labels_of_close_faults_never_overlap() {
        let right_px = 1180;
        for seed in 0..200 {
            let faults = close_faults(60, seed);
            let placed = layout_band(&faults, right_px, width_px);
            assert!(!placed.is_empty(), "seed {seed}: some labels fit");
            for (i, a) in placed.iter().enumerate() {
                let f = &faults[a.fault];
                assert_eq!(a.lane, f.lane);
                assert!(
                    a.x0_px >= f.x0_px,
                    "seed {seed}: {a:?} starts before its fault"
                );
                assert!(a.x1_px <= right_px, "seed {seed}: {a:?} past the plot");
                assert_eq!(a.x1_px - a.x0_px, width_px(&a.text), "{a:?}");
                // No label runs into a later fault of its lane.
                for g in faults
                    .iter()
                    .filter(|g| g.lane == f.lane && g.x0_px > f.x0_px)
                {
                    assert!(a.x1_px <= g.x0_px, "seed {seed}: {a:?} runs into {g:?}");
                }
                for b in &placed[i + 1..] {
                    let apart = a.lane != b.lane || a.x1_px <= b.x0_px || b.x1_px <= a.x0_px;
                    assert!(apart, "seed {seed}: {a:?} overlaps {b:?}");
                }
            }
        }
    }

    #[test]
    fn spaced_faults_keep_their_whole_labels_and_crowded_ones_are_shortened() {
        let spaced: Vec<BandFault> = (0..5)
            .map(|i| fault(0, 100 + 200 * i, 50, "pause majority [\"n2\" \"n3\"]"))
            .collect();
        let placed = layout_band(&spaced, 1180, width_px);
        assert_eq!(placed.len(), 5);
        assert!(
            placed.iter().all(|p| p.text == "majority n2 n3"),
            "{placed:?}"
        );

        // 60 px apart in one lane: "majority n2 n3" (98 px) does not fit, "n2 n3" (35 px) does.
        let crowded: Vec<BandFault> = (0..4)
            .map(|i| fault(0, 100 + 60 * i, 50, "pause majority [\"n2\" \"n3\"]"))
            .collect();
        let placed = layout_band(&crowded, 1180, width_px);
        let texts: Vec<&str> = placed.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(texts, ["n2 n3", "n2 n3", "n2 n3", "majority n2 n3"]);

        // 30 px apart, 26 px free before the next one's gap: only a cut of three characters fits.
        let tight: Vec<BandFault> = (0..3)
            .map(|i| fault(2, 100 + 30 * i, 20, "partition majorities-ring"))
            .collect();
        let placed = layout_band(&tight, 1180, width_px);
        assert_eq!(placed[0].text, "ma…");
    }

    #[test]
    fn label_choices_drop_the_kind_and_the_punctuation() {
        assert_eq!(
            label_choices("pause majority [\"n2\" \"n3\"]", "pause"),
            ["majority n2 n3", "n2 n3"]
        );
        assert_eq!(label_choices("partition bridge", "partition"), ["bridge"]);
        assert_eq!(label_choices("kill", "kill"), ["kill"]);
        assert!(label_choices("", "kill").is_empty());
    }

    #[test]
    fn every_kind_gets_its_own_lane_and_colour() {
        let f = |f: &str| FaultInterval {
            f: f.to_string(),
            label: f.to_string(),
            start_ns: 0,
            end_ns: 1,
        };
        let faults = [
            f("start-network"),
            f("kill"),
            f("pause"),
            f("start-clock"),
            f("kill"),
        ];
        let lanes = fault_lanes(&faults);
        let names: Vec<&str> = lanes.iter().map(|l| l.1.as_str()).collect();
        assert_eq!(names, ["pause", "kill", "network", "clock"]);
        for (i, a) in lanes.iter().enumerate() {
            for b in &lanes[i + 1..] {
                assert_ne!(a.2, b.2, "{} and {} share a colour", a.1, b.1);
            }
        }
    }
}
