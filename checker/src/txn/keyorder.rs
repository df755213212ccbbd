//! Version orders from what the database promises per key, as Elle's `linearizable-keys?` and
//! `sequential-keys?` options: if every key is linearizable, a write whose transaction
//! completed before another's began comes first; if every key is sequentially consistent, so
//! does one that came earlier on the same process. Each such order a < b gives a -ww-> b, and
//! every reader of a's version precedes b (-rw->). These are assumptions the user states: the
//! edges count as data edges, and cycles through them as the plain anomaly classes, as in Elle.

use super::infer::{Edge, RW, WW};
use super::log::{Elem, MopKind, TxnLog, NO_POS};
use crate::history::Outcome;
use rustc_hash::FxHashMap;

/// At most this many edges are added (the pairs are quadratic per key); the rest of the
/// knowledge is dropped, which only loses precision, and a note says so.
const MAX_EDGES: usize = 8_000_000;

/// Adds the edges; returns a note if the edge bound cut the inference short.
pub(crate) fn add_edges(
    log: &TxnLog,
    linearizable: bool,
    sequential: bool,
    edges: &mut Vec<Edge>,
) -> Option<String> {
    if !linearizable && !sequential {
        return None;
    }
    // Per key, final writes of transactions that may have committed: (txn, value).
    let mut writers: Vec<Vec<(u32, Elem)>> = vec![Vec::new(); log.key_count()];
    for (t, tx) in log.txns.iter().enumerate() {
        if tx.outcome == Outcome::Fail {
            continue;
        }
        let mops = log.mops_of(t);
        for (i, m) in mops.iter().enumerate() {
            if m.kind == MopKind::Write
                && !mops[i + 1..]
                    .iter()
                    .any(|n| n.kind == MopKind::Write && n.key == m.key)
            {
                writers[m.key as usize].push((t as u32, m.value));
            }
        }
    }
    // Readers of each version (external reads of ok transactions).
    let mut readers: FxHashMap<(u32, Elem), Vec<u32>> = FxHashMap::default();
    for (t, tx) in log.txns.iter().enumerate() {
        if tx.outcome != Outcome::Ok {
            continue;
        }
        let mops = log.mops_of(t);
        for (i, m) in mops.iter().enumerate() {
            if m.kind == MopKind::Read && m.known && !mops[..i].iter().any(|n| n.key == m.key) {
                readers.entry((m.key, m.value)).or_default().push(t as u32);
            }
        }
    }
    let precedes = |a: u32, b: u32| -> bool {
        let (ta, tb) = (&log.txns[a as usize], &log.txns[b as usize]);
        // Only a completed (ok) transaction is known to have taken effect before its end.
        ta.outcome == Outcome::Ok
            && ta.complete_pos != NO_POS
            && ta.complete_pos < tb.invoke_pos
            && (linearizable || ta.process == tb.process)
    };
    let start = edges.len();
    for (k, ws) in writers.iter().enumerate() {
        for &(a, va) in ws {
            for &(b, _) in ws {
                if a == b || !precedes(a, b) {
                    continue;
                }
                if edges.len() - start >= MAX_EDGES {
                    return Some(format!(
                        "version orders from {} order stopped at {MAX_EDGES} edges",
                        if linearizable { "real-time" } else { "process" }
                    ));
                }
                edges.push(Edge {
                    from: a,
                    to: b,
                    kind: WW,
                });
                for &r in readers.get(&(k as u32, va)).map_or(&[][..], |v| v) {
                    if r != b {
                        edges.push(Edge {
                            from: r,
                            to: b,
                            kind: RW,
                        });
                    }
                }
            }
        }
    }
    None
}
