//! Exact decision for rw-register histories, where Elle's inference is incomplete.
//!
//! Inference orders the versions of a key only where reads reveal it (a transaction read v1
//! and then wrote v2). Where it does not, Elle says valid although no serial order may exist.
//! Here the open orders are decided, as a polygraph (Papadimitriou; Cobra, PolySI and Viper
//! hand the same problem to a solver): for every key and every pair of committed writers a, b
//! of it, either a's version precedes b's, adding a -ww-> b and r -rw-> b for every reader r of
//! a's version, or the other way round. A history is serializable exactly when some choice for
//! every pair leaves the graph of known edges (from inference; for strict serializability also
//! process and real-time order) plus the chosen ones acyclic (Adya: a topological order of an
//! acyclic dependency graph is a serial order in which every read sees its writer's version).
//!
//! 1. A witness first: the known graph's topological order, ties broken by invocation, orders
//!    every key's writers; if the resulting graph is acyclic, that is the answer, in linear
//!    time. Valid histories almost always end here.
//! 2. Otherwise the reachability closure of the known graph (bitsets) forces every pair one of
//!    whose choices would close a cycle, to a fixpoint; a pair with no possible choice proves
//!    that no order exists.
//! 3. What is left open splits into strongly connected components of the graph of known,
//!    forced and both choices of every open pair: a cycle under any choice lies inside one, so
//!    each is decided alone: first by one descent without backtracking (preferred choices,
//!    propagation after each), then if that fails by backtracking with the same propagation
//!    after every choice.
//!
//! Every step counts against a budget (and the time budget); past it the answer is
//! "incomplete", never "valid". Info transactions count as committed only when some read saw
//! their writes (otherwise leaving them out of the serial order is always at least as good);
//! failed ones never. Reads that name no committed final write (garbage, aborted or
//! intermediate reads) are anomalies inference already reported; they constrain nothing here.

use super::cycles::order_edges;
use super::explain::{render_cycle_with, render_proof, show_list};
use super::infer::{Edge, Index, PROCESS, REALTIME, RW, WR, WW};
use super::log::{Elem, MopKind, TxnLog, NIL};
use super::{
    Anomaly, Consistency, DecidedBy, ExactReport, Found, ProofReport, TxnOptions, WitnessOrder,
};
use crate::history::Outcome;
use petgraph::algo::kosaraju_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use rustc_hash::FxHashMap;
use std::collections::BinaryHeap;
use std::time::Instant;

/// The closure is n² bits: past this many nodes (transactions plus real-time chain nodes) the
/// exact stages are not attempted, and only the linear witness can decide.
pub(crate) const MAX_EXACT_NODES: usize = 20_000;
/// Bound on the write pairs considered (w² per key).
const MAX_PAIRS: usize = 2_000_000;
/// Bound on the words held by backtracking snapshots (8 bytes each): 256 MiB.
const MAX_SNAPSHOT_WORDS: u64 = 32 << 20;

/// Which cycles the search must avoid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// ww, wr and rw edges (serializability; repeatable read as this checker defines it).
    Full,
    /// ww and wr only (G0 and G1c: read committed).
    WwWr,
}

/// An edge of the final graph that a choice of version order added.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ChosenEdge {
    pub from: u32,
    pub to: u32,
    /// WW (from's write precedes to's) or RW (from read the version to's write follows).
    pub kind: u8,
    pub key: u32,
    /// The value `from` wrote (ww) or read (rw), and the one `to` wrote.
    pub from_value: Elem,
    pub to_value: Elem,
}

pub(crate) enum Outcome3 {
    /// A choice for every open pair with an acyclic graph: per key with two or more committed
    /// writers, its version order; and a serial order of the committed transactions.
    Witness {
        orders: Vec<(u32, Vec<Elem>)>,
        serial: Vec<u32>,
    },
    /// No choice avoids a cycle. `cycle` is one cycle under the example choice `example`
    /// (the choice the witness stage tried): nodes (transactions only) with the edge into the
    /// next one, either known (`Err(kind)`) or chosen.
    NoOrder {
        cycle: Vec<(u32, Result<ChosenEdge, u8>)>,
        example: Vec<(u32, Vec<Elem>)>,
        component: usize,
        /// Why no order exists, from the search's own steps (None: past the proof's bounds;
        /// then `cycle` under `example` is shown instead).
        proof: Option<Proof>,
    },
    /// The budget ran out (or the history is too large) with this reason.
    Incomplete(String),
}

pub(crate) struct ExactRun {
    pub outcome: Outcome3,
    pub steps: u64,
    /// Write pairs whose order neither inference nor the closure fixed.
    pub open_pairs: usize,
    /// Components searched (by a descent, then backtracking), and the largest (in nodes).
    pub components: usize,
    pub largest_component: usize,
    /// Whether the witness stage alone decided.
    pub by_witness_order: bool,
}

/// Per key: the committed writers (txn, final value) and, per writer, who read its version.
struct Facts {
    writers: Vec<Vec<(u32, Elem)>>,
    readers: Vec<Vec<Vec<u32>>>,
    nil_readers: Vec<Vec<u32>>,
}

fn facts(log: &TxnLog) -> Facts {
    let nk = log.key_count();
    // Final writes of transactions that may have committed.
    let mut final_writes: FxHashMap<(u32, Elem), u32> = FxHashMap::default();
    for (t, tx) in log.txns.iter().enumerate() {
        if tx.outcome == Outcome::Fail {
            continue;
        }
        let mops = log.mops_of(t);
        for (i, m) in mops.iter().enumerate() {
            if m.kind == MopKind::Write
                && !mops[i + 1..]
                    .iter()
                    .any(|n| n.kind == MopKind::Write && n.key == m.key)
            {
                final_writes.insert((m.key, m.value), t as u32);
            }
        }
    }
    // External reads of ok transactions: the first micro-op on the key is a known read.
    let mut reads: Vec<(u32, Elem, u32)> = Vec::new();
    let mut read_txn = vec![false; log.txns.len()];
    for (t, tx) in log.txns.iter().enumerate() {
        if tx.outcome != Outcome::Ok {
            continue;
        }
        let mops = log.mops_of(t);
        for (i, m) in mops.iter().enumerate() {
            if m.kind != MopKind::Read || !m.known || mops[..i].iter().any(|n| n.key == m.key) {
                continue;
            }
            if m.value == NIL {
                reads.push((m.key, NIL, t as u32));
            } else if let Some(&w) = final_writes.get(&(m.key, m.value)) {
                if w as usize != t {
                    reads.push((m.key, m.value, t as u32));
                    read_txn[w as usize] = true;
                }
            }
        }
    }
    let committed = |t: u32| log.txns[t as usize].outcome == Outcome::Ok || read_txn[t as usize];
    let mut writers: Vec<Vec<(u32, Elem)>> = vec![Vec::new(); nk];
    let mut slot: FxHashMap<(u32, Elem), usize> = FxHashMap::default();
    let mut finals: Vec<_> = final_writes.into_iter().collect();
    finals.sort_unstable_by_key(|&((k, v), t)| (k, t, v));
    for ((k, v), t) in finals {
        if committed(t) {
            slot.insert((k, v), writers[k as usize].len());
            writers[k as usize].push((t, v));
        }
    }
    let mut readers: Vec<Vec<Vec<u32>>> =
        writers.iter().map(|w| vec![Vec::new(); w.len()]).collect();
    let mut nil_readers: Vec<Vec<u32>> = vec![Vec::new(); nk];
    for (k, v, t) in reads {
        if v == NIL {
            nil_readers[k as usize].push(t);
        } else if let Some(&s) = slot.get(&(k, v)) {
            readers[k as usize][s].push(t);
        }
    }
    Facts {
        writers,
        readers,
        nil_readers,
    }
}

/// Counts work; errs past the step budget or the deadline.
struct Meter {
    steps: u64,
    budget: u64,
    deadline: Instant,
    next_clock: u64,
}

struct OutOfBudget(String);

impl Meter {
    fn spend(&mut self, n: u64) -> Result<(), OutOfBudget> {
        self.steps += n;
        if self.steps > self.budget {
            return Err(OutOfBudget(format!(
                "the exact search used its budget of {} steps",
                self.budget
            )));
        }
        if self.steps >= self.next_clock {
            self.next_clock = self.steps + (1 << 16);
            if Instant::now() > self.deadline {
                return Err(OutOfBudget(
                    "the exact search ran out of the time budget".to_string(),
                ));
            }
        }
        Ok(())
    }
}

/// Reachability as one bitset row per node: bit v of row u says u reaches v; and the same
/// transposed, one column per node: bit u of column v. `bits` holds the n rows, then the n
/// columns (so a snapshot copies both). The columns make an update find the nodes that reach
/// a source without testing every row.
#[derive(Clone)]
struct Closure {
    n: usize,
    words: usize,
    bits: Vec<u64>,
}

impl Closure {
    /// The closure of a graph, or None if it has a cycle.
    fn of(n: usize, adj: &[Vec<u32>], meter: &mut Meter) -> Result<Option<Closure>, OutOfBudget> {
        let words = n.div_ceil(64).max(1);
        meter.spend((n * words) as u64)?;
        let Some(order) = topo(n, adj, |_| 0) else {
            return Ok(None);
        };
        let mut c = Closure {
            n,
            words,
            bits: vec![0; 2 * n * words],
        };
        for &u in order.iter().rev() {
            let u = u as usize;
            meter.spend((adj[u].len() * words) as u64 + 1)?;
            for &v in &adj[u] {
                let v = v as usize;
                c.bits[u * words + v / 64] |= 1 << (v % 64);
                if u != v {
                    let (a, b) = if u < v {
                        let (lo, hi) = c.bits.split_at_mut(v * words);
                        (&mut lo[u * words..u * words + words], &hi[..words])
                    } else {
                        let (lo, hi) = c.bits.split_at_mut(u * words);
                        (&mut hi[..words], &lo[v * words..v * words + words])
                    };
                    for (x, y) in a.iter_mut().zip(b) {
                        *x |= *y;
                    }
                }
            }
        }
        // The columns: one bit per reachable pair.
        meter.spend((n * words) as u64)?;
        let (rows, cols) = c.bits.split_at_mut(n * words);
        let mut ones = 0u64;
        for u in 0..n {
            for (i, &word) in rows[u * words..u * words + words].iter().enumerate() {
                let mut x = word;
                while x != 0 {
                    let v = i * 64 + x.trailing_zeros() as usize;
                    x &= x - 1;
                    cols[v * words + u / 64] |= 1 << (u % 64);
                    ones += 1;
                }
            }
        }
        meter.spend(ones)?;
        Ok(Some(c))
    }

    fn reaches(&self, u: u32, v: u32) -> bool {
        let (u, v) = (u as usize, v as usize);
        self.bits[u * self.words + v / 64] & (1 << (v % 64)) != 0
    }

