//! HTTP API (axum): the InfluxDB v2 write endpoint, queries and health.

pub mod alarms;
pub mod config;
pub mod llm;
pub mod maintenance;
pub mod query;

use std::io::Read;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tracing::warn;

use crate::line_protocol::Precision;
use crate::store::import::{self, ImportError};
use crate::store::Store;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct ApiState {
    /// The store.
    pub store: Arc<Store>,
    /// The sources' health.
    pub ingest: Arc<crate::ingest::Health>,
    /// The configured tags and their series, in config order.
    pub tags: Arc<Vec<crate::ingest::BoundTag>>,
    /// The loaded config (plant model, shift calendar) for OEE and downtime.
    pub config: Arc<crate::config::Config>,
    /// The analytics stage's counters.
    pub analytics: Arc<crate::analytics::stage::AnalyticsHealth>,
    /// The language models, when `[llm]` is configured.
    pub llm: Option<crate::llm::service::Llm>,
}

/// The router.
pub fn router(state: ApiState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/api/v2/write", post(write))
        .route("/api/v1/query", get(query_handler))
        .route("/api/v1/events", get(events_handler))
        .route("/api/v1/events/{id}/explanation", get(explanation_handler))
        .route("/api/v1/reports", get(reports_handler).post(write_report_handler))
        .route("/api/v1/reports/{name}", get(report_file_handler))
        .route("/api/v1/tags", get(tags_handler))
        .route("/api/v1/oee", get(oee_handler))
        .route("/api/v1/downtime", get(downtime_handler))
        .route("/api/v1/ask", get(ask_handler))
        .route("/api/v1/ask/stream", get(ask_stream_handler))
        .route("/api/v1/maintenance/plan", get(maintenance::plan_handler))
        .route("/healthz", get(healthz))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

#[derive(Deserialize)]
struct WriteParams {
    #[serde(default)]
    precision: Option<String>,
    // Accepted for compatibility with InfluxDB clients, ignored.
    #[serde(default, rename = "bucket")]
    _bucket: Option<String>,
    #[serde(default, rename = "org")]
    _org: Option<String>,
    #[serde(default, rename = "orgID")]
    _org_id: Option<String>,
}

fn influx_error(status: StatusCode, code: &str, message: String) -> Response {
    (status, Json(json!({ "code": code, "message": message }))).into_response()
}

/// `POST /api/v2/write`: line protocol in, 204 once durable; 400 with the
/// offending line on a parse error or a type conflict (nothing stored).
// The blocking closure returns the finished error response; boxing it buys nothing here.
#[allow(clippy::result_large_err)]
async fn write(State(st): State<ApiState>, Query(p): Query<WriteParams>, headers: HeaderMap, body: Bytes) -> Response {
    let precision: Precision = match p.precision.as_deref().unwrap_or("ns").parse() {
        Ok(p) => p,
        Err(e) => return influx_error(StatusCode::BAD_REQUEST, "invalid", format!("{e}")),
    };
    let gzip = headers
        .get(axum::http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let store = st.store.clone();
    let res = tokio::task::spawn_blocking(move || -> Result<(), Response> {
        let raw;
        let bytes: &[u8] = if gzip {
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(&body[..])
                .read_to_end(&mut out)
                .map_err(|e| influx_error(StatusCode::BAD_REQUEST, "invalid", format!("bad gzip body: {e}")))?;
            raw = out;
            &raw
        } else {
            &body
        };
        let text = std::str::from_utf8(bytes)
            .map_err(|e| influx_error(StatusCode::BAD_REQUEST, "invalid", format!("body is not UTF-8: {e}")))?;
        let resolved =
            import::line_protocol(&store, text, precision, crate::domain::now_ns()).map_err(|e| match e {
                ImportError::Line(l) => influx_error(StatusCode::BAD_REQUEST, "invalid", l.to_string()),
                ImportError::Store(s) => store_error(s),
            })?;
        store.write(resolved.samples).map_err(store_error)
    })
    .await;
    match res {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(r)) => r,
        Err(e) => influx_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error", e.to_string()),
    }
}

fn store_error(e: crate::store::StoreError) -> Response {
    use crate::store::StoreError as E;
    match e {
        E::KindMismatch { .. } | E::Catalog(crate::store::catalog::CatalogError::KindConflict { .. }) => {
            influx_error(StatusCode::BAD_REQUEST, "invalid", e.to_string())
        }
        other => {
            warn!(error = %other, "Write failed");
            influx_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", other.to_string())
        }
    }
}

/// `GET /api/v1/query`: the same parameters as `linepilot query`, JSON out.
async fn query_handler(State(st): State<ApiState>, Query(q): Query<query::QueryParams>) -> Response {
    let store = st.store.clone();
    let res = tokio::task::spawn_blocking(move || query::run(&store, &q)).await;
    match res {
        Ok(Ok(r)) => Json(json!({ "results": r })).into_response(),
        Ok(Err(query::QueryError::BadRequest(m))) => {
            (StatusCode::BAD_REQUEST, Json(json!({ "error": m }))).into_response()
        }
        Ok(Err(e @ query::QueryError::NotFound(_))) => {
            (StatusCode::NOT_FOUND, Json(json!({ "error": e.to_string() }))).into_response()
        }
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "error": e.to_string() }))).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "error": e.to_string() }))).into_response(),
    }
}

