//! The server: a tokio task (the driver) owning the Paxos core, a WAL thread doing group
//! commit, the peer transport and the HTTP API.
//!
//! Data flow: HTTP handlers send `Request`s over a bounded channel to the driver, which
//! proposes each command to the core (the core batches many commands per slot), and answers
//! the handler's oneshot when the command is applied (or dropped). The driver hands each
//! Ready's records to the WAL thread, which appends the records of every Ready queued so far
//! and covers them with one fsync, then hands back the highest persist token and the messages
//! that had to wait for it.

use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

use crate::kv::{self, Kv, Outcome};
use crate::paxos::{self, Bug, Dropped, Envelope, Message, Node, PersistToken, Record, Snapshot};
use crate::transport::{Transport, TransportOptions};
use crate::wal::{Wal, WalOptions};
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
    /// Take a snapshot once this many slots follow the last one.
    pub snapshot_interval_entries: u64,
    /// Chosen entries kept behind a snapshot for lagging peers.
    pub compaction_retain_entries: u64,
    /// Also snapshot and compact once this many WAL bytes were appended since the last time.
    pub wal_compact_bytes: u64,
    /// With `ack-before-persist`: how long records sit in the user-space buffer.
    pub lazy_flush_ms: u64,
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
            snapshot_interval_entries: 10_000,
            compaction_retain_entries: 1_000,
            wal_compact_bytes: 128 << 20,
            lazy_flush_ms: 2000,
        }
    }

    pub fn has_bug(&self, bug: Bug) -> bool {
        self.bugs.contains(&bug)
    }

    fn validate(&self) -> Result<(), StoreError> {
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
        Ok(())
    }
}

/// A client request to the driver.
pub enum Request {
    Propose {
        cmd: kv::Command,
        reply: oneshot::Sender<ProposeReply>,
    },
    Read {
        reply: oneshot::Sender<Result<(), Dropped>>,
    },
}

#[derive(Debug)]
pub enum ProposeReply {
    Applied(Outcome),
    Dropped(Dropped),
}

/// Counters for /metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    pub proposals: AtomicU64,
    pub applied_commands: AtomicU64,
    pub applied_slots: AtomicU64,
    pub reads_confirmed: AtomicU64,
    pub rejected: AtomicU64,
    pub rejected_unknown: AtomicU64,
    pub wal_records: AtomicU64,
    pub wal_fsyncs: AtomicU64,
    pub wal_bytes: AtomicU64,
    pub snapshots: AtomicU64,
    pub snapshots_installed: AtomicU64,
    pub http_requests: AtomicU64,
    pub forwarded: AtomicU64,
    pub latency: Histogram,
}

/// A fixed-bucket latency histogram (buckets: `http::LATENCY_BUCKETS_S`, plus +Inf).
#[derive(Debug, Default)]
pub struct Histogram {
    pub buckets: [AtomicU64; 12],
    pub count: AtomicU64,
    pub sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, secs: f64) {
        if let Some(i) = crate::http::LATENCY_BUCKETS_S
            .iter()
            .position(|le| secs <= *le)
        {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add((secs * 1e6) as u64, Relaxed);
    }
}

/// State shared between the driver and the HTTP handlers.
pub struct Shared {
    pub config: ServerConfig,
    pub kv: RwLock<Kv>,
    pub status: Mutex<paxos::Status>,
    pub requests: mpsc::Sender<Request>,
    pub transport: Transport,
    pub metrics: Metrics,
    pub http: reqwest::Client,
    /// Held for the life of the process: two processes on one data directory would corrupt it.
    _data_dir_lock: std::fs::File,
}

/// Takes an exclusive lock on `dir/LOCK` (created if needed), or fails naming the directory.
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, StoreError> {
    use std::os::fd::AsRawFd;
    std::fs::create_dir_all(dir).map_err(|e| StoreError::Io {
        what: format!("create data directory {}", dir.display()),
        source: e,
    })?;
    let path = dir.join("LOCK");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::Io {
            what: format!("open {}", path.display()),
            source: e,
        })?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(StoreError::Config(format!(
            "data directory {} is in use by another paxos-kv process ({})",
            dir.display(),
            std::io::Error::last_os_error()
        )));
    }
    Ok(f)
}

