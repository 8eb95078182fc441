//! Multivariate anomaly detection for one asset group: a PCA monitor with
//! Hotelling's T² and the squared prediction error (SPE, Q), and the tags
//! that contributed (issue 5).
//!
//! # Method
//! - **Scaling.** Each column is standardised with the training mean and
//!   standard deviation (n − 1). A column whose standard deviation is zero, or
//!   below 1e-9 of its magnitude, is *ignored*: it has no variance to judge a
//!   change against (the univariate [`RobustBaseline`](super::detect::RobustBaseline)
//!   still watches it). [`PcaMonitor::ignored`] lists them.
//! - **Model.** The covariance (correlation, after scaling) matrix is
//!   decomposed with `nalgebra`'s symmetric eigen-decomposition. The number of
//!   components `a` is the smallest that explains at least
//!   [`PcaParams::variance`] of the total variance (default 90 %), capped so
//!   that at least one residual direction remains for the SPE.
//! - **T²** = Σₖ tₖ²/λₖ over the retained scores, limit
//!   `a (n−1)(n+1) / (n (n−a)) · F(a, n−a; conf)` (the limit for a new
//!   observation, n training rows).
//! - **SPE** = ‖z − P Pᵀ z‖², limit by Jackson–Mudholkar from the discarded
//!   eigenvalues (θ₁, θ₂, θ₃, h₀), with Box's g·χ²(h) approximation where
//!   h₀ ≤ 0. Parametric limits rather than empirical quantiles of the training
//!   statistics because (1) they are what the published PCA figures on the
//!   Tennessee Eastman benchmark use, so the numbers compare, and (2) a 99 %
//!   empirical quantile of a warm-up window of a few hundred rows rests on its
//!   few largest values and swings from fit to fit.
//! - **Contributions** of a flagged row are the per-column shares of the
//!   statistic that fired (the one furthest above its limit): for SPE the
//!   squared residual of each column, for T² the complete decomposition
//!   contribution `cⱼ = ((P Λ^{-1/2} Pᵀ z)ⱼ)²`, which is non-negative and
//!   sums to T² exactly. Shares sum to 1.
//! - **Missing values** (`None` or not finite) are replaced by the training
//!   mean of the column (a standardised value of 0), so they neither raise nor
//!   hide an anomaly on their own; [`PcaScore::missing`] counts them.
//!
//! [`PcaDetector`] wraps the monitor for streaming use: it fits itself from the
//! first `warmup` rows of the stream, then scores each row and raises an
//! anomaly after [`PcaParams::persistence`] consecutive exceedances, saying when
//! the run began.

use nalgebra::{DMatrix, SymmetricEigen};
use statrs::distribution::{ChiSquared, ContinuousCDF, FisherSnedecor, Normal};

/// Settings of a [`PcaMonitor`] and a [`PcaDetector`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PcaParams {
    /// Fraction of the total variance the retained components must explain (0..1).
    pub variance: f64,
    /// Confidence of the T² and SPE limits (0.5..1), e.g. 0.99.
    pub confidence: f64,
    /// Consecutive exceeding rows before [`PcaDetector`] raises an anomaly (≥ 1).
    pub persistence: usize,
    /// Rows [`PcaDetector`] collects from the stream before it fits the model.
    pub warmup: usize,
}

impl Default for PcaParams {
    fn default() -> Self {
        PcaParams { variance: 0.90, confidence: 0.99, persistence: 3, warmup: 500 }
    }
}

/// Why a model could not be fitted.
#[derive(Clone, Debug, thiserror::Error, PartialEq)]
pub enum PcaError {
    /// The data is not `rows × columns`.
    #[error("the training data has {len} values, not a multiple of {columns} columns")]
    Shape {
        /// Number of values given.
        len: usize,
        /// Number of columns expected.
        columns: usize,
    },
    /// Too few rows for the number of columns.
    #[error("{rows} training rows for {columns} columns; at least {needed} are needed")]
    TooFewRows {
        /// Rows given.
        rows: usize,
        /// Columns of the model.
        columns: usize,
        /// Rows needed.
        needed: usize,
    },
    /// Fewer than two columns vary in the training data.
    #[error("only {varying} of {columns} columns vary in the training data; a multivariate model needs two")]
    NoVariance {
        /// Columns that vary.
        varying: usize,
        /// Columns of the model.
        columns: usize,
    },
    /// A parameter is out of range.
    #[error("invalid PCA parameter: {0}")]
    Params(String),
}

