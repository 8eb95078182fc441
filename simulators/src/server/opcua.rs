//! The OPC UA server of the filler, capper and labeler controllers (async-opcua).
//!
//! Address space: `Objects/Line1` (a folder) holds one object per machine
//! whose tags are bound to OPC UA (`Filler`, `Capper`, `Labeler`), and each
//! machine object one read-only variable per tag. A variable's NodeId is the
//! string `Binding::OpcUa.path` (e.g. `Line1/Filler/BowlPressure`) in the
//! namespace `catalog::OPCUA_NAMESPACE`; its browse and display name are
//! `Tag::browse`, its description `Tag::description`, its data type the
//! tag's `PlcType`. Tags with a unit carry an `EngineeringUnits` property
//! (EUInformation, UNECE code where one is known, else -1); floats are
//! `BaseAnalogType` variables.
//!
//! Values: on each frame every tag whose stamp moved gets its new value with
//! SourceTimestamp = the (simulated) stamp and ServerTimestamp = now, which
//! notifies the monitored items on it.
//!
//! Endpoints: SecurityPolicy None, and Basic256Sha256 with Sign and with
//! SignAndEncrypt; anonymous and username/password logins (passwords are
//! encrypted with the server certificate even on the None endpoint). The
//! application instance certificate is created in `pki_dir` on first start.
//!
//! Comms loss: while `frame.down.opcua` is set the server is stopped, as if
//! the controller dropped off the network: open connections are closed
//! (the client gets BadServerHalted, then EOF), sessions and subscriptions
//! are gone, and new connections are refused (nothing listens on the port).
//! When the fault clears, a fresh server listens again on the same address
//! with the current values; clients must reconnect and create new sessions,
//! as after a real controller outage.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ::opcua::crypto::SecurityPolicy;
use ::opcua::server::address_space::{AccessLevel, ObjectBuilder, VariableBuilder};
use ::opcua::server::diagnostics::NamespaceMetadata;
use ::opcua::server::node_manager::memory::{simple_node_manager, SimpleNodeManager};
use ::opcua::server::{Server, ServerBuilder, ServerEndpoint, ServerHandle, ServerUserToken, ANONYMOUS_USER_TOKEN_ID};
use ::opcua::types::{
    DataTypeId, DataValue, DateTime, EUInformation, ExtensionObject, LocalizedText, MessageSecurityMode, NodeId,
    ObjectId, ObjectTypeId, QualifiedName, StatusCode, VariableTypeId, Variant,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use super::OpcUaConfig;
use crate::line::catalog::OPCUA_NAMESPACE;
use crate::line::{Binding, Catalog, Feed, Frame, PlcType, Val};

/// The server's application URI (must differ from the namespace URI of the line's nodes).
pub const APPLICATION_URI: &str = "urn:linesim:server";
/// Namespace URI of UNECE unit codes in `EUInformation`.
const UNECE_NAMESPACE: &str = "http://www.opcfoundation.org/UA/units/un/cefact";
/// Endpoint path: endpoints are `opc.tcp://host:port/`.
const ENDPOINT_PATH: &str = "/";
/// How long a stopping server may take to close its connections.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Delay between attempts to listen again after a comms-loss fault.
const REBIND_RETRY: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum OpcUaError {
    #[error("opcua: cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    #[error("opcua: bad configuration: {0}")]
    Config(String),
    #[error("opcua: cannot build the server: {0}")]
    Build(String),
    #[error("opcua: no application instance certificate in {0} (creating one failed, see the log)")]
    Certificate(PathBuf),
    #[error("opcua: setting up the address space failed: {0}")]
    AddressSpace(String),
}

/// A running OPC UA server.
pub struct OpcUaServer {
    /// The bound address (the actual port when the configured port was 0).
    pub addr: SocketAddr,
    /// The endpoint URL clients connect to, e.g. `opc.tcp://127.0.0.1:4840/`.
    pub endpoint_url: String,
    /// The supervisor task; it ends when the feed's sender is dropped.
    pub task: JoinHandle<()>,
}

/// One OPC UA variable: the catalog index of its tag and its NodeId.
struct Var {
    tag: usize,
    node: NodeId,
}

/// What every (re)start of the server needs.
struct Setup {
    cfg: OpcUaConfig,
    catalog: Arc<Catalog>,
    /// Host name put in the endpoint URLs.
    host: String,
    pki_dir: PathBuf,
    /// Tag indices of the OPC UA tags, in catalog order.
    tags: Vec<usize>,
}

/// A built server before it runs.
struct Built {
    server: Server,
    handle: ServerHandle,
    nodes: Arc<SimpleNodeManager>,
    vars: Vec<Var>,
    /// The stamp of each variable's value.
    last: Vec<i64>,
    /// The load-test variables (`bench_variables`) and the second they hold.
    bench: Bench,
}

/// `Line1/Bench/Bnnnnn`: Double variables that all change once per simulated second.
struct Bench {
    nodes: Vec<NodeId>,
    second: i64,
}

impl Bench {
    /// Value of bench variable `i` in simulated second `s` (a sawtooth per variable).
    fn value(s: i64, i: usize) -> f64 {
        ((s.rem_euclid(1000) * 7 + i as i64) % 1000) as f64 / 10.0
    }

    /// Sets every variable when the frame enters a new second.
    fn publish(&mut self, nodes: &SimpleNodeManager, handle: &ServerHandle, frame: &Frame) {
        let second = frame.ts_ns.div_euclid(1_000_000_000);
        if self.nodes.is_empty() || second == self.second {
            return;
        }
        self.second = second;
        let now = DateTime::now();
        let updates = self.nodes.iter().enumerate().map(|(i, node)| {
            let dv = DataValue {
                value: Some(Variant::Double(Bench::value(second, i))),
                status: Some(StatusCode::Good),
                source_timestamp: Some(ua_time(second * 1_000_000_000)),
                source_picoseconds: None,
                server_timestamp: Some(now),
                server_picoseconds: None,
            };
            (node, None, dv)
        });
        if let Err(e) = nodes.set_values(handle.subscriptions(), updates) {
            error!(error = %e, "opcua: setting bench values failed");
        }
    }
}

/// Binds `cfg.listen` (port 0 picks a free port), builds the server (creating
/// its certificate on first start), publishes the feed's current frame and
/// spawns the task that serves it and follows the feed.
pub async fn start(cfg: &OpcUaConfig, feed: Feed) -> Result<OpcUaServer, OpcUaError> {
    if !cfg.anonymous && cfg.users.is_empty() {
        return Err(OpcUaError::Config("anonymous logins are off and no users are configured".into()));
    }
    let listener = TcpListener::bind(&cfg.listen)
        .await
        .map_err(|source| OpcUaError::Listen { addr: cfg.listen.clone(), source })?;
    let addr = listener.local_addr().map_err(|source| OpcUaError::Listen { addr: cfg.listen.clone(), source })?;
    let host = endpoint_host(&cfg.listen, addr);
    let pki_dir = absolute(Path::new(&cfg.pki_dir));
    let tags = feed
        .catalog
        .tags
        .iter()
        .enumerate()
        .filter(|(_, t)| matches!(t.binding, Binding::OpcUa { .. }))
        .map(|(i, _)| i)
        .collect();
    let setup = Arc::new(Setup { cfg: cfg.clone(), catalog: feed.catalog.clone(), host, pki_dir, tags });
    let endpoint_url = format!("opc.tcp://{}:{}{}", setup.host, addr.port(), ENDPOINT_PATH);

    let frame = feed.frames.borrow().clone();
    // The first build may create an RSA key pair: keep it off the async workers.
    let first = {
        let setup = setup.clone();
        tokio::task::spawn_blocking(move || build(&setup, addr.port(), &frame))
            .await
            .map_err(|e| OpcUaError::Build(format!("build task failed: {e}")))??
    };
    info!(%addr, url = %endpoint_url, variables = first.vars.len(), "opcua: listening");
    let task = tokio::spawn(supervise(setup, feed, listener, addr, first));
    Ok(OpcUaServer { addr, endpoint_url, task })
}

/// The host name to advertise: the configured one, or the machine's name
/// when listening on all interfaces.
fn endpoint_host(listen: &str, addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        return ::opcua::crypto::X509Data::computer_hostnames()
            .into_iter()
            .next()
            .unwrap_or_else(|| "localhost".into());
    }
    match listen.rsplit_once(':') {
        Some((host, _)) if !host.is_empty() => host.to_string(),
        _ => match addr {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        },
    }
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        return p.to_path_buf();
    }
    match std::env::current_dir() {
        Ok(cwd) => cwd.join(p),
        Err(_) => p.to_path_buf(),
    }
}

