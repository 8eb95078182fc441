//! Shared pieces of the store benchmarks: the synthetic line as samples and
//! as line protocol, a VictoriaMetrics peer, HTTP clients, machine facts.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use linepilot::config::units::HumanDuration;
use linepilot::domain::{Quality, Sample, SeriesId, SeriesKey, Value, ValueKind};
use linepilot::store::config::StoreConfig;
use linepilot::store::{Store, StoreArgs};
use linesim::{line_tags, Line, SynthKind, SynthTag, SynthValue};

/// Seed of the synthetic line in every store benchmark.
pub const SEED: u64 = 2;
/// Tags of the synthetic line.
pub const TAGS: usize = 1000;
/// Measurement name of the synthetic line in line protocol.
pub const MEASUREMENT: &str = "line1";

/// Hours of synthetic data: `LP_BENCH_HOURS` (fractions allowed), default 8.
pub fn hours() -> f64 {
    std::env::var("LP_BENCH_HOURS").ok().and_then(|s| s.parse::<f64>().ok()).filter(|h| *h > 0.0).unwrap_or(8.0)
}

/// Seconds of synthetic data.
pub fn seconds() -> usize {
    (hours() * 3600.0).round() as usize
}

/// First timestamp of the synthetic data (UTC ns): `seconds()` before now,
/// on a whole minute, so the default retention of either store keeps it.
pub fn start_ns() -> i64 {
    let now = linepilot::domain::now_ns();
    let minute = 60_000_000_000i64;
    (now - seconds() as i64 * 1_000_000_000 - 3_600_000_000_000).div_euclid(minute) * minute
}

/// The series key a tag gets through line protocol: `line1.FIELD{asset=...}`.
pub fn series_key(t: &SynthTag) -> (SeriesKey, ValueKind) {
    let kind = match t.kind {
        SynthKind::Analog | SynthKind::Setpoint => ValueKind::F64,
        SynthKind::Counter => ValueKind::I64,
        SynthKind::State => ValueKind::Str,
        SynthKind::Flag => ValueKind::Bool,
    };
    let key =
        SeriesKey::with_labels(format!("{MEASUREMENT}.{}", t.field), vec![("asset".to_string(), t.asset.clone())]);
    (key, kind)
}

/// A store config for benchmarks: data in `dir`, raw and rollup retention of 100 years.
pub fn store_config(dir: &Path) -> StoreConfig {
    let century = HumanDuration(Duration::from_secs(36_500 * 86_400));
    StoreConfig {
        data_dir: dir.to_path_buf(),
        retention_raw: century,
        retention_rollup: century,
        ..StoreConfig::default()
    }
}

/// Opens a store in `dir` (no background sealer when `background` is false).
pub fn open_store(dir: &Path, background: bool) -> Store {
    let mut a = StoreArgs::new(store_config(dir));
    a.background = background;
    Store::open(a).expect("opening store")
}

