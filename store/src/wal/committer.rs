//! The WAL committer: a thread doing group commit. It appends the records of every Ready
//! queued so far, covers them with one fsync, then hands back the highest persist token and
//! the messages that had to wait for it; it also runs compactions.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

use crate::paxos::{Envelope, PersistToken};
use crate::server::{fatal, Shared};
use crate::wal::Wal;

pub(crate) enum WalJob {
    Append {
        records: Vec<Vec<u8>>,
        token: Option<PersistToken>,
        after: Vec<Envelope>,
    },
    /// Write `snapshot` and make `live` the whole log behind it.
    Compact {
        snapshot: Vec<u8>,
        live: Vec<Vec<u8>>,
        /// Tell the core about it (`snapshot_taken`) once durable.
        slot_taken: Option<(u64, Vec<u8>)>,
    },
}

pub(crate) enum WalDone {
    Persisted {
        token: Option<PersistToken>,
        after: Vec<Envelope>,
    },
    Compacted {
        slot: u64,
        data: Vec<u8>,
    },
}

pub(crate) fn wal_thread(
    mut wal: Wal,
    mut jobs: mpsc::Receiver<WalJob>,
    done: mpsc::UnboundedSender<WalDone>,
    lazy_flush: Option<Duration>,
    metrics: Arc<Shared>,
) {
    let mut last_flush = Instant::now();
    loop {
        let first = match lazy_flush {
            None => match jobs.blocking_recv() {
                Some(j) => j,
                None => return,
            },
            Some(period) => {
                // ack-before-persist: records sit in the user-space buffer and reach the disk
                // only now and then.
                let job = loop {
                    match jobs.try_recv() {
                        Ok(j) => break Some(j),
                        Err(mpsc::error::TryRecvError::Disconnected) => return,
                        Err(mpsc::error::TryRecvError::Empty) => {
                            if last_flush.elapsed() >= period && wal.buffered_bytes() > 0 {
                                break None;
                            }
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                };
                match job {
                    Some(j) => j,
                    None => {
                        if let Err(e) = wal.sync() {
                            fatal("WAL write failed", e);
                        }
                        last_flush = Instant::now();
                        continue;
                    }
                }
            }
        };
        let mut batch = vec![first];
        while batch.len() < 4096 {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let mut token = None;
        let mut after = Vec::new();
        let mut compacted = Vec::new();
        for job in batch {
            match job {
                WalJob::Append {
                    records,
                    token: t,
                    after: a,
                } => {
                    metrics
                        .metrics
                        .wal_records
                        .fetch_add(records.len() as u64, Relaxed);
                    for r in &records {
                        wal.append(r);
                    }
                    if t.is_some() {
                        token = t;
                    }
                    after.extend(a);
                }
                WalJob::Compact {
                    snapshot,
                    live,
                    slot_taken,
                } => {
                    if let Err(e) = wal.sync().and_then(|_| wal.compact(&snapshot, &live)) {
                        fatal("WAL compaction failed", e);
                    }
                    metrics.metrics.snapshots.fetch_add(1, Relaxed);
                    if let Some((slot, data)) = slot_taken {
                        compacted.push(WalDone::Compacted { slot, data });
                    }
                }
            }
        }
        let flush_now = lazy_flush
            .map(|p| last_flush.elapsed() >= p)
            .unwrap_or(true);
        if flush_now {
            let before = wal.appended_bytes;
            if let Err(e) = wal.sync() {
                fatal("WAL write failed", e);
            }
            last_flush = Instant::now();
            metrics.metrics.wal_fsyncs.store(wal.fsyncs, Relaxed);
            metrics
                .metrics
                .wal_bytes
                .fetch_add(wal.appended_bytes - before, Relaxed);
        }
        if (token.is_some() || !after.is_empty())
            && done.send(WalDone::Persisted { token, after }).is_err()
        {
            return;
        }
        for c in compacted {
            if done.send(c).is_err() {
                return;
            }
        }
    }
}
