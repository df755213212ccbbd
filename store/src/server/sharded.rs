//! The sharded modes: this node's Paxos log carries the commands of a shard controller
//! ([`ControllerCmd`], applied to [`Controller`]) or of one replica group ([`GroupCmd`],
//! applied to [`Group`]) instead of key-value commands. The pure cores decide everything; this
//! module drives them from the driver task and carries their messages over HTTP.
//!
//! - Every replica applies every committed command in log order; only the leader feeds the
//!   group core ticks and messages and acts on its outputs (proposals, messages, client
//!   replies). A node that becomes leader calls [`Group::become_leader_at`] with an epoch made
//!   from its Paxos ballot, so epochs are unique and increase with leadership.
//! - Group -> group and group -> controller messages are HTTP requests to a member's client
//!   address (`POST /shard/msg`, `GET /shards/config/{num}`), best effort: the core
//!   retransmits what matters. A member that is not its group's leader forwards them.
//! - Reads during two-phase commit are answered from the leader's applied state without a
//!   ReadIndex round: a deposed leader's stale answer cannot commit, because under 2PL the
//!   prepare is refused at application unless it was proposed under the current epoch (and
//!   the new leader's epoch record follows everything its predecessor committed), and under
//!   OCC the prepare validates the versions read against the applied state.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

use crate::codec;
use crate::paxos::{Ballot, Dropped, Node};
use crate::server::{ProposeReply, Request, Shared};
use crate::shard::config::{Config, Controller, ControllerCmd};
use crate::shard::group::{Addr, Group, GroupCmd, GroupConfig, Input, Msg, Observation, Output};
use crate::shard::{Cc, Deadlock, GroupId, ShardBug, TxnId, TxnReply, DEFAULT_SHARDS};
use crate::StoreError;

/// What a sharded node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardRole {
    Controller,
    Group(GroupId),
}

/// The settings of a sharded node (`--mode controller|group`).
#[derive(Clone, Debug)]
pub struct ShardSettings {
    pub role: ShardRole,
    /// Number of shards; the controller and every group must agree.
    pub shards: usize,
    /// The controller nodes' client (HTTP) addresses (group mode).
    pub controller: Vec<String>,
    pub cc: Cc,
    pub deadlock: Deadlock,
    pub bugs: Vec<ShardBug>,
    /// Wall-clock length of one tick of the group core.
    pub tick_ms: u64,
    /// Messages to other groups and the controller in flight at once; more are dropped (the
    /// core retransmits).
    pub max_messages_in_flight: usize,
    /// Each shard's exactly-once table bound in bytes (`--dedup-max-bytes` / `--shards`).
    pub dedup_max_bytes_per_shard: usize,
}

