//! The Modbus TCP server: the line's Modbus controllers (washer, depalletizer,
//! case packer, conveyors, utilities) behind one TCP endpoint, one unit id each,
//! like a multi-drop gateway in front of several PLCs.
//!
//! Behaviour, as a real device would show it:
//! - Function codes 1 (coils), 2 (discrete inputs), 3 (holding registers) and
//!   4 (input registers) are served from a register image per unit and table,
//!   updated from the feed (only the tags whose stamps moved are re-encoded).
//! - The mapped span of a unit's table runs from address 0 to the end of its
//!   highest tag. Reads inside the span answer; unmapped addresses inside it
//!   (none in the current catalog, which packs every table) read as 0. A read
//!   that runs past the span, or of a table the unit does not have, answers
//!   exception 0x02 IllegalDataAddress; a quantity of 0 or more than 125
//!   registers (2000 bits) answers 0x03 IllegalDataValue (checked first, as the
//!   Modbus specification orders it).
//! - Every other function code, writes included (5, 6, 15, 16, 22, 23), answers
//!   0x01 IllegalFunction: the simulator is read-only.
//! - A unit id that is not in the map answers 0x0B GatewayTargetDevice ("gateway
//!   target device failed to respond"), as a Modbus TCP gateway does for a unit
//!   it cannot reach; this check comes before the function code.
//! - While `frame.down.modbus` is set (comms loss), connections are still
//!   accepted and requests read, but nothing is answered: the client times out,
//!   as with a dead PLC behind a live switch. Answers resume when the flag clears,
//!   on the same connections.
//!
//! [`register_map`] renders the map as gateway `[[tag]]` tables.

use std::fmt::Write as _;
use std::future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_modbus::server::tcp::{accept_tcp_connection, Server};
use tokio_modbus::server::Service;
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

use super::ModbusConfig;
use crate::line::{Binding, Catalog, Feed, Frame, ModbusReg, PlcType, Table};

/// Most registers one read may ask for (function codes 3 and 4).
pub const MAX_READ_REGISTERS: u16 = 125;
/// Most bits one read may ask for (function codes 1 and 2).
pub const MAX_READ_BITS: u16 = 2000;

/// Why the Modbus server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ModbusError {
    #[error("cannot listen on {listen}: {source}")]
    Bind { listen: String, source: io::Error },
    #[error("cannot read the bound address of {listen}: {source}")]
    LocalAddr { listen: String, source: io::Error },
}

/// A running Modbus TCP server. It stops when the feed's sender is dropped.
#[derive(Debug)]
pub struct ModbusServer {
    /// The bound address (the real port when the config asked for port 0).
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl ModbusServer {
    /// Waits until the server has stopped (the feed ended).
    pub async fn join(self) {
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "modbus server task failed");
        }
    }
}

/// Binds `cfg.listen`, builds the register images from the feed's current
/// frame and serves them until the feed's sender is dropped.
pub async fn start(cfg: &ModbusConfig, feed: Feed) -> Result<ModbusServer, ModbusError> {
    let listener = TcpListener::bind(&cfg.listen)
        .await
        .map_err(|source| ModbusError::Bind { listen: cfg.listen.clone(), source })?;
    let addr = listener.local_addr().map_err(|source| ModbusError::LocalAddr { listen: cfg.listen.clone(), source })?;

    let mut images = Images::new(&feed.catalog);
    let mut frames = feed.frames;
    let first = frames.borrow_and_update().clone();
    images.apply(&first);
    let units: Vec<u8> = images.units.iter().map(|u| u.unit).collect();
    let device = Device(Arc::new(Shared { images: RwLock::new(images), frames: frames.clone() }));

    let (done_tx, done_rx) = oneshot::channel::<()>();
    tokio::spawn(update(device.clone(), frames, first, done_tx));
    let task = tokio::spawn(serve(listener, device, done_rx));
    tracing::info!(%addr, ?units, "modbus server listening");
    Ok(ModbusServer { addr, task })
}

/// Applies every new frame to the images; returns (and so stops the server)
/// when the feed's sender is gone.
async fn update(device: Device, mut frames: watch::Receiver<Arc<Frame>>, first: Arc<Frame>, done: oneshot::Sender<()>) {
    let mut down = first.down.modbus;
    if down {
        tracing::warn!("modbus comms loss: not answering");
    }
    while frames.changed().await.is_ok() {
        let frame = frames.borrow_and_update().clone();
        if frame.down.modbus != down {
            down = frame.down.modbus;
            if down {
                tracing::warn!("modbus comms loss: not answering");
            } else {
                tracing::info!("modbus comms restored: answering again");
            }
        }
        device.0.images.write().unwrap_or_else(|e| e.into_inner()).apply(&frame);
    }
    tracing::info!("modbus feed ended: stopping the server");
    let _ = done.send(());
}

