//! `make bench`: times the linearizability checker on porcupine's test data and on a generated
//! history, and prints a table (file, ops, verdict, median ms of 5 runs, peak RSS).
//!
//! Usage: ordeal-bench [TESTDATA_DIR] [--quick]
//!        ordeal-bench --write-big OPS KEYS FILE     (a generated cas-register history, JSONL)
//!        ordeal-bench --check-big memory|stream FILE (one check; prints time and peak RSS)

use ordeal_checker::linear::generate::{
    corrupt_read, generate, generate_into, GenOptions, Workload,
};
use ordeal_checker::linear::{check_kind, check_kind_path, CheckOptions, ModelKind, ModelOptions};
use ordeal_checker::read::{read_path, shared_testdata_dir, Format};
use ordeal_checker::{History, Verdict};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Peak resident set size so far, in MiB (VmHWM).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// CPU time used by all threads of this process so far (from /proc/self/task/*/schedstat), so
/// that a busy machine does not distort the comparison as much as wall-clock time.
fn cpu_time() -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path().join("schedstat");
        let text = std::fs::read_to_string(path).ok()?;
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

/// Resets the peak RSS counter, so each row reports its own peak.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

struct Row {
    name: String,
    ops: usize,
    verdict: String,
    runs: Vec<Duration>,
    cpu: Vec<Duration>,
    peak_mib: Option<f64>,
    note: String,
}

fn median(runs: &[Duration]) -> Duration {
    let mut v = runs.to_vec();
    v.sort();
    v[v.len() / 2]
}

fn measure(name: &str, runs: usize, note: &str, mut f: impl FnMut() -> (usize, Verdict)) -> Row {
    reset_peak_rss();
    let mut times = Vec::new();
    let mut cpu = Vec::new();
    let mut ops = 0;
    let mut verdict = Verdict::Valid;
    for _ in 0..runs {
        let start = Instant::now();
        let cpu_start = cpu_time();
        let (n, v) = f();
        times.push(start.elapsed());
        if let (Some(a), Some(b)) = (cpu_start, cpu_time()) {
            cpu.push(b.saturating_sub(a));
        }
        ops = n;
        verdict = v;
        // A run that took long (e.g. up to its budget) is not repeated.
        if start.elapsed() > Duration::from_secs(10) {
            break;
        }
    }
    let row = Row {
        name: name.to_string(),
        ops,
        verdict: if name.contains("(all") {
            "mixed".to_string()
        } else {
            verdict.to_string()
        },
        runs: times,
        cpu,
        peak_mib: peak_rss_mib(),
        note: note.to_string(),
    };
    print_row(&row);
    row
}

fn print_header() {
    println!(
        "{:<44} {:>9} {:>8} {:>11} {:>8} {:>5} {:>9}  note",
        "history", "ops", "verdict", "median ms", "cpu ms", "runs", "peak MiB"
    );
    println!("{}", "-".repeat(110));
}

fn print_row(r: &Row) {
    println!(
        "{:<44} {:>9} {:>8} {:>11.1} {:>8.1} {:>5} {:>9}  {}",
        r.name,
        r.ops,
        r.verdict,
        median(&r.runs).as_secs_f64() * 1000.0,
        if r.cpu.is_empty() {
            f64::NAN
        } else {
            median(&r.cpu).as_secs_f64() * 1000.0
        },
        r.runs.len(),
        r.peak_mib.map_or("?".into(), |m| format!("{m:.0}")),
        r.note
    );
}

fn check(kind: ModelKind, history: &History, timeout: Duration) -> (usize, Verdict) {
    let options = CheckOptions {
        timeout: Some(timeout),
        ..CheckOptions::default()
    };
    let report = check_kind(kind, ModelOptions::default(), history, &options)
        .unwrap_or_else(|e| panic!("{e}"));
    (report.operations, report.verdict)
}

fn read(path: &Path) -> History {
    read_path(path, Format::Auto).unwrap_or_else(|e| panic!("{e}"))
}

