//! Throughput of the etcd-v3 client against a real 3-node etcd on loopback: closed-loop
//! clients issue generated ops back to back for a fixed time, and the bench prints ops/s with
//! the CPU time the bench process and the etcd nodes used, to show which side is the
//! bottleneck.
//!
//! `cargo run --release -p ordeal-workloads --example etcd_bench -- [SECONDS] [CONCURRENCY] [WORKLOAD...]`
//! (defaults: 10 s, 32 clients, register and list-append). Needs /usr/bin/etcd.

#[path = "../tests/common/mod.rs"]
mod common;

use ordeal_checker::EventType;
use ordeal_workloads::{Generator, GeneratorConfig, Protocol, ReadConsistency, WorkloadKind};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// utime + stime of a process, in seconds (from /proc; 0 where unreadable).
fn cpu_s(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<f64>().ok()))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz.max(1.0)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seconds: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(10);
    let concurrency: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(32);
    let mut workloads: Vec<WorkloadKind> = args
        .iter()
        .skip(2)
        .map(|a| a.parse().expect("a workload name"))
        .collect();
    if workloads.is_empty() {
        workloads = vec![WorkloadKind::Register, WorkloadKind::ListAppend];
    }
    let Some(bin) = common::etcd_bin("etcd_bench") else {
        return;
    };
    let cluster = common::EtcdCluster::start(&bin, 3);
    let urls = cluster.urls();
    let client = common::client(Duration::from_secs(5), ReadConsistency::Linearizable);
    let etcd_pids: Vec<u32> = cluster.nodes.iter().map(|n| n.child.id()).collect();
    println!("3-node etcd, {concurrency} closed-loop clients, {seconds} s per workload");
    for (w, workload) in workloads.into_iter().enumerate() {
        let generator = Arc::new(Mutex::new(Generator::new(
            GeneratorConfig::for_workload(workload, w as u64, concurrency)
                .with_protocol(Protocol::EtcdV3),
        )));
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let (self_cpu0, etcd_cpu0) = (
            cpu_s(std::process::id()),
            etcd_pids.iter().map(|p| cpu_s(*p)).sum::<f64>(),
        );
        let start = Instant::now();
        let tasks: Vec<_> = (0..concurrency)
            .map(|c| {
                let (client, generator) = (client.clone(), generator.clone());
                let url = urls[c % urls.len()].clone();
                tokio::spawn(async move {
                    let mut counts = [0u64; 3];
                    while Instant::now() < deadline {
                        let op = generator.lock().unwrap().next_op();
                        let done = client.invoke(&url, &op).await;
                        counts[match done.kind {
                            EventType::Ok => 0,
                            EventType::Fail => 1,
                            _ => 2,
                        }] += 1;
                    }
                    counts
                })
            })
            .collect();
        let mut counts = [0u64; 3];
        for t in tasks {
            let c = t.await.expect("client task");
            (0..3).for_each(|i| counts[i] += c[i]);
        }
        let elapsed = start.elapsed().as_secs_f64();
        let self_cpu = cpu_s(std::process::id()) - self_cpu0;
        let etcd_cpu = etcd_pids.iter().map(|p| cpu_s(*p)).sum::<f64>() - etcd_cpu0;
        let total: u64 = counts.iter().sum();
        println!(
            "{workload:>12}: {:>7.0} ops/s attempted, {:>7.0} ok/s ({} ok, {} fail, {} info); CPU: bench {:.1} s, etcd {:.1} s of {elapsed:.1} s",
            total as f64 / elapsed,
            counts[0] as f64 / elapsed,
            counts[0],
            counts[1],
            counts[2],
            self_cpu,
            etcd_cpu
        );
    }
}
