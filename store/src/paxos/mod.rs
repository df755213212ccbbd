//! The multi-Paxos consensus core of paxos-kv: a pure state machine (no I/O, no clock, no
//! thread RNG), driven by the tokio server in production and by [`sim`] in tests.
//!
//! # Driving a [`Node`]
//!
//! Inputs (each returns at once; outputs accumulate inside the node):
//! - [`Node::tick`]: one logical tick (the server calls it every `tick_ms`, e.g. 10 ms).
//! - [`Node::step`]`(from, Message)`: a message received from peer `from`.
//! - [`Node::propose`]`(ProposalId, Vec<u8>)`: a client command (opaque bytes).
//! - [`Node::read_index`]`(ReadId)`: a linearizable read (ReadIndex: a quorum round confirms
//!   leadership, then [`Ready::reads`] says which slot must be applied before answering).
//! - [`Node::persisted`]`(PersistToken)`: every record of every [`Ready`] up to and including
//!   this token is durable (fsynced). Tokens increase; one call covers all earlier ones.
//! - [`Node::snapshot_taken`]`(slot, bytes)`: the state machine has a durable snapshot covering
//!   every slot `<= slot`; the core compacts its log behind it and sends it to far-behind peers.
//!
//! Outputs: [`Node::ready`] takes a [`Ready`]. The driver must handle its fields in this order:
//! 1. `persist`: append the records to the WAL, in order, after all records of earlier Readys.
//!    `persist_token` names them (it is `Some` whenever `persist` or `messages_after_persist`
//!    is non-empty, and sometimes with both empty: the node's own replies wait on it too, so
//!    report it all the same). Once everything up to the token is fsynced: send
//!    `messages_after_persist`, then call [`Node::persisted`]. Never send those messages earlier
//!    (a promise or accept reply sent before its record is durable breaks Paxos after a crash).
//! 2. `messages`: may be sent immediately (best effort; the core retransmits what matters).
//! 3. `install_snapshot`: if `Some`, replace the state machine with these bytes (and store
//!    the snapshot durably) before applying `committed`.
//! 4. `committed`: apply in order; slots are consecutive and strictly increasing across Readys.
//!    A [`Value::Batch`] holds commands in the order to apply; [`Value::Noop`] changes nothing.
//!    A command whose `origin` is this node carries the [`ProposalId`] it was proposed under,
//!    so the server can answer the waiting client after applying it.
//! 5. `reads`: answer read `id` once the state machine has applied every slot `<= slot`.
//! 6. `rejected` / `rejected_reads`: [`Dropped::certainly_not_applied`] → HTTP 503 (retry,
//!    possibly at `leader`), otherwise (`Dropped::Unknown`, leadership lost after the command
//!    was sent in an accept) → 504, unless the command shows up in `committed` later anyway.
//! 7. `snapshot_due`: the log since the last snapshot is long; take a snapshot of the state
//!    machine at (at least) this slot and call [`Node::snapshot_taken`].
//!
//! Recovery after a crash: fold every WAL record into a [`RecoveredState`] with
//! [`RecoveredState::apply`], load the newest durable snapshot, and call [`Node::restore`].
//! The node then re-emits in `committed` every chosen entry after the snapshot slot. To
//! rewrite a WAL behind a snapshot, write [`Node::checkpoint`] as the new WAL's first records.
//!
//! Messages and records derive serde; the transport and WAL pick the codec.
//!
//! # Simulation
//!
//! [`sim`] runs a seeded cluster with message loss, duplication, reordering, short and long
//! delays, crashes that keep only fsynced records, restarts and partitions, and checks after
//! every step: agreement per slot, validity (every applied command was proposed, in one slot
//! only), linearizable ReadIndex reads against a register model, in-order application, and
//! progress within a bound once healed. `store/tests/simulation.rs` runs
//! `ORDEAL_SIM_SEEDS` seeds (default 1000) per cluster size (3 and 5; `make sim`: 20000), and
//! shows that each planted core bug is found; `ORDEAL_SIM_SEED=N` replays one seed.
//!
//! # Protocol
//!
//! Ballots are `(round, node)`. A follower that misses heartbeats for a randomised election
//! timeout first asks every peer whether they, too, have lost the leader (pre-vote); only with a
//! majority of "yes" does it bump its ballot and run phase 1 for all slots from its first
//! unchosen slot. So a node returning from a partition cannot depose a healthy leader. The new
//! leader adopts the highest-ballot accepted value of each slot reported in the promises, fills
//! gaps with no-ops, and runs phase 2 per slot with up to `max_in_flight_slots` slots in flight,
//! each a batch of up to `max_batch_commands` commands. Followers learn chosen slots from the
//! commit index on accepts and heartbeats, and fetch missing ones from the leader (or receive
//! the leader's snapshot when they are behind its compacted log).

