//! rw-register, decided exactly: the checker against a brute-force oracle (every serial order
//! of the committed transactions, every choice of which info transactions committed) on
//! thousands of small random histories, for serializability and strict serializability, in
//! both directions; and hand-built histories that violate exactly one property.

use ordeal_checker::txn::{
    check_log, Consistency, DecidedBy, LogBuilder, TxnLog, TxnOptions, TxnResult, Workload,
};
use ordeal_checker::{Outcome, Verdict};
use rand::{Rng, SeedableRng};
use std::time::Duration;

#[derive(Clone, Debug)]
enum Mop {
    Write(usize, i64),
    /// A read and what it returned (None: nil); unknown for info and fail transactions.
    Read(usize, Option<i64>),
}

#[derive(Clone, Debug)]
struct Txn {
    mops: Vec<Mop>,
    outcome: Outcome,
    invoke: u32,
    /// None: never completed.
    complete: Option<u32>,
}

fn opts(consistency: Consistency) -> TxnOptions {
    TxnOptions {
        workload: Workload::RwRegister,
        consistency,
        time_budget: Duration::from_secs(30),
        ..TxnOptions::default()
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
                Mop::Read(k, v) => {
                    let known = t.outcome == Outcome::Ok;
                    b.read_register(ks[k], known.then_some(v));
                }
            }
        }
        b.finish(
            start,
            i as u64,
            t.outcome,
            t.invoke,
            t.complete.unwrap_or(u32::MAX),
        );
    }
    let mut log = b.log;
    log.txns.sort_by_key(|t| t.invoke_pos);
    log
}

/// Whether some set of committed transactions (every ok one, any of the info ones, no failed
/// one) has a serial order, respecting real time if asked, in which every ok transaction's
/// reads return what it read.
fn oracle(txns: &[Txn], keys: usize, realtime: bool) -> bool {
    let info: Vec<usize> = (0..txns.len())
        .filter(|&i| txns[i].outcome == Outcome::Info)
        .collect();
    (0..1u32 << info.len()).any(|mask| {
        let members: Vec<usize> = (0..txns.len())
            .filter(|&i| match txns[i].outcome {
                Outcome::Ok => true,
                Outcome::Fail => false,
                Outcome::Info => mask & (1 << info.iter().position(|&j| j == i).unwrap()) != 0,
            })
            .collect();
        let mut used = vec![false; members.len()];
        let mut state = vec![None; keys];
        serial(txns, &members, &mut used, &mut state, realtime)
    })
}

fn serial(
    txns: &[Txn],
    members: &[usize],
    used: &mut [bool],
    state: &mut Vec<Option<i64>>,
    realtime: bool,
) -> bool {
    if used.iter().all(|&u| u) {
        return true;
    }
    for i in 0..members.len() {
        if used[i] {
            continue;
        }
        let t = &txns[members[i]];
        // Real time: no unplaced ok member may have completed before t was invoked. An info
        // completion says nothing: the transaction may still take effect later.
        if realtime
            && (0..members.len()).any(|j| {
                let u = &txns[members[j]];
                !used[j]
                    && j != i
                    && u.outcome == Outcome::Ok
                    && u.complete.is_some_and(|c| c < t.invoke)
            })
        {
            continue;
        }
        let saved = state.clone();
        let ok = t.mops.iter().all(|m| match *m {
            Mop::Write(k, v) => {
                state[k] = Some(v);
                true
            }
            Mop::Read(k, v) => t.outcome != Outcome::Ok || state[k] == v,
        });
        if ok {
            used[i] = true;
            if serial(txns, members, used, state, realtime) {
                return true;
            }
            used[i] = false;
        }
        *state = saved;
    }
    false
}

