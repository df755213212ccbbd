//! `ordeal campaign merge DIR...`: the results of campaign slices (`--shard i/n`, each from
//! its own CI runner) combined into one campaign directory with one index, summary and junit.
//! Each slice's runs are copied in; a run planned but found in no slice is an error, so a
//! shard whose job died cannot pass unnoticed.

use super::summary::{RunRecord, Summary};
use super::{create_campaign_dir, publish};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// Campaign directories (each holding a summary.json), e.g. one per shard.
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// Where the merged campaign is written: `<out>/<name>/<start>/`.
    #[arg(long, default_value = "results/campaigns")]
    pub out: PathBuf,
}

pub fn run(args: &MergeArgs) -> Result<bool> {
    let mut inputs: Vec<(PathBuf, Summary)> = Vec::new();
    for d in &args.dirs {
        inputs.push((d.clone(), Summary::read(d)?));
    }
    let first = &inputs[0].1;
    for (d, s) in &inputs[1..] {
        if s.campaign != first.campaign || s.planned != first.planned {
            bail!(
                "{} is campaign {} with {} planned runs, but {} is campaign {} with {}: \
                 only slices of one campaign (same file and seeds) merge",
                d.display(),
                s.campaign,
                s.planned.len(),
                inputs[0].0.display(),
                first.campaign,
                first.planned.len()
            );
        }
    }
    let (dir, started) = create_campaign_dir(&args.out.join(&first.campaign))?;
    let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut runs: Vec<RunRecord> = Vec::new();
    for (input, s) in &inputs {
        for r in &s.runs {
            if let Some(other) = seen.insert(r.id.clone(), input.clone()) {
                bail!(
                    "run {} is in both {} and {}: the slices overlap",
                    r.id,
                    other.display(),
                    input.display()
                );
            }
            if let Some(rel) = &r.run_dir {
                let from = input.join(rel);
                if from.is_dir() {
                    copy_tree(&from, &dir.join(rel))?;
                }
            }
            runs.push(r.clone());
        }
    }
    for id in &first.planned {
        if !seen.contains_key(id) {
            let (test, seed) = match id.rsplit_once('#') {
                Some((t, s)) => (t.to_string(), s.parse().ok()),
                None => (id.clone(), None),
            };
            runs.push(RunRecord {
                id: id.clone(),
                test,
                seed,
                expected: "valid".into(),
                got: "error".into(),
                explanation: "not run: no merged slice holds this run (did a shard's job fail?)"
                    .into(),
                ..RunRecord::default()
            });
        }
    }
    let mut merged = Summary {
        campaign: first.campaign.clone(),
        file: first.file.clone(),
        started,
        shard: None,
        merged_from: args.dirs.iter().map(|d| d.display().to_string()).collect(),
        jobs: inputs.iter().map(|(_, s)| s.jobs).sum(),
        // The slices ran side by side, on their own machines.
        wall_s: inputs.iter().map(|(_, s)| s.wall_s).fold(0.0, f64::max),
        planned: first.planned.clone(),
        runs,
        ..Summary::default()
    };
    merged.finish();
    publish(&dir, &merged, &args.out)?;
    Ok(merged.all_ok())
}

/// Copies a run directory (files and subdirectories; symlinks such as `latest` are skipped).
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry.with_context(|| format!("reading {}", from.display()))?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target).with_context(|| {
                format!("copying {} to {}", entry.path().display(), target.display())
            })?;
        }
    }
    Ok(())
}
