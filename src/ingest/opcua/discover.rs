//! `linepilot discover opcua://host:port`: browse a server's address space and
//! print a config snippet with one `[[tag]]` per variable found.
//!
//! The browse starts at the Objects folder and follows hierarchical
//! references forward down to a depth; nodes of namespace 0 (the standard
//! `Server` object and its kin) are skipped. For every variable the
//! DataType, Description and the `EngineeringUnits` property (EUInformation
//! display name) are read. The session is opened exactly as the source
//! driver opens it ([`super::open_session`]): same security, identity and PKI
//! directory, so a server certificate trusted for discovery is trusted by the
//! daemon too.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use opcua::client::Session;
use opcua::types::{
    AttributeId, BrowseDescription, BrowseDirection, BrowseResult, BrowseResultMask, ByteString, DataTypeId,
    EUInformation, NodeClass, NodeId, ObjectId, QualifiedName, ReadValueId, ReferenceTypeId, TimestampsToReturn,
    Variant,
};
use thiserror::Error;

use super::{build_client, disconnect, identity, open_session, pki_dir};
use crate::config::units::HumanDuration;
use crate::config::{OpcUaSecurity, OpcUaSourceConfig};
use crate::domain::ValueKind;
use crate::ingest::IngestError;

/// Nodes per Browse / Read request.
const PER_CALL: usize = 200;
/// BrowseNext rounds per node before giving up (a server that never ends its continuation).
const MAX_CONTINUATIONS: usize = 10_000;

/// Why discovery failed.
#[derive(Debug, Error)]
pub enum DiscoverError {
    /// The endpoint is not `opcua://host:port` / `opc.tcp://host:port`.
    #[error("endpoint `{0}`: expected opcua://host:port or opc.tcp://host:port")]
    Endpoint(String),
    /// Connecting, security or login failed.
    #[error(transparent)]
    Session(#[from] IngestError),
    /// A Browse or BrowseNext call failed.
    #[error("browse: {0}")]
    Browse(String),
    /// A Read call failed.
    #[error("read: {0}")]
    Read(String),
}

/// What to discover and how to connect.
#[derive(Clone, Debug)]
pub struct DiscoverOptions {
    /// `opcua://host:port` or `opc.tcp://host:port[/path]`.
    pub endpoint: String,
    /// Levels below Objects to browse (Objects' children are level 1).
    pub depth: usize,
    /// Security policy/mode and identity, as in a `[[source]]`.
    pub security: OpcUaSecurity,
    /// Trust the server's certificate on first contact.
    pub trust_server_cert: bool,
    /// The data directory whose `pki/opcua/` holds the client's certificate.
    pub data_dir: PathBuf,
    /// Time allowed to connect and for each request.
    pub timeout: Duration,
}

/// One variable found.
#[derive(Clone, Debug, PartialEq)]
pub struct Variable {
    /// The variable's NodeId (`ns=2;s=Line1/Filler/BowlPressure`).
    pub node_id: String,
    /// Browse names from below Objects down to the variable.
    pub path: Vec<String>,
    /// The DataType attribute (`i=11`), empty when unreadable.
    pub data_type: String,
    /// The gateway's value type for the DataType; none when it has no mapping.
    pub value_type: Option<ValueKind>,
    /// The Description attribute (may be empty).
    pub description: String,
    /// Display name of the `EngineeringUnits` property (may be empty).
    pub unit: String,
}

impl Variable {
    /// The tag name: the browse path lower_snake_cased, joined with `.`.
    pub fn tag_name(&self) -> String {
        self.path.iter().map(|p| snake(p)).filter(|p| !p.is_empty()).collect::<Vec<_>>().join(".")
    }
}

/// `opcua://host:port` → `opc.tcp://host:port`; `opc.tcp://` as it is.
pub fn endpoint_url(s: &str) -> Result<String, DiscoverError> {
    let rest = s
        .strip_prefix("opcua://")
        .or_else(|| s.strip_prefix("opc.tcp://"))
        .ok_or_else(|| DiscoverError::Endpoint(s.to_string()))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err(DiscoverError::Endpoint(s.to_string()));
    }
    Ok(format!("opc.tcp://{rest}"))
}

