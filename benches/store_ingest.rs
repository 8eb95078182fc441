//! Durable ingest of the synthetic line (1000 tags x 8 h x 1 Hz), in one run:
//!
//! 1. VictoriaMetrics (`victoria-metrics` on PATH or `LP_VM_BIN`), its
//!    InfluxDB v2 write endpoint, 4 HTTP clients;
//! 2. `linepilot run`, the same bodies and clients (204 only once fsynced),
//!    and the daemon's peak RSS afterwards;
//! 3. the library: `Store::write` of pre-built batches from 2 threads.
//!
//! `cargo bench --bench store_ingest` (`LP_BENCH_HOURS=1` for a short run).
//! Results: a table on stdout and `target/bench-results/store_ingest.json`.

#[path = "support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

const LINES_PER_BODY: usize = 5000;
const CLIENTS: usize = 4;
const LIB_BATCH: usize = 50_000;
const LIB_WRITERS: usize = 2;

fn rate(samples: usize, d: Duration) -> f64 {
    samples as f64 / d.as_secs_f64()
}

fn main() {
    let machine = support::machine();
    // `cargo bench` passes `--bench`; nothing to parse.
    let seconds = support::seconds();
    let start = support::start_ns();
    let total = seconds * support::TAGS;
    println!(
        "store_ingest: {} tags x {:.2} h x 1 Hz = {total} samples; {LINES_PER_BODY} lines per body, {CLIENTS} clients; machine {}",
        support::TAGS,
        support::hours(),
        machine.clone()
    );

    let t = Instant::now();
    let bodies = support::synth_bodies(seconds, start, LINES_PER_BODY);
    let body_bytes: usize = bodies.iter().map(|b| b.len()).sum();
    println!(
        "rendered {} bodies, {:.1} MB of line protocol in {:.1} s (untimed)",
        bodies.len(),
        body_bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );

    // 1. VictoriaMetrics.
    let vm_res = support::vm_bin().map(|bin| {
        let dir = tempfile::tempdir().unwrap();
        let vm = support::Vm::start(&bin, &dir.path().join("vm"));
        let d = support::post_all(&vm.write_url(), &bodies, CLIENTS);
        let hwm = support::proc_status_kb(vm.pid(), "VmHWM").unwrap_or(0);
        vm.force_flush();
        let count = support::get_text(&format!("http://{}/api/v1/series/count", vm.addr));
        println!("victoria-metrics: {:.2} s, series count answer {}", d.as_secs_f64(), count.trim());
        drop(vm);
        (d, hwm)
    });
    if vm_res.is_none() {
        println!("victoria-metrics not found (install the Debian package `victoria-metrics` or set LP_VM_BIN); no peer figures");
    }

    // 2. linepilot over HTTP.
    let (http_d, http_hwm, http_head_max) = {
        let dir = tempfile::tempdir().unwrap();
        let extra = std::env::var("LP_BENCH_STORE_EXTRA").unwrap_or_default();
        let daemon = support::start_daemon(dir.path(), &extra);
        let d = support::post_all(&format!("http://{}/api/v2/write?precision=ns", daemon.addr), &bodies, CLIENTS);
        let health: serde_json::Value =
            serde_json::from_str(&support::get_text(&format!("http://{}/healthz", daemon.addr))).unwrap();
        let written = health["store"]["samples_written"].as_u64().unwrap_or(0);
        assert_eq!(written as usize, total, "daemon acknowledged a different number of samples");
        let hwm = support::proc_status_kb(daemon.child.id(), "VmHWM").unwrap_or(0);
        println!(
            "linepilot HTTP: {:.2} s, {written} samples acknowledged, peak RSS {} MB",
            d.as_secs_f64(),
            hwm / 1024
        );
        let _ = daemon.stop();
        (d, hwm, if extra.is_empty() { "default (memory_limit 256 MB)".to_string() } else { extra })
    };
    drop(bodies);

    // 3. The library, in-process.
    let (lib_d, lib_batches) = {
        let dir = tempfile::tempdir().unwrap();
        let store = support::open_store(dir.path(), true);
        let t = Instant::now();
        let batches = support::synth_batches(&store, seconds, start, LIB_BATCH);
        println!(
            "built {} batches of {LIB_BATCH} samples in {:.1} s (untimed)",
            batches.len(),
            t.elapsed().as_secs_f64()
        );
        let n = batches.len();
        let slots: Vec<std::sync::Mutex<Option<Vec<linepilot::domain::Sample>>>> =
            batches.into_iter().map(|b| std::sync::Mutex::new(Some(b))).collect();
        let next = AtomicUsize::new(0);
        let started = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..LIB_WRITERS {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(slot) = slots.get(i) else { break };
                    let b = slot.lock().unwrap().take().unwrap();
                    store.write(b).expect("write");
                });
            }
        });
        let d = started.elapsed();
        assert_eq!(store.stats().samples_written as usize, total);
        println!("library: {:.2} s", d.as_secs_f64());
        store.close();
        (d, n)
    };

    let vm_rate = vm_res.map(|(d, _)| rate(total, d));
    let http_rate = rate(total, http_d);
    let lib_rate = rate(total, lib_d);
    let ratio = |r: f64| vm_rate.map(|v| r / v);
    println!();
    println!("| path                              | seconds | samples/s   | vs VictoriaMetrics |");
    println!("|-----------------------------------|--------:|------------:|-------------------:|");
    if let Some((d, _)) = vm_res {
        println!(
            "| VictoriaMetrics HTTP ({CLIENTS} clients)   | {:7.2} | {:11.0} |              1.00x |",
            d.as_secs_f64(),
            rate(total, d)
        );
    }
    let fmt_ratio = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{r:.2}x"));
    println!(
        "| linepilot HTTP ({CLIENTS} clients)         | {:7.2} | {:11.0} | {:>18} |",
        http_d.as_secs_f64(),
        http_rate,
        fmt_ratio(ratio(http_rate))
    );
    println!(
        "| linepilot library ({LIB_WRITERS} writers)      | {:7.2} | {:11.0} | {:>18} |",
        lib_d.as_secs_f64(),
        lib_rate,
        fmt_ratio(ratio(lib_rate))
    );
    println!();
    println!(
        "peak RSS: linepilot daemon {} MB (store config: {http_head_max}); VictoriaMetrics {} MB",
        http_hwm / 1024,
        vm_res.map_or(0, |(_, h)| h / 1024)
    );

    support::write_result(
        "store_ingest",
        &json!({
            "machine": machine, // taken before the run
            "tags": support::TAGS,
            "hours": support::hours(),
            "samples": total,
            "lines_per_body": LINES_PER_BODY,
            "clients": CLIENTS,
            "library": { "writers": LIB_WRITERS, "batch": LIB_BATCH, "batches": lib_batches, "seconds": lib_d.as_secs_f64(), "samples_per_s": lib_rate, "vs_vm": ratio(lib_rate) },
            "linepilot_http": { "seconds": http_d.as_secs_f64(), "samples_per_s": http_rate, "vs_vm": ratio(http_rate), "peak_rss_kb": http_hwm, "store": http_head_max },
            "victoria_metrics": vm_res.map(|(d, h)| json!({ "seconds": d.as_secs_f64(), "samples_per_s": rate(total, d), "peak_rss_kb": h })),
        }),
    );
}
