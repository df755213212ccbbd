//! Counterexamples: built from a failed search, rendered as text and as an HTML timeline.

use super::model::{Model, Prepared};
use super::search::Stuck;
use super::{Counterexample, LinearReport};
use crate::history::{Operation, Outcome};
use crate::value::Value;
use crate::Verdict;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// One operation of the failing partition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CxOp {
    pub process: String,
    pub f: String,
    pub input: Value,
    pub output: Value,
    pub outcome: Outcome,
    /// Event positions in the history (0-based) of the invocation and the completion.
    pub invoke_index: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete_index: Option<usize>,
    /// Source lines (1-based), when the history came from a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoke_line: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete_line: Option<usize>,
    pub invoke_time: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete_time: Option<i64>,
    /// An unknown op dropped up front (choosing "never happened" is always allowed for it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pruned: bool,
    /// `p3 cas [1 2] ok`, `p0 read -> 3`.
    pub description: String,
}

/// A step of a linearizable prefix: the op (index into `Counterexample::ops`) and the state
/// after it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CxStep {
    pub op: usize,
    pub state: String,
}

/// A longest linearizable prefix and the operation that cannot be placed after it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CxPrefix {
    pub steps: Vec<CxStep>,
    /// The state after the prefix.
    pub state: String,
    /// The op (index into `Counterexample::ops`) that completed before it could take effect.
    pub stuck: usize,
    /// Why it cannot go here, in words.
    pub reason: String,
    /// The other operations that could still go at this point, each with what it would do;
    /// every order of them was tried.
    pub candidates: Vec<CxCandidate>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CxCandidate {
    pub op: usize,
    /// The state it would lead to, or `None` if it is impossible in the prefix's state.
    pub state: Option<String>,
}

fn describe_op(op: &Operation) -> String {
    let arg = if op.input.is_null() {
        String::new()
    } else {
        format!(" {}", op.input.to_edn())
    };
    let result = match op.outcome {
        Outcome::Info => " (unknown outcome)".to_string(),
        Outcome::Fail => " failed".to_string(),
        Outcome::Ok if op.output == op.input && !op.input.is_null() => " ok".to_string(),
        Outcome::Ok if op.output.is_null() && !op.input.is_null() => " ok".to_string(),
        Outcome::Ok => format!(" -> {}", op.output.to_edn()),
    };
    format!("p{} {}{arg}{result}", op.process, op.f)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn build_counterexample<M: Model + ?Sized>(
    model: &M,
    ctx: &M::Ctx,
    line_of: &dyn Fn(usize) -> Option<usize>,
    ops: &[Operation],
    key: &Option<Value>,
    prepared: &[Prepared<M>],
    pruned: &[bool],
    stuck: &[Stuck],
) -> Counterexample {
    let cx_ops: Vec<CxOp> = prepared
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let op = &ops[p.op];
            CxOp {
                process: op.process.to_string(),
                f: op.f.clone(),
                input: op.input.clone(),
                output: op.output.clone(),
                outcome: op.outcome,
                invoke_index: op.invoke_pos,
                complete_index: op.complete_pos,
                invoke_line: line_of(op.invoke_pos),
                complete_line: op.complete_pos.and_then(line_of),
                invoke_time: op.invoke_time,
                complete_time: op.complete_time,
                pruned: pruned.get(i).copied().unwrap_or(false),
                description: describe_op(op),
            }
        })
        .collect();
    let prefixes = stuck
        .iter()
        .map(|s| {
            let mut state = model.init(ctx);
            let mut steps = Vec::with_capacity(s.prefix.len());
            for &i in &s.prefix {
                let p = &prepared[i];
                match model.step(ctx, &state, &p.input, p.output.as_ref()) {
                    // An unknown op that changed nothing is the same as one that never
                    // happened: leave it out of the story.
                    Some(next) if p.optional() && next == state => continue,
                    Some(next) => state = next,
                    None => break, // cannot happen: the search took this step
                }
                steps.push(CxStep {
                    op: i,
                    state: model.describe_state(ctx, &state),
                });
            }
            let state_text = model.describe_state(ctx, &state);
            let stuck_op = &prepared[s.op];
            let reason = match model.step(ctx, &state, &stuck_op.input, stuck_op.output.as_ref()) {
                None => format!("it is impossible in state {state_text}"),
                Some(_) => format!(
                    "it could take effect in state {state_text}, but then the operations that \
                     must follow cannot all be placed"
                ),
            };
            let in_prefix: std::collections::HashSet<usize> = s.prefix.iter().copied().collect();
            let bound = stuck_op.ret.unwrap_or(usize::MAX);
            let candidates = prepared
                .iter()
                .enumerate()
                .filter(|&(i, p)| {
                    i != s.op
                        && !in_prefix.contains(&i)
                        && !pruned.get(i).copied().unwrap_or(false)
                        && p.call < bound
                })
                .map(|(i, p)| CxCandidate {
                    op: i,
                    state: model
                        .step(ctx, &state, &p.input, p.output.as_ref())
                        .map(|n| model.describe_state(ctx, &n)),
                })
                .collect();
            CxPrefix {
                steps,
                state: state_text,
                stuck: s.op,
                reason,
                candidates,
            }
        })
        .collect();
    Counterexample {
        key: key.clone().unwrap_or(Value::Null),
        model: model.name().to_string(),
        ops: cx_ops,
        prefixes,
    }
}

