//! `ordeal-fake-kv`: a deliberately simple stand-in for `paxos-kv` with the same command line and
//! HTTP API, used by the harness's own tests so they run without the real store and so the
//! harness's throughput can be measured without the store being the bottleneck.
//!
//! Node 1 is the leader forever and holds the data (appended to a log file in its data dir, so a
//! SIGKILL loses nothing the page cache holds); every other node forwards each request to node 1
//! over node 1's *peer* address, so partitions and pauses really cut it off. That makes it
//! linearizable but unavailable whenever node 1 is unreachable. `--bug lost-writes` acks writes
//! without keeping them in the log, so a kill exposes it.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Leader {
    data: BTreeMap<String, (String, u64)>,
    revision: u64,
    log: std::fs::File,
}

struct Node {
    id: u64,
    leader_peer_url: String,
    leader: Option<Mutex<Leader>>,
    http: reqwest::Client,
    lose_writes: bool,
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn json(status: StatusCode, v: serde_json::Value) -> Response {
    (status, axum::Json(v)).into_response()
}

impl Node {
    async fn forward(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        body: Bytes,
    ) -> Response {
        let url = format!("{}{}", self.leader_peer_url, path_and_query);
        let res = self
            .http
            .request(method, url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        match res {
            Ok(r) => {
                let status =
                    StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
                let body = r.bytes().await.unwrap_or_default();
                (status, [("content-type", "application/json")], body).into_response()
            }
            Err(e) if e.is_connect() => json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"error": "leader unreachable"}),
            ),
            Err(_) => json(
                StatusCode::GATEWAY_TIMEOUT,
                serde_json::json!({"error": "forwarded request timed out"}),
            ),
        }
    }
}

async fn get_kv(
    State(node): State<Arc<Node>>,
    Path(key): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(leader) = &node.leader else {
        let qs = q
            .get("consistency")
            .map(|c| format!("?consistency={c}"))
            .unwrap_or_default();
        return node
            .forward(
                reqwest::Method::GET,
                &format!("/kv/{key}{qs}"),
                Bytes::new(),
            )
            .await;
    };
    let l = leader.lock().expect("leader lock");
    match l.data.get(&key) {
        Some((v, rev)) => json(
            StatusCode::OK,
            serde_json::json!({"key": key, "value": v, "revision": rev}),
        ),
        None => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"key": key, "revision": 0}),
        ),
    }
}

async fn put_kv(
    State(node): State<Arc<Node>>,
    Path(key): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let Some(leader) = &node.leader else {
        let qs = q
            .get("if_value")
            .map(|v| format!("?if_value={v}"))
            .unwrap_or_default();
        return node
            .forward(reqwest::Method::PUT, &format!("/kv/{key}{qs}"), body)
            .await;
    };
    let parsed: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": e.to_string()}),
            )
        }
    };
    let Some(value) = parsed.get("value").and_then(|v| v.as_str()) else {
        return json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": "value must be a string"}),
        );
    };
    let mut l = leader.lock().expect("leader lock");
    if let Some(expected) = q.get("if_value") {
        let current = l.data.get(&key);
        if current.map(|(v, _)| v) != Some(expected) {
            let rev = current.map(|(_, r)| *r).unwrap_or(0);
            return json(
                StatusCode::CONFLICT,
                serde_json::json!({"key": key, "revision": rev}),
            );
        }
    }
    l.revision += 1;
    let rev = l.revision;
    if !node.lose_writes {
        let line = format!("{}\t{}\n", key, value);
        if let Err(e) = l.log.write_all(line.as_bytes()) {
            return json(
                StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::json!({"error": e.to_string()}),
            );
        }
    }
    l.data.insert(key.clone(), (value.to_string(), rev));
    json(
        StatusCode::OK,
        serde_json::json!({"key": key, "revision": rev}),
    )
}

