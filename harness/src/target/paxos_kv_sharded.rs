//! Sharded paxos-kv (`ordeal test --target paxos-kv --groups N --nodes M`): a shard controller
//! group of M nodes and N replica groups of M nodes each, every node a process on its own
//! loopback address, as the unsharded target's.
//!
//! The run's nodes are numbered as one cluster, so that every fault can hit any process:
//! n1..nM are the controller, then M nodes per replica group (group g is n(gM+1)..n(gM+M)).
//! Each node's `--peers` names only its own group; a group node gets `--mode group
//! --group-id g --controller <controller client addresses>`, `--cc` and `--bug` (the
//! controller gets neither: it has no transactions, and the planted bugs are the groups').
//!
//! Nodes talk to nodes of other groups and to the controller over HTTP, at the addresses the
//! controller's configuration lists (the harness joins every group with them) and `--controller`
//! names. With the userspace proxy those are the listeners in front of each node's client port
//! (`Layout::forward_target`), which tell the dialling node by its source address (the store
//! binds its node's address for all its HTTP), so that partitions and network faults apply to
//! inter-group and group-controller traffic too; peer links have a proxy each, within groups.
//! The harness's own clients dial the real client addresses: the router translates
//! ([`ShardControl::router`]), so client traffic never passes the proxy.
//!
//! [`ShardControl`] is the harness's side of the controller: the joins at start-up, the wait
//! for a configuration where every shard is owned and every group has applied it, the
//! `shard-move` fault's moves, and each group's replicas for the convergence check. Clients
//! route through [`ordeal_workloads::ShardRouter`].

use super::{ConvergenceQuery, Dialer, LeaderQuery, NodeDirs, Protocol, Target};
use crate::cluster::Layout;
use crate::nemesis::scope::Scope;
use crate::plan::TestArgs;
use anyhow::{bail, Context, Result};
use ordeal_workloads::{ShardConfig, ShardRouter};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Most processes a sharded run may start: node ids go up to this in the layout's port block
/// (peer ports base+1.., client ports base+21..).
pub const MAX_PROCESSES: usize = 19;

/// Most shards paxos-kv accepts (`--shards`).
pub const MAX_SHARDS: usize = 4096;

/// How long one controller request may take before the next controller node is tried.
const CONTROLLER_REQUEST_MS: u64 = 1500;

/// How long the nemesis waits for a node's `/status` when looking for the coordinator.
const COORDINATOR_QUERY_MS: u64 = 400;

/// Refuses option combinations a sharded run cannot do, naming the option.
pub fn check_options(args: &TestArgs) -> Result<()> {
    let shard_moves = args
        .nemesis
        .items
        .contains(&crate::nemesis::FaultKind::ShardMove);
    let scoped = args.nemesis_scope.items != [Scope::Any];
    let isolate_group = args
        .partition_shapes
        .items
        .contains(&crate::nemesis::Shape::IsolateGroup);
    if args.groups == 0 {
        if args.cc.is_some() {
            bail!("--cc: concurrency control is sharded paxos-kv's; add --groups N");
        }
        if args.deadlock.is_some() {
            bail!("--deadlock: deadlock avoidance is sharded paxos-kv's 2PL; add --groups N");
        }
        if args.shards.is_some() {
            bail!("--shards: only sharded paxos-kv has shards; add --groups N");
        }
        if shard_moves {
            bail!("--nemesis shard-move: shards move only in sharded paxos-kv; add --groups N");
        }
        if scoped {
            bail!(
                "--nemesis-scope {}: scopes name sharded paxos-kv's groups; add --groups N",
                &*args.nemesis_scope
            );
        }
        // `any` includes it, and an unsharded run leaves it out; named, it is a mistake.
        if isolate_group && &*args.partition_shapes != "any" {
            bail!(
                "--partition-shapes isolate-group: only a sharded run has groups; add --groups N"
            );
        }
        return Ok(());
    }
    if let Some(g) = args.nemesis_scope.items.iter().find_map(|s| match s {
        Scope::Group(Some(g)) if *g > args.groups => Some(*g),
        _ => None,
    }) {
        bail!(
            "--nemesis-scope group:{g}: this run has replica groups 1 to {}",
            args.groups
        );
    }
    if args.deadlock.is_some() && args.cc.as_deref() == Some("occ") {
        bail!("--deadlock: only 2PL avoids deadlocks; --cc occ has no locks to wait on");
    }
    if let Some(shards) = args.shards {
        if !(1..=MAX_SHARDS).contains(&shards) {
            bail!("--shards {shards}: expected 1 to {MAX_SHARDS}");
        }
    }
    if args.target != "paxos-kv" {
        bail!(
            "--groups: only the built-in paxos-kv target is sharded, not {:?}",
            args.target
        );
    }
    if args.total_nodes() > MAX_PROCESSES {
        bail!(
            "--groups {} --nodes {}: {} processes (a controller group and {} replica groups); at most {MAX_PROCESSES}",
            args.groups,
            args.nodes,
            args.total_nodes(),
            args.groups
        );
    }
    Ok(())
}

