//! The sharded store's pure core: the shard controller, replica groups with shard migration,
//! and cross-shard transactions by two-phase commit with strict two-phase locking or OCC.
//! Like [`crate::paxos`], everything here is a deterministic state machine: no I/O, no clock,
//! no thread RNG. The server (a later step) and [`sim`] drive it.
//!
//! # Pieces
//!
//! - [`config`]: numbered configurations (shard -> group, group -> members) and the
//!   [`config::Controller`], whose commands (join, leave, move, query) are applied in the order
//!   of the controller group's Paxos log. Rebalancing on join and leave is deterministic and
//!   moves as few shards as possible.
//! - [`group`]: one replica group. [`group::Group::step`] takes an [`group::Input`] (a tick, a
//!   message, or a command applied from the group's own log) and returns [`group::Output`]s
//!   (messages to send, commands to propose to the group's log, observations). Everything that
//!   must survive a crash is a function of the applied log; the rest (lock table, coordinator
//!   progress, timers) is volatile and rebuilt or abandoned on recovery.
//! - [`lock`]: the lock table of strict 2PL (shared and exclusive, upgrades).
//! - [`sim`]: a deterministic simulator of a controller, several groups and clients.
//!
//! # Keys and shards
//!
//! A key belongs to shard `fnv1a64(key bytes) % shards` ([`shard_of`]); FNV-1a (64-bit, the
//! standard offset basis and prime) is stable across platforms, Rust versions and processes,
//! unlike `std`'s `DefaultHasher`. The number of shards is fixed for the life of a cluster
//! ([`DEFAULT_SHARDS`] unless configured).
//!
//! # Versions and revisions
//!
//! Each key carries its own version (how many transactions wrote it), which moves with its
//! shard; `if_revision` compares against it and reads report it. This is not the single-group
//! store's global revision (a log counter), which cannot survive a move between logs.
//!
//! # For the server (not built yet)
//!
//! - Run [`group::Group`] at every replica of a group: `Apply` on every replica in log order,
//!   `Tick` and `Message` only at the leader, and [`group::Group::become_leader`] when a
//!   replica becomes leader. Outputs of `Apply` at followers are dropped.
//! - Reads during 2PC execution (`Msg::Read`) are answered from the leader's applied state:
//!   the leader must have applied everything committed before it answers (a ReadIndex round
//!   as in [`crate::paxos`]), or a deposed leader could answer stale values.
//! - A client must retry a cross-group transaction at the group it first sent it to (the
//!   coordinator, whose log answers retries); sending the same id to another group could run
//!   two coordinators for one transaction. Single-group transactions may be retried anywhere
//!   (the shard's exactly-once table moves with it).
//! - HTTP `client_id` strings must be mapped to [`ClientId`] numbers.

pub mod config;
pub mod dedup;
pub mod finished;
pub mod group;
pub mod lock;
pub mod sim;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

pub use crate::kv::Value;

/// Number of shards unless a cluster is created with another count.
pub const DEFAULT_SHARDS: usize = 16;

/// A replica group's id. Group 0 means "no group" (a shard nobody owns yet).
pub type GroupId = u64;
/// A shard number, `0..shards`.
pub type ShardId = usize;
/// A client's id (the HTTP `client_id`, mapped to a number by the server).
pub type ClientId = u64;
/// A configuration number; config 0 is the initial one, where no shard has an owner.
pub type ConfigNum = u64;

/// The group id meaning "unowned".
pub const NO_GROUP: GroupId = 0;

/// Client ids with this bit set are anonymous (a request without `client_id`): their
/// transactions are not recorded in any exactly-once table, so requests without an identity
/// cannot grow the tables without bound. Named clients never have it ([`client_number`]).
pub const ANONYMOUS_CLIENT_BIT: ClientId = 1 << 63;

/// The number of an HTTP `client_id`: FNV-1a 64 of its bytes with the anonymous bit cleared.
/// Two distinct ids share a number with probability about n^2 / 2^64 for n clients; two such
/// clients would share one exactly-once entry (one's retry could be answered with the other's
/// reply), which the server accepts at these odds.
pub fn client_number(client_id: &str) -> ClientId {
    fnv1a64(client_id.as_bytes()) & !ANONYMOUS_CLIENT_BIT
}

