//! The network backends for partitions and for the `network` fault (delay, loss, duplication).
//!
//! * `netns`: the whole `ordeal test` process has unshared into a fresh network namespace before
//!   the runtime started; nodes sit on 127.0.0.(10+id) inside it. A cut is a pair of iptables
//!   DROP rules in the chain `ORDEAL`; packet loss is an iptables `statistic` rule in the chain
//!   `ORDEAL-NET`; delay and duplication are a netem qdisc on `lo` behind u32 filters naming the
//!   links, when the kernel has netem. When it has not, and the run has a `network` fault, every
//!   peer link and every forwarded client request also passes through the userspace proxy below,
//!   which applies delay and duplication instead (and says so). Nothing leaks: the namespace, its
//!   rules, qdiscs and loopback die with the process.
//! * `proxy`: every directed peer link i -> j goes through a TCP proxy the harness owns (node i's
//!   `--peers` names the proxy for j), and so does every client request node i forwards to node
//!   j (`paxos-kv --peer-clients`). A cut blackholes the link: bytes are read and dropped, so the
//!   store sees silence, not resets, as with a real partition. On heal, connections that lost
//!   bytes are closed so that no stream resumes with a hole in it. Delay, loss and duplication
//!   are applied per paxos-kv frame on peer links and per whole HTTP request on node-to-node
//!   HTTP links (see [`Framer`] and [`decide`]). Sharded paxos-kv (`--groups`) has a proxy per
//!   directed peer link within each group, and one in front of each node's client port that
//!   carries every request another node sends it (forwarded requests, group-to-group
//!   messages, config queries from the controller's members), telling the dialler by its
//!   source address; the controller's configuration and `--controller` name those listeners.
//!   A target whose nodes must all dial one
//!   address per peer (etcd) gets one proxy in front of each node instead, which tells the
//!   dialling peer by its first request's header or its source address ([`Dialer`]); the node
//!   listens on its own address and advertises the proxy's. Client traffic from the harness
//!   never passes through the proxy, as with the netns backend, whose rules never name the
//!   harness's address: a partition separates nodes from each other, not from clients.
//!
//! Partitions and network faults are healed separately (two nemeses may hold one of each at
//! once); [`Net::heal`] undoes both at the end of a run.

use anyhow::{bail, Context, Result};
use bytes::{Bytes, BytesMut};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

mod framer;
mod netns;
mod proxy;

pub use framer::*;
pub use netns::*;
pub use proxy::*;

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum NetChoice {
    Auto,
    Netns,
    Proxy,
}

impl NetChoice {
    pub fn parse(s: &str) -> Result<NetChoice> {
        match s {
            "auto" => Ok(NetChoice::Auto),
            "netns" => Ok(NetChoice::Netns),
            "proxy" => Ok(NetChoice::Proxy),
            other => bail!("--net {other:?}: expected auto, netns or proxy"),
        }
    }
}

fn run_cmd(program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} (is it installed?)"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// What the `network` fault does to the links it picks, as Jepsen's `:packet` behaviours.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "behaviour", rename_all = "lowercase")]
pub enum Behaviour {
    /// Every message waits `delay_ms`, give or take up to `jitter_ms` (uniformly).
    Delay { delay_ms: u64, jitter_ms: u64 },
    /// Each message is lost with this probability, in percent.
    Loss { percent: u32 },
    /// Each message is delivered twice with this probability, in percent.
    Duplicate { percent: u32 },
}

impl Behaviour {
    /// As the history and the report name it, e.g. `delay 80ms ±16ms`.
    pub fn describe(&self) -> String {
        match self {
            Behaviour::Delay {
                delay_ms,
                jitter_ms,
            } => format!("delay {delay_ms}ms ±{jitter_ms}ms"),
            Behaviour::Loss { percent } => format!("loss {percent}%"),
            Behaviour::Duplicate { percent } => format!("duplicate {percent}%"),
        }
    }
}

/// The network in use: kernel rules in our namespace, a userspace proxy, or both (netns without
/// netem, for a run with network faults).
pub struct Net {
    pub kernel: Option<NetnsNet>,
    pub proxy: Option<ProxyNet>,
    /// Why netem cannot be used, if it cannot (None: it can, or the backend is the proxy).
    pub netem_unavailable: Option<String>,
}

