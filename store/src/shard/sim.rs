//! A deterministic simulator of the sharded store: a shard controller, several replica groups
//! and clients, one seed fixing everything.
//!
//! Model: each group's log is an ordered, durable, replicated log (the Paxos core under it is
//! tested by [`crate::paxos::sim`]); a proposal reaches the log after a short delay, and a
//! crash loses the group's volatile state and its proposals not yet in the log. A restarted
//! group replays its log ([`Group::recover`]). The controller is applied directly (its log is
//! a Paxos group too); groups and clients reach it by messages. Messages are lost, duplicated,
//! delayed and reordered during the fault phase; the controller moves shards (moves, joins,
//! leaves) under load; then a heal phase lets everything settle.
//!
//! Clients run general transactions (reads, writes, appends and deletes over a few keys, single- and
//! cross-shard), single-key reads, and bank transfers guarded by `if_revision` compares with
//! read-all-accounts transactions. A client that gets no answer retries the same transaction
//! (same id: exactly-once) a few times, then counts it unknown and moves on.
//!
//! Checks (history-based, from what clients saw plus the versions the groups report):
//! - no key version is installed by two transactions, no transaction installs a key twice
//!   (no write served by two groups, exactly-once across retries and moves);
//! - atomicity: a transaction decided commit took effect at every participant, one decided
//!   abort at none; every acknowledged transaction took effect;
//! - serializability: the direct serialization graph (ww, wr, rw edges from per-key version
//!   order) of committed transactions has no cycle;
//! - real time: a read never returns a version older than one written or read by a
//!   transaction acknowledged before the read was invoked;
//! - bank: every acknowledged read of all accounts sums to the total, and so do the final
//!   balances;
//! - after healing: every group at the latest config with its moves complete, nothing left
//!   prepared or undecided, each shard served by exactly one group, holding the newest version
//!   of each of its keys (nothing lost in a move).

use super::config::{Config, Controller, ControllerCmd};
use super::group::{Addr, Group, GroupCmd, GroupConfig, Input, Msg, Observation, Output};
use super::{
    AbortReason, Age, Cc, ClientId, Deadlock, GroupId, OpResult, ShardBug, TxnId, TxnOp, TxnReply,
    TxnRequest, Value, DEFAULT_SHARDS,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Knobs of one run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub groups: usize,
    pub clients: usize,
    pub shards: usize,
    pub cc: Cc,
    pub deadlock: Deadlock,
    pub bugs: Vec<ShardBug>,
    /// Ticks with faults and new client operations.
    pub fault_ticks: u64,
    /// Ticks to settle afterwards (no faults, no new operations).
    pub heal_ticks: u64,
    pub loss_probability: f64,
    pub duplicate_probability: f64,
    pub max_delay_ticks: u64,
    /// A proposal reaches the log within this many ticks.
    pub max_log_delay_ticks: u64,
    /// Per tick: crash a random group.
    pub crash_probability: f64,
    pub max_down_ticks: u64,
    /// Per tick: the controller moves a shard (or a group joins or leaves).
    pub move_probability: f64,
    /// Per tick and idle client: start an operation.
    pub op_probability: f64,
    pub keys: usize,
    pub accounts: usize,
    /// A client waits this long for an answer before retrying.
    pub client_timeout_ticks: u64,
    pub client_attempts: u32,
    /// A single-key read reaching a group is answered by [`Group::read_at_index`] (the
    /// server's ReadIndex GET) with this probability, else through the log.
    pub index_read_probability: f64,
    /// Each shard's exactly-once table bound (the group default unless set).
    pub dedup_max_bytes_per_shard: Option<usize>,
    /// Per message between groups (fault phase): also deliver a copy late, up to
    /// `max_late_ticks` after it was sent (a retransmission stuck behind a partition), so that
    /// late Reads and Prepares meet finished transactions, often at a new leader.
    pub late_duplicate_probability: f64,
    pub max_late_ticks: u64,
    /// Per tick (fault phase): a live group's leader changes without a crash (volatile state
    /// dropped, a new epoch; the old leader's proposals still reach the log).
    pub leader_change_probability: f64,
    /// A general transaction is anonymous (no `client_id`: no exactly-once entry, one
    /// attempt) with this probability.
    pub anonymous_probability: f64,
    /// A client re-routes a transaction answered "wrong group" to the named owner (same id)
    /// at most this many times.
    pub max_reroutes: u32,
    /// Each participant's record of finished transactions (the group default unless set).
    pub finished_max: Option<usize>,
    /// Acknowledged handed-off copies whose exactly-once tables a group keeps whole (the
    /// group default unless set); small, so that retries meet evicted copies.
    pub handoff_tables_max: Option<usize>,
    /// Print to stderr every applied log record and observation whose debug text contains
    /// this (config changes and shard installs always), to follow one transaction.
    pub trace: Option<String>,
}

/// Every account's balance before any transfer (an absent account holds this).
pub const INITIAL_BALANCE: i64 = 100;

impl SimConfig {
    pub fn new(seed: u64, cc: Cc) -> SimConfig {
        SimConfig {
            seed,
            groups: 3,
            clients: 6,
            shards: DEFAULT_SHARDS,
            cc,
            deadlock: Deadlock::WoundWait,
            bugs: Vec::new(),
            fault_ticks: 500,
            heal_ticks: 1500,
            loss_probability: 0.03,
            duplicate_probability: 0.03,
            max_delay_ticks: 4,
            max_log_delay_ticks: 3,
            crash_probability: 0.01,
            max_down_ticks: 40,
            move_probability: 0.03,
            op_probability: 0.5,
            keys: 6,
            accounts: 4,
            client_timeout_ticks: 60,
            client_attempts: 3,
            dedup_max_bytes_per_shard: None,
            index_read_probability: 0.5,
            late_duplicate_probability: 0.02,
            max_late_ticks: 150,
            leader_change_probability: 0.01,
            anonymous_probability: 0.2,
            max_reroutes: 3,
            finished_max: None,
            handoff_tables_max: Some(2),
            trace: None,
        }
    }

