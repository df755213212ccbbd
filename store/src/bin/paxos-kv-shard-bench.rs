//! paxos-kv-shard-bench: the sharded store's figures. Starts a shard controller (one node)
//! and three replica groups of three nodes on loopback (fsync on), then for `--cc 2pl` and
//! `--cc occ` (a fresh cluster each):
//!
//! - single-shard and cross-shard transactions (`POST /txn`, read both keys then write both)
//!   with `--clients` closed-loop clients (default 64), at low contention (1,000 keys per
//!   shard) and high contention (2 keys per shard): committed txns/s, aborted and unknown
//!   counts, p50/p99 latency of the committed ones;
//! - a shard of `--move-keys` keys (default 10,000) moved to another group while 64 writers
//!   load every shard: the time from the controller's answer until the gaining group serves
//!   the shard, and the write outage on that shard (the longest time a writer of the moving
//!   shard went from a failed attempt to its next success, and the longest gap between
//!   acknowledged writes to it).
//!
//! Usage: paxos-kv-shard-bench [--seconds N] [--bin PATH] [--no-fsync] [--clients N]
//!                             [--cc 2pl,occ] [--move-keys N]
//!
//! Clients route by the controller's config and go straight to each group's leader; a
//! wrong-group answer re-routes to the owner it names.

use anyhow::{bail, Context, Result};
use paxos_kv::shard::shard_of;
use rand::Rng;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

const SHARDS: usize = 16;
const GROUPS: u64 = 3;
const NODES: u64 = 3;

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The processes of one sharded cluster; all killed by pid on drop.
struct Cluster {
    dir: PathBuf,
    children: Vec<Child>,
    controller: String,
    /// Group id -> its members' client addresses.
    members: BTreeMap<u64, Vec<String>>,
}

