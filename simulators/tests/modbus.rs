//! The Modbus TCP server against real clients: pymodbus reading the whole
//! register map (`tests/interop/modbus_client.py`), and tokio-modbus checking
//! exceptions, value updates, comms loss and shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use linesim::line::{Binding, Catalog, Down, Feed, Frame, PlcType, Table, Tag, Val};
use linesim::server::modbus::{register_map, start, ModbusServer};
use linesim::server::ModbusConfig;
use tokio::sync::watch;
use tokio::time::timeout;
use tokio_modbus::client::{tcp, Context, Reader, Writer};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{ExceptionCode, Slave};

fn round_to(x: f64, decimals: u8) -> f64 {
    let p = 10f64.powi(i32::from(decimals));
    (x * p).round() / p
}

/// A value for tag `i` that fits its register encoding, differs per tag and
/// `seed`, uses both words of 32-bit registers and negative numbers for signed ones.
fn test_value(i: usize, tag: &Tag, seed: i64) -> Val {
    let k = i as i64 + seed * 1000;
    let Binding::Modbus(r) = &tag.binding else {
        return match tag.ty {
            PlcType::Bool => Val::Bool(false),
            t if t.is_integer() => Val::I64(0),
            _ => Val::F64(0.0),
        };
    };
    if tag.ty == PlcType::Bool {
        return Val::Bool(k % 3 != 1);
    }
    let raw = match r.ty {
        PlcType::U16 => (k * 977 + 13) % 65_536,
        PlcType::I16 => -((k * 131 + 7) % 32_768),
        PlcType::U32 => 70_000 + k * 100_003,
        PlcType::I32 => -(70_000 + k * 54_321),
        _ => {
            // A float register: any value with the tag's resolution.
            let x = round_to(k as f64 * 12.345 - 40.0, tag.decimals);
            return if tag.ty.is_integer() { Val::I64(x as i64) } else { Val::F64(x) };
        }
    };
    if tag.ty.is_integer() {
        Val::I64(raw)
    } else {
        Val::F64(round_to(raw as f64 * r.scale, tag.decimals))
    }
}

fn test_frame(catalog: &Catalog, seed: i64, down: bool) -> Frame {
    let ts = 1_700_000_000_000_000_000 + seed;
    Frame {
        ts_ns: ts,
        values: catalog.tags.iter().enumerate().map(|(i, t)| test_value(i, t, seed)).collect(),
        stamps: vec![ts; catalog.len()],
        down: Down { modbus: down, ..Down::default() },
    }
}

async fn start_server(seed: i64) -> (Arc<Catalog>, watch::Sender<Arc<Frame>>, ModbusServer) {
    let catalog = Arc::new(Catalog::build().0);
    let (tx, rx) = watch::channel(Arc::new(test_frame(&catalog, seed, false)));
    let cfg = ModbusConfig { listen: "127.0.0.1:0".into() };
    let server = match start(&cfg, Feed { catalog: catalog.clone(), frames: rx }).await {
        Ok(s) => s,
        Err(e) => panic!("modbus server did not start: {e}"),
    };
    (catalog, tx, server)
}

