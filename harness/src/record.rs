//! Recording the history: every event goes through one bounded channel to one writer task, which
//! numbers it and streams it to `history.jsonl`. Nothing keeps the history in memory: the
//! checks read the file afterwards. The recorder holds at most the queue
//! (`RECORDER_QUEUE_EVENTS`), one batch taken from it (`WRITER_BATCH_EVENTS`) and the file's
//! buffer, however long the run.
//!
//! Back-pressure, not buffering: [`Recorder::record_async`] waits for room in the queue, so a
//! slow writer slows the clients instead of growing memory, and no event ever takes another path
//! that could overtake the ones before it.
//!
//! Order guarantees. A caller first waits for a free slot, then, holding a lock shared by every
//! clone of the recorder, stamps the time and puts the event in the queue; nothing in that
//! critical section awaits. Hence, across all callers:
//! - the history's order (its `index`) is the order in which times were stamped, so `time` never
//!   decreases along the history;
//! - one caller's events appear in the order it recorded them (it awaits each before the next).
//!
//! That order is sound for real time: an invocation is recorded before its request leaves and a
//! completion after its reply arrived, so if a completion precedes an invocation in the history,
//! the operation really finished before the other began. Stamping after the wait for a slot only
//! moves an invocation's time closer to its request and a completion's further after its reply:
//! operations can look longer, and two that were not concurrent can look concurrent, which costs
//! the checker precision but never invents an anomaly.

use anyhow::{Context, Result};
use ordeal_checker::Event;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;
use tokio::sync::mpsc;

/// Events waiting for the writer, at most. Callers wait when it is full, which slows the test
/// rather than growing memory without bound.
pub const RECORDER_QUEUE_EVENTS: usize = 1 << 16;

#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Event>,
    start: Instant,
    /// Held while stamping an event's time and enqueuing it, so queue order is stamp order.
    stamp_and_enqueue: Arc<Mutex<()>>,
}

impl Recorder {
    /// Nanoseconds since the test started.
    pub fn now_ns(&self) -> i64 {
        self.start.elapsed().as_nanos() as i64
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    /// Records an event, stamping its time now: waits for room in the queue, then stamps and
    /// enqueues it atomically with respect to every other caller (see the module doc). Once the
    /// writer has stopped (it failed, or every recorder was dropped) events are discarded; the
    /// writer's own result reports why.
    pub async fn record_async(&self, mut e: Event) {
        let Ok(slot) = self.tx.reserve().await else {
            return;
        };
        // No await while this is held; a panic while holding it cannot leave `()` inconsistent.
        let _order = self
            .stamp_and_enqueue
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        e.time = self.now_ns();
        slot.send(e);
    }
}

/// Events the writer takes from the queue at a time.
pub const WRITER_BATCH_EVENTS: usize = 1024;

/// The writer's result.
#[derive(Debug, Default)]
pub struct Recorded {
    /// Events recorded, numbered 0 to `events - 1`.
    pub events: u64,
    pub bytes_written: u64,
    /// The events themselves, in order: only when recording to memory (`start(None, ..)`),
    /// empty otherwise.
    pub kept: Vec<Event>,
    /// The most events the writer held at once, queued or in its batch (the events kept in
    /// memory excluded): at most `queue_events + WRITER_BATCH_EVENTS`.
    pub peak_events_held: usize,
}

/// Starts the writer, streaming to `path`. With `path = None` nothing is written while the
/// test runs (for measuring what writing costs) and the events are kept in memory instead, so
/// that memory then grows with the run; [`write_events`] writes them out afterwards.
pub fn start(
    path: Option<&Path>,
    start: Instant,
) -> Result<(Recorder, tokio::task::JoinHandle<Result<Recorded>>)> {
    start_with_queue(path, start, RECORDER_QUEUE_EVENTS)
}

/// One event as a line of `history.jsonl`, appended to `line`.
fn event_line(e: &Event, line: &mut Vec<u8>) -> Result<()> {
    serde_json::to_writer(&mut *line, e).context("serialising an event")?;
    line.push(b'\n');
    Ok(())
}

/// Writes events kept in memory to a `history.jsonl`; returns the bytes written.
pub fn write_events(path: &Path, events: &[Event]) -> Result<u64> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 16, file);
    let mut line = Vec::with_capacity(256);
    let mut bytes = 0u64;
    for e in events {
        line.clear();
        event_line(e, &mut line)?;
        out.write_all(&line)
            .with_context(|| format!("writing {}", path.display()))?;
        bytes += line.len() as u64;
    }
    out.flush()
        .with_context(|| format!("flushing {}", path.display()))?;
    Ok(bytes)
}

