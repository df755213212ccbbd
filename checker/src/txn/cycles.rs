//! The dependency graph and its cycles.
//!
//! Nodes are transactions that may have committed (ok and info); failed ones have no edges.
//! Real-time order (A completed before B was invoked) is encoded without listing pairs: every
//! completion gets a node on a chain in completion order, A points to its completion's node,
//! and each chain node points to the invocations that follow it before the next completion.
//! A reaches B through the chain exactly when A completed before B was invoked: Elle's
//! recently-completed buffer, with O(n) edges instead of one per buffered pair.
//!
//! The graph is kept in compressed sparse rows. A Kahn peel first drops every node that cannot
//! lie on a cycle (in a valid history: all of them); petgraph's iterative Kosaraju then finds the
//! strongly connected components of what is left.
//!
//! Per strongly connected component, level by level (data edges only, then with process order,
//! then with real time), each anomaly class is searched. For G0, G1c and G2-item a cycle through
//! a candidate edge a -> b exists iff a and b lie in one SCC of the subgraph the class allows, so
//! candidates are filtered exactly before any search; for G-single (one rw edge a -> b, the way
//! back without rw) b must reach a, which Kosaraju's topological numbering prunes. BFS finds the
//! shortest way back; the shortest of a few candidates is reported. G-nonadjacent searches a
//! product graph that remembers whether the last edge was rw, so no two rw edges are adjacent.
//! Every search checks the component's deadline.

use super::explain::render_cycle;
use super::infer::{Edge, Inferred, PROCESS, REALTIME, RW, WR, WW};
use super::log::{TxnLog, NO_POS};
use super::{Anomaly, Consistency, Found, TxnStats};
use crate::history::Outcome;
use petgraph::algo::kosaraju_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How many candidate edges to try per anomaly class, keeping the shortest cycle.
const CANDIDATES: usize = 16;

/// The whole graph in compressed sparse rows: 5 bytes an edge.
struct Csr {
    offsets: Vec<u32>,
    targets: Vec<u32>,
    kinds: Vec<u8>,
}

impl Csr {
    fn new(nodes: usize, a: &[Edge], b: &[Edge]) -> Csr {
        let mut offsets = vec![0u32; nodes + 1];
        for e in a.iter().chain(b) {
            offsets[e.from as usize + 1] += 1;
        }
        for i in 0..nodes {
            offsets[i + 1] += offsets[i];
        }
        let m = a.len() + b.len();
        let mut targets = vec![0u32; m];
        let mut kinds = vec![0u8; m];
        let mut next = offsets.clone();
        for e in a.iter().chain(b) {
            let slot = &mut next[e.from as usize];
            targets[*slot as usize] = e.to;
            kinds[*slot as usize] = e.kind;
            *slot += 1;
        }
        Csr {
            offsets,
            targets,
            kinds,
        }
    }

    fn out(&self, u: u32) -> impl Iterator<Item = (u32, u8)> + '_ {
        let (s, e) = (
            self.offsets[u as usize] as usize,
            self.offsets[u as usize + 1] as usize,
        );
        self.targets[s..e]
            .iter()
            .copied()
            .zip(self.kinds[s..e].iter().copied())
    }

    /// Kahn's peel: repeatedly removes nodes with no incoming edge from the rest. What is left
    /// is every node on a cycle plus what they reach; an acyclic graph leaves nothing.
    fn unpeeled(&self) -> Vec<u32> {
        let n = self.offsets.len() - 1;
        let mut indeg = vec![0u32; n];
        for &t in &self.targets {
            indeg[t as usize] += 1;
        }
        let mut stack: Vec<u32> = (0..n as u32).filter(|&v| indeg[v as usize] == 0).collect();
        let mut removed = 0usize;
        while let Some(u) = stack.pop() {
            removed += 1;
            for (v, _) in self.out(u) {
                indeg[v as usize] -= 1;
                if indeg[v as usize] == 0 {
                    stack.push(v);
                }
            }
        }
        if removed == n {
            return Vec::new();
        }
        (0..n as u32).filter(|&v| indeg[v as usize] > 0).collect()
    }
}

