//! SQL over a cluster: [`ClusterKv`] is the `meridian-sql` key-value store backed by this client,
//! so a SQL session (the `meridian sql` shell, the PostgreSQL port of a node) runs its
//! statements as Meridian transactions.
//!
//! | SQL                                   | here                                        |
//! |---------------------------------------|---------------------------------------------|
//! | `BEGIN` / implicit statement          | [`Client::begin`]: locks, 2PC across ranges |
//! | `BEGIN READ ONLY`                     | [`Client::snapshot`] at `TT.now().latest`   |
//! | `AS OF SYSTEM TIME '<ts>'` / `'-10s'` | a snapshot at that timestamp / that stale   |
//!
//! Errors map to the store's contract: an aborted transaction is `Retryable` (SQLSTATE 40001),
//! an unknown outcome `Ambiguous`, a read below the GC horizon `BelowGcHorizon`, a cluster that
//! cannot serve before the deadline `Unavailable` (SQLSTATE 57P03, with the node's words: which
//! range, how many of its replicas answer).
//!
//! **One deadline per statement.** [`KvStore::statement_deadline`] is the client's deadline
//! from the statement's start; every call of every transaction the statement uses runs inside
//! [`crate::with_statement_deadline`], so catalog reads, row reads, the commit and a re-run after
//! an abort all give up at that one moment. Rolling back is best effort and runs in the
//! background, for at most [`ROLLBACK_WAIT_MAX`] (locks left behind expire with the
//! transaction), so the statement's answer never waits for it.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_sql::{KvError, KvStore, KvTxn, TxnMode};
use meridian_truetime::Timestamp;

use crate::{Client, ClientError, Snapshot, StatementDeadline, Transaction};

/// Longest a rollback (run in the background) tries to make the ranges release what the
/// transaction held.
pub const ROLLBACK_WAIT_MAX: Duration = Duration::from_secs(1);

/// Runs `f` under the statement's deadline, if one was set.
async fn scoped<F: Future>(deadline: Option<StatementDeadline>, f: F) -> F::Output {
    match deadline {
        Some(d) => crate::with_statement_deadline(d, f).await,
        None => f.await,
    }
}

/// The client's form of the deadline the session hands over, `budget` after the statement began.
fn statement(budget: Duration, at: Instant) -> StatementDeadline {
    StatementDeadline { at: tokio::time::Instant::from_std(at), budget }
}

/// First wait before re-running a SQL statement that was aborted.
const SQL_RETRY_FIRST: Duration = Duration::from_millis(2);
/// Longest wait before re-running it.
const SQL_RETRY_MAX: Duration = Duration::from_millis(200);

/// The SQL store over a cluster.
#[derive(Clone)]
pub struct ClusterKv {
    client: Arc<Client>,
}

impl ClusterKv {
    /// A store running every transaction through `client`.
    pub fn new(client: Arc<Client>) -> Self {
        ClusterKv { client }
    }
}

fn kv_error(e: ClientError) -> KvError {
    match e {
        ClientError::Aborted(m) => KvError::Retryable(m),
        ClientError::Ambiguous(m) => KvError::Ambiguous(m),
        ClientError::Unavailable(m) | ClientError::Transport(m) | ClientError::WrongAddress(m) => {
            KvError::Unavailable(m)
        }
        ClientError::Invalid(m) if m.contains("GC horizon") => KvError::BelowGcHorizon(without_advice(m)),
        ClientError::Invalid(m) if m.contains("limit is") => KvError::TooLarge(m),
        other => KvError::Other(other.to_string()),
    }
}

/// A node's error message without its advice. Node errors read "what happened; what to do"; for
/// an error whose advice the SQL layer words itself (a read below the GC horizon), the advice
/// would otherwise be given twice.
fn without_advice(message: String) -> String {
    match message.split_once("; ") {
        Some((what, _)) => what.to_string(),
        None => message,
    }
}

#[async_trait::async_trait]
impl KvStore for ClusterKv {
    async fn begin(&self, mode: TxnMode) -> Result<Box<dyn KvTxn>, KvError> {
        let budget = self.client.deadline;
        let ro = |ts| Box::new(RoTxn { snap: self.client.snapshot(ts), budget, deadline: None });
        Ok(match mode {
            TxnMode::ReadWrite => Box::new(RwTxn { txn: self.client.begin(), budget, deadline: None }),
            TxnMode::ReadOnly => ro(None),
            TxnMode::SnapshotAt(ts) => ro(Some(ts)),
            TxnMode::SnapshotStale(d) => ro(Some(Client::stale_ts(d))),
        })
    }

    async fn begin_retry(&self, mode: TxnMode, priority: u64, attempt: u32) -> Result<Box<dyn KvTxn>, KvError> {
        match mode {
            TxnMode::ReadWrite => {
                let txn = self.client.begin_retry(priority, attempt);
                Ok(Box::new(RwTxn { txn, budget: self.client.deadline, deadline: None }))
            }
            _ => self.begin(mode).await,
        }
    }

