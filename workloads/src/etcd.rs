//! etcd's v3 JSON gateway (etcd 3.4 serves it at `/v3/...` on every client port), and how its
//! replies map to ok / fail / info.
//!
//! Requests are `POST` with JSON bodies: `/v3/kv/range`, `/v3/kv/put`, `/v3/kv/txn`,
//! `/v3/kv/deleterange`; keys and values are base64, int64 fields (revisions) are JSON strings.
//! Every request but a local read carries the gRPC metadata `hasleader: true` (header
//! `Grpc-Metadata-Hasleader`), so that a node without a leader refuses at once with
//! `etcdserver: no leader` (before its handler runs: certainly not applied) instead of holding
//! the request for 7 s until it times out. Reads are linearizable unless the client asked for
//! local reads, which set `serializable: true` and omit `hasleader`: the node answers from its
//! own state even when it has lost its leader, which is how a partitioned node serves stale
//! reads (and why `--read-consistency local` is expected to be invalid under partitions).
//!
//! An error reply is `{"error": msg, "message": msg, "code": grpc_code}` with the HTTP status
//! grpc-gateway derives from the code. Shapes seen from etcd 3.4.23 (requests made against
//! real clusters while writing this module):
//!
//! | what happened | HTTP | body | outcome |
//! |---|---|---|---|
//! | applied / read | 200 | the response | ok |
//! | txn compare did not hold | 200 | `succeeded` absent (false) | fail (nothing applied) |
//! | two puts of one key in a txn | 400 | code 3, `etcdserver: duplicate key given in txn request` | fail |
//! | unparsable body | 400 | code 3, `unexpected EOF` | fail |
//! | no such path | 404 | `Not Found` (text) | fail |
//! | node has no leader (with `hasleader`) | 503 | code 14, `etcdserver: no leader` | fail, back off |
//! | too many pending proposals | 429 | code 8, `etcdserver: too many requests` | fail, back off |
//! | quorum lost or paused: proposal or read index waited 7 s | 503 | code 14, `etcdserver: request timed out` (also `..., possibly due to previous leader failure` / `connection lost`) | info |
//! | no leader, without `hasleader` | 500 | code 2, `context deadline exceeded` | info |
//! | leader changed while waiting | 503 | code 14, `etcdserver: leader changed` | info |
//! | server stopping | 503 | code 14, `etcdserver: server stopped` | info |
//! | connection refused (nothing sent) | - | - | fail, back off |
//! | client timeout, reset or EOF after sending | - | - | info |
//!
//! The rule behind the table: gRPC codes that etcd only returns from request validation or
//! admission before a proposal (InvalidArgument 3, NotFound 5, AlreadyExists 6,
//! PermissionDenied 7, ResourceExhausted 8, FailedPrecondition 9, OutOfRange 11,
//! Unimplemented 12, Unauthenticated 16), and `etcdserver: no leader`, are `fail`; every other
//! code (Unknown 2, DeadlineExceeded 4, Canceled 1, Aborted 10, Internal 13, Unavailable 14
//! with any other message, DataLoss 15) may come after the proposal and is `info`.

use crate::client::Completion;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ordeal_checker::Value;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use std::time::Duration;

/// How a request that did not succeed ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Certainly not applied. `refused`: the node would not take the request at all (no
    /// leader, overloaded, connection refused): the client backs off.
    NotApplied { reason: String, refused: bool },
    /// May or may not have been applied.
    Unknown(String),
}

impl Failure {
    /// The completion of an operation whose (only or last) request ended in this failure.
    pub fn completion(self, input: &Value) -> Completion {
        match self {
            Failure::NotApplied {
                reason,
                refused: true,
            } => Completion::refused(input.clone(), reason),
            Failure::NotApplied { reason, .. } => Completion::fail(input.clone(), reason),
            Failure::Unknown(reason) => Completion::info(input.clone(), reason),
        }
    }

    /// The completion of an operation that failed while reading, before any write of it was
    /// sent: certainly not applied, whatever happened to the read.
    pub fn before_write(self, input: &Value) -> Completion {
        match self {
            Failure::NotApplied {
                reason,
                refused: true,
            } => Completion::refused(input.clone(), format!("read phase: {reason}")),
            Failure::NotApplied { reason, .. } | Failure::Unknown(reason) => {
                Completion::fail(input.clone(), format!("read phase: {reason}"))
            }
        }
    }
}

