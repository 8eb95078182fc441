//! Remaining useful life (RUL) from run-to-failure histories.
//!
//! [`RulModel::fit`] learns from trajectories that end in failure (one row per
//! cycle, one column per named numeric feature) and [`RulModel::predict`]
//! estimates, for a trajectory observed so far, how many cycles are left, with
//! an uncertainty band.
//!
//! The method, in order:
//! - **Target**: piecewise linear, `min(cap, cycles to failure)` (cap 125 by
//!   default): early in life the data cannot tell 300 cycles from 200, so the
//!   model is not asked to.
//! - **Operating conditions**: columns named as conditions (e.g. altitude,
//!   Mach, throttle) are not inputs; they are clustered (k-means, the smallest
//!   k up to `max_regimes` whose clusters explain 99 % of their variance, else
//!   one regime) and every other column is standardised per regime.
//! - **Dropped columns**: a column with fewer than `min_distinct` distinct
//!   values within every regime, or no variance, carries no trend and is left out.
//! - **Features per cycle** from each kept column's trailing window: the last
//!   value, the means over the last 5, 10 and 30 cycles and the least-squares
//!   slopes over the last 10 and 30 (shorter at the start of a trajectory),
//!   plus the number of cycles seen.
//! - **Regressor**: an ensemble of regression trees on histogram-binned
//!   features (up to 64 bins per feature, splits found on the histograms with
//!   the smaller-child-then-subtract trick): gradient boosting on squared error
//!   with shrinkage, row and column subsampling, or a random forest.
//! - **Band**: the training runs are split into `band_folds` folds by run; a
//!   model fitted without a fold predicts every cycle of that fold's runs. The
//!   residuals (true, uncapped cycles to failure minus prediction) are grouped
//!   into five bins of predicted RUL, and their `band` quantiles give the band
//!   around a new prediction in the same bin. The same out-of-fold predictions
//!   give the cross-validated RMSE ([`RulModel::cv`]) used to choose
//!   hyperparameters without a test set.
//!
//! Everything is deterministic: the only randomness is a seeded SplitMix64.

use std::time::{Duration, Instant};

/// Trailing windows (cycles) of the mean features.
const MEAN_WINDOWS: [usize; 3] = [5, 10, 30];
/// Trailing windows (cycles) of the slope features.
const SLOPE_WINDOWS: [usize; 2] = [10, 30];
/// Features per kept column.
const PER_COLUMN: usize = 1 + MEAN_WINDOWS.len() + SLOPE_WINDOWS.len();
/// Bins of predicted RUL the band's residual quantiles are kept for.
const BAND_BINS: usize = 5;
/// A band bin with fewer residuals than this uses all residuals.
const BAND_MIN_RESIDUALS: usize = 50;

/// Why a model could not be fitted or used.
#[derive(Debug, thiserror::Error)]
pub enum RulError {
    /// Nothing to fit on.
    #[error("no run-to-failure trajectories to fit on (need at least 2 runs with rows)")]
    NoRuns,
    /// A row has the wrong number of values.
    #[error("run {run}, row {row}: {got} values, expected {expected} (one per feature name)")]
    Width {
        /// Run index (0-based).
        run: usize,
        /// Row index (0-based).
        row: usize,
        /// Number of feature names.
        expected: usize,
        /// Values in the row.
        got: usize,
    },
    /// A value is NaN or infinite.
    #[error("run {run}, row {row}: `{feature}` is not a finite number")]
    NotFinite {
        /// Run index (0-based).
        run: usize,
        /// Row index (0-based).
        row: usize,
        /// Feature name.
        feature: String,
    },
    /// A condition name is not a feature name.
    #[error("operating-condition feature `{0}` is not among the feature names")]
    UnknownCondition(String),
    /// Every input is constant.
    #[error("no feature varies in the training runs (all constant or near-constant)")]
    NoUsableFeatures,
    /// The parameters make no sense.
    #[error("invalid parameters: {0}")]
    Params(String),
    /// Nothing observed yet.
    #[error("the trajectory has no rows")]
    EmptyTrajectory,
    /// A trajectory row has the wrong number of values.
    #[error("trajectory row {row}: {got} values, the model expects {expected}")]
    TrajectoryWidth {
        /// Row index (0-based).
        row: usize,
        /// Feature names the model was fitted with.
        expected: usize,
        /// Values in the row.
        got: usize,
    },
}

/// Which tree ensemble.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ensemble {
    /// Gradient boosting on squared error: each tree fits the residuals so far, shrunk by the learning rate.
    Boosted,
    /// Random forest: each tree fits the target on a row subsample, splits on a column subsample; mean of the trees.
    Forest,
}

/// How the model is fitted.
#[derive(Clone, Debug, PartialEq)]
pub struct RulParams {
    /// Cap of the piecewise-linear target, in cycles.
    pub cap: f64,
    /// Boosting or forest.
    pub ensemble: Ensemble,
    /// Number of trees.
    pub trees: usize,
    /// Maximum depth of a tree.
    pub depth: usize,
    /// Shrinkage of each boosted tree (ignored by the forest).
    pub learning_rate: f64,
    /// Fraction of the rows each tree sees (sampled without replacement).
    pub subsample: f64,
    /// Fraction of the features each tree (boosting) or each split (forest) may use.
    pub colsample: f64,
    /// Fewest rows in a leaf.
    pub min_leaf: usize,
    /// L2 penalty on leaf values (boosting).
    pub lambda: f64,
    /// Histogram bins per feature (2..=256).
    pub bins: usize,
    /// Folds (by run) for the uncertainty band and the cross-validated RMSE; 0 or 1: no band.
    pub band_folds: usize,
    /// Lower and upper residual quantiles of the band.
    pub band: (f64, f64),
    /// A column with fewer distinct values than this in every regime is dropped.
    pub min_distinct: usize,
    /// Most operating regimes looked for among the condition columns.
    pub max_regimes: usize,
    /// Seed of the row/column sampling and the fold split.
    pub seed: u64,
}