/// Why a running server was stopped.
enum Halt {
    FeedEnded,
    CommsLoss,
    Crashed,
}

/// Serves while the line is up, stops while `down.opcua` is set, and returns
/// when the feed ends.
async fn supervise(setup: Arc<Setup>, mut feed: Feed, listener: TcpListener, addr: SocketAddr, first: Built) {
    let mut listener = Some(listener);
    let mut built = Some(first);
    loop {
        // Up: listen and follow the frames until a comms-loss fault or the end.
        let listener_now = match listener.take() {
            Some(l) => l,
            None => match rebind(addr, &mut feed).await {
                Some(l) => l,
                None => return,
            },
        };
        let b = match built.take() {
            Some(b) => b,
            None => {
                let frame = feed.frames.borrow().clone();
                match build(&setup, addr.port(), &frame) {
                    Ok(b) => b,
                    Err(e) => {
                        error!(error = %e, "opcua: cannot rebuild the server; retrying");
                        drop(listener_now);
                        tokio::time::sleep(REBIND_RETRY).await;
                        continue;
                    }
                }
            }
        };
        let Built { server, handle, nodes, vars, mut last, mut bench } = b;
        let mut run = tokio::spawn(server.run_with(listener_now));
        // Frames that arrived since the build.
        let frame = feed.frames.borrow_and_update().clone();
        publish(&setup.catalog, &nodes, &handle, &vars, &frame, &mut last);
        bench.publish(&nodes, &handle, &frame);
        let why = if frame.down.opcua {
            Halt::CommsLoss
        } else {
            loop {
                tokio::select! {
                    changed = feed.frames.changed() => {
                        if changed.is_err() {
                            break Halt::FeedEnded;
                        }
                        let frame = feed.frames.borrow_and_update().clone();
                        if frame.down.opcua {
                            break Halt::CommsLoss;
                        }
                        publish(&setup.catalog, &nodes, &handle, &vars, &frame, &mut last);
                        bench.publish(&nodes, &handle, &frame);
                    }
                    res = &mut run => {
                        match res {
                            Ok(Ok(())) => warn!("opcua: server stopped on its own; restarting"),
                            Ok(Err(e)) => error!(error = %e, "opcua: server failed; restarting"),
                            Err(e) => error!(error = %e, "opcua: server task panicked; restarting"),
                        }
                        break Halt::Crashed;
                    }
                }
            }
        };
        match why {
            Halt::FeedEnded => {
                stop(&handle, run).await;
                info!(%addr, "opcua: feed ended; server stopped");
                return;
            }
            Halt::Crashed => {
                tokio::time::sleep(REBIND_RETRY).await;
                continue;
            }
            Halt::CommsLoss => {
                info!(%addr, "opcua: comms loss: closing connections, no longer listening");
                stop(&handle, run).await;
            }
        }
        // Down: wait until the fault clears (or the feed ends).
        loop {
            if !feed.frames.borrow_and_update().down.opcua {
                break;
            }
            if feed.frames.changed().await.is_err() {
                return;
            }
        }
        info!(%addr, "opcua: comms restored: listening again");
    }
}