/// Connects, browses and reads; `progress` gets one line per step (for stderr).
pub async fn discover(opts: &DiscoverOptions, mut progress: impl FnMut(&str)) -> Result<Vec<Variable>, DiscoverError> {
    let cfg = OpcUaSourceConfig {
        id: "discover".into(),
        endpoint: endpoint_url(&opts.endpoint)?,
        security: opts.security.clone(),
        trust_server_cert: opts.trust_server_cert,
        publishing_interval: HumanDuration(Duration::from_secs(1)),
        sampling_interval: HumanDuration(Duration::from_millis(250)),
        queue_size: 10,
        deadband: None,
        connect_timeout: HumanDuration(opts.timeout),
        mode: Default::default(),
        poll_interval: HumanDuration(Duration::from_secs(1)),
        events: false,
    };
    if let Some((key, msg)) = cfg.check().into_iter().next() {
        return Err(DiscoverError::Session(IngestError::Config(format!("{key}: {msg}"))));
    }
    let ident = identity(&cfg.security)?;
    let pki = pki_dir(&opts.data_dir);
    let client = build_client(&cfg, &pki, "discover").await?;
    let (_stop_tx, mut stop) = tokio::sync::watch::channel(false);
    progress(&format!("connecting to {} (client certificate in {})", cfg.endpoint, pki.display()));
    let (session, _events) = open_session(&client, &cfg, &ident, &pki, "discover", &mut stop).await?;
    let result = walk(&session, opts, &mut progress).await;
    disconnect(&session).await;
    result
}

/// A node reached by the browse.
struct Found {
    node: NodeId,
    path: Vec<String>,
}

async fn walk(
    session: &Session,
    opts: &DiscoverOptions,
    progress: &mut impl FnMut(&str),
) -> Result<Vec<Variable>, DiscoverError> {
    let mut seen: HashSet<NodeId> = HashSet::new();
    let mut level: Vec<Found> = vec![Found { node: ObjectId::ObjectsFolder.into(), path: Vec::new() }];
    let mut vars: Vec<Found> = Vec::new();
    for depth in 1..=opts.depth {
        if level.is_empty() {
            break;
        }
        let nodes: Vec<NodeId> = level.iter().map(|f| f.node.clone()).collect();
        let results = browse_all(session, &nodes, ReferenceTypeId::HierarchicalReferences.into(), opts.timeout).await?;
        let mut next = Vec::new();
        for (parent, refs) in level.iter().zip(results) {
            for r in refs {
                // Properties (EngineeringUnits, EURange, ...) describe a node; they are not tags.
                if r.reference_type_id == ReferenceTypeId::HasProperty {
                    continue;
                }
                if r.node_id.server_index != 0 || r.node_id.node_id.namespace == 0 {
                    continue;
                }
                let node = r.node_id.node_id.clone();
                if !seen.insert(node.clone()) {
                    continue;
                }
                let mut path = parent.path.clone();
                path.push(r.browse_name.name.as_ref().to_string());
                match r.node_class {
                    NodeClass::Variable => {
                        vars.push(Found { node: node.clone(), path: path.clone() });
                        next.push(Found { node, path });
                    }
                    NodeClass::Object => next.push(Found { node, path }),
                    _ => {}
                }
            }
        }
        progress(&format!("depth {depth}: {} nodes, {} variables so far", next.len(), vars.len()));
        level = next;
    }
    describe(session, vars, opts.timeout).await
}

