//! paxos-kv: one replica of the multi-Paxos key-value store.

use anyhow::{bail, Context, Result};
use clap::Parser;
use paxos_kv::paxos::Bug;
use paxos_kv::server::sharded::{ShardRole, ShardSettings};
use paxos_kv::server::{Server, ServerConfig};
use paxos_kv::shard::{Cc, Deadlock, ShardBug};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

fn bug_help() -> String {
    let mut s =
        String::from("Planted bugs (off by default; enable with --bug NAME, repeatable):\n");
    for b in Bug::ALL {
        s.push_str(&format!("  {:<24} {}\n", b.name(), b.description()));
    }
    s.push_str("Planted bugs of the sharded store (--mode group):\n");
    for b in ShardBug::ALL {
        s.push_str(&format!("  {:<24} anomaly: {}\n", b.name(), b.anomaly()));
    }
    s
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// One Paxos group holding every key (the default).
    Single,
    /// The shard controller: numbered configurations shard -> group.
    Controller,
    /// A replica group serving the shards the controller gives it.
    Group,
}

#[derive(Parser, Debug)]
#[command(name = "paxos-kv", version, about = "A multi-Paxos replicated key-value store (the system under test of ordeal)", after_help = bug_help())]
struct Cli {
    /// What this process is: the single-group store, a shard controller node, or a node of a
    /// replica group.
    #[arg(long, value_enum, default_value_t = Mode::Single)]
    mode: Mode,
    /// The replica group this node belongs to (--mode group; a positive integer).
    #[arg(long)]
    group_id: Option<u64>,
    /// The controller nodes' client (HTTP) addresses as HOST:PORT, comma-separated
    /// (--mode group).
    #[arg(long, default_value = "")]
    controller: String,
    /// Number of shards (sharded modes); the controller and every group must agree.
    #[arg(long, default_value_t = paxos_kv::shard::DEFAULT_SHARDS)]
    shards: usize,
    /// Concurrency control of transactions (--mode group): 2pl or occ.
    #[arg(long, default_value = "2pl")]
    cc: String,
    /// How 2PL avoids deadlock (--mode group): wound-wait or no-wait.
    #[arg(long, default_value = "wound-wait")]
    deadlock: String,
    /// Wall-clock milliseconds per tick of the replica group's shard core.
    #[arg(long, default_value_t = 20)]
    shard_tick_ms: u64,
    /// This node's id (a positive integer, one of the ids in --peers).
    #[arg(long)]
    id: u64,
    /// Peer (Paxos) address to listen on; outgoing peer connections also use its IP.
    #[arg(long)]
    listen: SocketAddr,
    /// HTTP address for clients.
    #[arg(long)]
    client: SocketAddr,
    /// Every member as ID=HOST:PORT, comma-separated, this node included.
    #[arg(long)]
    peers: String,
    /// Where to send client requests forwarded to a peer, as ID=HOST:PORT, comma-separated
    /// (e.g. a proxy in front of that peer's HTTP address). A peer not listed is reached at the
    /// client address it announces.
    #[arg(long, default_value = "")]
    peer_clients: String,
    /// A file holding the cluster token (trailing whitespace ignored): every peer hello must
    /// carry it. Without it, a peer is trusted by its configured id and IP only.
    #[arg(long)]
    cluster_token_file: Option<PathBuf>,
    /// Directory for the WAL and snapshots (created if missing).
    #[arg(long)]
    data_dir: PathBuf,
    /// Enable a planted bug (see the list below). Repeatable.
    #[arg(long = "bug", value_name = "NAME")]
    bugs: Vec<String>,
    /// Do not fsync the WAL (fast, loses data on power failure; not on kill -9).
    #[arg(long)]
    no_fsync: bool,
    /// Wall-clock milliseconds per logical tick of the consensus core.
    #[arg(long, default_value_t = 10)]
    tick_ms: u64,
    /// Minimum election timeout in ticks (randomised in [min, 2*min)).
    #[arg(long, default_value_t = 15)]
    election_timeout_ticks: u64,
    /// Leader heartbeat interval in ticks.
    #[arg(long, default_value_t = 3)]
    heartbeat_interval_ticks: u64,
    /// How long a client request waits for its outcome before 504.
    #[arg(long, default_value_t = 2000)]
    request_timeout_ms: u64,
    /// Largest key in bytes.
    #[arg(long, default_value_t = 1024)]
    key_max_bytes: usize,
    /// Largest value in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    value_max_bytes: usize,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    body_max_bytes: usize,
    /// Most micro-ops in one txn.
    #[arg(long, default_value_t = 1000)]
    txn_max_ops: usize,
    /// Clients remembered by the exactly-once table.
    #[arg(long, default_value_t = 100_000)]
    dedup_clients: usize,
    /// Bytes the exactly-once table may hold (client ids and recorded outcomes); the oldest
    /// clients are evicted past it. Every node must use the same value. In --mode group each
    /// shard's table gets this divided by --shards.
    #[arg(long, default_value_t = 64 << 20)]
    dedup_max_bytes: usize,
    /// Longest client_id in bytes; longer is refused with 413.
    #[arg(long, default_value_t = 256)]
    client_id_max_bytes: usize,
    /// Longest request target (path and query) in bytes; longer is refused with 414.
    #[arg(long, default_value_t = 8 << 10)]
    uri_max_bytes: usize,
    /// Most bytes of request headers; more is refused with 431.
    #[arg(long, default_value_t = 64 << 10)]
    headers_max_bytes: usize,
    /// Close a client connection that does not send complete request headers within this
    /// (also an idle keep-alive connection).
    #[arg(long, default_value_t = 10_000)]
    http_header_timeout_ms: u64,
    /// Answer 408 when a request body does not arrive within this.
    #[arg(long, default_value_t = 10_000)]
    http_body_timeout_ms: u64,
    /// Client connections open at once; past it a connection is answered 503 and closed.
    /// 0: the open-file limit minus --fd-reserve.
    #[arg(long, default_value_t = 0)]
    http_connections_max: usize,
    /// File descriptors kept out of the client connection cap for peers, the WAL and
    /// forwarding.
    #[arg(long, default_value_t = 256)]
    fd_reserve: usize,
    /// Snapshot the state machine and compact the WAL every this many slots.
    #[arg(long, default_value_t = 10_000)]
    snapshot_interval_entries: u64,
    /// Chosen entries kept in the log behind a snapshot, so slightly lagging peers catch up
    /// from the log instead of by snapshot.
    #[arg(long, default_value_t = 1_000)]
    compaction_retain_entries: u64,
    /// Also snapshot and compact the WAL once this many bytes were appended since the last time.
    #[arg(long, default_value_t = 128 << 20)]
    wal_compact_bytes: u64,
    /// With --bug ack-before-persist: how long WAL records sit in the user-space buffer before
    /// they are written and fsynced.
    #[arg(long, default_value_t = 2000)]
    lazy_flush_ms: u64,
}

