//! What `ordeal serve` lists: every run directory (`<results>/<test>/<start>/`, and the runs
//! inside campaigns, `<results>/campaigns/<name>/<start>/runs/<test>/<start>/`) and every
//! campaign directory, with what each one's files say: verdict, workload, bug, or live progress.
//! Scans are bounded in count; a finished run's facts are cached (its files no longer change).

use super::progress::{self, CampaignProgress, RunProgress};
use crate::campaign::Summary;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// At most this many run directories are looked at per listing.
pub const MAX_RUN_DIRS: usize = 20_000;
/// At most this many campaign directories.
pub const MAX_CAMPAIGN_DIRS: usize = 5_000;
/// Files bigger than this (a results.json with a huge counterexample) are not parsed for the
/// list; the run shows its verdict as unknown to the list and its report still opens.
const MAX_PARSE_BYTES: u64 = 64 << 20;
/// A run directory with neither results nor progress whose log changed this recently is a run
/// starting up (progress begins with the main phase).
const STARTING_GRACE_S: u64 = 60;

/// Where a run stands.
#[derive(Clone, Debug, PartialEq)]
pub enum RunState {
    /// Finished with a verdict: valid, invalid or unknown.
    Done(String),
    /// In progress (live process); progress is absent while the cluster starts.
    Running(Option<RunProgress>),
    /// No results and no live process: it crashed, was killed, or was aborted.
    Error,
}

impl RunState {
    /// The word the list shows and the verdict filter matches.
    pub fn label(&self) -> &str {
        match self {
            RunState::Done(v) => v,
            RunState::Running(_) => "running",
            RunState::Error => "error",
        }
    }
}

/// One run directory.
#[derive(Clone, Debug)]
pub struct RunEntry {
    /// The directory relative to the results root, `/`-separated.
    pub rel: String,
    /// The test's name (the parent directory).
    pub test: String,
    /// The start stamp (the directory's name), how the list sorts newest first.
    pub stamp: String,
    /// `name/start` of the campaign it belongs to.
    pub campaign: Option<String>,
    pub workload: Option<String>,
    pub nemesis: Option<String>,
    pub bug: Option<String>,
    pub seed: Option<u64>,
    pub nodes: Option<u64>,
    pub target: Option<String>,
    pub state: RunState,
    pub ops_per_s: Option<f64>,
    pub has_report: bool,
}

/// Where a campaign stands.
#[derive(Clone, Debug)]
pub enum CampaignState {
    Done(Box<Summary>),
    Running(CampaignProgress),
    /// No summary and no live process.
    Incomplete,
}

#[derive(Clone, Debug)]
pub struct CampaignEntry {
    pub rel: String,
    pub name: String,
    pub stamp: String,
    pub state: CampaignState,
}

/// Everything found under the root, newest first.
#[derive(Default)]
pub struct Listing {
    pub runs: Vec<RunEntry>,
    pub campaigns: Vec<CampaignEntry>,
    /// Whether a bound cut the scan short.
    pub truncated: bool,
}

/// Facts of finished runs, keyed by directory and the mtime of its results.json.
#[derive(Default)]
pub struct Cache {
    runs: Mutex<HashMap<PathBuf, (SystemTime, RunEntry)>>,
}

/// Sub-directories of `dir` (not following symlinks, so `latest` is not listed twice), sorted.
fn sub_dirs(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    v.sort();
    v
}