/// Reads DataType, Description and the EngineeringUnits of each variable.
async fn describe(session: &Session, found: Vec<Found>, timeout: Duration) -> Result<Vec<Variable>, DiscoverError> {
    let mut reads = Vec::with_capacity(found.len() * 2);
    for f in &found {
        reads.push(read_id(&f.node, AttributeId::DataType));
        reads.push(read_id(&f.node, AttributeId::Description));
    }
    let values = read_all(session, reads, timeout).await?;

    // The EngineeringUnits property of each variable, then its value.
    let nodes: Vec<NodeId> = found.iter().map(|f| f.node.clone()).collect();
    let props = browse_all(session, &nodes, ReferenceTypeId::HasProperty.into(), timeout).await?;
    let mut eu_of: HashMap<usize, usize> = HashMap::new();
    let mut eu_reads = Vec::new();
    for (i, refs) in props.iter().enumerate() {
        if let Some(r) = refs.iter().find(|r| r.browse_name.name.as_ref() == "EngineeringUnits") {
            eu_of.insert(i, eu_reads.len());
            eu_reads.push(read_id(&r.node_id.node_id, AttributeId::Value));
        }
    }
    let eu_values = read_all(session, eu_reads, timeout).await?;

    let mut out = Vec::with_capacity(found.len());
    for (i, f) in found.into_iter().enumerate() {
        let data_type = match values.get(2 * i).and_then(|v| v.value.as_ref()) {
            Some(Variant::NodeId(id)) => Some((**id).clone()),
            _ => None,
        };
        let description = match values.get(2 * i + 1).and_then(|v| v.value.as_ref()) {
            Some(Variant::LocalizedText(t)) => t.text.as_ref().to_string(),
            _ => String::new(),
        };
        let unit = eu_of
            .get(&i)
            .and_then(|&j| eu_values.get(j))
            .and_then(|v| match v.value.as_ref() {
                Some(Variant::ExtensionObject(o)) => {
                    o.inner_as::<EUInformation>().map(|eu| eu.display_name.text.as_ref().to_string())
                }
                _ => None,
            })
            .unwrap_or_default();
        out.push(Variable {
            node_id: f.node.to_string(),
            path: f.path,
            data_type: data_type.as_ref().map(|d| d.to_string()).unwrap_or_default(),
            value_type: data_type.as_ref().and_then(value_type),
            description,
            unit,
        });
    }
    Ok(out)
}

fn read_id(node: &NodeId, attr: AttributeId) -> ReadValueId {
    ReadValueId {
        node_id: node.clone(),
        attribute_id: attr as u32,
        index_range: Default::default(),
        data_encoding: QualifiedName::null(),
    }
}

async fn read_all(
    session: &Session,
    reads: Vec<ReadValueId>,
    timeout: Duration,
) -> Result<Vec<opcua::types::DataValue>, DiscoverError> {
    let mut out = Vec::with_capacity(reads.len());
    for chunk in reads.chunks(PER_CALL) {
        let call = session.read(chunk, TimestampsToReturn::Neither, 0.0);
        let mut values = match tokio::time::timeout(timeout, call).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return Err(DiscoverError::Read(e.to_string())),
            Err(_) => return Err(DiscoverError::Read(format!("no answer within {timeout:?}"))),
        };
        if values.len() != chunk.len() {
            return Err(DiscoverError::Read(format!("{} results for {} nodes", values.len(), chunk.len())));
        }
        out.append(&mut values);
    }
    Ok(out)
}