/// Accepts connections until `done` fires. An accept error (e.g. out of file
/// descriptors) is logged and listening resumes after a pause.
async fn serve(listener: TcpListener, device: Device, mut done: oneshot::Receiver<()>) {
    let server = Server::new(listener);
    let on_connected = |stream, peer: SocketAddr| {
        let device = device.clone();
        async move {
            tracing::debug!(%peer, "modbus client connected");
            accept_tcp_connection(stream, peer, |_| Ok(Some(device.clone())))
        }
    };
    let on_error = |e: io::Error| tracing::debug!(error = %e, "modbus connection closed on an error");
    loop {
        tokio::select! {
            res = server.serve(&on_connected, on_error) => {
                if let Err(e) = res {
                    tracing::warn!(error = %e, "modbus accept failed; listening again in 1 s");
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = &mut done => break,
                }
            }
            _ = &mut done => break,
        }
    }
    tracing::info!("modbus server stopped");
}

/// The register images of every unit, and where each Modbus tag goes in them.
struct Images {
    units: Vec<UnitImage>,
    slots: Vec<Slot>,
}

/// One unit's four tables, indexed by `Table as usize`; bits are stored as 0/1.
struct UnitImage {
    unit: u8,
    tables: [Vec<u16>; 4],
}

/// A Modbus tag: its catalog index, unit position in `Images::units`, its
/// register and the stamp last encoded.
struct Slot {
    tag: usize,
    unit: usize,
    reg: ModbusReg,
    stamp: Option<i64>,
}

impl Images {
    fn new(catalog: &Catalog) -> Images {
        let mut units: Vec<UnitImage> = Vec::new();
        let mut slots = Vec::new();
        for (tag, t) in catalog.tags.iter().enumerate() {
            let Binding::Modbus(reg) = &t.binding else { continue };
            let unit = match units.iter().position(|u| u.unit == reg.unit) {
                Some(p) => p,
                None => {
                    units.push(UnitImage { unit: reg.unit, tables: Default::default() });
                    units.len() - 1
                }
            };
            let table = &mut units[unit].tables[reg.table as usize];
            let end = usize::from(reg.address) + usize::from(reg.width());
            if table.len() < end {
                table.resize(end, 0);
            }
            slots.push(Slot { tag, unit, reg: *reg, stamp: None });
        }
        Images { units, slots }
    }

    /// Re-encodes the tags whose stamp moved since the last frame.
    fn apply(&mut self, frame: &Frame) {
        for slot in &mut self.slots {
            let (Some(&val), Some(&stamp)) = (frame.values.get(slot.tag), frame.stamps.get(slot.tag)) else {
                continue;
            };
            if slot.stamp == Some(stamp) {
                continue;
            }
            slot.stamp = Some(stamp);
            let words = slot.reg.encode(val);
            let table = &mut self.units[slot.unit].tables[slot.reg.table as usize];
            let at = usize::from(slot.reg.address);
            for (k, w) in words.into_iter().enumerate() {
                if let Some(cell) = table.get_mut(at + k) {
                    *cell = w;
                }
            }
        }
    }

    /// Answers a read of `table` on `unit`.
    fn read(&self, unit: u8, table: Table, addr: u16, qty: u16) -> Result<Response, ExceptionCode> {
        let image = self.units.iter().find(|u| u.unit == unit).ok_or(ExceptionCode::GatewayTargetDevice)?;
        let bits = matches!(table, Table::Coil | Table::Discrete);
        let max = if bits { MAX_READ_BITS } else { MAX_READ_REGISTERS };
        if qty == 0 || qty > max {
            return Err(ExceptionCode::IllegalDataValue);
        }
        let words = &image.tables[table as usize];
        let start = usize::from(addr);
        let end = start + usize::from(qty);
        let data = words.get(start..end).ok_or(ExceptionCode::IllegalDataAddress)?;
        Ok(match table {
            Table::Coil => Response::ReadCoils(data.iter().map(|&w| w != 0).collect()),
            Table::Discrete => Response::ReadDiscreteInputs(data.iter().map(|&w| w != 0).collect()),
            Table::Holding => Response::ReadHoldingRegisters(data.to_vec()),
            Table::Input => Response::ReadInputRegisters(data.to_vec()),
        })
    }
}

