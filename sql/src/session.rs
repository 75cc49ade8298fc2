//! A SQL session: one per client connection, holding the connection's explicit transaction.
//!
//! ```text
//!                 BEGIN [READ ONLY] [AS OF SYSTEM TIME …]
//!        ┌──────┐ ─────────────────────────────────────► ┌──────────────┐
//!        │ Idle │                                          │ InTransaction│──statement error──┐
//!        └──────┘ ◄──── COMMIT / ROLLBACK ──────────────── └──────────────┘                   ▼
//!           ▲                                                                           ┌────────┐
//!           └────────────── ROLLBACK (or COMMIT, which reports ROLLBACK) ────────────── │ Failed │
//!                                                                                       └────────┘
//! ```
//!
//! - **Implicit transactions.** A statement outside `BEGIN` runs alone in its own transaction:
//!   `SELECT`/`SHOW` in a lock-free read-only one (Spanner §4.1.4; a snapshot one with
//!   `AS OF SYSTEM TIME`), anything else in a read-write one. If the KV layer says
//!   [`KvError::Retryable`](crate::KvError::Retryable) (a conflict, a wound), the session runs the
//!   statement again from the start in a new transaction, up to [`IMPLICIT_ATTEMPTS_MAX`] times,
//!   calling [`KvStore::backoff`] between attempts. Other errors roll back and are returned.
//!   Every attempt shares the statement's deadline ([`KvStore::statement_deadline`]), as every
//!   statement of an explicit transaction (and its `COMMIT`) has one of its own.
//! - **Explicit transactions.** `BEGIN` only records the mode; the KV transaction starts at the
//!   first statement (so `SET TRANSACTION READ ONLY` can still change it). As in PostgreSQL, *any*
//!   error inside the block fails the transaction: it is rolled back in the store at once, and
//!   every further statement gets `25P02 current transaction is aborted, commands ignored until end
//!   of transaction block` until `ROLLBACK` (or `COMMIT`, which reports `ROLLBACK`). The session
//!   never retries inside an explicit transaction: the client owns the transaction's logic and must
//!   re-run it on `40001`.
//! - **Several statements in one `execute`** (the simple query protocol) run one after another,
//!   each as its own implicit transaction outside `BEGIN`; execution stops at the first error,
//!   whose result is the last one returned. A syntax error anywhere means nothing runs.
//! - **Timestamps.** Every result of an implicit transaction carries its commit (or read)
//!   timestamp; `COMMIT` carries the commit timestamp; statements in a read-only transaction carry
//!   its snapshot timestamp.
//!
//! Transaction syntax: `BEGIN`, `BEGIN TRANSACTION`, `START TRANSACTION`, each optionally
//! `READ ONLY` / `READ WRITE` / `ISOLATION LEVEL …` (always serializable) and
//! `AS OF SYSTEM TIME '…'` (makes it read-only); `SET TRANSACTION READ ONLY` before the first
//! statement; `COMMIT`/`END`; `ROLLBACK`/`ABORT`. Left out: savepoints, and running a multi-
//! statement `execute` as one implicit transaction (PostgreSQL does; CockroachDB too).

use std::sync::Arc;
use std::time::Instant;

use crate::bind::{self, Kind, Params, Tables};
use crate::catalog;
use crate::error::{Result, SqlError, SqlState};
use crate::exec;
use crate::kv::{KvStore, KvTxn, TxnMode};
use crate::parse::{self, AsOf, Parsed};
use crate::result::{QueryResult, ResultKind, StatementShape, TxnStatus};
use crate::types::Value;

/// Most attempts of one implicit statement that keeps failing with a retryable error.
pub const IMPLICIT_ATTEMPTS_MAX: u32 = 10;

/// An explicit transaction.
struct Open {
    read_only: bool,
    as_of: Option<AsOf>,
    /// Started lazily by the first statement.
    txn: Option<Box<dyn KvTxn>>,
}

enum State {
    Idle,
    Open(Open),
    Failed,
}

/// One connection's SQL session.
pub struct Session {
    store: Arc<dyn KvStore>,
    state: State,
}

fn in_failed_txn() -> SqlError {
    SqlError::new(
        SqlState::InFailedSqlTransaction,
        "current transaction is aborted, commands ignored until end of transaction block",
    )
}