pub struct PaxosKvSharded {
    binary: PathBuf,
    bug: Option<String>,
    cc: Option<String>,
    per_group: usize,
    /// `--deadlock` and `--shards`, as given.
    deadlock: Option<String>,
    shards: Option<usize>,
}

impl PaxosKvSharded {
    pub fn new(args: &TestArgs) -> Result<PaxosKvSharded> {
        let single = super::PaxosKv::new(args.target_bin.clone(), None)?;
        Ok(PaxosKvSharded {
            binary: single.binary().to_path_buf(),
            bug: args.bug.clone(),
            cc: args.cc.clone(),
            per_group: args.nodes,
            deadlock: args.deadlock.clone(),
            shards: args.shards,
        })
    }

    /// The options of group `g`'s nodes that `ordeal test` passes through as given:
    /// `--shards` for every group (they must agree), `--deadlock` for replica groups.
    fn pass_through(&self, g: usize) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(n) = self.shards {
            args.extend(["--shards".to_string(), n.to_string()]);
        }
        if let (Some(d), true) = (&self.deadlock, g > 0) {
            args.extend(["--deadlock".to_string(), d.clone()]);
        }
        args
    }
}

/// The group of process `i` (0: the controller) when groups have `per_group` nodes.
pub fn group_of(i: usize, per_group: usize) -> usize {
    i / per_group.max(1)
}

impl Target for PaxosKvSharded {
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
        let g = group_of(i, self.per_group);
        let first = g * self.per_group;
        let members = first..(first + self.per_group).min(layout.nodes.len());
        let node = &layout.nodes[i];
        let peers = members
            .clone()
            .map(|j| format!("{}={}", j - first + 1, layout.peer_target[i][j]))
            .collect::<Vec<_>>()
            .join(",");
        // With the proxy: where this node sends the requests it forwards to its group's leader.
        let forward = members
            .filter(|&j| j != i && layout.forward_target.is_some())
            .map(|j| format!("{}={}", j - first + 1, http_address(layout, i, j)))
            .collect::<Vec<_>>()
            .join(",");
        let mut args = vec![
            "--id".to_string(),
            (i - first + 1).to_string(),
            "--listen".into(),
            node.peer.to_string(),
            "--client".into(),
            node.client.to_string(),
            "--peers".into(),
            peers,
            "--data-dir".into(),
            dirs.data_dir.display().to_string(),
        ];
        args.extend(self.pass_through(g));
        if !forward.is_empty() {
            args.extend(["--peer-clients".into(), forward]);
        }
        if g == 0 {
            args.extend(["--mode".into(), "controller".into()]);
            return args;
        }
        let controller = (0..self.per_group.min(layout.nodes.len()))
            .map(|c| http_address(layout, i, c).to_string())
            .collect::<Vec<_>>()
            .join(",");
        args.extend([
            "--mode".into(),
            "group".into(),
            "--group-id".into(),
            g.to_string(),
            "--controller".into(),
            controller,
        ]);
        if let Some(cc) = &self.cc {
            args.extend(["--cc".into(), cc.clone()]);
        }
        if let Some(bug) = &self.bug {
            args.extend(["--bug".into(), bug.clone()]);
        }
        args
    }

    fn leader_query(&self) -> LeaderQuery {
        LeaderQuery::OrdealStatus
    }

    fn convergence_query(&self) -> ConvergenceQuery {
        ConvergenceQuery::OrdealStatusDigest
    }

    /// A proxy per directed peer link within each group; HTTP between nodes through one proxy
    /// in front of each node's client port (see the module's documentation).
    fn peer_proxy(&self) -> std::result::Result<Dialer, String> {
        Ok(Dialer::Link)
    }

    fn binds_source_ip(&self) -> bool {
        true
    }
}

/// Where node `from` reaches node `to`'s client API: the proxy in front of it, or the node.
fn http_address(layout: &Layout, from: usize, to: usize) -> std::net::SocketAddr {
    match &layout.forward_target {
        Some(f) if from != to => f[from][to],
        _ => layout.nodes[to].client,
    }
}

