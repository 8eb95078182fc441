//! The physics and fault model of the bottling line, stepped every 100 ms of
//! simulated time.
//!
//! Material flow: the depalletizer takes bottles from pallets, every machine
//! takes them from the accumulation buffer (conveyor) upstream and puts the
//! good ones into the buffer downstream; the case packer's good count is the
//! line's output. Each machine's speed follows its setpoint through a
//! first-order lag, trimmed by the buffer levels around it (a machine slows
//! as its outfeed fills or its infeed empties, as line controllers do), so
//! the filler — the slowest machine — sets the pace. A machine stops when
//! its infeed is empty (starved) or its outfeed full (blocked); it restarts
//! with hysteresis. A machine that is not running produces nothing.
//!
//! Signals: motor current follows speed, motor and bearing temperatures are
//! first-order lags (minutes), the washer's caustic tank is heated under a
//! PI controller, each filler valve has a bias that a drift fault moves,
//! and every measurement carries Gaussian noise and is rounded to its
//! sensor's resolution. All randomness comes from one seeded generator and
//! the steps are in a fixed order, so a seed gives the same run bit for bit.

use std::sync::Arc;

use serde_json::json;

use super::catalog::{Binding, Catalog, Index, MachineState, PlcType, Val, BEARINGS, FILL_VALVES, MACHINES};
use super::scenario::{FaultKind, Planned, Scenario, ScenarioError, Server, ShiftPlan};
use super::truth::Record;
use super::{Down, Frame};
use crate::rng::Rng;

/// Model step: 100 ms.
pub const STEP_NS: i64 = 100_000_000;
const DT: f64 = 0.1;
const NS: i64 = 1_000_000_000;

/// Fault codes a machine reports in `fault_code`.
pub const FAULT_JAM: i64 = 101;
pub const FAULT_BEARING: i64 = 201;
pub const FAULT_CAUSTIC_TEMP_LOW: i64 = 310;

/// Accumulation buffer capacities (bottles) between machine k and k+1.
const BUFFER_CAP: [f64; 5] = [400.0, 600.0, 150.0, 400.0, 500.0];
/// Installed drive power per machine (kW at design speed).
const DRIVE_KW: [f64; 6] = [8.0, 15.0, 18.0, 6.0, 7.0, 9.0];
/// Chance that a machine rejects a bottle (the filler rejects by fill volume instead).
const REJECT_P: [f64; 6] = [0.0002, 0.0008, 0.0, 0.0012, 0.0020, 0.0005];
/// Fill volume tolerance: a bottle outside 500 ± 6 ml is rejected by the fill-level inspection.
const FILL_NOMINAL: f64 = 500.0;
const FILL_TOL: f64 = 6.0;
const WASHER_SP: f64 = 65.0;
const HEATER_KW: f64 = 90.0;

#[derive(Clone, Debug)]
struct Mach {
    state: MachineState,
    fault_code: i64,
    sp: f64,
    speed: f64,
    acc: f64,
    good: u64,
    reject: u64,
    current: f64,
    motor_temp: f64,
    run_s: f64,
    wear: [f64; 2],
    bearing_temp: [f64; 2],
    power: f64,
    energy: f64,
    /// Seconds spent in each state during the current shift, and downtime by cause.
    shift_state_s: [f64; 6],
    shift_good0: u64,
    shift_reject0: u64,
    shift_causes: std::collections::BTreeMap<String, f64>,
}

/// Progress of each planned fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Pending,
    Active,
    /// Bearing wear only: failed, machine down for repair.
    Failed,
    Done,
}

struct ShiftNow {
    plan: usize,
    /// ns of the shift's start (the instant it began or the run started).
    started_ns: i64,
    label: String,
    planned_stop_s: f64,
    out0: u64,
}

/// The line's state; `step` advances it by 100 ms.
pub struct Model {
    pub catalog: Arc<Catalog>,
    rng: Rng,
    /// Simulated time of the run start and now, ns since the epoch.
    t0_ns: i64,
    now_ns: i64,
    steps: u64,
    shifts: Vec<ShiftPlan>,
    faults: Vec<Planned>,
    phase: Vec<Phase>,
    machines: Vec<Mach>,
    buffers: [f64; 5],
    /// Washer tank temperature, PI integral, heater output (%), heater capacity share.
    tank_temp: f64,
    pi_int: f64,
    heater_out: f64,
    heater_cap: f64,
    conductivity: f64,
    dosing: bool,
    pump_pressure: f64,
    valve_bias: [f64; FILL_VALVES],
    valve_level: [f64; FILL_VALVES],
    fill_seq: u64,
    cap_torque: f64,
    glue_temp: f64,
    air_pressure: f64,
    compressor_loaded: bool,
    energy_total: f64,
    /// Stuck sensors: the frozen value per tag.
    stuck: Vec<Option<Val>>,
    down: Down,
    values: Vec<Val>,
    stamps: Vec<i64>,
    /// Ground-truth records produced since the last `drain_truth`.
    truth: Vec<Record>,
    shift: Option<ShiftNow>,
    in_break: bool,
    scenario_name: String,
    seed: u64,
    /// Speed setpoints before changeovers (design speed or the scenario's override).
    base_sp: [f64; 6],
    ambient: f64,
    line_kw: f64,
    /// What each tag measures.
    roles: Vec<Role>,
}

