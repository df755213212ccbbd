//! The network backends for partitions and for the `network` fault (delay, loss, duplication).
//!
//! * `netns`: the whole `ordeal test` process has unshared into a fresh network namespace before
//!   the runtime started; nodes sit on 127.0.0.(10+id) inside it. A cut is a pair of iptables
//!   DROP rules in the chain `ORDEAL`; packet loss is an iptables `statistic` rule in the chain
//!   `ORDEAL-NET`; delay and duplication are a netem qdisc on `lo` behind u32 filters naming the
//!   links, when the kernel has netem. When it has not, and the run has a `network` fault, every
//!   peer link and every forwarded client request also passes through the userspace proxy below,
//!   which applies delay and duplication instead (and says so). Nothing leaks: the namespace, its
//!   rules, qdiscs and loopback die with the process.
//! * `proxy`: every directed peer link i -> j goes through a TCP proxy the harness owns (node i's
//!   `--peers` names the proxy for j), and so does every client request node i forwards to node
//!   j (`paxos-kv --peer-clients`). A cut blackholes the link: bytes are read and dropped, so the
//!   store sees silence, not resets, as with a real partition. On heal, connections that lost
//!   bytes are closed so that no stream resumes with a hole in it. Delay, loss and duplication
//!   are applied per paxos-kv frame (see [`Framer`]).
//!
//! Partitions and network faults are healed separately (two nemeses may hold one of each at
//! once); [`Net::heal`] undoes both at the end of a run.

use anyhow::{bail, Context, Result};
use bytes::{Bytes, BytesMut};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

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

/// The iptables chain holding partition cuts.
pub const CUT_CHAIN: &str = "ORDEAL";
/// The iptables chain holding the network fault's packet loss.
pub const LOSS_CHAIN: &str = "ORDEAL-NET";

/// Moves this process into a fresh network namespace with `lo` up and our iptables chains
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
    for chain in [CUT_CHAIN, LOSS_CHAIN] {
        run_cmd("iptables", &["-N", chain])?;
        run_cmd("iptables", &["-I", "INPUT", "-j", chain])?;
    }
    Ok(())
}

/// For targets whose nodes dial peers from any address (the kernel picks 127.0.0.1 on `lo`):
/// rewrites the source address of every connection node `id` opens to its own 127.0.0.(10+id),
/// matched by the group id it runs under (`gid_base + id`), so that the cut and loss rules between
/// node addresses see the real link. Lives in the run's namespace and dies with it.
pub fn snat_by_gid(layout: &crate::cluster::Layout, gid_base: u32) -> Result<()> {
    for node in &layout.nodes {
        let gid = (gid_base + node.id as u32).to_string();
        let ip = node.peer.ip().to_string();
        run_cmd(
            "iptables",
            &[
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-d",
                "127.0.0.0/8",
                "-m",
                "owner",
                "--gid-owner",
                &gid,
                "-j",
                "SNAT",
                "--to-source",
                &ip,
            ],
        )
        .with_context(|| format!("source address for {} (iptables nat)", node.name))?;
    }
    Ok(())
}

/// What the `network` fault does to the links it picks, as Jepsen's `:packet` behaviours.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "behaviour", rename_all = "lowercase")]
pub enum Behaviour {
    /// Every message waits `delay_ms`, give or take up to `jitter_ms` (uniformly).
    Delay { delay_ms: u64, jitter_ms: u64 },
    /// Each message is lost with this probability, in percent.
    Loss { percent: u32 },
    /// Each message is delivered twice with this probability, in percent.
    Duplicate { percent: u32 },
}

impl Behaviour {
    /// As the history and the report name it, e.g. `delay 80ms ±16ms`.
    pub fn describe(&self) -> String {
        match self {
            Behaviour::Delay {
                delay_ms,
                jitter_ms,
            } => format!("delay {delay_ms}ms ±{jitter_ms}ms"),
            Behaviour::Loss { percent } => format!("loss {percent}%"),
            Behaviour::Duplicate { percent } => format!("duplicate {percent}%"),
        }
    }
}

/// The state of one directed proxied link, shared by its accept loop and its connections.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct LinkState {
    /// Cut by a partition.
    blocked: bool,
    /// Shaped by a network fault.
    shaping: Option<Behaviour>,
    /// Bumped on heal; connections from an older epoch that were blackholed close themselves.
    epoch: u64,
}

/// Frames the proxy buffers whole; a longer one (a big snapshot) passes through untouched.
pub const PROXY_FRAME_MAX_BYTES: usize = 16 << 20;
/// The first frame of a paxos-kv peer connection is a hello no longer than this (the store's own
/// limit); a connection whose first four bytes announce more is not paxos-kv framing (an HTTP
/// request, say) and is shaped as a raw byte stream.
pub const PROXY_HELLO_MAX_BYTES: usize = 64 << 10;
/// Units (frames or chunks) waiting for their delivery time, per direction of a connection.
pub const PROXY_QUEUE_UNITS: usize = 4096;
/// Bytes waiting for their delivery time, per direction of a connection; the reader waits (and
/// TCP pushes back on the sender) beyond that. A larger unit waits for the whole budget.
pub const PROXY_QUEUE_BYTES: usize = 32 << 20;
/// What one lost segment costs a TCP stream: the retransmission after about the minimum RTO.
pub const PROXY_RETRANSMIT_STALL_MS: u64 = 200;
/// How long a connection whose sender closed keeps delivering what it already delayed.
pub const PROXY_DRAIN_MS: u64 = 2000;
/// Bytes read from a socket at once.
pub const PROXY_READ_CHUNK_BYTES: usize = 32 << 10;
/// How long the proxy waits to connect to a node before giving up on the connection.
pub const PROXY_CONNECT_TIMEOUT_MS: u64 = 2000;
/// How long data the proxy sent may stay unacknowledged before its connection fails.
pub const PROXY_USER_TIMEOUT_MS: u64 = 1000;