/// The synthetic line as batches of `batch` samples (time-major: every tag of
/// second 0, then second 1, ...), series created in `store`.
pub fn synth_batches(store: &Store, seconds: usize, start: i64, batch: usize) -> Vec<Vec<Sample>> {
    let tags = line_tags(TAGS);
    let keys: Vec<_> = tags.iter().map(series_key).collect();
    let ids = store.resolve(&keys).expect("resolving series");
    let mut line = Line::new(TAGS, SEED);
    let mut row = Vec::with_capacity(TAGS);
    let mut out = Vec::new();
    let mut cur = Vec::with_capacity(batch);
    for s in 0..seconds {
        line.step(&mut row);
        let ts = start + s as i64 * 1_000_000_000;
        for (id, v) in ids.iter().zip(&row) {
            cur.push(Sample { series: *id, ts, value: to_value(v), quality: Quality::GOOD });
            if cur.len() == batch {
                out.push(std::mem::replace(&mut cur, Vec::with_capacity(batch)));
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Every series id of the synthetic line, in tag order (after `synth_batches`).
pub fn synth_ids(store: &Store) -> Vec<SeriesId> {
    let keys: Vec<_> = line_tags(TAGS).iter().map(series_key).collect();
    store.resolve(&keys).expect("resolving series")
}

fn to_value(v: &SynthValue) -> Value {
    match v {
        SynthValue::F64(x) => Value::F64(*x),
        SynthValue::I64(x) => Value::I64(*x),
        SynthValue::Bool(x) => Value::Bool(*x),
        SynthValue::Str(x) => Value::Str((*x).to_string()),
    }
}

/// The synthetic line as line-protocol bodies of `lines` lines each, one
/// point per tag and second: `line1,asset=m007 temp_1=23.4 1732780800000000000`.
pub fn synth_bodies(seconds: usize, start: i64, lines: usize) -> Vec<String> {
    use std::fmt::Write;
    let tags = line_tags(TAGS);
    let mut line = Line::new(TAGS, SEED);
    let mut row = Vec::with_capacity(TAGS);
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut n = 0;
    for s in 0..seconds {
        line.step(&mut row);
        let ts = start + s as i64 * 1_000_000_000;
        for (t, v) in tags.iter().zip(&row) {
            let _ = write!(cur, "{MEASUREMENT},asset={} {}=", t.asset, t.field);
            let _ = match v {
                SynthValue::F64(x) => write!(cur, "{x}"),
                SynthValue::I64(x) => write!(cur, "{x}i"),
                SynthValue::Bool(x) => write!(cur, "{x}"),
                SynthValue::Str(x) => write!(cur, "\"{x}\""),
            };
            let _ = writeln!(cur, " {ts}");
            n += 1;
            if n == lines {
                out.push(std::mem::take(&mut cur));
                n = 0;
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// POSTs every body to `url` from `clients` threads; returns the wall time.
/// Panics on any non-2xx answer.
pub fn post_all(url: &str, bodies: &[String], clients: usize) -> Duration {
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..clients {
            s.spawn(|| {
                let agent: ureq::Agent =
                    ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(120))).build().into();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(b) = bodies.get(i) else { break };
                    match agent.post(url).send(b.as_bytes()) {
                        Ok(r) if r.status().is_success() => {}
                        Ok(r) => panic!("POST {url}: HTTP {}", r.status()),
                        Err(e) => panic!("POST {url}: {e}"),
                    }
                }
            });
        }
    });
    started.elapsed()
}

/// GET `url`, the body as text.
pub fn get_text(url: &str) -> String {
    let agent: ureq::Agent =
        ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(120))).build().into();
    let mut r = agent.get(url).call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    r.body_mut().read_to_string().unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A VictoriaMetrics single-node server in a directory, on loopback.
pub struct Vm {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Its -storageDataPath.
    pub data: PathBuf,
}

/// The VictoriaMetrics binary: `LP_VM_BIN` or `victoria-metrics` on PATH.
pub fn vm_bin() -> Option<String> {
    let bin = std::env::var("LP_VM_BIN").unwrap_or_else(|_| "victoria-metrics".to_string());
    Command::new(&bin).arg("-version").stdout(Stdio::null()).stderr(Stdio::null()).status().ok().map(|_| bin)
}

impl Vm {
    /// Starts VictoriaMetrics with its data in `data` and waits for `/health`.
    pub fn start(bin: &str, data: &Path) -> Vm {
        Vm::start_with(bin, data, &[])
    }

    /// [`Vm::start`] with extra flags.
    pub fn start_with(bin: &str, data: &Path, extra: &[&str]) -> Vm {
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new(bin)
            .arg(format!("-storageDataPath={}", data.display()))
            .arg(format!("-httpListenAddr={addr}"))
            .args(["-retentionPeriod=100y", "-search.latencyOffset=0s", "-loggerLevel=ERROR"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning victoria-metrics");
        let vm = Vm { child, addr, data: data.to_path_buf() };
        let started = Instant::now();
        loop {
            let ok = ureq::get(&format!("http://{}/health", vm.addr)).call().is_ok_and(|r| r.status().is_success());
            if ok {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "victoria-metrics did not become healthy");
            std::thread::sleep(Duration::from_millis(50));
        }
        vm
    }

    /// Its InfluxDB v2 write endpoint (ns precision).
    pub fn write_url(&self) -> String {
        format!("http://{}/api/v2/write?precision=ns", self.addr)
    }

    /// Makes everything received searchable and written to disk.
    pub fn force_flush(&self) {
        get_text(&format!("http://{}/internal/force_flush", self.addr));
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `linepilot run` driver the integration tests use.
#[path = "../../tests/common/mod.rs"]
pub mod daemon;
pub use daemon::Daemon;

/// Starts a daemon with a store in `dir/data` that keeps everything
/// (`store_extra` adds `[store]` keys).
pub fn start_daemon(dir: &Path, store_extra: &str) -> Daemon {
    let cfg =
        daemon::write_config(dir, &format!("retention_raw = \"36500d\"\nretention_rollup = \"36500d\"\n{store_extra}"));
    Daemon::start(&cfg)
}

/// A line of /proc/PID/status in kB (`VmHWM`, `VmRSS`).
pub fn proc_status_kb(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
}

/// Bytes of every file under `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => n += dir_bytes(&e.path()),
                Ok(m) => n += m.len(),
                Err(_) => {}
            }
        }
    }
    n
}

/// `nproc`, CPU model and 1-minute load, for the record.
pub fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    serde_json::json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "loadavg": load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    })
}

