//! The run's charts, as PNG: raw latency, latency quantiles and throughput over time, with fault
//! intervals shaded and labelled. Text is drawn with an embedded font (DejaVu Sans, licence in
//! `assets/DejaVuSans-LICENSE.txt`) so a machine with no system fonts renders the same charts.
//!
//! The charts are drawn from [`ChartData`], which takes one operation at a time while the history
//! streams by and holds a bounded amount whatever the run's length: about 100 time buckets, per
//! bucket and operation a latency histogram and completion counts, and per operation and outcome
//! an evenly thinned sample of points plus each bucket's slowest one.

use crate::checks::FaultInterval;
use anyhow::{anyhow, Result};
use ordeal_checker::Outcome;
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
/// Points each (operation, outcome) series of the raw latency chart keeps, at most: more are
/// thinned evenly, so the picture is the same and the PNG stays quick to draw.
const RAW_POINTS_PER_SERIES: usize = 10_000;
/// Distinct operation names (`f`) the charts tell apart, at most; further ones are drawn as
/// `other` (a run has a handful; a foreign history could have any number).
const MAX_CHART_FS: usize = 16;
/// The latency histograms' resolution: each bin is 2% wider than the one before, from
/// `MIN_LATENCY_MS`, so a quantile read from them is within 2% of the exact one.
const LATENCY_BIN_GROWTH: f64 = 1.02;
/// Latencies below this are drawn at it (the log axis starts there).
const MIN_LATENCY_MS: f64 = 0.01;
/// Bins per histogram: 1,100 bins of 2% reach 0.01 ms x 1.02^1100, about 8 hours; longer
/// latencies fall in the last bin (the exact maximum is kept apart).
const LATENCY_BINS: usize = 1100;

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

/// A series: one operation name (an index into [`ChartData::fs`]) and one outcome.
type SeriesKey = (usize, OutcomeKey);

/// [`Outcome`] as a map key, in the order the legend lists outcomes (by name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum OutcomeKey {
    Fail,
    Info,
    Ok,
}

impl OutcomeKey {
    fn of(o: Outcome) -> OutcomeKey {
        match o {
            Outcome::Ok => OutcomeKey::Ok,
            Outcome::Fail => OutcomeKey::Fail,
            Outcome::Info => OutcomeKey::Info,
        }
    }

    fn outcome(self) -> Outcome {
        match self {
            OutcomeKey::Ok => Outcome::Ok,
            OutcomeKey::Fail => Outcome::Fail,
            OutcomeKey::Info => Outcome::Info,
        }
    }
}

/// An evenly thinned sample of a stream of points, at most `capacity` of them: every
/// `stride`-th point is kept, and when the sample is full the stride doubles and every other
/// kept point goes.
#[derive(Clone, Debug)]
struct Thinned {
    capacity: usize,
    stride: u64,
    seen: u64,
    points: Vec<(f64, f64)>,
}

impl Thinned {
    fn new(capacity: usize) -> Thinned {
        assert!(capacity >= 2, "a thinned sample keeps at least two points");
        Thinned {
            capacity,
            stride: 1,
            seen: 0,
            points: Vec::new(),
        }
    }

    fn push(&mut self, point: (f64, f64)) {
        if self.seen.is_multiple_of(self.stride) {
            if self.points.len() == self.capacity {
                // Kept points are the multiples of `stride`; keep the multiples of twice it.
                let mut position = 0usize;
                self.points.retain(|_| {
                    position += 1;
                    !position.is_multiple_of(2)
                });
                self.stride *= 2;
            }
            if self.seen.is_multiple_of(self.stride) {
                self.points.push(point);
            }
        }
        self.seen += 1;
    }
}

/// Latencies of one bucket in bins 2% apart (see `LATENCY_BIN_GROWTH`), with the exact least
/// and greatest.
#[derive(Clone, Debug)]
struct LatencyHistogram {
    bins: Vec<u64>,
    count: u64,
    min_ms: f64,
    max_ms: f64,
}

