//! The MQTT source: one MQTT 3.1.1 or 5 connection (rumqttc) to a broker, a
//! subscription per distinct topic filter of the source's tags, and the
//! payloads turned into samples:
//!
//! - plain payloads (`21.5`, `true`, text) when the tag has no `json_path`;
//! - topic labels: a tag whose filter has `+` levels may name them in
//!   `labels = { machine = "{3}" }`; each topic then feeds its own series
//!   (the tag's name with those labels), made in the store on first sight;
//! - JSON with a path to the value (`$.rms`) and optionally to the source
//!   timestamp (`ts_path`: epoch s/ms/µs/ns or RFC 3339); without one the
//!   receive time is the sample's time;
//! - Sparkplug B (`metric = "..."` on a `spBv1.0/<group>/+/<node>[/<device>]`
//!   topic): see [`sparkplug`].
//!
//! A malformed payload is counted in the source's health (`malformed`), its
//! tags get a `BAD_DECODING` sample, and it is logged at most once per topic
//! per minute; the source carries on. A lost connection marks every tag
//! `BAD_COMMS` and reconnects with [`Backoff`]; after a reconnect the filters
//! are subscribed again unless the broker kept a persistent session
//! (`clean_session = false`), so no filter is ever subscribed twice.
//!
//! `mqtts://` connects over TLS (see [`tls`]): the broker's certificate is
//! checked against `ca_file` or the system's roots, and `client_cert` /
//! `client_key` authenticate the gateway. `protocol = "5"` speaks MQTT 5
//! instead of 3.1.1 (see [`link`]).

pub mod decode;
pub mod link;
pub mod sparkplug;
mod tls;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use rumqttc::{TlsConfiguration, Transport};
use tracing::{debug, info, warn};

use super::{Backoff, BoundTag, IngestError, SourceCtx, SourceState};
use crate::config::{MqttAddress, MqttSourceConfig, SourceConfig, TagAddress};
use crate::domain::{now_ns, Quality, Sample, SeriesId, SeriesKey, Timestamp, ValueKind};
use decode::{DecodeError, Parsed};
use link::{Link, LinkEvent, LinkOptions};
use sparkplug::{SpTopic, Sparkplug};

/// Largest MQTT packet accepted or sent.
const MAX_PACKET: usize = 256 * 1024;
/// Capacity of the client's request channel.
const REQUESTS: usize = 64;
/// A topic's malformed payloads are logged at most this often.
const MALFORMED_LOG_EVERY: Duration = Duration::from_secs(60);
/// Topics whose matching tags are remembered.
const ROUTE_CACHE: usize = 10_000;

/// Whether `topic` (a published topic name) matches `filter` (MQTT 3.1.1 §4.7).
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    // Wildcards at the first level do not match topics starting with `$` (`$SYS/...`).
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true, // also the parent level: `a/#` matches `a`
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The source's tags by topic filter, and the filters to subscribe.
pub struct Routes {
    /// (tag index, address) of tags read from JSON or plain payloads.
    plain: Vec<(usize, MqttAddress)>,
    /// The value kind of each entry of `plain`.
    kinds: Vec<ValueKind>,
    /// The distinct filters, sorted.
    filters: Vec<String>,
    /// Topic → indices into `plain` (bounded).
    cache: HashMap<String, Vec<usize>>,
    /// (index into `plain`, topic) → the labelled series of a tag with topic labels.
    labelled: HashMap<(usize, String), SeriesId>,
}

