//! History mode: a whole run, as fast as the CPU allows, written as InfluxDB
//! line protocol (every tag at its own rate, ns timestamps) plus the ground
//! truth. Samples of a server in a comms loss are left out, as a gateway
//! would not have received them.
//!
//! Line protocol: measurement = asset, field = signal, so the series a
//! gateway stores from `linepilot import` is named like the tag
//! (`filler.fill_level_03`). Integers carry the `i` suffix.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::catalog::Val;
use super::model::{Model, STEP_NS};
use super::scenario::{Scenario, ScenarioError};

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// What a history run wrote.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct HistoryStats {
    pub steps: u64,
    pub samples: u64,
    pub truth_records: u64,
    pub lp_bytes: u64,
    pub start_ns: i64,
    pub end_ns: i64,
    pub elapsed_s: f64,
}

/// Runs `scenario` for `duration_ns` from its `start`, writing line protocol to
/// `lp` and ground-truth JSON lines to `truth`. `progress` is called once per
/// simulated hour with (hours done, hours total).
pub fn run<L: Write, T: Write>(
    scenario: &Scenario,
    path: &str,
    duration_ns: i64,
    lp: &mut L,
    truth: &mut T,
    mut progress: impl FnMut(f64, f64),
) -> std::io::Result<Result<HistoryStats, ScenarioError>> {
    let begun = Instant::now();
    let start_ns = match scenario.start_ns(path) {
        Ok(t) => t,
        Err(e) => return Ok(Err(e)),
    };
    let mut model = match Model::new(scenario, path, start_ns) {
        Ok(m) => m,
        Err(e) => return Ok(Err(e)),
    };
    let prefixes: Vec<Vec<u8>> =
        model.catalog.tags.iter().map(|t| format!("{} {}=", t.asset, t.signal).into_bytes()).collect();
    let mut stats = HistoryStats { start_ns, ..Default::default() };
    let steps = (duration_ns / STEP_NS).max(0) as u64;
    let steps_per_hour = (3_600_000_000_000 / STEP_NS) as u64;
    let total_h = duration_ns as f64 / 3.6e12;
    let mut buf = Vec::with_capacity(1 << 16);
    let mut ts = itoa::Buffer::new();
    for s in 0..=steps {
        if s > 0 {
            model.step();
        }
        let now = model.now_ns();
        let ts_str = ts.format(now).as_bytes().to_vec();
        for (i, prefix) in prefixes.iter().enumerate() {
            if !model.sampled(i) || model.tag_down(i) {
                continue;
            }
            buf.extend_from_slice(prefix);
            match model.values()[i] {
                Val::F64(x) => {
                    let _ = write!(buf, "{x}");
                }
                Val::I64(x) => {
                    let _ = write!(buf, "{x}i");
                }
                Val::Bool(b) => buf.extend_from_slice(if b { b"true" } else { b"false" }),
            }
            buf.push(b' ');
            buf.extend_from_slice(&ts_str);
            buf.push(b'\n');
            stats.samples += 1;
        }
        if s == steps {
            model.finish();
        }
        for r in model.drain_truth() {
            truth.write_all(r.to_line().as_bytes())?;
            truth.write_all(b"\n")?;
            stats.truth_records += 1;
        }
        if buf.len() > 1 << 20 {
            lp.write_all(&buf)?;
            stats.lp_bytes += buf.len() as u64;
            buf.clear();
        }
        if s > 0 && s % steps_per_hour == 0 {
            progress(s as f64 / steps_per_hour as f64, total_h);
        }
    }
    lp.write_all(&buf)?;
    stats.lp_bytes += buf.len() as u64;
    lp.flush()?;
    truth.flush()?;
    stats.steps = steps;
    stats.end_ns = model.now_ns();
    stats.elapsed_s = begun.elapsed().as_secs_f64();
    Ok(Ok(stats))
}

/// The files of a history run in `dir`.
pub fn paths(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (dir.join("line.lp"), dir.join("truth.jsonl"), dir.join("manifest.json"))
}

/// Writes `line.lp`, `truth.jsonl` and `manifest.json` into `dir`.
pub fn write_dir(
    scenario: &Scenario,
    path: &str,
    duration_ns: i64,
    dir: &Path,
    progress: impl FnMut(f64, f64),
) -> Result<HistoryStats, HistoryError> {
    let io = |p: &Path| {
        let p = p.display().to_string();
        move |source| HistoryError::Io { path: p, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let (lp_path, truth_path, manifest_path) = paths(dir);
    let mut lp = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&lp_path).map_err(io(&lp_path))?);
    let mut truth = std::io::BufWriter::new(std::fs::File::create(&truth_path).map_err(io(&truth_path))?);
    let stats = run(scenario, path, duration_ns, &mut lp, &mut truth, progress).map_err(io(&lp_path))??;
    let manifest = serde_json::json!({
        "scenario": scenario.name,
        "scenario_file": path,
        "seed": scenario.seed,
        "line_protocol": "line.lp",
        "ground_truth": "truth.jsonl",
        "stats": stats,
    });
    let text = serde_json::to_string_pretty(&manifest).unwrap_or_default();
    std::fs::write(&manifest_path, text + "\n").map_err(io(&manifest_path))?;
    Ok(stats)
}
