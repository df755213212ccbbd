//! Whole runs of `ordeal test` against the fake store: interrupting mid-partition or mid-network-
//! fault leaves nothing behind (no store process, no proxy listener, no iptables rule, no qdisc, no
//! network namespace), and the verdict pipeline tells a correct store from a lossy one.
//!
//! Runs against `ordeal-fake-kv` (built with this crate) so it needs no other crate's binary.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

mod common;
use common::{
    alive, any_process_in_netns, interrupt_and_wait, netns_inode, netns_possible, node_pids,
    wait_for_fault,
};

fn fake_store() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ordeal-fake-kv"))
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ordeal-it-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Starts a long run whose first fault comes after 300 ms and is held for a minute.
/// `fault` are the nemesis arguments.
fn start_run(results: &Path, net: &str, fault: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ordeal"))
        .args(["test", "--no-progress", "--time-limit", "60"])
        .args(fault)
        .args([
            "--nemesis-interval-ms",
            "300-300",
            "--nemesis-hold-ms",
            "60000-60000",
        ])
        .args([
            "--rate",
            "200",
            "--concurrency",
            "4",
            "--seed",
            "3",
            "--net",
            net,
        ])
        .arg("--store-bin")
        .arg(fake_store())
        .arg("--results")
        .arg(results)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ordeal")
}

const PARTITION: &[&str] = &["--nemesis", "partition"];

/// The proxy addresses in the run's layout: `peer_target` or `forward_target`.
fn proxy_ports(run_dir: &Path, which: &str) -> Vec<std::net::SocketAddr> {
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("config.json")).unwrap())
            .unwrap();
    let mut addrs = Vec::new();
    for (i, row) in config["layout"][which]
        .as_array()
        .unwrap_or_else(|| panic!("config.json has no layout.{which}"))
        .iter()
        .enumerate()
    {
        for (j, a) in row.as_array().unwrap().iter().enumerate() {
            if i != j {
                addrs.push(a.as_str().unwrap().parse().unwrap());
            }
        }
    }
    addrs
}

#[test]
fn interrupt_mid_partition_with_proxy_leaves_nothing() {
    let results = temp_dir("proxy");
    let mut child = start_run(&results, "proxy", PARTITION);
    let run_dir = wait_for_fault(&results, &mut child, "start-partition");
    let pids = node_pids(&run_dir);
    assert_eq!(pids.len(), 3);
    assert!(
        pids.iter().all(|&p| alive(p)),
        "nodes should run before the interrupt"
    );
    let mut proxies = proxy_ports(&run_dir, "peer_target");
    assert_eq!(proxies.len(), 6, "one proxy per directed link");
    proxies.extend(proxy_ports(&run_dir, "forward_target"));
    assert_eq!(proxies.len(), 12, "and one per directed forwarding link");
    let code = interrupt_and_wait(&mut child);
    assert!(
        matches!(code, 0..=2),
        "an interrupted run exits with its verdict, not {code}"
    );
    for p in &pids {
        assert!(!alive(*p), "store process {p} survived the interrupt");
    }
    for a in &proxies {
        std::net::TcpListener::bind(a).unwrap_or_else(|e| panic!("proxy {a} still bound: {e}"));
    }
    // The history was flushed, the partition recorded as started.
    let h = std::fs::read_to_string(run_dir.join("history.jsonl")).unwrap();
    assert!(h.contains("start-partition"));
    let _ = std::fs::remove_dir_all(&results);
}

#[test]
fn interrupt_mid_partition_with_netns_leaves_nothing() {
    if !netns_possible("the netns interrupt test") {
        return;
    }
    let host_ns = netns_inode(std::process::id()).unwrap();
    let results = temp_dir("netns");
    let mut child = start_run(&results, "netns", PARTITION);
    let run_dir = wait_for_fault(&results, &mut child, "start-partition");
    let run_ns = netns_inode(child.id()).unwrap();
    assert_ne!(
        run_ns, host_ns,
        "ordeal should run in a namespace of its own"
    );
    let pids = node_pids(&run_dir);
    for &p in &pids {
        assert_eq!(
            netns_inode(p as u32),
            Some(run_ns),
            "node {p} should share ordeal's namespace"
        );
    }
    // The rule is in ordeal's namespace, never the host's.
    let host_rules = Command::new("iptables")
        .args(["-S", "ORDEAL"])
        .output()
        .unwrap();
    assert!(!host_rules.status.success(), "host has an ORDEAL chain");
    let code = interrupt_and_wait(&mut child);
    assert!(matches!(code, 0..=2), "exit {code}: not a verdict");
    for p in &pids {
        assert!(!alive(*p), "store process {p} survived the interrupt");
    }
    assert!(
        !any_process_in_netns(run_ns),
        "a process still holds the run's namespace"
    );
    let host_rules = Command::new("iptables")
        .args(["-S", "ORDEAL"])
        .output()
        .unwrap();
    assert!(
        !host_rules.status.success(),
        "host has an ORDEAL chain after the run"
    );
    let _ = std::fs::remove_dir_all(&results);
}

