//! What one run is: `ordeal test`'s options (`TestArgs`), checked once, and what `config.json`
//! records of them (`RunConfig`). `reproduce` and the default test name derive from the options.

use crate::nemesis;
use crate::net::NetChoice;
use crate::target::{ReadConsistency, TargetInfo};
use anyhow::{bail, Context, Result};
use clap::Args;
use ordeal_workloads::WorkloadKind;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Args, Debug, Clone, Serialize, Deserialize)]
pub struct TestArgs {
    /// The system under test: paxos-kv (built in), etcd (built in; `etcd` on PATH), or a
    /// target file `*.toml` (see targets/paxos-kv.toml and PROTOCOL.md).
    #[arg(long, default_value = "paxos-kv")]
    #[serde(default = "default_target")]
    pub target: String,
    /// register | kv | list-append | rw-register | bank
    #[arg(long, default_value = "register")]
    pub workload: String,
    /// none | all | a comma list of pause, kill, partition, network
    #[arg(long, default_value = "none")]
    pub nemesis: String,
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
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
    /// auto | netns | proxy
    #[arg(long, default_value = "auto")]
    pub net: String,
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
    #[arg(long, default_value = "linearizable")]
    #[serde(default = "default_read_consistency")]
    pub read_consistency: String,
    /// Per-operation client timeout.
    #[arg(long, default_value_t = 1000)]
    pub op_timeout_ms: u64,
    /// Quiet time between faults, `MIN-MAX` milliseconds.
    #[arg(long, default_value = "5000-10000")]
    pub nemesis_interval_ms: String,
    /// How long each fault is held, `MIN-MAX` milliseconds.
    #[arg(long, default_value = "3000-8000")]
    pub nemesis_hold_ms: String,
    /// Which nodes pause, kill and network faults hit: `any` or a comma list of one,
    /// minority, majority, all, leader.
    #[arg(long, default_value = "any")]
    pub nemesis_targets: String,
    /// Which partitions to use: `any` or a comma list of isolate-one, isolate-leader, halves,
    /// majorities-ring, bridge.
    #[arg(long, default_value = "any")]
    pub partition_shapes: String,
    /// What the network fault does: `any` or a comma list of delay, loss, duplicate.
    #[arg(long, default_value = "any")]
    #[serde(default = "default_any")]
    pub network_behaviours: String,
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
    /// The isolation model txn workloads are checked against: read-committed, repeatable-read,
    /// snapshot-isolation, serializable or strict-serializable.
    #[arg(long, default_value = "strict-serializable")]
    #[serde(default = "default_consistency")]
    pub consistency: String,
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

fn default_read_consistency() -> String {
    "linearizable".into()
}

fn default_any() -> String {
    "any".into()
}

fn default_consistency() -> String {
    "strict-serializable".into()
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

impl TestArgs {
    /// Checks every option and parses each once into the typed plan the run uses.
    pub fn plan(&self) -> Result<RunPlan> {
        let workload = WorkloadKind::parse(&self.workload)?;
        let consistency = self
            .consistency
            .parse::<ordeal_checker::txn::Consistency>()
            .map_err(|e| anyhow::anyhow!("--consistency: {e}"))?;
        let faults = nemesis::parse_nemesis(&self.nemesis)?;
        let read_consistency = self
            .read_consistency
            .parse::<ReadConsistency>()
            .map_err(|e| anyhow::anyhow!("--read-consistency: {e}"))?;
        let net = NetChoice::parse(&self.net)?;
        if !(1..=9).contains(&self.nodes) {
            bail!("--nodes {}: expected 1 to 9", self.nodes);
        }
        if self.concurrency == 0 || self.concurrency > 4096 {
            bail!("--concurrency {}: expected 1 to 4096", self.concurrency);
        }
        if self.rate < 0.0 || !self.rate.is_finite() {
            bail!("--rate {}: expected a non-negative number", self.rate);
        }
        let replay = match &self.replay_faults {
            Some(path) => Some(nemesis::load_schedule(path, self.nodes, &faults)?),
            None => None,
        };
        Ok(RunPlan {
            workload,
            consistency,
            read_consistency,
            net,
            targets: nemesis::parse_targets(&self.nemesis_targets)?,
            shapes: nemesis::parse_shapes(&self.partition_shapes)?,
            behaviours: nemesis::parse_behaviours(&self.network_behaviours)?,
            interval_ms: parse_range(&self.nemesis_interval_ms, "--nemesis-interval-ms")?,
            hold_ms: parse_range(&self.nemesis_hold_ms, "--nemesis-hold-ms")?,
            faults,
            replay,
        })
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
                self.nemesis.replace(',', "+"),
                self.nodes
            ));
            if self.read_consistency != "linearizable" {
                n.push_str(&format!("-{}-reads", self.read_consistency));
            }
            if let Some(b) = &self.bug {
                n.push('-');
                n.push_str(b);
            }
            n
        })
    }

    /// The command that repeats this run.
    pub fn reproduce(&self, seed: u64, net: &str) -> String {
        let mut c = format!(
            "ordeal test --workload {} --nemesis {} --nodes {} --time-limit {} --rate {} --concurrency {} --seed {} --net {} --op-timeout-ms {} --nemesis-interval-ms {} --nemesis-hold-ms {} --recovery-s {}",
            self.workload, self.nemesis, self.nodes, self.time_limit_s, self.rate, self.concurrency, seed, net,
            self.op_timeout_ms, self.nemesis_interval_ms, self.nemesis_hold_ms, self.recovery_s
        );
        if self.target != "paxos-kv" {
            c.push_str(&format!(" --target {}", self.target));
        }
        if let Some(bin) = &self.target_bin {
            c.push_str(&format!(" --target-bin {}", bin.display()));
        }
        if self.read_consistency != "linearizable" {
            c.push_str(&format!(" --read-consistency {}", self.read_consistency));
        }
        if let Some(b) = &self.bug {
            c.push_str(&format!(" --bug {b}"));
        }
        if self.nemesis_targets != "any" {
            c.push_str(&format!(" --nemesis-targets {}", self.nemesis_targets));
        }
        if self.partition_shapes != "any" {
            c.push_str(&format!(" --partition-shapes {}", self.partition_shapes));
        }
        if self.network_behaviours != "any" {
            c.push_str(&format!(
                " --network-behaviours {}",
                self.network_behaviours
            ));
        }
        if let Some(k) = self.ops_per_key {
            c.push_str(&format!(" --ops-per-key {k}"));
        }
        if let Some(path) = &self.replay_faults {
            c.push_str(&format!(" --replay-faults {}", path.display()));
        }
        if self.consistency != "strict-serializable" {
            c.push_str(&format!(" --consistency {}", self.consistency));
        }
        c
    }
}
