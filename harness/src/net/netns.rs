//! The kernel backend: this process's own network namespace, iptables cuts and loss, netem
//! delay and duplication on `lo`, and SNAT for nodes that do not dial from their own address.

use super::*;

/// The iptables chain holding partition cuts.
pub const CUT_CHAIN: &str = "ORDEAL";
/// The iptables chain holding the network fault's packet loss.
pub const LOSS_CHAIN: &str = "ORDEAL-NET";

/// Moves this process into a fresh network namespace with `lo` up and our iptables chains
/// installed. Must run before any thread is spawned (unshare affects the calling thread, and
/// threads started later inherit it). Returns why it could not, so `auto` can fall back.
pub fn enter_netns() -> Result<()> {
    if Command::new("iptables").arg("--version").output().is_err() {
        bail!("iptables is not installed (apt-get install -y iptables)");
    }
    // SAFETY: unshare(2) with a flag; affects only this (still single-threaded) process.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    if rc != 0 {
        bail!(
            "unshare(CLONE_NEWNET) failed: {} (needs CAP_NET_ADMIN, i.e. root)",
            std::io::Error::last_os_error()
        );
    }
    run_cmd("ip", &["link", "set", "lo", "up"])?;
    for chain in [CUT_CHAIN, LOSS_CHAIN] {
        run_cmd("iptables", &["-N", chain])?;
        run_cmd("iptables", &["-I", "INPUT", "-j", chain])?;
    }
    Ok(())
}

/// For targets whose nodes dial peers from any address (the kernel picks 127.0.0.1 on `lo`):
/// rewrites the source address of every connection node `id` opens to its own 127.0.0.(10+id),
/// matched by the group id it runs under (`gid_base + id`), so that the cut and loss rules between
/// node addresses see the real link. Lives in the run's namespace and dies with it.
pub fn snat_by_gid(layout: &crate::cluster::Layout, gid_base: u32) -> Result<()> {
    for node in &layout.nodes {
        let gid = (gid_base + node.id as u32).to_string();
        let ip = node.peer.ip().to_string();
        run_cmd(
            "iptables",
            &[
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-d",
                "127.0.0.0/8",
                "-m",
                "owner",
                "--gid-owner",
                &gid,
                "-j",
                "SNAT",
                "--to-source",
                &ip,
            ],
        )
        .with_context(|| format!("source address for {} (iptables nat)", node.name))?;
    }
    Ok(())
}

/// Checks that this kernel can do what [`NetnsNet::netem`] does, by doing it once on a link no
/// node uses and undoing it. Inside our own namespace only.
pub fn probe_netem() -> Result<()> {
    let r = (|| {
        run_cmd(
            "tc",
            &[
                "qdisc", "add", "dev", "lo", "root", "handle", "1:", "prio", "bands", "4",
            ],
        )?;
        run_cmd(
            "tc",
            &[
                "qdisc",
                "add",
                "dev",
                "lo",
                "parent",
                "1:4",
                "handle",
                "40:",
                "netem",
                "delay",
                "1ms",
                "1ms",
                "duplicate",
                "1%",
            ],
        )?;
        let filter =
            netem_filter_args(Ipv4Addr::new(127, 0, 0, 250), Ipv4Addr::new(127, 0, 0, 251));
        let args: Vec<&str> = filter.iter().map(String::as_str).collect();
        run_cmd("tc", &args)
    })();
    let _ = run_cmd("tc", &["qdisc", "del", "dev", "lo", "root"]);
    r
}

fn netem_filter_args(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<String> {
    [
        "filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "1", "u32",
        "match", "ip", "src",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        format!("{src}/32"),
        "match".into(),
        "ip".into(),
        "dst".into(),
    ])
    .chain([format!("{dst}/32"), "flowid".into(), "1:4".into()])
    .collect()
}

/// iptables rules and tc qdiscs inside our own namespace.
pub struct NetnsNet {
    ips: Vec<Ipv4Addr>,
    /// Whether a netem qdisc is installed on `lo` now.
    netem_installed: Mutex<bool>,
}

