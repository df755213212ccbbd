//! The search for one partition: Wing & Gong's algorithm with Lowe's just-in-time
//! linearization, as porcupine does it, plus:
//!
//! - unknown (`info`) operations live in their own list and are tried only after every
//!   definite candidate, so that they are placed only where something needs them, and the
//!   search succeeds as soon as every definite operation is placed (an unknown one may never
//!   happen);
//! - the memo of (set of linearized ops, state) only receives configurations proven dead, at
//!   backtrack time, so a history that needs no backtracking never touches it;
//! - the memo is exact (bitsets are compared, not just hashed) and bounded in bytes.

use super::model::{Model, Prepared};
use hashbrown::HashTable;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

const NIL: u32 = u32::MAX;

/// Shared limits for all partitions of one check.
#[derive(Debug)]
pub struct Budget {
    pub deadline: Option<Instant>,
    /// Bytes the memos of all partitions may take together.
    pub memo_limit_bytes: usize,
    pub memo_used_bytes: AtomicUsize,
    /// Set when some partition ran out: others stop too (their answer would be unknown anyway
    /// soon, and the time is better spent reporting).
    pub exhausted: AtomicBool,
}

impl Budget {
    pub fn new(deadline: Option<Instant>, memo_limit_bytes: usize) -> Budget {
        Budget {
            deadline,
            memo_limit_bytes,
            memo_used_bytes: AtomicUsize::new(0),
            exhausted: AtomicBool::new(false),
        }
    }
}

/// Why a search gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GaveUp {
    Time,
    Memory,
}

/// A longest linearizable prefix and the operation that could not be placed after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stuck {
    /// Indices into the partition's prepared ops, in linearization order.
    pub prefix: Vec<usize>,
    /// The definite operation whose completion came before it could take effect.
    pub op: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SearchOutcome {
    Valid,
    Invalid(Vec<Stuck>),
    Unknown(GaveUp),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SearchStats {
    /// Candidate steps tried.
    pub steps: u64,
    pub backtracks: u64,
    pub memo_entries: u64,
    pub memo_bytes: u64,
    /// The most operations placed at once (a linearizable prefix of that length exists).
    pub max_depth: u64,
}

/// FxHash: fast, good enough for hashing small states.
#[derive(Default)]
struct Fx(u64);

impl Hasher for Fx {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(w));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.write_u64(i as u64)
    }
    fn write_u32(&mut self, i: u32) {
        self.write_u64(i as u64)
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64)
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

