//! Evaluations of the analytics on public data sets (`../shared/data/`):
//! each reads the files, runs the same detector code the daemon uses and
//! returns typed figures plus a Markdown rendering for `docs/EVALUATION.md`.

pub mod tep;