fn parse_peers(s: &str) -> Result<BTreeMap<u64, SocketAddr>> {
    let peers = parse_addr_list(s, "--peers")?;
    if peers.is_empty() {
        bail!("--peers is empty");
    }
    Ok(peers)
}

/// Parses `ID=HOST:PORT,...` (loopback addresses only), naming `flag` in errors.
fn parse_addr_list(s: &str, flag: &str) -> Result<BTreeMap<u64, SocketAddr>> {
    let mut peers = BTreeMap::new();
    for (i, part) in s
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .enumerate()
    {
        let (id, addr) = part
            .split_once('=')
            .with_context(|| format!("{flag} entry {} {part:?}: expected ID=HOST:PORT", i + 1))?;
        let id: u64 = id.trim().parse().ok().filter(|&n| n > 0).with_context(|| {
            format!(
                "{flag} entry {} {part:?}: id {id:?} is not a positive integer",
                i + 1
            )
        })?;
        let addr: SocketAddr = addr.trim().parse().with_context(|| {
            format!(
                "{flag} entry {} {part:?}: {addr:?} is not an IP:PORT address",
                i + 1
            )
        })?;
        if !addr.ip().is_loopback() {
            bail!(
                "{flag} entry {} {part:?}: only loopback (127.0.0.0/8) addresses are allowed",
                i + 1
            );
        }
        if peers.insert(id, addr).is_some() {
            bail!("{flag} lists node {id} twice");
        }
    }
    Ok(peers)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The whole cause chain on one line, without a backtrace: these are user errors.
            eprintln!("paxos-kv: error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let peers = parse_peers(&cli.peers)?;
    let peer_clients = parse_addr_list(&cli.peer_clients, "--peer-clients")?;
    if let Some(id) = peer_clients.keys().find(|id| !peers.contains_key(id)) {
        bail!("--peer-clients names node {id}, which --peers does not list");
    }
    let mut bugs = Vec::new();
    let mut shard_bugs = Vec::new();
    for name in &cli.bugs {
        match (name.parse::<Bug>(), name.parse::<ShardBug>()) {
            (Ok(b), _) => bugs.push(b),
            (_, Ok(b)) if cli.mode == Mode::Group => shard_bugs.push(b),
            (_, Ok(_)) => {
                bail!("--bug {name} is a bug of the sharded store: it needs --mode group")
            }
            (Err(e), Err(_)) => {
                return Err(anyhow::anyhow!("{e}")).with_context(|| {
                    format!(
                        "--bug {name} (sharded-store bugs: {})",
                        ShardBug::ALL.map(|b| b.name()).join(", ")
                    )
                })
            }
        }
    }
    let sharding = match cli.mode {
        Mode::Single => {
            if cli.group_id.is_some() || !cli.controller.is_empty() {
                bail!("--group-id and --controller need --mode group");
            }
            None
        }
        Mode::Controller | Mode::Group => {
            let role = match (cli.mode, cli.group_id) {
                (Mode::Group, Some(g)) => ShardRole::Group(g),
                (Mode::Group, None) => bail!("--mode group needs --group-id"),
                (_, Some(_)) => bail!("--group-id needs --mode group"),
                _ => ShardRole::Controller,
            };
            let mut sh = ShardSettings::new(role);
            sh.shards = cli.shards;
            sh.tick_ms = cli.shard_tick_ms;
            // The byte bound is split evenly over the shards: each shard's table moves with
            // it, so each must be bounded on its own.
            sh.dedup_max_bytes_per_shard = (cli.dedup_max_bytes / cli.shards.max(1)).max(1);
            sh.bugs = shard_bugs.clone();
            sh.cc = cli.cc.parse::<Cc>().context("--cc")?;
            sh.deadlock = cli.deadlock.parse::<Deadlock>().context("--deadlock")?;
            for b in &shard_bugs {
                if let Some(cc) = b.needs_cc().filter(|cc| *cc != sh.cc) {
                    tracing::warn!(bug = b.name(), "this bug only shows with --cc {cc}");
                }
            }
            for (i, a) in cli
                .controller
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .enumerate()
            {
                let addr: SocketAddr = a.parse().with_context(|| {
                    format!(
                        "--controller entry {} {a:?} is not an IP:PORT address",
                        i + 1
                    )
                })?;
                if !addr.ip().is_loopback() {
                    bail!("--controller entry {} {a:?}: only loopback (127.0.0.0/8) addresses are allowed", i + 1);
                }
                sh.controller.push(addr.to_string());
            }
            Some(sh)
        }
    };
    if !bugs.is_empty() || !shard_bugs.is_empty() {
        tracing::warn!(
            ?bugs,
            ?shard_bugs,
            "planted bugs enabled: this node is deliberately incorrect"
        );
    }
    let mut cfg = ServerConfig::new(cli.id, cli.listen, cli.client, peers, cli.data_dir);
    cfg.bugs = bugs;
    cfg.sharding = sharding;
    cfg.peer_clients = peer_clients;
    cfg.fsync = !cli.no_fsync;
    cfg.tick_ms = cli.tick_ms;
    cfg.election_timeout_ticks = cli.election_timeout_ticks;
    cfg.heartbeat_interval_ticks = cli.heartbeat_interval_ticks;
    cfg.request_timeout_ms = cli.request_timeout_ms;
    cfg.key_max_bytes = cli.key_max_bytes;
    cfg.value_max_bytes = cli.value_max_bytes;
    cfg.body_max_bytes = cli.body_max_bytes;
    cfg.txn_max_ops = cli.txn_max_ops;
    cfg.dedup_clients = cli.dedup_clients;
    cfg.dedup_max_bytes = cli.dedup_max_bytes;
    cfg.client_id_max_bytes = cli.client_id_max_bytes;
    cfg.uri_max_bytes = cli.uri_max_bytes;
    cfg.headers_max_bytes = cli.headers_max_bytes;
    cfg.http_header_timeout_ms = cli.http_header_timeout_ms;
    cfg.http_body_timeout_ms = cli.http_body_timeout_ms;
    cfg.http_connections_max = cli.http_connections_max;
    cfg.fd_reserve = cli.fd_reserve;
    cfg.snapshot_interval_entries = cli.snapshot_interval_entries;
    cfg.compaction_retain_entries = cli.compaction_retain_entries;
    cfg.lazy_flush_ms = cli.lazy_flush_ms;
    cfg.wal_compact_bytes = cli.wal_compact_bytes;
    if let Some(path) = &cli.cluster_token_file {
        let text = std::fs::read(path)
            .with_context(|| format!("--cluster-token-file {}", path.display()))?;
        let token = text.trim_ascii_end().to_vec();
        if token.is_empty() {
            bail!("--cluster-token-file {} is empty", path.display());
        }
        cfg.cluster_token = Some(token);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    rt.block_on(async move {
        let _server = Server::start(cfg)
            .await
            .context("paxos-kv failed to start")?;
        tokio::signal::ctrl_c().await.context("wait for Ctrl-C")?;
        tracing::info!("interrupted; exiting");
        Ok(())
    })
}
