//! What one run is: `ordeal test`'s options (`TestArgs`), each parsed by clap into its type
//! (workload, nemesis, network backend, consistency models, ranges, comma lists), the plan the
//! run uses (`RunPlan`), and what `config.json` records of them (`RunConfig`).
//!
//! The option list exists once, in `TestArgs`: its command line ([`TestArgs::to_cli`], from
//! which `reproduce` comes), a campaign test's fields ([`TestArgs::from_fields`]) and the
//! default test name all derive from it.

use crate::nemesis::{self, BehaviourKind, FaultKind, Shape};
use crate::net::NetChoice;
use crate::target::{ReadConsistency, TargetInfo};
use anyhow::{bail, Context, Result};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::Args;
use ordeal_checker::txn::Consistency;
use ordeal_workloads::WorkloadKind;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A clap parser accepting exactly `names` (so that a bad value's error lists them), each
/// parsed by the type's own `FromStr`.
fn one_of<T>(names: impl IntoIterator<Item = &'static str>) -> impl TypedValueParser<Value = T>
where
    T: FromStr + Clone + Send + Sync + 'static,
    T::Err: std::fmt::Display,
{
    PossibleValuesParser::new(names).try_map(|s| s.parse::<T>().map_err(|e| e.to_string()))
}

fn workload_names() -> [&'static str; 5] {
    WorkloadKind::ALL.map(WorkloadKind::as_str)
}

fn consistency_names() -> [&'static str; 5] {
    Consistency::ALL.map(Consistency::as_str)
}

fn read_consistency_names() -> [&'static str; 2] {
    [ReadConsistency::Linearizable, ReadConsistency::Local].map(ReadConsistency::as_str)
}

/// An item of a comma-list option, with the one function that parses the whole list.
pub trait ListItem: Sized + Clone + Send + Sync + std::fmt::Debug + 'static {
    fn parse_list(text: &str) -> Result<Vec<Self>>;
}

impl ListItem for FaultKind {
    fn parse_list(text: &str) -> Result<Vec<Self>> {
        nemesis::parse_nemesis(text)
    }
}

impl ListItem for nemesis::Target {
    fn parse_list(text: &str) -> Result<Vec<Self>> {
        nemesis::parse_targets(text)
    }
}

impl ListItem for nemesis::scope::Scope {
    fn parse_list(text: &str) -> Result<Vec<Self>> {
        nemesis::scope::parse_scopes(text)
    }
}

impl ListItem for Shape {
    fn parse_list(text: &str) -> Result<Vec<Self>> {
        nemesis::parse_shapes(text)
    }
}

impl ListItem for BehaviourKind {
    fn parse_list(text: &str) -> Result<Vec<Self>> {
        nemesis::parse_behaviours(text)
    }
}

/// A comma-list option (`--nemesis partition,kill`, `--partition-shapes any`): the text as
/// given, which is what the command line, `config.json` and campaign files hold, and what it
/// parses to, parsed once.
#[derive(Clone, Debug)]
pub struct ListOption<T> {
    text: String,
    pub items: Vec<T>,
}

impl<T> PartialEq for ListOption<T> {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl<T: ListItem> FromStr for ListOption<T> {
    type Err = anyhow::Error;
    fn from_str(text: &str) -> Result<Self> {
        Ok(ListOption {
            items: T::parse_list(text)?,
            text: text.to_string(),
        })
    }
}

impl<T> std::fmt::Display for ListOption<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// The option's text, so that it reads where a string did (`esc(&args.nemesis)`).
impl<T> std::ops::Deref for ListOption<T> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.text
    }
}

impl<T> Serialize for ListOption<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de, T: ListItem> Deserialize<'de> for ListOption<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map_err(|e| serde::de::Error::custom(format!("{e:#}")))
    }
}

/// `--nemesis`: `none`, `all` or a comma list of fault kinds.
pub type NemesisOption = ListOption<FaultKind>;

