//! paxos-kv-bench: starts a 3-node cluster on loopback (fsync on), drives it over HTTP with
//! 1, 16 and 64 concurrent clients, prints ops/s and p50/p99 latency for writes and
//! linearizable reads, then measures write availability when the leader is paused and killed.
//!
//! Usage: paxos-kv-bench [--seconds N] [--bin PATH] [--no-fsync] [--clients 1,16,64]
//!                       [--partition]
//!
//! Node i listens on 127.0.0.(10+i). `--partition` also measures a follower isolated for 3 s and
//! healed, with iptables rules inside a private network namespace that the bench creates for
//! itself (needs root; the host's network is never touched).

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    peers: String,
    ports: Vec<(u16, u16)>,
    children: Vec<Option<Child>>,
    fsync: bool,
}

fn free_port(ip: &str) -> Result<u16> {
    Ok(std::net::TcpListener::bind(format!("{ip}:0"))?
        .local_addr()?
        .port())
}

/// Node addresses start at 127.0.0.11: the bench's own client connections leave from
/// 127.0.0.1, and isolating a node on that address would cut the clients off too.
fn ip(i: usize) -> String {
    format!("127.0.0.{}", i + 11)
}

impl Cluster {
    fn start(bin: PathBuf, fsync: bool) -> Result<Cluster> {
        let dir = std::env::temp_dir().join(format!("paxos-kv-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let mut ports = Vec::new();
        for i in 0..3 {
            ports.push((free_port(&ip(i))?, free_port(&ip(i))?));
        }
        let peers = ports
            .iter()
            .enumerate()
            .map(|(i, (p, _))| format!("{}={}:{p}", i + 1, ip(i)))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = Cluster {
            dir,
            bin,
            peers,
            ports,
            children: vec![None, None, None],
            fsync,
        };
        for i in 0..3 {
            c.spawn(i)?;
        }
        Ok(c)
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("n{}.log", i + 1)))?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(["--id", &(i + 1).to_string()])
            .args(["--listen", &format!("{}:{}", ip(i), self.ports[i].0)])
            .args(["--client", &format!("{}:{}", ip(i), self.ports[i].1)])
            .args(["--peers", &self.peers])
            .arg("--data-dir")
            .arg(self.dir.join(format!("d{}", i + 1)))
            .stdout(Stdio::null())
            .stderr(log);
        if !self.fsync {
            cmd.arg("--no-fsync");
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("start {}", self.bin.display()))?;
        self.children[i] = Some(child);
        Ok(())
    }

