//! The one error type of the SQL layer: [`SqlError`], a PostgreSQL-style error with a five-character
//! SQLSTATE ([`SqlState`]), a message that says what the user can do, and for syntax errors the
//! 1-based character position in the statement text.
//!
//! The SQLSTATE is the contract with clients: `pgwire` sends it verbatim in its ErrorResponse, and
//! drivers decide on it whether to retry (`40001`), whether the transaction is gone (`25P02`), or
//! whether the input was wrong (class `42`, `22`, `23`). Messages follow PostgreSQL's wording where
//! one exists, so people can search for them, and add the Meridian-specific hint when one helps.
//!
//! Errors from the key-value layer ([`crate::KvError`]) are mapped here, in one place
//! ([`SqlError::from_kv`]), so every statement reports them the same way.

use std::fmt;

use crate::kv::KvError;

/// `Result` with [`SqlError`] as the error.
pub type Result<T, E = SqlError> = std::result::Result<T, E>;

/// A PostgreSQL SQLSTATE code (the subset Meridian reports). `code()` gives the five characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SqlState {
    /// `42601`: the text is not valid SQL.
    SyntaxError,
    /// `42P01`: a table that does not exist.
    UndefinedTable,
    /// `42703`: a column that does not exist.
    UndefinedColumn,
    /// `42702`: a column name that matches more than one column.
    AmbiguousColumn,
    /// `42P07`: `CREATE TABLE` of a table that exists.
    DuplicateTable,
    /// `42701`: two columns with one name.
    DuplicateColumn,
    /// `42P16`: a table definition Meridian cannot store (e.g. no primary key).
    InvalidTableDefinition,
    /// `42804`: a value or expression of the wrong type.
    DatatypeMismatch,
    /// `42846`: a `CAST` between types that do not convert.
    CannotCoerce,
    /// `42883`: a function or operator that does not exist.
    UndefinedFunction,
    /// `42803`: a column outside an aggregate in an aggregating query (or an aggregate in WHERE).
    GroupingError,
    /// `42P10`: an `ORDER BY` position that is not in the select list.
    InvalidColumnReference,
    /// `42P02`: a `$n` parameter with no value.
    UndefinedParameter,
    /// `42622`: an identifier that is too long.
    NameTooLong,
    /// `0A000`: valid SQL that Meridian does not support.
    FeatureNotSupported,
    /// `23505`: a second row with an existing primary key.
    UniqueViolation,
    /// `23502`: NULL in a `NOT NULL` or primary-key column.
    NotNullViolation,
    /// `21000`: one statement would change the same row twice.
    CardinalityViolation,
    /// `22003`: a number out of range (integer overflow, float overflow).
    NumericValueOutOfRange,
    /// `22012`: division by zero.
    DivisionByZero,
    /// `22P02`: text that does not parse as the requested type.
    InvalidTextRepresentation,
    /// `22023`: an argument with an invalid value (e.g. a bad `AS OF SYSTEM TIME`).
    InvalidParameterValue,
    /// `54000`: a statement over one of Meridian's limits (row, key, rows per statement).
    ProgramLimitExceeded,
    /// `25001`: a command that must run before the transaction's first statement.
    ActiveSqlTransaction,
    /// `25P01`: a transaction command outside a transaction block.
    NoActiveSqlTransaction,
    /// `25P02`: a statement in a transaction that has already failed.
    InFailedSqlTransaction,
    /// `25006`: a write in a read-only transaction.
    ReadOnlySqlTransaction,
    /// `40001`: the transaction conflicted with another and was aborted; run it again.
    SerializationFailure,
    /// `40003`: the commit's outcome is unknown.
    StatementCompletionUnknown,
    /// `72000`: a snapshot older than the version-GC horizon.
    SnapshotTooOld,
    /// `08006`: the database (or part of it) is unreachable.
    ConnectionFailure,
    /// `57P03`: the database cannot serve the statement now (no quorum, no leader before the
    /// deadline); the connection is fine, and the statement may be run again later.
    CannotConnectNow,
    /// `08P01`: the client broke the protocol (e.g. the wrong number of parameters).
    ProtocolViolation,
    /// `XX001`: stored bytes do not decode.
    DataCorrupted,
    /// `XX000`: a bug or an unexpected error below SQL.
    InternalError,
}