    /// Adds an edge s -> target for every source (the caller checked none closes a cycle).
    /// The rows that change are those of the sources and of the nodes that reach one (the
    /// union of the sources' columns), less those that already reach the target (they hold
    /// its whole row, the closure being transitive). Each gains the target's row and the
    /// target; each pair gained sets its bit in a column too. The work is the sources'
    /// columns, the changed rows and the pairs gained: over a whole search, the pairs gained
    /// are at most n² however many edges are added.
    fn add_into(
        &mut self,
        sources: &[u32],
        target: u32,
        meter: &mut Meter,
    ) -> Result<(), OutOfBudget> {
        let (n, w) = (self.n, self.words);
        let t = target as usize;
        meter.spend(((sources.len() + 2) * w) as u64)?;
        let (rows, cols) = self.bits.split_at_mut(n * w);
        // Rows to update: sources and what reaches them, not what already reaches the target.
        let mut update = vec![0u64; w];
        for &s in sources {
            let s = s as usize;
            update[s / 64] |= 1 << (s % 64);
            for (u, c) in update.iter_mut().zip(&cols[s * w..s * w + w]) {
                *u |= *c;
            }
        }
        for (u, c) in update.iter_mut().zip(&cols[t * w..t * w + w]) {
            *u &= !*c;
        }
        let mut gain: Vec<u64> = rows[t * w..t * w + w].to_vec();
        gain[t / 64] |= 1 << (t % 64);
        let mut work = 0u64;
        for (i, &word) in update.iter().enumerate() {
            let mut x = word;
            while x != 0 {
                let y = i * 64 + x.trailing_zeros() as usize;
                x &= x - 1;
                work += w as u64;
                for (j, (r, g)) in rows[y * w..y * w + w].iter_mut().zip(&gain).enumerate() {
                    let mut fresh = *g & !*r;
                    *r |= *g;
                    while fresh != 0 {
                        let z = j * 64 + fresh.trailing_zeros() as usize;
                        fresh &= fresh - 1;
                        cols[z * w + y / 64] |= 1 << (y % 64);
                        work += 1;
                    }
                }
            }
        }
        meter.spend(work)
    }
}

/// Kahn's topological order, smallest `prio` first among the ready nodes; None if cyclic.
fn topo(n: usize, adj: &[Vec<u32>], prio: impl Fn(u32) -> u64) -> Option<Vec<u32>> {
    let mut indeg = vec![0u32; n];
    for out in adj {
        for &v in out {
            indeg[v as usize] += 1;
        }
    }
    let mut ready: BinaryHeap<std::cmp::Reverse<(u64, u32)>> = (0..n as u32)
        .filter(|&v| indeg[v as usize] == 0)
        .map(|v| std::cmp::Reverse((prio(v), v)))
        .collect();
    let mut order = Vec::with_capacity(n);
    while let Some(std::cmp::Reverse((_, u))) = ready.pop() {
        order.push(u);
        for &v in &adj[u as usize] {
            indeg[v as usize] -= 1;
            if indeg[v as usize] == 0 {
                ready.push(std::cmp::Reverse((prio(v), v)));
            }
        }
    }
    (order.len() == n).then_some(order)
}

/// How many times the witness stage repairs its guess before the exact stages take over.
const REPAIRS: usize = 256;

/// Some cycle of a graph (its nodes in order), by iterative depth-first search.
fn any_cycle(n: usize, adj: &[Vec<u32>]) -> Option<Vec<u32>> {
    // 0 unvisited, 1 on the stack, 2 done.
    let mut color = vec![0u8; n];
    let mut stack: Vec<(u32, usize)> = Vec::new();
    for root in 0..n as u32 {
        if color[root as usize] != 0 {
            continue;
        }
        color[root as usize] = 1;
        stack.push((root, 0));
        while let Some(&mut (u, ref mut next)) = stack.last_mut() {
            if let Some(&v) = adj[u as usize].get(*next) {
                *next += 1;
                match color[v as usize] {
                    0 => {
                        color[v as usize] = 1;
                        stack.push((v, 0));
                    }
                    1 => {
                        let from = stack.iter().position(|&(x, _)| x == v).unwrap_or(0);
                        return Some(stack[from..].iter().map(|&(x, _)| x).collect());
                    }
                    _ => {}
                }
            } else {
                color[u as usize] = 2;
                stack.pop();
            }
        }
    }
    None
}

/// How many cycles of a failed guess each repair round turns into hints.
const HINTS_PER_ROUND: usize = 64;

/// How far back `simulate` looks from a reader for an earlier writer of the same key.
const LOOKAHEAD: usize = 256;

/// How many ready nodes `simulate` compares at each step.
const SIMULATE_WINDOW: usize = 64;

/// A guess at a serial order: a topological order of the known graph that, like a database
/// replaying the history, runs next a ready transaction whose reads see the current versions
/// and whose writes overwrite no version an unplaced transaction still has to read; among
/// equals (and up to `SIMULATE_WINDOW` candidates), the earliest invoked. None if the known
/// graph is cyclic.
fn simulate(
    n: usize,
    adj: &[Vec<u32>],
    facts: &Facts,
    mode: Mode,
    prio: impl Fn(u32) -> u64,
) -> Option<Vec<u32>> {
    // Per node: its external reads (key, value) and final writes (key, value, writer slot).
    let mut reads: Vec<Vec<(u32, Elem)>> = vec![Vec::new(); n];
    let mut writes: Vec<Vec<(u32, Elem, u32)>> = vec![Vec::new(); n];
    let mut pending: FxHashMap<(u32, Elem), u32> = FxHashMap::default();
    for (k, ws) in facts.writers.iter().enumerate() {
        for (s, &(w, v)) in ws.iter().enumerate() {
            writes[w as usize].push((k as u32, v, s as u32));
            for &r in &facts.readers[k][s] {
                reads[r as usize].push((k as u32, v));
                *pending.entry((k as u32, v)).or_insert(0) += 1;
            }
        }
        for &r in &facts.nil_readers[k] {
            reads[r as usize].push((k as u32, NIL));
            *pending.entry((k as u32, NIL)).or_insert(0) += 1;
        }
    }
    let mut radj: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut indeg = vec![0u32; n];
    for (u, out) in adj.iter().enumerate() {
        for &v in out {
            indeg[v as usize] += 1;
            radj[v as usize].push(u as u32);
        }
    }
    let mut state: Vec<Elem> = vec![NIL; facts.writers.len()];
    let mut placed = vec![false; n];
    let mut seen: Vec<u32> = vec![0; n];
    let mut stamp = 0u32;
    let mut queue: Vec<u32> = Vec::new();
    let mut ready: BinaryHeap<std::cmp::Reverse<(u64, u32)>> = (0..n as u32)
        .filter(|&v| indeg[v as usize] == 0)
        .map(|v| std::cmp::Reverse((prio(v), v)))
        .collect();
    let mut order = Vec::with_capacity(n);
    let mut window = Vec::with_capacity(SIMULATE_WINDOW);
    while !ready.is_empty() {
        window.clear();
        while window.len() < SIMULATE_WINDOW {
            match ready.pop() {
                Some(std::cmp::Reverse(x)) => window.push(x),
                None => break,
            }
        }
        // 0: fits now. 1 (Full): its writes hide a version still to be read, or some reader
        // of its version must follow a transaction not yet run that writes the same key
        // (looked for a little way back): that one's version must come first. 2: its reads
        // are stale. Read committed has no rw edges, so only stale reads matter there.
        let mut best = (u8::MAX, 0usize);
        for (i, &(_, v)) in window.iter().enumerate() {
            let rs = &reads[v as usize];
            let score = if rs.iter().any(|&(k, x)| state[k as usize] != x) {
                2
            } else if mode == Mode::WwWr {
                0
            } else {
                let hides = writes[v as usize].iter().any(|&(k, _, _)| {
                    let cur = state[k as usize];
                    let own = rs.iter().filter(|&&(rk, x)| rk == k && x == cur).count() as u32;
                    pending.get(&(k, cur)).copied().unwrap_or(0) > own
                });
                let waits = !hides
                    && writes[v as usize].iter().any(|&(k, _, s)| {
                        facts.readers[k as usize][s as usize].iter().any(|&r| {
                            if placed[r as usize] {
                                return false;
                            }
                            stamp += 1;
                            queue.clear();
                            queue.push(r);
                            seen[r as usize] = stamp;
                            let mut visits = 0;
                            while let Some(x) = queue.pop() {
                                visits += 1;
                                if visits > LOOKAHEAD {
                                    break;
                                }
                                for &p in &radj[x as usize] {
                                    if placed[p as usize] || seen[p as usize] == stamp {
                                        continue;
                                    }
                                    seen[p as usize] = stamp;
                                    if p != v && writes[p as usize].iter().any(|w| w.0 == k) {
                                        return true;
                                    }
                                    queue.push(p);
                                }
                            }
                            false
                        })
                    });
                u8::from(hides || waits)
            };
            if score < best.0 {
                best = (score, i);
                if score == 0 {
                    break;
                }
            }
        }
        let (_, u) = window.swap_remove(best.1);
        for x in window.drain(..) {
            ready.push(std::cmp::Reverse(x));
        }
        for &(k, x) in &reads[u as usize] {
            if let Some(c) = pending.get_mut(&(k, x)) {
                *c = c.saturating_sub(1);
            }
        }
        for &(k, x, _) in &writes[u as usize] {
            state[k as usize] = x;
        }
        placed[u as usize] = true;
        order.push(u);
        for &v in &adj[u as usize] {
            indeg[v as usize] -= 1;
            if indeg[v as usize] == 0 {
                ready.push(std::cmp::Reverse((prio(v), v)));
            }
        }
    }
    (order.len() == n).then_some(order)
}

/// One open pair: writer `a` (slot `sa`) and writer `b` (slot `sb`) of `key`.
#[derive(Clone, Copy)]
struct Pair {
    key: u32,
    sa: u32,
    sb: u32,
}

/// The search problem over a node set (global ids, or local ones inside a component).
struct Problem<'a> {
    facts: &'a Facts,
    mode: Mode,
    /// Global node id -> node id in this problem (u32::MAX: not in it).
    id: Vec<u32>,
}

impl Problem<'_> {
    fn writer(&self, key: u32, s: u32) -> u32 {
        self.facts.writers[key as usize][s as usize].0
    }

    /// The sources and target of "version `first` precedes version `second`" in problem ids.
    fn alt(&self, key: u32, first: u32, second: u32, sources: &mut Vec<u32>) -> u32 {
        sources.clear();
        let target = self.id[self.writer(key, second) as usize];
        sources.push(self.id[self.writer(key, first) as usize]);
        if self.mode == Mode::Full {
            for &r in &self.facts.readers[key as usize][first as usize] {
                let r = self.id[r as usize];
                if r != target && r != u32::MAX {
                    sources.push(r);
                }
            }
        }
        target
    }
}

