//! `ordeal test`: one run, start to finish, one module per phase:
//!
//! 1. [`plan`]: options checked, target resolved, network backend chosen, run directory made;
//! 2. [`layout`]: addresses for every node (and proxied link), the network backend up;
//! 3. [`start`]: `config.json`, the cluster started and ready, the interrupt handler;
//! 4. [`main_phase`]: clients and nemeses for the time limit (recorded as they go);
//! 5. [`heal`]: every fault undone, `faults.json`;
//! 6. [`recover`]: the cluster ready again, final reads, convergence, nodes stopped;
//! 7. [`crate::analyse`]: checks, `results.json`, charts and `report.html` (shared with
//!    `ordeal report`, so the runner and the report do not import each other).

mod clients;
mod heal;
mod layout;
mod main_phase;
mod plan;
mod recover;
mod start;

pub use layout::{job_port_blocks, plan_layout, LAYOUT_BLOCK_PORTS, PORT_BLOCKS};
pub use plan::choose_net;
pub use start::ABORT_EXIT_CODE;

use crate::analyse::analyse;
use crate::cluster;
use crate::plan::{RunPlan, TestArgs};
use crate::record;
use crate::target::{Client, ClientConfig, Target};
use anyhow::{Context, Result};
use ordeal_checker::Verdict;
use ordeal_workloads::{Generator, GeneratorConfig};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Sharded paxos-kv (`--groups`): the harness's side of the controller (start-up joins,
/// `shard-move`, per-group convergence), from which each client gets a router of its own.
#[derive(Clone)]
pub(crate) struct Sharding {
    pub control: Arc<crate::target::paxos_kv_sharded::ShardControl>,
}

impl Sharding {
    fn new(layout: &cluster::Layout, groups: usize, per_group: usize) -> Result<Sharding> {
        let control =
            crate::target::paxos_kv_sharded::ShardControl::new(layout, groups, per_group)?;
        Ok(Sharding {
            control: Arc::new(control),
        })
    }

    /// A router with a configuration cache of its own, as every real client has: a client
    /// learns of a move when a group tells it, not when another client is told.
    pub fn router(&self) -> Result<Arc<ordeal_workloads::ShardRouter>> {
        Ok(Arc::new(self.control.router()?))
    }

    /// Joins every replica group and waits until every shard is owned and served.
    async fn bring_up(&self) -> Result<()> {
        tracing::info!("sharded: {}", self.control.describe());
        let joined = self
            .control
            .join_all(Duration::from_secs(30))
            .await
            .context("sharded paxos-kv: joining the replica groups")?;
        tracing::info!("joined: config {} owners {:?}", joined.num, joined.shards);
        let cfg = self
            .control
            .wait_settled(Duration::from_secs(30))
            .await
            .context("sharded paxos-kv: waiting for every shard to be served")?;
        tracing::info!("every group serves config {}", cfg.num);
        Ok(())
    }
}

/// The outcome of `ordeal test`: the run directory and the process exit code.
pub struct RunOutcome {
    pub run_dir: PathBuf,
    pub verdict: Option<Verdict>,
    pub interrupted: bool,
}

/// Entry point of `ordeal test`. Call from `main` before any runtime exists.
pub fn run_test(args: TestArgs) -> i32 {
    let planned = match plan::plan(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ordeal test: {e}");
            return 255;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ordeal test: starting the runtime: {e}");
            return 255;
        }
    };
    let plan::Planned {
        plan,
        target,
        net_name,
        net_note,
    } = planned;
    let result = rt.block_on(run_async(args, plan, target, net_name, net_note));
    // Belt and braces: whatever path we took, no store process outlives the run.
    cluster::kill_all_registered();
    rt.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(out) => {
            eprintln!("ordeal test: results in {}", out.run_dir.display());
            if out.interrupted {
                eprintln!(
                    "ordeal test: the run was interrupted; its verdict covers what was recorded"
                );
            }
            match out.verdict {
                Some(v) => {
                    eprintln!("ordeal test: verdict {v}");
                    v.exit_code()
                }
                None => 255,
            }
        }
        Err(e) => {
            eprintln!("ordeal test: {e:#}");
            255
        }
    }
}

