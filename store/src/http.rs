//! The HTTP API (DESIGN.md, "Client outcomes and the store's API").
//!
//! Status codes: 2xx applied at a linearizable point; 409 precondition failed; 503 certainly
//! not applied; 504 outcome unknown; 400/404/413 malformed or oversized, nothing applied.
//! A node that is not the leader proxies the request to the leader's client address; a
//! forward that fails before the request was sent is 503, after it was sent 504.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value as Json};
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

use crate::kv::{Command, Condition, MicroOp, Op, Outcome};
use crate::paxos::{Bug, Dropped, Role};
use crate::server::{ProposeReply, Request, Shared};

const FORWARDED_HEADER: &str = "x-paxos-kv-forwarded";

type Params = HashMap<String, String>;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/kv/{key}", get(get_key).put(put_key).delete(delete_key))
        .route("/txn", post(txn))
        .route("/keys", get(keys))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { (StatusCode::OK, "ok") }))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            time_request,
        ))
        // Oversized bodies are refused while reading them; `ApiBody` turns the rejection into
        // a JSON error.
        .layer(axum::extract::DefaultBodyLimit::max(
            shared.config.body_max_bytes,
        ))
        .with_state(shared)
}

/// Upper bounds of the request latency histogram buckets, in seconds.
pub const LATENCY_BUCKETS_S: [f64; 12] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
];

/// Times client API requests (not /status, /metrics, /health) into `Metrics::latency`.
async fn time_request(
    State(s): State<Arc<Shared>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let api = {
        let p = req.uri().path();
        p.starts_with("/kv/") || p == "/txn" || p == "/keys"
    };
    if api {
        s.metrics.http_requests.fetch_add(1, Relaxed);
    }
    let start = std::time::Instant::now();
    let resp = next.run(req).await;
    if api {
        s.metrics.latency.observe(start.elapsed().as_secs_f64());
    }
    resp
}

/// A request's query parameters; a malformed query is refused with the same JSON error body
/// as every other bad request.
struct ApiQuery(Params);

impl<S: Send + Sync> FromRequestParts<S> for ApiQuery {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        Query::<Params>::from_request_parts(parts, state)
            .await
            .map(|Query(p)| ApiQuery(p))
            .map_err(|e| error(e.status(), e.body_text()))
    }
}

/// A request's body, at most `body_max_bytes` (`DefaultBodyLimit`); a body over the limit is
/// a JSON 413.
struct ApiBody(Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBody {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Response> {
        Bytes::from_request(req, state)
            .await
            .map(ApiBody)
            .map_err(|e| error(e.status(), e.body_text()))
    }
}

fn error(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, axum::Json(json!({ "error": msg.into() }))).into_response()
}

fn reply(code: StatusCode, body: Json) -> Response {
    (code, axum::Json(body)).into_response()
}

/// Why a request is refused before anything is proposed.
struct BadRequest(StatusCode, String);

impl From<BadRequest> for Response {
    fn from(b: BadRequest) -> Response {
        error(b.0, b.1)
    }
}

fn bad(msg: impl Into<String>) -> BadRequest {
    BadRequest(StatusCode::BAD_REQUEST, msg.into())
}

/// A 413 naming what was too large, when `len` is over `max`.
fn within_limit(what: &str, len: usize, max: usize) -> Result<(), BadRequest> {
    if len > max {
        return Err(BadRequest(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{what} of {len} bytes is over the limit of {max} bytes"),
        ));
    }
    Ok(())
}

fn check_key(s: &Shared, key: &str) -> Result<(), BadRequest> {
    if key.is_empty() {
        return Err(bad("empty key"));
    }
    within_limit("key", key.len(), s.config.key_max_bytes)
}

fn check_value(s: &Shared, value: &str) -> Result<(), BadRequest> {
    within_limit("value", value.len(), s.config.value_max_bytes)
}

fn check_body(s: &Shared, body: &Bytes) -> Result<(), BadRequest> {
    within_limit("body", body.len(), s.config.body_max_bytes)
}

