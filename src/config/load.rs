//! The loader: parse once into a spanned tree, deserialize each section and each
//! `[[...]]` entry on its own, then check names, references and addresses, keeping
//! every problem with the byte span of the text it concerns.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::address::{ModbusAddressFields, ModbusDataType, MqttAddressFields, OpcUaNodeId, TagAddress};
use super::alarms::{check_pattern, AlarmTemplateConfig, AlarmsConfig, TagAlarmSettings};
use super::calendar::{PlannedStopConfig, ShiftConfig};
use super::diagnostic::{ConfigErrors, Sink};
use super::knowledge::{tag_matches, AgentsConfig, AssetKindConfig};
use super::plant::{check_id, check_tag_name, AreaConfig, AssetConfig, LineConfig, SiteConfig, TagConfig};
use super::source::{ModbusSourceConfig, MqttSourceConfig, OpcUaSourceConfig, SourceConfig, SourceKind};
use super::Config;
use crate::domain::ValueKind;
use crate::llm::config::LlmConfig;

type Val<'t> = Spanned<DeValue<'t>>;

/// The top-level keys of a config file.
const SECTIONS: [&str; 15] = [
    "site",
    "store",
    "api",
    "area",
    "line",
    "asset",
    "source",
    "tag",
    "alarms",
    "alarm_template",
    "shift",
    "planned_stop",
    "llm",
    "asset_kind",
    "agents",
];

/// One step of a key path.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn key(k: &str) -> Seg {
    Seg::Key(k.to_string())
}

fn join(base: &[Seg], more: &[Seg]) -> Vec<Seg> {
    base.iter().chain(more).cloned().collect()
}

fn path_text(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => {
                let _ = write!(s, "[{i}]");
            }
        }
    }
    s
}

/// Whether `inner` lies within `outer` (an empty `inner` may sit at either end).
fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end
}

/// The deepest key path under `v` whose key or value covers `span`; empty when none does.
fn locate(v: &Val<'_>, span: &Range<usize>) -> Vec<Seg> {
    fn walk(v: &Val<'_>, span: &Range<usize>, path: &mut Vec<Seg>, best: &mut Vec<Seg>) {
        let mut visit = |seg: Seg, covers: bool, child: &Val<'_>, path: &mut Vec<Seg>| {
            path.push(seg);
            if covers && path.len() > best.len() {
                *best = path.clone();
            }
            walk(child, span, path, best);
            path.pop();
        };
        match v.get_ref() {
            DeValue::Table(t) => {
                for (k, child) in t.iter() {
                    let covers = contains(&k.span(), span) || contains(&child.span(), span);
                    visit(key(k.get_ref()), covers, child, path);
                }
            }
            DeValue::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    let covers = contains(&child.span(), span);
                    visit(Seg::Index(i), covers, child, path);
                }
            }
            _ => {}
        }
    }
    let mut best = Vec::new();
    walk(v, span, &mut Vec::new(), &mut best);
    best
}

