//! The Numenta Anomaly Benchmark, scored the way NAB scores it.
//!
//! The corpus is NAB's `data/**.csv` (`timestamp,value`), its anomaly windows
//! (`labels/combined_windows.json`) and cost profiles (`config/profiles.json`).
//! The scorer follows NAB's sweeper: the first 15% of each file (at most 750
//! rows) is probation and not scored; inside a window only the best (that is,
//! the earliest) detection counts, worth `tpWeight * S(y) / S(-1)` with
//! `S(y) = 2*sigmoid(-5y) - 1` and `y` the position relative to the window's
//! right end (−1 at the left edge); a detection outside any window costs
//! `fpWeight * S(y)`, `y` being the distance past the previous window's right
//! end in window widths (a full −fpWeight before the first window and from 3
//! widths on); a window without a detection costs `fnWeight`. The corpus
//! total is normalised so the null detector scores 0 and a perfect one 100.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::EvalError;

/// One NAB series with its windows.
#[derive(Clone, Debug)]
pub struct NabFile {
    /// Path relative to `data/`, e.g. `realKnownCause/machine_temperature_system_failure.csv`.
    pub name: String,
    /// Seconds since the epoch, one per row.
    pub ts: Vec<i64>,
    /// The values.
    pub values: Vec<f64>,
    /// Anomaly windows as inclusive row ranges.
    pub windows: Vec<(usize, usize)>,
}

/// One of NAB's cost profiles.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Profile {
    /// `standard`, `reward_low_FP_rate`, `reward_low_FN_rate`.
    pub name: String,
    /// Weight of a true positive.
    pub tp: f64,
    /// Weight of a false positive.
    pub fp: f64,
    /// Weight of a missed window.
    pub fn_: f64,
}

/// The corpus: every series and the profiles.
#[derive(Clone, Debug)]
pub struct NabCorpus {
    /// The series, sorted by name.
    pub files: Vec<NabFile>,
    /// The cost profiles, in NAB's order (standard, low FP, low FN).
    pub profiles: Vec<Profile>,
}

/// The verdict for one profile.
#[derive(Clone, Debug, Serialize)]
pub struct ProfileScore {
    /// Profile name.
    pub profile: String,
    /// Normalised score: 0 null detector, 100 perfect.
    pub score: f64,
    /// Raw (weighted) sum over the corpus.
    pub raw: f64,
    /// Windows with a detection.
    pub tp: usize,
    /// Windows without one.
    pub fn_: usize,
    /// Detections outside every window.
    pub fp: usize,
}

/// Scores of a detector over the corpus, the threshold it was scored at.
#[derive(Clone, Debug, Serialize)]
pub struct NabResult {
    /// Detections are rows whose anomaly score is at least this.
    pub threshold: f64,
    /// Per profile.
    pub profiles: Vec<ProfileScore>,
}

impl NabCorpus {
    /// Loads NAB from its root folder (the one holding `data/`, `labels/`, `config/`).
    pub fn load(root: &Path) -> Result<NabCorpus, EvalError> {
        let windows_path = root.join("labels/combined_windows.json");
        let windows: HashMap<String, Vec<(String, String)>> = read_json(&windows_path)?;
        let profiles_path = root.join("config/profiles.json");
        let raw_profiles: serde_json::Map<String, serde_json::Value> = read_json(&profiles_path)?;
        let mut profiles = Vec::new();
        for name in ["standard", "reward_low_FP_rate", "reward_low_FN_rate"] {
            let m = raw_profiles.get(name).map(|p| &p["CostMatrix"]);
            let w = |k: &str| {
                m.and_then(|m| m[k].as_f64()).ok_or_else(|| EvalError::Data {
                    file: profiles_path.clone(),
                    message: format!("no {name}.CostMatrix.{k}"),
                })
            };
            profiles.push(Profile {
                name: name.to_string(),
                tp: w("tpWeight")?,
                fp: w("fpWeight")?,
                fn_: w("fnWeight")?,
            });
        }
        let mut names: Vec<&String> = windows.keys().collect();
        names.sort();
        let mut files = Vec::with_capacity(names.len());
        for name in names {
            let path = root.join("data").join(name);
            let (ts, values) = read_series(&path)?;
            let mut ranges = Vec::new();
            for (from, to) in &windows[name] {
                let find = |t: &str| {
                    let s = parse_time(t).ok_or_else(|| EvalError::Data {
                        file: windows_path.clone(),
                        message: format!("{name}: bad window time `{t}`"),
                    })?;
                    ts.binary_search(&s).map_err(|_| EvalError::Data {
                        file: windows_path.clone(),
                        message: format!("{name}: window time `{t}` is not a row of the file"),
                    })
                };
                ranges.push((find(from)?, find(to)?));
            }
            files.push(NabFile { name: name.clone(), ts, values, windows: ranges });
        }
        Ok(NabCorpus { files, profiles })
    }

