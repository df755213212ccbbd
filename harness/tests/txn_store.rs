//! Whole runs of the transactional workloads (list-append, rw-register, bank) against the real
//! store, `paxos-kv`: under kills, pauses and partitions the correct store must come out valid
//! with a history that actually exercised the checker (many ok txns, reads that observed writes,
//! dependency edges inferred), and the store built with `--bug non-atomic-txn` must come out
//! invalid with the anomaly (or the torn bank read) named in results.json.
//!
//! `paxos-kv` is another package's binary, so Cargo does not hand its path to this test: the test
//! runs the one beside `ordeal`, and asks Cargo to build it first when it is missing or older
//! than the store's sources (never under `cargo test --workspace`, which builds it anyway).
//!
//! A run that fails its assertions keeps its results directory (the path is printed) for a
//! person to read; a passing one removes it.
//!
//! Network backend: most runs use `auto` (a network namespace as root, as CI runs; the userspace
//! proxy otherwise); one pins `proxy` so the fallback is covered whoever runs the tests.

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Stdio};

mod common;
use common::{store_bin, wait_bounded};

/// The one check a txn workload's verdict comes from, by the name results.json gives it.
const TXN_CHECK: &str = "strict-serializable";
const BANK_CHECK: &str = "bank";

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ordeal-txn-it-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// What one run of `ordeal test` against paxos-kv left behind.
struct Run {
    code: i32,
    results: Value,
    /// history.jsonl, one event per element.
    history: Vec<Value>,
    /// The temp results directory, removed when the run passed its assertions.
    dir: PathBuf,
}

impl Run {
    /// The named check's entry in results.json.
    fn check(&self, name: &str) -> &Value {
        common::check_named(&self.results, name)
    }

    /// The value (micro-ops with results) of every ok txn.
    fn ok_txns(&self) -> impl Iterator<Item = &Vec<Value>> {
        self.history
            .iter()
            .filter(|e| e["process"] != "nemesis" && e["type"] == "ok" && e["f"] == "txn")
            .map(|e| e["value"].as_array().expect("a txn's value is a list"))
    }

    /// How many nemesis events of kind `f` (kill, start-partition, pause, ...) the history holds.
    fn faults(&self, f: &str) -> usize {
        self.history
            .iter()
            .filter(|e| e["process"] == "nemesis" && e["f"] == f)
            .count()
    }

    /// Reads in ok txns, split into (saw a value, saw nothing): a read that saw nothing returns
    /// null (and a list-append read an empty list).
    fn reads(&self) -> (usize, usize) {
        let (mut seen, mut empty) = (0, 0);
        for txn in self.ok_txns() {
            for m in txn {
                if m[0] != "r" {
                    continue;
                }
                let nothing = m[2].is_null() || m[2].as_array().is_some_and(|l| l.is_empty());
                if nothing {
                    empty += 1;
                } else {
                    seen += 1;
                }
            }
        }
        (seen, empty)
    }

    fn done(self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Spec<'a> {
    tag: &'a str,
    workload: &'a str,
    nemesis: &'a str,
    net: &'a str,
    seed: u64,
    bug: Option<&'a str>,
}

/// Runs a short `ordeal test` against paxos-kv: 6 s, faults every 0.5-1 s held 0.8-1.5 s, 1 s of
/// recovery.
fn run(spec: &Spec) -> Run {
    let dir = temp_dir(spec.tag);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ordeal"));
    cmd.args(["test", "--no-progress", "--nodes", "3"])
        .args(["--workload", spec.workload, "--nemesis", spec.nemesis])
        .args(["--nemesis-interval-ms", "500-1000"])
        .args(["--nemesis-hold-ms", "800-1500"])
        .args(["--time-limit", "6", "--recovery-s", "1"])
        .args(["--rate", "300", "--concurrency", "8"])
        .args(["--seed", &spec.seed.to_string(), "--net", spec.net])
        .arg("--store-bin")
        .arg(store_bin())
        .arg("--results")
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        // Kept beside the results, so that a failed run shows what ordeal printed (a panic's
        // message goes nowhere else).
        .stderr(std::fs::File::create(dir.join("ordeal.stderr")).expect("create ordeal.stderr"));
    if let Some(b) = spec.bug {
        cmd.args(["--bug", b]);
    }
    eprintln!("{}: results in {}", spec.tag, dir.display());
    let child = cmd.spawn().expect("start ordeal");
    let status = wait_bounded(child);
    let latest = dir.join("latest");
    let read = |f: &str| {
        std::fs::read_to_string(latest.join(f)).unwrap_or_else(|e| {
            panic!(
                "{f} missing from {} (ordeal exited {status}): {e}",
                latest.display()
            )
        })
    };
    let results: Value = serde_json::from_str(&read("results.json")).expect("results.json parses");
    let history = read("history.jsonl")
        .lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("history.jsonl line {}: {e}: {l}", i + 1))
        })
        .collect();
    Run {
        code: status.code().unwrap_or(-1),
        results,
        history,
        dir,
    }
}

