//! Cluster control for every target: start its nodes as child processes, pause, kill, restart,
//! wipe and stop them by pid, wait until they serve, and ask them who leads (by the target's
//! leader query).
//!
//! Every pid the harness starts is registered in a process-wide table so that a panic hook and
//! the Ctrl-C path can kill them all even when the `Cluster` value is out of reach; and every
//! child gets PR_SET_PDEATHSIG, so they die with the harness even if it is SIGKILLed.

use crate::target::{ConvergenceQuery, LeaderQuery, NodeDirs, Target};
use anyhow::{bail, Context, Result};
use std::fs::OpenOptions;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every live child pid, for the panic hook and the interrupt path.
static LIVE_PIDS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

fn register_pid(pid: i32) {
    LIVE_PIDS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(pid);
}

fn unregister_pid(pid: i32) {
    LIVE_PIDS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|p| *p != pid);
}

/// Kills every registered child (SIGCONT first so a paused one can die). Safe to call from a
/// panic hook: no allocation-heavy work, no awaits.
pub fn kill_all_registered() {
    let pids: Vec<i32> = LIVE_PIDS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
        .collect();
    for pid in pids {
        // SAFETY: plain kill(2) calls on pids this process started.
        unsafe {
            libc::kill(pid, libc::SIGCONT);
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
}

/// Where one node lives.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NodeAddr {
    /// 1-based node id, as `paxos-kv --id` takes it.
    pub id: usize,
    pub name: String,
    /// Where the node listens for peers.
    pub peer: SocketAddr,
    /// Where the node serves the client API.
    pub client: SocketAddr,
}

impl NodeAddr {
    pub fn client_url(&self) -> String {
        format!("http://{}", self.client)
    }
}

/// The addresses of a whole cluster. `peer_target[i][j]` is the address node `i` dials to reach
/// node `j`: the node itself with the kernel backend, a harness-owned proxy with the userspace one.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Layout {
    pub nodes: Vec<NodeAddr>,
    pub peer_target: Vec<Vec<SocketAddr>>,
    /// With the userspace proxy: `forward_target[i][j]` is where node `i` sends the client
    /// requests it forwards to node `j` (`paxos-kv --peer-clients`), a proxy too, so that cuts
    /// and network faults apply to forwarding as well. None: nodes forward directly.
    pub forward_target: Option<Vec<Vec<SocketAddr>>>,
}

impl Layout {
    /// The one address every other node dials to reach node `i`, for targets whose nodes all
    /// share one address per peer (etcd's advertised peer URL): the node's own peer address, or
    /// the shared proxy listener in front of it.
    pub fn shared_peer_address(&self, i: usize) -> SocketAddr {
        (0..self.nodes.len())
            .find(|&k| k != i)
            .map(|k| self.peer_target[k][i])
            .unwrap_or(self.nodes[i].peer)
    }
}

/// The IP of node `id` (1-based): 127.0.0.(10+id), so that the harness itself (127.0.0.1) is
/// never one of the addresses that partition rules name.
pub fn node_ip(id: usize, distinct_ips: bool) -> Ipv4Addr {
    if distinct_ips {
        Ipv4Addr::new(127, 0, 0, 10 + id as u8)
    } else {
        Ipv4Addr::LOCALHOST
    }
}

/// True when this host can bind 127.0.0.N for N != 1 (all of 127/8 is loopback on Linux).
pub fn can_bind_distinct_loopback() -> bool {
    std::net::TcpListener::bind((Ipv4Addr::new(127, 0, 0, 12), 0)).is_ok()
}

/// Checks that every address in `addrs` can be bound now, naming the first that cannot.
pub fn check_ports_free(addrs: &[SocketAddr]) -> Result<()> {
    for a in addrs {
        std::net::TcpListener::bind(a)
            .with_context(|| format!("address {a} is not free (port in use?)"))?;
    }
    Ok(())
}

struct NodeProc {
    addr: NodeAddr,
    dirs: NodeDirs,
    child: Option<Child>,
    paused: bool,
}

pub struct Cluster {
    target: Arc<dyn Target>,
    layout: Layout,
    nodes: Vec<NodeProc>,
    http: reqwest::Client,
    /// With the kernel backend and a target whose nodes do not dial from their own address:
    /// each node runs under group id `SNAT_GID_BASE + id`, which the namespace's SNAT rules
    /// turn into its source address.
    snat_by_gid: bool,
}

/// Node `id` runs under group `SNAT_GID_BASE + id` when its source address is rewritten.
pub const SNAT_GID_BASE: u32 = 40_000;