/// Browses each node forward along `reference` (and its subtypes), following
/// continuation points; one list of references per node.
async fn browse_all(
    session: &Session,
    nodes: &[NodeId],
    reference: NodeId,
    timeout: Duration,
) -> Result<Vec<Vec<opcua::types::ReferenceDescription>>, DiscoverError> {
    let mut out = Vec::with_capacity(nodes.len());
    for chunk in nodes.chunks(PER_CALL) {
        let descs: Vec<BrowseDescription> = chunk
            .iter()
            .map(|n| BrowseDescription {
                node_id: n.clone(),
                browse_direction: BrowseDirection::Forward,
                reference_type_id: reference.clone(),
                include_subtypes: true,
                node_class_mask: NodeClass::Object as u32 | NodeClass::Variable as u32,
                result_mask: BrowseResultMask::All as u32,
            })
            .collect();
        let results = bounded(timeout, session.browse(&descs, 0, None)).await?;
        if results.len() != chunk.len() {
            return Err(DiscoverError::Browse(format!("{} results for {} nodes", results.len(), chunk.len())));
        }
        for (node, mut r) in chunk.iter().zip(results) {
            let mut refs = Vec::new();
            let mut rounds = 0;
            loop {
                if !r.status_code.is_good() {
                    tracing::warn!(node = %node, status = %r.status_code, "discover: browse refused for this node");
                    break;
                }
                refs.extend(r.references.take().unwrap_or_default());
                let cp: ByteString = r.continuation_point.clone();
                if cp.is_null_or_empty() {
                    break;
                }
                rounds += 1;
                if rounds > MAX_CONTINUATIONS {
                    return Err(DiscoverError::Browse(format!("{node}: continuation never ends")));
                }
                let mut next = bounded(timeout, session.browse_next(false, &[cp])).await?;
                r = match next.pop() {
                    Some(n) => n,
                    None => return Err(DiscoverError::Browse(format!("{node}: empty BrowseNext answer"))),
                };
            }
            out.push(refs);
        }
    }
    Ok(out)
}

async fn bounded<F>(timeout: Duration, call: F) -> Result<Vec<BrowseResult>, DiscoverError>
where
    F: std::future::Future<Output = Result<Vec<BrowseResult>, opcua::types::Error>>,
{
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(DiscoverError::Browse(e.to_string())),
        Err(_) => Err(DiscoverError::Browse(format!("no answer within {timeout:?}"))),
    }
}

/// The gateway's value type for an OPC UA DataType.
pub fn value_type(data_type: &NodeId) -> Option<ValueKind> {
    if data_type.namespace != 0 {
        return None;
    }
    let id = data_type.as_u32()?;
    let is = |t: DataTypeId| t as u32 == id;
    if is(DataTypeId::Boolean) {
        Some(ValueKind::Bool)
    } else if [
        DataTypeId::SByte,
        DataTypeId::Byte,
        DataTypeId::Int16,
        DataTypeId::UInt16,
        DataTypeId::Int32,
        DataTypeId::UInt32,
        DataTypeId::Int64,
        DataTypeId::UInt64,
        DataTypeId::Integer,
        DataTypeId::UInteger,
        DataTypeId::Enumeration,
    ]
    .into_iter()
    .any(is)
    {
        Some(ValueKind::I64)
    } else if is(DataTypeId::Float) || is(DataTypeId::Double) || is(DataTypeId::Number) {
        Some(ValueKind::F64)
    } else if is(DataTypeId::String) || is(DataTypeId::LocalizedText) {
        Some(ValueKind::Str)
    } else {
        None
    }
}

