//! `linepilot eval tep` and `eval nab`: the detectors on the Tennessee Eastman
//! and NAB benchmarks, as docs/EVALUATION.md reproduces them.

use std::path::Path;
use std::process::Command;

#[test]
fn eval_tep_without_data_says_where_it_looked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_linepilot"))
        .args(["eval", "tep", "--data"])
        .arg(dir.path())
        .output()
        .expect("linepilot");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no Tennessee Eastman data in") && err.contains("--data"), "{err}");
}

#[test]
fn eval_tep_prints_one_row_per_run() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/tep");
    if !data.join("d00.dat").is_file() {
        println!("SKIPPED: no Tennessee Eastman data at {}", data.display());
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_linepilot"))
        .args(["eval", "tep", "--data"])
        .arg(&data)
        .output()
        .expect("linepilot");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).expect("utf8");
    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| fault")).collect();
    assert_eq!(rows.len(), 23, "22 runs and the mean: {stdout}");
    assert!(rows[0].starts_with("| 0 (normal)"), "{}", rows[0]);
    assert!(stdout.contains("components ("), "{stdout}");
}

/// `linepilot eval nab`: the daemon's per-tag detector over all 58 NAB series with
/// NAB's scorer. The figure is the one docs/EVALUATION.md quotes; this guards it.
#[test]
fn eval_nab_scores_the_whole_corpus() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/nab");
    if !data.join("labels/combined_windows.json").is_file() {
        println!("SKIPPED: no NAB data at {}", data.display());
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_linepilot"))
        .args(["eval", "nab", "--data"])
        .arg(&data)
        .output()
        .expect("linepilot");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).expect("utf8");
    assert!(stdout.contains("58 series, 365558 rows, 116 windows"), "{stdout}");
    let row = stdout.lines().find(|l| l.starts_with("| linepilot")).expect("a result row");
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    let standard: f64 = cells[2].parse().expect("standard score");
    let low_fp: f64 = cells[3].parse().expect("low-FP score");
    let low_fn: f64 = cells[4].parse().expect("low-FN score");
    println!("NAB standard {standard}, reward low FP {low_fp}, reward low FN {low_fn}");
    assert!(standard >= 69.5 && low_fp >= 60.0 && low_fn >= 75.0, "{row}");

    // A missing folder is named.
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_linepilot"))
        .args(["eval", "nab", "--data"])
        .arg(dir.path())
        .output()
        .expect("linepilot");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot load NAB from"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
