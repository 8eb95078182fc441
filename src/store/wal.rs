//! The write-ahead log: numbered segment files of CRC-protected records.
//!
//! Segment layout: a 16-byte header (`LPWAL\0`, format version u16 LE,
//! segment sequence u64 LE), then records `[payload len u32 LE][crc32c u32 LE][payload]`.
//! The WAL knows nothing of blocks; its payloads are sample batches encoded by
//! [`encode_batch`]. Group commit (when to fsync, whom to acknowledge) is the
//! engine's business; this module writes, syncs, rotates, replays and truncates.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};

use thiserror::Error;
use tracing::{info, warn};

use super::paths::{parse_numbered, sync_dir, DataPaths, WalSeq};
use crate::domain::{Quality, Sample, SeriesId, Value};

const MAGIC: &[u8; 6] = b"LPWAL\0";
const VERSION: u16 = 1;
const HEADER_LEN: u64 = 16;
const RECORD_HEADER: usize = 8;
/// A record larger than this is corrupt by definition.
const MAX_RECORD: u32 = 256 * 1024 * 1024;

/// WAL failures.
#[derive(Debug, Error)]
pub enum WalError {
    /// I/O on a segment file.
    #[error("WAL I/O on {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: io::Error,
    },
    /// A segment does not start with the WAL magic or has an unknown version.
    #[error("{path} is not a linepilot WAL segment (or has unknown version {version})")]
    BadHeader {
        /// The file.
        path: String,
        /// The version found.
        version: u16,
    },
    /// A record's checksum does not match.
    #[error("CRC mismatch in {path} at offset {offset}: stored {stored:08x}, computed {computed:08x}")]
    CrcMismatch {
        /// The file.
        path: String,
        /// Offset of the record.
        offset: u64,
        /// Stored CRC.
        stored: u32,
        /// Computed CRC.
        computed: u32,
    },
    /// A record payload could not be decoded.
    #[error("undecodable WAL record: {0}")]
    Decode(&'static str),
}

fn io_err(path: &std::path::Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io { path: path.display().to_string(), source }
}

/// Appends records to the current segment.
pub struct WalWriter {
    paths: DataPaths,
    seq: WalSeq,
    file: File,
    len: u64,
    segment_max_bytes: u64,
    buf: Vec<u8>,
}

impl WalWriter {
    /// Starts a fresh segment `seq` (the engine opens a new segment at every start).
    pub fn create(paths: DataPaths, seq: WalSeq, segment_max_bytes: u64) -> Result<WalWriter, WalError> {
        let dir = paths.wal_dir();
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let file = new_segment(&paths, seq)?;
        Ok(WalWriter { paths, seq, file, len: HEADER_LEN, segment_max_bytes, buf: Vec::with_capacity(1 << 20) })
    }

    /// The segment being written.
    pub fn seq(&self) -> WalSeq {
        self.seq
    }

    /// Frames `payload` as a record into the pending buffer (not yet written).
    pub fn push(&mut self, payload: &[u8]) {
        self.buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
        self.buf.extend_from_slice(payload);
    }

    /// Writes the pending records and fsyncs them. On failure the segment is
    /// cut back to its last durable length, so a failed group leaves no trace.
    pub fn commit(&mut self) -> Result<(), WalError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let path = self.paths.wal_segment(self.seq);
        let res = self.file.write_all(&self.buf).and_then(|_| self.file.sync_data());
        match res {
            Ok(()) => {
                self.len += self.buf.len() as u64;
                self.buf.clear();
                if self.len >= self.segment_max_bytes {
                    self.rotate()?;
                }
                Ok(())
            }
            Err(e) => {
                self.buf.clear();
                let _ = self.file.set_len(self.len);
                use std::io::Seek;
                let _ = self.file.seek(io::SeekFrom::Start(self.len));
                Err(io_err(&path)(e))
            }
        }
    }

    /// Closes the current segment and starts the next one; returns the new sequence.
    pub fn rotate(&mut self) -> Result<WalSeq, WalError> {
        let next = WalSeq(self.seq.0 + 1);
        self.file = new_segment(&self.paths, next)?;
        self.seq = next;
        self.len = HEADER_LEN;
        Ok(next)
    }
}

