//! # Two-phase commit: records, coordinator and participants
//!
//! A read-write transaction that wrote to several groups commits by two-phase commit across
//! their Paxos groups (Spanner §4.2.1). The client picks one group as **coordinator** and sends
//! the commit to every group; every other group is a **participant**:
//!
//! ```text
//!   participant leader                         coordinator leader
//!   ──────────────────                         ──────────────────
//!   take write locks, mark_prepared            take write locks, mark_prepared
//!   p = assign_prepare(..)                     (skips prepare: its vote is its own locks)
//!   log Prepared{p, writes, locks}  ─────┐
//!   send "prepared p" ──────────────────►│──►  on_prepared(g, p) … until every group voted
//!                                        │     s = assign_commit(now at commit request, [p..])
//!                                        │     log Committed{s, participants, own writes}
//!                                        │     commit wait: TT.after(s), then reply to client
//!   log Committed{s} / Aborted  ◄────────┘──── tell participants the outcome
//!   apply writes at s, release locks
//! ```
//!
//! Everything that must survive a leader change goes through the group's Paxos log as a
//! [`TxnRecord`]; the state machines here are what a leader (or, after a change, the next
//! leader, from the applied records) derives from them:
//!
//! - [`Coordinator`], one per transaction at the coordinator leader: collects votes; commits once
//!   every participant voted prepared, aborts on any refusal or when the prepare timeout passes.
//!   A decision, once made, never changes (asserted): the leader logs exactly the first one.
//!   An abort may be decided any time before a commit is decided, even after every vote is in.
//! - [`Participant`] per transaction at a participant: `Active → Prepared(p) → Committed(s) |
//!   Aborted`, or `Active → Aborted`. After preparing, a participant can no longer abort on its
//!   own: it is **in doubt** until it learns the outcome. [`Participants`] tracks them and names
//!   the ones that heard nothing from their coordinator for `in_doubt_after`; the leader asks the
//!   coordinator group ([`Participants::due_inquiries`]).
//!
//! The coordinator group answers an inquiry from its applied records: `Committed` → commit at
//! `s`; a live undecided [`Coordinator`] → ask again later; neither (the coordinator leader
//! changed before it logged a decision) → it logs `Aborted` and answers abort ("presumed
//! abort"). That is safe because a commit is decided only by a leader holding the group's lease
//! and takes effect only once logged; a new leader has applied every entry of the old one.
//!
//! Clients retry an aborted transaction under a **new** id (keeping the start timestamp for
//! priority), so late messages of an old attempt cannot reach a new attempt's state.

use std::collections::BTreeMap;
use std::time::Duration;

use meridian_shard::GroupId;
use meridian_truetime::{TTInterval, Timestamp};

use crate::locks::Mode;
use crate::timestamps::{LeaderClock, lease_allows};
use crate::{Span, TxnId, TxnMeta};

/// How long a coordinator waits for every participant's vote before it aborts.
pub const PREPARE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a prepared participant waits to hear from its coordinator before it asks.
pub const IN_DOUBT_AFTER: Duration = Duration::from_secs(2);
/// Most inquiries [`Participants::due_inquiries`] returns at once; the rest come next time.
pub const INQUIRIES_MAX: usize = 256;

/// One buffered write: key, and the new value or `None` to delete.
pub type Write = (Vec<u8>, Option<Vec<u8>>);

/// A transaction record logged through a group's Paxos log.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TxnRecord {
    /// A participant prepared (§4.2.1 "logs a prepare record through Paxos").
    Prepared {
        /// The transaction (its start is needed to restore its locks on a new leader).
        txn: TxnMeta,
        /// Where to ask for the outcome.
        coordinator: GroupId,
        /// The prepare timestamp; the commit timestamp will be at least this.
        prepare_ts: Timestamp,
        /// The writes to apply at the commit timestamp if the transaction commits.
        writes: Vec<Write>,
        /// Every lock the transaction holds here, restored by a new leader.
        lock_spans: Vec<(Span, Mode)>,
    },
    /// The transaction committed at `commit_ts`. At the coordinator: the decision, with the
    /// participants to tell and the coordinator group's own writes; at a participant: the
    /// outcome (writes come from its prepare record; `participants` and `writes` empty). A
    /// single-group transaction logs only this record, with its writes and no participants.
    Committed {
        /// The transaction.
        txn: TxnId,
        /// Its commit timestamp.
        commit_ts: Timestamp,
        /// The other groups (coordinator record only).
        participants: Vec<GroupId>,
        /// This group's writes not already in a prepare record.
        writes: Vec<Write>,
    },
    /// The transaction aborted; a participant discards its prepared writes.
    Aborted {
        /// The transaction.
        txn: TxnId,
    },
}