/// [`start`] with a queue of `queue_events` (at least 1): tests flood a tiny queue.
pub fn start_with_queue(
    path: Option<&Path>,
    start: Instant,
    queue_events: usize,
) -> Result<(Recorder, tokio::task::JoinHandle<Result<Recorded>>)> {
    let (tx, mut rx) = mpsc::channel::<Event>(queue_events.max(1));
    let mut out = match path {
        Some(p) => Some(std::io::BufWriter::with_capacity(
            1 << 16,
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => None,
    };
    let path_text = path.map(|p| p.display().to_string()).unwrap_or_default();
    let handle = tokio::spawn(async move {
        let mut recorded = Recorded::default();
        let mut line = Vec::with_capacity(256);
        let mut batch = Vec::with_capacity(WRITER_BATCH_EVENTS);
        // Ends when every sender is dropped.
        while rx.recv_many(&mut batch, WRITER_BATCH_EVENTS).await > 0 {
            recorded.peak_events_held = recorded.peak_events_held.max(batch.len() + rx.len());
            for mut e in batch.drain(..) {
                e.index = recorded.events;
                recorded.events += 1;
                match out.as_mut() {
                    Some(w) => {
                        line.clear();
                        event_line(&e, &mut line)?;
                        w.write_all(&line)
                            .with_context(|| format!("writing {path_text}"))?;
                        recorded.bytes_written += line.len() as u64;
                    }
                    None => recorded.kept.push(e),
                }
            }
            // Flush whenever the queue runs dry, so a crash leaves (almost) everything on disk.
            if rx.is_empty() {
                if let Some(w) = out.as_mut() {
                    w.flush().with_context(|| format!("flushing {path_text}"))?;
                }
            }
        }
        if let Some(w) = out.as_mut() {
            w.flush().with_context(|| format!("flushing {path_text}"))?;
        }
        Ok(recorded)
    });
    Ok((
        Recorder {
            tx,
            start,
            stamp_and_enqueue: Arc::new(Mutex::new(())),
        },
        handle,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ordeal_checker::{EventType, Process, Value};

    const FLOOD_TASKS: u64 = 32;
    const FLOOD_EVENTS_PER_TASK: i64 = 300;

    /// Many tasks flood a recorder whose queue holds two events: nothing may be lost or reordered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_flooded_recorder_keeps_every_event_in_order() {
        let dir = std::env::temp_dir().join(format!(
            "ordeal-recorder-flood-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).expect("creating the test directory");
        let path = dir.join("history.jsonl");
        let (recorder, writer) =
            start_with_queue(Some(&path), Instant::now(), 2).expect("starting the recorder");
        let tasks: Vec<_> = (0..FLOOD_TASKS)
            .map(|task| {
                let recorder = recorder.clone();
                tokio::spawn(async move {
                    for seq in 0..FLOOD_EVENTS_PER_TASK {
                        let e = Event::new(
                            Process::Client(task),
                            EventType::Invoke,
                            "write",
                            Value::Int(seq),
                        );
                        recorder.record_async(e).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("a flooding task panicked");
        }
        drop(recorder);
        let recorded = writer
            .await
            .expect("the writer panicked")
            .expect("the writer failed");

        let text = std::fs::read_to_string(&path).expect("reading the history");
        let written: Vec<Event> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("parsing a history line"))
            .collect();
        let _ = std::fs::remove_dir_all(&dir);

        let total = (FLOOD_TASKS as usize) * (FLOOD_EVENTS_PER_TASK as usize);
        assert_eq!(written.len(), total, "events written to the file");
        assert_eq!(recorded.events, total as u64, "events recorded");
        assert!(recorded.kept.is_empty(), "nothing kept in memory");
        assert!(
            recorded.peak_events_held <= 2 + WRITER_BATCH_EVENTS,
            "held {} events at once with a queue of 2",
            recorded.peak_events_held
        );
        let mut next_seq = vec![0i64; FLOOD_TASKS as usize];
        let mut last_time = vec![i64::MIN; FLOOD_TASKS as usize];
        let mut last_time_any = i64::MIN;
        for (line, e) in written.iter().enumerate() {
            assert_eq!(e.index, line as u64, "index of line {line}");
            let Process::Client(task) = e.process else {
                panic!("line {line}: unexpected process {:?}", e.process);
            };
            let task = task as usize;
            assert_eq!(
                e.value,
                Value::Int(next_seq[task]),
                "line {line}: task {task}'s events out of order"
            );
            next_seq[task] += 1;
            assert!(e.time >= 0, "line {line}: time {} not stamped", e.time);
            assert!(
                e.time >= last_time[task],
                "line {line}: task {task}'s time went back from {} to {}",
                last_time[task],
                e.time
            );
            last_time[task] = e.time;
            assert!(
                e.time >= last_time_any,
                "line {line}: time went back from {} to {} across tasks",
                last_time_any,
                e.time
            );
            last_time_any = e.time;
        }
        assert!(
            next_seq.iter().all(|&n| n == FLOOD_EVENTS_PER_TASK),
            "every task's events all arrived: {next_seq:?}"
        );
    }
}
