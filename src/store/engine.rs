//! `Store`: the engine that ties WAL, head, blocks, rollups, retention and
//! the catalog together, with group commit and recovery.
//!
//! Threads: one WAL thread owns the WAL writer and is the only writer of the
//! head (so WAL order and head order agree); one sealer thread turns frozen
//! heads into blocks + rollups, writes the checkpoint, truncates the WAL and
//! applies retention. Writers block until their batch is durable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};
use serde::Serialize;
use thiserror::Error;
use tracing::{debug, error, info, warn};

use super::block::{self, BlockError, FloatCodec, SealedReader, BLOCK_MAGIC, ROLLUP_MAGIC};
use super::catalog::{Catalog, CatalogError, SeriesMeta};
use super::config::StoreConfig;
use super::events::{EventLog, EventLogError};
use super::head::Head;
use super::paths::{parse_numbered, sync_dir, write_atomic, BlockId, DataPaths, WalSeq};
use super::points::Points;
use super::retention::{self, FileInfo, Policy};
use super::rollup::{fold_points, window_start, Partial, RollupRows, Windows, MINUTE_NS};
use super::wal::{self, WalError, WalWriter};
use crate::domain::{Quality, Sample, SeriesId, SeriesKey, Timestamp, Value, ValueKind};

/// Store failures.
#[derive(Debug, Error)]
pub enum StoreError {
    /// WAL failure.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// Catalog failure (including kind conflicts).
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// Block or rollup failure.
    #[error(transparent)]
    Block(#[from] BlockError),
    /// Event log failure.
    #[error(transparent)]
    Events(#[from] EventLogError),
    /// Other I/O.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Another process holds the data directory.
    #[error("data directory {0} is in use by another linepilot process")]
    Locked(String),
    /// A sample names a series the catalog does not know.
    #[error("unknown series id {0}")]
    UnknownSeries(u32),
    /// A sample's value kind differs from its series' kind.
    #[error("series {series} holds {expected} values, got {got}")]
    KindMismatch {
        /// The series.
        series: String,
        /// Its kind.
        expected: ValueKind,
        /// The sample's kind.
        got: ValueKind,
    },
    /// The store is shutting down.
    #[error("store is closed")]
    Closed,
    /// A block could not be encoded.
    #[error("encoding a block: {0}")]
    Codec(#[from] super::codec::CodecError),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
    let what = what.into();
    move |source| StoreError::Io { what, source }
}

/// The clock the store reads for retention and time-based sealing (injectable for tests).
pub trait Clock: Send + Sync {
    /// Now, UTC ns.
    fn now(&self) -> Timestamp;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        crate::domain::now_ns()
    }
}

/// Everything `Store::open` needs.
pub struct StoreArgs {
    /// The `[store]` config (data dir, fsync interval, retention ...).
    pub config: StoreConfig,
    /// Clock for retention.
    pub clock: Arc<dyn Clock>,
    /// Float codec policy.
    pub float_codec: FloatCodec,
    /// WAL segment size before rotation.
    pub wal_segment_bytes: u64,
    /// Run retention and sealing in the background (false for read-only tools and tests that drive them).
    pub background: bool,
}

impl StoreArgs {
    /// Defaults for `config`.
    pub fn new(config: StoreConfig) -> StoreArgs {
        StoreArgs {
            config,
            clock: Arc::new(SystemClock),
            float_codec: FloatCodec::default(),
            wal_segment_bytes: 64 << 20,
            background: true,
        }
    }
}

/// The latest sample of a series.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Latest {
    /// Its time.
    pub ts: Timestamp,
    /// Its value.
    pub value: Value,
    /// Its quality.
    pub quality: Quality,
}

/// Counters for health and metrics.
#[derive(Debug, Default, Serialize, Clone)]
pub struct StoreStats {
    /// Samples acknowledged since start.
    pub samples_written: u64,
    /// Write batches acknowledged.
    pub batches_written: u64,
    /// WAL group commits (fsyncs).
    pub wal_commits: u64,
    /// Blocks sealed since start.
    pub blocks_sealed: u64,
    /// Files moved to quarantine since start.
    pub quarantined: u64,
    /// Samples in the head.
    pub head_samples: u64,
    /// Bytes in the head.
    pub head_bytes: u64,
    /// Raw blocks on disk.
    pub blocks: usize,
    /// Bytes of raw blocks.
    pub block_bytes: u64,
    /// Rollup files on disk.
    pub rollups: usize,
    /// Bytes of rollup files.
    pub rollup_bytes: u64,
    /// Series in the catalog.
    pub series: usize,
    /// Last seal or retention error, if any.
    pub last_error: Option<String>,
}

struct Sealed {
    id: BlockId,
    reader: Arc<SealedReader>,
}

#[derive(Default)]
struct State {
    active: Head,
    frozen: Vec<Arc<Head>>,
    blocks: Vec<Sealed>,
    rollups: Vec<Sealed>,
    latest: Vec<Option<Latest>>,
}

#[derive(Default)]
struct Counters {
    samples: AtomicU64,
    batches: AtomicU64,
    commits: AtomicU64,
    seals: AtomicU64,
    quarantined: AtomicU64,
}

struct Inner {
    paths: DataPaths,
    config: StoreConfig,
    clock: Arc<dyn Clock>,
    float_codec: FloatCodec,
    catalog: Catalog,
    events: EventLog,
    state: RwLock<State>,
    seal_lock: Mutex<()>,
    next_block: AtomicU64,
    counters: Counters,
    last_error: Mutex<Option<String>>,
    closing: std::sync::atomic::AtomicBool,
    /// Serializes quarantines (see `Inner::quarantine`).
    quarantine_lock: Mutex<()>,
    /// A background sealer runs (writers may wait for it, see `wait_for_head_room`).
    background: bool,
    /// Signalled after every seal attempt, so writers held back by a full head retry.
    head_room: (Mutex<()>, Condvar),
    /// Writers that are encoding a batch for the WAL thread or have sent one
    /// it has not received yet: the group commit waits only for these.
    writers_coming: AtomicU64,
    _lock: std::fs::File,
}

/// Where the WAL thread reports a write's outcome.
type WriteAck = SyncSender<Result<(), StoreError>>;

enum WalMsg {
    Write { payload: Vec<u8>, samples: Vec<Sample>, ack: SyncSender<Result<(), StoreError>> },
    Rotate { ack: SyncSender<Result<WalSeq, StoreError>> },
}

/// The embedded time-series store. Cheap to share behind an `Arc`; every
/// method takes `&self`.
pub struct Store {
    inner: Arc<Inner>,
    tx: Mutex<Option<SyncSender<WalMsg>>>,
    seal_tx: Mutex<Option<SyncSender<()>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

const CHECKPOINT_MAGIC: &[u8; 8] = b"LPCKPT\0\x01";

fn read_checkpoint(paths: &DataPaths) -> Result<(WalSeq, BlockId), StoreError> {
    let p = paths.checkpoint();
    let b = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((WalSeq(0), BlockId(0))),
        Err(e) => return Err(io_err(format!("reading {}", p.display()))(e)),
    };
    if b.len() != 28
        || &b[..8] != CHECKPOINT_MAGIC
        || crc32c::crc32c(&b[..24]) != u32::from_le_bytes([b[24], b[25], b[26], b[27]])
    {
        // The checkpoint is written atomically, so this is real damage. The
        // blocks also record what they cover, so recovery can go on without it.
        error!(path = %p.display(), "Checkpoint file is corrupt; recovering from block footers");
        return Ok((WalSeq(0), BlockId(0)));
    }
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[8..16]);
    let seq = u64::from_le_bytes(a);
    a.copy_from_slice(&b[16..24]);
    Ok((WalSeq(seq), BlockId(u64::from_le_bytes(a))))
}

