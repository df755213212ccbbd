//! The pages `ordeal serve` renders on the server: the list of runs and campaigns (with
//! filters, pages and a live section for runs in progress) and plain directory listings.
//! No scripts: a page with something running reloads itself.

use super::scan::{CampaignEntry, CampaignState, Listing, RunEntry, RunState};
use crate::campaign::escape;
use serde::Deserialize;
use std::fmt::Write;

/// Runs per page of the list.
pub const RUNS_PER_PAGE: usize = 50;
/// Campaigns per page of the campaign list; the front page shows the newest few.
pub const CAMPAIGNS_PER_PAGE: usize = 50;
const CAMPAIGNS_ON_FRONT: usize = 10;
/// A page showing something in progress reloads after this many seconds.
const REFRESH_S: u32 = 2;
/// The verdict filter's choices.
pub const VERDICTS: [&str; 5] = ["valid", "invalid", "unknown", "error", "running"];

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin:0.8em 0}td,th{border:1px solid #ccc;padding:3px 7px;\
font-size:13px;text-align:left}th{background:#f0f0f0}.invalid,.bad{background:#fde2e2}\
.error,.unknown{background:#fbe3c0}.running{background:#e2ecfd}.num{text-align:right}\
h1{font-size:1.4em}nav a{margin-right:1em}form{margin:0.5em 0}.note{color:#666;font-size:12px}";

/// The list's query: `?verdict=invalid&workload=register&bug=none&page=2`. An empty value is
/// no filter; `bug=none` means runs without a planted bug.
#[derive(Debug, Default, Deserialize)]
pub struct Filters {
    pub verdict: Option<String>,
    pub workload: Option<String>,
    pub bug: Option<String>,
    pub page: Option<usize>,
}

fn set(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

impl Filters {
    pub fn matches(&self, r: &RunEntry) -> bool {
        set(&self.verdict).is_none_or(|v| r.state.label() == v)
            && set(&self.workload).is_none_or(|w| r.workload.as_deref() == Some(w))
            && set(&self.bug).is_none_or(|b| match (b, r.bug.as_deref()) {
                ("none", None) => true,
                (b, Some(rb)) => rb == b,
                _ => false,
            })
    }

    /// The query string for page `page` with the same filters.
    fn query(&self, page: usize) -> String {
        let mut q = String::new();
        for (k, v) in [
            ("verdict", set(&self.verdict)),
            ("workload", set(&self.workload)),
            ("bug", set(&self.bug)),
        ] {
            if let Some(v) = v {
                let _ = write!(q, "{k}={}&", encode(v, false));
            }
        }
        format!("?{q}page={page}")
    }
}

/// Percent-encodes everything but unreserved characters (and `/` in paths).
pub fn encode(text: &str, path: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (path && b == b'/') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `/files/<rel>/` links: into the results directory, served as files.
pub fn file_href(rel: &str, file: &str) -> String {
    format!("/files/{}/{}", encode(rel, true), encode(file, true))
}

fn head(title: &str, refresh: bool) -> String {
    format!(
        "<!doctype html><html><head><meta charset=utf-8><title>{}</title>{}<style>{STYLE}</style>\
         </head><body><nav><a href=\"/\">runs</a><a href=\"/campaigns\">campaigns</a>\
         <a href=\"/files/\">files</a></nav>\n",
        escape(title),
        if refresh {
            format!("<meta http-equiv=\"refresh\" content=\"{REFRESH_S}\">")
        } else {
            String::new()
        }
    )
}

/// `20261127T155409Z` as `2026-11-27 15:54:09Z`; anything else as it is.
pub fn pretty_stamp(stamp: &str) -> String {
    let b = stamp.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    if digits(0..8) && b.get(8) == Some(&b'T') && digits(9..15) {
        format!(
            "{}-{}-{} {}:{}:{}{}",
            &stamp[0..4],
            &stamp[4..6],
            &stamp[6..8],
            &stamp[9..11],
            &stamp[11..13],
            &stamp[13..15],
            &stamp[15..]
        )
    } else {
        stamp.to_string()
    }
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map(f).unwrap_or_else(|| "-".into())
}

fn select(h: &mut String, name: &str, label: &str, chosen: Option<&str>, values: &[String]) {
    let _ = write!(
        h,
        "<label>{label} <select name=\"{name}\"><option value=\"\">any</option>"
    );
    for v in values {
        let _ = write!(
            h,
            "<option{}>{}</option>",
            if chosen == Some(v.as_str()) {
                " selected"
            } else {
                ""
            },
            escape(v)
        );
    }
    h.push_str("</select></label> ");
}

fn distinct(values: impl Iterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = values.collect();
    v.sort();
    v.dedup();
    v
}

fn running_row(h: &mut String, r: &RunEntry) {
    let RunState::Running(p) = &r.state else {
        return;
    };
    let what = match p {
        Some(p) => format!(
            "{}: {:.0} of {} s, {} ops ({} ok, {} fail, {} info), fault: {}",
            escape(&p.phase),
            p.elapsed_s,
            p.time_limit_s,
            p.ops_ok + p.ops_fail + p.ops_info,
            p.ops_ok,
            p.ops_fail,
            p.ops_info,
            escape(&p.fault)
        ),
        None => "starting the cluster".into(),
    };
    let _ = writeln!(
        h,
        "<tr class=running><td>{}</td><td>{}</td><td>{what}</td><td><a href=\"{}\">log</a></td></tr>",
        escape(&r.test),
        escape(r.campaign.as_deref().unwrap_or("-")),
        file_href(&r.rel, "ordeal.log")
    );
}

fn run_row(h: &mut String, r: &RunEntry) {
    let label = r.state.label();
    let link = if r.has_report {
        format!(
            "<a href=\"{}\">report</a>",
            file_href(&r.rel, "report.html")
        )
    } else {
        format!("<a href=\"{}\">files</a>", file_href(&r.rel, ""))
    };
    let _ = writeln!(
        h,
        "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
         <td class=num>{}</td><td class=num>{}</td><td><b>{}</b></td><td class=num>{}</td>\
         <td>{}</td><td>{link}</td></tr>",
        escape(label),
        escape(&pretty_stamp(&r.stamp)),
        escape(&r.test),
        escape(r.workload.as_deref().unwrap_or("-")),
        escape(r.nemesis.as_deref().unwrap_or("-")),
        escape(r.bug.as_deref().unwrap_or("-")),
        escape(r.target.as_deref().unwrap_or("-")),
        opt(r.nodes, |v| v.to_string()),
        opt(r.seed, |v| v.to_string()),
        escape(label),
        opt(r.ops_per_s, |v| format!("{v:.0}")),
        escape(r.campaign.as_deref().unwrap_or("-")),
    );
}

fn campaign_row(h: &mut String, c: &CampaignEntry) {
    let (class, result, counts, slice) = match &c.state {
        CampaignState::Done(s) => (
            if s.all_ok() { "" } else { "bad" },
            if s.all_ok() { "pass" } else { "FAIL" }.to_string(),
            format!(
                "{} passed, {} failed, {} errors of {}; {:.0} s",
                s.passed,
                s.failed,
                s.errors,
                s.runs.len(),
                s.wall_s
            ),
            if s.merged_from.is_empty() {
                s.shard.clone().unwrap_or_else(|| "whole".into())
            } else {
                "merged".into()
            },
        ),
        CampaignState::Running(p) => (
            "running",
            "running".to_string(),
            format!(
                "{} of {} runs done ({} as expected); now: {}",
                p.runs_done,
                p.runs_planned,
                p.runs_ok,
                if p.running.is_empty() {
                    "-".to_string()
                } else {
                    p.running.join(", ")
                }
            ),
            "-".into(),
        ),
        CampaignState::Incomplete => (
            "error",
            "incomplete".to_string(),
            "ended without a summary".into(),
            "-".into(),
        ),
    };
    // A finished campaign has its index.html; one in progress only its files so far.
    let page = match c.state {
        CampaignState::Done(_) => "index.html",
        _ => "",
    };
    let link = format!(
        "<a href=\"{}\">{}</a>",
        file_href(&c.rel, page),
        escape(&pretty_stamp(&c.stamp))
    );
    let _ = writeln!(
        h,
        "<tr class=\"{class}\"><td>{link}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        escape(&c.name),
        escape(&result),
        escape(&counts),
        escape(&slice)
    );
}

fn campaign_table(h: &mut String, cs: &[&CampaignEntry]) {
    h.push_str(
        "<table class=campaigns><tr><th>started</th><th>campaign</th><th>result</th>\
         <th>runs</th><th>slice</th></tr>\n",
    );
    for c in cs {
        campaign_row(h, c);
    }
    h.push_str("</table>\n");
}

fn pager(h: &mut String, base: &str, query: impl Fn(usize) -> String, page: usize, pages: usize) {
    if pages <= 1 {
        return;
    }
    h.push_str("<p class=pager>");
    if page > 1 {
        let _ = write!(
            h,
            "<a href=\"{base}{}\">newer</a> ",
            escape(&query(page - 1))
        );
    }
    let _ = write!(h, "page {page} of {pages}");
    if page < pages {
        let _ = write!(
            h,
            " <a href=\"{base}{}\">older</a>",
            escape(&query(page + 1))
        );
    }
    h.push_str("</p>\n");
}

/// The front page: runs in progress, the newest campaigns, and the filtered runs, a page at a
/// time.
pub fn render_list(root_name: &str, l: &Listing, f: &Filters) -> String {
    let running: Vec<&RunEntry> = l
        .runs
        .iter()
        .filter(|r| matches!(r.state, RunState::Running(_)))
        .collect();
    let campaigns_running = l
        .campaigns
        .iter()
        .any(|c| matches!(c.state, CampaignState::Running(_)));
    let mut h = head(
        &format!("ordeal results: {root_name}"),
        !running.is_empty() || campaigns_running,
    );
    let _ = writeln!(
        h,
        "<h1>ordeal results <small>{}</small></h1>",
        escape(root_name)
    );
    if l.truncated {
        h.push_str("<p class=note>The results directory holds more runs than one listing reads; the oldest are not listed.</p>\n");
    }
    if !running.is_empty() {
        let _ = writeln!(
            h,
            "<h2>In progress ({})</h2><table class=live><tr><th>test</th><th>campaign</th>\
             <th>progress</th><th>log</th></tr>",
            running.len()
        );
        for r in &running {
            running_row(&mut h, r);
        }
        h.push_str("</table>\n");
    }
    if !l.campaigns.is_empty() {
        h.push_str("<h2>Campaigns, newest first</h2>\n");
        let front: Vec<&CampaignEntry> = l.campaigns.iter().take(CAMPAIGNS_ON_FRONT).collect();
        campaign_table(&mut h, &front);
        if l.campaigns.len() > CAMPAIGNS_ON_FRONT {
            let _ = writeln!(
                h,
                "<p><a href=\"/campaigns\">all {} campaigns</a></p>",
                l.campaigns.len()
            );
        }
    }
    let shown: Vec<&RunEntry> = l.runs.iter().filter(|r| f.matches(r)).collect();
    let pages = shown.len().div_ceil(RUNS_PER_PAGE).max(1);
    let page = f.page.unwrap_or(1).clamp(1, pages);
    let _ = writeln!(
        h,
        "<h2>Runs, newest first</h2><form method=get action=\"/\">"
    );
    let verdicts: Vec<String> = VERDICTS.iter().map(|v| v.to_string()).collect();
    select(&mut h, "verdict", "verdict", set(&f.verdict), &verdicts);
    let workloads = distinct(l.runs.iter().filter_map(|r| r.workload.clone()));
    select(&mut h, "workload", "workload", set(&f.workload), &workloads);
    let bugs = distinct(
        l.runs
            .iter()
            .map(|r| r.bug.clone().unwrap_or_else(|| "none".into())),
    );
    select(&mut h, "bug", "bug", set(&f.bug), &bugs);
    h.push_str("<button type=submit>filter</button> <a href=\"/\">clear</a></form>\n");
    let first = (page - 1) * RUNS_PER_PAGE;
    let _ = writeln!(
        h,
        "<p class=count>{} of {} runs match{}</p>",
        shown.len(),
        l.runs.len(),
        if shown.is_empty() {
            String::new()
        } else {
            format!(
                "; showing {}-{}",
                first + 1,
                (first + RUNS_PER_PAGE).min(shown.len())
            )
        }
    );
    h.push_str(
        "<table class=runs><tr><th>started</th><th>test</th><th>workload</th><th>nemesis</th>\
         <th>bug</th><th>target</th><th>nodes</th><th>seed</th><th>verdict</th><th>ops/s</th>\
         <th>campaign</th><th>report</th></tr>\n",
    );
    for r in shown.iter().skip(first).take(RUNS_PER_PAGE) {
        run_row(&mut h, r);
    }
    h.push_str("</table>\n");
    pager(&mut h, "/", |p| f.query(p), page, pages);
    h.push_str("</body></html>\n");
    h
}

/// Every campaign, a page at a time.
pub fn render_campaigns(l: &Listing, page: Option<usize>) -> String {
    let running = l
        .campaigns
        .iter()
        .any(|c| matches!(c.state, CampaignState::Running(_)));
    let mut h = head("ordeal campaigns", running);
    let pages = l.campaigns.len().div_ceil(CAMPAIGNS_PER_PAGE).max(1);
    let page = page.unwrap_or(1).clamp(1, pages);
    let _ = writeln!(
        h,
        "<h1>Campaigns, newest first</h1><p class=count>{} campaigns</p>",
        l.campaigns.len()
    );
    let these: Vec<&CampaignEntry> = l
        .campaigns
        .iter()
        .skip((page - 1) * CAMPAIGNS_PER_PAGE)
        .take(CAMPAIGNS_PER_PAGE)
        .collect();
    campaign_table(&mut h, &these);
    pager(&mut h, "/campaigns", |p| format!("?page={p}"), page, pages);
    h.push_str("</body></html>\n");
    h
}

/// A directory without an index.html: its entries (at most `limit`), directories first.
pub fn render_dir(rel: &str, entries: &[(String, bool, u64)], truncated: bool) -> String {
    let mut h = head(&format!("/{rel}"), false);
    let _ = writeln!(h, "<h1>/{}</h1><ul>", escape(rel));
    if !rel.is_empty() {
        h.push_str("<li><a href=\"../\">../</a></li>\n");
    }
    for (name, is_dir, size) in entries {
        let slash = if *is_dir { "/" } else { "" };
        let _ = writeln!(
            h,
            "<li><a href=\"{}{slash}\">{}{slash}</a>{}</li>",
            encode(name, false),
            escape(name),
            if *is_dir {
                String::new()
            } else {
                format!(" <span class=note>{size} bytes</span>")
            }
        );
    }
    h.push_str("</ul>");
    if truncated {
        h.push_str("<p class=note>More entries than one listing shows.</p>");
    }
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stamp: &str, workload: &str, bug: Option<&str>, state: RunState) -> RunEntry {
        RunEntry {
            rel: format!("t/{stamp}"),
            test: "t".into(),
            stamp: stamp.into(),
            campaign: None,
            workload: Some(workload.into()),
            nemesis: Some("kill".into()),
            bug: bug.map(str::to_string),
            seed: Some(1),
            nodes: Some(3),
            target: Some("paxos-kv".into()),
            state,
            ops_per_s: Some(100.0),
            has_report: true,
        }
    }

    #[test]
    fn filters_match_verdict_workload_and_bug_and_pages_are_bounded() {
        let a = run("1", "register", None, RunState::Done("valid".into()));
        let b = run("2", "kv", Some("x<y"), RunState::Done("invalid".into()));
        let f = |v: &str, w: &str, bug: &str| Filters {
            verdict: Some(v.into()),
            workload: Some(w.into()),
            bug: Some(bug.into()),
            page: None,
        };
        assert!(f("", "", "").matches(&a) && f("", "", "").matches(&b));
        assert!(f("valid", "", "").matches(&a) && !f("valid", "", "").matches(&b));
        assert!(!f("", "kv", "").matches(&a) && f("", "kv", "").matches(&b));
        assert!(f("", "", "none").matches(&a) && !f("", "", "none").matches(&b));
        assert!(f("", "", "x<y").matches(&b) && !f("", "", "x<y").matches(&a));
        assert_eq!(
            f("invalid", "", "x<y").query(3),
            "?verdict=invalid&bug=x%3Cy&page=3"
        );
        // 120 runs: three pages of at most RUNS_PER_PAGE rows; the bug name is escaped.
        let l = Listing {
            runs: (0..120)
                .map(|i| {
                    run(
                        &format!("{i:03}"),
                        "kv",
                        Some("x<y"),
                        RunState::Done("invalid".into()),
                    )
                })
                .collect(),
            ..Listing::default()
        };
        let page = render_list(
            "results",
            &l,
            &Filters {
                page: Some(3),
                ..Filters::default()
            },
        );
        assert_eq!(page.matches("<tr class=\"invalid\">").count(), 20, "{page}");
        assert!(page.contains("page 3 of 3") && !page.contains("x<y"));
        assert!(!page.contains("http-equiv=\"refresh\""));
        let page = render_list(
            "results",
            &l,
            &Filters {
                page: Some(99),
                ..Filters::default()
            },
        );
        assert!(page.contains("page 3 of 3"));
        assert_eq!(encode("a b/ü", true), "a%20b/%C3%BC");
        assert_eq!(pretty_stamp("20261127T155409Z-1"), "2026-11-27 15:54:09Z-1");
        assert_eq!(pretty_stamp("ü2026"), "ü2026");
    }
}
