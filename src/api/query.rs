//! Queries shared by `GET /api/v1/query` and `linepilot query`: which series,
//! which time range, raw or windowed aggregate; results as JSON, CSV or a table.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::domain::{SeriesKey, Timestamp, Value, NANOS_PER_SEC};
use crate::store::rollup::Agg;
use crate::store::{Store, StoreError};

/// A query that could not be run.
#[derive(Debug, Error)]
pub enum QueryError {
    /// A parameter is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// No series has that name (and labels).
    #[error("no series named `{0}`")]
    NotFound(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Query parameters as they arrive from the URL or the command line.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct QueryParams {
    /// Series name.
    pub series: String,
    /// Label filters `k=v`, comma separated.
    #[serde(default)]
    pub labels: Option<String>,
    /// Start (inclusive): RFC 3339 or Unix seconds. Default: all data.
    #[serde(default)]
    pub from: Option<String>,
    /// End (exclusive): RFC 3339 or Unix seconds. Default: all data.
    #[serde(default)]
    pub to: Option<String>,
    /// Aggregate: avg, min, max, sum, count, first, last, stddev.
    #[serde(default)]
    pub agg: Option<String>,
    /// Window of the aggregate (`1m`, `15m`, `1h`); default 1m.
    #[serde(default)]
    pub window: Option<String>,
}

/// One row of a result.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Row {
    /// UTC ns (window start for aggregates).
    pub ts: Timestamp,
    /// RFC 3339 time.
    pub time: String,
    /// The value (None: window without samples or aggregate of nothing).
    pub value: Option<Value>,
    /// Quality (raw) — omitted for aggregates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<String>,
    /// Samples in the window (aggregates only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

/// The result for one series (JSON out of the API, and back into the CLI).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SeriesResult {
    /// Name and labels.
    pub series: String,
    /// Aggregate applied, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default)]
    pub agg: Option<String>,
    /// Window in seconds, if aggregated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_s: Option<f64>,
    /// Rows in time order.
    pub rows: Vec<Row>,
}

/// Parses a time given as RFC 3339 or Unix seconds (with optional fraction).
pub fn parse_time(s: &str) -> Result<Timestamp, String> {
    let t = s.trim();
    if let Ok(secs) = t.parse::<i64>() {
        return secs.checked_mul(NANOS_PER_SEC).ok_or_else(|| format!("time `{s}` is out of range"));
    }
    if let Some((int, frac)) = t.split_once('.').filter(|(i, f)| {
        i.bytes().all(|b| b.is_ascii_digit()) && !i.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit())
    }) {
        let secs: i64 = int.parse().map_err(|_| format!("time `{s}` is out of range"))?;
        let nanos: i64 = format!("{frac:0<9}").parse().map_err(|_| format!("bad time `{s}`"))?;
        return secs
            .checked_mul(NANOS_PER_SEC)
            .and_then(|n| n.checked_add(nanos))
            .ok_or_else(|| format!("time `{s}` is out of range"));
    }
    if let Ok(secs) = t.parse::<f64>() {
        if !secs.is_finite() || secs.abs() > 9.2e9 {
            return Err(format!("time `{s}` is out of range"));
        }
        return Ok((secs * NANOS_PER_SEC as f64).round() as i64);
    }
    let st =
        humantime::parse_rfc3339_weak(t).map_err(|e| format!("bad time `{s}`: {e} (use RFC 3339 or Unix seconds)"))?;
    match st.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).map_err(|_| format!("time `{s}` is out of range")),
        Err(e) => Ok(-(i64::try_from(e.duration().as_nanos()).map_err(|_| format!("time `{s}` is out of range"))?)),
    }
}

/// Formats a timestamp as RFC 3339 UTC.
pub fn format_time(ts: Timestamp) -> String {
    if ts >= 0 {
        humantime::format_rfc3339_nanos(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ts as u64)).to_string()
    } else {
        format!("{ts}ns")
    }
}

