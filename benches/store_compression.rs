//! Bytes per sample on disk after the head is sealed into blocks, for each
//! float codec policy (`FloatCodec::{Gorilla, Pco, Smaller}`):
//!
//! * NAB `realKnownCause` (the 7 CSV files under `../shared/data/nab`, or
//!   `LP_NAB_DIR`), one series per file, sealed once per file;
//! * the synthetic line (1000 tags x 8 h x 1 Hz, `LP_BENCH_HOURS` to shorten),
//!   sealed every hour of data as `block_duration = "1h"` does, with a
//!   breakdown per kind of tag;
//! * VictoriaMetrics on the same synthetic data in the same run (its data
//!   directory after `/internal/force_flush`, minus an empty one: rough, as it
//!   merges parts in the background).
//!
//! `cargo bench --bench store_compression`.
//! Results: a table on stdout and `target/bench-results/store_compression.json`.

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use linepilot::domain::{Quality, Sample, SeriesKey, Value, ValueKind};
use linepilot::store::block::{self, FloatCodec};
use linepilot::store::Store;
use serde_json::json;

const POLICIES: [(FloatCodec, &str); 3] =
    [(FloatCodec::Gorilla, "gorilla"), (FloatCodec::Pco, "pco"), (FloatCodec::Smaller, "smaller")];

fn open(dir: &Path, policy: FloatCodec) -> Store {
    let mut a = linepilot::store::StoreArgs::new(support::store_config(dir));
    a.background = false;
    a.float_codec = policy;
    Store::open(a).expect("opening store")
}

fn nab_dir() -> PathBuf {
    std::env::var_os("LP_NAB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/nab/data/realKnownCause"))
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) as ns.
fn parse_ts(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19 {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<i64>().ok());
    let (y, mo, d, h, mi, se) = (n(0..4)?, n(5..7)?, n(8..10)?, n(11..13)?, n(14..16)?, n(17..19)?);
    // Days from civil (Howard Hinnant).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400) + h * 3600 + mi * 60 + se) * 1_000_000_000)
}

/// A NAB file: its name and its (timestamp, value) points.
type NabSeries = (String, Vec<(i64, f64)>);

/// (file name, points) of every NAB realKnownCause file.
fn nab_series() -> Option<Vec<NabSeries>> {
    let dir = nab_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "csv"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).ok()?;
        let pts: Vec<(i64, f64)> = text
            .lines()
            .skip(1)
            .filter_map(|l| {
                let (t, v) = l.split_once(',')?;
                Some((parse_ts(t)?, v.trim().parse().ok()?))
            })
            .collect();
        out.push((f.file_stem().unwrap().to_string_lossy().into_owned(), pts));
    }
    Some(out)
}

struct Figure {
    samples: u64,
    block_bytes: u64,
    rollup_bytes: u64,
    seal: Duration,
}

impl Figure {
    fn per_sample(&self) -> f64 {
        self.block_bytes as f64 / self.samples.max(1) as f64
    }
    fn json(&self) -> serde_json::Value {
        json!({
            "samples": self.samples,
            "block_bytes": self.block_bytes,
            "bytes_per_sample": self.per_sample(),
            "rollup_bytes": self.rollup_bytes,
            "rollup_bytes_per_sample": self.rollup_bytes as f64 / self.samples.max(1) as f64,
            "seal_seconds": self.seal.as_secs_f64(),
        })
    }
}

fn nab_figure(series: &[NabSeries], policy: FloatCodec) -> (Figure, Vec<(String, f64)>) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), policy);
    let mut seal = Duration::ZERO;
    let mut per_file = Vec::new();
    let mut prev = 0;
    for (name, pts) in series {
        let ids = store.resolve(&[(SeriesKey::new(format!("nab.{name}")), ValueKind::F64)]).unwrap();
        let samples: Vec<Sample> = pts
            .iter()
            .map(|&(ts, v)| Sample { series: ids[0], ts, value: Value::F64(v), quality: Quality::GOOD })
            .collect();
        store.write(samples).unwrap();
        let t = Instant::now();
        store.flush().unwrap();
        seal += t.elapsed();
        let now = store.stats().block_bytes;
        per_file.push((name.clone(), (now - prev) as f64 / pts.len() as f64));
        prev = now;
    }
    let st = store.stats();
    let fig = Figure {
        samples: series.iter().map(|(_, p)| p.len() as u64).sum(),
        block_bytes: st.block_bytes,
        rollup_bytes: st.rollup_bytes,
        seal,
    };
    (fig, per_file)
}

/// Per kind of tag: (kind, samples, value-column bytes, timestamp-column bytes) over 1-hour chunks.
type Breakdown = Vec<(&'static str, u64, u64, u64)>;

fn synth_figure(seconds: usize, start: i64, policy: FloatCodec) -> (Figure, Breakdown) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), policy);
    // One batch per hour of data, sealed after each (block_duration = 1h).
    let batches = support::synth_batches(&store, seconds, start, support::TAGS * 3600);
    let mut seal = Duration::ZERO;
    let samples: u64 = batches.iter().map(|b| b.len() as u64).sum();
    for b in batches {
        store.write(b).unwrap();
        let t = Instant::now();
        store.flush().unwrap();
        seal += t.elapsed();
    }
    let st = store.stats();
    // Breakdown: re-encode each series' hour chunks to attribute bytes to kinds.
    let tags = linesim::line_tags(support::TAGS);
    let ids = support::synth_ids(&store);
    let mut by_kind: Breakdown =
        ["analog", "setpoint", "counter", "state", "flag"].iter().map(|k| (*k, 0, 0, 0)).collect();
    let hours = seconds.div_ceil(3600);
    for (t, id) in tags.iter().zip(&ids) {
        let k = t.kind as usize;
        for h in 0..hours {
            let from = start + h as i64 * 3_600_000_000_000;
            let p = store.range(*id, from, from + 3_600_000_000_000).unwrap();
            if p.is_empty() {
                continue;
            }
            let c = block::raw_chunk(*id, &p, policy).unwrap();
            by_kind[k].1 += p.len() as u64;
            by_kind[k].2 += c.cols[1].1.len() as u64;
            by_kind[k].3 += c.cols[0].1.len() as u64;
        }
    }
    let fig = Figure { samples, block_bytes: st.block_bytes, rollup_bytes: st.rollup_bytes, seal };
    (fig, by_kind)
}

