//! OPC UA client source (async-opcua).
//!
//! One session per source and one subscription with a monitored item per
//! tag (its sampling interval and deadband from the tag, else the source).
//! Nodes the server will not monitor (a filter or service it does not
//! support, too many items) are read every `poll_interval` instead, and a
//! source with `mode = "poll"` reads every node that way. When the session is lost (server restart, network, keep-alive
//! failures, a subscription the server dropped), the whole session is thrown
//! away and built again with its subscription and **every** monitored item:
//! the crate's own reconnect (subscription transfer or re-creation) is turned
//! off because a re-creation that fails there is only logged, and a gateway
//! that silently stops receiving data is the failure users report most.
//!
//! The client's certificate and key live in `<data_dir>/pki/opcua/`, created on
//! first start. A server certificate that is not trusted lands in
//! `pki/opcua/rejected/`; the log says which file to move to `trusted/`
//! (or set `trust_server_cert = true`).

mod convert;
pub mod discover;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use opcua::client::{Client, ClientBuilder, IdentityToken, MonitoredItemMap, OnSubscriptionNotificationCore, Session};
use opcua::crypto::{CertificateStore, SecurityPolicy as UaPolicy, X509};
use opcua::types::{
    match_extension_object_owned, AttributeId, ContentFilter, DataChangeFilter, DataChangeNotification,
    DataChangeTrigger, DeadbandType, EndpointDescription, EventFilter, EventNotificationList, ExtensionObject,
    MessageSecurityMode, MonitoredItemCreateRequest, MonitoringMode, MonitoringParameters, NodeId, NotificationMessage,
    NumericRange, ObjectId, ObjectTypeId, QualifiedName, ReadValueId, SimpleAttributeOperand, StatusChangeNotification,
    StatusCode, TimestampsToReturn, Variant,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::{Backoff, BoundTag, IngestError, SourceCtx, SourceState};
use crate::config::{
    OpcUaMode, OpcUaSecurity, OpcUaSourceConfig, SecurityMode, SecurityPolicy, SourceConfig, TagAddress,
};
use crate::domain::{now_ns, Event, EventKind, Quality, Sample, Timestamp, ValueKind};

pub use convert::{node_id, sample_time, timestamp, value};

/// Notifications queued between the session's event loop and the store
/// channel before the newest are dropped (and counted).
const NOTIFY_QUEUE: usize = 1024;
/// Monitored items per CreateMonitoredItems call (servers limit the count).
const ITEMS_PER_CALL: usize = 500;
/// Nodes per Read call when polling.
const READS_PER_CALL: usize = 1000;
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The client's PKI directory under a data dir.
pub fn pki_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("pki").join("opcua")
}

/// Runs an `opcua` source until shutdown.
pub async fn run(ctx: SourceCtx) -> Result<(), IngestError> {
    let SourceConfig::OpcUa(cfg) = &ctx.config else {
        return Err(IngestError::Config(format!("source `{}` is not an OPC UA source", ctx.id())));
    };
    let cfg = cfg.clone();
    let identity = identity(&cfg.security)?;
    let items = items(&ctx);
    let pki = pki_dir(ctx.store.paths().root());
    let client = build_client(&cfg, &pki, ctx.id()).await?;
    let mut driver = Driver { ctx, cfg, identity, items, pki, link: Link::default(), polled: Vec::new() };
    driver.run(client).await
}

/// A tag's monitored node.
#[derive(Clone, Debug)]
struct Item {
    /// Index into the source's tags.
    tag: usize,
    node: NodeId,
}

/// What the reconnect loop knows about the link.
#[derive(Default)]
struct Link {
    /// Data arrived in the current session.
    flowing: bool,
    /// A comms loss has been recorded and no data has arrived since.
    lost: bool,
    /// Newest source timestamp received (for a gap sample that sorts after it).
    last_ts: Timestamp,
}

struct Driver {
    ctx: SourceCtx,
    cfg: OpcUaSourceConfig,
    identity: IdentityToken,
    items: Arc<Vec<Item>>,
    pki: PathBuf,
    link: Link,
    /// Items read with the Read service in the current session.
    polled: Vec<Item>,
}

/// Ends the session's event loop when the session is given up.
pub(crate) struct EventLoop(JoinHandle<StatusCode>);

impl Drop for EventLoop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// From the subscription callbacks (in the event loop) to the driver.
enum Note {
    Samples(Vec<Sample>),
    Events(Vec<Event>),
    Status(StatusCode),
}

