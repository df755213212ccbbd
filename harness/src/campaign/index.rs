//! The pages people read: a campaign's `index.html` (one row per run, unexpected results first,
//! and each planted bug's detection power as a table and `detection.png`), and
//! `results/index.html`, every campaign newest first with a small pass/fail and ops/s trend
//! per campaign name.

use super::junit::escape;
use super::summary::{Detection, RunRecord, Summary};
use anyhow::{Context, Result};
use plotters::prelude::*;
use std::fmt::Write;
use std::path::Path;

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin:0.8em 0}td,th{border:1px solid #ccc;padding:3px 7px;\
font-size:13px;text-align:left}th{background:#f0f0f0}.bad{background:#fde2e2}.err{background:#fbe3c0}\
.num{text-align:right}.why{color:#a00;font-size:12px}h1{font-size:1.4em}";

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map(f).unwrap_or_else(|| "-".into())
}

fn run_row(h: &mut String, r: &RunRecord) {
    let class = match (r.ok, r.got.as_str()) {
        (true, _) => "",
        (false, "error") => " class=\"err\"",
        (false, _) => " class=\"bad\"",
    };
    let report = r
        .run_dir
        .as_deref()
        .map(|d| format!("<a href=\"{0}/report.html\">report</a>", escape(d)))
        .unwrap_or_else(|| "-".into());
    let _ = write!(
        h,
        "<tr{class}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=num>{}</td>\
         <td>{}</td><td><b>{}</b></td><td class=num>{}</td><td class=num>{}</td>\
         <td class=num>{:.1}</td><td class=num>{}</td><td>{report}</td></tr>",
        escape(&r.test),
        escape(&r.workload),
        escape(&r.target),
        escape(&r.nemesis),
        escape(r.bug.as_deref().unwrap_or("-")),
        r.seed.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
        escape(&r.expected),
        escape(&r.got),
        opt(r.ops_per_s, |v| format!("{v:.0}")),
        opt(r.availability, |v| format!("{:.1}%", v * 100.0)),
        r.duration_s,
        opt(r.first_anomaly_s, |v| format!("{v:.1} s")),
    );
    if !r.ok {
        let _ = write!(
            h,
            "<tr{class}><td colspan=13 class=why>{}</td></tr>",
            escape(&r.explanation)
        );
    }
    h.push('\n');
}

fn detection_table(h: &mut String, d: &[Detection]) {
    if d.is_empty() {
        return;
    }
    h.push_str(
        "<h2>Detection power</h2><table><tr><th>planted bug</th><th>seeds caught</th>\
         <th>fraction</th><th>median time to first anomaly</th></tr>\n",
    );
    for x in d {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td class=num>{} of {}</td><td class=num>{:.0}%</td><td class=num>{}</td></tr>",
            escape(&x.bug),
            x.caught,
            x.runs,
            x.fraction * 100.0,
            opt(x.median_first_anomaly_s, |v| format!("{v:.1} s"))
        );
    }
    h.push_str("</table><img src=\"detection.png\" alt=\"detection power per planted bug\">\n");
}

/// The campaign's index.html.
pub fn render_campaign(s: &Summary) -> String {
    let mut h = format!(
        "<!doctype html><html><head><meta charset=utf-8><title>campaign {0} {1}</title>\
         <style>{STYLE}</style></head><body><h1>campaign {0} <small>{1}</small></h1>\n",
        escape(&s.campaign),
        escape(&s.started)
    );
    let verdict = if s.all_ok() {
        "<span style=\"color:#080\">all runs met their expectations</span>"
    } else {
        "<span style=\"color:#a00\">some runs did not meet their expectations</span>"
    };
    let _ = writeln!(
        h,
        "<p>{verdict}: {} passed, {} failed, {} errors of {} runs ({} planned); wall time {:.0} s \
         with {} job(s){}{}. <a href=\"summary.json\">summary.json</a> \
         <a href=\"junit.xml\">junit.xml</a> <a href=\"../../../index.html\">all campaigns</a></p>",
        s.passed,
        s.failed,
        s.errors,
        s.runs.len(),
        s.planned.len(),
        s.wall_s,
        s.jobs,
        s.shard
            .as_deref()
            .map(|x| format!(", shard {}", escape(x)))
            .unwrap_or_default(),
        if s.merged_from.is_empty() {
            String::new()
        } else {
            format!(", merged from {} slices", s.merged_from.len())
        }
    );
    h.push_str(
        "<table><tr><th>test</th><th>workload</th><th>target</th><th>nemesis</th><th>bug</th>\
         <th>seed</th><th>expected</th><th>got</th><th>ops/s</th><th>availability</th>\
         <th>duration s</th><th>first anomaly</th><th>report</th></tr>\n",
    );
    for r in &s.runs {
        run_row(&mut h, r);
    }
    h.push_str("</table>\n");
    detection_table(&mut h, &s.detection);
    h.push_str("</body></html>\n");
    h
}

