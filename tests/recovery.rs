//! Recovery through the real binary: a corrupt block is quarantined, the
//! daemon starts, and series held by other blocks still answer.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{write_config, Daemon};

fn import(cfg: &std::path::Path, file: &std::path::Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_linepilot"))
        .args(["import", "--config"])
        .arg(cfg)
        .arg(file)
        .output()
        .expect("running import");
    assert!(out.status.success(), "import failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn csv(dir: &std::path::Path, name: &str, series: &str, start: i64, n: i64) -> std::path::PathBuf {
    let mut s = String::from("series,ts,value\n");
    for i in 0..n {
        s.push_str(&format!("{series},{},{}\n", start + i, (i % 50) as f64 * 0.25));
    }
    let p = dir.join(name);
    std::fs::write(&p, s).expect("writing csv");
    p
}

#[test]
fn a_flipped_byte_in_a_block_quarantines_it_and_the_rest_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), "retention_raw = \"100y\"\nretention_rollup = \"100y\"");
    // Two imports, each sealed into its own block (import flushes at the end).
    import(&cfg, &csv(dir.path(), "a.csv", "filler.bowl_pressure", 1_700_000_000, 3000));
    import(&cfg, &csv(dir.path(), "b.csv", "washer.tank_temp", 1_700_010_000, 3000));
    let blocks_dir = dir.path().join("data/blocks");
    let mut blocks: Vec<_> =
        std::fs::read_dir(&blocks_dir).expect("blocks dir").map(|e| e.expect("entry").path()).collect();
    blocks.sort();
    assert_eq!(blocks.len(), 2, "one block per import: {blocks:?}");

    // Flip one byte in the middle of the first block's chunk data (after the
    // 8-byte header, before the index whose offset is the footer's first u64).
    let mut bytes = std::fs::read(&blocks[0]).expect("read block");
    let footer = bytes.len() - 48;
    let index_offset = u64::from_le_bytes(bytes[footer..footer + 8].try_into().expect("8 bytes")) as usize;
    let victim = 8 + (index_offset - 8) / 2;
    bytes[victim] ^= 0x5a;
    std::fs::write(&blocks[0], &bytes).expect("write block");

    let daemon = Daemon::start(&cfg);
    // The other series answers, in full.
    let (status, body) = daemon.query(&[("series", "washer.tank_temp")]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["rows"].as_array().map(|r| r.len()), Some(3000));
    // The damaged series answers too (without the lost block), never a crash.
    let (status, body) = daemon.query(&[("series", "filler.bowl_pressure")]);
    assert_eq!(status, 200, "{body}");
    // The block is in quarantine (moved at open, by the scrub, or by the query).
    let qdir = dir.path().join("data/quarantine");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = std::fs::read_dir(&qdir).map(|d| d.count()).unwrap_or(0);
        if n == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "corrupt block was not quarantined");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!blocks[0].exists(), "quarantined block must leave blocks/");
    let url = format!("http://{}/healthz", daemon.addr);
    let health: serde_json::Value =
        serde_json::from_str(&ureq::get(&url).call().expect("healthz").body_mut().read_to_string().expect("body"))
            .expect("json");
    assert_eq!(health["store"]["quarantined"].as_u64(), Some(1), "{health}");
    assert!(daemon.stop().success());
}
