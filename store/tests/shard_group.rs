//! Targeted scenarios of the sharded core on a lossless network that a test can cut: wrong
//! group answers, the fast path, two-phase commit with a coordinator crash before and after
//! its decision, exactly-once across a shard move, and the two 2PL deadlock policies.

use paxos_kv::shard::config::{Controller, ControllerCmd};
use paxos_kv::shard::group::{
    Addr, Group, GroupCmd, GroupConfig, HandedOff, Input, Msg, Output, WriteOp,
};
use paxos_kv::shard::{
    shard_of, AbortReason, Age, Cc, ClientId, Deadlock, GroupId, OpResult, TxnId, TxnOp, TxnReply,
    TxnRequest, Value, DEFAULT_SHARDS,
};
use std::collections::{BTreeMap, VecDeque};

type Filter = Box<dyn Fn(Addr, Addr, &Msg) -> bool>;

/// Groups joined to a controller, messages delivered in order, proposals applied at once.
struct Net {
    controller: Controller,
    cfgs: BTreeMap<GroupId, GroupConfig>,
    groups: BTreeMap<GroupId, Option<Group>>,
    logs: BTreeMap<GroupId, Vec<GroupCmd>>,
    queue: VecDeque<(Addr, Addr, Msg)>,
    proposals: VecDeque<(GroupId, GroupCmd)>,
    replies: Vec<(ClientId, TxnId, TxnReply)>,
    /// Messages for which this returns true are dropped.
    drop: Filter,
}

impl Net {
    fn new(groups: u64, cc: Cc, deadlock: Deadlock) -> Net {
        Net::with_finished_max(groups, cc, deadlock, None)
    }

    /// As [`Net::new`], with each group's record of finished transactions bounded to
    /// `finished_max` (the default unless set).
    fn with_finished_max(
        groups: u64,
        cc: Cc,
        deadlock: Deadlock,
        finished_max: Option<usize>,
    ) -> Net {
        Net::with_config(groups, cc, deadlock, |cfg| {
            if let Some(n) = finished_max {
                cfg.finished_max = n;
            }
        })
    }

    /// As [`Net::new`], with each group's settings changed by `set`.
    fn with_config(groups: u64, cc: Cc, deadlock: Deadlock, set: impl Fn(&mut GroupConfig)) -> Net {
        let mut net = Net {
            controller: Controller::new(DEFAULT_SHARDS),
            cfgs: BTreeMap::new(),
            groups: BTreeMap::new(),
            logs: BTreeMap::new(),
            queue: VecDeque::new(),
            proposals: VecDeque::new(),
            replies: Vec::new(),
            drop: Box::new(|_, _, _| false),
        };
        for id in 1..=groups {
            net.controller
                .apply(&ControllerCmd::Join {
                    group: id,
                    members: vec![],
                })
                .expect("join");
            let mut cfg = GroupConfig::new(id);
            cfg.cc = cc;
            cfg.deadlock = deadlock;
            set(&mut cfg);
            let mut g = Group::new(cfg.clone());
            g.become_leader();
            net.cfgs.insert(id, cfg);
            net.groups.insert(id, Some(g));
            net.logs.insert(id, Vec::new());
        }
        net.run(100);
        let latest = net.controller.latest().num;
        for g in net.groups.values() {
            let g = g.as_ref().expect("up");
            assert_eq!(g.config().num, latest, "setup: group {} behind", g.id());
            assert!(g.migration_done());
        }
        net
    }

    fn outputs(&mut self, id: GroupId, outs: Vec<Output>) {
        for o in outs {
            match o {
                Output::Send { to, msg } => {
                    if !(self.drop)(Addr::Group(id), to, &msg) {
                        self.queue.push_back((Addr::Group(id), to, msg));
                    }
                }
                Output::Propose(cmd) => self.proposals.push_back((id, cmd)),
                Output::Observe(_) => {}
            }
        }
    }

    fn step_group(&mut self, id: GroupId, input: Input) {
        let Some(g) = self.groups.get_mut(&id).and_then(|g| g.as_mut()) else {
            return;
        };
        if let Input::Apply(cmd) = &input {
            self.logs.get_mut(&id).expect("log").push(cmd.clone());
        }
        let outs = g.step(input);
        self.outputs(id, outs);
    }

    /// Delivers and applies until nothing is left (bounded), then ticks every group.
    fn run(&mut self, ticks: u64) {
        for _ in 0..ticks {
            for _ in 0..10_000 {
                if let Some((id, cmd)) = self.proposals.pop_front() {
                    if self.groups[&id].is_some() {
                        self.step_group(id, Input::Apply(cmd));
                    }
                    continue;
                }
                let Some((from, to, msg)) = self.queue.pop_front() else {
                    break;
                };
                match to {
                    Addr::Controller => {
                        if let Msg::QueryConfig { num } = msg {
                            let cfg = self.controller.query(num).clone();
                            self.queue
                                .push_back((Addr::Controller, from, Msg::ConfigReply(cfg)));
                        }
                    }
                    Addr::Group(id) => self.step_group(id, Input::Message { from, msg }),
                    Addr::Client(c) => {
                        if let Msg::Reply { id, reply } = msg {
                            self.replies.push((c, id, reply));
                        }
                    }
                }
            }
            let ids: Vec<GroupId> = self.groups.keys().copied().collect();
            for id in ids {
                self.step_group(id, Input::Tick);
            }
        }
    }

    fn crash_and_recover(&mut self, id: GroupId) {
        self.proposals.retain(|(g, _)| *g != id);
        let g = Group::recover(self.cfgs[&id].clone(), &self.logs[&id]);
        self.groups.insert(id, Some(g));
    }

    fn group(&self, id: GroupId) -> &Group {
        self.groups[&id].as_ref().expect("up")
    }

    fn submit(&mut self, to: GroupId, id: TxnId, ops: Vec<TxnOp>) {
        let req = TxnRequest {
            id,
            age: Age {
                start: id.seq,
                txn: id,
            },
            ops,
        };
        self.queue
            .push_back((Addr::Client(id.client), Addr::Group(to), Msg::Txn(req)));
    }

    fn reply_to(&self, id: TxnId) -> Option<&TxnReply> {
        self.replies
            .iter()
            .rev()
            .find(|(_, t, _)| *t == id)
            .map(|(_, _, r)| r)
    }