struct Shared {
    images: RwLock<Images>,
    /// Read at each request for the comms-loss flag, so it applies at once.
    frames: watch::Receiver<Arc<Frame>>,
}

/// The Modbus service of every connection.
#[derive(Clone)]
struct Device(Arc<Shared>);

impl Device {
    fn answer(&self, req: SlaveRequest<'static>) -> Result<Option<Response>, ExceptionCode> {
        if self.0.frames.borrow().down.modbus {
            tracing::trace!(unit = req.slave, fc = req.request.function_code().value(), "comms loss: request dropped");
            return Ok(None);
        }
        let images = self.0.images.read().unwrap_or_else(|e| e.into_inner());
        if !images.units.iter().any(|u| u.unit == req.slave) {
            return Err(ExceptionCode::GatewayTargetDevice);
        }
        let (table, addr, qty) = match req.request {
            Request::ReadCoils(a, n) => (Table::Coil, a, n),
            Request::ReadDiscreteInputs(a, n) => (Table::Discrete, a, n),
            Request::ReadHoldingRegisters(a, n) => (Table::Holding, a, n),
            Request::ReadInputRegisters(a, n) => (Table::Input, a, n),
            other => {
                tracing::debug!(unit = req.slave, fc = other.function_code().value(), "unsupported function");
                return Err(ExceptionCode::IllegalFunction);
            }
        };
        images.read(req.slave, table, addr, qty).map(Some)
    }
}

impl Service for Device {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = future::Ready<Result<Option<Response>, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        future::ready(self.answer(req))
    }
}

// ---------------------------------------------------------------------------
// The register map document

/// Source id the map's tags name; the gateway config needs a `[[source]]` of that id.
pub const MAP_SOURCE: &str = "linesim-modbus";

/// The register map as gateway `[[tag]]` tables (TOML), one per Modbus tag, in
/// catalog order, with a header listing the units. Append it to a gateway
/// config that has a `modbus` `[[source]]` with id `linesim-modbus` and the assets.
pub fn register_map(catalog: &Catalog) -> String {
    let tags: Vec<(&crate::line::Tag, &ModbusReg)> = catalog
        .tags
        .iter()
        .filter_map(|t| match &t.binding {
            Binding::Modbus(r) => Some((t, r)),
            _ => None,
        })
        .collect();
    let mut out = String::new();
    out.push_str("# Modbus register map of the linesim bottling line.\n");
    out.push_str("# Generated by `linesim map modbus`; do not edit: it follows the simulator's tag catalog.\n#\n");
    out.push_str("# All units answer on one Modbus TCP endpoint (linesim's [modbus] listen, default\n");
    out.push_str("# 127.0.0.1:5020). Addresses are 0-based as on the wire. Read-only: writes answer\n");
    out.push_str("# exception 1; reads past a table's last register answer exception 2; unknown\n");
    out.push_str("# unit ids answer exception 11 (0x0B).\n#\n");
    let mut rows = Vec::new();
    for unit in catalog.modbus_units() {
        let mut assets: Vec<&str> = Vec::new();
        let mut size = [0u32; 4];
        for (t, r) in tags.iter().filter(|(_, r)| r.unit == unit) {
            if !assets.contains(&t.asset) {
                assets.push(t.asset);
            }
            let end = u32::from(r.address) + u32::from(r.width());
            size[r.table as usize] = size[r.table as usize].max(end);
        }
        rows.push((unit, assets.join(", "), size));
    }
    let w = rows.iter().map(|(_, a, _)| a.len()).max().unwrap_or(0).max("assets".len());
    out.push_str("# Addresses used per unit and table (coils and discrete inputs in bits):\n");
    let _ = writeln!(out, "# unit  {:<w$}  coils  discrete  holding  input", "assets");
    for (unit, assets, size) in rows {
        let _ = writeln!(
            out,
            "# {unit:>4}  {assets:<w$}  {:>5}  {:>8}  {:>7}  {:>5}",
            size[Table::Coil as usize],
            size[Table::Discrete as usize],
            size[Table::Holding as usize],
            size[Table::Input as usize],
        );
    }
    out.push_str("#\n# The gateway source these tags read from, for example:\n");
    out.push_str("#   [[source]]\n");
    let _ = writeln!(out, "#   id = \"{MAP_SOURCE}\"");
    out.push_str("#   kind = \"modbus\"\n");
    out.push_str("#   endpoint = \"tcp://127.0.0.1:5020\"\n");
    out.push_str("#   poll_interval = \"1s\"\n");
    for (t, r) in &tags {
        tag_entry(&mut out, t, MAP_SOURCE, &address(r), value_type(t.ty, r));
    }
    out
}

