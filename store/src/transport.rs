//! Peer transport: TCP with length-prefixed binary frames.
//!
//! - Every node listens on its own address and dials peers *from* its own IP (the outgoing
//!   socket is bound to `own_ip:0`), so iptables rules between 127.0.0.N addresses see the
//!   real source address of every link.
//! - One bounded send queue per peer; `send` never blocks and drops the frame when the queue
//!   is full or the peer is unreachable: Paxos tolerates message loss, and blocking the core
//!   on one slow peer would stall the cluster.
//! - A dropped connection is re-dialled with exponential backoff.
//! - The first frame on every connection is a hello carrying the sender's node id, its client
//!   (HTTP) address and the cluster token, so that every node learns where to forward client
//!   requests, unless it was told where to forward them (`--peer-clients`, e.g. a test
//!   harness's proxy).
//! - What the peer port trusts ([`PeerTrust`]): a hello is accepted only for a configured
//!   member other than this node, from that member's configured IP (unless its links are
//!   declared proxied), carrying the cluster token when one is configured, and announcing a
//!   client address that is an IP:PORT. Anything else closes the connection and logs why;
//!   nothing is learned from it. Frames are read in bounded chunks, so a claimed length costs
//!   memory only as its bytes arrive, and inbound connections are capped.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;

use crate::StoreError;

#[derive(Debug, Clone)]
pub struct TransportOptions {
    /// Frames queued per peer before new ones are dropped.
    pub send_queue_frames: usize,
    /// Largest frame accepted from a peer (snapshots travel as one frame).
    pub frame_max_bytes: u32,
    pub connect_timeout_ms: u64,
    /// Close a connection whose sent data is unacknowledged this long (TCP_USER_TIMEOUT).
    pub user_timeout_ms: u64,
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
    /// Inbound peer connections open at once; more are closed at accept.
    pub inbound_connections_max: usize,
    /// How long an inbound connection may take to send its hello.
    pub hello_timeout_ms: u64,
}

/// Largest hello frame (node id, client address, token).
const HELLO_MAX_BYTES: u32 = 64 << 10;
/// Longest client address a hello may announce.
const CLIENT_ADDR_MAX_BYTES: usize = 256;
/// A frame is read in chunks of at most this, so its buffer grows with the bytes that arrived,
/// not with the length it claims.
const READ_CHUNK_BYTES: usize = 256 << 10;

/// Who may speak on the peer port.
#[derive(Debug, Clone, Default)]
pub struct PeerTrust {
    /// For each configured member: the source IP its connections must come from, or None when
    /// its links are proxied (the proxy's source IP is not known here).
    pub member_ips: HashMap<u64, Option<IpAddr>>,
    /// When set, every hello must carry exactly this token.
    pub cluster_token: Option<Vec<u8>>,
}

impl PeerTrust {
    /// Why a hello from `source` is refused, or None when it is accepted.
    fn refuse(&self, own_id: u64, hello: &Hello, source: IpAddr) -> Option<String> {
        let id = hello.node_id;
        if id == own_id {
            return Some(format!("hello claims to be this node ({id})"));
        }
        let Some(expected) = self.member_ips.get(&id) else {
            return Some(format!(
                "hello from node {id}, which is not a configured member"
            ));
        };
        if let Some(ip) = expected {
            if *ip != source {
                return Some(format!(
                    "hello claims node {id}, whose configured IP is {ip}, but comes from {source}"
                ));
            }
        }
        if let Some(token) = &self.cluster_token {
            if !constant_time_eq(token, &hello.cluster_token) {
                return Some(format!("hello from node {id} has a wrong cluster token"));
            }
        }
        if hello.client_addr.len() > CLIENT_ADDR_MAX_BYTES
            || hello.client_addr.parse::<SocketAddr>().is_err()
        {
            return Some(format!(
                "hello from node {id} announces a client address that is not IP:PORT"
            ));
        }
        None
    }
}