/// Runs a query against an open store.
pub fn run(store: &Store, q: &QueryParams) -> Result<Vec<SeriesResult>, QueryError> {
    let from = q.from.as_deref().map(parse_time).transpose().map_err(QueryError::BadRequest)?.unwrap_or(i64::MIN);
    let to = q.to.as_deref().map(parse_time).transpose().map_err(QueryError::BadRequest)?.unwrap_or(i64::MAX);
    if from >= to {
        return Err(QueryError::BadRequest("`from` must be before `to`".into()));
    }
    let mut wanted = Vec::new();
    for pair in q.labels.as_deref().unwrap_or("").split(',').filter(|p| !p.is_empty()) {
        let (k, v) =
            pair.split_once('=').ok_or_else(|| QueryError::BadRequest(format!("label filter `{pair}` is not k=v")))?;
        wanted.push((k.trim().to_string(), v.trim().to_string()));
    }
    let agg = q.agg.as_deref().map(|a| a.parse::<Agg>()).transpose().map_err(QueryError::BadRequest)?;
    let window = match (&agg, q.window.as_deref()) {
        (None, Some(_)) => return Err(QueryError::BadRequest("`window` needs `agg`".into())),
        (_, Some(w)) => {
            let d =
                humantime::parse_duration(w).map_err(|e| QueryError::BadRequest(format!("bad window `{w}`: {e}")))?;
            let ns = i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
            if ns <= 0 {
                return Err(QueryError::BadRequest("window must be positive".into()));
            }
            ns
        }
        _ => 60 * NANOS_PER_SEC,
    };
    let matches = store.catalog().matching(&q.series, &wanted);
    if matches.is_empty() {
        return Err(QueryError::NotFound(SeriesKey::with_labels(q.series.clone(), wanted).to_string()));
    }
    let mut out = Vec::new();
    for m in matches {
        let rows = match agg {
            None => {
                let p = store.range(m.id, from, to)?;
                (0..p.len())
                    .map(|i| Row {
                        ts: p.ts[i],
                        time: format_time(p.ts[i]),
                        value: Some(p.values.get(i)),
                        quality: Some(p.quality_at(i).to_string()),
                        count: None,
                    })
                    .collect()
            }
            Some(a) => store
                .aggregate(m.id, from, to, window)?
                .into_iter()
                .map(|(ts, part)| Row {
                    ts,
                    time: format_time(ts),
                    value: part.value(a).map(Value::F64),
                    quality: None,
                    count: Some(part.count),
                })
                .collect(),
        };
        out.push(SeriesResult {
            series: m.key.to_string(),
            agg: agg.map(|a| a.name().to_string()),
            window_s: agg.map(|_| window as f64 / NANOS_PER_SEC as f64),
            rows,
        });
    }
    Ok(out)
}

/// Renders results as CSV `series,time,value[,quality|count]`.
pub fn to_csv(results: &[SeriesResult]) -> String {
    let mut s = String::new();
    let agg = results.iter().any(|r| r.agg.is_some());
    s.push_str(if agg { "series,time,value,count\n" } else { "series,time,value,quality\n" });
    for r in results {
        for row in &r.rows {
            let v = row.value.as_ref().map(csv_value).unwrap_or_default();
            let last = if agg { row.count.unwrap_or(0).to_string() } else { row.quality.clone().unwrap_or_default() };
            s.push_str(&format!("{},{},{},{}\n", csv_field(&r.series), row.time, v, last));
        }
    }
    s
}

fn csv_value(v: &Value) -> String {
    match v {
        Value::Str(s) => csv_field(s),
        other => other.to_string(),
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Renders results as an aligned text table.
pub fn to_table(results: &[SeriesResult]) -> String {
    let mut s = String::new();
    for r in results {
        s.push_str(&format!("{}{}\n", r.series, r.agg.as_ref().map(|a| format!(" ({a})")).unwrap_or_default()));
        for row in &r.rows {
            let v = row.value.as_ref().map(|v| v.to_string()).unwrap_or_else(|| "-".into());
            let extra = row.quality.clone().or(row.count.map(|c| format!("n={c}"))).unwrap_or_default();
            s.push_str(&format!("  {:<32} {:>20}  {}\n", row.time, v, extra));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_both_ways() {
        assert_eq!(parse_time("1732780800").unwrap(), 1_732_780_800 * NANOS_PER_SEC);
        assert_eq!(parse_time("1732780800.5").unwrap(), 1_732_780_800_500_000_000);
        assert_eq!(parse_time("2024-11-28T08:00:00Z").unwrap(), 1_732_780_800 * NANOS_PER_SEC);
        assert!(parse_time("yesterday").is_err());
        assert_eq!(format_time(1_732_780_800 * NANOS_PER_SEC), "2024-11-28T08:00:00.000000000Z");
    }
}
