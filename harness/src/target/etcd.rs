//! The built-in etcd target: a real etcd 3.4 cluster (Debian's `etcd-server`), one process per
//! node on 127.0.0.(10+id) with its own data directory, fsync left on. Clients speak its v3 JSON
//! gateway; the leader comes from `POST /v3/maintenance/status`.

use super::{ConvergenceQuery, Dialer, LeaderQuery, NodeDirs, Protocol, Target};
use crate::cluster::Layout;
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

pub struct Etcd {
    binary: PathBuf,
    /// One token per run, so that two runs' members never take each other for peers.
    cluster_token: String,
}

impl Etcd {
    /// `binary`: default `etcd` on PATH.
    pub fn new(binary: Option<PathBuf>) -> Result<Etcd> {
        let wanted = binary.unwrap_or_else(|| PathBuf::from("etcd"));
        let Some(binary) = super::find_program(&wanted) else {
            bail!(
                "etcd binary {} not found (install etcd 3.4, e.g. `apt-get install etcd-server`, or pass --target-bin)",
                wanted.display()
            );
        };
        Ok(Etcd {
            binary,
            cluster_token: format!("ordeal-{}", std::process::id()),
        })
    }
}

/// `n1=http://ip:port,...`: every member's advertised peer URL (the node itself, or the proxy in
/// front of it), the same list for every node.
pub fn initial_cluster(layout: &Layout) -> String {
    layout
        .nodes
        .iter()
        .enumerate()
        .map(|(j, n)| format!("{}=http://{}", n.name, layout.shared_peer_address(j)))
        .collect::<Vec<_>>()
        .join(",")
}

impl Target for Etcd {
    fn name(&self) -> String {
        "etcd".into()
    }

    fn binary(&self) -> &Path {
        &self.binary
    }

    fn version(&self) -> String {
        super::version_of(&self.binary, &["--version"])
    }

    fn protocol(&self) -> Protocol {
        Protocol::EtcdV3
    }

    fn args(&self, i: usize, layout: &Layout, dirs: &NodeDirs) -> Vec<String> {
        let node = &layout.nodes[i];
        // The node listens on its own address; peers reach it at its advertised one, which is
        // the proxy in front of it with the userspace backend.
        let listen_peer_url = format!("http://{}", node.peer);
        let advertise_peer_url = format!("http://{}", layout.shared_peer_address(i));
        let client_url = format!("http://{}", node.client);
        // On a restart the data directory wins and the --initial-* flags are ignored, so the
        // same command line serves both.
        vec![
            format!("--name={}", node.name),
            format!("--data-dir={}", dirs.data_dir.display()),
            format!("--listen-peer-urls={listen_peer_url}"),
            format!("--initial-advertise-peer-urls={advertise_peer_url}"),
            format!("--listen-client-urls={client_url}"),
            format!("--advertise-client-urls={client_url}"),
            format!("--initial-cluster={}", initial_cluster(layout)),
            "--initial-cluster-state=new".into(),
            format!("--initial-cluster-token={}", self.cluster_token),
            "--logger=zap".into(),
            "--log-outputs=stderr".into(),
        ]
    }

    fn leader_query(&self) -> LeaderQuery {
        LeaderQuery::EtcdStatus
    }

    fn convergence_query(&self) -> ConvergenceQuery {
        ConvergenceQuery::EtcdHash
    }

    fn peer_proxy(&self) -> std::result::Result<Dialer, String> {
        // Every member must be known by the same peer URLs (member ids hash them), so one proxy
        // stands in front of each node; etcd's raft transport names its sender's advertised
        // peer URLs in `X-PeerURLs` on every stream, pipeline and snapshot request.
        Ok(Dialer::HttpHeader("X-PeerURLs".into()))
    }

    fn binds_source_ip(&self) -> bool {
        false
    }
}
