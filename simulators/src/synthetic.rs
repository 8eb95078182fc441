//! A synthetic production line for benchmarks: `T` tags sampled at 1 Hz,
//! deterministic from a seed.
//!
//! The tags come in groups of 20, one group per machine (`m000`, `m001`, ...):
//!
//! | share | kind        | what it models                                                  |
//! |-------|-------------|-----------------------------------------------------------------|
//! | 60 %  | analog      | a measurement: first-order lag toward its target + noise, quantized to the sensor's resolution |
//! | 5 %   | setpoint    | an operator setpoint with occasional steps                      |
//! | 15 %  | counter     | a monotonic `i64` counter (good/reject count, energy in Wh)      |
//! | 10 %  | state       | a machine state string (running/idle/starved/blocked/fault/setup) changing every few minutes |
//! | 10 %  | flag        | a boolean (`running`, `door_open`)                               |
//!
//! Analog values are what a gateway reads from a PLC or a Modbus register: a
//! scaled integer divided by a power of ten, so a 0.1 °C temperature is
//! `raw as f64 / 10.0`, never a float with 17 significant digits. The sensor
//! families and their resolutions:
//!
//! | family       | unit  | resolution | typical range | lag (s) | noise (1σ) |
//! |--------------|-------|------------|---------------|---------|------------|
//! | temperature  | °C    | 0.1        | 20 – 90       | 120     | 0.08       |
//! | pressure     | bar   | 0.01       | 1 – 6         | 10      | 0.015      |
//! | vibration    | mm/s  | 0.001      | 0.5 – 6       | 5       | 0.04       |
//! | current      | A     | 0.01       | 2 – 40        | 3       | 0.12       |
//! | flow         | l/min | 0.1        | 50 – 400      | 8       | 1.2        |
//! | level        | %     | 0.1        | 30 – 80       | 30      | 0.25       |
//!
//! The target of a measurement depends on its machine's state (a stopped
//! machine cools down, its motor current and flow drop to near zero), and on
//! the group's setpoint, which steps by a few percent about once an hour.

use crate::rng::Rng;

/// What a synthetic tag measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SynthKind {
    /// A quantized float measurement.
    Analog,
    /// A float setpoint with occasional steps.
    Setpoint,
    /// A monotonic integer counter.
    Counter,
    /// A machine state string.
    State,
    /// A boolean.
    Flag,
}

/// One tag of the synthetic line.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthTag {
    /// `asset.field`, e.g. `m007.bowl_temp`.
    pub name: String,
    /// The asset (machine) it belongs to, e.g. `m007`.
    pub asset: String,
    /// The field, e.g. `bowl_temp`.
    pub field: String,
    /// What it is.
    pub kind: SynthKind,
    /// Unit (empty for counters of pieces, states and flags).
    pub unit: &'static str,
    /// Decimal places of the sensor (analog and setpoints), 0 otherwise.
    pub decimals: u32,
}

