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
    /// The largest |z| of the row (0 while every column warms up).
    pub score: f64,
    /// `score` reached the threshold.
    pub flag: bool,
    /// (column index, |z|) of the columns at or above half the threshold, largest first.
    pub top: Vec<(usize, f64)>,
}

/// One [`RobustBaseline`] per column.
#[derive(Clone, Debug)]
pub struct RowDetector {
    p: BaselineParams,
    columns: Vec<RobustBaseline>,
}

impl RowDetector {
    /// A detector for `columns` signals.
    pub fn new(columns: usize, p: BaselineParams) -> RowDetector {
        RowDetector { p, columns: (0..columns).map(|_| RobustBaseline::new(p)).collect() }
    }

    /// Learns a row (`None`: no value in that column) and scores it.
    pub fn update(&mut self, row: &[Option<f64>]) -> RowScore {
        let mut top: Vec<(usize, f64)> = Vec::new();
        let mut score = 0.0f64;
        for (i, (d, x)) in self.columns.iter_mut().zip(row).enumerate() {
            if let Some(z) = x.and_then(|x| d.update(x)) {
                let z = z.abs();
                score = score.max(z);
                if z >= self.p.threshold / 2.0 {
                    top.push((i, z));
                }
            }
        }
        top.sort_by(|a, b| b.1.total_cmp(&a.1));
        RowScore { score, flag: score >= self.p.threshold, top }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic noise in [-1, 1).
    fn noise(i: u64) -> f64 {
        let x = i.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) >> 11;
        (x as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
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

    #[test]
    fn rows_name_the_column_that_moved() {
        let mut d = RowDetector::new(3, BaselineParams::default());
        let mut last = None;
        for i in 0..400u64 {
            let spike = if i == 350 { 40.0 } else { 0.0 };
            let row = [Some(100.0 + noise(i)), Some(5.0 + 0.1 * noise(i + 7) + spike * 0.1), None];
            let s = d.update(&row);
            if s.flag {
                assert!(last.is_none(), "one flagged row");
                last = Some((i, s));
            }
        }
        let (i, s) = last.expect("the spike is flagged");
        assert_eq!(i, 350);
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
/// (`top` = `column:|z|` of the contributing columns, `;`-separated) and
/// returns (rows, flagged rows). Cells that are not numbers are gaps.
pub fn score_csv(
    input: impl std::io::BufRead,
    mut out: impl std::io::Write,
    opts: &CsvOptions,
    p: BaselineParams,
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
        for i in 0..100 {
            let temp = if i == 80 { 90.0 } else { 60.0 + (i % 3) as f64 * 0.1 };
            text.push_str(&format!("2026-01-01 00:{:02}:00,{},{temp}\n", i % 60, 10.0 + (i % 5) as f64 * 0.2));
        }
        let mut out = Vec::new();
        let (rows, flagged) =
            score_csv(text.as_bytes(), &mut out, &CsvOptions::default(), BaselineParams::default()).expect("scored");
        assert_eq!((rows, flagged), (100, 1));
        let out = String::from_utf8(out).expect("utf8");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "timestamp,score,flag,top");
        assert!(lines[81].starts_with("2026-01-01 00:20:00,") && lines[81].contains(",1,temp:"), "{}", lines[81]);

        let bad = CsvOptions { value_cols: Some(vec!["pressure".into()]), ..Default::default() };
        let e = score_csv(text.as_bytes(), Vec::new(), &bad, BaselineParams::default()).unwrap_err();
        assert!(e.to_string().contains("no column `pressure`"), "{e}");
    }
}
