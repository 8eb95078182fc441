//! MQTT ingest from mosquitto into the store, and end-to-end latency (issue 4).
//!
//! Everything real, on loopback, in one run:
//! - **mosquitto** (the Debian broker) on a free port;
//! - **the daemon**: `linepilot run` (the release binary cargo builds for
//!   benches) with one MQTT source of 100 JSON tags
//!   (`plant/line1/mNNN/vib`, `$.rms`, `$.ts`) and its store;
//! - **a publisher** on its own thread that writes pre-encoded MQTT 3.1.1
//!   PUBLISH packets (QoS 0) to the broker as fast as it can, so the load
//!   generator costs little of the two cores.
//!
//! Phases:
//! 1. **throughput**: N messages; done when `/healthz` says the source's
//!    `stored_samples` reached N (durable, fsynced). Rate = N / (last stored −
//!    first published). The daemon's and mosquitto's CPU from /proc.
//! 2. **peer**: the same N messages to `mosquitto_sub -C N` (the broker's own C
//!    client, writing to /dev/null): how fast a subscriber that does nothing
//!    with the messages receives them from this broker on this machine.
//! 3. **latency**: one message every 20 ms with `ts` = the wall clock at
//!    publish; a client polls `GET /api/v1/query?series=..&from=ts` until the
//!    value is there. p50/p90/p99/max of publish → visible in the query API.
//!
//! `cargo bench --bench ingest_mqtt` (`LP_BENCH_MESSAGES`, default 1,000,000;
//! `LP_BENCH_LATENCY_SAMPLES`, default 500). Results: a table on stdout and
//! `target/bench-results/ingest_mqtt.json`. Needs `mosquitto` and
//! `mosquitto_sub` (Debian packages mosquitto, mosquitto-clients).

#[path = "support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::Daemon;

const TAGS: usize = 100;
const SOURCE: &str = "bench-mqtt";

fn env_u64(key: &str, default: u64) -> u64 {
    std::env::var(key).ok().and_then(|s| s.parse().ok()).filter(|n| *n > 0).unwrap_or(default)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

struct Broker {
    child: Child,
    port: u16,
}

impl Broker {
    fn start(dir: &Path) -> Broker {
        let port = support::free_port();
        let conf = dir.join("mosquitto.conf");
        // No per-client queue limit: a slow subscriber must not make the broker drop messages.
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\nmax_queued_bytes 0\nlog_type error\n"
            ),
        )
        .expect("mosquitto.conf");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("mosquitto (Debian package mosquitto) must be installed");
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Broker { child, port }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// MQTT remaining length (variable byte integer).
fn put_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// A raw MQTT 3.1.1 publisher (QoS 0, clean session).
struct Publisher {
    stream: std::io::BufWriter<TcpStream>,
    buf: Vec<u8>,
    payload: Vec<u8>,
}

impl Publisher {
    fn connect(port: u16, id: &str) -> Publisher {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to mosquitto");
        s.set_nodelay(true).expect("nodelay");
        let mut body = Vec::new();
        put_str(&mut body, b"MQTT");
        body.extend_from_slice(&[4, 0x02, 0, 60]); // level 4, clean session, keep-alive 60 s
        put_str(&mut body, id.as_bytes());
        let mut pkt = vec![0x10];
        put_len(&mut pkt, body.len());
        pkt.extend_from_slice(&body);
        s.write_all(&pkt).expect("CONNECT");
        let mut ack = [0u8; 4];
        s.read_exact(&mut ack).expect("CONNACK");
        assert_eq!(ack, [0x20, 2, 0, 0], "CONNACK refused");
        Publisher { stream: std::io::BufWriter::with_capacity(1 << 16, s), buf: Vec::new(), payload: Vec::new() }
    }

    /// Publishes `{"rms":value,"ts":ts_ms}` on tag `tag`'s topic.
    fn publish(&mut self, tag: usize, value: f64, ts_ms: i64) {
        self.payload.clear();
        write!(self.payload, "{{\"rms\":{value},\"ts\":{ts_ms}}}").expect("payload");
        let topic = format!("plant/line1/m{tag:03}/vib");
        self.buf.clear();
        self.buf.push(0x30);
        put_len(&mut self.buf, 2 + topic.len() + self.payload.len());
        put_str(&mut self.buf, topic.as_bytes());
        self.buf.extend_from_slice(&self.payload);
        self.stream.write_all(&self.buf).expect("PUBLISH");
    }

    fn flush(&mut self) {
        self.stream.flush().expect("flush");
    }
}

/// Publishes `n` messages (10 per tag per simulated second, distinct
/// timestamps per tag) as fast as possible; returns when all are written.
fn publish_burst(port: u16, n: u64, t0_ms: i64) -> Instant {
    let mut p = Publisher::connect(port, "bench-publisher");
    let started = Instant::now();
    for i in 0..n {
        let tag = (i % TAGS as u64) as usize;
        let k = i / TAGS as u64;
        let value = ((k * 7 + tag as u64) % 10_000) as f64 / 100.0;
        p.publish(tag, value, t0_ms + k as i64 * 100);
    }
    p.flush();
    started
}

fn gateway_config(dir: &Path, port: u16) -> std::path::PathBuf {
    let mut text = format!(
        "[site]\nname = \"Bench\"\ntime_zone = \"UTC\"\n[store]\ndata_dir = \"{}\"\nretention_raw = \"36500d\"\nretention_rollup = \"36500d\"\n\
         [[area]]\nid = \"hall\"\nname = \"Hall\"\n[[line]]\nid = \"line1\"\nname = \"Line 1\"\narea = \"hall\"\n\
         [[asset]]\nid = \"motors\"\nname = \"Motors\"\nline = \"line1\"\nkind = \"motor\"\n\
         [[source]]\nid = \"{SOURCE}\"\nkind = \"mqtt\"\nurl = \"mqtt://127.0.0.1:{port}\"\n",
        dir.join("data").display()
    );
    for i in 0..TAGS {
        text.push_str(&format!(
            "[[tag]]\nname = \"m{i:03}.vib\"\nasset = \"motors\"\nsource = \"{SOURCE}\"\n\
             address = {{ topic = \"plant/line1/m{i:03}/vib\", json_path = \"$.rms\", ts_path = \"$.ts\" }}\n\
             unit = \"mm/s\"\ndescription = \"Vibration\"\n"
        ));
    }
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).expect("gateway.toml");
    path
}

