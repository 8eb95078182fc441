//! The PCA monitor ([`crate::analytics::pca`]) on the Tennessee Eastman
//! Process benchmark (Braatz lab data, `../shared/data/tep`).
//!
//! The model is fitted on `d00.dat` only (normal operation, 500 rows, stored
//! transposed as 52 × 500 — detected and turned). Each test run
//! `dNN_te.dat` (960 rows, 52 variables, fault NN introduced after row 160)
//! is scored row by row. Per run: the false-alarm rate over rows 0..160
//! (before the fault) and the detection rate over rows 160..960, for T²,
//! SPE, either of the two (combined), and combined with the persistence rule
//! (a row counts once it is the k-th or later of a run of exceeding rows).
//! For `d00_te` every row is normal, so its "detection rate" is a false-alarm
//! rate too.

use std::path::{Path, PathBuf};

use crate::analytics::pca::{PcaError, PcaMonitor, PcaParams};

/// Variables of the Tennessee Eastman data files, in column order.
pub const VARIABLES: usize = 52;
/// Rows of a test run before its fault is introduced.
pub const FAULT_ROW: usize = 160;

/// Why the evaluation could not run.
#[derive(Debug, thiserror::Error)]
pub enum TepError {
    /// The data folder is not there.
    #[error("no Tennessee Eastman data in {0} (expected d00.dat and d00_te.dat .. d21_te.dat; pass --data DIR)")]
    Missing(PathBuf),
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A value is not a number.
    #[error("{path}:{line}: `{token}` is not a number")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The text.
        token: String,
    },
    /// The file is not a 52-variable table.
    #[error("{path}: {detail}")]
    Shape {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The model could not be fitted.
    #[error("fitting on d00.dat: {0}")]
    Fit(#[from] PcaError),
}

/// Fractions (0..1) of rows flagged by each statistic.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rates {
    /// Hotelling's T² above its limit.
    pub t2: f64,
    /// SPE above its limit.
    pub spe: f64,
    /// T² or SPE above its limit.
    pub combined: f64,
    /// Combined, counted from the k-th consecutive exceeding row on.
    pub persistent: f64,
}

/// The figures of one test run.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultResult {
    /// Fault number (0: normal operation).
    pub fault: u8,
    /// Flagged fractions of rows 0..160 (before the fault): false alarms.
    pub before: Rates,
    /// Flagged fractions of rows 160..960: detections (false alarms for fault 0).
    pub after: Rates,
    /// Rows from the fault to the first persistent detection (None: never).
    pub delay: Option<usize>,
    /// The variable with the largest summed contribution over the flagged rows
    /// after the fault, and its mean share of the statistic that fired.
    pub top_variable: Option<(usize, f64)>,
}

/// The whole evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct TepReport {
    /// The parameters used.
    pub params: PcaParams,
    /// Training rows (d00.dat).
    pub training_rows: usize,
    /// Retained principal components.
    pub components: usize,
    /// Variance they explain.
    pub explained: f64,
    /// T² limit.
    pub t2_limit: f64,
    /// SPE limit.
    pub spe_limit: f64,
    /// One result per test run, fault 0 first.
    pub faults: Vec<FaultResult>,
    /// Mean time to score one row (the whole evaluation / rows scored).
    pub score_time: std::time::Duration,
}

/// The name of variable `j` (0-based): `XMEAS(1)`..`XMEAS(41)`, `XMV(1)`..`XMV(11)`.
pub fn variable_name(j: usize) -> String {
    if j < 41 {
        format!("XMEAS({})", j + 1)
    } else {
        format!("XMV({})", j - 40)
    }
}

/// Reads a whitespace-separated table of 52 variables; a file stored
/// transposed (52 lines of samples, as `d00.dat`) is turned into rows.
pub fn read_table(path: &Path) -> Result<Vec<Vec<f64>>, TepError> {
    let text = std::fs::read_to_string(path).map_err(|source| TepError::Io { path: path.into(), source })?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let row = line
            .split_whitespace()
            .map(|t| {
                t.parse::<f64>().map_err(|_| TepError::Parse { path: path.into(), line: i + 1, token: t.to_string() })
            })
            .collect::<Result<Vec<f64>, _>>()?;
        if !row.is_empty() {
            rows.push(row);
        }
    }
    let width = rows.first().map_or(0, Vec::len);
    if let Some((i, r)) = rows.iter().enumerate().find(|(_, r)| r.len() != width) {
        return Err(TepError::Shape {
            path: path.into(),
            detail: format!("row {} has {} values, the first has {width}", i + 1, r.len()),
        });
    }
    if width == VARIABLES {
        Ok(rows)
    } else if rows.len() == VARIABLES {
        Ok((0..width).map(|c| rows.iter().map(|r| r[c]).collect()).collect())
    } else {
        Err(TepError::Shape {
            path: path.into(),
            detail: format!("{} × {width} values; neither dimension is {VARIABLES} variables", rows.len()),
        })
    }
}

