//! Streaming anomaly detection without per-tag tuning (issue 5, first part).
//!
//! [`RobustBaseline`] follows one numeric signal with a robust level and
//! scale: it starts from the median and MAD of a warm-up window, then adapts
//! with Huber-clipped exponential updates, so a spike barely moves the
//! baseline and a lasting level shift is learnt within a few times 1/alpha
//! samples. Its score is the robust z-score of each new value against the
//! baseline as it was before the value. [`RowDetector`] runs one baseline
//! per column and names the columns that contributed most. The same code is
//! meant for the daemon and serves `linepilot detect --csv` now.

/// Settings of a [`RobustBaseline`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BaselineParams {
    /// Samples used to start the baseline (median and MAD); no scores before.
    pub warmup: usize,
    /// Adaptation rate of the level (per sample).
    pub alpha: f64,
    /// Adaptation rate of the scale (per sample).
    pub beta: f64,
    /// Residuals are clipped at this many scales before they update the baseline.
    pub clip: f64,
    /// A |z| at or above this flags the sample.
    pub threshold: f64,
}

impl Default for BaselineParams {
    fn default() -> Self {
        BaselineParams { warmup: 30, alpha: 0.02, beta: 0.02, clip: 3.0, threshold: 6.0 }
    }
}

/// A robust, streaming baseline of one signal.
#[derive(Clone, Debug)]
pub struct RobustBaseline {
    p: BaselineParams,
    /// Warm-up values; emptied when the baseline starts.
    warm: Vec<f64>,
    started: bool,
    level: f64,
    scale: f64,
    /// Smallest scale used: a flat signal must not make every tiny change infinite.
    floor: f64,
}

impl RobustBaseline {
    /// A baseline with `p`.
    pub fn new(p: BaselineParams) -> RobustBaseline {
        RobustBaseline { p, warm: Vec::new(), started: false, level: 0.0, scale: 0.0, floor: 0.0 }
    }

    /// Learns `x` and returns its robust z-score against the baseline before
    /// it (`None` during warm-up or for a value that is not finite).
    pub fn update(&mut self, x: f64) -> Option<f64> {
        if !x.is_finite() {
            return None;
        }
        if !self.started {
            self.warm.push(x);
            if self.warm.len() >= self.p.warmup.max(1) {
                self.start();
            }
            return None;
        }
        let scale = self.scale.max(self.floor);
        let r = x - self.level;
        let z = r / scale;
        let c = self.p.clip * scale;
        let clipped = r.clamp(-c, c);
        self.level += self.p.alpha * clipped;
        self.scale = ((1.0 - self.p.beta) * self.scale * self.scale + self.p.beta * clipped * clipped).sqrt();
        Some(z)
    }

    /// The level and scale now (after warm-up).
    pub fn baseline(&self) -> Option<(f64, f64)> {
        self.started.then_some((self.level, self.scale.max(self.floor)))
    }

    /// Median and MAD of the warm-up window.
    fn start(&mut self) {
        let mut v = std::mem::take(&mut self.warm);
        v.sort_by(f64::total_cmp);
        let med = median(&v);
        let mut dev: Vec<f64> = v.iter().map(|x| (x - med).abs()).collect();
        dev.sort_by(f64::total_cmp);
        self.level = med;
        self.scale = 1.4826 * median(&dev);
        // A thousandth of the signal's magnitude, so quantised or flat signals still score sanely.
        self.floor = (med.abs() * 1e-3).max(1e-9);
        self.started = true;
    }
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The verdict on one row of several signals.
#[derive(Clone, Debug, PartialEq)]
pub struct RowScore {
    /// The largest test score of the row relative to its threshold (1.0 = at the
    /// threshold; 0 while every column learns).
    pub score: f64,
    /// An anomaly episode starts in at least one column on this row.
    pub flag: bool,
    /// (column index, score) of the columns at or above half their threshold, largest first.
    pub top: Vec<(usize, f64)>,
}

/// One [`SignalDetector`] per column: the daemon's per-tag detector over a table.
#[derive(Clone, Debug)]
pub struct RowDetector {
    columns: Vec<SignalDetector>,
}

impl RowDetector {
    /// A detector for `columns` signals.
    pub fn new(columns: usize, p: SignalParams) -> RowDetector {
        RowDetector { columns: (0..columns).map(|_| SignalDetector::new(p)).collect() }
    }