impl Default for RulParams {
    /// The values chosen by cross-validation over the C-MAPSS FD001 training
    /// engines (docs/EVALUATION.md).
    fn default() -> Self {
        RulParams {
            cap: 125.0,
            ensemble: Ensemble::Boosted,
            trees: 300,
            depth: 5,
            learning_rate: 0.05,
            subsample: 0.5,
            colsample: 0.5,
            min_leaf: 50,
            lambda: 1.0,
            bins: 64,
            band_folds: 5,
            band: (0.05, 0.95),
            min_distinct: 3,
            max_regimes: 8,
            seed: 0x5eed_c0de,
        }
    }
}

/// An estimate for a trajectory so far.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RulEstimate {
    /// Predicted cycles left (0..=cap).
    pub rul: f64,
    /// Lower end of the band (≥ 0).
    pub low: f64,
    /// Upper end of the band.
    pub high: f64,
}

/// Cross-validated figures of a fit (out-of-fold predictions over the training runs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CvFigures {
    /// RMSE against the capped target over every cycle of every run.
    pub rmse_capped: f64,
    /// RMSE against the true cycles to failure over the cycles where that is at most the cap.
    pub rmse_late: f64,
    /// Share of cycles whose true cycles to failure lies in the band (in-sample for the band itself).
    pub coverage: f64,
}

/// A fitted estimator.
#[derive(Clone, Debug)]
pub struct RulModel {
    names: Vec<String>,
    params: RulParams,
    regimes: Regimes,
    /// Indices (into `names`) of the input columns kept.
    inputs: Vec<usize>,
    /// Per regime, per kept input: mean and standard deviation.
    mean: Vec<Vec<f64>>,
    sd: Vec<Vec<f64>>,
    forest: Trees,
    /// Per band bin: lower and upper residual quantile.
    band_lo: [f64; BAND_BINS],
    band_hi: [f64; BAND_BINS],
    cv: Option<CvFigures>,
    fit_time: Duration,
    band_time: Duration,
}

impl RulModel {
    /// Fits on run-to-failure trajectories: `runs[r][t][j]` is feature `names[j]`
    /// at cycle `t` of run `r`, the last row of each run being the cycle of
    /// failure (0 cycles left). `conditions` names the operating-condition columns.
    pub fn fit(
        names: &[String],
        conditions: &[String],
        runs: &[Vec<Vec<f64>>],
        params: &RulParams,
    ) -> Result<RulModel, RulError> {
        check_params(params)?;
        let runs: Vec<&Vec<Vec<f64>>> = runs.iter().filter(|r| !r.is_empty()).collect();
        if runs.len() < 2 {
            return Err(RulError::NoRuns);
        }
        for (r, run) in runs.iter().enumerate() {
            for (t, row) in run.iter().enumerate() {
                if row.len() != names.len() {
                    return Err(RulError::Width { run: r, row: t, expected: names.len(), got: row.len() });
                }
                if let Some(j) = row.iter().position(|v| !v.is_finite()) {
                    return Err(RulError::NotFinite { run: r, row: t, feature: names[j].clone() });
                }
            }
        }
        let mut cond_cols = Vec::new();
        for c in conditions {
            let j = names.iter().position(|n| n == c).ok_or_else(|| RulError::UnknownCondition(c.clone()))?;
            cond_cols.push(j);
        }
        let t0 = Instant::now();
        let all_rows: Vec<&Vec<f64>> = runs.iter().flat_map(|r| r.iter()).collect();
        let regimes = Regimes::fit(&all_rows, &cond_cols, params.max_regimes);
        let row_regime: Vec<usize> = all_rows.iter().map(|r| regimes.assign(r)).collect();
        let (inputs, mean, sd) =
            standardisation(&all_rows, &row_regime, &cond_cols, names.len(), regimes.count(), params);
        if inputs.is_empty() {
            return Err(RulError::NoUsableFeatures);
        }
        let mut model = RulModel {
            names: names.to_vec(),
            params: params.clone(),
            regimes,
            inputs,
            mean,
            sd,
            forest: Trees { base: 0.0, trees: Vec::new() },
            band_lo: [0.0; BAND_BINS],
            band_hi: [0.0; BAND_BINS],
            cv: None,
            fit_time: Duration::ZERO,
            band_time: Duration::ZERO,
        };
        // Feature rows of every cycle, targets, and the run each row belongs to.
        let width = model.feature_count();
        let mut x = Vec::with_capacity(all_rows.len() * width);
        let (mut y, mut y_true, mut run_of) = (Vec::new(), Vec::new(), Vec::new());
        for (r, run) in runs.iter().enumerate() {
            model.features_into(run, &mut x);
            let n = run.len();
            for t in 0..n {
                let left = (n - 1 - t) as f64;
                y.push(left.min(params.cap));
                y_true.push(left);
                run_of.push(r);
            }
        }
        let binned = Binned::new(&x, width, params.bins);
        let all: Vec<u32> = (0..y.len() as u32).collect();
        let mut rng = SplitMix64(params.seed);
        model.forest = fit_trees(&binned, &all, &y, params, &mut rng);
        model.fit_time = t0.elapsed();
        tracing::debug!(rows = y.len(), features = width, trees = model.forest.trees.len(), "RUL model fitted");

        if params.band_folds >= 2 {
            let t1 = Instant::now();
            let folds = params.band_folds.min(runs.len());
            let mut order: Vec<usize> = (0..runs.len()).collect();
            let mut frng = SplitMix64(params.seed ^ 0xf01d);
            for i in (1..order.len()).rev() {
                order.swap(i, frng.below(i + 1));
            }
            let mut fold_of_run = vec![0; runs.len()];
            for (k, &r) in order.iter().enumerate() {
                fold_of_run[r] = k % folds;
            }
            let mut oof = vec![0.0; y.len()];
            for fold in 0..folds {
                let (held, kept): (Vec<u32>, Vec<u32>) =
                    all.iter().partition(|&&i| fold_of_run[run_of[i as usize]] == fold);
                let trees = fit_trees(&binned, &kept, &y, params, &mut rng);
                for &i in &held {
                    oof[i as usize] = trees.predict_binned(&binned, i as usize).clamp(0.0, params.cap);
                }
            }
            let mut per_bin: Vec<Vec<f64>> = vec![Vec::new(); BAND_BINS];
            for i in 0..y.len() {
                per_bin[band_bin(oof[i], params.cap)].push(y_true[i] - oof[i]);
            }
            let mut everything: Vec<f64> = per_bin.iter().flatten().copied().collect();
            everything.sort_by(f64::total_cmp);
            for (b, res) in per_bin.iter_mut().enumerate() {
                res.sort_by(f64::total_cmp);
                let src = if res.len() >= BAND_MIN_RESIDUALS { &res[..] } else { &everything[..] };
                model.band_lo[b] = quantile(src, params.band.0);
                model.band_hi[b] = quantile(src, params.band.1);
            }
            let (mut se_c, mut se_l, mut n_l, mut inside) = (0.0, 0.0, 0usize, 0usize);
            for i in 0..y.len() {
                se_c += (oof[i] - y[i]).powi(2);
                if y_true[i] <= params.cap {
                    se_l += (oof[i] - y_true[i]).powi(2);
                    n_l += 1;
                }
                let (lo, hi) = model.band_around(oof[i]);
                inside += usize::from(y_true[i] >= lo && y_true[i] <= hi);
            }
            model.cv = Some(CvFigures {
                rmse_capped: (se_c / y.len() as f64).sqrt(),
                rmse_late: if n_l > 0 { (se_l / n_l as f64).sqrt() } else { f64::NAN },
                coverage: inside as f64 / y.len() as f64,
            });
            model.band_time = t1.elapsed();
            tracing::debug!(folds, cv = ?model.cv, "RUL band fitted");
        }
        Ok(model)
    }

