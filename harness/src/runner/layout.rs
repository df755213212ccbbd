//! Phase 2, layout: every node's addresses (and, on the proxy backend, every proxied link's),
//! free right now, and the network the faults act on: the namespace's iptables/tc rules, the
//! userspace proxy, or both when netem is missing.

use crate::cluster::{self, Layout, NodeAddr};
use crate::nemesis::FaultKind;
use crate::net::{self, LinkKind, Net, NetnsNet, ProxyLink, ProxyNet};
use crate::plan::{RunPlan, TestArgs};
use crate::target::Target;
use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::sync::Arc;

/// The layout phase's result.
pub(super) struct LaidOut {
    pub layout: Layout,
    pub net: Arc<Net>,
    /// The backend's note, with what the network fault can do on it.
    pub net_note: String,
    /// Whether node traffic is source-NATed by group id (kernel backend, target cannot bind
    /// its source address).
    pub snat_by_gid: bool,
}

/// Lays out the cluster and brings up the network backend.
pub(super) async fn lay_out(
    args: &TestArgs,
    plan: &RunPlan,
    target: &dyn Target,
    net_name: &str,
    net_note: String,
    seed: u64,
) -> Result<LaidOut> {
    let kinds = &plan.faults;
    // With the kernel backend, a run with network faults needs netem for delay and duplication;
    // without it, links also pass through the userspace proxy, which applies them instead.
    let kernel = net_name == "netns";
    let netem_unavailable = if kernel && kinds.contains(&FaultKind::Network) {
        net::probe_netem().err().map(|e| format!("{e:#}"))
    } else {
        None
    };
    // A target the proxy cannot sit in front of keeps its links direct: its delay and
    // duplication are skipped when netem is missing (the network note says so).
    let dialer = target.peer_proxy().ok();
    let use_proxy = (!kernel || netem_unavailable.is_some()) && dialer.is_some();
    // Sharded paxos-kv: nodes peer within their group of `--nodes`.
    let peer_group = (args.groups > 0).then_some(args.nodes);
    let (layout, proxy_links) = plan_layout(
        args.total_nodes(),
        dialer.as_ref().filter(|_| use_proxy),
        kernel,
        peer_group,
    )?;
    let net = Arc::new(Net {
        kernel: kernel.then(|| {
            NetnsNet::new(
                layout
                    .nodes
                    .iter()
                    .map(|a| match a.peer.ip() {
                        std::net::IpAddr::V4(ip) => ip,
                        std::net::IpAddr::V6(_) => std::net::Ipv4Addr::LOCALHOST,
                    })
                    .collect(),
            )
        }),
        proxy: if use_proxy {
            Some(ProxyNet::start(&proxy_links, seed).await?)
        } else {
            None
        },
        netem_unavailable,
    });
    let net_note = if kinds.contains(&FaultKind::Network) && args.total_nodes() < 2 {
        eprintln!("ordeal test: one node has no links: the network fault will inject nothing");
        format!("{net_note}; network faults: none (one node has no links)")
    } else if kinds.contains(&FaultKind::Network) {
        format!("{net_note}; {}", net.network_note())
    } else {
        net_note
    };
    tracing::info!("{net_note}");
    let snat_by_gid = kernel && !target.binds_source_ip();
    if snat_by_gid {
        net::snat_by_gid(&layout, cluster::SNAT_GID_BASE)?;
    }
    Ok(LaidOut {
        layout,
        net,
        net_note,
        snat_by_gid,
    })
}

/// Ports one run uses, from its base port: nodes' peer ports (base+1..) and client ports
/// (base+21..), then the proxies' listeners, one port each from base+40 (at most 9 nodes of one
/// group: 9 x 8 peer links and 9 x 8 forwarding links; sharded, at most 19 nodes in groups of
/// up to 9: 19 x 8 peer links and 19 listeners in front of client ports).
pub const LAYOUT_BLOCK_PORTS: u16 = 256;

/// The first proxy port of a block, past the nodes' own ports.
const PROXY_PORTS_OFFSET: u16 = 40;

/// The first port of the first layout block.
const FIRST_BLOCK_PORT: u16 = 10000;

/// How many layout blocks there are from [`FIRST_BLOCK_PORT`]: up to 32528, below Linux's
/// default ephemeral range (32768-60999). A planned port inside that range could be taken as
/// some connection's local port between the check that it is free and the bind.
pub const PORT_BLOCKS: u16 = 88;

