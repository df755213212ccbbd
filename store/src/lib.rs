//! paxos-kv: a multi-Paxos replicated key-value store, the system under test.
//!
//! Modules: `kv` (the state machine), `wal` (write-ahead log and its group-commit thread),
//! `transport` (peer TCP), `server` (config, recovery and the driver task), `http` (the client
//! API: parsing and forwarding), `metrics`, `codec` (every encoding), and `paxos` (the pure
//! consensus core).

pub mod codec;
pub mod http;
pub mod kv;
pub mod metrics;
pub mod paxos;
pub mod server;
pub mod shard;
pub mod transport;
pub mod wal;

/// Errors of the store library.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The consensus core refused an input (a bad config, an unknown bug name, ...).
    #[error(transparent)]
    Paxos(#[from] paxos::PaxosError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot bind {what} {addr}: {source}")]
    Bind {
        what: String,
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot decode {what}: {detail}")]
    Decode { what: String, detail: String },
    #[error("{what} is corrupt: {detail}")]
    Corrupt { what: String, detail: String },
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The sharded core refused an input (a bad snapshot, an unknown name, ...).
    #[error(transparent)]
    Shard(#[from] shard::ShardError),
}
