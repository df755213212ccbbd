//! ordeal-checker: histories, models, a linearizability checker and an Elle-style
//! transactional checker. Nothing here does network or process I/O; files are read and written
//! only where a caller hands over a path.

pub mod bank;
pub mod edn;
pub mod error;
pub mod history;
pub mod linear;
pub mod read;
pub mod txn;
pub mod value;

pub use error::HistoryError;
pub use history::{Event, EventType, History, Operation, Outcome, Process};
pub use value::Value;

use serde::{Deserialize, Serialize};

/// What a checker concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Valid,
    /// Out of time or memory budget; the result says what was established.
    Unknown,
    Invalid,
}

impl Verdict {
    /// Exit codes as Jepsen's `test-all`: 0 valid, 1 invalid, 2 unknown.
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Valid => 0,
            Verdict::Invalid => 1,
            Verdict::Unknown => 2,
        }
    }

    /// The worse of two verdicts: invalid beats unknown beats valid.
    pub fn worst(self, other: Verdict) -> Verdict {
        self.max(other)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Valid => "valid",
            Verdict::Invalid => "invalid",
            Verdict::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Verdict;

    #[test]
    fn worst_orders_invalid_over_unknown_over_valid() {
        assert_eq!(Verdict::Valid.worst(Verdict::Unknown), Verdict::Unknown);
        assert_eq!(Verdict::Invalid.worst(Verdict::Unknown), Verdict::Invalid);
        assert_eq!(Verdict::Valid.worst(Verdict::Valid), Verdict::Valid);
    }
}
