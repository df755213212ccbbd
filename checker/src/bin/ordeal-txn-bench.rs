//! Benchmark of the transactional checker: generated list-append histories of 100,000 and
//! 1,000,000 transactions (4 micro-ops each, 50 clients), checked for strict serializability,
//! and Elle's huge-scc history. Each case runs in a child process so that its peak RSS
//! (VmHWM) is its own.
//!
//! The `-jsonl` and `-edn` cases measure what a user of `ordeal check` sees: the same generated
//! history written to a file (our JSONL, or Elle's EDN), then read from disk straight into
//! the compact form and checked; peak RSS covers reading and checking. The files are written
//! once, by a child process of their own, under `$TMPDIR/ordeal-txn-bench/`.
//!
//! `load` is generating, converting or reading the history; `check` is the checker alone.
//!
//! The `rw-*` cases are generated rw-register histories (same shape), checked for strict
//! serializability or serializability: there the exact search over version orders runs, and
//! the line says how the verdict was reached. `EXACT_BUDGET=STEPS` overrides its step budget.
//!
//! Usage: ordeal-txn-bench                 all cases
//!        ordeal-txn-bench --case NAME     one case in this process (see CASES)
//!        ordeal-txn-bench --write NAME    write the history file a file case reads
//!        ordeal-txn-bench --file PATH [--workload W] [--consistency M]
//!                                         check one history file and print results.json

use ordeal_checker::read::{event_to_edn, read_path, shared_testdata_dir, Format};
use ordeal_checker::txn::{
    check, check_log, generate, inject, read_log, Consistency, GenOptions, Injection, TxnLog,
    TxnOptions, Workload,
};
use ordeal_checker::History;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

/// As in `ordeal`: the streaming reader allocates on parser threads and frees on another.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CASES: [&str; 13] = [
    "100k",
    "100k-history",
    "100k-anomalies",
    "100k-jsonl",
    "100k-edn",
    "1m",
    "1m-jsonl",
    "1m-edn",
    "huge-scc",
    "rw-10k-strict",
    "rw-10k-ser",
    "rw-100k-strict",
    "rw-100k-ser",
];

/// The history file a file case reads, and how many transactions it holds.
fn file_case(name: &str) -> Option<(PathBuf, usize)> {
    let (size, ext) = name.split_once('-')?;
    let txns = match size {
        "100k" => 100_000,
        "1m" => 1_000_000,
        _ => return None,
    };
    if ext != "jsonl" && ext != "edn" {
        return None;
    }
    let dir = std::env::temp_dir().join("ordeal-txn-bench");
    Some((dir.join(format!("list-append-{size}-seed42.{ext}")), txns))
}

/// Writes a file case's history (generated, then one event at a time).
fn write_file(name: &str) -> Result<(), String> {
    let (path, txns) = file_case(name).ok_or_else(|| format!("{name} is not a file case"))?;
    let dir = path.parent().ok_or("no parent directory")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let log = generate(&gen_opts(txns));
    let partial = path.with_extension("partial");
    let io = |e: std::io::Error| format!("{}: {e}", partial.display());
    let mut out = BufWriter::new(File::create(&partial).map_err(io)?);
    let edn = path.extension().is_some_and(|e| e == "edn");
    log.for_each_event(|e| {
        if edn {
            out.write_all(event_to_edn(&e).as_bytes())?;
        } else {
            serde_json::to_writer(&mut out, &e)?;
        }
        out.write_all(b"\n")
    })
    .map_err(io)?;
    out.flush().map_err(io)?;
    drop(out);
    // Renamed only when complete, so an interrupted write is never mistaken for a history.
    std::fs::rename(&partial, &path).map_err(io)?;
    Ok(())
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// CPU time of this (single-threaded) process so far, from the scheduler: unlike wall time it
/// does not grow when other processes share the cores.
fn cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map(|ns| ns / 1e9)
        .unwrap_or(f64::NAN)
}

fn gen_opts(txns: usize) -> GenOptions {
    GenOptions {
        workload: Workload::ListAppend,
        txns,
        clients: 50,
        active_keys: 10,
        min_txn_len: 4,
        max_txn_len: 4,
        max_writes_per_key: 32,
        read_fraction: 0.5,
        seed: 42,
        ..GenOptions::default()
    }
}

/// rw-register cases: `rw-SIZE-strict` or `rw-SIZE-ser` (the exact search over version orders
/// runs on these valid histories; it must find a witness fast).
fn rw_case(name: &str) -> Option<(usize, Consistency)> {
    let rest = name.strip_prefix("rw-")?;
    let (size, level) = rest.split_once('-')?;
    let txns = match size {
        "10k" => 10_000,
        "100k" => 100_000,
        _ => return None,
    };
    let consistency = match level {
        "strict" => Consistency::StrictSerializable,
        "ser" => Consistency::Serializable,
        _ => return None,
    };
    Some((txns, consistency))
}

fn opts(workload: Workload, consistency: Consistency) -> TxnOptions {
    TxnOptions {
        workload,
        consistency,
        time_budget: Duration::from_secs(10),
        exact_budget_steps: std::env::var("EXACT_BUDGET")
            .ok()
            .and_then(|b| b.parse().ok())
            .unwrap_or(ordeal_checker::txn::DEFAULT_EXACT_BUDGET_STEPS),
        ..TxnOptions::default()
    }
}

/// What a case checks: a compact log, or a history as `Value` trees.
enum Input {
    Log(TxnLog),
    History(History),
}

