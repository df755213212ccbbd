//! The checks a run's verdict is made of: the workload's own checker (linearizability per key),
//! stats, availability, a scan of node logs for panics, and convergence of replica digests.
//! The run's verdict is the worst of them.

use crate::nemesis::FaultKind;
use crate::summary::HistorySummary;
use ordeal_checker::read::{self, Format};
use ordeal_checker::txn::{self, Consistency, TxnOptions, TxnResult, Workload};
use ordeal_checker::{Event, EventType, History, Process, Value, Verdict};
use ordeal_workloads::{bank, WorkloadKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// One checker's answer, as results.json records it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckOutcome {
    pub name: String,
    pub verdict: Verdict,
    /// One line a person reads first.
    pub summary: String,
    /// Machine-readable detail (counterexample, counts, ...).
    #[serde(default)]
    pub details: serde_json::Value,
    /// An HTML fragment (the counterexample timeline), embedded in the report as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
}

/// The workload's checker over a history file. This is the one place that calls into
/// `ordeal_checker`'s checkers for a run, so their API's shape is confined here. Each reads the
/// file itself: the transactional checkers into their compact per-key form, the bank checker a
/// bounded batch of reads at a time, the linearizability checker through
/// [`check_linear_file`].
pub fn check_workload(
    history: &Path,
    format: Format,
    workload: WorkloadKind,
    protocol: ordeal_workloads::Protocol,
    time_budget_s: u64,
    consistency: Consistency,
) -> CheckOutcome {
    use ordeal_checker::linear::{CheckOptions, ModelKind, ModelOptions};
    let kind = match workload {
        WorkloadKind::Register => ModelKind::CasRegister,
        WorkloadKind::Kv => ModelKind::Kv,
        WorkloadKind::ListAppend => {
            return check_txn(
                history,
                format,
                Workload::ListAppend,
                consistency,
                time_budget_s,
            )
        }
        WorkloadKind::RwRegister => {
            return check_txn(
                history,
                format,
                Workload::RwRegister,
                consistency,
                time_budget_s,
            )
        }
        WorkloadKind::Bank => return check_bank(history, format, protocol),
    };
    let options = CheckOptions {
        timeout: Some(std::time::Duration::from_secs(time_budget_s.max(1))),
        ..CheckOptions::default()
    };
    // A failed cas is not taken as an observation of the register: a cas can fail with 503
    // (no leader), which says nothing about the value, and the history does not tell the two
    // apart by type.
    let model_options = ModelOptions {
        failed_cas_observed: false,
    };
    match check_linear_file(kind, model_options, history, format, &options) {
        Ok(report) => {
            let mut details = serde_json::to_value(&report).unwrap_or_default();
            let stuck = annotate_nodes(&mut details, history, format);
            CheckOutcome {
                name: "linearizable".into(),
                verdict: report.verdict,
                summary: format!(
                    "{} (model {}, per key){}",
                    report.summary,
                    report.model,
                    stuck
                        .map(|s| format!("; no order admits {s}"))
                        .unwrap_or_default()
                ),
                html: (report.verdict == Verdict::Invalid)
                    .then(|| report.to_html(&format!("{} counterexample", report.model))),
                details,
            }
        }
        Err(e) => CheckOutcome {
            name: "linearizable".into(),
            verdict: Verdict::Unknown,
            summary: format!("the history could not be checked: {e}"),
            details: serde_json::Value::Null,
            html: None,
        },
    }
}

/// The linearizability checker on a history file, streamed: the checker spills each key's
/// operations to a temporary file in one pass and checks the keys a batch at a time, so memory
/// is bounded by the largest key, not by the run's length.
pub fn check_linear_file(
    kind: ordeal_checker::linear::ModelKind,
    model_options: ordeal_checker::linear::ModelOptions,
    path: &Path,
    format: Format,
    options: &ordeal_checker::linear::CheckOptions,
) -> Result<ordeal_checker::linear::LinearReport, ordeal_checker::HistoryError> {
    ordeal_checker::linear::check_kind_path(kind, model_options, path, format, options)
}