/// A random history of 2..=8 transactions on 1..=3 keys: a serial execution's reads, some of
/// them then replaced by another value of the key (or nil), random overlapping intervals, and
/// some info and failed transactions.
fn random_history(rng: &mut impl Rng) -> (Vec<Txn>, usize) {
    let n = rng.gen_range(2..=8);
    let keys = rng.gen_range(1..=3);
    let mut state: Vec<Option<i64>> = vec![None; keys];
    let mut written: Vec<Vec<i64>> = vec![Vec::new(); keys];
    let mut next = 1i64;
    let mut txns = Vec::new();
    let corrupt = rng.gen_range(0.0..0.3);
    for _ in 0..n {
        let mut mops = Vec::new();
        for _ in 0..rng.gen_range(1..=3) {
            let k = rng.gen_range(0..keys);
            if rng.gen_bool(0.5) {
                state[k] = Some(next);
                written[k].push(next);
                mops.push(Mop::Write(k, next));
                next += 1;
            } else {
                mops.push(Mop::Read(k, state[k]));
            }
        }
        let outcome = match rng.gen_range(0..20) {
            0 | 1 => Outcome::Info,
            2 => Outcome::Fail,
            _ => Outcome::Ok,
        };
        txns.push(Txn {
            mops,
            outcome,
            invoke: 0,
            complete: None,
        });
    }
    // Stale or odd reads: any value ever written to the key, or nil.
    for t in &mut txns {
        for m in &mut t.mops {
            if let Mop::Read(k, v) = m {
                if rng.gen_bool(corrupt) {
                    let w = &written[*k];
                    *v = if w.is_empty() || rng.gen_bool(0.2) {
                        None
                    } else {
                        Some(w[rng.gen_range(0..w.len())])
                    };
                }
            }
        }
    }
    // Intervals: a shuffle of 0..2n, each invocation before its completion; usually in an
    // order close to the serial one so that real time matters.
    let mut points: Vec<u32> = (0..2 * n as u32).collect();
    let swaps = rng.gen_range(0..=2 * n);
    for _ in 0..swaps {
        let i = rng.gen_range(0..points.len());
        let j = rng.gen_range(0..points.len());
        points.swap(i, j);
    }
    for (i, t) in txns.iter_mut().enumerate() {
        let (a, b) = (points[2 * i], points[2 * i + 1]);
        t.invoke = a.min(b);
        t.complete = (t.outcome != Outcome::Info || rng.gen_bool(0.5)).then_some(a.max(b));
    }
    (txns, keys)
}

fn describe(txns: &[Txn], r: &TxnResult) -> String {
    format!(
        "{txns:#?}\nverdict {} by {:?}; anomalies {:?}; notes {:?}\n{}",
        r.verdict,
        r.decided_by,
        r.anomaly_types,
        r.notes,
        r.anomalies
            .first()
            .map(|a| a.explanation.as_str())
            .unwrap_or("")
    )
}

#[test]
fn agrees_with_brute_force_on_thousands_of_histories() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    // [consistency][valid, invalid, invalid only by the exact search, valid only after the
    // exact search past its first guess]
    let mut counts = [[0usize; 4]; 2];
    for case in 0..20_000 {
        let (txns, keys) = random_history(&mut rng);
        let log = build(&txns, keys);
        for (ci, (consistency, realtime)) in [
            (Consistency::Serializable, false),
            (Consistency::StrictSerializable, true),
        ]
        .into_iter()
        .enumerate()
        {
            let r = check_log(&log, &opts(consistency)).unwrap();
            let truth = oracle(&txns, keys, realtime);
            let want = if truth {
                Verdict::Valid
            } else {
                Verdict::Invalid
            };
            assert_eq!(
                r.verdict,
                want,
                "case {case}, {consistency}: {}",
                describe(&txns, &r)
            );
            let c = &mut counts[ci];
            if truth {
                c[0] += 1;
                if r.exact.as_ref().is_some_and(|e| !e.by_witness_order) {
                    c[3] += 1;
                }
            } else {
                c[1] += 1;
                if r.decided_by == DecidedBy::ExactSearch {
                    c[2] += 1;
                }
            }
        }
    }
    // Both answers, and the cases inference alone gets wrong, must be exercised.
    for (ci, c) in counts.iter().enumerate() {
        assert!(
            c[0] > 5000 && c[1] > 2000 && c[2] > 50,
            "level {ci}: too few of some kind: {c:?}"
        );
    }
    eprintln!("[valid, invalid, invalid by exact search, valid after backtracking]: {counts:?}");
}

fn ok(mops: Vec<Mop>, invoke: u32, complete: u32) -> Txn {
    Txn {
        mops,
        outcome: Outcome::Ok,
        invoke,
        complete: Some(complete),
    }
}