/// VictoriaMetrics' bytes for the synthetic line: (bytes, samples it keeps).
fn vm_figure(seconds: usize, start: i64) -> Option<(u64, u64)> {
    let bin = support::vm_bin()?;
    let bodies = support::synth_bodies(seconds, start, 5000);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("vm");
    let vm = support::Vm::start(&bin, &data);
    vm.force_flush();
    std::thread::sleep(Duration::from_secs(2));
    let empty = support::dir_bytes(&data);
    support::post_all(&vm.write_url(), &bodies, 4);
    vm.force_flush();
    // Let background merges settle: take the size once it has not changed
    // for two readings 3 s apart (at most a minute).
    let mut last = support::dir_bytes(&data);
    let mut same = 0;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_secs(3));
        vm.force_flush();
        let now = support::dir_bytes(&data);
        println!("victoria-metrics data dir: {:.1} MB", now as f64 / 1e6);
        same = if now == last { same + 1 } else { 0 };
        last = now;
        if same == 2 {
            break;
        }
    }
    let end_s = (start + seconds as i64 * 1_000_000_000) / 1_000_000_000 + 1;
    let held = support::vm_sample_count(&vm, "{__name__=~\"line1_.+\"}", seconds as f64 / 3600.0, end_s);
    println!("victoria-metrics holds {held} samples of the synthetic line");
    // VictoriaMetrics keeps a series for every field, but stores a string
    // field (the machine states) as the number 0: that information is lost.
    let kept = (support::TAGS * seconds) as u64;
    assert_eq!(held, kept, "VictoriaMetrics does not hold every numeric sample");
    Some((last.saturating_sub(empty), kept))
}

fn main() {
    let seconds = support::seconds();
    let start = support::start_ns();
    println!(
        "store_compression: synthetic {} tags x {:.2} h; machine {}",
        support::TAGS,
        support::hours(),
        support::machine()
    );
    let mut results = serde_json::Map::new();
    results.insert("machine".into(), support::machine());
    results.insert("hours".into(), json!(support::hours()));

    let nab = nab_series();
    if nab.is_none() {
        println!("NAB data not found at {} (set LP_NAB_DIR); skipping NAB", nab_dir().display());
    }
    let mut rows = Vec::new();
    for (policy, name) in POLICIES {
        if let Some(series) = &nab {
            let (f, per_file) = nab_figure(series, policy);
            rows.push(("NAB realKnownCause", name, f.per_sample(), f.rollup_bytes as f64 / f.samples as f64, f.seal));
            let mut j = f.json();
            j["per_file"] =
                json!(per_file.iter().map(|(n, b)| json!({"file": n, "bytes_per_sample": b})).collect::<Vec<_>>());
            results.insert(format!("nab_{name}"), j);
        }
        let (f, by_kind) = synth_figure(seconds, start, policy);
        rows.push(("synthetic line", name, f.per_sample(), f.rollup_bytes as f64 / f.samples as f64, f.seal));
        let mut j = f.json();
        j["by_kind"] = json!(by_kind
            .iter()
            .map(|(k, n, v, t)| json!({"kind": k, "samples": n, "value_bytes_per_sample": *v as f64 / (*n).max(1) as f64, "ts_bytes_per_sample": *t as f64 / (*n).max(1) as f64}))
            .collect::<Vec<_>>());
        println!("synthetic, {name}: value+timestamp column bytes/sample by kind:");
        for (k, n, v, t) in &by_kind {
            println!(
                "  {k:9} {n:10} samples  values {:.3}  timestamps {:.3}",
                *v as f64 / (*n).max(1) as f64,
                *t as f64 / (*n).max(1) as f64
            );
        }
        results.insert(format!("synthetic_{name}"), j);
    }
    let vm = vm_figure(seconds, start);
    if let Some((bytes, kept)) = vm {
        results.insert(
            "synthetic_victoria_metrics".into(),
            json!({"bytes": bytes, "samples": kept, "bytes_per_sample": bytes as f64 / kept as f64}),
        );
    }

    println!();
    println!("| data               | codec policy    | bytes/sample (blocks) | rollup bytes/sample | seal time (s) |");
    println!("|--------------------|-----------------|----------------------:|--------------------:|--------------:|");
    for (d, p, b, r, s) in &rows {
        println!("| {d:18} | {p:15} | {b:21.3} | {r:19.3} | {:13.2} |", s.as_secs_f64());
    }
    if let Some((bytes, kept)) = vm {
        println!(
            "| synthetic line     | VictoriaMetrics | {:21.3} |                   - |             - |",
            bytes as f64 / kept as f64
        );
        println!("(VictoriaMetrics holds all {kept} samples, but stores the string states as 0: the states are lost)");
    } else {
        println!("victoria-metrics not found; no peer figure");
    }
    support::write_result("store_compression", &serde_json::Value::Object(results));
}
