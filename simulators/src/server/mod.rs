//! The protocol servers that expose a running line: OPC UA (filler, capper,
//! labeler), Modbus TCP (washer, depalletizer, case packer, conveyors,
//! utilities) and MQTT (wireless vibration sensors as JSON, energy meters as
//! a Sparkplug B edge node). Each reads the line through a `Feed`.

pub mod gateway;
pub mod modbus;
pub mod mqtt;
pub mod opcua;
pub mod sparkplug;

use serde::Deserialize;

/// `[opcua]` in a scenario file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpcUaConfig {
    /// Listen address; port 0 picks a free port (printed on stdout).
    #[serde(default = "default_opcua_listen")]
    pub listen: String,
    /// Username/password logins accepted besides anonymous.
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// Whether anonymous logins are accepted.
    #[serde(default = "yes")]
    pub anonymous: bool,
    /// PKI directory (own certificate, trusted/rejected client certificates).
    /// Relative paths are taken from the current directory. Created on first start.
    #[serde(default = "default_pki")]
    pub pki_dir: String,
    /// Trust every client certificate (a simulator convenience; a real server would not).
    #[serde(default = "yes")]
    pub trust_client_certs: bool,
    /// Extra Double variables `Line1/Bench/B00000`.. that all change once per
    /// simulated second, for load tests of clients (0, the default: none).
    #[serde(default)]
    pub bench_variables: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub user: String,
    pub password: String,
}

/// `[modbus]` in a scenario file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusConfig {
    #[serde(default = "default_modbus_listen")]
    pub listen: String,
}

/// `[mqtt]` in a scenario file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Listen address of the embedded broker (rumqttd), used when `broker` is absent.
    #[serde(default = "default_mqtt_listen")]
    pub listen: String,
    /// An external broker to publish to instead, e.g. "mqtt://127.0.0.1:1883".
    #[serde(default)]
    pub broker: Option<String>,
    #[serde(default = "default_client_id")]
    pub client_id: String,
}

fn yes() -> bool {
    true
}
fn default_opcua_listen() -> String {
    "127.0.0.1:4840".into()
}
fn default_pki() -> String {
    "./data/linesim-pki".into()
}
fn default_modbus_listen() -> String {
    "127.0.0.1:5020".into()
}
fn default_mqtt_listen() -> String {
    "127.0.0.1:1883".into()
}
fn default_client_id() -> String {
    "linesim".into()
}

impl Default for OpcUaConfig {
    fn default() -> Self {
        OpcUaConfig {
            listen: default_opcua_listen(),
            users: Vec::new(),
            anonymous: true,
            pki_dir: default_pki(),
            trust_client_certs: true,
            bench_variables: 0,
        }
    }
}
impl Default for ModbusConfig {
    fn default() -> Self {
        ModbusConfig { listen: default_modbus_listen() }
    }
}
impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig { listen: default_mqtt_listen(), broker: None, client_id: default_client_id() }
    }
}

/// A whole simulated line behind its three servers, started in-process.
pub struct Running {
    pub line: crate::line::live::LiveLine,
    pub opcua: opcua::OpcUaServer,
    pub modbus: modbus::ModbusServer,
    pub mqtt: mqtt::MqttServer,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Line(#[from] crate::line::live::LiveError),
    #[error("OPC UA server: {0}")]
    OpcUa(#[from] opcua::OpcUaError),
    #[error("Modbus server: {0}")]
    Modbus(#[from] modbus::ModbusError),
    #[error("MQTT: {0}")]
    Mqtt(#[from] mqtt::MqttError),
}

impl Running {
    /// Starts the model and the OPC UA, Modbus TCP and MQTT servers of `scenario`
    /// (listen addresses from the scenario; port 0 picks free ports).
    pub async fn start(
        scenario: &crate::line::scenario::Scenario,
        path: &str,
        opts: crate::line::live::LiveOptions,
    ) -> Result<Running, ServeError> {
        let line = crate::line::live::LiveLine::start(scenario, path, opts)?;
        let modbus = modbus::start(&scenario.modbus, line.feed.clone()).await?;
        let mqtt = mqtt::start(&scenario.mqtt, line.feed.clone()).await?;
        let opcua = opcua::start(&scenario.opcua, line.feed.clone()).await?;
        Ok(Running { line, opcua, modbus, mqtt })
    }

    /// The endpoints, as the one JSON line `linesim live` prints.
    pub fn endpoints(&self) -> serde_json::Value {
        serde_json::json!({
            "opcua": self.opcua.endpoint_url,
            "opcua_addr": self.opcua.addr.to_string(),
            "modbus": self.modbus.addr.to_string(),
            "mqtt": self.mqtt.addr.to_string(),
            "mqtt_embedded": self.mqtt.embedded,
            "tags": self.line.feed.catalog.len(),
        })
    }
}
