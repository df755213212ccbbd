//! Generators and clients per workload.
//!
//! A workload is three things: a seeded generator of operations, a client that turns one
//! operation into HTTP requests against `paxos-kv` and maps the reply to ok / fail / info
//! exactly as DESIGN.md's status table says, and the name of the model that judges the history.
//! Transactional workloads (list-append, rw-register, bank) send each txn as one `POST /txn`
//! (`f = "txn"`, the value a list of micro-ops) and are judged by `ordeal_checker::txn` (Elle
//! style) or, for bank, by `bank::check` (see `bank` for how transfers stay atomic).

pub mod bank;
pub mod client;
pub mod generator;

pub use client::{Completion, StoreClient};
pub use generator::{Generator, GeneratorConfig, OpSpec};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error(
        "unknown workload {0:?}: expected one of register, kv, list-append, rw-register, bank"
    )]
    UnknownWorkload(String),
    #[error("building the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
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

impl WorkloadKind {
    pub fn parse(s: &str) -> Result<WorkloadKind, WorkloadError> {
        match s {
            "register" => Ok(WorkloadKind::Register),
            "kv" => Ok(WorkloadKind::Kv),
            "list-append" => Ok(WorkloadKind::ListAppend),
            "rw-register" => Ok(WorkloadKind::RwRegister),
            "bank" => Ok(WorkloadKind::Bank),
            other => Err(WorkloadError::UnknownWorkload(other.to_string())),
        }
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

    /// Whether operations are transactions through `POST /txn` (no per-key final reads).
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
}

impl std::fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