    fn group_config(&self, id: GroupId) -> GroupConfig {
        let mut g = GroupConfig::new(id);
        g.shards = self.shards;
        g.cc = self.cc;
        g.deadlock = self.deadlock;
        g.bugs = self.bugs.clone();
        if let Some(b) = self.dedup_max_bytes_per_shard {
            g.dedup_max_bytes_per_shard = b;
        }
        if let Some(n) = self.finished_max {
            g.finished_max = n;
        }
        if let Some(n) = self.handoff_tables_max {
            g.handoff_tables_max = n;
        }
        g
    }
}

/// A broken invariant, with what is needed to reproduce it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub seed: u64,
    pub tick: u64,
    pub what: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "seed {} tick {}: {}", self.seed, self.tick, self.what)
    }
}

/// What a run did, to check that runs exercise what they claim to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    pub ticks: u64,
    pub txns_ok: u64,
    pub txns_failed: u64,
    pub txns_unknown: u64,
    pub cross_group_commits: u64,
    pub cross_group_aborts: u64,
    pub transfers_ok: u64,
    pub bank_reads_ok: u64,
    pub shards_moved: u64,
    pub configs: u64,
    pub crashes: u64,
    pub messages: u64,
    /// Late copies of group-to-group messages delivered.
    pub late_messages: u64,
    pub leader_changes: u64,
    /// Wounds of prepared transactions delivered to their coordinators (2PL wound-wait).
    pub wounds: u64,
    /// Transactions re-sent to another group after a wrong-group answer.
    pub reroutes: u64,
    /// Definite failures checked (the client sent the transaction to one group only).
    pub definite_failures: u64,
    /// Definite failures by reason, for tuning and diagnosis.
    pub failures: BTreeMap<String, u64>,
    /// Handed-off copies held at the end, and those of them whose tables were evicted into
    /// floors (past `handoff_tables_max`).
    pub handoff_copies: u64,
    pub handoff_tables_evicted: u64,
}

impl SimStats {
    pub fn add(&mut self, o: &SimStats) {
        self.ticks += o.ticks;
        self.txns_ok += o.txns_ok;
        self.txns_failed += o.txns_failed;
        self.txns_unknown += o.txns_unknown;
        self.cross_group_commits += o.cross_group_commits;
        self.cross_group_aborts += o.cross_group_aborts;
        self.transfers_ok += o.transfers_ok;
        self.bank_reads_ok += o.bank_reads_ok;
        self.shards_moved += o.shards_moved;
        self.configs += o.configs;
        self.crashes += o.crashes;
        self.messages += o.messages;
        self.late_messages += o.late_messages;
        self.leader_changes += o.leader_changes;
        self.wounds += o.wounds;
        self.reroutes += o.reroutes;
        self.definite_failures += o.definite_failures;
        for (k, n) in &o.failures {
            *self.failures.entry(k.clone()).or_default() += n;
        }
        self.handoff_copies += o.handoff_copies;
        self.handoff_tables_evicted += o.handoff_tables_evicted;
    }
}

struct SimGroup {
    cfg: GroupConfig,
    group: Option<Group>,
    log: Vec<GroupCmd>,
    pending: VecDeque<(u64, GroupCmd)>,
    restart_tick: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpKind {
    General,
    BankRead,
    Transfer,
}

struct Pending {
    req: TxnRequest,
    kind: OpKind,
    target: GroupId,
    /// Every group the request went to (re-routes included).
    sent_to: BTreeSet<GroupId>,
    reroutes: u32,
    invoke_event: u64,
    sent_tick: u64,
    attempts: u32,
}

struct Client {
    id: ClientId,
    config: Config,
    seq: u64,
    pending: Option<Pending>,
    /// Balances and versions from the last acknowledged read of all accounts.
    bank_view: Option<BTreeMap<String, (i64, u64)>>,
    last_refresh: u64,
}

/// An acknowledged transaction, for the end checks.
struct Acked {
    invoke_event: u64,
    complete_event: u64,
    reads: Vec<(String, u64)>,
}

/// One Committed observation: (group, through 2PC, versions read, versions written).
type Effect = (GroupId, bool, Vec<(String, u64)>, Vec<(String, u64)>);

#[derive(Default)]
struct Effects {
    commits: BTreeMap<TxnId, Vec<Effect>>,
    /// Every logged decision of each transaction: more than one when a client retried after
    /// the coordinator forgot its record (the new attempt is refused by the exactly-once
    /// tables, so it decides abort).
    decided: BTreeMap<TxnId, Vec<(bool, Vec<GroupId>)>>,
    writer: BTreeMap<(String, u64), TxnId>,
}

/// A message in flight: (from, to, message, a late copy, the tick it was sent).
type InFlight = (Addr, Addr, Msg, bool, u64);

/// One run.
pub struct Sim {
    cfg: SimConfig,
    rng: ChaCha8Rng,
    tick: u64,
    event: u64,
    controller: Controller,
    groups: BTreeMap<GroupId, SimGroup>,
    clients: Vec<Client>,
    /// Due tick, sequence -> the message in flight.
    net: BTreeMap<(u64, u64), InFlight>,
    net_seq: u64,
    effects: Effects,
    acked: BTreeMap<TxnId, Acked>,
    stats: SimStats,
    /// Single-key read ids that reached a group, and those answered at a read index.
    reads_seen: BTreeSet<TxnId>,
    index_answered: BTreeMap<TxnId, TxnReply>,
    /// Transactions answered with a definite failure: none may take effect anywhere.
    failed: BTreeMap<TxnId, String>,
}

/// Runs one seed; the stats, or the first broken invariant.
pub fn run(cfg: SimConfig) -> Result<SimStats, Violation> {
    Sim::new(cfg).run()
}

impl Sim {
    pub fn new(cfg: SimConfig) -> Sim {
        let mut controller = Controller::new(cfg.shards);
        let mut groups = BTreeMap::new();
        for id in 1..=cfg.groups as GroupId {
            controller
                .apply(&ControllerCmd::Join {
                    group: id,
                    members: vec![format!("g{id}")],
                })
                .expect("join at start");
            let gcfg = cfg.group_config(id);
            let mut group = Group::new(gcfg.clone());
            group.become_leader();
            groups.insert(
                id,
                SimGroup {
                    cfg: gcfg,
                    group: Some(group),
                    log: Vec::new(),
                    pending: VecDeque::new(),
                    restart_tick: 0,
                },
            );
        }
        let clients = (1..=cfg.clients as ClientId)
            .map(|id| Client {
                id,
                config: Config::initial(cfg.shards),
                seq: 0,
                pending: None,
                bank_view: None,
                last_refresh: 0,
            })
            .collect();
        Sim {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            cfg,
            tick: 0,
            event: 0,
            controller,
            groups,
            clients,
            net: BTreeMap::new(),
            net_seq: 0,
            effects: Effects::default(),
            acked: BTreeMap::new(),
            stats: SimStats::default(),
            reads_seen: BTreeSet::new(),
            index_answered: BTreeMap::new(),
            failed: BTreeMap::new(),
        }
    }