/// One gateway `[[tag]]` table (with a blank line before it).
pub(crate) fn tag_entry(out: &mut String, t: &crate::line::Tag, source: &str, address: &str, value_type: &str) {
    out.push('\n');
    out.push_str("[[tag]]\n");
    let _ = writeln!(out, "name = {}", toml_str(&t.name));
    let _ = writeln!(out, "asset = {}", toml_str(t.asset));
    let _ = writeln!(out, "source = {}", toml_str(source));
    let _ = writeln!(out, "address = {address}");
    if !t.unit.is_empty() {
        let _ = writeln!(out, "unit = {}", toml_str(t.unit));
    }
    let _ = writeln!(out, "description = {}", toml_str(&t.description));
    let _ = writeln!(out, "value_type = \"{value_type}\"");
}

/// The gateway's inline address table of a register.
fn address(r: &ModbusReg) -> String {
    let mut s = format!("{{ unit = {}, table = \"{}\", register = {}", r.unit, r.table.name(), r.address);
    match r.table {
        Table::Coil | Table::Discrete => s.push_str(", type = \"bool\""),
        Table::Holding | Table::Input => {
            let _ = write!(s, ", type = \"{}\", order = \"{}\"", r.ty.name(), r.order.name());
            if r.scale != 1.0 {
                // `{:?}` always writes a float TOML accepts (`0.1`, `10.0`, `1e-7`).
                let _ = write!(s, ", scale = {:?}", r.scale);
            }
        }
    }
    s.push_str(" }");
    s
}

/// The gateway `value_type` of a tag: `i64` only where the register holds the
/// integer itself (the gateway rejects `i64` with a scale or a float register).
fn value_type(ty: PlcType, r: &ModbusReg) -> &'static str {
    if ty == PlcType::Bool {
        "bool"
    } else if ty.is_integer() && r.ty.is_integer() && r.scale == 1.0 {
        "i64"
    } else {
        "f64"
    }
}