impl ShardSettings {
    pub fn new(role: ShardRole) -> ShardSettings {
        ShardSettings {
            role,
            shards: DEFAULT_SHARDS,
            controller: Vec::new(),
            cc: Cc::default(),
            deadlock: Deadlock::default(),
            bugs: Vec::new(),
            tick_ms: 20,
            max_messages_in_flight: 256,
            dedup_max_bytes_per_shard: crate::shard::group::DEFAULT_DEDUP_MAX_BYTES_PER_SHARD,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), StoreError> {
        let bad = |s: String| Err(StoreError::Config(s));
        if self.shards == 0 || self.shards > 4096 {
            return bad(format!("--shards {} is not in 1..=4096", self.shards));
        }
        if self.tick_ms == 0 {
            return bad("--shard-tick-ms must be positive".into());
        }
        match self.role {
            ShardRole::Group(0) => bad("--group-id must be positive (0 means no group)".into()),
            ShardRole::Group(_) if self.controller.is_empty() => bad(
                "--mode group needs --controller (the controller nodes' client addresses)".into(),
            ),
            _ => Ok(()),
        }
    }

    fn group_config(&self, id: GroupId) -> GroupConfig {
        let mut g = GroupConfig::new(id);
        g.shards = self.shards;
        g.cc = self.cc;
        g.deadlock = self.deadlock;
        g.bugs = self.bugs.clone();
        g.dedup_max_bytes_per_shard = self.dedup_max_bytes_per_shard;
        g
    }

    /// The empty state machine of this role.
    pub(crate) fn fresh_machine(&self) -> ShardMachine {
        match self.role {
            ShardRole::Controller => ShardMachine::Controller(Controller::new(self.shards)),
            ShardRole::Group(id) => {
                ShardMachine::Group(Box::new(Group::new(self.group_config(id))))
            }
        }
    }

    /// The state machine held in a snapshot's bytes.
    pub(crate) fn machine_from_snapshot(&self, bytes: &[u8]) -> Result<ShardMachine, StoreError> {
        match self.role {
            ShardRole::Controller => {
                let c: Controller = codec::decode("controller snapshot", bytes)?;
                if c.latest().shards.len() != self.shards {
                    return Err(StoreError::Config(format!(
                        "the controller snapshot has {} shards, --shards is {}",
                        c.latest().shards.len(),
                        self.shards
                    )));
                }
                Ok(ShardMachine::Controller(c))
            }
            ShardRole::Group(id) => Group::from_snapshot(self.group_config(id), bytes)
                .map(|g| ShardMachine::Group(Box::new(g)))
                .map_err(StoreError::from),
        }
    }
}

/// The replicated state machine of a sharded node.
#[derive(Debug)]
pub enum ShardMachine {
    Controller(Controller),
    Group(Box<Group>),
}

impl ShardMachine {
    pub fn snapshot(&self) -> Vec<u8> {
        match self {
            ShardMachine::Controller(c) => codec::encode(c),
            ShardMachine::Group(g) => g.snapshot(),
        }
    }

    /// Equal on replicas that applied the same log.
    pub fn digest(&self) -> u64 {
        match self {
            ShardMachine::Controller(c) => crate::shard::fnv1a64(&codec::encode(c)),
            ShardMachine::Group(g) => g.digest(),
        }
    }
}

/// The sharded part of a node's shared state.
pub struct ShardNode {
    pub settings: ShardSettings,
    pub machine: Mutex<ShardMachine>,
    /// HTTP handlers waiting for their transaction's reply at this node.
    waiters: Mutex<HashMap<TxnId, Vec<oneshot::Sender<TxnReply>>>>,
    outbox: mpsc::Sender<Outbound>,
    pub metrics: ShardMetrics,
}

#[derive(Debug, Default)]
pub struct ShardMetrics {
    pub messages_sent: std::sync::atomic::AtomicU64,
    pub messages_dropped: std::sync::atomic::AtomicU64,
    pub messages_received: std::sync::atomic::AtomicU64,
    pub txns_committed_fast: std::sync::atomic::AtomicU64,
    pub txns_committed_2pc: std::sync::atomic::AtomicU64,
    pub decisions: std::sync::atomic::AtomicU64,
    pub configs_applied: std::sync::atomic::AtomicU64,
    pub shards_installed: std::sync::atomic::AtomicU64,
    pub shards_frozen: std::sync::atomic::AtomicU64,
}

/// A message for the outbound task.
enum Outbound {
    /// `POST /shard/msg` to one of `members`.
    ToGroup {
        group: GroupId,
        members: Vec<String>,
        body: Vec<u8>,
    },
    /// `GET /shards/config/{num}` from a controller node.
    QueryConfig { num: Option<u64> },
}

/// The body of `POST /shard/msg`.
pub(crate) type Envelope = (Addr, Msg);

impl ShardNode {
    /// The node's sharded state, and the receiver the outbound task reads (see
    /// [`spawn_outbound`]).
    pub(crate) fn new(
        settings: ShardSettings,
        machine: ShardMachine,
    ) -> (ShardNode, OutboundReceiver) {
        let (tx, rx) = mpsc::channel(settings.max_messages_in_flight.max(1) * 4);
        (
            ShardNode {
                settings,
                machine: Mutex::new(machine),
                waiters: Mutex::new(HashMap::new()),
                outbox: tx,
                metrics: ShardMetrics::default(),
            },
            OutboundReceiver(rx),
        )
    }

