//! Ctrl-C during `ordeal test` (issue 10 item 14): the first interrupt ends the main phase early
//! and the run is still healed, read, checked and reported, exiting with its verdict; a second
//! interrupt aborts at once (exit 130) and leaves no store process behind.
//!
//! Runs against `ordeal-fake-kv` (built with this crate), which is linearizable, so an
//! interrupted run of it must still be valid.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{alive, any_process_in_netns, netns_inode, netns_possible, node_pids};

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ordeal-int-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A run asked to last a minute, with no faults, on the proxy backend (needs no root).
fn start_run(results: &Path, recovery_s: u64) -> Child {
    start_run_with(
        results,
        recovery_s,
        &["--nemesis", "none", "--net", "proxy"],
    )
}

/// A run asked to last a minute; `extra` picks the nemesis and the network backend.
fn start_run_with(results: &Path, recovery_s: u64, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ordeal"))
        .args(["test", "--no-progress", "--time-limit", "60"])
        .args(extra)
        .args(["--rate", "200", "--concurrency", "4"])
        .args(["--seed", "7", "--recovery-s"])
        .arg(recovery_s.to_string())
        .arg("--store-bin")
        .arg(env!("CARGO_BIN_EXE_ordeal-fake-kv"))
        .arg("--results")
        .arg(results)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ordeal")
}

/// Waits (bounded) until the run's history holds at least `min_ok` completed operations;
/// returns the run dir.
fn wait_for_ops(results: &Path, child: &mut Child, min_ok: usize) -> PathBuf {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "ordeal exited before recording {min_ok} ops"
        );
        let latest = results.join("latest");
        if let Ok(h) = std::fs::read_to_string(latest.join("history.jsonl")) {
            if h.matches("\"type\":\"ok\"").count() >= min_ok {
                return std::fs::canonicalize(&latest).unwrap();
            }
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {min_ok} ok ops within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sigint(child: &Child) {
    // SAFETY: signalling a child we started.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
}

/// Waits for the child to exit; the bound only guards against a hang.
fn wait_exit(child: &mut Child, bound: Duration) -> i32 {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ordeal did not exit within {bound:?} of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn first_interrupt_still_checks_and_reports_the_run() {
    let results = temp_dir("once");
    let mut child = start_run(&results, 1);
    let run_dir = wait_for_ops(&results, &mut child, 50);
    let pids = node_pids(&run_dir);
    assert_eq!(pids.len(), 3);
    assert!(
        pids.iter().all(|&p| alive(p)),
        "nodes run before the interrupt"
    );
    sigint(&child);
    let code = wait_exit(&mut child, Duration::from_secs(120));
    assert_eq!(
        code, 0,
        "an interrupted run of a correct store exits with its verdict, valid"
    );
    for p in &pids {
        assert!(!alive(*p), "store process {p} survived the run");
    }
    let results_json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run_dir.join("results.json")).expect("results.json written"),
    )
    .unwrap();
    assert_eq!(results_json["verdict"], "valid", "{results_json}");
    assert_eq!(results_json["run"]["interrupted"], true, "{results_json}");
    let main_s = results_json["run"]["main_phase_s"].as_f64().unwrap();
    assert!(main_s < 60.0, "the main phase ended early: {main_s} s");
    // The final reads ran: their process ids are far above the clients'.
    let history = std::fs::read_to_string(run_dir.join("history.jsonl")).unwrap();
    assert!(
        history.contains("\"process\":1000000000"),
        "no final reads in the history"
    );
    let report = std::fs::read_to_string(run_dir.join("report.html")).expect("report.html");
    assert!(
        report.contains("interrupted after") && report.contains("of its 60 s main phase"),
        "the report does not say the run was interrupted"
    );
    let _ = std::fs::remove_dir_all(&results);
}

#[test]
fn second_interrupt_aborts_at_once_leaving_nothing() {
    let results = temp_dir("twice");
    // A long recovery wait, so the second interrupt lands while the first is being handled.
    let mut child = start_run(&results, 120);
    let run_dir = wait_for_ops(&results, &mut child, 20);
    let pids = node_pids(&run_dir);
    assert_eq!(pids.len(), 3);
    sigint(&child);
    std::thread::sleep(Duration::from_millis(500));
    sigint(&child);
    // A generous bound, yet well under the 120 s recovery wait the first interrupt began.
    let code = wait_exit(&mut child, Duration::from_secs(60));
    assert_eq!(code, 130, "a second interrupt aborts with 130");
    for p in &pids {
        assert!(!alive(*p), "store process {p} survived the abort");
    }
    assert!(
        !run_dir.join("results.json").exists(),
        "an aborted run has no verdict"
    );
    let _ = std::fs::remove_dir_all(&results);
}

#[test]
fn second_interrupt_mid_partition_in_a_netns_leaves_no_rule_or_process() {
    if !netns_possible("the netns double-interrupt test") {
        return;
    }
    let results = temp_dir("twice-netns");
    let mut child = start_run_with(
        &results,
        120,
        &[
            "--nemesis",
            "partition",
            "--nemesis-interval-ms",
            "300-300",
            "--nemesis-hold-ms",
            "60000-60000",
            "--net",
            "netns",
        ],
    );
    let run_dir = common::wait_for_fault(&results, &mut child, "start-partition");
    let run_ns = netns_inode(child.id()).unwrap();
    let pids = node_pids(&run_dir);
    sigint(&child);
    std::thread::sleep(Duration::from_millis(500));
    sigint(&child);
    let code = wait_exit(&mut child, Duration::from_secs(60));
    assert_eq!(code, 130, "a second interrupt aborts with 130");
    for p in &pids {
        assert!(!alive(*p), "store process {p} survived the abort");
    }
    assert!(
        !any_process_in_netns(run_ns),
        "a process still holds the run's namespace (and its iptables rules)"
    );
    let host_rules = Command::new("iptables")
        .args(["-S", "ORDEAL"])
        .output()
        .unwrap();
    assert!(!host_rules.status.success(), "host has an ORDEAL chain");
    let _ = std::fs::remove_dir_all(&results);
}
