//! Helpers shared by the integration tests.

/// `sub` of the shared test data; fails naming the missing directory and `.ci/fetch-testdata`.
#[allow(dead_code)] // not every test file uses every helper
pub fn testdata(sub: &str) -> std::path::PathBuf {
    ordeal_checker::read::shared_testdata(sub).unwrap_or_else(|e| panic!("{e}"))
}

/// The rows of a verdicts.tsv (header skipped, blank lines dropped), split on tabs.
#[allow(dead_code)]
pub fn tsv_rows(path: &std::path::Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// rw-register: the verdict, how it was reached, and every anomaly's explanation.
#[allow(dead_code)]
pub fn explanation(r: &ordeal_checker::txn::TxnResult) -> String {
    format!(
        "verdict {} by {:?}; anomalies {:?}; notes {:?}\n{}",
        r.verdict,
        r.decided_by,
        r.anomaly_types,
        r.notes,
        r.anomalies
            .iter()
            .map(|a| a.explanation.as_str())
            .collect::<Vec<_>>()
            .join("\n---\n")
    )
}

/// The proof is whole and each of its cycles holds together: each cycle is closed, refutes
/// exactly one supposed order, and every other edge is known, derived, the case's or forced
/// by a lemma the proof shows. Returns the proof.
#[allow(dead_code)]
pub fn assert_proof(r: &ordeal_checker::txn::TxnResult) -> &ordeal_checker::txn::ProofReport {
    let proof = r
        .exact
        .as_ref()
        .and_then(|e| e.proof.as_ref())
        .unwrap_or_else(|| panic!("no proof: {}", explanation(r)));
    assert_eq!(proof.status, "complete", "{}", explanation(r));
    assert!(!proof.cycles.is_empty(), "{}", explanation(r));
    let lemmas: std::collections::HashSet<usize> =
        proof.cycles.iter().filter_map(|c| c.lemma).collect();
    for c in &proof.cycles {
        let steps = &c.steps;
        assert!(steps.len() >= 2, "{}: {steps:#?}", c.refutes);
        for (i, s) in steps.iter().enumerate() {
            let next = &steps[(i + 1) % steps.len()];
            assert_eq!(s.to, next.from, "{}: not a cycle: {steps:#?}", c.refutes);
            let basis = s.basis.as_deref().unwrap_or("none");
            assert!(
                ["known", "derived", "supposed", "case", "forced"].contains(&basis),
                "{}: step {} rests on {basis}: {}",
                c.refutes,
                s.text,
                explanation(r)
            );
            if basis == "forced" {
                let cited: usize = s
                    .text
                    .split("see (")
                    .nth(1)
                    .and_then(|t| t.split(')').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("a forced step cites no lemma: {}", s.text));
                assert!(
                    lemmas.contains(&cited),
                    "lemma ({cited}) is not shown: {}",
                    explanation(r)
                );
            }
        }
        let supposed = steps
            .iter()
            .filter(|s| s.basis.as_deref() == Some("supposed"))
            .count();
        // A cycle of known edges alone supposes nothing.
        let expected = usize::from(c.refutes != "the known edges");
        assert_eq!(supposed, expected, "{}: {}", c.refutes, explanation(r));
    }
    for a in &r.anomalies {
        assert!(
            !a.explanation.contains("in this order") && !a.explanation.contains("Partial"),
            "{}",
            a.explanation
        );
        assert!(
            a.steps
                .iter()
                .all(|s| s.basis.as_deref() != Some("guessed")),
            "{}",
            a.explanation
        );
    }
    proof
}
