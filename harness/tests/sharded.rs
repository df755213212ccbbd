//! Whole runs of `ordeal test --groups 2 --nodes 3` against sharded paxos-kv (a controller
//! group and two replica groups, nine real processes): list-append while shards move is valid
//! under each `--cc`, and a replayed `faults.json` moves the same shards; bank transfers
//! across groups keep their total; a planted shard bug is judged invalid with its anomaly
//! named; faults aimed by `--nemesis-scope` (the controller, one replica group) hit only that
//! group's nodes and replay onto the same nodes, and a leader-aimed fault hits the leader of
//! a group it names.
//!
//! The sharded target needs the network-namespace backend (root and iptables): without it the
//! tests say so and pass without running. The runs go one at a time (`SERIAL`): each starts
//! nine store processes on a shared machine. A run that fails its assertions keeps its
//! results directory (printed) for a person to read; a passing one removes it.

use serde_json::Value;
use std::path::PathBuf;

mod common;
use common::{netns_possible, ShardedRun as Run};

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// As fast as the clients can go, for 8 s, a shard moving about every second.
const FULL_SPEED: [&str; 10] = [
    "--rate",
    "0",
    "--concurrency",
    "12",
    "--time-limit",
    "8",
    "--nemesis-interval-ms",
    "700-1000",
    "--nemesis-hold-ms",
    "1000-1500",
];

/// One sharded run; `extra` gives the options that differ (`--time-limit`, `--rate`,
/// `--concurrency` and the nemesis timing among them).
fn run(tag: &str, workload: &str, extra: &[&str]) -> Run {
    let mut args = vec!["--workload", workload, "--recovery-s", "1"];
    args.extend_from_slice(extra);
    common::sharded_run(tag, &args)
}

/// Every group (the controller and both replica groups) converged.
fn assert_converged_per_group(r: &Run) {
    let c = r.check("convergence");
    assert_eq!(c["verdict"], "valid", "{c:#}");
    let summary = c["summary"].as_str().unwrap();
    for g in ["controller:", "group 1:", "group 2:"] {
        assert!(summary.contains(g), "no {g} in {summary}");
    }
}

/// The shard moves a run made: (what moved, what the controller answered), in order.
fn moves(r: &Run) -> Vec<String> {
    r.nemesis("shard-move")
        .iter()
        .map(|v| v[0].as_str().expect("a move's description").to_string())
        .collect()
}

