//! The GitHub workflows and the CI scripts, checked as far as this machine can: both workflow
//! files parse as YAML and have the steps a fresh runner needs (tools installed, cargo cached,
//! build as the runner user, only the campaign as root, results and junit uploaded, the nightly
//! sharded and merged within its time limit); every script they call exists and is executable;
//! and `.ci/fetch-testdata`, run offline against local copies of its sources (the real ones
//! where this machine has them, else a tree of the same shape built from ../shared/testdata),
//! produces exactly the layout and verdicts of ../shared/testdata.

use serde_yaml::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn workflow(name: &str) -> Value {
    let path = repo().join(".github/workflows").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn steps<'a>(wf: &'a Value, job: &str) -> &'a Vec<Value> {
    wf["jobs"][job]["steps"]
        .as_sequence()
        .unwrap_or_else(|| panic!("job {job} has no steps"))
}

fn runs(steps: &[Value]) -> Vec<String> {
    steps
        .iter()
        .filter_map(|s| s["run"].as_str().map(str::to_string))
        .collect()
}

fn uses<'a>(steps: &'a [Value], action: &str) -> Vec<&'a Value> {
    steps
        .iter()
        .filter(|s| s["uses"].as_str().is_some_and(|u| u.starts_with(action)))
        .collect()
}

