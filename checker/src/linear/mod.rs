//! Linearizability checking.
//!
//! `check(model, history, options)` splits the history into partitions by the model's key
//! (linearizability is compositional: a history is linearizable iff each object's is), checks
//! the partitions in parallel with a Wing-Gong-Lowe search (see `search`), and reports a verdict
//! with a counterexample for the first failing partition: the longest linearizable prefixes and
//! the operation that cannot be placed after them, as text and as an HTML timeline.
//!
//! Outcomes follow Jepsen and Knossos: an `info` operation may take effect at any point after
//! its invocation, or never (an invocation with no completion is the same); a `fail` did not
//! take effect and is dropped (a model may keep it as an observation, see
//! `Register::failed_cas_observed`).

pub mod brute;
pub mod generate;
pub mod kv;
pub mod model;
pub mod multi_register;
pub mod register;
mod report;
pub mod search;
pub mod set;
pub mod stream;

pub use kv::{Kv, KvUnpartitioned};
pub use model::{Interner, Model, Prepared};
pub use multi_register::MultiRegister;
pub use register::Register;
pub use report::{timeline_html, CxOp, CxPrefix, CxStep};
pub use set::Set;
pub use stream::check_path;

use crate::error::HistoryError;
use crate::history::{History, Operation, Outcome};
use crate::value::Value;
use crate::Verdict;
use rayon::prelude::*;
use search::{Budget, GaveUp, SearchOutcome};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Limits and knobs of one check.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Wall-clock budget for the whole check; `None` for no limit.
    pub timeout: Option<Duration>,
    /// Bytes the memos of all partitions may take together before the verdict is `unknown`.
    pub memo_limit_bytes: usize,
    /// How many longest prefixes (with different stuck operations) to report.
    pub max_prefixes: usize,
    /// `check_path`: bytes of encoded operations held in memory before they go to a
    /// temporary file.
    pub stream_buffer_bytes: usize,
    /// `check_path`: operations loaded (and checked in parallel) at once; a partition larger
    /// than this is still loaded whole.
    pub stream_batch_ops: usize,
    /// `check_path`: where the temporary file goes (unlinked at once); `None` for the
    /// system's temporary directory.
    pub spill_dir: Option<std::path::PathBuf>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            timeout: Some(Duration::from_secs(60)),
            memo_limit_bytes: 1 << 30,
            max_prefixes: 3,
            stream_buffer_bytes: 64 << 20,
            stream_batch_ops: 1 << 18,
            spill_dir: None,
        }
    }
}

/// The models `ordeal check --model` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    Register,
    CasRegister,
    Kv,
    KvUnpartitioned,
    Set,
    /// Knossos's `multi-register`: txns of reads and writes over several registers.
    MultiRegister,
}

impl ModelKind {
    pub const ALL: [ModelKind; 6] = [
        ModelKind::Register,
        ModelKind::CasRegister,
        ModelKind::Kv,
        ModelKind::KvUnpartitioned,
        ModelKind::Set,
        ModelKind::MultiRegister,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Register => "register",
            ModelKind::CasRegister => "cas-register",
            ModelKind::Kv => "kv",
            ModelKind::KvUnpartitioned => "kv-unpartitioned",
            ModelKind::Set => "set",
            ModelKind::MultiRegister => "multi-register",
        }
    }
}

impl std::str::FromStr for ModelKind {
    type Err = String;
    fn from_str(s: &str) -> Result<ModelKind, String> {
        ModelKind::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = ModelKind::ALL.iter().map(|m| m.as_str()).collect();
                format!("unknown model '{s}' (expected {})", names.join(", "))
            })
    }
}

/// Model options that are not the model's name.
#[derive(Clone, Copy, Debug, Default)]
pub struct ModelOptions {
    /// `--failed-cas observed`: a failed cas says the register differed from the expected value.
    pub failed_cas_observed: bool,
}