/// Writes `v` to `target/bench-results/NAME.json`.
pub fn write_result(name: &str, v: &serde_json::Value) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-results");
    let _ = std::fs::create_dir_all(&dir);
    let p = dir.join(format!("{name}.json"));
    std::fs::write(&p, serde_json::to_string_pretty(v).unwrap()).expect("writing results");
    println!("results: {}", p.display());
}

/// Percent-encodes a query-string value.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Samples VictoriaMetrics holds for metrics matching `selector` in the `hours` before `end_s`.
pub fn vm_sample_count(vm: &Vm, selector: &str, hours: f64, end_s: i64) -> u64 {
    let q = format!("sum(count_over_time({selector}[{}s]))", (hours * 3600.0).ceil() as i64 + 7200);
    let url = format!("http://{}/api/v1/query?query={}&time={end_s}", vm.addr, urlencode(&q));
    let v: serde_json::Value = serde_json::from_str(&get_text(&url)).expect("VM answer");
    v["data"]["result"][0]["value"][1].as_str().and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0) as u64
}

/// Runs the demo line on its own thread and single-worker runtime (so its CPU
/// is not the measured client's): loopback ports picked by the OS, PKI in
/// `pki`, `tweak` applied to the scenario; `report` picks what the caller
/// needs from the running servers. Send on the returned channel to stop it.
pub fn start_linesim_thread<T: Send + 'static>(
    pki: &Path,
    opts: linesim::line::live::LiveOptions,
    tweak: impl FnOnce(&mut linesim::line::scenario::Scenario) + Send + 'static,
    report: impl FnOnce(&linesim::server::Running) -> T + Send + 'static,
) -> (T, std::sync::mpsc::Sender<()>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let pki = pki.to_path_buf();
    std::thread::Builder::new()
        .name("linesim".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("rt");
            rt.block_on(async move {
                let path = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/scenarios/demo.toml");
                let mut sc = linesim::line::scenario::Scenario::load(Path::new(path)).expect("demo scenario");
                sc.opcua.listen = "127.0.0.1:0".into();
                sc.opcua.pki_dir = pki.display().to_string();
                sc.mqtt.listen = "127.0.0.1:0".into();
                sc.modbus.listen = "127.0.0.1:0".into();
                tweak(&mut sc);
                let mut opts = opts;
                if opts.start_ns.is_none() && opts.speed == 0.0 {
                    opts.start_ns = Some(sc.start_ns(path).expect("start"));
                }
                let running = linesim::server::Running::start(&sc, path, opts).await.expect("linesim starts");
                tx.send(report(&running)).expect("main thread");
                let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
                running.line.stop();
            });
        })
        .expect("linesim thread");
    (rx.recv().expect("linesim started"), stop_tx)
}

/// CPU seconds (user + system, all threads) of a process so far.
pub fn proc_cpu(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(end) = s.rfind(')') else { return 0.0 };
    let f: Vec<u64> = s[end + 2..].split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    f.get(11).zip(f.get(12)).map(|(u, s)| (u + s) as f64 / 100.0).unwrap_or(0.0)
}

/// Source `id`'s health in a daemon's `/healthz` (`null` when it has no such source).
pub fn source_health(addr: &str, id: &str) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(&get_text(&format!("http://{addr}/healthz"))).expect("healthz JSON");
    v["sources"].as_array().and_then(|a| a.iter().find(|s| s["id"] == id).cloned()).unwrap_or_default()
}
