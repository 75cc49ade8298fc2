//! What a statement returns: rows with their columns, or a command tag, plus the timestamp of the
//! transaction it ran in.

use meridian_truetime::Timestamp;

use crate::types::{Column, Value};

/// The result of one statement.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    /// Rows or a command tag.
    pub kind: ResultKind,
    /// The commit timestamp (read-write) or read timestamp (read-only, snapshot) of the transaction
    /// the statement ran in, when known: always for implicit transactions, on `COMMIT` for explicit
    /// read-write ones, and for every statement of an explicit read-only one.
    pub timestamp: Option<Timestamp>,
}

/// Rows or a command tag.
#[derive(Debug, Clone, PartialEq)]
pub enum ResultKind {
    /// A statement that returns rows (`SELECT`, `SHOW`, `EXPLAIN`).
    Rows {
        /// Names and types of the columns.
        columns: Vec<Column>,
        /// The rows, each with one value per column.
        rows: Vec<Vec<Value>>,
    },
    /// Any other statement, with PostgreSQL's command tag: `INSERT 0 3`, `UPDATE 2`, `DELETE 1`,
    /// `CREATE TABLE`, `DROP TABLE`, `BEGIN`, `COMMIT`, `ROLLBACK`, `SET`.
    Command {
        /// The tag.
        tag: String,
    },
    /// The text held no statement (PostgreSQL's EmptyQueryResponse; only from `execute_with`).
    Empty,
}

impl ResultKind {
    /// A command result with `tag`.
    pub fn command(tag: impl Into<String>) -> ResultKind {
        ResultKind::Command { tag: tag.into() }
    }
}

/// What `describe` learns about a statement without running it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementShape {
    /// Types of `$1..$n`; `None` where the statement does not say (send such values as text).
    pub params: Vec<Option<crate::types::DataType>>,
    /// Result columns, for statements that return rows; `None` for commands.
    pub columns: Option<Vec<Column>>,
}

/// Where a session is, for the PostgreSQL ReadyForQuery status byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnStatus {
    /// No explicit transaction (`I`).
    Idle,
    /// Inside `BEGIN … COMMIT` (`T`).
    InTransaction,
    /// Inside a failed transaction: only `ROLLBACK` (or `COMMIT`) is accepted (`E`).
    Failed,
}