mod error;
mod node;
pub mod sim;

pub use error::PaxosError;
pub use node::Node;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// A replica's id (the `--id` of the process). Ids are positive.
pub type NodeId = u64;
/// A log position. Slot 0 is never used: the first command goes in slot 1.
pub type Slot = u64;
/// The highest ballot round accepted from anyone (ourselves included). Far beyond any honest
/// cluster (one round per election), and far enough below `u64::MAX` that every `round + 1`
/// is exact and a ballot at the limit can still be exceeded for as long as the cluster lives.
pub const ROUND_MAX: u64 = u64::MAX / 2;
/// The highest slot (or commit index) accepted from a peer; `slot + 1` never overflows.
pub const SLOT_MAX: Slot = u64::MAX / 2;

impl Message {
    /// The first round or slot this message carries that is over `ROUND_MAX` / `SLOT_MAX`,
    /// as (what, value, max).
    pub fn out_of_range(&self) -> Option<(&'static str, u64, u64)> {
        let round =
            |b: &Ballot| (b.round > ROUND_MAX).then_some(("ballot round", b.round, ROUND_MAX));
        let slot = |what: &'static str, s: Slot| (s > SLOT_MAX).then_some((what, s, SLOT_MAX));
        match self {
            Message::PreVote { round: r, commit } => (*r > ROUND_MAX)
                .then_some(("pre-vote round", *r, ROUND_MAX))
                .or_else(|| slot("commit", *commit)),
            Message::PreVoteReply { round: r, .. } => {
                (*r > ROUND_MAX).then_some(("pre-vote round", *r, ROUND_MAX))
            }
            Message::Prepare { ballot, from_slot } => {
                round(ballot).or_else(|| slot("from_slot", *from_slot))
            }
            Message::Promise {
                ballot,
                entries,
                commit,
                snapshot_slot,
            } => round(ballot)
                .or_else(|| slot("commit", *commit))
                .or_else(|| slot("snapshot_slot", *snapshot_slot))
                .or_else(|| {
                    entries
                        .iter()
                        .find_map(|e| round(&e.ballot).or_else(|| slot("slot", e.slot)))
                }),
            Message::Nack { promised } => round(promised),
            Message::Accept {
                ballot,
                entries,
                commit,
            } => round(ballot)
                .or_else(|| slot("commit", *commit))
                .or_else(|| entries.iter().find_map(|e| slot("slot", e.slot))),
            Message::Accepted { ballot, slots } => {
                round(ballot).or_else(|| slots.iter().find_map(|s| slot("slot", *s)))
            }
            Message::Heartbeat { ballot, commit, .. }
            | Message::HeartbeatReply { ballot, commit, .. } => {
                round(ballot).or_else(|| slot("commit", *commit))
            }
            Message::CatchUpRequest { from_slot } => slot("from_slot", *from_slot),
            Message::CatchUpReply { entries } => entries.iter().find_map(|e| slot("slot", e.slot)),
            Message::InstallSnapshot { slot: s, .. } => slot("slot", *s),
        }
    }
}
/// The server's id for a proposal, unique per node (a counter).
pub type ProposalId = u64;
/// The server's id for a linearizable read, unique per node.
pub type ReadId = u64;
/// Names the records of one [`Ready`]; increases with every Ready that has some.
pub type PersistToken = u64;

/// A Paxos ballot; ordered by round, then node.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Ballot {
    pub round: u64,
    pub node: NodeId,
}

impl fmt::Display for Ballot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.round, self.node)
    }
}

/// One client command inside a slot's batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The node the client proposed it at.
    pub origin: NodeId,
    /// The proposal id at `origin`.
    pub id: ProposalId,
    /// Opaque bytes for the state machine.
    pub data: Vec<u8>,
}

/// The value of one slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    /// Fills a gap left by a failed leader; applies nothing.
    Noop,
    /// Commands to apply in order.
    Batch(Vec<Command>),
}