/// One piece of a stream the proxy decides about.
#[derive(Clone, Debug, PartialEq)]
pub struct Unit {
    pub bytes: Bytes,
    /// A whole paxos-kv frame (length prefix included), which may be dropped or repeated
    /// without corrupting the stream.
    pub whole_frame: bool,
    /// The connection's first frame, the hello: never dropped or repeated, since the receiver
    /// would read the next frame as a hello and close the connection.
    pub hello: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum FramerMode {
    /// Expecting a 4-byte little-endian length, then that many bytes.
    Header,
    /// Inside an oversized frame: this many bytes are left to pass through.
    Passthrough(usize),
    /// Not paxos-kv framing: every read is a unit.
    Raw,
}

/// Cuts a byte stream into units: whole frames of paxos-kv's peer transport (a u32 LE length,
/// then the body) when the stream is framed, raw chunks otherwise. Pure: bytes in, units out.
pub struct Framer {
    mode: FramerMode,
    buf: BytesMut,
    seen_hello: bool,
}

impl Framer {
    /// `framed`: try paxos-kv framing (peer links); otherwise every chunk is raw (HTTP links).
    pub fn new(framed: bool) -> Framer {
        Framer {
            mode: if framed {
                FramerMode::Header
            } else {
                FramerMode::Raw
            },
            buf: BytesMut::new(),
            seen_hello: false,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete unit, if the bytes pushed so far hold one.
    pub fn next_unit(&mut self) -> Option<Unit> {
        loop {
            match self.mode {
                FramerMode::Raw => {
                    if self.buf.is_empty() {
                        return None;
                    }
                    return Some(Unit {
                        bytes: self.buf.split().freeze(),
                        whole_frame: false,
                        hello: false,
                    });
                }
                FramerMode::Passthrough(left) => {
                    if self.buf.is_empty() {
                        return None;
                    }
                    let n = left.min(self.buf.len());
                    self.mode = if n == left {
                        FramerMode::Header
                    } else {
                        FramerMode::Passthrough(left - n)
                    };
                    return Some(Unit {
                        bytes: self.buf.split_to(n).freeze(),
                        whole_frame: false,
                        hello: false,
                    });
                }
                FramerMode::Header => {
                    if self.buf.len() < 4 {
                        return None;
                    }
                    let len =
                        u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]])
                            as usize;
                    if !self.seen_hello && len > PROXY_HELLO_MAX_BYTES {
                        self.mode = FramerMode::Raw;
                        continue;
                    }
                    let hello = !self.seen_hello;
                    if len > PROXY_FRAME_MAX_BYTES {
                        // Too big to hold: forward it as it comes, untouched.
                        self.seen_hello = true;
                        self.mode = FramerMode::Passthrough(len);
                        return Some(Unit {
                            bytes: self.buf.split_to(4).freeze(),
                            whole_frame: false,
                            hello,
                        });
                    }
                    if self.buf.len() < 4 + len {
                        return None;
                    }
                    self.seen_hello = true;
                    return Some(Unit {
                        bytes: self.buf.split_to(4 + len).freeze(),
                        whole_frame: true,
                        hello,
                    });
                }
            }
        }
    }
}

/// What happens to one unit: how many copies go out, and how much later than now.
///
/// Over a TCP stream the proxy cannot lose or repeat bytes at random without corrupting it, so:
/// * a whole paxos-kv frame is dropped or sent twice, exactly as a lossy, duplicating network
///   would do to a datagram (the store must tolerate both);
/// * a raw chunk (an HTTP request, or a frame too big to buffer) is never dropped or repeated.
///   A lost chunk stalls the stream for [`PROXY_RETRANSMIT_STALL_MS`], which is what packet
///   loss looks like to an application above TCP (the segment is retransmitted); duplication
///   does nothing to it, since TCP discards duplicate segments before the application sees them.
pub fn decide(shaping: Option<Behaviour>, unit: &Unit, rng: &mut ChaCha8Rng) -> (usize, u64) {
    let droppable = unit.whole_frame && !unit.hello;
    match shaping {
        None => (1, 0),
        Some(Behaviour::Delay {
            delay_ms,
            jitter_ms,
        }) => {
            let j = jitter_ms as i64;
            let d = delay_ms as i64 + if j > 0 { rng.gen_range(-j..=j) } else { 0 };
            (1, d.max(0) as u64)
        }
        Some(Behaviour::Loss { percent }) => {
            let lost = rng.gen_bool((percent.min(100) as f64) / 100.0);
            match (lost, droppable) {
                (false, _) => (1, 0),
                (true, true) => (0, 0),
                (true, false) => (1, PROXY_RETRANSMIT_STALL_MS),
            }
        }
        Some(Behaviour::Duplicate { percent }) => {
            let dup = rng.gen_bool((percent.min(100) as f64) / 100.0);
            (if dup && droppable { 2 } else { 1 }, 0)
        }
    }
}

/// Which stream a proxied link carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkKind {
    /// paxos-kv peer traffic: framed.
    Peer,
    /// Client requests a node forwards to another node's HTTP address: raw.
    Forward,
}

