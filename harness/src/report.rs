//! report.html: one self-contained page (charts inlined as base64 PNG, no network), and
//! `ordeal report DIR`, which re-checks a stored run and re-renders everything.

use crate::analyse::analyse;
use crate::checks::{CheckOutcome, Counts};
use crate::plan::RunConfig;
use anyhow::{Context, Result};
use base64::Engine;
use clap::Args;
use ordeal_checker::Verdict;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The tallest a counterexample frame grows before it scrolls.
const COUNTEREXAMPLE_MAX_HEIGHT_PX: u32 = 1600;

fn verdict_colour(v: Verdict) -> &'static str {
    match v {
        Verdict::Valid => "#2e7d32",
        Verdict::Invalid => "#c62828",
        Verdict::Unknown => "#ef6c00",
    }
}

fn embed_png(run_dir: &Path, name: &str, alt: &str) -> String {
    match std::fs::read(run_dir.join(name)) {
        Ok(bytes) => format!(
            "<figure><img alt=\"{}\" src=\"data:image/png;base64,{}\"><figcaption><a href=\"{name}\">{name}</a></figcaption></figure>",
            esc(alt),
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ),
        Err(_) => format!("<p class=\"missing\">{name} was not drawn (see ordeal.log)</p>"),
    }
}

/// How to inject this run's faults again, when it had any (see `faults.json`).
/// The target: its name, version, binary, protocol and planted bug (older runs: the binary).
fn target_cell(config: &RunConfig) -> String {
    let bug = config
        .args
        .bug
        .as_ref()
        .map(|b| format!(" with <code>--bug {}</code>", esc(b)))
        .unwrap_or_default();
    match &config.target {
        Some(t) => format!(
            "{} ({}){}<br><small><code>{}</code>{}, protocol {}, reads {}</small>",
            esc(&t.name),
            esc(&t.version),
            bug,
            esc(&t.binary.display().to_string()),
            t.file
                .as_ref()
                .map(|f| format!(
                    ", target file <code>{}</code>",
                    esc(&f.display().to_string())
                ))
                .unwrap_or_default(),
            t.protocol,
            esc(config.args.read_consistency.as_str()),
        ),
        None => format!(
            "<code>{}</code>{bug}",
            esc(&config.store_bin.display().to_string())
        ),
    }
}

fn replay_hint(run_dir: &Path) -> String {
    let path = run_dir.join("faults.json");
    let any = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str::<Vec<serde_json::Value>>(&t).ok())
        .is_some_and(|faults| !faults.is_empty());
    if !any {
        return String::new();
    }
    format!(
        " To inject exactly this run's faults again, add <code>--replay-faults {}</code>.",
        esc(&path.display().to_string())
    )
}

/// How much of a check's summary the banner shows (the Checks table has all of it).
const WHY_CHARS: usize = 160;

/// Under the verdict, the checks that made it what it is (nothing for a valid run).
fn why_line(verdict: Verdict, checks: &[CheckOutcome]) -> String {
    if verdict == Verdict::Valid {
        return String::new();
    }
    let deciding: Vec<String> = checks
        .iter()
        .filter(|c| c.verdict == verdict)
        .map(|c| {
            // Summaries often repeat the verdict or the check's name; the banner has both.
            let summary = c.summary.trim_start_matches(&format!("{verdict}: "));
            let summary = summary.trim_start_matches(&format!("{} ", c.name));
            let mut short: String = summary.chars().take(WHY_CHARS).collect();
            if summary.chars().count() > WHY_CHARS {
                short.push('…');
            }
            format!("<b>{}</b>: {}", esc(&c.name), esc(&short))
        })
        .collect();
    format!("<span class=\"why\">{}</span>", deciding.join("<br>"))
}

/// "interrupted after N s of its M s main phase" for a run stopped by Ctrl-C or SIGTERM, so a
/// reader knows its verdict covers a shorter run than asked for.
fn interrupted_line(run: &serde_json::Value, time_limit_s: u64) -> Option<String> {
    if !run["interrupted"].as_bool().unwrap_or(false) {
        return None;
    }
    Some(format!(
        "interrupted after {:.1} s of its {} s main phase; checked over what was recorded",
        run["main_phase_s"].as_f64().unwrap_or(0.0),
        run["time_limit_s"].as_u64().unwrap_or(time_limit_s)
    ))
}

/// The run's processes: `3`, or for sharded paxos-kv the controller and the replica groups.
fn layout_label(a: &crate::plan::TestArgs) -> String {
    if a.groups == 0 {
        return a.nodes.to_string();
    }
    format!(
        "{} (a controller group and {} replica groups of {}, --cc {})",
        a.total_nodes(),
        a.groups,
        a.nodes,
        a.cc.as_deref().unwrap_or("2pl")
    )
}