/// Whether `client`'s transactions are recorded in exactly-once tables.
pub fn is_anonymous(client: ClientId) -> bool {
    client & ANONYMOUS_CLIENT_BIT != 0
}

/// FNV-1a, 64 bit.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The shard that holds `key` when there are `shards` shards (`shards` must be positive).
pub fn shard_of(key: &str, shards: usize) -> ShardId {
    (fnv1a64(key.as_bytes()) % shards.max(1) as u64) as ShardId
}

/// A transaction's identity, also its exactly-once key: a client runs one transaction at a
/// time with increasing `seq`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct TxnId {
    pub client: ClientId,
    pub seq: u64,
}

impl fmt::Display for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}s{}", self.client, self.seq)
    }
}

/// A transaction's age for wound-wait: smaller is older. Ties cannot happen because the
/// txn id is part of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Age {
    /// When the client first issued it (its logical clock).
    pub start: u64,
    pub txn: TxnId,
}

/// One micro-op of a transaction, as `POST /txn` has them plus compares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOp {
    /// `["r", k, null]`
    Read(String),
    /// `["w", k, v]`
    Write(String, String),
    /// `["append", k, v]`
    Append(String, String),
    /// `["if_revision", k, n]`: the transaction applies only if `k`'s revision is `n` when it
    /// commits (0 = absent); otherwise nothing is applied and the reply is
    /// [`TxnReply::CompareFailed`] (HTTP 409).
    IfRevision(String, u64),
    /// `PUT`/`DELETE ?if_value=v`: applies only if `k` holds the string `v` when it commits;
    /// otherwise [`TxnReply::CompareFailed`] with the key's revision (HTTP 409). Not offered
    /// in `POST /txn` (as in the single-group store).
    IfValue(String, String),
    /// `DELETE /kv/k`: the key becomes absent; its version still grows (a tombstone keeps
    /// it), so that versions are never reused and `if_revision` cannot be fooled by a key
    /// deleted and written again.
    Delete(String),
}

impl TxnOp {
    pub fn key(&self) -> &str {
        match self {
            TxnOp::Read(k)
            | TxnOp::Write(k, _)
            | TxnOp::Append(k, _)
            | TxnOp::IfRevision(k, _)
            | TxnOp::IfValue(k, _)
            | TxnOp::Delete(k) => k,
        }
    }

    /// Reads the key's state before the transaction (a read or a compare).
    pub fn reads(&self) -> bool {
        matches!(
            self,
            TxnOp::Read(_) | TxnOp::IfRevision(..) | TxnOp::IfValue(..)
        )
    }

    pub fn writes(&self) -> bool {
        matches!(
            self,
            TxnOp::Write(..) | TxnOp::Append(..) | TxnOp::Delete(_)
        )
    }

    /// Parses `["r", k, null]`, `["w", k, v]`, `["append", k, v]` or `["if_revision", k, n]`.
    pub fn from_json(v: &serde_json::Value) -> Result<TxnOp, ShardError> {
        let bad = |what: &str| ShardError::BadOp {
            op: v.to_string(),
            what: what.to_string(),
        };
        let arr = v.as_array().ok_or_else(|| bad("not a list"))?;
        if arr.len() != 3 {
            return Err(bad("not [f, key, value]"));
        }
        let f = arr[0].as_str().ok_or_else(|| bad("f is not a string"))?;
        let key = arr[1]
            .as_str()
            .ok_or_else(|| bad("key is not a string"))?
            .to_string();
        let string_arg = || {
            arr[2]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| bad("value is not a string"))
        };
        match f {
            "r" => Ok(TxnOp::Read(key)),
            "w" => Ok(TxnOp::Write(key, string_arg()?)),
            "append" => Ok(TxnOp::Append(key, string_arg()?)),
            "if_revision" => {
                let n = arr[2]
                    .as_u64()
                    .ok_or_else(|| bad("revision is not a non-negative integer"))?;
                Ok(TxnOp::IfRevision(key, n))
            }
            _ => Err(bad("unknown f (known: r, w, append, if_revision)")),
        }
    }
}

/// A key's state as a transaction saw it before its own writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    pub value: Option<Value>,
    /// The key's revision: how many transactions have written it (0 = never). It travels
    /// with the key when its shard moves, so it is the key's version order.
    pub version: u64,
}