/// One directed link the proxy carries.
#[derive(Clone, Debug)]
pub struct ProxyLink {
    pub from: usize,
    pub to: usize,
    pub kind: LinkKind,
    /// Where the dialling node connects.
    pub listen: SocketAddr,
    /// Where the target node really listens.
    pub target: SocketAddr,
    /// The source address of the proxy's own connection to the target: the dialling node's IP,
    /// so that iptables rules between node addresses see the real link.
    pub source_ip: IpAddr,
}

struct LinkHandle {
    from: usize,
    to: usize,
    kind: LinkKind,
    /// Where the proxy really listens (the plan may say port 0).
    listen: SocketAddr,
    tx: watch::Sender<LinkState>,
}

/// What the proxy did to traffic, over the whole run, for the run log and tests.
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub units_delayed: AtomicU64,
    pub frames_dropped: AtomicU64,
    pub frames_duplicated: AtomicU64,
    /// Raw chunks held back as a lost TCP segment would be.
    pub chunks_stalled: AtomicU64,
}

impl ProxyStats {
    /// The counters by name, for results.json.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "units_delayed": self.units_delayed.load(Ordering::Relaxed),
            "frames_dropped": self.frames_dropped.load(Ordering::Relaxed),
            "frames_duplicated": self.frames_duplicated.load(Ordering::Relaxed),
            "chunks_stalled": self.chunks_stalled.load(Ordering::Relaxed),
        })
    }

    pub fn summary(&self) -> String {
        format!(
            "{} units delayed, {} frames dropped, {} frames duplicated, {} raw chunks stalled",
            self.units_delayed.load(Ordering::Relaxed),
            self.frames_dropped.load(Ordering::Relaxed),
            self.frames_duplicated.load(Ordering::Relaxed),
            self.chunks_stalled.load(Ordering::Relaxed)
        )
    }
}

pub struct ProxyNet {
    links: Vec<LinkHandle>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub stats: Arc<ProxyStats>,
}

impl ProxyNet {
    /// Starts one proxy per link; `seed` drives every decision the proxies make.
    pub async fn start(plan: &[ProxyLink], seed: u64) -> Result<ProxyNet> {
        let mut links = Vec::with_capacity(plan.len());
        let mut tasks = Vec::with_capacity(plan.len());
        let stats = Arc::new(ProxyStats::default());
        for (index, link) in plan.iter().enumerate() {
            assert_ne!(link.from, link.to, "a node has no link to itself");
            let listener = tokio::net::TcpListener::bind(link.listen)
                .await
                .with_context(|| {
                    format!(
                        "proxy for {:?} link n{}->n{}: binding {}",
                        link.kind,
                        link.from + 1,
                        link.to + 1,
                        link.listen
                    )
                })?;
            let listen = listener.local_addr().context("proxy listener address")?;
            let (tx, rx) = watch::channel(LinkState::default());
            let link_seed = seed ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            tasks.push(tokio::spawn(accept_loop(
                listener,
                link.clone(),
                rx,
                link_seed,
                stats.clone(),
            )));
            links.push(LinkHandle {
                from: link.from,
                to: link.to,
                kind: link.kind,
                listen,
                tx,
            });
        }
        Ok(ProxyNet {
            links,
            tasks,
            stats,
        })
    }

    /// Applies `f` to both directions of every pair, on every kind of link.
    fn set_pairs(&self, pairs: &BTreeSet<(usize, usize)>, f: impl Fn(&mut LinkState)) {
        for l in &self.links {
            if pairs.contains(&(l.from.min(l.to), l.from.max(l.to))) {
                l.tx.send_modify(&f);
            }
        }
    }

    pub fn cut(&self, pairs: &BTreeSet<(usize, usize)>) {
        self.set_pairs(pairs, |s| s.blocked = true);
    }

    pub fn shape(&self, pairs: &BTreeSet<(usize, usize)>, behaviour: Behaviour) {
        self.set_pairs(pairs, |s| s.shaping = Some(behaviour));
    }

    pub fn heal_partition(&self) {
        for l in &self.links {
            l.tx.send_modify(|s| {
                if s.blocked {
                    s.epoch += 1;
                }
                s.blocked = false;
            });
        }
    }

    pub fn heal_network(&self) {
        for l in &self.links {
            l.tx.send_modify(|s| s.shaping = None);
        }
    }

    /// Where the proxy for one directed link listens.
    pub fn listen_addr(&self, from: usize, to: usize, kind: LinkKind) -> Option<SocketAddr> {
        self.links
            .iter()
            .find(|l| l.from == from && l.to == to && l.kind == kind)
            .map(|l| l.listen)
    }

    /// Links still cut or shaped, as `n1->n2`, for tests and the log.
    pub fn faulty_links(&self) -> Vec<String> {
        self.links
            .iter()
            .filter(|l| {
                let s = *l.tx.borrow();
                s.blocked || s.shaping.is_some()
            })
            .map(|l| format!("n{}->n{}", l.from + 1, l.to + 1))
            .collect()
    }
}

