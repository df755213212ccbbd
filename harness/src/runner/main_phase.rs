//! Phase 4, main: the clients run the workload for the time limit while one nemesis per kind
//! of fault injects its faults, with a progress bar; the first interrupt ends it early.

use super::clients::{client_loop, Counters, Endpoint};
use crate::cluster::{Cluster, Layout};
use crate::nemesis::{self, Nemesis, NemesisConfig, ScheduledFault};
use crate::net::Net;
use crate::plan::{RunPlan, TestArgs};
use crate::record::Recorder;
use crate::target::Client;
use anyhow::Result;
use ordeal_workloads::Generator;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Mutex};

/// What the main phase drives, built by the runner.
pub(super) struct MainInputs<'a> {
    pub args: &'a TestArgs,
    pub plan: RunPlan,
    pub seed: u64,
    pub layout: &'a Layout,
    pub cluster: &'a Arc<Mutex<Cluster>>,
    pub net: &'a Arc<Net>,
    pub gen: &'a Arc<std::sync::Mutex<Generator>>,
    pub client: &'a Client,
    pub recorder: &'a Recorder,
    /// When the test started: the history's time 0.
    pub start: Instant,
    /// The run's directory: the ticker keeps `progress.json` there for `ordeal serve`.
    pub run_dir: &'a std::path::Path,
    /// Sharded paxos-kv: the controller (for `shard-move`) and the clients' router.
    pub shards: Option<super::Sharding>,
}

/// What the main phase did.
pub(super) struct MainOutcome {
    pub main_elapsed: Duration,
    pub counters: Arc<Counters>,
    /// Operations that completed in the main phase (ok, fail or info), and of them ok.
    pub ops_main: u64,
    pub ok_main: u64,
    pub interrupted: bool,
    /// Every nemesis task's result, for the heal phase to log.
    pub nemesis_results: Vec<std::result::Result<Result<()>, tokio::task::JoinError>>,
    /// The faults as injected, for `faults.json`.
    pub schedule: Arc<std::sync::Mutex<Vec<ScheduledFault>>>,
}

impl MainOutcome {
    /// Operations per second attempted (every completion, whatever its outcome).
    pub fn throughput(&self) -> f64 {
        self.ops_main as f64 / self.main_elapsed.as_secs_f64()
    }

    /// Operations per second that took effect (ok).
    pub fn completed_per_s(&self) -> f64 {
        self.ok_main as f64 / self.main_elapsed.as_secs_f64()
    }
}