impl Routes {
    /// Splits the tags into plain/JSON and Sparkplug ones. Tags without an MQTT address are skipped (the
    /// config loader does not let them through).
    pub fn new(tags: &[BoundTag]) -> (Routes, Sparkplug) {
        let mut plain = Vec::new();
        let mut kinds = Vec::new();
        let mut sp = Vec::new();
        let mut filters = BTreeSet::new();
        for (i, t) in tags.iter().enumerate() {
            let Some(TagAddress::Mqtt(a)) = &t.tag.address else { continue };
            filters.insert(a.topic.clone());
            match &a.metric {
                Some(m) => {
                    // Node births and deaths arrive on the node's topics: `spBv1.0/<group>/+/<node>`.
                    let node: Vec<&str> = a.topic.split('/').take(4).collect();
                    filters.insert(node.join("/"));
                    sp.push((i, a.topic.as_str(), m.as_str()));
                }
                None => {
                    plain.push((i, a.clone()));
                    kinds.push(t.tag.value_type);
                }
            }
        }
        let sparkplug = Sparkplug::new(sp);
        let routes = Routes {
            plain,
            kinds,
            filters: filters.into_iter().collect(),
            cache: HashMap::new(),
            labelled: HashMap::new(),
        };
        (routes, sparkplug)
    }

    /// The distinct topic filters, each once.
    pub fn filters(&self) -> &[String] {
        &self.filters
    }

    /// The series of plain tag `k` for `topic` when its address has topic
    /// labels (tag name + labels filled from the topic), made in the store on
    /// first sight; `None` for a tag without labels.
    fn labelled_series(
        &mut self,
        store: &crate::store::Store,
        k: usize,
        tag: &BoundTag,
        topic: &str,
    ) -> Option<Result<SeriesId, crate::store::StoreError>> {
        let addr = &self.plain[k].1;
        if addr.labels.is_empty() {
            return None;
        }
        if let Some(id) = self.labelled.get(&(k, topic.to_string())) {
            return Some(Ok(*id));
        }
        let levels: Vec<&str> = topic.split('/').collect();
        let labels = addr.labels.iter().map(|(key, t)| (key.clone(), t.fill(&levels))).collect();
        let key = SeriesKey::with_labels(tag.tag.name.clone(), labels);
        let id = match store.resolve(&[(key, tag.tag.value_type)]) {
            Ok(ids) => ids[0],
            Err(e) => return Some(Err(e)),
        };
        if self.labelled.len() >= ROUTE_CACHE {
            self.labelled.clear();
        }
        self.labelled.insert((k, topic.to_string()), id);
        Some(Ok(id))
    }

    /// Every labelled series seen so far (they get the comms-loss marks too).
    fn labelled(&self) -> Vec<(usize, SeriesId)> {
        self.labelled.iter().map(|((k, _), id)| (self.plain[*k].0, *id)).collect()
    }

    /// Indices into the plain tags whose filter matches `topic`.
    fn matching(&mut self, topic: &str) -> Vec<usize> {
        if let Some(m) = self.cache.get(topic) {
            return m.clone();
        }
        let m: Vec<usize> = (0..self.plain.len()).filter(|&k| topic_matches(&self.plain[k].1.topic, topic)).collect();
        if self.cache.len() >= ROUTE_CACHE {
            self.cache.clear();
        }
        self.cache.insert(topic.to_string(), m.clone());
        m
    }
}

/// What one plain/JSON message yields.
#[derive(Debug, Default)]
pub struct Decoded {
    /// (tag index, sample) pairs.
    pub samples: Vec<(usize, Timestamp, Result<crate::domain::Value, DecodeError>)>,
}

/// Decodes a message for the plain/JSON tags `matching` (indices into `routes.plain`).
fn decode_plain(routes: &Routes, matching: &[usize], payload: &[u8], recv: Timestamp) -> Decoded {
    let needs_json =
        matching.iter().any(|&k| routes.plain[k].1.json_path.is_some() || routes.plain[k].1.ts_path.is_some());
    let parsed = Parsed::new(payload, needs_json);
    let mut out = Decoded::default();
    for &k in matching {
        let (tag, addr) = &routes.plain[k];
        let kind = addr_kind(routes, k);
        let r = match &parsed {
            Err(e) => (recv, Err(e.clone())),
            Ok(p) => {
                let ts = match (&addr.ts_path, p) {
                    (Some(tp), Parsed::Json(doc)) => decode::timestamp(doc, tp),
                    _ => Ok(recv),
                };
                match ts {
                    Err(e) => (recv, Err(e)),
                    Ok(ts) => (ts, decode::value(p, payload, addr.json_path.as_ref(), kind)),
                }
            }
        };
        out.samples.push((*tag, r.0, r.1));
    }
    out
}

