//! The client accept loop: hyper's HTTP/1 server with a header read timeout (which also closes
//! idle keep-alive connections) and a cap on open connections. A connection past the cap is
//! answered 503 with a JSON error and closed at once, so that clients cannot take the file
//! descriptors peer links, the WAL and forwarding need (`fd_reserve`).

use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
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
            let io = hyper_util::rt::TokioIo::new(JsonErrors::new(stream));
            let conn = builder.serve_connection(io, service);
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

/// The connection as hyper sees it, with one change: the bare error replies hyper writes on
/// its own, before any handler runs (400 for a request it cannot parse, 431 for a head over
/// its buffer), get a JSON `{"error": ...}` body like every other error. They are recognised
/// as a 4xx/5xx head with `content-length: 0`, which the API itself never sends.
struct JsonErrors {
    inner: TcpStream,
    /// A rewritten reply still being written, and how much of it is written.
    pending: Option<(Vec<u8>, usize)>,
}

impl JsonErrors {
    fn new(inner: TcpStream) -> JsonErrors {
        JsonErrors {
            inner,
            pending: None,
        }
    }

    /// The JSON version of `head`, if it is one of hyper's bare error replies.
    fn rewrite(head: &[u8]) -> Option<Vec<u8>> {
        let text = std::str::from_utf8(head).ok()?;
        let status_line = text.strip_prefix("HTTP/1.1 ")?.lines().next()?;
        let (code, reason) = status_line.split_once(' ').unwrap_or((status_line, ""));
        let bare = (code.starts_with('4') || code.starts_with('5'))
            && text.ends_with("\r\n\r\n")
            && text
                .to_ascii_lowercase()
                .contains("\r\ncontent-length: 0\r\n");
        if !bare {
            return None;
        }
        let body = serde_json::json!({ "error": format!("{code} {reason}: malformed request") })
            .to_string();
        Some(
            format!(
                "HTTP/1.1 {code} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    }

    /// Writes what is left of a rewritten reply; Ready(Ok) once it is all out.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while let Some((buf, done)) = &mut self.pending {
            if *done == buf.len() {
                self.pending = None;
                break;
            }
            match Pin::new(&mut self.inner).poll_write(cx, &buf[*done..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()))
                }
                Poll::Ready(Ok(n)) => *done += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for JsonErrors {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for JsonErrors {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if let Poll::Ready(Err(e)) = this.poll_pending(cx) {
            return Poll::Ready(Err(e));
        }
        if this.pending.is_some() {
            return Poll::Pending;
        }
        if let Some(json) = JsonErrors::rewrite(buf) {
            this.pending = Some((json, 0));
            // The bytes hyper gave are taken (replaced); the rewrite goes out on later polls.
            return match this.poll_pending(cx) {
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                _ => Poll::Ready(Ok(buf.len())),
            };
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        match this.poll_pending(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        match this.poll_pending(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_shutdown(cx),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::JsonErrors;

    #[test]
    fn only_bare_error_heads_are_rewritten() {
        let bare = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let out = String::from_utf8(JsonErrors::rewrite(bare).expect("rewritten")).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request"), "{head}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(v["error"].is_string(), "{body}");
        for keep in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 12\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n{}",
            b"{\"error\": \"HTTP/1.1 400 \"}",
        ] {
            assert!(JsonErrors::rewrite(keep).is_none(), "{keep:?}");
        }
    }
}