impl NetnsNet {
    pub fn new(ips: Vec<Ipv4Addr>) -> NetnsNet {
        NetnsNet {
            ips,
            netem_installed: Mutex::new(false),
        }
    }

    fn directed(&self, pairs: &BTreeSet<(usize, usize)>) -> Vec<(String, String)> {
        pairs
            .iter()
            .flat_map(|&(a, b)| [(a, b), (b, a)])
            .map(|(s, d)| (self.ips[s].to_string(), self.ips[d].to_string()))
            .collect()
    }

    pub fn cut(&self, pairs: &BTreeSet<(usize, usize)>) -> Result<()> {
        for (src, dst) in self.directed(pairs) {
            run_cmd(
                "iptables",
                &["-A", CUT_CHAIN, "-s", &src, "-d", &dst, "-j", "DROP"],
            )?;
        }
        Ok(())
    }

    pub fn heal_partition(&self) -> Result<()> {
        run_cmd("iptables", &["-F", CUT_CHAIN])
    }

    /// Drops each packet between the pairs with probability `percent` / 100 (the kernel's own
    /// random choice, so not replayable from the seed). TCP retransmits what is lost.
    pub fn loss(&self, pairs: &BTreeSet<(usize, usize)>, percent: u32) -> Result<()> {
        let p = format!("{:.4}", percent.min(100) as f64 / 100.0);
        for (src, dst) in self.directed(pairs) {
            run_cmd(
                "iptables",
                &[
                    "-A",
                    LOSS_CHAIN,
                    "-s",
                    &src,
                    "-d",
                    &dst,
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    &p,
                    "-j",
                    "DROP",
                ],
            )?;
        }
        Ok(())
    }

    /// Delay or duplication by netem, on the packets between the pairs only: a prio qdisc on
    /// `lo` whose fourth band (unused by the default priomap) holds netem, and u32 filters that
    /// send the chosen links' packets there.
    pub fn netem(&self, pairs: &BTreeSet<(usize, usize)>, behaviour: Behaviour) -> Result<()> {
        let netem: Vec<String> = match behaviour {
            Behaviour::Delay {
                delay_ms,
                jitter_ms,
            } => vec![
                "delay".into(),
                format!("{delay_ms}ms"),
                format!("{jitter_ms}ms"),
            ],
            Behaviour::Duplicate { percent } => vec!["duplicate".into(), format!("{percent}%")],
            Behaviour::Loss { percent } => vec!["loss".into(), format!("{percent}%")],
        };
        *self
            .netem_installed
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = true;
        run_cmd(
            "tc",
            &[
                "qdisc", "add", "dev", "lo", "root", "handle", "1:", "prio", "bands", "4",
            ],
        )?;
        let mut args: Vec<String> = [
            "qdisc", "add", "dev", "lo", "parent", "1:4", "handle", "40:", "netem",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(netem);
        run_cmd("tc", &args.iter().map(String::as_str).collect::<Vec<_>>())?;
        for &(a, b) in pairs {
            for (s, d) in [(a, b), (b, a)] {
                let f = netem_filter_args(self.ips[s], self.ips[d]);
                run_cmd("tc", &f.iter().map(String::as_str).collect::<Vec<_>>())?;
            }
        }
        Ok(())
    }

    pub fn heal_network(&self) -> Result<()> {
        let flushed = run_cmd("iptables", &["-F", LOSS_CHAIN]);
        let mut installed = self
            .netem_installed
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if *installed {
            run_cmd("tc", &["qdisc", "del", "dev", "lo", "root"])?;
            *installed = false;
        }
        flushed
    }

    /// The rules now in force in both chains, for tests and the log.
    pub fn rules() -> Result<String> {
        let mut s = String::new();
        for chain in [CUT_CHAIN, LOSS_CHAIN] {
            let out = Command::new("iptables").args(["-S", chain]).output()?;
            s.push_str(&String::from_utf8_lossy(&out.stdout));
        }
        Ok(s)
    }
}
