//! `ordeal campaign FILE.toml`: a list of tests with expected verdicts, each run as its own
//! `ordeal test` process (its own namespace, its own cleanup), then a table and an exit code
//! that is non-zero on any mismatch.

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct CampaignArgs {
    /// The campaign file (e.g. campaigns/check.toml).
    pub file: PathBuf,
    /// Run only the tests whose name contains this.
    #[arg(long)]
    pub only: Option<String>,
}

/// Settings a test may give; anything absent comes from `[defaults]`, then `ordeal test`'s own.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestSpec {
    pub name: Option<String>,
    pub workload: Option<String>,
    pub nemesis: Option<String>,
    pub nodes: Option<usize>,
    pub time_limit_s: Option<u64>,
    pub rate: Option<f64>,
    pub concurrency: Option<usize>,
    pub seed: Option<u64>,
    pub bug: Option<String>,
    pub net: Option<String>,
    pub nemesis_interval_ms: Option<String>,
    pub nemesis_hold_ms: Option<String>,
    pub nemesis_targets: Option<String>,
    pub partition_shapes: Option<String>,
    /// The network fault's behaviours: `any` or a comma list of delay, loss, duplicate.
    pub network_behaviours: Option<String>,
    /// An earlier run's `faults.json` (or run directory) to inject instead of drawn faults.
    pub replay_faults: Option<String>,
    pub op_timeout_ms: Option<u64>,
    pub recovery_s: Option<u64>,
    pub ops_per_key: Option<u64>,
    pub results: Option<String>,
    pub store_bin: Option<String>,
    /// paxos-kv (default), etcd, or a target file.
    pub target: Option<String>,
    pub target_bin: Option<String>,
    /// linearizable (default) or local.
    pub read_consistency: Option<String>,
    /// valid | invalid | unknown
    pub expect: Option<String>,
    /// Txn workloads: the isolation model to check against.
    pub consistency: Option<String>,
    /// An anomaly type (e.g. `G1b`) the run's results must name; checked with `expect`.
    pub expect_anomaly: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignFile {
    #[serde(default)]
    pub defaults: TestSpec,
    #[serde(rename = "test", default)]
    pub tests: Vec<TestSpec>,
}

macro_rules! pick {
    ($t:expr, $d:expr, $f:ident) => {
        $t.$f.clone().or_else(|| $d.$f.clone())
    };
}

impl TestSpec {
    /// The `ordeal test` arguments for this test, defaults filled in.
    pub fn to_args(&self, d: &TestSpec) -> Vec<String> {
        let mut a = vec!["test".to_string(), "--no-progress".to_string()];
        let mut push = |flag: &str, v: Option<String>| {
            if let Some(v) = v {
                a.push(flag.to_string());
                a.push(v);
            }
        };
        push("--name", pick!(self, d, name));
        push("--workload", pick!(self, d, workload));
        push("--consistency", pick!(self, d, consistency));
        push("--nemesis", pick!(self, d, nemesis));
        push("--nodes", pick!(self, d, nodes).map(|v| v.to_string()));
        push(
            "--time-limit",
            pick!(self, d, time_limit_s).map(|v| v.to_string()),
        );
        push("--rate", pick!(self, d, rate).map(|v| v.to_string()));
        push(
            "--concurrency",
            pick!(self, d, concurrency).map(|v| v.to_string()),
        );
        push("--seed", pick!(self, d, seed).map(|v| v.to_string()));
        push("--bug", pick!(self, d, bug));
        push("--net", pick!(self, d, net));
        push("--nemesis-interval-ms", pick!(self, d, nemesis_interval_ms));
        push("--nemesis-hold-ms", pick!(self, d, nemesis_hold_ms));
        push("--nemesis-targets", pick!(self, d, nemesis_targets));
        push("--partition-shapes", pick!(self, d, partition_shapes));
        push("--network-behaviours", pick!(self, d, network_behaviours));
        push("--replay-faults", pick!(self, d, replay_faults));
        push(
            "--op-timeout-ms",
            pick!(self, d, op_timeout_ms).map(|v| v.to_string()),
        );
        push(
            "--recovery-s",
            pick!(self, d, recovery_s).map(|v| v.to_string()),
        );
        push(
            "--ops-per-key",
            pick!(self, d, ops_per_key).map(|v| v.to_string()),
        );
        push("--results", pick!(self, d, results));
        push("--store-bin", pick!(self, d, store_bin));
        push("--target", pick!(self, d, target));
        push("--target-bin", pick!(self, d, target_bin));
        push("--read-consistency", pick!(self, d, read_consistency));
        a
    }

