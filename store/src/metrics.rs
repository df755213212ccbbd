//! Counters and the latency histogram, and their Prometheus text rendering for /metrics.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crate::paxos::Role;
use crate::server::Shared;

/// Upper bounds of the request latency histogram buckets, in seconds.
pub const LATENCY_BUCKETS_S: [f64; 12] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
];

/// Counters for /metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    pub proposals: AtomicU64,
    pub applied_commands: AtomicU64,
    pub applied_slots: AtomicU64,
    pub reads_confirmed: AtomicU64,
    pub rejected: AtomicU64,
    pub rejected_unknown: AtomicU64,
    pub wal_records: AtomicU64,
    pub wal_fsyncs: AtomicU64,
    pub wal_bytes: AtomicU64,
    pub snapshots: AtomicU64,
    pub snapshots_installed: AtomicU64,
    pub http_requests: AtomicU64,
    pub forwarded: AtomicU64,
    /// Client connections answered 503 at the connection cap.
    pub http_connections_refused: AtomicU64,
    pub latency: Histogram,
}

/// A fixed-bucket latency histogram (buckets: `http::LATENCY_BUCKETS_S`, plus +Inf).
#[derive(Debug, Default)]
pub struct Histogram {
    pub buckets: [AtomicU64; 12],
    pub count: AtomicU64,
    pub sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, secs: f64) {
        if let Some(i) = LATENCY_BUCKETS_S.iter().position(|le| secs <= *le) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add((secs * 1e6) as u64, Relaxed);
    }
}