/// Cancels a running server and waits (bounded) until it has closed its
/// connections and dropped its listener.
async fn stop(handle: &ServerHandle, mut run: JoinHandle<Result<(), String>>) {
    handle.cancel();
    if run.is_finished() {
        return;
    }
    if tokio::time::timeout(STOP_TIMEOUT, &mut run).await.is_err() {
        warn!("opcua: server did not stop in time; aborting it");
        run.abort();
        let _ = run.await;
    }
}

/// Listens on `addr` again, retrying while the port is briefly unavailable.
/// Returns None when the feed ends meanwhile.
async fn rebind(addr: SocketAddr, feed: &mut Feed) -> Option<TcpListener> {
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return Some(l),
            Err(e) => warn!(%addr, error = %e, "opcua: cannot listen again yet; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(REBIND_RETRY) => {}
            changed = feed.frames.changed() => {
                if changed.is_err() {
                    return None;
                }
            }
        }
    }
}

/// Builds the server with its endpoints, users and address space, holding
/// the values of `frame`.
fn build(setup: &Setup, port: u16, frame: &Frame) -> Result<Built, OpcUaError> {
    let cfg = &setup.cfg;
    let mut token_ids: Vec<String> = Vec::new();
    if cfg.anonymous {
        token_ids.push(ANONYMOUS_USER_TOKEN_ID.to_string());
    }
    let mut builder = ServerBuilder::new()
        .application_name("linesim bottling line")
        .application_uri(APPLICATION_URI)
        .product_uri("urn:linesim")
        .host(setup.host.clone())
        .port(port)
        .pki_dir(&setup.pki_dir)
        .create_sample_keypair(true)
        .trust_client_certs(cfg.trust_client_certs)
        .discovery_urls(vec![format!("opc.tcp://{}:{}{}", setup.host, port, ENDPOINT_PATH)])
        .with_node_manager(simple_node_manager(
            NamespaceMetadata { namespace_uri: OPCUA_NAMESPACE.to_string(), ..Default::default() },
            "linesim",
        ));
    for (k, u) in cfg.users.iter().enumerate() {
        if u.user.is_empty() {
            return Err(OpcUaError::Config(format!("user #{} has an empty name", k + 1)));
        }
        let id = format!("user{}", k + 1);
        builder = builder.add_user_token(&id, ServerUserToken::user_pass(u.user.as_str(), u.password.as_str()));
        token_ids.push(id);
    }
    let mut none = ServerEndpoint::new_none(ENDPOINT_PATH, &token_ids);
    // Never send passwords in clear text, even on the unsecured endpoint.
    none.password_security_policy = Some(SecurityPolicy::Basic256Sha256.to_string());
    builder = builder
        .add_endpoint("none", none)
        .add_endpoint(
            "basic256sha256_sign",
            ServerEndpoint::new(ENDPOINT_PATH, SecurityPolicy::Basic256Sha256, MessageSecurityMode::Sign, &token_ids),
        )
        .add_endpoint(
            "basic256sha256_sign_encrypt",
            ServerEndpoint::new_basic256sha256_sign_encrypt(ENDPOINT_PATH, &token_ids),
        )
        .default_endpoint("none");
    let (server, handle) = builder.build().map_err(OpcUaError::Build)?;
    if handle.info().server_certificate.is_none() || handle.info().server_pkey.is_none() {
        return Err(OpcUaError::Certificate(setup.pki_dir.clone()));
    }
    let nodes = handle
        .node_managers()
        .get_of_type::<SimpleNodeManager>()
        .ok_or_else(|| OpcUaError::AddressSpace("the node manager is missing".into()))?;
    let ns = handle
        .get_namespace_index(OPCUA_NAMESPACE)
        .ok_or_else(|| OpcUaError::AddressSpace(format!("namespace {OPCUA_NAMESPACE} is not registered")))?;
    let vars = populate(setup, &nodes, ns)?;
    let mut last = vec![i64::MIN; vars.len()];
    publish(&setup.catalog, &nodes, &handle, &vars, frame, &mut last);
    let mut bench = Bench { nodes: populate_bench(cfg.bench_variables, &nodes, ns)?, second: i64::MIN };
    bench.publish(&nodes, &handle, frame);
    Ok(Built { server, handle, nodes, vars, last, bench })
}

