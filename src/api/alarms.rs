//! The alarm routes: the current alarm list, and the operator's acknowledgement
//! and shelving. Every transition an action causes is stored in the event log
//! before the answer goes out.
//!
//! - `GET /api/v1/alarms` — alarms that need attention (not Normal, or chattering);
//!   `?all=true` lists every configured alarm.
//! - `POST /api/v1/alarms/{id}/ack` — `{"user": "ann", "comment": "..."}`.
//! - `POST /api/v1/alarms/{id}/shelve` — `{"user": "ann", "duration": "30m", "comment": "..."}`.
//! - `POST /api/v1/alarms/{id}/unshelve` — `{"user": "ann"}`.
//!
//! Ids are `tag:condition` (`capper.vib_de_rms:h`); a tag name with `/` in it is
//! written `%2F` in the path.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::json;
use tracing::warn;

use crate::analytics::alarms::{AlarmEngine, AlarmError};
use crate::domain::{now_ns, Event, Timestamp};
use crate::store::Store;

/// What the alarm routes need: the engine the analytics stage drives, and the
/// store whose event log keeps the operators' actions.
#[derive(Clone)]
pub struct AlarmApi {
    /// The alarm engine, shared with the analytics stage.
    pub engine: Arc<Mutex<AlarmEngine>>,
    /// The store (its event log receives the events of the actions).
    pub store: Arc<Store>,
    /// The clock (UTC ns); `now_ns` in the daemon, a fixed one in tests.
    pub clock: fn() -> Timestamp,
}

impl AlarmApi {
    /// The routes' state with the wall clock.
    pub fn new(engine: Arc<Mutex<AlarmEngine>>, store: Arc<Store>) -> AlarmApi {
        AlarmApi { engine, store, clock: now_ns }
    }
}

/// The alarm routes, ready to `merge` into the API router.
pub fn router(state: AlarmApi) -> Router {
    Router::new()
        .route("/api/v1/alarms", get(list))
        .route("/api/v1/alarms/{id}/ack", post(ack))
        .route("/api/v1/alarms/{id}/shelve", post(shelve))
        .route("/api/v1/alarms/{id}/unshelve", post(unshelve))
        .with_state(state)
}

