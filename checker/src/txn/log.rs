//! A compact form of a transactional history: one `Txn` per operation, micro-ops in one arena,
//! list-append read results in another, keys interned to dense ids and elements packed into a
//! `u64`. A million transactions of four micro-ops fit in a few hundred megabytes this way,
//! where the same history as `Value` trees takes gigabytes.

use crate::error::HistoryError;
use crate::history::{Event, History, Outcome, Process};
use crate::read::{stream_path, Format};
use crate::value::Value;
use rustc_hash::FxHashMap;
use std::path::Path;

/// An element (appended value, written value, register read) packed into 64 bits: integers in
/// ±2^62 as `i << 1`, anything else interned as `(id << 1) | 1`; `NIL` is the register's
/// unset value.
pub type Elem = u64;
pub const NIL: Elem = u64::MAX;
/// `complete_pos` of an operation that never completed.
pub const NO_POS: u32 = u32::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MopKind {
    Append,
    Read,
    Write,
}

/// One micro-op. For a list-append read, `read_start..read_start+read_len` indexes
/// `TxnLog::elems`; for a register read, `value` is the value read. `known` is false for reads
/// whose result we do not have (invocations, `info` completions).
#[derive(Clone, Copy, Debug)]
pub struct Mop {
    pub kind: MopKind,
    pub known: bool,
    pub key: u32,
    pub value: Elem,
    pub read_start: u32,
    pub read_len: u32,
}

#[derive(Clone, Copy, Debug)]
pub struct Txn {
    pub process: u64,
    pub outcome: Outcome,
    /// Positions of the invocation and completion in the event sequence; they order operations
    /// in real time, as Elle does with history indices.
    pub invoke_pos: u32,
    pub complete_pos: u32,
    /// The history index to show a person: the completion's, or the invocation's.
    pub index: u64,
    pub mop_start: u32,
    pub mop_len: u32,
}

/// The compact history. Build it with `TxnLog::from_history` or `LogBuilder`.
#[derive(Clone, Debug, Default)]
pub struct TxnLog {
    pub txns: Vec<Txn>,
    pub mops: Vec<Mop>,
    pub elems: Vec<Elem>,
    keys: Vec<Value>,
    key_ids: FxHashMap<Value, u32>,
    others: Vec<Value>,
    other_ids: FxHashMap<Value, u64>,
}

const INT_LIMIT: i64 = 1 << 62;

impl TxnLog {
    pub fn mops_of(&self, t: usize) -> &[Mop] {
        let tx = &self.txns[t];
        &self.mops[tx.mop_start as usize..(tx.mop_start + tx.mop_len) as usize]
    }

