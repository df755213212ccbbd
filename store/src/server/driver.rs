//! The driver: one tokio task owning the Paxos core. It feeds the core peer frames, client
//! requests, ticks and WAL completions, and carries out each `Ready` (persist, send, install,
//! apply, answer, snapshot).

use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

use crate::codec;
use crate::kv::{self, Kv};
use crate::paxos::{self, Dropped, Envelope, Message, Node, Snapshot};
use crate::server::recovery::checkpoint_records;
use crate::server::sharded::{ShardDriver, ShardMachine};
use crate::server::{fatal, ProposeReply, Request, Shared};
use crate::wal::committer::{WalDone, WalJob};

pub(crate) struct Driver {
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
    /// The state machine of the snapshot last passed to the core, decoded when it arrived.
    decoded_snapshot: Option<(u64, Kv)>,
    /// Sharded mode: the same for the shard machine.
    decoded_shard_snapshot: Option<(u64, ShardMachine)>,
    /// Sharded mode: drives the controller or group core.
    shard: Option<ShardDriver>,
}

/// The first proposal id of this run of the driver. Applied commands are matched to waiting
/// requests by (origin node, proposal id), and a command proposed before a crash can still be
/// chosen and applied after the restart (a new leader, or this node leading again, finishes
/// the slot it was accepted in). Ids counting from 1 in every run would then answer a new
/// request with an old command's outcome (a PUT told "applied" with another write's
/// revision while its own may never apply). So each run starts at its start time in
/// microseconds times 256: above every id an earlier run can have used unless it proposed
/// more than 256 commands per microsecond of its life (or the clock stepped back by more
/// than the gap), and below the group core's range (`CORE_PROPOSAL_IDS`, 2^62) until about
/// the year 2540.
pub(crate) fn first_proposal_id(now: std::time::SystemTime) -> u64 {
    let micros = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    micros.saturating_mul(256).max(1)
}

/// Inputs drained per wake-up before handling the Ready, so that one Ready (and one fsync)
/// covers many.
const DRAIN_MAX: usize = 1024;

impl Driver {
    pub(crate) fn new(node: Node, shared: Arc<Shared>, wal: mpsc::Sender<WalJob>) -> Driver {
        Driver {
            node,
            wal,
            pending: HashMap::new(),
            pending_reads: HashMap::new(),
            reads_waiting_apply: VecDeque::new(),
            next_id: first_proposal_id(std::time::SystemTime::now()),
            snapshot_in_progress: false,
            wal_bytes_since_compaction: 0,
            decoded_snapshot: None,
            decoded_shard_snapshot: None,
            shard: shared
                .shard
                .is_some()
                .then(|| ShardDriver::new(shared.clone())),
            shared,
        }
    }