impl SqlState {
    /// The five-character SQLSTATE, e.g. `"42P01"`.
    pub fn code(self) -> &'static str {
        use SqlState::*;
        match self {
            SyntaxError => "42601",
            UndefinedTable => "42P01",
            UndefinedColumn => "42703",
            AmbiguousColumn => "42702",
            DuplicateTable => "42P07",
            DuplicateColumn => "42701",
            InvalidTableDefinition => "42P16",
            DatatypeMismatch => "42804",
            CannotCoerce => "42846",
            UndefinedFunction => "42883",
            GroupingError => "42803",
            InvalidColumnReference => "42P10",
            UndefinedParameter => "42P02",
            NameTooLong => "42622",
            FeatureNotSupported => "0A000",
            UniqueViolation => "23505",
            NotNullViolation => "23502",
            CardinalityViolation => "21000",
            NumericValueOutOfRange => "22003",
            DivisionByZero => "22012",
            InvalidTextRepresentation => "22P02",
            InvalidParameterValue => "22023",
            ProgramLimitExceeded => "54000",
            ActiveSqlTransaction => "25001",
            NoActiveSqlTransaction => "25P01",
            InFailedSqlTransaction => "25P02",
            ReadOnlySqlTransaction => "25006",
            SerializationFailure => "40001",
            StatementCompletionUnknown => "40003",
            SnapshotTooOld => "72000",
            ConnectionFailure => "08006",
            CannotConnectNow => "57P03",
            ProtocolViolation => "08P01",
            DataCorrupted => "XX001",
            InternalError => "XX000",
        }
    }
}

impl fmt::Display for SqlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A failed statement: SQLSTATE, message, and for syntax errors where in the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (SQLSTATE {code})")]
pub struct SqlError {
    /// The SQLSTATE clients act on.
    pub code: SqlState,
    /// What went wrong and, where it helps, what to do about it.
    pub message: String,
    /// For syntax errors: 1-based character offset into the statement text (PostgreSQL's
    /// `position` field).
    pub position: Option<usize>,
}

impl SqlError {
    /// An error with `code` and `message` and no position.
    pub fn new(code: SqlState, message: impl Into<String>) -> SqlError {
        SqlError { code, message: message.into(), position: None }
    }

    /// A syntax error at a 1-based character position.
    pub fn syntax(message: impl Into<String>, position: Option<usize>) -> SqlError {
        SqlError { code: SqlState::SyntaxError, message: message.into(), position }
    }

    /// `Meridian does not support <feature>`, SQLSTATE `0A000`. (Phrased so that any feature
    /// reads right: "subqueries", "DEFAULT values", "type DATE (Meridian has …)".)
    pub fn unsupported(feature: impl fmt::Display) -> SqlError {
        SqlError::new(SqlState::FeatureNotSupported, format!("Meridian does not support {feature}"))
    }

    /// A bug: an invariant of the SQL layer did not hold. SQLSTATE `XX000`.
    pub fn internal(message: impl fmt::Display) -> SqlError {
        SqlError::new(SqlState::InternalError, format!("internal error: {message}"))
    }

    /// Whether running the whole transaction again may succeed (SQLSTATE `40001`).
    pub fn is_retryable(&self) -> bool {
        self.code == SqlState::SerializationFailure
    }

