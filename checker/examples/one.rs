//! Checks one history file repeatedly, for profiling: `one FILE MODEL [RUNS]`.
use ordeal_checker::linear::{check_kind, CheckOptions, ModelOptions};
use ordeal_checker::read::{read_path, Format};
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let h = read_path(std::path::Path::new(&args[1]), Format::Auto).unwrap();
    let kind = args[2].parse().unwrap();
    let runs: usize = args.get(3).map_or(1, |r| r.parse().unwrap());
    for _ in 0..runs {
        let t = std::time::Instant::now();
        let r = check_kind(kind, ModelOptions::default(), &h, &CheckOptions::default()).unwrap();
        println!("{} {:?} {:?}", r.verdict, r.stats, t.elapsed());
    }
}
