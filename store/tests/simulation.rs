//! Deterministic simulation of the Paxos core: many seeds with loss, duplication, reordering,
//! delay, crashes (losing unpersisted records), restarts and partitions. The invariants are
//! checked after every step by `paxos_kv::paxos::sim`. `ORDEAL_SIM_SEEDS` sets the number of
//! seeds per cluster size (`make sim` runs 20000); `ORDEAL_SIM_SEED=N` runs one seed.

use paxos_kv::paxos::sim::{run, Sim, SimConfig, SimStats};
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
                            Err(v) => {
                                return Err(format!(
                                "{v}\nreproduce: ORDEAL_SIM_SEED={seed} ORDEAL_SIM_NODES={nodes} \
                                     cargo test --release -p paxos-kv --test simulation one_seed"
                            ))
                            }
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
    total.hostile_refused += s.hostile_refused;
}

/// Extreme rounds and slots from real peers, among all the other faults: every one is
/// refused, and every invariant and the progress bound still hold.
#[test]
fn extreme_values_from_peers_are_refused_and_change_nothing() {
    let mut refused = 0;
    for seed in 0..seeds().min(40) {
        let mut cfg = SimConfig::new(3, seed);
        cfg.hostile_probability = 0.1;
        let stats = run(cfg).unwrap_or_else(|v| panic!("{v}"));
        assert!(stats.writes_acked > 0, "seed {seed} acknowledged no write");
        refused += stats.hostile_refused;
    }
    assert!(refused > 0, "no hostile message was injected");
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
fn find_bug(bug: Bug, expect: &[&str]) {
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
                expect.iter().any(|e| v.what.contains(e)),
                "{bug} broke a different invariant than expected ({expect:?}): {v}"
            );
            return;
        }
    }
    panic!("{bug}: no violation found in {BUG_SEED_BOUND} seeds: the simulator cannot see it");
}

#[test]
fn planted_stale_leader_read_is_found() {
    find_bug(Bug::StaleLeaderRead, &["stale read"]);
}

#[test]
fn planted_ack_before_persist_is_found() {
    // A lost accepted value shows as two values for a slot, or as an acknowledged write
    // that a later read does not see.
    find_bug(Bug::AckBeforePersist, &["agreement", "stale read"]);
}

