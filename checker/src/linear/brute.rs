//! A brute-force reference checker: tries every order of the operations that respects real
//! time, with every subset of the unknown operations, and no memo, pruning or cleverness. For
//! tiny histories only (the tests cross-check the fast search against it).

use super::model::{is_definite, Model};
use crate::error::HistoryError;
use crate::history::{History, Outcome};
use crate::value::Value;
use crate::Verdict;

struct Op<M: Model> {
    input: M::Input,
    output: Option<M::Output>,
    call: usize,
    /// `None` for unknown outcomes.
    ret: Option<usize>,
}

/// Checks by enumeration. Partitions with more than 20 operations are refused (`Err`).
pub fn brute_force<M: Model>(model: &M, history: &History) -> Result<Verdict, HistoryError> {
    let ops = history.operations()?;
    let mut groups: Vec<(Option<Value>, Vec<usize>)> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        if op.outcome == Outcome::Fail && !model.keep_failed(op) {
            continue;
        }
        let key = model.partition_key(op);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(i),
            None => groups.push((key, vec![i])),
        }
    }
    let mut verdict = Verdict::Valid;
    for (_, members) in groups {
        let mut ctx = M::Ctx::default();
        let mut part: Vec<Op<M>> = Vec::new();
        for i in members {
            let op = &ops[i];
            let prepared = model
                .prepare(op, &mut ctx)
                .map_err(|m| history.error_at(op.invoke_pos, m))?;
            if let Some((input, output)) = prepared {
                let definite = output.is_some() && is_definite(op) && op.complete_pos.is_some();
                part.push(Op {
                    input,
                    output: if definite { output } else { None },
                    call: op.invoke_pos,
                    ret: if definite { op.complete_pos } else { None },
                });
            }
        }
        if part.len() > 20 {
            return Err(HistoryError::Model(format!(
                "brute force refuses a partition of {} operations",
                part.len()
            )));
        }
        // `finish` wants the engine's Prepared ops.
        let prepared: Vec<super::Prepared<M>> = part
            .iter()
            .enumerate()
            .map(|(i, o)| super::Prepared {
                input: o.input.clone(),
                output: o.output.clone(),
                op: i,
                call: o.call,
                ret: o.ret,
            })
            .collect();
        model.finish(&mut ctx, &prepared);
        let init = model.init(&ctx);
        if !explore(model, &ctx, &part, 0, &init) {
            verdict = Verdict::Invalid;
        }
    }
    Ok(verdict)
}

fn explore<M: Model>(
    model: &M,
    ctx: &M::Ctx,
    ops: &[Op<M>],
    placed: u32,
    state: &M::State,
) -> bool {
    let all_definite = ops
        .iter()
        .enumerate()
        .all(|(i, o)| o.ret.is_none() || placed & (1 << i) != 0);
    if all_definite {
        return true;
    }
    for (i, o) in ops.iter().enumerate() {
        if placed & (1 << i) != 0 {
            continue;
        }
        // Real time: every unplaced definite op must not have completed before this one began.
        let blocked = ops
            .iter()
            .enumerate()
            .any(|(j, p)| j != i && placed & (1 << j) == 0 && p.ret.is_some_and(|r| r < o.call));
        if blocked {
            continue;
        }
        if let Some(next) = model.step(ctx, state, &o.input, o.output.as_ref()) {
            if explore(model, ctx, ops, placed | (1 << i), &next) {
                return true;
            }
        }
    }
    false
}
