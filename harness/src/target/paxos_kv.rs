//! The built-in target: `paxos-kv`, the store this workspace ships (with its planted bugs).

use super::{ConvergenceQuery, Dialer, LeaderQuery, NodeDirs, Protocol, Target};
use crate::cluster::Layout;
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

pub struct PaxosKv {
    binary: PathBuf,
    bug: Option<String>,
}

impl PaxosKv {
    /// `binary`: default `paxos-kv` next to `ordeal`.
    pub fn new(binary: Option<PathBuf>, bug: Option<String>) -> Result<PaxosKv> {
        let binary = match binary {
            Some(b) => b,
            None => super::ordeal_dir()?.join("paxos-kv"),
        };
        if !binary.is_file() {
            bail!(
                "store binary {} not found (build it with `cargo build --release -p paxos-kv`, or pass --target-bin)",
                binary.display()
            );
        }
        Ok(PaxosKv { binary, bug })
    }
}

/// `{id}={address}` for every node, as node `i` dials them: the peer itself with the kernel
/// backend, a proxy with the userspace one.
pub fn peer_list(i: usize, layout: &Layout, targets: &[Vec<std::net::SocketAddr>]) -> String {
    layout
        .nodes
        .iter()
        .enumerate()
        .map(|(j, other)| format!("{}={}", other.id, targets[i][j]))
        .collect::<Vec<_>>()
        .join(",")
}

/// With the userspace proxy, where node `i` forwards client requests for each other node
/// (`paxos-kv --peer-clients`); empty when nodes forward directly.
pub fn peer_client_list(i: usize, layout: &Layout) -> String {
    let Some(forward) = &layout.forward_target else {
        return String::new();
    };
    layout
        .nodes
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .map(|(j, other)| format!("{}={}", other.id, forward[i][j]))
        .collect::<Vec<_>>()
        .join(",")
}

impl Target for PaxosKv {
    fn name(&self) -> String {
        "paxos-kv".into()
    }

    fn binary(&self) -> &Path {
        &self.binary
    }

    fn version(&self) -> String {
        super::version_of(&self.binary, &["--version"])
    }

    fn protocol(&self) -> Protocol {
        Protocol::OrdealHttp
    }

    fn args(&self, i: usize, layout: &Layout, dirs: &NodeDirs) -> Vec<String> {
        let node = &layout.nodes[i];
        let mut args = vec![
            "--id".to_string(),
            node.id.to_string(),
            "--listen".into(),
            node.peer.to_string(),
            "--client".into(),
            node.client.to_string(),
            "--peers".into(),
            peer_list(i, layout, &layout.peer_target),
            "--data-dir".into(),
            dirs.data_dir.display().to_string(),
        ];
        let forward = peer_client_list(i, layout);
        if !forward.is_empty() {
            args.push("--peer-clients".into());
            args.push(forward);
        }
        if let Some(bug) = &self.bug {
            args.push("--bug".into());
            args.push(bug.clone());
        }
        args
    }

    fn leader_query(&self) -> LeaderQuery {
        LeaderQuery::OrdealStatus
    }

    fn convergence_query(&self) -> ConvergenceQuery {
        ConvergenceQuery::OrdealStatusDigest
    }

    fn peer_proxy(&self) -> std::result::Result<Dialer, String> {
        Ok(Dialer::Link)
    }

    fn binds_source_ip(&self) -> bool {
        true
    }
}
