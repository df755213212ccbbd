//! The [`Node`] state machine: proposer, acceptor and learner in one.

use super::{
    Ballot, Bug, Command, Config, Dropped, Entry, Envelope, Message, NodeId, PaxosError,
    PersistToken, PromiseEntry, ProposalId, ReadId, ReadReady, Ready, Record, RecoveredState, Role,
    Slot, Snapshot, Status, Value, ROUND_MAX,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// A slot the leader has sent in accepts and not yet seen chosen.
#[derive(Debug)]
struct InFlight {
    value: Value,
    acks: BTreeSet<NodeId>,
    last_sent_tick: u64,
}

/// A read waiting for its confirmation round.
#[derive(Debug)]
struct PendingRead {
    id: ReadId,
    slot: Slot,
    /// The heartbeat round that must reach a quorum.
    seq: u64,
}

#[derive(Debug)]
struct LeaderState {
    ballot: Ballot,
    next_slot: Slot,
    /// The last slot phase 1 re-proposed: once the commit index reaches it, every value
    /// chosen before this leadership is at or below the commit index.
    phase1_last_slot: Slot,
    in_flight: BTreeMap<Slot, InFlight>,
    pending: VecDeque<(ProposalId, Vec<u8>)>,
    /// Heartbeat round last sent.
    hb_seq: u64,
    /// Highest round each peer confirmed.
    hb_ok: BTreeMap<NodeId, u64>,
    reads: VecDeque<PendingRead>,
    /// A read waits for a round not yet sent.
    read_round_needed: bool,
    last_heard_tick: BTreeMap<NodeId, u64>,
    last_heartbeat_tick: u64,
}

#[derive(Debug)]
struct CandidateState {
    ballot: Ballot,
    promises: BTreeMap<NodeId, Vec<PromiseEntry>>,
    /// Highest commit index reported; the candidate catches up to it before leading.
    max_commit: Slot,
    max_commit_node: NodeId,
    last_catchup_tick: Option<u64>,
    last_prepare_tick: u64,
    from_slot: Slot,
}

#[derive(Debug)]
enum RoleState {
    Follower,
    PreCandidate {
        round: u64,
        grants: BTreeSet<NodeId>,
    },
    Candidate(CandidateState),
    Leader(LeaderState),
}

/// One replica's consensus state. See the module docs for how to drive it.
#[derive(Debug)]
pub struct Node {
    cfg: Config,
    id: NodeId,
    peers: Vec<NodeId>,
    quorum: usize,
    rng: ChaCha8Rng,
    now: u64,

    // Acceptor state.
    promised: Ballot,
    /// Accepted values of slots not (known) chosen.
    accepted: BTreeMap<Slot, (Ballot, Value)>,

    // Learner state.
    chosen: BTreeMap<Slot, Value>,
    /// Every slot `<= commit_index` is chosen (or behind the snapshot).
    commit_index: Slot,
    /// Last slot handed out in `Ready::committed` (or covered by an installed snapshot).
    emitted_index: Slot,
    snapshot: Option<Snapshot>,
    /// Chosen entries `<= log_start` have been dropped.
    log_start: Slot,
    snapshot_due_sent_at: Slot,
    /// Last tick a snapshot went to each peer (snapshots are big: rate-limited).
    snapshot_sent_tick: BTreeMap<NodeId, u64>,

    // Proposer / election state.
    role: RoleState,
    leader_hint: Option<NodeId>,
    max_round_seen: u64,
    last_leader_contact_tick: u64,
    election_deadline_tick: u64,
    /// Highest commit index a leader told us about.
    leader_commit: Slot,
    last_catchup_request_tick: Option<u64>,

    // Output being accumulated.
    out: Ready,
    next_token: PersistToken,
    /// Self-addressed replies that wait for the current (undrained) Ready's records.
    self_gated_unassigned: Vec<Message>,
    /// Self-addressed replies waiting for a persist token.
    self_gated: VecDeque<(PersistToken, Message)>,
    persisted_token: PersistToken,
    /// Self-addressed messages to deliver now.
    self_now: VecDeque<Message>,
}

impl Node {
    /// A fresh node with empty durable state.
    pub fn new(config: Config, rng_seed: u64) -> Result<Node, PaxosError> {
        Node::restore(config, RecoveredState::default(), None, rng_seed)
    }

    /// A node restarted from its WAL (`state`) and its newest durable snapshot.
    pub fn restore(
        config: Config,
        state: RecoveredState,
        snapshot: Option<Snapshot>,
        rng_seed: u64,
    ) -> Result<Node, PaxosError> {
        config.validate()?;
        let id = config.id;
        let peers: Vec<NodeId> = config
            .members
            .iter()
            .copied()
            .filter(|&m| m != id)
            .collect();
        let quorum = config.members.len() / 2 + 1;
        let snapshot_slot = snapshot.as_ref().map_or(0, |s| s.slot);
        let mut state = state;
        state.compact(snapshot_slot);
        let mut node = Node {
            id,
            peers,
            quorum,
            rng: ChaCha8Rng::seed_from_u64(rng_seed),
            now: 0,
            promised: state.promised,
            accepted: state.accepted,
            chosen: state.chosen,
            commit_index: snapshot_slot,
            emitted_index: snapshot_slot,
            snapshot,
            log_start: snapshot_slot,
            snapshot_due_sent_at: snapshot_slot,
            snapshot_sent_tick: BTreeMap::new(),
            role: RoleState::Follower,
            leader_hint: None,
            max_round_seen: state.promised.round,
            last_leader_contact_tick: 0,
            election_deadline_tick: 0,
            leader_commit: 0,
            last_catchup_request_tick: None,
            out: Ready::default(),
            next_token: 1,
            self_gated_unassigned: Vec::new(),
            self_gated: VecDeque::new(),
            persisted_token: 0,
            self_now: VecDeque::new(),
            cfg: config,
        };
        let chosen_slots: Vec<Slot> = node.chosen.keys().copied().collect();
        for s in chosen_slots {
            node.accepted.remove(&s);
        }
        node.reset_election_timer();
        node.advance_commit();
        Ok(node)
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The current role and indexes.
    pub fn status(&self) -> Status {
        let (pending, in_flight) = match &self.role {
            RoleState::Leader(l) => (l.pending.len(), l.in_flight.len()),
            _ => (0, 0),
        };
        Status {
            id: self.id,
            role: self.role(),
            leader: self.leader(),
            ballot: self.promised,
            commit_index: self.commit_index,
            snapshot_slot: self.snapshot.as_ref().map_or(0, |s| s.slot),
            pending_proposals: pending,
            in_flight_slots: in_flight,
        }
    }

    pub fn role(&self) -> Role {
        match self.role {
            RoleState::Follower => Role::Follower,
            RoleState::PreCandidate { .. } => Role::PreCandidate,
            RoleState::Candidate(_) => Role::Candidate,
            RoleState::Leader(_) => Role::Leader,
        }
    }

    /// The node believed to lead, if any.
    pub fn leader(&self) -> Option<NodeId> {
        match self.role {
            RoleState::Leader(_) => Some(self.id),
            _ => self.leader_hint,
        }
    }

    pub fn is_leader(&self) -> bool {
        matches!(self.role, RoleState::Leader(_))
    }

    pub fn commit_index(&self) -> Slot {
        self.commit_index
    }

    /// The durable-state view of everything in memory, to start a rewritten WAL with after a
    /// snapshot (records of Readys not yet written may follow it; folding them is idempotent).
    pub fn checkpoint(&self) -> RecoveredState {
        RecoveredState {
            promised: self.promised,
            accepted: self.accepted.clone(),
            chosen: self
                .chosen
                .range(self.snapshot.as_ref().map_or(0, |s| s.slot) + 1..)
                .map(|(s, v)| (*s, v.clone()))
                .collect(),
        }
    }

    /// Whether `ready()` would return something.
    pub fn has_ready(&self) -> bool {
        !self.out.is_empty() || !self.self_gated_unassigned.is_empty() || self.wants_flush()
    }

    /// Takes the accumulated outputs (see the module docs for how to handle them).
    pub fn ready(&mut self) -> Ready {
        self.flush_proposals();
        self.flush_read_round();
        self.drain_self_now();
        self.assert_invariants();
        let mut ready = std::mem::take(&mut self.out);
        if !ready.persist.is_empty()
            || !ready.messages_after_persist.is_empty()
            || !self.self_gated_unassigned.is_empty()
        {
            let token = self.next_token;
            self.next_token += 1;
            ready.persist_token = Some(token);
            for m in self.self_gated_unassigned.drain(..) {
                self.self_gated.push_back((token, m));
            }
        }
        ready
    }

    /// Every record up to and including `token` is durable.
    pub fn persisted(&mut self, token: PersistToken) {
        if token <= self.persisted_token {
            return;
        }
        assert!(
            token < self.next_token,
            "persisted token {token} was never handed out"
        );
        self.persisted_token = token;
        while let Some((t, _)) = self.self_gated.front() {
            if *t > token {
                break;
            }
            let (_, m) = self.self_gated.pop_front().expect("front exists");
            self.self_now.push_back(m);
        }
        self.drain_self_now();
    }

    /// One logical tick.
    pub fn tick(&mut self) {
        self.now += 1;
        match &self.role {
            RoleState::Leader(_) => self.tick_leader(),
            RoleState::Candidate(_) => {
                if self.now >= self.election_deadline_tick {
                    // Phase 1 did not finish in time: ask again before bumping further.
                    self.start_pre_vote();
                } else {
                    self.resend_prepare();
                    self.candidate_catch_up();
                }
            }
            RoleState::Follower | RoleState::PreCandidate { .. } => {
                if self.now >= self.election_deadline_tick {
                    self.start_pre_vote();
                }
            }
        }
        self.drain_self_now();
    }

    /// A client command. Rejected at once unless this node leads.
    pub fn propose(&mut self, id: ProposalId, data: Vec<u8>) {
        if data.len() > self.cfg.max_command_bytes {
            self.out.rejected.push((id, Dropped::TooLarge));
            return;
        }
        let hint = self.leader_hint;
        let max_pending = self.cfg.max_pending_proposals;
        match &mut self.role {
            RoleState::Leader(l) => {
                if l.pending.len() >= max_pending {
                    self.out.rejected.push((id, Dropped::Overloaded));
                } else {
                    l.pending.push_back((id, data));
                }
            }
            _ => self
                .out
                .rejected
                .push((id, Dropped::NotLeader { leader: hint })),
        }
    }

    /// A linearizable read: confirmed in `Ready::reads` after a quorum round.
    pub fn read_index(&mut self, id: ReadId) {
        let hint = self.leader_hint;
        let max_reads = self.cfg.max_pending_reads;
        let stale = self.cfg.has_bug(Bug::StaleLeaderRead);
        let commit = self.commit_index;
        match &mut self.role {
            RoleState::Leader(l) => {
                // A write acknowledged before the read began was chosen either by this leader
                // (so it is at or below our commit index: acknowledging needs it applied) or
                // before it (so at or below phase 1's last slot). Until phase 1's slots are
                // chosen, wait for every slot assigned so far.
                let slot = if commit >= l.phase1_last_slot {
                    commit
                } else {
                    l.next_slot - 1
                };
                if stale {
                    // The planted bug: trust that we still lead, answer from local state.
                    self.out.reads.push(ReadReady { id, slot: commit });
                } else if l.reads.len() >= max_reads {
                    self.out.rejected_reads.push((id, Dropped::Overloaded));
                } else {
                    l.reads.push_back(PendingRead {
                        id,
                        slot,
                        seq: l.hb_seq + 1,
                    });
                    l.read_round_needed = true;
                }
            }
            _ => self
                .out
                .rejected_reads
                .push((id, Dropped::NotLeader { leader: hint })),
        }
    }

    /// The state machine has a durable snapshot of every slot `<= slot`.
    pub fn snapshot_taken(&mut self, slot: Slot, data: Vec<u8>) -> Result<(), PaxosError> {
        if slot > self.emitted_index {
            return Err(PaxosError::SnapshotAhead {
                slot,
                committed: self.emitted_index,
            });
        }
        if self.snapshot.as_ref().is_some_and(|s| s.slot >= slot) {
            return Ok(());
        }
        self.snapshot = Some(Snapshot { slot, data });
        let keep_from = slot.saturating_sub(self.cfg.compaction_retain_entries);
        if keep_from > self.log_start {
            self.chosen = self.chosen.split_off(&(keep_from + 1));
            self.log_start = keep_from;
        }
        self.accepted = self.accepted.split_off(&(slot + 1));
        Ok(())
    }

    /// A message from peer `from`.
    pub fn step(&mut self, from: NodeId, msg: Message) -> Result<(), PaxosError> {
        if from == self.id || !self.peers.contains(&from) {
            return Err(PaxosError::UnknownPeer { from });
        }
        if let Some((what, value, max)) = msg.out_of_range() {
            return Err(PaxosError::OutOfRange {
                from,
                what,
                value,
                max,
            });
        }
        self.handle(from, msg);
        self.drain_self_now();
        Ok(())
    }

    // ---------------------------------------------------------------- internals

    /// Cheap checks of what must always hold; a failure is a bug in this module.
    fn assert_invariants(&self) {
        assert!(self.emitted_index <= self.commit_index, "emitted <= commit");
        assert!(
            self.log_start <= self.commit_index,
            "compacted only chosen slots"
        );
        if let Some((s, (b, _))) = self.accepted.iter().next_back() {
            assert!(*b <= self.promised, "slot {s} accepted above the promise");
        }
        if let RoleState::Leader(l) = &self.role {
            assert_eq!(l.ballot, self.promised, "a leader's ballot is its promise");
            assert!(
                l.next_slot > self.commit_index,
                "leader assigns slots past commit"
            );
            if let Some(first) = l.in_flight.keys().next() {
                assert!(
                    *first > self.commit_index,
                    "in-flight slot {first} already chosen"
                );
            }
        }
    }

    fn drain_self_now(&mut self) {
        // Bounded: each self message is handled once and handling never loops back into
        // an unbounded chain (replies to self go through the gated queue).
        let mut budget = 10_000;
        while let Some(m) = self.self_now.pop_front() {
            self.handle(self.id, m);
            budget -= 1;
            assert!(budget > 0, "self-message loop did not terminate");
        }
    }

    fn send(&mut self, to: NodeId, msg: Message) {
        if to == self.id {
            self.self_now.push_back(msg);
        } else {
            self.out.messages.push(Envelope { to, msg });
        }
    }

    /// A reply that depends on records of the current Ready being durable.
    fn send_after_persist(&mut self, to: NodeId, msg: Message) {
        if to == self.id {
            self.self_gated_unassigned.push(msg);
        } else {
            self.out.messages_after_persist.push(Envelope { to, msg });
        }
    }

    fn broadcast(&mut self, msg: Message) {
        for i in 0..self.peers.len() {
            let p = self.peers[i];
            self.out.messages.push(Envelope {
                to: p,
                msg: msg.clone(),
            });
        }
    }

    fn persist(&mut self, r: Record) {
        self.out.persist.push(r);
    }

    fn reset_election_timer(&mut self) {
        let min = self.cfg.election_timeout_min_ticks;
        self.election_deadline_tick = self.now + self.rng.gen_range(min..2 * min);
    }

    fn heard_from_leader(&mut self, ballot: Ballot) {
        self.last_leader_contact_tick = self.now;
        self.leader_hint = Some(ballot.node);
        self.reset_election_timer();
        if matches!(
            self.role,
            RoleState::PreCandidate { .. } | RoleState::Candidate(_)
        ) && ballot.node != self.id
        {
            self.role = RoleState::Follower;
        }
    }

    fn raise_promise(&mut self, b: Ballot) {
        assert!(b >= self.promised, "a promise never goes down");
        if b > self.promised {
            self.promised = b;
            self.persist(Record::Promise(b));
        }
        self.max_round_seen = self.max_round_seen.max(b.round);
    }

    /// Whether we heard from a leader within the minimum election timeout (a node that just
    /// started counts as having heard, so a restart does not help depose a healthy leader).
    fn leader_alive(&self) -> bool {
        matches!(self.role, RoleState::Leader(_))
            || self.now < self.last_leader_contact_tick + self.cfg.election_timeout_min_ticks
    }

    fn handle(&mut self, from: NodeId, msg: Message) {
        match msg {
            Message::PreVote { round, commit } => {
                // Grant only if we, too, have lost the leader: a node returning from a
                // partition cannot depose a healthy one. Prefer a candidate that knows at
                // least what we know chosen, so the new leader need not catch up first.
                // With the forget-accepted bug the store trusts ballots alone (Paxos lets any
                // node lead), so a lagging node may win and, ignoring phase 1, overwrite.
                let up_to_date =
                    commit >= self.commit_index || self.cfg.has_bug(Bug::ForgetAccepted);
                let granted = !self.leader_alive() && up_to_date;
                self.send(from, Message::PreVoteReply { round, granted });
            }
            Message::PreVoteReply { round, granted } => {
                let quorum = self.quorum;
                let mut won = false;
                if let RoleState::PreCandidate { round: r, grants } = &mut self.role {
                    if *r == round && granted {
                        grants.insert(from);
                        won = grants.len() >= quorum;
                    }
                }
                if won {
                    self.start_phase1();
                }
            }
            Message::Prepare { ballot, from_slot } => self.on_prepare(from, ballot, from_slot),
            Message::Promise {
                ballot,
                entries,
                commit,
                snapshot_slot: _,
            } => self.on_promise(from, ballot, entries, commit),
            Message::Nack { promised } => self.on_nack(promised),
            Message::Accept {
                ballot,
                entries,
                commit,
            } => self.on_accept(from, ballot, entries, commit),
            Message::Accepted { ballot, slots } => self.on_accepted(from, ballot, slots),
            Message::Heartbeat {
                ballot,
                seq,
                commit,
            } => {
                if ballot < self.promised {
                    self.send(
                        from,
                        Message::Nack {
                            promised: self.promised,
                        },
                    );
                    return;
                }
                if ballot.node != self.id {
                    if self.is_leader() {
                        // A leader with a ballot >= ours exists: step aside.
                        self.step_down();
                    }
                    self.heard_from_leader(ballot);
                }
                self.learn_commit(ballot, commit);
                self.send(
                    from,
                    Message::HeartbeatReply {
                        ballot,
                        seq,
                        commit: self.commit_index,
                    },
                );
            }
            Message::HeartbeatReply {
                ballot,
                seq,
                commit,
            } => self.on_heartbeat_reply(from, ballot, seq, commit),
            Message::CatchUpRequest { from_slot } => self.on_catchup_request(from, from_slot),
            Message::CatchUpReply { entries } => {
                // A leader learns chosen slots only from its own quorums: followers treat its
                // commit index as "my ballot's value is chosen up to here".
                if self.is_leader() {
                    return;
                }
                let progressed = !entries.is_empty();
                for e in entries {
                    self.learn_chosen(e.slot, e.value);
                }
                self.advance_commit();
                // Still behind the leader: ask for the next chunk at once rather than at the
                // next heartbeat, so a far-behind replica catches up at network speed.
                if progressed
                    && matches!(self.role, RoleState::Follower)
                    && self.commit_index < self.leader_commit
                {
                    if let Some(l) = self.leader_hint.filter(|&l| l != self.id) {
                        self.last_catchup_request_tick = Some(self.now);
                        self.send(
                            l,
                            Message::CatchUpRequest {
                                from_slot: self.commit_index + 1,
                            },
                        );
                    }
                }
                self.candidate_maybe_finish();
            }
            Message::InstallSnapshot { slot, data } => self.on_install_snapshot(slot, data),
        }
    }

    fn start_pre_vote(&mut self) {
        if matches!(self.role, RoleState::Leader(_)) {
            return;
        }
        self.reset_election_timer();
        self.leader_hint = None;
        let Some(round) = self.next_round() else {
            return;
        };
        let mut grants = BTreeSet::new();
        grants.insert(self.id);
        if grants.len() >= self.quorum {
            self.role = RoleState::PreCandidate { round, grants };
            self.start_phase1();
            return;
        }
        self.role = RoleState::PreCandidate { round, grants };
        self.broadcast(Message::PreVote {
            round,
            commit: self.commit_index,
        });
    }

    /// The round of our next campaign, or None once it would pass `ROUND_MAX` (peers would
    /// refuse it; unreachable by honest elections, and refused rounds never raise ours).
    fn next_round(&self) -> Option<u64> {
        self.max_round_seen
            .max(self.promised.round)
            .checked_add(1)
            .filter(|r| *r <= ROUND_MAX)
    }

    fn start_phase1(&mut self) {
        let Some(round) = self.next_round() else {
            return;
        };
        let ballot = Ballot {
            round,
            node: self.id,
        };
        self.reset_election_timer();
        self.role = RoleState::Candidate(CandidateState {
            ballot,
            promises: BTreeMap::new(),
            max_commit: self.commit_index,
            max_commit_node: self.id,
            last_catchup_tick: None,
            last_prepare_tick: self.now,
            from_slot: self.commit_index + 1,
        });
        let from_slot = self.commit_index + 1;
        self.broadcast(Message::Prepare { ballot, from_slot });
        // Our own promise, once durable.
        self.on_prepare(self.id, ballot, from_slot);
    }

    fn on_prepare(&mut self, from: NodeId, ballot: Ballot, from_slot: Slot) {
        if ballot < self.promised {
            self.send(
                from,
                Message::Nack {
                    promised: self.promised,
                },
            );
            return;
        }
        self.raise_promise(ballot);
        if from != self.id {
            if self.is_leader() {
                self.step_down();
            }
            self.heard_from_leader(ballot);
        }
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        let first = from_slot.max(self.log_start + 1);
        for (s, v) in self.chosen.range(first..) {
            // Chosen entries up to our commit index may be capped (the candidate catches up
            // to `commit` before leading); those above it are gaps and must all be reported,
            // since we no longer hold them as accepted.
            if *s <= self.commit_index
                && (entries.len() >= self.cfg.max_catchup_entries
                    || bytes >= self.cfg.max_message_bytes)
            {
                continue;
            }
            bytes += v.size_bytes();
            entries.push(PromiseEntry {
                slot: *s,
                ballot: Ballot::default(),
                value: v.clone(),
                chosen: true,
            });
        }
        // Unchosen accepted values must all be reported (the new leader must not miss one);
        // they are bounded by the in-flight window of earlier leaders.
        for (s, (b, v)) in self.accepted.range(from_slot..) {
            entries.push(PromiseEntry {
                slot: *s,
                ballot: *b,
                value: v.clone(),
                chosen: false,
            });
        }
        let msg = Message::Promise {
            ballot,
            entries,
            commit: self.commit_index,
            snapshot_slot: self.snapshot.as_ref().map_or(0, |s| s.slot),
        };
        self.send_after_persist(from, msg);
    }

    fn on_promise(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        entries: Vec<PromiseEntry>,
        commit: Slot,
    ) {
        let forget = self.cfg.has_bug(Bug::ForgetAccepted);
        let my_id = self.id;
        let RoleState::Candidate(c) = &mut self.role else {
            return;
        };
        if c.ballot != ballot {
            return;
        }
        let mut learned = Vec::new();
        let mut kept = Vec::new();
        for e in entries {
            if forget && from != my_id {
                // The planted bug: values other acceptors accepted under older ballots
                // (and even their chosen marks) are ignored.
                continue;
            }
            if e.chosen {
                learned.push(e);
            } else {
                kept.push(e);
            }
        }
        c.promises.insert(from, kept);
        if commit > c.max_commit && !(forget && from != my_id) {
            c.max_commit = commit;
            c.max_commit_node = from;
        }
        for e in learned {
            self.learn_chosen(e.slot, e.value);
        }
        self.advance_commit();
        self.candidate_maybe_finish();
    }

    /// Lost prepares or promises would otherwise cost a whole election timeout.
    fn resend_prepare(&mut self) {
        let now = self.now;
        let retransmit = self.cfg.retransmit_ticks;
        let RoleState::Candidate(c) = &mut self.role else {
            return;
        };
        if now < c.last_prepare_tick + retransmit {
            return;
        }
        c.last_prepare_tick = now;
        let msg = Message::Prepare {
            ballot: c.ballot,
            from_slot: c.from_slot,
        };
        let missing: Vec<NodeId> = self
            .peers
            .iter()
            .copied()
            .filter(|p| !c.promises.contains_key(p))
            .collect();
        for p in missing {
            self.out.messages.push(Envelope {
                to: p,
                msg: msg.clone(),
            });
        }
    }

    fn candidate_catch_up(&mut self) {
        let commit = self.commit_index;
        let now = self.now;
        let retransmit = self.cfg.retransmit_ticks;
        let RoleState::Candidate(c) = &mut self.role else {
            return;
        };
        if c.promises.len() < self.quorum || commit >= c.max_commit {
            return;
        }
        if c.last_catchup_tick.is_some_and(|t| now < t + retransmit) {
            return;
        }
        c.last_catchup_tick = Some(now);
        let to = c.max_commit_node;
        self.send(
            to,
            Message::CatchUpRequest {
                from_slot: commit + 1,
            },
        );
    }

    /// Becomes leader once a quorum promised and we know every slot they know is chosen.
    fn candidate_maybe_finish(&mut self) {
        let commit = self.commit_index;
        let RoleState::Candidate(c) = &self.role else {
            return;
        };
        if c.promises.len() < self.quorum {
            return;
        }
        if commit < c.max_commit {
            self.candidate_catch_up();
            return;
        }
        let ballot = c.ballot;
        // Adopt the highest-ballot accepted value of every unchosen slot.
        let mut adopt: BTreeMap<Slot, (Ballot, Value)> = BTreeMap::new();
        // The forget-accepted bug: phase 1 is only used to win the ballot; every accepted
        // value it reports (this node's own included) is dropped, and the new leader proposes
        // its own commands from its first unchosen slot on, overwriting values that were
        // chosen but not yet learned here.
        let adopted = if self.cfg.has_bug(Bug::ForgetAccepted) {
            None
        } else {
            Some(c.promises.values())
        };
        for es in adopted.into_iter().flatten() {
            for e in es {
                if e.slot <= commit || self.chosen.contains_key(&e.slot) {
                    continue;
                }
                match adopt.get(&e.slot) {
                    Some((b, _)) if *b >= e.ballot => {}
                    _ => {
                        adopt.insert(e.slot, (e.ballot, e.value.clone()));
                    }
                }
            }
        }
        let max_slot = adopt
            .keys()
            .next_back()
            .copied()
            .unwrap_or(commit)
            .max(self.chosen.keys().next_back().copied().unwrap_or(commit))
            .max(commit);
        let mut in_flight = BTreeMap::new();
        let mut entries = Vec::new();
        for s in commit + 1..=max_slot {
            if self.chosen.contains_key(&s) {
                continue;
            }
            let value = adopt.remove(&s).map_or(Value::Noop, |(_, v)| v);
            entries.push(Entry {
                slot: s,
                value: value.clone(),
            });
            in_flight.insert(
                s,
                InFlight {
                    value,
                    acks: BTreeSet::new(),
                    last_sent_tick: self.now,
                },
            );
        }
        let mut last_heard_tick = BTreeMap::new();
        for &p in &self.peers {
            last_heard_tick.insert(p, self.now);
        }
        self.role = RoleState::Leader(LeaderState {
            ballot,
            next_slot: max_slot + 1,
            phase1_last_slot: max_slot,
            in_flight,
            pending: VecDeque::new(),
            hb_seq: 0,
            hb_ok: BTreeMap::new(),
            reads: VecDeque::new(),
            read_round_needed: false,
            last_heard_tick,
            last_heartbeat_tick: self.now,
        });
        self.leader_hint = Some(self.id);
        self.send_accepts(ballot, entries, None);
        self.send_heartbeat();
    }

    /// Sends accepts for `entries` to every peer (or only `only`), split by size, and
    /// accepts them locally.
    fn send_accepts(&mut self, ballot: Ballot, entries: Vec<Entry>, only: Option<NodeId>) {
        if entries.is_empty() {
            return;
        }
        if only.is_none() {
            self.on_accept(self.id, ballot, entries.clone(), self.commit_index);
        }
        let mut chunk = Vec::new();
        let mut bytes = 0;
        let targets: Vec<NodeId> = match only {
            Some(p) => vec![p],
            None => self.peers.clone(),
        };
        let mut chunks = Vec::new();
        for e in entries {
            bytes += e.value.size_bytes();
            chunk.push(e);
            if bytes >= self.cfg.max_message_bytes {
                chunks.push(std::mem::take(&mut chunk));
                bytes = 0;
            }
        }
        if !chunk.is_empty() {
            chunks.push(chunk);
        }
        for ch in chunks {
            for &p in &targets {
                self.out.messages.push(Envelope {
                    to: p,
                    msg: Message::Accept {
                        ballot,
                        entries: ch.clone(),
                        commit: self.commit_index,
                    },
                });
            }
        }
    }

    fn on_accept(&mut self, from: NodeId, ballot: Ballot, entries: Vec<Entry>, commit: Slot) {
        if ballot < self.promised {
            self.send(
                from,
                Message::Nack {
                    promised: self.promised,
                },
            );
            return;
        }
        if from != self.id {
            if self.is_leader() {
                self.step_down();
            }
            self.heard_from_leader(ballot);
        }
        if ballot > self.promised {
            // The Accepted record below implies the promise; keep the in-memory one in step.
            self.promised = ballot;
            self.max_round_seen = self.max_round_seen.max(ballot.round);
            if entries.is_empty() {
                self.persist(Record::Promise(ballot));
            }
        }
        let mut slots = Vec::with_capacity(entries.len());
        for e in entries {
            slots.push(e.slot);
            if e.slot <= self.commit_index || self.chosen.contains_key(&e.slot) {
                // Already chosen here; by Paxos the value is the same, so the vote stands.
                continue;
            }
            if let Some((b, _)) = self.accepted.get(&e.slot) {
                assert!(*b <= ballot, "accepted ballot of a slot never goes down");
            }
            self.persist(Record::Accepted {
                slot: e.slot,
                ballot,
                value: e.value.clone(),
            });
            self.accepted.insert(e.slot, (ballot, e.value));
        }
        let reply = Message::Accepted { ballot, slots };
        if self.cfg.has_bug(Bug::AckBeforePersist) {
            // The planted bug: acknowledge before the accepted values are durable.
            self.send(from, reply);
        } else {
            self.send_after_persist(from, reply);
        }
        if from != self.id {
            self.learn_commit(ballot, commit);
        }
    }

    fn on_accepted(&mut self, from: NodeId, ballot: Ballot, slots: Vec<Slot>) {
        let quorum = self.quorum;
        let mut newly_chosen = Vec::new();
        {
            let RoleState::Leader(l) = &mut self.role else {
                return;
            };
            if l.ballot != ballot {
                return;
            }
            l.last_heard_tick.insert(from, self.now);
            for s in slots {
                if let Some(f) = l.in_flight.get_mut(&s) {
                    f.acks.insert(from);
                    if f.acks.len() >= quorum {
                        let f = l.in_flight.remove(&s).expect("present");
                        newly_chosen.push((s, f.value));
                    }
                }
            }
        }
        for (s, v) in newly_chosen {
            self.learn_chosen(s, v);
        }
        self.advance_commit();
    }

    fn on_nack(&mut self, promised: Ballot) {
        self.max_round_seen = self.max_round_seen.max(promised.round);
        let mine = match &self.role {
            RoleState::Leader(l) => Some(l.ballot),
            RoleState::Candidate(c) => Some(c.ballot),
            _ => None,
        };
        if let Some(b) = mine {
            if promised > b {
                self.step_down();
                self.leader_hint = Some(promised.node);
                // Give the higher ballot's owner a full timeout to take over.
                self.last_leader_contact_tick = self.now;
                self.reset_election_timer();
            }
        }
    }

    fn on_heartbeat_reply(&mut self, from: NodeId, ballot: Ballot, seq: u64, _commit: Slot) {
        let now = self.now;
        let quorum = self.quorum;
        {
            let RoleState::Leader(l) = &mut self.role else {
                return;
            };
            if l.ballot != ballot {
                return;
            }
            l.last_heard_tick.insert(from, now);
            let e = l.hb_ok.entry(from).or_insert(0);
            *e = (*e).max(seq);
            // The highest round confirmed by a quorum (we confirm our own rounds).
            let mut oks: Vec<u64> = l.hb_ok.values().copied().collect();
            oks.push(l.hb_seq);
            oks.sort_unstable_by(|a, b| b.cmp(a));
            let confirmed = oks.get(quorum - 1).copied().unwrap_or(0);
            while let Some(r) = l.reads.front() {
                if r.seq > confirmed {
                    break;
                }
                let r = l.reads.pop_front().expect("front exists");
                self.out.reads.push(ReadReady {
                    id: r.id,
                    slot: r.slot,
                });
            }
        }
    }

    fn send_snapshot(&mut self, to: NodeId) {
        let limit = 10 * self.cfg.retransmit_ticks;
        if self
            .snapshot_sent_tick
            .get(&to)
            .is_some_and(|&t| self.now < t + limit)
        {
            return;
        }
        self.snapshot_sent_tick.insert(to, self.now);
        if let Some(s) = &self.snapshot {
            let msg = Message::InstallSnapshot {
                slot: s.slot,
                data: s.data.clone(),
            };
            self.out.messages.push(Envelope { to, msg });
        }
    }

    fn on_catchup_request(&mut self, from: NodeId, from_slot: Slot) {
        if from_slot <= self.log_start {
            if self.snapshot.is_some() {
                self.send_snapshot(from);
            }
            return;
        }
        let mut entries = Vec::new();
        let mut bytes = 0;
        let mut s = from_slot;
        while s <= self.commit_index
            && entries.len() < self.cfg.max_catchup_entries
            && bytes < self.cfg.max_message_bytes
        {
            let Some(v) = self.chosen.get(&s) else { break };
            bytes += v.size_bytes();
            entries.push(Entry {
                slot: s,
                value: v.clone(),
            });
            s += 1;
        }
        if !entries.is_empty() {
            self.send(from, Message::CatchUpReply { entries });
        }
    }

    fn on_install_snapshot(&mut self, slot: Slot, data: Vec<u8>) {
        if slot <= self.commit_index || self.is_leader() {
            return;
        }
        // Entries handed out but not yet drained are older than the snapshot: it replaces them.
        self.out.committed.clear();
        self.chosen = self.chosen.split_off(&(slot + 1));
        self.accepted = self.accepted.split_off(&(slot + 1));
        self.commit_index = slot;
        self.emitted_index = slot;
        self.log_start = slot;
        self.snapshot_due_sent_at = slot;
        let snap = Snapshot { slot, data };
        self.out.install_snapshot = Some(snap.clone());
        self.snapshot = Some(snap);
        self.advance_commit();
        self.candidate_maybe_finish();
    }

    /// Marks slots `<= commit` chosen where our accepted value carries the leader's ballot
    /// (the only value that ballot proposed for the slot); fetches the rest.
    fn learn_commit(&mut self, ballot: Ballot, commit: Slot) {
        self.leader_commit = self.leader_commit.max(commit);
        if commit <= self.commit_index {
            return;
        }
        let matching: Vec<Slot> = self
            .accepted
            .range(self.commit_index + 1..=commit)
            .filter(|(_, (b, _))| *b == ballot)
            .map(|(s, _)| *s)
            .collect();
        for s in matching {
            let (_, v) = self.accepted.remove(&s).expect("present");
            self.learn_chosen(s, v);
        }
        self.advance_commit();
        if self.commit_index < commit && ballot.node != self.id {
            let due = self
                .last_catchup_request_tick
                .is_none_or(|t| self.now >= t + self.cfg.retransmit_ticks);
            if due {
                self.last_catchup_request_tick = Some(self.now);
                self.send(
                    ballot.node,
                    Message::CatchUpRequest {
                        from_slot: self.commit_index + 1,
                    },
                );
            }
        }
    }

    fn learn_chosen(&mut self, slot: Slot, value: Value) {
        if slot <= self.log_start || slot <= self.commit_index && !self.chosen.contains_key(&slot) {
            return;
        }
        if self.chosen.contains_key(&slot) {
            return;
        }
        self.accepted.remove(&slot);
        self.persist(Record::Chosen {
            slot,
            value: value.clone(),
        });
        self.chosen.insert(slot, value);
    }

    fn advance_commit(&mut self) {
        while self.chosen.contains_key(&(self.commit_index + 1)) {
            self.commit_index += 1;
        }
        assert!(self.emitted_index <= self.commit_index, "emitted <= commit");
        while self.emitted_index < self.commit_index {
            let s = self.emitted_index + 1;
            let value = self.chosen.get(&s).expect("chosen below commit").clone();
            self.out.committed.push(Entry { slot: s, value });
            self.emitted_index = s;
        }
        let base = self
            .snapshot
            .as_ref()
            .map_or(0, |s| s.slot)
            .max(self.snapshot_due_sent_at);
        if self.emitted_index >= base + self.cfg.snapshot_interval_entries {
            self.snapshot_due_sent_at = self.emitted_index;
            self.out.snapshot_due = Some(self.emitted_index);
        }
    }

    fn step_down(&mut self) {
        let old = std::mem::replace(&mut self.role, RoleState::Follower);
        if let RoleState::Leader(l) = old {
            let hint = None;
            for (id, _) in l.pending {
                self.out
                    .rejected
                    .push((id, Dropped::NotLeader { leader: hint }));
            }
            for (_, f) in l.in_flight {
                if let Value::Batch(cmds) = f.value {
                    for c in cmds {
                        if c.origin == self.id {
                            self.out.rejected.push((c.id, Dropped::Unknown));
                        }
                    }
                }
            }
            for r in l.reads {
                self.out
                    .rejected_reads
                    .push((r.id, Dropped::NotLeader { leader: hint }));
            }
        }
        self.leader_hint = None;
        self.reset_election_timer();
    }

    fn tick_leader(&mut self) {
        let now = self.now;
        let quorum = self.quorum;
        let check = self.cfg.check_quorum_ticks;
        let hb = self.cfg.heartbeat_interval_ticks;
        let retransmit = self.cfg.retransmit_ticks;
        let (lost_quorum, heartbeat_due, resend) = {
            let RoleState::Leader(l) = &mut self.role else {
                return;
            };
            let heard = 1 + l
                .last_heard_tick
                .values()
                .filter(|&&t| now < t + check)
                .count();
            let mut resend: BTreeMap<NodeId, Vec<Entry>> = BTreeMap::new();
            for (s, f) in l.in_flight.iter_mut() {
                if now >= f.last_sent_tick + retransmit {
                    f.last_sent_tick = now;
                    for p in self.peers.iter() {
                        if !f.acks.contains(p) {
                            resend.entry(*p).or_default().push(Entry {
                                slot: *s,
                                value: f.value.clone(),
                            });
                        }
                    }
                }
            }
            (heard < quorum, now >= l.last_heartbeat_tick + hb, resend)
        };
        if lost_quorum && !self.cfg.has_bug(Bug::StaleLeaderRead) {
            // Cut off from a majority: stop taking proposals so clients go elsewhere (503).
            // The stale-leader-read bug imitates a store without this check-quorum step-down:
            // a deposed leader behind a partition keeps believing it leads.
            self.step_down();
            return;
        }
        let ballot = match &self.role {
            RoleState::Leader(l) => l.ballot,
            _ => unreachable!("checked above"),
        };
        for (p, entries) in resend {
            self.send_accepts(ballot, entries, Some(p));
        }
        if heartbeat_due {
            self.send_heartbeat();
        }
    }

    fn send_heartbeat(&mut self) {
        let commit = self.commit_index;
        let now = self.now;
        let RoleState::Leader(l) = &mut self.role else {
            return;
        };
        l.hb_seq += 1;
        l.read_round_needed = false;
        l.last_heartbeat_tick = now;
        let msg = Message::Heartbeat {
            ballot: l.ballot,
            seq: l.hb_seq,
            commit,
        };
        self.broadcast(msg);
        // A single-node cluster confirms its own rounds.
        if self.quorum == 1 {
            let ballot = match &self.role {
                RoleState::Leader(l) => l.ballot,
                _ => unreachable!(),
            };
            let seq = match &self.role {
                RoleState::Leader(l) => l.hb_seq,
                _ => unreachable!(),
            };
            self.on_heartbeat_reply(self.id, ballot, seq, commit);
        }
    }

    fn wants_flush(&self) -> bool {
        match &self.role {
            RoleState::Leader(l) => {
                l.read_round_needed
                    || (!l.pending.is_empty() && l.in_flight.len() < self.cfg.max_in_flight_slots)
            }
            _ => false,
        }
    }

    fn flush_read_round(&mut self) {
        if let RoleState::Leader(l) = &self.role {
            if l.read_round_needed {
                self.send_heartbeat();
            }
        }
    }

    /// Packs pending proposals into new slots while the pipeline has room.
    fn flush_proposals(&mut self) {
        let max_in_flight = self.cfg.max_in_flight_slots;
        let max_cmds = self.cfg.max_batch_commands;
        let max_bytes = self.cfg.max_batch_bytes;
        let id = self.id;
        let now = self.now;
        let mut entries = Vec::new();
        let ballot = {
            let RoleState::Leader(l) = &mut self.role else {
                return;
            };
            while !l.pending.is_empty() && l.in_flight.len() < max_in_flight {
                let mut cmds = Vec::new();
                let mut bytes = 0;
                while let Some((_, data)) = l.pending.front() {
                    if cmds.len() >= max_cmds
                        || (!cmds.is_empty() && bytes + data.len() > max_bytes)
                    {
                        break;
                    }
                    let (pid, data) = l.pending.pop_front().expect("front exists");
                    bytes += data.len();
                    cmds.push(Command {
                        origin: id,
                        id: pid,
                        data,
                    });
                }
                let slot = l.next_slot;
                l.next_slot += 1;
                let value = Value::Batch(cmds);
                l.in_flight.insert(
                    slot,
                    InFlight {
                        value: value.clone(),
                        acks: BTreeSet::new(),
                        last_sent_tick: now,
                    },
                );
                entries.push(Entry { slot, value });
            }
            l.ballot
        };
        self.send_accepts(ballot, entries, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paxos::SLOT_MAX;

    fn cfg(id: NodeId) -> Config {
        Config::new(id, vec![1, 2, 3])
    }

    /// Drives node 1 to leadership by hand: returns it with its ballot.
    fn leader() -> (Node, Ballot) {
        let mut n = Node::new(cfg(1), 7).expect("valid");
        for _ in 0..100 {
            n.tick();
            if n.role() == Role::PreCandidate {
                break;
            }
        }
        assert_eq!(n.role(), Role::PreCandidate);
        let r = n.ready();
        let round = r
            .messages
            .iter()
            .find_map(|e| match e.msg {
                Message::PreVote { round, .. } => Some(round),
                _ => None,
            })
            .expect("a pre-vote was sent");
        n.step(
            2,
            Message::PreVoteReply {
                round,
                granted: true,
            },
        )
        .expect("peer");
        assert_eq!(n.role(), Role::Candidate);
        let r = n.ready();
        let ballot = r
            .messages
            .iter()
            .find_map(|e| match e.msg {
                Message::Prepare { ballot, .. } => Some(ballot),
                _ => None,
            })
            .expect("a prepare was sent");
        assert_eq!(r.persist, vec![Record::Promise(ballot)]);
        // Our own promise counts once durable.
        n.persisted(r.persist_token.expect("a token"));
        assert_eq!(
            n.role(),
            Role::Candidate,
            "one promise of three is no quorum"
        );
        n.step(
            2,
            Message::Promise {
                ballot,
                entries: vec![],
                commit: 0,
                snapshot_slot: 0,
            },
        )
        .expect("peer");
        assert_eq!(n.role(), Role::Leader);
        (n, ballot)
    }

    /// The round of the first PreVote node `n` sends when it campaigns (ticks bounded).
    fn first_campaign_round(n: &mut Node) -> Option<u64> {
        for _ in 0..1000 {
            n.tick();
            let r = n.ready();
            if let Some(round) = r.messages.iter().find_map(|e| match e.msg {
                Message::PreVote { round, .. } => Some(round),
                _ => None,
            }) {
                return Some(round);
            }
        }
        None
    }

    #[test]
    fn extreme_rounds_slots_and_lengths_from_the_wire_are_refused() {
        let mut n = Node::new(cfg(2), 1).expect("valid");
        let big = |round| Ballot { round, node: 1 };
        let entry = |slot| Entry {
            slot,
            value: Value::Noop,
        };
        let hostile = vec![
            Message::Prepare {
                ballot: big(u64::MAX),
                from_slot: 1,
            },
            Message::Prepare {
                ballot: big(ROUND_MAX + 1),
                from_slot: 1,
            },
            Message::Prepare {
                ballot: big(3),
                from_slot: u64::MAX,
            },
            Message::Accept {
                ballot: big(u64::MAX),
                entries: vec![],
                commit: 0,
            },
            Message::Accept {
                ballot: big(3),
                entries: vec![entry(u64::MAX)],
                commit: 0,
            },
            Message::Accept {
                ballot: big(3),
                entries: vec![],
                commit: u64::MAX,
            },
            Message::Heartbeat {
                ballot: big(3),
                seq: 0,
                commit: SLOT_MAX + 1,
            },
            Message::Nack {
                promised: big(u64::MAX),
            },
            Message::PreVote {
                round: u64::MAX,
                commit: 0,
            },
            Message::Promise {
                ballot: big(3),
                entries: vec![PromiseEntry {
                    slot: 1,
                    ballot: big(u64::MAX),
                    value: Value::Noop,
                    chosen: false,
                }],
                commit: 0,
                snapshot_slot: 0,
            },
            Message::CatchUpRequest {
                from_slot: u64::MAX,
            },
            Message::CatchUpReply {
                entries: vec![entry(u64::MAX)],
            },
            Message::InstallSnapshot {
                slot: u64::MAX,
                data: vec![],
            },
        ];
        for msg in hostile {
            let shown = format!("{msg:?}");
            assert!(
                matches!(n.step(1, msg), Err(PaxosError::OutOfRange { .. })),
                "not refused: {shown}"
            );
        }
        let r = n.ready();
        assert!(r.persist.is_empty(), "persisted {:?}", r.persist);
        assert_eq!(n.status().commit_index, 0);
        // Extreme but legal values pass, and nothing overflows.
        n.step(
            1,
            Message::Heartbeat {
                ballot: big(3),
                seq: u64::MAX,
                commit: SLOT_MAX,
            },
        )
        .expect("legal");
        // The node still campaigns, with a round that did not wrap to 0.
        let round = first_campaign_round(&mut n).expect("campaigns");
        assert!((1..=4).contains(&round), "campaign round {round}");
    }

    #[test]
    fn a_node_at_the_round_limit_does_not_campaign_past_it() {
        let state = RecoveredState {
            promised: Ballot {
                round: ROUND_MAX,
                node: 3,
            },
            ..RecoveredState::default()
        };
        let mut n = Node::restore(cfg(2), state, None, 1).expect("valid");
        assert_eq!(first_campaign_round(&mut n), None);
        assert_eq!(n.status().ballot.round, ROUND_MAX);
    }

    #[test]
    fn promise_and_accepted_replies_wait_for_the_persist() {
        let mut n = Node::new(cfg(2), 1).expect("valid");
        let b = Ballot { round: 3, node: 1 };
        n.step(
            1,
            Message::Prepare {
                ballot: b,
                from_slot: 1,
            },
        )
        .expect("peer");
        let r = n.ready();
        assert_eq!(r.persist, vec![Record::Promise(b)]);
        assert!(r.persist_token.is_some());
        assert!(r
            .messages
            .iter()
            .all(|e| !matches!(e.msg, Message::Promise { .. })));
        assert!(matches!(
            r.messages_after_persist.as_slice(),
            [Envelope {
                to: 1,
                msg: Message::Promise { .. }
            }]
        ));
        let value = Value::Batch(vec![Command {
            origin: 1,
            id: 9,
            data: b"x".to_vec(),
        }]);
        n.step(
            1,
            Message::Accept {
                ballot: b,
                entries: vec![Entry {
                    slot: 1,
                    value: value.clone(),
                }],
                commit: 0,
            },
        )
        .expect("peer");
        let r = n.ready();
        assert_eq!(
            r.persist,
            vec![Record::Accepted {
                slot: 1,
                ballot: b,
                value
            }]
        );
        assert!(r
            .messages
            .iter()
            .all(|e| !matches!(e.msg, Message::Accepted { .. })));
        assert_eq!(r.messages_after_persist.len(), 1);
        // A lower ballot is refused and the promise does not go down.
        n.step(
            3,
            Message::Prepare {
                ballot: Ballot { round: 2, node: 3 },
                from_slot: 1,
            },
        )
        .expect("peer");
        let r = n.ready();
        assert!(r.persist.is_empty());
        assert!(matches!(
            r.messages.as_slice(),
            [Envelope { to: 3, msg: Message::Nack { promised } }] if *promised == b
        ));
    }

    #[test]
    fn ack_before_persist_bug_sends_accepted_at_once() {
        let mut c = cfg(2);
        c.bugs = vec![Bug::AckBeforePersist];
        let mut n = Node::new(c, 1).expect("valid");
        let b = Ballot { round: 1, node: 1 };
        n.step(
            1,
            Message::Accept {
                ballot: b,
                entries: vec![Entry {
                    slot: 1,
                    value: Value::Noop,
                }],
                commit: 0,
            },
        )
        .expect("peer");
        let r = n.ready();
        assert!(r
            .messages
            .iter()
            .any(|e| matches!(e.msg, Message::Accepted { .. })));
    }

    #[test]
    fn leader_batches_proposals_and_commits_after_a_quorum() {
        let (mut n, ballot) = leader();
        let _ = n.ready();
        for id in 0..10 {
            n.propose(id, vec![id as u8]);
        }
        let r = n.ready();
        let accepts: Vec<&Vec<Entry>> = r
            .messages
            .iter()
            .filter(|e| e.to == 2)
            .filter_map(|e| match &e.msg {
                Message::Accept { entries, .. } => Some(entries),
                _ => None,
            })
            .collect();
        assert_eq!(accepts.len(), 1, "one accept message carries the batch");
        assert_eq!(accepts[0].len(), 1, "ten commands fit in one slot");
        let slot = accepts[0][0].slot;
        // The leader's own vote counts only after its persist; a peer's vote makes a quorum.
        n.step(
            2,
            Message::Accepted {
                ballot,
                slots: vec![slot],
            },
        )
        .expect("peer");
        assert!(
            n.ready().committed.is_empty(),
            "one vote of three is no quorum"
        );
        n.persisted(r.persist_token.expect("records to persist"));
        let r = n.ready();
        assert_eq!(r.committed.len(), 1);
        assert_eq!(r.committed[0].slot, slot);
        assert!(matches!(&r.committed[0].value, Value::Batch(c) if c.len() == 10));
    }

    #[test]
    fn reads_need_a_quorum_round() {
        let (mut n, ballot) = leader();
        let _ = n.ready();
        n.read_index(5);
        let r = n.ready();
        assert!(r.reads.is_empty());
        let seq = r
            .messages
            .iter()
            .find_map(|e| match e.msg {
                Message::Heartbeat { seq, .. } => Some(seq),
                _ => None,
            })
            .expect("a confirmation round");
        n.step(
            3,
            Message::HeartbeatReply {
                ballot,
                seq,
                commit: 0,
            },
        )
        .expect("peer");
        let r = n.ready();
        assert_eq!(r.reads.len(), 1);
        assert_eq!(r.reads[0].id, 5);
        // A follower refuses reads, naming the leader it knows.
        let mut f = Node::new(cfg(2), 3).expect("valid");
        f.read_index(1);
        assert!(matches!(
            f.ready().rejected_reads.as_slice(),
            [(1, Dropped::NotLeader { .. })]
        ));
    }

    #[test]
    fn a_deposed_leader_reports_in_flight_commands_as_unknown() {
        let (mut n, _) = leader();
        let _ = n.ready();
        n.propose(1, b"a".to_vec());
        let _ = n.ready();
        n.propose(2, b"b".to_vec());
        n.step(
            2,
            Message::Nack {
                promised: Ballot { round: 99, node: 2 },
            },
        )
        .expect("peer");
        let r = n.ready();
        assert!(r.rejected.contains(&(1, Dropped::Unknown)));
        assert!(r
            .rejected
            .iter()
            .any(|(id, d)| *id == 2 && d.certainly_not_applied()));
        assert_eq!(n.leader(), Some(2));
    }

    #[test]
    fn recovered_state_folds_idempotently() {
        let b1 = Ballot { round: 1, node: 1 };
        let b2 = Ballot { round: 2, node: 2 };
        let recs = [
            Record::Promise(b1),
            Record::Accepted {
                slot: 1,
                ballot: b2,
                value: Value::Noop,
            },
            Record::Accepted {
                slot: 1,
                ballot: b1,
                value: Value::Batch(vec![]),
            },
            Record::Chosen {
                slot: 2,
                value: Value::Noop,
            },
        ];
        let mut s = RecoveredState::default();
        for r in recs.iter().chain(recs.iter()) {
            s.apply(r.clone());
        }
        assert_eq!(s.promised, b2);
        assert_eq!(s.accepted.get(&1), Some(&(b2, Value::Noop)));
        assert_eq!(s.chosen.len(), 1);
        s.compact(2);
        assert!(s.accepted.is_empty() && s.chosen.is_empty());
    }

    #[test]
    fn bugs_parse_by_name_and_bad_input_is_an_error() {
        for b in Bug::ALL {
            assert_eq!(b.name().parse::<Bug>().expect("known"), b);
            assert!(!b.description().is_empty());
        }
        let e = "nope".parse::<Bug>().expect_err("unknown");
        assert!(e.to_string().contains("stale-leader-read"), "{e}");
        let mut c = cfg(4);
        assert!(c.validate().is_err(), "id outside members");
        c.id = 1;
        c.heartbeat_interval_ticks = 20;
        assert!(
            Node::new(c, 0).is_err(),
            "heartbeat slower than election timeout"
        );
        let mut n = Node::new(cfg(1), 0).expect("valid");
        assert!(n
            .step(
                9,
                Message::PreVote {
                    round: 1,
                    commit: 0
                }
            )
            .is_err());
        assert!(
            n.snapshot_taken(5, vec![]).is_err(),
            "snapshot ahead of commit"
        );
    }
}