#[derive(Deserialize)]
struct EventParams {
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    asset: Option<String>,
    /// Comma-separated kinds (`alarm,anomaly`).
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

/// `GET /api/v1/events?from&to&asset&kind&limit`: the event log, newest first.
/// `GET /api/v1/events/{id}/explanation`: the explainer's text and structured
/// explanation (contributing tags, likely causes, checks, facts) of an event.
async fn explanation_handler(
    State(st): State<ApiState>,
    axum::extract::Path(id): axum::extract::Path<i64>,
) -> Response {
    let store = st.store.clone();
    match tokio::task::spawn_blocking(move || store.events().explanation(id)).await {
        Ok(Ok(Some(x))) => Json(x).into_response(),
        Ok(Ok(None)) => {
            (StatusCode::NOT_FOUND, Json(json!({ "error": format!("event {id} has no explanation (yet)") })))
                .into_response()
        }
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "error": e.to_string() }))).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "error": e.to_string() }))).into_response(),
    }
}

fn server_error(e: impl std::fmt::Display) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "error": e.to_string() }))).into_response()
}

/// `GET /api/v1/reports`: the shift reports written, newest first.
async fn reports_handler(State(st): State<ApiState>) -> Response {
    let store = st.store.clone();
    let q = crate::store::events::EventQuery {
        kinds: vec![crate::domain::EventKind::Report],
        limit: Some(200),
        newest_first: true,
        ..Default::default()
    };
    match tokio::task::spawn_blocking(move || store.events().query(&q)).await {
        Ok(Ok(events)) => {
            let list: Vec<serde_json::Value> = events
                .iter()
                .map(|e| {
                    let dir = e.details["dir"].as_str().unwrap_or_default();
                    json!({ "shift": e.details["shift"], "written": query::format_time(e.ts),
                            "written_by": e.details["written_by"], "handover": e.details["handover"],
                            "markdown": format!("/api/v1/reports/{dir}?format=md"),
                            "html": format!("/api/v1/reports/{dir}?format=html") })
                })
                .collect();
            Json(json!({ "reports": list })).into_response()
        }
        Ok(Err(e)) => server_error(e),
        Err(e) => server_error(e),
    }
}

/// Parameters of `GET /api/v1/reports/{name}`.
#[derive(Debug, Deserialize)]
pub struct ReportFileParams {
    /// `md` (default), `html` or `json`.
    pub format: Option<String>,
}

/// `GET /api/v1/reports/{name}?format=md|html|json`: one report (`name` as listed, `2026-11-28_A`).
async fn report_file_handler(
    State(st): State<ApiState>,
    axum::extract::Path(name): axum::extract::Path<String>,
    Query(p): Query<ReportFileParams>,
) -> Response {
    let (file, mime) = match p.format.as_deref().unwrap_or("md") {
        "md" => ("report.md", "text/markdown; charset=utf-8"),
        "html" => ("report.html", "text/html; charset=utf-8"),
        "json" => ("report.json", "application/json"),
        other => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": format!("unknown format `{other}` (md, html, json)") })),
            )
                .into_response()
        }
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_')) {
        return (StatusCode::BAD_REQUEST, Json(json!({ "error": "bad report name" }))).into_response();
    }
    let path = crate::agents::report::reports_dir(&st.store).join(&name).join(file);
    match tokio::fs::read(&path).await {
        Ok(body) => ([(axum::http::header::CONTENT_TYPE, mime)], body).into_response(),
        Err(_) => (StatusCode::NOT_FOUND, Json(json!({ "error": format!("no report `{name}`") }))).into_response(),
    }
}

