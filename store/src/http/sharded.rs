//! The HTTP API of the sharded modes.
//!
//! Controller (`--mode controller`):
//! - `POST /shards/join {"group": G, "members": ["HOST:PORT", ...]}` (members: the group
//!   nodes' client addresses), `POST /shards/leave {"group": G}`,
//!   `POST /shards/move {"shard": S, "group": G}`: through the controller's log; the reply
//!   is the resulting config (200), or 409 `{"error"}` when the command changes nothing
//!   because it is invalid (unknown group, shard out of range).
//! - `GET /shards/config` (latest) and `GET /shards/config/{num}` (that config, or the latest
//!   if `num` is beyond it): `{"num", "shards": [group per shard], "groups": {"G": [...]}}`.
//!   `?consistency=local` reads this replica's applied state; the default confirms
//!   leadership first (ReadIndex).
//!
//! Replica group (`--mode group`):
//! - `GET /kv/{key}`: a ReadIndex read on the leader (leadership confirmed by a quorum, the
//!   state caught up with that index; see `Group::read_at_index` for why the group still
//!   owns the shard then), or a read-only transaction through the log when a prepared
//!   transaction writes the key (`consistency=local`: this replica's applied state);
//!   `{"key", "value", "revision"}`, 404 if absent. The revision is the key's version: how
//!   many transactions wrote it (it moves with its shard); a deleted key's 404 carries the
//!   version of its delete (versions are never reused).
//! - `PUT /kv/{key}[?if_revision=N|if_value=V]` `{"value": v}` and
//!   `DELETE /kv/{key}[?if_revision=N|if_value=V]`: `{"key", "revision"}` (the new version),
//!   409 `{"key", "revision"}` if the compare fails, as in the single-group store.
//! - `GET /keys[?prefix=p]`: `[{"key", "revision"}]` of the shards this group serves.
//! - `POST /txn {"ops": [["r",k,null], ["w",k,v], ["append",k,v], ["if_revision",k,n]]}`:
//!   one group's shards take the fast path (one log record); shards of several groups run
//!   two-phase commit coordinated by this group. 200 `{"ops": [...]}`; 409
//!   `{"key", "revision"}` when an `if_revision` fails (nothing applied).
//! - Every write takes optional `client_id` + `seq` (exactly-once, also across shard moves
//!   for single-group transactions). Retry a cross-group transaction at the same group.
//! - Wrong group: 503 `{"error", "wrong_group": true, "shard", "owner", "owner_members",
//!   "config"}`: this group does not own the shard in the newest config it has applied;
//!   nothing was applied. Aborts (lock conflict, validation, not ready) are 503 with
//!   `"reason"`; a `seq` older than the client's latest is 504 (outcome unknown), as in the
//!   single-group store.
//! - `POST /shard/msg`: group-to-group messages (internal).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value as Json};
use std::sync::Arc;
use std::time::Duration;

use super::forward::Origin;
use super::parse::{
    bad, check_body, check_key, check_value, condition, consistency, dedup, put_value, ApiBody,
    ApiKey, ApiQuery, BadRequest, Consistency,
};
use super::{consistent_read, error, keys_response, linearizable_barrier, reply};
use crate::codec;
use crate::kv::Condition;
use crate::server::sharded::{config_to_json, Envelope, ShardMachine, SHARD_TOKEN_HEADER};
use crate::server::{ProposeReply, Request, Shared};
use crate::shard::config::ControllerCmd;
use crate::shard::group::{Addr, Group, Msg};
use crate::shard::{
    client_number, AbortReason, Age, OpResult, TxnId, TxnOp, TxnReply, TxnRequest,
    ANONYMOUS_CLIENT_BIT,
};

pub(crate) fn controller_routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/shards/join", post(join))
        .route("/shards/leave", post(leave))
        .route("/shards/move", post(move_shard))
        .route("/shards/config", get(config_latest))
        .route("/shards/config/{num}", get(config_numbered))
}

pub(crate) fn group_routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/kv/{key}", get(get_key).put(put_key).delete(delete_key))
        .route("/txn", post(txn))
        .route("/keys", get(keys))
        .route("/shard/msg", post(shard_msg))
}

// ----- controller -----

