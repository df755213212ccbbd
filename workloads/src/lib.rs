//! Workloads: one module per workload, each owning its part of the seeded generator, how each
//! client protocol executes its operations, and which checker judges its history.
//!
//! | module | operations | ordeal-http | etcd-v3 | judged by |
//! |---|---|---|---|---|
//! | [`register`] | read / write / cas on a few keys | `GET`/`PUT /kv/k`, cas `?if_value=` | range / put / txn comparing the value | linearizability, cas-register per key |
//! | [`kv`] | get / put / append over many keys | `GET`/`PUT /kv/k`, append in `POST /txn` | range / put / read + txn comparing `mod_revision` | linearizability, kv model per key |
//! | [`list_append`] | txns of appends and reads | one `POST /txn` | read + one txn comparing every key's `mod_revision` | Elle list-append |
//! | [`rw_register`] | txns of writes and reads | one `POST /txn` | one txn of ranges and puts | Elle rw-register |
//! | [`bank`] | transfers and reads of every account | one `POST /txn` of two delta appends | read + txn comparing both accounts, refusing overdrafts | bank: sums (and no negative balance on etcd) |
//!
//! A client maps every reply to ok / fail / info: `fail` only where the store certainly did not
//! apply the request; see [`client`] for the paxos-kv (ordeal-http) table and [`etcd`] for
//! etcd's. After a definite refusal (the store said "unavailable") a client backs off
//! ([`backoff`]) so a run measures the store, not the retry loop.

pub mod backoff;
pub mod bank;
pub mod client;
pub mod etcd;
pub mod generator;
pub mod kv;
pub mod list_append;
pub mod ordeal_http;
pub mod register;
pub mod rw_register;
pub mod sharded_http;

pub use backoff::{Backoff, BackoffConfig};
pub use client::{Client, ClientConfig, Completion};
pub use generator::{Generator, GeneratorConfig, OpSpec};
pub use sharded_http::{ShardConfig, ShardRouter};

use serde::{Deserialize, Serialize};

/// The one error type of this crate.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error(
        "unknown workload {0:?}: expected one of register, kv, list-append, rw-register, bank"
    )]
    UnknownWorkload(String),
    #[error("unknown client protocol {0:?}: expected ordeal-http or etcd-v3")]
    UnknownProtocol(String),
    #[error("unknown read consistency {0:?}: expected linearizable or local")]
    UnknownReadConsistency(String),
    #[error("building the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// The client protocol a target speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// DESIGN.md's store API (PROTOCOL.md), which paxos-kv implements.
    #[default]
    OrdealHttp,
    /// etcd's v3 JSON gateway (`/v3/kv/...` on the client port).
    EtcdV3,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::OrdealHttp => "ordeal-http",
            Protocol::EtcdV3 => "etcd-v3",
        }
    }
}

impl std::str::FromStr for Protocol {
    type Err = WorkloadError;
    fn from_str(s: &str) -> Result<Protocol, WorkloadError> {
        match s {
            "ordeal-http" => Ok(Protocol::OrdealHttp),
            "etcd-v3" => Ok(Protocol::EtcdV3),
            other => Err(WorkloadError::UnknownProtocol(other.to_string())),
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How reads are served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadConsistency {
    /// Through the leader at a linearizable point (the default).
    #[default]
    Linearizable,
    /// From the node's own state (`?consistency=local` on ordeal-http, `serializable: true` on
    /// etcd): may be stale, and a run that uses it under partitions is expected to be invalid.
    Local,
}

impl ReadConsistency {
    pub fn as_str(self) -> &'static str {
        match self {
            ReadConsistency::Linearizable => "linearizable",
            ReadConsistency::Local => "local",
        }
    }
}

impl std::str::FromStr for ReadConsistency {
    type Err = WorkloadError;
    fn from_str(s: &str) -> Result<ReadConsistency, WorkloadError> {
        match s {
            "linearizable" => Ok(ReadConsistency::Linearizable),
            "local" => Ok(ReadConsistency::Local),
            other => Err(WorkloadError::UnknownReadConsistency(other.to_string())),
        }
    }
}

impl std::fmt::Display for ReadConsistency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which workload to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkloadKind {
    /// read / write / cas on a few keys; each key checked as a cas-register.
    Register,
    /// get / put / append over many keys; each key checked on its own.
    Kv,
    /// Transactions of 1-4 appends and reads over rotating keys; checked as Elle does.
    ListAppend,
    /// Transactions of 1-4 writes and reads over rotating keys; checked as Elle does.
    RwRegister,
    /// Transfers between accounts and reads of all accounts; every read must sum to the total.
    Bank,
}

/// Which checker judges a workload's history: the one dispatch `ordeal test` and
/// `ordeal check` share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Judge {
    /// Linearizability per key, against this model.
    Linearizable(ordeal_checker::linear::ModelKind),
    /// Elle-style transactional isolation (the consistency model is the run's choice).
    Txn(ordeal_checker::txn::Workload),
    /// The bank's sum (and, where the store refuses overdrafts, sign) invariant.
    Bank(ordeal_checker::bank::BankOptions),
}

impl Judge {
    /// Runs this checker over `history` (a txn check judges against `consistency`) within
    /// `time_budget`: the verdict and one line saying why. Bad histories are errors.
    pub fn verdict(
        &self,
        history: &ordeal_checker::History,
        time_budget: std::time::Duration,
        consistency: ordeal_checker::txn::Consistency,
    ) -> Result<(ordeal_checker::Verdict, String), ordeal_checker::HistoryError> {
        use ordeal_checker::linear;
        match self {
            Judge::Linearizable(kind) => {
                let options = linear::CheckOptions {
                    timeout: Some(time_budget),
                    ..linear::CheckOptions::default()
                };
                // A failed cas is not an observation of the register: a refusal (no leader)
                // fails a cas too, and the history does not tell the two apart.
                let model_options = linear::ModelOptions {
                    failed_cas_observed: false,
                };
                let report = linear::check_kind(*kind, model_options, history, &options)?;
                Ok((report.verdict, report.summary.clone()))
            }
            Judge::Txn(workload) => {
                let options = ordeal_checker::txn::TxnOptions {
                    workload: *workload,
                    consistency,
                    time_budget,
                    ..ordeal_checker::txn::TxnOptions::default()
                };
                let r = ordeal_checker::txn::check(history, &options)?;
                let summary = format!(
                    "{} ({} txns: {} ok, {} fail, {} info); anomalies: [{}]",
                    r.consistency,
                    r.stats.txns,
                    r.stats.ok,
                    r.stats.fail,
                    r.stats.info,
                    r.anomaly_types.join(", ")
                );
                Ok((r.verdict, summary))
            }
            Judge::Bank(options) => {
                let r = ordeal_checker::bank::check_with(history, options);
                Ok((r.verdict, r.summary()))
            }
        }
    }
}

impl std::str::FromStr for WorkloadKind {
    type Err = WorkloadError;
    fn from_str(s: &str) -> Result<WorkloadKind, WorkloadError> {
        WorkloadKind::parse(s)
    }
}

impl WorkloadKind {
    pub const ALL: [WorkloadKind; 5] = [
        WorkloadKind::Register,
        WorkloadKind::Kv,
        WorkloadKind::ListAppend,
        WorkloadKind::RwRegister,
        WorkloadKind::Bank,
    ];

