//! The RUL estimator ([`crate::analytics::rul`]) on NASA's C-MAPSS turbofan
//! data (Saxena et al., PHM08; `../shared/data/cmapss`).
//!
//! A file holds whitespace-separated rows: unit, cycle, 3 operational
//! settings, 21 sensors. Training units run to failure; test units stop
//! earlier and the RUL file gives, one per line in unit order, the cycles
//! each test unit still had after its last row. The model is fitted on the
//! training units only (the settings are its operating-condition columns,
//! the sensors its inputs) and predicts each test unit from its whole
//! trajectory. Figures, with `d = predicted − true`:
//! RMSE, MAE, the PHM08 score `Σ exp(−d/13) − 1 (d < 0), exp(d/10) − 1 (d ≥ 0)`
//! (late predictions cost more), and the share of units whose true RUL lies
//! in the predicted band.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::EvalError;
use crate::analytics::rul::{CvFigures, Ensemble, RulEstimate, RulModel, RulParams};

/// Columns of a C-MAPSS row.
pub const COLUMNS: usize = 26;

/// One engine: its unit number and one row of 24 values (3 settings, 21 sensors) per cycle.
#[derive(Clone, Debug, PartialEq)]
pub struct Engine {
    /// Unit number as in the file.
    pub unit: u32,
    /// Per cycle, in order from cycle 1: settings 1-3, sensors 1-21.
    pub rows: Vec<Vec<f64>>,
}

/// Names of the 24 value columns: `setting1..3`, `sensor1..21`.
pub fn feature_names() -> Vec<String> {
    (1..=3).map(|i| format!("setting{i}")).chain((1..=21).map(|i| format!("sensor{i}"))).collect()
}

/// The operating-condition columns.
pub fn condition_names() -> Vec<String> {
    (1..=3).map(|i| format!("setting{i}")).collect()
}

/// Reads a C-MAPSS trajectory file; a malformed row is reported with its file and line.
pub fn read_engines(path: &Path) -> Result<Vec<Engine>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|source| EvalError::Io { file: path.to_path_buf(), source })?;
    let mut engines: Vec<Engine> = Vec::new();
    let bad = |line: usize, message: String| EvalError::Line { file: path.to_path_buf(), line, message };
    for (i, line) in text.lines().enumerate() {
        let ln = i + 1;
        let tokens: Vec<&str> = line.split_whitespace().collect();
        if tokens.is_empty() {
            continue;
        }
        if tokens.len() != COLUMNS {
            return Err(bad(
                ln,
                format!("{} columns, expected {COLUMNS} (unit, cycle, 3 settings, 21 sensors)", tokens.len()),
            ));
        }
        let unit: u32 =
            tokens[0].parse().map_err(|_| bad(ln, format!("unit `{}` is not a whole number", tokens[0])))?;
        let cycle: u32 =
            tokens[1].parse().map_err(|_| bad(ln, format!("cycle `{}` is not a whole number", tokens[1])))?;
        let mut row = Vec::with_capacity(COLUMNS - 2);
        for (c, tok) in tokens[2..].iter().enumerate() {
            match tok.parse::<f64>() {
                Ok(v) if v.is_finite() => row.push(v),
                _ => return Err(bad(ln, format!("column {} `{tok}` is not a finite number", c + 3))),
            }
        }
        match engines.last_mut() {
            Some(e) if e.unit == unit => {
                let expected = e.rows.len() as u32 + 1;
                if cycle != expected {
                    return Err(bad(ln, format!("unit {unit}: cycle {cycle}, expected {expected}")));
                }
                e.rows.push(row);
            }
            _ => {
                if engines.iter().any(|e| e.unit == unit) {
                    return Err(bad(ln, format!("unit {unit} appears again after other units")));
                }
                if cycle != 1 {
                    return Err(bad(ln, format!("unit {unit} starts at cycle {cycle}, expected 1")));
                }
                engines.push(Engine { unit, rows: vec![row] });
            }
        }
    }
    if engines.is_empty() {
        return Err(EvalError::Data { file: path.to_path_buf(), message: "no rows".to_string() });
    }
    Ok(engines)
}

/// Reads the true RULs, one number per line.
pub fn read_rul(path: &Path) -> Result<Vec<f64>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|source| EvalError::Io { file: path.to_path_buf(), source })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        match t.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => out.push(v),
            _ => {
                return Err(EvalError::Line {
                    file: path.to_path_buf(),
                    line: i + 1,
                    message: format!("`{t}` is not a non-negative number of cycles"),
                })
            }
        }
    }
    Ok(out)
}

/// The PHM08 score of one error `d = predicted − true`.
pub fn phm_score(d: f64) -> f64 {
    if d < 0.0 {
        (-d / 13.0).exp() - 1.0
    } else {
        (d / 10.0).exp() - 1.0
    }
}

