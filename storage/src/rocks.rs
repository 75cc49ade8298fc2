//! `RocksEngine`: the [`Engine`] of a real node — one RocksDB instance with a column family per
//! kind of state (DESIGN.md §4).
//!
//! Durability: a synced write uses RocksDB's `WriteOptions::sync`, which fsyncs the write-ahead
//! log before returning. RocksDB joins concurrent writers into one *write group* whose leader
//! writes and syncs the log once for all of them, so concurrent synced writers share an fsync
//! (group commit); `meridian bench storage` measures it. [`Engine::sync`] is
//! `FlushWAL(sync = true)`, which makes earlier unsynced writes durable in one fsync; the node's
//! event loop uses it to persist a whole batch of Paxos messages before sending any reply.
//!
//! A crash loses at most a suffix of unsynced writes: RocksDB replays its log in point-in-time
//! recovery mode, stopping at the first torn record.

use std::path::{Path, PathBuf};

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DB, DBRawIterator, ErrorKind, Options, ReadOptions, WriteOptions};

use crate::engine::{BatchOp, Cf, Direction, Engine, ScanIter, WriteBatch};
use crate::{Error, Result};

/// Tuning knobs for [`RocksEngine::open`].
#[derive(Clone, Debug)]
pub struct RocksOptions {
    /// Memtable size per column family.
    pub write_buffer_bytes: usize,
    /// Block cache shared by all column families.
    pub block_cache_bytes: usize,
    /// Background flush and compaction threads.
    pub background_jobs: i32,
}

impl Default for RocksOptions {
    fn default() -> Self {
        RocksOptions { write_buffer_bytes: 32 << 20, block_cache_bytes: 64 << 20, background_jobs: 2 }
    }
}

/// RocksDB-backed [`Engine`].
pub struct RocksEngine {
    db: DB,
    path: PathBuf,
}

fn engine_err(op: impl FnOnce() -> String, e: rocksdb::Error) -> Error {
    match e.kind() {
        ErrorKind::Corruption => Error::corrupt(format!("RocksDB files ({})", op()), e.into_string()),
        _ => Error::Engine { op: op(), detail: e.into_string() },
    }
}

impl RocksEngine {
    /// Opens (creating if needed) the RocksDB instance in `path`.
    pub fn open(path: impl AsRef<Path>, options: &RocksOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        std::fs::create_dir_all(&path)
            .map_err(|source| Error::Io { op: format!("creating data directory {}", path.display()), source })?;
        let cache = rocksdb::Cache::new_lru_cache(options.block_cache_bytes);
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_bloom_filter(10.0, false);
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_paranoid_checks(true);
        db_opts.set_max_background_jobs(options.background_jobs);
        // A torn tail of the log is a crash during an unsynced write: recover up to it.
        db_opts.set_wal_recovery_mode(rocksdb::DBRecoveryMode::PointInTime);
        let cfs = Cf::ALL.iter().map(|cf| {
            let mut o = Options::default();
            o.set_write_buffer_size(options.write_buffer_bytes);
            o.set_block_based_table_factory(&table);
            o.set_compression_type(rocksdb::DBCompressionType::Lz4);
            ColumnFamilyDescriptor::new(cf.name(), o)
        });
        let db = DB::open_cf_descriptors(&db_opts, &path, cfs)
            .map_err(|e| engine_err(|| format!("opening {}", path.display()), e))?;
        Ok(RocksEngine { db, path })
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn cf(&self, cf: Cf) -> &ColumnFamily {
        self.db.cf_handle(cf.name()).expect("every column family is created by open()")
    }

    /// Flushes every column family's memtable to an SST file (backups, tests of on-disk state).
    pub fn flush(&self) -> Result<()> {
        for cf in Cf::ALL {
            self.db
                .flush_cf(self.cf(cf))
                .map_err(|e| engine_err(|| format!("flushing column family {}", cf.name()), e))?;
        }
        Ok(())
    }

    /// An integer RocksDB property (e.g. `rocksdb.estimate-num-keys`) of `cf`, for metrics.
    pub fn property(&self, cf: Cf, name: &str) -> Result<Option<u64>> {
        self.db
            .property_int_value_cf(self.cf(cf), name)
            .map_err(|e| engine_err(|| format!("reading property {name}"), e))
    }
}

struct RocksScan<'a> {
    it: DBRawIterator<'a>,
    dir: Direction,
    started: bool,
    failed: bool,
    cf: Cf,
}

impl Iterator for RocksScan<'_> {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if self.started {
            match self.dir {
                Direction::Forward => self.it.next(),
                Direction::Reverse => self.it.prev(),
            }
        }
        self.started = true;
        if let Some((k, v)) = self.it.item() {
            return Some(Ok((k.to_vec(), v.to_vec())));
        }
        match self.it.status() {
            Ok(()) => None,
            Err(e) => {
                self.failed = true;
                let cf = self.cf;
                Some(Err(engine_err(|| format!("scanning column family {}", cf.name()), e)))
            }
        }
    }
}

impl Engine for RocksEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db
            .get_pinned_cf(self.cf(cf), key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| engine_err(|| format!("reading column family {}", cf.name()), e))
    }

    fn scan<'a>(&'a self, cf: Cf, start: &[u8], end: Option<&[u8]>, dir: Direction) -> Result<ScanIter<'a>> {
        if end.is_some_and(|e| e <= start) {
            return Ok(Box::new(std::iter::empty()));
        }
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(start.to_vec());
        if let Some(end) = end {
            ro.set_iterate_upper_bound(end.to_vec());
        }
        let mut it = self.db.raw_iterator_cf_opt(self.cf(cf), ro);
        match dir {
            Direction::Forward => it.seek_to_first(),
            Direction::Reverse => it.seek_to_last(),
        }
        Ok(Box::new(RocksScan { it, dir, started: false, failed: false, cf }))
    }

    fn write(&self, batch: WriteBatch, sync: bool) -> Result<()> {
        let mut wb = rocksdb::WriteBatch::default();
        for op in batch.ops() {
            match op {
                BatchOp::Put { cf, key, value } => wb.put_cf(self.cf(*cf), key, value),
                BatchOp::Delete { cf, key } => wb.delete_cf(self.cf(*cf), key),
                BatchOp::DeleteRange { cf, start, end } => {
                    if start < end {
                        wb.delete_range_cf(self.cf(*cf), start, end)
                    }
                }
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db.write_opt(wb, &wo).map_err(|e| engine_err(|| "writing a batch".to_string(), e))
    }

    fn sync(&self) -> Result<()> {
        self.db.flush_wal(true).map_err(|e| engine_err(|| "syncing the write-ahead log".to_string(), e))
    }

    fn kind(&self) -> &'static str {
        "rocksdb"
    }

    fn approximate_size(&self, cf: Cf, start: &[u8], end: Option<&[u8]>) -> Result<u64> {
        // Sizes of SST files overlapping the range plus the memtables' share.
        let end = end.map_or_else(|| vec![0xFF; 32], <[u8]>::to_vec);
        let range = rocksdb::Range::new(start, &end);
        Ok(self.db.get_approximate_sizes_cf(self.cf(cf), &[range]).first().copied().unwrap_or(0))
    }
}
