//! Every workload's ops through `Client` with the etcd-v3 protocol, against real etcd clusters
//! on loopback; generated histories judged by the project's checkers. Skipped (with a printed
//! reason) only when /usr/bin/etcd is absent and ORDEAL_REQUIRE_ETCD is not set.

mod common;

use common::{client, etcd_bin, micro, op, run_generated, txn, EtcdCluster};
use ordeal_checker::txn::Consistency;
use ordeal_checker::{EventType, Value, Verdict};
use ordeal_workloads::etcd::Etcd;
use ordeal_workloads::{Generator, GeneratorConfig, Protocol, ReadConsistency, WorkloadKind};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(5);

fn list(items: &[i64]) -> Value {
    Value::List(items.iter().map(|i| Value::Int(*i)).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn register_read_write_and_cas() {
    let Some(bin) = etcd_bin("register_read_write_and_cas") else {
        return;
    };
    let cluster = EtcdCluster::start(&bin, 1);
    let url = &cluster.nodes[0].client_url;
    let c = client(TIMEOUT, ReadConsistency::Linearizable);
    let absent = c.invoke(url, &op("read", "r1", Value::Null)).await;
    assert_eq!((absent.kind, &absent.value), (EventType::Ok, &Value::Null));
    let w = c.invoke(url, &op("write", "r1", Value::Int(1))).await;
    assert_eq!(w.kind, EventType::Ok, "{w:?}");
    let cas = |old, new| op("cas", "r1", list(&[old, new]));
    let ok = c.invoke(url, &cas(1, 2)).await;
    assert_eq!(ok.kind, EventType::Ok, "{ok:?}");
    // The compare does not hold (the value is 2 now): nothing applied, a definite fail, and
    // not a refusal to back off from.
    let failed = c.invoke(url, &cas(1, 3)).await;
    assert_eq!(failed.kind, EventType::Fail, "{failed:?}");
    assert!(!failed.refused);
    assert_eq!(failed.error.as_deref(), Some("precondition-failed"));
    let read = c.invoke(url, &op("read", "r1", Value::Null)).await;
    assert_eq!((read.kind, read.value), (EventType::Ok, Value::Int(2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kv_appends_concatenate_under_contention() {
    let Some(bin) = etcd_bin("kv_appends_concatenate_under_contention") else {
        return;
    };
    let cluster = EtcdCluster::start(&bin, 1);
    let url = cluster.nodes[0].client_url.clone();
    let c = client(TIMEOUT, ReadConsistency::Linearizable);
    let w = c
        .invoke(&url, &op("write", "k", Value::Str("0,".into())))
        .await;
    assert_eq!(w.kind, EventType::Ok, "{w:?}");
    // 16 appends at once on one key: each is ok (in the value exactly once) or a definite
    // fail (not in it).
    let tasks: Vec<_> = (1..=16)
        .map(|i| {
            let (c, url) = (c.clone(), url.clone());
            tokio::spawn(async move {
                let done = c
                    .invoke(&url, &op("append", "k", Value::Str(format!("{i},"))))
                    .await;
                (i, done)
            })
        })
        .collect();
    let mut ok = Vec::new();
    for t in tasks {
        let (i, done) = t.await.unwrap();
        match done.kind {
            EventType::Ok => ok.push(i),
            EventType::Fail => assert!(
                done.error.as_deref().unwrap_or("").starts_with("contended"),
                "{done:?}"
            ),
            _ => panic!("append {i} unknown on a healthy node: {done:?}"),
        }
    }
    assert!(!ok.is_empty());
    let read = c.invoke(&url, &op("read", "k", Value::Null)).await;
    let Value::Str(text) = read.value else {
        panic!("{read:?}")
    };
    let mut parts: Vec<i64> = text
        .trim_end_matches(',')
        .split(',')
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(parts.remove(0), 0, "{text}");
    parts.sort();
    ok.sort();
    assert_eq!(parts, ok, "the value holds exactly the ok appends: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn list_append_reads_back_in_order_and_failed_compares_apply_nothing() {
    let Some(bin) = etcd_bin("list_append_reads_back_in_order") else {
        return;
    };
    let cluster = EtcdCluster::start(&bin, 1);
    let url = cluster.nodes[0].client_url.clone();
    let c = client(TIMEOUT, ReadConsistency::Linearizable);
    // One txn: read (absent), append 1, read (its own append), append to another key.
    let first = c
        .invoke(
            &url,
            &txn(vec![
                micro("r", "la0", Value::Null),
                micro("append", "la0", Value::Int(1)),
                micro("r", "la0", Value::Null),
                micro("append", "la1", Value::Int(1)),
            ]),
        )
        .await;
    assert_eq!(first.kind, EventType::Ok, "{first:?}");
    let reads: Vec<Value> = first
        .value
        .as_list()
        .unwrap()
        .iter()
        .map(|m| m.as_list().unwrap()[2].clone())
        .collect();
    assert_eq!(reads[0], Value::Null);
    assert_eq!(reads[2], list(&[1]));
    for v in 2..=4 {
        let done = c
            .invoke(&url, &txn(vec![micro("append", "la0", Value::Int(v))]))
            .await;
        assert_eq!(done.kind, EventType::Ok, "{done:?}");
    }
    let read = c
        .invoke(
            &url,
            &txn(vec![
                micro("r", "la0", Value::Null),
                micro("r", "la1", Value::Null),
            ]),
        )
        .await;
    assert_eq!(
        read.value,
        Value::List(vec![
            micro("r", "la0", list(&[1, 2, 3, 4])),
            micro("r", "la1", list(&[1])),
        ])
    );
    // Many txns appending to one key at once: some compares fail; those are `fail` and their
    // values never appear, every ok append does, in an order.
    let tasks: Vec<_> = (100..124)
        .map(|v| {
            let (c, url) = (c.clone(), url.clone());
            tokio::spawn(async move {
                let t = txn(vec![
                    micro("append", "hot", Value::Int(v)),
                    micro("r", "hot", Value::Null),
                ]);
                (v, c.invoke(&url, &t).await)
            })
        })
        .collect();
    let (mut ok, mut failed) = (Vec::new(), 0);
    for t in tasks {
        let (v, done) = t.await.unwrap();
        match done.kind {
            EventType::Ok => ok.push(v),
            EventType::Fail => {
                assert!(
                    done.error
                        .as_deref()
                        .unwrap_or("")
                        .starts_with("precondition-failed"),
                    "{done:?}"
                );
                failed += 1;
            }
            _ => panic!("unknown on a healthy node: {done:?}"),
        }
    }
    assert!(failed > 0, "24 concurrent appends to one key all committed");
    let read = c
        .invoke(&url, &txn(vec![micro("r", "hot", Value::Null)]))
        .await;
    let hot = read.value.as_list().unwrap()[0].as_list().unwrap()[2].clone();
    let mut seen: Vec<i64> = hot
        .as_list()
        .unwrap()
        .iter()
        .map(|v| match v {
            Value::Int(i) => *i,
            other => panic!("{other:?}"),
        })
        .collect();
    seen.sort();
    ok.sort();
    assert_eq!(seen, ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rw_register_txn_is_one_etcd_txn() {
    let Some(bin) = etcd_bin("rw_register_txn_is_one_etcd_txn") else {
        return;
    };
    let cluster = EtcdCluster::start(&bin, 1);
    let url = &cluster.nodes[0].client_url;
    let c = client(TIMEOUT, ReadConsistency::Linearizable);
    let done = c
        .invoke(
            url,
            &txn(vec![
                micro("r", "rw0", Value::Null),
                micro("w", "rw0", Value::Int(1)),
                micro("r", "rw0", Value::Null),
                micro("w", "rw1", Value::Int(7)),
            ]),
        )
        .await;
    assert_eq!(done.kind, EventType::Ok, "{done:?}");
    assert_eq!(
        done.value,
        Value::List(vec![
            micro("r", "rw0", Value::Null),
            micro("w", "rw0", Value::Int(1)),
            micro("r", "rw0", Value::Int(1)),
            micro("w", "rw1", Value::Int(7)),
        ])
    );
    let read = c
        .invoke(
            url,
            &txn(vec![
                micro("r", "rw1", Value::Null),
                micro("r", "rw0", Value::Null),
            ]),
        )
        .await;
    assert_eq!(
        read.value,
        Value::List(vec![
            micro("r", "rw1", Value::Int(7)),
            micro("r", "rw0", Value::Int(1)),
        ])
    );
    // What etcd refuses (two puts of one key) is a definite fail, as its error says.
    let refused = c
        .invoke(
            url,
            &txn(vec![
                micro("w", "rw2", Value::Int(1)),
                micro("w", "rw2", Value::Int(2)),
            ]),
        )
        .await;
    assert_eq!(refused.kind, EventType::Fail, "{refused:?}");
    assert!(
        refused
            .error
            .as_deref()
            .unwrap_or("")
            .contains("duplicate key"),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bank_transfers_refuse_overdrafts() {
    let Some(bin) = etcd_bin("bank_transfers_refuse_overdrafts") else {
        return;
    };
    let cluster = EtcdCluster::start(&bin, 1);
    let url = &cluster.nodes[0].client_url;
    let c = client(TIMEOUT, ReadConsistency::Linearizable);
    let transfer = |from: &str, to: &str, amount: i64| {
        txn(vec![
            micro("append", from, Value::Int(-amount)),
            micro("append", to, Value::Int(amount)),
        ])
    };
    let ok = c.invoke(url, &transfer("acct0", "acct1", 60)).await;
    assert_eq!(ok.kind, EventType::Ok, "{ok:?}");
    // acct0 holds 40 now: 41 would overdraw it.
    let over = c.invoke(url, &transfer("acct0", "acct1", 41)).await;
    assert_eq!(over.kind, EventType::Fail, "{over:?}");
    assert!(
        over.error
            .as_deref()
            .unwrap_or("")
            .contains("insufficient funds"),
        "{over:?}"
    );
    let all: Vec<Value> = (0..ordeal_workloads::bank::ACCOUNTS)
        .map(|i| micro("r", &format!("acct{i}"), Value::Null))
        .collect();
    let read = c.invoke(url, &txn(all)).await;
    let balances: Vec<Value> = read
        .value
        .as_list()
        .unwrap()
        .iter()
        .map(|m| m.as_list().unwrap()[2].clone())
        .collect();
    assert_eq!(
        balances,
        vec![
            Value::Int(40),
            Value::Int(160),
            Value::Null,
            Value::Null,
            Value::Null
        ]
    );
}

/// A short generated history of every workload, over a 3-node cluster with clients spread
/// over the nodes, is judged valid by the workload's own checker.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn generated_histories_are_valid_on_three_nodes() {
    let Some(bin) = etcd_bin("generated_histories_are_valid_on_three_nodes") else {
        return;
    };
    let cluster = EtcdCluster::start(&bin, 3);
    let urls = cluster.urls();
    let c = client(TIMEOUT, ReadConsistency::Linearizable);
    for (i, workload) in WorkloadKind::ALL.into_iter().enumerate() {
        let config = GeneratorConfig::for_workload(workload, 40 + i as u64, 8)
            .with_protocol(Protocol::EtcdV3);
        let (history, [ok, fail, info]) =
            run_generated(&c, &urls, Generator::new(config), 8, 40).await;
        assert!(
            ok > 100,
            "{workload}: only {ok} ok ({fail} fail, {info} info)"
        );
        assert_eq!(info, 0, "{workload}: unknown outcomes on a healthy cluster");
        let judge = workload.judge(Protocol::EtcdV3);
        let (verdict, summary) = judge
            .verdict(
                &history,
                Duration::from_secs(30),
                Consistency::StrictSerializable,
            )
            .unwrap_or_else(|e| panic!("{workload}: {e}"));
        eprintln!("{workload}: {ok} ok, {fail} fail: {verdict}: {summary}");
        assert_eq!(verdict, Verdict::Valid, "{workload}: {summary}");
    }
}

/// A request to a paused leader times out on the client: it may have been applied, so `info`.
/// With both followers paused, the node loses its leader and refuses at once: a definite
/// `fail`, a refusal to back off from; a local (serializable) read is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paused_leader_is_info_and_lost_quorum_is_a_refusal() {
    let Some(bin) = etcd_bin("paused_leader_is_info_and_lost_quorum_is_a_refusal") else {
        return;
    };
    let mut cluster = EtcdCluster::start(&bin, 3);
    let leader = cluster.wait_for_leader(Duration::from_secs(30));
    let leader_url = cluster.nodes[leader].client_url.clone();
    let c = client(Duration::from_millis(1000), ReadConsistency::Linearizable);
    let http = reqwest::Client::new();
    let gateway = |base_url| Etcd {
        http: &http,
        base_url,
        timeout: Duration::from_secs(2),
        serializable: false,
    };
    let status = gateway(leader_url.as_str()).status().await.unwrap();
    assert_eq!(status.leader, Some(status.member_id), "{status:?}");
    assert!(status.version.starts_with("3."), "{status:?}");
    let follower_url = cluster.nodes[(leader + 1) % 3].client_url.clone();
    let follower = gateway(follower_url.as_str()).status().await.unwrap();
    assert_eq!(follower.leader, status.leader);
    assert_ne!(follower.member_id, status.member_id);
    let w = c
        .invoke(&leader_url, &op("write", "p", Value::Int(1)))
        .await;
    assert_eq!(w.kind, EventType::Ok, "{w:?}");

    cluster.pause(leader);
    let timed_out = c
        .invoke(&leader_url, &op("write", "p", Value::Int(2)))
        .await;
    cluster.resume(leader);
    assert_eq!(timed_out.kind, EventType::Info, "{timed_out:?}");
    assert_eq!(timed_out.error.as_deref(), Some("client-timeout"));

    // Lose the quorum around one node: pause the other two.
    let lone = cluster.wait_for_leader(Duration::from_secs(30));
    let others: Vec<usize> = (0..3).filter(|i| *i != lone).collect();
    for &i in &others {
        cluster.pause(i);
    }
    let lone_url = cluster.nodes[lone].client_url.clone();
    let mut refusal = None;
    // Bounded: etcd's leader steps down after an election timeout (1 s) without a quorum.
    for attempt in 0..40 {
        let done = c
            .invoke(&lone_url, &op("write", "p", Value::Int(10 + attempt)))
            .await;
        assert_ne!(
            done.kind,
            EventType::Ok,
            "a write committed without a quorum: {done:?}"
        );
        if done.refused {
            refusal = Some(done);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let local = client(Duration::from_millis(1000), ReadConsistency::Local)
        .invoke(&lone_url, &op("read", "p", Value::Null))
        .await;
    for &i in &others {
        cluster.resume(i);
    }
    let refusal = refusal.expect("the node without a quorum never refused");
    assert_eq!(refusal.kind, EventType::Fail, "{refusal:?}");
    assert!(
        refusal.error.as_deref().unwrap_or("").contains("no leader"),
        "{refusal:?}"
    );
    assert_eq!(
        local.kind,
        EventType::Ok,
        "a local read needs no leader: {local:?}"
    );
    // The cluster recovers and takes writes again.
    cluster.wait_for_leader(Duration::from_secs(30));
    let mut recovered = None;
    for _ in 0..50 {
        let done = c.invoke(&lone_url, &op("write", "p", Value::Int(99))).await;
        if done.kind == EventType::Ok {
            recovered = Some(done);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered.is_some(), "no write succeeded after resuming");
}
