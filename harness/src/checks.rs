//! The checks a run's verdict is made of: the workload's own checker (linearizability per key),
//! stats, availability, a scan of node logs for panics, and convergence of replica digests.
//! The run's verdict is the worst of them.

use crate::nemesis::FaultKind;
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

/// The workload's checker. This is the one place that calls into `ordeal_checker`'s
/// linearizability API, so that API's shape is confined here.
pub fn check_workload(
    history: &History,
    workload: WorkloadKind,
    protocol: ordeal_workloads::Protocol,
    time_budget_s: u64,
    consistency: Consistency,
) -> CheckOutcome {
    use ordeal_checker::linear::{check_kind, CheckOptions, ModelKind, ModelOptions};
    let kind = match workload {
        WorkloadKind::Register => ModelKind::CasRegister,
        WorkloadKind::Kv => ModelKind::Kv,
        WorkloadKind::ListAppend => {
            return check_txn(history, Workload::ListAppend, consistency, time_budget_s)
        }
        WorkloadKind::RwRegister => {
            return check_txn(history, Workload::RwRegister, consistency, time_budget_s)
        }
        WorkloadKind::Bank => return check_bank(history, protocol),
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
    match check_kind(kind, model_options, history, &options) {
        Ok(report) => {
            let mut details = serde_json::to_value(&report).unwrap_or_default();
            let stuck = annotate_nodes(&mut details, history);
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

/// Adds to every op of a linearizability counterexample the node that served it (from its
/// invoke event), and returns the op no linearization gets past, e.g. `p25 read -> 53 (node n1)`:
/// on a stale read, the read and the node that answered it.
fn annotate_nodes(details: &mut serde_json::Value, history: &History) -> Option<String> {
    let node_of = |op: &serde_json::Value| {
        let index = op["invoke_index"].as_u64()? as usize;
        history.events.get(index)?.node.clone()
    };
    let ce = details.get_mut("counterexample")?;
    let stuck = ce["prefixes"]
        .as_array()
        .and_then(|p| p.iter().filter_map(|p| p["stuck"].as_u64()).max());
    let ops = ce.get_mut("ops")?.as_array_mut()?;
    for op in ops.iter_mut() {
        if let Some(node) = node_of(op) {
            op["node"] = serde_json::Value::String(node);
        }
    }
    let op = ops.get(stuck? as usize)?;
    Some(format!(
        "{} (node {})",
        op["description"].as_str().unwrap_or("?"),
        op["node"].as_str().unwrap_or("?")
    ))
}

/// The Elle-style txn checker over the whole history.
pub fn check_txn(
    history: &History,
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
    match txn::check(history, &options) {
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

/// The bank checker: every read of all accounts sums to the total (and, where the protocol's
/// transfers compare balances, none is negative).
pub fn check_bank(history: &History, protocol: ordeal_workloads::Protocol) -> CheckOutcome {
    let r = ordeal_checker::bank::check_with(history, &bank::options(protocol));
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
    let end_time = events.last().map(|e| e.time).unwrap_or(0);
    let mut out = Vec::new();
    // Open fault per start-f.
    let mut open: BTreeMap<String, (String, i64)> = BTreeMap::new();
    for e in events.iter().filter(|e| e.process == Process::Nemesis) {
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
                format!("partition {}", label.split(' ').next().unwrap_or(""))
            } else if spec.kind == FaultKind::Network {
                // The first item says what and how: `delay 80ms ±16ms via proxy`.
                match &e.value {
                    Value::List(items) if !items.is_empty() => format!("network {}", items[0]),
                    _ => "network".to_string(),
                }
            } else {
                format!("{} {label}", e.f)
            };
            open.insert(e.f.clone(), (label, e.time));
        } else if let Some(start_f) = crate::faults::by_stop(&e.f).map(|s| s.start_f) {
            if let Some((label, start_ns)) = open.remove(start_f) {
                out.push(FaultInterval {
                    f: start_f.to_string(),
                    label,
                    start_ns,
                    end_ns: e.time,
                });
            }
        }
    }
    for (f, (label, start_ns)) in open {
        out.push(FaultInterval {
            f,
            label,
            start_ns,
            end_ns: end_time,
        });
    }
    out.sort_by_key(|f| f.start_ns);
    out
}

/// Stats: counts per f and type. Unknown when nothing at all succeeded (a test that did
/// nothing proves nothing).
pub fn stats(history: &History) -> (CheckOutcome, BTreeMap<String, Counts>) {
    let mut by_f: BTreeMap<String, Counts> = BTreeMap::new();
    for e in &history.events {
        if e.process == Process::Nemesis {
            continue;
        }
        let c = by_f.entry(e.f.clone()).or_default();
        match e.kind {
            EventType::Ok => c.ok += 1,
            EventType::Fail => c.fail += 1,
            EventType::Info => c.info += 1,
            EventType::Invoke => {}
        }
    }
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
pub fn availability(history: &History, faults: &[FaultInterval]) -> CheckOutcome {
    let Ok(ops) = history.operations() else {
        return CheckOutcome {
            name: "availability".into(),
            verdict: Verdict::Unknown,
            summary: "history does not pair up".into(),
            details: serde_json::Value::Null,
            html: None,
        };
    };
    let (mut all, mut all_ok, mut during, mut during_ok) = (0u64, 0u64, 0u64, 0u64);
    for op in &ops {
        let ok = op.outcome == ordeal_checker::Outcome::Ok;
        all += 1;
        all_ok += ok as u64;
        if faults
            .iter()
            .any(|f| op.invoke_time >= f.start_ns && op.invoke_time < f.end_ns)
        {
            during += 1;
            during_ok += ok as u64;
        }
    }
    let frac = |a: u64, b: u64| {
        if b == 0 {
            None
        } else {
            Some(a as f64 / b as f64)
        }
    };
    let overall = frac(all_ok, all);
    let in_faults = frac(during_ok, during);
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
            "ops": all, "ok": all_ok, "fraction_ok": overall,
            "ops_during_faults": during, "ok_during_faults": during_ok,
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
        let a = availability(&h, &faults);
        assert_eq!(a.details["ok_during_faults"], 0);
        assert_eq!(a.details["ok"], 1);
        let (s, counts) = stats(&h);
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
        let h = ordeal_checker::read::read_path(&path, ordeal_checker::read::Format::Auto)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let c = check_txn(&h, Workload::ListAppend, Consistency::StrictSerializable, 5);
        assert_eq!(c.verdict, Verdict::Invalid, "{}", c.summary);
        assert!(c.summary.contains("G0"), "{}", c.summary);
        let html = c.html.expect("an invalid txn check has a page");
        assert!(
            html.contains("<svg") && html.contains("a contradiction"),
            "{html}"
        );
        assert_eq!(c.details["anomaly_types"][0], "G0");
        // A valid history: no page, valid verdict.
        let ok = ordeal_checker::read::read_path(
            &path.with_file_name("list-append-valid-read-empty.json"),
            ordeal_checker::read::Format::Auto,
        )
        .unwrap();
        let c = check_txn(
            &ok,
            Workload::ListAppend,
            Consistency::StrictSerializable,
            5,
        );
        assert_eq!(c.verdict, Verdict::Valid, "{}", c.summary);
        assert!(c.html.is_none());
    }
}
