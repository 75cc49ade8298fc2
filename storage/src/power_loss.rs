//! `PowerLossEngine`: storage that really loses what was not synced when its process dies, for
//! durability tests of the real node.
//!
//! `kill -9` of a node on RocksDB keeps everything the node wrote: the write-ahead log's tail
//! sits in the kernel's page cache and reaches the disk anyway. So a node that never fsyncs
//! passes every kill test, and only a power cut would show it. This wrapper makes a process
//! death behave like a power cut: a batch written without `sync` lives only in this process's
//! memory until a synced write (or [`Engine::sync`]) carries it, with every unsynced batch
//! before it, to the durable engine underneath in one synced write.
//!
//! ```text
//!   write(b, sync=false): live ← b;  pending = [.., b]           (memory only)
//!   write(b, sync=true):  live ← b;  durable ← pending ++ [b], synced; pending = []
//!   process dies:         live and pending vanish; durable has every synced batch and
//!                         every batch before one, as the Engine contract promises
//! ```
//!
//! Reads come from `live`, a full in-memory copy loaded from the durable engine at open, so the
//! wrapper is for test clusters with small data. A node runs on it with
//! `meridian start --test-power-loss` (hidden); `cli/tests/durability.rs` kills every node of a
//! cluster at once and checks that no acknowledged write is gone, and that a node that skips its
//! syncs (`--unsafe-skip-sync`) is caught.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::Result;
use crate::engine::{Cf, Direction, Engine, ScanIter, WriteBatch};
use crate::mem::MemEngine;

/// An [`Engine`] whose unsynced writes exist only in this process (see the module docs).
pub struct PowerLossEngine {
    durable: Arc<dyn Engine>,
    live: MemEngine,
    /// Batches written without sync since the last synced write, in order.
    pending: Mutex<Vec<WriteBatch>>,
}

impl PowerLossEngine {
    /// Wraps `durable`, copying its contents into memory.
    pub fn open(durable: Arc<dyn Engine>) -> Result<PowerLossEngine> {
        let live = MemEngine::new();
        for cf in Cf::ALL {
            let mut batch = WriteBatch::new();
            for kv in durable.scan(cf, &[], None, Direction::Forward)? {
                let (k, v) = kv?;
                batch.put(cf, k, v);
            }
            live.write(batch, true)?;
        }
        Ok(PowerLossEngine { durable, live, pending: Mutex::new(Vec::new()) })
    }

    /// Batches written since the last sync: what a power cut now would lose.
    pub fn unsynced_batches(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<WriteBatch>> {
        // Every mutation under the lock is whole (a push or a drain), so a poisoned lock is
        // consistent.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `pending` (and `last`) to the durable engine in one synced batch, in order.
    fn flush(&self, pending: &mut Vec<WriteBatch>, last: Option<WriteBatch>) -> Result<()> {
        let mut all = WriteBatch::new();
        for mut b in pending.drain(..).chain(last) {
            all.append(&mut b);
        }
        if all.is_empty() { self.durable.sync() } else { self.durable.write(all, true) }
    }
}

impl Engine for PowerLossEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.live.get(cf, key)
    }

    fn scan<'a>(&'a self, cf: Cf, start: &[u8], end: Option<&[u8]>, dir: Direction) -> Result<ScanIter<'a>> {
        self.live.scan(cf, start, end, dir)
    }

    fn write(&self, batch: WriteBatch, sync: bool) -> Result<()> {
        // One lock for both copies, so the durable engine receives batches in the order reads
        // saw them.
        let mut pending = self.lock();
        self.live.write(batch.clone(), true)?;
        if sync {
            self.flush(&mut pending, Some(batch))
        } else {
            pending.push(batch);
            Ok(())
        }
    }

    fn sync(&self) -> Result<()> {
        let mut pending = self.lock();
        self.flush(&mut pending, None)
    }

    fn kind(&self) -> &'static str {
        "power-loss test storage"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str) -> WriteBatch {
        let mut b = WriteBatch::new();
        b.put(Cf::Data, k.as_bytes(), b"v".as_slice());
        b
    }

    fn keys(e: &dyn Engine) -> Vec<String> {
        e.scan(Cf::Data, &[], None, Direction::Forward)
            .unwrap()
            .map(|kv| String::from_utf8(kv.unwrap().0).unwrap())
            .collect()
    }

    #[test]
    fn a_power_cut_loses_exactly_the_writes_after_the_last_sync() {
        let disk: Arc<dyn Engine> = Arc::new(MemEngine::new());
        let e = PowerLossEngine::open(disk.clone()).unwrap();
        e.write(put("a"), false).unwrap();
        e.write(put("b"), true).unwrap();
        e.write(put("c"), false).unwrap();
        assert_eq!(keys(&e), ["a", "b", "c"], "reads see unsynced writes");
        assert_eq!(e.unsynced_batches(), 1);
        drop(e); // the process dies
        let e = PowerLossEngine::open(disk.clone()).unwrap();
        assert_eq!(keys(&e), ["a", "b"], "the synced write carried the one before it; the one after is gone");
        e.write(put("d"), false).unwrap();
        e.sync().unwrap();
        drop(e);
        assert_eq!(keys(&*disk), ["a", "b", "d"], "sync() makes what was written durable");
    }
}