/// Checks `history` against a model named at run time.
pub fn check_kind(
    kind: ModelKind,
    model_options: ModelOptions,
    history: &History,
    options: &CheckOptions,
) -> Result<LinearReport, HistoryError> {
    match kind {
        ModelKind::Register => check(&Register::plain(), history, options),
        ModelKind::CasRegister => check(
            &Register::cas(model_options.failed_cas_observed),
            history,
            options,
        ),
        ModelKind::Kv => check(&Kv::default(), history, options),
        ModelKind::KvUnpartitioned => check(&KvUnpartitioned::default(), history, options),
        ModelKind::Set => check(&Set, history, options),
        // Registers start nil; `check` with `MultiRegister::new(initial)` gives them values.
        ModelKind::MultiRegister => check(&MultiRegister::default(), history, options),
    }
}

/// `check_kind` for a history file, streaming it (see `stream`): the entry point for files.
pub fn check_kind_path(
    kind: ModelKind,
    model_options: ModelOptions,
    path: &std::path::Path,
    format: crate::read::Format,
    options: &CheckOptions,
) -> Result<LinearReport, HistoryError> {
    match kind {
        ModelKind::Register => check_path(&Register::plain(), path, format, options),
        ModelKind::CasRegister => check_path(
            &Register::cas(model_options.failed_cas_observed),
            path,
            format,
            options,
        ),
        ModelKind::Kv => check_path(&Kv::default(), path, format, options),
        ModelKind::KvUnpartitioned => {
            check_path(&KvUnpartitioned::default(), path, format, options)
        }
        ModelKind::Set => check_path(&Set, path, format, options),
        ModelKind::MultiRegister => check_path(&MultiRegister::default(), path, format, options),
    }
}

/// The result of a linearizability check, serialisable into results.json.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinearReport {
    pub model: String,
    pub verdict: Verdict,
    /// One line a person reads first.
    pub summary: String,
    /// Client operations in the history.
    pub operations: usize,
    /// Of which unknown (`info` or never completed).
    pub indeterminate: usize,
    /// Of which failed (dropped unless the model keeps them).
    pub failed: usize,
    /// Unknown operations dropped up front because "never happened" is always allowed for them.
    pub pruned: usize,
    pub partitions: PartitionCounts,
    /// Why the verdict is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown_reason: Option<String>,
    /// Keys of partitions left unknown (at most 20 listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unknown_partitions: Vec<String>,
    /// Keys of partitions proven not linearizable (at most 20 listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub invalid_partitions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counterexample: Option<Counterexample>,
    pub stats: Stats,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionCounts {
    pub total: usize,
    pub valid: usize,
    pub invalid: usize,
    pub unknown: usize,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Candidate steps tried by the searches.
    pub steps: u64,
    pub backtracks: u64,
    pub memo_entries: u64,
    pub memo_bytes: u64,
    /// For an unknown verdict: the longest linearizable prefix found in an undecided
    /// partition (operations placed at once), and that partition's size.
    #[serde(default)]
    pub longest_prefix: u64,
    #[serde(default)]
    pub undecided_ops: u64,
    /// Wall-clock time of the check (not deterministic; everything else is, given no budget
    /// ran out).
    pub elapsed_ms: u64,
}

/// Why one partition is not linearizable: its operations, and the longest linearizable
/// prefixes, each followed by an operation that cannot be placed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Counterexample {
    /// The partition's key (`null` for an unpartitioned model or keyless operations).
    pub key: Value,
    pub model: String,
    /// Every operation of the partition, in invocation order.
    pub ops: Vec<CxOp>,
    /// Longest linearizable prefixes (all of the same length), each with its stuck operation.
    pub prefixes: Vec<CxPrefix>,
}

/// Checks a history against a model.
pub fn check<M: Model>(
    model: &M,
    history: &History,
    options: &CheckOptions,
) -> Result<LinearReport, HistoryError> {
    let ops = history.operations()?;
    check_operations(model, history, &ops, options)
}

struct PartitionResult {
    key: Option<Value>,
    outcome: SearchOutcome,
    stats: search::SearchStats,
    /// Operations the search considered (after dropping and pruning).
    ops: usize,
    pruned: usize,
    counterexample: Option<Counterexample>,
}