fn write_checkpoint(paths: &DataPaths, replay_from: WalSeq, last_block: BlockId) -> Result<(), StoreError> {
    let mut b = Vec::with_capacity(28);
    b.extend_from_slice(CHECKPOINT_MAGIC);
    b.extend_from_slice(&replay_from.0.to_le_bytes());
    b.extend_from_slice(&last_block.0.to_le_bytes());
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    write_atomic(&paths.checkpoint(), &b).map_err(io_err("writing checkpoint"))
}

fn list_numbered(dir: &std::path::Path, ext: &str) -> Result<Vec<u64>, StoreError> {
    let mut out = Vec::new();
    for ent in std::fs::read_dir(dir).map_err(io_err(format!("listing {}", dir.display())))? {
        let ent = ent.map_err(io_err(format!("listing {}", dir.display())))?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".tmp") {
            // A seal that did not finish: never published, so never counted.
            let _ = std::fs::remove_file(ent.path());
            continue;
        }
        if let Some(n) = parse_numbered(name, ext) {
            out.push(n);
        }
    }
    out.sort();
    Ok(out)
}

impl Inner {
    /// Moves a corrupt sealed file aside and stops serving it. Readers that
    /// hit the same damage at once (queries, the scrub) quarantine it once.
    fn quarantine(&self, path: &std::path::Path, why: &str) {
        let _serial = self.quarantine_lock.lock();
        {
            let mut st = self.state.write();
            st.blocks.retain(|b| b.reader.path() != path);
            st.rollups.retain(|b| b.reader.path() != path);
        }
        if !path.exists() {
            return; // already moved by another reader
        }
        let qdir = self.paths.quarantine_dir();
        let _ = std::fs::create_dir_all(&qdir);
        let name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        let dest = qdir.join(format!("{}.{}", name.to_string_lossy(), crate::domain::now_ns()));
        match std::fs::rename(path, &dest) {
            Ok(()) => {
                error!(file = %path.display(), moved_to = %dest.display(), reason = why, "Quarantined corrupt file; the rest of the store stays served")
            }
            Err(e) => {
                error!(file = %path.display(), error = %e, reason = why, "Corrupt file could not be moved to quarantine")
            }
        }
        self.counters.quarantined.fetch_add(1, Ordering::Relaxed);
    }

    fn kind_of(&self, id: SeriesId) -> Option<ValueKind> {
        self.catalog.kind(id)
    }

    fn head_bytes(&self) -> u64 {
        let st = self.state.read();
        (st.active.bytes() + st.frozen.iter().map(|h| h.bytes()).sum::<usize>()) as u64
    }