/// Adds to every op of a linearizability counterexample the node that served it (from its
/// invoke event, found by a pass over the file for just those events), and returns the op no
/// linearization gets past, e.g. `p25 read -> 53 (node n1)`: on a stale read, the read and the
/// node that answered it.
fn annotate_nodes(
    details: &mut serde_json::Value,
    history: &Path,
    format: Format,
) -> Option<String> {
    let ce = details.get_mut("counterexample")?;
    let stuck = ce["prefixes"]
        .as_array()
        .and_then(|p| p.iter().filter_map(|p| p["stuck"].as_u64()).max());
    let ops = ce.get_mut("ops")?.as_array_mut()?;
    let wanted: std::collections::BTreeSet<u64> = ops
        .iter()
        .filter_map(|op| op["invoke_index"].as_u64())
        .collect();
    let nodes = nodes_of_events(history, format, &wanted);
    for op in ops.iter_mut() {
        if let Some(node) = op["invoke_index"].as_u64().and_then(|i| nodes.get(&i)) {
            op["node"] = serde_json::Value::String(node.clone());
        }
    }
    let op = ops.get(stuck? as usize)?;
    Some(format!(
        "{} (node {})",
        op["description"].as_str().unwrap_or("?"),
        op["node"].as_str().unwrap_or("?")
    ))
}

/// The `node` of the events at these positions of a history file, in one pass that holds only
/// them and stops after the last.
fn nodes_of_events(
    history: &Path,
    format: Format,
    positions: &std::collections::BTreeSet<u64>,
) -> BTreeMap<u64, String> {
    let mut found = BTreeMap::new();
    let Some(&last) = positions.last() else {
        return found;
    };
    let mut position = 0u64;
    // The sink stops the read after the last wanted event; that "error" is not one, and a
    // real read error only leaves some ops without their node.
    let _ = read::stream_path(history, format, &mut |e, _| {
        if positions.contains(&position) {
            if let Some(node) = e.node {
                found.insert(position, node);
            }
        }
        position += 1;
        if position > last {
            return Err(String::new());
        }
        Ok(())
    });
    found
}

/// The Elle-style txn checker over a history file, read straight into its compact form (a
/// million transactions as `Value` trees would take gigabytes).
pub fn check_txn(
    history: &Path,
    format: Format,
    workload: Workload,
    consistency: Consistency,
    time_budget_s: u64,
) -> CheckOutcome {
    let options = TxnOptions {
        workload,
        consistency,
        time_budget: std::time::Duration::from_secs(time_budget_s.max(1)),
        ..TxnOptions::default()
    };
    let name = consistency.as_str().to_string();
    let checked = txn::read_log(history, format).and_then(|log| {
        txn::check_log(&log, &options).map_err(|e| read::locate_event(e, history, format))
    });
    match checked {
        Ok(result) => {
            let summary = txn_summary(&result);
            CheckOutcome {
                name,
                verdict: result.verdict,
                summary,
                html: (!result.anomalies.is_empty()).then(|| txn_html(&result)),
                details: serde_json::to_value(&result).unwrap_or_default(),
            }
        }
        Err(e) => CheckOutcome {
            name,
            verdict: Verdict::Unknown,
            summary: format!("the history could not be checked: {e}"),
            details: serde_json::Value::Null,
            html: None,
        },
    }
}

/// One line: verdict, anomaly types, which models are ruled out.
pub fn txn_summary(r: &TxnResult) -> String {
    let models = |ms: &[Consistency]| ms.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ");
    let mut s = format!(
        "{} ({} workload, {} txns: {} ok, {} info, {} fail)",
        r.consistency,
        r.workload.as_str(),
        r.stats.txns,
        r.stats.ok,
        r.stats.info,
        r.stats.fail
    );
    if !r.anomaly_types.is_empty() {
        s.push_str(&format!("; anomalies: {}", r.anomaly_types.join(", ")));
    }
    if !r.not.is_empty() {
        s.push_str(&format!("; not {}", models(&r.not)));
    }
    for n in &r.notes {
        s.push_str(&format!("; {n}"));
    }
    s
}

