//! Typed, read-only tools over the store, the analytics and the plant model.
//!
//! Each tool has a name, a description and a JSON schema of its arguments (so a
//! model can call it under constrained decoding), and returns a compact JSON result
//! whose numbers carry units and whose times are given in the plant's local time
//! (`HH:MM`, and the full local time) as well as UTC. Agents may state only what
//! these results say: the reviewer checks their text against them.

mod analysis;
mod line;
mod production;

use serde::Serialize;
use serde_json::{json, Value as Json};

use crate::config::{Calendar, CalendarError, Config};
use crate::domain::{SeriesId, SeriesKey, Timestamp};
use crate::llm::ToolDefinition;
use crate::store::Store;

pub use analysis::{compare, correlated, maintenance_history};
pub use line::{asset_info, events, line_state, tag_latest, tag_stats};
pub use production::{downtime, oee};

/// Why a tool could not answer.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// An argument is missing or wrong.
    #[error("{tool}: {message}")]
    BadArgument {
        /// The tool.
        tool: &'static str,
        /// What is wrong.
        message: String,
    },
    /// No tool of that name.
    #[error("no tool named `{0}`")]
    UnknownTool(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The event log failed.
    #[error(transparent)]
    Events(#[from] crate::store::events::EventLogError),
    /// OEE or downtime could not be computed.
    #[error(transparent)]
    Oee(#[from] crate::analytics::oee::OeeError),
    /// A time or shift could not be understood.
    #[error(transparent)]
    Calendar(#[from] CalendarError),
}

/// What the tools read: the store, the configuration, the shift calendar, and the
/// time the question is asked at ("now": the newest data when replaying history).
pub struct ToolContext<'a> {
    /// The store.
    pub store: &'a Store,
    /// The plant configuration.
    pub config: &'a Config,
    /// Its shift calendar.
    pub calendar: &'a Calendar,
    /// Now, UTC ns.
    pub now: Timestamp,
}

/// One tool call and its result: a fact an agent may use.
#[derive(Clone, Debug, Serialize)]
pub struct ToolOutput {
    /// The tool.
    pub tool: String,
    /// Its arguments.
    pub args: Json,
    /// Its result.
    pub result: Json,
}

impl<'a> ToolContext<'a> {
    /// A context whose "now" is the newest sample in the store, or the wall clock
    /// when that is earlier (a live line) or the store is empty.
    pub fn at_newest_data(store: &'a Store, config: &'a Config, calendar: &'a Calendar) -> ToolContext<'a> {
        let ids: Vec<SeriesId> = store.series().iter().map(|m| m.id).collect();
        let newest = store.latest(&ids).into_iter().flatten().map(|l| l.ts).max();
        let wall = crate::domain::now_ns();
        let now = newest.map_or(wall, |n| n.min(wall));
        ToolContext { store, config, calendar, now }
    }

    /// The store's series of a configured tag (by its name), if it has data.
    pub(crate) fn series_of(&self, tag: &str) -> Option<SeriesId> {
        self.store.catalog().lookup(&SeriesKey::new(tag)).map(|(id, _)| id)
    }

    /// `HH:MM` in the plant's time zone.
    pub(crate) fn hhmm(&self, ts: Timestamp) -> String {
        let dt = self.calendar.ts_to_local(ts);
        format!("{:02}:{:02}", dt.hour(), dt.minute())
    }

    /// `YYYY-MM-DD HH:MM:SS` in the plant's time zone.
    pub(crate) fn local(&self, ts: Timestamp) -> String {
        let dt = self.calendar.ts_to_local(ts);
        format!("{} {:02}:{:02}:{:02}", dt.date(), dt.hour(), dt.minute(), dt.second())
    }

    /// A time as the tools give it: local `HH:MM`, full local time and RFC 3339 UTC.
    pub(crate) fn time(&self, ts: Timestamp) -> Json {
        json!({ "at": self.hhmm(ts), "local": self.local(ts), "utc": crate::api::query::format_time(ts) })
    }

    /// A window from the arguments: `shift` ("last", "current" or a label such as
    /// `2026-11-28/A`), else `from`/`to` (local or RFC 3339 times), else the last
    /// `hours` (default `default_hours`) before now.
    pub(crate) fn window(
        &self,
        tool: &'static str,
        args: &Json,
        default_hours: f64,
    ) -> Result<(Timestamp, Timestamp, Option<String>), ToolError> {
        if let Some(s) = args.get("shift").and_then(Json::as_str) {
            let w = self.shift(tool, s)?;
            return Ok((w.start, w.end.min(self.now.max(w.start + 1)), Some(w.label)));
        }
        let bad = |m: String| ToolError::BadArgument { tool, message: m };
        let from = args.get("from").and_then(Json::as_str).map(|s| self.calendar.parse_time(s)).transpose()?;
        let to = args.get("to").and_then(Json::as_str).map(|s| self.calendar.parse_time(s)).transpose()?;
        let hours = match args.get("hours") {
            None | Some(Json::Null) => default_hours,
            Some(h) => {
                h.as_f64().filter(|h| *h > 0.0).ok_or_else(|| bad("`hours` must be a positive number".into()))?
            }
        };
        let to = to.unwrap_or(self.now);
        let from = from.unwrap_or(to - (hours * 3.6e12) as i64);
        if from >= to {
            return Err(bad("`from` must be before `to`".into()));
        }
        Ok((from, to, None))
    }

    /// The shift `which` names: "last" (the newest that has ended), "current", or a label.
    pub fn shift(&self, tool: &'static str, which: &str) -> Result<crate::config::ShiftWindow, ToolError> {
        let near = self.calendar.shifts_between(self.now - 48 * 3_600_000_000_000, self.now + 1)?;
        let pick = match which {
            "last" | "previous" => near.into_iter().rev().find(|w| w.end <= self.now),
            "current" => near.into_iter().rev().find(|w| w.start <= self.now && self.now < w.end),
            label => return Ok(self.calendar.shift(label)?),
        };
        pick.ok_or_else(|| ToolError::BadArgument {
            tool,
            message: format!("no {which} shift near now in the calendar"),
        })
    }

    /// The configured asset an argument names (by id or name, any case).
    pub(crate) fn asset(&self, tool: &'static str, name: &str) -> Result<&'a crate::config::AssetConfig, ToolError> {
        self.config
            .assets
            .iter()
            .find(|a| a.id.eq_ignore_ascii_case(name) || a.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| ToolError::BadArgument { tool, message: format!("no asset `{name}` in the configuration") })
    }
}

/// The tools an agent can call, with their argument schemas.
pub fn definitions(config: &Config) -> Vec<ToolDefinition> {
    let assets: Vec<&str> = config.assets.iter().map(|a| a.id.as_str()).collect();
    let tags: Vec<&str> = config.tags.iter().map(|t| t.name.as_str()).collect();
    let window = json!({
        "shift": { "type": "string", "description": "\"last\", \"current\" or a label like 2026-11-28/A" },
        "from": { "type": "string" }, "to": { "type": "string" },
        "hours": { "type": "number", "minimum": 0.01, "maximum": 168 }
    });
    let with = |mut base: serde_json::Map<String, Json>, extra: &Json| {
        if let Some(e) = extra.as_object() {
            base.extend(e.clone());
        }
        Json::Object(base)
    };
    let obj = |props: Json, required: &[&str]| json!({ "type": "object", "properties": props, "required": required, "additionalProperties": false });
    let asset_prop = json!({ "asset": { "type": "string", "enum": assets } });
    let tag_prop = json!({ "tag": { "type": "string", "enum": tags } });
    let def = |name: &str, description: &str, parameters: Json| ToolDefinition {
        name: name.into(),
        description: description.into(),
        parameters,
    };
    let map = |v: &Json| v.as_object().cloned().unwrap_or_default();
    vec![
        def(
            "line_state",
            "Current state of each machine (or one), its fault code and since when.",
            obj(asset_prop.clone(), &[]),
        ),
        def("tag_latest", "Latest value of a tag with unit, time and quality.", obj(tag_prop.clone(), &["tag"])),
        def(
            "tag_stats",
            "Min, max (with times), mean and last of a tag over a window.",
            obj(with(map(&tag_prop), &window), &["tag"]),
        ),
        def(
            "events",
            "Alarms, anomalies, state changes and comms events in a window, newest first.",
            obj(
                with(
                    map(&asset_prop),
                    &with(
                        map(&window),
                        &json!({ "kinds": { "type": "array", "items": { "type": "string", "enum": ["state_change", "alarm", "anomaly", "comms"] } },
                                 "limit": { "type": "integer", "minimum": 1, "maximum": 50 } }),
                    ),
                ),
                &[],
            ),
        ),
        def(
            "oee",
            "OEE, availability, performance, quality and counts of the line and each machine for a shift or window.",
            obj(with(map(&asset_prop), &window), &[]),
        ),
        def(
            "downtime",
            "Downtime by cause and every stop, per machine, for a shift or window.",
            obj(with(map(&asset_prop), &window), &[]),
        ),
        def(
            "asset_info",
            "What the configuration says about a machine: name, kind, description, tags and units, and its maintenance manual: failure modes (symptoms, causes, checks, parts) and service intervals.",
            obj(asset_prop.clone(), &["asset"]),
        ),
        def(
            "maintenance_plan",
            "Health of each machine (vibration and temperature trends, margins to alarm limits, run hours and cycles against service intervals), remaining useful life with a 10-90 % band, and ranked work orders.",
            obj(
                with(
                    map(&asset_prop),
                    &json!({ "hours": { "type": "number", "minimum": 0.25, "maximum": 168, "description": "look-back of the trends" },
                             "horizon_hours": { "type": "number", "minimum": 1, "maximum": 8784 } }),
                ),
                &[],
            ),
        ),
        def(
            "compare",
            "Compare two periods: a tag's statistics (with `tag`) or the OEE of the line or one machine, and the change from the first period to the second.",
            obj(
                with(
                    with(map(&tag_prop), &asset_prop).as_object().cloned().unwrap_or_default(),
                    &json!({ "first": { "type": "object", "properties": window.clone(), "additionalProperties": false },
                             "second": { "type": "object", "properties": window.clone(), "additionalProperties": false } }),
                ),
                &["first", "second"],
            ),
        ),
        def(
            "correlated",
            "The tags that moved with an anomaly: Pearson correlation of one-minute means with the event's tag (or a tag over a window), strongest first.",
            obj(
                with(
                    with(map(&tag_prop), &window).as_object().cloned().unwrap_or_default(),
                    &json!({ "event": { "type": "integer", "minimum": 1 },
                             "scope": { "type": "string", "enum": ["asset", "line"] },
                             "limit": { "type": "integer", "minimum": 1, "maximum": 20 } }),
                ),
                &[],
            ),
        ),
        def(
            "maintenance_history",
            "Maintenance done on the machines (service tasks and repairs recorded), newest first.",
            obj(
                with(map(&asset_prop), &json!({ "hours": { "type": "number", "minimum": 1, "maximum": 8784 } })),
                &[],
            ),
        ),
    ]
}

/// Runs the tool `name` with `args`.
pub fn run(ctx: &ToolContext<'_>, name: &str, args: &Json) -> Result<ToolOutput, ToolError> {
    let result = match name {
        "line_state" => line_state(ctx, args)?,
        "tag_latest" => tag_latest(ctx, args)?,
        "tag_stats" => tag_stats(ctx, args)?,
        "events" => events(ctx, args)?,
        "oee" => oee(ctx, args)?,
        "downtime" => downtime(ctx, args)?,
        "asset_info" => asset_info(ctx, args)?,
        "compare" => compare(ctx, args)?,
        "correlated" => correlated(ctx, args)?,
        "maintenance_history" => maintenance_history(ctx, args)?,
        "maintenance_plan" => super::plan::tool(ctx, args)?,
        other => return Err(ToolError::UnknownTool(other.to_string())),
    };
    Ok(ToolOutput { tool: name.to_string(), args: args.clone(), result })
}

/// Rounds to `d` decimals (for compact results; the reviewer accepts any rounding
/// of a result's number, so rounding here only shortens what the model reads).
pub(crate) fn round(v: f64, d: i32) -> f64 {
    let p = 10f64.powi(d);
    (v * p).round() / p
}

/// A required string argument.
pub(crate) fn arg<'j>(tool: &'static str, args: &'j Json, key: &str) -> Result<&'j str, ToolError> {
    args.get(key)
        .and_then(Json::as_str)
        .ok_or_else(|| ToolError::BadArgument { tool, message: format!("`{key}` is required") })
}