impl Value {
    /// Approximate encoded size, for message and batch bounds.
    pub fn size_bytes(&self) -> usize {
        match self {
            Value::Noop => 1,
            Value::Batch(cmds) => cmds.iter().map(|c| c.data.len() + 24).sum::<usize>() + 8,
        }
    }
}

/// A chosen log entry, to apply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub slot: Slot,
    pub value: Value,
}

/// What an acceptor reports for one slot in a phase-1 reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromiseEntry {
    pub slot: Slot,
    /// The ballot it accepted `value` under (ignored when `chosen`).
    pub ballot: Ballot,
    pub value: Value,
    /// The acceptor knows this value is chosen.
    pub chosen: bool,
}

/// Peer-to-peer messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// "Have you lost the leader too? May I run phase 1 with a round above `round`?"
    PreVote {
        round: u64,
        commit: Slot,
    },
    PreVoteReply {
        round: u64,
        granted: bool,
    },
    /// Phase 1a for every slot from `from_slot` on.
    Prepare {
        ballot: Ballot,
        from_slot: Slot,
    },
    /// Phase 1b. Chosen entries are capped at `max_catchup_entries`; `commit` lets the new
    /// leader see whether it must catch up before leading.
    Promise {
        ballot: Ballot,
        entries: Vec<PromiseEntry>,
        commit: Slot,
        snapshot_slot: Slot,
    },
    /// The sender has promised `promised`, higher than the ballot of the request it refuses.
    Nack {
        promised: Ballot,
    },
    /// Phase 2a for several slots; `commit` is the leader's commit index.
    Accept {
        ballot: Ballot,
        entries: Vec<Entry>,
        commit: Slot,
    },
    /// Phase 2b.
    Accepted {
        ballot: Ballot,
        slots: Vec<Slot>,
    },
    /// Leadership and commit index; `seq` numbers read-confirmation rounds.
    Heartbeat {
        ballot: Ballot,
        seq: u64,
        commit: Slot,
    },
    HeartbeatReply {
        ballot: Ballot,
        seq: u64,
        commit: Slot,
    },
    /// "Send me chosen entries from `from_slot` on."
    CatchUpRequest {
        from_slot: Slot,
    },
    CatchUpReply {
        entries: Vec<Entry>,
    },
    /// The sender's state machine snapshot covering slots `<= slot`.
    InstallSnapshot {
        slot: Slot,
        data: Vec<u8>,
    },
}

/// A message and its destination.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub to: NodeId,
    pub msg: Message,
}

/// A WAL record. Fold them in order with [`RecoveredState::apply`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// The acceptor promised this ballot.
    Promise(Ballot),
    /// The acceptor accepted `value` for `slot` under `ballot` (implies promising `ballot`).
    Accepted {
        slot: Slot,
        ballot: Ballot,
        value: Value,
    },
    /// `value` is chosen for `slot`.
    Chosen { slot: Slot, value: Value },
}

/// The durable state of a node, rebuilt from its WAL.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveredState {
    pub promised: Ballot,
    /// Highest-ballot accepted value per slot.
    pub accepted: BTreeMap<Slot, (Ballot, Value)>,
    pub chosen: BTreeMap<Slot, Value>,
}

impl RecoveredState {
    /// Folds one WAL record in. Idempotent and order-tolerant for duplicates: promises and
    /// accepted ballots only go up.
    pub fn apply(&mut self, record: Record) {
        match record {
            Record::Promise(b) => self.promised = self.promised.max(b),
            Record::Accepted {
                slot,
                ballot,
                value,
            } => {
                self.promised = self.promised.max(ballot);
                match self.accepted.get(&slot) {
                    Some((b, _)) if *b > ballot => {}
                    _ => {
                        self.accepted.insert(slot, (ballot, value));
                    }
                }
            }
            Record::Chosen { slot, value } => {
                self.accepted.remove(&slot);
                self.chosen.insert(slot, value);
            }
        }
    }

    /// Drops everything at or below a durable snapshot's slot.
    pub fn compact(&mut self, snapshot_slot: Slot) {
        self.accepted = self.accepted.split_off(&(snapshot_slot + 1));
        self.chosen = self.chosen.split_off(&(snapshot_slot + 1));
    }
}

/// A state machine snapshot covering every slot `<= slot`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub slot: Slot,
    pub data: Vec<u8>,
}