    pub fn display_name(&self, d: &TestSpec) -> String {
        pick!(self, d, name).unwrap_or_else(|| {
            format!(
                "{}-{}{}",
                pick!(self, d, workload).unwrap_or("register".into()),
                pick!(self, d, nemesis).unwrap_or("none".into()),
                pick!(self, d, bug)
                    .map(|b| format!("-{b}"))
                    .unwrap_or_default()
            )
        })
    }
}

pub fn load(path: &Path) -> Result<CampaignFile> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let c: CampaignFile =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    if c.tests.is_empty() {
        bail!("{}: no [[test]] entries", path.display());
    }
    for (i, t) in c.tests.iter().enumerate() {
        match pick!(t, c.defaults, expect).as_deref() {
            Some("valid" | "invalid" | "unknown") => {}
            other => bail!(
                "{}: test {} ({}): expect must be valid, invalid or unknown, got {other:?}",
                path.display(),
                i + 1,
                t.display_name(&c.defaults)
            ),
        }
    }
    Ok(c)
}

fn verdict_of_exit(code: Option<i32>) -> &'static str {
    match code {
        Some(0) => "valid",
        Some(1) => "invalid",
        Some(2) => "unknown",
        _ => "error",
    }
}

/// Whether the results.json next to `report` (a report.html path) lists `anomaly` among any
/// check's `anomaly_types`.
fn results_name_anomaly(report: &str, anomaly: &str) -> bool {
    let Some(dir) = std::path::Path::new(report).parent() else {
        return false;
    };
    let Ok(text) = std::fs::read_to_string(dir.join("results.json")) else {
        return false;
    };
    let Ok(results) = serde_json::from_str::<serde_json::Value>(&text) else {
        return false;
    };
    results["checks"].as_array().is_some_and(|checks| {
        checks.iter().any(|c| {
            c["details"]["anomaly_types"]
                .as_array()
                .is_some_and(|ts| ts.iter().any(|t| t == anomaly))
        })
    })
}

pub fn run_campaign(args: CampaignArgs) -> i32 {
    match campaign_inner(&args) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("ordeal campaign: {e:#}");
            255
        }
    }
}

