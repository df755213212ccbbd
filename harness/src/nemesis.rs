//! The nemesis: faults on a seeded schedule, each recorded in the history as a pair of nemesis
//! events (start, then stop) and always undone.

use crate::cluster::Cluster;
use crate::net::{Behaviour, Net};
use crate::record::Recorder;
use anyhow::{bail, Result};
use ordeal_checker::{Event, EventType, Process, Value};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Mutex};

pub mod episodes;
pub mod scope;
use episodes::{Aim, Allowed, EpisodePlanner, PlannedFault};
use scope::{Scope, ShardLayout};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    Pause,
    Kill,
    Partition,
    /// Packet delay, loss or duplication on chosen links.
    Network,
    /// Sharded paxos-kv: the controller moves random shards to other groups, and back when
    /// the fault ends.
    #[serde(rename = "shard-move")]
    ShardMove,
}

/// Parses `--nemesis`: `none`, `all`, or a comma list of pause, kill, partition, network.
pub fn parse_nemesis(s: &str) -> Result<Vec<FaultKind>> {
    let mut kinds = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part {
            "none" => {}
            "all" => kinds.extend(
                crate::faults::FAULTS
                    .iter()
                    .filter(|s| !s.sharded_only)
                    .map(|s| s.kind),
            ),
            other => match crate::faults::by_option(other) {
                Some(spec) => kinds.push(spec.kind),
                None => bail!(
                    "--nemesis: unknown fault {other:?}; expected none, all, {}",
                    crate::faults::FAULTS
                        .iter()
                        .map(|s| s.option)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
        }
    }
    // Keep the first mention of each kind: `all,kill` is `all`, not `all` with kill twice.
    let mut seen = Vec::with_capacity(kinds.len());
    kinds.retain(|k| {
        let first = !seen.contains(k);
        seen.push(*k);
        first
    });
    Ok(kinds)
}

/// How the kinds of `--nemesis` are run: `all` is one coordinated nemesis that injects one
/// episode at a time from every kind (see [`episodes`]); an explicit list such as
/// `partition,kill` runs one independent nemesis per kind, at once, as Jepsen composes them.
/// Each inner list is one nemesis.
///
/// Shard moves are never part of the coordinated schedule: they run as a nemesis of their
/// own beside it, so that shards also move while a group or the controller is crashed, paused
/// or cut off (where migration bugs live).
pub fn nemesis_groups(spec: &str, kinds: &[FaultKind]) -> Vec<Vec<FaultKind>> {
    let coordinated = spec.split(',').any(|p| p.trim() == "all");
    let (moves, others): (Vec<FaultKind>, Vec<FaultKind>) =
        kinds.iter().partition(|k| **k == FaultKind::ShardMove);
    let mut groups = if coordinated && !others.is_empty() {
        vec![others]
    } else {
        others.iter().map(|k| vec![*k]).collect()
    };
    groups.extend(moves.into_iter().take(1).map(|k| vec![k]));
    groups
}

/// The kinds of `--nemesis`, with `shard-move` added to `all` when the run is sharded.
pub fn with_shard_moves(spec: &str, kinds: &[FaultKind], sharded: bool) -> Vec<FaultKind> {
    let mut kinds = kinds.to_vec();
    if sharded
        && spec.split(',').any(|p| p.trim() == "all")
        && !kinds.contains(&FaultKind::ShardMove)
    {
        kinds.push(FaultKind::ShardMove);
    }
    kinds
}

/// Most shards one `shard-move` fault moves.
pub const SHARD_MOVES_MAX: usize = 2;

/// How long one shard move may wait for the controller (trying each of its nodes).
pub const SHARD_MOVE_TIMEOUT_MS: u64 = 3000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    One,
    Minority,
    Majority,
    All,
    Leader,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Shape {
    IsolateOne,
    IsolateLeader,
    Halves,
    MajoritiesRing,
    Bridge,
    /// Sharded paxos-kv: a whole group (see [`scope`]) cut off from every other process.
    IsolateGroup,
}

impl Shape {
    pub fn as_str(self) -> &'static str {
        match self {
            Shape::IsolateOne => "isolate-one",
            Shape::IsolateLeader => "isolate-leader",
            Shape::Halves => "halves",
            Shape::MajoritiesRing => "majorities-ring",
            Shape::Bridge => "bridge",
            Shape::IsolateGroup => "isolate-group",
        }
    }
}

pub const ALL_TARGETS: [Target; 5] = [
    Target::One,
    Target::Minority,
    Target::Majority,
    Target::All,
    Target::Leader,
];
pub const ALL_SHAPES: [Shape; 6] = [
    Shape::IsolateOne,
    Shape::IsolateLeader,
    Shape::Halves,
    Shape::MajoritiesRing,
    Shape::Bridge,
    Shape::IsolateGroup,
];

/// The shapes a run may draw: `isolate-group` only when the run has groups.
pub fn shapes_for(shapes: &[Shape], sharded: bool) -> Vec<Shape> {
    shapes
        .iter()
        .copied()
        .filter(|s| sharded || *s != Shape::IsolateGroup)
        .collect()
}

/// Parses an option that takes `any` (every choice) or a comma list of choice names; the
/// error names the option and lists the choices.
fn parse_choices<T: Copy>(
    s: &str,
    option: &str,
    all: &[T],
    name: impl Fn(T) -> &'static str,
) -> Result<Vec<T>> {
    if s == "any" {
        return Ok(all.to_vec());
    }
    s.split(',')
        .map(|t| {
            let t = t.trim();
            all.iter().copied().find(|&c| name(c) == t).ok_or_else(|| {
                let names: Vec<&str> = all.iter().map(|&c| name(c)).collect();
                anyhow::anyhow!(
                    "{option}: unknown choice {t:?}; expected any or {}",
                    names.join(", ")
                )
            })
        })
        .collect()
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::One => "one",
            Target::Minority => "minority",
            Target::Majority => "majority",
            Target::All => "all",
            Target::Leader => "leader",
        }
    }
}

/// Parses `--nemesis-targets`: `any` or a comma list of one, minority, majority, all,
/// leader.
pub fn parse_targets(s: &str) -> Result<Vec<Target>> {
    parse_choices(s, "--nemesis-targets", &ALL_TARGETS, Target::as_str)
}

/// Parses `--partition-shapes`: `any` or a comma list of shape names.
pub fn parse_shapes(s: &str) -> Result<Vec<Shape>> {
    parse_choices(s, "--partition-shapes", &ALL_SHAPES, Shape::as_str)
}