    /// Estimates the cycles left after the last row of `trajectory` (rows from the start of life).
    pub fn predict(&self, trajectory: &[Vec<f64>]) -> Result<RulEstimate, RulError> {
        if trajectory.is_empty() {
            return Err(RulError::EmptyTrajectory);
        }
        for (t, row) in trajectory.iter().enumerate() {
            if row.len() != self.names.len() {
                return Err(RulError::TrajectoryWidth { row: t, expected: self.names.len(), got: row.len() });
            }
        }
        let width = self.feature_count();
        let mut x = Vec::with_capacity(trajectory.len() * width);
        self.features_into(trajectory, &mut x);
        let last = &x[x.len() - width..];
        let rul = self.forest.predict_raw(last).clamp(0.0, self.params.cap);
        let (low, high) = self.band_around(rul);
        Ok(RulEstimate { rul, low, high })
    }

    /// The names of the input columns kept (not conditions, not constant).
    pub fn inputs(&self) -> Vec<&str> {
        self.inputs.iter().map(|&j| self.names[j].as_str()).collect()
    }

    /// Operating regimes found among the condition columns (1 without conditions).
    pub fn regime_count(&self) -> usize {
        self.regimes.count()
    }

    /// Cross-validated figures (None when `band_folds` < 2).
    pub fn cv(&self) -> Option<CvFigures> {
        self.cv
    }

    /// Time to fit the model itself.
    pub fn fit_time(&self) -> Duration {
        self.fit_time
    }

    /// Time to fit the fold models of the band.
    pub fn band_time(&self) -> Duration {
        self.band_time
    }

    /// The parameters fitted with.
    pub fn params(&self) -> &RulParams {
        &self.params
    }

    fn feature_count(&self) -> usize {
        self.inputs.len() * PER_COLUMN + 1
    }

    fn band_around(&self, rul: f64) -> (f64, f64) {
        let b = band_bin(rul, self.params.cap);
        ((rul + self.band_lo[b]).max(0.0), (rul + self.band_hi[b]).max(0.0))
    }