/// The figures of one evaluation.
#[derive(Clone, Debug)]
pub struct CmapssReport {
    /// The files.
    pub train: PathBuf,
    /// Test trajectories.
    pub test: PathBuf,
    /// True RULs.
    pub rul: PathBuf,
    /// Training units and rows.
    pub train_units: usize,
    /// Training rows.
    pub train_rows: usize,
    /// Inputs the model kept.
    pub inputs: Vec<String>,
    /// Operating regimes found.
    pub regimes: usize,
    /// Parameters.
    pub params: RulParams,
    /// Per test unit: unit, true RUL, estimate.
    pub units: Vec<(u32, f64, RulEstimate)>,
    /// Root-mean-square error.
    pub rmse: f64,
    /// Mean absolute error.
    pub mae: f64,
    /// PHM08 score (sum over units).
    pub score: f64,
    /// Share of units whose true RUL is inside the band.
    pub coverage: f64,
    /// Cross-validated figures over the training units.
    pub cv: Option<CvFigures>,
    /// Time to fit the model.
    pub fit_time: Duration,
    /// Time to fit the band's fold models.
    pub band_time: Duration,
}

/// Fits on `train`, predicts every unit of `test`, compares with `rul`.
pub fn evaluate(train: &Path, test: &Path, rul: &Path, params: &RulParams) -> Result<CmapssReport, EvalError> {
    let train_engines = read_engines(train)?;
    let test_engines = read_engines(test)?;
    let truth = read_rul(rul)?;
    if truth.len() != test_engines.len() {
        return Err(EvalError::Data {
            file: rul.to_path_buf(),
            message: format!("{} values for {} test units in {}", truth.len(), test_engines.len(), test.display()),
        });
    }
    let runs: Vec<Vec<Vec<f64>>> = train_engines.iter().map(|e| e.rows.clone()).collect();
    let model = RulModel::fit(&feature_names(), &condition_names(), &runs, params)?;
    let mut units = Vec::with_capacity(test_engines.len());
    let (mut se, mut ae, mut score, mut inside) = (0.0, 0.0, 0.0, 0usize);
    for (e, &t) in test_engines.iter().zip(&truth) {
        let est = model.predict(&e.rows)?;
        let d = est.rul - t;
        se += d * d;
        ae += d.abs();
        score += phm_score(d);
        inside += usize::from(t >= est.low && t <= est.high);
        units.push((e.unit, t, est));
    }
    let n = units.len().max(1) as f64;
    Ok(CmapssReport {
        train: train.to_path_buf(),
        test: test.to_path_buf(),
        rul: rul.to_path_buf(),
        train_units: train_engines.len(),
        train_rows: runs.iter().map(Vec::len).sum(),
        inputs: model.inputs().iter().map(|s| s.to_string()).collect(),
        regimes: model.regime_count(),
        params: params.clone(),
        units,
        rmse: (se / n).sqrt(),
        mae: ae / n,
        score,
        coverage: inside as f64 / n,
        cv: model.cv(),
        fit_time: model.fit_time(),
        band_time: model.band_time(),
    })
}

impl CmapssReport {
    /// The report as Markdown.
    pub fn to_markdown(&self) -> String {
        let p = &self.params;
        let mut s = String::new();
        let _ = writeln!(s, "## Remaining useful life: {}\n", self.test.display());
        let _ = writeln!(
            s,
            "Trained on {} ({} units, {} rows); {} test units. Inputs kept ({}): {}. Operating regimes: {}.\n",
            self.train.display(),
            self.train_units,
            self.train_rows,
            self.units.len(),
            self.inputs.len(),
            self.inputs.join(", "),
            self.regimes
        );
        let kind = match p.ensemble {
            Ensemble::Boosted => format!(
                "boosted trees: {} trees, depth {}, learning rate {}, subsample {}, colsample {}, min leaf {}",
                p.trees, p.depth, p.learning_rate, p.subsample, p.colsample, p.min_leaf
            ),
            Ensemble::Forest => format!(
                "random forest: {} trees, depth {}, subsample {}, features per split {}, min leaf {}",
                p.trees, p.depth, p.subsample, p.colsample, p.min_leaf
            ),
        };
        let _ = writeln!(s, "Model: {kind}; target capped at {} cycles.\n", p.cap);
        let band = format!("{:.0}-{:.0} %", p.band.0 * 100.0, p.band.1 * 100.0);
        let _ = writeln!(s, "| model | RMSE | PHM08 score | MAE | band {band} coverage | fit time | band fit time |");
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
        let _ = writeln!(
            s,
            "| linepilot RUL | {:.2} | {:.1} | {:.2} | {:.2} | {:.2} s | {:.2} s |",
            self.rmse,
            self.score,
            self.mae,
            self.coverage,
            self.fit_time.as_secs_f64(),
            self.band_time.as_secs_f64()
        );
        if let Some(cv) = self.cv {
            let _ = writeln!(
                s,
                "\nCross-validation over the training units ({} folds by unit): RMSE {:.2} against the capped target \
                 (all cycles), {:.2} against the true RUL where it is at most {}; band coverage {:.2}.",
                p.band_folds, cv.rmse_capped, cv.rmse_late, p.cap, cv.coverage
            );
        }
        let mean_width =
            self.units.iter().map(|(_, _, e)| e.high - e.low).sum::<f64>() / self.units.len().max(1) as f64;
        let _ = writeln!(s, "\nMean band width: {mean_width:.1} cycles.");
        s
    }

