//! Sealed, immutable files: raw blocks (`.blk`) and per-minute rollup files
//! (`.rlp`) share one container format.
//!
//! Layout: 8-byte header (6-byte magic + version u16 LE), then one chunk per
//! series (its columns back to back), then the index, then a 48-byte footer:
//! `index_offset u64, index_len u32, index_crc u32, wal_through u64, min_ts i64,
//! max_ts i64, entries u32, b"LPE1"`. Each index entry carries the CRC32C of
//! its chunk, checked on every read. Files are written to a temp name,
//! fsynced, then renamed by the caller (see [`SealedFile::publish`]).

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::codec::{self, CodecError};
use super::points::{Column, Points};
use super::rollup::{Partial, RollupRows};
use crate::domain::{SeriesId, Timestamp, ValueKind};

/// Magic of raw block files.
pub const BLOCK_MAGIC: &[u8; 6] = b"LPBLK\0";
/// Magic of rollup files.
pub const ROLLUP_MAGIC: &[u8; 6] = b"LPRLP\0";
const VERSION: u16 = 1;
const FOOTER_LEN: u64 = 48;
const END_MAGIC: &[u8; 4] = b"LPE1";

/// Failures reading or writing sealed files.
#[derive(Debug, Error)]
pub enum BlockError {
    /// I/O.
    #[error("I/O on {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: io::Error,
    },
    /// Wrong magic, version or footer.
    #[error("{path}: not a linepilot sealed file ({why})")]
    BadFormat {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// A checksum does not match.
    #[error("{path}: CRC mismatch in {what}: stored {stored:08x}, computed {computed:08x}")]
    CrcMismatch {
        /// The file.
        path: String,
        /// The index or which series' chunk.
        what: String,
        /// Stored.
        stored: u32,
        /// Computed.
        computed: u32,
    },
    /// The file is shorter than its index says.
    #[error("{path}: truncated: expected {expected} bytes, found {actual}")]
    Truncated {
        /// The file.
        path: String,
        /// Bytes expected.
        expected: u64,
        /// Bytes present.
        actual: u64,
    },
    /// A column did not decode.
    #[error("{path}: series {series}: {source}")]
    Codec {
        /// The file.
        path: String,
        /// The series.
        series: u32,
        /// The cause.
        source: CodecError,
    },
}

/// Column codec ids, stored per column.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ColCodec {
    /// Delta-of-delta timestamps.
    DeltaOfDelta = 0,
    /// Gorilla XOR floats.
    Gorilla = 1,
    /// pcodec floats.
    PcoF64 = 2,
    /// pcodec integers.
    PcoI64 = 3,
    /// Run-length booleans / qualities.
    Runs = 4,
    /// Dictionary + run-length strings.
    Dict = 5,
    /// Timestamps at a constant step: first and step only.
    ConstStep = 6,
}

impl ColCodec {
    fn from_u8(v: u8) -> Option<ColCodec> {
        Some(match v {
            0 => ColCodec::DeltaOfDelta,
            1 => ColCodec::Gorilla,
            2 => ColCodec::PcoF64,
            3 => ColCodec::PcoI64,
            4 => ColCodec::Runs,
            5 => ColCodec::Dict,
            6 => ColCodec::ConstStep,
            _ => return None,
        })
    }
}

/// How float columns are compressed.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum FloatCodec {
    /// Gorilla XOR only.
    Gorilla,
    /// pcodec only.
    Pco,
    /// Both, keeping the smaller per column (the default: chosen by measurement, see docs/BENCHMARKS.md).
    #[default]
    Smaller,
}

/// Index entry of one series chunk.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The series.
    pub series: SeriesId,
    /// Its value kind.
    pub kind: ValueKind,
    /// Rows in the chunk.
    pub rows: u32,
    /// Earliest timestamp.
    pub min_ts: Timestamp,
    /// Latest timestamp.
    pub max_ts: Timestamp,
    /// Chunk offset in the file.
    pub offset: u64,
    /// Chunk length.
    pub len: u32,
    /// CRC32C of the chunk.
    pub crc: u32,
    /// Codec and length of each column.
    pub cols: Vec<(ColCodec, u32)>,
}

/// One chunk to write.
pub struct ChunkIn {
    /// The series.
    pub series: SeriesId,
    /// Its kind.
    pub kind: ValueKind,
    /// Rows.
    pub rows: u32,
    /// Earliest timestamp.
    pub min_ts: Timestamp,
    /// Latest timestamp.
    pub max_ts: Timestamp,
    /// Encoded columns.
    pub cols: Vec<(ColCodec, Vec<u8>)>,
}

