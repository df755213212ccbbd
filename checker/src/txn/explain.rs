//! Explanations a person can follow: why each edge of a cycle holds, in Elle's style of text,
//! and a small SVG picture of the cycle.

use super::exact::{ChosenEdge, Proof, ProofCycle, ProofEdge, ProofNode, Versions};
use super::infer::{Index, PROCESS, REALTIME, RW, WR, WW};
use super::log::{Elem, MopKind, TxnLog, NIL, NO_POS};
use super::{ProofCycleReport, ProofReport, Step, TxnRef, VersionOrder};
use crate::value::Value;

pub(crate) fn txn_ref(log: &TxnLog, t: usize, name: &str) -> TxnRef {
    let tx = &log.txns[t];
    TxnRef {
        name: name.to_string(),
        index: tx.index,
        process: tx.process,
        outcome: tx.outcome,
        value: log.txn_value(t),
    }
}

pub(crate) fn show_value(log: &TxnLog, e: Elem) -> String {
    log.decode(e).to_edn()
}

/// A list as EDN, eliding the middle of long ones.
pub(crate) fn show_list(log: &TxnLog, elems: &[Elem]) -> String {
    let show = |es: &[Elem]| -> Vec<String> { es.iter().map(|&e| show_value(log, e)).collect() };
    if elems.len() <= 12 {
        format!("[{}]", show(elems).join(" "))
    } else {
        format!(
            "[{} ... {}] ({} elements)",
            show(&elems[..4]).join(" "),
            show(&elems[elems.len() - 4..]).join(" "),
            elems.len()
        )
    }
}

pub(crate) fn kind_name(kind: u8) -> &'static str {
    match kind {
        WW => "ww",
        WR => "wr",
        RW => "rw",
        PROCESS => "process",
        _ => "realtime",
    }
}

/// Why `a` precedes `b` by an edge of `kind`: the text (with `an`/`bn` as their names) and key.
pub(crate) fn explain_edge(
    log: &TxnLog,
    index: &Index,
    a: usize,
    b: usize,
    kind: u8,
    an: &str,
    bn: &str,
) -> (String, Option<Value>) {
    let ta = &log.txns[a];
    let because = |s: String, k: Option<Value>| (format!("{an} < {bn}, because {s}"), k);
    match kind {
        PROCESS => because(
            format!(
                "process {} completed {an} (index {}) before it invoked {bn}",
                ta.process, ta.index
            ),
            None,
        ),
        REALTIME => because(
            format!(
                "{an} completed (index {}) before {bn} was invoked (real-time order)",
                ta.index
            ),
            None,
        ),
        _ => match index {
            Index::List { order, writes } => list_edge(log, order, writes, a, b, kind, an, bn)
                .map_or_else(
                    || because(format!("of a {} dependency", kind_name(kind)), None),
                    |(s, k)| because(s, Some(k)),
                ),
            Index::Register { writes } => register_edge(log, writes, a, b, kind, an, bn)
                .map_or_else(
                    || because(format!("of a {} dependency", kind_name(kind)), None),
                    |(s, k)| because(s, Some(k)),
                ),
        },
    }
}

type Writes = rustc_hash::FxHashMap<(u32, Elem), super::infer::WInfo>;

