//! One bounded-memory pass over a history file for everything the harness itself judges and
//! draws: counts per operation, availability in and out of faults, the fault intervals and the
//! charts' data. A run at full speed records millions of events an hour; nothing here holds
//! them. What is held: the fault intervals (a few per minute of faults), the operation in flight
//! on each process (at most one each, so about the run's concurrency), counts per operation
//! name, and [`ChartData`]'s fixed-size buckets.
//!
//! A file is read twice. The first pass parses only what it needs (every line's time, and the
//! nemesis lines in full) to find the fault intervals and the history's end; the second parses
//! every event and pairs invocations with completions. Knowing the faults before the operations
//! is what lets availability say exactly, as before, whether each operation was invoked during a
//! fault, whatever the order of events with equal times.

use crate::checks::{Counts, FaultInterval, FaultTracker};
use crate::plots::ChartData;
use anyhow::{Context, Result};
use ordeal_checker::{Event, EventType, Outcome, Process};
use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::path::Path;

/// Availability's tallies: operations, and of them ok, overall and invoked during a fault.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AvailabilityTally {
    pub ops: u64,
    pub ok: u64,
    pub ops_during_faults: u64,
    pub ok_during_faults: u64,
}

/// What one pass over a history found.
#[derive(Debug)]
pub struct HistorySummary {
    /// Events read (client and nemesis).
    pub events: u64,
    pub faults: Vec<FaultInterval>,
    /// Completions per operation name and type (client events only).
    pub counts: BTreeMap<String, Counts>,
    /// Why invocations and completions do not pair up (the first problem), if they do not: then
    /// availability and the charts cannot be trusted and are not reported.
    pub pairing_error: Option<String>,
    pub availability: AvailabilityTally,
    pub charts: ChartData,
    /// The most operations ever in flight at once: what the pass held per operation.
    pub peak_ops_in_flight: usize,
}

/// An invocation waiting for its completion.
#[derive(Clone, Debug)]
struct InFlight {
    f: String,
    invoke_ns: i64,
    /// Position of the invocation, for messages.
    position: u64,
    during_fault: bool,
}

/// The pass's state: takes events in history order, one at a time.
pub struct Summariser {
    events: u64,
    faults: Vec<FaultInterval>,
    /// The union of the fault intervals, disjoint and sorted: whether a time is "during a
    /// fault" is a binary search.
    fault_union: Vec<(i64, i64)>,
    counts: BTreeMap<String, Counts>,
    in_flight: HashMap<u64, InFlight>,
    peak_ops_in_flight: usize,
    pairing_error: Option<String>,
    availability: AvailabilityTally,
    charts: ChartData,
}

impl Summariser {
    /// A pass over a history with these fault intervals whose latest event is at
    /// `end_time_ns`.
    pub fn new(faults: Vec<FaultInterval>, end_time_ns: i64) -> Summariser {
        let mut spans: Vec<(i64, i64)> = faults
            .iter()
            .filter(|f| f.start_ns < f.end_ns)
            .map(|f| (f.start_ns, f.end_ns))
            .collect();
        spans.sort_unstable();
        let mut fault_union: Vec<(i64, i64)> = Vec::with_capacity(spans.len());
        for (start, end) in spans {
            match fault_union.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => fault_union.push((start, end)),
            }
        }
        Summariser {
            events: 0,
            faults,
            fault_union,
            counts: BTreeMap::new(),
            in_flight: HashMap::new(),
            peak_ops_in_flight: 0,
            pairing_error: None,
            availability: AvailabilityTally::default(),
            charts: ChartData::new(end_time_ns),
        }
    }

    /// Whether `t` lies in some fault interval `[start, end)`.
    fn during_fault(&self, t: i64) -> bool {
        let after = self.fault_union.partition_point(|&(start, _)| start <= t);
        after > 0 && t < self.fault_union[after - 1].1
    }

    /// Takes the next event of the history.
    pub fn add(&mut self, e: &Event) {
        self.take(e.time, e.process, e.kind, &e.f);
    }

    /// Takes the next event, given only what the summary reads of it.
    fn take(&mut self, time: i64, process: Process, kind: EventType, f: &str) {
        let position = self.events;
        self.events += 1;
        let Process::Client(p) = process else {
            return;
        };
        if kind != EventType::Invoke {
            let c = match self.counts.get_mut(f) {
                Some(c) => c,
                None => self.counts.entry(f.to_string()).or_default(),
            };
            match kind {
                EventType::Ok => c.ok += 1,
                EventType::Fail => c.fail += 1,
                _ => c.info += 1,
            }
        }
        if self.pairing_error.is_some() {
            return;
        }
        if kind == EventType::Invoke {
            if let Some(open) = self.in_flight.get(&p) {
                self.pairing_error = Some(format!(
                    "event {position}: process {p} invoked {f} while its {} (event {}) was still pending",
                    open.f, open.position
                ));
                return;
            }
            let during_fault = self.during_fault(time);
            self.in_flight.insert(
                p,
                InFlight {
                    f: f.to_string(),
                    invoke_ns: time,
                    position,
                    during_fault,
                },
            );
            self.peak_ops_in_flight = self.peak_ops_in_flight.max(self.in_flight.len());
            return;
        }
        let Some(op) = self.in_flight.remove(&p) else {
            self.pairing_error = Some(format!(
                "event {position}: {} of {f} on process {p} has no pending invoke",
                kind.as_str(),
            ));
            return;
        };
        let outcome = match kind {
            EventType::Ok => Outcome::Ok,
            EventType::Fail => Outcome::Fail,
            _ => Outcome::Info,
        };
        self.count_availability(outcome == Outcome::Ok, op.during_fault);
        self.charts.add(&op.f, outcome, op.invoke_ns, time);
    }

    fn count_availability(&mut self, ok: bool, during_fault: bool) {
        let a = &mut self.availability;
        a.ops += 1;
        a.ok += ok as u64;
        if during_fault {
            a.ops_during_faults += 1;
            a.ok_during_faults += ok as u64;
        }
    }

    /// The summary. Operations still in flight never completed: they count as unknown.
    pub fn finish(mut self) -> HistorySummary {
        if self.pairing_error.is_none() {
            let open: Vec<bool> = self.in_flight.values().map(|o| o.during_fault).collect();
            for during_fault in open {
                self.count_availability(false, during_fault);
            }
        }
        HistorySummary {
            events: self.events,
            faults: self.faults,
            counts: self.counts,
            pairing_error: self.pairing_error,
            availability: self.availability,
            charts: self.charts,
            peak_ops_in_flight: self.peak_ops_in_flight,
        }
    }
}

