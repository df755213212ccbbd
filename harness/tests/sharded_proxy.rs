//! Sharded paxos-kv over the userspace proxy (`--groups 2 --nodes 3 --net proxy`): no root, so
//! these run for every user and in CI.
//!
//! - The proxy itself, on the layout a sharded run uses (no store processes): a cut between
//!   nodes of different groups silences their HTTP (group-to-group messages, config queries)
//!   while other diallers of the same listener get through; network faults act per whole HTTP
//!   request (lost whole; `POST /shard/msg` delivered twice, other requests never).
//! - Whole runs: list-append under 2PL with partitions (which cut inter-group and
//!   group-controller traffic too), duplicated messages and shard moves, judged valid; and a planted
//!   bug (`early-lock-release`) judged invalid over the proxy.
//!
//! The runs go one at a time (`SERIAL`): each starts nine store processes on a shared machine,
//! and `wait_bounded` ends a run that outlives its deadline. A run that fails its assertions
//! keeps its results directory (printed); a passing one removes it.

use ordeal::net::{Behaviour, Dialer, LinkKind, ProxyNet};
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::SocketAddr;

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;

mod common;
use common::ShardedRun as Run;

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A stand-in for a node's client port: answers every HTTP request 202 and reports each
/// request's first line.
async fn http_node(listener: TcpListener, seen: mpsc::UnboundedSender<String>) {
    // Bounded: the test's runtime ends it.
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // One request per connection is all the test sends; keep-alive is not needed.
            loop {
                let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                    match s.read(&mut chunk).await {
                        Ok(n) if n > 0 => {
                            buf.extend_from_slice(&chunk[..n]);
                            continue;
                        }
                        _ => return,
                    }
                };
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let body_len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                while buf.len() < end + 4 + body_len {
                    match s.read(&mut chunk).await {
                        Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => return,
                    }
                }
                buf.drain(..end + 4 + body_len);
                let _ = seen.send(head.lines().next().unwrap_or("").to_string());
                let answer = "HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\nok";
                if s.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// Sends one request to `to` from `from_ip` and returns the answer's status line, or None when
/// nothing comes back within `wait`.
async fn request_from(
    from_ip: std::net::IpAddr,
    to: SocketAddr,
    head_line: &str,
    wait: Duration,
) -> Option<String> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from_ip, 0)).unwrap();
    let mut s: TcpStream = socket.connect(to).await.unwrap();
    let request = format!("{head_line}\r\nhost: x\r\ncontent-length: 4\r\n\r\nbody");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    let got = tokio::time::timeout(wait, async {
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut chunk).await {
                Ok(n) if n > 0 => answer.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
        Some(())
    })
    .await;
    match got {
        Ok(Some(())) => Some(
            String::from_utf8_lossy(&answer)
                .lines()
                .next()
                .unwrap_or("")
                .to_string(),
        ),
        _ => None,
    }
}

/// Every request line `seen` reports within `wait`.
async fn drain(seen: &mut mpsc::UnboundedReceiver<String>, wait: Duration) -> Vec<String> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(line)) = tokio::time::timeout_at(deadline, seen.recv()).await {
        got.push(line);
    }
    got
}

/// The proxy as a sharded run lays it out (a controller and two groups of three): a cut
/// between n4 (group 1) and n7 (group 2) drops n4's HTTP to n7 while n8 (n7's group) and n1
/// (the controller) still get through the same listener; after the heal n4 gets through
/// again. Then network faults on that pair: all lost, nothing arrives; all duplicated, a
/// `POST /shard/msg` arrives twice (n4 reads one answer) and a `PUT /kv/...` once.
#[test]
fn a_cut_between_nodes_of_different_groups_drops_their_http() {
    // One at a time with the runs below: their processes take ports of the layout blocks too.
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(cut_between_groups());
}

