//! The OPC UA driver against the simulated line (linesim in-process, demo
//! scenario, speed 10): every OPC UA variable of the filler, capper and
//! labeler is subscribed, once unsecured and anonymous and once with
//! Basic256Sha256 SignAndEncrypt and a user login. What lands in the store
//! must be what linesim served (same value at the same source timestamp).
//! Then the server is restarted on the same port: the driver must notice,
//! record the gap (bad samples, an event, health) and get every tag's data
//! again on its own.

mod common;

use common::Gateway;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use linepilot::config::Config;
use linepilot::domain::{Quality, SeriesKey};
use linepilot::ingest::SourceState;
use linepilot::store::events::EventQuery;
use linepilot::store::points::Column;
use linepilot::store::Store;
use linesim::line::live::LiveOptions;
use linesim::line::{Binding, Catalog, PlcType, Val};
use linesim::server::Running;
use parking_lot::Mutex;

const SPEED: f64 = 10.0;
const USER: &str = "operator";
const PASSWORD: &str = "linesim";
const PASSWORD_ENV: &str = "LINEPILOT_TEST_OPCUA_PASSWORD";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Security {
    None,
    Encrypted,
}

/// The OPC UA tags of the catalog: (catalog index, node path, type).
fn opcua_tags(catalog: &Catalog) -> Vec<(usize, String, PlcType)> {
    catalog
        .tags
        .iter()
        .enumerate()
        .filter_map(|(i, t)| match &t.binding {
            Binding::OpcUa { path } => Some((i, path.clone(), t.ty)),
            _ => None,
        })
        .collect()
}

/// Starts the line with its servers; the OPC UA server on `port` (0: any).
async fn start_line(pki: &Path, port: u16, start_ns: Option<i64>) -> Running {
    let opts = LiveOptions { speed: SPEED, skip_ns: 0, start_ns, truth: None };
    common::start_line(pki, opts, |sc| {
        sc.opcua.listen = format!("127.0.0.1:{port}");
        if !sc.opcua.users.iter().any(|u| u.user == USER) {
            sc.opcua.users.push(linesim::server::UserConfig { user: USER.into(), password: PASSWORD.into() });
        }
    })
    .await
}

/// What linesim served: (catalog index, source timestamp) → value, and the newest frame time.
#[derive(Default)]
struct Served {
    values: HashMap<(usize, i64), Val>,
    last_frame_ns: i64,
}

/// Follows the line's frames, recording every OPC UA value with its stamp.
fn record(
    running: &Running,
    tags: &[(usize, String, PlcType)],
    served: Arc<Mutex<Served>>,
) -> tokio::task::JoinHandle<()> {
    let mut frames = running.line.feed.frames.clone();
    let idx: Vec<usize> = tags.iter().map(|t| t.0).collect();
    tokio::spawn(async move {
        loop {
            {
                let f = frames.borrow_and_update().clone();
                let mut s = served.lock();
                s.last_frame_ns = s.last_frame_ns.max(f.ts_ns);
                for &i in &idx {
                    s.values.insert((i, f.stamps[i]), f.values[i]);
                }
            }
            if frames.changed().await.is_err() {
                return;
            }
        }
    })
}

fn gateway_config(dir: &Path, catalog: &Catalog, endpoint: &str, security: Security) -> Config {
    gateway_config_trust(dir, catalog, endpoint, security, true)
}

