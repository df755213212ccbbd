//! `multi-register`, Knossos's model of several registers read and written by transactions:
//! every op is a `txn` whose value is a list of micro-ops `[:read k v]` / `[:write k v]`
//! (`r` / `w` too), applied in order and atomically. A read of nil is always legal (the
//! invocation does not know the value yet; Knossos treats a nil read the same). Registers
//! start at the given initial values, or nil.

use super::model::{Interner, Model};
use crate::history::{Operation, Outcome};
use crate::value::Value;

/// A micro-op: whether it writes, the register (interned key) and, for a write, its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Micro {
    pub write: bool,
    pub key: u32,
    /// The written value; unused for reads.
    pub value: u32,
}

/// Values interned for one partition, and the registers' initial values.
#[derive(Debug, Default)]
pub struct MultiCtx {
    pub keys: Interner,
    pub values: Interner,
    /// Initial value by key id, filled for every key by `finish`.
    initial: Vec<u32>,
}

/// The model; `initial` maps register names to their initial values.
#[derive(Clone, Debug, Default)]
pub struct MultiRegister {
    pub initial: Vec<(Value, Value)>,
}

/// Id of nil in a read: "any value".
const ANY: u32 = u32::MAX;

impl MultiRegister {
    /// From an EDN or JSON map of register -> initial value (`nil` / absent: all nil).
    pub fn new(initial: &Value) -> Result<MultiRegister, String> {
        match initial {
            Value::Null => Ok(MultiRegister::default()),
            Value::Map(entries) => Ok(MultiRegister {
                initial: entries.clone(),
            }),
            other => Err(format!(
                "multi-register: the initial value must be a map of register to value, got {}",
                other.to_edn()
            )),
        }
    }
}

fn micro_ops(v: &Value) -> Result<Vec<(bool, &Value, &Value)>, String> {
    let items = v
        .as_list()
        .ok_or_else(|| format!("a txn needs a list of micro-ops, got {}", v.to_edn()))?;
    items
        .iter()
        .map(|m| match m.as_list() {
            Some([f, k, v]) => match f.as_str() {
                Some("read" | "r") => Ok((false, k, v)),
                Some("write" | "w") => Ok((true, k, v)),
                _ => Err(format!(
                    "micro-op {} is neither a read nor a write",
                    m.to_edn()
                )),
            },
            _ => Err(format!("micro-op {} is not [f k v]", m.to_edn())),
        })
        .collect()
}

impl Model for MultiRegister {
    type Input = Box<[Micro]>;
    /// What each read returned (`ANY` for nil and for writes).
    type Output = Box<[u32]>;
    /// The value of every register, by key id.
    type State = Box<[u32]>;
    type Ctx = MultiCtx;

    fn name(&self) -> &str {
        "multi-register"
    }

    fn prepare(
        &self,
        op: &Operation,
        ctx: &mut MultiCtx,
    ) -> Result<Option<(Box<[Micro]>, Option<Box<[u32]>>)>, String> {
        if op.f != "txn" {
            return Err(format!(
                "the multi-register model has no operation '{}' (expected txn)",
                op.f
            ));
        }
        let known = op.outcome == Outcome::Ok;
        // A completed txn carries the values its reads saw; writes are the same in both.
        let invoked = micro_ops(&op.input)?;
        let completed = if known {
            let c = micro_ops(&op.output)?;
            if c.len() != invoked.len()
                || c.iter()
                    .zip(&invoked)
                    .any(|(a, b)| a.0 != b.0 || a.1 != b.1)
            {
                return Err(format!(
                    "the completion's micro-ops {} do not match the invocation's",
                    op.output.to_edn()
                ));
            }
            c
        } else {
            invoked
        };
        let mut input = Vec::with_capacity(completed.len());
        let mut output = Vec::with_capacity(completed.len());
        for (write, k, v) in completed {
            let key = ctx.keys.intern(k);
            let value = ctx.values.intern(v);
            input.push(Micro {
                write,
                key,
                value: if write { value } else { ANY },
            });
            output.push(if write || v.is_null() { ANY } else { value });
        }
        if !known && input.iter().all(|m| !m.write) {
            // An unknown read-only txn observes nothing and changes nothing.
            return Ok(None);
        }
        Ok(Some((input.into(), known.then(|| output.into()))))
    }

    fn finish(&self, ctx: &mut MultiCtx, _ops: &[super::model::Prepared<Self>]) {
        let nil = ctx.values.intern(&Value::Null);
        for (k, _) in &self.initial {
            ctx.keys.intern(k);
        }
        ctx.initial = vec![nil; ctx.keys.len()];
        for (k, v) in &self.initial {
            let key = ctx.keys.intern(k) as usize;
            ctx.initial[key] = ctx.values.intern(v);
        }
    }

    fn init(&self, ctx: &MultiCtx) -> Box<[u32]> {
        ctx.initial.clone().into()
    }

    fn step(
        &self,
        _ctx: &MultiCtx,
        s: &Box<[u32]>,
        input: &Box<[Micro]>,
        output: Option<&Box<[u32]>>,
    ) -> Option<Box<[u32]>> {
        let mut next: Option<Box<[u32]>> = None;
        for (i, m) in input.iter().enumerate() {
            let current = next.as_ref().unwrap_or(s);
            if m.write {
                if current[m.key as usize] != m.value {
                    next.get_or_insert_with(|| s.clone())[m.key as usize] = m.value;
                }
            } else if let Some(out) = output {
                if out[i] != ANY && out[i] != current[m.key as usize] {
                    return None;
                }
            }
        }
        Some(next.unwrap_or_else(|| s.clone()))
    }

    fn read_only(&self, input: &Box<[Micro]>, _output: Option<&Box<[u32]>>) -> bool {
        input.iter().all(|m| !m.write)
    }

    fn describe_state(&self, ctx: &MultiCtx, s: &Box<[u32]>) -> String {
        let entries: Vec<String> = s
            .iter()
            .enumerate()
            .map(|(k, &v)| {
                format!(
                    "{} {}",
                    ctx.keys.value(k as u32).to_edn(),
                    ctx.values.value(v).to_edn()
                )
            })
            .collect();
        format!("{{{}}}", entries.join(", "))
    }

    fn state_bytes(&self, s: &Box<[u32]>) -> usize {
        16 + 4 * s.len()
    }
}
