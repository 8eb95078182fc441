//! `[[source]]`: one entry per connection to a PLC, device or broker.
//!
//! The `kind` key picks the protocol; the rest of the table is that protocol's
//! settings. Secrets are never written inline, only the name of an environment
//! variable (`*_env`) or a file (`*_file`, e.g. a systemd credential) that holds them.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::config::units::HumanDuration;

/// The protocol of a source (`kind = "..."`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// OPC UA client (`kind = "opcua"`).
    OpcUa,
    /// Modbus TCP or RTU master (`kind = "modbus"`).
    Modbus,
    /// MQTT subscriber (`kind = "mqtt"`).
    Mqtt,
}

impl SourceKind {
    /// The spellings accepted for `kind`.
    pub const NAMES: [&'static str; 3] = ["opcua", "modbus", "mqtt"];

    /// Parses the `kind` value.
    pub fn from_name(name: &str) -> Option<SourceKind> {
        match name {
            "opcua" => Some(SourceKind::OpcUa),
            "modbus" => Some(SourceKind::Modbus),
            "mqtt" => Some(SourceKind::Mqtt),
            _ => None,
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceKind::OpcUa => "opcua",
            SourceKind::Modbus => "modbus",
            SourceKind::Mqtt => "mqtt",
        })
    }
}

/// One `[[source]]`: a connection, with settings for its protocol.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceConfig {
    /// `kind = "opcua"`.
    OpcUa(OpcUaSourceConfig),
    /// `kind = "modbus"`.
    Modbus(ModbusSourceConfig),
    /// `kind = "mqtt"`.
    Mqtt(MqttSourceConfig),
}

impl SourceConfig {
    /// The source's id, which tags refer to.
    pub fn id(&self) -> &str {
        match self {
            SourceConfig::OpcUa(s) => &s.id,
            SourceConfig::Modbus(s) => &s.id,
            SourceConfig::Mqtt(s) => &s.id,
        }
    }

    /// The source's protocol.
    pub fn kind(&self) -> SourceKind {
        match self {
            SourceConfig::OpcUa(_) => SourceKind::OpcUa,
            SourceConfig::Modbus(_) => SourceKind::Modbus,
            SourceConfig::Mqtt(_) => SourceKind::Mqtt,
        }
    }
}

// ---------------------------------------------------------------------------
// OPC UA

/// An OPC UA server to read tags from (subscriptions on the server's nodes).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpcUaSourceConfig {
    /// Name tags use in `source = "..."`.
    pub id: String,
    /// Server endpoint, `opc.tcp://host:port[/path]` (port 4840 when left out).
    pub endpoint: String,
    /// Message security and user identity; anonymous and unsecured when left out.
    #[serde(default)]
    pub security: OpcUaSecurity,
    /// Trust the server's certificate on first contact (it is copied to the client's
    /// `pki/opcua/trusted/`). Leave off for real plants: an unknown certificate is put in
    /// `pki/opcua/rejected/` and the log says which file to move to `trusted/`.
    #[serde(default)]
    pub trust_server_cert: bool,
    /// How often the server sends the changes of the subscription (default `1s`).
    #[serde(default = "default_publishing_interval")]
    pub publishing_interval: HumanDuration,
    /// How often the server samples each monitored node (default `250ms`).
    #[serde(default = "default_sampling_interval")]
    pub sampling_interval: HumanDuration,
    /// Changes the server queues per node between publishes (at least 2, default 10);
    /// with 1 a change between two publishes is lost.
    #[serde(default = "default_queue_size")]
    pub queue_size: u32,
    /// Absolute deadband for the number tags of this source: changes smaller than this
    /// are not reported (none when left out).
    #[serde(default)]
    pub deadband: Option<f64>,
    /// Time allowed to connect and log in before the attempt counts as failed (default `10s`).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// `subscribe` (default): monitored items in a subscription; nodes the server
    /// refuses to monitor are polled instead. `poll`: read every node each
    /// `poll_interval`, for servers without subscriptions.
    #[serde(default)]
    pub mode: OpcUaMode,
    /// Time between reads of polled nodes (default `1s`).
    #[serde(default = "default_opcua_poll_interval")]
    pub poll_interval: HumanDuration,
    /// Subscribe to the events the server raises (its Server object, which
    /// also reports alarms and conditions) and keep them in the event log.
    #[serde(default)]
    pub events: bool,
}

