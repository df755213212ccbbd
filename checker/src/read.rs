//! Reading and writing histories: our JSONL, Jepsen `history.edn` (one op map per line or a
//! vector of maps), Jepsen text logs (`INFO jepsen.util - 3 :invoke :read nil`) and JSON arrays
//! of ops (elle-cli). Files ending in `.gz` are decompressed on the fly.

use crate::edn::{EdnError, Parser};
use crate::error::HistoryError;
use crate::history::{Event, EventType, History, Process};
use crate::value::Value;
use rayon::prelude::*;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

/// A history file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Decide from the file name, then from the content.
    Auto,
    /// One JSON event per line (`history.jsonl`).
    Jsonl,
    /// Jepsen EDN: one op map per line, or a vector of op maps.
    Edn,
    /// Jepsen's text log (`INFO jepsen.util - 3 :invoke :read nil`).
    JepsenLog,
    /// A JSON array of op objects (elle-cli).
    JsonArray,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "auto" => Ok(Format::Auto),
            "jsonl" => Ok(Format::Jsonl),
            "edn" => Ok(Format::Edn),
            "jepsen-log" => Ok(Format::JepsenLog),
            "json" => Ok(Format::JsonArray),
            other => Err(format!(
                "unknown format '{other}' (expected auto, jsonl, edn, jepsen-log or json)"
            )),
        }
    }
}

/// Ops that name no process (the examples in Elle's paper) get synthetic processes while a file
/// streams by, numbered from here up; once the whole input is seen, `Processes::renumber`
/// moves them just above the highest real process, so they cannot collide with one.
pub const SYNTHETIC_PROCESS_BASE: u64 = 1 << 62;

/// What a streaming read learned about process numbers (see `SYNTHETIC_PROCESS_BASE`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Processes {
    max_real: Option<u64>,
}

impl Processes {
    fn saw(&mut self, p: &Process) -> Result<(), String> {
        if let Process::Client(p) = *p {
            if p >= SYNTHETIC_PROCESS_BASE {
                return Err(format!(
                    "process {p} is too large (processes must be below 2^62)"
                ));
            }
            self.max_real = Some(self.max_real.map_or(p, |m| m.max(p)));
        }
        Ok(())
    }

    /// The final number of a process seen during the read.
    pub fn renumber(&self, p: u64) -> u64 {
        if p >= SYNTHETIC_PROCESS_BASE {
            self.max_real.map_or(0, |m| m + 1) + (p - SYNTHETIC_PROCESS_BASE)
        } else {
            p
        }
    }
}

/// Receives the events of a streaming read in order, each with its 1-based source line; an
/// `Err` stops the read and is reported at that line.
pub type Sink<'a> = dyn FnMut(Event, usize) -> Result<(), String> + 'a;

/// Reads a history file into memory.
pub fn read_path(path: &Path, format: Format) -> Result<History, HistoryError> {
    let mut history = History::default();
    let processes = stream_path(path, format, &mut |e, line| {
        history.events.push(e);
        history.source_lines.push(line);
        Ok(())
    })?;
    Ok(finish_history(history, &processes))
}

/// Reads a history file event by event without holding the history: JSONL is read a line at
/// a time; the other formats are read as text and parsed one op at a time, so only the text
/// and never the whole tree of values is in memory. Events reach `sink` in file order, with
/// synthetic processes (see `SYNTHETIC_PROCESS_BASE`) that the caller renumbers at the end.
pub fn stream_path(
    path: &Path,
    format: Format,
    sink: &mut Sink,
) -> Result<Processes, HistoryError> {
    let io_err = |source| HistoryError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io_err)?;
    let gz = path.extension().is_some_and(|e| e == "gz");
    let raw: Box<dyn Read> = if gz {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file)))
    } else {
        Box::new(file)
    };
    let name = path.to_string_lossy();
    let name = Path::new(name.strip_suffix(".gz").unwrap_or(&name)).to_path_buf();
    // The head decides the format; it is then read again, chained before the rest.
    let mut head = Vec::with_capacity(DETECT_HEAD_BYTES);
    let mut raw = raw;
    raw.by_ref()
        .take(DETECT_HEAD_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(io_err)?;
    let format = match format {
        Format::Auto => {
            let valid = match std::str::from_utf8(&head) {
                Ok(s) => s,
                Err(e) => std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or(""),
            };
            detect(valid, &name)
        }
        f => f,
    };
    let mut reader = BufReader::with_capacity(1 << 16, std::io::Cursor::new(head).chain(raw));
    if format == Format::Jsonl {
        let mut state = ReadState::default();
        stream_jsonl(&mut reader, &name, &mut state, sink).map_err(|e| match e {
            HistoryError::Io { source, .. } => io_err(source),
            other => other,
        })?;
        return Ok(state.processes);
    }
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes).map_err(|e| {
        // A corrupt gzip stream fails mid-file: say how far the text got.
        let line = bytes.iter().filter(|&&b| b == b'\n').count() + 1;
        parse_error(&name, line, format!("read error: {e}"))
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        parse_error(
            &name,
            valid.iter().filter(|&&b| b == b'\n').count() + 1,
            "not valid UTF-8",
        )
    })?;
    stream_str(&text, format, &name, sink)
}

