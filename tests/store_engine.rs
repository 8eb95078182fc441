//! Library-level integration tests of the embedded store, written the way a
//! skeptical plant engineer would check it: what goes in comes out, across
//! restarts, seals, retention, corruption and concurrent writers.
//!
//! Sealing (`flush`) and retention (`apply_retention`) are driven by the test
//! (`background: false`) and time by a clock the test controls.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use linepilot::config::units::{ByteSize, HumanDuration};
use linepilot::domain::{Quality, QualityClass, Sample, SeriesId, SeriesKey, Timestamp, Value, ValueKind};
use linepilot::store::config::StoreConfig;
use linepilot::store::points::Points;
use linepilot::store::rollup::{Agg, Partial};
use linepilot::store::{Clock, Latest, Store, StoreArgs, StoreError};

const SEC: i64 = 1_000_000_000;
const MIN: i64 = 60 * SEC;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;
/// 2023-11-14T22:14:00Z, on a minute boundary.
const T0: i64 = 1_700_000_040 * SEC;

// ------------------------------------------------------------------ helpers

struct TestClock(AtomicI64);

impl TestClock {
    fn new(t: Timestamp) -> Arc<TestClock> {
        Arc::new(TestClock(AtomicI64::new(t)))
    }
    fn set(&self, t: Timestamp) {
        self.0.store(t, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        self.0.load(Ordering::SeqCst)
    }
}

fn config(dir: &Path) -> StoreConfig {
    StoreConfig {
        data_dir: dir.to_path_buf(),
        fsync_interval: HumanDuration(Duration::from_millis(5)),
        ..StoreConfig::default()
    }
}

fn open_with(cfg: StoreConfig, clock: Arc<TestClock>) -> Store {
    let mut args = StoreArgs::new(cfg);
    args.clock = clock;
    args.background = false;
    Store::open(args).expect("store opens")
}

fn open(dir: &Path, clock: &Arc<TestClock>) -> Store {
    open_with(config(dir), clock.clone())
}

fn series(store: &Store, name: &str, kind: ValueKind) -> SeriesId {
    store.resolve(&[(SeriesKey::new(name), kind)]).expect("resolve")[0]
}

fn f64s(id: SeriesId, pts: &[(Timestamp, f64)]) -> Vec<Sample> {
    pts.iter().map(|&(ts, v)| Sample { series: id, ts, value: Value::F64(v), quality: Quality::GOOD }).collect()
}

fn sample(id: SeriesId, ts: Timestamp, value: Value, quality: Quality) -> Sample {
    Sample { series: id, ts, value, quality }
}

/// Every sample of a series as (ts, value, quality) rows.
fn rows(p: &Points) -> Vec<(Timestamp, Value, Quality)> {
    (0..p.len()).map(|i| (p.ts[i], p.values.get(i), p.quality_at(i))).collect()
}

/// Rows with floats compared by bit pattern (so NaN == NaN of the same payload, -0.0 != 0.0).
#[derive(Debug, PartialEq)]
enum Bits {
    F(u64),
    Other(Value),
}

fn bits(rows: &[(Timestamp, Value, Quality)]) -> Vec<(Timestamp, Bits, u32)> {
    rows.iter()
        .map(|(t, v, q)| {
            let b = match v {
                Value::F64(x) => Bits::F(x.to_bits()),
                other => Bits::Other(other.clone()),
            };
            (*t, b, q.0)
        })
        .collect()
}

fn all(store: &Store, id: SeriesId) -> Vec<(Timestamp, Value, Quality)> {
    rows(&store.range(id, i64::MIN, i64::MAX).expect("range"))
}

fn f64_rows(store: &Store, id: SeriesId, from: Timestamp, to: Timestamp) -> Vec<(Timestamp, f64)> {
    let p = store.range(id, from, to).expect("range");
    assert!(p.ts.windows(2).all(|w| w[0] < w[1]), "range must be strictly sorted");
    (0..p.len())
        .map(|i| match p.values.get(i) {
            Value::F64(v) => (p.ts[i], v),
            other => panic!("not a float: {other:?}"),
        })
        .collect()
}

fn wal_segments(store: &Store) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(store.paths().wal_dir())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".wal").and_then(|n| n.parse().ok())
        })
        .collect();
    v.sort();
    v
}

/// The WAL sequence the durable checkpoint says replay starts from.
fn checkpoint_replay_from(dir: &Path) -> u64 {
    let b = std::fs::read(dir.join("checkpoint")).expect("checkpoint exists");
    assert_eq!(b.len(), 28);
    u64::from_le_bytes(b[8..16].try_into().unwrap())
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.unwrap().file_name().into_string().unwrap()).collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

fn block_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("blocks"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "blk"))
        .collect();
    v.sort();
    v
}

/// Deterministic pseudo-random values (a fixed-seed generator).
fn rng(seed: u64) -> fastrand::Rng {
    fastrand::Rng::with_seed(seed)
}

/// The aggregates of one window computed the slow, obvious way from raw rows:
/// bad-quality samples and NaN are not measurements and are left out.
#[derive(Debug)]
struct Naive {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    first: f64,
    last: f64,
    vals: Vec<f64>,
}

impl Naive {
    fn avg(&self) -> f64 {
        self.sum / self.count as f64
    }
    fn stddev(&self) -> f64 {
        if self.count < 2 {
            return 0.0;
        }
        let m = self.avg();
        (self.vals.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (self.count - 1) as f64).sqrt()
    }
}

