//! The coordinated schedule of `--nemesis all`: one fault episode at a time, dealt from a seeded
//! deck of episode classes, instead of one independent schedule per kind of fault.
//!
//! Why: independent schedules overlap at random and cancel each other out. Measured on the
//! planted bugs (campaigns/detection.toml): an isolated leader was killed in the same instant it
//! was cut off, so nobody read from a deposed leader; long stretches had no quorum at all (a
//! pause, a kill and a partition at once), so no operation completed; and a majority crash, the
//! one kill that loses what was acknowledged but not yet durable, was one target of five for
//! one nemesis of four. Jepsen's lesson is to mix targets with weights and to combine faults
//! deliberately. Here every round of the deck holds each class once, in a seeded order, so a
//! 30 s test meets a leader isolation, a quorum crash, a leader crash and the rest; between
//! episodes the cluster has a quiet gap to recover in, so clients observe what the fault did.
//!
//! This module is the pure part: which class, which aims (targets before the leader is known)
//! and which timings. Which nodes an aim hits is resolved when the fault is injected, because
//! the leader is who leads then.

use super::{BehaviourKind, FaultKind, Shape, Target};
use crate::net::Behaviour;
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// The classes an episode is drawn from; every round of the deck deals each allowed class once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EpisodeClass {
    /// Cut the leader off from everyone else: a deposed leader that still serves, a new leader
    /// elected while accepts are in flight; alone, or inside a slow network, so that the cut
    /// also strands what the old leader had sent but nobody had received yet.
    IsolateLeader,
    /// Crash a majority or every node at once: whatever was acknowledged but not durable is lost.
    QuorumCrash,
    /// Crash or pause the leader: a leader change with accepts in flight.
    LeaderCrash,
    /// The other partition shapes: isolate one node, halves, majorities ring, bridge (and,
    /// sharded, isolate a group).
    OtherPartition,
    /// The rest: a network fault (alone, or with the leader crashed in the middle of it), and
    /// pauses or crashes of one node, a minority, a majority, everyone.
    Mixed,
}

pub const ALL_CLASSES: [EpisodeClass; 5] = [
    EpisodeClass::IsolateLeader,
    EpisodeClass::QuorumCrash,
    EpisodeClass::LeaderCrash,
    EpisodeClass::OtherPartition,
    EpisodeClass::Mixed,
];

/// What one fault hits, before the leader is known.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Aim {
    Pause(Target),
    Kill(Target),
    Partition(Shape),
    Network(Target, Behaviour),
}

impl Aim {
    pub fn kind(&self) -> FaultKind {
        match self {
            Aim::Pause(_) => FaultKind::Pause,
            Aim::Kill(_) => FaultKind::Kill,
            Aim::Partition(_) => FaultKind::Partition,
            Aim::Network(..) => FaultKind::Network,
        }
    }
}

/// One fault of an episode: injected `offset_ms` after the episode's first fault (0 for the
/// first), held `hold_ms`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlannedFault {
    pub aim: Aim,
    pub offset_ms: u64,
    pub hold_ms: u64,
}

/// One episode: a quiet gap, then its first fault, then the faults planned with it (each
/// `offset_ms` after the first): the leader crashed inside a network fault, or the leader
/// crashed again and again. The next episode's quiet gap starts when all of them are undone.
#[derive(Clone, Debug, PartialEq)]
pub struct Episode {
    pub class: EpisodeClass,
    pub wait_ms: u64,
    pub first: PlannedFault,
    pub then: Vec<PlannedFault>,
}

impl Episode {
    /// From the first fault's injection to the last undo.
    pub fn span_ms(&self) -> u64 {
        std::iter::once(&self.first)
            .chain(&self.then)
            .map(|f| f.offset_ms + f.hold_ms)
            .max()
            .unwrap_or(0)
    }
}

