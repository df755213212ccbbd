//! A deterministic simulator for a cluster of [`Node`]s: one seed fixes everything (message
//! loss, duplication, reordering and delay, crashes that keep only persisted records, restarts,
//! partitions, client operations). After every step it checks:
//! - agreement: no two nodes apply different values for a slot (a global first-seen map);
//! - validity: every applied command was proposed (same bytes), and no command is applied in
//!   two slots;
//! - linearizable reads: a read confirmed through `read_index` reflects every write acknowledged
//!   before the read was invoked (a tiny register state machine: the register holds the slot of
//!   the last write applied);
//! - progress: once the network heals and every node is up, a write commits at every node
//!   within a bounded number of ticks.

use super::{
    Ballot, Bug, Config, Dropped, Entry, Envelope, Message, Node, NodeId, PersistToken, ProposalId,
    ReadId, Record, RecoveredState, Slot, Snapshot, Value, ROUND_MAX, SLOT_MAX,
};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

/// Knobs of one simulation run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub nodes: usize,
    pub seed: u64,
    pub bugs: Vec<Bug>,
    /// Ticks with faults.
    pub fault_ticks: u64,
    /// After healing, a write must be applied at every node within this many ticks.
    pub progress_bound_ticks: u64,
    pub loss_probability: f64,
    pub duplicate_probability: f64,
    pub max_delay_ticks: u64,
    /// Some messages are held far longer (stale messages from old ballots arrive late).
    pub long_delay_probability: f64,
    pub max_long_delay_ticks: u64,
    /// An fsync takes up to this many ticks; a crash loses what has not completed.
    pub max_persist_delay_ticks: u64,
    /// Per tick, during the fault phase.
    pub crash_probability: f64,
    pub crash_majority_probability: f64,
    /// Per tick: stop a node (SIGSTOP), often the leader, for a while; on resume it may run
    /// the missed ticks in a burst, as a tokio interval does.
    pub pause_probability: f64,
    pub partition_probability: f64,
    pub heal_probability: f64,
    pub write_probability: f64,
    pub read_probability: f64,
    /// Per tick, during the fault phase: a node receives, from a real peer, a well-formed
    /// message carrying an extreme round or slot (not byzantine: no lies within range). The
    /// core must refuse it, and the run must stay correct and make progress.
    pub hostile_probability: f64,
}

impl SimConfig {
    pub fn new(nodes: usize, seed: u64) -> SimConfig {
        SimConfig {
            nodes,
            seed,
            bugs: Vec::new(),
            fault_ticks: 400,
            progress_bound_ticks: 400,
            loss_probability: 0.05,
            duplicate_probability: 0.03,
            max_delay_ticks: 4,
            long_delay_probability: 0.01,
            max_long_delay_ticks: 100,
            max_persist_delay_ticks: 6,
            crash_probability: 0.02,
            crash_majority_probability: 0.004,
            pause_probability: 0.01,
            partition_probability: 0.03,
            heal_probability: 0.03,
            write_probability: 0.4,
            read_probability: 0.3,
            hostile_probability: 0.0,
        }
    }