    /// Learns a row (`None`: no value in that column) and scores it.
    pub fn update(&mut self, row: &[Option<f64>]) -> RowScore {
        let mut top: Vec<(usize, f64)> = Vec::new();
        let mut score = 0.0f64;
        let mut flag = false;
        for (i, (d, x)) in self.columns.iter_mut().zip(row).enumerate() {
            let Some(x) = x else { continue };
            let v = d.update(*x);
            score = score.max(v.score);
            flag |= v.start;
            if v.score >= 0.5 {
                top.push((i, v.score));
            }
        }
        top.sort_by(|a, b| b.1.total_cmp(&a.1));
        RowScore { score, flag, top }
    }
}

/// Settings of a [`SignalDetector`]: one set for every tag, no per-tag tuning.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SignalParams {
    /// The level baseline (spikes, dips and level shifts of the value).
    pub level: BaselineParams,
    /// The step baseline (sample-to-sample changes: sudden jumps, new noise).
    pub step: BaselineParams,
    /// CUSUM allowance, in baseline scales: slower drifts than this are ignored.
    pub cusum_k: f64,
    /// CUSUM decision level, in baseline scales.
    pub cusum_h: f64,
    /// Samples after the start of an anomaly episode during which further flags
    /// belong to it and do not start a new one.
    pub quiet: usize,
    /// A test flags only when its score is above `margin` times its own recent
    /// peak: what the tag has done before is not news (daily swings, routine spikes).
    pub margin: f64,
    /// Samples over which a test's peak decays (to 1/e).
    pub memory: f64,
    /// Quantisation levels of the pattern test over the value's range so far.
    pub pattern_levels: u32,
    /// Context lengths of the pattern test (1..=orders samples).
    pub pattern_orders: usize,
    /// Share of context lengths that must be new to flag (0 disables the test).
    pub pattern_threshold: f64,
    /// Samples a detector learns before it may flag (its first values are all news).
    pub learning: usize,
    /// Samples collected to look for a cycle (the seasonal test); 0 disables it.
    pub season_window: usize,
    /// Autocorrelation a cycle needs to be used.
    pub season_min_acf: f64,
    /// |z| of the residual against the cycle's profile that flags.
    pub season_threshold: f64,
    /// Adaptation rate of the slow baseline.
    pub slow_alpha: f64,
    /// |z| against the slow baseline below which a value is not news, however it
    /// compares with the recent past (daily swings within the usual range).
    pub slow_threshold: f64,
    /// A flag inside an open episode starts a new one when its score is at least
    /// this many times the highest score of the episode so far (0: never).
    pub escalate: f64,
    /// Once a cycle is known, the step test follows the residual against it.
    pub step_deseason: bool,
    /// Once a cycle is known, the change-point test follows the residual against it.
    pub cusum_deseason: bool,
    /// Quantisation levels of the sequence test's contexts (0 disables the test).
    pub seq_levels: u32,
    /// Longest context of the sequence test (orders 1..=seq_orders).
    pub seq_orders: usize,
    /// Samples over which the sequence test averages its share of new contexts.
    pub seq_short: f64,
    /// Samples over which it learns the usual level and spread of that average.
    pub seq_long: f64,
    /// Smallest spread of that average (a tag that settled still varies a little).
    pub seq_floor: f64,
    /// z of the short average against its usual level that flags.
    pub seq_threshold: f64,
}

/// The defaults were chosen on NAB (docs/EVALUATION.md: a search over the
/// corpus with the NAB scorer, standard profile); they are the same for every tag.
impl Default for SignalParams {
    fn default() -> Self {
        let base = BaselineParams { alpha: 0.00309, beta: 0.00309, ..BaselineParams::default() };
        SignalParams {
            level: BaselineParams { threshold: 3.735, ..base },
            step: BaselineParams { threshold: 5.041, ..base },
            cusum_k: 1.25,
            cusum_h: 40.0,
            quiet: 123,
            margin: 0.936,
            memory: 11157.0,
            pattern_levels: 21,
            pattern_orders: 3,
            pattern_threshold: 1.0,
            learning: 300,
            season_window: 682,
            season_min_acf: 0.35,
            season_threshold: 5.689,
            slow_alpha: 0.00157,
            slow_threshold: 2.932,
            escalate: 2.884,
            step_deseason: true,
            cusum_deseason: true,
            seq_levels: 7,
            seq_orders: 6,
            seq_short: 17.17,
            seq_long: 3233.0,
            seq_floor: 0.03663,
            seq_threshold: 4.577,
        }
    }
}

/// Which test fired.
#[derive(Copy, Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    /// The value is far from its baseline (spike, dip, new level).
    Level,
    /// The value jumped from the previous sample.
    Step,
    /// A sustained shift accumulated (CUSUM change point).
    ChangePoint,
    /// The recent sequence of values has not been seen before (new shape or level).
    Pattern,
    /// The value is unusual for this point of the signal's cycle (a missed daily
    /// peak, a flat stretch where it normally moves).
    Seasonal,
    /// Sequences of values the signal has not shown before come much more often
    /// than usual (a change of shape within the usual range).
    Sequence,
}

/// The verdict on one sample of a [`SignalDetector`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Verdict {
    /// The strongest test statistic relative to its own threshold (1.0 = at threshold).
    pub score: f64,
    /// The test that gave `score`, if any test scored.
    pub kind: Option<AnomalyKind>,
    /// `score` reached 1.0.
    pub flag: bool,
    /// This sample starts a new anomaly episode (a flag more than `quiet` samples
    /// after the previous start).
    pub start: bool,
}

