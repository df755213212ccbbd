//! The kv workload: get / put / append over many keys; each key's history is judged
//! linearizable against the kv model (appends concatenate strings).
//!
//! Values are strings ending in a comma (`"3,"`), so a read of concatenated appends is
//! unambiguous.
//!
//! | op | ordeal-http | etcd-v3 |
//! |---|---|---|
//! | read | `GET /kv/k` | range |
//! | write | `PUT /kv/k` | put |
//! | append | `POST /txn` `[["append", k, v]]` | range, then txn: compare `mod_revision` == the one read, put old + v |
//!
//! etcd has no server-side append, so an append reads and then writes conditionally. When the
//! compare fails (another client wrote the key in between) nothing was applied, and the client
//! retries, up to [`APPEND_ATTEMPTS`] reads and txns in all; past that the append is a `fail`
//! ("contended"). A retry is safe because a failed compare applied nothing; an attempt whose
//! txn ended unknown is not retried (it is `info`). Any failure of a read before the write is
//! a `fail`: that attempt's write was never sent, and earlier attempts applied nothing.

use crate::client::Completion;
use crate::etcd::{Compare, Etcd, PutRequest, RequestOp, TxnRequest};
use crate::generator::{KeySlot, OpSpec};
use crate::Judge;
use ordeal_checker::Value;

/// How many read + conditional-txn rounds one etcd append may take before it is a `fail`.
pub const APPEND_ATTEMPTS: usize = 4;

/// Linearizability per key, kv model.
pub fn judge() -> Judge {
    Judge::Linearizable(ordeal_checker::linear::ModelKind::Kv)
}

/// Half reads, a quarter writes, a quarter appends. `roll` is uniform in 0..100.
pub(crate) fn next_op(slot: &mut KeySlot, roll: u32) -> OpSpec {
    let key = slot.key.clone();
    if roll < 50 {
        return OpSpec {
            f: "read",
            key,
            value: Value::Null,
        };
    }
    slot.last_value += 1;
    OpSpec {
        f: if roll < 75 { "write" } else { "append" },
        key,
        value: Value::Str(format!("{},", slot.last_value)),
    }
}

/// An append as read + txn comparing `mod_revision`, retried on a failed compare.
pub(crate) async fn etcd_append(etcd: &Etcd<'_>, op: &OpSpec) -> Completion {
    let suffix = crate::client::value_to_store(&op.value);
    for _ in 0..APPEND_ATTEMPTS {
        let read = match etcd.get(&op.key).await {
            Ok(r) => r,
            Err(f) => return f.before_write(&op.value),
        };
        let mut value = read.value.unwrap_or_default();
        value.push_str(&suffix);
        let txn = TxnRequest {
            compare: vec![Compare::mod_revision_equals(&op.key, read.mod_revision)],
            success: vec![RequestOp::Put(PutRequest {
                key: crate::etcd::b64(&op.key),
                value: crate::etcd::b64(&value),
            })],
            failure: Vec::new(),
        };
        match etcd.txn(&txn).await {
            Ok(r) if r.succeeded => return Completion::ok(op.value.clone()),
            Ok(_) => continue,
            Err(f) => return f.completion(&op.value),
        }
    }
    Completion::fail(
        op.value.clone(),
        format!("contended: the key changed under each of {APPEND_ATTEMPTS} attempts"),
    )
}