impl LatencyHistogram {
    fn new() -> LatencyHistogram {
        LatencyHistogram {
            bins: vec![0; LATENCY_BINS],
            count: 0,
            min_ms: f64::INFINITY,
            max_ms: 0.0,
        }
    }

    fn bin_of(ms: f64) -> usize {
        let bin = ((ms / MIN_LATENCY_MS).ln() / LATENCY_BIN_GROWTH.ln()).floor();
        if bin.is_nan() || bin < 0.0 {
            0
        } else {
            (bin as usize).min(LATENCY_BINS - 1)
        }
    }

    fn record(&mut self, ms: f64) {
        self.bins[Self::bin_of(ms)] += 1;
        self.count += 1;
        self.min_ms = self.min_ms.min(ms);
        self.max_ms = self.max_ms.max(ms);
    }

    /// The latency at rank `round((count - 1) * q)` in increasing order, as an exact sort would
    /// give it, to within one bin (its geometric middle, kept within the exact least and
    /// greatest); `q = 1` is the exact maximum.
    fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        if q >= 1.0 {
            return Some(self.max_ms);
        }
        let rank = ((self.count - 1) as f64 * q).round() as u64;
        let mut below = 0u64;
        for (bin, &n) in self.bins.iter().enumerate() {
            below += n;
            if below > rank {
                let middle = MIN_LATENCY_MS * LATENCY_BIN_GROWTH.powf(bin as f64 + 0.5);
                return Some(middle.clamp(self.min_ms, self.max_ms));
            }
        }
        Some(self.max_ms)
    }
}

/// What the three charts show, gathered one operation at a time (see the module doc).
#[derive(Clone, Debug)]
pub struct ChartData {
    /// The time axis' end: the latest event, at least 1 s.
    end_s: f64,
    bucket_s: f64,
    n_buckets: usize,
    /// Operation names in order of appearance, at most `MAX_CHART_FS` and then `other`.
    fs: Vec<String>,
    /// The raw latency chart's points: (invocation s, latency ms) per series.
    raw: BTreeMap<SeriesKey, Thinned>,
    /// Each bucket's slowest operation per series, so no outlier is thinned away.
    slowest: BTreeMap<(SeriesKey, usize), (f64, f64)>,
    /// Latencies of ok operations per operation name and bucket of invocation time.
    ok_latency: BTreeMap<(usize, usize), LatencyHistogram>,
    /// Completions per series and bucket of completion time.
    completions: BTreeMap<SeriesKey, Vec<u64>>,
    /// The greatest latency of any operation (ms).
    max_latency_ms: f64,
}

impl ChartData {
    /// Empty charts for a history whose latest event is at `end_time_ns`.
    pub fn new(end_time_ns: i64) -> ChartData {
        let end_s = secs(end_time_ns).max(1.0);
        let bucket_s = bucket_s(end_s);
        ChartData {
            end_s,
            bucket_s,
            n_buckets: (end_s / bucket_s).ceil() as usize + 1,
            fs: Vec::new(),
            raw: BTreeMap::new(),
            slowest: BTreeMap::new(),
            ok_latency: BTreeMap::new(),
            completions: BTreeMap::new(),
            max_latency_ms: 0.0,
        }
    }

    fn f_index(&mut self, f: &str) -> usize {
        if let Some(i) = self.fs.iter().position(|x| x == f) {
            return i;
        }
        if self.fs.len() < MAX_CHART_FS {
            self.fs.push(f.to_string());
            return self.fs.len() - 1;
        }
        if let Some(i) = self.fs.iter().position(|x| x == "other") {
            return i;
        }
        self.fs.push("other".to_string());
        self.fs.len() - 1
    }

    /// The bucket of time `s`: out-of-range times (a history whose times go backwards) are
    /// drawn at the edges.
    fn bucket_of(&self, s: f64) -> usize {
        ((s / self.bucket_s).floor().max(0.0) as usize).min(self.n_buckets - 1)
    }

