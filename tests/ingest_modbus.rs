//! The Modbus driver against linesim's Modbus TCP server, in-process on
//! loopback: every tag of the register map lands in the store with the value
//! the frozen line serves; a server that goes away shows as `down` with
//! bad-quality samples, and polling resumes by itself when it comes back.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use linepilot::config::Config;
use linepilot::domain::{SeriesId, Value};
use linepilot::ingest::SourceState;
use linesim::line::live::LiveOptions;
use linesim::line::scenario::Scenario;
use linesim::line::{Binding, PlcType, Val};
use linesim::server::Running;

mod common;

use common::Gateway;

const SOURCE: &str = "linesim-modbus";

/// Starts the demo line frozen two hours into its run, Modbus on `modbus_port` (0: any).
async fn start_line(pki: &Path, modbus_port: u16) -> Running {
    let path = common::demo_scenario_path();
    let start_ns = Scenario::load(&path).and_then(|s| s.start_ns("demo.toml")).expect("demo scenario start");
    let opts = LiveOptions { speed: 0.0, skip_ns: 2 * 3_600_000_000_000, start_ns: Some(start_ns), truth: None };
    common::start_line(pki, opts, |sc| sc.modbus.listen = format!("127.0.0.1:{modbus_port}")).await
}

/// The gateway config: the line's assets, one Modbus source and the whole register map.
fn gateway_config(running: &Running, data_dir: &Path) -> Config {
    let text = gateway_text(running, data_dir);
    Config::from_str_named(&text, "gateway.toml").unwrap_or_else(|e| panic!("gateway config does not load:\n{e}"))
}

/// The text of [`gateway_config`].
fn gateway_text(running: &Running, data_dir: &Path) -> String {
    let catalog = &running.line.feed.catalog;
    let mut assets: Vec<&str> = Vec::new();
    for t in &catalog.tags {
        if matches!(t.binding, Binding::Modbus(_)) && !assets.contains(&t.asset) {
            assets.push(t.asset);
        }
    }
    let mut text = format!(
        "[site]\nname = \"Plant\"\ntime_zone = \"UTC\"\n[store]\ndata_dir = \"{}\"\n[[area]]\nid = \"hall\"\nname = \"Hall\"\n[[line]]\nid = \"line1\"\nname = \"Line 1\"\narea = \"hall\"\n",
        data_dir.display()
    );
    for a in &assets {
        text.push_str(&format!("[[asset]]\nid = \"{a}\"\nname = \"{a}\"\nline = \"line1\"\nkind = \"{a}\"\n"));
    }
    text.push_str(&format!(
        "[[source]]\nid = \"{SOURCE}\"\nkind = \"modbus\"\nendpoint = \"tcp://{}\"\npoll_interval = \"200ms\"\ntimeout = \"300ms\"\n",
        running.modbus.addr
    ));
    let map = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/linesim/modbus-map.toml"))
        .expect("configs/linesim/modbus-map.toml");
    text.push_str(&map);
    text
}