    /// A key whose shard `group` owns.
    fn key_of(&self, group: GroupId, skip: usize) -> String {
        let cfg = self.controller.latest();
        (0..10_000)
            .map(|i| format!("key{i}"))
            .filter(|k| cfg.owner(shard_of(k, DEFAULT_SHARDS)) == group)
            .nth(skip)
            .expect("some key maps to every group")
    }

    fn value(&self, key: &str) -> (Option<Value>, u64) {
        let owner = self
            .controller
            .latest()
            .owner(shard_of(key, DEFAULT_SHARDS));
        let v = self.group(owner).get(key).expect("owner serves it");
        (v.value, v.version)
    }
}

impl Net {
    /// Group `id`'s handed-off copy of `shard` (the newest).
    fn copy_of(&self, id: GroupId, shard: usize) -> HandedOff {
        let copies = self.group(id).handed_off();
        let copy = copies.iter().rev().find(|h| h.shard == shard);
        copy.cloned()
            .unwrap_or_else(|| panic!("group {id} keeps no copy of shard {shard}: {copies:?}"))
    }

    /// Sends `ops` as `id` to group `to` and returns the answer (the only one after this).
    fn ask(&mut self, to: GroupId, id: TxnId, ops: Vec<TxnOp>) -> TxnReply {
        self.replies.clear();
        self.submit(to, id, ops);
        self.run(5);
        self.reply_to(id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} unanswered"))
    }

    fn move_shard(&mut self, shard: usize, group: GroupId, ticks: u64) {
        self.controller
            .apply(&ControllerCmd::Move { shard, group })
            .expect("move");
        self.run(ticks);
    }
}

fn txn(client: ClientId, seq: u64) -> TxnId {
    TxnId { client, seq }
}

fn s(v: &str) -> Option<Value> {
    Some(Value::Str(v.to_string()))
}

#[test]
fn wrong_group_names_the_owner_and_the_owner_serves() {
    let mut net = Net::new(2, Cc::TwoPl, Deadlock::WoundWait);
    let k = net.key_of(2, 0);
    net.submit(1, txn(1, 1), vec![TxnOp::Write(k.clone(), "a".into())]);
    net.run(5);
    match net.reply_to(txn(1, 1)) {
        Some(TxnReply::WrongGroup { owner, .. }) => assert_eq!(*owner, 2),
        other => panic!("expected WrongGroup naming group 2, got {other:?}"),
    }
    assert_eq!(
        net.value(&k),
        (None, 0),
        "a wrong-group answer applies nothing"
    );
    net.submit(2, txn(1, 2), vec![TxnOp::Write(k.clone(), "a".into())]);
    net.run(5);
    assert!(matches!(
        net.reply_to(txn(1, 2)),
        Some(TxnReply::Committed { .. })
    ));
    assert_eq!(net.value(&k), (s("a"), 1));
}

#[test]
fn compare_refuses_an_overdraft_atomically_across_groups() {
    for cc in Cc::ALL {
        let mut net = Net::new(2, cc, Deadlock::WoundWait);
        let (a, b) = (net.key_of(1, 0), net.key_of(2, 0));
        // a@0 and b@0 hold; the transfer applies everywhere.
        let ops = vec![
            TxnOp::IfRevision(a.clone(), 0),
            TxnOp::IfRevision(b.clone(), 0),
            TxnOp::Write(a.clone(), "90".into()),
            TxnOp::Write(b.clone(), "110".into()),
        ];
        net.submit(1, txn(1, 1), ops.clone());
        net.run(20);
        assert!(
            matches!(net.reply_to(txn(1, 1)), Some(TxnReply::Committed { .. })),
            "{cc}: {:?}",
            net.reply_to(txn(1, 1))
        );
        assert_eq!(net.value(&a), (s("90"), 1));
        assert_eq!(net.value(&b), (s("110"), 1));
        // The same compares now fail: nothing applies.
        net.submit(1, txn(1, 2), ops);
        net.run(20);
        assert!(
            matches!(
                net.reply_to(txn(1, 2)),
                Some(TxnReply::CompareFailed { revision: 1, .. })
            ),
            "{cc}: {:?}",
            net.reply_to(txn(1, 2))
        );
        assert_eq!(net.value(&a), (s("90"), 1));
        assert_eq!(net.value(&b), (s("110"), 1));
        for g in 1..=2 {
            assert_eq!(net.group(g).prepared_count(), 0);
            assert_eq!(net.group(g).locked_keys(), 0, "{cc}: locks left at {g}");
        }
    }
}

#[test]
fn a_logged_decision_survives_a_coordinator_crash() {
    let mut net = Net::new(2, Cc::TwoPl, Deadlock::WoundWait);
    let (a, b) = (net.key_of(1, 0), net.key_of(2, 0));
    // Group 1 coordinates; its decision never reaches group 2 before it crashes.
    net.drop = Box::new(|from, to, m| {
        from == Addr::Group(1) && to == Addr::Group(2) && matches!(m, Msg::Decision { .. })
    });
    net.submit(
        1,
        txn(1, 1),
        vec![
            TxnOp::Write(a.clone(), "x".into()),
            TxnOp::Write(b.clone(), "y".into()),
        ],
    );
    net.run(10);
    assert!(matches!(
        net.reply_to(txn(1, 1)),
        Some(TxnReply::Committed { .. })
    ));
    assert_eq!(net.group(2).prepared_count(), 1, "group 2 waits, prepared");
    net.crash_and_recover(1);
    net.drop = Box::new(|_, _, _| false);
    net.run(60);
    assert_eq!(
        net.group(2).prepared_count(),
        0,
        "group 2 learned the decision"
    );
    assert_eq!(net.value(&a), (s("x"), 1));
    assert_eq!(net.value(&b), (s("y"), 1));
}

