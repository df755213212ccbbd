//! The streaming linearizability path (`linear::check_path`) gives what reading the whole
//! history and checking it gives: the same report (verdict, counts, partitions, counterexample
//! with its event positions and file lines, stats) and the same errors, on many generated
//! histories in every format, with the spill buffer and batches made tiny so that every
//! partition goes through the temporary file in many chunks.

use ordeal_checker::linear::generate::{corrupt_read, generate, GenOptions, Rng, Workload};
use ordeal_checker::linear::{
    check_kind, check_kind_path, CheckOptions, LinearReport, ModelKind, ModelOptions,
};
use ordeal_checker::read::{read_path, write_edn, write_jsonl, Format};
use ordeal_checker::{Event, EventType, History, Process, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

mod common;

fn temp_dir(tag: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("ordeal-linear-stream-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn options(buffer_bytes: usize, batch_ops: usize, spill_dir: &Path) -> CheckOptions {
    CheckOptions {
        timeout: Some(Duration::from_secs(120)),
        stream_buffer_bytes: buffer_bytes,
        stream_batch_ops: batch_ops,
        spill_dir: Some(spill_dir.to_path_buf()),
        ..CheckOptions::default()
    }
}

/// The report without its wall-clock time.
fn timeless(mut r: LinearReport) -> LinearReport {
    r.stats.elapsed_ms = 0;
    r
}

/// Both paths on one file: equal reports, or equal errors.
fn agree(
    path: &Path,
    kind: ModelKind,
    observed: bool,
    opts: &CheckOptions,
) -> Option<LinearReport> {
    let model_options = ModelOptions {
        failed_cas_observed: observed,
    };
    let whole = read_path(path, Format::Auto)
        .and_then(|h| check_kind(kind, model_options, &h, opts))
        .map_err(|e| e.in_file(path).to_string());
    let streamed = check_kind_path(kind, model_options, path, Format::Auto, opts)
        .map_err(|e| e.in_file(path).to_string());
    match (whole, streamed) {
        (Ok(a), Ok(b)) => {
            let (a, b) = (timeless(a), timeless(b));
            assert_eq!(a, b, "{} ({})", path.display(), kind.as_str());
            Some(a)
        }
        (Err(a), Err(b)) => {
            assert_eq!(a, b, "{} ({})", path.display(), kind.as_str());
            None
        }
        (a, b) => panic!(
            "{} ({}): in memory {:?}, streamed {:?}",
            path.display(),
            kind.as_str(),
            a.map(|r| r.summary),
            b.map(|r| r.summary)
        ),
    }
}

fn kinds(w: Workload) -> &'static [ModelKind] {
    match w {
        Workload::Register => &[ModelKind::Register, ModelKind::CasRegister],
        Workload::CasRegister => &[ModelKind::CasRegister],
        Workload::Kv | Workload::KvWrites => &[ModelKind::Kv, ModelKind::KvUnpartitioned],
        Workload::Set => &[ModelKind::Set],
    }
}

/// Nemesis events between ops, and the last few completions cut off (invocations that never
/// complete), so positions, lines and open operations are exercised too.
fn roughen(h: &mut History, rng: &mut Rng) {
    let mut events = Vec::with_capacity(h.events.len() + 8);
    for e in h.events.drain(..) {
        if rng.chance(0.02) {
            events.push(Event::new(
                Process::Nemesis,
                EventType::Info,
                "kill",
                Value::Null,
            ));
        }
        events.push(e);
    }
    // Cut the tail: invocations whose completions are cut stay open.
    let cut = rng.below(4).min(events.len());
    events.truncate(events.len() - cut);
    *h = History::new(events);
}

#[test]
fn streamed_and_in_memory_checks_agree_on_generated_histories() {
    let dir = temp_dir("generated");
    let mut rng = Rng::new(0x5eed);
    let workloads = [
        Workload::Register,
        Workload::CasRegister,
        Workload::Kv,
        Workload::KvWrites,
        Workload::Set,
    ];
    let mut invalid = 0;
    let mut valid = 0;
    let mut checks = 0;
    for case in 0..240 {
        let workload = workloads[case % workloads.len()];
        let gen = GenOptions {
            workload,
            ops: 5 + rng.below(120),
            keys: 1 + rng.below(6),
            clients: 1 + rng.below(6),
            info_rate: [0.0, 0.05, 0.3][rng.below(3)],
            seed: case as u64,
        };
        let mut h = generate(&gen);
        if rng.chance(0.5) {
            corrupt_read(&mut h, rng.below(1000));
        }
        roughen(&mut h, &mut rng);
        let (name, gz) = match case % 4 {
            0 => ("h.jsonl", false),
            1 => ("h.edn", false),
            2 => ("h.jsonl.gz", true),
            _ => ("h.edn", true),
        };
        let path = dir.join(if gz && !name.ends_with(".gz") {
            format!("{name}.gz")
        } else {
            name.to_string()
        });
        let mut bytes = Vec::new();
        if name.starts_with("h.jsonl") {
            write_jsonl(&h, &mut bytes).unwrap();
        } else {
            write_edn(&h, &mut bytes).unwrap();
        }
        if gz {
            use std::io::Write;
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(&bytes).unwrap();
            bytes = enc.finish().unwrap();
        }
        std::fs::write(&path, &bytes).unwrap();
        // Tiny buffers and batches: many spill chunks per partition, many batches.
        let opts = options(1 + rng.below(400), 1 + rng.below(40), &dir);
        for &kind in kinds(workload) {
            for observed in [false, true] {
                if observed && kind != ModelKind::CasRegister {
                    continue;
                }
                let r = agree(&path, kind, observed, &opts).expect("generated ops are well formed");
                checks += 1;
                match r.verdict {
                    ordeal_checker::Verdict::Invalid => {
                        invalid += 1;
                        let cx = r.counterexample.as_ref().expect("a counterexample");
                        assert!(
                            cx.ops.iter().all(|o| o.invoke_line.is_some()),
                            "{}",
                            path.display()
                        );
                    }
                    ordeal_checker::Verdict::Valid => valid += 1,
                    ordeal_checker::Verdict::Unknown => {}
                }
            }
        }
        std::fs::remove_file(&path).unwrap();
    }
    assert!(checks >= 300, "{checks}");
    assert!(
        invalid >= 40 && valid >= 40,
        "{invalid} invalid, {valid} valid"
    );
    // Nothing left behind: the spill file is unlinked as soon as it is created.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn streamed_errors_name_the_same_line() {
    let dir = temp_dir("errors");
    let opts = options(16, 2, &dir);
    for (text, kind) in [
        // A cas without [expected new], after other ops on other keys.
        (
            "{:process 0 :type :invoke :f :write :key 1 :value 1}\n\
             {:process 0 :type :ok :f :write :key 1 :value 1}\n\
             {:process 1 :type :invoke :f :cas :key 2 :value 3}\n\
             {:process 1 :type :ok :f :cas :key 2 :value 3}\n",
            ModelKind::CasRegister,
        ),
        // A completion with no invocation.
        (
            "{:process 0 :type :invoke :f :read :key 1 :value nil}\n\
             {:process 3 :type :ok :f :read :key 1 :value nil}\n",
            ModelKind::Register,
        ),
        // A second invocation while one is pending.
        (
            "{:process 0 :type :invoke :f :read :key 1 :value nil}\n\
             {:process :nemesis :type :info :f :kill}\n\
             {:process 0 :type :invoke :f :read :key 1 :value nil}\n",
            ModelKind::Register,
        ),
        // An operation the model does not know, never completed.
        (
            "{:process 0 :type :invoke :f :frob :key 1 :value nil}\n",
            ModelKind::Register,
        ),
    ] {
        let path = dir.join("bad.edn");
        std::fs::write(&path, text).unwrap();
        assert!(agree(&path, kind, false, &opts).is_none(), "{text}");
        let err = check_kind_path(kind, ModelOptions::default(), &path, Format::Auto, &opts)
            .unwrap_err()
            .in_file(&path)
            .to_string();
        assert!(err.starts_with(&format!("{}:", path.display())), "{err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Porcupine's files (Jepsen text logs and its kv format) through both paths, with the
/// default buffer (no spill) and with a tiny one.
#[test]
fn porcupine_histories_stream_as_they_check_whole() {
    let dir = common::testdata("porcupine");
    let spill = temp_dir("porcupine");
    let mut files = 0;
    for row in common::tsv_rows(&dir.join("verdicts.tsv")) {
        let (file, model) = (&row[0], &row[1]);
        let kind: ModelKind = model.parse().unwrap();
        // The unpartitioned kv model on the biggest files takes long; it is covered above.
        if kind == ModelKind::KvUnpartitioned {
            continue;
        }
        let opts = if files % 2 == 0 {
            CheckOptions {
                timeout: Some(Duration::from_secs(120)),
                ..CheckOptions::default()
            }
        } else {
            options(4096, 64, &spill)
        };
        agree(&dir.join(file), kind, false, &opts).expect("porcupine files are well formed");
        files += 1;
    }
    assert!(files >= 100, "{files}");
    std::fs::remove_dir_all(&spill).unwrap();
}
