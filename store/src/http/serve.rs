//! The client accept loop: hyper's HTTP/1 server with a header read timeout (which also closes
//! idle keep-alive connections) and a cap on open connections. A connection past the cap is
//! answered 503 with a JSON error and closed at once, so that clients cannot take the file
//! descriptors peer links, the WAL and forwarding need (`fd_reserve`).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::server::Shared;

/// Serves the client API on `listener` until the process ends.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let cap = shared.config.http_connections_cap();
    tracing::info!(
        connections_max = cap,
        header_timeout_ms = shared.config.http_header_timeout_ms,
        "client API accepting"
    );
    let router = super::router(shared.clone());
    let slots = Arc::new(tokio::sync::Semaphore::new(cap));
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: wait for descriptors to come back rather than spin.
                tracing::warn!(error = %e, "client accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            shared
                .metrics
                .http_connections_refused
                .fetch_add(1, Relaxed);
            tracing::debug!(%from, cap, "client connection cap reached; answering 503");
            tokio::spawn(refuse(stream, cap));
            continue;
        };
        let _ = stream.set_nodelay(true);
        // Counted here, not in the task, so that /health sees every accepted connection.
        shared.http_connections.fetch_add(1, Relaxed);
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_millis(
                    shared.config.http_header_timeout_ms.max(1),
                ))
                // Room for heads a little over our own limits, so that the API answers them
                // with its JSON 414/431 rather than hyper with a bare one.
                .max_buf_size(
                    (4 * (shared.config.uri_max_bytes + shared.config.headers_max_bytes)).max(8192),
                );
            let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(%from, error = %e, "client connection ended");
            }
            shared.http_connections.fetch_sub(1, Relaxed);
            drop(slot);
        });
    }
}

/// Answers a connection past the cap with a JSON 503 and closes it (bounded in time).
async fn refuse(mut stream: TcpStream, cap: usize) {
    let body =
        format!("{{\"error\":\"too many client connections (the cap is {cap}); not applied\"}}");
    let reply = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(reply.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}
