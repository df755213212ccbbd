//! Histories: one event per line, as DESIGN.md defines them, and the pairing of invocations with
//! their completions into operations.

use crate::error::HistoryError;
use crate::value::Value;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;

/// Who issued an event: a logical client, or the fault injector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Process {
    Client(u64),
    Nemesis,
}

impl fmt::Display for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Process::Client(p) => write!(f, "{p}"),
            Process::Nemesis => f.write_str("nemesis"),
        }
    }
}

impl Serialize for Process {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Process::Client(p) => s.serialize_u64(*p),
            Process::Nemesis => s.serialize_str("nemesis"),
        }
    }
}

impl<'de> Deserialize<'de> for Process {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Int(p) if p >= 0 => Ok(Process::Client(p as u64)),
            ref v if v.as_str() == Some("nemesis") => Ok(Process::Nemesis),
            other => Err(serde::de::Error::custom(format!(
                "process must be a non-negative integer or \"nemesis\", got {other}"
            ))),
        }
    }
}

/// The type of an event: an invocation, or one of the three completions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    Invoke,
    /// Took effect.
    Ok,
    /// Certainly did not take effect.
    Fail,
    /// Unknown: may or may not have taken effect.
    Info,
}

impl EventType {
    pub fn parse(s: &str) -> Option<EventType> {
        match s {
            "invoke" => Some(EventType::Invoke),
            "ok" => Some(EventType::Ok),
            "fail" => Some(EventType::Fail),
            "info" => Some(EventType::Info),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Invoke => "invoke",
            EventType::Ok => "ok",
            EventType::Fail => "fail",
            EventType::Info => "info",
        }
    }
}

/// One line of `history.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the history, from 0.
    pub index: u64,
    /// Nanoseconds since the test started; -1 when the source did not record time.
    #[serde(default = "unknown_time")]
    pub time: i64,
    pub process: Process,
    #[serde(rename = "type")]
    pub kind: EventType,
    /// `read`, `write`, `cas`, `append`, `txn`, ...; nemesis ops name the fault.
    #[serde(default)]
    pub f: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Value>,
    #[serde(default)]
    pub value: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
}

fn unknown_time() -> i64 {
    -1
}

impl Event {
    pub fn new(process: Process, kind: EventType, f: &str, value: Value) -> Event {
        Event {
            index: 0,
            time: -1,
            process,
            kind,
            f: f.to_string(),
            key: None,
            value,
            node: None,
            error: None,
        }
    }

    pub fn with_key(mut self, key: impl Into<Value>) -> Event {
        self.key = Some(key.into());
        self
    }

    pub fn with_time(mut self, time_ns: i64) -> Event {
        self.time = time_ns;
        self
    }
}

/// A whole history, in order. `source_lines[i]` is the line of the input file that event `i` came
/// from (1-based), so that later errors can name it; histories built in code have no lines.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    pub events: Vec<Event>,
    pub source_lines: Vec<usize>,
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Fail,
    /// Unknown, including an invocation that never completed.
    Info,
}

/// An invocation paired with its completion.
#[derive(Clone, Debug, PartialEq)]
pub struct Operation {
    pub process: Process,
    pub f: String,
    pub key: Option<Value>,
    /// The invocation's value (the argument).
    pub input: Value,
    /// The completion's value (the result), `Null` when the operation never completed.
    pub output: Value,
    pub outcome: Outcome,
    /// Position of the invocation in `History::events`.
    pub invoke_pos: usize,
    /// Position of the completion in `History::events`; `None` if it never completed.
    pub complete_pos: Option<usize>,
    pub invoke_time: i64,
    pub complete_time: Option<i64>,
    pub error: Option<Value>,
}

impl History {
    pub fn new(events: Vec<Event>) -> History {
        let mut h = History {
            events,
            source_lines: Vec::new(),
        };
        h.reindex();
        h
    }