/// What a tag measures, resolved once from the catalog's `Index`.
#[derive(Clone, Copy, Debug)]
enum Role {
    State(usize),
    FaultCode(usize),
    AutoMode(usize),
    SpeedSp(usize),
    Speed(usize),
    Good(usize),
    Reject(usize),
    Current(usize),
    MotorTemp(usize),
    RunHours(usize),
    VibRms(usize, usize),
    VibPeak(usize, usize),
    BearingTemp(usize, usize),
    Power(usize),
    Energy(usize),
    ConvSpeed(usize),
    ConvLevel(usize),
    ConvFull(usize),
    ConvEmpty(usize),
    FillLevel(usize),
    TankTemp,
    TankTempSp,
    HeaterOutput,
    Conductivity,
    PumpPressure,
    BowlPressure,
    ProductTemp,
    Co2Pressure,
    CapTorque,
    GlueTemp,
    AirPressure,
    WaterFlow,
    PowerTotal,
    EnergyTotal,
    Ambient,
    Unknown,
}

fn roles(n: usize, idx: &Index) -> Vec<Role> {
    let mut r = vec![Role::Unknown; n];
    for (k, m) in idx.machines.iter().enumerate() {
        r[m.state] = Role::State(k);
        r[m.fault_code] = Role::FaultCode(k);
        r[m.auto_mode] = Role::AutoMode(k);
        r[m.speed_sp] = Role::SpeedSp(k);
        r[m.speed] = Role::Speed(k);
        r[m.good_count] = Role::Good(k);
        r[m.reject_count] = Role::Reject(k);
        r[m.motor_current] = Role::Current(k);
        r[m.motor_temp] = Role::MotorTemp(k);
        r[m.run_hours] = Role::RunHours(k);
        for b in 0..2 {
            r[m.vib_rms[b]] = Role::VibRms(k, b);
            r[m.vib_peak[b]] = Role::VibPeak(k, b);
            r[m.bearing_temp[b]] = Role::BearingTemp(k, b);
        }
        r[m.power] = Role::Power(k);
        r[m.energy] = Role::Energy(k);
    }
    for (k, c) in idx.conveyors.iter().enumerate() {
        r[c.speed] = Role::ConvSpeed(k);
        r[c.level] = Role::ConvLevel(k);
        r[c.full] = Role::ConvFull(k);
        r[c.empty] = Role::ConvEmpty(k);
    }
    for (v, &t) in idx.filler_fill_level.iter().enumerate() {
        r[t] = Role::FillLevel(v);
    }
    r[idx.washer_tank_temp] = Role::TankTemp;
    r[idx.washer_tank_temp_sp] = Role::TankTempSp;
    r[idx.washer_heater_output] = Role::HeaterOutput;
    r[idx.washer_conductivity] = Role::Conductivity;
    r[idx.washer_pump_pressure] = Role::PumpPressure;
    r[idx.filler_bowl_pressure] = Role::BowlPressure;
    r[idx.filler_product_temp] = Role::ProductTemp;
    r[idx.filler_co2_pressure] = Role::Co2Pressure;
    r[idx.capper_torque] = Role::CapTorque;
    r[idx.labeler_glue_temp] = Role::GlueTemp;
    r[idx.air_pressure] = Role::AirPressure;
    r[idx.water_flow] = Role::WaterFlow;
    r[idx.power_total] = Role::PowerTotal;
    r[idx.energy_total] = Role::EnergyTotal;
    r[idx.ambient_temp] = Role::Ambient;
    r
}

