//! Where everything lives inside the data directory. Every path is built here.

use std::path::{Path, PathBuf};

/// Sequence number of a WAL segment file.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct WalSeq(pub u64);

/// Identity of a sealed block (and of the rollup file written with it).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BlockId(pub u64);

/// The layout of one data directory.
#[derive(Clone, Debug)]
pub struct DataPaths {
    root: PathBuf,
}

impl DataPaths {
    /// Layout under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataPaths { root: root.into() }
    }
    /// The data directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// Directory of WAL segments.
    pub fn wal_dir(&self) -> PathBuf {
        self.root.join("wal")
    }
    /// One WAL segment.
    pub fn wal_segment(&self, seq: WalSeq) -> PathBuf {
        self.wal_dir().join(format!("{:020}.wal", seq.0))
    }
    /// Directory of sealed raw blocks.
    pub fn block_dir(&self) -> PathBuf {
        self.root.join("blocks")
    }
    /// One block file.
    pub fn block(&self, id: BlockId) -> PathBuf {
        self.block_dir().join(format!("{:016}.blk", id.0))
    }
    /// Directory of per-minute rollup files.
    pub fn rollup_dir(&self) -> PathBuf {
        self.root.join("rollups")
    }
    /// The rollup file written with block `id`.
    pub fn rollup(&self, id: BlockId) -> PathBuf {
        self.rollup_dir().join(format!("{:016}.rlp", id.0))
    }
    /// Where corrupt files are moved.
    pub fn quarantine_dir(&self) -> PathBuf {
        self.root.join("quarantine")
    }
    /// The series catalog log.
    pub fn catalog(&self) -> PathBuf {
        self.root.join("catalog.log")
    }
    /// The durable checkpoint.
    pub fn checkpoint(&self) -> PathBuf {
        self.root.join("checkpoint")
    }
    /// The event log database.
    pub fn events(&self) -> PathBuf {
        self.root.join("events.sqlite")
    }
    /// The lock file that keeps two writers out.
    pub fn lock(&self) -> PathBuf {
        self.root.join("LOCK")
    }
}

/// Parses `<number>.<ext>` file names.
pub fn parse_numbered(name: &str, ext: &str) -> Option<u64> {
    name.strip_suffix(ext)?.strip_suffix('.')?.parse().ok()
}

/// fsyncs a directory so that renames and creations inside it are durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` atomically: temp file, fsync, rename, fsync dir.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}