struct Local {
    /// Global node id of each local node.
    nodes: Vec<u32>,
    adj: Vec<Vec<(u32, u8)>>,
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn search(
    log: &TxnLog,
    inferred: &mut Inferred,
    realtime: bool,
    budget: Duration,
    found: &mut Found,
    stats: &mut TxnStats,
    notes: &mut Vec<String>,
    proven: &mut Vec<Consistency>,
    uncertain: &mut Vec<String>,
) {
    let n = log.txns.len();
    let mut edges: Vec<Edge> = Vec::new();
    let mut chain_nodes = 0usize;
    let data_edges = std::mem::take(&mut inferred.edges);
    if realtime {
        chain_nodes = order_edges(log, &mut edges);
    }
    let total = n + chain_nodes;
    let csr = Csr::new(total, &data_edges, &edges);
    // Free the lists before the SCC pass allocates.
    drop(edges);
    drop(data_edges);
    stats.edges = csr.targets.len();
    // Only nodes left after peeling can lie on a cycle; in a valid history that is none, and
    // the SCC pass has nothing to do.
    let live = csr.unpeeled();
    let mut local_of: Vec<u32> = vec![u32::MAX; total];
    let mut sub: DiGraph<(), (), u32> = DiGraph::with_capacity(live.len(), 0);
    for (i, &v) in live.iter().enumerate() {
        local_of[v as usize] = i as u32;
        sub.add_node(());
    }
    for &u in &live {
        for (v, _) in csr.out(u) {
            if local_of[v as usize] != u32::MAX {
                sub.add_edge(
                    NodeIndex::new(local_of[u as usize] as usize),
                    NodeIndex::new(local_of[v as usize] as usize),
                    (),
                );
            }
        }
    }
    let sccs: Vec<Vec<u32>> = kosaraju_scc(&sub)
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|c| c.into_iter().map(|v| live[v.index()]).collect())
        .collect();
    drop(sub);
    let mut comp_of: Vec<u32> = vec![u32::MAX; total];
    let mut cyclic: Vec<&Vec<u32>> = sccs.iter().collect();
    // Smallest first: their short cycles are the clearest examples.
    cyclic.sort_by_key(|c| c.len());
    stats.cyclic_sccs = cyclic.len();
    stats.largest_scc = cyclic.last().map(|c| c.len()).unwrap_or(0);
    let levels: &[(u8, &str)] = if realtime {
        &[
            (0, ""),
            (PROCESS, "-process"),
            (PROCESS | REALTIME, "-realtime"),
        ]
    } else {
        &[(0, "")]
    };
    for (ci, comp) in cyclic.iter().enumerate() {
        for (li, &v) in comp.iter().enumerate() {
            comp_of[v as usize] = ci as u32;
            local_of[v as usize] = li as u32;
        }
        let mut local = Local {
            nodes: comp.to_vec(),
            adj: vec![Vec::new(); comp.len()],
        };
        for (li, &v) in comp.iter().enumerate() {
            for (t, kind) in csr.out(v) {
                if comp_of[t as usize] == ci as u32 {
                    local.adj[li].push((local_of[t as usize], kind));
                }
            }
        }
        let deadline = Instant::now() + budget;
        // The component is non-trivial in the graph of the strongest level searched: that alone
        // proves the models forbidding any such cycle violated, named cycle or not.
        let scc_proves: &[Consistency] = if levels.len() == 1 {
            &[
                Consistency::RepeatableRead,
                Consistency::Serializable,
                Consistency::StrictSerializable,
            ]
        } else {
            &[Consistency::StrictSerializable]
        };
        proven.extend_from_slice(scc_proves);
        let outcome = search_scc(log, &*inferred, n, &local, levels, deadline, found, proven);
        if let Err(cut) = outcome {
            notes.push(format!(
                "cycle search in a strongly connected component of {} nodes ran out of its {:?} \
                 budget; searched: {}; not searched: {}",
                comp.len(),
                budget,
                if cut.done.is_empty() {
                    "nothing".to_string()
                } else {
                    cut.done.join(", ")
                },
                cut.left.join(", ")
            ));
            if !cut.named {
                let (kind, graph) = if levels.len() == 1 {
                    ("cycle-exists", "ww, wr and rw edges")
                } else {
                    (
                        "realtime-cycle-exists",
                        "ww, wr, rw, process and real-time edges",
                    )
                };
                found.add(kind, || Anomaly {
                    kind: kind.to_string(),
                    txns: Vec::new(),
                    steps: Vec::new(),
                    key: None,
                    explanation: format!(
                        "A strongly connected component of {} nodes in the graph of {graph} \
                         proves a cycle; the search for a shortest named cycle in it ran out of \
                         time.",
                        comp.len()
                    ),
                    svg: None,
                });
            }
            uncertain.extend(cut.left);
        }
    }
    proven.sort();
    proven.dedup();
}