/// `detection.png`: per planted bug, the fraction of seeds that caught it (bars) with the
/// median time to the first anomaly written on each bar.
pub fn draw_detection(d: &[Detection], path: &Path) -> Result<()> {
    crate::plots::register_font();
    let width = (160 + 140 * d.len().max(1)) as u32;
    let root = BitMapBackend::new(path, (width.min(1600), 360)).into_drawing_area();
    let draw = || -> Result<(), Box<dyn std::error::Error + '_>> {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("seeds that caught each planted bug", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..d.len().max(1) as f64, 0f64..1.05f64)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(WHITE)
            .x_labels(d.len().max(1) * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor() as usize;
                if (x - i as f64 - 0.5).abs() < 0.01 && i < d.len() {
                    d[i].bug.clone()
                } else {
                    String::new()
                }
            })
            .y_desc("fraction of seeds")
            .label_style(("sans-serif", 13))
            .draw()?;
        chart.draw_series(d.iter().enumerate().map(|(i, x)| {
            let colour = if x.fraction >= 0.9 {
                RGBColor(60, 150, 80)
            } else {
                RGBColor(210, 90, 60)
            };
            Rectangle::new(
                [(i as f64 + 0.2, 0.0), (i as f64 + 0.8, x.fraction)],
                colour.filled(),
            )
        }))?;
        chart.draw_series(d.iter().enumerate().map(|(i, x)| {
            let label = format!(
                "{}/{}{}",
                x.caught,
                x.runs,
                opt(x.median_first_anomaly_s, |v| format!(", {v:.1} s"))
            );
            Text::new(
                label,
                (i as f64 + 0.22, (x.fraction + 0.04).min(1.03)),
                ("sans-serif", 13),
            )
        }))?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))
}

/// Rewrites the index beside `campaigns` (`results/index.html` for `results/campaigns`) from
/// every `<name>/<start>/summary.json` in it, newest first, with a trend per campaign name
/// (oldest to newest).
pub fn write_results_index(campaigns: &Path) -> Result<()> {
    let results = match campaigns.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let prefix = campaigns
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "campaigns".into());
    let mut all: Vec<(String, Summary)> = Vec::new();
    for name in read_dirs(campaigns) {
        for start in read_dirs(&campaigns.join(&name)) {
            let dir = campaigns.join(&name).join(&start);
            if let Ok(s) = Summary::read(&dir) {
                all.push((format!("{prefix}/{name}/{start}"), s));
            }
        }
    }
    all.sort_by(|a, b| b.1.started.cmp(&a.1.started).then(b.0.cmp(&a.0)));
    let mut h = format!(
        "<!doctype html><html><head><meta charset=utf-8><title>ordeal results</title>\
         <style>{STYLE}</style></head><body><h1>ordeal campaigns</h1>\n"
    );
    let mut names: Vec<&str> = all.iter().map(|(_, s)| s.campaign.as_str()).collect();
    names.sort();
    names.dedup();
    if !names.is_empty() {
        h.push_str("<h2>Trends</h2><table><tr><th>campaign</th><th>pass/fail, oldest to newest</th><th>mean ops/s</th></tr>\n");
    }
    for name in &names {
        let mut history: Vec<&Summary> = all
            .iter()
            .filter(|(_, s)| s.campaign == *name)
            .map(|(_, s)| s)
            .collect();
        history.reverse();
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(name),
            trend_svg(&history),
            ops_svg(&history)
        );
    }
    if !names.is_empty() {
        h.push_str("</table>\n");
    }
    h.push_str(
        "<h2>Campaigns, newest first</h2><table><tr><th>started</th><th>campaign</th>\
         <th>result</th><th>passed</th><th>failed</th><th>errors</th><th>wall s</th><th>slice</th></tr>\n",
    );
    for (rel, s) in &all {
        let _ = writeln!(
            h,
            "<tr{}><td><a href=\"{}/index.html\">{}</a></td><td>{}</td><td>{}</td><td class=num>{}</td>\
             <td class=num>{}</td><td class=num>{}</td><td class=num>{:.0}</td><td>{}</td></tr>",
            if s.all_ok() { "" } else { " class=\"bad\"" },
            escape(rel),
            escape(&s.started),
            escape(&s.campaign),
            if s.all_ok() { "pass" } else { "FAIL" },
            s.passed,
            s.failed,
            s.errors,
            s.wall_s,
            if !s.merged_from.is_empty() {
                "merged".to_string()
            } else {
                escape(s.shard.as_deref().unwrap_or("whole"))
            }
        );
    }
    h.push_str("</table></body></html>\n");
    let path = results.join("index.html");
    std::fs::write(&path, h).with_context(|| format!("writing {}", path.display()))
}

fn read_dirs(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    v.sort();
    v
}

/// One bar per campaign run: height the pass fraction, green when all passed, red otherwise.
fn trend_svg(history: &[&Summary]) -> String {
    let last = &history[history.len().saturating_sub(30)..];
    let mut svg = format!(
        "<svg width=\"{}\" height=\"24\" role=img aria-label=\"pass/fail trend\">",
        last.len() * 9 + 2
    );
    for (i, s) in last.iter().enumerate() {
        let frac = if s.runs.is_empty() {
            0.0
        } else {
            s.passed as f64 / s.runs.len() as f64
        };
        let hgt = (22.0 * frac).max(3.0);
        let _ = write!(
            svg,
            "<rect x=\"{}\" y=\"{:.1}\" width=\"7\" height=\"{:.1}\" fill=\"{}\"><title>{}: {} of {}</title></rect>",
            i * 9 + 1,
            23.0 - hgt,
            hgt,
            if s.all_ok() { "#3c9650" } else { "#d25a3c" },
            escape(&s.started),
            s.passed,
            s.runs.len()
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A polyline of each campaign run's mean ops/s.
fn ops_svg(history: &[&Summary]) -> String {
    let means: Vec<f64> = history
        .iter()
        .filter_map(|s| {
            let v: Vec<f64> = s.runs.iter().filter_map(|r| r.ops_per_s).collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        })
        .collect();
    let Some(max) = means.iter().copied().reduce(f64::max).filter(|m| *m > 0.0) else {
        return "-".into();
    };
    let points: Vec<String> = means
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{},{:.1}", i * 9 + 4, 22.0 - 20.0 * v / max))
        .collect();
    format!(
        "<svg width=\"{}\" height=\"24\"><polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"{}\"/></svg> {:.0}",
        means.len() * 9 + 8,
        points.join(" "),
        means.last().copied().unwrap_or(0.0)
    )
}