/// A whole HTML page: each anomaly's explanation and its picture.
pub fn txn_html(r: &TxnResult) -> String {
    let mut h = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><style>body{font-family:system-ui,\"DejaVu Sans\",sans-serif;margin:12px;color:#222}.anomaly{border:1px solid #ddd;border-radius:6px;padding:10px;margin:10px 0}pre{white-space:pre-wrap;background:#f6f6f6;padding:8px}h3{margin:4px 0;color:#b00}</style></head><body>",
    );
    h.push_str(&format!("<p>{}</p>", esc(&txn_summary(r))));
    for (kind, n) in &r.anomaly_counts {
        h.push_str(&format!("<b>{}</b>: {n} &nbsp; ", esc(kind)));
    }
    // Cycles (with pictures) first: they are the ones a person needs to follow.
    let mut anomalies: Vec<_> = r.anomalies.iter().collect();
    anomalies.sort_by_key(|a| a.svg.is_none());
    for a in anomalies {
        h.push_str(&format!(
            "<div class=\"anomaly\"><h3>{}</h3><pre>{}</pre>",
            esc(&a.kind),
            esc(&a.explanation)
        ));
        if let Some(svg) = &a.svg {
            // The checker renders the SVG itself (escaped labels); inline as is.
            h.push_str(svg);
        }
        h.push_str("</div>");
    }
    h.push_str("</body></html>");
    h
}

/// Ok txns the bank check holds at once while a history file streams by, at most.
pub const BANK_BATCH_EVENTS: usize = 4096;
/// Values (list items included) the bank check's batch holds, at most: a read returns every
/// delta an account ever received, so late reads of a long run are large and a batch is
/// bounded by size as well as by count.
pub const BANK_BATCH_VALUES: usize = 1 << 19;

/// How many values `v` is made of, itself and every list or map item within.
fn value_nodes(v: &Value) -> usize {
    1 + match v {
        Value::List(items) => items.iter().map(value_nodes).sum(),
        Value::Map(entries) => entries
            .iter()
            .map(|(k, v)| value_nodes(k) + value_nodes(v))
            .sum(),
        _ => 0,
    }
}

/// The bank checker: every read of all accounts sums to the total (and, where the protocol's
/// transfers compare balances, none is negative). Each read is judged on its own, so the file
/// is streamed and checked a batch of ok txns at a time (`BANK_BATCH_EVENTS`,
/// `BANK_BATCH_VALUES`), the batches' results merged into what one check of the whole history
/// gives.
pub fn check_bank(
    history: &Path,
    format: Format,
    protocol: ordeal_workloads::Protocol,
) -> CheckOutcome {
    let options = bank::options(protocol);
    let mut merged = ordeal_checker::bank::check_with(&History::default(), &options);
    let mut batch = History::default();
    let mut absorb = |batch: &mut History| {
        let r = ordeal_checker::bank::check_with(batch, &options);
        batch.events.clear();
        merged.reads_checked += r.reads_checked;
        merged.bad_read_count += r.bad_read_count;
        let room = ordeal_checker::bank::MAX_REPORTED_READS.saturating_sub(merged.bad_reads.len());
        merged.bad_reads.extend(r.bad_reads.into_iter().take(room));
    };
    let mut position = 0u64;
    let mut batch_values = 0usize;
    let mut take = |mut e: Event| {
        // Positions as in the whole history, so a bad read names its event.
        e.index = position;
        position += 1;
        if e.kind == EventType::Ok && e.f == "txn" {
            batch_values += value_nodes(&e.value);
            batch.events.push(e);
            if batch.events.len() >= BANK_BATCH_EVENTS || batch_values >= BANK_BATCH_VALUES {
                absorb(&mut batch);
                batch_values = 0;
            }
        }
    };
    // Our JSONL a line at a time (the general reader parses thousands of lines ahead, and a
    // late read of a long run is large); other formats through the checker's reader.
    let read: Result<(), String> = if format == Format::Jsonl {
        crate::summary::for_each_line(history, |line, number| {
            let e: Event = serde_json::from_slice(line).map_err(|e| {
                anyhow::anyhow!("{}:{number}: not a history event: {e}", history.display())
            })?;
            take(e);
            Ok(())
        })
        .map_err(|e| format!("{e:#}"))
    } else {
        read::stream_path(history, format, &mut |e, _| {
            take(e);
            Ok(())
        })
        .map(|_| ())
        .map_err(|e| e.to_string())
    };
    if let Err(e) = read {
        return CheckOutcome {
            name: "bank".into(),
            verdict: Verdict::Unknown,
            summary: format!("the history could not be checked: {e}"),
            details: serde_json::Value::Null,
            html: None,
        };
    }
    absorb(&mut batch);
    let r = merged;
    // As `bank::check_with` decides over a whole history.
    let verdict = if r.bad_read_count > 0 {
        Verdict::Invalid
    } else if r.reads_checked == 0 {
        Verdict::Unknown
    } else {
        Verdict::Valid
    };
    let r = ordeal_checker::bank::BankResult { verdict, ..r };
    CheckOutcome {
        name: "bank".into(),
        verdict: r.verdict,
        summary: r.summary(),
        html: (r.bad_read_count > 0).then(|| {
            format!(
                "<!doctype html><html><head><meta charset=\"utf-8\"><style>body{{font-family:system-ui,\"DejaVu Sans\",sans-serif;margin:12px}}td,th{{border:1px solid #ccc;padding:3px 6px;font-size:13px}}table{{border-collapse:collapse}}</style></head><body><h3>Reads of all accounts that do not sum to the total</h3>{}</body></html>",
                r.to_html()
            )
        }),
        details: serde_json::to_value(&r).unwrap_or_default(),
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Counts per operation `f` and completion type.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Counts {
    pub ok: u64,
    pub fail: u64,
    pub info: u64,
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.ok + self.fail + self.info
    }
}

/// A fault interval recovered from the history's nemesis events.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FaultInterval {
    pub f: String,
    pub label: String,
    pub start_ns: i64,
    pub end_ns: i64,
}

