//! Forwarding: a node that is not the leader proxies client requests to the leader's client
//! address; a forward that fails before the request was sent is 503, after it was sent 504.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

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

/// What forwarding a request to the leader needs: its method, target and headers (one
/// extractor instead of three in every handler).
pub(crate) struct Origin {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) headers: HeaderMap,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Origin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Origin {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
        })
    }
}

impl Origin {
    /// [`on_leader`] for this request, with `body` to forward.
    pub(crate) async fn on_leader<Fut: std::future::Future<Output = Response>>(
        &self,
        s: &Shared,
        body: Bytes,
        here: impl FnOnce() -> Fut,
    ) -> Response {
        on_leader(
            s,
            &self.headers,
            (self.method.clone(), &self.uri, body),
            here,
        )
        .await
    }
}

/// The client that forwards requests to the leader: hyper's, because it sends the request
/// target exactly as given (a URL library would normalise `/kv/.` and `/kv/..` away).
pub type ForwardClient =
    hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Body>;

pub fn client(cfg: &crate::server::ServerConfig) -> ForwardClient {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_millis(500)));
    connector.set_nodelay(true);
    // Forwarded requests leave from this node's own IP, like peer traffic, so that partitions
    // between 127.0.0.N addresses also cut forwarding.
    connector.set_local_address(Some(cfg.listen.ip()));
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build(connector)
}

pub(crate) async fn forward(
    s: &Shared,
    addr: &str,
    method: Method,
    uri: &Uri,
    body: Bytes,
) -> Response {
    s.metrics.forwarded.fetch_add(1, Relaxed);
    // The request target byte for byte, as the client sent it.
    let target = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let request = Uri::try_from(format!("http://{addr}{target}"))
        .map_err(|e| e.to_string())
        .and_then(|uri| {
            axum::http::Request::builder()
                .method(method)
                .uri(uri)
                .header(FORWARDED_HEADER, s.config.id.to_string())
                .header("content-type", "application/json")
                .body(Body::from(body))
                .map_err(|e| e.to_string())
        });
    let request = match request {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot forward to the leader at {addr}: {e}"),
            )
        }
    };
    let timeout = Duration::from_millis(s.config.forward_timeout_ms);
    let result = tokio::time::timeout(timeout, async {
        let resp = s
            .http
            .request(request)
            .await
            .map_err(|e| (e.is_connect(), e.to_string()))?;
        let code = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| (false, e.to_string()))?
            .to_bytes();
        Ok::<_, (bool, String)>((code, bytes))
    })
    .await;
    match result {
        Ok(Ok((code, b))) => {
            let mut r = (code, b).into_response();
            r.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            r
        }
        Ok(Err((true, e))) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot reach the leader at {addr}: {e}"),
        ),
        Ok(Err((false, e))) => error(
            StatusCode::GATEWAY_TIMEOUT,
            format!("forwarded to the leader at {addr}; outcome unknown: {e}"),
        ),
        Err(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "forwarded to the leader at {addr}; no reply within {timeout:?}, outcome unknown"
            ),
        ),
    }
}
