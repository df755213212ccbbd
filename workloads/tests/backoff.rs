//! A store that refuses everything: each protocol's refusal is a `fail` marked `refused`, the
//! client sends exactly one request per op (no hidden retries), and the backoff after a run of
//! refusals adds up to at least its lower bounds, so a client loop that honours it cannot
//! hammer the store (issue 10, item 12: 88.7% of a soak's 20,000 ops/s were immediate 503s).

use ordeal_checker::{EventType, Value};
use ordeal_workloads::{
    Backoff, BackoffConfig, Client, ClientConfig, OpSpec, Protocol, ReadConsistency,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serves `status` with `body` to every request on keep-alive connections; counts requests.
async fn refusing_server(status: &'static str, body: &'static str) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut pending = Vec::new();
                loop {
                    let n = match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    pending.extend_from_slice(&buf[..n]);
                    // One reply per complete request (headers, then Content-Length bytes).
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&pending[..end]).to_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if pending.len() < end + 4 + len {
                            break;
                        }
                        pending.drain(..end + 4 + len);
                        counter.fetch_add(1, Ordering::Relaxed);
                        let reply = format!(
                            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if sock.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (url, requests)
}

fn client(protocol: Protocol) -> Client {
    Client::new(ClientConfig {
        protocol,
        timeout: Duration::from_secs(2),
        max_idle_per_host: 4,
        read_consistency: ReadConsistency::Linearizable,
    })
    .unwrap()
}

fn write() -> OpSpec {
    OpSpec {
        f: "write",
        key: "x".into(),
        value: Value::Int(1),
    }
}

#[tokio::test]
async fn refusals_back_off_and_preconditions_do_not() {
    let config = BackoffConfig {
        initial_ms: 10,
        max_ms: 200,
    };
    let no_leader =
        r#"{"error":"etcdserver: no leader","message":"etcdserver: no leader","code":14}"#;
    for (protocol, status, body) in [
        (
            Protocol::OrdealHttp,
            "503 Service Unavailable",
            r#"{"error":"no leader"}"#,
        ),
        (Protocol::EtcdV3, "503 Service Unavailable", no_leader),
    ] {
        let (url, requests) = refusing_server(status, body).await;
        let c = client(protocol);
        let mut backoff = Backoff::new(config, 3);
        let ops = 12;
        let mut slept = Duration::ZERO;
        for _ in 0..ops {
            let done = c.invoke(&url, &write()).await;
            assert_eq!(done.kind, EventType::Fail, "{protocol}: {done:?}");
            assert!(done.refused, "{protocol}: {done:?}");
            // Not actually slept: the sum is what a client loop would wait.
            slept += backoff.after(&done).expect("a refusal backs off");
        }
        assert_eq!(
            requests.load(Ordering::Relaxed),
            ops,
            "{protocol}: one request per op"
        );
        // Lower bounds: half of 10, 20, 40, 80, 160, then 200 for the remaining 7.
        let floor_ms: u64 = (0..ops as u32)
            .map(|n| (10u64 << n.min(20)).min(200) / 2)
            .sum();
        assert!(
            slept >= Duration::from_millis(floor_ms),
            "{protocol}: {slept:?} < {floor_ms} ms"
        );
    }
    // A failed precondition is an answer, not a refusal: no backoff.
    let (url, _) = refusing_server("409 Conflict", r#"{"key":"x","revision":3}"#).await;
    let done = client(Protocol::OrdealHttp).invoke(&url, &write()).await;
    assert_eq!(done.kind, EventType::Fail);
    assert!(!done.refused, "{done:?}");
    assert_eq!(Backoff::new(config, 3).after(&done), None);
}
