//! Phase 5, heal: every fault undone, whatever the nemesis managed to do: the network healed,
//! paused nodes resumed and killed ones restarted; the realised fault schedule written to
//! `faults.json`.

use crate::cluster::Cluster;
use crate::nemesis::ScheduledFault;
use crate::net::Net;
use anyhow::{Context, Result};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::Mutex;

/// Heals everything and writes `faults.json`; returns the userspace proxy's statistics (when
/// the run used it). Errors healing are logged (the run goes on to recover and be checked);
/// only failing to write `faults.json` is an error.
pub(super) async fn heal(
    net: &Net,
    cluster: &Arc<Mutex<Cluster>>,
    schedule: &std::sync::Mutex<Vec<ScheduledFault>>,
    nemesis_results: Vec<std::result::Result<Result<()>, tokio::task::JoinError>>,
    run_dir: &Path,
) -> Result<Option<serde_json::Value>> {
    let heal_result = net.heal();
    {
        let faults = schedule.lock().unwrap_or_else(|e| e.into_inner());
        std::fs::write(
            run_dir.join("faults.json"),
            serde_json::to_string_pretty(&*faults)?,
        )
        .context("writing faults.json")?;
    }
    let proc_heal = cluster.lock().await.heal_processes();
    for r in nemesis_results {
        if let Ok(Err(e)) | Err(e) = r.map_err(anyhow::Error::from) {
            tracing::error!("nemesis: {e:#}");
        }
    }
    if let Err(e) = &heal_result {
        tracing::error!("healing the network: {e:#}");
    }
    let proxy_stats = net.proxy.as_ref().map(|p| {
        tracing::info!("userspace proxy: {}", p.stats.summary());
        p.stats.to_json()
    });
    if let Err(e) = &proc_heal {
        tracing::error!("restarting nodes: {e:#}");
    }
    Ok(proxy_stats)
}