/// The big generated histories: cas-register over 1,000 keys from 64 clients, 1% info.
fn big_options(ops: usize, keys: usize) -> GenOptions {
    GenOptions {
        workload: Workload::CasRegister,
        ops,
        keys,
        clients: 64,
        info_rate: 0.01,
        seed: 7,
    }
}

/// Writes a generated history to `path` as JSONL without holding it.
fn write_big(ops: usize, keys: usize, path: &Path) {
    use std::io::Write;
    let file = std::fs::File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    generate_into(&big_options(ops, keys), |e| {
        serde_json::to_writer(&mut out, &e).expect("write the history");
        out.write_all(b"\n").expect("write the history");
    });
    out.flush().expect("write the history");
}

/// One check of a file, in memory (read the whole history, then check) or streaming; prints
/// `RESULT ops verdict wall_ms cpu_ms peak_mib` for the parent to parse.
fn check_big(how: &str, path: &Path) {
    let options = CheckOptions {
        timeout: Some(Duration::from_secs(600)),
        ..CheckOptions::default()
    };
    let start = Instant::now();
    let cpu_start = cpu_time();
    let report = match how {
        "memory" => check_kind(
            ModelKind::CasRegister,
            ModelOptions::default(),
            &read(path),
            &options,
        ),
        "stream" => check_kind_path(
            ModelKind::CasRegister,
            ModelOptions::default(),
            path,
            Format::Auto,
            &options,
        ),
        other => panic!("--check-big {other}: expected memory or stream"),
    }
    .unwrap_or_else(|e| panic!("{e}"));
    let wall = start.elapsed();
    let cpu = match (cpu_start, cpu_time()) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => Duration::ZERO,
    };
    println!(
        "RESULT {} {} {:.1} {:.1} {:.0}",
        report.operations,
        report.verdict,
        wall.as_secs_f64() * 1000.0,
        cpu.as_secs_f64() * 1000.0,
        peak_rss_mib().unwrap_or(f64::NAN)
    );
}

