//! Inference: from the transactions to version orders, dependency edges and the anomalies that
//! show without a graph.

use super::explain::{show_list, show_value, txn_ref};
use super::log::{Elem, MopKind, TxnLog, NIL, NO_POS};
use super::{Anomaly, Found};
use crate::error::HistoryError;
use crate::history::Outcome;
use rustc_hash::{FxHashMap, FxHashSet};

pub(crate) const WW: u8 = 1;
pub(crate) const WR: u8 = 2;
pub(crate) const RW: u8 = 4;
pub(crate) const PROCESS: u8 = 8;
pub(crate) const REALTIME: u8 = 16;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Edge {
    pub from: u32,
    pub to: u32,
    pub kind: u8,
}

/// Who wrote a value: the transaction, the value's position in the key's version order
/// (`NO_POS` if never observed / not ordered) and whether it was overwritten by the same
/// transaction (an intermediate write).
#[derive(Clone, Copy, Debug)]
pub(crate) struct WInfo {
    pub txn: u32,
    pub pos: u32,
    /// The micro-op's index in `TxnLog::mops`.
    pub mop: u32,
    pub intermediate: bool,
}

const NO_WRITER: WInfo = WInfo {
    txn: u32::MAX,
    pos: NO_POS,
    mop: u32::MAX,
    intermediate: false,
};

pub(crate) enum Index {
    List {
        /// Per key, the version order: the distinct elements of the longest read.
        order: Vec<Vec<Elem>>,
        writes: FxHashMap<(u32, Elem), WInfo>,
    },
    Register {
        writes: FxHashMap<(u32, Elem), WInfo>,
    },
}

pub(crate) struct Inferred {
    pub edges: Vec<Edge>,
    pub index: Index,
}

/// An error about the transaction at event position `pos`; `read::locate_event` (in the CLI)
/// turns the position into the file's line.
fn model_err(pos: u64, msg: String) -> HistoryError {
    HistoryError::Invalid {
        line: None,
        index: pos as usize,
        message: msg,
    }
}

/// Records micro-op `i` of txn `t` (an append or a write) as the writer of its value; a later
/// write of an element of the same kind to the same key in `t` makes it intermediate. Values
/// must be unique per key: that is what lets a read name its writer.
fn index_write(
    log: &TxnLog,
    writes: &mut FxHashMap<(u32, Elem), WInfo>,
    t: usize,
    i: usize,
    verb: &str,
    workload: &str,
) -> Result<(), HistoryError> {
    let tx = &log.txns[t];
    let mops = log.mops_of(t);
    let m = &mops[i];
    let intermediate = mops[i + 1..]
        .iter()
        .any(|n| n.kind == m.kind && n.key == m.key);
    let info = WInfo {
        txn: t as u32,
        pos: NO_POS,
        mop: tx.mop_start + i as u32,
        intermediate,
    };
    if let Some(prev) = writes.insert((m.key, m.value), info) {
        return Err(model_err(
            tx.index,
            format!(
            "value {} {verb} key {} twice (history indices {} and {}); {workload} needs unique \
             values per key",
            log.decode(m.value),
            log.key_value(m.key),
            log.txns[prev.txn as usize].index,
            tx.index
        ),
        ));
    }
    Ok(())
}

fn anomaly(
    kind: &str,
    txns: Vec<super::TxnRef>,
    key: Option<crate::Value>,
    text: String,
) -> Anomaly {
    Anomaly {
        kind: kind.to_string(),
        txns,
        steps: Vec::new(),
        key,
        explanation: text,
        svg: None,
    }
}

