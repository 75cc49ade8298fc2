//! # Meridian SQL-lite
//!
//! How people use Meridian (DESIGN.md §7): tables with a primary key, one row per key-value
//! pair (`/table_id/pk → encoded row`), a catalog stored in the meta range, and statements run
//! as transactions: single statements as implicit transactions, `BEGIN … COMMIT` as read-write
//! transactions, `BEGIN READ ONLY` as lock-free snapshot reads (Spanner §4.1.4).
//!
//! ```text
//!   text ─► parse ─► classify ─┬─ BEGIN/COMMIT/ROLLBACK/SET ──► Session state machine
//!   (parse.rs)      (bind/)    └─ statement ─► read schemas in the txn (catalog.rs)
//!                                              ─► bind + type-check (bind/) ─► Plan (plan.rs)
//!                                              ─► key spans (scan.rs)
//!                                              ─► execute over KvTxn (exec/) ─► QueryResult
//!                                                           │
//!                                         KvStore / KvTxn (kv.rs): the lead's distributed client,
//!                                         or MemKv (memkv.rs) in tests
//! ```
//!
//! ## Guarantees
//! - **Serializable, statement-atomic.** Everything a statement reads and writes — rows *and*
//!   schemas — goes through one KV transaction. A statement validates all its rows before its first
//!   write; an error inside an explicit transaction fails the whole transaction (PostgreSQL's
//!   rule), so a half-done statement can never commit.
//! - **Implicit statements retry** on [`KvError::Retryable`] (up to
//!   [`session::IMPLICIT_ATTEMPTS_MAX`] attempts); explicit transactions never retry on their own
//!   and report `40001` for the client to re-run.
//! - **Narrow reads.** A `WHERE` that fixes a prefix of the primary key reads only that span (or
//!   point lookups); other filters run over the rows read (`scan.rs`).
//! - **Clear errors.** Every error has a PostgreSQL SQLSTATE and says what to do; everything
//!   Meridian does not support is rejected by name, never ignored (`bind/`).
//! - **Bounded.** Every limit is a named constant: SQL text, rows per statement, key and row sizes,
//!   scan batches, retries, tables listed, and a statement's shape: how deep its expressions
//!   nest (operator chains count), how wide its lists are, how many tokens it has (`bounds.rs`),
//!   so that no statement can exhaust the stack it runs on, a stack overflow being an abort of
//!   the whole node.
//!
//! ## The interface below ([`KvStore`], [`KvTxn`])
//! The store the lead implements must: let SQL read and write the catalog keys under
//! [`keys::SYSTEM_PREFIX`] (`0x00 0x02 …`, in the meta range) in ordinary read-write
//! transactions; serve [`TxnMode::ReadOnly`], [`TxnMode::SnapshotAt`] and
//! [`TxnMode::SnapshotStale`]; return [`KvError::Retryable`] for aborts and wounds; and optionally
//! sleep in [`KvStore::backoff`].
//!
//! ## Left out, deliberately
//! Joins, subqueries, secondary indexes, `ALTER TABLE`, defaults and constraints other than the
//! primary key, `DISTINCT`, savepoints, time types. Types are the five of §7 (and `NUMERIC`, only as
//! the result of `AVG` over integers, as in PostgreSQL: `numeric.rs`); integers are 64-bit.
//!
//! Parsing uses the `sqlparser` crate (PostgreSQL dialect); a binder rejects what Meridian does
//! not support with a message saying so. Built by issue 6.

mod bind;
pub mod bounds;
pub mod catalog;
pub mod encoding;
mod error;
mod exec;
mod expr;
pub mod keys;
mod kv;
pub mod memkv;
pub mod numeric;
pub mod parse;
mod plan;
mod result;
mod scan;
pub mod session;
mod types;

pub use error::{Result, SqlError, SqlState};
pub use kv::{KvError, KvStore, KvTxn, TxnMode};
pub use memkv::MemKv;
pub use result::{QueryResult, ResultKind, StatementShape, TxnStatus};
pub use session::Session;
pub use types::{Column, DataType, Value, format_float};
