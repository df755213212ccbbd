//! A participant's memory of the transactions it has finished (committed or aborted after
//! preparing), part of a group's replicated state.
//!
//! Why: a late copy of a coordinator's `Prepare` (or `Read`) of a finished transaction must
//! be refused. Prepared anew, it would ask the coordinator for the decision, learn "commit"
//! again and apply its writes a second time (an anonymous transaction has no exactly-once
//! entry to stop it). A volatile memory is not enough: it is gone when the group's leader
//! changes or a replica restarts, and a late message can reach the new leader. So the record
//! is a function of the applied log: every replica, every new leader and every snapshot has
//! it.
//!
//! Bound: at most `max` transactions, the oldest finished evicted first (the same decision at
//! every replica, since it depends on the log only). Eviction must not reopen the door, so
//! for each coordinator group the record keeps a *floor*: the greatest [`Age`] of any evicted
//! transaction that group coordinated. A read or prepare from coordinator `c` whose age is at
//! or below `c`'s floor is refused. Sound: a late copy of an evicted transaction carries that
//! transaction's own age (a coordinator sends one age per attempt), which is at or below the
//! floor. The price is a false refusal (a definite abort, nothing applied) of a transaction
//! from `c` that started before some transaction of `c` that finished `max` transactions
//! ago: in practice only a coordinator whose clock (ages are its leader's wall-clock
//! microseconds when the request arrived) jumped back, or a transaction that was delayed for
//! as long as `max` others took to finish. A new attempt of the same id with a new age (a
//! client's retry) is not a late copy: if the transaction committed, the shards' exactly-once
//! tables refuse it; if it aborted, running it again is correct.

use super::{Age, GroupId, TxnId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// The default bound (a snapshot holds about 64 bytes per entry: 1 MiB).
pub const DEFAULT_FINISHED_MAX: usize = 16_384;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinishedTxns {
    /// Finished transactions: their coordinator and age.
    txns: BTreeMap<TxnId, (GroupId, Age)>,
    /// `txns` in the order they finished, oldest first.
    order: VecDeque<TxnId>,
    /// Per coordinator: the greatest age of an evicted transaction.
    floors: BTreeMap<GroupId, Age>,
}

impl FinishedTxns {
    /// Records that `txn` finished here, then evicts the oldest while over `max` (at least 1
    /// is kept).
    pub fn record(&mut self, txn: TxnId, coordinator: GroupId, age: Age, max: usize) {
        if self.txns.insert(txn, (coordinator, age)).is_none() {
            self.order.push_back(txn);
        }
        while self.order.len() > max.max(1) {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some((c, a)) = self.txns.remove(&old) {
                let floor = self.floors.entry(c).or_insert(a);
                *floor = (*floor).max(a);
            }
        }
    }

    /// Whether a read or prepare of `txn` with `age` from `coordinator` must be refused: the
    /// transaction finished here, or may have (at or below the coordinator's floor).
    pub fn refuses(&self, txn: TxnId, coordinator: GroupId, age: Age) -> bool {
        self.txns.contains_key(&txn) || self.floors.get(&coordinator).is_some_and(|f| age <= *f)
    }

    pub fn contains(&self, txn: TxnId) -> bool {
        self.txns.contains_key(&txn)
    }

    pub fn len(&self) -> usize {
        self.txns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.txns.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(client: u64, start: u64) -> (TxnId, Age) {
        let txn = TxnId { client, seq: 1 };
        (txn, Age { start, txn })
    }

    #[test]
    fn refuses_what_it_holds_and_everything_at_or_below_an_evicted_age() {
        let mut f = FinishedTxns::default();
        for (i, start) in [10, 30, 20, 40].into_iter().enumerate() {
            let (txn, age) = t(i as u64 + 1, start);
            f.record(txn, 7, age, 2);
        }
        // Kept: the last two finished (starts 20 and 40); evicted: 10 and 30.
        assert_eq!(f.len(), 2);
        for (client, start) in [(1, 10), (2, 30), (3, 20), (4, 40)] {
            let (txn, age) = t(client, start);
            assert!(f.refuses(txn, 7, age), "c{client} start {start}");
        }
        // Unknown transactions of coordinator 7: refused at or below the floor (30).
        let (txn, age) = t(9, 29);
        assert!(f.refuses(txn, 7, age));
        let (txn, age) = t(9, 31);
        assert!(!f.refuses(txn, 7, age));
        // Another coordinator's floor is its own.
        let (txn, age) = t(9, 5);
        assert!(!f.refuses(txn, 8, age));
    }
}
