//! `ordeal`: Jepsen-style consistency tests on one machine.

use clap::{Parser, Subcommand};

/// Reading a big history parses on several threads and frees on another; glibc's allocator
/// spends more time in its arena locks there than in parsing (measured: 2x on 100k txns).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "ordeal",
    version,
    about = "Jepsen-style consistency testing on one machine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a history file for linearizability or serializability.
    Check(ordeal::check::CheckArgs),
    /// Run a test: start a cluster, drive clients, inject faults, check, report.
    Test(Box<ordeal::runner::TestArgs>),
    /// Re-check a stored run and re-render its report.
    Report(ordeal::report::ReportArgs),
    /// Run a campaign file of tests with expected verdicts.
    Campaign(ordeal::campaign::CampaignArgs),
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Check(args) => ordeal::check::run(args),
        Command::Test(args) => ordeal::runner::run_test(*args),
        Command::Report(args) => ordeal::report::run_report(args),
        Command::Campaign(args) => ordeal::campaign::run_campaign(args),
    };
    std::process::exit(code);
}
