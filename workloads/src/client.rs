//! The client every logical client of a run shares: one operation in, one completion out.
//!
//! `Client` speaks the target's protocol ([`Protocol`]): `ordeal-http` (paxos-kv and any store
//! implementing PROTOCOL.md; mapping in [`crate::ordeal_http`]) or `etcd-v3` (etcd's JSON
//! gateway; mapping in [`crate::etcd`], executed per workload by the workload modules). One
//! connection pool serves every logical client and every node, so connections are reused
//! across operations. The only way to call an operation `fail` is to be certain it did not take
//! effect; everything uncertain is `info`.

use crate::etcd::Etcd;
use crate::generator::{MicroF, MicroOp, OpSpec};
use crate::ordeal_http::OrdealHttp;
use crate::{bank, kv, list_append, register, rw_register};
use crate::{Protocol, ReadConsistency, WorkloadError};
use ordeal_checker::{EventType, Value};
use std::time::Duration;

/// How an operation ended, as the completion event records it.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    pub kind: EventType,
    pub value: Value,
    pub error: Option<String>,
    /// A `fail` because the store or node refused to take the request at all (no leader,
    /// overloaded, connection refused), as opposed to a precondition that did not hold: the
    /// client should back off before its next operation ([`crate::Backoff`]).
    pub refused: bool,
}

impl Completion {
    pub fn ok(value: Value) -> Completion {
        Completion {
            kind: EventType::Ok,
            value,
            error: None,
            refused: false,
        }
    }
    /// Certainly not applied, for a reason that says nothing about availability.
    pub fn fail(value: Value, error: impl Into<String>) -> Completion {
        Completion {
            kind: EventType::Fail,
            value,
            error: Some(error.into()),
            refused: false,
        }
    }
    /// Certainly not applied because the store would not take it: back off.
    pub fn refused(value: Value, error: impl Into<String>) -> Completion {
        Completion {
            refused: true,
            ..Completion::fail(value, error)
        }
    }
    /// May or may not have been applied.
    pub fn info(value: Value, error: impl Into<String>) -> Completion {
        Completion {
            kind: EventType::Info,
            value,
            error: Some(error.into()),
            refused: false,
        }
    }
}

/// Everything a `Client` needs to know.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub protocol: Protocol,
    /// Per request; past it the outcome is `info`.
    pub timeout: Duration,
    /// Idle connections kept per node (at least the concurrency, so none is reopened).
    pub max_idle_per_host: usize,
    pub read_consistency: ReadConsistency,
}

/// A shared client (one connection pool for all logical clients); cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    config: ClientConfig,
}

/// The name the harness used before targets existed.
pub type StoreClient = Client;

/// Connecting is quick on loopback; a node that does not accept within this is down.
pub const CONNECT_TIMEOUT_MAX: Duration = Duration::from_millis(500);

impl Client {
    pub fn new(config: ClientConfig) -> Result<Client, WorkloadError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT_MAX.min(config.timeout))
            .pool_max_idle_per_host(config.max_idle_per_host)
            .tcp_nodelay(true)
            .build()?;
        Ok(Client { http, config })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Performs `op` against the node whose client URL is `base_url` (`http://ip:port`).
    pub async fn invoke(&self, base_url: &str, op: &OpSpec) -> Completion {
        match self.config.protocol {
            Protocol::OrdealHttp => {
                OrdealHttp {
                    http: &self.http,
                    timeout: self.config.timeout,
                    read_consistency: self.config.read_consistency,
                }
                .invoke(base_url, op)
                .await
            }
            Protocol::EtcdV3 => {
                let etcd = Etcd {
                    http: &self.http,
                    base_url,
                    timeout: self.config.timeout,
                    serializable: self.config.read_consistency == ReadConsistency::Local,
                };
                invoke_etcd(&etcd, op).await
            }
        }
    }
}

/// Which workload's etcd execution an operation takes. Single-key reads and writes look the
/// same in register and kv (the stored text says whether it is an integer); a txn is
/// rw-register's if it writes, bank's if it touches only accounts, list-append's otherwise
/// (a read-only txn reads the same way in all three).
async fn invoke_etcd(etcd: &Etcd<'_>, op: &OpSpec) -> Completion {
    match op.f {
        "read" => register::etcd_read(etcd, op).await,
        "write" => register::etcd_write(etcd, op).await,
        "cas" => register::etcd_cas(etcd, op).await,
        "append" => kv::etcd_append(etcd, op).await,
        "txn" => {
            let micro_ops = match MicroOp::parse_txn(&op.value) {
                Ok(m) => m,
                Err(e) => return Completion::fail(op.value.clone(), e),
            };
            if micro_ops.iter().all(|m| m.f == MicroF::Read) {
                etcd_read_txn(etcd, &op.value, &micro_ops).await
            } else if micro_ops.iter().any(|m| m.f == MicroF::Write) {
                rw_register::etcd_txn(etcd, &op.value, &micro_ops).await
            } else if bank::is_bank_txn(&micro_ops) {
                bank::etcd_txn(etcd, &op.value, &micro_ops).await
            } else {
                list_append::etcd_txn(etcd, &op.value, &micro_ops).await
            }
        }
        other => Completion::fail(op.value.clone(), format!("unknown operation {other}")),
    }
}

/// A read-only txn (any workload's): one txn of ranges, at one revision. The stored text says
/// what it is: a list (`[1,2]`, list-append), an integer (rw-register, bank) or absent.
async fn etcd_read_txn(etcd: &Etcd<'_>, invoked: &Value, micro_ops: &[MicroOp]) -> Completion {
    let keys = list_append::distinct_keys(micro_ops);
    let reads = match etcd.get_many(&keys).await {
        Ok(r) => r,
        Err(f) => return f.completion(invoked),
    };
    let mut results = Vec::with_capacity(micro_ops.len());
    for m in micro_ops {
        let i = keys.iter().position(|k| *k == m.key).unwrap_or(0);
        match reads[i].value.as_deref().map(decode_stored).transpose() {
            Ok(v) => results.push(v.unwrap_or(Value::Null)),
            // The read happened but what it read is not known: unknown.
            Err(e) => return Completion::info(invoked.clone(), e),
        }
    }
    Completion::ok(list_append::with_reads(invoked, results.into_iter()))
}

/// A stored text as a txn read records it: a list-append list, or an integer.
pub(crate) fn decode_stored(text: &str) -> Result<Value, String> {
    if text.starts_with('[') {
        let items = list_append::parse_list(text)?;
        return Ok(Value::List(items.into_iter().map(Value::Int).collect()));
    }
    text.parse::<i64>()
        .map(Value::Int)
        .map_err(|e| format!("stored value {text:?} is neither a list nor an integer: {e}"))
}

/// Register values are integers in the history and decimal strings in the store; kv values
/// are strings in both.
pub(crate) fn value_to_store(v: &Value) -> String {
    match v {
        Value::Str(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A stored string as the history records it: kv values end in a comma and stay strings;
/// register values are integers.
pub(crate) fn value_from_store(s: &str) -> Value {
    match s.parse::<i64>() {
        Ok(i) => Value::Int(i),
        Err(_) => Value::Str(s.to_string()),
    }
}