/// The behaviours the `network` fault may pick from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BehaviourKind {
    Delay,
    Loss,
    Duplicate,
}

pub const ALL_BEHAVIOURS: [BehaviourKind; 3] = [
    BehaviourKind::Delay,
    BehaviourKind::Loss,
    BehaviourKind::Duplicate,
];

impl BehaviourKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BehaviourKind::Delay => "delay",
            BehaviourKind::Loss => "loss",
            BehaviourKind::Duplicate => "duplicate",
        }
    }
}

/// Parses `--network-behaviours`: `any` or a comma list of delay, loss, duplicate.
pub fn parse_behaviours(s: &str) -> Result<Vec<BehaviourKind>> {
    parse_choices(
        s,
        "--network-behaviours",
        &ALL_BEHAVIOURS,
        BehaviourKind::as_str,
    )
}

/// Mean one-way delay of a `delay` fault, drawn uniformly from this range. Around the store's
/// election timeout (150-300 ms), so that some delays cost leadership and some do not.
pub const NETWORK_DELAY_MS: (u64, u64) = (20, 200);
/// Jitter of a `delay` fault, as a fraction of its mean (Jepsen's default is 10 ms on 50 ms).
pub const NETWORK_JITTER_FRACTION: f64 = 0.2;
/// Probability of losing a message, in percent.
pub const NETWORK_LOSS_PERCENT: (u32, u32) = (10, 50);
/// Probability of duplicating a message, in percent.
pub const NETWORK_DUPLICATE_PERCENT: (u32, u32) = (10, 50);

/// Draws one behaviour and its parameters.
pub fn choose_behaviour(kinds: &[BehaviourKind], rng: &mut ChaCha8Rng) -> Behaviour {
    match *kinds
        .choose(rng)
        .expect("--network-behaviours parses to at least one")
    {
        BehaviourKind::Delay => {
            let delay_ms = rng.gen_range(NETWORK_DELAY_MS.0..=NETWORK_DELAY_MS.1);
            Behaviour::Delay {
                delay_ms,
                jitter_ms: (delay_ms as f64 * NETWORK_JITTER_FRACTION).round() as u64,
            }
        }
        BehaviourKind::Loss => Behaviour::Loss {
            percent: rng.gen_range(NETWORK_LOSS_PERCENT.0..=NETWORK_LOSS_PERCENT.1),
        },
        BehaviourKind::Duplicate => Behaviour::Duplicate {
            percent: rng.gen_range(NETWORK_DUPLICATE_PERCENT.0..=NETWORK_DUPLICATE_PERCENT.1),
        },
    }
}

/// The undirected links a network fault on `nodes` affects: every link with at least one end
/// among them (all links when every node is targeted).
pub fn network_links(nodes: &[usize], n: usize) -> BTreeSet<(usize, usize)> {
    let mut links = BTreeSet::new();
    for a in 0..n {
        for b in (a + 1)..n {
            if nodes.contains(&a) || nodes.contains(&b) {
                links.insert((a, b));
            }
        }
    }
    links
}

/// Names links as people read them: `n1-n2 n1-n3`.
pub fn describe_links(links: &BTreeSet<(usize, usize)>) -> String {
    links
        .iter()
        .map(|(a, b)| format!("n{}-n{}", a + 1, b + 1))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The nodes (indices) a process fault hits among all `n`.
pub fn choose_targets(
    target: Target,
    n: usize,
    leader: Option<usize>,
    rng: &mut ChaCha8Rng,
) -> Vec<usize> {
    let all: Vec<usize> = (0..n).collect();
    scope::choose_within(target, &all, leader, false, rng)
}

/// The undirected links a partition of all `n` nodes cuts (`isolate-group`: none, the one
/// group being everyone).
pub fn partition_cuts(
    shape: Shape,
    n: usize,
    leader: Option<usize>,
    rng: &mut ChaCha8Rng,
) -> BTreeSet<(usize, usize)> {
    let all: Vec<usize> = (0..n).collect();
    scope::partition_cuts_within(shape, &all, n, leader, false, rng)
}

/// Describes a set of cuts as the components each node still sees, e.g. `n1,n2 | n3`.
pub fn describe_cuts(cuts: &BTreeSet<(usize, usize)>, n: usize) -> String {
    let mut parts = Vec::new();
    for a in 0..n {
        let sees: Vec<String> = (0..n)
            .filter(|&b| !cuts.contains(&(a.min(b), a.max(b))))
            .map(|b| format!("n{}", b + 1))
            .collect();
        parts.push(format!("n{} sees {}", a + 1, sees.join(",")));
    }
    parts.join("; ")
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct NemesisConfig {
    pub kinds: Vec<FaultKind>,
    /// Quiet time between faults, drawn uniformly from this range.
    pub interval_ms: (u64, u64),
    /// How long a fault is held, drawn uniformly from this range.
    pub hold_ms: (u64, u64),
    pub seed: u64,
    /// Which nodes pause and kill may hit.
    pub targets: Vec<Target>,
    /// Which partition shapes may be used.
    pub shapes: Vec<Shape>,
    /// Sharded paxos-kv: which processes faults may hit (`--nemesis-scope`), each fault drawing
    /// one; `[Any]` otherwise.
    pub scopes: Vec<Scope>,
    /// Which behaviours the network fault may use.
    pub behaviours: Vec<BehaviourKind>,
    /// Faults to inject instead of drawing them (this nemesis' part of `--replay-faults`).
    pub replay: Option<Vec<ScheduledFault>>,
}

/// One fault as it was injected, concretely (nodes, links, parameters), so that a later run can
/// inject exactly it again (`ordeal test --replay-faults`). Every run writes its faults, in
/// order per nemesis, to `faults.json`. Nodes are numbered from 1, as `n1` is node 1.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduledFault {
    /// The nemesis that injected it (one runs per kind).
    pub nemesis: FaultKind,
    /// Quiet time before the fault, then how long it was held.
    pub wait_ms: u64,
    pub hold_ms: u64,
    /// How its targets were chosen (one, minority, leader, a partition shape, ...): for people.
    pub target: String,
    pub action: Action,
    /// Part of the same episode as the fault before it (the coordinated `--nemesis all`
    /// schedule: the leader crashed inside a network fault, or crashed again and again):
    /// `wait_ms` then counts from the injection of the episode's first fault.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub with_previous: bool,
    /// Sharded paxos-kv: the group it was aimed at (0: the shard controller, g: replica group
    /// g), when it was aimed at one (`--nemesis-scope`, or a leader-aimed fault). A replay
    /// injects the recorded nodes and cuts; this says where they were drawn from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<usize>,
}

/// What a scheduled fault does.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "do", rename_all = "lowercase", deny_unknown_fields)]
pub enum Action {
    Pause {
        nodes: Vec<usize>,
    },
    Kill {
        nodes: Vec<usize>,
    },
    /// The links cut, as pairs of nodes.
    Partition {
        cuts: Vec<(usize, usize)>,
    },
    /// `nodes` were targeted; `links` (all links touching them) are shaped.
    Network {
        nodes: Vec<usize>,
        links: Vec<(usize, usize)>,
        behaviour: Behaviour,
    },
    /// Each shard moved to its `to` group, and back to `from` when the fault ends.
    #[serde(rename = "shard-move")]
    ShardMove {
        moves: Vec<ShardMoveStep>,
    },
}

/// One shard's move: from the group that owned it when the fault was drawn (0: unknown) to
/// another group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardMoveStep {
    pub shard: usize,
    pub from: usize,
    pub to: usize,
}

