//! The analysis of a recorded run: every check, results.json, the charts and report.html. Used
//! by `ordeal test` at the end of a run and by `ordeal report` on a stored one, so neither the
//! runner nor the report imports the other.
//!
//! Everything is read from the history file, never from a history held in memory: the harness's
//! own checks and the charts in one bounded pass ([`crate::summary`]), the workload's checker
//! through its file entry point ([`checks::check_workload`]).

use crate::checks::{self, CheckOutcome};
use crate::plan::RunConfig;
use crate::report;
use anyhow::Result;
use ordeal_checker::read::Format;
use ordeal_checker::Verdict;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Runs every check over the history file and writes results.json, the charts and
/// report.html. Shared by `ordeal test` and `ordeal report`.
pub fn analyse(
    run_dir: &Path,
    config: &RunConfig,
    history: &Path,
    log_paths: &[PathBuf],
    convergence: CheckOutcome,
    extra: serde_json::Value,
) -> Result<Verdict> {
    let workload = config.args.workload;
    let summary = crate::summary::summarise_file(history)?;
    let started = Instant::now();
    let consistency = config.args.consistency;
    let protocol = config
        .target
        .as_ref()
        .map_or(ordeal_workloads::Protocol::OrdealHttp, |t| t.protocol);
    let lin = checks::check_workload(
        history,
        Format::Jsonl,
        workload,
        protocol,
        config.args.check_time_limit_s,
        consistency,
    );
    let check_s = started.elapsed().as_secs_f64();
    let (stats, counts) = checks::stats(&summary);
    let avail = checks::availability(&summary);
    let logs = checks::scan_logs(log_paths);
    let all = vec![lin, stats, avail, logs, convergence];
    let verdict = all.iter().fold(Verdict::Valid, |v, c| v.worst(c.verdict));
    let results = serde_json::json!({
        "verdict": verdict,
        "checks": all,
        "counts": counts,
        "faults": summary.faults,
        "check_seconds": check_s,
        "run": extra,
        // This process's peak resident memory so far (for `ordeal test`: the whole run and its
        // checks), to show it does not grow with the run's length.
        "harness_peak_rss_bytes": peak_rss_bytes(),
    });
    checks::write_results(&run_dir.join("results.json"), &results)?;
    // The charts are the one part of a run that only illustrates it: a bug there (plotters
    // panics on some inputs) must not cost the verdict's report, so a panic is caught and
    // reported like an error.
    let drawn = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        match &summary.pairing_error {
            Some(why) => Err(anyhow::anyhow!("history: {why}")),
            None => crate::plots::draw_all(&summary.charts, &summary.faults, run_dir),
        }
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

/// This process's peak resident set size (`VmHWM` in /proc/self/status), in bytes, where the
/// system reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}