    pub fn group_id(&self) -> Option<GroupId> {
        match self.settings.role {
            ShardRole::Group(g) => Some(g),
            ShardRole::Controller => None,
        }
    }

    /// Registers an HTTP handler waiting for `txn`'s reply.
    pub(crate) fn wait_for(&self, txn: TxnId) -> oneshot::Receiver<TxnReply> {
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .expect("lock poisoned")
            .entry(txn)
            .or_default()
            .push(tx);
        rx
    }

    fn answer(&self, txn: TxnId, reply: &TxnReply) {
        if let Some(list) = self.waiters.lock().expect("lock poisoned").remove(&txn) {
            for tx in list {
                let _ = tx.send(reply.clone());
            }
        }
    }

    /// Forgets waiters whose HTTP request is gone (timed out or disconnected).
    pub(crate) fn expire(&self) {
        let mut w = self.waiters.lock().expect("lock poisoned");
        w.retain(|_, list| {
            list.retain(|tx| !tx.is_closed());
            !list.is_empty()
        });
    }

    /// The members of `group` as this node knows them.
    pub fn members_of(&self, group: GroupId) -> Vec<String> {
        match &*self.machine.lock().expect("lock poisoned") {
            ShardMachine::Group(g) => g.members(group).map(<[String]>::to_vec).unwrap_or_default(),
            ShardMachine::Controller(c) => {
                c.latest().groups.get(&group).cloned().unwrap_or_default()
            }
        }
    }
}

pub(crate) struct OutboundReceiver(mpsc::Receiver<Outbound>);

/// The epoch a leader with this ballot uses: unique per leader, increasing with ballots.
fn epoch_of(b: Ballot) -> u64 {
    b.round
        .saturating_mul(1 << 16)
        .saturating_add(b.node & 0xffff)
}

/// Proposal ids of the group core's own proposals: a range the driver's client proposals
/// (counting from 1) never reach, so their outcomes are never mistaken for a client's.
const CORE_PROPOSAL_IDS: u64 = 1 << 62;

/// The driver's sharded state (the driver owns it).
pub(crate) struct ShardDriver {
    pub(crate) node: Arc<Shared>,
    was_leader: bool,
    next_proposal: u64,
    /// The fast-path transactions this leader proposed and has not seen applied, with their
    /// proposal ids, so that a definite refusal by the log reaches the core (which never
    /// proposes a `Local` record twice). Cleared when leadership changes; bounded by the
    /// proposals in flight.
    local_proposals: HashMap<TxnId, u64>,
}

impl ShardDriver {
    pub(crate) fn new(shared: Arc<Shared>) -> ShardDriver {
        ShardDriver {
            node: shared,
            was_leader: false,
            next_proposal: CORE_PROPOSAL_IDS,
            local_proposals: HashMap::new(),
        }
    }

    fn sh(&self) -> &ShardNode {
        self.node.shard.as_ref().expect("sharded mode")
    }

    /// Applies one committed command from the log. `mine`: proposed at this node, as `id`.
    /// Returns the answer for a controller command proposed here.
    pub(crate) fn apply(
        &mut self,
        paxos: &mut Node,
        slot: u64,
        data: &[u8],
    ) -> Option<ProposeReply> {
        let leader = paxos.is_leader();
        let mut applied_local = None;
        let outputs = {
            let mut m = self.sh().machine.lock().expect("lock poisoned");
            match &mut *m {
                ShardMachine::Controller(c) => {
                    return match codec::decode::<ControllerCmd>("controller command", data) {
                        Ok(cmd) => Some(ProposeReply::Config(
                            c.apply(&cmd).map_err(|e| e.to_string()),
                        )),
                        Err(e) => {
                            tracing::error!(slot, error = %e, "undecodable controller command in the log; skipped");
                            None
                        }
                    };
                }
                ShardMachine::Group(g) => match codec::decode::<GroupCmd>("group command", data) {
                    Ok(cmd) => {
                        if let GroupCmd::Local { req, .. } = &cmd {
                            applied_local = Some(req.id);
                        }
                        g.step(Input::Apply(cmd))
                    }
                    Err(e) => {
                        tracing::error!(slot, error = %e, "undecodable group command in the log; skipped");
                        return None;
                    }
                },
            }
        };
        if let Some(txn) = applied_local {
            self.local_proposals.remove(&txn);
        }
        self.observe(&outputs);
        if leader {
            self.carry_out(paxos, outputs);
        }
        None
    }