/// Checks every Modbus tag's latest value against the frozen frame.
fn check_values(running: &Running, gw: &Gateway) {
    let catalog = &running.line.feed.catalog;
    let frame = running.line.feed.frames.borrow().clone();
    let ids: Vec<SeriesId> = gw.ids.iter().map(|(_, id)| *id).collect();
    let latest = gw.store.latest(&ids);
    let mut checked = 0;
    for ((name, _), l) in gw.ids.iter().zip(latest) {
        let l = l.unwrap_or_else(|| panic!("{name}: no sample"));
        assert!(l.quality.is_good(), "{name}: quality {}", l.quality);
        let i = catalog.find(name).unwrap_or_else(|| panic!("{name}: not a linesim tag"));
        let Binding::Modbus(reg) = &catalog.tags[i].binding else { panic!("{name}: not a Modbus tag") };
        let served = frame.values[i];
        match (served, &l.value) {
            (Val::Bool(b), Value::Bool(g)) => assert_eq!(*g, b, "{name}"),
            (Val::I64(x), Value::I64(g)) => assert_eq!(*g, x, "{name}"),
            (v, g) => {
                let want = v.as_f64();
                let got = match g {
                    Value::F64(x) => *x,
                    Value::I64(x) => *x as f64,
                    other => panic!("{name}: got {other:?} for {v:?}"),
                };
                let tol = match reg.ty {
                    PlcType::F32 => want.abs() * f64::from(f32::EPSILON) + 1e-9,
                    PlcType::F64 => 1e-9 * want.abs().max(1.0),
                    _ => reg.scale / 2.0 + 1e-9 * want.abs().max(1.0),
                };
                assert!(
                    (got - want).abs() <= tol,
                    "{name}: gateway {got}, linesim {want} ({:?}, scale {})",
                    reg.ty,
                    reg.scale
                );
            }
        }
        checked += 1;
    }
    assert_eq!(checked, 60, "the register map has 60 tags");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_modbus_tag_reads_what_linesim_serves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start_line(&dir.path().join("pki"), 0).await;
    let config = gateway_config(&running, &dir.path().join("data"));
    assert_eq!(config.tags.len(), 60);
    let gw = Gateway::start(&config);
    gw.wait_latest("first good poll", |l| l.quality.is_good()).await;
    assert_eq!(gw.state(SOURCE), SourceState::Connected);
    check_values(&running, &gw);
    let snap = gw.health.snapshot();
    assert_eq!(snap[0].bad_samples, 0, "{snap:?}");
    assert_eq!(snap[0].errors, 0, "{snap:?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_server_shows_down_and_polling_resumes_when_it_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start_line(&dir.path().join("pki"), 0).await;
    let port = running.modbus.addr.port();
    let config = gateway_config(&running, &dir.path().join("data"));
    let gw = Gateway::start(&config);
    gw.wait_latest("first good poll", |l| l.quality.is_good()).await;

    // The server goes away: the source is down and every tag gets a bad sample.
    let lost_at = linepilot::domain::now_ns();
    drop(running);
    gw.wait_state(SOURCE, SourceState::Down).await;
    gw.wait_latest("bad samples after the loss", |l| !l.quality.is_good() && l.ts >= lost_at).await;
    let snap = gw.health.snapshot();
    assert!(snap[0].last_error.is_some(), "{snap:?}");
    assert!(snap[0].reconnects >= 1, "{snap:?}");

    // It comes back on the same port: polling resumes without help.
    let back = start_line(&dir.path().join("pki"), port).await;
    let back_at = linepilot::domain::now_ns();
    gw.wait_state(SOURCE, SourceState::Connected).await;
    gw.wait_latest("good samples after the return", |l| l.quality.is_good() && l.ts >= back_at).await;
    check_values(&back, &gw);

    // The outage is in the event log: lost, then restored.
    let events = gw
        .store
        .events()
        .query(&linepilot::store::events::EventQuery { from: Some(lost_at), ..Default::default() })
        .expect("events");
    let msgs: Vec<&str> = events.iter().map(|e| e.message.as_str()).collect();
    let lost = msgs.iter().position(|m| m.contains("connection lost"));
    let restored = msgs.iter().position(|m| m.contains("connection restored"));
    assert!(matches!((lost, restored), (Some(a), Some(b)) if a < b), "events: {msgs:?}");
    gw.stop().await;
}

/// A pymodbus server (the Python peer) whose registers 100..103 answer
/// exception 0x04: exactly the tags of that read are bad, the others good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exception_marks_exactly_the_tags_of_its_read() {
    exception_marks_its_read(Transport::Tcp).await;
}

/// The same over RTU frames on TCP (`rtu+tcp://`), as serial device servers speak.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_over_tcp_reads_and_exceptions() {
    exception_marks_its_read(Transport::RtuOverTcp).await;
}

/// The same over a serial line (`rtu:///dev/...`, 19200 8N1; Linux ptys take no
/// parity): socat joins two pseudo-terminals, pymodbus' serial server holds
/// one end, the gateway the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_rtu_reads_and_exceptions() {
    exception_marks_its_read(Transport::Serial).await;
}