/// The issue's example: T1 [w 1 2][w 3 3], T2 [r 1 2][w 3 7], T3 [r 3 3][w 1 10], all ok and
/// concurrent. T2 read T1's x1, so T1 < T2; T3 read T1's x3 = 3, so T2's write of 7 to key 3
/// comes after T3's read, T3 < T2... and T3 wrote key 1 after T1's 2 that T2 read, so T2 < T3.
#[test]
fn issue_example_has_no_serial_order() {
    use Mop::*;
    let txns = vec![
        ok(vec![Write(1, 2), Write(3, 3)], 0, 6),
        ok(vec![Read(1, Some(2)), Write(3, 7)], 1, 7),
        ok(vec![Read(3, Some(3)), Write(1, 10)], 2, 8),
    ];
    let log = build(&txns, 4);
    assert!(!oracle(&txns, 4, false));
    let r = check_log(&log, &opts(Consistency::Serializable)).unwrap();
    assert_eq!(r.verdict, Verdict::Invalid, "{}", describe(&txns, &r));
    assert_eq!(r.decided_by, DecidedBy::ExactSearch);
    assert!(r.has_anomaly("cycle-unavoidable"), "{:?}", r.anomaly_types);
    assert!(r.not.contains(&Consistency::RepeatableRead));
    let a = &r.anomalies[0];
    assert!(a.explanation.contains("contradiction"), "{}", a.explanation);
    // A proof: both orders of one pair close a cycle, nothing guessed.
    assert!(
        !a.explanation.contains("in this order"),
        "{}",
        a.explanation
    );
    assert!(
        a.explanation.contains("Either order of key"),
        "{}",
        a.explanation
    );
    let proof = r.exact.as_ref().and_then(|e| e.proof.as_ref()).unwrap();
    assert_eq!(proof.status, "complete", "{}", a.explanation);
    // The steps are the first cycle's; the transactions, every one the proof names.
    assert!(a.steps.len() >= 2 && a.steps.len() <= a.txns.len());
    for s in &a.steps {
        assert!(a.txns.iter().any(|t| t.name == s.from), "{}", a.explanation);
    }
    // Read committed allows it: each read saw a committed write, no ww/wr cycle.
    let rc = check_log(&log, &opts(Consistency::ReadCommitted)).unwrap();
    assert_eq!(rc.verdict, Verdict::Valid, "{}", describe(&txns, &rc));
    // Snapshot isolation is not decided by the exact search: not silently valid.
    let si = check_log(&log, &opts(Consistency::SnapshotIsolation)).unwrap();
    assert_eq!(si.verdict, Verdict::Unknown, "{}", describe(&txns, &si));
    assert_eq!(si.decided_by, DecidedBy::ExactSearchIncomplete);
}

/// Serializable, but only in an order real time forbids, and no read shows it: T1 writes x=1
/// and completes; T2 then writes x=2 and completes; T3, after both, reads x=1. Inference
/// orders nothing (no one read then wrote).
#[test]
fn stale_read_only_real_time_forbids() {
    use Mop::*;
    let txns = vec![
        ok(vec![Write(0, 1)], 0, 1),
        ok(vec![Write(0, 2)], 2, 3),
        ok(vec![Read(0, Some(1))], 4, 5),
    ];
    let log = build(&txns, 1);
    let ser = check_log(&log, &opts(Consistency::Serializable)).unwrap();
    assert_eq!(ser.verdict, Verdict::Valid, "{}", describe(&txns, &ser));
    let w = ser.exact.as_ref().expect("the exact search ran");
    assert_eq!(w.outcome, "witness");
    // The witness serial order puts the reader of 1 (history index 5) before the writer of 2
    // (index 3), against real time.
    let at = |i: u64| w.witness_serial.iter().position(|&x| x == i).unwrap();
    assert!(at(5) < at(3), "{:?}", w.witness_serial);
    let strict = check_log(&log, &opts(Consistency::StrictSerializable)).unwrap();
    assert_eq!(
        strict.verdict,
        Verdict::Invalid,
        "{}",
        describe(&txns, &strict)
    );
    assert!(strict.has_anomaly("cycle-unavoidable-realtime"));
    assert_eq!(strict.not, vec![Consistency::StrictSerializable]);
    // With --linearizable-keys the same knowledge comes from inference: 1 < 2 by real time,
    // so T3's read of 1 precedes T2's write of 2 (rw), which real time puts before T3.
    let lin = check_log(
        &log,
        &TxnOptions {
            linearizable_keys: true,
            ..opts(Consistency::StrictSerializable)
        },
    )
    .unwrap();
    assert_eq!(lin.verdict, Verdict::Invalid);
    assert_eq!(
        lin.decided_by,
        DecidedBy::Inference,
        "{:?}",
        lin.anomaly_types
    );
}