/// Creates `Objects/Line1`, the machine objects and their variables.
fn populate(setup: &Setup, nodes: &SimpleNodeManager, ns: u16) -> Result<Vec<Var>, OpcUaError> {
    let catalog = &setup.catalog;
    let mut space = nodes.address_space().write();
    let line = NodeId::new(ns, "Line1");
    let objects: NodeId = ObjectId::ObjectsFolder.into();
    if !space.add_folder(&line, QualifiedName::new(ns, "Line1"), "Line1", &objects) {
        return Err(OpcUaError::AddressSpace("cannot add Line1".into()));
    }
    let mut machines: Vec<String> = Vec::new();
    let mut vars = Vec::with_capacity(setup.tags.len());
    for &i in &setup.tags {
        let tag = &catalog.tags[i];
        let Binding::OpcUa { path } = &tag.binding else { continue };
        let parts: Vec<&str> = path.split('/').collect();
        let [root, machine, _] = parts[..] else {
            return Err(OpcUaError::AddressSpace(format!("{}: path {path} is not Line1/<machine>/<tag>", tag.name)));
        };
        if root != "Line1" {
            return Err(OpcUaError::AddressSpace(format!("{}: path {path} is not under Line1", tag.name)));
        }
        let machine_id = NodeId::new(ns, format!("Line1/{machine}"));
        if !machines.iter().any(|m| m == machine) {
            let ok = ObjectBuilder::new(&machine_id, QualifiedName::new(ns, machine), machine)
                .description(LocalizedText::new("", &format!("{machine} controller")))
                .has_type_definition(ObjectTypeId::BaseObjectType)
                .organized_by(line.clone())
                .insert(&mut *space);
            if !ok {
                return Err(OpcUaError::AddressSpace(format!("cannot add {machine}")));
            }
            machines.push(machine.to_string());
        }
        let node = NodeId::new(ns, path.as_str());
        let analog = matches!(tag.ty, PlcType::F32 | PlcType::F64) && !tag.unit.is_empty();
        let type_def = if analog { VariableTypeId::BaseAnalogType } else { VariableTypeId::BaseDataVariableType };
        let ok = VariableBuilder::new(&node, QualifiedName::new(ns, tag.browse.as_str()), tag.browse.as_str())
            .description(LocalizedText::new("", &tag.description))
            .data_type(data_type(tag.ty))
            .value(variant(tag.ty, zero(tag.ty)))
            .value_rank(-1)
            .access_level(AccessLevel::CURRENT_READ)
            .user_access_level(AccessLevel::CURRENT_READ)
            .minimum_sampling_interval(0.0)
            .has_type_definition(type_def)
            .component_of(machine_id)
            .insert(&mut *space);
        if !ok {
            return Err(OpcUaError::AddressSpace(format!("cannot add {path}")));
        }
        if !tag.unit.is_empty() {
            let eu_id = NodeId::new(ns, format!("{path}.EngineeringUnits"));
            let eu = EUInformation {
                namespace_uri: UNECE_NAMESPACE.into(),
                unit_id: unece_id(tag.unit),
                display_name: LocalizedText::new("", tag.unit),
                description: LocalizedText::new("", unit_name(tag.unit)),
            };
            let ok = VariableBuilder::new(&eu_id, QualifiedName::new(0, "EngineeringUnits"), "EngineeringUnits")
                .data_type(DataTypeId::EUInformation)
                .value(Variant::from(ExtensionObject::from_message(eu)))
                .value_rank(-1)
                .access_level(AccessLevel::CURRENT_READ)
                .user_access_level(AccessLevel::CURRENT_READ)
                .has_type_definition(VariableTypeId::PropertyType)
                .property_of(node.clone())
                .insert(&mut *space);
            if !ok {
                return Err(OpcUaError::AddressSpace(format!("cannot add {path}.EngineeringUnits")));
            }
        }
        vars.push(Var { tag: i, node });
    }
    debug!(machines = machines.len(), variables = vars.len(), "opcua: address space built");
    Ok(vars)
}