fn new_segment(paths: &DataPaths, seq: WalSeq) -> Result<File, WalError> {
    let path = paths.wal_segment(seq);
    let mut f = OpenOptions::new().create(true).write(true).truncate(true).open(&path).map_err(io_err(&path))?;
    let mut h = Vec::with_capacity(HEADER_LEN as usize);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&VERSION.to_le_bytes());
    h.extend_from_slice(&seq.0.to_le_bytes());
    f.write_all(&h).map_err(io_err(&path))?;
    f.sync_all().map_err(io_err(&path))?;
    sync_dir(&paths.wal_dir()).map_err(io_err(&path))?;
    Ok(f)
}

/// The segments present, in order.
pub fn list_segments(paths: &DataPaths) -> Result<Vec<WalSeq>, WalError> {
    let dir = paths.wal_dir();
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err(&dir)(e)),
    };
    for ent in rd {
        let ent = ent.map_err(io_err(&dir))?;
        if let Some(n) = ent.file_name().to_str().and_then(|n| parse_numbered(n, "wal")) {
            out.push(WalSeq(n));
        }
    }
    out.sort();
    Ok(out)
}

/// What a replay found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ReplayStats {
    /// Segments read.
    pub segments: usize,
    /// Records handed to the callback.
    pub records: u64,
    /// Bytes cut from torn segment tails.
    pub torn_bytes: u64,
}