/// One value of a synthetic tag.
#[derive(Clone, Debug, PartialEq)]
pub enum SynthValue {
    /// Analog or setpoint.
    F64(f64),
    /// Counter.
    I64(i64),
    /// Flag.
    Bool(bool),
    /// State.
    Str(&'static str),
}

/// Machine states, in the order of [`SynthValue::Str`] values.
pub const STATES: [&str; 6] = ["running", "idle", "starved", "blocked", "fault", "setup"];

#[derive(Clone, Copy)]
struct Family {
    name: &'static str,
    unit: &'static str,
    decimals: u32,
    lo: f64,
    hi: f64,
    /// Value a stopped machine settles at, as a fraction of the running target.
    stopped: f64,
    tau: f64,
    noise: f64,
}

const FAMILIES: [Family; 6] = [
    Family { name: "temp", unit: "°C", decimals: 1, lo: 20.0, hi: 90.0, stopped: 0.6, tau: 120.0, noise: 0.08 },
    Family { name: "pressure", unit: "bar", decimals: 2, lo: 1.0, hi: 6.0, stopped: 0.3, tau: 10.0, noise: 0.015 },
    Family { name: "vibration", unit: "mm/s", decimals: 3, lo: 0.5, hi: 6.0, stopped: 0.05, tau: 5.0, noise: 0.04 },
    Family { name: "current", unit: "A", decimals: 2, lo: 2.0, hi: 40.0, stopped: 0.02, tau: 3.0, noise: 0.12 },
    Family { name: "flow", unit: "l/min", decimals: 1, lo: 50.0, hi: 400.0, stopped: 0.0, tau: 8.0, noise: 1.2 },
    Family { name: "level", unit: "%", decimals: 1, lo: 30.0, hi: 80.0, stopped: 1.0, tau: 30.0, noise: 0.25 },
];

/// Position of a tag inside its group of 20: 12 analog, 1 setpoint,
/// 3 counters, 2 states, 2 flags.
fn slot(i: usize) -> (SynthKind, usize) {
    match i % 20 {
        s @ 0..=11 => (SynthKind::Analog, s),
        12 => (SynthKind::Setpoint, 0),
        s @ 13..=15 => (SynthKind::Counter, s - 13),
        s @ 16..=17 => (SynthKind::State, s - 16),
        s => (SynthKind::Flag, s - 18),
    }
}

/// The `n` tags of the synthetic line, in a fixed order.
pub fn line_tags(n: usize) -> Vec<SynthTag> {
    (0..n)
        .map(|i| {
            let asset = format!("m{:03}", i / 20);
            let (kind, k) = slot(i);
            let (field, unit, decimals) = match kind {
                SynthKind::Analog => {
                    let f = FAMILIES[k % FAMILIES.len()];
                    (format!("{}_{}", f.name, k / FAMILIES.len() + 1), f.unit, f.decimals)
                }
                SynthKind::Setpoint => ("speed_sp".to_string(), "%", 1),
                SynthKind::Counter => {
                    (["good_count", "reject_count", "energy_wh"][k].to_string(), if k == 2 { "Wh" } else { "" }, 0)
                }
                SynthKind::State => (["state", "infeed_state"][k].to_string(), "", 0),
                SynthKind::Flag => (["running", "door_open"][k].to_string(), "", 0),
            };
            SynthTag { name: format!("{asset}.{field}"), asset, field, kind, unit, decimals }
        })
        .collect()
}

struct Machine {
    /// Index into [`STATES`] of `state` and `infeed_state`.
    state: [usize; 2],
    /// Seconds until each state changes.
    left: [u32; 2],
    setpoint: f64,
    door_open: bool,
}

impl Machine {
    fn running(&self) -> bool {
        self.state[0] == 0
    }
}

/// Picks a next state and how long it lasts: running most of the time
/// (mean ~6 min), short stops (mean ~1.5 min) in between.
fn next_state(rng: &mut Rng, cur: usize) -> (usize, u32) {
    if cur != 0 {
        return (0, 120 + rng.below(600) as u32);
    }
    let r = rng.below(100);
    let s = match r {
        0..=29 => 1,
        30..=54 => 2,
        55..=79 => 3,
        80..=89 => 4,
        _ => 5,
    };
    (s, 20 + rng.below(160) as u32)
}

enum TagState {
    Analog { fam: Family, target: f64, x: f64 },
    Setpoint,
    Counter { n: i64, rate: f64, frac: f64 },
    State(usize),
    Flag(usize),
}

/// The synthetic line: call [`Line::step`] once per simulated second.
pub struct Line {
    rng: Rng,
    tags: Vec<SynthTag>,
    machines: Vec<Machine>,
    state: Vec<TagState>,
}

impl Line {
    /// A line of `n` tags (see [`line_tags`]) seeded with `seed`.
    pub fn new(n: usize, seed: u64) -> Line {
        let mut rng = Rng::new(seed);
        let tags = line_tags(n);
        let machines = (0..n.div_ceil(20))
            .map(|_| {
                let (s, l) = next_state(&mut rng, 1);
                let (s2, l2) = next_state(&mut rng, 1);
                Machine {
                    state: [s, s2],
                    left: [l + rng.below(300) as u32, l2 + rng.below(300) as u32],
                    setpoint: 80.0 + (rng.below(40) as f64) * 0.5,
                    door_open: false,
                }
            })
            .collect();
        let state = (0..n)
            .map(|i| match slot(i) {
                (SynthKind::Analog, k) => {
                    let fam = FAMILIES[k % FAMILIES.len()];
                    let target = fam.lo + (fam.hi - fam.lo) * (0.3 + 0.5 * rng.f64());
                    TagState::Analog { fam, target, x: target }
                }
                (SynthKind::Setpoint, _) => TagState::Setpoint,
                (SynthKind::Counter, k) => TagState::Counter {
                    n: rng.below(1_000_000) as i64,
                    rate: [10.0, 0.05, 4.2][k] * (0.8 + 0.4 * rng.f64()),
                    frac: 0.0,
                },
                (SynthKind::State, k) => TagState::State(k),
                (SynthKind::Flag, k) => TagState::Flag(k),
            })
            .collect();
        Line { rng, tags, machines, state }
    }