async fn cut_between_groups() {
    let (layout, links) =
        ordeal::runner::plan_layout(9, Some(&Dialer::Link), false, Some(3)).unwrap();
    let forward = layout.forward_target.clone().expect("HTTP proxied");
    // n7 (index 6) is served by a stand-in; the proxy carries what other nodes send it.
    let n7 = 6;
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let listener = TcpListener::bind(layout.nodes[n7].client).await.unwrap();
    tokio::spawn(http_node(listener, seen_tx));
    let proxy = ProxyNet::start(&links, 11).await.unwrap();
    let ip = |i: usize| layout.nodes[i].peer.ip();
    let front = forward[3][n7];
    assert_eq!(forward[7][n7], front, "one listener in front of n7");
    assert_eq!(forward[0][n7], front);
    assert_eq!(
        proxy.listen_addr(3, n7, LinkKind::Forward),
        Some(front),
        "the layout's listener is the proxy's"
    );
    let msg = "POST /shard/msg HTTP/1.1";
    let quick = Duration::from_secs(5);
    let silent = Duration::from_millis(1500);

    // Healthy: n4's message arrives.
    assert_eq!(
        request_from(ip(3), front, msg, quick).await.as_deref(),
        Some("HTTP/1.1 202 Accepted")
    );
    assert_eq!(drain(&mut seen, Duration::from_millis(300)).await, [msg]);

    let cut: BTreeSet<(usize, usize)> = [(3, n7)].into_iter().collect();
    proxy.cut(&cut);
    assert_eq!(request_from(ip(3), front, msg, silent).await, None);
    assert!(
        drain(&mut seen, Duration::from_millis(300))
            .await
            .is_empty(),
        "n4's request crossed the cut"
    );
    // The same listener still carries n8's (same group) and n1's (controller) requests.
    for other in [7, 0] {
        assert_eq!(
            request_from(ip(other), front, "GET /status HTTP/1.1", quick)
                .await
                .as_deref(),
            Some("HTTP/1.1 202 Accepted"),
            "n{} is not cut from n7",
            other + 1
        );
    }
    assert_eq!(drain(&mut seen, Duration::from_millis(300)).await.len(), 2);
    proxy.heal_partition();
    assert!(request_from(ip(3), front, msg, quick).await.is_some());
    assert_eq!(drain(&mut seen, Duration::from_millis(300)).await, [msg]);

    // Network faults act on whole requests.
    proxy.shape(&cut, Behaviour::Loss { percent: 100 });
    assert_eq!(request_from(ip(3), front, msg, silent).await, None);
    assert!(drain(&mut seen, Duration::from_millis(300))
        .await
        .is_empty());
    proxy.shape(&cut, Behaviour::Duplicate { percent: 100 });
    assert_eq!(
        request_from(ip(3), front, msg, quick).await.as_deref(),
        Some("HTTP/1.1 202 Accepted"),
        "the sender reads one answer"
    );
    assert_eq!(
        drain(&mut seen, Duration::from_secs(2)).await,
        [msg, msg],
        "a group-to-group message is delivered twice"
    );
    let put = "PUT /kv/a HTTP/1.1";
    assert!(request_from(ip(3), front, put, quick).await.is_some());
    assert_eq!(
        drain(&mut seen, Duration::from_secs(1)).await,
        [put],
        "a forwarded write is never repeated"
    );
    proxy.heal_network();
    assert!(proxy.faulty_links().is_empty());
    let stats = proxy.stats.to_json();
    assert_eq!(stats["requests_dropped"], 1, "{stats}");
    assert_eq!(stats["requests_redelivered"], 1, "{stats}");
}

/// One sharded run over the proxy (`--groups 2 --nodes 3 --net proxy`).
fn run(tag: &str, extra: &[&str]) -> Run {
    let mut args = vec!["--net", "proxy", "--recovery-s", "1"];
    args.extend_from_slice(extra);
    common::sharded_run(&format!("proxy-{tag}"), &args)
}

/// Does a partition cut a node of one group off from a node of another (or of the
/// controller)? `partition` is the event's value, `[shape, "n1 sees n1,n2,...; n2 sees ..."]`.
fn cuts_across_groups(partition: &Value) -> bool {
    let group = |name: &str| {
        name.trim_start_matches('n')
            .parse::<usize>()
            .map_or(usize::MAX, |id| (id - 1) / 3)
    };
    let views = partition[1].as_str().unwrap_or("");
    views.split("; ").any(|entry| {
        let Some((node, sees)) = entry.split_once(" sees ") else {
            return false;
        };
        let seen: BTreeSet<&str> = sees.split(',').collect();
        (1..=9)
            .map(|i| format!("n{i}"))
            .any(|other| group(&other) != group(node) && !seen.contains(other.as_str()))
    })
}

#[test]
fn list_append_under_2pl_with_partitions_and_shard_moves_over_the_proxy_is_valid() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let r = run(
        "la-2pl",
        &[
            "--workload",
            "list-append",
            "--cc",
            "2pl",
            "--nemesis",
            "partition,network,shard-move",
            "--network-behaviours",
            "duplicate",
            "--seed",
            "3",
            "--rate",
            "300",
            "--concurrency",
            "16",
            "--time-limit",
            "12",
        ],
    );
    assert_eq!(r.config["net"], "proxy", "{:#}", r.config);
    assert_eq!(r.results["verdict"], "valid", "{:#}", r.results);
    assert_eq!(r.code, 0, "a valid run exits 0");
    let c = common::check_named(&r.results, "strict-serializable");
    assert_eq!(c["verdict"], "valid", "{c:#}");
    let ok = c["details"]["stats"]["ok"].as_u64().unwrap();
    assert!(ok >= 50, "only {ok} ok txns");
    let conv = common::check_named(&r.results, "convergence");
    assert_eq!(conv["verdict"], "valid", "{conv:#}");
    let partitions = r.nemesis("start-partition");
    assert!(
        partitions.iter().any(|p| cuts_across_groups(p)),
        "no partition cut across groups: {partitions:?}"
    );
    assert!(
        r.nemesis("shard-move").len() >= 2,
        "moves: {:?}",
        r.nemesis("shard-move")
    );
    // The proxy carried the inter-node HTTP and delivered group-to-group messages twice,
    // which the store tolerated (loss is the unit test's, and partitions drop whole requests).
    let stats = &r.results["run"]["proxy_stats"];
    assert!(
        stats["requests_redelivered"].as_u64().unwrap_or(0) > 0,
        "no request redelivered: {stats}"
    );
    r.done();
}

#[test]
fn early_lock_release_over_the_proxy_is_invalid() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let r = run(
        "elr",
        &[
            "--workload",
            "list-append",
            "--cc",
            "2pl",
            "--bug",
            "early-lock-release",
            "--nemesis",
            "partition,shard-move",
            "--seed",
            "1",
            "--rate",
            "0",
            "--concurrency",
            "12",
            "--time-limit",
            "10",
        ],
    );
    assert_eq!(r.config["net"], "proxy");
    assert_eq!(r.results["verdict"], "invalid", "{:#}", r.results);
    assert_eq!(r.code, 1, "an invalid run exits 1");
    let c = common::check_named(&r.results, "strict-serializable");
    assert_eq!(c["verdict"], "invalid", "{c:#}");
    r.done();
}
