//! The register workload: read / write / cas on a few hot keys; each key's history is judged
//! linearizable against a cas-register model.
//!
//! Values are integers, unique per key (1, 2, 3, ...), stored as decimal text.
//!
//! | op | ordeal-http | etcd-v3 |
//! |---|---|---|
//! | read | `GET /kv/k` | range (serializable with local reads) |
//! | write | `PUT /kv/k` | put |
//! | cas [old new] | `PUT /kv/k?if_value=old` (409: fail) | txn: compare value == old, then put new; compare false: fail |

use crate::client::{value_from_store, value_to_store, Completion};
use crate::etcd::{Compare, Etcd, PutRequest, RequestOp, TxnRequest};
use crate::generator::{KeySlot, OpSpec};
use crate::Judge;
use ordeal_checker::Value;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Linearizability per key, cas-register model.
pub fn judge() -> Judge {
    Judge::Linearizable(ordeal_checker::linear::ModelKind::CasRegister)
}

/// Half reads, a quarter writes, a quarter cas expecting one of the last few values (so a fair
/// share succeed). `roll` is uniform in 0..100.
pub(crate) fn next_op(slot: &mut KeySlot, roll: u32, rng: &mut ChaCha8Rng) -> OpSpec {
    let key = slot.key.clone();
    if roll < 50 {
        OpSpec {
            f: "read",
            key,
            value: Value::Null,
        }
    } else if roll < 75 || slot.last_value == 0 {
        slot.last_value += 1;
        OpSpec {
            f: "write",
            key,
            value: Value::Int(slot.last_value),
        }
    } else {
        let low = (slot.last_value - 3).max(1);
        let expected = rng.gen_range(low..=slot.last_value);
        slot.last_value += 1;
        OpSpec {
            f: "cas",
            key,
            value: Value::List(vec![Value::Int(expected), Value::Int(slot.last_value)]),
        }
    }
}

/// A single-key read (register and kv alike: the stored text says integer or string).
pub(crate) async fn etcd_read(etcd: &Etcd<'_>, op: &OpSpec) -> Completion {
    match etcd.get(&op.key).await {
        Ok(read) => Completion::ok(read.value.as_deref().map_or(Value::Null, value_from_store)),
        Err(f) => f.completion(&op.value),
    }
}

/// A blind write (register and kv alike).
pub(crate) async fn etcd_write(etcd: &Etcd<'_>, op: &OpSpec) -> Completion {
    match etcd.put(&op.key, &value_to_store(&op.value)).await {
        Ok(()) => Completion::ok(op.value.clone()),
        Err(f) => f.completion(&op.value),
    }
}

/// cas as one txn: if the value is `old`, put `new`. A compare that does not hold applied
/// nothing: fail.
pub(crate) async fn etcd_cas(etcd: &Etcd<'_>, op: &OpSpec) -> Completion {
    let Some([expected, new]) = op.value.as_list() else {
        return Completion::fail(op.value.clone(), "cas needs [expected new]");
    };
    let txn = TxnRequest {
        compare: vec![Compare::value_equals(&op.key, &value_to_store(expected))],
        success: vec![RequestOp::Put(PutRequest {
            key: crate::etcd::b64(&op.key),
            value: crate::etcd::b64(&value_to_store(new)),
        })],
        failure: Vec::new(),
    };
    match etcd.txn(&txn).await {
        Ok(r) if r.succeeded => Completion::ok(op.value.clone()),
        Ok(_) => Completion::fail(op.value.clone(), "precondition-failed"),
        Err(f) => f.completion(&op.value),
    }
}
