//! Machine state per asset, derived from samples: the [`LineState`] tracker.
//!
//! Each `[[asset]]` with a `state` config gets a tracker that reads either a PLC state
//! word (`tag` + `codes`) or a rule (fault code not 0 → fault, speed above
//! `running_speed` → running, else starved / blocked / idle from flags). A bad-quality
//! sample of an input makes the state `unknown` until a good one arrives; a gap
//! without samples keeps the last state (sources report by exception).
//!
//! The tracker is pure and driven by samples only, so the daemon can run it on every
//! committed sample and `analytics::oee` can replay a stored range through the same
//! code. Inputs that arrive with the same timestamp are evaluated together: a state
//! is decided once a sample with a later timestamp arrives for that asset (or on
//! [`LineState::flush`]), so a state word and its fault code written in one PLC scan
//! give one transition, not two.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::json;

use crate::config::{AssetStateConfig, Config};
use crate::domain::{Event, EventKind, MachineState, QualityClass, Sample, SeriesId, Timestamp, Value};

/// One transition of a machine's state.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StateChange {
    /// The `[[asset]]` id.
    pub asset: String,
    /// When the new state began, UTC ns (the timestamp of the sample that showed it).
    pub ts: Timestamp,
    /// The new state.
    pub state: MachineState,
    /// With `fault`: the active fault code, when known and not 0.
    pub fault_code: Option<i64>,
    /// The state before (None for the first state an asset reports).
    pub previous: Option<MachineState>,
    /// The previous state's fault code.
    pub previous_fault_code: Option<i64>,
    /// When the previous state began, UTC ns.
    pub previous_since: Option<Timestamp>,
}

/// The downtime cause of a state: none while running; `fault_<code>` (or `fault`),
/// `starved`, `blocked`, `setup`, `idle` or `unknown` otherwise.
pub fn cause(state: MachineState, fault_code: Option<i64>) -> Option<String> {
    match (state, fault_code) {
        (MachineState::Running, _) => None,
        (MachineState::Fault, Some(c)) => Some(format!("fault_{c}")),
        (s, _) => Some(s.as_str().to_string()),
    }
}

impl StateChange {
    /// How long the previous state lasted, ns.
    pub fn previous_duration_ns(&self) -> Option<i64> {
        self.previous_since.map(|s| self.ts - s)
    }

    /// The downtime cause of the new state (see [`cause`]).
    pub fn cause(&self) -> Option<String> {
        cause(self.state, self.fault_code)
    }

    /// The event for the event log: kind `state_change`, severity 500 for a fault,
    /// 100 for another stop, 0 for running; details carry every field.
    pub fn to_event(&self) -> Event {
        let label = |s: MachineState, c: Option<i64>| match c {
            Some(c) => format!("{s} ({c})"),
            None => s.to_string(),
        };
        let now = label(self.state, self.fault_code);
        let message = match (self.previous, self.previous_duration_ns()) {
            (Some(p), Some(d)) => {
                format!("{}: {} -> {now} after {}", self.asset, label(p, self.previous_fault_code), human_duration(d))
            }
            _ => format!("{}: {now}", self.asset),
        };
        let severity = match self.state {
            MachineState::Fault => 500,
            MachineState::Running => 0,
            _ => 100,
        };
        Event {
            id: 0,
            ts: self.ts,
            asset: Some(self.asset.clone()),
            kind: EventKind::StateChange,
            severity,
            message,
            details: json!({
                "state": self.state,
                "fault_code": self.fault_code,
                "cause": self.cause(),
                "previous": self.previous,
                "previous_fault_code": self.previous_fault_code,
                "previous_duration_s": self.previous_duration_ns().map(|d| d as f64 / 1e9),
            }),
        }
    }
}

/// `3h 2m 5s`, `4m 10s`, `12.3s`.
pub fn human_duration(ns: i64) -> String {
    let s = ns as f64 / 1e9;
    if s < 60.0 {
        return format!("{s:.1}s");
    }
    let total = s.round() as i64;
    let (h, m, sec) = (total / 3600, total % 3600 / 60, total % 60);
    if h > 0 {
        format!("{h}h {m}m {sec}s")
    } else {
        format!("{m}m {sec}s")
    }
}