/// Data dependency edges (write-write, write-read, read-write) the txn checker infers from the
/// run's history: `ordeal check` at serializable adds no real-time edges, so every edge it
/// counts came from what reads observed (results.json's own count, at strict-serializable,
/// includes real-time order too).
fn data_edges(r: &Run, workload: &str) -> u64 {
    let out = Command::new(env!("CARGO_BIN_EXE_ordeal"))
        .args([
            "check",
            "--model",
            workload,
            "--consistency",
            "serializable",
        ])
        .arg("--json")
        .arg(r.dir.join("latest").join("history.jsonl"))
        .output()
        .expect("run ordeal check");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "ordeal check printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(v["verdict"], "valid", "re-check at serializable: {v:#}");
    v["stats"]["edges"].as_u64().expect("stats.edges")
}

/// The txn checker's verdict and the evidence that it had something to judge: ok txns, reads
/// that saw writes, dependency edges inferred from them. `min_ok` is a floor for a starved
/// machine (a 6 s run at 300 ops/s does ~1,000 ok txns alone; a CI trial sharing two cores
/// with three other builds, load average 18, did 187), not a throughput target.
fn assert_valid_txn_run(r: &Run, workload: &str, min_ok: u64) {
    let c = r.check(TXN_CHECK);
    assert_eq!(r.results["verdict"], "valid", "{:#}", r.results);
    assert_eq!(
        r.code,
        0,
        "a valid run exits 0; ordeal printed:\n{}",
        std::fs::read_to_string(r.dir.join("ordeal.stderr")).unwrap_or_default()
    );
    assert_eq!(c["verdict"], "valid", "{c:#}");
    assert_eq!(c["details"]["workload"], workload, "{c:#}");
    let stats = &c["details"]["stats"];
    let ok = stats["ok"].as_u64().expect("stats.ok");
    assert!(ok >= min_ok, "only {ok} ok txns: {stats}");
    assert_eq!(ok as usize, r.ok_txns().count(), "stats.ok vs the history");
    assert_eq!(stats["cyclic_sccs"], 0, "{stats}");
    let (seen, empty) = r.reads();
    assert!(
        seen > 4 * empty && seen >= min_ok as usize,
        "reads mostly saw nothing: {seen} saw a value, {empty} did not"
    );
    let data = data_edges(r, workload);
    eprintln!(
        "{workload}: {ok} ok txns, {seen} reads saw a value ({empty} none), {data} data edges, \
         {} edges with real-time order",
        stats["edges"]
    );
    assert!(data >= ok, "only {data} data edges for {ok} ok txns");
}

#[test]
fn list_append_under_kills_and_partitions_is_strict_serializable() {
    let r = run(&Spec {
        tag: "la",
        workload: "list-append",
        nemesis: "kill,partition",
        net: "auto",
        seed: 11,
        bug: None,
    });
    assert!(r.faults("kill") >= 1 && r.faults("start-partition") >= 1);
    assert_valid_txn_run(&r, "list-append", 100);
    r.done();
}

#[test]
fn rw_register_under_process_and_partition_faults_through_the_proxy_is_strict_serializable() {
    // Not `all`: a network fault of heavy loss on every link can stall a 6 s run for most of
    // its length, leaving too few txns to judge; runs.rs covers the network fault on its own.
    let r = run(&Spec {
        tag: "rw",
        workload: "rw-register",
        nemesis: "pause,kill,partition",
        net: "proxy",
        seed: 12,
        bug: None,
    });
    assert_eq!(r.results["run"]["net"], "proxy");
    assert!(r.faults("kill") + r.faults("pause") + r.faults("start-partition") >= 3);
    assert_valid_txn_run(&r, "rw-register", 100);
    r.done();
}

#[test]
fn bank_under_process_and_partition_faults_keeps_the_total() {
    // Not `all`, for the reason given above.
    let r = run(&Spec {
        tag: "bank",
        workload: "bank",
        nemesis: "pause,kill,partition",
        net: "auto",
        seed: 13,
        bug: None,
    });
    assert!(r.faults("kill") + r.faults("pause") + r.faults("start-partition") >= 3);
    let c = r.check(BANK_CHECK);
    assert_eq!(r.results["verdict"], "valid", "{:#}", r.results);
    assert_eq!(r.code, 0);
    assert_eq!(c["verdict"], "valid", "{c:#}");
    let d = &c["details"];
    assert_eq!(d["bad_read_count"], 0, "{d:#}");
    let checked = d["reads_checked"].as_u64().expect("reads_checked");
    assert!(checked >= 30, "only {checked} reads of all accounts");
    // Transfers went through, and reads saw them: not a history of untouched accounts.
    let transfers = r
        .ok_txns()
        .filter(|t| t.iter().all(|m| m[0] == "append"))
        .count();
    assert!(transfers >= 50, "only {transfers} ok transfers");
    let (seen, _) = r.reads();
    eprintln!("bank: {checked} reads of all accounts, {transfers} ok transfers");
    assert!(seen >= 50, "only {seen} reads saw a transfer");
    r.done();
}

#[test]
fn non_atomic_txns_are_caught_as_g1b_by_list_append() {
    let r = run(&Spec {
        tag: "la-bug",
        workload: "list-append",
        nemesis: "none",
        net: "auto",
        seed: 7,
        bug: Some("non-atomic-txn"),
    });
    let c = r.check(TXN_CHECK);
    assert_eq!(r.results["verdict"], "invalid", "{:#}", r.results);
    assert_eq!(r.code, 1, "an invalid run exits 1");
    assert_eq!(c["verdict"], "invalid", "{c:#}");
    let d = &c["details"];
    let types: Vec<&str> = d["anomaly_types"]
        .as_array()
        .expect("anomaly_types")
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    eprintln!("list-append with non-atomic-txn: {types:?}");
    assert!(types.contains(&"G1b"), "no G1b among {types:?}");
    // Reading another txn's intermediate state breaks even read committed.
    assert_eq!(d["not"][0], "read-committed", "{d:#}");
    let g1b = d["anomalies"]
        .as_array()
        .expect("anomalies")
        .iter()
        .find(|a| a["type"] == "G1b")
        .expect("a G1b anomaly in full");
    assert!(
        g1b["explanation"]
            .as_str()
            .is_some_and(|x| x.contains("intermediate")),
        "the G1b explanation should say what was read: {g1b:#}"
    );
    r.done();
}

#[test]
fn non_atomic_transfers_show_torn_bank_reads() {
    let r = run(&Spec {
        tag: "bank-bug",
        workload: "bank",
        nemesis: "none",
        net: "auto",
        seed: 7,
        bug: Some("non-atomic-txn"),
    });
    let c = r.check(BANK_CHECK);
    assert_eq!(r.results["verdict"], "invalid", "{:#}", r.results);
    assert_eq!(r.code, 1);
    assert_eq!(c["verdict"], "invalid", "{c:#}");
    let d = &c["details"];
    let expected = d["expected_total"].as_i64().expect("expected_total");
    let bad = d["bad_reads"].as_array().expect("bad_reads");
    eprintln!(
        "bank with non-atomic-txn: {} of {} reads torn",
        d["bad_read_count"], d["reads_checked"]
    );
    assert!(!bad.is_empty(), "{d:#}");
    assert!(d["bad_read_count"].as_u64().unwrap() >= bad.len() as u64);
    for b in bad {
        assert_ne!(
            b["sum"].as_i64(),
            Some(expected),
            "a reported read that sums up: {b}"
        );
        assert!(b["problem"].as_str().unwrap().contains("off by"), "{b}");
    }
    r.done();
}