/// Adds process-order and real-time edges; returns how many chain nodes (numbered from
/// `log.txns.len()`) it used.
pub(crate) fn order_edges(log: &TxnLog, edges: &mut Vec<Edge>) -> usize {
    let n = log.txns.len();
    // About one process edge and three real-time edges per transaction.
    edges.reserve(4 * n);
    let live: Vec<u32> = {
        let mut v: Vec<u32> = (0..n as u32)
            .filter(|&t| log.txns[t as usize].outcome != Outcome::Fail)
            .collect();
        v.sort_by_key(|&t| log.txns[t as usize].invoke_pos);
        v
    };
    // An info transaction may take effect at any time after its invocation, so nothing is
    // ordered after it: only ok transactions start process and real-time edges.
    let mut last_of: FxHashMap<u64, u32> = FxHashMap::default();
    for &t in &live {
        let p = log.txns[t as usize].process;
        if let Some(&prev) = last_of.get(&p) {
            edges.push(Edge {
                from: prev,
                to: t,
                kind: PROCESS,
            });
        }
        if log.txns[t as usize].outcome == Outcome::Ok {
            last_of.insert(p, t);
        }
    }
    let mut completions: Vec<(u32, u32)> = live
        .iter()
        .filter(|&&t| {
            let tx = &log.txns[t as usize];
            tx.outcome == Outcome::Ok && tx.complete_pos != NO_POS
        })
        .map(|&t| (log.txns[t as usize].complete_pos, t))
        .collect();
    completions.sort_unstable();
    let mut chain: Option<u32> = None;
    let mut next_chain = n as u32;
    let mut ci = 0;
    for &t in &live {
        let inv = log.txns[t as usize].invoke_pos;
        // Only start a new chain node when some invocation follows the completions since the
        // last one: consecutive completions share a node.
        let mut fresh: Option<u32> = None;
        while ci < completions.len() && completions[ci].0 < inv {
            let c = *fresh.get_or_insert_with(|| {
                let c = next_chain;
                next_chain += 1;
                if let Some(prev) = chain {
                    edges.push(Edge {
                        from: prev,
                        to: c,
                        kind: REALTIME,
                    });
                }
                c
            });
            edges.push(Edge {
                from: completions[ci].1,
                to: c,
                kind: REALTIME,
            });
            ci += 1;
        }
        if let Some(c) = fresh {
            chain = Some(c);
        }
        if let Some(c) = chain {
            edges.push(Edge {
                from: c,
                to: t,
                kind: REALTIME,
            });
        }
    }
    next_chain as usize - n
}

struct Timeout;

/// What a timed-out component search did and did not get to.
struct Cut {
    done: Vec<String>,
    /// Anomaly types (with level suffix) that were not searched and may be present.
    left: Vec<String>,
    /// Whether any cycle was found and named in the component.
    named: bool,
}

/// SCC ids of the local graph restricted to edges whose kind is in `mask`.
fn scc_ids(adj: &[Vec<(u32, u8)>], mask: u8) -> (Vec<u32>, bool) {
    let mut g: DiGraph<(), (), u32> = DiGraph::with_capacity(adj.len(), 0);
    for _ in 0..adj.len() {
        g.add_node(());
    }
    for (u, out) in adj.iter().enumerate() {
        for &(v, k) in out {
            if k & mask != 0 {
                g.add_edge(NodeIndex::new(u), NodeIndex::new(v as usize), ());
            }
        }
    }
    let mut ids = vec![0u32; adj.len()];
    let mut cyclic = false;
    for (i, c) in kosaraju_scc(&g).iter().enumerate() {
        cyclic |= c.len() > 1;
        for v in c {
            ids[v.index()] = i as u32;
        }
    }
    (ids, cyclic)
}

/// Shortest path from `from` to `to` over edges in `mask`: the nodes after `from` (ending with
/// `to`) with the kind of the edge into each.
fn bfs(
    adj: &[Vec<(u32, u8)>],
    mask: u8,
    from: u32,
    to: u32,
    deadline: Instant,
) -> Result<Option<Vec<(u32, u8)>>, Timeout> {
    let mut parent: Vec<(u32, u8)> = vec![(u32::MAX, 0); adj.len()];
    let mut queue = VecDeque::new();
    parent[from as usize] = (from, 0);
    queue.push_back(from);
    let mut pops = 0u32;
    while let Some(u) = queue.pop_front() {
        pops += 1;
        if pops & 1023 == 0 && Instant::now() > deadline {
            return Err(Timeout);
        }
        if u == to {
            let mut path = Vec::new();
            let mut x = to;
            while x != from {
                let (p, k) = parent[x as usize];
                path.push((x, k));
                x = p;
            }
            path.reverse();
            return Ok(Some(path));
        }
        for &(v, k) in &adj[u as usize] {
            if k & mask != 0 && parent[v as usize].0 == u32::MAX {
                parent[v as usize] = (u, k);
                queue.push_back(v);
            }
        }
    }
    Ok(None)
}