#[test]
fn a_coordinator_that_crashes_before_deciding_aborts() {
    let mut net = Net::new(2, Cc::TwoPl, Deadlock::WoundWait);
    let (a, b) = (net.key_of(1, 0), net.key_of(2, 0));
    // Votes never arrive: the coordinator cannot decide before it crashes.
    net.drop = Box::new(|_, _, m| matches!(m, Msg::Vote { .. }));
    net.submit(
        1,
        txn(1, 1),
        vec![
            TxnOp::Write(a.clone(), "x".into()),
            TxnOp::Write(b.clone(), "y".into()),
        ],
    );
    net.run(5);
    assert_eq!(net.group(2).prepared_count(), 1);
    assert_eq!(net.group(1).undecided_count(), 1);
    net.crash_and_recover(1);
    net.drop = Box::new(|_, _, _| false);
    net.run(60);
    assert_eq!(net.group(1).undecided_count(), 0);
    assert_eq!(net.group(2).prepared_count(), 0);
    assert_eq!(net.value(&a), (None, 0));
    assert_eq!(net.value(&b), (None, 0));
    // Both participants acknowledged the logged abort, so the coordinator forgot it.
    assert_eq!(net.group(1).coordinator_records(), 0);
    // The client's retry (it never learned the outcome) is no longer answered from the
    // record: it runs as a new attempt or is refused (the participant remembers the abort);
    // either way its answer must match what took effect, since the original applied nothing.
    let ops = vec![
        TxnOp::Write(a.clone(), "x".into()),
        TxnOp::Write(b.clone(), "y".into()),
    ];
    for _ in 0..2 {
        net.submit(1, txn(1, 1), ops.clone());
        net.run(20);
        match net.reply_to(txn(1, 1)) {
            Some(TxnReply::Committed { .. }) => {
                assert_eq!(net.value(&a), (s("x"), 1));
                assert_eq!(net.value(&b), (s("y"), 1));
            }
            Some(TxnReply::Aborted { .. }) => {
                assert_eq!(net.value(&a).1, net.value(&b).1, "atomic");
                assert!(net.value(&a).1 <= 1, "applied at most once");
            }
            other => panic!("retry answered {other:?}"),
        }
    }
}

#[test]
fn exactly_once_survives_a_shard_move() {
    let mut net = Net::new(2, Cc::Occ, Deadlock::WoundWait);
    let k = net.key_of(1, 0);
    let shard = shard_of(&k, DEFAULT_SHARDS);
    net.submit(1, txn(7, 1), vec![TxnOp::Append(k.clone(), "once".into())]);
    net.run(5);
    assert!(matches!(
        net.reply_to(txn(7, 1)),
        Some(TxnReply::Committed { .. })
    ));
    net.controller
        .apply(&ControllerCmd::Move { shard, group: 2 })
        .expect("move");
    net.run(60);
    assert!(net.group(2).serving_shards().contains(&shard));
    assert!(!net.group(1).serving_shards().contains(&shard));
    // The client never saw the answer and retries at the new owner.
    net.submit(2, txn(7, 1), vec![TxnOp::Append(k.clone(), "once".into())]);
    net.run(5);
    match net.reply_to(txn(7, 1)) {
        Some(TxnReply::Committed { results }) => assert_eq!(
            results,
            &vec![OpResult::Append {
                key: k.clone(),
                value: "once".into()
            }]
        ),
        other => panic!("expected the recorded reply, got {other:?}"),
    }
    assert_eq!(
        net.value(&k),
        (Some(Value::List(vec!["once".into()])), 1),
        "applied once"
    );
    // The old owner refuses, naming the new one.
    net.submit(1, txn(7, 2), vec![TxnOp::Read(k.clone())]);
    net.run(5);
    assert!(matches!(
        net.reply_to(txn(7, 2)),
        Some(TxnReply::WrongGroup { owner: 2, .. })
    ));
}

/// A younger transaction holds a shared lock on `k` (from its read); an older one then
/// prepares a write of `k` at the same group.
fn lock_conflict(deadlock: Deadlock) -> (Option<TxnReply>, Option<TxnReply>) {
    let mut net = Net::new(2, Cc::TwoPl, deadlock);
    let (k, other) = (net.key_of(1, 0), net.key_of(2, 0));
    // The younger (start 50) reads k and writes at group 2; its prepare is held back.
    net.drop = Box::new(|_, _, m| matches!(m, Msg::Prepare { txn, .. } if txn.client == 2));
    net.queue.push_back((
        Addr::Client(2),
        Addr::Group(2),
        Msg::Txn(TxnRequest {
            id: txn(2, 1),
            age: Age {
                start: 50,
                txn: txn(2, 1),
            },
            ops: vec![
                TxnOp::Read(k.clone()),
                TxnOp::Write(other.clone(), "y".into()),
            ],
        }),
    ));
    net.run(3);
    // The older (start 1) writes k and other.
    net.queue.push_back((
        Addr::Client(1),
        Addr::Group(2),
        Msg::Txn(TxnRequest {
            id: txn(1, 1),
            age: Age {
                start: 1,
                txn: txn(1, 1),
            },
            ops: vec![
                TxnOp::Write(k.clone(), "x".into()),
                TxnOp::Write(other, "z".into()),
            ],
        }),
    ));
    // Well within the vote timeout (40 ticks): the older's fate is settled by the lock
    // policy, not by the younger timing out.
    net.run(15);
    let older = net.reply_to(txn(1, 1)).cloned();
    net.drop = Box::new(|_, _, _| false);
    net.run(80);
    (older, net.reply_to(txn(2, 1)).cloned())
}

#[test]
fn wound_wait_lets_the_older_wound_the_younger() {
    let (older, younger) = lock_conflict(Deadlock::WoundWait);
    assert!(
        matches!(older, Some(TxnReply::Committed { .. })),
        "older: {older:?}"
    );
    assert!(
        matches!(
            younger,
            Some(TxnReply::Aborted {
                reason: AbortReason::LockConflict
            })
        ),
        "younger: {younger:?}"
    );
}

#[test]
fn no_wait_aborts_whoever_meets_a_held_lock() {
    let (older, younger) = lock_conflict(Deadlock::NoWait);
    assert!(
        matches!(
            older,
            Some(TxnReply::Aborted {
                reason: AbortReason::LockConflict
            })
        ),
        "older: {older:?}"
    );
    assert!(
        matches!(younger, Some(TxnReply::Committed { .. })),
        "younger: {younger:?}"
    );
}

