//! Evaluations of the analytics on public data sets nobody here wrote
//! (`../shared/data/`), each runnable with `linepilot eval <name>`: each reads
//! the files, runs the same detector code the daemon uses and returns typed
//! figures plus a Markdown rendering for `docs/EVALUATION.md`.

use std::path::PathBuf;

pub mod cmapss;
pub mod nab;
pub mod tep;

/// Why an evaluation could not run.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A file could not be read.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A line of a file is malformed.
    #[error("{file}:{line}: {message}")]
    Line {
        /// The file.
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The model could not be fitted or used.
    #[error(transparent)]
    Rul(#[from] crate::analytics::rul::RulError),
    /// A file is not in the expected format.
    #[error("{file}: {message}")]
    Data {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        message: String,
    },
}