fn campaign_inner(args: &CampaignArgs) -> Result<bool> {
    let c = load(&args.file)?;
    let exe = std::env::current_exe().context("finding the ordeal binary")?;
    let mut rows = Vec::new();
    let started = Instant::now();
    if let Some(only) = &args.only {
        let names: Vec<String> = c
            .tests
            .iter()
            .map(|t| t.display_name(&c.defaults))
            .collect();
        if !names.iter().any(|n| n.contains(only.as_str())) {
            bail!(
                "{}: no test's name contains {only:?}; the tests are: {}",
                args.file.display(),
                names.join(", ")
            );
        }
    }
    for t in &c.tests {
        let name = t.display_name(&c.defaults);
        if let Some(only) = &args.only {
            if !name.contains(only.as_str()) {
                continue;
            }
        }
        let expect = pick!(t, c.defaults, expect).unwrap_or_default();
        let test_args = t.to_args(&c.defaults);
        eprintln!("ordeal campaign: {name}: ordeal {}", test_args.join(" "));
        let t0 = Instant::now();
        let out = Command::new(&exe)
            .args(&test_args)
            .output()
            .with_context(|| format!("running {}", exe.display()))?;
        let secs = t0.elapsed().as_secs_f64();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let report = stderr
            .lines()
            .find_map(|l| l.strip_prefix("ordeal test: results in "))
            .map(|d| format!("{d}/report.html"))
            .unwrap_or_else(|| "-".into());
        let got = verdict_of_exit(out.status.code());
        if got == "error" {
            eprintln!("ordeal campaign: {name} failed:\n{stderr}");
        }
        let mut ok = got == expect;
        if let Some(anomaly) = pick!(t, c.defaults, expect_anomaly) {
            let named = results_name_anomaly(&report, &anomaly);
            if !named {
                eprintln!("ordeal campaign: {name}: results do not name anomaly {anomaly}");
            }
            ok &= named;
        }
        eprintln!(
            "ordeal campaign: {name}: expected {expect}, got {got} in {secs:.0} s{}",
            if ok { "" } else { "  <-- MISMATCH" }
        );
        rows.push((name, expect, got.to_string(), secs, report, ok));
    }
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(4).max(4);
    println!(
        "{:<width$}  {:<8}  {:<8}  {:>7}  report",
        "run", "expected", "got", "seconds"
    );
    for (name, expect, got, secs, report, ok) in &rows {
        println!(
            "{:<width$}  {:<8}  {:<8}  {:>7.1}  {}{}",
            name,
            expect,
            got,
            secs,
            report,
            if *ok { "" } else { "  MISMATCH" }
        );
    }
    let mismatches = rows.iter().filter(|r| !r.5).count();
    println!(
        "{} passed, {} failed ({:.0} s)",
        rows.len() - mismatches,
        mismatches,
        started.elapsed().as_secs_f64()
    );
    Ok(mismatches == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_in_and_bad_expect_is_rejected() {
        let dir = std::env::temp_dir().join(format!("ordeal-campaign-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.toml");
        std::fs::write(
            &good,
            "[defaults]\ntime_limit_s = 7\nexpect = \"valid\"\n[[test]]\nnemesis = \"kill\"\nnemesis_targets = \"leader\"\n[[test]]\nbug = \"x\"\nexpect = \"invalid\"\n",
        )
        .unwrap();
        let c = load(&good).unwrap();
        let a = c.tests[0].to_args(&c.defaults);
        assert!(
            a.windows(2).any(|w| w[0] == "--time-limit" && w[1] == "7"),
            "{a:?}"
        );
        assert!(
            a.windows(2).any(|w| w[0] == "--nemesis" && w[1] == "kill"),
            "{a:?}"
        );
        assert_eq!(c.tests[1].display_name(&c.defaults), "register-none-x");
        let replay = dir.join("replay.toml");
        std::fs::write(
            &replay,
            "[[test]]\nnemesis = \"kill\"\nexpect = \"valid\"\nreplay_faults = \"results/r/faults.json\"\n",
        )
        .unwrap();
        let c = load(&replay).unwrap();
        let a = c.tests[0].to_args(&c.defaults);
        assert!(
            a.windows(2)
                .any(|w| w[0] == "--replay-faults" && w[1] == "results/r/faults.json"),
            "{a:?}"
        );
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "[[test]]\nexpect = \"green\"\n").unwrap();
        assert!(load(&bad)
            .unwrap_err()
            .to_string()
            .contains("expect must be"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn expected_anomaly_is_looked_up_in_results() {
        let dir = std::env::temp_dir().join(format!("ordeal-camp-anom-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let report = dir.join("report.html").to_string_lossy().into_owned();
        // No results.json: not named.
        assert!(!results_name_anomaly(&report, "G1b"));
        std::fs::write(
            dir.join("results.json"),
            r#"{"checks":[{"name":"stats","details":{}},{"name":"strict-serializable","details":{"anomaly_types":["G0","G1b"]}}]}"#,
        )
        .unwrap();
        assert!(results_name_anomaly(&report, "G1b"));
        assert!(!results_name_anomaly(&report, "G2-item"));
        std::fs::remove_dir_all(&dir).unwrap();
        // The shipped campaign file parses, with its txn entries.
        let shipped = load(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../campaigns/check.toml"
        )))
        .unwrap();
        assert!(shipped
            .tests
            .iter()
            .any(|t| t.expect_anomaly.is_some() && t.bug.as_deref() == Some("non-atomic-txn")));
        let nightly = load(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../campaigns/nightly.toml"
        )))
        .unwrap();
        assert!(nightly.tests.len() >= 10);
    }

    #[test]
    fn only_that_matches_nothing_is_an_error_naming_the_tests() {
        let file = PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../campaigns/check.toml"
        ));
        let err = campaign_inner(&CampaignArgs {
            file,
            only: Some("no-such-test".into()),
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("\"no-such-test\"") && err.contains("register-none"),
            "{err}"
        );
    }
}
