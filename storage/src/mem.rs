//! `MemEngine`: the in-memory engine for tests and the deterministic simulator.
//!
//! It models the one failure the protocols must survive: a crash loses the writes that were not
//! yet synced. Synced state and the queue of unsynced batches are kept apart:
//!
//! ```text
//!   durable ──(batches synced)──►  reads see  durable + pending[0] + pending[1] + …
//!   pending: [b0, b1, b2]          crash(keep = 1)  →  durable + b0; b1 and b2 vanish
//! ```
//!
//! A crash keeps a prefix of the unsynced batches (like a write-ahead log whose tail was not
//! flushed), always whole batches. Scans copy keys in chunks of [`SCAN_CHUNK`], so a scan that
//! runs concurrently with writes may see some of them; callers that need a stable view read at
//! an MVCC timestamp.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use crate::Result;
use crate::engine::{BatchOp, Cf, Direction, Engine, ScanIter, WriteBatch};

/// Entries copied per lock acquisition during a scan.
pub const SCAN_CHUNK: usize = 256;

type Tree = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Default, Clone)]
struct State {
    live: [Tree; 4],
    durable: [Tree; 4],
    pending: VecDeque<WriteBatch>,
    syncs: u64,
}

/// In-memory [`Engine`] with a crash model.
#[derive(Default)]
pub struct MemEngine {
    state: Mutex<State>,
}

fn apply(trees: &mut [Tree; 4], batch: &WriteBatch) {
    for op in batch.ops() {
        match op {
            BatchOp::Put { cf, key, value } => {
                trees[cf.index()].insert(key.clone(), value.clone());
            }
            BatchOp::Delete { cf, key } => {
                trees[cf.index()].remove(key);
            }
            BatchOp::DeleteRange { cf, start, end } => {
                if start < end {
                    let tree = &mut trees[cf.index()];
                    let doomed: Vec<Vec<u8>> = tree.range(start.clone()..end.clone()).map(|(k, _)| k.clone()).collect();
                    for k in doomed {
                        tree.remove(&k);
                    }
                }
            }
        }
    }
}

impl MemEngine {
    /// An empty engine.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves a consistent state (every mutation is a whole
        // batch), so a poisoned lock is safe to reuse.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of batches written but not yet synced.
    pub fn unsynced_batches(&self) -> usize {
        self.lock().pending.len()
    }

    /// Number of syncs performed (group commit makes this smaller than the synced writes).
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    /// Simulates a crash and restart: keeps the synced state plus the first `keep_unsynced`
    /// unsynced batches (clamped to how many there are) and loses the rest.
    pub fn crash(&self, keep_unsynced: usize) {
        let mut st = self.lock();
        let keep = keep_unsynced.min(st.pending.len());
        let kept: Vec<WriteBatch> = st.pending.drain(..keep).collect();
        for b in &kept {
            apply(&mut st.durable, b);
        }
        st.pending.clear();
        st.live = st.durable.clone();
    }

    /// Replaces the stored bytes of `key` with `f(bytes)`, bypassing checksums: for tests that
    /// show corruption is detected. The change counts as synced.
    pub fn corrupt(&self, cf: Cf, key: &[u8], f: impl Fn(&mut Vec<u8>)) -> bool {
        let mut st = self.lock();
        let st = &mut *st;
        let mut found = false;
        for tree in [&mut st.live, &mut st.durable] {
            if let Some(v) = tree[cf.index()].get_mut(key) {
                f(v);
                found = true;
            }
        }
        found
    }

    /// A deep copy of the engine's synced and unsynced state, e.g. to fork a simulation.
    pub fn duplicate(&self) -> MemEngine {
        MemEngine { state: Mutex::new(self.lock().clone()) }
    }

    fn scan_chunk(&self, cf: Cf, lo: Bound<&[u8]>, hi: Bound<&[u8]>, dir: Direction) -> Vec<(Vec<u8>, Vec<u8>)> {
        let st = self.lock();
        let range = st.live[cf.index()].range::<[u8], _>((lo, hi));
        let take = |it: &mut dyn Iterator<Item = (&Vec<u8>, &Vec<u8>)>| {
            it.take(SCAN_CHUNK).map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        match dir {
            Direction::Forward => take(&mut range.into_iter()),
            Direction::Reverse => take(&mut range.rev()),
        }
    }
}

struct MemScan<'a> {
    engine: &'a MemEngine,
    cf: Cf,
    /// Next lower (forward) or upper (reverse) bound still to read.
    lo: Bound<Vec<u8>>,
    hi: Bound<Vec<u8>>,
    dir: Direction,
    buf: std::vec::IntoIter<(Vec<u8>, Vec<u8>)>,
    done: bool,
}

impl Iterator for MemScan<'_> {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(kv) = self.buf.next() {
                match self.dir {
                    Direction::Forward => self.lo = Bound::Excluded(kv.0.clone()),
                    Direction::Reverse => self.hi = Bound::Excluded(kv.0.clone()),
                }
                return Some(Ok(kv));
            }
            if self.done {
                return None;
            }
            let chunk = self.engine.scan_chunk(self.cf, as_ref(&self.lo), as_ref(&self.hi), self.dir);
            self.done = chunk.len() < SCAN_CHUNK;
            self.buf = chunk.into_iter();
        }
    }
}

fn as_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(k) => Bound::Included(k.as_slice()),
        Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl Engine for MemEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.lock().live[cf.index()].get(key).cloned())
    }

    fn scan<'a>(&'a self, cf: Cf, start: &[u8], end: Option<&[u8]>, dir: Direction) -> Result<ScanIter<'a>> {
        if end.is_some_and(|e| e <= start) {
            return Ok(Box::new(std::iter::empty()));
        }
        Ok(Box::new(MemScan {
            engine: self,
            cf,
            lo: Bound::Included(start.to_vec()),
            hi: end.map_or(Bound::Unbounded, |e| Bound::Excluded(e.to_vec())),
            dir,
            buf: Vec::new().into_iter(),
            done: false,
        }))
    }

    fn write(&self, batch: WriteBatch, sync: bool) -> Result<()> {
        let mut st = self.lock();
        apply(&mut st.live, &batch);
        st.pending.push_back(batch);
        if sync {
            sync_locked(&mut st);
        }
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        sync_locked(&mut self.lock());
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

fn sync_locked(st: &mut State) {
    if st.pending.is_empty() {
        return;
    }
    let pending = std::mem::take(&mut st.pending);
    for b in &pending {
        apply(&mut st.durable, b);
    }
    st.syncs += 1;
}
