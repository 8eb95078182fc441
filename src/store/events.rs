//! The durable event log (SQLite).
//!
//! Everything that happens on the line and is not a sample — state changes,
//! alarms, anomalies, acknowledgements, reports, audit lines, comms — is kept
//! in one SQLite table so that engineers can inspect it with the `sqlite3`
//! CLI:
//!
//! ```sql
//! SELECT datetime(ts / 1000000000, 'unixepoch'), asset, kind, severity, message
//!   FROM events WHERE kind = 'alarm' ORDER BY ts DESC LIMIT 20;
//! ```
//!
//! The database runs in WAL mode with `synchronous=FULL`: when
//! [`EventLog::append`] returns, the event survives a power cut. The schema
//! version lives in `PRAGMA user_version`; [`MIGRATIONS`] lists the steps
//! that bring an older file up to date.

use std::path::Path;
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::{params, params_from_iter, Connection, Row, TransactionBehavior};

use crate::domain::{Event, EventKind, Timestamp};

/// Schema migrations, in order: entry `i` brings a file from schema version
/// `i` to `i + 1`. Append new steps; never edit a released one.
pub const MIGRATIONS: &[&str] = &[
    // v1: the events table and its indexes.
    "CREATE TABLE IF NOT EXISTS events (
        id       INTEGER PRIMARY KEY,
        ts       INTEGER NOT NULL,
        asset    TEXT,
        kind     TEXT NOT NULL,
        severity INTEGER NOT NULL,
        message  TEXT NOT NULL,
        details  TEXT NOT NULL
     );
     CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
     CREATE INDEX IF NOT EXISTS events_asset_ts ON events (asset, ts);
     CREATE INDEX IF NOT EXISTS events_kind_ts ON events (kind, ts);",
    // v2: explanations of events (the anomaly explainer's), one per event.
    "CREATE TABLE IF NOT EXISTS explanations (
        event_id   INTEGER PRIMARY KEY REFERENCES events (id),
        written_at INTEGER NOT NULL,
        written_by TEXT NOT NULL,
        text       TEXT NOT NULL,
        details    TEXT NOT NULL
     );",
];

/// An agent's explanation of an event, kept with it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct StoredExplanation {
    /// The event explained.
    pub event_id: i64,
    /// When it was written, UTC ns.
    pub written_at: Timestamp,
    /// `template` or the model's name.
    pub written_by: String,
    /// The text a person reads.
    pub text: String,
    /// The structured explanation (contributing tags, likely causes, checks, facts).
    pub details: serde_json::Value,
}

/// The schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// How long a writer waits for another connection's lock (for example an
/// engineer's `sqlite3` session) before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors of the event log.
#[derive(Debug, thiserror::Error)]
pub enum EventLogError {
    /// SQLite failed (I/O, locking, corrupt file ...).
    #[error("event log: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The `details` column of a stored event is not valid JSON.
    #[error("event log: event {id} has invalid details JSON: {source}")]
    Json {
        /// Row id of the event.
        id: i64,
        /// What the JSON parser said.
        #[source]
        source: serde_json::Error,
    },
    /// A stored event has a kind this build does not know (written by a
    /// newer version of linepilot).
    #[error("event log: event {id} has unknown kind `{kind}`")]
    UnknownKind {
        /// Row id of the event.
        id: i64,
        /// The kind as stored.
        kind: String,
    },
    /// A stored event has a severity outside `0..=65535`.
    #[error("event log: event {id} has severity {severity} out of range")]
    BadSeverity {
        /// Row id of the event.
        id: i64,
        /// The severity as stored.
        severity: i64,
    },
}

/// Which events to read. The default selects every event, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventQuery {
    /// Only events at or after this time (inclusive).
    pub from: Option<Timestamp>,
    /// Only events before this time (exclusive).
    pub to: Option<Timestamp>,
    /// Only events of this asset.
    pub asset: Option<String>,
    /// Only events of these kinds; empty means every kind.
    pub kinds: Vec<EventKind>,
    /// At most this many events (ignored by [`EventLog::count`]).
    pub limit: Option<usize>,
    /// Newest first instead of oldest first (ignored by [`EventLog::count`]).
    pub newest_first: bool,
}

