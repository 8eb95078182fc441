//! `[[asset_kind]]`: what the maintenance manual says about a kind of machine —
//! how it fails (failure modes with their symptoms, the tags and fault codes that
//! show them, likely causes, checks and spare parts) and how often it is serviced.
//! The anomaly explainer and the maintenance planner read it; it is data for people
//! and agents, never instructions to a model.
//!
//! Tags are named by their suffix within the asset (`vib_de_rms` is
//! `capper.vib_de_rms` on the capper), so one kind serves every machine of it.

use serde::Deserialize;

/// `[[asset_kind]]`: knowledge shared by every `[[asset]]` of one `kind`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetKindConfig {
    /// The `kind` of the `[[asset]]`s this applies to.
    pub kind: String,
    /// Free text: what the machine does.
    #[serde(default)]
    pub description: Option<String>,
    /// Suffix of the tag that counts the main drive's running hours (`run_hours`),
    /// the clock of hour-based service intervals.
    #[serde(default)]
    pub hours_tag: Option<String>,
    /// `[[asset_kind.failure_mode]]`.
    #[serde(default, rename = "failure_mode")]
    pub failure_modes: Vec<FailureModeConfig>,
    /// `[[asset_kind.service]]`.
    #[serde(default, rename = "service")]
    pub services: Vec<ServiceConfig>,
}

/// A way the machine fails.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureModeConfig {
    /// Identifier, unique within the kind (`bearing_wear`).
    pub id: String,
    /// Human name (`Drive-end bearing wear`).
    pub name: String,
    /// What people see, hear or measure when it happens.
    #[serde(default)]
    pub symptoms: Vec<String>,
    /// Tag suffixes whose anomalies or alarms point to it (`vib_de_rms`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Machine fault codes it raises.
    #[serde(default)]
    pub fault_codes: Vec<i64>,
    /// Likely root causes.
    #[serde(default)]
    pub causes: Vec<String>,
    /// Checks to make, in order.
    #[serde(default)]
    pub checks: Vec<String>,
    /// Spare parts a repair needs.
    #[serde(default)]
    pub parts: Vec<String>,
    /// The limit of the condition tag (the first of `tags`) at which the part is
    /// worn out: the maintenance planner projects the tag's trend to it.
    #[serde(default)]
    pub failure_limit: Option<f64>,
}

/// A recurring service task.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// What is done (`Regrease main drive bearings`).
    pub action: String,
    /// Every this many running hours (by the kind's `hours_tag`).
    #[serde(default)]
    pub every_hours: Option<f64>,
    /// Every this many machine cycles (good + reject count).
    #[serde(default)]
    pub every_cycles: Option<f64>,
    /// The failure mode this task prevents (an `id` of this kind).
    #[serde(default)]
    pub prevents: Option<String>,
    /// Spare parts and consumables it needs.
    #[serde(default)]
    pub parts: Vec<String>,
}

impl AssetKindConfig {
    /// The failure modes whose fault codes include `code`.
    pub fn modes_for_code(&self, code: i64) -> impl Iterator<Item = &FailureModeConfig> {
        self.failure_modes.iter().filter(move |m| m.fault_codes.contains(&code))
    }

    /// The failure modes that name `tag` (a full tag name of `asset`) among their tags.
    pub fn modes_for_tag<'a>(&'a self, asset: &'a str, tag: &'a str) -> impl Iterator<Item = &'a FailureModeConfig> {
        self.failure_modes.iter().filter(move |m| m.tags.iter().any(|s| tag_matches(asset, s, tag)))
    }
}

/// Whether `tag` (a full tag name) is the tag `suffix` names on `asset`: `asset.suffix`,
/// or any tag ending in `.suffix` when the asset's tags are named otherwise.
pub fn tag_matches(asset: &str, suffix: &str, tag: &str) -> bool {
    tag.strip_prefix(asset).and_then(|r| r.strip_prefix('.')).is_some_and(|r| r == suffix)
        || tag.rsplit_once('.').is_some_and(|(_, r)| r == suffix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_match_the_assets_tags() {
        assert!(tag_matches("capper", "vib_de_rms", "capper.vib_de_rms"));
        assert!(!tag_matches("capper", "vib_de_rms", "capper.vib_de_peak"));
        assert!(!tag_matches("capper", "vib_de", "capper.vib_de_rms"));
    }
}

/// `[agents]`: what the copilot agents do besides answering.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentsConfig {
    /// Publish every explanation of an alarm or anomaly over MQTT.
    #[serde(default)]
    pub publish: Option<PublishConfig>,
}

/// `[agents] publish`: the broker (that of an MQTT `[[source]]`) and topic prefix.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishConfig {
    /// The `[[source]]` (kind `mqtt`) whose broker, credentials and TLS settings are used.
    pub source: String,
    /// Topic prefix: explanations go to `<topic>/<asset>/explanation`.
    #[serde(default = "default_topic")]
    pub topic: String,
}

fn default_topic() -> String {
    "linepilot".into()
}