/// A replica that becomes leader before it has applied its predecessor's records: it must not
/// serve before its own epoch record (an older leader's epoch record must not count), and a
/// prepare of its predecessor applied after the takeover must hold its locks, so that a new
/// transaction on the same key waits instead of committing past a prepared one.
#[test]
fn a_leader_taking_over_before_applying_its_predecessors_records_waits_and_keeps_their_locks() {
    let mut controller = Controller::new(DEFAULT_SHARDS);
    let cfg1 = controller
        .apply(&ControllerCmd::Join {
            group: 1,
            members: vec![],
        })
        .expect("join");
    let mut gcfg = GroupConfig::new(1);
    gcfg.cc = Cc::TwoPl;
    let mut b = Group::new(gcfg);
    // Epochs as the server makes them from ballots: the predecessor's 1, this leader's 5.
    b.become_leader_at(5);
    let prepared = TxnId { client: 7, seq: 1 };
    let log = [
        GroupCmd::Epoch(1),
        GroupCmd::NewConfig(cfg1),
        GroupCmd::Prepare {
            txn: prepared,
            age: Age {
                start: 1,
                txn: prepared,
            },
            coordinator: 2,
            epoch: 1,
            reads: vec![],
            writes: vec![paxos_kv::shard::group::WriteOp::Put("k".into(), "t".into())],
        },
    ];
    for cmd in log {
        b.step(Input::Apply(cmd));
        assert!(!b.is_ready(), "ready before its own epoch record");
    }
    assert_eq!(b.prepared_count(), 1, "the predecessor's prepare applies");
    b.step(Input::Apply(GroupCmd::Epoch(5)));
    assert!(b.is_ready());
    let newer = TxnId { client: 8, seq: 1 };
    let outs = b.step(Input::Message {
        from: Addr::Client(8),
        msg: Msg::Txn(TxnRequest {
            id: newer,
            age: Age {
                start: 0,
                txn: newer,
            },
            ops: vec![TxnOp::Write("k".into(), "u".into())],
        }),
    });
    assert!(
        !outs
            .iter()
            .any(|o| matches!(o, Output::Propose(GroupCmd::Local { .. }))),
        "a write of a key a prepared transaction holds was proposed: {outs:?}"
    );
}

/// A participant that has finished a transaction must not prepare it again when a late copy
/// of the coordinator's Prepare arrives (a partition delays it): it would be prepared anew,
/// learn "commit" from the coordinator's log, and apply its writes a second time. Seen in a
/// sharded list-append run as `[... 17 18 18]` (issue #12); anonymous ids have no
/// exactly-once entry to stop it.
#[test]
fn a_late_prepare_after_the_finish_applies_nothing_twice() {
    use std::cell::RefCell;
    use std::rc::Rc;
    for cc in Cc::ALL {
        let mut net = Net::new(2, cc, Deadlock::WoundWait);
        let (a, b) = (net.key_of(1, 0), net.key_of(2, 0));
        let prepares: Rc<RefCell<Vec<(Addr, Addr, Msg)>>> = Rc::default();
        let seen = prepares.clone();
        net.drop = Box::new(move |from, to, msg| {
            if matches!(msg, Msg::Prepare { .. }) && to == Addr::Group(2) {
                seen.borrow_mut().push((from, to, msg.clone()));
            }
            false
        });
        // Group 2 only writes: nothing read there whose lock could be missing.
        let id = TxnId {
            client: paxos_kv::shard::ANONYMOUS_CLIENT_BIT | 5,
            seq: 1,
        };
        net.submit(
            1,
            id,
            vec![TxnOp::Read(a.clone()), TxnOp::Append(b.clone(), "x".into())],
        );
        net.run(20);
        assert!(
            matches!(net.reply_to(id), Some(TxnReply::Committed { .. })),
            "{cc}: {:?}",
            net.reply_to(id)
        );
        assert_eq!(net.value(&b), (Some(Value::List(vec!["x".into()])), 1));
        let late = prepares
            .borrow()
            .first()
            .cloned()
            .expect("a prepare was sent");
        net.queue.push_back(late);
        net.run(60);
        assert_eq!(
            net.value(&b),
            (Some(Value::List(vec!["x".into()])), 1),
            "{cc}: the late prepare applied the append again"
        );
        assert_eq!(net.group(2).prepared_count(), 0, "{cc}: prepared again");
    }
}

/// Steps group `id` of `net` with one message and returns what it sent, to whom.
fn deliver(net: &mut Net, id: GroupId, from: Addr, msg: Msg) -> Vec<(Addr, Msg)> {
    let g = net
        .groups
        .get_mut(&id)
        .and_then(|g| g.as_mut())
        .expect("up");
    g.step(Input::Message { from, msg })
        .into_iter()
        .filter_map(|o| match o {
            Output::Send { to, msg } => Some((to, msg)),
            _ => None,
        })
        .collect()
}

fn age(start: u64, id: TxnId) -> Age {
    Age { start, txn: id }
}

/// A transaction wounded while its read waits here: its coordinator is told at once, not
/// left to learn it from a retransmission while it holds locks in other groups.
#[test]
fn a_wounded_waiting_read_is_answered_at_once() {
    let mut net = Net::new(1, Cc::TwoPl, Deadlock::WoundWait);
    let (a, b) = (net.key_of(1, 0), net.key_of(1, 1));
    let (oldest, prepared, waiting) = (txn(1, 1), txn(2, 1), txn(3, 1));
    // `prepared` (age 5) holds b exclusively: proposed, so it cannot be wounded.
    let sent = deliver(
        &mut net,
        1,
        Addr::Group(4),
        Msg::Prepare {
            txn: prepared,
            age: age(5, prepared),
            reads: vec![],
            writes: vec![WriteOp::Put(b.clone(), "p".into())],
        },
    );
    assert!(sent.is_empty(), "prepare proposed, no vote yet: {sent:?}");
    // `waiting` (age 9) takes a shared lock on a, then waits for b.
    let sent = deliver(
        &mut net,
        1,
        Addr::Group(2),
        Msg::Read {
            txn: waiting,
            age: age(9, waiting),
            keys: vec![a.clone(), b],
        },
    );
    assert!(sent.is_empty(), "the read waits: {sent:?}");
    // `oldest` (age 1) wants a exclusively and wounds `waiting`.
    let sent = deliver(
        &mut net,
        1,
        Addr::Group(3),
        Msg::Prepare {
            txn: oldest,
            age: age(1, oldest),
            reads: vec![],
            writes: vec![WriteOp::Put(a, "o".into())],
        },
    );
    assert!(
        sent.iter().any(|(to, m)| *to == Addr::Group(2)
            && matches!(m, Msg::ReadReply { txn, result: Err(_) } if *txn == waiting)),
        "the wounded read's coordinator must hear at once: {sent:?}"
    );
}