    /// The core's settings used in simulation: small bounds so that batching limits,
    /// compaction and snapshot installs happen within a short run.
    pub fn node_config(&self, id: NodeId) -> Config {
        let mut c = Config::new(id, (1..=self.nodes as u64).collect());
        c.election_timeout_min_ticks = 15;
        c.heartbeat_interval_ticks = 3;
        c.check_quorum_ticks = 45;
        c.retransmit_ticks = 8;
        c.max_batch_commands = 4;
        c.max_in_flight_slots = 4;
        c.max_pending_proposals = 32;
        c.max_catchup_entries = 16;
        c.snapshot_interval_entries = 25;
        c.compaction_retain_entries = 5;
        c.bugs = self.bugs.clone();
        c
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

/// What a run did, to check that runs exercise the protocol.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    pub ticks: u64,
    pub writes_acked: u64,
    pub reads_answered: u64,
    pub slots_chosen: u64,
    pub crashes: u64,
    pub snapshots_installed: u64,
    pub messages_delivered: u64,
    /// Hostile messages refused by the core.
    pub hostile_refused: u64,
}

struct PendingPersist {
    token: PersistToken,
    records: Vec<Record>,
    messages: Vec<Envelope>,
    done_tick: u64,
}

struct PendingRead {
    /// Slot of the last write acknowledged anywhere before the read was invoked.
    required_slot: Slot,
    /// Set once the core confirmed the read.
    answer_after_slot: Option<Slot>,
}

struct SimNode {
    node: Option<Node>,
    durable: RecoveredState,
    durable_snapshot: Option<Snapshot>,
    unpersisted: VecDeque<PendingPersist>,
    restart_tick: u64,
    /// Paused (SIGSTOP) while `now < paused_until`: no ticks, no deliveries, no fsync acks.
    paused_until: u64,
    /// Ticks to run at once on resume.
    resume_burst_ticks: u64,
    incarnation: u64,
    /// The register: last applied slot and the slot of the last write applied.
    applied: Slot,
    register: Slot,
    waiting_writes: BTreeSet<ProposalId>,
    reads: BTreeMap<ReadId, PendingRead>,
}

struct InTransit {
    deliver_tick: u64,
    from: NodeId,
    to: NodeId,
    msg: Message,
}

/// One simulated cluster.
pub struct Sim {
    cfg: SimConfig,
    rng: ChaCha8Rng,
    now: u64,
    nodes: Vec<SimNode>,
    network: Vec<InTransit>,
    /// Partition group of each node: messages pass only within a group.
    group: Vec<u8>,
    faults_on: bool,
    chosen: BTreeMap<Slot, Value>,
    proposed: HashMap<(NodeId, ProposalId), Vec<u8>>,
    command_slot: HashMap<(NodeId, ProposalId), Slot>,
    max_acked_slot: Slot,
    next_id: u64,
    probe: Option<(NodeId, ProposalId)>,
    probe_slot: Option<Slot>,
    stats: SimStats,
}

impl Sim {
    pub fn new(cfg: SimConfig) -> Sim {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let mut nodes = Vec::new();
        for i in 1..=cfg.nodes as u64 {
            let node = Node::new(cfg.node_config(i), rng.gen()).expect("valid sim config");
            nodes.push(SimNode {
                node: Some(node),
                durable: RecoveredState::default(),
                durable_snapshot: None,
                unpersisted: VecDeque::new(),
                restart_tick: 0,
                paused_until: 0,
                resume_burst_ticks: 0,
                incarnation: 0,
                applied: 0,
                register: 0,
                waiting_writes: BTreeSet::new(),
                reads: BTreeMap::new(),
            });
        }
        let n = cfg.nodes;
        Sim {
            cfg,
            rng,
            now: 0,
            nodes,
            network: Vec::new(),
            group: vec![0; n],
            faults_on: true,
            chosen: BTreeMap::new(),
            proposed: HashMap::new(),
            command_slot: HashMap::new(),
            max_acked_slot: 0,
            next_id: 1,
            probe: None,
            probe_slot: None,
            stats: SimStats::default(),
        }
    }

    fn violation(&self, what: String) -> Violation {
        Violation {
            seed: self.cfg.seed,
            tick: self.now,
            what,
        }
    }

    /// Runs the fault phase, heals, and checks progress. Returns the first violation.
    pub fn run(mut self) -> Result<SimStats, Violation> {
        for _ in 0..self.cfg.fault_ticks {
            self.step_tick()?;
        }
        // Heal: every node up, no partition, no loss; a write must now commit everywhere.
        self.faults_on = false;
        self.group.iter_mut().for_each(|g| *g = 0);
        for n in self.nodes.iter_mut() {
            n.paused_until = n.paused_until.min(self.now);
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].node.is_none() {
                self.restart(i)?;
            }
        }
        let healed_at = self.now;
        while self.now < healed_at + self.cfg.progress_bound_ticks {
            self.step_tick()?;
            if self.probe_done() {
                self.stats.ticks = self.now;
                return Ok(self.stats);
            }
        }
        Err(self.violation(format!(
            "no progress: a write was not applied at every node within {} ticks after healing \
             (probe {:?}, probe slot {:?}, applied {:?})",
            self.cfg.progress_bound_ticks,
            self.probe,
            self.probe_slot,
            self.nodes.iter().map(|n| n.applied).collect::<Vec<_>>()
        )))
    }