/// `BowlPressure` → `bowl_pressure`, `Line1` → `line1`, `PLCSpeed` → `plc_speed`;
/// anything but letters and digits becomes `_`.
pub fn snake(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_alphanumeric() {
            if c.is_ascii_uppercase() && i > 0 {
                let prev = chars[i - 1];
                let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
                if prev.is_ascii_lowercase() || prev.is_ascii_digit() || (prev.is_ascii_uppercase() && next_lower) {
                    out.push('_');
                }
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push('_');
        }
    }
    let mut collapsed = String::with_capacity(out.len());
    for c in out.chars() {
        if c == '_' && (collapsed.is_empty() || collapsed.ends_with('_')) {
            continue;
        }
        collapsed.push(c);
    }
    collapsed.trim_end_matches('_').to_string()
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The config snippet: a commented `[[source]]`, then one `[[tag]]` per
/// variable. Variables without a value type mapping are written commented out.
pub fn snippet(vars: &[Variable], opts: &DiscoverOptions, source_id: &str, asset: &str) -> String {
    let mut s = String::new();
    let endpoint = endpoint_url(&opts.endpoint).unwrap_or_else(|_| opts.endpoint.clone());
    s.push_str(&format!("# Discovered by `linepilot discover {}`: {} variables.\n", opts.endpoint, vars.len()));
    s.push_str("# Add this source (and the asset the tags belong to) to your config:\n");
    s.push_str("#\n# [[source]]\n");
    s.push_str(&format!("# id = {}\n# kind = \"opcua\"\n# endpoint = {}\n", quote(source_id), quote(&endpoint)));
    let sec = &opts.security;
    s.push_str(&format!("# security = {{ policy = \"{:?}\", mode = \"{:?}\"", sec.policy, sec.mode));
    if let (Some(u), Some(var)) = (&sec.user, &sec.password_env) {
        s.push_str(&format!(", user = {}, password_env = {}", quote(u), quote(var)));
    }
    s.push_str(" }\n");
    if opts.trust_server_cert {
        s.push_str("# trust_server_cert = true\n");
    }
    let mut names: HashMap<String, usize> = HashMap::new();
    for v in vars {
        let mut name = v.tag_name();
        let n = names.entry(name.clone()).or_insert(0);
        *n += 1;
        if *n > 1 {
            name = format!("{name}_{n}");
        }
        let (prefix, ty) = match v.value_type {
            Some(t) => ("", t.to_string()),
            None => ("# ", "f64".to_string()),
        };
        s.push('\n');
        if v.value_type.is_none() {
            s.push_str(&format!(
                "# DataType {} has no value type in the gateway: set one or leave out.\n",
                v.data_type
            ));
        }
        s.push_str(&format!("{prefix}[[tag]]\n"));
        s.push_str(&format!("{prefix}name = {}\n", quote(&name)));
        s.push_str(&format!("{prefix}asset = {}\n", quote(asset)));
        s.push_str(&format!("{prefix}source = {}\n", quote(source_id)));
        s.push_str(&format!("{prefix}address = {}\n", quote(&v.node_id)));
        if !v.unit.is_empty() {
            s.push_str(&format!("{prefix}unit = {}\n", quote(&v.unit)));
        }
        s.push_str(&format!("{prefix}description = {}\n", quote(&v.description)));
        s.push_str(&format!("{prefix}value_type = {}\n", quote(&ty)));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case() {
        assert_eq!(snake("BowlPressure"), "bowl_pressure");
        assert_eq!(snake("Line1"), "line1");
        assert_eq!(snake("PLCSpeed"), "plc_speed");
        assert_eq!(snake("Fill Level (%)"), "fill_level");
        assert_eq!(snake("already_snake"), "already_snake");
    }

    #[test]
    fn endpoints() {
        assert_eq!(endpoint_url("opcua://h:4840").ok().as_deref(), Some("opc.tcp://h:4840"));
        assert_eq!(endpoint_url("opc.tcp://h:4840/x").ok().as_deref(), Some("opc.tcp://h:4840/x"));
        assert!(endpoint_url("http://h").is_err());
        assert!(endpoint_url("opcua://").is_err());
    }

    #[test]
    fn value_types() {
        assert_eq!(value_type(&DataTypeId::Double.into()), Some(ValueKind::F64));
        assert_eq!(value_type(&DataTypeId::UInt16.into()), Some(ValueKind::I64));
        assert_eq!(value_type(&DataTypeId::Boolean.into()), Some(ValueKind::Bool));
        assert_eq!(value_type(&DataTypeId::String.into()), Some(ValueKind::Str));
        assert_eq!(value_type(&DataTypeId::DateTime.into()), None);
    }
}
