//! Targets: the system under test, as Jepsen's `db`. A target says how to start node N (a
//! process on its own loopback address, data directory and log), how to tell it is up, how to
//! find the leader, its version, whether its nodes can be told apart on the wire, and the client
//! protocol it speaks. [`crate::cluster::Cluster`] does the process control (start, stop, kill,
//! pause, resume, wipe) for every target alike, so the runner knows no store by name.
//!
//! Built in: [`PaxosKv`] (the default, with `--bug`) and [`Etcd`]; anything else is a TOML
//! target file ([`TomlTarget`], see `targets/paxos-kv.toml` and PROTOCOL.md).

pub mod etcd;
pub mod paxos_kv;
pub mod paxos_kv_sharded;
pub mod toml_target;

pub use etcd::Etcd;
pub use ordeal_workloads::{Client, ClientConfig, Protocol, ReadConsistency};
pub use paxos_kv::PaxosKv;
pub use toml_target::TomlTarget;

use crate::cluster::Layout;
pub use crate::net::Dialer;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Where one node keeps its state and its output.
#[derive(Clone, Debug)]
pub struct NodeDirs {
    pub data_dir: PathBuf,
    /// Where the harness sends the node's stdout and stderr.
    pub log_path: PathBuf,
}

/// How the harness finds the leader.
#[derive(Clone, Debug)]
pub enum LeaderQuery {
    /// No way to ask: leader-targeted faults hit the first node.
    None,
    /// `GET /status` on every node (DESIGN's store API): the node with `role == "leader"` and
    /// the highest ballot.
    OrdealStatus,
    /// `POST /v3/maintenance/status` on every node: the one whose `leader` is its own
    /// `header.member_id`, highest `raft_term` first.
    EtcdStatus,
    /// `GET {path}` on every node: the node whose JSON reply has `field == value`.
    Http {
        path: String,
        field: String,
        value: String,
    },
}

/// How the harness checks, after healing, that the replicas hold the same state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConvergenceQuery {
    /// Not checked (the target offers no way): the check says so and does not judge.
    None,
    /// `GET /status`: equal `digest` once `applied_index` agrees.
    OrdealStatusDigest,
    /// `POST /v3/maintenance/hash`: equal `hash` at equal applied raft index.
    EtcdHash,
}

/// What the report and `config.json` say about the target.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TargetInfo {
    /// `paxos-kv`, `etcd`, or the target file's `name`.
    pub name: String,
    /// The target file, for a TOML target.
    pub file: Option<PathBuf>,
    pub binary: PathBuf,
    /// The first line its version command prints (`etcd --version`), or why it is unknown.
    pub version: String,
    pub protocol: Protocol,
}

/// A system under test. Process control is the [`crate::cluster::Cluster`]'s; a target
/// supplies what differs between stores.
pub trait Target: Send + Sync {
    fn name(&self) -> String;
    /// The program every node runs.
    fn binary(&self) -> &Path;
    /// The version, as the binary reports it.
    fn version(&self) -> String;
    fn protocol(&self) -> Protocol;
    /// The arguments of node `i` (0-based) in `layout`.
    fn args(&self, i: usize, layout: &Layout, dirs: &NodeDirs) -> Vec<String>;
    fn leader_query(&self) -> LeaderQuery;
    fn convergence_query(&self) -> ConvergenceQuery;
    /// A path that answers 2xx on the client port once the node serves (besides a leader, if
    /// the target has a leader query). None: the client port accepting a connection.
    fn ready_path(&self) -> Option<String> {
        None
    }
    /// How the userspace proxy sits between this target's peers: [`Dialer::Link`] when every
    /// node is given its own list of peer addresses (a proxy per directed link); a shared
    /// dialler kind when all nodes must dial one address per peer (etcd's `--initial-cluster`),
    /// so one proxy stands in front of each node and tells diallers apart. Err: why it cannot
    /// (then only the kernel backend can cut links).
    fn peer_proxy(&self) -> std::result::Result<Dialer, String>;
    /// True when a node dials its peers from its own address (127.0.0.(10+id)). False: the
    /// kernel backend rewrites its outgoing source address (SNAT by the node's group id), so
    /// that partition rules between node addresses see the real link.
    fn binds_source_ip(&self) -> bool;
    /// Where node `i` writes its log, if not (only) to stdout and stderr.
    fn extra_log(&self, _i: usize, _layout: &Layout, _dirs: &NodeDirs) -> Option<PathBuf> {
        None
    }
    /// The target file, for a TOML target.
    fn file(&self) -> Option<&Path> {
        None
    }
    fn info(&self) -> TargetInfo {
        TargetInfo {
            name: self.name(),
            file: self.file().map(Path::to_path_buf),
            binary: self.binary().to_path_buf(),
            version: self.version(),
            protocol: self.protocol(),
        }
    }
}

/// Which target `--target` names: `paxos-kv`, `etcd`, or a path to a TOML target file.
pub fn resolve(
    choice: &str,
    target_bin: Option<&Path>,
    bug: Option<&str>,
) -> Result<std::sync::Arc<dyn Target>> {
    match choice {
        "paxos-kv" => Ok(std::sync::Arc::new(PaxosKv::new(
            target_bin.map(Path::to_path_buf),
            bug.map(str::to_string),
        )?)),
        "etcd" => {
            if let Some(b) = bug {
                bail!("--bug {b}: planted bugs are paxos-kv's; etcd has none to switch on");
            }
            Ok(std::sync::Arc::new(Etcd::new(
                target_bin.map(Path::to_path_buf),
            )?))
        }
        path if path.ends_with(".toml") || Path::new(path).is_file() => Ok(std::sync::Arc::new(
            TomlTarget::load(Path::new(path), target_bin, bug)?,
        )),
        other => {
            bail!("--target {other:?}: expected paxos-kv, etcd, or a target file ending in .toml")
        }
    }
}

/// Finds `program` as a path or on PATH.
pub fn find_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// The first line `binary args` prints (stdout, else stderr), or why there is none.
pub fn version_of(binary: &Path, args: &[&str]) -> String {
    match std::process::Command::new(binary)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("running {} {}", binary.display(), args.join(" ")))
    {
        Ok(out) => {
            let text = if out.stdout.is_empty() {
                out.stderr
            } else {
                out.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        }
        Err(e) => format!("unknown ({e:#})"),
    }
}

/// The directory `ordeal` runs from: where the built-in store is looked for.
pub fn ordeal_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the ordeal binary")?;
    Ok(exe
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".")))
}