fn ioe(path: &Path) -> impl FnOnce(io::Error) -> BlockError + '_ {
    move |source| BlockError::Io { path: path.display().to_string(), source }
}

/// A sealed file written under a temp name, ready to be renamed into place.
pub struct SealedFile {
    tmp: PathBuf,
    dest: PathBuf,
    /// Bytes written.
    pub bytes: u64,
}

impl SealedFile {
    /// Renames the file into place (the caller fsyncs the directory).
    pub fn publish(self) -> Result<PathBuf, BlockError> {
        std::fs::rename(&self.tmp, &self.dest).map_err(ioe(&self.dest))?;
        Ok(self.dest)
    }
}

/// Writes a container file to `dest` + `.tmp` and fsyncs it.
pub fn write_file(
    dest: &Path,
    magic: &[u8; 6],
    wal_through: u64,
    chunks: &[ChunkIn],
) -> Result<SealedFile, BlockError> {
    let tmp = dest.with_extension("tmp");
    let mut f = Counted { w: io::BufWriter::with_capacity(1 << 20, File::create(&tmp).map_err(ioe(&tmp))?), off: 0 };
    let put = |f: &mut Counted, b: &[u8]| -> Result<(), BlockError> { f.put(b).map_err(ioe(&tmp)) };
    put(&mut f, magic)?;
    put(&mut f, &VERSION.to_le_bytes())?;
    let mut index = Vec::with_capacity(chunks.len() * 48);
    let (mut min_ts, mut max_ts) = (i64::MAX, i64::MIN);
    for c in chunks {
        let start = f.off;
        let mut crc = 0u32;
        for (_, bytes) in &c.cols {
            crc = crc32c::crc32c_append(crc, bytes);
            put(&mut f, bytes)?;
        }
        let len = (f.off - start) as u32;
        min_ts = min_ts.min(c.min_ts);
        max_ts = max_ts.max(c.max_ts);
        index.extend_from_slice(&c.series.0.to_le_bytes());
        index.push(c.kind.code());
        index.extend_from_slice(&c.rows.to_le_bytes());
        index.extend_from_slice(&c.min_ts.to_le_bytes());
        index.extend_from_slice(&c.max_ts.to_le_bytes());
        index.extend_from_slice(&start.to_le_bytes());
        index.extend_from_slice(&len.to_le_bytes());
        index.extend_from_slice(&crc.to_le_bytes());
        index.push(c.cols.len() as u8);
        for (codec, bytes) in &c.cols {
            index.push(*codec as u8);
            index.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        }
    }
    let index_offset = f.off;
    put(&mut f, &index)?;
    let mut footer = Vec::with_capacity(FOOTER_LEN as usize);
    footer.extend_from_slice(&index_offset.to_le_bytes());
    footer.extend_from_slice(&(index.len() as u32).to_le_bytes());
    footer.extend_from_slice(&crc32c::crc32c(&index).to_le_bytes());
    footer.extend_from_slice(&wal_through.to_le_bytes());
    footer.extend_from_slice(&min_ts.to_le_bytes());
    footer.extend_from_slice(&max_ts.to_le_bytes());
    footer.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
    footer.extend_from_slice(END_MAGIC);
    put(&mut f, &footer)?;
    let bytes = f.off;
    let file = f.w.into_inner().map_err(|e| ioe(&tmp)(e.into_error()))?;
    file.sync_all().map_err(ioe(&tmp))?;
    Ok(SealedFile { tmp, dest: dest.to_path_buf(), bytes })
}

struct Counted {
    w: io::BufWriter<File>,
    off: u64,
}

impl Counted {
    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.w.write_all(b)?;
        self.off += b.len() as u64;
        Ok(())
    }
}

/// An open sealed file: its footer and index in memory, chunks read on demand.
#[derive(Debug)]
pub struct SealedReader {
    path: PathBuf,
    file: File,
    /// WAL segments up to and including this one are covered by the file.
    pub wal_through: u64,
    /// Earliest timestamp in the file.
    pub min_ts: Timestamp,
    /// Latest timestamp in the file.
    pub max_ts: Timestamp,
    /// Size on disk.
    pub bytes: u64,
    entries: Vec<Entry>, // sorted by series
}