/// How an OPC UA source gets its values.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpcUaMode {
    /// Monitored items in a subscription (changes pushed by the server).
    #[default]
    Subscribe,
    /// The Read service every `poll_interval`.
    Poll,
}

fn default_opcua_poll_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}

fn default_publishing_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}
fn default_sampling_interval() -> HumanDuration {
    HumanDuration(Duration::from_millis(250))
}
fn default_queue_size() -> u32 {
    10
}
fn default_connect_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

/// How the gateway secures and authenticates its OPC UA session.
#[derive(Clone, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpcUaSecurity {
    /// Security policy: `None` or `Basic256Sha256`.
    #[serde(default)]
    pub policy: SecurityPolicy,
    /// Message security mode: `None`, `Sign` or `SignAndEncrypt`; `None` only with policy `None`.
    #[serde(default)]
    pub mode: SecurityMode,
    /// User name for a user-name identity token; anonymous when left out.
    #[serde(default)]
    pub user: Option<String>,
    /// Environment variable that holds the user's password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File that holds the user's password (e.g. a systemd credential).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// X.509 user identity: the user's certificate (DER or PEM file), instead of `user`.
    #[serde(default)]
    pub user_cert: Option<PathBuf>,
    /// The private key (PEM file) of `user_cert`.
    #[serde(default)]
    pub user_key: Option<PathBuf>,
}

/// OPC UA security policy.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default, Deserialize)]
pub enum SecurityPolicy {
    /// No message security.
    #[default]
    None,
    /// `http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256`.
    Basic256Sha256,
}

/// OPC UA message security mode.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default, Deserialize)]
pub enum SecurityMode {
    /// Messages are neither signed nor encrypted.
    #[default]
    None,
    /// Messages are signed.
    Sign,
    /// Messages are signed and encrypted.
    SignAndEncrypt,
}

impl OpcUaSourceConfig {
    /// Checks the endpoint and security settings; problems come back as (key, message).
    pub(crate) fn check(&self) -> Vec<(&'static str, String)> {
        let mut errs = Vec::new();
        if let Err(e) = check_url(&self.endpoint, &[("opc.tcp", 4840)], true) {
            errs.push(("endpoint", e));
        }
        errs.extend(self.security.check());
        if self.publishing_interval.0.is_zero() {
            errs.push(("publishing_interval", "publishing_interval must be more than 0".to_string()));
        }
        if self.queue_size < 2 {
            errs.push((
                "queue_size",
                format!("queue_size {} loses changes between publishes; use 2 or more", self.queue_size),
            ));
        }
        if let Some(d) = self.deadband {
            if !d.is_finite() || d < 0.0 {
                errs.push(("deadband", format!("deadband {d} must be a number >= 0")));
            }
        }
        if self.connect_timeout.0.is_zero() {
            errs.push(("connect_timeout", "connect_timeout must be more than 0".to_string()));
        }
        if self.poll_interval.0.is_zero() {
            errs.push(("poll_interval", "poll_interval must be more than 0".to_string()));
        }
        if self.events && self.mode == OpcUaMode::Poll {
            errs.push(("events", "events arrive through a subscription: they need mode = \"subscribe\"".to_string()));
        }
        errs
    }
}

