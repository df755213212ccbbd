//! The two network backends for partitions.
//!
//! * `netns`: the whole `ordeal test` process has unshared into a fresh network namespace before
//!   the runtime started; nodes sit on 127.0.0.(10+id) inside it and a cut is a pair of iptables
//!   DROP rules in a chain of our own. Nothing leaks: the namespace, its rules and its loopback
//!   die with the process.
//! * `proxy`: every directed peer link i -> j goes through a TCP proxy the harness owns (node i's
//!   `--peers` names the proxy for j). A cut blackholes the link: bytes are read and dropped, so
//!   the store sees silence, not resets, as with a real partition. On heal, connections that
//!   lost bytes are closed so that no stream resumes with a hole in it.

use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetChoice {
    Auto,
    Netns,
    Proxy,
}

impl NetChoice {
    pub fn parse(s: &str) -> Result<NetChoice> {
        match s {
            "auto" => Ok(NetChoice::Auto),
            "netns" => Ok(NetChoice::Netns),
            "proxy" => Ok(NetChoice::Proxy),
            other => bail!("--net {other:?}: expected auto, netns or proxy"),
        }
    }
}

fn run_cmd(program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} (is it installed?)"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Moves this process into a fresh network namespace with `lo` up and our iptables chain
/// installed. Must run before any thread is spawned (unshare affects the calling thread, and
/// threads started later inherit it). Returns why it could not, so `auto` can fall back.
pub fn enter_netns() -> Result<()> {
    if Command::new("iptables").arg("--version").output().is_err() {
        bail!("iptables is not installed (apt-get install -y iptables)");
    }
    // SAFETY: unshare(2) with a flag; affects only this (still single-threaded) process.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    if rc != 0 {
        bail!(
            "unshare(CLONE_NEWNET) failed: {} (needs CAP_NET_ADMIN, i.e. root)",
            std::io::Error::last_os_error()
        );
    }
    run_cmd("ip", &["link", "set", "lo", "up"])?;
    run_cmd("iptables", &["-N", "ORDEAL"])?;
    run_cmd("iptables", &["-I", "INPUT", "-j", "ORDEAL"])?;
    Ok(())
}

/// Shared state of one directed link's proxy.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct LinkState {
    blocked: bool,
    delay_ms: u64,
    /// Bumped on heal; connections from an older epoch that were blackholed close themselves.
    epoch: u64,
}

pub struct ProxyNet {
    /// `links[i][j]` for i != j: the state of node i's link to node j.
    links: Vec<Vec<Option<watch::Sender<LinkState>>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ProxyNet {
    /// Starts one proxy per directed link. `listen[i][j]` is where node i dials to reach j,
    /// `targets[j]` where node j really listens.
    pub async fn start(listen: &[Vec<SocketAddr>], targets: &[SocketAddr]) -> Result<ProxyNet> {
        let n = targets.len();
        let mut links = Vec::with_capacity(n);
        let mut tasks = Vec::new();
        for (i, row) in listen.iter().enumerate() {
            let mut link_row = Vec::with_capacity(n);
            for (j, addr) in row.iter().enumerate() {
                if i == j {
                    link_row.push(None);
                    continue;
                }
                let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                    format!("proxy for link n{}->n{}: binding {addr}", i + 1, j + 1)
                })?;
                let (tx, rx) = watch::channel(LinkState::default());
                let target = targets[j];
                tasks.push(tokio::spawn(accept_loop(listener, target, rx)));
                link_row.push(Some(tx));
            }
            links.push(link_row);
        }
        Ok(ProxyNet { links, tasks })
    }

    fn set(&self, i: usize, j: usize, f: impl FnOnce(&mut LinkState)) {
        if let Some(Some(tx)) = self.links.get(i).and_then(|r| r.get(j)) {
            tx.send_modify(f);
        }
    }

    pub fn cut(&self, pairs: &BTreeSet<(usize, usize)>) {
        for &(a, b) in pairs {
            self.set(a, b, |s| s.blocked = true);
            self.set(b, a, |s| s.blocked = true);
        }
    }

    pub fn delay(&self, pairs: &BTreeSet<(usize, usize)>, delay_ms: u64) {
        for &(a, b) in pairs {
            self.set(a, b, |s| s.delay_ms = delay_ms);
            self.set(b, a, |s| s.delay_ms = delay_ms);
        }
    }

    pub fn heal(&self) {
        for row in &self.links {
            for tx in row.iter().flatten() {
                tx.send_modify(|s| {
                    if s.blocked {
                        s.epoch += 1;
                    }
                    s.blocked = false;
                    s.delay_ms = 0;
                });
            }
        }
    }
}