impl Driver {
    async fn run(&mut self, client: Client) -> Result<(), IngestError> {
        let mut backoff = Backoff::new(MAX_BACKOFF);
        loop {
            let err = match self.session(&client).await {
                Ok(()) | Err(IngestError::Shutdown) => return Ok(()),
                Err(e) => e,
            };
            if self.link.flowing {
                backoff.reset();
                self.ctx.health.count_reconnect();
            }
            self.link.flowing = false;
            let reason = err.to_string();
            warn!(source = self.ctx.id(), endpoint = %self.cfg.endpoint, error = %reason, "opcua: no session; retrying");
            if self.link.lost {
                self.ctx.health.set_state(SourceState::Down, Some(reason));
            } else {
                self.link.lost = true;
                let ts = now_ns().max(self.link.last_ts.saturating_add(1));
                self.ctx.comms_lost(ts, Quality::BAD_COMMS, &reason).await;
            }
            if self.ctx.sleep(backoff.next_delay()).await.is_err() {
                return Ok(());
            }
        }
    }

    /// One session: connect, subscribe every tag, forward data until the
    /// session is lost (Err) or the daemon stops (Err(Shutdown)).
    async fn session(&mut self, client: &Client) -> Result<(), IngestError> {
        let mut stop = self.ctx.shutdown.clone();
        let url_owned = self.cfg.endpoint.clone();
        let url = url_owned.as_str();
        let (session, mut events) =
            open_session(client, &self.cfg, &self.identity, &self.pki, self.ctx.id(), &mut stop).await?;
        let (tx, mut rx) = mpsc::channel(NOTIFY_QUEUE);
        self.polled.clear();
        let created = match self.cfg.mode {
            OpcUaMode::Subscribe => self.subscribe(&session, tx, &mut stop).await,
            OpcUaMode::Poll => {
                self.polled = self.items.to_vec();
                Ok(None)
            }
        };
        // Without a subscription nothing sends notifications: do not wait for them.
        let subscribed = match created {
            Ok(Some(subs)) => {
                debug!(source = self.ctx.id(), subscriptions = subs, "opcua: subscribed");
                true
            }
            Ok(None) => false,
            Err(e) => {
                disconnect(&session).await;
                return Err(e);
            }
        };
        self.ctx.health.set_polled(self.polled.len());
        if !self.polled.is_empty() {
            info!(
                source = self.ctx.id(),
                nodes = self.polled.len(),
                interval_ms = self.cfg.poll_interval.0.as_millis() as u64,
                "opcua: polling"
            );
        }
        if self.items.is_empty() {
            self.restored();
        }
        let mut poll = tokio::time::interval(self.cfg.poll_interval.0);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        let result = loop {
            tokio::select! {
                _ = poll.tick(), if !self.polled.is_empty() => {
                    let samples = match self.read_polled(&session, &mut stop).await {
                        Ok(s) => s,
                        Err(e) => break Err(e),
                    };
                    if !self.link.flowing {
                        self.restored();
                    }
                    self.note_times(&samples);
                    if self.ctx.sink.send(samples).await.is_err() {
                        break Err(IngestError::Shutdown);
                    }
                }
                note = rx.recv(), if subscribed => match note {
                    Some(Note::Samples(samples)) => {
                        if samples.is_empty() {
                            continue;
                        }
                        if !self.link.flowing {
                            self.restored();
                        }
                        self.note_times(&samples);
                        if self.ctx.sink.send(samples).await.is_err() {
                            break Err(IngestError::Shutdown);
                        }
                    }
                    Some(Note::Events(events)) => {
                        for ev in &events {
                            if let Err(e) = self.ctx.store.events().append(ev) {
                                warn!(source = self.ctx.id(), error = %e, "opcua: cannot store an event of the server");
                            }
                        }
                        debug!(source = self.ctx.id(), events = events.len(), "opcua: server events stored");
                    }
                    Some(Note::Status(code)) => {
                        break Err(IngestError::Connection(format!("{url}: subscription ended by the server: {code}")));
                    }
                    None => break Err(IngestError::Protocol("subscription callback gone".into())),
                },
                end = &mut events.0 => {
                    let why = match end {
                        Ok(code) if code.is_good() => "connection closed".to_string(),
                        Ok(code) => code.to_string(),
                        Err(e) => format!("event loop failed: {e}"),
                    };
                    break Err(IngestError::Connection(format!("{url}: session lost: {why}")));
                }
                _ = stopped(&mut stop) => break Err(IngestError::Shutdown),
            }
        };
        disconnect(&session).await;
        result
    }

