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
