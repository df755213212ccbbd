//! The server: a tokio task (the driver) owning the Paxos core, a WAL thread doing group
//! commit, the peer transport and the HTTP API.
//!
//! Data flow: HTTP handlers send `Request`s over a bounded channel to the driver, which
//! proposes each command to the core (the core batches many commands per slot), and answers
//! the handler's oneshot when the command is applied (or dropped). The driver hands each
//! Ready's records to the WAL thread, which appends the records of every Ready queued so far
//! and covers them with one fsync, then hands back the highest persist token and the messages
//! that had to wait for it.

pub mod config;
pub(crate) mod driver;
pub(crate) mod recovery;
pub mod sharded;

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

use crate::kv::{self, Kv, Outcome};
use crate::metrics::Metrics;
use crate::paxos::{self, Bug, Dropped, Node};
use crate::transport::{Transport, TransportOptions};
use crate::wal::committer::wal_thread;
use crate::StoreError;
use config::core_config;
pub use config::ServerConfig;
use driver::Driver;

/// A client request to the driver.
pub enum Request {
    Propose {
        cmd: kv::Command,
        reply: oneshot::Sender<ProposeReply>,
    },
    Read {
        reply: oneshot::Sender<Result<(), Dropped>>,
    },
    /// Sharded mode: a controller command (encoded), answered with the config it yields.
    ShardPropose {
        data: Vec<u8>,
        reply: oneshot::Sender<ProposeReply>,
    },
    /// Sharded mode: a message for the group core (from a client, a group or the
    /// controller); a client's reply goes to the waiter it registered
    /// ([`sharded::ShardNode::wait_for`]).
    ShardMsg {
        from: crate::shard::group::Addr,
        msg: crate::shard::group::Msg,
    },
}

#[derive(Debug)]
pub enum ProposeReply {
    Applied(Outcome),
    Dropped(Dropped),
    /// A controller command's answer: the config, or why nothing changed.
    Config(Result<crate::shard::config::Config, String>),
}

/// State shared between the driver and the HTTP handlers.
pub struct Shared {
    pub config: ServerConfig,
    pub kv: RwLock<Kv>,
    pub status: Mutex<paxos::Status>,
    pub requests: mpsc::Sender<Request>,
    pub transport: Transport,
    pub metrics: Metrics,
    /// Forwards client requests to the leader.
    pub http: crate::http::forward::ForwardClient,
    /// Client connections open now (the HTTP accept loop counts them).
    pub http_connections: std::sync::atomic::AtomicUsize,
    /// Sharded mode's state machine and waiters; None in the single-group mode.
    pub shard: Option<sharded::ShardNode>,
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

pub(crate) fn fatal(what: &str, e: impl std::fmt::Display) -> ! {
    // A node that cannot write its WAL must stop rather than answer from undurable state.
    tracing::error!(error = %e, "{what}; stopping");
    std::process::exit(70);
}

/// A running server.
pub struct Server {
    pub shared: Arc<Shared>,
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
        let recovery::Recovered {
            wal,
            state,
            snapshot,
            kv,
            shard_machine,
        } = recovery::recover(&cfg)?;
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
            cfg.peer_trust(),
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
        let http = crate::http::forward::client(&cfg);
        let status = node.status();
        let (shard, outbound_rx) = match (&cfg.sharding, shard_machine) {
            (Some(settings), Some(machine)) => {
                let (n, rx) = sharded::ShardNode::new(settings.clone(), machine);
                (Some(n), Some(rx))
            }
            _ => (None, None),
        };
        let shared = Arc::new(Shared {
            config: cfg.clone(),
            kv: RwLock::new(kv),
            status: Mutex::new(status),
            requests: req_tx,
            transport: transport.clone(),
            metrics: Metrics::default(),
            http,
            http_connections: std::sync::atomic::AtomicUsize::new(0),
            shard,
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
        let driver = Driver::new(node, shared.clone(), wal_tx);
        tokio::spawn(driver.run(inbound_rx, req_rx, done_rx));
        if let Some(rx) = outbound_rx {
            tokio::spawn(sharded::outbound(shared.clone(), rx));
        }
        tokio::spawn(crate::http::serve::serve(http_listener, shared.clone()));
        tracing::info!(id = cfg.id, listen = %cfg.listen, client = %cfg.client, "paxos-kv serving");
        Ok(Server { shared })
    }
}