fn naive_aggregate(
    store: &Store,
    id: SeriesId,
    from: Timestamp,
    to: Timestamp,
    window: i64,
) -> BTreeMap<Timestamp, Naive> {
    let p = store.range(id, from, to).expect("range");
    let mut out: BTreeMap<Timestamp, Naive> = BTreeMap::new();
    for i in 0..p.len() {
        if p.quality_at(i).class() == QualityClass::Bad {
            continue;
        }
        let Some(v) = p.values.get(i).as_f64() else {
            continue;
        };
        if v.is_nan() {
            continue;
        }
        let w = p.ts[i].div_euclid(window) * window;
        let n = out.entry(w).or_insert(Naive {
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            first: v,
            last: v,
            vals: Vec::new(),
        });
        // range() is sorted, so the first row seen is the earliest, the last the latest.
        n.count += 1;
        n.sum += v;
        n.min = n.min.min(v);
        n.max = n.max.max(v);
        n.last = v;
        n.vals.push(v);
    }
    out
}

fn close_enough(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn assert_aggregates_match(store: &Store, id: SeriesId, from: Timestamp, to: Timestamp, window: i64) {
    let got = store.aggregate(id, from, to, window).expect("aggregate");
    let want = naive_aggregate(store, id, from, to, window);
    let ctx = format!("from=T0{:+}s to=T0{:+}s window={}s", (from - T0) / SEC, (to - T0) / SEC, window / SEC);
    let got_keys: Vec<Timestamp> = got.iter().map(|(w, _)| *w).collect();
    let want_keys: Vec<Timestamp> = want.keys().copied().collect();
    assert_eq!(got_keys, want_keys, "{ctx}: window starts");
    assert!(!got.is_empty(), "{ctx}: a test with no windows proves nothing");
    for (w, part) in &got {
        let n = &want[w];
        let v = |a: Agg| part.value(a).unwrap();
        let wctx = format!("{ctx} window T0{:+}s", (w - T0) / SEC);
        assert_eq!(v(Agg::Count), n.count as f64, "{wctx}: count");
        assert_eq!(v(Agg::Min), n.min, "{wctx}: min");
        assert_eq!(v(Agg::Max), n.max, "{wctx}: max");
        assert_eq!(v(Agg::First), n.first, "{wctx}: first");
        assert_eq!(v(Agg::Last), n.last, "{wctx}: last");
        assert!(close_enough(v(Agg::Sum), n.sum), "{wctx}: sum {} vs {}", v(Agg::Sum), n.sum);
        assert!(close_enough(v(Agg::Avg), n.avg()), "{wctx}: avg {} vs {}", v(Agg::Avg), n.avg());
        assert!(
            (v(Agg::Stddev) - n.stddev()).abs() <= 1e-7 * n.stddev().max(1.0),
            "{wctx}: stddev {} vs {}",
            v(Agg::Stddev),
            n.stddev()
        );
    }
}

fn flip_byte(path: &Path, at: u64) {
    let mut b = std::fs::read(path).unwrap();
    b[at as usize] ^= 0x5a;
    std::fs::write(path, &b).unwrap();
}

/// (offset, len) of the chunk of the first index entry, read from the
/// footer (first u64 LE of the 48-byte footer is the index offset).
fn first_chunk(path: &Path) -> (u64, u64) {
    let b = std::fs::read(path).unwrap();
    let footer = &b[b.len() - 48..];
    let index_offset = u64::from_le_bytes(footer[0..8].try_into().unwrap()) as usize;
    let e = &b[index_offset..];
    let off = u64::from_le_bytes(e[25..33].try_into().unwrap());
    let len = u32::from_le_bytes(e[33..37].try_into().unwrap()) as u64;
    assert!(off >= 8 && off + len <= index_offset as u64);
    (off, len)
}

// ------------------------------------------------------------------ 1. durability

#[test]
fn write_is_visible_at_once_and_survives_replay_and_seal() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0 + HOUR);
    let pts: Vec<(Timestamp, f64)> = (0..120).map(|i| (T0 + i * SEC, 2.5 + (i % 7) as f64 * 0.125)).collect();
    let want_latest = Some(Latest { ts: T0 + 119 * SEC, value: Value::F64(pts[119].1), quality: Quality::GOOD });
    let id;
    {
        let store = open(dir.path(), &clock);
        id = series(&store, "filler.bowl_pressure", ValueKind::F64);
        assert_eq!(store.latest(&[id]), vec![None]);
        for chunk in pts.chunks(10) {
            store.write(f64s(id, chunk)).unwrap();
        }
        // Acknowledged means visible: no flush, no wait.
        assert_eq!(f64_rows(&store, id, T0, T0 + HOUR), pts);
        assert_eq!(
            f64_rows(&store, id, T0 + 10 * SEC, T0 + 20 * SEC),
            pts[10..20].to_vec(),
            "from inclusive, to exclusive"
        );
        assert_eq!(store.latest(&[id]), vec![want_latest.clone()]);
        assert_eq!(store.stats().samples_written, 120);
        store.close();
    }
    // Reopen: WAL replay only.
    let before_seal;
    {
        let store = open(dir.path(), &clock);
        let st = store.stats();
        assert_eq!((st.blocks, st.head_samples), (0, 120), "all data from the WAL into the head");
        assert_eq!(f64_rows(&store, id, T0, T0 + HOUR), pts);
        assert_eq!(store.latest(&[id]), vec![want_latest.clone()]);

        before_seal = wal_segments(&store);
        assert!(!before_seal.is_empty());
        assert!(store.flush().unwrap(), "there was a head to seal");
        let st = store.stats();
        assert_eq!((st.blocks, st.rollups, st.head_samples), (1, 1, 0));
        assert_eq!(f64_rows(&store, id, T0, T0 + HOUR), pts, "readable from the block");
        assert_eq!(store.latest(&[id]), vec![want_latest.clone()]);

        let ckpt = checkpoint_replay_from(dir.path());
        let after = wal_segments(&store);
        assert!(after.iter().all(|s| *s >= ckpt), "segments before the checkpoint {ckpt} remain: {after:?}");
        for s in &before_seal {
            assert!(!after.contains(s), "segment {s} was sealed into a block and must be gone: {after:?}");
        }
        assert!(!store.flush().unwrap(), "nothing left to seal");
        store.close();
    }
    // Reopen: block only.
    {
        let store = open(dir.path(), &clock);
        let st = store.stats();
        assert_eq!((st.blocks, st.head_samples), (1, 0), "data from the block, nothing replayed twice");
        assert_eq!(f64_rows(&store, id, T0, T0 + HOUR), pts);
        assert_eq!(store.latest(&[id]), vec![want_latest]);
        assert_eq!(store.series().len(), 1);
    }
}