fn hash_state<S: Hash>(s: &S) -> u64 {
    let mut h = Fx::default();
    s.hash(&mut h);
    // Final avalanche so the low bits used by the table are well mixed.
    splitmix(h.finish())
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A dead configuration: the linearized set (compacted: words before `lo` are all ones, words
/// after `lo + words.len()` all zero) and the state.
struct MemoEntry<S> {
    hash: u64,
    lo: u32,
    words: Box<[u64]>,
    state: S,
}

/// The compact range of a bitset: first word not all ones, one past the last nonzero word.
fn compact_range(bits: &[u64]) -> (usize, usize) {
    let lo = bits.iter().position(|&w| w != !0).unwrap_or(bits.len());
    let hi = bits.iter().rposition(|&w| w != 0).map_or(0, |i| i + 1);
    (lo, hi.max(lo))
}

struct Frame<S> {
    op: u32,
    /// The list node that was lifted: a main-list call entry or an info-list node.
    node: u32,
    info: bool,
    /// A read placed as soon as it was legal: no alternative needs trying.
    forced: bool,
    /// The return entry that bounded the candidates (`NIL` for forced reads).
    bound: u32,
    prev: S,
}

#[derive(Clone, Copy)]
enum Cursor {
    /// First pass over the main list's candidates: reads only. A legal read is placed at once
    /// and for good (see `Model::read_only`).
    Reads(u32),
    /// Second pass: the other definite candidates; the second field is the first return entry
    /// (which bounds the candidates).
    Main(u32, u32),
    /// Scanning the info list at this node; candidates must be invoked before `bound`'s
    /// position (a main-list return entry, or the tail).
    Info(u32, u32),
}

/// Searches for a linearization of `ops` (sorted by invocation) that places every definite
/// operation and any subset of the optional ones, skipping `pruned` ones altogether.
pub fn search<M: Model + ?Sized>(
    model: &M,
    ctx: &M::Ctx,
    ops: &[Prepared<M>],
    pruned: &[bool],
    budget: &Budget,
    max_prefixes: usize,
) -> (SearchOutcome, SearchStats) {
    search_from(model, ctx, ops, pruned, budget, max_prefixes, None, true)
}

/// `search`, from a given initial state, with or without locality backjumping.
#[allow(clippy::too_many_arguments)]
fn search_from<M: Model + ?Sized>(
    model: &M,
    ctx: &M::Ctx,
    ops: &[Prepared<M>],
    pruned: &[bool],
    budget: &Budget,
    max_prefixes: usize,
    init: Option<M::State>,
    locality: bool,
) -> (SearchOutcome, SearchStats) {
    let (outcome, mut stats) = search_inner(
        model,
        ctx,
        ops,
        pruned,
        budget,
        max_prefixes,
        init,
        locality,
    );
    if outcome == SearchOutcome::Valid {
        stats.max_depth = ops.len() as u64;
    }
    // The memo is gone: give its bytes back to the budget.
    budget
        .memo_used_bytes
        .fetch_sub(stats.memo_bytes as usize, Ordering::Relaxed);
    (outcome, stats)
}

#[allow(clippy::too_many_arguments)]
fn search_inner<M: Model + ?Sized>(
    model: &M,
    ctx: &M::Ctx,
    ops: &[Prepared<M>],
    pruned: &[bool],
    budget: &Budget,
    max_prefixes: usize,
    init: Option<M::State>,
    locality: bool,
) -> (SearchOutcome, SearchStats) {
    let n = ops.len();
    let mut stats = SearchStats::default();

    // --- The main list: call and return entries of definite ops, in history order. ---
    let mut events: Vec<(usize, u32, bool)> = Vec::with_capacity(2 * n);
    let mut info_ops: Vec<(usize, u32)> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        if pruned.get(i).copied().unwrap_or(false) {
            continue;
        }
        match (op.output.is_some(), op.ret) {
            (true, Some(ret)) => {
                events.push((op.call, i as u32, true));
                events.push((ret.max(op.call), i as u32, false));
            }
            _ => info_ops.push((op.call, i as u32)),
        }
    }
    // Positions are distinct event indices; on a tie keep a call before its own return.
    events.sort_unstable_by_key(|&(pos, op, call)| (pos, !call, op));
    info_ops.sort_unstable();

    let m = events.len();
    let tail = (m + 1) as u32;
    let mut next: Vec<u32> = (1..=m as u32 + 1).chain([NIL]).collect();
    let mut prev: Vec<u32> = [NIL].into_iter().chain(0..=m as u32).collect();
    let mut entry_op = vec![NIL; m + 2];
    let mut entry_pos = vec![usize::MAX; m + 2];
    let mut is_call = vec![false; m + 2];
    let mut partner = vec![NIL; m + 2];
    let mut call_entry = vec![NIL; n];
    for (k, &(pos, op, call)) in events.iter().enumerate() {
        let e = k + 1;
        entry_op[e] = op;
        entry_pos[e] = pos;
        is_call[e] = call;
        if call {
            call_entry[op as usize] = e as u32;
        } else {
            let c = call_entry[op as usize];
            partner[c as usize] = e as u32;
        }
    }
    let mut remaining = m / 2;

    // --- The info list. ---
    let k = info_ops.len();
    let itail = (k + 1) as u32;
    let mut inext: Vec<u32> = (1..=k as u32 + 1).chain([NIL]).collect();
    let mut iprev: Vec<u32> = [NIL].into_iter().chain(0..=k as u32).collect();
    let mut info_op = vec![NIL; k + 2];
    let mut info_pos = vec![usize::MAX; k + 2];
    for (j, &(pos, op)) in info_ops.iter().enumerate() {
        info_op[j + 1] = op;
        info_pos[j + 1] = pos;
    }

    // --- Twins: identical ops, of which the earlier must be placed first. Among identical
    // unknown ops, any linearization can use the earliest-invoked ones, in invocation order;
    // among identical definite ops A, B with A invoked and completed no later than B, any
    // linearization can put A first (swapping them keeps every real-time constraint). Placing
    // B only after A is therefore always allowed, and it cuts symmetric orders. ---
    let mut twin = vec![NIL; n];
    {
        type Class<'a, I, O> = (&'a I, Option<&'a O>);
        let mut classes: std::collections::HashMap<Class<M::Input, M::Output>, Vec<u32>> =
            std::collections::HashMap::new();
        for (i, op) in ops.iter().enumerate() {
            if pruned.get(i).copied().unwrap_or(false) {
                continue;
            }
            let members = classes.entry((&op.input, op.output.as_ref())).or_default();
            let found = members.iter().rev().take(8).copied().find(|&a| {
                let a_op = &ops[a as usize];
                a_op.call <= op.call
                    && match (a_op.ret, op.ret, op.output.is_some()) {
                        (_, _, false) => true,
                        (Some(ar), Some(br), true) => ar <= br,
                        _ => false,
                    }
            });
            if let Some(a) = found {
                twin[i] = a;
            }
            members.push(i as u32);
        }
    }

    // --- Search state. ---
    let zob: Vec<u64> = (0..n as u64)
        .map(|i| splitmix(i ^ 0x6a09_e667_f3bc_c909))
        .collect();
    let mut bits = vec![0u64; n.div_ceil(64).max(1)];
    let mut set_hash = 0u64;
    let mut state = init.unwrap_or_else(|| model.init(ctx));
    let mut max_depth = 0usize;
    // Locality: whether each component, with these ops still to place, from this state (all
    // other components reset), can be linearized on its own.
    let mut proj_cache: std::collections::HashMap<(u32, Vec<u32>, M::State), bool> =
        std::collections::HashMap::new();
    let mut frames: Vec<Frame<M::State>> = Vec::with_capacity(n.min(1 << 16));
    let mut memo: HashTable<MemoEntry<M::State>> = HashTable::new();
    let mut best: Vec<Stuck> = Vec::new();
    let mut best_depth = 0usize;
    let read_only: Vec<bool> = ops
        .iter()
        .map(|o| o.output.is_some() && model.read_only(&o.input, o.output.as_ref()))
        .collect();
    // Components (see `Model::component`): if every op names one, then at each configuration
    // only ops on the component of the first pending completion need trying.
    let comp: Vec<u32> = ops
        .iter()
        .map(|o| model.component(&o.input).unwrap_or(NIL))
        .collect();
    let by_component = !comp.is_empty() && comp.iter().all(|&c| c != NIL);
    // Unplaced (and unpruned) ops per component, so that a dead end can tell at once whether
    // any component other than the last step's has work left (else no jump can help).
    let mut unplaced_in: Vec<u32> = Vec::new();
    let mut unplaced_total = 0u32;
    if by_component {
        unplaced_in = vec![0; comp.iter().max().map_or(0, |&c| c as usize + 1)];
        for (i, &c) in comp.iter().enumerate() {
            if !pruned.get(i).copied().unwrap_or(false) {
                unplaced_in[c as usize] += 1;
                unplaced_total += 1;
            }
        }
    }
    let same_component = |op: u32, bound: u32| {
        !by_component
            || bound == tail
            || comp[op as usize] == comp[entry_op[bound as usize] as usize]
    };
    let mut cursor = Cursor::Reads(next[0]);

    let memo_find = |memo: &HashTable<MemoEntry<M::State>>,
                     hash: u64,
                     bits: &[u64],
                     state: &M::State|
     -> bool {
        if memo.is_empty() {
            return false;
        }
        let (lo, hi) = compact_range(bits);
        memo.find(hash, |e| {
            e.hash == hash
                && e.lo as usize == lo
                && e.words.len() == hi - lo
                && *e.words == bits[lo..hi]
                && e.state == *state
        })
        .is_some()
    };

    loop {
        if remaining == 0 {
            stats.memo_entries = memo.len() as u64;
            return (SearchOutcome::Valid, stats);
        }
        stats.steps += 1;
        if stats.steps & 1023 == 0 {
            if budget.exhausted.load(Ordering::Relaxed) {
                // Another partition ran out of the shared budget.
                let why =
                    if budget.memo_used_bytes.load(Ordering::Relaxed) > budget.memo_limit_bytes {
                        GaveUp::Memory
                    } else {
                        GaveUp::Time
                    };
                stats.max_depth = max_depth as u64;
                stats.memo_entries = memo.len() as u64;
                return (SearchOutcome::Unknown(why), stats);
            }
            if budget.deadline.is_some_and(|d| Instant::now() >= d) {
                budget.exhausted.store(true, Ordering::Relaxed);
                {
                    stats.max_depth = max_depth as u64;
                    stats.memo_entries = memo.len() as u64;
                    return (SearchOutcome::Unknown(GaveUp::Time), stats);
                }
            }
        }
        // The candidate to try, if any: (op, list node, info?, bound).
        let candidate = match cursor {
            Cursor::Reads(e) => {
                if e != tail && is_call[e as usize] {
                    if !read_only[entry_op[e as usize] as usize] {
                        cursor = Cursor::Reads(next[e as usize]);
                        continue;
                    }
                    Some((entry_op[e as usize], e, false, NIL))
                } else {
                    cursor = Cursor::Main(next[0], e);
                    continue;
                }
            }
            Cursor::Main(e, bound) => {
                if e != tail && is_call[e as usize] {
                    let op = entry_op[e as usize];
                    if read_only[op as usize] || !same_component(op, bound) {
                        // Reads were tried in the first pass: they cannot go here.
                        cursor = Cursor::Main(next[e as usize], bound);
                        continue;
                    }
                    Some((op, e, false, bound))
                } else {
                    cursor = Cursor::Info(inext[0], e);
                    continue;
                }
            }
            Cursor::Info(j, bound) => {
                if j != itail && info_pos[j as usize] < entry_pos[bound as usize] {
                    if !same_component(info_op[j as usize], bound) {
                        cursor = Cursor::Info(inext[j as usize], bound);
                        continue;
                    }
                    Some((info_op[j as usize], j, true, bound))
                } else {
                    None
                }
            }
        };
        // Whether the current configuration is dead, and if so whether it is a genuine dead
        // end (worth recording for the counterexample) or follows from a forced step.
        let mut dead_end = None;
        match candidate {
            Some((op, node, info, bound)) => {
                let advance = match cursor {
                    Cursor::Info(..) => Cursor::Info(inext[node as usize], bound),
                    Cursor::Reads(_) => Cursor::Reads(next[node as usize]),
                    Cursor::Main(..) => Cursor::Main(next[node as usize], bound),
                };
                let t = twin[op as usize];
                if t != NIL && bits[t as usize / 64] & (1u64 << (t % 64)) == 0 {
                    // An identical op that must go first is not placed yet.
                    cursor = advance;
                    continue;
                }
                let o = &ops[op as usize];
                let Some(ns) = model.step(ctx, &state, &o.input, o.output.as_ref()) else {
                    cursor = advance;
                    continue;
                };
                if info && ns == state {
                    // An unknown op that would change nothing here (a cas whose expected value
                    // does not match, an append of nothing) is the same as one that never
                    // happens, which is always allowed, and it stays available for later:
                    // placing it would only multiply configurations that differ in which such
                    // no-ops were spent (2^k of them for k unknown cas ops).
                    cursor = advance;
                    continue;
                }
                let forced = !info && read_only[op as usize];
                if !memo.is_empty() {
                    let h = (set_hash ^ zob[op as usize]) ^ hash_state(&ns);
                    let w = op as usize / 64;
                    let bit = 1u64 << (op % 64);
                    bits[w] |= bit;
                    let dead = memo_find(&memo, h, &bits, &ns);
                    bits[w] &= !bit;
                    if dead {
                        if forced {
                            // Placing a legal read now is always allowed, and that is dead.
                            dead_end = Some(None);
                        } else {
                            cursor = advance;
                            continue;
                        }
                    }
                }
                if dead_end.is_none() {
                    let old = std::mem::replace(&mut state, ns);
                    frames.push(Frame {
                        op,
                        node,
                        info,
                        forced,
                        bound,
                        prev: old,
                    });
                    bits[op as usize / 64] |= 1u64 << (op % 64);
                    if by_component {
                        unplaced_in[comp[op as usize] as usize] -= 1;
                        unplaced_total -= 1;
                    }
                    set_hash ^= zob[op as usize];
                    max_depth = max_depth.max(frames.len());
                    if info {
                        let j = node as usize;
                        inext[iprev[j] as usize] = inext[j];
                        iprev[inext[j] as usize] = iprev[j];
                    } else {
                        let e = node as usize;
                        let r = partner[e] as usize;
                        next[prev[e] as usize] = next[e];
                        prev[next[e] as usize] = prev[e];
                        next[prev[r] as usize] = next[r];
                        prev[next[r] as usize] = prev[r];
                        remaining -= 1;
                    }
                    cursor = Cursor::Reads(next[0]);
                    continue;
                }
            }
            None => {
                let Cursor::Info(_, bound) = cursor else {
                    unreachable!("dead ends are found in the info phase")
                };
                dead_end = Some(Some(bound));
            }
        }
        // Dead end: no candidate can go next in this configuration.
        stats.backtracks += 1;
        // Locality: if the component of the op that must complete next cannot be linearized on
        // its own from here, no configuration with the same placed ops of that component and
        // the same state can be either: jump back past every step on other components.
        let mut jump: Option<u32> = None;
        // A jump for component c pops frames up to and including the last step on c: when the
        // last step already is on c that is plain backtracking, and the sub-search would only
        // prove again, from scratch and without this search's memo, what backtracking finds
        // anyway. Skipping it there is what keeps one hot component (a single key checked by
        // an unpartitioned model) from re-exploring its own search at every dead end.
        let top_component = frames
            .last()
            .map(|f| comp[f.op as usize])
            .filter(|&c| by_component && unplaced_total > unplaced_in[c as usize]);
        if let (Some(Some(bound)), true, true, Some(top_component)) =
            (dead_end, locality, by_component, top_component)
        {
            if bound != tail {
                // The component that must move next first, then the others.
                let k = comp[entry_op[bound as usize] as usize];
                let mut unplaced: Vec<(u32, u32)> = (0..n)
                    .filter(|&i| {
                        bits[i / 64] & (1u64 << (i % 64)) == 0
                            && !pruned.get(i).copied().unwrap_or(false)
                    })
                    .map(|i| (if comp[i] == k { 0 } else { comp[i] + 1 }, i as u32))
                    .collect();
                unplaced.sort_unstable();
                for group in unplaced.chunk_by(|a, b| a.0 == b.0) {
                    let c = comp[group[0].1 as usize];
                    if c == top_component {
                        continue;
                    }
                    let members: Vec<u32> = group.iter().map(|x| x.1).collect();
                    let projected = model.project(&state, c);
                    let key = (c, members, projected);
                    let dead = match proj_cache.get(&key) {
                        Some(&dead) => dead,
                        None => {
                            let sub: Vec<Prepared<M>> =
                                key.1.iter().map(|&i| ops[i as usize].clone()).collect();
                            let (sub_outcome, sub_stats) = search_from(
                                model,
                                ctx,
                                &sub,
                                &[],
                                budget,
                                0,
                                Some(key.2.clone()),
                                false,
                            );
                            stats.steps += sub_stats.steps;
                            stats.backtracks += sub_stats.backtracks;
                            let dead = match sub_outcome {
                                SearchOutcome::Invalid(_) => true,
                                SearchOutcome::Valid => false,
                                SearchOutcome::Unknown(why) => {
                                    stats.max_depth = max_depth as u64;
                                    stats.memo_entries = memo.len() as u64;
                                    return (SearchOutcome::Unknown(why), stats);
                                }
                            };
                            let bytes = 64 + 4 * key.1.len() + model.state_bytes(&key.2);
                            budget.memo_used_bytes.fetch_add(bytes, Ordering::Relaxed);
                            stats.memo_bytes += bytes as u64;
                            proj_cache.insert(key, dead);
                            dead
                        }
                    };
                    if dead {
                        jump = Some(c);
                        break;
                    }
                }
            }
        }
        if let Some(Some(bound)) = dead_end {
            let depth = frames.len();
            if bound != tail && (depth > best_depth || best.is_empty()) {
                best_depth = depth;
                best.clear();
            }
            if bound != tail
                && depth == best_depth
                && best.len() < max_prefixes
                && !best
                    .iter()
                    .any(|s| s.op == entry_op[bound as usize] as usize)
            {
                best.push(Stuck {
                    prefix: frames.iter().map(|f| f.op as usize).collect(),
                    op: entry_op[bound as usize] as usize,
                });
            }
        }
        // Pop back to the last configuration with a choice left, remembering every
        // configuration on the way as dead.
        loop {
            let Some(frame) = frames.pop() else {
                stats.memo_entries = memo.len() as u64;
                stats.max_depth = max_depth as u64;
                return (SearchOutcome::Invalid(best), stats);
            };
            let h = set_hash ^ hash_state(&state);
            let (lo, hi) = compact_range(&bits);
            let bytes = std::mem::size_of::<MemoEntry<M::State>>()
                + 8 * (hi - lo)
                + model.state_bytes(&state)
                + 8;
            let used = budget.memo_used_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
            stats.memo_bytes += bytes as u64;
            if used > budget.memo_limit_bytes {
                budget.exhausted.store(true, Ordering::Relaxed);
                stats.memo_entries = memo.len() as u64;
                stats.max_depth = max_depth as u64;
                return (SearchOutcome::Unknown(GaveUp::Memory), stats);
            }
            let dead = std::mem::replace(&mut state, frame.prev);
            memo.insert_unique(
                h,
                MemoEntry {
                    hash: h,
                    lo: lo as u32,
                    words: bits[lo..hi].into(),
                    state: dead,
                },
                |e| e.hash,
            );
            let op = frame.op;
            bits[op as usize / 64] &= !(1u64 << (op % 64));
            if by_component {
                unplaced_in[comp[op as usize] as usize] += 1;
                unplaced_total += 1;
            }
            set_hash ^= zob[op as usize];
            if frame.info {
                let j = frame.node as usize;
                inext[iprev[j] as usize] = j as u32;
                iprev[inext[j] as usize] = j as u32;
                cursor = Cursor::Info(inext[j], frame.bound);
            } else {
                let e = frame.node as usize;
                let r = partner[e] as usize;
                next[prev[r] as usize] = r as u32;
                prev[next[r] as usize] = r as u32;
                next[prev[e] as usize] = e as u32;
                prev[next[e] as usize] = e as u32;
                remaining += 1;
                cursor = Cursor::Main(next[e], frame.bound);
            }
            if !frame.forced && jump.is_none_or(|k| comp[frame.op as usize] == k) {
                break;
            }
            // A forced step was the only one worth trying here: this configuration is dead
            // too.
        }
    }
}