/// Gives an error about event position `index` that names no line (the transactional
/// checkers work on a compact log without source lines) the line of that event in `path`,
/// found by reading the file again up to it. Other errors are returned as they are.
pub fn locate_event(err: HistoryError, path: &Path, format: Format) -> HistoryError {
    let HistoryError::Invalid {
        line: None,
        index,
        message,
    } = err
    else {
        return err;
    };
    let mut seen = 0usize;
    let mut found = None;
    // The sink stops the read at the event; the "error" that stops it is not one.
    let _ = stream_path(path, format, &mut |_, line| {
        if seen == index {
            found = Some(line);
            return Err(String::new());
        }
        seen += 1;
        Ok(())
    });
    HistoryError::Invalid {
        line: found,
        index,
        message,
    }
}

/// How much of a file `Format::Auto` looks at.
const DETECT_HEAD_BYTES: usize = 64 * 1024;

/// Reads a history from text. `name` is used for format detection and in error messages.
pub fn read_str(text: &str, format: Format, name: &Path) -> Result<History, HistoryError> {
    let mut history = History::default();
    let processes = stream_str(text, format, name, &mut |e, line| {
        history.events.push(e);
        history.source_lines.push(line);
        Ok(())
    })?;
    Ok(finish_history(history, &processes))
}

fn finish_history(mut history: History, processes: &Processes) -> History {
    for e in &mut history.events {
        if let Process::Client(p) = &mut e.process {
            *p = processes.renumber(*p);
        }
    }
    history.reindex();
    history
}

/// `stream_path` for text in memory.
pub fn stream_str(
    text: &str,
    format: Format,
    name: &Path,
    sink: &mut Sink,
) -> Result<Processes, HistoryError> {
    let format = match format {
        Format::Auto => detect(text, name),
        f => f,
    };
    let mut state = ReadState::default();
    match format {
        Format::Jsonl => stream_jsonl(&mut text.as_bytes(), name, &mut state, sink)?,
        Format::Edn => {
            // A vector of op maps, or a list (Knossos's data files), or maps one after another.
            let mut parser = Parser::new(text, 1);
            if let Some(close) = parser.open_seq(b"[(") {
                stream_op_maps(parser, name, Some(close), &mut state, sink)?;
            } else {
                stream_edn_chunks(text, name, &mut state, sink)?;
            }
        }
        Format::JepsenLog => stream_jepsen_log(text, name, &mut state, sink)?,
        Format::JsonArray => {
            let mut parser = Parser::new(text, 1).json();
            if !parser.at_end() {
                if !parser.open_vector() {
                    return Err(parse_error(
                        name,
                        parser.line(),
                        "expected a JSON array of ops",
                    ));
                }
                stream_op_maps(parser, name, Some(b']'), &mut state, sink)?;
            }
        }
        Format::Auto => unreachable!("resolved above"),
    }
    Ok(state.processes)
}

/// Guesses the format from the file name, then from the first non-blank text.
pub fn detect(text: &str, name: &Path) -> Format {
    match name.extension().and_then(|e| e.to_str()) {
        Some("jsonl") => return Format::Jsonl,
        Some("edn") => return Format::Edn,
        Some("log") => return Format::JepsenLog,
        Some("json") => return Format::JsonArray,
        _ => {}
    }
    let trimmed = text.trim_start();
    let first_line = trimmed.lines().next().unwrap_or("");
    if first_line.contains(" - ") && first_line.contains(":invoke")
        || text.contains("jepsen.util - ")
    {
        return Format::JepsenLog;
    }
    if let Some(rest) = trimmed.strip_prefix('[') {
        let rest = rest.trim_start();
        if rest.starts_with("{\"") || rest.starts_with(']') {
            return Format::JsonArray;
        }
        return Format::Edn;
    }
    if trimmed.starts_with("{\"") {
        return Format::Jsonl;
    }
    Format::Edn
}

