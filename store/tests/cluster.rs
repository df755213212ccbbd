//! Process tests: real `paxos-kv` processes on loopback, driven over HTTP.
//!
//! Every process is killed by pid when the test ends, also on a failed assertion (the
//! `Cluster` drop guard). Every wait is bounded.

use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_paxos-kv");

mod common;
use common::{free_port, fresh_dir, send_json, spawn_node, stop_all};

struct Node {
    id: u64,
    peer_port: u16,
    client_port: u16,
    child: Option<Child>,
}

struct Cluster {
    dir: PathBuf,
    nodes: Vec<Node>,
    peers: String,
    extra_args: Vec<String>,
    http: reqwest::Client,
}

impl Cluster {
    fn start(name: &str, n: u64, extra_args: &[&str]) -> Cluster {
        let dir = fresh_dir("cluster", name);
        let nodes: Vec<Node> = (1..=n)
            .map(|id| Node {
                id,
                peer_port: free_port(),
                client_port: free_port(),
                child: None,
            })
            .collect();
        let peers = nodes
            .iter()
            .map(|n| format!("{}=127.0.0.1:{}", n.id, n.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = Cluster {
            dir,
            nodes,
            peers,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
        };
        for i in 0..n as usize {
            c.spawn(i);
        }
        c
    }

    fn spawn(&mut self, i: usize) {
        let node = &self.nodes[i];
        let mut args = vec![
            "--id".to_string(),
            node.id.to_string(),
            "--listen".into(),
            format!("127.0.0.1:{}", node.peer_port),
            "--client".into(),
            format!("127.0.0.1:{}", node.client_port),
            "--peers".into(),
            self.peers.clone(),
            "--data-dir".into(),
            self.dir.join(format!("d{}", node.id)).display().to_string(),
        ];
        args.extend(self.extra_args.iter().cloned());
        let child = spawn_node(&args, &self.dir.join(format!("n{}.log", node.id)));
        self.nodes[i].child = Some(child);
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            c.kill().unwrap(); // SIGKILL
            c.wait().unwrap();
        }
    }

    fn url(&self, i: usize, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.nodes[i].client_port, path)
    }

    async fn status(&self, i: usize) -> Option<Value> {
        let r = self.http.get(self.url(i, "/status")).send().await.ok()?;
        r.json().await.ok()
    }

