//! The OPC UA driver against a server nobody here wrote: Python's `asyncua`
//! (`tests/interop/opcua_server.py`), 100 variables of seven types changing
//! every 200 ms, Basic256Sha256 SignAndEncrypt with a user name and password.
//!
//! - Every change the server logged while the gateway was subscribed arrives
//!   in the store with the same value, the same source timestamp and the
//!   same quality (one variable cycles through Uncertain and Bad codes).
//! - The server is killed (SIGKILL) mid-test and started again on the same
//!   port: the gateway notices, records the gap (a BAD_COMMS sample per tag,
//!   an event), and gets every subscription back by itself.
//! - A second source reads a few of the same nodes with `mode = "poll"`: what
//!   it stores are values the server really held at those source timestamps.
//! - With `events = true` every event the server raised while subscribed is
//!   in the event log with its time, severity and message.
//! - `x509_user_identity`: an X.509 user certificate logs in; an unknown one is
//!   refused and health names it (certificates made with `openssl`).
//!
//! Needs `python3` with the packages of tests/interop/requirements.txt.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

mod common;

use common::{self_signed, wait_for, Gateway};
use linepilot::config::Config;
use linepilot::domain::{Quality, SeriesKey};
use linepilot::ingest::SourceState;
use linepilot::store::events::EventQuery;
use linepilot::store::points::Column;
use linepilot::store::Store;
use serde_json::{json, Value as Json};

const VARS: usize = 100;
const USER: &str = "gateway";
const PASSWORD: &str = "s3cret-pw";
/// OPC UA types of the variables, by index % 7 (as the server script makes them).
const TYPES: [&str; 7] = ["Double", "Float", "Int32", "UInt16", "Int64", "Boolean", "String"];
/// Nodes the polling source reads.
const POLLED: [usize; 3] = [0, 5, 6];
/// The server raises an event every 5 steps (1 s).
const EVENTS: [&str; 2] = ["--events-every", "5"];

/// The Python server, killed on drop.
struct PyServer {
    child: Child,
}

impl PyServer {
    fn start_with(port: u16, dir: &Path, vars: usize, extra: &[&str]) -> PyServer {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/opcua_server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--port", &port.to_string(), "--vars", &vars.to_string(), "--period-ms", "200"])
            .args(["--user", USER, "--password", PASSWORD])
            .args(extra)
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 must be installed");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        assert!(
            line.starts_with("READY"),
            "the asyncua server did not start (`{}`); install the peers: python3 -m pip install -r tests/interop/requirements.txt",
            line.trim()
        );
        PyServer { child }
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn value_type(i: usize) -> &'static str {
    match TYPES[i % 7] {
        "Double" | "Float" => "f64",
        "Boolean" => "bool",
        "String" => "string",
        _ => "i64",
    }
}

fn config(dir: &Path, port: u16) -> Config {
    let pw_file = dir.join("opcua-password");
    std::fs::write(&pw_file, format!("{PASSWORD}\n")).expect("password file");
    let security = format!(
        "security = {{ policy = \"Basic256Sha256\", mode = \"SignAndEncrypt\", user = \"{USER}\", password_file = \"{}\" }}\n",
        pw_file.display()
    );
    let mut text = format!(
        "[site]\nname = \"Test plant\"\n[store]\ndata_dir = \"{}\"\n\
         [[area]]\nid = \"hall\"\nname = \"Hall\"\n[[line]]\nid = \"line1\"\nname = \"Line 1\"\narea = \"hall\"\n\
         [[asset]]\nid = \"plc\"\nname = \"PLC\"\nline = \"line1\"\nkind = \"plc\"\n\
         [[source]]\nid = \"plc-sub\"\nkind = \"opcua\"\nendpoint = \"opc.tcp://127.0.0.1:{port}/\"\ntrust_server_cert = true\n\
         publishing_interval = \"200ms\"\nsampling_interval = \"100ms\"\nqueue_size = 20\nconnect_timeout = \"5s\"\nevents = true\n{security}\
         [[source]]\nid = \"plc-poll\"\nkind = \"opcua\"\nendpoint = \"opc.tcp://127.0.0.1:{port}/\"\ntrust_server_cert = true\n\
         mode = \"poll\"\npoll_interval = \"300ms\"\nconnect_timeout = \"5s\"\n{security}\
         [[source]]\nid = \"plc-events\"\nkind = \"opcua\"\nendpoint = \"opc.tcp://127.0.0.1:{port}/\"\ntrust_server_cert = true\n\
         publishing_interval = \"200ms\"\nconnect_timeout = \"5s\"\nevents = true\n{security}",
        dir.join("data").display()
    );
    for i in 0..VARS {
        text.push_str(&format!(
            "[[tag]]\nname = \"plc.v{i:03}\"\nasset = \"plc\"\nsource = \"plc-sub\"\naddress = \"ns=2;s=Plc/V{i:03}\"\n\
             description = \"{} variable\"\nvalue_type = \"{}\"\n",
            TYPES[i % 7],
            value_type(i)
        ));
    }
    for i in POLLED {
        text.push_str(&format!(
            "[[tag]]\nname = \"poll.v{i:03}\"\nasset = \"plc\"\nsource = \"plc-poll\"\naddress = \"ns=2;s=Plc/V{i:03}\"\n\
             description = \"polled\"\nvalue_type = \"{}\"\n",
            value_type(i)
        ));
    }
    Config::from_str_named(&text, "asyncua.toml").unwrap_or_else(|e| panic!("config:\n{e}\n{text}"))
}