/// The durable event log: one SQLite file, shared by all tasks (`Send + Sync`).
pub struct EventLog {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog").finish_non_exhaustive()
    }
}

const INSERT_SQL: &str =
    "INSERT INTO events (ts, asset, kind, severity, message, details) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
const COLUMNS: &str = "id, ts, asset, kind, severity, message, details";

impl EventLog {
    /// Opens (or creates) the event log at `path`, brings its schema up to
    /// date and switches it to WAL mode with full synchronous writes.
    pub fn open(path: &Path) -> Result<EventLog, EventLogError> {
        let conn = Connection::open(path)?;
        Self::setup(conn, true)
    }

    /// An event log that lives only in memory (for tests and dry runs).
    pub fn open_in_memory() -> Result<EventLog, EventLogError> {
        let conn = Connection::open_in_memory()?;
        Self::setup(conn, false)
    }

    fn setup(mut conn: Connection, on_disk: bool) -> Result<EventLog, EventLogError> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        if on_disk {
            // `journal_mode` answers with the mode now in force.
            let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                tracing::warn!(mode = %mode, "Event log could not switch to WAL mode");
            }
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.set_prepared_statement_cache_capacity(64);
        migrate(&mut conn)?;
        Ok(EventLog { conn: Mutex::new(conn) })
    }

    /// The schema version of the open file.
    pub fn schema_version(&self) -> Result<i64, EventLogError> {
        let conn = self.conn.lock();
        Ok(user_version(&conn)?)
    }

    /// Appends one event and returns its id. The event is durable when this
    /// returns. `ev.id` is ignored.
    pub fn append(&self, ev: &Event) -> Result<i64, EventLogError> {
        let conn = self.conn.lock();
        insert(&conn, ev)?;
        Ok(conn.last_insert_rowid())
    }

    /// Appends several events in one transaction: either all are stored or
    /// none is. Returns their ids in order.
    pub fn append_many(&self, evs: &[Event]) -> Result<Vec<i64>, EventLogError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut ids = Vec::with_capacity(evs.len());
        for ev in evs {
            insert(&tx, ev)?;
            ids.push(tx.last_insert_rowid());
        }
        tx.commit()?;
        Ok(ids)
    }

    /// The events selected by `q`, ordered by time (then id).
    pub fn query(&self, q: &EventQuery) -> Result<Vec<Event>, EventLogError> {
        let (where_sql, mut args) = where_clause(q);
        let order = if q.newest_first { "DESC" } else { "ASC" };
        let sql = format!("SELECT {COLUMNS} FROM events{where_sql} ORDER BY ts {order}, id {order} LIMIT ?");
        let limit = q.limit.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        args.push(rusqlite::types::Value::Integer(limit));

        self.select(&sql, &args)
    }

    /// How many events `q` selects (its `limit` and order are ignored).
    pub fn count(&self, q: &EventQuery) -> Result<u64, EventLogError> {
        let (where_sql, args) = where_clause(q);
        let sql = format!("SELECT COUNT(*) FROM events{where_sql}");
        let conn = self.conn.lock();
        let mut stmt = conn.prepare_cached(&sql)?;
        let n: i64 = stmt.query_row(params_from_iter(args.iter()), |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The event with this id, if there is one.
    pub fn get(&self, id: i64) -> Result<Option<Event>, EventLogError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM events WHERE id = ?1"))?;
        let mut rows = stmt.query([id])?;
        match rows.next()? {
            Some(row) => Ok(Some(decode(row)?)),
            None => Ok(None),
        }
    }
}

impl EventLog {
    /// Stores (or replaces) the explanation of event `e.event_id`.
    pub fn put_explanation(&self, e: &StoredExplanation) -> Result<(), EventLogError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare_cached(
            "INSERT OR REPLACE INTO explanations (event_id, written_at, written_by, text, details) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        stmt.execute(params![e.event_id, e.written_at, e.written_by, e.text, e.details.to_string()])?;
        Ok(())
    }