impl OpcUaSecurity {
    /// Checks combinations; problems come back as (key, message).
    fn check(&self) -> Vec<(&'static str, String)> {
        let mut errs = Vec::new();
        match (self.policy, self.mode) {
            (SecurityPolicy::None, SecurityMode::None) => {}
            (SecurityPolicy::None, m) => {
                errs.push(("security.mode", format!("mode `{m:?}` needs a security policy other than `None`")))
            }
            (p, SecurityMode::None) => {
                errs.push(("security.mode", format!("policy `{p:?}` needs mode `Sign` or `SignAndEncrypt`")))
            }
            _ => {}
        }
        errs.extend(
            check_secret(self.password_env.as_deref(), self.password_file.is_some()).into_iter().map(|(k, m)| {
                (if k == "password_env" { "security.password_env" } else { "security.password_file" }, m)
            }),
        );
        let has_password = self.password_env.is_some() || self.password_file.is_some();
        match (&self.user, has_password) {
            (Some(_), false) => {
                errs.push(("security.user", "`user` needs `password_env` or `password_file`".to_string()))
            }
            (None, true) => errs.push((
                if self.password_env.is_some() { "security.password_env" } else { "security.password_file" },
                "a password needs `user`".to_string(),
            )),
            _ => {}
        }
        match (&self.user_cert, &self.user_key) {
            (Some(_), None) => errs.push(("security.user_cert", "`user_cert` needs `user_key`".to_string())),
            (None, Some(_)) => errs.push(("security.user_key", "`user_key` needs `user_cert`".to_string())),
            (Some(_), Some(_)) if self.user.is_some() => errs.push((
                "security.user_cert",
                "give one user identity: `user` (with a password) or `user_cert`, not both".to_string(),
            )),
            _ => {}
        }
        errs
    }
}

// ---------------------------------------------------------------------------
// Modbus

/// A Modbus device (or gateway) polled for registers.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusSourceConfig {
    /// Name tags use in `source = "..."`.
    pub id: String,
    /// `tcp://host:port` (port 502 when left out), `rtu+tcp://host:port` (RTU
    /// frames over TCP, as serial-to-Ethernet converters speak) or
    /// `rtu:///dev/ttyUSB0?baud=19200&parity=E`.
    pub endpoint: ModbusEndpoint,
    /// Unit (slave) id used by tags that do not name their own `unit`.
    #[serde(default = "default_unit_id")]
    pub unit_id: u8,
    /// Time between polls of this device's tags.
    #[serde(default = "default_poll_interval")]
    pub poll_interval: HumanDuration,
    /// How long one read request may take before it counts as timed out (1 s
    /// when left out). A timed-out read is retried once.
    #[serde(default = "default_modbus_timeout")]
    pub timeout: HumanDuration,
    /// Largest gap, in registers, between two tags' ranges that are still read
    /// in one request (unused registers in between are read and ignored); 16
    /// when left out, 0 merges only touching ranges. Coils and discrete inputs
    /// use 16 bits per register.
    #[serde(default = "default_max_gap")]
    pub max_gap: u16,
    /// Tags polled at another interval than `poll_interval`, e.g.
    /// `poll_groups = [{ interval = "10s", tags = ["utilities.*"] }]`. A tag
    /// belongs to the first group with a pattern that matches its name; the
    /// rest poll at `poll_interval`.
    #[serde(default)]
    pub poll_groups: Vec<ModbusPollGroup>,
}

/// Tags of a Modbus source polled at their own interval.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusPollGroup {
    /// Time between polls of the group's tags.
    pub interval: HumanDuration,
    /// Tag names; a trailing `*` matches every name that starts with what comes before it.
    pub tags: Vec<String>,
}

impl ModbusPollGroup {
    /// Whether `name` matches one of the group's patterns.
    pub fn matches(&self, name: &str) -> bool {
        self.tags.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == p,
        })
    }
}

fn default_unit_id() -> u8 {
    1
}
fn default_poll_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}
fn default_modbus_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}
fn default_max_gap() -> u16 {
    16
}

impl ModbusSourceConfig {
    /// Checks the settings; problems come back as (key, message).
    pub(crate) fn check(&self) -> Vec<(&'static str, String)> {
        let mut errs = Vec::new();
        if self.poll_interval.0.is_zero() {
            errs.push(("poll_interval", "poll_interval must be longer than 0".to_string()));
        }
        if self.timeout.0.is_zero() {
            errs.push(("timeout", "timeout must be longer than 0".to_string()));
        }
        if self.max_gap > 124 {
            errs.push((
                "max_gap",
                format!("max_gap {} is out of range 0..=124 (a read holds 125 registers)", self.max_gap),
            ));
        }
        for (i, g) in self.poll_groups.iter().enumerate() {
            if g.interval.0.is_zero() {
                errs.push(("poll_groups", format!("poll_groups[{i}]: interval must be longer than 0")));
            }
            if g.tags.is_empty() {
                errs.push(("poll_groups", format!("poll_groups[{i}]: `tags` lists no tag name or pattern")));
            }
            for p in &g.tags {
                let body = p.strip_suffix('*').unwrap_or(p);
                if p.is_empty() || body.contains('*') {
                    errs.push((
                        "poll_groups",
                        format!("poll_groups[{i}]: `{p}` is not a tag name or a `prefix*` pattern"),
                    ));
                }
            }
        }
        errs
    }
}

