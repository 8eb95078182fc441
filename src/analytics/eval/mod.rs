//! Evaluations of the analytics on public data sets nobody here wrote
//! (`../shared/data/`), each runnable with `linepilot eval <name>`.

use std::path::PathBuf;

pub mod nab;

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
    /// A file is not in the expected format.
    #[error("{file}: {message}")]
    Data {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        message: String,
    },
}