/// List-append inference, as Elle's `elle.list-append`: the longest read of each key is its
/// version order (every other read must be a prefix of it); an append never read still comes
/// after the last element that was read.
pub(crate) fn list_append(log: &TxnLog, found: &mut Found) -> Result<Inferred, HistoryError> {
    let nk = log.key_count();
    let txns = &log.txns;
    let mut writes: FxHashMap<(u32, Elem), WInfo> =
        FxHashMap::with_capacity_and_hasher(log.mops.len() / 2 + 1, Default::default());
    let mut appends_per_key: Vec<u32> = vec![0; nk];
    let mut single_append: Vec<Elem> = vec![NIL; nk];
    // Longest ok read per key: (txn, start, len) into the element arena.
    let mut longest: Vec<(u32, u32, u32)> = vec![(u32::MAX, 0, 0); nk];

    for (t, tx) in txns.iter().enumerate() {
        let mops = log.mops_of(t);
        for (i, m) in mops.iter().enumerate() {
            match m.kind {
                MopKind::Write => {
                    return Err(model_err(
                        tx.index,
                        format!(
                            "history index {}: micro-op [w ..] in a list-append history \
                         (check it as rw-register)",
                            tx.index
                        ),
                    ))
                }
                MopKind::Append => {
                    index_write(log, &mut writes, t, i, "appended to", "list-append")?;
                    if tx.outcome != Outcome::Fail {
                        appends_per_key[m.key as usize] += 1;
                        single_append[m.key as usize] = m.value;
                    }
                }
                MopKind::Read => {
                    if tx.outcome == Outcome::Ok && m.known && m.read_len != u32::MAX {
                        let l = &mut longest[m.key as usize];
                        if m.read_len > l.2 || l.0 == u32::MAX {
                            *l = (t as u32, m.read_start, m.read_len);
                        }
                    } else if tx.outcome == Outcome::Ok && m.known && m.value != NIL {
                        return Err(model_err(
                            tx.index,
                            format!(
                            "history index {}: list-append read of key {} returned {}, not a list",
                            tx.index,
                            log.key_value(m.key),
                            log.decode(m.value)
                        ),
                        ));
                    }
                }
            }
        }
    }

    // Version orders, duplicates, garbage.
    let mut order: Vec<Vec<Elem>> = vec![Vec::new(); nk];
    // Who wrote each element of the order, and each append's position in it: the passes below
    // then need no hash lookups for reads that are prefixes of the order (all of them, in a
    // good history) nor for appends.
    let mut order_w: Vec<Vec<WInfo>> = vec![Vec::new(); nk];
    let mut append_pos: Vec<u32> = vec![NO_POS; log.mops.len()];
    let mut fail_pos: Vec<u32> = vec![NO_POS; nk];
    for k in 0..nk {
        let (lt, ls, ll) = longest[k];
        if lt == u32::MAX || ll == 0 {
            if appends_per_key[k] == 1 {
                order[k].push(single_append[k]);
            }
        } else {
            let read = &log.elems[ls as usize..(ls + ll) as usize];
            let mut seen = FxHashSet::with_capacity_and_hasher(read.len(), Default::default());
            let mut dups = Vec::new();
            for &e in read {
                if seen.insert(e) {
                    order[k].push(e);
                } else {
                    dups.push(e);
                }
            }
            if !dups.is_empty() {
                found.add("duplicate-elements", || {
                    anomaly(
                        "duplicate-elements",
                        vec![txn_ref(log, lt as usize, "T1")],
                        Some(log.key_value(k as u32).clone()),
                        format!(
                            "T1 read key {} = {}, which contains {} more than once; each value \
                             is appended only once",
                            log.key_value(k as u32),
                            show_list(log, read),
                            show_list(log, &dups)
                        ),
                    )
                });
            }
        }
        order_w[k].reserve_exact(order[k].len());
        for (p, &e) in order[k].iter().enumerate() {
            match writes.get_mut(&(k as u32, e)) {
                Some(w) => {
                    w.pos = p as u32;
                    append_pos[w.mop as usize] = p as u32;
                    order_w[k].push(*w);
                    if txns[w.txn as usize].outcome == Outcome::Fail && fail_pos[k] == NO_POS {
                        fail_pos[k] = p as u32;
                    }
                }
                None => {
                    order_w[k].push(NO_WRITER);
                    found.add("garbage-read", || {
                        anomaly(
                            "garbage-read",
                            vec![txn_ref(log, lt as usize, "T1")],
                            Some(log.key_value(k as u32).clone()),
                            format!(
                                "T1 read key {} = {}, but no transaction appended {}",
                                log.key_value(k as u32),
                                show_list(log, &order[k]),
                                show_value(log, e)
                            ),
                        )
                    });
                }
            }
        }
        if fail_pos[k] != NO_POS {
            // A committed append after an aborted one in the version order: the committed
            // transaction built on state that never existed.
            let fp = fail_pos[k] as usize;
            let later_ok = order[k][fp + 1..].iter().find_map(|e| {
                writes
                    .get(&(k as u32, *e))
                    .filter(|w| txns[w.txn as usize].outcome == Outcome::Ok)
                    .map(|w| (w.txn, *e))
            });
            if let Some((okt, e)) = later_ok {
                let ft = writes[&(k as u32, order[k][fp])].txn;
                found.add("dirty-update", || {
                    anomaly(
                        "dirty-update",
                        vec![
                            txn_ref(log, ft as usize, "T1"),
                            txn_ref(log, okt as usize, "T2"),
                        ],
                        Some(log.key_value(k as u32).clone()),
                        format!(
                            "T1 failed, yet its append of {} to key {} is followed in the \
                             version order by T2's committed append of {}",
                            show_value(log, order[k][fp]),
                            log.key_value(k as u32),
                            show_value(log, e)
                        ),
                    )
                });
            }
        }
    }

    // In generated histories about 2.3 edges per micro-op; reserving enough up front avoids a
    // doubling copy of the largest vector.
    let mut edges: Vec<Edge> = Vec::with_capacity(log.mops.len() * 5 / 2);
    // (key << 32 | version, txn): version v is the state after v elements; 0 is the empty list.
    let mut reads_at: Vec<(u64, u32)> = Vec::with_capacity(log.mops.len() / 2);
    let mut appends_after: Vec<(u64, u32)> = Vec::with_capacity(log.mops.len() / 2);
    let mut lost: Vec<(u32, Elem, u32)> = Vec::new();
    let mut incompatible_keys: FxHashSet<u32> = FxHashSet::default();

    for (t, tx) in txns.iter().enumerate() {
        if tx.outcome == Outcome::Fail {
            continue;
        }
        let mops = log.mops_of(t);
        for (i, m) in mops.iter().enumerate() {
            let k = m.key as usize;
            match m.kind {
                MopKind::Read if tx.outcome == Outcome::Ok && m.known => {
                    let read: &[Elem] = if m.read_len == u32::MAX {
                        &[]
                    } else {
                        log.read_elems(m)
                    };
                    let prefix = read.len() <= order[k].len() && order[k][..read.len()] == *read;
                    if !prefix {
                        check_incompatible(
                            log,
                            found,
                            t,
                            k,
                            read,
                            &order,
                            &mut incompatible_keys,
                            &writes,
                        );
                    } else if fail_pos[k] != NO_POS && read.len() > fail_pos[k] as usize {
                        let e = order[k][fail_pos[k] as usize];
                        aborted_read(log, found, t, k, read, e, writes[&(k as u32, e)].txn);
                    }
                    // Lost update: reads k before appending to it, first read of k only.
                    if !mops[..i].iter().any(|n| n.key == m.key)
                        && mops[i + 1..]
                            .iter()
                            .any(|n| n.key == m.key && n.kind == MopKind::Append)
                    {
                        lost.push((m.key, read.last().copied().unwrap_or(NIL), t as u32));
                    }
                    let Some(&last) = read.last() else {
                        reads_at.push(((k as u64) << 32, t as u32));
                        continue;
                    };
                    let w = if prefix {
                        Some(order_w[k][read.len() - 1]).filter(|w| w.txn != u32::MAX)
                    } else {
                        writes.get(&(m.key, last)).copied()
                    };
                    if let Some(w) = w {
                        let wt = w.txn as usize;
                        if wt != t {
                            if w.intermediate {
                                found.add("G1b", || {
                                    anomaly(
                                        "G1b",
                                        vec![txn_ref(log, t, "T1"), txn_ref(log, wt, "T2")],
                                        Some(log.key_value(m.key).clone()),
                                        format!(
                                            "T1 read key {} = {}, ending in {}, an intermediate \
                                             append of T2 (T2 appended to {} again afterwards)",
                                            log.key_value(m.key),
                                            show_list(log, read),
                                            show_value(log, last),
                                            log.key_value(m.key)
                                        ),
                                    )
                                });
                            }
                            if txns[wt].outcome != Outcome::Fail {
                                edges.push(Edge {
                                    from: wt as u32,
                                    to: t as u32,
                                    kind: WR,
                                });
                            }
                        }
                        if w.pos != NO_POS {
                            reads_at.push((((k as u64) << 32) | (w.pos as u64 + 1), t as u32));
                        }
                    }
                }
                MopKind::Append => {
                    let p = append_pos[(tx.mop_start as usize) + i];
                    let before = if p != NO_POS {
                        p as usize
                    } else {
                        order[k].len()
                    };
                    if before > 0 {
                        let pw = order_w[k][before - 1];
                        if pw.txn != u32::MAX
                            && pw.txn as usize != t
                            && txns[pw.txn as usize].outcome != Outcome::Fail
                        {
                            edges.push(Edge {
                                from: pw.txn,
                                to: t as u32,
                                kind: WW,
                            });
                        }
                    }
                    appends_after.push((((k as u64) << 32) | before as u64, t as u32));
                }
                _ => {}
            }
        }
        if tx.outcome == Outcome::Ok && has_repeated_key(mops) {
            internal_list(log, found, t);
        }
    }

    join_rw(&mut reads_at, &mut appends_after, &mut edges);
    lost_updates(log, found, &mut lost, |log, k, v| {
        if v == NIL {
            "[]".to_string()
        } else {
            let p = writes.get(&(k, v)).map(|w| w.pos).unwrap_or(NO_POS);
            if p == NO_POS {
                format!("[.. {}]", show_value(log, v))
            } else {
                show_list(log, &order[k as usize][..=p as usize])
            }
        }
    });

    Ok(Inferred {
        edges,
        index: Index::List { order, writes },
    })
}

