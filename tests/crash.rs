//! Crash test: a writer sends line-protocol batches to a running
//! `linepilot run`; the daemon is killed with SIGKILL at random moments (24
//! rounds), restarted, and at the end every acknowledged sample must be
//! present exactly once and nothing that was never sent may appear.
//!
//! A batch whose request failed (the kill came first) is not acknowledged; the
//! writer sends it again after the restart, as a real client would. Small
//! head and block limits make the daemon seal blocks while it is being
//! killed, so kills land in WAL commits, seals, checkpoints and truncations.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{write_config, Daemon};

const SERIES: usize = 8;
const PER_BATCH: usize = 250; // samples per series per batch
const ROUNDS: usize = 24;

fn batch_body(batch: u64) -> String {
    let mut s = String::with_capacity(SERIES * PER_BATCH * 48);
    for i in 0..PER_BATCH as u64 {
        let seq = batch * PER_BATCH as u64 + i;
        let ts = 1_700_000_000_000_000_000i64 + seq as i64 * 1_000_000;
        for k in 0..SERIES {
            s.push_str(&format!("crash,unit=u{k} v={}.5 {ts}\n", seq * 10 + k as u64));
        }
    }
    s
}

#[test]
fn every_acknowledged_sample_survives_sigkill_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    eprintln!("crash test data in {}", dir.path().display());
    let cfg = write_config(
        dir.path(),
        "fsync_interval = \"2ms\"\nhead_max_bytes = \"192KiB\"\nblock_duration = \"1h\"\nretention_raw = \"100y\"",
    );
    let mut rng = fastrand::Rng::with_seed(0x11e_9110);
    let mut next_batch: u64 = 0;
    let mut acked: Vec<u64> = Vec::new();
    let mut pending: Option<u64> = None;

    for round in 0..ROUNDS {
        let daemon = Daemon::start(&cfg);
        let pid = daemon.child.id();
        let delay = Duration::from_millis(rng.u64(30..400));
        let killer = std::thread::spawn(move || {
            std::thread::sleep(delay);
            let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        });
        loop {
            let b = match pending.take() {
                Some(b) => b,
                None => {
                    next_batch += 1;
                    next_batch - 1
                }
            };
            match daemon.write(&batch_body(b)) {
                Ok(204) => acked.push(b),
                Ok(other) => panic!("round {round}: batch {b} answered {other}"),
                Err(_) => {
                    pending = Some(b);
                    break;
                }
            }
        }
        killer.join().expect("killer thread");
        daemon.kill();
    }

    // Final start: send what is pending, then check everything.
    let daemon = Daemon::start(&cfg);
    if let Some(b) = pending.take() {
        assert_eq!(daemon.write(&batch_body(b)), Ok(204));
        acked.push(b);
    }
    assert!(acked.len() >= 10, "the writer must get batches acknowledged between kills (got {})", acked.len());
    let mut expected: BTreeMap<usize, BTreeMap<i64, f64>> = BTreeMap::new();
    for &b in &acked {
        for i in 0..PER_BATCH as u64 {
            let seq = b * PER_BATCH as u64 + i;
            let ts = 1_700_000_000_000_000_000i64 + seq as i64 * 1_000_000;
            for k in 0..SERIES {
                expected.entry(k).or_default().insert(ts, (seq * 10 + k as u64) as f64 + 0.5);
            }
        }
    }
    for k in 0..SERIES {
        let label = format!("unit=u{k}");
        let (status, body) = daemon.query(&[("series", "crash.v"), ("labels", &label)]);
        assert_eq!(status, 200, "{body}");
        let results = body["results"].as_array().expect("results");
        assert_eq!(results.len(), 1, "one series per unit label");
        let rows = results[0]["rows"].as_array().expect("rows");
        let want = &expected[&k];
        if rows.len() != want.len() {
            let kept = dir.path().to_path_buf();
            std::mem::forget(dir);
            panic!(
                "series u{k}: stored {} samples, acknowledged {}; data kept in {}",
                rows.len(),
                want.len(),
                kept.display()
            );
        }
        assert_eq!(rows.len(), want.len(), "series u{k}: stored {} samples, acknowledged {}", rows.len(), want.len());
        for row in rows {
            let ts = row["ts"].as_i64().expect("ts");
            let v = row["value"].as_f64().expect("value");
            assert_eq!(want.get(&ts), Some(&v), "series u{k}: sample at {ts} = {v} was never sent");
        }
    }
    let (_, health) = {
        let url = format!("http://{}/healthz", daemon.addr);
        let mut r = ureq::get(&url).call().expect("healthz");
        (0, serde_json::from_str::<serde_json::Value>(&r.body_mut().read_to_string().expect("body")).expect("json"))
    };
    eprintln!("crash test: {} rounds, {} batches acknowledged, store: {}", ROUNDS, acked.len(), health["store"]);
    assert!(health["store"]["blocks"].as_u64().unwrap_or(0) > 0, "the test must exercise sealing");
    assert_eq!(health["store"]["quarantined"].as_u64(), Some(0), "a crash must never corrupt a block");
    let status = daemon.stop();
    assert!(status.success(), "clean shutdown after SIGTERM: {status:?}");
}