/// Parameters of `POST /api/v1/reports`.
#[derive(Debug, Deserialize)]
pub struct WriteReportParams {
    /// `last`, `current` or a label (`2026-11-28/A`).
    pub shift: String,
}

/// `POST /api/v1/reports?shift=...`: writes a shift's report now (with the model when
/// it is loaded) and answers with where it is.
async fn write_report_handler(State(st): State<ApiState>, Query(p): Query<WriteReportParams>) -> Response {
    let router = st.llm.as_ref().and_then(crate::llm::service::Llm::router);
    let handle = tokio::runtime::Handle::current();
    let res = tokio::task::spawn_blocking(move || {
        use crate::agents::report;
        let cal = crate::config::Calendar::new(&st.config).map_err(|e| e.to_string())?;
        let ctx = crate::agents::ToolContext::at_newest_data(&st.store, &st.config, &cal);
        let label = ctx.shift("report", &p.shift).map_err(|e| e.to_string())?.label;
        let name = st.config.llm.as_ref().map(|l| l.local_model.clone()).unwrap_or_default();
        let dir = match router {
            Some(r) => {
                let mut w = report::router_writer(r, handle);
                report::write_and_save(&ctx, &label, Some((&name, &mut w)))
            }
            None => report::write_and_save(&ctx, &label, None),
        }
        .map_err(|e| e.to_string())?;
        let dir = dir.file_name().map(|d| d.to_string_lossy().to_string()).unwrap_or_default();
        Ok::<_, String>(json!({ "shift": label, "markdown": format!("/api/v1/reports/{dir}?format=md"),
                                "html": format!("/api/v1/reports/{dir}?format=html") }))
    })
    .await;
    match res {
        Ok(Ok(j)) => Json(j).into_response(),
        Ok(Err(e)) => (StatusCode::BAD_REQUEST, Json(json!({ "error": e }))).into_response(),
        Err(e) => server_error(e),
    }
}

async fn events_handler(State(st): State<ApiState>, Query(p): Query<EventParams>) -> Response {
    let bad = |m: String| (StatusCode::BAD_REQUEST, Json(json!({ "error": m }))).into_response();
    let from = match p.from.as_deref().map(query::parse_time).transpose() {
        Ok(t) => t,
        Err(m) => return bad(m),
    };
    let to = match p.to.as_deref().map(query::parse_time).transpose() {
        Ok(t) => t,
        Err(m) => return bad(m),
    };
    let mut kinds = Vec::new();
    for k in p.kind.as_deref().unwrap_or("").split(',').filter(|k| !k.is_empty()) {
        match k.trim().parse() {
            Ok(k) => kinds.push(k),
            Err(m) => return bad(m),
        }
    }
    let q = crate::store::events::EventQuery {
        from,
        to,
        asset: p.asset,
        kinds,
        limit: Some(p.limit.unwrap_or(1000).min(100_000)),
        newest_first: true,
    };
    let store = st.store.clone();
    match tokio::task::spawn_blocking(move || store.events().query(&q)).await {
        Ok(Ok(events)) => Json(json!({ "events": events })).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "error": e.to_string() }))).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "error": e.to_string() }))).into_response(),
    }
}