/// Runs `check_big` in a child process, so that each row's peak RSS is its own.
fn big_row(how: &str, path: &Path, name: &str, note: &str) {
    let out = std::process::Command::new(std::env::current_exe().expect("own path"))
        .args(["--check-big", how])
        .arg(path)
        .output()
        .expect("run the check in a child process");
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(fields) = text
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
    else {
        println!(
            "{name:<44} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return;
    };
    let ms = |s: &str| Duration::from_secs_f64(s.parse::<f64>().unwrap_or(f64::NAN) / 1000.0);
    print_row(&Row {
        name: name.to_string(),
        ops: fields[0].parse().unwrap_or(0),
        verdict: fields[1].to_string(),
        runs: vec![ms(fields[2])],
        cpu: vec![ms(fields[3])],
        peak_mib: fields[4].parse().ok(),
        note: note.to_string(),
    });
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match argv.first().map(String::as_str) {
        Some("--write-big") if argv.len() == 4 => {
            let n = |s: &str| s.parse::<usize>().unwrap_or_else(|e| panic!("{s}: {e}"));
            write_big(n(&argv[1]), n(&argv[2]), Path::new(&argv[3]));
            return;
        }
        Some("--check-big") if argv.len() == 3 => {
            check_big(&argv[1], Path::new(&argv[2]));
            return;
        }
        _ => {}
    }
    let mut args = std::env::args().skip(1);
    let mut dir: Option<PathBuf> = None;
    let mut quick = false;
    for a in args.by_ref() {
        if a == "--quick" {
            quick = true;
        } else {
            dir = Some(PathBuf::from(a));
        }
    }
    let dir = dir.unwrap_or_else(shared_testdata_dir);
    // ORDEAL_BENCH_ONLY=etcd|kv|kv-one-key|cas-info|generated|big runs one group.
    let only = std::env::var("ORDEAL_BENCH_ONLY").unwrap_or_default();
    let want = |group: &str| only.is_empty() || only == group;
    let timeout = Duration::from_secs(60);
    let porcupine = dir.join("porcupine");
    let runs = 5;
    println!(
        "ordeal-bench: linearizability checker, {} threads, median of {runs} runs",
        rayon::current_num_threads()
    );
    print_header();

    if want("etcd") {
        // All etcd logs, checked one after the other, as porcupine's test suite does.
        let mut etcd: Vec<(String, History)> = std::fs::read_dir(porcupine.join("jepsen"))
            .unwrap_or_else(|e| panic!("{}: {e}", porcupine.display()))
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .map(|p| {
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    read(&p),
                )
            })
            .collect();
        etcd.sort_by(|a, b| a.0.cmp(&b.0));
        measure(
            &format!("jepsen/etcd_*.log (all {})", etcd.len()),
            runs,
            "cas-register; porcupine ~900 ms; target <= 150",
            || {
                let mut ops = 0;
                let mut worst = Verdict::Valid;
                for (_, h) in &etcd {
                    let (n, _v) = check(ModelKind::CasRegister, h, timeout);
                    ops += n;
                    worst = Verdict::Valid; // mixed verdicts: report the count below instead
                }
                (ops, worst)
            },
        );
        let invalid = etcd
            .iter()
            .filter(|(_, h)| check(ModelKind::CasRegister, h, timeout).1 == Verdict::Invalid)
            .count();
        println!(
            "  ({invalid} of {} etcd logs invalid, {} valid)",
            etcd.len(),
            etcd.len() - invalid
        );
        measure(
            "jepsen/etcd_*.log (all, read + check)",
            runs,
            "including parsing",
            || {
                let mut ops = 0;
                for (name, _) in &etcd {
                    let h = read(&porcupine.join("jepsen").join(name));
                    ops += check(ModelKind::CasRegister, &h, timeout).0;
                }
                (ops, Verdict::Valid)
            },
        );
        let mut slowest: Vec<(Duration, &str)> = etcd
            .iter()
            .map(|(name, h)| {
                let start = Instant::now();
                check(ModelKind::CasRegister, h, timeout);
                (start.elapsed(), name.as_str())
            })
            .collect();
        slowest.sort_by(|a, b| b.cmp(a));
        let mut singles: Vec<&str> = vec!["etcd_002.log"];
        singles.extend(
            slowest
                .iter()
                .take(3)
                .map(|s| s.1)
                .filter(|n| *n != "etcd_002.log"),
        );
        for name in singles {
            let h = &etcd.iter().find(|(n, _)| n == name).expect("listed").1;
            let note = if name == "etcd_002.log" {
                "porcupine ~300 ms"
            } else {
                "one of the slowest"
            };
            measure(&format!("jepsen/{name}"), runs, note, || {
                check(ModelKind::CasRegister, h, timeout)
            });
        }
    }
    if want("kv") {
        for (file, kind, note) in [
            ("c01-ok.txt", ModelKind::Kv, ""),
            ("c01-bad.txt", ModelKind::Kv, ""),
            ("c10-ok.txt", ModelKind::Kv, ""),
            ("c10-bad.txt", ModelKind::Kv, ""),
            (
                "c50-ok.txt",
                ModelKind::Kv,
                "porcupine ~300 ms; target <= 50",
            ),
            (
                "c50-bad.txt",
                ModelKind::Kv,
                "porcupine ~300 ms; target <= 50",
            ),
            (
                "c10-ok.txt",
                ModelKind::KvUnpartitioned,
                "porcupine ~4.1 s; target <= 400 ms",
            ),
            (
                "c10-bad.txt",
                ModelKind::KvUnpartitioned,
                "porcupine ~4.1 s; target <= 400 ms",
            ),
            (
                "c50-ok.txt",
                ModelKind::KvUnpartitioned,
                "porcupine: none in 120 s; target a verdict <= 60 s",
            ),
            (
                "c50-bad.txt",
                ModelKind::KvUnpartitioned,
                "porcupine: none in 120 s; target a verdict <= 60 s",
            ),
        ] {
            let h = read(&porcupine.join("kv").join(file));
            measure(
                &format!("kv/{file} ({})", kind.as_str()),
                runs,
                note,
                || check(kind, &h, timeout),
            );
        }
    }
    if want("kv-one-key") {
        // The fuzz shape that once made kv-unpartitioned re-explore its search at every dead
        // end (10-1000x slower than kv): one key, 10 clients, mostly puts and appends, half of
        // them unknown. Both models must take about the same time.
        for (corrupt, seed) in [(false, 16), (true, 9)] {
            let mut h = generate(&GenOptions {
                workload: Workload::KvWrites,
                ops: 400,
                keys: 1,
                clients: 10,
                info_rate: 0.5,
                seed,
            });
            if corrupt {
                corrupt_read(&mut h, seed as usize);
            }
            for kind in [ModelKind::Kv, ModelKind::KvUnpartitioned] {
                measure(
                    &format!(
                        "kv-writes 1 key, 50% info{} ({})",
                        if corrupt { ", bad" } else { "" },
                        kind.as_str()
                    ),
                    runs,
                    "kv-unpartitioned within 2x of kv",
                    || check(kind, &h, timeout),
                );
            }
        }
    }
    if want("cas-info") {
        // Issue 11's pathological case: one register, two clients, 29% unknown outcomes,
        // failed cas observed. Its unknown cas ops were once placed as no-ops in every subset
        // (unknown after 60 s).
        let h = generate(&GenOptions {
            workload: Workload::CasRegister,
            ops: 93,
            keys: 1,
            clients: 2,
            info_rate: 0.29,
            seed: 3543358975698587692,
        });
        measure(
            "cas-register 93 ops, 29% info, failed cas observed",
            runs,
            "was unknown after 60 s",
            || {
                let options = CheckOptions {
                    timeout: Some(timeout),
                    ..CheckOptions::default()
                };
                let observed = ModelOptions {
                    failed_cas_observed: true,
                };
                let r = check_kind(ModelKind::CasRegister, observed, &h, &options)
                    .unwrap_or_else(|e| panic!("{e}"));
                (r.operations, r.verdict)
            },
        );
    }
    if want("generated") {
        let (ops, keys, clients) = if quick {
            (100_000, 100, 64)
        } else {
            (1_000_000, 1_000, 64)
        };
        let gen = GenOptions {
            workload: Workload::CasRegister,
            ops,
            keys,
            clients,
            info_rate: 0.01,
            seed: 7,
        };
        let start = Instant::now();
        let history = generate(&gen);
        println!(
            "  (generated {ops} cas-register ops over {keys} keys from {clients} clients, 1% info, in {:.0} ms)",
            start.elapsed().as_secs_f64() * 1000.0
        );
        measure(
            &format!("generated {}k ops, {keys} keys", ops / 1000),
            runs,
            "cas-register; target <= 5000 ms, <= 2048 MiB",
            || check(ModelKind::CasRegister, &history, timeout),
        );
    }
    if want("big") && !quick {
        // Big histories from a file: the whole history in memory versus streamed by
        // partition (`check_path`), each in a child process of its own. 10M ops in memory
        // takes ~8 GiB, so it runs only with ORDEAL_BENCH_BIG_MEMORY=1.
        let dir = std::env::temp_dir().join(format!("ordeal-bench-big-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let all_memory = std::env::var("ORDEAL_BENCH_BIG_MEMORY").is_ok_and(|v| v == "1");
        for ops in [1_000_000, 10_000_000] {
            let path = dir.join(format!("big-{ops}.jsonl"));
            let start = Instant::now();
            write_big(ops, 1_000, &path);
            let mib = std::fs::metadata(&path).map_or(0, |m| m.len() >> 20);
            println!(
                "  (wrote {}M cas-register ops over 1000 keys, {mib} MiB of JSONL, in {:.1} s)",
                ops / 1_000_000,
                start.elapsed().as_secs_f64()
            );
            let label = format!("file {}M ops, 1000 keys", ops / 1_000_000);
            big_row(
                "stream",
                &path,
                &format!("{label}, streamed"),
                "read + check; target: 10M within 2048 MiB",
            );
            if ops <= 1_000_000 || all_memory {
                big_row(
                    "memory",
                    &path,
                    &format!("{label}, in memory"),
                    "read_path + check",
                );
            }
            let _ = std::fs::remove_file(&path);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
