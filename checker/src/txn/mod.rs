//! An Elle-style transactional checker (Kingsbury & Alvaro, "Elle: Inferring Isolation
//! Anomalies from Experimental Observations").
//!
//! From a history of list-append or read-write-register transactions it infers per-key version
//! orders, builds a dependency graph of write-write, write-read and read-write edges (plus
//! process and real-time order), finds strongly connected components, searches each for the
//! shortest cycles of every anomaly class (G0, G1c, G-single, G-nonadjacent, G2-item and their
//! `-process`/`-realtime` variants), adds the anomalies visible without a graph (G1a, G1b,
//! internal, future-read, duplicate-elements, incompatible-order, lost-update, garbage-read,
//! dirty-update), and says which consistency models the history violates.
//!
//! Entry points: [`check`] for a `History`, [`check_log`] for the compact [`TxnLog`] (what the
//! generator produces), [`generate`] for random histories with known answers.

mod cycles;
mod exact;
mod explain;
pub mod generate;
mod infer;
mod keyorder;
pub mod log;

pub use generate::{generate, inject, GenOptions, Injection};
pub use log::{read_log, LogBuilder, TxnLog, TxnStream};

use crate::error::HistoryError;
use crate::history::{History, Outcome};
use crate::value::Value;
use crate::Verdict;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Which kind of transactions the history holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// `["append", k, v]` and `["r", k, [..]]`: version orders come from the reads.
    ListAppend,
    /// `["w", k, v]` and `["r", k, v]`: version orders only as far as they can be inferred.
    RwRegister,
}

impl Workload {
    /// Guesses the workload from the micro-ops: any append means list-append, any write means
    /// rw-register; reads only are treated as list-append when some read returned a list.
    pub fn detect(h: &History) -> Option<Workload> {
        let mut saw_list_read = false;
        for e in &h.events {
            for m in e.value.as_list().unwrap_or(&[]) {
                match m.as_list() {
                    Some([f, _, v]) => match f.as_str() {
                        Some("append") => return Some(Workload::ListAppend),
                        Some("w") | Some("write") => return Some(Workload::RwRegister),
                        _ => saw_list_read |= matches!(v, Value::List(_)),
                    },
                    _ => continue,
                }
            }
        }
        saw_list_read.then_some(Workload::ListAppend)
    }

    /// `detect` for a compact history.
    pub fn detect_log(log: &TxnLog) -> Option<Workload> {
        let mut saw_list_read = false;
        for m in &log.mops {
            match m.kind {
                log::MopKind::Append => return Some(Workload::ListAppend),
                log::MopKind::Write => return Some(Workload::RwRegister),
                log::MopKind::Read => saw_list_read |= m.known && m.read_len != u32::MAX,
            }
        }
        saw_list_read.then_some(Workload::ListAppend)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Workload::ListAppend => "list-append",
            Workload::RwRegister => "rw-register",
        }
    }
}

impl std::str::FromStr for Workload {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "list-append" | "append" => Ok(Workload::ListAppend),
            "rw-register" | "wr" => Ok(Workload::RwRegister),
            other => Err(format!(
                "unknown workload {other:?} (expected list-append or rw-register)"
            )),
        }
    }
}

/// Consistency models, weakest first. `ReadCommitted < RepeatableRead < Serializable <
/// StrictSerializable` and `ReadCommitted < SnapshotIsolation < Serializable`; repeatable read
/// and snapshot isolation are incomparable (Adya's PL-2.99 forbids write skew, SI allows it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Consistency {
    ReadCommitted,
    RepeatableRead,
    SnapshotIsolation,
    Serializable,
    StrictSerializable,
}

impl Consistency {
    pub const ALL: [Consistency; 5] = [
        Consistency::ReadCommitted,
        Consistency::RepeatableRead,
        Consistency::SnapshotIsolation,
        Consistency::Serializable,
        Consistency::StrictSerializable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::ReadCommitted => "read-committed",
            Consistency::RepeatableRead => "repeatable-read",
            Consistency::SnapshotIsolation => "snapshot-isolation",
            Consistency::Serializable => "serializable",
            Consistency::StrictSerializable => "strict-serializable",
        }
    }

    /// Whether a history satisfying `self` necessarily satisfies `weaker`.
    pub fn implies(self, weaker: Consistency) -> bool {
        use Consistency::*;
        self == weaker
            || match self {
                StrictSerializable => true,
                Serializable => weaker != StrictSerializable,
                RepeatableRead | SnapshotIsolation => weaker == ReadCommitted,
                ReadCommitted => false,
            }
    }
}