/// The result of one micro-op.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    /// The value read (with this transaction's own earlier writes applied) and the key's
    /// version before the transaction.
    Read {
        key: String,
        value: Option<Value>,
        version: u64,
    },
    Write {
        key: String,
        value: String,
    },
    Append {
        key: String,
        value: String,
    },
    IfRevision {
        key: String,
        revision: u64,
    },
    Delete {
        key: String,
    },
}

impl OpResult {
    /// The history form: `["r", k, v]`, `["w", k, v]`, `["append", k, v]`, `["if_revision", k, n]`.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            OpResult::Read { key, value, .. } => json!([
                "r",
                key,
                value
                    .as_ref()
                    .map(Value::to_json)
                    .unwrap_or(serde_json::Value::Null)
            ]),
            OpResult::Write { key, value } => json!(["w", key, value]),
            OpResult::Append { key, value } => json!(["append", key, value]),
            OpResult::IfRevision { key, revision } => json!(["if_revision", key, revision]),
            OpResult::Delete { key } => json!(["delete", key, null]),
        }
    }
}

/// Why a transaction was aborted. Every abort is definite (nothing of it was applied) except
/// `Stale` and `Evicted`, which answer a request that may repeat an applied transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AbortReason {
    /// Lost a lock conflict (wound-wait: wounded by an older transaction; no-wait: met a held
    /// lock).
    LockConflict,
    /// OCC validation failed at prepare.
    ValidationFailed,
    /// A participant voted no or did not vote in time.
    ParticipantRefused,
    /// The coordinator recovered from a crash without a logged decision and aborted it.
    CoordinatorRecovered,
    /// A group does not serve a shard of the transaction (yet, or any more).
    NotServing,
    /// The group is recovering (its new epoch is not yet in its log) or migrating.
    NotReady,
    /// A retry of a transaction older than the client's latest one here.
    Stale,
    /// Too many transactions waiting.
    Overloaded,
    /// The client's exactly-once entry in a shard was evicted (the per-shard byte bound) and
    /// this seq is at or below the eviction floor: it may be a retry of a transaction that
    /// was applied, so it is not run. Not definite: the outcome is unknown (HTTP 504).
    Evicted { floor: u64 },
}

/// The answer to a client's transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnReply {
    /// Applied atomically.
    Committed { results: Vec<OpResult> },
    /// An `if_revision` did not hold; nothing applied (HTTP 409).
    CompareFailed { key: String, revision: u64 },
    /// Nothing applied (HTTP 503: safe to retry as a new transaction).
    Aborted { reason: AbortReason },
    /// This group does not own `shard`; `owner` is the owner in the newest config this group
    /// has applied (`config`). Definite: nothing applied (HTTP 503 naming the owner).
    WrongGroup {
        shard: ShardId,
        owner: GroupId,
        config: ConfigNum,
    },
}

impl TxnReply {
    /// True unless the reply says the transaction was applied.
    pub fn is_definite_failure(&self) -> bool {
        !matches!(self, TxnReply::Committed { .. })
    }
}

/// A client's transaction request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnRequest {
    pub id: TxnId,
    pub age: Age,
    pub ops: Vec<TxnOp>,
}

/// Concurrency control of cross-shard (and single-shard) transactions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Cc {
    /// Strict two-phase locking: shared locks for reads taken while executing, exclusive locks
    /// for writes taken at prepare, all held until the decision is applied.
    #[default]
    TwoPl,
    /// Optimistic: reads record versions; at prepare, backward validation against committed
    /// versions and against transactions prepared here (as Thor).
    Occ,
}

impl Cc {
    pub const ALL: [Cc; 2] = [Cc::TwoPl, Cc::Occ];

    /// The `--cc` name.
    pub fn name(&self) -> &'static str {
        match self {
            Cc::TwoPl => "2pl",
            Cc::Occ => "occ",
        }
    }
}

impl fmt::Display for Cc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Cc {
    type Err = ShardError;
    fn from_str(s: &str) -> Result<Cc, ShardError> {
        Cc::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| ShardError::UnknownName {
                what: "concurrency control",
                name: s.to_string(),
                known: "2pl, occ".to_string(),
            })
    }
}

/// How 2PL avoids deadlock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Deadlock {
    /// An older transaction wounds (aborts) a younger holder that has not prepared; a younger
    /// one waits for an older holder.
    #[default]
    WoundWait,
    /// A transaction that meets a held conflicting lock aborts at once.
    NoWait,
}

