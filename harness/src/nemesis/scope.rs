//! Where a fault lands in sharded paxos-kv (`--nemesis-scope`): every process, the shard
//! controller's group, one replica group, or the group coordinating transactions now.
//!
//! A scope picks a group; `--nemesis-targets` and `--partition-shapes` then pick nodes and cuts
//! inside it, as Jepsen's node specs do inside the nodes a test has. So `--nemesis kill
//! --nemesis-scope controller --nemesis-targets leader` kills the controller's leader, and
//! `--nemesis partition --nemesis-scope group:2 --partition-shapes halves` splits group 2.
//!
//! This module is the pure part: parsing, which group, which nodes, which cuts, all from the
//! seeded generator. The nemesis resolves a fault's group when it injects it (the leader, and
//! which group coordinates, are whoever they are then) and records the group in `faults.json`,
//! whose nodes and cuts a replay injects as they were.

use super::{Shape, Target};
use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeSet;

/// Which processes a fault may hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every process (the default, and the only scope of an unsharded run). In a sharded run a
    /// fault aimed at "the leader" first picks a group (the controller's or a replica group's)
    /// and hits that group's leader: the highest ballot of all groups means nothing.
    Any,
    /// The shard controller's group.
    Controller,
    /// One replica group: a random one per fault (None), or the named one (1-based).
    Group(Option<usize>),
    /// The replica group coordinating transactions now; faults aimed at it always include its
    /// leader (see [`pick_group`] for how the group is found).
    Coordinator,
}

impl Scope {
    /// Its name in `--nemesis-scope`.
    pub fn name(self) -> String {
        match self {
            Scope::Any => "any".into(),
            Scope::Controller => "controller".into(),
            Scope::Group(None) => "group".into(),
            Scope::Group(Some(g)) => format!("group:{g}"),
            Scope::Coordinator => "coordinator".into(),
        }
    }
}

/// As its name in `--nemesis-scope`.
impl serde::Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

/// Parses `--nemesis-scope`: a comma list of any, controller, group, group:N, coordinator
/// (each fault draws one of them). A scope named twice counts once.
pub fn parse_scopes(s: &str) -> Result<Vec<Scope>> {
    let mut scopes = Vec::new();
    for part in s.split(',').map(str::trim) {
        let scope = match part {
            "any" => Scope::Any,
            "controller" => Scope::Controller,
            "group" => Scope::Group(None),
            "coordinator" => Scope::Coordinator,
            other => match other.strip_prefix("group:").map(str::parse::<usize>) {
                Some(Ok(g)) if g > 0 => Scope::Group(Some(g)),
                _ => bail!(
                    "--nemesis-scope: unknown scope {other:?}; expected any, controller, group, \
                     group:N (N from 1, a replica group), coordinator, or a comma list of them"
                ),
            },
        };
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    Ok(scopes)
}

/// How a sharded run's processes are grouped: group 0 is the controller, then `groups` replica
/// groups, `per_group` processes each, numbered as one cluster (group g is gM..gM+M-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardLayout {
    pub groups: usize,
    pub per_group: usize,
}

impl ShardLayout {
    /// The process indices of group `g` (0: the controller).
    pub fn members(&self, g: usize) -> Vec<usize> {
        (g * self.per_group..(g + 1) * self.per_group).collect()
    }

    /// Every process of the run.
    pub fn processes(&self) -> usize {
        (self.groups + 1) * self.per_group
    }

    /// Group `g` as people read it: `controller`, `g2`.
    pub fn group_name(g: usize) -> String {
        if g == 0 {
            "controller".into()
        } else {
            format!("g{g}")
        }
    }
}

/// The group a fault aimed by `scope` hits; None: no one group (every process may be hit).
///
/// - `any`: None, unless the fault needs a group (`needs_group`: it is aimed at a leader, or
///   isolates a group), then any group, the controller's included, uniformly.
/// - `controller`: group 0. `group:N`: N. `group`: a replica group, uniformly.
/// - `coordinator`: in this store every group coordinates the cross-shard transactions its
///   clients send it, so "the coordinator" is a group's leader while it holds coordinator
///   records (transactions it is running two-phase commit for, `/status`'s
///   `coordinator_records`). `coordinating` lists the replica groups whose leader reported
///   some at the moment of the fault: one of them, uniformly; when none did (idle, or every
///   leader unreachable), a replica group, uniformly.
pub fn pick_group(
    scope: Scope,
    layout: ShardLayout,
    needs_group: bool,
    coordinating: &[usize],
    rng: &mut ChaCha8Rng,
) -> Option<usize> {
    let any_replica_group = |rng: &mut ChaCha8Rng| rng.gen_range(1..=layout.groups.max(1));
    match scope {
        Scope::Any if needs_group => Some(rng.gen_range(0..=layout.groups)),
        Scope::Any => None,
        Scope::Controller => Some(0),
        Scope::Group(Some(g)) => Some(g),
        Scope::Group(None) => Some(any_replica_group(rng)),
        Scope::Coordinator => Some(match coordinating.choose(rng) {
            Some(&g) => g,
            None => any_replica_group(rng),
        }),
    }
}

