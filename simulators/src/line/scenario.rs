//! Scenario files (`configs/scenarios/*.toml`): the seed, the shift calendar,
//! production targets, scheduled faults and the servers' listen addresses.
//!
//! Fault times are offsets from the start of the run (`start = "1h 40m"`),
//! so the same scenario works for a history run (which starts at `start`) and
//! a live run (which starts now). Shift times are times of day in UTC.

use std::path::Path;

use serde::Deserialize;

use super::catalog::{Catalog, MACHINES};
use crate::server::{ModbusConfig, MqttConfig, OpcUaConfig};

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {key}: {message}")]
    Invalid { path: String, key: String, message: String },
}

/// A whole scenario file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// A short name, written into the ground truth.
    #[serde(default = "default_name")]
    pub name: String,
    /// Seed of every random number: same seed, same line, bit for bit.
    pub seed: u64,
    /// Start of a history run (RFC 3339, e.g. "2026-11-28T06:00:00Z").
    #[serde(default = "default_start")]
    pub start: String,
    /// The shift calendar; times of day outside every shift are planned idle time.
    #[serde(default, rename = "shift")]
    pub shifts: Vec<Shift>,
    /// Faults and planned events, in any order.
    #[serde(default, rename = "fault")]
    pub faults: Vec<Fault>,
    /// Machine speed setpoints (bottles per minute) that differ from the design speed.
    #[serde(default)]
    pub speed_sp: std::collections::BTreeMap<String, f64>,
    #[serde(default)]
    pub opcua: OpcUaConfig,
    #[serde(default)]
    pub modbus: ModbusConfig,
    #[serde(default)]
    pub mqtt: MqttConfig,
}

/// One shift of the calendar.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shift {
    /// "A", "B", ...
    pub name: String,
    /// Time of day, "06:00" (UTC).
    pub start: String,
    /// Time of day; an end before the start crosses midnight.
    pub end: String,
    /// Production target: good bottles out of the case packer.
    #[serde(default)]
    pub target: u64,
    /// Planned stops (breaks): the whole line goes idle.
    #[serde(default, rename = "break")]
    pub breaks: Vec<Break>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Break {
    /// Time of day, "10:00" (UTC).
    pub start: String,
    pub minutes: u32,
}

/// A scheduled fault or event.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// bearing_wear | heater_degradation | valve_drift | jam | stuck_sensor |
    /// comms_loss | material_starvation | changeover
    pub kind: FaultKind,
    /// Offset from the start of the run, e.g. "1h 40m".
    pub start: String,
    /// How long it lasts (not for bearing_wear, which ends in a failure and a repair).
    #[serde(default)]
    pub duration: Option<String>,
    /// The machine it hits (bearing_wear, heater_degradation (washer), valve_drift (filler), jam,
    /// material_starvation (depalletizer); changeover: the whole line when absent).
    #[serde(default)]
    pub asset: Option<String>,
    /// bearing_wear: "de" or "nde".
    #[serde(default)]
    pub bearing: Option<String>,
    /// bearing_wear: how long vibration ramps before the bearing fails.
    #[serde(default)]
    pub ramp: Option<String>,
    /// bearing_wear: downtime to replace the bearing after the failure.
    #[serde(default)]
    pub repair: Option<String>,
    /// heater_degradation: share of heater power lost (0..1).
    #[serde(default)]
    pub severity: Option<f64>,
    /// valve_drift: valve number (1-based).
    #[serde(default)]
    pub valve: Option<usize>,
    /// valve_drift: drift in ml per hour (negative: under-fill).
    #[serde(default)]
    pub rate_ml_per_h: Option<f64>,
    /// stuck_sensor: the tag whose value freezes.
    #[serde(default)]
    pub tag: Option<String>,
    /// comms_loss: "opcua", "modbus" or "mqtt".
    #[serde(default)]
    pub server: Option<String>,
    /// changeover: speed setpoint factor after the changeover (new product), default 1.
    #[serde(default)]
    pub speed_factor: Option<f64>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    BearingWear,
    HeaterDegradation,
    ValveDrift,
    Jam,
    StuckSensor,
    CommsLoss,
    MaterialStarvation,
    Changeover,
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::BearingWear => "bearing_wear",
            FaultKind::HeaterDegradation => "heater_degradation",
            FaultKind::ValveDrift => "valve_drift",
            FaultKind::Jam => "jam",
            FaultKind::StuckSensor => "stuck_sensor",
            FaultKind::CommsLoss => "comms_loss",
            FaultKind::MaterialStarvation => "material_starvation",
            FaultKind::Changeover => "changeover",
        }
    }
}

fn default_name() -> String {
    "scenario".into()
}
fn default_start() -> String {
    "2026-11-28T06:00:00Z".into()
}

