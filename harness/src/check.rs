//! `ordeal check FILE --model M`: check any history file (our JSONL, Jepsen EDN, Jepsen text
//! logs, JSON arrays) and print the verdict with a counterexample. Exit codes as Jepsen's
//! `test-all`: 0 valid, 1 invalid, 2 unknown, 255 when the tool itself failed (bad input names
//! the file and line).

use clap::Args;
use ordeal_checker::linear::{self, CheckOptions, LinearReport, ModelKind, ModelOptions};
use ordeal_checker::read::{locate_event, Format};
use ordeal_checker::txn;
use ordeal_checker::HistoryError;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// History files (JSONL, Jepsen EDN, Jepsen text log, JSON array; `.gz` too), or
    /// directories to search for them (files ending .jsonl .edn .log .json .txt, plain or .gz;
    /// results.edn and test.edn are skipped). Several are checked in parallel, one line each,
    /// then a summary; the exit code is the worst: 255 (a file could not be checked) over 1
    /// (invalid) over 2 (unknown) over 0.
    #[arg(required = true, value_name = "FILE|DIR")]
    pub files: Vec<PathBuf>,
    /// Files checked at once when several are given (default: one per CPU).
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// The model: register, cas-register, kv, kv-unpartitioned, set, multi-register
    /// (linearizability), or list-append, rw-register (transactional isolation, as Elle checks
    /// it).
    #[arg(long, value_name = "MODEL")]
    pub model: String,
    /// For list-append and rw-register: read-committed, repeatable-read, snapshot-isolation,
    /// serializable or strict-serializable.
    #[arg(long, default_value = "strict-serializable", value_name = "MODEL")]
    pub consistency: String,
    /// Input format: auto, jsonl, edn, jepsen-log or json.
    #[arg(long, default_value = "auto", value_name = "FORMAT")]
    pub format: String,
    /// Time budget; past it the verdict is unknown, with what was established.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// How to read a failed cas: `dropped` (default: it did not happen) or `observed` (it also
    /// says the register differed from the expected value, as porcupine's etcd model does).
    #[arg(long, default_value = "dropped", value_name = "HOW")]
    pub failed_cas: String,
    /// For multi-register: the registers' initial values, an EDN or JSON map such as
    /// `{:x 0 :y 0}` (registers not named start nil).
    #[arg(long, value_name = "MAP")]
    pub initial: Option<String>,
    /// Memory budget of the search memo, in MiB; past it the verdict is unknown.
    #[arg(long, default_value_t = 1024, value_name = "MIB")]
    pub memo_limit_mib: usize,
    /// rw-register: assume every key is linearizable, so a write that completed before another
    /// began precedes it (Elle's linearizable-keys); cycles through such orders count against
    /// every model.
    #[arg(long)]
    pub linearizable_keys: bool,
    /// rw-register: assume every key is sequentially consistent, so each process's writes are
    /// in its order (Elle's sequential-keys).
    #[arg(long)]
    pub sequential_keys: bool,
    /// rw-register: work budget of the exact search over the version orders inference leaves
    /// open; past it the verdict is unknown ("valid by inference, exact search incomplete").
    #[arg(long, default_value_t = txn::DEFAULT_EXACT_BUDGET_STEPS, value_name = "STEPS")]
    pub exact_budget_steps: u64,
    /// Print the result as JSON (the same object results.json holds).
    #[arg(long)]
    pub json: bool,
    /// Also write a self-contained HTML page with the counterexample's timeline.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<f64>() {
        if secs >= 0.0 && secs.is_finite() {
            return Ok(Duration::from_secs_f64(secs));
        }
    }
    humantime::parse_duration(s).map_err(|e| format!("{s}: {e} (e.g. 60s, 2m, 500ms)"))
}

/// The checkers `--model` can name.
enum Checker {
    Linear(ModelKind, ModelOptions),
    /// Elle-style: list-append or rw-register, against a consistency model.
    Txn(txn::Workload, txn::Consistency),
}

fn checker(args: &CheckArgs) -> Result<Checker, String> {
    if let Ok(workload) = args.model.parse::<txn::Workload>() {
        let consistency: txn::Consistency = args
            .consistency
            .parse()
            .map_err(|e| format!("--consistency: {e}"))?;
        return Ok(Checker::Txn(workload, consistency));
    }
    let failed_cas_observed = match args.failed_cas.as_str() {
        "dropped" => false,
        "observed" => true,
        other => {
            return Err(format!(
                "--failed-cas {other}: expected 'dropped' or 'observed'"
            ))
        }
    };
    let kind: ModelKind = args.model.parse()?;
    if failed_cas_observed && kind != ModelKind::CasRegister {
        return Err("--failed-cas observed only applies to --model cas-register".into());
    }
    Ok(Checker::Linear(
        kind,
        ModelOptions {
            failed_cas_observed,
        },
    ))
}

