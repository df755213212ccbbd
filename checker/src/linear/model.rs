//! The `Model` trait: a sequential specification the linearizability search checks against.
//!
//! A model is pure: `step(state, input, output)` says whether an operation with that input could
//! have returned that output in that state, and if so what the state becomes. Everything else
//! (partitioning, interning, pruning, descriptions) has defaults, so a new model is a few lines:
//!
//! ```
//! use ordeal_checker::linear::{Interner, Model};
//! use ordeal_checker::Operation;
//!
//! /// A counter: `add n` (output ignored) and `read` (output = the count).
//! struct Counter;
//!
//! impl Model for Counter {
//!     type Input = Option<i64>; // Some(n) for add, None for read
//!     type Output = i64;
//!     type State = i64;
//!     type Ctx = ();
//!
//!     fn name(&self) -> &str {
//!         "counter"
//!     }
//!     fn prepare(
//!         &self,
//!         op: &Operation,
//!         _ctx: &mut (),
//!     ) -> Result<Option<(Option<i64>, Option<i64>)>, String> {
//!         let known = op.outcome == ordeal_checker::Outcome::Ok;
//!         match op.f.as_str() {
//!             "add" => Ok(Some((op.input.as_int(), None))),
//!             "read" if known => Ok(Some((None, op.output.as_int()))),
//!             "read" => Ok(None), // an unknown read has no effect: drop it
//!             f => Err(format!("counter: unknown f {f}")),
//!         }
//!     }
//!     fn init(&self, _ctx: &()) -> i64 {
//!         0
//!     }
//!     fn step(&self, _: &(), s: &i64, input: &Option<i64>, out: Option<&i64>) -> Option<i64> {
//!         match (input, out) {
//!             (Some(n), _) => Some(s + n),
//!             (None, Some(v)) => (v == s).then_some(*s),
//!             (None, None) => Some(*s),
//!         }
//!     }
//! }
//! # let _ = Interner::default();
//! ```

use crate::history::{Operation, Outcome};
use crate::value::Value;
use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;

/// A sequential specification. See the module documentation for an example.
pub trait Model: Send + Sync {
    /// An operation's argument, in compact form (values interned by `prepare`).
    type Input: Clone + Eq + Hash + Debug + Send + Sync;
    /// An operation's observed result, in compact form.
    type Output: Clone + Eq + Hash + Debug + Send + Sync;
    /// The object's state. Cloned and hashed on every step: keep it small.
    type State: Clone + Eq + Hash + Debug + Send + Sync;
    /// Per-partition tables filled by `prepare` and `finish` (interned values, ...), read by
    /// `step`. Use `()` when there is nothing to share.
    type Ctx: Default + Send + Sync;

    /// The model's name, as `--model` spells it.
    fn name(&self) -> &str;

    /// The object an operation acts on. Operations on different objects are checked
    /// independently (linearizability is compositional). `None` groups everything together.
    fn partition_key(&self, op: &Operation) -> Option<Value> {
        op.key.clone()
    }

    /// Whether a failed operation is still an observation for this model (a failed cas under
    /// `--failed-cas observed`). By default, as in Jepsen and Knossos, a `fail` did not happen
    /// and is dropped before `prepare` sees it.
    fn keep_failed(&self, _op: &Operation) -> bool {
        false
    }

    /// Converts an operation to `(input, output)`. `output` must be `None` exactly when the
    /// outcome is unknown (`Outcome::Info`): the step then has to accept any result.
    /// `Ok(None)` drops the operation (it cannot affect the state nor observe it, e.g. an
    /// unknown read). `Err` names what is wrong with the operation.
    #[allow(clippy::type_complexity)]
    fn prepare(
        &self,
        op: &Operation,
        ctx: &mut Self::Ctx,
    ) -> Result<Option<(Self::Input, Option<Self::Output>)>, String>;

    /// Called once per partition after every operation went through `prepare`.
    fn finish(&self, _ctx: &mut Self::Ctx, _ops: &[Prepared<Self>]) {}

