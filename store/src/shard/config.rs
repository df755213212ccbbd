//! Numbered configurations and the shard controller's state machine.
//!
//! The controller is a Paxos group whose log holds [`ControllerCmd`]s; every replica applies
//! them in log order with [`Controller::apply`], so every replica holds the same list of
//! configurations. Config 0 has no groups and every shard unowned; every join, leave or move
//! that changes something makes the next config.

use super::{ConfigNum, GroupId, ShardError, ShardId, DEFAULT_SHARDS, NO_GROUP};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// One configuration: which group owns each shard, and each group's members (their
/// addresses, opaque here).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub num: ConfigNum,
    /// `shards[s]` owns shard `s` ([`NO_GROUP`] if none).
    pub shards: Vec<GroupId>,
    pub groups: BTreeMap<GroupId, Vec<String>>,
}

impl Config {
    /// Config 0: no groups, `shards` unowned shards.
    pub fn initial(shards: usize) -> Config {
        Config {
            num: 0,
            shards: vec![NO_GROUP; shards.max(1)],
            groups: BTreeMap::new(),
        }
    }

    pub fn owner(&self, shard: ShardId) -> GroupId {
        self.shards.get(shard).copied().unwrap_or(NO_GROUP)
    }

    pub fn shards_of(&self, group: GroupId) -> BTreeSet<ShardId> {
        (0..self.shards.len())
            .filter(|s| self.shards[*s] == group)
            .collect()
    }
}

/// A command in the controller's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerCmd {
    /// Add a group (or update its members) and rebalance.
    Join {
        group: GroupId,
        members: Vec<String>,
    },
    /// Remove a group and give its shards to the others.
    Leave { group: GroupId },
    /// Give one shard to one group (no rebalancing).
    Move { shard: ShardId, group: GroupId },
    /// The config numbered `num`, or the latest (`None`, or a number not yet reached).
    Query { num: Option<ConfigNum> },
}

/// The controller's replicated state: every configuration so far.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Controller {
    configs: Vec<Config>,
}

impl Default for Controller {
    fn default() -> Controller {
        Controller::new(DEFAULT_SHARDS)
    }
}

impl Controller {
    pub fn new(shards: usize) -> Controller {
        Controller {
            configs: vec![Config::initial(shards)],
        }
    }

    pub fn latest(&self) -> &Config {
        self.configs.last().expect("config 0 always exists")
    }

    /// Config `num`, or the latest if `num` is beyond it.
    pub fn query(&self, num: Option<ConfigNum>) -> &Config {
        match num {
            Some(n) if (n as usize) < self.configs.len() => &self.configs[n as usize],
            _ => self.latest(),
        }
    }

    /// Applies one command from the log; returns the config it answers with (the new latest
    /// for a change, the asked one for a query). A change that changes nothing (joining with
    /// the same members, moving a shard to its owner) makes no new config. Errors change
    /// nothing.
    pub fn apply(&mut self, cmd: &ControllerCmd) -> Result<Config, ShardError> {
        let mut next = self.latest().clone();
        match cmd {
            ControllerCmd::Query { num } => return Ok(self.query(*num).clone()),
            ControllerCmd::Join { group, members } => {
                if *group == NO_GROUP {
                    return Err(ShardError::Controller("group id 0 is reserved".into()));
                }
                next.groups.insert(*group, members.clone());
                rebalance(&mut next.shards, &next.groups.keys().copied().collect());
            }
            ControllerCmd::Leave { group } => {
                if next.groups.remove(group).is_none() {
                    return Err(ShardError::Controller(format!(
                        "leave: group {group} is not in config {}",
                        next.num
                    )));
                }
                rebalance(&mut next.shards, &next.groups.keys().copied().collect());
            }
            ControllerCmd::Move { shard, group } => {
                if *shard >= next.shards.len() {
                    return Err(ShardError::Controller(format!(
                        "move: shard {shard} out of range 0..{}",
                        next.shards.len()
                    )));
                }
                if !next.groups.contains_key(group) {
                    return Err(ShardError::Controller(format!(
                        "move: group {group} is not in config {}",
                        next.num
                    )));
                }
                next.shards[*shard] = *group;
            }
        }
        let latest = self.latest();
        if next.shards == latest.shards && next.groups == latest.groups {
            return Ok(latest.clone());
        }
        next.num = latest.num + 1;
        self.configs.push(next.clone());
        Ok(next)
    }
}