    /// The Paxos core dropped proposal `id` (one of the group core's when it is not a client
    /// proposal). A definite refusal of a fast-path record is handed to the core.
    pub(crate) fn rejected(&mut self, paxos: &mut Node, id: u64, why: Dropped) {
        // A scan, but refusals are rare (an overloaded or deposed leader).
        let Some(txn) = self
            .local_proposals
            .iter()
            .find_map(|(t, p)| (*p == id).then_some(*t))
        else {
            return;
        };
        self.local_proposals.remove(&txn);
        if why.certainly_not_applied() && paxos.is_leader() && self.was_leader {
            let outputs = self.step_group(Input::LocalDropped { txn });
            self.carry_out(paxos, outputs);
        }
    }

    /// After each Ready: a node that has just become leader takes over its group core.
    pub(crate) fn after_ready(&mut self, paxos: &mut Node) {
        let leader = paxos.is_leader();
        if leader != self.was_leader {
            // The new leader's core forgets its predecessor's proposals (become_leader_at).
            self.local_proposals.clear();
        }
        if leader && !self.was_leader {
            let epoch = epoch_of(paxos.status().ballot);
            let outputs = {
                let mut m = self.sh().machine.lock().expect("lock poisoned");
                match &mut *m {
                    ShardMachine::Group(g) => {
                        g.become_leader_at(epoch);
                        tracing::info!(
                            epoch,
                            group = g.id(),
                            "leading the group; proposing its epoch"
                        );
                        g.step(Input::Tick)
                    }
                    ShardMachine::Controller(_) => Vec::new(),
                }
            };
            self.carry_out(paxos, outputs);
        }
        self.was_leader = leader;
    }

    /// One tick of the group core (leader only).
    pub(crate) fn tick(&mut self, paxos: &mut Node) {
        if !paxos.is_leader() || !self.was_leader {
            return;
        }
        let outputs = self.step_group(Input::Tick);
        self.carry_out(paxos, outputs);
    }

    fn step_group(&self, input: Input) -> Vec<Output> {
        match &mut *self.sh().machine.lock().expect("lock poisoned") {
            ShardMachine::Group(g) => g.step(input),
            ShardMachine::Controller(_) => Vec::new(),
        }
    }

    /// A message from another group, the controller or a client (leader only; elsewhere
    /// dropped, and a client's transaction answered "not ready").
    pub(crate) fn on_message(&mut self, paxos: &mut Node, from: Addr, msg: Msg) {
        if !paxos.is_leader() || !self.was_leader {
            if let (Addr::Client(_), Msg::Txn(req)) = (from, &msg) {
                let reply = TxnReply::Aborted {
                    reason: crate::shard::AbortReason::NotReady,
                };
                self.sh().answer(req.id, &reply);
            }
            return;
        }
        let outputs = self.step_group(Input::Message { from, msg });
        self.observe(&outputs);
        self.carry_out(paxos, outputs);
    }