/// Moves as people read them: `s3 g1->g2 s7 g2->g1`.
pub fn describe_moves(moves: &[ShardMoveStep]) -> String {
    moves
        .iter()
        .map(|m| format!("s{} g{}->g{}", m.shard, m.from, m.to))
        .collect::<Vec<_>>()
        .join(" ")
}

impl ScheduledFault {
    /// Every node it names, numbered from 1.
    fn nodes(&self) -> Vec<usize> {
        match &self.action {
            Action::Pause { nodes } | Action::Kill { nodes } => nodes.clone(),
            Action::Partition { cuts } => cuts.iter().flat_map(|&(a, b)| [a, b]).collect(),
            Action::Network { nodes, links, .. } => nodes
                .iter()
                .copied()
                .chain(links.iter().flat_map(|&(a, b)| [a, b]))
                .collect(),
            Action::ShardMove { .. } => Vec::new(),
        }
    }
}

/// Reads a schedule written by an earlier run (`faults.json`, or the run directory holding
/// it) and checks it against this run: every node must exist and every nemesis must be one
/// this run has (`--nemesis`).
pub fn load_schedule(
    path: &std::path::Path,
    nodes: usize,
    kinds: &[FaultKind],
) -> Result<Vec<ScheduledFault>> {
    let file = if path.is_dir() {
        path.join("faults.json")
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file)
        .map_err(|e| anyhow::anyhow!("--replay-faults: {}: {e}", file.display()))?;
    let schedule: Vec<ScheduledFault> = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("--replay-faults: {}: {e}", file.display()))?;
    for (i, f) in schedule.iter().enumerate() {
        if let Some(bad) = f.nodes().into_iter().find(|&n| n == 0 || n > nodes) {
            bail!(
                "--replay-faults: {}: fault {} names node n{bad}, but this run has {nodes} node(s)",
                file.display(),
                i + 1
            );
        }
        if !kinds.contains(&f.nemesis) {
            bail!(
                "--replay-faults: {}: fault {} is a {:?} fault; add it to --nemesis",
                file.display(),
                i + 1,
                f.nemesis
            );
        }
    }
    Ok(schedule)
}

/// Node numbers (from 1) of node indices (from 0), and back.
fn numbers(idx: &[usize]) -> Vec<usize> {
    idx.iter().map(|i| i + 1).collect()
}
fn indices(numbers: &[usize]) -> Vec<usize> {
    numbers.iter().map(|n| n - 1).collect()
}
fn pair_numbers(pairs: &BTreeSet<(usize, usize)>) -> Vec<(usize, usize)> {
    pairs.iter().map(|&(a, b)| (a + 1, b + 1)).collect()
}
fn pair_indices(pairs: &[(usize, usize)]) -> BTreeSet<(usize, usize)> {
    pairs.iter().map(|&(a, b)| (a - 1, b - 1)).collect()
}

/// How many times the coordinated schedule asks for the leader before a leader-aimed fault, and
/// how long it waits between asks (an election takes 150-300 ms in paxos-kv).
const LEADER_TRIES: usize = 5;
const LEADER_RETRY_MS: u64 = 200;

/// One fault of a coordinated episode: drawn now, or replayed from `faults.json`.
enum Step {
    Plan(PlannedFault),
    Replay(ScheduledFault),
}

impl Step {
    /// When it starts after the episode's first fault, and how long it is held.
    fn timing(&self) -> (u64, u64) {
        match self {
            Step::Plan(p) => (p.offset_ms, p.hold_ms),
            Step::Replay(f) => (f.wait_ms, f.hold_ms),
        }
    }
}

/// Where one fault lands: the group it was aimed at (None: every process), the processes it
/// may hit, their leader (when the fault wants one), and whether the leader must be among
/// those hit (a fault aimed at the coordinator).
struct Placement {
    group: Option<usize>,
    members: Vec<usize>,
    leader: Option<usize>,
    with_leader: bool,
    /// Where it landed, as its label says it: empty, `g2 `, `controller `, `coordinator g1 `.
    prefix: String,
}

impl Placement {
    /// The fault's label: where it landed and how its targets were chosen (`g2 leader`).
    fn label(&self, how: &str) -> String {
        format!("{}{how}", self.prefix)
    }
}

/// The fault being held now, for undoing it.
enum Active {
    Paused(Vec<usize>),
    Killed(Vec<usize>),
    Partitioned,
    Network,
    /// Shards moved, to be moved back.
    ShardMoved(Vec<ShardMoveStep>),
    /// Nothing was done (a network fault on a one-node cluster).
    Nothing,
}

pub struct Nemesis {
    pub config: NemesisConfig,
    pub cluster: Arc<Mutex<Cluster>>,
    pub net: Arc<Net>,
    pub recorder: Recorder,
    /// What the progress bar shows as the current faults, one entry per nemesis.
    pub current: Arc<std::sync::Mutex<std::collections::BTreeMap<String, String>>>,
    /// The faults injected so far, by every nemesis (written to `faults.json`).
    pub schedule: Arc<std::sync::Mutex<Vec<ScheduledFault>>>,
    /// Sharded paxos-kv's controller, for `shard-move`; None in an unsharded run.
    pub shards: Option<Arc<crate::target::paxos_kv_sharded::ShardControl>>,
}