#[derive(Deserialize)]
struct ListParams {
    #[serde(default)]
    all: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    user: String,
    #[serde(default)]
    comment: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShelveBody {
    user: String,
    /// `30m`, `2h`.
    duration: String,
    #[serde(default)]
    comment: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnshelveBody {
    user: String,
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn alarm_error(e: AlarmError) -> Response {
    let status = match e {
        AlarmError::Unknown(_) => StatusCode::NOT_FOUND,
        AlarmError::NothingToAcknowledge { .. } | AlarmError::NotShelved(_) => StatusCode::CONFLICT,
        AlarmError::BadShelveTime { .. } => StatusCode::BAD_REQUEST,
    };
    error(status, e.to_string())
}

/// The answer to an action without a user, if it has none.
fn missing_user(user: &str) -> Option<Response> {
    user.trim().is_empty().then(|| error(StatusCode::BAD_REQUEST, "`user` must not be empty".to_string()))
}

/// `GET /api/v1/alarms[?all=true]`.
async fn list(State(st): State<AlarmApi>, Query(p): Query<ListParams>) -> Response {
    let engine = st.engine.lock();
    let alarms = if p.all.unwrap_or(false) { engine.all() } else { engine.snapshot() };
    Json(json!({ "alarms": alarms })).into_response()
}

/// Stores the events of an action and answers with the alarm's new status.
async fn stored(st: &AlarmApi, id: &str, events: Vec<Event>) -> Response {
    let status = st.engine.lock().status(id);
    let store = st.store.clone();
    let evs = events.clone();
    match tokio::task::spawn_blocking(move || store.events().append_many(&evs)).await {
        Ok(Ok(_)) => Json(json!({ "alarm": status, "events": events })).into_response(),
        Ok(Err(e)) => {
            warn!(alarm = id, error = %e, "Alarm action done but its events were not stored");
            error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `POST /api/v1/alarms/{id}/ack`.
async fn ack(State(st): State<AlarmApi>, Path(id): Path<String>, Json(b): Json<AckBody>) -> Response {
    if let Some(r) = missing_user(&b.user) {
        return r;
    }
    let res = st.engine.lock().acknowledge(&id, b.user.trim(), &b.comment, (st.clock)());
    match res {
        Ok(events) => stored(&st, &id, events).await,
        Err(e) => alarm_error(e),
    }
}

/// `POST /api/v1/alarms/{id}/shelve`.
async fn shelve(State(st): State<AlarmApi>, Path(id): Path<String>, Json(b): Json<ShelveBody>) -> Response {
    if let Some(r) = missing_user(&b.user) {
        return r;
    }
    let d = match humantime::parse_duration(&b.duration) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad duration `{}`: {e}", b.duration)),
    };
    let now = (st.clock)();
    let res = st.engine.lock().shelve(&id, b.user.trim(), now.saturating_add(d), &b.comment, now);
    match res {
        Ok(events) => stored(&st, &id, events).await,
        Err(e) => alarm_error(e),
    }
}

/// `POST /api/v1/alarms/{id}/unshelve`.
async fn unshelve(State(st): State<AlarmApi>, Path(id): Path<String>, Json(b): Json<UnshelveBody>) -> Response {
    if let Some(r) = missing_user(&b.user) {
        return r;
    }
    let res = st.engine.lock().unshelve(&id, b.user.trim(), (st.clock)());
    match res {
        Ok(events) => stored(&st, &id, events).await,
        Err(e) => alarm_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::domain::{EventKind, Quality, Sample, SeriesId, Value};
    use crate::store::config::StoreConfig;
    use crate::store::events::EventQuery;
    use crate::store::StoreArgs;

    const T0: i64 = 1_800_000_000_000_000_000;

    fn clock() -> Timestamp {
        T0 + 10_000_000_000
    }

    fn post(url: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let mut resp = ureq::post(url)
            .header("Content-Type", "application/json")
            .config()
            .http_status_as_error(false)
            .build()
            .send(body.to_string())
            .expect("post");
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().expect("body");
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }

    fn get_json(url: &str) -> serde_json::Value {
        let text = ureq::get(url).call().expect("get").body_mut().read_to_string().expect("body");
        serde_json::from_str(&text).expect("json")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn list_ack_and_shelve_over_http() {
        let text = r#"
[site]
name = "T"
[[area]]
id = "a"
name = "A"
[[line]]
id = "l1"
name = "L"
area = "a"
[[asset]]
id = "filler"
name = "F"
line = "l1"
kind = "filler"
[[tag]]
name = "filler.p"
asset = "filler"
description = "p"
limits = { hh = 5.0, h = 4.0 }
"#;
        let config = Config::from_str_named(text, "t.toml").expect("config");
        let mut engine = AlarmEngine::new(&config, |n| (n == "filler.p").then_some(SeriesId(7)));
        let evs =
            engine.on_sample(&Sample { series: SeriesId(7), ts: T0, value: Value::F64(5.5), quality: Quality::GOOD });
        assert_eq!(evs.len(), 2);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut args = StoreArgs::new(StoreConfig { data_dir: dir.path().to_path_buf(), ..Default::default() });
        args.background = false;
        let store = Arc::new(Store::open(args).expect("store"));
        let api = AlarmApi { engine: Arc::new(Mutex::new(engine)), store: store.clone(), clock };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move { axum::serve(listener, router(api)).await });
        let base = format!("http://{addr}/api/v1/alarms");

        let checks = tokio::task::spawn_blocking(move || {
            let list = get_json(&base);
            let ids: Vec<&str> =
                list["alarms"].as_array().expect("list").iter().filter_map(|a| a["id"].as_str()).collect();
            assert_eq!(ids, ["filler.p:hh", "filler.p:h"]);
            assert_eq!(list["alarms"][0]["state"], "unacknowledged");
            assert_eq!(list["alarms"][0]["priority"], "high");

            let (s, b) = post(&format!("{base}/filler.p:hh/ack"), json!({ "user": "ann", "comment": "on it" }));
            assert_eq!(s, 200, "{b}");
            assert_eq!(b["alarm"]["state"], "acknowledged");
            assert_eq!(b["events"][0]["kind"], "acknowledgement");
            assert_eq!(b["events"][0]["ts"], clock());
            // Twice: nothing left to acknowledge.
            let (s, _) = post(&format!("{base}/filler.p:hh/ack"), json!({ "user": "ann" }));
            assert_eq!(s, 409);
            let (s, _) = post(&format!("{base}/no.tag:h/ack"), json!({ "user": "ann" }));
            assert_eq!(s, 404);
            let (s, _) = post(&format!("{base}/filler.p:h/ack"), json!({ "user": " " }));
            assert_eq!(s, 400);

            let (s, b) = post(
                &format!("{base}/filler.p:h/shelve"),
                json!({ "user": "bo", "duration": "30m", "comment": "transmitter swap" }),
            );
            assert_eq!(s, 200, "{b}");
            assert_eq!(b["alarm"]["state"], "shelved");
            assert_eq!(b["alarm"]["shelved"]["until"], clock() + 1_800_000_000_000);
            let (s, _) = post(&format!("{base}/filler.p:h/shelve"), json!({ "user": "bo", "duration": "9h" }));
            assert_eq!(s, 400, "longer than max_shelve");
            let (s, _) = post(&format!("{base}/filler.p:h/shelve"), json!({ "user": "bo", "duration": "soon" }));
            assert_eq!(s, 400);
            let (s, b) = post(&format!("{base}/filler.p:h/unshelve"), json!({ "user": "bo" }));
            assert_eq!(s, 200, "{b}");
            assert_eq!(b["alarm"]["state"], "unacknowledged", "still active: annunciated again");
            let (s, _) = post(&format!("{base}/filler.p:h/unshelve"), json!({ "user": "bo" }));
            assert_eq!(s, 409);
            let all = get_json(&format!("{base}?all=true"));
            assert_eq!(all["alarms"].as_array().map(|a| a.len()), Some(2));
        })
        .await;
        server.abort();
        checks.expect("checks");

        // The actions are in the event log: 1 acknowledgement, shelved, unshelved.
        let stored = store.events().query(&EventQuery::default()).expect("events");
        let kinds: Vec<(EventKind, String)> =
            stored.iter().map(|e| (e.kind, e.details["transition"].as_str().unwrap_or_default().to_string())).collect();
        assert_eq!(
            kinds,
            [
                (EventKind::Acknowledgement, "acknowledged".to_string()),
                (EventKind::Alarm, "shelved".to_string()),
                (EventKind::Alarm, "unshelved".to_string()),
            ]
        );
        assert_eq!(stored[1].details["comment"], "transmitter swap");
        store.close();
    }
}
