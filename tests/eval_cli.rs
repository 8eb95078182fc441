//! `linepilot eval tep`, `eval nab` and `eval cmapss`: the detectors on the
//! Tennessee Eastman and NAB benchmarks and the RUL estimator on C-MAPSS, as
//! docs/EVALUATION.md reproduces them.

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

/// `linepilot eval cmapss`: the RUL estimator fitted on C-MAPSS FD001's 100
/// run-to-failure engines, scored on the 100 test engines. docs/EVALUATION.md
/// quotes these figures; this guards them.
#[test]
fn eval_cmapss_fd001_beats_the_lstm_figure() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/cmapss");
    if !data.join("train_FD001.txt").is_file() {
        println!("SKIPPED: no C-MAPSS data at {}", data.display());
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_linepilot"))
        .args(["eval", "cmapss", "--train"])
        .arg(data.join("train_FD001.txt"))
        .arg("--test")
        .arg(data.join("test_FD001.txt"))
        .arg("--rul")
        .arg(data.join("RUL_FD001.txt"))
        .output()
        .expect("linepilot");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).expect("utf8");
    assert!(stdout.contains("100 units, 20631 rows); 100 test units"), "{stdout}");
    let row = stdout.lines().find(|l| l.starts_with("| linepilot RUL")).expect("a result row");
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    let rmse: f64 = cells[2].parse().expect("RMSE");
    let score: f64 = cells[3].parse().expect("score");
    let mae: f64 = cells[4].parse().expect("MAE");
    let coverage: f64 = cells[5].parse().expect("coverage");
    println!("C-MAPSS FD001: RMSE {rmse}, PHM08 score {score}, MAE {mae}, band coverage {coverage}");
    assert!(rmse <= 16.0, "RMSE above the LSTM figure: {row}");
    assert!(mae < rmse && score > 0.0, "{row}");
    assert!((0.75..=1.0).contains(&coverage), "a 5-95 % band should cover most engines: {row}");
}

#[test]
fn eval_cmapss_names_the_bad_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let train = dir.path().join("train.txt");
    std::fs::write(&train, "1 1 0.1 0.2 100 1 2 3\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_linepilot"))
        .args(["eval", "cmapss", "--train"])
        .arg(&train)
        .arg("--test")
        .arg(&train)
        .arg("--rul")
        .arg(dir.path().join("rul.txt"))
        .output()
        .expect("linepilot");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("train.txt:1:") && err.contains("8 columns"), "{err}");
}