/// Fits on `d00.dat` in `dir` and scores `d00_te.dat`, `d01_te.dat` .. `d21_te.dat`.
pub fn evaluate(dir: &Path, params: &PcaParams) -> Result<TepReport, TepError> {
    let train_path = dir.join("d00.dat");
    if !train_path.is_file() {
        return Err(TepError::Missing(dir.into()));
    }
    let monitor = PcaMonitor::fit_rows(&read_table(&train_path)?, params)?;
    let mut faults = Vec::new();
    let mut scored = 0u32;
    let mut spent = std::time::Duration::ZERO;
    for fault in 0..=21u8 {
        let path = dir.join(format!("d{fault:02}_te.dat"));
        let rows = read_table(&path)?;
        if rows.len() <= FAULT_ROW {
            return Err(TepError::Shape {
                path,
                detail: format!("{} rows; a test run has more than {FAULT_ROW}", rows.len()),
            });
        }
        let t0 = std::time::Instant::now();
        faults.push(score_run(&monitor, fault, &rows, params.persistence));
        spent += t0.elapsed();
        scored += rows.len() as u32;
    }
    Ok(TepReport {
        params: *params,
        training_rows: monitor.training_rows(),
        components: monitor.components(),
        explained: monitor.explained(),
        t2_limit: monitor.t2_limit(),
        spe_limit: monitor.spe_limit(),
        faults,
        score_time: spent / scored.max(1),
    })
}

fn score_run(monitor: &PcaMonitor, fault: u8, rows: &[Vec<f64>], persistence: usize) -> FaultResult {
    #[derive(Default)]
    struct Count {
        t2: usize,
        spe: usize,
        any: usize,
        persistent: usize,
        rows: usize,
    }
    let (mut before, mut after) = (Count::default(), Count::default());
    let mut run = 0;
    let mut delay = None;
    let mut share = vec![0.0; monitor.columns()];
    let mut row = vec![None; monitor.columns()];
    for (i, values) in rows.iter().enumerate() {
        for (cell, v) in row.iter_mut().zip(values) {
            *cell = Some(*v);
        }
        let s = monitor.score(&row);
        run = if s.flag { run + 1 } else { 0 };
        let persistent = run >= persistence;
        let c = if i < FAULT_ROW { &mut before } else { &mut after };
        c.rows += 1;
        c.t2 += s.t2_flag() as usize;
        c.spe += s.spe_flag() as usize;
        c.any += s.flag as usize;
        c.persistent += persistent as usize;
        if i >= FAULT_ROW {
            if persistent && delay.is_none() {
                delay = Some(i - FAULT_ROW);
            }
            for &(j, w) in &s.contributions {
                share[j] += w;
            }
        }
    }
    let rates = |c: &Count| {
        let n = c.rows.max(1) as f64;
        Rates {
            t2: c.t2 as f64 / n,
            spe: c.spe as f64 / n,
            combined: c.any as f64 / n,
            persistent: c.persistent as f64 / n,
        }
    };
    let top_variable = share
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .filter(|(_, &w)| w > 0.0)
        .map(|(j, &w)| (j, w / after.any.max(1) as f64));
    FaultResult { fault, before: rates(&before), after: rates(&after), delay, top_variable }
}

