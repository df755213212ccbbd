//! Reading and writing histories: our JSONL, Jepsen `history.edn` (one op map per line or a
//! vector of maps), Jepsen text logs (`INFO jepsen.util - 3 :invoke :read nil`) and JSON arrays
//! of ops (elle-cli). Files ending in `.gz` are decompressed on the fly.

use crate::edn::{EdnError, Parser};
use crate::error::HistoryError;
use crate::history::{Event, EventType, History, Process};
use crate::value::Value;
use std::collections::HashMap;
use std::io::{Read, Write};
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

/// Reads a history file.
pub fn read_path(path: &Path, format: Format) -> Result<History, HistoryError> {
    let io_err = |source| HistoryError::Io {
        path: path.to_path_buf(),
        source,
    };
    let raw = std::fs::read(path).map_err(io_err)?;
    let gz = path.extension().is_some_and(|e| e == "gz");
    let bytes = if gz {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(io_err)?;
        out
    } else {
        raw
    };
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        HistoryError::Parse {
            path: path.to_path_buf(),
            line: valid.iter().filter(|&&b| b == b'\n').count() + 1,
            message: "not valid UTF-8".into(),
        }
    })?;
    let name = path.to_string_lossy();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    read_str(&text, format, Path::new(name))
}

/// Reads a history from text. `name` is used for format detection and in error messages.
pub fn read_str(text: &str, format: Format, name: &Path) -> Result<History, HistoryError> {
    let format = match format {
        Format::Auto => detect(text, name),
        f => f,
    };
    let mut history = match format {
        Format::Jsonl => read_jsonl(text, name)?,
        Format::Edn => read_edn(text, name)?,
        Format::JepsenLog => read_jepsen_log(text, name)?,
        Format::JsonArray => read_json_array(text, name)?,
        Format::Auto => unreachable!("resolved above"),
    };
    history.reindex();
    Ok(history)
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

fn read_jsonl(text: &str, name: &Path) -> Result<History, HistoryError> {
    let mut history = History::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let event: Event = serde_json::from_str(line).map_err(|e| {
            let hint = if e.is_eof() { " (truncated line?)" } else { "" };
            parse_error(name, i + 1, format!("{e}{hint}"))
        })?;
        history.events.push(event);
        history.source_lines.push(i + 1);
    }
    Ok(history)
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
            let p = self.next_synthetic;
            self.next_synthetic += 1;
            self.pending.push((f.to_string(), p));
            return Some(p);
        }
        let at = self.pending.iter().rposition(|(pf, _)| pf == f)?;
        Some(self.pending.remove(at).1)
    }
}

fn read_op_maps(
    mut parser: Parser,
    name: &Path,
    wrapped_in_vector: bool,
) -> Result<History, HistoryError> {
    let mut maps = Vec::new();
    let mut lines = Vec::new();
    loop {
        if wrapped_in_vector && parser.close_vector() {
            if !parser.at_end() {
                return Err(parse_error(
                    name,
                    parser.line(),
                    "text after the closing ']'",
                ));
            }
            break;
        }
        if parser.at_end() {
            if wrapped_in_vector {
                return Err(parse_error(
                    name,
                    parser.line(),
                    "the history's '[' is never closed (truncated file?)",
                ));
            }
            break;
        }
        let line = parser.line();
        let value = parser.value().map_err(|e| from_edn_error(name, e))?;
        maps.push(value);
        lines.push(line);
    }
    // Synthetic processes go above every real one so they cannot collide.
    let max_process = maps
        .iter()
        .filter_map(|m| m.get("process").and_then(Value::as_int))
        .max()
        .unwrap_or(-1);
    let mut filler = ProcessFiller {
        next_synthetic: (max_process + 1) as u64,
        ..Default::default()
    };
    let mut history = History::default();
    for (map, line) in maps.into_iter().zip(lines) {
        let event = event_from_map(map, &mut filler).map_err(|m| parse_error(name, line, m))?;
        history.events.push(event);
        history.source_lines.push(line);
    }
    Ok(history)
}

fn read_edn(text: &str, name: &Path) -> Result<History, HistoryError> {
    let mut parser = Parser::new(text, 1);
    let wrapped = parser.open_vector();
    read_op_maps(parser, name, wrapped)
}

fn read_json_array(text: &str, name: &Path) -> Result<History, HistoryError> {
    let mut parser = Parser::new(text, 1).json();
    if parser.at_end() {
        return Ok(History::default());
    }
    if !parser.open_vector() {
        return Err(parse_error(
            name,
            parser.line(),
            "expected a JSON array of ops",
        ));
    }
    read_op_maps(parser, name, true)
}

/// Builds an event from an op map (EDN or JSON); the error message names the bad field.
fn event_from_map(map: Value, filler: &mut ProcessFiller) -> Result<Event, String> {
    let Value::Map(entries) = map else {
        return Err(format!("expected an op map, got {}", map.to_edn()));
    };
    let mut kind = None;
    let mut process = None;
    let mut event = Event::new(Process::Client(0), EventType::Invoke, "", Value::Null);
    for (k, v) in entries {
        let Value::Str(k) = k else { continue };
        match k.as_str() {
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
                    Value::Str(s) if s == "nemesis" => Process::Nemesis,
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
                    Value::Str(s) => s,
                    other => other.to_string(),
                }
            }
            "key" => event.key = Some(v),
            "value" => event.value = v,
            "node" => event.node = Some(v.to_string()),
            "error" => event.error = Some(v),
            _ => {}
        }
    }
    event.kind = kind.ok_or("op has no type")?;
    event.process = match process {
        Some(p) => p,
        None => Process::Client(
            filler
                .fill(event.kind, &event.f)
                .ok_or("completion has no process and no pending invoke")?,
        ),
    };
    Ok(event)
}

/// Jepsen's text log: lines `... jepsen.util - <process> :<type> :<f> <value>` (tabs or
/// spaces); other log lines are skipped.
fn read_jepsen_log(text: &str, name: &Path) -> Result<History, HistoryError> {
    let mut history = History::default();
    for (i, line) in text.lines().enumerate() {
        let Some(at) = line.find("jepsen.util - ") else {
            continue;
        };
        let rest = &line[at + "jepsen.util - ".len()..];
        let event = parse_log_fields(rest).map_err(|m| parse_error(name, i + 1, m))?;
        history.events.push(event);
        history.source_lines.push(i + 1);
    }
    Ok(history)
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
                    Value::Str(s) if i == 0 && is_micro_op_name(s) && items.len() == 3 => {
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
        assert_eq!(h.events[3].value, Value::Str("timed-out".into()));
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
        assert_eq!(back.events, h.events);
        let mut edn = Vec::new();
        write_edn(&h, &mut edn).unwrap();
        let edn = String::from_utf8(edn).unwrap();
        assert!(edn.contains("[[:append 1 2] [:r 1 nil]]"), "{edn}");
        assert_eq!(read(&edn, Format::Edn).unwrap().events, h.events);
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
