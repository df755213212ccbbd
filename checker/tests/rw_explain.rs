//! rw-register, no version order: the explanation must be a proof a person can follow. Every
//! cycle it shows rests on edges known from the history, the one order the cycle refutes (or
//! the case it sits in), and orders forced earlier, each forced order with its own cycle shown
//! as a lemma. Before, the checker showed one cycle under one guessed order of every key's
//! writes ("in this order ..."), which proves nothing: another guess could avoid that cycle.

mod common;

use common::{assert_proof, explanation};
use ordeal_checker::txn::{
    check_log, Consistency, DecidedBy, LogBuilder, TxnLog, TxnOptions, Workload,
};
use ordeal_checker::{Outcome, Verdict};
use rand::{Rng, SeedableRng};
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
enum Mop {
    Write(usize, i64),
    Read(usize, Option<i64>),
}

#[derive(Clone, Debug)]
struct Txn {
    mops: Vec<Mop>,
    invoke: u32,
    complete: u32,
}

fn ok(mops: Vec<Mop>, invoke: u32, complete: u32) -> Txn {
    Txn {
        mops,
        invoke,
        complete,
    }
}

fn build(txns: &[Txn], keys: usize) -> TxnLog {
    let mut b = LogBuilder::new();
    let ks: Vec<u32> = (0..keys as i64).map(|k| b.key(k)).collect();
    for (i, t) in txns.iter().enumerate() {
        let start = b.begin();
        for m in &t.mops {
            match *m {
                Mop::Write(k, v) => b.write(ks[k], v),
                Mop::Read(k, v) => b.read_register(ks[k], Some(v)),
            }
        }
        b.finish(start, i as u64, Outcome::Ok, t.invoke, t.complete);
    }
    let mut log = b.log;
    log.txns.sort_by_key(|t| t.invoke_pos);
    log
}

fn opts(consistency: Consistency) -> TxnOptions {
    TxnOptions {
        workload: Workload::RwRegister,
        consistency,
        time_budget: Duration::from_secs(30),
        ..TxnOptions::default()
    }
}

/// A stale read that only a chain of two version orders exposes (serializability; keys
/// x=0, y=1, z=2, w=3, u=4, v=5):
///   A: w x 1, w z 7        B: r z 7, w x 2, w w 9     (A -wr-> B)
///   D: w y 5, w u 4        E: r u 4, w y 6, w v 8     (D -wr-> E)
///   Q: r y 5, r w 9        (D -wr-> Q, B -wr-> Q)
///   R: r x 1, r v 8        (A -wr-> R, E -wr-> R): R's read of x=1 is the stale one.
/// x's 2 before 1 closes B -ww-> A -wr-> B, so 1 precedes 2, and then R read 1, which B's 2
/// overwrites: R -rw-> B. y's 6 before 5 closes E -ww-> D -wr-> E, so 5 precedes 6, and Q,
/// which read 5, precedes E. Then B -wr-> Q -rw-> E -wr-> R -rw-> B. No transaction reads a
/// key and then writes it, so inference orders no writes; the stage-1 guess showed a cycle
/// "in this order", with guessed edges.
fn chained_stale_read(r_reads_x: i64) -> Vec<Txn> {
    use Mop::*;
    vec![
        ok(vec![Write(0, 1), Write(2, 7)], 0, 20),
        ok(vec![Read(2, Some(7)), Write(0, 2), Write(3, 9)], 1, 21),
        ok(vec![Write(1, 5), Write(4, 4)], 2, 22),
        ok(vec![Read(4, Some(4)), Write(1, 6), Write(5, 8)], 3, 23),
        ok(vec![Read(1, Some(5)), Read(3, Some(9))], 4, 24),
        ok(vec![Read(0, Some(r_reads_x)), Read(5, Some(8))], 5, 25),
    ]
}

#[test]
fn chained_stale_read_is_proven_with_forced_orders() {
    let log = build(&chained_stale_read(1), 6);
    let r = check_log(&log, &opts(Consistency::Serializable)).unwrap();
    assert_eq!(r.verdict, Verdict::Invalid, "{}", explanation(&r));
    assert_eq!(r.decided_by, DecidedBy::ExactSearch, "{}", explanation(&r));
    assert!(r.has_anomaly("cycle-unavoidable"), "{}", explanation(&r));
    let proof = assert_proof(&r);
    // The refutation leans on an order forced first, and shows why it is forced.
    let forced: Vec<_> = proof
        .cycles
        .iter()
        .flat_map(|c| &c.steps)
        .filter(|s| s.basis.as_deref() == Some("forced"))
        .collect();
    assert!(!forced.is_empty(), "{}", explanation(&r));
    assert!(
        proof.cycles.iter().any(|c| c.lemma.is_some()),
        "{}",
        explanation(&r)
    );
    let text = &r.anomalies[0].explanation;
    eprintln!("{text}");
    assert!(
        text.contains("forced: the other order closes a cycle"),
        "{text}"
    );
    assert!(text.contains("Either order of key"), "{text}");
    // Only the planted read is wrong: reading B's 2 instead is serializable.
    let clean = check_log(
        &build(&chained_stale_read(2), 6),
        &opts(Consistency::Serializable),
    )
    .unwrap();
    assert_eq!(clean.verdict, Verdict::Valid, "{}", explanation(&clean));
}

