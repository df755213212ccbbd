//! `junit.xml`: one testcase per run and seed, so that any CI shows a campaign natively. A run
//! that missed its expectation is a `<failure>` carrying the verdict summary and the anomaly; a
//! run whose test crashed (or never ran) is an `<error>`.

use super::summary::Summary;
use std::fmt::Write;

pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // XML 1.0 allows no other control characters, even escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

pub fn render(s: &Summary) -> String {
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"ordeal campaign {}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" time=\"{:.1}\">",
        escape(&s.campaign),
        s.runs.len(),
        s.failed,
        s.errors,
        s.wall_s
    );
    let _ = writeln!(
        x,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" time=\"{:.1}\" timestamp=\"{}\">",
        escape(&s.campaign),
        s.runs.len(),
        s.failed,
        s.errors,
        s.wall_s,
        escape(&s.started)
    );
    for r in &s.runs {
        let name = match r.seed {
            Some(seed) => format!("{} seed {seed}", r.test),
            None => r.test.clone(),
        };
        let _ = writeln!(
            x,
            "    <testcase classname=\"{}.{}\" name=\"{}\" time=\"{:.1}\">",
            escape(&s.campaign),
            escape(&r.test),
            escape(&name),
            r.duration_s
        );
        let anomaly = if r.anomalies.is_empty() {
            String::new()
        } else {
            format!("\nanomalies: {}", r.anomalies.join(", "))
        };
        if r.got == "error" {
            let _ = writeln!(
                x,
                "      <error type=\"error\" message=\"{}\">{}</error>",
                escape(&r.explanation),
                escape(&r.explanation)
            );
        } else if !r.ok {
            let _ = writeln!(
                x,
                "      <failure type=\"{}\" message=\"expected {}, got {}\">{}{}</failure>",
                escape(&r.got),
                escape(&r.expected),
                escape(&r.got),
                escape(&r.explanation),
                escape(&anomaly)
            );
        }
        let _ = writeln!(
            x,
            "      <system-out>workload {} target {} nemesis {} bug {} expected {} got {}{}{}</system-out>",
            escape(&r.workload),
            escape(&r.target),
            escape(&r.nemesis),
            escape(r.bug.as_deref().unwrap_or("none")),
            escape(&r.expected),
            escape(&r.got),
            escape(&anomaly),
            r.run_dir
                .as_deref()
                .map(|d| format!("\nreport: {}/report.html", escape(d)))
                .unwrap_or_default()
        );
        x.push_str("    </testcase>\n");
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::summary::RunRecord;

    #[test]
    fn failures_and_errors_are_marked_and_text_is_escaped() {
        let mut s = Summary {
            campaign: "c<1>".into(),
            runs: vec![
                RunRecord {
                    test: "a".into(),
                    seed: Some(1),
                    expected: "valid".into(),
                    got: "valid".into(),
                    ok: true,
                    ..RunRecord::default()
                },
                RunRecord {
                    test: "b".into(),
                    seed: Some(2),
                    expected: "invalid".into(),
                    got: "valid".into(),
                    explanation: "expected invalid & got valid".into(),
                    ..RunRecord::default()
                },
                RunRecord {
                    test: "c".into(),
                    expected: "valid".into(),
                    got: "error".into(),
                    explanation: "exit 255: \"store\" failed".into(),
                    ..RunRecord::default()
                },
            ],
            ..Summary::default()
        };
        s.finish();
        let x = render(&s);
        assert_eq!(x.matches("<testcase ").count(), 3);
        assert_eq!(x.matches("<failure ").count(), 1);
        assert_eq!(x.matches("<error ").count(), 1);
        assert!(x.contains("failures=\"1\" errors=\"1\""), "{x}");
        assert!(x.contains("name=\"b seed 2\""), "{x}");
        assert!(x.contains("expected invalid &amp; got valid"), "{x}");
        assert!(
            x.contains("&quot;store&quot;") && x.contains("c&lt;1&gt;"),
            "{x}"
        );
    }
}