/// Pairs nemesis start and stop events into intervals. Faults of different kinds may overlap
/// (one nemesis per kind runs at once); each kind holds one fault at a time. An interval never
/// stopped ends at the last event.
pub fn fault_intervals(events: &[Event]) -> Vec<FaultInterval> {
    let mut tracker = FaultTracker::default();
    for e in events {
        tracker.add(e);
    }
    tracker.finish(events.last().map(|e| e.time).unwrap_or(0))
}

/// [`fault_intervals`] fed one event at a time, so a history file can stream by: it holds the
/// open fault of each kind and the intervals found (a few per minute of faults), never the
/// events.
#[derive(Debug, Default)]
pub struct FaultTracker {
    /// Open fault per start-f: its label and start.
    open: BTreeMap<String, (String, i64)>,
    done: Vec<FaultInterval>,
}

impl FaultTracker {
    /// Takes one event; only nemesis events matter.
    pub fn add(&mut self, e: &Event) {
        if e.process != Process::Nemesis {
            return;
        }
        if let Some(spec) = crate::faults::by_start(&e.f) {
            let label = match &e.value {
                Value::List(items) => items
                    .iter()
                    .take(2)
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(" "),
                other => other.to_string(),
            };
            let label = if spec.kind == FaultKind::Partition {
                // The first item names the shape (and, sharded, the group: `g2 halves`).
                match &e.value {
                    Value::List(items) if !items.is_empty() => {
                        format!("partition {}", items[0])
                    }
                    _ => format!("partition {}", label.split(' ').next().unwrap_or("")),
                }
            } else if spec.kind == FaultKind::Network {
                // The first item says what and how: `delay 80ms ±16ms via proxy`.
                match &e.value {
                    Value::List(items) if !items.is_empty() => format!("network {}", items[0]),
                    _ => "network".to_string(),
                }
            } else {
                format!("{} {label}", e.f)
            };
            self.open.insert(e.f.clone(), (label, e.time));
        } else if let Some(start_f) = crate::faults::by_stop(&e.f).map(|s| s.start_f) {
            if let Some((label, start_ns)) = self.open.remove(start_f) {
                self.done.push(FaultInterval {
                    f: start_f.to_string(),
                    label,
                    start_ns,
                    end_ns: e.time,
                });
            }
        }
    }

    /// The intervals, by start; a fault still open ends at `end_time_ns` (the last event's).
    pub fn finish(self, end_time_ns: i64) -> Vec<FaultInterval> {
        let mut out = self.done;
        for (f, (label, start_ns)) in self.open {
            out.push(FaultInterval {
                f,
                label,
                start_ns,
                end_ns: end_time_ns,
            });
        }
        out.sort_by_key(|f| f.start_ns);
        out
    }
}

/// Stats: counts per f and type. Unknown when nothing at all succeeded (a test that did
/// nothing proves nothing).
pub fn stats(summary: &HistorySummary) -> (CheckOutcome, BTreeMap<String, Counts>) {
    let by_f = summary.counts.clone();
    let ok: u64 = by_f.values().map(|c| c.ok).sum();
    let total: u64 = by_f.values().map(|c| c.total()).sum();
    let verdict = if ok > 0 {
        Verdict::Valid
    } else {
        Verdict::Unknown
    };
    (
        CheckOutcome {
            name: "stats".into(),
            verdict,
            summary: format!("{total} operations, {ok} ok"),
            details: serde_json::to_value(&by_f).unwrap_or_default(),
            html: None,
        },
        by_f,
    )
}

