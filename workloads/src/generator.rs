//! The seeded operation generator.
//!
//! Keys are used for a bounded number of operations and then retired for fresh ones, as Jepsen's
//! independent keys are: each key's sub-history stays short enough for the linearizability
//! checker, however long the test runs. Values written are unique per key (a per-key counter), so
//! a read names the one write it observed.

use crate::{Protocol, WorkloadKind};
use ordeal_checker::Value;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// One operation to perform: what the invocation event records.
#[derive(Clone, Debug, PartialEq)]
pub struct OpSpec {
    pub f: &'static str,
    pub key: String,
    /// The argument: `Null` for a read, the value for a write or append, `[old, new]` for cas.
    pub value: Value,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GeneratorConfig {
    pub workload: WorkloadKind,
    pub seed: u64,
    /// How many keys are in use at once.
    pub active_keys: usize,
    /// Operations issued against a key before it is retired for a fresh one.
    pub ops_per_key: u64,
    /// The protocol the ops will be sent over: etcd refuses a txn that writes one key twice, so
    /// for etcd the rw-register generator writes each key at most once per txn.
    #[serde(default)]
    pub protocol: Protocol,
}

impl GeneratorConfig {
    /// Defaults per workload: hot keys for the register (contention is the point), but about
    /// three clients per key at once, so each key's history stays cheap to check; many keys for
    /// kv.
    pub fn for_workload(workload: WorkloadKind, seed: u64, concurrency: usize) -> GeneratorConfig {
        match workload {
            WorkloadKind::Register => GeneratorConfig {
                workload,
                seed,
                active_keys: (concurrency / 3).max(4),
                ops_per_key: 200,
                protocol: Protocol::OrdealHttp,
            },
            WorkloadKind::Kv => GeneratorConfig {
                workload,
                seed,
                active_keys: concurrency.max(64),
                ops_per_key: 100,
                protocol: Protocol::OrdealHttp,
            },
            // Enough keys in play for concurrent txns to overlap (that is where anomalies live),
            // and lists short enough that reads stay small and the checker fast.
            WorkloadKind::ListAppend | WorkloadKind::RwRegister => GeneratorConfig {
                workload,
                seed,
                active_keys: (concurrency / 2).clamp(4, 16),
                ops_per_key: 64,
                protocol: Protocol::OrdealHttp,
            },
            // Accounts never rotate: the sum invariant is over a fixed set.
            WorkloadKind::Bank => GeneratorConfig {
                workload,
                seed,
                active_keys: crate::bank::ACCOUNTS,
                ops_per_key: u64::MAX,
                protocol: Protocol::OrdealHttp,
            },
        }
    }

    /// The same configuration for ops sent over `protocol`.
    pub fn with_protocol(self, protocol: Protocol) -> GeneratorConfig {
        GeneratorConfig { protocol, ..self }
    }
}

pub(crate) struct KeySlot {
    pub key: String,
    pub ops_issued: u64,
    /// The last value handed out for a write on this key (values are 1, 2, 3, ...).
    pub last_value: i64,
}

/// Produces operations; one generator is shared by all clients (behind a lock), so the sequence
/// of operations is a function of the seed alone.
pub struct Generator {
    config: GeneratorConfig,
    rng: ChaCha8Rng,
    slots: Vec<KeySlot>,
    next_key_id: u64,
    /// Every key ever used, in order of first use, for the final reads.
    all_keys: Vec<String>,
}

impl Generator {
    pub fn new(config: GeneratorConfig) -> Generator {
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        let mut g = Generator {
            slots: Vec::with_capacity(config.active_keys),
            config,
            rng,
            next_key_id: 0,
            all_keys: Vec::new(),
        };
        for _ in 0..g.config.active_keys.max(1) {
            let slot = g.fresh_slot();
            g.slots.push(slot);
        }
        g
    }

    fn fresh_slot(&mut self) -> KeySlot {
        let prefix = match self.config.workload {
            WorkloadKind::Register => "r",
            WorkloadKind::Kv => "k",
            WorkloadKind::ListAppend => "la",
            WorkloadKind::RwRegister => "rw",
            WorkloadKind::Bank => crate::bank::ACCOUNT_PREFIX,
        };
        let key = format!("{prefix}{}", self.next_key_id);
        self.next_key_id += 1;
        self.all_keys.push(key.clone());
        KeySlot {
            key,
            ops_issued: 0,
            last_value: 0,
        }
    }

    /// Every key used so far.
    pub fn keys(&self) -> &[String] {
        &self.all_keys
    }

