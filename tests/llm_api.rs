//! The language models inside the daemon: `[llm]` loads the local model in the
//! background (health says so), `POST /api/v1/llm/complete` answers through the router,
//! a client that goes away cancels its generation, and a missing model is reported in
//! health and in the answer with the command that fetches it.

use std::time::{Duration, Instant};

mod common;
use common::{write_config, Daemon};
use serde_json::{json, Value};

fn config_with_llm(dir: &std::path::Path, llm: &str) -> std::path::PathBuf {
    let cfg = write_config(dir, "");
    let mut text = std::fs::read_to_string(&cfg).expect("config");
    text.push_str(llm);
    std::fs::write(&cfg, text).expect("write config");
    cfg
}

fn health(d: &Daemon) -> Value {
    let mut r = ureq::get(&format!("http://{}/healthz", d.addr))
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .expect("healthz");
    serde_json::from_str(&r.body_mut().read_to_string().expect("body")).expect("json")
}

fn wait_for(d: &Daemon, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let h = health(d);
        if f(&h) {
            return h;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "timed out waiting for {what}: {h}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn complete(d: &Daemon, body: Value, timeout: Option<Duration>) -> Result<(u16, Value), String> {
    let mut cfg = ureq::post(&format!("http://{}/api/v1/llm/complete", d.addr)).config().http_status_as_error(false);
    if let Some(t) = timeout {
        cfg = cfg.timeout_global(Some(t));
    }
    let mut r =
        cfg.build().header("content-type", "application/json").send(body.to_string()).map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().map_err(|e| e.to_string())?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
}

#[test]
fn the_daemon_answers_notes_a_missing_cloud_and_cancels_a_departed_client() {
    common::models::model_path("smollm2-135m");
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config_with_llm(dir.path(), "\n[llm]\nlocal_model = \"smollm2-135m\"\nthreads = 1\n");
    let d = Daemon::start(&cfg);
    let h = wait_for(&d, "the model to load", |h| h["llm"]["local"]["state"] == "ready");
    assert_eq!(h["llm"]["worker"]["queue_depth"], 0, "{h}");

    let ask = json!({"messages": [{"role": "user", "content": "What does OEE stand for?"}], "max_tokens": 16});
    let (status, a) = complete(&d, ask.clone(), None).expect("answer");
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["answered_by"], "local");
    assert!(a["completion"]["text"].as_str().is_some_and(|t| t.contains("OEE")), "{a}");
    assert!(a["completion"]["confidence"]["mean_logprob"].as_f64().is_some_and(|c| c <= 0.0), "{a}");

    // The person asks for the cloud, but none is configured: a local answer with a note.
    let mut up = ask.clone();
    up["escalate"] = json!(true);
    let (_, a) = complete(&d, up, None).expect("answer");
    assert_eq!(a["answered_by"], "local");
    assert!(a["note"].as_str().is_some_and(|n| n.contains("no cloud model is configured")), "{a}");

    // A client that gives up after a second: its long generation stops.
    let long = json!({"messages": [{"role": "user", "content": "Write a very long story about a bottling line."}],
                      "max_tokens": 2000});
    assert!(complete(&d, long, Some(Duration::from_secs(1))).is_err(), "the client timed out");
    let h = wait_for(&d, "the cancellation", |h| {
        h["llm"]["worker"]["cancelled"] == 1 && h["llm"]["worker"]["busy"] == false
    });
    let generated = h["llm"]["worker"]["generated_tokens"].as_u64().expect("tokens");
    assert!(generated < 1000, "the departed client's generation went on: {h}");

    // Bad requests are refused with a reason.
    let (status, _) = complete(&d, json!({"messages": []}), None).expect("answer");
    assert_eq!(status, 400);
    let (status, _) = complete(&d, json!({"messages": [], "bogus": 1}), None).expect("answer");
    assert_eq!(status, 422);
    d.stop();
}

#[test]
fn a_missing_model_shows_in_health_and_names_the_pull_command() {
    let dir = tempfile::tempdir().expect("tmp");
    let empty = dir.path().join("no-models");
    let cfg = config_with_llm(
        dir.path(),
        &format!("\n[llm]\nlocal_model = \"qwen2.5-0.5b\"\nmodel_dir = \"{}\"\n", empty.display()),
    );
    let d = Daemon::start(&cfg);
    let h = wait_for(&d, "the load to fail", |h| h["llm"]["local"]["state"] == "failed");
    assert!(
        h["llm"]["local"]["message"].as_str().is_some_and(|m| m.contains("linepilot model pull qwen2.5-0.5b")),
        "{h}"
    );
    let (status, a) = complete(&d, json!({"messages": [{"role": "user", "content": "hi"}]}), None).expect("answer");
    assert_eq!(status, 503);
    assert!(a["error"].as_str().is_some_and(|m| m.contains("linepilot model pull qwen2.5-0.5b")), "{a}");
    // The rest of the gateway runs on.
    assert_eq!(d.write("m v=1 1").expect("write"), 204);
    d.stop();
}