/// Assigns every shard to a group in `groups` so that loads differ by at most one, moving as
/// few shards as possible: shards of departed groups and the excess of overloaded groups go,
/// in shard order, to underloaded groups in group-id order. Groups that already hold more
/// get the `shards % groups` extra places first (ties: lower id), so that a balanced
/// assignment is left alone. Deterministic.
pub fn rebalance(shards: &mut [GroupId], groups: &BTreeSet<GroupId>) {
    if groups.is_empty() {
        shards.iter_mut().for_each(|g| *g = NO_GROUP);
        return;
    }
    let mut owned: BTreeMap<GroupId, Vec<ShardId>> = groups.iter().map(|g| (*g, vec![])).collect();
    let mut free: Vec<ShardId> = Vec::new();
    for (s, g) in shards.iter().enumerate() {
        match owned.get_mut(g) {
            Some(list) => list.push(s),
            None => free.push(s),
        }
    }
    let base = shards.len() / groups.len();
    let extra = shards.len() % groups.len();
    let mut by_load: Vec<GroupId> = groups.iter().copied().collect();
    by_load.sort_by_key(|g| (std::cmp::Reverse(owned[g].len()), *g));
    let target: BTreeMap<GroupId, usize> = by_load
        .iter()
        .enumerate()
        .map(|(i, g)| (*g, base + usize::from(i < extra)))
        .collect();
    for (g, list) in owned.iter_mut() {
        while list.len() > target[g] {
            free.push(list.pop().expect("longer than target"));
        }
    }
    free.sort_unstable();
    let mut free = free.into_iter();
    for (g, list) in owned.iter_mut() {
        while list.len() < target[g] {
            let s = free.next().expect("shard count matches the targets");
            shards[s] = *g;
            list.push(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(c: &mut Controller, g: GroupId) -> Config {
        c.apply(&ControllerCmd::Join {
            group: g,
            members: vec![format!("g{g}")],
        })
        .expect("join")
    }

    fn loads(cfg: &Config) -> Vec<usize> {
        cfg.groups.keys().map(|g| cfg.shards_of(*g).len()).collect()
    }

    #[test]
    fn join_and_leave_balance_with_minimal_moves() {
        let mut c = Controller::new(16);
        let c1 = join(&mut c, 1);
        assert_eq!(c1.num, 1);
        assert!(c1.shards.iter().all(|g| *g == 1));
        let c2 = join(&mut c, 2);
        assert_eq!(loads(&c2), vec![8, 8]);
        let c3 = join(&mut c, 3);
        let l = loads(&c3);
        assert!(
            l.iter().max().unwrap() - l.iter().min().unwrap() <= 1,
            "{l:?}"
        );
        // Joining group 3 moves only the shards group 3 takes.
        let moved = (0..16).filter(|s| c2.shards[*s] != c3.shards[*s]).count();
        assert_eq!(moved, c3.shards_of(3).len());
        let c4 = c.apply(&ControllerCmd::Leave { group: 2 }).expect("leave");
        assert_eq!(c4.num, 4);
        assert!(c4.shards.iter().all(|g| *g == 1 || *g == 3));
        let moved = (0..16).filter(|s| c3.shards[*s] != c4.shards[*s]).count();
        assert_eq!(moved, c3.shards_of(2).len(), "only group 2's shards move");
        assert_eq!(loads(&c4), vec![8, 8]);
    }

    #[test]
    fn move_query_and_errors() {
        let mut c = Controller::new(4);
        join(&mut c, 1);
        join(&mut c, 2);
        let before = c.latest().clone();
        let s = before.shards_of(1).into_iter().next().unwrap();
        let moved = c
            .apply(&ControllerCmd::Move { shard: s, group: 2 })
            .expect("move");
        assert_eq!(moved.num, before.num + 1);
        assert_eq!(moved.owner(s), 2);
        // A no-op move makes no config.
        let again = c
            .apply(&ControllerCmd::Move { shard: s, group: 2 })
            .expect("move");
        assert_eq!(again.num, moved.num);
        assert!(c
            .apply(&ControllerCmd::Move { shard: 9, group: 2 })
            .is_err());
        assert!(c
            .apply(&ControllerCmd::Move { shard: 0, group: 7 })
            .is_err());
        assert!(c.apply(&ControllerCmd::Leave { group: 7 }).is_err());
        assert_eq!(c.latest().num, moved.num, "errors change nothing");
        let q1 = c.apply(&ControllerCmd::Query { num: Some(1) }).unwrap();
        assert_eq!(q1.num, 1);
        let q = c.apply(&ControllerCmd::Query { num: Some(99) }).unwrap();
        assert_eq!(q.num, moved.num);
    }

    #[test]
    fn rebalance_is_deterministic_and_balanced_for_many_group_sets() {
        for n in 1..=20usize {
            let mut shards = vec![NO_GROUP; n];
            let mut groups = BTreeSet::new();
            for g in 1..=7u64 {
                groups.insert(g);
                let before = shards.clone();
                rebalance(&mut shards, &groups);
                let mut again = before.clone();
                rebalance(&mut again, &groups);
                assert_eq!(shards, again);
                let counts: Vec<usize> = groups
                    .iter()
                    .map(|g| shards.iter().filter(|x| *x == g).count())
                    .collect();
                let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
                assert!(hi - lo <= 1, "n={n} groups={groups:?} {counts:?}");
                assert!(shards.iter().all(|x| groups.contains(x)));
                let moved = (0..n).filter(|s| before[*s] != shards[*s]).count();
                // The newcomer takes at most its fair share (plus the unowned at first).
                if g > 1 {
                    assert!(
                        moved <= n.div_ceil(groups.len()),
                        "n={n} g={g} moved {moved}"
                    );
                }
            }
        }
    }

    #[test]
    fn keys_hash_stably() {
        // Pinned values: changing the hash would move every key of a running cluster.
        assert_eq!(super::super::fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(super::super::fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert!(super::super::shard_of("x", 16) < 16);
    }
}
