//! Queries over the synthetic line (1000 tags x 8 h x 1 Hz, sealed into
//! 1-hour blocks with their per-minute rollups), in one run:
//!
//! * `aggregate_avg_1m/linepilot_100_series`: 1-minute averages of 100 float
//!   series over the whole range (`Store::aggregate`, window 1 min);
//! * `aggregate_avg_1m/victoria_metrics_100_series`: the same through
//!   VictoriaMetrics' `query_range` (`avg_over_time(...[1m])`, step 60 s, one
//!   query with a regex selector, response cache off), same data, same run;
//! * `latest/linepilot_1000_series`: `Store::latest` of every series, and
//!   `latest/victoria_metrics_1000_series`: an instant query of every series.
//!
//! `cargo bench --bench store_query` (`LP_BENCH_HOURS=1` for a short run).
//! A summary with the ratio goes to `target/bench-results/store_query.json`.

#[path = "support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use linepilot::domain::SeriesId;
use linepilot::store::Store;
use serde_json::json;

const MINUTE: i64 = 60_000_000_000;

fn our_avg(store: &Store, ids: &[SeriesId], from: i64, to: i64) -> usize {
    let mut n = 0;
    for id in ids {
        let w = store.aggregate(*id, from, to, MINUTE).unwrap();
        n += w
            .iter()
            .filter(|(_, p)| p.count > 0)
            .map(|(_, p)| (p.sum / p.count as f64 > f64::MIN) as usize)
            .sum::<usize>();
    }
    n
}

fn vm_avg(agent: &ureq::Agent, url: &str) -> usize {
    let mut r = agent.get(url).call().expect("VM query");
    let text = r.body_mut().read_to_string().unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["data"]["result"].as_array().map_or(0, |a| a.iter().map(|s| s["values"].as_array().map_or(0, |x| x.len())).sum())
}

fn vm_latest(agent: &ureq::Agent, url: &str) -> usize {
    let mut r = agent.get(url).call().expect("VM query");
    let text = r.body_mut().read_to_string().unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["data"]["result"].as_array().map_or(0, |a| a.len())
}

/// Median of `n` timed runs of `f`.
fn median(n: usize, mut f: impl FnMut()) -> Duration {
    let mut t: Vec<Duration> = (0..n)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed()
        })
        .collect();
    t.sort();
    t[n / 2]
}

