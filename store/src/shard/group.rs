//! One replica group of the sharded store: the shards it serves, their migration, and its two
//! roles in two-phase commit (coordinator and participant), as a pure state machine.
//!
//! # Driving a [`Group`]
//!
//! Every replica of the group applies the group's Paxos log in order with
//! [`Input::Apply`]. Only the group's leader also feeds [`Input::Tick`] (every `tick_ms`) and
//! [`Input::Message`]s; a follower discards the outputs of `Apply`. Each [`Group::step`]
//! returns [`Output`]s, handled in order:
//! - [`Output::Propose`]: propose the command to the group's log. Nothing it stands for has
//!   happened until it comes back through `Apply` (a proposal may be lost; the core proposes
//!   again after `repropose_ticks`, and applying a command twice changes nothing). The
//!   exception is [`GroupCmd::Local`]: proposed once per leadership, never again on a timer,
//!   since a second copy would apply the transaction twice; a definite refusal by the log is
//!   reported back with [`Input::LocalDropped`].
//! - [`Output::Send`]: send a message (best effort; the core retransmits what matters).
//!   Messages that reveal a durable fact (a vote yes, a commit decision, an answer to a client,
//!   a handed-off shard) are emitted only while applying the log record that makes the fact
//!   durable, so the ordering "logged before anyone is told" is visible in the code: search
//!   for `Output::Send` in the `apply_*` functions.
//! - [`Output::Observe`]: a fact for metrics and the simulator's checker.
//!
//! A new leader (and a replica restarted after a crash, see [`Group::recover`]) calls
//! [`Group::become_leader`]: volatile state is dropped, the locks of prepared transactions are
//! restored from the log, and the group proposes a new [`GroupCmd::Epoch`]. It serves nothing
//! until that epoch is applied; a 2PL command proposed under an older epoch (its locks taken
//! by a previous leader) is refused when applied, so locks lost in a crash cannot be trusted.
//!
//! # State
//!
//! Replicated (a function of the log): the applied config and the previous one, the shards
//! held (data with per-key versions, plus each shard's exactly-once table), shards leaving and
//! arriving, frozen outgoing shards, transactions prepared here, coordinator records
//! (participants and, once logged, the decision), the replies of forgotten records, and the
//! bounded record of transactions finished here ([`super::finished`]: a late Prepare of one
//! is refused by every leader to come). Volatile: the lock table, coordinator progress,
//! timers, requests parked until this leader's epoch is applied.
//!
//! # Migration
//!
//! Configs are applied one at a time, in order, and only once the previous one's moves are
//! complete here (every arriving shard installed, every leaving shard frozen). Applying config
//! `n` marks shards lost in `n` as leaving: from that log point the group refuses new work on
//! them. A leaving shard is frozen (its data and exactly-once table set aside as the handoff
//! for config `n`) at the first log point where no transaction prepared here touches it. A
//! gaining group pulls `(n, shard)` from the owner in config `n - 1`, proposes
//! [`GroupCmd::InstallShard`], and serves the shard once that is applied.
//!
//! The losing group keeps the whole copy until the gaining group acknowledges the install
//! (it answers pulls from it, also after a restart: the copy and its unacknowledged mark are
//! replicated). It asks every `retransmit_ticks` ([`Msg::HandoffQuery`]); the gainer answers
//! [`Msg::HandoffAck`] from its applied state (and sends one when it applies the install);
//! the loser logs [`GroupCmd::HandoffAcked`]. From then on only the copy's exactly-once table
//! is kept, to answer retries of transactions applied here before the move
//! ([`Group::handed_off`]). Retries consult the newest copy of a shard only (the table moves
//! with its shard, so it holds every older copy's answers), so an acknowledged copy is
//! dropped once a newer copy of its shard exists or the shard is held here again. At most
//! [`GroupConfig::handoff_tables_max`] acknowledged copies keep their entries; past it the
//! oldest copy's table is evicted into its eviction floors ([`super::dedup`]), so a retry of
//! any transaction it answered gets `Evicted` (outcome unknown), never "wrong group" or a new
//! run.
//!
//! # Transactions
//!
//! A request whose shards all belong to this group takes the fast path: one
//! [`GroupCmd::Local`] record (under 2PL, after taking its locks). One whose shards are all in
//! another group is answered [`TxnReply::WrongGroup`]. Otherwise this group coordinates
//! two-phase commit: [`GroupCmd::Begin`] (logged first, so that a coordinator that crashes
//! before deciding knows to abort), reads at the participants, compares, prepares, then
//! [`GroupCmd::Decide`]; the client and the participants learn the decision only from its
//! application. Participants log [`GroupCmd::Prepare`] before voting yes and
//! [`GroupCmd::Finish`] to commit or abort; a prepared participant that hears nothing asks the
//! coordinator, which answers from its log, and a coordinator with no logged decision and no
//! live attempt logs an abort first (presumed abort).
//!
//! Under 2PL wound-wait an older transaction wounds a younger lock holder at a participant
//! only while the younger one has not prepared there; a participant never aborts a prepared
//! transaction on its own (its coordinator may have logged commit). When an older one must
//! wait for a prepared younger one, the participant sends [`Msg::Wound`] to the younger
//! one's coordinator, which logs an abort if its attempt is still collecting votes and one
//! of its prepares waits at another participant ([`Msg::PrepareWaits`]), and ignores the
//! wound otherwise; the participant learns the abort as any decision.

use super::config::Config;
use super::dedup::{DedupTable, Lookup};
use super::finished::{FinishedTxns, DEFAULT_FINISHED_MAX};
use super::lock::{Acquire, LockTable, Mode};
use super::{
    AbortReason, Age, Cc, ClientId, ConfigNum, Deadlock, GroupId, OpResult, ShardBug, ShardId,
    TxnId, TxnOp, TxnReply, TxnRequest, Value, Versioned, DEFAULT_SHARDS, NO_GROUP,
    STALE_WINDOW_ENTRIES,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Where a message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Addr {
    Controller,
    Group(GroupId),
    Client(ClientId),
}

/// A write of a transaction, as a participant applies it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOp {
    Put(String, String),
    Append(String, String),
    Delete(String),
}

impl WriteOp {
    pub fn key(&self) -> &str {
        match self {
            WriteOp::Put(k, _) | WriteOp::Append(k, _) | WriteOp::Delete(k) => k,
        }
    }
}

/// A stored value and its version (the number of transactions that wrote the key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// None: deleted (a tombstone keeping the version, so that versions are never reused).
    pub value: Option<Value>,
    pub version: u64,
}

/// A shard's state: what moves when the shard moves.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardData {
    pub data: BTreeMap<String, Stored>,
    /// Exactly-once table: the latest transaction of each client that touched this shard,
    /// and its reply, bounded in bytes ([`super::dedup`]).
    pub dedup: DedupTable,
}

impl ShardData {
    fn get(&self, key: &str) -> Versioned {
        match self.data.get(key) {
            Some(s) => Versioned {
                value: s.value.clone(),
                version: s.version,
            },
            None => Versioned {
                value: None,
                version: 0,
            },
        }
    }
}

/// Messages between clients, groups and the controller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// Client -> group.
    Txn(TxnRequest),
    /// Group -> client.
    Reply {
        id: TxnId,
        reply: TxnReply,
    },
    /// Group or client -> controller: config `num` (or the latest if there is none yet).
    QueryConfig {
        num: Option<ConfigNum>,
    },
    /// Controller -> asker.
    ConfigReply(Config),
    /// Coordinator -> participant: read these keys (2PL: under shared locks).
    Read {
        txn: TxnId,
        age: Age,
        keys: Vec<String>,
    },
    ReadReply {
        txn: TxnId,
        result: Result<Vec<(String, Versioned)>, TxnReply>,
    },
    /// Coordinator -> participant: prepare these writes; `reads` are the keys read here and
    /// the versions seen.
    Prepare {
        txn: TxnId,
        age: Age,
        reads: Vec<(String, u64)>,
        writes: Vec<WriteOp>,
    },
    /// Participant -> coordinator: yes (prepared and logged) or no, with why.
    Vote {
        txn: TxnId,
        vote: Result<(), TxnReply>,
    },
    /// Coordinator -> participant.
    Decision {
        txn: TxnId,
        commit: bool,
        results: Vec<OpResult>,
    },
    DecisionAck {
        txn: TxnId,
    },
    /// Prepared participant -> coordinator: what did you decide?
    QueryDecision {
        txn: TxnId,
    },
    /// Participant -> coordinator (wound-wait over two-phase commit): an older transaction
    /// waits here for a lock `txn` holds as a prepared transaction, which the participant
    /// may not abort on its own. The coordinator aborts `txn` through its log if its live
    /// attempt has not proposed a decision yet and its prepare waits at another participant
    /// ([`Msg::PrepareWaits`]), and ignores the wound otherwise. Idempotent: a duplicate,
    /// late or lost wound changes nothing but how soon `txn` ends.
    Wound {
        txn: TxnId,
    },
    /// Participant -> coordinator (wound-wait): `txn`'s prepare waits here for a lock held
    /// by a transaction it may not wound (an older one, or a prepared one). With a [`Msg::Wound`] from another participant this is a
    /// wait-for chain through a transaction no participant may abort, possibly a deadlock.
    PrepareWaits {
        txn: TxnId,
    },
    /// Gaining group -> losing group: the shard as handed off in config `num`.
    PullShard {
        num: ConfigNum,
        shard: ShardId,
    },
    ShardHandoff {
        num: ConfigNum,
        shard: ShardId,
        data: ShardData,
    },
    /// Losing group -> gaining group: have you installed the shard handed off in `num`?
    HandoffQuery {
        num: ConfigNum,
        shard: ShardId,
    },
    /// Gaining group -> losing group: the shard handed off in `num` is installed here (in
    /// this group's log), so the losing group's copy of its data is no longer needed.
    HandoffAck {
        num: ConfigNum,
        shard: ShardId,
    },
}

/// A record in a group's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupCmd {
    /// A leader's epoch; 2PL commands proposed under an older epoch are refused.
    Epoch(u64),
    /// The next configuration.
    NewConfig(Config),
    /// An arriving shard, as handed off for config `num`.
    InstallShard {
        num: ConfigNum,
        shard: ShardId,
        data: ShardData,
    },
    /// A transaction on this group's shards only (the fast path).
    Local { req: TxnRequest, epoch: u64 },
    /// Coordinator: a two-phase commit starts.
    Begin {
        txn: TxnId,
        participants: Vec<GroupId>,
    },
    /// Participant: prepared (if the checks at application pass).
    Prepare {
        txn: TxnId,
        age: Age,
        coordinator: GroupId,
        epoch: u64,
        reads: Vec<(String, u64)>,
        writes: Vec<WriteOp>,
    },
    /// Coordinator: the decision; the first one in the log wins.
    Decide {
        txn: TxnId,
        commit: bool,
        reply: TxnReply,
        participants: Vec<GroupId>,
    },
    /// Participant: apply the decision to a prepared transaction.
    Finish {
        txn: TxnId,
        commit: bool,
        results: Vec<OpResult>,
    },
    /// Coordinator: every participant acknowledged the decision, drop the record. A client
    /// retry after this runs a new attempt that the participants' exactly-once tables answer.
    Forget { txn: TxnId },
    /// Losing group: the gaining group installed the shard handed off in `num`; keep only
    /// the copy's exactly-once table.
    HandoffAcked { num: ConfigNum, shard: ShardId },
}

/// Facts for metrics and for the simulator's checks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Observation {
    /// `txn`'s part at `group` took effect: the versions it read and the versions it created.
    Committed {
        txn: TxnId,
        group: GroupId,
        /// Through two-phase commit (else the fast path).
        two_phase: bool,
        reads: Vec<(String, u64)>,
        writes: Vec<(String, u64)>,
    },
    /// A coordinator's decision was logged (first time only).
    Decided {
        txn: TxnId,
        commit: bool,
        participants: Vec<GroupId>,
    },
    ConfigApplied {
        group: GroupId,
        num: ConfigNum,
    },
    ShardFrozen {
        group: GroupId,
        num: ConfigNum,
        shard: ShardId,
    },
    ShardInstalled {
        group: GroupId,
        num: ConfigNum,
        shard: ShardId,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Send { to: Addr, msg: Msg },
    Propose(GroupCmd),
    Observe(Observation),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    Tick,
    Message {
        from: Addr,
        msg: Msg,
    },
    Apply(GroupCmd),
    /// The log refused `txn`'s [`GroupCmd::Local`] proposal for certain (e.g. an overloaded
    /// Paxos leader): it will never be applied. Its client is answered and its locks freed.
    LocalDropped {
        txn: TxnId,
    },
}

/// Timers, in ticks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timing {
    pub poll_config_ticks: u64,
    pub pull_shard_ticks: u64,
    pub retransmit_ticks: u64,
    /// A coordinator waiting longer than this for reads or votes aborts.
    pub vote_timeout_ticks: u64,
    /// A prepared participant asks the coordinator after this long without a decision.
    pub query_decision_ticks: u64,
    pub repropose_ticks: u64,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            poll_config_ticks: 10,
            pull_shard_ticks: 5,
            retransmit_ticks: 6,
            vote_timeout_ticks: 40,
            query_decision_ticks: 15,
            repropose_ticks: 20,
        }
    }
}