/// The source's health from `/healthz`.
fn source_health(addr: &str) -> serde_json::Value {
    support::source_health(addr, SOURCE)
}

fn wait_connected(addr: &str) {
    let started = Instant::now();
    while source_health(addr)["state"] != "connected" {
        assert!(started.elapsed() < Duration::from_secs(30), "the MQTT source did not connect");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The SUBACK follows the CONNACK.
    std::thread::sleep(Duration::from_millis(300));
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let n = env_u64("LP_BENCH_MESSAGES", 1_000_000);
    let latency_samples = env_u64("LP_BENCH_LATENCY_SAMPLES", 500);
    let tmp = tempfile::tempdir().expect("temp dir");
    let broker = Broker::start(tmp.path());
    let cfg = gateway_config(tmp.path(), broker.port);
    let daemon = Daemon::start(&cfg);
    let pid = daemon.child.id();
    wait_connected(&daemon.addr);
    let machine = support::machine();
    println!(
        "ingest_mqtt: mosquitto :{}, daemon {}, {n} messages, load {}",
        broker.port, daemon.addr, machine["loadavg"]
    );

    // 1. Throughput into the store.
    let before = source_health(&daemon.addr);
    let stored0 = before["stored_samples"].as_u64().unwrap_or(0);
    let (d_cpu0, b_cpu0) = (support::proc_cpu(pid), support::proc_cpu(broker.child.id()));
    let t0_ms = now_ms() - 10 * 24 * 3_600_000; // history: older than anything live
    let started = Instant::now();
    let publisher = std::thread::spawn({
        let port = broker.port;
        move || {
            let s = publish_burst(port, n, t0_ms);
            s.elapsed()
        }
    });
    let mut last_progress = Instant::now();
    let mut last = stored0;
    let (stored, dropped) = loop {
        std::thread::sleep(Duration::from_millis(20));
        let h = source_health(&daemon.addr);
        let s = h["stored_samples"].as_u64().unwrap_or(0) - stored0;
        if s >= n {
            break (s, h["dropped"].as_u64().unwrap_or(0));
        }
        if s != last {
            last = s;
            last_progress = Instant::now();
        } else if last_progress.elapsed() > Duration::from_secs(10) {
            println!("stalled at {s} of {n} stored");
            break (s, h["dropped"].as_u64().unwrap_or(0));
        }
    };
    let wall = started.elapsed().as_secs_f64();
    let publish_wall = publisher.join().expect("publisher").as_secs_f64();
    let (d_cpu, b_cpu) = (support::proc_cpu(pid) - d_cpu0, support::proc_cpu(broker.child.id()) - b_cpu0);
    let rate = stored as f64 / wall;
    println!(
        "linepilot: {stored} of {n} stored in {wall:.2} s = {rate:.0} msg/s (published in {publish_wall:.2} s); \
         daemon CPU {d_cpu:.2} s ({:.2} cores), mosquitto CPU {b_cpu:.2} s; dropped {dropped}",
        d_cpu / wall
    );

    // 2. The peer: mosquitto_sub receiving the same burst.
    let mut sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-t", "plant/line1/+/vib", "-q", "0"])
        .args(["-C", &n.to_string(), "-i", "bench-peer"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("mosquitto_sub (Debian package mosquitto-clients) must be installed");
    std::thread::sleep(Duration::from_millis(500)); // subscribed by then
    let b_cpu1 = support::proc_cpu(broker.child.id());
    let peer_start = Instant::now();
    let p = std::thread::spawn({
        let port = broker.port;
        move || publish_burst(port, n, t0_ms)
    });
    let mut peer_done = None;
    while peer_start.elapsed() < Duration::from_secs(120) {
        if let Ok(Some(st)) = sub.try_wait() {
            assert!(st.success(), "mosquitto_sub failed: {st}");
            peer_done = Some(peer_start.elapsed().as_secs_f64());
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = p.join();
    let peer_wall = peer_done.unwrap_or_else(|| {
        let _ = sub.kill();
        f64::NAN
    });
    let _ = sub.wait();
    let peer_rate = n as f64 / peer_wall;
    let b_cpu_peer = support::proc_cpu(broker.child.id()) - b_cpu1;
    println!("mosquitto_sub: {n} received in {peer_wall:.2} s = {peer_rate:.0} msg/s; mosquitto CPU {b_cpu_peer:.2} s");

    // The daemon was subscribed during the peer's burst too: let it finish
    // storing that before measuring latency.
    let started = Instant::now();
    while source_health(&daemon.addr)["stored_samples"].as_u64().unwrap_or(0) < stored0 + 2 * n {
        if started.elapsed() > Duration::from_secs(60) {
            println!("the daemon did not store the peer phase's burst within 60 s");
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    // 3. Latency: publish → visible in /api/v1/query.
    let mut publisher = Publisher::connect(broker.port, "bench-latency");
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(5))).build().into();
    let mut lat_ms = Vec::new();
    let mut missed = 0u64;
    for k in 0..latency_samples {
        let ts = now_ms();
        let value = 5000.0 + k as f64;
        let sent = Instant::now();
        publisher.publish(0, value, ts);
        publisher.flush();
        let url = format!("http://{}/api/v1/query?series=m000.vib&from={}.{:03}", daemon.addr, ts / 1000, ts % 1000);
        let needle = format!("{value}");
        let seen = loop {
            let mut r = agent.get(&url).call().expect("query");
            let body = r.body_mut().read_to_string().expect("query body");
            if body.contains(&needle) {
                break Some(sent.elapsed());
            }
            if sent.elapsed() > Duration::from_secs(5) {
                break None;
            }
            std::thread::sleep(Duration::from_micros(500));
        };
        match seen {
            Some(d) => lat_ms.push(d.as_secs_f64() * 1000.0),
            None => missed += 1,
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    lat_ms.sort_by(|a, b| a.total_cmp(b));
    let (p50, p90, p99, max) = (
        percentile(&lat_ms, 0.5),
        percentile(&lat_ms, 0.9),
        percentile(&lat_ms, 0.99),
        lat_ms.last().copied().unwrap_or(f64::NAN),
    );
    println!(
        "latency publish → visible in /api/v1/query ({} samples, {missed} missed): p50 {p50:.1} ms, p90 {p90:.1} ms, p99 {p99:.1} ms, max {max:.1} ms",
        lat_ms.len()
    );
    let rss_kb = support::proc_status_kb(pid, "VmHWM");
    let fsync = "50ms (default)";
    drop(daemon);

    println!("\n| receiver | messages | wall (s) | msg/s | receiver CPU (cores) | broker CPU (s) |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!("| linepilot → store (durable) | {stored} | {wall:.2} | {rate:.0} | {:.2} | {b_cpu:.2} |", d_cpu / wall);
    println!("| mosquitto_sub → /dev/null | {n} | {peer_wall:.2} | {peer_rate:.0} | – | {b_cpu_peer:.2} |");
    println!("\nratio linepilot / mosquitto_sub: {:.2}", rate / peer_rate);
    support::write_result(
        "ingest_mqtt",
        &json!({
            "machine": machine,
            "messages": n, "tags": TAGS, "fsync_interval": fsync,
            "linepilot": {"stored": stored, "dropped": dropped, "wall_s": wall, "msg_per_s": rate,
                          "publish_wall_s": publish_wall, "daemon_cpu_s": d_cpu, "broker_cpu_s": b_cpu,
                          "daemon_peak_rss_kb": rss_kb},
            "mosquitto_sub": {"wall_s": peer_wall, "msg_per_s": peer_rate, "broker_cpu_s": b_cpu_peer},
            "ratio_to_mosquitto_sub": rate / peer_rate,
            "latency_ms": {"samples": lat_ms.len(), "missed": missed, "p50": p50, "p90": p90, "p99": p99, "max": max},
        }),
    );
}