#[test]
fn planted_forget_accepted_is_found() {
    find_bug(Bug::ForgetAccepted, &["agreement", "stale read"]);
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

/// Same seed, same run: the simulation is deterministic.
#[test]
fn a_seed_replays_identically() {
    let a = run(SimConfig::new(3, 42));
    let b = run(SimConfig::new(3, 42));
    assert_eq!(a, b);
    assert!(a.expect("seed 42 passes").messages_delivered > 100);
}

/// A quiet cluster of `nodes` after `ticks` ticks, with a leader.
fn quiet_cluster(nodes: usize, seed: u64) -> Sim {
    let mut sim = Sim::new(SimConfig::new(nodes, seed));
    sim.set_faults(false);
    for _ in 0..150 {
        sim.tick().unwrap_or_else(|v| panic!("{v}"));
    }
    assert!(
        sim.leader().is_some(),
        "seed {seed}: no leader after 150 quiet ticks"
    );
    sim
}

/// Pre-vote: a node cut off from the others must not depose the healthy leader when it
/// returns (the "no outage when a partition heals").
#[test]
fn a_returning_node_does_not_depose_the_leader() {
    for seed in 0..20 {
        let mut sim = quiet_cluster(3, seed);
        let leader = sim.leader().expect("leader");
        let ballot = sim.status(leader).expect("up").ballot;
        let follower = (1..=3).find(|&i| i != leader).expect("a follower");
        sim.isolate(follower);
        for _ in 0..300 {
            sim.tick().unwrap_or_else(|v| panic!("{v}"));
        }
        sim.heal();
        let acked_before = sim.stats().writes_acked;
        for _ in 0..300 {
            sim.tick().unwrap_or_else(|v| panic!("{v}"));
            assert_eq!(
                sim.leader(),
                Some(leader),
                "seed {seed} tick {}: leadership changed after the partition healed",
                sim.now()
            );
        }
        let st = sim.status(leader).expect("up");
        assert_eq!(
            st.ballot, ballot,
            "seed {seed}: the leader's ballot was bumped"
        );
        assert_eq!(
            sim.status(follower).expect("up").ballot,
            ballot,
            "seed {seed}: the returning node did not rejoin the leader's ballot"
        );
        assert!(
            sim.stats().writes_acked > acked_before + 50,
            "seed {seed}: too few writes after healing"
        );
    }
}

/// A killed leader is replaced, and writes are acknowledged again, within a bound of ticks.
#[test]
fn a_killed_leader_is_replaced_quickly() {
    let mut worst_ticks = 0;
    for seed in 0..20 {
        let mut sim = quiet_cluster(3, seed);
        let old = sim.leader().expect("leader");
        sim.crash_node(old);
        let killed_at = sim.now();
        let acked = sim.stats().writes_acked;
        let mut recovered = None;
        for _ in 0..200 {
            sim.tick().unwrap_or_else(|v| panic!("{v}"));
            if sim.leader().is_some_and(|l| l != old) && sim.stats().writes_acked > acked {
                recovered = Some(sim.now() - killed_at);
                break;
            }
        }
        let t = recovered.unwrap_or_else(|| panic!("seed {seed}: no new leader within 200 ticks"));
        worst_ticks = worst_ticks.max(t);
        sim.restart_node(old).unwrap_or_else(|v| panic!("{v}"));
        for _ in 0..100 {
            sim.tick().unwrap_or_else(|v| panic!("{v}"));
        }
    }
    eprintln!("worst failover: {worst_ticks} ticks (election timeout 15..30 ticks)");
    // Detection takes 15..30 ticks; pre-vote, phase 1 and one write take six message delays
    // of 1..4 ticks plus two fsyncs of 0..6 ticks: at most 30 + 24 + 12 + the client's turn.
    assert!(worst_ticks <= 75, "failover took {worst_ticks} ticks");
}

/// A leader cut off from the majority stops leading (check-quorum) and the majority elects
/// another; after healing there is one leader and writes flow.
#[test]
fn an_isolated_leader_steps_down() {
    for seed in 0..20 {
        let mut sim = quiet_cluster(5, seed);
        let old = sim.leader().expect("leader");
        sim.isolate(old);
        for _ in 0..120 {
            sim.tick().unwrap_or_else(|v| panic!("{v}"));
        }
        assert!(
            !sim.status(old)
                .expect("up")
                .role
                .eq(&paxos_kv::paxos::Role::Leader),
            "seed {seed}: isolated leader still leads after 120 ticks"
        );
        assert!(
            sim.leader().is_some_and(|l| l != old),
            "seed {seed}: majority has no leader"
        );
        sim.heal();
        let acked = sim.stats().writes_acked;
        for _ in 0..100 {
            sim.tick().unwrap_or_else(|v| panic!("{v}"));
        }
        assert!(
            sim.stats().writes_acked > acked + 10,
            "seed {seed}: writes stalled after healing"
        );
    }
}

/// A paused (SIGSTOP) leader is replaced; when it resumes, with or without a burst of missed
/// ticks, it steps down without disturbing the new leader.
#[test]
fn a_paused_leader_is_replaced_and_does_not_disrupt_on_resume() {
    for seed in 0..20 {
        let mut sim = quiet_cluster(3, seed);
        let old = sim.leader().expect("leader");
        sim.pause_node(old, 150, seed % 2 == 0);
        let acked = sim.stats().writes_acked;
        let mut replaced = None;
        for _ in 0..150 {
            sim.tick().unwrap_or_else(|v| panic!("{v}"));
            if replaced.is_none() && sim.leader().is_some_and(|l| l != old) {
                replaced = Some(sim.now());
            }
        }
        assert!(
            replaced.is_some(),
            "seed {seed}: no new leader while the leader was paused"
        );
        assert!(
            sim.stats().writes_acked > acked,
            "seed {seed}: no write while paused"
        );
        let new = sim.leader().expect("a leader");
        let ballot = sim.status(new).expect("up").ballot;
        for _ in 0..200 {
            sim.tick().unwrap_or_else(|v| panic!("{v}"));
        }
        assert_eq!(
            sim.leader(),
            Some(new),
            "seed {seed}: the resumed node disrupted the leader"
        );
        assert_eq!(
            sim.status(new).expect("up").ballot,
            ballot,
            "seed {seed}: ballot bumped"
        );
        assert_ne!(
            sim.status(old).expect("up").role,
            paxos_kv::paxos::Role::Leader,
            "seed {seed}: the resumed node still leads"
        );
    }
}
