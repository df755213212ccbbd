//! Memory that must not grow with a run's length (issue 10: a 10-minute run at full speed grew
//! to 6.9 GiB because the whole history was kept). Measured by counting live heap bytes with a
//! counting allocator, a count and not a time: the recorder streaming a long history to disk,
//! and the analysis's own passes over a large history file (the harness's checks and charts,
//! and the bank checker). Each test also measures the old way (events kept in memory, the
//! history read whole) and asserts that it exceeds the bound, so the measurement is shown to
//! tell the two apart.

use ordeal::checks;
use ordeal::record;
use ordeal::summary;
use ordeal_checker::{Event, EventType, Process, Value, Verdict};
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Counts live heap bytes and their peak for the whole test process.
struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static PEAK_BYTES: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let live = LIVE_BYTES.fetch_add(by, Ordering::Relaxed) + by;
    PEAK_BYTES.fetch_max(live, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The counters are process-wide: the tests here measure one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `f` and returns its result and how far live heap bytes rose above where they were.
fn peak_growth<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE_BYTES.load(Ordering::Relaxed);
    PEAK_BYTES.store(base, Ordering::Relaxed);
    let out = f();
    let peak = PEAK_BYTES.load(Ordering::Relaxed);
    (out, peak.saturating_sub(base))
}

const MIB: usize = 1 << 20;

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ordeal-bounded-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).expect("creating the test directory");
    dir
}

/// Events the recorder test records: as `Event`s in memory they take at least
/// `RECORDED_EVENTS * size_of::<Event>()` bytes (about 60 MB), far above the bound.
const RECORDED_EVENTS: usize = 400_000;
/// What the recorder may hold whatever the run's length: its queue (256 events here), one
/// batch, the file's buffer and the runtime's own.
const RECORDER_BOUND_BYTES: usize = 8 * MIB;