/// The same late Prepare, delivered to a replica that became the participant group's leader
/// after the commit (a crash and restart here: the volatile memory of finished transactions
/// is gone, only the log is left). The coordinator still holds its decision (the
/// participant's acknowledgements are lost), so a re-prepared transaction would learn
/// "commit" again and apply its append a second time. The record of finished transactions
/// in the replicated state must refuse it, also at a replica restored from a snapshot, and
/// also once the transaction was evicted from a record bounded to one entry (by the
/// coordinator's age floor).
#[test]
fn a_late_prepare_at_a_new_participant_leader_is_refused_and_applies_nothing() {
    use std::cell::RefCell;
    use std::rc::Rc;
    for cc in Cc::ALL {
        for (from_snapshot, finished_max) in [(false, None), (true, None), (false, Some(1))] {
            let mut net = Net::with_finished_max(2, cc, Deadlock::WoundWait, finished_max);
            let (a, b) = (net.key_of(1, 0), net.key_of(2, 0));
            let prepares: Rc<RefCell<Vec<(Addr, Addr, Msg)>>> = Rc::default();
            let seen = prepares.clone();
            net.drop = Box::new(move |from, to, msg| {
                if matches!(msg, Msg::Prepare { .. }) && to == Addr::Group(2) {
                    seen.borrow_mut().push((from, to, msg.clone()));
                }
                // The coordinator never hears that group 2 finished: it keeps its record
                // and keeps resending the commit decision.
                from == Addr::Group(2) && matches!(msg, Msg::DecisionAck { .. })
            });
            let id = TxnId {
                client: paxos_kv::shard::ANONYMOUS_CLIENT_BIT | 6,
                seq: 1,
            };
            net.submit(
                1,
                id,
                vec![TxnOp::Read(a.clone()), TxnOp::Append(b.clone(), "x".into())],
            );
            net.run(20);
            let what = format!("{cc}, from snapshot: {from_snapshot}, bound {finished_max:?}");
            assert!(
                matches!(net.reply_to(id), Some(TxnReply::Committed { .. })),
                "{what}: {:?}",
                net.reply_to(id)
            );
            assert_eq!(net.value(&b), (Some(Value::List(vec!["x".into()])), 1));
            assert_eq!(net.group(1).coordinator_records(), 1, "{what}: kept");
            if finished_max.is_some() {
                // A younger transaction finishes at group 2 and evicts the first.
                let b2 = net.key_of(2, 1);
                let later = TxnId {
                    client: paxos_kv::shard::ANONYMOUS_CLIENT_BIT | 7,
                    seq: 2,
                };
                net.submit(
                    1,
                    later,
                    vec![TxnOp::Read(a.clone()), TxnOp::Append(b2, "y".into())],
                );
                net.run(20);
                assert!(
                    matches!(net.reply_to(later), Some(TxnReply::Committed { .. })),
                    "{what}: {:?}",
                    net.reply_to(later)
                );
                assert_eq!(net.group(2).finished_count(), 1, "{what}: bounded");
            }
            // Group 2's leader changes: a replica that knows only the log (or a snapshot).
            if from_snapshot {
                let snap = net.group(2).snapshot();
                let mut g = Group::from_snapshot(net.cfgs[&2].clone(), &snap).expect("snapshot");
                g.become_leader();
                net.groups.insert(2, Some(g));
                net.logs.insert(2, Vec::new());
            } else {
                net.crash_and_recover(2);
            }
            net.run(5);
            assert!(net.group(2).is_ready(), "{what}: the new leader serves");
            let late = prepares
                .borrow()
                .first()
                .cloned()
                .expect("a prepare was sent");
            let (from, _, msg) = late;
            let outs = net
                .groups
                .get_mut(&2)
                .and_then(|g| g.as_mut())
                .expect("up")
                .step(Input::Message {
                    from,
                    msg: msg.clone(),
                });
            assert!(
                !outs.iter().any(|o| matches!(
                    o,
                    Output::Propose(GroupCmd::Prepare { .. })
                        | Output::Send {
                            msg: Msg::Vote { vote: Ok(()), .. },
                            ..
                        }
                )),
                "{what}: the late prepare was not refused: {outs:?}"
            );
            net.outputs(2, outs);
            net.run(60);
            assert_eq!(
                net.value(&b),
                (Some(Value::List(vec!["x".into()])), 1),
                "{what}: the late prepare applied the append again"
            );
            assert_eq!(net.group(2).prepared_count(), 0, "{what}: prepared again");
        }
    }
}

/// Once the gaining group acknowledged installing a shard, the losing group keeps only the
/// shard's exactly-once table: the data is gone, and a retry there of a transaction applied
/// before the move still gets its outcome, not "wrong group".
#[test]
fn a_shard_moved_away_and_acknowledged_keeps_only_its_exactly_once_table() {
    let mut net = Net::new(2, Cc::Occ, Deadlock::WoundWait);
    let k = net.key_of(1, 0);
    let shard = shard_of(&k, DEFAULT_SHARDS);
    let append = vec![TxnOp::Append(k.clone(), "once".into())];
    let applied = net.ask(1, txn(7, 1), append.clone());
    assert!(matches!(applied, TxnReply::Committed { .. }), "{applied:?}");
    net.move_shard(shard, 2, 60);
    assert!(net.group(2).serving_shards().contains(&shard));
    let copy = net.copy_of(1, shard);
    assert!(
        !copy.unacked && copy.keys == 0 && copy.dedup_entries == 1,
        "the acknowledged copy keeps its table only: {copy:?}"
    );
    assert_eq!(
        net.ask(1, txn(7, 1), append),
        applied,
        "the retry's outcome"
    );
    assert_eq!(net.value(&k), (Some(Value::List(vec!["once".into()])), 1));
    let new = net.ask(1, txn(7, 2), vec![TxnOp::Read(k.clone())]);
    assert!(
        matches!(new, TxnReply::WrongGroup { owner: 2, .. }),
        "{new:?}"
    );
}