impl std::str::FromStr for Consistency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Consistency::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .or(match s {
                "strong-serializable" => Some(Consistency::StrictSerializable),
                "si" => Some(Consistency::SnapshotIsolation),
                _ => None,
            })
            .ok_or_else(|| {
                format!(
                    "unknown consistency model {s:?} (expected read-committed, \
                     repeatable-read, snapshot-isolation, serializable or strict-serializable)"
                )
            })
    }
}

impl std::fmt::Display for Consistency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug)]
pub struct TxnOptions {
    pub workload: Workload,
    /// The model the verdict is about.
    pub consistency: Consistency,
    /// Cycle-search time per strongly connected component; past it, that component's search
    /// stops and (unless a violation is already proven) the verdict is unknown.
    pub time_budget: Duration,
    /// How many anomalies of each type the result lists in full (all are counted).
    pub max_anomalies_per_type: usize,
    /// rw-register: work (closure word operations and choice checks) the exact search over
    /// version orders inference leaves open may spend; past it the verdict is unknown.
    pub exact_budget_steps: u64,
    /// rw-register: assume every key is linearizable, so a write whose transaction completed
    /// before another's began precedes it (Elle's `linearizable-keys?`).
    pub linearizable_keys: bool,
    /// rw-register: assume every key is sequentially consistent, so a process's writes are in
    /// its order (Elle's `sequential-keys?`).
    pub sequential_keys: bool,
}

/// Default of `TxnOptions::exact_budget_steps`: about a second of search.
pub const DEFAULT_EXACT_BUDGET_STEPS: u64 = 2_000_000_000;

impl Default for TxnOptions {
    fn default() -> Self {
        TxnOptions {
            workload: Workload::ListAppend,
            consistency: Consistency::StrictSerializable,
            time_budget: Duration::from_secs(10),
            max_anomalies_per_type: 8,
            exact_budget_steps: DEFAULT_EXACT_BUDGET_STEPS,
            linearizable_keys: false,
            sequential_keys: false,
        }
    }
}

/// A transaction as shown in an anomaly.
#[derive(Clone, Debug, Serialize)]
pub struct TxnRef {
    /// `T1`, `T2`, ... within one anomaly.
    pub name: String,
    /// The history index of its completion (or invocation, if it never completed).
    pub index: u64,
    pub process: u64,
    #[serde(rename = "type")]
    pub outcome: Outcome,
    pub value: Value,
}

/// One edge of a cycle: why `from` must precede `to`.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub from: String,
    pub to: String,
    /// `ww`, `wr`, `rw`, `process` or `realtime`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<Value>,
    pub text: String,
    /// rw-register exact search only: why the edge holds: `known` (from the history),
    /// `derived` (from known edges), `supposed` (the order this cycle refutes), `case` (the
    /// order the enclosing case supposes), `forced` (an order the other order of which closes
    /// a cycle) or `guessed` (one order tried, no proof).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub basis: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Anomaly {
    /// Elle's name: `G0`, `G1c-process`, `G-single-item-realtime`, `G1a`, `lost-update`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The transactions involved; for a cycle, in cycle order; for a proof that no version
    /// order exists (rw-register), every transaction it names, in the order it names them.
    pub txns: Vec<TxnRef>,
    /// For a cycle: one step per edge, the last one closing the cycle.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<Value>,
    /// Elle-style text a person can follow.
    pub explanation: String,
    /// For a cycle: a small picture of it, as an inline SVG document.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub svg: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct TxnStats {
    pub txns: usize,
    pub ok: usize,
    pub info: usize,
    pub fail: usize,
    pub edges: usize,
    /// Strongly connected components with more than one node.
    pub cyclic_sccs: usize,
    pub largest_scc: usize,
    pub elapsed_ms: u64,
}

/// How the verdict was reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecidedBy {
    /// Inferred version orders and the cycles they give (list-append; or rw-register when
    /// inference alone proves the history invalid).
    Inference,
    /// rw-register: the exact search over the version orders inference left open found a
    /// witness order or proved that none exists.
    ExactSearch,
    /// rw-register: inference found nothing, and the exact search ran out of its budget (or
    /// cannot decide this model): the verdict is unknown.
    ExactSearchIncomplete,
}