/// `Objects/Line1/Bench` with `n` Double variables (none when `n` is 0).
fn populate_bench(n: usize, nodes: &SimpleNodeManager, ns: u16) -> Result<Vec<NodeId>, OpcUaError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut space = nodes.address_space().write();
    let folder = NodeId::new(ns, "Line1/Bench");
    let ok = ObjectBuilder::new(&folder, QualifiedName::new(ns, "Bench"), "Bench")
        .description(LocalizedText::new("", "Load-test variables, all changing once per second"))
        .has_type_definition(ObjectTypeId::BaseObjectType)
        .organized_by(NodeId::new(ns, "Line1"))
        .insert(&mut *space);
    if !ok {
        return Err(OpcUaError::AddressSpace("cannot add Line1/Bench".into()));
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("B{i:05}");
        let node = NodeId::new(ns, format!("Line1/Bench/{name}"));
        let ok = VariableBuilder::new(&node, QualifiedName::new(ns, name.as_str()), name.as_str())
            .data_type(DataTypeId::Double)
            .value(Variant::Double(0.0))
            .value_rank(-1)
            .access_level(AccessLevel::CURRENT_READ)
            .user_access_level(AccessLevel::CURRENT_READ)
            .minimum_sampling_interval(0.0)
            .has_type_definition(VariableTypeId::BaseDataVariableType)
            .component_of(folder.clone())
            .insert(&mut *space);
        if !ok {
            return Err(OpcUaError::AddressSpace(format!("cannot add Line1/Bench/{name}")));
        }
        out.push(node);
    }
    Ok(out)
}