    pub fn read_elems(&self, m: &Mop) -> &[Elem] {
        &self.elems[m.read_start as usize..(m.read_start + m.read_len) as usize]
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    pub fn key_value(&self, k: u32) -> &Value {
        &self.keys[k as usize]
    }

    pub fn intern_key(&mut self, key: &Value) -> u32 {
        if let Some(&id) = self.key_ids.get(key) {
            return id;
        }
        let id = self.keys.len() as u32;
        self.keys.push(key.clone());
        self.key_ids.insert(key.clone(), id);
        id
    }

    pub fn encode(&mut self, v: &Value) -> Elem {
        match v {
            Value::Null => NIL,
            Value::Int(i) if (-INT_LIMIT..INT_LIMIT).contains(i) => (*i << 1) as u64,
            other => {
                if let Some(&id) = self.other_ids.get(other) {
                    return (id << 1) | 1;
                }
                let id = self.others.len() as u64;
                self.others.push(other.clone());
                self.other_ids.insert(other.clone(), id);
                (id << 1) | 1
            }
        }
    }

    pub fn decode(&self, e: Elem) -> Value {
        if e == NIL {
            Value::Null
        } else if e & 1 == 0 {
            Value::Int((e as i64) >> 1)
        } else {
            self.others[(e >> 1) as usize].clone()
        }
    }

    /// The transaction as a person would read it: `[["append", k, v], ["r", k, [..]], ..]`.
    pub fn txn_value(&self, t: usize) -> Value {
        let mut out = Vec::with_capacity(self.txns[t].mop_len as usize);
        for m in self.mops_of(t) {
            let key = self.key_value(m.key).clone();
            let item = match m.kind {
                MopKind::Append => vec!["append".into(), key, self.decode(m.value)],
                MopKind::Write => vec!["w".into(), key, self.decode(m.value)],
                MopKind::Read => {
                    let v = if !m.known {
                        Value::Null
                    } else if m.read_len == u32::MAX {
                        self.decode(m.value)
                    } else {
                        Value::List(self.read_elems(m).iter().map(|&e| self.decode(e)).collect())
                    };
                    vec!["r".into(), key, v]
                }
            };
            out.push(Value::List(item));
        }
        Value::List(out)
    }

    /// Converts a history: every client operation must be a transaction (its value a list of
    /// micro-ops). Failed operations keep their writes (for aborted-read checks); reads of
    /// `info` operations are unknown.
    pub fn from_history(h: &History) -> Result<TxnLog, HistoryError> {
        let mut stream = TxnStream::with_capacity(h.events.len() / 2 + 1);
        for (pos, e) in h.events.iter().enumerate() {
            let line = h.line_of(pos).unwrap_or(0);
            stream.push(e, line).map_err(|m| h.error_at(pos, m))?;
        }
        stream
            .finish(|p| p)
            .map_err(|e| h.error_at(e.pos as usize, e.message))
    }

    fn push_op(
        &mut self,
        process: u64,
        outcome: Outcome,
        invoke: (&Event, u32),
        complete: Option<(&Event, u32)>,
    ) -> Result<(), String> {
        let pos = complete.map_or(invoke.1, |c| c.1);
        let output = complete.map(|c| &c.0.value);
        // An info completion usually repeats the invocation; prefer whichever carries micro-ops.
        let value = match (outcome, output) {
            (Outcome::Ok, Some(v)) => v,
            (_, Some(v @ Value::List(_))) => v,
            _ => &invoke.0.value,
        };
        let Value::List(items) = value else {
            return Err(format!(
                "a transaction's value must be a list of micro-ops, got {}",
                value.to_edn()
            ));
        };
        let mop_start = self.mops.len() as u32;
        for item in items {
            let mop = self.parse_mop(item, outcome)?;
            self.mops.push(mop);
        }
        self.txns.push(Txn {
            process,
            outcome,
            invoke_pos: invoke.1,
            complete_pos: complete.map_or(NO_POS, |c| c.1),
            index: pos as u64,
            mop_start,
            mop_len: self.mops.len() as u32 - mop_start,
        });
        Ok(())
    }

    fn parse_mop(&mut self, item: &Value, outcome: Outcome) -> Result<Mop, String> {
        let parts = match item {
            Value::List(p) if p.len() == 3 => p,
            other => {
                return Err(format!(
                    "a micro-op must be [f key value], got {}",
                    other.to_edn()
                ))
            }
        };
        let key = self.intern_key(&parts[1]);
        let f = parts[0].as_str().unwrap_or("");
        let mut mop = Mop {
            kind: MopKind::Read,
            known: true,
            key,
            value: NIL,
            read_start: 0,
            read_len: u32::MAX,
        };
        match f {
            "append" => {
                mop.kind = MopKind::Append;
                mop.value = self.encode(&parts[2]);
            }
            "w" | "write" => {
                mop.kind = MopKind::Write;
                mop.value = self.encode(&parts[2]);
            }
            "r" | "read" => {
                // Only an ok completion tells us what was read.
                mop.known = outcome == Outcome::Ok;
                if mop.known {
                    match &parts[2] {
                        Value::List(items) => {
                            mop.read_start = self.elems.len() as u32;
                            for e in items {
                                let e = self.encode(e);
                                self.elems.push(e);
                            }
                            mop.read_len = items.len() as u32;
                        }
                        // A register read (or, for list-append, nil standing for []).
                        v => mop.value = self.encode(v),
                    }
                }
            }
            _ => {
                return Err(format!(
                    "unknown micro-op {} (expected append, r or w)",
                    item.to_edn()
                ))
            }
        }
        Ok(mop)
    }

    /// Rebuilds a `History` (invocations with unknown reads, then completions) in event order.
    pub fn to_history(&self) -> History {
        let mut events = Vec::with_capacity(self.txns.len() * 2);
        let Ok(()) = self.for_each_event(|e| {
            events.push(e);
            Ok::<(), std::convert::Infallible>(())
        });
        History::new(events)
    }

    /// The events of `to_history`, one at a time, so that a big history can be written out
    /// without being held as `Value` trees. Times are event positions in microseconds.
    pub fn for_each_event<E>(&self, mut sink: impl FnMut(Event) -> Result<(), E>) -> Result<(), E> {
        use crate::history::EventType;
        // (position, txn, is the completion)
        let mut slots: Vec<(u32, u32, bool)> = Vec::with_capacity(self.txns.len() * 2);
        for (t, tx) in self.txns.iter().enumerate() {
            slots.push((tx.invoke_pos, t as u32, false));
            if tx.complete_pos != NO_POS {
                slots.push((tx.complete_pos, t as u32, true));
            }
        }
        slots.sort_unstable_by_key(|s| s.0);
        for (index, (pos, t, completion)) in slots.into_iter().enumerate() {
            let tx = &self.txns[t as usize];
            let full = self.txn_value(t as usize);
            let (kind, value) = match (completion, tx.outcome) {
                (true, Outcome::Ok) => (EventType::Ok, full),
                (true, Outcome::Fail) => (EventType::Fail, invocation_of(full)),
                (true, Outcome::Info) => (EventType::Info, invocation_of(full)),
                (false, _) => (EventType::Invoke, invocation_of(full)),
            };
            let mut e = Event::new(Process::Client(tx.process), kind, "txn", value)
                .with_time(pos as i64 * 1000);
            e.index = index as u64;
            sink(e)?;
        }
        Ok(())
    }
}

/// A transaction as its invocation shows it: reads with unknown (nil) results.
fn invocation_of(txn: Value) -> Value {
    let Value::List(mops) = txn else {
        return txn;
    };
    Value::List(
        mops.into_iter()
            .map(|m| match m {
                Value::List(mut parts) if parts.len() == 3 && parts[0].as_str() == Some("r") => {
                    parts[2] = Value::Null;
                    Value::List(parts)
                }
                other => other,
            })
            .collect(),
    )
}

/// Builds a `TxnLog` from events as they arrive, pairing each invocation with its completion
/// (as `History::operations` does) and keeping only the pending invocations besides the compact
/// log: a history file never has to be held as `Value` trees (see `read_log`).
pub struct TxnStream {
    log: TxnLog,
    /// Per process, the pending invocation, its position and its source line.
    pending: FxHashMap<u64, (Event, u32, usize)>,
    /// Position of the next event (nemesis events count, as they do in `History::events`).
    next_pos: u32,
}

/// An error about an invocation that `TxnStream::finish` closed.
#[derive(Debug)]
pub struct PendingError {
    pub pos: u32,
    /// The source line given to `TxnStream::push`.
    pub line: usize,
    pub message: String,
}

/// Positions are `u32`, with `NO_POS` reserved.
const MAX_EVENTS: u32 = NO_POS - 1;

impl Default for TxnStream {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl TxnStream {
    pub fn with_capacity(txns: usize) -> TxnStream {
        let mut log = TxnLog::default();
        log.txns.reserve(txns);
        TxnStream {
            log,
            pending: FxHashMap::default(),
            next_pos: 0,
        }
    }