/// How to reach a Modbus device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModbusEndpoint {
    /// Modbus TCP.
    Tcp {
        /// Host name or IP address.
        host: String,
        /// TCP port.
        port: u16,
    },
    /// Modbus RTU frames over a TCP connection (serial device servers).
    RtuOverTcp {
        /// Host name or IP address.
        host: String,
        /// TCP port.
        port: u16,
    },
    /// Modbus RTU over a serial line.
    Rtu {
        /// Serial device, e.g. `/dev/ttyUSB0`.
        device: PathBuf,
        /// Baud rate (19200 when left out).
        baud: u32,
        /// Parity (`E`, the Modbus default, when left out).
        parity: Parity,
        /// Stop bits, 1 or 2 (1 when left out; the spec asks for 2 without parity).
        stop_bits: u8,
    },
}

/// Serial parity.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Parity {
    /// `N`
    None,
    /// `E`
    Even,
    /// `O`
    Odd,
}

impl FromStr for ModbusEndpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(rest) = s.strip_prefix("rtu://") {
            let (device, query) = rest.split_once('?').unwrap_or((rest, ""));
            if !device.starts_with('/') || device.len() < 2 {
                return Err(format!("bad Modbus endpoint `{s}`: expected `rtu:///dev/<serial device>`"));
            }
            let mut baud = 19_200;
            let mut parity = Parity::Even;
            let mut stop_bits = 1;
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                match pair.split_once('=') {
                    Some(("baud", v)) => {
                        baud =
                            v.parse().ok().filter(|b| *b > 0).ok_or_else(|| {
                                format!("bad Modbus endpoint `{s}`: baud `{v}` is not a positive number")
                            })?
                    }
                    Some(("stop", v)) => {
                        stop_bits = match v {
                            "1" => 1,
                            "2" => 2,
                            _ => return Err(format!("bad Modbus endpoint `{s}`: stop `{v}` is not 1 or 2")),
                        }
                    }
                    Some(("parity", v)) => {
                        parity = match v {
                            "N" | "n" => Parity::None,
                            "E" | "e" => Parity::Even,
                            "O" | "o" => Parity::Odd,
                            _ => return Err(format!("bad Modbus endpoint `{s}`: parity `{v}` is not N, E or O")),
                        }
                    }
                    _ => {
                        return Err(format!(
                            "bad Modbus endpoint `{s}`: unknown option `{pair}` (expected baud=, parity=, stop=)"
                        ))
                    }
                }
            }
            return Ok(ModbusEndpoint::Rtu { device: PathBuf::from(device), baud, parity, stop_bits });
        }
        if s.starts_with("rtu+tcp://") {
            let (host, port) = check_url(s, &[("rtu+tcp", 502)], false)?;
            return Ok(ModbusEndpoint::RtuOverTcp { host, port });
        }
        let (host, port) =
            check_url(s, &[("tcp", 502)], false).map_err(|e| format!("{e} (or `rtu:///dev/ttyUSB0?baud=19200`)"))?;
        Ok(ModbusEndpoint::Tcp { host, port })
    }
}

impl<'de> Deserialize<'de> for ModbusEndpoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for ModbusEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModbusEndpoint::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            ModbusEndpoint::RtuOverTcp { host, port } => write!(f, "rtu+tcp://{host}:{port}"),
            ModbusEndpoint::Rtu { device, baud, parity, stop_bits } => {
                let p = match parity {
                    Parity::None => "N",
                    Parity::Even => "E",
                    Parity::Odd => "O",
                };
                write!(f, "rtu://{}?baud={baud}&parity={p}", device.display())?;
                if *stop_bits != 1 {
                    write!(f, "&stop={stop_bits}")?;
                }
                Ok(())
            }
        }
    }
}

// ---------------------------------------------------------------------------
// MQTT