impl TxnRecord {
    /// The transaction the record is about.
    pub fn txn(&self) -> TxnId {
        match self {
            TxnRecord::Prepared { txn, .. } => txn.id,
            TxnRecord::Committed { txn, .. } | TxnRecord::Aborted { txn } => *txn,
        }
    }

    /// The spans a prepare record may write (its write keys), for
    /// [`SafeTime::prepare`](crate::safetime::SafeTime::prepare). Empty for other records.
    pub fn write_spans(&self) -> Vec<Span> {
        match self {
            TxnRecord::Prepared { writes, .. } => writes.iter().map(|(k, _)| Span::Key(k.clone())).collect(),
            _ => Vec::new(),
        }
    }
}

/// A coordinator's (or participant's) knowledge of the outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Commit at this timestamp.
    Commit(Timestamp),
    /// Abort.
    Abort,
}

/// Two-phase-commit state of one transaction at its coordinator leader.
#[derive(Clone, Debug)]
pub struct Coordinator {
    txn: TxnId,
    now_at_commit_request: TTInterval,
    deadline: Timestamp,
    /// Per participant: its prepare timestamp once it voted.
    votes: BTreeMap<GroupId, Option<Timestamp>>,
    decision: Option<Decision>,
}

impl Coordinator {
    /// Starts coordinating `txn` over `participants` (the groups other than the coordinator's)
    /// when the client's commit request arrived at `now_at_commit_request` (`TT.now()` then).
    /// Votes are awaited until `now_at_commit_request.latest + prepare_timeout`.
    ///
    /// # Panics
    /// If `participants` is empty: a transaction of one group commits without two-phase commit
    /// ([`LeaderClock::assign_write`]).
    pub fn new(
        txn: TxnId,
        participants: impl IntoIterator<Item = GroupId>,
        now_at_commit_request: TTInterval,
        prepare_timeout: Duration,
    ) -> Self {
        let votes: BTreeMap<GroupId, Option<Timestamp>> = participants.into_iter().map(|g| (g, None)).collect();
        assert!(!votes.is_empty(), "two-phase commit of {txn} needs at least one participant besides the coordinator");
        Coordinator {
            txn,
            now_at_commit_request,
            deadline: now_at_commit_request.latest.saturating_add(prepare_timeout),
            votes,
            decision: None,
        }
    }

    /// `group` logged its prepare record at `prepare_ts`. Returns the decision if this vote
    /// completes them: commit at `clock.assign_commit(..)` (§4.2.1), or abort if that timestamp
    /// is not inside this leader's lease ending at `lease_end` (§4.1.2). Votes of unknown groups
    /// and votes after a decision are ignored.
    ///
    /// # Panics
    /// If `group` votes twice with different timestamps (a prepare record is logged once).
    pub fn on_prepared(
        &mut self,
        group: GroupId,
        prepare_ts: Timestamp,
        clock: &mut LeaderClock,
        lease_end: Timestamp,
    ) -> Option<Decision> {
        let vote = self.votes.get_mut(&group)?;
        if let Some(earlier) = *vote {
            assert_eq!(earlier, prepare_ts, "{group} voted twice for {} with different prepare timestamps", self.txn);
            return None;
        }
        *vote = Some(prepare_ts);
        if self.decision.is_some() || self.votes.values().any(Option::is_none) {
            return None;
        }
        let prepares: Vec<Timestamp> = self.votes.values().map(|v| v.expect("every vote is in")).collect();
        let s = clock.assign_commit(self.now_at_commit_request, &prepares);
        self.decide(if lease_allows(s, lease_end) { Decision::Commit(s) } else { Decision::Abort })
    }

    /// `group` refused to prepare (wounded, timed out, lost its locks): abort (§4.2.1).
    ///
    /// # Panics
    /// If the transaction was already decided to commit: every participant voted prepared, and
    /// a prepared participant cannot refuse.
    pub fn on_refused(&mut self, group: GroupId) -> Option<Decision> {
        if !self.votes.contains_key(&group) {
            return None;
        }
        assert!(
            self.votes[&group].is_none(),
            "{group} refused {} after voting prepared: a prepared participant cannot refuse",
            self.txn
        );
        self.decide(Decision::Abort)
    }