/// The address other nodes reach node `i`'s client API at, as the controller's configuration
/// lists it: the listener in front of it with the proxy (the same for every dialler), else the
/// node's own client address.
pub fn advertised_client(layout: &Layout, i: usize) -> std::net::SocketAddr {
    match (0..layout.nodes.len()).find(|&k| k != i) {
        Some(k) => http_address(layout, k, i),
        None => layout.nodes[i].client,
    }
}

/// The harness's side of the shard controller and the groups' status.
pub struct ShardControl {
    pub groups: usize,
    pub per_group: usize,
    /// Every process's client address (`ip:port`) and name, in layout order.
    clients: Vec<String>,
    /// Every process's client address as other nodes dial it and the controller's
    /// configuration lists it (a proxy's, with the userspace proxy).
    advertised: Vec<String>,
    names: Vec<String>,
    http: reqwest::Client,
}

impl ShardControl {
    pub fn new(layout: &Layout, groups: usize, per_group: usize) -> Result<ShardControl> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(CONTROLLER_REQUEST_MS))
            .connect_timeout(Duration::from_millis(300))
            .build()
            .context("building the shard controller client")?;
        Ok(ShardControl {
            groups,
            per_group,
            clients: layout.nodes.iter().map(|n| n.client.to_string()).collect(),
            advertised: (0..layout.nodes.len())
                .map(|i| advertised_client(layout, i).to_string())
                .collect(),
            names: layout.nodes.iter().map(|n| n.name.clone()).collect(),
            http,
        })
    }

    /// The process indices of group `g` (0: the controller).
    pub fn members(&self, g: usize) -> std::ops::Range<usize> {
        g * self.per_group..(g + 1) * self.per_group
    }

    /// The groups as people read them: `controller n1,n2,n3; g1 n4,n5,n6; ...`.
    pub fn describe(&self) -> String {
        (0..=self.groups)
            .map(|g| {
                let who = if g == 0 {
                    "controller".to_string()
                } else {
                    format!("g{g}")
                };
                let names: Vec<&str> = self.members(g).map(|i| self.names[i].as_str()).collect();
                format!("{who} {}", names.join(","))
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The router clients use: the controller's addresses and every node's name, dialling
    /// each node's own client address where the configuration lists a proxy's.
    pub fn router(&self) -> Result<ShardRouter> {
        let names: HashMap<String, String> = self
            .clients
            .iter()
            .cloned()
            .zip(self.names.iter().cloned())
            .collect();
        let dial: HashMap<String, String> = self
            .advertised
            .iter()
            .cloned()
            .zip(self.clients.iter().cloned())
            .filter(|(advertised, own)| advertised != own)
            .collect();
        Ok(
            ShardRouter::new(self.clients[self.members(0)].to_vec(), names)
                .context("building the shard router")?
                .with_dial_addresses(dial),
        )
    }

    async fn request(&self, addr: &str, path: &str, body: Option<&Value>) -> Option<(u16, Value)> {
        let url = format!("http://{addr}{path}");
        let rb = match body {
            Some(b) => self.http.post(url).json(b),
            None => self.http.get(url),
        };
        let resp = rb.send().await.ok()?;
        let code = resp.status().as_u16();
        let text = resp.text().await.ok()?;
        Some((code, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// A controller command on each controller node in turn, until one answers 200 or
    /// `within` passes. Err: the last answer.
    async fn controller_post(&self, path: &str, body: &Value, within: Duration) -> Result<Value> {
        let deadline = Instant::now() + within;
        let mut last;
        loop {
            for i in self.members(0) {
                match self.request(&self.clients[i], path, Some(body)).await {
                    Some((200, v)) => return Ok(v),
                    Some((code, v)) => last = format!("{}: {code} {v}", self.names[i]),
                    None => last = format!("{}: no answer", self.names[i]),
                }
                if Instant::now() >= deadline {
                    bail!("controller {path} {body}: {last}");
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The controller's latest configuration (linearizable, from any controller node).
    pub async fn config(&self) -> Option<ShardConfig> {
        for i in self.members(0) {
            if let Some((200, v)) = self.request(&self.clients[i], "/shards/config", None).await {
                if let Ok(c) = serde_json::from_value(v) {
                    return Some(c);
                }
            }
        }
        None
    }

    /// Joins every replica group (members: its nodes' client addresses as other nodes dial
    /// them).
    pub async fn join_all(&self, within: Duration) -> Result<ShardConfig> {
        let mut last = Value::Null;
        for g in 1..=self.groups {
            let members: Vec<&str> = self
                .members(g)
                .map(|i| self.advertised[i].as_str())
                .collect();
            last = self
                .controller_post(
                    "/shards/join",
                    &json!({"group": g, "members": members}),
                    within,
                )
                .await
                .with_context(|| format!("joining group {g}"))?;
        }
        serde_json::from_value(last.clone())
            .with_context(|| format!("the controller's config after the joins: {last}"))
    }

    /// Asks the controller to move `shard` to group `to`; the new config's number.
    pub async fn move_shard(&self, shard: usize, to: usize, within: Duration) -> Result<u64> {
        let v = self
            .controller_post(
                "/shards/move",
                &json!({"shard": shard, "group": to}),
                within,
            )
            .await?;
        v["num"]
            .as_u64()
            .with_context(|| format!("the controller's answer to a move has no num: {v}"))
    }

    /// Node `i`'s `/status`.
    async fn status(&self, i: usize) -> Option<Value> {
        match self.request(&self.clients[i], "/status", None).await {
            Some((200, v)) => Some(v),
            _ => None,
        }
    }

    /// The replica groups coordinating two-phase commits now: those whose leader reports
    /// coordinator records in `/status` (`coordinator_records`, transactions it runs 2PC for,
    /// decided or not until every participant acknowledged). Each node is asked once, with a
    /// short timeout, so that a paused node delays a fault by little.
    pub async fn coordinating_groups(&self) -> Vec<usize> {
        let ask = |i: usize| async move {
            let url = format!("http://{}/status", self.clients[i]);
            let resp = self
                .http
                .get(url)
                .timeout(Duration::from_millis(COORDINATOR_QUERY_MS))
                .send()
                .await
                .ok()?;
            let s: Value = resp.json().await.ok()?;
            let records = s["coordinator_records"].as_u64().unwrap_or(0);
            (s["role"] == "leader" && records > 0).then_some(group_of(i, self.per_group))
        };
        let everyone = (1..=self.groups).flat_map(|g| self.members(g));
        let mut groups: Vec<usize> = futures::future::join_all(everyone.map(ask))
            .await
            .into_iter()
            .flatten()
            .collect();
        groups.sort_unstable();
        groups.dedup();
        groups
    }

    /// Waits until every shard is owned and every replica group's leader has applied the
    /// latest configuration and finished its moves. Returns that configuration.
    pub async fn wait_settled(&self, within: Duration) -> Result<ShardConfig> {
        let deadline = Instant::now() + within;
        loop {
            let mut why = String::new();
            match self.config().await {
                None => why = "no controller config".into(),
                Some(cfg) if !cfg.all_owned() => {
                    why = format!("config {} leaves shards unowned", cfg.num)
                }
                Some(cfg) => {
                    for g in 1..=self.groups {
                        let statuses =
                            futures::future::join_all(self.members(g).map(|i| self.status(i)))
                                .await;
                        let settled = statuses.iter().flatten().any(|s| {
                            s["role"] == "leader"
                                && s["config"] == json!(cfg.num)
                                && s["migration_done"] == json!(true)
                        });
                        if !settled {
                            why = format!("group {g} has not applied config {}", cfg.num);
                            break;
                        }
                    }
                    if why.is_empty() {
                        return Ok(cfg);
                    }
                }
            }
            if Instant::now() >= deadline {
                bail!("the shards did not settle within {within:?}: {why}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The convergence check's groups: (name, process indices), the controller first.
    pub fn convergence_groups(&self) -> Vec<(String, Vec<usize>)> {
        (0..=self.groups)
            .map(|g| {
                let name = if g == 0 {
                    "controller".to_string()
                } else {
                    format!("group {g}")
                };
                (name, self.members(g).collect())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::NodeAddr;

    fn layout(n: usize) -> Layout {
        let nodes: Vec<NodeAddr> = (1..=n)
            .map(|id| NodeAddr {
                id,
                name: format!("n{id}"),
                peer: format!("127.0.0.{}:7{id:03}", 10 + id).parse().unwrap(),
                client: format!("127.0.0.{}:8{id:03}", 10 + id).parse().unwrap(),
            })
            .collect();
        let peer_target = (0..n)
            .map(|_| nodes.iter().map(|a| a.peer).collect())
            .collect();
        Layout {
            nodes,
            peer_target,
            forward_target: None,
        }
    }

    #[test]
    fn each_node_peers_with_its_own_group_only() {
        let target = PaxosKvSharded {
            binary: "/bin/true".into(),
            bug: Some("early-lock-release".into()),
            cc: Some("occ".into()),
            per_group: 3,
            deadlock: Some("no-wait".into()),
            shards: Some(8),
        };
        let l = layout(9);
        let dirs = NodeDirs {
            data_dir: "/tmp/x".into(),
            log_path: "/tmp/x.log".into(),
        };
        let arg = |args: &[String], flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .map(|p| args[p + 1].clone())
        };
        let c = target.args(1, &l, &dirs);
        assert_eq!(arg(&c, "--mode").as_deref(), Some("controller"));
        assert_eq!(arg(&c, "--id").as_deref(), Some("2"));
        assert_eq!(
            arg(&c, "--bug"),
            None,
            "the controller runs without planted bugs"
        );
        assert_eq!(
            arg(&c, "--peers").unwrap(),
            "1=127.0.0.11:7001,2=127.0.0.12:7002,3=127.0.0.13:7003"
        );
        let g = target.args(7, &l, &dirs);
        assert_eq!(arg(&g, "--mode").as_deref(), Some("group"));
        assert_eq!(arg(&g, "--group-id").as_deref(), Some("2"));
        assert_eq!(arg(&g, "--id").as_deref(), Some("2"));
        assert_eq!(
            arg(&g, "--peers").unwrap(),
            "1=127.0.0.17:7007,2=127.0.0.18:7008,3=127.0.0.19:7009"
        );
        assert_eq!(
            arg(&g, "--controller").unwrap(),
            "127.0.0.11:8001,127.0.0.12:8002,127.0.0.13:8003"
        );
        assert_eq!(arg(&g, "--cc").as_deref(), Some("occ"));
        assert_eq!(arg(&g, "--bug").as_deref(), Some("early-lock-release"));
        assert_eq!(arg(&g, "--deadlock").as_deref(), Some("no-wait"));
        assert_eq!(arg(&g, "--shards").as_deref(), Some("8"));
        // The controller numbers the same shards, and has no locks.
        assert_eq!(arg(&c, "--shards").as_deref(), Some("8"));
        assert_eq!(arg(&c, "--deadlock"), None);
        let control = ShardControl::new(&l, 2, 3).unwrap();
        assert_eq!(
            control.describe(),
            "controller n1,n2,n3; g1 n4,n5,n6; g2 n7,n8,n9"
        );
        assert_eq!(control.members(2), 6..9);
        assert_eq!(arg(&g, "--peer-clients"), None, "nodes forward directly");
    }

    /// With the userspace proxy, every node reaches other nodes' client APIs (forwarding within
    /// its group, the controller, other groups as joined) through the listener in front of
    /// each, and the harness's clients still dial the nodes themselves.
    #[test]
    fn with_the_proxy_nodes_dial_the_listeners_in_front_of_client_ports() {
        let target = PaxosKvSharded {
            binary: "/bin/true".into(),
            bug: None,
            cc: None,
            per_group: 3,
            deadlock: None,
            shards: None,
        };
        let mut l = layout(9);
        let front = |j: usize| -> std::net::SocketAddr {
            format!("127.0.0.1:{}", 9001 + j).parse().unwrap()
        };
        l.forward_target = Some(
            (0..9)
                .map(|i| {
                    (0..9)
                        .map(|j| if i == j { l.nodes[j].client } else { front(j) })
                        .collect()
                })
                .collect(),
        );
        let dirs = NodeDirs {
            data_dir: "/tmp/x".into(),
            log_path: "/tmp/x.log".into(),
        };
        let arg = |args: &[String], flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .map(|p| args[p + 1].clone())
        };
        let g = target.args(4, &l, &dirs);
        assert_eq!(
            arg(&g, "--peer-clients").unwrap(),
            "1=127.0.0.1:9004,3=127.0.0.1:9006",
            "group-local ids, the other members only"
        );
        assert_eq!(
            arg(&g, "--controller").unwrap(),
            "127.0.0.1:9001,127.0.0.1:9002,127.0.0.1:9003"
        );
        let c = target.args(0, &l, &dirs);
        assert_eq!(
            arg(&c, "--peer-clients").unwrap(),
            "2=127.0.0.1:9002,3=127.0.0.1:9003"
        );
        assert_eq!(advertised_client(&l, 7).to_string(), "127.0.0.1:9008");
        let control = ShardControl::new(&l, 2, 3).unwrap();
        let router = control.router().unwrap();
        assert_eq!(router.dial_address("127.0.0.1:9008"), "127.0.0.18:8008");
        assert_eq!(router.name_of("127.0.0.1:9008"), "n8");
    }
}