/// `GET /healthz`: the store's counters and every source's health. 503 when
/// the store reports an error; `"status": "degraded"` (still 200: the daemon
/// works and is retrying) while a source is not connected.
async fn healthz(State(st): State<ApiState>) -> Response {
    let stats = st.store.stats();
    let sources = st.ingest.snapshot();
    let status = if stats.last_error.is_some() || !st.ingest.all_connected() { "degraded" } else { "ok" };
    let code = if stats.last_error.is_some() { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    let analytics = st.analytics.snapshot();
    let llm = st.llm.as_ref().map(|l| l.health());
    (code, Json(json!({ "status": status, "store": stats, "sources": sources, "analytics": analytics, "llm": llm })))
        .into_response()
}

/// `GET /api/v1/tags`: every configured tag with its latest value, time and quality.
async fn tags_handler(State(st): State<ApiState>) -> Response {
    let ids: Vec<_> = st.tags.iter().map(|t| t.series).collect();
    let latest = st.store.latest(&ids);
    let rows: Vec<serde_json::Value> = st
        .tags
        .iter()
        .zip(latest)
        .map(|(t, l)| {
            json!({
                "name": t.tag.name,
                "asset": t.tag.asset,
                "source": t.tag.source,
                "unit": t.tag.unit,
                "description": t.tag.description,
                "value": l.as_ref().map(|l| &l.value),
                "ts": l.as_ref().map(|l| l.ts),
                "quality": l.as_ref().map(|l| l.quality.to_string()),
            })
        })
        .collect();
    Json(json!({ "tags": rows })).into_response()
}

/// Parameters of `GET /api/v1/oee` and `GET /api/v1/downtime`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct OeeParams {
    /// A shift, `2026-11-28/A` (OEE only; instead of `from` and `to`).
    #[serde(default)]
    pub shift: Option<String>,
    /// Start: RFC 3339 or local time in the plant's zone (`2026-11-28T06:00`).
    #[serde(default)]
    pub from: Option<String>,
    /// End (exclusive), as `from`.
    #[serde(default)]
    pub to: Option<String>,
    /// Downtime only: one asset.
    #[serde(default)]
    pub asset: Option<String>,
}

fn analytics_error(e: crate::analytics::oee::OeeError) -> Response {
    use crate::analytics::oee::OeeError as E;
    let code = match &e {
        E::Calendar(_) | E::EmptyWindow => StatusCode::BAD_REQUEST,
        E::UnknownAsset(_) => StatusCode::NOT_FOUND,
        E::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (code, Json(json!({ "error": e.to_string() }))).into_response()
}

/// The window of `p`: `shift`, or `from` and `to`.
fn oee_window(
    cal: &crate::config::Calendar,
    p: &OeeParams,
) -> Result<(i64, i64, Option<String>), crate::analytics::oee::OeeError> {
    use crate::analytics::oee::OeeError;
    use crate::config::CalendarError;
    if let Some(label) = &p.shift {
        let w = cal.shift(label)?;
        return Ok((w.start, w.end, Some(w.label)));
    }
    match (&p.from, &p.to) {
        (Some(f), Some(t)) => Ok((cal.parse_time(f)?, cal.parse_time(t)?, None)),
        _ => Err(OeeError::Calendar(CalendarError::BadTime("give `shift`, or `from` and `to`".into()))),
    }
}

/// `GET /api/v1/oee?shift=2026-11-28/A` (or `?from&to`): OEE, its parts, counts,
/// downtime by cause, MTBF and MTTR per asset and per line.
async fn oee_handler(State(st): State<ApiState>, Query(p): Query<OeeParams>) -> Response {
    let res = tokio::task::spawn_blocking(move || {
        let cal = crate::config::Calendar::new(&st.config)?;
        let (from, to, shift) = oee_window(&cal, &p)?;
        crate::analytics::oee::window_oee(&st.store, &st.config, &cal, from, to, shift)
    })
    .await;
    match res {
        Ok(Ok(r)) => Json(r).into_response(),
        Ok(Err(e)) => analytics_error(e),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "error": e.to_string() }))).into_response(),
    }
}

/// `GET /api/v1/downtime?from&to[&asset]` (or `?shift`): downtime by cause and every stop.
async fn downtime_handler(State(st): State<ApiState>, Query(p): Query<OeeParams>) -> Response {
    let res = tokio::task::spawn_blocking(move || {
        let cal = crate::config::Calendar::new(&st.config)?;
        let (from, to, _) = oee_window(&cal, &p)?;
        crate::analytics::oee::downtime(&st.store, &st.config, &cal, from, to, p.asset.as_deref())
    })
    .await;
    match res {
        Ok(Ok(r)) => Json(r).into_response(),
        Ok(Err(e)) => analytics_error(e),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "error": e.to_string() }))).into_response(),
    }
}

