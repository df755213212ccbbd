//! The GitHub workflows and the CI scripts, checked as far as this machine can: both workflow
//! files parse as YAML and have the steps a fresh runner needs (tools installed, cargo cached,
//! build as the runner user, only the campaign as root, results and junit uploaded, the nightly
//! sharded and merged within its time limit); every script they call exists and is executable;
//! and `.ci/fetch-testdata`, run offline against local copies of its sources, produces exactly
//! the layout and verdicts of ../shared/testdata.

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
            seeds * (t.time_limit_s.or(c.defaults.time_limit_s).unwrap_or(60) + 60)
        })
        .sum();
    let per_shard_min = total_s / n / 60 + 1;
    assert!(
        per_shard_min + 10 < limit,
        "{per_shard_min} minutes of runs per shard (+10 to build)"
    );
}

fn sources_dir() -> PathBuf {
    std::env::var_os("ORDEAL_TESTDATA_SOURCES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/testdata-sources"))
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

#[test]
fn fetch_testdata_offline_reproduces_the_shared_test_data_exactly() {
    let shared = ordeal_checker::read::shared_testdata_dir();
    for sub in ["porcupine", "elle"] {
        ordeal_checker::read::shared_testdata(sub).unwrap_or_else(|e| panic!("{e}"));
    }
    let sources = sources_dir();
    assert!(
        sources.join("porcupine").is_dir(),
        "{}: missing: the local copies of porcupine, elle and elle-cli that \
         .ci/fetch-testdata reads offline; run .ci/fetch-testdata once with network (it keeps \
         them there) or set ORDEAL_TESTDATA_SOURCES",
        sources.display()
    );
    let out = std::env::temp_dir().join(format!("ordeal-fetch-testdata-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let result = Command::new(repo().join(".ci/fetch-testdata"))
        .arg("--sources")
        .arg(&sources)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
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
    // The verdict tables were derived, not copied: a changed expectation in a source changes them.
    let elle = std::fs::read_to_string(out.join("elle/verdicts.tsv")).unwrap();
    assert!(elle.contains("list-append-anomaly-g0-cycle.json\tlist-append\tno\tno\tG0\t"));
    std::fs::remove_dir_all(&out).unwrap();

    // Refusals name what is wrong: an empty source directory, an output that exists.
    let empty = std::env::temp_dir().join(format!("ordeal-fetch-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
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
