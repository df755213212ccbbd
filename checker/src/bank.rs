//! The bank checker: every read of all accounts must sum to the total, and, where the store
//! refuses overdrafts, no balance may be negative.
//!
//! A read is an ok txn whose micro-ops are all `["r", account, v]` over every account. An
//! account's balance as read is one of:
//! - `null`: never written, the initial balance;
//! - a list of integer deltas (stores that apply transfers as two appends, e.g. paxos-kv's
//!   `POST /txn`): `initial + sum(deltas)`;
//! - an integer: the balance itself (stores whose transfers are conditional txns that write
//!   balances, e.g. etcd's).
//!
//! On a correct store a read sees whole transfers only, so its balances sum to
//! `accounts * initial`. A store that applies a transfer's two halves separately lets a read fall
//! between them, and that read's sum is off by the amount. Negative balances are only an error
//! when `BankOptions::negative_allowed` is false: a store that appends deltas cannot refuse an
//! overdraft, one that compares before it writes can and must.

use crate::{EventType, History, Value, Verdict};
use serde::{Deserialize, Serialize};

/// How many offending reads the result lists in full (all are counted).
pub const MAX_REPORTED_READS: usize = 20;

/// A read of all accounts whose balances do not sum to the total.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BadRead {
    pub index: u64,
    pub time_ns: i64,
    pub process: String,
    /// `(account, balance)` as read.
    pub balances: Vec<(String, i64)>,
    pub sum: i64,
    pub expected: i64,
    pub problem: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BankResult {
    pub verdict: Verdict,
    pub accounts: usize,
    pub expected_total: i64,
    /// Whether negative balances were allowed (see `BankOptions`).
    #[serde(default = "negative_allowed_default")]
    pub negative_allowed: bool,
    pub reads_checked: usize,
    pub bad_read_count: usize,
    pub bad_reads: Vec<BadRead>,
}

fn negative_allowed_default() -> bool {
    true
}

impl BankResult {
    pub fn summary(&self) -> String {
        if self.bad_read_count > 0 {
            format!(
                "{} of {} reads of all accounts do not sum to {}{}",
                self.bad_read_count,
                self.reads_checked,
                self.expected_total,
                if self.negative_allowed {
                    ""
                } else {
                    " or show a negative balance"
                }
            )
        } else if self.reads_checked == 0 {
            "no ok read of all accounts: nothing was checked".into()
        } else {
            format!(
                "all {} reads of all {} accounts sum to {}{}",
                self.reads_checked,
                self.accounts,
                self.expected_total,
                if self.negative_allowed {
                    ""
                } else {
                    ", none negative"
                }
            )
        }
    }

    /// An HTML table of the offending reads (values escaped).
    pub fn to_html(&self) -> String {
        let mut s = format!(
            "<p>{}</p><table class=\"bank\"><tr><th>index</th><th>process</th><th>time (s)</th><th>balances</th><th>sum</th><th>problem</th></tr>",
            escape(&self.summary())
        );
        for r in &self.bad_reads {
            let balances: Vec<String> = r
                .balances
                .iter()
                .map(|(k, b)| format!("{}={b}", escape(k)))
                .collect();
            s.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{:.3}</td><td>{}</td><td>{} (expected {})</td><td>{}</td></tr>",
                r.index,
                escape(&r.process),
                r.time_ns as f64 / 1e9,
                balances.join(" "),
                r.sum,
                r.expected,
                escape(&r.problem)
            ));
        }
        s.push_str("</table>");
        if self.bad_read_count > self.bad_reads.len() {
            s.push_str(&format!(
                "<p>... and {} more</p>",
                self.bad_read_count - self.bad_reads.len()
            ));
        }
        s
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// What the bank check assumes about the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BankOptions {
    /// Number of accounts; a read of all of them has this many micro-ops.
    pub accounts: usize,
    /// Every account's balance before any transfer.
    pub initial_balance: i64,
    /// Whether a balance may go negative. False for a store whose transfers compare before they
    /// write (etcd's txns), which must refuse an overdraft.
    pub negative_allowed: bool,
}

/// The balance a read of one account shows: `null` (never touched) is the initial balance, a
/// list is `initial + sum(deltas)`, an integer is the balance itself. Anything else is an error
/// text.
fn balance(read: &Value, initial: i64) -> Result<i64, String> {
    match read {
        Value::Null => Ok(initial),
        Value::Int(b) => Ok(*b),
        Value::List(items) => items.iter().try_fold(initial, |acc, v| match v {
            Value::Int(d) => acc
                .checked_add(*d)
                .ok_or_else(|| format!("balance overflows at delta {d}")),
            other => Err(format!("read a non-integer delta {other}")),
        }),
        other => Err(format!("read {other}, not a balance or a list of deltas")),
    }
}

/// Checks every ok txn that reads all `accounts` (keys `acct0..`): balances must sum to
/// `accounts * initial`; balances allowed to go negative (stores that append deltas).
pub fn check(history: &History, accounts: usize, initial: i64) -> BankResult {
    check_with(
        history,
        &BankOptions {
            accounts,
            initial_balance: initial,
            negative_allowed: true,
        },
    )
}