    fn violation(&self, what: String) -> Violation {
        Violation {
            seed: self.cfg.seed,
            tick: self.tick,
            what,
        }
    }

    fn faulty(&self) -> bool {
        self.tick < self.cfg.fault_ticks
    }

    pub fn run(mut self) -> Result<SimStats, Violation> {
        let total = self.cfg.fault_ticks + self.cfg.heal_ticks;
        while self.tick < total {
            self.tick += 1;
            self.step()?;
        }
        self.stats.ticks = self.tick;
        self.stats.configs = self.controller.latest().num;
        for g in self.groups.values().filter_map(|g| g.group.as_ref()) {
            for h in g.handed_off() {
                self.stats.handoff_copies += 1;
                if h.dedup_entries == 0 && h.dedup_floors {
                    self.stats.handoff_tables_evicted += 1;
                }
            }
        }
        self.final_checks()?;
        Ok(self.stats)
    }

    fn step(&mut self) -> Result<(), Violation> {
        if self.faulty() {
            self.inject_faults();
        }
        self.restart_groups();
        // Deliver due messages.
        let due: Vec<(u64, u64)> = self
            .net
            .range(..(self.tick + 1, 0))
            .map(|(k, _)| *k)
            .collect();
        for k in due {
            let (from, to, msg, late, sent) = self.net.remove(&k).expect("due key");
            self.stats.messages += 1;
            if late {
                self.stats.late_messages += 1;
            }
            if matches!(msg, Msg::Wound { .. }) {
                self.stats.wounds += 1;
            }
            self.deliver(from, to, msg, sent)?;
        }
        // Append due proposals to the logs and apply them.
        let ids: Vec<GroupId> = self.groups.keys().copied().collect();
        for id in &ids {
            loop {
                let g = self.groups.get_mut(id).expect("group");
                if g.group.is_none() {
                    break;
                }
                match g.pending.front() {
                    Some((at, _)) if *at <= self.tick => {}
                    _ => break,
                }
                let (_, cmd) = g.pending.pop_front().expect("front");
                if let Some(filter) = &self.cfg.trace {
                    let text = format!("{cmd:?}");
                    if text.contains(filter.as_str())
                        || !matches!(
                            cmd,
                            GroupCmd::Local { .. }
                                | GroupCmd::Prepare { .. }
                                | GroupCmd::Finish { .. }
                                | GroupCmd::Decide { .. }
                                | GroupCmd::Begin { .. }
                        )
                    {
                        eprintln!(
                            "t{} g{id} apply {}",
                            self.tick,
                            &text[..text.len().min(300)]
                        );
                    }
                }
                g.log.push(cmd.clone());
                let outs = g.group.as_mut().expect("up").step(Input::Apply(cmd));
                self.handle_outputs(*id, outs)?;
            }
        }
        for id in &ids {
            let Some(group) = self.groups.get_mut(id).and_then(|g| g.group.as_mut()) else {
                continue;
            };
            let outs = group.step(Input::Tick);
            self.handle_outputs(*id, outs)?;
        }
        self.tick_clients()
    }

    fn inject_faults(&mut self) {
        if self.rng.gen_bool(self.cfg.crash_probability) {
            let id = self.rng.gen_range(1..=self.cfg.groups as GroupId);
            let down = self.rng.gen_range(1..=self.cfg.max_down_ticks);
            let g = self.groups.get_mut(&id).expect("group");
            if g.group.is_some() {
                g.group = None;
                g.pending.clear();
                g.restart_tick = self.tick + down;
                self.stats.crashes += 1;
            }
        }
        if self.rng.gen_bool(self.cfg.leader_change_probability) {
            let id = self.rng.gen_range(1..=self.cfg.groups as GroupId);
            if let Some(group) = self.groups.get_mut(&id).and_then(|g| g.group.as_mut()) {
                group.become_leader();
                self.stats.leader_changes += 1;
            }
        }
        if self.rng.gen_bool(self.cfg.move_probability) {
            let latest = self.controller.latest().clone();
            let roll = self.rng.gen_range(0..100);
            let cmd = if roll < 80 || self.cfg.groups < 2 {
                let shard = self.rng.gen_range(0..self.cfg.shards);
                let members: Vec<GroupId> = latest.groups.keys().copied().collect();
                let group = members[self.rng.gen_range(0..members.len())];
                ControllerCmd::Move { shard, group }
            } else {
                let out: Vec<GroupId> = (1..=self.cfg.groups as GroupId)
                    .filter(|g| !latest.groups.contains_key(g))
                    .collect();
                if !out.is_empty() && (roll < 90 || latest.groups.len() < 2) {
                    let group = out[self.rng.gen_range(0..out.len())];
                    ControllerCmd::Join {
                        group,
                        members: vec![format!("g{group}")],
                    }
                } else {
                    let members: Vec<GroupId> = latest.groups.keys().copied().collect();
                    ControllerCmd::Leave {
                        group: members[self.rng.gen_range(0..members.len())],
                    }
                }
            };
            // Errors (e.g. the last group leaving) change nothing.
            if !matches!(&cmd, ControllerCmd::Leave { .. }) || latest.groups.len() > 1 {
                let _ = self.controller.apply(&cmd);
            }
        }
    }