fn mode_for(read_only: bool, as_of: Option<AsOf>) -> TxnMode {
    match as_of {
        Some(AsOf::At(ts)) => TxnMode::SnapshotAt(ts),
        Some(AsOf::Stale(d)) => TxnMode::SnapshotStale(d),
        None if read_only => TxnMode::ReadOnly,
        None => TxnMode::ReadWrite,
    }
}

/// Reads the schemas `parsed` names in `txn` and binds it.
async fn bind_in(
    txn: &mut dyn KvTxn,
    parsed: &Parsed,
    params: &mut Params,
    read_only: bool,
) -> Result<crate::plan::Plan> {
    let mut tables = Tables::default();
    for name in bind::referenced_tables(&parsed.stmt) {
        if let Some(schema) = catalog::get_table(txn, &name).await? {
            tables.insert(schema);
        }
    }
    bind::bind(parsed, &tables, params, read_only)
}

async fn run_in(txn: &mut dyn KvTxn, parsed: &Parsed, params: &[Value], read_only: bool) -> Result<ResultKind> {
    let plan = bind_in(txn, parsed, &mut Params::with_values(params), read_only).await?;
    exec::execute(txn, plan).await
}

impl Session {
    /// A session over `store`, with no transaction open.
    pub fn new(store: Arc<dyn KvStore>) -> Session {
        Session { store, state: State::Idle }
    }

    /// Runs one or more ';'-separated statements (simple query protocol); one result per statement.
    /// Stops after the first error (its result is the last). A syntax error anywhere runs nothing.
    pub async fn execute(&mut self, sql: &str) -> Vec<Result<QueryResult, SqlError>> {
        let statements = match parse::parse(sql) {
            Ok(s) => s,
            Err(e) => {
                self.fail_open_transaction().await;
                return vec![Err(e)];
            }
        };
        let mut results = Vec::with_capacity(statements.len());
        for parsed in &statements {
            let result = self.run(parsed, &[]).await;
            let failed = result.is_err();
            results.push(result);
            if failed {
                break;
            }
        }
        results
    }

    /// Extended protocol: one statement with $n parameters.
    pub async fn execute_with(&mut self, sql: &str, params: &[Value]) -> Result<QueryResult, SqlError> {
        let mut statements = match parse::parse(sql) {
            Ok(s) => s,
            Err(e) => {
                self.fail_open_transaction().await;
                return Err(e);
            }
        };
        match statements.len() {
            0 => Ok(QueryResult { kind: ResultKind::Empty, timestamp: None }),
            1 => {
                let parsed = statements.pop().expect("invariant: one statement");
                self.run(&parsed, params).await
            }
            _ => {
                self.fail_open_transaction().await;
                Err(SqlError::syntax("cannot insert multiple commands into a prepared statement", None))
            }
        }
    }

    /// Parameter types and result columns of one statement, without running it. Reads the catalog
    /// (in the open transaction if there is one, else in a read-only one).
    pub async fn describe(&mut self, sql: &str) -> Result<StatementShape, SqlError> {
        let mut statements = parse::parse(sql)?;
        if statements.len() > 1 {
            return Err(SqlError::syntax("cannot insert multiple commands into a prepared statement", None));
        }
        let Some(parsed) = statements.pop() else {
            return Ok(StatementShape { params: Vec::new(), columns: None });
        };
        if !matches!(bind::classify(&parsed)?, Kind::Read | Kind::Write) {
            return Ok(StatementShape { params: Vec::new(), columns: None });
        }
        let mut params = Params::unknown();
        let plan = match &mut self.state {
            State::Failed => return Err(in_failed_txn()),
            State::Open(Open { txn: Some(txn), read_only, .. }) => {
                let read_only = *read_only;
                match bind_in(txn.as_mut(), &parsed, &mut params, read_only).await {
                    Err(e) if e.is_retryable() => {
                        self.fail_open_transaction().await;
                        return Err(e);
                    }
                    other => other?,
                }
            }
            _ => {
                let mut txn = self.store.begin(TxnMode::ReadOnly).await?;
                let plan = bind_in(txn.as_mut(), &parsed, &mut params, false).await;
                let _ = txn.rollback().await;
                plan?
            }
        };
        Ok(StatementShape { params: params.types(), columns: plan.columns() })
    }