/// Records `RECORDED_EVENTS` from 8 tasks, to `path` or (with `None`) to memory.
fn record_many(path: Option<&Path>) -> record::Recorded {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let (recorder, writer) = record::start_with_queue(path, std::time::Instant::now(), 256)
            .expect("starting the recorder");
        let tasks: Vec<_> = (0..8u64)
            .map(|task| {
                let recorder = recorder.clone();
                tokio::spawn(async move {
                    for i in 0..(RECORDED_EVENTS / 8) as i64 {
                        let e = Event::new(
                            Process::Client(task),
                            if i % 2 == 0 {
                                EventType::Invoke
                            } else {
                                EventType::Ok
                            },
                            "write",
                            Value::Int(i),
                        )
                        .with_key(format!("k{}", i / 200));
                        recorder.record_async(e).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("a recording task panicked");
        }
        drop(recorder);
        writer
            .await
            .expect("the writer panicked")
            .expect("the writer failed")
    })
}

#[test]
fn the_recorder_holds_a_bounded_number_of_events_however_many_are_recorded() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = temp_dir("recorder");
    let path = dir.join("history.jsonl");
    let (recorded, growth) = peak_growth(|| record_many(Some(&path)));
    assert_eq!(recorded.events, RECORDED_EVENTS as u64);
    assert!(recorded.kept.is_empty());
    assert!(
        recorded.peak_events_held <= 256 + record::WRITER_BATCH_EVENTS,
        "held {} events at once",
        recorded.peak_events_held
    );
    let lines = std::fs::read_to_string(&path)
        .expect("reading the history")
        .lines()
        .count();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(lines, RECORDED_EVENTS, "every event is on disk");
    assert!(
        growth < RECORDER_BOUND_BYTES,
        "recording {RECORDED_EVENTS} events to a file raised the heap by {} MiB",
        growth / MIB
    );

    // The same measurement of a recorder that keeps its events (`--no-history-file`) goes far
    // past the bound: the bound is what streaming buys.
    let (kept, growth) = peak_growth(|| record_many(None));
    assert_eq!(kept.kept.len(), RECORDED_EVENTS);
    assert!(
        growth > RECORDER_BOUND_BYTES,
        "keeping {RECORDED_EVENTS} events raised the heap by only {} MiB",
        growth / MIB
    );
}

/// Operations in the synthetic history the analysis reads (two events each, plus faults).
const HISTORY_OPS: usize = 500_000;
/// Clients in it: at most this many operations are in flight at once.
const HISTORY_CLIENTS: u64 = 16;
/// What the analysis's passes may hold whatever the history's length: the charts' buckets and
/// samples, the operations in flight, a parse buffer.
const ANALYSIS_BOUND_BYTES: usize = 24 * MIB;

/// Writes a register-like history: `HISTORY_OPS` reads and writes from `HISTORY_CLIENTS`
/// clients over two synthetic hours, a kill every 5 minutes held for a minute, and some
/// failed and unknown outcomes. Returns how many completed ok, and how many during faults.
fn write_register_history(path: &Path) -> (u64, u64) {
    let file = std::fs::File::create(path).expect("creating the history");
    let mut out = std::io::BufWriter::new(file);
    let span_ns: i64 = 2 * 3600 * 1_000_000_000;
    let step_ns = span_ns / HISTORY_OPS as i64;
    let fault_every_ns: i64 = 300 * 1_000_000_000;
    let fault_for_ns: i64 = 60 * 1_000_000_000;
    let mut index = 0u64;
    let mut emit = |mut e: Event, out: &mut std::io::BufWriter<std::fs::File>| {
        e.index = index;
        index += 1;
        serde_json::to_writer(&mut *out, &e).expect("serialising");
        out.write_all(b"\n").expect("writing");
    };
    let (mut ok, mut ok_during) = (0u64, 0u64);
    let mut next_fault_ns = fault_every_ns;
    let mut fault_open_until: Option<i64> = None;
    for i in 0..HISTORY_OPS {
        let t = i as i64 * step_ns;
        if let Some(until) = fault_open_until.filter(|&u| t >= u) {
            emit(
                Event::new(Process::Nemesis, EventType::Info, "start", Value::Null)
                    .with_time(until),
                &mut out,
            );
            fault_open_until = None;
        }
        if t >= next_fault_ns {
            emit(
                Event::new(
                    Process::Nemesis,
                    EventType::Info,
                    "kill",
                    Value::List(vec![Value::Str("one".into())]),
                )
                .with_time(next_fault_ns),
                &mut out,
            );
            fault_open_until = Some(next_fault_ns + fault_for_ns);
            next_fault_ns += fault_every_ns;
        }
        let during = fault_open_until.is_some();
        let p = Process::Client(i as u64 % HISTORY_CLIENTS);
        let (f, value) = if i % 2 == 0 {
            ("read", Value::Null)
        } else {
            ("write", Value::Int(i as i64))
        };
        let key = format!("r{}", i / 200);
        let mut invoke = Event::new(p, EventType::Invoke, f, value.clone())
            .with_key(key.as_str())
            .with_time(t);
        invoke.node = Some(format!("n{}", i % 3 + 1));
        emit(invoke, &mut out);
        let kind = match i % 50 {
            7 => EventType::Fail,
            9 => EventType::Info,
            _ => EventType::Ok,
        };
        if kind == EventType::Ok {
            ok += 1;
            ok_during += during as u64;
        }
        let done = Event::new(p, kind, f, value)
            .with_key(key.as_str())
            .with_time(t + step_ns / 2 + (i as i64 % 7) * 1000);
        emit(done, &mut out);
    }
    out.flush().expect("flushing the history");
    (ok, ok_during)
}

#[test]
fn the_analysis_reads_a_large_history_in_bounded_memory() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = temp_dir("analysis");
    let path = dir.join("history.jsonl");
    let (ok, ok_during) = write_register_history(&path);

    let (summary, growth) =
        peak_growth(|| summary::summarise_file(&path).expect("summarising the history"));
    assert!(
        summary.pairing_error.is_none(),
        "{:?}",
        summary.pairing_error
    );
    let a = summary.availability;
    assert_eq!(a.ops, HISTORY_OPS as u64);
    assert_eq!((a.ok, a.ok_during_faults), (ok, ok_during));
    assert!(a.ops_during_faults > 0);
    assert_eq!(summary.faults.len(), 2 * 3600 / 300 - 1);
    assert!(
        summary.peak_ops_in_flight <= HISTORY_CLIENTS as usize,
        "{} operations held at once",
        summary.peak_ops_in_flight
    );
    assert!(
        summary.charts.points_held() <= 10_000 * 6 + 6 * 101,
        "{} chart points held",
        summary.charts.points_held()
    );
    assert!(
        growth < ANALYSIS_BOUND_BYTES,
        "summarising {HISTORY_OPS} operations raised the heap by {} MiB",
        growth / MIB
    );

    // The charts are drawn from the summary: bitmaps, not the history.
    let ((), growth) = peak_growth(|| {
        ordeal::plots::draw_all(&summary.charts, &summary.faults, &dir).expect("drawing")
    });
    assert!(
        growth < ANALYSIS_BOUND_BYTES,
        "drawing raised the heap by {} MiB",
        growth / MIB
    );
    for png in ["latency-raw.png", "latency-quantiles.png", "rate.png"] {
        let len = std::fs::metadata(dir.join(png)).map_or(0, |m| m.len());
        assert!(len > 1000, "{png}: {len} bytes");
    }

    // Reading the same file whole, as the analysis did before, goes far past the bound.
    let (history, growth) = peak_growth(|| {
        ordeal_checker::read::read_path(&path, ordeal_checker::read::Format::Jsonl)
            .expect("reading the history")
    });
    assert_eq!(history.len(), 2 * HISTORY_OPS + 2 * summary.faults.len());
    drop(history);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        growth > ANALYSIS_BOUND_BYTES,
        "reading the history whole raised the heap by only {} MiB",
        growth / MIB
    );
}

