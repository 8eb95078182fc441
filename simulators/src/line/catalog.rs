//! The bottling line's tags: what each one measures, its unit, its rate and
//! where a gateway finds it (OPC UA node, Modbus register, MQTT topic or
//! Sparkplug B metric).
//!
//! The catalog is built in code, in a fixed order, so every tag has a stable
//! index: the model writes `Frame::values[i]` for `Catalog::tags[i]`, and the
//! three servers read the same index. Nothing here depends on the scenario,
//! so the register map (`linesim map modbus`) is the same for every run.

use std::fmt;

/// The machines of the line, in material-flow order.
pub const MACHINES: [Machine; 6] = [
    Machine { id: "depalletizer", browse: "Depalletizer", proto: Proto::Modbus(2), design_bpm: 720.0 },
    Machine { id: "washer", browse: "Washer", proto: Proto::Modbus(1), design_bpm: 660.0 },
    Machine { id: "filler", browse: "Filler", proto: Proto::OpcUa, design_bpm: 600.0 },
    Machine { id: "capper", browse: "Capper", proto: Proto::OpcUa, design_bpm: 660.0 },
    Machine { id: "labeler", browse: "Labeler", proto: Proto::OpcUa, design_bpm: 680.0 },
    Machine { id: "case_packer", browse: "CasePacker", proto: Proto::Modbus(3), design_bpm: 720.0 },
];

/// Number of fill valves on the filler.
pub const FILL_VALVES: usize = 12;
/// Modbus unit id of the conveyors between the machines.
pub const CONVEYOR_UNIT: u8 = 4;
/// Modbus unit id of the utilities (air, water, main power meter).
pub const UTILITY_UNIT: u8 = 5;
/// Sparkplug B group id and edge node id of the energy meters.
pub const SPARKPLUG_GROUP: &str = "line1";
pub const SPARKPLUG_NODE: &str = "energy";
/// OPC UA namespace URI of the line's nodes (differs from the application URI).
pub const OPCUA_NAMESPACE: &str = "urn:linesim:line1";

/// Machine state codes, as every protocol carries them (an integer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum MachineState {
    Idle = 0,
    Running = 1,
    Starved = 2,
    Blocked = 3,
    Fault = 4,
    Setup = 5,
}

impl MachineState {
    pub const ALL: [MachineState; 6] = [
        MachineState::Idle,
        MachineState::Running,
        MachineState::Starved,
        MachineState::Blocked,
        MachineState::Fault,
        MachineState::Setup,
    ];
    pub fn name(self) -> &'static str {
        match self {
            MachineState::Idle => "idle",
            MachineState::Running => "running",
            MachineState::Starved => "starved",
            MachineState::Blocked => "blocked",
            MachineState::Fault => "fault",
            MachineState::Setup => "setup",
        }
    }
    pub fn code(self) -> i64 {
        self as u8 as i64
    }
}

impl fmt::Display for MachineState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a machine's own tags are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    OpcUa,
    /// Modbus TCP, with this unit id.
    Modbus(u8),
}

#[derive(Clone, Copy, Debug)]
pub struct Machine {
    /// Asset id, also the first part of tag names: `filler.speed`.
    pub id: &'static str,
    /// Browse name in the OPC UA address space: `Objects/Line1/Filler`.
    pub browse: &'static str,
    pub proto: Proto,
    /// Design (ideal) speed in bottles per minute.
    pub design_bpm: f64,
}

/// The type a tag has in the PLC, which is the type a server offers it as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlcType {
    Bool,
    U16,
    I16,
    U32,
    I32,
    F32,
    F64,
}

impl PlcType {
    /// True for types whose value is carried in `Val::I64`.
    pub fn is_integer(self) -> bool {
        matches!(self, PlcType::U16 | PlcType::I16 | PlcType::U32 | PlcType::I32)
    }
    pub fn name(self) -> &'static str {
        match self {
            PlcType::Bool => "bool",
            PlcType::U16 => "u16",
            PlcType::I16 => "i16",
            PlcType::U32 => "u32",
            PlcType::I32 => "i32",
            PlcType::F32 => "f32",
            PlcType::F64 => "f64",
        }
    }
}