    /// Appends the feature row of every cycle of `run` to `out`.
    fn features_into(&self, run: &[Vec<f64>], out: &mut Vec<f64>) {
        let n = run.len();
        let k = self.inputs.len();
        // Standardised series, column by column, with prefix sums of z and t·z.
        let mut z = vec![0.0; n * k];
        for (t, row) in run.iter().enumerate() {
            let g = self.regimes.assign(row);
            for (c, &j) in self.inputs.iter().enumerate() {
                z[c * n + t] = (row[j] - self.mean[g][c]) / self.sd[g][c];
            }
        }
        let mut sz = vec![0.0; n + 1];
        let mut stz = vec![0.0; n + 1];
        let mut cols: Vec<Vec<f64>> = Vec::with_capacity(k);
        for c in 0..k {
            let zc = &z[c * n..(c + 1) * n];
            for t in 0..n {
                sz[t + 1] = sz[t] + zc[t];
                stz[t + 1] = stz[t] + t as f64 * zc[t];
            }
            let mut col = Vec::with_capacity(n * PER_COLUMN);
            for t in 0..n {
                col.push(zc[t]);
                for w in MEAN_WINDOWS {
                    let a = (t + 1).saturating_sub(w);
                    col.push((sz[t + 1] - sz[a]) / (t + 1 - a) as f64);
                }
                for w in SLOPE_WINDOWS {
                    let a = (t + 1).saturating_sub(w);
                    let m = (t + 1 - a) as f64;
                    if m < 2.0 {
                        col.push(0.0);
                        continue;
                    }
                    // Least squares over i = a..=t: slope = (m Σiz − Σi Σz) / (m Σi² − (Σi)²).
                    let (a_f, t_f) = (a as f64, t as f64);
                    let si = (a_f + t_f) * m / 2.0;
                    let sii = sum_sq(t_f) - if a > 0 { sum_sq(a_f - 1.0) } else { 0.0 };
                    let s_z = sz[t + 1] - sz[a];
                    let s_iz = stz[t + 1] - stz[a];
                    col.push((m * s_iz - si * s_z) / (m * sii - si * si));
                }
            }
            cols.push(col);
        }
        for t in 0..n {
            for col in &cols {
                out.extend_from_slice(&col[t * PER_COLUMN..(t + 1) * PER_COLUMN]);
            }
            out.push((t + 1) as f64);
        }
    }
}

/// Σ_{i=0..=n} i².
fn sum_sq(n: f64) -> f64 {
    n * (n + 1.0) * (2.0 * n + 1.0) / 6.0
}

fn band_bin(rul: f64, cap: f64) -> usize {
    let b = (rul / cap * BAND_BINS as f64).floor();
    if b.is_nan() || b < 0.0 {
        0
    } else {
        (b as usize).min(BAND_BINS - 1)
    }
}

fn check_params(p: &RulParams) -> Result<(), RulError> {
    let bad = |m: &str| Err(RulError::Params(m.to_string()));
    let unit = |x: f64| x > 0.0 && x <= 1.0;
    if p.cap.is_nan() || p.cap <= 0.0 {
        return bad("cap must be positive");
    }
    if p.trees == 0 || p.depth == 0 {
        return bad("trees and depth must be at least 1");
    }
    if !unit(p.subsample) || !unit(p.colsample) {
        return bad("subsample and colsample must be in (0, 1]");
    }
    if p.learning_rate.is_nan() || p.learning_rate <= 0.0 || p.lambda.is_nan() || p.lambda < 0.0 {
        return bad("learning_rate must be positive and lambda non-negative");
    }
    if !(2..=256).contains(&p.bins) {
        return bad("bins must be in 2..=256");
    }
    if !(0.0..0.5).contains(&p.band.0) || !(0.5..=1.0).contains(&p.band.1) {
        return bad("band quantiles must be (low < 0.5, high >= 0.5)");
    }
    Ok(())
}

/// Linear-interpolated quantile of sorted values.
pub(crate) fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (i, frac) = (pos.floor() as usize, pos - pos.floor());
    let j = (i + 1).min(sorted.len() - 1);
    sorted[i] + frac * (sorted[j] - sorted[i])
}

/// Which kept inputs, and per regime their mean and standard deviation.
#[allow(clippy::type_complexity)]
fn standardisation(
    rows: &[&Vec<f64>],
    regime: &[usize],
    cond_cols: &[usize],
    width: usize,
    regimes: usize,
    p: &RulParams,
) -> (Vec<usize>, Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let (mut inputs, mut means, mut sds) = (Vec::new(), Vec::new(), Vec::new());
    for j in (0..width).filter(|j| !cond_cols.contains(j)) {
        let mut keep = false;
        let mut m = vec![0.0; regimes];
        let mut s = vec![1.0; regimes];
        for g in 0..regimes {
            let mut v: Vec<f64> = rows.iter().zip(regime).filter(|(_, &rg)| rg == g).map(|(r, _)| r[j]).collect();
            if v.is_empty() {
                continue;
            }
            let n = v.len() as f64;
            let mean = v.iter().sum::<f64>() / n;
            let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
            v.sort_by(f64::total_cmp);
            v.dedup();
            m[g] = mean;
            if var > 1e-24 {
                s[g] = var.sqrt();
                keep |= v.len() >= p.min_distinct;
            }
        }
        if keep {
            inputs.push(j);
            means.push(m);
            sds.push(s);
        }
    }
    // Transpose to [regime][input].
    let mean = (0..regimes).map(|g| means.iter().map(|m| m[g]).collect()).collect();
    let sd = (0..regimes).map(|g| sds.iter().map(|s| s[g]).collect()).collect();
    (inputs, mean, sd)
}

/// Operating regimes: k-means centres over the scaled condition columns.
#[derive(Clone, Debug)]
struct Regimes {
    cols: Vec<usize>,
    scale: Vec<f64>,
    centres: Vec<Vec<f64>>,
}