impl Drop for ProxyNet {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn connect_from(source_ip: IpAddr, target: SocketAddr) -> Option<tokio::net::TcpStream> {
    let socket = match target {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .ok()?;
    if let Err(e) = socket.bind(SocketAddr::new(source_ip, 0)) {
        tracing::debug!("proxy: cannot bind {source_ip}: {e}; dialling from any address");
    }
    // As paxos-kv does on its own links: when kernel rules cut this connection (netns backend),
    // fail it after a second of unacknowledged data instead of retransmitting for minutes, so
    // that both ends redial promptly after the heal.
    let ms = PROXY_USER_TIMEOUT_MS as libc::c_int;
    // SAFETY: setsockopt on a socket we own, with a pointer to a live c_int of the right size.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&socket),
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            &ms as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!(
            "proxy: TCP_USER_TIMEOUT: {}",
            std::io::Error::last_os_error()
        );
    }
    match tokio::time::timeout(
        Duration::from_millis(PROXY_CONNECT_TIMEOUT_MS),
        socket.connect(target),
    )
    .await
    {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Some(s)
        }
        _ => None,
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    link: ProxyLink,
    rx: watch::Receiver<LinkState>,
    seed: u64,
    stats: Arc<ProxyStats>,
) {
    let connections = AtomicU64::new(0);
    // Bounded: the loop ends when the task is aborted at the end of the run.
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = inbound.set_nodelay(true);
        let rx = rx.clone();
        let link = link.clone();
        let conn = connections.fetch_add(1, Ordering::Relaxed);
        let conn_seed = seed ^ (conn + 1).wrapping_mul(0xd1b5_4a32_d192_ed03);
        let stats = stats.clone();
        tokio::spawn(async move {
            let start_epoch = rx.borrow().epoch;
            let blocked_at_start = rx.borrow().blocked;
            // While the link is cut, a new connection is accepted and then silent: the dialer
            // sees a timeout, as it would behind a real partition.
            let outbound = if blocked_at_start {
                None
            } else {
                match connect_from(link.source_ip, link.target).await {
                    Some(s) => Some(s),
                    // The node is down: refuse, as the node itself would.
                    None => return,
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
            let framed = link.kind == LinkKind::Peer;
            let up = pump(
                &mut in_r,
                &mut out_w,
                rx.clone(),
                start_epoch,
                framed,
                ChaCha8Rng::seed_from_u64(conn_seed),
                &stats,
            );
            // Replies flow back raw: paxos-kv's dialler only watches its read half for a close.
            let down = pump(
                &mut out_r,
                &mut in_w,
                rx,
                start_epoch,
                false,
                ChaCha8Rng::seed_from_u64(!conn_seed),
                &stats,
            );
            // Either direction ending closes both halves.
            tokio::select! { _ = up => {}, _ = down => {} }
            let _ = in_w.shutdown().await;
            let _ = out_w.shutdown().await;
        });
    }
}

/// Why a pump's reader stopped.
#[derive(PartialEq)]
enum ReadEnd {
    /// The sender closed: deliver what is delayed, then close.
    Eof,
    /// A heal followed a cut, or the writer failed: close now.
    Abort,
}

/// Copies one direction: cuts it into units, drops them while the link is cut, shapes them as
/// the link's network fault says, and writes each at its delivery time (never earlier than the
/// one before, so a stream is never reordered), closing on the heal that follows a cut.
async fn pump<R, W>(
    from: &mut R,
    to: &mut W,
    mut rx: watch::Receiver<LinkState>,
    start_epoch: u64,
    framed: bool,
    mut rng: ChaCha8Rng,
    stats: &ProxyStats,
) where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    type Queued = (Instant, Bytes, tokio::sync::OwnedSemaphorePermit);
    let (tx, mut queue) = mpsc::channel::<Queued>(PROXY_QUEUE_UNITS);
    let budget = Arc::new(tokio::sync::Semaphore::new(PROXY_QUEUE_BYTES));
    let link_at_delivery = rx.clone();
    let writer = async move {
        while let Some((at, bytes, permit)) = queue.recv().await {
            tokio::time::sleep_until(at).await;
            // A unit still held back (delayed) when its link is cut is lost with the link, as
            // a delayed packet is when a partition starts; the heal then closes this stream,
            // which has a hole in it.
            if link_at_delivery.borrow().blocked {
                stats.frames_dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if to.write_all(&bytes).await.is_err() {
                return;
            }
            drop(permit);
        }
    };
    let reader = async move {
        let mut framer = Framer::new(framed);
        let mut buf = vec![0u8; PROXY_READ_CHUNK_BYTES];
        let mut last_at = Instant::now();
        loop {
            // Only cancel-safe futures in the select: a read either completed or read nothing.
            tokio::select! {
                r = from.read(&mut buf) => {
                    let n = match r { Ok(0) | Err(_) => return ReadEnd::Eof, Ok(n) => n };
                    framer.push(&buf[..n]);
                    let state = *rx.borrow();
                    if state.epoch != start_epoch {
                        return ReadEnd::Abort;
                    }
                    while let Some(unit) = framer.next_unit() {
                        if state.blocked {
                            continue;
                        }
                        let (copies, delay_ms) = decide(state.shaping, &unit, &mut rng);
                        let counter = match (copies, &state.shaping) {
                            (0, _) => Some(&stats.frames_dropped),
                            (2, _) => Some(&stats.frames_duplicated),
                            (_, Some(Behaviour::Loss { .. })) if delay_ms > 0 => Some(&stats.chunks_stalled),
                            (_, Some(Behaviour::Delay { .. })) => Some(&stats.units_delayed),
                            _ => None,
                        };
                        if let Some(c) = counter {
                            c.fetch_add(1, Ordering::Relaxed);
                        }
                        let at = (Instant::now() + Duration::from_millis(delay_ms)).max(last_at);
                        last_at = at;
                        for _ in 0..copies {
                            let cost = unit.bytes.len().clamp(1, PROXY_QUEUE_BYTES) as u32;
                            let Ok(permit) = budget.clone().acquire_many_owned(cost).await else {
                                return ReadEnd::Abort;
                            };
                            if tx.send((at, unit.bytes.clone(), permit)).await.is_err() {
                                return ReadEnd::Abort;
                            }
                        }
                    }
                }
                c = rx.changed() => {
                    if c.is_err() || rx.borrow().epoch != start_epoch {
                        return ReadEnd::Abort;
                    }
                }
            }
        }
    };
    tokio::pin!(writer);
    let end = tokio::select! {
        e = reader => e,
        _ = &mut writer => return,
    };
    if end == ReadEnd::Eof {
        let _ = tokio::time::timeout(Duration::from_millis(PROXY_DRAIN_MS), writer).await;
    }
}

/// Checks that this kernel can do what [`NetnsNet::netem`] does, by doing it once on a link no
/// node uses and undoing it. Inside our own namespace only.
pub fn probe_netem() -> Result<()> {
    let r = (|| {
        run_cmd(
            "tc",
            &[
                "qdisc", "add", "dev", "lo", "root", "handle", "1:", "prio", "bands", "4",
            ],
        )?;
        run_cmd(
            "tc",
            &[
                "qdisc",
                "add",
                "dev",
                "lo",
                "parent",
                "1:4",
                "handle",
                "40:",
                "netem",
                "delay",
                "1ms",
                "1ms",
                "duplicate",
                "1%",
            ],
        )?;
        let filter =
            netem_filter_args(Ipv4Addr::new(127, 0, 0, 250), Ipv4Addr::new(127, 0, 0, 251));
        let args: Vec<&str> = filter.iter().map(String::as_str).collect();
        run_cmd("tc", &args)
    })();
    let _ = run_cmd("tc", &["qdisc", "del", "dev", "lo", "root"]);
    r
}

fn netem_filter_args(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<String> {
    [
        "filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "1", "u32",
        "match", "ip", "src",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        format!("{src}/32"),
        "match".into(),
        "ip".into(),
        "dst".into(),
    ])
    .chain([format!("{dst}/32"), "flowid".into(), "1:4".into()])
    .collect()
}

/// iptables rules and tc qdiscs inside our own namespace.
pub struct NetnsNet {
    ips: Vec<Ipv4Addr>,
    /// Whether a netem qdisc is installed on `lo` now.
    netem_installed: Mutex<bool>,
}

impl NetnsNet {
    pub fn new(ips: Vec<Ipv4Addr>) -> NetnsNet {
        NetnsNet {
            ips,
            netem_installed: Mutex::new(false),
        }
    }

    fn directed(&self, pairs: &BTreeSet<(usize, usize)>) -> Vec<(String, String)> {
        pairs
            .iter()
            .flat_map(|&(a, b)| [(a, b), (b, a)])
            .map(|(s, d)| (self.ips[s].to_string(), self.ips[d].to_string()))
            .collect()
    }

    pub fn cut(&self, pairs: &BTreeSet<(usize, usize)>) -> Result<()> {
        for (src, dst) in self.directed(pairs) {
            run_cmd(
                "iptables",
                &["-A", CUT_CHAIN, "-s", &src, "-d", &dst, "-j", "DROP"],
            )?;
        }
        Ok(())
    }

    pub fn heal_partition(&self) -> Result<()> {
        run_cmd("iptables", &["-F", CUT_CHAIN])
    }

    /// Drops each packet between the pairs with probability `percent` / 100 (the kernel's own
    /// random choice, so not replayable from the seed). TCP retransmits what is lost.
    pub fn loss(&self, pairs: &BTreeSet<(usize, usize)>, percent: u32) -> Result<()> {
        let p = format!("{:.4}", percent.min(100) as f64 / 100.0);
        for (src, dst) in self.directed(pairs) {
            run_cmd(
                "iptables",
                &[
                    "-A",
                    LOSS_CHAIN,
                    "-s",
                    &src,
                    "-d",
                    &dst,
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    &p,
                    "-j",
                    "DROP",
                ],
            )?;
        }
        Ok(())
    }

    /// Delay or duplication by netem, on the packets between the pairs only: a prio qdisc on
    /// `lo` whose fourth band (unused by the default priomap) holds netem, and u32 filters that
    /// send the chosen links' packets there.
    pub fn netem(&self, pairs: &BTreeSet<(usize, usize)>, behaviour: Behaviour) -> Result<()> {
        let netem: Vec<String> = match behaviour {
            Behaviour::Delay {
                delay_ms,
                jitter_ms,
            } => vec![
                "delay".into(),
                format!("{delay_ms}ms"),
                format!("{jitter_ms}ms"),
            ],
            Behaviour::Duplicate { percent } => vec!["duplicate".into(), format!("{percent}%")],
            Behaviour::Loss { percent } => vec!["loss".into(), format!("{percent}%")],
        };
        *self
            .netem_installed
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = true;
        run_cmd(
            "tc",
            &[
                "qdisc", "add", "dev", "lo", "root", "handle", "1:", "prio", "bands", "4",
            ],
        )?;
        let mut args: Vec<String> = [
            "qdisc", "add", "dev", "lo", "parent", "1:4", "handle", "40:", "netem",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(netem);
        run_cmd("tc", &args.iter().map(String::as_str).collect::<Vec<_>>())?;
        for &(a, b) in pairs {
            for (s, d) in [(a, b), (b, a)] {
                let f = netem_filter_args(self.ips[s], self.ips[d]);
                run_cmd("tc", &f.iter().map(String::as_str).collect::<Vec<_>>())?;
            }
        }
        Ok(())
    }

    pub fn heal_network(&self) -> Result<()> {
        let flushed = run_cmd("iptables", &["-F", LOSS_CHAIN]);
        let mut installed = self
            .netem_installed
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if *installed {
            run_cmd("tc", &["qdisc", "del", "dev", "lo", "root"])?;
            *installed = false;
        }
        flushed
    }

    /// The rules now in force in both chains, for tests and the log.
    pub fn rules() -> Result<String> {
        let mut s = String::new();
        for chain in [CUT_CHAIN, LOSS_CHAIN] {
            let out = Command::new("iptables").args(["-S", chain]).output()?;
            s.push_str(&String::from_utf8_lossy(&out.stdout));
        }
        Ok(s)
    }
}

/// The network in use: kernel rules in our namespace, a userspace proxy, or both (netns without
/// netem, for a run with network faults).
pub struct Net {
    pub kernel: Option<NetnsNet>,
    pub proxy: Option<ProxyNet>,
    /// Why netem cannot be used, if it cannot (None: it can, or the backend is the proxy).
    pub netem_unavailable: Option<String>,
}

impl Net {
    pub fn name(&self) -> &'static str {
        if self.kernel.is_some() {
            "netns"
        } else {
            "proxy"
        }
    }

    /// One sentence on how each network behaviour is applied in this run, for the run log and
    /// the report.
    pub fn network_note(&self) -> String {
        match (&self.kernel, &self.netem_unavailable, &self.proxy) {
            (Some(_), None, _) => {
                "network faults: loss by iptables statistic, delay and duplication by netem on lo (kernel)".into()
            }
            (Some(_), Some(why), Some(_)) => format!(
                "network faults: loss by iptables statistic (kernel); netem unavailable ({why}): delay and duplication applied by the userspace proxy, which also carries peer links and forwarded requests"
            ),
            (Some(_), Some(why), None) => format!(
                "network faults: loss by iptables statistic (kernel); netem unavailable ({why}): delay and duplication skipped"
            ),
            (None, _, _) => {
                "network faults: by the userspace proxy, per paxos-kv frame on peer links (lost frames dropped, duplicated frames sent twice); forwarded HTTP requests stall on loss and ignore duplication, as over TCP".into()
            }
        }
    }

    pub fn cut(&self, pairs: &BTreeSet<(usize, usize)>) -> Result<()> {
        match (&self.kernel, &self.proxy) {
            // The proxy dials from the node's own address, so the kernel rules cut it too.
            (Some(k), _) => k.cut(pairs),
            (None, Some(p)) => {
                p.cut(pairs);
                Ok(())
            }
            (None, None) => bail!("no network backend to cut links with"),
        }
    }

    pub fn heal_partition(&self) -> Result<()> {
        if let Some(p) = &self.proxy {
            p.heal_partition();
        }
        match &self.kernel {
            Some(k) => k.heal_partition(),
            None => Ok(()),
        }
    }

    /// Applies a network fault to the pairs. Returns which mechanism applied it (`netem`,
    /// `iptables`, `proxy`, or `skipped`) and a sentence saying how, for the log and history.
    pub fn start_network(
        &self,
        pairs: &BTreeSet<(usize, usize)>,
        behaviour: Behaviour,
    ) -> Result<(&'static str, String)> {
        let proxy_note = "applied by the userspace proxy";
        match &self.kernel {
            None => {
                let p = self.proxy.as_ref().context("no network backend")?;
                p.shape(pairs, behaviour);
                Ok(("proxy", proxy_note.into()))
            }
            Some(k) => {
                if let Behaviour::Loss { percent } = behaviour {
                    k.loss(pairs, percent)?;
                    return Ok((
                        "iptables",
                        "applied by iptables statistic (kernel; TCP retransmits lost packets)"
                            .into(),
                    ));
                }
                let netem_err = match &self.netem_unavailable {
                    None => match k.netem(pairs, behaviour) {
                        Ok(()) => return Ok(("netem", "applied by netem on lo (kernel)".into())),
                        Err(e) => {
                            // Leave nothing half-installed before falling back.
                            let _ = k.heal_network();
                            format!("{e:#}")
                        }
                    },
                    Some(why) => why.clone(),
                };
                match &self.proxy {
                    Some(p) => {
                        p.shape(pairs, behaviour);
                        Ok((
                            "proxy",
                            format!("netem unavailable ({netem_err}): {proxy_note}"),
                        ))
                    }
                    None => Ok((
                        "skipped",
                        format!(
                            "skipped: netem unavailable ({netem_err}) and peer links do not pass through the proxy"
                        ),
                    )),
                }
            }
        }
    }

    pub fn heal_network(&self) -> Result<()> {
        if let Some(p) = &self.proxy {
            p.heal_network();
        }
        match &self.kernel {
            Some(k) => k.heal_network(),
            None => Ok(()),
        }
    }

    /// Undoes every fault, partitions and network faults both.
    pub fn heal(&self) -> Result<()> {
        let a = self.heal_partition();
        let b = self.heal_network();
        a.and(b)
    }
}

pub type SharedNet = Arc<Net>;

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::{TcpListener, TcpStream};

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut f = (body.len() as u32).to_le_bytes().to_vec();
        f.extend_from_slice(body);
        f
    }