enum Check {
    Conflict,
    Fine,
}

struct Search<'a> {
    p: Problem<'a>,
    closure: Closure,
    /// Open pairs, and the choices made: (pair, a-first?).
    open: Vec<Pair>,
    chosen: Vec<(Pair, bool)>,
    /// Heuristic rank of each problem node: try the choice that follows it first.
    rank: Vec<u64>,
    snapshot_words: u64,
    /// The pair the last `propagate` that answered Conflict found with no possible order.
    conflict: Option<Pair>,
    /// Branching points `solve` visited (how much of a refutation the proof leaves out).
    nodes: u64,
}

impl Search<'_> {
    /// Applies every forced choice until none is left; Conflict if a pair has no choice.
    fn propagate(&mut self, meter: &mut Meter) -> Result<Check, OutOfBudget> {
        let mut sa = Vec::new();
        let mut sb = Vec::new();
        loop {
            let mut changed = false;
            let mut i = 0;
            while i < self.open.len() {
                let pair = self.open[i];
                let ta = self.p.alt(pair.key, pair.sa, pair.sb, &mut sa);
                let tb = self.p.alt(pair.key, pair.sb, pair.sa, &mut sb);
                meter.spend((sa.len() + sb.len()) as u64 + 1)?;
                let ok_a = !sa.iter().any(|&s| s == ta || self.closure.reaches(ta, s));
                let ok_b = !sb.iter().any(|&s| s == tb || self.closure.reaches(tb, s));
                // A choice the graph already implies costs nothing to make.
                let decided = if !ok_a && !ok_b {
                    self.conflict = Some(pair);
                    return Ok(Check::Conflict);
                } else if ok_a && sa.iter().all(|&s| self.closure.reaches(s, ta)) {
                    Some(true)
                } else if ok_b && sb.iter().all(|&s| self.closure.reaches(s, tb)) {
                    Some(false)
                } else if !ok_b {
                    self.closure.add_into(&sa, ta, meter)?;
                    Some(true)
                } else if !ok_a {
                    self.closure.add_into(&sb, tb, meter)?;
                    Some(false)
                } else {
                    None
                };
                match decided {
                    Some(a_first) => {
                        self.chosen.push((pair, a_first));
                        self.open.swap_remove(i);
                        changed = true;
                    }
                    None => i += 1,
                }
            }
            if !changed {
                return Ok(Check::Fine);
            }
        }
    }

    /// One descent without backtracking: propagate, make the preferred feasible choice of
    /// some open pair, repeat. True when every pair is chosen; false at a conflict (the state
    /// is then spoilt: dive on a copy).
    fn dive(&mut self, meter: &mut Meter) -> Result<bool, OutOfBudget> {
        let mut sources = Vec::new();
        loop {
            if let Check::Conflict = self.propagate(meter)? {
                return Ok(false);
            }
            let Some(pair) = self.open.pop() else {
                return Ok(true);
            };
            let (wa, wb) = (
                self.p.id[self.p.writer(pair.key, pair.sa) as usize],
                self.p.id[self.p.writer(pair.key, pair.sb) as usize],
            );
            let prefer_a = self.rank[wa as usize] <= self.rank[wb as usize];
            let mut placed = false;
            for a_first in [prefer_a, !prefer_a] {
                let target = if a_first {
                    self.p.alt(pair.key, pair.sa, pair.sb, &mut sources)
                } else {
                    self.p.alt(pair.key, pair.sb, pair.sa, &mut sources)
                };
                if !sources
                    .iter()
                    .any(|&s| s == target || self.closure.reaches(target, s))
                {
                    self.closure.add_into(&sources, target, meter)?;
                    self.chosen.push((pair, a_first));
                    placed = true;
                    break;
                }
            }
            if !placed {
                return Ok(false);
            }
        }
    }

    /// Backtracking: propagate, then branch on an open pair. True when every pair is chosen.
    fn solve(&mut self, meter: &mut Meter, depth: usize) -> Result<bool, OutOfBudget> {
        self.nodes += 1;
        if let Check::Conflict = self.propagate(meter)? {
            return Ok(false);
        }
        let Some(&pair) = self.open.last() else {
            return Ok(true);
        };
        let size = self.closure.bits.len() as u64;
        if self.snapshot_words + size > MAX_SNAPSHOT_WORDS || depth > 100_000 {
            return Err(OutOfBudget(
                "the exact search's backtracking grew past its memory bound".to_string(),
            ));
        }
        meter.spend(size)?;
        self.open.pop();
        let saved = (
            self.closure.bits.clone(),
            self.open.clone(),
            self.chosen.len(),
        );
        self.snapshot_words += size;
        let (wa, wb) = (
            self.p.id[self.p.writer(pair.key, pair.sa) as usize],
            self.p.id[self.p.writer(pair.key, pair.sb) as usize],
        );
        let a_first_first = self.rank[wa as usize] <= self.rank[wb as usize];
        let mut sources = Vec::new();
        for a_first in [a_first_first, !a_first_first] {
            let target = if a_first {
                self.p.alt(pair.key, pair.sa, pair.sb, &mut sources)
            } else {
                self.p.alt(pair.key, pair.sb, pair.sa, &mut sources)
            };
            if !sources
                .iter()
                .any(|&s| s == target || self.closure.reaches(target, s))
            {
                self.closure.add_into(&sources, target, meter)?;
                self.chosen.push((pair, a_first));
                if self.solve(meter, depth + 1)? {
                    self.snapshot_words -= size;
                    return Ok(true);
                }
                self.closure.bits.copy_from_slice(&saved.0);
                self.open.clone_from(&saved.1);
                self.chosen.truncate(saved.2);
            }
        }
        self.snapshot_words -= size;
        Ok(false)
    }
}

/// The graph the search starts from: known edges allowed by the mode, plus readers of the
/// initial state before every writer.
fn known_adj(n: usize, known: &[Edge], mode: Mode, facts: &Facts) -> Vec<Vec<u32>> {
    let mask = match mode {
        Mode::Full => WW | WR | RW | PROCESS | REALTIME,
        Mode::WwWr => WW | WR | PROCESS | REALTIME,
    };
    let mut adj: Vec<Vec<u32>> = vec![Vec::new(); n];
    for e in known {
        if e.kind & mask != 0 && e.from != e.to {
            adj[e.from as usize].push(e.to);
        }
    }
    if mode == Mode::Full {
        for (k, rs) in facts.nil_readers.iter().enumerate() {
            for &r in rs {
                for &(w, _) in &facts.writers[k] {
                    if w != r {
                        adj[r as usize].push(w);
                    }
                }
            }
        }
    }
    for out in &mut adj {
        out.sort_unstable();
        out.dedup();
    }
    adj
}

/// Sound edges the known graph implies, a few rounds: if P precedes R, R read version v of
/// key k, and P wrote k, then P's version precedes v (else R would have seen P's or a later
/// one), so P precedes v's writer W.
fn derive_edges(facts: &Facts, adj: &mut [Vec<u32>], meter: &mut Meter) {
    let n = adj.len();
    // Per node: the keys it writes finally; per reader: (key, writer of what it read).
    let mut writes_key: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut read_from: Vec<Vec<(u32, u32)>> = vec![Vec::new(); n];
    for (k, ws) in facts.writers.iter().enumerate() {
        for (s, &(w, _)) in ws.iter().enumerate() {
            writes_key[w as usize].push(k as u32);
            for &r in &facts.readers[k][s] {
                read_from[r as usize].push((k as u32, w));
            }
        }
    }
    for _round in 0..3 {
        let mut preds: Vec<Vec<u32>> = vec![Vec::new(); n];
        for (u, out) in adj.iter().enumerate() {
            for &v in out {
                if !read_from[v as usize].is_empty() {
                    preds[v as usize].push(u as u32);
                }
            }
        }
        let mut added = Vec::new();
        for (r, reads) in read_from.iter().enumerate() {
            if meter
                .spend((reads.len() * preds[r].len()) as u64 + 1)
                .is_err()
            {
                return;
            }
            for &(k, w) in reads {
                for &p in &preds[r] {
                    if p != w
                        && writes_key[p as usize].contains(&k)
                        && !adj[p as usize].contains(&w)
                    {
                        added.push((p, w));
                    }
                }
            }
        }
        if added.is_empty() {
            return;
        }
        for (p, w) in added {
            adj[p as usize].push(w);
        }
        for out in adj.iter_mut() {
            out.sort_unstable();
            out.dedup();
        }
    }
}

/// The edges "writers of each key in this order" adds: consecutive ww, and (Full) readers of
/// each version before the writer of the next.
fn version_edges(facts: &Facts, mode: Mode, orders: &[Vec<u32>], out: &mut Vec<ChosenEdge>) {
    for (k, order) in orders.iter().enumerate() {
        let ws = &facts.writers[k];
        for pair in order.windows(2) {
            let (a, b) = (pair[0] as usize, pair[1] as usize);
            out.push(ChosenEdge {
                from: ws[a].0,
                to: ws[b].0,
                kind: WW,
                key: k as u32,
                from_value: ws[a].1,
                to_value: ws[b].1,
            });
            if mode == Mode::Full {
                for &r in &facts.readers[k][a] {
                    if r != ws[b].0 {
                        out.push(ChosenEdge {
                            from: r,
                            to: ws[b].0,
                            kind: RW,
                            key: k as u32,
                            from_value: ws[a].1,
                            to_value: ws[b].1,
                        });
                    }
                }
            }
        }
    }
}

/// Per key, writer slots sorted by `rank` of their transaction.
fn orders_by_rank(facts: &Facts, rank: &[u64]) -> Vec<Vec<u32>> {
    facts
        .writers
        .iter()
        .map(|ws| {
            let mut o: Vec<u32> = (0..ws.len() as u32).collect();
            o.sort_by_key(|&s| (rank[ws[s as usize].0 as usize], s));
            o
        })
        .collect()
}

fn to_values(facts: &Facts, orders: &[Vec<u32>]) -> Vec<(u32, Vec<Elem>)> {
    orders
        .iter()
        .enumerate()
        .filter(|(_, o)| o.len() >= 2)
        .map(|(k, o)| {
            (
                k as u32,
                o.iter().map(|&s| facts.writers[k][s as usize].1).collect(),
            )
        })
        .collect()
}