/// Which statistic a score's contributions decompose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Statistic {
    /// Hotelling's T² (variation inside the model's principal subspace).
    T2,
    /// The squared prediction error (variation the model does not explain).
    Spe,
}

/// The verdict on one row.
#[derive(Clone, Debug, PartialEq)]
pub struct PcaScore {
    /// Hotelling's T².
    pub t2: f64,
    /// Squared prediction error (Q).
    pub spe: f64,
    /// The T² limit at the model's confidence.
    pub t2_limit: f64,
    /// The SPE limit at the model's confidence.
    pub spe_limit: f64,
    /// T² or SPE above its limit.
    pub flag: bool,
    /// The statistic furthest above (or nearest to) its limit, relative to the limit.
    pub statistic: Statistic,
    /// For a flagged row: (column, share of `statistic`) of every column with a
    /// non-zero share, largest first, shares summing to 1. Empty when not flagged.
    pub contributions: Vec<(usize, f64)>,
    /// Values that were missing and replaced by the training mean.
    pub missing: usize,
}

impl PcaScore {
    /// T² above its limit.
    pub fn t2_flag(&self) -> bool {
        self.t2 > self.t2_limit
    }

    /// SPE above its limit.
    pub fn spe_flag(&self) -> bool {
        self.spe > self.spe_limit
    }

    /// The larger of T²/limit and SPE/limit: above 1 is anomalous.
    pub fn severity(&self) -> f64 {
        (self.t2 / self.t2_limit).max(self.spe / self.spe_limit)
    }
}

/// A fitted PCA model of one group of tags.
#[derive(Clone, Debug)]
pub struct PcaMonitor {
    columns: usize,
    mean: Vec<f64>,
    /// 1/σ per column; 0 for an ignored column.
    inv_sd: Vec<f64>,
    /// Retained loadings, row-major `columns × a`.
    p: Vec<f64>,
    /// Retained eigenvalues, descending.
    lambda: Vec<f64>,
    /// All eigenvalues, descending.
    eigenvalues: Vec<f64>,
    explained: f64,
    t2_limit: f64,
    spe_limit: f64,
    rows: usize,
}

