//! Recording the history: every event goes through one bounded channel to one writer task, which
//! numbers it, streams it to `history.jsonl` and keeps it in memory for the checkers.
//!
//! Order is sound for real time: a completion is sent after its reply arrived and an invocation
//! before its request leaves, so if a completion precedes an invocation in the channel, the
//! operation really finished before the other began. A race can only make two operations look
//! concurrent that were not, which costs the checker precision but never invents an anomaly.

use anyhow::{Context, Result};
use ordeal_checker::Event;
use std::io::Write;
use std::path::Path;
use std::time::Instant;
use tokio::sync::mpsc;

/// Events waiting for the writer, at most. Clients block (briefly) when it is full, which slows
/// the test rather than growing memory without bound.
pub const RECORDER_QUEUE_EVENTS: usize = 1 << 16;

#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Event>,
    start: Instant,
}

impl Recorder {
    /// Nanoseconds since the test started.
    pub fn now_ns(&self) -> i64 {
        self.start.elapsed().as_nanos() as i64
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    /// Records an event, stamping its time now.
    pub fn record(&self, mut e: Event) {
        e.time = self.now_ns();
        // try_send first: the common case takes no await point; a full queue falls back to
        // blocking_send semantics via a spawned send so callers stay synchronous.
        match self.tx.try_send(e) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(e)) => {
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(e).await;
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Records an event, waiting for room in the queue (keeps order under back-pressure).
    pub async fn record_async(&self, mut e: Event) {
        e.time = self.now_ns();
        let _ = self.tx.send(e).await;
    }
}

/// The writer's result: every event, in order.
pub struct Recorded {
    pub events: Vec<Event>,
    pub bytes_written: u64,
}

/// Starts the writer. With `path = None` nothing is written to disk (for measuring what writing
/// costs); the events are still kept for checking.
pub fn start(
    path: Option<&Path>,
    start: Instant,
) -> Result<(Recorder, tokio::task::JoinHandle<Result<Recorded>>)> {
    let (tx, mut rx) = mpsc::channel::<Event>(RECORDER_QUEUE_EVENTS);
    let mut out = match path {
        Some(p) => Some(std::io::BufWriter::with_capacity(
            1 << 16,
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => None,
    };
    let path_text = path.map(|p| p.display().to_string()).unwrap_or_default();
    let handle = tokio::spawn(async move {
        let mut events: Vec<Event> = Vec::with_capacity(1 << 16);
        let mut bytes_written = 0u64;
        let mut line = Vec::with_capacity(256);
        let mut batch = Vec::with_capacity(1024);
        // Ends when every sender is dropped.
        while rx.recv_many(&mut batch, 1024).await > 0 {
            for mut e in batch.drain(..) {
                e.index = events.len() as u64;
                if let Some(w) = out.as_mut() {
                    line.clear();
                    serde_json::to_writer(&mut line, &e).context("serialising an event")?;
                    line.push(b'\n');
                    w.write_all(&line)
                        .with_context(|| format!("writing {path_text}"))?;
                    bytes_written += line.len() as u64;
                }
                events.push(e);
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
        Ok(Recorded {
            events,
            bytes_written,
        })
    });
    Ok((Recorder { tx, start }, handle))
}