#[derive(Clone, Copy, PartialEq)]
enum Transport {
    Tcp,
    RtuOverTcp,
    Serial,
}

/// A child process killed on drop.
struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn exception_marks_its_read(transport: Transport) {
    let ok = std::process::Command::new("python3").args(["-c", "import pymodbus, serial"]).status();
    assert!(
        matches!(ok, Ok(s) if s.success()),
        "this test needs pymodbus and pyserial: python3 -m pip install -r tests/interop/requirements.txt"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/modbus_server.py");
    let mut _line = None;
    let (endpoint, mut peer) = if transport == Transport::Serial {
        let (gw_end, dev_end) = (dir.path().join("gw-tty"), dir.path().join("dev-tty"));
        let socat = std::process::Command::new("socat")
            .arg(format!("pty,raw,echo=0,link={}", gw_end.display()))
            .arg(format!("pty,raw,echo=0,link={}", dev_end.display()))
            .spawn()
            .expect("this test needs socat: apt-get install socat (.ci/run installs it)");
        _line = Some(Kill(socat));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(gw_end.exists() && dev_end.exists()) {
            assert!(Instant::now() < deadline, "socat made no pty pair");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let child =
            std::process::Command::new("python3").arg(script).arg("serial").arg(&dev_end).spawn().expect("python3");
        (format!("rtu://{}?baud=19200&parity=N", gw_end.display()), Kill(child))
    } else {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
        let rtu = transport == Transport::RtuOverTcp;
        let child = std::process::Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .args(rtu.then_some("rtu"))
            .spawn()
            .expect("python3");
        let mut peer = Kill(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = peer.0.try_wait() {
                panic!(
                    "the pymodbus server exited ({status}); python3 -m pip install -r tests/interop/requirements.txt"
                );
            }
            assert!(Instant::now() < deadline, "the pymodbus server does not listen on {port}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (format!("{}://127.0.0.1:{port}", if rtu { "rtu+tcp" } else { "tcp" }), peer)
    };
    if let Ok(Some(status)) = peer.0.try_wait() {
        panic!("the pymodbus server exited ({status})");
    }

    let mut text = format!(
        "[site]\nname = \"Plant\"\ntime_zone = \"UTC\"\n[store]\ndata_dir = \"{}\"\n[[area]]\nid = \"hall\"\nname = \"Hall\"\n[[line]]\nid = \"line1\"\nname = \"Line 1\"\narea = \"hall\"\n[[asset]]\nid = \"plc\"\nname = \"PLC\"\nline = \"line1\"\nkind = \"plc\"\n",
        dir.path().join("data").display()
    );
    text.push_str(&format!(
        "[[source]]\nid = \"{SOURCE}\"\nkind = \"modbus\"\nendpoint = \"{endpoint}\"\npoll_interval = \"200ms\"\n"
    ));
    let tags: [(&str, &str, &str); 9] = [
        ("t.u16", "register = 0, type = \"u16\"", "i64"),
        ("t.i16", "register = 1, type = \"i16\"", "i64"),
        ("t.f32", "register = 2, type = \"f32\"", "f64"),
        ("t.f32_cdab", "register = 4, type = \"f32\", order = \"CDAB\"", "f64"),
        ("t.u32_scaled", "register = 6, type = \"u32\", scale = 0.5", "f64"),
        ("t.bit0", "register = 8, type = \"bool\", bit = 0", "bool"),
        ("t.bit4", "register = 8, type = \"bool\", bit = 4", "bool"),
        ("t.fail_a", "register = 100, type = \"u16\"", "i64"),
        ("t.fail_b", "register = 102, type = \"u32\"", "i64"),
    ];
    for (name, addr, kind) in tags {
        text.push_str(&format!(
            "[[tag]]\nname = \"{name}\"\nasset = \"plc\"\nsource = \"{SOURCE}\"\naddress = {{ unit = 1, table = \"holding\", {addr} }}\ndescription = \"{name}\"\nvalue_type = \"{kind}\"\n"
        ));
    }
    let config = Config::from_str_named(&text, "gateway.toml").unwrap_or_else(|e| panic!("config:\n{e}"));
    let gw = Gateway::start(&config);
    gw.wait_latest("first poll", |_| true).await;
    // A few cycles, so every tag has been read more than once.
    tokio::time::sleep(Duration::from_millis(600)).await;

    let ids: Vec<SeriesId> = gw.ids.iter().map(|(_, id)| *id).collect();
    let latest = gw.store.latest(&ids);
    let got: std::collections::HashMap<&str, linepilot::store::Latest> =
        gw.ids.iter().map(|(n, _)| n.as_str()).zip(latest.into_iter().map(|l| l.expect("sample"))).collect();
    let want = [
        ("t.u16", Value::I64(1234)),
        ("t.i16", Value::I64(-7)),
        ("t.f32", Value::F64(21.5)),
        ("t.f32_cdab", Value::F64(-3.25)),
        ("t.u32_scaled", Value::F64(20.0)),
        ("t.bit0", Value::Bool(true)),
        ("t.bit4", Value::Bool(false)),
    ];
    for (name, v) in want {
        assert!(got[name].quality.is_good(), "{name}: {}", got[name].quality);
        assert_eq!(got[name].value, v, "{name}");
    }
    for name in ["t.fail_a", "t.fail_b"] {
        assert_eq!(got[name].quality, linepilot::domain::Quality::modbus_exception(4), "{name}");
    }
    // An exception is counted, and is no reason to reconnect.
    let snap = gw.health.snapshot();
    assert_eq!(snap[0].state, SourceState::Connected, "{snap:?}");
    assert!(snap[0].errors >= 1, "{snap:?}");
    assert_eq!(snap[0].reconnects, 0, "{snap:?}");
    assert!(snap[0].last_error.as_deref().is_some_and(|e| e.contains("0x04")), "{snap:?}");
    gw.stop().await;
}

/// A Modbus TCP server in the test: unit 1 answers every holding read with
/// register n = n; unit 3 never answers; `mute` silences every unit (a dead
/// PLC behind a live switch).
#[derive(Clone)]
struct Silent {
    mute: Arc<std::sync::atomic::AtomicBool>,
}

impl tokio_modbus::server::Service for Silent {
    type Request = tokio_modbus::SlaveRequest<'static>;
    type Response = Option<tokio_modbus::Response>;
    type Exception = tokio_modbus::ExceptionCode;
    type Future = std::future::Ready<Result<Self::Response, Self::Exception>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let answer = match (req.slave, req.request) {
            _ if self.mute.load(std::sync::atomic::Ordering::SeqCst) => Ok(None),
            (1, tokio_modbus::Request::ReadHoldingRegisters(a, n)) => {
                Ok(Some(tokio_modbus::Response::ReadHoldingRegisters((a..a + n).collect())))
            }
            (1, _) => Err(tokio_modbus::ExceptionCode::IllegalFunction),
            _ => Ok(None),
        };
        std::future::ready(answer)
    }
}

/// One unit that never answers marks only its own tags `BAD_TIMEOUT`; the
/// others keep their good values and the connection stays. When no unit
/// answers at all, the source goes down, and comes back once answers resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_unit_times_out_alone_and_a_silent_device_goes_down() {
    let (port, mute) = start_silent_server().await;

    let dir = tempfile::tempdir().expect("tempdir");
    let mut text = format!(
        "[site]\nname = \"Plant\"\ntime_zone = \"UTC\"\n[store]\ndata_dir = \"{}\"\n[[area]]\nid = \"hall\"\nname = \"Hall\"\n[[line]]\nid = \"line1\"\nname = \"Line 1\"\narea = \"hall\"\n[[asset]]\nid = \"plc\"\nname = \"PLC\"\nline = \"line1\"\nkind = \"plc\"\n",
        dir.path().join("data").display()
    );
    text.push_str(&format!(
        "[[source]]\nid = \"{SOURCE}\"\nkind = \"modbus\"\nendpoint = \"tcp://127.0.0.1:{port}\"\npoll_interval = \"200ms\"\ntimeout = \"150ms\"\n"
    ));
    for (name, unit, reg) in [("u1.a", 1, 5), ("u1.b", 1, 60), ("u3.a", 3, 5), ("u3.b", 3, 60)] {
        text.push_str(&format!(
            "[[tag]]\nname = \"{name}\"\nasset = \"plc\"\nsource = \"{SOURCE}\"\naddress = {{ unit = {unit}, table = \"holding\", register = {reg} }}\ndescription = \"{name}\"\nvalue_type = \"i64\"\n"
        ));
    }
    let config = Config::from_str_named(&text, "gateway.toml").unwrap_or_else(|e| panic!("config:\n{e}"));
    let gw = Gateway::start(&config);
    gw.wait_latest("first poll", |_| true).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let latest = gw.store.latest(&gw.ids.iter().map(|(_, id)| *id).collect::<Vec<_>>());
    let got: Vec<(&str, linepilot::store::Latest)> =
        gw.ids.iter().map(|(n, _)| n.as_str()).zip(latest.into_iter().map(|l| l.expect("sample"))).collect();
    for (name, l) in &got {
        match *name {
            "u1.a" => assert_eq!((l.quality.is_good(), &l.value), (true, &Value::I64(5)), "{name}"),
            "u1.b" => assert_eq!((l.quality.is_good(), &l.value), (true, &Value::I64(60)), "{name}"),
            _ => assert_eq!(l.quality, linepilot::domain::Quality::BAD_TIMEOUT, "{name}"),
        }
    }
    let snap = gw.health.snapshot();
    assert_eq!(snap[0].state, SourceState::Connected, "{snap:?}");
    assert_eq!(snap[0].reconnects, 0, "{snap:?}");
    assert!(snap[0].last_error.as_deref().is_some_and(|e| e.contains("unit 3")), "{snap:?}");

    // Nothing answers: after the retry the connection is given up and the source is down.
    let muted_at = linepilot::domain::now_ns();
    mute.store(true, std::sync::atomic::Ordering::SeqCst);
    gw.wait_state(SOURCE, SourceState::Down).await;
    gw.wait_latest("bad after the silence", |l| !l.quality.is_good() && l.ts >= muted_at).await;
    // Answers resume: the source reconnects and unit 1 is good again.
    mute.store(false, std::sync::atomic::Ordering::SeqCst);
    let back_at = linepilot::domain::now_ns();
    gw.wait_state(SOURCE, SourceState::Connected).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let l = gw.store.latest(&[gw.ids[0].1]).remove(0).expect("sample");
        if l.quality.is_good() && l.ts >= back_at {
            break;
        }
        assert!(Instant::now() < deadline, "unit 1 never good again: {:?}", gw.health.snapshot());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gw.health.snapshot()[0].reconnects >= 1);
    gw.stop().await;
}

/// Starts [`Silent`] on a free loopback port; returns the port and its mute switch.
async fn start_silent_server() -> (u16, Arc<std::sync::atomic::AtomicBool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mute = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let service = Silent { mute: mute.clone() };
    tokio::spawn(async move {
        let server = tokio_modbus::server::tcp::Server::new(listener);
        let on_connected = |stream, peer| {
            let service = service.clone();
            async move { tokio_modbus::server::tcp::accept_tcp_connection(stream, peer, |_| Ok(Some(service.clone()))) }
        };
        let _ = server.serve(&on_connected, |_| {}).await;
    });
    (port, mute)
}

/// Tags named by a poll group poll at its interval, the others at `poll_interval`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_groups_poll_at_their_own_interval() {
    let (port, _mute) = start_silent_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut text = format!(
        "[site]\nname = \"Plant\"\ntime_zone = \"UTC\"\n[store]\ndata_dir = \"{}\"\n[[area]]\nid = \"hall\"\nname = \"Hall\"\n[[line]]\nid = \"line1\"\nname = \"Line 1\"\narea = \"hall\"\n[[asset]]\nid = \"plc\"\nname = \"PLC\"\nline = \"line1\"\nkind = \"plc\"\n",
        dir.path().join("data").display()
    );
    text.push_str(&format!(
        "[[source]]\nid = \"{SOURCE}\"\nkind = \"modbus\"\nendpoint = \"tcp://127.0.0.1:{port}\"\npoll_interval = \"100ms\"\npoll_groups = [{{ interval = \"1s\", tags = [\"slow.*\"] }}]\n"
    ));
    for (name, reg) in [("fast.a", 1), ("slow.a", 2), ("slow.b", 3)] {
        text.push_str(&format!(
            "[[tag]]\nname = \"{name}\"\nasset = \"plc\"\nsource = \"{SOURCE}\"\naddress = {{ unit = 1, table = \"holding\", register = {reg} }}\ndescription = \"{name}\"\nvalue_type = \"i64\"\n"
        ));
    }
    let config = Config::from_str_named(&text, "gateway.toml").unwrap_or_else(|e| panic!("config:\n{e}"));
    let from = linepilot::domain::now_ns();
    let gw = Gateway::start(&config);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let (store, ids) = (gw.store.clone(), gw.ids.clone());
    gw.stop().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let to = linepilot::domain::now_ns();
    let count = |i: usize| store.range(ids[i].1, from, to).expect("range").len();
    let (fast, slow_a, slow_b) = (count(0), count(1), count(2));
    assert!((15..=30).contains(&fast), "fast tag: {fast} samples in 2.5 s at 100 ms");
    assert!((2..=4).contains(&slow_a), "slow tag: {slow_a} samples in 2.5 s at 1 s");
    assert_eq!(slow_a, slow_b, "one group, one read");
}