    /// Timer: aborts if some vote is still missing at `now` (`TT.now().latest`) past the
    /// prepare timeout.
    pub fn on_tick(&mut self, now: Timestamp) -> Option<Decision> {
        if self.decision.is_none() && now >= self.deadline { self.decide(Decision::Abort) } else { None }
    }

    /// Aborts unless already decided (client rollback, the coordinator's own locks lost);
    /// returns the decision that stands.
    pub fn abort(&mut self) -> Decision {
        if self.decision.is_none() {
            self.decide(Decision::Abort);
        }
        self.decision.expect("decided just now or before")
    }

    /// The decision, once made.
    pub fn decision(&self) -> Option<Decision> {
        self.decision
    }

    /// The transaction.
    pub fn txn(&self) -> TxnId {
        self.txn
    }

    /// Every participant, in id order (whom to tell the outcome).
    pub fn participants(&self) -> Vec<GroupId> {
        self.votes.keys().copied().collect()
    }

    /// Participants that have not voted yet, in id order.
    pub fn missing_votes(&self) -> Vec<GroupId> {
        self.votes.iter().filter(|(_, v)| v.is_none()).map(|(g, _)| *g).collect()
    }

    /// The record to log for the decision (with the coordinator group's own writes), if decided.
    pub fn record(&self, own_writes: Vec<Write>) -> Option<TxnRecord> {
        Some(match self.decision? {
            Decision::Commit(commit_ts) => {
                TxnRecord::Committed { txn: self.txn, commit_ts, participants: self.participants(), writes: own_writes }
            }
            Decision::Abort => TxnRecord::Aborted { txn: self.txn },
        })
    }

    /// Records `d` if undecided and returns it; a repeated decision is ignored, a different one
    /// is a bug.
    fn decide(&mut self, d: Decision) -> Option<Decision> {
        match self.decision {
            None => {
                self.decision = Some(d);
                Some(d)
            }
            Some(Decision::Abort) if d == Decision::Abort => None,
            Some(prev) => panic!("a decided outcome never flips: {} decided {prev:?}, now {d:?}", self.txn),
        }
    }
}

/// Where a participant stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParticipantState {
    /// Holding locks, not prepared: may still abort on its own (wound, keepalive timeout).
    Active,
    /// Prepared at this timestamp: in doubt until the outcome arrives.
    Prepared(Timestamp),
    /// Committed at this timestamp (≥ the prepare timestamp).
    Committed(Timestamp),
    /// Aborted.
    Aborted,
}

/// Two-phase-commit state of one transaction at one participant group.
#[derive(Clone, Debug)]
pub struct Participant {
    txn: TxnId,
    coordinator: GroupId,
    state: ParticipantState,
    last_heard: Timestamp,
}

impl Participant {
    /// An active participant of `txn` coordinated by `coordinator`, last heard of at `now`.
    pub fn new(txn: TxnId, coordinator: GroupId, now: Timestamp) -> Self {
        Participant { txn, coordinator, state: ParticipantState::Active, last_heard: now }
    }

    /// The transaction.
    pub fn txn(&self) -> TxnId {
        self.txn
    }

    /// Its coordinator group.
    pub fn coordinator(&self) -> GroupId {
        self.coordinator
    }

    /// The current state.
    pub fn state(&self) -> ParticipantState {
        self.state
    }

    /// The prepare record at `prepare_ts` was applied. Idempotent.
    ///
    /// # Panics
    /// From any state but `Active` or the same `Prepared`.
    pub fn prepare(&mut self, prepare_ts: Timestamp, now: Timestamp) {
        match self.state {
            ParticipantState::Active => self.state = ParticipantState::Prepared(prepare_ts),
            ParticipantState::Prepared(p) if p == prepare_ts => {}
            s => panic!("participant of {} cannot prepare at {prepare_ts:?} in state {s:?}", self.txn),
        }
        self.heard(now);
    }

    /// The commit outcome at `commit_ts` was applied. Idempotent.
    ///
    /// # Panics
    /// Unless prepared at or below `commit_ts` (§4.2.1: the commit timestamp is at least every
    /// prepare timestamp) or already committed at `commit_ts`: commit without prepare, a commit
    /// after an abort, or two commit timestamps are bugs.
    pub fn commit(&mut self, commit_ts: Timestamp) {
        match self.state {
            ParticipantState::Prepared(p) => {
                assert!(commit_ts >= p, "{} commits at {commit_ts:?} below its prepare timestamp {p:?}", self.txn);
                self.state = ParticipantState::Committed(commit_ts);
            }
            ParticipantState::Committed(s) if s == commit_ts => {}
            s => panic!("participant of {} cannot commit at {commit_ts:?} in state {s:?}", self.txn),
        }
    }