// ------------------------------------------------------------------ 2. kinds and qualities

#[test]
fn every_kind_and_bad_quality_survive_seal_and_reopen_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0 + HOUR);
    let weird_nan = f64::from_bits(0x7ff8_0000_dead_beef);
    let neg_nan = f64::from_bits(0xfff0_0000_0000_0001); // signalling, negative
    let floats = [
        1.0,
        weird_nan,
        -0.0,
        0.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::MIN_POSITIVE,
        5e-324,
        f64::MAX,
        neg_nan,
        f64::NAN,
        -1.25e300,
    ];
    let ints = [0, i64::MIN, i64::MAX, -1, 1, 42, 42, i64::MIN + 1, 7, 1 << 53, -(1 << 53) - 1, 3];
    let bools = [true, false, false, true, true, true, false, true, false, false, true, true];
    let strs = [
        "running",
        "",
        "fault: Überdruck 🚨",
        "running",
        "idle",
        "blocked",
        "starved",
        "running",
        "a\u{0}b",
        "idle",
        "x",
        "running",
    ];
    let quals = [
        Quality::GOOD,
        Quality::BAD_COMMS,
        Quality::UNCERTAIN,
        Quality::GOOD,
        Quality::BAD_TIMEOUT,
        Quality::modbus_exception(2),
        Quality::GOOD,
        Quality::UNCERTAIN_LAST_USABLE,
        Quality(0x0001_0002), // good with a sub-code
        Quality::BAD,
        Quality::GOOD,
        Quality::BAD_COMMS,
    ];
    let ids;
    let mut want: Vec<Vec<(Timestamp, Value, Quality)>> = vec![Vec::new(); 4];
    {
        let store = open(dir.path(), &clock);
        ids = store
            .resolve(&[
                (SeriesKey::new("filler.bowl_pressure"), ValueKind::F64),
                (SeriesKey::new("filler.bottle_count"), ValueKind::I64),
                (SeriesKey::new("filler.running"), ValueKind::Bool),
                (SeriesKey::new("filler.state"), ValueKind::Str),
            ])
            .unwrap();
        let mut batch = Vec::new();
        for i in 0..12 {
            let ts = T0 + i as i64 * SEC;
            // Shift quality per series so every series sees a different pattern.
            let vals =
                [Value::F64(floats[i]), Value::I64(ints[i]), Value::Bool(bools[i]), Value::Str(strs[i].to_string())];
            for (k, v) in vals.into_iter().enumerate() {
                let q = quals[(i + k) % quals.len()];
                want[k].push((ts, v.clone(), q));
                batch.push(sample(ids[k], ts, v, q));
            }
        }
        // A series where every sample is bad (the quality column is never "all good").
        let all_bad = series(&store, "capper.torque", ValueKind::F64);
        batch.push(sample(all_bad, T0, Value::F64(9.5), Quality::BAD_COMMS));
        store.write(batch).unwrap();
        for k in 0..4 {
            assert_eq!(bits(&all(&store, ids[k])), bits(&want[k]), "series {k} from the head");
        }
        assert!(store.flush().unwrap());
        for k in 0..4 {
            assert_eq!(bits(&all(&store, ids[k])), bits(&want[k]), "series {k} from the block");
        }
        let l = store.latest(&[all_bad])[0].clone().unwrap();
        assert_eq!((l.ts, l.quality), (T0, Quality::BAD_COMMS));
    }
    let store = open(dir.path(), &clock);
    assert_eq!(store.stats().blocks, 1);
    assert_eq!(store.stats().head_samples, 0);
    for k in 0..4 {
        assert_eq!(bits(&all(&store, ids[k])), bits(&want[k]), "series {k} after reopen");
        let l = store.latest(&[ids[k]])[0].clone().expect("latest after reopen");
        let last = want[k].last().unwrap();
        assert_eq!(bits(&[(l.ts, l.value, l.quality)]), bits(std::slice::from_ref(last)), "latest of series {k}");
    }
    let bad = store.catalog().lookup(&SeriesKey::new("capper.torque")).unwrap().0;
    assert_eq!(bits(&all(&store, bad)), bits(&[(T0, Value::F64(9.5), Quality::BAD_COMMS)]));
}

// ------------------------------------------------------------------ 3. duplicates

