//! `ordeal test`: one run, start to finish. Cluster up, clients and nemesis for the time limit,
//! heal, recover, final reads, convergence, checks, results directory.

use crate::analyse::analyse;
use crate::checks::CheckOutcome;
use crate::cluster::{self, Cluster, Layout, NodeAddr};
use crate::nemesis::{self, Nemesis, NemesisConfig};
use crate::net::{self, LinkKind, Net, NetChoice, NetnsNet, ProxyLink, ProxyNet};
use crate::plan::{RunConfig, RunPlan, TestArgs};
use crate::record::{self, Recorder};
use crate::target::{self, Client, ClientConfig, Target};
use anyhow::{bail, Context, Result};
use ordeal_checker::{Event, EventType, History, Process, Value, Verdict};
use ordeal_workloads::{Backoff, BackoffConfig, Generator, GeneratorConfig, OpSpec};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Mutex};

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

/// Picks addresses for every node (and, with `use_proxy`, every proxied link) that are free
/// right now.
fn plan_layout(n: usize, use_proxy: bool, kernel: bool) -> Result<(Layout, Vec<ProxyLink>)> {
    assert!((1..=9).contains(&n), "validated: 1 to 9 nodes");
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
        let proxy_addr = |offset: u16, i: usize, j: usize| {
            SocketAddr::new(
                std::net::Ipv4Addr::LOCALHOST.into(),
                base + offset + (9 * i + j) as u16,
            )
        };
        let mut links = Vec::new();
        if use_proxy {
            for i in 0..n {
                for j in (0..n).filter(|&j| j != i) {
                    for (kind, offset, target) in [
                        (LinkKind::Peer, 40, nodes[j].peer),
                        (LinkKind::Forward, 40 + 81, nodes[j].client),
                    ] {
                        links.push(ProxyLink {
                            from: i,
                            to: j,
                            kind,
                            listen: proxy_addr(offset, i, j),
                            target,
                            source_ip: nodes[i].peer.ip(),
                        });
                    }
                }
            }
        }
        let mut all: Vec<SocketAddr> = nodes.iter().flat_map(|a| [a.peer, a.client]).collect();
        all.extend(links.iter().map(|l| l.listen));
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
        let forward_target = use_proxy.then(|| {
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

/// Live counters for the progress bar and the run's rates.
#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    fail: AtomicU64,
    info: AtomicU64,
    /// Fails that were refusals (unavailable, connection refused), each followed by a backoff.
    refused: AtomicU64,
    /// Total time clients slept backing off, in ms.
    backoff_ms: AtomicU64,
}

/// Runs one logical client until `stop`. Returns how many operations it completed.
#[allow(clippy::too_many_arguments)]
async fn client_loop(
    index: usize,
    concurrency: usize,
    rate: f64,
    seed: u64,
    node: NodeAddr,
    gen: Arc<std::sync::Mutex<Generator>>,
    client: Client,
    recorder: Recorder,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(
        seed.wrapping_add(index as u64)
            .wrapping_mul(0x9e3779b97f4a7c15),
    );
    let mut process = index as u64;
    let mut backoff = Backoff::new(BackoffConfig::default(), rng.gen());
    let url = node.client_url();
    // Jepsen's stagger: each client waits uniformly in [0, 2 * concurrency / rate), so the
    // total averages the target rate without synchronising clients.
    let mean_gap_s = if rate > 0.0 {
        concurrency as f64 / rate
    } else {
        0.0
    };
    loop {
        if *stop.borrow() {
            return;
        }
        if mean_gap_s > 0.0 {
            let gap_ms = (rng.gen_range(0.0..2.0 * mean_gap_s) * 1000.0) as u64;
            if gap_ms > 0 && nemesis::sleep_or_stop(&mut stop, gap_ms).await {
                return;
            }
        }
        let op = gen.lock().unwrap_or_else(|e| e.into_inner()).next_op();
        let (info, refused) = run_one(
            &client, &recorder, process, &url, &node.name, &op, &counters,
        )
        .await;
        if info {
            // An unknown outcome keeps that process's operation open forever; continue as a new
            // process so the history stays well formed.
            process += concurrency as u64;
        }
        // After a refusal, back off (bounded, jittered) so the run measures the store rather
        // than this loop.
        if refused {
            let ms = backoff.refused().as_millis() as u64;
            counters.backoff_ms.fetch_add(ms, Ordering::Relaxed);
            if ms > 0 && nemesis::sleep_or_stop(&mut stop, ms).await {
                return;
            }
        } else {
            backoff.reset();
        }
    }
}

/// Performs and records one operation. Returns whether it ended `info`, and whether it was a
/// refusal to back off from.
async fn run_one(
    client: &Client,
    recorder: &Recorder,
    process: u64,
    url: &str,
    node_name: &str,
    op: &OpSpec,
    counters: &Counters,
) -> (bool, bool) {
    let mut invoke = Event::new(
        Process::Client(process),
        EventType::Invoke,
        op.f,
        op.value.clone(),
    );
    // Txns name their keys in their micro-ops.
    if !op.key.is_empty() {
        invoke = invoke.with_key(op.key.as_str());
    }
    invoke.node = Some(node_name.to_string());
    recorder.record_async(invoke).await;
    let c = client.invoke(url, op).await;
    let refused = c.refused;
    let mut done = Event::new(Process::Client(process), c.kind, op.f, c.value);
    if !op.key.is_empty() {
        done = done.with_key(op.key.as_str());
    }
    done.node = Some(node_name.to_string());
    done.error = c.error.map(Value::Str);
    recorder.record_async(done).await;
    match c.kind {
        EventType::Ok => counters.ok.fetch_add(1, Ordering::Relaxed),
        EventType::Fail => counters.fail.fetch_add(1, Ordering::Relaxed),
        _ => counters.info.fetch_add(1, Ordering::Relaxed),
    };
    if refused {
        counters.refused.fetch_add(1, Ordering::Relaxed);
    }
    (c.kind == EventType::Info, refused)
}

/// The outcome of `ordeal test`: the run directory and the process exit code.
pub struct RunOutcome {
    pub run_dir: PathBuf,
    pub verdict: Option<Verdict>,
    pub interrupted: bool,
}

/// Entry point of `ordeal test`. Call from `main` before any runtime exists.
pub fn run_test(args: TestArgs) -> i32 {
    let plan = match args.plan() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ordeal test: {e:#}");
            return 255;
        }
    };
    // The target is checked before anything starts: a bad target file is refused here.
    let target = match target::resolve(
        &args.target,
        args.target_bin.as_deref(),
        args.bug.as_deref(),
    ) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("ordeal test: --target {}: {e:#}", args.target);
            return 255;
        }
    };
    install_panic_hook();
    let choice = plan.net;
    if choice == NetChoice::Proxy && !target.per_node_peer_addresses() {
        eprintln!(
            "ordeal test: --net proxy: target {}'s nodes share one address per peer, so the userspace proxy cannot sit on each link; use --net netns (needs root)",
            target.name()
        );
        return 255;
    }
    let (net_name, net_note) = match choose_net(choice) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("ordeal test: {e:#}");
            return 255;
        }
    };
    eprintln!("ordeal test: network backend: {net_note}");
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
    if net_name == "proxy" && !target.per_node_peer_addresses() {
        eprintln!(
            "ordeal test: target {}'s nodes share one address per peer, so partitions need the network-namespace backend, which is unavailable: {net_note}",
            target.name()
        );
        return 255;
    }
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