    /// Transaction status, for pgwire's ReadyForQuery.
    pub fn in_transaction(&self) -> TxnStatus {
        match self.state {
            State::Idle => TxnStatus::Idle,
            State::Open(_) => TxnStatus::InTransaction,
            State::Failed => TxnStatus::Failed,
        }
    }

    /// Columns of table `name` (for the shell's `\d name`): `SHOW COLUMNS FROM "name"`.
    pub async fn describe_table(&mut self, name: &str) -> Result<QueryResult, SqlError> {
        self.execute_with(&format!("SHOW COLUMNS FROM \"{}\"", name.replace('"', "\"\"")), &[]).await
    }

    /// Ends the session, rolling back an open transaction (dropping a session abandons it instead).
    pub async fn close(mut self) {
        if let State::Open(Open { txn: Some(txn), .. }) = std::mem::replace(&mut self.state, State::Idle) {
            let _ = txn.rollback().await;
        }
    }

    async fn fail_open_transaction(&mut self) {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Idle => {}
            State::Open(open) => {
                if let Some(txn) = open.txn {
                    // Best effort: an abandoned transaction is cleaned up by the store anyway.
                    let _ = txn.rollback().await;
                }
                self.state = State::Failed;
            }
            State::Failed => self.state = State::Failed,
        }
    }

    async fn run(&mut self, parsed: &Parsed, params: &[Value]) -> Result<QueryResult> {
        let kind = match bind::classify(parsed) {
            Ok(kind) => kind,
            Err(e) => {
                self.fail_open_transaction().await;
                return Err(e);
            }
        };
        match kind {
            Kind::Begin { read_only, as_of } => self.begin(read_only, as_of).await,
            Kind::Commit => self.commit(self.store.statement_deadline()).await,
            Kind::Rollback => {
                self.fail_open_transaction().await;
                self.state = State::Idle;
                Ok(command("ROLLBACK"))
            }
            Kind::SetTransaction { read_only } => self.set_transaction(read_only).await,
            Kind::SetVariable => match self.state {
                State::Failed => Err(in_failed_txn()),
                _ => Ok(command("SET")),
            },
            Kind::Read | Kind::Write => match &mut self.state {
                State::Failed => Err(in_failed_txn()),
                State::Idle => {
                    let deadline = self.store.statement_deadline();
                    self.run_implicit(parsed, params, kind == Kind::Read, deadline).await
                }
                State::Open(_) => self.run_explicit(parsed, params, self.store.statement_deadline()).await,
            },
        }
    }

    async fn begin(&mut self, read_only: Option<bool>, as_of: Option<AsOf>) -> Result<QueryResult> {
        match self.state {
            // PostgreSQL only warns about a nested BEGIN; the transaction goes on unchanged.
            State::Open(_) => Ok(command("BEGIN")),
            State::Failed => Err(in_failed_txn()),
            State::Idle => {
                let read_only = read_only.unwrap_or(false) || as_of.is_some();
                self.state = State::Open(Open { read_only, as_of, txn: None });
                Ok(command("BEGIN"))
            }
        }
    }

    async fn commit(&mut self, deadline: Option<Instant>) -> Result<QueryResult> {
        match std::mem::replace(&mut self.state, State::Idle) {
            // Like PostgreSQL: COMMIT outside a transaction only warns.
            State::Idle => Ok(command("COMMIT")),
            State::Failed => Ok(command("ROLLBACK")),
            State::Open(Open { txn: None, .. }) => Ok(command("COMMIT")),
            State::Open(Open { txn: Some(mut txn), .. }) => {
                if let Some(d) = deadline {
                    txn.set_statement_deadline(d);
                }
                let ts = txn.commit().await?;
                Ok(QueryResult { kind: ResultKind::command("COMMIT"), timestamp: Some(ts) })
            }
        }
    }

    async fn set_transaction(&mut self, read_only: Option<bool>) -> Result<QueryResult> {
        match &mut self.state {
            State::Idle => Err(SqlError::new(
                SqlState::NoActiveSqlTransaction,
                "SET TRANSACTION can only be used in transaction blocks (after BEGIN)",
            )),
            State::Failed => Err(in_failed_txn()),
            State::Open(open) if open.txn.is_some() => {
                let err = SqlError::new(
                    SqlState::ActiveSqlTransaction,
                    "SET TRANSACTION must be called before any query in the transaction",
                );
                self.fail_open_transaction().await;
                Err(err)
            }
            State::Open(open) => {
                if let Some(read_only) = read_only {
                    if !read_only && open.as_of.is_some() {
                        let err = SqlError::new(
                            SqlState::InvalidParameterValue,
                            "a transaction AS OF SYSTEM TIME is read-only; it cannot be READ WRITE",
                        );
                        self.fail_open_transaction().await;
                        return Err(err);
                    }
                    open.read_only = read_only;
                }
                Ok(command("SET"))
            }
        }
    }

    /// Runs a statement in its own transaction, again (a new one) after a retryable error. Every
    /// attempt shares the statement's `deadline`: past it, the store fails the next attempt's
    /// first call as unavailable, which ends the loop.
    async fn run_implicit(
        &mut self,
        parsed: &Parsed,
        params: &[Value],
        read: bool,
        deadline: Option<Instant>,
    ) -> Result<QueryResult> {
        let mode = mode_for(read, parsed.as_of);
        let mut last_error = None;
        // The first attempt's wound-wait priority, which every re-run keeps.
        let mut priority = None;
        for attempt in 1..=IMPLICIT_ATTEMPTS_MAX {
            if attempt > 1 {
                self.store.backoff(attempt).await;
            }
            let begun = match priority {
                Some(p) => self.store.begin_retry(mode, p, attempt).await,
                None => self.store.begin(mode).await,
            };
            let mut txn = match begun {
                Ok(mut txn) => {
                    if let Some(d) = deadline {
                        txn.set_statement_deadline(d);
                    }
                    txn
                }
                Err(e) => {
                    let e = SqlError::from_kv(e);
                    if e.is_retryable() {
                        last_error = Some(e);
                        continue;
                    }
                    return Err(e);
                }
            };
            priority = priority.or(txn.priority());
            let outcome = run_in(txn.as_mut(), parsed, params, mode.is_read_only()).await;
            let e = match outcome {
                Ok(kind) => match txn.commit().await {
                    Ok(ts) => return Ok(QueryResult { kind, timestamp: Some(ts) }),
                    Err(e) => SqlError::from_kv(e),
                },
                Err(e) => {
                    let _ = txn.rollback().await;
                    e
                }
            };
            if !e.is_retryable() {
                return Err(e);
            }
            last_error = Some(e);
        }
        let e = last_error.expect("invariant: the loop ran at least once and every failed attempt set an error");
        Err(SqlError { message: format!("{} (gave up after {IMPLICIT_ATTEMPTS_MAX} attempts)", e.message), ..e })
    }

    async fn run_explicit(
        &mut self,
        parsed: &Parsed,
        params: &[Value],
        deadline: Option<Instant>,
    ) -> Result<QueryResult> {
        let State::Open(open) = &mut self.state else {
            panic!("invariant: run_explicit is called only in an open transaction");
        };
        let outcome = if parsed.as_of.is_some() {
            Err(SqlError::unsupported(
                "AS OF SYSTEM TIME inside a transaction (write BEGIN READ ONLY AS OF SYSTEM TIME '…' instead)",
            ))
        } else {
            let read_only = open.read_only;
            let txn = match open.txn.take() {
                Some(txn) => Ok(txn),
                None => self.store.begin(mode_for(read_only, open.as_of)).await.map_err(SqlError::from_kv),
            };
            match txn {
                Err(e) => Err(e),
                Ok(mut txn) => {
                    if let Some(d) = deadline {
                        txn.set_statement_deadline(d);
                    }
                    run_in(open.txn.insert(txn).as_mut(), parsed, params, read_only).await
                }
            }
        };
        match outcome {
            Ok(kind) => {
                let timestamp = open.txn.as_ref().and_then(|t| t.read_timestamp());
                Ok(QueryResult { kind, timestamp })
            }
            Err(e) => {
                self.fail_open_transaction().await;
                Err(e)
            }
        }
    }
}

fn command(tag: &str) -> QueryResult {
    QueryResult { kind: ResultKind::command(tag), timestamp: None }
}