/// What an episode adds to its first fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Extra {
    Nothing,
    /// Crash the leader while the first fault (a network fault) is held: a slow or lossy
    /// network keeps accepts in flight longer, so the leader change meets more of them.
    CrashLeaderDuring,
    /// Cut the leader off while the first fault (a slow network) is held. Unlike a crash, a cut
    /// also loses what the leader sent that is still on the wire (bytes a crashed process had
    /// written are delivered all the same): the followers miss the latest commit notices, so
    /// a leader change meets a wider gap between what the old leader acknowledged and what the
    /// next one knows to be chosen.
    IsolateLeaderDuring,
    /// The first fault cuts the leader off; once a new leader is elected and the cut healed,
    /// cut whoever leads then, and so on: one episode, several leader changes, each deposed
    /// leader kept alive with its state (a crash would rebuild it from its log).
    LeaderFlap,
    /// The first fault crashes everyone briefly; once they are back, elected and writing,
    /// crash everyone again: two chances to lose what was acknowledged but not durable, and
    /// a recovery that is itself interrupted.
    CrashAllAgain,
    /// The first fault is a short leader crash; crash whoever leads next, twice more, each
    /// after the previous one restarted: every election after the first may be won by a node
    /// that just restarted and has not caught up (a lagging leader).
    LeaderChurn,
}

impl Extra {
    /// The fault the extra injects, which must be allowed too.
    fn needs(self) -> Option<Aim> {
        match self {
            Extra::Nothing => None,
            Extra::CrashLeaderDuring | Extra::LeaderChurn => Some(Aim::Kill(Target::Leader)),
            Extra::CrashAllAgain => Some(Aim::Kill(Target::All)),
            Extra::IsolateLeaderDuring | Extra::LeaderFlap => {
                Some(Aim::Partition(Shape::IsolateLeader))
            }
        }
    }
}

/// How many leader crashes a churn episode holds: one per `CHURN_SLOT_MS` of its hold, at
/// least `CHURN_CRASHES_MIN` and at most `CHURN_CRASHES_MAX`.
pub const CHURN_CRASHES_MIN: u64 = 3;
pub const CHURN_CRASHES_MAX: u64 = 5;
pub const CHURN_SLOT_MS: u64 = 800;
/// How many leader cuts a flap episode holds (each long enough for an election and for reads
/// of the deposed leader).
pub const FLAP_CUTS: u64 = 2;

/// What may be drawn: the `--nemesis`, `--nemesis-targets`, `--partition-shapes` and
/// `--network-behaviours` choices, and the interval and hold ranges.
#[derive(Clone, Debug)]
pub struct Allowed {
    pub kinds: Vec<FaultKind>,
    pub targets: Vec<Target>,
    pub shapes: Vec<Shape>,
    pub behaviours: Vec<BehaviourKind>,
    pub interval_ms: (u64, u64),
    pub hold_ms: (u64, u64),
}

impl Allowed {
    fn aim_allowed(&self, aim: &Aim) -> bool {
        self.kinds.contains(&aim.kind())
            && match aim {
                Aim::Pause(t) | Aim::Kill(t) | Aim::Network(t, _) => self.targets.contains(t),
                Aim::Partition(s) => self.shapes.contains(s),
            }
    }
}

/// One way an episode of a class can go: its first fault's aim, with a weight, and whether the
/// leader is crashed in the middle of it.
#[derive(Clone, Copy, Debug)]
struct Template {
    weight: u32,
    first: AimTemplate,
    extra: Extra,
    /// Used only when no other template of its class is allowed.
    fallback: bool,
}

/// An aim whose network behaviour is drawn when the episode is.
#[derive(Clone, Copy, Debug)]
enum AimTemplate {
    Pause(Target),
    Kill(Target),
    Partition(Shape),
    Network(Target),
}

impl AimTemplate {
    /// With a placeholder behaviour: what matters for filtering is kind and target.
    fn probe(self) -> Aim {
        match self {
            AimTemplate::Pause(t) => Aim::Pause(t),
            AimTemplate::Kill(t) => Aim::Kill(t),
            AimTemplate::Partition(s) => Aim::Partition(s),
            AimTemplate::Network(t) => Aim::Network(t, Behaviour::Loss { percent: 0 }),
        }
    }
}