/// Checks every ok read of all accounts against `options`.
pub fn check_with(history: &History, options: &BankOptions) -> BankResult {
    let (accounts, initial) = (options.accounts, options.initial_balance);
    let expected = accounts as i64 * initial;
    let mut result = BankResult {
        verdict: Verdict::Valid,
        accounts,
        expected_total: expected,
        negative_allowed: options.negative_allowed,
        reads_checked: 0,
        bad_read_count: 0,
        bad_reads: Vec::new(),
    };
    for e in &history.events {
        if e.kind != EventType::Ok || e.f != "txn" {
            continue;
        }
        let Some(ops) = e.value.as_list() else {
            continue;
        };
        let reads: Vec<(String, &Value)> = ops
            .iter()
            .filter_map(|m| {
                let m = m.as_list()?;
                (m.len() == 3 && m[0] == Value::Str("r".into())).then(|| (m[1].to_string(), &m[2]))
            })
            .collect();
        if reads.len() != ops.len() || reads.len() != accounts {
            continue;
        }
        result.reads_checked += 1;
        let mut balances = Vec::with_capacity(accounts);
        let mut problems = Vec::new();
        for (k, v) in &reads {
            match balance(v, initial) {
                Ok(b) => {
                    if b < 0 && !options.negative_allowed {
                        problems.push(format!("{k} is negative ({b})"));
                    }
                    balances.push((k.clone(), b));
                }
                Err(p) => problems.push(format!("{k}: {p}")),
            }
        }
        let sum = balances
            .iter()
            .try_fold(0i64, |acc, (_, b)| acc.checked_add(*b));
        match sum {
            Some(s) if s != expected => problems.push(format!(
                "sum {s} != total {expected}: off by {}",
                s - expected
            )),
            None => problems.push("the balances' sum overflows".into()),
            Some(_) => {}
        }
        if !problems.is_empty() {
            result.bad_read_count += 1;
            if result.bad_reads.len() < MAX_REPORTED_READS {
                result.bad_reads.push(BadRead {
                    index: e.index,
                    time_ns: e.time,
                    process: e.process.to_string(),
                    balances,
                    sum: sum.unwrap_or(i64::MAX),
                    expected,
                    problem: problems.join("; "),
                });
            }
        }
    }
    result.verdict = if result.bad_read_count > 0 {
        Verdict::Invalid
    } else if result.reads_checked == 0 {
        Verdict::Unknown
    } else {
        Verdict::Valid
    };
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Event, Process};

    fn r(k: &str, deltas: &[i64]) -> Value {
        let v = if deltas.is_empty() {
            Value::Null
        } else {
            Value::List(deltas.iter().map(|d| Value::Int(*d)).collect())
        };
        Value::List(vec![Value::Str("r".into()), Value::Str(k.into()), v])
    }

    fn read_txn(p: u64, reads: Vec<Value>) -> Vec<Event> {
        vec![
            Event::new(Process::Client(p), EventType::Invoke, "txn", Value::Null),
            Event::new(Process::Client(p), EventType::Ok, "txn", Value::List(reads)),
        ]
    }

    #[test]
    fn balanced_reads_are_valid_and_torn_ones_invalid() {
        let good = read_txn(0, vec![r("acct0", &[-3]), r("acct1", &[3])]);
        let h = History::new(good.clone());
        let res = check(&h, 2, 10);
        assert_eq!(res.verdict, Verdict::Valid, "{res:?}");
        assert_eq!(res.reads_checked, 1);

        let mut events = good;
        // A read between a transfer's two appends: the debit without the credit.
        events.extend(read_txn(1, vec![r("acct0", &[-3, -2]), r("acct1", &[3])]));
        let res = check(&History::new(events), 2, 10);
        assert_eq!(res.verdict, Verdict::Invalid, "{res:?}");
        assert_eq!(res.bad_read_count, 1);
        assert_eq!(res.bad_reads[0].sum, 18);
        assert!(res.to_html().contains("acct0=5"), "{}", res.to_html());
    }

    #[test]
    fn garbage_and_no_reads() {
        let h = History::new(vec![]);
        assert_eq!(check(&h, 2, 10).verdict, Verdict::Unknown);
        let bad = Value::List(vec![
            Value::Str("r".into()),
            Value::Str("acct0".into()),
            Value::Str("x".into()),
        ]);
        let h = History::new(read_txn(0, vec![bad, r("acct1", &[])]));
        assert_eq!(check(&h, 2, 10).verdict, Verdict::Invalid);
    }

    #[test]
    fn integer_balances_and_negative_ones() {
        let int_read = |p, a: i64, b: i64| {
            read_txn(
                p,
                vec![
                    Value::List(vec![
                        Value::Str("r".into()),
                        Value::Str("acct0".into()),
                        Value::Int(a),
                    ]),
                    Value::List(vec![
                        Value::Str("r".into()),
                        Value::Str("acct1".into()),
                        Value::Int(b),
                    ]),
                ],
            )
        };
        let strict = BankOptions {
            accounts: 2,
            initial_balance: 10,
            negative_allowed: false,
        };
        let ok = History::new(int_read(0, 4, 16));
        let res = check_with(&ok, &strict);
        assert_eq!(res.verdict, Verdict::Valid, "{res:?}");
        assert!(res.summary().contains("none negative"), "{}", res.summary());
        // Sums to the total, but one account is overdrawn: invalid only when the store
        // refuses overdrafts.
        let overdrawn = History::new(int_read(0, -1, 21));
        let res = check_with(&overdrawn, &strict);
        assert_eq!(res.verdict, Verdict::Invalid, "{res:?}");
        assert!(res.bad_reads[0].problem.contains("negative"), "{res:?}");
        assert_eq!(check(&overdrawn, 2, 10).verdict, Verdict::Valid);
        // An integer balance off by one is caught like a list of deltas is.
        let torn = History::new(int_read(0, 5, 16));
        assert_eq!(check_with(&torn, &strict).verdict, Verdict::Invalid);
    }
}
