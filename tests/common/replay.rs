//! The demo shift replayed sample by sample, as the gateway would store it: the
//! demo scenario (`configs/scenarios/demo.toml`, 8 h from 06:00, one of each
//! fault kind) is stepped as `linesim history` steps it, and every sample the
//! gateway would store goes to a callback with the series numbered as in
//! linesim's catalog. Where `linesim history` leaves out a server's samples (a
//! comms loss), the gateway would have written one bad-quality (`BAD_COMMS`)
//! sample per tag when it noticed, so the replay does the same at the first
//! missed sample.

use std::path::PathBuf;

use linepilot::config::Config;
use linepilot::domain::{Quality, Sample, SeriesId, Value};
use linesim::line::model::Model;
use linesim::line::scenario::Scenario;
use linesim::line::Val;

/// One injected fault, from the ground truth.
pub struct Fault {
    /// When it began (ns).
    pub ts: i64,
    /// The asset (or server) it hit.
    pub asset: String,
    /// Its kind (`valve_drift`, `jam` ...).
    pub fault: String,
    /// A phase such as `failure`, if the ground truth names one.
    pub phase: Option<String>,
    /// When it ended (ns), if it ended within the run.
    pub end: Option<i64>,
}

/// What a replay hands its callback.
pub enum Step<'a> {
    /// A sample the gateway would store.
    Sample(&'a Sample),
    /// A simulated second has passed; the time now (ns).
    Second(i64),
}

/// What the ground truth says happened in a replay.
pub struct Truth {
    /// Injected faults, in order.
    pub faults: Vec<Fault>,
    /// Breaks as (start, end) ns.
    pub breaks: Vec<(i64, i64)>,
    /// End of the run (ns).
    pub end: i64,
}

/// The demo gateway config and a series lookup by tag name for it.
pub struct Demo {
    /// `configs/demo.toml`.
    pub config: Config,
    /// Start of the run (ns).
    pub t0: i64,
    model: Model,
}

impl Demo {
    /// Loads `configs/demo.toml` and the demo scenario.
    pub fn load() -> Demo {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(root.join("configs/demo.toml")).expect("configs/demo.toml");
        let config = Config::from_str_named(&text, "demo.toml").unwrap_or_else(|e| panic!("demo.toml:\n{e}"));
        let scenario_path = root.join("configs/scenarios/demo.toml");
        let path = scenario_path.display().to_string();
        let scenario = Scenario::load(&scenario_path).expect("demo scenario");
        let t0 = scenario.start_ns(&path).expect("start");
        let model = Model::new(&scenario, &path, t0).expect("model");
        Demo { config, t0, model }
    }

    /// The series of a tag name (linesim's catalog order).
    pub fn series(&self, name: &str) -> Option<SeriesId> {
        self.model.catalog.find(name).map(|i| SeriesId(i as u32))
    }

    /// Runs `hours` of the shift, calling `on` with every stored sample and once per
    /// simulated second.
    pub fn run(&mut self, hours: i64, mut on: impl FnMut(Step<'_>)) -> Truth {
        let steps = hours * 3600 * 10;
        let mut faults: Vec<Fault> = Vec::new();
        let mut breaks = Vec::new();
        let mut down = vec![false; self.model.catalog.len()];
        for step in 0..=steps {
            if step > 0 {
                self.model.step();
            }
            let now = self.model.now_ns();
            for (i, was_down) in down.iter_mut().enumerate() {
                if !self.model.sampled(i) {
                    continue;
                }
                let sample = if self.model.tag_down(i) {
                    if *was_down {
                        continue;
                    }
                    *was_down = true;
                    Sample { series: SeriesId(i as u32), ts: now, value: Value::F64(0.0), quality: Quality::BAD_COMMS }
                } else {
                    *was_down = false;
                    let value = match self.model.values()[i] {
                        Val::F64(x) => Value::F64(x),
                        Val::I64(x) => Value::I64(x),
                        Val::Bool(b) => Value::Bool(b),
                    };
                    Sample { series: SeriesId(i as u32), ts: now, value, quality: Quality::GOOD }
                };
                on(Step::Sample(&sample));
            }
            if step % 10 == 0 {
                on(Step::Second(now));
            }
            for r in self.model.drain_truth() {
                let fault = r.details["fault"].as_str().unwrap_or_default().to_string();
                match r.kind.as_str() {
                    "fault_start" => faults.push(Fault {
                        ts: r.ts_ns,
                        asset: r.asset.clone(),
                        fault,
                        phase: r.details["phase"].as_str().map(String::from),
                        end: None,
                    }),
                    "fault_end" => {
                        for f in faults.iter_mut().filter(|f| f.asset == r.asset && f.fault == fault && f.end.is_none())
                        {
                            f.end = Some(r.ts_ns);
                        }
                    }
                    "break_start" => breaks.push((r.ts_ns, i64::MAX)),
                    "break_end" => {
                        if let Some(b) = breaks.last_mut() {
                            b.1 = r.ts_ns;
                        }
                    }
                    _ => {}
                }
            }
        }
        Truth { faults, breaks, end: self.model.now_ns() }
    }
}
