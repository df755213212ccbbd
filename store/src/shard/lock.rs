//! The lock table of strict two-phase locking: shared and exclusive locks per key, with
//! upgrades. Policy (wound-wait, no-wait, waiting) lives in the group; this table only grants
//! or names the conflicting holders. Volatile: a group rebuilds it after a crash from the
//! transactions prepared in its log.

use super::TxnId;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    Shared,
    Exclusive,
}

/// The answer to a lock request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acquire {
    Granted,
    /// Held in a conflicting mode by these transactions (never the requester).
    Conflict(Vec<TxnId>),
}

#[derive(Clone, Debug, Default)]
pub struct LockTable {
    by_key: BTreeMap<String, BTreeMap<TxnId, Mode>>,
    by_txn: BTreeMap<TxnId, BTreeSet<String>>,
}

impl LockTable {
    /// Grants `mode` on `key` to `txn` if no other transaction holds a conflicting lock. A
    /// transaction holding the lock already keeps the stronger mode; a sole shared holder is
    /// upgraded to exclusive.
    pub fn acquire(&mut self, txn: TxnId, key: &str, mode: Mode) -> Acquire {
        let holders = self.by_key.entry(key.to_string()).or_default();
        let conflicting: Vec<TxnId> = holders
            .iter()
            .filter(|(t, m)| **t != txn && (mode == Mode::Exclusive || **m == Mode::Exclusive))
            .map(|(t, _)| *t)
            .collect();
        if !conflicting.is_empty() {
            if holders.is_empty() {
                self.by_key.remove(key);
            }
            return Acquire::Conflict(conflicting);
        }
        let held = holders.entry(txn).or_insert(mode);
        *held = (*held).max(mode);
        self.by_txn.entry(txn).or_default().insert(key.to_string());
        Acquire::Granted
    }

    /// Forces a grant (recovery of a prepared transaction's locks: prepared transactions never
    /// conflicted, so this cannot break exclusion).
    pub fn force(&mut self, txn: TxnId, key: &str, mode: Mode) {
        let held = self
            .by_key
            .entry(key.to_string())
            .or_default()
            .entry(txn)
            .or_insert(mode);
        *held = (*held).max(mode);
        self.by_txn.entry(txn).or_default().insert(key.to_string());
    }

    pub fn holds(&self, txn: TxnId) -> bool {
        self.by_txn.contains_key(&txn)
    }

    pub fn mode(&self, txn: TxnId, key: &str) -> Option<Mode> {
        self.by_key.get(key).and_then(|h| h.get(&txn)).copied()
    }

    /// Releases every lock of `txn`; returns whether it held any.
    pub fn release_all(&mut self, txn: TxnId) -> bool {
        let Some(keys) = self.by_txn.remove(&txn) else {
            return false;
        };
        for k in keys {
            self.drop_holder(&k, txn);
        }
        true
    }

    /// Releases the shared locks of `txn` (keeps exclusive ones).
    pub fn release_shared(&mut self, txn: TxnId) {
        let Some(keys) = self.by_txn.get(&txn).cloned() else {
            return;
        };
        for k in keys {
            if self.mode(txn, &k) == Some(Mode::Shared) {
                self.drop_holder(&k, txn);
                if let Some(set) = self.by_txn.get_mut(&txn) {
                    set.remove(&k);
                }
            }
        }
        if self.by_txn.get(&txn).is_some_and(|s| s.is_empty()) {
            self.by_txn.remove(&txn);
        }
    }

    fn drop_holder(&mut self, key: &str, txn: TxnId) {
        if let Some(h) = self.by_key.get_mut(key) {
            h.remove(&txn);
            if h.is_empty() {
                self.by_key.remove(key);
            }
        }
    }

    /// Number of keys with at least one holder.
    pub fn locked_keys(&self) -> usize {
        self.by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: u64) -> TxnId {
        TxnId { client: n, seq: 1 }
    }

    #[test]
    fn shared_is_shared_exclusive_is_not() {
        let mut l = LockTable::default();
        assert_eq!(l.acquire(t(1), "x", Mode::Shared), Acquire::Granted);
        assert_eq!(l.acquire(t(2), "x", Mode::Shared), Acquire::Granted);
        assert_eq!(
            l.acquire(t(3), "x", Mode::Exclusive),
            Acquire::Conflict(vec![t(1), t(2)])
        );
        // Upgrade blocked by the other reader, then granted once it leaves.
        assert_eq!(
            l.acquire(t(1), "x", Mode::Exclusive),
            Acquire::Conflict(vec![t(2)])
        );
        assert!(l.release_all(t(2)));
        assert_eq!(l.acquire(t(1), "x", Mode::Exclusive), Acquire::Granted);
        assert_eq!(l.mode(t(1), "x"), Some(Mode::Exclusive));
        assert_eq!(
            l.acquire(t(2), "x", Mode::Shared),
            Acquire::Conflict(vec![t(1)])
        );
        // Re-acquiring shared keeps exclusive.
        assert_eq!(l.acquire(t(1), "x", Mode::Shared), Acquire::Granted);
        assert_eq!(l.mode(t(1), "x"), Some(Mode::Exclusive));
        assert!(l.release_all(t(1)));
        assert!(!l.release_all(t(1)));
        assert_eq!(l.locked_keys(), 0);
    }

    #[test]
    fn release_shared_keeps_exclusive() {
        let mut l = LockTable::default();
        l.acquire(t(1), "r", Mode::Shared);
        l.acquire(t(1), "w", Mode::Exclusive);
        l.release_shared(t(1));
        assert_eq!(l.mode(t(1), "r"), None);
        assert_eq!(l.mode(t(1), "w"), Some(Mode::Exclusive));
        assert_eq!(l.acquire(t(2), "r", Mode::Exclusive), Acquire::Granted);
    }
}