impl SealedReader {
    /// Opens `path`, checking magic, footer and the index CRC.
    pub fn open(path: &Path, magic: &[u8; 6]) -> Result<SealedReader, BlockError> {
        let p = path.display().to_string();
        let bad = |why: &str| BlockError::BadFormat { path: p.clone(), why: why.to_string() };
        let file = File::open(path).map_err(ioe(path))?;
        let len = file.metadata().map_err(ioe(path))?.len();
        if len < 8 + FOOTER_LEN {
            return Err(BlockError::Truncated { path: p, expected: 8 + FOOTER_LEN, actual: len });
        }
        let mut head = [0u8; 8];
        file.read_exact_at(&mut head, 0).map_err(ioe(path))?;
        if &head[..6] != magic || u16::from_le_bytes([head[6], head[7]]) != VERSION {
            return Err(bad("magic or version"));
        }
        let mut ft = [0u8; FOOTER_LEN as usize];
        file.read_exact_at(&mut ft, len - FOOTER_LEN).map_err(ioe(path))?;
        if &ft[44..48] != END_MAGIC {
            return Err(bad("footer magic"));
        }
        let u64at = |b: &[u8], i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        let u32at = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let index_offset = u64at(&ft, 0);
        let index_len = u32at(&ft, 8) as u64;
        let index_crc = u32at(&ft, 12);
        if index_offset.checked_add(index_len) != Some(len - FOOTER_LEN) {
            return Err(bad("index bounds"));
        }
        let mut index = vec![0u8; index_len as usize];
        file.read_exact_at(&mut index, index_offset).map_err(ioe(path))?;
        let computed = crc32c::crc32c(&index);
        if computed != index_crc {
            return Err(BlockError::CrcMismatch { path: p, what: "index".into(), stored: index_crc, computed });
        }
        let n = u32at(&ft, 40) as usize;
        let mut entries = Vec::with_capacity(n);
        let mut i = 0usize;
        for _ in 0..n {
            if i + 42 > index.len() {
                return Err(bad("index entry"));
            }
            let series = SeriesId(u32at(&index, i));
            let kind = ValueKind::from_code(index[i + 4]).ok_or_else(|| bad("value kind"))?;
            let rows = u32at(&index, i + 5);
            let min_ts = u64at(&index, i + 9) as i64;
            let max_ts = u64at(&index, i + 17) as i64;
            let offset = u64at(&index, i + 25);
            let clen = u32at(&index, i + 33);
            let crc = u32at(&index, i + 37);
            let ncols = index[i + 41] as usize;
            i += 42;
            let mut cols = Vec::with_capacity(ncols);
            for _ in 0..ncols {
                if i + 5 > index.len() {
                    return Err(bad("column entry"));
                }
                let codec = ColCodec::from_u8(index[i]).ok_or_else(|| bad("column codec"))?;
                cols.push((codec, u32at(&index, i + 1)));
                i += 5;
            }
            if offset + clen as u64 > index_offset || cols.iter().map(|c| c.1 as u64).sum::<u64>() != clen as u64 {
                return Err(bad("chunk bounds"));
            }
            entries.push(Entry { series, kind, rows, min_ts, max_ts, offset, len: clen, crc, cols });
        }
        entries.sort_by_key(|e| e.series);
        Ok(SealedReader {
            path: path.to_path_buf(),
            file,
            wal_through: u64at(&ft, 16),
            min_ts: u64at(&ft, 24) as i64,
            max_ts: u64at(&ft, 32) as i64,
            bytes: len,
            entries,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The entry of `series`, if the file holds it.
    pub fn entry(&self, series: SeriesId) -> Option<&Entry> {
        self.entries.binary_search_by_key(&series, |e| e.series).ok().map(|i| &self.entries[i])
    }

    /// All entries.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Reads a chunk's columns, checking its CRC.
    pub fn read_cols(&self, e: &Entry) -> Result<Vec<(ColCodec, Vec<u8>)>, BlockError> {
        let mut buf = vec![0u8; e.len as usize];
        self.file.read_exact_at(&mut buf, e.offset).map_err(ioe(&self.path))?;
        let computed = crc32c::crc32c(&buf);
        if computed != e.crc {
            return Err(BlockError::CrcMismatch {
                path: self.path.display().to_string(),
                what: format!("chunk of series {}", e.series.0),
                stored: e.crc,
                computed,
            });
        }
        let mut out = Vec::with_capacity(e.cols.len());
        let mut at = 0usize;
        for (codec, len) in &e.cols {
            out.push((*codec, buf[at..at + *len as usize].to_vec()));
            at += *len as usize;
        }
        Ok(out)
    }

    fn codec_err(&self, series: SeriesId) -> impl FnOnce(CodecError) -> BlockError + '_ {
        move |source| BlockError::Codec { path: self.path.display().to_string(), series: series.0, source }
    }

    /// Reads the raw points of `series` (a `.blk` file).
    pub fn read_points(&self, series: SeriesId) -> Result<Option<Points>, BlockError> {
        let Some(e) = self.entry(series) else { return Ok(None) };
        let cols = self.read_cols(e)?;
        let n = e.rows as usize;
        let err = self.codec_err(series);
        let r: Result<Points, CodecError> = (|| {
            if cols.len() != 3 {
                return Err(CodecError::Corrupt("raw chunk needs 3 columns"));
            }
            let mut p = Points::new(e.kind);
            decode_ts(cols[0].0, &cols[0].1, n, &mut p.ts)?;
            p.values = decode_values(e.kind, cols[1].0, &cols[1].1, n)?;
            let mut q = Vec::new();
            codec::decode_runs(&cols[2].1, n, &mut q)?;
            if q.iter().any(|&x| x != 0) {
                p.quality = q;
            }
            p.sorted = true;
            Ok(p)
        })();
        r.map(Some).map_err(err)
    }

    /// Reads the rollup rows of `series` (a `.rlp` file).
    pub fn read_rollups(&self, series: SeriesId) -> Result<Option<RollupRows>, BlockError> {
        let Some(e) = self.entry(series) else { return Ok(None) };
        let cols = self.read_cols(e)?;
        let n = e.rows as usize;
        let err = self.codec_err(series);
        let r: Result<RollupRows, CodecError> = (|| {
            if cols.len() != 10 {
                return Err(CodecError::Corrupt("rollup chunk needs 10 columns"));
            }
            let mut minute = Vec::new();
            decode_ts(cols[0].0, &cols[0].1, n, &mut minute)?;
            let mut count = Vec::new();
            codec::decode_pco::<i64>(&cols[1].1, n, &mut count)?;
            let f = |i: usize| decode_f64(cols[i].0, &cols[i].1, n);
            let (sum, m2, min, max, first, last) = (f(2)?, f(3)?, f(4)?, f(5)?, f(6)?, f(7)?);
            let mut first_off = Vec::new();
            codec::decode_pco::<i64>(&cols[8].1, n, &mut first_off)?;
            let mut last_off = Vec::new();
            codec::decode_pco::<i64>(&cols[9].1, n, &mut last_off)?;
            let parts = (0..n)
                .map(|i| Partial {
                    count: count[i] as u64,
                    sum: sum[i],
                    m2: m2[i],
                    min: min[i],
                    max: max[i],
                    first: (minute[i] + first_off[i], first[i]),
                    last: (minute[i] + last_off[i], last[i]),
                })
                .collect();
            Ok(RollupRows { minute, parts })
        })();
        r.map(Some).map_err(err)
    }

    /// Reads every chunk and checks its CRC (background scrub).
    pub fn verify(&self) -> Result<(), BlockError> {
        for e in &self.entries {
            self.read_cols(e)?;
        }
        Ok(())
    }
}

/// Encodes a timestamp column: constant step when every delta is the same
/// (regular sampling from a PLC clock costs 16 bytes per chunk), else delta-of-delta.
fn encode_ts(ts: &[i64]) -> (ColCodec, Vec<u8>) {
    if let Some(step) = codec::constant_step(ts) {
        let mut b = Vec::with_capacity(16);
        b.extend_from_slice(&ts[0].to_le_bytes());
        b.extend_from_slice(&step.to_le_bytes());
        (ColCodec::ConstStep, b)
    } else {
        (ColCodec::DeltaOfDelta, codec::encode_timestamps(ts))
    }
}

fn decode_ts(codec: ColCodec, b: &[u8], n: usize, out: &mut Vec<i64>) -> Result<(), CodecError> {
    match codec {
        ColCodec::DeltaOfDelta => codec::decode_timestamps(b, n, out),
        ColCodec::ConstStep => {
            if b.len() != 16 {
                return Err(CodecError::Corrupt("constant-step column"));
            }
            let first = i64::from_le_bytes(b[..8].try_into().map_err(|_| CodecError::Truncated)?);
            let step = i64::from_le_bytes(b[8..].try_into().map_err(|_| CodecError::Truncated)?);
            out.reserve(n);
            let mut t = first;
            for _ in 0..n {
                out.push(t);
                t = t.wrapping_add(step);
            }
            Ok(())
        }
        _ => Err(CodecError::Corrupt("timestamp codec")),
    }
}

fn decode_f64(codec: ColCodec, b: &[u8], n: usize) -> Result<Vec<f64>, CodecError> {
    let mut v = Vec::new();
    match codec {
        ColCodec::Gorilla => codec::decode_gorilla(b, n, &mut v)?,
        ColCodec::PcoF64 => codec::decode_pco::<f64>(b, n, &mut v)?,
        _ => return Err(CodecError::Corrupt("float codec")),
    }
    Ok(v)
}

fn decode_values(kind: ValueKind, codec: ColCodec, b: &[u8], n: usize) -> Result<Column, CodecError> {
    Ok(match kind {
        ValueKind::F64 => Column::F64(decode_f64(codec, b, n)?),
        ValueKind::I64 => {
            let mut v = Vec::new();
            codec::decode_pco::<i64>(b, n, &mut v)?;
            Column::I64(v)
        }
        ValueKind::Bool => {
            let mut v = Vec::new();
            codec::decode_runs(b, n, &mut v)?;
            Column::Bool(v.into_iter().map(|x| x != 0).collect())
        }
        ValueKind::Str => {
            let mut v = Vec::new();
            codec::decode_strings(b, n, &mut v)?;
            Column::Str(v)
        }
    })
}

/// Encodes a float column with the chosen codec policy.
pub fn encode_f64(vals: &[f64], policy: FloatCodec) -> Result<(ColCodec, Vec<u8>), CodecError> {
    match policy {
        FloatCodec::Gorilla => Ok((ColCodec::Gorilla, codec::encode_gorilla(vals))),
        FloatCodec::Pco => Ok((ColCodec::PcoF64, codec::encode_pco(vals)?)),
        FloatCodec::Smaller => {
            let g = codec::encode_gorilla(vals);
            let p = codec::encode_pco(vals)?;
            Ok(if p.len() < g.len() { (ColCodec::PcoF64, p) } else { (ColCodec::Gorilla, g) })
        }
    }
}

/// Encodes normalized raw points of one series as a chunk.
pub fn raw_chunk(series: SeriesId, p: &Points, policy: FloatCodec) -> Result<ChunkIn, CodecError> {
    let vals = match &p.values {
        Column::F64(v) => encode_f64(v, policy)?,
        Column::I64(v) => (ColCodec::PcoI64, codec::encode_pco(v)?),
        Column::Bool(v) => (ColCodec::Runs, codec::encode_runs(v.iter().map(|&b| b as u32))),
        Column::Str(v) => (ColCodec::Dict, codec::encode_strings(v)),
    };
    let q = if p.quality.is_empty() {
        codec::encode_runs(std::iter::repeat_n(0, p.len()))
    } else {
        codec::encode_runs(p.quality.iter().copied())
    };
    Ok(ChunkIn {
        series,
        kind: p.values.kind(),
        rows: p.len() as u32,
        min_ts: p.ts.first().copied().unwrap_or(0),
        max_ts: p.ts.last().copied().unwrap_or(0),
        cols: vec![encode_ts(&p.ts), vals, (ColCodec::Runs, q)],
    })
}

/// Encodes rollup rows of one series as a chunk.
pub fn rollup_chunk(
    series: SeriesId,
    kind: ValueKind,
    r: &RollupRows,
    policy: FloatCodec,
) -> Result<ChunkIn, CodecError> {
    let col = |f: fn(&Partial) -> f64| -> Vec<f64> { r.parts.iter().map(f).collect() };
    let count: Vec<i64> = r.parts.iter().map(|p| p.count as i64).collect();
    let first_off: Vec<i64> = r.parts.iter().zip(&r.minute).map(|(p, m)| p.first.0 - m).collect();
    let last_off: Vec<i64> = r.parts.iter().zip(&r.minute).map(|(p, m)| p.last.0 - m).collect();
    let cols = vec![
        encode_ts(&r.minute),
        (ColCodec::PcoI64, codec::encode_pco(&count)?),
        encode_f64(&col(|p| p.sum), policy)?,
        encode_f64(&col(|p| p.m2), policy)?,
        encode_f64(&col(|p| p.min), policy)?,
        encode_f64(&col(|p| p.max), policy)?,
        encode_f64(&col(|p| p.first.1), policy)?,
        encode_f64(&col(|p| p.last.1), policy)?,
        (ColCodec::PcoI64, codec::encode_pco(&first_off)?),
        (ColCodec::PcoI64, codec::encode_pco(&last_off)?),
    ];
    Ok(ChunkIn {
        series,
        kind,
        rows: r.minute.len() as u32,
        min_ts: r.minute.first().copied().unwrap_or(0),
        max_ts: r.parts.last().map(|p| p.last.0).unwrap_or(0),
        cols,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Quality, Value};

    #[test]
    fn timestamps_use_constant_step_only_when_exact() {
        let regular: Vec<i64> = (0..3600).map(|i| 1_800_000_000_000_000_000 + i * 1_000_000_000).collect();
        let (c, b) = encode_ts(&regular);
        assert_eq!((c, b.len()), (ColCodec::ConstStep, 16));
        let mut out = Vec::new();
        decode_ts(c, &b, regular.len(), &mut out).unwrap();
        assert_eq!(out, regular);
        let mut jittered = regular.clone();
        jittered[1800] += 1; // one nanosecond off
        let (c, b) = encode_ts(&jittered);
        assert_eq!(c, ColCodec::DeltaOfDelta);
        let mut out = Vec::new();
        decode_ts(c, &b, jittered.len(), &mut out).unwrap();
        assert_eq!(out, jittered);
        assert_eq!(encode_ts(&regular[..1]).0, ColCodec::DeltaOfDelta, "one sample has no step");
        assert!(decode_ts(ColCodec::ConstStep, &b[..15], 3, &mut Vec::new()).is_err());
    }

    #[test]
    fn raw_and_rollup_round_trip_and_crc_catches_a_flipped_byte() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = Points::new(ValueKind::F64);
        let mut s = Points::new(ValueKind::Str);
        for i in 0..500i64 {
            let q = if i == 7 { Quality::BAD_TIMEOUT } else { Quality::GOOD };
            f.push(i * 1_000_000_000, &Value::F64((i % 17) as f64 * 0.25), q);
            s.push(i * 1_000_000_000, &Value::Str(if i < 250 { "running" } else { "fault" }.into()), Quality::GOOD);
        }
        let chunks = vec![
            raw_chunk(SeriesId(1), &f, FloatCodec::Smaller).unwrap(),
            raw_chunk(SeriesId(2), &s, FloatCodec::Smaller).unwrap(),
        ];
        let dest = dir.path().join("1.blk");
        write_file(&dest, BLOCK_MAGIC, 9, &chunks).unwrap().publish().unwrap();
        let r = SealedReader::open(&dest, BLOCK_MAGIC).unwrap();
        assert_eq!(r.wal_through, 9);
        assert_eq!(r.read_points(SeriesId(1)).unwrap().unwrap(), f);
        assert_eq!(r.read_points(SeriesId(2)).unwrap().unwrap(), s);
        assert!(r.read_points(SeriesId(3)).unwrap().is_none());

        let rows = RollupRows::from_points(&f);
        let rdest = dir.path().join("1.rlp");
        write_file(
            &rdest,
            ROLLUP_MAGIC,
            9,
            &[rollup_chunk(SeriesId(1), ValueKind::F64, &rows, FloatCodec::Smaller).unwrap()],
        )
        .unwrap()
        .publish()
        .unwrap();
        let rr = SealedReader::open(&rdest, ROLLUP_MAGIC).unwrap();
        assert_eq!(rr.read_rollups(SeriesId(1)).unwrap().unwrap(), rows);
        assert!(SealedReader::open(&rdest, BLOCK_MAGIC).is_err(), "magic is checked");

        // Flip one byte inside the first chunk: that chunk fails its CRC.
        let mut bytes = std::fs::read(&dest).unwrap();
        bytes[20] ^= 0x01;
        std::fs::write(&dest, &bytes).unwrap();
        let r = SealedReader::open(&dest, BLOCK_MAGIC).unwrap();
        assert!(matches!(r.read_points(SeriesId(1)), Err(BlockError::CrcMismatch { .. })));
        assert!(r.verify().is_err());
    }
}
