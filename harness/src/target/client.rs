//! The client side of a target's protocol, as the runner sees it: `Client::new(ClientConfig)`
//! and `client.invoke(base_url, op)`.
//!
//! MERGE NOTE: this module stands in for `ordeal_workloads::{Protocol, ReadConsistency, Client,
//! ClientConfig}` (branch `etcd-workloads`), with the same names and shapes, so that the merge
//! replaces it by a re-export. Until then `ordeal-http` goes through today's `StoreClient` and
//! `etcd-v3` speaks only the register workload (read, write, cas) through etcd's v3 JSON gateway;
//! every other etcd operation fails without being sent.

use base64::Engine;
use ordeal_checker::{EventType, Value};
use ordeal_workloads::{Completion, OpSpec, StoreClient, WorkloadError};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The wire protocol a target's clients speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    /// DESIGN's store API, specified in PROTOCOL.md; paxos-kv speaks it.
    #[serde(rename = "ordeal-http")]
    OrdealHttp,
    /// etcd's v3 JSON gateway.
    #[serde(rename = "etcd-v3")]
    EtcdV3,
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Protocol, String> {
        match s {
            "ordeal-http" => Ok(Protocol::OrdealHttp),
            "etcd-v3" => Ok(Protocol::EtcdV3),
            other => Err(format!(
                "unknown protocol {other:?}: expected ordeal-http or etcd-v3"
            )),
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::OrdealHttp => "ordeal-http",
            Protocol::EtcdV3 => "etcd-v3",
        })
    }
}

/// How reads are served: through the leader's log order, or from the node's own state (which
/// may be stale under a partition).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReadConsistency {
    #[default]
    Linearizable,
    Local,
}

impl std::str::FromStr for ReadConsistency {
    type Err = String;
    fn from_str(s: &str) -> Result<ReadConsistency, String> {
        match s {
            "linearizable" => Ok(ReadConsistency::Linearizable),
            "local" => Ok(ReadConsistency::Local),
            other => Err(format!(
                "unknown read consistency {other:?}: expected linearizable or local"
            )),
        }
    }
}

impl std::fmt::Display for ReadConsistency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReadConsistency::Linearizable => "linearizable",
            ReadConsistency::Local => "local",
        })
    }
}

pub struct ClientConfig {
    pub protocol: Protocol,
    pub timeout: Duration,
    pub max_idle_per_host: usize,
    pub read_consistency: ReadConsistency,
}

/// One shared client (one connection pool) for all logical clients.
#[derive(Clone)]
pub enum Client {
    OrdealHttp(StoreClient),
    EtcdV3(EtcdRegisterClient),
}

impl Client {
    pub fn new(config: ClientConfig) -> Result<Client, WorkloadError> {
        Ok(match config.protocol {
            Protocol::OrdealHttp => {
                Client::OrdealHttp(StoreClient::new(config.timeout, config.max_idle_per_host)?)
            }
            Protocol::EtcdV3 => Client::EtcdV3(EtcdRegisterClient {
                http: reqwest::Client::builder()
                    .connect_timeout(Duration::from_millis(500).min(config.timeout))
                    .pool_max_idle_per_host(config.max_idle_per_host)
                    .tcp_nodelay(true)
                    .build()?,
                timeout: config.timeout,
                serializable: config.read_consistency == ReadConsistency::Local,
            }),
        })
    }

    /// Performs `op` against the node whose client URL is `base_url` (`http://ip:port`).
    pub async fn invoke(&self, base_url: &str, op: &OpSpec) -> Completion {
        match self {
            Client::OrdealHttp(c) => c.invoke(base_url, op).await,
            Client::EtcdV3(c) => c.invoke(base_url, op).await,
        }
    }
}

/// The register workload on etcd (read, write, cas), enough for the harness's own tests until
/// the workloads crate's etcd client arrives. Outcomes: `fail` only for a failed compare or a
/// refused connection; every other error is `info`.
#[derive(Clone)]
pub struct EtcdRegisterClient {
    http: reqwest::Client,
    timeout: Duration,
    serializable: bool,
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

fn unb64(v: &serde_json::Value) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v.as_str()?)
        .ok()?;
    String::from_utf8(bytes).ok()
}

fn register_text(v: &Value) -> String {
    match v {
        Value::Str(s) => s.clone(),
        other => other.to_string(),
    }
}

fn done(kind: EventType, value: Value, error: Option<String>) -> Completion {
    Completion { kind, value, error }
}

impl EtcdRegisterClient {
    async fn post(
        &self,
        url: String,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, (bool, String)> {
        let resp = self
            .http
            .post(url)
            .json(&body)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| (e.is_connect(), format!("transport: {e}")))?;
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|e| (false, format!("transport: {e}")))?;
        if !(200..300).contains(&status) {
            return Err((
                false,
                format!(
                    "http {status}: {}",
                    text.chars().take(200).collect::<String>()
                ),
            ));
        }
        serde_json::from_str(&text).map_err(|e| (false, format!("bad reply: {e}")))
    }

    async fn invoke(&self, base_url: &str, op: &OpSpec) -> Completion {
        let input = op.value.clone();
        let (url, body) = match op.f {
            "read" => (
                format!("{base_url}/v3/kv/range"),
                serde_json::json!({"key": b64(&op.key), "serializable": self.serializable}),
            ),
            "write" => (
                format!("{base_url}/v3/kv/put"),
                serde_json::json!({"key": b64(&op.key), "value": b64(&register_text(&op.value))}),
            ),
            "cas" => {
                let (Some(expected), Some(new)) = (
                    op.value.as_list().and_then(|l| l.first()),
                    op.value.as_list().and_then(|l| l.get(1)),
                ) else {
                    return done(
                        EventType::Fail,
                        input,
                        Some("cas needs [expected new]".into()),
                    );
                };
                (
                    format!("{base_url}/v3/kv/txn"),
                    serde_json::json!({
                        "compare": [{"key": b64(&op.key), "target": "VALUE", "result": "EQUAL",
                                     "value": b64(&register_text(expected))}],
                        "success": [{"request_put": {"key": b64(&op.key), "value": b64(&register_text(new))}}],
                    }),
                )
            }
            other => {
                return done(
                    EventType::Fail,
                    input,
                    Some(format!(
                        "{other}: not sent (this build's etcd client speaks register only)"
                    )),
                )
            }
        };
        match self.post(url, body).await {
            Ok(reply) => match op.f {
                "read" => {
                    let value = reply["kvs"]
                        .as_array()
                        .and_then(|kvs| kvs.first())
                        .and_then(|kv| unb64(&kv["value"]))
                        .map(|s| s.parse::<i64>().map(Value::Int).unwrap_or(Value::Str(s)))
                        .unwrap_or(Value::Null);
                    done(EventType::Ok, value, None)
                }
                // The gateway leaves out `succeeded` when it is false.
                "cas" if reply["succeeded"].as_bool() != Some(true) => {
                    done(EventType::Fail, input, Some("precondition-failed".into()))
                }
                _ => done(EventType::Ok, input, None),
            },
            // Refused before sending: certainly not applied. A read has no effect either way.
            Err((true, e)) => done(EventType::Fail, input, Some(e)),
            Err((false, e)) if op.f == "read" => done(EventType::Fail, input, Some(e)),
            Err((false, e)) => done(EventType::Info, input, Some(e)),
        }
    }
}
