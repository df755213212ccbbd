//! Checking a history file without holding the whole history: one pass pairs invocations with
//! completions as the file streams by and appends each operation, in a compact binary form,
//! to its partition's buffer; when the buffers together pass `CheckOptions::
//! stream_buffer_bytes` they go to an anonymous temporary file, each partition's as one
//! contiguous chunk. The partitions are then loaded and checked a batch at a time (in
//! parallel within a batch), each dropped once checked, so memory is bounded by the buffer, the
//! largest batch and the per-partition results, not by the history. Verdicts, counterexamples
//! (with their event positions and file lines) and errors are those of `check` on the whole
//! history: partitions are ordered by their first invocation, ops within one by invocation.
//!
//! What streams is decided by `read::stream_path`: JSONL is read a line batch at a time; the
//! other formats (EDN, Jepsen logs, JSON arrays) hold the file's text, but never its values.

use super::search::Budget;
use super::{build_report, check_partition, CheckOptions, LinearReport, OpTotals};
use super::{Model, PartitionResult};
use crate::error::HistoryError;
use crate::history::{Event, EventType, Operation, Outcome, Process};
use crate::read::{stream_path, Format, Processes};
use crate::value::Value;
use rayon::prelude::*;
use rustc_hash::FxHashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Checks the history in `path` against `model`, streaming (see the module documentation).
/// Gives what `check(model, &read_path(path, format)?, options)` gives, errors included
/// (`HistoryError::in_file(path)` names their line).
pub fn check_path<M: Model>(
    model: &M,
    path: &Path,
    format: Format,
    options: &CheckOptions,
) -> Result<LinearReport, HistoryError> {
    let start = Instant::now();
    let spill_dir = options.spill_dir.clone().unwrap_or_else(std::env::temp_dir);
    let mut spill = Spill::new(spill_dir, options.stream_buffer_bytes);
    let mut pairing = Pairing::default();
    // A history that breaks the pairing rules is reported as `check` reports it (an
    // `Invalid` error at the event), not as a parse error of the file.
    let mut broken: Option<HistoryError> = None;
    let streamed = stream_path(path, format, &mut |e, line| {
        let pos = pairing.next_pos;
        pairing
            .push(e, line, model, &mut spill)
            .inspect_err(|message| {
                broken = Some(HistoryError::Invalid {
                    line: Some(line),
                    index: pos,
                    message: message.clone(),
                });
            })
    });
    let processes = match (streamed, broken) {
        (Ok(processes), _) => processes,
        (Err(_), Some(err)) => return Err(err),
        (Err(err), None) => return Err(err),
    };
    let totals = pairing.finish(model, &mut spill)?;
    let Spill {
        mut parts, file, ..
    } = spill;
    // Partitions in the order `check` finds them: by their first (kept) invocation.
    parts.sort_by_key(|p| p.first_invoke);
    let budget = Budget::new(options.timeout.map(|t| start + t), options.memo_limit_bytes);
    let batch_ops = options.stream_batch_ops.max(1);
    let mut results: Vec<PartitionResult> = Vec::with_capacity(parts.len());
    let mut have_counterexample = false;
    let mut rest = &mut parts[..];
    while !rest.is_empty() {
        let mut ops = 0usize;
        let mut take = 0;
        while take < rest.len() && (take == 0 || ops < batch_ops) {
            ops += rest[take].count;
            take += 1;
        }
        let (batch, tail) = rest.split_at_mut(take);
        rest = tail;
        let checked: Vec<Result<PartitionResult, HistoryError>> = batch
            .par_iter_mut()
            .map(|part| {
                let loaded = part.load(file.as_ref(), &processes)?;
                check_partition(
                    model,
                    &|pos| loaded.line_of(pos),
                    &loaded.ops,
                    part.key.take(),
                    &(0..loaded.ops.len()).collect::<Vec<_>>(),
                    &budget,
                    options,
                )
            })
            .collect();
        for r in checked {
            let mut r = r?;
            // Only the first invalid partition's counterexample is reported: drop the others
            // now rather than holding one per invalid partition.
            if r.counterexample.is_some() {
                if have_counterexample {
                    r.counterexample = None;
                }
                have_counterexample = true;
            }
            results.push(r);
        }
    }
    Ok(build_report(model, results, totals, start, options))
}

