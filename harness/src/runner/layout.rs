//! Phase 2, layout: every node's addresses (and, on the proxy backend, every proxied link's),
//! free right now, and the network the faults act on: the namespace's iptables/tc rules, the
//! userspace proxy, or both when netem is missing.

use crate::cluster::{self, Layout, NodeAddr};
use crate::nemesis::FaultKind;
use crate::net::{self, LinkKind, Net, NetnsNet, ProxyLink, ProxyNet};
use crate::plan::{RunPlan, TestArgs};
use crate::target::Target;
use anyhow::{bail, Result};
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
    let (layout, proxy_links) = plan_layout(
        args.total_nodes(),
        dialer.as_ref().filter(|_| use_proxy),
        kernel,
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

/// Ports one run uses, from its base port: nodes' peer and client ports, then one proxy port per
/// directed peer link, then one per directed forwarding link (at most 9 nodes: 9 x 9 each).
pub const LAYOUT_BLOCK_PORTS: u16 = 256;

/// The port blocks (of the 170 from port 20000) a run may use: all of them, or with
/// `ORDEAL_JOB_SLOT=i/n` (set by `ordeal campaign --jobs n` for its i-th job) a slice of its
/// own, so that parallel runs on the proxy backend never race for the same ports.
pub fn job_port_blocks(slot: Option<&str>) -> (u16, u16) {
    const BLOCKS: u16 = 170;
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
pub(super) fn plan_layout(
    n: usize,
    proxy: Option<&net::Dialer>,
    kernel: bool,
) -> Result<(Layout, Vec<ProxyLink>)> {
    // Validated: 1 to 9 nodes, or up to 19 processes of a sharded run, which has no proxies
    // (peer ports base+1.., client ports base+21..).
    assert!(
        (1..=9).contains(&n) || (proxy.is_none() && n <= 19),
        "validated: 1 to 9 nodes, up to 19 without proxies"
    );
    let distinct = cluster::can_bind_distinct_loopback();
    let pid = std::process::id() as u16;
    for attempt in 0..40u16 {
        let base: u16 = if kernel && attempt == 0 {
            7000
        } else {
            let (first, count) = job_port_blocks(std::env::var("ORDEAL_JOB_SLOT").ok().as_deref());
            20000
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
        let proxy_addr = |offset: u16, i: usize, j: usize| {
            let i = if shared { 0 } else { i };
            SocketAddr::new(
                std::net::Ipv4Addr::LOCALHOST.into(),
                base + offset + (9 * i + j) as u16,
            )
        };
        let mut links = Vec::new();
        if let Some(dialer) = proxy {
            for i in 0..n {
                for j in (0..n).filter(|&j| j != i) {
                    let kinds = [
                        (LinkKind::Peer, 40, nodes[j].peer),
                        (LinkKind::Forward, 40 + 81, nodes[j].client),
                    ];
                    for (kind, offset, target) in kinds.into_iter().take(if shared { 1 } else { 2 })
                    {
                        links.push(ProxyLink {
                            from: i,
                            to: j,
                            kind,
                            listen: proxy_addr(offset, i, j),
                            target,
                            source_ip: nodes[i].peer.ip(),
                            dialer: dialer.clone(),
                        });
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