pub(crate) async fn render(State(s): State<Arc<Shared>>) -> Response {
    use std::fmt::Write;
    let st = s.status.lock().expect("lock poisoned").clone();
    let (applied, keys) = {
        let kv = s.kv.read().expect("lock poisoned");
        (kv.applied_index(), kv.len())
    };
    let m = &s.metrics;
    let t = &s.transport.stats;
    let mut out = String::new();
    let mut line = |name: &str, kind: &str, help: &str, v: u64| {
        let _ = writeln!(
            out,
            "# HELP paxos_kv_{name} {help}\n# TYPE paxos_kv_{name} {kind}\npaxos_kv_{name} {v}"
        );
    };
    line(
        "is_leader",
        "gauge",
        "1 if this node leads",
        (st.role == Role::Leader) as u64,
    );
    line(
        "ballot_round",
        "gauge",
        "round of the highest promised ballot",
        st.ballot.round,
    );
    line(
        "commit_index",
        "gauge",
        "highest slot known chosen",
        st.commit_index,
    );
    line("applied_index", "gauge", "highest slot applied", applied);
    line(
        "snapshot_index",
        "gauge",
        "slot covered by the latest snapshot",
        st.snapshot_slot,
    );
    line("keys", "gauge", "keys in the state machine", keys as u64);
    line(
        "pending_proposals",
        "gauge",
        "proposals waiting for a slot",
        st.pending_proposals as u64,
    );
    line(
        "in_flight_slots",
        "gauge",
        "slots in phase 2",
        st.in_flight_slots as u64,
    );
    line(
        "proposals_total",
        "counter",
        "client commands proposed here",
        m.proposals.load(Relaxed),
    );
    line(
        "applied_commands_total",
        "counter",
        "client commands applied",
        m.applied_commands.load(Relaxed),
    );
    line(
        "applied_slots_total",
        "counter",
        "log slots applied",
        m.applied_slots.load(Relaxed),
    );
    line(
        "reads_confirmed_total",
        "counter",
        "linearizable reads confirmed",
        m.reads_confirmed.load(Relaxed),
    );
    line(
        "rejected_total",
        "counter",
        "proposals dropped by the core",
        m.rejected.load(Relaxed),
    );
    line(
        "rejected_unknown_total",
        "counter",
        "proposals dropped with unknown outcome",
        m.rejected_unknown.load(Relaxed),
    );
    line(
        "wal_records_total",
        "counter",
        "WAL records appended",
        m.wal_records.load(Relaxed),
    );
    line(
        "wal_fsyncs_total",
        "counter",
        "WAL fsyncs",
        m.wal_fsyncs.load(Relaxed),
    );
    line(
        "wal_bytes_total",
        "counter",
        "WAL bytes written",
        m.wal_bytes.load(Relaxed),
    );
    line(
        "snapshots_total",
        "counter",
        "snapshots written",
        m.snapshots.load(Relaxed),
    );
    line(
        "snapshots_installed_total",
        "counter",
        "snapshots installed from the leader",
        m.snapshots_installed.load(Relaxed),
    );
    line(
        "http_requests_total",
        "counter",
        "client HTTP requests",
        m.http_requests.load(Relaxed),
    );
    line(
        "forwarded_total",
        "counter",
        "requests forwarded to the leader",
        m.forwarded.load(Relaxed),
    );
    line(
        "http_connections",
        "gauge",
        "client connections open",
        s.http_connections.load(Relaxed) as u64,
    );
    line(
        "http_connections_max",
        "gauge",
        "client connection cap",
        s.config.http_connections_cap() as u64,
    );
    line(
        "http_connections_refused_total",
        "counter",
        "client connections refused at the cap",
        m.http_connections_refused.load(Relaxed),
    );
    line(
        "peer_hellos_refused_total",
        "counter",
        "inbound peer connections whose hello was refused",
        t.hellos_refused.load(Relaxed),
    );
    line(
        "peer_frames_sent_total",
        "counter",
        "frames sent to peers",
        t.frames_sent.load(Relaxed),
    );
    line(
        "peer_frames_dropped_total",
        "counter",
        "frames dropped (queue full or peer down)",
        t.frames_dropped.load(Relaxed),
    );
    line(
        "peer_frames_received_total",
        "counter",
        "frames received from peers",
        t.frames_received.load(Relaxed),
    );
    if let Some(sh) = &s.shard {
        let sm = &sh.metrics;
        for (name, help, v) in [
            (
                "shard_decisions_total",
                "two-phase commit decisions applied here (as coordinator)",
                &sm.decisions,
            ),
            (
                "shard_configs_applied_total",
                "shard configurations applied",
                &sm.configs_applied,
            ),
            (
                "shard_installed_total",
                "arriving shards installed",
                &sm.shards_installed,
            ),
            (
                "shard_frozen_total",
                "leaving shards frozen for hand-off",
                &sm.shards_frozen,
            ),
            (
                "shard_messages_sent_total",
                "messages delivered to other groups and the controller",
                &sm.messages_sent,
            ),
            (
                "shard_messages_dropped_total",
                "messages to other groups dropped (no member answered, or too many in flight)",
                &sm.messages_dropped,
            ),
            (
                "shard_messages_received_total",
                "messages handed to the group core",
                &sm.messages_received,
            ),
        ] {
            line(name, "counter", help, v.load(Relaxed));
        }
        let _ = writeln!(
            out,
            "# HELP paxos_kv_shard_txns_committed_total transaction parts applied here, by path\n\
             # TYPE paxos_kv_shard_txns_committed_total counter\n\
             paxos_kv_shard_txns_committed_total{{path=\"fast\"}} {}\n\
             paxos_kv_shard_txns_committed_total{{path=\"2pc\"}} {}",
            sm.txns_committed_fast.load(Relaxed),
            sm.txns_committed_2pc.load(Relaxed)
        );
    }
    let h = &m.latency;
    let _ = writeln!(
        out,
        "# HELP paxos_kv_http_request_duration_seconds client API request latency\n\
         # TYPE paxos_kv_http_request_duration_seconds histogram"
    );
    let mut cumulative = 0;
    for (i, le) in LATENCY_BUCKETS_S.iter().enumerate() {
        cumulative += h.buckets[i].load(Relaxed);
        let _ = writeln!(
            out,
            "paxos_kv_http_request_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
        );
    }
    let count = h.count.load(Relaxed);
    let _ = writeln!(
        out,
        "paxos_kv_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(
        out,
        "paxos_kv_http_request_duration_seconds_sum {}",
        h.sum_us.load(Relaxed) as f64 / 1e6
    );
    let _ = writeln!(out, "paxos_kv_http_request_duration_seconds_count {count}");
    (
        StatusCode::OK,
        [("content-type", "text/plain; version=0.0.4")],
        out,
    )
        .into_response()
}