    fn observe(&self, outputs: &[Output]) {
        let m = &self.sh().metrics;
        for o in outputs {
            if let Output::Observe(obs) = o {
                let counter = match obs {
                    Observation::Committed {
                        two_phase: false, ..
                    } => &m.txns_committed_fast,
                    Observation::Committed {
                        two_phase: true, ..
                    } => &m.txns_committed_2pc,
                    Observation::Decided { .. } => &m.decisions,
                    Observation::ConfigApplied { num, .. } => {
                        tracing::info!(config = num, "applied a new shard configuration");
                        &m.configs_applied
                    }
                    Observation::ShardFrozen { num, shard, .. } => {
                        tracing::info!(config = num, shard, "froze a leaving shard for hand-off");
                        &m.shards_frozen
                    }
                    Observation::ShardInstalled { num, shard, .. } => {
                        tracing::info!(config = num, shard, "installed an arriving shard");
                        &m.shards_installed
                    }
                };
                counter.fetch_add(1, Relaxed);
            }
        }
    }

    /// Proposals to the log, replies to waiting clients, messages to the outbound task.
    fn carry_out(&mut self, paxos: &mut Node, outputs: Vec<Output>) {
        for o in outputs {
            match o {
                Output::Propose(cmd) => {
                    let id = self.next_proposal;
                    self.next_proposal += 1;
                    if let GroupCmd::Local { req, .. } = &cmd {
                        self.local_proposals.insert(req.id, id);
                    }
                    self.node.metrics.proposals.fetch_add(1, Relaxed);
                    paxos.propose(id, codec::encode(&cmd));
                }
                Output::Send {
                    to: Addr::Client(_),
                    msg: Msg::Reply { id, reply },
                } => self.sh().answer(id, &reply),
                Output::Send {
                    to: Addr::Controller,
                    msg: Msg::QueryConfig { num },
                } => self.enqueue(Outbound::QueryConfig { num }),
                Output::Send {
                    to: Addr::Group(g),
                    msg,
                } => {
                    let me = self.sh().group_id().unwrap_or(0);
                    let members = self.sh().members_of(g);
                    let body = codec::encode(&(Addr::Group(me), msg));
                    self.enqueue(Outbound::ToGroup {
                        group: g,
                        members,
                        body,
                    });
                }
                Output::Send { to, msg } => {
                    tracing::debug!(?to, ?msg, "no route for a shard message; dropped")
                }
                Output::Observe(_) => {}
            }
        }
    }

    fn enqueue(&self, o: Outbound) {
        if self.sh().outbox.try_send(o).is_err() {
            self.sh().metrics.messages_dropped.fetch_add(1, Relaxed);
        }
    }
}

/// The outbound task: sends each message on its own task (at most `max_messages_in_flight`
/// at once; more are dropped), to the member of the target group that answered last, trying
/// the others in turn.
pub(crate) async fn outbound(shared: Arc<Shared>, OutboundReceiver(mut rx): OutboundReceiver) {
    let sh = match &shared.shard {
        Some(s) => s,
        None => return,
    };
    let limit = Arc::new(tokio::sync::Semaphore::new(
        sh.settings.max_messages_in_flight.max(1),
    ));
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_millis(shared.config.forward_timeout_ms))
        .connect_timeout(Duration::from_millis(500))
        .local_address(Some(shared.config.listen.ip()))
        .build()
    {
        Ok(c) => c,
        Err(e) => crate::server::fatal("build the shard message client", e),
    };
    // Which member of each group (or the controller) answered last.
    let preferred: Arc<Mutex<HashMap<GroupId, usize>>> = Arc::new(Mutex::new(HashMap::new()));
    while let Some(o) = rx.recv().await {
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            sh.metrics.messages_dropped.fetch_add(1, Relaxed);
            continue;
        };
        let (client, shared, preferred) = (client.clone(), shared.clone(), preferred.clone());
        tokio::spawn(async move {
            let _permit = permit;
            send_one(&client, &shared, &preferred, o).await;
        });
    }
}