    /// Backpressure: while the head (active + frozen) holds twice
    /// `head_max_bytes`, the sealer has fallen behind the writers (a backfill,
    /// a slow disk); writers wait for it instead of growing memory without
    /// bound. Only with a background sealer; when the caller drives sealing
    /// (`flush`) there is nobody to wait for.
    fn wait_for_head_room(&self) {
        if !self.background {
            return;
        }
        let limit = self.config.head_limit_bytes().saturating_mul(2);
        let (lock, cv) = &self.head_room;
        let mut g = lock.lock();
        while self.head_bytes() >= limit && !self.closing.load(Ordering::SeqCst) {
            // Timed, so a missed wake-up costs at most one period.
            cv.wait_for(&mut g, Duration::from_millis(50));
        }
    }
}

impl Store {
    /// Opens the store in `args.config.data_dir`, recovering from the WAL.
    pub fn open(args: StoreArgs) -> Result<Store, StoreError> {
        let paths = DataPaths::new(&args.config.data_dir);
        for d in [paths.root().to_path_buf(), paths.wal_dir(), paths.block_dir(), paths.rollup_dir()] {
            std::fs::create_dir_all(&d).map_err(io_err(format!("creating {}", d.display())))?;
        }
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(paths.lock())
            .map_err(io_err("opening LOCK"))?;
        if lock.try_lock().is_err() {
            return Err(StoreError::Locked(paths.root().display().to_string()));
        }
        let catalog = Catalog::open(&paths)?;
        let events = EventLog::open(&paths.events())?;
        let (mut replay_from, ckpt_block) = read_checkpoint(&paths)?;

        let inner_state = State::default();
        let inner = Arc::new(Inner {
            paths: paths.clone(),
            config: args.config.clone(),
            clock: args.clock.clone(),
            float_codec: args.float_codec,
            catalog,
            events,
            state: RwLock::new(inner_state),
            seal_lock: Mutex::new(()),
            next_block: AtomicU64::new(ckpt_block.0 + 1),
            counters: Counters::default(),
            last_error: Mutex::new(None),
            closing: std::sync::atomic::AtomicBool::new(false),
            quarantine_lock: Mutex::new(()),
            background: args.background,
            head_room: (Mutex::new(()), Condvar::new()),
            writers_coming: AtomicU64::new(0),
            _lock: lock,
        });

        // Sealed files.
        let mut blocks = Vec::new();
        let mut max_block = ckpt_block.0;
        for id in list_numbered(&paths.block_dir(), "blk")? {
            let p = paths.block(BlockId(id));
            match SealedReader::open(&p, BLOCK_MAGIC) {
                Ok(r) => {
                    replay_from = replay_from.max(WalSeq(r.wal_through + 1));
                    max_block = max_block.max(id);
                    blocks.push(Sealed { id: BlockId(id), reader: Arc::new(r) });
                }
                Err(e) => inner.quarantine(&p, &e.to_string()),
            }
        }
        let mut rollups = Vec::new();
        for id in list_numbered(&paths.rollup_dir(), "rlp")? {
            let p = paths.rollup(BlockId(id));
            if id > max_block {
                // Written just before a block whose rename never happened.
                warn!(file = %p.display(), "Removing rollup file of an unfinished seal");
                let _ = std::fs::remove_file(&p);
                continue;
            }
            match SealedReader::open(&p, ROLLUP_MAGIC) {
                Ok(r) => rollups.push(Sealed { id: BlockId(id), reader: Arc::new(r) }),
                Err(e) => inner.quarantine(&p, &e.to_string()),
            }
        }
        inner.next_block.store(max_block + 1, Ordering::SeqCst);

        // WAL replay into the head.
        let mut head = Head::default();
        let mut skipped = 0usize;
        let stats = wal::replay(&paths, replay_from, |_, payload| {
            let batch = wal::decode_batch(payload)?;
            skipped += head.apply(&batch, |id| inner.kind_of(id));
            Ok(())
        })?;
        if skipped > 0 {
            warn!(skipped, "WAL samples of unknown series or kind were skipped");
        }
        let next_seq =
            wal::list_segments(&paths)?.last().map(|s| WalSeq(s.0 + 1)).unwrap_or(WalSeq(1)).max(replay_from);
        let writer = WalWriter::create(paths.clone(), next_seq, args.wal_segment_bytes)?;
        info!(data_dir = %paths.root().display(), series = inner.catalog.len(), blocks = blocks.len(), rollups = rollups.len(),
              wal_records = stats.records, head_samples = head.samples(), "Store opened");

        {
            let mut st = inner.state.write();
            st.blocks = blocks;
            st.rollups = rollups;
            st.active = head;
        }
        Store::rebuild_latest(&inner)?;

        let (tx, rx) = mpsc::sync_channel::<WalMsg>(64);
        let (seal_tx, seal_rx) = mpsc::sync_channel::<()>(1);
        let mut threads = Vec::new();
        {
            let inner = inner.clone();
            let seal_tx = seal_tx.clone();
            let interval: Duration = args.config.fsync_interval.0;
            threads.push(
                std::thread::Builder::new()
                    .name("store-wal".into())
                    .spawn(move || wal_loop(inner, writer, rx, seal_tx, interval))
                    .map_err(io_err("spawning WAL thread"))?,
            );
        }
        let store = Store {
            inner: inner.clone(),
            tx: Mutex::new(Some(tx.clone())),
            seal_tx: Mutex::new(Some(seal_tx)),
            threads: Mutex::new(threads),
        };
        if args.background {
            let inner2 = inner.clone();
            let h = std::thread::Builder::new()
                .name("store-sealer".into())
                .spawn(move || sealer_loop(inner2, tx, seal_rx))
                .map_err(io_err("spawning sealer thread"))?;
            store.threads.lock().push(h);
            let inner3 = inner.clone();
            let h = std::thread::Builder::new()
                .name("store-scrub".into())
                .spawn(move || scrub(&inner3))
                .map_err(io_err("spawning scrub thread"))?;
            store.threads.lock().push(h);
        } else {
            drop((seal_rx, tx));
        }
        Ok(store)
    }
}

