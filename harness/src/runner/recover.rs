//! Phase 6, recover: once healed, the cluster serves again, rests `--recovery-s`, every key is
//! read from every node (the reads that make a register or kv verdict sound), the replicas'
//! digests are compared (per group, for sharded paxos-kv), and every node is stopped.

use super::clients::{run_one, Counters, Endpoint};
use crate::checks::CheckOutcome;
use crate::cluster::{Cluster, NodeAddr};
use crate::record::Recorder;
use crate::target::{self, Client};
use ordeal_checker::{Value, Verdict};
use ordeal_workloads::OpSpec;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// What the recovery phase leaves for the analysis.
pub(super) struct Recovered {
    pub convergence: CheckOutcome,
    pub log_paths: Vec<PathBuf>,
}

/// Waits for the cluster, rests, reads `keys` from every node, checks convergence and stops
/// every node. An interrupted run recovers and reads like a finished one: the final reads are
/// what make a register or kv verdict sound, and the checks judge whatever was recorded.
#[allow(clippy::too_many_arguments)]
pub(super) async fn recover(
    cluster: &Arc<Mutex<Cluster>>,
    recovery_s: u64,
    keys: &[String],
    nodes: &[NodeAddr],
    client: &Client,
    recorder: &Recorder,
    concurrency: usize,
    shards: Option<&super::Sharding>,
) -> Recovered {
    {
        let mut c = cluster.lock().await;
        match c.wait_ready(Duration::from_secs(30)).await {
            Ok(Some(l)) => tracing::info!("after healing, leader: {}", c.name(l)),
            Ok(None) => tracing::info!("after healing, every node serves"),
            Err(e) => tracing::warn!("after healing: {e:#}"),
        }
    }
    if let Some(s) = shards {
        match s.control.wait_settled(Duration::from_secs(30)).await {
            Ok(cfg) => tracing::info!("after healing, every group serves config {}", cfg.num),
            Err(e) => tracing::warn!("after healing: {e:#}"),
        }
    }
    tokio::time::sleep(Duration::from_secs(recovery_s)).await;
    // Every key from every node; sharded: from every member of the group owning it.
    let endpoints: Vec<Endpoint> = match shards.map(|s| (s, s.router())) {
        Some((s, Ok(router))) => (0..s.control.per_group)
            .map(|j| Endpoint::Routed(router.clone(), j))
            .collect(),
        Some((_, Err(e))) => {
            tracing::error!("final reads: {e:#}");
            Vec::new()
        }
        None => nodes.iter().cloned().map(Endpoint::Node).collect(),
    };
    final_reads(keys, &endpoints, client, recorder, concurrency).await;
    let groups = match shards {
        Some(s) => s.control.convergence_groups(),
        None => vec![(String::new(), (0..nodes.len()).collect())],
    };
    let convergence = check_convergence(cluster, &groups).await;
    cluster.lock().await.stop_all();
    let log_paths = cluster.lock().await.log_paths();
    Recovered {
        convergence,
        log_paths,
    }
}

