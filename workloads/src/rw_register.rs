//! The rw-register workload: txns of 1-4 micro-ops, `["w", k, v]` and `["r", k, nil]`, over
//! rotating keys; judged by the Elle-style checker (rw-register).
//!
//! | | ordeal-http | etcd-v3 |
//! |---|---|---|
//! | a txn | one `POST /txn` | one txn, no compares: its micro-ops in order as ranges and puts |
//!
//! etcd applies a txn's operations in order at one revision, and a range after a put of the
//! same key in the txn sees that put, so one etcd txn is exactly one rw-register txn. etcd
//! refuses (InvalidArgument, `duplicate key given in txn request`) a txn that puts one key
//! twice, so for etcd the generator writes each key at most once per txn
//! ([`one_write_per_key`]); on paxos-kv a txn may write a key twice (that is how a
//! non-atomic store shows G1b).

use crate::client::{value_from_store, Completion};
use crate::etcd::{b64, Etcd, PutRequest, RangeRequest, RequestOp, TxnRequest};
use crate::generator::{GeneratorConfig, MicroF, MicroOp};
use crate::{Judge, Protocol, WorkloadKind};
use ordeal_checker::Value;

/// The micro-op function of a write in this workload.
pub const WRITE_F: &str = "w";

/// Elle-style rw-register.
pub fn judge() -> Judge {
    Judge::Txn(ordeal_checker::txn::Workload::RwRegister)
}

/// Whether the generator must write each key at most once per txn.
pub(crate) fn one_write_per_key(config: &GeneratorConfig) -> bool {
    config.workload == WorkloadKind::RwRegister && config.protocol == Protocol::EtcdV3
}

/// The txn request: every micro-op in order.
pub fn etcd_request(micro_ops: &[MicroOp], serializable: bool) -> TxnRequest {
    TxnRequest {
        success: micro_ops
            .iter()
            .map(|m| match m.f {
                MicroF::Read => RequestOp::Range(RangeRequest {
                    key: b64(&m.key),
                    serializable,
                }),
                MicroF::Write | MicroF::Append => RequestOp::Put(PutRequest {
                    key: b64(&m.key),
                    value: b64(&m.arg.to_string()),
                }),
            })
            .collect(),
        ..TxnRequest::default()
    }
}

/// One rw-register txn as one etcd txn.
pub(crate) async fn etcd_txn(
    etcd: &Etcd<'_>,
    invoked: &Value,
    micro_ops: &[MicroOp],
) -> Completion {
    let txn = etcd_request(micro_ops, etcd.serializable);
    let reply = match etcd.txn(&txn).await {
        Ok(r) => r,
        Err(f) => return f.completion(invoked),
    };
    let mut results = Vec::new();
    for (i, m) in micro_ops.iter().enumerate() {
        if m.f != MicroF::Read {
            continue;
        }
        match reply.responses.get(i).map(reads_of_one) {
            Some(Ok(read)) => results.push(read),
            // Applied, but what it read is not known: unknown is the honest answer.
            Some(Err(e)) => return Completion::info(invoked.clone(), e),
            None => {
                return Completion::info(invoked.clone(), format!("txn reply has no response {i}"))
            }
        }
    }
    Completion::ok(crate::list_append::with_reads(invoked, results.into_iter()))
}

fn reads_of_one(r: &crate::etcd::ResponseOp) -> Result<Value, String> {
    let read = r
        .response_range
        .as_ref()
        .ok_or("a read's txn response is not a range")?
        .single()?;
    Ok(read.value.as_deref().map_or(Value::Null, value_from_store))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_etcd_txn_in_micro_op_order() {
        let m = |f: &str, k: &str, v: Value| {
            Value::List(vec![Value::Str(f.into()), Value::Str(k.into()), v])
        };
        let invoked = Value::List(vec![
            m("w", "x", Value::Int(1)),
            m("r", "x", Value::Null),
            m("r", "y", Value::Null),
        ]);
        let ops = MicroOp::parse_txn(&invoked).unwrap();
        let body = serde_json::to_value(etcd_request(&ops, false)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"success": [
                {"request_put": {"key": "eA==", "value": "MQ=="}},
                {"request_range": {"key": "eA=="}},
                {"request_range": {"key": "eQ=="}},
            ]})
        );
    }
}