impl PcaMonitor {
    /// Fits a model from `data`, row-major `rows × columns` (NaN = missing,
    /// replaced by the column mean).
    pub fn fit(data: &[f64], columns: usize, params: &PcaParams) -> Result<PcaMonitor, PcaError> {
        check_params(params)?;
        if columns == 0 || !data.len().is_multiple_of(columns) {
            return Err(PcaError::Shape { len: data.len(), columns });
        }
        let n = data.len() / columns;
        let needed = (columns + 2).max(10);
        if n < needed {
            return Err(PcaError::TooFewRows { rows: n, columns, needed });
        }
        // Mean and standard deviation over the values present.
        let mut mean = vec![0.0; columns];
        let mut inv_sd = vec![0.0; columns];
        for j in 0..columns {
            let (mut s, mut c) = (0.0, 0usize);
            for x in data.iter().skip(j).step_by(columns).filter(|x| x.is_finite()) {
                s += x;
                c += 1;
            }
            if c < 2 {
                continue;
            }
            let m = s / c as f64;
            let ss: f64 =
                data.iter().skip(j).step_by(columns).filter(|x| x.is_finite()).map(|x| (x - m) * (x - m)).sum();
            let sd = (ss / (c - 1) as f64).sqrt();
            mean[j] = m;
            if sd > 1e-9 * m.abs().max(1e-300) && sd > 0.0 {
                inv_sd[j] = 1.0 / sd;
            }
        }
        let varying = inv_sd.iter().filter(|&&v| v > 0.0).count();
        if varying < 2 {
            return Err(PcaError::NoVariance { varying, columns });
        }
        // Covariance of the standardised data (missing values at 0).
        let z = |i: usize, j: usize| {
            let x = data[i * columns + j];
            if x.is_finite() {
                (x - mean[j]) * inv_sd[j]
            } else {
                0.0
            }
        };
        let mut cov = DMatrix::<f64>::zeros(columns, columns);
        let mut zi = vec![0.0; columns];
        for i in 0..n {
            for (j, v) in zi.iter_mut().enumerate() {
                *v = z(i, j);
            }
            for a in 0..columns {
                if zi[a] == 0.0 {
                    continue;
                }
                for b in a..columns {
                    cov[(a, b)] += zi[a] * zi[b];
                }
            }
        }
        for a in 0..columns {
            for b in a..columns {
                let v = cov[(a, b)] / (n - 1) as f64;
                cov[(a, b)] = v;
                cov[(b, a)] = v;
            }
        }
        let (eigenvalues, vectors) = sorted_eigen(cov);
        let total: f64 = eigenvalues.iter().sum();
        // Smallest a explaining `variance`; at least 1, leaving a residual direction.
        let mut a = 0;
        let mut cum = 0.0;
        while a < eigenvalues.len() && cum < params.variance * total {
            cum += eigenvalues[a];
            a += 1;
        }
        a = a.clamp(1, varying - 1);
        // Never retain a (numerically) null direction: T² would divide by ~0.
        while a > 1 && eigenvalues[a - 1] <= 1e-10 * total {
            a -= 1;
        }
        let explained = eigenvalues[..a].iter().sum::<f64>() / total;
        let mut p = vec![0.0; columns * a];
        for j in 0..columns {
            for k in 0..a {
                p[j * a + k] = vectors[(j, k)];
            }
        }
        let lambda = eigenvalues[..a].to_vec();
        let t2_limit = t2_limit(a, n, params.confidence)?;
        let spe_limit = spe_limit(&eigenvalues[a..], params.confidence)?;
        Ok(PcaMonitor { columns, mean, inv_sd, p, lambda, eigenvalues, explained, t2_limit, spe_limit, rows: n })
    }

    /// Fits a model from rows of equal length (see [`PcaMonitor::fit`]).
    pub fn fit_rows(rows: &[Vec<f64>], params: &PcaParams) -> Result<PcaMonitor, PcaError> {
        let columns = rows.first().map_or(0, Vec::len);
        let mut flat = Vec::with_capacity(rows.len() * columns);
        for r in rows {
            if r.len() != columns {
                return Err(PcaError::Shape { len: r.len(), columns });
            }
            flat.extend_from_slice(r);
        }
        PcaMonitor::fit(&flat, columns, params)
    }

    /// Scores one row (`None` or a non-finite value: missing).
    ///
    /// Costs O(columns × components) and one small allocation (two more, for
    /// the contributions, when the row is flagged).
    pub fn score(&self, row: &[Option<f64>]) -> PcaScore {
        let (m, a) = (self.columns, self.lambda.len());
        // One buffer: the standardised row, then the scores.
        let mut buf = vec![0.0; m + a];
        let (z, t) = buf.split_at_mut(m);
        let mut missing = 0;
        for (j, zj) in z.iter_mut().enumerate() {
            match row.get(j).copied().flatten() {
                Some(x) if x.is_finite() => *zj = (x - self.mean[j]) * self.inv_sd[j],
                _ => missing += 1,
            }
        }
        for (zj, pj) in z.iter().zip(self.p.chunks_exact(a)) {
            if *zj != 0.0 {
                for (tk, pk) in t.iter_mut().zip(pj) {
                    *tk += pk * zj;
                }
            }
        }
        let t2: f64 = t.iter().zip(&self.lambda).map(|(tk, l)| tk * tk / l).sum();
        let resid = |j: usize| z[j] - dot(&self.p[j * a..(j + 1) * a], t);
        let spe: f64 = (0..m).map(|j| resid(j).powi(2)).sum();
        let rt = t2 / self.t2_limit;
        let rq = spe / self.spe_limit;
        let statistic = if rq >= rt { Statistic::Spe } else { Statistic::T2 };
        let flag = rt > 1.0 || rq > 1.0;
        let mut contributions = Vec::new();
        if flag {
            contributions.reserve(self.columns);
            match statistic {
                Statistic::Spe => contributions.extend((0..self.columns).map(|j| (j, resid(j).powi(2)))),
                Statistic::T2 => {
                    // Scale the scores once: sₖ = tₖ/√λₖ; cⱼ = (Σₖ pⱼₖ sₖ)².
                    let scaled: Vec<f64> = t.iter().zip(&self.lambda).map(|(tk, l)| tk / l.sqrt()).collect();
                    contributions
                        .extend(self.p.chunks_exact(a).enumerate().map(|(j, pj)| (j, dot(pj, &scaled).powi(2))));
                }
            }
            let sum: f64 = contributions.iter().map(|c| c.1).sum();
            contributions.retain(|c| c.1 > 0.0);
            if sum > 0.0 {
                for c in &mut contributions {
                    c.1 /= sum;
                }
            }
            contributions.sort_by(|x, y| y.1.total_cmp(&x.1));
        }
        PcaScore {
            t2,
            spe,
            t2_limit: self.t2_limit,
            spe_limit: self.spe_limit,
            flag,
            statistic,
            contributions,
            missing,
        }
    }