#[allow(clippy::too_many_arguments)]
fn list_edge(
    log: &TxnLog,
    order: &[Vec<Elem>],
    writes: &Writes,
    a: usize,
    b: usize,
    kind: u8,
    an: &str,
    bn: &str,
) -> Option<(String, Value)> {
    let before_of = |k: u32, v: Elem| -> usize {
        let p = writes[&(k, v)].pos;
        if p == NO_POS {
            order[k as usize].len()
        } else {
            p as usize
        }
    };
    let read_of = |m: &super::log::Mop| -> &[Elem] {
        if m.read_len == u32::MAX {
            &[]
        } else {
            log.read_elems(m)
        }
    };
    match kind {
        WR => log.mops_of(b).iter().find_map(|m| {
            if m.kind != MopKind::Read || !m.known {
                return None;
            }
            let read = read_of(m);
            let last = *read.last()?;
            (writes.get(&(m.key, last))?.txn as usize == a).then(|| {
                (
                    format!(
                        "{bn} read key {} = {}, which includes {an}'s append of {}",
                        log.key_value(m.key),
                        show_list(log, read),
                        show_value(log, last)
                    ),
                    log.key_value(m.key).clone(),
                )
            })
        }),
        WW => log.mops_of(b).iter().find_map(|m| {
            if m.kind != MopKind::Append {
                return None;
            }
            let before = before_of(m.key, m.value);
            let prev = *order[m.key as usize].get(before.checked_sub(1)?)?;
            (writes.get(&(m.key, prev))?.txn as usize == a).then(|| {
                (
                    format!(
                        "{bn} appended {} after {an} appended {} to key {}",
                        show_value(log, m.value),
                        show_value(log, prev),
                        log.key_value(m.key)
                    ),
                    log.key_value(m.key).clone(),
                )
            })
        }),
        RW => log.mops_of(b).iter().find_map(|m| {
            if m.kind != MopKind::Append {
                return None;
            }
            let before = before_of(m.key, m.value);
            log.mops_of(a).iter().find_map(|r| {
                if r.kind != MopKind::Read || !r.known || r.key != m.key {
                    return None;
                }
                let read = read_of(r);
                let version = match read.last() {
                    None => 0,
                    Some(&last) => writes.get(&(r.key, last))?.pos as usize + 1,
                };
                (version == before).then(|| {
                    let what = if read.is_empty() {
                        format!("key {} = [] (the initial state)", log.key_value(m.key))
                    } else {
                        format!("key {} = {}", log.key_value(m.key), show_list(log, read))
                    };
                    (
                        format!(
                            "{an} read {what}, which does not include {bn}'s append of {}",
                            show_value(log, m.value)
                        ),
                        log.key_value(m.key).clone(),
                    )
                })
            })
        }),
        _ => None,
    }
}

/// The external read of `k` in `t` (first read before any write of k), if any.
fn ext_read(log: &TxnLog, t: usize, k: u32) -> Option<Elem> {
    for m in log.mops_of(t) {
        if m.key == k {
            return (m.kind == MopKind::Read && m.known).then_some(m.value);
        }
    }
    None
}

fn final_write(log: &TxnLog, t: usize, k: u32) -> Option<Elem> {
    log.mops_of(t)
        .iter()
        .rev()
        .find(|m| m.key == k && m.kind == MopKind::Write)
        .map(|m| m.value)
}

