//! Phase 3, start: `config.json` written (every option, the seed, the layout, the target and
//! the command that reproduces the run), every node started and the cluster ready, and the
//! handler for interrupts installed.

use crate::cluster::{self, Cluster, Layout};
use crate::net::Net;
use crate::plan::{RunConfig, TestArgs};
use crate::target::Target;
use anyhow::{Context, Result};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Mutex};

/// Writes `config.json` and returns what it holds.
pub(super) fn write_config(
    args: &TestArgs,
    target: &dyn Target,
    seed: u64,
    net_name: &str,
    net_note: &str,
    layout: &Layout,
    run_dir: &Path,
) -> Result<RunConfig> {
    let target_info = target.info();
    tracing::info!(
        "target {} ({}), {}, protocol {}",
        target_info.name,
        target_info.binary.display(),
        target_info.version,
        target_info.protocol
    );
    let config = RunConfig {
        args: args.clone(),
        seed,
        net: net_name.to_string(),
        net_note: net_note.to_string(),
        store_bin: target_info.binary.clone(),
        target: Some(target_info),
        reproduce: args.reproduce(seed, net_name),
        layout: serde_json::to_value(layout)?,
        started_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        ordeal_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    std::fs::write(
        run_dir.join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )
    .context("writing config.json")?;
    Ok(config)
}

/// Starts every node and waits until the cluster serves (a leader, where the target has a
/// leader query).
pub(super) async fn start_cluster(
    target: Arc<dyn Target>,
    layout: &Layout,
    run_dir: &Path,
    snat_by_gid: bool,
) -> Result<Arc<Mutex<Cluster>>> {
    let mut cluster = Cluster::new(target.clone(), layout.clone(), run_dir, snat_by_gid)?;
    cluster.start_all()?;
    let pids = cluster.pids();
    tracing::info!("node pids: {pids:?}");
    std::fs::write(
        run_dir.join("nodes").join("pids"),
        pids.iter().map(|p| format!("{p}\n")).collect::<String>(),
    )
    .context("writing nodes/pids")?;
    let ready = cluster
        .wait_ready(Duration::from_secs(30))
        .await
        .with_context(|| match target.file() {
            Some(f) => format!(
                "target file {}: field `command`: the nodes did not come up",
                f.display()
            ),
            None => format!("starting {}", target.name()),
        })?;
    match ready {
        Some(leader) => tracing::info!("leader: {}", cluster.name(leader)),
        None => tracing::info!("every node serves (the target has no leader query)"),
    }
    Ok(Arc::new(Mutex::new(cluster)))
}

/// Exit code of a run aborted by a second interrupt: 128 + SIGINT, as shells report Ctrl-C.
pub const ABORT_EXIT_CODE: i32 = 130;

/// The one place SIGINT and SIGTERM are handled once the cluster is up. The first ends the
/// main phase early (through `interrupt_tx`); the run then heals, recovers, reads and is
/// checked as usual. A second aborts at once: every network fault undone, every node killed,
/// exit `ABORT_EXIT_CODE` without a verdict. Store processes also carry PR_SET_PDEATHSIG, so
/// one started by a restart racing the abort dies with the harness too.
pub(super) fn spawn_signal_handler(
    net: Arc<Net>,
    interrupt_tx: watch::Sender<bool>,
) -> tokio::task::JoinHandle<()> {
    use tokio::signal::unix::{signal, SignalKind};
    tokio::spawn(async move {
        let mut int = signal(SignalKind::interrupt()).ok();
        let mut term = signal(SignalKind::terminate()).ok();
        let mut received = 0u32;
        loop {
            tokio::select! {
                _ = async { match int.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending::<()>().await } } => {}
                _ = async { match term.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending::<()>().await } } => {}
            }
            received += 1;
            if received == 1 {
                eprintln!(
                    "ordeal test: interrupt received: the run ends early and is checked over what was recorded; interrupt again to abort at once"
                );
                let _ = interrupt_tx.send(true);
                continue;
            }
            eprintln!(
                "ordeal test: second interrupt: aborting (healing, killing every node, no verdict)"
            );
            if let Err(e) = net.heal() {
                eprintln!("ordeal test: healing the network while aborting: {e:#}");
            }
            cluster::kill_all_registered();
            std::process::exit(ABORT_EXIT_CODE);
        }
    })
}