/// One stored sample: (ts, value as JSON, quality).
type Row = (i64, Json, u32);

fn stored(store: &Store, name: &str) -> Vec<Row> {
    let Some((id, _)) = store.catalog().lookup(&SeriesKey::new(name.to_string())) else { return Vec::new() };
    let p = store.range(id, i64::MIN, i64::MAX).expect("range");
    let values: Vec<Json> = match &p.values {
        Column::F64(v) => v.iter().map(|x| json!(x)).collect(),
        Column::I64(v) => v.iter().map(|x| json!(x)).collect(),
        Column::Bool(v) => v.iter().map(|x| json!(x)).collect(),
        Column::Str(v) => v.iter().map(|x| json!(x)).collect(),
    };
    (0..p.ts.len()).map(|k| (p.ts[k], values[k].clone(), p.quality.get(k).copied().unwrap_or(0))).collect()
}

/// The server's log: node index → ts → (value, status).
fn server_log(dir: &Path) -> HashMap<usize, HashMap<i64, (Json, u32)>> {
    let text = std::fs::read_to_string(dir.join("changes.jsonl")).expect("changes.jsonl");
    let mut out: HashMap<usize, HashMap<i64, (Json, u32)>> = HashMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        // The last line may be cut by the SIGKILL.
        let Ok(v) = serde_json::from_str::<Json>(line) else { continue };
        let node = v["node"].as_str().expect("node");
        let i: usize = node.rsplit('V').next().and_then(|n| n.parse().ok()).expect("node index");
        let ts = v["ts_ns"].as_i64().expect("ts_ns");
        let status = v["status"].as_u64().expect("status") as u32;
        out.entry(i).or_default().insert(ts, (v["value"].clone(), status));
    }
    out
}