/// `MIN-MAX` milliseconds (`--nemesis-interval-ms 5000-10000`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsRange {
    pub min_ms: u64,
    pub max_ms: u64,
}

impl FromStr for MsRange {
    type Err = anyhow::Error;
    fn from_str(text: &str) -> Result<Self> {
        let (min_ms, max_ms) = parse_range(text, "range")?;
        Ok(MsRange { min_ms, max_ms })
    }
}

impl std::fmt::Display for MsRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.min_ms, self.max_ms)
    }
}

impl Serialize for MsRange {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for MsRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map_err(|e| serde::de::Error::custom(format!("{e:#}")))
    }
}

#[derive(Args, Debug, Clone, Serialize, Deserialize)]
pub struct TestArgs {
    /// The system under test: paxos-kv (built in), etcd (built in; `etcd` on PATH), or a
    /// target file `*.toml` (see targets/paxos-kv.toml and PROTOCOL.md).
    #[arg(long, default_value = "paxos-kv")]
    #[serde(default = "default_target")]
    pub target: String,
    #[arg(long, default_value = "register", value_parser = one_of::<WorkloadKind>(workload_names()))]
    pub workload: WorkloadKind,
    /// none | all | a comma list of pause, kill, partition, network, shard-move (`--groups`
    /// only). `all` is one coordinated schedule, one episode at a time (leader isolation,
    /// whole-cluster crash, leader crashes, other partitions, mixed), plus shard moves beside
    /// it with `--groups`; an explicit list runs one independent schedule per kind.
    #[arg(long, default_value = "none")]
    pub nemesis: NemesisOption,
    /// Nodes per Paxos group: the whole cluster, or with `--groups` the shard controller and
    /// each replica group.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Sharded paxos-kv: this many replica groups of `--nodes` nodes, plus a shard controller
    /// group of `--nodes` nodes (0: one unsharded group).
    #[arg(long, default_value_t = 0)]
    #[serde(default)]
    pub groups: usize,
    /// Sharded paxos-kv's concurrency control for transactions: 2pl or occ (the store's
    /// default when absent).
    #[arg(long, value_parser = ["2pl", "occ"])]
    #[serde(default)]
    pub cc: Option<String>,
    /// Sharded paxos-kv: how 2PL avoids deadlock, wound-wait or no-wait (the store's default,
    /// wound-wait, when absent).
    #[arg(long, value_parser = ["wound-wait", "no-wait"])]
    #[serde(default)]
    pub deadlock: Option<String>,
    /// Sharded paxos-kv: the number of shards, 1 to 4096 (the store's default, 16, when
    /// absent); the controller and every group get it.
    #[arg(long)]
    #[serde(default)]
    pub shards: Option<usize>,
    /// Length of the main phase, in seconds.
    #[arg(long = "time-limit", default_value_t = 60)]
    pub time_limit_s: u64,
    /// Target operations per second over all clients; 0 means as fast as they can.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Number of concurrent clients.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Seed for the generator, the fault schedule and the proxy; random when absent.
    #[arg(long)]
    pub seed: Option<u64>,
    /// A planted store bug to switch on (`paxos-kv --bug NAME`).
    #[arg(long)]
    pub bug: Option<String>,
    /// The network backend for partitions and network faults: netns (root), proxy, or auto
    /// (netns when possible, else proxy).
    #[arg(long, value_enum, default_value_t = NetChoice::Auto)]
    pub net: NetChoice,
    /// Where run directories go.
    #[arg(long, default_value = "results")]
    pub results: PathBuf,
    /// The target's binary; default: `paxos-kv` next to `ordeal`, `etcd` on PATH, or the target
    /// file's command.
    #[arg(long, alias = "store-bin")]
    #[serde(alias = "store_bin")]
    pub target_bin: Option<PathBuf>,
    /// How clients read: linearizable, or local (the node answers from its own state; etcd's
    /// serializable reads), which may be stale under a partition.
    #[arg(long, default_value = "linearizable", value_parser = one_of::<ReadConsistency>(read_consistency_names()))]
    #[serde(default)]
    pub read_consistency: ReadConsistency,
    /// Per-operation client timeout.
    #[arg(long, default_value_t = 1000)]
    pub op_timeout_ms: u64,
    /// Quiet time between faults, `MIN-MAX` milliseconds. The defaults (with the hold's) are
    /// the ones the generic schedule's detection figures were measured with
    /// (campaigns/detection.toml): about eight episodes in a 30 s run.
    #[arg(long, default_value = "1500-3000")]
    pub nemesis_interval_ms: MsRange,
    /// How long each fault is held, `MIN-MAX` milliseconds.
    #[arg(long, default_value = "2500-4000")]
    pub nemesis_hold_ms: MsRange,
    /// Which nodes pause, kill and network faults hit: `any` or a comma list of one,
    /// minority, majority, all, leader.
    #[arg(long, default_value = "any")]
    pub nemesis_targets: ListOption<nemesis::Target>,
    /// Sharded paxos-kv: where pause, kill, partition and network faults land, each fault
    /// drawing one of a comma list: any (every process; a leader-aimed fault picks a group,
    /// the controller's or a replica group's, then that group's leader), controller, group (a
    /// random replica group), group:N, coordinator (the leader of a group running two-phase
    /// commits, and its group). `--nemesis-targets` then picks nodes within the group and
    /// `--partition-shapes` splits it, or isolates it from the rest (isolate-group).
    #[arg(long, default_value = "any")]
    #[serde(default = "default_any_scope")]
    pub nemesis_scope: ListOption<nemesis::scope::Scope>,
    /// Which partitions to use: `any` or a comma list of isolate-one, isolate-leader, halves,
    /// majorities-ring, bridge, isolate-group (`--groups` only).
    #[arg(long, default_value = "any")]
    pub partition_shapes: ListOption<Shape>,
    /// What the network fault does: `any` or a comma list of delay, loss, duplicate.
    #[arg(long, default_value = "any")]
    #[serde(default = "default_any")]
    pub network_behaviours: ListOption<BehaviourKind>,
    /// Inject exactly the faults an earlier run injected (its `faults.json`, or its run
    /// directory) instead of drawing them: the same nodes, links, behaviours and timings.
    /// `--nemesis` must include every kind of fault in it.
    #[arg(long, value_name = "FILE")]
    #[serde(default)]
    pub replay_faults: Option<PathBuf>,
    /// Quiet time after healing before the final reads.
    #[arg(long, default_value_t = 3)]
    pub recovery_s: u64,
    /// Operations per key before moving to a fresh key (default per workload).
    #[arg(long)]
    pub ops_per_key: Option<u64>,
    /// The isolation model txn workloads are checked against.
    #[arg(long, default_value = "strict-serializable", value_parser = one_of::<Consistency>(consistency_names()))]
    #[serde(default = "default_consistency")]
    pub consistency: Consistency,
    /// Time budget of the workload checker.
    #[arg(long, default_value_t = 60)]
    pub check_time_limit_s: u64,
    /// Keep the history in memory while the test runs and write it only afterwards, for the
    /// checks (to measure what writing it costs; memory then grows with the run).
    #[arg(long)]
    pub no_history_file: bool,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Name of the test (the results sub-directory); default from workload, nemesis, nodes, bug.
    #[arg(long)]
    pub name: Option<String>,
}