/// A TOML basic string.
pub(crate) fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::line::{Down, Val, WordOrder};

    fn reg(ty: PlcType, order: WordOrder, scale: f64) -> ModbusReg {
        ModbusReg { unit: 1, table: Table::Input, address: 0, ty, order, scale }
    }

    #[test]
    fn encoding_of_every_type_and_order() {
        let r = reg(PlcType::I32, WordOrder::Cdab, 0.001);
        let raw = -1_234_567i32 as u32;
        assert_eq!(r.encode(Val::F64(-1234.567)), vec![raw as u16, (raw >> 16) as u16]);
        let r = reg(PlcType::I32, WordOrder::Abcd, 1.0);
        assert_eq!(r.encode(Val::I64(-2)), vec![0xFFFF, 0xFFFE]);
        let r = reg(PlcType::U32, WordOrder::Abcd, 0.01);
        assert_eq!(r.encode(Val::F64(12345.67)), vec![(1_234_567u32 >> 16) as u16, 1_234_567u32 as u16]);
        let r = reg(PlcType::U16, WordOrder::Abcd, 0.1);
        assert_eq!(r.encode(Val::F64(6553.5)), vec![65535]);
        assert_eq!(r.encode(Val::F64(-1.0)), vec![0], "clamped at the type's range");
        let r = reg(PlcType::F32, WordOrder::Abcd, 1.0);
        let b = 500.25f32.to_bits();
        assert_eq!(r.encode(Val::F64(500.25)), vec![(b >> 16) as u16, b as u16]);
        let x = 1.0e10f64.to_bits();
        let w = [(x >> 48) as u16, (x >> 32) as u16, (x >> 16) as u16, x as u16];
        assert_eq!(reg(PlcType::F64, WordOrder::Abcd, 1.0).encode(Val::F64(1.0e10)), w.to_vec());
        assert_eq!(reg(PlcType::F64, WordOrder::Cdab, 1.0).encode(Val::F64(1.0e10)), vec![w[3], w[2], w[1], w[0]]);
        let r = ModbusReg { table: Table::Coil, ..reg(PlcType::Bool, WordOrder::Abcd, 1.0) };
        assert_eq!(r.encode(Val::Bool(true)), vec![1]);
        assert_eq!(r.encode(Val::Bool(false)), vec![0]);
    }

    fn frame(catalog: &Catalog, stamp: i64, f: impl Fn(usize) -> Val) -> Frame {
        Frame {
            ts_ns: stamp,
            values: (0..catalog.len()).map(f).collect(),
            stamps: vec![stamp; catalog.len()],
            down: Down::default(),
        }
    }

    #[test]
    fn images_follow_stamps_and_check_ranges() {
        let (catalog, index) = Catalog::build();
        let mut images = Images::new(&catalog);
        let state = index.machines[1].state; // washer, unit 1
        let Binding::Modbus(r) = catalog.tags[state].binding else { panic!("washer state is on modbus") };
        let c = &catalog;
        let val = |v: i64| move |i: usize| if c.tags[i].ty == PlcType::Bool { Val::Bool(true) } else { Val::I64(v) };
        images.apply(&frame(&catalog, 1, val(3)));
        let read = |images: &Images| match images.read(r.unit, Table::Holding, r.address, 1) {
            Ok(Response::ReadHoldingRegisters(w)) => w[0],
            other => panic!("{other:?}"),
        };
        assert_eq!(read(&images), 3);
        // Same stamp: not re-encoded (the value may only change with the stamp).
        images.apply(&frame(&catalog, 1, val(4)));
        assert_eq!(read(&images), 3);
        images.apply(&frame(&catalog, 2, val(4)));
        assert_eq!(read(&images), 4);

        let span = images.units.iter().find(|u| u.unit == r.unit).map(|u| u.tables[Table::Holding as usize].len());
        let span = span.and_then(|n| u16::try_from(n).ok()).unwrap_or(0);
        assert!(span > 0);
        assert!(images.read(r.unit, Table::Holding, 0, span).is_ok());
        assert_eq!(images.read(r.unit, Table::Holding, 0, span + 1).err(), Some(ExceptionCode::IllegalDataAddress));
        assert_eq!(images.read(r.unit, Table::Holding, span, 1).err(), Some(ExceptionCode::IllegalDataAddress));
        assert_eq!(images.read(r.unit, Table::Holding, 0, 0).err(), Some(ExceptionCode::IllegalDataValue));
        assert_eq!(images.read(r.unit, Table::Holding, 0, 126).err(), Some(ExceptionCode::IllegalDataValue));
        assert_eq!(images.read(r.unit, Table::Coil, 0, 2001).err(), Some(ExceptionCode::IllegalDataValue));
        assert_eq!(images.read(200, Table::Holding, 0, 1).err(), Some(ExceptionCode::GatewayTargetDevice));
        // Unit 4 (conveyors) has no holding registers at all.
        assert_eq!(images.read(4, Table::Holding, 0, 1).err(), Some(ExceptionCode::IllegalDataAddress));
    }

    #[test]
    fn map_lists_every_modbus_tag_once() {
        let (catalog, _) = Catalog::build();
        let map = register_map(&catalog);
        let n = catalog.tags.iter().filter(|t| matches!(t.binding, Binding::Modbus(_))).count();
        assert_eq!(map.matches("[[tag]]\n").count(), n);
        let doc: toml::Table = match map.parse() {
            Ok(d) => d,
            Err(e) => panic!("map is not TOML: {e}\n{map}"),
        };
        let tags = doc.get("tag").and_then(|t| t.as_array()).map(|a| a.len());
        assert_eq!(tags, Some(n));
        let i = catalog.find("washer.tank_temp").unwrap_or(usize::MAX);
        let Some(Binding::Modbus(r)) = catalog.tags.get(i).map(|t| &t.binding) else { panic!("washer.tank_temp") };
        let want = format!(
            "address = {{ unit = 1, table = \"input\", register = {}, type = \"i16\", order = \"ABCD\", scale = 0.1 }}",
            r.address
        );
        assert!(map.contains(&format!(
            "name = \"washer.tank_temp\"\nasset = \"washer\"\nsource = \"{MAP_SOURCE}\"\n{want}\n"
        )));
        assert!(map.contains("name = \"washer.state\""));
        assert!(map.contains("table = \"coil\", register = 0, type = \"bool\" }"));
    }
}
