//! What a campaign records: one `RunRecord` per test and seed, read back from the run's own
//! `results.json`, and the campaign's `summary.json` with each planted bug's detection power.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;

/// One run of one test with one seed, as the index, summary.json and junit.xml show it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// `test#seed`: unique within a campaign, and how shards are told apart when merged.
    pub id: String,
    pub test: String,
    pub seed: Option<u64>,
    pub workload: String,
    pub target: String,
    pub nemesis: String,
    pub bug: Option<String>,
    /// valid | invalid | unknown
    pub expected: String,
    pub expect_anomaly: Option<String>,
    /// valid | invalid | unknown | error (the test itself crashed or never ran)
    pub got: String,
    /// Whether the run met its expectation (verdict, and the anomaly if one is expected).
    pub ok: bool,
    /// One line: what went wrong, or the verdict's summary.
    pub explanation: String,
    /// The anomaly types the checks named, if any.
    pub anomalies: Vec<String>,
    pub ops_per_s: Option<f64>,
    /// The fraction of operations that were ok.
    pub availability: Option<f64>,
    pub duration_s: f64,
    /// Test time (since the run started) of the first operation the counterexample needs.
    pub first_anomaly_s: Option<f64>,
    /// The run's directory, relative to the campaign directory.
    pub run_dir: Option<String>,
}

impl RunRecord {
    /// Unexpected results first (errors, then mismatches), then by test and seed.
    pub fn display_order(&self) -> (u8, String, Option<u64>) {
        let rank = match (self.ok, self.got.as_str()) {
            (false, "error") => 0,
            (false, _) => 1,
            (true, _) => 2,
        };
        (rank, self.test.clone(), self.seed)
    }
}

/// A planted bug's detection power over the runs that expected to catch it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub bug: String,
    pub runs: usize,
    pub caught: usize,
    pub fraction: f64,
    /// Median test time to the first anomalous operation over the runs that caught it (and
    /// said when).
    pub median_first_anomaly_s: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The campaign's name: its file's stem.
    pub campaign: String,
    pub file: String,
    /// The start stamp, also the directory name.
    pub started: String,
    /// `i/n` when this is one slice; none for a whole or merged campaign.
    pub shard: Option<String>,
    /// For a merged campaign: the directories it was merged from.
    #[serde(default)]
    pub merged_from: Vec<String>,
    pub jobs: usize,
    pub wall_s: f64,
    /// Every run the whole campaign plans (all shards), by id, so a merge can tell what is missing.
    pub planned: Vec<String>,
    pub passed: usize,
    pub failed: usize,
    pub errors: usize,
    pub runs: Vec<RunRecord>,
    pub detection: Vec<Detection>,
}

impl Summary {
    /// Counts and detection figures from `runs` (which are sorted for display).
    pub fn finish(&mut self) {
        self.runs.sort_by_key(RunRecord::display_order);
        self.passed = self.runs.iter().filter(|r| r.ok).count();
        self.errors = self.runs.iter().filter(|r| r.got == "error").count();
        self.failed = self.runs.len() - self.passed - self.errors;
        self.detection = detection(&self.runs);
    }

    pub fn all_ok(&self) -> bool {
        self.passed == self.runs.len()
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join("summary.json");
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }

