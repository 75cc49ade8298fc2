//! An implicit statement re-run after a retryable failure keeps the first attempt's wound-wait
//! priority (issue 18: SQL retries used to begin a new transaction each time, so a statement
//! wounded again and again never grew older than its rivals — Spanner §4.2.1).

use std::sync::{Arc, Mutex};

use futures::executor::block_on;
use meridian_sql::{KvError, KvStore, KvTxn, MemKv, Session, TxnMode};
use meridian_truetime::Timestamp;

/// A store whose read-write transactions carry a priority (a counter, so each fresh one is
/// "younger"), whose first `FAILS` commits fail as retryable, and which records how each
/// transaction began.
struct Wounding {
    inner: MemKv,
    log: Arc<Mutex<Log>>,
}

#[derive(Default)]
struct Log {
    next_priority: u64,
    /// (priority given to the transaction, attempt passed to `begin_retry` or 1 for `begin`).
    begun: Vec<(u64, u32)>,
    commits_failed: u32,
}

const FAILS: u32 = 3;

struct Txn {
    inner: Box<dyn KvTxn>,
    priority: u64,
    log: Arc<Mutex<Log>>,
}

#[async_trait::async_trait]
impl KvTxn for Txn {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        self.inner.get(key).await
    }
    async fn scan(&mut self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>, KvError> {
        self.inner.scan(start, end, limit).await
    }
    async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        self.inner.put(key, value).await
    }
    async fn delete(&mut self, key: &[u8]) -> Result<(), KvError> {
        self.inner.delete(key).await
    }
    async fn commit(self: Box<Self>) -> Result<Timestamp, KvError> {
        {
            let mut log = self.log.lock().unwrap();
            if log.commits_failed < FAILS {
                log.commits_failed += 1;
                return Err(KvError::Retryable("wounded by an older transaction".into()));
            }
        }
        self.inner.commit().await
    }
    async fn rollback(self: Box<Self>) -> Result<(), KvError> {
        self.inner.rollback().await
    }
    fn read_timestamp(&self) -> Option<Timestamp> {
        self.inner.read_timestamp()
    }
    fn priority(&self) -> Option<u64> {
        Some(self.priority)
    }
}

impl Wounding {
    fn wrap(&self, inner: Box<dyn KvTxn>, priority: Option<u64>, attempt: u32) -> Box<dyn KvTxn> {
        let mut log = self.log.lock().unwrap();
        let priority = priority.unwrap_or_else(|| {
            log.next_priority += 1;
            log.next_priority
        });
        log.begun.push((priority, attempt));
        Box::new(Txn { inner, priority, log: self.log.clone() })
    }
}

#[async_trait::async_trait]
impl KvStore for Wounding {
    async fn begin(&self, mode: TxnMode) -> Result<Box<dyn KvTxn>, KvError> {
        let inner = self.inner.begin(mode).await?;
        Ok(if mode == TxnMode::ReadWrite { self.wrap(inner, None, 1) } else { inner })
    }
    async fn begin_retry(&self, mode: TxnMode, priority: u64, attempt: u32) -> Result<Box<dyn KvTxn>, KvError> {
        let inner = self.inner.begin(mode).await?;
        Ok(if mode == TxnMode::ReadWrite { self.wrap(inner, Some(priority), attempt) } else { inner })
    }
}

#[test]
fn an_implicit_statement_keeps_its_priority_across_re_runs() {
    let log = Arc::new(Mutex::new(Log::default()));
    let mut s = Session::new(Arc::new(Wounding { inner: MemKv::new(), log: log.clone() }));
    for r in block_on(s.execute("CREATE TABLE t (id INT PRIMARY KEY, v INT)")) {
        r.expect("create");
    }
    log.lock().unwrap().commits_failed = 0;
    log.lock().unwrap().begun.clear();
    let r = block_on(s.execute_with("INSERT INTO t VALUES (1, 10)", &[]));
    assert!(r.is_ok(), "the insert succeeds on its attempt {}: {r:?}", FAILS + 1);
    let begun = log.lock().unwrap().begun.clone();
    assert_eq!(begun.len(), FAILS as usize + 1, "one transaction per attempt: {begun:?}");
    let first = begun[0].0;
    for (i, (priority, attempt)) in begun.iter().enumerate() {
        assert_eq!(*priority, first, "attempt {} kept the first attempt's priority: {begun:?}", i + 1);
        assert_eq!(*attempt, i as u32 + 1, "attempts are numbered: {begun:?}");
    }
}
