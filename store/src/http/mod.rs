//! The HTTP API (DESIGN.md, "Client outcomes and the store's API").
//!
//! Status codes: 2xx applied at a linearizable point; 409 precondition failed; 503 certainly
//! not applied; 504 outcome unknown; 400/404/413 malformed or oversized, nothing applied.
//! A node that is not the leader proxies the request to the leader's client address; a
//! forward that fails before the request was sent is 503, after it was sent 504.

pub mod forward;
mod parse;
pub(crate) mod serve;
mod sharded;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value as Json};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

use crate::kv::{Command, MicroOp, Op, Outcome};
use crate::paxos::{Bug, Dropped};
use crate::server::{ProposeReply, Request, Shared};
use forward::on_leader;
use parse::{
    check_key, condition, consistency, dedup, parse_micro_ops, put_value, ApiBody, ApiKey,
    ApiQuery, BadRequest, Consistency,
};

pub fn router(shared: Arc<Shared>) -> Router {
    use crate::server::sharded::ShardRole;
    let api = match shared.shard.as_ref().map(|sh| sh.settings.role) {
        None => Router::new()
            .route("/kv/{key}", get(get_key).put(put_key).delete(delete_key))
            .route("/txn", post(txn))
            .route("/keys", get(keys)),
        Some(ShardRole::Controller) => sharded::controller_routes(),
        Some(ShardRole::Group(_)) => sharded::group_routes(),
    };
    api.route("/status", get(status))
        .route("/metrics", get(crate::metrics::render))
        .route("/health", get(health))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|method: Method, uri: Uri| async move {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed on {}", uri.path()),
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            time_request,
        ))
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            head_limits,
        ))
        // Oversized bodies are refused while reading them; `ApiBody` turns the rejection into
        // a JSON error.
        .layer(axum::extract::DefaultBodyLimit::max(
            shared.config.body_max_bytes,
        ))
        .with_state(shared)
}

/// Refuses a request target over `uri_max_bytes` (414) or headers over `headers_max_bytes`
/// (431) with a JSON error.
async fn head_limits(
    State(s): State<Arc<Shared>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let uri_bytes = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri_bytes > s.config.uri_max_bytes {
        return error(
            StatusCode::URI_TOO_LONG,
            format!(
                "request target of {uri_bytes} bytes is over the limit of {} bytes",
                s.config.uri_max_bytes
            ),
        );
    }
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if header_bytes > s.config.headers_max_bytes {
        return error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "headers of {header_bytes} bytes are over the limit of {} bytes",
                s.config.headers_max_bytes
            ),
        );
    }
    next.run(req).await
}

/// 200 while the node can take client connections, 503 when the connection cap is reached;
/// both with the counts, so that a load balancer or an operator sees saturation.
async fn health(State(s): State<Arc<Shared>>) -> Response {
    let open = s.http_connections.load(Relaxed);
    let max = s.config.http_connections_cap();
    let saturated = open >= max;
    let body = json!({
        "status": if saturated { "saturated" } else { "ok" },
        "http_connections": open,
        "http_connections_max": max,
    });
    if saturated {
        let mut body = body;
        body["error"] = json!("client connection cap reached");
        reply(StatusCode::SERVICE_UNAVAILABLE, body)
    } else {
        reply(StatusCode::OK, body)
    }
}

/// Times client API requests (not /status, /metrics, /health) into `Metrics::latency`.
async fn time_request(
    State(s): State<Arc<Shared>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let api = {
        let p = req.uri().path();
        p.starts_with("/kv/") || p == "/txn" || p == "/keys" || p.starts_with("/shards/")
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

pub(crate) fn error(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, axum::Json(json!({ "error": msg.into() }))).into_response()
}

pub(crate) fn reply(code: StatusCode, body: Json) -> Response {
    (code, axum::Json(body)).into_response()
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
        Ok(Ok(ProposeReply::Config(_))) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "a key-value command was answered with a shard config",
        )),
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

/// Answers `read` from this replica's applied state with `consistency=local`; by default on
/// the leader after a ReadIndex barrier (leadership confirmed by a quorum, the state caught
/// up with that index).
async fn consistent_read(
    s: &Shared,
    params: &parse::Params,
    origin: &forward::Origin,
    read: impl Fn(&Shared) -> Response,
) -> Response {
    match consistency(params) {
        Err(b) => b.into(),
        Ok(Consistency::Local) => read(s),
        Ok(Consistency::Linearizable) => {
            origin
                .on_leader(s, Bytes::new(), || async {
                    match linearizable_barrier(s).await {
                        Ok(()) => read(s),
                        Err(r) => r,
                    }
                })
                .await
        }
    }
}

/// The `/keys` answer: `[{"key", "revision"}, ...]`.
fn keys_response(items: impl IntoIterator<Item = (String, u64)>) -> Response {
    let items: Vec<Json> = items
        .into_iter()
        .map(|(k, r)| json!({"key": k, "revision": r}))
        .collect();
    reply(StatusCode::OK, Json::Array(items))
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
    ApiKey(key): ApiKey,
    ApiQuery(params): ApiQuery,
    origin: forward::Origin,
) -> Response {
    if let Err(b) = check_key(&s, &key) {
        return b.into();
    }
    consistent_read(&s, &params, &origin, |s| read_key(s, &key)).await
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

async fn put_key(
    State(s): State<Arc<Shared>>,
    ApiKey(key): ApiKey,
    ApiQuery(params): ApiQuery,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    ApiBody(body): ApiBody,
) -> Response {
    let cmd = (|| {
        let value = put_value(&s, &key, &body)?;
        Ok::<_, BadRequest>(Command {
            dedup: dedup(&s, &params)?,
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
    ApiKey(key): ApiKey,
    ApiQuery(params): ApiQuery,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let cmd = (|| {
        check_key(&s, &key)?;
        Ok::<_, BadRequest>(Command {
            dedup: dedup(&s, &params)?,
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

async fn txn(
    State(s): State<Arc<Shared>>,
    ApiQuery(params): ApiQuery,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    ApiBody(body): ApiBody,
) -> Response {
    let parsed = parse_micro_ops(&s, &body).and_then(|ops| Ok((ops, dedup(&s, &params)?)));
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
    origin: forward::Origin,
) -> Response {
    let prefix = params.get("prefix").cloned().unwrap_or_default();
    let list = |s: &Shared| {
        let kv = s.kv.read().expect("lock poisoned");
        keys_response(kv.keys(&prefix, s.config.keys_max_results))
    };
    consistent_read(&s, &params, &origin, list).await
}

async fn status(State(s): State<Arc<Shared>>) -> Response {
    let st = s.status.lock().expect("lock poisoned").clone();
    let (applied, digest) = {
        let kv = s.kv.read().expect("lock poisoned");
        (kv.applied_index(), kv.digest())
    };
    let mut body = json!({
            "id": st.id,
            "role": st.role.as_str(),
            "leader": st.leader,
            "ballot": st.ballot.to_string(),
            "commit_index": st.commit_index,
            "applied_index": applied,
            "snapshot_index": st.snapshot_slot,
            "digest": digest,
    });
    if let Some(Json::Object(extra)) = sharded::status_fields(&s) {
        // The shard machine's digest replaces the (unused) key-value state's.
        for (k, v) in extra {
            body[k] = v;
        }
    }
    reply(StatusCode::OK, body)
}
