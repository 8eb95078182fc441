//! `GET /api/v1/maintenance/plan`: the maintenance planner's plan as JSON or CSV.

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::ApiState;
use crate::agents::plan::{self, PlanOptions};
use crate::agents::{ToolContext, ToolError};

/// Parameters of `GET /api/v1/maintenance/plan`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PlanParams {
    /// Plan as of this time (RFC 3339 or local); default the newest data.
    #[serde(default)]
    pub at: Option<String>,
    /// Hours of history the trends use (default 2).
    #[serde(default)]
    pub hours: Option<f64>,
    /// Work orders due within this many hours (default 168).
    #[serde(default)]
    pub horizon: Option<f64>,
    /// Only this asset.
    #[serde(default)]
    pub asset: Option<String>,
    /// `json` (default), `csv` or `text`.
    #[serde(default)]
    pub format: Option<String>,
}

impl PlanParams {
    /// The planner's options.
    pub fn options(&self) -> PlanOptions {
        let d = PlanOptions::default();
        PlanOptions {
            lookback_hours: self.hours.unwrap_or(d.lookback_hours),
            horizon_hours: self.horizon.unwrap_or(d.horizon_hours),
            asset: self.asset.clone(),
        }
    }
}

/// The plan the parameters ask for, from `store`.
pub fn make_plan(
    store: &crate::store::Store,
    config: &crate::config::Config,
    p: &PlanParams,
) -> Result<plan::Plan, ToolError> {
    let cal = crate::config::Calendar::new(config)?;
    let mut ctx = ToolContext::at_newest_data(store, config, &cal);
    if let Some(at) = &p.at {
        ctx.now = cal.parse_time(at)?;
    }
    plan::plan(&ctx, &p.options())
}

/// `GET /api/v1/maintenance/plan[?at&hours&horizon&asset&format=csv|text]`.
pub async fn plan_handler(State(st): State<ApiState>, Query(p): Query<PlanParams>) -> Response {
    let format = p.format.clone().unwrap_or_else(|| "json".into());
    if !["json", "csv", "text"].contains(&format.as_str()) {
        let e = format!("unknown format `{format}` (json, csv or text)");
        return (StatusCode::BAD_REQUEST, Json(json!({ "error": e }))).into_response();
    }
    let res = tokio::task::spawn_blocking(move || make_plan(&st.store, &st.config, &p)).await;
    match res {
        Ok(Ok(plan)) => match format.as_str() {
            "csv" => ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], plan::to_csv(&plan)).into_response(),
            "text" => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], plan::table(&plan)).into_response(),
            _ => Json(plan).into_response(),
        },
        Ok(Err(e @ (ToolError::BadArgument { .. } | ToolError::Calendar(_)))) => {
            (StatusCode::BAD_REQUEST, Json(json!({ "error": e.to_string() }))).into_response()
        }
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "error": e.to_string() }))).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "error": e.to_string() }))).into_response(),
    }
}