    /// Waits until every live node reports the same digest and applied index.
    async fn wait_converged(&self, timeout: Duration) -> Vec<Value> {
        let start = Instant::now();
        let mut last = Vec::new();
        loop {
            assert!(
                start.elapsed() < timeout,
                "replicas did not converge: {last:?}"
            );
            let mut st = Vec::new();
            for i in 0..self.nodes.len() {
                st.push(self.status(i).await);
            }
            if st.iter().all(|s| s.is_some()) {
                let st: Vec<Value> = st.into_iter().map(Option::unwrap).collect();
                if st.iter().all(|s| {
                    s["digest"] == st[0]["digest"] && s["applied_index"] == st[0]["applied_index"]
                }) {
                    return st;
                }
                last = st;
            } else {
                // Say which nodes did not answer, not an empty list.
                last = st
                    .into_iter()
                    .map(|s| s.unwrap_or_else(|| json!("no /status answer")))
                    .collect();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Index of the node that reports itself leader, within `timeout`.
    async fn wait_leader(&self, timeout: Duration, skip: Option<usize>) -> usize {
        let start = Instant::now();
        while start.elapsed() < timeout {
            for i in 0..self.nodes.len() {
                if Some(i) == skip || self.nodes[i].child.is_none() {
                    continue;
                }
                if let Some(s) = self.status(i).await {
                    if s["role"] == "leader" {
                        return i;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no leader within {timeout:?}");
    }

    async fn req(
        &self,
        method: reqwest::Method,
        i: usize,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        send_json(&self.http, method, self.url(i, path), body)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    async fn put(&self, i: usize, key: &str, value: &str, query: &str) -> (u16, Value) {
        self.req(
            reqwest::Method::PUT,
            i,
            &format!("/kv/{key}{query}"),
            Some(json!({"value": value})),
        )
        .await
    }

    async fn get(&self, i: usize, key: &str) -> (u16, Value) {
        self.req(reqwest::Method::GET, i, &format!("/kv/{key}"), None)
            .await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let children = self.nodes.iter_mut().filter_map(|n| n.child.take());
        stop_all(children.collect::<Vec<_>>(), &self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_serve_and_survive_leader_kill() {
    let mut c = Cluster::start("main", 3, &["--body-max-bytes", "65536"]);
    let leader = c.wait_leader(Duration::from_secs(10), None).await;
    let follower = (leader + 1) % 3;

    // Writes and reads through a follower (forwarded to the leader).
    let (code, body) = c.put(follower, "x", "1", "").await;
    assert_eq!(code, 200, "{body}");
    let rev1 = body["revision"].as_u64().unwrap();
    assert!(rev1 > 0);
    let (code, body) = c.get(follower, "x").await;
    assert_eq!(
        (code, &body["value"], body["revision"].as_u64()),
        (200, &json!("1"), Some(rev1))
    );
    let (code, body) = c.get(leader, "missing").await;
    assert_eq!((code, body["revision"].as_u64()), (404, Some(0)));

    // Compare-and-set on revision and value.
    let (code, body) = c
        .put(leader, "x", "2", &format!("?if_revision={}", rev1 + 100))
        .await;
    assert_eq!(
        (code, body["revision"].as_u64()),
        (409, Some(rev1)),
        "{body}"
    );
    let (code, body) = c
        .put(leader, "x", "2", &format!("?if_revision={rev1}"))
        .await;
    assert_eq!(code, 200, "{body}");
    let (code, _) = c.put(leader, "x", "3", "?if_value=1").await;
    assert_eq!(code, 409);
    let (code, _) = c.put(follower, "x", "3", "?if_value=2").await;
    assert_eq!(code, 200);

    // Exactly-once: a retried (client_id, seq) returns the original revision.
    let (code, a) = c.put(leader, "e", "1", "?client_id=c1&seq=1").await;
    assert_eq!(code, 200);
    let (code, b) = c.put(follower, "e", "1", "?client_id=c1&seq=1").await;
    assert_eq!((code, &a["revision"]), (200, &b["revision"]));

    // A transaction with appends reads back lists.
    let txn = |v: &str| json!({"ops": [["append", "l", v], ["r", "l", null], ["r", "x", null], ["w", "y", "9"]]});
    let (code, _) = c
        .req(reqwest::Method::POST, leader, "/txn", Some(txn("1")))
        .await;
    assert_eq!(code, 200);
    let (code, body) = c
        .req(reqwest::Method::POST, follower, "/txn", Some(txn("2")))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["ops"][1], json!(["r", "l", ["1", "2"]]));
    assert_eq!(body["ops"][2], json!(["r", "x", "3"]));

    // Malformed and oversized requests are 4xx with a JSON error.
    let (code, body) = c
        .req(
            reqwest::Method::POST,
            leader,
            "/txn",
            Some(json!({"ops": [["nope", "k", 1]]})),
        )
        .await;
    assert_eq!(code, 400);
    assert!(body["error"].as_str().unwrap().contains("nope"), "{body}");
    let (code, body) = c.put(leader, &"k".repeat(5000), "v", "").await;
    assert_eq!(code, 413, "{body}");
    let (code, body) = c.put(leader, "big", &"v".repeat(100_000), "").await;
    assert_eq!(code, 413, "{body}");
    assert!(body["error"].is_string(), "{body}");
    let (code, body) = c
        .req(
            reqwest::Method::PUT,
            leader,
            "/kv/x",
            Some(json!({"valu": "typo"})),
        )
        .await;
    assert_eq!(code, 400);
    assert!(body["error"].is_string(), "{body}");
    let (code, _) = c
        .req(
            reqwest::Method::PUT,
            leader,
            "/kv/num",
            Some(json!({"value": 5})),
        )
        .await;
    assert_eq!(code, 200);
    let (code, body) = c.get(follower, "num").await;
    assert_eq!((code, &body["value"]), (200, &json!("5")));
    let (code, _) = c
        .req(
            reqwest::Method::PUT,
            leader,
            "/kv/num",
            Some(json!({"value": {"a": 1}})),
        )
        .await;
    assert_eq!(code, 400);
    let (code, _) = c.put(leader, "x", "v", "?if_revision=abc").await;
    assert_eq!(code, 400);
    let (code, body) = c
        .req(reqwest::Method::GET, follower, "/keys?prefix=", None)
        .await;
    assert_eq!(code, 200);
    assert_eq!(body.as_array().unwrap().len(), 5, "{body}");
    let metrics = c
        .http
        .get(c.url(leader, "/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("paxos_kv_is_leader 1"), "{metrics}");
    let timed: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("paxos_kv_http_request_duration_seconds_count "))
        .expect("latency histogram in /metrics")
        .parse()
        .unwrap();
    assert!(timed >= 5, "the leader timed only {timed} requests");

    // kill -9 the leader: writes through a survivor succeed again within the election timeout
    // (15-30 ticks of 10 ms) plus slack.
    c.kill(leader);
    let survivor = (leader + 1) % 3;
    let start = Instant::now();
    let mut recovered_after = None;
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(5) {
        n += 1;
        let (code, _) = c.put(survivor, "after-kill", &n.to_string(), "").await;
        if code == 200 {
            recovered_after = Some(start.elapsed());
            break;
        }
        assert!(code == 503 || code == 504, "unexpected status {code}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let recovered_after =
        recovered_after.expect("no write succeeded within 5 s of killing the leader");
    assert!(
        recovered_after < Duration::from_secs(2),
        "writes resumed only after {recovered_after:?}"
    );
    for i in 0..20 {
        let (code, _) = c.put(survivor, &format!("k{i}"), "v", "").await;
        assert_eq!(code, 200);
    }

    // Restart the old leader on its data directory: it catches up and converges.
    c.spawn(leader);
    c.wait_converged(Duration::from_secs(10)).await;
    let (code, body) = c.get(leader, "k19").await;
    assert_eq!((code, &body["value"]), (200, &json!("v")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_compact_the_log_and_catch_up_a_far_behind_replica() {
    let mut c = Cluster::start(
        "snap",
        3,
        &[
            "--snapshot-interval-entries",
            "20",
            "--compaction-retain-entries",
            "5",
        ],
    );
    let leader = c.wait_leader(Duration::from_secs(10), None).await;
    let lagging = (leader + 1) % 3;
    c.kill(lagging);
    // Sequential writes: at least one slot each, far more than interval + retain.
    for i in 0..150 {
        let (code, body) = c
            .put(leader, &format!("s{}", i % 30), &i.to_string(), "")
            .await;
        assert_eq!(code, 200, "{body}");
    }
    let st = c.status(leader).await.unwrap();
    assert!(
        st["snapshot_index"].as_u64().unwrap() >= 100,
        "leader did not snapshot: {st}"
    );
    c.spawn(lagging);
    let st = c.wait_converged(Duration::from_secs(15)).await;
    assert!(
        st[lagging]["snapshot_index"].as_u64().unwrap() > 0,
        "{st:?}"
    );
    let metrics = c
        .http
        .get(c.url(lagging, "/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("paxos_kv_snapshots_installed_total 1"),
        "{metrics}"
    );
    // The WAL behind the snapshot is gone: only a few segments remain.
    let segments = std::fs::read_dir(c.dir.join(format!("d{}", leader + 1)))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".log")
        })
        .count();
    assert!(
        segments <= 2,
        "{segments} WAL segments left after compaction"
    );
    // Everything restarts from snapshot + WAL and converges on the same state.
    let digest = st[0]["digest"].clone();
    for i in 0..3 {
        c.kill(i);
    }
    for i in 0..3 {
        c.spawn(i);
    }
    let leader = c.wait_leader(Duration::from_secs(10), None).await;
    let (code, body) = c.get(leader, "s29").await;
    assert_eq!((code, &body["value"]), (200, &json!("149")), "{body}");
    // A whole cluster restarting from snapshot + WAL on a loaded 2-core CI machine: bounded,
    // with room (10 s once timed out there with every node still replaying).
    let st = c.wait_converged(Duration::from_secs(30)).await;
    assert_eq!(st[0]["digest"], digest);
}

/// A WAL that grows large in bytes is compacted even when few entries were written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_is_compacted_by_size() {
    let mut c = Cluster::start(
        "walsize",
        3,
        &[
            "--snapshot-interval-entries",
            "1000000",
            "--wal-compact-bytes",
            "50000",
        ],
    );
    let leader = c.wait_leader(Duration::from_secs(10), None).await;
    let big = "z".repeat(2000);
    for i in 0..100 {
        let (code, body) = c
            .put(leader, &format!("w{}", i % 10), &format!("{i}{big}"), "")
            .await;
        assert_eq!(code, 200, "{body}");
    }
    let st = c.status(leader).await.unwrap();
    assert!(
        st["snapshot_index"].as_u64().unwrap() > 0,
        "no size-triggered snapshot: {st}"
    );
    let wal_bytes: u64 = std::fs::read_dir(c.dir.join(format!("d{}", leader + 1)))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    // 100 writes of 2 KB were logged twice (accepted, chosen): 400 KB without compaction.
    assert!(
        wal_bytes < 200_000,
        "WAL is {wal_bytes} bytes after compaction"
    );
    for i in 0..3 {
        c.kill(i);
    }
    for i in 0..3 {
        c.spawn(i);
    }
    let leader = c.wait_leader(Duration::from_secs(10), None).await;
    let (code, body) = c.get(leader, "w9").await;
    assert_eq!(
        (code, body["value"].as_str().map(|v| v.starts_with("99z"))),
        (200, Some(true))
    );
}

/// kill -9 of every node in the middle of a write load loses no acknowledged write: each
/// client writes 1, 2, 3, ... to its own key, so after the restart each key must hold at least
/// the last value acknowledged (one more if a write in flight at the kill was applied).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_killing_every_node() {
    let mut c = Cluster::start("durable", 3, &[]);
    let leader = c.wait_leader(Duration::from_secs(10), None).await;
    let url = c.url(leader, "");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for w in 0..8 {
        let http = c.http.clone();
        let url = url.clone();
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let mut last_acked = 0u64;
            for n in 1..100_000u64 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let r = http
                    .put(format!("{url}/kv/c{w}"))
                    .json(&json!({"value": n.to_string()}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().as_u16() == 200 => last_acked = n,
                    // The node died under us: stop at the first unanswered write.
                    _ => break,
                }
            }
            last_acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    for i in 0..3 {
        c.kill(i);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    for t in clients {
        acked.push(t.await.unwrap());
    }
    assert!(
        acked.iter().all(|&n| n > 0),
        "no load before the kill: {acked:?}"
    );
    for i in 0..3 {
        c.spawn(i);
    }
    let leader = c.wait_leader(Duration::from_secs(10), None).await;
    for (w, &n) in acked.iter().enumerate() {
        let (code, body) = c.get(leader, &format!("c{w}")).await;
        assert_eq!(code, 200, "{body}");
        let v: u64 = body["value"].as_str().unwrap().parse().unwrap();
        assert!(
            v == n || v == n + 1,
            "key c{w}: acknowledged {n}, found {v} after restart"
        );
    }
}

/// The planted bug `ack-before-persist` must lose acknowledged writes when every node is
/// killed (the WAL records never left the user-space buffer); the same scenario without the
/// bug keeps them (see the snapshot test's full restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_before_persist_bug_loses_acknowledged_writes() {
    let mut c = Cluster::start(
        "ackbug",
        3,
        &["--bug", "ack-before-persist", "--lazy-flush-ms", "600000"],
    );
    let leader = c.wait_leader(Duration::from_secs(10), None).await;
    for i in 0..10 {
        let (code, body) = c.put(leader, &format!("b{i}"), "v", "").await;
        assert_eq!(code, 200, "{body}");
    }
    for i in 0..3 {
        c.kill(i);
    }
    for i in 0..3 {
        c.spawn(i);
    }
    let leader = c.wait_leader(Duration::from_secs(10), None).await;
    let mut lost = 0;
    for i in 0..10 {
        let (code, _) = c.get(leader, &format!("b{i}")).await;
        if code == 404 {
            lost += 1;
        }
    }
    assert!(
        lost > 0,
        "no acknowledged write was lost with ack-before-persist"
    );
}

/// `non-atomic-txn` splits a txn into one log command per micro-op: its writes get different
/// revisions, where an atomic txn gives them one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_atomic_txn_bug_splits_transactions() {
    async fn revisions(c: &Cluster, leader: usize) -> (u64, u64) {
        let txn = json!({"ops": [["w", "tx", "1"], ["append", "ty", "2"], ["r", "ty", null]]});
        let (code, body) = c
            .req(reqwest::Method::POST, leader, "/txn", Some(txn))
            .await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(
            body["ops"][2][2].as_array().map(|a| a.len()),
            Some(1),
            "{body}"
        );
        let (_, x) = c.get(leader, "tx").await;
        let (_, y) = c.get(leader, "ty").await;
        (
            x["revision"].as_u64().unwrap(),
            y["revision"].as_u64().unwrap(),
        )
    }
    let c = Cluster::start("atomic", 3, &[]);
    let leader = c.wait_leader(Duration::from_secs(10), None).await;
    let (x, y) = revisions(&c, leader).await;
    assert_eq!(x, y, "an atomic txn is one command");
    drop(c);
    let c = Cluster::start("nonatomic", 3, &["--bug", "non-atomic-txn"]);
    let leader = c.wait_leader(Duration::from_secs(10), None).await;
    let (x, y) = revisions(&c, leader).await;
    assert!(
        x < y,
        "with non-atomic-txn the micro-ops are separate commands ({x}, {y})"
    );
}

/// `--peer-clients` decides where a follower forwards client requests (a harness routes them
/// through its proxy so that partitions cut forwarding too): every node is told to forward to a
/// stand-in that answers with a revision no real leader would, and a write to a follower gets
/// that answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_forward_to_the_configured_peer_client_address() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stand_in = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stand_in_addr = stand_in.local_addr().unwrap();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::channel::<String>(16);
    let server = tokio::spawn(async move {
        // Bounded: the task is aborted at the end of the test.
        loop {
            let Ok((mut s, _)) = stand_in.accept().await else {
                return;
            };
            let seen_tx = seen_tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 << 10];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") && got.len() < buf.len() {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&got)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                let _ = seen_tx.send(head).await;
                let body = r#"{"key":"fwd","revision":424242}"#;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    let targets = (1..=3)
        .map(|id| format!("{id}={stand_in_addr}"))
        .collect::<Vec<_>>()
        .join(",");
    let c = Cluster::start("peer-clients", 3, &["--peer-clients", &targets]);
    let leader = c.wait_leader(Duration::from_secs(10), None).await;
    let follower = (leader + 1) % 3;
    let (code, body) = c.put(follower, "fwd", "1", "").await;
    assert_eq!(
        (code, body["revision"].as_u64()),
        (200, Some(424242)),
        "{body}"
    );
    let head = tokio::time::timeout(Duration::from_secs(5), seen_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(head.starts_with("PUT /kv/fwd"), "{head}");
    // The leader itself serves locally, never through the stand-in.
    let (code, body) = c.put(leader, "local", "1", "").await;
    assert_eq!(code, 200, "{body}");
    assert_ne!(body["revision"].as_u64(), Some(424242));
    server.abort();
}

#[test]
fn bad_command_lines_fail_clearly() {
    let dir = std::env::temp_dir().join(format!("paxos-kv-badcli-{}", std::process::id()));
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .arg("--data-dir")
            .arg(&dir)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, err) = run(&[
        "--id",
        "1",
        "--listen",
        "127.0.0.1:1",
        "--client",
        "127.0.0.1:2",
        "--peers",
        "1=nonsense",
    ]);
    assert!(!ok);
    assert!(err.contains("nonsense"), "{err}");
    // A port in use.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    let peer = format!("127.0.0.1:{}", free_port());
    let (ok, err) = run(&[
        "--id",
        "1",
        "--listen",
        &peer,
        "--client",
        &busy_addr,
        "--peers",
        &format!("1={peer}"),
    ]);
    assert!(!ok);
    assert!(err.contains(&busy_addr) && err.contains("in use"), "{err}");
    let (ok, err) = run(&[
        "--id",
        "1",
        "--listen",
        &peer,
        "--client",
        "127.0.0.1:9",
        "--peers",
        "1=127.0.0.1:9",
        "--bug",
        "nope",
    ]);
    assert!(!ok);
    assert!(err.contains("nope"), "{err}");
    let (ok, err) = run(&[
        "--id",
        "1",
        "--listen",
        &peer,
        "--client",
        "127.0.0.1:9",
        "--peers",
        "1=127.0.0.1:9",
        "--peer-clients",
        "2=127.0.0.1:10",
    ]);
    assert!(!ok);
    assert!(
        err.contains("--peer-clients") && err.contains("node 2"),
        "{err}"
    );
    // Two processes on one data directory.
    let first_peer = free_port();
    let mut first = Command::new(BIN)
        .args(["--id", "1", "--listen", &format!("127.0.0.1:{first_peer}")])
        .args(["--client", &format!("127.0.0.1:{}", free_port())])
        .args(["--peers", &format!("1=127.0.0.1:{first_peer}")])
        .arg("--data-dir")
        .arg(&dir)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the first process holds the lock (it takes it before recovery).
    std::thread::sleep(Duration::from_millis(300));
    let peer = format!("127.0.0.1:{}", free_port());
    let mut second = Command::new(BIN)
        .args(["--id", "1", "--listen", &peer])
        .args(["--client", &format!("127.0.0.1:{}", free_port())])
        .args(["--peers", &format!("1={peer}")])
        .arg("--data-dir")
        .arg(&dir)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: if the lock does not work, the second process would serve forever.
    let start = Instant::now();
    let mut exited = None;
    while start.elapsed() < Duration::from_secs(5) {
        if let Some(st) = second.try_wait().unwrap() {
            exited = Some(st);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = second.kill();
    let out = second.wait_with_output().unwrap();
    first.kill().unwrap();
    first.wait().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let locked = exited.is_some_and(|st| !st.success()) && err.contains("in use by another");
    assert!(
        locked,
        "a second process on the same data directory was not refused: {err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sends a hello as node `as_id` and then `frames` on `node`'s peer port, from 127.0.0.1 (every
/// node's configured IP in these tests).
async fn speak_on_peer_port(c: &Cluster, node: usize, as_id: u64, frames: &[Vec<u8>]) {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", c.nodes[node].peer_port))
        .await
        .unwrap();
    // The hello: node id, client address, cluster token (bincode, as the store encodes it).
    let client = format!("127.0.0.1:{}", c.nodes[as_id as usize - 1].client_port);
    let hello = paxos_kv::codec::encode(&(as_id, client, Vec::<u8>::new()));
    for f in std::iter::once(&hello).chain(frames) {
        s.write_all(&(f.len() as u32).to_le_bytes()).await.unwrap();
        s.write_all(f).await.unwrap();
    }
    s.flush().await.unwrap();
}

/// Writes `key` through every node until each answers 200 (bounded).
async fn write_through_every_node(c: &Cluster, key: &str, timeout: Duration) {
    for i in 0..c.nodes.len() {
        let start = Instant::now();
        loop {
            let (code, body) = c.put(i, key, &i.to_string(), "").await;
            if code == 200 {
                break;
            }
            assert!(
                start.elapsed() < timeout,
                "no write through node {i} within {timeout:?}: {code} {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peer_frames_are_refused_and_the_cluster_keeps_working() {
    use paxos_kv::paxos::{Ballot, Message};
    let mut c = Cluster::start("hostile-peer", 3, &[]);
    let leader = c.wait_leader(Duration::from_secs(10), None).await;
    write_through_every_node(&c, "before", Duration::from_secs(10)).await;
    let leader_id = c.nodes[leader].id;
    let frames = vec![
        // A snapshot far ahead whose state is garbage: used to kill the follower (exit 70).
        paxos_kv::codec::encode(&Message::InstallSnapshot {
            slot: 1_000_000,
            data: b"this is not a kv state".to_vec(),
        }),
        // A ballot no one can exceed: used to stop every write, across restarts.
        paxos_kv::codec::encode(&Message::Prepare {
            ballot: Ballot {
                round: u64::MAX,
                node: leader_id,
            },
            from_slot: 1,
        }),
    ];
    for i in (0..3).filter(|&i| i != leader) {
        speak_on_peer_port(&c, i, leader_id, &frames).await;
    }
    // Each follower keeps running and writes keep succeeding through every node.
    write_through_every_node(&c, "after", Duration::from_secs(15)).await;
    for i in 0..3 {
        let exited = c.nodes[i].child.as_mut().unwrap().try_wait().unwrap();
        assert!(exited.is_none(), "node {} exited: {exited:?}", i + 1);
    }
    c.wait_converged(Duration::from_secs(10)).await;
    // And after restarting every node.
    for i in 0..3 {
        c.kill(i);
    }
    for i in 0..3 {
        c.spawn(i);
    }
    c.wait_leader(Duration::from_secs(15), None).await;
    write_through_every_node(&c, "restarted", Duration::from_secs(15)).await;
}

/// Sends raw bytes to `port` and reads the reply until the node closes the connection
/// (bounded: 5 s). Returns the status code and the body as JSON (or a JSON string).
async fn raw_http(port: u16, request: &[u8]) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return (0, Value::Null); // not listening (yet)
    };
    s.write_all(request).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    parse_reply(&got)
}

fn parse_reply(got: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(got);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        code,
        serde_json::from_str(body).unwrap_or(Value::String(text.to_string())),
    )
}

/// True when the node closes the connection within 5 s without a reply.
async fn closed_by_node(s: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut b = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // a reply to an earlier request
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_json_and_dot_keys_forward_byte_for_byte() {
    let c = Cluster::start("http-edges", 3, &["--client-id-max-bytes", "64"]);
    let leader = c.wait_leader(Duration::from_secs(10), None).await;
    let follower = (leader + 1) % 3;
    let fport = c.nodes[follower].client_port;
    let put = |key: &str, value: &str| {
        let body = format!("{{\"value\":\"{value}\"}}");
        format!(
            "PUT /kv/{key} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let get =
        |target: &str| format!("GET {target} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    // Keys `.` and `..` through a follower, as on the leader.
    for (key, value) in [(".", "dot"), ("..", "dotdot")] {
        let (code, body) = raw_http(fport, put(key, value).as_bytes()).await;
        assert_eq!(code, 200, "PUT /kv/{key} via a follower: {body}");
        let (code, body) = raw_http(fport, get(&format!("/kv/{key}")).as_bytes()).await;
        assert_eq!(
            (code, &body["value"]),
            (200, &json!(value)),
            "GET /kv/{key}: {body}"
        );
    }
    // Every error reply is JSON with an "error".
    let long_target = format!("/kv/a?x={}", "y".repeat(9000));
    let big_header = format!(
        "GET /kv/a HTTP/1.1\r\nhost: x\r\nx-big: {}\r\nconnection: close\r\n\r\n",
        "z".repeat(70_000)
    );
    let long_client = format!("a?client_id={}&seq=1", "c".repeat(65));
    let cases: Vec<(String, u16)> = vec![
        (
            "PATCH /kv/a HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".into(),
            405,
        ),
        (
            "POST /kv/a HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                .into(),
            405,
        ),
        (get("/kv/%FF%FE"), 400),
        (get(&long_target), 414),
        (big_header, 431),
        (put(&long_client, "v"), 413),
        (get("/nowhere"), 404),
        // Errors hyper answers itself, before any handler: unparseable, and a head far over
        // every limit.
        ("THIS IS NOT HTTP\r\n\r\n".into(), 400),
        (
            format!(
                "GET /kv/a HTTP/1.1\r\nhost: x\r\nx-huge: {}\r\n\r\n",
                "h".repeat(1 << 20)
            ),
            431,
        ),
    ];
    for (request, expected) in cases {
        let shown: String = request.chars().take(60).collect();
        let (code, body) = raw_http(fport, request.as_bytes()).await;
        assert_eq!(code, expected, "{shown:?}: {body}");
        assert!(
            body["error"].is_string(),
            "{shown:?}: not a JSON error: {body}"
        );
    }
    // A client_id at the limit is fine.
    let (code, body) = c
        .put(
            follower,
            "a",
            "v",
            &format!("?client_id={}&seq=1", "c".repeat(64)),
        )
        .await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_are_closed_and_the_connection_cap_holds() {
    use tokio::io::AsyncWriteExt;
    let c = Cluster::start(
        "http-limits",
        1,
        &[
            // 3 s: the test opens its six connections and asks for a seventh within this
            // (1.5 s was exceeded once on a loaded CI trial, closing the idle ones first); the
            // reads that wait for the node to close them wait 5 s.
            "--http-header-timeout-ms",
            "3000",
            "--http-body-timeout-ms",
            "3000",
            "--http-connections-max",
            "6",
        ],
    );
    let port = c.nodes[0].client_port;
    // Wait for the node with raw connections that close: a pooled client connection would
    // count against the cap.
    let start = Instant::now();
    while raw_http(
        port,
        b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await
    .0 != 200
    {
        assert!(start.elapsed() < Duration::from_secs(10), "node not up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connect = || tokio::net::TcpStream::connect(("127.0.0.1", port));
    // Five idle connections and a half-sent request (slowloris).
    let mut idle = Vec::new();
    for _ in 0..5 {
        idle.push(connect().await.unwrap());
    }
    idle[4]
        .write_all(b"GET /status HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    // The sixth connection asks for /health: saturated.
    let (code, body) = raw_http(
        port,
        b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        (code, &body["status"]),
        (503, &json!("saturated")),
        "{body}"
    );
    assert!(body["error"].is_string(), "{body}");
    // Six open: a seventh is answered 503 with a JSON error and closed.
    idle.push(connect().await.unwrap());
    let (code, body) = raw_http(
        port,
        b"GET /status HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("connections"),
        "{body}"
    );
    // The node closes every idle and half-sent connection (header read timeout).
    for (i, s) in idle.iter_mut().enumerate() {
        assert!(closed_by_node(s).await, "idle connection {i} still open");
    }
    // A keep-alive connection that goes idle after a request is closed too.
    let mut s = connect().await.unwrap();
    s.write_all(b"GET /status HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(
        closed_by_node(&mut s).await,
        "idle keep-alive connection still open"
    );
    // A body that stops arriving is a JSON 408.
    let (code, body) = raw_http(
        port,
        b"PUT /kv/slow HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\nconnection: close\r\n\r\n{\"va",
    )
    .await;
    assert_eq!(code, 408, "{body}");
    assert!(body["error"].is_string(), "{body}");
    // Healthy again once they are gone.
    let (code, body) = raw_http(
        port,
        b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((code, &body["status"]), (200, &json!("ok")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_corrupt_wal_refuses_to_start_and_says_where() {
    let mut c = Cluster::start("wal-corrupt", 3, &[]);
    let leader = c.wait_leader(Duration::from_secs(10), None).await;
    for i in 0..50 {
        let (code, body) = c.put(leader, &format!("k{i}"), "v", "").await;
        assert_eq!(code, 200, "{body}");
    }
    c.wait_converged(Duration::from_secs(10)).await;
    let victim = (leader + 1) % 3;
    c.kill(victim);
    let dir = c.dir.join(format!("d{}", c.nodes[victim].id));
    let segment = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "log"))
        .expect("a WAL segment");
    let mut data = std::fs::read(&segment).unwrap();
    // A byte a third of the way in: many acknowledged records follow it.
    let pos = data.len() / 3;
    data[pos] ^= 0xFF;
    std::fs::write(&segment, &data).unwrap();
    c.spawn(victim);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = c.nodes[victim].child.as_mut().unwrap().try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "a node with a corrupt WAL kept running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    c.nodes[victim].child = None;
    assert_eq!(status.code(), Some(1), "{status:?}");
    let log = std::fs::read_to_string(c.dir.join(format!("n{}.log", c.nodes[victim].id))).unwrap();
    assert!(log.contains("is corrupt"), "{log}");
    assert!(log.contains(&segment.display().to_string()), "{log}");
    // Nothing on disk was changed.
    assert_eq!(std::fs::read(&segment).unwrap(), data);
    // The other two still serve.
    let (code, body) = c.put(leader, "after", "v", "").await;
    assert_eq!(code, 200, "{body}");
}