impl DecidedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            DecidedBy::Inference => "inference",
            DecidedBy::ExactSearch => "exact search",
            DecidedBy::ExactSearchIncomplete => "valid by inference, exact search incomplete",
        }
    }
}

/// What the rw-register exact search did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ExactReport {
    /// `witness`, `no-order` or `incomplete`.
    pub outcome: String,
    /// Whether the first guess (the known graph's topological order) was already a witness.
    pub by_witness_order: bool,
    pub steps: u64,
    pub budget_steps: u64,
    /// Pairs of writes whose order neither inference nor propagation fixed.
    pub open_pairs: usize,
    /// Components decided by the search (a descent, then backtracking), and the largest one's
    /// size in nodes.
    pub components: usize,
    pub largest_component: usize,
    /// For a witness: the version order of each key with two or more committed writers (up to
    /// 32 keys, 64 values each) and a serial order of the committed transactions by history
    /// index (up to 256).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub witness_orders: Vec<WitnessOrder>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub witness_serial: Vec<u64>,
    /// For no order: the proof the anomaly's explanation shows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proof: Option<ProofReport>,
}

/// Why no version order exists, machine-readable: every cycle the explanation shows.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ProofReport {
    /// `complete` (every edge of every cycle is known from the history, derived from known
    /// edges, supposed by the cycle or its case, or forced by a lemma that is shown),
    /// `partial` (the explanation says what it leaves out) or `none` (past the proof's
    /// bounds: one cycle under a guessed order, which proves nothing).
    pub status: String,
    pub cycles: Vec<ProofCycleReport>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProofCycleReport {
    /// The order this cycle refutes, e.g. `key x: 1 precedes 2`.
    pub refutes: String,
    /// For a forced order's reason: the lemma's number, as forced steps cite it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lemma: Option<usize>,
    /// The orders the enclosing cases suppose, outermost first (a lemma's: the cases it holds
    /// in), so a reader (or a test) can check each cycle against the history under exactly
    /// these assumptions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cases: Vec<VersionOrder>,
    /// The order `refutes` names (None: a cycle of known edges, under the cases alone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supposes: Option<VersionOrder>,
    pub steps: Vec<Step>,
}

/// "Key `key`'s version `first` precedes version `second`".
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct VersionOrder {
    pub key: Value,
    pub first: Value,
    pub second: Value,
}

#[derive(Clone, Debug, Serialize)]
pub struct WitnessOrder {
    pub key: Value,
    pub versions: Vec<Value>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TxnResult {
    pub verdict: Verdict,
    pub workload: Workload,
    pub consistency: Consistency,
    /// Every anomaly type found, sorted.
    pub anomaly_types: Vec<String>,
    /// Up to `max_anomalies_per_type` of each type.
    pub anomalies: Vec<Anomaly>,
    /// How many of each type were found in all.
    pub anomaly_counts: BTreeMap<String, usize>,
    /// The weakest of the five models the history violates (Elle's `not`) ...
    pub not: Vec<Consistency>,
    /// ... and the stronger ones that follow (Elle's `also-not`).
    pub also_not: Vec<Consistency>,
    /// Why the verdict is unknown, or which searches ran out of time.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    pub stats: TxnStats,
    pub decided_by: DecidedBy,
    /// rw-register: the exact search, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact: Option<ExactReport>,
}

impl TxnResult {
    /// Every model the history violates.
    pub fn violated(&self) -> Vec<Consistency> {
        let mut v: Vec<Consistency> = self.not.iter().chain(&self.also_not).copied().collect();
        v.sort();
        v
    }