    pub fn parse(s: &str) -> Result<WorkloadKind, WorkloadError> {
        WorkloadKind::ALL
            .into_iter()
            .find(|w| w.as_str() == s)
            .ok_or_else(|| WorkloadError::UnknownWorkload(s.to_string()))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Register => "register",
            WorkloadKind::Kv => "kv",
            WorkloadKind::ListAppend => "list-append",
            WorkloadKind::RwRegister => "rw-register",
            WorkloadKind::Bank => "bank",
        }
    }

    /// Whether operations are transactions (no per-key final reads).
    pub fn is_txn(self) -> bool {
        matches!(
            self,
            WorkloadKind::ListAppend | WorkloadKind::RwRegister | WorkloadKind::Bank
        )
    }

    /// The name of the `ordeal_checker` model that judges one key's history.
    pub fn model_name(self) -> &'static str {
        match self {
            WorkloadKind::Register => "cas-register",
            WorkloadKind::Kv => "kv",
            WorkloadKind::ListAppend => "list-append",
            WorkloadKind::RwRegister => "rw-register",
            WorkloadKind::Bank => "bank",
        }
    }

    /// The checker that judges this workload's history when run over `protocol`.
    pub fn judge(self, protocol: Protocol) -> Judge {
        match self {
            WorkloadKind::Register => register::judge(),
            WorkloadKind::Kv => kv::judge(),
            WorkloadKind::ListAppend => list_append::judge(),
            WorkloadKind::RwRegister => rw_register::judge(),
            WorkloadKind::Bank => bank::judge(protocol),
        }
    }
}

impl std::fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for w in WorkloadKind::ALL {
            assert_eq!(w.as_str().parse::<WorkloadKind>().unwrap(), w);
        }
        for p in [Protocol::OrdealHttp, Protocol::EtcdV3] {
            assert_eq!(p.to_string().parse::<Protocol>().unwrap(), p);
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{p}\""));
        }
        for c in [ReadConsistency::Linearizable, ReadConsistency::Local] {
            assert_eq!(c.to_string().parse::<ReadConsistency>().unwrap(), c);
            assert_eq!(serde_json::to_string(&c).unwrap(), format!("\"{c}\""));
        }
        assert!("etcd".parse::<Protocol>().is_err());
        assert!("strong".parse::<ReadConsistency>().is_err());
        assert!("bogus".parse::<WorkloadKind>().is_err());
    }

    #[test]
    fn bank_on_etcd_forbids_negative_balances() {
        let Judge::Bank(http) = WorkloadKind::Bank.judge(Protocol::OrdealHttp) else {
            panic!("bank is judged by the bank checker");
        };
        let Judge::Bank(etcd) = WorkloadKind::Bank.judge(Protocol::EtcdV3) else {
            panic!("bank is judged by the bank checker");
        };
        assert!(http.negative_allowed);
        assert!(!etcd.negative_allowed);
    }
}
