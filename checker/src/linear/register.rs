//! Registers: `register` (read, write) and `cas-register` (read, write, cas), one register per
//! key. A register starts unset; a read of nil/null means "unset".

use super::model::{Interner, Model, Prepared};
use crate::history::{Operation, Outcome};
use crate::value::Value;

/// Id of "unset" when no operation mentions nil at all.
const UNSET: u32 = u32::MAX;

/// A read/write register, optionally with compare-and-set.
#[derive(Clone, Copy, Debug, Default)]
pub struct Register {
    /// Accept `cas` operations (`cas-register`).
    pub cas: bool,
    /// Read a failed cas as an observation that the register differed from the expected value
    /// (porcupine's etcd model). Off by default: clients also report `fail` for other reasons.
    pub failed_cas_observed: bool,
}

impl Register {
    /// `register`: read and write.
    pub fn plain() -> Register {
        Register::default()
    }

    /// `cas-register`: read, write and cas.
    pub fn cas(failed_cas_observed: bool) -> Register {
        Register {
            cas: true,
            failed_cas_observed,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegisterInput {
    Read,
    Write(u32),
    Cas(u32, u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegisterOutput {
    /// What a read returned.
    Value(u32),
    /// A write or cas that took effect.
    Done,
    /// A cas that failed (kept only under `--failed-cas observed`).
    CasFailed,
}

fn unset(ctx: &Interner) -> u32 {
    ctx.get(&Value::Null).unwrap_or(UNSET)
}

impl Model for Register {
    type Input = RegisterInput;
    type Output = RegisterOutput;
    type State = u32;
    type Ctx = Interner;

    fn name(&self) -> &str {
        if self.cas {
            "cas-register"
        } else {
            "register"
        }
    }

    fn keep_failed(&self, op: &Operation) -> bool {
        self.cas && self.failed_cas_observed && op.f == "cas"
    }

    fn prepare(
        &self,
        op: &Operation,
        ctx: &mut Interner,
    ) -> Result<Option<(RegisterInput, Option<RegisterOutput>)>, String> {
        let known = op.outcome != Outcome::Info;
        match op.f.as_str() {
            "read" | "r" => {
                if !known {
                    return Ok(None);
                }
                let v = ctx.intern(&op.output);
                Ok(Some((RegisterInput::Read, Some(RegisterOutput::Value(v)))))
            }
            "write" | "w" => {
                let v = ctx.intern(&op.input);
                Ok(Some((
                    RegisterInput::Write(v),
                    known.then_some(RegisterOutput::Done),
                )))
            }
            "cas" if self.cas => {
                let (from, to) = match op.input.as_list() {
                    Some([from, to]) => (ctx.intern(from), ctx.intern(to)),
                    _ => {
                        return Err(format!(
                            "cas needs a value [expected new], got {}",
                            op.input.to_edn()
                        ))
                    }
                };
                let output = match op.outcome {
                    Outcome::Ok => Some(RegisterOutput::Done),
                    Outcome::Fail => Some(RegisterOutput::CasFailed),
                    Outcome::Info => None,
                };
                Ok(Some((RegisterInput::Cas(from, to), output)))
            }
            "cas" => Err("the register model has no cas: use --model cas-register".into()),
            f => Err(format!(
                "the {} model has no operation '{f}' (expected read, write{})",
                self.name(),
                if self.cas { " or cas" } else { "" }
            )),
        }
    }

    fn init(&self, ctx: &Interner) -> u32 {
        unset(ctx)
    }

    fn step(
        &self,
        _ctx: &Interner,
        &s: &u32,
        input: &RegisterInput,
        output: Option<&RegisterOutput>,
    ) -> Option<u32> {
        match (*input, output) {
            (RegisterInput::Read, Some(&RegisterOutput::Value(v))) => (s == v).then_some(s),
            (RegisterInput::Read, _) => Some(s),
            (RegisterInput::Write(v), _) => Some(v),
            (RegisterInput::Cas(from, to), Some(RegisterOutput::Done)) => (s == from).then_some(to),
            (RegisterInput::Cas(from, to), None) => Some(if s == from { to } else { s }),
            (RegisterInput::Cas(from, _), Some(RegisterOutput::CasFailed)) => {
                (s != from).then_some(s)
            }
            (RegisterInput::Cas(..), Some(RegisterOutput::Value(_))) => None,
        }
    }

    /// An unknown write (or cas) of a value that no read returned and no cas expected can
    /// always be taken to have never happened: had it happened, nothing until the next write
    /// could have observed the register, so dropping it leaves a valid order valid. Under
    /// `--failed-cas observed` a failed cas observes "not X", which a dropped write can break,
    /// so nothing is pruned then.
    fn prunable(&self, _ctx: &Interner, ops: &[Prepared<Self>]) -> Vec<bool> {
        let mut prune = vec![false; ops.len()];
        if ops
            .iter()
            .any(|o| o.output == Some(RegisterOutput::CasFailed))
        {
            return prune;
        }
        let mut observed = std::collections::HashSet::new();
        for o in ops {
            match (o.input, o.output) {
                (RegisterInput::Read, Some(RegisterOutput::Value(v))) => {
                    observed.insert(v);
                }
                (RegisterInput::Cas(from, _), _) => {
                    observed.insert(from);
                }
                _ => {}
            }
        }
        for (p, o) in prune.iter_mut().zip(ops) {
            if o.optional() {
                *p = match o.input {
                    RegisterInput::Write(v) | RegisterInput::Cas(_, v) => !observed.contains(&v),
                    RegisterInput::Read => true,
                };
            }
        }
        prune
    }

    fn read_only(&self, input: &RegisterInput, output: Option<&RegisterOutput>) -> bool {
        matches!(
            (input, output),
            (RegisterInput::Read, _) | (RegisterInput::Cas(..), Some(RegisterOutput::CasFailed))
        )
    }

    fn describe_state(&self, ctx: &Interner, &s: &u32) -> String {
        if s == UNSET || ctx.value(s).is_null() {
            "unset".into()
        } else {
            ctx.value(s).to_edn()
        }
    }
}
