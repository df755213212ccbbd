//! The list-append workload: txns of 1-4 micro-ops, `["append", k, v]` and `["r", k, nil]`,
//! over rotating keys; judged by the Elle-style checker (list-append), whose version orders
//! come from the lists read.
//!
//! | | ordeal-http | etcd-v3 |
//! |---|---|---|
//! | a txn | one `POST /txn` | read every key the txn touches (one txn of ranges), compute the reads and the new lists, then one txn: compare every key's `mod_revision` == the one read, put each appended key's new list |
//!
//! On etcd a key holds its list as JSON text (`[1,2,3]`). The commit txn's compares cover every
//! key the txn reads or appends, so it commits only if nothing it saw changed: the reads and
//! the appends take effect together at the commit's revision (strict serializability, given
//! linearizable ranges). A compare that does not hold applied nothing: `fail`. Any failure of
//! the read before the commit is a `fail` too (the commit was never sent). A read-only txn is
//! just the read, judged like any read. With local reads (`serializable`) a read-only txn may
//! be stale; a txn that appends still commits only on fresh state.

use crate::client::Completion;
use crate::etcd::{b64, Compare, Etcd, PutRequest, RequestOp, TxnRequest};
use crate::generator::{MicroF, MicroOp};
use crate::Judge;
use ordeal_checker::Value;

/// The micro-op function of a write in this workload.
pub const WRITE_F: &str = "append";

/// Elle-style list-append.
pub fn judge() -> Judge {
    Judge::Txn(ordeal_checker::txn::Workload::ListAppend)
}

/// A stored list (`[1,2,3]`) as integers.
pub fn parse_list(text: &str) -> Result<Vec<i64>, String> {
    serde_json::from_str(text).map_err(|e| format!("stored list {text:?} is not [int, ...]: {e}"))
}

/// A list as stored.
pub fn format_list(items: &[i64]) -> String {
    let mut s = String::with_capacity(2 + items.len() * 4);
    s.push('[');
    for (i, v) in items.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&v.to_string());
    }
    s.push(']');
    s
}

/// The distinct keys of a txn, in order of first use.
pub(crate) fn distinct_keys(micro_ops: &[MicroOp]) -> Vec<&str> {
    let mut keys: Vec<&str> = Vec::with_capacity(micro_ops.len());
    for m in micro_ops {
        if !keys.contains(&m.key.as_str()) {
            keys.push(&m.key);
        }
    }
    keys
}

/// The invoked txn with each read's result filled in, in order.
pub(crate) fn with_reads(invoked: &Value, mut reads: impl Iterator<Item = Value>) -> Value {
    let ops = invoked.as_list().unwrap_or(&[]);
    Value::List(
        ops.iter()
            .map(|m| match m.as_list() {
                Some([f, k, _]) if *f == Value::Str("r".into()) => Value::List(vec![
                    f.clone(),
                    k.clone(),
                    reads.next().unwrap_or(Value::Null),
                ]),
                _ => m.clone(),
            })
            .collect(),
    )
}

/// One list-append txn on etcd: read, compute, commit with compares.
pub(crate) async fn etcd_txn(
    etcd: &Etcd<'_>,
    invoked: &Value,
    micro_ops: &[MicroOp],
) -> Completion {
    let keys = distinct_keys(micro_ops);
    let writes = micro_ops.iter().any(|m| m.f == MicroF::Append);
    let unsent = |f: crate::etcd::Failure| {
        if writes {
            f.before_write(invoked)
        } else {
            f.completion(invoked)
        }
    };
    let reads = match etcd.get_many(&keys).await {
        Ok(r) => r,
        Err(f) => return unsent(f),
    };
    let mut lists: Vec<Option<Vec<i64>>> = Vec::with_capacity(keys.len());
    for r in &reads {
        match r.value.as_deref().map(parse_list).transpose() {
            Ok(l) => lists.push(l),
            Err(e) => return unsent(crate::etcd::Failure::Unknown(e)),
        }
    }
    let mut results = Vec::new();
    let mut appended = vec![false; keys.len()];
    for m in micro_ops {
        let i = keys.iter().position(|k| *k == m.key).unwrap_or(0);
        match m.f {
            MicroF::Read => results.push(lists[i].as_ref().map_or(Value::Null, |l| {
                Value::List(l.iter().map(|v| Value::Int(*v)).collect())
            })),
            MicroF::Append | MicroF::Write => {
                lists[i].get_or_insert_with(Vec::new).push(m.arg);
                appended[i] = true;
            }
        }
    }
    let done = with_reads(invoked, results.into_iter());
    if !writes {
        return Completion::ok(done);
    }
    let txn = TxnRequest {
        compare: keys
            .iter()
            .zip(&reads)
            .map(|(k, r)| Compare::mod_revision_equals(k, r.mod_revision))
            .collect(),
        success: keys
            .iter()
            .zip(&lists)
            .zip(&appended)
            .filter(|(_, appended)| **appended)
            .map(|((k, l), _)| {
                RequestOp::Put(PutRequest {
                    key: b64(k),
                    value: b64(&format_list(l.as_deref().unwrap_or(&[]))),
                })
            })
            .collect(),
        failure: Vec::new(),
    };
    match etcd.txn(&txn).await {
        Ok(r) if r.succeeded => Completion::ok(done),
        Ok(_) => Completion::fail(
            invoked.clone(),
            "precondition-failed: a key changed between read and commit",
        ),
        Err(f) => f.completion(invoked),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_round_trip_and_reads_fill_in() {
        assert_eq!(format_list(&[]), "[]");
        assert_eq!(format_list(&[1, -2, 30]), "[1,-2,30]");
        assert_eq!(parse_list("[1,-2,30]").unwrap(), vec![1, -2, 30]);
        assert!(parse_list("1,2").is_err());
        let m = |f: &str, k: &str, v: Value| {
            Value::List(vec![Value::Str(f.into()), Value::Str(k.into()), v])
        };
        let invoked = Value::List(vec![
            m("r", "x", Value::Null),
            m("append", "x", Value::Int(1)),
            m("r", "x", Value::Null),
        ]);
        let filled = with_reads(
            &invoked,
            [Value::Null, Value::List(vec![Value::Int(1)])].into_iter(),
        );
        assert_eq!(
            filled,
            Value::List(vec![
                m("r", "x", Value::Null),
                m("append", "x", Value::Int(1)),
                m("r", "x", Value::List(vec![Value::Int(1)])),
            ])
        );
        let ops = MicroOp::parse_txn(&invoked).unwrap();
        assert_eq!(distinct_keys(&ops), vec!["x"]);
    }
}