    fn statement_deadline(&self) -> Option<Instant> {
        Some(Instant::now() + self.client.deadline)
    }

    async fn backoff(&self, attempt: u32) {
        // Jittered exponential backoff: about 2 ms, 4 ms, … up to 200 ms.
        let wait = crate::backoff::Backoff::nth(attempt.saturating_sub(1), SQL_RETRY_FIRST, SQL_RETRY_MAX);
        tokio::time::sleep(wait).await;
    }
}

/// A read-write SQL transaction, and the deadline of the statement using it.
struct RwTxn {
    txn: Transaction,
    /// The client's deadline: a statement's budget.
    budget: Duration,
    deadline: Option<StatementDeadline>,
}

#[async_trait::async_trait]
impl KvTxn for RwTxn {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        scoped(self.deadline, self.txn.get(key)).await.map_err(kv_error)
    }

    async fn scan(&mut self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>, KvError> {
        scoped(self.deadline, self.txn.scan(start, end, limit)).await.map_err(kv_error)
    }

    async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        self.txn.put(key, value);
        Ok(())
    }

    async fn delete(&mut self, key: &[u8]) -> Result<(), KvError> {
        self.txn.delete(key);
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<Timestamp, KvError> {
        scoped(self.deadline, self.txn.commit()).await.map_err(kv_error)
    }

    async fn rollback(self: Box<Self>) -> Result<(), KvError> {
        // In the background: the statement's answer does not wait for the ranges (one of them
        // may be the reason it failed), and what is not released in time expires.
        let done = crate::with_statement_deadline(StatementDeadline::after(ROLLBACK_WAIT_MAX), self.txn.rollback());
        tokio::spawn(done);
        Ok(())
    }

    fn read_timestamp(&self) -> Option<Timestamp> {
        None
    }

    fn set_statement_deadline(&mut self, at: Instant) {
        self.deadline = Some(statement(self.budget, at));
    }

    fn priority(&self) -> Option<u64> {
        Some(self.txn.start())
    }
}

/// A read-only or snapshot SQL transaction, and the deadline of the statement using it.
struct RoTxn {
    snap: Snapshot,
    /// The client's deadline: a statement's budget.
    budget: Duration,
    deadline: Option<StatementDeadline>,
}

#[async_trait::async_trait]
impl KvTxn for RoTxn {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        scoped(self.deadline, self.snap.get(key)).await.map_err(kv_error)
    }

    async fn scan(&mut self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>, KvError> {
        scoped(self.deadline, self.snap.scan(start, end, limit)).await.map_err(kv_error)
    }

    async fn put(&mut self, _: &[u8], _: &[u8]) -> Result<(), KvError> {
        Err(KvError::ReadOnly)
    }

    async fn delete(&mut self, _: &[u8]) -> Result<(), KvError> {
        Err(KvError::ReadOnly)
    }

    async fn commit(self: Box<Self>) -> Result<Timestamp, KvError> {
        Ok(self.snap.ts().unwrap_or(Timestamp::ZERO))
    }

    async fn rollback(self: Box<Self>) -> Result<(), KvError> {
        Ok(())
    }

    fn read_timestamp(&self) -> Option<Timestamp> {
        self.snap.ts()
    }

    fn set_statement_deadline(&mut self, at: Instant) {
        self.deadline = Some(statement(self.budget, at));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_below_the_gc_horizon_says_what_to_do_once() {
        // As a node words it (`server/src/node/read.rs`), with its own advice after the "; ".
        let node = "read timestamp 1700000000.000000000 is below the GC horizon 1700000005.000000000: versions \
                    that old are gone; read at a later timestamp";
        let err = meridian_sql::SqlError::from_kv(kv_error(ClientError::Invalid(node.into())));
        assert_eq!(err.code, meridian_sql::SqlState::SnapshotTooOld);
        assert_eq!(
            err.message,
            "snapshot too old: read timestamp 1700000000.000000000 is below the GC horizon 1700000005.000000000: \
             versions that old are gone; read at a more recent time"
        );
        // The node's other wording (the storage refused the read) carries no advice of its own.
        let node = "read timestamp 1700000000.000000000 is below the GC horizon 1700000005.000000000";
        let err = meridian_sql::SqlError::from_kv(kv_error(ClientError::Invalid(node.into())));
        assert_eq!(err.message, format!("snapshot too old: {node}; read at a more recent time"));
    }

    #[test]
    fn the_sql_catalog_lives_where_the_cluster_lets_clients_write() {
        assert_eq!(meridian_sql::keys::SYSTEM_PREFIX.as_slice(), meridian_shard::range::SQL_CATALOG_PREFIX);
        assert!(meridian_shard::range::check_user_key(&meridian_sql::keys::next_table_id_key()).is_ok());
    }
}