fn names(idx: &[usize]) -> Value {
    Value::List(
        idx.iter()
            .map(|i| Value::Str(format!("n{}", i + 1)))
            .collect(),
    )
}

impl Nemesis {
    async fn record(&self, f: &str, value: Value) {
        let e = Event::new(Process::Nemesis, EventType::Info, f, value);
        self.recorder.record_async(e).await;
    }

    fn set_current(&self, s: &str) {
        let key = format!("{:?}", self.config.kinds);
        let mut map = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if s == "none" {
            map.remove(&key);
        } else {
            map.insert(key, s.to_string());
        }
    }

    /// Runs faults until `stop` turns true (or a replayed schedule ends); always leaves
    /// everything healed.
    pub async fn run(self, mut stop: watch::Receiver<bool>) -> Result<()> {
        if self.config.kinds.is_empty() {
            return Ok(());
        }
        if self.config.kinds.len() > 1 {
            return self.run_coordinated(stop).await;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed ^ 0x6e656d65_73697321);
        let n = self.cluster.lock().await.len();
        let mut replay = self.config.replay.clone().map(|r| r.into_iter().peekable());
        loop {
            let wait_ms = match &mut replay {
                Some(faults) => match faults.peek() {
                    Some(f) => f.wait_ms,
                    None => break,
                },
                None => rng.gen_range(self.config.interval_ms.0..=self.config.interval_ms.1),
            };
            if sleep_or_stop(&mut stop, wait_ms).await {
                break;
            }
            let fault = match &mut replay {
                Some(faults) => faults.next().expect("peeked above"),
                None => match self.draw(wait_ms, n, &mut stop, &mut rng).await {
                    Some(f) => f,
                    None => break,
                },
            };
            let active = self.inject(&fault, n).await?;
            let hold_ms = fault.hold_ms;
            self.schedule
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(fault);
            let stopped = sleep_or_stop(&mut stop, hold_ms).await;
            self.undo(active).await?;
            self.set_current("none");
            if stopped {
                break;
            }
        }
        Ok(())
    }