/// Decides whether some version order of every key leaves the graph of `known` edges (over
/// `n` nodes: transactions, then any real-time chain nodes) free of the cycles `mode` forbids.
pub(crate) fn decide(
    log: &TxnLog,
    n: usize,
    known: &[Edge],
    mode: Mode,
    budget_steps: u64,
    deadline: Instant,
    guess_only: bool,
) -> ExactRun {
    let mut meter = Meter {
        steps: 0,
        budget: budget_steps,
        deadline,
        next_clock: 1 << 16,
    };
    let mut run = ExactRun {
        outcome: Outcome3::Incomplete(String::new()),
        steps: 0,
        open_pairs: 0,
        components: 0,
        largest_component: 0,
        by_witness_order: false,
    };
    let facts = facts(log);
    let mut adj = known_adj(n, known, mode, &facts);
    if mode == Mode::Full {
        // The reasoning needs one serial order: read committed has none (a read may see an
        // older version of one key than of another), so there it would invent G1c.
        derive_edges(&facts, &mut adj, &mut meter);
    }
    let txns = log.txns.len();
    let prio = |v: u32| -> u64 {
        if (v as usize) < txns {
            log.txns[v as usize].invoke_pos as u64
        } else {
            0
        }
    };
    // Stage 1: the witness order, repaired a few times: each failure's cycle names the
    // guessed version orders it ran through, and the next guess is told the opposite.
    let mut rank: Vec<u64> = (0..n as u32).map(prio).collect();
    let mut example = orders_by_rank(&facts, &rank);
    let mut hinted = adj.clone();
    let mut first_guess = true;
    let mut writer_of: FxHashMap<(u32, Elem), u32> = FxHashMap::default();
    for (k, ws) in facts.writers.iter().enumerate() {
        for &(w, v) in ws {
            writer_of.insert((k as u32, v), w);
        }
    }
    let edges_total: usize = adj.iter().map(|o| o.len()).sum();
    let simulate_cost = (n + edges_total) as u64 * 8;
    let mut current = simulate(n, &hinted, &facts, mode, prio);
    for _ in 0..REPAIRS {
        let Some(order) = current.take() else {
            break;
        };
        if meter.spend(simulate_cost).is_err() {
            break;
        }
        for (i, &v) in order.iter().enumerate() {
            rank[v as usize] = i as u64;
        }
        let guess = orders_by_rank(&facts, &rank);
        let mut extra = Vec::new();
        version_edges(&facts, mode, &guess, &mut extra);
        let mut full = adj.clone();
        for e in &extra {
            full[e.from as usize].push(e.to);
        }
        if let Some(serial) = topo(n, &full, |v| rank[v as usize]) {
            run.by_witness_order = true;
            run.steps = meter.steps;
            run.outcome = Outcome3::Witness {
                orders: to_values(&facts, &guess),
                serial: serial
                    .into_iter()
                    .filter(|&v| (v as usize) < txns)
                    .collect(),
            };
            return run;
        }
        if first_guess {
            // The order a failure is shown under.
            example = guess.clone();
            first_guess = false;
        }
        let chosen: FxHashMap<(u32, u32), ChosenEdge> =
            extra.iter().map(|e| ((e.from, e.to), *e)).collect();
        // Guessed edges on a cycle: the version `from` wrote (ww) or read (rw) came right
        // before the one `to` wrote. One of them is wrong: the next guess puts `to`'s write
        // before that version's writer. A batch first: one hint from each of up to
        // `HINTS_PER_ROUND` cycles (each cycle broken at its hinted edge to find the next);
        // if the batch leaves the hints cyclic, hints one at a time from the first cycle.
        let hint_of = |e: &ChosenEdge| -> Option<(u32, u32)> {
            let earlier = if e.kind == WW {
                Some(e.from)
            } else {
                writer_of.get(&(e.key, e.from_value)).copied()
            };
            earlier.filter(|&w| w != e.to).map(|w| (e.to, w))
        };
        let guessed_on = |cycle: &[u32]| -> Vec<(u32, u32, (u32, u32))> {
            (0..cycle.len())
                .filter_map(|i| {
                    let (u, v) = (cycle[i], cycle[(i + 1) % cycle.len()]);
                    let e = chosen
                        .get(&(u, v))
                        .filter(|_| !adj[u as usize].contains(&v))?;
                    Some((u, v, hint_of(e)?))
                })
                .collect()
        };
        let Some(first) = any_cycle(n, &full) else {
            break;
        };
        let first_hints = guessed_on(&first);
        let mut batch: Vec<(u32, u32)> = Vec::new();
        let mut cycle = Some(first);
        while let Some(c) = cycle.take() {
            if batch.len() >= HINTS_PER_ROUND || meter.spend(simulate_cost).is_err() {
                break;
            }
            let Some(&(u, v, hint)) = guessed_on(&c).first() else {
                break;
            };
            batch.push(hint);
            full[u as usize].retain(|&x| x != v);
            cycle = any_cycle(n, &full);
        }
        for &(to, w) in &batch {
            hinted[to as usize].push(w);
        }
        current = simulate(n, &hinted, &facts, mode, prio);
        if current.is_some() {
            continue;
        }
        for &(to, _) in batch.iter().rev() {
            hinted[to as usize].pop();
        }
        for &(_, _, (to, w)) in &first_hints {
            if meter.spend(simulate_cost).is_err() {
                break;
            }
            hinted[to as usize].push(w);
            current = simulate(n, &hinted, &facts, mode, prio);
            if current.is_some() {
                break;
            }
            hinted[to as usize].pop();
        }
    }
    if guess_only {
        run.steps = meter.steps;
        run.outcome = Outcome3::Incomplete("the guessed witness order failed".to_string());
        return run;
    }
    let result = exact(&facts, n, &adj, mode, &rank, &mut meter, &mut run);
    run.steps = meter.steps;
    run.outcome = match result {
        Err(OutOfBudget(why)) => Outcome3::Incomplete(why),
        Ok(Ok(choices)) => {
            // Every pair chosen: the version orders follow from the final graph's order.
            let mut full = adj.clone();
            for (pair, a_first) in choices {
                let (x, y) = if a_first {
                    (pair.sa, pair.sb)
                } else {
                    (pair.sb, pair.sa)
                };
                let ws = &facts.writers[pair.key as usize];
                full[ws[x as usize].0 as usize].push(ws[y as usize].0);
                if mode == Mode::Full {
                    for &r in &facts.readers[pair.key as usize][x as usize] {
                        if r != ws[y as usize].0 {
                            full[r as usize].push(ws[y as usize].0);
                        }
                    }
                }
            }
            match topo(n, &full, |v| rank[v as usize]) {
                Some(serial) => {
                    let mut pos = vec![0u64; n];
                    for (i, &v) in serial.iter().enumerate() {
                        pos[v as usize] = i as u64;
                    }
                    Outcome3::Witness {
                        orders: to_values(&facts, &orders_by_rank(&facts, &pos)),
                        serial: serial
                            .into_iter()
                            .filter(|&v| (v as usize) < txns)
                            .collect(),
                    }
                }
                None => Outcome3::Incomplete(
                    "internal error: the exact search's choices left a cycle".to_string(),
                ),
            }
        }
        Ok(Err(failure)) => {
            // No order: a proof from the search's own steps; only if that fails, the cycle
            // under the example order (stage 1's guess), which is no proof.
            let proof = prove(
                &facts,
                n,
                &adj,
                known,
                mode,
                txns,
                &rank,
                failure,
                MAX_PROOF_SPLITS,
            );
            let (cycle, example) = if proof.is_some() {
                (Vec::new(), Vec::new())
            } else {
                let mut extra = Vec::new();
                version_edges(&facts, mode, &example, &mut extra);
                (
                    example_cycle(n, &adj, known, mode, &extra, txns),
                    to_values(&facts, &example),
                )
            };
            Outcome3::NoOrder {
                cycle,
                example,
                component: run.largest_component,
                proof,
            }
        }
    };
    run
}

/// Why stages 2 and 3 found no order: what a proof of it starts from.
enum Failure {
    /// The known graph alone is cyclic.
    KnownCycle,
    /// Propagation from the known graph made these choices, in order, and then found a pair
    /// with neither order possible.
    Root {
        decided: Vec<(Pair, bool)>,
        conflict: Pair,
    },
    /// Propagation made these choices and left this component's open pairs, which the search
    /// refuted in `nodes` branching points.
    Component {
        decided: Vec<(Pair, bool)>,
        comp: Vec<u32>,
        open: Vec<Pair>,
        nodes: u64,
    },
}

/// A strongly connected component as a graph of its own: each global node's local index
/// (`u32::MAX` outside `comp`), and the edges `out` gives that stay inside it, renumbered.
fn component_graph<I: Iterator<Item = u32>>(
    n: usize,
    comp: &[u32],
    out: impl Fn(u32) -> I,
) -> (Vec<u32>, Vec<Vec<u32>>) {
    let mut id = vec![u32::MAX; n];
    for (li, &v) in comp.iter().enumerate() {
        id[v as usize] = li as u32;
    }
    let local_adj = comp
        .iter()
        .map(|&v| {
            out(v)
                .filter_map(|t| (id[t as usize] != u32::MAX).then_some(id[t as usize]))
                .collect()
        })
        .collect();
    (id, local_adj)
}