/// Runs the check and returns the process exit code.
pub fn run(args: CheckArgs) -> i32 {
    if args.files.len() == 1 && !args.files[0].is_dir() {
        return match check_file(&args, &args.files[0]).and_then(|r| print_one(&args, &r)) {
            Ok(code) => code,
            Err(message) => {
                eprintln!("ordeal check: {message}");
                255
            }
        };
    }
    match run_many(&args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("ordeal check: {message}");
            255
        }
    }
}

/// What one file's check found.
enum Checked {
    Linear(LinearReport),
    Txn(txn::TxnResult),
}

struct FileResult {
    file: PathBuf,
    checked: Checked,
}

impl FileResult {
    fn verdict(&self) -> ordeal_checker::Verdict {
        match &self.checked {
            Checked::Linear(r) => r.verdict,
            Checked::Txn(r) => r.verdict,
        }
    }

    /// One line: the verdict and what it rests on.
    fn summary(&self) -> String {
        match &self.checked {
            Checked::Linear(r) => r.summary.clone(),
            Checked::Txn(r) => format!("{}: {}", r.verdict, crate::checks::txn_summary(r)),
        }
    }
}

/// Reads and checks one history file.
fn check_file(args: &CheckArgs, file: &Path) -> Result<FileResult, String> {
    let format: Format = args.format.parse()?;
    let (kind, model_options) = match checker(args)? {
        Checker::Linear(kind, model_options) => (kind, model_options),
        Checker::Txn(workload, consistency) => {
            // Straight into the compact form: a million transactions as `Value` trees would
            // take gigabytes.
            let log = txn::read_log(file, format).map_err(|e| e.to_string())?;
            let opts = txn::TxnOptions {
                workload,
                consistency,
                time_budget: args.timeout,
                linearizable_keys: args.linearizable_keys,
                sequential_keys: args.sequential_keys,
                exact_budget_steps: args.exact_budget_steps,
                ..txn::TxnOptions::default()
            };
            let result = txn::check_log(&log, &opts)
                .map_err(|e| locate_event(e, file, format).in_file(file).to_string())?;
            return Ok(FileResult {
                file: file.to_path_buf(),
                checked: Checked::Txn(result),
            });
        }
    };
    let options = CheckOptions {
        timeout: Some(args.timeout),
        memo_limit_bytes: args.memo_limit_mib.saturating_mul(1 << 20),
        ..CheckOptions::default()
    };
    let checked = match (&args.initial, kind) {
        (Some(initial), ModelKind::MultiRegister) => {
            let initial = ordeal_checker::edn::parse(initial)
                .or_else(|e| serde_json::from_str(initial).map_err(|_| e))
                .map_err(|e| format!("--initial: {}", e.message))?;
            let model =
                linear::MultiRegister::new(&initial).map_err(|e| format!("--initial: {e}"))?;
            // Streamed by partition: a big history is never held whole.
            linear::check_path(&model, file, format, &options)
        }
        (Some(_), _) => return Err("--initial only applies to --model multi-register".into()),
        (None, _) => linear::check_kind_path(kind, model_options, file, format, &options),
    };
    let report: LinearReport = checked.map_err(|e: HistoryError| e.in_file(file).to_string())?;
    Ok(FileResult {
        file: file.to_path_buf(),
        checked: Checked::Linear(report),
    })
}

/// Prints one file's result in full (with the counterexample) and returns the exit code.
fn print_one(args: &CheckArgs, r: &FileResult) -> Result<i32, String> {
    let report = match &r.checked {
        Checked::Txn(t) => return print_txn(args, &r.file, t),
        Checked::Linear(report) => report,
    };
    // Write errors on stdout (a closed pipe, as in `| head`) are not the tool failing.
    let mut out = std::io::stdout().lock();
    if args.json {
        let json = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
        let _ = writeln!(out, "{json}");
    } else {
        let _ = write!(out, "{}: {}", display_name(&r.file), report.to_text());
    }
    if let Some(path) = &args.html {
        let title = format!("{} — {}", display_name(&r.file), report.model);
        std::fs::write(path, report.to_html(&title))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if !args.json {
            let _ = writeln!(out, "HTML timeline written to {}", path.display());
        }
    }
    Ok(report.verdict.exit_code())
}