    /// Maps an error of the key-value layer to the SQLSTATE a client acts on.
    pub fn from_kv(err: KvError) -> SqlError {
        use SqlState::*;
        match err {
            KvError::Retryable(why) => SqlError::new(
                SerializationFailure,
                format!("restart transaction: {why}; the transaction was aborted, run it again"),
            ),
            KvError::Ambiguous(why) => SqlError::new(
                StatementCompletionUnknown,
                format!(
                    "the transaction's outcome is unknown ({why}); check whether its effects are present before \
                     running it again"
                ),
            ),
            KvError::ReadOnly => SqlError::new(ReadOnlySqlTransaction, "cannot write in a read-only transaction"),
            KvError::BelowGcHorizon(why) => {
                SqlError::new(SnapshotTooOld, format!("snapshot too old: {why}; read at a more recent time"))
            }
            KvError::TooLarge(why) => SqlError::new(
                ProgramLimitExceeded,
                format!("transaction too large: {why}; split the work into smaller transactions"),
            ),
            // Not 08006: the client's connection is fine; part of the database cannot serve.
            KvError::Unavailable(why) => {
                SqlError::new(CannotConnectNow, format!("the database cannot serve this now: {why}; try again later"))
            }
            KvError::Other(why) => SqlError::internal(format!("key-value store: {why}")),
        }
    }
}

impl From<KvError> for SqlError {
    fn from(err: KvError) -> SqlError {
        SqlError::from_kv(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_five_characters() {
        use SqlState::*;
        let all = [
            SyntaxError,
            UndefinedTable,
            UndefinedColumn,
            AmbiguousColumn,
            DuplicateTable,
            DuplicateColumn,
            InvalidTableDefinition,
            DatatypeMismatch,
            CannotCoerce,
            UndefinedFunction,
            GroupingError,
            InvalidColumnReference,
            UndefinedParameter,
            NameTooLong,
            FeatureNotSupported,
            UniqueViolation,
            NotNullViolation,
            CardinalityViolation,
            NumericValueOutOfRange,
            DivisionByZero,
            InvalidTextRepresentation,
            InvalidParameterValue,
            ProgramLimitExceeded,
            ActiveSqlTransaction,
            NoActiveSqlTransaction,
            InFailedSqlTransaction,
            ReadOnlySqlTransaction,
            SerializationFailure,
            StatementCompletionUnknown,
            SnapshotTooOld,
            ConnectionFailure,
            CannotConnectNow,
            ProtocolViolation,
            DataCorrupted,
            InternalError,
        ];
        for state in all {
            assert_eq!(state.code().len(), 5, "{state:?}");
            assert!(state.code().bytes().all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()));
        }
    }

    #[test]
    fn kv_errors_map_to_sqlstates() {
        assert_eq!(SqlError::from_kv(KvError::Retryable("x".into())).code, SqlState::SerializationFailure);
        assert!(SqlError::from_kv(KvError::Retryable("x".into())).is_retryable());
        assert_eq!(SqlError::from_kv(KvError::Ambiguous("x".into())).code, SqlState::StatementCompletionUnknown);
        assert_eq!(SqlError::from_kv(KvError::ReadOnly).code, SqlState::ReadOnlySqlTransaction);
        assert_eq!(SqlError::from_kv(KvError::BelowGcHorizon("x".into())).code, SqlState::SnapshotTooOld);
        assert_eq!(SqlError::from_kv(KvError::TooLarge("x".into())).code, SqlState::ProgramLimitExceeded);
        assert_eq!(SqlError::from_kv(KvError::Unavailable("x".into())).code, SqlState::CannotConnectNow);
        assert_eq!(SqlState::CannotConnectNow.code(), "57P03");
        assert_eq!(SqlError::from_kv(KvError::Other("x".into())).code, SqlState::InternalError);
    }

    #[test]
    fn a_snapshot_below_the_gc_horizon_says_what_to_do_once() {
        let err = SqlError::from_kv(KvError::BelowGcHorizon(
            "snapshot 5.000000000 is below the GC horizon 7.000000000".into(),
        ));
        assert_eq!(
            err.message,
            "snapshot too old: snapshot 5.000000000 is below the GC horizon 7.000000000; read at a more recent time"
        );
    }
}
