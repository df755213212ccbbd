//! Request parsing: query parameters, bodies, limits and the checks every request passes
//! before anything is proposed.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value as Json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::error;
use crate::kv::{Condition, MicroOp};
use crate::server::Shared;

pub(crate) type Params = HashMap<String, String>;

/// A request's query parameters; a malformed query is refused with the same JSON error body
/// as every other bad request.
pub(crate) struct ApiQuery(pub(crate) Params);

impl<S: Send + Sync> FromRequestParts<S> for ApiQuery {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        Query::<Params>::from_request_parts(parts, state)
            .await
            .map(|Query(p)| ApiQuery(p))
            .map_err(|e| error(e.status(), e.body_text()))
    }
}

/// A key from the path; a key that is not UTF-8 (after percent-decoding) is a JSON 400.
pub(crate) struct ApiKey(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for ApiKey {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(k)| ApiKey(k))
            .map_err(|e| {
                error(
                    StatusCode::BAD_REQUEST,
                    format!("bad key: {}", e.body_text()),
                )
            })
    }
}

/// A request's body, at most `body_max_bytes` (`DefaultBodyLimit`; over it: a JSON 413),
/// arriving within `http_body_timeout_ms` (or a JSON 408).
pub(crate) struct ApiBody(pub(crate) Bytes);

impl FromRequest<Arc<Shared>> for ApiBody {
    type Rejection = Response;

    async fn from_request(
        req: axum::extract::Request,
        state: &Arc<Shared>,
    ) -> Result<Self, Response> {
        let timeout = Duration::from_millis(state.config.http_body_timeout_ms);
        match tokio::time::timeout(timeout, Bytes::from_request(req, state)).await {
            Ok(Ok(b)) => Ok(ApiBody(b)),
            Ok(Err(e)) => Err(error(e.status(), e.body_text())),
            Err(_) => Err(error(
                StatusCode::REQUEST_TIMEOUT,
                format!("the request body did not arrive within {timeout:?}; not applied"),
            )),
        }
    }
}

/// Why a request is refused before anything is proposed.
pub(crate) struct BadRequest(pub(crate) StatusCode, pub(crate) String);

impl From<BadRequest> for Response {
    fn from(b: BadRequest) -> Response {
        error(b.0, b.1)
    }
}

pub(crate) fn bad(msg: impl Into<String>) -> BadRequest {
    BadRequest(StatusCode::BAD_REQUEST, msg.into())
}

/// A 413 naming what was too large, when `len` is over `max`.
pub(crate) fn within_limit(what: &str, len: usize, max: usize) -> Result<(), BadRequest> {
    if len > max {
        return Err(BadRequest(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{what} of {len} bytes is over the limit of {max} bytes"),
        ));
    }
    Ok(())
}

pub(crate) fn check_key(s: &Shared, key: &str) -> Result<(), BadRequest> {
    if key.is_empty() {
        return Err(bad("empty key"));
    }
    within_limit("key", key.len(), s.config.key_max_bytes)
}

pub(crate) fn check_value(s: &Shared, value: &str) -> Result<(), BadRequest> {
    within_limit("value", value.len(), s.config.value_max_bytes)
}

pub(crate) fn check_body(s: &Shared, body: &Bytes) -> Result<(), BadRequest> {
    within_limit("body", body.len(), s.config.body_max_bytes)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
    /// A string; a number is accepted and stored as its decimal text (as in txns).
    value: Json,
}

/// The value of a `PUT /kv/{key}` body `{"value": v}`, with the key, body and value checked
/// against their limits (the same in every mode).
pub(crate) fn put_value(s: &Shared, key: &str, body: &Bytes) -> Result<String, BadRequest> {
    check_key(s, key)?;
    check_body(s, body)?;
    let b: PutBody = serde_json::from_slice(body)
        .map_err(|e| bad(format!("body must be {{\"value\": \"<string>\"}}: {e}")))?;
    let value = match b.value {
        Json::String(v) => v,
        Json::Number(n) => n.to_string(),
        other => return Err(bad(format!("\"value\" must be a string, not {other}"))),
    };
    check_value(s, &value)?;
    Ok(value)
}

pub(crate) fn parse_u64(params: &Params, name: &str) -> Result<Option<u64>, BadRequest> {
    match params.get(name) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            bad(format!(
                "query parameter {name}={v:?} is not a non-negative integer"
            ))
        }),
    }
}

pub(crate) fn condition(params: &Params) -> Result<Condition, BadRequest> {
    match (parse_u64(params, "if_revision")?, params.get("if_value")) {
        (Some(_), Some(_)) => Err(bad("give at most one of if_revision and if_value")),
        (Some(r), None) => Ok(Condition::Revision(r)),
        (None, Some(v)) => Ok(Condition::Value(v.clone())),
        (None, None) => Ok(Condition::None),
    }
}

pub(crate) fn dedup(s: &Shared, params: &Params) -> Result<Option<(String, u64)>, BadRequest> {
    match (params.get("client_id"), parse_u64(params, "seq")?) {
        (Some(c), Some(seq)) => {
            // Every distinct client_id is kept on every replica: bound its size.
            within_limit("client_id", c.len(), s.config.client_id_max_bytes)?;
            Ok(Some((c.clone(), seq)))
        }
        (None, None) => Ok(None),
        _ => Err(bad("client_id and seq go together")),
    }
}

pub(crate) enum Consistency {
    Linearizable,
    Local,
}

pub(crate) fn consistency(params: &Params) -> Result<Consistency, BadRequest> {
    match params.get("consistency").map(String::as_str) {
        None | Some("linearizable") => Ok(Consistency::Linearizable),
        Some("local") => Ok(Consistency::Local),
        Some(other) => Err(bad(format!(
            "consistency={other:?}: expected linearizable or local"
        ))),
    }
}

/// The `ops` array of a txn body `{"ops": [...]}`: present, not empty, within `txn_max_ops`.
/// Both the single-group and the sharded txn parsers start here.
pub(crate) fn txn_ops_json(s: &Shared, body: &Bytes) -> Result<Vec<Json>, BadRequest> {
    check_body(s, body)?;
    let mut v: Json =
        serde_json::from_slice(body).map_err(|e| bad(format!("body is not JSON: {e}")))?;
    let ops = match v.get_mut("ops").map(Json::take) {
        Some(Json::Array(ops)) => ops,
        _ => return Err(bad("body must be {\"ops\": [[f, key, value], ...]}")),
    };
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
    Ok(ops)
}

pub(crate) fn parse_micro_ops(s: &Shared, body: &Bytes) -> Result<Vec<MicroOp>, BadRequest> {
    let ops = txn_ops_json(s, body)?;
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