/// Compares without an early exit, so the time taken does not tell how much of a token matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            send_queue_frames: 4096,
            frame_max_bytes: 512 << 20,
            connect_timeout_ms: 500,
            user_timeout_ms: 1000,
            backoff_min_ms: 20,
            backoff_max_ms: 500,
            inbound_connections_max: 64,
            hello_timeout_ms: 5000,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Hello {
    node_id: u64,
    client_addr: String,
    cluster_token: Vec<u8>,
}

/// Client addresses of peers, learned from hellos.
pub type ClientAddrs = Arc<RwLock<HashMap<u64, String>>>;

/// Counters for /metrics.
#[derive(Debug, Default)]
pub struct TransportStats {
    pub frames_sent: std::sync::atomic::AtomicU64,
    pub frames_dropped: std::sync::atomic::AtomicU64,
    pub frames_received: std::sync::atomic::AtomicU64,
    /// Inbound connections closed because their hello was refused.
    pub hellos_refused: std::sync::atomic::AtomicU64,
}

#[derive(Clone)]
pub struct Transport {
    queues: Arc<HashMap<u64, mpsc::Sender<Bytes>>>,
    pub client_addrs: ClientAddrs,
    /// Forwarding addresses given in the configuration; they win over announced ones.
    forward_addrs: Arc<HashMap<u64, String>>,
    pub stats: Arc<TransportStats>,
}

impl Transport {
    /// Binds `listen` (an error if the address is in use), and starts the accept loop and one
    /// dialler per peer. Received frames go to `inbound` as `(from, frame)`.
    pub async fn start(
        node_id: u64,
        listen: SocketAddr,
        client_addr: String,
        peers: HashMap<u64, SocketAddr>,
        opts: TransportOptions,
        trust: PeerTrust,
        inbound: mpsc::Sender<(u64, Bytes)>,
    ) -> Result<Transport, StoreError> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| StoreError::Bind {
                what: "peer listen address".into(),
                addr: listen.to_string(),
                source: e,
            })?;
        let client_addrs: ClientAddrs = Arc::new(RwLock::new(HashMap::new()));
        client_addrs
            .write()
            .expect("lock poisoned")
            .insert(node_id, client_addr.clone());
        let stats = Arc::new(TransportStats::default());
        let hello = crate::codec::encode(&Hello {
            node_id,
            client_addr,
            cluster_token: trust.cluster_token.clone().unwrap_or_default(),
        });
        let mut queues = HashMap::new();
        for (&peer, &addr) in &peers {
            if peer == node_id {
                continue;
            }
            let (tx, rx) = mpsc::channel(opts.send_queue_frames.max(1));
            queues.insert(peer, tx);
            tokio::spawn(dial_loop(
                peer,
                addr,
                listen,
                hello.clone(),
                rx,
                opts.clone(),
                stats.clone(),
            ));
        }
        tokio::spawn(accept_loop(
            listener,
            Inbound {
                node_id,
                opts,
                trust: Arc::new(trust),
                frames: inbound,
                client_addrs: client_addrs.clone(),
                stats: stats.clone(),
            },
        ));
        Ok(Transport {
            queues: Arc::new(queues),
            client_addrs,
            forward_addrs: Arc::new(HashMap::new()),
            stats,
        })
    }

    /// Fixes where client requests for some peers are forwarded, whatever they announce.
    pub fn with_forward_addrs(mut self, addrs: HashMap<u64, String>) -> Transport {
        self.forward_addrs = Arc::new(addrs);
        self
    }

    /// Queues a frame for `to`; drops it if the queue is full.
    pub fn send(&self, to: u64, frame: Bytes) {
        use std::sync::atomic::Ordering::Relaxed;
        match self.queues.get(&to) {
            Some(q) => {
                if q.try_send(frame).is_err() {
                    self.stats.frames_dropped.fetch_add(1, Relaxed);
                }
            }
            None => {
                tracing::debug!(to, "dropping a frame for an unknown peer");
                self.stats.frames_dropped.fetch_add(1, Relaxed);
            }
        }
    }

    /// Where to forward client requests for `node`: the configured address, else the one it
    /// announced in its hello.
    pub fn client_addr(&self, node: u64) -> Option<String> {
        if let Some(a) = self.forward_addrs.get(&node) {
            return Some(a.clone());
        }
        self.client_addrs
            .read()
            .expect("lock poisoned")
            .get(&node)
            .cloned()
    }
}