/// A value as the model produces it. Integers (`PlcType::U16` .. `I32`) are
/// `I64`, floats `F64` (already rounded to the sensor's resolution), booleans `Bool`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Val {
    F64(f64),
    I64(i64),
    Bool(bool),
}

impl Val {
    pub fn as_f64(self) -> f64 {
        match self {
            Val::F64(x) => x,
            Val::I64(x) => x as f64,
            Val::Bool(b) => b as u8 as f64,
        }
    }
}

/// A Modbus data table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    Coil,
    Discrete,
    Holding,
    Input,
}

impl Table {
    pub fn name(self) -> &'static str {
        match self {
            Table::Coil => "coil",
            Table::Discrete => "discrete",
            Table::Holding => "holding",
            Table::Input => "input",
        }
    }
}

/// Word order of a 32-bit value in two registers. `Abcd`: high word first
/// (big-endian, the Modbus default); `Cdab`: low word first (word-swapped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WordOrder {
    Abcd,
    Cdab,
}

impl WordOrder {
    pub fn name(self) -> &'static str {
        match self {
            WordOrder::Abcd => "ABCD",
            WordOrder::Cdab => "CDAB",
        }
    }
}

/// Where a tag lives on the Modbus server and how it is encoded there.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModbusReg {
    pub unit: u8,
    pub table: Table,
    /// 0-based address (register or bit).
    pub address: u16,
    /// How the value is encoded: bool for coils and discrete inputs,
    /// u16/i16/u32/i32/f32 for registers.
    pub ty: PlcType,
    pub order: WordOrder,
    /// Engineering value = raw * scale (1.0 when the register holds the value itself).
    pub scale: f64,
}

impl ModbusReg {
    /// Registers (or bits) the value occupies.
    pub fn width(&self) -> u16 {
        match self.ty {
            PlcType::U32 | PlcType::I32 | PlcType::F32 => 2,
            PlcType::F64 => 4,
            _ => 1,
        }
    }

    /// The raw register words of an engineering value, in wire order.
    pub fn encode(&self, v: Val) -> Vec<u16> {
        let x = v.as_f64();
        let raw = (x / self.scale).round();
        let pair = |u: u32| match self.order {
            WordOrder::Abcd => vec![(u >> 16) as u16, u as u16],
            WordOrder::Cdab => vec![u as u16, (u >> 16) as u16],
        };
        match self.ty {
            PlcType::Bool => vec![(x != 0.0) as u16],
            PlcType::U16 => vec![raw.clamp(0.0, u16::MAX as f64) as u16],
            PlcType::I16 => vec![raw.clamp(i16::MIN as f64, i16::MAX as f64) as i16 as u16],
            PlcType::U32 => pair(raw.clamp(0.0, u32::MAX as f64) as u32),
            PlcType::I32 => pair(raw.clamp(i32::MIN as f64, i32::MAX as f64) as i32 as u32),
            PlcType::F32 => pair(((x / self.scale) as f32).to_bits()),
            PlcType::F64 => {
                let b = (x / self.scale).to_bits();
                let w = [(b >> 48) as u16, (b >> 32) as u16, (b >> 16) as u16, b as u16];
                match self.order {
                    WordOrder::Abcd => w.to_vec(),
                    WordOrder::Cdab => vec![w[3], w[2], w[1], w[0]],
                }
            }
        }
    }
}

/// Where a gateway finds a tag.
#[derive(Clone, Debug, PartialEq)]
pub enum Binding {
    /// A variable in the OPC UA server, string NodeId `path` in namespace
    /// `OPCUA_NAMESPACE`, browse path `Objects/<path>` (e.g. `Line1/Filler/BowlPressure`).
    OpcUa {
        path: String,
    },
    Modbus(ModbusReg),
    /// One field of a JSON object published on `topic`; several tags share a topic.
    MqttJson {
        topic: String,
        field: &'static str,
    },
    /// A metric of a Sparkplug B device of the edge node `SPARKPLUG_NODE`.
    Sparkplug {
        device: &'static str,
        metric: &'static str,
        alias: u64,
    },
}