/// Past `handoff_tables_max` acknowledged copies, the oldest copy's table is evicted into its
/// floors: a retry there of a transaction it answered is unknown (`Evicted`, HTTP 504), never
/// "wrong group" (definite) or run again; a newer seq of that client is routed as usual.
#[test]
fn a_handed_off_table_past_the_bound_is_evicted_and_a_retry_is_unknown() {
    let mut net = Net::with_config(2, Cc::Occ, Deadlock::WoundWait, |c| {
        c.handoff_tables_max = 1
    });
    let k1 = net.key_of(1, 0);
    let s1 = shard_of(&k1, DEFAULT_SHARDS);
    let k2 = (1..100)
        .map(|i| net.key_of(1, i))
        .find(|k| shard_of(k, DEFAULT_SHARDS) != s1)
        .expect("group 1 owns two shards");
    let s2 = shard_of(&k2, DEFAULT_SHARDS);
    let (a1, a2) = (
        vec![TxnOp::Append(k1.clone(), "one".into())],
        vec![TxnOp::Append(k2.clone(), "two".into())],
    );
    let first = net.ask(1, txn(7, 1), a1.clone());
    let second = net.ask(1, txn(8, 1), a2.clone());
    assert!(matches!(first, TxnReply::Committed { .. }), "{first:?}");
    net.move_shard(s1, 2, 60);
    net.move_shard(s2, 2, 60);
    let (c1, c2) = (net.copy_of(1, s1), net.copy_of(1, s2));
    assert!(
        c1.dedup_entries == 0 && c1.dedup_floors,
        "the older copy's table is evicted into floors: {c1:?}"
    );
    assert_eq!(c2.dedup_entries, 1, "the newer keeps its table: {c2:?}");
    assert_eq!(
        net.ask(1, txn(7, 1), a1.clone()),
        TxnReply::Aborted {
            reason: AbortReason::Evicted { floor: 1 }
        },
        "a retry of an evicted copy's transaction is unknown"
    );
    assert_eq!(net.ask(1, txn(8, 1), a2), second);
    let new = net.ask(1, txn(7, 2), vec![TxnOp::Read(k1.clone())]);
    assert!(
        matches!(new, TxnReply::WrongGroup { owner: 2, .. }),
        "{new:?}"
    );
    // The new owner has the table (it moved with the shard): the retry's outcome there.
    assert_eq!(net.ask(2, txn(7, 1), a1), first);
    assert_eq!(net.value(&k1), (Some(Value::List(vec!["one".into()])), 1));
}

/// A hand-off the gaining group has not acknowledged keeps its data, also past the bound of
/// tables (0 here) and across restarts of the losing group: the gainer installs it whenever
/// its pulls get through, and an acknowledgement lost on the way is asked for again by the
/// restarted group. Only then is the data dropped.
#[test]
fn an_unacknowledged_hand_off_is_kept_across_restarts_until_installed() {
    use std::cell::Cell;
    use std::rc::Rc;
    let mut net = Net::with_config(2, Cc::TwoPl, Deadlock::WoundWait, |c| {
        c.handoff_tables_max = 0
    });
    let k1 = net.key_of(1, 0);
    let s1 = shard_of(&k1, DEFAULT_SHARDS);
    let k2 = (1..100)
        .map(|i| net.key_of(1, i))
        .find(|k| shard_of(k, DEFAULT_SHARDS) != s1)
        .expect("group 1 owns two shards");
    let s2 = shard_of(&k2, DEFAULT_SHARDS);
    let w1 = net.ask(1, txn(7, 1), vec![TxnOp::Write(k1.clone(), "v1".into())]);
    net.ask(1, txn(8, 1), vec![TxnOp::Write(k2.clone(), "v2".into())]);
    // Phase 0: no hand-off gets through; 1: hand-offs do, acknowledgements do not; 2: all.
    let phase = Rc::new(Cell::new(0));
    let p = phase.clone();
    net.drop = Box::new(move |_, _, m| match m {
        Msg::ShardHandoff { .. } => p.get() == 0,
        Msg::HandoffAck { .. } => p.get() == 1,
        _ => false,
    });
    net.move_shard(s1, 2, 40);
    net.move_shard(s2, 2, 40);
    net.crash_and_recover(1);
    net.run(40);
    for s in [s1, s2] {
        let c = net.copy_of(1, s);
        assert!(c.unacked && c.keys == 1, "kept whole: {c:?}");
        assert!(!net.group(2).serving_shards().contains(&s));
    }
    phase.set(1);
    net.run(60);
    assert!(
        net.group(2).serving_shards().contains(&s1) && net.group(2).serving_shards().contains(&s2)
    );
    net.crash_and_recover(1);
    assert!(net.copy_of(1, s1).unacked, "the acknowledgement was lost");
    phase.set(2);
    net.run(40);
    for s in [s1, s2] {
        let c = net.copy_of(1, s);
        assert!(
            !c.unacked && c.keys == 0,
            "acknowledged after the restart: {c:?}"
        );
    }
    assert_eq!(net.value(&k1), (s("v1"), 1));
    assert_eq!(net.value(&k2), (s("v2"), 1));
    let retry = net.ask(2, txn(7, 1), vec![TxnOp::Write(k1.clone(), "v1".into())]);
    assert_eq!(retry, w1, "the table moved with the shard");
}

/// Steps group `id` of `net` with one message and returns every output (proposals too), not
/// yet handled: the caller inspects them, then passes them to [`Net::outputs`].
fn step_outputs(net: &mut Net, id: GroupId, from: Addr, msg: Msg) -> Vec<Output> {
    net.groups
        .get_mut(&id)
        .and_then(|g| g.as_mut())
        .expect("up")
        .step(Input::Message { from, msg })
}

fn proposes_decision(outs: &[Output], commit: bool) -> bool {
    outs.iter()
        .any(|o| matches!(o, Output::Propose(GroupCmd::Decide { commit: c, .. }) if *c == commit))
}

