//! Configuration: TOML with serde, validated at load time with file/line/key errors.
//!
//! [`Config::load`] reads the whole file and reports every problem it can find,
//! each as `FILE:LINE:COL: KEY: MESSAGE`: TOML syntax (then it stops), unknown keys,
//! wrong types, missing keys, duplicate names, references to unknown areas, lines,
//! assets and sources, bad tag addresses, bad alarm settings and alarm templates
//! that match no tag. See
//! `configs/example.toml` ([`EXAMPLE`]) for a documented file.
//!
//! Each section struct derives `Deserialize` with `deny_unknown_fields`; the root is
//! assembled by the loader, which deserializes every section and every `[[...]]`
//! entry on its own so that one bad entry does not hide problems in the next.

mod address;
pub mod alarms;
pub mod calendar;
mod diagnostic;
pub mod knowledge;
mod load;
mod plant;
mod source;
pub mod units;

#[cfg(test)]
mod tests;

use std::path::Path;

use crate::api::config::ApiConfig;
use crate::store::config::StoreConfig;

pub use address::{
    JsonPath, JsonPathSegment, LabelTemplate, ModbusAddress, ModbusDataType, ModbusTable, MqttAddress, NodeIdentifier,
    OpcUaNodeId, TagAddress, WordOrder,
};
pub use alarms::{AlarmTemplateConfig, AlarmsConfig, Priority, TagAlarmSettings};
pub use calendar::{BreakConfig, Calendar, CalendarError, PlannedStopConfig, ShiftConfig, ShiftWindow};
pub use diagnostic::{ConfigErrors, Diagnostic};
pub use plant::{
    AreaConfig, AssetConfig, AssetCountersConfig, AssetStateConfig, LineConfig, SiteConfig, TagConfig, TagLimits,
};
pub use source::{
    ModbusEndpoint, ModbusSourceConfig, MqttProtocol, MqttSourceConfig, OpcUaMode, OpcUaSecurity, OpcUaSourceConfig,
    Parity, SecurityMode, SecurityPolicy, SourceConfig, SourceKind,
};

/// The documented example config (`linepilot generate-config` prints it).
pub const EXAMPLE: &str = include_str!("../../configs/example.toml");

/// The whole gateway configuration, checked: every reference resolves and every
/// address parsed. Only [`Config::load`] and [`Config::from_str_named`] make one.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// `[site]`: plant name and time zone.
    pub site: SiteConfig,
    /// `[store]`: the embedded time-series store.
    pub store: StoreConfig,
    /// `[api]`: the HTTP API.
    pub api: ApiConfig,
    /// `[[area]]` entries, in file order.
    pub areas: Vec<AreaConfig>,
    /// `[[line]]` entries, in file order.
    pub lines: Vec<LineConfig>,
    /// `[[asset]]` entries, in file order.
    pub assets: Vec<AssetConfig>,
    /// `[[source]]` entries, in file order.
    pub sources: Vec<SourceConfig>,
    /// `[[tag]]` entries, in file order.
    pub tags: Vec<TagConfig>,
    /// `[alarms]`: the alarm engine as a whole (chattering, shelving).
    pub alarms: AlarmsConfig,
    /// `[[alarm_template]]` entries, in file order.
    pub alarm_templates: Vec<AlarmTemplateConfig>,
    /// `[[shift]]` entries: the shift calendar, in the site's time zone.
    pub shifts: Vec<ShiftConfig>,
    /// `[[planned_stop]]` entries: time taken out of planned production.
    pub planned_stops: Vec<PlannedStopConfig>,
    /// `[llm]`: the local model, the cloud model and when to escalate; without the
    /// section the daemon runs no language model.
    pub llm: Option<crate::llm::config::LlmConfig>,
    /// `[[asset_kind]]` entries: failure modes and service intervals per kind of machine.
    pub asset_kinds: Vec<knowledge::AssetKindConfig>,
    /// `[agents]`: publishing explanations.
    pub agents: knowledge::AgentsConfig,
}

impl Config {
    /// Reads and checks the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigErrors::Read { path: path.to_path_buf(), source })?;
        Config::from_str_named(&text, &path.display().to_string())
    }

    /// Checks config text; `name` is the file name used in diagnostics.
    pub fn from_str_named(text: &str, name: &str) -> Result<Config, ConfigErrors> {
        load::load(text, name)
    }

    /// The alarm settings in force for `tag`: its `[[alarm_template]]`s merged in
    /// file order, then its own keys.
    pub fn tag_alarms(&self, tag: &TagConfig) -> TagAlarmSettings {
        TagAlarmSettings::resolve(tag, &self.assets, &self.alarm_templates)
    }

    /// The `[[asset]]` with this id.
    pub fn asset(&self, id: &str) -> Option<&AssetConfig> {
        self.assets.iter().find(|a| a.id == id)
    }

    /// What `[[asset_kind]]` says about the asset `id`'s kind.
    pub fn asset_kind_of(&self, id: &str) -> Option<&knowledge::AssetKindConfig> {
        let kind = &self.asset(id)?.kind;
        self.asset_kinds.iter().find(|k| &k.kind == kind)
    }

    /// The `[[tag]]` with this name.
    pub fn tag(&self, name: &str) -> Option<&TagConfig> {
        self.tags.iter().find(|t| t.name == name)
    }

    /// The `[[source]]` with this id.
    pub fn source(&self, id: &str) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| s.id() == id)
    }
}
