//! The one error type of the storage crate.

use meridian_truetime::Timestamp;

/// Storage errors. Each says what went wrong in terms the caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bytes on disk (or in the engine) do not decode: a bit flip, a truncated record, a foreign
    /// file. `what` names the record (column family and key), `detail` what is wrong with it.
    #[error("corrupt {what}: {detail}")]
    Corrupt {
        /// Which record: e.g. `data key "acct/7" @ 1732450000.000000001`.
        what: String,
        /// What is wrong: e.g. `checksum mismatch (stored 0x1234abcd, computed 0x9876fedc)`.
        detail: String,
    },
    /// A key over [`crate::KEY_SIZE_MAX`].
    #[error("key is {len} bytes; the limit is {max} bytes")]
    KeyTooLarge {
        /// Size of the refused key.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A value over [`crate::VALUE_SIZE_MAX`] (or a log record over [`crate::LOG_RECORD_SIZE_MAX`]).
    #[error("{what} is {len} bytes; the limit is {max} bytes")]
    ValueTooLarge {
        /// `value` or `log record`.
        what: &'static str,
        /// Size of the refused value.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A read below the version-GC horizon: the versions it would need are gone.
    #[error(
        "cannot read at {ts}: versions older than the GC horizon {horizon} were garbage-collected; read at a later timestamp"
    )]
    BelowGcHorizon {
        /// The requested read timestamp.
        ts: Timestamp,
        /// Versions at or below this timestamp may have been removed.
        horizon: Timestamp,
    },
    /// A filesystem operation failed.
    #[error("I/O error while {op}: {source}")]
    Io {
        /// What we were doing, e.g. `opening data directory /var/lib/meridian`.
        op: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The storage engine (RocksDB) reported an error that is not corruption.
    #[error("storage engine error while {op}: {detail}")]
    Engine {
        /// What we were doing.
        op: String,
        /// The engine's message.
        detail: String,
    },
}

/// Result with the storage [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A [`Error::Corrupt`] for the record `what`.
    pub fn corrupt(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Corrupt { what: what.into(), detail: detail.into() }
    }
}
