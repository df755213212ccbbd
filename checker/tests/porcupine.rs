//! Every history in porcupine's test data gets the verdict porcupine's own tests expect, under
//! the model verdicts.tsv names (the etcd logs under both readings of a failed cas).

use ordeal_checker::linear::{check_kind, CheckOptions, ModelKind, ModelOptions};
use ordeal_checker::read::{read_path, Format};
use ordeal_checker::Verdict;
use std::time::Duration;

mod common;

fn rows() -> Vec<Vec<String>> {
    common::tsv_rows(&common::testdata("porcupine").join("verdicts.tsv"))
}

fn options() -> CheckOptions {
    CheckOptions {
        timeout: Some(Duration::from_secs(120)),
        ..CheckOptions::default()
    }
}

#[test]
fn every_porcupine_history_gets_the_expected_verdict() {
    let dir = common::testdata("porcupine");
    let rows = rows();
    assert!(rows.len() >= 113, "expected the full porcupine set");
    let mut failures = Vec::new();
    let mut checked = 0;
    for row in &rows {
        let (file, model, expected) = (&row[0], &row[1], &row[2]);
        let kind: ModelKind = model.parse().unwrap();
        let history = read_path(&dir.join(file), Format::Auto).unwrap();
        let want = match expected.as_str() {
            "ok" | "none" => Verdict::Valid,
            "illegal" => Verdict::Invalid,
            other => panic!("{file}: unknown expectation {other}"),
        };
        let readings: &[bool] = if kind == ModelKind::CasRegister {
            &[false, true]
        } else {
            &[false]
        };
        for &failed_cas_observed in readings {
            let report = check_kind(
                kind,
                ModelOptions {
                    failed_cas_observed,
                },
                &history,
                &options(),
            )
            .unwrap_or_else(|e| panic!("{file}: {e}"));
            checked += 1;
            if report.verdict != want {
                failures.push(format!(
                    "{file} ({model}, failed cas observed: {failed_cas_observed}): expected \
                     {want}, got {} ({})",
                    report.verdict, report.summary
                ));
            }
            if want == Verdict::Invalid {
                let cx = report.counterexample.as_ref().expect("a counterexample");
                assert!(!cx.prefixes.is_empty(), "{file}: no prefix");
            }
            if expected == "none" {
                assert_eq!(report.summary, "empty history: valid", "{file}");
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} wrong verdicts:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked > 200);
}
