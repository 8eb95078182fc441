//! The series catalog: name + labels -> `SeriesId` and value kind.
//!
//! Series are created on first write and persisted before any sample that
//! names them reaches the WAL: `catalog.log` is an append-only file of
//! CRC-protected JSON records, fsynced once per batch of new series. A torn
//! tail is cut on open like the WAL's.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tracing::warn;

use super::paths::DataPaths;
use crate::domain::{SeriesId, SeriesKey, ValueKind};

const MAGIC: &[u8; 8] = b"LPCAT\0\0\x01";

/// Catalog failures.
#[derive(Debug, Error)]
pub enum CatalogError {
    /// I/O on the catalog file.
    #[error("catalog I/O on {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: io::Error,
    },
    /// The catalog file is not one of ours.
    #[error("{0} is not a linepilot series catalog")]
    BadHeader(String),
    /// A record is unreadable.
    #[error("catalog record: {0}")]
    Json(#[from] serde_json::Error),
    /// A series was written with a value of another kind than it was created with.
    #[error("series {key} holds {existing} values, not {attempted}")]
    KindConflict {
        /// The series.
        key: String,
        /// Its kind.
        existing: ValueKind,
        /// The kind that was written.
        attempted: ValueKind,
    },
    /// More than 2^32 series.
    #[error("series catalog is full")]
    Full,
}

/// What the catalog knows of one series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeriesMeta {
    /// Its id.
    pub id: SeriesId,
    /// Its name and labels.
    pub key: SeriesKey,
    /// The kind of its values.
    pub kind: ValueKind,
}

#[derive(Default)]
struct Index {
    by_canonical: HashMap<Box<str>, SeriesId>,
    all: Vec<SeriesMeta>,
}

/// The catalog of one store.
pub struct Catalog {
    index: RwLock<Index>,
    file: Mutex<File>,
    path: String,
}

/// The canonical text of a key, used for lookups without building a `SeriesKey`.
/// Separators are ASCII unit/record separators, which cannot appear in names
/// from any of our protocols without being escaped.
pub fn canonical(name: &str, labels: &[(impl AsRef<str>, impl AsRef<str>)], out: &mut String) {
    out.clear();
    out.push_str(name);
    for (k, v) in labels {
        out.push('\u{1f}');
        out.push_str(k.as_ref());
        out.push('\u{1e}');
        out.push_str(v.as_ref());
    }
}

fn canonical_of(key: &SeriesKey) -> String {
    let mut s = String::new();
    canonical(&key.name, &key.labels, &mut s);
    s
}

