//! The analysis of a recorded run: every check, results.json, the charts and report.html. Used
//! by `ordeal test` at the end of a run and by `ordeal report` on a stored one, so neither the
//! runner nor the report imports the other.

use crate::checks::{self, CheckOutcome};
use crate::plan::RunConfig;
use crate::report;
use anyhow::Result;
use ordeal_checker::{History, Verdict};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Runs every check over a history and writes results.json, the charts and report.html.
/// Shared by `ordeal test` and `ordeal report`.
pub fn analyse(
    run_dir: &Path,
    config: &RunConfig,
    history: &History,
    log_paths: &[PathBuf],
    convergence: CheckOutcome,
    extra: serde_json::Value,
) -> Result<Verdict> {
    let workload = config.args.workload;
    let faults = checks::fault_intervals(&history.events);
    let started = Instant::now();
    let consistency = config.args.consistency;
    let protocol = config
        .target
        .as_ref()
        .map_or(ordeal_workloads::Protocol::OrdealHttp, |t| t.protocol);
    let lin = checks::check_workload(
        history,
        workload,
        protocol,
        config.args.check_time_limit_s,
        consistency,
    );
    let check_s = started.elapsed().as_secs_f64();
    let (stats, counts) = checks::stats(history);
    let avail = checks::availability(history, &faults);
    let logs = checks::scan_logs(log_paths);
    let all = vec![lin, stats, avail, logs, convergence];
    let verdict = all.iter().fold(Verdict::Valid, |v, c| v.worst(c.verdict));
    let results = serde_json::json!({
        "verdict": verdict,
        "checks": all,
        "counts": counts,
        "faults": faults,
        "check_seconds": check_s,
        "run": extra,
    });
    checks::write_results(&run_dir.join("results.json"), &results)?;
    // The charts are the one part of a run that only illustrates it: a bug there (plotters
    // panics on some inputs) must not cost the verdict's report, so a panic is caught and
    // reported like an error.
    let drawn = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        crate::plots::draw_all(history, &faults, run_dir)
    }))
    .unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("a panic");
        Err(anyhow::anyhow!("panicked: {what}"))
    });
    if let Err(e) = drawn {
        tracing::error!("drawing charts: {e:#}");
        eprintln!("ordeal: drawing charts failed (the report has no charts): {e:#}");
    }
    report::write_report(run_dir, config, &results, &all, &counts)?;
    tracing::info!("verdict: {verdict}");
    Ok(verdict)
}
