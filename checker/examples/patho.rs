use ordeal_checker::linear::generate::{corrupt_read, generate, GenOptions, Workload};
use ordeal_checker::linear::{check_kind, CheckOptions, ModelKind, ModelOptions};
use std::time::Duration;
fn main() {
    let opts = GenOptions {
        workload: Workload::CasRegister,
        ops: 93,
        keys: 1,
        clients: 2,
        info_rate: 0.29,
        seed: 3543358975698587692,
    };
    let h = generate(&opts);
    let secs: u64 = std::env::args().nth(1).map_or(5, |s| s.parse().unwrap());
    if std::env::args().nth(2).is_some() {
        ordeal_checker::read::write_edn(&h, &mut std::io::stdout()).unwrap();
        return;
    }
    for observed in [false, true] {
        let o = CheckOptions {
            timeout: Some(Duration::from_secs(secs)),
            ..CheckOptions::default()
        };
        let r = check_kind(
            ModelKind::CasRegister,
            ModelOptions {
                failed_cas_observed: observed,
            },
            &h,
            &o,
        )
        .unwrap();
        println!(
            "observed={observed}: {} steps={} backtracks={} memo={} prefix={} ops={} {}ms",
            r.verdict,
            r.stats.steps,
            r.stats.backtracks,
            r.stats.memo_entries,
            r.stats.longest_prefix,
            r.operations,
            r.stats.elapsed_ms
        );
    }
    for which in 0..5 {
        let mut h2 = h.clone();
        corrupt_read(&mut h2, which);
        let o = CheckOptions {
            timeout: Some(Duration::from_secs(secs)),
            ..CheckOptions::default()
        };
        let r = check_kind(ModelKind::CasRegister, ModelOptions::default(), &h2, &o).unwrap();
        println!(
            "corrupt {which}: {} steps={} {}ms",
            r.verdict, r.stats.steps, r.stats.elapsed_ms
        );
    }
}