#[test]
fn duplicate_timestamps_keep_the_last_write_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0 + HOUR);
    let store = open(dir.path(), &clock);
    let id = series(&store, "filler.bowl_pressure", ValueKind::F64);
    let ts = T0 + 10 * SEC;
    store.write(f64s(id, &[(T0, 0.5), (ts, 1.0), (T0 + 20 * SEC, 3.0)])).unwrap();
    store.flush().unwrap();
    // Re-sent after a reconnect: same timestamp, corrected value.
    store.write(f64s(id, &[(ts, 2.0)])).unwrap();
    let want = vec![(T0, 0.5), (ts, 2.0), (T0 + 20 * SEC, 3.0)];
    assert_eq!(f64_rows(&store, id, T0, T0 + MIN), want, "block + head");

    // The aggregates agree with range: the overwritten value is not counted.
    assert_aggregates_match(&store, id, T0, T0 + MIN, MIN);
    let agg = store.aggregate(id, T0, T0 + MIN, MIN).unwrap();
    assert_eq!(agg[0].1.value(Agg::Count), Some(3.0));
    assert_eq!(agg[0].1.value(Agg::Sum), Some(5.5));

    // Within one batch and within the head, the later sample wins too.
    store.write(f64s(id, &[(ts, 4.0), (ts, 5.0)])).unwrap();
    store.write(f64s(id, &[(ts, 6.0)])).unwrap();
    let want = vec![(T0, 0.5), (ts, 6.0), (T0 + 20 * SEC, 3.0)];
    assert_eq!(f64_rows(&store, id, T0, T0 + MIN), want);
    assert_aggregates_match(&store, id, T0, T0 + MIN, MIN);

    // Two blocks holding the same timestamp: the newer block wins.
    store.flush().unwrap();
    assert_eq!(store.stats().blocks, 2);
    assert_eq!(f64_rows(&store, id, T0, T0 + MIN), want, "two blocks");
    assert_aggregates_match(&store, id, T0, T0 + MIN, MIN);
    assert_aggregates_match(&store, id, T0, T0 + MIN, 15 * SEC);
    store.close();
    drop(store);

    let store = open(dir.path(), &clock);
    assert_eq!(f64_rows(&store, id, T0, T0 + MIN), want, "after reopen");
    assert_aggregates_match(&store, id, T0, T0 + MIN, MIN);
    // The latest sample is the newest timestamp, not the newest write.
    let l = store.latest(&[id])[0].clone().unwrap();
    assert_eq!((l.ts, l.value), (T0 + 20 * SEC, Value::F64(3.0)));
    // Overwriting the latest timestamp changes latest.
    store.write(f64s(id, &[(T0 + 20 * SEC, 7.0)])).unwrap();
    assert_eq!(store.latest(&[id])[0].clone().unwrap().value, Value::F64(7.0));
    store.close();
    drop(store);
    let store = open(dir.path(), &clock);
    assert_eq!(store.latest(&[id])[0].clone().unwrap().value, Value::F64(7.0), "latest overwrite survives replay");
}

// ------------------------------------------------------------------ 4. out of order

#[test]
fn out_of_order_writes_come_back_sorted() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0 + HOUR);
    let mut want: BTreeMap<Timestamp, f64> = BTreeMap::new();
    let id;
    {
        let store = open(dir.path(), &clock);
        id = series(&store, "conveyor.speed", ValueKind::F64);
        let mut r = rng(4);
        let mut write = |store: &Store, tss: Vec<Timestamp>| {
            let pts: Vec<(Timestamp, f64)> = tss.into_iter().map(|t| (t, r.f64() * 100.0)).collect();
            for &(t, v) in &pts {
                want.insert(t, v);
            }
            store.write(f64s(id, &pts)).unwrap();
        };
        // Backwards within a batch.
        write(&store, (0..50).rev().map(|i| T0 + 100 * SEC + i * SEC).collect());
        // A batch entirely before the previous one.
        write(&store, (0..50).map(|i| T0 + i * SEC).collect());
        // Interleaved, shuffled.
        let mut tss: Vec<Timestamp> = (0..100).map(|i| T0 + i * SEC + SEC / 2).collect();
        rng(44).shuffle(&mut tss);
        write(&store, tss);
        store.flush().unwrap();
        // Late data older than the block, and in between its samples.
        write(&store, (0..20).rev().map(|i| T0 - 20 * SEC + i * SEC).collect());
        write(&store, (0..20).map(|i| T0 + 60 * SEC + i * SEC + SEC / 4).collect());
        let want_v: Vec<(Timestamp, f64)> = want.iter().map(|(t, v)| (*t, *v)).collect();
        assert_eq!(f64_rows(&store, id, i64::MIN, i64::MAX), want_v);
        assert_eq!(
            f64_rows(&store, id, T0 + 30 * SEC, T0 + 70 * SEC),
            want_v.iter().copied().filter(|(t, _)| (T0 + 30 * SEC..T0 + 70 * SEC).contains(t)).collect::<Vec<_>>()
        );
        let l = store.latest(&[id])[0].clone().unwrap();
        assert_eq!(l.ts, *want.keys().last().unwrap(), "latest is the newest timestamp, not the last write");
        store.close();
    }
    let want_v: Vec<(Timestamp, f64)> = want.iter().map(|(t, v)| (*t, *v)).collect();
    let store = open(dir.path(), &clock);
    assert_eq!(f64_rows(&store, id, i64::MIN, i64::MAX), want_v, "after replay");
    store.flush().unwrap();
    drop(store);
    let store = open(dir.path(), &clock);
    assert_eq!(f64_rows(&store, id, i64::MIN, i64::MAX), want_v, "after sealing everything");
    assert_eq!(store.latest(&[id])[0].clone().unwrap().ts, *want.keys().last().unwrap());
}

// ------------------------------------------------------------------ 5. aggregates

