//! `ordeal campaign FILE --estimate`: the planned runs and the wall time they will take, from
//! each run's own options, without running anything. An upper bound by design: every run is
//! counted with its whole main phase, its recovery, its checker's whole time budget and a
//! fixed allowance for everything else.

use super::PlannedRun;
use anyhow::{Context, Result};
use clap::Parser;

/// Per run, beyond the main phase, recovery and checking: starting the cluster and waiting
/// for a leader, healing and waiting for the cluster to serve again, final reads, charts and
/// the report. Measured on 2 shared cores: the nightly's 30 s five-node list-append run took
/// 37.5 s in all, 5 s of it recovery and checking included; counted generously.
pub const RUN_OVERHEAD_S: u64 = 30;

/// `ordeal test`'s options, parsed exactly as `ordeal test` parses them, defaults included.
#[derive(Parser)]
struct TestCommand {
    #[command(flatten)]
    args: crate::plan::TestArgs,
}

/// A run's estimated seconds: time limit + recovery + checker budget + `RUN_OVERHEAD_S`.
pub fn run_s(run: &PlannedRun) -> Result<u64> {
    // `args` starts with the subcommand's name, which clap takes as the program's.
    let t = TestCommand::try_parse_from(&run.args)
        .with_context(|| format!("{}: its options do not parse", run.id))?;
    Ok(t.args.time_limit_s + t.args.recovery_s + t.args.check_time_limit_s + RUN_OVERHEAD_S)
}

/// The wall time of `runs` on `jobs` workers that each take the next run in plan order, as
/// `ordeal campaign` runs them.
pub fn wall_s(runs: &[PlannedRun], jobs: usize) -> Result<u64> {
    let mut free_at = vec![0u64; jobs.max(1).min(runs.len().max(1))];
    for r in runs {
        let soonest = free_at.iter_mut().min().context("at least one worker")?;
        *soonest += run_s(r)?;
    }
    Ok(free_at.into_iter().max().unwrap_or(0))
}

fn hms(s: u64) -> String {
    format!("{}h{:02}m{:02}s", s / 3600, s % 3600 / 60, s % 60)
}

pub fn print(runs: &[PlannedRun], jobs: usize) -> Result<()> {
    let width = runs.iter().map(|r| r.id.len()).max().unwrap_or(3).max(3);
    println!("{:<width$}  {:>9}", "run", "seconds");
    for r in runs {
        println!("{:<width$}  {:>9}", r.id, run_s(r)?);
    }
    let total = wall_s(runs, jobs)?;
    println!(
        "estimated wall time: {total} s ({}) for {} runs with {jobs} job(s) \
         (each: time limit + recovery + checker budget + {RUN_OVERHEAD_S} s)",
        hms(total),
        runs.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn estimates_add_up_per_run_and_per_job() {
        let dir = std::env::temp_dir().join(format!("ordeal-estimate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("e.toml");
        // a: 2 seeds x (100 + 3 recovery + 60 check + 30); b: 1 x (10 + 5 + 20 + 30).
        std::fs::write(
            &file,
            "[defaults]\nexpect = \"valid\"\ntime_limit_s = 100\n[[test]]\nname = \"a\"\nseeds = \"1-2\"\n\
             [[test]]\nname = \"b\"\ntime_limit_s = 10\nrecovery_s = 5\ncheck_time_limit_s = 20\n",
        )
        .unwrap();
        let c = super::super::load(&file).unwrap();
        let mut runs = super::super::plan(&c, &file, None, None).unwrap();
        assert_eq!(run_s(&runs[0]).unwrap(), 193);
        assert_eq!(run_s(&runs[2]).unwrap(), 65);
        assert_eq!(wall_s(&runs, 1).unwrap(), 193 * 2 + 65);
        // Two jobs: a#1 and a#2 side by side, then b after the first.
        assert_eq!(wall_s(&runs, 2).unwrap(), 193 + 65);
        assert_eq!(wall_s(&runs, 8).unwrap(), 193);
        assert_eq!(wall_s(&[], 2).unwrap(), 0);
        runs[2].args.extend(["--no-such-option".into()]);
        assert!(run_s(&runs[2]).unwrap_err().to_string().contains("b"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `make nightly` runs campaigns/nightly.toml whole on one machine, one job at a time: it
    /// must fit in 2 hours even when every check uses its whole budget.
    #[test]
    fn the_nightly_campaign_fits_two_hours_on_one_machine() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../campaigns/nightly.toml");
        let c = super::super::load(&file).unwrap();
        let runs = super::super::plan(&c, &file, None, None).unwrap();
        let total = wall_s(&runs, 1).unwrap();
        let main_phases: u64 = runs
            .iter()
            .map(|r| {
                TestCommand::try_parse_from(&r.args)
                    .unwrap()
                    .args
                    .time_limit_s
            })
            .sum();
        assert!(
            total > main_phases,
            "{total} s estimated, {main_phases} s of main phases"
        );
        assert!(
            total < 2 * 3600,
            "make nightly: an estimated {} with one job",
            hms(total)
        );
    }
}
