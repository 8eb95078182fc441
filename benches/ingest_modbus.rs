//! Modbus polling throughput from linesim over loopback (issue 4), in one run:
//!
//! 1. linesim's Modbus TCP server in-process (the demo line, frozen: speed 0),
//!    on its own threads;
//! 2. the gateway's driver: `ingest::modbus::CyclePoller` (the poll loop's own
//!    plan, reads, decoding and sink send, one cycle per call) on a
//!    single-threaded tokio runtime on the bench's main thread, polling the
//!    whole register map (all 5 units), samples drained from the sink;
//!    (a) as fast as it can, (b) paced at 100,000 registers/s;
//! 3. the peer: pymodbus (`tests/interop/modbus_bench.py`, the same request
//!    plan), (a) and (b) too.
//!
//! CPU: the poller thread's own CPU time (`/proc/thread-self/schedstat`, ns),
//! so the simulator's threads in the same process are not counted; the
//! peer's is its `time.process_time()` (its whole process).
//!
//! `cargo bench --bench ingest_modbus` (`LP_BENCH_SECONDS=3` for a short run,
//! `LP_BENCH_RATE` to pace at another rate than 100000 registers/s).
//! Results: a table on stdout and `target/bench-results/ingest_modbus.json`.

#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use linepilot::config::{Config, ModbusTable};
use linepilot::ingest::modbus::plan::ReadRequest;
use linepilot::ingest::modbus::CyclePoller;
use linepilot::ingest::{bind_tags, Sink, SourceCtx, SourceHealth};
use linesim::line::live::LiveOptions;
use linesim::line::Binding;
use serde_json::json;

const SOURCE: &str = "linesim-modbus";

fn secs() -> f64 {
    std::env::var("LP_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).filter(|s: &f64| *s > 0.0).unwrap_or(10.0)
}

fn target_rate() -> f64 {
    std::env::var("LP_BENCH_RATE").ok().and_then(|s| s.parse().ok()).filter(|s: &f64| *s > 0.0).unwrap_or(100_000.0)
}

/// CPU time of the calling thread (ns on CPU, from schedstat).
fn thread_cpu() -> Duration {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").expect("/proc/thread-self/schedstat");
    Duration::from_nanos(s.split_whitespace().next().and_then(|n| n.parse().ok()).expect("schedstat"))
}

/// CPU time of the whole process (user + sys, clock ticks of 10 ms).
fn process_cpu() -> Duration {
    let s = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let rest = &s[s.rfind(')').expect("stat") + 2..];
    let f: Vec<u64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    Duration::from_millis((f[11] + f[12]) * 10)
}

fn table_name(t: ModbusTable) -> &'static str {
    match t {
        ModbusTable::Coil => "coil",
        ModbusTable::Discrete => "discrete",
        ModbusTable::Holding => "holding",
        ModbusTable::Input => "input",
    }
}

/// (registers, bits) one cycle of `plan` reads.
fn per_cycle(plan: &[ReadRequest]) -> (u64, u64) {
    let regs = plan.iter().filter(|r| !r.table.is_bits()).map(|r| u64::from(r.count)).sum();
    let bits = plan.iter().filter(|r| r.table.is_bits()).map(|r| u64::from(r.count)).sum();
    (regs, bits)
}

/// One measured polling phase.
struct Phase {
    cycles: u64,
    registers: u64,
    bits: u64,
    samples: u64,
    wall: f64,
    cpu: f64,
}

impl Phase {
    fn json(&self) -> serde_json::Value {
        json!({
            "cycles": self.cycles, "registers": self.registers, "bits": self.bits, "samples": self.samples,
            "wall_s": self.wall, "cpu_s": self.cpu,
            "registers_per_s": self.registers as f64 / self.wall,
            "bits_per_s": self.bits as f64 / self.wall,
            "samples_per_s": self.samples as f64 / self.wall,
            "cores": self.cpu / self.wall,
        })
    }
    fn regs_per_s(&self) -> f64 {
        self.registers as f64 / self.wall
    }
    fn cores(&self) -> f64 {
        self.cpu / self.wall
    }
}