impl Regimes {
    fn fit(rows: &[&Vec<f64>], cols: &[usize], max_regimes: usize) -> Regimes {
        let one = Regimes { cols: Vec::new(), scale: Vec::new(), centres: vec![Vec::new()] };
        if cols.is_empty() || max_regimes < 2 || rows.len() < 2 {
            return one;
        }
        // Scale each condition column by its standard deviation; constant columns are ignored.
        let n = rows.len() as f64;
        let (mut used, mut scale) = (Vec::new(), Vec::new());
        for &j in cols {
            let mean = rows.iter().map(|r| r[j]).sum::<f64>() / n;
            let sd = (rows.iter().map(|r| (r[j] - mean).powi(2)).sum::<f64>() / n).sqrt();
            if sd > 1e-12 {
                used.push(j);
                scale.push(sd);
            }
        }
        if used.is_empty() {
            return one;
        }
        let pts: Vec<Vec<f64>> =
            rows.iter().map(|r| used.iter().zip(&scale).map(|(&j, s)| r[j] / s).collect()).collect();
        let dims = used.len();
        let mut grand = vec![0.0; dims];
        for p in &pts {
            for d in 0..dims {
                grand[d] += p[d] / n;
            }
        }
        let total: f64 = pts.iter().map(|p| dist2(p, &grand)).sum();
        for k in 2..=max_regimes.min(pts.len()) {
            let centres = kmeans(&pts, k);
            let within: f64 =
                pts.iter().map(|p| centres.iter().map(|c| dist2(p, c)).fold(f64::INFINITY, f64::min)).sum();
            if within <= 0.01 * total {
                tracing::debug!(regimes = k, explained = 1.0 - within / total, "Operating regimes found");
                return Regimes { cols: used, scale, centres };
            }
        }
        one
    }

    fn count(&self) -> usize {
        self.centres.len()
    }

    fn assign(&self, row: &[f64]) -> usize {
        if self.centres.len() < 2 {
            return 0;
        }
        let p: Vec<f64> = self.cols.iter().zip(&self.scale).map(|(&j, s)| row[j] / s).collect();
        let mut best = (0, f64::INFINITY);
        for (g, c) in self.centres.iter().enumerate() {
            let d = dist2(&p, c);
            if d < best.1 {
                best = (g, d);
            }
        }
        best.0
    }
}

fn dist2(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum()
}

/// Lloyd's k-means from a farthest-point start (deterministic).
fn kmeans(pts: &[Vec<f64>], k: usize) -> Vec<Vec<f64>> {
    let mut centres = vec![pts[0].clone()];
    let mut nearest: Vec<f64> = pts.iter().map(|p| dist2(p, &pts[0])).collect();
    while centres.len() < k {
        let far = (0..pts.len()).max_by(|&a, &b| nearest[a].total_cmp(&nearest[b])).unwrap_or(0);
        centres.push(pts[far].clone());
        for (i, p) in pts.iter().enumerate() {
            nearest[i] = nearest[i].min(dist2(p, &pts[far]));
        }
    }
    let dims = pts[0].len();
    let mut label = vec![usize::MAX; pts.len()];
    for _ in 0..50 {
        let mut changed = false;
        for (i, p) in pts.iter().enumerate() {
            let mut g = 0;
            let mut best = f64::INFINITY;
            for (c, centre) in centres.iter().enumerate() {
                let d = dist2(p, centre);
                if d < best {
                    best = d;
                    g = c;
                }
            }
            changed |= label[i] != g;
            label[i] = g;
        }
        if !changed {
            break;
        }
        let mut sum = vec![vec![0.0; dims]; k];
        let mut cnt = vec![0usize; k];
        for (p, &g) in pts.iter().zip(&label) {
            cnt[g] += 1;
            for d in 0..dims {
                sum[g][d] += p[d];
            }
        }
        for g in 0..k {
            if cnt[g] > 0 {
                centres[g] = sum[g].iter().map(|s| s / cnt[g] as f64).collect();
            }
        }
    }
    centres
}

/// SplitMix64: small, seeded, good enough for sampling.
#[derive(Clone, Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in 0..n (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.unit() * n as f64) as usize % n.max(1)
    }
    /// `k` distinct indices of 0..n, sorted.
    fn choose(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..n).collect();
        for i in 0..k.min(n) {
            let j = i + self.below(n - i);
            all.swap(i, j);
        }
        all.truncate(k.min(n));
        all.sort_unstable();
        all
    }
}

/// Features quantised to bins: `bins[row * width + f]`, with the upper edges per feature.
struct Binned {
    width: usize,
    rows: usize,
    /// Row-major bins (prediction walks a row).
    bins: Vec<u8>,
    /// Column-major bins: `cols[f * rows + row]` (histograms walk a column).
    cols: Vec<u8>,
    /// `edges[f][b]`: a value `x` is in bin `b` or lower iff `x <= edges[f][b]`.
    edges: Vec<Vec<f64>>,
    /// Bins in use per feature (`edges[f].len() + 1`).
    nbins: usize,
}

impl Binned {
    fn new(x: &[f64], width: usize, bins: usize) -> Binned {
        let rows = x.len() / width.max(1);
        let mut edges = Vec::with_capacity(width);
        for f in 0..width {
            let mut v: Vec<f64> = (0..rows).map(|i| x[i * width + f]).collect();
            v.sort_by(f64::total_cmp);
            let mut e: Vec<f64> = (1..bins).map(|b| v[(b * rows / bins).min(rows - 1)]).collect();
            e.dedup();
            // The top value needs no edge: everything above the last edge is the last bin.
            if e.last().is_some_and(|&l| l >= v[rows - 1]) {
                e.pop();
            }
            edges.push(e);
        }
        let nbins = edges.iter().map(|e| e.len() + 1).max().unwrap_or(1);
        let mut b = vec![0u8; rows * width];
        let mut cols = vec![0u8; rows * width];
        for i in 0..rows {
            for f in 0..width {
                let bin = edges[f].partition_point(|&e| e < x[i * width + f]) as u8;
                b[i * width + f] = bin;
                cols[f * rows + i] = bin;
            }
        }
        Binned { width, rows, bins: b, cols, edges, nbins }
    }
}