/// Sets every variable whose stamp moved since `last`, notifying subscriptions.
fn publish(
    catalog: &Catalog,
    nodes: &SimpleNodeManager,
    handle: &ServerHandle,
    vars: &[Var],
    frame: &Frame,
    last: &mut [i64],
) {
    let now = DateTime::now();
    let mut updates = Vec::new();
    for (k, v) in vars.iter().enumerate() {
        let (Some(&stamp), Some(&val)) = (frame.stamps.get(v.tag), frame.values.get(v.tag)) else { continue };
        if stamp == last[k] {
            continue;
        }
        last[k] = stamp;
        let ty = catalog.tags[v.tag].ty;
        let dv = DataValue {
            value: Some(variant(ty, val)),
            status: Some(StatusCode::Good),
            source_timestamp: Some(ua_time(stamp)),
            source_picoseconds: None,
            server_timestamp: Some(now),
            server_picoseconds: None,
        };
        updates.push((&v.node, None, dv));
    }
    if updates.is_empty() {
        return;
    }
    let n = updates.len();
    if let Err(e) = nodes.set_values(handle.subscriptions(), updates.into_iter()) {
        error!(error = %e, "opcua: setting values failed");
    } else {
        debug!(updated = n, "opcua: values set");
    }
}

/// OPC UA time (100 ns ticks since 1601) of a time in ns since the Unix epoch.
fn ua_time(ns: i64) -> DateTime {
    const UNIX_EPOCH_TICKS: i64 = 11_644_473_600 * 10_000_000;
    DateTime::from(ns.div_euclid(100).saturating_add(UNIX_EPOCH_TICKS))
}

