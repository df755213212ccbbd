//! The `ordeal` harness: cluster control, faults, runner, reports and the CLI's subcommands.

pub mod check;
