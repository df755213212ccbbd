//! `ordeal check`: exit codes 0 / 1 / 2 / 255, messages naming file and line.

use std::process::Command;

fn testdata() -> std::path::PathBuf {
    ordeal_checker::read::shared_testdata("porcupine").unwrap_or_else(|e| panic!("{e}"))
}

fn ordeal(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ordeal"))
        .args(args)
        .output()
        .expect("run ordeal");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn verdicts_and_exit_codes() {
    let dir = testdata();
    let path = |p: &str| dir.join(p).to_string_lossy().into_owned();
    let (code, out, _) = ordeal(&[
        "check",
        &path("jepsen/etcd_002.log"),
        "--model",
        "cas-register",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("valid: linearizable"), "{out}");

    let html = std::env::temp_dir().join(format!("ordeal-check-{}.html", std::process::id()));
    let (code, out, _) = ordeal(&[
        "check",
        &path("jepsen/etcd_000.log"),
        "--model",
        "cas-register",
        "--failed-cas",
        "observed",
        "--html",
        html.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cannot take effect"), "{out}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<svg") && page.contains("op stuck"));
    let _ = std::fs::remove_file(&html);

    let (code, out, _) = ordeal(&[
        "check",
        &path("jepsen/etcd_095.log"),
        "--model",
        "cas-register",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("empty history: valid"), "{out}");

    let (code, out, _) = ordeal(&["check", &path("kv/c50-bad.txt"), "--model", "kv", "--json"]);
    assert_eq!(code, 1);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["verdict"], "invalid");
}

#[test]
fn bad_input_is_255_with_file_and_line() {
    let dir = std::env::temp_dir().join(format!("ordeal-check-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("h.jsonl");
    std::fs::write(
        &file,
        "{\"index\":0,\"process\":0,\"type\":\"invoke\",\"f\":\"cas\",\"value\":3}\n\
         {\"index\":1,\"process\":0,\"type\":\"ok\",\"f\":\"cas\",\"value\":3}\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let (code, _, err) = ordeal(&["check", f, "--model", "cas-register"]);
    assert_eq!(code, 255);
    assert!(err.contains("h.jsonl:1:"), "{err}");
    let (code, _, err) = ordeal(&["check", f, "--model", "nope"]);
    assert_eq!(code, 255);
    assert!(err.contains("unknown model"), "{err}");
    let (code, _, err) = ordeal(&["check", "/nonexistent/h.jsonl", "--model", "register"]);
    assert_eq!(code, 255);
    assert!(err.contains("/nonexistent/h.jsonl"), "{err}");
    std::fs::write(
        &file,
        "{\"index\":0,\"process\":0,\"type\":\"ok\",\"f\":\"read\"}\n",
    )
    .unwrap();
    let (code, _, err) = ordeal(&["check", f, "--model", "register"]);
    assert_eq!(code, 255);
    assert!(err.contains("h.jsonl:1"), "{err}");
    // The txn models read the file streaming; their errors name the line too.
    std::fs::write(
        &file,
        "{\"index\":0,\"process\":0,\"type\":\"invoke\",\"f\":\"txn\",\"value\":[[\"append\",1,1]]}\n\
         {\"index\":1,\"process\":0,\"type\":\"ok\",\"f\":\"txn\",\"value\":[[\"append\",1,1]]}\n\
         {\"index\":2,\"process\":0,\"type\":\"ok\",\"f\":\"txn\",\"value\":[[\"append\",1,1]]}\n",
    )
    .unwrap();
    let (code, _, err) = ordeal(&["check", f, "--model", "list-append"]);
    assert_eq!(code, 255);
    assert!(
        err.contains("h.jsonl:3:") && err.contains("no pending invoke"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `ordeal check --model list-append|rw-register` on the Elle test histories: the exit code
/// follows the expected verdict of verdicts.tsv for both serializable and strict-serializable,
/// and an invalid verdict prints the anomaly's explanation.
#[test]
fn txn_models_on_elle_histories() {
    let dir = ordeal_checker::read::shared_testdata("elle").unwrap_or_else(|e| panic!("{e}"));
    let tsv = std::fs::read_to_string(dir.join("verdicts.tsv"))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join("verdicts.tsv").display()));
    let mut checked = 0;
    for line in tsv.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let [file, workload, serializable, strict, ..] = cols[..] else {
            panic!("bad verdicts.tsv line {line:?}");
        };
        // The huge SCC is the checker's own benchmark, too slow for a CLI test.
        if file.starts_with("huge") {
            continue;
        }
        let path = dir.join(file).to_string_lossy().into_owned();
        for (consistency, expected) in [
            ("serializable", serializable),
            ("strict-serializable", strict),
        ] {
            let (code, out, err) = ordeal(&[
                "check",
                &path,
                "--model",
                workload,
                "--consistency",
                consistency,
            ]);
            let want = match expected {
                "yes" => 0,
                "no" => 1,
                _ => 2,
            };
            assert_eq!(code, want, "{file} {consistency}: {out}{err}");
            if want == 1 {
                assert!(out.contains(": invalid: "), "{file}: {out}");
                // Every anomaly is printed with a sentence of explanation.
                assert!(out.lines().count() > 2, "{file}: {out}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} checks ran");

    let g0 = dir.join("list-append-anomaly-g0-cycle.json");
    let g0 = g0.to_str().unwrap();
    let (code, out, _) = ordeal(&["check", g0, "--model", "list-append"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("G0") && out.contains("a contradiction"),
        "{out}"
    );
    let (code, out, _) = ordeal(&["check", g0, "--model", "list-append", "--json"]);
    assert_eq!(code, 1);
    let json: serde_json::Value = serde_json::from_str(&out).expect("--json prints JSON");
    assert_eq!(json["verdict"], "invalid");
    // A bad consistency model is the tool failing, not a verdict.
    let (code, _, err) = ordeal(&[
        "check",
        g0,
        "--model",
        "list-append",
        "--consistency",
        "linearish",
    ]);
    assert_eq!(code, 255);
    assert!(err.contains("--consistency"), "{err}");
}