    pub fn has_anomaly(&self, kind: &str) -> bool {
        self.anomaly_types.iter().any(|t| t == kind)
    }
}

/// Checks a history of transactions.
pub fn check(history: &History, opts: &TxnOptions) -> Result<TxnResult, HistoryError> {
    let log = TxnLog::from_history(history)?;
    check_log(&log, opts)
}

/// Checks a compact history.
pub fn check_log(log: &TxnLog, opts: &TxnOptions) -> Result<TxnResult, HistoryError> {
    let start = Instant::now();
    let mut found = Found::new(opts.max_anomalies_per_type);
    let mut notes = Vec::new();
    let mut inferred = match opts.workload {
        Workload::ListAppend => infer::list_append(log, &mut found)?,
        Workload::RwRegister => infer::rw_register(log, &mut found)?,
    };
    // rw-register: the exact search needs the data edges the cycle search consumes.
    let mut data_edges = None;
    if opts.workload == Workload::RwRegister {
        notes.extend(keyorder::add_edges(
            log,
            opts.linearizable_keys,
            opts.sequential_keys,
            &mut inferred.edges,
        ));
        data_edges = Some(inferred.edges.clone());
    }
    let realtime = opts.consistency == Consistency::StrictSerializable;
    let mut stats = TxnStats {
        txns: log.txns.len(),
        ..TxnStats::default()
    };
    for t in &log.txns {
        match t.outcome {
            Outcome::Ok => stats.ok += 1,
            Outcome::Info => stats.info += 1,
            Outcome::Fail => stats.fail += 1,
        }
    }
    let mut proven: Vec<Consistency> = Vec::new();
    let mut uncertain: Vec<String> = Vec::new();
    cycles::search(
        log,
        &mut inferred,
        realtime,
        opts.time_budget,
        &mut found,
        &mut stats,
        &mut notes,
        &mut proven,
        &mut uncertain,
    );

    let mut decided_by = DecidedBy::Inference;
    let mut exact = None;
    let mut verdict = judge(&found, &proven, &uncertain, opts.consistency).0;
    if let (Some(data), Verdict::Valid) = (data_edges, verdict) {
        // Inference found nothing this model forbids; but it leaves version orders open.
        let settled = exact::settle(log, &inferred.index, &data, opts, &mut found, &mut notes);
        decided_by = settled.decided_by;
        exact = Some(settled.report);
        verdict = judge(&found, &proven, &uncertain, opts.consistency).0;
        if verdict == Verdict::Valid && decided_by == DecidedBy::ExactSearchIncomplete {
            verdict = Verdict::Unknown;
        }
    } else if opts.workload == Workload::RwRegister {
        notes.push(format!(
            "decided by inference alone: {}",
            if verdict == Verdict::Invalid {
                "the anomalies found need no version order beyond what reads reveal"
            } else {
                "a search ran out of time, so the exact search over version orders did not run"
            }
        ));
    }
    let violated = judge(&found, &proven, &uncertain, opts.consistency).1;
    let not: Vec<Consistency> = violated
        .iter()
        .copied()
        .filter(|m| !violated.iter().any(|w| w != m && m.implies(*w)))
        .collect();
    let also_not: Vec<Consistency> = violated
        .iter()
        .copied()
        .filter(|m| !not.contains(m))
        .collect();
    stats.elapsed_ms = start.elapsed().as_millis() as u64;
    Ok(TxnResult {
        verdict,
        workload: opts.workload,
        consistency: opts.consistency,
        anomaly_types: found.counts.keys().cloned().collect(),
        anomalies: found.list,
        anomaly_counts: found.counts,
        not,
        also_not,
        notes,
        stats,
        decided_by,
        exact,
    })
}

/// The verdict for `consistency` and every model violated, from the anomalies found, the
/// models proven violated and the anomaly classes a search left unsearched.
fn judge(
    found: &Found,
    proven: &[Consistency],
    uncertain: &[String],
    consistency: Consistency,
) -> (Verdict, Vec<Consistency>) {
    let mut violated: Vec<Consistency> = proven.to_vec();
    for kind in found.counts.keys() {
        violated.extend(violated_by(kind));
    }
    violated.sort();
    violated.dedup();
    let verdict = if violated.contains(&consistency) {
        Verdict::Invalid
    } else if uncertain
        .iter()
        .any(|kind| violated_by(kind).contains(&consistency))
    {
        // A search that ran out of time left an anomaly class unsearched that this model
        // forbids.
        Verdict::Unknown
    } else {
        Verdict::Valid
    };
    (verdict, violated)
}

/// Which of the five models an anomaly type rules out, following Elle's consistency-model
/// tables: process and real-time variants only break strict serializability; internal
/// inconsistency breaks SI and serializability but not Adya's read committed or repeatable read;
/// G2-item is allowed by snapshot isolation; lost update is forbidden by cursor stability and so
/// by both repeatable read and SI.
pub fn violated_by(kind: &str) -> Vec<Consistency> {
    use Consistency::*;
    if kind.ends_with("-process") || kind.ends_with("-realtime") {
        return vec![StrictSerializable];
    }
    match kind {
        "G0" | "G1a" | "G1b" | "G1c" | "duplicate-elements" | "incompatible-order"
        | "future-read" | "dirty-update" | "garbage-read" => Consistency::ALL.to_vec(),
        // rw-register, exact search: under every version order a ww/wr cycle (G0 or G1c) ...
        "G1c-unavoidable" => Consistency::ALL.to_vec(),
        // ... or some ww/wr/rw cycle (of a class that may depend on the order).
        "cycle-unavoidable" => vec![RepeatableRead, Serializable, StrictSerializable],
        "G-single-item" | "G-nonadjacent-item" | "lost-update" => {
            vec![
                RepeatableRead,
                SnapshotIsolation,
                Serializable,
                StrictSerializable,
            ]
        }
        "G2-item" | "cycle-exists" => vec![RepeatableRead, Serializable, StrictSerializable],
        "internal" => vec![SnapshotIsolation, Serializable, StrictSerializable],
        "realtime-cycle-exists" => vec![StrictSerializable],
        _ => vec![],
    }
}

/// Collects anomalies: keeps the first few of each type in full, counts all.
pub(crate) struct Found {
    pub list: Vec<Anomaly>,
    pub counts: BTreeMap<String, usize>,
    max_per_type: usize,
}

impl Found {
    fn new(max_per_type: usize) -> Found {
        Found {
            list: Vec::new(),
            counts: BTreeMap::new(),
            max_per_type,
        }
    }