    /// The explanation of event `event_id`, if one was written.
    pub fn explanation(&self, event_id: i64) -> Result<Option<StoredExplanation>, EventLogError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT event_id, written_at, written_by, text, details FROM explanations WHERE event_id = ?1",
        )?;
        let mut rows = stmt.query([event_id])?;
        let Some(row) = rows.next()? else { return Ok(None) };
        let details_text: String = row.get(4)?;
        let details =
            serde_json::from_str(&details_text).map_err(|source| EventLogError::Json { id: event_id, source })?;
        Ok(Some(StoredExplanation {
            event_id,
            written_at: row.get(1)?,
            written_by: row.get(2)?,
            text: row.get(3)?,
            details,
        }))
    }

    /// Events selected by `q` that have no explanation yet, oldest first.
    pub fn unexplained(&self, q: &EventQuery) -> Result<Vec<Event>, EventLogError> {
        let (where_sql, mut args) = where_clause(q);
        let join = if where_sql.is_empty() { " WHERE" } else { " AND" };
        let sql = format!(
            "SELECT {COLUMNS} FROM events{where_sql}{join} NOT EXISTS \
             (SELECT 1 FROM explanations x WHERE x.event_id = events.id) ORDER BY ts ASC, id ASC LIMIT ?"
        );
        args.push(rusqlite::types::Value::Integer(q.limit.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX))));
        self.select(&sql, &args)
    }
}

impl EventLog {
    /// The events a `SELECT {COLUMNS} ...` statement returns.
    fn select(&self, sql: &str, args: &[rusqlite::types::Value]) -> Result<Vec<Event>, EventLogError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare_cached(sql)?;
        let mut rows = stmt.query(params_from_iter(args.iter()))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(decode(row)?);
        }
        Ok(out)
    }
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
}

/// Applies the migrations the file has not seen yet, each in its own
/// transaction together with its `user_version` bump.
fn migrate(conn: &mut Connection) -> Result<(), EventLogError> {
    let found = user_version(conn)?;
    if found > SCHEMA_VERSION {
        // A newer linepilot wrote this file. Its columns are a superset of
        // ours (migrations only add), so keep going; rows we cannot decode
        // are reported one by one.
        tracing::warn!(found, supported = SCHEMA_VERSION, "Event log was written by a newer version");
        return Ok(());
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(usize::try_from(found).unwrap_or(0)) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "Event log schema migrated");
    }
    Ok(())
}

fn insert(conn: &Connection, ev: &Event) -> Result<(), EventLogError> {
    let mut stmt = conn.prepare_cached(INSERT_SQL)?;
    // `Value`'s Display is its compact JSON text and cannot fail.
    let details = ev.details.to_string();
    stmt.execute(params![ev.ts, ev.asset, ev.kind.as_str(), i64::from(ev.severity), ev.message, details])?;
    Ok(())
}

/// Builds ` WHERE ...` for `q` (empty when `q` selects everything) and its
/// arguments. Kinds are deduplicated and put in a stable order so the SQL
/// text, and so the cached statement, depends only on the shape of `q`.
fn where_clause(q: &EventQuery) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value as V;
    let mut conds: Vec<String> = Vec::new();
    let mut args: Vec<V> = Vec::new();
    if let Some(from) = q.from {
        conds.push("ts >= ?".into());
        args.push(V::Integer(from));
    }
    if let Some(to) = q.to {
        conds.push("ts < ?".into());
        args.push(V::Integer(to));
    }
    if let Some(asset) = &q.asset {
        conds.push("asset = ?".into());
        args.push(V::Text(asset.clone()));
    }
    let kinds: Vec<EventKind> = EventKind::ALL.into_iter().filter(|k| q.kinds.contains(k)).collect();
    if !kinds.is_empty() {
        let marks = vec!["?"; kinds.len()].join(", ");
        conds.push(format!("kind IN ({marks})"));
        args.extend(kinds.iter().map(|k| V::Text(k.as_str().to_owned())));
    }
    if conds.is_empty() {
        (String::new(), args)
    } else {
        (format!(" WHERE {}", conds.join(" AND ")), args)
    }
}