/// A group's settings (the same at every replica).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    pub id: GroupId,
    pub shards: usize,
    pub cc: Cc,
    pub deadlock: Deadlock,
    pub bugs: Vec<ShardBug>,
    pub timing: Timing,
    /// Lock requests waiting at once; more are aborted (definite).
    pub max_waiters: usize,
    /// Each shard's exactly-once table is held to this many bytes, oldest entries evicted
    /// ([`super::dedup`]); 0: unbounded. The same at every replica of every group: it decides
    /// what is evicted, and the table moves with its shard.
    pub dedup_max_bytes_per_shard: usize,
    /// Finished transactions a participant remembers in its replicated state
    /// ([`super::finished`]); older ones are covered by per-coordinator age floors.
    pub finished_max: usize,
    /// Handed-off shard copies, acknowledged by their gaining group, whose exactly-once
    /// tables are kept whole (each within `dedup_max_bytes_per_shard`); past it the oldest
    /// (by config) keeps only its eviction floors (8 KiB). The same at every replica.
    pub handoff_tables_max: usize,
}

impl GroupConfig {
    pub fn new(id: GroupId) -> GroupConfig {
        GroupConfig {
            id,
            shards: DEFAULT_SHARDS,
            cc: Cc::default(),
            deadlock: Deadlock::default(),
            bugs: Vec::new(),
            timing: Timing::default(),
            max_waiters: 1024,
            dedup_max_bytes_per_shard: DEFAULT_DEDUP_MAX_BYTES_PER_SHARD,
            finished_max: DEFAULT_FINISHED_MAX,
            handoff_tables_max: DEFAULT_SHARDS,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Prepared {
    age: Age,
    coordinator: GroupId,
    reads: Vec<(String, u64)>,
    writes: Vec<WriteOp>,
    shards: BTreeSet<ShardId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct CoordRecord {
    participants: Vec<GroupId>,
    decision: Option<(bool, TxnReply)>,
}

/// Everything that is a function of the applied log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Replicated {
    applied: u64,
    epoch: u64,
    config: Config,
    prev: Config,
    shards: BTreeMap<ShardId, ShardData>,
    leaving: BTreeSet<ShardId>,
    arriving: BTreeSet<ShardId>,
    outgoing: BTreeMap<(ConfigNum, ShardId), ShardData>,
    /// When each outgoing shard was frozen: (config, applied index).
    frozen_at: BTreeMap<ShardId, (ConfigNum, u64)>,
    prepared: BTreeMap<TxnId, Prepared>,
    coord: BTreeMap<TxnId, CoordRecord>,
    undecided: BTreeSet<TxnId>,
    /// The replies of forgotten coordinator records, per client (its latest), bounded in
    /// bytes like a shard's exactly-once table: a retry after the record is forgotten is
    /// answered from here, never run as a new attempt (whose abort would be a false
    /// "definite failure" for a transaction that committed).
    forgotten: DedupTable,
    /// Transactions finished here as a participant, bounded: a late Read or Prepare of one is
    /// refused, also at a leader elected after it finished ([`super::finished`]). After the
    /// fields of [`ReplicatedV1`], so that a snapshot written before it existed is a prefix of
    /// this layout.
    finished: FinishedTxns,
    /// Copies in `outgoing` whose gaining group (the value) has not acknowledged installing
    /// them: their data is kept (pulls are answered from it) and they are never dropped or
    /// evicted. [`NO_GROUP`]: the gainer is unknown (a copy from an older snapshot), kept for
    /// good. Last, so that a snapshot written before it existed is a prefix of this layout
    /// ([`ReplicatedV2`]).
    unacked_handoffs: BTreeMap<(ConfigNum, ShardId), GroupId>,
}

/// [`Replicated`] as snapshots wrote it before `finished` existed (bincode writes a struct as
/// its fields in order, so those bytes are exactly a prefix of today's layout and fail to
/// decode as it). Loaded with an empty record of finished transactions: what the volatile
/// memory of the node that wrote it knew is lost either way.
#[derive(Deserialize)]
struct ReplicatedV1 {
    applied: u64,
    epoch: u64,
    config: Config,
    prev: Config,
    shards: BTreeMap<ShardId, ShardData>,
    leaving: BTreeSet<ShardId>,
    arriving: BTreeSet<ShardId>,
    outgoing: BTreeMap<(ConfigNum, ShardId), ShardData>,
    frozen_at: BTreeMap<ShardId, (ConfigNum, u64)>,
    prepared: BTreeMap<TxnId, Prepared>,
    coord: BTreeMap<TxnId, CoordRecord>,
    undecided: BTreeSet<TxnId>,
    forgotten: DedupTable,
}

impl From<ReplicatedV1> for Replicated {
    fn from(v: ReplicatedV1) -> Replicated {
        Replicated {
            applied: v.applied,
            epoch: v.epoch,
            config: v.config,
            prev: v.prev,
            shards: v.shards,
            leaving: v.leaving,
            arriving: v.arriving,
            outgoing: v.outgoing,
            frozen_at: v.frozen_at,
            prepared: v.prepared,
            coord: v.coord,
            undecided: v.undecided,
            forgotten: v.forgotten,
            finished: FinishedTxns::default(),
            unacked_handoffs: BTreeMap::new(),
        }
        .with_older_handoffs_unacked()
    }
}

/// [`Replicated`] as snapshots wrote it before `unacked_handoffs` existed (bincode writes
/// nested structs as their fields in order, so these bytes are exactly a prefix of today's
/// layout).
#[derive(Deserialize)]
struct ReplicatedV2 {
    v1: ReplicatedV1,
    finished: FinishedTxns,
}

impl From<ReplicatedV2> for Replicated {
    fn from(v: ReplicatedV2) -> Replicated {
        let mut st = Replicated::from(v.v1);
        st.finished = v.finished;
        st
    }
}

impl Replicated {
    /// A state from a snapshot that did not mark unacknowledged hand-offs kept every copy
    /// whole for good; any of them may still be pulled, so all are marked unacknowledged
    /// (but those no group gains, as a freeze does). The gainer is known for copies of the
    /// applied and the previous config (their owner); older ones are marked [`NO_GROUP`]:
    /// never asked about, they stay whole, as they always did.
    fn with_older_handoffs_unacked(mut self) -> Replicated {
        for &(num, s) in self.outgoing.keys() {
            let known = [&self.config, &self.prev]
                .into_iter()
                .find(|c| c.num == num);
            match known.map(|c| c.owner(s)) {
                Some(NO_GROUP) => {}
                gainer => {
                    let gainer = gainer.unwrap_or(NO_GROUP);
                    self.unacked_handoffs.insert((num, s), gainer);
                }
            }
        }
        self
    }
}

/// A handed-off shard copy as kept ([`Group::handed_off`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandedOff {
    pub num: ConfigNum,
    pub shard: ShardId,
    /// Keys of its data held (0 once the hand-off is acknowledged).
    pub keys: usize,
    /// Entries of its exactly-once table (0 once evicted into floors).
    pub dedup_entries: usize,
    pub dedup_bytes: usize,
    /// Its table has eviction floors (some entry was evicted).
    pub dedup_floors: bool,
    /// The gaining group has not acknowledged installing it.
    pub unacked: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Holds shared locks from reads; may be wounded.
    Reading,
    /// Its prepare (or fast-path record) is proposed with its locks; may not be wounded.
    Proposed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CoordPhase {
    Beginning,
    Reading,
    Preparing,
    Deciding,
}

/// A coordinator's live attempt (volatile).
#[derive(Clone, Debug)]
struct Running {
    req: TxnRequest,
    /// Per participant: the keys it reads and the writes it applies.
    plan: BTreeMap<GroupId, (Vec<String>, Vec<WriteOp>)>,
    phase: CoordPhase,
    phase_tick: u64,
    sent_tick: u64,
    reads: BTreeMap<String, Versioned>,
    read_done: BTreeSet<GroupId>,
    yes: BTreeSet<GroupId>,
    results: Vec<OpResult>,
    decide: Option<GroupCmd>,
    /// Participants that said its prepare waits there for a lock ([`Msg::PrepareWaits`])
    /// and have not voted since.
    waits_at: BTreeSet<GroupId>,
    /// A participant said an older transaction waits there for it ([`Msg::Wound`]).
    wounded: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum WaitKind {
    Local,
    Read,
    Prepare,
}

#[derive(Debug, Default)]
struct Volatile {
    tick: u64,
    want_epoch: u64,
    locks: LockTable,
    ages: BTreeMap<TxnId, Age>,
    phase: BTreeMap<TxnId, Phase>,
    /// Wounded or refused here (volatile; finished ones are in [`Replicated::finished`]):
    /// later reads and prepares of it are refused.
    aborted: BTreeSet<TxnId>,
    /// Client requests that arrived before this leader's epoch was applied: its state may
    /// lack what its predecessors applied, so it cannot say what became of them yet (a
    /// "not ready" refusal of a retry could deny a transaction that took effect). Handled
    /// once the epoch is applied; bounded by `max_waiters` (past it a request is dropped
    /// unanswered: its client times out, outcome unknown).
    parked: BTreeMap<TxnId, (Addr, TxnRequest)>,
    aborted_order: std::collections::VecDeque<TxnId>,
    waiters: BTreeMap<(TxnId, WaitKind), (Addr, Msg)>,
    wake: bool,
    running: BTreeMap<TxnId, Running>,
    /// Fast-path transactions proposed and not yet applied.
    local: BTreeMap<TxnId, GroupCmd>,
    /// Proposal key -> tick proposed (to re-propose lost proposals, not flood the log).
    proposed: BTreeMap<String, u64>,
    unacked: BTreeMap<TxnId, (BTreeSet<GroupId>, u64)>,
    last_query: BTreeMap<TxnId, u64>,
    /// Prepared transactions here whose coordinators were sent a [`Msg::Wound`], and when:
    /// sent again at most every `retransmit_ticks` while an older transaction still waits
    /// for them (not at every wake round), dropped once they finish.
    wounds_sent: BTreeMap<TxnId, u64>,
    /// Prepares waiting here whose coordinators were sent [`Msg::PrepareWaits`], and when
    /// (again at most every `retransmit_ticks`; dropped when the wait ends).
    waits_told: BTreeMap<TxnId, u64>,
    last_poll: u64,
    last_pull: BTreeMap<ShardId, u64>,
}

/// The default bound of each shard's exactly-once table (64 MiB over 16 shards).
pub const DEFAULT_DEDUP_MAX_BYTES_PER_SHARD: usize = 4 << 20;

/// Bound on the volatile set of aborted transaction ids.
const MAX_REMEMBERED_ABORTS: usize = 65_536;

/// One replica group (see the module docs for how to drive it).
#[derive(Debug)]
pub struct Group {
    cfg: GroupConfig,
    st: Replicated,
    v: Volatile,
    out: Vec<Output>,
}

enum Locked {
    Granted,
    Wait,
    Abort,
}

impl Group {
    /// A fresh group with an empty log. Call [`Group::become_leader`] on the replica that
    /// leads.
    pub fn new(cfg: GroupConfig) -> Group {
        let initial = Config::initial(cfg.shards);
        Group {
            st: Replicated {
                applied: 0,
                epoch: 0,
                config: initial.clone(),
                prev: initial,
                shards: BTreeMap::new(),
                leaving: BTreeSet::new(),
                arriving: BTreeSet::new(),
                outgoing: BTreeMap::new(),
                frozen_at: BTreeMap::new(),
                prepared: BTreeMap::new(),
                coord: BTreeMap::new(),
                undecided: BTreeSet::new(),
                forgotten: DedupTable::default(),
                finished: FinishedTxns::default(),
                unacked_handoffs: BTreeMap::new(),
            },
            cfg,
            v: Volatile::default(),
            out: Vec::new(),
        }
    }

    /// A replica restarted after a crash: replays its log (outputs of the replay dropped) and
    /// takes over as leader.
    pub fn recover<'a>(cfg: GroupConfig, log: impl IntoIterator<Item = &'a GroupCmd>) -> Group {
        let mut g = Group::new(cfg);
        for cmd in log {
            g.apply(cmd.clone());
        }
        g.out.clear();
        g.become_leader();
        g
    }

    /// This replica now leads: forget volatile state, restore prepared transactions' locks,
    /// and ask for a new epoch.
    pub fn become_leader(&mut self) {
        let next = self.st.epoch + 1;
        self.become_leader_at(next);
    }

    /// As [`Group::become_leader`], with an epoch no other leader of this group ever uses and
    /// greater than any earlier leader's (the server derives it from its Paxos ballot). A
    /// replica that becomes leader before it has applied its whole log cannot use "applied
    /// epoch + 1": an unapplied record of its predecessor may carry that very epoch, and the
    /// group would serve before its own epoch record, with locks it never took.
    pub fn become_leader_at(&mut self, epoch: u64) {
        let tick = self.v.tick;
        self.v = Volatile {
            tick,
            want_epoch: epoch.max(self.st.epoch + 1),
            ..Volatile::default()
        };
        if self.cfg.cc == Cc::TwoPl {
            let keep_shared = !self.has_bug(ShardBug::EarlyLockRelease);
            for (txn, p) in &self.st.prepared {
                self.v.ages.insert(*txn, p.age);
                if keep_shared {
                    for (k, _) in &p.reads {
                        self.v.locks.force(*txn, k, Mode::Shared);
                    }
                }
                for w in &p.writes {
                    self.v.locks.force(*txn, w.key(), Mode::Exclusive);
                }
            }
        }
        // Decided records whose acknowledgements died with the previous leader: tell the
        // participants again (at the next tick), so that the records can be forgotten.
        for (txn, rec) in &self.st.coord {
            if rec.decision.is_some() {
                let left = rec.participants.iter().copied().collect();
                self.v.unacked.insert(*txn, (left, 0));
            }
        }
    }

    pub fn id(&self) -> GroupId {
        self.cfg.id
    }

    /// The members (addresses) of group `g` in the applied config, else in the previous one
    /// (a group that left still hands off the shards it held).
    pub fn members(&self, g: GroupId) -> Option<&[String]> {
        self.st
            .config
            .groups
            .get(&g)
            .or_else(|| self.st.prev.groups.get(&g))
            .map(Vec::as_slice)
    }

    /// FNV-1a 64 over the encoded replicated state: equal on replicas that applied the same
    /// log (every map in it is ordered).
    pub fn digest(&self) -> u64 {
        super::fnv1a64(&crate::codec::encode(&self.st))
    }

    /// The replicated state, encoded (a snapshot at [`Group::applied`]).
    pub fn snapshot(&self) -> Vec<u8> {
        crate::codec::encode(&self.st)
    }

    /// A replica restored from [`Group::snapshot`]'s bytes; volatile state starts empty.
    pub fn from_snapshot(cfg: GroupConfig, bytes: &[u8]) -> Result<Group, super::ShardError> {
        let what = format!("group {} snapshot", cfg.id);
        let st: Replicated = match crate::codec::decode::<Replicated>(&what, bytes) {
            Ok(st) => st,
            // A snapshot of an older layout (a prefix of today's). Only when the bytes decode
            // as that layout exactly (nothing left over), so that a damaged snapshot of
            // today's layout is an error, not a silent misload.
            Err(e) => match decode_older(bytes) {
                Some((st, missing)) => {
                    tracing::warn!(
                        "{what}: an older snapshot layout (without {missing}); loaded with \
                         every handed-off copy kept until its gainer acknowledges it"
                    );
                    st
                }
                None => {
                    return Err(super::ShardError::Decode {
                        what,
                        detail: e.to_string(),
                    })
                }
            },
        };
        if st.config.shards.len() != cfg.shards {
            return Err(super::ShardError::Decode {
                what,
                detail: format!(
                    "it has {} shards, this node is configured with {}",
                    st.config.shards.len(),
                    cfg.shards
                ),
            });
        }
        let mut g = Group::new(cfg);
        g.st = st;
        Ok(g)
    }

    /// The shard copies this group handed off and keeps, oldest config first.
    pub fn handed_off(&self) -> Vec<HandedOff> {
        self.st
            .outgoing
            .iter()
            .map(|(&(num, shard), d)| HandedOff {
                num,
                shard,
                keys: d.data.len(),
                dedup_entries: d.dedup.len(),
                dedup_bytes: d.dedup.bytes(),
                dedup_floors: d.dedup.has_floors(),
                unacked: self.st.unacked_handoffs.contains_key(&(num, shard)),
            })
            .collect()
    }

    /// Transactions remembered as finished here (participant side).
    pub fn finished_count(&self) -> usize {
        self.st.finished.len()
    }

    /// The current leader's epoch as applied (0 before any).
    pub fn epoch(&self) -> u64 {
        self.st.epoch
    }

    pub fn config(&self) -> &Config {
        &self.st.config
    }

    pub fn applied(&self) -> u64 {
        self.st.applied
    }

    /// Serving requests: its epoch is applied.
    pub fn is_ready(&self) -> bool {
        self.st.epoch == self.v.want_epoch
    }

    /// Every move of the applied config is complete here.
    pub fn migration_done(&self) -> bool {
        self.st.arriving.is_empty() && self.st.leaving.is_empty()
    }

    /// Transactions prepared here and not yet decided.
    pub fn prepared_count(&self) -> usize {
        self.st.prepared.len()
    }

    /// Coordinator records held (decided or not); decided ones are forgotten once every
    /// participant acknowledged the decision.
    pub fn coordinator_records(&self) -> usize {
        self.st.coord.len()
    }

    /// Coordinator records without a logged decision.
    pub fn undecided_count(&self) -> usize {
        self.st.undecided.len()
    }

    /// Keys locked in the (volatile) lock table.
    pub fn locked_keys(&self) -> usize {
        self.v.locks.locked_keys()
    }

    /// A key's value and version if this group serves its shard.
    pub fn get(&self, key: &str) -> Option<Versioned> {
        let s = super::shard_of(key, self.cfg.shards);
        self.serving(s).then(|| self.st.shards[&s].get(key))
    }

    /// A linearizable read for the server's ReadIndex path (no log record). Call it only
    /// after this replica confirmed its leadership with a quorum and applied the log up to
    /// that read index. Safe when, at that point:
    /// - this group serves the key's shard: a gaining group serves a write only after
    ///   installing the shard, which follows this group's freeze of it in this group's log;
    ///   a write acknowledged there before the read began would put the freeze below the
    ///   read index, and the shard would not be served here;
    /// - no prepared transaction writes the key: its coordinator may have acknowledged a
    ///   commit whose `Finish` this group has not applied yet.
    ///
    /// `Err(Some(reply))`: refused (wrong group, not installed yet); `Err(None)`: a prepared
    /// transaction writes the key, so read through the log (a read-only transaction waits
    /// for it or is refused, as any transaction would).
    pub fn read_at_index(&self, key: &str) -> Result<Versioned, Option<TxnReply>> {
        let s = self.shard(key);
        if !self.serving(s) && self.has_bug(ShardBug::MigrationServesStale) {
            // The planted bug serves this path too.
            if let Some(copy) = self.stale_copy(s) {
                return Ok(copy.get(key));
            }
        }
        if let Some(r) = self.refusal(s) {
            return Err(Some(r));
        }
        let prepared_write = self
            .st
            .prepared
            .values()
            .any(|p| p.writes.iter().any(|w| w.key() == key));
        if prepared_write {
            return Err(None);
        }
        Ok(self.st.shards[&s].get(key))
    }

    /// Up to `max` present keys starting with `prefix` in the shards this group serves, in
    /// key order, with their revisions (versions).
    pub fn keys(&self, prefix: &str, max: usize) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = self
            .st
            .shards
            .iter()
            .filter(|(s, _)| self.serving(**s))
            .flat_map(|(_, d)| {
                d.data
                    .range(prefix.to_string()..)
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .filter(|(_, st)| st.value.is_some())
                    .take(max)
                    .map(|(k, st)| (k.clone(), st.version))
            })
            .collect();
        out.sort();
        out.truncate(max);
        out
    }

    /// The shards this group serves.
    pub fn serving_shards(&self) -> Vec<ShardId> {
        self.st
            .shards
            .keys()
            .copied()
            .filter(|s| self.serving(*s))
            .collect()
    }

    /// The one entry point: feeds one input, returns what to do.
    pub fn step(&mut self, input: Input) -> Vec<Output> {
        match input {
            Input::Tick => self.tick(),
            Input::Message { from, msg } => self.on_message(from, msg),
            Input::Apply(cmd) => self.apply(cmd),
            Input::LocalDropped { txn } => {
                if self.v.local.contains_key(&txn) {
                    self.abort_here(txn, AbortReason::Overloaded);
                }
            }
        }
        self.wake_waiters();
        std::mem::take(&mut self.out)
    }

    fn has_bug(&self, bug: ShardBug) -> bool {
        self.cfg.bugs.contains(&bug)
    }

    fn send(&mut self, to: Addr, msg: Msg) {
        self.out.push(Output::Send { to, msg });
    }

    fn observe(&mut self, o: Observation) {
        self.out.push(Output::Observe(o));
    }

    /// Proposes `cmd` unless the same proposal (by `key`) went out within `repropose_ticks`.
    fn propose_once(&mut self, key: String, cmd: GroupCmd) {
        let now = self.v.tick;
        if let Some(t) = self.v.proposed.get(&key) {
            if now < t + self.cfg.timing.repropose_ticks {
                return;
            }
        }
        self.v.proposed.insert(key, now);
        self.out.push(Output::Propose(cmd));
    }

    fn shard(&self, key: &str) -> ShardId {
        super::shard_of(key, self.cfg.shards)
    }

    fn serving(&self, s: ShardId) -> bool {
        self.st.shards.contains_key(&s) && !self.st.leaving.contains(&s)
    }

    /// Why this group cannot take new work on shard `s` (None: it can).
    fn refusal(&self, s: ShardId) -> Option<TxnReply> {
        if self.serving(s) {
            return None;
        }
        let owner = self.st.config.owner(s);
        if owner == self.cfg.id {
            // Owned in the applied config but not installed yet.
            return Some(TxnReply::Aborted {
                reason: AbortReason::NotReady,
            });
        }
        Some(TxnReply::WrongGroup {
            shard: s,
            owner,
            config: self.st.config.num,
        })
    }

    /// The recorded reply if `txn` is this client's latest transaction in shard `s`, or a
    /// stale refusal if a later one is recorded.
    fn dedup(&self, s: ShardId, txn: TxnId) -> Option<TxnReply> {
        if super::is_anonymous(txn.client) {
            return None;
        }
        self.st.shards.get(&s)?.dedup.answer(txn.client, txn.seq)
    }

    fn remember_abort(&mut self, txn: TxnId) {
        if self.v.aborted.insert(txn) {
            self.v.aborted_order.push_back(txn);
            while self.v.aborted_order.len() > MAX_REMEMBERED_ABORTS {
                if let Some(old) = self.v.aborted_order.pop_front() {
                    self.v.aborted.remove(&old);
                }
            }
        }
    }

    /// Aborts `txn`'s volatile work here: its locks, waits and fast-path attempt.
    fn abort_here(&mut self, txn: TxnId, reason: AbortReason) {
        if self.v.locks.release_all(txn) {
            self.v.wake = true;
        }
        self.remember_abort(txn);
        self.v.phase.remove(&txn);
        let was_waiting_local = self.v.waiters.contains_key(&(txn, WaitKind::Local));
        // A coordinator whose read or prepare was waiting here is told at once: left to its
        // retransmission it would learn only a round later, holding its locks elsewhere.
        for kind in [WaitKind::Read, WaitKind::Prepare] {
            if let Some((from, _)) = self.v.waiters.remove(&(txn, kind)) {
                let refusal = TxnReply::Aborted {
                    reason: reason.clone(),
                };
                let msg = match kind {
                    WaitKind::Read => Msg::ReadReply {
                        txn,
                        result: Err(refusal),
                    },
                    _ => Msg::Vote {
                        txn,
                        vote: Err(refusal),
                    },
                };
                self.send(from, msg);
            }
        }
        self.v.waiters.retain(|(t, _), _| *t != txn);
        if self.v.local.remove(&txn).is_some() || was_waiting_local {
            self.send(
                Addr::Client(txn.client),
                Msg::Reply {
                    id: txn,
                    reply: TxnReply::Aborted { reason },
                },
            );
        }
    }

    /// Aborts `txn`'s two-phase attempt here (its read or prepare refused, or an abort
    /// decision from a coordinator it is not prepared for), unless a fast-path attempt of
    /// the same id runs here (a client re-routed it): the id's locks are then that
    /// attempt's (a Read or Prepare of the id is refused while it runs, and it starts only
    /// when the id holds nothing here), and a proposed `Local` record must keep them until
    /// it is applied. Releasing them let another transaction read a key that record then
    /// overwrote, and told its client "aborted" for a transaction that committed (found by
    /// the simulator at seed 8093 of 2PL wound-wait: a late abort decision of the id's
    /// earlier attempt at another coordinator).
    fn abort_two_phase_here(&mut self, txn: TxnId, reason: AbortReason) {
        let fast_path =
            self.v.local.contains_key(&txn) || self.v.waiters.contains_key(&(txn, WaitKind::Local));
        if !fast_path {
            self.abort_here(txn, reason);
        }
    }

    fn release(&mut self, txn: TxnId) {
        if self.v.locks.release_all(txn) {
            self.v.wake = true;
        }
        self.v.phase.remove(&txn);
    }

    /// Takes locks for `txn` under the deadlock policy.
    fn lock_all(&mut self, txn: TxnId, age: Age, wants: &[(String, Mode)]) -> Locked {
        self.v.ages.insert(txn, age);
        for (key, mode) in wants {
            // Wounding frees the lock, so a second attempt is granted unless someone must be
            // waited for.
            for _attempt in 0..2 {
                let holders = match self.v.locks.acquire(txn, key, *mode) {
                    Acquire::Granted => break,
                    Acquire::Conflict(h) => h,
                };
                if self.cfg.deadlock == Deadlock::NoWait {
                    self.abort_here(txn, AbortReason::LockConflict);
                    return Locked::Abort;
                }
                let mut must_wait = false;
                for h in holders {
                    let older = self.v.ages.get(&h).is_some_and(|ha| age < *ha);
                    if older && self.woundable(h) {
                        self.abort_here(h, AbortReason::LockConflict);
                    } else {
                        must_wait = true;
                        if older {
                            self.wound_prepared(h);
                        }
                    }
                }
                if must_wait {
                    return Locked::Wait;
                }
            }
            if self.v.locks.mode(txn, key).is_none_or(|m| m < *mode) {
                return Locked::Wait;
            }
        }
        Locked::Granted
    }

    /// An older transaction must wait for `holder`, which it cannot wound here because
    /// `holder` is prepared: only its coordinator may abort it (a participant that dropped
    /// a prepared transaction could lose a commit the coordinator already logged). Asks the
    /// coordinator to, at most once per `retransmit_ticks` per holder. A holder whose
    /// prepare is proposed but not applied yet is asked once it is applied (the waiter is
    /// retried at every tick). Without this, a younger transaction prepared here and waiting
    /// at another participant for the older one deadlocks the two until its coordinator's
    /// vote timeout.
    fn wound_prepared(&mut self, holder: TxnId) {
        let Some(coordinator) = self.st.prepared.get(&holder).map(|p| p.coordinator) else {
            return;
        };
        let now = self.v.tick;
        if let Some(at) = self.v.wounds_sent.get(&holder) {
            if now < at + self.cfg.timing.retransmit_ticks {
                return;
            }
        }
        self.v.wounds_sent.insert(holder, now);
        self.send(Addr::Group(coordinator), Msg::Wound { txn: holder });
    }

    /// `txn`'s prepare waits here for a lock (wound-wait): tells its
    /// coordinator, at most once per `retransmit_ticks` (the waiter is retried at every wake
    /// round).
    fn tell_prepare_waits(&mut self, txn: TxnId, coordinator: Addr) {
        let now = self.v.tick;
        if let Some(at) = self.v.waits_told.get(&txn) {
            if now < at + self.cfg.timing.retransmit_ticks {
                return;
            }
        }
        self.v.waits_told.insert(txn, now);
        self.send(coordinator, Msg::PrepareWaits { txn });
    }

    fn woundable(&self, txn: TxnId) -> bool {
        !self.st.prepared.contains_key(&txn) && self.v.phase.get(&txn) != Some(&Phase::Proposed)
    }

    fn wait(&mut self, txn: TxnId, kind: WaitKind, from: Addr, msg: Msg) -> bool {
        if self.v.waiters.len() >= self.cfg.max_waiters
            && !self.v.waiters.contains_key(&(txn, kind))
        {
            self.abort_here(txn, AbortReason::Overloaded);
            return false;
        }
        self.v.waiters.insert((txn, kind), (from, msg));
        true
    }

    /// Retries waiting lock requests after locks were released (bounded rounds).
    fn wake_waiters(&mut self) {
        for _round in 0..8 {
            if !self.v.wake || self.v.waiters.is_empty() {
                break;
            }
            self.v.wake = false;
            // Oldest transactions first.
            let mut waiting: Vec<((TxnId, WaitKind), (Addr, Msg))> =
                std::mem::take(&mut self.v.waiters).into_iter().collect();
            waiting.sort_by_key(|((t, k), _)| (self.v.ages.get(t).copied(), *k));
            for (_, (from, msg)) in waiting {
                self.on_message(from, msg);
            }
        }
        self.v.wake = false;
    }

    // ----- inputs -----

    fn on_message(&mut self, from: Addr, msg: Msg) {
        match msg {
            Msg::Txn(req) => self.on_txn(from, req),
            Msg::ConfigReply(cfg) => {
                if cfg.num == self.st.config.num + 1 && self.migration_done() && self.is_ready() {
                    self.propose_once(format!("config{}", cfg.num), GroupCmd::NewConfig(cfg));
                }
            }
            Msg::Read { txn, age, keys } => self.on_read(from, txn, age, keys),
            Msg::ReadReply { txn, result } => self.on_read_reply(from, txn, result),
            Msg::Prepare {
                txn,
                age,
                reads,
                writes,
            } => self.on_prepare(from, txn, age, reads, writes),
            Msg::Vote { txn, vote } => self.on_vote(from, txn, vote),
            Msg::Decision {
                txn,
                commit,
                results,
            } => self.on_decision(from, txn, commit, results),
            Msg::DecisionAck { txn } => {
                if let (Addr::Group(g), Some((left, _))) = (from, self.v.unacked.get_mut(&txn)) {
                    left.remove(&g);
                    if left.is_empty() {
                        self.forget(txn);
                    }
                }
            }
            Msg::QueryDecision { txn } => self.on_query_decision(from, txn),
            Msg::Wound { txn } => self.on_wound(from, txn, false),
            Msg::PrepareWaits { txn } => self.on_wound(from, txn, true),
            Msg::PullShard { num, shard } => {
                // Only an unacknowledged copy still holds its data.
                let unacked = self.st.unacked_handoffs.contains_key(&(num, shard));
                if let (true, Some(data)) = (unacked, self.st.outgoing.get(&(num, shard))) {
                    let data = data.clone();
                    self.send(from, Msg::ShardHandoff { num, shard, data });
                }
            }
            Msg::HandoffQuery { num, shard } => {
                if self.installed(num, shard) {
                    self.send(from, Msg::HandoffAck { num, shard });
                }
            }
            Msg::HandoffAck { num, shard } => {
                let gainer = self.st.unacked_handoffs.get(&(num, shard));
                if matches!(from, Addr::Group(g) if gainer == Some(&g)) {
                    let cmd = GroupCmd::HandoffAcked { num, shard };
                    self.propose_once(format!("handoff-acked{num}/{shard}"), cmd);
                }
            }
            Msg::ShardHandoff { num, shard, data } => {
                if num == self.st.config.num && self.st.arriving.contains(&shard) {
                    self.propose_once(
                        format!("install{num}/{shard}"),
                        GroupCmd::InstallShard { num, shard, data },
                    );
                }
            }
            Msg::Reply { .. } | Msg::QueryConfig { .. } => {}
        }
    }

    /// Proposes dropping `txn`'s coordinator record (its decision is logged and every
    /// participant acknowledged it). The entry stays in `unacked`, empty, until the record is
    /// applied, so that a lost proposal is made again.
    fn forget(&mut self, txn: TxnId) {
        if self.is_ready()
            && self
                .st
                .coord
                .get(&txn)
                .is_some_and(|r| r.decision.is_some())
        {
            self.propose_once(format!("forget{txn}"), GroupCmd::Forget { txn });
        }
    }

    fn reply(&mut self, id: TxnId, reply: TxnReply) {
        self.send(Addr::Client(id.client), Msg::Reply { id, reply });
    }

    fn on_txn(&mut self, from: Addr, req: TxnRequest) {
        let id = req.id;
        if let Some(rec) = self.st.coord.get(&id) {
            if let Some((_, reply)) = &rec.decision {
                let reply = reply.clone();
                self.reply(id, reply);
            }
            return;
        }
        if !super::is_anonymous(id.client) {
            if let Some(reply) = self.st.forgotten.answer(id.client, id.seq) {
                return self.reply(id, reply);
            }
        }
        if self.v.running.contains_key(&id) || self.v.local.contains_key(&id) {
            return;
        }
        // A retry of a transaction this group applied (the fast path) is answered from the
        // exactly-once tables before anything can refuse it: a lock conflict, a shard that
        // moved away, or a 2PC attempt that the shards' new owners would refuse.
        if let Some(reply) = self.known_outcome(&req) {
            return self.reply(id, reply);
        }
        // An attempt of the same id by another coordinator (the client re-routed it) holds
        // locks or a prepare here: the lock table cannot tell two attempts of one id apart,
        // and that attempt may still commit. Unanswered until it is resolved (the client
        // retries).
        if self.st.prepared.contains_key(&id) || self.v.phase.contains_key(&id) {
            return;
        }
        if !self.is_ready() {
            if self.v.parked.len() < self.cfg.max_waiters || self.v.parked.contains_key(&id) {
                self.v.parked.insert(id, (from, req));
            }
            return;
        }
        if self.v.aborted.contains(&id) {
            return self.reply(
                id,
                TxnReply::Aborted {
                    reason: AbortReason::LockConflict,
                },
            );
        }
        if req.ops.is_empty() {
            return self.reply(id, TxnReply::Committed { results: vec![] });
        }
        let mut plan: BTreeMap<GroupId, (Vec<String>, Vec<WriteOp>)> = BTreeMap::new();
        for op in &req.ops {
            let s = self.shard(op.key());
            let owner = self.st.config.owner(s);
            if owner == NO_GROUP {
                return self.reply(
                    id,
                    TxnReply::WrongGroup {
                        shard: s,
                        owner,
                        config: self.st.config.num,
                    },
                );
            }
            let p = plan.entry(owner).or_default();
            match op {
                TxnOp::Read(k) | TxnOp::IfRevision(k, _) | TxnOp::IfValue(k, _) => {
                    if !p.0.contains(k) {
                        p.0.push(k.clone());
                    }
                }
                TxnOp::Write(k, v) => p.1.push(WriteOp::Put(k.clone(), v.clone())),
                TxnOp::Append(k, v) => p.1.push(WriteOp::Append(k.clone(), v.clone())),
                TxnOp::Delete(k) => p.1.push(WriteOp::Delete(k.clone())),
            }
        }
        if plan.len() == 1 {
            let owner = *plan.keys().next().expect("one group");
            let read_only = req.ops.iter().all(|o| matches!(o, TxnOp::Read(_)));
            let stale_ok = read_only
                && self.has_bug(ShardBug::MigrationServesStale)
                && req
                    .ops
                    .iter()
                    .all(|o| self.stale_copy(self.shard(o.key())).is_some());
            if owner != self.cfg.id && !stale_ok {
                let s = self.shard(req.ops[0].key());
                return self.reply(
                    id,
                    TxnReply::WrongGroup {
                        shard: s,
                        owner,
                        config: self.st.config.num,
                    },
                );
            }
            return self.fast_path(from, req);
        }
        let participants: Vec<GroupId> = plan.keys().copied().collect();
        self.v.running.insert(
            id,
            Running {
                req: req.clone(),
                plan,
                phase: CoordPhase::Beginning,
                phase_tick: self.v.tick,
                sent_tick: self.v.tick,
                reads: BTreeMap::new(),
                read_done: BTreeSet::new(),
                yes: BTreeSet::new(),
                results: Vec::new(),
                decide: None,
                waits_at: BTreeSet::new(),
                wounded: false,
            },
        );
        self.propose_once(
            format!("begin{id}"),
            GroupCmd::Begin {
                txn: id,
                participants,
            },
        );
    }

    /// What this group's exactly-once tables say of `req` (named clients only): a recorded
    /// reply, or a 504-kind refusal (`Stale`, `Evicted`). Each shard's table is the one held
    /// (served, leaving or returned), else the newest copy this group handed off: a
    /// transaction applied here before its shard moved away is in that copy, so a retry at
    /// this group learns its outcome instead of a wrong-group answer. A recorded reply wins
    /// over a refusal (the shards of one transaction may have moved apart since).
    fn known_outcome(&self, req: &TxnRequest) -> Option<TxnReply> {
        let id = req.id;
        if super::is_anonymous(id.client) {
            return None;
        }
        let shards: BTreeSet<ShardId> = req.ops.iter().map(|o| self.shard(o.key())).collect();
        let mut refusal = None;
        for s in shards {
            let table = self.st.shards.get(&s).map(|d| &d.dedup).or_else(|| {
                self.st
                    .outgoing
                    .iter()
                    .rev()
                    .find(|((_, shard), _)| *shard == s)
                    .map(|(_, d)| &d.dedup)
            });
            let Some(table) = table else { continue };
            match table.lookup(id.client, id.seq) {
                Lookup::New => {}
                Lookup::Recorded(reply) => return Some(reply),
                Lookup::Stale => {
                    refusal = Some(TxnReply::Aborted {
                        reason: AbortReason::Stale,
                    })
                }
                Lookup::Evicted { floor } => {
                    refusal = Some(TxnReply::Aborted {
                        reason: AbortReason::Evicted { floor },
                    })
                }
            }
        }
        refusal
    }

    fn fast_path(&mut self, from: Addr, req: TxnRequest) {
        let id = req.id;
        if self.cfg.cc == Cc::TwoPl {
            let wants = lock_wants(&req.ops);
            match self.lock_all(id, req.age, &wants) {
                Locked::Granted => {}
                Locked::Wait => {
                    self.wait(id, WaitKind::Local, from, Msg::Txn(req));
                    return;
                }
                Locked::Abort => {
                    return self.reply(
                        id,
                        TxnReply::Aborted {
                            reason: AbortReason::LockConflict,
                        },
                    )
                }
            }
            self.v.phase.insert(id, Phase::Proposed);
        }
        let cmd = GroupCmd::Local {
            req,
            epoch: self.st.epoch,
        };
        // Proposed once, never again on a timer: a `Local` record is not idempotent (an
        // anonymous transaction has no exactly-once entry, and an aborted one records none), so
        // a second copy in the log would apply it twice, or commit what its client was told
        // had failed. A leader's proposal is not lost while it leads: the log applies it, or
        // refuses it for certain (`Input::LocalDropped`), or the leader steps down and
        // `become_leader_at` forgets it.
        self.v.local.insert(id, cmd.clone());
        self.out.push(Output::Propose(cmd));
    }

    /// Why a participant must refuse `txn`'s read or prepare over `keys` (sent by
    /// `coordinator`, with the attempt's `age`) before touching any lock: a duplicate the
    /// exactly-once table answers (first, so that the coordinator can tell the client the
    /// recorded outcome), not ready to serve, already aborted or finished here, or a shard
    /// it does not serve.
    fn admission<'k>(
        &self,
        txn: TxnId,
        age: Age,
        coordinator: GroupId,
        keys: impl IntoIterator<Item = &'k str>,
    ) -> Option<TxnReply> {
        let shards: BTreeSet<ShardId> = keys.into_iter().map(|k| self.shard(k)).collect();
        if let Some(r) = shards.iter().find_map(|s| self.dedup(*s, txn)) {
            return Some(r);
        }
        if !self.is_ready() {
            return Some(TxnReply::Aborted {
                reason: AbortReason::NotReady,
            });
        }
        if self.v.aborted.contains(&txn) {
            return Some(TxnReply::Aborted {
                reason: AbortReason::LockConflict,
            });
        }
        // A fast-path attempt of the same id runs here (a client re-routed it): its locks
        // are this id's too, so this attempt could not be told apart from it.
        if self.v.local.contains_key(&txn) || self.v.waiters.contains_key(&(txn, WaitKind::Local)) {
            return Some(TxnReply::Aborted {
                reason: AbortReason::ParticipantRefused,
            });
        }
        if self.st.finished.refuses(txn, coordinator, age) {
            return Some(TxnReply::Aborted {
                reason: AbortReason::ParticipantRefused,
            });
        }
        shards.iter().find_map(|s| self.refusal(*s))
    }

    fn on_read(&mut self, from: Addr, txn: TxnId, age: Age, keys: Vec<String>) {
        let refuse = |g: &mut Group, reply: TxnReply| {
            g.send(
                from,
                Msg::ReadReply {
                    txn,
                    result: Err(reply),
                },
            )
        };
        let coordinator = match from {
            Addr::Group(g) => g,
            _ => NO_GROUP,
        };
        if let Some(r) = self.admission(txn, age, coordinator, keys.iter().map(String::as_str)) {
            return refuse(self, r);
        }
        if self.cfg.cc == Cc::TwoPl {
            let wants: Vec<(String, Mode)> =
                keys.iter().map(|k| (k.clone(), Mode::Shared)).collect();
            match self.lock_all(txn, age, &wants) {
                Locked::Granted => {
                    self.v.phase.entry(txn).or_insert(Phase::Reading);
                }
                Locked::Wait => {
                    self.wait(txn, WaitKind::Read, from, Msg::Read { txn, age, keys });
                    return;
                }
                Locked::Abort => {
                    return refuse(
                        self,
                        TxnReply::Aborted {
                            reason: AbortReason::LockConflict,
                        },
                    )
                }
            }
        }
        let values = keys
            .iter()
            .map(|k| (k.clone(), self.st.shards[&self.shard(k)].get(k)))
            .collect();
        self.send(
            from,
            Msg::ReadReply {
                txn,
                result: Ok(values),
            },
        );
    }

    fn on_prepare(
        &mut self,
        from: Addr,
        txn: TxnId,
        age: Age,
        reads: Vec<(String, u64)>,
        writes: Vec<WriteOp>,
    ) {
        let Addr::Group(coordinator) = from else {
            return;
        };
        if let Some(p) = self.st.prepared.get(&txn) {
            let vote = prepared_vote(p, coordinator);
            return self.send(from, Msg::Vote { txn, vote });
        }
        if self.v.phase.get(&txn) == Some(&Phase::Proposed) {
            return;
        }
        let refuse = |g: &mut Group, reply: TxnReply| {
            g.abort_two_phase_here(txn, AbortReason::LockConflict);
            g.send(
                from,
                Msg::Vote {
                    txn,
                    vote: Err(reply),
                },
            )
        };
        let keys = reads
            .iter()
            .map(|(k, _)| k.as_str())
            .chain(writes.iter().map(WriteOp::key));
        if let Some(r) = self.admission(txn, age, coordinator, keys) {
            return refuse(self, r);
        }
        if self.cfg.cc == Cc::TwoPl {
            // The reads were made under shared locks taken by this leader; if they are gone
            // (a crash, a wound), the values read may be stale.
            if reads
                .iter()
                .any(|(k, _)| self.v.locks.mode(txn, k).is_none())
            {
                return refuse(
                    self,
                    TxnReply::Aborted {
                        reason: AbortReason::LockConflict,
                    },
                );
            }
            let wants: Vec<(String, Mode)> = writes
                .iter()
                .map(|w| (w.key().to_string(), Mode::Exclusive))
                .collect();
            // A younger prepare waits for an older holder, as wound-wait says. Its transaction
            // may already be prepared at another participant, where it cannot be wounded
            // there: an older transaction waiting there for it, and holding the lock here,
            // would deadlock the two until the coordinator's vote timeout (800 ms). That
            // participant wounds it through its coordinator instead (`wound_prepared`), and
            // this one says that its prepare waits (`tell_prepare_waits`); the coordinator
            // aborts it through its log if it has not decided (`on_wound`). Voting no
            // here whenever an older transaction holds the lock was tried and reverted: it
            // also ended this transaction's "prepared there, waiting here" window when no
            // deadlock existed, and the generic fault schedule then caught
            // `early-lock-release` in 1 of 8 seeds instead of 8 of 8 (store/README.md).
            match self.lock_all(txn, age, &wants) {
                Locked::Granted => {}
                Locked::Wait => {
                    let msg = Msg::Prepare {
                        txn,
                        age,
                        reads,
                        writes,
                    };
                    if self.wait(txn, WaitKind::Prepare, from, msg) {
                        self.tell_prepare_waits(txn, from);
                    }
                    return;
                }
                Locked::Abort => {
                    return self.send(
                        from,
                        Msg::Vote {
                            txn,
                            vote: Err(TxnReply::Aborted {
                                reason: AbortReason::LockConflict,
                            }),
                        },
                    )
                }
            }
            self.v.phase.insert(txn, Phase::Proposed);
        }
        self.propose_once(
            format!("prepare{txn}"),
            GroupCmd::Prepare {
                txn,
                age,
                coordinator,
                epoch: self.st.epoch,
                reads,
                writes,
            },
        );
    }

    fn on_decision(&mut self, from: Addr, txn: TxnId, commit: bool, results: Vec<OpResult>) {
        // A leader that has not applied its own epoch may not have applied this
        // transaction's prepare yet: acknowledging now could let the coordinator forget a
        // decision this group still needs. The coordinator retransmits.
        if !self.is_ready() {
            return;
        }
        // Prepared for another coordinator's attempt of the same id (a client re-routed it):
        // this decision is not about that prepare. Acknowledged below: this sender's
        // attempt was never prepared here.
        let for_this_prepare = self
            .st
            .prepared
            .get(&txn)
            .map(|p| Addr::Group(p.coordinator) == from);
        if for_this_prepare == Some(true) {
            self.propose_once(
                format!("finish{txn}"),
                GroupCmd::Finish {
                    txn,
                    commit,
                    results,
                },
            );
            return;
        }
        // A prepare of this id proposed here and not applied yet is left to its record:
        // when it is another coordinator's attempt (a client re-routed the id), its locks
        // must stay until it applies (the simulator's late-prepares test, seed 2129 of 2PL:
        // a late abort of the id's first attempt freed the locks of its second attempt's
        // proposed prepare, a read took a shared lock on a key that prepare then forced its
        // exclusive lock on, and its commit made the read stale); when it is this
        // coordinator's, it is prepared when applied and learns the abort by asking.
        let proposed_here = self.v.phase.get(&txn) == Some(&Phase::Proposed);
        if !commit && for_this_prepare.is_none() && !proposed_here {
            self.abort_two_phase_here(txn, AbortReason::ParticipantRefused);
        }
        self.send(from, Msg::DecisionAck { txn });
    }

    fn on_query_decision(&mut self, from: Addr, txn: TxnId) {
        if !matches!(from, Addr::Group(_)) {
            return;
        }
        match self.st.coord.get(&txn) {
            Some(CoordRecord {
                decision: Some((commit, reply)),
                ..
            }) => {
                let results = committed_results(reply);
                let commit = *commit;
                self.send(
                    from,
                    Msg::Decision {
                        txn,
                        commit,
                        results,
                    },
                );
            }
            Some(rec) => {
                if !self.v.running.contains_key(&txn) {
                    let participants = rec.participants.clone();
                    self.presume_abort(txn, participants);
                }
            }
            // No record: its `Begin` is applied before any participant is asked to read or
            // prepare, and a record is dropped only after every participant applied the
            // decision. So the asker prepared a late copy of a forgotten transaction: abort
            // that copy, without logging a new decision (a new record would answer the
            // client's retry with an abort, for a transaction that may have committed).
            // Only once this leader's epoch is applied: before, its state may lack the record.
            None => {
                if self.is_ready() {
                    let msg = Msg::Decision {
                        txn,
                        commit: false,
                        results: Vec::new(),
                    };
                    self.send(from, msg);
                }
            }
        }
    }

    /// A participant of `txn` says an older transaction waits there for its locks
    /// ([`Msg::Wound`], `waits` false) or that its prepare waits there for an older one
    /// ([`Msg::PrepareWaits`], `waits` true). Once both are known (a wait-for chain through
    /// `txn`, which no participant may abort once prepared: possibly a deadlock that only
    /// the vote timeout would end), `txn` is aborted; a wound alone (it is merely slow to
    /// decide, e.g. votes in flight) is not acted on, so that an older transaction waits as
    /// for any prepared one. Decided only when this leader's live attempt is still
    /// collecting votes, and then through [`Group::decide`]: the abort is logged before
    /// anyone hears of it, and the first decision in the log wins. An attempt whose decision
    /// is proposed (commit or abort) or logged ignores it: a logged commit must be applied
    /// by every participant, and a commit proposed but not yet applied may still be the
    /// first decision in the log, so an abort proposed after it could contradict what a
    /// client is told. Undecided records without a live attempt here are presumed aborted
    /// at the next tick anyway, and forgotten ones are not answered (the sender asks with
    /// `QueryDecision` if it must).
    fn on_wound(&mut self, from: Addr, txn: TxnId, waits: bool) {
        let Addr::Group(g) = from else { return };
        if !self.st.undecided.contains(&txn) {
            return;
        }
        let Some(r) = self.v.running.get_mut(&txn) else {
            return;
        };
        if r.phase != CoordPhase::Preparing || !r.plan.contains_key(&g) {
            return;
        }
        if waits {
            if !r.yes.contains(&g) {
                r.waits_at.insert(g);
            }
        } else {
            r.wounded = true;
        }
        if r.wounded && !r.waits_at.is_empty() {
            self.decide(
                txn,
                false,
                TxnReply::Aborted {
                    reason: AbortReason::LockConflict,
                },
            );
        }
    }

    /// A coordinator with no live attempt and no logged decision: log an abort.
    fn presume_abort(&mut self, txn: TxnId, participants: Vec<GroupId>) {
        self.propose_once(
            format!("decide{txn}"),
            GroupCmd::Decide {
                txn,
                commit: false,
                reply: TxnReply::Aborted {
                    reason: AbortReason::CoordinatorRecovered,
                },
                participants,
            },
        );
    }

    fn on_read_reply(
        &mut self,
        from: Addr,
        txn: TxnId,
        result: Result<Vec<(String, Versioned)>, TxnReply>,
    ) {
        let Addr::Group(g) = from else { return };
        let Some(r) = self.v.running.get_mut(&txn) else {
            return;
        };
        if r.phase != CoordPhase::Reading {
            return;
        }
        match result {
            Err(reply) => self.decide(txn, false, reply),
            Ok(values) => {
                r.reads.extend(values);
                r.read_done.insert(g);
                if r.read_done.len() == r.plan.len() {
                    self.after_reads(txn);
                }
            }
        }
    }

    fn start_reads(&mut self, txn: TxnId) {
        let now = self.v.tick;
        let Some(r) = self.v.running.get_mut(&txn) else {
            return;
        };
        r.phase = CoordPhase::Reading;
        r.phase_tick = now;
        r.sent_tick = now;
        let mut sends = Vec::new();
        for (g, (keys, _)) in &r.plan {
            if keys.is_empty() {
                r.read_done.insert(*g);
            } else {
                sends.push((
                    *g,
                    Msg::Read {
                        txn,
                        age: r.req.age,
                        keys: keys.clone(),
                    },
                ));
            }
        }
        let all_done = r.read_done.len() == r.plan.len();
        for (g, m) in sends {
            self.send(Addr::Group(g), m);
        }
        if all_done {
            self.after_reads(txn);
        }
    }

    fn after_reads(&mut self, txn: TxnId) {
        let now = self.v.tick;
        let Some(r) = self.v.running.get_mut(&txn) else {
            return;
        };
        let reads = &r.reads;
        match evaluate(&r.req.ops, |k| {
            reads.get(k).cloned().unwrap_or(Versioned {
                value: None,
                version: 0,
            })
        }) {
            Err(reply) => self.decide(txn, false, reply),
            Ok((results, _)) => {
                r.results = results;
                r.phase = CoordPhase::Preparing;
                r.phase_tick = now;
                self.send_prepares(txn);
            }
        }
    }

    fn prepare_msgs(r: &Running) -> Vec<(GroupId, Msg)> {
        r.plan
            .iter()
            .filter(|(g, _)| !r.yes.contains(g))
            .map(|(g, (keys, writes))| {
                let reads = keys
                    .iter()
                    .map(|k| (k.clone(), r.reads.get(k).map(|v| v.version).unwrap_or(0)))
                    .collect();
                (
                    *g,
                    Msg::Prepare {
                        txn: r.req.id,
                        age: r.req.age,
                        reads,
                        writes: writes.clone(),
                    },
                )
            })
            .collect()
    }

    fn send_prepares(&mut self, txn: TxnId) {
        let now = self.v.tick;
        let Some(r) = self.v.running.get_mut(&txn) else {
            return;
        };
        r.sent_tick = now;
        for (g, m) in Group::prepare_msgs(r) {
            self.send(Addr::Group(g), m);
        }
    }

    fn on_vote(&mut self, from: Addr, txn: TxnId, vote: Result<(), TxnReply>) {
        let Addr::Group(g) = from else { return };
        let Some(r) = self.v.running.get_mut(&txn) else {
            return;
        };
        if r.phase != CoordPhase::Preparing {
            return;
        }
        match vote {
            Err(reply) => self.decide(txn, false, reply),
            Ok(()) => {
                r.yes.insert(g);
                r.waits_at.remove(&g);
                if r.yes.len() == r.plan.len() {
                    let results = r.results.clone();
                    self.decide(txn, true, TxnReply::Committed { results });
                }
            }
        }
    }

    /// Proposes the decision; nobody hears of it before it is applied.
    fn decide(&mut self, txn: TxnId, commit: bool, reply: TxnReply) {
        let now = self.v.tick;
        let Some(r) = self.v.running.get_mut(&txn) else {
            return;
        };
        if r.phase == CoordPhase::Deciding {
            return;
        }
        // A participant refusing with a recorded `Committed` reply has found this very
        // transaction in its exactly-once table: an earlier attempt took the fast path (one
        // group, atomic) before the shards were split over groups. Nothing is left to do
        // here (the decision is abort), but the client learns that it was applied.
        let cmd = GroupCmd::Decide {
            txn,
            commit,
            reply,
            participants: r.plan.keys().copied().collect(),
        };
        r.phase = CoordPhase::Deciding;
        r.phase_tick = now;
        r.decide = Some(cmd.clone());
        self.propose_once(format!("decide{txn}"), cmd);
    }

    fn tick(&mut self) {
        self.v.tick += 1;
        let now = self.v.tick;
        let t = self.cfg.timing.clone();
        if !self.is_ready() {
            let e = self.v.want_epoch;
            self.propose_once(format!("epoch{e}"), GroupCmd::Epoch(e));
            return;
        }
        if self.migration_done() && now >= self.v.last_poll + t.poll_config_ticks {
            self.v.last_poll = now;
            let num = Some(self.st.config.num + 1);
            self.send(Addr::Controller, Msg::QueryConfig { num });
        }
        let arriving: Vec<ShardId> = self.st.arriving.iter().copied().collect();
        for s in arriving {
            let last = self.v.last_pull.get(&s).copied().unwrap_or(0);
            if last == 0 || now >= last + t.pull_shard_ticks {
                self.v.last_pull.insert(s, now);
                let from = self.st.prev.owner(s);
                let num = self.st.config.num;
                self.send(Addr::Group(from), Msg::PullShard { num, shard: s });
            }
        }
        if now.is_multiple_of(t.retransmit_ticks.max(1)) {
            let asks: Vec<(GroupId, Msg)> = self
                .st
                .unacked_handoffs
                .iter()
                .filter(|(_, g)| **g != NO_GROUP)
                .map(|(&(num, shard), &g)| (g, Msg::HandoffQuery { num, shard }))
                .collect();
            for (g, msg) in asks {
                self.send(Addr::Group(g), msg);
            }
        }
        self.tick_coordinator(&t);
        // Orphaned coordinator records (their attempt died with a previous leader).
        let orphans: Vec<(TxnId, Vec<GroupId>)> = self
            .st
            .undecided
            .iter()
            .filter(|id| !self.v.running.contains_key(id))
            .map(|id| (*id, self.st.coord[id].participants.clone()))
            .collect();
        for (id, participants) in orphans {
            self.presume_abort(id, participants);
        }
        let resend: Vec<(TxnId, Vec<GroupId>)> = self
            .v
            .unacked
            .iter_mut()
            .filter(|(_, (_, sent))| now >= *sent + t.retransmit_ticks)
            .map(|(id, (left, sent))| {
                *sent = now;
                (*id, left.iter().copied().collect())
            })
            .collect();
        for (id, groups) in resend {
            if groups.is_empty() {
                self.forget(id);
                continue;
            }
            if let Some(CoordRecord {
                decision: Some((commit, reply)),
                ..
            }) = self.st.coord.get(&id)
            {
                let (commit, results) = (*commit, committed_results(reply));
                for g in groups {
                    let msg = Msg::Decision {
                        txn: id,
                        commit,
                        results: results.clone(),
                    };
                    self.send(Addr::Group(g), msg);
                }
            }
        }
        let prepared: Vec<(TxnId, GroupId)> = self
            .st
            .prepared
            .iter()
            .map(|(id, p)| (*id, p.coordinator))
            .collect();
        for (id, coordinator) in prepared {
            let last = *self.v.last_query.entry(id).or_insert(now);
            if now >= last + t.query_decision_ticks {
                self.v.last_query.insert(id, now);
                self.send(Addr::Group(coordinator), Msg::QueryDecision { txn: id });
            }
        }
        let horizon = t.repropose_ticks * 4;
        self.v.proposed.retain(|_, at| now < *at + horizon);
        let Volatile {
            waiters,
            waits_told,
            ..
        } = &mut self.v;
        waits_told.retain(|txn, _| waiters.contains_key(&(*txn, WaitKind::Prepare)));
        self.v.wake = true;
    }

    fn tick_coordinator(&mut self, t: &Timing) {
        let now = self.v.tick;
        let ids: Vec<TxnId> = self.v.running.keys().copied().collect();
        for id in ids {
            let r = &self.v.running[&id];
            let waited = now.saturating_sub(r.phase_tick);
            let resend = now >= r.sent_tick + t.retransmit_ticks;
            match r.phase {
                CoordPhase::Beginning => {
                    let participants = r.plan.keys().copied().collect();
                    self.propose_once(
                        format!("begin{id}"),
                        GroupCmd::Begin {
                            txn: id,
                            participants,
                        },
                    );
                }
                CoordPhase::Reading => {
                    if waited > t.vote_timeout_ticks {
                        self.decide(
                            id,
                            false,
                            TxnReply::Aborted {
                                reason: AbortReason::ParticipantRefused,
                            },
                        );
                    } else if resend {
                        let sends: Vec<(GroupId, Msg)> = r
                            .plan
                            .iter()
                            .filter(|(g, (keys, _))| !keys.is_empty() && !r.read_done.contains(g))
                            .map(|(g, (keys, _))| {
                                (
                                    *g,
                                    Msg::Read {
                                        txn: id,
                                        age: r.req.age,
                                        keys: keys.clone(),
                                    },
                                )
                            })
                            .collect();
                        if let Some(r) = self.v.running.get_mut(&id) {
                            r.sent_tick = now;
                        }
                        for (g, m) in sends {
                            self.send(Addr::Group(g), m);
                        }
                    }
                }
                CoordPhase::Preparing => {
                    if waited > t.vote_timeout_ticks {
                        if self.has_bug(ShardBug::PresumedCommit) {
                            let results = r.results.clone();
                            self.decide(id, true, TxnReply::Committed { results });
                        } else {
                            self.decide(
                                id,
                                false,
                                TxnReply::Aborted {
                                    reason: AbortReason::ParticipantRefused,
                                },
                            );
                        }
                    } else if resend {
                        self.send_prepares(id);
                    }
                }
                CoordPhase::Deciding => {
                    if let Some(cmd) = r.decide.clone() {
                        self.propose_once(format!("decide{id}"), cmd);
                    }
                }
            }
        }
    }

    // ----- applying the log -----

    fn apply(&mut self, cmd: GroupCmd) {
        self.st.applied += 1;
        match cmd {
            GroupCmd::Epoch(e) => {
                self.st.epoch = self.st.epoch.max(e);
                if self.is_ready() {
                    for (_, (from, req)) in std::mem::take(&mut self.v.parked) {
                        self.on_txn(from, req);
                    }
                }
            }
            GroupCmd::NewConfig(cfg) => self.apply_config(cfg),
            GroupCmd::InstallShard { num, shard, data } => {
                if num == self.st.config.num && self.st.arriving.remove(&shard) {
                    self.st.shards.insert(shard, data);
                    let group = self.cfg.id;
                    self.observe(Observation::ShardInstalled { group, num, shard });
                    // Logged: the losing group may drop its copy's data.
                    let from = Addr::Group(self.st.prev.owner(shard));
                    self.send(from, Msg::HandoffAck { num, shard });
                    self.collect_handoffs();
                }
            }
            GroupCmd::HandoffAcked { num, shard } => {
                if self.st.unacked_handoffs.remove(&(num, shard)).is_some() {
                    self.collect_handoffs();
                }
            }
            GroupCmd::Local { req, epoch } => self.apply_local(req, epoch),
            GroupCmd::Begin { txn, participants } => {
                if let std::collections::btree_map::Entry::Vacant(e) = self.st.coord.entry(txn) {
                    e.insert(CoordRecord {
                        participants,
                        decision: None,
                    });
                    self.st.undecided.insert(txn);
                }
                if self
                    .v
                    .running
                    .get(&txn)
                    .is_some_and(|r| r.phase == CoordPhase::Beginning)
                {
                    self.start_reads(txn);
                }
            }
            GroupCmd::Prepare {
                txn,
                age,
                coordinator,
                epoch,
                reads,
                writes,
            } => self.apply_prepare(txn, age, coordinator, epoch, reads, writes),
            GroupCmd::Decide {
                txn,
                commit,
                reply,
                participants,
            } => self.apply_decide(txn, commit, reply, participants),
            GroupCmd::Finish {
                txn,
                commit,
                results,
            } => self.apply_finish(txn, commit, results),
            GroupCmd::Forget { txn } => {
                if let Some(CoordRecord {
                    decision: Some((_, reply)),
                    ..
                }) = self.st.coord.get(&txn)
                {
                    if !super::is_anonymous(txn.client) {
                        let (reply, max) = (reply.clone(), self.cfg.dedup_max_bytes_per_shard);
                        self.st.forgotten.record(txn.client, txn.seq, reply, max);
                    }
                    self.st.coord.remove(&txn);
                }
                self.v.unacked.remove(&txn);
            }
        }
    }

    fn apply_config(&mut self, cfg: Config) {
        if cfg.num != self.st.config.num + 1
            || !self.migration_done()
            || cfg.shards.len() != self.cfg.shards
        {
            return;
        }
        let me = self.cfg.id;
        for s in 0..cfg.shards.len() {
            let (old, new) = (self.st.config.owner(s), cfg.owner(s));
            if old == me && new != me {
                self.st.leaving.insert(s);
            } else if old != me && new == me {
                if old == NO_GROUP {
                    self.st.shards.insert(s, ShardData::default());
                } else {
                    self.st.arriving.insert(s);
                }
            }
        }
        self.st.prev = std::mem::replace(&mut self.st.config, cfg);
        let num = self.st.config.num;
        self.observe(Observation::ConfigApplied { group: me, num });
        self.try_freeze();
    }

    /// Freezes each leaving shard that no prepared transaction touches.
    fn try_freeze(&mut self) {
        let leaving: Vec<ShardId> = self.st.leaving.iter().copied().collect();
        for s in leaving {
            if self.st.prepared.values().any(|p| p.shards.contains(&s)) {
                continue;
            }
            self.st.leaving.remove(&s);
            let data = self.st.shards.remove(&s).unwrap_or_default();
            let num = self.st.config.num;
            self.st.outgoing.insert((num, s), data);
            // No group gains it: nobody pulls it (the next owner starts it empty).
            let gainer = self.st.config.owner(s);
            if gainer != NO_GROUP {
                self.st.unacked_handoffs.insert((num, s), gainer);
            }
            self.st.frozen_at.insert(s, (num, self.st.applied));
            let group = self.cfg.id;
            self.observe(Observation::ShardFrozen {
                group,
                num,
                shard: s,
            });
        }
        self.collect_handoffs();
    }

    /// Drops what neither a pull nor a retry needs of the handed-off copies (see "Migration"
    /// in the module docs): an acknowledged copy loses its data, and goes once a newer copy
    /// of its shard exists or the shard is held here again (retries consult the held table or
    /// the newest copy only); past `handoff_tables_max` acknowledged tables, the oldest are
    /// evicted into their floors. An unacknowledged copy is never touched.
    fn collect_handoffs(&mut self) {
        // The planted bug serves reads from a frozen copy's data for a while.
        let keep_data = self.has_bug(ShardBug::MigrationServesStale);
        let max_tables = self.cfg.handoff_tables_max;
        let Replicated {
            outgoing,
            unacked_handoffs: unacked,
            shards,
            ..
        } = &mut self.st;
        // Keys are ordered by config, so the last copy of a shard is its newest.
        let newest: BTreeMap<ShardId, ConfigNum> =
            outgoing.keys().map(|&(num, s)| (s, num)).collect();
        outgoing.retain(|key, _| {
            unacked.contains_key(key) || (newest[&key.1] == key.0 && !shards.contains_key(&key.1))
        });
        let mut tables = 0;
        for (key, copy) in outgoing.iter_mut().rev() {
            if unacked.contains_key(key) {
                continue;
            }
            if !keep_data {
                copy.data.clear();
            }
            if !copy.dedup.is_empty() {
                tables += 1;
                if tables > max_tables {
                    copy.dedup.evict_all();
                }
            }
        }
    }

    /// Whether the shard handed to this group in config `num` is installed here (its install
    /// applied from the log): a group applies config `num + 1` only after installing every
    /// shard arriving in `num`.
    fn installed(&self, num: ConfigNum, shard: ShardId) -> bool {
        let c = &self.st.config;
        c.num > num
            || (c.num == num && c.owner(shard) == self.cfg.id && !self.st.arriving.contains(&shard))
    }

    /// The frozen copy of a shard this group handed off within the stale window (only used
    /// by [`ShardBug::MigrationServesStale`]).
    fn stale_copy(&self, s: ShardId) -> Option<&ShardData> {
        if self.serving(s) {
            return self.st.shards.get(&s);
        }
        let (num, at) = self.st.frozen_at.get(&s)?;
        if self.st.applied.saturating_sub(*at) > STALE_WINDOW_ENTRIES {
            return None;
        }
        self.st.outgoing.get(&(*num, s))
    }

    fn apply_local(&mut self, req: TxnRequest, epoch: u64) {
        let id = req.id;
        if self.cfg.cc == Cc::TwoPl && epoch != self.st.epoch {
            // An earlier leader's record (its locks were lost with it): refused, nothing
            // applied. Unanswered, and this leader's own attempt of the same id (a retry,
            // parked until the epoch applied) keeps its locks: a "not ready" answer here
            // could reach a retry that then commits. The original request, at the old
            // leader, times out (outcome unknown).
            return;
        }
        if self.st.prepared.contains_key(&id) {
            // Another coordinator's attempt of this id was prepared here in the meantime (a
            // re-routed client): that one decides. Nothing applied; unanswered, as above.
            self.v.local.remove(&id);
            return;
        }
        self.v.local.remove(&id);
        self.release(id);
        let shards: BTreeSet<ShardId> = req.ops.iter().map(|o| self.shard(o.key())).collect();
        let read_only = req.ops.iter().all(|o| matches!(o, TxnOp::Read(_)));
        if read_only
            && self.has_bug(ShardBug::MigrationServesStale)
            && shards.iter().any(|s| !self.serving(*s))
            && shards.iter().all(|s| self.stale_copy(*s).is_some())
        {
            // The planted bug: answer from the (possibly frozen) copies.
            let mut reads = Vec::new();
            let base = |k: &str| {
                let v = self
                    .stale_copy(self.shard(k))
                    .expect("checked above")
                    .get(k);
                v
            };
            let (results, _) = evaluate(&req.ops, base).expect("reads have no compares");
            for r in &results {
                if let OpResult::Read { key, version, .. } = r {
                    reads.push((key.clone(), *version));
                }
            }
            let group = self.cfg.id;
            self.observe(Observation::Committed {
                txn: id,
                group,
                two_phase: false,
                reads,
                writes: vec![],
            });
            return self.reply(id, TxnReply::Committed { results });
        }
        for s in &shards {
            if let Some(r) = self.refusal(*s) {
                return self.refuse_local(id, r);
            }
            if let Some(r) = self.dedup(*s, id) {
                return self.reply(id, r);
            }
        }
        if self.cfg.cc == Cc::Occ {
            let reads: Vec<&str> = req
                .ops
                .iter()
                .filter(|o| o.reads())
                .map(TxnOp::key)
                .collect();
            let writes: Vec<&str> = req
                .ops
                .iter()
                .filter(|o| o.writes())
                .map(TxnOp::key)
                .collect();
            if self.conflicts_with_prepared(&reads, &writes, true) {
                return self.refuse_local(
                    id,
                    TxnReply::Aborted {
                        reason: AbortReason::ValidationFailed,
                    },
                );
            }
        }
        let shards_ref = &self.st.shards;
        let cfg_shards = self.cfg.shards;
        let base = |k: &str| shards_ref[&super::shard_of(k, cfg_shards)].get(k);
        let (results, writes) = match evaluate(&req.ops, base) {
            Ok(x) => x,
            Err(reply) => return self.refuse_local(id, reply),
        };
        let reads = read_versions(&results);
        let reply = TxnReply::Committed { results };
        let written = self.install(id, &shards, &writes, &reply);
        let group = self.cfg.id;
        self.observe(Observation::Committed {
            txn: id,
            group,
            two_phase: false,
            reads,
            writes: written,
        });
        self.reply(id, reply);
    }

    /// A fast-path record that applied nothing: the definite answer is also remembered
    /// against the id, so that a retry of it reaching this leader afterwards is refused too
    /// rather than run anew. The server hands a reply to whichever request of the id waits
    /// (`Shared::wait_for`): a retry that arrived just before this answer takes it as its
    /// own, and must not then commit.
    fn refuse_local(&mut self, id: TxnId, reply: TxnReply) {
        if !super::is_anonymous(id.client) {
            self.remember_abort(id);
        }
        self.reply(id, reply)
    }

    /// Backward validation against transactions prepared here: a key read must not be
    /// written by one, a key written must be neither read nor written by one.
    fn conflicts_with_prepared(&self, reads: &[&str], writes: &[&str], check_reads: bool) -> bool {
        self.st.prepared.values().any(|p| {
            let p_writes = || p.writes.iter().map(WriteOp::key);
            let p_reads = || p.reads.iter().map(|(k, _)| k.as_str());
            (check_reads && reads.iter().any(|k| p_writes().any(|w| w == *k)))
                || writes
                    .iter()
                    .any(|k| p_writes().any(|w| w == *k) || p_reads().any(|r| r == *k))
        })
    }

    /// Applies writes in order (one new version per key written) and records the reply in
    /// the exactly-once table of every shard in `touched` (reads included, so that a retried
    /// read-only transaction is answered once too). Returns (key, new version).
    fn install(
        &mut self,
        txn: TxnId,
        touched: &BTreeSet<ShardId>,
        writes: &[WriteOp],
        reply: &TxnReply,
    ) -> Vec<(String, u64)> {
        let mut versions: BTreeMap<String, u64> = BTreeMap::new();
        for w in writes {
            let s = self.shard(w.key());
            let shard = self.st.shards.entry(s).or_default();
            let stored = shard.data.get(w.key()).cloned();
            let old_version = stored.as_ref().map(|s| s.version).unwrap_or(0);
            let version = *versions
                .entry(w.key().to_string())
                .or_insert(old_version + 1);
            let value = match (w, stored.and_then(|s| s.value)) {
                (WriteOp::Put(_, v), _) => Some(Value::Str(v.clone())),
                (WriteOp::Delete(_), _) => None,
                (WriteOp::Append(_, v), None) => Some(Value::List(vec![v.clone()])),
                (WriteOp::Append(_, v), Some(Value::List(mut l))) => {
                    l.push(v.clone());
                    Some(Value::List(l))
                }
                (WriteOp::Append(_, v), Some(Value::Str(old))) => {
                    Some(Value::List(vec![old, v.clone()]))
                }
            };
            shard
                .data
                .insert(w.key().to_string(), Stored { value, version });
        }
        let recorded = if super::is_anonymous(txn.client) {
            &BTreeSet::new()
        } else {
            touched
        };
        let max_bytes = self.cfg.dedup_max_bytes_per_shard;
        for s in recorded {
            if let Some(shard) = self.st.shards.get_mut(s) {
                shard
                    .dedup
                    .record(txn.client, txn.seq, reply.clone(), max_bytes);
            }
        }
        versions.into_iter().collect()
    }

    fn apply_prepare(
        &mut self,
        txn: TxnId,
        age: Age,
        coordinator: GroupId,
        epoch: u64,
        reads: Vec<(String, u64)>,
        writes: Vec<WriteOp>,
    ) {
        let to = Addr::Group(coordinator);
        if let Some(p) = self.st.prepared.get(&txn) {
            let vote = prepared_vote(p, coordinator);
            return self.send(to, Msg::Vote { txn, vote });
        }
        let refuse = |g: &mut Group, reply: TxnReply| {
            g.abort_two_phase_here(txn, AbortReason::LockConflict);
            g.send(
                to,
                Msg::Vote {
                    txn,
                    vote: Err(reply),
                },
            );
        };
        let shards: BTreeSet<ShardId> = reads
            .iter()
            .map(|(k, _)| k.as_str())
            .chain(writes.iter().map(WriteOp::key))
            .map(|k| self.shard(k))
            .collect();
        if let Some(r) = shards.iter().find_map(|s| self.dedup(*s, txn)) {
            return refuse(self, r);
        }
        // A second copy of the record (proposed again after `repropose_ticks`, or a late
        // message prepared by a leader that had not applied the finish yet) of a transaction
        // finished here: prepared anew, it could learn "commit" and apply twice.
        if self.st.finished.refuses(txn, coordinator, age) {
            return refuse(
                self,
                TxnReply::Aborted {
                    reason: AbortReason::ParticipantRefused,
                },
            );
        }
        if self.cfg.cc == Cc::TwoPl && epoch != self.st.epoch {
            return refuse(
                self,
                TxnReply::Aborted {
                    reason: AbortReason::NotReady,
                },
            );
        }
        if let Some(r) = shards.iter().find_map(|s| self.refusal(*s)) {
            return refuse(self, r);
        }
        if self.cfg.cc == Cc::Occ {
            let skip_reads = self.has_bug(ShardBug::OccSkipReadValidation);
            let stale = !skip_reads
                && reads
                    .iter()
                    .any(|(k, seen)| self.st.shards[&self.shard(k)].get(k).version != *seen);
            let read_keys: Vec<&str> = reads.iter().map(|(k, _)| k.as_str()).collect();
            let write_keys: Vec<&str> = writes.iter().map(WriteOp::key).collect();
            if stale || self.conflicts_with_prepared(&read_keys, &write_keys, !skip_reads) {
                return refuse(
                    self,
                    TxnReply::Aborted {
                        reason: AbortReason::ValidationFailed,
                    },
                );
            }
        }
        // Under 2PL a read's shared lock, held from the read to here, keeps its version. A
        // leader change between a Read and a late copy of it breaks that: the new leader
        // serves the copy under a fresh lock after an older transaction wrote the key, and
        // the Prepare, proposed by that leader, carries the version read at the first one
        // (simulator seed 376 of 2PL wound-wait: a write skew). So the versions are checked
        // where every replica decides alike.
        if self.cfg.cc == Cc::TwoPl
            && reads
                .iter()
                .any(|(k, seen)| self.st.shards[&self.shard(k)].get(k).version != *seen)
        {
            return refuse(
                self,
                TxnReply::Aborted {
                    reason: AbortReason::LockConflict,
                },
            );
        }
        if self.cfg.cc == Cc::TwoPl {
            // Usually held already (taken before proposing). Not so at a replica that became
            // leader while this record was still in flight from its predecessor: its lock
            // table must cover every prepared transaction before it serves.
            self.v.ages.insert(txn, age);
            for (k, _) in &reads {
                self.v.locks.force(txn, k, Mode::Shared);
            }
            for w in &writes {
                self.v.locks.force(txn, w.key(), Mode::Exclusive);
            }
        }
        self.st.prepared.insert(
            txn,
            Prepared {
                age,
                coordinator,
                reads,
                writes,
                shards,
            },
        );
        self.v.phase.remove(&txn);
        if self.has_bug(ShardBug::EarlyLockRelease) {
            self.v.locks.release_shared(txn);
            self.v.wake = true;
        }
        self.send(to, Msg::Vote { txn, vote: Ok(()) });
    }

    fn apply_decide(
        &mut self,
        txn: TxnId,
        commit: bool,
        reply: TxnReply,
        participants: Vec<GroupId>,
    ) {
        let rec = self.st.coord.entry(txn).or_insert(CoordRecord {
            participants: participants.clone(),
            decision: None,
        });
        if rec.decision.is_none() {
            rec.decision = Some((commit, reply));
            self.st.undecided.remove(&txn);
            let participants = rec.participants.clone();
            self.observe(Observation::Decided {
                txn,
                commit,
                participants,
            });
        }
        let rec = &self.st.coord[&txn];
        let (commit, reply) = rec.decision.clone().expect("set above");
        let participants = rec.participants.clone();
        self.v.running.remove(&txn);
        self.reply(txn, reply.clone());
        let results = committed_results(&reply);
        for g in &participants {
            let msg = Msg::Decision {
                txn,
                commit,
                results: results.clone(),
            };
            self.send(Addr::Group(*g), msg);
        }
        self.v
            .unacked
            .insert(txn, (participants.into_iter().collect(), self.v.tick));
    }

    fn apply_finish(&mut self, txn: TxnId, commit: bool, results: Vec<OpResult>) {
        let Some(p) = self.st.prepared.remove(&txn) else {
            return;
        };
        self.v.last_query.remove(&txn);
        self.v.wounds_sent.remove(&txn);
        if commit {
            let reply = TxnReply::Committed { results };
            let written = self.install(txn, &p.shards, &p.writes, &reply);
            let group = self.cfg.id;
            self.observe(Observation::Committed {
                txn,
                group,
                two_phase: true,
                reads: p.reads.clone(),
                writes: written,
            });
        }
        // Either way a late copy of the coordinator's Prepare (or Read) must be refused, not
        // prepared anew: its decision would be learnt again from the coordinator and a commit
        // applied twice (an anonymous transaction has no exactly-once entry to stop it). The
        // record is replicated, so a leader elected later refuses it too.
        let max = self.cfg.finished_max;
        self.st.finished.record(txn, p.coordinator, p.age, max);
        self.release(txn);
        self.try_freeze();
        self.send(Addr::Group(p.coordinator), Msg::DecisionAck { txn });
    }
}

/// A participant's vote when `txn` is already prepared here: yes to the coordinator that
/// prepared it; no to another one (a client re-routed the same id to another group, which
/// must not count this group's prepare for its own attempt: the first coordinator may abort
/// it).
fn prepared_vote(p: &Prepared, coordinator: GroupId) -> Result<(), TxnReply> {
    if p.coordinator == coordinator {
        Ok(())
    } else {
        Err(TxnReply::Aborted {
            reason: AbortReason::ParticipantRefused,
        })
    }
}

/// The state in a snapshot of an older layout, if the bytes are exactly that layout, and what
/// it lacked.
fn decode_older(bytes: &[u8]) -> Option<(Replicated, &'static str)> {
    let what = "group snapshot (older layout)";
    if let Ok(v2) = crate::codec::decode_exact::<ReplicatedV2>(what, bytes) {
        return Some((v2.into(), "the marks of unacknowledged hand-offs"));
    }
    let v1 = crate::codec::decode_exact::<ReplicatedV1>(what, bytes).ok()?;
    Some((v1.into(), "the record of finished transactions"))
}

fn committed_results(reply: &TxnReply) -> Vec<OpResult> {
    match reply {
        TxnReply::Committed { results } => results.clone(),
        _ => Vec::new(),
    }
}

fn read_versions(results: &[OpResult]) -> Vec<(String, u64)> {
    results
        .iter()
        .filter_map(|r| match r {
            OpResult::Read { key, version, .. } => Some((key.clone(), *version)),
            OpResult::IfRevision { key, revision } => Some((key.clone(), *revision)),
            _ => None,
        })
        .collect()
}

/// 2PL locks of a fast-path transaction: exclusive for keys written, shared for the others.
fn lock_wants(ops: &[TxnOp]) -> Vec<(String, Mode)> {
    let mut wants: BTreeMap<String, Mode> = BTreeMap::new();
    for op in ops {
        let mode = if op.writes() {
            Mode::Exclusive
        } else {
            Mode::Shared
        };
        let m = wants.entry(op.key().to_string()).or_insert(mode);
        *m = (*m).max(mode);
    }
    wants.into_iter().collect()
}

/// Runs a transaction's ops against `base` (each key's state before the transaction): reads
/// see the transaction's own earlier writes; compares look at the state before it. Returns
/// the results and the writes, or the failed compare.
pub fn evaluate(
    ops: &[TxnOp],
    base: impl Fn(&str) -> Versioned,
) -> Result<(Vec<OpResult>, Vec<WriteOp>), TxnReply> {
    let mut overlay: BTreeMap<&str, Option<Value>> = BTreeMap::new();
    let mut results = Vec::with_capacity(ops.len());
    let mut writes = Vec::new();
    for op in ops {
        match op {
            TxnOp::IfRevision(k, n) => {
                let v = base(k).version;
                if v != *n {
                    return Err(TxnReply::CompareFailed {
                        key: k.clone(),
                        revision: v,
                    });
                }
                results.push(OpResult::IfRevision {
                    key: k.clone(),
                    revision: v,
                });
            }
            TxnOp::IfValue(k, want) => {
                let b = base(k);
                if b.value.as_ref() != Some(&Value::Str(want.clone())) {
                    return Err(TxnReply::CompareFailed {
                        key: k.clone(),
                        revision: b.version,
                    });
                }
                results.push(OpResult::IfRevision {
                    key: k.clone(),
                    revision: b.version,
                });
            }
            TxnOp::Delete(k) => {
                overlay.insert(k, None);
                writes.push(WriteOp::Delete(k.clone()));
                results.push(OpResult::Delete { key: k.clone() });
            }
            TxnOp::Read(k) => {
                let b = base(k);
                let value = match overlay.get(k.as_str()) {
                    Some(v) => v.clone(),
                    None => b.value,
                };
                results.push(OpResult::Read {
                    key: k.clone(),
                    value,
                    version: b.version,
                });
            }
            TxnOp::Write(k, v) => {
                overlay.insert(k, Some(Value::Str(v.clone())));
                writes.push(WriteOp::Put(k.clone(), v.clone()));
                results.push(OpResult::Write {
                    key: k.clone(),
                    value: v.clone(),
                });
            }
            TxnOp::Append(k, v) => {
                let cur = match overlay.get(k.as_str()) {
                    Some(c) => c.clone(),
                    None => base(k).value,
                };
                let next = match cur {
                    None => Value::List(vec![v.clone()]),
                    Some(Value::List(mut l)) => {
                        l.push(v.clone());
                        Value::List(l)
                    }
                    Some(Value::Str(s)) => Value::List(vec![s, v.clone()]),
                };
                overlay.insert(k, Some(next));
                writes.push(WriteOp::Append(k.clone(), v.clone()));
                results.push(OpResult::Append {
                    key: k.clone(),
                    value: v.clone(),
                });
            }
        }
    }
    Ok((results, writes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(k: &str) -> Versioned {
        match k {
            "a" => Versioned {
                value: Some(Value::Str("x".into())),
                version: 3,
            },
            _ => Versioned {
                value: None,
                version: 0,
            },
        }
    }

    #[test]
    fn if_value_compares_string_values_and_delete_writes_a_tombstone() {
        let ok = evaluate(
            &[
                TxnOp::IfValue("a".into(), "x".into()),
                TxnOp::Delete("a".into()),
                TxnOp::Read("a".into()),
            ],
            base,
        )
        .expect("the compare holds");
        assert_eq!(
            ok.0,
            vec![
                OpResult::IfRevision {
                    key: "a".into(),
                    revision: 3
                },
                OpResult::Delete { key: "a".into() },
                OpResult::Read {
                    key: "a".into(),
                    value: None,
                    version: 3
                },
            ]
        );
        assert_eq!(ok.1, vec![WriteOp::Delete("a".into())]);
        for (key, want) in [("a", "y"), ("b", "x")] {
            let r = evaluate(&[TxnOp::IfValue(key.into(), want.into())], base);
            assert_eq!(
                r,
                Err(TxnReply::CompareFailed {
                    key: key.into(),
                    revision: base(key).version
                })
            );
        }
    }

    /// Snapshots of the two older layouts (today's without its last field: the marks of
    /// unacknowledged hand-offs; and without the last two: also the record of finished
    /// transactions) load: a handed-off copy is marked unacknowledged again (its gainer known
    /// from the config), so it still answers pulls and is dropped only once acknowledged.
    /// Bytes that are no layout exactly are an error naming the snapshot, never a misload.
    #[test]
    fn snapshots_of_the_older_layouts_load_and_damaged_bytes_are_refused() {
        let mut g = Group::new(GroupConfig::new(1));
        let mut cfg = Config::initial(g.cfg.shards);
        cfg.num = 1;
        cfg.shards = vec![1; g.cfg.shards];
        cfg.groups.insert(1, vec!["g1".into()]);
        g.step(Input::Apply(GroupCmd::NewConfig(cfg.clone())));
        let id = TxnId { client: 9, seq: 1 };
        g.step(Input::Apply(GroupCmd::Local {
            req: TxnRequest {
                id,
                age: Age { start: 1, txn: id },
                ops: vec![TxnOp::Write("k".into(), "v".into())],
            },
            epoch: 0,
        }));
        // Config 2 moves k's shard to group 2: group 1 freezes its copy.
        let shard = super::super::shard_of("k", g.cfg.shards);
        cfg.num = 2;
        cfg.shards[shard] = 2;
        cfg.groups.insert(2, vec!["g2".into()]);
        g.step(Input::Apply(GroupCmd::NewConfig(cfg)));
        assert_eq!(g.st.unacked_handoffs.get(&(2, shard)), Some(&2));
        let now = g.snapshot();
        let marks = crate::codec::encode(&g.st.unacked_handoffs);
        let finished = crate::codec::encode(&FinishedTxns::default());
        assert!(now.ends_with(&marks), "the marks are the last field");
        let v2 = &now[..now.len() - marks.len()];
        assert!(v2.ends_with(&finished), "the record comes before them");
        let v1 = &v2[..v2.len() - finished.len()];
        for old in [v2, v1] {
            let mut loaded = Group::from_snapshot(GroupConfig::new(1), old).expect("loads");
            assert_eq!(loaded.digest(), g.digest(), "{} bytes", old.len());
            let pull = Msg::PullShard { num: 2, shard };
            let out = loaded.step(Input::Message {
                from: Addr::Group(2),
                msg: pull,
            });
            let handed = out.iter().any(|o| {
                matches!(o, Output::Send { msg: Msg::ShardHandoff { data, .. }, .. }
                    if data.data.contains_key("k"))
            });
            assert!(handed, "the loaded copy answers a pull: {out:?}");
            loaded.step(Input::Apply(GroupCmd::HandoffAcked { num: 2, shard }));
            let kept = loaded.handed_off();
            assert_eq!((kept.len(), kept[0].keys, kept[0].unacked), (1, 0, false));
            assert_eq!(kept[0].dedup_entries, 1, "the table is kept");
        }
        for damaged in [
            &now[..now.len() - 1],
            &v2[..v2.len() - 1],
            &v1[..v1.len() - 1],
        ] {
            match Group::from_snapshot(GroupConfig::new(1), damaged) {
                Err(e) => assert!(e.to_string().contains("group 1 snapshot"), "{e}"),
                Ok(_) => panic!("{} damaged bytes loaded", damaged.len()),
            }
        }
    }

    #[test]
    fn a_deleted_key_keeps_growing_its_version() {
        let mut g = Group::new(GroupConfig::new(1));
        let mut cfg = Config::initial(g.cfg.shards);
        cfg.num = 1;
        cfg.shards = vec![1; g.cfg.shards];
        cfg.groups.insert(1, vec!["g1".into()]);
        g.step(Input::Apply(GroupCmd::NewConfig(cfg)));
        let txn = |seq, ops| GroupCmd::Local {
            req: TxnRequest {
                id: TxnId { client: 9, seq },
                age: Age {
                    start: seq,
                    txn: TxnId { client: 9, seq },
                },
                ops,
            },
            epoch: 0,
        };
        g.step(Input::Apply(txn(
            1,
            vec![TxnOp::Write("k".into(), "v".into())],
        )));
        g.step(Input::Apply(txn(2, vec![TxnOp::Delete("k".into())])));
        let after_delete = g.get("k").expect("served");
        assert_eq!((after_delete.value, after_delete.version), (None, 2));
        assert!(g.keys("", 10).is_empty(), "a tombstone is not listed");
        g.step(Input::Apply(txn(
            3,
            vec![TxnOp::Write("k".into(), "w".into())],
        )));
        let again = g.get("k").expect("served");
        assert_eq!(again.version, 3, "versions are never reused");
        assert_eq!(g.keys("", 10), vec![("k".to_string(), 3)]);
    }
}
