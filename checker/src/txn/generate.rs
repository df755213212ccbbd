//! Random transactional histories with known answers: a serial execution of random
//! transactions, replayed with random concurrency that respects real time (each transaction
//! takes effect at a point between its invocation and its completion), so the result is always
//! strict-serializable; and injections of one specific anomaly on fresh keys.

use super::log::{LogBuilder, TxnLog, NO_POS};
use super::Workload;
use crate::history::Outcome;
use crate::value::Value;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(Clone, Debug)]
pub struct GenOptions {
    pub workload: Workload,
    pub txns: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Keys in use at any time; a key that has had `max_writes_per_key` writes is replaced by a
    /// fresh one, so reads stay short.
    pub active_keys: usize,
    pub min_txn_len: usize,
    pub max_txn_len: usize,
    pub max_writes_per_key: usize,
    /// Probability that a micro-op is a read.
    pub read_fraction: f64,
    /// Probability that a transaction ends `info` (it takes effect half of the time).
    pub info_fraction: f64,
    /// Probability that a transaction ends `fail` (it never takes effect).
    pub fail_fraction: f64,
    pub seed: u64,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            workload: Workload::ListAppend,
            txns: 1000,
            clients: 10,
            active_keys: 8,
            min_txn_len: 1,
            max_txn_len: 4,
            max_writes_per_key: 32,
            read_fraction: 0.5,
            info_fraction: 0.0,
            fail_fraction: 0.0,
            seed: 0,
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Read,
    Write,
}

struct Pending {
    mops: Vec<(Op, u64, i64)>,
    invoke_pos: u32,
    /// Read results once it took effect: list-append reads, or register reads.
    lists: Vec<Vec<i64>>,
    regs: Vec<Option<i64>>,
    outcome: Outcome,
    took_effect: bool,
}

enum Slot {
    Idle,
    Invoked(Pending),
    Decided(Pending),
}

/// Generates a history as described in the module comment. Deterministic for a seed.
pub fn generate(o: &GenOptions) -> TxnLog {
    let mut rng = ChaCha8Rng::seed_from_u64(o.seed);
    let clients = o.clients.max(1);
    let mut b = LogBuilder::new();
    b.log.txns.reserve(o.txns);
    b.log
        .mops
        .reserve(o.txns * (o.min_txn_len + o.max_txn_len) / 2);
    let mut pool: Vec<u64> = (0..o.active_keys.max(1) as u64).collect();
    let mut next_key = pool.len() as u64;
    let mut writes: Vec<u32> = vec![0; pool.len()];
    let mut lists: Vec<Vec<i64>> = vec![Vec::new(); pool.len()];
    let mut regs: Vec<Option<i64>> = vec![None; pool.len()];
    let mut slots: Vec<Slot> = (0..clients).map(|_| Slot::Idle).collect();
    let mut process: Vec<u64> = (0..clients as u64).collect();
    let mut remaining = o.txns;
    let mut busy: Vec<usize> = Vec::new();
    let mut pos: u32 = 0;
    let list = o.workload == Workload::ListAppend;
    // Every step moves one transaction one phase on (invoke, take effect, complete), and an
    // idle client is only picked while transactions remain: 3 * txns steps in all.
    while remaining > 0 || !busy.is_empty() {
        let c = if remaining > 0 {
            rng.gen_range(0..clients)
        } else {
            busy[rng.gen_range(0..busy.len())]
        };
        let slot = std::mem::replace(&mut slots[c], Slot::Idle);
        slots[c] = match slot {
            Slot::Idle => {
                remaining -= 1;
                busy.push(c);
                let len =
                    rng.gen_range(o.min_txn_len.max(1)..=o.max_txn_len.max(o.min_txn_len).max(1));
                let mut mops = Vec::with_capacity(len);
                for _ in 0..len {
                    let slot_i = rng.gen_range(0..pool.len());
                    let k = pool[slot_i];
                    if rng.gen_bool(o.read_fraction.clamp(0.0, 1.0)) {
                        mops.push((Op::Read, k, 0));
                    } else {
                        writes[k as usize] += 1;
                        mops.push((Op::Write, k, writes[k as usize] as i64));
                        if writes[k as usize] as usize >= o.max_writes_per_key.max(1) {
                            pool[slot_i] = next_key;
                            next_key += 1;
                            writes.push(0);
                            lists.push(Vec::new());
                            regs.push(None);
                        }
                    }
                }
                let p = Pending {
                    mops,
                    invoke_pos: pos,
                    lists: Vec::new(),
                    regs: Vec::new(),
                    outcome: Outcome::Ok,
                    took_effect: false,
                };
                pos += 1;
                Slot::Invoked(p)
            }
            Slot::Invoked(mut p) => {
                let r: f64 = rng.gen();
                p.outcome = if r < o.fail_fraction {
                    Outcome::Fail
                } else if r < o.fail_fraction + o.info_fraction {
                    Outcome::Info
                } else {
                    Outcome::Ok
                };
                p.took_effect = match p.outcome {
                    Outcome::Ok => true,
                    Outcome::Info => rng.gen_bool(0.5),
                    Outcome::Fail => false,
                };
                if p.took_effect {
                    // The serial execution: this transaction runs alone, now.
                    for &(op, k, v) in &p.mops {
                        let k = k as usize;
                        match (op, list) {
                            (Op::Read, true) => p.lists.push(lists[k].clone()),
                            (Op::Read, false) => p.regs.push(regs[k]),
                            (Op::Write, true) => lists[k].push(v),
                            (Op::Write, false) => regs[k] = Some(v),
                        }
                    }
                }
                Slot::Decided(p)
            }
            Slot::Decided(p) => {
                busy.retain(|&x| x != c);
                let start = b.begin();
                let (mut li, mut ri) = (0, 0);
                let known = p.outcome == Outcome::Ok;
                for &(op, k, v) in &p.mops {
                    let key = b.key(k as i64);
                    match (op, list) {
                        (Op::Read, true) => {
                            b.read_list(key, known.then(|| p.lists[li].as_slice()));
                            li += 1;
                        }
                        (Op::Read, false) => {
                            b.read_register(key, known.then(|| p.regs[ri]));
                            ri += 1;
                        }
                        (Op::Write, true) => b.append(key, v),
                        (Op::Write, false) => b.write(key, v),
                    }
                }
                b.finish(start, process[c], p.outcome, p.invoke_pos, pos);
                pos += 1;
                if p.outcome == Outcome::Info {
                    // As in Jepsen: the client continues under a fresh process.
                    process[c] += clients as u64;
                }
                Slot::Idle
            }
        };
    }
    let mut log = b.log;
    sort_by_invocation(&mut log);
    log
}