    /// Whether another anomaly of this type would be kept in full (so it is worth rendering).
    pub fn wants(&self, kind: &str) -> bool {
        self.counts.get(kind).copied().unwrap_or(0) < self.max_per_type
    }

    /// Counts one anomaly of `kind`, rendering it only if it will be kept.
    pub fn add(&mut self, kind: &str, render: impl FnOnce() -> Anomaly) {
        if self.wants(kind) {
            self.list.push(render());
        }
        *self.counts.entry(kind.to_string()).or_insert(0) += 1;
    }
}

/// Whether finding anomaly `found` also shows anomaly class `expected`, following Elle's
/// implied-anomalies graph: G0 is a G1c cycle; G-single-item is G-single and G-nonadjacent-item;
/// those are G2-item and G2; lost update is G2-item; and a plain anomaly implies its `-process`
/// variant, which implies its `-realtime` one.
pub fn anomaly_implies(found: &str, expected: &str) -> bool {
    fn split(s: &str) -> (&str, u8) {
        if let Some(b) = s.strip_suffix("-realtime") {
            (b, 2)
        } else if let Some(b) = s.strip_suffix("-process") {
            (b, 1)
        } else {
            (s, 0)
        }
    }
    fn implied(base: &str) -> &'static [&'static str] {
        match base {
            "G0" => &["G0", "G1c", "G1"],
            "G1a" => &["G1a", "G1"],
            "G1b" => &["G1b", "G1"],
            "G1c" => &["G1c", "G1"],
            "G-single-item" => &[
                "G-single-item",
                "G-single",
                "G-nonadjacent-item",
                "G-nonadjacent",
                "G2-item",
                "G2",
            ],
            "G-nonadjacent-item" => &["G-nonadjacent-item", "G-nonadjacent", "G2-item", "G2"],
            "G2-item" => &["G2-item", "G2"],
            "lost-update" => &["lost-update", "G2-item", "G2"],
            "incompatible-order" | "dirty-update" => &["G1a", "G1"],
            "future-read" => &["future-read", "G1c", "G1"],
            _ => &[],
        }
    }
    if found == expected {
        return true;
    }
    let ((fb, fl), (eb, el)) = (split(found), split(expected));
    fl <= el && (fb == eb || implied(fb).contains(&eb))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_lattice() {
        use Consistency::*;
        assert!(StrictSerializable.implies(SnapshotIsolation));
        assert!(Serializable.implies(RepeatableRead));
        assert!(!SnapshotIsolation.implies(RepeatableRead));
        assert!(!Serializable.implies(StrictSerializable));
        assert!(RepeatableRead.implies(ReadCommitted));
    }

    #[test]
    fn write_skew_is_allowed_by_si_only() {
        let v = violated_by("G2-item");
        assert!(!v.contains(&Consistency::SnapshotIsolation));
        assert!(v.contains(&Consistency::RepeatableRead));
        assert_eq!(
            violated_by("G-single-item-realtime"),
            vec![Consistency::StrictSerializable]
        );
    }
}