/// Which server a comms loss silences.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    OpcUa,
    Modbus,
    Mqtt,
}

/// A fault resolved against the catalog, with times in ns from the run start.
#[derive(Clone, Debug)]
pub struct Planned {
    pub kind: FaultKind,
    pub start_ns: i64,
    /// End of the fault (for bearing wear: the failure time, i.e. start + ramp).
    pub end_ns: i64,
    /// Machine index in `MACHINES` (when the fault hits a machine).
    pub machine: Option<usize>,
    pub bearing: usize,
    pub repair_ns: i64,
    pub severity: f64,
    pub valve: usize,
    pub rate_ml_per_h: f64,
    pub tag: Option<usize>,
    pub server: Option<Server>,
    pub speed_factor: f64,
}

/// A shift resolved to seconds of the day.
#[derive(Clone, Debug)]
pub struct ShiftPlan {
    pub name: String,
    pub start_s: u32,
    pub end_s: u32,
    pub target: u64,
    /// (start second of day, length in seconds)
    pub breaks: Vec<(u32, u32)>,
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io { path: p.clone(), source })?;
        Scenario::parse(&text, &p)
    }

    /// Parses and checks a scenario; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Scenario, ScenarioError> {
        let s: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Parse {
            path: path.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let catalog = Catalog::build().0;
        s.faults(&catalog, path)?;
        s.shift_plan(path)?;
        s.start_ns(path)?;
        for k in s.speed_sp.keys() {
            if !MACHINES.iter().any(|m| m.id == k) {
                return Err(invalid(path, &format!("speed_sp.{k}"), "not a machine of the line"));
            }
        }
        Ok(s)
    }

    /// The history start, ns since the epoch.
    pub fn start_ns(&self, path: &str) -> Result<i64, ScenarioError> {
        let t = humantime::parse_rfc3339_weak(self.start.trim_end_matches('Z'))
            .map_err(|e| invalid(path, "start", &format!("not an RFC 3339 time: {e}")))?;
        let d = t.duration_since(std::time::UNIX_EPOCH).map_err(|_| invalid(path, "start", "before 1970"))?;
        Ok(d.as_nanos() as i64)
    }

    pub fn shift_plan(&self, path: &str) -> Result<Vec<ShiftPlan>, ScenarioError> {
        let mut out = Vec::new();
        for (i, s) in self.shifts.iter().enumerate() {
            let key = |k: &str| format!("shift[{i}].{k}");
            let start_s = time_of_day(&s.start).ok_or_else(|| invalid(path, &key("start"), "expected HH:MM"))?;
            let end_s = time_of_day(&s.end).ok_or_else(|| invalid(path, &key("end"), "expected HH:MM"))?;
            let mut breaks = Vec::new();
            for (j, b) in s.breaks.iter().enumerate() {
                let bs = time_of_day(&b.start)
                    .ok_or_else(|| invalid(path, &key(&format!("break[{j}].start")), "expected HH:MM"))?;
                breaks.push((bs, b.minutes * 60));
            }
            out.push(ShiftPlan { name: s.name.clone(), start_s, end_s, target: s.target, breaks });
        }
        Ok(out)
    }

    /// The faults, resolved and checked, in start order.
    pub fn faults(&self, catalog: &Catalog, path: &str) -> Result<Vec<Planned>, ScenarioError> {
        let mut out = Vec::new();
        for (i, f) in self.faults.iter().enumerate() {
            let key = |k: &str| format!("fault[{i}].{k}");
            let dur = |v: &Option<String>, k: &str| -> Result<Option<i64>, ScenarioError> {
                match v {
                    None => Ok(None),
                    Some(s) => humantime::parse_duration(s)
                        .map(|d| Some(d.as_nanos() as i64))
                        .map_err(|e| invalid(path, &key(k), &format!("not a duration: {e}"))),
                }
            };
            let start_ns = dur(&Some(f.start.clone()), "start")?.unwrap_or(0);
            let need = |v: Option<i64>, k: &str| v.ok_or_else(|| invalid(path, &key(k), "required for this kind"));
            let machine = match &f.asset {
                None => None,
                Some(a) => Some(MACHINES.iter().position(|m| m.id == a).ok_or_else(|| {
                    let ids: Vec<&str> = MACHINES.iter().map(|m| m.id).collect();
                    invalid(path, &key("asset"), &format!("`{a}` is not a machine (one of {})", ids.join(", ")))
                })?),
            };
            let mut p = Planned {
                kind: f.kind,
                start_ns,
                end_ns: start_ns,
                machine,
                bearing: 0,
                repair_ns: 0,
                severity: f.severity.unwrap_or(0.6),
                valve: 0,
                rate_ml_per_h: f.rate_ml_per_h.unwrap_or(-3.0),
                tag: None,
                server: None,
                speed_factor: f.speed_factor.unwrap_or(1.0),
            };
            let need_machine = |want: Option<&str>| -> Result<usize, ScenarioError> {
                match (machine, want) {
                    (Some(m), Some(w)) if MACHINES[m].id != w => {
                        Err(invalid(path, &key("asset"), &format!("{} hits the {w} only", f.kind.name())))
                    }
                    (Some(m), _) => Ok(m),
                    (None, Some(w)) => Ok(MACHINES.iter().position(|m| m.id == w).unwrap_or(0)),
                    (None, None) => Err(invalid(path, &key("asset"), "required for this kind")),
                }
            };
            match f.kind {
                FaultKind::BearingWear => {
                    p.machine = Some(need_machine(None)?);
                    p.bearing = match f.bearing.as_deref().unwrap_or("de") {
                        "de" => 0,
                        "nde" => 1,
                        other => return Err(invalid(path, &key("bearing"), &format!("`{other}`: expected de or nde"))),
                    };
                    p.end_ns = start_ns + need(dur(&f.ramp, "ramp")?, "ramp")?;
                    p.repair_ns = dur(&f.repair, "repair")?.unwrap_or(30 * 60 * 1_000_000_000);
                }
                FaultKind::HeaterDegradation => {
                    p.machine = Some(need_machine(Some("washer"))?);
                    p.end_ns = start_ns + need(dur(&f.duration, "duration")?, "duration")?;
                    if !(0.0..=1.0).contains(&p.severity) {
                        return Err(invalid(path, &key("severity"), "must be between 0 and 1"));
                    }
                }
                FaultKind::ValveDrift => {
                    p.machine = Some(need_machine(Some("filler"))?);
                    p.end_ns = start_ns + need(dur(&f.duration, "duration")?, "duration")?;
                    let v = f.valve.unwrap_or(1);
                    if v == 0 || v > super::catalog::FILL_VALVES {
                        return Err(invalid(path, &key("valve"), "valve numbers are 1..=12"));
                    }
                    p.valve = v - 1;
                }
                FaultKind::Jam => {
                    p.machine = Some(need_machine(None)?);
                    p.end_ns = start_ns + need(dur(&f.duration, "duration")?, "duration")?;
                }
                FaultKind::MaterialStarvation => {
                    p.machine = Some(need_machine(Some("depalletizer"))?);
                    p.end_ns = start_ns + need(dur(&f.duration, "duration")?, "duration")?;
                }
                FaultKind::Changeover => {
                    p.end_ns = start_ns + need(dur(&f.duration, "duration")?, "duration")?;
                }
                FaultKind::StuckSensor => {
                    p.end_ns = start_ns + need(dur(&f.duration, "duration")?, "duration")?;
                    let name =
                        f.tag.as_deref().ok_or_else(|| invalid(path, &key("tag"), "required for stuck_sensor"))?;
                    p.tag =
                        Some(catalog.find(name).ok_or_else(|| {
                            invalid(path, &key("tag"), &format!("`{name}` is not a tag of the line"))
                        })?);
                }
                FaultKind::CommsLoss => {
                    p.end_ns = start_ns + need(dur(&f.duration, "duration")?, "duration")?;
                    p.server = Some(match f.server.as_deref() {
                        Some("opcua") => Server::OpcUa,
                        Some("modbus") => Server::Modbus,
                        Some("mqtt") => Server::Mqtt,
                        _ => return Err(invalid(path, &key("server"), "expected opcua, modbus or mqtt")),
                    });
                }
            }
            out.push(p);
        }
        out.sort_by_key(|p| p.start_ns);
        Ok(out)
    }
}

fn invalid(path: &str, key: &str, message: &str) -> ScenarioError {
    ScenarioError::Invalid { path: path.to_string(), key: key.to_string(), message: message.to_string() }
}

/// "HH:MM" → seconds of the day.
fn time_of_day(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 3600 + m * 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_key() {
        let e = Scenario::parse("seed = 1\n[[fault]]\nkind = \"jam\"\nstart = \"1h\"\n", "s.toml").unwrap_err();
        assert_eq!(e.to_string(), "s.toml: fault[0].asset: required for this kind");
        let e = Scenario::parse("seed = 1\n[[fault]]\nkind = \"meltdown\"\nstart = \"1h\"\n", "s.toml").unwrap_err();
        assert!(e.to_string().contains("line 3"), "{e}");
        let e = Scenario::parse("seed = 1\n[[shift]]\nname = \"A\"\nstart = \"6\"\nend = \"14:00\"\n", "s.toml")
            .unwrap_err();
        assert_eq!(e.to_string(), "s.toml: shift[0].start: expected HH:MM");
    }
}