    fn units(framer: &mut Framer) -> Vec<Unit> {
        std::iter::from_fn(|| framer.next_unit())
            .take(1000)
            .collect()
    }

    #[test]
    fn framer_cuts_whole_frames_across_reads_and_marks_the_hello() {
        let mut bytes = frame(b"hello");
        bytes.extend(frame(b"one"));
        bytes.extend(frame(b""));
        bytes.extend(frame(b"three"));
        let mut f = Framer::new(true);
        let mut got = Vec::new();
        // One byte at a time: every split point inside a header or a body.
        for b in &bytes {
            f.push(std::slice::from_ref(b));
            got.extend(units(&mut f));
        }
        let bodies: Vec<&[u8]> = got.iter().map(|u| &u.bytes[4..]).collect();
        assert_eq!(bodies, vec![&b"hello"[..], b"one", b"", b"three"]);
        assert!(got.iter().all(|u| u.whole_frame));
        assert_eq!(
            got.iter().map(|u| u.hello).collect::<Vec<_>>(),
            vec![true, false, false, false]
        );
        let rejoined: Vec<u8> = got.iter().flat_map(|u| u.bytes.to_vec()).collect();
        assert_eq!(rejoined, bytes);
    }

    #[test]
    fn framer_treats_http_as_raw_and_passes_huge_frames_through() {
        let mut f = Framer::new(true);
        f.push(b"GET /kv/x HTTP/1.1\r\n\r\n");
        let got = units(&mut f);
        assert_eq!(got.len(), 1);
        assert!(!got[0].whole_frame && !got[0].hello);
        assert_eq!(&got[0].bytes[..], b"GET /kv/x HTTP/1.1\r\n\r\n");

        let mut f = Framer::new(true);
        f.push(&frame(b"hi"));
        let big = PROXY_FRAME_MAX_BYTES + 10;
        f.push(&(big as u32).to_le_bytes());
        f.push(&vec![7u8; 1000]);
        let got = units(&mut f);
        assert_eq!(
            got.len(),
            3,
            "hello, the big frame's header, its first bytes"
        );
        assert!(got[0].whole_frame && got[0].hello);
        assert!(got[1..].iter().all(|u| !u.whole_frame));
        f.push(&vec![7u8; big - 1000]);
        f.push(&frame(b"after"));
        let got = units(&mut f);
        let passed: usize = got[..got.len() - 1].iter().map(|u| u.bytes.len()).sum();
        assert_eq!(passed, big - 1000);
        let last = got.last().unwrap();
        assert!(last.whole_frame && !last.hello);
        assert_eq!(&last.bytes[4..], b"after");

        let mut f = Framer::new(false);
        f.push(&frame(b"x"));
        assert!(
            !units(&mut f)[0].whole_frame,
            "forward links are never framed"
        );
    }