#[allow(clippy::too_many_arguments)]
fn check_incompatible(
    log: &TxnLog,
    found: &mut Found,
    t: usize,
    k: usize,
    read: &[Elem],
    order: &[Vec<Elem>],
    seen_keys: &mut FxHashSet<u32>,
    writes: &FxHashMap<(u32, Elem), WInfo>,
) {
    if seen_keys.insert(k as u32) {
        found.add("incompatible-order", || {
            anomaly(
                "incompatible-order",
                vec![txn_ref(log, t, "T1")],
                Some(log.key_value(k as u32).clone()),
                format!(
                    "T1 read key {} = {}, which is not a prefix of the longest read of it, {}: \
                     no single order of appends explains both",
                    log.key_value(k as u32),
                    show_list(log, read),
                    show_list(log, &order[k])
                ),
            )
        });
    }
    // A read outside the order may still show duplicates or aborted elements.
    let mut seen = FxHashSet::default();
    if read.iter().any(|e| !seen.insert(*e)) {
        found.add("duplicate-elements", || {
            anomaly(
                "duplicate-elements",
                vec![txn_ref(log, t, "T1")],
                Some(log.key_value(k as u32).clone()),
                format!(
                    "T1 read key {} = {}, which contains an element more than once",
                    log.key_value(k as u32),
                    show_list(log, read)
                ),
            )
        });
    }
    for &e in read {
        if let Some(w) = writes.get(&(k as u32, e)) {
            if log.txns[w.txn as usize].outcome == Outcome::Fail {
                aborted_read(log, found, t, k, read, e, w.txn);
                break;
            }
        }
    }
}