/// The deadlock that wound-wait alone does not break across participants: a younger
/// transaction Y, prepared at group 1 (where it may no longer be wounded), waits at group 2
/// for an older O, which waits at group 1 for Y. Group 1 wounds Y through its coordinator
/// (group 3), which logs an abort: Y is aborted and O commits well within the vote timeout
/// (40 ticks) that used to end the deadlock. One wound is sent, although O's prepare reaches
/// group 1 several times (retransmissions and duplicates) and waits through many wake rounds.
#[test]
fn a_prepared_younger_transaction_in_a_deadlock_is_wounded_through_its_coordinator() {
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;
    let mut net = Net::new(3, Cc::TwoPl, Deadlock::WoundWait);
    let (a, b) = (net.key_of(1, 0), net.key_of(2, 0));
    // Ages are the seqs (`Net::submit`): O is older.
    let (older, younger) = (txn(1, 1), txn(2, 50));
    let held: Rc<RefCell<Vec<(Addr, Addr, Msg)>>> = Rc::default();
    let holding = Rc::new(Cell::new(true));
    let wounds = Rc::new(Cell::new(0usize));
    let (seen, hold, counted) = (held.clone(), holding.clone(), wounds.clone());
    net.drop = Box::new(move |from, to, msg| {
        if matches!(msg, Msg::Wound { txn } if *txn == younger) {
            counted.set(counted.get() + 1);
        }
        // O's prepare at group 1 and Y's at group 2 are held back, so that each is first
        // prepared at the other participant.
        let held_back = matches!(msg, Msg::Prepare { txn, .. }
            if (*txn == older && to == Addr::Group(1)) || (*txn == younger && to == Addr::Group(2)));
        if held_back && hold.get() {
            seen.borrow_mut().push((from, to, msg.clone()));
            return true;
        }
        false
    });
    let writes = |v: &str| {
        vec![
            TxnOp::Write(a.clone(), v.into()),
            TxnOp::Write(b.clone(), v.into()),
        ]
    };
    net.submit(3, older, writes("o"));
    net.submit(3, younger, writes("y"));
    net.run(3);
    assert_eq!(net.group(1).prepared_count(), 1, "Y prepared at group 1");
    assert_eq!(net.group(2).prepared_count(), 1, "O prepared at group 2");
    assert_eq!(wounds.get(), 0, "no wound while nobody waits");
    // Now the held prepares arrive, O's twice: each waits for the other transaction.
    holding.set(false);
    let late: Vec<(Addr, Addr, Msg)> = held.borrow().clone();
    assert!(late.len() >= 2, "both prepares were held: {late:?}");
    net.queue.extend(late.iter().cloned());
    net.queue.extend(
        late.into_iter()
            .filter(|(_, _, m)| matches!(m, Msg::Prepare { txn, .. } if *txn == older)),
    );
    net.run(10);
    assert!(
        matches!(net.reply_to(older), Some(TxnReply::Committed { .. })),
        "O must commit without waiting for the vote timeout: {:?}",
        net.reply_to(older)
    );
    assert_eq!(
        net.reply_to(younger),
        Some(&TxnReply::Aborted {
            reason: AbortReason::LockConflict
        }),
        "Y must be wounded"
    );
    assert_eq!(net.value(&a), (s("o"), 1));
    assert_eq!(net.value(&b), (s("o"), 1));
    assert_eq!(wounds.get(), 1, "one wound for one holder");
    for g in 1..=3 {
        assert_eq!(net.group(g).prepared_count(), 0, "left prepared at {g}");
        assert_eq!(net.group(g).locked_keys(), 0, "locks left at {g}");
        assert_eq!(net.group(g).undecided_count(), 0, "undecided at {g}");
    }
}

/// A coordinator ignores a wound while its attempt waits for a vote but no participant said
/// its prepare waits for a lock (no wait-for chain through it: it is only slow to decide),
/// once its attempt has proposed its commit (that proposal may already be the first
/// decision in its log) and once the commit is logged (every participant must apply it):
/// the transaction commits everywhere.
#[test]
fn a_wound_after_the_commit_is_proposed_or_logged_changes_nothing() {
    use std::cell::RefCell;
    use std::rc::Rc;
    let mut net = Net::new(3, Cc::TwoPl, Deadlock::WoundWait);
    let (a, b) = (net.key_of(1, 0), net.key_of(2, 0));
    let id = txn(2, 50);
    let held: Rc<RefCell<Vec<Msg>>> = Rc::default();
    let seen = held.clone();
    net.drop = Box::new(move |from, to, msg| {
        let vote = from == Addr::Group(2)
            && to == Addr::Group(3)
            && matches!(msg, Msg::Vote { vote: Ok(()), .. });
        if vote {
            seen.borrow_mut().push(msg.clone());
        }
        vote
    });
    net.submit(
        3,
        id,
        vec![
            TxnOp::Write(a.clone(), "y".into()),
            TxnOp::Write(b.clone(), "y".into()),
        ],
    );
    net.run(3);
    assert_eq!(net.group(1).prepared_count(), 1);
    assert_eq!(net.group(2).prepared_count(), 1);
    let early = step_outputs(&mut net, 3, Addr::Group(1), Msg::Wound { txn: id });
    assert!(
        !proposes_decision(&early, false),
        "an abort for a wound while no prepare of it waits: {early:?}"
    );
    net.outputs(3, early);
    let vote = held.borrow().first().cloned().expect("group 2 voted");
    let voted = step_outputs(&mut net, 3, Addr::Group(2), vote);
    assert!(
        proposes_decision(&voted, true),
        "commit proposed: {voted:?}"
    );
    // Even with a (late) notice that its prepare waited at group 2.
    let waited = step_outputs(&mut net, 3, Addr::Group(2), Msg::PrepareWaits { txn: id });
    assert!(!proposes_decision(&waited, false), "{waited:?}");
    let wounded = step_outputs(&mut net, 3, Addr::Group(1), Msg::Wound { txn: id });
    assert!(
        !proposes_decision(&wounded, false),
        "an abort proposed after the commit: {wounded:?}"
    );
    net.drop = Box::new(|_, _, _| false);
    net.outputs(3, voted);
    net.outputs(3, wounded);
    net.run(1);
    assert!(matches!(net.reply_to(id), Some(TxnReply::Committed { .. })));
    let wounded = step_outputs(&mut net, 3, Addr::Group(1), Msg::Wound { txn: id });
    assert!(
        !proposes_decision(&wounded, false),
        "an abort proposed after the logged commit: {wounded:?}"
    );
    net.outputs(3, wounded);
    net.run(10);
    assert_eq!(net.value(&a), (s("y"), 1));
    assert_eq!(net.value(&b), (s("y"), 1));
    assert_eq!(net.group(3).coordinator_records(), 0, "forgotten");
}

/// A client re-routes a transaction to the group that owns its keys, which runs it on the
/// fast path; a late abort decision of the id's earlier attempt (another coordinator's)
/// then arrives while the `Local` record is proposed. It is not about that attempt: the
/// attempt keeps its locks (a younger transaction must not read what the record is about to
/// overwrite), its client is not told "aborted", and the record commits. Found by the
/// simulator (seed 8093 of 2PL wound-wait): the record applied after its locks were gone.
#[test]
fn a_late_abort_decision_leaves_a_fast_path_attempt_of_the_same_id_alone() {
    let mut net = Net::new(2, Cc::TwoPl, Deadlock::WoundWait);
    let k = net.key_of(2, 0);
    let id = txn(4, 4);
    let req = TxnRequest {
        id,
        age: age(1, id),
        ops: vec![TxnOp::Write(k.clone(), "local".into())],
    };
    let proposed = step_outputs(&mut net, 2, Addr::Client(4), Msg::Txn(req));
    assert!(
        proposed
            .iter()
            .any(|o| matches!(o, Output::Propose(GroupCmd::Local { .. }))),
        "the fast path proposes its record: {proposed:?}"
    );
    let late = Msg::Decision {
        txn: id,
        commit: false,
        results: vec![],
    };
    let outs = step_outputs(&mut net, 2, Addr::Group(1), late);
    assert!(
        !outs.iter().any(|o| matches!(o,
            Output::Send { to: Addr::Client(_), msg: Msg::Reply { reply, .. } }
                if reply.is_definite_failure())),
        "the fast-path attempt's client was told it failed: {outs:?}"
    );
    assert_eq!(net.group(2).locked_keys(), 1, "the attempt keeps its lock");
    // A younger transaction's read of the key waits for the record.
    let reader = txn(5, 1);
    let read = deliver(
        &mut net,
        2,
        Addr::Group(1),
        Msg::Read {
            txn: reader,
            age: age(9, reader),
            keys: vec![k.clone()],
        },
    );
    assert!(
        !read
            .iter()
            .any(|(_, m)| matches!(m, Msg::ReadReply { result: Ok(_), .. })),
        "a read past the proposed record's lock: {read:?}"
    );
    net.outputs(2, proposed);
    net.outputs(2, outs);
    net.run(3);
    assert!(
        matches!(net.reply_to(id), Some(TxnReply::Committed { .. })),
        "{:?}",
        net.reply_to(id)
    );
    assert_eq!(net.value(&k), (s("local"), 1));
}