impl Deadlock {
    pub const ALL: [Deadlock; 2] = [Deadlock::WoundWait, Deadlock::NoWait];

    pub fn name(&self) -> &'static str {
        match self {
            Deadlock::WoundWait => "wound-wait",
            Deadlock::NoWait => "no-wait",
        }
    }
}

impl FromStr for Deadlock {
    type Err = ShardError;
    fn from_str(s: &str) -> Result<Deadlock, ShardError> {
        Deadlock::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| ShardError::UnknownName {
                what: "deadlock policy",
                name: s.to_string(),
                known: "wound-wait, no-wait".to_string(),
            })
    }
}

/// Planted bugs of the sharded store (off by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ShardBug {
    /// 2PL releases a participant's shared (read) locks when it prepares instead of when the
    /// decision is applied. Imitates "releasing read locks after the local lock point" in a
    /// distributed transaction, whose lock point is global: another participant may still be
    /// acquiring locks, so a writer can slip in between (write skew, G2-item / G-single).
    EarlyLockRelease,
    /// OCC validation at prepare checks the write set only (write-write conflicts with
    /// prepared transactions) and never checks that the versions read are still current.
    /// Imitates validating "what I overwrite" but not "what I based it on": lost updates.
    OccSkipReadValidation,
    /// The coordinator commits when a participant's vote times out ("no news is good news").
    /// Imitates presumed commit without the participant logging its vote first: a participant
    /// that never prepared drops its writes (lost write, or G1a for readers of the others).
    PresumedCommit,
    /// After a shard moves away, the losing group keeps answering single-group reads of it
    /// from its frozen copy for a while (the last [`STALE_WINDOW_ENTRIES`] log entries).
    /// Imitates a lease or cache of ownership that outlives the move: stale reads.
    MigrationServesStale,
}

/// How long (in applied log entries) [`ShardBug::MigrationServesStale`] keeps serving reads.
pub const STALE_WINDOW_ENTRIES: u64 = 60;

impl ShardBug {
    pub const ALL: [ShardBug; 4] = [
        ShardBug::EarlyLockRelease,
        ShardBug::OccSkipReadValidation,
        ShardBug::PresumedCommit,
        ShardBug::MigrationServesStale,
    ];

    /// The `--bug` name.
    pub fn name(&self) -> &'static str {
        match self {
            ShardBug::EarlyLockRelease => "early-lock-release",
            ShardBug::OccSkipReadValidation => "occ-skip-read-validation",
            ShardBug::PresumedCommit => "presumed-commit",
            ShardBug::MigrationServesStale => "migration-serves-stale",
        }
    }

    /// The anomaly a checker should report.
    pub fn anomaly(&self) -> &'static str {
        match self {
            ShardBug::EarlyLockRelease => "G2-item / G-single (a cycle with anti-dependencies)",
            ShardBug::OccSkipReadValidation => "lost update (G-single)",
            ShardBug::PresumedCommit => "lost write / G1a (a transaction half applied)",
            ShardBug::MigrationServesStale => "stale read (not linearizable)",
        }
    }

    /// The concurrency control a bug needs to show (None: any).
    pub fn needs_cc(&self) -> Option<Cc> {
        match self {
            ShardBug::EarlyLockRelease => Some(Cc::TwoPl),
            ShardBug::OccSkipReadValidation => Some(Cc::Occ),
            _ => None,
        }
    }
}

impl fmt::Display for ShardBug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ShardBug {
    type Err = ShardError;
    fn from_str(s: &str) -> Result<ShardBug, ShardError> {
        ShardBug::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| ShardError::UnknownName {
                what: "shard bug",
                name: s.to_string(),
                known: ShardBug::ALL
                    .iter()
                    .map(|b| b.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// Errors of the sharded core (bad input, never programmer error).
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("unknown {what} '{name}' (known: {known})")]
    UnknownName {
        what: &'static str,
        name: String,
        known: String,
    },
    #[error("bad txn op {op}: {what}")]
    BadOp { op: String, what: String },
    #[error("shard controller: {0}")]
    Controller(String),
    #[error("cannot decode {what}: {detail}")]
    Decode { what: String, detail: String },
}
