//! Live mode: the model stepped in (accelerated) real time on its own thread,
//! publishing a `Frame` after each batch of steps and appending ground truth
//! to a file as it happens.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::model::{Model, STEP_NS};
use super::scenario::{Scenario, ScenarioError};
use super::Feed;

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

#[derive(Clone, Debug)]
pub struct LiveOptions {
    /// Simulated seconds per wall-clock second; 0 freezes the line after `skip_ns`.
    pub speed: f64,
    /// Simulated time to run through before serving (fast-forward), ns.
    pub skip_ns: i64,
    /// Simulated time of the run start, ns since the epoch (default: now).
    pub start_ns: Option<i64>,
    /// Where ground truth is appended (JSON lines); none: not written.
    pub truth: Option<PathBuf>,
}

/// A running line. Dropping it stops the model; servers stop when their feed closes.
pub struct LiveLine {
    pub feed: Feed,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LiveLine {
    /// Starts the model thread. The first frame is available on return.
    pub fn start(scenario: &Scenario, path: &str, opts: LiveOptions) -> Result<LiveLine, LiveError> {
        // A live run starts on a whole second, so 1 s tags sample on the second.
        let start_ns = opts.start_ns.unwrap_or_else(|| now_ns() / 1_000_000_000 * 1_000_000_000);
        let mut model = Model::new(scenario, path, start_ns)?;
        let mut truth = match &opts.truth {
            Some(p) => {
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .map_err(|source| LiveError::Io { path: dir.display().to_string(), source })?;
                }
                let f = std::fs::File::create(p)
                    .map_err(|source| LiveError::Io { path: p.display().to_string(), source })?;
                Some(std::io::BufWriter::new(f))
            }
            None => None,
        };
        let mut write_truth = move |model: &mut Model| {
            let records = model.drain_truth();
            if let Some(w) = truth.as_mut() {
                for r in &records {
                    if let Err(e) = writeln!(w, "{}", r.to_line()) {
                        tracing::warn!(error = %e, "cannot write ground truth");
                    }
                }
                let _ = w.flush();
            }
        };
        for _ in 0..opts.skip_ns / STEP_NS {
            model.step();
        }
        write_truth(&mut model);
        let (tx, rx) = watch::channel(Arc::new(model.frame()));
        let feed = Feed { catalog: Arc::clone(&model.catalog), frames: rx };
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let speed = opts.speed.max(0.0);
        let thread = std::thread::Builder::new()
            .name("linesim-model".into())
            .spawn(move || {
                let wall0 = Instant::now();
                let mut done: u64 = 0;
                while !stop2.load(Ordering::Relaxed) {
                    if speed > 0.0 {
                        let sim_ns = wall0.elapsed().as_secs_f64() * speed * 1e9;
                        let due = (sim_ns / STEP_NS as f64) as u64;
                        if due > done {
                            while done < due {
                                model.step();
                                done += 1;
                            }
                            write_truth(&mut model);
                            tx.send_replace(Arc::new(model.frame()));
                        }
                    }
                    // At most 20 frames per wall second; one per step at low speeds.
                    let step_wall = if speed > 0.0 { 0.1 / speed } else { 0.1 };
                    std::thread::sleep(Duration::from_secs_f64(step_wall.clamp(0.05, 0.1)));
                }
                model.finish();
                write_truth(&mut model);
            })
            .map_err(|source| LiveError::Io { path: "linesim-model thread".into(), source })?;
        Ok(LiveLine { feed, stop, thread: Some(thread) })
    }

    /// Stops the model, writing the final ground truth, and closes the feed.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for LiveLine {
    fn drop(&mut self) {
        self.halt();
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}
