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
use linesim::line::live::LiveOptions;
use linesim::line::{history, model::Model, model::STEP_NS, scenario::Scenario, Val};
use linesim::server::Running;
use linesim::{Line, SynthValue};

#[derive(Parser)]
#[command(name = "linesim", version, about = "A bottling line simulator over OPC UA, Modbus TCP and MQTT")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs the line in (accelerated) real time behind its OPC UA, Modbus TCP and MQTT
    /// servers; prints the endpoints as one JSON line, then runs until Ctrl-C / SIGTERM.
    Live {
        #[arg(long)]
        scenario: PathBuf,
        /// Simulated seconds per second (60: an hour a minute; 0: frozen).
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Run through this much simulated time before serving, e.g. "2h".
        #[arg(long, default_value = "0s")]
        skip: String,
        /// Start the simulated clock at the scenario's `start` instead of now.
        #[arg(long)]
        scenario_start: bool,
        /// Append the ground truth (JSON lines) to this file.
        #[arg(long, default_value = "data/linesim-truth.jsonl")]
        truth: PathBuf,
        /// Listen on free ports (port 0) instead of the scenario's.
        #[arg(long)]
        any_port: bool,
    },
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
    /// Prints a map of the line: "modbus" (the register map in the gateway's [[tag]]
    /// syntax) or "gateway" (a whole gateway config reading every protocol).
    Map {
        what: String,
        /// The scenario whose listen addresses the gateway config dials.
        #[arg(long, default_value = "configs/scenarios/demo.toml")]
        scenario: PathBuf,
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
    let filter = tracing_subscriber::EnvFilter::try_from_env("LINESIM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,opcua_server=warn"))
        .add_directive(linesim::server::mqtt::BROKER_LOG_DIRECTIVE.parse().expect("static directive"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
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
        Cmd::Live { scenario, speed, skip, scenario_start, truth, any_port } => {
            let path = scenario.display().to_string();
            let mut sc = Scenario::load(&scenario)?;
            anyhow::ensure!(speed.is_finite() && speed >= 0.0, "--speed must be 0 or more");
            if any_port {
                let zero = |listen: &str| match listen.rsplit_once(':') {
                    Some((host, _)) => format!("{host}:0"),
                    None => "127.0.0.1:0".to_string(),
                };
                sc.opcua.listen = zero(&sc.opcua.listen);
                sc.modbus.listen = zero(&sc.modbus.listen);
                sc.mqtt.listen = zero(&sc.mqtt.listen);
            }
            let opts = LiveOptions {
                speed,
                skip_ns: parse_duration_ns(&skip)?,
                start_ns: if scenario_start { Some(sc.start_ns(&path)?) } else { None },
                truth: Some(truth.clone()),
            };
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            rt.block_on(async move {
                let running = Running::start(&sc, &path, opts).await?;
                let mut info = running.endpoints();
                info["truth"] = serde_json::json!(truth.display().to_string());
                info["speed"] = serde_json::json!(speed);
                println!("{info}");
                std::io::stdout().flush()?;
                shutdown_signal().await;
                tracing::info!("stopping");
                running.line.stop();
                anyhow::Ok(())
            })
        }
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
        Cmd::Map { what, scenario } => match what.as_str() {
            "gateway" => {
                let sc = Scenario::load(&scenario)?;
                print!("{}", linesim::server::gateway::gateway_config(&linesim::line::Catalog::build().0, &sc));
                Ok(())
            }
            "modbus" => {
                print!("{}", linesim::server::modbus::register_map(&linesim::line::Catalog::build().0));
                Ok(())
            }
            other => anyhow::bail!("unknown map `{other}` (expected: modbus or gateway)"),
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

/// Ctrl-C or SIGTERM (systemd's stop).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