/// The univariate detector run on every numeric tag: a robust level baseline,
/// a robust baseline of the sample-to-sample step, a two-sided CUSUM change-point
/// test, a pattern test (value levels never seen), a seasonal test and a sequence
/// test (new shapes), grouped into episodes so one upset is one event. Once a cycle
/// is found, the step and change-point tests follow the residual against it.
/// Memory: about 40 KiB per tag (two 16 KiB context memories and the cycle's profile).
#[derive(Clone, Debug)]
pub struct SignalDetector {
    p: SignalParams,
    level: RobustBaseline,
    step: RobustBaseline,
    /// The previous value, or its residual against the cycle (true).
    prev: Option<(f64, bool)>,
    cusum_pos: f64,
    cusum_neg: f64,
    /// The change-point test follows the seasonal residual (not the slow baseline).
    cusum_on_season: bool,
    /// Samples left before a flag may start a new episode (0: none open).
    open: usize,
    /// Decaying peak of each test's score (level, step, change point, seasonal, sequence).
    peaks: [f64; 5],
    season: Season,
    pattern: PatternMemory,
    sequence: SequenceTest,
    /// A slow baseline: the value must also be unusual for the tag in the long run.
    slow: RobustBaseline,
    /// Finite samples seen.
    seen: usize,
    /// Highest score since the open episode started.
    episode_peak: f64,
}

impl SignalDetector {
    /// A detector with `p`.
    pub fn new(p: SignalParams) -> SignalDetector {
        SignalDetector {
            p,
            level: RobustBaseline::new(p.level),
            step: RobustBaseline::new(p.step),
            prev: None,
            cusum_pos: 0.0,
            cusum_neg: 0.0,
            cusum_on_season: false,
            open: 0,
            peaks: [0.0; 5],
            season: Season::new(p),
            pattern: PatternMemory::new(p.pattern_levels, p.pattern_orders),
            sequence: SequenceTest::new(&p),
            slow: RobustBaseline::new(BaselineParams {
                alpha: p.slow_alpha,
                beta: p.slow_alpha,
                clip: p.level.clip,
                ..p.level
            }),
            seen: 0,
            episode_peak: 0.0,
        }
    }

    /// The level baseline (level, scale) before the next sample, once warmed up.
    pub fn baseline(&self) -> Option<(f64, f64)> {
        self.level.baseline()
    }

    /// Learns `x` and judges it. Values that are not finite are skipped (no verdict change).
    pub fn update(&mut self, x: f64) -> Verdict {
        // (score relative to its threshold, novel: above `margin` x the test's recent peak)
        let mut scores: [(f64, bool); 5] = [(0.0, false); 5];
        let learning = self.seen < self.p.learning;
        if x.is_finite() {
            self.seen += 1;
            let slow = self.slow.update(x);
            let slow_gate = slow.is_none_or(|z| z.abs() >= self.p.slow_threshold);
            let season = self.season.update(x);
            if let Some(z) = season {
                scores[3].0 = z.abs() / self.p.season_threshold;
            }
            // The change-point test accumulates deviations from the slow baseline or,
            // once a cycle is known, from the cycle's profile.
            let on_season = self.p.cusum_deseason && season.is_some();
            if on_season != self.cusum_on_season {
                // A new reference: what was accumulated against the old one is void.
                (self.cusum_pos, self.cusum_neg, self.cusum_on_season) = (0.0, 0.0, on_season);
            }
            let cusum_z = if on_season { season } else { slow };
            if let Some(z) = cusum_z {
                let z = z.clamp(-self.p.level.threshold, self.p.level.threshold);
                self.cusum_pos = (self.cusum_pos + z - self.p.cusum_k).max(0.0);
                self.cusum_neg = (self.cusum_neg - z - self.p.cusum_k).max(0.0);
                scores[2].0 = self.cusum_pos.max(self.cusum_neg) / self.p.cusum_h;
            }
            if let Some(z) = self.level.update(x) {
                scores[0].0 = z.abs() / self.p.level.threshold;
            }
            // With a cycle known, the step test follows the residual against the
            // cycle's profile: a jump the tag makes every day at this time is not news.
            let y = match self.season.residual() {
                Some(r) if self.p.step_deseason => (r, true),
                _ => (x, false),
            };
            // (No step between a value and a residual, when the test switches.)
            if let Some(prev) = self.prev.filter(|p| p.1 == y.1) {
                if let Some(z) = self.step.update(y.0 - prev.0) {
                    scores[1].0 = z.abs() / self.p.step.threshold;
                }
            }
            self.prev = Some(y);
            if let Some(z) = self.sequence.update(x) {
                scores[4].0 = z.max(0.0) / self.p.seq_threshold;
            }
            let keep = 1.0 - 1.0 / self.p.memory.max(1.0);
            for (i, (s, peak)) in scores.iter_mut().zip(self.peaks.iter_mut()).enumerate() {
                // A change point, a seasonal residual and the sequence test are
                // themselves comparisons with the long run.
                let gate = slow_gate || i >= 2;
                s.1 = s.0 >= 1.0 && s.0 > *peak * self.p.margin && gate && !learning;
                *peak = (*peak * keep).max(s.0);
            }
        }
        let pattern = if x.is_finite() { self.pattern.update(x) } else { 0.0 };
        const KINDS: [AnomalyKind; 6] = [
            AnomalyKind::Level,
            AnomalyKind::Step,
            AnomalyKind::ChangePoint,
            AnomalyKind::Seasonal,
            AnomalyKind::Sequence,
            AnomalyKind::Pattern,
        ];
        let scores = [
            scores[0],
            scores[1],
            scores[2],
            scores[3],
            scores[4],
            if self.p.pattern_threshold > 0.0 {
                (pattern / self.p.pattern_threshold, pattern >= self.p.pattern_threshold && !learning)
            } else {
                (0.0, false)
            },
        ];
        let mut best: (f64, Option<AnomalyKind>) = (0.0, None);
        let mut flag = false;
        for (i, &(s, novel)) in scores.iter().enumerate() {
            if (novel, s) > (flag, best.0) {
                best = (s, Some(KINDS[i]));
                flag = novel;
            }
        }
        if scores[2].0 >= 1.0 {
            // The change is registered: start accumulating evidence of the next one.
            self.cusum_pos = 0.0;
            self.cusum_neg = 0.0;
        }
        // A much stronger upset inside an open episode is news of its own.
        let escalated = self.p.escalate > 0.0 && best.0 >= self.p.escalate * self.episode_peak;
        let start = flag && (self.open == 0 || escalated);
        if start {
            self.open = self.p.quiet.max(1);
            self.episode_peak = best.0;
        } else if x.is_finite() {
            self.open = self.open.saturating_sub(1);
            self.episode_peak = self.episode_peak.max(best.0);
        }
        Verdict { score: best.0, kind: best.1, flag, start }
    }
}

