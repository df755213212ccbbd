//! Knossos's `multi-register` model: semantics on small cases, reading Knossos-style EDN, and
//! agreement with the brute-force checker on thousands of random histories.

use ordeal_checker::linear::brute::brute_force;
use ordeal_checker::linear::generate::Rng;
use ordeal_checker::linear::{check, CheckOptions, MultiRegister};
use ordeal_checker::read::{read_str, Format};
use ordeal_checker::{edn, Event, EventType, History, Process, Value, Verdict};
use std::path::Path;

fn verdict(model: &MultiRegister, text: &str) -> Verdict {
    let h = read_str(text, Format::Edn, Path::new("t.edn")).unwrap();
    check(model, &h, &CheckOptions::default()).unwrap().verdict
}

#[test]
fn reads_see_the_last_write_or_the_initial_value() {
    let zero = MultiRegister::new(&edn::parse("{:x 0 :y 0}").unwrap()).unwrap();
    // Knossos's own layout: a list of op maps, comments between them.
    let ok = "; multi-register\n(\n\
        {:process 0 :type :invoke :f :txn :value [[:read :x nil] [:write :y 2]]}\n\
        {:process 0 :type :ok :f :txn :value [[:read :x 0] [:write :y 2]]}\n\
        ; then\n\
        {:process 1 :type :invoke :f :txn :value [[:read :y nil] [:read :x nil]]}\n\
        {:process 1 :type :ok :f :txn :value [[:read :y 2] [:read :x nil]]}\n)\n";
    assert_eq!(verdict(&zero, ok), Verdict::Valid);
    // From nil registers, the first read of x cannot be 0.
    assert_eq!(verdict(&MultiRegister::default(), ok), Verdict::Invalid);
    // A stale read after the write completed.
    let stale = "{:process 0 :type :invoke :f :txn :value [[:write :x 1]]}\n\
        {:process 0 :type :ok :f :txn :value [[:write :x 1]]}\n\
        {:process 1 :type :invoke :f :txn :value [[:read :x nil]]}\n\
        {:process 1 :type :ok :f :txn :value [[:read :x 0]]}\n";
    assert_eq!(verdict(&zero, stale), Verdict::Invalid);
    // Inside one txn, a read after its own write sees it.
    let own = "{:process 0 :type :invoke :f :txn :value [[:write :x 5] [:read :x nil]]}\n\
        {:process 0 :type :ok :f :txn :value [[:write :x 5] [:read :x 5]]}\n";
    assert_eq!(verdict(&zero, own), Verdict::Valid);
    // Ops other than txn are named.
    let h = read_str(
        "{:process 0 :type :invoke :f :read :value nil}",
        Format::Edn,
        Path::new("t.edn"),
    )
    .unwrap();
    let err = check(&zero, &h, &CheckOptions::default()).unwrap_err();
    assert!(err.to_string().contains("expected txn"), "{err}");
}

/// A random small history of txns over two registers, often not linearizable.
fn random_history(rng: &mut Rng) -> History {
    let procs = 1 + rng.below(3);
    let n_ops = 1 + rng.below(6);
    let mut proc_id: Vec<u64> = (0..procs as u64).collect();
    let mut pending: Vec<Option<Vec<(bool, i64, i64)>>> = vec![None; procs];
    let mut events = Vec::new();
    let mut invoked = 0;
    let txn = |micro: &[(bool, i64, i64)], filled: bool| {
        Value::List(
            micro
                .iter()
                .map(|&(w, k, v)| {
                    let value = if w || filled {
                        Value::Int(v)
                    } else {
                        Value::Null
                    };
                    let f = if w { "write" } else { "read" };
                    Value::List(vec![Value::Str(f.into()), Value::Int(k), value])
                })
                .collect(),
        )
    };
    for _ in 0..200 {
        let p = rng.below(procs);
        match pending[p].take() {
            None if invoked < n_ops => {
                invoked += 1;
                let micro: Vec<(bool, i64, i64)> = (0..1 + rng.below(3))
                    .map(|_| (rng.below(2) == 0, rng.below(2) as i64, rng.below(3) as i64))
                    .collect();
                events.push(Event::new(
                    Process::Client(proc_id[p]),
                    EventType::Invoke,
                    "txn",
                    txn(&micro, false),
                ));
                pending[p] = Some(micro);
            }
            None => {
                if pending.iter().all(Option::is_none) {
                    break;
                }
            }
            Some(micro) => {
                let kind = match rng.below(10) {
                    0 | 1 => EventType::Info,
                    2 => EventType::Fail,
                    _ => EventType::Ok,
                };
                let value = if kind == EventType::Info {
                    Value::Null
                } else {
                    txn(&micro, true)
                };
                events.push(Event::new(Process::Client(proc_id[p]), kind, "txn", value));
                if kind == EventType::Info {
                    proc_id[p] += procs as u64;
                }
            }
        }
    }
    History::new(events)
}

#[test]
fn fast_search_agrees_with_brute_force() {
    let model = MultiRegister::new(&edn::parse("{0 0 1 0}").unwrap()).unwrap();
    let mut rng = Rng::new(11);
    let (mut valid, mut invalid) = (0, 0);
    for case in 0..3000 {
        let h = random_history(&mut rng);
        let expected = brute_force(&model, &h).unwrap();
        let got = check(&model, &h, &CheckOptions::default()).unwrap();
        assert_eq!(
            got.verdict,
            expected,
            "case {case}:\n{h:?}\n{}",
            got.to_text()
        );
        match expected {
            Verdict::Valid => valid += 1,
            _ => invalid += 1,
        }
    }
    assert!(
        valid > 300 && invalid > 300,
        "{valid} valid, {invalid} invalid"
    );
}
