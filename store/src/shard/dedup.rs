//! A shard's exactly-once table, bounded in bytes.
//!
//! It keeps each client's latest transaction (`seq`) and its reply. Past the byte bound the
//! oldest entries (by when they were recorded) are evicted. An evicted client's retry must not
//! run again (a double apply), and the table cannot remember every evicted client either, so
//! it keeps a fixed array of *eviction floors*: bucket `client % EVICTED_BUCKETS` holds the
//! highest `seq` of any client evicted from that bucket. A request from a client without an
//! entry whose `seq` is at or below its bucket's floor may be a retry of an evicted
//! transaction: it gets [`Lookup::Evicted`] (HTTP 504, outcome unknown) and is not run. A
//! `seq` above the floor is new work (a client's seqs only grow), so it runs. The price of
//! the fixed array: a new client sharing a bucket with an evicted one must use a `seq` above
//! that floor (the answer names it). The table is part of the shard's replicated state and
//! moves with it, so every replica evicts the same entries.

use super::{AbortReason, ClientId, OpResult, TxnReply};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Buckets of the eviction floors (8 KiB per shard once anything was evicted).
pub const EVICTED_BUCKETS: usize = 1024;

/// Bytes an entry costs besides its reply: client, seq, stamp, and the age index.
const ENTRY_OVERHEAD_BYTES: usize = 40;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    seq: u64,
    reply: TxnReply,
    /// When it was recorded (the key of `by_age`).
    stamp: u64,
    bytes: usize,
}

/// What the table says about a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Not seen: run it.
    New,
    /// The client's latest transaction: answer with its recorded reply.
    Recorded(TxnReply),
    /// Older than the client's latest: its outcome is no longer recorded.
    Stale,
    /// The client's entry may have been evicted with this very transaction: outcome unknown;
    /// a new transaction of this client must use a seq above `floor`.
    Evicted { floor: u64 },
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupTable {
    entries: BTreeMap<ClientId, Entry>,
    by_age: BTreeMap<u64, ClientId>,
    next_stamp: u64,
    bytes: usize,
    /// Empty until the first eviction, then `EVICTED_BUCKETS` floors.
    evicted: Vec<u64>,
}

/// What a reply costs in the table: its keys and values plus a fixed part per result.
fn reply_bytes(reply: &TxnReply) -> usize {
    let results = match reply {
        TxnReply::Committed { results } => results,
        TxnReply::CompareFailed { key, .. } => return key.len() + 16,
        _ => return 16,
    };
    results
        .iter()
        .map(|r| match r {
            OpResult::Read { key, value, .. } => {
                let value_bytes = match value {
                    Some(super::Value::Str(s)) => s.len(),
                    Some(super::Value::List(l)) => l.iter().map(|s| s.len() + 8).sum(),
                    None => 0,
                };
                key.len() + value_bytes + 16
            }
            OpResult::Write { key, value } | OpResult::Append { key, value } => {
                key.len() + value.len() + 16
            }
            OpResult::IfRevision { key, .. } | OpResult::Delete { key } => key.len() + 16,
        })
        .sum::<usize>()
        + 16
}

fn bucket(client: ClientId) -> usize {
    (client % EVICTED_BUCKETS as u64) as usize
}

impl DedupTable {
    pub fn lookup(&self, client: ClientId, seq: u64) -> Lookup {
        if let Some(e) = self.entries.get(&client) {
            return match e.seq.cmp(&seq) {
                std::cmp::Ordering::Equal => Lookup::Recorded(e.reply.clone()),
                std::cmp::Ordering::Greater => Lookup::Stale,
                std::cmp::Ordering::Less => Lookup::New,
            };
        }
        match self.evicted.get(bucket(client)) {
            Some(&floor) if seq <= floor => Lookup::Evicted { floor },
            _ => Lookup::New,
        }
    }

    /// The answer the table gives a request, if any: the recorded reply, or a 504-kind
    /// refusal (`Stale`, `Evicted`); None: run it.
    pub fn answer(&self, client: ClientId, seq: u64) -> Option<TxnReply> {
        let reason = match self.lookup(client, seq) {
            Lookup::New => return None,
            Lookup::Recorded(reply) => return Some(reply),
            Lookup::Stale => AbortReason::Stale,
            Lookup::Evicted { floor } => AbortReason::Evicted { floor },
        };
        Some(TxnReply::Aborted { reason })
    }

