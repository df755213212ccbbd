//! Process tests: real `paxos-kv` processes on loopback, driven over HTTP.
//!
//! Every process is killed by pid when the test ends, also on a failed assertion (the
//! `Cluster` drop guard). Every wait is bounded.

use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_paxos-kv");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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
    http: reqwest::Client,
}

impl Cluster {
    fn start(name: &str, n: u64) -> Cluster {
        let dir =
            std::env::temp_dir().join(format!("paxos-kv-cluster-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
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
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("n{}.log", node.id)))
            .unwrap();
        let child = Command::new(BIN)
            .args(["--id", &node.id.to_string()])
            .args(["--listen", &format!("127.0.0.1:{}", node.peer_port)])
            .args(["--client", &format!("127.0.0.1:{}", node.client_port)])
            .args(["--peers", &self.peers])
            .arg("--data-dir")
            .arg(self.dir.join(format!("d{}", node.id)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start paxos-kv");
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
        let mut rb = self.http.request(method, self.url(i, path));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let code = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
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
        for i in 0..self.nodes.len() {
            if let Some(mut c) = self.nodes[i].child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("node logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_serve_and_survive_leader_kill() {
    let mut c = Cluster::start("main", 3);
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
    let (code, _) = c.put(leader, "x", "v", "?if_revision=abc").await;
    assert_eq!(code, 400);
    let (code, body) = c
        .req(reqwest::Method::GET, follower, "/keys?prefix=", None)
        .await;
    assert_eq!(code, 200);
    assert_eq!(body.as_array().unwrap().len(), 4, "{body}");
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
    let start = Instant::now();
    let mut last = Vec::new();
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "replicas did not converge: {last:?}"
        );
        let mut st = Vec::new();
        for i in 0..3 {
            st.push(c.status(i).await);
        }
        let converged = st.iter().all(|s| s.is_some())
            && st.iter().all(|s| {
                let s = s.as_ref().unwrap();
                let s0 = st[0].as_ref().unwrap();
                s["digest"] == s0["digest"] && s["applied_index"] == s0["applied_index"]
            });
        if converged {
            break;
        }
        last = st;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, body) = c.get(leader, "k19").await;
    assert_eq!((code, &body["value"]), (200, &json!("v")));
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
    let _ = std::fs::remove_dir_all(&dir);
}