/// Replays every record of every segment with sequence >= `from`, in order.
/// A torn or corrupt tail (incomplete record, CRC mismatch, garbage length)
/// is cut from the file with a warning; what precedes it is kept.
pub fn replay(
    paths: &DataPaths,
    from: WalSeq,
    mut on_record: impl FnMut(WalSeq, &[u8]) -> Result<(), WalError>,
) -> Result<ReplayStats, WalError> {
    let mut stats = ReplayStats::default();
    for seq in list_segments(paths)?.into_iter().filter(|s| *s >= from) {
        let path = paths.wal_segment(seq);
        let mut bytes = Vec::new();
        File::open(&path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(io_err(&path))?;
        stats.segments += 1;
        if bytes.len() < HEADER_LEN as usize {
            warn!(path = %path.display(), len = bytes.len(), "WAL segment shorter than its header; removing it");
            std::fs::remove_file(&path).map_err(io_err(&path))?;
            stats.torn_bytes += bytes.len() as u64;
            continue;
        }
        let version = u16::from_le_bytes([bytes[6], bytes[7]]);
        if &bytes[..6] != MAGIC || version != VERSION {
            return Err(WalError::BadHeader { path: path.display().to_string(), version });
        }
        let mut off = HEADER_LEN as usize;
        let mut cut: Option<(usize, String)> = None;
        while off < bytes.len() {
            if bytes.len() - off < RECORD_HEADER {
                cut = Some((off, "incomplete record header".into()));
                break;
            }
            let len = u32::from_le_bytes([bytes[off], bytes[off + 1], bytes[off + 2], bytes[off + 3]]);
            let stored = u32::from_le_bytes([bytes[off + 4], bytes[off + 5], bytes[off + 6], bytes[off + 7]]);
            if len > MAX_RECORD {
                cut = Some((off, format!("impossible record length {len}")));
                break;
            }
            let start = off + RECORD_HEADER;
            let end = start + len as usize;
            if end > bytes.len() {
                cut = Some((off, format!("record of {len} bytes, only {} present", bytes.len() - start)));
                break;
            }
            let payload = &bytes[start..end];
            let computed = crc32c::crc32c(payload);
            if computed != stored {
                cut = Some((
                    off,
                    WalError::CrcMismatch { path: path.display().to_string(), offset: off as u64, stored, computed }
                        .to_string(),
                ));
                break;
            }
            on_record(seq, payload)?;
            stats.records += 1;
            off = end;
        }
        if let Some((at, why)) = cut {
            let lost = bytes.len() - at;
            warn!(path = %path.display(), offset = at, bytes_cut = lost, reason = %why, "Cutting torn WAL tail");
            let f = OpenOptions::new().write(true).open(&path).map_err(io_err(&path))?;
            f.set_len(at as u64).map_err(io_err(&path))?;
            f.sync_all().map_err(io_err(&path))?;
            stats.torn_bytes += lost as u64;
        }
    }
    if stats.records > 0 || stats.torn_bytes > 0 {
        info!(segments = stats.segments, records = stats.records, torn_bytes = stats.torn_bytes, "WAL replayed");
    }
    Ok(stats)
}

/// Deletes every segment with sequence < `keep_from` (they are covered by a durable checkpoint).
pub fn truncate_before(paths: &DataPaths, keep_from: WalSeq) -> Result<usize, WalError> {
    let mut n = 0;
    for seq in list_segments(paths)? {
        if seq < keep_from {
            let p = paths.wal_segment(seq);
            std::fs::remove_file(&p).map_err(io_err(&p))?;
            n += 1;
        }
    }
    if n > 0 {
        let dir = paths.wal_dir();
        sync_dir(&dir).map_err(io_err(&dir))?;
    }
    Ok(n)
}

// ------------------------------------------------------------ batch codec

const TAG_F64: u8 = 0;
const TAG_I64: u8 = 1;
const TAG_FALSE: u8 = 2;
const TAG_TRUE: u8 = 3;
const TAG_STR: u8 = 4;

/// Encodes a batch of samples as one WAL payload:
/// `count u32`, then per sample `series u32, ts i64, quality u32, tag u8, value`.
pub fn encode_batch(samples: &[Sample], out: &mut Vec<u8>) {
    out.reserve(4 + samples.len() * 25);
    out.extend_from_slice(&(samples.len() as u32).to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.series.0.to_le_bytes());
        out.extend_from_slice(&s.ts.to_le_bytes());
        out.extend_from_slice(&s.quality.0.to_le_bytes());
        match &s.value {
            Value::F64(v) => {
                out.push(TAG_F64);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Value::I64(v) => {
                out.push(TAG_I64);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Value::Bool(b) => out.push(if *b { TAG_TRUE } else { TAG_FALSE }),
            Value::Str(s) => {
                out.push(TAG_STR);
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
    }
}

/// Decodes a payload written by [`encode_batch`].
pub fn decode_batch(buf: &[u8]) -> Result<Vec<Sample>, WalError> {
    let mut r = Cursor { buf, pos: 0 };
    let n = r.u32()? as usize;
    if n > buf.len() {
        return Err(WalError::Decode("sample count exceeds payload"));
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let series = SeriesId(r.u32()?);
        let ts = r.u64()? as i64;
        let quality = Quality(r.u32()?);
        let value = match r.u8()? {
            TAG_F64 => Value::F64(f64::from_bits(r.u64()?)),
            TAG_I64 => Value::I64(r.u64()? as i64),
            TAG_FALSE => Value::Bool(false),
            TAG_TRUE => Value::Bool(true),
            TAG_STR => {
                let len = r.u32()? as usize;
                let b = r.take(len)?;
                Value::Str(String::from_utf8(b.to_vec()).map_err(|_| WalError::Decode("string not UTF-8"))?)
            }
            _ => return Err(WalError::Decode("unknown value tag")),
        };
        out.push(Sample { series, ts, value, quality });
    }
    if r.pos != buf.len() {
        return Err(WalError::Decode("trailing bytes after batch"));
    }
    Ok(out)
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WalError> {
        let end = self.pos.checked_add(n).ok_or(WalError::Decode("length overflow"))?;
        let s = self.buf.get(self.pos..end).ok_or(WalError::Decode("record ends early"))?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, WalError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, WalError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, WalError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(i: u32) -> Vec<Sample> {
        vec![
            Sample {
                series: SeriesId(i),
                ts: i as i64 * 1000,
                value: Value::F64(i as f64 + 0.5),
                quality: Quality::GOOD,
            },
            Sample {
                series: SeriesId(i + 1),
                ts: -5,
                value: Value::Str(format!("state-{i}")),
                quality: Quality::BAD_COMMS,
            },
            Sample { series: SeriesId(7), ts: 9, value: Value::Bool(i.is_multiple_of(2)), quality: Quality::GOOD },
            Sample { series: SeriesId(8), ts: 10, value: Value::I64(-(i as i64)), quality: Quality::UNCERTAIN },
        ]
    }

    fn write_records(paths: &DataPaths, n: u32) -> Vec<Vec<u8>> {
        let mut w = WalWriter::create(paths.clone(), WalSeq(1), 1 << 30).unwrap();
        let mut payloads = Vec::new();
        for i in 0..n {
            let mut p = Vec::new();
            encode_batch(&batch(i), &mut p);
            w.push(&p);
            w.commit().unwrap();
            payloads.push(p);
        }
        payloads
    }

    #[test]
    fn batches_round_trip() {
        let mut p = Vec::new();
        encode_batch(&batch(3), &mut p);
        assert_eq!(decode_batch(&p).unwrap(), batch(3));
        assert!(decode_batch(&p[..p.len() - 1]).is_err());
    }

    /// Truncating the WAL at every byte offset inside its last record still
    /// recovers every earlier record, and the tail is cut from the file.
    #[test]
    fn torn_tail_at_every_offset_keeps_every_earlier_record() {
        let dir = tempfile::tempdir().unwrap();
        let paths = DataPaths::new(dir.path());
        let payloads = write_records(&paths, 5);
        let seg = paths.wal_segment(WalSeq(1));
        let full = std::fs::read(&seg).unwrap();
        let last_len = RECORD_HEADER + payloads[4].len();
        let last_start = full.len() - last_len;
        for cut in last_start..full.len() {
            std::fs::write(&seg, &full[..cut]).unwrap();
            let mut got = Vec::new();
            let stats = replay(&paths, WalSeq(0), |_, p| {
                got.push(decode_batch(p)?);
                Ok(())
            })
            .unwrap();
            assert_eq!(got.len(), 4, "cut at {cut}");
            for (i, b) in got.iter().enumerate() {
                assert_eq!(b, &batch(i as u32));
            }
            assert_eq!(stats.torn_bytes, (cut - last_start) as u64);
            assert_eq!(std::fs::metadata(&seg).unwrap().len(), last_start as u64, "tail must be cut");
        }
    }

    #[test]
    fn flipped_byte_in_last_record_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let paths = DataPaths::new(dir.path());
        let payloads = write_records(&paths, 3);
        let seg = paths.wal_segment(WalSeq(1));
        let mut full = std::fs::read(&seg).unwrap();
        let n = full.len();
        full[n - payloads[2].len() / 2] ^= 0x40;
        std::fs::write(&seg, &full).unwrap();
        let mut got = 0;
        replay(&paths, WalSeq(0), |_, _| {
            got += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(got, 2);
    }

    #[test]
    fn rotation_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let paths = DataPaths::new(dir.path());
        let mut w = WalWriter::create(paths.clone(), WalSeq(1), 64).unwrap();
        for i in 0..4 {
            let mut p = Vec::new();
            encode_batch(&batch(i), &mut p);
            w.push(&p);
            w.commit().unwrap();
        }
        assert_eq!(w.seq(), WalSeq(5), "each commit over 64 bytes rotates");
        assert_eq!(list_segments(&paths).unwrap().len(), 5);
        assert_eq!(truncate_before(&paths, WalSeq(3)).unwrap(), 2);
        let mut seen = Vec::new();
        replay(&paths, WalSeq(0), |s, _| {
            seen.push(s);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![WalSeq(3), WalSeq(4)]);
    }
}