    /// Records `client`'s transaction `seq` unless a later one is recorded (a late commit of
    /// an older transaction must not hide the newer entry), then evicts the oldest entries
    /// while the table is over `max_bytes` (0: no bound).
    pub fn record(&mut self, client: ClientId, seq: u64, reply: TxnReply, max_bytes: usize) {
        if let Some(old) = self.entries.get(&client) {
            if old.seq > seq {
                return;
            }
            let (stamp, bytes) = (old.stamp, old.bytes);
            self.by_age.remove(&stamp);
            self.bytes -= bytes;
            self.entries.remove(&client);
        }
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        let bytes = reply_bytes(&reply) + ENTRY_OVERHEAD_BYTES;
        self.entries.insert(
            client,
            Entry {
                seq,
                reply,
                stamp,
                bytes,
            },
        );
        self.by_age.insert(stamp, client);
        self.bytes += bytes;
        while max_bytes > 0 && self.bytes > max_bytes && self.evict_oldest() {}
    }

    /// Evicts every entry into the eviction floors: a retry of any transaction the table
    /// answered is then refused as unknown (`Evicted`), never run. What is left is the floors
    /// (8 KiB). Used for a handed-off shard's copy past the bound of copies kept.
    pub fn evict_all(&mut self) {
        while self.evict_oldest() {}
    }

    /// Evicts the oldest entry, raising its bucket's floor; false if there is none.
    fn evict_oldest(&mut self) -> bool {
        let Some((_, oldest)) = self.by_age.pop_first() else {
            return false;
        };
        if let Some(e) = self.entries.remove(&oldest) {
            self.bytes -= e.bytes;
            if self.evicted.is_empty() {
                self.evicted = vec![0; EVICTED_BUCKETS];
            }
            let floor = &mut self.evicted[bucket(oldest)];
            *floor = (*floor).max(e.seq);
        }
        true
    }

    /// Whether any entry was ever evicted (the floors exist).
    pub fn has_floors(&self) -> bool {
        !self.evicted.is_empty()
    }

    /// Bytes held, as counted for the bound.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed() -> TxnReply {
        TxnReply::Committed { results: vec![] }
    }

    #[test]
    fn answers_latest_stale_and_new() {
        let mut t = DedupTable::default();
        t.record(7, 3, committed(), 0);
        assert_eq!(t.lookup(7, 3), Lookup::Recorded(committed()));
        assert_eq!(t.lookup(7, 2), Lookup::Stale);
        assert_eq!(t.lookup(7, 4), Lookup::New);
        assert_eq!(t.lookup(8, 1), Lookup::New);
        // A late record of an older seq does not hide the newer one.
        let aborted = TxnReply::Aborted {
            reason: AbortReason::LockConflict,
        };
        t.record(7, 2, aborted, 0);
        assert_eq!(t.lookup(7, 3), Lookup::Recorded(committed()));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn evicts_oldest_past_the_bound_and_refuses_their_retries() {
        let mut t = DedupTable::default();
        let one = reply_bytes(&committed()) + ENTRY_OVERHEAD_BYTES;
        for client in 1..=10u64 {
            t.record(client, 5, committed(), one * 4);
            assert!(t.bytes() <= one * 4, "over the bound: {}", t.bytes());
        }
        assert_eq!(t.len(), 4);
        // The newest four are kept.
        for client in 7..=10 {
            assert_eq!(t.lookup(client, 5), Lookup::Recorded(committed()));
        }
        // The evicted: a retry (or an older seq) is refused as unknown, a newer seq runs.
        for client in 1..=6 {
            assert_eq!(t.lookup(client, 5), Lookup::Evicted { floor: 5 });
            assert_eq!(t.lookup(client, 4), Lookup::Evicted { floor: 5 });
            assert_eq!(t.lookup(client, 6), Lookup::New);
        }
        // Re-recording a client moves it to the young end.
        t.record(7, 6, committed(), one * 4);
        t.record(11, 1, committed(), one * 4);
        assert_eq!(t.lookup(7, 6), Lookup::Recorded(committed()));
        assert_eq!(t.lookup(8, 5), Lookup::Evicted { floor: 5 });
        // The bytes are the sum of what is held.
        assert_eq!(t.bytes(), one * 4);
        // Evicting everything keeps every floor: no retry it answered is run again.
        t.evict_all();
        assert!(t.is_empty());
        assert_eq!(t.bytes(), 0);
        for client in 1..=11 {
            let seq = if client == 7 {
                6
            } else if client == 11 {
                1
            } else {
                5
            };
            assert!(
                matches!(t.lookup(client, seq), Lookup::Evicted { .. }),
                "c{client} s{seq}: {:?}",
                t.lookup(client, seq)
            );
        }
        assert_eq!(t.lookup(7, 7), Lookup::New);
    }
}
