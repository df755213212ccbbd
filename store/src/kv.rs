//! The key-value state machine: pure, deterministic, no I/O.
//!
//! Every replica applies the same committed log in slot order, so every replica ends in the
//! same state with the same digest.
//!
//! Representation:
//! - A key holds either a string (written by PUT or `["w", k, v]`) or a list of strings (built
//!   by `["append", k, v]`). Appending to a string key turns it into the list `[old, v]`;
//!   writing a string to a list key replaces the list. A read of a list key returns the JSON
//!   list, so Elle's list-append workload reads back exactly what it appended.
//! - Revisions: every command in the log gets the next revision number (a counter over all
//!   applied commands, so it grows with the log index but is unique even when many client
//!   commands share one Paxos slot through batching). A key's revision is the revision of the
//!   command that last wrote it; a missing key has revision 0. Unique revisions keep
//!   `if_revision` a true compare-and-set under batching.
//! - Exactly-once: a write carrying `client_id` + `seq` records its result in a dedup table;
//!   a command with the same `client_id` and `seq` returns the recorded result without
//!   applying again. The table keeps the latest seq per client, bounded by evicting the client
//!   whose entry is oldest; it is part of the snapshot.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

use crate::StoreError;

/// A stored value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    Str(String),
    List(Vec<String>),
}

impl Value {
    /// The JSON form clients see: a string, or a list of strings.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::List(l) => serde_json::Value::Array(
                l.iter()
                    .map(|s| serde_json::Value::String(s.clone()))
                    .collect(),
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub value: Value,
    pub revision: u64,
}

/// Compare-and-set condition of a PUT or DELETE.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    None,
    /// The key's current revision must equal this (0 = key absent).
    Revision(u64),
    /// The key's current value must be this string.
    Value(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MicroOp {
    Read(String),
    Write(String, String),
    Append(String, String),
}

impl MicroOp {
    pub fn key(&self) -> &str {
        match self {
            MicroOp::Read(k) | MicroOp::Write(k, _) | MicroOp::Append(k, _) => k,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Put {
        key: String,
        value: String,
        condition: Condition,
    },
    Delete {
        key: String,
        condition: Condition,
    },
    Txn {
        ops: Vec<MicroOp>,
    },
    /// A linearizable read through the log (used when the core has no read index path).
    Get {
        key: String,
    },
}

/// One client command as it travels through the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// `(client_id, seq)` for exactly-once writes.
    pub dedup: Option<(String, u64)>,
    pub op: Op,
}

/// The result of a micro-op: the value read, or nothing for writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MicroResult {
    Read(String, Option<Value>),
    Write(String, String),
    Append(String, String),
}

impl MicroResult {
    /// `["r", k, v]` / `["w", k, v]` / `["append", k, v]` as in the history format.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            MicroResult::Read(k, v) => {
                json!([
                    "r",
                    k,
                    v.as_ref()
                        .map(Value::to_json)
                        .unwrap_or(serde_json::Value::Null)
                ])
            }
            MicroResult::Write(k, v) => json!(["w", k, v]),
            MicroResult::Append(k, v) => json!(["append", k, v]),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// A PUT or DELETE took effect; `revision` is the new revision of the key.
    Written {
        revision: u64,
    },
    /// The condition did not hold; nothing changed. `revision` is the key's current revision.
    Conflict {
        revision: u64,
    },
    Txn {
        results: Vec<MicroResult>,
        revision: u64,
    },
    Read {
        entry: Option<Entry>,
    },
    /// `seq` is older than the latest applied for this client: the original result is gone.
    StaleSeq {
        latest_seq: u64,
    },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct DedupTable {
    /// client_id -> (seq, outcome, revision at which it was recorded)
    by_client: HashMap<String, (u64, Outcome, u64)>,
    /// recorded revision -> client_id, to evict the oldest client first.
    by_age: BTreeMap<u64, String>,
}

/// The replicated state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Kv {
    map: BTreeMap<String, Entry>,
    dedup: DedupTable,
    /// Revision of the last applied command.
    revision: u64,
    /// Log slot of the last applied entry.
    applied_index: u64,
    dedup_capacity: usize,
    /// Bytes the dedup table may hold (client ids and recorded outcomes); 0: no byte limit.
    /// Not in snapshots: every replica is configured with the same value, like the capacity.
    #[serde(skip)]
    dedup_max_bytes: usize,
    /// Bytes the dedup table holds now, as `dedup_entry_bytes` counts them (derived state).
    #[serde(skip)]
    dedup_bytes: usize,
}