fn parse_error(name: &Path, line: usize, message: impl Into<String>) -> HistoryError {
    HistoryError::Parse {
        path: name.to_path_buf(),
        line,
        message: message.into(),
    }
}

fn from_edn_error(name: &Path, e: EdnError) -> HistoryError {
    parse_error(name, e.line, e.message)
}

fn stream_jsonl(
    reader: &mut impl BufRead,
    name: &Path,
    state: &mut ReadState,
    sink: &mut Sink,
) -> Result<(), HistoryError> {
    let mut batch = String::new();
    let mut next_line = 1;
    let mut current: Parsed = Vec::new();
    loop {
        batch.clear();
        let first_line = next_line;
        let at_end = match read_lines(reader, &mut batch, name, &mut next_line) {
            Ok(at_end) => at_end,
            Err(e) => {
                // Earlier lines' errors come first.
                state.give_all(current, name, sink)?;
                return Err(e);
            }
        };
        let (next, given) = overlapped(
            || parse_jsonl_lines(&batch, first_line),
            || state.give_all(std::mem::take(&mut current), name, sink),
        );
        given?;
        current = next;
        if at_end {
            return state.give_all(current, name, sink);
        }
    }
}

/// Appends up to `JSONL_BATCH_LINES` lines to `batch`; true at the end of the input.
fn read_lines(
    reader: &mut impl BufRead,
    batch: &mut String,
    name: &Path,
    next_line: &mut usize,
) -> Result<bool, HistoryError> {
    for _ in 0..JSONL_BATCH_LINES {
        match reader.read_line(batch) {
            Ok(0) => return Ok(true),
            Ok(_) => *next_line += 1,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(parse_error(name, *next_line, "not valid UTF-8"))
            }
            Err(source) => {
                return Err(parse_error(
                    name,
                    *next_line,
                    format!("read error: {source}"),
                ))
            }
        }
    }
    Ok(false)
}

/// Assigns processes to ops that have none (Elle's paper example): an invocation gets a fresh
/// process, and a completion goes to the most recent pending invocation of the same `f`.
#[derive(Default)]
struct ProcessFiller {
    next_synthetic: u64,
    pending: Vec<(String, u64)>,
}

impl ProcessFiller {
    fn fill(&mut self, kind: EventType, f: &str) -> Option<u64> {
        if kind == EventType::Invoke {
            let p = SYNTHETIC_PROCESS_BASE + self.next_synthetic;
            self.next_synthetic += 1;
            self.pending.push((f.to_string(), p));
            return Some(p);
        }
        let at = self.pending.iter().rposition(|(pf, _)| pf == f)?;
        Some(self.pending.remove(at).1)
    }

    /// Gives an event that named no process its synthetic one.
    fn assign(&mut self, mut event: Event, named: bool) -> Result<Event, String> {
        if !named {
            let p = self
                .fill(event.kind, &event.f)
                .ok_or("completion has no process and no pending invoke")?;
            event.process = Process::Client(p);
        }
        Ok(event)
    }
}

/// Op maps one after another (one per line, or inside a vector or list whose closing byte is
/// `wrapped_in`), parsed in this thread.
fn stream_op_maps(
    mut parser: Parser,
    name: &Path,
    wrapped_in: Option<u8>,
    state: &mut ReadState,
    sink: &mut Sink,
) -> Result<(), HistoryError> {
    loop {
        if let Some(close) = wrapped_in {
            if parser.close_seq(close) {
                if !parser.at_end() {
                    return Err(parse_error(
                        name,
                        parser.line(),
                        format!("text after the closing '{}'", close as char),
                    ));
                }
                break;
            }
        }
        if parser.at_end() {
            if let Some(close) = wrapped_in {
                let open = if close == b')' { '(' } else { '[' };
                return Err(parse_error(
                    name,
                    parser.line(),
                    format!("the history's '{open}' is never closed (truncated file?)"),
                ));
            }
            break;
        }
        let line = parser.line();
        let map = parser.value().map_err(|e| from_edn_error(name, e))?;
        state.give(line, event_from_map(map), name, sink)?;
    }
    Ok(())
}