fn aborted_read(
    log: &TxnLog,
    found: &mut Found,
    t: usize,
    k: usize,
    read: &[Elem],
    e: Elem,
    w: u32,
) {
    found.add("G1a", || {
        anomaly(
            "G1a",
            vec![txn_ref(log, t, "T1"), txn_ref(log, w as usize, "T2")],
            Some(log.key_value(k as u32).clone()),
            format!(
                "T1 read key {} = {}, which includes {}, appended by T2, a transaction that \
                 failed (aborted read)",
                log.key_value(k as u32),
                show_list(log, read),
                show_value(log, e)
            ),
        )
    });
}

fn has_repeated_key(mops: &[super::log::Mop]) -> bool {
    mops.len() > 1
        && mops
            .iter()
            .enumerate()
            .any(|(i, m)| mops[i + 1..].iter().any(|n| n.key == m.key))
}

/// Internal consistency and future reads within one list-append transaction: a read must show
/// this transaction's own earlier appends at its end (and equal an earlier read plus them).
fn internal_list(log: &TxnLog, found: &mut Found, t: usize) {
    let mops = log.mops_of(t);
    // key -> (known prefix?, expected elements)
    let mut state: Vec<(u32, bool, Vec<Elem>)> = Vec::new();
    for (i, m) in mops.iter().enumerate() {
        let slot = state.iter().position(|s| s.0 == m.key);
        match m.kind {
            MopKind::Append => match slot {
                Some(s) => state[s].2.push(m.value),
                None => state.push((m.key, false, vec![m.value])),
            },
            MopKind::Read if m.known => {
                let read: &[Elem] = if m.read_len == u32::MAX {
                    &[]
                } else {
                    log.read_elems(m)
                };
                // Future read: the read shows a value this transaction appends only later.
                if let Some(later) = mops[i + 1..].iter().find(|n| {
                    n.kind == MopKind::Append && n.key == m.key && read.contains(&n.value)
                }) {
                    found.add("future-read", || {
                        anomaly(
                            "future-read",
                            vec![txn_ref(log, t, "T1")],
                            Some(log.key_value(m.key).clone()),
                            format!(
                                "T1 read key {} = {}, which includes {}, a value T1 itself \
                                 appends only later",
                                log.key_value(m.key),
                                show_list(log, read),
                                show_value(log, later.value)
                            ),
                        )
                    });
                }
                if let Some(s) = slot {
                    let (_, known, expected) = &state[s];
                    let bad = if *known {
                        read != expected.as_slice()
                    } else {
                        !read.ends_with(expected)
                    };
                    if bad {
                        let shown = if *known {
                            show_list(log, expected)
                        } else {
                            format!("[.. {}]", show_list(log, expected).trim_matches(['[', ']']))
                        };
                        found.add("internal", || {
                            anomaly(
                                "internal",
                                vec![txn_ref(log, t, "T1")],
                                Some(log.key_value(m.key).clone()),
                                format!(
                                    "T1 read key {} = {}, but its own earlier reads and appends \
                                     say it must be {}",
                                    log.key_value(m.key),
                                    show_list(log, read),
                                    shown
                                ),
                            )
                        });
                    }
                    state[s] = (m.key, true, read.to_vec());
                } else {
                    state.push((m.key, true, read.to_vec()));
                }
            }
            _ => {}
        }
    }
}