fn json_body<T: serde::de::DeserializeOwned>(s: &Shared, body: &Bytes) -> Result<T, BadRequest> {
    check_body(s, body)?;
    serde_json::from_slice(body).map_err(|e| bad(format!("bad body: {e}")))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinBody {
    group: u64,
    members: Vec<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaveBody {
    group: u64,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveBody {
    shard: usize,
    group: u64,
}

async fn controller_cmd(
    s: &Shared,
    origin: &Origin,
    body: Bytes,
    cmd: Result<ControllerCmd, BadRequest>,
) -> Response {
    let cmd = match cmd {
        Ok(c) => c,
        Err(b) => return b.into(),
    };
    origin
        .on_leader(s, body, || async {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let data = codec::encode(&cmd);
            if s.requests
                .try_send(Request::ShardPropose { data, reply: tx })
                .is_err()
            {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "request queue full; not applied",
                );
            }
            match tokio::time::timeout(Duration::from_millis(s.config.request_timeout_ms), rx).await
            {
                Ok(Ok(ProposeReply::Config(Ok(cfg)))) => {
                    reply(StatusCode::OK, config_to_json(&cfg))
                }
                Ok(Ok(ProposeReply::Config(Err(why)))) => {
                    error(StatusCode::CONFLICT, format!("{why}; nothing changed"))
                }
                Ok(Ok(ProposeReply::Dropped(why))) => super::dropped_response(why),
                Ok(Ok(other)) => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("unexpected answer {other:?}"),
                ),
                Ok(Err(_)) => error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "proposal abandoned; outcome unknown",
                ),
                Err(_) => error(StatusCode::GATEWAY_TIMEOUT, "timed out; outcome unknown"),
            }
        })
        .await
}

async fn join(State(s): State<Arc<Shared>>, origin: Origin, ApiBody(body): ApiBody) -> Response {
    let cmd = json_body::<JoinBody>(&s, &body).and_then(|b| {
        if b.members.is_empty() {
            return Err(bad("members must name at least one client address"));
        }
        Ok(ControllerCmd::Join {
            group: b.group,
            members: b.members,
        })
    });
    controller_cmd(&s, &origin, body, cmd).await
}

async fn leave(State(s): State<Arc<Shared>>, origin: Origin, ApiBody(body): ApiBody) -> Response {
    let cmd = json_body::<LeaveBody>(&s, &body).map(|b| ControllerCmd::Leave { group: b.group });
    controller_cmd(&s, &origin, body, cmd).await
}

async fn move_shard(
    State(s): State<Arc<Shared>>,
    origin: Origin,
    ApiBody(body): ApiBody,
) -> Response {
    let cmd = json_body::<MoveBody>(&s, &body).map(|b| ControllerCmd::Move {
        shard: b.shard,
        group: b.group,
    });
    controller_cmd(&s, &origin, body, cmd).await
}

async fn config_query(
    s: &Shared,
    params: &super::parse::Params,
    origin: &Origin,
    num: Option<u64>,
) -> Response {
    let read = |s: &Shared| match &*s
        .shard
        .as_ref()
        .expect("controller routes only in sharded mode")
        .machine
        .lock()
        .expect("lock poisoned")
    {
        ShardMachine::Controller(c) => reply(StatusCode::OK, config_to_json(c.query(num))),
        ShardMachine::Group(_) => error(StatusCode::NOT_FOUND, "not a controller"),
    };
    consistent_read(s, params, origin, read).await
}

async fn config_latest(
    State(s): State<Arc<Shared>>,
    ApiQuery(params): ApiQuery,
    origin: Origin,
) -> Response {
    config_query(&s, &params, &origin, None).await
}

async fn config_numbered(
    State(s): State<Arc<Shared>>,
    Path(num): Path<String>,
    ApiQuery(params): ApiQuery,
    origin: Origin,
) -> Response {
    let Ok(num) = num.parse::<u64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("config number {num:?} is not a non-negative integer"),
        );
    };
    config_query(&s, &params, &origin, Some(num)).await
}

// ----- replica group -----