/// What a streaming read carries from one event to the next.
#[derive(Default)]
struct ReadState {
    processes: Processes,
    filler: ProcessFiller,
}

impl ReadState {
    /// Hands one parsed op (or its parse error) to the sink; errors are reported at `line`.
    fn give(
        &mut self,
        line: usize,
        parsed: Result<(Event, bool), String>,
        name: &Path,
        sink: &mut Sink,
    ) -> Result<(), HistoryError> {
        parsed
            .and_then(|(event, named)| {
                if named {
                    self.processes.saw(&event.process)?;
                }
                let event = self.filler.assign(event, named)?;
                sink(event, line)
            })
            .map_err(|m| parse_error(name, line, m))
    }

    fn give_all(
        &mut self,
        parsed: Parsed,
        name: &Path,
        sink: &mut Sink,
    ) -> Result<(), HistoryError> {
        for (line, op) in parsed {
            self.give(line, op, name, sink)?;
        }
        Ok(())
    }
}

/// Ops parsed ahead of the sink, each with its line: the event and whether it named its
/// process, or the line's error.
type Parsed = Vec<(usize, Result<(Event, bool), String>)>;

/// JSONL lines parsed per batch: bounds the events held at once. A batch is parsed on the
/// rayon pool while the previous one goes through the sink.
const JSONL_BATCH_LINES: usize = 16 * 1024;

/// EDN text per chunk that one thread parses, and chunks in flight at once.
const EDN_CHUNK_BYTES: usize = 512 * 1024;
const EDN_CHUNKS_IN_FLIGHT: usize = 8;

/// Runs `parse` on another thread while `give` feeds the previous results to the sink; the
/// sink is not `Send`, so it stays on this thread.
fn overlapped<T: Send, R>(parse: impl FnOnce() -> T + Send, give: impl FnOnce() -> R) -> (T, R) {
    std::thread::scope(|s| {
        let parsing = s.spawn(parse);
        let given = give();
        let parsed = parsing
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (parsed, given)
    })
}

fn parse_jsonl_lines(text: &str, first_line: usize) -> Parsed {
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (first_line + i, l))
        .collect();
    lines
        .par_iter()
        .with_min_len(512)
        .map(|&(line, text)| {
            let event = serde_json::from_str::<Event>(text).map_err(|e| {
                let hint = if e.is_eof() { " (truncated line?)" } else { "" };
                format!("{e}{hint}")
            });
            (line, event.map(|e| (e, true)))
        })
        .collect()
}

/// Where EDN text can be cut into chunks: before a line that opens a map. A cut that falls
/// inside a multi-line op leaves the chunk before it unparsable, and the reader then falls
/// back to parsing the rest in one piece, so a wrong guess costs time, never correctness.
/// Each chunk comes with its first line.
fn edn_chunks(text: &str) -> Vec<(std::ops::Range<usize>, usize)> {
    let bytes = text.as_bytes();
    let mut chunks = Vec::with_capacity(text.len() / EDN_CHUNK_BYTES + 1);
    let (mut start, mut line) = (0, 1);
    while start < bytes.len() {
        let mut end = (start + EDN_CHUNK_BYTES).min(bytes.len());
        if end < bytes.len() {
            end = match bytes[end - 1..].windows(2).position(|w| w == b"\n{") {
                Some(at) => end + at,
                None => bytes.len(),
            };
        }
        chunks.push((start..end, line));
        line += bytes[start..end].iter().filter(|&&b| b == b'\n').count();
        start = end;
    }
    chunks
}

/// Parses one chunk whole; `None` when the chunk does not parse as a sequence of values.
fn parse_edn_chunk(text: &str, first_line: usize) -> Option<Parsed> {
    let mut parser = Parser::new(text, first_line);
    let mut out = Vec::new();
    while !parser.at_end() {
        let line = parser.line();
        let value = parser.value().ok()?;
        out.push((line, event_from_map(value)));
    }
    Some(out)
}

