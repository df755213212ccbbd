//! `ordeal check FILE`: check any history file.

use clap::Args;

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The history file (JSONL, Jepsen EDN, Jepsen text log).
    pub file: std::path::PathBuf,
}

/// Runs the check and returns the process exit code.
pub fn run(args: CheckArgs) -> i32 {
    eprintln!(
        "ordeal check: {}: checking is not built yet",
        args.file.display()
    );
    255
}