fn main() {
    let machine = support::machine();
    let seconds = support::seconds() / 60 * 60;
    let start = support::start_ns();
    let end = start + seconds as i64 * 1_000_000_000;
    println!("store_query: {} tags x {:.2} h; machine {}", support::TAGS, seconds as f64 / 3600.0, machine.clone());

    // The store: one batch per hour of data, sealed after each.
    let dir = tempfile::tempdir().unwrap();
    let store = support::open_store(dir.path(), false);
    let t = Instant::now();
    for b in support::synth_batches(&store, seconds, start, support::TAGS * 3600) {
        store.write(b).unwrap();
        store.flush().unwrap();
    }
    let st = store.stats();
    println!(
        "built store: {} samples in {} blocks ({} MB) in {:.1} s (untimed)",
        st.samples_written,
        st.blocks,
        st.block_bytes / 1_000_000,
        t.elapsed().as_secs_f64()
    );
    let tags = linesim::line_tags(support::TAGS);
    let all = support::synth_ids(&store);
    // 100 float series: temp_1 and temp_2 of the 50 machines.
    let hundred: Vec<SeriesId> =
        tags.iter().zip(&all).filter(|(t, _)| t.field == "temp_1" || t.field == "temp_2").map(|(_, id)| *id).collect();
    assert_eq!(hundred.len(), 100);
    let windows = our_avg(&store, &hundred, start, end);
    assert_eq!(windows, 100 * seconds / 60);

    // VictoriaMetrics with the same data.
    let vm = support::vm_bin().map(|bin| {
        let vm = support::Vm::start_with(&bin, &dir.path().join("vm"), &["-search.disableCache"]);
        let bodies = support::synth_bodies(seconds, start, 5000);
        support::post_all(&vm.write_url(), &bodies, 4);
        vm.force_flush();
        let q = r#"avg_over_time({__name__=~"line1_temp_[12]"}[1m])"#;
        // VM's point at t averages (t-1m, t]: ask for the ends of our windows.
        let url = format!(
            "http://{}/api/v1/query_range?query={}&start={}&end={}&step=60s&nocache=1",
            vm.addr,
            support::urlencode(q),
            start / 1_000_000_000 + 60,
            end / 1_000_000_000
        );
        let latest = format!(
            "http://{}/api/v1/query?query={}&time={}&nocache=1",
            vm.addr,
            support::urlencode(r#"{__name__=~"line1_.+"}"#),
            end / 1_000_000_000
        );
        (vm, url, latest)
    });
    let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
    if let Some((_, url, _)) = &vm {
        let got = vm_avg(&agent, url);
        println!("victoria-metrics answers {got} points (we answer {windows} windows)");
        let (_, _, latest) = vm.as_ref().unwrap();
        println!("victoria-metrics answers {} latest values", vm_latest(&agent, latest));
    } else {
        println!("victoria-metrics not found; no peer figure");
    }

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    {
        let mut g = c.benchmark_group("aggregate_avg_1m");
        g.sample_size(20);
        g.bench_function("linepilot_100_series", |b| b.iter(|| black_box(our_avg(&store, &hundred, start, end))));
        if let Some((_, url, _)) = &vm {
            g.bench_function("victoria_metrics_100_series", |b| b.iter(|| black_box(vm_avg(&agent, url))));
        }
        g.finish();
    }
    {
        let mut g = c.benchmark_group("latest");
        g.bench_function("linepilot_1000_series", |b| b.iter(|| black_box(store.latest(&all))));
        if let Some((_, _, latest)) = &vm {
            g.bench_function("victoria_metrics_1000_series", |b| b.iter(|| black_box(vm_latest(&agent, latest))));
        }
        g.finish();
    }
    c.final_summary();

    // A summary with the ratio from the same run (medians of 21 runs).
    let ours = median(21, || {
        black_box(our_avg(&store, &hundred, start, end));
    });
    let theirs = vm.as_ref().map(|(_, url, _)| {
        median(21, || {
            black_box(vm_avg(&agent, url));
        })
    });
    let latest = median(1001, || {
        black_box(store.latest(&all));
    });
    let vm_latest_t = vm.as_ref().map(|(_, _, l)| {
        median(51, || {
            black_box(vm_latest(&agent, l));
        })
    });
    println!();
    println!(
        "| query                                   | linepilot | VictoriaMetrics | ratio (VM / ours) | goal     |"
    );
    println!(
        "|-----------------------------------------|----------:|----------------:|------------------:|----------|"
    );
    println!(
        "| 1-min avg, 100 series x {:.0} h           | {:7.2} ms | {:>15} | {:>17} | <= 50 ms |",
        seconds as f64 / 3600.0,
        ours.as_secs_f64() * 1e3,
        theirs.map_or("-".into(), |t| format!("{:.2} ms", t.as_secs_f64() * 1e3)),
        theirs.map_or("-".into(), |t| format!("{:.2}x", t.as_secs_f64() / ours.as_secs_f64())),
    );
    println!(
        "| latest, 1000 series                     | {:7.3} ms | {:>15} | {:>17} | <= 1 ms  |",
        latest.as_secs_f64() * 1e3,
        vm_latest_t.map_or("-".into(), |t| format!("{:.2} ms", t.as_secs_f64() * 1e3)),
        vm_latest_t.map_or("-".into(), |t| format!("{:.0}x", t.as_secs_f64() / latest.as_secs_f64())),
    );
    support::write_result(
        "store_query",
        &json!({
            "machine": machine, // taken before the run
            "hours": seconds as f64 / 3600.0,
            "avg_1m_100_series_ms": ours.as_secs_f64() * 1e3,
            "vm_avg_1m_100_series_ms": theirs.map(|t| t.as_secs_f64() * 1e3),
            "vm_over_ours": theirs.map(|t| t.as_secs_f64() / ours.as_secs_f64()),
            "latest_1000_series_ms": latest.as_secs_f64() * 1e3,
            "vm_latest_1000_series_ms": vm_latest_t.map(|t| t.as_secs_f64() * 1e3),
        }),
    );
    drop(vm);
}