    fn restart_groups(&mut self) {
        for g in self.groups.values_mut() {
            if g.group.is_none() && self.tick >= g.restart_tick {
                g.group = Some(Group::recover(g.cfg.clone(), &g.log));
            }
        }
    }

    fn send(&mut self, from: Addr, to: Addr, msg: Msg) {
        let faulty = self.faulty();
        if faulty && self.rng.gen_bool(self.cfg.loss_probability) {
            return;
        }
        // A client's request is never duplicated by the network: over HTTP it reaches one
        // leader once (or is lost), and a retry is a new request, which the simulated
        // clients make themselves after `client_timeout_ticks` (longer than any delay). A
        // duplicate arriving after the client took a definite answer would be a second
        // attempt that no real client makes.
        let client_request = matches!(from, Addr::Client(_));
        let copies =
            if faulty && !client_request && self.rng.gen_bool(self.cfg.duplicate_probability) {
                2
            } else {
                1
            };
        for _ in 0..copies {
            let at = self.tick + self.rng.gen_range(1..=self.cfg.max_delay_ticks);
            self.net_seq += 1;
            let value = (from, to, msg.clone(), false, self.tick);
            self.net.insert((at, self.net_seq), value);
        }
        // Client requests are not copied late: an HTTP request reaches one leader once (a
        // client's retry is a new request, which the simulated clients make themselves).
        let between_groups = matches!((from, to), (Addr::Group(_), Addr::Group(_)));
        if faulty
            && between_groups
            && self.cfg.max_late_ticks > self.cfg.max_delay_ticks
            && self.rng.gen_bool(self.cfg.late_duplicate_probability)
        {
            let late = self
                .rng
                .gen_range(self.cfg.max_delay_ticks + 1..=self.cfg.max_late_ticks);
            self.net_seq += 1;
            let value = (from, to, msg, true, self.tick);
            self.net.insert((self.tick + late, self.net_seq), value);
        }
    }

    fn deliver(&mut self, from: Addr, to: Addr, msg: Msg, sent: u64) -> Result<(), Violation> {
        match to {
            Addr::Controller => {
                if let Msg::QueryConfig { num } = msg {
                    let cfg = self.controller.query(num).clone();
                    self.send(Addr::Controller, from, Msg::ConfigReply(cfg));
                }
                Ok(())
            }
            Addr::Group(id) => {
                let Some(group) = self.groups.get(&id).and_then(|g| g.group.as_ref()) else {
                    return Ok(());
                };
                if let Msg::Txn(req) = &msg {
                    if let ([TxnOp::Read(key)], Addr::Client(_)) = (req.ops.as_slice(), from) {
                        // One path per read id, so that it has one effect: a client takes
                        // one answer (the server's GET is not deduplicated; each HTTP GET
                        // is its own operation).
                        if let Some(reply) = self.index_answered.get(&req.id) {
                            let (id, reply) = (req.id, reply.clone());
                            self.send(to, from, Msg::Reply { id, reply });
                            return Ok(());
                        }
                        let first = self.reads_seen.insert(req.id);
                        // The sim's group state is its whole log applied: a read here is
                        // at a read index.
                        if first && self.rng.gen_bool(self.cfg.index_read_probability) {
                            match group.read_at_index(key) {
                                Ok(v) => {
                                    let version = v.version;
                                    self.observe(Observation::Committed {
                                        txn: req.id,
                                        group: id,
                                        two_phase: false,
                                        reads: vec![(key.clone(), version)],
                                        writes: vec![],
                                    })?;
                                    let results = vec![OpResult::Read {
                                        key: key.clone(),
                                        value: v.value,
                                        version,
                                    }];
                                    let reply = TxnReply::Committed { results };
                                    let id = req.id;
                                    self.index_answered.insert(id, reply.clone());
                                    self.send(to, from, Msg::Reply { id, reply });
                                    return Ok(());
                                }
                                Err(Some(reply)) => {
                                    // A refusal applied nothing: a retry may take either path.
                                    self.reads_seen.remove(&req.id);
                                    let id = req.id;
                                    self.send(to, from, Msg::Reply { id, reply });
                                    return Ok(());
                                }
                                Err(None) => {}
                            }
                        }
                    }
                }
                let group = self
                    .groups
                    .get_mut(&id)
                    .and_then(|g| g.group.as_mut())
                    .expect("checked above");
                let outs = group.step(Input::Message { from, msg });
                self.handle_outputs(id, outs)
            }
            Addr::Client(c) => self.client_receive(c, msg, sent),
        }
    }

    fn handle_outputs(&mut self, id: GroupId, outs: Vec<Output>) -> Result<(), Violation> {
        for o in outs {
            match o {
                Output::Send { to, msg } => self.send(Addr::Group(id), to, msg),
                Output::Propose(cmd) => {
                    let at = self.tick + self.rng.gen_range(1..=self.cfg.max_log_delay_ticks);
                    self.groups
                        .get_mut(&id)
                        .expect("group")
                        .pending
                        .push_back((at, cmd));
                }
                Output::Observe(obs) => {
                    if let Some(filter) = &self.cfg.trace {
                        let text = format!("{obs:?}");
                        if text.contains(filter.as_str()) {
                            eprintln!("t{} g{id} observe {text}", self.tick);
                        }
                    }
                    self.observe(obs)?
                }
            }
        }
        Ok(())
    }

