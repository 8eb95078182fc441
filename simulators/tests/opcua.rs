//! The OPC UA server against an independent client: starts the server on
//! port 0 with a deterministic test feed and runs `tests/interop/opcua_client.py`
//! (Python, asyncua) against it; then checks the comms-loss fault (connections
//! refused while it lasts) and that the server serves again afterwards.
//!
//! Needs `python3` with the `asyncua` package (`python3 -m pip install asyncua`).

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use linesim::line::catalog::OPCUA_NAMESPACE;
use linesim::line::{Binding, Catalog, Down, Feed, Frame, PlcType, Val};
use linesim::server::opcua::{self, APPLICATION_URI};
use linesim::server::{OpcUaConfig, UserConfig};
use serde_json::json;

/// Simulated start time: 2024-01-01T00:00:00Z.
const T0_NS: i64 = 1_704_067_200_000_000_000;
const USER: &str = "operator";
const PASSWORD: &str = "line1-secret";
/// Tags that keep changing during the test (the subscription watches them).
const DYNAMIC: [&str; 4] = ["filler.speed", "filler.bowl_pressure", "capper.good_count", "labeler.auto_mode"];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn require_python() {
    let out = Command::new("python3").args(["-c", "import asyncua"]).output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "python3 cannot import asyncua ({}): install it with `python3 -m pip install asyncua`",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!("python3 is not available ({e}): install Python 3 and `python3 -m pip install asyncua`"),
    }
}

/// A value of tag `i` at step `k`, deterministic and within the tag's type.
fn value_of(catalog: &Catalog, i: usize, k: i64) -> Val {
    let t = &catalog.tags[i];
    let n = i as i64;
    match t.ty {
        PlcType::Bool => Val::Bool((n + k) % 2 == 0),
        PlcType::U16 => Val::I64((n * 37 + k) % 60_000),
        PlcType::I16 => Val::I64(-n * 11 + k),
        PlcType::U32 => Val::I64(100_000 + n * 1_000 + k),
        PlcType::I32 => Val::I64(-50_000 + n + k),
        PlcType::F32 | PlcType::F64 => {
            let scale = 10f64.powi(t.decimals as i32);
            let x = n as f64 * 1.37 + 0.5 + k as f64 * 0.25 + 1.0 / 3.0;
            Val::F64((x * scale).round() / scale)
        }
    }
}

/// Source timestamp of the static value of tag `i` (distinct per tag).
fn static_stamp(i: usize) -> i64 {
    T0_NS + i as i64 * 1_000_000
}

fn first_frame(catalog: &Catalog) -> Frame {
    let n = catalog.len();
    Frame {
        ts_ns: T0_NS,
        values: (0..n).map(|i| value_of(catalog, i, 0)).collect(),
        stamps: (0..n).map(static_stamp).collect(),
        down: Down::default(),
    }
}

fn json_value(v: Val) -> serde_json::Value {
    match v {
        Val::Bool(b) => json!(b),
        Val::I64(x) => json!(x),
        Val::F64(x) => json!(x),
    }
}

fn data_type(ty: PlcType) -> &'static str {
    match ty {
        PlcType::Bool => "Boolean",
        PlcType::U16 => "UInt16",
        PlcType::I16 => "Int16",
        PlcType::U32 => "UInt32",
        PlcType::I32 => "Int32",
        PlcType::F32 => "Float",
        PlcType::F64 => "Double",
    }
}

fn expected(catalog: &Catalog, dynamic: &[usize], port: u16) -> serde_json::Value {
    let frame = first_frame(catalog);
    let tags: Vec<serde_json::Value> = catalog
        .tags
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            let Binding::OpcUa { path } = &t.binding else { return None };
            Some(json!({
                "node_id": path,
                "path": path.split('/').collect::<Vec<_>>(),
                "browse": t.browse,
                "description": t.description,
                "unit": t.unit,
                "unit_id": opcua::unece_id(t.unit),
                "data_type": data_type(t.ty),
                "plc_type": t.ty.name(),
                "value": json_value(frame.values[i]),
                "source_ts_ms": static_stamp(i) / 1_000_000,
                "dynamic": dynamic.contains(&i),
            }))
        })
        .collect();
    json!({
        "namespace": OPCUA_NAMESPACE,
        "application_uri": APPLICATION_URI,
        "port": port,
        "user": USER,
        "password": PASSWORD,
        "tags": tags,
    })
}

fn client_cmd(url: &str, expected: &Path, flag: Option<&str>) -> Command {
    let mut cmd = Command::new("python3");
    cmd.current_dir(repo_root())
        .arg("tests/interop/opcua_client.py")
        .arg("--url")
        .arg(url)
        .arg("--expected")
        .arg(expected);
    cmd.args(flag);
    cmd
}

/// Runs the Python client, failing the test on a non-zero exit.
async fn run_client(url: &str, expected: &Path, flag: Option<&str>) {
    let mut cmd = client_cmd(url, expected, flag);
    let out = tokio::task::spawn_blocking(move || cmd.output()).await.expect("join").expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("--- opcua_client.py {} ---\n{stdout}", flag.unwrap_or(""));
    assert!(
        out.status.success(),
        "opcua_client.py {} failed ({}):\n{stdout}\n{stderr}",
        flag.unwrap_or(""),
        out.status
    );
}

