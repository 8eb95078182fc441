//! `linesim`: the bottling-line simulator.
//!
//! - `linesim live --scenario FILE [--speed N]`: the line in (accelerated) real
//!   time behind its OPC UA, Modbus TCP and MQTT servers;
//! - `linesim history --scenario FILE --hours 8 --out DIR`: a whole run as
//!   line protocol plus ground truth, as fast as possible;
//! - `linesim map modbus`: the Modbus register map;
//! - `linesim snapshot --scenario FILE --at 2h`: every tag's value at an instant, as JSON;
//! - `linesim synthetic`: the scalable synthetic line for store benchmarks.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use linesim::line::{history, model::Model, model::STEP_NS, scenario::Scenario, Val};
use linesim::{Line, SynthValue};

#[derive(Parser)]
#[command(name = "linesim", version, about = "A bottling line simulator over OPC UA, Modbus TCP and MQTT")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Writes a whole run as InfluxDB line protocol (line.lp) plus ground truth (truth.jsonl).
    History {
        #[arg(long)]
        scenario: PathBuf,
        /// Simulated hours from the scenario's start.
        #[arg(long, default_value_t = 8.0)]
        hours: f64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Prints every tag's value at an offset from the scenario's start, as JSON.
    Snapshot {
        #[arg(long)]
        scenario: PathBuf,
        /// Offset from the start, e.g. "2h" or "90s".
        #[arg(long, default_value = "0s")]
        at: String,
    },
    /// Prints a protocol map of the line.
    Map {
        /// Only "modbus" for now: the register map in the gateway's [[tag]] syntax.
        what: String,
    },
    /// Prints N tags x S seconds of a synthetic line as line protocol (store benchmarks).
    Synthetic {
        #[arg(long, default_value_t = 100)]
        tags: usize,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Unix seconds of the first sample (default: now).
        #[arg(long)]
        start: Option<i64>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("linesim: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn parse_duration_ns(s: &str) -> anyhow::Result<i64> {
    Ok(humantime::parse_duration(s).with_context(|| format!("`{s}` is not a duration"))?.as_nanos() as i64)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::History { scenario, hours, out } => {
            let path = scenario.display().to_string();
            let sc = Scenario::load(&scenario)?;
            anyhow::ensure!(hours > 0.0 && hours <= 24.0 * 366.0, "--hours must be in (0, 8784]");
            let ns = (hours * 3.6e12) as i64;
            let stats = history::write_dir(&sc, &path, ns, &out, |done, total| {
                eprintln!("linesim history: {done:.0}/{total:.0} h simulated");
            })?;
            eprintln!(
                "linesim history: {} samples, {} ground-truth records, {:.1} MB line protocol in {:.1} s -> {}",
                stats.samples,
                stats.truth_records,
                stats.lp_bytes as f64 / 1e6,
                stats.elapsed_s,
                out.display()
            );
            Ok(())
        }
        Cmd::Snapshot { scenario, at } => {
            let path = scenario.display().to_string();
            let sc = Scenario::load(&scenario)?;
            let at_ns = parse_duration_ns(&at)?;
            let mut model = Model::new(&sc, &path, sc.start_ns(&path)?)?;
            for _ in 0..at_ns / STEP_NS {
                model.step();
            }
            let mut values = serde_json::Map::new();
            for (t, v) in model.catalog.tags.iter().zip(model.values()) {
                let j = match *v {
                    Val::F64(x) => serde_json::json!(x),
                    Val::I64(x) => serde_json::json!(x),
                    Val::Bool(b) => serde_json::json!(b),
                };
                values.insert(t.name.clone(), j);
            }
            let out = serde_json::json!({ "ts_ns": model.now_ns(), "values": values });
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
        Cmd::Map { what } => match what.as_str() {
            "modbus" => {
                print!("{}", linesim::server::modbus::register_map(&linesim::line::Catalog::build().0));
                Ok(())
            }
            other => anyhow::bail!("unknown map `{other}` (expected: modbus)"),
        },
        Cmd::Synthetic { tags, seconds, seed, start } => {
            let start = start.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0)
            });
            synthetic(tags, seconds, seed, start);
            Ok(())
        }
    }
}

fn synthetic(tags: usize, seconds: u64, seed: u64, start: i64) {
    let mut line = Line::new(tags, seed);
    let names: Vec<(String, String)> = line.tags().iter().map(|t| (t.asset.clone(), t.field.clone())).collect();
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut values = Vec::with_capacity(tags);
    for s in 0..seconds {
        line.step(&mut values);
        let ts = (start + s as i64) as i128 * 1_000_000_000;
        for ((asset, field), v) in names.iter().zip(&values) {
            let r = match v {
                SynthValue::F64(x) => writeln!(out, "line1,asset={asset} {field}={x} {ts}"),
                SynthValue::I64(x) => writeln!(out, "line1,asset={asset} {field}={x}i {ts}"),
                SynthValue::Bool(x) => writeln!(out, "line1,asset={asset} {field}={x} {ts}"),
                SynthValue::Str(x) => writeln!(out, "line1,asset={asset} {field}=\"{x}\" {ts}"),
            };
            if r.is_err() {
                return; // stdout closed (e.g. piped into head)
            }
        }
    }
    let _ = out.flush();
}