/// Read-write anti-dependencies: every transaction that read version v of a key precedes every
/// transaction whose write created the version after v. Both lists hold (key, version) pairs;
/// a sort and merge joins them without a hash map.
fn join_rw<K: Ord + Copy>(reads: &mut [(K, u32)], writes: &mut [(K, u32)], edges: &mut Vec<Edge>) {
    reads.sort_unstable();
    writes.sort_unstable();
    let (mut i, mut j) = (0, 0);
    while i < reads.len() && j < writes.len() {
        let (rk, wk) = (reads[i].0, writes[j].0);
        if rk < wk {
            i += 1;
        } else if wk < rk {
            j += 1;
        } else {
            let ie = i + reads[i..].iter().take_while(|r| r.0 == rk).count();
            let je = j + writes[j..].iter().take_while(|w| w.0 == rk).count();
            for r in &reads[i..ie] {
                for w in &writes[j..je] {
                    if r.1 != w.1 {
                        edges.push(Edge {
                            from: r.1,
                            to: w.1,
                            kind: RW,
                        });
                    }
                }
            }
            i = ie;
            j = je;
        }
    }
}

/// Lost update: two committed transactions read the same version of a key and both wrote it.
fn lost_updates(
    log: &TxnLog,
    found: &mut Found,
    lost: &mut [(u32, Elem, u32)],
    show_version: impl Fn(&TxnLog, u32, Elem) -> String,
) {
    lost.sort_unstable();
    let mut i = 0;
    while i < lost.len() {
        let (k, v, _) = lost[i];
        let n = lost[i..]
            .iter()
            .take_while(|x| x.0 == k && x.1 == v)
            .count();
        if n >= 2 {
            let group: Vec<u32> = lost[i..i + n].iter().map(|x| x.2).collect();
            found.add("lost-update", || {
                let refs: Vec<_> = group
                    .iter()
                    .enumerate()
                    .map(|(j, &t)| txn_ref(log, t as usize, &format!("T{}", j + 1)))
                    .collect();
                let names: Vec<String> = refs.iter().map(|r| r.name.clone()).collect();
                let names = match names.split_last() {
                    Some((last, rest)) if rest.len() == 1 => format!("{} and {last} both", rest[0]),
                    Some((last, rest)) => format!("{} and {last} all", rest.join(", ")),
                    None => String::new(),
                };
                anomaly(
                    "lost-update",
                    refs,
                    Some(log.key_value(k).clone()),
                    format!(
                        "{names} read key {} = {} and then wrote it: in any serial order only \
                         one of them could have read that version",
                        log.key_value(k),
                        show_version(log, k, v)
                    ),
                )
            });
        }
        i += n;
    }
}