fn run_case(name: &str) -> Result<(), String> {
    let t0 = Instant::now();
    let input = match name {
        "100k" => Input::Log(generate(&gen_opts(100_000))),
        "1m" => Input::Log(generate(&gen_opts(1_000_000))),
        "100k-anomalies" => {
            // One of each planted anomaly, at random points.
            let mut log = generate(&gen_opts(100_000));
            for (i, which) in Injection::ALL.into_iter().enumerate() {
                inject(&mut log, Workload::ListAppend, which, i as u64);
            }
            Input::Log(log)
        }
        // The same history as Value trees (what `read_path` produces), checked from there.
        "100k-history" => Input::History(generate(&gen_opts(100_000)).to_history()),
        file if file_case(file).is_some() => {
            let (path, _) = file_case(file).ok_or("not a file case")?;
            Input::Log(read_log(&path, Format::Auto).map_err(|e| e.to_string())?)
        }
        rw if rw_case(rw).is_some() => {
            let (txns, _) = rw_case(rw).ok_or("not an rw case")?;
            Input::Log(generate(&GenOptions {
                workload: Workload::RwRegister,
                ..gen_opts(txns)
            }))
        }
        "huge-scc" => {
            let path = shared_testdata_dir().join("elle/huge-scc.edn.gz");
            Input::History(read_path(&path, Format::Auto).map_err(|e| e.to_string())?)
        }
        other => return Err(format!("unknown case {other:?}; cases: {CASES:?}")),
    };
    let setup = t0.elapsed();
    let t1 = Instant::now();
    let cpu_start = cpu_secs();
    let o = match rw_case(name) {
        Some((_, consistency)) => opts(Workload::RwRegister, consistency),
        None => opts(Workload::ListAppend, Consistency::StrictSerializable),
    };
    let result = match &input {
        Input::Log(log) => check_log(log, &o),
        Input::History(h) => check(h, &o),
    }
    .map_err(|e| e.to_string())?;
    let check_time = t1.elapsed();
    let cpu = cpu_secs() - cpu_start;
    println!(
        "{name:>14}: {:>8} txns  load {:>6.2} s  check {:>6.2} s (cpu {:>5.2} s)  total {:>6.2} s  \
         peak RSS {:>5.0} MB  edges {:>9}  verdict {} ({})  anomalies {:?}",
        result.stats.txns,
        setup.as_secs_f64(),
        check_time.as_secs_f64(),
        cpu,
        (setup + check_time).as_secs_f64(),
        peak_rss_mb(),
        result.stats.edges,
        result.verdict,
        result.decided_by.as_str(),
        result.anomaly_types
    );
    for n in result.notes.iter().filter(|n| n.contains("exact search")) {
        println!("{:>14}  {n}", "");
    }
    Ok(())
}

fn check_file(args: &[String]) -> Result<ExitCode, String> {
    let mut path = None;
    let mut workload = None;
    let mut consistency = Consistency::StrictSerializable;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--file" => path = Some(value()?.clone()),
            "--workload" => workload = Some(value()?.parse::<Workload>()?),
            "--consistency" => consistency = value()?.parse()?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let path = path.ok_or("--file PATH is required")?;
    let h = read_path(std::path::Path::new(&path), Format::Auto).map_err(|e| e.to_string())?;
    let workload = workload
        .or_else(|| Workload::detect(&h))
        .ok_or("cannot tell the workload; pass --workload list-append|rw-register")?;
    let r = check(&h, &opts(workload, consistency)).map_err(|e| e.to_string())?;
    println!(
        "{}",
        serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?
    );
    Ok(ExitCode::from(r.verdict.exit_code() as u8))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.first().map(String::as_str) {
        Some("--case") => match args.get(1) {
            Some(name) => run_case(name).map(|_| ExitCode::SUCCESS),
            None => Err("--case needs a name".to_string()),
        },
        Some("--file") => check_file(&args),
        Some("--write") => match args.get(1) {
            Some(name) => write_file(name).map(|_| ExitCode::SUCCESS),
            None => Err("--write needs a file case name".to_string()),
        },
        Some(other) => Err(format!("unknown argument {other:?}")),
        None => {
            let exe = match std::env::current_exe() {
                Ok(e) => e,
                Err(e) => return fail(format!("cannot find this executable: {e}")),
            };
            let mut status = ExitCode::SUCCESS;
            for case in CASES {
                if let Some((path, _)) = file_case(case) {
                    if !path.exists() {
                        eprintln!("writing {} ...", path.display());
                        match Command::new(&exe).args(["--write", case]).status() {
                            Ok(s) if s.success() => {}
                            Ok(s) => {
                                eprintln!("writing {case} failed: {s}");
                                status = ExitCode::from(255);
                                continue;
                            }
                            Err(e) => return fail(format!("cannot write {case}: {e}")),
                        }
                    }
                }
                match Command::new(&exe).args(["--case", case]).status() {
                    Ok(s) if s.success() => {}
                    Ok(s) => {
                        eprintln!("case {case} failed: {s}");
                        status = ExitCode::from(255);
                    }
                    Err(e) => return fail(format!("cannot run case {case}: {e}")),
                }
            }
            Ok(status)
        }
    };
    outcome.unwrap_or_else(fail)
}

fn fail(msg: String) -> ExitCode {
    eprintln!("ordeal-txn-bench: {msg}");
    ExitCode::from(255)
}