/// EDN with one op map after another (Jepsen's `history.edn`), parsed in parallel chunks.
fn stream_edn_chunks(
    text: &str,
    name: &Path,
    state: &mut ReadState,
    sink: &mut Sink,
) -> Result<(), HistoryError> {
    let chunks = edn_chunks(text);
    let parse_group = |group: &[(std::ops::Range<usize>, usize)]| -> Vec<Option<Parsed>> {
        group
            .par_iter()
            .map(|(range, line)| parse_edn_chunk(&text[range.clone()], *line))
            .collect()
    };
    let mut groups = chunks.chunks(EDN_CHUNKS_IN_FLIGHT);
    let mut current: Vec<Option<Parsed>> = Vec::new();
    let mut current_group: &[(std::ops::Range<usize>, usize)] = &[];
    loop {
        let next_group = groups.next().unwrap_or(&[]);
        let (next, given) = overlapped(
            || parse_group(next_group),
            || -> Result<Option<usize>, HistoryError> {
                for (i, parsed) in std::mem::take(&mut current).into_iter().enumerate() {
                    match parsed {
                        Some(ops) => state.give_all(ops, name, sink)?,
                        None => return Ok(Some(i)),
                    }
                }
                Ok(None)
            },
        );
        if let Some(i) = given? {
            // A chunk that does not parse on its own: the rest in one piece, which either
            // parses (the cut was inside a multi-line op) or names the real error.
            let (range, line) = &current_group[i];
            let parser = Parser::new(&text[range.start..], *line);
            return stream_op_maps(parser, name, None, state, sink);
        }
        if next_group.is_empty() {
            return Ok(());
        }
        current = next;
        current_group = next_group;
    }
}

/// Builds an event from an op map (EDN or JSON); the error message names the bad field. The
/// flag says whether the map named a process; if not, `ProcessFiller::assign` gives it one.
fn event_from_map(map: Value) -> Result<(Event, bool), String> {
    let Value::Map(entries) = map else {
        return Err(format!("expected an op map, got {}", map.to_edn()));
    };
    let mut kind = None;
    let mut process = None;
    let mut event = Event::new(Process::Client(0), EventType::Invoke, "", Value::Null);
    for (k, v) in entries {
        let Some(k) = k.as_str() else { continue };
        match k {
            "type" => {
                let s = v
                    .as_str()
                    .ok_or_else(|| format!("type must be a keyword, got {v}"))?;
                kind = Some(EventType::parse(s).ok_or_else(|| {
                    format!("unknown type '{s}' (expected invoke, ok, fail or info)")
                })?);
            }
            "process" => {
                process = Some(match v {
                    Value::Int(p) if p >= 0 => Process::Client(p as u64),
                    ref v if v.as_str() == Some("nemesis") => Process::Nemesis,
                    Value::Null => continue,
                    other => return Err(format!("bad process {other}")),
                })
            }
            "time" => {
                event.time = v
                    .as_int()
                    .ok_or_else(|| format!("time must be an integer, got {v}"))?
            }
            "f" => {
                event.f = match v {
                    Value::Null => String::new(),
                    Value::Str(s) | Value::Keyword(s) => s,
                    other => other.to_string(),
                }
            }
            // `:key nil` means "no key", as `"key": null` does in JSON.
            "key" => event.key = (!v.is_null()).then_some(v),
            "value" => event.value = v,
            "node" => event.node = Some(v.to_string()),
            "error" => event.error = Some(v),
            _ => {}
        }
    }
    event.kind = kind.ok_or("op has no type")?;
    if let Some(p) = process {
        event.process = p;
    }
    Ok((event, process.is_some()))
}

/// Jepsen's text log: lines `... jepsen.util - <process> :<type> :<f> <value>` (tabs or
/// spaces); other log lines are skipped.
fn stream_jepsen_log(
    text: &str,
    name: &Path,
    state: &mut ReadState,
    sink: &mut Sink,
) -> Result<(), HistoryError> {
    let lines = text.lines().count();
    for (i, line) in text.lines().enumerate() {
        let Some(at) = line.find("jepsen.util - ") else {
            continue;
        };
        if i + 1 == lines && !text.ends_with('\n') {
            // Loggers end every line: a last op line without one was cut off mid-write, and
            // its fields (`0 :ok :wri`) cannot be trusted.
            return Err(parse_error(
                name,
                i + 1,
                "the last line has no newline: truncated file? (it is not read as an op)",
            ));
        }
        let rest = &line[at + "jepsen.util - ".len()..];
        state.give(i + 1, parse_log_fields(rest).map(|e| (e, true)), name, sink)?;
    }
    Ok(())
}