#[derive(Clone, Debug)]
enum Node {
    Split { feature: u32, bin: u8, threshold: f64, left: u32, right: u32 },
    Leaf(f64),
}

/// The fitted ensemble: `base + Σ tree(x)` (leaf values already scaled).
#[derive(Clone, Debug)]
struct Trees {
    base: f64,
    trees: Vec<Vec<Node>>,
}

impl Trees {
    fn predict_binned(&self, b: &Binned, row: usize) -> f64 {
        let bins = &b.bins[row * b.width..(row + 1) * b.width];
        self.base + self.trees.iter().map(|t| walk(t, |f, bin, _| bins[f] <= bin)).sum::<f64>()
    }

    fn predict_raw(&self, x: &[f64]) -> f64 {
        self.base + self.trees.iter().map(|t| walk(t, |f, _, thr| x[f] <= thr)).sum::<f64>()
    }
}

fn walk(tree: &[Node], go_left: impl Fn(usize, u8, f64) -> bool) -> f64 {
    let mut i = 0;
    loop {
        match &tree[i] {
            Node::Leaf(v) => return *v,
            Node::Split { feature, bin, threshold, left, right } => {
                i = if go_left(*feature as usize, *bin, *threshold) { *left } else { *right } as usize;
            }
        }
    }
}

/// Fits the ensemble on the rows `rows` (indices into `binned` and `y`).
fn fit_trees(binned: &Binned, rows: &[u32], y: &[f64], p: &RulParams, rng: &mut SplitMix64) -> Trees {
    let width = binned.width;
    let ncol = ((width as f64 * p.colsample).ceil() as usize).clamp(1, width);
    match p.ensemble {
        Ensemble::Boosted => {
            let base = rows.iter().map(|&i| y[i as usize]).sum::<f64>() / rows.len().max(1) as f64;
            let mut pred = vec![base; y.len()];
            let mut resid = vec![0.0; y.len()];
            let mut trees = Vec::with_capacity(p.trees);
            for _ in 0..p.trees {
                for &i in rows {
                    resid[i as usize] = y[i as usize] - pred[i as usize];
                }
                let mut sample: Vec<u32> = rows.iter().copied().filter(|_| rng.unit() < p.subsample).collect();
                let feats = rng.choose(width, ncol);
                let grower = Grower {
                    b: binned,
                    target: &resid,
                    feats: &feats,
                    min_leaf: p.min_leaf,
                    lambda: p.lambda,
                    scale: p.learning_rate,
                    per_split: None,
                };
                let tree = grower.grow_tree(&mut sample, p.depth, rng);
                for &i in rows {
                    let bins = &binned.bins[i as usize * width..(i as usize + 1) * width];
                    pred[i as usize] += walk(&tree, |f, bin, _| bins[f] <= bin);
                }
                trees.push(tree);
            }
            Trees { base, trees }
        }
        Ensemble::Forest => {
            let all: Vec<usize> = (0..width).collect();
            let mut trees = Vec::with_capacity(p.trees);
            for _ in 0..p.trees {
                let mut sample: Vec<u32> = rows.iter().copied().filter(|_| rng.unit() < p.subsample).collect();
                let grower = Grower {
                    b: binned,
                    target: y,
                    feats: &all,
                    min_leaf: p.min_leaf,
                    lambda: 0.0,
                    scale: 1.0 / p.trees as f64,
                    per_split: Some(ncol),
                };
                trees.push(grower.grow_tree(&mut sample, p.depth, rng));
            }
            Trees { base: 0.0, trees }
        }
    }
}

struct Grower<'a> {
    b: &'a Binned,
    target: &'a [f64],
    /// Features this tree may histogram (indices into the feature row).
    feats: &'a [usize],
    min_leaf: usize,
    lambda: f64,
    /// Leaf values are multiplied by this.
    scale: f64,
    /// Forest: features tried per split.
    per_split: Option<usize>,
}

/// Sum of targets and row count per (feature position, bin).
struct Hist {
    sum: Vec<f64>,
    count: Vec<u32>,
}