    /// Scores a row with every value present.
    pub fn score_values(&self, row: &[f64]) -> PcaScore {
        let row: Vec<Option<f64>> = row.iter().map(|&x| Some(x)).collect();
        self.score(&row)
    }

    /// Number of columns (tags) of the model.
    pub fn columns(&self) -> usize {
        self.columns
    }

    /// Number of retained principal components.
    pub fn components(&self) -> usize {
        self.lambda.len()
    }

    /// Fraction of the variance the retained components explain.
    pub fn explained(&self) -> f64 {
        self.explained
    }

    /// All eigenvalues of the standardised covariance, descending.
    pub fn eigenvalues(&self) -> &[f64] {
        &self.eigenvalues
    }

    /// The T² limit.
    pub fn t2_limit(&self) -> f64 {
        self.t2_limit
    }

    /// The SPE limit.
    pub fn spe_limit(&self) -> f64 {
        self.spe_limit
    }

    /// Training rows the model was fitted on.
    pub fn training_rows(&self) -> usize {
        self.rows
    }

    /// Columns without variance in the training data, which the model ignores.
    pub fn ignored(&self) -> Vec<usize> {
        (0..self.columns).filter(|&j| self.inv_sd[j] == 0.0).collect()
    }
}

fn dot(x: &[f64], y: &[f64]) -> f64 {
    x.iter().zip(y).map(|(a, b)| a * b).sum()
}

fn check_params(p: &PcaParams) -> Result<(), PcaError> {
    if !(p.variance > 0.0 && p.variance < 1.0) {
        return Err(PcaError::Params(format!("variance = {} (must be in (0, 1))", p.variance)));
    }
    if !(p.confidence >= 0.5 && p.confidence < 1.0) {
        return Err(PcaError::Params(format!("confidence = {} (must be in [0.5, 1))", p.confidence)));
    }
    if p.persistence == 0 {
        return Err(PcaError::Params("persistence = 0 (must be at least 1)".into()));
    }
    Ok(())
}

/// Eigenvalues (descending, negatives from rounding set to 0) and the matching
/// eigenvectors as columns.
fn sorted_eigen(cov: DMatrix<f64>) -> (Vec<f64>, DMatrix<f64>) {
    let m = cov.nrows();
    let e = SymmetricEigen::new(cov);
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&x, &y| e.eigenvalues[y].total_cmp(&e.eigenvalues[x]));
    let values = order.iter().map(|&i| e.eigenvalues[i].max(0.0)).collect();
    let vectors = DMatrix::from_fn(m, m, |r, c| e.eigenvectors[(r, order[c])]);
    (values, vectors)
}

/// T² limit for a new observation: a(n−1)(n+1)/(n(n−a)) · F(a, n−a; conf).
fn t2_limit(a: usize, n: usize, conf: f64) -> Result<f64, PcaError> {
    let (af, nf) = (a as f64, n as f64);
    let f = FisherSnedecor::new(af, nf - af).map_err(|e| PcaError::Params(format!("F({a}, {}): {e}", n - a)))?;
    Ok(af * (nf - 1.0) * (nf + 1.0) / (nf * (nf - af)) * f.inverse_cdf(conf))
}

