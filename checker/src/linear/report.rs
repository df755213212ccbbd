//! Counterexamples: built from a failed search, rendered as text and as an HTML timeline.

use super::model::{Model, Prepared};
use super::search::Stuck;
use super::{Counterexample, LinearReport};
use crate::history::{History, Operation, Outcome};
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
    history: &History,
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
                invoke_line: history.line_of(op.invoke_pos),
                complete_line: op.complete_pos.and_then(|c| history.line_of(c)),
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

/// The timeline of a counterexample as a self-contained HTML fragment (an `<svg>` plus a legend),
/// for embedding into reports: one row per process, each operation a bar from invocation to
/// completion, the linearized prefix green and numbered in order, the operation that cannot be
/// placed red, the other candidates orange. Hovering a bar shows the operation and the state
/// after it.
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
    const STEP_PX: usize = 26;
    const LEFT: usize = 90;
    const ROW: usize = 34;
    let width = LEFT + STEP_PX * (points.len() + 2);

    let mut processes: Vec<&str> = shown.iter().map(|&i| cx.ops[i].process.as_str()).collect();
    processes.sort_by_key(|p| (p.parse::<u64>().unwrap_or(u64::MAX), p.to_string()));
    processes.dedup();
    let height = 30 + ROW * processes.len();

    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" class="timeline">"#
    );
    for (row, p) in processes.iter().enumerate() {
        let y = 20 + row * ROW;
        let _ = write!(
            svg,
            r#"<text x="4" y="{}" class="proc">process {}</text><line x1="{LEFT}" x2="{width}" y1="{}" y2="{}" class="lane"/>"#,
            y + 17,
            esc(p),
            y + ROW - 2,
            y + ROW - 2
        );
    }
    for &i in &shown {
        let o = &cx.ops[i];
        let row = processes.iter().position(|p| *p == o.process).unwrap_or(0);
        let y = 20 + row * ROW + 4;
        let x0 = LEFT + STEP_PX * rank(o.invoke_index) + 4;
        let x1 = match o.complete_index {
            Some(c) => LEFT + STEP_PX * rank(c) + STEP_PX - 4,
            None => width - 4,
        };
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
        let label = match step_of[i] {
            Some(n) => format!("{}: {}", n + 1, o.description),
            None => o.description.clone(),
        };
        let _ = write!(
            svg,
            r#"<g class="op {class}{info}"><title>{}&#10;{}&#10;{}</title><rect x="{x0}" y="{y}" width="{}" height="{}" rx="4"/><text x="{}" y="{}">{}</text></g>"#,
            esc(&o.description),
            esc(&events_text(o)),
            esc(&note),
            x1.saturating_sub(x0).max(6),
            ROW - 10,
            x0 + 4,
            y + 16,
            esc(&label)
        );
    }
    svg.push_str("</svg>");

    let mut out = String::new();
    let _ = write!(
        out,
        r#"<div class="legend"><span class="sw lin"></span>linearized prefix (numbered in order)
<span class="sw stuck"></span>cannot be placed <span class="sw cand"></span>could go first, leads nowhere
<span class="sw other"></span>later <span class="sw pruned"></span>unknown, never observed: dropped
&nbsp; hover a bar for details{}</div><div class="scroll">{svg}</div>
<script>document.querySelectorAll('.scroll').forEach(function (e) {{ e.scrollLeft = e.scrollWidth; }});</script>"#,
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
.scroll { overflow-x: auto; border: 1px solid #ddd; background: #fcfcfc; }
.timeline text { font: 12px ui-monospace, monospace; }
.timeline .proc { fill: #444; font-weight: bold; }
.timeline .lane { stroke: #eee; }
.op rect { stroke: #555; stroke-width: 1; }
.op text { fill: #111; pointer-events: none; }
.op.lin rect { fill: #b7e4b0; }
.op.stuck rect { fill: #f28b82; stroke: #b00; stroke-width: 2; }
.op.cand rect { fill: #ffd27f; }
.op.other rect { fill: #e8e8e8; }
.op.pruned rect { fill: #f6f6f6; stroke-dasharray: 2 2; }
.op.info rect { stroke-dasharray: 5 3; }
.op:hover rect { stroke: #000; stroke-width: 2; }
.legend { font: 13px sans-serif; margin: 6px 0; }
.sw { display: inline-block; width: 14px; height: 10px; border: 1px solid #555; margin: 0 4px 0 10px; }
.sw.lin { background: #b7e4b0; } .sw.stuck { background: #f28b82; } .sw.cand { background: #ffd27f; }
.sw.other { background: #e8e8e8; } .sw.pruned { background: #f6f6f6; border-style: dashed; }
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
.verdict {{ font-size: 18px; font-weight: bold; }}
.verdict.valid {{ color: #186a1f; }} .verdict.invalid {{ color: #b00; }} .verdict.unknown {{ color: #a66a00; }}
pre {{ background: #f6f6f6; padding: 10px; overflow-x: auto; }}
{TIMELINE_CSS}
</style></head><body>{body}</body></html>
"#,
        esc(title)
    )
}