/// Why a proposal or read was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Dropped {
    /// This node is not the leader (or stopped being it before the command was sent out):
    /// certainly not applied. `leader` is a hint where to retry.
    NotLeader { leader: Option<NodeId> },
    /// The pending-proposal queue is full: certainly not applied.
    Overloaded,
    /// The command exceeds `max_command_bytes`: certainly not applied.
    TooLarge,
    /// Leadership was lost after the command was sent in an accept: it may still be chosen.
    Unknown,
}

impl Dropped {
    /// True when the command certainly did not and will not take effect (HTTP 503).
    pub fn certainly_not_applied(&self) -> bool {
        !matches!(self, Dropped::Unknown)
    }
}

/// A read confirmed by a quorum: answer it once every slot `<= slot` is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadReady {
    pub id: ReadId,
    pub slot: Slot,
}

/// Everything the driver must do after feeding inputs. See the module docs for the order.
#[derive(Debug, Default)]
pub struct Ready {
    pub persist: Vec<Record>,
    pub persist_token: Option<PersistToken>,
    pub messages: Vec<Envelope>,
    pub messages_after_persist: Vec<Envelope>,
    pub install_snapshot: Option<Snapshot>,
    pub committed: Vec<Entry>,
    pub reads: Vec<ReadReady>,
    pub rejected: Vec<(ProposalId, Dropped)>,
    pub rejected_reads: Vec<(ReadId, Dropped)>,
    pub snapshot_due: Option<Slot>,
}

impl Ready {
    pub fn is_empty(&self) -> bool {
        self.persist.is_empty()
            && self.persist_token.is_none()
            && self.messages.is_empty()
            && self.messages_after_persist.is_empty()
            && self.install_snapshot.is_none()
            && self.committed.is_empty()
            && self.reads.is_empty()
            && self.rejected.is_empty()
            && self.rejected_reads.is_empty()
            && self.snapshot_due.is_none()
    }
}

/// A node's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Follower,
    /// Asking peers whether they lost the leader too (pre-vote).
    PreCandidate,
    /// Running phase 1.
    Candidate,
    Leader,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Follower => "follower",
            Role::PreCandidate => "pre-candidate",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        }
    }
}

/// A snapshot of a node's protocol state, for `GET /status` and metrics.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    /// The node believed to lead (itself when leader).
    pub leader: Option<NodeId>,
    /// The highest ballot promised.
    pub ballot: Ballot,
    /// Every slot `<= commit_index` is chosen and known here.
    pub commit_index: Slot,
    /// Every slot `<= snapshot_slot` is covered by the latest snapshot.
    pub snapshot_slot: Slot,
    /// Proposals waiting for a slot (leader only).
    pub pending_proposals: usize,
    /// Slots sent in accepts and not yet chosen (leader only).
    pub in_flight_slots: usize,
}

/// A planted bug: off by default, each imitates a real mistake (`paxos-kv --bug NAME`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Bug {
    StaleLeaderRead,
    AckBeforePersist,
    ForgetAccepted,
    NonAtomicTxn,
}

impl Bug {
    pub const ALL: [Bug; 4] = [
        Bug::StaleLeaderRead,
        Bug::AckBeforePersist,
        Bug::ForgetAccepted,
        Bug::NonAtomicTxn,
    ];

    /// The `--bug` name.
    pub fn name(&self) -> &'static str {
        match self {
            Bug::StaleLeaderRead => "stale-leader-read",
            Bug::AckBeforePersist => "ack-before-persist",
            Bug::ForgetAccepted => "forget-accepted",
            Bug::NonAtomicTxn => "non-atomic-txn",
        }
    }

    /// The real mistake it imitates.
    pub fn description(&self) -> &'static str {
        match self {
            Bug::StaleLeaderRead => {
                "the leader trusts that it still leads (no quorum round for linearizable reads, \
                 no check-quorum step-down) and answers reads from local state: stale reads from \
                 a leader deposed behind a partition"
            }
            Bug::AckBeforePersist => {
                "acceptors acknowledge accepts before the WAL record is fsynced: acknowledged \
                 writes are lost when a majority crashes"
            }
            Bug::ForgetAccepted => {
                "a new leader ignores values accepted under older ballots in phase-1 replies \
                 (its own included) and fills those slots with its own proposals: chosen but \
                 not yet learned entries are overwritten after a leader change"
            }
            Bug::NonAtomicTxn => {
                "a transaction's micro-ops are proposed as separate log commands: \
                 serializability anomalies under concurrency (server-side)"
            }
        }
    }
}