/// SPE limit from the discarded eigenvalues (Jackson–Mudholkar; Box's g·χ²(h)
/// where h₀ ≤ 0).
fn spe_limit(rest: &[f64], conf: f64) -> Result<f64, PcaError> {
    let th = |p: i32| rest.iter().map(|l| l.powi(p)).sum::<f64>();
    let (t1, t2, t3) = (th(1), th(2), th(3));
    if t1 <= 1e-12 || t2 <= 0.0 {
        // No residual variance in training: any residual at all is new.
        return Ok(1e-9);
    }
    let h0 = 1.0 - 2.0 * t1 * t3 / (3.0 * t2 * t2);
    if h0 > 0.0 {
        let c = Normal::new(0.0, 1.0).map_err(|e| PcaError::Params(e.to_string()))?.inverse_cdf(conf);
        let inner = c * (2.0 * t2 * h0 * h0).sqrt() / t1 + 1.0 + t2 * h0 * (h0 - 1.0) / (t1 * t1);
        if inner > 0.0 {
            return Ok(t1 * inner.powf(1.0 / h0));
        }
    }
    let (g, h) = (t2 / t1, t1 * t1 / t2);
    let chi = ChiSquared::new(h).map_err(|e| PcaError::Params(format!("chi²({h}): {e}")))?;
    Ok(g * chi.inverse_cdf(conf))
}

/// An anomaly [`PcaDetector`] raised: when its run of exceedances began and
/// what the row that raised it looked like.
#[derive(Clone, Debug, PartialEq)]
pub struct PcaAnomaly {
    /// Timestamp of the first exceeding row of the run.
    pub started: i64,
    /// The row that completed the persistence rule.
    pub score: PcaScore,
}

/// What [`PcaDetector::update`] says about one row.
#[derive(Clone, Debug, PartialEq)]
pub enum PcaUpdate {
    /// Collecting warm-up rows (this many of the warm-up so far).
    WarmingUp(usize),
    /// The warm-up rows could not be fitted (e.g. too few varying tags); the
    /// detector starts a new warm-up with the following rows.
    FitFailed(PcaError),
    /// A scored row.
    Scored {
        /// The row's score.
        score: PcaScore,
        /// Set on the row that completes the persistence rule: an anomaly starts.
        anomaly: Option<PcaAnomaly>,
        /// The group is in an anomaly (persistence met, not yet back under the limits).
        active: bool,
    },
}

/// A streaming PCA detector for one asset group: fits itself on the first
/// [`PcaParams::warmup`] rows, then scores and applies the persistence rule.
#[derive(Clone, Debug)]
pub struct PcaDetector {
    params: PcaParams,
    columns: usize,
    warm: Vec<f64>,
    monitor: Option<PcaMonitor>,
    /// Consecutive exceeding rows and the timestamp of the first.
    run: usize,
    run_start: i64,
    active: bool,
}

impl PcaDetector {
    /// A detector for rows of `columns` values.
    pub fn new(columns: usize, params: PcaParams) -> Result<PcaDetector, PcaError> {
        check_params(&params)?;
        let needed = (columns + 2).max(10);
        if params.warmup < needed {
            return Err(PcaError::Params(format!(
                "warmup = {} rows for {columns} columns; at least {needed} are needed",
                params.warmup
            )));
        }
        Ok(PcaDetector { params, columns, warm: Vec::new(), monitor: None, run: 0, run_start: 0, active: false })
    }

    /// A detector with a model fitted offline.
    pub fn with_monitor(monitor: PcaMonitor, params: PcaParams) -> Result<PcaDetector, PcaError> {
        check_params(&params)?;
        Ok(PcaDetector {
            params,
            columns: monitor.columns(),
            warm: Vec::new(),
            monitor: Some(monitor),
            run: 0,
            run_start: 0,
            active: false,
        })
    }

    /// The fitted model (after warm-up).
    pub fn monitor(&self) -> Option<&PcaMonitor> {
        self.monitor.as_ref()
    }

