//! `ordeal check`: exit codes 0 / 1 / 2 / 255, messages naming file and line.

use std::process::Command;

fn testdata() -> std::path::PathBuf {
    ordeal_checker::read::shared_testdata_dir().join("porcupine")
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
    let _ = std::fs::remove_dir_all(&dir);
}