fn repo_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymodbus_reads_the_whole_map() {
    let (catalog, _tx, server) = start_server(1).await;

    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("modbus-interop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the test directory");
    let map_path = dir.join("modbus_map.toml");
    std::fs::write(&map_path, register_map(&catalog)).expect("write the register map");
    let frame = test_frame(&catalog, 1, false);
    let mut expected = serde_json::Map::new();
    for (i, t) in catalog.tags.iter().enumerate() {
        if let Binding::Modbus(_) = t.binding {
            let v = match frame.values[i] {
                Val::Bool(b) => serde_json::json!(b),
                Val::I64(x) => serde_json::json!(x),
                Val::F64(x) => serde_json::json!(x),
            };
            expected.insert(t.name.clone(), v);
        }
    }
    let expected_path = dir.join("modbus_expected.json");
    std::fs::write(&expected_path, serde_json::Value::Object(expected).to_string()).expect("write expected values");

    let addr = server.addr;
    let out = tokio::task::spawn_blocking(move || {
        let probe = Command::new("python3").args(["-c", "import pymodbus"]).output();
        match probe {
            Err(e) => panic!(
                "python3 is needed for this test ({e}); install Python 3.11+ and `python3 -m pip install pymodbus`"
            ),
            Ok(o) if !o.status.success() => panic!(
                "the Python package pymodbus is missing: `python3 -m pip install pymodbus`\n{}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Ok(_) => {}
        }
        Command::new("python3")
            .current_dir(repo_root())
            .arg("tests/interop/modbus_client.py")
            .args(["--host", &addr.ip().to_string(), "--port", &addr.port().to_string()])
            .arg("--map")
            .arg(&map_path)
            .arg("--expected")
            .arg(&expected_path)
            .output()
    })
    .await
    .expect("python runner")
    .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "modbus_client.py failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("OK"), "unexpected output:\n{stdout}\n{stderr}");
    println!("{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// First register (or bit) of a tag and its unit.
fn reg_of(catalog: &Catalog, name: &str) -> linesim::line::ModbusReg {
    let i = catalog.find(name).unwrap_or_else(|| panic!("no tag {name}"));
    match &catalog.tags[i].binding {
        Binding::Modbus(r) => *r,
        b => panic!("{name} is not on modbus: {b:?}"),
    }
}

async fn connect(addr: SocketAddr, unit: u8) -> Context {
    match tcp::connect_slave(addr, Slave(unit)).await {
        Ok(c) => c,
        Err(e) => panic!("connect to {addr}: {e}"),
    }
}

/// How long a read may take before it counts as unanswered (generous for loaded CI machines).
const READ_TIMEOUT: Duration = Duration::from_secs(1);

/// Reads the words of `r` and returns them, or what went wrong.
async fn read_reg(ctx: &mut Context, r: &linesim::line::ModbusReg) -> Result<Vec<u16>, String> {
    ctx.set_slave(Slave(r.unit));
    let n = r.width();
    let res = match r.table {
        Table::Holding => timeout(READ_TIMEOUT, ctx.read_holding_registers(r.address, n)).await,
        Table::Input => timeout(READ_TIMEOUT, ctx.read_input_registers(r.address, n)).await,
        Table::Coil => {
            timeout(READ_TIMEOUT, async {
                ctx.read_coils(r.address, n).await.map(|x| x.map(|b| b.into_iter().map(u16::from).collect()))
            })
            .await
        }
        Table::Discrete => {
            timeout(READ_TIMEOUT, async {
                ctx.read_discrete_inputs(r.address, n).await.map(|x| x.map(|b| b.into_iter().map(u16::from).collect()))
            })
            .await
        }
    };
    match res {
        Err(_) => Err("timeout".into()),
        Ok(Err(e)) => Err(format!("transport: {e}")),
        Ok(Ok(Err(code))) => Err(format!("exception {code:?}")),
        Ok(Ok(Ok(w))) => Ok(w),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceptions_updates_comms_loss_and_shutdown() {
    let (catalog, tx, server) = start_server(1).await;
    let addr = server.addr;
    let temp = reg_of(&catalog, "washer.tank_temp"); // unit 1, input, i16 x 0.1
    let belt = reg_of(&catalog, "conveyor2.speed"); // unit 4, input, f32 CDAB
    assert_ne!(temp.unit, belt.unit);
    let value = |frame: &Frame, name: &str| frame.values[catalog.find(name).unwrap_or(usize::MAX)];

    let f1 = test_frame(&catalog, 1, false);
    let mut ctx = connect(addr, temp.unit).await;
    assert_eq!(read_reg(&mut ctx, &temp).await, Ok(temp.encode(value(&f1, "washer.tank_temp"))));
    assert_eq!(read_reg(&mut ctx, &belt).await, Ok(belt.encode(value(&f1, "conveyor2.speed"))));

    // Protocol exceptions.
    ctx.set_slave(Slave(temp.unit));
    let r = ctx.read_input_registers(0, 0).await.expect("transport");
    assert_eq!(r, Err(ExceptionCode::IllegalDataValue), "quantity 0");
    let r = ctx.read_input_registers(0, 126).await.expect("transport");
    assert_eq!(r, Err(ExceptionCode::IllegalDataValue), "quantity 126");
    let r = ctx.read_coils(0, 2001).await.expect("transport");
    assert_eq!(r, Err(ExceptionCode::IllegalDataValue), "2001 coils");
    let r = ctx.read_input_registers(60_000, 1).await.expect("transport");
    assert_eq!(r, Err(ExceptionCode::IllegalDataAddress), "past the span");
    let r = ctx.write_single_register(0, 1).await.expect("transport");
    assert_eq!(r, Err(ExceptionCode::IllegalFunction), "FC6");
    let r = ctx.write_multiple_registers(0, &[1, 2]).await.expect("transport");
    assert_eq!(r, Err(ExceptionCode::IllegalFunction), "FC16");
    let r = ctx.write_single_coil(0, true).await.expect("transport");
    assert_eq!(r, Err(ExceptionCode::IllegalFunction), "FC5");
    let r = ctx.write_multiple_coils(0, &[true, false]).await.expect("transport");
    assert_eq!(r, Err(ExceptionCode::IllegalFunction), "FC15");
    ctx.set_slave(Slave(200));
    let r = ctx.read_input_registers(0, 1).await.expect("transport");
    assert_eq!(r, Err(ExceptionCode::GatewayTargetDevice), "unknown unit");

    // A new frame with moved stamps is served.
    let f2 = test_frame(&catalog, 2, false);
    assert_ne!(value(&f1, "washer.tank_temp"), value(&f2, "washer.tank_temp"));
    tx.send_replace(Arc::new(f2.clone()));
    let want = Ok(temp.encode(value(&f2, "washer.tank_temp")));
    let mut got = read_reg(&mut ctx, &temp).await;
    for _ in 0..50 {
        if got == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        got = read_reg(&mut ctx, &temp).await;
    }
    assert_eq!(got, want, "value after a new frame");

    // Comms loss: connections are accepted, nothing answers, on any unit.
    tx.send_replace(Arc::new(test_frame(&catalog, 2, true)));
    assert_eq!(read_reg(&mut ctx, &temp).await, Err("timeout".into()), "unit {} while down", temp.unit);
    assert_eq!(read_reg(&mut ctx, &belt).await, Err("timeout".into()), "unit {} while down", belt.unit);
    let mut fresh = connect(addr, belt.unit).await;
    assert_eq!(read_reg(&mut fresh, &belt).await, Err("timeout".into()), "new connection while down");

    // Restored: the same connections answer again, for both units.
    tx.send_replace(Arc::new(f2.clone()));
    assert_eq!(read_reg(&mut ctx, &temp).await, Ok(temp.encode(value(&f2, "washer.tank_temp"))));
    assert_eq!(read_reg(&mut ctx, &belt).await, Ok(belt.encode(value(&f2, "conveyor2.speed"))));
    assert_eq!(read_reg(&mut fresh, &belt).await, Ok(belt.encode(value(&f2, "conveyor2.speed"))));

    // The feed ends: the server stops and closes its port.
    drop(tx);
    assert!(timeout(Duration::from_secs(5), server.join()).await.is_ok(), "server did not stop");
    let r = timeout(Duration::from_secs(2), tcp::connect_slave(addr, Slave(1))).await;
    assert!(!matches!(r, Ok(Ok(_))), "port still open after the feed ended");
    assert!(read_reg(&mut ctx, &temp).await.is_err(), "old connection still answers after the feed ended");
}
