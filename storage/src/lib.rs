//! # Meridian storage
//!
//! Everything a node keeps on disk goes through this crate, and through one trait: [`Engine`],
//! an ordered key-value store with column families, atomic write batches and an explicit
//! durability point. Two engines implement it:
//!
//! - `RocksEngine` (feature `rocksdb`): one RocksDB instance per node, used by real nodes.
//! - [`MemEngine`]: in memory, for tests and the deterministic simulator; it models a crash that
//!   loses unsynced writes.
//! - [`PowerLossEngine`]: a wrapper for durability tests of real nodes: what was not synced
//!   lives only in the process, so `kill -9` loses it as a power cut would.
//!
//! On top of the trait, engine-agnostic:
//!
//! ```text
//!   ┌────────────────────────────┐  ┌────────────────────────────────────┐
//!   │ mvcc: versions at commit   │  │ log: Paxos log + hard state,        │
//!   │ timestamps, reads at ts,   │  │ keyed by group; append, read range, │
//!   │ scans, version GC          │  │ truncate prefix/suffix              │
//!   └─────────────┬──────────────┘  └──────────────────┬─────────────────┘
//!                 └──────────── Engine trait ──────────┘
//!                   RocksEngine (disk)   MemEngine (sim)
//! ```
//!
//! ## Guarantees
//! - A batch is atomic across column families: after a crash all of it or none of it is there.
//! - A synced write is durable when `write` returns, together with every earlier write.
//! - Every stored value carries a CRC32 ([`record`]); a corrupt or truncated record is an
//!   [`Error::Corrupt`] naming the record, never a panic or a silently wrong read.
//! - Keys over [`KEY_SIZE_MAX`] and values over [`VALUE_SIZE_MAX`] are refused.
//!
//! ## Left out, deliberately
//! - Spanner's tablets store data in B-tree-like files plus a log on Colossus (§2.1); we use one
//!   local LSM tree per node and rely on Paxos for replication, as CockroachDB and TiKV do.
//! - No per-range column families: ranges are key intervals of one `data` column family, so a
//!   split or merge moves no data on a node.

mod engine;
mod error;
pub mod keycode;
pub mod log;
mod mem;
pub mod mvcc;
mod power_loss;
pub mod record;
#[cfg(feature = "rocksdb")]
mod rocks;

pub use engine::{BatchOp, Cf, Direction, Engine, ScanIter, WriteBatch};
pub use error::{Error, Result};
pub use log::LogStore;
pub use mem::MemEngine;
pub use mvcc::{Mvcc, Version};
pub use power_loss::PowerLossEngine;
#[cfg(feature = "rocksdb")]
pub use rocks::{RocksEngine, RocksOptions};

use std::fmt;

/// Largest user key accepted: 8 KiB. Keys are copied into every version, every lock and every
/// message; keep them short.
pub const KEY_SIZE_MAX: usize = 8 * 1024;
/// Largest value accepted: 1 MiB.
pub const VALUE_SIZE_MAX: usize = 1024 * 1024;
/// Largest Paxos log record or hard state: 16 MiB, room for a batch of maximal transactions.
pub const LOG_RECORD_SIZE_MAX: usize = 16 * 1024 * 1024;

const _: () = assert!(KEY_SIZE_MAX + VALUE_SIZE_MAX < LOG_RECORD_SIZE_MAX, "a single write must fit in a log record");

/// Identity of a Paxos group (one per range).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct GroupId(pub u64);

/// Group ids minted by nodes carry the node in their high 24 bits; show them as
/// `r<node>.<counter>` (`r0` is the meta range).
impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (node, counter) = (self.0 >> 40, self.0 & ((1 << 40) - 1));
        if node == 0 { write!(f, "r{counter}") } else { write!(f, "r{node}.{counter}") }
    }
}

/// A position in a group's Paxos log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct Slot(pub u64);

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
    }
}

/// First byte of every key in the `meta` column family: one tag per kind of metadata, listed
/// here so no two users of the column family collide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum MetaTag {
    /// MVCC GC horizon (one key).
    GcHorizon = b'g',
    /// Paxos hard state per group.
    HardState = b'h',
    /// Applied state per group (applied slot, snapshot metadata).
    Applied = b'a',
    /// Range descriptors known to this node.
    Range = b'r',
    /// Node identity: cluster id, node id.
    Node = b'n',
}

#[cfg(test)]
mod tests;
