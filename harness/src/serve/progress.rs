//! `progress.json`: what a run (or a campaign) in progress writes into its own directory so
//! that `ordeal serve` can show it live. It is replaced atomically (written beside, then
//! renamed), at most about once a second, and never read by the run itself. A directory whose
//! `progress.json` names a process that is gone, and that has no results, ended without a
//! verdict.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const PROGRESS_FILE: &str = "progress.json";

/// How often a run rewrites its progress file at most.
const WRITE_INTERVAL: Duration = Duration::from_secs(1);

/// A run's progress, as `ordeal test` writes it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunProgress {
    /// The `ordeal test` process, to tell a live run from one that died.
    pub pid: u32,
    /// `main` (clients and faults running), then `checking` (healing, final reads, checks).
    pub phase: String,
    /// Seconds of the main phase so far.
    pub elapsed_s: f64,
    pub time_limit_s: u64,
    pub ops_ok: u64,
    pub ops_fail: u64,
    pub ops_info: u64,
    /// The faults in force, or `none`.
    pub fault: String,
    pub updated_unix_ms: u64,
}

/// A campaign's progress, as `ordeal campaign` writes it into the campaign directory.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CampaignProgress {
    pub pid: u32,
    /// Runs this campaign (or slice) runs, and how many have ended.
    pub runs_planned: usize,
    pub runs_done: usize,
    pub runs_ok: usize,
    /// The ids (`test#seed`) of the runs going on now.
    pub running: Vec<String>,
    pub updated_unix_ms: u64,
}

pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Replaces `dir/progress.json` atomically, so a reader never sees half a file.
pub fn write(dir: &Path, progress: &impl Serialize) -> std::io::Result<()> {
    let text = serde_json::to_vec(progress).map_err(std::io::Error::other)?;
    let tmp = dir.join(format!(".{PROGRESS_FILE}.{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join(PROGRESS_FILE))
}

/// Reads `dir/progress.json`; `None` when it is absent or unreadable (a torn file cannot
/// happen, see `write`, but an old or foreign one may not parse).
pub fn read<T: for<'de> Deserialize<'de>>(dir: &Path) -> Option<T> {
    let text = std::fs::read(dir.join(PROGRESS_FILE)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Whether `pid` is a live ordeal process (not a later process that reused the id).
pub fn ordeal_alive(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => cmdline
            .split(|b| *b == 0)
            .next()
            .is_some_and(|exe| String::from_utf8_lossy(exe).contains("ordeal")),
        Err(_) => false,
    }
}

/// The runner's side: rewrites the run's progress file from its progress ticker.
pub struct LiveRun {
    dir: PathBuf,
    time_limit_s: u64,
    last_write: Option<Instant>,
}

impl LiveRun {
    pub fn new(dir: &Path, time_limit_s: u64) -> LiveRun {
        LiveRun {
            dir: dir.to_path_buf(),
            time_limit_s,
            last_write: None,
        }
    }

    fn put(&self, phase: &str, elapsed: Duration, ops: [u64; 3], fault: &str) {
        let p = RunProgress {
            pid: std::process::id(),
            phase: phase.into(),
            elapsed_s: elapsed.as_secs_f64(),
            time_limit_s: self.time_limit_s,
            ops_ok: ops[0],
            ops_fail: ops[1],
            ops_info: ops[2],
            fault: fault.into(),
            updated_unix_ms: now_unix_ms(),
        };
        // Progress only illustrates the run: a failure to write it must not stop the run.
        if let Err(e) = write(&self.dir, &p) {
            tracing::warn!("writing {}: {e}", self.dir.join(PROGRESS_FILE).display());
        }
    }

    /// During the main phase: `ops` are ok, fail and info so far. Writes at most once a second.
    pub fn main_phase(&mut self, elapsed: Duration, ops: [u64; 3], fault: &str) {
        if self
            .last_write
            .is_some_and(|t| t.elapsed() < WRITE_INTERVAL)
        {
            return;
        }
        self.last_write = Some(Instant::now());
        self.put("main", elapsed, ops, fault);
    }

    /// The main phase is over: healing, final reads and checks follow.
    pub fn checking(&self, elapsed: Duration, ops: [u64; 3]) {
        self.put("checking", elapsed, ops, "none");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_round_trips_and_a_dead_pid_is_not_alive() {
        let dir = std::env::temp_dir().join(format!("ordeal-progress-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(read::<RunProgress>(&dir).is_none());
        let mut live = LiveRun::new(&dir, 30);
        live.main_phase(Duration::from_secs(2), [5, 1, 2], "kill n1");
        let p: RunProgress = read(&dir).unwrap();
        assert_eq!(
            (
                p.phase.as_str(),
                p.ops_ok,
                p.ops_fail,
                p.ops_info,
                p.fault.as_str()
            ),
            ("main", 5, 1, 2, "kill n1")
        );
        assert_eq!((p.pid, p.time_limit_s), (std::process::id(), 30));
        // Within the second, a second tick does not rewrite the file.
        live.main_phase(Duration::from_secs(3), [9, 1, 2], "none");
        assert_eq!(read::<RunProgress>(&dir).unwrap().ops_ok, 5);
        live.checking(Duration::from_secs(3), [9, 1, 2]);
        let p: RunProgress = read(&dir).unwrap();
        assert_eq!((p.phase.as_str(), p.ops_ok), ("checking", 9));
        // No temporary file is left beside it.
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "{names:?}");
        std::fs::write(dir.join(PROGRESS_FILE), "{not json").unwrap();
        assert!(read::<RunProgress>(&dir).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
        // This test binary is not ordeal; pid 0 is nobody.
        assert!(!ordeal_alive(0));
        assert!(!ordeal_alive(u32::MAX));
    }
}