fn gateway_config_trust(dir: &Path, catalog: &Catalog, endpoint: &str, security: Security, trust: bool) -> Config {
    let mut text = format!(
        "[site]\nname = \"Test plant\"\ntime_zone = \"UTC\"\n[store]\ndata_dir = \"{}\"\n\
         [[area]]\nid = \"hall\"\nname = \"Hall\"\n[[line]]\nid = \"line1\"\nname = \"Line 1\"\narea = \"hall\"\n",
        dir.join("data").display()
    );
    for a in ["filler", "capper", "labeler"] {
        text.push_str(&format!("[[asset]]\nid = \"{a}\"\nname = \"{a}\"\nline = \"line1\"\nkind = \"{a}\"\n"));
    }
    text.push_str(&format!(
        "[[source]]\nid = \"plc1\"\nkind = \"opcua\"\nendpoint = \"{endpoint}\"\ntrust_server_cert = {trust}\n\
         publishing_interval = \"200ms\"\nsampling_interval = \"100ms\"\nqueue_size = 20\nconnect_timeout = \"5s\"\n"
    ));
    if security == Security::Encrypted {
        text.push_str(&format!(
            "security = {{ policy = \"Basic256Sha256\", mode = \"SignAndEncrypt\", user = \"{USER}\", password_env = \"{PASSWORD_ENV}\" }}\n"
        ));
    }
    for (i, path, ty) in opcua_tags(catalog) {
        let t = &catalog.tags[i];
        let value_type = match ty {
            PlcType::Bool => "bool",
            PlcType::F32 | PlcType::F64 => "f64",
            _ => "i64",
        };
        text.push_str(&format!(
            "[[tag]]\nname = \"{}\"\nasset = \"{}\"\nsource = \"plc1\"\naddress = \"ns=2;s={path}\"\nunit = \"{}\"\n\
             description = \"{}\"\nvalue_type = \"{value_type}\"\n",
            t.name,
            t.asset,
            t.unit,
            t.description.replace('"', "'")
        ));
    }
    // A twin of the first analog tag with a percent deadband: linesim's nodes have no
    // EURange, so the server refuses the filter and the driver polls the node instead.
    let (i, path, _) = percent_twin(catalog);
    text.push_str(&format!(
        "[[tag]]\nname = \"{PCT_TAG}\"\nasset = \"{}\"\nsource = \"plc1\"\naddress = \"ns=2;s={path}\"\n\
         description = \"twin with a percent deadband\"\ndeadband_percent = 1.0\nsampling_interval = \"50ms\"\n",
        catalog.tags[i].asset
    ));
    match Config::from_str_named(&text, "ingest-opcua.toml") {
        Ok(c) => c,
        Err(e) => panic!("gateway config does not load:\n{e}\n{text}"),
    }
}

/// The tag the percent-deadband twin copies: the first analog OPC UA tag.
fn percent_twin(catalog: &Catalog) -> (usize, String, PlcType) {
    opcua_tags(catalog)
        .into_iter()
        .find(|(i, _, ty)| matches!(ty, PlcType::F32 | PlcType::F64) && !catalog.tags[*i].unit.is_empty())
        .expect("an analog OPC UA tag")
}

const PCT_TAG: &str = "check.percent_deadband_twin";

/// One stored sample.
#[derive(Debug, Clone, PartialEq)]
struct Stored {
    ts: i64,
    value: f64,
    quality: u32,
}

fn stored(store: &Store, name: &str) -> Vec<Stored> {
    let Some((id, _)) = store.catalog().lookup(&SeriesKey::new(name.to_string())) else { return Vec::new() };
    let p = store.range(id, i64::MIN, i64::MAX).expect("range");
    let values: Vec<f64> = match &p.values {
        Column::F64(v) => v.clone(),
        Column::I64(v) => v.iter().map(|x| *x as f64).collect(),
        Column::Bool(v) => v.iter().map(|b| *b as u8 as f64).collect(),
        Column::Str(v) => v.iter().map(|_| f64::NAN).collect(),
    };
    (0..p.ts.len())
        .map(|k| Stored { ts: p.ts[k], value: values[k], quality: p.quality.get(k).copied().unwrap_or(0) })
        .collect()
}

fn val_f64(v: Val) -> f64 {
    match v {
        Val::Bool(b) => b as u8 as f64,
        Val::I64(x) => x as f64,
        Val::F64(x) => x,
    }
}

/// The value linesim served equals the stored one (an f32 variable carries
/// the f32 nearest to the model's value).
fn same(ty: PlcType, served: Val, stored: f64) -> bool {
    let s = val_f64(served);
    match ty {
        PlcType::F32 => (s as f32) == (stored as f32),
        _ => s == stored,
    }
}

/// Checks every good stored sample newer than `after` against `served`:
/// returns (matched, mismatched, tags with a match).
fn compare(
    store: &Store,
    catalog: &Catalog,
    tags: &[(usize, String, PlcType)],
    served: &Served,
    after: i64,
) -> (usize, Vec<String>, usize, usize) {
    let mut matched = 0;
    let mut unknown = 0;
    let mut bad = Vec::new();
    let mut tags_ok = 0;
    for (i, _, ty) in tags {
        let name = &catalog.tags[*i].name;
        let mut any = false;
        for s in stored(store, name).into_iter().filter(|s| s.quality == 0 && s.ts > after) {
            match served.values.get(&(*i, s.ts)) {
                Some(v) if same(*ty, *v, s.value) => {
                    matched += 1;
                    any = true;
                }
                Some(v) => bad.push(format!("{name} @ {}: stored {} served {v:?}", s.ts, s.value)),
                None => unknown += 1,
            }
        }
        tags_ok += any as usize;
    }
    (matched, bad, tags_ok, unknown)
}

async fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn line_through_restart(security: Security) {
    std::env::set_var(PASSWORD_ENV, PASSWORD);
    let tmp = tempfile::tempdir().expect("tempdir");
    let linesim_pki = tmp.path().join("linesim-pki");
    let (catalog, _) = Catalog::build();
    let tags = opcua_tags(&catalog);
    assert!(tags.len() >= 40, "OPC UA tags in the catalog: {}", tags.len());

    let running = start_line(&linesim_pki, 0, None).await;
    let port = running.opcua.addr.port();
    let endpoint = running.opcua.endpoint_url.clone();
    let served1 = Arc::new(Mutex::new(Served::default()));
    let rec1 = record(&running, &tags, served1.clone());

    let config = gateway_config(tmp.path(), &catalog, &endpoint, security);
    let gw = Gateway::start(&config);
    let (store, health) = (gw.store.clone(), gw.health.clone());

    // Every tag arrives, with the values linesim served.
    let names: Vec<String> = tags.iter().map(|(i, _, _)| catalog.tags[*i].name.clone()).collect();
    wait_for("a good sample of every tag", Duration::from_secs(60), || {
        names.iter().all(|n| stored(&store, n).iter().any(|s| s.quality == 0))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let snap = &health.snapshot()[0];
    assert_eq!(snap.state, SourceState::Connected, "{snap:?}");
    let pki = tmp.path().join("data/pki/opcua");
    assert!(pki.join("own/cert.der").exists(), "client certificate created in {}", pki.display());
    if security == Security::Encrypted {
        let trusted = std::fs::read_dir(pki.join("trusted")).map(|d| d.count()).unwrap_or(0);
        assert!(trusted >= 1, "the server certificate is in trusted/ (trust_server_cert = true)");
    }
    {
        let served = served1.lock();
        let (matched, bad, tags_ok, unknown) = compare(&store, &catalog, &tags, &served, i64::MIN);
        println!(
            "{security:?} run 1: {matched} samples as served, {unknown} not seen by the recorder, {tags_ok}/{} tags",
            tags.len()
        );
        assert!(bad.is_empty(), "stored values differ from served ones:\n{}", bad.join("\n"));
        assert_eq!(tags_ok, tags.len(), "every tag has a sample matching what linesim served");
        assert!(matched > tags.len() * 2, "values keep arriving ({matched})");
        assert!(unknown * 10 <= matched, "nearly every stored sample is one the recorder saw ({unknown} unseen)");
    }
    {
        // The twin the server would not monitor (percent deadband, no EURange) is polled:
        // its values are ones linesim served, at the source timestamps it served them.
        let (i, _, ty) = percent_twin(&catalog);
        let served = served1.lock();
        let polled: Vec<Stored> = stored(&store, PCT_TAG).into_iter().filter(|s| s.quality == 0).collect();
        assert!(polled.len() >= 2, "the polled twin has values: {polled:?}");
        for s in &polled {
            if let Some(v) = served.values.get(&(i, s.ts)) {
                assert!(same(ty, *v, s.value), "{PCT_TAG} @ {}: stored {}, served {v:?}", s.ts, s.value);
            }
        }
        assert!(polled.iter().any(|s| served.values.contains_key(&(i, s.ts))), "polled values are served ones");
        assert_eq!(health.snapshot()[0].polled_tags, 1, "only the twin is polled");
    }
    // Source timestamps are simulated time (10x faster than the wall clock), not the arrival time.
    let newest = names.iter().flat_map(|n| stored(&store, n)).map(|s| s.ts).max().unwrap_or(0);
    assert!(newest > linepilot::domain::now_ns() + 2_000_000_000, "source timestamps are the server's");

    // Server restart on the same port.
    let last1 = served1.lock().last_frame_ns;
    let Running { line, opcua, modbus, mqtt } = running;
    line.stop();
    tokio::time::timeout(Duration::from_secs(15), opcua.task).await.expect("OPC UA server stops").expect("join");
    drop((modbus, mqtt));
    let _ = rec1.await;
    let last_good = served1.lock().last_frame_ns;
    wait_for("health shows the drop", Duration::from_secs(20), || health.snapshot()[0].state == SourceState::Down)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let running = start_line(&linesim_pki, port, Some(last1.max(last_good) + 1_000_000_000)).await;
    assert_eq!(running.opcua.addr.port(), port);
    let served2 = Arc::new(Mutex::new(Served::default()));
    let rec2 = record(&running, &tags, served2.clone());
    // Every value of the new server is stamped at or after its first frame.
    let restart_ts = running.line.feed.frames.borrow().ts_ns - 1;

    wait_for("every tag's data resumes after the restart", Duration::from_secs(60), || {
        let served = served2.lock();
        compare(&store, &catalog, &tags, &served, restart_ts).2 == tags.len()
    })
    .await;
    {
        let served = served2.lock();
        let (matched, bad, tags_ok, _) = compare(&store, &catalog, &tags, &served, restart_ts);
        println!("{security:?} after restart: {matched} samples as served, {tags_ok}/{} tags", tags.len());
        assert!(bad.is_empty(), "stored values differ after the restart:\n{}", bad.join("\n"));
    }
    let snap = health.snapshot()[0].clone();
    assert_eq!(snap.state, SourceState::Connected, "{snap:?}");
    assert!(snap.reconnects >= 1, "{snap:?}");
    assert!(snap.bad_samples >= tags.len() as u64, "{snap:?}");
    // The gap: a BAD_COMMS sample per tag between the two runs.
    for n in &names {
        let all = stored(&store, n);
        let last_run1 =
            all.iter().filter(|s| s.quality == 0 && s.ts <= last1.max(last_good)).map(|s| s.ts).max().unwrap_or(0);
        let gap: Vec<&Stored> = all.iter().filter(|s| s.quality == Quality::BAD_COMMS.code()).collect();
        assert!(
            gap.iter().any(|s| s.ts > last_run1 && s.ts <= restart_ts),
            "{n}: a bad-quality sample after the last value before the restart ({last_run1}) and before the new data ({restart_ts}): {gap:?}"
        );
    }
    let events = store.events().query(&EventQuery::default()).expect("events");
    let msgs: Vec<&str> = events.iter().map(|e| e.message.as_str()).collect();
    assert!(msgs.iter().any(|m| m.contains("plc1: connection lost")), "{msgs:?}");
    assert!(msgs.iter().any(|m| m.contains("plc1: connection restored")), "{msgs:?}");

    gw.stop().await;
    drop(running);
    let _ = rec2.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unsecured_anonymous_through_a_server_restart() {
    line_through_restart(Security::None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn encrypted_user_login_through_a_server_restart() {
    line_through_restart(Security::Encrypted).await;
}

/// An untrusted server certificate: the driver says which file to move where,
/// and once it is moved to trusted/ the data flows without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn untrusted_server_certificate_is_explained_and_can_be_trusted() {
    std::env::set_var(PASSWORD_ENV, PASSWORD);
    let tmp = tempfile::tempdir().expect("tempdir");
    let (catalog, _) = Catalog::build();
    let tags = opcua_tags(&catalog);
    let running = start_line(&tmp.path().join("linesim-pki"), 0, None).await;
    let config = gateway_config_trust(tmp.path(), &catalog, &running.opcua.endpoint_url, Security::Encrypted, false);
    let gw = Gateway::start(&config);
    let (store, health) = (gw.store.clone(), gw.health.clone());

    let pki = tmp.path().join("data/pki/opcua");
    wait_for("the refusal explained in health", Duration::from_secs(30), || {
        health.snapshot()[0].last_error.as_deref().is_some_and(|e| e.contains("rejected") && e.contains("trusted"))
    })
    .await;
    let err = health.snapshot()[0].last_error.clone().unwrap_or_default();
    println!("{err}");
    assert_eq!(health.snapshot()[0].state, SourceState::Down);
    let rejected: Vec<PathBuf> =
        std::fs::read_dir(pki.join("rejected")).expect("rejected/").filter_map(|e| e.ok()).map(|e| e.path()).collect();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    let name = rejected[0].file_name().expect("name").to_string_lossy().into_owned();
    assert!(err.contains(&rejected[0].display().to_string()), "the message names the file: {err}");
    assert!(err.contains(&pki.join("trusted").join(&name).display().to_string()), "and where it goes: {err}");

    std::fs::rename(&rejected[0], pki.join("trusted").join(&name)).expect("move to trusted/");
    let names: Vec<String> = tags.iter().map(|(i, _, _)| catalog.tags[*i].name.clone()).collect();
    wait_for("data once the certificate is trusted", Duration::from_secs(60), || {
        names.iter().all(|n| stored(&store, n).iter().any(|s| s.quality == 0))
    })
    .await;
    assert_eq!(health.snapshot()[0].state, SourceState::Connected);

    gw.stop().await;
    drop(running);
}