/// An invocation waiting for its completion.
struct PendingOp {
    f: String,
    key: Option<Value>,
    input: Value,
    pos: usize,
    time: i64,
    line: usize,
}

/// Pairs events into operations as `History::operations` does, with the same errors.
#[derive(Default)]
struct Pairing {
    pending: FxHashMap<u64, PendingOp>,
    next_pos: usize,
    totals: OpTotals,
}

impl Pairing {
    fn push<M: Model>(
        &mut self,
        e: Event,
        line: usize,
        model: &M,
        spill: &mut Spill,
    ) -> Result<(), String> {
        let pos = self.next_pos;
        self.next_pos += 1;
        let Process::Client(p) = e.process else {
            return Ok(());
        };
        match e.kind {
            EventType::Invoke => {
                if let Some(open) = self.pending.get(&p) {
                    return Err(format!(
                        "process {p} invoked {} while its {} (event {}) was still pending",
                        e.f, open.f, open.pos
                    ));
                }
                self.pending.insert(
                    p,
                    PendingOp {
                        f: e.f,
                        key: e.key,
                        input: e.value,
                        pos,
                        time: e.time,
                        line,
                    },
                );
                Ok(())
            }
            kind => {
                let Some(invoke) = self.pending.remove(&p) else {
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
                let op = Operation {
                    process: Process::Client(p),
                    f: invoke.f,
                    key: invoke.key,
                    input: invoke.input,
                    output: e.value,
                    outcome,
                    invoke_pos: invoke.pos,
                    complete_pos: Some(pos),
                    invoke_time: invoke.time,
                    complete_time: Some(e.time),
                    error: None,
                };
                self.keep(model, spill, op, invoke.line, Some(line))
            }
        }
    }

    /// Counts a paired operation and hands it to its partition (unless it is a failed one the
    /// model drops).
    fn keep<M: Model>(
        &mut self,
        model: &M,
        spill: &mut Spill,
        op: Operation,
        invoke_line: usize,
        complete_line: Option<usize>,
    ) -> Result<(), String> {
        self.totals.count(op.outcome);
        if op.outcome == Outcome::Fail && !model.keep_failed(&op) {
            return Ok(());
        }
        let key = model.partition_key(&op);
        spill.push(key, &op, invoke_line, complete_line)
    }

    /// Ends the history: invocations that never completed become `info` operations.
    fn finish<M: Model>(mut self, model: &M, spill: &mut Spill) -> Result<OpTotals, HistoryError> {
        let mut open: Vec<(u64, PendingOp)> = self.pending.drain().collect();
        open.sort_unstable_by_key(|(_, o)| o.pos);
        for (p, invoke) in open {
            let line = invoke.line;
            let op = Operation {
                process: Process::Client(p),
                f: invoke.f,
                key: invoke.key,
                input: invoke.input,
                output: Value::Null,
                outcome: Outcome::Info,
                invoke_pos: invoke.pos,
                complete_pos: None,
                invoke_time: invoke.time,
                complete_time: None,
                error: None,
            };
            self.keep(model, spill, op, line, None)
                .map_err(HistoryError::Model)?;
        }
        Ok(self.totals)
    }
}

/// One partition's operations, encoded: chunks already in the spill file, then the buffer.
struct Part {
    key: Option<Value>,
    first_invoke: usize,
    count: usize,
    buf: Vec<u8>,
    /// (offset, length) in the spill file.
    chunks: Vec<(u64, usize)>,
}

/// A partition decoded for checking, in invocation order.
struct Loaded {
    ops: Vec<Operation>,
    /// (event position, source line) of every invocation and completion, sorted.
    lines: Vec<(usize, usize)>,
}

impl Loaded {
    fn line_of(&self, pos: usize) -> Option<usize> {
        self.lines
            .binary_search_by_key(&pos, |&(p, _)| p)
            .ok()
            .map(|i| self.lines[i].1)
    }
}

impl Part {
    fn load(&mut self, file: Option<&File>, processes: &Processes) -> Result<Loaded, HistoryError> {
        let mut ops = Vec::with_capacity(self.count);
        let mut lines = Vec::with_capacity(2 * self.count);
        let mut bytes = Vec::new();
        for &(offset, len) in &self.chunks {
            let file = file.ok_or_else(|| spill_error("a chunk without a spill file"))?;
            bytes.resize(len, 0);
            file.read_exact_at(&mut bytes, offset)
                .map_err(|e| spill_error(&format!("reading the spill file: {e}")))?;
            decode_records(&bytes, processes, &mut ops, &mut lines)?;
        }
        decode_records(
            &std::mem::take(&mut self.buf),
            processes,
            &mut ops,
            &mut lines,
        )?;
        // Spilled at completion; `check` wants invocation order.
        ops.sort_unstable_by_key(|o: &Operation| o.invoke_pos);
        lines.sort_unstable();
        Ok(Loaded { ops, lines })
    }
}

fn spill_error(message: &str) -> HistoryError {
    HistoryError::Model(format!("linearizability spill: {message}"))
}

/// The partitions' buffers and the file they overflow into.
struct Spill {
    dir: PathBuf,
    limit_bytes: usize,
    buffered_bytes: usize,
    index: FxHashMap<Option<Value>, usize>,
    parts: Vec<Part>,
    file: Option<File>,
    file_len: u64,
}

impl Spill {
    fn new(dir: PathBuf, limit_bytes: usize) -> Spill {
        Spill {
            dir,
            limit_bytes,
            buffered_bytes: 0,
            index: FxHashMap::default(),
            parts: Vec::new(),
            file: None,
            file_len: 0,
        }
    }