/// Makes the kernel drop the connection when sent data stays unacknowledged this long. Without
/// it, a link cut by a partition (packets silently dropped) stays "up" while TCP retransmits
/// with exponential backoff, and the link can take tens of seconds to recover after the heal.
fn set_user_timeout(socket: &TcpSocket, ms: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let ms = ms.min(i32::MAX as u64) as libc::c_int;
    set_int_opt(
        socket.as_raw_fd(),
        libc::IPPROTO_TCP,
        libc::TCP_USER_TIMEOUT,
        ms,
    )
}

fn set_int_opt(
    fd: i32,
    level: libc::c_int,
    opt: libc::c_int,
    value: libc::c_int,
) -> std::io::Result<()> {
    // SAFETY: a plain setsockopt on a socket the caller owns, with a pointer to a live c_int.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            &value as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Keepalive probes on an inbound (read-only) connection, so that one whose peer vanished
/// behind a partition is closed and its reader task ends, instead of waiting forever.
fn set_keepalive(stream: &TcpStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = stream.as_raw_fd();
    set_int_opt(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
    set_int_opt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 2)?;
    set_int_opt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 1)?;
    set_int_opt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3)
}

async fn connect_from(
    local: SocketAddr,
    peer: SocketAddr,
    timeout_ms: u64,
    user_timeout_ms: u64,
) -> std::io::Result<TcpStream> {
    let socket = if peer.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // Port 0: the kernel picks a port, but the source IP is this node's own address.
    socket.bind(SocketAddr::new(local.ip(), 0))?;
    set_user_timeout(&socket, user_timeout_ms)?;
    let stream = tokio::time::timeout(Duration::from_millis(timeout_ms), socket.connect(peer))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn write_frame<W: AsyncWriteExt + Unpin>(w: &mut W, frame: &[u8]) -> std::io::Result<()> {
    w.write_all(&(frame.len() as u32).to_le_bytes()).await?;
    w.write_all(frame).await
}

async fn dial_loop(
    peer: u64,
    addr: SocketAddr,
    local: SocketAddr,
    hello: Vec<u8>,
    mut rx: mpsc::Receiver<Bytes>,
    opts: TransportOptions,
    stats: Arc<TransportStats>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut backoff_ms = opts.backoff_min_ms;
    loop {
        let stream =
            match connect_from(local, addr, opts.connect_timeout_ms, opts.user_timeout_ms).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(peer, %addr, error = %e, backoff_ms, "dial failed");
                    // Frames queued for an unreachable peer are stale by the time it returns;
                    // drop them rather than replay a burst of old messages.
                    while rx.try_recv().is_ok() {
                        stats.frames_dropped.fetch_add(1, Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
                    backoff_ms = (backoff_ms * 2).min(opts.backoff_max_ms);
                    continue;
                }
            };
        tracing::debug!(peer, %addr, "connected");
        backoff_ms = opts.backoff_min_ms;
        let (mut read_half, write_half) = stream.into_split();
        // Detect the peer closing the connection even when we have nothing to send.
        let mut closed = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            loop {
                match read_half.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        });
        let mut w = BufWriter::with_capacity(256 << 10, write_half);
        let result: std::io::Result<()> = async {
            write_frame(&mut w, &hello).await?;
            w.flush().await?;
            loop {
                let frame = tokio::select! {
                    f = rx.recv() => f,
                    _ = &mut closed => return Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "peer closed")),
                };
                let Some(frame) = frame else { return Ok(()) };
                write_frame(&mut w, &frame).await?;
                stats.frames_sent.fetch_add(1, Relaxed);
                // Coalesce whatever else is queued into the same write.
                let mut n = 0;
                while n < 1024 {
                    match rx.try_recv() {
                        Ok(f) => {
                            write_frame(&mut w, &f).await?;
                            stats.frames_sent.fetch_add(1, Relaxed);
                            n += 1;
                        }
                        Err(_) => break,
                    }
                }
                w.flush().await?;
            }
        }
        .await;
        closed.abort();
        match result {
            Ok(()) => return, // the transport was dropped
            Err(e) => {
                tracing::debug!(peer, %addr, error = %e, "connection lost");
                tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
            }
        }
    }
}