/// The seasonal test: after `season_window` samples it looks for a cycle (the
/// first autocorrelation peak after the autocorrelation has crossed zero, if it
/// reaches `season_min_acf`); with one, it keeps a per-phase profile of the
/// cycle and scores each value's residual against it with a robust baseline.
#[derive(Clone, Debug)]
struct Season {
    window: usize,
    min_acf: f64,
    warm: Vec<f64>,
    /// The warm-up has been searched for a cycle.
    looked: bool,
    /// The cycle's profile, one level per phase (empty: no cycle found or not yet looked).
    profile: Vec<f64>,
    phase: usize,
    residual: RobustBaseline,
    /// The last value's residual against the profile (`None` without a cycle).
    last: Option<f64>,
}

/// Adaptation of the seasonal profile, per cycle.
const SEASON_ALPHA: f64 = 0.02;

/// Residuals that start the seasonal residual's baseline (median and MAD).
const SEASON_RESIDUAL_WARMUP: usize = 60;

impl Season {
    fn new(p: SignalParams) -> Season {
        Season {
            window: p.season_window,
            min_acf: p.season_min_acf,
            warm: Vec::new(),
            looked: false,
            profile: Vec::new(),
            phase: 0,
            residual: RobustBaseline::new(BaselineParams { warmup: SEASON_RESIDUAL_WARMUP, ..p.level }),
            last: None,
        }
    }

    /// Learns `x` (finite); the robust z of its residual once a cycle is known.
    fn update(&mut self, x: f64) -> Option<f64> {
        if self.profile.is_empty() {
            if self.window == 0 || self.looked {
                return None;
            }
            self.warm.push(x);
            if self.warm.len() == self.window {
                if let Some(period) = find_period(&self.warm, self.min_acf) {
                    // Start the profile from the last full cycle, the phase where the window ends.
                    let n = self.warm.len();
                    self.profile = self.warm[n - period..].to_vec();
                    self.phase = 0;
                }
                self.looked = true;
                self.warm = Vec::new();
            }
            return None;
        }
        let expected = self.profile[self.phase];
        let r = x - expected;
        self.last = Some(r);
        let z = self.residual.update(r);
        let scale = self.residual.baseline().map_or(f64::INFINITY, |b| b.1);
        let c = 3.0 * scale;
        self.profile[self.phase] += SEASON_ALPHA * if c.is_finite() { r.clamp(-c, c) } else { r };
        self.phase = (self.phase + 1) % self.profile.len();
        z
    }

    /// The residual of the last value against the cycle's profile, once a cycle is known.
    fn residual(&self) -> Option<f64> {
        self.last
    }
}