#[test]
fn interrupt_mid_network_fault_with_proxy_leaves_nothing() {
    let results = temp_dir("net-proxy");
    let mut child = start_run(
        &results,
        "proxy",
        &["--nemesis", "network", "--network-behaviours", "delay"],
    );
    let run_dir = wait_for_fault(&results, &mut child, "start-network");
    let pids = node_pids(&run_dir);
    let mut proxies = proxy_ports(&run_dir, "peer_target");
    proxies.extend(proxy_ports(&run_dir, "forward_target"));
    assert_eq!(proxies.len(), 12);
    // Mid-fault the proxies are there (binding one fails).
    assert!(std::net::TcpListener::bind(proxies[0]).is_err());
    let code = interrupt_and_wait(&mut child);
    assert!(matches!(code, 0..=2), "exit {code}: not a verdict");
    for p in &pids {
        assert!(!alive(*p), "store process {p} survived the interrupt");
    }
    for a in &proxies {
        std::net::TcpListener::bind(a).unwrap_or_else(|e| panic!("proxy {a} still bound: {e}"));
    }
    let h = std::fs::read_to_string(run_dir.join("history.jsonl")).unwrap();
    assert!(h.contains("start-network") && h.contains("delay "), "{h}");
    let _ = std::fs::remove_dir_all(&results);
}

fn in_netns(pid: u32, program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .arg(program)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn host_lo_qdiscs() -> String {
    Command::new("tc")
        .args(["qdisc", "show", "dev", "lo"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

#[test]
fn interrupt_mid_network_fault_with_netns_leaves_nothing() {
    if !netns_possible("the netns network-fault interrupt test") {
        return;
    }
    let host_ns = netns_inode(std::process::id()).unwrap();
    let qdiscs_before = host_lo_qdiscs();
    let results = temp_dir("net-netns");
    // Loss is an iptables rule in the run's namespace, whatever the kernel's netem support.
    let mut child = start_run(
        &results,
        "netns",
        &["--nemesis", "network", "--network-behaviours", "loss"],
    );
    let run_dir = wait_for_fault(&results, &mut child, "start-network");
    let run_ns = netns_inode(child.id()).unwrap();
    assert_ne!(run_ns, host_ns);
    let pids = node_pids(&run_dir);
    // The rule really is in force inside the run's namespace (when nsenter can look).
    if let Some(rules) = in_netns(child.id(), "iptables", &["-S", "ORDEAL-NET"]) {
        assert!(
            rules.contains("statistic") && rules.contains("DROP"),
            "no loss rule mid-fault: {rules}"
        );
    }
    let code = interrupt_and_wait(&mut child);
    assert!(matches!(code, 0..=2), "exit {code}: not a verdict");
    for p in &pids {
        assert!(!alive(*p), "store process {p} survived the interrupt");
    }
    assert!(
        !any_process_in_netns(run_ns),
        "a process still holds the run's namespace (and its rules, qdiscs and proxies)"
    );
    for chain in ["ORDEAL", "ORDEAL-NET"] {
        let host = Command::new("iptables")
            .args(["-S", chain])
            .output()
            .unwrap();
        assert!(!host.status.success(), "host has an {chain} chain");
    }
    assert_eq!(
        host_lo_qdiscs(),
        qdiscs_before,
        "the host's lo qdiscs changed"
    );
    let h = std::fs::read_to_string(run_dir.join("history.jsonl")).unwrap();
    assert!(h.contains("via iptables"), "{h}");
    let _ = std::fs::remove_dir_all(&results);
}

/// Runs a short test against the fake store and returns (exit code, results.json).
fn run_fake(results: &Path, bug: Option<&str>) -> (i32, serde_json::Value) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ordeal"));
    cmd.args([
        "test",
        "--no-progress",
        "--nemesis",
        "kill",
        "--nemesis-targets",
        "leader",
    ])
    .args([
        "--nemesis-interval-ms",
        "400-700",
        "--nemesis-hold-ms",
        "300-500",
    ])
    .args([
        "--time-limit",
        "5",
        "--rate",
        "300",
        "--concurrency",
        "6",
        "--seed",
        "5",
    ])
    .args(["--net", "proxy", "--recovery-s", "1"])
    .arg("--store-bin")
    .arg(fake_store())
    .arg("--results")
    .arg(results)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if let Some(b) = bug {
        cmd.args(["--bug", b]);
    }
    let status = cmd.status().expect("run ordeal");
    let latest = results.join("latest");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(latest.join("results.json")).unwrap())
            .unwrap();
    for f in [
        "history.jsonl",
        "config.json",
        "report.html",
        "latency-raw.png",
        "latency-quantiles.png",
        "rate.png",
        "ordeal.log",
        "nodes/n1.log",
    ] {
        assert!(
            latest.join(f).is_file(),
            "{f} missing from the run directory"
        );
    }
    (status.code().unwrap_or(-1), r)
}

#[test]
fn end_to_end_verdicts_against_the_fake_store() {
    // The correct fake is linearizable under kills of its leader...
    let results = temp_dir("e2e-valid");
    let (code, r) = run_fake(&results, None);
    assert_eq!(r["verdict"], "valid", "{r:#}");
    assert_eq!(code, 0);
    let _ = std::fs::remove_dir_all(&results);
    // ...and the one that acks writes it never logs loses them on a kill, which the run finds.
    let results = temp_dir("e2e-lost");
    let (code, r) = run_fake(&results, Some("lost-writes"));
    assert_eq!(r["verdict"], "invalid", "{r:#}");
    assert_eq!(code, 1);
    let lin = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "linearizable")
        .unwrap();
    assert_eq!(lin["verdict"], "invalid");
    let _ = std::fs::remove_dir_all(&results);
}

/// The real store, built next to `ordeal` by `cargo test --workspace` / `make test`.
fn real_store() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_BIN_EXE_ordeal")).with_file_name("paxos-kv");
    p.is_file().then_some(p)
}