enum WalJob {
    Append {
        records: Vec<Vec<u8>>,
        token: Option<PersistToken>,
        after: Vec<Envelope>,
    },
    /// Write `snapshot` and make `live` the whole log behind it.
    Compact {
        snapshot: Vec<u8>,
        live: Vec<Vec<u8>>,
        /// Tell the core about it (`snapshot_taken`) once durable.
        slot_taken: Option<(u64, Vec<u8>)>,
    },
}

enum WalDone {
    Persisted {
        token: Option<PersistToken>,
        after: Vec<Envelope>,
    },
    Compacted {
        slot: u64,
        data: Vec<u8>,
    },
}

fn encode_record(r: &Record) -> Vec<u8> {
    bincode::serialize(r).expect("serialising a record to memory cannot fail")
}

/// The WAL records that rebuild `state` (written first in a compacted WAL).
/// Entries at or below `snapshot_slot` are left out: the snapshot written with them covers them.
fn checkpoint_records(state: &paxos::RecoveredState, snapshot_slot: u64) -> Vec<Vec<u8>> {
    let mut out = vec![encode_record(&Record::Promise(state.promised))];
    for (slot, (ballot, value)) in state.accepted.range(snapshot_slot + 1..) {
        out.push(encode_record(&Record::Accepted {
            slot: *slot,
            ballot: *ballot,
            value: value.clone(),
        }));
    }
    for (slot, value) in state.chosen.range(snapshot_slot + 1..) {
        out.push(encode_record(&Record::Chosen {
            slot: *slot,
            value: value.clone(),
        }));
    }
    out
}

fn fatal(what: &str, e: impl std::fmt::Display) -> ! {
    // A node that cannot write its WAL must stop rather than answer from undurable state.
    tracing::error!(error = %e, "{what}; stopping");
    std::process::exit(70);
}