impl Net {
    pub fn name(&self) -> &'static str {
        if self.kernel.is_some() {
            "netns"
        } else {
            "proxy"
        }
    }

    /// One sentence on how each network behaviour is applied in this run, for the run log and
    /// the report.
    pub fn network_note(&self) -> String {
        match (&self.kernel, &self.netem_unavailable, &self.proxy) {
            (Some(_), None, _) => {
                "network faults: loss by iptables statistic, delay and duplication by netem on lo (kernel)".into()
            }
            (Some(_), Some(why), Some(_)) => format!(
                "network faults: loss by iptables statistic (kernel); netem unavailable ({why}): delay and duplication applied by the userspace proxy, which also carries peer links and forwarded requests"
            ),
            (Some(_), Some(why), None) => format!(
                "network faults: loss by iptables statistic (kernel); netem unavailable ({why}): delay and duplication skipped"
            ),
            (None, _, _) => {
                "network faults: by the userspace proxy, per paxos-kv frame on paxos-kv peer links (lost frames dropped, duplicated frames sent twice) and per whole HTTP request between paxos-kv nodes (lost requests dropped, so the sender times out; only sharded paxos-kv's group-to-group messages, POST /shard/msg, delivered twice); other streams (replies, HTTP peer links such as etcd's) are delayed, stall on loss and ignore duplication, as over TCP".into()
            }
        }
    }

    pub fn cut(&self, pairs: &BTreeSet<(usize, usize)>) -> Result<()> {
        match (&self.kernel, &self.proxy) {
            // The proxy dials from the node's own address, so the kernel rules cut it too.
            (Some(k), _) => k.cut(pairs),
            (None, Some(p)) => {
                p.cut(pairs);
                Ok(())
            }
            (None, None) => bail!("no network backend to cut links with"),
        }
    }

    pub fn heal_partition(&self) -> Result<()> {
        if let Some(p) = &self.proxy {
            p.heal_partition();
        }
        match &self.kernel {
            Some(k) => k.heal_partition(),
            None => Ok(()),
        }
    }

    /// Applies a network fault to the pairs. Returns which mechanism applied it (`netem`,
    /// `iptables`, `proxy`, or `skipped`) and a sentence saying how, for the log and history.
    pub fn start_network(
        &self,
        pairs: &BTreeSet<(usize, usize)>,
        behaviour: Behaviour,
    ) -> Result<(&'static str, String)> {
        let proxy_note = "applied by the userspace proxy";
        match &self.kernel {
            None => {
                let p = self.proxy.as_ref().context("no network backend")?;
                p.shape(pairs, behaviour);
                Ok(("proxy", proxy_note.into()))
            }
            Some(k) => {
                if let Behaviour::Loss { percent } = behaviour {
                    k.loss(pairs, percent)?;
                    return Ok((
                        "iptables",
                        "applied by iptables statistic (kernel; TCP retransmits lost packets)"
                            .into(),
                    ));
                }
                let netem_err = match &self.netem_unavailable {
                    None => match k.netem(pairs, behaviour) {
                        Ok(()) => return Ok(("netem", "applied by netem on lo (kernel)".into())),
                        Err(e) => {
                            // Leave nothing half-installed before falling back.
                            let _ = k.heal_network();
                            format!("{e:#}")
                        }
                    },
                    Some(why) => why.clone(),
                };
                match &self.proxy {
                    Some(p) => {
                        p.shape(pairs, behaviour);
                        Ok((
                            "proxy",
                            format!("netem unavailable ({netem_err}): {proxy_note}"),
                        ))
                    }
                    None => Ok((
                        "skipped",
                        format!(
                            "skipped: netem unavailable ({netem_err}) and peer links do not pass through the proxy"
                        ),
                    )),
                }
            }
        }
    }

    pub fn heal_network(&self) -> Result<()> {
        if let Some(p) = &self.proxy {
            p.heal_network();
        }
        match &self.kernel {
            Some(k) => k.heal_network(),
            None => Ok(()),
        }
    }

    /// Undoes every fault, partitions and network faults both.
    pub fn heal(&self) -> Result<()> {
        let a = self.heal_partition();
        let b = self.heal_network();
        a.and(b)
    }
}

pub type SharedNet = Arc<Net>;