fn decode(row: &Row<'_>) -> Result<Event, EventLogError> {
    let id: i64 = row.get(0)?;
    let kind_text: String = row.get(3)?;
    let kind =
        kind_text.parse::<EventKind>().map_err(|_| EventLogError::UnknownKind { id, kind: kind_text.clone() })?;
    let severity_raw: i64 = row.get(4)?;
    let severity =
        u16::try_from(severity_raw).map_err(|_| EventLogError::BadSeverity { id, severity: severity_raw })?;
    let details_text: String = row.get(6)?;
    let details = serde_json::from_str(&details_text).map_err(|source| EventLogError::Json { id, source })?;
    Ok(Event { id, ts: row.get(1)?, asset: row.get(2)?, kind, severity, message: row.get(5)?, details })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(ts: i64, asset: Option<&str>, kind: EventKind, msg: &str) -> Event {
        Event {
            id: 0,
            ts,
            asset: asset.map(str::to_owned),
            kind,
            severity: 500,
            message: msg.to_owned(),
            details: json!({}),
        }
    }

    fn temp_log() -> (tempfile::TempDir, std::path::PathBuf, EventLog) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.sqlite");
        let log = EventLog::open(&path).expect("open");
        (dir, path, log)
    }

    #[test]
    fn explanations_are_kept_with_their_events() {
        let (_dir, path, log) = temp_log();
        let ids = log
            .append_many(&[
                ev(1, Some("capper"), EventKind::Anomaly, "a"),
                ev(2, Some("capper"), EventKind::Alarm, "b"),
            ])
            .unwrap();
        let q = EventQuery { kinds: vec![EventKind::Anomaly, EventKind::Alarm], ..Default::default() };
        assert_eq!(log.unexplained(&q).unwrap().len(), 2);
        let x = StoredExplanation {
            event_id: ids[0],
            written_at: 5,
            written_by: "template".into(),
            text: "bearing wear".into(),
            details: json!({ "likely": ["bearing_wear"] }),
        };
        log.put_explanation(&x).unwrap();
        let left = log.unexplained(&q).unwrap();
        assert_eq!(left.iter().map(|e| e.id).collect::<Vec<_>>(), vec![ids[1]]);
        drop(log);
        let log = EventLog::open(&path).unwrap();
        assert_eq!(log.explanation(ids[0]).unwrap(), Some(x));
        assert_eq!(log.explanation(ids[1]).unwrap(), None);
    }

    #[test]
    fn event_log_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<EventLog>();
    }

    #[test]
    fn opens_with_wal_full_sync_and_schema_version() {
        let (_dir, _path, log) = temp_log();
        assert_eq!(log.schema_version().unwrap(), SCHEMA_VERSION);
        let conn = log.conn.lock();
        let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = conn.pragma_query_value(None, "synchronous", |r| r.get(0)).unwrap();
        assert_eq!(sync, 2, "FULL");
    }

    #[test]
    fn append_returns_increasing_ids_and_get_reads_back() {
        let (_dir, _path, log) = temp_log();
        let a = log.append(&ev(10, Some("filler"), EventKind::Alarm, "a")).unwrap();
        let b = log.append(&ev(20, None, EventKind::Audit, "b")).unwrap();
        assert!(b > a);
        let got = log.get(b).unwrap().unwrap();
        assert_eq!(got.id, b);
        assert_eq!(got.asset, None);
        assert_eq!(got.kind, EventKind::Audit);
        assert_eq!(got.message, "b");
        assert!(log.get(b + 100).unwrap().is_none());
    }

    #[test]
    fn query_by_time_range_asset_and_kind() {
        let (_dir, _path, log) = temp_log();
        log.append_many(&[
            ev(100, Some("filler"), EventKind::Alarm, "f1"),
            ev(200, Some("capper"), EventKind::Alarm, "c1"),
            ev(300, Some("filler"), EventKind::StateChange, "f2"),
            ev(400, Some("filler"), EventKind::Anomaly, "f3"),
            ev(500, None, EventKind::Comms, "x"),
        ])
        .unwrap();
        let msgs = |q: &EventQuery| -> Vec<String> { log.query(q).unwrap().into_iter().map(|e| e.message).collect() };

        // Everything, oldest first.
        assert_eq!(msgs(&EventQuery::default()), ["f1", "c1", "f2", "f3", "x"]);
        // `to` is exclusive, `from` inclusive.
        let q = EventQuery { from: Some(200), to: Some(400), ..Default::default() };
        assert_eq!(msgs(&q), ["c1", "f2"]);
        assert_eq!(log.count(&q).unwrap(), 2);
        // By asset.
        let q = EventQuery { asset: Some("filler".into()), ..Default::default() };
        assert_eq!(msgs(&q), ["f1", "f2", "f3"]);
        // By kinds (duplicates and order do not matter).
        let q =
            EventQuery { kinds: vec![EventKind::Anomaly, EventKind::Alarm, EventKind::Anomaly], ..Default::default() };
        assert_eq!(msgs(&q), ["f1", "c1", "f3"]);
        // Combined, newest first, limited.
        let q = EventQuery {
            from: Some(100),
            asset: Some("filler".into()),
            kinds: vec![EventKind::Alarm, EventKind::Anomaly, EventKind::StateChange],
            limit: Some(2),
            newest_first: true,
            ..Default::default()
        };
        assert_eq!(msgs(&q), ["f3", "f2"]);
        assert_eq!(log.count(&q).unwrap(), 3, "count ignores limit");
        // Limit zero.
        let q = EventQuery { limit: Some(0), ..Default::default() };
        assert!(msgs(&q).is_empty());
    }

    #[test]
    fn equal_timestamps_keep_insertion_order() {
        let (_dir, _path, log) = temp_log();
        for m in ["a", "b", "c"] {
            log.append(&ev(7, None, EventKind::Audit, m)).unwrap();
        }
        let asc: Vec<_> = log.query(&EventQuery::default()).unwrap().into_iter().map(|e| e.message).collect();
        assert_eq!(asc, ["a", "b", "c"]);
        let desc: Vec<_> = log
            .query(&EventQuery { newest_first: true, ..Default::default() })
            .unwrap()
            .into_iter()
            .map(|e| e.message)
            .collect();
        assert_eq!(desc, ["c", "b", "a"]);
    }

    #[test]
    fn events_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.sqlite");
        let id = {
            let log = EventLog::open(&path).unwrap();
            log.append(&ev(42, Some("labeller"), EventKind::Acknowledgement, "ack")).unwrap()
        };
        let log = EventLog::open(&path).unwrap();
        let all = log.query(&EventQuery::default()).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].id, id);
        assert_eq!(all[0].ts, 42);
        assert_eq!(all[0].kind, EventKind::Acknowledgement);
        assert_eq!(log.schema_version().unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn append_many_is_atomic() {
        let (_dir, _path, log) = temp_log();
        log.append(&ev(1, None, EventKind::Audit, "before")).unwrap();
        // Make the third insert fail: a trigger rejects one message.
        log.conn
            .lock()
            .execute_batch(
                "CREATE TRIGGER reject_poison BEFORE INSERT ON events
                 WHEN NEW.message = 'poison'
                 BEGIN SELECT RAISE(ABORT, 'poisoned'); END;",
            )
            .unwrap();
        let batch = [
            ev(2, None, EventKind::Audit, "one"),
            ev(3, None, EventKind::Audit, "two"),
            ev(4, None, EventKind::Audit, "poison"),
            ev(5, None, EventKind::Audit, "four"),
        ];
        let err = log.append_many(&batch).unwrap_err();
        assert!(matches!(err, EventLogError::Sqlite(_)), "{err}");
        let all = log.query(&EventQuery::default()).unwrap();
        assert_eq!(all.len(), 1, "nothing of the failed batch is stored");
        assert_eq!(all[0].message, "before");

        // The log is still usable, and a good batch returns ids in order.
        let ids = log.append_many(&batch[..2]).unwrap();
        assert_eq!(ids.len(), 2);
        assert!(ids[0] < ids[1]);
        assert_eq!(log.count(&EventQuery::default()).unwrap(), 3);
        assert!(log.append_many(&[]).unwrap().is_empty());
    }

    #[test]
    fn details_json_round_trips() {
        let (_dir, _path, log) = temp_log();
        let mut e = ev(9, Some("filler"), EventKind::Anomaly, "bowl pressure drift");
        e.severity = 1000;
        e.details = json!({
            "tag": "filler.bowl_pressure",
            "score": 4.25,
            "window": [1, 2, 3],
            "unit": "bar",
            "note": "quote \" and unicode °C",
            "nested": {"ok": true, "none": null}
        });
        let id = log.append(&e).unwrap();
        let got = log.get(id).unwrap().unwrap();
        e.id = id;
        assert_eq!(got, e);

        // Null details (the serde default) round-trip too.
        let mut n = ev(10, None, EventKind::Report, "shift report");
        n.details = serde_json::Value::Null;
        let id = log.append(&n).unwrap();
        assert_eq!(log.get(id).unwrap().unwrap().details, serde_json::Value::Null);
    }

    #[test]
    fn unknown_kind_from_newer_version_is_an_error_naming_the_row() {
        let (_dir, _path, log) = temp_log();
        log.append(&ev(1, None, EventKind::Alarm, "ok")).unwrap();
        let id = {
            let conn = log.conn.lock();
            conn.execute(
                "INSERT INTO events (ts, asset, kind, severity, message, details)
                 VALUES (2, NULL, 'maintenance_window', 0, 'future', '{}')",
                [],
            )
            .unwrap();
            conn.last_insert_rowid()
        };
        match log.query(&EventQuery::default()) {
            Err(EventLogError::UnknownKind { id: bad, kind }) => {
                assert_eq!(bad, id);
                assert_eq!(kind, "maintenance_window");
            }
            other => panic!("expected UnknownKind, got {other:?}"),
        }
        // Queries that filter by known kinds skip the row and still work.
        let q = EventQuery { kinds: vec![EventKind::Alarm], ..Default::default() };
        assert_eq!(log.query(&q).unwrap().len(), 1);
    }

    #[test]
    fn broken_details_json_names_the_row() {
        let (_dir, _path, log) = temp_log();
        let id = log.append(&ev(1, None, EventKind::Alarm, "x")).unwrap();
        log.conn.lock().execute("UPDATE events SET details = '{oops' WHERE id = ?1", [id]).unwrap();
        match log.get(id) {
            Err(EventLogError::Json { id: bad, .. }) => assert_eq!(bad, id),
            other => panic!("expected Json error, got {other:?}"),
        }
    }

    #[test]
    fn migration_runs_once_and_newer_files_still_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.sqlite");
        drop(EventLog::open(&path).unwrap());
        // Pretend a newer linepilot bumped the version.
        {
            let conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "user_version", SCHEMA_VERSION + 3).unwrap();
        }
        let log = EventLog::open(&path).unwrap();
        assert_eq!(log.schema_version().unwrap(), SCHEMA_VERSION + 3);
        log.append(&ev(1, None, EventKind::Audit, "still works")).unwrap();
        assert_eq!(log.count(&EventQuery::default()).unwrap(), 1);
    }

    #[test]
    fn in_memory_log_works() {
        let log = EventLog::open_in_memory().unwrap();
        log.append(&ev(1, None, EventKind::Report, "r")).unwrap();
        assert_eq!(log.count(&EventQuery::default()).unwrap(), 1);
    }
}