    /// Takes one completed operation.
    pub fn add(&mut self, f: &str, outcome: Outcome, invoke_ns: i64, complete_ns: i64) {
        let fi = self.f_index(f);
        let key = (fi, OutcomeKey::of(outcome));
        let latency_ms = ((complete_ns - invoke_ns) as f64 / 1e6).max(MIN_LATENCY_MS);
        let invoke_s = secs(invoke_ns);
        self.max_latency_ms = self.max_latency_ms.max(latency_ms);
        self.raw
            .entry(key)
            .or_insert_with(|| Thinned::new(RAW_POINTS_PER_SERIES))
            .push((invoke_s, latency_ms));
        let invoke_bucket = self.bucket_of(invoke_s);
        let slowest = self
            .slowest
            .entry((key, invoke_bucket))
            .or_insert((invoke_s, latency_ms));
        if latency_ms > slowest.1 {
            *slowest = (invoke_s, latency_ms);
        }
        if outcome == Outcome::Ok {
            self.ok_latency
                .entry((fi, invoke_bucket))
                .or_insert_with(LatencyHistogram::new)
                .record(latency_ms);
        }
        let complete_bucket = self.bucket_of(secs(complete_ns));
        let n_buckets = self.n_buckets;
        self.completions
            .entry(key)
            .or_insert_with(|| vec![0; n_buckets])[complete_bucket] += 1;
    }

    /// Points held for the raw latency chart (bounded by `RAW_POINTS_PER_SERIES` per series
    /// plus one per series and bucket): what a test checks to prove the charts do not grow
    /// with the run.
    pub fn points_held(&self) -> usize {
        self.raw.values().map(|t| t.points.len()).sum::<usize>() + self.slowest.len()
    }

