//! The HTTP API and the query CLI through the real binary: line protocol in
//! (plain and gzip), 400 with the line number and nothing stored on a bad
//! batch, and `linepilot query` answering the same with the daemon running
//! (over HTTP) and stopped (opening the data directory).

mod common;

use std::io::Write;
use std::process::Command;

use common::{write_config, Daemon};

fn query_cli(cfg: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_linepilot"))
        .args(["query", "--config"])
        .arg(cfg)
        .args(args)
        .output()
        .expect("running query");
    assert!(out.status.success(), "query failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn write_query_and_cli_agree_with_daemon_running_and_stopped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), "retention_raw = \"100y\"");
    let daemon = Daemon::start(&cfg);
    let t0: i64 = 1_800_000_000; // 2027-01-15, a whole minute
    let mut body = String::new();
    for i in 0..180 {
        body.push_str(&format!(
            "line1,asset=filler bowl_pressure={:.2},state=\"running\" {}\n",
            3.0 + (i % 7) as f64 * 0.1,
            (t0 + i) * 1_000_000_000
        ));
    }
    assert_eq!(daemon.write(&body), Ok(204));

    // gzip, as Telegraf sends it.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(format!("line1,asset=capper torque=1.5 {}\n", t0 * 1_000_000_000).as_bytes()).expect("gzip");
    let gz = gz.finish().expect("gzip");
    let url = format!("http://{}/api/v2/write?precision=ns&bucket=b&org=o", daemon.addr);
    let status = ureq::post(&url).header("Content-Encoding", "gzip").send(&gz[..]).expect("gzip write").status();
    assert_eq!(status.as_u16(), 204);

    // A bad line 3: 400 naming line 3, and nothing of the batch is stored.
    let bad = format!(
        "line1,asset=filler bowl_pressure=9.9 {ts}\nline1,asset=filler bowl_pressure=9.8 {ts2}\nline1,asset=filler bowl_pressure=oops {ts2}\n",
        ts = (t0 + 500) * 1_000_000_000,
        ts2 = (t0 + 501) * 1_000_000_000
    );
    let mut resp = ureq::post(&url).config().http_status_as_error(false).build().send(&bad).expect("post");
    assert_eq!(resp.status().as_u16(), 400);
    let text = resp.body_mut().read_to_string().expect("body");
    assert!(text.contains("line 3"), "error must name the line: {text}");
    // A type conflict (integer into the float series) is refused too.
    assert_eq!(daemon.write(&format!("line1,asset=filler bowl_pressure=3i {}\n", (t0 + 502) * 1_000_000_000)), Ok(400));

    let (status, body) = daemon.query(&[("series", "line1.bowl_pressure"), ("labels", "asset=filler")]);
    assert_eq!(status, 200);
    assert_eq!(body["results"][0]["rows"].as_array().map(|r| r.len()), Some(180), "bad batches stored nothing");
    let (status, _) = daemon.query(&[("series", "no.such.series")]);
    assert_eq!(status, 404);
    let (status, _) = daemon.query(&[("series", "line1.bowl_pressure"), ("from", "yesterday")]);
    assert_eq!(status, 400);

    let args = [
        "--series",
        "line1.bowl_pressure",
        "--agg",
        "avg",
        "--window",
        "1m",
        "--format",
        "csv",
        "--from",
        "1800000000",
        "--to",
        "1800000180",
    ];
    let running = query_cli(&cfg, &args);
    let states = query_cli(&cfg, &["--series", "line1.state", "--format", "csv"]);
    assert_eq!(states.lines().count(), 181, "header + 180 state samples");
    assert!(states.lines().nth(1).is_some_and(|l| l.ends_with(",running,good")), "{states}");
    assert!(daemon.stop().success());
    let stopped = query_cli(&cfg, &args);
    assert_eq!(running, stopped, "the CLI answers the same with the daemon running and stopped");
    // Three 1-minute averages; check the first against the data.
    let lines: Vec<&str> = stopped.lines().collect();
    assert_eq!(lines.len(), 4, "{stopped}");
    let want: f64 = (0..60).map(|i| 3.0 + (i % 7) as f64 * 0.1).sum::<f64>() / 60.0;
    let got: f64 = lines[1].split(',').nth(2).and_then(|v| v.parse().ok()).expect("value");
    assert!((got - want).abs() < 1e-9, "avg {got} != {want}");
    assert!(lines[1].ends_with(",60"), "{}", lines[1]);
}

/// `GET /api/v1/tags` and `linepilot tags` show each configured tag's latest
/// value; `linepilot status` says ok (exit 0) with no sources configured.
#[test]
fn tags_and_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), "retention_raw = \"100y\"");
    let mut text = std::fs::read_to_string(&cfg).expect("config");
    text.push_str(
        "[[area]]\nid = \"hall\"\nname = \"Hall\"\n[[line]]\nid = \"line1\"\nname = \"Line 1\"\narea = \"hall\"\n\
         [[asset]]\nid = \"filler\"\nname = \"Filler\"\nline = \"line1\"\nkind = \"filler\"\n\
         [[tag]]\nname = \"filler.bowl_pressure\"\nasset = \"filler\"\nunit = \"bar\"\ndescription = \"Bowl pressure\"\n\
         [[tag]]\nname = \"filler.state\"\nasset = \"filler\"\ndescription = \"State\"\nvalue_type = \"i64\"\n",
    );
    std::fs::write(&cfg, text).expect("config");
    let daemon = Daemon::start(&cfg);
    let ts = 1_800_000_000_000_000_000i64;
    assert_eq!(
        daemon.write(&format!("filler bowl_pressure=3.25 {ts}\nfiller bowl_pressure=3.5 {}\n", ts + 1)),
        Ok(204)
    );
    let text = ureq::get(&format!("http://{}/api/v1/tags", daemon.addr))
        .call()
        .expect("tags")
        .body_mut()
        .read_to_string()
        .expect("body");
    let body: serde_json::Value = serde_json::from_str(&text).expect("json");
    let tags = body["tags"].as_array().expect("tags array");
    assert_eq!(tags.len(), 2);
    assert_eq!(
        (tags[0]["name"].as_str(), tags[0]["value"].as_f64(), tags[0]["ts"].as_i64()),
        (Some("filler.bowl_pressure"), Some(3.5), Some(ts + 1))
    );
    assert_eq!(tags[0]["quality"], "good");
    assert!(tags[1]["value"].is_null(), "a tag without samples has no value: {}", tags[1]);

    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_linepilot")).args(args).arg("--config").arg(&cfg).output().expect("runs")
    };
    let out = run(&["tags"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.lines().any(|l| l.starts_with("filler.bowl_pressure") && l.contains("3.5") && l.contains("good")),
        "{listing}"
    );
    let out = run(&["status"]);
    assert!(
        out.status.success(),
        "status: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("status: ok"));
    daemon.stop();
}