/// The gRPC status codes etcd returns only before it proposes a request.
const NOT_APPLIED_CODES: [i32; 9] = [3, 5, 6, 7, 8, 9, 11, 12, 16];
/// ResourceExhausted: `etcdserver: too many requests`, an overloaded node.
const CODE_RESOURCE_EXHAUSTED: i32 = 8;
/// The interceptor's answer to `hasleader` on a leaderless node, before any handler runs.
const NO_LEADER: &str = "etcdserver: no leader";

/// Maps a gRPC status (from a gateway error body) to a failure.
pub fn classify_grpc(code: i32, message: &str) -> Failure {
    let reason = format!("grpc {code}: {message}");
    if message == NO_LEADER {
        return Failure::NotApplied {
            reason,
            refused: true,
        };
    }
    if NOT_APPLIED_CODES.contains(&code) {
        return Failure::NotApplied {
            reason,
            refused: code == CODE_RESOURCE_EXHAUSTED,
        };
    }
    Failure::Unknown(reason)
}

#[derive(Deserialize)]
struct GatewayError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    message: String,
    code: i32,
}

/// Maps a non-2xx gateway reply to a failure: by its gRPC code when the body is the gateway's
/// error JSON; otherwise a 4xx (the gateway's own routing, e.g. 404) was not applied and
/// anything else is unknown.
pub fn classify_reply(status: u16, body: &str) -> Failure {
    if let Ok(e) = serde_json::from_str::<GatewayError>(body) {
        let message = if e.message.is_empty() {
            e.error
        } else {
            e.message
        };
        return classify_grpc(e.code, &message);
    }
    let short: String = body.chars().take(200).collect();
    let reason = format!("http {status}: {}", short.trim());
    if (400..500).contains(&status) {
        Failure::NotApplied {
            reason,
            refused: false,
        }
    } else {
        Failure::Unknown(reason)
    }
}

/// A transport error: a refused connection (or one not established in time) means the request
/// never left; anything later (timeout, reset mid-reply) leaves the outcome unknown.
pub fn classify_transport(err: &reqwest::Error) -> Failure {
    let cause = crate::ordeal_http::root_cause(err);
    if err.is_connect() {
        Failure::NotApplied {
            reason: format!("connect: {cause}"),
            refused: true,
        }
    } else if err.is_timeout() {
        Failure::Unknown("client-timeout".into())
    } else {
        Failure::Unknown(format!("transport: {cause}"))
    }
}

pub(crate) fn b64(s: &str) -> String {
    BASE64.encode(s)
}

