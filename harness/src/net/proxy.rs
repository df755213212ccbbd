//! The userspace backend: a TCP proxy on every directed link the harness owns, which cuts
//! (blackholes), delays, drops and duplicates per frame.
//!
//! A store that gives each node its own list of peer addresses (paxos-kv) gets one listener per
//! directed link, so the listener says who dialled. A store whose nodes must all dial one
//! address per peer (etcd: `--initial-cluster` and the advertised peer URLs are the same for
//! every member) gets one listener in front of each node, shared by every dialler; the proxy
//! then tells the dialler apart by its source address or by a header of the connection's first
//! HTTP request ([`Dialer`]), and applies that directed link's cut and shaping from there on.

use super::*;

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
/// Second copies of HTTP requests on their way at once, over the whole proxy; more are not sent.
pub const PROXY_REDELIVERIES_MAX: u64 = 64;
/// How long the proxy waits for the answer to a second copy of a request before closing.
pub const PROXY_REDELIVERY_TIMEOUT_MS: u64 = 3000;

/// Which stream a proxied link carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkKind {
    /// paxos-kv peer traffic: framed.
    Peer,
    /// Client requests a node forwards to another node's HTTP address: raw.
    Forward,
}

/// How a proxy listener knows which node dialled it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dialer {
    /// The listener serves one directed link (the dialler's own peer list names it): whoever
    /// connects is the link's `from`.
    Link,
    /// One listener per destination, shared by every dialler, which dials from its own node
    /// address (the link's `source_ip`).
    SourceIp,
    /// One listener per destination, shared by every dialler; the first HTTP request on each
    /// connection carries this header listing the dialler's own advertised peer URLs, which are
    /// the addresses of the shared listeners in front of it (etcd's raft transport sends
    /// `X-PeerURLs` on every stream, pipeline and snapshot request).
    HttpHeader(String),
}

/// How long the proxy waits for the first request's headers on a shared listener before it
/// treats the connection as unidentified.
pub const PROXY_IDENTIFY_TIMEOUT_MS: u64 = 2000;
/// At most this many bytes of a connection are read to find the first request's headers.
pub const PROXY_IDENTIFY_MAX_BYTES: usize = 16 << 10;

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
    /// How the listener knows the dialler. Links with a shared dialler kind and the same `to`
    /// and `kind` share one listener (the first one's `listen`).
    pub dialer: Dialer,
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
    /// Connections to a shared listener whose dialler could not be told (no identifying header:
    /// etcd's `/raft/probing` and `/version` requests). They pass untouched by faults.
    pub connections_unidentified: AtomicU64,
    /// Whole HTTP requests between nodes lost.
    pub requests_dropped: AtomicU64,
    /// Whole HTTP requests between nodes delivered a second time (`POST /shard/msg`).
    pub requests_redelivered: AtomicU64,
    /// Second copies of requests on their way now (bounded by [`PROXY_REDELIVERIES_MAX`]).
    redeliveries_in_flight: AtomicU64,
}

impl ProxyStats {
    /// The counters by name, for results.json.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "units_delayed": self.units_delayed.load(Ordering::Relaxed),
            "frames_dropped": self.frames_dropped.load(Ordering::Relaxed),
            "frames_duplicated": self.frames_duplicated.load(Ordering::Relaxed),
            "chunks_stalled": self.chunks_stalled.load(Ordering::Relaxed),
            "connections_unidentified": self.connections_unidentified.load(Ordering::Relaxed),
            "requests_dropped": self.requests_dropped.load(Ordering::Relaxed),
            "requests_redelivered": self.requests_redelivered.load(Ordering::Relaxed),
        })
    }

    pub fn summary(&self) -> String {
        format!(
            "{} units delayed, {} frames dropped, {} frames duplicated, {} HTTP requests dropped, {} HTTP requests redelivered, {} raw chunks stalled, {} connections unidentified (passed untouched)",
            self.units_delayed.load(Ordering::Relaxed),
            self.frames_dropped.load(Ordering::Relaxed),
            self.frames_duplicated.load(Ordering::Relaxed),
            self.requests_dropped.load(Ordering::Relaxed),
            self.requests_redelivered.load(Ordering::Relaxed),
            self.chunks_stalled.load(Ordering::Relaxed),
            self.connections_unidentified.load(Ordering::Relaxed)
        )
    }
}

