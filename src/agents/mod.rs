//! The copilot agents: they answer operators, explain anomalies, write shift reports
//! and plan maintenance, grounded in the line's own data.
//!
//! - `tools`: typed, read-only tools over the store, the analytics and the plant
//!   model; every number an agent may state comes out of one of them;
//! - `review`: the reviewer, which checks that every number, time and name in a text
//!   appears in the tool results (or the question) and strikes what does not;
//! - `ask`: operator questions: a deterministic intent router picks the tools, a
//!   writer turns the results into text (the model when one is loaded, else a
//!   template), and the reviewer checks it;
//! - `plan`: the maintenance planner: health indicators per asset, remaining useful
//!   life with a band, and ranked work orders (JSON and CSV); `plan_eval` checks it
//!   against a linesim run's ground truth.

pub mod ask;
pub mod eval;
pub mod explain;
pub mod plan;
pub mod plan_eval;
pub mod report;
pub mod review;
pub mod tools;

pub use ask::{Answer, AskOptions};
pub use review::{Review, Reviewer};
pub use tools::{ToolContext, ToolError, ToolOutput};