#[test]
fn aggregates_equal_naive_computation_from_raw_data() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0 + DAY);
    let store = open(dir.path(), &clock);
    let f = series(&store, "filler.bowl_pressure", ValueKind::F64);
    let n = series(&store, "filler.bottle_count", ValueKind::I64);
    let b = series(&store, "filler.running", ValueKind::Bool);
    let mut r = rng(5);
    let mut counter = 0i64;
    let mut write_span = |store: &Store, from_s: i64, to_s: i64, r: &mut fastrand::Rng| {
        let mut batch = Vec::new();
        for s in from_s..to_s {
            // Jittered timestamps (sub-second), large offset values to stress the variance.
            let ts = T0 + s * SEC + r.i64(0..SEC / 2);
            let q = match r.u32(0..40) {
                0 => Quality::BAD_COMMS,
                1 => Quality::UNCERTAIN,
                _ => Quality::GOOD,
            };
            let v = if r.u32(0..97) == 0 { f64::NAN } else { 1e6 + r.f64() * 10.0 - 5.0 };
            batch.push(sample(f, ts, Value::F64(v), q));
            counter += r.i64(0..3);
            batch.push(sample(n, ts, Value::I64(counter), Quality::GOOD));
            batch.push(sample(b, ts, Value::Bool(r.bool()), q));
        }
        store.write(batch).unwrap();
    };
    // Minutes 0..4.5 sealed, 4.5..7.25 in a second block, the rest in the head:
    // minutes 4 and 7 straddle a block and the next block / the head.
    write_span(&store, 0, 270, &mut r);
    store.flush().unwrap();
    write_span(&store, 270, 435, &mut r);
    store.flush().unwrap();
    write_span(&store, 435, 600, &mut r);
    // Late data into sealed minutes, and a re-sent sample that overwrites a sealed one.
    write_span(&store, 100, 103, &mut r);
    let sealed = f64_rows(&store, f, T0 + 200 * SEC, T0 + 201 * SEC);
    assert_eq!(sealed.len(), 1);
    store.write(f64s(f, &[(sealed[0].0, -3.0)])).unwrap();
    assert_eq!(store.stats().blocks, 2);
    assert!(store.stats().head_samples > 0);

    for id in [f, n, b] {
        // Rollup path: minute-aligned window and range.
        assert_aggregates_match(&store, id, T0, T0 + 10 * MIN, MIN);
        assert_aggregates_match(&store, id, T0, T0 + 10 * MIN, 5 * MIN);
        assert_aggregates_match(&store, id, T0 + 3 * MIN, T0 + 8 * MIN, 2 * MIN);
        assert_aggregates_match(&store, id, T0 - HOUR, T0 + HOUR, HOUR);
        // Raw path: unaligned window or range.
        assert_aggregates_match(&store, id, T0, T0 + 10 * MIN, 90 * SEC);
        assert_aggregates_match(&store, id, T0 + 17 * SEC, T0 + 10 * MIN, MIN);
        assert_aggregates_match(&store, id, T0 + 17 * SEC, T0 + 9 * MIN + 3 * SEC, 7 * SEC);
    }
    // Strings have no aggregates.
    let s = series(&store, "filler.state", ValueKind::Str);
    store.write(vec![sample(s, T0, Value::Str("running".into()), Quality::GOOD)]).unwrap();
    assert!(store.aggregate(s, T0, T0 + MIN, MIN).unwrap().is_empty());

    // Same answers once everything is sealed and reopened (all from rollups).
    store.flush().unwrap();
    drop(store);
    let store = open(dir.path(), &clock);
    for id in [f, n, b] {
        assert_aggregates_match(&store, id, T0, T0 + 10 * MIN, MIN);
        assert_aggregates_match(&store, id, T0, T0 + 10 * MIN, 90 * SEC);
    }
    let counted: u64 = store
        .aggregate(f, T0, T0 + 10 * MIN, 10 * MIN)
        .unwrap()
        .iter()
        .map(|(_, p): &(Timestamp, Partial)| p.count)
        .sum();
    let raw = store.range(f, T0, T0 + 10 * MIN).unwrap().len() as u64;
    assert_eq!(raw, 603, "600 s at 1 Hz plus 3 late samples");
    assert!(counted > 540 && counted < 603, "bad and NaN samples are left out: {counted} of {raw}");
}

// ------------------------------------------------------------------ 6. retention

#[test]
fn retention_by_age_drops_old_blocks_keeps_rollups_and_head() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0 + 20 * MIN);
    let mut cfg = config(dir.path());
    cfg.retention_raw = HumanDuration(Duration::from_secs(3600));
    cfg.retention_rollup = HumanDuration(Duration::from_secs(30 * 86_400));
    let store = open_with(cfg, clock.clone());
    let id = series(&store, "filler.bowl_pressure", ValueKind::F64);
    let span = |start: i64| -> Vec<(Timestamp, f64)> { (0..600).map(|i| (start + i * SEC, (i % 50) as f64)).collect() };
    store.write(f64s(id, &span(T0))).unwrap();
    store.flush().unwrap();
    let old_aggs = store.aggregate(id, T0, T0 + 10 * MIN, MIN).unwrap();
    assert_eq!(old_aggs.len(), 10);
    store.write(f64s(id, &span(T0 + 2 * HOUR))).unwrap();
    store.flush().unwrap();
    // Head data, older than the raw retention: retention never touches the head.
    store.write(f64s(id, &[(T0 - DAY, 1.0), (T0 + 4 * HOUR, 2.0)])).unwrap();
    assert_eq!(store.stats().blocks, 2, "nothing is old enough yet");

    // Move time on: block 1 (newest sample T0+10min) is older than 1 h, block 2 is not.
    clock.set(T0 + 2 * HOUR + 30 * MIN);
    store.apply_retention().unwrap();
    let st = store.stats();
    assert_eq!((st.blocks, st.rollups), (1, 2), "old raw block gone, both rollups kept");
    assert_eq!(files_in(&dir.path().join("blocks")), vec!["0000000000000002.blk".to_string()]);
    assert!(f64_rows(&store, id, T0, T0 + 10 * MIN).is_empty(), "raw data of the old block is gone");
    assert_eq!(f64_rows(&store, id, T0 + 2 * HOUR, T0 + 3 * HOUR), span(T0 + 2 * HOUR));
    assert_eq!(store.aggregate(id, T0, T0 + 10 * MIN, MIN).unwrap(), old_aggs, "rollups still answer");
    assert_eq!(f64_rows(&store, id, T0 - DAY - 1, T0 - DAY + 1), vec![(T0 - DAY, 1.0)], "head data stays");

    // Far beyond raw retention: every block goes, rollups stay, the head stays.
    clock.set(T0 + 10 * DAY);
    store.apply_retention().unwrap();
    assert_eq!((store.stats().blocks, store.stats().rollups), (0, 2));
    assert_eq!(store.aggregate(id, T0, T0 + 10 * MIN, MIN).unwrap(), old_aggs);
    assert_eq!(f64_rows(&store, id, i64::MIN, i64::MAX), vec![(T0 - DAY, 1.0), (T0 + 4 * HOUR, 2.0)]);

    // Beyond rollup retention too.
    clock.set(T0 + 60 * DAY);
    store.apply_retention().unwrap();
    assert_eq!((store.stats().blocks, store.stats().rollups), (0, 0));
    assert!(store.aggregate(id, T0, T0 + 10 * MIN, MIN).unwrap().is_empty());
    assert_eq!(f64_rows(&store, id, i64::MIN, i64::MAX).len(), 2, "head data is never dropped");
    store.close();
    drop(store);
    let store = open(dir.path(), &clock);
    assert_eq!(
        f64_rows(&store, id, i64::MIN, i64::MAX),
        vec![(T0 - DAY, 1.0), (T0 + 4 * HOUR, 2.0)],
        "head data still in the WAL"
    );
    assert_eq!(store.stats().blocks, 0, "deleted blocks stay deleted");
}

