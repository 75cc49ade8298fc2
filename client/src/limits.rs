//! The client's limits: the cluster-wide ones of [`meridian_proto::limits`] (checked here before
//! a request is sent, so the error comes early and names the limit), plus the client's own.
//!
//! | limit | value | when exceeded |
//! |---|---|---|
//! | key size | [`KEY_SIZE_MAX`] | `Invalid("key is N bytes; the limit is …")` |
//! | value size | [`VALUE_SIZE_MAX`] | `Invalid("value of key … is N bytes; the limit is …")` |
//! | writes per transaction | [`TXN_WRITES_MAX`] | `Invalid("a transaction writes at most … keys")` |
//! | bytes per transaction | [`TXN_BYTES_MAX`] | `Invalid("a transaction writes at most … bytes")` |
//! | read-write transactions in flight per `Client` | [`TXNS_IN_FLIGHT_MAX`] | waits up to the deadline, then `Unavailable` |
//! | request deadline (retries included) | [`crate::DEADLINE_DEFAULT`], [`Client::with_deadline`] | `Unavailable("gave up after … (the request's deadline) and N attempts; last: …")` |
//! | one attempt of a request | [`ATTEMPT_TIMEOUT`] | retried until the deadline; a commit becomes `Ambiguous` |
//! | what the node is told (per attempt) | `grpc-timeout` = [`attempt_timeout`]`(time left)` = min(time left, [`ATTEMPT_TIMEOUT`]) | the node gives up a tenth earlier (at most 100 ms) and says what it waited for: a read gets `DEADLINE_EXCEEDED` ("waited 270ms for a shared lock on key … held by transaction …"; the lock wait aborts the transaction in that range, Spanner §4.2.1) and is retried while time is left; a commit still waiting for its locks is `Aborted`; one already in Paxos or commit wait is `Ambiguous` |
//! | gRPC message | [`GRPC_MESSAGE_MAX`] | the transport refuses the message |
//!
//! Transactions in flight are bounded so that one process cannot pile up unbounded buffered
//! writes and locks: [`Client::read_write`] waits for a slot (for at most the client's
//! deadline) instead of failing at once, since a burst usually drains within milliseconds.
//! Transactions driven by hand ([`Client::begin`], SQL sessions) are bounded by their sessions
//! instead.

use std::time::Duration;

use crate::Client;

pub use meridian_proto::limits::{
    GRPC_MESSAGE_MAX, KEY_SIZE_MAX, TXN_BYTES_MAX, TXN_WRITES_MAX, VALUE_SIZE_MAX, check_writes,
};

/// Default bound on read-write transactions in flight on one [`Client`].
pub const TXNS_IN_FLIGHT_MAX: usize = 1_024;
/// Longest one attempt of a request may take before the client gives up on that node.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(12);

/// How long the client waits for one attempt of a request with `left` before its deadline,
/// sent to the node as gRPC's `grpc-timeout` header: the node stops working on the request
/// (and says what it waited for) when the client stops waiting, instead of at its own limit.
pub fn attempt_timeout(left: Duration) -> Duration {
    left.min(ATTEMPT_TIMEOUT)
}

const _: () = assert!(KEY_SIZE_MAX == meridian_shard::range::KEY_SIZE_MAX, "one key limit everywhere");

/// The permits for read-write transactions in flight.
pub(crate) struct TxnSlots {
    pub(crate) sem: tokio::sync::Semaphore,
    pub(crate) max: usize,
}

impl TxnSlots {
    pub(crate) fn new(max: usize) -> TxnSlots {
        assert!(max > 0, "at least one transaction must be allowed in flight");
        TxnSlots { sem: tokio::sync::Semaphore::new(max), max }
    }
}

impl Client {
    /// The same client with at most `max` read-write transactions in flight (default
    /// [`TXNS_IN_FLIGHT_MAX`]); more wait for a slot, for at most the deadline.
    pub fn with_txns_in_flight_max(mut self, max: usize) -> Self {
        self.txn_slots = TxnSlots::new(max.max(1));
        self
    }
}