/// Checks operations already paired from `history` (used for line numbers in errors and
/// counterexamples).
pub fn check_operations<M: Model>(
    model: &M,
    history: &History,
    ops: &[Operation],
    options: &CheckOptions,
) -> Result<LinearReport, HistoryError> {
    let start = Instant::now();
    let budget = Budget::new(options.timeout.map(|t| start + t), options.memo_limit_bytes);

    // Partition by key, in order of first appearance.
    let mut index: HashMap<Option<Value>, usize> = HashMap::new();
    let mut groups: Vec<(Option<Value>, Vec<usize>)> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        if op.outcome == Outcome::Fail && !model.keep_failed(op) {
            continue;
        }
        let key = model.partition_key(op);
        let g = match index.get(&key) {
            Some(&g) => g,
            None => {
                index.insert(key.clone(), groups.len());
                groups.push((key, Vec::new()));
                groups.len() - 1
            }
        };
        groups[g].1.push(i);
    }

    let line_of = |pos: usize| history.line_of(pos);
    let results: Vec<Result<PartitionResult, HistoryError>> = groups
        .into_par_iter()
        .map(|(key, members)| {
            check_partition(model, &line_of, ops, key, &members, &budget, options)
        })
        .collect();

    let mut parts = Vec::with_capacity(results.len());
    for r in results {
        parts.push(r?);
    }
    let totals = OpTotals::of(ops);
    Ok(build_report(model, parts, totals, start, options))
}

/// How many client operations a history has, of which unknown and failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct OpTotals {
    pub operations: usize,
    pub indeterminate: usize,
    pub failed: usize,
}

impl OpTotals {
    fn of(ops: &[Operation]) -> OpTotals {
        let mut t = OpTotals::default();
        for op in ops {
            t.count(op.outcome);
        }
        t
    }

    pub(crate) fn count(&mut self, outcome: Outcome) {
        self.operations += 1;
        match outcome {
            Outcome::Info => self.indeterminate += 1,
            Outcome::Fail => self.failed += 1,
            Outcome::Ok => {}
        }
    }
}