/// Availability: the fraction of operations that were ok, overall and for operations invoked
/// while a fault was held. Informational: a store may refuse service during faults.
pub fn availability(summary: &HistorySummary) -> CheckOutcome {
    if let Some(why) = &summary.pairing_error {
        return CheckOutcome {
            name: "availability".into(),
            verdict: Verdict::Unknown,
            summary: "history does not pair up".into(),
            details: serde_json::json!({ "error": why }),
            html: None,
        };
    }
    let a = summary.availability;
    let frac = |a: u64, b: u64| {
        if b == 0 {
            None
        } else {
            Some(a as f64 / b as f64)
        }
    };
    let overall = frac(a.ok, a.ops);
    let in_faults = frac(a.ok_during_faults, a.ops_during_faults);
    let pct = |x: Option<f64>| {
        x.map(|v| format!("{:.1}%", v * 100.0))
            .unwrap_or_else(|| "n/a".into())
    };
    CheckOutcome {
        name: "availability".into(),
        verdict: Verdict::Valid,
        summary: format!(
            "{} ok overall, {} during faults",
            pct(overall),
            pct(in_faults)
        ),
        details: serde_json::json!({
            "ops": a.ops, "ok": a.ok, "fraction_ok": overall,
            "ops_during_faults": a.ops_during_faults, "ok_during_faults": a.ok_during_faults,
            "fraction_ok_during_faults": in_faults,
        }),
        html: None,
    }
}

/// Scans node logs for panics. A panic in the store is a bug, whatever the history says.
pub fn scan_logs(logs: &[std::path::PathBuf]) -> CheckOutcome {
    let mut hits = Vec::new();
    for path in logs {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        for (i, line) in text.lines().enumerate() {
            if line.contains("panicked at") || line.contains("RUST_BACKTRACE") {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                hits.push(serde_json::json!({"log": name, "line": i + 1, "text": line.chars().take(300).collect::<String>()}));
                if hits.len() >= 20 {
                    break;
                }
            }
        }
    }
    CheckOutcome {
        name: "log-scan".into(),
        verdict: if hits.is_empty() {
            Verdict::Valid
        } else {
            Verdict::Invalid
        },
        summary: if hits.is_empty() {
            format!("no panics in {} node logs", logs.len())
        } else {
            format!(
                "{} panic lines in node logs, first: {}",
                hits.len(),
                hits[0]["text"]
            )
        },
        details: serde_json::Value::Array(hits),
        html: None,
    }
}