    pub fn next_op(&mut self) -> OpSpec {
        match self.config.workload {
            WorkloadKind::ListAppend | WorkloadKind::RwRegister => return self.next_txn(),
            WorkloadKind::Bank => return self.next_bank(),
            WorkloadKind::Register | WorkloadKind::Kv => {}
        }
        let slot_index = self.rng.gen_range(0..self.slots.len());
        if self.slots[slot_index].ops_issued >= self.config.ops_per_key {
            self.slots[slot_index] = self.fresh_slot();
        }
        let roll: u32 = self.rng.gen_range(0..100);
        let workload = self.config.workload;
        let slot = &mut self.slots[slot_index];
        slot.ops_issued += 1;
        match workload {
            WorkloadKind::Register => crate::register::next_op(slot, roll, &mut self.rng),
            WorkloadKind::Kv => crate::kv::next_op(slot, roll),
            WorkloadKind::ListAppend | WorkloadKind::RwRegister | WorkloadKind::Bank => {
                unreachable!("txn workloads return above")
            }
        }
    }
}

/// A micro-op as the history records it: `[f, key, value]`.
pub(crate) fn micro(f: &str, key: &str, value: Value) -> Value {
    Value::List(vec![Value::Str(f.into()), Value::Str(key.into()), value])
}

impl Generator {
    /// A list-append or rw-register txn: 1-4 micro-ops, each on a random active key (retired
    /// after `ops_per_key` micro-ops), half reads; every appended or written value is unique
    /// per key (1, 2, 3, ...), so a read names the writes it saw.
    fn next_txn(&mut self) -> OpSpec {
        let n = self.rng.gen_range(1..=4);
        let write_f = if self.config.workload == WorkloadKind::ListAppend {
            crate::list_append::WRITE_F
        } else {
            crate::rw_register::WRITE_F
        };
        let one_write_per_key = crate::rw_register::one_write_per_key(&self.config);
        let mut written: Vec<usize> = Vec::new();
        let mut ops = Vec::with_capacity(n);
        for _ in 0..n {
            let slot_index = self.rng.gen_range(0..self.slots.len());
            if self.slots[slot_index].ops_issued >= self.config.ops_per_key {
                self.slots[slot_index] = self.fresh_slot();
            }
            let mut read = self.rng.gen_bool(0.5);
            if one_write_per_key && !read {
                // A second write of a key in one txn becomes a read (etcd refuses the txn).
                read = written.contains(&slot_index);
                written.push(slot_index);
            }
            let slot = &mut self.slots[slot_index];
            slot.ops_issued += 1;
            if read {
                ops.push(micro("r", &slot.key, Value::Null));
            } else {
                slot.last_value += 1;
                ops.push(micro(write_f, &slot.key, Value::Int(slot.last_value)));
            }
        }
        OpSpec {
            f: "txn",
            key: String::new(),
            value: Value::List(ops),
        }
    }

    fn next_bank(&mut self) -> OpSpec {
        let accounts: Vec<&str> = self.slots.iter().map(|s| s.key.as_str()).collect();
        crate::bank::next_op(&accounts, &mut self.rng)
    }
}

/// What a micro-op does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MicroF {
    Read,
    Append,
    Write,
}

/// A txn's micro-op, typed: `["r", k, _]`, `["append", k, v]` or `["w", k, v]` with an integer
/// `v`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MicroOp {
    pub f: MicroF,
    pub key: String,
    /// The argument of an append or write; 0 for a read.
    pub arg: i64,
}