    /// The coordinated schedule (`--nemesis all`): one episode at a time, each a quiet gap, a
    /// fault, and the faults planned with it (see [`episodes`]); everything an episode did is
    /// undone before the next gap starts, so faults never cancel each other by accident.
    async fn run_coordinated(self, mut stop: watch::Receiver<bool>) -> Result<()> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed ^ 0x6e656d65_73697321);
        let n = self.cluster.lock().await.len();
        let mut replay = self.config.replay.clone().map(|r| r.into_iter().peekable());
        let mut planner = match replay {
            Some(_) => None,
            None => Some(
                EpisodePlanner::new(Allowed {
                    kinds: self.config.kinds.clone(),
                    targets: self.config.targets.clone(),
                    shapes: self.config.shapes.clone(),
                    behaviours: self.config.behaviours.clone(),
                    interval_ms: self.config.interval_ms,
                    hold_ms: self.config.hold_ms,
                })
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--nemesis all: --nemesis-targets and --partition-shapes leave no fault to inject"
                    )
                })?,
            ),
        };
        loop {
            // The episode's steps, the first at offset 0, the rest at their offsets from it.
            let (wait_ms, steps) = match (&mut replay, &mut planner) {
                (Some(faults), _) => {
                    let Some(first) = faults.next() else { break };
                    let wait_ms = first.wait_ms;
                    let mut steps = vec![Step::Replay(ScheduledFault {
                        wait_ms: 0,
                        ..first
                    })];
                    while let Some(f) = faults.next_if(|f| f.with_previous) {
                        steps.push(Step::Replay(f));
                    }
                    (wait_ms, steps)
                }
                (None, Some(planner)) => {
                    let e = planner.next(&mut rng);
                    let steps = std::iter::once(e.first)
                        .chain(e.then)
                        .map(Step::Plan)
                        .collect();
                    (e.wait_ms, steps)
                }
                (None, None) => unreachable!("a planner whenever there is no replay"),
            };
            if sleep_or_stop(&mut stop, wait_ms).await {
                break;
            }
            let stopped = self
                .run_episode(wait_ms, steps, n, &mut stop, &mut rng)
                .await?;
            self.set_current("none");
            if stopped {
                break;
            }
        }
        Ok(())
    }

    /// Injects and undoes an episode's faults at their offsets (undoing before injecting when
    /// both fall due together); returns whether told to stop, having undone everything.
    async fn run_episode(
        &self,
        wait_ms: u64,
        steps: Vec<Step>,
        n: usize,
        stop: &mut watch::Receiver<bool>,
        rng: &mut ChaCha8Rng,
    ) -> Result<bool> {
        // (time from the episode's start, undo?, step index)
        let mut events: Vec<(u64, bool, usize)> = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            let (offset_ms, hold_ms) = step.timing();
            events.push((offset_ms, false, i));
            events.push((offset_ms + hold_ms, true, i));
        }
        // Undo (true) sorts after inject (false) at equal times, so flip it for the sort.
        events.sort_by_key(|&(t, undo, i)| (t, !undo, i));
        let mut steps: Vec<Option<Step>> = steps.into_iter().map(Some).collect();
        let mut active: Vec<Option<Active>> = steps.iter().map(|_| None).collect();
        let start = tokio::time::Instant::now();
        let mut stopped = false;
        // How late the plan runs: a fault aimed at the leader may wait for an election. Later
        // events move by as much, so that every fault is still held as long as planned.
        let mut late_ms = 0;
        let mut first_at_ms = 0;
        for (at_ms, undo, i) in events {
            let at_ms = at_ms + late_ms;
            let now_ms = start.elapsed().as_millis() as u64;
            if at_ms > now_ms && sleep_or_stop(stop, at_ms - now_ms).await {
                stopped = true;
                break;
            }
            if undo {
                if let Some(a) = active[i].take() {
                    self.undo(a).await?;
                }
                continue;
            }
            let Some(step) = steps[i].take() else {
                continue;
            };
            // The first fault carries the quiet gap before it; the others their offset.
            let (wait, with_previous) = if i == 0 {
                (wait_ms, false)
            } else {
                (step.timing().0, true)
            };
            let Some(mut fault) = self.concrete(step, wait, with_previous, n, stop, rng).await
            else {
                stopped = true;
                break;
            };
            // Record when it really went in, from the first fault, so a replay repeats that.
            let now_ms = start.elapsed().as_millis() as u64;
            if i == 0 {
                first_at_ms = now_ms;
            } else {
                fault.wait_ms = now_ms.saturating_sub(first_at_ms);
            }
            active[i] = Some(self.inject(&fault, n).await?);
            self.push(fault);
            late_ms += (start.elapsed().as_millis() as u64).saturating_sub(at_ms);
        }
        // Told to stop mid-episode: undo what is still held, the last injected first.
        for a in active.into_iter().rev().flatten() {
            self.undo(a).await?;
        }
        Ok(stopped)
    }

    fn push(&self, fault: ScheduledFault) {
        self.schedule
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(fault);
    }

    /// The concrete fault of a planned or replayed step: nodes and links resolved now, the
    /// leader being whoever leads at this moment. None when told to stop while waiting for a
    /// leader.
    async fn concrete(
        &self,
        step: Step,
        wait_ms: u64,
        with_previous: bool,
        n: usize,
        stop: &mut watch::Receiver<bool>,
        rng: &mut ChaCha8Rng,
    ) -> Option<ScheduledFault> {
        let planned = match step {
            Step::Replay(f) => {
                return Some(ScheduledFault {
                    wait_ms,
                    with_previous,
                    ..f
                })
            }
            Step::Plan(p) => p,
        };
        let at = self.place(&planned.aim, n, stop, rng).await?;
        let (target, action) = self.resolve(planned.aim, &at, n, false, rng);
        Some(ScheduledFault {
            nemesis: planned.aim.kind(),
            wait_ms,
            hold_ms: planned.hold_ms,
            target,
            action,
            with_previous,
            group: at.group,
        })
    }

    /// Where a fault aimed by `aim` lands (see [`scope`]): in an unsharded run every node; in a
    /// sharded one, a group drawn by `--nemesis-scope` (any group for a leader-aimed fault
    /// under `any`), and that group's leader when the fault needs it. None when told to stop
    /// while waiting for a leader.
    async fn place(
        &self,
        aim: &Aim,
        n: usize,
        stop: &mut watch::Receiver<bool>,
        rng: &mut ChaCha8Rng,
    ) -> Option<Placement> {
        let wants_leader = matches!(
            aim,
            Aim::Pause(Target::Leader)
                | Aim::Kill(Target::Leader)
                | Aim::Network(Target::Leader, _)
                | Aim::Partition(Shape::IsolateLeader)
        );
        let every: Vec<usize> = (0..n).collect();
        let Some(control) = &self.shards else {
            let leader = if wants_leader {
                self.find_leader(&every, stop).await?
            } else {
                None
            };
            return Some(Placement {
                group: None,
                members: every,
                leader,
                with_leader: false,
                prefix: String::new(),
            });
        };
        let layout = ShardLayout {
            groups: control.groups,
            per_group: control.per_group,
        };
        let scope = self
            .config
            .scopes
            .choose(rng)
            .copied()
            .unwrap_or(Scope::Any);
        let coordinating = if scope == Scope::Coordinator {
            control.coordinating_groups().await
        } else {
            Vec::new()
        };
        let needs_group = wants_leader || matches!(aim, Aim::Partition(Shape::IsolateGroup));
        let group = scope::pick_group(scope, layout, needs_group, &coordinating, rng);
        let with_leader = scope == Scope::Coordinator;
        let members = group.map(|g| layout.members(g)).unwrap_or(every);
        let leader = if wants_leader || with_leader {
            self.find_leader(&members, stop).await?
        } else {
            None
        };
        let prefix = match (scope, group) {
            (_, None) => String::new(),
            (Scope::Coordinator, Some(g)) => {
                format!("coordinator {} ", ShardLayout::group_name(g))
            }
            (_, Some(g)) => format!("{} ", ShardLayout::group_name(g)),
        };
        if scope == Scope::Coordinator {
            tracing::info!(
                "coordinator: groups holding coordinator records {coordinating:?}; aiming at {}",
                prefix.trim()
            );
        }
        Some(Placement {
            group,
            members,
            leader,
            with_leader,
            prefix,
        })
    }

    /// The leader among `members` (the highest ballot claiming leadership among them). Right
    /// after an episode the cluster may still be electing: asks a few times rather than hit a
    /// node at random. Some(None): no leader found; None: told to stop.
    async fn find_leader(
        &self,
        members: &[usize],
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Option<usize>> {
        for _ in 0..LEADER_TRIES {
            let leader = self
                .cluster
                .lock()
                .await
                .leader_among(members.iter().copied())
                .await;
            if leader.is_some() {
                return Some(leader);
            }
            if sleep_or_stop(stop, LEADER_RETRY_MS).await {
                return None;
            }
        }
        Some(None)
    }

    /// The label and action of a fault aimed by `aim`, landing `at`. With `draw_behaviour` a
    /// network fault draws its behaviour now, after its nodes (the independent network
    /// nemesis' order), instead of taking the aim's.
    fn resolve(
        &self,
        aim: Aim,
        at: &Placement,
        n: usize,
        draw_behaviour: bool,
        rng: &mut ChaCha8Rng,
    ) -> (String, Action) {
        let nodes = |t: Target, rng: &mut ChaCha8Rng| {
            scope::choose_within(t, &at.members, at.leader, at.with_leader, rng)
        };
        match aim {
            Aim::Pause(t) => (
                at.label(t.as_str()),
                Action::Pause {
                    nodes: numbers(&nodes(t, rng)),
                },
            ),
            Aim::Kill(t) => (
                at.label(t.as_str()),
                Action::Kill {
                    nodes: numbers(&nodes(t, rng)),
                },
            ),
            Aim::Partition(s) => (
                at.label(s.as_str()),
                Action::Partition {
                    cuts: pair_numbers(&scope::partition_cuts_within(
                        s,
                        &at.members,
                        n,
                        at.leader,
                        at.with_leader,
                        rng,
                    )),
                },
            ),
            Aim::Network(t, behaviour) => {
                let nodes = nodes(t, rng);
                let links = network_links(&nodes, n);
                let behaviour = if draw_behaviour {
                    choose_behaviour(&self.config.behaviours, rng)
                } else {
                    behaviour
                };
                (
                    at.label(t.as_str()),
                    Action::Network {
                        nodes: numbers(&nodes),
                        links: pair_numbers(&links),
                        behaviour,
                    },
                )
            }
        }
    }

    /// Draws the next fault from the seeded generator; targets such as the leader are resolved
    /// now, at the moment of the fault. None when told to stop while waiting for a leader.
    async fn draw(
        &self,
        wait_ms: u64,
        n: usize,
        stop: &mut watch::Receiver<bool>,
        rng: &mut ChaCha8Rng,
    ) -> Option<ScheduledFault> {
        let kind = *self.config.kinds.choose(rng).expect("kinds not empty");
        let hold_ms = rng.gen_range(self.config.hold_ms.0..=self.config.hold_ms.1);
        let target = |rng: &mut ChaCha8Rng| {
            *self
                .config
                .targets
                .choose(rng)
                .expect("--nemesis-targets parses to at least one target")
        };
        let aim = match kind {
            FaultKind::Pause => Aim::Pause(target(rng)),
            FaultKind::Kill => Aim::Kill(target(rng)),
            FaultKind::Partition => {
                Aim::Partition(*self.config.shapes.choose(rng).expect("shapes not empty"))
            }
            // The behaviour is drawn in `resolve`, after the nodes.
            FaultKind::Network => Aim::Network(target(rng), Behaviour::Loss { percent: 0 }),
            FaultKind::ShardMove => {
                return Some(ScheduledFault {
                    nemesis: kind,
                    wait_ms,
                    hold_ms,
                    target: "random".into(),
                    action: self.draw_shard_moves(rng).await,
                    with_previous: false,
                    group: None,
                })
            }
        };
        let at = self.place(&aim, n, stop, rng).await?;
        let (target, action) = self.resolve(aim, &at, n, true, rng);
        Some(ScheduledFault {
            nemesis: kind,
            wait_ms,
            hold_ms,
            target,
            action,
            with_previous: false,
            group: at.group,
        })
    }

    /// Draws up to [`SHARD_MOVES_MAX`] shards and, for each, a group other than its owner in
    /// the controller's latest config. No moves when there is no config or only one group.
    async fn draw_shard_moves(&self, rng: &mut ChaCha8Rng) -> Action {
        let Some(control) = &self.shards else {
            return Action::ShardMove { moves: Vec::new() };
        };
        let owners = control.config().await.map(|c| c.shards).unwrap_or_default();
        let groups = control.groups;
        if owners.is_empty() || groups < 2 {
            return Action::ShardMove { moves: Vec::new() };
        }
        let mut shards: Vec<usize> = (0..owners.len()).collect();
        shards.shuffle(rng);
        let count = rng.gen_range(1..=SHARD_MOVES_MAX.min(owners.len()));
        let moves = shards[..count]
            .iter()
            .map(|&shard| {
                let from = owners[shard] as usize;
                let others: Vec<usize> = (1..=groups).filter(|g| *g != from).collect();
                let to = *others.choose(rng).expect("at least two groups");
                ShardMoveStep { shard, from, to }
            })
            .collect();
        Action::ShardMove { moves }
    }

    /// Asks the controller for each move (each to `to`, or back to `from`); one line per move
    /// saying what the controller answered. A move the controller did not confirm may still
    /// happen (its answer timed out): the line says so, and the run goes on.
    async fn move_shards(&self, moves: &[ShardMoveStep], back: bool) -> String {
        let Some(control) = &self.shards else {
            return "no shard controller".into();
        };
        let mut outcomes = Vec::new();
        for m in moves {
            let (to, from) = if back { (m.from, m.to) } else { (m.to, m.from) };
            if to == 0 {
                outcomes.push(format!("s{}: owner unknown, not moved back", m.shard));
                continue;
            }
            let within = Duration::from_millis(SHARD_MOVE_TIMEOUT_MS);
            match control.move_shard(m.shard, to, within).await {
                Ok(num) => outcomes.push(format!("s{}: config {num}", m.shard)),
                Err(e) => {
                    tracing::warn!("shard move s{} to g{to}: {e:#}", m.shard);
                    outcomes.push(format!("s{} g{from}->g{to}: not confirmed", m.shard));
                }
            }
        }
        outcomes.join("; ")
    }

    /// Injects a fault and records it in the history.
    async fn inject(&self, fault: &ScheduledFault, n: usize) -> Result<Active> {
        let label = fault.target.clone();
        Ok(match &fault.action {
            Action::Pause { nodes } | Action::Kill { nodes } => {
                let nodes = indices(nodes);
                let mut cluster = self.cluster.lock().await;
                let (f, active) = if matches!(fault.action, Action::Pause { .. }) {
                    for &i in &nodes {
                        cluster.pause(i);
                    }
                    (
                        FaultKind::Pause.spec().start_f,
                        Active::Paused(nodes.clone()),
                    )
                } else {
                    for &i in &nodes {
                        cluster.kill(i);
                    }
                    (
                        FaultKind::Kill.spec().start_f,
                        Active::Killed(nodes.clone()),
                    )
                };
                drop(cluster);
                self.record(
                    f,
                    Value::List(vec![Value::Str(label.clone()), names(&nodes)]),
                )
                .await;
                self.set_current(&format!("{f} {label} {}", names(&nodes)));
                active
            }
            Action::Partition { cuts } => {
                let cuts = pair_indices(cuts);
                self.net.cut(&cuts)?;
                let desc = describe_cuts(&cuts, n);
                tracing::info!("partition {label}: {desc}");
                self.record(
                    FaultKind::Partition.spec().start_f,
                    Value::List(vec![Value::Str(label.clone()), Value::Str(desc)]),
                )
                .await;
                self.set_current(&format!("partition {label}"));
                Active::Partitioned
            }
            Action::ShardMove { moves } if moves.is_empty() => {
                tracing::info!("shard-move: nothing to move (no config, or one group)");
                Active::Nothing
            }
            Action::ShardMove { moves } => {
                let outcome = self.move_shards(moves, false).await;
                tracing::info!("shard-move {}: {outcome}", describe_moves(moves));
                self.record(
                    FaultKind::ShardMove.spec().start_f,
                    Value::List(vec![Value::Str(describe_moves(moves)), Value::Str(outcome)]),
                )
                .await;
                self.set_current(&format!("shard-move {}", describe_moves(moves)));
                Active::ShardMoved(moves.clone())
            }
            Action::Network {
                nodes,
                links,
                behaviour,
            } => {
                let nodes = indices(nodes);
                let links = pair_indices(links);
                if links.is_empty() {
                    // One node has no links; say so instead of recording a fault that is not.
                    tracing::info!(
                        "network {}: no links to shape among {n} node(s)",
                        behaviour.describe()
                    );
                    Active::Nothing
                } else {
                    let (via, how) = self.net.start_network(&links, *behaviour)?;
                    let desc = behaviour.describe();
                    let link_text = describe_links(&links);
                    tracing::info!(
                        "network {desc} on {link_text} ({label} {}): {how}",
                        names(&nodes)
                    );
                    self.record(
                        FaultKind::Network.spec().start_f,
                        Value::List(vec![
                            Value::Str(format!("{desc} via {via}")),
                            Value::Str(link_text),
                            Value::Str(label.clone()),
                            names(&nodes),
                            Value::Str(how),
                        ]),
                    )
                    .await;
                    self.set_current(&format!("network {desc} via {via}"));
                    Active::Network
                }
            }
        })
    }

    async fn undo(&self, active: Active) -> Result<()> {
        match active {
            Active::Paused(nodes) => {
                let mut cluster = self.cluster.lock().await;
                for &i in &nodes {
                    cluster.resume(i);
                }
                drop(cluster);
                self.record(FaultKind::Pause.spec().stop_f, names(&nodes))
                    .await;
            }
            Active::Killed(nodes) => {
                let mut cluster = self.cluster.lock().await;
                for &i in &nodes {
                    cluster.start(i)?;
                }
                drop(cluster);
                self.record(FaultKind::Kill.spec().stop_f, names(&nodes))
                    .await;
            }
            Active::Partitioned => {
                self.net.heal_partition()?;
                self.record(FaultKind::Partition.spec().stop_f, Value::Null)
                    .await;
            }
            Active::Network => {
                self.net.heal_network()?;
                self.record(FaultKind::Network.spec().stop_f, Value::Null)
                    .await;
            }
            Active::ShardMoved(moves) => {
                let outcome = self.move_shards(&moves, true).await;
                tracing::info!("shard-return {}: {outcome}", describe_moves(&moves));
                self.record(FaultKind::ShardMove.spec().stop_f, Value::Str(outcome))
                    .await;
            }
            Active::Nothing => {}
        }
        Ok(())
    }
}