/// An MQTT broker whose topics carry tag values.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSourceConfig {
    /// Name tags use in `source = "..."`.
    pub id: String,
    /// Broker, `mqtt://host:port` or `mqtts://host:port` (TLS); ports 1883 / 8883
    /// when left out.
    pub url: String,
    /// Client id presented to the broker; `linepilot-<id>` when left out.
    #[serde(default)]
    pub client_id: Option<String>,
    /// User name; anonymous when left out.
    #[serde(default)]
    pub username: Option<String>,
    /// Environment variable that holds the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File that holds the password (e.g. a systemd credential).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Clean session (`true`, the default): the broker forgets the subscriptions
    /// at disconnect and the gateway subscribes again. `false`: a persistent
    /// session, the broker keeps the subscriptions and queues QoS 1/2 messages
    /// while the gateway is away (needs a fixed `client_id`).
    #[serde(default = "default_clean_session")]
    pub clean_session: bool,
    /// Keep-alive: the broker drops the connection after 1.5 × this without traffic (`30s`).
    #[serde(default = "default_mqtt_keep_alive")]
    pub keep_alive: HumanDuration,
    /// `mqtts://` only: PEM file of the CA(s) that signed the broker's
    /// certificate; the system's trusted roots when left out.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// `mqtts://` only: PEM certificate (chain) the gateway presents to the broker.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// `mqtts://` only: PEM private key of `client_cert`.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// Protocol version: `"3.1.1"` (default) or `"5"`.
    #[serde(default)]
    pub protocol: MqttProtocol,
}

/// The MQTT protocol version a source speaks.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default, Deserialize)]
pub enum MqttProtocol {
    /// MQTT 3.1.1 (`"3.1.1"`).
    #[default]
    #[serde(rename = "3.1.1")]
    V311,
    /// MQTT 5 (`"5"`).
    #[serde(rename = "5")]
    V5,
}

fn default_clean_session() -> bool {
    true
}
fn default_mqtt_keep_alive() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

impl MqttSourceConfig {
    /// Checks combinations; problems come back as (key, message).
    pub(crate) fn check(&self) -> Vec<(&'static str, String)> {
        let mut errs = check_secret(self.password_env.as_deref(), self.password_file.is_some());
        if let Err(e) = check_url(&self.url, &[("mqtt", 1883), ("mqtts", 8883)], false) {
            errs.push(("url", e));
        }
        if let Some(c) = &self.client_id {
            if c.is_empty() || c.len() > 65_535 {
                errs.push(("client_id", "client_id must be 1..=65535 bytes".to_string()));
            }
        }
        let ka = self.keep_alive.0;
        if ka < Duration::from_secs(1) || ka > Duration::from_secs(65_535) {
            errs.push(("keep_alive", format!("keep_alive {} is out of range 1s..=65535s", self.keep_alive)));
        }
        if !self.url.starts_with("mqtts://") {
            for (key, set) in [
                ("ca_file", self.ca_file.is_some()),
                ("client_cert", self.client_cert.is_some()),
                ("client_key", self.client_key.is_some()),
            ] {
                if set {
                    errs.push((key, format!("{key} applies to TLS: use an mqtts:// url")));
                }
            }
        }
        match (&self.client_cert, &self.client_key) {
            (Some(_), None) => errs.push(("client_cert", "`client_cert` needs `client_key`".to_string())),
            (None, Some(_)) => errs.push(("client_key", "`client_key` needs `client_cert`".to_string())),
            _ => {}
        }
        errs
    }
}

// ---------------------------------------------------------------------------
// shared checks