/// Position of the first step whose `run` contains `needle`.
fn step_index(steps: &[Value], needle: &str) -> usize {
    steps
        .iter()
        .position(|s| s["run"].as_str().is_some_and(|r| r.contains(needle)))
        .unwrap_or_else(|| panic!("no step runs {needle:?}"))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Every `.ci/...` script a step calls exists and is executable (relative to the step's
/// working directory, which is the repository either way).
fn scripts_exist(wf: &Value, file: &str) -> usize {
    let mut checked = 0;
    for (job, body) in wf["jobs"].as_mapping().unwrap() {
        for run in runs(body["steps"].as_sequence().unwrap()) {
            for word in run.split_whitespace() {
                let word = word.trim_start_matches("./");
                if word.starts_with(".ci/") || word.starts_with("campaigns/") {
                    let path = repo().join(word);
                    if word.starts_with(".ci/") {
                        assert!(
                            is_executable(&path),
                            "{file}: job {job:?} calls {word}, which is missing or not executable"
                        );
                    } else {
                        assert!(
                            path.is_file(),
                            "{file}: job {job:?} reads {word}, which is missing"
                        );
                    }
                    checked += 1;
                }
            }
        }
    }
    checked
}

/// The cargo cache: registry, git checkouts and the target directory.
fn caches_cargo(steps: &[Value]) {
    let cache = uses(steps, "actions/cache@");
    assert_eq!(cache.len(), 1, "one actions/cache step");
    let paths = cache[0]["with"]["path"].as_str().unwrap();
    for p in ["~/.cargo/registry", "~/.cargo/git", "target"] {
        assert!(paths.contains(p), "the cache lacks {p}: {paths}");
    }
    assert!(cache[0]["with"]["key"]
        .as_str()
        .unwrap()
        .contains("Cargo.lock"));
}

/// Built as the runner user (cargo lives in its home): no sudo before cargo or make; the
/// campaign alone runs as root, with PATH passed through.
fn root_only_for_the_campaign(steps: &[Value]) {
    for run in runs(steps) {
        if run.contains("sudo") {
            assert!(
                run.contains("sudo -E env \"PATH=$PATH\" ./target/release/ordeal campaign"),
                "only the campaign runs as root, with PATH: {run}"
            );
        }
        assert!(
            !run.contains("sudo make") && !run.contains("sudo cargo"),
            "{run}"
        );
    }
    let install = step_index(steps, ".ci/install-tools");
    assert!(install < step_index(steps, "ordeal campaign"));
}

#[test]
fn ci_workflow_installs_fetches_data_verifies_and_uploads() {
    let wf = workflow("ci.yml");
    let verify = steps(&wf, "verify");
    caches_cargo(verify);
    // The data step comes before the tests, which then find ../shared/testdata.
    assert!(step_index(verify, ".ci/fetch-testdata") < step_index(verify, ".ci/run"));
    assert!(step_index(verify, ".ci/install-tools") < step_index(verify, ".ci/run"));
    let checkout = &uses(verify, "actions/checkout@")[0];
    assert_eq!(
        checkout["with"]["path"].as_str(),
        Some("main"),
        "so that ../shared sits beside it"
    );
    let check = steps(&wf, "check");
    caches_cargo(check);
    root_only_for_the_campaign(check);
    assert!(
        step_index(check, "make build") < step_index(check, "ordeal campaign campaigns/check.toml")
    );
    assert!(
        step_index(check, "make build")
            < step_index(check, "ordeal campaign campaigns/regressions.toml")
    );
    let uploads: Vec<String> = uses(check, "actions/upload-artifact@")
        .iter()
        .map(|s| s["with"]["path"].as_str().unwrap().to_string())
        .collect();
    assert!(uploads.iter().any(|p| p == "results/"), "{uploads:?}");
    assert!(
        uploads.iter().any(|p| p.ends_with("junit.xml")),
        "{uploads:?}"
    );
    for u in uses(check, "actions/upload-artifact@") {
        assert_eq!(
            u["if"].as_str(),
            Some("always()"),
            "upload even when the campaign fails"
        );
    }
    assert!(scripts_exist(&wf, "ci.yml") >= 4);
    // .ci/run runs make verify, and Makefile's verify is fmt check + clippy -D warnings + tests.
    let run = std::fs::read_to_string(repo().join(".ci/run")).unwrap();
    assert!(
        run.contains("make verify") && run.contains("ORDEAL_REQUIRE_ETCD=1"),
        "{run}"
    );
    let makefile = std::fs::read_to_string(repo().join("Makefile")).unwrap();
    let verify_target = makefile
        .split("\nverify:")
        .nth(1)
        .unwrap()
        .split("\n\n")
        .next()
        .unwrap();
    for part in [
        "fmt --all -- --check",
        "clippy --workspace --all-targets --release -- -D warnings",
        "test",
    ] {
        assert!(
            verify_target.contains(part),
            "make verify lacks {part}: {verify_target}"
        );
    }
    for script in [".ci/run", ".ci/install-tools"] {
        let st = Command::new("bash")
            .arg("-n")
            .arg(repo().join(script))
            .status()
            .unwrap();
        assert!(st.success(), "{script} has a syntax error");
    }
}

#[test]
fn nightly_is_a_matrix_of_shards_then_a_merge_within_the_time_limit() {
    let wf = workflow("nightly.yml");
    let shard = &wf["jobs"]["shard"];
    let limit = shard["timeout-minutes"].as_u64().unwrap();
    assert!(limit <= 90, "a shard may take {limit} minutes");
    let matrix: Vec<u64> = shard["strategy"]["matrix"]["shard"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let n = matrix.len() as u64;
    assert_eq!(matrix, (1..=n).collect::<Vec<_>>());
    let s = steps(&wf, "shard");
    caches_cargo(s);
    root_only_for_the_campaign(s);
    let run = s[step_index(s, "ordeal campaign")]["run"].as_str().unwrap();
    assert!(
        run.contains(&format!("--shard ${{{{ matrix.shard }}}}/{n}"))
            && run.contains("campaigns/nightly.toml"),
        "{run}"
    );
    assert!(!uses(s, "actions/upload-artifact@").is_empty());
    let merge = &wf["jobs"]["merge"];
    assert_eq!(merge["needs"].as_str(), Some("shard"));
    assert_eq!(
        merge["if"].as_str(),
        Some("always()"),
        "merge (and report) even when a shard fails"
    );
    let m = steps(&wf, "merge");
    assert!(uses(m, "actions/download-artifact@").len() == 1);
    assert!(step_index(m, "ordeal campaign merge") > 0);
    let uploads: Vec<String> = uses(m, "actions/upload-artifact@")
        .iter()
        .map(|s| s["with"]["path"].as_str().unwrap().to_string())
        .collect();
    assert!(
        uploads.iter().any(|p| p.ends_with("junit.xml")),
        "{uploads:?}"
    );
    assert!(scripts_exist(&wf, "nightly.yml") >= 2);
    // The nightly's slices fit the limit: the sum of the campaign's test times (plus a minute
    // of start-up, recovery and checking each) over n runners, every test's seeds counted.
    let file = repo().join("campaigns/nightly.toml");
    let c = ordeal::campaign::load(&file).unwrap();
    let runs = ordeal::campaign::plan(&c, &file, None, None).unwrap();
    let total_s: u64 = c
        .tests
        .iter()
        .map(|t| {
            let seeds = runs
                .iter()
                .filter(|r| r.test == t.display_name(&c.defaults))
                .count() as u64;
            seeds * (t.test_args(&c.defaults).unwrap().time_limit_s + 60)
        })
        .sum();
    let per_shard_min = total_s / n / 60 + 1;
    assert!(
        per_shard_min + 10 < limit,
        "{per_shard_min} minutes of runs per shard (+10 to build)"
    );
}

/// The real sources, when this machine has them: ORDEAL_TESTDATA_SOURCES, else where
/// `.ci/fetch-testdata` keeps what it fetched.
fn real_sources() -> Option<PathBuf> {
    let dir = std::env::var_os("ORDEAL_TESTDATA_SOURCES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/testdata-sources"));
    ["porcupine", "elle", "elle-cli"]
        .iter()
        .all(|s| dir.join(s).is_dir())
        .then_some(dir)
}

fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// A fresh, empty temp directory unique to this process and `tag`.
fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ordeal-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("{} -> {}: {e}", from.display(), to.display()));
}

