//! Errors of the consensus core.

/// Errors of the consensus core (bad configuration or input, never programmer error: those
/// panic).
#[derive(Debug, thiserror::Error)]
pub enum PaxosError {
    #[error("unknown bug '{name}' (known: {known})")]
    UnknownBug { name: String, known: String },
    #[error("invalid paxos config: {what}")]
    InvalidConfig { what: String },
    #[error("message from node {from}, which is not a member of this cluster")]
    UnknownPeer { from: u64 },
    #[error("snapshot at slot {slot} is ahead of the committed index {committed}")]
    SnapshotAhead { slot: u64, committed: u64 },
}
