//! The real GGUF models for the model tests: found in `$LINEPILOT_MODEL_DIR` (or the
//! default model directory), pulled with `linepilot model pull`'s own code when missing.
//! A lock file keeps test binaries that start together from pulling the same model twice.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use linepilot::llm::local::registry::{self, default_model_dir};

/// The path of model `name`, pulling it first if it is not there.
pub fn model_path(name: &str) -> PathBuf {
    let dir = default_model_dir();
    let spec = registry::spec(name).expect("a known model");
    let path = spec.path_in(&dir);
    if path.is_file() {
        return path;
    }
    std::fs::create_dir_all(&dir).expect("creating the model directory");
    let lock = dir.join(format!(".{name}.test-lock"));
    let started = Instant::now();
    loop {
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&lock) {
            Ok(_) => break,
            Err(_) if path.is_file() => return path,
            Err(_) if started.elapsed() > Duration::from_secs(900) => {
                panic!("waited 15 min for another test to pull {name}; remove {} if it is stale", lock.display())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
    if !path.is_file() {
        eprintln!("{name} is not in {}: pulling it (linepilot model pull {name})", dir.display());
        let res = registry::pull(spec, &dir, &mut |_| {});
        let _ = std::fs::remove_file(&lock);
        res.unwrap_or_else(|e| panic!("{e}; run `linepilot model pull {name}`"));
    } else {
        let _ = std::fs::remove_file(&lock);
    }
    path
}
