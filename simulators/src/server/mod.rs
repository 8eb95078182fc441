//! The protocol servers that expose a running line: OPC UA (filler, capper,
//! labeler), Modbus TCP (washer, depalletizer, case packer, conveyors,
//! utilities) and MQTT (wireless vibration sensors as JSON, energy meters as
//! a Sparkplug B edge node). Each reads the line through a `Feed`.

pub mod opcua;

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