    /// Keeps the newest good source timestamp (a gap sample sorts after it).
    fn note_times(&mut self, samples: &[Sample]) {
        for s in samples {
            if s.quality.is_good() {
                self.link.last_ts = self.link.last_ts.max(s.ts);
            }
        }
    }

    /// One Read of every polled node (in chunks the server accepts); a
    /// failed or unanswered Read ends the session.
    async fn read_polled(
        &self,
        session: &Session,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<Vec<Sample>, IngestError> {
        let limit = self.cfg.connect_timeout.0;
        let now = now_ns();
        let mut samples = Vec::with_capacity(self.polled.len());
        for chunk in self.polled.chunks(READS_PER_CALL) {
            let nodes: Vec<ReadValueId> = chunk.iter().map(|it| value_of(&it.node)).collect();
            let values = match within(limit, stop, session.read(&nodes, TimestampsToReturn::Both, 0.0)).await? {
                Some(Ok(v)) => v,
                Some(Err(e)) => return Err(IngestError::Connection(format!("Read: {e}"))),
                None => return Err(IngestError::Connection(format!("Read: no answer within {limit:?}"))),
            };
            if values.len() != chunk.len() {
                return Err(IngestError::Protocol(format!(
                    "Read of {} nodes answered {} values",
                    chunk.len(),
                    values.len()
                )));
            }
            for (it, dv) in chunk.iter().zip(values.iter()) {
                samples.push(to_sample(&self.ctx.tags[it.tag], dv, now, &self.ctx.health));
            }
        }
        Ok(samples)
    }

    /// Data flows (again).
    fn restored(&mut self) {
        self.link.flowing = true;
        self.link.lost = false;
        self.ctx.comms_restored(now_ns());
        info!(source = self.ctx.id(), endpoint = %self.cfg.endpoint, "opcua: data flowing");
    }

    /// Creates the subscriptions and a monitored item per tag. Servers limit
    /// the items per subscription (often 1000) and per call: when one is full
    /// another is opened, a call that is too big is halved, and what the
    /// server will not take at all is polled. Tags whose item the server
    /// refuses outright get a sample with the server's status code.
    /// Returns the number of subscriptions (0: every node is polled).
    async fn subscribe(
        &mut self,
        session: &Session,
        tx: mpsc::Sender<Note>,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<Option<u32>, IngestError> {
        let limit = self.cfg.connect_timeout.0;
        let publishing = self.cfg.publishing_interval.0;
        let handler = Notify {
            source: self.ctx.id().to_string(),
            tags: self.ctx.tags.clone(),
            tx,
            health: self.ctx.health.clone(),
        };
        let mut subs: Vec<u32> = Vec::new();
        // Items in the newest subscription, and whether the next chunk needs a new one.
        let (mut in_sub, mut need_sub) = (0usize, true);
        // Items per subscription the server allows, learnt when the first one fills up.
        let mut per_sub: Option<usize> = None;
        let mut refused: Vec<Sample> = Vec::new();
        let mut created = 0usize;
        let items = self.items.clone();
        let (mut next, mut size) = (0usize, ITEMS_PER_CALL);
        while next < items.len() {
            if need_sub {
                // Keep-alive after 10 empty publishes; the server drops the subscription after 3 missed keep-alives.
                let call = session.create_subscription(publishing, 30, 10, 0, 0, true, handler.clone());
                match within(limit, stop, call).await? {
                    Some(Ok(id)) => {
                        subs.push(id);
                        (in_sub, need_sub) = (0, false);
                    }
                    Some(Err(e)) if cannot_subscribe(e.status()) => {
                        let rest = items.len() - next;
                        warn!(source = self.ctx.id(), status = %e.status(), subscriptions = subs.len(), polled = rest, "opcua: the server takes no more subscriptions; polling the remaining nodes");
                        self.polled.extend_from_slice(&items[next..]);
                        break;
                    }
                    Some(Err(e)) => return Err(IngestError::Protocol(format!("CreateSubscription: {e}"))),
                    None => {
                        return Err(IngestError::Connection(format!("CreateSubscription: no answer within {limit:?}")))
                    }
                }
            }
            let sub = *subs.last().expect("a subscription");
            let room = per_sub.map_or(size, |p| size.min(p.saturating_sub(in_sub)));
            if room == 0 {
                need_sub = true;
                continue;
            }
            let chunk = &items[next..(next + room).min(items.len())];
            let requests: Vec<MonitoredItemCreateRequest> =
                chunk.iter().map(|it| self.request(it, &self.ctx.tags[it.tag])).collect();
            let call = session.create_monitored_items(sub, TimestampsToReturn::Both, requests);
            let results = match within(limit, stop, call).await? {
                Some(Ok(r)) => r,
                Some(Err(e))
                    if matches!(
                        e.status(),
                        StatusCode::BadTooManyMonitoredItems | StatusCode::BadTooManyOperations
                    ) =>
                {
                    if in_sub > 0 && e.status() == StatusCode::BadTooManyMonitoredItems {
                        // This subscription is full: the next chunk goes to a new one. The
                        // server's limit is at least what fitted; later subscriptions are cut to it.
                        debug!(source = self.ctx.id(), subscription = sub, items = in_sub, "opcua: subscription full");
                        per_sub.get_or_insert(in_sub);
                        need_sub = true;
                    } else if size > 1 {
                        size /= 2;
                    } else {
                        warn!(source = self.ctx.id(), status = %e.status(), polled = items.len() - next, "opcua: the server takes no more monitored items; polling the remaining nodes");
                        self.polled.extend_from_slice(&items[next..]);
                        break;
                    }
                    continue;
                }
                Some(Err(e)) if cannot_subscribe(e.status()) => {
                    self.polled.extend_from_slice(chunk);
                    next += chunk.len();
                    continue;
                }
                Some(Err(e)) => return Err(IngestError::Protocol(format!("CreateMonitoredItems: {e}"))),
                None => {
                    return Err(IngestError::Connection(format!("CreateMonitoredItems: no answer within {limit:?}")))
                }
            };
            next += chunk.len();
            in_sub += chunk.len();
            for (it, r) in chunk.iter().zip(results.iter()) {
                let code = r.result.status_code;
                if code.is_good() {
                    created += 1;
                    continue;
                }
                let tag = &self.ctx.tags[it.tag];
                if cannot_subscribe(code) {
                    info!(source = self.ctx.id(), tag = %tag.tag.name, node = %it.node, status = %code, "opcua: the server will not monitor this node; polling it");
                    self.polled.push(it.clone());
                    continue;
                }
                warn!(source = self.ctx.id(), tag = %tag.tag.name, node = %it.node, status = %code, "opcua: the server refused to monitor this node");
                self.ctx.health.error(format!("{}: {} ({}): {code}", tag.tag.name, it.node, code.bits()));
                refused.push(tag.bad(now_ns(), Quality::from_status(code.bits())));
            }
        }
        if self.cfg.events && subs.is_empty() && items.is_empty() {
            // A source for events only: one subscription to carry them.
            let call = session.create_subscription(publishing, 30, 10, 0, 0, true, handler.clone());
            match within(limit, stop, call).await? {
                Some(Ok(id)) => subs.push(id),
                Some(Err(e)) => return Err(IngestError::Protocol(format!("CreateSubscription: {e}"))),
                None => return Err(IngestError::Connection(format!("CreateSubscription: no answer within {limit:?}"))),
            }
        }
        if self.cfg.events {
            match subs.last() {
                Some(&sub) => self.subscribe_events(session, sub, stop).await?,
                None => warn!(source = self.ctx.id(), "opcua: no subscription for the server's events"),
            }
        }
        if !self.items.is_empty() && created == 0 && self.polled.is_empty() {
            return Err(IngestError::Protocol(format!(
                "the server refused every monitored item ({} tags), e.g. {}",
                self.items.len(),
                self.items[0].node
            )));
        }
        info!(
            source = self.ctx.id(),
            items = created,
            subscriptions = subs.len(),
            polled = self.polled.len(),
            refused = refused.len(),
            publishing_ms = publishing.as_millis() as u64,
            "opcua: monitoring"
        );
        if !refused.is_empty() && self.ctx.sink.send(refused).await.is_err() {
            return Err(IngestError::Shutdown);
        }
        Ok((!subs.is_empty()).then_some(subs.len() as u32))
    }

    /// A monitored item on the Server object's events (alarms and conditions
    /// included): its fields become events in the store.
    async fn subscribe_events(
        &mut self,
        session: &Session,
        sub: u32,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), IngestError> {
        let limit = self.cfg.connect_timeout.0;
        let select = EVENT_FIELDS
            .iter()
            .map(|f| {
                SimpleAttributeOperand::new(ObjectTypeId::BaseEventType, f, AttributeId::Value, NumericRange::None)
            })
            .collect();
        let filter = EventFilter { select_clauses: Some(select), where_clause: ContentFilter::default() };
        let request = MonitoredItemCreateRequest {
            item_to_monitor: ReadValueId {
                node_id: ObjectId::Server.into(),
                attribute_id: AttributeId::EventNotifier as u32,
                index_range: Default::default(),
                data_encoding: QualifiedName::null(),
            },
            monitoring_mode: MonitoringMode::Reporting,
            requested_parameters: MonitoringParameters {
                client_handle: EVENT_HANDLE,
                sampling_interval: 0.0,
                filter: ExtensionObject::from_message(filter),
                queue_size: 1000,
                discard_oldest: true,
            },
        };
        let call = session.create_monitored_items(sub, TimestampsToReturn::Both, vec![request]);
        match within(limit, stop, call).await? {
            Some(Ok(r)) if r.first().is_some_and(|r| r.result.status_code.is_good()) => {
                info!(source = self.ctx.id(), "opcua: subscribed to the server's events");
            }
            Some(Ok(r)) => {
                let code = r.first().map(|r| r.result.status_code).unwrap_or(StatusCode::BadUnexpectedError);
                warn!(source = self.ctx.id(), status = %code, "opcua: the server refused its event item");
                self.ctx.health.error(format!("events: {code}"));
            }
            Some(Err(e)) => {
                warn!(source = self.ctx.id(), error = %e, "opcua: the server refused its event item");
                self.ctx.health.error(format!("events: {e}"));
            }
            None => {
                return Err(IngestError::Connection(format!(
                    "CreateMonitoredItems (events): no answer within {limit:?}"
                )))
            }
        }
        Ok(())
    }

    /// The monitored item of a tag: the tag's sampling interval and deadband,
    /// else the source's.
    fn request(&self, it: &Item, tag: &BoundTag) -> MonitoredItemCreateRequest {
        let numeric = matches!(tag.tag.value_type, ValueKind::F64 | ValueKind::I64);
        let deadband = match (tag.tag.deadband_percent, tag.tag.deadband.or(self.cfg.deadband)) {
            (Some(p), _) if p > 0.0 => Some((DeadbandType::Percent, p)),
            (_, Some(d)) if d > 0.0 => Some((DeadbandType::Absolute, d)),
            _ => None,
        };
        let filter = match deadband {
            Some((kind, value)) if numeric => ExtensionObject::from_message(DataChangeFilter {
                trigger: DataChangeTrigger::StatusValue,
                deadband_type: kind as u32,
                deadband_value: value,
            }),
            _ => ExtensionObject::null(),
        };
        let sampling = tag.tag.sampling_interval.map_or(self.cfg.sampling_interval.0, |s| s.0);
        MonitoredItemCreateRequest {
            item_to_monitor: value_of(&it.node),
            monitoring_mode: MonitoringMode::Reporting,
            requested_parameters: MonitoringParameters {
                // Handle = tag index + 1 (0 would make the crate pick one).
                client_handle: it.tag as u32 + 1,
                sampling_interval: sampling.as_secs_f64() * 1000.0,
                filter,
                queue_size: self.cfg.queue_size,
                discard_oldest: true,
            },
        }
    }
}

/// The Value attribute of a node.
fn value_of(node: &NodeId) -> ReadValueId {
    ReadValueId {
        node_id: node.clone(),
        attribute_id: AttributeId::Value as u32,
        index_range: Default::default(),
        data_encoding: QualifiedName::null(),
    }
}

/// Status codes that say "this cannot be subscribed, but may be read":
/// the node is then polled.
fn cannot_subscribe(code: StatusCode) -> bool {
    [
        StatusCode::BadServiceUnsupported,
        StatusCode::BadNotSupported,
        StatusCode::BadNotImplemented,
        StatusCode::BadTooManySubscriptions,
        StatusCode::BadTooManyMonitoredItems,
        StatusCode::BadMonitoredItemFilterUnsupported,
        StatusCode::BadMonitoredItemFilterInvalid,
        StatusCode::BadFilterNotAllowed,
        StatusCode::BadDeadbandFilterInvalid,
    ]
    .contains(&code)
}

/// Opens a session to `cfg.endpoint` with the source's security and
/// identity: lists the endpoints, picks the configured policy and mode,
/// connects and waits until the session is active (bounded by
/// `connect_timeout`). Shared by the source driver and `linepilot discover`.
pub(crate) async fn open_session(
    client: &Client,
    cfg: &OpcUaSourceConfig,
    identity: &IdentityToken,
    pki: &Path,
    id: &str,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(Arc<Session>, EventLoop), IngestError> {
    let limit = cfg.connect_timeout.0;
    let url = cfg.endpoint.as_str();
    let (policy, mode) = security(&cfg.security);

    let endpoints = match within(limit, stop, client.get_server_endpoints_from_url(url)).await? {
        Some(Ok(e)) => e,
        Some(Err(e)) => return Err(IngestError::Connection(format!("{url}: cannot list endpoints: {e}"))),
        None => return Err(IngestError::Connection(format!("{url}: no answer to GetEndpoints within {limit:?}"))),
    };
    let endpoint = Client::find_matching_endpoint(&endpoints, url, policy, mode).ok_or_else(|| {
        let offered: Vec<String> = endpoints
            .iter()
            .map(|e| format!("{}/{:?}", policy_name(e.security_policy_uri.as_ref()), e.security_mode))
            .collect();
        IngestError::Config(format!(
            "{url} offers no endpoint with policy {policy} and mode {mode:?} (it offers {})",
            offered.join(", ")
        ))
    })?;
    let cert_file = server_cert_file(&endpoint);
    let (session, event_loop) = client
        .session_builder()
        .connect_to_endpoint_directly(endpoint)
        .and_then(|b| b.user_identity_token(identity.clone()).build(client.certificate_store().clone()))
        .map_err(|e| IngestError::Connection(format!("{url}: {e}")))?;
    // Reconnection is ours (see the module doc): the event loop ends when the link drops.
    session.disable_reconnects();
    let mut events = EventLoop(event_loop.spawn());

    // A refused login or certificate ends the event loop while
    // `wait_for_connection` would wait forever: race them, with a limit.
    tokio::select! {
        connected = session.wait_for_connection() => {
            if !connected {
                return Err(IngestError::Connection(format!("{url}: session closed while connecting")));
            }
        }
        end = &mut events.0 => return Err(connect_error(cfg, pki, id, end, cert_file.as_deref())),
        _ = tokio::time::sleep(limit) => {
            return Err(IngestError::Connection(format!(
                "{url}: no session within {limit:?} (secure channel or login does not complete)"
            )));
        }
        _ = stopped(stop) => return Err(IngestError::Shutdown),
    }
    info!(source = id, endpoint = url, policy = %policy, mode = ?mode, "opcua: session active");
    Ok((session, events))
}

/// Why connecting failed, with the fix for an untrusted certificate.
fn connect_error(
    cfg: &OpcUaSourceConfig,
    pki: &Path,
    id: &str,
    end: Result<StatusCode, tokio::task::JoinError>,
    cert_file: Option<&str>,
) -> IngestError {
    let url = &cfg.endpoint;
    let code = match end {
        Ok(c) => c,
        Err(e) => return IngestError::Connection(format!("{url}: event loop failed: {e}")),
    };
    if code == StatusCode::BadCertificateUntrusted || code == StatusCode::BadSecurityChecksFailed {
        let (policy, _) = security(&cfg.security);
        if policy != UaPolicy::None {
            let hint = match cert_file {
                Some(name) => format!(
                    "the server's certificate is not trusted: move `{}` to `{}` (or set trust_server_cert = true)",
                    pki.join("rejected").join(name).display(),
                    pki.join("trusted").join(name).display()
                ),
                None => format!(
                    "the server's certificate is not trusted: move it from `{}` to `{}` (or set trust_server_cert = true)",
                    pki.join("rejected").display(),
                    pki.join("trusted").display()
                ),
            };
            warn!(source = id, endpoint = %url, status = %code, "opcua: {hint}");
            return IngestError::Connection(format!("{url}: {code}: {hint}"));
        }
    }
    let login = matches!(
        code,
        StatusCode::BadUserAccessDenied | StatusCode::BadIdentityTokenRejected | StatusCode::BadIdentityTokenInvalid
    );
    if login {
        let who = match (&cfg.security.user, &cfg.security.user_cert) {
            (Some(u), _) => format!("user `{u}`"),
            (None, Some(c)) => format!("the certificate `{}`", c.display()),
            (None, None) => "anonymous".into(),
        };
        return IngestError::Connection(format!("{url}: login as {who} refused: {code}"));
    }
    IngestError::Connection(format!("{url}: cannot connect: {code}"))
}

/// A subscription's callback: a notification message becomes one batch.
#[derive(Clone)]
struct Notify {
    source: String,
    tags: Arc<Vec<BoundTag>>,
    tx: mpsc::Sender<Note>,
    health: Arc<super::SourceHealth>,
}

impl OnSubscriptionNotificationCore for Notify {
    fn on_subscription_notification(&mut self, notification: NotificationMessage, _items: MonitoredItemMap<'_>) {
        let Some(data) = notification.notification_data else { return };
        let now = now_ns();
        let mut samples = Vec::new();
        for obj in data {
            match_extension_object_owned!(obj,
                v: DataChangeNotification => {
                    for n in v.monitored_items.into_iter().flatten() {
                        let Some(tag) = (n.client_handle as usize).checked_sub(1).and_then(|i| self.tags.get(i)) else {
                            warn!(handle = n.client_handle, "opcua: data change for an unknown monitored item");
                            continue;
                        };
                        samples.push(to_sample(tag, &n.value, now, &self.health));
                    }
                },
                v: StatusChangeNotification => {
                    if !v.status.is_good() {
                        let _ = self.tx.try_send(Note::Status(v.status));
                    }
                },
                v: EventNotificationList => {
                    let events: Vec<Event> = v
                        .events
                        .into_iter()
                        .flatten()
                        .filter(|e| e.client_handle == EVENT_HANDLE)
                        .map(|e| server_event(&self.source, e.event_fields.unwrap_or_default(), now))
                        .collect();
                    if !events.is_empty() && self.tx.try_send(Note::Events(events)).is_err() {
                        self.health.count_dropped(1);
                    }
                }
            )
        }
        if samples.is_empty() {
            return;
        }
        let n = samples.len() as u64;
        if self.tx.try_send(Note::Samples(samples)).is_err() {
            self.health.count_dropped(n);
        }
    }
}

/// The fields selected from each event, in this order.
const EVENT_FIELDS: [&str; 6] = ["EventId", "EventType", "SourceName", "Time", "Message", "Severity"];
/// The client handle of the event item (tag items use tag index + 1).
const EVENT_HANDLE: u32 = u32::MAX;

/// An event of the server as an event of the store: its time, message and
/// severity (OPC UA's 1..1000 scale is the store's), the rest as details.
fn server_event(source: &str, fields: Vec<Variant>, now: Timestamp) -> Event {
    let text = |v: Option<&Variant>| match v {
        Some(Variant::LocalizedText(t)) => t.text.as_ref().to_string(),
        Some(Variant::String(s)) => s.as_ref().to_string(),
        Some(Variant::Empty) | None => String::new(),
        Some(other) => other.to_string(),
    };
    let ts = match fields.get(3) {
        Some(Variant::DateTime(t)) => convert::timestamp(t).unwrap_or(now),
        _ => now,
    };
    let severity = match fields.get(5) {
        Some(Variant::UInt16(s)) => (*s).min(1000),
        _ => 0,
    };
    let event_id = match fields.first() {
        Some(Variant::ByteString(b)) => b.as_base64(),
        _ => String::new(),
    };
    let origin = text(fields.get(2));
    let message = text(fields.get(4));
    Event {
        id: 0,
        ts,
        asset: None,
        kind: EventKind::Source,
        severity,
        message: if origin.is_empty() { message.clone() } else { format!("{origin}: {message}") },
        details: serde_json::json!({
            "source": source,
            "event_id": event_id,
            "event_type": text(fields.get(1)),
            "source_name": origin,
            "message": message,
        }),
    }
}

/// A data change as a sample of `tag`: its value by type, the source
/// timestamp and the status code as quality. A value that cannot be
/// represented is a `BAD_DECODING` sample (counted as malformed).
fn to_sample(tag: &BoundTag, dv: &opcua::types::DataValue, now: Timestamp, health: &super::SourceHealth) -> Sample {
    let ts = sample_time(dv, now);
    let q = convert::quality(dv);
    match dv.value.as_ref().and_then(value) {
        Some(v) => tag.sample(ts, v, q),
        None if !q.is_good() => tag.bad(ts, q),
        None => {
            health.count_malformed();
            debug!(tag = %tag.tag.name, value = ?dv.value, "opcua: value of an unsupported type");
            tag.bad(ts, Quality::BAD_DECODING)
        }
    }
}

/// The tags of the source with an OPC UA address.
fn items(ctx: &SourceCtx) -> Arc<Vec<Item>> {
    let mut out = Vec::new();
    for (i, t) in ctx.tags.iter().enumerate() {
        match &t.tag.address {
            Some(TagAddress::OpcUa(id)) => out.push(Item { tag: i, node: node_id(id) }),
            _ => warn!(source = ctx.id(), tag = %t.tag.name, "opcua: tag has no NodeId address; not read"),
        }
    }
    Arc::new(out)
}

/// The session's identity: an X.509 user certificate, the user with the
/// password from `password_env` / `password_file`, or anonymous.
pub(crate) fn identity(sec: &OpcUaSecurity) -> Result<IdentityToken, IngestError> {
    if let (Some(cert), Some(key)) = (&sec.user_cert, &sec.user_key) {
        return IdentityToken::new_x509_path(cert, key).map_err(|e| {
            IngestError::Config(format!("security.user_cert `{}` / user_key `{}`: {e}", cert.display(), key.display()))
        });
    }
    let Some(user) = &sec.user else { return Ok(IdentityToken::Anonymous) };
    let password = if let Some(var) = &sec.password_env {
        std::env::var(var).map_err(|_| {
            IngestError::Config(format!("security.password_env: environment variable `{var}` is not set"))
        })?
    } else if let Some(path) = &sec.password_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| IngestError::Config(format!("security.password_file `{}`: {e}", path.display())))?;
        text.trim_end_matches(['\r', '\n']).to_string()
    } else {
        return Err(IngestError::Config("security.user needs password_env or password_file".into()));
    };
    Ok(IdentityToken::new_user_name(user.clone(), password))
}

fn security(sec: &OpcUaSecurity) -> (UaPolicy, MessageSecurityMode) {
    let policy = match sec.policy {
        SecurityPolicy::None => UaPolicy::None,
        SecurityPolicy::Basic256Sha256 => UaPolicy::Basic256Sha256,
    };
    let mode = match sec.mode {
        SecurityMode::None => MessageSecurityMode::None,
        SecurityMode::Sign => MessageSecurityMode::Sign,
        SecurityMode::SignAndEncrypt => MessageSecurityMode::SignAndEncrypt,
    };
    (policy, mode)
}

fn policy_name(uri: &str) -> &str {
    uri.rsplit_once('#').map(|(_, n)| n).unwrap_or(uri)
}

/// The name the server's certificate gets in the PKI directories.
fn server_cert_file(endpoint: &EndpointDescription) -> Option<String> {
    if endpoint.server_certificate.is_null_or_empty() {
        return None;
    }
    X509::from_byte_string(&endpoint.server_certificate).ok().map(|c| CertificateStore::cert_file_name(&c))
}

/// The client, with its certificate created on first start (off the async
/// workers: an RSA key takes a while).
pub(crate) async fn build_client(cfg: &OpcUaSourceConfig, pki: &Path, id: &str) -> Result<Client, IngestError> {
    std::fs::create_dir_all(pki)
        .map_err(|e| IngestError::Config(format!("cannot create the PKI directory `{}`: {e}", pki.display())))?;
    let host = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "localhost".into());
    let builder = ClientBuilder::new()
        .application_name("linepilot")
        .application_uri(format!("urn:linepilot:{host}"))
        .product_uri("urn:linepilot")
        .pki_dir(pki)
        .create_sample_keypair(true)
        .trust_server_certs(cfg.trust_server_cert)
        .verify_server_certs(true)
        .session_retry_limit(0)
        .session_name(format!("linepilot {id}"))
        // A publish of a big subscription carries more than the crate's defaults
        // (1000 array entries, 320 KiB): 1000 items with 2 queued changes each is
        // already 2000 notifications. Allow sessions with 100k+ items.
        .max_array_length(1_000_000)
        .max_message_size(64 << 20)
        .max_chunk_count(1024)
        .keep_alive_interval(Duration::from_secs(5))
        .max_failed_keep_alive_count(3)
        .request_timeout(cfg.connect_timeout.0.max(Duration::from_secs(5)));
    let pki_shown = pki.display().to_string();
    tokio::task::spawn_blocking(move || builder.client())
        .await
        .map_err(|e| IngestError::Config(format!("building the OPC UA client failed: {e}")))?
        .map_err(|errs| IngestError::Config(format!("OPC UA client configuration ({pki_shown}): {}", errs.join("; "))))
}

/// Runs `fut` for at most `limit`: Ok(Some(output)), Ok(None) on timeout,
/// Err(Shutdown) when the daemon stops first.
pub(crate) async fn within<F: std::future::Future>(
    limit: Duration,
    stop: &mut tokio::sync::watch::Receiver<bool>,
    fut: F,
) -> Result<Option<F::Output>, IngestError> {
    tokio::select! {
        r = tokio::time::timeout(limit, fut) => Ok(r.ok()),
        _ = stopped(stop) => Err(IngestError::Shutdown),
    }
}

/// Closes the session politely (bounded: the server may be gone).
pub(crate) async fn disconnect(session: &Session) {
    let _ = tokio::time::timeout(Duration::from_secs(2), session.disconnect()).await;
}

/// Resolves once the daemon stops (or its stop signal is gone).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