impl MicroOp {
    /// The micro-ops of a txn value `[[f, k, v], ...]`.
    pub fn parse_txn(value: &Value) -> Result<Vec<MicroOp>, String> {
        let ops = value
            .as_list()
            .ok_or_else(|| format!("txn value {value} is not a list of micro-ops"))?;
        ops.iter()
            .map(|m| {
                let Some([f, k, v]) = m.as_list() else {
                    return Err(format!("micro-op {m} is not [f, key, value]"));
                };
                let f = match f {
                    Value::Str(f) if f == "r" => MicroF::Read,
                    Value::Str(f) if f == "append" => MicroF::Append,
                    Value::Str(f) if f == "w" => MicroF::Write,
                    other => return Err(format!("micro-op {m}: unknown function {other}")),
                };
                let arg = match (f, v) {
                    (MicroF::Read, _) => 0,
                    (_, Value::Int(i)) => *i,
                    (_, other) => {
                        return Err(format!("micro-op {m}: argument {other} is not an integer"))
                    }
                };
                Ok(MicroOp {
                    f,
                    key: k.to_string(),
                    arg,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_ops_and_keys_rotate() {
        let config = GeneratorConfig {
            workload: WorkloadKind::Register,
            seed: 7,
            active_keys: 2,
            ops_per_key: 10,
            protocol: Protocol::OrdealHttp,
        };
        let mut a = Generator::new(config.clone());
        let mut b = Generator::new(config);
        let ops_a: Vec<OpSpec> = (0..100).map(|_| a.next_op()).collect();
        let ops_b: Vec<OpSpec> = (0..100).map(|_| b.next_op()).collect();
        assert_eq!(ops_a, ops_b);
        // 100 ops at 10 per key over 2 active keys needs at least 10 keys.
        assert!(a.keys().len() >= 10, "keys used: {:?}", a.keys());
        for key in a.keys() {
            let n = ops_a.iter().filter(|op| &op.key == key).count();
            assert!(n <= 10, "{key} got {n} ops");
        }
    }

    #[test]
    fn register_writes_are_unique_per_key() {
        let mut g = Generator::new(GeneratorConfig::for_workload(WorkloadKind::Register, 1, 16));
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2000 {
            let op = g.next_op();
            let written = match op.f {
                "write" => op.value.clone(),
                "cas" => op.value.as_list().unwrap()[1].clone(),
                _ => continue,
            };
            assert!(
                seen.insert((op.key.clone(), written.clone())),
                "{op:?} repeats"
            );
        }
    }

    #[test]
    fn txns_have_one_to_four_ops_unique_values_and_rotate_keys() {
        let mut config = GeneratorConfig::for_workload(WorkloadKind::ListAppend, 3, 12);
        config.ops_per_key = 8;
        let mut g = Generator::new(config);
        let mut seen = std::collections::HashSet::new();
        let mut per_key: std::collections::HashMap<String, u64> = Default::default();
        for _ in 0..500 {
            let op = g.next_op();
            assert_eq!(op.f, "txn");
            let ops = op.value.as_list().unwrap();
            assert!((1..=4).contains(&ops.len()), "{op:?}");
            for m in ops {
                let m = m.as_list().unwrap();
                let key = m[1].to_string();
                *per_key.entry(key.clone()).or_default() += 1;
                if m[0] == Value::Str("append".into()) {
                    assert!(seen.insert((key, m[2].clone())), "{m:?} repeats");
                }
            }
        }
        assert!(per_key.values().all(|n| *n <= 8), "{per_key:?}");
        assert!(per_key.len() > 20);
    }

    #[test]
    fn bank_transfers_balance_out() {
        let mut g = Generator::new(GeneratorConfig::for_workload(WorkloadKind::Bank, 5, 8));
        let (mut reads, mut transfers) = (0, 0);
        for _ in 0..200 {
            let op = g.next_op();
            let ops = op.value.as_list().unwrap();
            if ops.len() == crate::bank::ACCOUNTS {
                reads += 1;
                continue;
            }
            transfers += 1;
            let sum: i64 = ops
                .iter()
                .map(|m| match &m.as_list().unwrap()[2] {
                    Value::Int(i) => *i,
                    other => panic!("{other:?}"),
                })
                .sum();
            assert_eq!(sum, 0, "{op:?}");
        }
        assert!(reads > 50 && transfers > 50);
    }

    #[test]
    fn rw_register_on_etcd_writes_each_key_once_per_txn() {
        let config = GeneratorConfig::for_workload(WorkloadKind::RwRegister, 9, 4);
        let count_dups = |config: GeneratorConfig| {
            let mut g = Generator::new(config);
            let mut dups = 0;
            for _ in 0..2000 {
                let op = g.next_op();
                let micro = MicroOp::parse_txn(&op.value).unwrap();
                let mut written = std::collections::HashSet::new();
                for m in micro.iter().filter(|m| m.f == MicroF::Write) {
                    if !written.insert(m.key.clone()) {
                        dups += 1;
                    }
                }
            }
            dups
        };
        // paxos-kv's generator is unchanged (duplicate writes are how G1b shows there) ...
        assert!(count_dups(config.clone()) > 0);
        // ... and etcd's never writes a key twice in one txn.
        assert_eq!(count_dups(config.with_protocol(Protocol::EtcdV3)), 0);
    }

    #[test]
    fn micro_ops_parse_and_refuse_garbage() {
        let txn = Value::List(vec![
            micro("r", "x", Value::Null),
            micro("append", "x", Value::Int(3)),
            micro("w", "y", Value::Int(-2)),
        ]);
        let ops = MicroOp::parse_txn(&txn).unwrap();
        assert_eq!(
            ops.iter()
                .map(|m| (m.f, m.key.as_str(), m.arg))
                .collect::<Vec<_>>(),
            vec![
                (MicroF::Read, "x", 0),
                (MicroF::Append, "x", 3),
                (MicroF::Write, "y", -2)
            ]
        );
        assert!(MicroOp::parse_txn(&Value::Int(1)).is_err());
        assert!(MicroOp::parse_txn(&Value::List(vec![micro("cas", "x", Value::Int(1))])).is_err());
        assert!(
            MicroOp::parse_txn(&Value::List(vec![micro("w", "x", Value::Str("a".into()))]))
                .is_err()
        );
    }
}