/// Stages 2 and 3: Ok(Ok(choices)) if every pair can be chosen, Ok(Err(why)) if not.
fn exact(
    facts: &Facts,
    n: usize,
    adj: &[Vec<u32>],
    mode: Mode,
    rank: &[u64],
    meter: &mut Meter,
    run: &mut ExactRun,
) -> Result<Result<Vec<(Pair, bool)>, Failure>, OutOfBudget> {
    if n > MAX_EXACT_NODES {
        return Err(OutOfBudget(format!(
            "the witness order failed and the history has {n} nodes, more than the exact \
             search's {MAX_EXACT_NODES}"
        )));
    }
    let mut pairs = Vec::new();
    for (k, ws) in facts.writers.iter().enumerate() {
        if pairs.len() + ws.len() * ws.len() / 2 > MAX_PAIRS {
            return Err(OutOfBudget(format!(
                "more than {MAX_PAIRS} pairs of writes to order"
            )));
        }
        for a in 0..ws.len() as u32 {
            for b in a + 1..ws.len() as u32 {
                pairs.push(Pair {
                    key: k as u32,
                    sa: a,
                    sb: b,
                });
            }
        }
    }
    meter.spend(pairs.len() as u64)?;
    let Some(closure) = Closure::of(n, adj, meter)? else {
        // The known graph itself is cyclic: no order can help.
        run.largest_component = n;
        return Ok(Err(Failure::KnownCycle));
    };
    let mut global = Search {
        p: Problem {
            facts,
            mode,
            id: (0..n as u32).collect(),
        },
        closure,
        open: pairs,
        chosen: Vec::new(),
        rank: rank.to_vec(),
        snapshot_words: 0,
        conflict: None,
        nodes: 0,
    };
    if let Check::Conflict = global.propagate(meter)? {
        run.largest_component = n;
        let conflict = global.conflict.expect("a conflict names its pair");
        return Ok(Err(Failure::Root {
            decided: global.chosen,
            conflict,
        }));
    }
    run.open_pairs = global.open.len();
    if global.open.is_empty() {
        return Ok(Ok(global.chosen));
    }
    let mut choices = std::mem::take(&mut global.chosen);
    // Components of known + forced + both choices of every open pair.
    let mut g: DiGraph<(), (), u32> = DiGraph::with_capacity(n, 0);
    for _ in 0..n {
        g.add_node(());
    }
    let mut sources = Vec::new();
    let add = |g: &mut DiGraph<(), (), u32>, from: u32, to: u32| {
        g.add_edge(
            NodeIndex::new(from as usize),
            NodeIndex::new(to as usize),
            (),
        );
    };
    for (u, out) in adj.iter().enumerate() {
        for &v in out {
            add(&mut g, u as u32, v);
        }
    }
    let p = &global.p;
    for &(pair, a_first) in &choices {
        let t = if a_first {
            p.alt(pair.key, pair.sa, pair.sb, &mut sources)
        } else {
            p.alt(pair.key, pair.sb, pair.sa, &mut sources)
        };
        for &s in &sources {
            add(&mut g, s, t);
        }
    }
    for &pair in &global.open {
        for (x, y) in [(pair.sa, pair.sb), (pair.sb, pair.sa)] {
            let t = p.alt(pair.key, x, y, &mut sources);
            for &s in &sources {
                add(&mut g, s, t);
            }
        }
    }
    meter.spend(g.edge_count() as u64)?;
    let mut comp_of = vec![u32::MAX; n];
    let comps: Vec<Vec<u32>> = kosaraju_scc(&g)
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|c| c.into_iter().map(|v| v.index() as u32).collect())
        .collect();
    drop(g);
    for (ci, c) in comps.iter().enumerate() {
        for &v in c {
            comp_of[v as usize] = ci as u32;
        }
    }
    let mut by_comp: Vec<Vec<Pair>> = vec![Vec::new(); comps.len()];
    for &pair in &global.open {
        let a = p.writer(pair.key, pair.sa);
        by_comp[comp_of[a as usize] as usize].push(pair);
    }
    // Known and forced edges, for the components' own closures.
    let mut base: Vec<Vec<u32>> = adj.to_vec();
    for &(pair, a_first) in &choices {
        let t = if a_first {
            p.alt(pair.key, pair.sa, pair.sb, &mut sources)
        } else {
            p.alt(pair.key, pair.sb, pair.sa, &mut sources)
        };
        for &s in &sources {
            base[s as usize].push(t);
        }
    }
    // Smallest first: a component with no order is found the soonest.
    let mut order: Vec<usize> = (0..comps.len())
        .filter(|&c| !by_comp[c].is_empty())
        .collect();
    order.sort_by_key(|&c| comps[c].len());
    for ci in order {
        let comp = &comps[ci];
        run.components += 1;
        run.largest_component = run.largest_component.max(comp.len());
        let (id, local_adj) = component_graph(n, comp, |v| base[v as usize].iter().copied());
        let Some(closure) = Closure::of(comp.len(), &local_adj, meter)? else {
            // Known and forced edges are acyclic (the global closure holds them): unreachable,
            // but a failure, never a witness.
            return Ok(Err(Failure::Component {
                decided: choices,
                comp: comp.clone(),
                open: std::mem::take(&mut by_comp[ci]),
                nodes: 0,
            }));
        };
        let mut search = Search {
            p: Problem { facts, mode, id },
            closure,
            open: std::mem::take(&mut by_comp[ci]),
            chosen: Vec::new(),
            rank: comp.iter().map(|&v| rank[v as usize]).collect(),
            snapshot_words: 0,
            conflict: None,
            nodes: 0,
        };
        // A descent without backtracking on a copy usually finds a witness of a valid
        // history. It runs per component, not on the whole graph: after each choice it
        // propagates over the open pairs, so its cost grows with their number squared.
        let mut diver = Search {
            p: Problem {
                facts,
                mode,
                id: search.p.id.clone(),
            },
            closure: search.closure.clone(),
            open: search.open.clone(),
            chosen: Vec::new(),
            rank: search.rank.clone(),
            snapshot_words: 0,
            conflict: None,
            nodes: 0,
        };
        meter.spend(search.closure.bits.len() as u64)?;
        if diver.dive(meter)? {
            choices.extend(diver.chosen);
            continue;
        }
        drop(diver);
        // Kept for a proof, should the search find none (only descents that failed pay).
        let open = search.open.clone();
        if !search.solve(meter, 0)? {
            run.largest_component = comp.len();
            return Ok(Err(Failure::Component {
                decided: choices,
                comp: comp.clone(),
                open,
                nodes: search.nodes,
            }));
        }
        choices.extend(search.chosen);
    }
    Ok(Ok(choices))
}

/// A shortest cycle (by BFS from each node) in the known graph plus `extra`, mapped to
/// transactions: real-time chain nodes are folded into the real-time step that passes them.
fn example_cycle(
    n: usize,
    adj: &[Vec<u32>],
    known: &[Edge],
    mode: Mode,
    extra: &[ChosenEdge],
    txns: usize,
) -> Vec<(u32, Result<ChosenEdge, u8>)> {
    // Edge labels: the known kind wins over a chosen edge between the same pair.
    let mut label: FxHashMap<(u32, u32), Result<ChosenEdge, u8>> = FxHashMap::default();
    for e in extra {
        label.entry((e.from, e.to)).or_insert(Ok(*e));
    }
    let mask = match mode {
        Mode::Full => WW | WR | RW | PROCESS | REALTIME,
        Mode::WwWr => WW | WR | PROCESS | REALTIME,
    };
    for e in known {
        if e.kind & mask != 0 {
            // Prefer the data kinds in the order Elle names them.
            let better = match label.get(&(e.from, e.to)) {
                Some(Err(k)) => e.kind < *k,
                _ => true,
            };
            if better {
                label.insert((e.from, e.to), Err(e.kind));
            }
        }
    }
    // Readers of nil before every writer: an rw edge the inference also lists.
    let mut full: Vec<Vec<u32>> = adj.to_vec();
    for e in extra {
        full[e.from as usize].push(e.to);
    }
    // Any cycle first (linear), then the shortest cycle through one of its transactions.
    let starts: Vec<u32> = any_cycle(n, &full)
        .unwrap_or_default()
        .into_iter()
        .filter(|&v| (v as usize) < txns)
        .take(64)
        .collect();
    let mut best: Option<Vec<u32>> = None;
    let mut parent = vec![u32::MAX; n];
    for start in starts {
        parent.iter_mut().for_each(|p| *p = u32::MAX);
        let mut queue = std::collections::VecDeque::from([start]);
        let mut closing = None;
        'bfs: while let Some(u) = queue.pop_front() {
            for &v in &full[u as usize] {
                if v == start {
                    closing = Some(u);
                    break 'bfs;
                }
                if parent[v as usize] == u32::MAX {
                    parent[v as usize] = u;
                    queue.push_back(v);
                }
            }
        }
        if let Some(mut u) = closing {
            let mut path = vec![u];
            while u != start {
                u = parent[u as usize];
                path.push(u);
            }
            path.reverse();
            if best.as_ref().is_none_or(|b| path.len() < b.len()) {
                best = Some(path);
            }
        }
    }
    let Some(path) = best else {
        return Vec::new();
    };
    let mut out: Vec<(u32, Result<ChosenEdge, u8>)> = Vec::new();
    for (i, &u) in path.iter().enumerate() {
        let v = path[(i + 1) % path.len()];
        let l = label.get(&(u, v)).copied().unwrap_or(Err(RW));
        if (u as usize) < txns {
            out.push((u, l));
        } else if let Some(last) = out.last_mut() {
            // A chain node: the step into it was real time; it stays real time.
            last.1 = Err(REALTIME);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Proofs that no order exists.
//
// The search decides pairs in a sequence: propagation forces a pair when one of its orders
// would close a cycle with what is known and what was decided before; a case split supposes
// one order and, if that fails, the other. Replaying that sequence, every forced order is a
// lemma (the other order closes this cycle, built from known edges and earlier orders), and
// the end is a pair both of whose orders close a cycle, or a case split whose cases each end
// so. The cycles are shortest paths (known edges preferred) in the graph of known edges plus
// the orders decided before, so each rests only on facts, suppositions and earlier lemmas.

/// Case splits a proof shows before it says how many further choices it leaves out.
const MAX_PROOF_SPLITS: usize = 7;
/// Forced orders a proof justifies; past this, an order is marked forced without its reason.
const MAX_PROOF_LEMMAS: usize = 48;
/// Work (edges relaxed, closure words) the proof may spend, and its time: it runs only for
/// histories the search already proved invalid.
const PROOF_BUDGET_STEPS: u64 = 500_000_000;
const PROOF_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// One edge of a cycle in a proof, and why it holds.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ProofEdge {
    /// From the history (inference, initial-state reads, process or real-time order).
    Known(u8),
    /// From wrote `key` and precedes `via` (by a known edge), which read the version of
    /// `key` that `to` wrote (`value`): from's version must come before it.
    Derived {
        via: u32,
        via_kind: u8,
        key: u32,
        value: Elem,
    },
    /// The order this cycle refutes.
    Supposed(ChosenEdge),
    /// The order the enclosing case supposes.
    Case(ChosenEdge),
    /// An order forced before: the lemma (index into `Proof::lemmas`) saying why, or None
    /// when the proof's bound left it out.
    Forced(ChosenEdge, Option<usize>),
}

/// A cycle: transactions in order, each with the edge into the next (the last into the first).
pub(crate) type ProofCycle = Vec<(u32, ProofEdge)>;

/// "Key `key`'s version `first.1` (written by `first.0`) precedes `second.1`".
#[derive(Clone, Copy, Debug)]
pub(crate) struct Versions {
    pub key: u32,
    pub first: (u32, Elem),
    pub second: (u32, Elem),
}

/// A forced order and the cycle its opposite closes; `scope` is the case it holds in (0:
/// unconditionally).
pub(crate) struct Lemma {
    pub order: Versions,
    pub other: ProofCycle,
    pub scope: usize,
}

pub(crate) enum ProofNode {
    /// Known edges alone form this cycle.
    Cycle(ProofCycle),
    /// Both orders of `pair` close a cycle: `cycles[0]` supposes `pair` as given, `cycles[1]`
    /// the opposite.
    Conflict {
        pair: Versions,
        cycles: Box<[ProofCycle; 2]>,
    },
    /// Neither order of `pair` was forced: each case (scope id, refutation), `pair` as given
    /// first.
    Split {
        pair: Versions,
        cases: Box<[(usize, ProofNode); 2]>,
    },
    /// A case the proof does not refute in full: the search needed this many further choices.
    Cut { choices: u64 },
}

pub(crate) struct Proof {
    pub root: ProofNode,
    pub lemmas: Vec<Lemma>,
    /// Whether every step is shown: no case cut short, no forced order without its reason.
    pub complete: bool,
    /// What is left out, and why.
    pub notes: Vec<String>,
    /// Branching points the search itself needed (0 when propagation alone refuted).
    pub search_nodes: u64,
}

#[derive(Clone, Copy)]
enum Hop {
    Known,
    Decision(u32),
    Supposed(ChosenEdge),
}

#[derive(Clone, Copy)]
struct Decision {
    pair: Pair,
    a_first: bool,
    case: bool,
    scope: usize,
    /// `Prover::dlog`'s length before this decision's edges.
    edges_at: usize,
}

struct Prover<'a> {
    facts: &'a Facts,
    mode: Mode,
    txns: usize,
    adj: &'a [Vec<u32>],
    /// Kinds of the known edges (the lowest kind between a pair).
    labels: FxHashMap<(u32, u32), u8>,
    /// Per node: its external reads (key, writer slot), and the keys it writes.
    read_from: Vec<Vec<(u32, u32)>>,
    writes_key: Vec<Vec<u32>>,
    /// Per node: (to, decision position) of the decided orders' edges; `dlog` the source of
    /// each, in the order pushed (to pop them on backtracking).
    dadj: Vec<Vec<(u32, u32)>>,
    dlog: Vec<u32>,
    decisions: Vec<Decision>,
    /// Per decision: its lemma, once built (Some(None): left out).
    lemma_of: Vec<Option<Option<usize>>>,
    lemmas: Vec<Lemma>,
    building: usize,
    next_scope: usize,
    complete: bool,
    notes: Vec<String>,
}