/// The real-time stale read: W1 writes x=1 and completes, W2 then writes x=2 and completes,
/// R then reads 1. Both orders of x's 1 and 2 close a cycle under real time: the proof shows
/// both, and nothing else.
#[test]
fn both_orders_of_one_pair_close_cycles() {
    use Mop::*;
    let txns = vec![
        ok(vec![Write(0, 1)], 0, 1),
        ok(vec![Write(0, 2)], 2, 3),
        ok(vec![Read(0, Some(1))], 4, 5),
    ];
    let r = check_log(&build(&txns, 1), &opts(Consistency::StrictSerializable)).unwrap();
    assert_eq!(r.verdict, Verdict::Invalid, "{}", explanation(&r));
    assert!(r.has_anomaly("cycle-unavoidable-realtime"));
    let proof = assert_proof(&r);
    let refuted: Vec<&str> = proof.cycles.iter().map(|c| c.refutes.as_str()).collect();
    assert_eq!(
        refuted,
        vec!["key 0: 1 precedes 2", "key 0: 2 precedes 1"],
        "{}",
        explanation(&r)
    );
    // 1 < 2: R read 1, which W2's 2 overwrites, and W2 completed before R began.
    let kinds: Vec<Vec<&str>> = proof
        .cycles
        .iter()
        .map(|c| c.steps.iter().map(|s| s.kind.as_str()).collect())
        .collect();
    assert_eq!(
        kinds,
        vec![vec!["rw", "realtime"], vec!["ww", "realtime"]],
        "{}",
        explanation(&r)
    );
    let text = &r.anomalies[0].explanation;
    assert!(text.contains("If 1 precedes 2:"), "{text}");
    assert!(text.contains("If 2 precedes 1:"), "{text}");
}

/// Random small histories with one stale read planted: whenever the search proves that no
/// order exists, the proof passes `assert_proof` (or, past its bounds, says it is partial).
/// Some of them need case splits; the test counts that the split path ran.
#[test]
fn random_invalid_histories_get_proofs() {
    use Mop::*;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let (mut invalid, mut split, mut forced) = (0, 0, 0);
    for round in 0..600 {
        let keys = rng.gen_range(2..5);
        let n = rng.gen_range(4..16);
        // A serial execution, then one read made stale.
        let mut state: Vec<Option<i64>> = vec![None; keys];
        let mut next = 1;
        let mut txns = Vec::new();
        for i in 0..n {
            let mut mops = Vec::new();
            for _ in 0..rng.gen_range(1..4) {
                let k = rng.gen_range(0..keys);
                if rng.gen_bool(0.5) {
                    mops.push(Write(k, next));
                    state[k] = Some(next);
                    next += 1;
                } else {
                    mops.push(Read(k, state[k]));
                }
            }
            // Concurrent in small overlapping groups.
            txns.push(ok(mops, 2 * i as u32, 2 * i as u32 + 5));
        }
        let reads: Vec<(usize, usize)> = txns
            .iter()
            .enumerate()
            .flat_map(|(t, x)| {
                x.mops
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| matches!(m, Read(_, Some(_))))
                    .map(move |(i, _)| (t, i))
            })
            .collect();
        if reads.is_empty() {
            continue;
        }
        for _ in 0..rng.gen_range(1..3) {
            let (t, i) = reads[rng.gen_range(0..reads.len())];
            if let Read(k, Some(v)) = txns[t].mops[i] {
                if v > 1 {
                    // Some earlier value of the key, if any.
                    let older: Vec<i64> = txns[..t]
                        .iter()
                        .flat_map(|x| &x.mops)
                        .filter_map(|m| match *m {
                            Write(wk, wv) if wk == k && wv < v => Some(wv),
                            _ => None,
                        })
                        .collect();
                    if let Some(&o) = older.first() {
                        txns[t].mops[i] = Read(k, Some(o));
                    }
                }
            }
        }
        let log = build(&txns, keys);
        for c in [Consistency::Serializable, Consistency::StrictSerializable] {
            let r = check_log(&log, &opts(c)).unwrap();
            if r.decided_by != DecidedBy::ExactSearch || r.verdict != Verdict::Invalid {
                continue;
            }
            invalid += 1;
            let e = r.exact.as_ref().unwrap();
            let proof = e.proof.as_ref().expect("a proof");
            if proof.status == "partial" {
                assert!(
                    r.anomalies[0].explanation.contains("Partial proof"),
                    "round {round}: {}",
                    explanation(&r)
                );
                continue;
            }
            let proof = assert_proof(&r);
            if r.anomalies[0].explanation.contains("each order fails") {
                split += 1;
            }
            if proof.cycles.iter().any(|c| c.lemma.is_some()) {
                forced += 1;
            }
        }
    }
    assert!(
        invalid >= 20,
        "only {invalid} histories needed the exact search"
    );
    assert!(
        forced > 0,
        "no proof used a forced order ({invalid} invalid)"
    );
    eprintln!("{invalid} invalid, {split} with case splits, {forced} with lemmas");
}

