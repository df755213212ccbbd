//! Deterministic simulation of the Paxos core: many seeds with loss, duplication, reordering,
//! delay, crashes (losing unpersisted records), restarts and partitions. The invariants are
//! checked after every step by `paxos_kv::paxos::sim`. `ORDEAL_SIM_SEEDS` sets the number of
//! seeds per cluster size (`make sim` runs 20000); `ORDEAL_SIM_SEED=N` runs one seed.

use paxos_kv::paxos::sim::{run, SimConfig, SimStats};
use paxos_kv::paxos::Bug;
use std::time::{Duration, Instant};

const DEFAULT_SEEDS: u64 = 1000;
/// Every planted bug must be found within this many seeds.
const BUG_SEED_BOUND: u64 = 1000;

fn seeds() -> u64 {
    std::env::var("ORDEAL_SIM_SEEDS")
        .ok()
        .map(|s| {
            s.parse()
                .unwrap_or_else(|_| panic!("ORDEAL_SIM_SEEDS must be a number, got '{s}'"))
        })
        .unwrap_or(DEFAULT_SEEDS)
}

/// Runs seeds `0..count` over two threads; returns summed stats or the first violation text.
fn run_many(nodes: usize, count: u64, bugs: &[Bug]) -> Result<SimStats, String> {
    let threads = 2u64;
    let results: Vec<Result<SimStats, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut total = SimStats::default();
                    let mut seed = t;
                    while seed < count {
                        let mut cfg = SimConfig::new(nodes, seed);
                        cfg.bugs = bugs.to_vec();
                        match run(cfg) {
                            Ok(st) => add(&mut total, &st),
                            Err(v) => return Err(format!(
                                "{v}\nreproduce: ORDEAL_SIM_SEED={seed} ORDEAL_SIM_NODES={nodes} \
                                     cargo test --release -p paxos-kv --test simulation one_seed"
                            )),
                        }
                        seed += threads;
                    }
                    Ok(total)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("sim thread"))
            .collect()
    });
    let mut total = SimStats::default();
    for r in results {
        add(&mut total, &r?);
    }
    Ok(total)
}

fn add(total: &mut SimStats, s: &SimStats) {
    total.ticks += s.ticks;
    total.writes_acked += s.writes_acked;
    total.reads_answered += s.reads_answered;
    total.slots_chosen += s.slots_chosen;
    total.crashes += s.crashes;
    total.snapshots_installed += s.snapshots_installed;
    total.messages_delivered += s.messages_delivered;
}

fn check_correct(nodes: usize) {
    let count = seeds();
    let start = Instant::now();
    let stats = run_many(nodes, count, &[]).unwrap_or_else(|v| panic!("{v}"));
    eprintln!(
        "{nodes} nodes, {count} seeds in {:.1?}: {stats:?}",
        start.elapsed()
    );
    // The runs must exercise what they claim to check.
    assert!(
        stats.writes_acked > count * 10,
        "too few writes acked: {stats:?}"
    );
    assert!(
        stats.reads_answered > count * 5,
        "too few reads answered: {stats:?}"
    );
    assert!(stats.crashes > count, "too few crashes: {stats:?}");
    if count >= 100 {
        assert!(
            stats.snapshots_installed > 0,
            "no snapshot installed: {stats:?}"
        );
    }
}

#[test]
fn three_nodes_keep_every_invariant() {
    check_correct(3);
}

#[test]
fn five_nodes_keep_every_invariant() {
    check_correct(5);
}

/// Finds the first seed where `bug` breaks an invariant; fails if none within the bound.
fn find_bug(bug: Bug, expect: &str) {
    let start = Instant::now();
    let budget = Duration::from_secs(120);
    for seed in 0..BUG_SEED_BOUND {
        assert!(
            start.elapsed() < budget,
            "{bug}: search exceeded {budget:?}"
        );
        let mut cfg = SimConfig::new(3, seed);
        cfg.bugs = vec![bug];
        if let Err(v) = run(cfg) {
            eprintln!(
                "{bug}: found at seed {seed} after {:.1?}: {v}\nreproduce: ORDEAL_SIM_SEED={seed} \
                 ORDEAL_SIM_BUG={bug} cargo test --release -p paxos-kv --test simulation one_seed",
                start.elapsed()
            );
            assert!(
                v.what.contains(expect),
                "{bug} broke a different invariant than expected ({expect}): {v}"
            );
            return;
        }
    }
    panic!("{bug}: no violation found in {BUG_SEED_BOUND} seeds: the simulator cannot see it");
}

#[test]
fn planted_stale_leader_read_is_found() {
    find_bug(Bug::StaleLeaderRead, "stale read");
}

#[test]
fn planted_ack_before_persist_is_found() {
    find_bug(Bug::AckBeforePersist, "agreement");
}

#[test]
fn planted_forget_accepted_is_found() {
    find_bug(Bug::ForgetAccepted, "agreement");
}

/// Replays one seed (set `ORDEAL_SIM_SEED`, optionally `ORDEAL_SIM_NODES`, `ORDEAL_SIM_BUG`);
/// without `ORDEAL_SIM_SEED` it replays seed 0 of a 3-node cluster and expects it to pass.
#[test]
fn one_seed() {
    let seed: u64 = std::env::var("ORDEAL_SIM_SEED")
        .map(|s| s.parse().expect("ORDEAL_SIM_SEED must be a number"))
        .unwrap_or(0);
    let nodes: usize = std::env::var("ORDEAL_SIM_NODES")
        .map(|s| s.parse().expect("ORDEAL_SIM_NODES must be a number"))
        .unwrap_or(3);
    let mut cfg = SimConfig::new(nodes, seed);
    if let Ok(b) = std::env::var("ORDEAL_SIM_BUG") {
        cfg.bugs = vec![b.parse().unwrap_or_else(|e| panic!("ORDEAL_SIM_BUG: {e}"))];
    }
    let stats = run(cfg).unwrap_or_else(|v| panic!("{v}"));
    eprintln!("seed {seed}: {stats:?}");
    assert!(stats.writes_acked > 0, "seed {seed} acknowledged no write");
}