impl Catalog {
    /// Opens (or creates) the catalog of `paths`.
    pub fn open(paths: &DataPaths) -> Result<Catalog, CatalogError> {
        let p = paths.catalog();
        let path = p.display().to_string();
        let ioe = |source| CatalogError::Io { path: path.clone(), source };
        let mut file = OpenOptions::new().create(true).read(true).append(true).open(&p).map_err(ioe)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(ioe)?;
        let mut index = Index::default();
        if bytes.is_empty() {
            file.write_all(MAGIC).map_err(ioe)?;
            file.sync_all().map_err(ioe)?;
            if let Some(dir) = p.parent() {
                super::paths::sync_dir(dir).map_err(ioe)?;
            }
        } else {
            if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
                return Err(CatalogError::BadHeader(path));
            }
            let mut off = MAGIC.len();
            let mut good_end = off;
            while off + 8 <= bytes.len() {
                let len = u32::from_le_bytes([bytes[off], bytes[off + 1], bytes[off + 2], bytes[off + 3]]) as usize;
                let crc = u32::from_le_bytes([bytes[off + 4], bytes[off + 5], bytes[off + 6], bytes[off + 7]]);
                let Some(payload) = bytes.get(off + 8..off + 8 + len) else { break };
                if crc32c::crc32c(payload) != crc {
                    break;
                }
                let meta: SeriesMeta = serde_json::from_slice(payload)?;
                index.by_canonical.insert(canonical_of(&meta.key).into(), meta.id);
                if meta.id.0 as usize != index.all.len() {
                    warn!(id = meta.id.0, expected = index.all.len(), "Catalog ids out of order");
                }
                index.all.push(meta);
                off += 8 + len;
                good_end = off;
            }
            if good_end < bytes.len() {
                warn!(path = %path, cut = bytes.len() - good_end, "Cutting torn catalog tail");
                file.set_len(good_end as u64).map_err(ioe)?;
                file.sync_all().map_err(ioe)?;
            }
        }
        Ok(Catalog { index: RwLock::new(index), file: Mutex::new(file), path })
    }

    /// Looks a series up by its canonical text (see [`canonical`]).
    pub fn lookup_canonical(&self, canonical: &str) -> Option<(SeriesId, ValueKind)> {
        let idx = self.index.read();
        idx.by_canonical.get(canonical).map(|id| (*id, idx.all[id.0 as usize].kind))
    }

    /// Looks a series up by key.
    pub fn lookup(&self, key: &SeriesKey) -> Option<(SeriesId, ValueKind)> {
        self.lookup_canonical(&canonical_of(key))
    }

    /// Metadata of a series id.
    pub fn meta(&self, id: SeriesId) -> Option<SeriesMeta> {
        self.index.read().all.get(id.0 as usize).cloned()
    }

    /// Kind of a series id (no copy of its key, unlike [`Catalog::meta`]).
    pub fn kind(&self, id: SeriesId) -> Option<ValueKind> {
        self.index.read().all.get(id.0 as usize).map(|m| m.kind)
    }

    /// All series.
    pub fn all(&self) -> Vec<SeriesMeta> {
        self.index.read().all.clone()
    }

    /// The series named `name` whose labels include every pair of `labels`
    /// (copies only those, not the whole catalog).
    pub fn matching(&self, name: &str, labels: &[(String, String)]) -> Vec<SeriesMeta> {
        self.index.read().all.iter().filter(|m| m.key.name == name && m.key.matches_labels(labels)).cloned().collect()
    }

    /// Checks that every sample names a known series and carries a value of
    /// its kind; the first offender is returned as (series, expected, got).
    pub fn check_kinds(&self, samples: &[crate::domain::Sample]) -> Result<(), (SeriesId, ValueKind, ValueKind)> {
        let idx = self.index.read();
        for s in samples {
            let got = s.value.kind();
            match idx.all.get(s.series.0 as usize) {
                Some(m) if m.kind == got => {}
                Some(m) => return Err((s.series, m.kind, got)),
                None => return Err((s.series, got, got)),
            }
        }
        Ok(())
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.index.read().all.len()
    }

    /// True when no series exist.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns the ids of `keys`, creating (durably, with one fsync) those
    /// that do not exist yet. A kind conflict fails the whole call and
    /// creates nothing.
    pub fn resolve(&self, keys: &[(SeriesKey, ValueKind)]) -> Result<Vec<SeriesId>, CatalogError> {
        let mut out = Vec::with_capacity(keys.len());
        let mut missing = false;
        {
            let idx = self.index.read();
            for (k, kind) in keys {
                match idx.by_canonical.get(canonical_of(k).as_str()) {
                    Some(id) => {
                        check_kind(&idx.all[id.0 as usize], *kind)?;
                        out.push(*id);
                    }
                    None => {
                        missing = true;
                        out.push(SeriesId(u32::MAX));
                    }
                }
            }
        }
        if !missing {
            return Ok(out);
        }
        // Slow path: create under the write lock, append and fsync once.
        let mut file = self.file.lock();
        let mut idx = self.index.write();
        let mut buf = Vec::new();
        let mut created = Vec::new();
        for (i, (k, kind)) in keys.iter().enumerate() {
            let c = canonical_of(k);
            if let Some(id) = idx.by_canonical.get(c.as_str()).copied() {
                check_kind(&idx.all[id.0 as usize], *kind)?;
                out[i] = id;
                continue;
            }
            if let Some(prev) = created.iter().position(|(cc, _): &(String, SeriesMeta)| *cc == c) {
                check_kind(&created[prev].1, *kind)?;
                out[i] = created[prev].1.id;
                continue;
            }
            let id = SeriesId(u32::try_from(idx.all.len() + created.len()).map_err(|_| CatalogError::Full)?);
            let meta = SeriesMeta { id, key: k.clone(), kind: *kind };
            let payload = serde_json::to_vec(&meta)?;
            buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
            buf.extend_from_slice(&payload);
            out[i] = id;
            created.push((c, meta));
        }
        let ioe = |source| CatalogError::Io { path: self.path.clone(), source };
        file.write_all(&buf).map_err(ioe)?;
        file.sync_data().map_err(ioe)?;
        for (c, meta) in created {
            idx.by_canonical.insert(c.into(), meta.id);
            idx.all.push(meta);
        }
        Ok(out)
    }
}

fn check_kind(meta: &SeriesMeta, kind: ValueKind) -> Result<(), CatalogError> {
    if meta.kind == kind {
        Ok(())
    } else {
        Err(CatalogError::KindConflict { key: meta.key.to_string(), existing: meta.kind, attempted: kind })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_survive_reopen_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let paths = DataPaths::new(dir.path());
        {
            let c = Catalog::open(&paths).unwrap();
            let ids = c
                .resolve(&[
                    (SeriesKey::new("filler.bowl_pressure"), ValueKind::F64),
                    (SeriesKey::new("filler.state"), ValueKind::Str),
                    (SeriesKey::new("filler.bowl_pressure"), ValueKind::F64),
                ])
                .unwrap();
            assert_eq!(ids, vec![SeriesId(0), SeriesId(1), SeriesId(0)]);
            let err = c.resolve(&[(SeriesKey::new("filler.state"), ValueKind::F64)]).unwrap_err();
            assert!(matches!(err, CatalogError::KindConflict { .. }));
        }
        // A torn record at the end is cut.
        let p = paths.catalog();
        let mut bytes = std::fs::read(&p).unwrap();
        bytes.extend_from_slice(&[9, 0, 0, 0, 1, 2]);
        std::fs::write(&p, &bytes).unwrap();
        let c = Catalog::open(&paths).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c.lookup(&SeriesKey::new("filler.state")), Some((SeriesId(1), ValueKind::Str)));
        let id = c.resolve(&[(SeriesKey::new("x"), ValueKind::I64)]).unwrap();
        assert_eq!(id, vec![SeriesId(2)]);
        drop(c);
        assert_eq!(Catalog::open(&paths).unwrap().len(), 3);
    }
}