    /// Takes the row at `ts` (`None`: no value for that tag).
    pub fn update(&mut self, ts: i64, row: &[Option<f64>]) -> PcaUpdate {
        let Some(monitor) = &self.monitor else {
            self.warm.extend((0..self.columns).map(|j| row.get(j).copied().flatten().unwrap_or(f64::NAN)));
            let have = self.warm.len() / self.columns.max(1);
            if have < self.params.warmup {
                return PcaUpdate::WarmingUp(have);
            }
            let data = std::mem::take(&mut self.warm);
            return match PcaMonitor::fit(&data, self.columns, &self.params) {
                Ok(m) => {
                    self.monitor = Some(m);
                    PcaUpdate::WarmingUp(have)
                }
                Err(e) => PcaUpdate::FitFailed(e),
            };
        };
        let score = monitor.score(row);
        let mut anomaly = None;
        if score.flag {
            if self.run == 0 {
                self.run_start = ts;
            }
            self.run += 1;
            if self.run >= self.params.persistence && !self.active {
                self.active = true;
                anomaly = Some(PcaAnomaly { started: self.run_start, score: score.clone() });
            }
        } else {
            self.run = 0;
            self.active = false;
        }
        PcaUpdate::Scored { score, anomaly, active: self.active }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic standard-normal-ish noise (Box–Muller on an LCG).
    struct Noise(u64);
    impl Noise {
        fn uniform(&mut self) -> f64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }
        fn normal(&mut self) -> f64 {
            let (u, v) = (self.uniform(), self.uniform());
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        }
    }

    /// x0 ~ N(0, 1), x1 = x0 + small noise, x2 independent: a 3-column group
    /// where columns 0 and 1 are strongly correlated.
    fn correlated(n: usize) -> Vec<f64> {
        let mut g = Noise(7);
        let mut d = Vec::with_capacity(3 * n);
        for _ in 0..n {
            let x = g.normal();
            d.extend([10.0 + 2.0 * x, 5.0 + 2.0 * x + 0.1 * g.normal(), 100.0 + 0.5 * g.normal()]);
        }
        d
    }

    #[test]
    fn eigen_decomposition_matches_a_hand_computed_case() {
        // [[2, 1], [1, 2]]: eigenvalues 3 and 1, eigenvectors (1, 1)/√2 and (1, −1)/√2.
        let (vals, vecs) = sorted_eigen(DMatrix::from_row_slice(2, 2, &[2.0, 1.0, 1.0, 2.0]));
        assert!((vals[0] - 3.0).abs() < 1e-12 && (vals[1] - 1.0).abs() < 1e-12, "{vals:?}");
        let s = std::f64::consts::FRAC_1_SQRT_2;
        assert!((vecs[(0, 0)].abs() - s).abs() < 1e-12 && (vecs[(1, 0)].abs() - s).abs() < 1e-12);
        assert!(vecs[(0, 0)] * vecs[(1, 0)] > 0.0, "first vector along (1, 1)");
        assert!(vecs[(0, 1)] * vecs[(1, 1)] < 0.0, "second vector along (1, -1)");
        // A 3×3 case with a known spectrum: diag(4, 2, 1) rotated is still {4, 2, 1}.
        let (vals, _) = sorted_eigen(DMatrix::from_row_slice(3, 3, &[3.0, 1.0, 0.0, 1.0, 3.0, 0.0, 0.0, 0.0, 1.0]));
        assert!(vals.iter().zip([4.0, 2.0, 1.0]).all(|(a, b)| (a - b).abs() < 1e-12), "{vals:?}");
    }

    #[test]
    fn limits_match_reference_values() {
        // F(3, 497; 0.99) = 3.8212 (R: qf(0.99, 3, 497)); the T² limit scales it.
        let l = t2_limit(3, 500, 0.99).expect("limit");
        let expect = 3.0 * 499.0 * 501.0 / (500.0 * 497.0) * 3.82124;
        assert!((l - expect).abs() < 1e-3, "{l} vs {expect}");
        // One discarded eigenvalue λ: SPE/λ ~ χ²(1) exactly, 99 % quantile 6.635.
        // Jackson–Mudholkar is an approximation: within a few percent.
        let q = spe_limit(&[0.5], 0.99).expect("limit");
        assert!((q / 0.5 - 6.635).abs() < 0.35, "{q}");
        // Many equal discarded eigenvalues: SPE ~ λ χ²(k); k = 20, χ²(20; 0.99) = 37.57.
        let q = spe_limit(&[1.0; 20], 0.99).expect("limit");
        assert!((q - 37.57).abs() < 0.5, "{q}");
    }