/// Parses `{"ops": [...]}` with `r`, `w`, `append` and `if_revision` micro-ops; values may be
/// strings or numbers (stored as text).
fn parse_ops(s: &Shared, body: &Bytes) -> Result<Vec<TxnOp>, BadRequest> {
    let ops = super::parse::txn_ops_json(s, body)?;
    let mut out = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        // Numbers become text, as in the single-group store; then the core's parser.
        let normalised = match op.as_array() {
            Some(a) if a.len() == 3 && a[0] != "if_revision" && a[2].is_number() => {
                json!([a[0], a[1], a[2].to_string()])
            }
            _ => op.clone(),
        };
        let parsed = TxnOp::from_json(&normalised).map_err(|e| bad(format!("ops[{i}]: {e}")))?;
        check_key(s, parsed.key())?;
        if let TxnOp::Write(_, v) | TxnOp::Append(_, v) = &parsed {
            check_value(s, v)?;
        }
        out.push(parsed);
    }
    Ok(out)
}

/// The transaction id: the client's (`client_id` + `seq`), or an anonymous one that no
/// exactly-once table records.
fn txn_id(dedup: Option<(String, u64)>) -> TxnId {
    match dedup {
        Some((c, seq)) => TxnId {
            client: client_number(&c),
            seq,
        },
        None => TxnId {
            client: ANONYMOUS_CLIENT_BIT | (rand::random::<u64>() >> 1),
            seq: 1,
        },
    }
}

/// Sends a transaction to the group core and waits for its reply.
async fn run_txn(s: &Shared, id: TxnId, ops: Vec<TxnOp>) -> Result<TxnReply, Response> {
    let sh = s.shard.as_ref().expect("group routes only in sharded mode");
    // Wound-wait's age: when the transaction first reached a coordinator. Wall-clock
    // microseconds, so that ages from different coordinators compare roughly fairly.
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let req = TxnRequest {
        id,
        age: Age { start, txn: id },
        ops,
    };
    let rx = sh.wait_for(id);
    if s.requests
        .try_send(Request::ShardMsg {
            from: Addr::Client(id.client),
            msg: Msg::Txn(req),
        })
        .is_err()
    {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "request queue full; not applied",
        ));
    }
    match tokio::time::timeout(Duration::from_millis(s.config.request_timeout_ms), rx).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(_)) => Err(error(
            StatusCode::GATEWAY_TIMEOUT,
            "transaction abandoned; outcome unknown",
        )),
        Err(_) => Err(error(
            StatusCode::GATEWAY_TIMEOUT,
            "timed out; outcome unknown",
        )),
    }
}

/// The response for a reply that is not `Committed`.
fn failure_response(s: &Shared, r: TxnReply) -> Response {
    match r {
        TxnReply::Committed { .. } => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "a committed reply is not a failure",
        ),
        TxnReply::CompareFailed { key, revision } => reply(
            StatusCode::CONFLICT,
            json!({"key": key, "revision": revision, "error": "if_revision did not hold; nothing applied"}),
        ),
        TxnReply::Aborted {
            reason: AbortReason::Stale,
        } => error(
            StatusCode::GATEWAY_TIMEOUT,
            "seq is older than this client's latest transaction here; the original outcome \
             is no longer known",
        ),
        TxnReply::Aborted {
            reason: AbortReason::Evicted { floor },
        } => reply(
            StatusCode::GATEWAY_TIMEOUT,
            json!({
                "error": format!(
                    "this client's exactly-once record was evicted (--dedup-max-bytes) and seq \
                     is at or below {floor}: it may repeat an applied transaction, so it was not \
                     run; outcome unknown. A new transaction must use a seq above {floor}"
                ),
                "reason": "Evicted",
                "min_seq": floor + 1,
            }),
        ),
        TxnReply::Aborted { reason } => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({
                "error": format!("transaction aborted ({reason:?}); not applied"),
                "reason": format!("{reason:?}"),
            }),
        ),
        TxnReply::WrongGroup {
            shard,
            owner,
            config,
        } => {
            let members = s
                .shard
                .as_ref()
                .map(|sh| sh.members_of(owner))
                .unwrap_or_default();
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({
                    "error": format!(
                        "wrong group: shard {shard} belongs to group {owner} in config {config}; not applied"
                    ),
                    "wrong_group": true,
                    "shard": shard,
                    "owner": owner,
                    "owner_members": members,
                    "config": config,
                }),
            )
        }
    }
}