/// The one-line verdict of a convergence query on one node.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NodeState {
    /// How far the node has applied (paxos-kv's applied index, etcd's revision).
    pub applied: Option<u64>,
    /// A digest of its state at that point.
    pub digest: Option<String>,
    pub raw: serde_json::Value,
}

/// One node's `/status` reply, as much as the harness needs.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct NodeStatus {
    pub id: Option<serde_json::Value>,
    pub role: Option<String>,
    pub leader: Option<serde_json::Value>,
    pub ballot: Option<serde_json::Value>,
    pub commit_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub digest: Option<serde_json::Value>,
}

impl Cluster {
    pub fn new(
        target: Arc<dyn Target>,
        layout: Layout,
        run_dir: &Path,
        snat_by_gid: bool,
    ) -> Result<Cluster> {
        let nodes_dir = run_dir.join("nodes");
        std::fs::create_dir_all(&nodes_dir)
            .with_context(|| format!("creating {}", nodes_dir.display()))?;
        let nodes = layout
            .nodes
            .iter()
            .map(|a| NodeProc {
                addr: a.clone(),
                dirs: NodeDirs {
                    data_dir: nodes_dir.join(format!("{}-data", a.name)),
                    log_path: nodes_dir.join(format!("{}.log", a.name)),
                },
                child: None,
                paused: false,
            })
            .collect();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(500))
            .connect_timeout(Duration::from_millis(300))
            .build()
            .context("building the status client")?;
        Ok(Cluster {
            target,
            layout,
            nodes,
            http,
            snat_by_gid,
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].addr.name
    }

    pub fn pids(&self) -> Vec<i32> {
        self.nodes
            .iter()
            .filter_map(|n| n.child.as_ref().map(|c| c.id() as i32))
            .collect()
    }

    /// Every node's log: what the harness captured, and any log the target writes itself.
    pub fn log_paths(&self) -> Vec<PathBuf> {
        let mut logs: Vec<PathBuf> = self.nodes.iter().map(|n| n.dirs.log_path.clone()).collect();
        logs.extend(
            (0..self.nodes.len())
                .filter_map(|i| self.target.extra_log(i, &self.layout, &self.nodes[i].dirs)),
        );
        logs
    }

    pub fn target(&self) -> &Arc<dyn Target> {
        &self.target
    }

    /// The command line for node `i`, as started.
    pub fn command_line(&self, i: usize) -> Vec<String> {
        self.target.args(i, &self.layout, &self.nodes[i].dirs)
    }

    /// Starts node `i` (again, on the same data directory if it ran before).
    pub fn start(&mut self, i: usize) -> Result<()> {
        if self.nodes[i].child.is_some() {
            return Ok(());
        }
        let args = self.command_line(i);
        let bin = self.target.binary().to_path_buf();
        let gid = self
            .snat_by_gid
            .then(|| SNAT_GID_BASE + self.nodes[i].addr.id as u32);
        let n = &mut self.nodes[i];
        std::fs::create_dir_all(&n.dirs.data_dir)
            .with_context(|| format!("creating {}", n.dirs.data_dir.display()))?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.dirs.log_path)
            .with_context(|| format!("opening {}", n.dirs.log_path.display()))?;
        let log_err = log.try_clone().context("duplicating the node log handle")?;
        let mut cmd = Command::new(&bin);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .env("RUST_BACKTRACE", "1");
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // setgroups first: supplementary groups would match other nodes' rules.
                if let Some(gid) = gid {
                    if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(gid) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {} for {}", bin.display(), n.addr.name))?;
        register_pid(child.id() as i32);
        tracing::info!(node = %n.addr.name, pid = child.id(), "started: {} {}", bin.display(), args.join(" "));
        n.child = Some(child);
        n.paused = false;
        Ok(())
    }

    pub fn start_all(&mut self) -> Result<()> {
        for i in 0..self.nodes.len() {
            self.start(i)?;
        }
        Ok(())
    }

    /// SIGKILL, then reap. The data directory stays for the restart.
    pub fn kill(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        if let Some(mut child) = n.child.take() {
            let pid = child.id() as i32;
            // SAFETY: kill(2) on our own child; SIGCONT so a paused child can die.
            unsafe {
                libc::kill(pid, libc::SIGCONT);
            }
            let _ = child.kill();
            let _ = child.wait();
            unregister_pid(pid);
            tracing::info!(node = %n.addr.name, pid, "killed");
        }
        n.paused = false;
    }