pub struct ProxyNet {
    links: Vec<LinkHandle>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub stats: Arc<ProxyStats>,
}

impl ProxyNet {
    /// Starts one proxy per link (one per destination for links with a shared [`Dialer`]);
    /// `seed` drives every decision the proxies make.
    pub async fn start(plan: &[ProxyLink], seed: u64) -> Result<ProxyNet> {
        let mut links = Vec::with_capacity(plan.len());
        let mut tasks = Vec::with_capacity(plan.len());
        let stats = Arc::new(ProxyStats::default());
        // Shared listeners: (to, kind) -> the indices of their links in `plan`.
        let mut groups: Vec<((usize, LinkKind), Vec<usize>)> = Vec::new();
        let mut receivers = Vec::with_capacity(plan.len());
        for (index, link) in plan.iter().enumerate() {
            assert_ne!(link.from, link.to, "a node has no link to itself");
            let (tx, rx) = watch::channel(LinkState::default());
            receivers.push(rx);
            links.push(LinkHandle {
                from: link.from,
                to: link.to,
                kind: link.kind,
                listen: link.listen,
                tx,
            });
            if link.dialer != Dialer::Link {
                let key = (link.to, link.kind);
                match groups.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, members)) => members.push(index),
                    None => groups.push((key, vec![index])),
                }
            }
        }
        if plan
            .iter()
            .any(|l| l.dialer == Dialer::SourceIp && l.source_ip.is_loopback())
        {
            let ips: BTreeSet<IpAddr> = plan.iter().map(|l| l.source_ip).collect();
            let nodes: BTreeSet<usize> = plan.iter().map(|l| l.from).collect();
            if ips.len() < nodes.len() {
                bail!("the proxy tells diallers apart by source address, but nodes share addresses ({ips:?})");
            }
        }
        let link_seed =
            |index: usize| seed ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let bind = |link: &ProxyLink| {
            let link = link.clone();
            async move {
                tokio::net::TcpListener::bind(link.listen)
                    .await
                    .with_context(|| {
                        format!(
                            "proxy for {:?} link n{}->n{}: binding {}",
                            link.kind,
                            link.from + 1,
                            link.to + 1,
                            link.listen
                        )
                    })
            }
        };
        for (index, link) in plan.iter().enumerate() {
            if link.dialer != Dialer::Link {
                continue;
            }
            let listener = bind(link).await?;
            links[index].listen = listener.local_addr().context("proxy listener address")?;
            tasks.push(tokio::spawn(accept_loop(
                listener,
                link.clone(),
                receivers[index].clone(),
                link_seed(index),
                stats.clone(),
            )));
        }
        let mut shared = Vec::with_capacity(groups.len());
        for (_, members) in &groups {
            let listener = bind(&plan[members[0]]).await?;
            let listen = listener.local_addr().context("proxy listener address")?;
            for &m in members {
                links[m].listen = listen;
            }
            shared.push((listener, members.clone()));
        }
        // Who is who on shared listeners: a dialler's advertised address is the address of the
        // shared listener in front of it.
        let advertised: Arc<Vec<(SocketAddr, usize)>> = Arc::new(
            links
                .iter()
                .enumerate()
                .filter(|(i, l)| plan[*i].dialer != Dialer::Link && l.kind == LinkKind::Peer)
                .map(|(_, l)| (l.listen, l.to))
                .collect(),
        );
        for (listener, members) in shared {
            let group = members
                .iter()
                .map(|&m| SharedMember {
                    link: plan[m].clone(),
                    rx: receivers[m].clone(),
                    seed: link_seed(m),
                })
                .collect();
            tasks.push(tokio::spawn(shared_accept_loop(
                listener,
                group,
                advertised.clone(),
                stats.clone(),
            )));
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
        let conn = connections.fetch_add(1, Ordering::Relaxed);
        let conn_seed = seed ^ (conn + 1).wrapping_mul(0xd1b5_4a32_d192_ed03);
        tokio::spawn(serve_connection(
            inbound,
            Bytes::new(),
            link.clone(),
            rx.clone(),
            conn_seed,
            stats.clone(),
        ));
    }
}