/// `ordeal test`'s options, each parsed once: what the run uses.
#[derive(Clone, Debug)]
pub struct RunPlan {
    pub workload: WorkloadKind,
    pub consistency: ordeal_checker::txn::Consistency,
    pub read_consistency: ReadConsistency,
    pub net: NetChoice,
    pub faults: Vec<nemesis::FaultKind>,
    pub targets: Vec<nemesis::Target>,
    pub shapes: Vec<nemesis::Shape>,
    /// Sharded paxos-kv: where faults land (`[Any]` otherwise).
    pub scopes: Vec<nemesis::scope::Scope>,
    pub behaviours: Vec<nemesis::BehaviourKind>,
    pub interval_ms: (u64, u64),
    pub hold_ms: (u64, u64),
    /// An earlier run's faults to inject instead of drawn ones.
    pub replay: Option<Vec<nemesis::ScheduledFault>>,
}

/// What `config.json` holds: every option, resolved.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunConfig {
    pub args: TestArgs,
    pub seed: u64,
    pub net: String,
    pub net_note: String,
    /// The target's binary.
    pub store_bin: PathBuf,
    /// The target: name, file, binary, version, protocol.
    #[serde(default)]
    pub target: Option<TargetInfo>,
    pub reproduce: String,
    pub layout: serde_json::Value,
    pub started_at: String,
    pub ordeal_version: String,
}