    /// Is node `i` running (not killed)? A node that exited on its own is reaped here.
    pub fn is_running(&mut self, i: usize) -> bool {
        let n = &mut self.nodes[i];
        if let Some(child) = n.child.as_mut() {
            match child.try_wait() {
                Ok(None) => return true,
                Ok(Some(status)) => {
                    tracing::warn!(node = %n.addr.name, "exited on its own: {status}");
                    unregister_pid(child.id() as i32);
                    n.child = None;
                }
                Err(_) => return true,
            }
        }
        false
    }

    pub fn pause(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        if let Some(child) = &n.child {
            // SAFETY: kill(2) on our own child.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGSTOP);
            }
            n.paused = true;
            tracing::info!(node = %n.addr.name, "paused (SIGSTOP)");
        }
    }

    pub fn resume(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        if let Some(child) = &n.child {
            // SAFETY: kill(2) on our own child.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGCONT);
            }
            tracing::info!(node = %n.addr.name, "resumed (SIGCONT)");
        }
        n.paused = false;
    }

    /// Deletes node `i`'s data directory (the node must be stopped): it starts empty next time.
    pub fn wipe(&mut self, i: usize) -> Result<()> {
        if self.nodes[i].child.is_some() {
            bail!("wipe {}: the node is running", self.nodes[i].addr.name);
        }
        let dir = &self.nodes[i].dirs.data_dir;
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("wiping {}", dir.display()))?;
        }
        Ok(())
    }

    /// Undo every process fault: resume the paused, restart the killed.
    pub fn heal_processes(&mut self) -> Result<()> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].paused {
                self.resume(i);
            }
            if !self.is_running(i) {
                self.start(i)?;
            }
        }
        Ok(())
    }

    /// Stops every node by pid.
    pub fn stop_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }

    async fn get_json(&self, i: usize, path: &str) -> Option<serde_json::Value> {
        let url = format!("{}{path}", self.nodes[i].addr.client_url());
        let resp = self.http.get(url).send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json().await.ok()
    }

    async fn post_json(
        &self,
        i: usize,
        path: &str,
        body: serde_json::Value,
    ) -> Option<serde_json::Value> {
        let url = format!("{}{path}", self.nodes[i].addr.client_url());
        let resp = self.http.post(url).json(&body).send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json().await.ok()
    }

    /// Node `i`'s `/status` (DESIGN's store API).
    pub async fn status(&self, i: usize) -> Option<NodeStatus> {
        serde_json::from_value(self.get_json(i, "/status").await?).ok()
    }

    /// Does node `i` claim to lead, and how strongly (a higher claim wins: ballot or term)?
    async fn leader_claim(&self, i: usize, query: &LeaderQuery) -> Option<(u64, u64)> {
        match query {
            LeaderQuery::None => None,
            LeaderQuery::OrdealStatus => {
                let s = self.status(i).await?;
                (s.role.as_deref() == Some("leader"))
                    .then(|| s.ballot.as_ref().map(ballot_order).unwrap_or_default())
            }
            LeaderQuery::EtcdStatus => {
                let s = self
                    .post_json(i, "/v3/maintenance/status", serde_json::json!({}))
                    .await?;
                let me = json_u64(&s["header"]["member_id"])?;
                let leader = json_u64(&s["leader"])?;
                let term = json_u64(&s["raft_term"])
                    .or_else(|| json_u64(&s["raftTerm"]))
                    .unwrap_or(0);
                (me == leader).then_some((term, 0))
            }
            LeaderQuery::Http { path, field, value } => {
                let s = self.get_json(i, path).await?;
                let v = &s[field.as_str()];
                let text = v
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string());
                (text == *value).then_some((0, 0))
            }
        }
    }

    /// The index of the node that says it leads (the strongest claim wins if several do).
    /// None also when the target has no leader query.
    pub async fn leader(&self) -> Option<usize> {
        self.leader_among(0..self.nodes.len()).await
    }

    /// As [`Cluster::leader`], among `nodes` only (one group of sharded paxos-kv: ballots of
    /// different groups do not compare).
    pub async fn leader_among(&self, nodes: impl IntoIterator<Item = usize>) -> Option<usize> {
        let query = self.target.leader_query();
        let nodes: Vec<usize> = nodes
            .into_iter()
            .filter(|&i| i < self.nodes.len())
            .collect();
        let claims =
            futures::future::join_all(nodes.iter().map(|&i| self.leader_claim(i, &query))).await;
        let mut best: Option<(usize, (u64, u64))> = None;
        for (&i, claim) in nodes.iter().zip(claims) {
            let Some(claim) = claim else { continue };
            if !self.nodes[i].paused && best.as_ref().map(|(_, b)| claim > *b).unwrap_or(true) {
                best = Some((i, claim));
            }
        }
        best.map(|(i, _)| i)
    }

    /// Is node `i` serving: its ready path answers 2xx, or (without one) its client port
    /// accepts a connection?
    async fn serves(&self, i: usize) -> bool {
        match self.target.ready_path() {
            Some(path) => {
                let url = format!("{}{path}", self.nodes[i].addr.client_url());
                matches!(self.http.get(url).send().await, Ok(r) if r.status().is_success())
            }
            None => tokio::time::timeout(
                Duration::from_millis(300),
                tokio::net::TcpStream::connect(self.nodes[i].addr.client),
            )
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false),
        }
    }

    /// Node `i`'s state for the convergence check, by the target's query.
    pub async fn state(&self, i: usize) -> Option<NodeState> {
        match self.target.convergence_query() {
            ConvergenceQuery::None => None,
            ConvergenceQuery::OrdealStatusDigest => {
                let raw = self.get_json(i, "/status").await?;
                let s: NodeStatus = serde_json::from_value(raw.clone()).ok()?;
                Some(NodeState {
                    applied: s.applied_index,
                    digest: s.digest.as_ref().map(|d| d.to_string()),
                    raw,
                })
            }
            ConvergenceQuery::EtcdHash => {
                // 3.4's gateway has no hashkv: the whole backend's hash, compared at equal
                // applied raft index (status before and after, so no entry slipped in between).
                let before = self
                    .post_json(i, "/v3/maintenance/status", serde_json::json!({}))
                    .await?;
                let hash = self
                    .post_json(i, "/v3/maintenance/hash", serde_json::json!({}))
                    .await?;
                let after = self
                    .post_json(i, "/v3/maintenance/status", serde_json::json!({}))
                    .await?;
                let applied = |s: &serde_json::Value| {
                    json_u64(&s["raftAppliedIndex"]).or_else(|| json_u64(&s["raft_applied_index"]))
                };
                let index = applied(&before).filter(|b| Some(*b) == applied(&after))?;
                Some(NodeState {
                    applied: Some(index),
                    digest: json_u64(&hash["hash"]).map(|h| h.to_string()),
                    raw: serde_json::json!({"status": after, "hash": hash}),
                })
            }
        }
    }

    /// Waits until every running node serves and, if the target can say, one leads.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<Option<usize>> {
        let deadline = Instant::now() + timeout;
        let has_leader_query = !matches!(self.target.leader_query(), LeaderQuery::None);
        loop {
            if has_leader_query {
                if let Some(i) = self.leader().await {
                    return Ok(Some(i));
                }
            } else {
                let serving =
                    futures::future::join_all((0..self.nodes.len()).map(|i| self.serves(i))).await;
                if serving.iter().all(|s| *s) {
                    return Ok(None);
                }
            }
            for i in 0..self.nodes.len() {
                if !self.is_running(i) {
                    bail!(
                        "{} exited during start-up ({} {}); see {}",
                        self.nodes[i].addr.name,
                        self.target.binary().display(),
                        self.command_line(i).join(" "),
                        self.nodes[i].dirs.log_path.display()
                    );
                }
            }
            if Instant::now() >= deadline {
                if has_leader_query {
                    bail!("no node reported itself leader within {timeout:?}");
                }
                bail!("not every node answered on its client port within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// etcd's JSON gateway writes 64-bit numbers as strings.
fn json_u64(v: &serde_json::Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str()?.parse().ok())
}

/// Orders ballots as the store defines them, `(round, node)`: `/status` reports a ballot as
/// the string `"round.node"` (a plain number is a round). Compared as text, round 10 would sort
/// below round 9.
fn ballot_order(ballot: &serde_json::Value) -> (u64, u64) {
    match ballot {
        serde_json::Value::Number(n) => (n.as_u64().unwrap_or(0), 0),
        serde_json::Value::String(s) => {
            let mut parts = s
                .splitn(2, '.')
                .map(|p| p.trim().parse::<u64>().unwrap_or(0));
            (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
        }
        _ => (0, 0),
    }
}

#[cfg(test)]
mod ballot_tests {
    use super::ballot_order;
    use serde_json::json;

    #[test]
    fn ballots_compare_by_round_then_node() {
        assert!(ballot_order(&json!("10.1")) > ballot_order(&json!("9.3")));
        assert!(ballot_order(&json!("4.2")) > ballot_order(&json!("4.1")));
        assert_eq!(ballot_order(&json!(7)), (7, 0));
        assert_eq!(ballot_order(&json!(null)), (0, 0));
    }
}