fn parse_log_fields(rest: &str) -> Result<Event, String> {
    let mut fields = rest.trim_start().splitn(2, [' ', '\t']);
    let process_text = fields.next().unwrap_or("");
    let process = match process_text {
        ":nemesis" => Process::Nemesis,
        p => Process::Client(
            p.parse()
                .map_err(|_| format!("bad process '{p}' (expected an integer or :nemesis)"))?,
        ),
    };
    let rest = fields.next().unwrap_or("").trim_start();
    let mut fields = rest.splitn(2, [' ', '\t']);
    let type_text = fields.next().unwrap_or("");
    let kind = type_text
        .strip_prefix(':')
        .and_then(EventType::parse)
        .ok_or_else(|| format!("bad type '{type_text}' (expected :invoke, :ok, :fail or :info)"))?;
    let rest = fields.next().unwrap_or("").trim_start();
    let mut fields = rest.splitn(2, [' ', '\t']);
    let f_text = fields.next().unwrap_or("");
    let f = f_text.strip_prefix(':').unwrap_or(f_text);
    if f.is_empty() {
        return Err("missing :f".into());
    }
    let value_text = fields.next().unwrap_or("").trim();
    let value = if value_text.is_empty() {
        Value::Null
    } else {
        crate::edn::parse(value_text)
            .map_err(|e| format!("bad value '{value_text}': {}", e.message))?
    };
    Ok(Event::new(process, kind, f, value))
}

/// Writes a history as JSONL, one event per line.
pub fn write_jsonl(history: &History, out: &mut impl Write) -> std::io::Result<()> {
    for e in &history.events {
        serde_json::to_writer(&mut *out, e)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Renders one event as a Jepsen EDN op map.
pub fn event_to_edn(e: &Event) -> String {
    let process = match e.process {
        Process::Client(p) => p.to_string(),
        Process::Nemesis => ":nemesis".to_string(),
    };
    let mut s = format!(
        "{{:index {}, :time {}, :type :{}, :process {}, :f :{}, :value {}",
        e.index,
        e.time,
        e.kind.as_str(),
        process,
        e.f,
        edn_value(&e.value)
    );
    if let Some(k) = &e.key {
        s.push_str(&format!(", :key {}", edn_value(k)));
    }
    if let Some(n) = &e.node {
        s.push_str(&format!(", :node {}", edn_value(&Value::Str(n.clone()))));
    }
    if let Some(err) = &e.error {
        s.push_str(&format!(", :error {}", edn_value(err)));
    }
    s.push('}');
    s
}

/// EDN for a value, with micro-op names (`"r"`, `"append"`, `"w"`) written as keywords, as
/// Jepsen and Elle write them.
fn edn_value(v: &Value) -> String {
    match v {
        Value::List(items) => {
            let inner: Vec<String> = items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::Str(s) | Value::Keyword(s)
                        if i == 0 && is_micro_op_name(s) && items.len() == 3 =>
                    {
                        format!(":{s}")
                    }
                    other => edn_value(other),
                })
                .collect();
            format!("[{}]", inner.join(" "))
        }
        Value::Map(entries) => {
            let inner: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{} {}", edn_value(k), edn_value(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
        other => other.to_edn(),
    }
}

fn is_micro_op_name(s: &str) -> bool {
    matches!(s, "r" | "w" | "append")
}

/// Writes a history as Jepsen EDN, one op map per line.
pub fn write_edn(history: &History, out: &mut impl Write) -> std::io::Result<()> {
    for e in &history.events {
        out.write_all(event_to_edn(e).as_bytes())?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Where the shared test data lives: `$ORDEAL_SHARED/testdata`, else `../shared/testdata`
/// beside the workspace.
pub fn shared_testdata_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("ORDEAL_SHARED") {
        return PathBuf::from(dir).join("testdata");
    }
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/testdata"
    ))
}

/// `sub` (e.g. `porcupine`, `elle`) of the shared test data, or an error that names the missing
/// directory and `.ci/fetch-testdata`, the script that builds it: every test that reads the
/// data finds it through here, so none passes silently or fails obscurely without it.
pub fn shared_testdata(sub: &str) -> Result<PathBuf, HistoryError> {
    let dir = shared_testdata_dir().join(sub);
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(HistoryError::MissingTestdata { dir })
    }
}