/// Starts the Python client with `--expect-drop` and waits until it is connected.
async fn connected_client(url: &str, expected: &Path) -> (Child, BufReader<ChildStdout>) {
    let mut cmd = client_cmd(url, expected, Some("--expect-drop"));
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run python3");
    let stdout = child.stdout.take().expect("stdout");
    let (reader, seen) = tokio::task::spawn_blocking(move || {
        let mut reader = BufReader::new(stdout);
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return (reader, seen),
                Ok(_) => {
                    seen.push_str(&line);
                    if line.trim() == "READY" {
                        return (reader, seen);
                    }
                }
            }
        }
    })
    .await
    .expect("join");
    assert!(seen.contains("READY"), "opcua_client.py --expect-drop did not connect:\n{seen}");
    (child, reader)
}

/// Waits for the `--expect-drop` client to pass.
async fn dropped_client(mut child: Child, mut reader: BufReader<ChildStdout>) {
    let (status, out, err) = tokio::task::spawn_blocking(move || {
        let mut out = String::new();
        let _ = reader.read_to_string(&mut out);
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (child.wait(), out, err)
    })
    .await
    .expect("join");
    println!("--- opcua_client.py --expect-drop ---\n{out}");
    let status = status.expect("wait for python3");
    assert!(status.success(), "opcua_client.py --expect-drop failed ({status}):\n{out}\n{err}");
}

async fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn accepts(addr: SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncua_client_browses_reads_subscribes_and_logs_in() {
    require_python();
    let (catalog, _) = Catalog::build();
    let catalog = Arc::new(catalog);
    let dynamic: Vec<usize> =
        DYNAMIC.iter().map(|n| catalog.find(n).unwrap_or_else(|| panic!("tag {n} in the catalog"))).collect();

    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("opcua-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).expect("temp dir");

    let (tx, rx) = tokio::sync::watch::channel(Arc::new(first_frame(&catalog)));
    let feed = Feed { catalog: catalog.clone(), frames: rx };
    let cfg = OpcUaConfig {
        listen: "127.0.0.1:0".into(),
        users: vec![UserConfig { user: USER.into(), password: PASSWORD.into() }],
        anonymous: true,
        pki_dir: tmp.join("pki").to_string_lossy().into_owned(),
        trust_client_certs: true,
        bench_variables: 0,
    };
    let server = opcua::start(&cfg, feed).await.expect("start the OPC UA server");
    assert_ne!(server.addr.port(), 0);
    assert_eq!(server.endpoint_url, format!("opc.tcp://127.0.0.1:{}/", server.addr.port()));
    assert!(tmp.join("pki/own/cert.der").exists(), "own certificate created");
    assert!(tmp.join("pki/private/private.pem").exists(), "own private key created");

    let expected_file = tmp.join("expected.json");
    let exp = expected(&catalog, &dynamic, server.addr.port());
    assert!(exp["tags"].as_array().map_or(0, |a| a.len()) >= 30, "OPC UA tags in the catalog");
    std::fs::write(&expected_file, serde_json::to_vec_pretty(&exp).expect("json")).expect("write expected.json");

    // The line: every 100 ms a frame; the dynamic tags are sampled every 200 ms.
    let down = Arc::new(AtomicBool::new(false));
    let line = {
        let catalog = catalog.clone();
        let dynamic = dynamic.clone();
        let down = down.clone();
        tokio::spawn(async move {
            let mut frame = first_frame(&catalog);
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            for step in 1i64.. {
                tick.tick().await;
                frame.ts_ns = T0_NS + step * 100_000_000;
                if step % 2 == 0 {
                    for &i in &dynamic {
                        frame.values[i] = value_of(&catalog, i, step / 2);
                        frame.stamps[i] = frame.ts_ns;
                    }
                }
                frame.down.opcua = down.load(Ordering::SeqCst);
                if tx.send(Arc::new(frame.clone())).is_err() || step > 3_000 {
                    return;
                }
            }
        })
    };

    run_client(&server.endpoint_url, &expected_file, None).await;

    // Comms loss: a connected client is dropped, the port stops accepting
    // connections, and serves again when the fault clears.
    let (child, reader) = connected_client(&server.endpoint_url, &expected_file).await;
    down.store(true, Ordering::SeqCst);
    let addr = server.addr;
    tokio::time::timeout(Duration::from_secs(30), dropped_client(child, reader))
        .await
        .expect("the client notices the drop");
    wait_until("connections refused during comms loss", Duration::from_secs(10), || !accepts(addr)).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert!(!accepts(addr), "still refused while the fault lasts");
    down.store(false, Ordering::SeqCst);
    wait_until("connections accepted after comms loss", Duration::from_secs(10), || accepts(addr)).await;
    run_client(&server.endpoint_url, &expected_file, Some("--quick")).await;

    // The server ends with the feed.
    line.abort();
    let _ = line.await;
    tokio::time::timeout(Duration::from_secs(10), server.task)
        .await
        .expect("server stops with the feed")
        .expect("join");
    assert!(!accepts(addr), "nothing listens after the feed ended");

    // Without anonymous logins and without trusting unknown client
    // certificates: both are refused, the certificate lands in pki/rejected.
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(first_frame(&catalog)));
    let strict = OpcUaConfig {
        anonymous: false,
        trust_client_certs: false,
        pki_dir: tmp.join("pki-strict").to_string_lossy().into_owned(),
        ..cfg
    };
    let server = opcua::start(&strict, Feed { catalog: catalog.clone(), frames: rx }).await.expect("start");
    run_client(&server.endpoint_url, &expected_file, Some("--expect-rejected")).await;
    let rejected = std::fs::read_dir(tmp.join("pki-strict/rejected")).map(|d| d.count()).unwrap_or(0);
    assert!(rejected >= 1, "the untrusted client certificate is kept in pki-strict/rejected");
    drop(tx);
    tokio::time::timeout(Duration::from_secs(10), server.task)
        .await
        .expect("server stops with the feed")
        .expect("join");
    let _ = std::fs::remove_dir_all(&tmp);
}
