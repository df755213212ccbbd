//! Real etcd clusters on loopback for the workloads' integration tests: free ports, a unique
//! temp data dir per node, every process killed by pid when the cluster is dropped (panics
//! included).

#![allow(dead_code)]

use ordeal_checker::{Event, EventType, History, Process, Value};
use ordeal_workloads::{Client, ClientConfig, Generator, OpSpec, Protocol, ReadConsistency};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The etcd binary, or None when the test should be skipped: absent, and CI did not say it
/// must be there (`ORDEAL_REQUIRE_ETCD`).
pub fn etcd_bin(test: &str) -> Option<PathBuf> {
    let candidates = [PathBuf::from("/usr/bin/etcd")];
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return Some(found.clone());
    }
    if std::env::var_os("ORDEAL_REQUIRE_ETCD").is_some() {
        panic!("{test}: ORDEAL_REQUIRE_ETCD is set but /usr/bin/etcd is not there");
    }
    eprintln!("SKIPPED {test}: /usr/bin/etcd is absent (install etcd-server; set ORDEAL_REQUIRE_ETCD=1 to make this a failure)");
    None
}

/// `n` ports nobody listens on now and never handed out before in this process: the kernel may
/// give a port just released by `bind(0)` to the next `bind(0)`, so two tests (or two clusters
/// in one test) could otherwise get the same port for different nodes.
fn free_ports(n: usize) -> Vec<u16> {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let mut ports = Vec::with_capacity(n);
    for _ in 0..(1000 * n.max(1)) {
        if ports.len() == n {
            break;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("binding a free port")
            .local_addr()
            .expect("local addr")
            .port();
        if !given.contains(&port) {
            given.push(port);
            ports.push(port);
        }
    }
    assert_eq!(
        ports.len(),
        n,
        "no {n} fresh loopback ports in {} tries",
        1000 * n.max(1)
    );
    ports
}

pub struct Node {
    pub name: String,
    pub client_url: String,
    pub child: Child,
    pub paused: bool,
}

/// A running etcd cluster; dropping it kills every node (SIGCONT first, then SIGKILL by pid)
/// and removes the data dirs.
pub struct EtcdCluster {
    pub nodes: Vec<Node>,
    pub dir: PathBuf,
}

static CLUSTERS: AtomicU64 = AtomicU64::new(0);

impl EtcdCluster {
    /// Starts `n` nodes and waits (bounded) until every node reports the same leader.
    pub fn start(bin: &std::path::Path, n: usize) -> EtcdCluster {
        let dir = std::env::temp_dir().join(format!(
            "ordeal-etcd-test-{}-{}",
            std::process::id(),
            CLUSTERS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the cluster dir");
        let ports = free_ports(2 * n);
        let peer_url = |i: usize| format!("http://127.0.0.1:{}", ports[2 * i + 1]);
        let initial_cluster: Vec<String> =
            (0..n).map(|i| format!("n{i}={}", peer_url(i))).collect();
        let mut cluster = EtcdCluster {
            nodes: Vec::new(),
            dir: dir.clone(),
        };
        for i in 0..n {
            let client_url = format!("http://127.0.0.1:{}", ports[2 * i]);
            let log = std::fs::File::create(dir.join(format!("n{i}.log"))).expect("node log");
            let child = Command::new(bin)
                .args(["--name", &format!("n{i}")])
                .arg("--data-dir")
                .arg(dir.join(format!("n{i}.etcd")))
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url(i)])
                .args(["--initial-advertise-peer-urls", &peer_url(i)])
                .args(["--initial-cluster", &initial_cluster.join(",")])
                .args(["--initial-cluster-state", "new"])
                // Unique per cluster, so a stray peer of another test can never join.
                .args(["--initial-cluster-token", &dir.display().to_string()])
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("node log"))
                .stderr(log)
                .spawn()
                .expect("starting etcd");
            cluster.nodes.push(Node {
                name: format!("n{i}"),
                client_url,
                child,
                paused: false,
            });
        }
        cluster.wait_for_leader(Duration::from_secs(30));
        cluster
    }

    /// The index of the node every node agrees leads (bounded wait; panics past it).
    pub fn wait_for_leader(&self, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(l) = status::leader_index(self) {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "no leader within {limit:?}; logs in {}",
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.client_url.clone()).collect()
    }

    pub fn pause(&mut self, i: usize) {
        signal(&self.nodes[i].child, libc::SIGSTOP);
        self.nodes[i].paused = true;
    }

    pub fn resume(&mut self, i: usize) {
        signal(&self.nodes[i].child, libc::SIGCONT);
        self.nodes[i].paused = false;
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill(2) on a pid we spawned and have not reaped.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if node.paused {
                // SAFETY: as in `signal`; errors are irrelevant, the kill follows.
                unsafe { libc::kill(node.child.id() as libc::pid_t, libc::SIGCONT) };
            }
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("etcd logs kept in {}", self.dir.display());
        }
    }
}