#[test]
fn network_faults_against_the_real_store_are_valid() {
    let Some(store) = real_store() else {
        // `cargo test -p ordeal` alone does not build the store; `make test` does.
        eprintln!("skipping: no paxos-kv next to ordeal (run cargo test --workspace)");
        return;
    };
    let results = temp_dir("net-real");
    // The proxy backend on any machine: whole paxos-kv frames dropped and repeated. Seed 2's
    // schedule: duplication on one node's links, then loss on a majority's.
    let status = Command::new(env!("CARGO_BIN_EXE_ordeal"))
        .args(["test", "--no-progress", "--workload", "register"])
        .args(["--nemesis", "network", "--net", "proxy", "--seed", "2"])
        .args(["--nemesis-interval-ms", "500-800"])
        .args(["--nemesis-hold-ms", "1500-2000"])
        .args(["--time-limit", "8", "--rate", "300", "--concurrency", "8"])
        .args(["--recovery-s", "1"])
        .arg("--store-bin")
        .arg(&store)
        .arg("--results")
        .arg(&results)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run ordeal");
    let latest = results.join("latest");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(latest.join("results.json")).unwrap())
            .unwrap();
    assert_eq!(r["verdict"], "valid", "{r:#}");
    assert_eq!(status.code(), Some(0));
    let faults: Vec<&str> = r["faults"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["label"].as_str().unwrap())
        .collect();
    assert!(
        faults.iter().any(|l| l.starts_with("network duplicate"))
            && faults.iter().any(|l| l.starts_with("network loss")),
        "{faults:?}"
    );
    // The proxy really dropped and repeated frames.
    let stats = &r["run"]["proxy_stats"];
    assert!(
        stats["frames_dropped"].as_u64().unwrap() > 0
            && stats["frames_duplicated"].as_u64().unwrap() > 0,
        "{stats}"
    );
    let _ = std::fs::remove_dir_all(&results);
}

/// A fault schedule for a short run against the fake store.
struct Schedule {
    nemesis: &'static str,
    interval_ms: &'static str,
    hold_ms: &'static str,
    time_limit_s: &'static str,
}

