//! Targets other than the built-in paxos-kv: a real etcd cluster (`etcd` on PATH; CI installs
//! Debian's `etcd-server`) and a TOML target file.
//!
//! - etcd under partitions is linearizable; etcd with local (serializable) reads under leader
//!   isolation is not, and the counterexample names the stale read and the node that served it;
//!   list-append on etcd is valid under kills; Ctrl-C on an etcd run leaves nothing behind.
//! - `targets/paxos-kv.toml` gives the built-in target's verdicts, the planted bug included.
//! - Bad target files are refused before anything starts, naming the file, the field and why.
//!
//! etcd partitions run on both backends: the network namespace (root; skipped with a message
//! without it) and the userspace proxy (`--net proxy`, one proxy in front of each node that tells
//! the dialling peer by etcd's `X-PeerURLs` header), so the same verdicts are asserted on each.
//! A run that fails its assertions keeps its results directory for a person to read.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;
use common::{
    alive, any_process_in_netns, interrupt_and_wait, netns_inode, netns_possible, node_pids,
    store_bin, wait_for_fault,
};

fn ordeal() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ordeal"))
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ordeal-targets-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// etcd must be installed where these tests run (CI installs it); its absence is a failure.
fn etcd_installed() {
    let found = Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        found,
        "etcd is not on PATH: install etcd 3.4 (apt-get install etcd-server)"
    );
}

/// Short-run settings: 10 s, faults every 1-1.5 s held 2.5-3 s.
const SHORT: &[&str] = &[
    "--time-limit",
    "10",
    "--rate",
    "300",
    "--concurrency",
    "8",
    "--nemesis-interval-ms",
    "1000-1500",
    "--nemesis-hold-ms",
    "2500-3000",
    "--recovery-s",
    "1",
    "--seed",
    "11",
];

struct Run {
    code: i32,
    stderr: String,
    results: Value,
    run_dir: PathBuf,
}

impl Run {
    fn check(&self, name: &str) -> &Value {
        common::check_named(&self.results, name)
    }

    /// Deletes the results directory the run was written to (a failed run keeps it).
    fn remove(&self) {
        if let Some(results) = self.run_dir.parent().and_then(Path::parent) {
            let _ = std::fs::remove_dir_all(results);
        }
    }

    fn ok_count(&self) -> u64 {
        self.results["counts"]
            .as_object()
            .map(|fs| fs.values().filter_map(|c| c["ok"].as_u64()).sum())
            .unwrap_or(0)
    }
}