/// The cycle length of `xs`: the lag of the highest autocorrelation after the
/// autocorrelation first drops below zero, if it reaches `min_acf`.
fn find_period(xs: &[f64], min_acf: f64) -> Option<usize> {
    let n = xs.len();
    let mean = xs.iter().sum::<f64>() / n as f64;
    let c: Vec<f64> = xs.iter().map(|x| x - mean).collect();
    let var: f64 = c.iter().map(|v| v * v).sum();
    if var <= 0.0 || n < 8 {
        return None;
    }
    // Autocorrelation over the n - lag overlapping pairs, so long lags are not penalised.
    let acf = |lag: usize| {
        c[..n - lag].iter().zip(&c[lag..]).map(|(a, b)| a * b).sum::<f64>() / (n - lag) as f64 / (var / n as f64)
    };
    let max_lag = n / 2;
    let mut lag = 1;
    while lag < max_lag && acf(lag) > 0.0 {
        lag += 1;
    }
    let (mut best, mut best_acf) = (0, f64::NEG_INFINITY);
    for l in lag..max_lag {
        let a = acf(l);
        if a > best_acf {
            best = l;
            best_acf = a;
        }
    }
    (best > 1 && best_acf >= min_acf).then_some(best)
}

/// The sequence test, a context memory in the spirit of CAD OSE with a score in
/// the spirit of HTM's anomaly likelihood: a [`PatternMemory`] of contexts of
/// 1..=`seq_orders` quantised values gives, per sample, the share of its contexts
/// that are new; the test follows a short average of that share and scores how
/// far it is above its own usual level, in units of its usual spread. A signal
/// always makes some new contexts; a change of shape makes many at once.
#[derive(Clone, Debug)]
struct SequenceTest {
    memory: Option<PatternMemory>,
    short_rate: f64,
    long_rate: f64,
    floor: f64,
    short: f64,
    mean: f64,
    var: f64,
    /// Averages seen (the usual level is not trusted before `1/long_rate / 4`).
    n: usize,
}

impl SequenceTest {
    fn new(p: &SignalParams) -> SequenceTest {
        SequenceTest {
            memory: (p.seq_levels > 0).then(|| PatternMemory::new(p.seq_levels, p.seq_orders)),
            short_rate: 1.0 / p.seq_short.max(1.0),
            long_rate: 1.0 / p.seq_long.max(1.0),
            floor: p.seq_floor,
            short: 0.0,
            mean: 0.0,
            var: 0.0,
            n: 0,
        }
    }

    /// Learns `x` (finite); the z of the short average of new contexts, once known.
    fn update(&mut self, x: f64) -> Option<f64> {
        let m = self.memory.as_mut()?;
        let cleared = m.clears;
        let share = m.update(x);
        if !m.started || m.clears != cleared {
            // Everything is new after the memory starts over: learn again silently.
            self.n = 0;
            return None;
        }
        self.short += self.short_rate * (share - self.short);
        self.n += 1;
        if self.n == 1 {
            (self.short, self.mean, self.var) = (share, share, 0.0);
            return None;
        }
        let sd = self.var.sqrt().max(self.floor);
        let z = (self.short - self.mean) / sd;
        let d = self.short - self.mean;
        self.mean += self.long_rate * d;
        self.var = (1.0 - self.long_rate) * (self.var + self.long_rate * d * d);
        (self.n as f64 * self.long_rate >= 0.25).then_some(z)
    }
}

/// Samples that set the pattern test's first value range; no pattern scores before.
const PATTERN_WARMUP: usize = 30;

/// The memory of the pattern test: which short sequences of quantised values
/// the signal has shown. The value is quantised into `levels` steps between the
/// lowest and highest values seen; a sequence of the last k levels is a context
/// of order k. The score is the share of orders 1..=K whose current context is
/// new. The memory holds at most `PATTERN_MAX_CONTEXTS` contexts, then starts over.
#[derive(Clone, Debug)]
struct PatternMemory {
    levels: u32,
    orders: usize,
    /// Warm-up values (the first range); empty once started.
    warm: Vec<f64>,
    started: bool,
    lo: f64,
    hi: f64,
    recent: std::collections::VecDeque<u32>,
    /// One bit per hashed context (`PATTERN_BITS` bits): the contexts seen.
    seen: Vec<u64>,
    /// Bits set in `seen`.
    filled: usize,
    /// Times the memory started over.
    clears: usize,
}

/// Size of the pattern memory in bits (16 KiB): 16 levels and 3 orders give at
/// most 4,368 contexts per quantisation, so few contexts share a bit.
const PATTERN_BITS: usize = 1 << 17;

/// Contexts one pattern memory holds before it forgets them all (1/8 of its bits,
/// so a new context collides with a seen one at most one time in eight).
const PATTERN_MAX_CONTEXTS: usize = PATTERN_BITS / 8;

impl PatternMemory {
    fn new(levels: u32, orders: usize) -> PatternMemory {
        PatternMemory {
            levels: levels.max(2),
            orders: orders.max(1),
            warm: Vec::new(),
            started: false,
            lo: f64::INFINITY,
            hi: f64::NEG_INFINITY,
            recent: std::collections::VecDeque::new(),
            seen: Vec::new(),
            filled: 0,
            clears: 0,
        }
    }