impl Cluster {
    fn start(bin: &PathBuf, cc: &str, fsync: bool) -> Result<Cluster> {
        let dir =
            std::env::temp_dir().join(format!("paxos-kv-shard-bench-{}-{cc}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let mut c = Cluster {
            dir,
            children: Vec::new(),
            controller: String::new(),
            members: BTreeMap::new(),
        };
        c.controller = c.paxos_group(bin, "c", 1, &["--mode", "controller"], fsync)?[0].clone();
        for g in 1..=GROUPS {
            let controller = c.controller.clone();
            let gid = g.to_string();
            let args = [
                "--mode",
                "group",
                "--group-id",
                &gid,
                "--controller",
                &controller,
                "--cc",
                cc,
            ];
            let m = c.paxos_group(bin, &format!("g{g}"), NODES, &args, fsync)?;
            c.members.insert(g, m);
        }
        Ok(c)
    }

    /// Starts one Paxos group of `n` nodes; returns their client addresses.
    fn paxos_group(
        &mut self,
        bin: &PathBuf,
        prefix: &str,
        n: u64,
        args: &[&str],
        fsync: bool,
    ) -> Result<Vec<String>> {
        let ports: Vec<(u16, u16)> = (0..n)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<Result<_>>()?;
        let peers = ports
            .iter()
            .enumerate()
            .map(|(i, (p, _))| format!("{}=127.0.0.1:{p}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut clients = Vec::new();
        for (i, (peer, client)) in ports.iter().enumerate() {
            let name = format!("{prefix}n{}", i + 1);
            let log = std::fs::File::create(self.dir.join(format!("{name}.log")))?;
            let mut cmd = Command::new(bin);
            cmd.args(["--id", &(i + 1).to_string()])
                .args(["--listen", &format!("127.0.0.1:{peer}")])
                .args(["--client", &format!("127.0.0.1:{client}")])
                .args(["--peers", &peers])
                .arg("--data-dir")
                .arg(self.dir.join(&name))
                .args(args)
                .stdout(Stdio::null())
                .stderr(log);
            if !fsync {
                cmd.arg("--no-fsync");
            }
            self.children.push(
                cmd.spawn()
                    .with_context(|| format!("start {}", bin.display()))?,
            );
            clients.push(format!("127.0.0.1:{client}"));
        }
        Ok(clients)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where clients send: shard -> owner group, group -> leader address.
#[derive(Default)]
struct Routes {
    owner: Vec<u64>,
    leader: BTreeMap<u64, String>,
}

type SharedRoutes = Arc<RwLock<Routes>>;

async fn post_json(http: &reqwest::Client, url: &str, body: &Value) -> Option<(u16, Value)> {
    let r = http.post(url).json(body).send().await.ok()?;
    let code = r.status().as_u16();
    Some((code, r.json().await.unwrap_or(Value::Null)))
}

async fn get_json(http: &reqwest::Client, url: &str) -> Option<(u16, Value)> {
    let r = http.get(url).send().await.ok()?;
    let code = r.status().as_u16();
    Some((code, r.json().await.unwrap_or(Value::Null)))
}

/// Joins the groups, waits until every group serves its shards, finds the leaders.
async fn setup(http: &reqwest::Client, c: &Cluster) -> Result<SharedRoutes> {
    for (g, m) in &c.members {
        let url = format!("http://{}/shards/join", c.controller);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((200, _)) = post_json(http, &url, &json!({"group": g, "members": m})).await
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("controller did not accept the join of group {g} within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let routes = Arc::new(RwLock::new(Routes::default()));
    refresh(http, c, &routes).await?;
    wait_settled(http, &routes, Duration::from_secs(60)).await?;
    Ok(routes)
}

/// Reloads the controller's latest config and each group's leader.
async fn refresh(http: &reqwest::Client, c: &Cluster, routes: &SharedRoutes) -> Result<()> {
    let (_, cfg) = get_json(http, &format!("http://{}/shards/config", c.controller))
        .await
        .filter(|(code, _)| *code == 200)
        .context("controller config")?;
    let owner: Vec<u64> = cfg["shards"]
        .as_array()
        .context("config without shards")?
        .iter()
        .map(|v| v.as_u64().unwrap_or(0))
        .collect();
    let mut leader = BTreeMap::new();
    for (g, members) in &c.members {
        leader.insert(*g, find_leader(http, members).await?);
    }
    let mut r = routes.write().expect("routes lock");
    r.owner = owner;
    r.leader = leader;
    Ok(())
}

async fn find_leader(http: &reqwest::Client, members: &[String]) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        for m in members {
            if let Some((200, v)) = get_json(http, &format!("http://{m}/status")).await {
                if v["role"] == "leader" && v["epoch"].as_u64().unwrap_or(0) > 0 {
                    return Ok(m.clone());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("no leader among {members:?} within 30 s")
}

/// The `/status` of `group`'s leader.
async fn leader_status(http: &reqwest::Client, routes: &SharedRoutes, g: u64) -> Option<Value> {
    let addr = routes.read().expect("routes lock").leader.get(&g)?.clone();
    get_json(http, &format!("http://{addr}/status"))
        .await
        .filter(|(c, _)| *c == 200)
        .map(|(_, v)| v)
}

/// Waits until every group's leader serves exactly the shards the routes give it.
async fn wait_settled(
    http: &reqwest::Client,
    routes: &SharedRoutes,
    limit: Duration,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let want = routes.read().expect("routes lock").owner.clone();
        let mut ok = true;
        for g in 1..=GROUPS {
            let expect: Vec<u64> = (0..want.len())
                .filter(|s| want[*s] == g)
                .map(|s| s as u64)
                .collect();
            let serving: Vec<u64> = leader_status(http, routes, g)
                .await
                .and_then(|v| {
                    v["serving_shards"]
                        .as_array()
                        .map(|a| a.iter().filter_map(Value::as_u64).collect())
                })
                .unwrap_or_default();
            ok &= serving == expect;
        }
        if ok {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("groups did not settle within {limit:?}")
}

/// `per_shard` keys of each shard.
fn keys_by_shard(per_shard: usize, prefix: &str) -> Vec<Vec<String>> {
    let mut out = vec![Vec::new(); SHARDS];
    let mut i = 0u64;
    // Bounded: FNV-1a spreads keys evenly, 64x the need is far more than enough.
    while out.iter().any(|v| v.len() < per_shard) && i < (per_shard * SHARDS * 64) as u64 {
        let k = format!("{prefix}{i}");
        let s = shard_of(&k, SHARDS);
        if out[s].len() < per_shard {
            out[s].push(k);
        }
        i += 1;
    }
    out
}

/// What one request came to.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Outcome {
    Ok,
    /// Definitely not applied (abort, wrong group, not ready, refused connection).
    Fail,
    /// Maybe applied (timeout, 504).
    Unknown,
}

/// Sends `body` to `path` at the leader of the group owning `shard`; on a wrong-group answer
/// updates the route. Returns the outcome and whether it was a wrong-group answer.
async fn routed(
    http: &reqwest::Client,
    routes: &SharedRoutes,
    shard: usize,
    method: reqwest::Method,
    path: &str,
    body: &Value,
) -> (Outcome, Option<String>) {
    let addr = {
        let r = routes.read().expect("routes lock");
        let g = r.owner.get(shard).copied().unwrap_or(1);
        r.leader.get(&g).cloned().unwrap_or_default()
    };
    let resp = http
        .request(method, format!("http://{addr}{path}"))
        .json(body)
        .send()
        .await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) if e.is_connect() => return (Outcome::Fail, Some("connect".into())),
        Err(_) => return (Outcome::Unknown, Some("timeout".into())),
    };
    let code = resp.status().as_u16();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    match code {
        200 => (Outcome::Ok, None),
        409 => (Outcome::Fail, Some("compare".into())),
        503 => {
            if v["wrong_group"] == true {
                if let Some(owner) = v["owner"].as_u64() {
                    let mut r = routes.write().expect("routes lock");
                    if let Some(slot) = r.owner.get_mut(shard) {
                        *slot = owner;
                    }
                }
                (Outcome::Fail, Some("wrong_group".into()))
            } else {
                let why = v["reason"].as_str().unwrap_or("unavailable").to_string();
                (Outcome::Fail, Some(why))
            }
        }
        _ => (Outcome::Unknown, Some(format!("status {code}"))),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    failed: u64,
    unknown: u64,
    fail_reasons: BTreeMap<String, u64>,
}

/// Closed-loop clients running two-key read-modify-write transactions for `secs`.
async fn txn_load(
    http: &reqwest::Client,
    routes: &SharedRoutes,
    keys: Arc<Vec<Vec<String>>>,
    cross: bool,
    clients: usize,
    secs: f64,
) -> Tally {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (http, routes, keys, stop) = (http.clone(), routes.clone(), keys.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut t = Tally::default();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let (s1, a, s2, b) = {
                    let mut rng = rand::thread_rng();
                    let s1 = rng.gen_range(0..SHARDS);
                    let s2 = if cross {
                        let owner = routes.read().expect("routes lock").owner.clone();
                        let others: Vec<usize> =
                            (0..SHARDS).filter(|s| owner[*s] != owner[s1]).collect();
                        if others.is_empty() {
                            s1
                        } else {
                            others[rng.gen_range(0..others.len())]
                        }
                    } else {
                        s1
                    };
                    let k1 = &keys[s1];
                    let k2 = &keys[s2];
                    let i = rng.gen_range(0..k1.len());
                    let mut j = rng.gen_range(0..k2.len());
                    if s1 == s2 && j == i {
                        j = (j + 1) % k2.len();
                    }
                    (s1, k1[i].clone(), s2, k2[j].clone())
                };
                let _ = s2;
                let v = format!("c{c}n{n}");
                let body =
                    json!({"ops": [["r", a, null], ["r", b, null], ["w", a, v], ["w", b, v]]});
                let start = Instant::now();
                let (o, why) =
                    routed(&http, &routes, s1, reqwest::Method::POST, "/txn", &body).await;
                match o {
                    Outcome::Ok => t.latencies.push(start.elapsed()),
                    Outcome::Fail => t.failed += 1,
                    Outcome::Unknown => t.unknown += 1,
                }
                if let Some(w) = why {
                    *t.fail_reasons.entry(w).or_default() += 1;
                }
            }
            t
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Tally::default();
    for task in tasks {
        if let Ok(t) = task.await {
            all.latencies.extend(t.latencies);
            all.failed += t.failed;
            all.unknown += t.unknown;
            for (k, v) in t.fail_reasons {
                *all.fail_reasons.entry(k).or_default() += v;
            }
        }
    }
    all.latencies.sort();
    all
}

/// Writes `keys` (all in one shard) in transactions of 500 writes.
async fn fill(
    http: &reqwest::Client,
    routes: &SharedRoutes,
    shard: usize,
    keys: &[String],
) -> Result<()> {
    for chunk in keys.chunks(500) {
        let ops: Vec<Value> = chunk
            .iter()
            .map(|k| json!(["w", k, "initial-value-0123456789"]))
            .collect();
        let body = json!({ "ops": ops });
        let mut tries = 0;
        loop {
            tries += 1;
            let (o, why) = routed(http, routes, shard, reqwest::Method::POST, "/txn", &body).await;
            if o == Outcome::Ok {
                break;
            }
            if tries > 20 {
                bail!("filling shard {shard}: 20 attempts failed, last {why:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// One write attempt to the moving shard: when it started, when it ended, how it came out.
type Attempt = (Instant, Instant, Outcome);

struct MoveFigures {
    move_ms: f64,
    longest_failing_ms: f64,
    longest_ack_gap_ms: f64,
    moving_ok: usize,
    moving_failed: usize,
    moving_unknown: usize,
    background_ok: u64,
    background_failed: u64,
}

/// Moves shard `s` (filled with `move_keys` keys) to another group under a write load.
async fn move_under_load(
    http: &reqwest::Client,
    c: &Cluster,
    routes: &SharedRoutes,
    move_keys: usize,
    clients: usize,
) -> Result<MoveFigures> {
    let s = 0usize;
    let from = routes.read().expect("routes lock").owner[s];
    let to = (from % GROUPS) + 1;
    let keys = keys_by_shard(move_keys, "big")[s].clone();
    fill(http, routes, s, &keys).await?;
    let keys = Arc::new(keys);
    let other_keys = Arc::new(keys_by_shard(200, "bg"));
    let stop = Arc::new(AtomicBool::new(false));
    let attempts: Arc<Mutex<Vec<Vec<Attempt>>>> = Arc::new(Mutex::new(Vec::new()));
    let background = Arc::new(Mutex::new((0u64, 0u64)));
    let mut tasks = Vec::new();
    // A quarter of the writers write the moving shard, the rest every other shard.
    for w in 0..clients {
        let moving = w % 4 == 0;
        let (http, routes, stop) = (http.clone(), routes.clone(), stop.clone());
        let (keys, other_keys) = (keys.clone(), other_keys.clone());
        let (attempts, background) = (attempts.clone(), background.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let (mut ok, mut failed) = (0u64, 0u64);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let (shard, key) = {
                    let mut rng = rand::thread_rng();
                    if moving {
                        (s, keys[rng.gen_range(0..keys.len())].clone())
                    } else {
                        let t = rng.gen_range(1..SHARDS);
                        let k = &other_keys[t];
                        (t, k[rng.gen_range(0..k.len())].clone())
                    }
                };
                let start = Instant::now();
                let path = format!("/kv/{key}");
                let body = json!({"value": format!("w{w}n{n}")});
                let (o, _) =
                    routed(&http, &routes, shard, reqwest::Method::PUT, &path, &body).await;
                if moving {
                    mine.push((start, Instant::now(), o));
                } else if o == Outcome::Ok {
                    ok += 1;
                } else {
                    failed += 1;
                }
                if o != Outcome::Ok {
                    // A client backs off a little before retrying a refused write.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            attempts.lock().expect("attempts lock").push(mine);
            let mut b = background.lock().expect("background lock");
            b.0 += ok;
            b.1 += failed;
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let url = format!("http://{}/shards/move", c.controller);
    let asked = Instant::now();
    match post_json(http, &url, &json!({"shard": s, "group": to})).await {
        Some((200, _)) => {}
        other => bail!("move of shard {s} to group {to} refused: {other:?}"),
    }
    let moved_at = asked;
    // Done when the gaining group's leader serves the shard.
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        if let Some(v) = leader_status(http, routes, to).await {
            let serving = v["serving_shards"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x.as_u64() == Some(s as u64)));
            if serving {
                break Instant::now();
            }
        }
        if Instant::now() > deadline {
            bail!("shard {s} not served by group {to} within 60 s of the move");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let attempts = attempts.lock().expect("attempts lock").clone();
    // Per writer: from the start of a failed attempt (at or after the move) to the end of the
    // next successful one.
    let mut longest_failing = Duration::ZERO;
    let mut acks = Vec::new();
    let (mut ok, mut failed, mut unknown) = (0, 0, 0);
    for mine in &attempts {
        let mut failing_since: Option<Instant> = None;
        for (start, end, o) in mine {
            if *start >= moved_at {
                match o {
                    Outcome::Ok => ok += 1,
                    Outcome::Fail => failed += 1,
                    Outcome::Unknown => unknown += 1,
                }
            }
            match o {
                Outcome::Ok => {
                    acks.push(*end);
                    if let Some(since) = failing_since.take() {
                        longest_failing = longest_failing.max(*end - since);
                    }
                }
                _ if *start >= moved_at && failing_since.is_none() => failing_since = Some(*start),
                _ => {}
            }
        }
    }
    acks.sort();
    let mut gap = Duration::ZERO;
    for w in acks.windows(2) {
        if w[1] >= moved_at {
            gap = gap.max(w[1] - w[0]);
        }
    }
    let b = *background.lock().expect("background lock");
    Ok(MoveFigures {
        move_ms: (done - asked).as_secs_f64() * 1e3,
        longest_failing_ms: longest_failing.as_secs_f64() * 1e3,
        longest_ack_gap_ms: gap.as_secs_f64() * 1e3,
        moving_ok: ok,
        moving_failed: failed,
        moving_unknown: unknown,
        background_ok: b.0,
        background_failed: b.1,
    })
}

fn main() -> Result<()> {
    let mut secs = 5.0f64;
    let mut fsync = true;
    let mut clients = 64usize;
    let mut move_keys = 10_000usize;
    let mut ccs = vec!["2pl".to_string(), "occ".to_string()];
    let mut bin = std::env::current_exe()?.with_file_name("paxos-kv");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |what: &str| args.next().with_context(|| format!("{what} needs a value"));
        match a.as_str() {
            "--seconds" => secs = value("--seconds")?.parse().context("--seconds")?,
            "--bin" => bin = value("--bin")?.into(),
            "--no-fsync" => fsync = false,
            "--clients" => clients = value("--clients")?.parse().context("--clients")?,
            "--move-keys" => move_keys = value("--move-keys")?.parse().context("--move-keys")?,
            "--cc" => ccs = value("--cc")?.split(',').map(str::to_string).collect(),
            other => {
                bail!("unknown argument {other:?} (see the doc comment of paxos-kv-shard-bench)")
            }
        }
    }
    if !bin.exists() {
        bail!(
            "{} not found: build it with cargo build --release -p paxos-kv",
            bin.display()
        );
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench(bin, fsync, secs, clients, move_keys, ccs))
}

async fn bench(
    bin: PathBuf,
    fsync: bool,
    secs: f64,
    clients: usize,
    move_keys: usize,
    ccs: Vec<String>,
) -> Result<()> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(5))
        .build()?;
    println!(
        "paxos-kv-shard-bench: controller of 1 node, {GROUPS} groups of {NODES} nodes on loopback, \
         {SHARDS} shards, fsync {}, {secs} s per phase, {clients} clients",
        if fsync { "on" } else { "off" }
    );
    for cc in &ccs {
        let c = Cluster::start(&bin, cc, fsync)?;
        let routes = setup(&http, &c).await?;
        println!("\n--cc {cc}");
        println!(
            "{:<14} {:<6} {:>9} {:>8} {:>8} {:>8} {:>8}  aborts by reason",
            "txn", "keys", "txns/s", "aborted", "unknown", "p50 ms", "p99 ms"
        );
        for (label, per_shard) in [("low", 1000usize), ("high", 2)] {
            let keys = Arc::new(keys_by_shard(per_shard, &format!("{label}-")));
            for cross in [false, true] {
                let t = txn_load(&http, &routes, keys.clone(), cross, clients, secs).await;
                println!(
                    "{:<14} {:<6} {:>9.0} {:>8} {:>8} {:>8.2} {:>8.2}  {:?}",
                    if cross { "cross-shard" } else { "single-shard" },
                    format!("{label}"),
                    t.latencies.len() as f64 / secs,
                    t.failed,
                    t.unknown,
                    percentile(&t.latencies, 0.5).as_secs_f64() * 1e3,
                    percentile(&t.latencies, 0.99).as_secs_f64() * 1e3,
                    t.fail_reasons,
                );
            }
        }
        refresh(&http, &c, &routes).await?;
        let m = move_under_load(&http, &c, &routes, move_keys, clients).await?;
        println!(
            "move of a shard of {move_keys} keys under {clients} writers: served by the gaining group \
             {:.0} ms after the controller's answer; writes to it: longest failing stretch {:.0} ms, \
             longest gap between acknowledgements {:.0} ms ({} ok, {} failed definitely, {} unknown \
             after the move; other shards {} ok, {} not)",
            m.move_ms,
            m.longest_failing_ms,
            m.longest_ack_gap_ms,
            m.moving_ok,
            m.moving_failed,
            m.moving_unknown,
            m.background_ok,
            m.background_failed,
        );
    }
    Ok(())
}