/// Parameters of `GET /api/v1/ask`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct AskParams {
    /// The question.
    pub q: String,
    /// `en` or `zh` to force the answer's language.
    #[serde(default)]
    pub lang: Option<String>,
    /// Let the daemon's model phrase the answer (under the reviewer).
    #[serde(default)]
    pub model: Option<bool>,
}

/// Answers a question on a blocking thread: the template writer, or with `model` the
/// daemon's router phrasing it (and choosing tools for a question no intent covers).
fn answer_blocking(
    st: &ApiState,
    p: &AskParams,
    model: Option<(crate::llm::router::Router, tokio::runtime::Handle)>,
) -> Result<crate::agents::ask::Answer, String> {
    use crate::agents::ask::{self, AskOptions, Language};
    let cal = crate::config::Calendar::new(&st.config).map_err(|e| e.to_string())?;
    let ctx = crate::agents::ToolContext::at_newest_data(&st.store, &st.config, &cal);
    let language = match p.lang.as_deref() {
        Some("zh") => Some(Language::Zh),
        Some("en") => Some(Language::En),
        _ => None,
    };
    let opts = AskOptions { language };
    match model {
        None => ask::ask(&ctx, &p.q, &opts),
        Some((router, handle)) => {
            let name = st.config.llm.as_ref().map(|l| l.local_model.clone()).unwrap_or_default();
            let mut w = crate::agents::report::router_writer(router.clone(), handle.clone());
            let mut c = crate::agents::report::router_chooser(router, handle);
            ask::ask_full(&ctx, &p.q, &opts, Some((&name, &mut w)), Some(&mut c))
        }
    }
    .map_err(|e| e.to_string())
}

/// The daemon's router, when `model=true` was asked and the models are known.
fn wanted_router(st: &ApiState, p: &AskParams) -> Option<(crate::llm::router::Router, tokio::runtime::Handle)> {
    if !p.model.unwrap_or(false) {
        return None;
    }
    st.llm.as_ref().and_then(crate::llm::service::Llm::router).map(|r| (r, tokio::runtime::Handle::current()))
}

/// `GET /api/v1/ask?q=...[&model=true]`: an operator question answered from the tools,
/// with the facts used and the reviewer's findings; `model=true` lets the model phrase
/// it (and pick the tools for a question no intent covers).
async fn ask_handler(State(st): State<ApiState>, Query(p): Query<AskParams>) -> Response {
    let model = wanted_router(&st, &p);
    let res = tokio::task::spawn_blocking(move || answer_blocking(&st, &p, model)).await;
    match res {
        Ok(Ok(a)) => Json(a).into_response(),
        Ok(Err(e)) => (StatusCode::BAD_REQUEST, Json(json!({ "error": e }))).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "error": e.to_string() }))).into_response(),
    }
}

/// `GET /api/v1/ask/stream?q=...[&model=true]`: the answer as server-sent events. A
/// `draft` event comes at once (the template's grounded answer with its facts); with
/// `model=true` an `answer` event follows when the model's text has passed the
/// reviewer (or the template's, saying why); then `done`. An `error` event ends a
/// question that cannot be answered.
async fn ask_stream_handler(
    State(st): State<ApiState>,
    Query(p): Query<AskParams>,
) -> axum::response::sse::Sse<
    impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
> {
    use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
    let (tx, rx) = tokio::sync::mpsc::channel::<SseEvent>(8);
    let model = wanted_router(&st, &p);
    tokio::task::spawn_blocking(move || {
        let send = |name: &str, body: serde_json::Value| {
            let _ = tx.blocking_send(SseEvent::default().event(name).data(body.to_string()));
        };
        match answer_blocking(&st, &p, None) {
            Ok(a) => send("draft", json!(a)),
            Err(e) => {
                send("error", json!({ "error": e }));
                return;
            }
        }
        if model.is_some() {
            match answer_blocking(&st, &p, model) {
                Ok(a) => send("answer", json!(a)),
                Err(e) => send("error", json!({ "error": e })),
            }
        }
        send("done", json!({}));
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
