//! Peer transport: TCP with length-prefixed binary frames.
//!
//! - Every node listens on its own address and dials peers *from* its own IP (the outgoing
//!   socket is bound to `own_ip:0`), so iptables rules between 127.0.0.N addresses see the
//!   real source address of every link.
//! - One bounded send queue per peer; `send` never blocks and drops the frame when the queue
//!   is full or the peer is unreachable: Paxos tolerates message loss, and blocking the core
//!   on one slow peer would stall the cluster.
//! - A dropped connection is re-dialled with exponential backoff.
//! - The first frame on every connection is a hello carrying the sender's node id and its
//!   client (HTTP) address, so that every node learns where to forward client requests, unless
//!   it was told where to forward them (`--peer-clients`, e.g. a test harness's proxy).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
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
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Hello {
    node_id: u64,
    client_addr: String,
}

/// Client addresses of peers, learned from hellos.
pub type ClientAddrs = Arc<RwLock<HashMap<u64, String>>>;

/// Counters for /metrics.
#[derive(Debug, Default)]
pub struct TransportStats {
    pub frames_sent: std::sync::atomic::AtomicU64,
    pub frames_dropped: std::sync::atomic::AtomicU64,
    pub frames_received: std::sync::atomic::AtomicU64,
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
            opts.frame_max_bytes,
            inbound,
            client_addrs.clone(),
            stats.clone(),
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

async fn accept_loop(
    listener: TcpListener,
    frame_max_bytes: u32,
    inbound: mpsc::Sender<(u64, Bytes)>,
    client_addrs: ClientAddrs,
    stats: Arc<TransportStats>,
) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if let Err(e) = set_keepalive(&stream) {
            tracing::debug!(%from, error = %e, "cannot enable keepalive");
        }
        let inbound = inbound.clone();
        let client_addrs = client_addrs.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            if let Err(e) = read_loop(stream, frame_max_bytes, inbound, client_addrs, stats).await {
                tracing::debug!(%from, error = %e, "inbound connection closed");
            }
        });
    }
}

async fn read_frame<R: AsyncReadExt + Unpin>(r: &mut R, max: u32) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len);
    if len > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes over the limit {max}"),
        ));
    }
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn read_loop(
    stream: TcpStream,
    frame_max_bytes: u32,
    inbound: mpsc::Sender<(u64, Bytes)>,
    client_addrs: ClientAddrs,
    stats: Arc<TransportStats>,
) -> std::io::Result<()> {
    let mut r = tokio::io::BufReader::with_capacity(256 << 10, stream);
    let hello = read_frame(&mut r, 64 << 10).await?;
    let hello: Hello = crate::codec::decode("hello", &hello)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    client_addrs
        .write()
        .expect("lock poisoned")
        .insert(hello.node_id, hello.client_addr);
    loop {
        let frame = read_frame(&mut r, frame_max_bytes).await?;
        stats
            .frames_received
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if inbound
            .send((hello.node_id, Bytes::from(frame)))
            .await
            .is_err()
        {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            "c1".into(),
            peers.clone(),
            TransportOptions::default(),
            txa,
        )
        .await
        .unwrap();
        let tb = Transport::start(
            2,
            pb,
            "c2".into(),
            peers.clone(),
            TransportOptions::default(),
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
        assert_eq!(tb.client_addr(1).as_deref(), Some("c1"));
        // A configured forwarding address wins over the announced one; others are unchanged.
        let tb = tb.with_forward_addrs([(1, "proxy-for-1".to_string())].into_iter().collect());
        assert_eq!(tb.client_addr(1).as_deref(), Some("proxy-for-1"));
        assert_eq!(tb.client_addr(2).as_deref(), Some("c2"));
        // A second bind of the same address is a clear error.
        let (tx, _rx) = mpsc::channel(1);
        let err = Transport::start(1, pa, "c".into(), peers, TransportOptions::default(), tx)
            .await
            .err()
            .expect("port in use must fail");
        assert!(err.to_string().contains(&pa.to_string()), "{err}");
    }
}
