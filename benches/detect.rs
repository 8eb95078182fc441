//! Cost of the streaming anomaly detectors, in points per second on one core
//! (criterion "elem/s"; the issue asks for at least 1 M points/s per core for
//! the univariate detectors):
//!
//! * `signal_detector`: [`SignalDetector::update`] (level, step, CUSUM, pattern,
//!   seasonal and sequence tests, episodes) over NAB's `machine_temperature_system_failure.csv`
//!   (22,695 real values, replayed 10 times; a synthetic signal when
//!   `../shared/data/nab` is absent);
//! * `robust_baseline`: one [`RobustBaseline`] alone, the building block;
//! * `sum_reference`: summing the same values, as a same-run yardstick of the
//!   machine's speed (the ratio to it is what to compare between runs);
//! * `pca_row`: one 12-column row through a fitted [`PcaDetector`].
//!
//! `cargo bench --bench detect`.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use linepilot::analytics::detect::{BaselineParams, RobustBaseline, SignalDetector, SignalParams};
use linepilot::analytics::pca::{PcaDetector, PcaParams};

fn values() -> Vec<f64> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/nab/data/realKnownCause/machine_temperature_system_failure.csv");
    let one: Vec<f64> = match std::fs::read_to_string(&path) {
        Ok(text) => text.lines().skip(1).filter_map(|l| l.split(',').nth(1)?.parse().ok()).collect(),
        Err(_) => {
            eprintln!("{} is absent: a synthetic signal instead", path.display());
            (0..22_695).map(|i| 80.0 + 5.0 * (i as f64 / 288.0).sin() + ((i * 7919) % 13) as f64 * 0.1).collect()
        }
    };
    (0..10).flat_map(|_| one.iter().copied()).collect()
}

fn bench(c: &mut Criterion) {
    let xs = values();
    let mut g = c.benchmark_group("detect");
    g.throughput(Throughput::Elements(xs.len() as u64));
    g.bench_function("signal_detector", |b| {
        b.iter(|| {
            let mut d = SignalDetector::new(SignalParams::default());
            let mut starts = 0u32;
            for &x in &xs {
                starts += d.update(x).start as u32;
            }
            black_box(starts)
        })
    });
    g.bench_function("robust_baseline", |b| {
        b.iter(|| {
            let mut d = RobustBaseline::new(BaselineParams::default());
            let mut acc = 0.0;
            for &x in &xs {
                acc += d.update(x).unwrap_or(0.0);
            }
            black_box(acc)
        })
    });
    g.bench_function("sum_reference", |b| b.iter(|| black_box(xs.iter().map(|x| black_box(*x)).sum::<f64>())));
    g.finish();

    // 12 correlated columns (a filler's fill levels), fitted on 500 rows.
    let cols = 12;
    let row = |i: usize| -> Vec<Option<f64>> {
        (0..cols).map(|c| Some(500.0 + ((i * 31 + c * 17) % 11) as f64 * 0.1 + (i % 97) as f64 * 0.01)).collect()
    };
    let mut pca = PcaDetector::new(cols, PcaParams::default()).expect("params");
    for i in 0..600 {
        pca.update(i as i64, &row(i));
    }
    let rows: Vec<Vec<Option<f64>>> = (600..1600).map(row).collect();
    let mut g = c.benchmark_group("detect_pca");
    g.throughput(Throughput::Elements(rows.len() as u64));
    g.bench_function("pca_row_12_tags", |b| {
        b.iter(|| {
            for (i, r) in rows.iter().enumerate() {
                black_box(pca.update(i as i64, r));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
