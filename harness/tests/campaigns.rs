//! `ordeal campaign` end to end against the fake store: a two-seed campaign (a clean test
//! expected valid, a planted bug expected invalid) run as two shards and merged, with the index,
//! summary, junit and detection figures checked against exactly those runs; a campaign whose
//! expectation fails exits non-zero, and one whose test crashes reports it as an error;
//! `--estimate` runs nothing and puts the nightly campaign under two hours.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ordeal-camp-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Short kill-the-leader runs on the proxy backend: the fake with `--bug lost-writes` loses
/// acknowledged writes on every kill of node 1.
fn campaign_file(dir: &Path, tests: &str) -> PathBuf {
    let path = dir.join("tiny.toml");
    let text = format!(
        "[defaults]\nnodes = 3\ntime_limit_s = 4\nrate = 300\nconcurrency = 6\nnet = \"proxy\"\n\
         nemesis = \"kill\"\nnemesis_targets = \"leader\"\nnemesis_interval_ms = \"400-700\"\n\
         nemesis_hold_ms = \"300-500\"\nrecovery_s = 1\nstore_bin = {:?}\n{tests}",
        env!("CARGO_BIN_EXE_ordeal-fake-kv")
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `ordeal campaign ARGS`; returns the exit code, stdout and the campaign directory it
/// reported.
fn campaign(args: &[&str]) -> (i32, String, Option<PathBuf>) {
    let out = Command::new(env!("CARGO_BIN_EXE_ordeal"))
        .arg("campaign")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ordeal campaign");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let dir = stderr
        .lines()
        .find_map(|l| l.strip_prefix("ordeal campaign: results in "))
        .map(PathBuf::from);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &stderr,
        dir,
    )
}

fn summary(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

fn ids(s: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = s["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn two_shards_merge_into_one_campaign_with_detection_figures() {
    let dir = temp_dir("shards");
    let file = campaign_file(
        &dir,
        "seeds = \"1-2\"\n[[test]]\nname = \"clean\"\nexpect = \"valid\"\n\
         [[test]]\nname = \"lost\"\nbug = \"lost-writes\"\nexpect = \"invalid\"\n",
    );
    let out = dir.join("campaigns");
    let (f, o) = (file.to_str().unwrap(), out.to_str().unwrap());
    let (code1, log1, shard1) = campaign(&[f, "--shard", "1/2", "--out", o, "--keep", "failures"]);
    assert_eq!(code1, 0, "{log1}");
    let (code2, log2, shard2) = campaign(&[f, "--shard", "2/2", "--out", o, "--jobs", "2"]);
    assert_eq!(code2, 0, "{log2}");
    let (shard1, shard2) = (shard1.unwrap(), shard2.unwrap());
    // Plan order is clean#1, clean#2, lost#1, lost#2: every second run to each slice.
    assert_eq!(ids(&summary(&shard1)), ["clean#1", "lost#1"]);
    assert_eq!(ids(&summary(&shard2)), ["clean#2", "lost#2"]);
    assert_eq!(summary(&shard1)["shard"], "1/2");
    // --keep failures: runs that met their expectations lose their histories, keep the rest.
    for r in summary(&shard1)["runs"].as_array().unwrap() {
        let run_dir = shard1.join(r["run_dir"].as_str().unwrap());
        assert!(
            !run_dir.join("history.jsonl").exists(),
            "{}",
            run_dir.display()
        );
        assert!(run_dir.join("results.json").is_file());
    }
    for r in summary(&shard2)["runs"].as_array().unwrap() {
        assert!(shard2
            .join(r["run_dir"].as_str().unwrap())
            .join("history.jsonl")
            .is_file());
    }

    let (code, log, merged) = campaign(&[
        "merge",
        shard1.to_str().unwrap(),
        shard2.to_str().unwrap(),
        "--out",
        o,
    ]);
    assert_eq!(code, 0, "{log}");
    let merged = merged.unwrap();
    let s = summary(&merged);
    assert_eq!(ids(&s), ["clean#1", "clean#2", "lost#1", "lost#2"]);
    assert_eq!(
        (
            s["passed"].as_u64(),
            s["failed"].as_u64(),
            s["errors"].as_u64()
        ),
        (Some(4), Some(0), Some(0))
    );
    assert_eq!(s["merged_from"].as_array().unwrap().len(), 2);
    let runs = s["runs"].as_array().unwrap();
    for r in runs {
        let lost = r["test"] == "lost";
        assert_eq!(r["got"], if lost { "invalid" } else { "valid" }, "{r}");
        assert_eq!(r["bug"].as_str(), lost.then_some("lost-writes"));
        assert_eq!(r["workload"], "register");
        assert_eq!(r["nemesis"], "kill");
        assert_eq!(r["target"], "ordeal-fake-kv");
        assert!(r["ops_per_s"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["availability"].as_f64().is_some(), "{r}");
        // Every report the merged index links to was copied in.
        let report = merged
            .join(r["run_dir"].as_str().unwrap())
            .join("report.html");
        assert!(report.is_file(), "{}", report.display());
        // The counterexample says when the first anomalous op completed: within the test.
        if lost {
            let t = r["first_anomaly_s"]
                .as_f64()
                .unwrap_or_else(|| panic!("{r}"));
            assert!(t > 0.0 && t < 6.0, "{r}");
        } else {
            assert!(r["first_anomaly_s"].is_null(), "{r}");
        }
    }
    // Detection: the one planted bug, caught by both seeds, at the median of their times.
    let d = s["detection"].as_array().unwrap();
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(
        (
            d[0]["bug"].as_str(),
            d[0]["runs"].as_u64(),
            d[0]["caught"].as_u64()
        ),
        (Some("lost-writes"), Some(2), Some(2))
    );
    assert_eq!(d[0]["fraction"].as_f64(), Some(1.0));
    let times: Vec<f64> = runs
        .iter()
        .filter(|r| r["test"] == "lost")
        .map(|r| r["first_anomaly_s"].as_f64().unwrap())
        .collect();
    let median = d[0]["median_first_anomaly_s"].as_f64().unwrap();
    assert!(
        (median - (times[0] + times[1]) / 2.0).abs() < 1e-9,
        "{median} {times:?}"
    );

    let junit = std::fs::read_to_string(merged.join("junit.xml")).unwrap();
    assert_eq!(junit.matches("<testcase ").count(), 4, "{junit}");
    assert!(
        !junit.contains("<failure") && !junit.contains("<error"),
        "{junit}"
    );
    for name in ["clean seed 1", "clean seed 2", "lost seed 1", "lost seed 2"] {
        assert!(junit.contains(&format!("name=\"{name}\"")), "{junit}");
    }
    let index = std::fs::read_to_string(merged.join("index.html")).unwrap();
    assert_eq!(
        index.matches("/report.html\">report</a>").count(),
        4,
        "{index}"
    );
    assert!(
        index.contains("Detection power") && index.contains("2 of 2"),
        "{index}"
    );
    let png = std::fs::read(merged.join("detection.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "detection.png is not a PNG");
    // results/index.html (beside the campaigns directory) lists the two slices and the merge.
    let all = std::fs::read_to_string(dir.join("index.html")).unwrap();
    assert_eq!(all.matches("<a href=\"campaigns/tiny/").count(), 3, "{all}");
    assert!(
        all.contains("merged") && all.contains("1/2") && all.contains("2/2"),
        "{all}"
    );

    // A merge that lacks a slice reports the missing runs as errors and fails.
    let (code, log, partial) = campaign(&["merge", shard1.to_str().unwrap(), "--out", o]);
    assert_eq!(code, 1, "{log}");
    let s = summary(&partial.unwrap());
    assert_eq!(s["errors"].as_u64(), Some(2), "{s}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missed_expectation_fails_and_a_crashed_test_is_an_error() {
    let dir = temp_dir("fail");
    let file = campaign_file(
        &dir,
        "seed = 3\n[[test]]\nname = \"wrongly-expected\"\nexpect = \"invalid\"\n\
         [[test]]\nname = \"crashes\"\nexpect = \"valid\"\nstore_bin = \"/nonexistent/store\"\n",
    );
    let out = dir.join("campaigns");
    let (code, log, cdir) = campaign(&[file.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(code, 1, "{log}");
    let cdir = cdir.unwrap_or_else(|| panic!("{log}"));
    let s = summary(&cdir);
    assert_eq!(
        (
            s["passed"].as_u64(),
            s["failed"].as_u64(),
            s["errors"].as_u64()
        ),
        (Some(0), Some(1), Some(1)),
        "{s}"
    );
    let runs = s["runs"].as_array().unwrap();
    // Errors first, then mismatches.
    assert_eq!(runs[0]["test"], "crashes");
    assert_eq!(runs[0]["got"], "error");
    assert_eq!(runs[1]["got"], "valid");
    assert!(
        runs[1]["explanation"]
            .as_str()
            .unwrap()
            .starts_with("expected invalid, got valid"),
        "{}",
        runs[1]
    );
    let junit = std::fs::read_to_string(cdir.join("junit.xml")).unwrap();
    assert_eq!(junit.matches("<failure ").count(), 1, "{junit}");
    assert_eq!(junit.matches("<error ").count(), 1, "{junit}");
    assert!(junit.contains("failures=\"1\" errors=\"1\""), "{junit}");
    let index = std::fs::read_to_string(cdir.join("index.html")).unwrap();
    let (crash, wrong) = (
        index.find("crashes").unwrap(),
        index.find("wrongly-expected").unwrap(),
    );
    assert!(
        crash < wrong,
        "unexpected results first, errors before mismatches"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn estimate_runs_nothing_and_puts_the_nightly_under_two_hours() {
    let dir = temp_dir("estimate");
    let out = dir.join("campaigns");
    let nightly = concat!(env!("CARGO_MANIFEST_DIR"), "/../campaigns/nightly.toml");
    let (code, log, made) = campaign(&[nightly, "--estimate", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{log}");
    assert!(
        made.is_none() && !out.exists(),
        "--estimate ran something: {log}"
    );
    assert!(log.contains("bug-non-atomic-txn-5n#12"), "{log}");
    let estimate = |log: &str| -> u64 {
        log.split("estimated wall time: ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no estimate in {log}"))
    };
    let one_job = estimate(&log);
    assert!(one_job > 12 * 30 && one_job < 2 * 3600, "{log}");
    // Two jobs share the runs; a slice has only its share.
    let (_, log2, _) = campaign(&[
        nightly,
        "--estimate",
        "--jobs",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(estimate(&log2) < one_job, "{log2}");
    let (_, slice, _) = campaign(&[
        nightly,
        "--estimate",
        "--shard",
        "1/4",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        slice.matches("-5n").count() + slice.matches("-3n").count(),
        3,
        "{slice}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