fn parse_u64(params: &Params, name: &str) -> Result<Option<u64>, BadRequest> {
    match params.get(name) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            bad(format!(
                "query parameter {name}={v:?} is not a non-negative integer"
            ))
        }),
    }
}

fn condition(params: &Params) -> Result<Condition, BadRequest> {
    match (parse_u64(params, "if_revision")?, params.get("if_value")) {
        (Some(_), Some(_)) => Err(bad("give at most one of if_revision and if_value")),
        (Some(r), None) => Ok(Condition::Revision(r)),
        (None, Some(v)) => Ok(Condition::Value(v.clone())),
        (None, None) => Ok(Condition::None),
    }
}

fn dedup(params: &Params) -> Result<Option<(String, u64)>, BadRequest> {
    match (params.get("client_id"), parse_u64(params, "seq")?) {
        (Some(c), Some(s)) => Ok(Some((c.clone(), s))),
        (None, None) => Ok(None),
        _ => Err(bad("client_id and seq go together")),
    }
}

enum Consistency {
    Linearizable,
    Local,
}

fn consistency(params: &Params) -> Result<Consistency, BadRequest> {
    match params.get("consistency").map(String::as_str) {
        None | Some("linearizable") => Ok(Consistency::Linearizable),
        Some("local") => Ok(Consistency::Local),
        Some(other) => Err(bad(format!(
            "consistency={other:?}: expected linearizable or local"
        ))),
    }
}

/// Where a request that needs the leader should go.
enum Route {
    Here,
    Forward(String),
    Unavailable(String),
}

fn route(s: &Shared, headers: &HeaderMap) -> Route {
    let (role, leader) = {
        let st = s.status.lock().expect("lock poisoned");
        (st.role, st.leader)
    };
    if role == Role::Leader {
        return Route::Here;
    }
    if headers.contains_key(FORWARDED_HEADER) {
        // Never forward twice: two nodes with stale views could bounce a request forever.
        return Route::Unavailable(format!(
            "node {} is not the leader (forwarded request)",
            s.config.id
        ));
    }
    match leader {
        Some(l) if l != s.config.id => match s.transport.client_addr(l) {
            Some(addr) => Route::Forward(addr),
            None => Route::Unavailable(format!("leader {l}'s client address is not known yet")),
        },
        _ => Route::Unavailable("no leader".into()),
    }
}

/// Serves a request with `here` when this node leads; otherwise forwards it to the leader, or
/// answers 503 when there is none to forward to.
async fn on_leader<Fut: std::future::Future<Output = Response>>(
    s: &Shared,
    headers: &HeaderMap,
    (method, uri, body): (Method, &Uri, Bytes),
    here: impl FnOnce() -> Fut,
) -> Response {
    match route(s, headers) {
        Route::Forward(addr) => forward(s, &addr, method, uri, body).await,
        Route::Unavailable(why) => error(StatusCode::SERVICE_UNAVAILABLE, why),
        Route::Here => here().await,
    }
}

async fn forward(s: &Shared, addr: &str, method: Method, uri: &Uri, body: Bytes) -> Response {
    s.metrics.forwarded.fetch_add(1, Relaxed);
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let url = format!("http://{addr}{path}");
    let result = s
        .http
        .request(method, &url)
        .header(FORWARDED_HEADER, s.config.id.to_string())
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    match result {
        Ok(resp) => {
            let code = resp.status();
            match resp.bytes().await {
                Ok(b) => {
                    let mut r = (code, b).into_response();
                    r.headers_mut()
                        .insert("content-type", HeaderValue::from_static("application/json"));
                    r
                }
                Err(e) => error(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("forwarded to the leader at {addr}; reply lost: {e}"),
                ),
            }
        }
        Err(e) if e.is_connect() => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot reach the leader at {addr}: {e}"),
        ),
        Err(e) => error(
            StatusCode::GATEWAY_TIMEOUT,
            format!("forwarded to the leader at {addr}; outcome unknown: {e}"),
        ),
    }
}