fn addr_kind(routes: &Routes, k: usize) -> ValueKind {
    routes.kinds.get(k).copied().unwrap_or(ValueKind::F64)
}

/// Runs the MQTT source until shutdown (Ok) or a configuration problem (Err).
/// A client for the broker of MQTT source `cfg` (its URL, credentials, TLS and
/// protocol version) with the given client id; it connects, and reconnects, as its
/// event loop is polled. Returns it with the broker's host and port.
fn link_for(cfg: &MqttSourceConfig, client_id: &str) -> Result<(Link, String, u16), IngestError> {
    let (host, port, tls) = parse_url(&cfg.url)?;
    let password = read_password(cfg)?;
    let transport = if tls {
        let config = tls::client_config(cfg)?;
        Some(Transport::tls_with_config(TlsConfiguration::Rustls(std::sync::Arc::new(config))))
    } else {
        None
    };
    let options =
        LinkOptions { client_id, host: &host, port, password, transport, max_packet: MAX_PACKET, requests: REQUESTS };
    Ok((Link::new(cfg, options), host, port))
}

/// A publishing client (clean session) for the broker of MQTT source `cfg`, with the
/// client id `<client id>-<suffix>`.
pub fn publisher(cfg: &MqttSourceConfig, suffix: &str) -> Result<Link, IngestError> {
    let client_id = format!("{}-{suffix}", cfg.client_id.clone().unwrap_or_else(|| format!("linepilot-{}", cfg.id)));
    let mut publishing = cfg.clone();
    publishing.clean_session = true;
    Ok(link_for(&publishing, &client_id)?.0)
}

pub async fn run(ctx: SourceCtx) -> Result<(), IngestError> {
    let SourceConfig::Mqtt(cfg) = &ctx.config else {
        return Err(IngestError::Config("not an MQTT source".into()));
    };
    let cfg = cfg.clone();
    let mut shutdown = ctx.shutdown.clone();
    let (mut routes, mut sp) = Routes::new(&ctx.tags);
    let client_id = cfg.client_id.clone().unwrap_or_else(|| format!("linepilot-{}", cfg.id));
    let (mut link, host, port) = link_for(&cfg, &client_id)?;
    let filters: Vec<String> = routes.filters().to_vec();
    info!(source = ctx.id(), %host, port, %client_id, protocol = ?cfg.protocol, filters = filters.len(), "MQTT source starting");

    let mut backoff = Backoff::new(Duration::from_secs(30));
    let mut connected = false;
    let mut limiter = LogLimiter::default();
    loop {
        let ev = tokio::select! {
            ev = link.poll() => ev,
            _ = shutdown.wait_for(|s| *s) => {
                link.disconnect();
                return Ok(());
            }
        };
        match ev {
            Ok(LinkEvent::Connected { session_present }) => {
                connected = true;
                backoff.reset();
                ctx.comms_restored(now_ns());
                // Births and deaths may have been missed while away.
                sp.reset();
                if !must_subscribe(session_present, cfg.clean_session) {
                    debug!(source = ctx.id(), "MQTT session resumed; subscriptions kept by the broker");
                } else if !filters.is_empty() {
                    if let Err(e) = link.subscribe(&filters) {
                        // The request channel is drained by this loop; full means something is badly stuck.
                        return Err(IngestError::Connection(format!("cannot subscribe: {e}")));
                    }
                }
                info!(source = ctx.id(), session_present, "MQTT connected");
            }
            Ok(LinkEvent::Subscribed { refused }) => {
                if refused > 0 {
                    let msg = format!("the broker refused {refused} of the subscriptions");
                    warn!(source = ctx.id(), refused, "MQTT subscription refused");
                    ctx.health.error(msg);
                }
            }
            Ok(LinkEvent::Message { topic, payload }) => {
                let recv = now_ns();
                let samples = handle_message(&ctx, &mut routes, &mut sp, &link, &mut limiter, &topic, &payload, recv);
                if ctx.sink.send(samples).await.is_err() {
                    return Err(IngestError::Shutdown);
                }
            }
            Ok(LinkEvent::Other) => {}
            Err(reason) => {
                if connected {
                    connected = false;
                    ctx.health.count_reconnect();
                    warn!(source = ctx.id(), error = %reason, "MQTT connection lost; reconnecting");
                    let at = now_ns();
                    ctx.comms_lost(at, Quality::BAD_COMMS, &reason).await;
                    // The series made from topic labels show the gap too.
                    let gap: Vec<Sample> = routes
                        .labelled()
                        .into_iter()
                        .map(|(i, id)| Sample { series: id, ..ctx.tags[i].bad(at, Quality::BAD_COMMS) })
                        .collect();
                    if ctx.sink.send(gap).await.is_err() {
                        return Err(IngestError::Shutdown);
                    }
                } else {
                    debug!(source = ctx.id(), error = %reason, "MQTT connection failed");
                    ctx.health.set_state(SourceState::Down, Some(reason));
                }
                let delay = backoff.next_delay();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.wait_for(|s| *s) => return Ok(()),
                }
            }
        }
    }
}

