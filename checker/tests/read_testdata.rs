//! Every shared test history parses, and pairs into the number of operations the test data's
//! verdicts.tsv records.

use ordeal_checker::read::{read_path, Format};

mod common;
use common::tsv_rows;

#[test]
fn porcupine_histories_parse_with_the_recorded_op_counts() {
    let dir = common::testdata("porcupine");
    let rows = tsv_rows(&dir.join("verdicts.tsv"));
    assert!(rows.len() > 100, "expected the full porcupine set");
    for row in rows {
        let history = read_path(&dir.join(&row[0]), Format::Auto).unwrap();
        let ops = history.operations().unwrap();
        let expected: usize = row[3].parse().unwrap();
        assert_eq!(ops.len(), expected, "{}", row[0]);
        // The TSV's "indeterminate" column counts info ops plus failed reads (which porcupine's
        // etcd model treats as unknown), so info ops alone can be at most that many.
        let unknown = ops
            .iter()
            .filter(|o| o.outcome == ordeal_checker::Outcome::Info)
            .count();
        let indeterminate: usize = row[4].parse().unwrap();
        assert!(unknown <= indeterminate, "{}", row[0]);
    }
    let empty = read_path(&dir.join("jepsen/etcd_095.log"), Format::Auto).unwrap();
    assert!(empty.is_empty());
}

#[test]
fn elle_histories_parse() {
    let dir = common::testdata("elle");
    let rows = tsv_rows(&dir.join("verdicts.tsv"));
    assert!(rows.len() >= 14);
    for row in rows {
        let history = read_path(&dir.join(&row[0]), Format::Auto).unwrap();
        let ops = history.operations().unwrap();
        assert!(!ops.is_empty(), "{}", row[0]);
        for op in &ops {
            assert!(
                op.input.as_list().is_some(),
                "{}: txn value must be a list",
                row[0]
            );
        }
    }
    let huge = read_path(&dir.join("huge-scc.edn.gz"), Format::Auto).unwrap();
    let ops = huge.operations().unwrap();
    let count = |o| ops.iter().filter(|op| op.outcome == o).count();
    assert_eq!(count(ordeal_checker::Outcome::Ok), 3036);
    assert_eq!(count(ordeal_checker::Outcome::Fail), 7070);
    // The README's 242 info ops include 94 nemesis events, which are not transactions.
    let nemesis_info = huge
        .events
        .iter()
        .filter(|e| e.process == ordeal_checker::Process::Nemesis)
        .filter(|e| e.kind == ordeal_checker::EventType::Info)
        .count();
    assert_eq!(count(ordeal_checker::Outcome::Info) + nemesis_info, 242);
}