impl Grower<'_> {
    fn grow_tree(&self, rows: &mut [u32], depth: usize, rng: &mut SplitMix64) -> Vec<Node> {
        let mut nodes = Vec::new();
        if rows.is_empty() {
            nodes.push(Node::Leaf(0.0));
            return nodes;
        }
        let h = self.hist(rows);
        self.grow(rows, h, depth, &mut nodes, rng);
        nodes
    }

    fn hist(&self, rows: &[u32]) -> Hist {
        let nb = self.b.nbins;
        let mut h = Hist { sum: vec![0.0; self.feats.len() * nb], count: vec![0; self.feats.len() * nb] };
        // Column-major bins and the node's targets gathered once: tight loops even unoptimised.
        let n = self.b.rows;
        let targets: Vec<f64> = rows.iter().map(|&r| self.target[r as usize]).collect();
        for (k, &f) in self.feats.iter().enumerate() {
            let col = &self.b.cols[f * n..(f + 1) * n];
            let sum = &mut h.sum[k * nb..(k + 1) * nb];
            let count = &mut h.count[k * nb..(k + 1) * nb];
            for (&r, &t) in rows.iter().zip(&targets) {
                let b = col[r as usize] as usize;
                sum[b] += t;
                count[b] += 1;
            }
        }
        h
    }

    fn grow(&self, rows: &mut [u32], h: Hist, depth: usize, nodes: &mut Vec<Node>, rng: &mut SplitMix64) -> u32 {
        let id = nodes.len() as u32;
        let nb = self.b.nbins;
        let n = rows.len();
        let total: f64 = h.sum[..nb].iter().sum();
        let leaf = total / (n as f64 + self.lambda) * self.scale;
        nodes.push(Node::Leaf(leaf));
        if depth == 0 || n < 2 * self.min_leaf.max(1) {
            return id;
        }
        let parent_score = total * total / (n as f64 + self.lambda);
        let candidates: Vec<usize> = match self.per_split {
            Some(m) => rng.choose(self.feats.len(), m),
            None => (0..self.feats.len()).collect(),
        };
        let mut best: Option<(f64, usize, usize)> = None;
        for k in candidates {
            let (mut sl, mut nl) = (0.0, 0usize);
            for b in 0..nb - 1 {
                sl += h.sum[k * nb + b];
                nl += h.count[k * nb + b] as usize;
                if nl < self.min_leaf.max(1) {
                    continue;
                }
                let nr = n - nl;
                if nr < self.min_leaf.max(1) {
                    break;
                }
                let sr = total - sl;
                let gain = sl * sl / (nl as f64 + self.lambda) + sr * sr / (nr as f64 + self.lambda) - parent_score;
                if gain > best.map_or(1e-9, |b| b.0) {
                    best = Some((gain, k, b));
                }
            }
        }
        let Some((_, k, bin)) = best else {
            return id;
        };
        let f = self.feats[k];
        let col = &self.b.cols[f * self.b.rows..(f + 1) * self.b.rows];
        // Partition rows: bin <= `bin` to the left.
        let mut m = 0;
        for i in 0..n {
            if col[rows[i] as usize] as usize <= bin {
                rows.swap(i, m);
                m += 1;
            }
        }
        let (left_rows, right_rows) = rows.split_at_mut(m);
        // Histogram the smaller child; the larger is the parent minus it.
        let (small, large_is_left) = if left_rows.len() <= right_rows.len() {
            (self.hist(left_rows), false)
        } else {
            (self.hist(right_rows), true)
        };
        let mut large = h;
        for (a, b) in large.sum.iter_mut().zip(&small.sum) {
            *a -= b;
        }
        for (a, b) in large.count.iter_mut().zip(&small.count) {
            *a -= b;
        }
        let (lh, rh) = if large_is_left { (large, small) } else { (small, large) };
        let left = self.grow(left_rows, lh, depth - 1, nodes, rng);
        let right = self.grow(right_rows, rh, depth - 1, nodes, rng);
        nodes[id as usize] =
            Node::Split { feature: f as u32, bin: bin as u8, threshold: self.b.edges[f][bin], left, right };
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    /// Runs whose `wear` column falls linearly to failure (slope and offset vary a little per
    /// run), with noise, a constant column and a pure-noise column.
    fn linear_runs(count: usize, seed: u64, noise: f64) -> Vec<Vec<Vec<f64>>> {
        let mut rng = SplitMix64(seed);
        (0..count)
            .map(|_| {
                let life = 150 + rng.below(150);
                let slope = 0.05 * (0.98 + 0.04 * rng.unit());
                (0..life)
                    .map(|t| {
                        let left = (life - 1 - t) as f64;
                        let gauss = (0..6).map(|_| rng.unit()).sum::<f64>() - 3.0;
                        vec![10.0 + slope * left + noise * gauss, 7.0, rng.unit()]
                    })
                    .collect()
            })
            .collect()
    }

    fn small() -> RulParams {
        RulParams { trees: 120, learning_rate: 0.1, band_folds: 4, ..RulParams::default() }
    }

    #[test]
    fn a_linear_degradation_is_recovered() {
        let cols = names(&["wear", "constant", "noise"]);
        let model = RulModel::fit(&cols, &[], &linear_runs(40, 1, 0.02), &small()).expect("fit");
        assert_eq!(model.inputs(), vec!["wear", "noise"], "the constant column is dropped");
        assert_eq!(model.regime_count(), 1);
        // Fresh runs, cut at several points: the estimate follows min(true, cap).
        let (mut se, mut n) = (0.0, 0);
        for run in linear_runs(20, 99, 0.02) {
            for cut in [20, 60, 100, 140] {
                let seen = &run[..run.len() - cut];
                let est = model.predict(seen).expect("predict");
                let want = (cut as f64).min(125.0);
                se += (est.rul - want).powi(2);
                n += 1;
                assert!(est.low <= est.rul && est.rul <= est.high, "{est:?}");
            }
        }
        let rmse = (se / n as f64).sqrt();
        assert!(rmse < 6.0, "RMSE {rmse} on a noiseless-ish linear degradation");
        let cv = model.cv().expect("cv figures");
        assert!(cv.rmse_capped < 6.0, "{cv:?}");
    }

    #[test]
    fn the_band_covers_about_its_nominal_share() {
        let cols = names(&["wear", "constant", "noise"]);
        // Noisy wear: the band must widen, and cover about 90 % of fresh runs.
        let model = RulModel::fit(&cols, &[], &linear_runs(60, 2, 1.0), &small()).expect("fit");
        let (mut inside, mut n, mut width) = (0, 0, 0.0);
        for run in linear_runs(40, 7, 1.0) {
            for cut in [10, 40, 80] {
                let est = model.predict(&run[..run.len() - cut]).expect("predict");
                inside += usize::from((est.low..=est.high).contains(&(cut as f64)));
                width += est.high - est.low;
                n += 1;
            }
        }
        let coverage = inside as f64 / n as f64;
        assert!((0.75..=1.0).contains(&coverage), "coverage {coverage}");
        assert!(width / (n as f64) > 5.0, "a noisy signal cannot give a narrow band");
    }

    #[test]
    fn operating_regimes_are_found_and_normalised_away() {
        // Three operating points shift the wear reading by far more than the wear itself.
        let cols = names(&["altitude", "wear"]);
        let mut rng = SplitMix64(5);
        let runs: Vec<Vec<Vec<f64>>> = (0..40)
            .map(|_| {
                let life = 150 + rng.below(100);
                (0..life)
                    .map(|t| {
                        let op = rng.below(3) as f64;
                        let left = (life - 1 - t) as f64;
                        vec![op * 10.0 + 0.01 * rng.unit(), 100.0 * op + 0.05 * left + 0.02 * rng.unit()]
                    })
                    .collect()
            })
            .collect();
        let model = RulModel::fit(&cols, &names(&["altitude"]), &runs[..30], &small()).expect("fit");
        assert_eq!(model.regime_count(), 3);
        assert_eq!(model.inputs(), vec!["wear"]);
        let mut se = 0.0;
        for run in &runs[30..] {
            let est = model.predict(&run[..run.len() - 50]).expect("predict");
            se += (est.rul - 50.0).powi(2);
        }
        let rmse = (se / 10.0).sqrt();
        assert!(rmse < 10.0, "RMSE {rmse} across operating regimes");
    }

    #[test]
    fn fitting_is_deterministic_and_the_forest_works_too() {
        let cols = names(&["wear", "constant", "noise"]);
        let runs = linear_runs(20, 3, 0.5);
        let p = RulParams { band_folds: 0, ..small() };
        let a = RulModel::fit(&cols, &[], &runs, &p).expect("fit");
        let b = RulModel::fit(&cols, &[], &runs, &p).expect("fit");
        let probe = &runs[0][..100];
        assert_eq!(a.predict(probe).expect("a"), b.predict(probe).expect("b"));
        assert!(a.cv().is_none());
        let f = RulParams { ensemble: Ensemble::Forest, trees: 40, depth: 8, min_leaf: 5, colsample: 0.5, ..p };
        let forest = RulModel::fit(&cols, &[], &runs, &f).expect("forest");
        let want = (runs[0].len() - 100) as f64;
        let got = forest.predict(probe).expect("forest predict").rul;
        assert!((got - want.min(125.0)).abs() < 25.0, "forest {got} vs {want}");
    }

    #[test]
    fn bad_input_is_refused_with_a_reason() {
        let cols = names(&["wear", "constant", "noise"]);
        let runs = linear_runs(5, 4, 0.1);
        assert!(matches!(RulModel::fit(&cols, &[], &runs[..1], &small()), Err(RulError::NoRuns)));
        let mut bad = runs.clone();
        bad[2][7].pop();
        assert!(matches!(
            RulModel::fit(&cols, &[], &bad, &small()),
            Err(RulError::Width { run: 2, row: 7, expected: 3, got: 2 })
        ));
        let mut nan = runs.clone();
        nan[1][3][0] = f64::NAN;
        assert!(matches!(RulModel::fit(&cols, &[], &nan, &small()), Err(RulError::NotFinite { run: 1, row: 3, .. })));
        assert!(matches!(
            RulModel::fit(&cols, &names(&["speed"]), &runs, &small()),
            Err(RulError::UnknownCondition(c)) if c == "speed"
        ));
        let flat: Vec<Vec<Vec<f64>>> = runs.iter().map(|r| r.iter().map(|_| vec![1.0, 7.0, 2.0]).collect()).collect();
        assert!(matches!(RulModel::fit(&cols, &[], &flat, &small()), Err(RulError::NoUsableFeatures)));
        let model = RulModel::fit(&cols, &[], &runs, &RulParams { band_folds: 0, ..small() }).expect("fit");
        assert!(matches!(model.predict(&[]), Err(RulError::EmptyTrajectory)));
        for p in [
            RulParams { subsample: 0.0, ..small() },
            RulParams { cap: f64::NAN, ..small() },
            RulParams { bins: 300, ..small() },
        ] {
            assert!(matches!(RulModel::fit(&cols, &[], &runs, &p), Err(RulError::Params(_))), "{p:?}");
        }
        assert!(matches!(model.predict(&[vec![1.0]]), Err(RulError::TrajectoryWidth { row: 0, expected: 3, got: 1 })));
    }

    #[test]
    fn slopes_and_means_are_least_squares_over_the_window() {
        let cols = names(&["a", "b"]);
        let runs: Vec<Vec<Vec<f64>>> =
            (0..3).map(|r| (0..50).map(|t| vec![2.0 * t as f64 + r as f64, (t % 7) as f64]).collect()).collect();
        let model = RulModel::fit(&cols, &[], &runs, &RulParams { band_folds: 0, trees: 2, ..small() }).expect("fit");
        let mut x = Vec::new();
        model.features_into(&runs[0], &mut x);
        let w = model.feature_count();
        let sd = model.sd[0][0];
        let row = &x[40 * w..41 * w];
        // Column a at t = 40: slope 2 per cycle in raw units over both windows.
        assert!((row[4] * sd - 2.0).abs() < 1e-9 && (row[5] * sd - 2.0).abs() < 1e-9, "{row:?}");
        // Mean over the last 5 (t = 36..=40) is the value at t = 38.
        let z38 = (76.0 - model.mean[0][0]) / sd;
        assert!((row[1] - z38).abs() < 1e-9);
        assert_eq!(row[w - 1], 41.0, "cycles seen");
        // At t = 0 the slopes are 0 (one point).
        assert_eq!(x[4], 0.0);
    }
}