/// The report from every partition's result, in partition order (the first invalid
/// partition's counterexample is the one shown).
fn build_report<M: Model>(
    model: &M,
    mut parts: Vec<PartitionResult>,
    totals: OpTotals,
    start: Instant,
    options: &CheckOptions,
) -> LinearReport {
    let mut counts = PartitionCounts {
        total: parts.len(),
        ..Default::default()
    };
    let mut stats = Stats::default();
    let mut verdict = Verdict::Valid;
    let mut unknown_partitions = Vec::new();
    let mut invalid_partitions = Vec::new();
    let mut gave_up = None;
    let mut counterexample = None;
    let mut pruned = 0;
    for p in &mut parts {
        stats.steps += p.stats.steps;
        stats.backtracks += p.stats.backtracks;
        stats.memo_entries += p.stats.memo_entries;
        stats.memo_bytes += p.stats.memo_bytes;
        pruned += p.pruned;
        let key_name = || {
            p.key
                .as_ref()
                .map_or("(no key)".to_string(), |k| k.to_edn())
        };
        match &p.outcome {
            SearchOutcome::Valid => counts.valid += 1,
            SearchOutcome::Invalid(_) => {
                counts.invalid += 1;
                verdict = Verdict::Invalid;
                if invalid_partitions.len() < 20 {
                    invalid_partitions.push(key_name());
                }
                if counterexample.is_none() {
                    counterexample = p.counterexample.take();
                }
            }
            SearchOutcome::Unknown(why) => {
                if stats.undecided_ops == 0 {
                    stats.longest_prefix = p.stats.max_depth;
                    stats.undecided_ops = p.ops as u64;
                }
                counts.unknown += 1;
                verdict = verdict.worst(Verdict::Unknown);
                gave_up = gave_up.or(Some(*why));
                if unknown_partitions.len() < 20 {
                    unknown_partitions.push(key_name());
                }
            }
        }
    }
    stats.elapsed_ms = start.elapsed().as_millis() as u64;

    let OpTotals {
        operations,
        indeterminate,
        failed,
    } = totals;
    let unknown_reason = gave_up.map(|why| {
        let what = match why {
            GaveUp::Time => format!(
                "time budget of {} ran out",
                options
                    .timeout
                    .map_or("?".into(), |t| format!("{:.1}s", t.as_secs_f64()))
            ),
            GaveUp::Memory => format!(
                "memory budget of {} MiB for the search memo ran out",
                options.memo_limit_bytes >> 20
            ),
        };
        format!(
            "{what}; {} of {} partitions proven linearizable, {} not, {} undecided (in the \
             first undecided one, a linearizable prefix of {} of its {} operations was found)",
            counts.valid,
            counts.total,
            counts.invalid,
            counts.unknown,
            stats.longest_prefix,
            stats.undecided_ops
        )
    });
    let summary = match verdict {
        Verdict::Valid if operations == 0 => "empty history: valid".to_string(),
        Verdict::Valid => format!(
            "valid: linearizable ({} operations, {} partition{})",
            operations,
            counts.total,
            if counts.total == 1 { "" } else { "s" }
        ),
        Verdict::Invalid => format!(
            "invalid: not linearizable ({} of {} partitions fail{})",
            counts.invalid,
            counts.total,
            counterexample
                .as_ref()
                .map(|c: &Counterexample| if c.key.is_null() {
                    String::new()
                } else {
                    format!("; first: key {}", c.key.to_edn())
                })
                .unwrap_or_default()
        ),
        Verdict::Unknown => format!("unknown: {}", unknown_reason.clone().unwrap_or_default()),
    };
    LinearReport {
        model: model.name().to_string(),
        verdict,
        summary,
        operations,
        indeterminate,
        failed,
        pruned,
        partitions: counts,
        unknown_reason,
        unknown_partitions,
        invalid_partitions,
        counterexample,
        stats,
    }
}

/// Checks one partition: `members` index `ops` in invocation order; `line_of` gives the
/// source line of an event position, for errors and the counterexample.
fn check_partition<M: Model>(
    model: &M,
    line_of: &dyn Fn(usize) -> Option<usize>,
    ops: &[Operation],
    key: Option<Value>,
    members: &[usize],
    budget: &Budget,
    options: &CheckOptions,
) -> Result<PartitionResult, HistoryError> {
    let mut ctx = M::Ctx::default();
    let mut prepared: Vec<Prepared<M>> = Vec::with_capacity(members.len());
    for &i in members {
        let op = &ops[i];
        match model.prepare(op, &mut ctx) {
            Err(message) => {
                return Err(HistoryError::Invalid {
                    line: line_of(op.invoke_pos),
                    index: op.invoke_pos,
                    message: format!("{} {}: {message}", op.f, op.input.to_edn()),
                })
            }
            Ok(None) => {}
            Ok(Some((input, output))) => {
                // A definite op needs a completion to bound it; anything else is optional.
                let output = output.filter(|_| op.complete_pos.is_some());
                prepared.push(Prepared {
                    ret: if output.is_some() {
                        op.complete_pos
                    } else {
                        None
                    },
                    input,
                    output,
                    op: i,
                    call: op.invoke_pos,
                });
            }
        }
    }
    model.finish(&mut ctx, &prepared);
    let mut prune = model.prunable(&ctx, &prepared);
    prune.resize(prepared.len(), false);
    for (p, o) in prune.iter_mut().zip(&prepared) {
        *p &= o.optional();
    }
    let pruned = prune.iter().filter(|&&p| p).count();
    let (outcome, stats) = search::search(
        model,
        &ctx,
        &prepared,
        &prune,
        budget,
        options.max_prefixes.max(1),
    );
    let counterexample = match &outcome {
        SearchOutcome::Invalid(stuck) => Some(report::build_counterexample(
            model, &ctx, line_of, ops, &key, &prepared, &prune, stuck,
        )),
        _ => None,
    };
    Ok(PartitionResult {
        ops: prepared.len() - pruned,
        key,
        outcome,
        stats,
        pruned,
        counterexample,
    })
}