    /// Per-unit lines (unit, true, predicted, band).
    pub fn units_markdown(&self) -> String {
        let mut s = String::from("| unit | true RUL | predicted | band |\n|---:|---:|---:|---|\n");
        for (u, t, e) in &self.units {
            let _ = writeln!(s, "| {u} | {t:.0} | {:.1} | {:.0}-{:.0} |", e.rul, e.low, e.high);
        }
        s
    }
}

/// Hyperparameter candidates compared by cross-validation over the training units
/// (the table in docs/EVALUATION.md; [`RulParams::default`] is the one picked).
pub fn tuning_grid() -> Vec<RulParams> {
    let d = RulParams { min_leaf: 20, ..RulParams::default() };
    let mut grid = Vec::new();
    for &(trees, learning_rate) in &[(150, 0.1), (300, 0.05), (600, 0.025)] {
        for depth in [4, 5, 6] {
            grid.push(RulParams { trees, learning_rate, depth, ..d.clone() });
        }
    }
    grid.push(RulParams { subsample: 0.8, colsample: 1.0, ..d.clone() });
    grid.push(RulParams { min_leaf: 50, ..d.clone() });
    grid.push(RulParams { cap: 130.0, ..d.clone() });
    grid.push(RulParams { cap: 120.0, ..d.clone() });
    for depth in [8, 12] {
        grid.push(RulParams {
            ensemble: Ensemble::Forest,
            trees: 150,
            depth,
            subsample: 0.632,
            colsample: 0.33,
            min_leaf: 5,
            ..d.clone()
        });
    }
    grid
}

/// Cross-validates every candidate on the training file only: (params, figures, fit + band time).
pub fn tune(train: &Path, grid: &[RulParams]) -> Result<Vec<(RulParams, CvFigures, Duration)>, EvalError> {
    let engines = read_engines(train)?;
    let runs: Vec<Vec<Vec<f64>>> = engines.into_iter().map(|e| e.rows).collect();
    let mut out = Vec::new();
    for p in grid {
        let p = RulParams { band_folds: p.band_folds.max(2), ..p.clone() };
        let m = RulModel::fit(&feature_names(), &condition_names(), &runs, &p)?;
        if let Some(cv) = m.cv() {
            tracing::info!(rmse = cv.rmse_capped, "Candidate cross-validated");
            out.push((p, cv, m.fit_time() + m.band_time()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_row_names_file_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("train_X.txt");
        let good = "1 1 0 0 100 518.67 641.82 1589.70 1400.60 14.62 21.61 554.36 2388.06 9046.19 1.30 47.47 521.66 2388.02 8138.62 8.4195 0.03 392 2388 100.00 39.06 23.4190\n";
        let bad_num = good.replacen("1589.70", "15x9.70", 1).replacen("1 1 ", "1 2 ", 1);
        std::fs::write(&f, format!("{good}{bad_num}")).expect("write");
        let e = read_engines(&f).expect_err("bad number").to_string();
        assert!(e.contains("train_X.txt:2:") && e.contains("15x9.70"), "{e}");

        std::fs::write(&f, format!("{good}1 2 0 0\n")).expect("write");
        let e = read_engines(&f).expect_err("short row").to_string();
        assert!(e.contains("train_X.txt:2:") && e.contains("4 columns"), "{e}");

        std::fs::write(&f, format!("{good}{}", good.replacen("1 1 ", "1 3 ", 1))).expect("write");
        let e = read_engines(&f).expect_err("gap").to_string();
        assert!(e.contains(":2:") && e.contains("cycle 3, expected 2"), "{e}");

        let r = dir.path().join("RUL_X.txt");
        std::fs::write(&r, "112\n-3\n").expect("write");
        let e = read_rul(&r).expect_err("negative").to_string();
        assert!(e.contains("RUL_X.txt:2:"), "{e}");
    }

    #[test]
    fn phm_score_punishes_late_more_than_early() {
        assert_eq!(phm_score(0.0), 0.0);
        assert!((phm_score(10.0) - (1f64.exp() - 1.0)).abs() < 1e-12);
        assert!((phm_score(-13.0) - (1f64.exp() - 1.0)).abs() < 1e-12);
        assert!(phm_score(20.0) > phm_score(-20.0));
    }
}