    pub fn read(dir: &Path) -> Result<Summary> {
        let path = dir.join("summary.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

/// Per planted bug, over the runs expected to be invalid: how many seeds caught it, and the
/// median time to the first anomalous operation.
pub fn detection(runs: &[RunRecord]) -> Vec<Detection> {
    let mut by_bug: BTreeMap<&str, Vec<&RunRecord>> = BTreeMap::new();
    for r in runs {
        if let (Some(bug), "invalid") = (r.bug.as_deref(), r.expected.as_str()) {
            by_bug.entry(bug).or_default().push(r);
        }
    }
    by_bug
        .into_iter()
        .map(|(bug, rs)| {
            let caught: Vec<&&RunRecord> = rs.iter().filter(|r| r.got == "invalid").collect();
            let mut times: Vec<f64> = caught.iter().filter_map(|r| r.first_anomaly_s).collect();
            times.sort_by(f64::total_cmp);
            Detection {
                bug: bug.to_string(),
                runs: rs.len(),
                caught: caught.len(),
                fraction: caught.len() as f64 / rs.len() as f64,
                median_first_anomaly_s: median(&times),
            }
        })
        .collect()
}

fn median(sorted: &[f64]) -> Option<f64> {
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => Some(sorted[n / 2]),
        n => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// What a run's `results.json` says, for the campaign's row.
#[derive(Debug, Default, PartialEq)]
pub struct RunFacts {
    pub verdict: Option<String>,
    /// The summary of the worst check (the one that decided the verdict).
    pub worst_summary: Option<String>,
    pub anomalies: Vec<String>,
    pub ops_per_s: Option<f64>,
    pub availability: Option<f64>,
    pub first_anomaly_s: Option<f64>,
    pub target: Option<String>,
}

/// Reads `results.json` (and, for a transactional anomaly's time, `history.jsonl`) in `run_dir`.
pub fn run_facts(run_dir: &Path) -> Option<RunFacts> {
    let text = std::fs::read_to_string(run_dir.join("results.json")).ok()?;
    let results: serde_json::Value = serde_json::from_str(&text).ok()?;
    let verdict = results["verdict"].as_str().map(str::to_string);
    let checks = results["checks"].as_array().cloned().unwrap_or_default();
    let rank = |v: &str| match v {
        "invalid" => 2,
        "unknown" => 1,
        _ => 0,
    };
    // The first of the worst checks (max_by_key keeps the last of equals, hence rev).
    let worst = checks
        .iter()
        .rev()
        .max_by_key(|c| rank(c["verdict"].as_str().unwrap_or("")));
    let worst_summary = worst.filter(|c| c["verdict"] != "valid").map(|c| {
        format!(
            "{}: {}",
            c["name"].as_str().unwrap_or("?"),
            c["summary"].as_str().unwrap_or("")
        )
    });
    let mut anomalies: Vec<String> = checks
        .iter()
        .flat_map(|c| {
            c["details"]["anomaly_types"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect();
    anomalies.dedup();
    let availability = checks
        .iter()
        .find(|c| c["name"] == "availability")
        .and_then(|c| c["details"]["fraction_ok"].as_f64());
    let config: serde_json::Value = std::fs::read_to_string(run_dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let target = ["target", "/args/target"]
        .iter()
        .find_map(|p| {
            if p.starts_with('/') {
                config.pointer(p)
            } else {
                config.get(*p)
            }
        })
        .and_then(|v| v.as_str().map(str::to_string));
    Some(RunFacts {
        verdict,
        worst_summary,
        anomalies,
        ops_per_s: results["run"]["throughput_ops_per_s"].as_f64(),
        availability,
        first_anomaly_s: first_anomaly_ns(&checks, run_dir).map(|ns| ns as f64 / 1e9),
        target,
    })
}

/// The test time at which the earliest counterexample became visible: for linearizability,
/// the completion of the operation that cannot be placed; for a transactional anomaly, the
/// completion of the last transaction it involves (history indexes, timed from history.jsonl).
fn first_anomaly_ns(checks: &[serde_json::Value], run_dir: &Path) -> Option<i64> {
    let mut best: Option<i64> = None;
    let mut txn_indexes: Vec<u64> = Vec::new();
    for c in checks.iter().filter(|c| c["verdict"] == "invalid") {
        let d = &c["details"];
        if let Some(cx) = d.get("counterexample").filter(|v| !v.is_null()) {
            let ops = cx["ops"].as_array();
            for p in cx["prefixes"].as_array().into_iter().flatten() {
                let Some(op) = p["stuck"].as_u64().and_then(|i| ops?.get(i as usize)) else {
                    continue;
                };
                let t = op["complete_time"]
                    .as_i64()
                    .or_else(|| op["invoke_time"].as_i64());
                best = min_opt(best, t);
            }
        }
        for a in d["anomalies"].as_array().into_iter().flatten() {
            if let Some(last) = a["txns"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["index"].as_u64())
                .max()
            {
                txn_indexes.push(last);
            }
        }
    }
    if let Some(&index) = txn_indexes.iter().min() {
        best = min_opt(best, history_time(&run_dir.join("history.jsonl"), index));
    }
    best
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The `time` of the event at `index` in a history.jsonl, read line by line (bounded by the
/// file, never held whole).
fn history_time(path: &Path, index: u64) -> Option<i64> {
    let file = std::fs::File::open(path).ok()?;
    for line in std::io::BufReader::new(file).lines() {
        let line = line.ok()?;
        let event: serde_json::Value = serde_json::from_str(&line).ok()?;
        if event["index"].as_u64() == Some(index) {
            return event["time"].as_i64();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(bug: Option<&str>, expected: &str, got: &str, t: Option<f64>) -> RunRecord {
        RunRecord {
            bug: bug.map(str::to_string),
            expected: expected.into(),
            got: got.into(),
            ok: expected == got,
            first_anomaly_s: t,
            ..RunRecord::default()
        }
    }

    #[test]
    fn detection_counts_caught_seeds_and_takes_the_median_time() {
        let runs = vec![
            run(Some("b"), "invalid", "invalid", Some(3.0)),
            run(Some("b"), "invalid", "valid", None),
            run(Some("b"), "invalid", "invalid", Some(1.0)),
            run(Some("b"), "invalid", "invalid", Some(8.0)),
            run(None, "valid", "valid", None),
            run(Some("c"), "invalid", "error", None),
        ];
        let d = detection(&runs);
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].bug.as_str(), d[0].runs, d[0].caught), ("b", 4, 3));
        assert_eq!(d[0].fraction, 0.75);
        assert_eq!(d[0].median_first_anomaly_s, Some(3.0));
        assert_eq!((d[1].caught, d[1].median_first_anomaly_s), (0, None));
    }

    #[test]
    fn facts_come_from_results_and_the_history() {
        let dir = std::env::temp_dir().join(format!("ordeal-facts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("results.json"),
            r#"{"verdict":"invalid","run":{"throughput_ops_per_s":250.5},"checks":[
              {"name":"strict-serializable","verdict":"invalid","summary":"G1b",
               "details":{"anomaly_types":["G1b"],"anomalies":[{"txns":[{"index":3},{"index":1}]}]}},
              {"name":"linearizable","verdict":"invalid","summary":"not linearizable",
               "details":{"counterexample":{"ops":[{"invoke_time":5,"complete_time":9000000000}],
                 "prefixes":[{"stuck":0}]}}},
              {"name":"availability","verdict":"valid","summary":"","details":{"fraction_ok":0.9}}]}"#,
        )
        .unwrap();
        std::fs::write(
            dir.join("history.jsonl"),
            "{\"index\":1,\"time\":100}\n{\"index\":3,\"time\":2500000000}\n",
        )
        .unwrap();
        let f = run_facts(&dir).unwrap();
        assert_eq!(f.verdict.as_deref(), Some("invalid"));
        assert_eq!(f.anomalies, vec!["G1b".to_string()]);
        assert_eq!(f.ops_per_s, Some(250.5));
        assert_eq!(f.availability, Some(0.9));
        // The txn anomaly completes at 2.5 s, before the linearizability one at 9 s.
        assert_eq!(f.first_anomaly_s, Some(2.5));
        assert!(f
            .worst_summary
            .unwrap()
            .starts_with("strict-serializable: G1b"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