/// The rows of a verdicts.tsv, header skipped, each split at tabs.
fn tsv_rows(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .skip(1)
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// A source tree of the shape `.ci/fetch-testdata --sources` reads, built from
/// ../shared/testdata alone, for machines without the real sources (CI has no GitHub access):
/// the histories at the paths the script reads them from, porcupine's LICENSE.md, Elle's
/// `huge-scc.edn` un-gzipped, elle-cli's `-result.json` files, and a `porcupine_test.go`
/// written here with one `checkJepsen`/`checkKv` call per expectation in porcupine's
/// verdicts.tsv. The script's whole offline path (layout, copying, gzip, parsing the
/// expectations, the verdict tables) runs on it; only the git fetch is left out.
fn synthetic_sources(shared: &Path, tag: &str) -> PathBuf {
    let root = scratch(tag);
    let (porcupine, elle) = (shared.join("porcupine"), shared.join("elle"));
    let data = root.join("porcupine/test_data");
    for sub in ["jepsen", "kv"] {
        for f in files_under(&porcupine.join(sub)) {
            copy(&porcupine.join(sub).join(&f), &data.join(sub).join(&f));
        }
    }
    copy(
        &porcupine.join("LICENSE-porcupine.md"),
        &root.join("porcupine/LICENSE.md"),
    );
    // Go test functions in porcupine's own syntax; a `none` row is a log with no check.
    let mut go = String::from("package porcupine\n\nimport \"testing\"\n");
    for (i, row) in tsv_rows(&porcupine.join("verdicts.tsv")).iter().enumerate() {
        let (file, model, expected) = (&row[0], &row[1], &row[2]);
        let ok = match expected.as_str() {
            "ok" => true,
            "illegal" => false,
            "none" => continue,
            other => panic!("porcupine/verdicts.tsv: {file}: unknown verdict {other:?}"),
        };
        let call = if let Some(n) = file
            .strip_prefix("jepsen/etcd_")
            .and_then(|r| r.strip_suffix(".log"))
        {
            format!("checkJepsen(t, {}, {ok})", n.parse::<u32>().unwrap())
        } else {
            let name = file
                .strip_prefix("kv/")
                .and_then(|r| r.strip_suffix(".txt"))
                .unwrap_or_else(|| panic!("porcupine/verdicts.tsv: unexpected path {file}"));
            format!("checkKv(t, \"{name}\", {ok}, {})", model == "kv")
        };
        go.push_str(&format!(
            "\nfunc TestCase{i:03}(t *testing.T) {{\n\t{call}\n}}\n"
        ));
    }
    std::fs::write(root.join("porcupine/porcupine_test.go"), go).unwrap();
    // elle-cli's cases are the `.json` rows (with their `-result.json` when there is one);
    // the rest are Elle's histories, which the script gzips itself where the name says so.
    let cli = root.join("elle-cli/test/test-data");
    for row in tsv_rows(&elle.join("verdicts.tsv")) {
        let name = &row[0];
        if let Some(case) = name.strip_suffix(".json") {
            copy(&elle.join(name), &cli.join(name));
            let result = format!("{case}-result.json");
            if elle.join(&result).exists() {
                copy(&elle.join(&result), &cli.join(&result));
            }
        } else if let Some(plain) = name.strip_suffix(".gz") {
            let out = Command::new("gzip")
                .arg("-dc")
                .arg(elle.join(name))
                .output()
                .unwrap();
            assert!(out.status.success(), "gzip -dc {name}");
            let to = root.join("elle/histories").join(plain);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::write(to, out.stdout).unwrap();
        } else {
            copy(&elle.join(name), &root.join("elle/histories").join(name));
        }
    }
    root
}

/// Runs `.ci/fetch-testdata --sources` on `sources` into a fresh directory and returns it.
fn fetch_testdata_offline(sources: &Path, tag: &str) -> PathBuf {
    let out = scratch(tag).join("testdata");
    let result = Command::new(repo().join(".ci/fetch-testdata"))
        .arg("--sources")
        .arg(sources)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        result.status.success(),
        "fetch-testdata --sources {}: {}",
        sources.display(),
        String::from_utf8_lossy(&result.stderr)
    );
    out
}