    /// Turns the random faults (loss, crashes, restarts, partitions) on or off; duplication,
    /// reordering, delay and the client workload continue either way.
    pub fn set_faults(&mut self, on: bool) {
        self.faults_on = on;
    }

    /// Cuts node `id` off from every other node.
    pub fn isolate(&mut self, id: NodeId) {
        self.group.iter_mut().for_each(|g| *g = 0);
        self.group[id as usize - 1] = 1;
    }

    /// Stops node `id` (SIGSTOP) for `ticks`; on resume it runs the missed ticks at once if
    /// `burst`.
    pub fn pause_node(&mut self, id: NodeId, ticks: u64, burst: bool) {
        let n = &mut self.nodes[id as usize - 1];
        n.paused_until = self.now + ticks;
        n.resume_burst_ticks = if burst { ticks } else { 0 };
    }

    /// Removes every partition.
    pub fn heal(&mut self) {
        self.group.iter_mut().for_each(|g| *g = 0);
    }

    /// Crashes node `id` (it keeps only persisted records) until [`Sim::restart_node`].
    pub fn crash_node(&mut self, id: NodeId) {
        self.crash(id as usize - 1);
        self.nodes[id as usize - 1].restart_tick = u64::MAX;
    }

    pub fn restart_node(&mut self, id: NodeId) -> Result<(), Violation> {
        if self.nodes[id as usize - 1].node.is_none() {
            self.restart(id as usize - 1)?;
        }
        Ok(())
    }

    /// Advances one tick: fsyncs, ticks, deliveries, client operations, invariant checks.
    pub fn tick(&mut self) -> Result<(), Violation> {
        self.step_tick()
    }

