//! `ordeal`: Jepsen-style consistency tests on one machine.

use clap::{Parser, Subcommand};

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
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Check(args) => ordeal::check::run(args),
    };
    std::process::exit(code);
}