/// What the accept loop and every inbound connection share.
#[derive(Clone)]
struct Inbound {
    node_id: u64,
    opts: TransportOptions,
    trust: Arc<PeerTrust>,
    frames: mpsc::Sender<(u64, Bytes)>,
    client_addrs: ClientAddrs,
    stats: Arc<TransportStats>,
}

async fn accept_loop(listener: TcpListener, inbound: Inbound) {
    let slots = Arc::new(tokio::sync::Semaphore::new(
        inbound.opts.inbound_connections_max.max(1),
    ));
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%from, max = inbound.opts.inbound_connections_max, "too many inbound peer connections; closing");
            continue;
        };
        let _ = stream.set_nodelay(true);
        if let Err(e) = set_keepalive(&stream) {
            tracing::debug!(%from, error = %e, "cannot enable keepalive");
        }
        let inbound = inbound.clone();
        tokio::spawn(async move {
            if let Err(e) = read_loop(stream, from, &inbound).await {
                tracing::debug!(%from, error = %e, "inbound connection closed");
            }
            drop(slot);
        });
    }
}

/// Reads one length-prefixed frame into `buf` (cleared first), at most `max` bytes. The buffer
/// grows in chunks as bytes arrive: a claimed length alone allocates nothing.
async fn read_frame<R: AsyncReadExt + Unpin>(
    r: &mut R,
    max: u32,
    buf: &mut Vec<u8>,
) -> std::io::Result<()> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len);
    if len > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes over the limit {max}"),
        ));
    }
    let len = len as usize;
    buf.clear();
    while buf.len() < len {
        let chunk = (len - buf.len()).min(READ_CHUNK_BYTES);
        let start = buf.len();
        buf.resize(start + chunk, 0);
        r.read_exact(&mut buf[start..]).await?;
    }
    Ok(())
}