impl Model {
    /// A line at the start of `scenario`, at simulated time `t0_ns`.
    pub fn new(scenario: &Scenario, path: &str, t0_ns: i64) -> Result<Model, ScenarioError> {
        let (catalog, idx) = Catalog::build();
        let faults = scenario.faults(&catalog, path)?;
        let shifts = scenario.shift_plan(path)?;
        let n = catalog.len();
        let mut rng = Rng::new(scenario.seed);
        let roles = roles(n, &idx);
        let mut base_sp = [0.0; 6];
        for (k, m) in MACHINES.iter().enumerate() {
            base_sp[k] = scenario.speed_sp.get(m.id).copied().unwrap_or(m.design_bpm);
        }
        let machines = MACHINES
            .iter()
            .map(|m| {
                let sp = scenario.speed_sp.get(m.id).copied().unwrap_or(m.design_bpm);
                Mach {
                    state: MachineState::Idle,
                    fault_code: 0,
                    sp,
                    speed: 0.0,
                    acc: 0.0,
                    good: 1_000 + rng.below(100_000),
                    reject: rng.below(500),
                    current: 3.0,
                    motor_temp: 40.0,
                    run_s: 3_600.0 * (500.0 + rng.below(8_000) as f64),
                    wear: [0.0; 2],
                    bearing_temp: [35.0; 2],
                    power: 0.0,
                    energy: 1_000.0 * (10.0 + rng.below(500) as f64),
                    shift_state_s: [0.0; 6],
                    shift_good0: 0,
                    shift_reject0: 0,
                    shift_causes: Default::default(),
                }
            })
            .collect();
        let mut valve_bias = [0.0; FILL_VALVES];
        for b in &mut valve_bias {
            *b = rng.gauss() * 0.4;
        }
        let mut m = Model {
            catalog: Arc::new(catalog),
            rng,
            t0_ns,
            now_ns: t0_ns,
            steps: 0,
            phase: vec![Phase::Pending; faults.len()],
            faults,
            shifts,
            machines,
            buffers: [
                0.6 * BUFFER_CAP[0],
                0.6 * BUFFER_CAP[1],
                0.35 * BUFFER_CAP[2],
                0.35 * BUFFER_CAP[3],
                0.35 * BUFFER_CAP[4],
            ],
            tank_temp: WASHER_SP,
            pi_int: 55.0,
            heater_out: 55.0,
            heater_cap: 1.0,
            conductivity: 80.0,
            dosing: false,
            pump_pressure: 0.2,
            valve_bias,
            valve_level: [FILL_NOMINAL; FILL_VALVES],
            fill_seq: 0,
            cap_torque: 120.0,
            glue_temp: 160.0,
            air_pressure: 6.5,
            compressor_loaded: false,
            energy_total: 250_000.0,
            stuck: vec![None; n],
            down: Down::default(),
            values: vec![Val::F64(0.0); n],
            stamps: vec![t0_ns; n],
            truth: Vec::new(),
            shift: None,
            in_break: false,
            scenario_name: scenario.name.clone(),
            seed: scenario.seed,
            base_sp,
            ambient: 22.0,
            line_kw: 0.0,
            roles,
        };
        for (i, t) in m.catalog.tags.iter().enumerate() {
            m.values[i] = match t.ty {
                PlcType::Bool => Val::Bool(false),
                ty if ty.is_integer() => Val::I64(0),
                _ => Val::F64(0.0),
            };
        }
        m.truth.push(Record::new(
            t0_ns,
            "line",
            "run_start",
            json!({ "scenario": m.scenario_name, "seed": m.seed, "tags": n, "step_ms": STEP_NS / 1_000_000 }),
        ));
        // Settle the state machines and take the first sample of every tag at t0.
        m.update_calendar();
        m.update_faults();
        m.update_states();
        m.sample(true);
        Ok(m)
    }

    /// Simulated time now, ns since the epoch.
    pub fn now_ns(&self) -> i64 {
        self.now_ns
    }

    pub fn values(&self) -> &[Val] {
        &self.values
    }

    pub fn stamps(&self) -> &[i64] {
        &self.stamps
    }

    pub fn down(&self) -> Down {
        self.down
    }

    pub fn frame(&self) -> Frame {
        Frame { ts_ns: self.now_ns, values: self.values.clone(), stamps: self.stamps.clone(), down: self.down }
    }