    fn observe(&mut self, obs: Observation) -> Result<(), Violation> {
        match obs {
            Observation::Committed {
                txn,
                group,
                two_phase,
                reads,
                writes,
            } => {
                for (k, v) in &writes {
                    if let Some(other) = self.effects.writer.insert((k.clone(), *v), txn) {
                        return Err(self.violation(format!(
                            "version {v} of key {k} installed by both {other} and {txn} \
                             (a write served by two groups, or applied twice)"
                        )));
                    }
                }
                let entry = self.effects.commits.entry(txn).or_default();
                for (_, _, _, w) in entry.iter() {
                    if let Some((k, _)) =
                        w.iter().find(|(k, _)| writes.iter().any(|(k2, _)| k2 == k))
                    {
                        let what = format!("{txn} wrote key {k} twice (not exactly-once)");
                        return Err(self.violation(what));
                    }
                }
                entry.push((group, two_phase, reads, writes));
            }
            Observation::Decided {
                txn,
                commit,
                participants,
            } => {
                if commit {
                    self.stats.cross_group_commits += 1;
                } else {
                    self.stats.cross_group_aborts += 1;
                }
                let decisions = self.effects.decided.entry(txn).or_default();
                if commit && decisions.iter().any(|(c, _)| *c) {
                    return Err(self.violation(format!(
                        "{txn} decided commit twice (a forgotten transaction run again)"
                    )));
                }
                decisions.push((commit, participants));
            }
            Observation::ShardInstalled { .. } => self.stats.shards_moved += 1,
            Observation::ConfigApplied { .. } | Observation::ShardFrozen { .. } => {}
        }
        Ok(())
    }

    // ----- clients -----

    fn next_event(&mut self) -> u64 {
        self.event += 1;
        self.event
    }

    fn tick_clients(&mut self) -> Result<(), Violation> {
        for i in 0..self.clients.len() {
            let now = self.tick;
            let faulty = self.faulty();
            let c = &mut self.clients[i];
            let cid = c.id;
            if now >= c.last_refresh + 50 {
                c.last_refresh = now;
                self.send(
                    Addr::Client(cid),
                    Addr::Controller,
                    Msg::QueryConfig { num: None },
                );
            }
            let c = &mut self.clients[i];
            if let Some(p) = &mut c.pending {
                if now >= p.sent_tick + self.cfg.client_timeout_ticks {
                    // An anonymous request is not retried: without a client id, a second
                    // request would be a new transaction.
                    let retry = !super::is_anonymous(p.req.id.client);
                    if retry && p.attempts < self.cfg.client_attempts {
                        p.attempts += 1;
                        p.sent_tick = now;
                        let (target, req) = (p.target, p.req.clone());
                        let from = Addr::Client(req.id.client);
                        self.send(from, Addr::Group(target), Msg::Txn(req));
                    } else {
                        // Unknown outcome: the id is retired, the client moves on.
                        c.pending = None;
                        c.bank_view = None;
                        self.stats.txns_unknown += 1;
                    }
                }
                continue;
            }
            if !faulty || !self.rng.gen_bool(self.cfg.op_probability) {
                continue;
            }
            self.start_op(i);
        }
        Ok(())
    }

    fn start_op(&mut self, i: usize) {
        let roll = self.rng.gen_range(0..100);
        let c = &self.clients[i];
        let seq = c.seq + 1;
        let tag = |n: usize| format!("c{}s{}o{}", c.id, seq, n);
        let (kind, ops) = if roll < 45 {
            let n = self.rng.gen_range(1..=3);
            let mut keys: Vec<usize> = (0..self.cfg.keys).collect();
            let mut ops = Vec::new();
            for j in 0..n {
                let k = keys.swap_remove(self.rng.gen_range(0..keys.len()));
                let key = format!("k{k}");
                ops.push(match self.rng.gen_range(0..8) {
                    0..=2 => TxnOp::Read(key),
                    3..=4 => TxnOp::Append(key, tag(j)),
                    5..=6 => TxnOp::Write(key, tag(j)),
                    _ => TxnOp::Delete(key),
                });
            }
            (OpKind::General, ops)
        } else if roll < 65 {
            let k = self.rng.gen_range(0..self.cfg.keys);
            (OpKind::General, vec![TxnOp::Read(format!("k{k}"))])
        } else if let (true, Some(view)) = (roll >= 80, &c.bank_view) {
            let rich: Vec<(&String, &(i64, u64))> =
                view.iter().filter(|(_, (b, _))| *b > 0).collect();
            if rich.is_empty() {
                (OpKind::BankRead, self.bank_read_ops())
            } else {
                let (from, (bal_from, ver_from)) = rich[self.rng.gen_range(0..rich.len())];
                let others: Vec<(&String, &(i64, u64))> =
                    view.iter().filter(|(k, _)| *k != from).collect();
                let (to, (bal_to, ver_to)) = others[self.rng.gen_range(0..others.len())];
                let amount = self.rng.gen_range(1..=(*bal_from).min(20));
                (
                    OpKind::Transfer,
                    vec![
                        TxnOp::IfRevision(from.clone(), *ver_from),
                        TxnOp::IfRevision(to.clone(), *ver_to),
                        TxnOp::Write(from.clone(), (bal_from - amount).to_string()),
                        TxnOp::Write(to.clone(), (bal_to + amount).to_string()),
                    ],
                )
            }
        } else {
            (OpKind::BankRead, self.bank_read_ops())
        };
        let c = &self.clients[i];
        let shard = super::shard_of(ops[0].key(), self.cfg.shards);
        let target = c.config.owner(shard);
        if target == super::NO_GROUP {
            return;
        }
        let anonymous =
            kind == OpKind::General && self.rng.gen_bool(self.cfg.anonymous_probability);
        let id = if anonymous {
            // Unique per client and seq, and the client is found again from it.
            TxnId {
                client: super::ANONYMOUS_CLIENT_BIT | (c.id << 32) | seq,
                seq: 1,
            }
        } else {
            TxnId { client: c.id, seq }
        };
        let req = TxnRequest {
            id,
            age: Age {
                start: self.tick,
                txn: id,
            },
            ops,
        };
        let invoke_event = self.next_event();
        let c = &mut self.clients[i];
        c.seq = seq;
        c.pending = Some(Pending {
            req: req.clone(),
            kind,
            target,
            sent_to: BTreeSet::from([target]),
            reroutes: 0,
            invoke_event,
            sent_tick: self.tick,
            attempts: 1,
        });
        self.send(Addr::Client(id.client), Addr::Group(target), Msg::Txn(req));
    }