/// One directed link behind a shared listener.
struct SharedMember {
    link: ProxyLink,
    rx: watch::Receiver<LinkState>,
    seed: u64,
}

/// A listener in front of one node, shared by every dialler: each connection is matched to its
/// directed link by the dialler's source address or first request header, then served as that
/// link's own listener would. A connection nobody can be matched to passes untouched.
async fn shared_accept_loop(
    listener: tokio::net::TcpListener,
    group: Vec<SharedMember>,
    advertised: Arc<Vec<(SocketAddr, usize)>>,
    stats: Arc<ProxyStats>,
) {
    let group = Arc::new(group);
    let connections = Arc::new(AtomicU64::new(0));
    // Bounded: the loop ends when the task is aborted at the end of the run.
    loop {
        let Ok((mut inbound, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let group = group.clone();
        let advertised = advertised.clone();
        let stats = stats.clone();
        let connections = connections.clone();
        tokio::spawn(async move {
            let Some(first) = group.first() else { return };
            let (from, prefix) = match &first.link.dialer {
                Dialer::Link => return,
                // A node dialling its own client port through the listener in front of it
                // (sharded paxos-kv messages its own group by the configuration's addresses):
                // no link to cut, so it passes untouched, and is not unidentified.
                Dialer::SourceIp if peer.ip() == first.link.target.ip() => {
                    let link = ProxyLink {
                        source_ip: peer.ip(),
                        ..first.link.clone()
                    };
                    let (_tx, rx) = watch::channel(LinkState::default());
                    let conn = connections.fetch_add(1, Ordering::Relaxed);
                    serve_connection(inbound, Bytes::new(), link, rx, conn, stats).await;
                    return;
                }
                Dialer::SourceIp => (
                    group
                        .iter()
                        .find(|m| m.link.source_ip == peer.ip())
                        .map(|m| m.link.from),
                    Bytes::new(),
                ),
                Dialer::HttpHeader(name) => {
                    let head = read_head(&mut inbound).await;
                    let from = header_value(&head, name).and_then(|v| dialler_of(&v, &advertised));
                    (from, Bytes::from(head))
                }
            };
            let conn = connections.fetch_add(1, Ordering::Relaxed);
            match group.iter().find(|m| Some(m.link.from) == from) {
                Some(m) => {
                    let conn_seed = m.seed ^ (conn + 1).wrapping_mul(0xd1b5_4a32_d192_ed03);
                    serve_connection(
                        inbound,
                        prefix,
                        m.link.clone(),
                        m.rx.clone(),
                        conn_seed,
                        stats,
                    )
                    .await
                }
                None => {
                    stats
                        .connections_unidentified
                        .fetch_add(1, Ordering::Relaxed);
                    let line = prefix.split(|b| *b == b'\r').next().unwrap_or_default();
                    tracing::debug!(
                        "proxy to n{}: dialler {peer} unidentified, passing untouched: {:?}",
                        first.link.to + 1,
                        String::from_utf8_lossy(line)
                    );
                    // From the harness's own address, which no partition rule names.
                    let link = ProxyLink {
                        source_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                        ..first.link.clone()
                    };
                    let (_tx, rx) = watch::channel(LinkState::default());
                    serve_connection(inbound, prefix, link, rx, conn, stats).await
                }
            }
        });
    }
}

/// Reads a connection's first bytes up to the end of its first request's headers (bounded in
/// bytes and time): whatever arrived, to be forwarded first.
async fn read_head(inbound: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_millis(PROXY_IDENTIFY_TIMEOUT_MS);
    while head.len() < PROXY_IDENTIFY_MAX_BYTES && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, inbound.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    head
}

/// The value of header `name` (case-insensitive) in an HTTP request head, if present.
pub fn header_value(head: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(head);
    let headers = text.split("\r\n\r\n").next()?;
    headers.split("\r\n").skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// Which node advertises one of the URLs in `urls` (comma-separated, `http://host:port`).
pub fn dialler_of(urls: &str, advertised: &[(SocketAddr, usize)]) -> Option<usize> {
    urls.split(',').find_map(|u| {
        let host_port = u.trim();
        let host_port = host_port
            .split_once("://")
            .map(|(_, rest)| rest)
            .unwrap_or(host_port)
            .trim_end_matches('/');
        let addr: SocketAddr = host_port.parse().ok()?;
        advertised
            .iter()
            .find(|(a, _)| *a == addr)
            .map(|(_, node)| *node)
    })
}

/// Carries one accepted connection over its link: dials the target (from the dialler's own
/// address), forwards `prefix` (bytes already read to identify the dialler) first, and pumps
/// both directions under the link's state.
async fn serve_connection(
    inbound: tokio::net::TcpStream,
    prefix: Bytes,
    link: ProxyLink,
    rx: watch::Receiver<LinkState>,
    conn_seed: u64,
    stats: Arc<ProxyStats>,
) {
    let _ = inbound.set_nodelay(true);
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
    let framing = match link.kind {
        LinkKind::Peer => Framing::PaxosFrames,
        LinkKind::Forward => Framing::HttpRequests,
    };
    let up = pump(
        prefix,
        &mut in_r,
        &mut out_w,
        rx.clone(),
        start_epoch,
        framing,
        Some((link.source_ip, link.target)),
        ChaCha8Rng::seed_from_u64(conn_seed),
        &stats,
    );
    // Replies flow back raw: paxos-kv's dialler only watches its read half for a close.
    let down = pump(
        Bytes::new(),
        &mut out_r,
        &mut in_w,
        rx,
        start_epoch,
        Framing::Raw,
        None,
        ChaCha8Rng::seed_from_u64(!conn_seed),
        &stats,
    );
    // Either direction ending closes both halves.
    tokio::select! { _ = up => {}, _ = down => {} }
    let _ = in_w.shutdown().await;
    let _ = out_w.shutdown().await;
}

/// Why a pump's reader stopped.
#[derive(PartialEq)]
enum ReadEnd {
    /// The sender closed: deliver what is delayed, then close.
    Eof,
    /// A heal followed a cut, or the writer failed: close now.
    Abort,
}

/// Delivers a second copy of a whole HTTP request (see [`decide`]) at `at` on a connection of
/// its own, from the dialler's address, and reads and discards the answer: the sender reads
/// exactly one answer, on its own connection. Bounded in time, and in number by
/// [`PROXY_REDELIVERIES_MAX`].
async fn redeliver(
    source_ip: IpAddr,
    target: SocketAddr,
    request: Bytes,
    at: Instant,
    link: watch::Receiver<LinkState>,
) {
    tokio::time::sleep_until(at).await;
    // Still in flight when a partition began: the partition takes it.
    if link.borrow().blocked {
        return;
    }
    let Some(mut s) = connect_from(source_ip, target).await else {
        return;
    };
    if s.write_all(&request).await.is_err() {
        return;
    }
    // Until the answer's head arrives (the request was handled) or the bound passes.
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_millis(PROXY_REDELIVERY_TIMEOUT_MS);
    while answer.len() < PROXY_IDENTIFY_MAX_BYTES && !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
}

/// Copies one direction: cuts it into units, drops them while the link is cut, shapes them as
/// the link's network fault says, and writes each at its delivery time (never earlier than the
/// one before, so a stream is never reordered), closing on the heal that follows a cut.
/// `redeliver_to`: the dialler's address and the target, for second copies of whole HTTP
/// requests.
#[allow(clippy::too_many_arguments)]
async fn pump<R, W>(
    prefix: Bytes,
    from: &mut R,
    to: &mut W,
    mut rx: watch::Receiver<LinkState>,
    start_epoch: u64,
    framing: Framing,
    redeliver_to: Option<(IpAddr, SocketAddr)>,
    mut rng: ChaCha8Rng,
    stats: &Arc<ProxyStats>,
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
        let mut framer = Framer::new(framing);
        let mut buf = vec![0u8; PROXY_READ_CHUNK_BYTES];
        let mut last_at = Instant::now();
        let mut prefix = (!prefix.is_empty()).then_some(prefix);
        loop {
            // Only cancel-safe futures in the select: a read either completed or read nothing.
            tokio::select! {
                r = async {
                    match prefix.take() {
                        // Bytes read before the pump began (to identify the dialler) go first.
                        Some(p) => { buf[..p.len()].copy_from_slice(&p); Ok(p.len()) }
                        None => from.read(&mut buf).await,
                    }
                } => {
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
                        let request = unit.request.is_some();
                        let counter = match (copies, &state.shaping) {
                            (0, _) if request => Some(&stats.requests_dropped),
                            (0, _) => Some(&stats.frames_dropped),
                            (2, _) if request => Some(&stats.requests_redelivered),
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
                        let mut copies = copies;
                        if let (true, 2, Some((source_ip, target))) = (request, copies, redeliver_to) {
                            // The second copy of a request goes on its own connection.
                            copies = 1;
                            let in_flight = stats.redeliveries_in_flight.fetch_add(1, Ordering::Relaxed);
                            if in_flight < PROXY_REDELIVERIES_MAX {
                                let (stats, bytes, link) = (stats.clone(), unit.bytes.clone(), rx.clone());
                                tokio::spawn(async move {
                                    redeliver(source_ip, target, bytes, at, link).await;
                                    stats.redeliveries_in_flight.fetch_sub(1, Ordering::Relaxed);
                                });
                            } else {
                                // Past the bound: delivered once only, and not counted.
                                stats.redeliveries_in_flight.fetch_sub(1, Ordering::Relaxed);
                                stats.requests_redelivered.fetch_sub(1, Ordering::Relaxed);
                            }
                        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::framer::tests::frame;
    use tokio::net::{TcpListener, TcpStream};

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
            dialer: Dialer::Link,
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

    /// Reads from `s` until the end of an HTTP head, within 10 s.
    async fn read_http_head(s: &mut TcpStream) -> String {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte))
                .await
                .expect("a head within 10 s")
                .unwrap();
            assert_eq!(n, 1, "closed after {:?}", String::from_utf8_lossy(&head));
            head.push(byte[0]);
        }
        String::from_utf8(head).unwrap()
    }

    /// etcd's shape: every node dials one listener per peer. The listener in front of node 1
    /// tells its diallers apart by the `X-PeerURLs` header (each names the listener in front of
    /// itself), so a cut between nodes 0 and 1 silences node 0's connection only; a connection
    /// without the header passes untouched, and after the heal node 0 gets through again.
    #[tokio::test]
    async fn a_shared_listener_tells_diallers_apart_by_their_header() {
        let mut receivers = Vec::new();
        for _ in 0..3 {
            receivers.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut plan = Vec::new();
        for from in 0..3 {
            for to in (0..3).filter(|&to| to != from) {
                plan.push(ProxyLink {
                    from,
                    to,
                    kind: LinkKind::Peer,
                    listen: any,
                    target: receivers[to].local_addr().unwrap(),
                    source_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                    dialer: Dialer::HttpHeader("X-PeerURLs".into()),
                });
            }
        }
        let proxy = ProxyNet::start(&plan, 9).await.unwrap();
        let front = |j: usize| proxy.listen_addr((j + 1) % 3, j, LinkKind::Peer).unwrap();
        assert_eq!(front(1), proxy.listen_addr(2, 1, LinkKind::Peer).unwrap());
        let request = |from: Option<usize>| match from {
            Some(i) => format!(
                "GET /raft/stream/message/{i} HTTP/1.1\r\nHost: x\r\nx-peerurls: http://{}\r\n\r\n",
                front(i)
            ),
            None => "GET /version HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
        };
        proxy.cut(&[(0, 1)].into_iter().collect());
        let receiver = &receivers[1];

        let mut from2 = TcpStream::connect(front(1)).await.unwrap();
        from2.write_all(request(Some(2)).as_bytes()).await.unwrap();
        let (mut in2, _) = receiver.accept().await.unwrap();
        assert_eq!(read_http_head(&mut in2).await, request(Some(2)));

        let mut from0 = TcpStream::connect(front(1)).await.unwrap();
        from0.write_all(request(Some(0)).as_bytes()).await.unwrap();
        let got = tokio::time::timeout(Duration::from_millis(1000), receiver.accept()).await;
        assert!(got.is_err(), "node 0 got through the cut");

        let mut nobody = TcpStream::connect(front(1)).await.unwrap();
        nobody.write_all(request(None).as_bytes()).await.unwrap();
        let (mut in_nobody, _) = receiver.accept().await.unwrap();
        assert_eq!(read_http_head(&mut in_nobody).await, request(None));
        assert_eq!(
            proxy.stats.connections_unidentified.load(Ordering::Relaxed),
            1
        );

        proxy.heal_partition();
        let mut again = TcpStream::connect(front(1)).await.unwrap();
        again.write_all(request(Some(0)).as_bytes()).await.unwrap();
        let (mut in0, _) = receiver.accept().await.unwrap();
        assert_eq!(read_http_head(&mut in0).await, request(Some(0)));
        drop(from0);
    }

    /// A shared listener whose diallers dial from their own addresses tells them apart by
    /// source address: a cut between nodes 0 and 1 silences node 0's connection only.
    #[tokio::test]
    async fn a_shared_listener_tells_diallers_apart_by_their_source_address() {
        let receiver = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ip = |node: u8| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11 + node));
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let plan: Vec<ProxyLink> = [0usize, 2]
            .into_iter()
            .map(|from| ProxyLink {
                from,
                to: 1,
                kind: LinkKind::Peer,
                listen: any,
                target: receiver.local_addr().unwrap(),
                source_ip: ip(from as u8),
                dialer: Dialer::SourceIp,
            })
            .collect();
        let proxy = ProxyNet::start(&plan, 3).await.unwrap();
        let front = proxy.listen_addr(0, 1, LinkKind::Peer).unwrap();
        assert_eq!(Some(front), proxy.listen_addr(2, 1, LinkKind::Peer));
        let dial_from = |node: u8| async move {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::new(ip(node), 0)).unwrap();
            socket.connect(front).await.unwrap()
        };
        proxy.cut(&[(0, 1)].into_iter().collect());
        let mut from0 = dial_from(0).await;
        from0.write_all(&frame(b"hello")).await.unwrap();
        let got = tokio::time::timeout(Duration::from_millis(1000), receiver.accept()).await;
        assert!(got.is_err(), "node 0 got through the cut");
        let mut from2 = dial_from(2).await;
        from2.write_all(&frame(b"hello")).await.unwrap();
        let (mut in2, peer) = receiver.accept().await.unwrap();
        assert_eq!(
            peer.ip(),
            ip(2),
            "the proxy dials from the dialler's address"
        );
        assert_eq!(read_frame(&mut in2).await, b"hello");
    }

    #[test]
    fn diallers_are_found_by_their_advertised_url() {
        let a: SocketAddr = "127.0.0.1:2004".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:20043".parse().unwrap();
        let advertised = [(a, 0), (b, 2)];
        assert_eq!(dialler_of("http://127.0.0.1:20043", &advertised), Some(2));
        assert_eq!(
            dialler_of("http://10.0.0.1:1, http://127.0.0.1:2004/", &advertised),
            Some(0)
        );
        assert_eq!(dialler_of("http://127.0.0.1:200", &advertised), None);
        let head = b"POST /raft HTTP/1.1\r\nX-Server-From: 1a\r\nX-PeerURLs: http://127.0.0.1:2004\r\n\r\nbody: x";
        assert_eq!(
            header_value(head, "x-peerurls").as_deref(),
            Some("http://127.0.0.1:2004")
        );
        assert_eq!(header_value(head, "body"), None);
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