    /// Learns `x` (finite) and returns the share of new contexts (0 during warm-up).
    fn update(&mut self, x: f64) -> f64 {
        if !self.started {
            self.warm.push(x);
            if self.warm.len() < PATTERN_WARMUP {
                return 0.0;
            }
            self.started = true;
            let warm = std::mem::take(&mut self.warm);
            self.lo = warm.iter().copied().fold(f64::INFINITY, f64::min);
            self.hi = warm.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            for v in warm {
                self.learn(v);
            }
            return 0.0;
        }
        let new = self.learn(x);
        if self.recent.len() < self.orders {
            return 0.0;
        }
        new as f64 / self.orders as f64
    }

    /// Adds `x` to the contexts; returns how many of its contexts were new.
    fn learn(&mut self, x: f64) -> usize {
        self.lo = self.lo.min(x);
        self.hi = self.hi.max(x);
        let span = (self.hi - self.lo).max(1e-12);
        let top = self.levels as f64 - 1.0;
        let q = (((x - self.lo) / span) * self.levels as f64).floor().clamp(0.0, top) as u32;
        self.recent.push_front(q);
        self.recent.truncate(self.orders);
        if self.seen.is_empty() {
            self.seen = vec![0; PATTERN_BITS / 64];
        }
        if self.filled >= PATTERN_MAX_CONTEXTS {
            self.seen.fill(0);
            self.filled = 0;
            self.clears += 1;
        }
        // FNV-1a over (level, position) of the last k levels, k = 1..=orders.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut new = 0usize;
        for (k, &l) in self.recent.iter().enumerate() {
            h = (h ^ (l as u64 + 1 + ((k as u64) << 32))).wrapping_mul(0x0000_0100_0000_01b3);
            // The top bits of a multiplicative mix of the hash pick the context's bit.
            let bit =
                ((h ^ (h >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - PATTERN_BITS.trailing_zeros())) as usize;
            let (word, mask) = (bit / 64, 1u64 << (bit % 64));
            if self.seen[word] & mask == 0 {
                self.seen[word] |= mask;
                self.filled += 1;
                new += 1;
            }
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic noise in [-1, 1) (splitmix64 of the index: no structure in i).
    fn noise(i: u64) -> f64 {
        let mut z = i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }

    #[test]
    fn a_spike_is_flagged_and_barely_moves_the_baseline() {
        let mut d = RobustBaseline::new(BaselineParams::default());
        let mut flagged = Vec::new();
        for i in 0..500u64 {
            let x = 50.0 + noise(i) + if i == 300 { 25.0 } else { 0.0 };
            if let Some(z) = d.update(x) {
                if z.abs() >= 6.0 {
                    flagged.push(i);
                }
            }
        }
        assert_eq!(flagged, [300]);
        let (level, _) = d.baseline().expect("started");
        assert!((level - 50.0).abs() < 0.5, "level {level}");
    }

    #[test]
    fn a_level_shift_is_flagged_then_learnt() {
        let mut d = RobustBaseline::new(BaselineParams::default());
        let mut flagged = Vec::new();
        for i in 0..2000u64 {
            let x = if i < 500 { 10.0 } else { 20.0 } + 0.5 * noise(i);
            if d.update(x).is_some_and(|z| z.abs() >= 6.0) {
                flagged.push(i);
            }
        }
        assert_eq!(flagged.first(), Some(&500), "{flagged:?}");
        assert!(flagged.iter().all(|&i| i < 1000), "the new level is learnt: {flagged:?}");
        let (level, _) = d.baseline().expect("started");
        assert!((level - 20.0).abs() < 0.5, "level {level}");
    }

    #[test]
    fn warm_up_and_gaps_give_no_score() {
        let mut d = RobustBaseline::new(BaselineParams { warmup: 5, ..Default::default() });
        for x in [1.0, 2.0, 3.0, 4.0] {
            assert_eq!(d.update(x), None);
        }
        assert_eq!(d.update(f64::NAN), None);
        assert_eq!(d.update(5.0), None, "the 5th value starts the baseline");
        assert!(d.update(3.0).is_some());
    }

    #[test]
    fn a_flat_signal_does_not_flag_its_quantisation_step() {
        let mut d = RobustBaseline::new(BaselineParams::default());
        let mut flagged = 0;
        for i in 0..1000u64 {
            // A temperature that reads 21.5 and now and then 21.6 (0.1 resolution).
            let x = if i % 97 == 0 { 21.6 } else { 21.5 };
            if d.update(x).is_some_and(|z| z.abs() >= 6.0) {
                flagged += 1;
            }
        }
        assert!(flagged <= 1, "{flagged} flags on a 0.1 step of a flat signal");
    }

    /// A day of 288 five-minute samples: a daily swing of ±10 around 50, and noise.
    fn daily(i: u64) -> f64 {
        50.0 + 10.0 * (i as f64 * std::f64::consts::TAU / 288.0).sin() + 0.5 * noise(i)
    }

    fn starts(p: SignalParams, xs: impl Iterator<Item = f64>) -> Vec<(usize, Option<AnomalyKind>)> {
        let mut d = SignalDetector::new(p);
        xs.enumerate()
            .filter_map(|(i, x)| {
                let v = d.update(x);
                v.start.then_some((i, v.kind))
            })
            .collect()
    }

    #[test]
    fn a_routine_daily_swing_is_learnt_and_a_spike_is_one_episode() {
        let p = SignalParams::default();
        let n = 288 * 10;
        let spike_at = 288 * 8 + 100;
        let xs = (0..n as u64).map(|i| daily(i) + if i as usize == spike_at { 30.0 } else { 0.0 });
        let s = starts(p, xs);
        let late: Vec<usize> = s.iter().map(|x| x.0).filter(|&i| i > 288 * 3).collect();
        assert_eq!(late, [spike_at], "after three days only the spike starts an episode: {s:?}");
    }

    #[test]
    fn a_new_level_outside_the_usual_range_is_found_at_once() {
        let p = SignalParams::default();
        let shift_at = 288 * 6;
        let xs = (0..(288 * 8) as u64).map(|i| daily(i) + if i as usize >= shift_at { 25.0 } else { 0.0 });
        let s = starts(p, xs);
        let first_late = s.iter().map(|x| x.0).find(|&i| i > 288 * 3);
        assert!(first_late.is_some_and(|i| (shift_at..shift_at + 5).contains(&i)), "{s:?}");
    }

    #[test]
    fn the_cycle_is_found_and_a_missed_swing_is_seasonal() {
        // The daily swing (288 samples) is found in the first 750 samples.
        let xs: Vec<f64> = (0..750u64).map(daily).collect();
        let p = find_period(&xs, 0.6).expect("a cycle");
        assert!((285..=291).contains(&p), "period {p}");
        let noise_only: Vec<f64> = (0..750u64).map(noise).collect();
        assert_eq!(find_period(&noise_only, 0.6), None);
        // Day 6 stays flat at the mean: every value is inside the usual range, but
        // not at this time of day.
        let flat = 288 * 6..288 * 7;
        let xs =
            (0..(288 * 8) as u64).map(|i| if flat.contains(&(i as usize)) { 50.0 + 0.5 * noise(i) } else { daily(i) });
        let s = starts(SignalParams::default(), xs);
        let late: Vec<_> = s.iter().filter(|x| x.0 > 288 * 3).collect();
        let first = late.first().expect("the flat day is found");
        assert!(flat.contains(&first.0) && first.0 < flat.start + 100, "{s:?}");
        // Both tests that compare with the cycle may find it: the seasonal residual
        // at once, or the change-point test, which accumulates that residual.
        assert!(matches!(first.1, Some(AnomalyKind::Seasonal | AnomalyKind::ChangePoint)), "{s:?}");
    }

    #[test]
    fn a_jump_made_every_day_is_learnt() {
        // A square wave: the value jumps at the same two times every day. Once the
        // cycle is known the jumps are part of it, and only the missed jump of day 6
        // starts an episode.
        let missed = 288 * 6 + 144;
        let xs = (0..(288 * 8) as u64).map(|i| {
            let i = i as usize;
            let high = i % 288 >= 144 && !(missed..missed + 144).contains(&i);
            if high {
                60.0
            } else {
                40.0
            }
        });
        let s = starts(SignalParams::default(), xs);
        let late: Vec<usize> = s.iter().map(|x| x.0).filter(|&i| i > 288 * 3).collect();
        assert!(late.first().is_some_and(|&i| (missed..missed + 10).contains(&i)), "{s:?}");
        assert!(late.iter().all(|&i| i >= missed), "{s:?}");
    }

    #[test]
    fn a_stronger_upset_inside_an_episode_is_an_episode_of_its_own() {
        // A spike, and 50 samples later (inside the first one's episode) a spike
        // four times as large.
        let xs = (0..2000u64).map(|i| {
            50.0 + noise(i)
                + match i {
                    1500 => 10.0,
                    1550 => 40.0,
                    _ => 0.0,
                }
        });
        let s: Vec<usize> = starts(SignalParams::default(), xs).iter().map(|x| x.0).filter(|&i| i > 1000).collect();
        assert_eq!(s, [1500, 1550]);
    }

    #[test]
    fn a_sustained_shift_is_a_change_point() {
        // A shift of 2.8 standard deviations of the noise, with the level and step
        // tests switched off: the CUSUM on the slow baseline accumulates it.
        let d0 = SignalParams::default();
        let p = SignalParams {
            level: BaselineParams { threshold: 1e9, ..d0.level },
            step: BaselineParams { threshold: 1e9, ..d0.step },
            ..d0
        };
        let mut d = SignalDetector::new(p);
        let mut found = None;
        for i in 0..3000u64 {
            let x = 10.0 + noise(i) + if i >= 2000 { 1.6 } else { 0.0 };
            let v = d.update(x);
            if v.start && i > 500 {
                found = Some((i, v.kind));
                break;
            }
        }
        let (i, kind) = found.expect("the shift is found");
        assert!((2000..2200).contains(&i), "found at {i}");
        assert_eq!(kind, Some(AnomalyKind::ChangePoint));
    }

    #[test]
    fn rows_name_the_column_that_moved() {
        let mut d = RowDetector::new(3, SignalParams::default());
        let mut last = None;
        for i in 0..800u64 {
            let spike = if i == 650 { 40.0 } else { 0.0 };
            let row = [Some(100.0 + noise(i)), Some(5.0 + 0.1 * noise(i + 7) + spike * 0.1), None];
            let s = d.update(&row);
            if s.flag {
                assert!(last.is_none(), "one flagged row");
                last = Some((i, s));
            }
        }
        let (i, s) = last.expect("the spike is flagged");
        assert_eq!(i, 650);
        assert_eq!(s.top.first().map(|t| t.0), Some(1), "{s:?}");
    }
}

/// Why a CSV could not be scored.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The file is not what the options describe.
    #[error("{0}")]
    Csv(String),
}

/// Which columns of a CSV to score.
#[derive(Clone, Debug, Default)]
pub struct CsvOptions {
    /// The time column, copied to the output (default: a column named
    /// `timestamp` or `time` if there is one, else the row number).
    pub time_col: Option<String>,
    /// The columns to score (default: every other column).
    pub value_cols: Option<Vec<String>>,
}

/// Scores every row of a CSV with a header: writes `time,score,flag,top`
/// (`score` relative to the threshold, `flag` 1 where an anomaly episode starts,
/// `top` = `column:score` of the contributing columns, `;`-separated) and returns
/// (rows, flagged rows). Cells that are not numbers are gaps.
pub fn score_csv(
    input: impl std::io::BufRead,
    mut out: impl std::io::Write,
    opts: &CsvOptions,
    p: SignalParams,
) -> Result<(u64, u64), DetectError> {
    let mut lines = input.lines();
    let header = match lines.next() {
        Some(h) => split_csv(&h?),
        None => return Err(DetectError::Csv("the file is empty (a header line is needed)".into())),
    };
    let find = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| DetectError::Csv(format!("no column `{name}` (the header has: {})", header.join(", "))))
    };
    let time = match &opts.time_col {
        Some(t) => Some(find(t)?),
        None => header.iter().position(|h| h == "timestamp" || h == "time"),
    };
    let values: Vec<usize> = match &opts.value_cols {
        Some(cols) => cols.iter().map(|c| find(c)).collect::<Result<_, _>>()?,
        None => (0..header.len()).filter(|i| Some(*i) != time).collect(),
    };
    if values.is_empty() {
        return Err(DetectError::Csv("no column to score".into()));
    }
    let mut det = RowDetector::new(values.len(), p);
    writeln!(out, "{},score,flag,top", time.map_or("row", |t| header[t].as_str()))?;
    let (mut rows, mut flagged) = (0u64, 0u64);
    for line in lines {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        rows += 1;
        let cells = split_csv(&line);
        let row: Vec<Option<f64>> =
            values.iter().map(|&i| cells.get(i).and_then(|c| c.trim().parse::<f64>().ok())).collect();
        let s = det.update(&row);
        flagged += s.flag as u64;
        let top: Vec<String> = s.top.iter().map(|(i, z)| format!("{}:{z:.2}", header[values[*i]])).collect();
        let when = match time {
            Some(t) => cells.get(t).cloned().unwrap_or_default(),
            None => rows.to_string(),
        };
        writeln!(out, "{},{:.3},{},{}", quote(&when), s.score, s.flag as u8, quote(&top.join(";")))?;
    }
    Ok((rows, flagged))
}