    /// The node that believes it leads with the highest ballot, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|n| n.node.as_ref())
            .filter(|n| n.is_leader())
            .max_by_key(|n| n.status().ballot)
            .map(|n| n.id())
    }

    /// The status of node `id`, if it is up.
    pub fn status(&self, id: NodeId) -> Option<super::Status> {
        self.nodes[id as usize - 1]
            .node
            .as_ref()
            .map(|n| n.status())
    }

    pub fn stats(&self) -> &SimStats {
        &self.stats
    }

    pub fn now(&self) -> u64 {
        self.now
    }

    fn paused(&self, i: usize) -> bool {
        self.now < self.nodes[i].paused_until
    }

    fn probe_done(&self) -> bool {
        match self.probe_slot {
            Some(s) => self.nodes.iter().all(|n| n.applied >= s),
            None => false,
        }
    }

    fn step_tick(&mut self) -> Result<(), Violation> {
        self.now += 1;
        if self.faults_on {
            self.inject_faults()?;
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].node.is_none()
                && self.faults_on
                && self.now >= self.nodes[i].restart_tick
            {
                self.restart(i)?;
            }
        }
        // Fsyncs complete in order.
        for i in 0..self.nodes.len() {
            if self.paused(i) {
                continue;
            }
            while self.nodes[i]
                .unpersisted
                .front()
                .is_some_and(|p| p.done_tick <= self.now)
            {
                let p = self.nodes[i].unpersisted.pop_front().expect("front");
                for r in p.records {
                    self.nodes[i].durable.apply(r);
                }
                for e in p.messages {
                    self.transmit(i as u64 + 1, e);
                }
                if let Some(node) = self.nodes[i].node.as_mut() {
                    node.persisted(p.token);
                }
                self.drain(i)?;
            }
        }
        for i in 0..self.nodes.len() {
            if self.paused(i) {
                continue;
            }
            let burst = if self.nodes[i].paused_until == self.now {
                std::mem::take(&mut self.nodes[i].resume_burst_ticks)
            } else {
                0
            };
            for _ in 0..=burst {
                if let Some(node) = self.nodes[i].node.as_mut() {
                    node.tick();
                    self.drain(i)?;
                }
            }
        }
        self.deliver_due()?;
        self.client_ops()?;
        Ok(())
    }

    /// A well-formed message with one extreme round or slot, as any peer could send.
    fn hostile_message(&mut self) -> Message {
        let extreme = [u64::MAX, u64::MAX - 1, ROUND_MAX + 1, SLOT_MAX + 1];
        let x = extreme[self.rng.gen_range(0..extreme.len())];
        let node = self.rng.gen_range(1..=self.nodes.len() as u64);
        let ballot = Ballot { round: x, node };
        let low = Ballot { round: 1, node };
        match self.rng.gen_range(0..8) {
            0 => Message::Prepare {
                ballot,
                from_slot: 1,
            },
            1 => Message::Prepare {
                ballot: low,
                from_slot: x,
            },
            2 => Message::Accept {
                ballot,
                entries: vec![],
                commit: 0,
            },
            3 => Message::Accept {
                ballot: low,
                entries: vec![Entry {
                    slot: x,
                    value: Value::Noop,
                }],
                commit: 0,
            },
            4 => Message::Heartbeat {
                ballot: low,
                seq: 0,
                commit: x,
            },
            5 => Message::Nack { promised: ballot },
            6 => Message::PreVote {
                round: x,
                commit: 0,
            },
            _ => Message::CatchUpRequest { from_slot: x },
        }
    }

    fn inject_hostile(&mut self) -> Result<(), Violation> {
        let n = self.nodes.len();
        let to = self.rng.gen_range(0..n);
        let from = (to + self.rng.gen_range(1..n.max(2))) % n;
        let msg = self.hostile_message();
        if from == to || self.nodes[to].node.is_none() {
            return Ok(());
        }
        let shown = format!("{msg:?}");
        let node = self.nodes[to].node.as_mut().expect("checked");
        match node.step(from as u64 + 1, msg) {
            Err(super::PaxosError::OutOfRange { .. }) => {
                self.stats.hostile_refused += 1;
                Ok(())
            }
            other => Err(self.violation(format!(
                "node {} did not refuse a hostile message ({other:?}): {shown}",
                to + 1
            ))),
        }
    }

    fn inject_faults(&mut self) -> Result<(), Violation> {
        let n = self.nodes.len();
        // Only consume randomness when enabled, so that existing seeds replay unchanged.
        if self.cfg.hostile_probability > 0.0 && self.rng.gen_bool(self.cfg.hostile_probability) {
            self.inject_hostile()?;
        }
        if self.rng.gen_bool(self.cfg.crash_probability) {
            // Often pick a node with records still waiting for their fsync: the crash that
            // loses them is the interesting one.
            let unsynced: Vec<usize> = (0..n)
                .filter(|&i| !self.nodes[i].unpersisted.is_empty())
                .collect();
            let i = if !unsynced.is_empty() && self.rng.gen_bool(0.7) {
                unsynced[self.rng.gen_range(0..unsynced.len())]
            } else {
                self.rng.gen_range(0..n)
            };
            self.crash(i);
        }
        if self.rng.gen_bool(self.cfg.crash_majority_probability) {
            let mut ids: Vec<usize> = (0..n).collect();
            ids.shuffle(&mut self.rng);
            for &i in ids.iter().take(n / 2 + 1) {
                self.crash(i);
            }
        }
        if self.rng.gen_bool(self.cfg.pause_probability) {
            let leader =
                (0..n).find(|&i| self.nodes[i].node.as_ref().is_some_and(|nd| nd.is_leader()));
            let i = match leader {
                Some(l) if self.rng.gen_bool(0.7) => l,
                _ => self.rng.gen_range(0..n),
            };
            if !self.paused(i) {
                let ticks = self.rng.gen_range(10..100);
                self.nodes[i].paused_until = self.now + ticks;
                self.nodes[i].resume_burst_ticks = if self.rng.gen_bool(0.5) { ticks } else { 0 };
            }
        }
        if self.rng.gen_bool(self.cfg.partition_probability) {
            if self.rng.gen_bool(0.5) {
                // Isolate one node, often the leader.
                let leader =
                    (0..n).find(|&i| self.nodes[i].node.as_ref().is_some_and(|nd| nd.is_leader()));
                let i = match leader {
                    Some(l) if self.rng.gen_bool(0.7) => l,
                    _ => self.rng.gen_range(0..n),
                };
                self.group.iter_mut().for_each(|g| *g = 0);
                self.group[i] = 1;
            } else {
                for g in self.group.iter_mut() {
                    *g = self.rng.gen_range(0..2);
                }
            }
        }
        if self.rng.gen_bool(self.cfg.heal_probability) {
            self.group.iter_mut().for_each(|g| *g = 0);
        }
        Ok(())
    }

    fn crash(&mut self, i: usize) {
        let down_ticks = self.rng.gen_range(5..60);
        let sn = &mut self.nodes[i];
        if sn.node.is_none() {
            return;
        }
        // Only what was fsynced survives.
        sn.node = None;
        sn.unpersisted.clear();
        sn.waiting_writes.clear();
        sn.reads.clear();
        sn.restart_tick = self.now + down_ticks;
        if self.probe.is_some_and(|(o, _)| o == i as u64 + 1) && self.probe_slot.is_none() {
            self.probe = None;
        }
        self.stats.crashes += 1;
    }

    fn restart(&mut self, i: usize) -> Result<(), Violation> {
        let seed = self.rng.gen();
        let cfg = self.cfg.node_config(i as u64 + 1);
        let sn = &mut self.nodes[i];
        sn.incarnation += 1;
        let node = Node::restore(cfg, sn.durable.clone(), sn.durable_snapshot.clone(), seed)
            .map_err(|e| Violation {
                seed: self.cfg.seed,
                tick: self.now,
                what: format!("restore failed: {e}"),
            })?;
        // The state machine restarts from the snapshot; the core re-emits later entries.
        match &sn.durable_snapshot {
            Some(s) => {
                sn.applied = s.slot;
                sn.register = decode_register(&s.data);
            }
            None => {
                sn.applied = 0;
                sn.register = 0;
            }
        }
        sn.node = Some(node);
        self.drain(i)
    }

    fn transmit(&mut self, from: NodeId, e: Envelope) {
        if self.faults_on && self.rng.gen_bool(self.cfg.loss_probability) {
            return;
        }
        let copies = if self.rng.gen_bool(self.cfg.duplicate_probability) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = if self.faults_on && self.rng.gen_bool(self.cfg.long_delay_probability) {
                self.rng.gen_range(1..=self.cfg.max_long_delay_ticks)
            } else {
                self.rng.gen_range(1..=self.cfg.max_delay_ticks)
            };
            self.network.push(InTransit {
                deliver_tick: self.now + delay,
                from,
                to: e.to,
                msg: e.msg.clone(),
            });
        }
    }

    fn deliver_due(&mut self) -> Result<(), Violation> {
        let now = self.now;
        let (due, later): (Vec<InTransit>, Vec<InTransit>) = std::mem::take(&mut self.network)
            .into_iter()
            .partition(|m| m.deliver_tick <= now);
        self.network = later;
        for mut m in due {
            let (f, t) = (m.from as usize - 1, m.to as usize - 1);
            if self.group[f] != self.group[t] {
                continue;
            }
            if self.paused(t) {
                // Held in the socket until the process resumes.
                m.deliver_tick = self.nodes[t].paused_until;
                self.network.push(m);
                continue;
            }
            if let Some(node) = self.nodes[t].node.as_mut() {
                node.step(m.from, m.msg)
                    .map_err(|e| self.violation(format!("step failed: {e}")))?;
                self.stats.messages_delivered += 1;
                self.drain(t)?;
            }
        }
        Ok(())
    }

    fn client_ops(&mut self) -> Result<(), Violation> {
        let n = self.nodes.len();
        let leader = (0..n).find(|&i| self.nodes[i].node.as_ref().is_some_and(|x| x.is_leader()));
        let pick = |rng: &mut ChaCha8Rng| match leader {
            Some(l) if rng.gen_bool(0.6) => l,
            _ => rng.gen_range(0..n),
        };
        if self.rng.gen_bool(self.cfg.write_probability) {
            let i = pick(&mut self.rng);
            self.write(i, false)?;
        }
        if self.rng.gen_bool(self.cfg.read_probability) {
            let i = pick(&mut self.rng);
            if self.nodes[i].node.is_some() && !self.paused(i) {
                let id = self.next_id;
                self.next_id += 1;
                let required = self.max_acked_slot;
                self.nodes[i].reads.insert(
                    id,
                    PendingRead {
                        required_slot: required,
                        answer_after_slot: None,
                    },
                );
                self.nodes[i].node.as_mut().expect("up").read_index(id);
                self.drain(i)?;
            }
        }
        if !self.faults_on && self.probe.is_none() {
            if let Some(l) = leader {
                self.write(l, true)?;
            }
        }
        Ok(())
    }

    fn write(&mut self, i: usize, probe: bool) -> Result<(), Violation> {
        if self.nodes[i].node.is_none() || self.paused(i) {
            return Ok(());
        }
        let id = self.next_id;
        self.next_id += 1;
        let origin = i as u64 + 1;
        let data = id.to_le_bytes().to_vec();
        self.proposed.insert((origin, id), data.clone());
        self.nodes[i].waiting_writes.insert(id);
        if probe {
            self.probe = Some((origin, id));
        }
        self.nodes[i].node.as_mut().expect("up").propose(id, data);
        self.drain(i)
    }

    /// Handles a node's Ready the way the server does.
    fn drain(&mut self, i: usize) -> Result<(), Violation> {
        let origin = i as u64 + 1;
        // Bounded: each round consumes outputs; a node settles within a few rounds.
        for _ in 0..100 {
            let Some(node) = self.nodes[i].node.as_mut() else {
                return Ok(());
            };
            if !node.has_ready() {
                return Ok(());
            }
            let ready = node.ready();
            if let Some(token) = ready.persist_token {
                let delay = self.rng.gen_range(0..=self.cfg.max_persist_delay_ticks);
                self.nodes[i].unpersisted.push_back(PendingPersist {
                    token,
                    records: ready.persist,
                    messages: ready.messages_after_persist,
                    done_tick: self.now + delay,
                });
            } else {
                assert!(ready.persist.is_empty() && ready.messages_after_persist.is_empty());
            }
            for e in ready.messages {
                self.transmit(origin, e);
            }
            if let Some(snap) = ready.install_snapshot {
                let applied = self.nodes[i].applied;
                if snap.slot <= applied {
                    return Err(self.violation(format!(
                        "node {origin} told to install snapshot {} at applied {applied}",
                        snap.slot
                    )));
                }
                let sn = &mut self.nodes[i];
                sn.applied = snap.slot;
                sn.register = decode_register(&snap.data);
                sn.durable.compact(snap.slot);
                sn.durable_snapshot = Some(snap);
                self.stats.snapshots_installed += 1;
            }
            for e in ready.committed {
                self.apply(i, e)?;
            }
            for r in ready.reads {
                if let Some(p) = self.nodes[i].reads.get_mut(&r.id) {
                    p.answer_after_slot = Some(r.slot);
                }
            }
            self.answer_reads(i)?;
            for (id, why) in ready.rejected {
                self.nodes[i].waiting_writes.remove(&id);
                if self.probe == Some((origin, id)) && self.probe_slot.is_none() {
                    self.probe = None;
                }
                if why == Dropped::TooLarge {
                    return Err(self.violation("sim command rejected as too large".into()));
                }
            }
            for (id, _) in ready.rejected_reads {
                self.nodes[i].reads.remove(&id);
            }
            if let Some(slot) = ready.snapshot_due {
                let sn = &mut self.nodes[i];
                let at = sn.applied;
                if at >= slot {
                    let data = sn.register.to_le_bytes().to_vec();
                    let snap = Snapshot { slot: at, data };
                    sn.durable.compact(at);
                    sn.durable_snapshot = Some(snap.clone());
                    let node = sn.node.as_mut().expect("up");
                    if let Err(e) = node.snapshot_taken(snap.slot, snap.data) {
                        return Err(self.violation(format!("snapshot_taken: {e}")));
                    }
                }
            }
        }
        Err(self.violation(format!("node {origin} never settled (100 ready rounds)")))
    }

    fn apply(&mut self, i: usize, e: Entry) -> Result<(), Violation> {
        let origin = i as u64 + 1;
        if e.slot != self.nodes[i].applied + 1 {
            return Err(self.violation(format!(
                "node {origin} applied slot {} after slot {}",
                e.slot, self.nodes[i].applied
            )));
        }
        match self.chosen.get(&e.slot) {
            Some(v) if *v != e.value => {
                return Err(self.violation(format!(
                    "agreement: node {origin} applied {:?} for slot {}, another node {:?}",
                    e.value, e.slot, v
                )))
            }
            Some(_) => {}
            None => {
                self.chosen.insert(e.slot, e.value.clone());
                self.stats.slots_chosen += 1;
            }
        }
        if let Value::Batch(cmds) = &e.value {
            for c in cmds {
                if self.proposed.get(&(c.origin, c.id)) != Some(&c.data) {
                    return Err(self.violation(format!(
                        "validity: slot {} holds command {}/{} that was never proposed",
                        e.slot, c.origin, c.id
                    )));
                }
                let first = *self.command_slot.entry((c.origin, c.id)).or_insert(e.slot);
                if first != e.slot {
                    return Err(self.violation(format!(
                        "command {}/{} chosen in slots {first} and {}",
                        c.origin, c.id, e.slot
                    )));
                }
                if c.origin == origin && self.nodes[i].waiting_writes.remove(&c.id) {
                    self.max_acked_slot = self.max_acked_slot.max(e.slot);
                    self.stats.writes_acked += 1;
                }
                if self.probe == Some((c.origin, c.id)) {
                    self.probe_slot = Some(e.slot);
                }
            }
            if !cmds.is_empty() {
                self.nodes[i].register = e.slot;
            }
        }
        self.nodes[i].applied = e.slot;
        Ok(())
    }

    fn answer_reads(&mut self, i: usize) -> Result<(), Violation> {
        let applied = self.nodes[i].applied;
        let register = self.nodes[i].register;
        let ready: Vec<ReadId> = self.nodes[i]
            .reads
            .iter()
            .filter(|(_, r)| r.answer_after_slot.is_some_and(|s| s <= applied))
            .map(|(id, _)| *id)
            .collect();
        for id in ready {
            let r = self.nodes[i].reads.remove(&id).expect("present");
            if register < r.required_slot {
                return Err(self.violation(format!(
                    "stale read at node {}: read {id} saw the write of slot {register}, but the \
                     write of slot {} was acknowledged before the read began",
                    i + 1,
                    r.required_slot
                )));
            }
            self.stats.reads_answered += 1;
        }
        Ok(())
    }
}

fn decode_register(data: &[u8]) -> Slot {
    let mut b = [0u8; 8];
    let n = data.len().min(8);
    b[..n].copy_from_slice(&data[..n]);
    u64::from_le_bytes(b)
}

/// Runs one seed.
pub fn run(cfg: SimConfig) -> Result<SimStats, Violation> {
    Sim::new(cfg).run()
}