fn dropped_response(why: Dropped) -> Response {
    match why {
        Dropped::NotLeader { leader } => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not the leader (leader: {leader:?}); not applied"),
        ),
        Dropped::Overloaded => error(StatusCode::SERVICE_UNAVAILABLE, "overloaded; not applied"),
        Dropped::TooLarge => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "command too large; not applied",
        ),
        Dropped::Unknown => error(
            StatusCode::GATEWAY_TIMEOUT,
            "leadership lost after proposing; outcome unknown",
        ),
    }
}

/// Proposes `cmd` and waits for its outcome.
async fn propose(s: &Shared, cmd: Command) -> Result<Outcome, Response> {
    let (tx, rx) = oneshot::channel();
    if s.requests
        .try_send(Request::Propose { cmd, reply: tx })
        .is_err()
    {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "request queue full; not applied",
        ));
    }
    match tokio::time::timeout(Duration::from_millis(s.config.request_timeout_ms), rx).await {
        Ok(Ok(ProposeReply::Applied(Outcome::StaleSeq { latest_seq }))) => Err(error(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "seq is older than the latest applied seq {latest_seq} of this client; \
                 the original outcome is no longer known"
            ),
        )),
        Ok(Ok(ProposeReply::Applied(o))) => Ok(o),
        Ok(Ok(ProposeReply::Dropped(why))) => Err(dropped_response(why)),
        Ok(Err(_)) => Err(error(
            StatusCode::GATEWAY_TIMEOUT,
            "proposal abandoned; outcome unknown",
        )),
        Err(_) => Err(error(
            StatusCode::GATEWAY_TIMEOUT,
            "timed out; outcome unknown",
        )),
    }
}

/// Confirms leadership with a quorum round (ReadIndex) and waits until the local state
/// machine has caught up with it.
async fn linearizable_barrier(s: &Shared) -> Result<(), Response> {
    let (tx, rx) = oneshot::channel();
    if s.requests.try_send(Request::Read { reply: tx }).is_err() {
        return Err(error(StatusCode::SERVICE_UNAVAILABLE, "request queue full"));
    }
    match tokio::time::timeout(Duration::from_millis(s.config.request_timeout_ms), rx).await {
        Ok(Ok(Ok(()))) => Ok(()),
        // A read has no effect, so every failure is a plain "unavailable".
        Ok(Ok(Err(why))) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("read not confirmed: {why:?}"),
        )),
        Ok(Err(_)) => Err(error(StatusCode::SERVICE_UNAVAILABLE, "read abandoned")),
        Err(_) => Err(error(StatusCode::GATEWAY_TIMEOUT, "read timed out")),
    }
}

fn read_key(s: &Shared, key: &str) -> Response {
    let kv = s.kv.read().expect("lock poisoned");
    match kv.get(key) {
        Some(e) => reply(
            StatusCode::OK,
            json!({"key": key, "value": e.value.to_json(), "revision": e.revision}),
        ),
        None => reply(StatusCode::NOT_FOUND, json!({"key": key, "revision": 0})),
    }
}

async fn get_key(
    State(s): State<Arc<Shared>>,
    Path(key): Path<String>,
    ApiQuery(params): ApiQuery,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Err(b) = check_key(&s, &key) {
        return b.into();
    }
    match consistency(&params) {
        Err(b) => b.into(),
        Ok(Consistency::Local) => read_key(&s, &key),
        Ok(Consistency::Linearizable) => {
            on_leader(&s, &headers, (method, &uri, Bytes::new()), || async {
                match linearizable_barrier(&s).await {
                    Ok(()) => read_key(&s, &key),
                    Err(r) => r,
                }
            })
            .await
        }
    }
}

fn write_response(key: &str, outcome: Outcome) -> Response {
    match outcome {
        Outcome::Written { revision } => {
            reply(StatusCode::OK, json!({"key": key, "revision": revision}))
        }
        Outcome::Conflict { revision } => reply(
            StatusCode::CONFLICT,
            json!({"key": key, "revision": revision}),
        ),
        other => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unexpected outcome for a write: {other:?}"),
        ),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
    /// A string; a number is accepted and stored as its decimal text (as in txns).
    value: Json,
}