/// Reads of all accounts in a bank history.
const BANK_READS: usize = 150_000;
/// What the bank check may hold whatever the history's length: the checker's reader parses
/// 16,384 lines at a time while it hands on the previous batch (about 1 KB per read of five
/// accounts), and the check's own batch of `BANK_BATCH_EVENTS` reads.
const BANK_BOUND_BYTES: usize = 48 * MIB;

/// Writes a bank history of `reads` reads of all accounts from `clients` clients, each an
/// invoke and an ok; `account_value(read, account)` is what read `read` saw of `account`.
fn write_bank_history(
    path: &Path,
    reads: usize,
    clients: u64,
    accounts: usize,
    account_value: impl Fn(usize, usize) -> Value,
) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("creating"));
    for i in 0..reads {
        let p = Process::Client(i as u64 % clients);
        let ops: Vec<Value> = (0..accounts)
            .map(|a| {
                Value::List(vec![
                    Value::Str("r".into()),
                    Value::Str(format!("acct{a}")),
                    account_value(i, a),
                ])
            })
            .collect();
        for (n, (kind, value)) in [
            (EventType::Invoke, Value::Null),
            (EventType::Ok, Value::List(ops)),
        ]
        .into_iter()
        .enumerate()
        {
            let mut e = Event::new(p, kind, "txn", value).with_time((2 * i + n) as i64);
            e.index = (2 * i + n) as u64;
            serde_json::to_writer(&mut out, &e).expect("serialising");
            out.write_all(b"\n").expect("writing");
        }
    }
    out.flush().expect("flushing");
}

/// Checks the bank history at `path` (of `reads` reads) and asserts it is valid within
/// `BANK_BOUND_BYTES`; then reads it whole, as the bank check did before, and asserts that
/// goes past the bound, so the measurement tells the two apart. Removes `dir`.
fn assert_bank_check_bounded(
    dir: &Path,
    path: &Path,
    protocol: ordeal_workloads::Protocol,
    reads: usize,
    what: &str,
) {
    let (outcome, growth) =
        peak_growth(|| checks::check_bank(path, ordeal_checker::read::Format::Jsonl, protocol));
    assert_eq!(outcome.verdict, Verdict::Valid, "{}", outcome.summary);
    assert_eq!(outcome.details["reads_checked"], reads);
    assert!(
        growth < BANK_BOUND_BYTES,
        "checking {reads} {what} raised the heap by {} MiB",
        growth / MIB
    );
    let (history, growth) = peak_growth(|| {
        ordeal_checker::read::read_path(path, ordeal_checker::read::Format::Jsonl)
            .expect("reading the history")
    });
    assert_eq!(history.len(), 2 * reads);
    drop(history);
    let _ = std::fs::remove_dir_all(dir);
    assert!(
        growth > BANK_BOUND_BYTES,
        "reading the history of {reads} {what} whole raised the heap by only {} MiB",
        growth / MIB
    );
}

#[test]
fn the_bank_check_streams_a_large_history_in_bounded_memory() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = temp_dir("bank");
    let path = dir.join("history.jsonl");
    let protocol = ordeal_workloads::Protocol::OrdealHttp;
    let accounts = ordeal_workloads::bank::options(protocol).accounts;
    // Reads see whole transfers: +3 on one account, -3 on the next.
    write_bank_history(&path, BANK_READS, 8, accounts, |i, a| {
        match (a + i) % accounts {
            0 => Value::List(vec![Value::Int(3)]),
            1 => Value::List(vec![Value::Int(-3)]),
            _ => Value::Null,
        }
    });
    assert_bank_check_bounded(&dir, &path, protocol, BANK_READS, "bank reads");
}

/// Reads in a bank history whose account lists grow with the run, as paxos-kv's do (a read
/// returns every delta an account received): the last is `GROWING_READS` deltas long.
const GROWING_READS: usize = 3000;

#[test]
fn the_bank_check_stays_bounded_when_reads_grow_with_the_run() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = temp_dir("bank-growing");
    let path = dir.join("history.jsonl");
    let protocol = ordeal_workloads::Protocol::OrdealHttp;
    let accounts = ordeal_workloads::bank::options(protocol).accounts;
    // i transfers of 1 from acct1 to acct0 so far: the balances still sum up.
    write_bank_history(&path, GROWING_READS, 4, accounts, |i, a| match a {
        0 => Value::List(vec![Value::Int(1); i]),
        1 => Value::List(vec![Value::Int(-1); i]),
        _ => Value::Null,
    });
    assert_bank_check_bounded(&dir, &path, protocol, GROWING_READS, "growing bank reads");
}