/// Reads every key from every endpoint after healing, under fresh process ids.
async fn final_reads(
    keys: &[String],
    endpoints: &[Endpoint],
    client: &Client,
    recorder: &Recorder,
    concurrency: usize,
) {
    let jobs: Vec<(String, Endpoint)> = keys
        .iter()
        .flat_map(|k| endpoints.iter().map(move |n| (k.clone(), n.clone())))
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
                let Some((key, endpoint)) = next else { return };
                let op = OpSpec {
                    f: "read",
                    key,
                    value: Value::Null,
                };
                if run_one(&client, &recorder, process, &endpoint, &op, &counters)
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
/// etcd's backend hash) must agree, within each group of `groups` (name, node indices: the
/// whole cluster, or sharded paxos-kv's controller and each replica group), once they have
/// applied the same prefix.
async fn check_convergence(
    cluster: &Arc<Mutex<Cluster>>,
    groups: &[(String, Vec<usize>)],
) -> CheckOutcome {
    let query = cluster.lock().await.target().convergence_query();
    let outcome = |verdict, summary: String, details| CheckOutcome {
        name: "convergence".into(),
        verdict,
        summary,
        details,
        html: None,
    };
    if query == target::ConvergenceQuery::None {
        // Not judged: the target offers no state digest. Valid so the verdict is the checkers'.
        return outcome(
            Verdict::Valid,
            "not checked: the target has no state digest (status_digest in its file)".into(),
            serde_json::Value::Null,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let named = |name: &str, text: String| {
        if name.is_empty() {
            text
        } else {
            format!("{name}: {text}")
        }
    };
    loop {
        let c = cluster.lock().await;
        let statuses = futures::future::join_all((0..c.len()).map(|i| c.state(i))).await;
        let names: Vec<String> = c.layout().nodes.iter().map(|n| n.name.clone()).collect();
        drop(c);
        let details = serde_json::to_value(&statuses).unwrap_or_default();
        // Per group: Some(Ok(digest)) agreed, Some(Err(..)) differ at one applied index,
        // None not yet known.
        let mut verdicts = Vec::new();
        for (name, members) in groups {
            let states: Vec<_> = members.iter().map(|&i| statuses[i].as_ref()).collect();
            let digests: Vec<Option<String>> = states
                .iter()
                .map(|s| s.and_then(|s| s.digest.clone()))
                .collect();
            let applied: Vec<Option<u64>> =
                states.iter().map(|s| s.and_then(|s| s.applied)).collect();
            let verdict = if digests.iter().all(|d| d.is_some() && *d == digests[0]) {
                Some(Ok(named(
                    name,
                    format!(
                        "all {} replicas report digest {}",
                        digests.len(),
                        digests[0].clone().unwrap_or_default()
                    ),
                )))
            } else if let Some((i, j)) = diverged_pair(&applied, &digests) {
                // Judged at the deadline, once laggards have had their time: two replicas that
                // applied the same prefix must hold the same state, whatever the others did (a
                // third may be stuck behind, or ahead).
                let all = applied.iter().all(|a| a.is_some() && *a == applied[0]);
                let node = |k: usize| names.get(members[k]).map_or("?", String::as_str);
                Some(Err(named(
                    name,
                    if all {
                        "replicas applied the same log prefix but report different digests".into()
                    } else {
                        format!(
                            "replicas {} and {} applied the same log prefix (index {}) but report different digests",
                            node(i),
                            node(j),
                            applied[i].unwrap_or_default()
                        )
                    },
                )))
            } else {
                None
            };
            verdicts.push(verdict);
        }
        if verdicts.iter().all(|v| matches!(v, Some(Ok(_)))) {
            let lines: Vec<String> = verdicts.into_iter().flatten().flatten().collect();
            return outcome(Verdict::Valid, lines.join("; "), details);
        }
        if Instant::now() >= deadline {
            let bad: Vec<String> = verdicts
                .iter()
                .filter_map(|v| match v {
                    Some(Err(e)) => Some(e.clone()),
                    _ => None,
                })
                .collect();
            if !bad.is_empty() {
                return outcome(Verdict::Invalid, bad.join("; "), details);
            }
            let waiting: Vec<&str> = groups
                .iter()
                .zip(&verdicts)
                .filter(|(_, v)| v.is_none())
                .map(|((name, _), _)| {
                    if name.is_empty() {
                        "replicas"
                    } else {
                        name.as_str()
                    }
                })
                .collect();
            return outcome(
                Verdict::Unknown,
                format!(
                    "{} did not report equal digests within 15 s",
                    waiting.join(", ")
                ),
                details,
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The first two replicas that report the same applied index and different digests.
fn diverged_pair(applied: &[Option<u64>], digests: &[Option<String>]) -> Option<(usize, usize)> {
    let n = applied.len().min(digests.len());
    (0..n)
        .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
        .find(|&(i, j)| {
            applied[i].is_some()
                && applied[i] == applied[j]
                && digests[i].is_some()
                && digests[j].is_some()
                && digests[i] != digests[j]
        })
}

#[cfg(test)]
mod tests {
    use super::diverged_pair;

    #[test]
    fn a_pair_at_one_index_with_two_digests_is_divergence() {
        let d = |s: &str| Some(s.to_string());
        // The run that motivated it: the leader one entry behind, the followers equal in index
        // and different in state.
        assert_eq!(
            diverged_pair(
                &[Some(2630), Some(2631), Some(2631)],
                &[d("a"), d("a"), d("b")]
            ),
            Some((1, 2))
        );
        // Different indexes explain different digests: not divergence (yet).
        assert_eq!(
            diverged_pair(&[Some(10), Some(11), Some(12)], &[d("a"), d("b"), d("c")]),
            None
        );
        // Equal everywhere, or a digest missing: nothing proven.
        assert_eq!(diverged_pair(&[Some(5), Some(5)], &[d("a"), d("a")]), None);
        assert_eq!(diverged_pair(&[Some(5), Some(5)], &[d("a"), None]), None);
        assert_eq!(diverged_pair(&[None, None], &[d("a"), d("b")]), None);
    }
}