async fn put_key(
    State(s): State<Arc<Shared>>,
    Path(key): Path<String>,
    ApiQuery(params): ApiQuery,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    ApiBody(body): ApiBody,
) -> Response {
    let cmd = (|| {
        check_key(&s, &key)?;
        check_body(&s, &body)?;
        let b: PutBody = serde_json::from_slice(&body)
            .map_err(|e| bad(format!("body must be {{\"value\": \"<string>\"}}: {e}")))?;
        let value = match b.value {
            Json::String(v) => v,
            Json::Number(n) => n.to_string(),
            other => return Err(bad(format!("\"value\" must be a string, not {other}"))),
        };
        check_value(&s, &value)?;
        Ok::<_, BadRequest>(Command {
            dedup: dedup(&params)?,
            op: Op::Put {
                key: key.clone(),
                value,
                condition: condition(&params)?,
            },
        })
    })();
    match cmd {
        Err(b) => b.into(),
        Ok(cmd) => {
            on_leader(&s, &headers, (method, &uri, body), || async {
                match propose(&s, cmd).await {
                    Ok(o) => write_response(&key, o),
                    Err(r) => r,
                }
            })
            .await
        }
    }
}

async fn delete_key(
    State(s): State<Arc<Shared>>,
    Path(key): Path<String>,
    ApiQuery(params): ApiQuery,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let cmd = (|| {
        check_key(&s, &key)?;
        Ok::<_, BadRequest>(Command {
            dedup: dedup(&params)?,
            op: Op::Delete {
                key: key.clone(),
                condition: condition(&params)?,
            },
        })
    })();
    match cmd {
        Err(b) => b.into(),
        Ok(cmd) => {
            on_leader(&s, &headers, (method, &uri, Bytes::new()), || async {
                match propose(&s, cmd).await {
                    Ok(o) => write_response(&key, o),
                    Err(r) => r,
                }
            })
            .await
        }
    }
}

fn parse_micro_ops(s: &Shared, body: &Bytes) -> Result<Vec<MicroOp>, BadRequest> {
    check_body(s, body)?;
    let v: Json =
        serde_json::from_slice(body).map_err(|e| bad(format!("body is not JSON: {e}")))?;
    let ops = v
        .get("ops")
        .and_then(Json::as_array)
        .ok_or_else(|| bad("body must be {\"ops\": [[f, key, value], ...]}"))?;
    if ops.is_empty() {
        return Err(bad("a txn needs at least one micro-op"));
    }
    if ops.len() > s.config.txn_max_ops {
        return Err(BadRequest(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} micro-ops is over the limit of {}",
                ops.len(),
                s.config.txn_max_ops
            ),
        ));
    }
    let mut out = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        let arr = op
            .as_array()
            .filter(|a| a.len() == 3)
            .ok_or_else(|| bad(format!("ops[{i}] must be [f, key, value]")))?;
        let f = arr[0]
            .as_str()
            .ok_or_else(|| bad(format!("ops[{i}][0] must be a string")))?;
        let key = arr[1]
            .as_str()
            .ok_or_else(|| bad(format!("ops[{i}][1] (the key) must be a string")))?
            .to_string();
        check_key(s, &key)?;
        // Values may be strings or numbers (Elle appends integers); both are stored as text.
        let value = |what: &str| -> Result<String, BadRequest> {
            let v = match &arr[2] {
                Json::String(s) => s.clone(),
                Json::Number(n) => n.to_string(),
                _ => {
                    return Err(bad(format!(
                        "ops[{i}][2] ({what}) must be a string or a number"
                    )))
                }
            };
            check_value(s, &v)?;
            Ok(v)
        };
        out.push(match f {
            "r" => MicroOp::Read(key),
            "w" => MicroOp::Write(key, value("the value to write")?),
            "append" => MicroOp::Append(key, value("the element to append")?),
            other => {
                return Err(bad(format!(
                    "ops[{i}]: unknown micro-op {other:?} (expected r, w or append)"
                )))
            }
        });
    }
    Ok(out)
}

async fn txn(
    State(s): State<Arc<Shared>>,
    ApiQuery(params): ApiQuery,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    ApiBody(body): ApiBody,
) -> Response {
    let parsed = parse_micro_ops(&s, &body).and_then(|ops| Ok((ops, dedup(&params)?)));
    let (ops, dedup) = match parsed {
        Err(b) => return b.into(),
        Ok(x) => x,
    };
    on_leader(&s, &headers, (method, &uri, body), || {
        txn_here(&s, ops, dedup)
    })
    .await
}

