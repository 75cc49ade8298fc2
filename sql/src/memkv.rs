//! An in-memory, multi-version, serializable [`KvStore`]: the reference implementation of the
//! contract in `kv.rs`, used by this crate's tests and usable by anyone who needs a store without a
//! cluster.
//!
//! ```text
//!   data: key → [(commit_ts, Some(value) | None = tombstone), …]   (ascending commit_ts)
//!
//!   read-write txn:  snapshot = last commit at begin ──reads──► snapshot ⊕ own buffered writes
//!                    commit: under the store lock, validate ── for every key and span it read, no
//!                    version newer than its snapshot ── then write all at a fresh timestamp
//!   read-only txn:   reads the snapshot at its timestamp; never validates, never writes
//! ```
//!
//! **Why this is serializable.** A read-write transaction reads everything at its snapshot `S` and
//! commits at `C > S` only if nothing it read (point keys, and scanned spans including keys that
//! were absent) changed in `(S, C)`; validation and installing the writes happen atomically under
//! one lock. So every read would have returned the same at `C`, and the transaction is equivalent
//! to running alone at `C`: commit-timestamp order is a serial order (optimistic concurrency
//! control with backward validation). Read-only transactions read one committed snapshot, which is
//! a prefix of that order. A conflict is [`KvError::Retryable`], at commit time, where a locking
//! store would have blocked or wounded earlier.
//!
//! **Time.** A logical clock starting at [`MEMKV_CLOCK_START`]: each commit gets a timestamp one
//! nanosecond past the latest commit or served read, so runs are deterministic.
//! [`MemKv::advance_clock`] moves "now" forward, which is what makes `SnapshotStale` and
//! `AS OF SYSTEM TIME '-10s'` testable. A snapshot at a future timestamp is allowed: later commits
//! are pushed above it, so the snapshot never changes (Spanner's safe time, §4.1.3, made trivial).
//!
//! **Instrumentation.** [`MemKv::record_accesses`] logs every `get` and `scan` so tests can check
//! which spans a statement touched (the planner tests do).
//!
//! Left out: version garbage collection (only a settable horizon that refuses older reads), locks
//! and wound-wait, durability.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use meridian_truetime::Timestamp;

use crate::keys::pretty_key;
use crate::kv::{KvError, KvStore, KvTxn, TxnMode};

/// Where the logical clock starts: 2023-11-14T22:13:20Z, so timestamps look like real ones.
pub const MEMKV_CLOCK_START: Timestamp = Timestamp::from_nanos(1_700_000_000_000_000_000);
/// Most buffered writes in one transaction; more is [`KvError::TooLarge`].
pub const TXN_WRITES_MAX: usize = 250_000;
/// Most entries kept by the access log; older ones are dropped first.
pub const ACCESS_LOG_MAX: usize = 100_000;

/// One recorded read, for tests that check what a statement touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvAccess {
    /// A point read.
    Get {
        /// The key read.
        key: Vec<u8>,
    },
    /// A scan of `[start, end)` (empty `end` = unbounded) returning at most `limit` rows.
    Scan {
        /// First key of the span.
        start: Vec<u8>,
        /// End of the span, exclusive.
        end: Vec<u8>,
        /// The caller's row limit.
        limit: usize,
    },
}

impl std::fmt::Display for KvAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KvAccess::Get { key } => write!(f, "get {}", pretty_key(key)),
            KvAccess::Scan { start, end, limit } => {
                write!(f, "scan [{}, {}) limit {limit}", pretty_key(start), pretty_key(end))
            }
        }
    }
}

/// Counters for tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemKvStats {
    /// Read-write transactions committed (with or without writes).
    pub commits: u64,
    /// Read-write transactions refused at commit because of a conflict.
    pub conflicts: u64,
}

type Versions = Vec<(Timestamp, Option<Vec<u8>>)>;

#[derive(Debug)]
struct State {
    data: BTreeMap<Vec<u8>, Versions>,
    /// "Now" as moved by `advance_clock`; the effective now is max(clock, last_commit, max_read).
    clock: Timestamp,
    last_commit: Timestamp,
    /// Highest timestamp any snapshot has read at; commits go above it.
    max_read: Timestamp,
    gc_horizon: Timestamp,
    recording: bool,
    accesses: Vec<KvAccess>,
    stats: MemKvStats,
}

impl State {
    fn now(&self) -> Timestamp {
        self.clock.max(self.last_commit).max(self.max_read)
    }

    fn record(&mut self, access: KvAccess) {
        if self.recording {
            if self.accesses.len() >= ACCESS_LOG_MAX {
                self.accesses.remove(0);
            }
            self.accesses.push(access);
        }
    }