    fn push(
        &mut self,
        key: Option<Value>,
        op: &Operation,
        invoke_line: usize,
        complete_line: Option<usize>,
    ) -> Result<(), String> {
        let i = match self.index.get(&key) {
            Some(&i) => i,
            None => {
                self.index.insert(key.clone(), self.parts.len());
                self.parts.push(Part {
                    key,
                    first_invoke: usize::MAX,
                    count: 0,
                    buf: Vec::new(),
                    chunks: Vec::new(),
                });
                self.parts.len() - 1
            }
        };
        let part = &mut self.parts[i];
        part.first_invoke = part.first_invoke.min(op.invoke_pos);
        part.count += 1;
        let before = part.buf.len();
        encode_record(&mut part.buf, op, invoke_line, complete_line);
        self.buffered_bytes += part.buf.len() - before;
        if self.buffered_bytes > self.limit_bytes {
            self.flush()
                .map_err(|e| format!("writing the spill file in {}: {e}", self.dir.display()))?;
        }
        Ok(())
    }

    /// Writes every partition's buffer to the file as one chunk each.
    fn flush(&mut self) -> std::io::Result<()> {
        if self.file.is_none() {
            self.file = Some(anonymous_file(&self.dir)?);
        }
        let file = self.file.as_mut().expect("created above");
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        for part in &mut self.parts {
            if part.buf.is_empty() {
                continue;
            }
            out.write_all(&part.buf)?;
            part.chunks.push((self.file_len, part.buf.len()));
            self.file_len += part.buf.len() as u64;
            // Freed, not cleared: a partition's buffer does not keep its peak capacity.
            part.buf = Vec::new();
        }
        out.flush()?;
        self.buffered_bytes = 0;
        Ok(())
    }
}

/// A file in `dir` that is unlinked at once: it disappears with the process, however it ends.
fn anonymous_file(dir: &Path) -> std::io::Result<File> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!(".ordeal-linear-spill-{}-{n}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

// --- The record encoding: varints, zigzag for signed, tagged values. ---

fn put_uvar(out: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        out.push((x as u8) | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
}

fn put_ivar(out: &mut Vec<u8>, x: i64) {
    put_uvar(out, ((x << 1) ^ (x >> 63)) as u64);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_uvar(out, b.len() as u64);
    out.extend_from_slice(b);
}

const TAG_NULL: u8 = 0;
const TAG_FALSE: u8 = 1;
const TAG_TRUE: u8 = 2;
const TAG_INT: u8 = 3;
const TAG_STR: u8 = 4;
const TAG_LIST: u8 = 5;
const TAG_MAP: u8 = 6;
const TAG_FLOAT: u8 = 7;
const TAG_KEYWORD: u8 = 8;

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.push(TAG_NULL),
        Value::Bool(false) => out.push(TAG_FALSE),
        Value::Bool(true) => out.push(TAG_TRUE),
        Value::Int(i) => {
            out.push(TAG_INT);
            put_ivar(out, *i);
        }
        Value::Float(x) => {
            out.push(TAG_FLOAT);
            out.extend_from_slice(&x.0.to_bits().to_le_bytes());
        }
        Value::Str(s) => {
            out.push(TAG_STR);
            put_bytes(out, s.as_bytes());
        }
        Value::Keyword(s) => {
            out.push(TAG_KEYWORD);
            put_bytes(out, s.as_bytes());
        }
        Value::List(items) => {
            out.push(TAG_LIST);
            put_uvar(out, items.len() as u64);
            for item in items {
                put_value(out, item);
            }
        }
        Value::Map(entries) => {
            out.push(TAG_MAP);
            put_uvar(out, entries.len() as u64);
            for (k, v) in entries {
                put_value(out, k);
                put_value(out, v);
            }
        }
    }
}

const OUTCOME_OK: u8 = 0;
const OUTCOME_FAIL: u8 = 1;
const OUTCOME_INFO: u8 = 2;

fn encode_record(
    out: &mut Vec<u8>,
    op: &Operation,
    invoke_line: usize,
    complete_line: Option<usize>,
) {
    let Process::Client(p) = op.process else {
        unreachable!("nemesis events are not operations")
    };
    put_uvar(out, p);
    out.push(match op.outcome {
        Outcome::Ok => OUTCOME_OK,
        Outcome::Fail => OUTCOME_FAIL,
        Outcome::Info => OUTCOME_INFO,
    });
    put_bytes(out, op.f.as_bytes());
    match &op.key {
        None => out.push(0),
        Some(k) => {
            out.push(1);
            put_value(out, k);
        }
    }
    put_value(out, &op.input);
    put_value(out, &op.output);
    put_uvar(out, op.invoke_pos as u64);
    put_uvar(out, invoke_line as u64);
    put_ivar(out, op.invoke_time);
    match (op.complete_pos, op.complete_time) {
        (Some(pos), Some(time)) => {
            out.push(1);
            put_uvar(out, pos as u64);
            put_uvar(out, complete_line.unwrap_or(0) as u64);
            put_ivar(out, time);
        }
        _ => out.push(0),
    }
}

/// Reads records back; `None` on bytes this module did not write.
struct Decoder<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Decoder<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn uvar(&mut self) -> Option<u64> {
        let mut x = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            x |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(x);
            }
        }
        None
    }

    fn ivar(&mut self) -> Option<i64> {
        let z = self.uvar()?;
        Some(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    fn usize(&mut self) -> Option<usize> {
        usize::try_from(self.uvar()?).ok()
    }

    fn bytes(&mut self) -> Option<&[u8]> {
        let len = self.usize()?;
        let b = self.bytes.get(self.at..self.at.checked_add(len)?)?;
        self.at += len;
        Some(b)
    }

    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }

    fn value(&mut self) -> Option<Value> {
        Some(match self.byte()? {
            TAG_NULL => Value::Null,
            TAG_FALSE => Value::Bool(false),
            TAG_TRUE => Value::Bool(true),
            TAG_INT => Value::Int(self.ivar()?),
            TAG_STR => Value::Str(self.string()?),
            TAG_KEYWORD => Value::Keyword(self.string()?),
            TAG_FLOAT => {
                let b = self.bytes.get(self.at..self.at + 8)?;
                self.at += 8;
                Value::Float(crate::value::Float(f64::from_bits(u64::from_le_bytes(
                    b.try_into().ok()?,
                ))))
            }
            TAG_LIST => {
                let n = self.usize()?;
                let mut items = Vec::with_capacity(n.min(1 << 16));
                for _ in 0..n {
                    items.push(self.value()?);
                }
                Value::List(items)
            }
            TAG_MAP => {
                let n = self.usize()?;
                let mut entries = Vec::with_capacity(n.min(1 << 16));
                for _ in 0..n {
                    entries.push((self.value()?, self.value()?));
                }
                Value::Map(entries)
            }
            _ => return None,
        })
    }

    fn record(
        &mut self,
        processes: &Processes,
        lines: &mut Vec<(usize, usize)>,
    ) -> Option<Operation> {
        let process = Process::Client(processes.renumber(self.uvar()?));
        let outcome = match self.byte()? {
            OUTCOME_OK => Outcome::Ok,
            OUTCOME_FAIL => Outcome::Fail,
            OUTCOME_INFO => Outcome::Info,
            _ => return None,
        };
        let f = self.string()?;
        let key = match self.byte()? {
            0 => None,
            1 => Some(self.value()?),
            _ => return None,
        };
        let input = self.value()?;
        let output = self.value()?;
        let invoke_pos = self.usize()?;
        lines.push((invoke_pos, self.usize()?));
        let invoke_time = self.ivar()?;
        let (complete_pos, complete_time) = match self.byte()? {
            0 => (None, None),
            1 => {
                let pos = self.usize()?;
                lines.push((pos, self.usize()?));
                (Some(pos), Some(self.ivar()?))
            }
            _ => return None,
        };
        Some(Operation {
            process,
            f,
            key,
            input,
            output,
            outcome,
            invoke_pos,
            complete_pos,
            invoke_time,
            complete_time,
            error: None,
        })
    }
}