/// A transaction on the leader: one log command (or, with the planted bug, one per micro-op).
async fn txn_here(s: &Shared, ops: Vec<MicroOp>, dedup: Option<(String, u64)>) -> Response {
    if s.config.has_bug(Bug::NonAtomicTxn) && ops.len() > 1 {
        // The planted bug: each micro-op becomes its own log command, so other commands can
        // interleave between them.
        let mut results = Vec::with_capacity(ops.len());
        let mut revision = 0;
        for op in ops {
            let cmd = Command {
                dedup: None,
                op: Op::Txn { ops: vec![op] },
            };
            match propose(s, cmd).await {
                Ok(Outcome::Txn {
                    results: r,
                    revision: rev,
                }) => {
                    results.extend(r);
                    revision = rev;
                }
                Ok(other) => {
                    return error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("unexpected outcome {other:?}"),
                    )
                }
                // Earlier micro-ops may have applied: never claim "not applied".
                Err(r) if results.is_empty() => return r,
                Err(_) => {
                    return error(
                        StatusCode::GATEWAY_TIMEOUT,
                        "txn partly applied; outcome unknown",
                    )
                }
            }
        }
        let ops: Vec<Json> = results.iter().map(|r| r.to_json()).collect();
        return reply(StatusCode::OK, json!({"ops": ops, "revision": revision}));
    }
    match propose(
        s,
        Command {
            dedup,
            op: Op::Txn { ops },
        },
    )
    .await
    {
        Ok(Outcome::Txn { results, revision }) => {
            let ops: Vec<Json> = results.iter().map(|r| r.to_json()).collect();
            reply(StatusCode::OK, json!({"ops": ops, "revision": revision}))
        }
        Ok(other) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unexpected outcome {other:?}"),
        ),
        Err(r) => r,
    }
}

async fn keys(
    State(s): State<Arc<Shared>>,
    ApiQuery(params): ApiQuery,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let prefix = params.get("prefix").cloned().unwrap_or_default();
    let list = |s: &Shared| {
        let kv = s.kv.read().expect("lock poisoned");
        let items: Vec<Json> = kv
            .keys(&prefix, s.config.keys_max_results)
            .into_iter()
            .map(|(k, r)| json!({"key": k, "revision": r}))
            .collect();
        reply(StatusCode::OK, Json::Array(items))
    };
    match consistency(&params) {
        Err(b) => b.into(),
        Ok(Consistency::Local) => list(&s),
        Ok(Consistency::Linearizable) => {
            on_leader(&s, &headers, (method, &uri, Bytes::new()), || async {
                match linearizable_barrier(&s).await {
                    Ok(()) => list(&s),
                    Err(r) => r,
                }
            })
            .await
        }
    }
}