/// Whether the filters are to be subscribed after a CONNACK: always in a clean
/// session; in a persistent one only when the broker did not keep it (so a
/// resumed session never gets a second, duplicate subscription).
fn must_subscribe(session_present: bool, clean_session: bool) -> bool {
    clean_session || !session_present
}

/// Turns one incoming message into samples; counts and logs what is malformed.
#[allow(clippy::too_many_arguments)]
fn handle_message(
    ctx: &SourceCtx,
    routes: &mut Routes,
    sp: &mut Sparkplug,
    link: &Link,
    limiter: &mut LogLimiter,
    topic: &str,
    payload: &[u8],
    recv: Timestamp,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut problem: Option<String> = None;
    if !sp.is_empty() {
        if let Some(t) = SpTopic::parse(topic) {
            let out = sp.handle(&t, payload, recv);
            for s in out.samples {
                let tag = &ctx.tags[s.tag];
                samples.push(match s.value {
                    Some(v) => tag.sample(s.ts, v, s.quality),
                    None => tag.bad(s.ts, s.quality),
                });
            }
            if let Some((topic, payload)) = out.rebirth {
                info!(source = ctx.id(), %topic, "Sparkplug: unknown alias or node; requesting a rebirth");
                if let Err(e) = link.publish(topic, payload) {
                    warn!(source = ctx.id(), error = %e, "cannot publish the rebirth request");
                    sp.allow_rebirth_requests();
                }
            }
            problem = out.malformed;
        }
    }
    let matching = routes.matching(topic);
    if !matching.is_empty() {
        let decoded = decode_plain(routes, &matching, payload, recv);
        // One decoded sample per matching tag, in order.
        for (&k, (i, ts, r)) in matching.iter().zip(decoded.samples) {
            let tag = &ctx.tags[i];
            let mut sample = match r {
                Ok(v) => tag.sample(ts, v, Quality::GOOD),
                Err(e) => {
                    problem.get_or_insert_with(|| format!("tag {}: {e}", tag.tag.name));
                    tag.bad(ts, Quality::BAD_DECODING)
                }
            };
            match routes.labelled_series(&ctx.store, k, tag, topic) {
                None => {}
                Some(Ok(id)) => sample.series = id,
                Some(Err(e)) => {
                    warn!(source = ctx.id(), tag = %tag.tag.name, %topic, error = %e, "cannot make the labelled series");
                    ctx.health.error(format!("{} on {topic}: {e}", tag.tag.name));
                    continue;
                }
            }
            samples.push(sample);
        }
    }
    if let Some(why) = problem {
        ctx.health.count_malformed();
        if let Some(suppressed) = limiter.allow(topic) {
            warn!(source = ctx.id(), %topic, error = %why, suppressed, "malformed MQTT payload");
        }
    }
    samples
}