/// Counts events per (type, f), for summaries.
pub fn count_by_type(history: &History) -> HashMap<(EventType, String), usize> {
    let mut counts = HashMap::new();
    for e in &history.events {
        *counts.entry((e.kind, e.f.clone())).or_insert(0) += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str, format: Format) -> Result<History, HistoryError> {
        read_str(text, format, Path::new("t"))
    }

    #[test]
    fn jepsen_log_lines() {
        let text = "INFO  jepsen.util - 0\t:invoke\t:read\tnil\n\
                    INFO  jepsen.core - something else\n\
                    INFO  jepsen.util - 2   :invoke :cas    [1 2]\n\
                    INFO  jepsen.util - 0\t:ok\t:read\t3\n\
                    INFO  jepsen.util - 2\t:info\t:cas\t:timed-out\n";
        let h = read(text, Format::Auto).unwrap();
        assert_eq!(h.len(), 4);
        assert_eq!(h.events[1].value.to_edn(), "[1 2]");
        assert_eq!(h.events[3].value, Value::Keyword("timed-out".into()));
        assert_eq!(h.source_lines, vec![1, 3, 4, 5]);
        let ops = h.operations().unwrap();
        assert_eq!(ops[0].output, Value::Int(3));
    }

    #[test]
    fn jepsen_log_errors_name_the_line() {
        let text =
            "INFO  jepsen.util - 0\t:invoke\t:read\tnil\nINFO  jepsen.util - 0\t:okay\t:read\t3\n";
        let err = read(text, Format::JepsenLog).unwrap_err().to_string();
        assert!(err.starts_with("t:2:"), "{err}");
        assert!(err.contains(":okay"), "{err}");
    }

    #[test]
    fn edn_lines_and_vector() {
        let lines = "{:process 9, :type :invoke, :f :append, :key \"0\", :value \"x 9 0 y\"}\n\
                     {:process 9, :type :ok, :f :append, :key \"0\", :value \"x 9 0 y\"}\n";
        let h = read(lines, Format::Auto).unwrap();
        assert_eq!(h.events[0].key, Some(Value::Str("0".into())));
        assert_eq!(h.events[1].kind, EventType::Ok);
        let vector = format!("[{lines}]");
        assert_eq!(read(&vector, Format::Edn).unwrap(), h);
    }

    #[test]
    fn edn_without_process_pairs_in_order() {
        let text = "{:index 0 :type :invoke :value [[:append 1 1]]}\n{:index 1 :type :ok :value [[:append 1 1]]}\n{:index 2 :type :invoke :value [[:r 1 nil]]}\n{:index 3 :type :ok :value [[:r 1 [1]]]}\n";
        let h = read(text, Format::Edn).unwrap();
        let ops = h.operations().unwrap();
        assert_eq!(ops.len(), 2);
        assert_ne!(ops[0].process, ops[1].process);
    }

    #[test]
    fn json_array() {
        let text = r#"[{"index":0,"process":0,"type":"invoke","f":"txn","value":[["w","x",2]]},
 {"index":1,"process":0,"type":"fail","f":"txn","value":[["w","x",2]]}]"#;
        let h = read(text, Format::Auto).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h.source_lines, vec![1, 2]);
        assert_eq!(h.events[1].kind, EventType::Fail);
    }

    #[test]
    fn truncated_jsonl_names_the_line() {
        let text = "{\"index\":0,\"time\":1,\"process\":0,\"type\":\"invoke\",\"f\":\"read\",\"value\":null}\n{\"index\":1,\"time\":2,\"proc";
        let err = read(text, Format::Jsonl).unwrap_err().to_string();
        assert!(err.starts_with("t:2:"), "{err}");
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn unknown_type_is_an_error() {
        let err = read("{:process 0 :type :maybe :f :read}", Format::Edn)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown type 'maybe'"), "{err}");
    }

    #[test]
    fn jsonl_and_edn_round_trip() {
        let text = "{:process 0, :type :invoke, :f :txn, :value [[:append 1 2] [:r 1 nil]]}\n\
                    {:process 0, :type :ok, :f :txn, :value [[:append 1 2] [:r 1 [2]]], :error :none}\n\
                    {:process :nemesis, :type :info, :f :kill, :value [\"n1\"]}\n";
        let h = read(text, Format::Edn).unwrap();
        let mut jsonl = Vec::new();
        write_jsonl(&h, &mut jsonl).unwrap();
        let back = read(std::str::from_utf8(&jsonl).unwrap(), Format::Jsonl).unwrap();
        // JSON has no keywords: `:none` comes back as "none", and nothing else changes.
        fn strings_for_keywords(v: &Value) -> Value {
            match v {
                Value::Keyword(k) => Value::Str(k.clone()),
                Value::List(items) => Value::List(items.iter().map(strings_for_keywords).collect()),
                other => other.clone(),
            }
        }
        let mut want = h.events.clone();
        for e in &mut want {
            e.value = strings_for_keywords(&e.value);
            e.error = e.error.as_ref().map(strings_for_keywords);
        }
        assert_ne!(want, h.events);
        assert_eq!(back.events, want);
        let mut edn = Vec::new();
        write_edn(&h, &mut edn).unwrap();
        let edn = String::from_utf8(edn).unwrap();
        assert!(edn.contains("[[:append 1 2] [:r 1 nil]]"), "{edn}");
        assert_eq!(read(&edn, Format::Edn).unwrap().events, h.events);
    }

    #[test]
    fn knossos_list_files_with_comments() {
        let text = "; a Knossos data file\n(\n{:process 0 :type :invoke :f :read :value nil}\n\
                    ; between ops\n{:process 0 :type :ok :f :read :value 1} #_ {:ignored 1}\n)\n";
        let h = read(text, Format::Auto).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h.source_lines, vec![3, 5]);
        let err = read("(\n{:process 0 :type :invoke :f :read}\n", Format::Edn)
            .unwrap_err()
            .to_string();
        assert!(err.contains("'(' is never closed"), "{err}");
    }

    #[test]
    fn nil_key_means_no_key_in_every_format() {
        let edn = read("{:process 0 :type :invoke :f :read :key nil}", Format::Edn).unwrap();
        let jsonl = read(
            r#"{"index":0,"process":0,"type":"invoke","f":"read","key":null,"value":null}"#,
            Format::Jsonl,
        )
        .unwrap();
        let json = read(
            r#"[{"process":0,"type":"invoke","f":"read","key":null}]"#,
            Format::JsonArray,
        )
        .unwrap();
        assert_eq!(edn.events[0].key, None);
        assert_eq!(jsonl.events[0].key, None);
        assert_eq!(json.events[0].key, None);
    }

    #[test]
    fn truncated_last_jepsen_log_line_is_an_error() {
        let text = "INFO  jepsen.util - 0\t:invoke\t:write\t3\nINFO  jepsen.util - 0 :ok :wri";
        let err = read(text, Format::JepsenLog).unwrap_err().to_string();
        assert!(err.starts_with("t:2:"), "{err}");
        assert!(err.contains("truncated"), "{err}");
        assert_eq!(
            read(&format!("{text}te 3\n"), Format::JepsenLog)
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn corrupt_gzip_names_the_line_reached() {
        use std::io::Write as _;
        let dir = std::env::temp_dir().join(format!("ordeal-gz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let line = "{:process 0 :type :invoke :f :read :value nil}\n\
                    {:process 0 :type :ok :f :read :value nil}\n";
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        for _ in 0..2000 {
            gz.write_all(line.as_bytes()).unwrap();
        }
        let mut bytes = gz.finish().unwrap();
        // Cut the stream (and its checksum) short.
        bytes.truncate(bytes.len() * 3 / 4);
        for (file, format) in [("h.edn.gz", Format::Edn), ("h.jsonl.gz", Format::Jsonl)] {
            let path = dir.join(file);
            std::fs::write(&path, &bytes).unwrap();
            let err = read_path(&path, format).unwrap_err().to_string();
            let prefix = format!("{}:", dir.join(file.trim_end_matches(".gz")).display());
            assert!(err.starts_with(&prefix), "{err}");
            let line: usize = err[prefix.len()..]
                .split(':')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert!(line > 1, "{err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn empty_input_is_an_empty_history() {
        for f in [
            Format::Jsonl,
            Format::Edn,
            Format::JepsenLog,
            Format::JsonArray,
        ] {
            assert!(read("", f).unwrap().is_empty());
        }
    }
}
