//! What `Config::load` reports: one [`Diagnostic`] per problem, each with the
//! file, line, column and key it concerns.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

/// One problem found in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file as it was named to the loader.
    pub file: String,
    /// 1-based line of the offending text.
    pub line: usize,
    /// 1-based column (in characters) of the offending text.
    pub column: usize,
    /// Where in the document, e.g. `tag[3].address.register` (array indices
    /// count from 0, in file order); `(syntax)` for TOML syntax errors.
    pub key: String,
    /// What is wrong, in a short sentence.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}: {}", self.file, self.line, self.column, self.key, self.message)
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigErrors {
    /// The file could not be read at all.
    #[error("{}: cannot read config: {source}", path.display())]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The file was read but has problems; every one found is listed, in file order.
    #[error("{}", Lines(diagnostics))]
    Invalid {
        /// The problems, sorted by position in the file.
        diagnostics: Vec<Diagnostic>,
    },
}

impl ConfigErrors {
    /// The problems found in the text (empty for [`ConfigErrors::Read`]).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigErrors::Read { .. } => &[],
            ConfigErrors::Invalid { diagnostics } => diagnostics,
        }
    }
}

/// Displays diagnostics one per line.
struct Lines<'a>(&'a [Diagnostic]);

impl fmt::Display for Lines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Collects diagnostics for one file, turning byte spans into line and column.
pub(crate) struct Sink<'a> {
    file: String,
    text: &'a str,
    line_starts: Vec<usize>,
    found: Vec<(usize, Diagnostic)>,
}

impl<'a> Sink<'a> {
    pub(crate) fn new(file: &str, text: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Sink { file: file.to_string(), text, line_starts, found: Vec::new() }
    }

    /// 1-based line and column of a byte offset.
    fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line_idx = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let line_start = self.line_starts.get(line_idx).copied().unwrap_or(0);
        let column = self.text.get(line_start..offset).map(|s| s.chars().count()).unwrap_or(0) + 1;
        (line_idx + 1, column)
    }

    /// 1-based line of a byte offset.
    pub(crate) fn line_of(&self, offset: usize) -> usize {
        self.position(offset).0
    }

    /// Records a problem at the start of `span`.
    pub(crate) fn push(&mut self, span: Range<usize>, key: impl Into<String>, message: impl Into<String>) {
        let (line, column) = self.position(span.start);
        self.found.push((
            span.start,
            Diagnostic { file: self.file.clone(), line, column, key: key.into(), message: message.into() },
        ));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// The diagnostics in file order (stable for problems at the same place).
    pub(crate) fn finish(mut self) -> Vec<Diagnostic> {
        self.found.sort_by_key(|(offset, _)| *offset);
        self.found.dedup_by(|a, b| a.1 == b.1);
        self.found.into_iter().map(|(_, d)| d).collect()
    }
}
