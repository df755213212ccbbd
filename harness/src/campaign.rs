//! `ordeal campaign FILE.toml`: a list of tests with expected verdicts, each run over its seeds as
//! its own `ordeal test` process (its own namespace, its own cleanup), in parallel with `--jobs`,
//! one deterministic slice of it with `--shard i/n`. Writes
//! `results/campaigns/<name>/<start>/` (index.html, summary.json, junit.xml, detection.png and
//! the runs), refreshes `results/index.html`, and exits non-zero when any run misses its
//! expectation. `ordeal campaign merge DIR...` combines slices into one campaign.

mod estimate;
mod index;
mod junit;
mod merge;
mod summary;

pub(crate) use junit::escape;
pub use summary::{Detection, RunRecord, Summary};

use crate::plan::TestArgs;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::serve::progress::{self, CampaignProgress};

/// At most this many seeds per test: a typo like `1-100000` should not queue days of runs.
pub const MAX_SEEDS: usize = 1000;
/// At most this many parallel jobs (each runs a whole cluster).
pub const MAX_JOBS: usize = 32;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct CampaignArgs {
    #[command(subcommand)]
    pub command: Option<CampaignCommand>,
    /// The campaign file (e.g. campaigns/check.toml).
    #[arg(required = true)]
    pub file: Option<PathBuf>,
    /// Run only the tests whose name contains this.
    #[arg(long)]
    pub only: Option<String>,
    /// Run every test with these seeds (`1-10`, `1,4,9`) instead of its own seed(s).
    #[arg(long)]
    pub seeds: Option<String>,
    /// Runs at once. With the netns backend each run has its own network namespace; with the
    /// proxy backend each job gets its own port range.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Run only slice i of n (1-based): every n-th run, so that slices take similar time.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// `failures`: delete the histories of runs that met their expectations.
    #[arg(long, value_enum, default_value_t = Keep::All)]
    pub keep: Keep,
    /// Where campaigns are written: `<out>/<name>/<start>/`; `<out>/../index.html` lists them.
    #[arg(long, default_value = "results/campaigns")]
    pub out: PathBuf,
    /// Run nothing: print the planned runs (after --only, --seeds, --shard) and the estimated
    /// wall time with --jobs.
    #[arg(long)]
    pub estimate: bool,
}

#[derive(Subcommand, Debug)]
pub enum CampaignCommand {
    /// Combine the results of campaign slices (`--shard`) into one index, summary and junit.
    Merge(merge::MergeArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Keep {
    All,
    Failures,
}

/// A `seeds` field: `"1-10"`, `"1,4,9"` or a list.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum SeedsSpec {
    Text(String),
    List(Vec<u64>),
}

impl SeedsSpec {
    pub fn seeds(&self) -> Result<Vec<u64>> {
        match self {
            SeedsSpec::Text(t) => parse_seeds(t),
            SeedsSpec::List(v) if v.is_empty() => bail!("seeds: the list is empty"),
            SeedsSpec::List(v) if v.len() > MAX_SEEDS => {
                bail!("seeds: {} seeds, at most {MAX_SEEDS}", v.len())
            }
            SeedsSpec::List(v) => Ok(v.clone()),
        }
    }
}

/// `1-10`, `3`, `1,4,9` or a mix (`1-3,7`), in the order given, at most `MAX_SEEDS`.
pub fn parse_seeds(text: &str) -> Result<Vec<u64>> {
    let mut seeds = Vec::new();
    for part in text.split(',').map(str::trim) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let parse = |v: &str| {
            v.parse::<u64>()
                .with_context(|| format!("seeds {text:?}: {v:?} is not a seed number"))
        };
        let (lo, hi) = (parse(lo)?, parse(hi)?);
        if hi < lo {
            bail!("seeds {text:?}: {lo}-{hi} is an empty range");
        }
        if (hi - lo) as usize >= MAX_SEEDS || seeds.len() + (hi - lo) as usize >= MAX_SEEDS {
            bail!("seeds {text:?}: more than {MAX_SEEDS} seeds");
        }
        seeds.extend(lo..=hi);
    }
    Ok(seeds)
}

