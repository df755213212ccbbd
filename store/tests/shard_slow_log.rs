//! A group's log that is slower than the core's re-proposal timer (issue #12: a sharded
//! list-append run read `[2 4 3 6 3 4 ...]` after a stall of about 500 ms in one group): a
//! fast-path transaction must take effect once, however long its record takes to reach the
//! log, and a record the log refuses for certain must be answered, not left hanging.

use paxos_kv::shard::config::{Controller, ControllerCmd};
use paxos_kv::shard::group::{Addr, Group, GroupCmd, GroupConfig, Input, Msg, Output};
use paxos_kv::shard::{
    AbortReason, Age, Cc, TxnId, TxnOp, TxnReply, TxnRequest, Value, ANONYMOUS_CLIENT_BIT,
    DEFAULT_SHARDS,
};

/// One group leading with every shard, its log applied by hand.
struct Slow {
    group: Group,
    /// Proposed and not yet applied, in proposal order (the log of one stable leader).
    unapplied: Vec<GroupCmd>,
    replies: Vec<(TxnId, TxnReply)>,
}

impl Slow {
    fn new(cc: Cc) -> Slow {
        let mut cfg = GroupConfig::new(1);
        cfg.cc = cc;
        let mut group = Group::new(cfg);
        group.become_leader();
        let mut slow = Slow {
            group,
            unapplied: Vec::new(),
            replies: Vec::new(),
        };
        slow.step(Input::Tick);
        slow.apply_all();
        assert!(slow.group.is_ready(), "setup: the epoch is applied");
        let mut controller = Controller::new(DEFAULT_SHARDS);
        let cfg = controller
            .apply(&ControllerCmd::Join {
                group: 1,
                members: vec![],
            })
            .expect("join");
        slow.step(Input::Message {
            from: Addr::Controller,
            msg: Msg::ConfigReply(cfg),
        });
        slow.apply_all();
        assert_eq!(slow.group.config().num, 1, "setup: config 1 applied");
        slow
    }

    fn step(&mut self, input: Input) {
        for o in self.group.step(input) {
            match o {
                Output::Propose(cmd) => self.unapplied.push(cmd),
                Output::Send {
                    to: Addr::Client(_),
                    msg: Msg::Reply { id, reply },
                } => self.replies.push((id, reply)),
                Output::Send { .. } | Output::Observe(_) => {}
            }
        }
    }

    fn apply_all(&mut self) {
        for cmd in std::mem::take(&mut self.unapplied) {
            self.step(Input::Apply(cmd));
        }
    }

    fn submit(&mut self, id: TxnId, ops: Vec<TxnOp>) {
        let req = TxnRequest {
            id,
            age: Age {
                start: id.seq,
                txn: id,
            },
            ops,
        };
        self.step(Input::Message {
            from: Addr::Client(id.client),
            msg: Msg::Txn(req),
        });
    }

    fn locals(&self) -> usize {
        self.unapplied
            .iter()
            .filter(|c| matches!(c, GroupCmd::Local { .. }))
            .count()
    }

    fn replies_to(&self, id: TxnId) -> Vec<&TxnReply> {
        self.replies
            .iter()
            .filter(|(t, _)| *t == id)
            .map(|(_, r)| r)
            .collect()
    }
}

/// An id without `client_id`/`seq`, as the harness's sharded client sends.
fn anonymous(n: u64) -> TxnId {
    TxnId {
        client: ANONYMOUS_CLIENT_BIT | n,
        seq: 1,
    }
}

fn append_survives_a_slow_log(cc: Cc) {
    let mut g = Slow::new(cc);
    let repropose = GroupConfig::new(1).timing.repropose_ticks;
    let a = anonymous(7);
    g.submit(a, vec![TxnOp::Append("la18".into(), "3".into())]);
    assert_eq!(g.locals(), 1, "{cc:?}: the append is proposed");
    // The log stalls for several re-proposal periods (a slow fsync, a starved process).
    for _ in 0..repropose * 3 {
        g.step(Input::Tick);
    }
    assert_eq!(
        g.locals(),
        1,
        "{cc:?}: a fast-path record still on its way to the log was proposed again; an \
         anonymous transaction has no exactly-once entry, so both copies would apply"
    );
    g.apply_all();
    let v = g.group.get("la18").expect("serves the key");
    assert_eq!(
        (v.value, v.version),
        (Some(Value::List(vec!["3".into()])), 1),
        "{cc:?}: the append took effect once"
    );
    assert!(
        matches!(g.replies_to(a)[..], [TxnReply::Committed { .. }]),
        "{cc:?}: one committed answer, got {:?}",
        g.replies_to(a)
    );
}

