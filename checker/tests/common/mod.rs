//! Helpers shared by the integration tests.

/// `sub` of the shared test data; fails naming the missing directory and `.ci/fetch-testdata`.
#[allow(dead_code)] // not every test file uses every helper
pub fn testdata(sub: &str) -> std::path::PathBuf {
    ordeal_checker::read::shared_testdata(sub).unwrap_or_else(|e| panic!("{e}"))
}

/// The rows of a verdicts.tsv (header skipped, blank lines dropped), split on tabs.
pub fn tsv_rows(path: &std::path::Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}