fn default_target() -> String {
    "paxos-kv".into()
}

fn default_any() -> ListOption<BehaviourKind> {
    ListOption {
        text: "any".into(),
        items: nemesis::ALL_BEHAVIOURS.to_vec(),
    }
}

fn default_any_scope() -> ListOption<nemesis::scope::Scope> {
    ListOption {
        text: "any".into(),
        items: vec![nemesis::scope::Scope::Any],
    }
}

fn default_consistency() -> Consistency {
    Consistency::StrictSerializable
}

pub fn parse_range(s: &str, what: &str) -> Result<(u64, u64)> {
    let (a, b) = s
        .split_once('-')
        .with_context(|| format!("{what} {s:?}: expected MIN-MAX milliseconds"))?;
    let (a, b): (u64, u64) = (
        a.trim()
            .parse()
            .with_context(|| format!("{what} {s:?}: bad minimum"))?,
        b.trim()
            .parse()
            .with_context(|| format!("{what} {s:?}: bad maximum"))?,
    );
    if a > b {
        bail!("{what} {s:?}: minimum is above maximum");
    }
    Ok((a, b))
}

/// Options that are not part of what a run does: left out of `reproduce`.
const NOT_REPRODUCED: &[&str] = &["results", "name", "no_progress"];

impl TestArgs {
    /// `ordeal test`'s own defaults, as clap gives them.
    pub fn defaults() -> TestArgs {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: TestArgs,
        }
        <Wrapper as clap::Parser>::try_parse_from(["ordeal-test"])
            .map(|w| w.args)
            .expect("every option of ordeal test has a default or is optional")
    }

    /// Every option as clap knows it: (field name, long flag, takes a value).
    fn options() -> Vec<(String, String, bool)> {
        let cmd = <TestArgs as clap::Args>::augment_args(clap::Command::new("ordeal-test"));
        cmd.get_arguments()
            .filter_map(|a| {
                let long = a.get_long()?;
                Some((
                    a.get_id().to_string(),
                    long.to_string(),
                    a.get_action().takes_values(),
                ))
            })
            .collect()
    }

    /// Each option set, in the order clap lists them: (flag, value), with no value for a switch.
    fn cli_pairs(&self) -> Vec<(String, Option<String>)> {
        let fields = serde_json::to_value(self).unwrap_or_default();
        let mut out = Vec::new();
        for (id, long, takes_value) in Self::options() {
            let value = match fields.get(&id) {
                None | Some(serde_json::Value::Null) | Some(serde_json::Value::Bool(false)) => {
                    continue
                }
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
            };
            out.push((format!("--{long}"), takes_value.then_some(value)));
        }
        out
    }

    /// The command-line arguments that give these options (after `ordeal test`), each option
    /// once, from the one option list. Unset optional options and false switches are left out.
    pub fn to_cli(&self) -> Vec<String> {
        self.cli_pairs()
            .into_iter()
            .flat_map(|(flag, value)| std::iter::once(flag).chain(value))
            .collect()
    }

    /// Options from named fields (a campaign test's, field names as in `config.json`), every
    /// other option at its default. An unknown field or a bad value is an error naming it.
    pub fn from_fields(fields: &serde_json::Map<String, serde_json::Value>) -> Result<TestArgs> {
        let known: Vec<String> = Self::options().into_iter().map(|(id, _, _)| id).collect();
        let mut merged = match serde_json::to_value(Self::defaults()) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => bail!("the default options do not serialise to an object"),
        };
        for (k, v) in fields {
            let key = if k == "store_bin" {
                "target_bin"
            } else {
                k.as_str()
            };
            if !known.iter().any(|id| id == key) {
                bail!("unknown field `{k}`; known: {}", known.join(", "));
            }
            let v = match v {
                // Numbers and paths may be given as text in a campaign file.
                serde_json::Value::Number(_) if merged.get(key).is_some_and(|d| d.is_string()) => {
                    serde_json::Value::String(v.to_string())
                }
                _ => v.clone(),
            };
            let one: serde_json::Map<String, serde_json::Value> =
                [(key.to_string(), v.clone())].into_iter().collect();
            let mut probe = merged.clone();
            probe.extend(one);
            serde_json::from_value::<TestArgs>(serde_json::Value::Object(probe.clone()))
                .map_err(|e| anyhow::anyhow!("field `{k}` = {v}: {e}"))?;
            merged = probe;
        }
        let args: TestArgs = serde_json::from_value(serde_json::Value::Object(merged))
            .context("campaign test options")?;
        Ok(args)
    }

    /// Checks every option and parses each once into the typed plan the run uses.
    pub fn plan(&self) -> Result<RunPlan> {
        if !(1..=9).contains(&self.nodes) {
            bail!("--nodes {}: expected 1 to 9", self.nodes);
        }
        crate::target::paxos_kv_sharded::check_options(self)?;
        if self.concurrency == 0 || self.concurrency > 4096 {
            bail!("--concurrency {}: expected 1 to 4096", self.concurrency);
        }
        if self.rate < 0.0 || !self.rate.is_finite() {
            bail!("--rate {}: expected a non-negative number", self.rate);
        }
        let faults = nemesis::with_shard_moves(&self.nemesis, &self.nemesis.items, self.groups > 0);
        let replay = match &self.replay_faults {
            Some(path) => Some(nemesis::load_schedule(path, self.total_nodes(), &faults)?),
            None => None,
        };
        Ok(RunPlan {
            workload: self.workload,
            consistency: self.consistency,
            read_consistency: self.read_consistency,
            net: self.net,
            targets: self.nemesis_targets.items.clone(),
            shapes: nemesis::shapes_for(&self.partition_shapes.items, self.groups > 0),
            scopes: self.nemesis_scope.items.clone(),
            behaviours: self.network_behaviours.items.clone(),
            interval_ms: (
                self.nemesis_interval_ms.min_ms,
                self.nemesis_interval_ms.max_ms,
            ),
            hold_ms: (self.nemesis_hold_ms.min_ms, self.nemesis_hold_ms.max_ms),
            faults,
            replay,
        })
    }

    /// Every store process of the run: `--nodes`, or with `--groups` the controller's and every
    /// replica group's.
    pub fn total_nodes(&self) -> usize {
        if self.groups > 0 {
            (self.groups + 1) * self.nodes
        } else {
            self.nodes
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.plan().map(|_| ())
    }

    pub fn test_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            let mut n = String::new();
            if self.target != "paxos-kv" {
                let stem = Path::new(&self.target)
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| self.target.clone());
                n.push_str(&stem);
                n.push('-');
            }
            n.push_str(&format!(
                "{}-{}-{}n",
                self.workload,
                self.nemesis.to_string().replace(',', "+"),
                self.nodes
            ));
            if self.groups > 0 {
                n.push_str(&format!("-{}g", self.groups));
                if let Some(cc) = &self.cc {
                    n.push_str(&format!("-{cc}"));
                }
                if &*self.nemesis_scope != "any" {
                    n.push_str(&format!(
                        "-at-{}",
                        self.nemesis_scope.replace(',', "+").replace(':', "")
                    ));
                }
            }
            if self.read_consistency != ReadConsistency::Linearizable {
                n.push_str(&format!("-{}-reads", self.read_consistency));
            }
            if let Some(b) = &self.bug {
                n.push('-');
                n.push_str(b);
            }
            n
        })
    }

    /// The command that repeats this run: every option it ran with (not where its results
    /// went or its name), the seed it drew and the backend it got (`netns` or `proxy`).
    pub fn reproduce(&self, seed: u64, net: &str) -> String {
        let mut run = self.clone();
        run.seed = Some(seed);
        run.net = NetChoice::parse(net).unwrap_or(self.net);
        let mut words = vec!["ordeal".to_string(), "test".to_string()];
        let not_reproduced: Vec<String> = Self::options()
            .into_iter()
            .filter(|(id, _, _)| NOT_REPRODUCED.contains(&id.as_str()))
            .map(|(_, long, _)| format!("--{long}"))
            .collect();
        for (flag, value) in run.cli_pairs() {
            if not_reproduced.contains(&flag) {
                continue;
            }
            words.push(flag);
            words.extend(value.as_deref().map(shell_word));
        }
        words.join(" ")
    }
}