#[test]
fn disk_budget_drops_oldest_blocks_first_and_never_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0 + 4 * HOUR);
    let id;
    let mut spans = Vec::new();
    {
        let store = open(dir.path(), &clock);
        id = series(&store, "filler.bowl_pressure", ValueKind::F64);
        // Blocks sealed out of time order: block 1 holds the newest data,
        // so "oldest" must mean oldest data, not lowest id.
        for start in [T0 + 2 * HOUR, T0, T0 + HOUR] {
            let pts: Vec<(Timestamp, f64)> = (0..300).map(|i| (start + i * SEC, (i * 7 % 13) as f64)).collect();
            store.write(f64s(id, &pts)).unwrap();
            store.flush().unwrap();
            spans.push(pts);
        }
        store.write(f64s(id, &[(T0 - HOUR, 42.0)])).unwrap();
        assert_eq!(store.stats().blocks, 3);
        store.close();
    }
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    let blk = |n: u64| dir.path().join("blocks").join(format!("{n:016}.blk"));
    let rlp = |n: u64| dir.path().join("rollups").join(format!("{n:016}.rlp"));
    let total: u64 = (1..=3).map(|n| size(&blk(n)) + size(&rlp(n))).sum();
    // Budget that fits everything but the block with the oldest data (id 2).
    let mut cfg = config(dir.path());
    cfg.disk_budget = ByteSize(total - size(&blk(2)));
    {
        let store = open_with(cfg.clone(), clock.clone());
        store.apply_retention().unwrap();
        assert_eq!(
            files_in(&dir.path().join("blocks")),
            vec!["0000000000000001.blk".to_string(), "0000000000000003.blk".to_string()],
            "the block with the oldest data goes first"
        );
        assert_eq!(store.stats().rollups, 3);
        assert!(f64_rows(&store, id, T0, T0 + HOUR).is_empty());
        assert_eq!(f64_rows(&store, id, T0 + HOUR, T0 + 2 * HOUR), spans[2]);
        assert_eq!(f64_rows(&store, id, T0 + 2 * HOUR, T0 + 3 * HOUR), spans[0]);
        assert_eq!(f64_rows(&store, id, T0 - HOUR, T0), vec![(T0 - HOUR, 42.0)]);
    }
    // A budget nothing fits in: all sealed files go, the head does not.
    cfg.disk_budget = ByteSize(1);
    let store = open_with(cfg, clock.clone());
    store.apply_retention().unwrap();
    assert_eq!((store.stats().blocks, store.stats().rollups), (0, 0));
    assert_eq!(f64_rows(&store, id, i64::MIN, i64::MAX), vec![(T0 - HOUR, 42.0)]);
}

// ------------------------------------------------------------------ 7. corruption

#[test]
fn corrupt_chunk_is_quarantined_and_the_rest_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0 + DAY);
    let (a, b, c);
    let pts = |start: i64, n: i64, k: f64| -> Vec<(Timestamp, f64)> {
        (0..n).map(|i| (start + i * SEC, k + i as f64)).collect()
    };
    {
        let store = open(dir.path(), &clock);
        a = series(&store, "filler.bowl_pressure", ValueKind::F64);
        b = series(&store, "capper.torque", ValueKind::F64);
        c = series(&store, "labeler.speed", ValueKind::F64);
        // Block 1: a and b. Block 2: b and c. Head: a, b and c.
        store.write(f64s(a, &pts(T0, 60, 0.0))).unwrap();
        store.write(f64s(b, &pts(T0, 60, 100.0))).unwrap();
        store.flush().unwrap();
        store.write(f64s(b, &pts(T0 + MIN, 60, 200.0))).unwrap();
        store.write(f64s(c, &pts(T0 + MIN, 60, 300.0))).unwrap();
        store.flush().unwrap();
        store.write(f64s(a, &pts(T0 + 2 * MIN, 10, 400.0))).unwrap();
        store.write(f64s(b, &pts(T0 + 2 * MIN, 10, 500.0))).unwrap();
        store.write(f64s(c, &pts(T0 + 2 * MIN, 10, 600.0))).unwrap();
        store.close();
    }
    let blk1 = dir.path().join("blocks").join(format!("{:016}.blk", 1));
    let (off, len) = first_chunk(&blk1); // series a's chunk (lowest id first)
    flip_byte(&blk1, off + len / 2);

    // Opening may already find the damage (latest is rebuilt from the newest
    // block of each series) or the first query does; either way no panic.
    let store = open(dir.path(), &clock);
    // A query of the damaged series answers (without the damaged block) and does not panic.
    let got = store.range(a, i64::MIN, i64::MAX);
    match &got {
        Ok(p) => assert_eq!(rows(p).len(), 10, "only the head part of `a` can survive"),
        Err(e) => panic!("a corrupt block must not fail the query of the series: {e}"),
    }
    assert_eq!(store.stats().blocks, 1);
    assert!(store.stats().quarantined >= 1);
    assert!(!blk1.exists());
    let q = files_in(&dir.path().join("quarantine"));
    assert!(q.iter().any(|n| n.starts_with("0000000000000001.blk")), "quarantine holds block 1: {q:?}");
    // Series in the other block and in the head still answer.
    assert_eq!(
        f64_rows(&store, c, i64::MIN, i64::MAX),
        [pts(T0 + MIN, 60, 300.0), pts(T0 + 2 * MIN, 10, 600.0)].concat()
    );
    assert_eq!(
        f64_rows(&store, b, T0 + MIN, i64::MAX),
        [pts(T0 + MIN, 60, 200.0), pts(T0 + 2 * MIN, 10, 500.0)].concat()
    );
    assert_eq!(store.latest(&[a])[0].clone().unwrap().ts, T0 + 2 * MIN + 9 * SEC);
    assert!(store.aggregate(a, T0, T0 + 10 * MIN, 90 * SEC).is_ok());
    assert!(store.aggregate(a, T0, T0 + 10 * MIN, MIN).is_ok());
    // The store keeps working: new data seals into a fresh block.
    store.write(f64s(a, &pts(T0 + 3 * MIN, 5, 700.0))).unwrap();
    assert!(store.flush().unwrap());
    drop(store);
    let store = open(dir.path(), &clock);
    assert_eq!(store.stats().quarantined, 0, "quarantine happened once, not on every open");
    assert_eq!(
        f64_rows(&store, a, i64::MIN, i64::MAX),
        [pts(T0 + 2 * MIN, 10, 400.0), pts(T0 + 3 * MIN, 5, 700.0)].concat()
    );
    assert_eq!(f64_rows(&store, c, i64::MIN, i64::MAX).len(), 70);
}