fn register_edge(
    log: &TxnLog,
    writes: &Writes,
    a: usize,
    b: usize,
    kind: u8,
    an: &str,
    bn: &str,
) -> Option<(String, Value)> {
    let keys_of = |t: usize| log.mops_of(t).iter().map(|m| m.key).collect::<Vec<_>>();
    for k in keys_of(b) {
        let key = log.key_value(k).clone();
        match kind {
            WR => {
                if let Some(v) = ext_read(log, b, k) {
                    if v != NIL && writes.get(&(k, v)).map(|w| w.txn as usize) == Some(a) {
                        return Some((
                            format!(
                                "{bn} read key {key} = {}, written by {an}",
                                show_value(log, v)
                            ),
                            key,
                        ));
                    }
                }
            }
            WW => {
                if let (Some(r), Some(w)) = (ext_read(log, b, k), final_write(log, b, k)) {
                    if r != NIL && writes.get(&(k, r)).map(|w| w.txn as usize) == Some(a) {
                        return Some((
                            format!(
                                "{bn} read key {key} = {} (written by {an}) and then wrote {}, so \
                                 {an}'s version precedes {bn}'s",
                                show_value(log, r),
                                show_value(log, w)
                            ),
                            key,
                        ));
                    }
                }
            }
            RW => {
                if let (Some(r), Some(w)) = (ext_read(log, a, k), final_write(log, b, k)) {
                    let follows = r == NIL || ext_read(log, b, k) == Some(r);
                    if follows {
                        let what = if r == NIL {
                            "nil (the initial state)".to_string()
                        } else {
                            show_value(log, r)
                        };
                        return Some((
                            format!(
                                "{an} read key {key} = {what}, which {bn} overwrote with {}",
                                show_value(log, w)
                            ),
                            key,
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    None
}

const MAX_PICTURE_NODES: usize = 64;

/// Names T1, T2, ... given to transactions in the order a proof first mentions them.
#[derive(Default)]
struct Namer {
    names: rustc_hash::FxHashMap<u32, String>,
    order: Vec<u32>,
}

impl Namer {
    fn name(&mut self, t: u32) -> String {
        let next = self.order.len() + 1;
        let order = &mut self.order;
        self.names
            .entry(t)
            .or_insert_with(|| {
                order.push(t);
                format!("T{next}")
            })
            .clone()
    }
}

/// What a chosen edge says: `a`'s version precedes `b`'s (ww), or `a` read the version
/// `b`'s write follows (rw).
fn version_text(log: &TxnLog, e: &ChosenEdge, an: &str, bn: &str) -> String {
    let key = log.key_value(e.key);
    if e.kind == WW {
        format!(
            "{an}'s write of {} to key {key} precedes {bn}'s write of {}",
            show_value(log, e.from_value),
            show_value(log, e.to_value)
        )
    } else {
        format!(
            "{an} read key {key} = {}, which {bn}'s write of {} overwrites",
            show_value(log, e.from_value),
            show_value(log, e.to_value)
        )
    }
}

/// "key x's 3 (written by T1) precedes 4 (written by T2)" and the like.
fn versions_text(log: &TxnLog, namer: &mut Namer, v: &Versions, verb: &str) -> String {
    format!(
        "key {}'s version {} (written by {}) {verb} {} (written by {})",
        log.key_value(v.key),
        show_value(log, v.first.1),
        namer.name(v.first.0),
        show_value(log, v.second.1),
        namer.name(v.second.0)
    )
}

fn proof_step(
    log: &TxnLog,
    index: &Index,
    namer: &mut Namer,
    a: u32,
    b: u32,
    edge: &ProofEdge,
) -> Step {
    let (an, bn) = (namer.name(a), namer.name(b));
    let (kind, text, key, basis) = match *edge {
        ProofEdge::Known(kind) => {
            let (text, key) = explain_edge(log, index, a as usize, b as usize, kind, &an, &bn);
            (kind, text, key, "known")
        }
        ProofEdge::Derived {
            via,
            via_kind,
            key,
            value,
        } => {
            let k = log.key_value(key).clone();
            let vn = namer.name(via);
            let first = if via_kind == u8::MAX {
                format!("{an} < {vn} by the same reasoning, through another reader")
            } else {
                explain_edge(log, index, a as usize, via as usize, via_kind, &an, &vn).0
            };
            let text = format!(
                "{an} < {bn}, because {an} wrote key {k}; {first}; and {vn} read key {k} = {}, \
                 written by {bn}: so {an}'s version of key {k} comes before {bn}'s",
                show_value(log, value)
            );
            (WW, text, Some(k), "derived")
        }
        ProofEdge::Supposed(e) => (
            e.kind,
            format!(
                "{an} < {bn}, because {} (the order supposed)",
                version_text(log, &e, &an, &bn)
            ),
            Some(log.key_value(e.key).clone()),
            "supposed",
        ),
        ProofEdge::Case(e) => (
            e.kind,
            format!(
                "{an} < {bn}, because {} (as this case supposes)",
                version_text(log, &e, &an, &bn)
            ),
            Some(log.key_value(e.key).clone()),
            "case",
        ),
        ProofEdge::Forced(e, lemma) => (
            e.kind,
            format!(
                "{an} < {bn}, because {} ({})",
                version_text(log, &e, &an, &bn),
                match lemma {
                    Some(l) => format!("forced, see ({})", l + 1),
                    None => "forced; the reason is left out".to_string(),
                }
            ),
            Some(log.key_value(e.key).clone()),
            "forced",
        ),
    };
    Step {
        from: an,
        to: bn,
        kind: kind_name(kind).to_string(),
        key,
        text,
        basis: Some(basis.to_string()),
    }
}

/// Renders a proof that no version order exists, as nested text; the first cycle shown is
/// also returned as steps and a picture.
pub(crate) fn render_proof(log: &TxnLog, index: &Index, proof: &Proof) -> RenderedProof {
    struct Out<'a> {
        log: &'a TxnLog,
        index: &'a Index,
        proof: &'a Proof,
        namer: Namer,
        text: String,
        first: Option<(Vec<String>, Vec<Step>)>,
        cycles: Vec<ProofCycleReport>,
        /// The orders the cases being rendered suppose, outermost first.
        cases: Vec<VersionOrder>,
    }
    impl Out<'_> {
        fn order(&self, v: &Versions, opposite: bool) -> VersionOrder {
            let (a, b) = if opposite {
                (v.second.1, v.first.1)
            } else {
                (v.first.1, v.second.1)
            };
            VersionOrder {
                key: self.log.key_value(v.key).clone(),
                first: self.log.decode(a),
                second: self.log.decode(b),
            }
        }

        fn cycle(
            &mut self,
            cycle: &ProofCycle,
            depth: usize,
            main: bool,
            supposes: Option<VersionOrder>,
            lemma: Option<usize>,
        ) {
            let refutes = match &supposes {
                Some(o) => format!(
                    "key {}: {} precedes {}",
                    o.key,
                    o.first.to_edn(),
                    o.second.to_edn()
                ),
                None => "the known edges".to_string(),
            };
            let ind = "  ".repeat(depth);
            let steps: Vec<Step> = (0..cycle.len())
                .map(|i| {
                    let (a, edge) = &cycle[i];
                    let b = cycle[(i + 1) % cycle.len()].0;
                    proof_step(self.log, self.index, &mut self.namer, *a, b, edge)
                })
                .collect();
            for (i, s) in steps.iter().enumerate() {
                if i + 1 == steps.len() {
                    self.text
                        .push_str(&format!("{ind}- However, {}: a contradiction!\n", s.text));
                } else {
                    self.text.push_str(&format!("{ind}- {};\n", s.text));
                }
            }
            if main && self.first.is_none() {
                let names = steps.iter().map(|s| s.from.clone()).collect();
                self.first = Some((names, steps.clone()));
            }
            self.cycles.push(ProofCycleReport {
                refutes,
                lemma,
                cases: self.cases.clone(),
                supposes,
                steps,
            });
        }

        fn lemmas(&mut self, scope: usize, depth: usize) {
            let ind = "  ".repeat(depth);
            for (i, l) in self.proof.lemmas.iter().enumerate() {
                if l.scope != scope {
                    continue;
                }
                let what = versions_text(self.log, &mut self.namer, &l.order, "precedes");
                self.text.push_str(&format!(
                    "{ind}({}) {what}, forced: the other order closes a cycle:\n",
                    i + 1
                ));
                let supposes = self.order(&l.order, true);
                self.cycle(&l.other, depth + 1, false, Some(supposes), Some(i + 1));
            }
        }

        fn node(&mut self, node: &ProofNode, depth: usize) {
            let ind = "  ".repeat(depth);
            match node {
                ProofNode::Cycle(c) => {
                    self.text.push_str(&format!("{ind}A cycle:\n"));
                    self.cycle(c, depth + 1, true, None, None);
                }
                ProofNode::Conflict { pair, cycles } => {
                    let what = versions_text(self.log, &mut self.namer, pair, "and");
                    self.text
                        .push_str(&format!("{ind}Either order of {what} closes a cycle.\n"));
                    let (v1, v2) = (
                        show_value(self.log, pair.first.1),
                        show_value(self.log, pair.second.1),
                    );
                    self.text
                        .push_str(&format!("{ind}If {v1} precedes {v2}:\n"));
                    let supposes = self.order(pair, false);
                    self.cycle(&cycles[0], depth + 1, true, Some(supposes), None);
                    self.text
                        .push_str(&format!("{ind}If {v2} precedes {v1}:\n"));
                    let supposes = self.order(pair, true);
                    self.cycle(&cycles[1], depth + 1, true, Some(supposes), None);
                }
                ProofNode::Split { pair, cases } => {
                    let what = versions_text(self.log, &mut self.namer, pair, "and");
                    self.text.push_str(&format!(
                        "{ind}Nothing above orders {what}; each order fails.\n"
                    ));
                    let (v1, v2) = (
                        show_value(self.log, pair.first.1),
                        show_value(self.log, pair.second.1),
                    );
                    for (i, (scope, sub)) in cases.iter().enumerate() {
                        let (x, y) = if i == 0 { (&v1, &v2) } else { (&v2, &v1) };
                        self.text
                            .push_str(&format!("{ind}Case {x} precedes {y}:\n"));
                        let case = self.order(pair, i == 1);
                        self.cases.push(case);
                        self.lemmas(*scope, depth + 1);
                        self.node(sub, depth + 1);
                        self.cases.pop();
                    }
                }
                ProofNode::Cut { choices } => {
                    self.text.push_str(&format!(
                        "{ind}(Not shown: the search needed {choices} further choices to \
                         refute this case.)\n"
                    ));
                }
            }
        }
    }
    let mut out = Out {
        log,
        index,
        proof,
        namer: Namer::default(),
        text: String::new(),
        first: None,
        cycles: Vec::new(),
        cases: Vec::new(),
    };
    if proof.lemmas.iter().any(|l| l.scope == 0) {
        out.text
            .push_str("Forced orders (each because the other order closes a cycle):\n");
        out.lemmas(0, 1);
    }
    out.node(&proof.root, 0);
    let status = if proof.complete {
        "Proof: every edge below is known from the history, derived from known edges, \
         supposed by the case at hand, or forced by an order shown with its reason."
            .to_string()
    } else {
        format!(
            "Partial proof: {}{}.",
            proof.notes.join("; "),
            if proof.search_nodes > 0 {
                format!(" (the search needed {} choices in all)", proof.search_nodes)
            } else {
                String::new()
            }
        )
    };
    let refs: Vec<TxnRef> = out
        .namer
        .order
        .iter()
        .map(|&t| txn_ref(log, t as usize, &out.namer.names[&t]))
        .collect();
    let mut text = format!("{status}\nLet:\n");
    for r in &refs {
        text.push_str(&format!(
            "  {} = index {}, process {}: {}\n",
            r.name,
            r.index,
            r.process,
            r.value.to_edn()
        ));
    }
    text.push_str(&out.text);
    let text = text.trim_end().to_string();
    let (names, steps) = out.first.unwrap_or_default();
    let svg =
        (!names.is_empty() && names.len() <= MAX_PICTURE_NODES).then(|| cycle_svg(&names, &steps));
    RenderedProof {
        refs,
        steps,
        text,
        svg,
        report: ProofReport {
            status: if proof.complete {
                "complete"
            } else {
                "partial"
            }
            .to_string(),
            cycles: out.cycles,
        },
    }
}

/// A proof as an anomaly shows it: the transactions named, the first cycle's steps, the
/// text, the first cycle's picture; and every cycle, for `ExactReport::proof`.
pub(crate) struct RenderedProof {
    pub refs: Vec<TxnRef>,
    pub steps: Vec<Step>,
    pub text: String,
    pub svg: Option<String>,
    pub report: ProofReport,
}

/// Renders a cycle (transaction indices, edge kinds; `kinds[i]` goes from `txns[i]` to
/// `txns[i+1]`, the last back to `txns[0]`) as steps, text and a picture.
pub(crate) fn render_cycle(
    log: &TxnLog,
    index: &Index,
    txns: &[usize],
    kinds: &[u8],
) -> (Vec<TxnRef>, Vec<Step>, String, Option<String>) {
    let edges: Vec<Result<ChosenEdge, u8>> = kinds.iter().map(|&k| Err(k)).collect();
    render_cycle_with(log, index, txns, &edges)
}

/// `render_cycle` where some edges come from a chosen version order (the exact search's)
/// rather than from the history: `Ok` edges say which writes they order.
pub(crate) fn render_cycle_with(
    log: &TxnLog,
    index: &Index,
    txns: &[usize],
    edges: &[Result<ChosenEdge, u8>],
) -> (Vec<TxnRef>, Vec<Step>, String, Option<String>) {
    let names: Vec<String> = (1..=txns.len()).map(|i| format!("T{i}")).collect();
    let refs: Vec<TxnRef> = txns
        .iter()
        .zip(&names)
        .map(|(&t, n)| txn_ref(log, t, n))
        .collect();
    let mut steps = Vec::with_capacity(txns.len());
    for i in 0..txns.len() {
        let j = (i + 1) % txns.len();
        let (an, bn) = (&names[i], &names[j]);
        let (kind, text, key) = match edges[i] {
            Err(kind) => {
                let (text, key) = explain_edge(log, index, txns[i], txns[j], kind, an, bn);
                (kind, text, key)
            }
            Ok(e) => {
                let key = log.key_value(e.key).clone();
                let text = if e.kind == WW {
                    format!(
                        "{an} < {bn}, because in this order {an}'s write of {} to key {key} \
                         precedes {bn}'s write of {}",
                        show_value(log, e.from_value),
                        show_value(log, e.to_value)
                    )
                } else {
                    format!(
                        "{an} < {bn}, because {an} read key {key} = {}, which in this order \
                         {bn}'s write of {} overwrites",
                        show_value(log, e.from_value),
                        show_value(log, e.to_value)
                    )
                };
                (e.kind, text, Some(key))
            }
        };
        steps.push(Step {
            from: an.clone(),
            to: bn.clone(),
            kind: kind_name(kind).to_string(),
            key,
            text,
            basis: edges[i].is_ok().then(|| "guessed".to_string()),
        });
    }
    let mut text = String::from("Let:\n");
    for r in &refs {
        text.push_str(&format!(
            "  {} = index {}, process {}: {}\n",
            r.name,
            r.index,
            r.process,
            r.value.to_edn()
        ));
    }
    text.push_str("Then:\n");
    for (i, s) in steps.iter().enumerate() {
        if i + 1 == steps.len() {
            text.push_str(&format!("  - However, {}: a contradiction!", s.text));
        } else {
            text.push_str(&format!("  - {};\n", s.text));
        }
    }
    // A picture of more than a few dozen nodes is unreadable and only bloats results.json.
    let svg = if names.len() <= MAX_PICTURE_NODES {
        Some(cycle_svg(&names, &steps))
    } else {
        None
    };
    (refs, steps, text, svg)
}

fn edge_color(kind: &str) -> &'static str {
    match kind {
        "ww" => "#1f77b4",
        "wr" => "#2ca02c",
        "rw" => "#d62728",
        "process" => "#9467bd",
        _ => "#ff7f0e",
    }
}

/// Space kept between the outermost drawing and the picture's edge.
const PICTURE_MARGIN_PX: f64 = 6.0;
/// Arc length of the circle per node, so nodes and their edge labels keep apart in long cycles.
const ARC_PER_NODE_PX: f64 = 64.0;
const NODE_R_PX: f64 = 18.0;
const PICTURE_FONT_PX: f64 = 13.0;
/// Average advance of a character at `PICTURE_FONT_PX` in a sans-serif font, rounded up.
const PICTURE_CHAR_PX: f64 = 7.5;

/// Nodes on a circle, each edge a curved arrow labelled with its kind and key; curving keeps the
/// two edges of a 2-cycle apart. Labels sit beside the outside of their curve and grow away
/// from it (left of a curve bulging left, right of one bulging right), so they never sit on a
/// line; the picture is padded so they stay inside it.
fn cycle_svg(names: &[String], steps: &[Step]) -> String {
    let n = names.len().max(1);
    let radius = (90.0 + 15.0 * n.min(12) as f64)
        .max(ARC_PER_NODE_PX * n as f64 / (2.0 * std::f64::consts::PI));
    let labels: Vec<String> = steps
        .iter()
        .map(|s| match &s.key {
            Some(k) => format!("{} {}", s.kind, k),
            None => s.kind.clone(),
        })
        .collect();
    // Room beyond the circle: a node, or a curve's bulge (at most 0.09 of a chord, a chord at
    // most the diameter) plus the label's offset and its width (sideways) or height (up, down).
    let longest_px =
        labels.iter().map(|l| l.chars().count()).max().unwrap_or(0) as f64 * PICTURE_CHAR_PX;
    let bulge_px = 0.18 * radius + 8.0 + PICTURE_MARGIN_PX;
    let (width, height) = (
        2.0 * (radius + (NODE_R_PX + PICTURE_MARGIN_PX).max(bulge_px + longest_px)),
        2.0 * (radius + (NODE_R_PX + PICTURE_MARGIN_PX).max(bulge_px + PICTURE_FONT_PX * 1.2)),
    );
    let (cx, cy) = (width / 2.0, height / 2.0);
    let pos: Vec<(f64, f64)> = (0..n)
        .map(|i| {
            let ang =
                -std::f64::consts::FRAC_PI_2 + 2.0 * std::f64::consts::PI * i as f64 / n as f64;
            (cx + radius * ang.cos(), cy + radius * ang.sin())
        })
        .collect();
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
         viewBox=\"0 0 {width:.0} {height:.0}\" font-family=\"sans-serif\" \
         font-size=\"{PICTURE_FONT_PX}\">"
    );
    svg.push_str("<defs>");
    for kind in ["ww", "wr", "rw", "process", "realtime"] {
        svg.push_str(&format!(
            "<marker id=\"arrow-{kind}\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" \
             markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\">\
             <path d=\"M 0 0 L 10 5 L 0 10 z\" fill=\"{}\"/></marker>",
            edge_color(kind)
        ));
    }
    svg.push_str("</defs>");
    let node_r = NODE_R_PX;
    let mut label_svg = String::new();
    for (i, s) in steps.iter().enumerate() {
        let j = (i + 1) % n;
        let (x1, y1) = pos[i];
        let (x2, y2) = pos[j];
        let (dx, dy) = (x2 - x1, y2 - y1);
        let len = (dx * dx + dy * dy).sqrt().max(1.0);
        let (ux, uy) = (dx / len, dy / len);
        // Start and end on the node circles; bend to the left of the direction of travel.
        let (sx, sy) = (x1 + ux * node_r, y1 + uy * node_r);
        let (ex, ey) = (x2 - ux * node_r, y2 - uy * node_r);
        let bend = if n == 1 { 0.0 } else { 0.18 * len };
        let (mx, my) = ((sx + ex) / 2.0 + uy * bend, (sy + ey) / 2.0 - ux * bend);
        let color = edge_color(&s.kind);
        svg.push_str(&format!(
            "<path d=\"M {sx:.1} {sy:.1} Q {mx:.1} {my:.1} {ex:.1} {ey:.1}\" fill=\"none\" \
             stroke=\"{color}\" stroke-width=\"2\" marker-end=\"url(#arrow-{})\"/>",
            s.kind
        ));
        let label = &labels[i];
        let (lx, ly, anchor) = edge_label_place((sx, sy), (mx, my), (ex, ey), (uy, -ux));
        // Drawn after every edge, so no later curve crosses a label.
        label_svg.push_str(&format!(
            "<text x=\"{lx:.1}\" y=\"{ly:.1}\" fill=\"{color}\" text-anchor=\"{anchor}\" \
             stroke=\"white\" stroke-width=\"4\" paint-order=\"stroke\">{}</text>",
            xml_escape(label)
        ));
    }
    svg.push_str(&label_svg);
    for (i, name) in names.iter().enumerate() {
        let (x, y) = pos[i];
        svg.push_str(&format!(
            "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"{node_r}\" fill=\"#f4f4f4\" stroke=\"#333\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-weight=\"bold\">{}</text>",
            y + 4.5,
            xml_escape(name)
        ));
    }
    svg.push_str("</svg>");
    svg
}

/// Where an edge's label goes: just outside the apex of the quadratic curve `s`, `m`, `e`
/// along `normal` (the side it bulges to), anchored so the text extends away from the curve.
/// Returns the text's anchor point (baseline) and its `text-anchor`.
fn edge_label_place(
    s: (f64, f64),
    m: (f64, f64),
    e: (f64, f64),
    normal: (f64, f64),
) -> (f64, f64, &'static str) {
    // The apex of a quadratic Bézier is its point at t = 1/2.
    let apex = ((s.0 + e.0) / 4.0 + m.0 / 2.0, (s.1 + e.1) / 4.0 + m.1 / 2.0);
    let (nx, ny) = normal;
    let (x, y) = (apex.0 + nx * 8.0, apex.1 + ny * 8.0);
    let anchor = if nx > 0.3 {
        "start"
    } else if nx < -0.3 {
        "end"
    } else {
        "middle"
    };
    // The baseline: below the apex when the curve bulges down, above when up, centred else.
    let y = if ny > 0.3 {
        y + PICTURE_FONT_PX * 0.8
    } else if ny < -0.3 {
        y - 2.0
    } else {
        y + PICTURE_FONT_PX * 0.35
    };
    (x, y, anchor)
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(tag: &str, name: &str) -> Option<String> {
        let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
        Some(tag[at..at + tag[at..].find('"')?].to_string())
    }

    fn num(tag: &str, name: &str) -> f64 {
        attr(tag, name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no number {name} in {tag}"))
    }

    /// Every label's box (estimated from its anchor, length and font) and every node lies
    /// inside the picture.
    fn assert_inside(svg: &str) {
        let width = num(svg, "width");
        let height = num(svg, "height");
        for part in svg.split("<text").skip(1) {
            let tag = &part[..part.find('>').expect("end of tag")];
            let text = &part[tag.len() + 1..part.find("</text>").expect("closed text")];
            let w = text.chars().count() as f64 * PICTURE_CHAR_PX;
            let x = num(tag, "x");
            let y = num(tag, "y");
            let (left, right) = match attr(tag, "text-anchor").as_deref() {
                Some("start") => (x, x + w),
                Some("end") => (x - w, x),
                _ => (x - w / 2.0, x + w / 2.0),
            };
            assert!(
                left >= 0.0 && right <= width,
                "{text:?} spans x {left:.0}..{right:.0} of {width}: {svg}"
            );
            assert!(
                y - PICTURE_FONT_PX >= 0.0 && y + 3.0 <= height,
                "{text:?} at y {y:.0} of {height}: {svg}"
            );
        }
        for part in svg.split("<circle").skip(1) {
            let (x, y, r) = (num(part, "cx"), num(part, "cy"), num(part, "r"));
            assert!(x - r >= 0.0 && x + r <= width && y - r >= 0.0 && y + r <= height);
        }
    }

    fn cycle(n: usize, key: &str) -> (Vec<String>, Vec<Step>) {
        let names: Vec<String> = (1..=n).map(|i| format!("T{i}")).collect();
        let kinds = ["ww", "wr", "rw", "process", "realtime"];
        let steps = (0..n)
            .map(|i| Step {
                from: names[i].clone(),
                to: names[(i + 1) % n].clone(),
                kind: kinds[i % kinds.len()].to_string(),
                key: (i % 5 < 3).then(|| Value::Str(format!("{key}{i}"))),
                text: String::new(),
                basis: None,
            })
            .collect();
        (names, steps)
    }

    #[test]
    fn cycle_labels_and_nodes_stay_inside_the_picture() {
        for n in 1..=MAX_PICTURE_NODES {
            for key in ["x", "account-balance-of-the-long-named-key-"] {
                let (names, steps) = cycle(n, key);
                assert_inside(&cycle_svg(&names, &steps));
            }
        }
    }

    #[test]
    fn edge_labels_grow_away_from_their_curve() {
        // A curve bulging right gets a label starting right of its apex, and so on.
        let s = (100.0, 0.0);
        let e = (100.0, 200.0);
        let (x, _, anchor) = edge_label_place(s, (140.0, 100.0), e, (1.0, 0.0));
        assert_eq!(anchor, "start");
        assert!(x > 120.0, "{x}");
        let (x, _, anchor) = edge_label_place(s, (60.0, 100.0), e, (-1.0, 0.0));
        assert_eq!(anchor, "end");
        assert!(x < 80.0, "{x}");
        let (_, y, anchor) =
            edge_label_place((0.0, 100.0), (100.0, 140.0), (200.0, 100.0), (0.0, 1.0));
        assert_eq!(anchor, "middle");
        assert!(
            y - PICTURE_FONT_PX > 120.0,
            "the text's top is below the apex: {y}"
        );
    }
}
