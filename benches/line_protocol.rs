//! Line protocol parsing throughput: 100k points of realistic plant lines.
//!
//! `cargo bench --bench line_protocol -- --warm-up-time 1 --measurement-time 3`
//!
//! Reports points per second (criterion "elem/s") for:
//! * `for_each_point`: the owning API (fresh tag/field vectors per point);
//! * `for_each_point_ref`: the reusing API (one point, vectors reused);
//! * `split_lines`: only finding line ends, as a floor for comparison.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use linepilot::line_protocol::{for_each_point, for_each_point_ref, FieldValue, Precision};

const POINTS: usize = 100_000;

/// A body like the one a plant's collectors post: a few lines, a handful of
/// assets, mostly float measurements with the odd counter, flag and state.
fn plant_body() -> String {
    let assets = ["filler", "capper", "labeller", "palletiser", "washer"];
    let floats = ["bowl_pressure", "product_temp", "motor_current", "fill_level", "torque", "vibration_rms"];
    let states = ["running", "starved", "blocked", "fault"];
    let mut rng = fastrand::Rng::with_seed(7);
    let mut body = String::with_capacity(POINTS * 80);
    let mut ts: i64 = 1_732_780_800_000_000_000;
    for i in 0..POINTS {
        ts += 10_000_000;
        let line = 1 + i % 3;
        let asset = assets[rng.usize(..assets.len())];
        match i % 10 {
            // 70 %: one float field.
            0..=6 => {
                let tag = floats[rng.usize(..floats.len())];
                let v = rng.f64() * 10.0;
                body.push_str(&format!("line{line},asset={asset},tag={tag} value={v:.3} {ts}\n"));
            }
            // 10 %: a counter and a rate.
            7 => {
                let n = rng.u64(..10_000_000);
                let r = rng.f64() * 600.0;
                body.push_str(&format!("line{line},asset={asset},tag=good_count value={n}i,rate={r:.1} {ts}\n"));
            }
            // 10 %: a digital signal.
            8 => {
                let on = if rng.bool() { "true" } else { "false" };
                body.push_str(&format!("line{line},asset={asset},tag=running value={on} {ts}\n"));
            }
            // 10 %: a state string with an unsigned code.
            _ => {
                let s = states[rng.usize(..states.len())];
                let code = rng.u32(..100);
                body.push_str(&format!("line{line},asset={asset},tag=state value=\"{s}\",code={code}u {ts}\n"));
            }
        }
    }
    body
}

/// Touches every parsed value so that nothing is optimised away.
fn checksum(fields: &[(std::borrow::Cow<'_, str>, FieldValue<'_>)]) -> u64 {
    let mut h = 0u64;
    for (k, v) in fields {
        h = h.wrapping_add(k.len() as u64);
        h = h.wrapping_add(match v {
            FieldValue::F64(x) => x.to_bits(),
            FieldValue::I64(x) => *x as u64,
            FieldValue::U64(x) => *x,
            FieldValue::Bool(b) => u64::from(*b),
            FieldValue::Str(s) => s.len() as u64,
        });
    }
    h
}

fn bench(c: &mut Criterion) {
    let body = plant_body();
    let mut g = c.benchmark_group("line_protocol");
    g.throughput(Throughput::Elements(POINTS as u64));
    g.sample_size(20);

    g.bench_function("for_each_point", |b| {
        b.iter(|| {
            let mut h = 0u64;
            let n = for_each_point(black_box(&body), Precision::Ns, |p| {
                h = h.wrapping_add(checksum(&p.fields) ^ p.tags.len() as u64);
                Ok(())
            })
            .expect("valid body");
            assert_eq!(n, POINTS);
            h
        })
    });

    g.bench_function("for_each_point_ref", |b| {
        b.iter(|| {
            let mut h = 0u64;
            let n = for_each_point_ref(black_box(&body), Precision::Ns, |p| {
                h = h.wrapping_add(checksum(&p.fields) ^ p.tags.len() as u64);
                Ok(())
            })
            .expect("valid body");
            assert_eq!(n, POINTS);
            h
        })
    });

    g.bench_function("split_lines", |b| b.iter(|| black_box(&body).lines().map(|l| l.len()).sum::<usize>()));
    g.finish();

    println!(
        "body: {} points, {:.1} MB, {:.1} bytes/point",
        POINTS,
        body.len() as f64 / 1e6,
        body.len() as f64 / POINTS as f64
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
