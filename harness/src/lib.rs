//! The `ordeal` harness: cluster control, faults, runner, reports and the CLI's subcommands.

pub mod analyse;
pub mod campaign;
pub mod check;
pub mod checks;
pub mod cluster;
pub mod faults;
pub mod nemesis;
pub mod net;
pub mod plan;
pub mod plots;
pub mod record;
pub mod report;
pub mod runner;
pub mod serve;
pub mod summary;
pub mod target;