impl Store {
    fn rebuild_latest(inner: &Inner) -> Result<(), StoreError> {
        let n = inner.catalog.len();
        let mut latest: Vec<Option<Latest>> = vec![None; n];
        let blocks: Vec<Arc<SealedReader>> = {
            let st = inner.state.read();
            st.blocks.iter().map(|b| b.reader.clone()).collect()
        };
        // Newest sample per series among the blocks: find the block with the
        // greatest max_ts per series, decode only that chunk.
        let mut best: Vec<Option<(Timestamp, usize)>> = vec![None; n];
        for (bi, b) in blocks.iter().enumerate() {
            for e in b.entries() {
                let i = e.series.0 as usize;
                if i < n && best[i].is_none_or(|(t, _)| e.max_ts >= t) {
                    best[i] = Some((e.max_ts, bi));
                }
            }
        }
        for (i, b) in best.iter().enumerate() {
            let Some((_, bi)) = b else { continue };
            match blocks[*bi].read_points(SeriesId(i as u32)) {
                Ok(Some(mut p)) => {
                    p.normalize();
                    if let Some(j) = p.len().checked_sub(1) {
                        latest[i] = Some(Latest { ts: p.ts[j], value: p.values.get(j), quality: p.quality_at(j) });
                    }
                }
                Ok(None) => {}
                Err(e) => inner.quarantine(blocks[*bi].path(), &e.to_string()),
            }
        }
        let mut st = inner.state.write();
        for (id, p) in st.active.iter() {
            let i = id.0 as usize;
            if let Some(j) = (0..p.len()).max_by_key(|&j| (p.ts[j], j)) {
                if i < n && latest[i].as_ref().is_none_or(|l| p.ts[j] >= l.ts) {
                    latest[i] = Some(Latest { ts: p.ts[j], value: p.values.get(j), quality: p.quality_at(j) });
                }
            }
        }
        st.latest = latest;
        Ok(())
    }

    /// The series catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    /// The event log.
    pub fn events(&self) -> &EventLog {
        &self.inner.events
    }

    /// The data directory layout.
    pub fn paths(&self) -> &DataPaths {
        &self.inner.paths
    }

    /// Ids of `keys`, creating missing series durably (see [`Catalog::resolve`]).
    pub fn resolve(&self, keys: &[(SeriesKey, ValueKind)]) -> Result<Vec<SeriesId>, StoreError> {
        Ok(self.inner.catalog.resolve(keys)?)
    }

    /// Writes a batch and returns once it is durable (group commit) and
    /// visible to queries. Every sample's series must exist and its value
    /// must be of the series' kind; otherwise nothing of the batch is written.
    pub fn write(&self, samples: Vec<Sample>) -> Result<(), StoreError> {
        if samples.is_empty() {
            return Ok(());
        }
        {
            if let Err((id, expected, got)) = self.inner.catalog.check_kinds(&samples) {
                return Err(match self.inner.catalog.meta(id) {
                    None => StoreError::UnknownSeries(id.0),
                    Some(m) => StoreError::KindMismatch { series: m.key.to_string(), expected, got },
                });
            }
        }
        self.inner.wait_for_head_room();
        // Announce the batch before encoding it, so a group commit that is
        // gathering waits for it; the WAL thread takes the count back when it
        // receives the batch (or this writer does, if the send fails).
        let coming = &self.inner.writers_coming;
        coming.fetch_add(1, Ordering::SeqCst);
        let mut payload = Vec::new();
        wal::encode_batch(&samples, &mut payload);
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        let sent =
            self.tx.lock().clone().ok_or(StoreError::Closed).and_then(|tx| {
                tx.send(WalMsg::Write { payload, samples, ack: ack_tx }).map_err(|_| StoreError::Closed)
            });
        if let Err(e) = sent {
            coming.fetch_sub(1, Ordering::SeqCst);
            return Err(e);
        }
        ack_rx.recv().map_err(|_| StoreError::Closed)?
    }