    /// The state before any operation.
    fn init(&self, ctx: &Self::Ctx) -> Self::State;

    /// Applies one operation. `output` is `None` when the outcome is unknown. `None` means
    /// the operation cannot have returned `output` in `state`.
    fn step(
        &self,
        ctx: &Self::Ctx,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;

    /// Which unknown (`info`) operations may be dropped up front because choosing "it never
    /// happened" is always allowed for them (e.g. a write of a value nobody ever read). Only
    /// entries for optional ops may be `true`. The default prunes nothing.
    fn prunable(&self, _ctx: &Self::Ctx, ops: &[Prepared<Self>]) -> Vec<bool> {
        vec![false; ops.len()]
    }

    /// Whether an operation never changes the state (a read): `step` returns the state it was
    /// given, or `None`. The search places such an operation as soon as it is legal, without
    /// trying alternatives, which is always allowed. Defaults to `false` (always safe).
    fn read_only(&self, _input: &Self::Input, _output: Option<&Self::Output>) -> bool {
        false
    }

    /// For a model whose state is a product of independent parts (a map of keys checked as
    /// one object): the part an operation reads and writes. When every operation names one,
    /// the search uses that operations on different parts commute: at each point it only tries
    /// operations on the part of the operation that must complete next, which leaves some
    /// valid order whenever there is one. `None` (the default): the op may touch everything.
    fn component(&self, _input: &Self::Input) -> Option<u32> {
        None
    }

    /// The state with every component but `component` reset to its initial value, so that
    /// per-component results can be shared. The default keeps the whole state (correct, shares
    /// less).
    fn project(&self, state: &Self::State, _component: u32) -> Self::State {
        state.clone()
    }

    /// A person-readable state, for counterexamples.
    fn describe_state(&self, _ctx: &Self::Ctx, state: &Self::State) -> String {
        format!("{state:?}")
    }

    /// Bytes a state takes in the memo, counted against the memory budget.
    fn state_bytes(&self, _state: &Self::State) -> usize {
        std::mem::size_of::<Self::State>()
    }
}

/// One operation after `prepare`.
#[derive(Debug)]
pub struct Prepared<M: Model + ?Sized> {
    pub input: M::Input,
    /// `None`: unknown outcome; the op may take effect at any point after its invocation, or
    /// never.
    pub output: Option<M::Output>,
    /// Index of the operation in the slice handed to the checker.
    pub op: usize,
    /// Position of the invocation in the history (the real-time order).
    pub call: usize,
    /// Position of the completion; `None` for unknown outcomes (they never constrain anyone).
    pub ret: Option<usize>,
}

impl<M: Model + ?Sized> Clone for Prepared<M> {
    fn clone(&self) -> Self {
        Prepared {
            input: self.input.clone(),
            output: self.output.clone(),
            op: self.op,
            call: self.call,
            ret: self.ret,
        }
    }
}

impl<M: Model + ?Sized> Prepared<M> {
    /// Unknown outcome: may happen or not.
    pub fn optional(&self) -> bool {
        self.output.is_none()
    }
}

/// Whether an operation is definitely completed in the sense of the search: `ok`, or a failed
/// op that the model keeps as an observation.
pub(crate) fn is_definite(op: &Operation) -> bool {
    op.outcome != Outcome::Info
}

/// Interns values into dense `u32` ids, so that states and comparisons are integers.
#[derive(Clone, Debug, Default)]
pub struct Interner {
    ids: HashMap<Value, u32>,
    values: Vec<Value>,
}

impl Interner {
    /// The id of `v`, adding it if new.
    pub fn intern(&mut self, v: &Value) -> u32 {
        if let Some(&id) = self.ids.get(v) {
            return id;
        }
        let id = self.values.len() as u32;
        self.values.push(v.clone());
        self.ids.insert(v.clone(), id);
        id
    }

    /// The id of `v` if it was interned.
    pub fn get(&self, v: &Value) -> Option<u32> {
        self.ids.get(v).copied()
    }

    pub fn value(&self, id: u32) -> &Value {
        &self.values[id as usize]
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}