impl Prover<'_> {
    fn slots(pair: Pair, a_first: bool) -> (u32, u32) {
        if a_first {
            (pair.sa, pair.sb)
        } else {
            (pair.sb, pair.sa)
        }
    }

    fn versions(&self, pair: Pair, a_first: bool) -> Versions {
        let (f, s) = Self::slots(pair, a_first);
        let ws = &self.facts.writers[pair.key as usize];
        Versions {
            key: pair.key,
            first: ws[f as usize],
            second: ws[s as usize],
        }
    }

    /// The edges "this order" adds, in global ids: the ww edge first.
    fn order_edges(&self, pair: Pair, a_first: bool) -> Vec<ChosenEdge> {
        let (f, s) = Self::slots(pair, a_first);
        let ws = &self.facts.writers[pair.key as usize];
        let (target, to_value) = ws[s as usize];
        let (writer, from_value) = ws[f as usize];
        let edge = |from: u32, kind: u8| ChosenEdge {
            from,
            to: target,
            kind,
            key: pair.key,
            from_value,
            to_value,
        };
        let mut out = vec![edge(writer, WW)];
        if self.mode == Mode::Full {
            for &r in &self.facts.readers[pair.key as usize][f as usize] {
                if r != target {
                    out.push(edge(r, RW));
                }
            }
        }
        out
    }

    fn push(&mut self, pair: Pair, a_first: bool, case: bool, scope: usize) {
        let pos = self.decisions.len() as u32;
        let edges_at = self.dlog.len();
        for e in self.order_edges(pair, a_first) {
            self.dadj[e.from as usize].push((e.to, pos));
            self.dlog.push(e.from);
        }
        self.decisions.push(Decision {
            pair,
            a_first,
            case,
            scope,
            edges_at,
        });
        self.lemma_of.push(None);
    }

    fn truncate(&mut self, len: usize) {
        while self.decisions.len() > len {
            let d = self.decisions.pop().expect("longer than len");
            self.lemma_of.pop();
            while self.dlog.len() > d.edges_at {
                let u = self.dlog.pop().expect("longer than edges_at");
                self.dadj[u as usize].pop();
            }
        }
    }

    /// A cheapest path from `start` to one of `goals` over known edges and the decisions
    /// before position `limit`: nodes from start to the goal, each with the hop to the next.
    /// Known edges cost least, derived ones most, so a proof leans on the history first.
    fn path(
        &self,
        start: u32,
        goals: &[u32],
        limit: usize,
        meter: &mut Meter,
    ) -> Result<Option<Vec<(u32, Hop)>>, OutOfBudget> {
        let n = self.adj.len();
        let mut dist = vec![u32::MAX; n];
        let mut prev: Vec<(u32, Hop)> = vec![(u32::MAX, Hop::Known); n];
        let mut goal = vec![false; n];
        for &g in goals {
            goal[g as usize] = true;
        }
        meter.spend(n as u64)?;
        let mut heap = BinaryHeap::new();
        dist[start as usize] = 0;
        heap.push(std::cmp::Reverse((0u32, start)));
        while let Some(std::cmp::Reverse((d, u))) = heap.pop() {
            if d > dist[u as usize] {
                continue;
            }
            if goal[u as usize] {
                let mut path = vec![(u, Hop::Known)];
                let mut x = u;
                while x != start {
                    let (p, hop) = prev[x as usize];
                    path.push((p, hop));
                    x = p;
                }
                path.reverse();
                return Ok(Some(path));
            }
            let known = &self.adj[u as usize];
            let decided = &self.dadj[u as usize];
            meter.spend((known.len() + decided.len()) as u64 + 1)?;
            let steps = known
                .iter()
                .map(|&v| {
                    let w = if self.labels.contains_key(&(u, v)) {
                        2
                    } else {
                        6
                    };
                    (v, w, Hop::Known)
                })
                .chain(
                    decided
                        .iter()
                        .filter(|&&(_, pos)| (pos as usize) < limit)
                        .map(|&(v, pos)| (v, 3, Hop::Decision(pos))),
                );
            for (v, w, hop) in steps {
                let nd = d + w;
                if nd < dist[v as usize] {
                    dist[v as usize] = nd;
                    prev[v as usize] = (u, hop);
                    heap.push(std::cmp::Reverse((nd, v)));
                }
            }
        }
        Ok(None)
    }

    /// Why the known edge u -> v holds.
    fn known_edge(&self, u: u32, v: u32) -> ProofEdge {
        if let Some(&k) = self.labels.get(&(u, v)) {
            return ProofEdge::Known(k);
        }
        if (u as usize) >= self.txns || (v as usize) >= self.txns {
            return ProofEdge::Known(REALTIME);
        }
        // Derived (derive_edges): u wrote k and precedes r, which read v's version of k.
        for &r in &self.adj[u as usize] {
            for &(k, s) in self.read_from.get(r as usize).map_or(&[][..], |x| x) {
                let (w, value) = self.facts.writers[k as usize][s as usize];
                if w == v && self.writes_key[u as usize].contains(&k) {
                    return ProofEdge::Derived {
                        via: r,
                        // u8::MAX: u -> r is itself derived.
                        via_kind: self.labels.get(&(u, r)).copied().unwrap_or(u8::MAX),
                        key: k,
                        value,
                    };
                }
            }
        }
        ProofEdge::Known(RW)
    }

    /// A path's steps as proof edges, chain nodes folded into real-time steps.
    fn cycle_of(
        &mut self,
        nodes: &[(u32, Hop)],
        meter: &mut Meter,
    ) -> Result<ProofCycle, OutOfBudget> {
        let mut out: ProofCycle = Vec::new();
        for i in 0..nodes.len() {
            let (u, hop) = nodes[i];
            let v = nodes[(i + 1) % nodes.len()].0;
            let edge = self.hop_edge(u, v, hop, meter)?;
            if (u as usize) < self.txns {
                out.push((u, edge));
            } else if let Some(last) = out.last_mut() {
                last.1 = ProofEdge::Known(REALTIME);
            }
        }
        Ok(out)
    }

    /// The cycle "this order of the pair" closes with the decisions before `limit`.
    fn cycle_for(
        &mut self,
        pair: Pair,
        a_first: bool,
        limit: usize,
        meter: &mut Meter,
    ) -> Result<Option<ProofCycle>, OutOfBudget> {
        let edges = self.order_edges(pair, a_first);
        let target = edges[0].to;
        let sources: Vec<u32> = edges.iter().map(|e| e.from).collect();
        let Some(path) = self.path(target, &sources, limit, meter)? else {
            return Ok(None);
        };
        // The cycle: the goal (a source), the supposed edge into the target, the path back.
        let goal = path.last().expect("a path has a goal").0;
        let supposed = *edges.iter().find(|e| e.from == goal).expect("a source");
        let mut nodes = vec![(goal, Hop::Supposed(supposed))];
        nodes.extend_from_slice(&path[..path.len() - 1]);
        Ok(Some(self.cycle_of(&nodes, meter)?))
    }

    fn hop_edge(
        &mut self,
        u: u32,
        v: u32,
        hop: Hop,
        meter: &mut Meter,
    ) -> Result<ProofEdge, OutOfBudget> {
        Ok(match hop {
            Hop::Known => self.known_edge(u, v),
            Hop::Supposed(e) => ProofEdge::Supposed(e),
            Hop::Decision(pos) => {
                let d = self.decisions[pos as usize];
                let e = self
                    .order_edges(d.pair, d.a_first)
                    .into_iter()
                    .find(|e| e.from == u && e.to == v)
                    .expect("a decision's edge");
                if d.case {
                    ProofEdge::Case(e)
                } else {
                    ProofEdge::Forced(e, self.lemma(pos as usize, meter)?)
                }
            }
        })
    }

    /// The lemma for the forced decision at `pos`: its opposite closes a cycle with the
    /// decisions before it.
    fn lemma(&mut self, pos: usize, meter: &mut Meter) -> Result<Option<usize>, OutOfBudget> {
        if let Some(done) = self.lemma_of[pos] {
            return Ok(done);
        }
        if self.lemmas.len() + self.building >= MAX_PROOF_LEMMAS {
            if self.complete {
                self.notes.push(format!(
                    "only {MAX_PROOF_LEMMAS} forced orders are justified; the others are \
                     marked forced without their reason"
                ));
            }
            self.complete = false;
            self.lemma_of[pos] = Some(None);
            return Ok(None);
        }
        let d = self.decisions[pos];
        self.building += 1;
        let other = self.cycle_for(d.pair, !d.a_first, pos, meter);
        self.building -= 1;
        let done = match other? {
            Some(other) => {
                self.lemmas.push(Lemma {
                    order: self.versions(d.pair, d.a_first),
                    other,
                    scope: d.scope,
                });
                Some(self.lemmas.len() - 1)
            }
            None => {
                self.complete = false;
                self.notes
                    .push("internal: a forced order's reason was not found".to_string());
                None
            }
        };
        self.lemma_of[pos] = Some(done);
        Ok(done)
    }

    fn conflict(&mut self, pair: Pair, meter: &mut Meter) -> Result<ProofNode, OutOfBudget> {
        let limit = self.decisions.len();
        let a = self.cycle_for(pair, true, limit, meter)?;
        let b = self.cycle_for(pair, false, limit, meter)?;
        match (a, b) {
            (Some(a), Some(b)) => Ok(ProofNode::Conflict {
                pair: self.versions(pair, true),
                cycles: Box::new([a, b]),
            }),
            _ => {
                self.complete = false;
                self.notes
                    .push("internal: a conflicting pair's cycles were not found".to_string());
                Ok(ProofNode::Cut { choices: 0 })
            }
        }
    }

    /// Refutes a component's search state as the search does (propagate, then split on a
    /// pair), recording each step; past `splits_left` splits, counts what is left out.
    fn refute(
        &mut self,
        search: &mut Search,
        meter: &mut Meter,
        splits_left: &mut usize,
        scope: usize,
    ) -> Result<ProofNode, OutOfBudget> {
        let mark = search.chosen.len();
        let check = search.propagate(meter)?;
        for i in mark..search.chosen.len() {
            let (pair, a_first) = search.chosen[i];
            self.push(pair, a_first, false, scope);
        }
        if let Check::Conflict = check {
            let pair = search.conflict.expect("a conflict names its pair");
            return self.conflict(pair, meter);
        }
        let Some(pair) = search.open.pop() else {
            self.complete = false;
            self.notes
                .push("internal: the replayed search found an order".to_string());
            return Ok(ProofNode::Cut { choices: 0 });
        };
        let saved = (
            search.closure.bits.clone(),
            search.open.clone(),
            search.chosen.len(),
        );
        meter.spend(saved.0.len() as u64)?;
        if *splits_left == 0 {
            search.open.push(pair);
            let before = search.nodes;
            let found = search.solve(meter, 0)?;
            let choices = search.nodes - before;
            search.closure.bits.copy_from_slice(&saved.0);
            search.open.clone_from(&saved.1);
            search.chosen.truncate(saved.2);
            if self.complete {
                self.notes.push(
                    "only the first case splits are shown; the cases cut short say how many \
                     further choices the search needed in them"
                        .to_string(),
                );
            }
            if found {
                self.notes
                    .push("internal: the replayed search found an order".to_string());
            }
            self.complete = false;
            return Ok(ProofNode::Cut { choices });
        }
        *splits_left -= 1;
        let decided = self.decisions.len();
        let mut sources = Vec::new();
        let mut cases = Vec::with_capacity(2);
        for a_first in [true, false] {
            self.next_scope += 1;
            let case_scope = self.next_scope;
            let (f, s) = Self::slots(pair, a_first);
            let target = search.p.alt(pair.key, f, s, &mut sources);
            let node = if sources
                .iter()
                .any(|&x| x == target || search.closure.reaches(target, x))
            {
                // Propagation would have forced the pair: not reached, but a cycle anyway.
                self.push(pair, !a_first, false, scope);
                let c = self.cycle_for(pair, a_first, self.decisions.len() - 1, meter)?;
                self.truncate(decided);
                match c {
                    // Shown inside the case: the order it supposes is the case's.
                    Some(mut c) => {
                        for (_, edge) in &mut c {
                            if let ProofEdge::Supposed(e) = *edge {
                                *edge = ProofEdge::Case(e);
                            }
                        }
                        ProofNode::Cycle(c)
                    }
                    None => ProofNode::Cut { choices: 0 },
                }
            } else {
                search.closure.add_into(&sources, target, meter)?;
                search.chosen.push((pair, a_first));
                self.push(pair, a_first, true, case_scope);
                let node = self.refute(search, meter, splits_left, case_scope)?;
                search.closure.bits.copy_from_slice(&saved.0);
                search.open.clone_from(&saved.1);
                search.chosen.truncate(saved.2);
                self.truncate(decided);
                node
            };
            cases.push((case_scope, node));
        }
        let second = cases.pop().expect("two cases");
        let first = cases.pop().expect("two cases");
        Ok(ProofNode::Split {
            pair: self.versions(pair, true),
            cases: Box::new([first, second]),
        })
    }
}