/// The phases in order, inside the runtime.
async fn run_async(
    args: TestArgs,
    plan: RunPlan,
    target: Arc<dyn Target>,
    net_name: &'static str,
    net_note: String,
) -> Result<RunOutcome> {
    let workload = plan.workload;
    let (seed, run_dir) = plan::open_run_dir(&args, &net_note)?;
    let layout::LaidOut {
        layout,
        net,
        net_note,
        snat_by_gid,
    } = layout::lay_out(&args, &plan, target.as_ref(), net_name, net_note, seed).await?;
    let config = start::write_config(
        &args,
        target.as_ref(),
        seed,
        net_name,
        &net_note,
        &layout,
        &run_dir,
    )?;
    let cluster = start::start_cluster(target.clone(), &layout, &run_dir, snat_by_gid).await?;
    let shards = if args.groups > 0 {
        let s = Sharding::new(&layout, args.groups, args.nodes)?;
        s.bring_up().await?;
        Some(s)
    } else {
        None
    };

    // Interrupts (Ctrl-C, SIGTERM): the first ends the main phase early, a second aborts.
    let (interrupt_tx, interrupt_rx) = watch::channel(false);
    let signal_task = start::spawn_signal_handler(net.clone(), interrupt_tx);

    let history_path = run_dir.join("history.jsonl");
    let start = Instant::now();
    let (recorder, writer) = record::start(
        (!args.no_history_file).then_some(history_path.as_path()),
        start,
    )?;
    let mut gen_config = GeneratorConfig::for_workload(workload, seed, args.concurrency)
        .with_protocol(target.protocol());
    if let Some(k) = args.ops_per_key {
        gen_config.ops_per_key = k.max(1);
    }
    let gen = Arc::new(std::sync::Mutex::new(Generator::new(gen_config)));
    let client = Client::new(ClientConfig {
        protocol: target.protocol(),
        timeout: Duration::from_millis(args.op_timeout_ms),
        max_idle_per_host: args.concurrency.max(8),
        read_consistency: plan.read_consistency,
    })?;

    let mut main = main_phase::run(
        main_phase::MainInputs {
            args: &args,
            plan,
            seed,
            layout: &layout,
            cluster: &cluster,
            net: &net,
            gen: &gen,
            client: &client,
            recorder: &recorder,
            start,
            run_dir: &run_dir,
            shards: shards.clone(),
        },
        interrupt_rx,
    )
    .await;

    let proxy_stats = heal::heal(
        &net,
        &cluster,
        &main.schedule,
        std::mem::take(&mut main.nemesis_results),
        &run_dir,
    )
    .await?;

    // Txn workloads' checkers judge the txns themselves; final reads are per-key reads
    // for the linearizability checker.
    let keys: Vec<String> = if workload.is_txn() {
        Vec::new()
    } else {
        gen.lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .to_vec()
    };
    let recovered = recover::recover(
        &cluster,
        args.recovery_s,
        &keys,
        &layout.nodes,
        &client,
        &recorder,
        args.concurrency,
        shards.as_ref(),
    )
    .await;
    drop(recorder);
    let recorded = writer.await.context("history writer")??;
    // The run itself is over: what it held at its peak, before the checks read the history.
    let peak_rss_before_checks = crate::analyse::peak_rss_bytes();
    let write_bytes = recorded.bytes_written;
    if args.no_history_file {
        // Kept in memory while the test ran; the checks read the file.
        record::write_events(&history_path, &recorded.kept)?;
    }
    drop(recorded);

    let (throughput, completed_per_s) = (main.throughput(), main.completed_per_s());
    let (ops_main, ok_main, main_elapsed) = (main.ops_main, main.ok_main, main.main_elapsed);
    let extra = serde_json::json!({
        "net": net_name,
        "net_note": net_note,
        "main_phase_s": main_elapsed.as_secs_f64(),
        "ops_main_phase": ops_main,
        "throughput_ops_per_s": throughput,
        "attempted_ops_per_s": throughput,
        "completed_ops_per_s": completed_per_s,
        "ops_ok_main_phase": ok_main,
        "ops_refused_main_phase": main.counters.refused.load(Ordering::Relaxed),
        "backoff_s_total": main.counters.backoff_ms.load(Ordering::Relaxed) as f64 / 1000.0,
        "history_bytes": write_bytes,
        "harness_peak_rss_bytes_before_checks": peak_rss_before_checks,
        "history_file": !args.no_history_file,
        "interrupted": main.interrupted,
        "time_limit_s": args.time_limit_s,
        "proxy_stats": proxy_stats,
    });
    tracing::info!(
        "main phase: {ops_main} ops in {:.1}s = {throughput:.0} ops/s",
        main_elapsed.as_secs_f64()
    );
    eprintln!(
        "ordeal test: {ops_main} operations in {:.1} s: {throughput:.0} ops/s attempted, {completed_per_s:.0} ops/s completed (ok)",
        main_elapsed.as_secs_f64()
    );
    let verdict = analyse(
        &run_dir,
        &config,
        &history_path,
        &recovered.log_paths,
        recovered.convergence,
        extra,
    )?;
    // The handler stays up through the checks, so a second interrupt still aborts them.
    signal_task.abort();
    Ok(RunOutcome {
        run_dir,
        verdict: Some(verdict),
        interrupted: main.interrupted,
    })
}