#[test]
fn block_with_corrupt_footer_is_quarantined_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0 + DAY);
    let (a, b);
    {
        let store = open(dir.path(), &clock);
        a = series(&store, "filler.bowl_pressure", ValueKind::F64);
        b = series(&store, "capper.torque", ValueKind::F64);
        store.write(f64s(a, &[(T0, 1.0), (T0 + SEC, 2.0)])).unwrap();
        store.flush().unwrap();
        store.write(f64s(b, &[(T0, 3.0)])).unwrap();
        store.flush().unwrap();
        store.write(f64s(a, &[(T0 + MIN, 4.0)])).unwrap();
        store.close();
    }
    let blocks = block_files(dir.path());
    assert_eq!(blocks.len(), 2);
    // Damage block 2's footer: its index offset.
    let len = std::fs::metadata(&blocks[1]).unwrap().len();
    flip_byte(&blocks[1], len - 48);
    let store = open(dir.path(), &clock);
    assert_eq!(store.stats().blocks, 1);
    assert_eq!(store.stats().quarantined, 1);
    let q = files_in(&dir.path().join("quarantine"));
    assert!(q.iter().any(|n| n.starts_with("0000000000000002.blk")), "{q:?}");
    assert_eq!(f64_rows(&store, a, i64::MIN, i64::MAX), vec![(T0, 1.0), (T0 + SEC, 2.0), (T0 + MIN, 4.0)]);
    assert!(f64_rows(&store, b, i64::MIN, i64::MAX).is_empty());
    // A new seal must not reuse the quarantined block's id or clobber anything.
    store.write(f64s(b, &[(T0 + 2 * MIN, 5.0)])).unwrap();
    assert!(store.flush().unwrap());
    drop(store);
    let store = open(dir.path(), &clock);
    assert_eq!(store.stats().quarantined, 0);
    assert_eq!(store.stats().blocks, 2);
    assert_eq!(f64_rows(&store, b, i64::MIN, i64::MAX), vec![(T0 + 2 * MIN, 5.0)]);
    assert_eq!(f64_rows(&store, a, i64::MIN, i64::MAX).len(), 3);
}

// ------------------------------------------------------------------ 8. kind conflict

#[test]
fn kind_conflict_rejects_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0 + DAY);
    let store = open(dir.path(), &clock);
    let p = series(&store, "filler.bowl_pressure", ValueKind::F64);
    let c = series(&store, "filler.bottle_count", ValueKind::I64);
    let batch = vec![
        sample(c, T0, Value::I64(1), Quality::GOOD),
        sample(p, T0, Value::F64(2.0), Quality::GOOD),
        sample(p, T0 + SEC, Value::I64(3), Quality::GOOD),
    ];
    let err = store.write(batch).unwrap_err();
    assert!(matches!(err, StoreError::KindMismatch { .. }), "{err}");
    assert!(all(&store, p).is_empty() && all(&store, c).is_empty(), "nothing of the batch is written");
    assert_eq!(store.latest(&[p, c]), vec![None, None]);
    assert_eq!(store.stats().samples_written, 0);
    // An unknown series id is refused as well.
    let err = store
        .write(vec![
            sample(SeriesId(99), T0, Value::F64(1.0), Quality::GOOD),
            sample(p, T0, Value::F64(1.0), Quality::GOOD),
        ])
        .unwrap_err();
    assert!(matches!(err, StoreError::UnknownSeries(99)), "{err}");
    assert!(all(&store, p).is_empty());
    // Re-declaring a series with another kind is refused and creates nothing.
    assert!(store
        .resolve(&[
            (SeriesKey::new("new.one"), ValueKind::F64),
            (SeriesKey::new("filler.bowl_pressure"), ValueKind::I64)
        ])
        .is_err());
    assert_eq!(store.series().len(), 2);
    store.close();
    drop(store);
    let store = open(dir.path(), &clock);
    assert!(all(&store, p).is_empty() && all(&store, c).is_empty(), "nothing in the WAL either");
    assert_eq!(store.series().len(), 2);
}

// ------------------------------------------------------------------ 9. concurrency

