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
    /// A value no honest cluster reaches (a round or slot past the limits), refused so that no
    /// arithmetic on it can overflow and no ballot is taken that cannot be exceeded.
    #[error("message from node {from} refused: {what} {value} is over the limit {max}")]
    OutOfRange {
        from: u64,
        what: &'static str,
        value: u64,
        max: u64,
    },
    #[error("snapshot at slot {slot} is ahead of the committed index {committed}")]
    SnapshotAhead { slot: u64, committed: u64 },
}