#[test]
fn fetch_testdata_offline_reproduces_the_shared_test_data_exactly() {
    let shared = ordeal_checker::read::shared_testdata_dir();
    for sub in ["porcupine", "elle"] {
        ordeal_checker::read::shared_testdata(sub).unwrap_or_else(|e| panic!("{e}"));
    }
    // The real sources where this machine has them; else (CI: no GitHub) a tree of the same
    // shape built from ../shared/testdata, which still runs all of the script but the fetch.
    let (sources, synthetic) = match real_sources() {
        Some(dir) => (dir, false),
        None => (synthetic_sources(&shared, "fetch-sources"), true),
    };
    eprintln!(
        "fetch-testdata runs on the {} sources in {}",
        if synthetic { "synthetic" } else { "real" },
        sources.display()
    );
    let out = fetch_testdata_offline(&sources, "fetch-testdata");
    let (built, want) = (files_under(&out), files_under(&shared));
    assert_eq!(built, want, "layout differs from {}", shared.display());
    for f in &want {
        let (a, b) = (
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(shared.join(f)).unwrap(),
        );
        assert!(
            a == b,
            "{} differs from {}",
            out.join(f).display(),
            shared.join(f).display()
        );
    }
    let elle = std::fs::read_to_string(out.join("elle/verdicts.tsv")).unwrap();
    assert!(elle.contains("list-append-anomaly-g0-cycle.json\tlist-append\tno\tno\tG0\t"));
    std::fs::remove_dir_all(out.parent().unwrap()).unwrap();

    // Refusals name what is wrong: an empty source directory, an output that exists.
    let empty = scratch("fetch-empty");
    let r = Command::new(repo().join(".ci/fetch-testdata"))
        .arg("--sources")
        .arg(&empty)
        .arg("--out")
        .arg(empty.join("out"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        !r.status.success() && err.contains("porcupine: missing"),
        "{err}"
    );
    assert!(!empty.join("out").exists(), "no half-built output");
    let r = Command::new(repo().join(".ci/fetch-testdata"))
        .arg("--sources")
        .arg(&sources)
        .arg("--out")
        .arg(&shared)
        .output()
        .unwrap();
    assert!(!r.status.success() && String::from_utf8_lossy(&r.stderr).contains("not empty"));
    std::fs::remove_dir_all(&empty).unwrap();
    if synthetic {
        std::fs::remove_dir_all(&sources).unwrap();
    }
}

/// The verdict tables come from the sources' expectations, not from anywhere else: flipping
/// one porcupine check and one elle-cli result changes exactly those two rows.
#[test]
fn a_flipped_expectation_in_the_sources_flips_its_verdict_row() {
    let shared = ordeal_checker::read::shared_testdata_dir();
    for sub in ["porcupine", "elle"] {
        ordeal_checker::read::shared_testdata(sub).unwrap_or_else(|e| panic!("{e}"));
    }
    let sources = synthetic_sources(&shared, "fetch-flipped-sources");
    let test_go = sources.join("porcupine/porcupine_test.go");
    let go = std::fs::read_to_string(&test_go).unwrap();
    assert_eq!(go.matches("checkJepsen(t, 2, true)").count(), 1, "{go}");
    std::fs::write(
        &test_go,
        go.replace("checkJepsen(t, 2, true)", "checkJepsen(t, 2, false)"),
    )
    .unwrap();
    let result = sources.join("elle-cli/test/test-data/list-append-anomaly-g0-cycle-result.json");
    let json = std::fs::read_to_string(&result).unwrap();
    assert_eq!(json.matches("\"valid?\":false").count(), 1);
    std::fs::write(&result, json.replace("\"valid?\":false", "\"valid?\":true")).unwrap();

    let out = fetch_testdata_offline(&sources, "fetch-flipped");
    for (table, changed_path, want_row) in [
        (
            "porcupine/verdicts.tsv",
            "jepsen/etcd_002.log",
            "jepsen/etcd_002.log\tcas-register\tillegal",
        ),
        (
            "elle/verdicts.tsv",
            "list-append-anomaly-g0-cycle.json",
            "list-append-anomaly-g0-cycle.json\tlist-append\tyes\tyes\tG0\t",
        ),
    ] {
        let (built, orig) = (tsv_rows(&out.join(table)), tsv_rows(&shared.join(table)));
        assert_eq!(built.len(), orig.len(), "{table}");
        let differing: Vec<_> = built
            .iter()
            .zip(&orig)
            .filter(|(b, o)| b != o)
            .map(|(b, _)| b.join("\t"))
            .collect();
        assert_eq!(differing.len(), 1, "{table}: {differing:?}");
        assert!(
            differing[0].starts_with(changed_path) && differing[0].starts_with(want_row),
            "{table}: {}",
            differing[0]
        );
    }
    std::fs::remove_dir_all(out.parent().unwrap()).unwrap();
    std::fs::remove_dir_all(&sources).unwrap();
}

#[test]
fn missing_test_data_is_an_error_naming_the_directory_and_the_script() {
    let err = ordeal_checker::read::shared_testdata("no-such-set")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no-such-set") && err.contains(".ci/fetch-testdata"),
        "{err}"
    );
}