/// One tag.
#[derive(Clone, Debug, PartialEq)]
pub struct Tag {
    /// `asset.signal`, e.g. `filler.fill_level_03`: the series name in line protocol.
    pub name: String,
    pub asset: &'static str,
    pub signal: String,
    /// OPC UA browse name / display name, e.g. `FillLevel03`.
    pub browse: String,
    pub unit: &'static str,
    pub description: String,
    pub ty: PlcType,
    /// How often the value is sampled (and published), in milliseconds.
    pub period_ms: u32,
    /// Decimal places the sensor resolves (0 for integers and booleans).
    pub decimals: u8,
    pub binding: Binding,
}

/// All tags of the line, with fixed indices.
#[derive(Clone, Debug)]
pub struct Catalog {
    pub tags: Vec<Tag>,
}

/// Index of each tag the model writes, resolved once.
#[derive(Clone, Debug)]
pub struct MachineIdx {
    pub state: usize,
    pub fault_code: usize,
    pub auto_mode: usize,
    pub speed_sp: usize,
    pub speed: usize,
    pub good_count: usize,
    pub reject_count: usize,
    pub motor_current: usize,
    pub motor_temp: usize,
    pub run_hours: usize,
    /// Per bearing (drive end, non-drive end): rms, peak, temperature.
    pub vib_rms: [usize; 2],
    pub vib_peak: [usize; 2],
    pub bearing_temp: [usize; 2],
    pub power: usize,
    pub energy: usize,
}

#[derive(Clone, Debug)]
pub struct ConveyorIdx {
    pub speed: usize,
    pub level: usize,
    pub full: usize,
    pub empty: usize,
}

/// Indices of every tag, by role.
#[derive(Clone, Debug)]
pub struct Index {
    pub machines: Vec<MachineIdx>,
    pub conveyors: Vec<ConveyorIdx>,
    pub washer_tank_temp: usize,
    pub washer_tank_temp_sp: usize,
    pub washer_heater_output: usize,
    pub washer_conductivity: usize,
    pub washer_pump_pressure: usize,
    pub filler_fill_level: [usize; FILL_VALVES],
    pub filler_bowl_pressure: usize,
    pub filler_product_temp: usize,
    pub filler_co2_pressure: usize,
    pub capper_torque: usize,
    pub labeler_glue_temp: usize,
    pub air_pressure: usize,
    pub water_flow: usize,
    pub power_total: usize,
    pub energy_total: usize,
    pub ambient_temp: usize,
}

/// Bearing names: drive end, non-drive end.
pub const BEARINGS: [&str; 2] = ["de", "nde"];