    /// Renumbers `index` from 0 in order.
    pub fn reindex(&mut self) {
        for (i, e) in self.events.iter_mut().enumerate() {
            e.index = i as u64;
        }
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The 1-based source line of event `pos`, if the history was read from a file.
    pub fn line_of(&self, pos: usize) -> Option<usize> {
        self.source_lines.get(pos).copied()
    }

    /// Pairs every client invocation with its completion. Nemesis events are skipped. An
    /// invocation with no completion is an `Info` operation that stays open to the end.
    ///
    /// Errors: a completion with no pending invocation on its process, or a second invocation
    /// while one is pending on the same process.
    pub fn operations(&self) -> Result<Vec<Operation>, HistoryError> {
        let mut ops: Vec<Operation> = Vec::with_capacity(self.events.len() / 2 + 1);
        let mut pending: HashMap<u64, usize> = HashMap::new();
        for (pos, e) in self.events.iter().enumerate() {
            let Process::Client(p) = e.process else {
                continue;
            };
            match e.kind {
                EventType::Invoke => {
                    if let Some(&open) = pending.get(&p) {
                        return Err(self.error_at(
                            pos,
                            format!(
                                "process {p} invoked {} while its {} (event {}) was still pending",
                                e.f, ops[open].f, ops[open].invoke_pos
                            ),
                        ));
                    }
                    pending.insert(p, ops.len());
                    ops.push(Operation {
                        process: e.process,
                        f: e.f.clone(),
                        key: e.key.clone(),
                        input: e.value.clone(),
                        output: Value::Null,
                        outcome: Outcome::Info,
                        invoke_pos: pos,
                        complete_pos: None,
                        invoke_time: e.time,
                        complete_time: None,
                        error: None,
                    });
                }
                kind => {
                    let Some(open) = pending.remove(&p) else {
                        return Err(self.error_at(
                            pos,
                            format!(
                                "{} of {} on process {p} has no pending invoke",
                                kind.as_str(),
                                e.f
                            ),
                        ));
                    };
                    let op = &mut ops[open];
                    op.outcome = match kind {
                        EventType::Ok => Outcome::Ok,
                        EventType::Fail => Outcome::Fail,
                        _ => Outcome::Info,
                    };
                    op.output = e.value.clone();
                    op.complete_pos = Some(pos);
                    op.complete_time = Some(e.time);
                    op.error = e.error.clone();
                }
            }
        }
        Ok(ops)
    }

    /// An error about event `pos`, naming its source line when there is one.
    pub fn error_at(&self, pos: usize, message: String) -> HistoryError {
        HistoryError::Invalid {
            line: self.line_of(pos),
            index: pos,
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(p: u64, kind: EventType, f: &str, v: Value) -> Event {
        Event::new(Process::Client(p), kind, f, v)
    }

    #[test]
    fn pairs_and_keeps_open_invocations() {
        let h = History::new(vec![
            ev(0, EventType::Invoke, "write", 1.into()),
            ev(1, EventType::Invoke, "read", Value::Null),
            ev(0, EventType::Ok, "write", 1.into()),
            Event::new(Process::Nemesis, EventType::Info, "kill", Value::Null),
            ev(2, EventType::Invoke, "write", 2.into()),
            ev(2, EventType::Fail, "write", 2.into()),
        ]);
        let ops = h.operations().unwrap();
        assert_eq!(ops.len(), 3);
        assert_eq!(ops[0].outcome, Outcome::Ok);
        assert_eq!(ops[0].complete_pos, Some(2));
        assert_eq!(ops[1].outcome, Outcome::Info);
        assert_eq!(ops[1].complete_pos, None);
        assert_eq!(ops[2].outcome, Outcome::Fail);
    }

    #[test]
    fn completion_without_invoke_is_an_error() {
        let h = History::new(vec![ev(3, EventType::Ok, "read", 1.into())]);
        let err = h.operations().unwrap_err().to_string();
        assert!(err.contains("no pending invoke"), "{err}");
    }

    #[test]
    fn double_invoke_is_an_error() {
        let h = History::new(vec![
            ev(3, EventType::Invoke, "read", Value::Null),
            ev(3, EventType::Invoke, "read", Value::Null),
        ]);
        assert!(h.operations().is_err());
    }

    #[test]
    fn event_json_round_trip() {
        let line =
            r#"{"index":4,"time":100,"process":"nemesis","type":"info","f":"kill","value":["n1"]}"#;
        let e: Event = serde_json::from_str(line).unwrap();
        assert_eq!(e.process, Process::Nemesis);
        assert_eq!(serde_json::to_string(&e).unwrap(), line);
    }
}