/// File names a directory walk takes as histories (plain or `.gz`); Jepsen's other files
/// (results.edn, test.fressian, ...) are left alone.
fn is_history_file(path: &Path) -> bool {
    let name = path
        .file_name()
        .map_or(String::new(), |n| n.to_string_lossy().into_owned());
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    if name.starts_with('.') || matches!(name, "results.edn" | "results.json" | "test.edn") {
        return false;
    }
    let ext = name.rsplit('.').next().unwrap_or("");
    name.contains('.') && matches!(ext, "jsonl" | "edn" | "log" | "json" | "txt")
}

/// Bound on directory depth and files found, so a mistaken `ordeal check /` ends.
const MAX_WALK_DEPTH: usize = 16;
const MAX_FILES: usize = 1_000_000;

fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<(), String> {
    if depth > MAX_WALK_DEPTH {
        return Err(format!(
            "{}: nested deeper than {MAX_WALK_DEPTH} directories",
            dir.display()
        ));
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        if out.len() >= MAX_FILES {
            return Err(format!(
                "more than {MAX_FILES} history files under {}",
                dir.display()
            ));
        }
        if path.is_dir() {
            walk(&path, depth + 1, out)?;
        } else if is_history_file(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// Exit code rank, worst first: the tool failed (255), invalid (1), unknown (2), valid (0).
/// A file that could not be checked says least about the others, so it dominates; then a
/// proven violation, then an undecided file.
fn severity(code: i32) -> u8 {
    match code {
        255 => 3,
        1 => 2,
        2 => 1,
        _ => 0,
    }
}

/// Checks several files and directories in parallel: one line per file (in the order given,
/// directories sorted), then a summary; the exit code is the worst file's.
fn run_many(args: &CheckArgs) -> Result<i32, String> {
    if args.html.is_some() {
        return Err("--html takes one history file".into());
    }
    // Errors in the options are the same for every file: report them once.
    args.format.parse::<Format>()?;
    checker(args)?;
    let mut files = Vec::new();
    for f in &args.files {
        if f.is_dir() {
            walk(f, 0, &mut files)?;
        } else {
            files.push(f.clone());
        }
    }
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, files.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<Result<FileResult, String>>>> =
        files.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(file) = files.get(i) else { break };
                let r = check_file(args, file);
                *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
            });
        }
    });
    let mut out = std::io::stdout().lock();
    let (mut valid, mut invalid, mut unknown, mut failed) = (0, 0, 0, 0);
    let mut worst = 0;
    let mut json_rows = Vec::new();
    for (file, slot) in files.iter().zip(results) {
        let result = slot
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or_else(|| Err("not checked".into()));
        let (code, line) = match &result {
            Ok(r) => (r.verdict().exit_code(), r.summary()),
            Err(e) => (255, format!("error: {e}")),
        };
        match code {
            0 => valid += 1,
            1 => invalid += 1,
            2 => unknown += 1,
            _ => failed += 1,
        }
        if severity(code) > severity(worst) {
            worst = code;
        }
        if args.json {
            json_rows.push(serde_json::json!({
                "file": display_name(file),
                "exit_code": code,
                "summary": line,
            }));
        } else {
            let _ = writeln!(out, "{}: {line}", display_name(file));
        }
    }
    let summary = format!(
        "{} files: {valid} valid, {invalid} invalid, {unknown} unknown, {failed} not checked \
         (errors)",
        files.len()
    );
    if args.json {
        let json =
            serde_json::json!({ "files": json_rows, "summary": summary, "exit_code": worst });
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?
        );
    } else {
        let _ = writeln!(out, "{summary}");
    }
    Ok(worst)
}

fn print_txn(args: &CheckArgs, file: &Path, r: &txn::TxnResult) -> Result<i32, String> {
    let mut out = std::io::stdout().lock();
    if args.json {
        let json = serde_json::to_string_pretty(r).map_err(|e| e.to_string())?;
        let _ = writeln!(out, "{json}");
    } else {
        let _ = writeln!(
            out,
            "{}: {}: {}",
            display_name(file),
            r.verdict,
            crate::checks::txn_summary(r)
        );
        for a in &r.anomalies {
            let _ = writeln!(out, "\n{}:\n{}", a.kind, a.explanation);
        }
    }
    if let Some(path) = &args.html {
        std::fs::write(path, crate::checks::txn_html(r))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if !args.json {
            let _ = writeln!(out, "HTML written to {}", path.display());
        }
    }
    Ok(r.verdict.exit_code())
}

fn display_name(path: &Path) -> String {
    path.display().to_string()
}
