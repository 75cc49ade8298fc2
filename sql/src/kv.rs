//! The interface below SQL: a transactional, multi-version key-value store.
//!
//! SQL needs exactly this from the layers below (DESIGN.md §6): byte keys and values, transactions
//! in four modes, ordered scans, and a timestamp for every committed result.
//!
//! ```text
//!   Session ──begin(mode)──► KvStore ──► Box<dyn KvTxn>
//!                                         get / scan / put / delete … commit → Timestamp
//! ```
//!
//! The contract an implementation must keep:
//! - **Read-write** transactions are serializable. Reads may lock (Spanner §4.2.1, wound-wait) or
//!   be validated at commit (the in-memory [`crate::memkv::MemKv`]); either way a transaction that
//!   cannot be placed in the serial order fails with [`KvError::Retryable`], and the caller re-runs
//!   the *whole* transaction — never just the failed call.
//! - Writes are buffered and become visible atomically at the commit timestamp.
//! - A transaction sees its own buffered writes in `get` and `scan`.
//! - **Read-only** and **snapshot** transactions read one consistent snapshot (Spanner §4.1.4) and
//!   refuse writes with [`KvError::ReadOnly`]; their `commit` returns the read timestamp.
//! - `scan(start, end, limit)` returns at most `limit` live rows of `[start, end)` in key order;
//!   an empty `end` means "to the end of the key space". Callers page by restarting after the
//!   last key returned.
//! - After an error other than `Retryable` on a read, the transaction may still be rolled back;
//!   SQL never commits a transaction one of whose calls failed.
//!
//! Left out: savepoints, reverse scans and range deletes. SQL deletes a table's rows one key at a
//! time (bounded by `DROP_TABLE_ROWS_MAX`, see `catalog.rs`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use meridian_truetime::Timestamp;

/// One transaction. Dropping it without `commit` or `rollback` abandons it; the store must
/// eventually release whatever it holds (locks expire, as in Spanner §4.2.1).
#[async_trait::async_trait]
pub trait KvTxn: Send {
    /// Value of `key` visible to this transaction (read-write txns lock it; read-only/snapshot txns
    /// read their snapshot).
    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError>;
    /// Up to `limit` rows with keys in [start, end) in key order (end empty = unbounded).
    async fn scan(&mut self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>, KvError>;
    /// Buffer a write (read-write txns only; read-only txns must return KvError::ReadOnly).
    async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), KvError>;
    /// Buffer a delete (read-write txns only; read-only txns must return KvError::ReadOnly).
    async fn delete(&mut self, key: &[u8]) -> Result<(), KvError>;
    /// Commit; returns the commit timestamp (for read-only: the read timestamp).
    async fn commit(self: Box<Self>) -> Result<Timestamp, KvError>;
    /// Abandon the transaction and release what it holds.
    async fn rollback(self: Box<Self>) -> Result<(), KvError>;
    /// The snapshot timestamp for read-only/snapshot transactions, if already chosen.
    fn read_timestamp(&self) -> Option<Timestamp>;
    /// A statement starts using this transaction and must be done by `deadline` (from
    /// [`KvStore::statement_deadline`]): every call until the next statement shares it. The
    /// default ignores it.
    fn set_statement_deadline(&mut self, deadline: Instant) {
        let _ = deadline;
    }
    /// A read-write transaction's wound-wait priority: the start timestamp by which rivals are
    /// ordered (older wins, Spanner §4.2.1). `None` where the store has no locks to order.
    fn priority(&self) -> Option<u64> {
        None
    }
}

/// A store that starts transactions. Shared by every session of a node.
#[async_trait::async_trait]
pub trait KvStore: Send + Sync {
    /// Starts a transaction in `mode`.
    async fn begin(&self, mode: TxnMode) -> Result<Box<dyn KvTxn>, KvError>;

    /// Starts attempt `attempt` (2, 3, …) of a transaction whose earlier attempt failed with
    /// [`KvError::Retryable`] and had wound-wait priority `priority` ([`KvTxn::priority`]). A
    /// store with locks gives the new attempt that priority, so a transaction wounded again and
    /// again ages until it wins instead of starving (Spanner §4.2.1's wound-wait keeps a
    /// re-run's original timestamp). The default starts a fresh transaction.
    async fn begin_retry(&self, mode: TxnMode, priority: u64, attempt: u32) -> Result<Box<dyn KvTxn>, KvError> {
        let _ = (priority, attempt);
        self.begin(mode).await
    }

    /// The deadline of a statement starting now, if the store has one: the session hands it
    /// to every transaction the statement uses ([`KvTxn::set_statement_deadline`]), so that its
    /// reads, commit and re-runs give up together, once. The default has none.
    fn statement_deadline(&self) -> Option<Instant> {
        None
    }

    /// Waits before attempt `attempt` (1-based) of an implicit statement that failed with
    /// [`KvError::Retryable`]. The default only yields to other tasks, because this crate knows no
    /// runtime timer; a store on a real runtime should sleep with jittered exponential backoff.
    async fn backoff(&self, attempt: u32) {
        let _ = attempt;
        YieldNow(false).await;
    }
}

/// How a transaction reads and whether it may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnMode {
    /// Serializable reads and writes (locks, two-phase commit).
    ReadWrite,
    /// A lock-free strong read at a timestamp the store picks (Spanner's `TT.now().latest`).
    ReadOnly,
    /// A lock-free read of the snapshot at exactly this timestamp.
    SnapshotAt(Timestamp),
    /// A lock-free read of a snapshot at most this old (bounded staleness).
    SnapshotStale(Duration),
}

impl TxnMode {
    /// Whether transactions in this mode refuse writes.
    pub fn is_read_only(self) -> bool {
        !matches!(self, TxnMode::ReadWrite)
    }
}

/// Errors of the key-value layer. Each variant tells SQL (and through SQLSTATE, the client) what to
/// do: retry the transaction, check its outcome, or give up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// Aborted, wounded or in conflict: re-run the whole transaction.
    #[error("transaction aborted, retry it: {0}")]
    Retryable(String),
    /// The commit may or may not have happened (e.g. the coordinator became unreachable).
    #[error("transaction outcome unknown: {0}")]
    Ambiguous(String),
    /// A write in a read-only or snapshot transaction.
    #[error("cannot write in a read-only transaction")]
    ReadOnly,
    /// A snapshot older than the version-GC horizon. The message says what happened (the
    /// timestamps); the SQL error adds what to do, so a store leaves its own advice out.
    #[error("snapshot below the GC horizon: {0}")]
    BelowGcHorizon(String),
    /// A key, value or transaction over a limit of the store.
    #[error("too large: {0}")]
    TooLarge(String),
    /// No quorum, no leader, or the node is shutting down.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// Yields once to the executor, so other tasks run between retries.
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
