//! Key-value models over string values: `get`, `put` and `append` (string concatenation). A key
//! starts as the empty string, which is also what a get of a missing key returns (`nil` or
//! `""`), as in porcupine's kv model.
//!
//! `kv` checks each key on its own (linearizability is compositional); `kv-unpartitioned` checks
//! the whole store as one map-valued object, the hard case.
//!
//! States are compact: every string a get returned goes into a trie, and a key's value is the
//! trie node of that string. A value that is not a prefix of anything any get returned can never
//! be observed again until the next put, so all such values collapse into one `JUNK` state.

use super::model::{Interner, Model, Prepared};
use crate::history::{Operation, Outcome};
use crate::value::Value;

/// The state of a key whose value no get can ever return.
pub const JUNK: u32 = u32::MAX;
const ROOT: u32 = 0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KvOp {
    Get,
    Put(u32),
    /// The string, and the op's index in its partition (for the junk lookahead).
    Append(u32, u32),
}

/// An input: the key (its index, always 0 when partitioned) and the operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KvInput {
    pub key: u32,
    pub op: KvOp,
}

/// An output: for a get, the id of the string returned; `u32::MAX` for put and append.
pub type KvOutput = u32;

/// Tables shared by the steps of one partition.
#[derive(Debug, Default)]
pub struct KvCtx {
    /// Turns the junk lookahead off (for the brute-force reference in tests).
    pub lookahead_off: bool,
    /// Every string seen, interned.
    pub strings: Interner,
    /// Keys (unpartitioned model only).
    pub keys: Interner,
    trie: Trie,
    /// Trie node of each interned string (`JUNK` if no get returned a string it begins).
    node_of: Vec<u32>,
    /// Operations prepared so far (the index the next one gets).
    prepared: u32,
    /// Look ahead: by op index, appends after which an unobservable value is fatal.
    junk_fatal: Vec<bool>,
}

/// A byte trie with first-child / next-sibling links.
#[derive(Debug, Default)]
struct Trie {
    byte: Vec<u8>,
    parent: Vec<u32>,
    first_child: Vec<u32>,
    sibling: Vec<u32>,
}

const NONE: u32 = u32::MAX;

impl Trie {
    fn new() -> Trie {
        Trie {
            byte: vec![0],
            parent: vec![NONE],
            first_child: vec![NONE],
            sibling: vec![NONE],
        }
    }

    fn child(&self, node: u32, b: u8) -> u32 {
        let mut c = self.first_child[node as usize];
        while c != NONE {
            if self.byte[c as usize] == b {
                return c;
            }
            c = self.sibling[c as usize];
        }
        NONE
    }

    fn insert(&mut self, s: &[u8]) {
        let mut node = ROOT;
        for &b in s {
            let c = self.child(node, b);
            node = if c != NONE {
                c
            } else {
                let id = self.byte.len() as u32;
                self.byte.push(b);
                self.parent.push(node);
                self.first_child.push(NONE);
                self.sibling.push(self.first_child[node as usize]);
                self.first_child[node as usize] = id;
                id
            };
        }
    }

    fn walk(&self, mut node: u32, s: &[u8]) -> u32 {
        for &b in s {
            if node == JUNK {
                return JUNK;
            }
            let c = self.child(node, b);
            node = if c == NONE { JUNK } else { c };
        }
        node
    }

