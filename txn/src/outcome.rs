//! # Two-phase commit: participants in doubt
//!
//! A read-write transaction that wrote to several groups commits by two-phase commit across
//! their Paxos groups (Spanner §4.2.1). The node runs the protocol (`server::node::twopc`):
//!
//! ```text
//!   client                 participant leaders                 coordinator leader
//!   prepare ─────────────► X locks, p > every ts assigned,
//!                          log Prepare{p, writes, locks} ─► p ─► client
//!   commit(max p) ────────────────────────────────────────────► s ≥ max p, > TT.now().latest
//!                                                               log Decide{s} (first wins)
//!   ◄──────────────────────────────── s after TT.after(s) (commit wait)
//!                          log Resolve{s}, apply at s ◄──────── s after TT.after(s)
//! ```
//!
//! Everything that must survive a leader change is in a group's Paxos log (the prepare record,
//! the decision). What this module holds is the participant's side of recovery:
//! [`Participant`] per transaction, `Active → Prepared(p) → Committed(s) | Aborted`, or
//! `Active → Aborted`. After preparing, a participant can no longer abort on its own: it is
//! **in doubt** until it learns the outcome. [`Participants`] tracks them and names the ones that
//! heard nothing from their coordinator for `in_doubt_after`; the leader asks the coordinator
//! group ([`Participants::due_inquiries`]), which answers from its log or, with no decision and
//! no live commit there, logs an abort and answers with the first decision in its log
//! ("presumed abort").
//!
//! Clients retry an aborted transaction under a **new** id (keeping the start timestamp for
//! priority), so late messages of an old attempt cannot reach a new attempt's state.

use std::collections::BTreeMap;
use std::time::Duration;

use meridian_shard::GroupId;
use meridian_truetime::Timestamp;

use crate::TxnId;

/// How long a prepared participant waits to hear from its coordinator before it asks.
pub const IN_DOUBT_AFTER: Duration = Duration::from_secs(2);
/// Most inquiries [`Participants::due_inquiries`] returns at once; the rest come next time.
pub const INQUIRIES_MAX: usize = 256;

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