#[test]
fn list_append_while_shards_move_is_strict_serializable_under_each_cc() {
    if !netns_possible("sharded list-append") {
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // (run directory, its temp results directory) of the 2pl run.
    let mut first_run: Option<(PathBuf, PathBuf)> = None;
    let mut drawn = Vec::new();
    for (cc, seed) in [("2pl", "5"), ("occ", "6")] {
        // The occ run replays the 2pl run's faults (under another seed, which alone would
        // draw other moves): the same shards move to the same groups.
        let replay: Vec<String> = first_run
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect();
        let mut extra = vec!["--cc", cc, "--nemesis", "shard-move", "--seed", seed];
        extra.extend(FULL_SPEED);
        if let Some(p) = replay.first() {
            extra.extend(["--replay-faults", p.as_str()]);
        }
        let r = run(&format!("la-{cc}"), "list-append", &extra);
        assert_eq!(r.results["verdict"], "valid", "{cc}: {:#}", r.results);
        assert_eq!(r.code, 0, "{cc}: a valid run exits 0");
        let c = r.check("strict-serializable");
        assert_eq!(c["verdict"], "valid", "{c:#}");
        let ok = c["details"]["stats"]["ok"].as_u64().unwrap();
        // Enough work to mean something, low enough for a loaded CI machine (2pl aborts many).
        assert!(ok >= 50, "{cc}: only {ok} ok txns");
        assert_converged_per_group(&r);
        let made = moves(&r);
        let returned = r.nemesis("shard-return");
        assert!(made.len() >= 2, "{cc}: moves {made:?}");
        assert!(!returned.is_empty(), "{cc}: no shard moved back");
        // The controller confirmed the moves: each answer names the config it made.
        for v in r.nemesis("shard-move") {
            assert!(v[1].as_str().unwrap().contains("config"), "{v}");
        }
        // Recorded in faults.json, and shown in a lane of their own.
        let faults: Vec<Value> =
            serde_json::from_str(&std::fs::read_to_string(r.run_dir.join("faults.json")).unwrap())
                .unwrap();
        assert!(
            faults
                .iter()
                .filter(|f| f["nemesis"] == "shard-move")
                .count()
                >= made.len(),
            "{faults:?}"
        );
        let lanes: Vec<&str> = r.results["faults"]
            .as_array()
            .expect("results.json lists the faults")
            .iter()
            .map(|f| f["label"].as_str().unwrap_or(""))
            .collect();
        assert!(
            lanes.iter().any(|l| l.starts_with("shard-move s")),
            "{lanes:?}"
        );
        match cc {
            "2pl" => {
                drawn = made;
                // Kept for the replay; removed after it.
                first_run = Some((r.run_dir.clone(), r.dir.clone()));
            }
            _ => {
                let n = drawn.len().min(made.len());
                assert!(n >= 2);
                assert_eq!(made[..n], drawn[..n], "the replay moved other shards");
                r.done();
            }
        }
    }
    if let Some((_, dir)) = first_run {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn bank_transfers_across_groups_keep_the_total() {
    if !netns_possible("sharded bank") {
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let r = run(
        "bank",
        "bank",
        &["--cc", "occ", "--nemesis", "shard-move", "--seed", "2"]
            .into_iter()
            .chain(FULL_SPEED)
            .collect::<Vec<_>>(),
    );
    assert_eq!(r.results["verdict"], "valid", "{:#}", r.results);
    let c = r.check("bank");
    assert_eq!(c["verdict"], "valid", "{c:#}");
    assert!(r.ok_count() >= 50, "only {} ok ops", r.ok_count());
    // Transfers went through: some ok txn appended to accounts.
    let transfers = r
        .history
        .iter()
        .filter(|e| e["type"] == "ok" && e["f"] == "txn")
        .filter(|e| e["value"][0][0] == "append")
        .count();
    assert!(transfers >= 50, "only {transfers} transfers");
    assert!(moves(&r).len() >= 2);
    assert_converged_per_group(&r);
    r.done();
}

#[test]
fn planted_shard_bugs_are_caught_with_their_anomaly_named() {
    if !netns_possible("sharded planted bugs") {
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // OCC that validates only what it writes: lost updates, a cycle through anti-dependencies.
    let r = run(
        "occ-skip",
        "list-append",
        &[
            "--cc",
            "occ",
            "--bug",
            "occ-skip-read-validation",
            "--nemesis",
            "shard-move",
            "--seed",
            "1",
        ]
        .into_iter()
        .chain(FULL_SPEED)
        .collect::<Vec<_>>(),
    );
    assert_eq!(r.results["verdict"], "invalid", "{:#}", r.results);
    assert_eq!(r.code, 1, "an invalid run exits 1");
    let c = r.check("strict-serializable");
    assert_eq!(c["verdict"], "invalid", "{c:#}");
    let types: Vec<&str> = c["details"]["anomaly_types"]
        .as_array()
        .expect("anomaly_types")
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    eprintln!("occ-skip-read-validation: {types:?}");
    assert!(
        types
            .iter()
            .any(|t| t.starts_with("G-single") || t.starts_with("G2") || *t == "lost-update"),
        "no anti-dependency cycle among {types:?}"
    );
    r.done();
    // The losing group keeps serving reads after a move: a stale read, not linearizable. Its
    // window is 60 of its log entries: at full speed that passes before the gaining group
    // serves the shard, so this run goes at 300 ops/s (measured: 4 of 4 seeds caught at 300
    // and 1000 ops/s, 1 of 4 at full speed), with shards moving about twice a second (6 of 6
    // seeds caught in 10 s).
    let r = run(
        "stale",
        "register",
        &[
            "--bug",
            "migration-serves-stale",
            "--nemesis",
            "shard-move",
            "--seed",
            "1",
            "--rate",
            "300",
            "--concurrency",
            "24",
            "--time-limit",
            "10",
            "--nemesis-interval-ms",
            "300-600",
            "--nemesis-hold-ms",
            "500-800",
        ],
    );
    assert_eq!(r.results["verdict"], "invalid", "{:#}", r.results);
    let c = r.check("linearizable");
    assert_eq!(c["verdict"], "invalid", "{c:#}");
    assert!(
        c["summary"].as_str().unwrap().contains("not linearizable"),
        "{c:#}"
    );
    r.done();
}

/// The faults a run injected (its `faults.json`).
fn faults(r: &Run) -> Vec<Value> {
    let path = r.run_dir.join("faults.json");
    serde_json::from_str(&std::fs::read_to_string(&path).expect("faults.json")).expect("JSON")
}

/// The nodes (numbered from 1) of group `g` in a run of groups of three: 0 is the controller.
fn members(g: u64) -> std::ops::RangeInclusive<u64> {
    3 * g + 1..=3 * g + 3
}

/// A fault's nodes (pause, kill) or the links it cuts (partition), as numbers from 1.
fn nodes_of(f: &Value) -> Vec<u64> {
    f["action"]["nodes"]
        .as_array()
        .map(|a| a.iter().map(|n| n.as_u64().unwrap()).collect())
        .unwrap_or_default()
}

fn cuts_of(f: &Value) -> Vec<(u64, u64)> {
    f["action"]["cuts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| (c[0].as_u64().unwrap(), c[1].as_u64().unwrap()))
                .collect()
        })
        .unwrap_or_default()
}

/// Checks that every process fault of `r` was aimed at group `g` (its nodes all from it; every
/// cut of a partition touches it) and says so in its label; returns how many there were.
fn assert_all_aimed_at(r: &Run, g: u64, name: &str) -> usize {
    let faults: Vec<Value> = faults(r)
        .into_iter()
        .filter(|f| f["nemesis"] != "shard-move")
        .collect();
    for f in &faults {
        assert_eq!(f["group"], g, "{f}");
        assert!(
            f["target"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{name} ")),
            "{f}"
        );
        for n in nodes_of(f) {
            assert!(members(g).contains(&n), "n{n} is not in {name}: {f}");
        }
        let cuts = cuts_of(f);
        if f["nemesis"] == "partition" {
            assert!(!cuts.is_empty(), "{f}");
        }
        for (a, b) in cuts {
            assert!(
                members(g).contains(&a) || members(g).contains(&b),
                "cut n{a}-n{b} does not touch {name}: {f}"
            );
        }
    }
    // The history and the fault lanes name the group too: `kill controller one ["n2"]`.
    for lane in r.results["faults"].as_array().expect("results.json faults") {
        let label = lane["label"].as_str().unwrap();
        if !label.starts_with("shard-") {
            assert!(label.contains(&format!(" {name} ")), "{label}");
        }
    }
    faults.len()
}

/// Per kind of fault, the faults' (target, group, action), in order.
fn actions_by_kind(faults: &[Value], kind: &str) -> Vec<(Value, Value, Value)> {
    faults
        .iter()
        .filter(|f| f["nemesis"] == kind)
        .map(|f| (f["target"].clone(), f["group"].clone(), f["action"].clone()))
        .collect()
}

#[test]
fn faults_aimed_at_the_controller_hit_only_its_nodes_and_the_store_stays_valid() {
    if !netns_possible("sharded controller faults") {
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Also passes --deadlock and --shards through to the store.
    let r = run(
        "controller",
        "list-append",
        &[
            "--cc",
            "2pl",
            "--deadlock",
            "no-wait",
            "--shards",
            "8",
            "--nemesis",
            "kill,pause,partition",
            "--nemesis-scope",
            "controller",
            "--seed",
            "3",
        ]
        .into_iter()
        .chain(FULL_SPEED)
        .collect::<Vec<_>>(),
    );
    assert_eq!(r.results["verdict"], "valid", "{:#}", r.results);
    assert_eq!(r.code, 0);
    assert_eq!(r.check("strict-serializable")["verdict"], "valid");
    assert!(r.ok_count() >= 50, "only {} ok ops", r.ok_count());
    assert_converged_per_group(&r);
    let count = assert_all_aimed_at(&r, 0, "controller");
    assert!(count >= 4, "only {count} faults");
    let all = faults(&r);
    for kind in ["kill", "pause", "partition"] {
        assert!(
            !actions_by_kind(&all, kind).is_empty(),
            "no {kind} fault: {all:?}"
        );
    }
    // The groups ran with no-wait and every process with 8 shards.
    let log = std::fs::read_to_string(r.run_dir.join("ordeal.log")).expect("ordeal.log");
    let started: Vec<&str> = log.lines().filter(|l| l.contains("started: ")).collect();
    assert!(started.len() >= 9, "{started:?}");
    // Restarted after a kill: controller nodes only.
    for line in &started[9..] {
        assert!(line.contains("--mode controller"), "{line}");
    }
    for line in &started {
        assert!(line.contains("--shards 8"), "{line}");
        assert_eq!(
            line.contains("--mode group"),
            line.contains("--deadlock no-wait"),
            "{line}"
        );
    }
    let owners = log
        .lines()
        .find_map(|l| l.split_once("owners [").map(|(_, o)| o.to_string()))
        .expect("the joined config in ordeal.log");
    let shards = owners.split(']').next().unwrap().split(',').count();
    assert_eq!(shards, 8, "owners [{owners}");
    r.done();
}

#[test]
fn faults_aimed_at_one_group_hit_only_its_nodes_and_replay_onto_the_same_ones() {
    if !netns_possible("sharded group faults") {
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let scoped = [
        "--cc",
        "occ",
        "--nemesis",
        "kill,pause,partition",
        "--nemesis-scope",
        "group:2",
        "--partition-shapes",
        "halves,isolate-group,isolate-leader",
    ];
    let r = run(
        "group",
        "list-append",
        &scoped
            .into_iter()
            .chain(["--seed", "4"])
            .chain(FULL_SPEED)
            .collect::<Vec<_>>(),
    );
    assert_eq!(r.results["verdict"], "valid", "{:#}", r.results);
    assert_converged_per_group(&r);
    let count = assert_all_aimed_at(&r, 2, "g2");
    assert!(count >= 4, "only {count} faults");
    let drawn = faults(&r);
    // Splitting the group keeps every cut inside it; isolating it cuts it from all six others.
    for f in drawn.iter().filter(|f| f["nemesis"] == "partition") {
        let cuts = cuts_of(f);
        match f["target"].as_str().unwrap() {
            "g2 halves" => assert!(
                cuts.iter()
                    .all(|(a, b)| members(2).contains(a) && members(2).contains(b)),
                "{f}"
            ),
            "g2 isolate-group" => assert_eq!(cuts.len(), 3 * 6, "{f}"),
            "g2 isolate-leader" => assert_eq!(cuts.len(), 8, "{f}"),
            other => panic!("unexpected partition {other}: {f}"),
        }
    }
    // Under another seed, replaying the faults hits the same nodes of the same group.
    let replay_dir = r.run_dir.display().to_string();
    let again = run(
        "group-replay",
        "list-append",
        &scoped
            .into_iter()
            .chain(["--seed", "9", "--replay-faults", replay_dir.as_str()])
            .chain(FULL_SPEED)
            .collect::<Vec<_>>(),
    );
    assert_eq!(again.results["verdict"], "valid", "{:#}", again.results);
    let replayed = faults(&again);
    for kind in ["kill", "pause", "partition"] {
        let (a, b) = (
            actions_by_kind(&drawn, kind),
            actions_by_kind(&replayed, kind),
        );
        let n = a.len().min(b.len());
        assert!(n >= 1, "{kind}: drawn {a:?}, replayed {b:?}");
        assert_eq!(a[..n], b[..n], "{kind}: the replay hit other nodes");
    }
    again.done();
    r.done();
}

#[test]
fn a_leader_aimed_fault_picks_a_group_and_hits_that_groups_leader() {
    if !netns_possible("sharded leader faults") {
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let r = run(
        "leader",
        "list-append",
        &[
            "--cc",
            "2pl",
            "--nemesis",
            "kill,partition",
            "--nemesis-targets",
            "leader",
            "--partition-shapes",
            "isolate-leader",
            "--seed",
            "5",
        ]
        .into_iter()
        .chain(FULL_SPEED)
        .collect::<Vec<_>>(),
    );
    assert_eq!(r.results["verdict"], "valid", "{:#}", r.results);
    let all: Vec<Value> = faults(&r)
        .into_iter()
        .filter(|f| f["nemesis"] != "shard-move")
        .collect();
    assert!(all.len() >= 4, "only {} faults", all.len());
    let mut groups = std::collections::BTreeSet::new();
    for f in &all {
        let g = f["group"]
            .as_u64()
            .unwrap_or_else(|| panic!("no group: {f}"));
        groups.insert(g);
        let name = if g == 0 {
            "controller".to_string()
        } else {
            format!("g{g}")
        };
        // The one node hit is a member of the group named, and the label says which group.
        let hit = match f["nemesis"].as_str().unwrap() {
            "kill" => {
                assert_eq!(f["target"], format!("{name} leader"), "{f}");
                let nodes = nodes_of(f);
                assert_eq!(nodes.len(), 1, "{f}");
                nodes[0]
            }
            _ => {
                assert_eq!(f["target"], format!("{name} isolate-leader"), "{f}");
                let cuts = cuts_of(f);
                assert_eq!(cuts.len(), 8, "{f}");
                let (a, b) = cuts[0];
                let lonely = if cuts.iter().all(|c| c.0 == a || c.1 == a) {
                    a
                } else {
                    b
                };
                assert!(cuts.iter().all(|c| c.0 == lonely || c.1 == lonely), "{f}");
                lonely
            }
        };
        assert!(members(g).contains(&hit), "n{hit} is not in {name}: {f}");
    }
    // Drawn from the seed: this one reaches more than one group in its first faults.
    assert!(groups.len() >= 2, "every fault hit group(s) {groups:?}");
    let labels: Vec<&str> = r.results["faults"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["label"].as_str().unwrap())
        .collect();
    assert!(
        labels
            .iter()
            .any(|l| l.starts_with("kill g") || l.starts_with("kill controller")),
        "{labels:?}"
    );
    r.done();
}
