//! OPC UA: 10,000 monitored items at 1 s from linesim (issue 4): the
//! gateway's CPU and memory, against Python's asyncua client on the same
//! nodes in the same run.
//!
//! - **linesim** in this process (its own thread and runtime), live at speed 1,
//!   with `bench_variables = N`: `Line1/Bench/B00000`.. all change once a second.
//! - **the daemon**: `linepilot run` (release binary) with one OPC UA source
//!   of N tags, publishing and sampling interval 1 s, queue size 2; samples
//!   go to its store (durable).
//! - **the peer**: `tests/interop/opcua_bench.py` (asyncua) subscribes to the
//!   same N nodes the same way and only counts the notifications.
//!
//! Measured over a window after every item has reported: values stored
//! (ours) or received (peer) per second, CPU in cores, RSS; plus the time from
//! start to every item reporting.
//!
//! `cargo bench --bench ingest_opcua` (`LP_BENCH_ITEMS`, default 10000;
//! `LP_BENCH_SECONDS`, default 30). Results: stdout and
//! `target/bench-results/ingest_opcua.json`.

#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use linesim::line::live::LiveOptions;
use serde_json::json;
use support::Daemon;

const SOURCE: &str = "bench-opcua";

fn env_num(key: &str, default: f64) -> f64 {
    std::env::var(key).ok().and_then(|s| s.parse().ok()).filter(|n: &f64| *n > 0.0).unwrap_or(default)
}

/// Starts the live line with `n` bench variables; returns its OPC UA endpoint.
fn start_linesim(pki: &Path, n: usize) -> (String, std::sync::mpsc::Sender<()>) {
    let opts = LiveOptions { speed: 1.0, skip_ns: 0, start_ns: None, truth: None };
    support::start_linesim_thread(
        pki,
        opts,
        move |sc| sc.opcua.bench_variables = n,
        |running| running.opcua.endpoint_url.clone(),
    )
}

fn gateway_config(dir: &Path, endpoint: &str, n: usize) -> std::path::PathBuf {
    let mut text = format!(
        "[site]\nname = \"Bench\"\ntime_zone = \"UTC\"\n[store]\ndata_dir = \"{}\"\n\
         [[area]]\nid = \"hall\"\nname = \"Hall\"\n[[line]]\nid = \"line1\"\nname = \"Line 1\"\narea = \"hall\"\n\
         [[asset]]\nid = \"bench\"\nname = \"Bench\"\nline = \"line1\"\nkind = \"bench\"\n\
         [[source]]\nid = \"{SOURCE}\"\nkind = \"opcua\"\nendpoint = \"{endpoint}\"\n\
         publishing_interval = \"1s\"\nsampling_interval = \"1s\"\nqueue_size = 2\nconnect_timeout = \"30s\"\n",
        dir.join("data").display()
    );
    for i in 0..n {
        text.push_str(&format!(
            "[[tag]]\nname = \"bench.b{i:05}\"\nasset = \"bench\"\nsource = \"{SOURCE}\"\naddress = \"ns=2;s=Line1/Bench/B{i:05}\"\ndescription = \"b\"\n"
        ));
    }
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).expect("gateway.toml");
    path
}

/// The source's health in `/healthz`.
fn source(addr: &str) -> serde_json::Value {
    support::source_health(addr, SOURCE)
}

fn stored_samples(addr: &str) -> u64 {
    source(addr)["stored_samples"].as_u64().unwrap_or(0)
}

/// Good samples stored (sent minus bad: all of them are durable once `stored_samples` catches up).
fn good_samples(addr: &str) -> u64 {
    let s = source(addr);
    s["samples"].as_u64().unwrap_or(0).saturating_sub(s["bad_samples"].as_u64().unwrap_or(0))
}

fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// For `seconds`, polls the newest sample of five tags through the query API;
/// each new one gives (wall clock when first seen − its source timestamp, the
/// moment linesim changed the value), in ms, sorted.
fn change_to_visible(addr: &str, n: usize, seconds: f64) -> Vec<f64> {
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(5))).build().into();
    let tags: Vec<usize> = [0, n / 4, n / 2, 3 * n / 4, n - 1].into_iter().collect();
    let mut newest = vec![now_ns(); tags.len()];
    let mut out = Vec::new();
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < end {
        for (k, i) in tags.iter().enumerate() {
            let from = (newest[k] + 1) as f64 / 1e9;
            let url = format!("http://{addr}/api/v1/query?series=bench.b{i:05}&from={from:.9}");
            let Ok(mut r) = agent.get(&url).call() else { continue };
            let body = r.body_mut().read_to_string().unwrap_or_default();
            let seen = now_ns();
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let rows = v["results"][0]["rows"].as_array().cloned().unwrap_or_default();
            for row in rows {
                let ts = row["ts"].as_i64().unwrap_or(0);
                if ts > newest[k] {
                    newest[k] = ts;
                    out.push((seen - ts) as f64 / 1e6);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    out.sort_by(|a, b| a.total_cmp(b));
    out
}

fn main() {
    let n = env_num("LP_BENCH_ITEMS", 10_000.0) as usize;
    let seconds = env_num("LP_BENCH_SECONDS", 30.0);
    let tmp = tempfile::tempdir().expect("temp dir");
    let (endpoint, stop_linesim) = start_linesim(&tmp.path().join("pki"), n);
    let machine = support::machine();
    println!(
        "ingest_opcua: linesim at {endpoint} with {n} bench variables, window {seconds} s, load {}",
        machine["loadavg"]
    );

    // Ours.
    let cfg = gateway_config(tmp.path(), &endpoint, n);
    let started = Instant::now();
    let daemon = Daemon::start(&cfg);
    let pid = daemon.child.id();
    while good_samples(&daemon.addr) < n as u64 {
        assert!(started.elapsed() < Duration::from_secs(180), "the items did not all report within 3 minutes");
        std::thread::sleep(Duration::from_millis(100));
    }
    let ready_s = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(3));
    let (c0, s0, t0) = (support::proc_cpu(pid), stored_samples(&daemon.addr), Instant::now());
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let (c1, s1, wall) = (support::proc_cpu(pid), stored_samples(&daemon.addr), t0.elapsed().as_secs_f64());
    let rss = support::proc_status_kb(pid, "VmRSS").unwrap_or(0);
    let hwm = support::proc_status_kb(pid, "VmHWM").unwrap_or(0);
    let health = source(&daemon.addr);
    assert_eq!(health["bad_samples"], 0, "no item refused, no comms loss: {health}");
    assert_eq!(health["polled_tags"], 0, "every item subscribed: {health}");
    let ours_rate = (s1 - s0) as f64 / wall;
    let ours_cores = (c1 - c0) / wall;
    let latency = change_to_visible(&daemon.addr, n, 20.0);
    drop(daemon);
    println!(
        "linepilot: all {n} items reporting after {ready_s:.1} s; {ours_rate:.0} values/s stored, {ours_cores:.3} cores, RSS {rss} kB (peak {hwm} kB)"
    );

    println!(
        "change in linesim → visible in /api/v1/query (publishing interval 1 s): {} changes, p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        latency.len(),
        percentile(&latency, 0.5),
        percentile(&latency, 0.99),
        latency.last().copied().unwrap_or(f64::NAN)
    );

    // The peer.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/opcua_bench.py");
    let out = Command::new("python3")
        .arg(script)
        .args(["--url", &endpoint, "--nodes", &n.to_string(), "--seconds", &seconds.to_string()])
        .output()
        .expect("running python3");
    let _ = stop_linesim.send(());
    assert!(
        out.status.success(),
        "asyncua peer failed (python3 -m pip install -r tests/interop/requirements.txt):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let peer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("peer JSON");
    let f = |k: &str| peer[k].as_f64().unwrap_or(f64::NAN);
    let peer_rate = f("notifications") / f("wall_s");
    let peer_cores = f("cpu_s") / f("wall_s");
    println!(
        "asyncua: {} of {n} nodes reporting; {peer_rate:.0} values/s received, {peer_cores:.3} cores, peak RSS {} kB, subscribe {:.1} s",
        peer["nodes_reporting"], peer["peak_rss_kb"], f("subscribe_s")
    );

    println!("\n| client | values/s | CPU (cores) | CPU µs per value | RSS (kB) |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| linepilot (durable in its store) | {ours_rate:.0} | {ours_cores:.3} | {:.1} | {rss} (peak {hwm}) |",
        ours_cores / ours_rate * 1e6
    );
    println!(
        "| asyncua (counts only) | {peer_rate:.0} | {peer_cores:.3} | {:.1} | {} (peak) |",
        peer_cores / peer_rate * 1e6,
        peer["peak_rss_kb"]
    );
    let cpu_ratio = (peer_cores / peer_rate) / (ours_cores / ours_rate);
    println!("\nCPU per value: asyncua uses {cpu_ratio:.1}x linepilot's");
    support::write_result(
        "ingest_opcua",
        &json!({
            "machine": machine, "items": n, "window_s": seconds,
            "linepilot": {"ready_s": ready_s, "values_per_s": ours_rate, "cores": ours_cores, "rss_kb": rss, "peak_rss_kb": hwm},
            "change_to_visible_ms": {"changes": latency.len(), "p50": percentile(&latency, 0.5),
                                     "p90": percentile(&latency, 0.9), "p99": percentile(&latency, 0.99),
                                     "max": latency.last().copied()},
            "asyncua": peer,
            "ratio_cpu_per_value_asyncua_to_linepilot": cpu_ratio,
        }),
    );
}
