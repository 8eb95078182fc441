//! `linesim`: the line simulator binary. For now it emits the synthetic
//! line (`linesim::synthetic`) as InfluxDB line protocol on stdout, so a
//! running gateway can be fed with `linesim synthetic ... | curl --data-binary @- ...`.
//! The OPC UA / Modbus / MQTT bottling line comes with its own issue.

use std::io::{BufWriter, Write};
use std::process::ExitCode;

use linesim::{Line, SynthValue};

const USAGE: &str = "usage: linesim synthetic [--tags N] [--seconds S] [--seed X] [--start UNIX_SECONDS]
  Prints N tags x S seconds at 1 Hz of a synthetic line as InfluxDB line protocol (ns timestamps).
  Defaults: --tags 100 --seconds 60 --seed 1 --start <now>.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some("synthetic") {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let mut tags = 100usize;
    let mut seconds = 60u64;
    let mut seed = 1u64;
    let mut start =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let mut it = args[1..].iter();
    while let Some(flag) = it.next() {
        let value = it.next();
        let parsed = match (flag.as_str(), value) {
            ("--tags", Some(v)) => v.parse().map(|n| tags = n).is_ok(),
            ("--seconds", Some(v)) => v.parse().map(|n| seconds = n).is_ok(),
            ("--seed", Some(v)) => v.parse().map(|n| seed = n).is_ok(),
            ("--start", Some(v)) => v.parse().map(|n| start = n).is_ok(),
            _ => false,
        };
        if !parsed {
            eprintln!("linesim: bad argument `{flag}`\n{USAGE}");
            return ExitCode::from(2);
        }
    }
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
                return ExitCode::SUCCESS; // stdout closed (e.g. piped into head)
            }
        }
    }
    if out.flush().is_err() {
        return ExitCode::SUCCESS;
    }
    ExitCode::SUCCESS
}