/// Summarises events in memory (a history built in code).
pub fn summarise_events(events: &[Event]) -> HistorySummary {
    let faults = crate::checks::fault_intervals(events);
    let end = events.iter().map(|e| e.time).max().unwrap_or(0);
    let mut s = Summariser::new(faults, end);
    for e in events {
        s.add(e);
    }
    s.finish()
}

/// Summarises a `history.jsonl` in two streaming passes (see the module doc). A line that is
/// not an event is an error naming the file and line.
pub fn summarise_file(path: &Path) -> Result<HistorySummary> {
    let (faults, end_time_ns) = scan_faults(path)?;
    let mut s = Summariser::new(faults, end_time_ns);
    for_each_line(path, |line, number| {
        let head: EventHead = serde_json::from_slice(line)
            .with_context(|| format!("{}:{number}: not a history event", path.display()))?;
        s.take(head.time, head.process, head.kind, &head.f);
        Ok(())
    })?;
    Ok(s.finish())
}

/// What the second pass reads of an event: its values (a read of a long list can be
/// megabytes) are skipped unparsed.
#[derive(serde::Deserialize)]
struct EventHead {
    #[serde(default = "no_time")]
    time: i64,
    process: Process,
    #[serde(rename = "type")]
    kind: EventType,
    #[serde(default)]
    f: String,
}

/// Calls `each` with every non-blank line of a file and its 1-based number, reading one line
/// at a time.
pub(crate) fn for_each_line(
    path: &Path,
    mut each: impl FnMut(&[u8], usize) -> Result<()>,
) -> Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 16, file);
    let mut line = Vec::with_capacity(512);
    for number in 1.. {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .with_context(|| format!("{}:{number}: reading", path.display()))?;
        if n == 0 {
            break;
        }
        if !line.iter().all(u8::is_ascii_whitespace) {
            each(&line, number)?;
        }
    }
    Ok(())
}

/// Only the time of a line, so that the first pass skips the rest without building values.
#[derive(serde::Deserialize)]
struct TimeOnly {
    #[serde(default = "no_time")]
    time: i64,
}

fn no_time() -> i64 {
    -1
}

/// The first pass: the fault intervals (from the nemesis lines, parsed in full) and the latest
/// time of any event. Lines that do not parse are left to the second pass to report.
fn scan_faults(path: &Path) -> Result<(Vec<FaultInterval>, i64)> {
    let mut tracker = FaultTracker::default();
    let (mut last_ns, mut max_ns) = (0i64, 0i64);
    for_each_line(path, |line, _| {
        if let Ok(t) = serde_json::from_slice::<TimeOnly>(line) {
            last_ns = t.time;
            max_ns = max_ns.max(t.time);
        }
        // Only nemesis events say "nemesis" as their process; a client event that mentions it
        // in a value is parsed and passed over.
        if memchr_nemesis(line) {
            if let Ok(e) = serde_json::from_slice::<Event>(line) {
                tracker.add(&e);
            }
        }
        Ok(())
    })?;
    // A fault still open at the end ends at the last event, as `fault_intervals` has it.
    Ok((tracker.finish(last_ns), max_ns))
}

