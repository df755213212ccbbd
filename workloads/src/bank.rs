//! The bank workload: transfers between [`ACCOUNTS`] accounts and reads of every account in
//! one txn; judged by `ordeal_checker::bank` (every read sums to the total; on etcd also no
//! negative balance).
//!
//! The history records a transfer of `a` from `x` to `y` as
//! `[["append", x, -a], ["append", y, a]]` and a read as `[["r", acct0, nil], ...]`, whatever
//! the protocol.
//!
//! | | ordeal-http | etcd-v3 |
//! |---|---|---|
//! | transfer | one `POST /txn` appending the two deltas to the accounts' lists | read both balances (one txn of ranges); if `from` would go negative, `fail` (nothing sent); else one txn: compare both accounts' `mod_revision` == the ones read, put both new balances; compare false: `fail` |
//! | read | one `POST /txn` reading every account (lists of deltas) | one txn of ranges (integer balances) |
//!
//! Why deltas on ordeal-http: `POST /txn` evaluates reads at apply time, so a client cannot
//! condition a write on a balance it read, and a read-then-write over two requests would race.
//! Appending `-a` and `+a` in one txn preserves the total whatever order transfers apply in;
//! balances may go negative there, so the check allows it. etcd's txns compare, so a transfer
//! writes balances and refuses an overdraft; the check then also asserts no negative balance.
//! An absent account holds [`INITIAL_BALANCE`].

use crate::client::Completion;
use crate::etcd::{b64, Compare, Etcd, PutRequest, RequestOp, TxnRequest};
use crate::generator::{micro, MicroF, MicroOp, OpSpec};
use crate::{Judge, Protocol};
use ordeal_checker::Value;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

pub use ordeal_checker::bank::{check, check_with, BadRead, BankOptions, BankResult};

/// Number of accounts.
pub const ACCOUNTS: usize = 5;
/// Account keys are `acct0`, `acct1`, ...
pub const ACCOUNT_PREFIX: &str = "acct";
/// Every account's balance before any transfer.
pub const INITIAL_BALANCE: i64 = 100;

/// What the bank check assumes over `protocol`.
pub fn options(protocol: Protocol) -> BankOptions {
    BankOptions {
        accounts: ACCOUNTS,
        initial_balance: INITIAL_BALANCE,
        negative_allowed: protocol != Protocol::EtcdV3,
    }
}

/// The bank checker, with negative balances forbidden where transfers compare.
pub fn judge(protocol: Protocol) -> Judge {
    Judge::Bank(options(protocol))
}

/// Half reads of every account in one txn, half transfers of 1-5 between two distinct
/// accounts.
pub(crate) fn next_op(accounts: &[&str], rng: &mut ChaCha8Rng) -> OpSpec {
    let ops = if rng.gen_bool(0.5) || accounts.len() < 2 {
        accounts
            .iter()
            .map(|k| micro("r", k, Value::Null))
            .collect()
    } else {
        let from = rng.gen_range(0..accounts.len());
        let to = (from + rng.gen_range(1..accounts.len())) % accounts.len();
        let amount = rng.gen_range(1..=5i64);
        vec![
            micro("append", accounts[from], Value::Int(-amount)),
            micro("append", accounts[to], Value::Int(amount)),
        ]
    };
    OpSpec {
        f: "txn",
        key: String::new(),
        value: Value::List(ops),
    }
}

/// Whether a txn is a bank transfer: appends to accounts only.
pub(crate) fn is_bank_txn(micro_ops: &[MicroOp]) -> bool {
    micro_ops
        .iter()
        .all(|m| m.key.starts_with(ACCOUNT_PREFIX) && matches!(m.f, MicroF::Append | MicroF::Read))
}

/// The new balances of a transfer's accounts, or why it is refused (an overdraft).
pub fn apply_deltas(balances: &[i64], micro_ops: &[MicroOp]) -> Result<Vec<i64>, String> {
    let mut out = balances.to_vec();
    for (m, b) in micro_ops.iter().zip(out.iter_mut()) {
        *b = b
            .checked_add(m.arg)
            .ok_or_else(|| format!("{} would overflow", m.key))?;
        if *b < 0 {
            return Err(format!(
                "insufficient funds: {} holds {} and would go to {b}",
                m.key,
                *b - m.arg
            ));
        }
    }
    Ok(out)
}

/// A transfer on etcd: read both balances, refuse an overdraft, commit with compares.
pub(crate) async fn etcd_txn(
    etcd: &Etcd<'_>,
    invoked: &Value,
    micro_ops: &[MicroOp],
) -> Completion {
    let keys: Vec<&str> = micro_ops.iter().map(|m| m.key.as_str()).collect();
    if crate::list_append::distinct_keys(micro_ops).len() != keys.len() {
        return Completion::fail(invoked.clone(), "a transfer names one account twice");
    }
    let reads = match etcd.get_many(&keys).await {
        Ok(r) => r,
        Err(f) => return f.before_write(invoked),
    };
    let mut balances = Vec::with_capacity(keys.len());
    for (k, r) in keys.iter().zip(&reads) {
        match r.value.as_deref().map(str::parse::<i64>).transpose() {
            Ok(b) => balances.push(b.unwrap_or(INITIAL_BALANCE)),
            Err(e) => {
                return Completion::fail(
                    invoked.clone(),
                    format!("read phase: {k} holds {:?}, not a balance: {e}", r.value),
                )
            }
        }
    }
    let new = match apply_deltas(&balances, micro_ops) {
        Ok(n) => n,
        Err(e) => return Completion::fail(invoked.clone(), e),
    };
    let txn = TxnRequest {
        compare: keys
            .iter()
            .zip(&reads)
            .map(|(k, r)| Compare::mod_revision_equals(k, r.mod_revision))
            .collect(),
        success: keys
            .iter()
            .zip(&new)
            .map(|(k, b)| {
                RequestOp::Put(PutRequest {
                    key: b64(k),
                    value: b64(&b.to_string()),
                })
            })
            .collect(),
        failure: Vec::new(),
    };
    match etcd.txn(&txn).await {
        Ok(r) if r.succeeded => Completion::ok(invoked.clone()),
        Ok(_) => Completion::fail(
            invoked.clone(),
            "precondition-failed: a balance changed between read and commit",
        ),
        Err(f) => f.completion(invoked),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overdrafts_are_refused() {
        let v = Value::List(vec![
            micro("append", "acct0", Value::Int(-5)),
            micro("append", "acct1", Value::Int(5)),
        ]);
        let ops = MicroOp::parse_txn(&v).unwrap();
        assert!(is_bank_txn(&ops));
        assert_eq!(apply_deltas(&[7, 1], &ops).unwrap(), vec![2, 6]);
        assert_eq!(apply_deltas(&[5, 0], &ops).unwrap(), vec![0, 5]);
        let e = apply_deltas(&[4, 0], &ops).unwrap_err();
        assert!(e.contains("insufficient funds"), "{e}");
        let la =
            MicroOp::parse_txn(&Value::List(vec![micro("append", "la0", Value::Int(1))])).unwrap();
        assert!(!is_bank_txn(&la));
    }
}