/// Runs `ordeal test` with `args` (plus the short settings) into `results`.
fn run(results: &Path, args: &[&str]) -> Run {
    let out = ordeal()
        .args(["test", "--no-progress"])
        .args(SHORT)
        .args(args)
        .arg("--results")
        .arg(results)
        .stdin(Stdio::null())
        .output()
        .expect("run ordeal");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let run_dir = std::fs::canonicalize(results.join("latest"))
        .unwrap_or_else(|_| panic!("no run directory; ordeal said:\n{stderr}"));
    let results = std::fs::read_to_string(run_dir.join("results.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| panic!("no results.json in {}:\n{stderr}", run_dir.display()));
    Run {
        code: out.status.code().unwrap_or(-1),
        stderr,
        results,
        run_dir,
    }
}

#[test]
fn etcd_register_under_partitions_is_valid() {
    etcd_installed();
    if !netns_possible("etcd under partitions") {
        return;
    }
    etcd_register_under_partitions("netns").remove();
}

#[test]
fn etcd_register_under_partitions_through_the_proxy_is_valid() {
    etcd_installed();
    let r = etcd_register_under_partitions("proxy");
    assert_proxy_carried_peer_traffic(&r);
    r.remove();
}

/// The run went through the userspace proxy, and its partitions cut etcd's peer links: a
/// cut heals by closing the streams that lost bytes, so etcd logs a peer going inactive.
fn assert_proxy_carried_peer_traffic(r: &Run) {
    let stats = &r.results["run"]["proxy_stats"];
    assert!(stats.is_object(), "no proxy stats: not the proxy backend");
    let logs: String = (1..=3)
        .map(|i| {
            std::fs::read_to_string(r.run_dir.join(format!("nodes/n{i}.log"))).unwrap_or_default()
        })
        .collect();
    assert!(
        logs.contains("peer became inactive"),
        "no etcd node lost a peer: the partitions did not cut ({})",
        r.run_dir.display()
    );
}

/// An etcd register run under partitions on `net` is valid, names the target and its version.
fn etcd_register_under_partitions(net: &str) -> Run {
    let results = temp_dir(&format!("etcd-register-{net}"));
    let r = run(
        &results,
        &[
            "--target",
            "etcd",
            "--workload",
            "register",
            "--nemesis",
            "partition",
            "--net",
            net,
        ],
    );
    assert_eq!(
        r.code,
        0,
        "expected valid: {}\n{}",
        r.run_dir.display(),
        r.stderr
    );
    assert_eq!(r.check("linearizable")["verdict"], "valid");
    assert_eq!(r.check("convergence")["verdict"], "valid");
    assert!(
        r.ok_count() > 100,
        "too few ok operations: {}",
        r.ok_count()
    );
    let history = std::fs::read_to_string(r.run_dir.join("history.jsonl")).unwrap();
    assert!(history.contains("start-partition"), "no partition injected");
    // The report and config name the target and its version.
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(r.run_dir.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["target"]["name"], "etcd");
    assert_eq!(config["target"]["protocol"], "etcd-v3");
    let version = config["target"]["version"].as_str().unwrap_or("");
    assert!(version.contains("etcd Version: 3."), "version: {version}");
    assert!(config["reproduce"]
        .as_str()
        .unwrap()
        .contains("--target etcd"));
    let report = std::fs::read_to_string(r.run_dir.join("report.html")).unwrap();
    assert!(
        report.contains(version),
        "the report does not name the version"
    );
    r
}

#[test]
fn etcd_local_reads_under_leader_isolation_are_invalid_with_the_stale_read() {
    etcd_installed();
    if !netns_possible("etcd local reads") {
        return;
    }
    etcd_local_reads_under_leader_isolation("netns").remove();
}

/// The proxy must really cut the isolated leader off its followers: otherwise its local reads
/// stay fresh and the run is valid.
#[test]
fn etcd_local_reads_under_leader_isolation_through_the_proxy_are_invalid() {
    etcd_installed();
    let r = etcd_local_reads_under_leader_isolation("proxy");
    assert_proxy_carried_peer_traffic(&r);
    r.remove();
}

/// An etcd run with local reads under leader isolation on `net` is invalid, and the stuck op of
/// its counterexample is a read naming the node that served it.
fn etcd_local_reads_under_leader_isolation(net: &str) -> Run {
    let results = temp_dir(&format!("etcd-local-{net}"));
    let r = run(
        &results,
        &[
            "--target",
            "etcd",
            "--workload",
            "register",
            "--nemesis",
            "partition",
            "--partition-shapes",
            "isolate-leader",
            "--read-consistency",
            "local",
            "--net",
            net,
        ],
    );
    assert_eq!(
        r.code,
        1,
        "expected invalid: {}\n{}",
        r.run_dir.display(),
        r.stderr
    );
    let lin = r.check("linearizable");
    assert_eq!(lin["verdict"], "invalid");
    // The op no linearization gets past is a read, and it names the node that answered it.
    let summary = lin["summary"].as_str().unwrap();
    let stuck = summary
        .split_once("no order admits ")
        .map(|(_, s)| s)
        .unwrap_or_else(|| panic!("no stuck op in the summary: {summary}"));
    assert!(
        stuck.contains(" read -> "),
        "the stuck op is not a read: {stuck}"
    );
    assert!(
        stuck.contains("(node n"),
        "the stuck read names no node: {stuck}"
    );
    let ops = lin["details"]["counterexample"]["ops"].as_array().unwrap();
    assert!(ops.iter().all(|op| op["node"].as_str().is_some()));
    r
}

/// `targets/etcd.toml` describes etcd as a user would (`peers.per_node = false`,
/// `peers.dialer = "header:X-PeerURLs"`): through the proxy its partitions cut, so local reads
/// under leader isolation go stale and the run is invalid.
#[test]
fn the_etcd_target_file_through_the_proxy_catches_stale_local_reads() {
    etcd_installed();
    let results = temp_dir("etcd-file-proxy");
    let file = repo_file("targets/etcd.toml").display().to_string();
    let args = [
        "--target",
        &file,
        "--workload",
        "register",
        "--nemesis",
        "partition",
        "--partition-shapes",
        "isolate-leader",
        "--read-consistency",
        "local",
        "--net",
        "proxy",
    ];
    // A stale read needs a local read to land on the isolated old leader before it steps
    // down: under load one 10 s run in about ten saw none (valid). Caught in one of at most
    // three runs, each bounded by its time limit.
    let mut r = run(&results, &args);
    for _attempt in 1..3 {
        if r.code == 1 {
            break;
        }
        r = run(&results, &args);
    }
    assert_eq!(
        r.code,
        1,
        "expected invalid: {}\n{}",
        r.run_dir.display(),
        r.stderr
    );
    assert_eq!(r.check("linearizable")["verdict"], "invalid");
    assert_proxy_carried_peer_traffic(&r);
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(r.run_dir.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["target"]["name"], "etcd-file");
    r.remove();
}

/// Needs the etcd list-append client of the workloads crate (branch `etcd-workloads`).
#[test]
fn etcd_list_append_under_kills_is_valid() {
    etcd_installed();
    let results = temp_dir("etcd-append");
    // Kills need no partition rules: this runs with either backend.
    let r = run(
        &results,
        &[
            "--target",
            "etcd",
            "--workload",
            "list-append",
            "--nemesis",
            "kill",
        ],
    );
    assert_eq!(
        r.code,
        0,
        "expected valid: {}\n{}",
        r.run_dir.display(),
        r.stderr
    );
    assert!(
        r.ok_count() > 100,
        "too few ok txns ({}): the checker saw nothing",
        r.ok_count()
    );
    let history = std::fs::read_to_string(r.run_dir.join("history.jsonl")).unwrap();
    assert!(history.contains("\"kill\""), "no kill injected");
    let _ = std::fs::remove_dir_all(&results);
}

#[test]
fn interrupting_an_etcd_run_leaves_nothing_behind() {
    etcd_installed();
    if !netns_possible("the etcd interrupt test") {
        return;
    }
    let host_ns = netns_inode(std::process::id()).unwrap();
    let results = temp_dir("etcd-interrupt");
    let mut child = ordeal()
        .args([
            "test",
            "--no-progress",
            "--target",
            "etcd",
            "--time-limit",
            "60",
        ])
        .args(["--nemesis", "partition", "--nemesis-interval-ms", "300-300"])
        .args(["--nemesis-hold-ms", "60000-60000", "--rate", "100"])
        .args(["--concurrency", "4", "--net", "netns", "--results"])
        .arg(&results)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ordeal");
    let run_dir = wait_for_fault(&results, &mut child, "start-partition");
    let run_ns = netns_inode(child.id()).unwrap();
    assert_ne!(run_ns, host_ns, "ordeal should run in its own namespace");
    let pids = node_pids(&run_dir);
    assert_eq!(pids.len(), 3);
    assert!(
        pids.iter().all(|p| alive(*p)),
        "an etcd node is not running"
    );
    let code = interrupt_and_wait(&mut child);
    assert!(matches!(code, 0..=2), "exit {code}: not a verdict");
    for p in &pids {
        assert!(!alive(*p), "etcd process {p} survived the interrupt");
    }
    assert!(
        !any_process_in_netns(run_ns),
        "a process still holds the run's namespace"
    );
    let host_nat = Command::new("iptables")
        .args(["-t", "nat", "-S", "POSTROUTING"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&host_nat.stdout).contains("gid-owner"),
        "the run's SNAT rules leaked into the host"
    );
    let _ = std::fs::remove_dir_all(&results);
}

/// (verdict code, linearizable verdict) of one paxos-kv run, built-in or through the file.
fn paxos_verdict(results: &Path, target: &str, extra: &[&str]) -> (i32, Value) {
    let bin = store_bin().display().to_string();
    let mut args = vec!["--target", target, "--workload", "register"];
    if target == "paxos-kv" {
        args.extend(["--target-bin", bin.as_str()]);
    }
    args.extend(extra);
    let r = run(results, &args);
    let lin = r.check("linearizable")["verdict"].clone();
    if target != "paxos-kv" {
        let config: Value =
            serde_json::from_str(&std::fs::read_to_string(r.run_dir.join("config.json")).unwrap())
                .unwrap();
        assert!(config["target"]["file"]
            .as_str()
            .unwrap()
            .ends_with("paxos-kv.toml"));
    }
    (r.code, lin)
}

#[test]
fn the_paxos_kv_target_file_gives_the_builtin_verdicts() {
    let file = repo_file("targets/paxos-kv.toml").display().to_string();
    let results = temp_dir("toml");
    let partition = ["--nemesis", "partition,kill"];
    let bug = [
        "--nemesis",
        "partition",
        "--partition-shapes",
        "isolate-leader",
        "--bug",
        "stale-leader-read",
    ];
    // The built-in and the file-described target run side by side (each its own results
    // directory), to keep the test's wall time to two runs.
    for (extra, expected) in [(&partition[..], (0, "valid")), (&bug[..], (1, "invalid"))] {
        std::thread::scope(|scope| {
            let runs: Vec<_> = ["paxos-kv", file.as_str()]
                .into_iter()
                .enumerate()
                .map(|(i, target)| {
                    let dir = results.join(format!("{i}"));
                    (
                        target,
                        scope.spawn(move || paxos_verdict(&dir, target, extra)),
                    )
                })
                .collect();
            for (target, run) in runs {
                let (code, lin) = run.join().expect("the run's thread panicked");
                assert_eq!(
                    (code, lin.as_str().unwrap_or("")),
                    expected,
                    "target {target} with {extra:?}"
                );
            }
        });
    }
    let _ = std::fs::remove_dir_all(&results);
}

/// Writes a target file and runs `ordeal test` on it; returns (exit code, stderr, whether a
/// run directory was made).
fn try_target_file(tag: &str, body: &str) -> (i32, String, bool, PathBuf) {
    let dir = temp_dir(&format!("bad-{tag}"));
    let file = dir.join(format!("{tag}.toml"));
    std::fs::write(&file, body).unwrap();
    let results = dir.join("results");
    let out = ordeal()
        .args(["test", "--no-progress", "--time-limit", "5", "--target"])
        .arg(&file)
        .arg("--results")
        .arg(&results)
        .stdin(Stdio::null())
        .output()
        .expect("run ordeal");
    let ran = results.join("latest").exists();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        ran,
        file,
    )
}

const GOOD_REST: &str = r#"
[peers]
entry = "{id}={addr}"
per_node = true
"#;

#[test]
fn bad_target_files_are_refused_naming_the_file_the_field_and_why() {
    let cases: [(&str, String, &[&str]); 5] = [
        (
            "missing-command",
            format!("name = \"x\"\nprotocol = \"ordeal-http\"\n{GOOD_REST}"),
            &["missing field `command`"],
        ),
        (
            "unknown-protocol",
            format!("name = \"x\"\nprotocol = \"grpc\"\ncommand = [\"/bin/true\"]\n{GOOD_REST}"),
            &["protocol", "unknown variant `grpc`", "ordeal-http"],
        ),
        (
            "no-binary",
            format!(
                "name = \"x\"\nprotocol = \"ordeal-http\"\ncommand = [\"/nonexistent/store\", \"{{id}}\"]\n{GOOD_REST}"
            ),
            &["field `command`", "/nonexistent/store", "not found"],
        ),
        (
            "bad-placeholder",
            format!(
                "name = \"x\"\nprotocol = \"etcd-v3\"\ncommand = [\"/bin/true\", \"--port={{port}}\"]\n{GOOD_REST}"
            ),
            &["field `command`", "unknown placeholder {port}"],
        ),
        (
            "bad-dialer",
            "name = \"x\"\nprotocol = \"etcd-v3\"\ncommand = [\"/bin/true\"]\n[peers]\nentry = \"{id}={addr}\"\nper_node = false\ndialer = \"mac-address\"\n".to_string(),
            &["field `peers.dialer`", "\"mac-address\"", "header:NAME"],
        ),
    ];
    for (tag, body, wanted) in cases {
        let (code, stderr, ran, file) = try_target_file(tag, &body);
        assert_eq!(code, 255, "{tag}: {stderr}");
        assert!(!ran, "{tag}: a run started before the file was refused");
        assert!(
            stderr.contains(&file.display().to_string()),
            "{tag}: the message does not name the file: {stderr}"
        );
        for w in wanted {
            assert!(stderr.contains(w), "{tag}: no {w:?} in: {stderr}");
        }
    }
    // A command that exits at once: refused at start-up, naming the file and `command`, with
    // no node left running.
    let (code, stderr, _, file) = try_target_file(
        "exits",
        &format!(
            "name = \"x\"\nprotocol = \"ordeal-http\"\ncommand = [\"/bin/sh\", \"-c\", \"exit 3\", \"{{id}}\"]\n{GOOD_REST}"
        ),
    );
    assert_eq!(code, 255, "{stderr}");
    assert!(
        stderr.contains(&format!("target file {}: field `command`", file.display())),
        "{stderr}"
    );
    assert!(stderr.contains("exited during start-up"), "{stderr}");
}