/// The reason with any long state in it shortened.
fn short_reason(reason: &str) -> String {
    reason
        .split(' ')
        .map(|w| {
            if w.chars().count() > TEXT_WIDTH {
                short(w)
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn events_text(op: &CxOp) -> String {
    let events = match op.complete_index {
        Some(c) => format!("events {}-{}", op.invoke_index, c),
        None => format!("event {}, never completed", op.invoke_index),
    };
    match (op.invoke_line, op.complete_line) {
        (Some(a), Some(b)) => format!("{events}, lines {a}-{b}"),
        (Some(a), None) => format!("{events}, line {a}"),
        _ => events,
    }
}

const SHOWN_STEPS: usize = 15;
/// Longer states and descriptions are cut in the middle in text output (JSON and HTML keep
/// them whole).
const TEXT_WIDTH: usize = 48;

fn short(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= TEXT_WIDTH {
        return s.to_string();
    }
    let head: String = chars[..TEXT_WIDTH / 3].iter().collect();
    let tail: String = chars[chars.len() - (TEXT_WIDTH - TEXT_WIDTH / 3 - 1)..]
        .iter()
        .collect();
    format!("{head}…{tail}")
}
const SHOWN_CANDIDATES: usize = 12;

pub(crate) fn counterexample_text(cx: &Counterexample, out: &mut String) {
    let Some(first) = cx.prefixes.first() else {
        let _ = writeln!(out, "  (no operation could be placed at all)");
        return;
    };
    let key = if cx.key.is_null() {
        String::new()
    } else {
        format!("key {}, ", cx.key.to_edn())
    };
    let _ = writeln!(
        out,
        "First failing partition: {key}{} operations. Longest linearizable prefix: {} \
         operation{}.",
        cx.ops.len(),
        first.steps.len(),
        if first.steps.len() == 1 { "" } else { "s" }
    );
    let skip = first.steps.len().saturating_sub(SHOWN_STEPS);
    if skip > 0 {
        let _ = writeln!(
            out,
            "  ... {skip} earlier steps not shown (see --json or --html)"
        );
    }
    let width = first
        .steps
        .iter()
        .skip(skip)
        .map(|s| short(&cx.ops[s.op].description).chars().count())
        .max()
        .unwrap_or(0);
    for (n, s) in first.steps.iter().enumerate().skip(skip) {
        let op = &cx.ops[s.op];
        let _ = writeln!(
            out,
            "  {:>4}. {:<width$}  => {:<12} ({})",
            n + 1,
            short(&op.description),
            short(&s.state),
            events_text(op)
        );
    }
    let stuck = &cx.ops[first.stuck];
    let _ = writeln!(
        out,
        "Then {} ({}) cannot take effect:\n  it completed at event {} without having taken \
         effect, and {}.",
        short(&stuck.description),
        events_text(stuck),
        stuck
            .complete_index
            .map_or("?".to_string(), |c| c.to_string()),
        short_reason(&first.reason)
    );
    if first.candidates.is_empty() {
        let _ = writeln!(out, "  No other operation could go first.");
    } else {
        let _ = writeln!(
            out,
            "  The other operations that could still go first, in every order tried, lead \
             nowhere:"
        );
        for c in first.candidates.iter().take(SHOWN_CANDIDATES) {
            let op = &cx.ops[c.op];
            let effect = match &c.state {
                Some(s) => format!("=> {}", short(s)),
                None => format!("impossible in state {}", short(&first.state)),
            };
            let _ = writeln!(out, "    {:<width$}  {effect}", short(&op.description));
        }
        if first.candidates.len() > SHOWN_CANDIDATES {
            let _ = writeln!(
                out,
                "    ... and {} more",
                first.candidates.len() - SHOWN_CANDIDATES
            );
        }
    }
    for other in cx.prefixes.iter().skip(1) {
        let op = &cx.ops[other.stuck];
        let _ = writeln!(
            out,
            "Another prefix of the same length ends in state {} with {} unplaceable ({}).",
            short(&other.state),
            short(&op.description),
            events_text(op)
        );
    }
}

pub(crate) fn text(r: &LinearReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", r.summary);
    let _ = writeln!(
        out,
        "  model {}: {} operations ({} unknown outcome, {} failed), {} partition{}{}",
        r.model,
        r.operations,
        r.indeterminate,
        r.failed,
        r.partitions.total,
        if r.partitions.total == 1 { "" } else { "s" },
        if r.pruned > 0 {
            format!(
                "; {} unknown write{} nobody observed dropped",
                r.pruned,
                if r.pruned == 1 { "" } else { "s" }
            )
        } else {
            String::new()
        }
    );
    if r.verdict == Verdict::Unknown && !r.unknown_partitions.is_empty() {
        let _ = writeln!(out, "  undecided keys: {}", r.unknown_partitions.join(", "));
    }
    if r.invalid_partitions.len() > 1 {
        let _ = writeln!(
            out,
            "  failing keys: {}{}",
            r.invalid_partitions.join(", "),
            if r.partitions.invalid > r.invalid_partitions.len() {
                ", ..."
            } else {
                ""
            }
        );
    }
    if let Some(cx) = &r.counterexample {
        counterexample_text(cx, &mut out);
    }
    out
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// How many prefix steps before the stuck op the timeline shows at most.
const TIMELINE_STEPS: usize = 60;
/// Horizontal space per event position in the timeline.
const STEP_PX: usize = 26;
/// Width of the fixed column of process names.
const NAMES_PX: usize = 96;
/// Height of one process row.
const ROW_PX: usize = 34;
/// Space above the first row.
const TOP_PX: usize = 16;
/// Advance of one character of the timeline's 12 px monospace font, rounded up: DejaVu Sans
/// Mono, Menlo, Consolas and SF Mono all advance 0.6 em (7.2 px), so this never underestimates.
const CHAR_PX: f64 = 7.5;
/// How far past the last event a row's last label may reach.
const MAX_TAIL_LABEL_PX: usize = 360;
/// Space between a bar's edge and its label.
const LABEL_PAD_PX: usize = 4;

fn text_px(chars: usize) -> f64 {
    chars as f64 * CHAR_PX
}

/// `label` cut to at most `space_px` of width, with an ellipsis where it was cut; empty when not
/// even one character and the ellipsis fit.
pub(crate) fn fit_label(label: &str, space_px: usize) -> String {
    let max_chars = (space_px as f64 / CHAR_PX).floor() as usize;
    let chars: Vec<char> = label.chars().collect();
    if chars.len() <= max_chars {
        return label.to_string();
    }
    if max_chars < 2 {
        return String::new();
    }
    let mut out: String = chars[..max_chars - 1].iter().collect();
    out.push('…');
    out
}

/// Where a bar's label goes and what it says.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LabelPlace {
    /// Left edge of the text.
    pub x: usize,
    /// The label, whole or shortened with an ellipsis (possibly empty).
    pub text: String,
    /// Inside the bar, or beside it (to its right, in the free part of the lane).
    pub inside: bool,
}

/// Places the label of the bar `x0..x1`, whose lane is free up to `free_to` (where the next bar
/// of the same process begins, or the picture ends): inside the bar when it fits there, else
/// just after the bar when it fits in the free lane, else shortened into the roomier of the two.
/// The text never reaches past the bar (inside) or `free_to` (beside), so labels never run into
/// other bars.
pub(crate) fn place_label(label: &str, x0: usize, x1: usize, free_to: usize) -> LabelPlace {
    let n = label.chars().count();
    let inside_px = x1.saturating_sub(x0 + 2 * LABEL_PAD_PX);
    let beside_x = x1 + LABEL_PAD_PX;
    let beside_px = free_to.saturating_sub(beside_x + 2 * LABEL_PAD_PX);
    let inside = |text: String| LabelPlace {
        x: x0 + LABEL_PAD_PX,
        text,
        inside: true,
    };
    let beside = |text: String| LabelPlace {
        x: beside_x,
        text,
        inside: false,
    };
    if text_px(n) <= inside_px as f64 {
        inside(label.to_string())
    } else if text_px(n) <= beside_px as f64 {
        beside(label.to_string())
    } else if beside_px > inside_px {
        beside(fit_label(label, beside_px))
    } else {
        inside(fit_label(label, inside_px))
    }
}

/// The text on an operation's bar: its step number, then the description without the process
/// (the row says which) and with "?" for an unknown outcome (the dashed outline says so too).
fn bar_label(o: &CxOp, step: Option<usize>) -> String {
    let own = format!("p{} ", o.process);
    let d = o.description.strip_prefix(&own).unwrap_or(&o.description);
    let d = d.replace(" (unknown outcome)", " ?");
    match step {
        Some(n) => format!("{}: {d}", n + 1),
        None => d,
    }
}

/// The timeline of a counterexample as a self-contained HTML fragment (a legend, then the
/// process names in a fixed column beside a horizontally scrolling `<svg>`), for embedding into
/// reports: one row per process, each operation a bar from invocation to completion, the
/// linearized prefix green and numbered in order, the operation that cannot be placed red, the
/// other candidates orange. Labels that do not fit are shortened with an ellipsis; hovering a
/// bar shows the whole operation and the state after it.
pub fn timeline_html(cx: &Counterexample) -> String {
    let Some(prefix) = cx.prefixes.first() else {
        return String::from("<p>No operation could be placed.</p>");
    };
    let mut step_of = vec![None; cx.ops.len()];
    for (n, s) in prefix.steps.iter().enumerate() {
        step_of[s.op] = Some(n);
    }
    let candidate: std::collections::HashSet<usize> =
        prefix.candidates.iter().map(|c| c.op).collect();
    let candidate_state: std::collections::HashMap<usize, Option<String>> = prefix
        .candidates
        .iter()
        .map(|c| (c.op, c.state.clone()))
        .collect();

    // The window: from the invocation of the earliest shown prefix step to the stuck op's
    // completion, widened to the candidates.
    let first_shown = prefix.steps.len().saturating_sub(TIMELINE_STEPS);
    let stuck = &cx.ops[prefix.stuck];
    let mut lo = prefix
        .steps
        .get(first_shown)
        .map_or(stuck.invoke_index, |s| cx.ops[s.op].invoke_index)
        .min(stuck.invoke_index);
    for &c in &candidate {
        lo = lo.min(cx.ops[c].invoke_index);
    }
    let hi = stuck.complete_index.unwrap_or(stuck.invoke_index);
    let shown: Vec<usize> = (0..cx.ops.len())
        .filter(|&i| {
            let o = &cx.ops[i];
            let end = o.complete_index.unwrap_or(usize::MAX);
            (o.invoke_index <= hi && end >= lo)
                && (step_of[i].is_none_or(|n| n >= first_shown)
                    || candidate.contains(&i)
                    || i == prefix.stuck)
        })
        .collect();

    // x positions: dense ranks of the event positions shown.
    let mut points: Vec<usize> = Vec::new();
    for &i in &shown {
        let o = &cx.ops[i];
        points.push(o.invoke_index);
        if let Some(c) = o.complete_index {
            points.push(c);
        }
    }
    points.sort_unstable();
    points.dedup();
    let rank = |p: usize| points.partition_point(|&q| q < p);
    let width = STEP_PX * (points.len() + 2);

    let mut processes: Vec<&str> = shown.iter().map(|&i| cx.ops[i].process.as_str()).collect();
    processes.sort_by_key(|p| (p.parse::<u64>().unwrap_or(u64::MAX), p.to_string()));
    processes.dedup();
    let height = TOP_PX + ROW_PX * processes.len() + 4;

    // Bars first, so each label knows where the next bar of its row begins.
    struct Bar {
        op: usize,
        row: usize,
        x0: usize,
        x1: usize,
    }
    let bars: Vec<Bar> = shown
        .iter()
        .map(|&i| {
            let o = &cx.ops[i];
            let x0 = STEP_PX * rank(o.invoke_index) + 4;
            let x1 = match o.complete_index {
                Some(c) => STEP_PX * rank(c) + STEP_PX - 4,
                None => width - 4,
            };
            Bar {
                op: i,
                row: processes.iter().position(|p| *p == o.process).unwrap_or(0),
                x0,
                x1: x1.max(x0 + 6),
            }
        })
        .collect();
    // The last bar of a row may put its label past the last event: the picture widens for it
    // (the stuck op is often last, and its label matters most).
    let free_to = |b: &Bar| {
        bars.iter()
            .filter(|o| o.row == b.row && o.x0 > b.x0)
            .map(|o| o.x0)
            .min()
            .unwrap_or(b.x1.max(width) + MAX_TAIL_LABEL_PX)
    };
    let places: Vec<LabelPlace> = bars
        .iter()
        .map(|b| {
            place_label(
                &bar_label(&cx.ops[b.op], step_of[b.op]),
                b.x0,
                b.x1,
                free_to(b),
            )
        })
        .collect();
    let width = places
        .iter()
        .map(|p| p.x + text_px(p.text.chars().count()).ceil() as usize + LABEL_PAD_PX)
        .fold(width, usize::max);

    let mut names = String::new();
    let _ = write!(
        names,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{NAMES_PX}" height="{height}" class="timeline names">"#
    );
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" class="timeline">"#
    );
    for (row, p) in processes.iter().enumerate() {
        let y = TOP_PX + row * ROW_PX;
        let _ = write!(
            names,
            r#"<text x="4" y="{}" class="proc">process {}</text><line x1="0" x2="{NAMES_PX}" y1="{}" y2="{}" class="lane"/>"#,
            y + 20,
            esc(p),
            y + ROW_PX - 2,
            y + ROW_PX - 2
        );
        let _ = write!(
            svg,
            r#"<line x1="0" x2="{width}" y1="{}" y2="{}" class="lane"/>"#,
            y + ROW_PX - 2,
            y + ROW_PX - 2
        );
    }
    names.push_str("</svg>");
    for (b, place) in bars.iter().zip(&places) {
        let i = b.op;
        let o = &cx.ops[i];
        let y = TOP_PX + b.row * ROW_PX + 4;
        let (class, note) = if i == prefix.stuck {
            ("stuck", format!("cannot be placed: {}", prefix.reason))
        } else if let Some(n) = step_of[i] {
            (
                "lin",
                format!(
                    "step {} of the prefix; state after: {}",
                    n + 1,
                    prefix.steps[n].state
                ),
            )
        } else if candidate.contains(&i) {
            let what = match candidate_state.get(&i).cloned().flatten() {
                Some(s) => format!("could go here (state would be {s}) but leads nowhere"),
                None => format!("impossible in state {}", prefix.state),
            };
            ("cand", what)
        } else if o.pruned {
            (
                "pruned",
                "unknown outcome, value never observed: dropped".to_string(),
            )
        } else {
            ("other", "not reached".to_string())
        };
        let info = if o.outcome == Outcome::Info {
            " info"
        } else {
            ""
        };
        let heading = match step_of[i] {
            Some(n) => format!("step {}: {}", n + 1, o.description),
            None => o.description.clone(),
        };
        let _ = write!(
            svg,
            r#"<g class="op {class}{info}"><title>{}&#10;{}&#10;{}</title><rect x="{}" y="{y}" width="{}" height="{}" rx="4"/><text x="{}" y="{}"{}>{}</text></g>"#,
            esc(&heading),
            esc(&events_text(o)),
            esc(&note),
            b.x0,
            b.x1 - b.x0,
            ROW_PX - 10,
            place.x,
            y + 16,
            if place.inside {
                ""
            } else {
                r#" class="beside""#
            },
            esc(&place.text)
        );
    }
    svg.push_str("</svg>");

    let mut out = String::new();
    let _ = write!(
        out,
        r#"<p class="stuck-note"><span class="sw stuck"></span><b>{}</b> ({}) cannot be placed: {}.</p>
<div class="legend"><span class="sw lin"></span>linearized prefix (numbered in order)
<span class="sw stuck"></span>cannot be placed <span class="sw cand"></span>could go first, leads nowhere
<span class="sw other"></span>later <span class="sw pruned"></span>unknown, never observed: dropped
<span class="sw info"></span>dashed, ?: unknown outcome
&nbsp; Time runs left to right in event order; hover a bar for the whole operation{}</div>
<div class="tl">{names}<div class="scroll">{svg}</div></div>
<script>window.addEventListener('load', function () {{ document.querySelectorAll('.tl .scroll').forEach(function (e) {{ e.scrollLeft = e.scrollWidth; }}); }});</script>"#,
        esc(&stuck.description),
        esc(&events_text(stuck)),
        esc(&prefix.reason),
        if shown.len() < cx.ops.len() {
            format!(
                " &nbsp; (showing {} of the partition's {} operations around the failure)",
                shown.len(),
                cx.ops.len()
            )
        } else {
            String::new()
        }
    );
    out
}

/// CSS for `timeline_html`.
pub const TIMELINE_CSS: &str = r#"
.tl { display: flex; border: 1px solid #ddd; background: #fcfcfc; }
.tl .names { flex: none; border-right: 1px solid #ddd; background: #f4f4f4; }
.scroll { overflow-x: auto; flex: 1 1 auto; }
.timeline text { font: 12px "DejaVu Sans Mono", ui-monospace, monospace; white-space: pre; }
.timeline .proc { fill: #333; font-weight: bold; }
.timeline .lane { stroke: #e4e4e4; }
.op rect { stroke: #555; stroke-width: 1; }
.op text { fill: #111; pointer-events: none; }
.op text.beside { fill: #333; }
.op.lin rect { fill: #b7e4b0; }
.op.stuck rect { fill: #f28b82; stroke: #b00; stroke-width: 2; }
.op.stuck text { font-weight: bold; }
.op.cand rect { fill: #ffd27f; }
.op.other rect { fill: #e8e8e8; }
.op.pruned rect { fill: #f6f6f6; stroke-dasharray: 2 2; }
.op.info rect { stroke-dasharray: 5 3; }
.op:hover rect { stroke: #000; stroke-width: 2; }
.legend { font: 13px sans-serif; margin: 6px 0; line-height: 1.6; }
.stuck-note { font: 14px sans-serif; margin: 6px 0; overflow-wrap: anywhere; }
.sw { display: inline-block; width: 14px; height: 10px; border: 1px solid #555; margin: 0 4px 0 10px; }
.stuck-note .sw { margin-left: 0; }
.sw.lin { background: #b7e4b0; } .sw.stuck { background: #f28b82; } .sw.cand { background: #ffd27f; }
.sw.other { background: #e8e8e8; } .sw.pruned { background: #f6f6f6; border-style: dashed; }
.sw.info { background: #fff; border-style: dashed; }
"#;

pub(crate) fn html_page(r: &LinearReport, title: &str) -> String {
    let verdict_class = match r.verdict {
        Verdict::Valid => "valid",
        Verdict::Invalid => "invalid",
        Verdict::Unknown => "unknown",
    };
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<h1>{}</h1><p class="verdict {verdict_class}">{}</p>"#,
        esc(title),
        esc(&r.summary)
    );
    if let Some(cx) = &r.counterexample {
        body.push_str(&timeline_html(cx));
    }
    let _ = write!(body, "<pre>{}</pre>", esc(&text(r)));
    format!(
        r#"<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{}</title>
<style>
body {{ font-family: sans-serif; margin: 20px; }}
h1 {{ font-size: 22px; overflow-wrap: anywhere; }}
.verdict {{ font-size: 18px; font-weight: bold; }}
.verdict.valid {{ color: #186a1f; }} .verdict.invalid {{ color: #b00; }} .verdict.unknown {{ color: #a66a00; }}
pre {{ background: #f6f6f6; padding: 10px; overflow-x: auto; }}
{TIMELINE_CSS}
</style></head><body>{body}</body></html>
"#,
        esc(title)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(process: &str, description: &str, invoke: usize, complete: usize) -> CxOp {
        CxOp {
            process: process.to_string(),
            f: "write".to_string(),
            input: Value::Null,
            output: Value::Null,
            outcome: Outcome::Ok,
            invoke_index: invoke,
            complete_index: Some(complete),
            invoke_line: None,
            complete_line: None,
            invoke_time: invoke as i64,
            complete_time: Some(complete as i64),
            pruned: false,
            description: description.to_string(),
        }
    }

    /// The `<title>` and `<text>` of the bar whose class starts with `class`.
    fn bar_parts<'a>(html: &'a str, class: &str) -> (&'a str, &'a str) {
        let start = html
            .find(&format!("<g class=\"op {class}"))
            .unwrap_or_else(|| panic!("no {class} bar in {html}"));
        let g = &html[start..start + html[start..].find("</g>").expect("closed group")];
        let between = |open: &str, close: &str| {
            let a = g.find(open).expect("opening tag") + open.len();
            let a = a + g[a..].find('>').expect("end of tag") + 1;
            &g[a..a + g[a..].find(close).expect("closing tag")]
        };
        (between("<title", "</title>"), between("<text", "</text>"))
    }

    #[test]
    fn a_long_label_is_shortened_and_whole_in_the_tooltip() {
        let long = format!("p1 write \"{}\" ok", "v".repeat(120));
        let cx = Counterexample {
            key: Value::Null,
            model: "register".into(),
            ops: vec![op("1", &long, 0, 1), op("2", "p2 read -> \"x\"", 2, 3)],
            prefixes: vec![CxPrefix {
                steps: vec![CxStep {
                    op: 0,
                    state: "\"v\"".into(),
                }],
                state: "\"v\"".into(),
                stuck: 1,
                reason: "it is impossible in state \"v\"".into(),
                candidates: vec![],
            }],
        };
        let html = timeline_html(&cx);
        let (title, text) = bar_parts(&html, "lin");
        assert!(
            title.contains(&esc(&long)),
            "the tooltip holds the whole operation: {title}"
        );
        assert!(text.ends_with('…'), "the label is cut: {text}");
        assert!(
            text.starts_with("1: write"),
            "the step number leads: {text}"
        );
        assert!(
            text.chars().count() < long.chars().count() / 2,
            "the label fits the space it has: {text}"
        );
        // The short label of the stuck op fits whole.
        let (title, text) = bar_parts(&html, "stuck");
        assert_eq!(text, esc("read -> \"x\""));
        assert!(title.contains("cannot be placed"), "{title}");
    }

    #[test]
    fn fitted_labels_never_exceed_their_space() {
        let label = "12: cas [100 200] ?";
        for space_px in 0..200 {
            let fitted = fit_label(label, space_px);
            let n = fitted.chars().count();
            assert!(text_px(n) <= space_px as f64, "{fitted:?} in {space_px} px");
            if text_px(label.chars().count()) <= space_px as f64 {
                assert_eq!(fitted, label);
            } else if !fitted.is_empty() {
                assert!(fitted.ends_with('…'), "{fitted:?}");
                assert!(label.starts_with(fitted.trim_end_matches('…')));
            }
        }
    }

    #[test]
    fn placed_labels_stay_inside_their_bar_or_the_free_lane() {
        let labels = ["", "7", "3: read -> 1", "31: write 4 ?", &"x".repeat(80)];
        for label in labels {
            for x0 in [0usize, 4, 30] {
                for bar_px in [0usize, 6, 18, 44, 70, 200] {
                    for free_px in [0usize, 3, 10, 40, 120, 600] {
                        let x1 = x0 + bar_px;
                        let free_to = x1 + free_px;
                        let p = place_label(label, x0, x1, free_to);
                        if p.text.is_empty() {
                            continue;
                        }
                        let end = p.x as f64 + text_px(p.text.chars().count());
                        if p.inside {
                            assert!(p.x >= x0, "{p:?}");
                            assert!(end <= x1 as f64, "{label:?} {x0} {x1} {free_to}: {p:?}");
                        } else {
                            assert!(p.x >= x1, "{p:?}");
                            assert!(
                                end <= free_to as f64,
                                "{label:?} {x0} {x1} {free_to}: {p:?}"
                            );
                        }
                        if text_px(label.chars().count()) + 8.0 <= bar_px as f64 {
                            assert!(p.inside && p.text == label, "fits inside: {p:?}");
                        }
                    }
                }
            }
        }
    }
}
