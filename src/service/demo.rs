//! The demo: the bundled line simulator in-process, the gateway reading it.

use crate::config::{Config, ModbusEndpoint, SourceConfig};

/// Points every source of `config` at the running simulator's endpoints (by
/// protocol: its OPC UA server, its Modbus TCP server, its MQTT broker).
pub fn point_sources_at(config: &mut Config, line: &linesim::server::Running) {
    for s in &mut config.sources {
        match s {
            SourceConfig::OpcUa(o) => o.endpoint = line.opcua.endpoint_url.clone(),
            SourceConfig::Modbus(m) => {
                m.endpoint =
                    ModbusEndpoint::Tcp { host: line.modbus.addr.ip().to_string(), port: line.modbus.addr.port() }
            }
            SourceConfig::Mqtt(m) => m.url = format!("mqtt://{}", line.mqtt.addr),
        }
    }
}

/// Runs `hours` of a linesim scenario's history (as `linesim history` does) straight
/// into `store`, as `linepilot import` would take its line protocol; returns the
/// scenario's ground-truth records. `progress(done_h, total_h)` is called as it goes.
pub fn backfill(
    store: &crate::store::Store,
    scenario_path: &std::path::Path,
    hours: f64,
    progress: impl FnMut(f64, f64),
) -> Result<Vec<serde_json::Value>, BackfillError> {
    let path = scenario_path.display().to_string();
    let scenario = linesim::line::scenario::Scenario::load(scenario_path)
        .map_err(|e| BackfillError::Scenario(format!("{path}: {e}")))?;
    backfill_scenario(store, &scenario, &path, hours, progress)
}

/// [`backfill`] of a loaded scenario (whose `start` the caller may have moved).
pub fn backfill_scenario(
    store: &crate::store::Store,
    scenario: &linesim::line::scenario::Scenario,
    path: &str,
    hours: f64,
    progress: impl FnMut(f64, f64),
) -> Result<Vec<serde_json::Value>, BackfillError> {
    let mut lp = LpImporter { store, buf: Vec::new(), failure: None };
    let mut truth = Vec::new();
    let duration_ns = (hours * 3.6e12) as i64;
    let run = linesim::line::history::run(scenario, path, duration_ns, &mut lp, &mut truth, progress);
    if let Some(e) = lp.failure.take() {
        return Err(e);
    }
    run.map_err(|e| BackfillError::Scenario(e.to_string()))?.map_err(|e| BackfillError::Scenario(e.to_string()))?;
    lp.import_all()?;
    let text = String::from_utf8_lossy(&truth);
    text.lines()
        .map(|l| serde_json::from_str(l).map_err(|e| BackfillError::Scenario(format!("ground truth record: {e}"))))
        .collect()
}

/// Why a backfill failed.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    /// The scenario could not be loaded or run.
    #[error("scenario: {0}")]
    Scenario(String),
    /// The store refused the history.
    #[error(transparent)]
    Import(#[from] crate::store::import::ImportError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Takes line protocol as the simulator writes it and imports it in chunks of whole lines.
struct LpImporter<'a> {
    store: &'a crate::store::Store,
    buf: Vec<u8>,
    failure: Option<BackfillError>,
}

const IMPORT_CHUNK: usize = 8 << 20;

impl LpImporter<'_> {
    fn import(&mut self, upto: usize) -> Result<(), BackfillError> {
        let chunk: Vec<u8> = self.buf.drain(..upto).collect();
        let text = String::from_utf8_lossy(&chunk);
        let resolved = crate::store::import::line_protocol(
            self.store,
            &text,
            crate::line_protocol::Precision::Ns,
            crate::domain::now_ns(),
        )?;
        self.store.write(resolved.samples)?;
        Ok(())
    }

    fn import_all(&mut self) -> Result<(), BackfillError> {
        let n = self.buf.len();
        if n > 0 {
            self.import(n)?;
        }
        Ok(())
    }
}

impl std::io::Write for LpImporter<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= IMPORT_CHUNK {
            if let Some(end) = self.buf.iter().rposition(|&b| b == b'\n') {
                if let Err(e) = self.import(end + 1) {
                    let msg = e.to_string();
                    self.failure = Some(e);
                    return Err(std::io::Error::other(msg));
                }
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
