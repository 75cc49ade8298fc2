//! The crate's one error type. Each message says what the caller (and, through it, the user)
//! can do; [`Error::retryable`] tells the client API whether running the transaction body again
//! may succeed.

use crate::TxnId;

/// Errors of the transaction cores.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The transaction would hold more locks than [`crate::locks::LOCKS_PER_TXN_MAX`] (or the
    /// configured limit).
    #[error("transaction too large: {txn} would hold more than {max} locks; split it into smaller transactions")]
    TooLarge {
        /// The transaction.
        txn: TxnId,
        /// The limit.
        max: usize,
    },
    /// The lock table's wait queue is full ([`crate::locks::WAITERS_MAX`]).
    #[error("too many waiters: {max} lock requests already wait at this leader; retry later")]
    TooManyWaiters {
        /// The limit.
        max: usize,
    },
    /// The lock table tracks as many transactions as it may ([`crate::locks::TXNS_MAX`]).
    #[error("too many transactions: {max} transactions already hold locks at this leader; retry later")]
    TooManyTxns {
        /// The limit.
        max: usize,
    },
    /// An older transaction wounded this one (Spanner §4.2.1 wound-wait); it must abort.
    #[error("transaction {txn} was wounded by an older transaction; abort and retry it")]
    Wounded {
        /// The wounded transaction.
        txn: TxnId,
    },
    /// The transaction has prepared: it takes no new locks (two-phase locking, §4.2.1).
    #[error("transaction {txn} has prepared; it takes no new locks")]
    Prepared {
        /// The prepared transaction.
        txn: TxnId,
    },
    /// The transaction asked to prepare while some of its lock requests still wait.
    #[error("transaction {txn} still waits for locks; it cannot prepare until they are granted")]
    StillWaiting {
        /// The transaction.
        txn: TxnId,
    },
    /// The lock table does not know the transaction: its locks were released (it aborted, timed
    /// out, or the leader changed before it prepared).
    #[error("transaction {txn} holds no locks at this leader (aborted, timed out, or the leader changed); retry it")]
    Unknown {
        /// The transaction.
        txn: TxnId,
    },
    /// A key range whose bounded end is not above its start.
    #[error("empty key range [{start}, {end}): the end must be above the start (or empty for unbounded)")]
    EmptyRange {
        /// Printable start key.
        start: String,
        /// Printable end key.
        end: String,
    },
}

impl Error {
    /// Whether running the whole transaction again (with its original start timestamp) may
    /// succeed. The client API retries the body; it never replays writes (DESIGN §6.4).
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            Error::Wounded { .. } | Error::Unknown { .. } | Error::TooManyWaiters { .. } | Error::TooManyTxns { .. }
        )
    }
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