/// The port blocks (of the [`PORT_BLOCKS`]) a run may use: all of them, or with
/// `ORDEAL_JOB_SLOT=i/n` (set by `ordeal campaign --jobs n` for its i-th job) a slice of its
/// own, so that parallel runs on the proxy backend never race for the same ports.
pub fn job_port_blocks(slot: Option<&str>) -> (u16, u16) {
    const BLOCKS: u16 = PORT_BLOCKS;
    let parsed = slot.and_then(|s| s.split_once('/')).and_then(|(i, n)| {
        let (i, n) = (i.trim().parse::<u16>().ok()?, n.trim().parse::<u16>().ok()?);
        (1..=n).contains(&i).then_some((i, n.min(BLOCKS)))
    });
    match parsed {
        Some((i, n)) if i <= n => {
            let per = BLOCKS / n;
            ((i - 1) * per, per)
        }
        _ => (0, BLOCKS),
    }
}

/// Picks addresses for every node (and, with `proxy`, every proxied link) that are free
/// right now. With a shared [`net::Dialer`] every node dials one proxy per peer, so each node
/// gets one listener in front of it and no forwarding links.
///
/// `peer_group`: sharded paxos-kv, whose nodes peer only within consecutive groups of this
/// many, and talk across groups (and to the controller) over HTTP at the client addresses the
/// controller's configuration and `--controller` name. With the proxy, peer links get a proxy
/// per directed link within each group, and every node's client port gets one proxy in front
/// of it for all HTTP from other nodes (forwarded requests, group-to-group messages, config
/// queries), which tells the dialler by its source address (the store binds its node's
/// address for all of these). `forward_target[i][j]` is then that listener for every `i`.
pub fn plan_layout(
    n: usize,
    proxy: Option<&net::Dialer>,
    kernel: bool,
    peer_group: Option<usize>,
) -> Result<(Layout, Vec<ProxyLink>)> {
    // Validated: 1 to 9 nodes, or up to 19 processes of a sharded run in groups of 1 to 9.
    assert!(
        (1..=9).contains(&n) || (n <= 19 && peer_group.is_some_and(|m| (1..=9).contains(&m))),
        "validated: 1 to 9 nodes, up to 19 in groups of at most 9"
    );
    let group_of = |i: usize| peer_group.map_or(0, |m| i / m.max(1));
    let distinct = cluster::can_bind_distinct_loopback();
    let pid = std::process::id() as u16;
    for attempt in 0..40u16 {
        let base: u16 = if kernel && attempt == 0 {
            7000
        } else {
            let (first, count) = job_port_blocks(std::env::var("ORDEAL_JOB_SLOT").ok().as_deref());
            FIRST_BLOCK_PORT
                + (first + (pid.wrapping_mul(37).wrapping_add(attempt * 13)) % count)
                    * LAYOUT_BLOCK_PORTS
        };
        let nodes: Vec<NodeAddr> = (1..=n)
            .map(|id| {
                let ip = cluster::node_ip(id, distinct);
                NodeAddr {
                    id,
                    name: format!("n{id}"),
                    peer: SocketAddr::new(ip.into(), base + id as u16),
                    client: SocketAddr::new(ip.into(), base + 20 + id as u16),
                }
            })
            .collect();
        let shared = proxy.is_some_and(|d| *d != net::Dialer::Link);
        let proxy_ports = base + PROXY_PORTS_OFFSET..base.saturating_add(LAYOUT_BLOCK_PORTS);
        let mut free_ports = proxy_ports.clone();
        let mut take_port = || {
            free_ports
                .next()
                .map(|p| SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), p))
        };
        let mut links = Vec::new();
        if let Some(dialer) = proxy {
            // Shared listeners: one per destination node.
            let fronts: Vec<Option<SocketAddr>> = (0..n)
                .map(|_| if shared { take_port() } else { None })
                .collect();
            // Sharded: one listener in front of each node's client port.
            let http_fronts: Vec<Option<SocketAddr>> = (0..n)
                .map(|_| {
                    if peer_group.is_some() {
                        take_port()
                    } else {
                        None
                    }
                })
                .collect();
            for i in 0..n {
                for j in (0..n).filter(|&j| j != i) {
                    let link = |kind, listen: Option<SocketAddr>, target, dialer: &net::Dialer| {
                        listen.map(|listen| ProxyLink {
                            from: i,
                            to: j,
                            kind,
                            listen,
                            target,
                            source_ip: nodes[i].peer.ip(),
                            dialer: dialer.clone(),
                        })
                    };
                    let planned = if peer_group.is_some() {
                        [
                            (group_of(i) == group_of(j))
                                .then(|| link(LinkKind::Peer, take_port(), nodes[j].peer, dialer)),
                            Some(link(
                                LinkKind::Forward,
                                http_fronts[j],
                                nodes[j].client,
                                &net::Dialer::SourceIp,
                            )),
                        ]
                    } else if shared {
                        [
                            Some(link(LinkKind::Peer, fronts[j], nodes[j].peer, dialer)),
                            None,
                        ]
                    } else {
                        [
                            Some(link(LinkKind::Peer, take_port(), nodes[j].peer, dialer)),
                            Some(link(
                                LinkKind::Forward,
                                take_port(),
                                nodes[j].client,
                                dialer,
                            )),
                        ]
                    };
                    for l in planned.into_iter().flatten() {
                        links.push(l.with_context(|| {
                            format!(
                                "{n} nodes need more proxy ports than the {} of a layout block",
                                proxy_ports.len()
                            )
                        })?);
                    }
                }
            }
        }
        let mut all: Vec<SocketAddr> = nodes.iter().flat_map(|a| [a.peer, a.client]).collect();
        all.extend(links.iter().map(|l| l.listen));
        all.sort();
        all.dedup();
        if cluster::check_ports_free(&all).is_err() {
            continue;
        }
        let target_of = |kind: LinkKind, i: usize, j: usize, direct: SocketAddr| {
            links
                .iter()
                .find(|l| l.kind == kind && l.from == i && l.to == j)
                .map(|l| l.listen)
                .unwrap_or(direct)
        };
        let peer_target: Vec<Vec<SocketAddr>> = (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| target_of(LinkKind::Peer, i, j, nodes[j].peer))
                    .collect()
            })
            .collect();
        let forward_target = (proxy.is_some() && !shared).then(|| {
            (0..n)
                .map(|i| {
                    (0..n)
                        .map(|j| target_of(LinkKind::Forward, i, j, nodes[j].client))
                        .collect()
                })
                .collect()
        });
        return Ok((
            Layout {
                nodes,
                peer_target,
                forward_target,
            },
            links,
        ));
    }
    bail!("no free block of ports found for {n} nodes after 40 tries")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Sharded over the proxy: peer links are proxied within groups only, and every node's
    /// client port has one listener in front of it that every other node dials, identified by
    /// source address; all within the layout's port block.
    #[test]
    fn a_sharded_layout_proxies_peer_links_in_groups_and_http_in_front_of_each_node() {
        let (layout, links) = plan_layout(9, Some(&net::Dialer::Link), false, Some(3)).unwrap();
        let peer: Vec<&ProxyLink> = links.iter().filter(|l| l.kind == LinkKind::Peer).collect();
        assert_eq!(peer.len(), 9 * 2, "two peers per node, in its group");
        assert!(peer.iter().all(|l| l.from / 3 == l.to / 3));
        assert!(peer.iter().all(|l| l.dialer == net::Dialer::Link));
        let http: Vec<&ProxyLink> = links
            .iter()
            .filter(|l| l.kind == LinkKind::Forward)
            .collect();
        assert_eq!(http.len(), 9 * 8, "every node dials every other over HTTP");
        assert!(http.iter().all(|l| l.dialer == net::Dialer::SourceIp
            && l.source_ip == layout.nodes[l.from].peer.ip()
            && l.target == layout.nodes[l.to].client));
        let forward = layout.forward_target.as_ref().expect("forwarding proxied");
        for (j, node) in layout.nodes.iter().enumerate() {
            let fronts: BTreeSet<SocketAddr> =
                (0..9).filter(|&i| i != j).map(|i| forward[i][j]).collect();
            assert_eq!(fronts.len(), 1, "one listener in front of {}", node.name);
            assert_eq!(forward[j][j], node.client, "a node reaches itself directly");
        }
        let mut listens: Vec<SocketAddr> = peer.iter().map(|l| l.listen).collect();
        listens.extend((0..9).map(|j| forward[(j + 1) % 9][j]));
        let count = listens.len();
        listens.sort();
        listens.dedup();
        assert_eq!(listens.len(), count, "no two listeners share a port");
        let base = layout.nodes[0].peer.port() - 1;
        assert!(listens
            .iter()
            .all(|a| (base + PROXY_PORTS_OFFSET..base + LAYOUT_BLOCK_PORTS).contains(&a.port())));
        // The most proxies a sharded run needs fit the block too: a controller and one group of
        // 9 nodes each (18 x 8 peer links and 18 listeners in front of client ports).
        let (_, big) = plan_layout(18, Some(&net::Dialer::Link), false, Some(9)).unwrap();
        assert_eq!(
            big.iter().filter(|l| l.kind == LinkKind::Peer).count(),
            18 * 8
        );
    }
}
