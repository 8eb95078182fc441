//! `linepilot detect --csv`: the product's detector over a CSV export, as an
//! engineer would run it on a historian's file.

use std::process::Command;

#[test]
fn detect_flags_the_row_and_names_the_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("export.csv");
    let mut text = String::from("time,pressure,temperature,state\n");
    for i in 0..600 {
        let temp = if i == 500 { 95.0 } else { 70.0 + (i % 7) as f64 * 0.05 };
        text.push_str(&format!("{i},{},{temp},running\n", 4.0 + (i % 5) as f64 * 0.01));
    }
    std::fs::write(&csv, text).expect("csv");
    let out = Command::new(env!("CARGO_BIN_EXE_linepilot"))
        .args(["detect", "--csv"])
        .arg(&csv)
        .args(["--value-cols", "pressure,temperature"])
        .output()
        .expect("linepilot");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).expect("utf8");
    let flagged: Vec<&str> = stdout.lines().filter(|l| l.split(',').nth(2) == Some("1")).collect();
    assert_eq!(flagged.len(), 1, "{flagged:?}");
    assert!(flagged[0].starts_with("500,"), "{}", flagged[0]);
    assert!(flagged[0].contains(",1,temperature:"), "{}", flagged[0]);
    assert_eq!(stdout.lines().count(), 601, "a header and one line per row");
    assert!(String::from_utf8_lossy(&out.stderr).contains("600 rows, 1 flagged"));

    // A column that is not there is named in the error.
    let out = Command::new(env!("CARGO_BIN_EXE_linepilot"))
        .args(["detect", "--csv"])
        .arg(&csv)
        .args(["--value-cols", "flow"])
        .output()
        .expect("linepilot");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no column `flow`") && err.contains("export.csv"), "{err}");
}
