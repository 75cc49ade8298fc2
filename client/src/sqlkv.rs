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
//! an unknown outcome `Ambiguous`, a read below the GC horizon `BelowGcHorizon`.

use std::sync::Arc;
use std::time::Duration;

use meridian_sql::{KvError, KvStore, KvTxn, TxnMode};
use meridian_truetime::Timestamp;

use crate::{Client, ClientError, Snapshot, Transaction};

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
        ClientError::Unavailable(m) | ClientError::Transport(m) => KvError::Unavailable(m),
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
        Ok(match mode {
            TxnMode::ReadWrite => Box::new(RwTxn(self.client.begin())),
            TxnMode::ReadOnly => Box::new(RoTxn(self.client.snapshot(None))),
            TxnMode::SnapshotAt(ts) => Box::new(RoTxn(self.client.snapshot(Some(ts)))),
            TxnMode::SnapshotStale(d) => Box::new(RoTxn(self.client.snapshot(Some(Client::stale_ts(d))))),
        })
    }

    async fn backoff(&self, attempt: u32) {
        // Jittered exponential backoff: 2 ms, 4 ms, … up to 200 ms.
        let base = Duration::from_millis(2u64 << attempt.min(7)).min(Duration::from_millis(200));
        let jitter = Duration::from_micros(u64::from(std::process::id() ^ attempt.wrapping_mul(7919)) % 1_000);
        tokio::time::sleep(base + jitter).await;
    }
}

/// A read-write SQL transaction.
struct RwTxn(Transaction);

#[async_trait::async_trait]
impl KvTxn for RwTxn {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        self.0.get(key).await.map_err(kv_error)
    }

    async fn scan(&mut self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>, KvError> {
        self.0.scan(start, end, limit).await.map_err(kv_error)
    }

    async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        self.0.put(key, value);
        Ok(())
    }

    async fn delete(&mut self, key: &[u8]) -> Result<(), KvError> {
        self.0.delete(key);
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<Timestamp, KvError> {
        self.0.commit().await.map_err(kv_error)
    }

    async fn rollback(self: Box<Self>) -> Result<(), KvError> {
        self.0.rollback().await;
        Ok(())
    }

    fn read_timestamp(&self) -> Option<Timestamp> {
        None
    }
}

/// A read-only or snapshot SQL transaction.
struct RoTxn(Snapshot);

#[async_trait::async_trait]
impl KvTxn for RoTxn {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        self.0.get(key).await.map_err(kv_error)
    }

    async fn scan(&mut self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>, KvError> {
        self.0.scan(start, end, limit).await.map_err(kv_error)
    }

    async fn put(&mut self, _: &[u8], _: &[u8]) -> Result<(), KvError> {
        Err(KvError::ReadOnly)
    }

    async fn delete(&mut self, _: &[u8]) -> Result<(), KvError> {
        Err(KvError::ReadOnly)
    }

    async fn commit(self: Box<Self>) -> Result<Timestamp, KvError> {
        Ok(self.0.ts().unwrap_or(Timestamp::ZERO))
    }

    async fn rollback(self: Box<Self>) -> Result<(), KvError> {
        Ok(())
    }

    fn read_timestamp(&self) -> Option<Timestamp> {
        self.0.ts()
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