impl Drop for ProxyNet {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    target: SocketAddr,
    rx: watch::Receiver<LinkState>,
) {
    // Bounded: the loop ends when the task is aborted at the end of the run.
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = inbound.set_nodelay(true);
        let rx = rx.clone();
        tokio::spawn(async move {
            let start_epoch = rx.borrow().epoch;
            let blocked_at_start = rx.borrow().blocked;
            // While the link is cut, a new connection is accepted and then silent: the dialer
            // sees a timeout, as it would behind a real partition.
            let outbound = if blocked_at_start {
                None
            } else {
                match tokio::time::timeout(
                    Duration::from_secs(2),
                    tokio::net::TcpStream::connect(target),
                )
                .await
                {
                    Ok(Ok(s)) => {
                        let _ = s.set_nodelay(true);
                        Some(s)
                    }
                    // The node is down: refuse, as the node itself would.
                    _ => return,
                }
            };
            let (mut in_r, mut in_w) = inbound.into_split();
            let Some(outbound) = outbound else {
                let mut rx = rx;
                let mut sink = vec![0u8; 16 * 1024];
                loop {
                    tokio::select! {
                        r = in_r.read(&mut sink) => if matches!(r, Ok(0) | Err(_)) { return },
                        c = rx.changed() => if c.is_err() || rx.borrow().epoch != start_epoch { return },
                    }
                }
            };
            let (mut out_r, mut out_w) = outbound.into_split();
            let up = pump(&mut in_r, &mut out_w, rx.clone(), start_epoch);
            let down = pump(&mut out_r, &mut in_w, rx, start_epoch);
            // Either direction ending closes both halves.
            tokio::select! { _ = up => {}, _ = down => {} }
            let _ = in_w.shutdown().await;
            let _ = out_w.shutdown().await;
        });
    }
}

/// Copies one direction, dropping bytes while the link is cut and closing on the heal that
/// follows a cut.
async fn pump<R, W>(from: &mut R, to: &mut W, mut rx: watch::Receiver<LinkState>, start_epoch: u64)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        tokio::select! {
            r = from.read(&mut buf) => {
                let n = match r { Ok(0) | Err(_) => return, Ok(n) => n };
                let state = *rx.borrow();
                if state.epoch != start_epoch {
                    return;
                }
                if state.blocked {
                    continue;
                }
                if state.delay_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(state.delay_ms)).await;
                }
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            c = rx.changed() => {
                if c.is_err() || rx.borrow().epoch != start_epoch {
                    return;
                }
            }
        }
    }
}

/// iptables rules inside our own namespace.
pub struct NetnsNet {
    ips: Vec<std::net::Ipv4Addr>,
}

impl NetnsNet {
    pub fn new(ips: Vec<std::net::Ipv4Addr>) -> NetnsNet {
        NetnsNet { ips }
    }

    pub fn cut(&self, pairs: &BTreeSet<(usize, usize)>) -> Result<()> {
        for &(a, b) in pairs {
            for (s, d) in [(a, b), (b, a)] {
                let (src, dst) = (self.ips[s].to_string(), self.ips[d].to_string());
                run_cmd(
                    "iptables",
                    &["-A", "ORDEAL", "-s", &src, "-d", &dst, "-j", "DROP"],
                )?;
            }
        }
        Ok(())
    }

    pub fn heal(&self) -> Result<()> {
        run_cmd("iptables", &["-F", "ORDEAL"])
    }

    /// The rules now in force, for tests and the log.
    pub fn rules() -> Result<String> {
        let out = Command::new("iptables").args(["-S", "ORDEAL"]).output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The backend in use.
pub enum Net {
    Netns(NetnsNet),
    Proxy(ProxyNet),
}

impl Net {
    pub fn name(&self) -> &'static str {
        match self {
            Net::Netns(_) => "netns",
            Net::Proxy(_) => "proxy",
        }
    }

    pub fn cut(&self, pairs: &BTreeSet<(usize, usize)>) -> Result<()> {
        match self {
            Net::Netns(n) => n.cut(pairs),
            Net::Proxy(p) => {
                p.cut(pairs);
                Ok(())
            }
        }
    }

    pub fn heal(&self) -> Result<()> {
        match self {
            Net::Netns(n) => n.heal(),
            Net::Proxy(p) => {
                p.heal();
                Ok(())
            }
        }
    }
}

pub type SharedNet = Arc<Net>;