/// Writes `results.json`.
pub fn write_results(path: &Path, results: &serde_json::Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(results)?;
    std::fs::write(path, text).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(p: Process, kind: EventType, f: &str, t: i64) -> Event {
        Event::new(p, kind, f, Value::Null).with_time(t)
    }

    #[test]
    fn intervals_and_availability() {
        let h = History::new(vec![
            ev(Process::Client(0), EventType::Invoke, "read", 0),
            ev(Process::Client(0), EventType::Ok, "read", 5),
            ev(Process::Nemesis, EventType::Info, "kill", 10),
            ev(Process::Client(0), EventType::Invoke, "write", 12),
            ev(Process::Client(0), EventType::Fail, "write", 13),
            ev(Process::Nemesis, EventType::Info, "start", 20),
        ]);
        let faults = fault_intervals(&h.events);
        assert_eq!(faults.len(), 1);
        assert_eq!((faults[0].start_ns, faults[0].end_ns), (10, 20));
        let summary = crate::summary::summarise_events(&h.events);
        let a = availability(&summary);
        assert_eq!(a.details["ok_during_faults"], 0);
        assert_eq!(a.details["ops_during_faults"], 1);
        assert_eq!(a.details["ok"], 1);
        let (s, counts) = stats(&summary);
        assert_eq!(s.verdict, Verdict::Valid);
        assert_eq!(counts["write"].fail, 1);

        // A network fault overlapping a kill: two intervals, labelled by what and how.
        let mut start_net = ev(Process::Nemesis, EventType::Info, "start-network", 15);
        start_net.value = Value::List(vec![
            Value::Str("loss 20% via iptables".into()),
            Value::Str("n1-n2".into()),
        ]);
        let h = History::new(vec![
            ev(Process::Nemesis, EventType::Info, "kill", 10),
            start_net,
            ev(Process::Nemesis, EventType::Info, "start", 20),
            ev(Process::Nemesis, EventType::Info, "stop-network", 30),
        ]);
        let faults = fault_intervals(&h.events);
        assert_eq!(faults.len(), 2);
        assert_eq!(faults[1].f, "start-network");
        assert_eq!(faults[1].label, "network loss 20% via iptables");
        assert_eq!((faults[1].start_ns, faults[1].end_ns), (15, 30));
    }

    #[test]
    fn log_scan_finds_panics() {
        let dir = std::env::temp_dir().join(format!("ordeal-scan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let clean = dir.join("n1.log");
        let bad = dir.join("n2.log");
        std::fs::write(&clean, "started\nserving\n").unwrap();
        std::fs::write(&bad, "started\nthread 'main' panicked at src/x.rs:3:5:\n").unwrap();
        assert_eq!(
            scan_logs(std::slice::from_ref(&clean)).verdict,
            Verdict::Valid
        );
        assert_eq!(scan_logs(&[clean, bad]).verdict, Verdict::Invalid);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn txn_outcome_carries_explanation_and_picture() {
        let path = ordeal_checker::read::shared_testdata("elle")
            .unwrap_or_else(|e| panic!("{e}"))
            .join("list-append-anomaly-g0-cycle.json");
        let c = check_txn(
            &path,
            Format::Auto,
            Workload::ListAppend,
            Consistency::StrictSerializable,
            5,
        );
        assert_eq!(c.verdict, Verdict::Invalid, "{}", c.summary);
        assert!(c.summary.contains("G0"), "{}", c.summary);
        let html = c.html.expect("an invalid txn check has a page");
        assert!(
            html.contains("<svg") && html.contains("a contradiction"),
            "{html}"
        );
        assert_eq!(c.details["anomaly_types"][0], "G0");
        // A valid history: no page, valid verdict.
        let c = check_txn(
            &path.with_file_name("list-append-valid-read-empty.json"),
            Format::Auto,
            Workload::ListAppend,
            Consistency::StrictSerializable,
            5,
        );
        assert_eq!(c.verdict, Verdict::Valid, "{}", c.summary);
        assert!(c.html.is_none());
    }

    /// Reads of all accounts (`ok` txns), some torn, in more than two batches' worth: the
    /// streamed, batched check says what one check of the whole history says.
    #[test]
    fn the_batched_bank_check_agrees_with_the_whole_history_check() {
        let protocol = ordeal_workloads::Protocol::OrdealHttp;
        let options = bank::options(protocol);
        let mut events = Vec::new();
        let reads = 2 * BANK_BATCH_EVENTS + 123;
        for i in 0..reads {
            let p = Process::Client((i % 5) as u64);
            // Every 97th read is torn: one account's delta without its counterpart.
            let torn = i % 97 == 5;
            let ops: Vec<Value> = (0..options.accounts)
                .map(|a| {
                    let deltas = if torn && a == 0 {
                        Value::List(vec![Value::Int(-7)])
                    } else {
                        Value::Null
                    };
                    Value::List(vec![
                        Value::Str("r".into()),
                        Value::Str(format!("acct{a}")),
                        deltas,
                    ])
                })
                .collect();
            events.push(Event::new(p, EventType::Invoke, "txn", Value::Null));
            events.push(Event::new(p, EventType::Ok, "txn", Value::List(ops)));
        }
        let history = History::new(events);
        let whole = ordeal_checker::bank::check_with(&history, &options);
        assert_eq!(whole.verdict, Verdict::Invalid);
        assert!(whole.bad_read_count > ordeal_checker::bank::MAX_REPORTED_READS);

        let dir = std::env::temp_dir().join(format!("ordeal-bank-batches-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("history.jsonl");
        let mut text = Vec::new();
        read::write_jsonl(&history, &mut text).unwrap();
        std::fs::write(&path, text).unwrap();
        let batched = check_bank(&path, Format::Jsonl, protocol);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(batched.verdict, whole.verdict, "{}", batched.summary);
        assert_eq!(batched.summary, whole.summary());
        assert_eq!(
            batched.details,
            serde_json::to_value(&whole).unwrap(),
            "same reads checked, same count, same reads listed with their positions"
        );
    }
}