fn camel(signal: &str) -> String {
    signal
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

/// Register allocator for one Modbus unit.
#[derive(Default)]
struct Alloc {
    next: [u16; 4],
}

impl Alloc {
    fn take(&mut self, unit: u8, Enc(table, ty, order, scale): Enc) -> ModbusReg {
        let slot = table as usize;
        let mut r = ModbusReg { unit, table, address: self.next[slot], ty, order, scale };
        if matches!(table, Table::Coil | Table::Discrete) {
            r.ty = PlcType::Bool;
        }
        self.next[slot] += r.width();
        r
    }
}

struct Builder {
    tags: Vec<Tag>,
    units: Vec<(u8, Alloc)>,
    alias: u64,
}

/// How a tag is encoded when it is served over Modbus: table, register type, word order, scale.
#[derive(Clone, Copy)]
struct Enc(Table, PlcType, WordOrder, f64);

/// One tag's definition.
#[derive(Clone, Copy)]
struct Spec {
    signal: &'static str,
    unit: &'static str,
    ty: PlcType,
    enc: Enc,
    period_ms: u32,
    decimals: u8,
    /// The description; for machine tags it follows the machine's name.
    text: &'static str,
}

const fn spec(
    signal: &'static str,
    unit: &'static str,
    ty: PlcType,
    enc: Enc,
    period_ms: u32,
    decimals: u8,
    text: &'static str,
) -> Spec {
    Spec { signal, unit, ty, enc, period_ms, decimals, text }
}

use PlcType::*;
use Table::*;
use WordOrder::*;

/// The tags every machine has, in index order (see `MachineIdx`).
const MACHINE_TAGS: [Spec; 10] = [
    spec(
        "state",
        "",
        U16,
        Enc(Holding, U16, Abcd, 1.0),
        1000,
        0,
        "state: 0 idle, 1 running, 2 starved, 3 blocked, 4 fault, 5 setup",
    ),
    spec("fault_code", "", U16, Enc(Holding, U16, Abcd, 1.0), 1000, 0, "active fault code (0 = none)"),
    spec("speed_sp", "bpm", F32, Enc(Holding, F32, Abcd, 1.0), 1000, 0, "speed setpoint in bottles per minute"),
    spec("auto_mode", "", Bool, Enc(Coil, Bool, Abcd, 1.0), 1000, 0, "in automatic mode"),
    spec("speed", "bpm", F32, Enc(Input, F32, Abcd, 1.0), 1000, 1, "actual speed in bottles per minute"),
    spec("good_count", "bottles", U32, Enc(Input, U32, Abcd, 1.0), 1000, 0, "good bottles since the counter was reset"),
    spec(
        "reject_count",
        "bottles",
        U32,
        Enc(Input, U32, Cdab, 1.0),
        1000,
        0,
        "rejected bottles since the counter was reset",
    ),
    spec("motor_current", "A", F32, Enc(Input, F32, Cdab, 1.0), 1000, 2, "main drive motor current"),
    spec("motor_temp", "°C", F64, Enc(Input, I16, Abcd, 0.1), 5000, 1, "main drive motor winding temperature"),
    spec("run_hours", "h", F64, Enc(Input, U32, Abcd, 0.01), 10_000, 2, "main drive running hours"),
];

/// A wireless bearing sensor's fields: signal pattern (`{b}` = de/nde), unit, decimals, JSON field, text.
const BEARING_TAGS: [(&str, &str, u8, &str, &str); 3] = [
    ("vib_{b}_rms", "mm/s", 3, "rms", "bearing vibration velocity RMS (wireless sensor)"),
    ("vib_{b}_peak", "g", 3, "peak", "bearing acceleration peak (wireless sensor)"),
    ("bearing_{b}_temp", "°C", 1, "temp", "bearing temperature (wireless sensor)"),
];

const WASHER_TAGS: [Spec; 5] = [
    spec("tank_temp", "°C", F64, Enc(Input, I16, Abcd, 0.1), 1000, 1, "Washer caustic tank temperature"),
    spec("tank_temp_sp", "°C", F64, Enc(Holding, I16, Abcd, 0.1), 1000, 1, "Washer caustic tank temperature setpoint"),
    spec("heater_output", "%", F64, Enc(Input, U16, Abcd, 0.1), 1000, 1, "Washer tank heater PID output"),
    spec(
        "conductivity",
        "mS/cm",
        F32,
        Enc(Input, F32, Cdab, 1.0),
        5000,
        2,
        "Washer caustic conductivity (concentration)",
    ),
    spec("pump_pressure", "bar", F64, Enc(Input, I32, Cdab, 0.001), 1000, 3, "Washer spray pump discharge pressure"),
];

const FILL_LEVEL: Spec = spec("fill_level_{v}", "ml", F64, Enc(Input, F32, Abcd, 1.0), 1000, 1, "");

const FILLER_TAGS: [Spec; 3] = [
    spec("bowl_pressure", "bar", F64, Enc(Input, F32, Abcd, 1.0), 1000, 3, "Filler product bowl pressure"),
    spec(
        "product_temp",
        "°C",
        F64,
        Enc(Input, F32, Abcd, 1.0),
        5000,
        2,
        "Filler product temperature at the bowl inlet",
    ),
    spec("co2_pressure", "bar", F64, Enc(Input, F32, Abcd, 1.0), 1000, 3, "Filler CO2 supply pressure"),
];

const CAPPER_TORQUE: Spec = spec(
    "cap_torque",
    "N·cm",
    F64,
    Enc(Input, F32, Abcd, 1.0),
    1000,
    1,
    "Capper mean application torque of the last caps",
);
const LABELER_GLUE: Spec =
    spec("glue_temp", "°C", F64, Enc(Input, F32, Abcd, 1.0), 5000, 1, "Labeler hot-melt glue temperature");

/// Conveyor tags; the speed's word order alternates between conveyors (ABCD, CDAB, ...).
const CONVEYOR_TAGS: [Spec; 4] = [
    spec("speed", "m/min", F32, Enc(Input, F32, Abcd, 1.0), 1000, 1, "belt speed"),
    spec("buffer_level", "bottles", U16, Enc(Input, U16, Abcd, 1.0), 1000, 0, "bottles in the accumulation buffer"),
    spec("full", "", Bool, Enc(Discrete, Bool, Abcd, 1.0), 1000, 0, "accumulation full (photo eye)"),
    spec("empty", "", Bool, Enc(Discrete, Bool, Abcd, 1.0), 1000, 0, "accumulation empty (photo eye)"),
];

const UTILITY_TAGS: [Spec; 5] = [
    spec("air_pressure", "bar", F32, Enc(Input, F32, Cdab, 1.0), 1000, 3, "Compressed-air header pressure"),
    spec("water_flow", "l/min", F64, Enc(Input, U16, Abcd, 0.1), 1000, 1, "Fresh-water flow to the line"),
    spec("power_total", "kW", F32, Enc(Input, F32, Abcd, 1.0), 1000, 2, "Line main power meter: active power"),
    spec(
        "energy_total",
        "kWh",
        F64,
        Enc(Input, U32, Cdab, 0.1),
        10_000,
        1,
        "Line main power meter: energy since reset",
    ),
    spec("ambient_temp", "°C", F64, Enc(Holding, I16, Abcd, 0.1), 10_000, 1, "Hall ambient temperature"),
];

impl Builder {
    fn alloc(&mut self, unit: u8) -> &mut Alloc {
        let pos = match self.units.iter().position(|(u, _)| *u == unit) {
            Some(p) => p,
            None => {
                self.units.push((unit, Alloc::default()));
                self.units.len() - 1
            }
        };
        &mut self.units[pos].1
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        asset: &'static str,
        signal: &str,
        unit: &'static str,
        ty: PlcType,
        period_ms: u32,
        decimals: u8,
        description: String,
        binding: Binding,
    ) -> usize {
        self.tags.push(Tag {
            name: format!("{asset}.{signal}"),
            asset,
            signal: signal.to_string(),
            browse: camel(signal),
            unit,
            description,
            ty,
            period_ms,
            decimals,
            binding,
        });
        self.tags.len() - 1
    }

    /// A tag served by its machine's controller: an OPC UA variable, or a
    /// Modbus register encoded as the spec says.
    fn plc(&mut self, m: &Machine, spec: &Spec, description: String) -> usize {
        self.plc_named(m, spec.signal, spec, description)
    }

    /// `plc` for a signal name made at run time (numbered valves).
    fn plc_named(&mut self, m: &Machine, signal: &str, spec: &Spec, description: String) -> usize {
        let binding = match m.proto {
            Proto::OpcUa => Binding::OpcUa { path: format!("Line1/{}/{}", m.browse, camel(signal)) },
            Proto::Modbus(u) => Binding::Modbus(self.alloc(u).take(u, spec.enc)),
        };
        self.push(m.id, signal, spec.unit, spec.ty, spec.period_ms, spec.decimals, description, binding)
    }

    /// A tag of a device that only speaks Modbus.
    fn modbus(&mut self, asset: &'static str, unit_id: u8, spec: &Spec, description: String) -> usize {
        let binding = Binding::Modbus(self.alloc(unit_id).take(unit_id, spec.enc));
        self.push(asset, spec.signal, spec.unit, spec.ty, spec.period_ms, spec.decimals, description, binding)
    }

    fn sparkplug(
        &mut self,
        m: &Machine,
        metric: &'static str,
        signal: &str,
        unit: &'static str,
        desc: String,
    ) -> usize {
        self.alias += 1;
        let binding = Binding::Sparkplug { device: m.id, metric, alias: self.alias };
        self.push(m.id, signal, unit, PlcType::F64, 5_000, 3, desc, binding)
    }
}

impl Catalog {
    /// The line's tags and the index of each role.
    pub fn build() -> (Catalog, Index) {
        let mut b = Builder { tags: Vec::new(), units: Vec::new(), alias: 0 };
        let mut machines = Vec::new();
        for m in &MACHINES {
            let name = m.browse;
            let ids = MACHINE_TAGS.each_ref().map(|s| b.plc(m, s, format!("{name} {}", s.text)));
            let mut bearing_ids = [[0; 3]; 2];
            for (k, bearing) in BEARINGS.iter().enumerate() {
                let topic = format!("plant/line1/{}/vib_{bearing}", m.id);
                let which = if k == 0 { "drive-end" } else { "non-drive-end" };
                for (j, (signal, unit, decimals, field, text)) in BEARING_TAGS.iter().enumerate() {
                    bearing_ids[k][j] = b.push(
                        m.id,
                        &signal.replace("{b}", bearing),
                        unit,
                        F64,
                        10_000,
                        *decimals,
                        format!("{name} main drive {which} {text}"),
                        Binding::MqttJson { topic: topic.clone(), field },
                    );
                }
            }
            let power = b.sparkplug(m, "Power", "power", "kW", format!("{name} electrical power (energy meter)"));
            let energy = b.sparkplug(m, "Energy", "energy", "kWh", format!("{name} energy since the meter was reset"));
            let [state, fault_code, speed_sp, auto_mode, speed, good_count, reject_count, motor_current, motor_temp, run_hours] =
                ids;
            machines.push(MachineIdx {
                state,
                fault_code,
                auto_mode,
                speed_sp,
                speed,
                good_count,
                reject_count,
                motor_current,
                motor_temp,
                run_hours,
                vib_rms: [bearing_ids[0][0], bearing_ids[1][0]],
                vib_peak: [bearing_ids[0][1], bearing_ids[1][1]],
                bearing_temp: [bearing_ids[0][2], bearing_ids[1][2]],
                power,
                energy,
            });
        }
        let [washer, filler, capper, labeler] = [&MACHINES[1], &MACHINES[2], &MACHINES[3], &MACHINES[4]];
        let [washer_tank_temp, washer_tank_temp_sp, washer_heater_output, washer_conductivity, washer_pump_pressure] =
            WASHER_TAGS.each_ref().map(|s| b.plc(washer, s, s.text.to_string()));
        let mut filler_fill_level = [0; FILL_VALVES];
        for (v, slot) in filler_fill_level.iter_mut().enumerate() {
            let signal = FILL_LEVEL.signal.replace("{v}", &format!("{:02}", v + 1));
            let text = format!("Filler valve {} mean fill volume of its last bottles (nominal 500 ml)", v + 1);
            *slot = b.plc_named(filler, &signal, &FILL_LEVEL, text);
        }
        let [filler_bowl_pressure, filler_product_temp, filler_co2_pressure] =
            FILLER_TAGS.each_ref().map(|s| b.plc(filler, s, s.text.to_string()));
        let capper_torque = b.plc(capper, &CAPPER_TORQUE, CAPPER_TORQUE.text.to_string());
        let labeler_glue_temp = b.plc(labeler, &LABELER_GLUE, LABELER_GLUE.text.to_string());
        const CONVEYORS: [&str; 5] = ["conveyor1", "conveyor2", "conveyor3", "conveyor4", "conveyor5"];
        let mut conveyors = Vec::new();
        for (k, c) in CONVEYORS.iter().enumerate() {
            let between = format!("{} to {}", MACHINES[k].browse, MACHINES[k + 1].browse);
            let [speed, level, full, empty] = CONVEYOR_TAGS.each_ref().map(|s| {
                let mut enc = s.enc;
                if s.signal == "speed" && k % 2 == 1 {
                    enc.2 = Cdab;
                }
                b.modbus(c, CONVEYOR_UNIT, &Spec { enc, ..*s }, format!("Conveyor {between}: {}", s.text))
            });
            conveyors.push(ConveyorIdx { speed, level, full, empty });
        }
        let [air_pressure, water_flow, power_total, energy_total, ambient_temp] =
            UTILITY_TAGS.each_ref().map(|s| b.modbus("utilities", UTILITY_UNIT, s, s.text.to_string()));
        let index = Index {
            machines,
            conveyors,
            washer_tank_temp,
            washer_tank_temp_sp,
            washer_heater_output,
            washer_conductivity,
            washer_pump_pressure,
            filler_fill_level,
            filler_bowl_pressure,
            filler_product_temp,
            filler_co2_pressure,
            capper_torque,
            labeler_glue_temp,
            air_pressure,
            water_flow,
            power_total,
            energy_total,
            ambient_temp,
        };
        (Catalog { tags: b.tags }, index)
    }

    pub fn len(&self) -> usize {
        self.tags.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }

    /// Index of a tag by name.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.tags.iter().position(|t| t.name == name)
    }

    /// The Modbus unit ids served, ascending.
    pub fn modbus_units(&self) -> Vec<u8> {
        let mut u: Vec<u8> = self
            .tags
            .iter()
            .filter_map(|t| match &t.binding {
                Binding::Modbus(r) => Some(r.unit),
                _ => None,
            })
            .collect();
        u.sort_unstable();
        u.dedup();
        u
    }

    /// MQTT JSON topics and the tags each carries, in catalog order.
    pub fn json_topics(&self) -> Vec<(String, Vec<usize>)> {
        let mut out: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, t) in self.tags.iter().enumerate() {
            if let Binding::MqttJson { topic, .. } = &t.binding {
                match out.iter_mut().find(|(tp, _)| tp == topic) {
                    Some((_, v)) => v.push(i),
                    None => out.push((topic.clone(), vec![i])),
                }
            }
        }
        out
    }

    /// Sparkplug B devices and their metrics' tag indices, in catalog order.
    pub fn sparkplug_devices(&self) -> Vec<(&'static str, Vec<usize>)> {
        let mut out: Vec<(&'static str, Vec<usize>)> = Vec::new();
        for (i, t) in self.tags.iter().enumerate() {
            if let Binding::Sparkplug { device, .. } = &t.binding {
                match out.iter_mut().find(|(d, _)| d == device) {
                    Some((_, v)) => v.push(i),
                    None => out.push((device, vec![i])),
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_least_150_unique_tags_without_register_overlap() {
        let (c, _) = Catalog::build();
        assert!(c.len() >= 150, "{} tags", c.len());
        let mut names: Vec<&str> = c.tags.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), c.len(), "tag names are unique");
        let mut used = std::collections::HashSet::new();
        for t in &c.tags {
            if let Binding::Modbus(r) = &t.binding {
                for k in 0..r.width() {
                    assert!(used.insert((r.unit, r.table as u8, r.address + k)), "{} overlaps", t.name);
                }
            }
        }
        assert!(c.modbus_units().len() >= 3);
    }

    #[test]
    fn register_encoding() {
        let r = ModbusReg {
            unit: 1,
            table: Table::Input,
            address: 0,
            ty: PlcType::F32,
            order: WordOrder::Cdab,
            scale: 1.0,
        };
        let b = 1.5f32.to_bits();
        assert_eq!(r.encode(Val::F64(1.5)), vec![b as u16, (b >> 16) as u16]);
        let r = ModbusReg { ty: PlcType::I16, scale: 0.1, order: WordOrder::Abcd, ..r };
        assert_eq!(r.encode(Val::F64(-12.3)), vec![(-123i16) as u16]);
        let r = ModbusReg { ty: PlcType::U32, scale: 1.0, ..r };
        assert_eq!(r.encode(Val::I64(70_000)), vec![1, 4_464]);
    }
}