/// A stored value as text; values ordeal writes are UTF-8, anything else is shown lossily.
fn unb64(s: &str) -> Result<String, String> {
    let bytes = BASE64
        .decode(s)
        .map_err(|e| format!("value {s:?} is not base64: {e}"))?;
    Ok(String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into()))
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// int64 fields come as JSON strings (proto3 JSON); accept numbers too.
fn int64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int {
        Str(String),
        Num(i64),
    }
    match Int::deserialize(d)? {
        Int::Num(n) => Ok(n),
        Int::Str(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

#[derive(Serialize, Debug, PartialEq)]
pub struct RangeRequest {
    pub key: String,
    #[serde(skip_serializing_if = "is_false")]
    pub serializable: bool,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct PutRequest {
    pub key: String,
    pub value: String,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct DeleteRangeRequest {
    pub key: String,
}

/// What a txn compares; etcd compares an absent key's revisions as 0.
#[derive(Serialize, Debug, PartialEq)]
pub struct Compare {
    pub key: String,
    pub target: CompareTarget,
    /// Always `EQUAL` here.
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mod_revision: Option<i64>,
}

#[derive(Serialize, Debug, PartialEq, Clone, Copy)]
pub enum CompareTarget {
    #[serde(rename = "VALUE")]
    Value,
    #[serde(rename = "MOD")]
    Mod,
}

impl Compare {
    /// The key's value is `value` (false for an absent key).
    pub fn value_equals(key: &str, value: &str) -> Compare {
        Compare {
            key: b64(key),
            target: CompareTarget::Value,
            result: "EQUAL",
            value: Some(b64(value)),
            mod_revision: None,
        }
    }
    /// The key was last modified at `mod_revision` (0: it is absent).
    pub fn mod_revision_equals(key: &str, mod_revision: i64) -> Compare {
        Compare {
            key: b64(key),
            target: CompareTarget::Mod,
            result: "EQUAL",
            value: None,
            mod_revision: Some(mod_revision),
        }
    }
}

#[derive(Serialize, Debug, PartialEq)]
pub enum RequestOp {
    #[serde(rename = "request_range")]
    Range(RangeRequest),
    #[serde(rename = "request_put")]
    Put(PutRequest),
}

#[derive(Serialize, Debug, PartialEq, Default)]
pub struct TxnRequest {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub compare: Vec<Compare>,
    pub success: Vec<RequestOp>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failure: Vec<RequestOp>,
}

#[derive(Deserialize, Debug, Default)]
pub struct KeyValue {
    #[serde(default)]
    pub value: String,
    #[serde(default, deserialize_with = "int64")]
    pub mod_revision: i64,
}

#[derive(Deserialize, Debug, Default)]
pub struct RangeResponse {
    #[serde(default)]
    pub kvs: Vec<KeyValue>,
}

#[derive(Deserialize, Debug, Default)]
pub struct ResponseOp {
    #[serde(default)]
    pub response_range: Option<RangeResponse>,
}

#[derive(Deserialize, Debug, Default)]
pub struct TxnResponse {
    /// Absent (proto3's default) when the compares did not hold.
    #[serde(default)]
    pub succeeded: bool,
    #[serde(default)]
    pub responses: Vec<ResponseOp>,
}

/// A node's view of the cluster, from `/v3/maintenance/status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This node's member id.
    pub member_id: u64,
    /// The member id of the leader it knows, if any.
    pub leader: Option<u64>,
    pub raft_term: u64,
    /// The server's version, e.g. `3.4.23`.
    pub version: String,
}

/// uint64 fields come as JSON strings (proto3 JSON); accept numbers too.
fn uint64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int {
        Str(String),
        Num(u64),
    }
    match Int::deserialize(d)? {
        Int::Num(n) => Ok(n),
        Int::Str(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

#[derive(Deserialize, Debug, Default)]
struct ResponseHeader {
    #[serde(default, deserialize_with = "uint64")]
    member_id: u64,
}

#[derive(Deserialize, Debug, Default)]
struct StatusResponse {
    #[serde(default)]
    header: ResponseHeader,
    #[serde(default)]
    version: String,
    #[serde(default, deserialize_with = "uint64")]
    leader: u64,
    #[serde(default, rename = "raftTerm", deserialize_with = "uint64")]
    raft_term: u64,
}

/// One key as read: its text (None if absent) and the revision that last wrote it (0 if
/// absent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Read {
    pub value: Option<String>,
    pub mod_revision: i64,
}

impl RangeResponse {
    /// The one key a single-key range asked for.
    pub fn single(&self) -> Result<Read, String> {
        match self.kvs.first() {
            None => Ok(Read {
                value: None,
                mod_revision: 0,
            }),
            Some(kv) => Ok(Read {
                value: Some(unb64(&kv.value)?),
                mod_revision: kv.mod_revision,
            }),
        }
    }
}

/// One node's gateway, borrowed for one operation.
pub struct Etcd<'a> {
    pub http: &'a reqwest::Client,
    /// `http://ip:port`, the node's client URL.
    pub base_url: &'a str,
    pub timeout: Duration,
    /// Local reads: `serializable: true` on every range.
    pub serializable: bool,
}

impl Etcd<'_> {
    /// POSTs `request` to `path` and parses a 200 reply as `Resp`. `require_leader`: a node
    /// without a leader refuses at once (see the module docs).
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        request: &Req,
        require_leader: bool,
    ) -> Result<Resp, Failure> {
        let mut url = String::with_capacity(self.base_url.len() + path.len());
        url.push_str(self.base_url);
        url.push_str(path);
        let mut post = self.http.post(url);
        if require_leader {
            post = post.header("Grpc-Metadata-Hasleader", "true");
        }
        let resp = post
            .json(request)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| classify_transport(&e))?;
        let status = resp.status().as_u16();
        // A reply whose body is lost: applied or not, what it said is unknown.
        let body = resp.bytes().await.map_err(|e| classify_transport(&e))?;
        if status == 200 {
            serde_json::from_slice(&body).map_err(|e| {
                let short: String = String::from_utf8_lossy(&body).chars().take(200).collect();
                Failure::Unknown(format!("unparsable reply {short:?} from {path}: {e}"))
            })
        } else {
            Err(classify_reply(status, &String::from_utf8_lossy(&body)))
        }
    }

    fn range_request(&self, key: &str) -> RangeRequest {
        RangeRequest {
            key: b64(key),
            serializable: self.serializable,
        }
    }

    /// Reads one key.
    pub async fn get(&self, key: &str) -> Result<Read, Failure> {
        let r: RangeResponse = self
            .call("/v3/kv/range", &self.range_request(key), !self.serializable)
            .await?;
        r.single().map_err(Failure::Unknown)
    }

    /// Reads several keys at one revision (one txn of ranges, which etcd serves as one
    /// linearizable read, or from local state when serializable).
    pub async fn get_many(&self, keys: &[&str]) -> Result<Vec<Read>, Failure> {
        let txn = TxnRequest {
            success: keys
                .iter()
                .map(|k| RequestOp::Range(self.range_request(k)))
                .collect(),
            ..TxnRequest::default()
        };
        let r: TxnResponse = self.call("/v3/kv/txn", &txn, !self.serializable).await?;
        reads_of(&r, keys.len()).map_err(Failure::Unknown)
    }

    pub async fn put(&self, key: &str, value: &str) -> Result<(), Failure> {
        let request = PutRequest {
            key: b64(key),
            value: b64(value),
        };
        self.call::<_, serde::de::IgnoredAny>("/v3/kv/put", &request, true)
            .await
            .map(|_| ())
    }

    pub async fn delete(&self, key: &str) -> Result<(), Failure> {
        let request = DeleteRangeRequest { key: b64(key) };
        self.call::<_, serde::de::IgnoredAny>("/v3/kv/deleterange", &request, true)
            .await
            .map(|_| ())
    }

    /// `/v3/maintenance/status`: who this node is and which member it believes leads. Asked
    /// without `hasleader`, so a leaderless node answers (with `leader: None`).
    pub async fn status(&self) -> Result<Status, Failure> {
        let r: StatusResponse = self
            .call("/v3/maintenance/status", &serde_json::json!({}), false)
            .await?;
        Ok(Status {
            member_id: r.header.member_id,
            leader: (r.leader != 0).then_some(r.leader),
            raft_term: r.raft_term,
            version: r.version,
        })
    }

    /// A txn that writes (or reads linearizably): requires a leader.
    pub async fn txn(&self, txn: &TxnRequest) -> Result<TxnResponse, Failure> {
        self.call("/v3/kv/txn", txn, true).await
    }
}