/// Polls for `seconds`, pacing whole cycles at `rate` registers/s if set.
async fn poll_for(poller: &mut CyclePoller, ctx: &SourceCtx, seconds: f64, rate: Option<f64>) -> Phase {
    let (regs, bits) = per_cycle(&poller.plan());
    let period = rate.map(|r| Duration::from_secs_f64(regs as f64 / r));
    let mut samples = 0u64;
    let mut cycles = 0u64;
    let cpu0 = thread_cpu();
    let t0 = tokio::time::Instant::now();
    let end = t0 + Duration::from_secs_f64(seconds);
    let mut next = t0;
    while tokio::time::Instant::now() < end {
        if let Some(p) = period {
            tokio::time::sleep_until(next).await;
            next += p;
        }
        samples += poller.poll_once(ctx).await.expect("poll cycle") as u64;
        cycles += 1;
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = (thread_cpu() - cpu0).as_secs_f64();
    Phase { cycles, registers: cycles * regs, bits: cycles * bits, samples, wall, cpu }
}

/// The peer: pymodbus with the same plan.
fn pymodbus(port: u16, plan: &Path, seconds: f64, rate: Option<f64>) -> Phase {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/modbus_bench.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script).args(["--port", &port.to_string(), "--seconds", &seconds.to_string()]).arg("--plan").arg(plan);
    if let Some(r) = rate {
        cmd.args(["--registers-per-s", &r.to_string()]);
    }
    let out = cmd.output().expect("running python3");
    assert!(
        out.status.success(),
        "pymodbus peer failed (install: python3 -m pip install -r tests/interop/requirements.txt):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("peer JSON");
    assert_eq!(v["errors"], 0, "pymodbus peer got errors: {v}");
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
    Phase {
        cycles: n("cycles"),
        registers: n("registers"),
        bits: n("bits"),
        samples: 0,
        wall: f("wall_s"),
        cpu: f("cpu_s"),
    }
}

/// Starts the demo line frozen 2 h in; returns the Modbus address and the
/// assets with Modbus tags.
fn start_linesim(pki: &Path) -> (std::net::SocketAddr, Vec<String>, std::sync::mpsc::Sender<()>) {
    let opts = LiveOptions { speed: 0.0, skip_ns: 2 * 3_600_000_000_000, start_ns: None, truth: None };
    let ((addr, assets), stop) = support::start_linesim_thread(
        pki,
        opts,
        |_| {},
        |running| {
            let mut assets: Vec<String> = Vec::new();
            for t in &running.line.feed.catalog.tags {
                if matches!(t.binding, Binding::Modbus(_)) && !assets.iter().any(|a| a == t.asset) {
                    assets.push(t.asset.to_string());
                }
            }
            (running.modbus.addr, assets)
        },
    );
    (addr, assets, stop)
}

fn gateway_config(addr: std::net::SocketAddr, assets: &[String], data_dir: &Path) -> Config {
    let mut text = format!(
        "[site]\nname = \"Plant\"\ntime_zone = \"UTC\"\n[store]\ndata_dir = \"{}\"\n[[area]]\nid = \"hall\"\nname = \"Hall\"\n[[line]]\nid = \"line1\"\nname = \"Line 1\"\narea = \"hall\"\n",
        data_dir.display()
    );
    for a in assets {
        text.push_str(&format!("[[asset]]\nid = \"{a}\"\nname = \"{a}\"\nline = \"line1\"\nkind = \"{a}\"\n"));
    }
    text.push_str(&format!(
        "[[source]]\nid = \"{SOURCE}\"\nkind = \"modbus\"\nendpoint = \"tcp://{addr}\"\npoll_interval = \"1s\"\ntimeout = \"1s\"\n"
    ));
    let map = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/linesim/modbus-map.toml"))
        .expect("configs/linesim/modbus-map.toml");
    text.push_str(&map);
    Config::from_str_named(&text, "gateway.toml").unwrap_or_else(|e| panic!("gateway config:\n{e}"))
}

fn main() {
    let seconds = secs();
    let rate = target_rate();
    let tmp = tempfile::tempdir().expect("temp dir");
    let (addr, assets, stop_linesim) = start_linesim(&tmp.path().join("pki"));
    let config = gateway_config(addr, &assets, &tmp.path().join("data"));
    let store = Arc::new(linepilot::service::open_store(&config, None, false).expect("store"));
    let tags = Arc::new(bind_tags(&config, &store, SOURCE).expect("tags"));
    let source = config.sources.iter().find(|s| s.id() == SOURCE).expect("source").clone();
    let machine = support::machine();
    println!(
        "ingest_modbus: linesim Modbus TCP at {addr}, {} tags, {seconds} s per phase, load {}",
        tags.len(),
        machine["loadavg"]
    );

    // The gateway side: a single-threaded runtime on this thread.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let (ours_max, ours_paced, plan) = rt.block_on(async {
        let (sink, mut rx) = Sink::channel(64);
        let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let ctx = SourceCtx {
            config: source,
            tags: tags.clone(),
            sink: sink.for_source(SourceHealth::detached()),
            health: SourceHealth::detached(),
            store: store.clone(),
            shutdown,
        };
        let mut poller = CyclePoller::connect(&ctx).await.expect("connect to linesim");
        let plan = poller.plan();
        // Warm-up: one second.
        poll_for(&mut poller, &ctx, 1.0, None).await;
        let max = poll_for(&mut poller, &ctx, seconds, None).await;
        let paced = poll_for(&mut poller, &ctx, seconds, Some(rate)).await;
        drop(ctx);
        drop(sink);
        drop(poller);
        let _ = drain.await;
        (max, paced, plan)
    });
    let (regs, bits) = per_cycle(&plan);
    assert_eq!(ours_max.samples, ours_max.cycles * tags.len() as u64, "every tag once per cycle");
    println!("plan: {} reads per cycle, {regs} registers + {bits} bits, {} tags (samples)", plan.len(), tags.len());

    let plan_file = tmp.path().join("plan.json");
    let plan_json: Vec<_> = plan
        .iter()
        .map(|r| json!({"unit": r.unit, "table": table_name(r.table), "start": r.start, "count": r.count}))
        .collect();
    std::fs::write(&plan_file, serde_json::to_string(&plan_json).unwrap()).expect("plan file");
    let py_max = pymodbus(addr.port(), &plan_file, seconds, None);
    let py_paced = pymodbus(addr.port(), &plan_file, seconds, Some(rate));
    let _ = stop_linesim.send(());

    println!("\n| client | mode | registers/s | bits/s | samples/s | cycles/s | CPU (cores) |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (who, mode, p) in [
        ("linepilot", "max", &ours_max),
        ("pymodbus", "max", &py_max),
        ("linepilot", "paced", &ours_paced),
        ("pymodbus", "paced", &py_paced),
    ] {
        let samples = if p.samples > 0 { format!("{:.0}", p.samples as f64 / p.wall) } else { "–".to_string() };
        println!(
            "| {who} | {mode} | {:.0} | {:.0} | {samples} | {:.0} | {:.3} |",
            p.regs_per_s(),
            p.bits as f64 / p.wall,
            p.cycles as f64 / p.wall,
            p.cores()
        );
    }
    let ratio_max = ours_max.regs_per_s() / py_max.regs_per_s();
    // CPU per register at the paced rate: pymodbus' seconds of CPU per register / ours.
    let cpu_per_reg = |p: &Phase| p.cpu / p.registers.max(1) as f64;
    let ratio_cpu = cpu_per_reg(&py_paced) / cpu_per_reg(&ours_paced);
    println!("\nmax throughput: {ratio_max:.2}x pymodbus; CPU per register at the paced rate: pymodbus uses {ratio_cpu:.2}x ours");
    println!("process CPU (all threads, incl. the simulator): {:.2} s", process_cpu().as_secs_f64());

    support::write_result(
        "ingest_modbus",
        &json!({
            "machine": machine,
            "seconds_per_phase": seconds,
            "paced_registers_per_s": rate,
            "plan": {"reads": plan.len(), "registers": regs, "bits": bits, "tags": tags.len(), "requests": plan_json},
            "linepilot": {"max": ours_max.json(), "paced": ours_paced.json()},
            "pymodbus": {"max": py_max.json(), "paced": py_paced.json()},
            "ratio_max_registers_per_s": ratio_max,
            "ratio_cpu_per_register_paced": ratio_cpu,
        }),
    );
}