fn templates(class: EpisodeClass) -> Vec<Template> {
    let t = |weight, first| Template {
        weight,
        first,
        extra: Extra::Nothing,
        fallback: false,
    };
    use AimTemplate as A;
    match class {
        // Measured on forget-accepted (campaigns/detection.toml, register, 10 seeds each):
        // isolating, crashing or pausing the leader alone exposed it in about 12-21% of the
        // leader changes, because the old leader's last commit notice is usually on its way
        // already; inside a slow network the cut strands it.
        EpisodeClass::IsolateLeader => vec![
            t(1, A::Partition(Shape::IsolateLeader)),
            Template {
                extra: Extra::LeaderFlap,
                ..t(2, A::Partition(Shape::IsolateLeader))
            },
            Template {
                weight: 1,
                first: A::Network(Target::All),
                extra: Extra::IsolateLeaderDuring,
                fallback: false,
            },
        ],
        // Everyone down loses every write not yet durable; a majority down loses them only
        // when the restarted nodes form the next quorum without the survivor, which is luck
        // (measured on ack-before-persist: 9 of 16 majority crashes exposed it, 9 of 9 crashes
        // of all). So this class crashes everyone, a majority only when `all` is not allowed;
        // majority crashes come in the mixed class. Re-measured with the leader flaps: 7 of 10
        // seeds, each miss with a single crash of all in its 30 s; so the crash of all comes
        // twice, the second once the cluster is back and writing.
        EpisodeClass::QuorumCrash => vec![
            Template {
                extra: Extra::CrashAllAgain,
                ..t(1, A::Kill(Target::All))
            },
            Template {
                fallback: true,
                ..t(1, A::Kill(Target::Majority))
            },
        ],
        // A leader change matters most when accepts are in flight or the next leader lags:
        // the leader is crashed in the middle of a slow or lossy network (Jepsen's partition +
        // kill, with slowness instead of a cut so that the cluster keeps a quorum), or crashed
        // three times running.
        EpisodeClass::LeaderCrash => vec![
            t(1, A::Kill(Target::Leader)),
            t(1, A::Pause(Target::Leader)),
            Template {
                extra: Extra::LeaderChurn,
                ..t(3, A::Kill(Target::Leader))
            },
            Template {
                weight: 3,
                first: A::Network(Target::All),
                extra: Extra::CrashLeaderDuring,
                fallback: false,
            },
        ],
        EpisodeClass::OtherPartition => vec![
            t(1, A::Partition(Shape::IsolateOne)),
            t(1, A::Partition(Shape::Halves)),
            t(1, A::Partition(Shape::MajoritiesRing)),
            t(1, A::Partition(Shape::Bridge)),
            // Drawn only in sharded runs (the only ones that allow the shape): a whole group,
            // the controller's or a replica group's, cut off from the rest.
            t(1, A::Partition(Shape::IsolateGroup)),
        ],
        EpisodeClass::Mixed => vec![
            t(1, A::Network(Target::One)),
            t(1, A::Network(Target::Leader)),
            t(1, A::Network(Target::All)),
            Template {
                weight: 1,
                first: A::Network(Target::All),
                extra: Extra::CrashLeaderDuring,
                fallback: false,
            },
            t(1, A::Pause(Target::One)),
            t(1, A::Pause(Target::Minority)),
            t(1, A::Pause(Target::Majority)),
            t(1, A::Pause(Target::All)),
            t(1, A::Kill(Target::One)),
            t(1, A::Kill(Target::Minority)),
            t(1, A::Kill(Target::Majority)),
        ],
    }
}

/// Deals episodes: each round of the deck is a seeded order of every class that has at least
/// one allowed template.
#[derive(Clone, Debug)]
pub struct EpisodePlanner {
    allowed: Allowed,
    /// Every class with something allowed in it, and its allowed templates.
    classes: Vec<(EpisodeClass, Vec<Template>)>,
    /// What is left of this round, dealt from the back.
    deck: Vec<usize>,
}