fn invalid(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

async fn read_loop(stream: TcpStream, from: SocketAddr, inbound: &Inbound) -> std::io::Result<()> {
    use std::sync::atomic::Ordering::Relaxed;
    let mut r = tokio::io::BufReader::with_capacity(64 << 10, stream);
    let mut buf = Vec::new();
    let hello_timeout = Duration::from_millis(inbound.opts.hello_timeout_ms);
    tokio::time::timeout(hello_timeout, read_frame(&mut r, HELLO_MAX_BYTES, &mut buf))
        .await
        .map_err(|_| invalid(format!("no hello within {hello_timeout:?}")))??;
    let hello: Hello = crate::codec::decode("hello", &buf).map_err(|e| invalid(e.to_string()))?;
    if let Some(why) = inbound.trust.refuse(inbound.node_id, &hello, from.ip()) {
        inbound.stats.hellos_refused.fetch_add(1, Relaxed);
        tracing::warn!(%from, "peer hello refused: {why}");
        return Err(invalid(why));
    }
    inbound
        .client_addrs
        .write()
        .expect("lock poisoned")
        .insert(hello.node_id, hello.client_addr);
    loop {
        read_frame(&mut r, inbound.opts.frame_max_bytes, &mut buf).await?;
        inbound.stats.frames_received.fetch_add(1, Relaxed);
        let frame = Bytes::from(std::mem::take(&mut buf));
        if inbound.frames.send((hello.node_id, frame)).await.is_err() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every member is expected from the IP of its configured address; no token.
    fn trust_all(peers: &HashMap<u64, SocketAddr>) -> PeerTrust {
        PeerTrust {
            member_ips: peers.iter().map(|(id, a)| (*id, Some(a.ip()))).collect(),
            cluster_token: None,
        }
    }

    fn free_port(ip: &str) -> SocketAddr {
        let l = std::net::TcpListener::bind(format!("{ip}:0")).unwrap();
        l.local_addr().unwrap()
    }

    /// Connects to `to` from `source_ip`, sends `hello` and one frame; returns the stream.
    async fn speak(to: SocketAddr, source_ip: &str, hello: &Hello) -> TcpStream {
        let socket = TcpSocket::new_v4().unwrap();
        socket
            .bind(format!("{source_ip}:0").parse().unwrap())
            .unwrap();
        let mut s = socket.connect(to).await.unwrap();
        write_frame(&mut s, &crate::codec::encode(hello))
            .await
            .unwrap();
        write_frame(&mut s, b"forged").await.unwrap();
        s.flush().await.unwrap();
        s
    }

    /// True when the node closed the connection (a refused hello), within 5 s.
    async fn closed_by_node(s: &mut TcpStream) -> bool {
        let mut b = [0u8; 8];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    #[tokio::test]
    async fn hello_is_accepted_only_from_a_configured_member_at_its_ip_with_the_token() {
        if std::net::TcpListener::bind("127.0.0.11:0").is_err() {
            eprintln!("skipped: cannot bind 127.0.0.11");
            return;
        }
        // Node 2 (this transport) on 127.0.0.1; node 1 is configured at 127.0.0.11.
        let p1 = free_port("127.0.0.11");
        let p2 = free_port("127.0.0.1");
        let peers: HashMap<u64, SocketAddr> = [(1, p1), (2, p2)].into_iter().collect();
        let mut trust = trust_all(&peers);
        trust.cluster_token = Some(b"sesame".to_vec());
        let (tx, mut rx) = mpsc::channel(16);
        let t = Transport::start(
            2,
            p2,
            "127.0.0.1:8002".into(),
            peers,
            TransportOptions::default(),
            trust,
            tx,
        )
        .await
        .unwrap();
        let hello = |id: u64, addr: &str, token: &[u8]| Hello {
            node_id: id,
            client_addr: addr.into(),
            cluster_token: token.to_vec(),
        };
        // An impostor claiming node 1 from another IP, with the right token.
        let mut s = speak(p2, "127.0.0.1", &hello(1, "127.0.0.99:80", b"sesame")).await;
        assert!(closed_by_node(&mut s).await, "impostor hello not refused");
        // Not a member; this node itself; the wrong token; a client address that is no IP:PORT.
        for (id, src, addr, token) in [
            (7, "127.0.0.1", "127.0.0.1:80", &b"sesame"[..]),
            (2, "127.0.0.1", "127.0.0.1:80", b"sesame"),
            (1, "127.0.0.11", "127.0.0.11:80", b"open"),
            (1, "127.0.0.11", "evil.example/x?", b"sesame"),
        ] {
            let mut s = speak(p2, src, &hello(id, addr, token)).await;
            assert!(
                closed_by_node(&mut s).await,
                "hello {id} from {src} not refused"
            );
        }
        assert_eq!(
            t.client_addr(1),
            None,
            "learned an address from a refused hello"
        );
        assert_eq!(
            t.client_addrs.read().unwrap().len(),
            1,
            "only its own address"
        );
        assert_eq!(
            t.stats
                .hellos_refused
                .load(std::sync::atomic::Ordering::Relaxed),
            5
        );
        // The real node 1: accepted, its address learned, its frames delivered.
        let _s = speak(p2, "127.0.0.11", &hello(1, "127.0.0.11:8001", b"sesame")).await;
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert_eq!(got.unwrap(), Some((1, Bytes::from_static(b"forged"))));
        assert_eq!(t.client_addr(1).as_deref(), Some("127.0.0.11:8001"));
    }

    #[tokio::test]
    async fn a_claimed_frame_length_allocates_only_what_arrives() {
        // Claims 200 MiB, sends 10 bytes, then ends.
        let mut data = (200u32 << 20).to_le_bytes().to_vec();
        data.extend_from_slice(b"0123456789");
        let mut buf = Vec::new();
        let r = read_frame(&mut &data[..], 512 << 20, &mut buf).await;
        assert!(r.is_err(), "a short frame must fail");
        assert!(
            buf.capacity() <= 2 * READ_CHUNK_BYTES,
            "buffer grew to {} bytes for a 10-byte frame",
            buf.capacity()
        );
        // A complete frame still reads whole, across chunks.
        let payload = vec![7u8; 3 * READ_CHUNK_BYTES + 5];
        let mut data = (payload.len() as u32).to_le_bytes().to_vec();
        data.extend_from_slice(&payload);
        read_frame(&mut &data[..], 512 << 20, &mut buf)
            .await
            .unwrap();
        assert_eq!(buf, payload);
    }

    #[tokio::test]
    async fn frames_flow_both_ways_and_hello_carries_client_addr() {
        let a: SocketAddr = "127.0.0.1:0".parse().unwrap();
        // Reserve two free ports.
        let la = std::net::TcpListener::bind(a).unwrap();
        let lb = std::net::TcpListener::bind(a).unwrap();
        let (pa, pb) = (la.local_addr().unwrap(), lb.local_addr().unwrap());
        drop((la, lb));
        let peers: HashMap<u64, SocketAddr> = [(1, pa), (2, pb)].into_iter().collect();
        let (txa, mut rxa) = mpsc::channel(16);
        let (txb, mut rxb) = mpsc::channel(16);
        let ta = Transport::start(
            1,
            pa,
            "127.0.0.1:1".into(),
            peers.clone(),
            TransportOptions::default(),
            trust_all(&peers),
            txa,
        )
        .await
        .unwrap();
        let tb = Transport::start(
            2,
            pb,
            "127.0.0.1:2".into(),
            peers.clone(),
            TransportOptions::default(),
            trust_all(&peers),
            txb,
        )
        .await
        .unwrap();
        // The first frames may be dropped while connecting: retry, bounded.
        let mut got = None;
        for _ in 0..100 {
            ta.send(2, Bytes::from_static(b"ping"));
            if let Ok(Some(x)) = tokio::time::timeout(Duration::from_millis(50), rxb.recv()).await {
                got = Some(x);
                break;
            }
        }
        assert_eq!(got, Some((1, Bytes::from_static(b"ping"))));
        tb.send(1, Bytes::from_static(b"pong"));
        let x = tokio::time::timeout(Duration::from_secs(5), rxa.recv())
            .await
            .unwrap();
        assert_eq!(x, Some((2, Bytes::from_static(b"pong"))));
        assert_eq!(tb.client_addr(1).as_deref(), Some("127.0.0.1:1"));
        // A configured forwarding address wins over the announced one; others are unchanged.
        let tb = tb.with_forward_addrs([(1, "proxy-for-1".to_string())].into_iter().collect());
        assert_eq!(tb.client_addr(1).as_deref(), Some("proxy-for-1"));
        assert_eq!(tb.client_addr(2).as_deref(), Some("127.0.0.1:2"));
        // A second bind of the same address is a clear error.
        let (tx, _rx) = mpsc::channel(1);
        let err = Transport::start(
            1,
            pa,
            "127.0.0.1:3".into(),
            peers.clone(),
            TransportOptions::default(),
            trust_all(&peers),
            tx,
        )
        .await
        .err()
        .expect("port in use must fail");
        assert!(err.to_string().contains(&pa.to_string()), "{err}");
    }
}