impl fmt::Display for Bug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Bug {
    type Err = PaxosError;
    fn from_str(s: &str) -> Result<Bug, PaxosError> {
        Bug::ALL
            .iter()
            .copied()
            .find(|b| b.name() == s)
            .ok_or_else(|| PaxosError::UnknownBug {
                name: s.to_string(),
                known: Bug::ALL
                    .iter()
                    .map(|b| b.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// Settings of the core; every bound is named here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// This node's id.
    pub id: NodeId,
    /// Every member's id, this node included.
    pub members: Vec<NodeId>,
    /// Minimum election timeout; the actual one is drawn from `[min, 2*min)` each time.
    pub election_timeout_min_ticks: u64,
    /// The leader sends heartbeats this often.
    pub heartbeat_interval_ticks: u64,
    /// A leader that has not heard from a majority for this long steps down.
    pub check_quorum_ticks: u64,
    /// Unacknowledged accepts are resent after this many ticks.
    pub retransmit_ticks: u64,
    /// Commands per slot.
    pub max_batch_commands: usize,
    /// Bytes of command data per slot.
    pub max_batch_bytes: usize,
    /// Largest single command accepted by `propose`.
    pub max_command_bytes: usize,
    /// Slots sent in accepts and not yet chosen.
    pub max_in_flight_slots: usize,
    /// Proposals waiting for a slot; more are rejected as `Overloaded`.
    pub max_pending_proposals: usize,
    /// Reads waiting for confirmation; more are rejected as `Overloaded`.
    pub max_pending_reads: usize,
    /// Approximate cap on the entries carried by one accept, promise or catch-up message.
    pub max_message_bytes: usize,
    /// Chosen entries per catch-up reply or promise.
    pub max_catchup_entries: usize,
    /// Ask for a snapshot (`Ready::snapshot_due`) once this many entries follow the last one.
    pub snapshot_interval_entries: u64,
    /// Chosen entries kept behind a snapshot so that slightly lagging peers catch up from the
    /// log rather than by snapshot.
    pub compaction_retain_entries: u64,
    /// Planted bugs to enable.
    pub bugs: Vec<Bug>,
}

impl Config {
    /// Defaults for a node `id` of cluster `members`.
    pub fn new(id: NodeId, members: Vec<NodeId>) -> Config {
        Config {
            id,
            members,
            election_timeout_min_ticks: 15,
            heartbeat_interval_ticks: 3,
            check_quorum_ticks: 60,
            retransmit_ticks: 6,
            max_batch_commands: 256,
            max_batch_bytes: 1 << 20,
            max_command_bytes: 1 << 20,
            max_in_flight_slots: 16,
            max_pending_proposals: 10_000,
            max_pending_reads: 10_000,
            max_message_bytes: 4 << 20,
            max_catchup_entries: 512,
            snapshot_interval_entries: 10_000,
            compaction_retain_entries: 1_000,
            bugs: Vec::new(),
        }
    }

    pub fn has_bug(&self, bug: Bug) -> bool {
        self.bugs.contains(&bug)
    }

    /// Checks the settings; names the first bad one.
    pub fn validate(&self) -> Result<(), PaxosError> {
        let bad = |what: &str| {
            Err(PaxosError::InvalidConfig {
                what: what.to_string(),
            })
        };
        if self.id == 0 {
            return bad("id must be positive");
        }
        if !self.members.contains(&self.id) {
            return bad("members must include this node's id");
        }
        let mut sorted = self.members.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != self.members.len() || sorted.contains(&0) {
            return bad("members must be distinct positive ids");
        }
        if self.heartbeat_interval_ticks == 0
            || self.election_timeout_min_ticks <= self.heartbeat_interval_ticks
        {
            return bad("election_timeout_min_ticks must exceed heartbeat_interval_ticks > 0");
        }
        if self.check_quorum_ticks < self.election_timeout_min_ticks {
            return bad("check_quorum_ticks must be >= election_timeout_min_ticks");
        }
        if self.retransmit_ticks == 0
            || self.max_batch_commands == 0
            || self.max_batch_bytes == 0
            || self.max_command_bytes == 0
            || self.max_in_flight_slots == 0
            || self.max_pending_proposals == 0
            || self.max_pending_reads == 0
            || self.max_message_bytes == 0
            || self.max_catchup_entries == 0
            || self.snapshot_interval_entries == 0
        {
            return bad("bounds must be positive");
        }
        Ok(())
    }
}
