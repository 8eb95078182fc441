//! Helpers for tests that drive the real `linepilot` binary.
#![allow(dead_code)]

pub mod models;
pub mod replay;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A minimal config for a store-only daemon; `store_extra` adds `[store]` keys.
pub fn write_config(dir: &Path, store_extra: &str) -> PathBuf {
    let cfg = dir.join("linepilot.toml");
    let text = format!(
        "[site]\nname = \"Test plant\"\ntime_zone = \"UTC\"\n\n[store]\ndata_dir = \"{}\"\n{}\n",
        dir.join("data").display(),
        store_extra
    );
    std::fs::write(&cfg, text).expect("writing test config");
    cfg
}

/// A running `linepilot run`.
pub struct Daemon {
    pub child: Child,
    pub addr: String,
}

impl Daemon {
    /// Starts the daemon on a free loopback port and waits for its announcement.
    pub fn start(config: &Path) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_linepilot"))
            .args(["run", "--config"])
            .arg(config)
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning linepilot");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        let started = Instant::now();
        BufReader::new(stdout).read_line(&mut line).expect("reading announcement");
        let v: serde_json::Value = serde_json::from_str(line.trim())
            .unwrap_or_else(|e| panic!("daemon announcement `{line}` is not JSON: {e}"));
        let addr = v["listen"].as_str().expect("listen").to_string();
        assert!(started.elapsed() < Duration::from_secs(60), "daemon took too long to start");
        Daemon { child, addr }
    }

    /// SIGKILL, then reap.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.child.wait().expect("waiting for daemon")
    }

    /// POSTs line protocol; Ok(status) or Err on a transport failure.
    pub fn write(&self, body: &str) -> Result<u16, String> {
        let url = format!("http://{}/api/v2/write?precision=ns", self.addr);
        match ureq::post(&url).config().http_status_as_error(false).build().send(body) {
            Ok(r) => Ok(r.status().as_u16()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// GETs a query and returns the parsed JSON and the status.
    pub fn query(&self, params: &[(&str, &str)]) -> (u16, serde_json::Value) {
        let url = format!("http://{}/api/v1/query", self.addr);
        let mut req = ureq::get(&url);
        for (k, v) in params {
            req = req.query(*k, *v);
        }
        let mut resp = req.config().http_status_as_error(false).build().call().expect("query request");
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().expect("query body");
        (status, serde_json::from_str(&text).expect("query JSON"))
    }
}

impl Drop for Daemon {
    /// A failing test must not leave a daemon behind (it would hold the test's pipes open).
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The demo scenario of the line simulator.
pub fn demo_scenario_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs/scenarios/demo.toml")
}

/// Starts the simulated line (`configs/scenarios/demo.toml`) in-process with
/// every server on a free loopback port and its OPC UA PKI in `pki`; `edit`
/// adjusts the scenario (e.g. a fixed port to restart a server on). Retries
/// for 20 s while a just-stopped server's port is not free yet.
pub async fn start_line(
    pki: &Path,
    opts: linesim::line::live::LiveOptions,
    edit: impl FnOnce(&mut linesim::line::scenario::Scenario),
) -> linesim::server::Running {
    let path = demo_scenario_path();
    let mut sc = linesim::line::scenario::Scenario::load(&path).expect("demo scenario");
    sc.opcua.listen = "127.0.0.1:0".into();
    sc.opcua.pki_dir = pki.display().to_string();
    sc.modbus.listen = "127.0.0.1:0".into();
    sc.mqtt.listen = "127.0.0.1:0".into();
    sc.mqtt.broker = None;
    edit(&mut sc);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match linesim::server::Running::start(&sc, &path.display().to_string(), opts.clone()).await {
            Ok(r) => return r,
            Err(e) if Instant::now() < deadline => {
                eprintln!("linesim does not start yet ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("linesim does not start: {e}"),
        }
    }
}

/// The ingest core in-process, as `linepilot run` wires it: the store, the one
/// bounded channel, its writer, and every configured source under supervision.
pub struct Gateway {
    pub store: std::sync::Arc<linepilot::store::Store>,
    pub health: std::sync::Arc<linepilot::ingest::Health>,
    pub ids: Vec<(String, linepilot::domain::SeriesId)>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    writer: tokio::task::JoinHandle<()>,
}

impl Gateway {
    /// Opens the config's store and starts its sources (call inside a tokio runtime).
    pub fn start(config: &linepilot::config::Config) -> Gateway {
        Gateway::start_with(config, false)
    }

    /// The same, with the store's background sealing and retention when `background`.
    pub fn start_with(config: &linepilot::config::Config, background: bool) -> Gateway {
        use std::sync::Arc;
        let store = Arc::new(linepilot::service::open_store(config, None, background).expect("store"));
        let health = Arc::new(linepilot::ingest::Health::default());
        let (sink, rx) = linepilot::ingest::Sink::channel(256);
        let writer = tokio::spawn(linepilot::ingest::writer(store.clone(), rx, 10_000, None));
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let tasks =
            linepilot::ingest::supervise(config, store.clone(), sink, health.clone(), stop_rx).expect("sources");
        let keys: Vec<_> =
            config.tags.iter().map(|t| (linepilot::domain::SeriesKey::new(t.name.clone()), t.value_type)).collect();
        let ids = store.resolve(&keys).expect("series");
        let ids = config.tags.iter().map(|t| t.name.clone()).zip(ids).collect();
        Gateway { store, health, ids, stop, tasks, writer }
    }

    /// The health of source `id`.
    pub fn source(&self, id: &str) -> linepilot::ingest::health::Snapshot {
        self.health.snapshot().into_iter().find(|s| s.id == id).unwrap_or_else(|| panic!("no source `{id}`"))
    }

    /// The connection state of source `id`.
    pub fn state(&self, id: &str) -> linepilot::ingest::SourceState {
        self.source(id).state
    }

    /// Waits until `ok` holds for every tag's latest sample.
    pub async fn wait_latest(&self, what: &str, ok: impl Fn(&linepilot::store::Latest) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ids: Vec<linepilot::domain::SeriesId> = self.ids.iter().map(|(_, id)| *id).collect();
            let latest = self.store.latest(&ids);
            let missing: Vec<&str> = self
                .ids
                .iter()
                .zip(&latest)
                .filter(|(_, l)| !l.as_ref().is_some_and(&ok))
                .map(|((n, _), _)| n.as_str())
                .collect();
            if missing.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {} tags never got there, e.g. {:?}; health {:?}",
                missing.len(),
                &missing[..missing.len().min(5)],
                self.health.snapshot()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (30 s at most) until source `id` is in state `want`.
    pub async fn wait_state(&self, id: &str, want: linepilot::ingest::SourceState) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.state(id) != want {
            assert!(Instant::now() < deadline, "source `{id}` never got {want:?}: {:?}", self.health.snapshot());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the sources and the writer, each within 10 s, as the daemon must.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("a source stops within 10 s")
                .expect("source task");
        }
        tokio::time::timeout(Duration::from_secs(10), self.writer)
            .await
            .expect("the writer stops within 10 s")
            .expect("writer task");
    }
}

/// Waits (polling every 100 ms) until `f` holds; fails the test after `limit`.
pub async fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the `openssl` command in `dir` (tests make their CAs and certificates with it).
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("this test needs the openssl command (apt-get install openssl)");
    assert!(out.status.success(), "openssl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// A self-signed certificate made with openssl in `dir`: key `key` (PEM) and
/// certificate `cert` (PEM, or DER when `cert` ends in `.der`), subject `CN=cn`.
pub fn self_signed(dir: &Path, cn: &str, key: &str, cert: &str) {
    let subject = format!("/CN={cn}");
    let mut args = vec!["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", &subject];
    args.extend(["-keyout", key, "-out", cert]);
    if cert.ends_with(".der") {
        args.extend(["-outform", "DER"]);
    }
    openssl(dir, &args);
}

/// Keeps only the line-protocol lines of some series (`asset signal=...`): a
/// history run of the whole line written through it holds just what a test reads.
pub struct LpFilter {
    /// `"filler state="`-style prefixes of the lines to keep.
    pub prefixes: Vec<Vec<u8>>,
    /// The kept lines.
    pub kept: Vec<u8>,
    carry: Vec<u8>,
}

impl LpFilter {
    /// Keeps the lines of the series named `asset.signal` in `series`.
    pub fn new(series: &[String]) -> LpFilter {
        let prefixes =
            series.iter().filter_map(|s| s.split_once('.')).map(|(a, f)| format!("{a} {f}=").into_bytes()).collect();
        LpFilter { prefixes, kept: Vec::new(), carry: Vec::new() }
    }
}

impl std::io::Write for LpFilter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.carry.extend_from_slice(buf);
        let mut start = 0;
        while let Some(n) = self.carry[start..].iter().position(|&b| b == b'\n') {
            let line = &self.carry[start..start + n + 1];
            if self.prefixes.iter().any(|p| line.starts_with(p)) {
                self.kept.extend_from_slice(line);
            }
            start += n + 1;
        }
        self.carry.drain(..start);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs the demo scenario's history for `hours` (as `linesim history` does) and
/// imports the samples of `series` into a store in `data_dir` opened with `config`
/// (as `linepilot import` does). Returns the store and the ground-truth records.
pub fn demo_history_in_store(
    config: &linepilot::config::Config,
    data_dir: &Path,
    hours: f64,
    series: &[String],
) -> (linepilot::store::Store, Vec<serde_json::Value>) {
    let path = demo_scenario_path();
    let scenario = linesim::line::scenario::Scenario::load(&path).expect("demo scenario");
    let mut lp = LpFilter::new(series);
    let mut truth = Vec::new();
    let duration_ns = (hours * 3.6e12) as i64;
    linesim::line::history::run(&scenario, &path.display().to_string(), duration_ns, &mut lp, &mut truth, |_, _| {})
        .expect("history I/O")
        .expect("history run");
    let store = linepilot::service::open_store(config, Some(data_dir.to_path_buf()), false).expect("open store");
    let text = String::from_utf8(lp.kept).expect("line protocol is UTF-8");
    let lines: Vec<&str> = text.lines().collect();
    for chunk in lines.chunks(100_000) {
        let body = chunk.join("\n");
        let resolved = linepilot::store::import::line_protocol(
            &store,
            &body,
            linepilot::line_protocol::Precision::Ns,
            linepilot::domain::now_ns(),
        )
        .expect("import line protocol");
        store.write(resolved.samples).expect("store write");
    }
    let truth = String::from_utf8(truth)
        .expect("truth is UTF-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("truth record is JSON"))
        .collect();
    (store, truth)
}

/// A Debian `mosquitto` broker on a loopback port, for tests that publish (killed on drop).
pub struct Mosquitto {
    child: Child,
}

impl Mosquitto {
    /// Starts it (config in `dir`) and waits until it listens.
    pub fn start(dir: &Path, port: u16) -> Mosquitto {
        let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .expect("mosquitto is not installed (apt-get install mosquitto; .ci/run does)");
        let conf = dir.join("mosquitto.conf");
        std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"))
            .expect("mosquitto.conf");
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning mosquitto");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "mosquitto did not listen on {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Mosquitto { child }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