/// Blocking status queries over std, usable outside the runtime (the workspace's reqwest has
/// no blocking client).
pub mod status {
    use super::EtcdCluster;
    use std::io::{Read, Write};
    use std::time::Duration;

    /// POSTs a JSON body to `url` (`http://host:port/path`) and returns the reply body.
    pub fn post(url: &str, body: &str) -> Option<String> {
        let rest = url.strip_prefix("http://")?;
        let (host, path) = rest.split_at(rest.find('/')?);
        let mut s = std::net::TcpStream::connect(host).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let (_, reply) = out.split_once("\r\n\r\n")?;
        Some(reply.to_string())
    }

    /// The leader's index if every node answers `/v3/maintenance/status` naming the same one.
    pub fn leader_index(c: &EtcdCluster) -> Option<usize> {
        let mut leader = None;
        let mut members = Vec::new();
        for n in &c.nodes {
            let body = post(&format!("{}/v3/maintenance/status", n.client_url), "{}")?;
            let j: serde_json::Value = serde_json::from_str(body.trim()).ok()?;
            let l = j.get("leader")?.as_str()?.to_string();
            let me = j.get("header")?.get("member_id")?.as_str()?.to_string();
            if leader.get_or_insert(l.clone()) != &l {
                return None;
            }
            members.push(me);
        }
        let leader = leader?;
        members.iter().position(|m| *m == leader)
    }
}

pub fn client(timeout: Duration, read_consistency: ReadConsistency) -> Client {
    Client::new(ClientConfig {
        protocol: Protocol::EtcdV3,
        timeout,
        max_idle_per_host: 64,
        read_consistency,
    })
    .expect("building the client")
}

pub fn op(f: &'static str, key: &str, value: Value) -> OpSpec {
    OpSpec {
        f,
        key: key.to_string(),
        value,
    }
}

pub fn micro(f: &str, key: &str, value: Value) -> Value {
    Value::List(vec![Value::Str(f.into()), Value::Str(key.into()), value])
}

pub fn txn(ops: Vec<Value>) -> OpSpec {
    OpSpec {
        f: "txn",
        key: String::new(),
        value: Value::List(ops),
    }
}

/// A history recorded as the harness records one: invoke, then completion, under one lock so
/// times and order agree; an `info` retires the process.
#[derive(Clone)]
pub struct Recorder {
    events: Arc<Mutex<Vec<Event>>>,
    start: Instant,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            events: Arc::default(),
            start: Instant::now(),
        }
    }

    fn push(&self, e: Event) {
        let mut events = self.events.lock().unwrap();
        let t = self.start.elapsed().as_nanos() as i64;
        events.push(e.with_time(t));
    }

    /// Invokes `op` through `client` on `url` as `process`, recording both events.
    pub async fn run(
        &self,
        client: &Client,
        url: &str,
        process: u64,
        op: &OpSpec,
    ) -> ordeal_workloads::Completion {
        let with_key = |e: Event| {
            if op.key.is_empty() {
                e
            } else {
                e.with_key(op.key.as_str())
            }
        };
        self.push(with_key(Event::new(
            Process::Client(process),
            EventType::Invoke,
            op.f,
            op.value.clone(),
        )));
        let c = client.invoke(url, op).await;
        let mut done = with_key(Event::new(
            Process::Client(process),
            c.kind,
            op.f,
            c.value.clone(),
        ));
        done.error = c.error.clone().map(Value::Str);
        self.push(done);
        c
    }

    pub fn history(&self) -> History {
        History::new(self.events.lock().unwrap().clone())
    }
}

/// Runs `clients` concurrent clients, each issuing `ops_per_client` ops from the shared
/// generator against the nodes in turn, and returns the recorded history and the count of
/// each outcome `[ok, fail, info]`.
pub async fn run_generated(
    client: &Client,
    urls: &[String],
    generator: Generator,
    clients: usize,
    ops_per_client: usize,
) -> (History, [usize; 3]) {
    let recorder = Recorder::new();
    let generator = Arc::new(Mutex::new(generator));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (client, recorder, generator) = (client.clone(), recorder.clone(), generator.clone());
        let url = urls[c % urls.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut process = c as u64;
            let mut counts = [0usize; 3];
            for _ in 0..ops_per_client {
                let op = generator.lock().unwrap().next_op();
                let done = recorder.run(&client, &url, process, &op).await;
                match done.kind {
                    EventType::Ok => counts[0] += 1,
                    EventType::Fail => counts[1] += 1,
                    _ => {
                        counts[2] += 1;
                        process += clients as u64;
                    }
                }
            }
            counts
        }));
    }
    let mut counts = [0usize; 3];
    for t in tasks {
        let c = t.await.expect("client task");
        for i in 0..3 {
            counts[i] += c[i];
        }
    }
    (recorder.history(), counts)
}
