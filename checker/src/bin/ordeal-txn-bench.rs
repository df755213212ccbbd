//! Benchmark of the transactional checker: generated list-append histories of 100,000 and
//! 1,000,000 transactions (4 micro-ops each, 50 clients), checked for strict serializability,
//! and Elle's huge-scc history. Each case runs in a child process so that its peak RSS
//! (VmHWM) is its own.
//!
//! Usage: ordeal-txn-bench                 all cases
//!        ordeal-txn-bench --case NAME     one case in this process (see CASES)
//!        ordeal-txn-bench --file PATH [--workload W] [--consistency M]
//!                                         check one history file and print results.json

use ordeal_checker::read::{read_path, shared_testdata_dir, Format};
use ordeal_checker::txn::{
    check, check_log, generate, inject, Consistency, GenOptions, Injection, TxnOptions, Workload,
};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

const CASES: [&str; 5] = ["100k", "100k-history", "100k-anomalies", "1m", "huge-scc"];

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

fn opts(workload: Workload, consistency: Consistency) -> TxnOptions {
    TxnOptions {
        workload,
        consistency,
        time_budget: Duration::from_secs(10),
        ..TxnOptions::default()
    }
}

fn run_case(name: &str) -> Result<(), String> {
    let strict = Consistency::StrictSerializable;
    let cpu_start: f64;
    let (setup, result, check_time) = match name {
        "100k" | "1m" => {
            let n = if name == "100k" { 100_000 } else { 1_000_000 };
            let t0 = Instant::now();
            let log = generate(&gen_opts(n));
            let setup = t0.elapsed();
            let t1 = Instant::now();
            cpu_start = cpu_secs();
            let r =
                check_log(&log, &opts(Workload::ListAppend, strict)).map_err(|e| e.to_string())?;
            (setup, r, t1.elapsed())
        }
        "100k-anomalies" => {
            // One of each planted anomaly, at random points.
            let t0 = Instant::now();
            let mut log = generate(&gen_opts(100_000));
            for (i, which) in Injection::ALL.into_iter().enumerate() {
                inject(&mut log, Workload::ListAppend, which, i as u64);
            }
            let setup = t0.elapsed();
            let t1 = Instant::now();
            cpu_start = cpu_secs();
            let r =
                check_log(&log, &opts(Workload::ListAppend, strict)).map_err(|e| e.to_string())?;
            (setup, r, t1.elapsed())
        }
        "100k-history" => {
            // The same history as Value trees (what a reader produces), checked from there.
            let t0 = Instant::now();
            let h = generate(&gen_opts(100_000)).to_history();
            let setup = t0.elapsed();
            let t1 = Instant::now();
            cpu_start = cpu_secs();
            let r = check(&h, &opts(Workload::ListAppend, strict)).map_err(|e| e.to_string())?;
            (setup, r, t1.elapsed())
        }
        "huge-scc" => {
            let path = shared_testdata_dir().join("elle/huge-scc.edn.gz");
            let t0 = Instant::now();
            let h = read_path(&path, Format::Auto).map_err(|e| e.to_string())?;
            let setup = t0.elapsed();
            let t1 = Instant::now();
            cpu_start = cpu_secs();
            let r = check(&h, &opts(Workload::ListAppend, strict)).map_err(|e| e.to_string())?;
            (setup, r, t1.elapsed())
        }
        other => return Err(format!("unknown case {other:?}; cases: {CASES:?}")),
    };
    let cpu = cpu_secs() - cpu_start;
    println!(
        "{name:>13}: {:>8} txns  setup {:>6.2} s  check {:>6.2} s (cpu {:>5.2} s)  peak RSS \
         {:>5.0} MB  edges {:>9}  verdict {}  anomalies {:?}",
        result.stats.txns,
        setup.as_secs_f64(),
        check_time.as_secs_f64(),
        cpu,
        peak_rss_mb(),
        result.stats.edges,
        result.verdict,
        result.anomaly_types
    );
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
        Some(other) => Err(format!("unknown argument {other:?}")),
        None => {
            let exe = match std::env::current_exe() {
                Ok(e) => e,
                Err(e) => return fail(format!("cannot find this executable: {e}")),
            };
            let mut status = ExitCode::SUCCESS;
            for case in CASES {
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