/// `word` quoted for a POSIX shell when it needs it.
fn shell_word(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./,:=+@%".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: TestArgs,
    }

    fn parse(words: &[&str]) -> std::result::Result<TestArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("ordeal-test").chain(words.iter().copied()))
            .map(|c| c.args)
    }

    #[test]
    fn the_command_line_round_trips_through_to_cli() {
        let args = parse(&[
            "--target",
            "etcd",
            "--workload",
            "list-append",
            "--nemesis",
            "partition,kill",
            "--net",
            "proxy",
            "--read-consistency",
            "local",
            "--consistency",
            "serializable",
            "--nemesis-interval-ms",
            "100-200",
            "--partition-shapes",
            "halves,bridge",
            "--seed",
            "7",
            "--rate",
            "0",
            "--no-history-file",
            "--name",
            "x y",
        ])
        .unwrap();
        let again = parse(&args.to_cli().iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        assert_eq!(
            serde_json::to_value(&args).unwrap(),
            serde_json::to_value(&again).unwrap()
        );
        assert_eq!(again.workload, WorkloadKind::ListAppend);
        assert_eq!(again.nemesis.items, [FaultKind::Partition, FaultKind::Kill]);
        assert_eq!(again.partition_shapes.items, [Shape::Halves, Shape::Bridge]);
        assert_eq!(
            again.nemesis_interval_ms,
            MsRange {
                min_ms: 100,
                max_ms: 200
            }
        );
        // reproduce: the drawn seed and the backend used, not where results went.
        let r = args.reproduce(9, "netns");
        assert!(r.starts_with("ordeal test "), "{r}");
        for w in [
            "--seed 9",
            "--net netns",
            "--target etcd",
            "--nemesis partition,kill",
            "--no-history-file",
        ] {
            assert!(r.contains(w), "{w:?} not in {r}");
        }
        assert!(!r.contains("--results") && !r.contains("--name"), "{r}");
    }

    #[test]
    fn bad_values_are_clap_errors_naming_the_valid_ones() {
        for (words, wanted) in [
            (
                &["--workload", "queue"][..],
                &["queue", "register", "list-append", "bank"][..],
            ),
            (&["--net", "vpn"], &["vpn", "auto", "netns", "proxy"]),
            (
                &["--read-consistency", "stale"],
                &["stale", "linearizable", "local"],
            ),
            (
                &["--consistency", "acid"],
                &["acid", "serializable", "snapshot-isolation"],
            ),
            (&["--nemesis", "flood"], &["flood", "partition"]),
            (
                &["--nemesis-hold-ms", "9-1"],
                &["9-1", "minimum is above maximum"],
            ),
            (
                &["--partition-shapes", "circle"],
                &["circle", "majorities-ring"],
            ),
        ] {
            let e = parse(words).expect_err("refused").to_string();
            for w in wanted {
                assert!(e.contains(w), "{words:?}: no {w:?} in {e}");
            }
        }
    }

    #[test]
    fn sharded_options_are_refused_without_groups_naming_the_option() {
        for (words, wanted) in [
            (&["--deadlock", "no-wait"][..], "--deadlock"),
            (&["--shards", "8"], "--shards"),
            (
                &["--nemesis-scope", "controller"],
                "--nemesis-scope controller",
            ),
            (&["--partition-shapes", "isolate-group"], "isolate-group"),
            (
                &["--groups", "2", "--nemesis-scope", "group:3"],
                "--nemesis-scope group:3",
            ),
            (&["--groups", "2", "--shards", "0"], "--shards 0"),
            (
                &["--groups", "2", "--cc", "occ", "--deadlock", "wound-wait"],
                "--deadlock",
            ),
        ] {
            let args = parse(words).unwrap();
            let e = format!("{:#}", args.validate().expect_err("refused"));
            assert!(e.contains(wanted), "{words:?}: no {wanted:?} in {e}");
        }
        // Clap names the deadlock modes the store has.
        let e = parse(&["--deadlock", "wait-die"]).unwrap_err().to_string();
        assert!(e.contains("wound-wait") && e.contains("no-wait"), "{e}");
        // With groups: accepted, and on the command line that reproduces the run.
        let args = parse(&[
            "--groups",
            "2",
            "--deadlock",
            "no-wait",
            "--shards",
            "8",
            "--nemesis-scope",
            "controller,group:2",
        ])
        .unwrap();
        let plan = args.plan().unwrap();
        assert_eq!(
            plan.scopes,
            [
                nemesis::scope::Scope::Controller,
                nemesis::scope::Scope::Group(Some(2))
            ]
        );
        assert!(plan.shapes.contains(&Shape::IsolateGroup));
        let r = args.reproduce(1, "netns");
        for w in [
            "--deadlock no-wait",
            "--shards 8",
            "--nemesis-scope controller,group:2",
        ] {
            assert!(r.contains(w), "{w:?} not in {r}");
        }
        // Unsharded, `any` shapes leave isolate-group out rather than refusing it.
        let plain = parse(&[]).unwrap().plan().unwrap();
        assert!(!plain.shapes.contains(&Shape::IsolateGroup));
        assert_eq!(plain.scopes, [nemesis::scope::Scope::Any]);
    }

    #[test]
    fn fields_give_the_same_options_as_flags() {
        let fields = serde_json::json!({
            "workload": "bank", "nemesis": "all", "time_limit_s": 5, "store_bin": "/x/paxos-kv",
            "nemesis_hold_ms": "10-20", "read_consistency": "local"
        });
        let from_fields = TestArgs::from_fields(fields.as_object().unwrap()).unwrap();
        let from_flags = parse(&[
            "--workload",
            "bank",
            "--nemesis",
            "all",
            "--time-limit",
            "5",
            "--target-bin",
            "/x/paxos-kv",
            "--nemesis-hold-ms",
            "10-20",
            "--read-consistency",
            "local",
        ])
        .unwrap();
        assert_eq!(
            serde_json::to_value(&from_fields).unwrap(),
            serde_json::to_value(&from_flags).unwrap()
        );
        let bad = serde_json::json!({"workload": "queue"});
        let e = TestArgs::from_fields(bad.as_object().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("`workload`") && e.contains("queue"), "{e}");
        let unknown = serde_json::json!({"wrokload": "bank"});
        let e = TestArgs::from_fields(unknown.as_object().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("`wrokload`") && e.contains("workload"), "{e}");
    }
}