/// A proof that no order exists, replaying the search from `failure`; None past its bounds.
#[allow(clippy::too_many_arguments)]
fn prove(
    facts: &Facts,
    n: usize,
    adj: &[Vec<u32>],
    known: &[Edge],
    mode: Mode,
    txns: usize,
    rank: &[u64],
    failure: Failure,
    max_splits: usize,
) -> Option<Proof> {
    let mut meter = Meter {
        steps: 0,
        budget: PROOF_BUDGET_STEPS,
        deadline: Instant::now() + PROOF_TIME,
        next_clock: 1 << 16,
    };
    let mask = match mode {
        Mode::Full => WW | WR | RW | PROCESS | REALTIME,
        Mode::WwWr => WW | WR | PROCESS | REALTIME,
    };
    let mut labels: FxHashMap<(u32, u32), u8> = FxHashMap::default();
    for e in known {
        if e.kind & mask != 0 && e.from != e.to {
            let l = labels.entry((e.from, e.to)).or_insert(e.kind);
            *l = (*l).min(e.kind);
        }
    }
    let mut read_from: Vec<Vec<(u32, u32)>> = vec![Vec::new(); n];
    let mut writes_key: Vec<Vec<u32>> = vec![Vec::new(); n];
    for (k, ws) in facts.writers.iter().enumerate() {
        for (s, &(w, _)) in ws.iter().enumerate() {
            writes_key[w as usize].push(k as u32);
            for &r in &facts.readers[k][s] {
                read_from[r as usize].push((k as u32, s as u32));
            }
        }
        if mode == Mode::Full {
            // Readers of the initial state precede every writer (known_adj's rw edges).
            for &r in &facts.nil_readers[k] {
                for &(w, _) in ws {
                    labels.entry((r, w)).or_insert(RW);
                }
            }
        }
    }
    let mut p = Prover {
        facts,
        mode,
        txns,
        adj,
        labels,
        read_from,
        writes_key,
        dadj: vec![Vec::new(); n],
        dlog: Vec::new(),
        decisions: Vec::new(),
        lemma_of: Vec::new(),
        lemmas: Vec::new(),
        building: 0,
        next_scope: 0,
        complete: true,
        notes: Vec::new(),
    };
    let mut search_nodes = 0;
    let root = (|| -> Result<ProofNode, OutOfBudget> {
        match failure {
            Failure::KnownCycle => {
                let cycle = any_cycle(n, adj).unwrap_or_default();
                let Some(i) = cycle.iter().position(|&v| (v as usize) < txns) else {
                    return Ok(ProofNode::Cut { choices: 0 });
                };
                let (u, v) = (cycle[i], cycle[(i + 1) % cycle.len()]);
                // The shortest way back from u's successor on the cycle.
                let Some(mut path) = p.path(v, &[u], 0, &mut meter)? else {
                    return Ok(ProofNode::Cut { choices: 0 });
                };
                path.pop();
                let mut nodes = vec![(u, Hop::Known)];
                nodes.extend(path);
                Ok(ProofNode::Cycle(p.cycle_of(&nodes, &mut meter)?))
            }
            Failure::Root { decided, conflict } => {
                for (pair, a_first) in decided {
                    p.push(pair, a_first, false, 0);
                }
                p.conflict(conflict, &mut meter)
            }
            Failure::Component {
                decided,
                comp,
                open,
                nodes,
            } => {
                search_nodes = nodes;
                for (pair, a_first) in decided {
                    p.push(pair, a_first, false, 0);
                }
                let (id, local_adj) = component_graph(n, &comp, |v| {
                    adj[v as usize]
                        .iter()
                        .copied()
                        .chain(p.dadj[v as usize].iter().map(|&(t, _)| t))
                });
                let Some(closure) = Closure::of(comp.len(), &local_adj, &mut meter)? else {
                    return Ok(ProofNode::Cut { choices: 0 });
                };
                let mut search = Search {
                    p: Problem { facts, mode, id },
                    closure,
                    open,
                    chosen: Vec::new(),
                    rank: comp.iter().map(|&v| rank[v as usize]).collect(),
                    snapshot_words: 0,
                    conflict: None,
                    nodes: 0,
                };
                let mut splits_left = max_splits;
                p.refute(&mut search, &mut meter, &mut splits_left, 0)
            }
        }
    })()
    .ok()?;
    if let ProofNode::Cut { choices: 0 } = root {
        return None;
    }
    Some(Proof {
        root,
        lemmas: p.lemmas,
        complete: p.complete,
        notes: p.notes,
        search_nodes,
    })
}

/// What `settle` decided.
pub(crate) struct Settled {
    pub decided_by: DecidedBy,
    pub report: ExactReport,
}