    #[test]
    fn decisions_follow_the_behaviour() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let frame_unit = Unit {
            bytes: Bytes::from_static(b"\x01\0\0\0x"),
            whole_frame: true,
            hello: false,
        };
        let hello = Unit {
            hello: true,
            ..frame_unit.clone()
        };
        let raw = Unit {
            whole_frame: false,
            ..frame_unit.clone()
        };
        let all_lost = Some(Behaviour::Loss { percent: 100 });
        let all_dup = Some(Behaviour::Duplicate { percent: 100 });
        assert_eq!(decide(all_lost, &frame_unit, &mut rng), (0, 0));
        // Never dropped, the hello is held back as a retransmitted segment would be.
        assert_eq!(
            decide(all_lost, &hello, &mut rng),
            (1, PROXY_RETRANSMIT_STALL_MS)
        );
        assert_eq!(
            decide(all_lost, &raw, &mut rng),
            (1, PROXY_RETRANSMIT_STALL_MS)
        );
        assert_eq!(decide(all_dup, &frame_unit, &mut rng), (2, 0));
        assert_eq!(decide(all_dup, &hello, &mut rng), (1, 0));
        assert_eq!(decide(all_dup, &raw, &mut rng), (1, 0));
        assert_eq!(decide(None, &frame_unit, &mut rng), (1, 0));
        let delay = Some(Behaviour::Delay {
            delay_ms: 100,
            jitter_ms: 20,
        });
        let delays: Vec<u64> = (0..500)
            .map(|_| decide(delay, &frame_unit, &mut rng).1)
            .collect();
        assert!(delays.iter().all(|d| (80..=120).contains(d)), "{delays:?}");
        assert!(delays.iter().any(|&d| d < 95) && delays.iter().any(|&d| d > 105));
        // Partial loss: some frames go, some do not, and the seed decides which.
        let half = Some(Behaviour::Loss { percent: 50 });
        let run = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..200)
                .map(|_| decide(half, &frame_unit, &mut rng).0)
                .collect::<Vec<_>>()
        };
        let a = run(9);
        assert_eq!(a, run(9), "same seed, same decisions");
        let lost = a.iter().filter(|&&c| c == 0).count();
        assert!((50..150).contains(&lost), "{lost} of 200 lost at 50%");
    }

    /// A proxy for two links, 0 -> 1 and 2 -> 1, both to one receiver; returns the proxy, the
    /// receiver's listener and the two proxy addresses.
    async fn two_links() -> (ProxyNet, TcpListener, SocketAddr, SocketAddr) {
        let receiver = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = receiver.local_addr().unwrap();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let link = |from| ProxyLink {
            from,
            to: 1,
            kind: LinkKind::Peer,
            listen: any,
            target,
            source_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        let proxy = ProxyNet::start(&[link(0), link(2)], 5).await.unwrap();
        let a = proxy.listen_addr(0, 1, LinkKind::Peer).unwrap();
        let b = proxy.listen_addr(2, 1, LinkKind::Peer).unwrap();
        (proxy, receiver, a, b)
    }

    async fn read_frame(s: &mut TcpStream) -> Vec<u8> {
        let mut len = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut len))
            .await
            .expect("a frame within 10 s")
            .unwrap();
        let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
        s.read_exact(&mut body).await.unwrap();
        body
    }

    #[tokio::test]
    async fn a_delayed_link_delivers_after_an_undelayed_one() {
        let (proxy, receiver, a, b) = two_links().await;
        let delay_ms = 300;
        proxy.shape(
            &[(0, 1)].into_iter().collect(),
            Behaviour::Delay {
                delay_ms,
                jitter_ms: 0,
            },
        );
        let mut slow = TcpStream::connect(a).await.unwrap();
        let (mut slow_in, _) = receiver.accept().await.unwrap();
        let mut fast = TcpStream::connect(b).await.unwrap();
        let (mut fast_in, _) = receiver.accept().await.unwrap();
        let sent = Instant::now();
        slow.write_all(&frame(b"slow")).await.unwrap();
        fast.write_all(&frame(b"fast")).await.unwrap();
        // Whichever arrives first: the undelayed frame must, and the delayed one not before
        // its delay has passed.
        let first = tokio::select! {
            f = read_frame(&mut slow_in) => f,
            f = read_frame(&mut fast_in) => f,
        };
        assert_eq!(first, b"fast");
        assert_eq!(read_frame(&mut slow_in).await, b"slow");
        assert!(sent.elapsed() >= Duration::from_millis(delay_ms));
        // Healed, it delivers at once again: a later frame overtakes nothing and arrives.
        proxy.heal_network();
        assert!(proxy.faulty_links().is_empty());
        slow.write_all(&frame(b"again")).await.unwrap();
        assert_eq!(read_frame(&mut slow_in).await, b"again");
    }

    /// A frame held back by a delay when its link is cut is never delivered: the partition
    /// takes it, as it takes a packet still in flight; the heal closes the stream.
    #[tokio::test]
    async fn a_cut_loses_frames_still_held_back_by_a_delay() {
        let (proxy, receiver, a, _) = two_links().await;
        let link: BTreeSet<(usize, usize)> = [(0, 1)].into_iter().collect();
        let mut out = TcpStream::connect(a).await.unwrap();
        let (mut inn, _) = receiver.accept().await.unwrap();
        out.write_all(&frame(b"hello")).await.unwrap();
        assert_eq!(read_frame(&mut inn).await, b"hello");
        proxy.shape(
            &link,
            Behaviour::Delay {
                delay_ms: 600,
                jitter_ms: 0,
            },
        );
        out.write_all(&frame(b"in flight")).await.unwrap();
        // Cut once the proxy has taken the frame in and scheduled it (bounded wait).
        for _ in 0..500 {
            if proxy.stats.units_delayed.load(Ordering::Relaxed) >= 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(proxy.stats.units_delayed.load(Ordering::Relaxed), 1);
        proxy.cut(&link);
        let mut byte = [0u8; 1];
        let got = tokio::time::timeout(Duration::from_millis(1200), inn.read(&mut byte)).await;
        assert!(got.is_err(), "something arrived across the cut: {got:?}");
        proxy.heal_partition();
        proxy.heal_network();
        // The stream lost a frame, so the heal closes it rather than resume with a hole.
        let end = tokio::time::timeout(Duration::from_secs(10), inn.read(&mut byte))
            .await
            .expect("the stream ends within 10 s");
        assert!(matches!(end, Ok(0) | Err(_)), "{end:?}");
    }

    #[tokio::test]
    async fn full_loss_delivers_no_frame_and_duplication_delivers_twice() {
        let (proxy, receiver, a, _) = two_links().await;
        let link: BTreeSet<(usize, usize)> = [(0, 1)].into_iter().collect();
        let mut out = TcpStream::connect(a).await.unwrap();
        let (mut inn, _) = receiver.accept().await.unwrap();
        proxy.shape(&link, Behaviour::Loss { percent: 100 });
        out.write_all(&frame(b"hello")).await.unwrap();
        for i in 0..50u32 {
            out.write_all(&frame(&i.to_le_bytes())).await.unwrap();
        }
        // The hello survives (it is never dropped); wait for it so the losses were decided
        // under the lossy state before the heal.
        assert_eq!(read_frame(&mut inn).await, b"hello");
        // Heal only once the proxy has decided about all 50 (bounded wait).
        for _ in 0..500 {
            if proxy.stats.frames_dropped.load(Ordering::Relaxed) >= 50 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(proxy.stats.frames_dropped.load(Ordering::Relaxed), 50);
        proxy.heal_network();
        out.write_all(&frame(b"marker")).await.unwrap();
        // The stream is in order, so anything not lost would arrive before the marker.
        assert_eq!(read_frame(&mut inn).await, b"marker");

        proxy.shape(&link, Behaviour::Duplicate { percent: 100 });
        out.write_all(&frame(b"twice")).await.unwrap();
        assert_eq!(read_frame(&mut inn).await, b"twice");
        assert_eq!(read_frame(&mut inn).await, b"twice");
        assert_eq!(proxy.stats.frames_duplicated.load(Ordering::Relaxed), 1);
        proxy.heal_network();
        out.write_all(&frame(b"once")).await.unwrap();
        assert_eq!(read_frame(&mut inn).await, b"once");
    }

    #[tokio::test]
    async fn partition_and_network_heal_separately() {
        let (proxy, _receiver, _, _) = two_links().await;
        let both: BTreeSet<(usize, usize)> = [(0, 1), (1, 2)].into_iter().collect();
        proxy.cut(&[(0, 1)].into_iter().collect());
        proxy.shape(&both, Behaviour::Loss { percent: 10 });
        assert_eq!(proxy.faulty_links(), vec!["n1->n2", "n3->n2"]);
        proxy.heal_network();
        assert_eq!(proxy.faulty_links(), vec!["n1->n2"], "the cut stays");
        proxy.shape(&both, Behaviour::Loss { percent: 10 });
        proxy.heal_partition();
        assert_eq!(
            proxy.faulty_links(),
            vec!["n1->n2", "n3->n2"],
            "the loss stays"
        );
        proxy.heal_network();
        assert!(proxy.faulty_links().is_empty());
    }
}
