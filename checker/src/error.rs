//! The checker crate's one error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A line that could not be parsed.
    #[error("{path}:{line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// A parsed history that breaks the rules (an ok without an invoke, ...).
    #[error("{}event {index}: {message}", line.map(|l| format!("line {l}, ")).unwrap_or_default())]
    Invalid {
        line: Option<usize>,
        index: usize,
        message: String,
    },
    /// A history that a model cannot interpret (a write with no value, an unknown `f`, ...).
    #[error("{0}")]
    Model(String),
    /// The shared known-verdict test data is not where the tests look for it.
    #[error(
        "{}: missing: the known-verdict test data is not there; build it with \
         `.ci/fetch-testdata` (it writes $ORDEAL_SHARED/testdata, else ../shared/testdata), or \
         point ORDEAL_SHARED at a directory holding testdata/",
        dir.display()
    )]
    MissingTestdata { dir: PathBuf },
}

impl HistoryError {
    /// Attaches a file path to an `Invalid` error, turning it into a `Parse` error at its line.
    pub fn in_file(self, path: &std::path::Path) -> HistoryError {
        match self {
            HistoryError::Invalid {
                line: Some(line),
                message,
                ..
            } => HistoryError::Parse {
                path: path.to_path_buf(),
                line,
                message,
            },
            HistoryError::Invalid {
                line: None,
                index,
                message,
            } => HistoryError::Parse {
                path: path.to_path_buf(),
                line: index + 1,
                message: format!("event {index}: {message}"),
            },
            other => other,
        }
    }
}
