//! `linepilot check-config` and `generate-config`, driven through the real binary.

use std::path::Path;
use std::process::{Command, Output};

fn linepilot(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_linepilot")).args(args).output().expect("run linepilot")
}

fn arg(p: &Path) -> &str {
    p.to_str().expect("temp path is UTF-8")
}

/// Three independent problems in three entries: an unknown key, a reference to an
/// asset that does not exist, and a Modbus register out of range.
const BROKEN: &str = r#"[site]
name = "Plant"
time_zone = "Asia/Shanghai"

[[area]]
id = "hall"
name = "Hall"
colour = "blue"

[[line]]
id = "line1"
name = "Line 1"
area = "hall"

[[asset]]
id = "filler"
name = "Filler"
line = "line1"
kind = "filler"

[[source]]
id = "io"
kind = "modbus"
endpoint = "tcp://127.0.0.1:5020"

[[tag]]
name = "washer.temp"
asset = "washer"
description = "Caustic temperature"

[[tag]]
name = "filler.level"
asset = "filler"
source = "io"
address = { table = "holding", register = 70000 }
description = "Bowl level"
"#;

#[test]
fn check_config_lists_every_error_and_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("broken.toml");
    std::fs::write(&file, BROKEN).expect("write config");
    let out = linepilot(&["check-config", arg(&file)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "check-config accepted a broken file");
    assert_eq!(out.status.code(), Some(2), "stderr:\n{stderr}");
    let f = file.display();
    let expected = [
        format!("{f}:8:1: area[0].colour: unknown key `colour`"),
        format!("{f}:28:9: tag[0].asset: unknown asset `washer`"),
        format!("{f}:35:43: tag[1].address.register: register 70000 is out of range 0..=65535"),
    ];
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), expected.len(), "stderr:\n{stderr}");
    for (line, want) in lines.iter().zip(&expected) {
        assert!(line.starts_with(want.as_str()), "got `{line}`, want `{want}...`");
    }
}

#[test]
fn generated_config_checks_clean() {
    let out = linepilot(&["generate-config"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, linepilot::config::EXAMPLE.as_bytes());
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("linepilot.toml");
    std::fs::write(&file, &out.stdout).expect("write config");
    let out = linepilot(&["check-config", arg(&file)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stderr:\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.trim_end(), format!("{}: ok (13 tags, 3 assets, 3 sources)", file.display()));
}

#[test]
fn check_config_reports_a_missing_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("absent.toml");
    let out = linepilot(&["check-config", arg(&file)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config"));
}
