//! What the node core reports to operators: counters and histograms through the `metrics`
//! facade.
//!
//! The core stays deterministic: it only *emits* measurements, computed from the `now` it was
//! given (never from a clock it reads), and nothing it decides depends on them. Without a
//! recorder (the simulation, unit tests) every call is a no-op; the shell installs the
//! Prometheus recorder and serves it on `/metrics` (`crate::shell`'s HTTP module), adding
//! the gauges it reads at scrape time (ranges led, leases held, RocksDB properties) and the
//! transaction latency, which only a real clock can time ([`latency`]): the core's `now` moves
//! between steps, so a read answered within one step would take no time at all (issue 17:
//! the `read_only` histogram summed to 0 over 31 reads).

use std::time::Duration;

use meridian_truetime::{TTInterval, Timestamp};

use super::api::{CommitRole, Request};
use super::local_of;

/// Commands this node proposed as a leader (counter).
pub const PAXOS_PROPOSALS: &str = "meridian_paxos_proposals_total";
/// Log entries this node's replicas applied (counter).
pub const PAXOS_APPLIED: &str = "meridian_paxos_applied_entries_total";
/// Time a commit's answer was held until `TT.after(s)` (histogram, seconds).
pub const COMMIT_WAIT: &str = "meridian_commit_wait_seconds";
/// Lock requests that had to wait for another transaction (counter).
pub const LOCK_WAITS: &str = "meridian_txn_lock_waits_total";
/// Transactions aborted at one of this node's range leaders, by reason (counter).
pub const TXN_ABORTS: &str = "meridian_txn_aborts_total";
/// Time from a request's arrival at the serving node to its successful answer, by kind
/// (histogram, seconds). Measured by the shell ([`latency`]): a read served within one step of
/// the core takes no time by the core's clock, which only moves between steps.
pub const TXN_LATENCY: &str = "meridian_txn_latency_seconds";

/// Why a transaction aborted at a range leader: a label with a fixed set of values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbortReason {
    /// An older transaction wanted its lock (wound-wait, Spanner §4.2.1).
    Wounded,
    /// Its client asked (rollback, or giving up).
    Client,
    /// It sent nothing for too long.
    Idle,
    /// A read lock it relied on is gone (wounded, expired, or taken under another leader).
    LockLost,
    /// The range's leader changed and its locks went with the old one.
    LeaderChange,
    /// Its coordinator decided to abort it (two-phase commit).
    Coordinator,
    /// The lock table refused a request (limits, invalid spans).
    Refused,
    /// Its range split, merged or moved between its prepare and the prepare's apply.
    RangeChanged,
    /// A request of it waited for a lock past the caller's deadline (or its caller went away).
    Deadline,
}

impl AbortReason {
    /// Every reason, for registering the series up front.
    pub const ALL: [AbortReason; 9] = [
        AbortReason::Wounded,
        AbortReason::Client,
        AbortReason::Idle,
        AbortReason::LockLost,
        AbortReason::LeaderChange,
        AbortReason::Coordinator,
        AbortReason::Refused,
        AbortReason::RangeChanged,
        AbortReason::Deadline,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            AbortReason::Wounded => "wounded",
            AbortReason::Client => "client",
            AbortReason::Idle => "idle",
            AbortReason::LockLost => "lock_lost",
            AbortReason::LeaderChange => "leader_change",
            AbortReason::Coordinator => "coordinator",
            AbortReason::Refused => "refused",
            AbortReason::RangeChanged => "range_changed",
            AbortReason::Deadline => "deadline",
        }
    }
}

/// The kind of a timed request: the `kind` label of [`TXN_LATENCY`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnKind {
    /// A commit in one range (or a plain write): one Paxos write and commit wait.
    OnePc,
    /// A coordinator's commit over several ranges (after the participants prepared).
    TwoPc,
    /// A lock-free read at a timestamp (read-only transactions, snapshot reads).
    ReadOnly,
}

impl TxnKind {
    /// Every kind, for registering the series up front.
    pub const ALL: [TxnKind; 3] = [TxnKind::OnePc, TxnKind::TwoPc, TxnKind::ReadOnly];

    /// The kind of `request`, if its latency is measured.
    pub fn of(request: &Request) -> Option<TxnKind> {
        match request {
            Request::Write { .. } | Request::TxnCommit { role: CommitRole::Single, .. } => Some(TxnKind::OnePc),
            Request::TxnCommit { role: CommitRole::Coordinate { .. }, .. } => Some(TxnKind::TwoPc),
            Request::Read { .. } => Some(TxnKind::ReadOnly),
            _ => None,
        }
    }

    /// The `kind` label.
    pub fn label(self) -> &'static str {
        match self {
            TxnKind::OnePc => "1pc",
            TxnKind::TwoPc => "2pc",
            TxnKind::ReadOnly => "read_only",
        }
    }
}

/// Registers every series with zero, so `/metrics` lists them before the first event (and
/// dashboards see a zero rather than a gap). Called by the shell after installing a recorder.
pub fn register_all() {
    metrics::describe_counter!(PAXOS_PROPOSALS, "Commands this node proposed as a range leader");
    metrics::describe_counter!(PAXOS_APPLIED, "Paxos log entries applied by this node's replicas");
    metrics::describe_histogram!(COMMIT_WAIT, metrics::Unit::Seconds, "Commit wait: answer held until TT.after(s)");
    metrics::describe_counter!(LOCK_WAITS, "Lock requests that waited for another transaction");
    metrics::describe_counter!(TXN_ABORTS, "Transactions aborted at this node's range leaders, by reason");
    metrics::describe_histogram!(
        TXN_LATENCY,
        metrics::Unit::Seconds,
        "Arrival at the serving leader to successful answer, by kind (1pc, 2pc, read_only)"
    );
    metrics::counter!(PAXOS_PROPOSALS).increment(0);
    metrics::counter!(PAXOS_APPLIED).increment(0);
    metrics::counter!(LOCK_WAITS).increment(0);
    let _ = metrics::histogram!(COMMIT_WAIT);
    for r in AbortReason::ALL {
        metrics::counter!(TXN_ABORTS, "reason" => r.label()).increment(0);
    }
    for k in TxnKind::ALL {
        let _ = metrics::histogram!(TXN_LATENCY, "kind" => k.label());
    }
}

/// A leader proposed a command.
pub(super) fn proposed() {
    metrics::counter!(PAXOS_PROPOSALS).increment(1);
}

/// A replica applied `entries` log entries.
pub(super) fn applied(entries: usize) {
    metrics::counter!(PAXOS_APPLIED).increment(entries as u64);
}

/// A lock request queued behind another transaction.
pub(super) fn lock_waited() {
    metrics::counter!(LOCK_WAITS).increment(1);
}

/// A range leader aborted a transaction.
pub(super) fn aborted(reason: AbortReason) {
    metrics::counter!(TXN_ABORTS, "reason" => reason.label()).increment(1);
}

/// A request of `kind` was answered successfully `elapsed` after it arrived (the shell times
/// it on a monotonic clock).
pub fn latency(kind: TxnKind, elapsed: Duration) {
    metrics::histogram!(TXN_LATENCY, "kind" => kind.label()).record(elapsed.as_secs_f64());
}

/// An answer held for commit wait since `held` (local time) leaves at `now`.
pub(super) fn commit_waited(now: TTInterval, held: Timestamp) {
    metrics::histogram!(COMMIT_WAIT).record(local_of(now).duration_since(held).as_secs_f64());
}