/// Runs clients and nemeses until the time limit or the first interrupt, then stops them all.
pub(super) async fn run(
    inputs: MainInputs<'_>,
    mut interrupt_rx: watch::Receiver<bool>,
) -> MainOutcome {
    let MainInputs {
        args,
        plan,
        seed,
        layout,
        cluster,
        net,
        gen,
        client,
        recorder,
        start,
        run_dir,
        shards,
    } = inputs;
    let counters = Arc::new(Counters::default());
    let current_fault = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::new()));
    let (stop_tx, stop_rx) = watch::channel(false);

    let mut clients = Vec::with_capacity(args.concurrency);
    for i in 0..args.concurrency {
        let endpoint = match &shards {
            Some(s) => match s.router() {
                Ok(router) => Endpoint::Routed(router, i),
                Err(e) => {
                    tracing::error!("client {i}: {e:#}");
                    continue;
                }
            },
            None => Endpoint::Node(layout.nodes[i % layout.nodes.len()].clone()),
        };
        clients.push(tokio::spawn(client_loop(
            i,
            args.concurrency,
            args.rate,
            seed,
            endpoint,
            gen.clone(),
            client.clone(),
            recorder.clone(),
            counters.clone(),
            stop_rx.clone(),
        )));
    }
    // `all`: one coordinated nemesis, one episode at a time (nemesis::episodes). An explicit
    // list: one nemesis per fault kind, running at once, as Jepsen composes them.
    let RunPlan {
        faults: kinds,
        interval_ms,
        hold_ms,
        targets,
        shapes,
        scopes,
        behaviours,
        replay,
        ..
    } = plan;
    let schedule: Arc<std::sync::Mutex<Vec<ScheduledFault>>> = Arc::default();
    let nemesis_tasks: Vec<_> = nemesis::nemesis_groups(&args.nemesis, &kinds)
        .into_iter()
        .enumerate()
        .map(|(k, group)| {
            tokio::spawn(
                Nemesis {
                    config: NemesisConfig {
                        kinds: group.clone(),
                        interval_ms,
                        hold_ms,
                        seed: seed.wrapping_add(k as u64 * 0x5851_f42d),
                        targets: targets.clone(),
                        shapes: shapes.clone(),
                        scopes: scopes.clone(),
                        behaviours: behaviours.clone(),
                        replay: replay.as_ref().map(|faults| {
                            faults
                                .iter()
                                .filter(|f| group.contains(&f.nemesis))
                                .cloned()
                                .collect()
                        }),
                    },
                    cluster: cluster.clone(),
                    net: net.clone(),
                    recorder: recorder.clone(),
                    current: current_fault.clone(),
                    schedule: schedule.clone(),
                    shards: shards.as_ref().map(|s| s.control.clone()),
                }
                .run(stop_rx.clone()),
            )
        })
        .collect();

    let progress = if args.no_progress {
        indicatif::ProgressBar::hidden()
    } else {
        let pb = indicatif::ProgressBar::new(args.time_limit_s);
        pb.set_style(
            indicatif::ProgressStyle::with_template("{elapsed:>4} / {len}s [{bar:30}] {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        pb
    };
    let ticker = {
        let pb = progress.clone();
        let counters = counters.clone();
        let current = current_fault.clone();
        let mut stop = stop_rx.clone();
        // progress.json in the run directory: `ordeal serve` shows the run live from it.
        let mut live = crate::serve::progress::LiveRun::new(run_dir, args.time_limit_s);
        tokio::spawn(async move {
            loop {
                pb.set_position(start.elapsed().as_secs());
                let fault = {
                    let map = current.lock().unwrap_or_else(|e| e.into_inner());
                    if map.is_empty() {
                        "none".to_string()
                    } else {
                        map.values().cloned().collect::<Vec<_>>().join(" + ")
                    }
                };
                let ops = [&counters.ok, &counters.fail, &counters.info]
                    .map(|c| c.load(Ordering::Relaxed));
                pb.set_message(format!(
                    "ok {} fail {} info {} | fault: {fault}",
                    ops[0], ops[1], ops[2]
                ));
                live.main_phase(start.elapsed(), ops, &fault);
                if nemesis::sleep_or_stop(&mut stop, 200).await {
                    live.checking(start.elapsed(), ops);
                    return;
                }
            }
        })
    };

    let interrupted = tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(args.time_limit_s)) => false,
        _ = interrupt_rx.wait_for(|i| *i) => true,
    };
    let main_elapsed = start.elapsed();
    let _ = stop_tx.send(true);
    for c in clients {
        let _ = c.await;
    }
    let ops_main = counters.ok.load(Ordering::Relaxed)
        + counters.fail.load(Ordering::Relaxed)
        + counters.info.load(Ordering::Relaxed);
    // Attempted: every operation a client issued; completed: those that took effect (ok).
    let ok_main = counters.ok.load(Ordering::Relaxed);
    let mut nemesis_results = Vec::new();
    for t in nemesis_tasks {
        nemesis_results.push(t.await);
    }
    let _ = ticker.await;
    progress.finish_and_clear();
    if interrupted {
        eprintln!(
            "ordeal test: interrupted after {:.1} s of the {} s main phase: healing, recovering and checking what was recorded",
            main_elapsed.as_secs_f64(),
            args.time_limit_s
        );
    }
    MainOutcome {
        main_elapsed,
        counters,
        ops_main,
        ok_main,
        interrupted,
        nemesis_results,
        schedule,
    }
}