/// The reads of a txn whose first `n` responses are ranges, in order.
pub fn reads_of(r: &TxnResponse, n: usize) -> Result<Vec<Read>, String> {
    if r.responses.len() < n {
        return Err(format!(
            "txn reply has {} responses for {n} ranges",
            r.responses.len()
        ));
    }
    r.responses[..n]
        .iter()
        .enumerate()
        .map(|(i, op)| {
            op.response_range
                .as_ref()
                .ok_or_else(|| format!("txn response {i} is not a range"))
                .and_then(RangeResponse::single)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn not_applied(f: &Failure) -> bool {
        matches!(f, Failure::NotApplied { .. })
    }
    fn refused(f: &Failure) -> bool {
        matches!(f, Failure::NotApplied { refused: true, .. })
    }

    #[test]
    fn gateway_errors_map_to_outcomes() {
        // Bodies exactly as etcd 3.4.23 sent them.
        let timed_out = r#"{"error":"etcdserver: request timed out","message":"etcdserver: request timed out","code":14}"#;
        let f = classify_reply(503, timed_out);
        assert_eq!(
            f,
            Failure::Unknown("grpc 14: etcdserver: request timed out".into())
        );
        let deadline = r#"{"error":"context deadline exceeded","message":"context deadline exceeded","code":2}"#;
        assert!(!not_applied(&classify_reply(500, deadline)));
        let dup = r#"{"error":"etcdserver: duplicate key given in txn request","message":"etcdserver: duplicate key given in txn request","code":3}"#;
        let f = classify_reply(400, dup);
        assert!(not_applied(&f) && !refused(&f), "{f:?}");
        let eof = r#"{"error":"unexpected EOF","message":"unexpected EOF","code":3}"#;
        assert!(not_applied(&classify_reply(400, eof)));
        let no_leader =
            r#"{"error":"etcdserver: no leader","message":"etcdserver: no leader","code":14}"#;
        assert!(refused(&classify_reply(503, no_leader)));
        let busy = r#"{"error":"etcdserver: too many requests","message":"etcdserver: too many requests","code":8}"#;
        assert!(refused(&classify_reply(429, busy)));
        for msg in [
            "etcdserver: leader changed",
            "etcdserver: request timed out, possibly due to previous leader failure",
            "etcdserver: request timed out, possibly due to connection lost",
            "etcdserver: server stopped",
        ] {
            assert!(!not_applied(&classify_grpc(14, msg)), "{msg}");
        }
        for code in [1, 2, 4, 10, 13, 15] {
            assert!(!not_applied(&classify_grpc(code, "x")), "code {code}");
        }
        // The gateway's own 404 is text, not JSON: not applied. A 5xx that is not JSON: unknown.
        assert!(not_applied(&classify_reply(404, "Not Found\n")));
        assert!(!not_applied(&classify_reply(
            502,
            "<html>bad gateway</html>"
        )));
    }

    #[test]
    fn failures_become_completions() {
        let input = Value::Int(4);
        let unknown = Failure::Unknown("client-timeout".into());
        assert_eq!(
            unknown.clone().completion(&input).kind,
            ordeal_checker::EventType::Info
        );
        // Before any write was sent, even an unknown read is a certain fail of the op.
        let c = unknown.before_write(&input);
        assert_eq!(c.kind, ordeal_checker::EventType::Fail);
        assert!(c.error.unwrap().starts_with("read phase"));
        let refusal = classify_grpc(14, NO_LEADER).completion(&input);
        assert_eq!(refusal.kind, ordeal_checker::EventType::Fail);
        assert!(refusal.refused);
    }

    #[test]
    fn bodies_encode_as_the_gateway_expects() {
        let txn = TxnRequest {
            compare: vec![
                Compare::value_equals("x", "1"),
                Compare::mod_revision_equals("y", 7),
            ],
            success: vec![
                RequestOp::Put(PutRequest {
                    key: b64("x"),
                    value: b64("2"),
                }),
                RequestOp::Range(RangeRequest {
                    key: b64("y"),
                    serializable: true,
                }),
            ],
            failure: vec![],
        };
        assert_eq!(
            serde_json::to_value(&txn).unwrap(),
            serde_json::json!({
                "compare": [
                    {"key": "eA==", "target": "VALUE", "result": "EQUAL", "value": "MQ=="},
                    {"key": "eQ==", "target": "MOD", "result": "EQUAL", "mod_revision": 7},
                ],
                "success": [
                    {"request_put": {"key": "eA==", "value": "Mg=="}},
                    {"request_range": {"key": "eQ==", "serializable": true}},
                ],
            })
        );
        let linearizable = RangeRequest {
            key: b64("k"),
            serializable: false,
        };
        assert_eq!(
            serde_json::to_string(&linearizable).unwrap(),
            r#"{"key":"aw=="}"#
        );
    }

    #[test]
    fn replies_decode() {
        // As etcd 3.4.23 answered a txn of a put and a range, and a failed compare.
        let ok = r#"{"header":{"revision":"3"},"succeeded":true,"responses":[{"response_put":{"header":{"revision":"3"}}},{"response_range":{"header":{"revision":"3"},"kvs":[{"key":"eQ==","create_revision":"3","mod_revision":"3","version":"1","value":"Mw=="}],"count":"1"}}]}"#;
        let r: TxnResponse = serde_json::from_str(ok).unwrap();
        assert!(r.succeeded);
        let read = r.responses[1]
            .response_range
            .as_ref()
            .unwrap()
            .single()
            .unwrap();
        assert_eq!(
            read,
            Read {
                value: Some("3".into()),
                mod_revision: 3
            }
        );
        assert!(reads_of(&r, 2).is_err(), "the first response is a put");
        let failed: TxnResponse =
            serde_json::from_str(r#"{"header":{"revision":"2"},"responses":[]}"#).unwrap();
        assert!(!failed.succeeded);
        let absent: RangeResponse = serde_json::from_str(r#"{"header":{"revision":"2"}}"#).unwrap();
        assert_eq!(
            absent.single().unwrap(),
            Read {
                value: None,
                mod_revision: 0
            }
        );
        // /v3/maintenance/status from a member that leads, and from one without a leader.
        let leading = r#"{"header":{"cluster_id":"17953654596774702974","member_id":"975050037397374526","revision":"3","raft_term":"2"},"version":"3.4.23","dbSize":"20480","leader":"975050037397374526","raftIndex":"11","raftTerm":"2","raftAppliedIndex":"11","dbSizeInUse":"16384"}"#;
        let st: StatusResponse = serde_json::from_str(leading).unwrap();
        assert_eq!(
            (
                st.header.member_id,
                st.leader,
                st.raft_term,
                st.version.as_str()
            ),
            (975050037397374526, 975050037397374526, 2, "3.4.23")
        );
        let leaderless = r#"{"header":{"member_id":"975050037397374526"},"version":"3.4.23","raftIndex":"9","raftTerm":"2","errors":["etcdserver: no leader"]}"#;
        let st: StatusResponse = serde_json::from_str(leaderless).unwrap();
        assert_eq!(st.leader, 0);
        let bad: RangeResponse =
            serde_json::from_str(r#"{"kvs":[{"value":"%%%","mod_revision":"1"}]}"#).unwrap();
        assert!(bad.single().is_err());
    }
}