impl EpisodePlanner {
    /// None when nothing at all is allowed (e.g. `--nemesis-targets` rules out every template).
    pub fn new(allowed: Allowed) -> Option<Self> {
        let classes: Vec<(EpisodeClass, Vec<Template>)> = ALL_CLASSES
            .iter()
            .filter_map(|&class| {
                let (preferred, fallbacks): (Vec<Template>, Vec<Template>) = templates(class)
                    .into_iter()
                    .filter(|t| {
                        allowed.aim_allowed(&t.first.probe())
                            && t.extra.needs().is_none_or(|aim| allowed.aim_allowed(&aim))
                    })
                    .partition(|t| !t.fallback);
                let ok = if preferred.is_empty() {
                    fallbacks
                } else {
                    preferred
                };
                (!ok.is_empty()).then_some((class, ok))
            })
            .collect();
        (!classes.is_empty()).then_some(EpisodePlanner {
            allowed,
            classes,
            deck: Vec::new(),
        })
    }

    /// The classes this planner deals, each once per round.
    pub fn classes(&self) -> Vec<EpisodeClass> {
        self.classes.iter().map(|(c, _)| *c).collect()
    }

    /// The next episode.
    pub fn next(&mut self, rng: &mut ChaCha8Rng) -> Episode {
        if self.deck.is_empty() {
            self.deck = (0..self.classes.len()).collect();
            self.deck.shuffle(rng);
        }
        let index = self.deck.pop().expect("refilled above; classes not empty");
        let (class, templates) = &self.classes[index];
        let template = *templates
            .choose_weighted(rng, |t| t.weight)
            .expect("templates not empty, weights positive");
        let (lo, hi) = self.allowed.interval_ms;
        let wait_ms = rng.gen_range(lo..=hi);
        let (lo, hi) = self.allowed.hold_ms;
        let hold_ms = rng.gen_range(lo..=hi);
        let aim = match template.first {
            AimTemplate::Pause(t) => Aim::Pause(t),
            AimTemplate::Kill(t) => Aim::Kill(t),
            AimTemplate::Partition(s) => Aim::Partition(s),
            AimTemplate::Network(t) => {
                // Under a leader crash, only what keeps messages in flight longer: delay or
                // loss (when allowed).
                let slowing: Vec<BehaviourKind> = self
                    .allowed
                    .behaviours
                    .iter()
                    .copied()
                    .filter(|b| *b != BehaviourKind::Duplicate)
                    .collect();
                let slowed = matches!(
                    template.extra,
                    Extra::CrashLeaderDuring | Extra::IsolateLeaderDuring
                );
                let kinds = if slowed && !slowing.is_empty() {
                    &slowing
                } else {
                    &self.allowed.behaviours
                };
                Aim::Network(t, super::choose_behaviour(kinds, rng))
            }
        };
        let crash_leader = |offset_ms, hold_ms| PlannedFault {
            aim: Aim::Kill(Target::Leader),
            offset_ms,
            hold_ms,
        };
        let mut first = PlannedFault {
            aim,
            offset_ms: 0,
            hold_ms,
        };
        let then = match template.extra {
            Extra::Nothing => Vec::new(),
            Extra::CrashLeaderDuring => {
                // In the first half of the hold, once the network fault has had time to bite;
                // held at most to the end of the first fault, so the episode ends as one.
                let offset_ms = rng.gen_range(hold_ms / 4..=hold_ms / 2);
                let room = hold_ms - offset_ms;
                vec![crash_leader(offset_ms, rng.gen_range(room / 2..=room))]
            }
            Extra::IsolateLeaderDuring => {
                // As for the crash above: once the slowness has bitten, ended with it. The cut
                // is held long enough for an election and for reads of the deposed leader.
                let offset_ms = rng.gen_range(hold_ms / 4..=hold_ms / 2);
                let room = hold_ms - offset_ms;
                vec![PlannedFault {
                    aim: Aim::Partition(Shape::IsolateLeader),
                    offset_ms,
                    hold_ms: rng.gen_range(room * 2 / 3..=room),
                }]
            }
            Extra::LeaderChurn => {
                // The hold split in equal slots: each crash held for half to two thirds of its
                // slot, the rest of the slot left for the restart and an election.
                let count = (hold_ms / CHURN_SLOT_MS).clamp(CHURN_CRASHES_MIN, CHURN_CRASHES_MAX);
                let slot_ms = hold_ms / count;
                let crash = |k: u64| {
                    crash_leader(k * slot_ms, rng.gen_range(slot_ms / 2..=slot_ms * 2 / 3))
                };
                let mut crashes: Vec<PlannedFault> = (0..count).map(crash).collect();
                first = crashes.remove(0);
                crashes
            }
            Extra::CrashAllAgain => {
                // Two slots: each crash held a third to a half of its slot, the rest for the
                // restart, an election and writes worth losing.
                let slot_ms = hold_ms / 2;
                let crash = |k: u64| PlannedFault {
                    aim: Aim::Kill(Target::All),
                    offset_ms: k * slot_ms,
                    hold_ms: rng.gen_range(slot_ms / 3..=slot_ms / 2),
                };
                let mut crashes: Vec<PlannedFault> = (0..2).map(crash).collect();
                first = crashes.remove(0);
                crashes
            }
            Extra::LeaderFlap => {
                // The same slots for cuts: each held two thirds to three quarters of its slot,
                // the rest for the deposed leader to rejoin before the next leader is cut.
                let slot_ms = hold_ms / FLAP_CUTS;
                let cut = |k: u64| PlannedFault {
                    aim: Aim::Partition(Shape::IsolateLeader),
                    offset_ms: k * slot_ms,
                    hold_ms: rng.gen_range(slot_ms * 2 / 3..=slot_ms * 3 / 4),
                };
                let mut cuts: Vec<PlannedFault> = (0..FLAP_CUTS).map(cut).collect();
                first = cuts.remove(0);
                cuts
            }
        };
        Episode {
            class: *class,
            wait_ms,
            first,
            then,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use std::collections::BTreeSet;

    fn all_allowed() -> Allowed {
        Allowed {
            kinds: vec![
                FaultKind::Pause,
                FaultKind::Kill,
                FaultKind::Partition,
                FaultKind::Network,
            ],
            targets: super::super::ALL_TARGETS.to_vec(),
            shapes: super::super::ALL_SHAPES.to_vec(),
            behaviours: super::super::ALL_BEHAVIOURS.to_vec(),
            interval_ms: (1500, 3000),
            hold_ms: (2500, 4000),
        }
    }

    fn target_of(aim: &Aim) -> Option<Target> {
        match aim {
            Aim::Pause(t) | Aim::Kill(t) | Aim::Network(t, _) => Some(*t),
            Aim::Partition(_) => None,
        }
    }

    /// The properties the generic schedule's detection power rests on (campaigns/detection.toml).
    #[test]
    fn every_round_deals_each_class_once_and_episodes_do_not_overlap() {
        let allowed = all_allowed();
        let mut targets_seen = BTreeSet::new();
        let mut shapes_seen = BTreeSet::new();
        let mut combos = 0;
        let mut churns = 0;
        let mut cuts_in_slow_network = 0;
        let mut flaps = 0;
        let mut crash_all_twice = 0;
        let mut holds = BTreeSet::new();
        for seed in 0..50u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut planner = EpisodePlanner::new(allowed.clone()).expect("all allowed");
            assert_eq!(planner.classes(), ALL_CLASSES.to_vec());
            // Two rounds: each is a permutation of the classes, so within any 5 consecutive
            // episodes from a round's start there is a leader isolation and a quorum crash.
            let mut first_round_order = Vec::new();
            for round in 0..2 {
                let episodes: Vec<Episode> = (0..ALL_CLASSES.len())
                    .map(|_| planner.next(&mut rng))
                    .collect();
                let classes: BTreeSet<EpisodeClass> = episodes.iter().map(|e| e.class).collect();
                assert_eq!(
                    classes.len(),
                    ALL_CLASSES.len(),
                    "seed {seed} round {round}"
                );
                if round == 0 {
                    first_round_order = episodes.iter().map(|e| e.class).collect();
                }
                for e in &episodes {
                    assert!((1500..=3000).contains(&e.wait_ms), "{e:?}");
                    assert!(e.span_ms() <= 4000, "{e:?}");
                    assert_eq!(e.first.offset_ms, 0);
                    holds.insert(e.first.hold_ms);
                    if e.then.is_empty() {
                        assert!((2500..=4000).contains(&e.first.hold_ms), "{e:?}");
                    }
                    // What each class promises about its first fault.
                    match e.class {
                        EpisodeClass::IsolateLeader => assert!(
                            e.first.aim == Aim::Partition(Shape::IsolateLeader)
                                || (matches!(e.first.aim, Aim::Network(Target::All, _))
                                    && e.then.len() == 1
                                    && e.then[0].aim == Aim::Partition(Shape::IsolateLeader)),
                            "{e:?}"
                        ),
                        EpisodeClass::QuorumCrash => {
                            assert_eq!(e.first.aim, Aim::Kill(Target::All), "{e:?}")
                        }
                        EpisodeClass::LeaderCrash => assert!(
                            matches!(
                                e.first.aim,
                                Aim::Kill(Target::Leader) | Aim::Pause(Target::Leader)
                            ) || (matches!(e.first.aim, Aim::Network(Target::All, _))
                                && e.then.len() == 1),
                            "{e:?}"
                        ),
                        EpisodeClass::OtherPartition => assert!(
                            matches!(e.first.aim, Aim::Partition(s) if s != Shape::IsolateLeader),
                            "{e:?}"
                        ),
                        EpisodeClass::Mixed => {
                            assert!(!matches!(e.first.aim, Aim::Partition(_)), "{e:?}")
                        }
                    }
                    if let Some(t) = target_of(&e.first.aim) {
                        targets_seen.insert(t.as_str());
                    }
                    if let Aim::Partition(s) = e.first.aim {
                        shapes_seen.insert(s.as_str());
                    }
                    // A combination is only ever the leader crashed or cut off inside a network
                    // fault, and it ends no later than the fault it sits in: episodes never
                    // overlap. Faults overlap only in the deliberate combinations (undone before
                    // the network fault); a churn's crashes follow one another with room for a
                    // restart and an election between them.
                    let mut previous_end = e.first.hold_ms;
                    for (k, d) in e.then.iter().enumerate() {
                        let cut = d.aim == Aim::Partition(Shape::IsolateLeader);
                        assert!(
                            cut || matches!(d.aim, Aim::Kill(Target::Leader | Target::All)),
                            "{e:?}"
                        );
                        assert!(d.offset_ms > 0 && d.hold_ms > 0, "{e:?}");
                        match e.first.aim {
                            Aim::Network(_, b) => {
                                if cut {
                                    cuts_in_slow_network += 1;
                                    // Long enough for an election and reads of the deposed leader.
                                    assert!(d.hold_ms >= 400, "{e:?}");
                                } else {
                                    combos += 1;
                                }
                                assert_eq!(e.then.len(), 1);
                                // Slowed or lossy, never merely duplicated, when the leader crashes.
                                assert!(
                                    matches!(b, Behaviour::Delay { .. } | Behaviour::Loss { .. }),
                                    "{e:?}"
                                );
                                assert!(d.offset_ms + d.hold_ms <= e.first.hold_ms, "{e:?}");
                            }
                            Aim::Kill(Target::All) => {
                                // Everyone crashed again, after a restart and some writing.
                                assert_eq!(d.aim, Aim::Kill(Target::All), "{e:?}");
                                assert_eq!(e.then.len(), 1, "{e:?}");
                                crash_all_twice += 1;
                                assert!(d.offset_ms >= previous_end + 400, "{e:?}");
                                previous_end = d.offset_ms + d.hold_ms;
                            }
                            Aim::Kill(Target::Leader) => {
                                assert!(!cut, "{e:?}");
                                if k == 0 {
                                    churns += 1;
                                }
                                let crashes = e.then.len() as u64 + 1;
                                assert!(
                                    (CHURN_CRASHES_MIN..=CHURN_CRASHES_MAX).contains(&crashes),
                                    "{e:?}"
                                );
                                assert!(d.offset_ms >= previous_end + 200, "{e:?}");
                                previous_end = d.offset_ms + d.hold_ms;
                            }
                            Aim::Partition(Shape::IsolateLeader) => {
                                // A flap: cut after cut, each healed before the next.
                                assert!(cut, "{e:?}");
                                if k == 0 {
                                    flaps += 1;
                                }
                                assert_eq!(e.then.len() as u64, FLAP_CUTS - 1);
                                assert!(d.hold_ms >= 800, "{e:?}");
                                assert!(d.offset_ms >= previous_end + 250, "{e:?}");
                                previous_end = d.offset_ms + d.hold_ms;
                            }
                            _ => {
                                panic!("only network faults, leader crashes and leader cuts have company: {e:?}")
                            }
                        }
                    }
                }
            }
            // Same seed, same schedule.
            let mut again = EpisodePlanner::new(allowed.clone()).unwrap();
            let mut rng2 = ChaCha8Rng::seed_from_u64(seed);
            let replayed: Vec<EpisodeClass> = (0..5).map(|_| again.next(&mut rng2).class).collect();
            assert_eq!(replayed, first_round_order, "seed {seed}");
        }
        for t in ["one", "minority", "majority", "all", "leader"] {
            assert!(
                targets_seen.contains(t),
                "target {t} never drawn: {targets_seen:?}"
            );
        }
        assert_eq!(
            shapes_seen.len(),
            super::super::ALL_SHAPES.len(),
            "{shapes_seen:?}"
        );
        assert!(
            combos >= 5,
            "only {combos} deliberate combinations in 500 episodes"
        );
        assert!(churns >= 20, "only {churns} leader churns in 500 episodes");
        // Of 100 leader-isolation episodes in 500, a quarter sit inside a slow network and half
        // are flaps.
        assert!(
            (35..=65).contains(&flaps),
            "{flaps} leader flaps in 500 episodes"
        );
        // Every quorum-crash episode crashes everyone twice.
        assert_eq!(
            crash_all_twice, 100,
            "{crash_all_twice} double crashes of all"
        );
        assert!(
            (12..=40).contains(&cuts_in_slow_network),
            "{cuts_in_slow_network} leader cuts inside a slow network in 500 episodes"
        );
        assert!(
            holds.len() > 100,
            "holds hardly vary: {} distinct",
            holds.len()
        );
    }

    #[test]
    fn restricted_choices_drop_classes_and_never_leak() {
        // Only kills, only of the leader: one class, and every fault is a leader kill.
        let allowed = Allowed {
            kinds: vec![FaultKind::Kill, FaultKind::Partition],
            targets: vec![Target::Leader],
            shapes: vec![Shape::Halves],
            ..all_allowed()
        };
        let mut planner = EpisodePlanner::new(allowed).unwrap();
        assert_eq!(
            planner.classes(),
            vec![EpisodeClass::LeaderCrash, EpisodeClass::OtherPartition]
        );
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..40 {
            let e = planner.next(&mut rng);
            assert!(
                matches!(
                    e.first.aim,
                    Aim::Kill(Target::Leader) | Aim::Partition(Shape::Halves)
                ),
                "{e:?}"
            );
            assert!(e.then.is_empty() || e.first.aim == Aim::Kill(Target::Leader));
        }
        // Without `all`, a quorum crash is a majority crash.
        let mut majority = EpisodePlanner::new(Allowed {
            kinds: vec![FaultKind::Kill],
            targets: vec![Target::Majority],
            ..all_allowed()
        })
        .unwrap();
        assert_eq!(
            majority.classes(),
            vec![EpisodeClass::QuorumCrash, EpisodeClass::Mixed]
        );
        for _ in 0..10 {
            assert_eq!(
                majority.next(&mut rng).first.aim,
                Aim::Kill(Target::Majority)
            );
        }
        let nothing = Allowed {
            kinds: vec![FaultKind::Pause],
            targets: vec![Target::Majority],
            ..all_allowed()
        };
        assert!(EpisodePlanner::new(Allowed {
            targets: vec![],
            ..nothing.clone()
        })
        .is_none());
        // Pause of a majority is in the mixed class.
        assert_eq!(
            EpisodePlanner::new(nothing).unwrap().classes(),
            vec![EpisodeClass::Mixed]
        );
    }
}