/// A cycle in local node ids: `nodes[i]` -> `nodes[i+1]` by `kinds[i]`, the last edge closing.
struct Cycle {
    nodes: Vec<u32>,
    kinds: Vec<u8>,
}

/// Shortest cycle through one of the candidate edges `a -> b` (kind in `first`, a and b in the
/// same component of `ids`), with the way back from b to a over `rest` edges.
fn find_cycle(
    adj: &[Vec<(u32, u8)>],
    first: u8,
    rest: u8,
    ids: &[u32],
    deadline: Instant,
) -> Result<Option<Cycle>, Timeout> {
    let mut best: Option<Cycle> = None;
    let mut tried = 0;
    'outer: for (a, out) in adj.iter().enumerate() {
        for &(b, k) in out {
            if k & first == 0 || ids[a] != ids[b as usize] {
                continue;
            }
            if let Some(path) = bfs(adj, rest, b, a as u32, deadline)? {
                let mut nodes = vec![a as u32];
                let mut kinds = vec![k];
                let mut prev = b;
                for &(x, kx) in &path {
                    nodes.push(prev);
                    kinds.push(kx);
                    prev = x;
                }
                if shorter(&best, nodes.len()) {
                    best = Some(Cycle { nodes, kinds });
                }
            }
            tried += 1;
            if tried >= CANDIDATES || best.as_ref().is_some_and(|c| c.nodes.len() == 2) {
                break 'outer;
            }
        }
    }
    Ok(best)
}

/// A cycle with exactly one rw edge a -> b: the way back from b to a uses no rw edge. Unlike
/// the classes above, a and b need not share a component of the rest-graph, only b must reach
/// a in it. Kosaraju numbers components in reverse topological order, so b can reach a only if
/// its component number is at least a's; other candidates are skipped without a search.
fn find_single(
    adj: &[Vec<(u32, u8)>],
    rest: u8,
    ids: &[u32],
    deadline: Instant,
) -> Result<Option<Cycle>, Timeout> {
    let mut best: Option<Cycle> = None;
    let mut tried = 0;
    for (a, out) in adj.iter().enumerate() {
        for &(b, k) in out {
            if k != RW || ids[b as usize] < ids[a] {
                continue;
            }
            if let Some(path) = bfs(adj, rest, b, a as u32, deadline)? {
                let mut nodes = vec![a as u32];
                let mut kinds = vec![k];
                let mut prev = b;
                for &(x, kx) in &path {
                    nodes.push(prev);
                    kinds.push(kx);
                    prev = x;
                }
                if shorter(&best, nodes.len()) {
                    best = Some(Cycle { nodes, kinds });
                }
                tried += 1;
                if tried >= CANDIDATES || nodes_len(&best) == 2 {
                    return Ok(best);
                }
            }
        }
    }
    Ok(best)
}

/// Whether a cycle of `len` nodes beats the best so far.
fn shorter(best: &Option<Cycle>, len: usize) -> bool {
    match best {
        Some(c) => len < c.nodes.len(),
        None => true,
    }
}

fn nodes_len(c: &Option<Cycle>) -> usize {
    c.as_ref().map(|c| c.nodes.len()).unwrap_or(0)
}

/// A cycle with at least one rw edge and no two rw edges adjacent (cyclically).
fn find_nonadjacent(
    adj: &[Vec<(u32, u8)>],
    other: u8,
    deadline: Instant,
) -> Result<Option<Cycle>, Timeout> {
    // State 2v: arrived by a non-rw edge (or start); 2v+1: arrived by rw.
    let mut prod: Vec<Vec<(u32, u8)>> = vec![Vec::new(); adj.len() * 2];
    for (u, out) in adj.iter().enumerate() {
        for &(v, k) in out {
            if k & other != 0 {
                prod[2 * u].push((2 * v, k));
                prod[2 * u + 1].push((2 * v, k));
            } else if k == RW {
                prod[2 * u].push((2 * v + 1, k));
            }
        }
    }
    let (ids, cyclic) = scc_ids(&prod, 0xff);
    if !cyclic {
        return Ok(None);
    }
    // Candidates: rw edges 2u -> 2v+1 inside one product component.
    let mut best: Option<Cycle> = None;
    let mut tried = 0;
    'outer: for u in 0..adj.len() {
        for &(s, k) in &prod[2 * u] {
            if k != RW || ids[2 * u] != ids[s as usize] {
                continue;
            }
            if let Some(path) = bfs(&prod, 0xff, s, 2 * u as u32, deadline)? {
                let mut nodes = vec![u as u32];
                let mut kinds = vec![k];
                let mut prev = s;
                for &(x, kx) in &path {
                    nodes.push(prev / 2);
                    kinds.push(kx);
                    prev = x;
                }
                if shorter(&best, nodes.len()) {
                    best = Some(Cycle { nodes, kinds });
                }
            }
            tried += 1;
            if tried >= CANDIDATES {
                break 'outer;
            }
        }
    }
    Ok(best)
}