/// Sends one message, trying each member once, starting with the preferred one.
async fn send_one(
    client: &reqwest::Client,
    shared: &Arc<Shared>,
    preferred: &Mutex<HashMap<GroupId, usize>>,
    o: Outbound,
) {
    let Some(sh) = &shared.shard else { return };
    // The controller is remembered under group 0.
    let (key, members) = match &o {
        Outbound::ToGroup { group, members, .. } => (*group, members.clone()),
        Outbound::QueryConfig { .. } => (0, sh.settings.controller.clone()),
    };
    if members.is_empty() {
        sh.metrics.messages_dropped.fetch_add(1, Relaxed);
        return;
    }
    let start = preferred
        .lock()
        .expect("lock poisoned")
        .get(&key)
        .copied()
        .unwrap_or(0);
    for i in 0..members.len() {
        let idx = (start + i) % members.len();
        let addr = &members[idx];
        let delivered = match &o {
            Outbound::ToGroup { body, .. } => {
                let mut rb = client
                    .post(format!("http://{addr}/shard/msg"))
                    .body(body.clone());
                if let Some(t) = &shared.config.cluster_token {
                    rb = rb.header(SHARD_TOKEN_HEADER, String::from_utf8_lossy(t).to_string());
                }
                matches!(rb.send().await, Ok(r) if r.status().is_success())
            }
            Outbound::QueryConfig { num } => {
                let path = match num {
                    Some(n) => format!("http://{addr}/shards/config/{n}?consistency=local"),
                    None => format!("http://{addr}/shards/config?consistency=local"),
                };
                match client.get(path).send().await {
                    Ok(r) if r.status().is_success() => match r.bytes().await {
                        Ok(b) => match config_from_json(&b) {
                            Some(cfg) => {
                                let msg = Msg::ConfigReply(cfg);
                                let _ = shared.requests.try_send(Request::ShardMsg {
                                    from: Addr::Controller,
                                    msg,
                                });
                                true
                            }
                            None => false,
                        },
                        Err(_) => false,
                    },
                    _ => false,
                }
            }
        };
        if delivered {
            sh.metrics.messages_sent.fetch_add(1, Relaxed);
            preferred.lock().expect("lock poisoned").insert(key, idx);
            return;
        }
    }
    sh.metrics.messages_dropped.fetch_add(1, Relaxed);
}

/// Header carrying the cluster token on `POST /shard/msg` when `--cluster-token-file` is set.
pub(crate) const SHARD_TOKEN_HEADER: &str = "x-paxos-kv-token";

/// The JSON form of a configuration (`GET /shards/config`).
pub fn config_to_json(c: &Config) -> serde_json::Value {
    let groups: serde_json::Map<String, serde_json::Value> = c
        .groups
        .iter()
        .map(|(g, m)| (g.to_string(), serde_json::json!(m)))
        .collect();
    serde_json::json!({"num": c.num, "shards": c.shards, "groups": groups})
}

/// Parses [`config_to_json`]'s form; None when it is not one.
pub fn config_from_json(bytes: &[u8]) -> Option<Config> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let num = v.get("num")?.as_u64()?;
    let shards = v
        .get("shards")?
        .as_array()?
        .iter()
        .map(serde_json::Value::as_u64)
        .collect::<Option<Vec<u64>>>()?;
    let mut groups = std::collections::BTreeMap::new();
    for (g, m) in v.get("groups")?.as_object()? {
        let members = m
            .as_array()?
            .iter()
            .map(|a| a.as_str().map(str::to_string))
            .collect::<Option<Vec<String>>>()?;
        groups.insert(g.parse().ok()?, members);
    }
    Some(Config {
        num,
        shards,
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_grow_with_ballots_and_differ_between_leaders() {
        let e = |round, node| epoch_of(Ballot { round, node });
        assert!(e(2, 1) > e(1, 3));
        assert!(e(1, 2) > e(1, 1));
        assert_ne!(e(5, 1), e(5, 2));
    }

    #[test]
    fn config_json_round_trips() {
        let mut c = Controller::new(4);
        c.apply(&ControllerCmd::Join {
            group: 7,
            members: vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()],
        })
        .expect("join");
        let cfg = c.latest().clone();
        let bytes = serde_json::to_vec(&config_to_json(&cfg)).expect("json");
        assert_eq!(config_from_json(&bytes), Some(cfg));
        assert_eq!(config_from_json(b"{\"num\": 1}"), None);
    }
}