    /// Total number of windows.
    pub fn window_count(&self) -> usize {
        self.files.iter().map(|f| f.windows.len()).sum()
    }

    /// Scores per-row anomaly scores (`scores[i]` belongs to `files[i]`) at `threshold`
    /// under every profile, normalised with the null and the perfect detector.
    pub fn score(&self, scores: &[Vec<f64>], threshold: f64) -> NabResult {
        let profiles = self
            .profiles
            .iter()
            .map(|p| {
                let mut total = Tally::default();
                let (mut null, mut perfect) = (0.0, 0.0);
                for (f, s) in self.files.iter().zip(scores) {
                    let points = sweep(f, s, p);
                    total.add(&tally(&points, threshold, p));
                    null += tally(&points, f64::INFINITY, p).raw;
                    perfect += perfect_raw(&points, p);
                }
                ProfileScore {
                    profile: p.name.clone(),
                    score: 100.0 * (total.raw - null) / (perfect - null),
                    raw: total.raw,
                    tp: total.tp,
                    fn_: total.fn_,
                    fp: total.fp,
                }
            })
            .collect();
        NabResult { threshold, profiles }
    }
}

/// One scorable row (probation excluded).
#[derive(Clone, Copy, Debug)]
struct Point {
    score: f64,
    /// Weighted sweep score of a detection at this row.
    sweep: f64,
    /// Index of the window the row is in.
    window: Option<usize>,
}

/// NAB's scaled sigmoid.
fn scaled_sigmoid(y: f64) -> f64 {
    if y >= 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * y).exp()) - 1.0
    }
}

/// NAB's probation: 15% of the rows, at most 750.
fn probation(rows: usize) -> usize {
    ((0.15 * rows as f64).floor()).min(0.15 * 5000.0) as usize
}

/// The sweep score of every scorable row of `f` (NAB's `calcSweepScore`).
fn sweep(f: &NabFile, scores: &[f64], p: &Profile) -> Vec<Point> {
    let max_tp = scaled_sigmoid(-1.0);
    let skip = probation(f.ts.len());
    let mut out = Vec::with_capacity(f.ts.len().saturating_sub(skip));
    let mut prev: Option<(usize, f64)> = None; // (right index, width) of the last window passed
    let mut w = 0usize;
    for i in 0..f.ts.len() {
        let inside = f.windows.get(w).filter(|&&(l, r)| i >= l && i <= r);
        let (sweep, window) = match inside {
            Some(&(l, r)) => {
                let width = (r - l + 1) as f64;
                let pos = -((r as f64) - i as f64 + 1.0) / width;
                (scaled_sigmoid(pos) * p.tp / max_tp, Some(w))
            }
            None => {
                let pos = match prev {
                    None => 3.0,
                    Some((r, width)) => (r as f64 - i as f64).abs() / (width - 1.0),
                };
                (scaled_sigmoid(pos) * p.fp, None)
            }
        };
        if i >= skip {
            out.push(Point { score: scores.get(i).copied().unwrap_or(0.0), sweep, window });
        }
        if let Some(&(l, r)) = inside {
            if i == r {
                prev = Some((r, (r - l + 1) as f64));
                w += 1;
            }
        }
    }
    out
}

