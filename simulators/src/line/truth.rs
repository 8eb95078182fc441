//! Ground truth: every fault, state change, shift boundary and shift summary
//! of a run, as JSON lines `{"ts", "ts_ns", "asset", "kind", "details"}`.
//! It is the answer key for alarms, anomaly detection, OEE, reports and the
//! agents' evaluation.

use serde::Serialize;

/// One ground-truth record.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Record {
    /// RFC 3339 UTC with milliseconds.
    pub ts: String,
    /// The same instant, ns since the Unix epoch.
    pub ts_ns: i64,
    /// The machine (`filler`), `line`, or a server (`opcua`, `modbus`, `mqtt`).
    pub asset: String,
    /// `state`, `fault_start`, `fault_end`, `shift_start`, `shift_end`, `shift_summary`,
    /// `break_start`, `break_end`, `run_start`, `run_end`.
    pub kind: String,
    pub details: serde_json::Value,
}

impl Record {
    pub fn new(ts_ns: i64, asset: &str, kind: &str, details: serde_json::Value) -> Record {
        Record { ts: rfc3339_ms(ts_ns), ts_ns, asset: asset.to_string(), kind: kind.to_string(), details }
    }

    /// One JSON line (without the newline).
    pub fn to_line(&self) -> String {
        // A Record holds only strings, integers and JSON values: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// ns since the epoch → "2026-11-28T06:00:00.000Z".
pub fn rfc3339_ms(ts_ns: i64) -> String {
    let secs = ts_ns.div_euclid(1_000_000_000);
    let ms = ts_ns.rem_euclid(1_000_000_000) / 1_000_000;
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
    let base = humantime::format_rfc3339_seconds(t).to_string();
    format!("{}.{ms:03}Z", base.trim_end_matches('Z'))
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_milliseconds() {
        assert_eq!(super::rfc3339_ms(1_764_309_600_123_000_000), "2025-11-28T06:00:00.123Z");
        assert_eq!(super::rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::rfc3339_ms((951_782_400_000 - 1) * 1_000_000), "2000-02-28T23:59:59.999Z");
        assert_eq!(super::rfc3339_ms((951_782_400_000 + 86_400_000) * 1_000_000), "2000-03-01T00:00:00.000Z");
    }
}