async fn txn(
    State(s): State<Arc<Shared>>,
    ApiQuery(params): ApiQuery,
    origin: Origin,
    ApiBody(body): ApiBody,
) -> Response {
    let parsed = parse_ops(&s, &body).and_then(|ops| Ok((ops, dedup(&s, &params)?)));
    let (ops, dedup) = match parsed {
        Err(b) => return b.into(),
        Ok(x) => x,
    };
    origin
        .on_leader(&s, body, || async {
            match run_txn(&s, txn_id(dedup), ops).await {
                Ok(TxnReply::Committed { results }) => {
                    let ops: Vec<Json> = results.iter().map(OpResult::to_json).collect();
                    reply(StatusCode::OK, json!({ "ops": ops }))
                }
                Ok(other) => failure_response(&s, other),
                Err(r) => r,
            }
        })
        .await
}

fn read_response(key: &str, value: Option<crate::kv::Value>, version: u64) -> Response {
    match value {
        Some(v) => reply(
            StatusCode::OK,
            json!({"key": key, "value": v.to_json(), "revision": version}),
        ),
        None => reply(
            StatusCode::NOT_FOUND,
            json!({"key": key, "revision": version}),
        ),
    }
}

/// Runs `f` on the group core of this node.
fn with_group<T>(s: &Shared, f: impl FnOnce(&Group) -> T) -> Option<T> {
    let sh = s.shard.as_ref()?;
    match &*sh.machine.lock().expect("lock poisoned") {
        ShardMachine::Group(g) => Some(f(g)),
        ShardMachine::Controller(_) => None,
    }
}

fn not_a_group() -> Response {
    error(StatusCode::NOT_FOUND, "not a replica group")
}

/// A read-only transaction of `key` through the group's log.
async fn read_through_log(s: &Shared, key: &str) -> Response {
    let ops = vec![TxnOp::Read(key.to_string())];
    match run_txn(s, txn_id(None), ops).await {
        Ok(TxnReply::Committed { results }) => match results.into_iter().next() {
            Some(OpResult::Read { value, version, .. }) => read_response(key, value, version),
            other => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("unexpected read result {other:?}"),
            ),
        },
        Ok(other) => failure_response(s, other),
        Err(r) => r,
    }
}

/// `GET /kv/{key}`: by default a ReadIndex read (leadership confirmed by a quorum, the
/// state caught up with that index, then [`Group::read_at_index`]: the shard served here and
/// no prepared transaction writing the key), else through the log; `consistency=local` reads
/// this replica's applied state.
async fn get_key(
    State(s): State<Arc<Shared>>,
    ApiKey(key): ApiKey,
    ApiQuery(params): ApiQuery,
    origin: Origin,
) -> Response {
    if let Err(b) = check_key(&s, &key) {
        return b.into();
    }
    match consistency(&params) {
        Err(b) => b.into(),
        Ok(Consistency::Local) => match with_group(&s, |g| g.get(&key)) {
            None => not_a_group(),
            Some(Some(v)) => read_response(&key, v.value, v.version),
            Some(None) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "this replica does not serve the key's shard; not read",
            ),
        },
        Ok(Consistency::Linearizable) => {
            origin
                .on_leader(&s, Bytes::new(), || async {
                    if let Err(r) = linearizable_barrier(&s).await {
                        return r;
                    }
                    match with_group(&s, |g| g.read_at_index(&key)) {
                        None => not_a_group(),
                        Some(Ok(v)) => read_response(&key, v.value, v.version),
                        Some(Err(Some(refusal))) => failure_response(&s, refusal),
                        Some(Err(None)) => read_through_log(&s, &key).await,
                    }
                })
                .await
        }
    }
}

/// `GET /keys[?prefix=p]`: the keys of the shards this group serves (at the read index, or
/// at this replica with `consistency=local`).
async fn keys(
    State(s): State<Arc<Shared>>,
    ApiQuery(params): ApiQuery,
    origin: Origin,
) -> Response {
    let prefix = params.get("prefix").cloned().unwrap_or_default();
    let list = |s: &Shared| {
        let max = s.config.keys_max_results;
        with_group(s, |g| keys_response(g.keys(&prefix, max))).unwrap_or_else(not_a_group)
    };
    consistent_read(&s, &params, &origin, list).await
}

/// The compare a write starts with: the `if_revision` / `if_value` condition, else a read
/// (either tells the revision before the write, so the new one is that + 1).
fn guard(key: &str, params: &super::parse::Params) -> Result<TxnOp, BadRequest> {
    Ok(match condition(params)? {
        Condition::Revision(n) => TxnOp::IfRevision(key.to_string(), n),
        Condition::Value(v) => TxnOp::IfValue(key.to_string(), v),
        Condition::None => TxnOp::Read(key.to_string()),
    })
}