#[test]
fn a_fast_path_append_applies_once_when_the_log_is_slower_than_the_repropose_timer_occ() {
    append_survives_a_slow_log(Cc::Occ);
}

#[test]
fn a_fast_path_append_applies_once_when_the_log_is_slower_than_the_repropose_timer_2pl() {
    append_survives_a_slow_log(Cc::TwoPl);
}

/// A definite refusal by the log (an overloaded Paxos leader) answers the client and, under
/// 2PL, frees the keys for the next transaction.
fn a_definitely_dropped_record_is_answered(cc: Cc) {
    let mut g = Slow::new(cc);
    let a = anonymous(1);
    g.submit(a, vec![TxnOp::Append("k".into(), "a".into())]);
    assert_eq!(g.locals(), 1);
    g.unapplied.clear();
    g.step(Input::LocalDropped { txn: a });
    assert_eq!(
        g.replies_to(a),
        vec![&TxnReply::Aborted {
            reason: AbortReason::Overloaded
        }],
        "{cc:?}: the client learns that nothing was applied"
    );
    let b = anonymous(2);
    g.submit(b, vec![TxnOp::Append("k".into(), "b".into())]);
    g.apply_all();
    assert!(
        matches!(g.replies_to(b)[..], [TxnReply::Committed { .. }]),
        "{cc:?}: the next transaction on the key commits, got {:?}",
        g.replies_to(b)
    );
    let v = g.group.get("k").expect("serves the key");
    assert_eq!(v.value, Some(Value::List(vec!["b".into()])), "{cc:?}");
    // A drop reported after the record was applied (or for an unknown id) changes nothing.
    g.step(Input::LocalDropped { txn: b });
    assert_eq!(g.replies_to(b).len(), 1, "{cc:?}: answered once");
}

#[test]
fn a_definitely_dropped_fast_path_record_is_answered_occ() {
    a_definitely_dropped_record_is_answered(Cc::Occ);
}

#[test]
fn a_definitely_dropped_fast_path_record_is_answered_and_unlocks_2pl() {
    a_definitely_dropped_record_is_answered(Cc::TwoPl);
}

/// The simulator with every group's log slower than the re-proposal timer (records reach the
/// log up to 2.5 periods after they are proposed): every record the core proposes again on a
/// timer is then applied more than once, and every invariant must still hold. (A net for the
/// records other than `Local`: the simulator's clients carry exactly-once ids, so it does not
/// reproduce the double append itself; the tests above do.)
fn slow_log_sweep(cc: Cc) {
    use paxos_kv::shard::sim::{run, SimConfig};
    let repropose = GroupConfig::new(1).timing.repropose_ticks;
    let mut ok = 0;
    for seed in 0..40 {
        let mut c = SimConfig::new(seed, cc);
        c.max_log_delay_ticks = repropose * 5 / 2;
        // Clients wait out the slow log before retrying, as the harness's 1 s timeout does.
        c.client_timeout_ticks = c.max_log_delay_ticks * 3;
        c.heal_ticks *= 2;
        let stats = run(c).unwrap_or_else(|v| panic!("{cc} with a slow log: {v}"));
        ok += stats.txns_ok;
    }
    assert!(ok > 0, "{cc}: the slow-log runs committed nothing");
}

#[test]
fn the_simulator_keeps_every_invariant_with_a_log_slower_than_the_repropose_timer_occ() {
    slow_log_sweep(Cc::Occ);
}

#[test]
fn the_simulator_keeps_every_invariant_with_a_log_slower_than_the_repropose_timer_2pl() {
    slow_log_sweep(Cc::TwoPl);
}