fn same(stored: &Json, logged: &Json) -> bool {
    match (stored.as_f64(), logged.as_f64()) {
        (Some(a), Some(b)) => a == b,
        _ => stored == logged,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn asyncua_server_killed_and_restarted() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server_dir = tmp.path().join("server");
    std::fs::create_dir_all(&server_dir).expect("server dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let server = PyServer::start_with(port, &server_dir, VARS, &EVENTS);

    let config = config(tmp.path(), port);
    let gw = Gateway::start(&config);
    let store = gw.store.clone();
    let state = |id: &str| gw.state(id);
    let names: Vec<String> = (0..VARS).map(|i| format!("plc.v{i:03}")).collect();
    let good = |n: &String| stored(&store, n).iter().filter(|r| r.2 == 0).count();

    // 1. Subscribed: every variable's changes arrive.
    wait_for("5 changes of every variable", Duration::from_secs(60), || names.iter().all(|n| good(n) >= 5)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(state("plc-sub"), SourceState::Connected);
    assert_eq!(state("plc-poll"), SourceState::Connected);
    let polled = |id: &str| gw.source(id).polled_tags;
    assert_eq!((polled("plc-sub"), polled("plc-poll")), (0, POLLED.len() as u64));

    // 2. The server dies: the gap is recorded.
    let killed_at = linepilot::domain::now_ns();
    server.kill();
    wait_for("comms loss", Duration::from_secs(30), || state("plc-sub") == SourceState::Down).await;
    let gap_marked =
        |n: &String| stored(&store, n).iter().any(|r| r.2 == Quality::BAD_COMMS.0 && r.0 >= killed_at - 1_000_000_000);
    wait_for("a BAD_COMMS sample for every tag", Duration::from_secs(10), || names.iter().all(gap_marked)).await;
    let before: Vec<usize> = names.iter().map(good).collect();
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 3. It comes back on the same port (same certificate): subscriptions come back by themselves.
    let restarted_at = linepilot::domain::now_ns();
    let server = PyServer::start_with(port, &server_dir, VARS, &EVENTS);
    wait_for("reconnect", Duration::from_secs(60), || state("plc-sub") == SourceState::Connected).await;
    wait_for("5 new changes of every variable", Duration::from_secs(60), || {
        names.iter().zip(&before).all(|(n, b)| good(n) >= b + 5)
    })
    .await;
    wait_for("the polling source back", Duration::from_secs(60), || state("plc-poll") == SourceState::Connected).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let health = gw.health.snapshot();
    gw.stop().await;
    drop(server);

    // 4. Compare with what the server logged.
    let log = server_log(&server_dir);
    let mut problems = Vec::new();
    let (mut matched, mut bad_quality, mut uncertain) = (0usize, 0usize, 0usize);
    for (i, name) in names.iter().enumerate() {
        let rows = stored(&store, name);
        let logged = log.get(&i).cloned().unwrap_or_default();
        let mut seen = HashSet::new();
        for (ts, v, q) in &rows {
            if *q == Quality::BAD_COMMS.0 {
                continue;
            }
            match logged.get(ts) {
                Some((_, status)) if *status != *q => {
                    problems.push(format!("{name} @ {ts}: quality {q:#x}, server status {status:#x}"))
                }
                Some((lv, status)) if *status & 0x8000_0000 == 0 && !same(v, lv) => {
                    problems.push(format!("{name} @ {ts}: stored {v}, server wrote {lv}"))
                }
                Some((_, status)) => {
                    matched += 1;
                    bad_quality += (*status & 0x8000_0000 != 0) as usize;
                    uncertain += (*status >> 30 == 1) as usize;
                    seen.insert(*ts);
                }
                None => {
                    problems.push(format!("{name} @ {ts}: stored {v} (quality {q:#x}), never written by the server"))
                }
            }
        }
        // Completeness: every change between the first and the last one stored in each session.
        for (from, to) in [(i64::MIN, killed_at), (restarted_at, i64::MAX)] {
            let in_session: Vec<i64> = seen.iter().copied().filter(|t| *t > from && *t < to).collect();
            let (Some(lo), Some(hi)) = (in_session.iter().min(), in_session.iter().max()) else {
                problems.push(format!("{name}: nothing stored in the session after {from}"));
                continue;
            };
            let missing = logged.keys().filter(|t| *t > lo && *t < hi && !seen.contains(*t)).count();
            if missing > 0 {
                problems.push(format!("{name}: {missing} changes between {lo} and {hi} never arrived"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems, e.g.:\n{}",
        problems.len(),
        problems[..problems.len().min(20)].join("\n")
    );
    assert!(
        uncertain > 0 && bad_quality > 0,
        "the last variable's Uncertain and Bad codes arrived ({uncertain}, {bad_quality})"
    );
    assert!(matched >= VARS * 10, "matched {matched} changes");

    // The polling source stored values the server really held at those source timestamps.
    let mut polled = 0;
    for i in POLLED {
        let rows = stored(&store, &format!("poll.v{i:03}"));
        let logged = &log[&i];
        for (ts, v, q) in rows.iter().filter(|r| r.2 == 0) {
            let (lv, _) = logged
                .get(ts)
                .unwrap_or_else(|| panic!("poll.v{i:03} @ {ts}: not a value the server wrote (quality {q:#x})"));
            assert!(same(v, lv), "poll.v{i:03} @ {ts}: stored {v}, server wrote {lv}");
            polled += 1;
        }
    }
    assert!(polled >= 3 * 5, "polled samples: {polled}");

    // The server's own events, as it logged them (events = true): time, severity, message.
    let logged: Vec<(i64, u16, String)> = std::fs::read_to_string(server_dir.join("events.jsonl"))
        .expect("events.jsonl")
        .lines()
        .filter_map(|l| serde_json::from_str::<Json>(l).ok())
        .map(|v| {
            let t = v["time_ns"].as_i64().expect("time_ns");
            (t, v["severity"].as_u64().expect("severity") as u16, v["message"].as_str().expect("message").to_string())
        })
        .collect();
    let source_events = store
        .events()
        .query(&EventQuery { kinds: vec![linepilot::domain::EventKind::Source], ..Default::default() })
        .expect("events");
    let got: Vec<(i64, u16, String)> = source_events
        .iter()
        .map(|e| (e.ts, e.severity, e.details["message"].as_str().unwrap_or("").to_string()))
        .collect();
    for g in &got {
        assert!(logged.contains(g), "stored event {g:?} was never raised by the server");
    }
    for (from, to) in [(i64::MIN, killed_at), (restarted_at, i64::MAX)] {
        let in_session: Vec<i64> = got.iter().map(|g| g.0).filter(|t| *t > from && *t < to).collect();
        let (Some(lo), Some(hi)) = (in_session.iter().min(), in_session.iter().max()) else {
            panic!("no server event stored in the session after {from}");
        };
        let missing: Vec<&(i64, u16, String)> =
            logged.iter().filter(|l| l.0 > *lo && l.0 < *hi && !got.contains(l)).collect();
        assert!(missing.is_empty(), "server events never stored: {missing:?}");
    }
    assert!(source_events.iter().all(|e| e.message.starts_with("Server: step ")), "{source_events:?}");
    // A source with no tags, for events only, gets them too.
    let of = |id: &str| source_events.iter().filter(|e| e.details["source"] == id).count();
    assert!(of("plc-sub") >= 2 && of("plc-events") >= 2, "{} / {}", of("plc-sub"), of("plc-events"));

    // The gap is an event too.
    let events = store.events().query(&EventQuery::default()).expect("events");
    assert!(
        events.iter().any(|e| e.message.contains("plc-sub") && e.message.contains("connection lost")),
        "no comms-loss event: {events:?}"
    );
    eprintln!(
        "asyncua: {matched} changes matched ({uncertain} uncertain, {bad_quality} bad), {polled} polled; {health:?}"
    );
}

/// An X.509 user identity (`user_cert` + `user_key`) instead of a user name:
/// the known certificate logs in and reads; an unknown one is refused, and
/// health says which certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn x509_user_identity() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    for name in ["operator", "stranger"] {
        self_signed(d, name, &format!("{name}.pem"), &format!("{name}.der"));
    }
    let server_dir = d.join("server");
    std::fs::create_dir_all(&server_dir).expect("server dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let user_cert = d.join("operator.der").display().to_string();
    let _server = PyServer::start_with(port, &server_dir, 7, &["--user-cert", &user_cert]);

    let mut text = format!(
        "[site]\nname = \"Test plant\"\n[store]\ndata_dir = \"{}\"\n\
         [[area]]\nid = \"hall\"\nname = \"Hall\"\n[[line]]\nid = \"line1\"\nname = \"Line 1\"\narea = \"hall\"\n\
         [[asset]]\nid = \"plc\"\nname = \"PLC\"\nline = \"line1\"\nkind = \"plc\"\n",
        d.join("data").display()
    );
    for who in ["operator", "stranger"] {
        text.push_str(&format!(
            "[[source]]\nid = \"{who}\"\nkind = \"opcua\"\nendpoint = \"opc.tcp://127.0.0.1:{port}/\"\ntrust_server_cert = true\n\
             publishing_interval = \"200ms\"\nconnect_timeout = \"5s\"\n\
             security = {{ policy = \"Basic256Sha256\", mode = \"Sign\", user_cert = \"{}\", user_key = \"{}\" }}\n\
             [[tag]]\nname = \"{who}.v000\"\nasset = \"plc\"\nsource = \"{who}\"\naddress = \"ns=2;s=Plc/V000\"\ndescription = \"d\"\n",
            d.join(format!("{who}.der")).display(),
            d.join(format!("{who}.pem")).display()
        ));
    }
    let config = Config::from_str_named(&text, "x509.toml").unwrap_or_else(|e| panic!("config:\n{e}\n{text}"));
    let gw = Gateway::start(&config);
    let store = gw.store.clone();
    let snap = |id: &str| gw.source(id);

    let good = |n: &str| stored(&store, n).iter().filter(|r| r.2 == 0).count();
    wait_for("values read with the operator's certificate", Duration::from_secs(60), || good("operator.v000") >= 3)
        .await;
    wait_for("the stranger's refusal in health", Duration::from_secs(30), || {
        snap("stranger").last_error.is_some_and(|e| e.contains("refused"))
    })
    .await;
    let s = snap("stranger");
    assert_ne!(s.state, SourceState::Connected, "{s:?}");
    assert_eq!(good("stranger.v000"), 0);
    let why = s.last_error.unwrap_or_default();
    assert!(why.contains("stranger.der"), "health names the refused certificate: {why}");
    assert_eq!(snap("operator").state, SourceState::Connected);
    gw.stop().await;
}
