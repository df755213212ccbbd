//! The clients: each runs the workload against its node, recording every invocation and
//! completion, until told to stop. Used by the main phase and by the final reads.

use crate::cluster::NodeAddr;
use crate::nemesis;
use crate::record::Recorder;
use crate::target::Client;
use ordeal_checker::{Event, EventType, Process, Value};
use ordeal_workloads::{Backoff, BackoffConfig, Generator, OpSpec, ShardRouter};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

/// Where a client sends its operations.
#[derive(Clone)]
pub(super) enum Endpoint {
    /// Always this node (an unsharded store forwards to its leader itself).
    Node(NodeAddr),
    /// Sharded paxos-kv: a member of the group owning each operation's key, by the
    /// controller's config; the number spreads clients over a group's members.
    Routed(Arc<ShardRouter>, usize),
}

/// Live counters for the progress bar and the run's rates.
#[derive(Default)]
pub(super) struct Counters {
    pub ok: AtomicU64,
    pub fail: AtomicU64,
    pub info: AtomicU64,
    /// Fails that were refusals (unavailable, connection refused), each followed by a backoff.
    pub refused: AtomicU64,
    /// Total time clients slept backing off, in ms.
    pub backoff_ms: AtomicU64,
}

/// Runs one logical client until `stop`. Returns how many operations it completed.
#[allow(clippy::too_many_arguments)]
pub(super) async fn client_loop(
    index: usize,
    concurrency: usize,
    rate: f64,
    seed: u64,
    endpoint: Endpoint,
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
        let (info, refused) = run_one(&client, &recorder, process, &endpoint, &op, &counters).await;
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
pub(super) async fn run_one(
    client: &Client,
    recorder: &Recorder,
    process: u64,
    endpoint: &Endpoint,
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
    // A routed operation names the node its client's config routes it to first; the
    // completion names the node that answered.
    invoke.node = match endpoint {
        Endpoint::Node(node) => Some(node.name.clone()),
        Endpoint::Routed(router, hint) => router.first_node(op, *hint),
    };
    recorder.record_async(invoke).await;
    let (c, node_name) = match endpoint {
        Endpoint::Node(node) => (
            client.invoke(&node.client_url(), op).await,
            node.name.clone(),
        ),
        Endpoint::Routed(router, hint) => client.invoke_routed(router, op, *hint).await,
    };
    let refused = c.refused;
    let mut done = Event::new(Process::Client(process), c.kind, op.f, c.value);
    if !op.key.is_empty() {
        done = done.with_key(op.key.as_str());
    }
    done.node = (!node_name.is_empty()).then_some(node_name);
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