    /// [`Store::write`] from async code (runs on the blocking pool).
    pub async fn write_async(self: &Arc<Self>, samples: Vec<Sample>) -> Result<(), StoreError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.write(samples)).await.map_err(|_| StoreError::Closed)?
    }

    /// The latest sample of each of `ids`.
    pub fn latest(&self, ids: &[SeriesId]) -> Vec<Option<Latest>> {
        let st = self.inner.state.read();
        ids.iter().map(|id| st.latest.get(id.0 as usize).cloned().flatten()).collect()
    }

    /// Raw samples of `id` with `from <= ts < to`, sorted, one per timestamp
    /// (the last written wins: newer blocks over older, the head over blocks).
    pub fn range(&self, id: SeriesId, from: Timestamp, to: Timestamp) -> Result<Points, StoreError> {
        let kind = self.inner.kind_of(id).ok_or(StoreError::UnknownSeries(id.0))?;
        let (files, head) = self.snapshot(id, from, to, false);
        let mut parts = Vec::new();
        for b in files {
            match b.read_points(id) {
                Ok(Some(p)) => parts.push(p.range(from, to)),
                Ok(None) => {}
                Err(e) => self.inner.quarantine(b.path(), &e.to_string()),
            }
        }
        parts.extend(head);
        Ok(Points::merge(kind, parts))
    }

    /// The sealed files overlapping [from, to) (raw blocks, or rollup files
    /// when `rollups`; oldest first) and the head's points of `id` in
    /// [from, to), taken under one lock: a seal that publishes a block and
    /// drops the frozen head it came from can never fall between the two,
    /// so a query never misses (or double-reads) the samples being sealed.
    fn snapshot(
        &self,
        id: SeriesId,
        from: Timestamp,
        to: Timestamp,
        rollups: bool,
    ) -> (Vec<Arc<SealedReader>>, Vec<Points>) {
        let st = self.inner.state.read();
        let files = if rollups { &st.rollups } else { &st.blocks };
        let files = files
            .iter()
            .filter(|b| b.reader.max_ts >= from && b.reader.min_ts < to)
            .map(|b| b.reader.clone())
            .collect();
        (files, Self::head_parts(&st, id, from, to))
    }

    fn head_parts(st: &State, id: SeriesId, from: Timestamp, to: Timestamp) -> Vec<Points> {
        let mut out = Vec::new();
        for h in st.frozen.iter().map(|h| h.as_ref()).chain(std::iter::once(&st.active)) {
            if let Some(p) = h.series(id) {
                let r = p.range(from, to);
                if !r.is_empty() {
                    out.push(r);
                }
            }
        }
        out
    }

    /// Windowed aggregates of `id` over [from, to): one partial per window
    /// (windows aligned to the epoch). Answered from the per-minute rollups
    /// where the window and the range are whole minutes, else from raw data.
    pub fn aggregate(
        &self,
        id: SeriesId,
        from: Timestamp,
        to: Timestamp,
        window: i64,
    ) -> Result<Vec<(Timestamp, Partial)>, StoreError> {
        let kind = self.inner.kind_of(id).ok_or(StoreError::UnknownSeries(id.0))?;
        if !kind.is_numeric() || window <= 0 {
            return Ok(Vec::new());
        }
        let aligned = |t: Timestamp, edge: Timestamp| t == edge || t.rem_euclid(MINUTE_NS) == 0;
        let use_rollups = window % MINUTE_NS == 0 && aligned(from, i64::MIN) && aligned(to, i64::MAX);
        let mut w = Windows::new();
        if use_rollups {
            self.aggregate_rollups(id, kind, from, to, window, &mut w);
        } else {
            let p = self.range(id, from, to)?;
            fold_points(&p, from, to, window, &mut w);
        }
        Ok(w.into_iter().filter(|(_, p)| p.count > 0).collect())
    }

    /// The rollup path of [`Store::aggregate`]. A minute held by exactly one
    /// source (one rollup file, or the head) is taken as is. A minute held by
    /// several (late data, or a re-sent sample that overwrites a sealed one)
    /// may count one timestamp twice if its partials were merged, so it is
    /// recomputed from raw data with the same last-write-wins rule as
    /// [`Store::range`] -- unless retention already removed a raw block
    /// behind it, in which case the rollups are all there is and are merged.
    fn aggregate_rollups(
        &self,
        id: SeriesId,
        kind: ValueKind,
        from: Timestamp,
        to: Timestamp,
        window: i64,
        w: &mut Windows,
    ) {
        // One consistent view of rollups, raw blocks and the head.
        let (rollup_files, block_files, block_ids, head) = {
            let st = self.inner.state.read();
            let overlapping = |v: &Vec<Sealed>| -> Vec<Arc<SealedReader>> {
                v.iter().filter(|b| b.reader.max_ts >= from && b.reader.min_ts < to).map(|b| b.reader.clone()).collect()
            };
            let rollups: Vec<(BlockId, Arc<SealedReader>)> = st
                .rollups
                .iter()
                .filter(|b| b.reader.max_ts >= from && b.reader.min_ts < to)
                .map(|b| (b.id, b.reader.clone()))
                .collect();
            let ids: std::collections::HashSet<BlockId> = st.blocks.iter().map(|b| b.id).collect();
            (rollups, overlapping(&st.blocks), ids, Self::head_parts(&st, id, from, to))
        };
        // (minute, partial, can the minute be recomputed from raw?) from
        // every source: the rollup files oldest first, then the head.
        let mut rows_in: Vec<(Timestamp, Partial, bool)> = Vec::new();
        for (bid, f) in &rollup_files {
            match f.read_rollups(id) {
                Ok(Some(rows)) => {
                    let raw_available = block_ids.contains(bid);
                    rows_in.extend(
                        rows.minute
                            .iter()
                            .zip(&rows.parts)
                            .filter(|(m, _)| **m >= from && **m < to)
                            .map(|(m, part)| (*m, *part, raw_available)),
                    );
                }
                Ok(None) => {}
                Err(e) => self.inner.quarantine(f.path(), &e.to_string()),
            }
        }
        for p in &head {
            let mut per_minute = Windows::new();
            fold_points(p, from, to, MINUTE_NS, &mut per_minute);
            rows_in.extend(per_minute.into_iter().map(|(m, part)| (m, part, true)));
        }
        // Stable, so the parts of one minute keep their source order; sources
        // that do not overlap in time arrive sorted already (one linear pass).
        rows_in.sort_by_key(|r| r.0);
        let mut recompute = Vec::new();
        // The window being accumulated: minutes arrive in order, so each
        // window is finished before the next one starts.
        let mut cur: Option<(Timestamp, Partial)> = None;
        let finish = |cur: Option<(Timestamp, Partial)>, w: &mut Windows| {
            if let Some((start, acc)) = cur {
                w.entry(start).or_insert(Partial { count: 0, ..acc }).merge(&acc);
            }
        };
        for group in rows_in.chunk_by(|a, b| a.0 == b.0) {
            let m = group[0].0;
            if group.len() > 1 && group.iter().all(|r| r.2) {
                recompute.push(m);
                continue;
            }
            let start = window_start(m, window);
            if cur.as_ref().is_none_or(|(s, _)| *s != start) {
                finish(cur.take(), w);
                cur = Some((start, Partial { count: 0, ..group[0].1 }));
            }
            if let Some((_, acc)) = cur.as_mut() {
                for r in group {
                    acc.merge(&r.1);
                }
            }
        }
        finish(cur, w);
        let (Some(&lo), Some(&hi)) = (recompute.first(), recompute.last()) else { return };
        let hi = hi + MINUTE_NS;
        let mut parts = Vec::new();
        for b in block_files.iter().filter(|b| b.max_ts >= lo && b.min_ts < hi) {
            match b.read_points(id) {
                Ok(Some(p)) => parts.push(p.range(lo, hi)),
                Ok(None) => {}
                Err(e) => self.inner.quarantine(b.path(), &e.to_string()),
            }
        }
        parts.extend(head.iter().map(|p| p.range(lo, hi)));
        let raw = Points::merge(kind, parts);
        for m in recompute {
            fold_points(&raw.range(m, m + MINUTE_NS), from, to, window, w);
        }
    }

    /// Seals the head into a block now (also used by tests and shutdown).
    pub fn flush(&self) -> Result<bool, StoreError> {
        let tx = self.tx.lock().clone().ok_or(StoreError::Closed)?;
        seal(&self.inner, &tx)
    }

    /// Applies retention now.
    pub fn apply_retention(&self) -> Result<(), StoreError> {
        apply_retention(&self.inner)
    }

    /// Counters for health and metrics.
    pub fn stats(&self) -> StoreStats {
        let c = &self.inner.counters;
        let st = self.inner.state.read();
        StoreStats {
            samples_written: c.samples.load(Ordering::Relaxed),
            batches_written: c.batches.load(Ordering::Relaxed),
            wal_commits: c.commits.load(Ordering::Relaxed),
            blocks_sealed: c.seals.load(Ordering::Relaxed),
            quarantined: c.quarantined.load(Ordering::Relaxed),
            head_samples: st.active.samples() + st.frozen.iter().map(|h| h.samples()).sum::<u64>(),
            head_bytes: (st.active.bytes() + st.frozen.iter().map(|h| h.bytes()).sum::<usize>()) as u64,
            blocks: st.blocks.len(),
            block_bytes: st.blocks.iter().map(|b| b.reader.bytes).sum(),
            rollups: st.rollups.len(),
            rollup_bytes: st.rollups.iter().map(|b| b.reader.bytes).sum(),
            series: self.inner.catalog.len(),
            last_error: self.inner.last_error.lock().clone(),
        }
    }

    /// All series in the catalog.
    pub fn series(&self) -> Vec<SeriesMeta> {
        self.inner.catalog.all()
    }

    /// Stops the background threads after the queued writes are durable.
    /// The head stays in the WAL; the next open replays it.
    pub fn close(&self) {
        self.inner.closing.store(true, Ordering::SeqCst);
        self.tx.lock().take();
        self.seal_tx.lock().take();
        let threads: Vec<JoinHandle<()>> = self.threads.lock().drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

fn wal_loop(
    inner: Arc<Inner>,
    mut writer: WalWriter,
    rx: Receiver<WalMsg>,
    seal_tx: SyncSender<()>,
    interval: Duration,
) {
    let mut last_sync = Instant::now().checked_sub(interval).unwrap_or_else(Instant::now);
    let max_group_bytes: usize = 64 << 20;
    let mut pending_ctrl: Option<WalMsg> = None;
    loop {
        let first = match pending_ctrl.take() {
            Some(m) => m,
            None => match rx.recv() {
                Ok(m) => m,
                Err(_) => break,
            },
        };
        let mut group: Vec<(Vec<Sample>, WriteAck)> = Vec::new();
        match first {
            WalMsg::Rotate { ack } => {
                let _ = ack.send(rotate(&inner, &mut writer));
                continue;
            }
            WalMsg::Write { payload, samples, ack } => {
                inner.writers_coming.fetch_sub(1, Ordering::SeqCst);
                writer.push(&payload);
                let mut bytes = payload.len();
                group.push((samples, ack));
                // Group commit: take what is queued; wait for more only while
                // some writer is still encoding a batch, and at most until the
                // fsync interval since the last sync has passed. Waiting when
                // every writer is already in the group would only add latency:
                // writes that start now queue up during this fsync and form
                // the next group.
                let deadline = last_sync + interval;
                while bytes < max_group_bytes {
                    let now = Instant::now();
                    let msg = if now >= deadline || inner.writers_coming.load(Ordering::SeqCst) == 0 {
                        match rx.try_recv() {
                            Ok(m) => m,
                            Err(_) => break,
                        }
                    } else {
                        match rx.recv_timeout(deadline - now) {
                            Ok(m) => m,
                            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
                        }
                    };
                    match msg {
                        WalMsg::Write { payload, samples, ack } => {
                            inner.writers_coming.fetch_sub(1, Ordering::SeqCst);
                            writer.push(&payload);
                            bytes += payload.len();
                            group.push((samples, ack));
                        }
                        ctrl @ WalMsg::Rotate { .. } => {
                            pending_ctrl = Some(ctrl);
                            break;
                        }
                    }
                }
            }
        }
        let res = writer.commit();
        last_sync = Instant::now();
        inner.counters.commits.fetch_add(1, Ordering::Relaxed);
        match res {
            Ok(()) => {
                let mut n = 0u64;
                let over = {
                    let mut st = inner.state.write();
                    let State { active, latest, .. } = &mut *st;
                    for (samples, _) in &group {
                        active.apply(samples, |id| inner.kind_of(id));
                        for s in samples {
                            let i = s.series.0 as usize;
                            if i >= latest.len() {
                                latest.resize(i + 1, None);
                            }
                            if latest[i].as_ref().is_none_or(|l| s.ts >= l.ts) {
                                latest[i] = Some(Latest { ts: s.ts, value: s.value.clone(), quality: s.quality });
                            }
                        }
                        n += samples.len() as u64;
                    }
                    active.bytes() as u64 >= inner.config.head_limit_bytes()
                        || active.span() >= inner.config.block_duration.0.as_nanos() as i64
                };
                inner.counters.samples.fetch_add(n, Ordering::Relaxed);
                inner.counters.batches.fetch_add(group.len() as u64, Ordering::Relaxed);
                for (_, ack) in group {
                    let _ = ack.send(Ok(()));
                }
                if over {
                    let _ = seal_tx.try_send(());
                }
            }
            Err(e) => {
                error!(error = %e, "WAL commit failed; the group is refused");
                let msg = e.to_string();
                for (_, ack) in group {
                    let _ = ack.send(Err(StoreError::Io {
                        what: "WAL commit".into(),
                        source: std::io::Error::other(msg.clone()),
                    }));
                }
            }
        }
    }
    debug!("WAL thread stopped");
}

/// Rotates the WAL and freezes the active head, in WAL order.
fn rotate(inner: &Inner, writer: &mut WalWriter) -> Result<WalSeq, StoreError> {
    let seq = writer.rotate()?;
    let mut st = inner.state.write();
    let head = std::mem::take(&mut st.active);
    if !head.is_empty() {
        st.frozen.push(Arc::new(head));
    }
    Ok(seq)
}

/// Seals every frozen head (after freezing the active one) into one block
/// and its rollup file; then checkpoint, WAL truncation, retention.
fn seal(inner: &Inner, tx: &SyncSender<WalMsg>) -> Result<bool, StoreError> {
    let _g = inner.seal_lock.lock();
    let (ack_tx, ack_rx) = mpsc::sync_channel(1);
    tx.send(WalMsg::Rotate { ack: ack_tx }).map_err(|_| StoreError::Closed)?;
    let new_seq = ack_rx.recv().map_err(|_| StoreError::Closed)??;
    let frozen: Vec<Arc<Head>> = inner.state.read().frozen.clone();
    let started = Instant::now();
    let id = BlockId(inner.next_block.load(Ordering::SeqCst));
    let mut wrote = false;
    if !frozen.is_empty() {
        let mut ids: Vec<SeriesId> = frozen.iter().flat_map(|h| h.iter().map(|(id, _)| id)).collect();
        ids.sort();
        ids.dedup();
        let mut raw = Vec::with_capacity(ids.len());
        let mut rolled = Vec::new();
        let mut samples = 0u64;
        for sid in ids {
            let Some(kind) = inner.kind_of(sid) else { continue };
            let parts: Vec<Points> = frozen.iter().filter_map(|h| h.series(sid).cloned()).collect();
            let p = Points::merge(kind, parts);
            if p.is_empty() {
                continue;
            }
            samples += p.len() as u64;
            raw.push(block::raw_chunk(sid, &p, inner.float_codec)?);
            if kind.is_numeric() {
                let rows = RollupRows::from_points(&p);
                if !rows.minute.is_empty() {
                    rolled.push(block::rollup_chunk(sid, kind, &rows, inner.float_codec)?);
                }
            }
        }
        let wal_through = new_seq.0 - 1;
        let rf = block::write_file(&inner.paths.rollup(id), ROLLUP_MAGIC, wal_through, &rolled)?;
        let bf = block::write_file(&inner.paths.block(id), BLOCK_MAGIC, wal_through, &raw)?;
        let (rbytes, bbytes) = (rf.bytes, bf.bytes);
        let rpath = rf.publish()?;
        sync_dir(&inner.paths.rollup_dir()).map_err(io_err("syncing rollup dir"))?;
        let bpath = bf.publish()?;
        sync_dir(&inner.paths.block_dir()).map_err(io_err("syncing block dir"))?;
        let breader = Arc::new(SealedReader::open(&bpath, BLOCK_MAGIC)?);
        let rreader = Arc::new(SealedReader::open(&rpath, ROLLUP_MAGIC)?);
        let raw_age_limit = inner.config.retention_raw.0.as_nanos().min(i64::MAX as u128) as i64;
        if breader.max_ts < inner.clock.now().saturating_sub(raw_age_limit) {
            // Typically an import of old history: say so before retention removes it.
            warn!(
                block = id.0,
                newest_sample = %crate::api::query::format_time(breader.max_ts),
                retention_raw = %inner.config.retention_raw,
                "Sealed block is already older than retention_raw; retention removes its raw data now (rollups stay for retention_rollup). Raise retention_raw to keep imported history"
            );
        }
        {
            let mut st = inner.state.write();
            st.blocks.push(Sealed { id, reader: breader });
            st.rollups.push(Sealed { id, reader: rreader });
            let n = frozen.len();
            st.frozen.drain(..n);
        }
        inner.next_block.store(id.0 + 1, Ordering::SeqCst);
        inner.counters.seals.fetch_add(1, Ordering::Relaxed);
        info!(
            block = id.0,
            samples,
            block_bytes = bbytes,
            rollup_bytes = rbytes,
            bytes_per_sample = format!("{:.3}", bbytes as f64 / samples.max(1) as f64),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Sealed head into block"
        );
        wrote = true;
    }
    let last = BlockId(inner.next_block.load(Ordering::SeqCst).saturating_sub(1));
    write_checkpoint(&inner.paths, new_seq, last)?;
    wal::truncate_before(&inner.paths, new_seq)?;
    drop(_g);
    apply_retention(inner)?;
    Ok(wrote)
}

fn apply_retention(inner: &Inner) -> Result<(), StoreError> {
    let policy = Policy {
        raw_max_age: inner.config.retention_raw.0.as_nanos().min(i64::MAX as u128) as i64,
        rollup_max_age: inner.config.retention_rollup.0.as_nanos().min(i64::MAX as u128) as i64,
        disk_budget: inner.config.disk_budget.0,
    };
    let info = |v: &Vec<Sealed>| -> Vec<FileInfo> {
        v.iter().map(|s| FileInfo { id: s.id, max_ts: s.reader.max_ts, bytes: s.reader.bytes }).collect()
    };
    let plan = {
        let st = inner.state.read();
        retention::plan(inner.clock.now(), &policy, &info(&st.blocks), &info(&st.rollups))
    };
    if plan.blocks.is_empty() && plan.rollups.is_empty() {
        return Ok(());
    }
    {
        let mut st = inner.state.write();
        st.blocks.retain(|b| !plan.blocks.contains(&b.id));
        st.rollups.retain(|b| !plan.rollups.contains(&b.id));
    }
    for id in &plan.blocks {
        let p = inner.paths.block(*id);
        std::fs::remove_file(&p).map_err(io_err(format!("removing {}", p.display())))?;
    }
    for id in &plan.rollups {
        let p = inner.paths.rollup(*id);
        std::fs::remove_file(&p).map_err(io_err(format!("removing {}", p.display())))?;
    }
    info!(blocks = plan.blocks.len(), rollups = plan.rollups.len(), "Retention removed sealed files");
    Ok(())
}

fn sealer_loop(inner: Arc<Inner>, tx: SyncSender<WalMsg>, rx: Receiver<()>) {
    // Seal when the WAL thread asks (head too big or too long), and at least
    // once per block_duration of wall-clock time so a quiet line still seals.
    let period = inner.config.block_duration.0.min(Duration::from_secs(3600));
    let mut last = Instant::now();
    let retention_every = Duration::from_secs(60);
    let mut last_retention = Instant::now();
    loop {
        let wait = period.saturating_sub(last.elapsed()).max(Duration::from_millis(10));
        let got = rx.recv_timeout(wait.min(Duration::from_millis(500)));
        if inner.closing.load(Ordering::SeqCst) {
            break;
        }
        match got {
            Ok(()) => {}
            Err(RecvTimeoutError::Timeout) => {
                if last.elapsed() < period {
                    // Seals apply retention themselves; a quiet store checks once a minute.
                    if last_retention.elapsed() >= retention_every {
                        last_retention = Instant::now();
                        if let Err(e) = apply_retention(&inner) {
                            *inner.last_error.lock() = Some(e.to_string());
                        }
                    }
                    continue;
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
        last = Instant::now();
        let res = seal(&inner, &tx);
        inner.head_room.1.notify_all();
        match res {
            Ok(_) => *inner.last_error.lock() = None,
            Err(StoreError::Closed) => break,
            Err(e) => {
                error!(error = %e, "Sealing failed; the head stays in memory and in the WAL, will retry");
                *inner.last_error.lock() = Some(e.to_string());
            }
        }
    }
    inner.head_room.1.notify_all();
    debug!("Sealer thread stopped");
}

fn scrub(inner: &Inner) {
    let files: Vec<Arc<SealedReader>> = {
        let st = inner.state.read();
        st.blocks.iter().chain(st.rollups.iter()).map(|b| b.reader.clone()).collect()
    };
    for f in files {
        if let Err(e) = f.verify() {
            inner.quarantine(f.path(), &e.to_string());
        }
    }
}