/// Splits one CSV line (RFC 4180 quotes; no line breaks inside quotes).
fn split_csv(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.trim_end_matches('\r').chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn quote(s: &str) -> String {
    if s.contains([',', '"']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod csv_tests {
    use super::*;

    #[test]
    fn csv_fields_split_with_quotes() {
        assert_eq!(split_csv(r#"a,"b,c","d""e",,f"#), ["a", "b,c", "d\"e", "", "f"]);
    }

    #[test]
    fn a_csv_is_scored_row_by_row() {
        let mut text = String::from("timestamp,\"flow, l/min\",temp\n");
        for i in 0..600 {
            let temp = if i == 500 { 90.0 } else { 60.0 + (i % 3) as f64 * 0.1 };
            text.push_str(&format!("2026-01-01 00:{:02}:00,{},{temp}\n", i % 60, 10.0 + (i % 5) as f64 * 0.2));
        }
        let mut out = Vec::new();
        let (rows, flagged) =
            score_csv(text.as_bytes(), &mut out, &CsvOptions::default(), SignalParams::default()).expect("scored");
        assert_eq!((rows, flagged), (600, 1));
        let out = String::from_utf8(out).expect("utf8");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "timestamp,score,flag,top");
        assert!(lines[501].starts_with("2026-01-01 00:20:00,") && lines[501].contains(",1,\"temp:"), "{}", lines[501]);

        let bad = CsvOptions { value_cols: Some(vec!["pressure".into()]), ..Default::default() };
        let e = score_csv(text.as_bytes(), Vec::new(), &bad, SignalParams::default()).unwrap_err();
        assert!(e.to_string().contains("no column `pressure`"), "{e}");
    }
}