fn decode_records(
    bytes: &[u8],
    processes: &Processes,
    ops: &mut Vec<Operation>,
    lines: &mut Vec<(usize, usize)>,
) -> Result<(), HistoryError> {
    let mut d = Decoder { bytes, at: 0 };
    while d.at < bytes.len() {
        let op = d
            .record(processes, lines)
            .ok_or_else(|| spill_error("a record that does not decode"))?;
        ops.push(op);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let op = Operation {
            process: Process::Client(300),
            f: "cas".into(),
            key: Some(Value::Str("k".into())),
            input: Value::List(vec![
                Value::Int(-5),
                Value::Map(vec![(Value::Bool(true), Value::Null)]),
            ]),
            output: Value::Str("ünïcode".into()),
            outcome: Outcome::Fail,
            invoke_pos: 7,
            complete_pos: Some(1 << 40),
            invoke_time: -1,
            complete_time: Some(i64::MAX),
            error: None,
        };
        let mut bytes = Vec::new();
        encode_record(&mut bytes, &op, 3, Some(9));
        let mut open = op.clone();
        open.complete_pos = None;
        open.complete_time = None;
        open.key = None;
        open.outcome = Outcome::Info;
        encode_record(&mut bytes, &open, 4, None);
        let (mut ops, mut lines) = (Vec::new(), Vec::new());
        decode_records(&bytes, &Processes::default(), &mut ops, &mut lines).unwrap();
        assert_eq!(ops, vec![op, open]);
        assert_eq!(lines, vec![(7, 3), (1 << 40, 9), (7, 4)]);
        // Cut short: an error, not a panic.
        let (mut ops, mut lines) = (Vec::new(), Vec::new());
        assert!(decode_records(
            &bytes[..bytes.len() - 1],
            &Processes::default(),
            &mut ops,
            &mut lines
        )
        .is_err());
    }
}