async fn status(State(s): State<Arc<Shared>>) -> Response {
    let st = s.status.lock().expect("lock poisoned").clone();
    let (applied, digest) = {
        let kv = s.kv.read().expect("lock poisoned");
        (kv.applied_index(), kv.digest())
    };
    reply(
        StatusCode::OK,
        json!({
            "id": st.id,
            "role": st.role.as_str(),
            "leader": st.leader,
            "ballot": st.ballot.to_string(),
            "commit_index": st.commit_index,
            "applied_index": applied,
            "snapshot_index": st.snapshot_slot,
            "digest": digest,
        }),
    )
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    use std::fmt::Write;
    let st = s.status.lock().expect("lock poisoned").clone();
    let (applied, keys) = {
        let kv = s.kv.read().expect("lock poisoned");
        (kv.applied_index(), kv.len())
    };
    let m = &s.metrics;
    let t = &s.transport.stats;
    let mut out = String::new();
    let mut line = |name: &str, kind: &str, help: &str, v: u64| {
        let _ = writeln!(
            out,
            "# HELP paxos_kv_{name} {help}\n# TYPE paxos_kv_{name} {kind}\npaxos_kv_{name} {v}"
        );
    };
    line(
        "is_leader",
        "gauge",
        "1 if this node leads",
        (st.role == Role::Leader) as u64,
    );
    line(
        "ballot_round",
        "gauge",
        "round of the highest promised ballot",
        st.ballot.round,
    );
    line(
        "commit_index",
        "gauge",
        "highest slot known chosen",
        st.commit_index,
    );
    line("applied_index", "gauge", "highest slot applied", applied);
    line(
        "snapshot_index",
        "gauge",
        "slot covered by the latest snapshot",
        st.snapshot_slot,
    );
    line("keys", "gauge", "keys in the state machine", keys as u64);
    line(
        "pending_proposals",
        "gauge",
        "proposals waiting for a slot",
        st.pending_proposals as u64,
    );
    line(
        "in_flight_slots",
        "gauge",
        "slots in phase 2",
        st.in_flight_slots as u64,
    );
    line(
        "proposals_total",
        "counter",
        "client commands proposed here",
        m.proposals.load(Relaxed),
    );
    line(
        "applied_commands_total",
        "counter",
        "client commands applied",
        m.applied_commands.load(Relaxed),
    );
    line(
        "applied_slots_total",
        "counter",
        "log slots applied",
        m.applied_slots.load(Relaxed),
    );
    line(
        "reads_confirmed_total",
        "counter",
        "linearizable reads confirmed",
        m.reads_confirmed.load(Relaxed),
    );
    line(
        "rejected_total",
        "counter",
        "proposals dropped by the core",
        m.rejected.load(Relaxed),
    );
    line(
        "rejected_unknown_total",
        "counter",
        "proposals dropped with unknown outcome",
        m.rejected_unknown.load(Relaxed),
    );
    line(
        "wal_records_total",
        "counter",
        "WAL records appended",
        m.wal_records.load(Relaxed),
    );
    line(
        "wal_fsyncs_total",
        "counter",
        "WAL fsyncs",
        m.wal_fsyncs.load(Relaxed),
    );
    line(
        "wal_bytes_total",
        "counter",
        "WAL bytes written",
        m.wal_bytes.load(Relaxed),
    );
    line(
        "snapshots_total",
        "counter",
        "snapshots written",
        m.snapshots.load(Relaxed),
    );
    line(
        "snapshots_installed_total",
        "counter",
        "snapshots installed from the leader",
        m.snapshots_installed.load(Relaxed),
    );
    line(
        "http_requests_total",
        "counter",
        "client HTTP requests",
        m.http_requests.load(Relaxed),
    );
    line(
        "forwarded_total",
        "counter",
        "requests forwarded to the leader",
        m.forwarded.load(Relaxed),
    );
    line(
        "peer_frames_sent_total",
        "counter",
        "frames sent to peers",
        t.frames_sent.load(Relaxed),
    );
    line(
        "peer_frames_dropped_total",
        "counter",
        "frames dropped (queue full or peer down)",
        t.frames_dropped.load(Relaxed),
    );
    line(
        "peer_frames_received_total",
        "counter",
        "frames received from peers",
        t.frames_received.load(Relaxed),
    );
    let h = &m.latency;
    let _ = writeln!(
        out,
        "# HELP paxos_kv_http_request_duration_seconds client API request latency\n\
         # TYPE paxos_kv_http_request_duration_seconds histogram"
    );
    let mut cumulative = 0;
    for (i, le) in LATENCY_BUCKETS_S.iter().enumerate() {
        cumulative += h.buckets[i].load(Relaxed);
        let _ = writeln!(
            out,
            "paxos_kv_http_request_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
        );
    }
    let count = h.count.load(Relaxed);
    let _ = writeln!(
        out,
        "paxos_kv_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(
        out,
        "paxos_kv_http_request_duration_seconds_sum {}",
        h.sum_us.load(Relaxed) as f64 / 1e6
    );
    let _ = writeln!(out, "paxos_kv_http_request_duration_seconds_count {count}");
    (
        StatusCode::OK,
        [("content-type", "text/plain; version=0.0.4")],
        out,
    )
        .into_response()
}
