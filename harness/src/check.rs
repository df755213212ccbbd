//! `ordeal check FILE --model M`: check any history file (our JSONL, Jepsen EDN, Jepsen text
//! logs, JSON arrays) and print the verdict with a counterexample. Exit codes as Jepsen's
//! `test-all`: 0 valid, 1 invalid, 2 unknown, 255 when the tool itself failed (bad input names
//! the file and line).

use clap::Args;
use ordeal_checker::linear::{self, CheckOptions, LinearReport, ModelKind, ModelOptions};
use ordeal_checker::read::{locate_event, read_path, Format};
use ordeal_checker::txn;
use ordeal_checker::HistoryError;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The history file (JSONL, Jepsen EDN, Jepsen text log, JSON array; `.gz` too).
    pub file: PathBuf,
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
    match run_inner(&args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("ordeal check: {message}");
            255
        }
    }
}

fn run_inner(args: &CheckArgs) -> Result<i32, String> {
    let format: Format = args.format.parse()?;
    let (kind, model_options) = match checker(args)? {
        Checker::Linear(kind, model_options) => (kind, model_options),
        Checker::Txn(workload, consistency) => {
            // Straight into the compact form: a million transactions as `Value` trees would
            // take gigabytes.
            let log = txn::read_log(&args.file, format).map_err(|e| e.to_string())?;
            let opts = txn::TxnOptions {
                workload,
                consistency,
                time_budget: args.timeout,
                ..txn::TxnOptions::default()
            };
            let result = txn::check_log(&log, &opts).map_err(|e| {
                locate_event(e, &args.file, format)
                    .in_file(&args.file)
                    .to_string()
            })?;
            return print_txn(args, &result);
        }
    };
    let history = read_path(&args.file, format).map_err(|e| e.to_string())?;
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
            linear::check(&model, &history, &options)
        }
        (Some(_), _) => return Err("--initial only applies to --model multi-register".into()),
        (None, _) => linear::check_kind(kind, model_options, &history, &options),
    };
    let report: LinearReport =
        checked.map_err(|e: HistoryError| e.in_file(&args.file).to_string())?;
    // Write errors on stdout (a closed pipe, as in `| head`) are not the tool failing.
    let mut out = std::io::stdout().lock();
    if args.json {
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        let _ = writeln!(out, "{json}");
    } else {
        let _ = write!(out, "{}: {}", display_name(&args.file), report.to_text());
    }
    if let Some(path) = &args.html {
        let title = format!("{} — {}", display_name(&args.file), report.model);
        std::fs::write(path, report.to_html(&title))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if !args.json {
            let _ = writeln!(out, "HTML timeline written to {}", path.display());
        }
    }
    Ok(report.verdict.exit_code())
}

fn print_txn(args: &CheckArgs, r: &txn::TxnResult) -> Result<i32, String> {
    let mut out = std::io::stdout().lock();
    if args.json {
        let json = serde_json::to_string_pretty(r).map_err(|e| e.to_string())?;
        let _ = writeln!(out, "{json}");
    } else {
        let _ = writeln!(
            out,
            "{}: {}: {}",
            display_name(&args.file),
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