/// Which input of an asset's state a series feeds.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Input {
    StateWord,
    FaultCode,
    Speed,
    Starved,
    Blocked,
}

/// The latest value of an input: not seen yet, bad, or a value.
#[derive(Clone, Debug, PartialEq)]
enum Reading<T> {
    Unseen,
    Bad,
    Good(T),
}

impl<T: Copy> Reading<T> {
    fn good(&self) -> Option<T> {
        match self {
            Reading::Good(v) => Some(*v),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
struct AssetTracker {
    id: String,
    /// State word value (as text) -> state.
    codes: HashMap<String, MachineState>,
    /// Rule mode (no state word).
    rule: bool,
    running_speed: f64,
    word: Reading<MachineState>,
    fault_code: Reading<i64>,
    speed: Reading<f64>,
    starved: Reading<bool>,
    blocked: Reading<bool>,
    /// Timestamp of inputs not yet evaluated.
    pending: Option<Timestamp>,
    /// The state now: (state, fault code, since).
    current: Option<(MachineState, Option<i64>, Timestamp)>,
}

/// A state word's value as the text its `codes` key is written in.
fn code_key(v: &Value) -> String {
    match v {
        Value::I64(i) => i.to_string(),
        Value::F64(x) if x.fract() == 0.0 && x.abs() < 9.0e15 => (*x as i64).to_string(),
        Value::F64(x) => x.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Str(s) => s.clone(),
    }
}

impl AssetTracker {
    fn new(id: &str, cfg: &AssetStateConfig) -> AssetTracker {
        AssetTracker {
            id: id.to_string(),
            codes: cfg.codes.iter().map(|(k, v)| (k.trim().to_string(), *v)).collect(),
            rule: cfg.tag.is_none(),
            running_speed: cfg.running_speed,
            word: Reading::Unseen,
            fault_code: Reading::Unseen,
            speed: Reading::Unseen,
            starved: Reading::Unseen,
            blocked: Reading::Unseen,
            pending: None,
            current: None,
        }
    }

    fn set(&mut self, input: Input, s: &Sample) {
        let bad = s.quality.class() == QualityClass::Bad;
        let num = if bad { None } else { s.value.as_f64().filter(|x| x.is_finite()) };
        fn reading<T>(bad: bool, v: Option<T>) -> Reading<T> {
            match (bad, v) {
                (false, Some(v)) => Reading::Good(v),
                _ => Reading::Bad,
            }
        }
        match input {
            Input::StateWord => {
                self.word = if bad {
                    Reading::Bad
                } else {
                    Reading::Good(self.codes.get(&code_key(&s.value)).copied().unwrap_or(MachineState::Unknown))
                }
            }
            Input::FaultCode => self.fault_code = reading(bad, num.map(|x| x.round() as i64)),
            Input::Speed => self.speed = reading(bad, num),
            Input::Starved => self.starved = reading(bad, num.map(|x| x != 0.0)),
            Input::Blocked => self.blocked = reading(bad, num.map(|x| x != 0.0)),
        }
    }

    /// The state the inputs give now.
    fn derive(&self) -> (MachineState, Option<i64>) {
        let code = self.fault_code.good().filter(|&c| c != 0);
        if !self.rule {
            let state = self.word.good().unwrap_or(MachineState::Unknown);
            return (state, if state == MachineState::Fault { code } else { None });
        }
        if code.is_some() {
            return (MachineState::Fault, code);
        }
        let state = match self.speed.good() {
            None => MachineState::Unknown,
            Some(v) if v > self.running_speed => MachineState::Running,
            Some(_) if self.starved.good() == Some(true) => MachineState::Starved,
            Some(_) if self.blocked.good() == Some(true) => MachineState::Blocked,
            Some(_) => MachineState::Idle,
        };
        (state, None)
    }

    /// Decides the state of the pending inputs.
    fn evaluate(&mut self) -> Option<StateChange> {
        let ts = self.pending.take()?;
        let (state, code) = self.derive();
        if let Some((s, c, _)) = self.current {
            if s == state && c == code {
                return None;
            }
        }
        let prev = self.current.replace((state, code, ts));
        Some(StateChange {
            asset: self.id.clone(),
            ts,
            state,
            fault_code: code,
            previous: prev.map(|p| p.0),
            previous_fault_code: prev.and_then(|p| p.1),
            previous_since: prev.map(|p| p.2),
        })
    }

    fn observe(&mut self, input: Input, s: &Sample) -> Option<StateChange> {
        let change = match self.pending {
            Some(p) if s.ts > p => self.evaluate(),
            _ => None,
        };
        self.set(input, s);
        // A late sample (older than the pending one) is taken as of the pending time.
        self.pending = Some(self.pending.map_or(s.ts, |p| p.max(s.ts)));
        change
    }
}

/// The state trackers of every asset with a `state` config.
#[derive(Clone, Debug)]
pub struct LineState {
    assets: Vec<AssetTracker>,
    routes: HashMap<SeriesId, Vec<(usize, Input)>>,
}

impl LineState {
    /// Trackers for every `[[asset]]` with `state`; `series_of` gives the store's series
    /// id of a tag name (tags without a series are not read).
    pub fn new(config: &Config, series_of: impl Fn(&str) -> Option<SeriesId>) -> LineState {
        let mut assets = Vec::new();
        let mut routes: HashMap<SeriesId, Vec<(usize, Input)>> = HashMap::new();
        for a in &config.assets {
            let Some(cfg) = &a.state else { continue };
            let k = assets.len();
            assets.push(AssetTracker::new(&a.id, cfg));
            for (key, tag) in cfg.tags() {
                let input = match key {
                    "tag" => Input::StateWord,
                    "fault_code_tag" => Input::FaultCode,
                    "speed_tag" => Input::Speed,
                    "starved_tag" => Input::Starved,
                    _ => Input::Blocked,
                };
                if let Some(id) = series_of(tag) {
                    routes.entry(id).or_default().push((k, input));
                }
            }
        }
        LineState { assets, routes }
    }

    /// The series the trackers read (feed only these; others are ignored anyway).
    pub fn series(&self) -> Vec<SeriesId> {
        let mut ids: Vec<SeriesId> = self.routes.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// The tracked asset ids, in config order.
    pub fn assets(&self) -> impl Iterator<Item = &str> {
        self.assets.iter().map(|a| a.id.as_str())
    }

    /// Takes one sample; returns the transitions it decided (of inputs with an
    /// earlier timestamp). Samples should come in time order per asset.
    pub fn observe(&mut self, s: &Sample) -> Vec<StateChange> {
        let Some(routes) = self.routes.get(&s.series) else { return Vec::new() };
        let mut out = Vec::new();
        for &(k, input) in routes {
            out.extend(self.assets[k].observe(input, s));
        }
        out
    }

    /// [`LineState::observe`], as events for the event log.
    pub fn on_sample(&mut self, s: &Sample) -> Vec<Event> {
        self.observe(s).iter().map(StateChange::to_event).collect()
    }

    /// Decides every pending state now (at the end of a replay, or when the daemon
    /// knows no more samples of the current timestamp will come).
    pub fn flush(&mut self) -> Vec<StateChange> {
        self.assets.iter_mut().filter_map(AssetTracker::evaluate).collect()
    }

    /// The decided state of `asset`: (state, fault code, since), None before its first.
    pub fn current(&self, asset: &str) -> Option<(MachineState, Option<i64>, Timestamp)> {
        self.assets.iter().find(|a| a.id == asset).and_then(|a| a.current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Quality;

    const CFG: &str = r#"
[site]
name = "P"
[[area]]
id = "a"
name = "A"
[[line]]
id = "l"
name = "L"
area = "a"
[[asset]]
id = "filler"
name = "Filler"
line = "l"
kind = "filler"
state = { tag = "filler.state", codes = { 0 = "idle", 1 = "running", 2 = "starved", 4 = "fault" }, fault_code_tag = "filler.fault_code" }
[[asset]]
id = "capper"
name = "Capper"
line = "l"
kind = "capper"
state = { speed_tag = "capper.speed", running_speed = 5.0, fault_code_tag = "capper.fault_code", starved_tag = "capper.starved" }
[[tag]]
name = "filler.state"
asset = "filler"
description = "state"
value_type = "i64"
[[tag]]
name = "filler.fault_code"
asset = "filler"
description = "fault"
value_type = "i64"
[[tag]]
name = "capper.speed"
asset = "capper"
description = "speed"
[[tag]]
name = "capper.fault_code"
asset = "capper"
description = "fault"
value_type = "i64"
[[tag]]
name = "capper.starved"
asset = "capper"
description = "starved"
value_type = "bool"
"#;

    fn tracker() -> LineState {
        let cfg = Config::from_str_named(CFG, "t.toml").unwrap_or_else(|e| panic!("{e}"));
        let names = ["filler.state", "filler.fault_code", "capper.speed", "capper.fault_code", "capper.starved"];
        LineState::new(&cfg, |n| names.iter().position(|x| *x == n).map(|i| SeriesId(i as u32)))
    }

    fn s(series: u32, ts: i64, value: Value) -> Sample {
        Sample { series: SeriesId(series), ts, value, quality: Quality::GOOD }
    }

    fn states(changes: &[StateChange]) -> Vec<(i64, MachineState, Option<i64>)> {
        changes.iter().map(|c| (c.ts, c.state, c.fault_code)).collect()
    }

    #[test]
    fn state_word_with_fault_code_in_the_same_scan_is_one_transition() {
        let mut t = tracker();
        let mut out = Vec::new();
        for smp in [
            s(0, 10, Value::I64(1)),
            s(1, 10, Value::I64(0)),
            s(0, 20, Value::I64(1)),
            s(1, 20, Value::I64(0)),
            s(0, 30, Value::I64(4)),
            s(1, 30, Value::I64(101)),
            s(0, 40, Value::I64(4)),
            s(1, 40, Value::I64(102)),
            s(0, 50, Value::I64(1)),
            s(1, 50, Value::I64(0)),
            s(0, 60, Value::I64(9)),
        ] {
            out.extend(t.observe(&smp));
        }
        out.extend(t.flush());
        use MachineState::*;
        assert_eq!(
            states(&out),
            [
                (10, Running, None),
                (30, Fault, Some(101)),
                (40, Fault, Some(102)),
                (50, Running, None),
                (60, Unknown, None)
            ]
        );
        assert_eq!(out[1].previous, Some(Running));
        assert_eq!(out[1].previous_duration_ns(), Some(20));
        assert_eq!(out[1].cause().as_deref(), Some("fault_101"));
        assert_eq!(t.current("filler"), Some((Unknown, None, 60)));
        let ev = out[1].to_event();
        assert_eq!(ev.kind, EventKind::StateChange);
        assert_eq!(ev.severity, 500);
        assert_eq!(ev.details["cause"], "fault_101");
        assert_eq!(ev.details["previous"], "running");
    }

    #[test]
    fn rule_over_speed_fault_code_and_flags_and_bad_quality() {
        let mut t = tracker();
        let mut out = Vec::new();
        let bad = Sample { quality: Quality::BAD_COMMS, ..s(2, 50, Value::F64(0.0)) };
        for smp in [
            s(2, 10, Value::F64(0.0)),
            s(3, 10, Value::I64(0)),
            s(4, 10, Value::Bool(true)),
            s(2, 20, Value::F64(600.0)),
            s(4, 20, Value::Bool(false)),
            s(3, 30, Value::I64(201)),
            s(2, 30, Value::F64(0.0)),
            s(3, 40, Value::I64(0)),
            bad,
            s(2, 60, Value::F64(3.0)),
        ] {
            out.extend(t.observe(&smp));
        }
        out.extend(t.flush());
        use MachineState::*;
        assert_eq!(
            states(&out),
            [
                (10, Starved, None),
                (20, Running, None),
                (30, Fault, Some(201)),
                (40, Idle, None),
                (50, Unknown, None),
                (60, Idle, None)
            ]
        );
        assert_eq!(human_duration(3_725_000_000_000), "1h 2m 5s");
        assert_eq!(human_duration(12_340_000_000), "12.3s");
    }
}