/// Searches one SCC level by level; Err lists what was searched before time ran out.
#[allow(clippy::too_many_arguments)]
fn search_scc(
    log: &TxnLog,
    inferred: &Inferred,
    n: usize,
    local: &Local,
    levels: &[(u8, &str)],
    deadline: Instant,
    found: &mut Found,
    proven: &mut Vec<Consistency>,
) -> Result<(), Cut> {
    const CLASSES: [&str; 5] = [
        "G0",
        "G1c",
        "G-single-item",
        "G-nonadjacent-item",
        "G2-item",
    ];
    // Classes found at a lower level (or implied by one found) are not searched again.
    let mut have = [false; 5];
    let mut done: Vec<String> = Vec::new();
    for (li, &(extra, suffix)) in levels.iter().enumerate() {
        let all = WW | WR | RW | extra;
        let (all_ids, cyclic) = scc_ids(&local.adj, all);
        if !cyclic {
            continue;
        }
        if extra == 0 {
            // A cycle without process or real-time edges: not even serializable.
            proven.extend([
                Consistency::RepeatableRead,
                Consistency::Serializable,
                Consistency::StrictSerializable,
            ]);
        }
        let (ww_ids, _) = scc_ids(&local.adj, WW | extra);
        let (wwr_ids, _) = scc_ids(&local.adj, WW | WR | extra);
        for (class, name) in CLASSES.iter().enumerate() {
            if have[class] {
                continue;
            }
            let cycle = match class {
                0 => find_cycle(&local.adj, WW, WW | extra, &ww_ids, deadline),
                1 => find_cycle(&local.adj, WR, WW | WR | extra, &wwr_ids, deadline),
                2 => find_single(&local.adj, WW | WR | extra, &wwr_ids, deadline),
                3 => find_nonadjacent(&local.adj, WW | WR | extra, deadline),
                _ => find_cycle(&local.adj, RW, all, &all_ids, deadline),
            };
            let cycle = match cycle {
                Ok(c) => c,
                Err(Timeout) => {
                    let mut left: Vec<String> = (class..5)
                        .filter(|&c| !have[c])
                        .map(|c| format!("{}{suffix}", CLASSES[c]))
                        .collect();
                    for &(_, later) in &levels[li + 1..] {
                        left.extend(
                            (0..5)
                                .filter(|&c| !have[c])
                                .map(|c| format!("{}{later}", CLASSES[c])),
                        );
                    }
                    let named = have.iter().any(|&h| h);
                    return Err(Cut { done, left, named });
                }
            };
            done.push(format!("{name}{suffix}"));
            let Some(cycle) = cycle else { continue };
            have[class] = true;
            // G-single and G-nonadjacent are G2-item too; G0 is also G1c's kind of cycle.
            if class == 2 || class == 3 {
                have[4] = true;
            }
            if class == 2 {
                have[3] = true;
            }
            let kind = format!("{name}{suffix}");
            found.add(&kind, || render(log, inferred, n, local, &cycle, &kind));
        }
    }
    Ok(())
}

fn render(
    log: &TxnLog,
    inferred: &Inferred,
    n: usize,
    local: &Local,
    cycle: &Cycle,
    kind: &str,
) -> Anomaly {
    // Map to global ids, rotate to start at a transaction, and fold real-time chain nodes into
    // single real-time steps between transactions.
    let global: Vec<u32> = cycle
        .nodes
        .iter()
        .map(|&l| local.nodes[l as usize])
        .collect();
    let start = global.iter().position(|&g| (g as usize) < n).unwrap_or(0);
    let mut txns = Vec::new();
    let mut kinds = Vec::new();
    for i in 0..global.len() {
        let j = (start + i) % global.len();
        if (global[j] as usize) < n {
            txns.push(global[j] as usize);
            kinds.push(cycle.kinds[j]);
        }
    }
    let (refs, steps, text, svg) = render_cycle(log, &inferred.index, &txns, &kinds);
    Anomaly {
        kind: kind.to_string(),
        txns: refs,
        steps,
        key: None,
        explanation: text,
        svg,
    }
}