async fn status(State(node): State<Arc<Node>>) -> Response {
    let Some(leader) = &node.leader else {
        let res = node
            .forward(reqwest::Method::GET, "/status", Bytes::new())
            .await;
        if res.status() != StatusCode::OK {
            return json(
                StatusCode::OK,
                serde_json::json!({"id": node.id, "role": "follower", "leader": null,
                    "ballot": 0, "commit_index": 0, "applied_index": 0, "digest": null}),
            );
        }
        let body = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap_or_default();
        let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        v["id"] = node.id.into();
        v["role"] = "follower".into();
        return json(StatusCode::OK, v);
    };
    let l = leader.lock().expect("leader lock");
    let mut h: u64 = 0xcbf29ce484222325;
    for (k, (v, _)) in &l.data {
        for b in k.bytes().chain([0]).chain(v.bytes()).chain([1]) {
            h = (h ^ b as u64).wrapping_mul(0x100000001b3);
        }
    }
    json(
        StatusCode::OK,
        serde_json::json!({"id": node.id, "role": "leader", "leader": 1, "ballot": 1,
            "commit_index": l.revision, "applied_index": l.revision, "digest": format!("{h:016x}")}),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(id), Some(listen), Some(client), Some(peers), Some(data_dir)) = (
        arg(&args, "--id"),
        arg(&args, "--listen"),
        arg(&args, "--client"),
        arg(&args, "--peers"),
        arg(&args, "--data-dir"),
    ) else {
        eprintln!("usage: ordeal-fake-kv --id N --listen ADDR --client ADDR --peers 1=ADDR,... --data-dir DIR [--bug lost-writes]");
        std::process::exit(2);
    };
    let bug = arg(&args, "--bug");
    if let Some(b) = &bug {
        if b != "lost-writes" {
            eprintln!("ordeal-fake-kv: unknown bug {b:?}; known: lost-writes");
            std::process::exit(2);
        }
    }
    let id: u64 = id.parse().expect("--id is a number");
    let leader_peer = peers
        .split(',')
        .find_map(|p| p.strip_prefix("1="))
        .expect("--peers names node 1");
    std::fs::create_dir_all(&data_dir).expect("create data dir");
    let leader = (id == 1).then(|| {
        let path = std::path::Path::new(&data_dir).join("fake.log");
        let mut data = BTreeMap::new();
        let mut revision = 0;
        if let Ok(f) = std::fs::File::open(&path) {
            for line in std::io::BufReader::new(f).lines().map_while(Result::ok) {
                if let Some((k, v)) = line.split_once('\t') {
                    revision += 1;
                    data.insert(k.to_string(), (v.to_string(), revision));
                }
            }
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("open log");
        Mutex::new(Leader {
            data,
            revision,
            log,
        })
    });
    let node = Arc::new(Node {
        id,
        leader_peer_url: format!("http://{leader_peer}"),
        leader,
        // Dial from our own address, as paxos-kv does, so per-address partition rules apply.
        http: reqwest::Client::builder()
            .local_address(listen.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
            .timeout(Duration::from_millis(1000))
            .connect_timeout(Duration::from_millis(300))
            .build()
            .expect("http client"),
        lose_writes: bug.is_some(),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let app = Router::new()
            .route("/kv/{key}", get(get_kv).put(put_kv))
            .route("/status", get(status))
            .route("/health", get(|| async { "ok" }))
            .route(
                "/txn",
                post(|| async {
                    json(
                        StatusCode::BAD_REQUEST,
                        serde_json::json!({"error": "no txn in the fake"}),
                    )
                }),
            )
            .with_state(node);
        let peer_l = tokio::net::TcpListener::bind(&listen)
            .await
            .expect("bind --listen");
        let client_l = tokio::net::TcpListener::bind(&client)
            .await
            .expect("bind --client");
        eprintln!("ordeal-fake-kv {id} serving peers on {listen}, clients on {client}");
        let a = axum::serve(peer_l, app.clone());
        let b = axum::serve(client_l, app);
        let _ = tokio::join!(a, b);
    });
}
