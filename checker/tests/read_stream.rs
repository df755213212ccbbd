//! The streaming reader (`txn::read_log`, `read::stream_path`): it must give exactly what
//! reading the whole history and converting it gives, across JSONL batches, EDN chunks, cuts
//! inside multi-line ops, gzip, and with errors named at the right line.

use ordeal_checker::read::{read_path, write_edn, write_jsonl, Format};
use ordeal_checker::txn::{generate, read_log, GenOptions, TxnLog, Workload};
use ordeal_checker::{HistoryError, Outcome, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

mod common;

/// Everything a check sees of a log, with elements decoded (ids may differ between logs).
fn summary(log: &TxnLog) -> Vec<(u64, Outcome, u32, u32, u64, Value)> {
    (0..log.txns.len())
        .map(|t| {
            let x = &log.txns[t];
            (
                x.process,
                x.outcome,
                x.invoke_pos,
                x.complete_pos,
                x.index,
                log.txn_value(t),
            )
        })
        .collect()
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ordeal-read-stream-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn from_whole_file(path: &Path) -> TxnLog {
    let h = read_path(path, Format::Auto).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    TxnLog::from_history(&h).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn streamed(path: &Path) -> TxnLog {
    read_log(path, Format::Auto).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_elle_history_streams_as_it_reads_whole() {
    let dir = common::testdata("elle");
    let mut files = 0;
    for row in common::tsv_rows(&dir.join("verdicts.tsv")) {
        let file = &row[0];
        let path = dir.join(file);
        let whole = from_whole_file(&path);
        let stream = streamed(&path);
        assert!(!whole.txns.is_empty(), "{file}: no transactions");
        assert_eq!(summary(&stream), summary(&whole), "{file}");
        assert_eq!(
            Workload::detect_log(&stream),
            Workload::detect(&read_path(&path, Format::Auto).unwrap()),
            "{file}"
        );
        files += 1;
    }
    assert!(files >= 10, "only {files} rows in verdicts.tsv");
}

/// A generated history big enough for several JSONL batches (16k lines) and EDN chunks
/// (512 KiB), with info and failed txns, in every format we write.
#[test]
fn generated_history_round_trips_through_every_format() {
    let log = generate(&GenOptions {
        workload: Workload::ListAppend,
        txns: 30_000,
        clients: 20,
        info_fraction: 0.05,
        fail_fraction: 0.05,
        seed: 3,
        ..GenOptions::default()
    });
    let want = summary(&log);
    let history = log.to_history();
    let dir = temp_dir("formats");
    let mut jsonl = Vec::new();
    write_jsonl(&history, &mut jsonl).unwrap();
    let mut edn = Vec::new();
    write_edn(&history, &mut edn).unwrap();
    let mut edn_vector = b"[".to_vec();
    edn_vector.extend_from_slice(&edn);
    edn_vector.extend_from_slice(b"]\n");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&jsonl).unwrap();
    let gz = gz.finish().unwrap();
    assert!(edn.len() > 4 * 512 * 1024, "EDN too small to span chunks");
    for (name, bytes) in [
        ("h.jsonl", &jsonl),
        ("h.edn", &edn),
        ("vector.edn", &edn_vector),
        ("h.jsonl.gz", &gz),
        // No extension: the content decides.
        ("history", &jsonl),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let got = streamed(&path);
        assert_eq!(got.txns.len(), want.len(), "{name}");
        assert!(
            summary(&got) == want,
            "{name}: differs from the generated log"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Pretty-printed EDN: every op spans lines, and a nested map opens a line, so some chunk cuts
/// fall inside an op. The reader must notice and still read every op once, in order.
#[test]
fn multi_line_edn_ops_survive_chunk_cuts() {
    let mut text = String::new();
    let n = 12_000;
    for i in 0..n {
        let p = i % 7;
        text.push_str(&format!(
            "{{:type :invoke,\n :process {p},\n :f :txn,\n :meta\n{{:note \"x\"}},\n :value [[:append {i} {i}] [:r {i} nil]]}}\n"
        ));
        text.push_str(&format!(
            "{{:type :ok,\n :process {p},\n :f :txn,\n :meta\n{{:note \"y\"}},\n :value [[:append {i} {i}] [:r {i} [{i}]]]}}\n"
        ));
    }
    assert!(text.len() > 2 * 512 * 1024);
    let dir = temp_dir("multiline");
    let path = dir.join("pretty.edn");
    std::fs::write(&path, &text).unwrap();
    let log = streamed(&path);
    assert_eq!(log.txns.len(), n);
    assert_eq!(summary(&log), summary(&from_whole_file(&path)));
    let i = Value::Int(n as i64 - 1);
    let want_last = Value::List(vec![
        Value::List(vec!["append".into(), i.clone(), i.clone()]),
        Value::List(vec!["r".into(), i.clone(), Value::List(vec![i])]),
    ]);
    assert_eq!(log.txn_value(n - 1), want_last);
    let _ = std::fs::remove_dir_all(&dir);
}

fn parse_error_line(e: HistoryError) -> (usize, String) {
    match e {
        HistoryError::Parse { line, message, .. } => (line, message),
        other => panic!("expected a parse error, got {other}"),
    }
}

/// A line of `n` invocations and completions; `bad` replaces line `bad.0` (1-based).
fn jsonl_lines(n: usize, bad: Option<(usize, &str)>) -> String {
    let mut out = String::new();
    for i in 0..n {
        let line = match bad {
            Some((at, text)) if at == i + 1 => text.to_string(),
            _ => {
                let (kind, value) = if i % 2 == 0 {
                    ("invoke", format!("[[\"append\",{i},{i}]]"))
                } else {
                    ("ok", format!("[[\"append\",{},{}]]", i - 1, i - 1))
                };
                format!(
                    "{{\"index\":{i},\"time\":{i},\"process\":0,\"type\":\"{kind}\",\"f\":\"txn\",\"value\":{value}}}"
                )
            }
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[test]
fn errors_name_the_line_far_into_a_stream() {
    let dir = temp_dir("errors");
    // A truncated JSON line in the third batch.
    let path = dir.join("truncated.jsonl");
    std::fs::write(
        &path,
        jsonl_lines(40_000, Some((37_001, "{\"index\":37000,\"time\":1,\"proc"))),
    )
    .unwrap();
    let (line, message) = parse_error_line(read_log(&path, Format::Auto).unwrap_err());
    assert_eq!(line, 37_001, "{message}");
    assert!(message.contains("truncated"), "{message}");

    // A completion with no invocation, past the first batch.
    let path = dir.join("orphan.jsonl");
    let orphan =
        "{\"index\":20000,\"time\":1,\"process\":5,\"type\":\"ok\",\"f\":\"txn\",\"value\":[]}";
    std::fs::write(&path, jsonl_lines(30_000, Some((20_001, orphan)))).unwrap();
    let (line, message) = parse_error_line(read_log(&path, Format::Auto).unwrap_err());
    assert_eq!(line, 20_001);
    assert!(message.contains("no pending invoke"), "{message}");

    // An invocation never completed whose value is not a transaction: reported at its line
    // when the stream ends.
    let path = dir.join("open.jsonl");
    let open =
        "{\"index\":0,\"time\":1,\"process\":9,\"type\":\"invoke\",\"f\":\"txn\",\"value\":7}";
    let mut text = jsonl_lines(100, None);
    text.push_str(open);
    text.push('\n');
    std::fs::write(&path, text).unwrap();
    let (line, message) = parse_error_line(read_log(&path, Format::Auto).unwrap_err());
    assert_eq!(line, 101);
    assert!(message.contains("list of micro-ops"), "{message}");

    // A bad op map deep into an EDN file (its chunk parses; the op does not convert).
    let mut text = String::new();
    for i in 0..20_000 {
        if i == 15_000 {
            text.push_str("{:type :finished, :process 1, :f :txn, :value []}\n");
        } else {
            let (kind, r) = if i % 2 == 0 {
                ("invoke", "nil")
            } else {
                ("ok", "[]")
            };
            text.push_str(&format!(
                "{{:type :{kind}, :process 1, :f :txn, :value [[:r 1 {r}]]}}\n"
            ));
        }
    }
    let path = dir.join("bad-type.edn");
    std::fs::write(&path, &text).unwrap();
    let (line, message) = parse_error_line(read_log(&path, Format::Auto).unwrap_err());
    assert_eq!(line, 15_001);
    assert!(message.contains("unknown type 'finished'"), "{message}");

    // An EDN syntax error deep into a file: the chunk does not parse, the fallback names it.
    let path = dir.join("syntax.edn");
    std::fs::write(
        &path,
        text.replace(":type :finished", ":type :ok :value [[:r 1 []]"),
    )
    .unwrap();
    let (line, _) = parse_error_line(read_log(&path, Format::Auto).unwrap_err());
    assert!((15_001..=20_001).contains(&line), "line {line}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ops_without_processes_get_the_same_processes_as_a_whole_read() {
    let mut text = String::from("{:process 3, :type :invoke, :f :txn, :value [[:append 1 1]]}\n");
    text.push_str("{:process 3, :type :ok, :f :txn, :value [[:append 1 1]]}\n");
    for i in 0..5 {
        text.push_str(&format!(
            "{{:type :invoke, :f :txn, :value [[:append 2 {i}]]}}\n"
        ));
        text.push_str(&format!(
            "{{:type :ok, :f :txn, :value [[:append 2 {i}]]}}\n"
        ));
    }
    let dir = temp_dir("noprocess");
    let path = dir.join("paper.edn");
    std::fs::write(&path, &text).unwrap();
    let log = streamed(&path);
    assert_eq!(summary(&log), summary(&from_whole_file(&path)));
    let processes: Vec<u64> = log.txns.iter().map(|t| t.process).collect();
    assert_eq!(processes, vec![3, 4, 5, 6, 7, 8]);
    let _ = std::fs::remove_dir_all(&dir);
}