fn data_type(ty: PlcType) -> DataTypeId {
    match ty {
        PlcType::Bool => DataTypeId::Boolean,
        PlcType::U16 => DataTypeId::UInt16,
        PlcType::I16 => DataTypeId::Int16,
        PlcType::U32 => DataTypeId::UInt32,
        PlcType::I32 => DataTypeId::Int32,
        PlcType::F32 => DataTypeId::Float,
        PlcType::F64 => DataTypeId::Double,
    }
}

fn zero(ty: PlcType) -> Val {
    match ty {
        PlcType::Bool => Val::Bool(false),
        PlcType::F32 | PlcType::F64 => Val::F64(0.0),
        _ => Val::I64(0),
    }
}

/// A value as the variant of the tag's data type (integers saturate at the type's range).
fn variant(ty: PlcType, v: Val) -> Variant {
    let int = |v: Val| match v {
        Val::I64(x) => x,
        Val::F64(x) => x.round() as i64,
        Val::Bool(b) => b as i64,
    };
    match ty {
        PlcType::Bool => Variant::Boolean(v.as_f64() != 0.0),
        PlcType::U16 => Variant::UInt16(int(v).clamp(0, u16::MAX as i64) as u16),
        PlcType::I16 => Variant::Int16(int(v).clamp(i16::MIN as i64, i16::MAX as i64) as i16),
        PlcType::U32 => Variant::UInt32(int(v).clamp(0, u32::MAX as i64) as u32),
        PlcType::I32 => Variant::Int32(int(v).clamp(i32::MIN as i64, i32::MAX as i64) as i32),
        PlcType::F32 => Variant::Float(v.as_f64() as f32),
        PlcType::F64 => Variant::Double(v.as_f64()),
    }
}

/// The UNECE common code of a unit as an OPC UA `unitId` (the code's ASCII
/// bytes packed big-endian), or -1 when the unit has none.
pub fn unece_id(unit: &str) -> i32 {
    let code = match unit {
        "A" => "AMP",
        "°C" => "CEL",
        "h" => "HUR",
        "ml" => "MLT",
        "bar" => "BAR",
        "N·cm" => "F88",
        "%" => "P1",
        "kW" => "KWT",
        "kWh" => "KWH",
        _ => return -1,
    };
    code.bytes().fold(0i32, |acc, b| (acc << 8) | b as i32)
}

fn unit_name(unit: &str) -> &str {
    match unit {
        "A" => "ampere",
        "°C" => "degree Celsius",
        "h" => "hour",
        "ml" => "millilitre",
        "bar" => "bar",
        "N·cm" => "newton centimetre",
        "%" => "percent",
        "kW" => "kilowatt",
        "kWh" => "kilowatt hour",
        "bpm" => "bottles per minute",
        "bottles" => "bottles",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unece_codes_pack_like_the_spec() {
        // Examples from OPC UA Part 8: "CEL" = 4408652, "F88" (N·cm) = 4601912.
        assert_eq!(unece_id("°C"), 4408652);
        assert_eq!(unece_id("N·cm"), 4601912);
        assert_eq!(unece_id("bpm"), -1);
    }

    #[test]
    fn timestamps_convert_to_opcua_ticks() {
        let t = ua_time(1_700_000_000_123_456_789);
        assert_eq!(t.as_chrono().timestamp_nanos_opt(), Some(1_700_000_000_123_456_700));
    }

    #[test]
    fn values_take_the_tag_type() {
        assert_eq!(variant(PlcType::U16, Val::I64(70_000)), Variant::UInt16(u16::MAX));
        assert_eq!(variant(PlcType::F32, Val::F64(1.5)), Variant::Float(1.5));
        assert_eq!(variant(PlcType::Bool, Val::Bool(true)), Variant::Boolean(true));
    }
}