fn sort_by_invocation(log: &mut TxnLog) {
    log.txns.sort_by_key(|t| t.invoke_pos);
}

/// One anomaly to plant in a history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Injection {
    /// Two transactions read the same version of a key and both write it.
    LostUpdate,
    /// Two transactions each read two keys and write a different one.
    WriteSkew,
    /// A read that misses a write completed before it began (serializable, not strict).
    StaleRead,
    /// A read of a write by a transaction that failed.
    AbortedRead,
}

impl Injection {
    pub const ALL: [Injection; 4] = [
        Injection::LostUpdate,
        Injection::WriteSkew,
        Injection::StaleRead,
        Injection::AbortedRead,
    ];

    /// The anomaly type the checker must name for it.
    pub fn expected_anomaly(self) -> &'static str {
        match self {
            Injection::LostUpdate => "lost-update",
            Injection::WriteSkew => "G2-item",
            Injection::StaleRead => "G-single-item-realtime",
            Injection::AbortedRead => "G1a",
        }
    }
}

/// Plants `which` on fresh keys and fresh processes, at a random point of the history.
///
/// Panics if the history has more than 2^27 events (a programming error in a test or bench).
pub fn inject(log: &mut TxnLog, workload: Workload, which: Injection, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Make room: every existing position is multiplied by 32, leaving gaps for the new events.
    let mut max_pos = 0u32;
    let mut max_proc = 0u64;
    let room = |p: u32| {
        p.checked_mul(32)
            .filter(|&q| q != NO_POS)
            .expect("history too long to inject into (positions must stay below 2^27)")
    };
    for t in &mut log.txns {
        t.invoke_pos = room(t.invoke_pos);
        if t.complete_pos != NO_POS {
            t.complete_pos = room(t.complete_pos);
            max_pos = max_pos.max(t.complete_pos);
        }
        max_pos = max_pos.max(t.invoke_pos);
        t.index = if t.complete_pos == NO_POS {
            t.invoke_pos as u64
        } else {
            t.complete_pos as u64
        };
        max_proc = max_proc.max(t.process);
    }
    let base = rng.gen_range(0..=max_pos / 32) * 32 + 1;
    let mut b = LogBuilder {
        log: std::mem::take(log),
    };
    let tag = format!("{which:?}-{seed}");
    let k1 = b.log.intern_key(&Value::Str(format!("{tag}-a")));
    let k2 = b.log.intern_key(&Value::Str(format!("{tag}-b")));
    let list = workload == Workload::ListAppend;
    let p = |i: u64| max_proc + 1 + i;
    // Each transaction: (process, outcome, invoke offset, complete offset, micro-ops).
    type MopFn = Box<dyn Fn(&mut LogBuilder)>;
    let write = move |k: u32, v: i64| -> MopFn {
        Box::new(move |b: &mut LogBuilder| if list { b.append(k, v) } else { b.write(k, v) })
    };
    // A read of key k seeing the list `l` (list-append) or its last element (register).
    let read = move |k: u32, l: Vec<i64>| -> MopFn {
        Box::new(move |b: &mut LogBuilder| {
            if list {
                b.read_list(k, Some(&l))
            } else {
                b.read_register(k, Some(l.last().copied()))
            }
        })
    };
    let plan: Vec<(u64, Outcome, u32, u32, Vec<MopFn>)> = match which {
        Injection::LostUpdate => vec![
            (p(0), Outcome::Ok, 0, 1, vec![write(k1, 1)]),
            (
                p(1),
                Outcome::Ok,
                2,
                4,
                vec![read(k1, vec![1]), write(k1, 2)],
            ),
            (
                p(2),
                Outcome::Ok,
                3,
                5,
                vec![read(k1, vec![1]), write(k1, 3)],
            ),
            (p(3), Outcome::Ok, 6, 7, vec![read(k1, vec![1, 2, 3])]),
        ],
        Injection::WriteSkew => vec![
            (
                p(0),
                Outcome::Ok,
                0,
                2,
                vec![read(k1, vec![]), read(k2, vec![]), write(k1, 1)],
            ),
            (
                p(1),
                Outcome::Ok,
                1,
                3,
                vec![read(k1, vec![]), read(k2, vec![]), write(k2, 1)],
            ),
            (
                p(2),
                Outcome::Ok,
                4,
                5,
                vec![read(k1, vec![1]), read(k2, vec![1])],
            ),
        ],
        Injection::StaleRead => vec![
            (p(0), Outcome::Ok, 0, 1, vec![write(k1, 1)]),
            (p(1), Outcome::Ok, 2, 3, vec![read(k1, vec![])]),
        ],
        Injection::AbortedRead => vec![
            (p(0), Outcome::Fail, 0, 1, vec![write(k1, 1)]),
            (p(1), Outcome::Ok, 2, 3, vec![read(k1, vec![1])]),
        ],
    };
    for (process, outcome, inv, comp, mops) in plan {
        let start = b.begin();
        for m in &mops {
            m(&mut b);
        }
        if outcome == Outcome::Fail {
            // A failed transaction's reads are unknown; only its writes matter.
            for m in &mut b.log.mops[start as usize..] {
                if m.kind == super::log::MopKind::Read {
                    m.known = false;
                }
            }
        }
        b.finish(start, process, outcome, base + inv, base + comp);
    }
    *log = b.log;
    compact_positions(log);
    sort_by_invocation(log);
}

/// Renumbers event positions 0, 1, 2, ... keeping their order, so that repeated injections
/// do not grow them.
fn compact_positions(log: &mut TxnLog) {
    let mut all: Vec<u32> = Vec::with_capacity(log.txns.len() * 2);
    for t in &log.txns {
        all.push(t.invoke_pos);
        if t.complete_pos != NO_POS {
            all.push(t.complete_pos);
        }
    }
    all.sort_unstable();
    let rank = |p: u32| all.binary_search(&p).unwrap_or(0) as u32;
    for t in &mut log.txns {
        t.invoke_pos = rank(t.invoke_pos);
        if t.complete_pos != NO_POS {
            t.complete_pos = rank(t.complete_pos);
        }
        t.index = if t.complete_pos == NO_POS {
            t.invoke_pos as u64
        } else {
            t.complete_pos as u64
        };
    }
}