/// The node at `path` under `v`.
fn get<'a, 't>(v: &'a Val<'t>, path: &[Seg]) -> Option<&'a Val<'t>> {
    let mut cur = v;
    for seg in path {
        cur = match (cur.get_ref(), seg) {
            (DeValue::Table(t), Seg::Key(k)) => t.get(k.as_str())?,
            (DeValue::Array(a), Seg::Index(i)) => a.get(*i)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Span of the value at `path`, or of its deepest existing ancestor.
fn span_at(root: &Val<'_>, path: &[Seg]) -> Range<usize> {
    let mut cur = root;
    for seg in path {
        let next = match (cur.get_ref(), seg) {
            (DeValue::Table(t), Seg::Key(k)) => t.get(k.as_str()),
            (DeValue::Array(a), Seg::Index(i)) => a.get(*i),
            _ => None,
        };
        match next {
            Some(n) => cur = n,
            None => break,
        }
    }
    cur.span()
}

/// The value at `path` under `v`, mutably.
fn node_mut<'v, 't>(v: &'v mut Val<'t>, path: &[Seg]) -> Option<&'v mut Val<'t>> {
    let mut cur = v;
    for seg in path {
        cur = match (cur.get_mut(), seg) {
            (DeValue::Table(t), Seg::Key(k)) => t.get_mut(k.as_str())?,
            (DeValue::Array(a), Seg::Index(i)) => a.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Removes `key` from the table at `path` under `v`; false when there is no such entry.
fn remove_key(v: &mut Val<'_>, path: &[Seg], key: &str) -> bool {
    let Some(cur) = node_mut(v, path) else { return false };
    match cur.get_mut() {
        DeValue::Table(t) => t.remove(key).is_some(),
        _ => false,
    }
}

/// Spans at or above this mark belong to stand-ins for missing keys, not to the text.
const STAND_IN: usize = usize::MAX / 2;

/// Puts an empty string under `key` in the table at `path` (a stand-in for a missing key).
fn insert_stand_in(v: &mut Val<'_>, path: &[Seg], k: &str) -> bool {
    let Some(cur) = node_mut(v, path) else { return false };
    match cur.get_mut() {
        DeValue::Table(t) => {
            let span = STAND_IN..STAND_IN;
            t.insert(
                Spanned::new(span.clone(), Cow::Owned(k.to_string())),
                Spanned::new(span, DeValue::String(Cow::Borrowed(""))),
            );
            true
        }
        _ => false,
    }
}

/// A value deserialized from the file, possibly partial.
struct Parsed<T> {
    value: T,
    /// Keys (relative to the value) that were bad or missing: dropped, defaulted or
    /// stood in for, and already reported. Checks that read them are skipped.
    bad: Vec<Vec<Seg>>,
}

impl<T> Parsed<T> {
    /// True when the top-level key of `k` (`security` for `security.mode`) and
    /// everything under it is as written.
    fn ok(&self, k: &str) -> bool {
        let top = k.split('.').next().unwrap_or(k);
        !self.bad.iter().any(|b| matches!(b.first(), Some(Seg::Key(x)) if x == top))
    }

    fn clean(&self) -> bool {
        self.bad.is_empty()
    }
}

/// The string value at `key` of a table value, with its span.
fn str_at<'a>(v: &'a Val<'_>, k: &str) -> Option<(&'a str, Range<usize>)> {
    match v.get_ref() {
        DeValue::Table(t) => t.get(k).and_then(|x| x.get_ref().as_str().map(|s| (s, x.span()))),
        _ => None,
    }
}

/// The field named by serde's "missing field `x`" message.
fn missing_field(msg: &str) -> Option<&str> {
    msg.strip_prefix("missing field `")?.strip_suffix('`')
}

/// Serde's wording, in the config's words (keys, values), with a hint for inline secrets.
fn reword(msg: &str) -> String {
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let name = rest.split('`').next().unwrap_or_default();
        let mut out = format!("unknown key `{rest}");
        if rest.contains(&format!("`{name}_env`")) {
            let _ = write!(
                out,
                "; secrets never go in the config text: name an environment variable with `{name}_env` or a file with `{name}_file`"
            );
        }
        return out;
    }
    if let Some(rest) = msg.strip_prefix("unknown variant `") {
        return format!("unknown value `{rest}");
    }
    if let Some(i) = msg.find(", expected struct ") {
        return format!("{}, expected a table", &msg[..i]);
    }
    msg.to_string()
}

struct Loader<'t, 'r> {
    sink: Sink<'t>,
    root: &'r Val<'t>,
}

impl<'t, 'r> Loader<'t, 'r> {
    fn report(&mut self, span: Range<usize>, path: &[Seg], message: impl Into<String>) {
        self.sink.push(span, path_text(path), message);
    }

    /// Reports a problem about the value at `path` (pointing at its deepest existing part).
    fn report_at(&mut self, path: &[Seg], message: impl Into<String>) {
        let span = span_at(self.root, path);
        self.report(span, path, message);
    }

    /// Deserializes `value` (found at `base`), reporting every problem it can. After
    /// each bad key the key is dropped and the value tried again; a missing key gets an
    /// empty-string stand-in so the next missing key shows too. The result may thus be
    /// partial (see [`Parsed::bad`]); `None` when nothing usable came out.
    fn de<T: DeserializeOwned>(&mut self, value: &Val<'t>, base: &[Seg]) -> Option<Parsed<T>> {
        let mut work = value.clone();
        let mut bad: Vec<Vec<Seg>> = Vec::new();
        for _ in 0..64 {
            let err = match T::deserialize(ValueDeserializer::from(work.clone())) {
                Ok(value) => return Some(Parsed { value, bad }),
                Err(e) => e,
            };
            let span = err.span().unwrap_or_else(|| work.span());
            if span.start >= STAND_IN {
                // The stand-in for a missing key has the wrong type: nothing more to learn.
                return None;
            }
            let rel = locate(&work, &span);
            if let Some(field) = missing_field(err.message()) {
                let path = join(&rel, &[key(field)]);
                if bad.contains(&path) {
                    // Dropped above because its value was bad; already reported.
                    return None;
                }
                self.report(span, &join(base, &path), format!("missing key `{field}`"));
                if !insert_stand_in(&mut work, &rel, field) {
                    return None;
                }
                bad.push(path);
                continue;
            }
            self.report(span, &join(base, &rel), reword(err.message()));
            let cut = rel.iter().rposition(|s| matches!(s, Seg::Key(_)))?;
            let Seg::Key(k) = &rel[cut] else { return None };
            if !remove_key(&mut work, &rel[..cut], k) {
                return None;
            }
            bad.push(rel[..=cut].to_vec());
        }
        None
    }

    /// The entries of a `[[name]]` array of tables.
    fn entries(&mut self, name: &str) -> Vec<(usize, &'r Val<'t>)> {
        let root: &'r Val<'t> = self.root;
        match get(root, &[key(name)]) {
            None => Vec::new(),
            Some(v) => match v.get_ref() {
                DeValue::Array(a) => a.iter().enumerate().collect(),
                _ => {
                    self.report(
                        v.span(),
                        &[key(name)],
                        format!("`{name}` must be an array of tables, written `[[{name}]]`"),
                    );
                    Vec::new()
                }
            },
        }
    }

    /// Checks the identifier at `entry.<field>` of every entry: well formed and unique.
    /// Returns identifier -> entry index.
    fn names(
        &mut self,
        section: &str,
        entries: &[(usize, &Val<'t>)],
        field: &str,
        what: &str,
        check: fn(&str) -> Result<(), String>,
    ) -> HashMap<String, usize> {
        let mut seen: HashMap<String, (usize, Range<usize>)> = HashMap::new();
        for (i, v) in entries {
            let Some((name, span)) = str_at(v, field) else {
                continue;
            };
            let path = [key(section), Seg::Index(*i), key(field)];
            if let Err(e) = check(name) {
                self.report(span.clone(), &path, format!("bad {what}: {e}"));
            }
            if let Some((_, first)) = seen.get(name) {
                let line = self.sink.line_of(first.start);
                self.report(span, &path, format!("duplicate {what} `{name}` (first defined on line {line})"));
            } else {
                seen.insert(name.to_string(), (*i, span));
            }
        }
        seen.into_iter().map(|(k, (i, _))| (k, i)).collect()
    }

    /// Checks that `entry.<field>` names one of `known`.
    fn references(
        &mut self,
        section: &str,
        entries: &[(usize, &Val<'t>)],
        field: &str,
        target: &str,
        known: &HashMap<String, usize>,
    ) {
        for (i, v) in entries {
            let Some((name, span)) = str_at(v, field) else {
                continue;
            };
            if !known.contains_key(name) {
                let mut msg = format!("unknown {target} `{name}`");
                if let Some(close) = closest(name, known.keys()) {
                    let _ = write!(msg, "; did you mean `{close}`?");
                } else if known.is_empty() {
                    let _ = write!(msg, "; no `[[{target}]]` is defined");
                }
                self.report(span, &[key(section), Seg::Index(*i), key(field)], msg);
            }
        }
    }

    /// Reports (key within `base`, message) problems from a check; the key may be
    /// dotted (`security.mode`).
    fn report_all(&mut self, base: &[Seg], errs: Vec<(&'static str, String)>) {
        for (k, msg) in errs {
            let rel: Vec<Seg> = k.split('.').map(key).collect();
            self.report_at(&join(base, &rel), msg);
        }
    }
}

/// The known name nearest to `name`, if it is a likely typo.
fn closest<'a>(name: &str, known: impl Iterator<Item = &'a String>) -> Option<&'a str> {
    known
        .map(|k| (edit_distance(name, k), k))
        .filter(|(d, k)| *d <= 2 && *d < k.chars().count())
        .min()
        .map(|(_, k)| k.as_str())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

pub(crate) fn load(text: &str, name: &str) -> Result<Config, ConfigErrors> {
    let mut sink = Sink::new(name, text);
    let table = match DeTable::parse(text) {
        Ok(t) => t,
        Err(e) => {
            sink.push(e.span().unwrap_or(0..0), "(syntax)", e.message().to_string());
            return Err(ConfigErrors::Invalid { diagnostics: sink.finish() });
        }
    };
    let span = table.span();
    let root: Val<'_> = Spanned::new(span, DeValue::Table(table.into_inner()));
    let mut l = Loader { sink, root: &root };

    if let DeValue::Table(t) = root.get_ref() {
        for k in t.keys() {
            if !SECTIONS.contains(&k.get_ref().as_ref()) {
                l.report(
                    k.span(),
                    &[key(k.get_ref())],
                    format!("unknown section `{}`, expected one of {}", k.get_ref(), SECTIONS.join(", ")),
                );
            }
        }
    }

    let site = match get(&root, &[key("site")]) {
        Some(v) => l.de::<SiteConfig>(v, &[key("site")]),
        None => {
            l.report(0..0, &[key("site")], "missing section `[site]` (name, time_zone)");
            None
        }
    };
    if let Some(site) = &site {
        if site.ok("name") && site.value.name.trim().is_empty() {
            l.report_at(&[key("site"), key("name")], "site name must not be empty");
        }
    }
    let store = match get(&root, &[key("store")]) {
        Some(v) => l.de(v, &[key("store")]).map(|p| p.value),
        None => Some(Default::default()),
    };
    let api = match get(&root, &[key("api")]) {
        Some(v) => l.de(v, &[key("api")]).map(|p| p.value),
        None => Some(Default::default()),
    };
    // `None` inside: no `[llm]` section, no language model in the daemon.
    let llm: Option<Option<LlmConfig>> = match get(&root, &[key("llm")]) {
        Some(v) => l.de::<LlmConfig>(v, &[key("llm")]).map(|p| {
            let errs: Vec<_> = p.value.check().into_iter().filter(|(k, _)| p.ok(k)).collect();
            l.report_all(&[key("llm")], errs);
            Some(p.value)
        }),
        None => Some(None),
    };
    let alarms: Option<AlarmsConfig> = match get(&root, &[key("alarms")]) {
        Some(v) => l.de::<AlarmsConfig>(v, &[key("alarms")]).map(|p| {
            if p.ok("chattering") {
                l.report_all(&[key("alarms")], p.value.chattering.check());
            }
            if let Some(d) = p.value.max_shelve.filter(|_| p.ok("max_shelve")) {
                if d.0.is_zero() {
                    l.report_at(&[key("alarms"), key("max_shelve")], "max_shelve must be more than 0");
                }
            }
            p.value
        }),
        None => Some(Default::default()),
    };

    // The plant model: identifiers and references come from the raw tree, so an entry
    // with a bad field elsewhere still counts as defined (no cascade of "unknown" errors).
    let area_entries = l.entries("area");
    let line_entries = l.entries("line");
    let asset_entries = l.entries("asset");
    let source_entries = l.entries("source");
    let tag_entries = l.entries("tag");

    let areas: Vec<AreaConfig> =
        area_entries.iter().filter_map(|(i, v)| l.de(v, &[key("area"), Seg::Index(*i)]).map(|p| p.value)).collect();
    let lines: Vec<LineConfig> =
        line_entries.iter().filter_map(|(i, v)| l.de(v, &[key("line"), Seg::Index(*i)]).map(|p| p.value)).collect();
    let mut assets: Vec<AssetConfig> = Vec::new();
    for (i, v) in &asset_entries {
        let base = [key("asset"), Seg::Index(*i)];
        if let Some(p) = l.de::<AssetConfig>(v, &base) {
            // A bad `state` or `counters` was reported: its later checks would only echo it.
            let (state_ok, counters_ok) = (p.ok("state"), p.ok("counters"));
            let mut a = p.value;
            if !state_ok {
                a.state = None;
            }
            if !counters_ok {
                a.counters = None;
            }
            if let Some(r) = a.ideal_rate_per_min {
                if !(r.is_finite() && r > 0.0) {
                    l.report_at(
                        &join(&base, &[key("ideal_rate_per_min")]),
                        format!("ideal_rate_per_min ({r}) must be a positive number"),
                    );
                }
            }
            assets.push(a);
        }
    }

    let area_ids = l.names("area", &area_entries, "id", "area id", check_id);
    let line_ids = l.names("line", &line_entries, "id", "line id", check_id);
    let asset_ids = l.names("asset", &asset_entries, "id", "asset id", check_id);
    let source_ids = l.names("source", &source_entries, "id", "source id", check_id);
    l.names("tag", &tag_entries, "name", "tag name", check_tag_name);
    l.references("line", &line_entries, "area", "area", &area_ids);
    l.references("asset", &asset_entries, "line", "line", &line_ids);
    l.references("tag", &tag_entries, "asset", "asset", &asset_ids);
    l.references("tag", &tag_entries, "source", "source", &source_ids);

    // Sources: `kind` picks the settings struct.
    let mut sources: Vec<SourceConfig> = Vec::new();
    let mut source_kinds: HashMap<String, SourceKind> = HashMap::new();
    let mut unit_ids: HashMap<String, u8> = HashMap::new();
    for (i, v) in &source_entries {
        let base = [key("source"), Seg::Index(*i)];
        let kind = match v.get_ref() {
            DeValue::Table(t) => t.get("kind"),
            _ => None,
        };
        let kind = match kind {
            None => {
                l.report(
                    v.span(),
                    &join(&base, &[key("kind")]),
                    format!("missing key `kind` ({})", SourceKind::NAMES.join(", ")),
                );
                None
            }
            Some(k) => match k.get_ref().as_str().and_then(SourceKind::from_name) {
                Some(kind) => Some(kind),
                None => {
                    l.report(
                        k.span(),
                        &join(&base, &[key("kind")]),
                        format!("unknown source kind, expected one of {}", SourceKind::NAMES.join(", ")),
                    );
                    None
                }
            },
        };
        let Some(kind) = kind else { continue };
        let id = str_at(v, "id").map(|(s, _)| s.to_string());
        if let Some(id) = &id {
            source_kinds.entry(id.clone()).or_insert(kind);
        }
        let mut settings = (*v).clone();
        remove_key(&mut settings, &[], "kind");
        let source = match kind {
            SourceKind::OpcUa => l.de::<OpcUaSourceConfig>(&settings, &base).map(|p| {
                let errs = p.value.check().into_iter().filter(|(k, _)| p.ok(k)).collect();
                l.report_all(&base, errs);
                SourceConfig::OpcUa(p.value)
            }),
            SourceKind::Modbus => l.de::<ModbusSourceConfig>(&settings, &base).map(|p| {
                let errs = p.value.check().into_iter().filter(|(k, _)| p.ok(k)).collect();
                l.report_all(&base, errs);
                unit_ids.insert(p.value.id.clone(), p.value.unit_id);
                SourceConfig::Modbus(p.value)
            }),
            SourceKind::Mqtt => l.de::<MqttSourceConfig>(&settings, &base).map(|p| {
                let errs = p.value.check().into_iter().filter(|(k, _)| p.ok(k)).collect();
                l.report_all(&base, errs);
                SourceConfig::Mqtt(p.value)
            }),
        };
        sources.extend(source);
    }

    // Tags: the address is read according to the kind of the tag's source.
    let mut tags: Vec<TagConfig> = Vec::new();
    // Per kept tag: its key path and which of its alarm keys were read as written.
    let mut tag_bases: Vec<(Vec<Seg>, Vec<&'static str>)> = Vec::new();
    for (i, v) in &tag_entries {
        let base = [key("tag"), Seg::Index(*i)];
        let mut fields = (*v).clone();
        remove_key(&mut fields, &[], "address");
        let tag = l.de::<TagConfig>(&fields, &base);
        let address = match v.get_ref() {
            DeValue::Table(t) => t.get("address"),
            _ => None,
        };
        let has_source_key = matches!(v.get_ref(), DeValue::Table(t) if t.contains_key("source"));
        let source = str_at(v, "source").map(|(s, _)| s);
        let addr_path = join(&base, &[key("address")]);
        let parsed = match (address, source) {
            (None, Some(s)) => {
                l.report(
                    v.span(),
                    &addr_path,
                    format!("missing key `address`: a tag read from source `{s}` needs one"),
                );
                None
            }
            (Some(a), None) if !has_source_key => {
                l.report(a.span(), &addr_path, "`address` needs `source` (the [[source]] it is read from)");
                None
            }
            (Some(a), Some(s)) => {
                // An unknown source was reported above; still check the address by its shape.
                let kind = source_kinds.get(s).copied().or_else(|| match a.get_ref() {
                    DeValue::String(_) => Some(SourceKind::OpcUa),
                    DeValue::Table(t) if t.contains_key("topic") => Some(SourceKind::Mqtt),
                    DeValue::Table(_) => Some(SourceKind::Modbus),
                    _ => None,
                });
                let unit = unit_ids.get(s).copied().unwrap_or(1);
                kind.and_then(|k| address_for(&mut l, a, &addr_path, k, unit))
            }
            _ => None,
        };
        let Some(tag) = tag else { continue };
        check_tag(&mut l, &base, &tag, parsed.as_ref());
        let own: Vec<&'static str> = ALARM_KEYS.into_iter().filter(|k| tag.ok(k)).collect();
        tag_bases.push((base.to_vec(), own));
        let mut tag = tag.value;
        tag.address = parsed;
        tags.push(tag);
    }

    let alarm_templates = check_alarms(&mut l, &assets, &tags, &tag_bases);
    let (shifts, planned_stops) = check_production(&mut l, &assets, &tags, site.as_ref());
    let asset_kinds = check_knowledge(&mut l, &assets, &tags);
    let agents: Option<AgentsConfig> = match get(&root, &[key("agents")]) {
        Some(v) => l.de::<AgentsConfig>(v, &[key("agents")]).map(|p| {
            if let Some(pb) = p.value.publish.as_ref().filter(|_| p.ok("publish")) {
                let path = [key("agents"), key("publish"), key("source")];
                match sources.iter().find(|s| s.id() == pb.source) {
                    Some(SourceConfig::Mqtt(_)) => {}
                    Some(other) => l.report_at(
                        &path,
                        format!(
                            "source `{}` is {}, not mqtt: explanations are published to an MQTT broker",
                            pb.source,
                            other.kind()
                        ),
                    ),
                    None => l.report_at(&path, format!("unknown source `{}`", pb.source)),
                }
                if pb.topic.is_empty() || pb.topic.contains(['+', '#']) {
                    l.report_at(
                        &[key("agents"), key("publish"), key("topic")],
                        "topic must be a plain prefix (no `+` or `#`)",
                    );
                }
            }
            p.value
        }),
        None => Some(Default::default()),
    };

    let Loader { sink, .. } = l;
    match (site, store, api, alarms, llm, agents) {
        (Some(site), Some(store), Some(api), Some(alarms), Some(llm), Some(agents)) if sink.is_empty() => Ok(Config {
            site: site.value,
            store,
            api,
            areas,
            lines,
            assets,
            sources,
            tags,
            alarms,
            alarm_templates,
            shifts,
            planned_stops,
            llm,
            asset_kinds,
            agents,
        }),
        _ => Err(ConfigErrors::Invalid { diagnostics: sink.finish() }),
    }
}

/// `[[asset_kind]]`: each kind used by an `[[asset]]` and described once; failure mode
/// ids unique; every tag suffix names a tag of at least one asset of the kind; every
/// service task has a positive interval and prevents a failure mode of its kind.
fn check_knowledge(l: &mut Loader<'_, '_>, assets: &[AssetConfig], tags: &[TagConfig]) -> Vec<AssetKindConfig> {
    let entries = l.entries("asset_kind");
    // Duplicate kinds are reported here.
    l.names("asset_kind", &entries, "kind", "asset kind", |_| Ok(()));
    let mut kinds = Vec::new();
    for (i, v) in &entries {
        let base = [key("asset_kind"), Seg::Index(*i)];
        let Some(p) = l.de::<AssetKindConfig>(v, &base) else { continue };
        let k = &p.value;
        let of_kind: Vec<&str> = assets.iter().filter(|a| a.kind == k.kind).map(|a| a.id.as_str()).collect();
        if of_kind.is_empty() && p.ok("kind") {
            let all: Vec<String> = assets.iter().map(|a| a.kind.clone()).collect();
            let mut msg = format!("no [[asset]] has kind `{}`", k.kind);
            if let Some(c) = closest(&k.kind, all.iter()) {
                let _ = write!(msg, "; did you mean `{c}`?");
            }
            l.report_at(&join(&base, &[key("kind")]), msg);
        }
        // A suffix must name a tag of some asset of this kind.
        let names_a_tag = |suffix: &str| {
            tags.iter().any(|t| of_kind.contains(&t.asset.as_str()) && tag_matches(&t.asset, suffix, &t.name))
        };
        let check_suffix = |l: &mut Loader<'_, '_>, path: Vec<Seg>, suffix: &str| {
            if !of_kind.is_empty() && !names_a_tag(suffix) {
                l.report_at(&path, format!("no tag `<asset>.{suffix}` on any asset of kind `{}`", k.kind));
            }
        };
        if let Some(h) = k.hours_tag.as_deref().filter(|_| p.ok("hours_tag")) {
            check_suffix(l, join(&base, &[key("hours_tag")]), h);
        }
        let mut ids: Vec<&str> = Vec::new();
        if p.ok("failure_mode") {
            for (j, m) in k.failure_modes.iter().enumerate() {
                let mb = join(&base, &[key("failure_mode"), Seg::Index(j)]);
                if ids.contains(&m.id.as_str()) {
                    l.report_at(&join(&mb, &[key("id")]), format!("duplicate failure mode id `{}`", m.id));
                }
                ids.push(&m.id);
                for (n, s) in m.tags.iter().enumerate() {
                    check_suffix(l, join(&mb, &[key("tags"), Seg::Index(n)]), s);
                }
                if let Some(f) = m.failure_limit {
                    if !f.is_finite() {
                        l.report_at(&join(&mb, &[key("failure_limit")]), "failure_limit must be a finite number");
                    } else if m.tags.is_empty() {
                        l.report_at(
                            &join(&mb, &[key("failure_limit")]),
                            "failure_limit needs `tags`: it is a limit of the first one",
                        );
                    }
                }
            }
        }
        if p.ok("service") {
            for (j, s) in k.services.iter().enumerate() {
                let sb = join(&base, &[key("service"), Seg::Index(j)]);
                if s.every_hours.is_none() && s.every_cycles.is_none() {
                    l.report_at(&sb, "a service task needs `every_hours` or `every_cycles`");
                }
                for (name, v) in [("every_hours", s.every_hours), ("every_cycles", s.every_cycles)] {
                    if let Some(x) = v.filter(|x| !(x.is_finite() && *x > 0.0)) {
                        l.report_at(&join(&sb, &[key(name)]), format!("{name} ({x}) must be a positive number"));
                    }
                }
                if s.every_hours.is_some() && k.hours_tag.is_none() && p.ok("hours_tag") {
                    l.report_at(&join(&sb, &[key("every_hours")]), "every_hours needs the kind's `hours_tag`");
                }
                if let Some(m) = s.prevents.as_deref().filter(|m| p.ok("failure_mode") && !ids.contains(m)) {
                    l.report_at(&join(&sb, &[key("prevents")]), format!("no failure mode `{m}` on this kind"));
                }
            }
        }
        kinds.push(p.value);
    }
    kinds
}

/// Reads a tag address for a source of `kind`.
fn address_for<'t>(
    l: &mut Loader<'t, '_>,
    a: &Val<'t>,
    path: &[Seg],
    kind: SourceKind,
    default_unit: u8,
) -> Option<TagAddress> {
    match (kind, a.get_ref()) {
        (SourceKind::OpcUa, DeValue::String(s)) => match s.parse::<OpcUaNodeId>() {
            Ok(id) => Some(TagAddress::OpcUa(id)),
            Err(e) => {
                l.report(a.span(), path, e);
                None
            }
        },
        (SourceKind::OpcUa, _) => {
            l.report(
                a.span(),
                path,
                "an OPC UA address is a NodeId string such as \"ns=2;s=Line1/Filler/BowlPressure\"",
            );
            None
        }
        (SourceKind::Modbus, DeValue::Table(_)) => {
            let fields = l.de::<ModbusAddressFields>(a, path)?;
            // The value's type follows from `table`, `type` and `bit`: without them as
            // written, the other checks would only guess.
            if !(fields.ok("table") && fields.ok("type") && fields.ok("bit")) {
                return None;
            }
            let ok = |k: &str| fields.ok(k);
            let clean = fields.clean();
            let bad: Vec<String> = ["unit", "order", "scale", "offset", "length"]
                .into_iter()
                .filter(|k| !ok(k))
                .map(String::from)
                .collect();
            match fields.value.check(default_unit) {
                Ok(m) => clean.then_some(TagAddress::Modbus(m)),
                Err(errs) => {
                    let errs = errs.into_iter().filter(|(k, _)| !bad.iter().any(|b| b == k)).collect();
                    l.report_all(path, errs);
                    None
                }
            }
        }
        (SourceKind::Modbus, _) => {
            l.report(
                a.span(),
                path,
                "a Modbus address is a table such as { table = \"holding\", register = 100, type = \"f32\" }",
            );
            None
        }
        (SourceKind::Mqtt, DeValue::Table(_)) => {
            let fields = l.de::<MqttAddressFields>(a, path)?;
            let clean = fields.clean();
            let ok: Vec<bool> =
                ["topic", "json_path", "ts_path", "metric", "labels"].iter().map(|k| fields.ok(k)).collect();
            match fields.value.check() {
                Ok(m) => clean.then_some(TagAddress::Mqtt(m)),
                Err(errs) => {
                    let errs = errs
                        .into_iter()
                        .filter(|(k, _)| match *k {
                            "topic" => ok[0],
                            "json_path" => ok[1],
                            "ts_path" => ok[2],
                            "metric" => ok[3],
                            _ => ok[4],
                        })
                        .collect();
                    l.report_all(path, errs);
                    None
                }
            }
        }
        (SourceKind::Mqtt, _) => {
            l.report(
                a.span(),
                path,
                "an MQTT address is a table such as { topic = \"plant/line1/filler/vib\", json_path = \"$.rms\" }",
            );
            None
        }
    }
}

/// Checks a tag's limits, states, and that its value type fits its address.
///
/// Checks that depend on a key that was bad (and already reported) are skipped.
fn check_tag(l: &mut Loader<'_, '_>, base: &[Seg], parsed: &Parsed<TagConfig>, address: Option<&TagAddress>) {
    let tag = &parsed.value;
    let kind = tag.value_type;
    if !parsed.ok("value_type") {
        return;
    }
    if let Some(limits) = tag.limits.as_ref().filter(|_| parsed.ok("limits")) {
        if kind.is_numeric() && kind != ValueKind::Bool {
            l.report_all(&join(base, &[key("limits")]), limits.check());
        } else {
            l.report_at(&join(base, &[key("limits")]), format!("limits apply to f64 and i64 tags, not {kind}"));
        }
    }
    let number = matches!(kind, ValueKind::F64 | ValueKind::I64);
    for (k, present) in [("rate_of_change", tag.rate_of_change.is_some()), ("flatline", tag.flatline.is_some())] {
        if present && parsed.ok(k) && !number {
            l.report_at(&join(base, &[key(k)]), format!("{k} applies to f64 and i64 tags, not {kind}"));
        }
    }
    if tag.fault_code.is_some() && parsed.ok("fault_code") && !matches!(kind, ValueKind::I64 | ValueKind::Bool) {
        l.report_at(
            &join(base, &[key("fault_code")]),
            format!("fault_code applies to i64 and bool tags, not {kind}; set value_type = \"i64\""),
        );
    }
    if let Some(states) = tag.states.as_ref().filter(|_| parsed.ok("states")) {
        let path = join(base, &[key("states")]);
        if kind != ValueKind::Str {
            l.report_at(&path, format!("states apply to string tags, not {kind}; set value_type = \"string\""));
        } else if states.is_empty() {
            l.report_at(&path, "states must list at least one state");
        } else {
            for (j, s) in states.iter().enumerate() {
                if states[..j].contains(s) {
                    l.report_at(&join(&path, &[Seg::Index(j)]), format!("state `{s}` is listed twice"));
                }
            }
        }
    }
    let numeric = kind == ValueKind::F64 || kind == ValueKind::I64;
    if let Some(d) = tag.deadband.filter(|_| parsed.ok("deadband")) {
        let path = join(base, &[key("deadband")]);
        if !numeric {
            l.report_at(&path, format!("deadband applies to f64 and i64 tags, not {kind}"));
        } else if !d.is_finite() || d < 0.0 {
            l.report_at(&path, format!("deadband ({d}) must be a number >= 0"));
        }
    }
    // Keys only an OPC UA server understands; unknowable while the address is bad.
    let opcua = match (address, &tag.source) {
        (Some(a), _) => Some(matches!(a, TagAddress::OpcUa(_))),
        (None, None) => Some(false),
        (None, Some(_)) => None,
    };
    if let Some(p) = tag.deadband_percent.filter(|_| parsed.ok("deadband_percent")) {
        let path = join(base, &[key("deadband_percent")]);
        if opcua == Some(false) {
            l.report_at(&path, "deadband_percent applies to tags of an opcua source; use `deadband` (absolute)");
        } else if !numeric {
            l.report_at(&path, format!("deadband_percent applies to f64 and i64 tags, not {kind}"));
        } else if !(0.0..=100.0).contains(&p) {
            l.report_at(&path, format!("deadband_percent ({p}) must be within 0..=100"));
        } else if tag.deadband.is_some() {
            l.report_at(&path, "give `deadband` or `deadband_percent`, not both");
        }
    }
    if let Some(s) = tag.sampling_interval.filter(|_| parsed.ok("sampling_interval")) {
        if opcua == Some(false) {
            l.report_at(
                &join(base, &[key("sampling_interval")]),
                "sampling_interval applies to tags of an opcua source (Modbus tags use the source's poll_groups)",
            );
        } else if s.0.is_zero() {
            l.report_at(&join(base, &[key("sampling_interval")]), "sampling_interval must be more than 0");
        }
    }
    if let Some(TagAddress::Modbus(m)) = address {
        let fits = match m.data_type {
            ModbusDataType::Bool => kind == ValueKind::Bool,
            ModbusDataType::String => kind == ValueKind::Str,
            t => {
                kind == ValueKind::F64
                    || (kind == ValueKind::I64 && t.is_integer() && m.scale.is_none() && m.offset.is_none())
            }
        };
        if !fits {
            let want = match m.data_type {
                ModbusDataType::Bool => "\"bool\"",
                ModbusDataType::String => "\"string\"",
                t if t.is_integer() && m.scale.is_none() && m.offset.is_none() => "\"f64\" or \"i64\"",
                _ => "\"f64\"",
            };
            let on_value_type = get(l.root, &join(base, &[key("value_type")])).is_some();
            let path = if on_value_type { join(base, &[key("value_type")]) } else { join(base, &[key("address")]) };
            l.report_at(
                &path,
                format!(
                    "value_type {kind}{} does not fit Modbus type {}; use value_type = {want}",
                    if on_value_type { "" } else { " (the default)" },
                    m.data_type
                ),
            );
        }
    }
}

/// The alarm keys a tag and a template share.
const ALARM_KEYS: [&str; 5] = ["limits", "rate_of_change", "flatline", "comms_loss", "fault_code"];

/// Value checks of one set of alarm settings, as (key within the set, message).
/// `merged`: the settings in force for a tag, where required keys must be present.
fn alarm_problems(s: &TagAlarmSettings, merged: bool) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut add = |section: &str, errs: Vec<(&'static str, String)>| {
        out.extend(errs.into_iter().map(|(k, m)| (format!("{section}.{k}"), m)));
    };
    if let Some(x) = &s.limits {
        add("limits", x.check());
    }
    if let Some(x) = &s.rate_of_change {
        add("rate_of_change", x.check(merged));
    }
    if let Some(x) = &s.flatline {
        add("flatline", x.check(merged));
    }
    if let Some(x) = &s.comms_loss {
        add("comms_loss", x.check());
    }
    if let Some(x) = &s.fault_code {
        add("fault_code", x.check());
    }
    out
}

fn report_keyed(l: &mut Loader<'_, '_>, base: &[Seg], errs: Vec<(String, String)>) {
    for (k, msg) in errs {
        let rel: Vec<Seg> = k.split('.').map(key).collect();
        l.report_at(&join(base, &rel), msg);
    }
}

/// Reads `[[alarm_template]]` and checks every tag's alarm settings: its own keys
/// fit its type, the templates are well formed and match something, and the
/// merged settings are complete.
fn check_alarms(
    l: &mut Loader<'_, '_>,
    assets: &[AssetConfig],
    tags: &[TagConfig],
    tag_bases: &[(Vec<Seg>, Vec<&'static str>)],
) -> Vec<AlarmTemplateConfig> {
    let entries = l.entries("alarm_template");
    let mut templates: Vec<AlarmTemplateConfig> = Vec::new();
    let mut template_errs: Vec<Vec<(String, String)>> = Vec::new();
    for (i, v) in &entries {
        let base = [key("alarm_template"), Seg::Index(*i)];
        let Some(p) = l.de::<AlarmTemplateConfig>(v, &base) else { continue };
        let t = &p.value;
        if t.pattern.is_none() && t.asset_kind.is_none() && p.ok("match") && p.ok("asset_kind") {
            l.report(v.span(), &base, "a template needs `match` (a tag-name pattern) or `asset_kind`, or both");
        }
        if let Some(pat) = t.pattern.as_deref().filter(|_| p.ok("match")) {
            if let Err(e) = check_pattern(pat) {
                l.report_at(&join(&base, &[key("match")]), format!("bad pattern: {e}"));
            }
        }
        let mut kind_known = true;
        if let Some(kind) = t.asset_kind.as_deref().filter(|_| p.ok("asset_kind")) {
            if !assets.iter().any(|a| a.kind == kind) {
                kind_known = false;
                let kinds: Vec<String> = assets.iter().map(|a| a.kind.clone()).collect();
                let mut msg = format!("no [[asset]] has kind `{kind}`");
                if let Some(c) = closest(kind, kinds.iter()) {
                    let _ = write!(msg, "; did you mean `{c}`?");
                }
                l.report_at(&join(&base, &[key("asset_kind")]), msg);
            }
        }
        if kind_known && p.ok("match") && p.ok("asset_kind") && (t.pattern.is_some() || t.asset_kind.is_some()) {
            let hits = tags.iter().any(|tag| {
                let kind = assets.iter().find(|a| a.id == tag.asset).map(|a| a.kind.as_str());
                t.applies_to(&tag.name, kind)
            });
            if !hits && !tags.is_empty() {
                let at = if t.pattern.is_some() { key("match") } else { key("asset_kind") };
                l.report_at(&join(&base, &[at]), "this template matches no [[tag]]");
            }
        }
        let errs = alarm_problems(&t_settings(t), false);
        report_keyed(l, &base, errs.clone());
        template_errs.push(errs);
        templates.push(p.value);
    }
    for (tag, (base, own)) in tags.iter().zip(tag_bases) {
        let own_settings = TagAlarmSettings::of_tag(tag);
        let own_errs = alarm_problems(&own_settings, false);
        report_keyed(l, base, own_errs.clone());
        let merged = TagAlarmSettings::resolve(tag, assets, &templates);
        let kind = assets.iter().find(|a| a.id == tag.asset).map(|a| a.kind.as_str());
        let applied: Vec<&Vec<(String, String)>> = templates
            .iter()
            .zip(&template_errs)
            .filter(|(t, _)| t.applies_to(&tag.name, kind))
            .map(|(_, e)| e)
            .collect();
        for (k, msg) in alarm_problems(&merged, true) {
            let pair = (k.clone(), msg.clone());
            if own_errs.contains(&pair) || applied.iter().any(|e| e.contains(&pair)) {
                continue;
            }
            let section = k.split('.').next().unwrap_or_default();
            if !own.contains(&section) && tag_has_key(l, base, section) {
                continue; // the tag's own key was bad and is reported already
            }
            if tag_has_key(l, base, section) {
                let rel: Vec<Seg> = k.split('.').map(key).collect();
                l.report_at(&join(base, &rel), msg);
            } else {
                l.report_at(&join(base, &[key("name")]), format!("{k} (from [[alarm_template]]): {msg}"));
            }
        }
    }
    templates
}

fn t_settings(t: &AlarmTemplateConfig) -> TagAlarmSettings {
    TagAlarmSettings {
        limits: t.limits.clone(),
        rate_of_change: t.rate_of_change.clone(),
        flatline: t.flatline.clone(),
        comms_loss: t.comms_loss.clone(),
        fault_code: t.fault_code.clone(),
    }
}

fn tag_has_key(l: &Loader<'_, '_>, base: &[Seg], k: &str) -> bool {
    get(l.root, &join(base, &[key(k)])).is_some()
}

/// The shift calendar and what OEE needs of the plant model: shifts and planned stops
/// well formed, the time zone in the tz database, every asset's state and counter tags
/// defined (flags as `bool`), and each line's key asset on that line.
fn check_production(
    l: &mut Loader<'_, '_>,
    assets: &[AssetConfig],
    tags: &[TagConfig],
    site: Option<&Parsed<SiteConfig>>,
) -> (Vec<ShiftConfig>, Vec<PlannedStopConfig>) {
    let shift_entries = l.entries("shift");
    let stop_entries = l.entries("planned_stop");
    let mut shifts = Vec::new();
    for (i, v) in &shift_entries {
        let base = [key("shift"), Seg::Index(*i)];
        if let Some(p) = l.de::<ShiftConfig>(v, &base) {
            let errs = p.value.check().into_iter().filter(|(k, _)| p.ok(k)).collect();
            l.report_all(&base, errs);
            shifts.push(p.value);
        }
    }
    l.names("shift", &shift_entries, "name", "shift name", |_| Ok(()));
    let mut stops = Vec::new();
    for (i, v) in &stop_entries {
        let base = [key("planned_stop"), Seg::Index(*i)];
        if let Some(p) = l.de::<PlannedStopConfig>(v, &base) {
            if p.clean() {
                let errs = p.value.check();
                l.report_all(&base, errs);
            }
            stops.push(p.value);
        }
    }
    if let Some(site) = site.filter(|s| s.ok("time_zone")) {
        if let Err(e) = super::calendar::time_zone(&site.value.time_zone) {
            l.report_at(
                &[key("site"), key("time_zone")],
                format!("{e} (the tz database of this system does not know it)"),
            );
        }
    }
    let kinds: HashMap<&str, ValueKind> = tags.iter().map(|t| (t.name.as_str(), t.value_type)).collect();
    let asset_entries = l.entries("asset");
    for (i, v) in &asset_entries {
        let Some(a) = str_at(v, "id").and_then(|(id, _)| assets.iter().find(|a| a.id == id)) else { continue };
        let base = [key("asset"), Seg::Index(*i)];
        let mut refs: Vec<(&'static str, &'static str, &str)> = Vec::new();
        if let Some(st) = &a.state {
            l.report_all(&join(&base, &[key("state")]), st.check());
            refs.extend(st.tags().into_iter().map(|(k, t)| ("state", k, t)));
        }
        if let Some(c) = &a.counters {
            l.report_all(&join(&base, &[key("counters")]), c.check());
            refs.extend(c.tags().into_iter().map(|(k, t)| ("counters", k, t)));
        }
        for (section, k, tag) in refs {
            let path = join(&base, &[key(section), key(k)]);
            match kinds.get(tag) {
                None => {
                    let names: Vec<String> = kinds.keys().map(|s| s.to_string()).collect();
                    let mut msg = format!("unknown tag `{tag}`");
                    if let Some(close) = closest(tag, names.iter()) {
                        let _ = write!(msg, "; did you mean `{close}`?");
                    }
                    l.report_at(&path, msg);
                }
                Some(kind) if matches!(k, "starved_tag" | "blocked_tag") && *kind != ValueKind::Bool => {
                    l.report_at(&path, format!("`{tag}` is {kind}; {k} needs a bool tag"));
                }
                Some(ValueKind::Str) if section == "counters" || matches!(k, "speed_tag" | "fault_code_tag") => {
                    l.report_at(&path, format!("`{tag}` is a string tag; {k} needs a number tag"));
                }
                _ => {}
            }
        }
    }
    let line_entries = l.entries("line");
    for (i, v) in &line_entries {
        let Some((key_asset, _)) = str_at(v, "key_asset") else { continue };
        let line_id = str_at(v, "id").map(|(s, _)| s).unwrap_or_default();
        let path = [key("line"), Seg::Index(*i), key("key_asset")];
        match assets.iter().find(|a| a.id == key_asset) {
            None => l.report_at(&path, format!("unknown asset `{key_asset}`")),
            Some(a) if a.line != line_id => {
                l.report_at(&path, format!("asset `{key_asset}` stands on line `{}`, not on `{line_id}`", a.line))
            }
            Some(_) => {}
        }
    }
    (shifts, stops)
}