    #[test]
    fn the_model_keeps_the_correlated_direction() {
        let m = PcaMonitor::fit(&correlated(1000), 3, &PcaParams::default()).expect("fit");
        let ev = m.eigenvalues();
        // Standardised: eigenvalues near 2 (the pair), 1 (the independent column), ~0.
        assert!((ev[0] - 2.0).abs() < 0.1 && (ev[1] - 1.0).abs() < 0.15 && ev[2] < 0.01, "{ev:?}");
        assert_eq!(m.components(), 2, "2 components reach 90 %");
        assert!(m.explained() > 0.99);
        // In-control rows of the same process: about 1 % false alarms per statistic.
        let mut g = Noise(99);
        let (mut t2, mut spe) = (0, 0);
        for _ in 0..5000 {
            let x = g.normal();
            let s = m.score_values(&[10.0 + 2.0 * x, 5.0 + 2.0 * x + 0.1 * g.normal(), 100.0 + 0.5 * g.normal()]);
            t2 += s.t2_flag() as usize;
            spe += s.spe_flag() as usize;
        }
        assert!((20..=90).contains(&t2), "T² false alarms {t2}/5000");
        assert!((20..=90).contains(&spe), "SPE false alarms {spe}/5000");
    }

    #[test]
    fn a_point_breaking_the_correlation_fires_spe_and_names_the_pair() {
        let m = PcaMonitor::fit(&correlated(1000), 3, &PcaParams::default()).expect("fit");
        // Each value is ordinary on its own (1 σ), but x1 should follow x0.
        let s = m.score_values(&[10.0 + 2.0, 5.0 - 2.0, 100.0]);
        assert!(s.spe_flag(), "{s:?}");
        assert!(!s.t2_flag(), "{s:?}");
        assert!(s.flag);
        assert_eq!(s.statistic, Statistic::Spe);
        let named: Vec<usize> = s.contributions.iter().take(2).map(|c| c.0).collect();
        assert!(named.contains(&0) && named.contains(&1), "{s:?}");
        let top2: f64 = s.contributions.iter().take(2).map(|c| c.1).sum();
        assert!(top2 > 0.99, "{s:?}");
        let total: f64 = s.contributions.iter().map(|c| c.1).sum();
        assert!((total - 1.0).abs() < 1e-9);
        assert!(s.contributions.windows(2).all(|w| w[0].1 >= w[1].1), "sorted");
    }

    #[test]
    fn a_point_far_along_the_principal_axis_fires_t2() {
        let m = PcaMonitor::fit(&correlated(1000), 3, &PcaParams::default()).expect("fit");
        // 6 σ along the correlated pair, respecting the correlation.
        let s = m.score_values(&[10.0 + 12.0, 5.0 + 12.0, 100.0]);
        assert!(s.t2_flag() && !s.spe_flag(), "{s:?}");
        assert_eq!(s.statistic, Statistic::T2);
        let named: Vec<usize> = s.contributions.iter().take(2).map(|c| c.0).collect();
        assert!(named.contains(&0) && named.contains(&1), "{s:?}");
        let total: f64 = s.contributions.iter().map(|c| c.1).sum();
        assert!((total - 1.0).abs() < 1e-9);
        // Along the independent column alone: T², named column 2.
        let s = m.score_values(&[10.0, 5.0, 100.0 + 3.0]);
        assert!(s.t2_flag(), "{s:?}");
        assert_eq!(s.contributions.first().map(|c| c.0), Some(2), "{s:?}");
        // An ordinary row is not flagged and carries no contributions.
        let s = m.score_values(&[10.5, 5.5, 100.2]);
        assert!(!s.flag && s.contributions.is_empty(), "{s:?}");
    }