fn is_run_dir(dir: &Path) -> bool {
    [
        "config.json",
        "results.json",
        progress::PROGRESS_FILE,
        "ordeal.log",
    ]
    .iter()
    .any(|f| dir.join(f).is_file())
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.len() > MAX_PARSE_BYTES {
        return None;
    }
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The parts of config.json the list shows (tolerant of older and newer runs).
#[derive(Deserialize, Default)]
struct ConfigView {
    #[serde(default)]
    args: serde_json::Value,
    seed: Option<u64>,
    #[serde(default)]
    target: serde_json::Value,
}

#[derive(Deserialize)]
struct ResultsView {
    verdict: Option<String>,
    #[serde(default)]
    run: serde_json::Value,
}

fn str_field(v: &serde_json::Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(|x| x.as_str())
        .map(str::to_string)
        .filter(|s| !s.is_empty())
}

impl Cache {
    fn run(&self, root: &Path, rel: String, campaign: Option<String>) -> RunEntry {
        let dir = root.join(&rel);
        let results = dir.join("results.json");
        let results_mtime = std::fs::metadata(&results).and_then(|m| m.modified()).ok();
        if let Some(mtime) = results_mtime {
            let cache = self.runs.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((t, e)) = cache.get(&dir) {
                if *t == mtime {
                    return e.clone();
                }
            }
        }
        let parts: Vec<&str> = rel.rsplit('/').collect();
        let config: ConfigView = read_json(&dir.join("config.json")).unwrap_or_default();
        let mut e = RunEntry {
            test: parts.get(1).unwrap_or(&"").to_string(),
            stamp: parts.first().unwrap_or(&"").to_string(),
            rel,
            campaign,
            workload: str_field(&config.args, "workload"),
            nemesis: str_field(&config.args, "nemesis"),
            bug: str_field(&config.args, "bug"),
            seed: config.seed,
            nodes: config.args.get("nodes").and_then(|v| v.as_u64()),
            target: str_field(&config.target, "name").or_else(|| str_field(&config.args, "target")),
            state: RunState::Error,
            ops_per_s: None,
            has_report: dir.join("report.html").is_file(),
        };
        if results_mtime.is_some() {
            let view: Option<ResultsView> = read_json(&results);
            e.state = RunState::Done(
                view.as_ref()
                    .and_then(|v| v.verdict.clone())
                    .unwrap_or_else(|| "unknown".into()),
            );
            e.ops_per_s = view.and_then(|v| v.run["throughput_ops_per_s"].as_f64());
            let mut cache = self.runs.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= MAX_RUN_DIRS {
                cache.clear();
            }
            cache.insert(
                dir,
                (results_mtime.unwrap_or(SystemTime::UNIX_EPOCH), e.clone()),
            );
            return e;
        }
        e.state = match progress::read::<RunProgress>(&dir) {
            Some(p) if progress::ordeal_alive(p.pid) => RunState::Running(Some(p)),
            Some(_) => RunState::Error,
            None if recently_changed(&dir.join("ordeal.log")) => RunState::Running(None),
            None => RunState::Error,
        };
        e
    }
}

fn recently_changed(path: &Path) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age.as_secs() < STARTING_GRACE_S)
}

fn campaign_entry(root: &Path, rel: String, name: &str, stamp: &str) -> CampaignEntry {
    let dir = root.join(&rel);
    let state = match Summary::read(&dir) {
        Ok(s) => CampaignState::Done(Box::new(s)),
        Err(_) => match progress::read::<CampaignProgress>(&dir) {
            Some(p) if progress::ordeal_alive(p.pid) => CampaignState::Running(p),
            _ => CampaignState::Incomplete,
        },
    };
    CampaignEntry {
        rel,
        name: name.to_string(),
        stamp: stamp.to_string(),
        state,
    }
}

/// Scans `root` (canonical). Runs and campaigns come newest first (by start stamp).
pub fn scan(root: &Path, cache: &Cache) -> Listing {
    let mut l = Listing::default();
    let mut run_dirs: Vec<(String, Option<String>)> = Vec::new();
    'tests: for test in sub_dirs(root) {
        if test == "campaigns" {
            continue;
        }
        for stamp in sub_dirs(&root.join(&test)) {
            if run_dirs.len() >= MAX_RUN_DIRS {
                l.truncated = true;
                break 'tests;
            }
            if is_run_dir(&root.join(&test).join(&stamp)) {
                run_dirs.push((format!("{test}/{stamp}"), None));
            }
        }
    }
    let campaigns = root.join("campaigns");
    'campaigns: for name in sub_dirs(&campaigns) {
        for stamp in sub_dirs(&campaigns.join(&name)) {
            if l.campaigns.len() >= MAX_CAMPAIGN_DIRS {
                l.truncated = true;
                break 'campaigns;
            }
            let rel = format!("campaigns/{name}/{stamp}");
            let runs = root.join(&rel).join("runs");
            for test in sub_dirs(&runs) {
                for run in sub_dirs(&runs.join(&test)) {
                    if run_dirs.len() >= MAX_RUN_DIRS {
                        l.truncated = true;
                        break;
                    }
                    run_dirs.push((
                        format!("{rel}/runs/{test}/{run}"),
                        Some(format!("{name}/{stamp}")),
                    ));
                }
            }
            l.campaigns.push(campaign_entry(root, rel, &name, &stamp));
        }
    }
    l.runs = run_dirs
        .into_iter()
        .map(|(rel, campaign)| cache.run(root, rel, campaign))
        .collect();
    l.runs
        .sort_by(|a, b| b.stamp.cmp(&a.stamp).then_with(|| a.rel.cmp(&b.rel)));
    l.campaigns
        .sort_by(|a, b| b.stamp.cmp(&a.stamp).then_with(|| a.rel.cmp(&b.rel)));
    l
}