/// At most one log line per topic per minute.
#[derive(Default)]
struct LogLimiter {
    last: HashMap<String, (Instant, u64)>,
}

impl LogLimiter {
    /// `Some(messages suppressed since the last line)` when this one may be logged.
    fn allow(&mut self, topic: &str) -> Option<u64> {
        let now = Instant::now();
        if self.last.len() > ROUTE_CACHE {
            self.last.retain(|_, (t, _)| now.duration_since(*t) < MALFORMED_LOG_EVERY);
        }
        match self.last.get_mut(topic) {
            Some((t, n)) if now.duration_since(*t) < MALFORMED_LOG_EVERY => {
                *n += 1;
                None
            }
            Some((t, n)) => {
                let suppressed = *n;
                *t = now;
                *n = 0;
                Some(suppressed)
            }
            None => {
                self.last.insert(topic.to_string(), (now, 0));
                Some(0)
            }
        }
    }
}

/// `mqtt://host[:port]` / `mqtts://host[:port]` → host, port, TLS.
fn parse_url(url: &str) -> Result<(String, u16, bool), IngestError> {
    let bad = || IngestError::Config(format!("bad MQTT url `{url}`"));
    let (tls, rest, default) = if let Some(r) = url.strip_prefix("mqtts://") {
        (true, r, 8883)
    } else if let Some(r) = url.strip_prefix("mqtt://") {
        (false, r, 1883)
    } else {
        return Err(bad());
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, tail) = v6.split_once(']').ok_or_else(bad)?;
        (h, tail.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().map_err(|_| bad())?,
        None => default,
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_string(), port, tls))
}