/// A write's micro-ops and its `client_id` + `seq`.
type WriteTxn = (Vec<TxnOp>, Option<(String, u64)>);

/// Runs a PUT's or DELETE's `[guard, write]` transaction on the leader; `{"key",
/// "revision"}` (the key's new version) as in the single-group store.
async fn write_key(
    s: &Shared,
    origin: &Origin,
    body: Bytes,
    key: &str,
    parsed: Result<WriteTxn, BadRequest>,
) -> Response {
    let (ops, dedup) = match parsed {
        Err(b) => return b.into(),
        Ok(x) => x,
    };
    origin
        .on_leader(s, body, || async {
            match run_txn(s, txn_id(dedup), ops).await {
                Ok(TxnReply::Committed { results }) => match results.first() {
                    Some(
                        OpResult::Read { version, .. }
                        | OpResult::IfRevision {
                            revision: version, ..
                        },
                    ) => reply(StatusCode::OK, json!({"key": key, "revision": version + 1})),
                    _ => error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("unexpected write results {results:?}"),
                    ),
                },
                Ok(other) => failure_response(s, other),
                Err(r) => r,
            }
        })
        .await
}

async fn put_key(
    State(s): State<Arc<Shared>>,
    ApiKey(key): ApiKey,
    ApiQuery(params): ApiQuery,
    origin: Origin,
    ApiBody(body): ApiBody,
) -> Response {
    let parsed = (|| {
        let value = put_value(&s, &key, &body)?;
        let ops = vec![guard(&key, &params)?, TxnOp::Write(key.clone(), value)];
        Ok((ops, dedup(&s, &params)?))
    })();
    write_key(&s, &origin, body, &key, parsed).await
}

async fn delete_key(
    State(s): State<Arc<Shared>>,
    ApiKey(key): ApiKey,
    ApiQuery(params): ApiQuery,
    origin: Origin,
) -> Response {
    let parsed = (|| {
        check_key(&s, &key)?;
        let ops = vec![guard(&key, &params)?, TxnOp::Delete(key.clone())];
        Ok((ops, dedup(&s, &params)?))
    })();
    write_key(&s, &origin, Bytes::new(), &key, parsed).await
}

/// A message from another group (`(Addr, Msg)` in the codec's encoding). The leader hands it
/// to the core; another member forwards it to the leader. 202 when queued, 503 when not.
async fn shard_msg(
    State(s): State<Arc<Shared>>,
    origin: Origin,
    ApiBody(body): ApiBody,
) -> Response {
    if let Some(token) = &s.config.cluster_token {
        let given = origin
            .headers
            .get(SHARD_TOKEN_HEADER)
            .map(|v| v.as_bytes().to_vec());
        if given.as_deref() != Some(token.as_slice()) {
            return error(StatusCode::FORBIDDEN, "missing or wrong cluster token");
        }
    }
    let (from, msg): Envelope = match codec::decode("shard message", &body) {
        Ok(e) => e,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    // Only groups speak here; clients use /txn.
    if !matches!(from, Addr::Group(_)) {
        return error(
            StatusCode::BAD_REQUEST,
            "a shard message must come from a group",
        );
    }
    origin
        .on_leader(&s, body, || async {
            match s.requests.try_send(Request::ShardMsg { from, msg }) {
                Ok(()) => reply(StatusCode::ACCEPTED, json!({"queued": true})),
                Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "request queue full"),
            }
        })
        .await
}

/// The sharded fields of `/status`.
pub(crate) fn status_fields(s: &Shared) -> Option<Json> {
    let sh = s.shard.as_ref()?;
    let m = sh.machine.lock().expect("lock poisoned");
    Some(match &*m {
        ShardMachine::Controller(c) => json!({
            "mode": "controller",
            "config": c.latest().num,
            "digest": m.digest(),
        }),
        ShardMachine::Group(g) => json!({
            "mode": "group",
            "group": g.id(),
            "config": g.config().num,
            "serving_shards": g.serving_shards(),
            "migration_done": g.migration_done(),
            "prepared": g.prepared_count(),
            "coordinator_records": g.coordinator_records(),
            "epoch": g.epoch(),
            "cc": sh.settings.cc.name(),
            "digest": m.digest(),
        }),
    })
}