#[test]
fn concurrent_writers_and_readers_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0 + DAY);
    let store = Arc::new(open(dir.path(), &clock));
    let ids: Vec<SeriesId> = (0..4).map(|w| series(&store, &format!("line{w}.speed"), ValueKind::F64)).collect();
    const BATCHES: i64 = 150;
    const PER_BATCH: i64 = 20;
    let done = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(w, &id)| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for bn in 0..BATCHES {
                    // Each batch backwards in time, to mix sorting with concurrency.
                    let pts: Vec<(Timestamp, f64)> = (0..PER_BATCH)
                        .rev()
                        .map(|i| {
                            (T0 + (bn * PER_BATCH + i) * SEC, (w * 1_000_000) as f64 + (bn * PER_BATCH + i) as f64)
                        })
                        .collect();
                    store.write(f64s(id, &pts)).unwrap();
                    acked.extend(pts);
                }
                acked.sort_by_key(|p| p.0);
                acked
            })
        })
        .collect();
    let reader = {
        let (store, ids, done) = (store.clone(), ids.clone(), done.clone());
        std::thread::spawn(move || {
            let mut seen = vec![0usize; ids.len()];
            let mut rounds = 0;
            while !done.load(Ordering::SeqCst) {
                for (k, &id) in ids.iter().enumerate() {
                    let p = store.range(id, i64::MIN, i64::MAX).unwrap();
                    assert!(p.ts.windows(2).all(|w| w[0] < w[1]), "sorted and unique while writing");
                    assert!(p.len() >= seen[k], "series {k} lost samples: {} after {}", p.len(), seen[k]);
                    // Whole batches are visible, never half of one.
                    assert_eq!(p.len() % PER_BATCH as usize, 0, "a batch is visible all at once");
                    seen[k] = p.len();
                    let _ = store.latest(&[id]);
                    let _ = store.aggregate(id, T0, T0 + HOUR, MIN).unwrap();
                }
                rounds += 1;
            }
            rounds
        })
    };
    // Seal while writers and the reader run.
    let mut seals = 0;
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(30));
        if store.flush().unwrap() {
            seals += 1;
        }
    }
    let acked: Vec<Vec<(Timestamp, f64)>> = writers.into_iter().map(|h| h.join().unwrap()).collect();
    done.store(true, Ordering::SeqCst);
    let rounds = reader.join().unwrap();
    assert!(rounds > 0);
    eprintln!("concurrency: {seals} seals during writes, {rounds} reader rounds");
    for (k, &id) in ids.iter().enumerate() {
        assert_eq!(acked[k].len(), (BATCHES * PER_BATCH) as usize);
        assert_eq!(f64_rows(&store, id, i64::MIN, i64::MAX), acked[k], "series {k} before reopen");
    }
    assert_eq!(store.stats().samples_written, (4 * BATCHES * PER_BATCH) as u64);
    store.close();
    drop(store);
    let store = open(dir.path(), &clock);
    for (k, &id) in ids.iter().enumerate() {
        assert_eq!(f64_rows(&store, id, i64::MIN, i64::MAX), acked[k], "series {k} after reopen");
    }
}

// ------------------------------------------------------------------ 10. memory

fn vm_hwm_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[test]
fn head_memory_stays_bounded_under_sustained_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    const HEAD_MAX: u64 = 32 << 20;
    cfg.head_max_bytes = Some(ByteSize(HEAD_MAX));
    let mut args = StoreArgs::new(cfg);
    args.clock = TestClock::new(T0 + 2 * HOUR);
    args.background = true;
    let store = Store::open(args).unwrap();
    const SERIES: usize = 1000;
    const SECONDS: i64 = 3600;
    const TS_PER_BATCH: i64 = 10;
    let keys: Vec<(SeriesKey, ValueKind)> =
        (0..SERIES).map(|i| (SeriesKey::new(format!("line.tag{i:04}")), ValueKind::F64)).collect();
    let ids = store.resolve(&keys).unwrap();
    let started = Instant::now();
    let mut max_head = 0u64;
    let mut r = rng(10);
    let mut level: Vec<f64> = (0..SERIES).map(|i| i as f64).collect();
    for s0 in (0..SECONDS).step_by(TS_PER_BATCH as usize) {
        let mut batch = Vec::with_capacity(SERIES * TS_PER_BATCH as usize);
        for s in s0..s0 + TS_PER_BATCH {
            for (i, &id) in ids.iter().enumerate() {
                level[i] += r.f64() - 0.5;
                batch.push(sample(id, T0 + s * SEC, Value::F64((level[i] * 100.0).round() / 100.0), Quality::GOOD));
            }
        }
        store.write(batch).unwrap();
        max_head = max_head.max(store.stats().head_bytes);
    }
    let elapsed = started.elapsed();
    let st = store.stats();
    eprintln!(
        "memory: {} samples in {:.1?}; head max {:.1} MiB (limit {} MiB); blocks {} ({:.1} MiB); VmHWM {:?} KiB",
        st.samples_written,
        elapsed,
        max_head as f64 / (1 << 20) as f64,
        HEAD_MAX >> 20,
        st.blocks,
        st.block_bytes as f64 / (1 << 20) as f64,
        vm_hwm_kib()
    );
    assert_eq!(st.samples_written, SERIES as u64 * SECONDS as u64);
    assert!(st.blocks >= 1, "the head was sealed along the way");
    // Writers are held back while the head (active + the frozen head being
    // sealed) holds 2x head_max_bytes; head bytes count Vec capacity, which
    // grows by doubling, hence the slack. Without that backpressure the head
    // simply holds whatever the sealer has not caught up with (all 3.6 M
    // samples, ~94 MiB, in a debug build).
    assert!(max_head <= 5 * HEAD_MAX / 2, "head grew to {max_head} bytes with a limit of {HEAD_MAX}");
    // Spot check: one series is complete.
    let p = store.range(ids[123], i64::MIN, i64::MAX).unwrap();
    assert_eq!(p.len(), SECONDS as usize);
}