#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    raw: f64,
    tp: usize,
    fn_: usize,
    fp: usize,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.raw += o.raw;
        self.tp += o.tp;
        self.fn_ += o.fn_;
        self.fp += o.fp;
    }
}

/// The file's raw score when rows with `score >= threshold` are detections.
fn tally(points: &[Point], threshold: f64, p: &Profile) -> Tally {
    // Best detection per window; windows that have scorable rows start at a miss.
    let mut best: HashMap<usize, Option<f64>> = HashMap::new();
    let mut t = Tally::default();
    for pt in points {
        if let Some(w) = pt.window {
            let b = best.entry(w).or_insert(None);
            if pt.score >= threshold {
                *b = Some(b.map_or(pt.sweep, |v| v.max(pt.sweep)));
            }
        } else if pt.score >= threshold {
            t.raw += pt.sweep;
            t.fp += 1;
        }
    }
    for b in best.values() {
        match b {
            Some(v) => {
                t.raw += v;
                t.tp += 1;
            }
            None => {
                t.raw -= p.fn_;
                t.fn_ += 1;
            }
        }
    }
    t
}

/// A perfect detector fires once, at the first scorable row of every window.
fn perfect_raw(points: &[Point], p: &Profile) -> f64 {
    let mut seen = std::collections::HashSet::new();
    let mut raw = 0.0;
    for pt in points {
        if let Some(w) = pt.window {
            if seen.insert(w) {
                raw += pt.sweep.max(-p.fn_);
            }
        }
    }
    raw
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::Io { file: path.to_path_buf(), source: e })?;
    serde_json::from_str(&text).map_err(|e| EvalError::Data { file: path.to_path_buf(), message: e.to_string() })
}

/// Reads a `timestamp,value` CSV.
fn read_series(path: &PathBuf) -> Result<(Vec<i64>, Vec<f64>), EvalError> {
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::Io { file: path.clone(), source: e })?;
    let (mut ts, mut values) = (Vec::new(), Vec::new());
    for (n, line) in text.lines().enumerate().skip(1) {
        let bad = |what: &str| EvalError::Data { file: path.clone(), message: format!("line {}: {what}", n + 1) };
        let (t, v) = line.split_once(',').ok_or_else(|| bad("no comma"))?;
        ts.push(parse_time(t).ok_or_else(|| bad("bad timestamp"))?);
        values.push(v.trim().parse::<f64>().map_err(|_| bad("bad value"))?);
    }
    Ok((ts, values))
}