/// Pause, kill and partition faults close together, each on its own schedule.
const CLOSE_FAULTS: Schedule = Schedule {
    nemesis: "pause,kill,partition",
    interval_ms: "200-500",
    hold_ms: "300-600",
    time_limit_s: "4",
};

/// `--nemesis all`: one coordinated schedule of episodes, held long enough to overlap.
const ALL_EPISODES: Schedule = Schedule {
    nemesis: "all",
    interval_ms: "100-300",
    hold_ms: "600-900",
    time_limit_s: "6",
};

/// Runs a short test against the fake store under `schedule`; `extra` adds arguments.
/// Returns the run directory.
fn run_faults(results: &Path, schedule: &Schedule, seed: &str, extra: &[&str]) -> PathBuf {
    let status = Command::new(env!("CARGO_BIN_EXE_ordeal"))
        .args(["test", "--no-progress", "--nemesis", schedule.nemesis])
        .args(["--nemesis-interval-ms", schedule.interval_ms])
        .args(["--nemesis-hold-ms", schedule.hold_ms])
        .args(["--time-limit", schedule.time_limit_s])
        .args(["--rate", "200", "--concurrency", "4"])
        .args(["--seed", seed, "--net", "proxy", "--recovery-s", "1"])
        .args(extra)
        .arg("--store-bin")
        .arg(fake_store())
        .arg("--results")
        .arg(results)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run ordeal");
    assert!(status.code().is_some(), "ordeal died by a signal");
    std::fs::canonicalize(results.join("latest")).expect("latest points at the run")
}

fn faults_json(run: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(run.join("faults.json")).expect("faults.json written");
    serde_json::from_str(&text).expect("faults.json parses")
}