    /// Ground-truth records since the last call, in time order.
    pub fn drain_truth(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.truth)
    }

    /// Whether tag `i` was sampled in the last step (its stamp is now).
    pub fn sampled(&self, i: usize) -> bool {
        self.stamps[i] == self.now_ns
    }

    /// Whether the server that carries tag `i` is in a comms loss.
    pub fn tag_down(&self, i: usize) -> bool {
        match self.catalog.tags[i].binding {
            Binding::OpcUa { .. } => self.down.opcua,
            Binding::Modbus(_) => self.down.modbus,
            Binding::MqttJson { .. } | Binding::Sparkplug { .. } => self.down.mqtt,
        }
    }

    /// Advances the line by one step (100 ms).
    pub fn step(&mut self) {
        self.steps += 1;
        self.now_ns = self.t0_ns + self.steps as i64 * STEP_NS;
        self.update_calendar();
        self.update_faults();
        self.update_states();
        self.flow();
        self.process();
        self.sample(false);
    }

    /// Closes the run: a summary of the shift in progress and a `run_end` record.
    pub fn finish(&mut self) {
        if let Some(s) = self.shift.take() {
            if s.started_ns == self.now_ns {
                // The run ends as this shift begins: nothing of it was simulated.
                let now = self.now_ns;
                self.truth.retain(|r| !(r.kind == "shift_start" && r.ts_ns == now));
            } else {
                self.shift_summary(&s, false);
            }
        }
        let out = self.machines[5].good;
        self.truth.push(Record::new(
            self.now_ns,
            "line",
            "run_end",
            json!({ "steps": self.steps, "case_packer_good_count": out }),
        ));
    }

    fn tod_s(&self) -> u32 {
        (self.now_ns.div_euclid(NS).rem_euclid(86_400)) as u32
    }

    fn update_calendar(&mut self) {
        let tod = self.tod_s();
        let current = self.shifts.iter().position(|s| {
            if s.end_s > s.start_s {
                tod >= s.start_s && tod < s.end_s
            } else {
                tod >= s.start_s || tod < s.end_s
            }
        });
        let prev = self.shift.as_ref().map(|s| s.plan);
        if prev != current {
            if let Some(s) = self.shift.take() {
                self.shift_summary(&s, true);
            }
            if let Some(p) = current {
                let plan = &self.shifts[p];
                let day_ns = self.now_ns - (tod as i64 - plan.start_s as i64).rem_euclid(86_400) * NS;
                let date = super::truth::rfc3339_ms(day_ns)[..10].to_string();
                let label = format!("{date}/{}", plan.name);
                self.truth.push(Record::new(
                    self.now_ns,
                    "line",
                    "shift_start",
                    json!({ "shift": label, "target": plan.target, "start_of_day_s": plan.start_s, "end_of_day_s": plan.end_s }),
                ));
                let out0 = self.machines[5].good;
                for m in &mut self.machines {
                    m.shift_state_s = [0.0; 6];
                    m.shift_good0 = m.good;
                    m.shift_reject0 = m.reject;
                    m.shift_causes.clear();
                }
                self.shift = Some(ShiftNow { plan: p, started_ns: self.now_ns, label, planned_stop_s: 0.0, out0 });
            }
        }
        let in_break = match &self.shift {
            Some(s) => self.shifts[s.plan].breaks.iter().any(|&(b, len)| (tod + 86_400 - b) % 86_400 < len),
            None => false,
        };
        if in_break != self.in_break {
            self.in_break = in_break;
            let kind = if in_break { "break_start" } else { "break_end" };
            self.truth.push(Record::new(self.now_ns, "line", kind, json!({})));
        }
    }

    fn shift_summary(&mut self, s: &ShiftNow, ended: bool) {
        let plan = &self.shifts[s.plan];
        let mut machines = serde_json::Map::new();
        for (k, m) in self.machines.iter().enumerate() {
            let mut states = serde_json::Map::new();
            for st in MachineState::ALL {
                states.insert(st.name().into(), json!(round3(m.shift_state_s[st as usize])));
            }
            let causes: serde_json::Map<String, serde_json::Value> =
                m.shift_causes.iter().map(|(c, s)| (c.clone(), json!(round3(*s)))).collect();
            machines.insert(
                MACHINES[k].id.into(),
                json!({
                    "good": m.good - m.shift_good0,
                    "reject": m.reject - m.shift_reject0,
                    "state_s": states,
                    "downtime_s": causes,
                    "ideal_rate_per_min": MACHINES[k].design_bpm,
                }),
            );
        }
        let out = self.machines[5].good - s.out0;
        self.truth.push(Record::new(
            self.now_ns,
            "line",
            "shift_end",
            json!({ "shift": s.label, "complete": ended, "target": plan.target, "output": out }),
        ));
        self.truth.push(Record::new(
            self.now_ns,
            "line",
            "shift_summary",
            json!({
                "shift": s.label,
                "from": super::truth::rfc3339_ms(s.started_ns),
                "to": super::truth::rfc3339_ms(self.now_ns),
                "duration_s": round3((self.now_ns - s.started_ns) as f64 / 1e9),
                "planned_stop_s": round3(s.planned_stop_s),
                "target": plan.target,
                "output": out,
                "machines": machines,
            }),
        ));
    }

    fn rel(&self) -> i64 {
        self.now_ns - self.t0_ns
    }

    fn update_faults(&mut self) {
        let rel = self.rel();
        for f in 0..self.faults.len() {
            let p = &self.faults[f];
            let phase = self.phase[f];
            let next = match phase {
                Phase::Pending if rel >= p.start_ns => Phase::Active,
                Phase::Active if rel >= p.end_ns => {
                    if p.kind == FaultKind::BearingWear {
                        Phase::Failed
                    } else {
                        Phase::Done
                    }
                }
                Phase::Failed if rel >= p.end_ns + p.repair_ns => Phase::Done,
                other => other,
            };
            if next == phase {
                continue;
            }
            self.phase[f] = next;
            // Only a transition needs its own copy (the truth record borrows `self`).
            let p = p.clone();
            let asset = match (p.machine, p.server, p.tag) {
                (Some(m), _, _) => MACHINES[m].id.to_string(),
                (_, Some(s), _) => server_name(s).to_string(),
                (_, _, Some(t)) => self.catalog.tags[t].asset.to_string(),
                _ => "line".to_string(),
            };
            let details = self.fault_details(&p);
            match next {
                Phase::Active => {
                    if p.kind == FaultKind::StuckSensor {
                        if let Some(t) = p.tag {
                            self.stuck[t] = Some(self.values[t]);
                        }
                    }
                    self.truth.push(Record::new(self.now_ns, &asset, "fault_start", details));
                }
                Phase::Failed => {
                    let m = p.machine.unwrap_or(0);
                    let mut d = details;
                    d["phase"] = json!("failure");
                    d["fault_code"] = json!(FAULT_BEARING);
                    d["repair_s"] = json!(p.repair_ns / NS);
                    d["wear"] = json!(round3(self.machines[m].wear[p.bearing]));
                    self.truth.push(Record::new(self.now_ns, &asset, "fault_start", d));
                }
                Phase::Done => {
                    if p.kind == FaultKind::StuckSensor {
                        if let Some(t) = p.tag {
                            self.stuck[t] = None;
                        }
                    }
                    if p.kind == FaultKind::BearingWear {
                        let m = p.machine.unwrap_or(0);
                        self.machines[m].wear[p.bearing] = 0.0;
                    }
                    let mut d = details;
                    if p.kind == FaultKind::BearingWear {
                        d["phase"] = json!("repaired");
                    }
                    self.truth.push(Record::new(self.now_ns, &asset, "fault_end", d));
                }
                Phase::Pending => {}
            }
        }
        // Effects of the active faults.
        self.down = Down::default();
        self.heater_cap = 1.0;
        for f in 0..self.faults.len() {
            let p = &self.faults[f];
            let active = self.phase[f] == Phase::Active;
            match p.kind {
                FaultKind::CommsLoss if active => match p.server {
                    Some(Server::OpcUa) => self.down.opcua = true,
                    Some(Server::Modbus) => self.down.modbus = true,
                    Some(Server::Mqtt) => self.down.mqtt = true,
                    None => {}
                },
                FaultKind::HeaterDegradation if active => {
                    // The element loses power over the first quarter of the fault, then stays degraded.
                    let x = ((rel - p.start_ns) as f64 / ((p.end_ns - p.start_ns) as f64 * 0.25)).min(1.0);
                    self.heater_cap = 1.0 - p.severity * x;
                }
                FaultKind::ValveDrift => {
                    if active {
                        self.valve_bias[p.valve] += p.rate_ml_per_h * DT / 3600.0;
                    } else if self.phase[f] == Phase::Done && self.valve_bias[p.valve].abs() > 1.0 {
                        // Recalibrated at the end of the fault.
                        self.valve_bias[p.valve] = 0.0;
                    }
                }
                FaultKind::BearingWear if active => {
                    let x = ((rel - p.start_ns) as f64 / (p.end_ns - p.start_ns).max(1) as f64).clamp(0.0, 1.0);
                    if let Some(m) = p.machine {
                        self.machines[m].wear[p.bearing] = x * x * x;
                    }
                }
                _ => {}
            }
        }
    }

    fn fault_details(&self, p: &Planned) -> serde_json::Value {
        let mut d = json!({ "fault": p.kind.name(), "planned_end": super::truth::rfc3339_ms(self.t0_ns + p.end_ns) });
        let mut signals: Vec<String> = Vec::new();
        let mach = p.machine.map(|m| MACHINES[m].id);
        match p.kind {
            FaultKind::BearingWear => {
                let b = BEARINGS[p.bearing];
                let m = mach.unwrap_or("");
                d["bearing"] = json!(b);
                d["failure_at"] = json!(super::truth::rfc3339_ms(self.t0_ns + p.end_ns));
                signals.extend([
                    format!("{m}.vib_{b}_rms"),
                    format!("{m}.vib_{b}_peak"),
                    format!("{m}.bearing_{b}_temp"),
                ]);
            }
            FaultKind::HeaterDegradation => {
                d["severity"] = json!(p.severity);
                signals.extend(["washer.tank_temp".to_string(), "washer.heater_output".to_string()]);
            }
            FaultKind::ValveDrift => {
                d["valve"] = json!(p.valve + 1);
                d["rate_ml_per_h"] = json!(p.rate_ml_per_h);
                signals.extend([format!("filler.fill_level_{:02}", p.valve + 1), "filler.reject_count".to_string()]);
            }
            FaultKind::Jam => {
                d["fault_code"] = json!(FAULT_JAM);
                let m = mach.unwrap_or("");
                signals.extend([format!("{m}.state"), format!("{m}.fault_code"), format!("{m}.speed")]);
            }
            FaultKind::MaterialStarvation => {
                signals.extend(["depalletizer.state".to_string(), "depalletizer.speed".to_string()]);
            }
            FaultKind::Changeover => {
                d["speed_factor"] = json!(p.speed_factor);
                match mach {
                    Some(m) => signals.push(format!("{m}.state")),
                    None => signals.extend(MACHINES.iter().map(|m| format!("{}.state", m.id))),
                }
            }
            FaultKind::StuckSensor => {
                if let Some(t) = p.tag {
                    signals.push(self.catalog.tags[t].name.clone());
                }
            }
            FaultKind::CommsLoss => {
                if let Some(s) = p.server {
                    d["server"] = json!(server_name(s));
                }
            }
        }
        d["signals"] = json!(signals);
        d
    }

    fn active(&self, kind: FaultKind, machine: Option<usize>) -> Option<&Planned> {
        self.faults
            .iter()
            .zip(&self.phase)
            .find(|(p, ph)| p.kind == kind && **ph == Phase::Active && (machine.is_none() || p.machine == machine))
            .map(|(p, _)| p)
    }

    fn update_states(&mut self) {
        let planned_idle = self.shift.is_none() || self.in_break;
        let changeover_line = self
            .faults
            .iter()
            .zip(&self.phase)
            .any(|(p, ph)| p.kind == FaultKind::Changeover && *ph == Phase::Active && p.machine.is_none());
        // Setpoints follow the last finished changeover's speed factor.
        let mut factor = 1.0;
        for (p, ph) in self.faults.iter().zip(&self.phase) {
            if p.kind == FaultKind::Changeover && *ph == Phase::Done {
                factor = p.speed_factor;
            }
        }
        let mut new_states = Vec::with_capacity(6);
        for k in 0..6 {
            let m = &self.machines[k];
            let jam = self.active(FaultKind::Jam, Some(k)).is_some();
            let bearing_failed = self
                .faults
                .iter()
                .zip(&self.phase)
                .any(|(p, ph)| p.kind == FaultKind::BearingWear && *ph == Phase::Failed && p.machine == Some(k));
            let caustic_low = k == 1
                && if m.fault_code == FAULT_CAUSTIC_TEMP_LOW {
                    self.tank_temp < WASHER_SP - 3.0
                } else {
                    self.tank_temp < WASHER_SP - 8.0
                };
            let fault_code = if bearing_failed {
                FAULT_BEARING
            } else if jam {
                FAULT_JAM
            } else if caustic_low {
                FAULT_CAUSTIC_TEMP_LOW
            } else {
                0
            };
            let setup = changeover_line || self.active(FaultKind::Changeover, Some(k)).is_some();
            let (state, cause) = if fault_code != 0 {
                (MachineState::Fault, json!({ "fault_code": fault_code }))
            } else if setup {
                (MachineState::Setup, json!({ "reason": "changeover" }))
            } else if planned_idle {
                let why = if self.in_break { "break" } else { "no shift" };
                (MachineState::Idle, json!({ "reason": why }))
            } else if self.starved(k) {
                (MachineState::Starved, self.upstream_cause(k))
            } else if self.blocked(k) {
                (MachineState::Blocked, self.downstream_cause(k))
            } else {
                (MachineState::Running, json!({}))
            };
            new_states.push((state, fault_code, cause));
        }
        for (k, (state, fault_code, cause)) in new_states.into_iter().enumerate() {
            let sp = self.base_sp[k] * factor;
            let m = &mut self.machines[k];
            m.sp = sp;
            m.fault_code = fault_code;
            if m.state != state {
                let mut d = cause;
                d["from"] = json!(m.state.name());
                d["to"] = json!(state.name());
                let from = m.state;
                m.state = state;
                if from != state {
                    self.truth.push(Record::new(self.now_ns, MACHINES[k].id, "state", d));
                }
            }
        }
    }

    fn starved(&self, k: usize) -> bool {
        if k == 0 {
            return self.active(FaultKind::MaterialStarvation, None).is_some();
        }
        let level = self.buffers[k - 1];
        if self.machines[k].state == MachineState::Starved {
            level < (0.15 * BUFFER_CAP[k - 1]).min(40.0)
        } else {
            level < 1.0
        }
    }

    fn blocked(&self, k: usize) -> bool {
        if k == 5 {
            return false;
        }
        let level = self.buffers[k];
        if self.machines[k].state == MachineState::Blocked {
            level > BUFFER_CAP[k] - (0.15 * BUFFER_CAP[k]).min(40.0)
        } else {
            level > BUFFER_CAP[k] - 1.0
        }
    }

    /// The neighbour a starved machine waits for, and the root of the chain.
    fn upstream_cause(&self, k: usize) -> serde_json::Value {
        if k == 0 {
            return json!({ "cause": "material", "root": "material" });
        }
        let mut root = k - 1;
        while root > 0 && self.machines[root].state == MachineState::Starved {
            root -= 1;
        }
        let root_name =
            if root == 0 && self.machines[0].state == MachineState::Starved { "material" } else { MACHINES[root].id };
        json!({ "cause": MACHINES[k - 1].id, "root": root_name })
    }

    fn downstream_cause(&self, k: usize) -> serde_json::Value {
        let mut root = k + 1;
        while root < 5 && self.machines[root].state == MachineState::Blocked {
            root += 1;
        }
        json!({ "cause": MACHINES[k + 1].id, "root": MACHINES[root].id })
    }

    /// Moves bottles: each running machine takes from its infeed and puts good
    /// bottles into its outfeed.
    fn flow(&mut self) {
        for k in (0..6).rev() {
            let running = self.machines[k].state == MachineState::Running;
            let up_frac = if k == 0 { 1.0 } else { self.buffers[k - 1] / BUFFER_CAP[k - 1] };
            let down_frac = if k == 5 { 0.0 } else { self.buffers[k] / BUFFER_CAP[k] };
            let mut trim: f64 = 1.0;
            if down_frac > 0.6 {
                trim = trim.min(1.0 - (down_frac - 0.6) * 1.5);
            }
            if up_frac < 0.4 {
                trim = trim.min(1.0 - (0.4 - up_frac) * 1.5);
            }
            let target = if running { self.machines[k].sp * trim.max(0.3) } else { 0.0 };
            let tau = if running { 1.5 } else { 0.4 };
            let m = &mut self.machines[k];
            m.speed += (target - m.speed) * (1.0 - (-DT / tau).exp());
            if m.speed < 0.05 {
                m.speed = 0.0;
            }
            if !running {
                m.acc = 0.0;
                continue;
            }
            m.run_s += DT;
            m.acc += m.speed / 60.0 * DT;
            let mut n = m.acc.floor();
            m.acc -= n;
            if k > 0 {
                n = n.min(self.buffers[k - 1].floor());
            }
            if k < 5 {
                n = n.min((BUFFER_CAP[k] - self.buffers[k]).floor());
            }
            let n = n.max(0.0) as u64;
            let mut good = 0u64;
            for _ in 0..n {
                let rejected = if k == 2 {
                    let v = (self.fill_seq % FILL_VALVES as u64) as usize;
                    self.fill_seq += 1;
                    let fill = FILL_NOMINAL + self.valve_bias[v] + self.rng.gauss() * 1.2;
                    self.valve_level[v] += (fill - self.valve_level[v]) * 0.25;
                    (fill - FILL_NOMINAL).abs() > FILL_TOL
                } else {
                    self.rng.chance(REJECT_P[k])
                };
                if rejected {
                    self.machines[k].reject += 1;
                } else {
                    good += 1;
                }
            }
            self.machines[k].good += good;
            if k > 0 {
                self.buffers[k - 1] -= n as f64;
            }
            if k < 5 {
                self.buffers[k] += good as f64;
            }
        }
        // Time accounting for the shift summary.
        if let Some(s) = &mut self.shift {
            if self.in_break {
                s.planned_stop_s += DT;
            }
            for k in 0..6 {
                let m = &mut self.machines[k];
                m.shift_state_s[m.state as usize] += DT;
                let cause = match m.state {
                    MachineState::Fault => Some(format!("fault_{}", m.fault_code)),
                    MachineState::Starved => Some("starved".to_string()),
                    MachineState::Blocked => Some("blocked".to_string()),
                    MachineState::Setup => Some("setup".to_string()),
                    _ => None,
                };
                if let Some(c) = cause {
                    *m.shift_causes.entry(c).or_insert(0.0) += DT;
                }
            }
        }
    }

    /// Analog process signals.
    fn process(&mut self) {
        let tod = self.tod_s() as f64;
        let ambient = 22.0 + 3.0 * ((tod - 9.0 * 3600.0) / 86_400.0 * std::f64::consts::TAU).sin();
        let lag = |x: &mut f64, target: f64, tau: f64| *x += (target - *x) * (1.0 - (-DT / tau).exp());
        let mut line_kw = 4.0;
        for k in 0..6 {
            let design = MACHINES[k].design_bpm;
            let m = &mut self.machines[k];
            let frac = m.speed / design;
            let wear = m.wear[0].max(m.wear[1]);
            let i_target =
                3.0 + 14.0 * frac * (1.0 + 0.12 * wear) + if m.state == MachineState::Running { 0.4 } else { 0.0 };
            lag(&mut m.current, i_target, 1.0);
            lag(&mut m.motor_temp, ambient + 10.0 + 30.0 * (m.current / 17.0).powi(2), 900.0);
            for b in 0..2 {
                lag(&mut m.bearing_temp[b], ambient + 6.0 + 18.0 * frac + 30.0 * m.wear[b], 600.0);
            }
            let mut kw = DRIVE_KW[k] * (0.25 + 0.75 * frac);
            if k == 1 {
                kw += HEATER_KW * self.heater_out / 100.0 * self.heater_cap;
            }
            m.power = kw;
            m.energy += kw * DT / 3600.0;
            line_kw += kw;
        }
        // Washer: tank heated under PI control, cooled by losses and by the bottles.
        let washer_frac = self.machines[1].speed / MACHINES[1].design_bpm;
        let err = WASHER_SP - self.tank_temp;
        let (kp, ki) = (8.0, 0.02);
        let unclamped = kp * err + self.pi_int + ki * err * DT;
        if (0.0..=100.0).contains(&unclamped) {
            self.pi_int += ki * err * DT;
        }
        self.heater_out = (kp * err + self.pi_int).clamp(0.0, 100.0);
        let heat = 0.0833 * self.heater_out / 100.0 * self.heater_cap;
        let loss = 0.0005 * (self.tank_temp - ambient) + 0.0006 * washer_frac * (self.tank_temp - 15.0);
        self.tank_temp += (heat - loss) * DT;
        if self.dosing {
            self.conductivity += 0.05 * DT;
            if self.conductivity > 82.0 {
                self.dosing = false;
            }
        } else {
            self.conductivity -= 0.004 * washer_frac * DT;
            if self.conductivity < 75.0 {
                self.dosing = true;
            }
        }
        let pump_target = if self.machines[1].state == MachineState::Running { 2.8 } else { 0.2 };
        lag(&mut self.pump_pressure, pump_target, 2.0);
        // Capper and labeler.
        if self.machines[3].state == MachineState::Running {
            lag(&mut self.cap_torque, 120.0, 5.0);
        }
        lag(&mut self.glue_temp, 160.0, 120.0);
        // Utilities: the compressor loads between 6.2 and 6.9 bar.
        let running = self.machines.iter().filter(|m| m.state == MachineState::Running).count() as f64 / 6.0;
        if self.compressor_loaded {
            self.air_pressure += 0.02 * DT;
            if self.air_pressure > 6.9 {
                self.compressor_loaded = false;
            }
        } else {
            self.air_pressure -= (0.003 + 0.006 * running) * DT;
            if self.air_pressure < 6.2 {
                self.compressor_loaded = true;
            }
        }
        line_kw += if self.compressor_loaded { 18.0 } else { 5.0 };
        self.energy_total += line_kw * DT / 3600.0;
        self.ambient = ambient;
        self.line_kw = line_kw;
    }

    /// Samples every tag whose period has come (all of them when `all`).
    fn sample(&mut self, all: bool) {
        let rel_ms = self.rel() / 1_000_000;
        let cat = Arc::clone(&self.catalog);
        for (i, t) in cat.tags.iter().enumerate() {
            if !all && rel_ms % t.period_ms as i64 != 0 {
                continue;
            }
            let v = match self.stuck[i] {
                Some(v) => v,
                None => self.measure(i, t.decimals, t.ty),
            };
            self.values[i] = v;
            self.stamps[i] = self.now_ns;
        }
    }

    fn measure(&mut self, i: usize, decimals: u8, ty: PlcType) -> Val {
        let x = self.raw(i);
        match ty {
            PlcType::Bool => Val::Bool(x != 0.0),
            t if t.is_integer() => Val::I64(x.round() as i64),
            _ => {
                let p = 10f64.powi(decimals as i32);
                Val::F64((x * p).round() / p)
            }
        }
    }

    /// The current engineering value of tag `i`, with measurement noise.
    fn raw(&mut self, i: usize) -> f64 {
        let tod = self.tod_s() as f64;
        let frac = |m: &Mach, k: usize| m.speed / MACHINES[k].design_bpm;
        let vib = |m: &Mach, k: usize, b: usize| {
            let base = if m.speed > 0.0 { 0.3 + 1.7 * frac(m, k) } else { 0.12 };
            base * (1.0 + 6.0 * m.wear[b] * m.wear[b])
        };
        let g = self.rng.gauss();
        let ms = &self.machines;
        match self.roles[i] {
            Role::State(k) => ms[k].state.code() as f64,
            Role::FaultCode(k) => ms[k].fault_code as f64,
            Role::AutoMode(k) => (ms[k].state != MachineState::Setup) as u8 as f64,
            Role::SpeedSp(k) => ms[k].sp,
            Role::Speed(k) => ms[k].speed,
            Role::Good(k) => ms[k].good as f64,
            Role::Reject(k) => ms[k].reject as f64,
            Role::Current(k) => (ms[k].current + g * 0.08).max(0.0),
            Role::MotorTemp(k) => ms[k].motor_temp + g * 0.05,
            Role::RunHours(k) => ms[k].run_s / 3600.0,
            Role::VibRms(k, b) => (vib(&ms[k], k, b) + g * 0.04).max(0.01),
            Role::VibPeak(k, b) => {
                let w = ms[k].wear[b];
                (0.15 + 0.4 * vib(&ms[k], k, b) * (1.0 + 4.0 * w) + g * 0.03).max(0.01)
            }
            Role::BearingTemp(k, b) => ms[k].bearing_temp[b] + g * 0.1,
            Role::Power(k) => (ms[k].power + g * 0.05).max(0.0),
            Role::Energy(k) => ms[k].energy,
            Role::ConvSpeed(k) => {
                let moving = ms[k].state == MachineState::Running || ms[k + 1].state == MachineState::Running;
                if moving {
                    45.0 + g * 0.1
                } else {
                    0.0
                }
            }
            Role::ConvLevel(k) => self.buffers[k].floor(),
            Role::ConvFull(k) => (self.buffers[k] >= 0.9 * BUFFER_CAP[k]) as u8 as f64,
            Role::ConvEmpty(k) => (self.buffers[k] <= 0.05 * BUFFER_CAP[k]) as u8 as f64,
            Role::FillLevel(v) => self.valve_level[v] + g * 0.1,
            Role::TankTemp => self.tank_temp + g * 0.05,
            Role::TankTempSp => WASHER_SP,
            Role::HeaterOutput => self.heater_out,
            Role::Conductivity => self.conductivity + g * 0.1,
            Role::PumpPressure => (self.pump_pressure + g * 0.02).max(0.0),
            Role::BowlPressure => 3.2 + 0.1 * frac(&ms[2], 2) + g * 0.01,
            Role::ProductTemp => 12.0 + 0.6 * (tod / 10_800.0 * std::f64::consts::TAU).sin() + g * 0.02,
            Role::Co2Pressure => 4.5 + 0.05 * (tod / 3_600.0 * std::f64::consts::TAU).sin() + g * 0.01,
            Role::CapTorque => self.cap_torque + g * 1.5,
            Role::GlueTemp => self.glue_temp + g * 0.3,
            Role::AirPressure => self.air_pressure + g * 0.01,
            Role::WaterFlow => (8.0 + 40.0 * frac(&ms[1], 1) + g * 0.5).max(0.0),
            Role::PowerTotal => self.line_kw + g * 0.2,
            Role::EnergyTotal => self.energy_total,
            Role::Ambient => self.ambient + g * 0.05,
            Role::Unknown => 0.0,
        }
    }
}

fn server_name(s: Server) -> &'static str {
    match s {
        Server::OpcUa => "opcua",
        Server::Modbus => "modbus",
        Server::Mqtt => "mqtt",
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