    #[test]
    fn missing_values_are_the_training_mean_and_constant_columns_are_ignored() {
        let mut d = Vec::new();
        let base = correlated(500);
        for r in base.chunks(3) {
            d.extend_from_slice(r);
            d.push(42.0); // a constant tag
        }
        let m = PcaMonitor::fit(&d, 4, &PcaParams::default()).expect("fit");
        assert_eq!(m.ignored(), [3]);
        let full = m.score_values(&[10.0, 5.0, 100.0, 42.0]);
        let gap = m.score(&[Some(10.0), None, Some(100.0), Some(f64::NAN)]);
        assert_eq!(gap.missing, 2);
        assert!(!gap.flag, "{gap:?}");
        // The constant tag moving does not make the model score infinite.
        let moved = m.score_values(&[10.0, 5.0, 100.0, 43.0]);
        assert!((moved.t2 - full.t2).abs() < 1e-9 && (moved.spe - full.spe).abs() < 1e-9);
    }

    #[test]
    fn bad_input_is_an_error() {
        let p = PcaParams::default();
        assert!(matches!(PcaMonitor::fit(&[1.0; 7], 2, &p), Err(PcaError::Shape { .. })));
        assert!(matches!(PcaMonitor::fit(&[1.0; 8], 2, &p), Err(PcaError::TooFewRows { .. })));
        let flat: Vec<f64> = (0..40).map(|i| if i % 2 == 0 { 1.0 } else { i as f64 }).collect();
        assert!(matches!(PcaMonitor::fit(&flat, 2, &p), Err(PcaError::NoVariance { varying: 1, .. })));
        let bad = PcaParams { variance: 1.0, ..p };
        assert!(matches!(PcaMonitor::fit(&correlated(100), 3, &bad), Err(PcaError::Params(_))));
    }

    #[test]
    fn the_detector_warms_up_then_raises_one_anomaly_with_its_start() {
        let p = PcaParams { warmup: 300, persistence: 3, ..Default::default() };
        let mut d = PcaDetector::new(3, p).expect("detector");
        let mut g = Noise(5);
        let mut anomalies = Vec::new();
        for i in 0..600i64 {
            let x = g.normal();
            // Rows 450..460 break the correlation of columns 0 and 1.
            let kick = if (450..460).contains(&i) { 3.0 } else { 0.0 };
            let row = [Some(10.0 + 2.0 * x + kick), Some(5.0 + 2.0 * x + 0.1 * g.normal() - kick), None];
            match d.update(i * 1000, &row) {
                PcaUpdate::WarmingUp(n) => assert!(i < 300 && n == i as usize + 1),
                PcaUpdate::FitFailed(e) => panic!("{e}"),
                PcaUpdate::Scored { anomaly, .. } => anomalies.extend(anomaly),
            }
        }
        assert!(d.monitor().is_some());
        let with_kick: Vec<&PcaAnomaly> = anomalies.iter().filter(|a| a.started >= 450_000).collect();
        assert_eq!(with_kick.len(), 1, "{anomalies:?}");
        assert_eq!(with_kick[0].started, 450_000);
        assert!(with_kick[0].score.contributions.iter().take(2).all(|c| c.0 < 2), "{:?}", with_kick[0]);
        assert!(anomalies.len() <= 2, "few false anomalies with persistence 3: {anomalies:?}");
    }

    #[test]
    fn scoring_a_row_is_fast() {
        // 52 columns, the Tennessee Eastman size; orientation only, printed.
        let mut g = Noise(3);
        let mut d = Vec::new();
        for _ in 0..500 {
            let common = g.normal();
            d.extend((0..52).map(|j| common * (j % 5) as f64 + g.normal()));
        }
        let m = PcaMonitor::fit(&d, 52, &PcaParams::default()).expect("fit");
        let row: Vec<Option<f64>> = d[..52].iter().map(|&x| Some(x)).collect();
        let n = 20_000;
        let t0 = std::time::Instant::now();
        let mut flagged = 0;
        for _ in 0..n {
            flagged += m.score(std::hint::black_box(&row)).flag as usize;
        }
        let per = t0.elapsed() / n;
        println!("scoring one 52-column row ({} components): {per:?} (flagged {flagged})", m.components());
        assert!(per < std::time::Duration::from_millis(1), "{per:?}");
    }
}