    /// The value of `key` at `ts`: the newest version at or below it.
    fn read_at(versions: &Versions, ts: Timestamp) -> Option<&Vec<u8>> {
        versions.iter().rev().find(|(v_ts, _)| *v_ts <= ts).and_then(|(_, v)| v.as_ref())
    }
}

/// The in-memory store. Cloning gives another handle to the same data.
#[derive(Debug, Clone)]
pub struct MemKv {
    state: Arc<Mutex<State>>,
}

impl Default for MemKv {
    fn default() -> Self {
        MemKv::new()
    }
}

impl MemKv {
    /// An empty store whose clock starts at [`MEMKV_CLOCK_START`].
    pub fn new() -> MemKv {
        MemKv {
            state: Arc::new(Mutex::new(State {
                data: BTreeMap::new(),
                clock: MEMKV_CLOCK_START,
                last_commit: MEMKV_CLOCK_START,
                max_read: MEMKV_CLOCK_START,
                gc_horizon: Timestamp::ZERO,
                recording: false,
                accesses: Vec::new(),
                stats: MemKvStats::default(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Moves the clock `d` past the current time (the latest of the clock, commits and reads).
    pub fn advance_clock(&self, d: Duration) {
        let mut state = self.lock();
        state.clock = state.now().saturating_add(d);
    }

    /// The store's current time.
    pub fn now(&self) -> Timestamp {
        self.lock().now()
    }

    /// Refuse snapshots below `ts` with [`KvError::BelowGcHorizon`] (as if versions were collected).
    pub fn set_gc_horizon(&self, ts: Timestamp) {
        self.lock().gc_horizon = ts;
    }

    /// Starts (clearing) or stops the access log.
    pub fn record_accesses(&self, on: bool) {
        let mut state = self.lock();
        state.recording = on;
        state.accesses.clear();
    }

    /// Returns and clears the access log.
    pub fn take_accesses(&self) -> Vec<KvAccess> {
        std::mem::take(&mut self.lock().accesses)
    }

    /// Commit and conflict counters.
    pub fn stats(&self) -> MemKvStats {
        self.lock().stats
    }

    /// Every live key and value as of now, in key order (for test checksums).
    pub fn dump(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let state = self.lock();
        let now = state.now();
        state.data.iter().filter_map(|(k, vs)| State::read_at(vs, now).map(|v| (k.clone(), v.clone()))).collect()
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().expect("invariant: no thread panics while holding the memkv lock")
}

#[async_trait::async_trait]
impl KvStore for MemKv {
    async fn begin(&self, mode: TxnMode) -> Result<Box<dyn KvTxn>, KvError> {
        let mut state = self.lock();
        let snapshot = match mode {
            TxnMode::ReadWrite | TxnMode::ReadOnly => state.now(),
            TxnMode::SnapshotAt(ts) => ts,
            TxnMode::SnapshotStale(d) => state.now().saturating_sub(d),
        };
        if snapshot < state.gc_horizon {
            return Err(KvError::BelowGcHorizon(format!(
                "snapshot {snapshot} is below the GC horizon {}",
                state.gc_horizon
            )));
        }
        if mode.is_read_only() {
            // Later commits must land above every served snapshot, so the snapshot never changes.
            state.max_read = state.max_read.max(snapshot);
        }
        Ok(Box::new(MemTxn {
            state: self.state.clone(),
            snapshot,
            read_only: mode.is_read_only(),
            writes: BTreeMap::new(),
            reads: Vec::new(),
        }))
    }
}

/// What a read-write transaction observed, validated at commit.
#[derive(Debug)]
enum ReadSpan {
    Key(Vec<u8>),
    /// `[start, end)`, empty end = unbounded.
    Span(Vec<u8>, Vec<u8>),
}

struct MemTxn {
    state: Arc<Mutex<State>>,
    snapshot: Timestamp,
    read_only: bool,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    reads: Vec<ReadSpan>,
}

fn span_bounds<'a>(start: &'a [u8], end: &'a [u8]) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
    (Bound::Included(start), if end.is_empty() { Bound::Unbounded } else { Bound::Excluded(end) })
}

impl MemTxn {
    fn buffer(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), KvError> {
        if self.read_only {
            return Err(KvError::ReadOnly);
        }
        if self.writes.len() >= TXN_WRITES_MAX && !self.writes.contains_key(key) {
            return Err(KvError::TooLarge(format!("more than {TXN_WRITES_MAX} writes in one transaction")));
        }
        self.writes.insert(key.to_vec(), value.map(<[u8]>::to_vec));
        Ok(())
    }

    /// The first key of the read set that changed after the snapshot, if any.
    fn conflict(&self, state: &State) -> Option<Vec<u8>> {
        let newer = |versions: &Versions| versions.last().is_some_and(|(ts, _)| *ts > self.snapshot);
        for read in &self.reads {
            match read {
                ReadSpan::Key(key) => {
                    if state.data.get(key).is_some_and(newer) {
                        return Some(key.clone());
                    }
                }
                ReadSpan::Span(start, end) => {
                    if start.as_slice() >= end.as_slice() && !end.is_empty() {
                        continue;
                    }
                    let range = state.data.range::<[u8], _>(span_bounds(start, end));
                    if let Some((key, _)) = range.into_iter().find(|(_, vs)| newer(vs)) {
                        return Some(key.clone());
                    }
                }
            }
        }
        None
    }
}

#[async_trait::async_trait]
impl KvTxn for MemTxn {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        let mut state = lock(&self.state);
        state.record(KvAccess::Get { key: key.to_vec() });
        if let Some(buffered) = self.writes.get(key) {
            return Ok(buffered.clone());
        }
        if !self.read_only {
            self.reads.push(ReadSpan::Key(key.to_vec()));
        }
        Ok(state.data.get(key).and_then(|vs| State::read_at(vs, self.snapshot)).cloned())
    }

    async fn scan(&mut self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>, KvError> {
        let mut state = lock(&self.state);
        state.record(KvAccess::Scan { start: start.to_vec(), end: end.to_vec(), limit });
        if limit == 0 || (!end.is_empty() && start >= end) {
            return Ok(Vec::new());
        }
        // Merge the snapshot with this transaction's own writes, the buffer winning on equal keys.
        let mut stored = state
            .data
            .range::<[u8], _>(span_bounds(start, end))
            .map(|(k, vs)| (k, State::read_at(vs, self.snapshot)))
            .peekable();
        let mut own = self.writes.range::<[u8], _>(span_bounds(start, end)).peekable();
        let mut out = Vec::new();
        while out.len() < limit {
            let take_own = match (stored.peek(), own.peek()) {
                (None, None) => break,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some((sk, _)), Some((ok, _))) => ok <= sk,
            };
            let (key, value) = if take_own {
                let (ok, ov) = own.next().expect("invariant: peeked");
                if stored.peek().is_some_and(|(sk, _)| *sk == ok) {
                    stored.next();
                }
                (ok, ov.as_ref())
            } else {
                stored.next().expect("invariant: peeked")
            };
            if let Some(value) = value {
                out.push((key.clone(), value.clone()));
            }
        }
        if !self.read_only {
            // A scan that stopped at `limit` observed keys only up to its last row.
            let observed_end = match out.last() {
                Some((last, _)) if out.len() == limit => crate::keys::key_successor(last),
                _ => end.to_vec(),
            };
            self.reads.push(ReadSpan::Span(start.to_vec(), observed_end));
        }
        Ok(out)
    }

    async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        self.buffer(key, Some(value))
    }

    async fn delete(&mut self, key: &[u8]) -> Result<(), KvError> {
        self.buffer(key, None)
    }

    async fn commit(self: Box<Self>) -> Result<Timestamp, KvError> {
        if self.read_only {
            return Ok(self.snapshot);
        }
        let mut state = lock(&self.state);
        if let Some(key) = self.conflict(&state) {
            state.stats.conflicts += 1;
            return Err(KvError::Retryable(format!(
                "key {} was written by another transaction after this one read it",
                pretty_key(&key)
            )));
        }
        state.stats.commits += 1;
        if self.writes.is_empty() {
            // Nothing to install: the reads were a consistent snapshot, serializable at it.
            return Ok(self.snapshot);
        }
        let ts = state.now().next();
        assert!(ts > state.last_commit && ts > state.max_read, "invariant: commit timestamps increase past all reads");
        let writes = self.writes;
        for (key, value) in writes {
            state.data.entry(key).or_default().push((ts, value));
        }
        state.last_commit = ts;
        Ok(ts)
    }

    async fn rollback(self: Box<Self>) -> Result<(), KvError> {
        Ok(())
    }

    fn read_timestamp(&self) -> Option<Timestamp> {
        self.read_only.then_some(self.snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    #[test]
    fn reads_see_own_writes_and_snapshots() {
        block(async {
            let kv = MemKv::new();
            let mut t = kv.begin(TxnMode::ReadWrite).await.unwrap();
            t.put(b"a", b"1").await.unwrap();
            t.put(b"c", b"3").await.unwrap();
            assert_eq!(t.get(b"a").await.unwrap(), Some(b"1".to_vec()));
            let t1 = t.commit().await.unwrap();

            let mut ro = kv.begin(TxnMode::ReadOnly).await.unwrap();
            let mut t = kv.begin(TxnMode::ReadWrite).await.unwrap();
            t.put(b"b", b"2").await.unwrap();
            t.delete(b"c").await.unwrap();
            let rows = t.scan(b"", b"", 10).await.unwrap();
            assert_eq!(rows, vec![(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), b"2".to_vec())]);
            let t2 = t.commit().await.unwrap();
            assert!(t2 > t1);
            // The read-only snapshot was taken before t2.
            assert_eq!(ro.scan(b"", b"", 10).await.unwrap().len(), 2);
            assert_eq!(ro.put(b"x", b"y").await, Err(KvError::ReadOnly));
            let mut old = kv.begin(TxnMode::SnapshotAt(t1)).await.unwrap();
            assert_eq!(old.get(b"c").await.unwrap(), Some(b"3".to_vec()));
            assert_eq!(old.read_timestamp(), Some(t1));
        });
    }

    #[test]
    fn conflicting_read_write_transactions_abort() {
        block(async {
            let kv = MemKv::new();
            let mut a = kv.begin(TxnMode::ReadWrite).await.unwrap();
            let mut b = kv.begin(TxnMode::ReadWrite).await.unwrap();
            assert_eq!(a.get(b"x").await.unwrap(), None);
            assert_eq!(b.get(b"x").await.unwrap(), None);
            a.put(b"x", b"a").await.unwrap();
            b.put(b"x", b"b").await.unwrap();
            a.commit().await.unwrap();
            assert!(matches!(b.commit().await, Err(KvError::Retryable(_))));
            assert_eq!(kv.stats(), MemKvStats { commits: 1, conflicts: 1 });
        });
    }

    #[test]
    fn phantoms_in_scanned_spans_abort() {
        block(async {
            let kv = MemKv::new();
            let mut a = kv.begin(TxnMode::ReadWrite).await.unwrap();
            assert!(a.scan(b"k", b"l", 10).await.unwrap().is_empty());
            a.put(b"other", b"1").await.unwrap();
            let mut b = kv.begin(TxnMode::ReadWrite).await.unwrap();
            b.put(b"k5", b"x").await.unwrap();
            b.commit().await.unwrap();
            assert!(matches!(a.commit().await, Err(KvError::Retryable(_))));
        });
    }

    #[test]
    fn limited_scans_only_observe_what_they_returned() {
        block(async {
            let kv = MemKv::new();
            let mut t = kv.begin(TxnMode::ReadWrite).await.unwrap();
            for k in [b"a", b"b", b"c"] {
                t.put(k, b"v").await.unwrap();
            }
            t.commit().await.unwrap();
            let mut a = kv.begin(TxnMode::ReadWrite).await.unwrap();
            assert_eq!(a.scan(b"a", b"", 1).await.unwrap().len(), 1);
            a.put(b"z", b"1").await.unwrap();
            let mut b = kv.begin(TxnMode::ReadWrite).await.unwrap();
            b.put(b"c", b"changed").await.unwrap();
            b.commit().await.unwrap();
            a.commit().await.unwrap();
        });
    }

    #[test]
    fn stale_snapshots_and_gc_horizon() {
        block(async {
            let kv = MemKv::new();
            let mut t = kv.begin(TxnMode::ReadWrite).await.unwrap();
            t.put(b"k", b"old").await.unwrap();
            t.commit().await.unwrap();
            kv.advance_clock(Duration::from_secs(10));
            let mut t = kv.begin(TxnMode::ReadWrite).await.unwrap();
            t.put(b"k", b"new").await.unwrap();
            t.commit().await.unwrap();
            let mut stale = kv.begin(TxnMode::SnapshotStale(Duration::from_secs(5))).await.unwrap();
            assert_eq!(stale.get(b"k").await.unwrap(), Some(b"old".to_vec()));
            kv.set_gc_horizon(kv.now());
            assert!(matches!(
                kv.begin(TxnMode::SnapshotStale(Duration::from_secs(5))).await,
                Err(KvError::BelowGcHorizon(_))
            ));
        });
    }

    #[test]
    fn future_snapshots_stay_stable() {
        block(async {
            let kv = MemKv::new();
            let future = kv.now().saturating_add(Duration::from_secs(1));
            let mut ro = kv.begin(TxnMode::SnapshotAt(future)).await.unwrap();
            assert_eq!(ro.get(b"k").await.unwrap(), None);
            let mut t = kv.begin(TxnMode::ReadWrite).await.unwrap();
            t.put(b"k", b"v").await.unwrap();
            assert!(t.commit().await.unwrap() > future);
            assert_eq!(ro.get(b"k").await.unwrap(), None);
        });
    }
}