/// `2014-04-10 07:15:00[.ffffff]` (UTC) → seconds since the epoch.
fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, time) = s.split_once(' ')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let time = time.split('.').next()?;
    let mut t = time.split(':').map(|x| x.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    Some(days_from_civil(y, m, day) * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Runs the product's [`SignalDetector`](crate::analytics::detect::SignalDetector) over
/// every series. Per row: the score where an anomaly episode starts (what becomes an
/// anomaly event in the daemon; at least 1.0), 0.0 elsewhere.
pub fn detect_episodes(corpus: &NabCorpus, p: crate::analytics::detect::SignalParams) -> Vec<Vec<f64>> {
    corpus
        .files
        .iter()
        .map(|f| {
            let mut d = crate::analytics::detect::SignalDetector::new(p);
            f.values
                .iter()
                .map(|&x| {
                    let v = d.update(x);
                    if v.start {
                        v.score.max(1.0)
                    } else {
                        0.0
                    }
                })
                .collect()
        })
        .collect()
}

/// A Markdown table of results: one row per result, one column per profile.
pub fn markdown(rows: &[(String, NabResult)]) -> String {
    let mut s = String::from(
        "| detector | standard | reward low FP | reward low FN | windows found | false positives |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for (name, r) in rows {
        let p = |i: usize| r.profiles.get(i).map_or(f64::NAN, |p| p.score);
        let st = &r.profiles[0];
        s.push_str(&format!(
            "| {name} | {:.1} | {:.1} | {:.1} | {}/{} | {} |\n",
            p(0),
            p(1),
            p(2),
            st.tp,
            st.tp + st.fn_,
            st.fp
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(rows: usize, windows: Vec<(usize, usize)>) -> NabFile {
        NabFile {
            name: "t/x.csv".into(),
            ts: (0..rows as i64).map(|i| i * 300).collect(),
            values: vec![0.0; rows],
            windows,
        }
    }

    fn standard() -> Profile {
        Profile { name: "standard".into(), tp: 1.0, fp: 0.11, fn_: 1.0 }
    }

    #[test]
    fn times_parse_to_epoch_seconds() {
        assert_eq!(parse_time("1970-01-01 00:00:00"), Some(0));
        assert_eq!(parse_time("2014-04-10 07:15:00.000000"), Some(1_397_114_100));
        assert_eq!(parse_time("2000-03-01 00:00:01"), Some(951_868_801));
        assert_eq!(parse_time("2014-04-10"), None);
    }

    #[test]
    fn probation_is_15_percent_at_most_750_rows() {
        assert_eq!(probation(1000), 150);
        assert_eq!(probation(4032), 604);
        assert_eq!(probation(22_695), 750);
    }

    #[test]
    fn detections_score_like_nab() {
        // 1000 rows, probation 150, one window 400..=499 (width 100).
        let f = file(1000, vec![(400, 499)]);
        let p = standard();
        let at = |rows: &[usize]| {
            let mut s = vec![0.0; 1000];
            for &r in rows {
                s[r] = 1.0;
            }
            tally(&sweep(&f, &s, &p), 1.0, &p)
        };
        // Left edge: full credit.
        assert!((at(&[400]).raw - 1.0).abs() < 1e-12);
        // Half-way: S(-0.5)/S(-1) (position -(499-450+1)/100 = -0.5).
        let half = (2.0 / (1.0 + (-2.5f64).exp()) - 1.0) / (2.0 / (1.0 + (-5.0f64).exp()) - 1.0);
        assert!((at(&[450]).raw - half).abs() < 1e-12);
        // Only the best detection of a window counts.
        assert!((at(&[450, 400, 480]).raw - 1.0).abs() < 1e-12);
        // Missed window.
        assert_eq!(at(&[]).raw, -1.0);
        // A false positive before the first window costs the full weight; probation is free.
        assert!((at(&[200, 400]).raw - (1.0 - 0.11)).abs() < 1e-12);
        assert!((at(&[100, 400]).raw - 1.0).abs() < 1e-12);
        // Just after the window a false positive costs almost nothing, far after it the full weight.
        let just_after = at(&[400, 500]).raw - 1.0;
        assert!(just_after < 0.0 && just_after > -0.11 * 0.06, "{just_after}");
        assert!((at(&[400, 900]).raw - (1.0 - 0.11)).abs() < 1e-12);
        let t = at(&[200, 400, 900]);
        assert_eq!((t.tp, t.fn_, t.fp), (1, 0, 2));
    }

    #[test]
    fn null_scores_0_and_perfect_100() {
        let corpus = NabCorpus {
            files: vec![file(1000, vec![(400, 499)]), file(2000, vec![(500, 599), (1500, 1599)])],
            profiles: vec![standard(), Profile { name: "low_fn".into(), tp: 1.0, fp: 0.11, fn_: 2.0 }],
        };
        let null: Vec<Vec<f64>> = corpus.files.iter().map(|f| vec![0.0; f.ts.len()]).collect();
        let r = corpus.score(&null, 0.5);
        assert!(r.profiles.iter().all(|p| p.score.abs() < 1e-9), "{r:?}");
        let mut perfect = null.clone();
        for (f, s) in corpus.files.iter().zip(perfect.iter_mut()) {
            for &(l, _) in &f.windows {
                s[l] = 1.0;
            }
        }
        let r = corpus.score(&perfect, 0.5);
        assert!(r.profiles.iter().all(|p| (p.score - 100.0).abs() < 1e-9), "{r:?}");
        // Half the windows found at their left edge: 50 under standard.
        perfect[1] = vec![0.0; 2000];
        perfect[1][500] = 1.0;
        let r = corpus.score(&perfect, 0.5);
        assert!((r.profiles[0].score - 100.0 * 2.0 / 3.0).abs() < 1e-9, "{r:?}");
    }
}