impl TepReport {
    /// The per-fault table in Markdown (rates in percent).
    pub fn to_markdown(&self) -> String {
        let k = self.params.persistence;
        let mut s = format!(
            "PCA on d00.dat ({} rows, 52 variables): {} components ({:.1} % of the variance, rule: smallest number \
             reaching {:.0} %), limits at {:.0} % confidence: T² {:.2} (F), SPE {:.2} (Jackson–Mudholkar); \
             persistence k = {k}.\n\n",
            self.training_rows,
            self.components,
            100.0 * self.explained,
            100.0 * self.params.variance,
            100.0 * self.params.confidence,
            self.t2_limit,
            self.spe_limit,
        );
        s.push_str(&format!(
            "| fault | FAR T² | FAR SPE | FAR comb. | FAR k={k} | DR T² | DR SPE | DR comb. | DR k={k} | delay k={k} \
             | top variable (mean share) |\n"
        ));
        s.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---|\n");
        let pct = |x: f64| format!("{:.1}", 100.0 * x);
        for f in &self.faults {
            let top = match (f.fault, f.top_variable) {
                (0, _) | (_, None) => "–".to_string(),
                (_, Some((j, w))) => format!("{} ({:.0} %)", variable_name(j), 100.0 * w),
            };
            let delay = match (f.fault, f.delay) {
                (0, _) => "–".to_string(),
                (_, Some(d)) => format!("{d}"),
                (_, None) => "never".to_string(),
            };
            let name = if f.fault == 0 { "0 (normal)*".to_string() } else { f.fault.to_string() };
            s.push_str(&format!(
                "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {delay} | {top} |\n",
                pct(f.before.t2),
                pct(f.before.spe),
                pct(f.before.combined),
                pct(f.before.persistent),
                pct(f.after.t2),
                pct(f.after.spe),
                pct(f.after.combined),
                pct(f.after.persistent),
            ));
        }
        let n = self.faults.len().max(1) as f64;
        let mean = |g: fn(&FaultResult) -> f64| pct(self.faults.iter().map(g).sum::<f64>() / n);
        s.push_str(&format!(
            "| mean FAR, all 22 runs (rows 0..160) | {} | {} | {} | {} | | | | | | |\n",
            mean(|f| f.before.t2),
            mean(|f| f.before.spe),
            mean(|f| f.before.combined),
            mean(|f| f.before.persistent),
        ));
        s.push_str(
            "\nFAR: % of rows 0..160 (before the fault) flagged. DR: % of rows 160..960 flagged. \
             *For fault 0 (normal operation) the DR columns are false alarms over rows 160..960. \
             Delay: rows (3 min each) from the fault to the first persistent detection. \
             Top variable: largest contribution summed over the flagged rows after the fault.\n",
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transposed_table_is_turned_and_a_bad_one_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        // 52 lines of 3 samples: 3 rows of 52 variables.
        let text: String = (0..52).map(|v| format!("{v}.0 {v}.5 1e1\n")).collect();
        let p = dir.path().join("t.dat");
        std::fs::write(&p, text).expect("write");
        let rows = read_table(&p).expect("read");
        assert_eq!((rows.len(), rows[0].len()), (3, 52));
        assert_eq!((rows[1][7], rows[2][51]), (7.5, 10.0));

        let q = dir.path().join("bad.dat");
        std::fs::write(&q, "1 2 3\n4 x 6\n").expect("write");
        let e = read_table(&q).unwrap_err().to_string();
        assert!(e.ends_with("bad.dat:2: `x` is not a number"), "{e}");
        std::fs::write(&q, "1 2 3\n4 5 6\n").expect("write");
        let e = read_table(&q).unwrap_err().to_string();
        assert!(e.contains("neither dimension is 52"), "{e}");
        let e = evaluate(dir.path(), &PcaParams::default()).unwrap_err().to_string();
        assert!(e.starts_with("no Tennessee Eastman data in "), "{e}");
    }

    #[test]
    fn variable_names_follow_the_benchmark() {
        assert_eq!(variable_name(0), "XMEAS(1)");
        assert_eq!(variable_name(40), "XMEAS(41)");
        assert_eq!(variable_name(41), "XMV(1)");
        assert_eq!(variable_name(51), "XMV(11)");
    }

    /// The real benchmark, when `../shared/data/tep` is there.
    #[test]
    fn tennessee_eastman_figures_are_sane() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/tep");
        if !dir.join("d00.dat").is_file() {
            println!("SKIPPED: no Tennessee Eastman data at {} (see ../shared/data/README.md)", dir.display());
            return;
        }
        let r = evaluate(&dir, &PcaParams::default()).expect("evaluation");
        println!("{}", r.to_markdown());
        println!("scoring one row: {:?}", r.score_time);
        assert_eq!(r.training_rows, 500);
        assert_eq!(r.faults.len(), 22);
        let f = |n: usize| &r.faults[n];
        // Normal operation: few false alarms per row from T², and from the
        // combined chart once the persistence rule holds (the single-row SPE
        // limit is tight on a new run: see docs/EVALUATION.md).
        let normal = f(0);
        assert!(normal.before.t2 < 0.05 && normal.after.t2 < 0.05, "{normal:?}");
        assert!(normal.before.persistent < 0.05 && normal.after.persistent < 0.05, "{normal:?}");
        let mean_far = r.faults.iter().map(|f| f.before.persistent).sum::<f64>() / 22.0;
        assert!(mean_far < 0.03, "mean FAR over the 22 runs {mean_far}");
        // The step faults everybody detects.
        for n in [1, 2, 6, 7] {
            assert!(f(n).after.combined > 0.9 && f(n).after.persistent > 0.9, "fault {n}: {:?}", f(n));
        }
        assert!(f(4).after.spe > 0.9, "fault 4: {:?}", f(4));
        // The three nobody detects with PCA: at the level of the false alarms.
        for n in [3, 9, 15] {
            let d = &f(n).after;
            assert!(d.t2 < 0.15 && d.persistent < 0.15, "fault {n}: {:?}", f(n));
            assert!(d.combined < normal.after.combined + 0.10, "fault {n}: {:?}", f(n));
        }
        // Fault 4 (reactor cooling water inlet temperature step) shows in the
        // cooling water flow the controller moves: XMV(10).
        assert_eq!(f(4).top_variable.map(|t| variable_name(t.0)), Some("XMV(10)".into()), "{:?}", f(4));
    }
}