/// Sleeps `ms`, returning early (true) when `stop` turns true.
pub async fn sleep_or_stop(stop: &mut watch::Receiver<bool>, ms: u64) -> bool {
    if *stop.borrow() {
        return true;
    }
    let stopped = tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(ms)) => false,
        _ = stop.wait_for(|s| *s) => true,
    };
    stopped || *stop.borrow()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connected(cuts: &BTreeSet<(usize, usize)>, a: usize, b: usize) -> bool {
        a == b || !cuts.contains(&(a.min(b), a.max(b)))
    }

    #[test]
    fn shapes_cut_what_they_say() {
        for n in [3usize, 5] {
            for seed in 0..20 {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let iso = partition_cuts(Shape::IsolateLeader, n, Some(1), &mut rng);
                assert_eq!(iso.len(), n - 1);
                assert!((0..n).all(|b| b == 1 || !connected(&iso, 1, b)));

                let halves = partition_cuts(Shape::Halves, n, None, &mut rng);
                assert_eq!(halves.len(), (n / 2) * (n - n / 2));

                let ring = partition_cuts(Shape::MajoritiesRing, n, None, &mut rng);
                let views: Vec<Vec<usize>> = (0..n)
                    .map(|a| (0..n).filter(|&b| connected(&ring, a, b)).collect())
                    .collect();
                for v in &views {
                    assert!(v.len() > n / 2, "{n} nodes, view {v:?} is not a majority");
                }
                assert!(!ring.is_empty());

                let bridge = partition_cuts(Shape::Bridge, n, None, &mut rng);
                let bridges: Vec<usize> = (0..n)
                    .filter(|&a| (0..n).all(|b| connected(&bridge, a, b)))
                    .collect();
                assert_eq!(bridges.len(), 1, "{bridge:?}");
            }
        }
    }

    #[test]
    fn all_is_one_coordinated_nemesis_and_a_list_is_one_per_kind() {
        let all = parse_nemesis("all").unwrap();
        assert_eq!(nemesis_groups("all", &all), vec![all.clone()]);
        let list = parse_nemesis("partition,kill").unwrap();
        assert_eq!(
            nemesis_groups("partition,kill", &list),
            vec![vec![FaultKind::Partition], vec![FaultKind::Kill]]
        );
        let spelled = parse_nemesis("pause,kill,partition,network").unwrap();
        assert_eq!(
            nemesis_groups("pause,kill,partition,network", &spelled).len(),
            4
        );
        assert!(nemesis_groups("none", &[]).is_empty());
        assert!(nemesis_groups("all", &[]).is_empty());
    }

    #[test]
    fn shard_moves_join_all_only_when_sharded_and_run_beside_the_episodes() {
        let all = parse_nemesis("all").unwrap();
        assert!(!all.contains(&FaultKind::ShardMove), "{all:?}");
        assert_eq!(with_shard_moves("all", &all, false), all);
        let sharded = with_shard_moves("all", &all, true);
        assert_eq!(sharded.last(), Some(&FaultKind::ShardMove));
        // One coordinated nemesis for the episodes, one of its own for the moves.
        assert_eq!(
            nemesis_groups("all", &sharded),
            vec![all.clone(), vec![FaultKind::ShardMove]]
        );
        let listed = parse_nemesis("kill,shard-move").unwrap();
        assert_eq!(with_shard_moves("kill,shard-move", &listed, true), listed);
        assert_eq!(
            nemesis_groups("kill,shard-move", &listed),
            vec![vec![FaultKind::Kill], vec![FaultKind::ShardMove]]
        );
        let fault = ScheduledFault {
            nemesis: FaultKind::ShardMove,
            wait_ms: 10,
            hold_ms: 20,
            target: "random".into(),
            action: Action::ShardMove {
                moves: vec![ShardMoveStep {
                    shard: 3,
                    from: 1,
                    to: 2,
                }],
            },
            with_previous: false,
            group: None,
        };
        let text = serde_json::to_string(&fault).unwrap();
        assert!(
            text.contains(r#""nemesis":"shard-move""#) && text.contains(r#""do":"shard-move""#),
            "{text}"
        );
        assert_eq!(
            serde_json::from_str::<ScheduledFault>(&text).unwrap(),
            fault
        );
        assert!(fault.nodes().is_empty());
        assert_eq!(
            describe_moves(&[ShardMoveStep {
                shard: 3,
                from: 1,
                to: 2
            }]),
            "s3 g1->g2"
        );
    }

    #[test]
    fn combined_faults_round_trip_through_faults_json() {
        let combo = ScheduledFault {
            nemesis: FaultKind::Kill,
            wait_ms: 900,
            hold_ms: 1200,
            target: "leader".into(),
            action: Action::Kill { nodes: vec![2] },
            with_previous: true,
            group: Some(2),
        };
        let text = serde_json::to_string(&combo).unwrap();
        assert!(text.contains("\"with_previous\":true"), "{text}");
        assert!(text.contains("\"group\":2"), "{text}");
        assert_eq!(
            serde_json::from_str::<ScheduledFault>(&text).unwrap(),
            combo
        );
        // Files written before combinations existed still load, as single faults.
        let old = r#"{"nemesis":"kill","wait_ms":1,"hold_ms":2,"target":"all","action":{"do":"kill","nodes":[1,2,3]}}"#;
        let f: ScheduledFault = serde_json::from_str(old).unwrap();
        assert!(!f.with_previous);
        assert_eq!(f.group, None);
        let again = serde_json::to_string(&f).unwrap();
        assert!(
            !again.contains("with_previous") && !again.contains("group"),
            "{again}"
        );
    }

    #[test]
    fn targets_have_the_right_sizes() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        assert_eq!(choose_targets(Target::Minority, 5, None, &mut rng).len(), 2);
        assert_eq!(choose_targets(Target::Majority, 5, None, &mut rng).len(), 3);
        assert_eq!(choose_targets(Target::All, 3, None, &mut rng).len(), 3);
        assert_eq!(
            choose_targets(Target::Leader, 3, Some(2), &mut rng),
            vec![2]
        );
        assert_eq!(parse_nemesis("all").unwrap().len(), 4);
        assert_eq!(
            parse_nemesis("partition,network").unwrap(),
            vec![FaultKind::Partition, FaultKind::Network]
        );
        assert!(parse_nemesis("flood").is_err());
        // A kind named twice, adjacent or not, counts once.
        assert_eq!(
            parse_nemesis("all,kill").unwrap(),
            parse_nemesis("all").unwrap()
        );
        assert_eq!(
            parse_nemesis("kill,pause,kill").unwrap(),
            vec![FaultKind::Kill, FaultKind::Pause]
        );
        assert_eq!(
            parse_targets("majority,all").unwrap(),
            vec![Target::Majority, Target::All]
        );
        assert!(parse_targets("most").is_err());
        assert_eq!(parse_shapes("any").unwrap().len(), 6);
        // isolate-group only where there are groups.
        assert_eq!(shapes_for(&ALL_SHAPES, false).len(), 5);
        assert_eq!(shapes_for(&ALL_SHAPES, true), ALL_SHAPES.to_vec());
        assert_eq!(
            parse_shapes("isolate-leader").unwrap(),
            vec![Shape::IsolateLeader]
        );
        assert!(parse_shapes("ring").is_err());
    }

    #[test]
    fn network_faults_pick_links_and_behaviours_from_the_seed() {
        // One node's links, a minority's, everyone's.
        assert_eq!(describe_links(&network_links(&[1], 3)), "n1-n2 n2-n3");
        assert_eq!(network_links(&[0], 5).len(), 4);
        assert_eq!(network_links(&[0, 3], 5).len(), 4 + 3);
        assert_eq!(network_links(&[0, 1, 2, 3, 4], 5).len(), 10);
        assert!(network_links(&[0], 1).is_empty(), "one node has no links");
        for n in [3usize, 5] {
            for seed in 0..20 {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                for t in ALL_TARGETS {
                    let nodes = choose_targets(t, n, Some(0), &mut rng);
                    let links = network_links(&nodes, n);
                    assert!(links.iter().all(|&(a, b)| a < b && b < n));
                    assert!(links
                        .iter()
                        .all(|(a, b)| nodes.contains(a) || nodes.contains(b)));
                    // Every link touching a target is in.
                    for &x in &nodes {
                        assert_eq!(
                            links.iter().filter(|(a, b)| *a == x || *b == x).count(),
                            n - 1
                        );
                    }
                }
            }
        }
        assert_eq!(parse_behaviours("any").unwrap().len(), 3);
        assert_eq!(
            parse_behaviours("loss, duplicate").unwrap(),
            vec![BehaviourKind::Loss, BehaviourKind::Duplicate]
        );
        assert!(parse_behaviours("reorder").is_err());
        let draw = |seed, kinds: &[BehaviourKind]| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..50)
                .map(|_| choose_behaviour(kinds, &mut rng))
                .collect::<Vec<_>>()
        };
        let a = draw(4, &ALL_BEHAVIOURS);
        assert_eq!(a, draw(4, &ALL_BEHAVIOURS), "same seed, same schedule");
        assert_ne!(a, draw(5, &ALL_BEHAVIOURS));
        for b in &a {
            match *b {
                Behaviour::Delay {
                    delay_ms,
                    jitter_ms,
                } => {
                    assert!((NETWORK_DELAY_MS.0..=NETWORK_DELAY_MS.1).contains(&delay_ms));
                    assert!(jitter_ms <= delay_ms);
                }
                Behaviour::Loss { percent } => {
                    assert!((NETWORK_LOSS_PERCENT.0..=NETWORK_LOSS_PERCENT.1).contains(&percent))
                }
                Behaviour::Duplicate { percent } => assert!((NETWORK_DUPLICATE_PERCENT.0
                    ..=NETWORK_DUPLICATE_PERCENT.1)
                    .contains(&percent)),
            }
        }
        for kind in ALL_BEHAVIOURS {
            assert!(
                a.iter().any(|b| matches!(
                    (kind, b),
                    (BehaviourKind::Delay, Behaviour::Delay { .. })
                        | (BehaviourKind::Loss, Behaviour::Loss { .. })
                        | (BehaviourKind::Duplicate, Behaviour::Duplicate { .. })
                )),
                "{kind:?} never drawn in 50"
            );
        }
        assert!(draw(1, &[BehaviourKind::Loss])
            .iter()
            .all(|b| matches!(b, Behaviour::Loss { .. })));
    }
}