/// The password from `password_env` or `password_file` (trailing newline trimmed).
fn read_password(cfg: &MqttSourceConfig) -> Result<Option<String>, IngestError> {
    if let Some(var) = &cfg.password_env {
        return std::env::var(var)
            .map(Some)
            .map_err(|_| IngestError::Config(format!("environment variable `{var}` (password_env) is not set")));
    }
    if let Some(path) = &cfg.password_file {
        return std::fs::read_to_string(path)
            .map(|s| Some(s.trim_end_matches(['\r', '\n']).to_string()))
            .map_err(|e| IngestError::Config(format!("cannot read password_file {}: {e}", path.display())));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        for (f, t) in [
            ("a/b", "a/b"),
            ("a/+", "a/b"),
            ("+/+", "a/b"),
            ("a/#", "a/b/c"),
            ("a/#", "a"),
            ("#", "a/b"),
            ("plant/line1/+/vib_de", "plant/line1/filler/vib_de"),
            ("+/b", "/b"),
            ("a//c", "a//c"),
        ] {
            assert!(topic_matches(f, t), "{f} should match {t}");
        }
        for (f, t) in [
            ("a/b", "a/c"),
            ("a/+", "a/b/c"),
            ("a/+", "a"),
            ("a/b/c", "a/b"),
            ("#", "$SYS/x"),
            ("+/x", "$SYS/x"),
            ("plant/line1/+/vib_de", "plant/line1/filler/vib_nde"),
        ] {
            assert!(!topic_matches(f, t), "{f} should not match {t}");
        }
        assert!(topic_matches("$SYS/#", "$SYS/x"));
    }

    fn tag(i: u32, topic: &str, json_path: Option<&str>, metric: Option<&str>, kind: ValueKind) -> BoundTag {
        BoundTag {
            tag: crate::config::TagConfig {
                name: format!("t{i}"),
                asset: "a".into(),
                source: Some("mq".into()),
                address: Some(TagAddress::Mqtt(MqttAddress {
                    topic: topic.into(),
                    json_path: json_path.map(|p| p.parse().expect("path")),
                    ts_path: json_path.map(|_| "$.ts".parse().expect("path")),
                    metric: metric.map(Into::into),
                    labels: Vec::new(),
                })),
                unit: String::new(),
                description: String::new(),
                value_type: kind,
                limits: None,
                rate_of_change: None,
                flatline: None,
                comms_loss: None,
                fault_code: None,
                states: None,
                deadband: None,
                deadband_percent: None,
                sampling_interval: None,
            },
            series: crate::domain::SeriesId(i),
        }
    }

    #[test]
    fn routes_subscribe_each_filter_once() {
        let tags = vec![
            tag(0, "plant/line1/+/vib_de", Some("$.rms"), None, ValueKind::F64),
            tag(1, "plant/line1/+/vib_de", Some("$.peak"), None, ValueKind::F64),
            tag(2, "plant/line1/filler/state", None, None, ValueKind::Str),
            tag(3, "spBv1.0/line1/+/energy/filler", None, Some("Power"), ValueKind::F64),
            tag(4, "spBv1.0/line1/+/energy/filler", None, Some("Energy"), ValueKind::F64),
            tag(5, "spBv1.0/line1/+/energy/capper", None, Some("Power"), ValueKind::F64),
        ];
        let (mut routes, sp) = Routes::new(&tags);
        assert!(!sp.is_empty());
        assert_eq!(
            routes.filters(),
            &[
                "plant/line1/+/vib_de",
                "plant/line1/filler/state",
                "spBv1.0/line1/+/energy",
                "spBv1.0/line1/+/energy/capper",
                "spBv1.0/line1/+/energy/filler",
            ]
        );
        assert_eq!(routes.matching("plant/line1/washer/vib_de"), vec![0, 1]);
        assert_eq!(routes.matching("plant/line1/filler/state"), vec![2]);
        assert!(routes.matching("plant/line1/filler/vib_nde").is_empty());
        // Sparkplug tags are not plain tags.
        assert!(routes.matching("spBv1.0/line1/DDATA/energy/filler").is_empty());

        let m = routes.matching("plant/line1/washer/vib_de");
        let d = decode_plain(&routes, &m, br#"{"ts":"2024-01-01T00:00:10.000Z","rms":1.5}"#, 7);
        assert_eq!(d.samples.len(), 2);
        assert_eq!(d.samples[0].0, 0);
        assert_eq!(d.samples[0].1, 1_704_067_210_000_000_000);
        assert_eq!(d.samples[0].2, Ok(crate::domain::Value::F64(1.5)));
        assert!(matches!(d.samples[1].2, Err(DecodeError::Missing(_))));
        let d = decode_plain(&routes, &[2], b"Running", 7);
        assert_eq!(d.samples[0], (2, 7, Ok(crate::domain::Value::Str("Running".into()))));
    }

    #[test]
    fn urls() {
        assert_eq!(parse_url("mqtt://127.0.0.1:1884").ok(), Some(("127.0.0.1".into(), 1884, false)));
        assert_eq!(parse_url("mqtts://broker").ok(), Some(("broker".into(), 8883, true)));
        assert_eq!(parse_url("mqtt://[::1]:2000").ok(), Some(("::1".into(), 2000, false)));
        assert!(parse_url("tcp://x").is_err());
        assert!(parse_url("mqtt://:1").is_err());
    }

    #[test]
    fn subscribe_after_connack() {
        assert!(must_subscribe(false, true));
        assert!(must_subscribe(true, true)); // a broker that wrongly reports a session for a clean one
        assert!(must_subscribe(false, false)); // persistent, but the broker lost it (restart)
        assert!(!must_subscribe(true, false)); // resumed: the broker has the subscriptions
    }

    #[test]
    fn limiter() {
        let mut l = LogLimiter::default();
        assert_eq!(l.allow("a"), Some(0));
        assert_eq!(l.allow("a"), None);
        assert_eq!(l.allow("b"), Some(0));
    }
}