/// Checks `scheme://host[:port][/path]` for one of `schemes` and returns host and port.
fn check_url(s: &str, schemes: &[(&str, u16)], path_allowed: bool) -> Result<(String, u16), String> {
    let names: Vec<String> = schemes.iter().map(|(n, _)| format!("{n}://")).collect();
    let expected =
        format!("expected {}host:port{}", names.join("host:port or "), if path_allowed { "[/path]" } else { "" });
    let (scheme, rest) = s.split_once("://").ok_or_else(|| format!("bad endpoint `{s}`: {expected}"))?;
    let default_port = schemes
        .iter()
        .find(|(n, _)| *n == scheme)
        .map(|(_, p)| *p)
        .ok_or_else(|| format!("bad endpoint `{s}`: scheme `{scheme}` is not supported, {expected}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if !path.is_empty() && !path_allowed {
        return Err(format!("bad endpoint `{s}`: no path allowed, {expected}"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, tail) =
            v6.split_once(']').ok_or_else(|| format!("bad endpoint `{s}`: `[` without `]` in IPv6 address"))?;
        let port = match tail {
            "" => None,
            t => Some(t.strip_prefix(':').ok_or_else(|| format!("bad endpoint `{s}`: expected `:port` after `]`"))?),
        };
        (h, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '@') {
        return Err(format!("bad endpoint `{s}`: missing or bad host, {expected}"));
    }
    let port = match port {
        None => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("bad endpoint `{s}`: port `{p}` is not a number 1..=65535"))?,
    };
    Ok((host.to_string(), port))
}

/// Checks the name of a secret's environment variable and that only one of
/// `password_env` / `password_file` is given.
fn check_secret(env: Option<&str>, has_file: bool) -> Vec<(&'static str, String)> {
    let mut errs = Vec::new();
    if let Some(name) = env {
        if !is_env_name(name) {
            errs.push((
                "password_env",
                format!("`{name}` is not an environment variable name (letters, digits, `_`); put the secret in the environment, not here"),
            ));
        }
        if has_file {
            errs.push(("password_file", "give either `password_env` or `password_file`, not both".to_string()));
        }
    }
    errs
}

fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let opc = [("opc.tcp", 4840)];
        assert_eq!(check_url("opc.tcp://127.0.0.1:4840", &opc, true).unwrap(), ("127.0.0.1".to_string(), 4840));
        assert_eq!(check_url("opc.tcp://plc/UA/Server", &opc, true).unwrap().1, 4840);
        assert_eq!(check_url("opc.tcp://[::1]:4841", &opc, true).unwrap().0, "::1");
        for bad in [
            "127.0.0.1:4840",
            "http://x:1",
            "opc.tcp://:4840",
            "opc.tcp://h:0",
            "opc.tcp://h:99999",
            "opc.tcp://h:x",
            "opc.tcp://[::1",
        ] {
            assert!(check_url(bad, &opc, true).is_err(), "{bad}");
        }
        let mqtt = [("mqtt", 1883), ("mqtts", 8883)];
        assert_eq!(check_url("mqtts://broker", &mqtt, false).unwrap().1, 8883);
        assert!(check_url("mqtt://broker:1883/x", &mqtt, false).is_err());
    }

    #[test]
    fn modbus_endpoints() {
        assert_eq!(
            "tcp://127.0.0.1:5020".parse::<ModbusEndpoint>().unwrap(),
            ModbusEndpoint::Tcp { host: "127.0.0.1".into(), port: 5020 }
        );
        let rtu: ModbusEndpoint = "rtu:///dev/ttyUSB0?baud=9600&parity=N".parse().unwrap();
        assert_eq!(rtu.to_string(), "rtu:///dev/ttyUSB0?baud=9600&parity=N");
        let rtu: ModbusEndpoint = "rtu:///dev/ttyUSB0?baud=9600&parity=N&stop=2".parse().unwrap();
        assert_eq!(rtu.to_string(), "rtu:///dev/ttyUSB0?baud=9600&parity=N&stop=2");
        assert!("rtu:///dev/ttyUSB0?stop=3".parse::<ModbusEndpoint>().is_err());
        assert_eq!(
            "rtu:///dev/ttyS1".parse::<ModbusEndpoint>().unwrap().to_string(),
            "rtu:///dev/ttyS1?baud=19200&parity=E"
        );
        for bad in [
            "rtu://ttyUSB0",
            "rtu:///dev/ttyUSB0?baud=fast",
            "rtu:///dev/ttyUSB0?speed=1",
            "udp://h:502",
            "tcp://h:502/x",
        ] {
            assert!(bad.parse::<ModbusEndpoint>().is_err(), "{bad}");
        }
    }

    #[test]
    fn env_names() {
        assert!(is_env_name("FILLER_PW"));
        assert!(is_env_name("_x1"));
        assert!(!is_env_name("hunter2!"));
        assert!(!is_env_name("1X"));
        assert!(!is_env_name(""));
    }
}