impl LinearReport {
    /// The report as text a person can follow: the verdict, and for an invalid history the
    /// counterexample.
    pub fn to_text(&self) -> String {
        report::text(self)
    }

    /// A self-contained HTML page with the verdict and, if invalid, the timeline of the first
    /// failing partition.
    pub fn to_html(&self, title: &str) -> String {
        report::html_page(self, title)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Event, EventType, Process};

    fn ev(p: u64, kind: EventType, f: &str, v: Value) -> Event {
        Event::new(Process::Client(p), kind, f, v)
    }

    fn cas(a: i64, b: i64) -> Value {
        Value::List(vec![Value::Int(a), Value::Int(b)])
    }

    fn run(model: &impl Model, events: Vec<Event>) -> LinearReport {
        check(model, &History::new(events), &CheckOptions::default()).unwrap()
    }

    #[test]
    fn empty_history_is_valid() {
        let r = run(&Register::cas(false), vec![]);
        assert_eq!(r.verdict, Verdict::Valid);
        assert_eq!(r.summary, "empty history: valid");
    }

    #[test]
    fn stale_read_is_invalid_with_a_counterexample() {
        use EventType::*;
        let r = run(
            &Register::plain(),
            vec![
                ev(0, Invoke, "write", 1.into()),
                ev(0, Ok, "write", 1.into()),
                ev(1, Invoke, "write", 2.into()),
                ev(1, Ok, "write", 2.into()),
                ev(0, Invoke, "read", Value::Null),
                ev(0, Ok, "read", 1.into()),
            ],
        );
        assert_eq!(r.verdict, Verdict::Invalid);
        let cx = r.counterexample.as_ref().unwrap();
        let first = &cx.prefixes[0];
        assert_eq!(first.steps.len(), 2);
        assert_eq!(first.state, "2");
        assert_eq!(cx.ops[first.stuck].description, "p0 read -> 1");
        let text = r.to_text();
        assert!(text.contains("cannot take effect"), "{text}");
        let html = r.to_html("t");
        assert!(html.contains("class=\"op stuck\""), "{html}");
        let json = serde_json::to_string(&r).unwrap();
        let back: LinearReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn unset_register_reads_nil_and_info_may_happen_late_or_never() {
        use EventType::*;
        // An info write invoked first may take effect after a later read of nil...
        let r = run(
            &Register::plain(),
            vec![
                ev(0, Invoke, "write", 1.into()),
                ev(0, Info, "write", Value::Null),
                ev(1, Invoke, "read", Value::Null),
                ev(1, Ok, "read", Value::Null),
                ev(1, Invoke, "read", Value::Null),
                ev(1, Ok, "read", 1.into()),
            ],
        );
        assert_eq!(r.verdict, Verdict::Valid, "{}", r.to_text());
        // ... but a failed write never happened.
        let r = run(
            &Register::plain(),
            vec![
                ev(0, Invoke, "write", 1.into()),
                ev(0, Fail, "write", 1.into()),
                ev(1, Invoke, "read", Value::Null),
                ev(1, Ok, "read", 1.into()),
            ],
        );
        assert_eq!(r.verdict, Verdict::Invalid);
    }

    #[test]
    fn failed_cas_is_an_observation_only_when_asked() {
        use EventType::*;
        // The register is 1 when the cas [1 2] fails: impossible if a failed cas says "not 1".
        let events = vec![
            ev(0, Invoke, "write", 1.into()),
            ev(0, Ok, "write", 1.into()),
            ev(1, Invoke, "cas", cas(1, 2)),
            ev(1, Fail, "cas", cas(1, 2)),
            ev(0, Invoke, "read", Value::Null),
            ev(0, Ok, "read", 1.into()),
        ];
        assert_eq!(
            run(&Register::cas(false), events.clone()).verdict,
            Verdict::Valid
        );
        assert_eq!(run(&Register::cas(true), events).verdict, Verdict::Invalid);
    }

    #[test]
    fn bad_operations_name_their_line() {
        use EventType::*;
        let mut h = History::new(vec![
            ev(0, Invoke, "write", 1.into()),
            ev(0, Ok, "write", 1.into()),
            ev(0, Invoke, "cas", 3.into()),
            ev(0, Ok, "cas", 3.into()),
        ]);
        h.source_lines = vec![10, 11, 12, 13];
        let err = check(&Register::cas(false), &h, &CheckOptions::default()).unwrap_err();
        let msg = err.in_file(std::path::Path::new("h.jsonl")).to_string();
        assert!(msg.starts_with("h.jsonl:12:"), "{msg}");
        let err = check(&Register::plain(), &h, &CheckOptions::default()).unwrap_err();
        assert!(err.to_string().contains("cas-register"), "{err}");
        let err = check(&Set, &h, &CheckOptions::default()).unwrap_err();
        assert!(err.to_string().contains("no operation 'write'"), "{err}");
    }

    #[test]
    fn budgets_give_unknown_with_what_was_established() {
        let h = generate::generate(&generate::GenOptions {
            ops: 20_000,
            keys: 1,
            clients: 4,
            ..Default::default()
        });
        let opts = CheckOptions {
            timeout: Some(Duration::ZERO),
            ..CheckOptions::default()
        };
        let r = check(&Register::cas(false), &h, &opts).unwrap();
        assert_eq!(r.verdict, Verdict::Unknown);
        assert!(r.summary.contains("time budget"), "{}", r.summary);
        // A memo budget of nothing: the first dead end already exceeds it.
        let mut h = h;
        generate::corrupt_read(&mut h, 5);
        let opts = CheckOptions {
            memo_limit_bytes: 0,
            ..CheckOptions::default()
        };
        let r = check(&Register::cas(false), &h, &opts).unwrap();
        assert_eq!(r.verdict, Verdict::Unknown, "{}", r.summary);
        assert!(r.summary.contains("memory budget"), "{}", r.summary);
    }

    /// As in Knossos: a keyword is not the string of its name, a float not the integer of its
    /// value, for every model that compares values.
    #[test]
    fn keywords_strings_floats_and_integers_are_different_values() {
        let verdict = |model: ModelKind, text: &str| {
            let h =
                crate::read::read_str(text, crate::read::Format::Edn, "t.edn".as_ref()).unwrap();
            check_kind(model, ModelOptions::default(), &h, &CheckOptions::default())
                .unwrap()
                .verdict
        };
        let write_read = |written: &str, read: &str| {
            format!(
                "{{:process 0 :type :invoke :f :write :value {written}}}\n\
                 {{:process 0 :type :ok :f :write :value {written}}}\n\
                 {{:process 0 :type :invoke :f :read :value nil}}\n\
                 {{:process 0 :type :ok :f :read :value {read}}}\n"
            )
        };
        for (written, read, want) in [
            (":a", ":a", Verdict::Valid),
            ("\"a\"", "\"a\"", Verdict::Valid),
            (":a", "\"a\"", Verdict::Invalid),
            ("\"a\"", ":a", Verdict::Invalid),
            ("1", "1", Verdict::Valid),
            ("1.0", "1.0", Verdict::Valid),
            ("1", "1.0", Verdict::Invalid),
            ("1.0", "1", Verdict::Invalid),
        ] {
            for model in [ModelKind::Register, ModelKind::CasRegister] {
                assert_eq!(
                    verdict(model, &write_read(written, read)),
                    want,
                    "{} {written} then read {read}",
                    model.as_str()
                );
            }
        }
        // A cas compares too: [1.0 2] does not match a register holding 1.
        let cas = "{:process 0 :type :invoke :f :write :value 1}\n\
                   {:process 0 :type :ok :f :write :value 1}\n\
                   {:process 0 :type :invoke :f :cas :value [1.0 2]}\n\
                   {:process 0 :type :ok :f :cas :value [1.0 2]}\n";
        assert_eq!(verdict(ModelKind::CasRegister, cas), Verdict::Invalid);
        assert_eq!(
            verdict(ModelKind::CasRegister, &cas.replace("1.0", "1")),
            Verdict::Valid
        );
        // Sets: an added keyword is not read back as a string.
        let set = |added: &str, read: &str| {
            format!(
                "{{:process 0 :type :invoke :f :add :value {added}}}\n\
                 {{:process 0 :type :ok :f :add :value {added}}}\n\
                 {{:process 0 :type :invoke :f :read :value nil}}\n\
                 {{:process 0 :type :ok :f :read :value #{{{read}}}}}\n"
            )
        };
        assert_eq!(verdict(ModelKind::Set, &set(":a", ":a")), Verdict::Valid);
        assert_eq!(
            verdict(ModelKind::Set, &set(":a", "\"a\"")),
            Verdict::Invalid
        );
        assert_eq!(verdict(ModelKind::Set, &set("2", "2.0")), Verdict::Invalid);
        // Keys: :x and "x" are two objects, each checked on its own.
        let keys = "{:process 0 :type :invoke :f :write :key :x :value 1}\n\
                    {:process 0 :type :ok :f :write :key :x :value 1}\n\
                    {:process 0 :type :invoke :f :read :key \"x\" :value nil}\n\
                    {:process 0 :type :ok :f :read :key \"x\" :value nil}\n";
        assert_eq!(verdict(ModelKind::CasRegister, keys), Verdict::Valid);
        assert_eq!(
            verdict(ModelKind::CasRegister, &keys.replace("\"x\"", ":x")),
            Verdict::Invalid
        );
    }

    #[test]
    fn kv_and_set_semantics() {
        use EventType::*;
        let kv = |events: Vec<Event>| run(&Kv::default(), events).verdict;
        let s = |x: &str| Value::Str(x.into());
        assert_eq!(
            kv(vec![
                ev(0, Invoke, "get", Value::Null).with_key("k"),
                ev(0, Ok, "get", Value::Null).with_key("k"),
                ev(0, Invoke, "append", s("a")).with_key("k"),
                ev(0, Ok, "append", s("a")).with_key("k"),
                ev(1, Invoke, "append", s("b")).with_key("k"),
                ev(1, Ok, "append", s("b")).with_key("k"),
                ev(0, Invoke, "get", Value::Null).with_key("k"),
                ev(0, Ok, "get", s("ab")).with_key("k"),
            ]),
            Verdict::Valid
        );
        assert_eq!(
            kv(vec![
                ev(0, Invoke, "append", s("a")).with_key("k"),
                ev(0, Ok, "append", s("a")).with_key("k"),
                ev(1, Invoke, "append", s("b")).with_key("k"),
                ev(1, Ok, "append", s("b")).with_key("k"),
                ev(0, Invoke, "get", Value::Null).with_key("k"),
                ev(0, Ok, "get", s("ba")).with_key("k"),
            ]),
            Verdict::Invalid
        );
        let set = |events: Vec<Event>| run(&Set, events).verdict;
        let list = |v: &[i64]| Value::List(v.iter().map(|&i| Value::Int(i)).collect());
        assert_eq!(
            set(vec![
                ev(0, Invoke, "add", 1.into()),
                ev(1, Invoke, "read", Value::Null),
                ev(1, Ok, "read", list(&[])),
                ev(0, Info, "add", Value::Null),
                ev(1, Invoke, "read", Value::Null),
                ev(1, Ok, "read", list(&[1])),
            ]),
            Verdict::Valid
        );
        assert_eq!(
            set(vec![
                ev(0, Invoke, "add", 1.into()),
                ev(0, Ok, "add", 1.into()),
                ev(1, Invoke, "read", Value::Null),
                ev(1, Ok, "read", list(&[])),
            ]),
            Verdict::Invalid
        );
    }
}
