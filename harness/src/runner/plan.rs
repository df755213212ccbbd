//! Phase 1, plan: the options checked once into a `RunPlan`, the target resolved (a bad target
//! file is refused here, before anything starts) and the network backend chosen, all before any
//! thread exists (entering a network namespace needs a single-threaded process); then, inside
//! the runtime, the seed, the run directory and the harness's log.

use crate::cluster;
use crate::net::{self, NetChoice};
use crate::plan::{RunPlan, TestArgs};
use crate::target::{self, Target};
use anyhow::{bail, Context, Result};
use rand::Rng;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What the plan phase decided before the runtime starts.
pub(super) struct Planned {
    pub plan: RunPlan,
    pub target: Arc<dyn Target>,
    pub net_name: &'static str,
    pub net_note: String,
}

/// Checks the options, resolves the target and chooses the network backend. Call before any
/// runtime exists. The error is the message `ordeal test` prints.
pub(super) fn plan(args: &TestArgs) -> std::result::Result<Planned, String> {
    let plan = args.plan().map_err(|e| format!("{e:#}"))?;
    let target: Arc<dyn Target> = if args.groups > 0 {
        Arc::new(
            target::paxos_kv_sharded::PaxosKvSharded::new(args)
                .map_err(|e| format!("--target {} --groups {}: {e:#}", args.target, args.groups))?,
        )
    } else {
        target::resolve(
            &args.target,
            args.target_bin.as_deref(),
            args.bug.as_deref(),
        )
        .map_err(|e| format!("--target {}: {e:#}", args.target))?
    };
    install_panic_hook();
    if let (NetChoice::Proxy, Err(why)) = (plan.net, target.peer_proxy()) {
        return Err(format!(
            "--net proxy: target {}: {why}; use --net netns (needs root)",
            target.name()
        ));
    }
    let (net_name, net_note) = choose_net(plan.net).map_err(|e| format!("{e:#}"))?;
    eprintln!("ordeal test: network backend: {net_note}");
    if let ("proxy", Err(why)) = (net_name, target.peer_proxy()) {
        return Err(format!(
            "target {}: {why}, and the network-namespace backend is unavailable: {net_note}",
            target.name()
        ));
    }
    Ok(Planned {
        plan,
        target,
        net_name,
        net_note,
    })
}

/// The run's seed (drawn when not given) and its fresh directory, with `ordeal.log` open in
/// it and `results/latest` pointing at it.
pub(super) fn open_run_dir(args: &TestArgs, net_note: &str) -> Result<(u64, PathBuf)> {
    let seed = args
        .seed
        .unwrap_or_else(|| rand::thread_rng().gen_range(0..1_000_000));
    let run_dir = make_run_dir(&args.results, &args.test_name())?;
    init_log(&run_dir)?;
    update_latest(&args.results, &run_dir);
    tracing::info!(
        "run directory {}; network backend: {net_note}",
        run_dir.display()
    );
    Ok((seed, run_dir))
}

/// Decides the network backend before any thread exists: with `auto` or `netns`, unshare into a
/// fresh namespace. Returns the backend name and a sentence saying why.
pub fn choose_net(choice: NetChoice) -> Result<(&'static str, String)> {
    match choice {
        NetChoice::Proxy => Ok((
            "proxy",
            "userspace proxy (asked for with --net proxy)".into(),
        )),
        NetChoice::Netns => {
            net::enter_netns().context("--net netns")?;
            Ok((
                "netns",
                "network namespace with iptables (asked for with --net netns)".into(),
            ))
        }
        NetChoice::Auto => match net::enter_netns() {
            Ok(()) => Ok((
                "netns",
                "network namespace with iptables (auto: CAP_NET_ADMIN available)".into(),
            )),
            Err(e) => Ok((
                "proxy",
                format!("userspace proxy (auto: network namespace unavailable: {e:#})"),
            )),
        },
    }
}

fn timestamp() -> String {
    let t = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    t.chars().filter(|c| c.is_ascii_alphanumeric()).collect()
}

fn make_run_dir(results: &Path, name: &str) -> Result<PathBuf> {
    let base = results.join(name);
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let stamp = timestamp();
    for attempt in 0..100 {
        let dir = if attempt == 0 {
            base.join(&stamp)
        } else {
            base.join(format!("{stamp}-{attempt}"))
        };
        if std::fs::create_dir(&dir).is_ok() {
            return Ok(dir);
        }
    }
    bail!(
        "could not create a fresh run directory under {}",
        base.display()
    )
}

fn update_latest(results: &Path, run_dir: &Path) {
    let latest = results.join("latest");
    let target = run_dir.strip_prefix(results).unwrap_or(run_dir);
    let _ = std::fs::remove_file(&latest);
    if let Err(e) = std::os::unix::fs::symlink(target, &latest) {
        tracing::warn!("could not point {} at the run: {e}", latest.display());
    }
}

fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        cluster::kill_all_registered();
        default(info);
    }));
}

fn init_log(run_dir: &Path) -> Result<()> {
    let file = std::fs::File::create(run_dir.join("ordeal.log")).context("creating ordeal.log")?;
    let _ = tracing_subscriber::fmt()
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ORDEAL_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .try_init();
    Ok(())
}