/// The nemesis events that start a fault, as (f, value), in order.
fn fault_starts(run: &Path) -> Vec<(String, serde_json::Value)> {
    std::fs::read_to_string(run.join("history.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["process"] == "nemesis")
        .filter(|e| matches!(e["f"].as_str(), Some("pause" | "kill" | "start-partition")))
        .map(|e| (e["f"].as_str().unwrap().to_string(), e["value"].clone()))
        .collect()
}

/// `--replay-faults` injects the faults an earlier run wrote to faults.json, whatever the
/// seed: the same kinds on the same nodes and links, in the same order.
#[test]
fn replayed_faults_repeat_the_earlier_run() {
    let results = temp_dir("replay");
    let first = run_faults(&results.join("a"), &CLOSE_FAULTS, "21", &[]);
    let original = faults_json(&first);
    assert!(
        original.len() >= 4,
        "only {} faults: {original:?}",
        original.len()
    );
    let kinds: std::collections::BTreeSet<&str> = original
        .iter()
        .map(|f| f["nemesis"].as_str().unwrap())
        .collect();
    assert!(kinds.len() >= 2, "one kind of fault only: {kinds:?}");

    let replay_from = first.to_string_lossy().into_owned();
    let second = run_faults(
        &results.join("b"),
        &CLOSE_FAULTS,
        "99",
        &["--replay-faults", &replay_from],
    );
    let replayed = faults_json(&second);
    // The same timings, so the same faults fit in the run, give or take the last one.
    assert!(
        replayed.len() + 1 >= original.len() && replayed.len() <= original.len(),
        "{} faults replayed of {}",
        replayed.len(),
        original.len()
    );
    let key = |f: &serde_json::Value| (f["nemesis"].clone(), f["action"].clone());
    for kind in &kinds {
        let of = |faults: &[serde_json::Value]| -> Vec<_> {
            faults
                .iter()
                .filter(|f| f["nemesis"] == *kind)
                .map(key)
                .collect()
        };
        let (a, b) = (of(&original), of(&replayed));
        assert!(
            a.starts_with(&b),
            "{kind}: replayed {b:?}\nnot a prefix of {a:?}"
        );
    }
    // The history records them as it recorded the originals.
    let (a, b) = (fault_starts(&first), fault_starts(&second));
    for kind in ["pause", "kill", "start-partition"] {
        let of = |v: &[(String, serde_json::Value)]| -> Vec<serde_json::Value> {
            v.iter()
                .filter(|(f, _)| f == kind)
                .map(|(_, x)| x.clone())
                .collect()
        };
        assert!(of(&a).starts_with(&of(&b)), "{kind} events differ");
    }
    // And a different seed without replay draws other faults.
    let third = run_faults(&results.join("c"), &CLOSE_FAULTS, "99", &[]);
    assert_ne!(
        faults_json(&third).iter().map(key).collect::<Vec<_>>(),
        original.iter().map(key).collect::<Vec<_>>()
    );
    let _ = std::fs::remove_dir_all(&results);
}

#[test]
fn a_bad_replay_file_is_refused_before_anything_starts() {
    let dir = temp_dir("replay-bad");
    let run = |file: &Path, nemesis: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_ordeal"))
            .args([
                "test",
                "--no-progress",
                "--nemesis",
                nemesis,
                "--nodes",
                "3",
            ])
            .arg("--replay-faults")
            .arg(file)
            .arg("--store-bin")
            .arg(fake_store())
            .arg("--results")
            .arg(dir.join("results"))
            .output()
            .expect("run ordeal");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&dir.join("missing.json"), "kill");
    assert_eq!(code, Some(255), "{err}");
    assert!(err.contains("missing.json"), "{err}");
    let five = dir.join("five.json");
    std::fs::write(
        &five,
        r#"[{"nemesis":"kill","wait_ms":10,"hold_ms":10,"target":"one","action":{"do":"kill","nodes":[5]}}]"#,
    )
    .unwrap();
    let (code, err) = run(&five, "kill");
    assert_eq!(code, Some(255), "{err}");
    assert!(err.contains("n5") && err.contains("3 node"), "{err}");
    let (code, err) = run(&five, "pause");
    assert_eq!(code, Some(255), "{err}");
    assert!(err.contains("--nemesis") || err.contains("n5"), "{err}");
    std::fs::write(&five, "[{\"nemesis\":\"kill\"}]").unwrap();
    let (code, err) = run(&five, "kill");
    assert_eq!(code, Some(255), "{err}");
    assert!(err.contains("five.json"), "{err}");
    assert!(!dir.join("results").exists(), "a refused run wrote results");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--nemesis all` is one coordinated schedule: a fault starts only when every earlier one is
/// undone, except a leader crash inside a network fault or a churn of leader crashes (the
/// episode's later faults, `with_previous` in faults.json); and a replay of its faults.json
/// injects the same episodes again.
#[test]
fn all_runs_one_episode_at_a_time_and_replays_it() {
    let results = temp_dir("coordinated");
    let run = |dir: &str, seed: &str, extra: &[&str]| -> PathBuf {
        run_faults(&results.join(dir), &ALL_EPISODES, seed, extra)
    };
    let first = run("a", "5", &[]);
    let faults = faults_json(&first);
    assert!(
        faults.len() >= 4,
        "only {} faults: {faults:?}",
        faults.len()
    );
    // Replay the history's nemesis events: count what is held.
    let history = std::fs::read_to_string(first.join("history.jsonl")).unwrap();
    let mut held: Vec<&str> = Vec::new();
    let mut starts = 0;
    for line in history.lines() {
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        if e["process"] != "nemesis" {
            continue;
        }
        let f = e["f"].as_str().unwrap().to_string();
        match f.as_str() {
            "pause" | "kill" | "start-partition" | "start-network" => {
                starts += 1;
                let with_company = f == "kill"
                    && held.iter().all(|h| *h == "start-network")
                    && e["value"][0] == "leader";
                assert!(
                    held.is_empty() || with_company,
                    "{f} {} started while {held:?} still held",
                    e["value"]
                );
                held.push(if f == "start-network" {
                    "start-network"
                } else {
                    "other"
                });
            }
            "resume" | "start" | "stop-partition" | "stop-network" => {
                assert!(held.pop().is_some(), "an undo with nothing held: {line}");
            }
            _ => {}
        }
    }
    assert!(held.is_empty(), "left held at the end: {held:?}");
    assert_eq!(
        starts,
        faults.len(),
        "every injected fault is in faults.json"
    );
    let replay_from = first.to_string_lossy().into_owned();
    let second = run("b", "99", &["--replay-faults", &replay_from]);
    let replayed = faults_json(&second);
    let key = |f: &serde_json::Value| {
        (
            f["nemesis"].clone(),
            f["action"].clone(),
            f["with_previous"].clone(),
        )
    };
    let (a, b): (Vec<_>, Vec<_>) = (
        faults.iter().map(key).collect(),
        replayed.iter().map(key).collect(),
    );
    assert!(
        b.len() + 1 >= a.len() && a.starts_with(&b),
        "replayed {b:?}\nnot the original {a:?}"
    );
    let _ = std::fs::remove_dir_all(&results);
}