/// The real daemon binary with the linesim register map: `/healthz` shows the
/// source connected with samples, then `down` when the server goes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_reports_the_modbus_source_in_healthz() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start_line(&dir.path().join("pki"), 0).await;
    let text = gateway_text(&running, &dir.path().join("data"));
    let cfg = dir.path().join("linepilot.toml");
    std::fs::write(&cfg, text).expect("config");
    let daemon = tokio::task::block_in_place(|| common::Daemon::start(&cfg));
    let addr = daemon.addr.clone();
    let source = move || -> serde_json::Value {
        let url = format!("http://{addr}/healthz");
        let mut resp = ureq::get(&url).config().http_status_as_error(false).build().call().expect("healthz");
        let v: serde_json::Value =
            serde_json::from_str(&resp.body_mut().read_to_string().expect("body")).expect("json");
        v["sources"].as_array().and_then(|s| s.iter().find(|s| s["id"] == SOURCE).cloned()).expect("source in healthz")
    };
    let wait = |want: &'static str| {
        let source = source.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let s = tokio::task::block_in_place(&source);
                if s["state"] == want && (want != "connected" || s["samples"].as_u64().unwrap_or(0) >= 60) {
                    return s;
                }
                assert!(Instant::now() < deadline, "never {want}: {s}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let s = wait("connected").await;
    assert_eq!(s["kind"], "modbus");
    assert_eq!(s["tags"], 60);
    // The analytics stage analyses what the store committed.
    let url = format!("http://{}/healthz", daemon.addr);
    let h: serde_json::Value = tokio::task::block_in_place(|| {
        let mut r = ureq::get(&url).config().http_status_as_error(false).build().call().expect("healthz");
        serde_json::from_str(&r.body_mut().read_to_string().expect("body")).expect("json")
    });
    assert!(h["analytics"]["batches"].as_u64().unwrap_or(0) > 0, "{}", h["analytics"]);
    assert!(h["analytics"]["samples"].as_u64().unwrap_or(0) >= 60, "{}", h["analytics"]);
    assert_eq!(h["analytics"]["skipped_batches"], 0, "{}", h["analytics"]);
    drop(running);
    let s = wait("down").await;
    assert!(s["bad_samples"].as_u64().unwrap_or(0) >= 60, "{s}");
    tokio::task::block_in_place(|| daemon.stop());
}