fn wal_thread(
    mut wal: Wal,
    mut jobs: mpsc::Receiver<WalJob>,
    done: mpsc::UnboundedSender<WalDone>,
    lazy_flush: Option<Duration>,
    metrics: Arc<Shared>,
) {
    let mut last_flush = Instant::now();
    loop {
        let first = match lazy_flush {
            None => match jobs.blocking_recv() {
                Some(j) => j,
                None => return,
            },
            Some(period) => {
                // ack-before-persist: records sit in the user-space buffer and reach the disk
                // only now and then.
                let job = loop {
                    match jobs.try_recv() {
                        Ok(j) => break Some(j),
                        Err(mpsc::error::TryRecvError::Disconnected) => return,
                        Err(mpsc::error::TryRecvError::Empty) => {
                            if last_flush.elapsed() >= period && wal.buffered_bytes() > 0 {
                                break None;
                            }
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                };
                match job {
                    Some(j) => j,
                    None => {
                        if let Err(e) = wal.sync() {
                            fatal("WAL write failed", e);
                        }
                        last_flush = Instant::now();
                        continue;
                    }
                }
            }
        };
        let mut batch = vec![first];
        while batch.len() < 4096 {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let mut token = None;
        let mut after = Vec::new();
        let mut compacted = Vec::new();
        for job in batch {
            match job {
                WalJob::Append {
                    records,
                    token: t,
                    after: a,
                } => {
                    metrics
                        .metrics
                        .wal_records
                        .fetch_add(records.len() as u64, Relaxed);
                    for r in &records {
                        wal.append(r);
                    }
                    if t.is_some() {
                        token = t;
                    }
                    after.extend(a);
                }
                WalJob::Compact {
                    snapshot,
                    live,
                    slot_taken,
                } => {
                    if let Err(e) = wal.sync().and_then(|_| wal.compact(&snapshot, &live)) {
                        fatal("WAL compaction failed", e);
                    }
                    metrics.metrics.snapshots.fetch_add(1, Relaxed);
                    if let Some((slot, data)) = slot_taken {
                        compacted.push(WalDone::Compacted { slot, data });
                    }
                }
            }
        }
        let flush_now = lazy_flush
            .map(|p| last_flush.elapsed() >= p)
            .unwrap_or(true);
        if flush_now {
            let before = wal.appended_bytes;
            if let Err(e) = wal.sync() {
                fatal("WAL write failed", e);
            }
            last_flush = Instant::now();
            metrics.metrics.wal_fsyncs.store(wal.fsyncs, Relaxed);
            metrics
                .metrics
                .wal_bytes
                .fetch_add(wal.appended_bytes - before, Relaxed);
        }
        if (token.is_some() || !after.is_empty())
            && done.send(WalDone::Persisted { token, after }).is_err()
        {
            return;
        }
        for c in compacted {
            if done.send(c).is_err() {
                return;
            }
        }
    }
}

/// A running server.
pub struct Server {
    pub shared: Arc<Shared>,
}

/// Builds the core's config from the server's.
fn core_config(cfg: &ServerConfig) -> paxos::Config {
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

impl Server {
    /// Recovers from the data directory, binds both addresses and starts every task.
    pub async fn start(cfg: ServerConfig) -> Result<Server, StoreError> {
        cfg.validate()?;
        let core_cfg = core_config(&cfg);
        core_cfg
            .validate()
            .map_err(|e| StoreError::Config(e.to_string()))?;
        // Bind the client address first, so a port in use fails before touching the disk.
        let http_listener = tokio::net::TcpListener::bind(cfg.client)
            .await
            .map_err(|e| StoreError::Bind {
                what: "client (HTTP) address".into(),
                addr: cfg.client.to_string(),
                source: e,
            })?;
        let data_dir_lock = lock_data_dir(&cfg.data_dir)?;
        // Recovery.
        let (wal, recovered) = Wal::open(
            &cfg.data_dir,
            WalOptions {
                fsync: cfg.fsync,
                ..WalOptions::default()
            },
        )?;
        let mut state = paxos::RecoveredState::default();
        let n_records = recovered.records.len();
        for (i, r) in recovered.records.iter().enumerate() {
            let rec: Record = bincode::deserialize(r).map_err(|e| StoreError::Decode {
                what: format!("WAL record {i} in {}", cfg.data_dir.display()),
                detail: e.to_string(),
            })?;
            state.apply(rec);
        }
        let snapshot: Option<Snapshot> = match &recovered.snapshot {
            None => None,
            Some(b) => Some(bincode::deserialize(b).map_err(|e| StoreError::Decode {
                what: format!("snapshot in {}", cfg.data_dir.display()),
                detail: e.to_string(),
            })?),
        };
        let mut kv = Kv::new(cfg.dedup_clients);
        if let Some(s) = &snapshot {
            kv = Kv::from_snapshot(&s.data)?;
            state.compact(s.slot);
        }
        tracing::info!(
            records = n_records,
            snapshot_slot = snapshot.as_ref().map(|s| s.slot).unwrap_or(0),
            truncated_bytes = recovered.truncated_bytes,
            promised = %state.promised,
            "recovered from {}",
            cfg.data_dir.display()
        );
        let seed = rand::random::<u64>();
        let node = Node::restore(core_cfg, state, snapshot, seed)
            .map_err(|e| StoreError::Config(e.to_string()))?;

        let (inbound_tx, inbound_rx) = mpsc::channel(8192);
        let transport = Transport::start(
            cfg.id,
            cfg.listen,
            cfg.client.to_string(),
            cfg.peers.iter().map(|(k, v)| (*k, *v)).collect(),
            TransportOptions::default(),
            inbound_tx,
        )
        .await?
        .with_forward_addrs(
            cfg.peer_clients
                .iter()
                .map(|(id, a)| (*id, a.to_string()))
                .collect(),
        );
        let (req_tx, req_rx) = mpsc::channel(cfg.request_queue.max(1));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.forward_timeout_ms))
            .connect_timeout(Duration::from_millis(500))
            .pool_max_idle_per_host(256)
            // Forwarded requests leave from this node's own IP, like peer traffic, so that
            // partitions between 127.0.0.N addresses also cut forwarding.
            .local_address(Some(cfg.listen.ip()))
            .build()
            .map_err(|e| StoreError::Config(format!("http client: {e}")))?;
        let status = node.status();
        let shared = Arc::new(Shared {
            config: cfg.clone(),
            kv: RwLock::new(kv),
            status: Mutex::new(status),
            requests: req_tx,
            transport: transport.clone(),
            metrics: Metrics::default(),
            http,
            _data_dir_lock: data_dir_lock,
        });
        let (wal_tx, wal_rx) = mpsc::channel(4096);
        // Unbounded on purpose: the WAL thread sends at most one message per job it took from
        // the bounded job queue, and a bounded channel here could deadlock with the driver
        // blocked on a full job queue.
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let lazy = cfg
            .has_bug(Bug::AckBeforePersist)
            .then(|| Duration::from_millis(cfg.lazy_flush_ms));
        {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("wal".into())
                .spawn(move || wal_thread(wal, wal_rx, done_tx, lazy, shared))
                .map_err(|e| StoreError::Io {
                    what: "spawn the WAL thread".into(),
                    source: e,
                })?;
        }
        let driver = Driver {
            node,
            shared: shared.clone(),
            wal: wal_tx,
            pending: HashMap::new(),
            pending_reads: HashMap::new(),
            reads_waiting_apply: VecDeque::new(),
            next_id: 1,
            snapshot_in_progress: false,
            wal_bytes_since_compaction: 0,
        };
        tokio::spawn(driver.run(inbound_rx, req_rx, done_rx));
        let router = crate::http::router(shared.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(http_listener, router).await {
                fatal("HTTP server failed", e);
            }
        });
        tracing::info!(id = cfg.id, listen = %cfg.listen, client = %cfg.client, "paxos-kv serving");
        Ok(Server { shared })
    }
}

struct Driver {
    node: Node,
    shared: Arc<Shared>,
    wal: mpsc::Sender<WalJob>,
    pending: HashMap<u64, (oneshot::Sender<ProposeReply>, Instant)>,
    pending_reads: HashMap<u64, (oneshot::Sender<Result<(), Dropped>>, Instant)>,
    /// Confirmed reads waiting for the state machine to reach their slot, in slot order.
    reads_waiting_apply: VecDeque<(u64, oneshot::Sender<Result<(), Dropped>>)>,
    next_id: u64,
    snapshot_in_progress: bool,
    /// WAL bytes appended since the last compaction.
    wal_bytes_since_compaction: u64,
}

/// Inputs drained per wake-up before handling the Ready, so that one Ready (and one fsync)
/// covers many.
const DRAIN_MAX: usize = 1024;

impl Driver {
    async fn run(
        mut self,
        mut inbound: mpsc::Receiver<(u64, Bytes)>,
        mut requests: mpsc::Receiver<Request>,
        mut done: mpsc::UnboundedReceiver<WalDone>,
    ) {
        let mut ticker = tokio::time::interval(Duration::from_millis(self.shared.config.tick_ms));
        // After a pause (SIGSTOP) do not fire a burst of ticks: that would look like a long
        // silence from the leader and start a needless election.
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut ticks: u64 = 0;
        loop {
            tokio::select! {
                biased;
                Some(d) = done.recv() => {
                    self.on_done(d);
                    for _ in 0..DRAIN_MAX {
                        match done.try_recv() { Ok(d) => self.on_done(d), Err(_) => break }
                    }
                }
                _ = ticker.tick() => {
                    self.node.tick();
                    ticks += 1;
                    if ticks.is_multiple_of(50) {
                        self.expire();
                    }
                }
                Some((from, frame)) = inbound.recv() => {
                    self.on_frame(from, &frame);
                    for _ in 0..DRAIN_MAX {
                        match inbound.try_recv() { Ok((f, b)) => self.on_frame(f, &b), Err(_) => break }
                    }
                }
                Some(req) = requests.recv() => {
                    self.on_request(req);
                    for _ in 0..DRAIN_MAX {
                        match requests.try_recv() { Ok(r) => self.on_request(r), Err(_) => break }
                    }
                }
                else => return,
            }
            self.handle_ready().await;
        }
    }

    fn on_done(&mut self, d: WalDone) {
        match d {
            WalDone::Persisted { token, after } => {
                for env in after {
                    self.send(env);
                }
                if let Some(t) = token {
                    self.node.persisted(t);
                }
            }
            WalDone::Compacted { slot, data } => {
                self.snapshot_in_progress = false;
                if let Err(e) = self.node.snapshot_taken(slot, data) {
                    tracing::warn!(slot, error = %e, "core refused the snapshot");
                }
            }
        }
    }

    fn on_frame(&mut self, from: u64, frame: &[u8]) {
        match bincode::deserialize::<Message>(frame) {
            Ok(msg) => {
                if let Err(e) = self.node.step(from, msg) {
                    tracing::warn!(from, error = %e, "message rejected by the core");
                }
            }
            Err(e) => tracing::warn!(from, error = %e, "undecodable message from peer"),
        }
    }

    fn on_request(&mut self, req: Request) {
        let deadline =
            Instant::now() + Duration::from_millis(self.shared.config.request_timeout_ms * 2);
        let id = self.next_id;
        self.next_id += 1;
        match req {
            Request::Propose { cmd, reply } => {
                self.shared.metrics.proposals.fetch_add(1, Relaxed);
                let data = bincode::serialize(&cmd).expect("serialising a command cannot fail");
                self.pending.insert(id, (reply, deadline));
                self.node.propose(id, data);
            }
            Request::Read { reply } => {
                self.pending_reads.insert(id, (reply, deadline));
                self.node.read_index(id);
            }
        }
    }

    /// Forgets waiters whose HTTP request has long timed out (answered 504 already).
    fn expire(&mut self) {
        let now = Instant::now();
        self.pending
            .retain(|_, (tx, d)| *d > now && !tx.is_closed());
        self.pending_reads
            .retain(|_, (tx, d)| *d > now && !tx.is_closed());
    }

    fn send(&self, env: Envelope) {
        let bytes = bincode::serialize(&env.msg).expect("serialising a message cannot fail");
        self.shared.transport.send(env.to, Bytes::from(bytes));
    }

    async fn handle_ready(&mut self) {
        let ready = self.node.ready();
        // 1. Persist (group commit in the WAL thread), then the held-back messages.
        if !ready.persist.is_empty() || ready.persist_token.is_some() {
            let records: Vec<Vec<u8>> = ready.persist.iter().map(encode_record).collect();
            self.wal_bytes_since_compaction +=
                records.iter().map(|r| r.len() as u64 + 8).sum::<u64>();
            let after = ready.messages_after_persist;
            let token = ready.persist_token;
            if self
                .wal
                .send(WalJob::Append {
                    records,
                    token,
                    after,
                })
                .await
                .is_err()
            {
                fatal("WAL thread gone", "channel closed");
            }
        } else {
            for env in ready.messages_after_persist {
                self.send(env);
            }
        }
        // 2. Messages that need no persist.
        for env in ready.messages {
            self.send(env);
        }
        // 3. Snapshot install.
        if let Some(snap) = ready.install_snapshot {
            match Kv::from_snapshot(&snap.data) {
                Ok(mut kv) => {
                    kv.set_applied_index(kv.applied_index().max(snap.slot));
                    *self.shared.kv.write().expect("lock poisoned") = kv;
                    self.shared
                        .metrics
                        .snapshots_installed
                        .fetch_add(1, Relaxed);
                    let snapshot = bincode::serialize(&snap).expect("serialise snapshot");
                    let live = checkpoint_records(&self.node.checkpoint(), snap.slot);
                    self.wal_bytes_since_compaction = 0;
                    if self
                        .wal
                        .send(WalJob::Compact {
                            snapshot,
                            live,
                            slot_taken: None,
                        })
                        .await
                        .is_err()
                    {
                        fatal("WAL thread gone", "channel closed");
                    }
                    tracing::info!(slot = snap.slot, "installed a snapshot from the leader");
                }
                Err(e) => fatal("received an undecodable snapshot", e),
            }
        }
        // 4. Apply.
        if !ready.committed.is_empty() {
            let me = self.shared.config.id;
            let mut answers = Vec::new();
            {
                let mut kv = self.shared.kv.write().expect("lock poisoned");
                for entry in &ready.committed {
                    if entry.slot <= kv.applied_index() {
                        continue; // covered by an installed snapshot
                    }
                    if let paxos::Value::Batch(cmds) = &entry.value {
                        for c in cmds {
                            let outcome = match bincode::deserialize::<kv::Command>(&c.data) {
                                Ok(cmd) => kv.apply(&cmd),
                                // Every replica sees the same bytes, so every replica skips
                                // the same command: the state stays identical.
                                Err(e) => {
                                    tracing::error!(slot = entry.slot, error = %e, "undecodable command in the log; skipped");
                                    continue;
                                }
                            };
                            self.shared.metrics.applied_commands.fetch_add(1, Relaxed);
                            if c.origin == me {
                                answers.push((c.id, outcome));
                            }
                        }
                    }
                    kv.set_applied_index(entry.slot);
                    self.shared.metrics.applied_slots.fetch_add(1, Relaxed);
                }
            }
            for (id, outcome) in answers {
                if let Some((tx, _)) = self.pending.remove(&id) {
                    let _ = tx.send(ProposeReply::Applied(outcome));
                }
            }
        }
        // 5. Reads.
        for r in ready.reads {
            if let Some((tx, _)) = self.pending_reads.remove(&r.id) {
                self.shared.metrics.reads_confirmed.fetch_add(1, Relaxed);
                self.reads_waiting_apply.push_back((r.slot, tx));
            }
        }
        if !self.reads_waiting_apply.is_empty() {
            let applied = self
                .shared
                .kv
                .read()
                .expect("lock poisoned")
                .applied_index();
            // Slots of confirmed reads are not necessarily sorted; scan all (bounded by the
            // core's max_pending_reads).
            let waiting = std::mem::take(&mut self.reads_waiting_apply);
            for (slot, tx) in waiting {
                if slot <= applied {
                    let _ = tx.send(Ok(()));
                } else {
                    self.reads_waiting_apply.push_back((slot, tx));
                }
            }
        }
        // 6. Rejections.
        for (id, why) in ready.rejected {
            self.shared.metrics.rejected.fetch_add(1, Relaxed);
            if !why.certainly_not_applied() {
                self.shared.metrics.rejected_unknown.fetch_add(1, Relaxed);
            }
            if let Some((tx, _)) = self.pending.remove(&id) {
                let _ = tx.send(ProposeReply::Dropped(why));
            }
        }
        for (id, why) in ready.rejected_reads {
            if let Some((tx, _)) = self.pending_reads.remove(&id) {
                let _ = tx.send(Err(why));
            }
        }
        // 7. Snapshots: when the core asks, or when the WAL has grown large (many big
        // batches can make it long in bytes well before it is long in entries).
        let wal_full = self.wal_bytes_since_compaction >= self.shared.config.wal_compact_bytes;
        if let Some(due) = ready.snapshot_due.or(wal_full.then_some(0)) {
            if !self.snapshot_in_progress {
                let (slot, data) = {
                    let kv = self.shared.kv.read().expect("lock poisoned");
                    (kv.applied_index(), kv.to_snapshot())
                };
                if slot >= due {
                    self.snapshot_in_progress = true;
                    let snapshot = bincode::serialize(&Snapshot {
                        slot,
                        data: data.clone(),
                    })
                    .expect("serialise snapshot");
                    let live = checkpoint_records(&self.node.checkpoint(), slot);
                    self.wal_bytes_since_compaction = 0;
                    if self
                        .wal
                        .send(WalJob::Compact {
                            snapshot,
                            live,
                            slot_taken: Some((slot, data)),
                        })
                        .await
                        .is_err()
                    {
                        fatal("WAL thread gone", "channel closed");
                    }
                }
            }
        }
        let new = self.node.status();
        let mut status = self.shared.status.lock().expect("lock poisoned");
        if (status.role, status.leader, status.ballot) != (new.role, new.leader, new.ballot) {
            // Leadership changes are what an operator looks for first in a node's log.
            tracing::info!(
                role = new.role.as_str(),
                leader = ?new.leader,
                ballot = %new.ballot,
                commit_index = new.commit_index,
                "role or leader changed"
            );
        }
        *status = new;
    }
}