    fn pid(&self, i: usize) -> Option<i32> {
        self.children[i].as_ref().map(|c| c.id() as i32)
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self, i: usize) -> String {
        format!("http://{}:{}", ip(i), self.ports[i].1)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..3 {
            if let Some(pid) = self.pid(i) {
                // A paused node cannot die until continued.
                unsafe { libc::kill(pid, libc::SIGCONT) };
            }
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn leader(http: &reqwest::Client, c: &Cluster, timeout: Duration) -> Result<usize> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        for i in 0..3 {
            if c.children[i].is_none() {
                continue;
            }
            if let Ok(r) = http.get(format!("{}/status", c.url(i))).send().await {
                if let Ok(v) = r.json::<serde_json::Value>().await {
                    if v["role"] == "leader" {
                        return Ok(i);
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("no leader within {timeout:?}")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Write,
    Read,
}

/// Runs `clients` closed-loop clients for `secs` against `url`; returns (ok ops, errors,
/// latencies of the ok ops).
async fn load(
    http: reqwest::Client,
    url: String,
    kind: Kind,
    clients: usize,
    secs: f64,
) -> (u64, u64, Vec<Duration>) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let http = http.clone();
        let url = url.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let key = format!("k{}", (c as u64 * 7919 + n) % 1000);
                let t = Instant::now();
                let r = match kind {
                    Kind::Write => {
                        http.put(format!("{url}/kv/{key}"))
                            .header("content-type", "application/json")
                            .body(format!("{{\"value\":\"{n}\"}}"))
                            .send()
                            .await
                    }
                    Kind::Read => http.get(format!("{url}/kv/{key}")).send().await,
                };
                match r {
                    Ok(resp) if resp.status().is_success() || resp.status().as_u16() == 404 => {
                        let _ = resp.bytes().await;
                        lat.push(t.elapsed());
                    }
                    _ => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((l, e)) = t.await {
            all.extend(l);
            errors += e;
        }
    }
    all.sort();
    (all.len() as u64, errors, all)
}

/// A writer per live node sends a put every 20 ms without waiting for replies; returns the
/// longest gap between consecutive acknowledgements (any writer) during the window.
async fn availability(
    http: &reqwest::Client,
    c: &mut Cluster,
    fault: &str,
    secs: f64,
) -> Result<Duration> {
    let acks: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for i in 0..3 {
        let url = c.url(i);
        let http = http.clone();
        let acks = acks.clone();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                n += 1;
                let req = http
                    .put(format!("{url}/kv/avail{i}"))
                    .header("content-type", "application/json")
                    .body(format!("{{\"value\":\"{n}\"}}"))
                    .timeout(Duration::from_secs(3));
                let acks = acks.clone();
                tokio::spawn(async move {
                    if let Ok(r) = req.send().await {
                        if r.status().is_success() {
                            acks.lock().unwrap().push(Instant::now());
                        }
                    }
                });
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let l = leader(http, c, Duration::from_secs(5)).await?;
    let fault_at = Instant::now();
    match fault {
        "partition" => {
            let f = (l + 1) % 3;
            isolate(f, true)?;
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            isolate(f, false)?;
        }
        "pause" => {
            let pid = c.pid(l).context("leader has no pid")?;
            unsafe { libc::kill(pid, libc::SIGSTOP) };
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            unsafe { libc::kill(pid, libc::SIGCONT) };
        }
        _ => {
            c.kill(l);
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            c.spawn(l)?;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut acks = acks.lock().unwrap().clone();
    acks.sort();
    let mut gap = Duration::ZERO;
    for w in acks.windows(2) {
        if w[1] >= fault_at {
            gap = gap.max(w[1] - w[0]);
        }
    }
    Ok(gap)
}

/// Adds (or removes) iptables rules that cut node `f` off from the other two.
fn isolate(f: usize, on: bool) -> Result<()> {
    for other in (0..3).filter(|&o| o != f) {
        for (src, dst) in [(ip(f), ip(other)), (ip(other), ip(f))] {
            let st = Command::new("iptables")
                .args([
                    if on { "-A" } else { "-D" },
                    "INPUT",
                    "-s",
                    &src,
                    "-d",
                    &dst,
                    "-j",
                    "DROP",
                ])
                .status()
                .context("run iptables")?;
            if !st.success() {
                bail!(
                    "iptables failed ({st}); --partition needs root in a private network namespace"
                );
            }
        }
    }
    Ok(())
}

/// Moves this process into a new, private network namespace with only a loopback device, so
/// the iptables rules of `--partition` cannot touch the host's network. Must run before any
/// thread exists: a network namespace change applies to the calling thread only.
fn enter_private_netns() -> Result<()> {
    // SAFETY: unshare has no memory effects; it fails cleanly without CAP_SYS_ADMIN.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        bail!(
            "--partition needs root to create a private network namespace: {}",
            std::io::Error::last_os_error()
        );
    }
    let st = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .context("run ip link set lo up")?;
    if !st.success() {
        bail!("ip link set lo up failed ({st})");
    }
    Ok(())
}

fn main() -> Result<()> {
    let mut secs = 5.0f64;
    let mut fsync = true;
    let mut partition = false;
    let mut client_counts = vec![1usize, 16, 64];
    let mut bin = std::env::current_exe()?.with_file_name("paxos-kv");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => {
                secs = args
                    .next()
                    .context("--seconds needs a value")?
                    .parse()
                    .context("--seconds")?
            }
            "--bin" => bin = args.next().context("--bin needs a path")?.into(),
            "--no-fsync" => fsync = false,
            "--partition" => partition = true,
            "--clients" => {
                client_counts = args
                    .next()
                    .context("--clients needs a list")?
                    .split(',')
                    .map(|s| s.parse().with_context(|| format!("--clients entry {s:?}")))
                    .collect::<Result<_>>()?
            }
            other => bail!("unknown argument {other:?} (see the doc comment of paxos-kv-bench)"),
        }
    }
    if partition {
        enter_private_netns()?;
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
        .block_on(bench(bin, fsync, secs, client_counts, partition))
}

async fn bench(
    bin: PathBuf,
    fsync: bool,
    secs: f64,
    client_counts: Vec<usize>,
    partition: bool,
) -> Result<()> {
    let mut c = Cluster::start(bin, fsync)?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(5))
        .build()?;
    let l = leader(&http, &c, Duration::from_secs(10)).await?;
    println!("paxos-kv-bench: 3 nodes on loopback, fsync {}, {secs} s per phase, clients talk to the leader (node {})", if fsync { "on" } else { "off" }, l + 1);
    println!(
        "{:<6} {:>8} {:>10} {:>8} {:>9} {:>9}",
        "op", "clients", "ops/s", "errors", "p50 ms", "p99 ms"
    );
    for &n in &client_counts {
        for kind in [Kind::Write, Kind::Read] {
            let l = leader(&http, &c, Duration::from_secs(10)).await?;
            let (ok, errors, lat) = load(http.clone(), c.url(l), kind, n, secs).await;
            println!(
                "{:<6} {:>8} {:>10.0} {:>8} {:>9.2} {:>9.2}",
                if kind == Kind::Write { "write" } else { "read" },
                n,
                ok as f64 / secs,
                errors,
                percentile(&lat, 0.5).as_secs_f64() * 1e3,
                percentile(&lat, 0.99).as_secs_f64() * 1e3,
            );
        }
    }
    let mut faults = vec!["pause", "kill"];
    if partition {
        faults.push("partition");
    }
    for fault in faults {
        let gap = availability(&http, &mut c, fault, 3.0).await?;
        let what = match fault {
            "pause" => "paused (SIGSTOP)",
            "kill" => "killed (SIGKILL) and restarted",
            _ => "kept; a follower isolated (iptables) then healed",
        };
        println!(
            "availability: leader {what} for 3 s: longest gap between write acknowledgements {:.0} ms",
            gap.as_secs_f64() * 1e3
        );
    }
    Ok(())
}