/// The nodes a process fault hits among `members`: one, a minority, a majority or all of
/// them, or their leader (a random member when none is known). With `with_leader` (a fault
/// aimed at the coordinator) the leader, when known, is always among them.
pub fn choose_within(
    target: Target,
    members: &[usize],
    leader: Option<usize>,
    with_leader: bool,
    rng: &mut ChaCha8Rng,
) -> Vec<usize> {
    let mut all = members.to_vec();
    all.shuffle(rng);
    let m = all.len();
    let count = match target {
        Target::One => 1,
        Target::Minority => (m.max(1) - 1) / 2,
        Target::Majority => m / 2 + 1,
        Target::All => m,
        Target::Leader => return vec![leader.unwrap_or(all[0])],
    };
    if let Some(l) = leader.filter(|l| with_leader && all.contains(l)) {
        all.retain(|x| *x != l);
        all.insert(0, l);
    }
    let mut chosen: Vec<usize> = all.into_iter().take(count.max(1)).collect();
    chosen.sort_unstable();
    chosen
}

/// The undirected links a partition of shape `shape` cuts, drawn among `members` of the `n`
/// processes. Isolating one node (a random member, or their leader; the leader also for
/// `isolate-one` with `with_leader`) cuts it from every other process; `isolate-group` cuts
/// the members from every process outside them; halves, a majorities ring and a bridge split
/// the members among themselves.
pub fn partition_cuts_within(
    shape: Shape,
    members: &[usize],
    n: usize,
    leader: Option<usize>,
    with_leader: bool,
    rng: &mut ChaCha8Rng,
) -> BTreeSet<(usize, usize)> {
    let mut order = members.to_vec();
    order.shuffle(rng);
    let m = order.len();
    let mut cuts = BTreeSet::new();
    let mut cut_between = |a: &[usize], b: &[usize]| {
        for &x in a {
            for &y in b {
                if x != y {
                    cuts.insert((x.min(y), x.max(y)));
                }
            }
        }
    };
    match shape {
        Shape::IsolateOne | Shape::IsolateLeader => {
            let lonely = if shape == Shape::IsolateLeader || with_leader {
                leader.unwrap_or(order[0])
            } else {
                order[0]
            };
            let rest: Vec<usize> = (0..n).filter(|&x| x != lonely).collect();
            cut_between(&[lonely], &rest);
        }
        Shape::IsolateGroup => {
            let rest: Vec<usize> = (0..n).filter(|x| !members.contains(x)).collect();
            cut_between(members, &rest);
        }
        Shape::Halves => {
            let (a, b) = order.split_at(m / 2);
            cut_between(a, b);
        }
        Shape::Bridge => {
            // Two halves that cannot see each other, and one node in the middle that sees both.
            let (a, rest) = order.split_at(m / 2);
            let b = &rest[1.min(rest.len())..];
            cut_between(a, b);
        }
        Shape::MajoritiesRing => {
            // Nodes on a ring each see their nearest neighbours, enough for a majority, but no
            // two nodes see the same majority.
            let majority = m / 2 + 1;
            let reach = (majority - 1).div_ceil(2);
            for p in 0..m {
                for q in (p + 1)..m {
                    let d = (q - p).min(m - (q - p));
                    if d > reach || (m == 3 && d == 1 && p == 0 && q == 1) {
                        cuts.insert((order[p].min(order[q]), order[p].max(order[q])));
                    }
                }
            }
        }
    }
    cuts
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const THREE_BY_THREE: ShardLayout = ShardLayout {
        groups: 3,
        per_group: 3,
    };

    #[test]
    fn scopes_parse_and_bad_ones_are_named() {
        assert_eq!(parse_scopes("any").unwrap(), vec![Scope::Any]);
        assert_eq!(
            parse_scopes("controller, group:2,group,coordinator,group:2").unwrap(),
            vec![
                Scope::Controller,
                Scope::Group(Some(2)),
                Scope::Group(None),
                Scope::Coordinator
            ]
        );
        for bad in ["groups", "group:0", "group:x", "leader", ""] {
            let e = parse_scopes(bad).unwrap_err().to_string();
            assert!(
                e.contains("--nemesis-scope") && e.contains("group:N"),
                "{e}"
            );
        }
        for s in [
            Scope::Any,
            Scope::Controller,
            Scope::Group(None),
            Scope::Group(Some(3)),
            Scope::Coordinator,
        ] {
            assert_eq!(parse_scopes(&s.name()).unwrap(), vec![s]);
        }
    }

    /// 3 groups of 3 plus the controller: n1..n3 the controller, g1 n4..n6, g2 n7..n9,
    /// g3 n10..n12 (indices from 0 here).
    #[test]
    fn every_pick_stays_inside_its_scope() {
        let l = THREE_BY_THREE;
        assert_eq!(l.processes(), 12);
        assert_eq!(l.members(2), vec![6, 7, 8]);
        let mut groups_seen = BTreeSet::new();
        let mut coordinator_groups = BTreeSet::new();
        for seed in 0..200u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            for target in super::super::ALL_TARGETS {
                // group:2: every node from n7..n9, whatever the target.
                let g = pick_group(Scope::Group(Some(2)), l, true, &[], &mut rng).unwrap();
                assert_eq!(g, 2);
                let nodes = choose_within(target, &l.members(g), Some(7), false, &mut rng);
                assert!(!nodes.is_empty());
                assert!(nodes.iter().all(|i| (6..9).contains(i)), "{nodes:?}");
                // controller: n1..n3 only.
                let c = pick_group(Scope::Controller, l, false, &[], &mut rng).unwrap();
                let nodes = choose_within(target, &l.members(c), None, false, &mut rng);
                assert!(nodes.iter().all(|i| *i < 3), "{nodes:?}");
                // group: one replica group, never the controller, all nodes from it.
                let g = pick_group(Scope::Group(None), l, false, &[], &mut rng).unwrap();
                assert!((1..=3).contains(&g));
                groups_seen.insert(g);
                let nodes = choose_within(target, &l.members(g), None, false, &mut rng);
                assert!(nodes.iter().all(|i| l.members(g).contains(i)), "{nodes:?}");
                // coordinator: a coordinating group, and its leader always hit.
                let g = pick_group(Scope::Coordinator, l, false, &[1, 3], &mut rng).unwrap();
                assert!(g == 1 || g == 3, "{g}");
                coordinator_groups.insert(g);
                let leader = l.members(g)[1];
                let nodes = choose_within(target, &l.members(g), Some(leader), true, &mut rng);
                assert!(nodes.contains(&leader), "{target:?} {nodes:?}");
                assert!(nodes.iter().all(|i| l.members(g).contains(i)), "{nodes:?}");
            }
            // No group coordinating: a replica group all the same.
            let g = pick_group(Scope::Coordinator, l, false, &[], &mut rng).unwrap();
            assert!((1..=3).contains(&g));
            // any: no group unless the fault needs one, then the controller too.
            assert_eq!(pick_group(Scope::Any, l, false, &[], &mut rng), None);
            assert!(pick_group(Scope::Any, l, true, &[], &mut rng).unwrap() <= 3);
        }
        assert_eq!(groups_seen.len(), 3, "{groups_seen:?}");
        assert_eq!(coordinator_groups.len(), 2, "{coordinator_groups:?}");
        // The sizes are the group's, not the cluster's.
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let m = l.members(1);
        assert_eq!(
            choose_within(Target::Majority, &m, None, false, &mut rng).len(),
            2
        );
        assert_eq!(
            choose_within(Target::Minority, &m, None, false, &mut rng).len(),
            1
        );
        assert_eq!(choose_within(Target::All, &m, None, false, &mut rng), m);
        assert_eq!(
            choose_within(Target::Leader, &m, Some(4), false, &mut rng),
            vec![4]
        );
    }

    #[test]
    fn partitions_split_or_isolate_the_group_they_aim_at() {
        let l = THREE_BY_THREE;
        let n = l.processes();
        let g2 = l.members(2);
        let outside = |a: usize| !g2.contains(&a);
        for seed in 0..50u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            // Within the group: every cut joins two of its members.
            for shape in [Shape::Halves, Shape::Bridge, Shape::MajoritiesRing] {
                let cuts = partition_cuts_within(shape, &g2, n, None, false, &mut rng);
                assert!(!cuts.is_empty(), "{shape:?}");
                assert!(
                    cuts.iter().all(|(a, b)| g2.contains(a) && g2.contains(b)),
                    "{shape:?} {cuts:?}"
                );
            }
            // The group from the rest: every member from every outsider, nothing inside.
            let cuts = partition_cuts_within(Shape::IsolateGroup, &g2, n, None, false, &mut rng);
            assert_eq!(cuts.len(), 3 * 9);
            assert!(cuts.iter().all(|(a, b)| outside(*a) != outside(*b)));
            // Its leader from everyone.
            let cuts =
                partition_cuts_within(Shape::IsolateLeader, &g2, n, Some(7), false, &mut rng);
            assert_eq!(cuts.len(), n - 1);
            assert!(cuts.iter().all(|(a, b)| *a == 7 || *b == 7));
            // One member, a random one, or the leader when aimed at the coordinator.
            let cuts = partition_cuts_within(Shape::IsolateOne, &g2, n, Some(8), true, &mut rng);
            assert!(cuts.iter().all(|(a, b)| *a == 8 || *b == 8));
            let cuts = partition_cuts_within(Shape::IsolateOne, &g2, n, None, false, &mut rng);
            let lonely: BTreeSet<usize> = g2
                .iter()
                .copied()
                .filter(|x| cuts.iter().all(|(a, b)| a == x || b == x))
                .collect();
            assert_eq!(lonely.len(), 1, "{cuts:?}");
        }
    }
}