    /// Takes the next event of the history and the line it came from (for later messages).
    /// The error is a message about this event.
    pub fn push(&mut self, e: &Event, line: usize) -> Result<(), String> {
        use crate::history::EventType;
        if self.next_pos >= MAX_EVENTS {
            return Err(format!(
                "more than {MAX_EVENTS} events; the transactional checker takes at most that many"
            ));
        }
        let pos = self.next_pos;
        self.next_pos += 1;
        let Process::Client(p) = e.process else {
            return Ok(());
        };
        match e.kind {
            EventType::Invoke => {
                if let Some((open, open_pos, _)) = self.pending.get(&p) {
                    return Err(format!(
                        "process {p} invoked {} while its {} (event {open_pos}) was still pending",
                        e.f, open.f
                    ));
                }
                self.pending.insert(p, (e.clone(), pos, line));
            }
            kind => {
                let Some((invoke, invoke_pos, _)) = self.pending.remove(&p) else {
                    return Err(format!(
                        "{} of {} on process {p} has no pending invoke",
                        kind.as_str(),
                        e.f
                    ));
                };
                let outcome = match kind {
                    EventType::Ok => Outcome::Ok,
                    EventType::Fail => Outcome::Fail,
                    _ => Outcome::Info,
                };
                self.log
                    .push_op(p, outcome, (&invoke, invoke_pos), Some((e, pos)))?;
            }
        }
        Ok(())
    }

