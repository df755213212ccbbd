//! Forwarding: a node that is not the leader proxies client requests to the leader's client
//! address; a forward that fails before the request was sent is 503, after it was sent 504.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::sync::atomic::Ordering::Relaxed;

use super::error;
use crate::paxos::Role;
use crate::server::Shared;

pub(crate) const FORWARDED_HEADER: &str = "x-paxos-kv-forwarded";

/// Where a request that needs the leader should go.
pub(crate) enum Route {
    Here,
    Forward(String),
    Unavailable(String),
}

pub(crate) fn route(s: &Shared, headers: &HeaderMap) -> Route {
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
pub(crate) async fn on_leader<Fut: std::future::Future<Output = Response>>(
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

pub(crate) async fn forward(
    s: &Shared,
    addr: &str,
    method: Method,
    uri: &Uri,
    body: Bytes,
) -> Response {
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