/// Read-write register inference, as Elle's `elle.rw-register` with its default knowledge:
/// the initial state nil precedes every written version, and a transaction that read version
/// v1 of a key and then wrote v2 orders v1 before v2 (writes follow reads). Values written to a
/// key must be unique.
pub(crate) fn rw_register(log: &TxnLog, found: &mut Found) -> Result<Inferred, HistoryError> {
    let txns = &log.txns;
    let mut writes: FxHashMap<(u32, Elem), WInfo> =
        FxHashMap::with_capacity_and_hasher(log.mops.len() / 2 + 1, Default::default());
    for (t, tx) in txns.iter().enumerate() {
        let mops = log.mops_of(t);
        for (i, m) in mops.iter().enumerate() {
            match m.kind {
                MopKind::Append => {
                    return Err(model_err(
                        tx.index,
                        format!(
                            "history index {}: micro-op [append ..] in an rw-register history \
                         (check it as list-append)",
                            tx.index
                        ),
                    ))
                }
                MopKind::Read if m.read_len != u32::MAX => {
                    return Err(model_err(
                        tx.index,
                        format!(
                            "history index {}: register read of key {} returned a list",
                            tx.index,
                            log.key_value(m.key)
                        ),
                    ))
                }
                MopKind::Write => {
                    if m.value == NIL {
                        return Err(model_err(
                            tx.index,
                            format!(
                            "history index {}: write of nil to key {}; nil is the initial state",
                            tx.index,
                            log.key_value(m.key)
                        ),
                        ));
                    }
                    index_write(log, &mut writes, t, i, "written to", "rw-register")?;
                }
                MopKind::Read => {}
            }
        }
    }

    let mut edges = Vec::new();
    // External reads (key, value) -> reader, and version successions (key, v1) -> writer of a
    // later version.
    let mut ext_reads: Vec<((u32, Elem), u32)> = Vec::new();
    let mut succ: Vec<((u32, Elem), u32)> = Vec::new();
    let mut lost: Vec<(u32, Elem, u32)> = Vec::new();
    for (t, tx) in txns.iter().enumerate() {
        if tx.outcome == Outcome::Fail {
            continue;
        }
        let mops = log.mops_of(t);
        // key -> (last value seen or written, external read if any, wrote?)
        let mut state: Vec<(u32, Elem, Option<Elem>, bool)> = Vec::new();
        for (i, m) in mops.iter().enumerate() {
            let slot = state.iter().position(|s| s.0 == m.key);
            match m.kind {
                MopKind::Write => match slot {
                    Some(s) => {
                        state[s].1 = m.value;
                        state[s].3 = true;
                    }
                    None => state.push((m.key, m.value, None, true)),
                },
                MopKind::Read if m.known && tx.outcome == Outcome::Ok => {
                    if let Some(s) = slot {
                        let expected = state[s].1;
                        if m.value != expected {
                            found.add("internal", || {
                                anomaly(
                                    "internal",
                                    vec![txn_ref(log, t, "T1")],
                                    Some(log.key_value(m.key).clone()),
                                    format!(
                                        "T1 read key {} = {}, but its own earlier read or write \
                                         says it must be {}",
                                        log.key_value(m.key),
                                        show_value(log, m.value),
                                        show_value(log, expected)
                                    ),
                                )
                            });
                        }
                        state[s].1 = m.value;
                        continue;
                    }
                    state.push((m.key, m.value, Some(m.value), false));
                    ext_reads.push(((m.key, m.value), t as u32));
                    if m.value == NIL {
                        continue;
                    }
                    match writes.get(&(m.key, m.value)) {
                        None => found.add("garbage-read", || {
                            anomaly(
                                "garbage-read",
                                vec![txn_ref(log, t, "T1")],
                                Some(log.key_value(m.key).clone()),
                                format!(
                                    "T1 read key {} = {}, a value no transaction wrote",
                                    log.key_value(m.key),
                                    show_value(log, m.value)
                                ),
                            )
                        }),
                        Some(w) if w.txn as usize == t => {
                            let later = mops[i + 1..].iter().any(|n| n.kind == MopKind::Write);
                            if later {
                                found.add("future-read", || {
                                    anomaly(
                                        "future-read",
                                        vec![txn_ref(log, t, "T1")],
                                        Some(log.key_value(m.key).clone()),
                                        format!(
                                            "T1 read key {} = {}, a value T1 itself writes only \
                                             later",
                                            log.key_value(m.key),
                                            show_value(log, m.value)
                                        ),
                                    )
                                });
                            }
                        }
                        Some(w) => {
                            let wt = w.txn as usize;
                            let text_key = log.key_value(m.key).clone();
                            if txns[wt].outcome == Outcome::Fail {
                                found.add("G1a", || {
                                    anomaly(
                                        "G1a",
                                        vec![txn_ref(log, t, "T1"), txn_ref(log, wt, "T2")],
                                        Some(text_key.clone()),
                                        format!(
                                            "T1 read key {} = {}, written by T2, a transaction \
                                             that failed (aborted read)",
                                            text_key,
                                            show_value(log, m.value)
                                        ),
                                    )
                                });
                            } else {
                                if w.intermediate {
                                    found.add("G1b", || {
                                        anomaly(
                                            "G1b",
                                            vec![txn_ref(log, t, "T1"), txn_ref(log, wt, "T2")],
                                            Some(text_key.clone()),
                                            format!(
                                                "T1 read key {} = {}, an intermediate write of \
                                                 T2 (T2 wrote {} again afterwards)",
                                                text_key,
                                                show_value(log, m.value),
                                                text_key
                                            ),
                                        )
                                    });
                                }
                                edges.push(Edge {
                                    from: wt as u32,
                                    to: t as u32,
                                    kind: WR,
                                });
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        for &(k, last, ext, wrote) in &state {
            if !wrote {
                continue;
            }
            // The final write of k: nil came before it, and so did what this txn read of k.
            succ.push(((k, NIL), t as u32));
            if let Some(r) = ext {
                if r != NIL {
                    succ.push(((k, r), t as u32));
                    if let Some(w) = writes.get(&(k, r)) {
                        if w.txn as usize != t && txns[w.txn as usize].outcome != Outcome::Fail {
                            edges.push(Edge {
                                from: w.txn,
                                to: t as u32,
                                kind: WW,
                            });
                        }
                    }
                }
                lost.push((k, r, t as u32));
            }
            let _ = last;
        }
    }
    // Join readers of each version with the writers that succeed it.
    succ.sort_unstable();
    succ.dedup();
    join_rw(&mut ext_reads, &mut succ, &mut edges);
    lost_updates(log, found, &mut lost, |log, _, v| show_value(log, v));
    Ok(Inferred {
        edges,
        index: Index::Register { writes },
    })
}
