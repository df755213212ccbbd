//! The bank workload's checker.
//!
//! Design: `POST /txn` evaluates reads at apply time, so a client cannot condition a write on a
//! balance it read in the same txn, and a read-then-write over two requests would race. A
//! transfer therefore never writes a balance: it appends `-amount` to one account's list and
//! `+amount` to the other's, in one txn (one log command on a correct store). An account's
//! balance is `INITIAL_BALANCE + sum(deltas)`, so every transfer preserves the total whatever
//! order transfers apply in. A read is one txn reading every account; on a correct store it sees
//! a prefix of the log, hence whole transfers only, and its balances sum to the total. A store
//! that applies a transfer's two appends separately (`--bug non-atomic-txn`) lets a read fall
//! between them, and that read's sum is off by the amount. Balances may go negative (nothing
//! can refuse an overdraft without a conditional txn), so negativity is not checked.

use ordeal_checker::{EventType, History, Value, Verdict};
use serde::{Deserialize, Serialize};

/// Number of accounts.
pub const ACCOUNTS: usize = 5;
/// Account keys are `acct0`, `acct1`, ...
pub const ACCOUNT_PREFIX: &str = "acct";
/// Every account's balance before any transfer.
pub const INITIAL_BALANCE: i64 = 100;
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
    pub reads_checked: usize,
    pub bad_read_count: usize,
    pub bad_reads: Vec<BadRead>,
}

impl BankResult {
    pub fn summary(&self) -> String {
        if self.bad_read_count > 0 {
            format!(
                "{} of {} reads of all accounts do not sum to {}",
                self.bad_read_count, self.reads_checked, self.expected_total
            )
        } else if self.reads_checked == 0 {
            "no ok read of all accounts: nothing was checked".into()
        } else {
            format!(
                "all {} reads of all {} accounts sum to {}",
                self.reads_checked, self.accounts, self.expected_total
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

/// The balance a read of one account shows: `initial + sum(deltas)`; `None` (never touched) is
/// the initial balance. Anything but a list of integers is an error text.
fn balance(read: &Value, initial: i64) -> Result<i64, String> {
    match read {
        Value::Null => Ok(initial),
        Value::List(items) => items.iter().try_fold(initial, |acc, v| match v {
            Value::Int(d) => Ok(acc + d),
            other => Err(format!("read a non-integer delta {other}")),
        }),
        other => Err(format!("read {other}, not a list of deltas")),
    }
}

/// Checks every ok txn that reads all `accounts` (keys `acct0..`): balances must sum to
/// `accounts * initial`.
pub fn check(history: &History, accounts: usize, initial: i64) -> BankResult {
    let expected = accounts as i64 * initial;
    let mut result = BankResult {
        verdict: Verdict::Valid,
        accounts,
        expected_total: expected,
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
        let mut problem = None;
        for (k, v) in &reads {
            match balance(v, initial) {
                Ok(b) => balances.push((k.clone(), b)),
                Err(p) => problem = Some(format!("{k}: {p}")),
            }
        }
        let sum: i64 = balances.iter().map(|(_, b)| b).sum();
        let problem = problem.or_else(|| {
            (sum != expected)
                .then(|| format!("sum {sum} != total {expected}: off by {}", sum - expected))
        });
        if let Some(problem) = problem {
            result.bad_read_count += 1;
            if result.bad_reads.len() < MAX_REPORTED_READS {
                result.bad_reads.push(BadRead {
                    index: e.index,
                    time_ns: e.time,
                    process: e.process.to_string(),
                    balances,
                    sum,
                    expected,
                    problem,
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
    use ordeal_checker::{Event, Process};

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
}
