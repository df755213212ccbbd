//! Every setting of a server process, and the consensus core's config built from them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::paxos::{self, Bug};
use crate::StoreError;

/// Every setting of a server process.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub id: u64,
    /// Peer (Paxos) address this node listens on.
    pub listen: SocketAddr,
    /// HTTP address for clients.
    pub client: SocketAddr,
    /// Every member's peer address, this node included.
    pub peers: BTreeMap<u64, SocketAddr>,
    /// Where to forward client requests meant for these peers; others are reached at the client
    /// address they announce.
    pub peer_clients: BTreeMap<u64, SocketAddr>,
    pub data_dir: PathBuf,
    pub bugs: Vec<Bug>,
    pub fsync: bool,
    /// Wall-clock length of one logical tick of the core.
    pub tick_ms: u64,
    pub election_timeout_ticks: u64,
    pub heartbeat_interval_ticks: u64,
    /// How long an HTTP request waits for its command to apply before answering 504.
    pub request_timeout_ms: u64,
    /// Timeout of a request forwarded to the leader.
    pub forward_timeout_ms: u64,
    pub key_max_bytes: usize,
    pub value_max_bytes: usize,
    pub body_max_bytes: usize,
    pub txn_max_ops: usize,
    pub keys_max_results: usize,
    /// Queued client requests waiting for the driver; more are answered 503.
    pub request_queue: usize,
    /// Exactly-once table size (clients remembered).
    pub dedup_clients: usize,
    /// Exactly-once table size in bytes (client ids and recorded outcomes). Like
    /// `dedup_clients`, every replica must use the same value: it decides what is evicted.
    pub dedup_max_bytes: usize,
    /// Longest `client_id`; longer ones are refused with 413.
    pub client_id_max_bytes: usize,
    /// Longest request target (path and query); longer is 414.
    pub uri_max_bytes: usize,
    /// Most bytes of request headers (names and values); more is 431.
    pub headers_max_bytes: usize,
    /// A connection must send a request's complete headers within this (also when idle
    /// between keep-alive requests), or it is closed.
    pub http_header_timeout_ms: u64,
    /// A request body must arrive within this, or the request is answered 408.
    pub http_body_timeout_ms: u64,
    /// Client connections open at once; a connection past the cap is answered 503 and
    /// closed. 0: the open-file limit minus `fd_reserve`.
    pub http_connections_max: usize,
    /// File descriptors kept out of the client connection cap for peer links, the WAL and
    /// forwarding, so that clients cannot starve them.
    pub fd_reserve: usize,
    /// Take a snapshot once this many slots follow the last one.
    pub snapshot_interval_entries: u64,
    /// Chosen entries kept behind a snapshot for lagging peers.
    pub compaction_retain_entries: u64,
    /// Also snapshot and compact once this many WAL bytes were appended since the last time.
    pub wal_compact_bytes: u64,
    /// With `ack-before-persist`: how long records sit in the user-space buffer.
    pub lazy_flush_ms: u64,
    /// When set, every peer hello must carry this token (`--cluster-token-file`).
    pub cluster_token: Option<Vec<u8>>,
    /// Sharded mode (a shard controller or a replica group); None: the single-group store.
    pub sharding: Option<crate::server::sharded::ShardSettings>,
}

impl ServerConfig {
    pub fn new(
        id: u64,
        listen: SocketAddr,
        client: SocketAddr,
        peers: BTreeMap<u64, SocketAddr>,
        data_dir: PathBuf,
    ) -> Self {
        ServerConfig {
            id,
            listen,
            client,
            peers,
            peer_clients: BTreeMap::new(),
            data_dir,
            bugs: Vec::new(),
            fsync: true,
            tick_ms: 10,
            election_timeout_ticks: 15,
            heartbeat_interval_ticks: 3,
            request_timeout_ms: 2000,
            forward_timeout_ms: 3000,
            key_max_bytes: 1024,
            value_max_bytes: 1 << 20,
            body_max_bytes: 4 << 20,
            txn_max_ops: 1000,
            keys_max_results: 10_000,
            request_queue: 20_000,
            dedup_clients: 100_000,
            dedup_max_bytes: 64 << 20,
            client_id_max_bytes: 256,
            uri_max_bytes: 8 << 10,
            headers_max_bytes: 64 << 10,
            http_header_timeout_ms: 10_000,
            http_body_timeout_ms: 10_000,
            http_connections_max: 0,
            fd_reserve: 256,
            snapshot_interval_entries: 10_000,
            compaction_retain_entries: 1_000,
            wal_compact_bytes: 128 << 20,
            lazy_flush_ms: 2000,
            cluster_token: None,
            sharding: None,
        }
    }

    /// Who may speak on the peer port: each member from the IP of its `--peers` address, except
    /// members whose links are proxied (`--peer-clients` names them; a proxy's source IP is not
    /// known here), and only with the cluster token when one is set.
    pub fn peer_trust(&self) -> crate::transport::PeerTrust {
        crate::transport::PeerTrust {
            member_ips: self
                .peers
                .iter()
                .map(|(id, a)| (*id, (!self.peer_clients.contains_key(id)).then_some(a.ip())))
                .collect(),
            cluster_token: self.cluster_token.clone(),
        }
    }

    /// The client connection cap: `http_connections_max`, or when 0 the open-file limit minus
    /// `fd_reserve` (at least 16).
    pub fn http_connections_cap(&self) -> usize {
        if self.http_connections_max > 0 {
            return self.http_connections_max;
        }
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into a struct we own.
        let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
        let nofile = if rc == 0 { lim.rlim_cur as usize } else { 1024 };
        nofile.saturating_sub(self.fd_reserve).clamp(16, 1 << 20)
    }

    pub fn has_bug(&self, bug: Bug) -> bool {
        self.bugs.contains(&bug)
    }

    pub(crate) fn validate(&self) -> Result<(), StoreError> {
        let bad = |s: String| Err(StoreError::Config(s));
        match self.peers.get(&self.id) {
            None => {
                return bad(format!(
                    "--peers has no entry for this node's --id {}",
                    self.id
                ))
            }
            // Allowed: a harness may route peer links through proxies, so the address peers
            // dial need not be the one this node binds.
            Some(a) if *a != self.listen => tracing::warn!(
                "--peers gives node {} the address {a}, but --listen is {}; binding --listen",
                self.id,
                self.listen
            ),
            _ => {}
        }
        if self.tick_ms == 0 {
            return bad("tick_ms must be positive".into());
        }
        if let Some(sh) = &self.sharding {
            sh.validate()?;
        }
        Ok(())
    }
}

/// Builds the core's config from the server's.
pub(crate) fn core_config(cfg: &ServerConfig) -> paxos::Config {
    let mut c = paxos::Config::new(cfg.id, cfg.peers.keys().copied().collect());
    c.election_timeout_min_ticks = cfg.election_timeout_ticks;
    c.heartbeat_interval_ticks = cfg.heartbeat_interval_ticks;
    c.check_quorum_ticks = c.check_quorum_ticks.max(cfg.election_timeout_ticks * 4);
    c.snapshot_interval_entries = cfg.snapshot_interval_entries;
    c.compaction_retain_entries = cfg.compaction_retain_entries;
    c.max_command_bytes = cfg.body_max_bytes + 1024;
    c.bugs = cfg.bugs.clone();
    c
}