/// `i/n` with 1 <= i <= n.
pub fn parse_shard(text: &str) -> Result<(usize, usize)> {
    let bad = || anyhow::anyhow!("--shard {text:?}: expected i/n with 1 <= i <= n, e.g. 2/4");
    let (i, n) = text.split_once('/').ok_or_else(bad)?;
    let (i, n): (usize, usize) = (
        i.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if i == 0 || n == 0 || i > n {
        return Err(bad());
    }
    Ok((i, n))
}

/// Settings a test may give; anything absent comes from `[defaults]`, then `ordeal test`'s own.
/// Besides the campaign's own fields below, every field is an `ordeal test` option named as
/// in `config.json` (`workload`, `nemesis`, `time_limit_s`, `nemesis_hold_ms`, `store_bin`, ...):
/// the option list is [`TestArgs`]'s, so a new option is a campaign field at once, and an
/// unknown field or a bad value is refused at load, naming the test and the field.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct TestSpec {
    pub name: Option<String>,
    /// valid | invalid | unknown
    pub expect: Option<String>,
    /// Seeds to run the test with: `"1-10"`, `"1,4,9"` or `[1, 4, 9]` (else `seed`).
    pub seeds: Option<SeedsSpec>,
    /// An anomaly type (e.g. `G1b`) the run's results must name; checked with `expect`.
    pub expect_anomaly: Option<String>,
    /// `ordeal test` options, by field name.
    #[serde(flatten)]
    pub options: serde_json::Map<String, serde_json::Value>,
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
    /// This test's `ordeal test` options: its own fields over `[defaults]` over `ordeal test`'s.
    pub fn test_args(&self, d: &TestSpec) -> Result<TestArgs> {
        let mut fields = d.options.clone();
        fields.extend(self.options.clone());
        TestArgs::from_fields(&fields)
    }

    /// The `ordeal test` arguments for this test, defaults filled in.
    pub fn to_args(&self, d: &TestSpec) -> Result<Vec<String>> {
        let mut a = vec!["test".to_string()];
        let mut args = self.test_args(d)?;
        args.no_progress = true;
        a.extend(args.to_cli());
        Ok(a)
    }

    /// The test's `name`, else `workload-nemesis[-bug]`.
    pub fn display_name(&self, d: &TestSpec) -> String {
        pick!(self, d, name).unwrap_or_else(|| match self.test_args(d) {
            Ok(a) => format!(
                "{}-{}{}",
                a.workload,
                a.nemesis,
                a.bug.map(|b| format!("-{b}")).unwrap_or_default()
            ),
            Err(_) => "unnamed".into(),
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
        t.test_args(&c.defaults).with_context(|| {
            format!(
                "{}: test {} ({})",
                path.display(),
                i + 1,
                pick!(t, c.defaults, name).unwrap_or_else(|| "unnamed".into())
            )
        })?;
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

/// One planned run: a test with one seed.
#[derive(Clone, Debug)]
pub struct PlannedRun {
    /// `test#seed` (or just `test` without a seed): unique within the campaign.
    pub id: String,
    pub test: String,
    pub seed: Option<u64>,
    /// `ordeal test` arguments; `--results` and `--name` are set when it runs.
    pub args: Vec<String>,
    pub expect: String,
    pub expect_anomaly: Option<String>,
    pub workload: String,
    pub nemesis: String,
    pub bug: Option<String>,
    /// The system under test: the store binary's file name (`paxos-kv` by default); a run's
    /// config.json naming its target overrides it.
    pub target: String,
    /// How a sharded run is laid out, as the index's target column shows it after the name
    /// (`3g×3 2pl`: three replica groups of three, two-phase locking); empty when unsharded.
    pub shape: String,
}

/// A sharded run's layout for the index: `{groups}g×{nodes}` and its concurrency control.
fn shape_of(args: &TestArgs) -> String {
    if args.groups == 0 {
        return String::new();
    }
    let cc = args.cc.as_deref().unwrap_or("2pl");
    format!("{}g×{} {cc}", args.groups, args.nodes)
}

/// The index's target column: the target's name, then a sharded run's layout.
fn target_label(name: &str, shape: &str) -> String {
    if shape.is_empty() {
        name.to_string()
    } else {
        format!("{name} {shape}")
    }
}

impl PlannedRun {
    /// The run's `--name`: the test's, with the seed appended when there is one.
    pub fn run_name(&self) -> String {
        match self.seed {
            Some(s) => format!("{}-s{s}", self.test),
            None => self.test.clone(),
        }
    }
}

/// Replaces `flag`'s value in `args`, or appends the flag.
fn set_flag(args: &mut Vec<String>, flag: &str, value: String) {
    match args.iter().position(|a| a == flag) {
        Some(i) if i + 1 < args.len() => args[i + 1] = value,
        _ => {
            args.push(flag.to_string());
            args.push(value);
        }
    }
}

/// Every run of the campaign, test by test and seed by seed: `seeds` (from `--seeds`) replaces
/// each test's own `seeds` or `seed`.
pub fn plan(
    c: &CampaignFile,
    file: &Path,
    only: Option<&str>,
    seeds: Option<&[u64]>,
) -> Result<Vec<PlannedRun>> {
    let names: Vec<String> = c
        .tests
        .iter()
        .map(|t| t.display_name(&c.defaults))
        .collect();
    if let Some(only) = only {
        if !names.iter().any(|n| n.contains(only)) {
            bail!(
                "{}: no test's name contains {only:?}; the tests are: {}",
                file.display(),
                names.join(", ")
            );
        }
    }
    let mut runs: Vec<PlannedRun> = Vec::new();
    for (t, name) in c.tests.iter().zip(&names) {
        if only.is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let args = t
            .test_args(&c.defaults)
            .with_context(|| format!("{}: test {name}", file.display()))?;
        let own = match pick!(t, c.defaults, seeds) {
            Some(spec) => spec
                .seeds()
                .with_context(|| format!("{}: test {name}", file.display()))?
                .into_iter()
                .map(Some)
                .collect(),
            None => vec![args.seed],
        };
        let seeds: Vec<Option<u64>> = match seeds {
            Some(s) => s.iter().copied().map(Some).collect(),
            None => own,
        };
        for seed in seeds {
            let mut cli = t.to_args(&c.defaults)?;
            if let Some(s) = seed {
                set_flag(&mut cli, "--seed", s.to_string());
            }
            let id = match seed {
                Some(s) => format!("{name}#{s}"),
                None => name.clone(),
            };
            if runs.iter().any(|r| r.id == id) {
                bail!(
                    "{}: two runs are both {id}; give the tests distinct names",
                    file.display()
                );
            }
            runs.push(PlannedRun {
                id,
                test: name.clone(),
                seed,
                args: cli,
                expect: pick!(t, c.defaults, expect).unwrap_or_default(),
                expect_anomaly: pick!(t, c.defaults, expect_anomaly),
                workload: args.workload.to_string(),
                nemesis: args.nemesis.to_string(),
                bug: args.bug.clone(),
                target: target_label(
                    &args
                        .target_bin
                        .as_ref()
                        .and_then(|b| b.file_name().map(|n| n.to_string_lossy().into_owned()))
                        .unwrap_or_else(|| args.target.clone()),
                    &shape_of(&args),
                ),
                shape: shape_of(&args),
            });
        }
    }
    Ok(runs)
}

/// Slice `i` of `n` (1-based): every n-th run from the (i-1)-th, so that slices mix long and
/// short tests alike, and the same file, seeds and n always give the same slices.
pub fn shard_slice(runs: &[PlannedRun], i: usize, n: usize) -> Vec<PlannedRun> {
    runs.iter()
        .enumerate()
        .filter(|(k, _)| k % n == i - 1)
        .map(|(_, r)| r.clone())
        .collect()
}

/// The one place a campaign calls the runner: `ordeal test` as a child process (its own
/// namespace and cleanup, and a crash stays its own). `slot` of `jobs` picks the job's own
/// port range for the proxy backend (ORDEAL_JOB_SLOT, read by the runner's address planning).
fn run_one(
    exe: &Path,
    run: &PlannedRun,
    campaign_dir: &Path,
    slot: usize,
    jobs: usize,
) -> RunRecord {
    let mut args = run.args.clone();
    set_flag(
        &mut args,
        "--results",
        campaign_dir.join("runs").display().to_string(),
    );
    set_flag(&mut args, "--name", run.run_name());
    let t0 = Instant::now();
    let out = Command::new(exe)
        .args(&args)
        .env("ORDEAL_JOB_SLOT", format!("{slot}/{jobs}"))
        .stdin(std::process::Stdio::null())
        .output();
    let duration_s = t0.elapsed().as_secs_f64();
    match out {
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let run_dir = stderr
                .lines()
                .find_map(|l| l.strip_prefix("ordeal test: results in "))
                .map(PathBuf::from);
            judge(
                run,
                out.status.code(),
                &stderr,
                run_dir.as_deref(),
                campaign_dir,
                duration_s,
            )
        }
        Err(e) => judge(
            run,
            None,
            &format!("could not start {}: {e}", exe.display()),
            None,
            campaign_dir,
            duration_s,
        ),
    }
}

/// A run's record from how its process ended and what its run directory holds. Only a run
/// that exited with a verdict (0, 1, 2) and wrote results.json has one; anything else (a
/// crash, a signal, no results) is an error, never valid.
pub fn judge(
    run: &PlannedRun,
    exit_code: Option<i32>,
    stderr: &str,
    run_dir: Option<&Path>,
    campaign_dir: &Path,
    duration_s: f64,
) -> RunRecord {
    let mut r = RunRecord {
        id: run.id.clone(),
        test: run.test.clone(),
        seed: run.seed,
        workload: run.workload.clone(),
        target: run.target.clone(),
        nemesis: run.nemesis.clone(),
        bug: run.bug.clone(),
        expected: run.expect.clone(),
        expect_anomaly: run.expect_anomaly.clone(),
        got: "error".into(),
        duration_s,
        run_dir: run_dir.map(|d| {
            d.strip_prefix(campaign_dir)
                .unwrap_or(d)
                .display()
                .to_string()
        }),
        ..RunRecord::default()
    };
    let last_line = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output")
        .trim()
        .to_string();
    let facts = run_dir.and_then(summary::run_facts);
    match (exit_code, facts) {
        (Some(0..=2), Some(f)) if f.verdict.is_some() => {
            r.got = f.verdict.clone().unwrap_or_default();
            r.anomalies = f.anomalies.clone();
            r.ops_per_s = f.ops_per_s;
            r.availability = f.availability;
            r.first_anomaly_s = f.first_anomaly_s;
            if let Some(t) = f.target.clone() {
                r.target = target_label(&t, &run.shape);
            }
            let named = match &run.expect_anomaly {
                Some(a) => f.anomalies.iter().any(|t| t == a),
                None => true,
            };
            r.ok = r.got == r.expected && named;
            let summary = f
                .worst_summary
                .unwrap_or_else(|| "every check valid".into());
            r.explanation = if r.got != r.expected {
                format!("expected {}, got {}: {summary}", r.expected, r.got)
            } else if !named {
                format!(
                    "{} as expected, but the checks name {} and not {}",
                    r.got,
                    if f.anomalies.is_empty() {
                        "no anomaly".to_string()
                    } else {
                        f.anomalies.join(", ")
                    },
                    run.expect_anomaly.as_deref().unwrap_or("")
                )
            } else {
                summary
            };
        }
        (Some(code @ 0..=2), _) => {
            r.explanation = format!(
                "ordeal test exited {code} but left no results.json{}: {last_line}",
                run_dir
                    .map(|d| format!(" in {}", d.display()))
                    .unwrap_or_default()
            );
        }
        (Some(code), _) => {
            r.explanation = format!("ordeal test crashed (exit {code}): {last_line}");
        }
        (None, _) => {
            r.explanation = format!("ordeal test was killed by a signal or never ran: {last_line}");
        }
    }
    r
}

/// Updates the campaign's progress.json (read by `ordeal serve`); a failure to write it only
/// costs the live view.
fn show_progress(
    dir: &Path,
    live: &Mutex<CampaignProgress>,
    change: impl FnOnce(&mut CampaignProgress),
) {
    let mut p = live.lock().unwrap_or_else(|e| e.into_inner());
    change(&mut p);
    p.updated_unix_ms = progress::now_unix_ms();
    if let Err(e) = progress::write(dir, &*p) {
        eprintln!(
            "ordeal campaign: writing {}: {e}",
            dir.join(progress::PROGRESS_FILE).display()
        );
    }
}

/// Runs `runs` on `jobs` worker threads, each taking the next run in order; returns the
/// records in plan order.
fn execute(exe: &Path, runs: &[PlannedRun], jobs: usize, campaign_dir: &Path) -> Vec<RunRecord> {
    let next = AtomicUsize::new(0);
    let records: Mutex<Vec<Option<RunRecord>>> = Mutex::new(vec![None; runs.len()]);
    let done = AtomicUsize::new(0);
    let live = Mutex::new(CampaignProgress {
        pid: std::process::id(),
        runs_planned: runs.len(),
        ..CampaignProgress::default()
    });
    show_progress(campaign_dir, &live, |_| {});
    std::thread::scope(|scope| {
        for slot in 1..=jobs.min(runs.len().max(1)) {
            let (next, records, done, live) = (&next, &records, &done, &live);
            scope.spawn(move || loop {
                let k = next.fetch_add(1, Ordering::SeqCst);
                let Some(run) = runs.get(k) else { break };
                eprintln!("ordeal campaign: {}: ordeal {}", run.id, run.args.join(" "));
                show_progress(campaign_dir, live, |p| p.running.push(run.id.clone()));
                let r = run_one(exe, run, campaign_dir, slot, jobs);
                show_progress(campaign_dir, live, |p| {
                    p.running.retain(|id| *id != run.id);
                    p.runs_done += 1;
                    p.runs_ok += usize::from(r.ok);
                });
                let n = done.fetch_add(1, Ordering::SeqCst) + 1;
                eprintln!(
                    "ordeal campaign: [{n}/{}] {}: expected {}, got {} in {:.0} s{}",
                    runs.len(),
                    r.id,
                    r.expected,
                    r.got,
                    r.duration_s,
                    if r.ok {
                        String::new()
                    } else {
                        format!("  <-- MISMATCH: {}", r.explanation)
                    }
                );
                records.lock().unwrap_or_else(|p| p.into_inner())[k] = Some(r);
            });
        }
    });
    records
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .flatten()
        .collect()
}

/// `20261127T130512Z`: the start time, also the campaign directory's name.
fn timestamp() -> String {
    let t = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    t.chars().filter(|c| c.is_ascii_alphanumeric()).collect()
}

/// A fresh `<base>/<stamp>` directory (a suffix when two campaigns start in the same second).
fn create_campaign_dir(base: &Path) -> Result<(PathBuf, String)> {
    std::fs::create_dir_all(base).with_context(|| format!("creating {}", base.display()))?;
    let stamp = timestamp();
    for attempt in 0..100 {
        let name = if attempt == 0 {
            stamp.clone()
        } else {
            format!("{stamp}-{attempt}")
        };
        let dir = base.join(&name);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok((dir, name)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
    bail!("{}: no free directory name for {stamp}", base.display())
}

/// `--keep failures`: the histories of runs that met their expectations go; everything of an
/// unexpected result stays.
fn prune_expected(campaign_dir: &Path, runs: &[RunRecord]) {
    for r in runs.iter().filter(|r| r.ok) {
        let Some(rel) = &r.run_dir else { continue };
        for name in ["history.jsonl", "history.jsonl.gz"] {
            let path = campaign_dir.join(rel).join(name);
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    eprintln!("ordeal campaign: could not remove {}: {e}", path.display());
                }
            }
        }
    }
}

/// Writes summary.json, junit.xml, detection.png and index.html into `dir`, refreshes the
/// index of all campaigns beside `out`, and prints the table.
fn publish(dir: &Path, s: &Summary, out: &Path) -> Result<()> {
    s.write(dir)?;
    let junit = dir.join("junit.xml");
    std::fs::write(&junit, junit::render(s))
        .with_context(|| format!("writing {}", junit.display()))?;
    if !s.detection.is_empty() {
        if let Err(e) = index::draw_detection(&s.detection, &dir.join("detection.png")) {
            eprintln!("ordeal campaign: {e:#} (the index has no detection chart)");
        }
    }
    let page = dir.join("index.html");
    std::fs::write(&page, index::render_campaign(s))
        .with_context(|| format!("writing {}", page.display()))?;
    index::write_results_index(out)?;
    print_table(s);
    eprintln!("ordeal campaign: results in {}", dir.display());
    Ok(())
}

fn print_table(s: &Summary) {
    let width = s.runs.iter().map(|r| r.id.len()).max().unwrap_or(4).max(4);
    println!(
        "{:<width$}  {:<8}  {:<8}  {:>7}  report",
        "run", "expected", "got", "seconds"
    );
    for r in &s.runs {
        println!(
            "{:<width$}  {:<8}  {:<8}  {:>7.1}  {}{}",
            r.id,
            r.expected,
            r.got,
            r.duration_s,
            r.run_dir.as_deref().unwrap_or("-"),
            if r.ok { "" } else { "  MISMATCH" }
        );
    }
    for d in &s.detection {
        println!(
            "bug {}: caught by {} of {} seeds{}",
            d.bug,
            d.caught,
            d.runs,
            d.median_first_anomaly_s
                .map(|t| format!(", median first anomaly at {t:.1} s"))
                .unwrap_or_default()
        );
    }
    println!(
        "{} passed, {} failed, {} errors ({:.0} s)",
        s.passed, s.failed, s.errors, s.wall_s
    );
}

pub fn run_campaign(args: CampaignArgs) -> i32 {
    let result = match &args.command {
        Some(CampaignCommand::Merge(m)) => merge::run(m),
        None => campaign_inner(&args),
    };
    match result {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("ordeal campaign: {e:#}");
            255
        }
    }
}

fn campaign_inner(args: &CampaignArgs) -> Result<bool> {
    let file = args.file.as_deref().context("no campaign file given")?;
    let c = load(file)?;
    let seeds = args.seeds.as_deref().map(parse_seeds).transpose()?;
    let planned = plan(&c, file, args.only.as_deref(), seeds.as_deref())?;
    let shard = args.shard.as_deref().map(parse_shard).transpose()?;
    if !(1..=MAX_JOBS).contains(&args.jobs) {
        bail!("--jobs {}: between 1 and {MAX_JOBS}", args.jobs);
    }
    let mine = match shard {
        Some((i, n)) => shard_slice(&planned, i, n),
        None => planned.clone(),
    };
    if args.estimate {
        estimate::print(&mine, args.jobs)?;
        return Ok(true);
    }
    let name = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "campaign".into());
    let (dir, started) = create_campaign_dir(&args.out.join(&name))?;
    let exe = std::env::current_exe().context("finding the ordeal binary")?;
    let t0 = Instant::now();
    let runs = execute(&exe, &mine, args.jobs, &dir);
    let mut s = Summary {
        campaign: name,
        file: file.display().to_string(),
        started,
        shard: args.shard.clone(),
        jobs: args.jobs,
        wall_s: t0.elapsed().as_secs_f64(),
        planned: planned.iter().map(|r| r.id.clone()).collect(),
        runs,
        ..Summary::default()
    };
    s.finish();
    if args.keep == Keep::Failures {
        prune_expected(&dir, &s.runs);
    }
    publish(&dir, &s, &args.out)?;
    Ok(s.all_ok())
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
        let a = c.tests[0].to_args(&c.defaults).unwrap();
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
        let a = c.tests[0].to_args(&c.defaults).unwrap();
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
        // A misspelt option or a bad value is refused at load, naming the test and the field.
        for (body, wanted) in [
            (
                "[[test]]\nname = \"t\"\nexpect = \"valid\"\ntime_limit = 5\n",
                "`time_limit`",
            ),
            (
                "[[test]]\nname = \"t\"\nexpect = \"valid\"\nworkload = \"queue\"\n",
                "`workload`",
            ),
            (
                "[defaults]\nnemesis = \"flood\"\n[[test]]\nname = \"t\"\nexpect = \"valid\"\n",
                "`nemesis`",
            ),
        ] {
            std::fs::write(&bad, body).unwrap();
            let e = format!("{:#}", load(&bad).unwrap_err());
            assert!(e.contains("test 1 (t)") && e.contains(wanted), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Every campaign file in the repository parses, every test to valid `ordeal test` options
    /// that survive the trip through the command line unchanged.
    #[test]
    fn every_campaign_file_parses() {
        let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../campaigns"));
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        assert!(files.len() >= 5, "{files:?}");
        for file in files {
            let c = load(&file).unwrap_or_else(|e| panic!("{e:#}"));
            let runs = plan(&c, &file, None, None).unwrap();
            assert!(!runs.is_empty(), "{}", file.display());
            for t in &c.tests {
                let args = t.test_args(&c.defaults).unwrap();
                let cli = t.to_args(&c.defaults).unwrap();
                #[derive(clap::Parser)]
                struct Cli {
                    #[command(subcommand)]
                    command: Sub,
                }
                #[derive(clap::Subcommand)]
                enum Sub {
                    Test(TestArgs),
                }
                let parsed = <Cli as clap::Parser>::try_parse_from(
                    std::iter::once("ordeal".to_string()).chain(cli),
                )
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                let Sub::Test(parsed) = parsed.command;
                let mut want = args.clone();
                want.no_progress = true;
                assert_eq!(
                    serde_json::to_value(&parsed).unwrap(),
                    serde_json::to_value(&want).unwrap(),
                    "{}",
                    file.display()
                );
            }
        }
    }

    fn planned(expect: &str, anomaly: Option<&str>) -> PlannedRun {
        PlannedRun {
            id: "t#1".into(),
            test: "t".into(),
            seed: Some(1),
            args: vec![],
            expect: expect.into(),
            expect_anomaly: anomaly.map(str::to_string),
            workload: "list-append".into(),
            nemesis: "none".into(),
            bug: None,
            target: "paxos-kv".into(),
            shape: String::new(),
        }
    }

    #[test]
    fn judge_takes_the_verdict_from_results_and_calls_a_crash_an_error() {
        let dir = std::env::temp_dir().join(format!("ordeal-camp-judge-{}", std::process::id()));
        let run_dir = dir.join("runs/t-s1/x");
        std::fs::create_dir_all(&run_dir).unwrap();
        // A crash is an error whatever the expectation, even with no results at all.
        let r = judge(
            &planned("valid", None),
            Some(255),
            "boom\nstore failed\n",
            None,
            &dir,
            1.0,
        );
        assert_eq!((r.got.as_str(), r.ok), ("error", false));
        assert!(r.explanation.contains("crashed") && r.explanation.contains("store failed"));
        // Exit 0 without results.json is an error too, not valid.
        let r = judge(
            &planned("valid", None),
            Some(0),
            "",
            Some(&run_dir),
            &dir,
            1.0,
        );
        assert_eq!(r.got, "error", "{}", r.explanation);
        std::fs::write(
            run_dir.join("results.json"),
            r#"{"verdict":"invalid","checks":[{"name":"strict-serializable","verdict":"invalid",
               "summary":"G1b found","details":{"anomaly_types":["G0","G1b"]}}]}"#,
        )
        .unwrap();
        let r = judge(
            &planned("invalid", Some("G1b")),
            Some(1),
            "",
            Some(&run_dir),
            &dir,
            2.0,
        );
        assert!(r.ok, "{}", r.explanation);
        assert_eq!(r.run_dir.as_deref(), Some("runs/t-s1/x"));
        let r = judge(
            &planned("invalid", Some("G2-item")),
            Some(1),
            "",
            Some(&run_dir),
            &dir,
            2.0,
        );
        assert!(
            !r.ok && r.explanation.contains("not G2-item"),
            "{}",
            r.explanation
        );
        let r = judge(
            &planned("valid", None),
            Some(1),
            "",
            Some(&run_dir),
            &dir,
            2.0,
        );
        assert!(
            !r.ok
                && r.explanation
                    .starts_with("expected valid, got invalid: strict-serializable: G1b found"),
            "{}",
            r.explanation
        );
        std::fs::remove_dir_all(&dir).unwrap();
        // The shipped campaign files parse.
        for f in ["check.toml", "nightly.toml", "regressions.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../campaigns")
                .join(f);
            let c = load(&path).unwrap_or_else(|e| panic!("{e:#}"));
            plan(&c, &path, None, None).unwrap();
        }
    }

    #[test]
    fn seeds_and_shards_parse_and_slices_partition_the_plan() {
        assert_eq!(parse_seeds("1-3,7").unwrap(), vec![1, 2, 3, 7]);
        assert_eq!(parse_seeds("5").unwrap(), vec![5]);
        assert!(parse_seeds("3-1").is_err());
        assert!(parse_seeds("1-100000")
            .unwrap_err()
            .to_string()
            .contains("more than"));
        assert!(parse_seeds("x").is_err());
        assert_eq!(parse_shard("2/4").unwrap(), (2, 4));
        for bad in ["0/2", "3/2", "2", "a/b"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
        let dir = std::env::temp_dir().join(format!("ordeal-camp-seeds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "[defaults]\nexpect = \"valid\"\n[[test]]\nname = \"a\"\nseeds = \"1-3\"\n[[test]]\nname = \"b\"\nseeds = [4, 9]\n[[test]]\nname = \"c\"\nseed = 5\n",
        )
        .unwrap();
        let c = load(&file).unwrap();
        let runs = plan(&c, &file, None, None).unwrap();
        let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a#1", "a#2", "a#3", "b#4", "b#9", "c#5"]);
        assert!(
            runs[4].args.windows(2).any(|w| w == ["--seed", "9"]),
            "{:?}",
            runs[4].args
        );
        // --seeds replaces every test's own.
        let over = plan(&c, &file, Some("b"), Some(&[1, 2])).unwrap();
        let ids: Vec<&str> = over.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["b#1", "b#2"]);
        // Three slices: disjoint, together the whole plan, the same every time.
        let slices: Vec<Vec<String>> = (1..=3)
            .map(|i| shard_slice(&runs, i, 3).into_iter().map(|r| r.id).collect())
            .collect();
        let mut all: Vec<String> = slices.concat();
        all.sort();
        let mut want: Vec<String> = runs.iter().map(|r| r.id.clone()).collect();
        want.sort();
        assert_eq!(all, want);
        assert_eq!(slices[0], ["a#1", "b#4"]);
        assert_eq!(runs[0].target, "paxos-kv");
        // A sharded test's target column shows its layout, and keeps it when the run's
        // config.json names the target.
        std::fs::write(
            &file,
            "[[test]]\nname = \"s\"\nexpect = \"valid\"\ngroups = 2\nnodes = 3\ncc = \"occ\"\n",
        )
        .unwrap();
        let sharded = plan(&load(&file).unwrap(), &file, None, None).unwrap();
        assert_eq!(sharded[0].target, "paxos-kv 2g×3 occ");
        assert_eq!(
            target_label("paxos-kv", &sharded[0].shape),
            "paxos-kv 2g×3 occ"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn each_job_slot_gets_its_own_port_blocks() {
        let all = crate::runner::PORT_BLOCKS;
        assert_eq!(crate::runner::job_port_blocks(None), (0, all));
        assert_eq!(crate::runner::job_port_blocks(Some("junk")), (0, all));
        let slices: Vec<(u16, u16)> = (1..=4)
            .map(|i| crate::runner::job_port_blocks(Some(&format!("{i}/4"))))
            .collect();
        for w in slices.windows(2) {
            assert!(w[0].0 + w[0].1 <= w[1].0, "{slices:?}");
        }
        assert!(slices
            .iter()
            .all(|&(first, count)| count > 0 && first + count <= all));
    }

    #[test]
    fn only_that_matches_nothing_is_an_error_naming_the_tests() {
        let file = PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../campaigns/check.toml"
        ));
        let c = load(&file).unwrap();
        let err = plan(&c, &file, Some("no-such-test"), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"no-such-test\"") && err.contains("register-none"),
            "{err}"
        );
    }
}
