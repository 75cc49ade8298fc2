//! Tuning and timing of a replica, with the relations between them checked.

use std::time::Duration;

/// Default leader lease (Spanner §4.1.1: "leases … are 10 seconds by default").
pub const LEASE_DEFAULT: Duration = Duration::from_secs(10);

/// Test-only switches that break the protocol on purpose, so the checkers can be shown to catch
/// each breakage. Never set outside tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnsafeSwitches {
    /// Send promises and acceptances before the writes behind them are durable.
    pub ack_before_persist: bool,
    /// Grant lease votes without the single-vote rule (two leaders can hold leases at once).
    pub double_lease_vote: bool,
    /// Serve reads from any replica's state machine, lease or not (stale reads).
    pub stale_reads: bool,
    /// Accept values at any ballot, ignoring promises (two values can be chosen for a slot).
    pub ignore_promises: bool,
    /// Never resend lost entries (followers that miss a message never catch up).
    pub no_retransmit: bool,
}

impl UnsafeSwitches {
    /// Whether any switch is on.
    pub fn any(&self) -> bool {
        self.ack_before_persist
            || self.double_lease_vote
            || self.stale_reads
            || self.ignore_promises
            || self.no_retransmit
    }
}

/// Replica options. [`Options::validate`] checks the relations between the durations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Length of a lease vote.
    pub lease: Duration,
    /// A leader sends each peer something at least this often (heartbeat, lease renewal).
    pub heartbeat: Duration,
    /// A follower that hears nothing from a leader for a random time in
    /// `[election_timeout_min, election_timeout_max)` campaigns.
    pub election_timeout_min: Duration,
    /// See `election_timeout_min`.
    pub election_timeout_max: Duration,
    /// Unacknowledged entries are sent again after this.
    pub retransmit: Duration,
    /// Most entries in one Accept message.
    pub batch_entries_max: usize,
    /// Most bytes of commands in one Accept message (at least one entry is always sent).
    pub batch_bytes_max: usize,
    /// Most bytes of entries in one Promise message; the rest follows on request.
    pub promise_bytes_max: usize,
    /// Most slots a leader has assigned but not yet seen chosen (pipelining depth).
    pub window_slots: u64,
    /// Most proposals a leader queues while it cannot assign slots (no lease yet, window full).
    pub pending_max: usize,
    /// Compact the log once this many applied slots are in it…
    pub compact_threshold: u64,
    /// …keeping this many recent slots for followers that are only a little behind.
    pub compact_keep: u64,
    /// Test-only protocol breakage.
    pub unsafe_switches: UnsafeSwitches,
}

impl Default for Options {
    fn default() -> Self {
        Options::with_lease(LEASE_DEFAULT)
    }
}

impl Options {
    /// Options with every timer derived from the lease length: heartbeats every lease/5, elections
    /// after lease/2 to 4·lease/5 of silence.
    pub fn with_lease(lease: Duration) -> Self {
        Options {
            lease,
            heartbeat: lease / 5,
            election_timeout_min: lease / 2,
            election_timeout_max: lease * 4 / 5,
            retransmit: lease / 10,
            batch_entries_max: 512,
            batch_bytes_max: 4 << 20,
            promise_bytes_max: 4 << 20,
            window_slots: 1024,
            pending_max: 10_000,
            compact_threshold: 10_000,
            compact_keep: 1_000,
            unsafe_switches: UnsafeSwitches::default(),
        }
    }

    /// Checks the relations the protocol depends on; the error says which one fails.
    pub fn validate(&self) -> Result<(), String> {
        let rules: [(bool, &str); 7] = [
            (self.heartbeat > Duration::ZERO, "heartbeat must be positive"),
            (
                self.heartbeat * 2 <= self.lease,
                "the lease must span at least two heartbeats, or it lapses between renewals",
            ),
            (self.heartbeat < self.election_timeout_min, "heartbeats must come faster than the election timeout"),
            (
                self.election_timeout_min < self.election_timeout_max,
                "election_timeout_min must be below election_timeout_max",
            ),
            (self.batch_entries_max > 0 && self.window_slots > 0, "batches and the window need room for an entry"),
            (self.compact_keep < self.compact_threshold, "compact_keep must be below compact_threshold"),
            (self.retransmit > Duration::ZERO, "retransmit must be positive"),
        ];
        match rules.iter().find(|(ok, _)| !ok) {
            Some((_, why)) => Err(format!("invalid Paxos options: {why} ({self:?})")),
            None => Ok(()),
        }
    }
}