    /// The tags, in the order of the values [`Line::step`] produces.
    pub fn tags(&self) -> &[SynthTag] {
        &self.tags
    }

    /// Advances one second and writes every tag's value into `out`
    /// (cleared first), in tag order.
    pub fn step(&mut self, out: &mut Vec<SynthValue>) {
        out.clear();
        let rng = &mut self.rng;
        for m in &mut self.machines {
            for k in 0..2 {
                if m.left[k] == 0 {
                    let (s, l) = next_state(rng, m.state[k]);
                    m.state[k] = s;
                    m.left[k] = l;
                } else {
                    m.left[k] -= 1;
                }
            }
            // A setpoint step about once an hour, by a few percent.
            if rng.chance(1.0 / 3600.0) {
                m.setpoint = ((m.setpoint + (rng.gauss() * 4.0)).clamp(60.0, 100.0) * 10.0).round() / 10.0;
            }
            // The door opens now and then while the machine stands in setup or fault.
            if m.state[0] >= 4 && rng.chance(0.02) {
                m.door_open = true;
            } else if m.door_open && rng.chance(0.01) {
                m.door_open = false;
            }
        }
        for (i, st) in self.state.iter_mut().enumerate() {
            let m = &self.machines[i / 20];
            let v = match st {
                TagState::Analog { fam, target, x } => {
                    let goal = *target * (m.setpoint / 90.0) * if m.running() { 1.0 } else { fam.stopped };
                    *x += (goal - *x) / fam.tau + fam.noise * rng.gauss();
                    let scale = 10f64.powi(fam.decimals as i32);
                    // What the PLC holds: a scaled integer register.
                    let raw = (*x * scale).round().max(0.0);
                    SynthValue::F64(raw / scale)
                }
                TagState::Setpoint => SynthValue::F64(m.setpoint),
                TagState::Counter { n, rate, frac } => {
                    if m.running() {
                        *frac += *rate * (0.9 + 0.2 * rng.f64());
                        let whole = frac.floor();
                        *frac -= whole;
                        *n += whole as i64;
                    }
                    SynthValue::I64(*n)
                }
                TagState::State(k) => SynthValue::Str(STATES[m.state[*k]]),
                TagState::Flag(0) => SynthValue::Bool(m.running()),
                TagState::Flag(_) => SynthValue::Bool(m.door_open),
            };
            out.push(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_and_names() {
        let tags = line_tags(1000);
        let count = |k| tags.iter().filter(|t| t.kind == k).count();
        assert_eq!(count(SynthKind::Analog), 600);
        assert_eq!(count(SynthKind::Setpoint), 50);
        assert_eq!(count(SynthKind::Counter), 150);
        assert_eq!(count(SynthKind::State), 100);
        assert_eq!(count(SynthKind::Flag), 100);
        let mut names: Vec<_> = tags.iter().map(|t| t.name.clone()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 1000);
    }

    #[test]
    fn deterministic_quantized_and_monotonic() {
        let (mut a, mut b) = (Line::new(100, 7), Line::new(100, 7));
        let (mut va, mut vb) = (Vec::new(), Vec::new());
        let mut last = vec![i64::MIN; 100];
        for _ in 0..3600 {
            a.step(&mut va);
            b.step(&mut vb);
            assert_eq!(va, vb);
            for (i, v) in va.iter().enumerate() {
                match v {
                    SynthValue::F64(x) => {
                        let s = 10f64.powi(a.tags()[i].decimals as i32);
                        assert_eq!((*x * s).round() / s, *x, "{} not quantized", a.tags()[i].name);
                    }
                    SynthValue::I64(n) => {
                        assert!(*n >= last[i]);
                        last[i] = *n;
                    }
                    _ => {}
                }
            }
        }
        let mut c = Line::new(100, 8);
        c.step(&mut vb);
        a.step(&mut va);
        assert_ne!(va, vb);
    }
}