    pub(crate) async fn run(
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
        // The group core's ticks (sharded mode); in the other modes it fires rarely and does
        // nothing.
        let shard_tick_ms = self
            .shared
            .shard
            .as_ref()
            .map_or(60_000, |s| s.settings.tick_ms);
        let mut shard_ticker = tokio::time::interval(Duration::from_millis(shard_tick_ms));
        shard_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
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
                _ = shard_ticker.tick() => {
                    if let Some(sd) = &mut self.shard {
                        sd.tick(&mut self.node);
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
        match codec::decode::<Message>("peer message", frame) {
            Ok(Message::InstallSnapshot { slot, data }) if self.shard.is_some() => {
                let decoded = self
                    .shared
                    .shard
                    .as_ref()
                    .map(|sh| sh.settings.machine_from_snapshot(&data));
                match decoded {
                    Some(Ok(machine)) => {
                        let msg = Message::InstallSnapshot { slot, data };
                        match self.node.step(from, msg) {
                            Ok(()) => self.decoded_shard_snapshot = Some((slot, machine)),
                            Err(e) => {
                                tracing::warn!(from, error = %e, "message rejected by the core")
                            }
                        }
                    }
                    Some(Err(e)) => tracing::warn!(
                        from,
                        slot,
                        error = %e,
                        "refused a snapshot from a peer: its shard state does not decode"
                    ),
                    None => {}
                }
            }
            Ok(Message::InstallSnapshot { slot, data }) => {
                // Decode the state machine before the core sees the snapshot: the core drops
                // its log when it accepts one, so bad bytes must be refused here, as a message.
                let dedup_max_bytes = self.shared.config.dedup_max_bytes;
                match Kv::from_snapshot(&data).map(|kv| kv.with_dedup_max_bytes(dedup_max_bytes)) {
                    Ok(kv) => {
                        let msg = Message::InstallSnapshot { slot, data };
                        match self.node.step(from, msg) {
                            Ok(()) => self.decoded_snapshot = Some((slot, kv)),
                            Err(e) => {
                                tracing::warn!(from, error = %e, "message rejected by the core")
                            }
                        }
                    }
                    Err(e) => tracing::warn!(
                        from,
                        slot,
                        error = %e,
                        "refused a snapshot from a peer: its state does not decode"
                    ),
                }
            }
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
                let data = codec::encode(&cmd);
                self.pending.insert(id, (reply, deadline));
                self.node.propose(id, data);
            }
            Request::Read { reply } => {
                self.pending_reads.insert(id, (reply, deadline));
                self.node.read_index(id);
            }
            Request::ShardPropose { data, reply } => {
                self.shared.metrics.proposals.fetch_add(1, Relaxed);
                self.pending.insert(id, (reply, deadline));
                self.node.propose(id, data);
            }
            Request::ShardMsg { from, msg } => {
                if let Some(sd) = &mut self.shard {
                    if let Some(sh) = &self.shared.shard {
                        sh.metrics.messages_received.fetch_add(1, Relaxed);
                    }
                    sd.on_message(&mut self.node, from, msg);
                }
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
        if let Some(sh) = &self.shared.shard {
            sh.expire();
        }
    }

    fn send(&self, env: Envelope) {
        let bytes = codec::encode(&env.msg);
        self.shared.transport.send(env.to, Bytes::from(bytes));
    }

    async fn handle_ready(&mut self) {
        let ready = self.node.ready();
        // 1. Persist (group commit in the WAL thread), then the held-back messages.
        if !ready.persist.is_empty() || ready.persist_token.is_some() {
            let records: Vec<Vec<u8>> = ready.persist.iter().map(codec::encode).collect();
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
        let install = ready.install_snapshot;
        let install = match (install, &self.shared.shard) {
            (Some(snap), Some(sh)) => {
                let machine = match self.decoded_shard_snapshot.take() {
                    Some((slot, m)) if slot == snap.slot => Ok(m),
                    _ => sh.settings.machine_from_snapshot(&snap.data),
                };
                match machine {
                    Ok(m) => {
                        *sh.machine.lock().expect("lock poisoned") = m;
                        self.shared
                            .kv
                            .write()
                            .expect("lock poisoned")
                            .set_applied_index(snap.slot);
                        self.compact_after_install(&snap).await;
                    }
                    Err(e) => fatal("a snapshot the core accepted does not decode", e),
                }
                None
            }
            (other, _) => other,
        };
        if let Some(snap) = install {
            let decoded = match self.decoded_snapshot.take() {
                Some((slot, kv)) if slot == snap.slot => Ok(kv),
                _ => Kv::from_snapshot(&snap.data)
                    .map(|kv| kv.with_dedup_max_bytes(self.shared.config.dedup_max_bytes)),
            };
            match decoded {
                Ok(mut kv) => {
                    kv.set_applied_index(kv.applied_index().max(snap.slot));
                    *self.shared.kv.write().expect("lock poisoned") = kv;
                    self.compact_after_install(&snap).await;
                }
                // Unreachable: `on_frame` decoded every snapshot the core accepted.
                Err(e) => fatal("a snapshot the core accepted does not decode", e),
            }
        }
        self.decoded_snapshot = None;
        self.decoded_shard_snapshot = None;
        // 4. Apply.
        if !ready.committed.is_empty() {
            let me = self.shared.config.id;
            let mut answers = Vec::new();
            let mut shard_answers = Vec::new();
            {
                let mut kv = self.shared.kv.write().expect("lock poisoned");
                for entry in &ready.committed {
                    if entry.slot <= kv.applied_index() {
                        continue; // covered by an installed snapshot
                    }
                    if let paxos::Value::Batch(cmds) = &entry.value {
                        for c in cmds {
                            if let Some(sd) = &mut self.shard {
                                let answer = sd.apply(&mut self.node, entry.slot, &c.data);
                                self.shared.metrics.applied_commands.fetch_add(1, Relaxed);
                                if let (Some(a), true) = (answer, c.origin == me) {
                                    shard_answers.push((c.id, a));
                                }
                                continue;
                            }
                            let outcome = match codec::decode::<kv::Command>("command", &c.data) {
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
            for (id, answer) in shard_answers {
                if let Some((tx, _)) = self.pending.remove(&id) {
                    let _ = tx.send(answer);
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
            } else if let Some(sd) = &mut self.shard {
                sd.rejected(&mut self.node, id, why);
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
                    match &self.shared.shard {
                        // Taken with the kv lock held: the driver applies under it, so the
                        // machine and the applied index belong together.
                        Some(sh) => (
                            kv.applied_index(),
                            sh.machine.lock().expect("lock poisoned").snapshot(),
                        ),
                        None => (kv.applied_index(), kv.to_snapshot()),
                    }
                };
                if slot >= due {
                    self.snapshot_in_progress = true;
                    let snapshot = codec::encode(&Snapshot {
                        slot,
                        data: data.clone(),
                    });
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
        drop(status);
        if let Some(sd) = &mut self.shard {
            sd.after_ready(&mut self.node);
        }
    }

    /// After installing a snapshot from the leader: compact the WAL behind it.
    async fn compact_after_install(&mut self, snap: &Snapshot) {
        self.shared
            .metrics
            .snapshots_installed
            .fetch_add(1, Relaxed);
        let snapshot = codec::encode(snap);
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
}

#[cfg(test)]
mod tests {
    use super::first_proposal_id;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn a_restarted_driver_never_reuses_an_earlier_runs_proposal_ids() {
        let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let first = first_proposal_id(start);
        // A run proposing 100,000 commands a second for a day, restarted 1 ms after it died.
        let used_up_to = first + 100_000 * 86_400;
        let restarted =
            first_proposal_id(start + Duration::from_secs(86_400) + Duration::from_millis(1));
        assert!(
            restarted > used_up_to,
            "restart starts at {restarted}, the earlier run used up to {used_up_to}"
        );
        // Even a restart within the same millisecond starts past a run's first thousands.
        let quick = first_proposal_id(start + Duration::from_millis(1));
        assert!(quick > first + 100_000, "{quick} vs {first}");
        // Below the group core's own proposal ids (server::sharded::CORE_PROPOSAL_IDS).
        assert!(restarted < 1 << 62);
    }
}