/// What one dedup entry costs: its client id (stored twice: the map key and the age index),
/// its encoded outcome, and a fixed overhead for the two map nodes.
fn dedup_entry_bytes(client: &str, outcome: &Outcome) -> usize {
    const OVERHEAD_BYTES: usize = 96;
    2 * client.len() + crate::codec::encoded_len(outcome) + OVERHEAD_BYTES
}

impl Kv {
    pub fn new(dedup_capacity: usize) -> Kv {
        Kv {
            map: BTreeMap::new(),
            dedup: DedupTable::default(),
            revision: 0,
            applied_index: 0,
            dedup_capacity: dedup_capacity.max(1),
            dedup_max_bytes: 0,
            dedup_bytes: 0,
        }
    }

    /// Bounds the dedup table in bytes too, evicting the oldest clients past it.
    pub fn with_dedup_max_bytes(mut self, max_bytes: usize) -> Kv {
        self.dedup_max_bytes = max_bytes;
        self.evict_dedup(0);
        self
    }

    /// Bytes the dedup table holds (client ids and outcomes, as counted for its limit).
    pub fn dedup_bytes(&self) -> usize {
        self.dedup_bytes
    }

    /// Evicts the oldest clients until one more entry of `incoming_bytes` fits both limits.
    fn evict_dedup(&mut self, incoming_bytes: usize) {
        let over_bytes = |kv: &Kv| {
            kv.dedup_max_bytes > 0 && kv.dedup_bytes + incoming_bytes > kv.dedup_max_bytes
        };
        let over_count =
            |kv: &Kv| incoming_bytes > 0 && kv.dedup.by_client.len() >= kv.dedup_capacity;
        while !self.dedup.by_client.is_empty() && (over_count(self) || over_bytes(self)) {
            let Some((_, oldest)) = self.dedup.by_age.pop_first() else {
                break;
            };
            if let Some((_, outcome, _)) = self.dedup.by_client.remove(&oldest) {
                self.dedup_bytes -= dedup_entry_bytes(&oldest, &outcome);
            }
        }
    }

    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.map.get(key)
    }

    /// Keys starting with `prefix`, in order, with their revisions; at most `limit`.
    pub fn keys(&self, prefix: &str, limit: usize) -> Vec<(String, u64)> {
        self.map
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, e)| (k.clone(), e.revision))
            .collect()
    }

    /// Marks slot `slot` applied (call after applying all commands of the slot, also for
    /// no-op slots).
    pub fn set_applied_index(&mut self, slot: u64) {
        assert!(
            slot >= self.applied_index,
            "applied index went backwards: {} -> {}",
            self.applied_index,
            slot
        );
        self.applied_index = slot;
    }

    /// Applies one command; deterministic.
    pub fn apply(&mut self, cmd: &Command) -> Outcome {
        self.revision += 1;
        let revision = self.revision;
        if let Some((client, seq)) = &cmd.dedup {
            if let Some((last_seq, outcome, _)) = self.dedup.by_client.get(client) {
                if *seq == *last_seq {
                    return outcome.clone();
                }
                if *seq < *last_seq {
                    return Outcome::StaleSeq {
                        latest_seq: *last_seq,
                    };
                }
            }
        }
        let outcome = self.apply_op(&cmd.op, revision);
        if let Some((client, seq)) = &cmd.dedup {
            if !matches!(cmd.op, Op::Get { .. }) {
                self.record_dedup(client.clone(), *seq, outcome.clone(), revision);
            }
        }
        outcome
    }

    fn record_dedup(&mut self, client: String, seq: u64, outcome: Outcome, revision: u64) {
        if let Some((_, old_outcome, old_rev)) = self.dedup.by_client.remove(&client) {
            self.dedup.by_age.remove(&old_rev);
            self.dedup_bytes -= dedup_entry_bytes(&client, &old_outcome);
        }
        let bytes = dedup_entry_bytes(&client, &outcome);
        self.evict_dedup(bytes);
        self.dedup_bytes += bytes;
        self.dedup.by_age.insert(revision, client.clone());
        self.dedup
            .by_client
            .insert(client, (seq, outcome, revision));
    }

    fn check(&self, key: &str, condition: &Condition) -> Result<(), u64> {
        let current = self.map.get(key);
        let current_rev = current.map(|e| e.revision).unwrap_or(0);
        let holds = match condition {
            Condition::None => true,
            Condition::Revision(r) => *r == current_rev,
            Condition::Value(v) => {
                matches!(current, Some(Entry { value: Value::Str(s), .. }) if s == v)
            }
        };
        if holds {
            Ok(())
        } else {
            Err(current_rev)
        }
    }

    fn apply_op(&mut self, op: &Op, revision: u64) -> Outcome {
        match op {
            Op::Put {
                key,
                value,
                condition,
            } => match self.check(key, condition) {
                Err(current) => Outcome::Conflict { revision: current },
                Ok(()) => {
                    self.map.insert(
                        key.clone(),
                        Entry {
                            value: Value::Str(value.clone()),
                            revision,
                        },
                    );
                    Outcome::Written { revision }
                }
            },
            Op::Delete { key, condition } => match self.check(key, condition) {
                Err(current) => Outcome::Conflict { revision: current },
                Ok(()) => {
                    self.map.remove(key);
                    Outcome::Written { revision }
                }
            },
            Op::Get { key } => Outcome::Read {
                entry: self.map.get(key).cloned(),
            },
            Op::Txn { ops } => {
                let mut results = Vec::with_capacity(ops.len());
                for micro in ops {
                    match micro {
                        MicroOp::Read(k) => {
                            results.push(MicroResult::Read(
                                k.clone(),
                                self.map.get(k).map(|e| e.value.clone()),
                            ));
                        }
                        MicroOp::Write(k, v) => {
                            self.map.insert(
                                k.clone(),
                                Entry {
                                    value: Value::Str(v.clone()),
                                    revision,
                                },
                            );
                            results.push(MicroResult::Write(k.clone(), v.clone()));
                        }
                        MicroOp::Append(k, v) => {
                            let entry = self.map.entry(k.clone()).or_insert(Entry {
                                value: Value::List(Vec::new()),
                                revision,
                            });
                            entry.revision = revision;
                            match &mut entry.value {
                                Value::List(l) => l.push(v.clone()),
                                Value::Str(s) => {
                                    entry.value = Value::List(vec![std::mem::take(s), v.clone()])
                                }
                            }
                            results.push(MicroResult::Append(k.clone(), v.clone()));
                        }
                    }
                }
                Outcome::Txn { results, revision }
            }
        }
    }

    /// A 64-bit FNV-1a hash over every key, value and revision, in key order, as 16 hex
    /// digits. Equal digests on two replicas mean equal applied state (with overwhelming
    /// probability).
    pub fn digest(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut feed = |bytes: &[u8]| {
            for b in bytes {
                h ^= *b as u64;
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        for (k, e) in &self.map {
            feed(&(k.len() as u64).to_le_bytes());
            feed(k.as_bytes());
            match &e.value {
                Value::Str(s) => {
                    feed(b"s");
                    feed(&(s.len() as u64).to_le_bytes());
                    feed(s.as_bytes());
                }
                Value::List(l) => {
                    feed(b"l");
                    feed(&(l.len() as u64).to_le_bytes());
                    for s in l {
                        feed(&(s.len() as u64).to_le_bytes());
                        feed(s.as_bytes());
                    }
                }
            }
            feed(&e.revision.to_le_bytes());
        }
        format!("{h:016x}")
    }

    pub fn to_snapshot(&self) -> Vec<u8> {
        crate::codec::encode(self)
    }

    /// The state a snapshot holds; set the byte limit with `with_dedup_max_bytes`.
    pub fn from_snapshot(bytes: &[u8]) -> Result<Kv, StoreError> {
        let mut kv: Kv = crate::codec::decode("kv snapshot", bytes)?;
        kv.dedup_bytes = kv
            .dedup
            .by_client
            .iter()
            .map(|(c, (_, o, _))| dedup_entry_bytes(c, o))
            .sum();
        Ok(kv)
    }
}

/// The payload of one Paxos slot: a batch of client commands.
pub fn encode_batch(cmds: &[Command]) -> Vec<u8> {
    crate::codec::encode(cmds)
}

pub fn decode_batch(bytes: &[u8]) -> Result<Vec<Command>, StoreError> {
    crate::codec::decode("command batch", bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str, v: &str, c: Condition) -> Command {
        Command {
            dedup: None,
            op: Op::Put {
                key: k.into(),
                value: v.into(),
                condition: c,
            },
        }
    }

    #[test]
    fn put_get_and_revisions() {
        let mut kv = Kv::new(10);
        assert_eq!(
            kv.apply(&put("a", "1", Condition::None)),
            Outcome::Written { revision: 1 }
        );
        assert_eq!(
            kv.apply(&put("b", "2", Condition::None)),
            Outcome::Written { revision: 2 }
        );
        assert_eq!(kv.get("a").unwrap().revision, 1);
        assert_eq!(kv.get("a").unwrap().value, Value::Str("1".into()));
        assert!(kv.get("c").is_none());
    }

    #[test]
    fn compare_and_set() {
        let mut kv = Kv::new(10);
        // Revision 0 means "absent".
        assert_eq!(
            kv.apply(&put("a", "1", Condition::Revision(0))),
            Outcome::Written { revision: 1 }
        );
        assert_eq!(
            kv.apply(&put("a", "2", Condition::Revision(0))),
            Outcome::Conflict { revision: 1 }
        );
        assert_eq!(
            kv.apply(&put("a", "2", Condition::Value("x".into()))),
            Outcome::Conflict { revision: 1 }
        );
        assert_eq!(
            kv.apply(&put("a", "2", Condition::Value("1".into()))),
            Outcome::Written { revision: 4 }
        );
        assert_eq!(kv.get("a").unwrap().value, Value::Str("2".into()));
        let del = Command {
            dedup: None,
            op: Op::Delete {
                key: "a".into(),
                condition: Condition::Revision(3),
            },
        };
        assert_eq!(kv.apply(&del), Outcome::Conflict { revision: 4 });
        assert!(kv.get("a").is_some());
    }

    #[test]
    fn txn_append_reads_lists() {
        let mut kv = Kv::new(10);
        let t = |ops| Command {
            dedup: None,
            op: Op::Txn { ops },
        };
        kv.apply(&t(vec![MicroOp::Append("x".into(), "1".into())]));
        let out = kv.apply(&t(vec![
            MicroOp::Append("x".into(), "2".into()),
            MicroOp::Read("x".into()),
            MicroOp::Read("y".into()),
            MicroOp::Write("y".into(), "v".into()),
            MicroOp::Read("y".into()),
        ]));
        let Outcome::Txn { results, revision } = out else {
            panic!("not a txn outcome: {out:?}")
        };
        assert_eq!(revision, 2);
        assert_eq!(
            results[1].to_json(),
            serde_json::json!(["r", "x", ["1", "2"]])
        );
        assert_eq!(results[2].to_json(), serde_json::json!(["r", "y", null]));
        assert_eq!(results[4].to_json(), serde_json::json!(["r", "y", "v"]));
    }

    #[test]
    fn exactly_once_and_bounded_dedup() {
        let mut kv = Kv::new(2);
        let mut c = put("a", "1", Condition::None);
        c.dedup = Some(("c1".into(), 1));
        assert_eq!(kv.apply(&c), Outcome::Written { revision: 1 });
        // A retry returns the original result and does not write again.
        assert_eq!(kv.apply(&c), Outcome::Written { revision: 1 });
        assert_eq!(kv.get("a").unwrap().revision, 1);
        let mut c2 = put("a", "2", Condition::None);
        c2.dedup = Some(("c1".into(), 2));
        assert_eq!(kv.apply(&c2), Outcome::Written { revision: 3 });
        assert_eq!(kv.apply(&c), Outcome::StaleSeq { latest_seq: 2 });
        // Two more clients evict c1 (capacity 2).
        for (i, client) in ["c2", "c3"].iter().enumerate() {
            let mut c = put("b", "x", Condition::None);
            c.dedup = Some((client.to_string(), i as u64));
            kv.apply(&c);
        }
        assert!(!kv.dedup.by_client.contains_key("c1"));
        assert_eq!(kv.dedup.by_client.len(), 2);
        assert_eq!(kv.dedup.by_age.len(), 2);
    }

    #[test]
    fn dedup_table_is_bounded_in_bytes() {
        let mut kv = Kv::new(100_000).with_dedup_max_bytes(64 << 10);
        // 100 clients with 4 KiB ids: 800 KiB of ids if nothing were evicted.
        for i in 0..100u64 {
            let mut c = put("k", "v", Condition::None);
            c.dedup = Some((format!("{i:04}{}", "x".repeat(4096)), 1));
            kv.apply(&c);
            assert!(kv.dedup_bytes() <= 64 << 10, "{} bytes", kv.dedup_bytes());
        }
        assert!(kv.dedup.by_client.len() < 100);
        // The newest client is remembered; the oldest was evicted.
        assert!(kv
            .dedup
            .by_client
            .contains_key(&format!("0099{}", "x".repeat(4096))));
        assert!(!kv
            .dedup
            .by_client
            .contains_key(&format!("0000{}", "x".repeat(4096))));
        // The count survives a snapshot.
        let again = Kv::from_snapshot(&kv.to_snapshot()).unwrap();
        assert_eq!(again.dedup_bytes(), kv.dedup_bytes());
    }

    #[test]
    fn snapshot_roundtrip_keeps_digest_and_dedup() {
        let mut kv = Kv::new(10);
        let mut c = put("a", "1", Condition::None);
        c.dedup = Some(("c1".into(), 7));
        kv.apply(&c);
        kv.set_applied_index(5);
        let restored = Kv::from_snapshot(&kv.to_snapshot()).unwrap();
        assert_eq!(restored.digest(), kv.digest());
        assert_eq!(restored.applied_index(), 5);
        let mut restored = restored;
        assert_eq!(restored.apply(&c), Outcome::Written { revision: 1 });
        let mut other = Kv::new(10);
        other.apply(&put("a", "2", Condition::None));
        assert_ne!(other.digest(), kv.digest());
        assert!(Kv::from_snapshot(b"garbage").is_err());
    }

    #[test]
    fn keys_by_prefix() {
        let mut kv = Kv::new(10);
        for k in ["a1", "a2", "b1"] {
            kv.apply(&put(k, "v", Condition::None));
        }
        assert_eq!(
            kv.keys("a", 100),
            vec![("a1".to_string(), 1), ("a2".to_string(), 2)]
        );
        assert_eq!(kv.keys("a", 1).len(), 1);
    }
}
