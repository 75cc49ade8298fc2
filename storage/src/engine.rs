//! The `Engine` trait: an ordered key-value store with column families, atomic write batches and
//! an explicit durability point. RocksDB implements it for real nodes, `MemEngine` for tests and
//! the simulator. Everything above this trait (MVCC, the Paxos log, the node) is engine-agnostic.

use crate::Result;

/// Column families, one per kind of state (DESIGN.md §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cf {
    /// MVCC user data: `escaped user key ‖ !commit_ts`.
    Data,
    /// Paxos log entries: `group ‖ slot`.
    Log,
    /// Hard state, applied state and range descriptors, GC horizon.
    Meta,
    /// Transaction records (prepared / committed) as applied state.
    Txn,
}

impl Cf {
    /// Every column family, in a fixed order.
    pub const ALL: [Cf; 4] = [Cf::Data, Cf::Log, Cf::Meta, Cf::Txn];

    /// The column family's name in RocksDB.
    pub const fn name(self) -> &'static str {
        match self {
            Cf::Data => "data",
            Cf::Log => "paxos",
            Cf::Meta => "meta",
            Cf::Txn => "txn",
        }
    }

    /// Position in [`Cf::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// One operation of a [`WriteBatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchOp {
    /// Set `key` to `value`.
    Put {
        /// Column family.
        cf: Cf,
        /// Key.
        key: Vec<u8>,
        /// Value.
        value: Vec<u8>,
    },
    /// Remove `key`.
    Delete {
        /// Column family.
        cf: Cf,
        /// Key.
        key: Vec<u8>,
    },
    /// Remove every key in `[start, end)`.
    DeleteRange {
        /// Column family.
        cf: Cf,
        /// First key removed.
        start: Vec<u8>,
        /// First key kept.
        end: Vec<u8>,
    },
}

/// Writes applied atomically: after a crash either all of a batch is there or none of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<BatchOp>,
    bytes: usize,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put.
    pub fn put(&mut self, cf: Cf, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        let (key, value) = (key.into(), value.into());
        self.bytes += key.len() + value.len();
        self.ops.push(BatchOp::Put { cf, key, value });
    }

    /// Adds a delete.
    pub fn delete(&mut self, cf: Cf, key: impl Into<Vec<u8>>) {
        let key = key.into();
        self.bytes += key.len();
        self.ops.push(BatchOp::Delete { cf, key });
    }

    /// Adds a range delete of `[start, end)`.
    pub fn delete_range(&mut self, cf: Cf, start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) {
        let (start, end) = (start.into(), end.into());
        self.bytes += start.len() + end.len();
        self.ops.push(BatchOp::DeleteRange { cf, start, end });
    }

    /// Moves every operation of `other` to the end of this batch.
    pub fn append(&mut self, other: &mut WriteBatch) {
        self.bytes += other.bytes;
        self.ops.append(&mut other.ops);
        other.bytes = 0;
    }

    /// The operations, in order.
    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch has no operations.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Sum of key and value sizes: what the batch will cost to write.
    pub fn size_bytes(&self) -> usize {
        self.bytes
    }
}

/// Scan direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Ascending key order.
    Forward,
    /// Descending key order.
    Reverse,
}

/// Iterator over `(key, value)` pairs of a scan.
pub type ScanIter<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + 'a>;

/// An ordered key-value store with column families.
///
/// Durability contract: [`Engine::write`] with `sync = true` returns only once the batch — and
/// every batch written before it — survives a crash. Batches written with `sync = false` are
/// visible to reads at once but may be lost in a crash until a later synced write or
/// [`Engine::sync`]; what is lost is always a suffix of whole batches, never part of one.
pub trait Engine: Send + Sync + 'static {
    /// The value of `key`, if any.
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Keys in `[start, end)` (`end = None`: to the end of the column family) in `dir` order.
    fn scan<'a>(&'a self, cf: Cf, start: &[u8], end: Option<&[u8]>, dir: Direction) -> Result<ScanIter<'a>>;

    /// Applies `batch` atomically; with `sync`, durably before returning. Concurrent synced
    /// writers are grouped into one sync (group commit).
    fn write(&self, batch: WriteBatch, sync: bool) -> Result<()>;

    /// Makes every batch written so far durable.
    fn sync(&self) -> Result<()>;

    /// A short name for logs and status pages (`rocksdb`, `memory`).
    fn kind(&self) -> &'static str;

    /// Estimated bytes stored for keys in `[start, end)` of `cf` (for splitting ranges by size).
    /// The default sums keys and values; engines with cheaper estimates override it.
    fn approximate_size(&self, cf: Cf, start: &[u8], end: Option<&[u8]>) -> Result<u64> {
        let mut total = 0u64;
        for kv in self.scan(cf, start, end, Direction::Forward)? {
            let (k, v) = kv?;
            total += (k.len() + v.len()) as u64;
        }
        Ok(total)
    }
}