    /// Ends the history: invocations that never completed become `info` transactions.
    /// `renumber` gives each process its final number (see `read::Processes`).
    pub fn finish(mut self, renumber: impl Fn(u64) -> u64) -> Result<TxnLog, PendingError> {
        let mut open: Vec<(u64, (Event, u32, usize))> = self.pending.drain().collect();
        open.sort_unstable_by_key(|(_, (_, pos, _))| *pos);
        for (p, (invoke, pos, line)) in open {
            self.log
                .push_op(p, Outcome::Info, (&invoke, pos), None)
                .map_err(|message| PendingError { pos, line, message })?;
        }
        let mut log = self.log;
        for t in &mut log.txns {
            t.process = renumber(t.process);
        }
        // Completion order above; the checker wants invocation order.
        log.txns.sort_by_key(|t| t.invoke_pos);
        log.txns.shrink_to_fit();
        log.mops.shrink_to_fit();
        log.elems.shrink_to_fit();
        Ok(log)
    }
}

/// Reads a transactional history file straight into the compact form, streaming (see
/// `read::stream_path`): memory is the compact log plus, for formats other than JSONL, the
/// file's text.
pub fn read_log(path: &Path, format: Format) -> Result<TxnLog, HistoryError> {
    let mut stream = TxnStream::default();
    let processes = stream_path(path, format, &mut |e, line| stream.push(&e, line))?;
    stream
        .finish(|p| processes.renumber(p))
        .map_err(|e| HistoryError::Parse {
            path: path.to_path_buf(),
            line: e.line,
            message: e.message,
        })
}

/// Builds a `TxnLog` directly (the generator uses it): transactions are appended in any order
/// with their event positions.
pub struct LogBuilder {
    pub log: TxnLog,
}

impl Default for LogBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LogBuilder {
    pub fn new() -> LogBuilder {
        LogBuilder {
            log: TxnLog::default(),
        }
    }

    pub fn key(&mut self, k: i64) -> u32 {
        self.log.intern_key(&Value::Int(k))
    }

    /// Starts a transaction; push its micro-ops with the methods below, then `finish`.
    pub fn begin(&mut self) -> u32 {
        self.log.mops.len() as u32
    }

    pub fn append(&mut self, key: u32, v: i64) {
        let value = self.log.encode(&Value::Int(v));
        self.log.mops.push(Mop {
            kind: MopKind::Append,
            known: true,
            key,
            value,
            read_start: 0,
            read_len: u32::MAX,
        });
    }

    pub fn write(&mut self, key: u32, v: i64) {
        let value = self.log.encode(&Value::Int(v));
        self.log.mops.push(Mop {
            kind: MopKind::Write,
            known: true,
            key,
            value,
            read_start: 0,
            read_len: u32::MAX,
        });
    }

    pub fn read_list(&mut self, key: u32, values: Option<&[i64]>) {
        let mut mop = Mop {
            kind: MopKind::Read,
            known: values.is_some(),
            key,
            value: NIL,
            read_start: 0,
            read_len: u32::MAX,
        };
        if let Some(vs) = values {
            mop.read_start = self.log.elems.len() as u32;
            mop.read_len = vs.len() as u32;
            for &v in vs {
                let e = self.log.encode(&Value::Int(v));
                self.log.elems.push(e);
            }
        }
        self.log.mops.push(mop);
    }

    /// A register read: `None` = unknown, `Some(None)` = nil.
    pub fn read_register(&mut self, key: u32, value: Option<Option<i64>>) {
        let v = match value {
            Some(Some(v)) => self.log.encode(&Value::Int(v)),
            _ => NIL,
        };
        self.log.mops.push(Mop {
            kind: MopKind::Read,
            known: value.is_some(),
            key,
            value: v,
            read_start: 0,
            read_len: u32::MAX,
        });
    }

    pub fn finish(
        &mut self,
        mop_start: u32,
        process: u64,
        outcome: Outcome,
        invoke_pos: u32,
        complete_pos: u32,
    ) {
        let mop_len = self.log.mops.len() as u32 - mop_start;
        self.log.txns.push(Txn {
            process,
            outcome,
            invoke_pos,
            complete_pos,
            index: if complete_pos == NO_POS {
                invoke_pos as u64
            } else {
                complete_pos as u64
            },
            mop_start,
            mop_len,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_round_trip() {
        let mut log = TxnLog::default();
        for v in [
            Value::Null,
            Value::Int(0),
            Value::Int(-7),
            Value::Int(1 << 62),
            Value::Int(i64::MIN),
            Value::Str("x".into()),
        ] {
            let e = log.encode(&v);
            assert_eq!(log.decode(e), v);
        }
        assert_ne!(
            log.encode(&Value::Int(1)),
            log.encode(&Value::Str("1".into()))
        );
    }
}
