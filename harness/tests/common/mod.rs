//! Helpers shared by the integration tests: the real store's binary, and watching a run (its
//! faults, its node processes, its network namespace) from outside.

// Each test binary uses a part of this module.
#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

/// The `paxos-kv` beside `ordeal`, built first (once per test process) if it is missing or
/// older than the store's sources. Under `cargo test --workspace` Cargo has already built it
/// (the store has integration tests of its own), so this costs nothing there; it matters when
/// only this crate's tests run after the store changed.
pub fn store_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_ordeal")).with_file_name("paxos-kv");
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the harness crate sits in the workspace");
        let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
        let sources = newest_mtime(&[
            workspace.join("store"),
            workspace.join("Cargo.lock"),
            workspace.join("Cargo.toml"),
        ]);
        let stale = match built {
            Some(b) => b < sources,
            None => true,
        };
        if stale {
            build_store(&bin);
        }
        bin
    })
}

/// Builds `paxos-kv` with the profile `ordeal` was built with, so it lands beside `ordeal`.
fn build_store(bin: &Path) {
    let profile_dir = bin.parent().expect("ordeal has a directory");
    let profile = profile_dir
        .file_name()
        .and_then(|p| p.to_str())
        .expect("ordeal's directory is named after its profile");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "paxos-kv", "--bin", "paxos-kv"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    // Cargo names the dev profile's directory `debug`, any other profile's by its own name.
    match profile {
        "debug" => {}
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let status = cmd.status().expect("run cargo to build paxos-kv");
    assert!(status.success(), "building paxos-kv failed: {status}");
    assert!(
        bin.is_file(),
        "paxos-kv not found at {} after building it",
        bin.display()
    );
}

/// The newest modification time of the given files and of every file below the given
/// directories (skipping `target`), a few levels deep at most.
fn newest_mtime(paths: &[PathBuf]) -> SystemTime {
    const MAX_DEPTH: usize = 6;
    let mut newest = SystemTime::UNIX_EPOCH;
    let mut stack: Vec<(PathBuf, usize)> = paths.iter().map(|p| (p.clone(), 0)).collect();
    while let Some((p, depth)) = stack.pop() {
        let Ok(meta) = std::fs::metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            if depth >= MAX_DEPTH || p.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            for e in std::fs::read_dir(&p).into_iter().flatten().flatten() {
                stack.push((e.path(), depth + 1));
            }
        } else if let Ok(m) = meta.modified() {
            newest = newest.max(m);
        }
    }
    newest
}

/// Waits (bounded) until the run's history shows the fault `start_f` in force; returns the run
/// dir.
pub fn wait_for_fault(results: &Path, child: &mut Child, start_f: &str) -> PathBuf {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "ordeal exited before {start_f}"
        );
        let latest = results.join("latest");
        if let Ok(h) = std::fs::read_to_string(latest.join("history.jsonl")) {
            if h.contains(start_f) {
                return std::fs::canonicalize(&latest).unwrap();
            }
        }
        assert!(Instant::now() < deadline, "no {start_f} within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn alive(pid: i32) -> bool {
    // A zombie counts as gone: it holds no resources but its pid.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

pub fn interrupt_and_wait(child: &mut Child) -> i32 {
    // SAFETY: signalling a child we started.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    // An interrupted run still recovers, reads and checks: the bound only guards against a hang.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ordeal did not exit within 120 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn node_pids(run_dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(run_dir.join("nodes").join("pids"))
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect()
}

pub fn netns_inode(pid: u32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|m| m.ino())
}

pub fn any_process_in_netns(inode: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .any(|e| {
            std::fs::metadata(e.path().join("ns/net"))
                .map(|m| m.ino() == inode)
                .unwrap_or(false)
        })
}

/// Whether the netns backend can run here (root and iptables). Without them it cannot run at
/// all, and the proxy tests cover the fallback: say so rather than pretend.
pub fn netns_possible(test: &str) -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    let iptables = Command::new("iptables").arg("--version").output().is_ok();
    if !root || !iptables {
        eprintln!("skipping {test}: needs root and iptables");
    }
    root && iptables
}