async fn run_async(
    args: TestArgs,
    plan: RunPlan,
    target: Arc<dyn Target>,
    net_name: &'static str,
    net_note: String,
) -> Result<RunOutcome> {
    let workload = plan.workload;
    let kinds = plan.faults.clone();
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

    // With the kernel backend, a run with network faults needs netem for delay and duplication;
    // without it, links also pass through the userspace proxy, which applies them instead.
    let kernel = net_name == "netns";
    let netem_unavailable = if kernel && kinds.contains(&nemesis::FaultKind::Network) {
        net::probe_netem().err().map(|e| format!("{e:#}"))
    } else {
        None
    };
    // A target whose nodes share one address per peer cannot have the proxy on its links: its
    // delay and duplication are skipped when netem is missing (the network note says so).
    let use_proxy = (!kernel || netem_unavailable.is_some()) && target.per_node_peer_addresses();
    let (layout, proxy_links) = plan_layout(args.nodes, use_proxy, kernel)?;
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
    let net_note = if kinds.contains(&nemesis::FaultKind::Network) && args.nodes < 2 {
        eprintln!("ordeal test: one node has no links: the network fault will inject nothing");
        format!("{net_note}; network faults: none (one node has no links)")
    } else if kinds.contains(&nemesis::FaultKind::Network) {
        format!("{net_note}; {}", net.network_note())
    } else {
        net_note
    };
    tracing::info!("{net_note}");
    let snat_by_gid = kernel && !target.binds_source_ip();
    if snat_by_gid {
        net::snat_by_gid(&layout, cluster::SNAT_GID_BASE)?;
    }
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
        net_note: net_note.clone(),
        store_bin: target_info.binary.clone(),
        target: Some(target_info),
        reproduce: args.reproduce(seed, net_name),
        layout: serde_json::to_value(&layout)?,
        started_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        ordeal_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    std::fs::write(
        run_dir.join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )
    .context("writing config.json")?;

    let mut cluster = Cluster::new(target.clone(), layout.clone(), &run_dir, snat_by_gid)?;
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
    let cluster = Arc::new(Mutex::new(cluster));

    // Interrupts (Ctrl-C, SIGTERM): the first ends the main phase early, a second aborts.
    let (interrupt_tx, mut interrupt_rx) = watch::channel(false);
    let signal_task = spawn_signal_handler(net.clone(), interrupt_tx);

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
    let counters = Arc::new(Counters::default());
    let current_fault = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::new()));
    let (stop_tx, stop_rx) = watch::channel(false);

    let mut clients = Vec::with_capacity(args.concurrency);
    for i in 0..args.concurrency {
        clients.push(tokio::spawn(client_loop(
            i,
            args.concurrency,
            args.rate,
            seed,
            layout.nodes[i % layout.nodes.len()].clone(),
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
        interval_ms,
        hold_ms,
        targets,
        shapes,
        behaviours,
        replay,
        ..
    } = plan;
    let schedule: Arc<std::sync::Mutex<Vec<nemesis::ScheduledFault>>> = Arc::default();
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
                pb.set_message(format!(
                    "ok {} fail {} info {} | fault: {fault}",
                    counters.ok.load(Ordering::Relaxed),
                    counters.fail.load(Ordering::Relaxed),
                    counters.info.load(Ordering::Relaxed)
                ));
                if nemesis::sleep_or_stop(&mut stop, 200).await {
                    return;
                }
            }
        })
    };

    // The main phase.
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
    let throughput = ops_main as f64 / main_elapsed.as_secs_f64();
    // Attempted: every operation a client issued; completed: those that took effect (ok).
    let ok_main = counters.ok.load(Ordering::Relaxed);
    let completed_per_s = ok_main as f64 / main_elapsed.as_secs_f64();
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

    // Heal everything, whatever the nemesis managed to do.
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

    // An interrupted run recovers and reads like a finished one: the final reads are what
    // make a register or kv verdict sound, and the checks judge whatever was recorded.
    {
        let mut c = cluster.lock().await;
        match c.wait_ready(Duration::from_secs(30)).await {
            Ok(Some(l)) => tracing::info!("after healing, leader: {}", c.name(l)),
            Ok(None) => tracing::info!("after healing, every node serves"),
            Err(e) => tracing::warn!("after healing: {e:#}"),
        }
    }
    tokio::time::sleep(Duration::from_secs(args.recovery_s)).await;
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
    final_reads(&keys, &layout.nodes, &client, &recorder, args.concurrency).await;
    let convergence = check_convergence(&cluster).await;
    cluster.lock().await.stop_all();
    let log_paths = cluster.lock().await.log_paths();
    drop(recorder);
    let recorded = writer.await.context("history writer")??;
    let write_bytes = recorded.bytes_written;
    let history = History::new(recorded.events);

    let extra = serde_json::json!({
        "net": net_name,
        "net_note": net_note,
        "main_phase_s": main_elapsed.as_secs_f64(),
        "ops_main_phase": ops_main,
        "throughput_ops_per_s": throughput,
        "attempted_ops_per_s": throughput,
        "completed_ops_per_s": completed_per_s,
        "ops_ok_main_phase": ok_main,
        "ops_refused_main_phase": counters.refused.load(Ordering::Relaxed),
        "backoff_s_total": counters.backoff_ms.load(Ordering::Relaxed) as f64 / 1000.0,
        "history_bytes": write_bytes,
        "history_file": !args.no_history_file,
        "interrupted": interrupted,
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
    let verdict = analyse(&run_dir, &config, &history, &log_paths, convergence, extra)?;
    // The handler stays up through the checks, so a second interrupt still aborts them.
    signal_task.abort();
    Ok(RunOutcome {
        run_dir,
        verdict: Some(verdict),
        interrupted,
    })
}

/// Exit code of a run aborted by a second interrupt: 128 + SIGINT, as shells report Ctrl-C.
pub const ABORT_EXIT_CODE: i32 = 130;

/// The one place SIGINT and SIGTERM are handled once the cluster is up. The first ends the
/// main phase early (through `interrupt_tx`); the run then heals, recovers, reads and is
/// checked as usual. A second aborts at once: every network fault undone, every node killed,
/// exit `ABORT_EXIT_CODE` without a verdict. Store processes also carry PR_SET_PDEATHSIG, so
/// one started by a restart racing the abort dies with the harness too.
fn spawn_signal_handler(
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

/// Reads every key from every node after healing, under fresh process ids.
async fn final_reads(
    keys: &[String],
    nodes: &[NodeAddr],
    client: &Client,
    recorder: &Recorder,
    concurrency: usize,
) {
    let jobs: Vec<(String, NodeAddr)> = keys
        .iter()
        .flat_map(|k| nodes.iter().map(move |n| (k.clone(), n.clone())))
        .collect();
    let jobs = Arc::new(std::sync::Mutex::new(jobs.into_iter()));
    let counters = Arc::new(Counters::default());
    let workers = concurrency.clamp(1, 64);
    let mut tasks = Vec::with_capacity(workers);
    for w in 0..workers {
        let jobs = jobs.clone();
        let client = client.clone();
        let recorder = recorder.clone();
        let counters = counters.clone();
        tasks.push(tokio::spawn(async move {
            // Process ids far above the main phase's, so they never collide.
            let mut process = 1_000_000_000 + w as u64;
            loop {
                let next = jobs.lock().unwrap_or_else(|e| e.into_inner()).next();
                let Some((key, node)) = next else { return };
                let op = OpSpec {
                    f: "read",
                    key,
                    value: Value::Null,
                };
                if run_one(
                    &client,
                    &recorder,
                    process,
                    &node.client_url(),
                    &node.name,
                    &op,
                    &counters,
                )
                .await
                .0
                {
                    process += workers as u64;
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    tracing::info!(
        "final reads: {} ok, {} fail, {} info",
        counters.ok.load(Ordering::Relaxed),
        counters.fail.load(Ordering::Relaxed),
        counters.info.load(Ordering::Relaxed)
    );
}

/// Every replica's state digest (the target's convergence query: paxos-kv's `/status` digest,
/// etcd's backend hash) must agree once they have applied the same prefix.
async fn check_convergence(cluster: &Arc<Mutex<Cluster>>) -> CheckOutcome {
    let query = cluster.lock().await.target().convergence_query();
    if query == target::ConvergenceQuery::None {
        // Not judged: the target offers no state digest. Valid so the verdict is the checkers'.
        return CheckOutcome {
            name: "convergence".into(),
            verdict: Verdict::Valid,
            summary: "not checked: the target has no state digest (status_digest in its file)"
                .into(),
            details: serde_json::Value::Null,
            html: None,
        };
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last;
    loop {
        let c = cluster.lock().await;
        let statuses = futures::future::join_all((0..c.len()).map(|i| c.state(i))).await;
        drop(c);
        let reachable: Vec<_> = statuses.iter().flatten().collect();
        let digests: Vec<Option<String>> = statuses
            .iter()
            .map(|s| s.as_ref().and_then(|s| s.digest.clone()))
            .collect();
        last = statuses.clone();
        if reachable.len() == statuses.len() && digests.iter().all(|d| d.is_some()) {
            let first = &digests[0];
            if digests.iter().all(|d| d == first) {
                return CheckOutcome {
                    name: "convergence".into(),
                    verdict: Verdict::Valid,
                    summary: format!(
                        "all {} replicas report digest {}",
                        digests.len(),
                        first.clone().unwrap_or_default()
                    ),
                    details: serde_json::to_value(&statuses).unwrap_or_default(),
                    html: None,
                };
            }
            let applied: Vec<Option<u64>> = statuses
                .iter()
                .map(|s| s.as_ref().and_then(|s| s.applied))
                .collect();
            if applied.iter().all(|a| a.is_some() && *a == applied[0]) && Instant::now() >= deadline
            {
                return CheckOutcome {
                    name: "convergence".into(),
                    verdict: Verdict::Invalid,
                    summary: "replicas applied the same log prefix but report different digests"
                        .into(),
                    details: serde_json::to_value(&statuses).unwrap_or_default(),
                    html: None,
                };
            }
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    CheckOutcome {
        name: "convergence".into(),
        verdict: Verdict::Unknown,
        summary: "replicas did not report equal digests within 15 s".into(),
        details: serde_json::to_value(&last).unwrap_or_default(),
        html: None,
    }
}