fn memchr_nemesis(line: &[u8]) -> bool {
    const NEEDLE: &[u8] = b"\"nemesis\"";
    line.windows(NEEDLE.len()).any(|w| w == NEEDLE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ordeal_checker::{History, Value};

    fn ev(p: Process, kind: EventType, f: &str, t: i64) -> Event {
        Event::new(p, kind, f, Value::Null).with_time(t)
    }

    /// The streaming summary agrees with the whole-history definitions it replaces:
    /// `History::operations` for pairing and the interval test for "during a fault".
    #[test]
    fn the_streaming_summary_matches_the_whole_history_definitions() {
        let mut events = Vec::new();
        let mut t = 0;
        // Rounds of 7 clients: all invoke, then all complete, so 7 are in flight at once.
        for round in 0..58u64 {
            let ops: Vec<u64> = (round * 7..(round * 7 + 7).min(400)).collect();
            for &i in &ops {
                t += 1_000_000;
                if i % 50 == 10 {
                    events.push(ev(Process::Nemesis, EventType::Info, "kill", t));
                }
                if i % 50 == 30 {
                    events.push(ev(Process::Nemesis, EventType::Info, "start", t));
                }
                events.push(ev(Process::Client(i % 7), EventType::Invoke, "write", t));
            }
            for &i in &ops {
                t += 500_000;
                let kind = [EventType::Ok, EventType::Fail, EventType::Info][(i % 3) as usize];
                events.push(ev(Process::Client(i % 7), kind, "write", t));
            }
        }
        // One invocation never completes.
        events.push(ev(Process::Client(99), EventType::Invoke, "read", t + 1));
        let summary = summarise_events(&events);
        let history = History::new(events.clone());
        let faults = crate::checks::fault_intervals(&history.events);
        let ops = history.operations().expect("pairs up");
        let during = |t: i64| faults.iter().any(|f| t >= f.start_ns && t < f.end_ns);
        let expected = AvailabilityTally {
            ops: ops.len() as u64,
            ok: ops.iter().filter(|o| o.outcome == Outcome::Ok).count() as u64,
            ops_during_faults: ops.iter().filter(|o| during(o.invoke_time)).count() as u64,
            ok_during_faults: ops
                .iter()
                .filter(|o| o.outcome == Outcome::Ok && during(o.invoke_time))
                .count() as u64,
        };
        assert_eq!(summary.availability, expected);
        assert!(expected.ops_during_faults > 0 && expected.ok_during_faults > 0);
        assert_eq!(summary.faults.len(), faults.len());
        assert_eq!(summary.counts["write"].total(), 400);
        assert_eq!(summary.counts["write"].ok, 134);
        assert!(summary.pairing_error.is_none());
        assert_eq!(summary.peak_ops_in_flight, 7, "a round's clients at once");
    }

    #[test]
    fn a_history_that_does_not_pair_up_says_where() {
        let events = vec![
            ev(Process::Client(0), EventType::Invoke, "read", 0),
            ev(Process::Client(0), EventType::Invoke, "read", 1),
        ];
        let summary = summarise_events(&events);
        let why = summary.pairing_error.expect("does not pair up");
        assert!(
            why.contains("event 1") && why.contains("still pending"),
            "{why}"
        );
        let summary = summarise_events(&[ev(Process::Client(3), EventType::Ok, "read", 0)]);
        let why = summary.pairing_error.expect("does not pair up");
        assert!(why.contains("no pending invoke"), "{why}");
    }

    /// The file passes agree with the in-memory one, and a bad line is named by file and line.
    #[test]
    fn a_file_summarises_like_its_events_and_bad_lines_are_named() {
        let dir = std::env::temp_dir().join(format!(
            "ordeal-summary-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).expect("creating the test directory");
        let path = dir.join("history.jsonl");
        let mut events = vec![ev(Process::Nemesis, EventType::Info, "kill", 5)];
        for i in 0..20 {
            events.push(ev(
                Process::Client(1),
                EventType::Invoke,
                "read",
                10 * i + 6,
            ));
            events.push(ev(Process::Client(1), EventType::Ok, "read", 10 * i + 8));
        }
        events.push(ev(Process::Nemesis, EventType::Info, "start", 100));
        let mut history = History::new(events.clone());
        history.reindex();
        let mut text = Vec::new();
        ordeal_checker::read::write_jsonl(&history, &mut text).expect("serialising");
        std::fs::write(&path, &text).expect("writing the history");
        let from_file = summarise_file(&path).expect("summarising the file");
        let in_memory = summarise_events(&events);
        assert_eq!(from_file.availability, in_memory.availability);
        assert_eq!(from_file.events, 42);
        assert_eq!(from_file.faults.len(), 1);
        assert_eq!(
            (from_file.faults[0].start_ns, from_file.faults[0].end_ns),
            (5, 100)
        );
        assert_eq!(from_file.availability.ops_during_faults, 10);

        text.extend_from_slice(b"{\"index\": 42, \"process\": 1, \"type\": \"sideways\"}\n");
        std::fs::write(&path, &text).expect("writing the history");
        let err = format!("{:#}", summarise_file(&path).expect_err("a bad line"));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            err.contains("history.jsonl") && err.contains("43"),
            "names the file and line: {err}"
        );
    }
}