/// --sequential-keys: one process writes x=1 then x=2; another reads 2 then 1. Without the
/// assumption 2 < 1 is a possible order; with it, the reads go back in time.
#[test]
fn sequential_keys_orders_a_process_writes() {
    let mut b = LogBuilder::new();
    let x = b.key(0);
    let s = b.begin();
    b.write(x, 1);
    b.finish(s, 0, Outcome::Ok, 0, 1);
    let s = b.begin();
    b.write(x, 2);
    b.finish(s, 0, Outcome::Ok, 2, 3);
    let s = b.begin();
    b.read_register(x, Some(Some(2)));
    b.read_register(x, Some(Some(2)));
    b.finish(s, 1, Outcome::Ok, 4, 9);
    let s = b.begin();
    b.read_register(x, Some(Some(1)));
    b.finish(s, 2, Outcome::Ok, 5, 8);
    let log = b.log;
    let plain = check_log(&log, &opts(Consistency::Serializable)).unwrap();
    assert_eq!(plain.verdict, Verdict::Valid);
    let seq = check_log(
        &log,
        &TxnOptions {
            sequential_keys: true,
            ..opts(Consistency::Serializable)
        },
    )
    .unwrap();
    // 1 < 2 by process order: the reader of 1 precedes the write of 2, which the reader of 2
    // follows; that is no cycle yet: serializable still.
    assert_eq!(seq.verdict, Verdict::Valid, "{:?}", seq.anomaly_types);
    // But strict: the reader of 1 was invoked after the writer of 2 completed.
    let strict = check_log(
        &log,
        &TxnOptions {
            sequential_keys: true,
            ..opts(Consistency::StrictSerializable)
        },
    )
    .unwrap();
    assert_eq!(strict.verdict, Verdict::Invalid);
    assert_eq!(strict.decided_by, DecidedBy::Inference);
    assert!(
        strict.has_anomaly("G-single-item-realtime"),
        "{:?}",
        strict.anomaly_types
    );
}

/// Write skew: read committed (decided by the exact search, trivially: every key has one
/// writer), not serializable.
#[test]
fn write_skew_is_read_committed_not_serializable() {
    use Mop::*;
    // T1 and T2 both read x and y initially nil and each writes one of them.
    let txns = vec![
        ok(vec![Read(0, None), Read(1, None), Write(0, 1)], 0, 3),
        ok(vec![Read(0, None), Read(1, None), Write(1, 1)], 1, 2),
    ];
    let log = build(&txns, 2);
    let rc = check_log(&log, &opts(Consistency::ReadCommitted)).unwrap();
    assert_eq!(rc.verdict, Verdict::Valid);
    assert_eq!(rc.decided_by, DecidedBy::ExactSearch);
    let ser = check_log(&log, &opts(Consistency::Serializable)).unwrap();
    assert_eq!(ser.verdict, Verdict::Invalid);
    // Inference sees this one itself (reads of nil precede every write).
    assert_eq!(ser.decided_by, DecidedBy::Inference);
}

/// A budget too small to search gives unknown, never valid: the same history as the issue's,
/// with the witness order failing and no steps left.
#[test]
fn exhausted_budget_is_unknown() {
    use Mop::*;
    let txns = vec![
        ok(vec![Write(1, 2), Write(3, 3)], 0, 6),
        ok(vec![Read(1, Some(2)), Write(3, 7)], 1, 7),
        ok(vec![Read(3, Some(3)), Write(1, 10)], 2, 8),
    ];
    let log = build(&txns, 4);
    let r = check_log(
        &log,
        &TxnOptions {
            exact_budget_steps: 1,
            ..opts(Consistency::Serializable)
        },
    )
    .unwrap();
    assert_eq!(r.verdict, Verdict::Unknown, "{}", describe(&txns, &r));
    assert_eq!(r.decided_by, DecidedBy::ExactSearchIncomplete);
    assert!(r
        .notes
        .iter()
        .any(|n| n.contains("valid by inference, exact search incomplete")));
}

/// Generated rw-register histories (valid by construction, with info and failed
/// transactions) are decided valid, with a witness, within the default budget.
#[test]
fn generated_histories_get_a_witness() {
    use ordeal_checker::txn::{generate, GenOptions};
    for seed in 0..6 {
        let log = generate(&GenOptions {
            workload: Workload::RwRegister,
            txns: 2000,
            clients: 8,
            active_keys: 4,
            max_writes_per_key: 16,
            info_fraction: 0.05,
            fail_fraction: 0.05,
            seed,
            ..GenOptions::default()
        });
        for c in [Consistency::StrictSerializable, Consistency::Serializable] {
            let r = check_log(&log, &opts(c)).unwrap();
            assert_eq!(r.verdict, Verdict::Valid, "seed {seed} {c}: {:?}", r.notes);
            assert_eq!(r.decided_by, DecidedBy::ExactSearch);
        }
    }
}