/// The exact stage for rw-register, run when inference finds nothing `opts.consistency`
/// forbids. Serializability and repeatable read (which, on this item-level graph, forbids
/// every cycle) search ww, wr and rw cycles; strict serializability with process and real-time
/// edges too; read committed only ww and wr cycles. Snapshot isolation is decided valid by a
/// serializable witness and invalid by an unavoidable G1c; in between it stays unknown.
/// A proof adds a `cycle-unavoidable[-realtime]` or `G1c-unavoidable` anomaly with the cycle
/// under one order.
pub(crate) fn settle(
    log: &TxnLog,
    index: &Index,
    data: &[Edge],
    opts: &TxnOptions,
    found: &mut Found,
    notes: &mut Vec<String>,
) -> Settled {
    let deadline = Instant::now() + opts.time_budget;
    let mut report = ExactReport {
        budget_steps: opts.exact_budget_steps,
        ..ExactReport::default()
    };
    let run = |mode: Mode, realtime: bool, report: &mut ExactReport| -> ExactRun {
        let left = opts.exact_budget_steps.saturating_sub(report.steps);
        let mut with_order = data.to_vec();
        let chain = order_edges(log, &mut with_order);
        if !realtime {
            // Real time usually is the order a database kept: a witness that respects it
            // serves the weaker model too, and with real time's edges far fewer orders are
            // open. Half the budget goes to that try.
            let r = decide(
                log,
                log.txns.len() + chain,
                &with_order,
                mode,
                left / 2,
                deadline,
                false,
            );
            report.steps += r.steps;
            if let Outcome3::Witness { .. } = r.outcome {
                report.open_pairs = r.open_pairs;
                report.components = r.components;
                report.largest_component = r.largest_component;
                return r;
            }
        }
        let (known, n) = if realtime {
            (with_order, log.txns.len() + chain)
        } else {
            (data.to_vec(), log.txns.len())
        };
        let left = opts.exact_budget_steps.saturating_sub(report.steps);
        let r = decide(log, n, &known, mode, left, deadline, false);
        report.steps += r.steps;
        report.open_pairs = report.open_pairs.max(r.open_pairs);
        report.components += r.components;
        report.largest_component = report.largest_component.max(r.largest_component);
        r
    };
    use Consistency::*;
    let (mode, realtime) = match opts.consistency {
        ReadCommitted => (Mode::WwWr, false),
        StrictSerializable => (Mode::Full, true),
        _ => (Mode::Full, false),
    };
    let first = run(mode, realtime, &mut report);
    report.by_witness_order = first.by_witness_order;
    let mut decided_by = DecidedBy::ExactSearch;
    match first.outcome {
        Outcome3::Witness { orders, serial } => {
            report.outcome = "witness".to_string();
            report.witness_orders = orders
                .iter()
                .take(32)
                .map(|(k, vs)| WitnessOrder {
                    key: log.key_value(*k).clone(),
                    versions: vs.iter().take(64).map(|&v| log.decode(v)).collect(),
                })
                .collect();
            report.witness_serial = serial
                .iter()
                .take(256)
                .map(|&t| log.txns[t as usize].index)
                .collect();
            notes.push(format!(
                "decided by exact search: a witness order of writes exists ({})",
                if first.by_witness_order {
                    "the first order tried".to_string()
                } else {
                    format!(
                        "{} open pairs of writes in {} components, {} steps",
                        first.open_pairs, first.components, report.steps
                    )
                }
            ));
        }
        Outcome3::Incomplete(why) => {
            report.outcome = "incomplete".to_string();
            decided_by = DecidedBy::ExactSearchIncomplete;
            notes.push(format!(
                "valid by inference, exact search incomplete: {why}"
            ));
        }
        Outcome3::NoOrder {
            cycle,
            example,
            component,
            proof,
        } => {
            report.outcome = "no-order".to_string();
            let mut kind = match mode {
                Mode::WwWr => "G1c-unavoidable",
                Mode::Full if realtime => "cycle-unavoidable-realtime",
                Mode::Full => "cycle-unavoidable",
            };
            let (mut cycle, mut example, mut component, mut proof) =
                (cycle, example, component, proof);
            if realtime {
                // Without real time too? Then serializability falls as well.
                if let Outcome3::NoOrder {
                    cycle: c,
                    example: e,
                    component: m,
                    proof: p,
                } = run(Mode::Full, false, &mut report).outcome
                {
                    kind = "cycle-unavoidable";
                    (cycle, example, component, proof) = (c, e, m, p);
                }
            }
            report.proof = Some(match proof.as_ref() {
                Some(p) => render_proof(log, index, p).report,
                None => ProofReport {
                    status: "none".to_string(),
                    cycles: Vec::new(),
                },
            });
            add_anomaly(
                log,
                index,
                found,
                kind,
                &cycle,
                &example,
                component,
                proof.as_ref(),
            );
            if mode == Mode::Full && kind == "cycle-unavoidable" {
                // Does even read committed fall? (Only then is snapshot isolation decided.)
                if let Outcome3::NoOrder {
                    cycle,
                    example,
                    component,
                    proof,
                } = run(Mode::WwWr, false, &mut report).outcome
                {
                    add_anomaly(
                        log,
                        index,
                        found,
                        "G1c-unavoidable",
                        &cycle,
                        &example,
                        component,
                        proof.as_ref(),
                    );
                } else if opts.consistency == SnapshotIsolation {
                    decided_by = DecidedBy::ExactSearchIncomplete;
                    notes.push(
                        "valid by inference, exact search incomplete: no order of writes is \
                         serializable, and the exact search does not decide snapshot isolation \
                         beyond that"
                            .to_string(),
                    );
                }
            }
            notes.push(format!(
                "decided by exact search: no order of writes avoids a cycle ({kind})"
            ));
        }
    }
    Settled { decided_by, report }
}

#[allow(clippy::too_many_arguments)]
fn add_anomaly(
    log: &TxnLog,
    index: &Index,
    found: &mut Found,
    kind: &str,
    cycle: &[(u32, Result<ChosenEdge, u8>)],
    example: &[(u32, Vec<Elem>)],
    component: usize,
    proof: Option<&Proof>,
) {
    let what = match kind {
        "G1c-unavoidable" => "a cycle of ww and wr edges (G0 or G1c)",
        "cycle-unavoidable-realtime" => "a cycle of ww, wr, rw, process and real-time edges",
        _ => "a cycle of ww, wr and rw edges",
    };
    if let Some(proof) = proof {
        found.add(kind, || {
            let r = render_proof(log, index, proof);
            Anomaly {
                kind: kind.to_string(),
                txns: r.refs,
                steps: r.steps,
                key: None,
                explanation: format!(
                    "No order of the writes to each key avoids {what}: the exact search over \
                     the orders inference left open (in a component of {component} nodes) \
                     found none. {}",
                    r.text
                ),
                svg: r.svg,
            }
        });
        return;
    }
    found.add(kind, || {
        let txns: Vec<usize> = cycle.iter().map(|c| c.0 as usize).collect();
        let edges: Vec<Result<ChosenEdge, u8>> = cycle.iter().map(|c| c.1).collect();
        let (refs, steps, text, svg) = if txns.is_empty() {
            (Vec::new(), Vec::new(), String::new(), None)
        } else {
            render_cycle_with(log, index, &txns, &edges)
        };
        // The keys the cycle's chosen edges order, with their example orders.
        let mut keys: Vec<u32> = cycle
            .iter()
            .filter_map(|c| c.1.ok().map(|e| e.key))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let shown: Vec<String> = example
            .iter()
            .filter(|(k, _)| keys.contains(k))
            .take(8)
            .map(|(k, vs)| format!("key {}: {}", log.key_value(*k), show_list(log, vs)))
            .collect();
        let under = if shown.is_empty() {
            "Already the orders inference found give one:".to_string()
        } else {
            format!(
                "Not a proof (building one went past its bounds); under the order {}, for \
                 example:",
                shown.join("; ")
            )
        };
        Anomaly {
            kind: kind.to_string(),
            txns: refs,
            steps,
            key: None,
            explanation: format!(
                "No order of the writes to each key avoids {what}: the exact search over the \
                 orders inference left open (in a component of {component} nodes) found none. \
                 {under}\n{text}"
            ),
            svg,
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn unmetered() -> Meter {
        Meter {
            steps: 0,
            budget: u64::MAX,
            deadline: Instant::now() + std::time::Duration::from_secs(3600),
            next_clock: u64::MAX,
        }
    }

    /// The case-split history of tests/rw_explain.rs (one split needed): past its split
    /// bound a proof says it is partial and how many choices it leaves out; within it, whole.
    #[test]
    fn proof_past_its_split_bound_is_partial() {
        let mut b = crate::txn::LogBuilder::new();
        let ks: Vec<u32> = (0..10).map(|k| b.key(k)).collect();
        // (write?, key, value) per transaction: writers of x=0, y=1, then their readers;
        // keys 2-9 carry the known wr edges a, b -> rc, rd and c, d -> ra, rb.
        let txns: [&[(bool, usize, i64)]; 8] = [
            &[(true, 0, 1), (true, 2, 1), (true, 3, 1)],
            &[(true, 0, 2), (true, 4, 1), (true, 5, 1)],
            &[(true, 1, 3), (true, 6, 1), (true, 7, 1)],
            &[(true, 1, 4), (true, 8, 1), (true, 9, 1)],
            &[(false, 0, 1), (false, 6, 1), (false, 8, 1)],
            &[(false, 0, 2), (false, 7, 1), (false, 9, 1)],
            &[(false, 1, 3), (false, 2, 1), (false, 4, 1)],
            &[(false, 1, 4), (false, 3, 1), (false, 5, 1)],
        ];
        for (i, t) in txns.iter().enumerate() {
            let start = b.begin();
            for &(write, k, v) in t.iter() {
                if write {
                    b.write(ks[k], v);
                } else {
                    b.read_register(ks[k], Some(Some(v)));
                }
            }
            b.finish(start, i as u64, Outcome::Ok, i as u32, 20 + i as u32);
        }
        let log = b.log;
        let mut found = Found::new(8);
        let inferred = super::super::infer::rw_register(&log, &mut found).unwrap();
        let facts = facts(&log);
        let n = log.txns.len();
        let adj = known_adj(n, &inferred.edges, Mode::Full, &facts);
        let rank: Vec<u64> = (0..n as u64).collect();
        for max_splits in [0, 1] {
            let mut run = ExactRun {
                outcome: Outcome3::Incomplete(String::new()),
                steps: 0,
                open_pairs: 0,
                components: 0,
                largest_component: 0,
                by_witness_order: false,
            };
            let failure = match exact(
                &facts,
                n,
                &adj,
                Mode::Full,
                &rank,
                &mut unmetered(),
                &mut run,
            ) {
                Ok(Err(f @ Failure::Component { .. })) => f,
                _ => panic!("the search needs a split and finds no order"),
            };
            let proof = prove(
                &facts,
                n,
                &adj,
                &inferred.edges,
                Mode::Full,
                n,
                &rank,
                failure,
                max_splits,
            )
            .expect("a proof");
            let text = render_proof(&log, &inferred.index, &proof).text;
            if max_splits == 0 {
                assert!(!proof.complete, "{text}");
                assert!(
                    matches!(proof.root, ProofNode::Cut { choices } if choices > 0),
                    "{text}"
                );
                assert!(text.starts_with("Partial proof"), "{text}");
                assert!(text.contains("further choices"), "{text}");
            } else {
                assert!(proof.complete, "{text}");
                assert!(matches!(proof.root, ProofNode::Split { .. }), "{text}");
                assert!(!text.contains("further choices"), "{text}");
            }
        }
    }

    /// The incremental update (which skips rows that already reach the target) must leave
    /// exactly the closure a recomputation from scratch gives: a missing bit would hide a
    /// cycle, an extra one invent it. Random DAGs across word boundaries, random edge
    /// groups with few and with many sources (the two ways a row is tested).
    #[test]
    fn add_into_matches_recomputed_closure() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut meter = unmetered();
        for round in 0..60 {
            let n: usize = rng.gen_range(2..200);
            // Edges only from lower to higher ids: acyclic.
            let mut adj: Vec<Vec<u32>> = vec![Vec::new(); n];
            for (u, out) in adj.iter_mut().enumerate() {
                for v in u + 1..n {
                    if rng.gen_bool(2.0 / n as f64) {
                        out.push(v as u32);
                    }
                }
            }
            let mut c = Closure::of(n, &adj, &mut meter).ok().flatten().unwrap();
            let mut added = 0;
            for _ in 0..40 {
                let target = rng.gen_range(0..n as u32);
                let many = rng.gen_bool(0.3);
                let count = if many {
                    rng.gen_range(1..n)
                } else {
                    rng.gen_range(1..4)
                };
                let sources: Vec<u32> = (0..count)
                    .map(|_| rng.gen_range(0..n as u32))
                    .filter(|&s| s != target && !c.reaches(target, s))
                    .collect();
                if sources.is_empty() {
                    continue;
                }
                c.add_into(&sources, target, &mut meter).ok().unwrap();
                for &s in &sources {
                    adj[s as usize].push(target);
                }
                added += 1;
                let fresh = Closure::of(n, &adj, &mut meter).ok().flatten().unwrap();
                assert!(
                    c.bits == fresh.bits,
                    "round {round}: closure differs after {added} additions (n {n})"
                );
            }
        }
    }
}