/// The same for a prepare: a client re-routed an id, and the second coordinator's Prepare of
/// it is proposed at a participant when a late abort decision of the first attempt (another
/// coordinator's) arrives there. The proposed prepare keeps its exclusive lock: a younger
/// read of the key must not be answered with the value that prepare may overwrite (found by
/// the simulator's late-prepares test, seed 2129 of 2PL: a bank read summing to 403).
#[test]
fn a_late_abort_decision_leaves_another_coordinators_proposed_prepare_alone() {
    let mut net = Net::new(3, Cc::TwoPl, Deadlock::WoundWait);
    let k = net.key_of(2, 0);
    let id = txn(3, 11);
    let proposed = step_outputs(
        &mut net,
        2,
        Addr::Group(3),
        Msg::Prepare {
            txn: id,
            age: age(1, id),
            reads: vec![],
            writes: vec![WriteOp::Put(k.clone(), "97".into())],
        },
    );
    assert!(
        proposed
            .iter()
            .any(|o| matches!(o, Output::Propose(GroupCmd::Prepare { .. }))),
        "the prepare is proposed: {proposed:?}"
    );
    let late = Msg::Decision {
        txn: id,
        commit: false,
        results: vec![],
    };
    let outs = step_outputs(&mut net, 2, Addr::Group(1), late);
    assert_eq!(
        net.group(2).locked_keys(),
        1,
        "the proposed prepare keeps its lock"
    );
    let reader = txn(5, 10);
    let read = deliver(
        &mut net,
        2,
        Addr::Group(3),
        Msg::Read {
            txn: reader,
            age: age(9, reader),
            keys: vec![k.clone()],
        },
    );
    assert!(
        !read
            .iter()
            .any(|(_, m)| matches!(m, Msg::ReadReply { result: Ok(_), .. })),
        "a read past the proposed prepare's lock: {read:?}"
    );
    net.outputs(2, proposed);
    net.outputs(2, outs);
    net.run(1);
    assert_eq!(
        net.group(2).prepared_count(),
        1,
        "prepared for coordinator 3"
    );
}

/// A leader change between a transaction's Read and a late copy of that Read: the new leader
/// serves the copy under a fresh shared lock, after an older transaction wrote the key in
/// between, and the Prepare that follows carries the version read at the first leader. Its
/// lock is held, but its read is stale: it must be refused, or the transaction commits on a
/// value that was overwritten (a write skew, simulator seed 376 of 2PL wound-wait).
#[test]
fn a_prepare_whose_read_was_overwritten_across_a_leader_change_is_refused() {
    let mut net = Net::new(1, Cc::TwoPl, Deadlock::WoundWait);
    let (a, b) = (net.key_of(1, 0), net.key_of(1, 1));
    let (older, younger) = (txn(1, 1), txn(2, 50));
    let read = Msg::Read {
        txn: younger,
        age: age(50, younger),
        keys: vec![a.clone()],
    };
    let coordinator = Addr::Group(2);
    let sent = deliver(&mut net, 1, coordinator, read.clone());
    assert!(
        sent.iter().any(|(_, m)| matches!(m,
            Msg::ReadReply { result: Ok(r), .. } if r[0].1.version == 0)),
        "the first read: {sent:?}"
    );
    // The leader changes (the shared lock dies with the old leader's memory), and the older
    // transaction writes a.
    net.groups
        .get_mut(&1)
        .and_then(|g| g.as_mut())
        .expect("up")
        .become_leader();
    net.run(3);
    net.submit(1, older, vec![TxnOp::Write(a.clone(), "o".into())]);
    net.run(3);
    assert!(
        matches!(net.reply_to(older), Some(TxnReply::Committed { .. })),
        "{:?}",
        net.reply_to(older)
    );
    assert_eq!(net.value(&a), (s("o"), 1));
    // A late copy of the Read takes a fresh lock at the new leader.
    let sent = deliver(&mut net, 1, coordinator, read);
    assert!(
        sent.iter().any(|(_, m)| matches!(m,
            Msg::ReadReply { result: Ok(r), .. } if r[0].1.version == 1)),
        "the late copy: {sent:?}"
    );
    // The coordinator prepares with the version of the first read.
    let outs = step_outputs(
        &mut net,
        1,
        coordinator,
        Msg::Prepare {
            txn: younger,
            age: age(50, younger),
            reads: vec![(a.clone(), 0)],
            writes: vec![WriteOp::Put(b.clone(), "y".into())],
        },
    );
    let mut votes = Vec::new();
    let mut pending: Vec<Output> = outs;
    for _ in 0..10 {
        let mut next = Vec::new();
        for o in pending {
            match o {
                Output::Propose(cmd) => next.extend(
                    net.groups
                        .get_mut(&1)
                        .and_then(|g| g.as_mut())
                        .expect("up")
                        .step(Input::Apply(cmd)),
                ),
                Output::Send {
                    msg: Msg::Vote { txn, vote },
                    ..
                } if txn == younger => votes.push(vote),
                _ => {}
            }
        }
        if next.is_empty() {
            break;
        }
        pending = next;
    }
    assert!(
        matches!(votes.as_slice(), [Err(_)]),
        "a prepare whose read was overwritten must vote no: {votes:?}"
    );
    assert_eq!(net.group(1).prepared_count(), 0, "prepared on a stale read");
    assert_eq!(net.value(&b), (None, 0));
}
