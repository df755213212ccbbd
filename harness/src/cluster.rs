//! Cluster control: start `paxos-kv` nodes as child processes, pause, kill, restart and stop
//! them by pid, and ask them who leads.
//!
//! Every pid the harness starts is registered in a process-wide table so that a panic hook and
//! the Ctrl-C path can kill them all even when the `Cluster` value is out of reach; and every
//! child gets PR_SET_PDEATHSIG, so they die with the harness even if it is SIGKILLed.

use anyhow::{bail, Context, Result};
use std::fs::OpenOptions;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
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
    data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    paused: bool,
}

pub struct Cluster {
    store_bin: PathBuf,
    bug: Option<String>,
    layout: Layout,
    nodes: Vec<NodeProc>,
    http: reqwest::Client,
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
        store_bin: PathBuf,
        bug: Option<String>,
        layout: Layout,
        run_dir: &Path,
    ) -> Result<Cluster> {
        if !store_bin.is_file() {
            bail!(
                "store binary {} not found (build it with `cargo build --release -p paxos-kv`, or pass --store-bin)",
                store_bin.display()
            );
        }
        let nodes_dir = run_dir.join("nodes");
        std::fs::create_dir_all(&nodes_dir)
            .with_context(|| format!("creating {}", nodes_dir.display()))?;
        let nodes = layout
            .nodes
            .iter()
            .map(|a| NodeProc {
                addr: a.clone(),
                data_dir: nodes_dir.join(format!("{}-data", a.name)),
                log_path: nodes_dir.join(format!("{}.log", a.name)),
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
            store_bin,
            bug,
            layout,
            nodes,
            http,
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

    pub fn log_paths(&self) -> Vec<PathBuf> {
        self.nodes.iter().map(|n| n.log_path.clone()).collect()
    }

    /// The command line for node `i`, as started.
    pub fn command_line(&self, i: usize) -> Vec<String> {
        let n = &self.nodes[i];
        let peers: Vec<String> = self
            .layout
            .nodes
            .iter()
            .enumerate()
            .map(|(j, other)| format!("{}={}", other.id, self.layout.peer_target[i][j]))
            .collect();
        let mut args = vec![
            "--id".to_string(),
            n.addr.id.to_string(),
            "--listen".into(),
            n.addr.peer.to_string(),
            "--client".into(),
            n.addr.client.to_string(),
            "--peers".into(),
            peers.join(","),
            "--data-dir".into(),
            n.data_dir.display().to_string(),
        ];
        if let Some(forward) = &self.layout.forward_target {
            let targets: Vec<String> = self
                .layout
                .nodes
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(j, other)| format!("{}={}", other.id, forward[i][j]))
                .collect();
            if !targets.is_empty() {
                args.push("--peer-clients".into());
                args.push(targets.join(","));
            }
        }
        if let Some(bug) = &self.bug {
            args.push("--bug".into());
            args.push(bug.clone());
        }
        args
    }

    /// Starts node `i` (again, on the same data directory if it ran before).
    pub fn start(&mut self, i: usize) -> Result<()> {
        if self.nodes[i].child.is_some() {
            return Ok(());
        }
        let args = self.command_line(i);
        let n = &mut self.nodes[i];
        std::fs::create_dir_all(&n.data_dir)
            .with_context(|| format!("creating {}", n.data_dir.display()))?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log_path)
            .with_context(|| format!("opening {}", n.log_path.display()))?;
        let log_err = log.try_clone().context("duplicating the node log handle")?;
        let mut cmd = Command::new(&self.store_bin);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .env("RUST_BACKTRACE", "1");
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| {
            format!("starting {} for {}", self.store_bin.display(), n.addr.name)
        })?;
        register_pid(child.id() as i32);
        tracing::info!(node = %n.addr.name, pid = child.id(), "started: {} {}", self.store_bin.display(), args.join(" "));
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

    pub async fn status(&self, i: usize) -> Option<NodeStatus> {
        let url = format!("{}/status", self.nodes[i].addr.client_url());
        let resp = self.http.get(url).send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json::<NodeStatus>().await.ok()
    }

    /// The index of the node that says it leads (the highest ballot wins if several do).
    pub async fn leader(&self) -> Option<usize> {
        let statuses =
            futures::future::join_all((0..self.nodes.len()).map(|i| self.status(i))).await;
        let mut best: Option<(usize, (u64, u64))> = None;
        for (i, s) in statuses.into_iter().enumerate() {
            let Some(s) = s else { continue };
            if s.role.as_deref() == Some("leader") && !self.nodes[i].paused {
                let ballot = s.ballot.as_ref().map(ballot_order).unwrap_or_default();
                if best.as_ref().map(|(_, b)| ballot > *b).unwrap_or(true) {
                    best = Some((i, ballot));
                }
            }
        }
        best.map(|(i, _)| i)
    }

    /// Waits until some node reports itself leader, or `timeout` passes.
    pub async fn wait_for_leader(&mut self, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.leader().await {
                return Ok(i);
            }
            for i in 0..self.nodes.len() {
                if !self.is_running(i) {
                    bail!(
                        "{} exited during start-up; see {}",
                        self.nodes[i].addr.name,
                        self.nodes[i].log_path.display()
                    );
                }
            }
            if Instant::now() >= deadline {
                bail!("no node reported itself leader on /status within {timeout:?}");
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
