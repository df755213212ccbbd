//! A set per key: `add` an element, `read` the whole set. Starts empty; a read of nil is the
//! empty set.

use super::model::{Interner, Model, Prepared};
use crate::history::{Operation, Outcome};
use crate::value::Value;

#[derive(Clone, Copy, Debug, Default)]
pub struct Set;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SetInput {
    Add(u32),
    Read,
}

/// Elements interned, and the sets reads returned.
#[derive(Debug, Default)]
pub struct SetCtx {
    pub elements: Interner,
    /// Bitsets of what each read returned, without trailing zero words.
    pub reads: Vec<Box<[u64]>>,
}

/// A bitset over element ids, without trailing zero words (so equal sets are equal values).
pub type SetState = Box<[u64]>;

/// Output: for a read, the index of its set in `SetCtx::reads`; `u32::MAX` for an add.
pub type SetOutput = u32;

fn trimmed(mut words: Vec<u64>) -> Box<[u64]> {
    while words.last() == Some(&0) {
        words.pop();
    }
    words.into_boxed_slice()
}

fn contains(s: &[u64], e: u32) -> bool {
    s.get(e as usize / 64)
        .is_some_and(|w| w & (1 << (e % 64)) != 0)
}

impl Model for Set {
    type Input = SetInput;
    type Output = SetOutput;
    type State = SetState;
    type Ctx = SetCtx;

    fn name(&self) -> &str {
        "set"
    }

    fn prepare(
        &self,
        op: &Operation,
        ctx: &mut SetCtx,
    ) -> Result<Option<(SetInput, Option<SetOutput>)>, String> {
        let known = op.outcome != Outcome::Info;
        match op.f.as_str() {
            "add" => {
                let e = ctx.elements.intern(&op.input);
                Ok(Some((SetInput::Add(e), known.then_some(u32::MAX))))
            }
            "read" => {
                if !known {
                    return Ok(None);
                }
                let items: &[Value] = match &op.output {
                    Value::Null => &[],
                    Value::List(items) => items,
                    other => {
                        return Err(format!(
                            "a set read must return a list, got {}",
                            other.to_edn()
                        ))
                    }
                };
                let mut words = Vec::new();
                for item in items {
                    let e = ctx.elements.intern(item) as usize;
                    if words.len() <= e / 64 {
                        words.resize(e / 64 + 1, 0);
                    }
                    words[e / 64] |= 1 << (e % 64);
                }
                ctx.reads.push(trimmed(words));
                Ok(Some((SetInput::Read, Some(ctx.reads.len() as u32 - 1))))
            }
            f => Err(format!(
                "the set model has no operation '{f}' (expected add or read)"
            )),
        }
    }

    fn init(&self, _ctx: &SetCtx) -> SetState {
        Box::new([])
    }

    fn step(
        &self,
        ctx: &SetCtx,
        s: &SetState,
        input: &SetInput,
        output: Option<&SetOutput>,
    ) -> Option<SetState> {
        match (input, output) {
            (SetInput::Read, Some(&r)) => (ctx.reads[r as usize] == *s).then(|| s.clone()),
            (SetInput::Read, None) => Some(s.clone()),
            (&SetInput::Add(e), _) => {
                if contains(s, e) {
                    return Some(s.clone());
                }
                let mut words = s.to_vec();
                let w = e as usize / 64;
                if words.len() <= w {
                    words.resize(w + 1, 0);
                }
                words[w] |= 1 << (e % 64);
                Some(words.into_boxed_slice())
            }
        }
    }

    /// An unknown add of an element that no read contains can be taken to have never
    /// happened: had it happened, no read could have come after it.
    fn prunable(&self, ctx: &SetCtx, ops: &[Prepared<Self>]) -> Vec<bool> {
        ops.iter()
            .map(|o| match o.input {
                SetInput::Add(e) => o.optional() && !ctx.reads.iter().any(|r| contains(r, e)),
                SetInput::Read => o.optional(),
            })
            .collect()
    }

    fn read_only(&self, input: &SetInput, _output: Option<&SetOutput>) -> bool {
        *input == SetInput::Read
    }

    fn describe_state(&self, ctx: &SetCtx, s: &SetState) -> String {
        let mut items: Vec<&Value> = (0..s.len() as u32 * 64)
            .filter(|&e| contains(s, e))
            .map(|e| ctx.elements.value(e))
            .collect();
        items.sort();
        let parts: Vec<String> = items.iter().map(|v| v.to_edn()).collect();
        format!("#{{{}}}", parts.join(" "))
    }

    fn state_bytes(&self, s: &SetState) -> usize {
        16 + 8 * s.len()
    }
}