/// Waits for `ordeal test` to finish on its own (it bounds its own phases); past
/// `RUN_DEADLINE_S` it is interrupted (so that it cleans up), then killed.
pub fn wait_bounded(mut child: Child) -> std::process::ExitStatus {
    const RUN_DEADLINE_S: u64 = 120;
    const CLEANUP_GRACE_S: u64 = 30;
    let started = Instant::now();
    let mut interrupted = false;
    loop {
        if let Some(status) = child.try_wait().expect("wait for ordeal") {
            assert!(!interrupted, "ordeal ran past {RUN_DEADLINE_S} s: {status}");
            return status;
        }
        let elapsed = started.elapsed();
        if !interrupted && elapsed > Duration::from_secs(RUN_DEADLINE_S) {
            // SAFETY: signalling a child we started and have not yet reaped.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGINT);
            }
            interrupted = true;
        }
        if elapsed > Duration::from_secs(RUN_DEADLINE_S + CLEANUP_GRACE_S) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ordeal ignored SIGINT for {CLEANUP_GRACE_S} s past its deadline");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The named check's entry in a run's results.json.
pub fn check_named<'a>(results: &'a Value, name: &str) -> &'a Value {
    results["checks"]
        .as_array()
        .expect("results.json has a checks array")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name:?} check in results.json: {results:#}"))
}

/// What one sharded run (`ordeal test --groups 2 --nodes 3`) left behind.
pub struct ShardedRun {
    pub code: i32,
    pub results: Value,
    pub history: Vec<Value>,
    pub config: Value,
    /// The run's own directory (under the temp results directory).
    pub run_dir: PathBuf,
    pub dir: PathBuf,
}

impl ShardedRun {
    pub fn check(&self, name: &str) -> &Value {
        check_named(&self.results, name)
    }

    /// The values of the nemesis events `f`, in order.
    pub fn nemesis(&self, f: &str) -> Vec<&Value> {
        self.history
            .iter()
            .filter(|e| e["process"] == "nemesis" && e["f"] == f)
            .map(|e| &e["value"])
            .collect()
    }

    pub fn ok_count(&self) -> usize {
        self.history
            .iter()
            .filter(|e| e["process"] != "nemesis" && e["type"] == "ok")
            .count()
    }

    /// Removes the results of a run that passed its assertions (a failing one keeps them).
    pub fn done(self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One sharded run of the real store, two replica groups of three and a controller, with
/// `args` after the layout; bounded by [`wait_bounded`]. `tag` names its temp directory.
pub fn sharded_run(tag: &str, args: &[&str]) -> ShardedRun {
    let dir = std::env::temp_dir().join(format!("ordeal-sharded-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ordeal"));
    cmd.args(["test", "--no-progress", "--groups", "2", "--nodes", "3"])
        .args(args)
        .arg("--store-bin")
        .arg(store_bin())
        .arg("--results")
        .arg(&dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("ordeal.stderr")).expect("create ordeal.stderr"));
    eprintln!("{tag}: results in {}", dir.display());
    let status = wait_bounded(cmd.spawn().expect("start ordeal"));
    let run_dir = std::fs::canonicalize(dir.join("latest")).unwrap_or_else(|e| {
        panic!(
            "no run directory ({e}); ordeal exited {status}: {}",
            std::fs::read_to_string(dir.join("ordeal.stderr")).unwrap_or_default()
        )
    });
    let read = |f: &str| {
        std::fs::read_to_string(run_dir.join(f))
            .unwrap_or_else(|e| panic!("{f} missing from {}: {e}", run_dir.display()))
    };
    ShardedRun {
        code: status.code().unwrap_or(-1),
        results: serde_json::from_str(&read("results.json")).expect("results.json"),
        history: read("history.jsonl")
            .lines()
            .map(|l| serde_json::from_str(l).expect("a history line"))
            .collect(),
        config: serde_json::from_str(&read("config.json")).expect("config.json"),
        run_dir,
        dir,
    }
}