    fn string(&self, mut node: u32) -> String {
        let mut bytes = Vec::new();
        while node != ROOT && node != NONE {
            bytes.push(self.byte[node as usize]);
            node = self.parent[node as usize];
        }
        bytes.reverse();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

fn as_string(v: &Value) -> Option<Value> {
    match v {
        Value::Null => Some(Value::Str(String::new())),
        Value::Str(_) => Some(v.clone()),
        Value::Int(i) => Some(Value::Str(i.to_string())),
        _ => None,
    }
}

fn prepare_kv(
    op: &Operation,
    ctx: &mut KvCtx,
    key: u32,
    name: &str,
) -> Result<Option<(KvInput, Option<KvOutput>)>, String> {
    let known = op.outcome != Outcome::Info;
    let string = |v: &Value, ctx: &mut KvCtx| {
        as_string(v)
            .map(|s| ctx.strings.intern(&s))
            .ok_or_else(|| format!("{} needs a string value, got {}", op.f, v.to_edn()))
    };
    let kv = match op.f.as_str() {
        "get" | "read" => {
            if !known {
                return Ok(None);
            }
            let out = string(&op.output, ctx)?;
            ctx.prepared += 1;
            return Ok(Some((KvInput { key, op: KvOp::Get }, Some(out))));
        }
        "put" | "write" => KvOp::Put(string(&op.input, ctx)?),
        "append" => KvOp::Append(string(&op.input, ctx)?, ctx.prepared),
        f => {
            return Err(format!(
                "the {name} model has no operation '{f}' (expected get, put or append)"
            ))
        }
    };
    ctx.prepared += 1;
    Ok(Some((KvInput { key, op: kv }, known.then_some(u32::MAX))))
}

fn finish_kv<M: Model<Input = KvInput, Output = KvOutput, Ctx = KvCtx>>(
    ctx: &mut KvCtx,
    ops: &[Prepared<M>],
) {
    let mut trie = Trie::new();
    let str_of = |ctx: &KvCtx, id: u32| match ctx.strings.value(id) {
        Value::Str(s) => s.clone().into_bytes(),
        _ => Vec::new(),
    };
    for o in ops {
        if let (KvOp::Get, Some(out)) = (o.input.op, o.output) {
            trie.insert(&str_of(ctx, out));
        }
    }
    ctx.node_of = (0..ctx.strings.len() as u32)
        .map(|id| trie.walk(ROOT, &str_of(ctx, id)))
        .collect();
    ctx.trie = trie;
    ctx.junk_fatal = if ctx.lookahead_off {
        vec![false; ops.len()]
    } else {
        junk_fatal(ops)
    };
}

/// For each definite append X: whether a value no get can return is fatal right after it,
/// because some get on the same key must come after X (it was invoked after X completed) and
/// no put on that key can come in between to overwrite the value. Appends keep such a value
/// unobservable, so that get would fail: the search may reject X's step at once instead of
/// discovering the failure much later (which, checking many keys as one object, costs an
/// exponential number of interleavings of the other keys).
fn junk_fatal<M: Model<Input = KvInput, Output = KvOutput, Ctx = KvCtx>>(
    ops: &[Prepared<M>],
) -> Vec<bool> {
    use std::collections::HashMap;
    // Per key: definite gets (call, ret) and puts (call, ret or MAX if unknown).
    let mut gets: HashMap<u32, Vec<(usize, usize)>> = HashMap::new();
    let mut puts: HashMap<u32, Vec<(usize, usize)>> = HashMap::new();
    for o in ops {
        match (o.input.op, o.ret) {
            (KvOp::Get, Some(ret)) if o.output.is_some() => {
                gets.entry(o.input.key).or_default().push((o.call, ret))
            }
            (KvOp::Put(_), ret) => puts
                .entry(o.input.key)
                .or_default()
                .push((o.call, ret.unwrap_or(usize::MAX))),
            _ => {}
        }
    }
    // Gets by call with the suffix minimum of their completions; puts by call with the prefix
    // maximum of theirs.
    let gets: HashMap<u32, (Vec<usize>, Vec<usize>)> = gets
        .into_iter()
        .map(|(k, mut g)| {
            g.sort_unstable();
            let mut min_ret = vec![usize::MAX; g.len() + 1];
            for i in (0..g.len()).rev() {
                min_ret[i] = min_ret[i + 1].min(g[i].1);
            }
            (k, (g.iter().map(|x| x.0).collect(), min_ret))
        })
        .collect();
    let puts: HashMap<u32, (Vec<usize>, Vec<usize>)> = puts
        .into_iter()
        .map(|(k, mut p)| {
            p.sort_unstable();
            let mut max_ret = Vec::with_capacity(p.len());
            let mut m = 0;
            for x in &p {
                m = m.max(x.1);
                max_ret.push(m);
            }
            (k, (p.iter().map(|x| x.0).collect(), max_ret))
        })
        .collect();
    ops.iter()
        .map(|o| {
            let (KvOp::Append(..), Some(x_ret), Some(_)) = (o.input.op, o.ret, o.output) else {
                return false;
            };
            let Some((calls, min_ret)) = gets.get(&o.input.key) else {
                return false;
            };
            // The get invoked after X completed that must complete first.
            let first = calls.partition_point(|&c| c <= x_ret);
            let g_ret = min_ret[first];
            if g_ret == usize::MAX {
                return false;
            }
            // A put invoked before that get completed, and completing after X began, could
            // go in between.
            match puts.get(&o.input.key) {
                None => true,
                Some((p_calls, max_ret)) => {
                    let n = p_calls.partition_point(|&c| c < g_ret);
                    n == 0 || max_ret[n - 1] <= o.call
                }
            }
        })
        .collect()
}

fn step_key(ctx: &KvCtx, s: u32, op: KvOp, output: Option<&KvOutput>) -> Option<u32> {
    match op {
        KvOp::Get => match output {
            Some(&out) => (ctx.node_of[out as usize] == s).then_some(s),
            None => Some(s),
        },
        KvOp::Put(v) => Some(ctx.node_of[v as usize]),
        KvOp::Append(v, id) => Some(if s == JUNK {
            if ctx.junk_fatal[id as usize] {
                return None;
            }
            JUNK
        } else {
            let next = match ctx.strings.value(v) {
                Value::Str(a) => ctx.trie.walk(s, a.as_bytes()),
                _ => s,
            };
            if next == JUNK && ctx.junk_fatal[id as usize] {
                return None;
            }
            next
        }),
    }
}

/// Unknown puts of a value no get ever began with, and unknown appends of a string that occurs
/// in no get's result, leave the key in a state nobody can observe until the next put; dropping
/// them is always allowed.
fn prunable_kv<M: Model<Input = KvInput, Output = KvOutput, Ctx = KvCtx>>(
    ctx: &KvCtx,
    ops: &[Prepared<M>],
) -> Vec<bool> {
    let gets: Vec<&str> = ops
        .iter()
        .filter_map(|o| match (o.input.op, o.output) {
            (KvOp::Get, Some(out)) => ctx.strings.value(out).as_str(),
            _ => None,
        })
        .collect();
    ops.iter()
        .map(|o| {
            o.optional()
                && match o.input.op {
                    KvOp::Get => true,
                    KvOp::Put(v) => ctx.node_of[v as usize] == JUNK,
                    KvOp::Append(v, _) => {
                        let a = ctx.strings.value(v).as_str().unwrap_or("");
                        !a.is_empty() && !gets.iter().any(|g| g.contains(a))
                    }
                }
        })
        .collect()
}

fn describe_key(ctx: &KvCtx, node: u32) -> String {
    if node == JUNK {
        "(a value no get returned)".into()
    } else {
        format!("{:?}", ctx.trie.string(node))
    }
}

/// `kv`: get/put/append, each key checked on its own.
#[derive(Clone, Copy, Debug)]
pub struct Kv {
    /// Reject an append at once when it leaves a value no later get can see (see
    /// `junk_fatal`). On by default; off only to cross-check against the plain model.
    pub lookahead: bool,
}

impl Default for Kv {
    fn default() -> Self {
        Kv { lookahead: true }
    }
}

impl Model for Kv {
    type Input = KvInput;
    type Output = KvOutput;
    type State = u32;
    type Ctx = KvCtx;

    fn name(&self) -> &str {
        "kv"
    }

    fn prepare(
        &self,
        op: &Operation,
        ctx: &mut KvCtx,
    ) -> Result<Option<(KvInput, Option<KvOutput>)>, String> {
        ctx.lookahead_off = !self.lookahead;
        prepare_kv(op, ctx, 0, self.name())
    }

    fn finish(&self, ctx: &mut KvCtx, ops: &[Prepared<Self>]) {
        finish_kv(ctx, ops)
    }

    fn init(&self, _ctx: &KvCtx) -> u32 {
        ROOT
    }

    fn step(
        &self,
        ctx: &KvCtx,
        &s: &u32,
        input: &KvInput,
        output: Option<&KvOutput>,
    ) -> Option<u32> {
        step_key(ctx, s, input.op, output)
    }

    fn prunable(&self, ctx: &KvCtx, ops: &[Prepared<Self>]) -> Vec<bool> {
        prunable_kv(ctx, ops)
    }

    fn read_only(&self, input: &KvInput, _output: Option<&KvOutput>) -> bool {
        input.op == KvOp::Get
    }

    fn describe_state(&self, ctx: &KvCtx, &s: &u32) -> String {
        describe_key(ctx, s)
    }
}

/// `kv-unpartitioned`: the same operations, checked as one map-valued object.
#[derive(Clone, Copy, Debug)]
pub struct KvUnpartitioned {
    /// Reject an append at once when it leaves a value no later get can see (see
    /// `junk_fatal`). On by default; off only to cross-check against the plain model.
    pub lookahead: bool,
}

impl Default for KvUnpartitioned {
    fn default() -> Self {
        KvUnpartitioned { lookahead: true }
    }
}

impl Model for KvUnpartitioned {
    type Input = KvInput;
    type Output = KvOutput;
    /// The trie node of every key, by key index.
    type State = Box<[u32]>;
    type Ctx = KvCtx;

    fn name(&self) -> &str {
        "kv-unpartitioned"
    }

    fn partition_key(&self, _op: &Operation) -> Option<Value> {
        None
    }

    fn prepare(
        &self,
        op: &Operation,
        ctx: &mut KvCtx,
    ) -> Result<Option<(KvInput, Option<KvOutput>)>, String> {
        ctx.lookahead_off = !self.lookahead;
        let key = ctx.keys.intern(op.key.as_ref().unwrap_or(&Value::Null));
        prepare_kv(op, ctx, key, self.name())
    }

    fn finish(&self, ctx: &mut KvCtx, ops: &[Prepared<Self>]) {
        finish_kv(ctx, ops)
    }

    fn init(&self, ctx: &KvCtx) -> Box<[u32]> {
        vec![ROOT; ctx.keys.len()].into_boxed_slice()
    }

    fn step(
        &self,
        ctx: &KvCtx,
        s: &Box<[u32]>,
        input: &KvInput,
        output: Option<&KvOutput>,
    ) -> Option<Box<[u32]>> {
        let k = input.key as usize;
        let next = step_key(ctx, s[k], input.op, output)?;
        if next == s[k] {
            return Some(s.clone());
        }
        let mut s = s.clone();
        s[k] = next;
        Some(s)
    }

    fn prunable(&self, ctx: &KvCtx, ops: &[Prepared<Self>]) -> Vec<bool> {
        prunable_kv(ctx, ops)
    }

    fn component(&self, input: &KvInput) -> Option<u32> {
        Some(input.key)
    }

    fn project(&self, s: &Box<[u32]>, component: u32) -> Box<[u32]> {
        s.iter()
            .enumerate()
            .map(|(k, &n)| if k as u32 == component { n } else { ROOT })
            .collect()
    }

    fn read_only(&self, input: &KvInput, _output: Option<&KvOutput>) -> bool {
        input.op == KvOp::Get
    }

    fn describe_state(&self, ctx: &KvCtx, s: &Box<[u32]>) -> String {
        let entries: Vec<String> = s
            .iter()
            .enumerate()
            .filter(|&(_, &n)| n != ROOT)
            .map(|(k, &n)| {
                format!(
                    "{} {}",
                    ctx.keys.value(k as u32).to_edn(),
                    describe_key(ctx, n)
                )
            })
            .collect();
        format!("{{{}}}", entries.join(", "))
    }

    fn state_bytes(&self, s: &Box<[u32]>) -> usize {
        16 + 4 * s.len()
    }
}