/// Read committed has no single serial order, so "T1 precedes the reader, which read T2's
/// version, so T1's version precedes T2's" does not hold there. A fractured read (the reader
/// sees T2's x and T1's y, each writing both) is allowed by read committed; the exact stage
/// once derived edges in both directions and called it G1c-unavoidable.
#[test]
fn fractured_read_is_read_committed() {
    use Mop::*;
    let txns = vec![
        ok(vec![Write(0, 1), Write(1, 2)], 0, 10),
        ok(vec![Write(1, 8), Write(0, 9)], 1, 11),
        ok(vec![Read(0, Some(9)), Read(1, Some(2))], 2, 12),
    ];
    let log = build(&txns, 2);
    let rc = check_log(&log, &opts(Consistency::ReadCommitted)).unwrap();
    assert_eq!(rc.verdict, Verdict::Valid, "{}", explanation(&rc));
    // Serializability forbids it, and the proof is the derived cycle.
    let ser = check_log(&log, &opts(Consistency::Serializable)).unwrap();
    assert_eq!(ser.verdict, Verdict::Invalid, "{}", explanation(&ser));
    assert!(!ser.has_anomaly("G1c-unavoidable"), "{}", explanation(&ser));
    assert_proof(&ser);
}

/// Propagation forces nothing here, yet no order exists: a case split on x, and in each case
/// both orders of y close a cycle. Writers a (x=1), b (x=2), c (y=3), d (y=4); readers ra, rb,
/// rc, rd of each; and known wr edges (through keys of their own) a, b -> rc, rd and c, d ->
/// ra, rb. Supposing 1 < 2 puts ra before b, and then 3 < 4 closes d -> ra -> b -> rc -> d,
/// 4 < 3 closes c -> ra -> b -> rd -> c; supposing 2 < 1 likewise through rb and a.
#[test]
fn case_split_is_shown_with_both_cases() {
    use Mop::*;
    let (x, y) = (0, 1);
    let k = |i: usize| i + 1;
    let txns = vec![
        ok(vec![Write(x, 1), Write(k(1), 1), Write(k(2), 1)], 0, 20),
        ok(vec![Write(x, 2), Write(k(3), 1), Write(k(4), 1)], 1, 21),
        ok(vec![Write(y, 3), Write(k(5), 1), Write(k(6), 1)], 2, 22),
        ok(vec![Write(y, 4), Write(k(7), 1), Write(k(8), 1)], 3, 23),
        ok(
            vec![Read(x, Some(1)), Read(k(5), Some(1)), Read(k(7), Some(1))],
            4,
            24,
        ),
        ok(
            vec![Read(x, Some(2)), Read(k(6), Some(1)), Read(k(8), Some(1))],
            5,
            25,
        ),
        ok(
            vec![Read(y, Some(3)), Read(k(1), Some(1)), Read(k(3), Some(1))],
            6,
            26,
        ),
        ok(
            vec![Read(y, Some(4)), Read(k(2), Some(1)), Read(k(4), Some(1))],
            7,
            27,
        ),
    ];
    let r = check_log(&build(&txns, 10), &opts(Consistency::Serializable)).unwrap();
    assert_eq!(r.verdict, Verdict::Invalid, "{}", explanation(&r));
    assert_eq!(r.decided_by, DecidedBy::ExactSearch, "{}", explanation(&r));
    let proof = assert_proof(&r);
    let text = &r.anomalies[0].explanation;
    eprintln!("{text}");
    assert!(text.contains("each order fails"), "{text}");
    // The search splits on one of the two pairs; each case refutes the other's both orders.
    let split_x = text.contains("Case 1 precedes 2:") && text.contains("Case 2 precedes 1:");
    let split_y = text.contains("Case 3 precedes 4:") && text.contains("Case 4 precedes 3:");
    assert!(split_x != split_y, "{text}");
    // Per case, both orders of y refuted: four cycles, each leaning on its case.
    let main: Vec<_> = proof.cycles.iter().filter(|c| c.lemma.is_none()).collect();
    assert_eq!(main.len(), 4, "{text}");
    for c in main {
        assert!(
            c.steps.iter().any(|s| s.basis.as_deref() == Some("case")),
            "{}: {text}",
            c.refutes
        );
    }
}