    /// The abort outcome was applied (or, while active, the leader aborted it). Idempotent.
    ///
    /// # Panics
    /// If already committed: a decided outcome never flips.
    pub fn abort(&mut self) {
        match self.state {
            ParticipantState::Active | ParticipantState::Prepared(_) | ParticipantState::Aborted => {
                self.state = ParticipantState::Aborted;
            }
            s => panic!("participant of {} cannot abort in state {s:?}: a decided outcome never flips", self.txn),
        }
    }

    /// The coordinator (or the client, for an active transaction) was heard from at `now`.
    pub fn heard(&mut self, now: Timestamp) {
        self.last_heard = self.last_heard.max(now);
    }

    /// Whether, at `now`, this participant is prepared and has heard nothing for longer than
    /// `in_doubt_after`, so it should ask its coordinator for the outcome.
    pub fn inquiry_due(&self, now: Timestamp, in_doubt_after: Duration) -> bool {
        matches!(self.state, ParticipantState::Prepared(_)) && now.duration_since(self.last_heard) >= in_doubt_after
    }
}

/// The participants of one group replica, fed from applied records; a leader drives inquiries.
#[derive(Clone, Debug)]
pub struct Participants {
    in_doubt_after: Duration,
    txns: BTreeMap<TxnId, Participant>,
}

impl Default for Participants {
    fn default() -> Self {
        Participants::new(IN_DOUBT_AFTER)
    }
}

impl Participants {
    /// An empty table asking after `in_doubt_after` of silence.
    pub fn new(in_doubt_after: Duration) -> Self {
        Participants { in_doubt_after, txns: BTreeMap::new() }
    }

    /// A prepare record of `txn` was applied (registers it if this replica had not seen it
    /// active, e.g. on a follower or during log replay).
    pub fn on_prepared(&mut self, txn: TxnId, coordinator: GroupId, prepare_ts: Timestamp, now: Timestamp) {
        let p = self.txns.entry(txn).or_insert_with(|| Participant::new(txn, coordinator, now));
        assert_eq!(p.coordinator, coordinator, "{txn} has one coordinator");
        p.prepare(prepare_ts, now);
    }

    /// The commit outcome of `txn` at `commit_ts` was applied: checks the transition and forgets
    /// the transaction. An outcome for an unknown transaction (replayed) changes nothing.
    pub fn on_committed(&mut self, txn: TxnId, commit_ts: Timestamp) -> Option<Participant> {
        let mut p = self.txns.remove(&txn)?;
        p.commit(commit_ts);
        Some(p)
    }

    /// The abort outcome of `txn` was applied: checks the transition and forgets it.
    pub fn on_aborted(&mut self, txn: TxnId) -> Option<Participant> {
        let mut p = self.txns.remove(&txn)?;
        p.abort();
        Some(p)
    }

    /// The coordinator answered "still undecided" for `txn` at `now`: wait another period.
    pub fn heard(&mut self, txn: TxnId, now: Timestamp) {
        if let Some(p) = self.txns.get_mut(&txn) {
            p.heard(now);
        }
    }

    /// The participant of `txn`, if tracked.
    pub fn get(&self, txn: TxnId) -> Option<&Participant> {
        self.txns.get(&txn)
    }

    /// Every tracked participant, in transaction id order.
    pub fn iter(&self) -> impl Iterator<Item = &Participant> {
        self.txns.values()
    }

    /// Prepared participants that heard nothing for `in_doubt_after` at `now`, as (transaction,
    /// coordinator group) to ask — longest silent first, at most [`INQUIRIES_MAX`]. Each one
    /// returned counts as heard now, so it is asked again only after another silent period.
    pub fn due_inquiries(&mut self, now: Timestamp) -> Vec<(TxnId, GroupId)> {
        let mut due: Vec<(Timestamp, TxnId)> = self
            .txns
            .values()
            .filter(|p| p.inquiry_due(now, self.in_doubt_after))
            .map(|p| (p.last_heard, p.txn))
            .collect();
        due.sort();
        due.truncate(INQUIRIES_MAX);
        due.into_iter()
            .map(|(_, txn)| {
                let p = self.txns.get_mut(&txn).expect("due participant is tracked");
                p.heard(now);
                (txn, p.coordinator)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