    /// Series in legend order: by operation name, then outcome name.
    fn series_order<T>(&self, map: &BTreeMap<SeriesKey, T>) -> Vec<SeriesKey> {
        let mut keys: Vec<SeriesKey> = map.keys().copied().collect();
        keys.sort_by(|a, b| (&self.fs[a.0], a.1).cmp(&(&self.fs[b.0], b.1)));
        keys
    }
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
pub fn latency_raw(data: &ChartData, faults: &[FaultInterval], path: &Path) -> Result<()> {
    register_font();
    let max_ms = data.max_latency_ms.max(10.0) * 1.5;
    let root = BitMapBackend::new(path, (WIDTH_PX, HEIGHT_PX)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let (band, plot) = layout(&root, "Latency of each operation", faults)?;
    let mut chart = axes(
        &plot,
        &band,
        faults,
        data.end_s,
        (MIN_LATENCY_MS..max_ms).log_scale(),
        (MIN_LATENCY_MS, max_ms),
        "latency (ms, log)",
        &|v| ms_label(*v),
    )?;
    for key in data.series_order(&data.raw) {
        let f = data.fs[key.0].as_str();
        let outcome = key.1.outcome();
        let colour = outcome_colour(f, outcome);
        let label = format!("{f} {}", outcome_name(outcome));
        let slowest = data
            .slowest
            .range((key, 0)..=(key, usize::MAX))
            .map(|(_, p)| *p);
        let points: Vec<(f64, f64)> = data.raw[&key]
            .points
            .iter()
            .copied()
            .chain(slowest)
            .collect();
        let series = chart
            .draw_series(points.iter().map(|&(x, y)| match outcome {
                Outcome::Ok => Circle::new((x, y), 2, colour.filled()).into_dyn(),
                Outcome::Fail => Cross::new((x, y), 3, colour.stroke_width(1)).into_dyn(),
                Outcome::Info => TriangleMarker::new((x, y), 3, colour.filled()).into_dyn(),
            }))
            .map_err(|e| anyhow!("{e}"))?;
        // The legend shows the same marker as the plot: circle ok, cross fail, triangle info.
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

/// p50 / p95 / p99 / max latency of ok operations per time bucket and operation.
pub fn latency_quantiles(data: &ChartData, faults: &[FaultInterval], path: &Path) -> Result<()> {
    register_font();
    let bucket = data.bucket_s;
    let mut lines: BTreeMap<(&str, &'static str), Vec<(f64, f64)>> = BTreeMap::new();
    let mut max_ms: f64 = 10.0;
    for (&(fi, b), histogram) in &data.ok_latency {
        let x = (b as f64 + 0.5) * bucket;
        for (name, q) in [("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0)] {
            let Some(y) = histogram.quantile(q) else {
                continue;
            };
            max_ms = max_ms.max(y);
            lines
                .entry((data.fs[fi].as_str(), name))
                .or_default()
                .push((x, y));
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
        data.end_s,
        (MIN_LATENCY_MS..max_ms).log_scale(),
        (MIN_LATENCY_MS, max_ms),
        "latency (ms, log)",
        &|v| ms_label(*v),
    )?;
    for (&(f, q), pts) in &lines {
        let base = f_colour(f);
        let (opacity, width) = match q {
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
pub fn rate(data: &ChartData, faults: &[FaultInterval], path: &Path) -> Result<()> {
    register_font();
    let bucket = data.bucket_s;
    let max_rate = data
        .completions
        .values()
        .flat_map(|v| v.iter())
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
        data.end_s,
        0f64..max_rate,
        (0.0, max_rate),
        "operations / s",
        &|v| format!("{v:.0}"),
    )?;
    for key in data.series_order(&data.completions) {
        let f = data.fs[key.0].as_str();
        let outcome = key.1.outcome();
        let colour = outcome_colour(f, outcome);
        let style = colour.stroke_width(if outcome == Outcome::Ok { 2 } else { 1 });
        chart
            .draw_series(LineSeries::new(
                data.completions[&key]
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| ((i as f64 + 0.5) * bucket, c as f64 / bucket)),
                style,
            ))
            .map_err(|e| anyhow!("{e}"))?
            .label(format!("{f} {}", outcome_name(outcome)))
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
pub fn draw_all(data: &ChartData, faults: &[FaultInterval], dir: &Path) -> Result<()> {
    latency_raw(data, faults, &dir.join("latency-raw.png"))?;
    latency_quantiles(data, faults, &dir.join("latency-quantiles.png"))?;
    rate(data, faults, &dir.join("rate.png"))?;
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

    /// However many points stream by, a thinned sample holds at most its capacity, evenly
    /// spaced over all of them (every `stride`-th, from the first).
    #[test]
    fn a_thinned_sample_stays_within_capacity_and_even() {
        for total in [1u64, 7, 100, 101, 1_000, 123_457] {
            let mut t = Thinned::new(100);
            for i in 0..total {
                t.push((i as f64, 0.0));
            }
            assert!(t.points.len() <= 100, "{total}: {} held", t.points.len());
            assert!(
                t.points.len() > 100 / 2 || total <= 100,
                "{total}: too thin"
            );
            for (k, p) in t.points.iter().enumerate() {
                assert_eq!(p.0, (k as u64 * t.stride) as f64, "{total}: point {k}");
            }
        }
    }

    /// Quantiles from the histogram are those of an exact sort to within one 2% bin; the
    /// maximum is exact.
    #[test]
    fn histogram_quantiles_are_within_a_bin_of_the_exact_ones() {
        let mut x = 12345u64;
        let mut latencies: Vec<f64> = (0..20_000)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                // 0.05 ms to about 2 s, log-spread.
                0.05 * (1.0 + (x >> 11) as f64 / (1u64 << 53) as f64 * 40_000.0)
            })
            .collect();
        let mut h = LatencyHistogram::new();
        for &l in &latencies {
            h.record(l);
        }
        latencies.sort_by(|a, b| a.total_cmp(b));
        for q in [0.0, 0.5, 0.95, 0.99] {
            let exact = latencies[((latencies.len() - 1) as f64 * q).round() as usize];
            let got = h.quantile(q).expect("not empty");
            let ratio = got / exact;
            assert!(
                (1.0 / LATENCY_BIN_GROWTH..=LATENCY_BIN_GROWTH).contains(&ratio),
                "q {q}: {got} vs exact {exact}"
            );
        }
        assert_eq!(h.quantile(1.0), latencies.last().copied());
        assert_eq!(LatencyHistogram::new().quantile(0.5), None);
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
        let charts = crate::summary::summarise_events(&events).charts;
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
        draw_all(&charts, &faults, &dir).unwrap();
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