    fn bank_read_ops(&self) -> Vec<TxnOp> {
        (0..self.cfg.accounts)
            .map(|a| TxnOp::Read(format!("acct{a}")))
            .collect()
    }

    /// `sent`: the tick the message left its sender.
    fn client_receive(&mut self, cid: ClientId, msg: Msg, sent: u64) -> Result<(), Violation> {
        let number = if super::is_anonymous(cid) {
            (cid & !super::ANONYMOUS_CLIENT_BIT) >> 32
        } else {
            cid
        };
        let i = (number - 1) as usize;
        match msg {
            Msg::ConfigReply(cfg) => {
                let c = &mut self.clients[i];
                if cfg.num > c.config.num {
                    c.config = cfg;
                }
                Ok(())
            }
            Msg::Reply { id, reply } => {
                let c = &self.clients[i];
                let Some(p) = &c.pending else { return Ok(()) };
                if p.req.id != id {
                    return Ok(());
                }
                // A reply that left its group before the client's latest attempt was sent
                // answers an earlier attempt, which the client abandoned when it retried:
                // over HTTP that request timed out and its response is never read.
                if sent <= p.sent_tick {
                    return Ok(());
                }
                if let TxnReply::WrongGroup { owner, .. } = reply {
                    let now = self.tick;
                    let max = self.cfg.max_reroutes;
                    let p = self.clients[i].pending.as_mut().expect("pending");
                    if owner != super::NO_GROUP && owner != p.target && p.reroutes < max {
                        // Re-route the same id to the owner the answer names: if the
                        // transaction took effect there (or its shard carried the record
                        // there), the owner answers with its outcome.
                        p.reroutes += 1;
                        p.target = owner;
                        p.sent_to.insert(owner);
                        p.sent_tick = now;
                        let req = p.req.clone();
                        self.stats.reroutes += 1;
                        let from = Addr::Client(req.id.client);
                        self.send(from, Addr::Group(owner), Msg::Txn(req));
                        return Ok(());
                    }
                }
                let p = self.clients[i].pending.take().expect("pending");
                let complete_event = self.next_event();
                // A refusal is definite for a request that went to one group only: that
                // group answers from everything it applied. After a re-route, an earlier
                // group's copy of the request may still be in flight, so it is unknown.
                let one_group = p.sent_to.len() == 1;
                if reply.is_definite_failure() && one_group {
                    self.stats.definite_failures += 1;
                }
                match reply {
                    TxnReply::Committed { results } => {
                        self.stats.txns_ok += 1;
                        self.client_ok(i, &p, &results)?;
                        let reads = results
                            .iter()
                            .filter_map(|r| match r {
                                OpResult::Read { key, version, .. } => {
                                    Some((key.clone(), *version))
                                }
                                _ => None,
                            })
                            .collect();
                        self.acked.insert(
                            id,
                            Acked {
                                invoke_event: p.invoke_event,
                                complete_event,
                                reads,
                            },
                        );
                    }
                    TxnReply::WrongGroup { .. } if !one_group => {
                        self.stats.txns_unknown += 1;
                        self.clients[i].last_refresh = 0;
                    }
                    TxnReply::WrongGroup { .. } => {
                        self.stats.txns_failed += 1;
                        self.failed.insert(id, "wrong-group".into());
                        *self.stats.failures.entry("wrong-group".into()).or_default() += 1;
                        self.clients[i].last_refresh = 0;
                    }
                    TxnReply::Aborted {
                        reason: reason @ (AbortReason::Stale | AbortReason::Evicted { .. }),
                    } => {
                        // Not definite: the request may repeat an applied transaction.
                        self.stats.txns_unknown += 1;
                        let why = match reason {
                            AbortReason::Stale => "Stale",
                            _ => "Evicted",
                        };
                        *self.stats.failures.entry(why.into()).or_default() += 1;
                        self.clients[i].bank_view = None;
                    }
                    _ if !one_group => {
                        self.stats.txns_unknown += 1;
                        self.clients[i].bank_view = None;
                    }
                    other => {
                        self.stats.txns_failed += 1;
                        let why = match other {
                            TxnReply::Aborted { reason } => format!("{reason:?}"),
                            _ => "compare-failed".to_string(),
                        };
                        self.failed.insert(id, why.clone());
                        *self.stats.failures.entry(why).or_default() += 1;
                        if p.kind == OpKind::Transfer {
                            self.clients[i].bank_view = None;
                        }
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn client_ok(&mut self, i: usize, p: &Pending, results: &[OpResult]) -> Result<(), Violation> {
        match p.kind {
            OpKind::General => {}
            OpKind::Transfer => {
                self.stats.transfers_ok += 1;
                self.clients[i].bank_view = None;
            }
            OpKind::BankRead => {
                self.stats.bank_reads_ok += 1;
                let mut view = BTreeMap::new();
                let mut total = 0i64;
                for r in results {
                    if let OpResult::Read {
                        key,
                        value,
                        version,
                    } = r
                    {
                        let bal = balance(value.as_ref()).map_err(|e| self.violation(e))?;
                        total += bal;
                        view.insert(key.clone(), (bal, *version));
                    }
                }
                let expected = INITIAL_BALANCE * self.cfg.accounts as i64;
                if total != expected {
                    return Err(self.violation(format!(
                        "{} read all accounts summing to {total}, not {expected}: {view:?}",
                        p.req.id
                    )));
                }
                self.clients[i].bank_view = Some(view);
            }
        }
        Ok(())
    }

    // ----- end checks -----

    fn final_checks(&mut self) -> Result<(), Violation> {
        self.check_quiescent()?;
        self.check_atomic()?;
        self.check_final_state()?;
        self.check_real_time()?;
        self.check_serializable()
    }

    fn check_quiescent(&self) -> Result<(), Violation> {
        let latest = self.controller.latest();
        let mut server: BTreeMap<usize, GroupId> = BTreeMap::new();
        for (id, g) in &self.groups {
            let Some(group) = &g.group else {
                return Err(self.violation(format!("group {id} still down after healing")));
            };
            if group.config().num != latest.num || !group.migration_done() {
                return Err(self.violation(format!(
                    "group {id} at config {} (moves done: {}), controller at {}",
                    group.config().num,
                    group.migration_done(),
                    latest.num
                )));
            }
            if group.coordinator_records() > 0 {
                return Err(self.violation(format!(
                    "group {id} still holds {} coordinator records after healing (decided and \
                     acknowledged records must be forgotten)",
                    group.coordinator_records()
                )));
            }
            if group.prepared_count() > 0 || group.undecided_count() > 0 {
                return Err(self.violation(format!(
                    "group {id} still has {} prepared and {} undecided transactions",
                    group.prepared_count(),
                    group.undecided_count()
                )));
            }
            self.check_handoffs(*id, group)?;
            for s in group.serving_shards() {
                if let Some(other) = server.insert(s, *id) {
                    return Err(
                        self.violation(format!("shard {s} served by groups {other} and {id}"))
                    );
                }
            }
        }
        for s in 0..self.cfg.shards {
            if server.get(&s) != Some(&latest.owner(s)) {
                return Err(self.violation(format!(
                    "shard {s} served by {:?}, owner is {}",
                    server.get(&s),
                    latest.owner(s)
                )));
            }
        }
        Ok(())
    }

    /// After healing every hand-off is acknowledged; an acknowledged copy holds no data (but
    /// with the planted bug, which serves reads from it); at most `handoff_tables_max` keep
    /// table entries, and at most one acknowledged copy per shard is kept.
    fn check_handoffs(&self, id: GroupId, group: &Group) -> Result<(), Violation> {
        let copies = group.handed_off();
        let keeps_data = self.cfg.bugs.contains(&ShardBug::MigrationServesStale);
        let mut shards = BTreeSet::new();
        for h in &copies {
            if h.unacked || (h.keys > 0 && !keeps_data) || !shards.insert(h.shard) {
                return Err(self.violation(format!(
                    "group {id} after healing holds {h:?} (unacknowledged, with data, or a \
                     second copy of its shard): {copies:?}"
                )));
            }
        }
        let tables = copies.iter().filter(|h| h.dedup_entries > 0).count();
        let max = self.groups[&id].cfg.handoff_tables_max;
        if tables > max {
            return Err(self.violation(format!(
                "group {id} keeps {tables} handed-off tables, bound {max}: {copies:?}"
            )));
        }
        Ok(())
    }

    fn check_atomic(&self) -> Result<(), Violation> {
        for (txn, decisions) in &self.effects.decided {
            let commit = decisions.iter().find(|(c, _)| *c);
            let (commit, participants) = match commit {
                Some((_, p)) => (&true, p),
                None => (&false, &decisions[0].1),
            };
            let at: BTreeSet<GroupId> = self
                .effects
                .commits
                .get(txn)
                .map(|v| v.iter().filter(|c| c.1).map(|c| c.0).collect())
                .unwrap_or_default();
            if *commit {
                if let Some(missing) = participants.iter().find(|p| !at.contains(p)) {
                    return Err(self.violation(format!(
                        "{txn} decided commit but never took effect at participant group {missing} \
                         (took effect at {at:?}): a lost write"
                    )));
                }
            } else if !at.is_empty() {
                return Err(self.violation(format!(
                    "{txn} decided abort but took effect at groups {at:?} (G1a)"
                )));
            }
        }
        for (txn, why) in &self.failed {
            // Every definite failure (wrong group and not ready included) of a request that
            // went to one group: nothing of it may have taken effect anywhere.
            if let Some(e) = self.effects.commits.get(txn) {
                let groups: Vec<GroupId> = e.iter().map(|c| c.0).collect();
                return Err(self.violation(format!(
                    "{txn} was answered with a definite failure ({why}) but took effect at \
                     groups {groups:?}"
                )));
            }
        }
        for txn in self.acked.keys() {
            if !self.effects.commits.contains_key(txn) {
                return Err(self.violation(format!(
                    "{txn} was acknowledged to its client but took effect nowhere"
                )));
            }
        }
        Ok(())
    }

    fn check_final_state(&self) -> Result<(), Violation> {
        let mut newest: BTreeMap<&str, u64> = BTreeMap::new();
        for (k, v) in self.effects.writer.keys() {
            let e = newest.entry(k.as_str()).or_default();
            *e = (*e).max(*v);
        }
        let mut total = 0i64;
        let value_of = |key: &str| {
            let s = super::shard_of(key, self.cfg.shards);
            let owner = self.controller.latest().owner(s);
            self.groups[&owner].group.as_ref().and_then(|g| g.get(key))
        };
        for (k, v) in &newest {
            let got = value_of(k).map(|x| x.version).unwrap_or(0);
            if got != *v {
                return Err(self.violation(format!(
                    "key {k} ends at version {got}, but version {v} was installed (lost in a move?)"
                )));
            }
        }
        for a in 0..self.cfg.accounts {
            let key = format!("acct{a}");
            let v = value_of(&key).and_then(|x| x.value);
            total += balance(v.as_ref()).map_err(|e| self.violation(e))?;
        }
        let expected = INITIAL_BALANCE * self.cfg.accounts as i64;
        if total != expected {
            return Err(self.violation(format!("final balances sum to {total}, not {expected}")));
        }
        Ok(())
    }

    /// A read never sees a version older than one acknowledged (written or read) before the
    /// read was invoked.
    fn check_real_time(&self) -> Result<(), Violation> {
        // key -> (complete event, version) of acknowledged writes and reads.
        let mut seen: BTreeMap<&str, Vec<(u64, u64, TxnId)>> = BTreeMap::new();
        for (txn, a) in &self.acked {
            for (k, v) in &a.reads {
                seen.entry(k)
                    .or_default()
                    .push((a.complete_event, *v, *txn));
            }
            for (_, _, _, writes) in self.effects.commits.get(txn).into_iter().flatten() {
                for (k, v) in writes {
                    seen.entry(k)
                        .or_default()
                        .push((a.complete_event, *v, *txn));
                }
            }
        }
        let mut prefix_max: BTreeMap<&str, Vec<(u64, u64, TxnId)>> = BTreeMap::new();
        for (k, mut events) in seen {
            events.sort_unstable();
            let mut best = (0u64, TxnId::default());
            let pm = events
                .into_iter()
                .map(|(e, v, t)| {
                    if v > best.0 {
                        best = (v, t);
                    }
                    (e, best.0, best.1)
                })
                .collect();
            prefix_max.insert(k, pm);
        }
        for (txn, a) in &self.acked {
            for (k, v) in &a.reads {
                let Some(pm) = prefix_max.get(k.as_str()) else {
                    continue;
                };
                let before = pm.partition_point(|(e, _, _)| *e < a.invoke_event);
                if before > 0 {
                    let (_, floor, by) = pm[before - 1];
                    if *v < floor {
                        return Err(self.violation(format!(
                            "{txn} read {k} at version {v}, but {by} had acknowledged version \
                             {floor} before it began (stale read)"
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// The direct serialization graph of committed transactions has no cycle.
    fn check_serializable(&self) -> Result<(), Violation> {
        let w = &self.effects.writer;
        let mut edges: BTreeMap<TxnId, BTreeSet<(TxnId, &'static str, String)>> = BTreeMap::new();
        let mut add = |from: TxnId, to: TxnId, kind: &'static str, key: &str| {
            if from != to {
                edges
                    .entry(from)
                    .or_default()
                    .insert((to, kind, key.to_string()));
            }
        };
        for (txn, parts) in &self.effects.commits {
            for (_, _, reads, writes) in parts {
                for (k, v) in writes {
                    if let Some(prev) = w.get(&(k.clone(), v - 1)) {
                        add(*prev, *txn, "ww", k);
                    }
                }
                for (k, v) in reads {
                    if *v > 0 {
                        if let Some(src) = w.get(&(k.clone(), *v)) {
                            add(*src, *txn, "wr", k);
                        }
                    }
                    if let Some(next) = w.get(&(k.clone(), v + 1)) {
                        add(*txn, *next, "rw", k);
                    }
                }
            }
        }
        if let Some(cycle) = find_cycle(&edges) {
            let text: Vec<String> = cycle
                .iter()
                .map(|(t, kind, k)| format!("{t} -{kind}({k})->"))
                .collect();
            let detail: Vec<String> = cycle
                .iter()
                .map(|(t, _, _)| format!("{t}: {:?}", self.effects.commits.get(t)))
                .collect();
            return Err(self.violation(format!(
                "not serializable: cycle {} (back to the first); effects: {}",
                text.join(" "),
                detail.join("; ")
            )));
        }
        Ok(())
    }
}

fn balance(v: Option<&Value>) -> Result<i64, String> {
    match v {
        None => Ok(INITIAL_BALANCE),
        Some(Value::Str(s)) => s
            .parse()
            .map_err(|_| format!("account holds '{s}', not a number")),
        Some(Value::List(l)) => Err(format!("account holds a list {l:?}")),
    }
}

/// An edge of the serialization graph: (to, kind, key).
type Edge = (TxnId, &'static str, String);
type Edges = BTreeMap<TxnId, BTreeSet<Edge>>;

/// A cycle as (node, edge kind, key) steps, found by iterative depth-first search.
fn find_cycle(edges: &Edges) -> Option<Vec<(TxnId, &'static str, String)>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Color {
        Grey,
        Black,
    }
    let mut color: BTreeMap<TxnId, Color> = BTreeMap::new();
    let empty = BTreeSet::new();
    for start in edges.keys() {
        if color.contains_key(start) {
            continue;
        }
        // Stack of (node, its successors, next index); `path` mirrors the grey nodes.
        let mut stack: Vec<(TxnId, Vec<&Edge>, usize)> = vec![(
            *start,
            edges.get(start).unwrap_or(&empty).iter().collect(),
            0,
        )];
        color.insert(*start, Color::Grey);
        while let Some((node, succ, idx)) = stack.last_mut() {
            if *idx >= succ.len() {
                color.insert(*node, Color::Black);
                stack.pop();
                continue;
            }
            let (next, _, _) = succ[*idx];
            *idx += 1;
            match color.get(next) {
                Some(Color::Black) => {}
                Some(Color::Grey) => {
                    let from = stack
                        .iter()
                        .position(|(n, _, _)| n == next)
                        .expect("grey on stack");
                    let cycle = stack[from..]
                        .iter()
                        .map(|(n, s, i)| {
                            let (_, kind, key) = s[*i - 1];
                            (*n, *kind, key.clone())
                        })
                        .collect();
                    return Some(cycle);
                }
                None => {
                    color.insert(*next, Color::Grey);
                    let s = edges.get(next).unwrap_or(&empty).iter().collect();
                    stack.push((*next, s, 0));
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: u64) -> TxnId {
        TxnId { client: n, seq: 1 }
    }

    #[test]
    fn finds_cycles_and_only_cycles() {
        let mut e: Edges = BTreeMap::new();
        e.entry(t(1)).or_default().insert((t(2), "ww", "x".into()));
        e.entry(t(2)).or_default().insert((t(3), "wr", "y".into()));
        e.entry(t(1)).or_default().insert((t(3), "rw", "z".into()));
        assert!(find_cycle(&e).is_none());
        e.entry(t(3)).or_default().insert((t(1), "rw", "x".into()));
        let c = find_cycle(&e).expect("cycle");
        assert!(c.len() >= 2, "{c:?}");
        assert!(c.iter().any(|(_, k, _)| *k == "rw"));
    }
}
