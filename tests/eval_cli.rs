//! `linepilot eval tep`: the multivariate detector on the Tennessee Eastman
//! benchmark, as the evaluation document reproduces it.

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