/// The nemesis, with where its faults were aimed when not at every process.
fn nemesis_label(a: &crate::plan::TestArgs) -> String {
    if &*a.nemesis_scope == "any" {
        a.nemesis.to_string()
    } else {
        format!("{} (aimed at: {})", a.nemesis, &*a.nemesis_scope)
    }
}

pub fn write_report(
    run_dir: &Path,
    config: &RunConfig,
    results: &serde_json::Value,
    checks: &[CheckOutcome],
    counts: &BTreeMap<String, Counts>,
) -> Result<()> {
    let verdict: Verdict =
        serde_json::from_value(results["verdict"].clone()).unwrap_or(Verdict::Unknown);
    let a = &config.args;
    let mut h = String::with_capacity(1 << 20);
    let title = format!("ordeal: {} — {}", a.test_name(), verdict);
    let _ = write!(
        h,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body{{font-family:system-ui,-apple-system,"DejaVu Sans",sans-serif;margin:0;color:#222;background:#fafafa}}
main{{max-width:1240px;margin:0 auto;padding:0 16px 40px}}
.banner{{color:#fff;padding:18px 24px;font-size:28px;font-weight:600;background:{colour}}}
.banner small{{display:block;font-size:15px;font-weight:400;opacity:.9}}
table{{border-collapse:collapse;margin:8px 0 16px;background:#fff}}
td,th{{border:1px solid #ddd;padding:4px 10px;text-align:left;font-size:14px;vertical-align:top}}
th{{background:#f0f0f0}}
code,pre{{font-family:"DejaVu Sans Mono",monospace;font-size:13px}}
pre{{background:#fff;border:1px solid #ddd;padding:8px;overflow-x:auto;max-height:420px}}
.v-valid{{color:#2e7d32;font-weight:600}} .v-invalid{{color:#c62828;font-weight:600}} .v-unknown{{color:#ef6c00;font-weight:600}}
figure{{margin:12px 0}} figure img{{max-width:100%;border:1px solid #ddd;background:#fff}}
h2{{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:28px}}
iframe.cx{{width:100%;height:900px;border:1px solid #ddd;background:#fff}}
.banner .why{{display:block;font-size:16px;font-weight:400;margin-top:8px;overflow-wrap:anywhere}}
td.num,th.num{{text-align:right;font-variant-numeric:tabular-nums}}
</style></head><body>
<div class="banner">{verdict_upper}<small>{name} · {workload} workload · nemesis {nemesis} · {nodes} · seed {seed}{bug}</small>{interrupted}{why}</div><main>
"#,
        colour = verdict_colour(verdict),
        why = why_line(verdict, checks),
        interrupted = interrupted_line(&results["run"], a.time_limit_s)
            .map(|l| format!("<small class=\"interrupted\">{}</small>", esc(&l)))
            .unwrap_or_default(),
        verdict_upper = verdict.as_str().to_uppercase(),
        name = esc(&a.test_name()),
        workload = esc(a.workload.as_str()),
        nemesis = esc(&a.nemesis),
        nodes = if a.groups == 0 {
            format!("{} nodes", a.nodes)
        } else {
            format!("{} groups of {} nodes and a controller", a.groups, a.nodes)
        },
        seed = config.seed,
        bug = a
            .bug
            .as_ref()
            .map(|b| format!(" · planted bug <b>{}</b>", esc(b)))
            .unwrap_or_default(),
    );

    // What ran.
    let run = &results["run"];
    let _ = write!(
        h,
        "<h2>What ran</h2><table>\
<tr><th>workload</th><td>{}</td></tr><tr><th>nemesis</th><td>{}</td></tr>\
<tr><th>nodes</th><td>{}</td></tr><tr><th>time limit</th><td>{} s{}</td></tr>\
<tr><th>target rate / concurrency</th><td>{} ops/s / {} clients</td></tr>\
<tr><th>seed</th><td>{}</td></tr><tr><th>network backend</th><td>{}</td></tr>\
<tr><th>target</th><td>{}</td></tr><tr><th>started</th><td>{}</td></tr>\
<tr><th>throughput (main phase)</th><td>{:.0} ops/s attempted, {:.0} ops/s completed (ok){}</td></tr>\
<tr><th>reproduce</th><td><code>{}</code><br><small>Same seed, same operations and fault schedule, except that a fault aimed at the leader hits whoever leads then; the OS still schedules threads as it likes, so interleavings differ.{}</small></td></tr></table>",
        esc(a.workload.as_str()),
        esc(&nemesis_label(a)),
        layout_label(a),
        a.time_limit_s,
        interrupted_line(run, a.time_limit_s)
            .map(|l| format!(" ({})", esc(&l)))
            .unwrap_or_default(),
        a.rate,
        a.concurrency,
        config.seed,
        esc(&config.net_note),
        target_cell(config),
        esc(&config.started_at),
        run["throughput_ops_per_s"].as_f64().unwrap_or(0.0),
        run["completed_ops_per_s"].as_f64().unwrap_or(0.0),
        match (run["ops_refused_main_phase"].as_u64(), run["backoff_s_total"].as_f64()) {
            (Some(n), Some(s)) if n > 0 => format!(
                "; {n} refusals, after which clients backed off {s:.1} s in all"
            ),
            _ => String::new(),
        },
        esc(&config.reproduce),
        replay_hint(run_dir),
    );

    // Checks.
    h.push_str("<h2>Checks</h2><table><tr><th>check</th><th>verdict</th><th>summary</th></tr>");
    for c in checks {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"v-{}\">{}</td><td>{}</td></tr>",
            esc(&c.name),
            c.verdict,
            c.verdict,
            esc(&c.summary)
        );
    }
    h.push_str("</table>");

    // Counterexample.
    for c in checks.iter().filter(|c| c.verdict == Verdict::Invalid) {
        let _ = write!(h, "<h2>Counterexample: {}</h2>", esc(&c.name));
        match &c.html {
            // The checker's page is whole (its own styles); an iframe keeps it whole and the
            // report still self-contained.
            Some(page) => {
                // The frame grows to its page (up to a cap), so a short counterexample reads
                // without a second scroll bar; a srcdoc page is same-origin, so its height is
                // readable.
                let _ = write!(
                    h,
                    "<iframe title=\"counterexample: {}\" class=\"cx\" onload=\"{}\" srcdoc=\"{}\"></iframe>",
                    esc(&c.name),
                    esc(&format!(
                        "this.style.height = Math.min(this.contentDocument.documentElement.scrollHeight + 4, {COUNTEREXAMPLE_MAX_HEIGHT_PX}) + 'px'"
                    )),
                    esc(page)
                );
            }
            None => {
                let text = serde_json::to_string_pretty(&c.details).unwrap_or_default();
                let _ = write!(
                    h,
                    "<pre>{}</pre>",
                    esc(&text.chars().take(20_000).collect::<String>())
                );
            }
        }
    }

    // Charts.
    h.push_str("<h2>Charts</h2>");
    h.push_str(&embed_png(
        run_dir,
        "latency-raw.png",
        "latency of each operation",
    ));
    h.push_str(&embed_png(
        run_dir,
        "latency-quantiles.png",
        "latency quantiles",
    ));
    h.push_str(&embed_png(run_dir, "rate.png", "throughput"));

    // Stats.
    h.push_str("<h2>Operations</h2><table><tr><th>f</th><th class=\"num\">ok</th><th class=\"num\">fail</th><th class=\"num\">info (unknown)</th><th class=\"num\">total</th></tr>");
    for (f, c) in counts {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(f),
            c.ok,
            c.fail,
            c.info,
            c.total()
        );
    }
    h.push_str("</table>");
    if let Some(av) = checks.iter().find(|c| c.name == "availability") {
        let d = &av.details;
        let pct = |v: &serde_json::Value| {
            v.as_f64()
                .map(|x| format!("{:.1}%", x * 100.0))
                .unwrap_or("n/a".into())
        };
        let _ = write!(
            h,
            "<h2>Availability</h2><table><tr><th></th><th>operations</th><th>ok</th><th>fraction ok</th></tr>\
<tr><td>overall</td><td>{}</td><td>{}</td><td>{}</td></tr>\
<tr><td>invoked during a fault</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
            d["ops"],
            d["ok"],
            pct(&d["fraction_ok"]),
            d["ops_during_faults"],
            d["ok_during_faults"],
            pct(&d["fraction_ok_during_faults"])
        );
    }

    // Faults.
    if let Some(faults) = results["faults"].as_array() {
        h.push_str("<h2>Faults</h2><table><tr><th>fault</th><th class=\"num\">from (s)</th><th class=\"num\">to (s)</th><th class=\"num\">lasted (s)</th></tr>");
        for f in faults {
            let from_s = f["start_ns"].as_f64().unwrap_or(0.0) / 1e9;
            let to_s = f["end_ns"].as_f64().unwrap_or(0.0) / 1e9;
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"num\">{from_s:.2}</td><td class=\"num\">{to_s:.2}</td><td class=\"num\">{:.2}</td></tr>",
                esc(f["label"].as_str().unwrap_or("")),
                to_s - from_s
            );
        }
        if faults.is_empty() {
            h.push_str("<tr><td colspan=4>none</td></tr>");
        }
        h.push_str("</table>");
    }

    // Files.
    h.push_str("<h2>Files</h2><ul>");
    for f in ["history.jsonl", "config.json", "results.json", "ordeal.log"] {
        let _ = write!(h, "<li><a href=\"{f}\">{f}</a></li>");
    }
    for n in 1..=a.nodes {
        let _ = write!(h, "<li><a href=\"nodes/n{n}.log\">nodes/n{n}.log</a></li>");
    }
    h.push_str("</ul></main></body></html>\n");
    let path = run_dir.join("report.html");
    std::fs::write(&path, h).with_context(|| format!("writing {}", path.display()))
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// A run directory (results/<test>/<time>/ or results/latest).
    pub dir: PathBuf,
}

/// `ordeal report DIR`: re-check and re-render. Returns the exit code.
pub fn run_report(args: ReportArgs) -> i32 {
    match report_inner(&args.dir) {
        Ok(v) => {
            eprintln!("ordeal report: {}: verdict {v}", args.dir.display());
            v.exit_code()
        }
        Err(e) => {
            eprintln!("ordeal report: {e:#}");
            255
        }
    }
}

fn report_inner(dir: &Path) -> Result<Verdict> {
    let config_path = dir.join("config.json");
    let config: RunConfig = serde_json::from_str(
        &std::fs::read_to_string(&config_path)
            .with_context(|| format!("reading {}", config_path.display()))?,
    )
    .with_context(|| format!("parsing {}", config_path.display()))?;
    let history = dir.join("history.jsonl");
    if !history.is_file() {
        anyhow::bail!("{}: no history to check", history.display());
    }
    let old: serde_json::Value = std::fs::read_to_string(dir.join("results.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    // Convergence needs the live cluster; keep what the run found.
    let convergence = old["checks"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == "convergence"))
        .and_then(|c| serde_json::from_value::<CheckOutcome>(c.clone()).ok())
        .unwrap_or(CheckOutcome {
            name: "convergence".into(),
            verdict: Verdict::Unknown,
            summary: "not recorded by the run".into(),
            details: serde_json::Value::Null,
            html: None,
        });
    let logs: Vec<PathBuf> = (1..=config.args.nodes)
        .map(|n| dir.join("nodes").join(format!("n{n}.log")))
        .collect();
    analyse(
        dir,
        &config,
        &history,
        &logs,
        convergence,
        old["run"].clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(name: &str, verdict: Verdict, summary: &str) -> CheckOutcome {
        CheckOutcome {
            name: name.into(),
            verdict,
            summary: summary.into(),
            details: serde_json::Value::Null,
            html: None,
        }
    }

    #[test]
    fn the_replay_hint_appears_only_when_the_run_had_faults() {
        let dir = std::env::temp_dir().join(format!("ordeal-replay-hint-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(replay_hint(&dir), "", "no faults.json");
        std::fs::write(dir.join("faults.json"), "[]").unwrap();
        assert_eq!(replay_hint(&dir), "", "no faults");
        std::fs::write(
            dir.join("faults.json"),
            r#"[{"nemesis":"kill","wait_ms":1,"hold_ms":1,"target":"one","action":{"do":"kill","nodes":[1]}}]"#,
        )
        .unwrap();
        let hint = replay_hint(&dir);
        assert!(
            hint.contains("--replay-faults") && hint.contains("faults.json"),
            "{hint}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_banner_names_the_checks_that_decided_the_verdict() {
        let long = format!(
            "strict-serializable (list-append workload); {}",
            "G0, ".repeat(80)
        );
        let checks = [
            outcome(
                "linearizable",
                Verdict::Invalid,
                "invalid: not linearizable <key \"r2\">",
            ),
            outcome("stats", Verdict::Valid, "3938 operations"),
            outcome("strict-serializable", Verdict::Invalid, &long),
        ];
        let why = why_line(Verdict::Invalid, &checks);
        assert!(
            why.contains("<b>linearizable</b>: not linearizable &lt;key &quot;r2&quot;&gt;"),
            "{why}"
        );
        assert!(!why.contains("stats"), "{why}");
        assert!(
            why.contains("<b>strict-serializable</b>: (list-append workload); G0"),
            "{why}"
        );
        assert!(
            why.chars().count() < long.chars().count(),
            "shortened: {why}"
        );
        assert!(why.contains('…'), "{why}");
        assert_eq!(why_line(Verdict::Valid, &checks), "");
    }
}
