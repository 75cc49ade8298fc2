//! Two-phase commit across ranges (Spanner §4.2.1), on top of the lock handling of
//! [`super::txn`].
//!
//! ```text
//!   client                 participant leaders                 coordinator leader
//!   ──────                 ───────────────────                 ──────────────────
//!   TxnCommit(Prepare{c}) ─► X locks, reads checked, prepared
//!     (all at once)          p > every ts assigned here
//!                            log Prepare{p, writes, locks}
//!                            ─► TxnPrepared{p} (repeated until the outcome) ─► recorded
//!   TxnCommit(Coordinate{participants}) ───────────────────────► X locks, reads checked,
//!                                                               TT.now() noted; every
//!                                                               participant's p heard:
//!                                                               s ≥ every p, > TT.now().latest
//!                                                               at arrival, > every ts
//!                                                               assigned, in lease
//!                                                               log Decide{s} (first wins)
//!   ◄──────────────────────────────── Written{s} after TT.after(s) (commit wait)
//!                            log Resolve{s}: apply at s,  ◄──── TxnResolve{s} after TT.after(s)
//!                            release locks ──────────────────► ack; all acked: log Forget
//! ```
//!
//! **Prepare timestamps come from the participants** (Spanner §4.2.1: "each participant leader
//! … notifies the coordinator of its prepare timestamp"), never from the client: a client that
//! reported a low one, or named fewer ranges than it prepared at, could otherwise have the
//! coordinator commit below a prepare timestamp. A participant the client did not name but
//! which reported joins the decision; one whose report comes after a commit decided without it
//! refuses to apply below its prepare timestamp (it aborts its part and logs an error). The
//! client sends the prepares and the coordinator's commit together and waits for the
//! coordinator alone; a prepare that fails makes it ask the coordinator to abort at once, and
//! a coordinator that has not heard every participant within [`VOTES_WAIT_MAX`] aborts.
//!
//! **Recovery.** Everything a decision depends on is in a Paxos log: a participant's prepare
//! record (its writes and locks, restored by the next leader), the coordinator's decision. A
//! participant that hears nothing for [`IN_DOUBT_AFTER`](meridian_txn::outcome::IN_DOUBT_AFTER) asks the coordinator group
//! ([`Request::TxnInquire`]); a coordinator that has no decision and no live commit for the
//! transaction logs an abort and answers with whatever decision its log holds first (presumed
//! abort). Since the first `Decide` in the log wins on every replica, a commit racing an
//! inquiry's abort resolves the same way everywhere, and a decision never flips. A client's
//! abort never resolves a prepared participant directly (the client may have sent the commit,
//! whose answer it lost); it makes the participant ask the coordinator at once.
//!
//! A coordinator remembers a decision until every participant acknowledged it and for at least
//! [`DECISION_REMEMBERED`]: a client that retries its commit after losing the answer gets the
//! logged answer, never a second execution.
//!
//! **Tracing.** Each step logs a debug event with `txn_id`, `node` and `range` (the core has
//! no spans: it is a synchronous state machine, and the fields travel with every event):
//! `participant: prepared`, `coordinator: decided commit|abort`, `coordinator: sending the
//! decision`, `participant: resolve from the coordinator`, `participant: resolved`, and the
//! inquiries. Grepping all nodes' logs for a transaction id shows its path.

use std::collections::BTreeSet;
use std::time::Duration;

use meridian_shard::GroupId;
use meridian_shard::paxos::{NodeId, Role};
use meridian_storage::WriteBatch;
use meridian_truetime::{TTInterval, Timestamp};
use meridian_txn::TxnId;

use super::api::{ApiError, CommitRole, Request, Response};
use super::apply::write_at;
use super::cmd::{Decided, GroupCmd, KeyWrite, Origin, PreparedTxn};
use super::manage::Internal;
use super::observe::AbortReason;
use super::txn::{VOTES_KEPT, VOTES_WAIT_MAX};
use super::{NodeCore, local_of, propose};

/// How often a coordinator re-sends an unacknowledged decision.
pub const RESOLVE_RETRY: Duration = Duration::from_millis(200);
/// How often a participant repeats its request to abort a prepared transaction that blocks an
/// older one (its coordinator may have been deciding, or the message lost).
pub const WOUND_RETRY: Duration = Duration::from_millis(500);
/// How often a prepared participant repeats its prepare timestamp to its coordinator while it
/// has not learned the outcome (a coordinator's new leader knows no reports).
pub const VOTE_RESEND: Duration = Duration::from_millis(300);
/// Shortest time a coordinator remembers a decision.
pub const DECISION_REMEMBERED: Duration = Duration::from_secs(120);
const _: () = assert!(
    DECISION_REMEMBERED.as_secs() >= 2 * meridian_proto::limits::COMMIT_RESEND_MAX.as_secs(),
    "a commit repeated within COMMIT_RESEND_MAX of its first sending must meet its decision, with room for \
     the client's clock to differ from the coordinator's"
);

impl NodeCore {
    /// The leader of `gid` able to answer for its log, or the refusal to send back.
    fn serving_leader(&mut self, gid: GroupId) -> Result<(), ApiError> {
        let Some(g) = self.groups.get(&gid) else { return Err(ApiError::RangeNotFound(gid)) };
        if g.replica.role() != Role::Leader {
            return Err(self.not_leader(gid));
        }
        Ok(())
    }

    /// A coordinator that gives up a commit before deciding logs the abort, so the prepared
    /// participants learn it at once instead of after their in-doubt timeout. Returns whether
    /// `origin` (the client's commit request, if given) will be answered from here.
    ///
    /// The client is answered **from the log**: whichever decision is first there, once it is
    /// applied, never "aborted" straight away. An earlier leader's commit decision for the same
    /// transaction may still be chosen (the client asked again after a lost answer), and the
    /// first decision in the log wins (Spanner §4.2.1: the coordinator's decision is logged
    /// through Paxos before anyone hears it).
    pub(super) fn decide_abort_if_coordinator(
        &mut self,
        now: TTInterval,
        gid: GroupId,
        id: TxnId,
        role: &CommitRole,
        origin: Option<Origin>,
    ) -> bool {
        let CommitRole::Coordinate { participants, .. } = role else { return false };
        let me = self.ident.node;
        let Some(g) = self.groups.get_mut(&gid) else { return false };
        if let Some(d) = g.state.decisions.get(&id) {
            let Some(o) = origin else { return false };
            match d.commit_ts {
                Some(ts) => {
                    self.hold_until_after(now, ts, o, Response::Written { ts });
                }
                None => self.fail(now, o, ApiError::Aborted(format!("transaction {id} was aborted"))),
            }
            return true;
        }
        if g.replica.role() != Role::Leader {
            let Some(o) = origin else { return false };
            let e = self.not_leader(gid);
            self.fail(now, o, e);
            return true;
        }
        let cmd = GroupCmd::Decide {
            txn: id,
            commit_ts: None,
            participants: participants.clone(),
            writes: Vec::new(),
            at: local_of(now),
            from: (me, origin.unwrap_or(Origin::Internal(0))),
        };
        tracing::debug!(txn_id = %id, node = %me, range = %gid, "coordinator: proposing abort");
        match propose(g, &cmd) {
            Ok(()) => {
                self.dirty.insert(gid);
                if let Some(o) = origin {
                    self.commit_answers.insert(o);
                }
                origin.is_some()
            }
            Err(e) => {
                let Some(o) = origin else { return false };
                self.fail(now, o, e);
                true
            }
        }
    }

    /// Participant: the coordinator's outcome for a prepared transaction.
    pub(super) fn serve_txn_resolve(
        &mut self,
        now: TTInterval,
        origin: Origin,
        gid: GroupId,
        txn: TxnId,
        commit_ts: Option<Timestamp>,
    ) {
        if let Err(e) = self.serving_leader(gid) {
            return self.fail(now, origin, e);
        }
        if !self.groups[&gid].serves(now) {
            // Earlier leaders' entries (perhaps this prepare) are not all applied yet.
            return self.fail(now, origin, self.read_refusal(gid));
        }
        self.restore_prepared_locks(gid);
        tracing::debug!(txn_id = %txn, node = %self.ident.node, range = %gid, commit_ts = ?commit_ts, "participant: resolve from the coordinator");
        let g = self.groups.get_mut(&gid).expect("checked");
        if !g.state.prepared.contains_key(&txn) {
            if g.txns.is_preparing(txn) {
                // Its prepare record is on its way: resolve it as soon as it applies (and the
                // coordinator re-sends, should this leader lose the note).
                g.txns.after_prepare.insert(txn, Some(commit_ts));
                let e = ApiError::Unavailable(format!("transaction {txn} is still preparing in range {gid}"));
                return self.fail(now, origin, e);
            }
            // Already resolved; or, for an abort, not yet prepared: drop its locks.
            if commit_ts.is_none() && g.txns.is_active(txn) {
                self.abort_txn(now, gid, txn, AbortReason::Coordinator, "its coordinator aborted it");
            }
            return self.respond(now, origin, Response::Done { detail: format!("transaction {txn} resolved") });
        }
        self.propose_resolve(now, gid, txn, commit_ts, origin);
    }

    fn propose_resolve(
        &mut self,
        now: TTInterval,
        gid: GroupId,
        txn: TxnId,
        commit_ts: Option<Timestamp>,
        origin: Origin,
    ) {
        let me = self.ident.node;
        let g = self.groups.get_mut(&gid).expect("caller checked");
        let mut commit_ts = commit_ts;
        if let (Some(s), Some(p)) = (commit_ts, g.state.prepared.get(&txn).map(|p| p.prepare_ts))
            && s < p
        {
            // Spanner §4.2.1: s ≥ every prepare timestamp. Applying below p could land under
            // reads this range served (p is above everything it assigned). A coordinator that
            // heard p from this range never does this; one that did not (a client named other
            // participants than it prepared at) committed without this range: it cannot join.
            tracing::error!(txn_id = %txn, node = %me, range = %gid, commit_ts = %s, prepare_ts = %p,
                "participant: the coordinator committed below this range's prepare timestamp; not applying \
                 the commit here, aborting this range's part (the coordinator never heard this prepare)");
            super::observe::aborted(AbortReason::Coordinator);
            commit_ts = None;
        }
        if let Some(s) = commit_ts {
            // Later writes here get timestamps above s, so t_paxos_safe stays monotonic.
            g.clock.observe(s);
        }
        match propose(g, &GroupCmd::Resolve { txn, commit_ts, from: (me, origin) }) {
            Ok(()) => {
                self.dirty.insert(gid);
            }
            Err(e) => self.fail(now, origin, e),
        }
    }

    /// Coordinator: a participant asks for the outcome of `txn`, or (`wound`) asks to abort it
    /// because it blocks an older transaction there.
    pub(super) fn serve_txn_inquire(&mut self, now: TTInterval, origin: Origin, gid: GroupId, txn: TxnId, wound: bool) {
        if let Err(e) = self.serving_leader(gid) {
            return self.fail(now, origin, e);
        }
        if !self.groups[&gid].serves(now) {
            return self.fail(now, origin, self.read_refusal(gid));
        }
        let me = self.ident.node;
        tracing::debug!(txn_id = %txn, node = %me, range = %gid, wound, "coordinator: inquiry from a participant");
        let g = self.groups.get_mut(&gid).expect("checked");
        if let Some(d) = g.state.decisions.get(&txn) {
            let decision = Some(d.commit_ts);
            return match d.commit_ts {
                // Spanner §4.2.1: participants hear the commit only after commit wait, like the
                // client; a participant that applied it sooner would let a later transaction
                // there read it before TT.after(s) and take a timestamp below s.
                Some(s) if !now.after(s) => {
                    self.hold_until_after(now, s, origin, Response::Outcome { decision });
                }
                _ => self.respond(now, origin, Response::Outcome { decision }),
            };
        }
        if g.txns.is_preparing(txn) {
            // Its decision is on its way through Paxos: ask again later.
            return self.respond(now, origin, Response::Outcome { decision: None });
        }
        if g.txns.is_active(txn) {
            if !wound {
                // The transaction is alive here (its locks are held, its client keeps it alive):
                // its commit may still come. Ask again later.
                return self.respond(now, origin, Response::Outcome { decision: None });
            }
            // Spanner §4.2.1 wound-wait, across groups: an older transaction waits behind this
            // one at a participant where it is prepared; undecided, it is still woundable here.
            self.abort_txn(
                now,
                gid,
                txn,
                AbortReason::Wounded,
                "wounded by an older transaction at a participant (wound-wait)",
            );
        }
        let g = self.groups.get_mut(&gid).expect("checked");
        // Presumed abort: log it; the answer is whichever decision the log holds first.
        let cmd = GroupCmd::Decide {
            txn,
            commit_ts: None,
            participants: Vec::new(),
            writes: Vec::new(),
            at: local_of(now),
            from: (me, origin),
        };
        match propose(g, &cmd) {
            Ok(()) => {
                self.dirty.insert(gid);
            }
            Err(e) => self.fail(now, origin, e),
        }
    }

    /// Coordinator: participant `participant` prepared `txn` at `prepare_ts`. Recorded for the
    /// commit (which may be waiting for it, or not have arrived yet); answered with the outcome
    /// if decided.
    pub(super) fn serve_txn_prepared(
        &mut self,
        now: TTInterval,
        origin: Origin,
        gid: GroupId,
        txn: TxnId,
        (participant, prepare_ts): (GroupId, Timestamp),
    ) {
        if let Err(e) = self.serving_leader(gid) {
            return self.fail(now, origin, e);
        }
        if !self.groups[&gid].serves(now) {
            return self.fail(now, origin, self.read_refusal(gid));
        }
        tracing::debug!(txn_id = %txn, node = %self.ident.node, range = %gid, %participant, %prepare_ts, "coordinator: a participant prepared");
        let g = self.groups.get_mut(&gid).expect("checked");
        if let Some(d) = g.state.decisions.get(&txn) {
            let decision = Some(d.commit_ts);
            return match d.commit_ts {
                // As for an inquiry: participants hear a commit only after commit wait.
                Some(s) if !now.after(s) => self.hold_until_after(now, s, origin, Response::Outcome { decision }),
                _ => self.respond(now, origin, Response::Outcome { decision }),
            };
        }
        g.txns.record_vote(txn, participant, prepare_ts, local_of(now));
        let waiting = g.txns.commit_awaiting_votes(txn);
        self.respond(now, origin, Response::Outcome { decision: None });
        if let Some(commit) = waiting {
            self.finish_commit(now, gid, commit);
        }
    }

    /// Participant: reports `txn`'s prepare timestamp to its coordinator (and learns the
    /// outcome from the answer, if decided).
    fn send_vote(&mut self, now: TTInterval, gid: GroupId, txn: TxnId) {
        let Some(g) = self.groups.get_mut(&gid) else { return };
        let Some(p) = g.state.prepared.get(&txn) else { return };
        let (coordinator, prepare_ts) = (p.coordinator, p.prepare_ts);
        g.txns.voted.insert(txn, local_of(now));
        let request = Request::TxnPrepared { group: coordinator, txn, participant: gid, prepare_ts };
        self.group_request(now, coordinator, request, Internal::Inquiry { gid, txn, coordinator });
    }

    // ----- applying the records (every replica) -----

    pub(super) fn apply_prepare(&mut self, now: TTInterval, gid: GroupId, p: PreparedTxn, from: (NodeId, Origin)) {
        let mine = (from.0 == self.ident.node).then_some(from.1);
        let g = self.groups.get_mut(&gid).expect("applying group exists");
        if let Some(o) = mine {
            g.proposed.remove(&o);
        }
        if g.state.frozen_into.is_some()
            || p.writes.iter().any(|(k, _)| !g.state.desc.contains(k))
            || p.locks.iter().any(|(span, _)| !super::apply::span_within(&g.state.desc, span))
        {
            // The range changed between proposal and apply (a split took some of its keys):
            // not prepared anywhere. Its read locks count too: the other half would not hold
            // them.
            if let Some(o) = mine {
                let why = format!("range {gid} changed while transaction {} prepared", p.txn.id);
                self.abort_txn(now, gid, p.txn.id, AbortReason::RangeChanged, &why);
                self.fail(now, o, ApiError::Aborted(why));
            }
            return;
        }
        let (id, coordinator) = (p.txn.id, p.coordinator);
        let ts = g.state.prepared.entry(id).or_insert(p).prepare_ts;
        g.state.last_write_ts = g.state.last_write_ts.max(ts);
        g.clock.observe(ts);
        let leader = g.replica.role() == Role::Leader;
        tracing::debug!(txn_id = %id, node = %self.ident.node, range = %gid, prepare_ts = %ts, coordinator = %coordinator, leader, "participant: prepared");
        if leader {
            g.txns.participants.on_prepared(id, coordinator, ts, local_of(now));
        }
        if let Some(o) = mine {
            self.respond(now, o, Response::Prepared { ts });
        }
        if leader {
            self.send_vote(now, gid, id);
            match self.groups.get_mut(&gid).and_then(|g| g.txns.after_prepare.remove(&id)) {
                Some(Some(outcome)) => self.propose_resolve(now, gid, id, outcome, Origin::Internal(0)),
                Some(None) => self.inquire_now(now, gid, id),
                None => {}
            }
            // Older requests may have queued behind it while its record was on its way.
            self.wound_prepared_blockers(now, gid, None);
        }
    }

    pub(super) fn apply_decide(
        &mut self,
        now: TTInterval,
        gid: GroupId,
        d: Decided,
        (txn, writes): (TxnId, Vec<KeyWrite>),
        from: (NodeId, Origin),
        batch: &mut WriteBatch,
    ) {
        let mine = (from.0 == self.ident.node).then_some(from.1).filter(|o| *o != Origin::Internal(0));
        let asked_commit = d.commit_ts.is_some();
        let g = self.groups.get_mut(&gid).expect("applying group exists");
        if let Some(o) = mine {
            g.proposed.remove(&o);
        }
        self.applied_txns.push((gid, txn));
        let g = self.groups.get_mut(&gid).expect("applying group exists");
        g.txns.votes.remove(&txn);
        let decided = match g.state.decisions.get(&txn) {
            Some(first) => first.commit_ts, // the first decision logged wins
            None => {
                let mut d = d;
                if d.commit_ts.is_some()
                    && (g.state.frozen_into.is_some() || writes.iter().any(|(k, _)| !g.state.desc.contains(k)))
                {
                    // The range changed between proposal and apply: abort, the same everywhere.
                    d.commit_ts = None;
                }
                if let Some(s) = d.commit_ts {
                    write_at(batch, &writes, s, g);
                    if g.replica.role() == Role::Leader {
                        // Participants learn the outcome once TT.after(s) (commit wait).
                        self.resolve_wait.insert((s, gid, txn));
                    }
                } else if g.replica.role() == Role::Leader && !d.participants.is_empty() {
                    self.resolve_wait.insert((Timestamp::ZERO, gid, txn));
                }
                let c = d.commit_ts;
                g.state.decisions.insert(txn, d);
                c
            }
        };
        match decided {
            Some(ts) => {
                tracing::debug!(txn_id = %txn, node = %self.ident.node, range = %gid, commit_ts = %ts, "coordinator: decided commit")
            }
            None => tracing::debug!(txn_id = %txn, node = %self.ident.node, range = %gid, "coordinator: decided abort"),
        }
        let Some(o) = mine else { return };
        // A client's commit request gets a commit's answer, also when its leader proposed an
        // abort on its behalf; an inquiry gets the outcome.
        let commit_request = asked_commit || self.commit_answers.remove(&o);
        match (commit_request, decided) {
            (true, Some(ts)) => {
                self.hold_until_after(now, ts, o, Response::Written { ts });
            }
            (true, None) => self.fail(now, o, ApiError::Aborted(format!("transaction {txn} was aborted"))),
            (false, decision) => self.respond(now, o, Response::Outcome { decision: Some(decision) }),
        }
    }

    pub(super) fn apply_resolve(
        &mut self,
        now: TTInterval,
        gid: GroupId,
        txn: TxnId,
        commit_ts: Option<Timestamp>,
        from: (NodeId, Origin),
        batch: &mut WriteBatch,
    ) {
        let mine = (from.0 == self.ident.node).then_some(from.1);
        match commit_ts {
            Some(s) => {
                tracing::debug!(txn_id = %txn, node = %self.ident.node, range = %gid, commit_ts = %s, "participant: resolved: committed")
            }
            None => {
                tracing::debug!(txn_id = %txn, node = %self.ident.node, range = %gid, "participant: resolved: aborted")
            }
        }
        let g = self.groups.get_mut(&gid).expect("applying group exists");
        g.txns.voted.remove(&txn);
        match commit_ts {
            Some(s) => g.txns.participants.on_committed(txn, s),
            None => g.txns.participants.on_aborted(txn),
        };
        if let Some(p) = g.state.prepared.remove(&txn) {
            if let Some(s) = commit_ts {
                // Splits and merges wait while anything is prepared, so the keys are ours.
                write_at(batch, &p.writes, s, g);
            }
            self.applied_txns.push((gid, txn));
        }
        if let Some(o) = mine {
            self.respond(now, o, Response::Done { detail: format!("transaction {txn} resolved") });
        }
    }

    pub(super) fn apply_forget(&mut self, gid: GroupId, txns: Vec<TxnId>) {
        let g = self.groups.get_mut(&gid).expect("applying group exists");
        for t in txns {
            g.state.decisions.remove(&t);
            g.txns.resolving.remove(&t);
        }
    }

    // ----- messages between groups -----

    /// Where to send a request for group `gid`'s leader: this node, the leader it knows, or one
    /// of the group's replicas.
    pub(super) fn group_target(&self, gid: GroupId) -> Option<NodeId> {
        if let Some(g) = self.groups.get(&gid) {
            if g.replica.role() == Role::Leader {
                return Some(self.ident.node);
            }
            if let Some(l) = g.replica.leader_hint() {
                return Some(l);
            }
        }
        if let Some(l) = self.leader_hints.get(&gid) {
            return Some(*l);
        }
        let view = self.view.as_ref()?;
        if let Some(h) = view.leaders.get(&gid) {
            return Some(h.node);
        }
        view.descs.iter().find(|d| d.id == gid).and_then(|d| d.config.voters.iter().next().copied())
    }

    /// Sends `request` to `gid`'s leader (here or forwarded); the answer goes to `kind`.
    fn group_request(&mut self, now: TTInterval, gid: GroupId, request: Request, kind: Internal) {
        let Some(target) = self.group_target(gid) else { return };
        let o = self.internal(kind);
        if target == self.ident.node {
            self.handle_request(now, o, request);
        } else {
            self.forward(now, o, request, Some(target));
        }
    }

    /// Coordinator: decisions whose commit wait is over go to their participants.
    pub(super) fn release_resolve_waits(&mut self, now: TTInterval) {
        while let Some((ts, gid, txn)) = self.resolve_wait.first().copied() {
            if !now.after(ts) {
                break;
            }
            self.resolve_wait.pop_first();
            self.send_resolves(now, gid, txn);
        }
    }

    fn send_resolves(&mut self, now: TTInterval, gid: GroupId, txn: TxnId) {
        let Some(g) = self.groups.get_mut(&gid) else { return };
        if g.replica.role() != Role::Leader {
            return;
        }
        let Some(d) = g.state.decisions.get(&txn).cloned() else { return };
        let entry = g.txns.resolving.entry(txn).or_insert_with(|| (BTreeSet::new(), Timestamp::ZERO));
        entry.1 = local_of(now);
        let acked = entry.0.clone();
        tracing::debug!(txn_id = %txn, node = %self.ident.node, range = %gid, commit_ts = ?d.commit_ts, participants = ?d.participants, acked = ?acked, "coordinator: sending the decision to the participants");
        for p in d.participants.iter().filter(|p| !acked.contains(p)) {
            let request = Request::TxnResolve { group: *p, txn, commit_ts: d.commit_ts };
            self.group_request(now, *p, request, Internal::Resolved { coordinator: gid, txn, participant: *p });
        }
    }

    /// A participant acknowledged (or refused) a decision.
    pub(super) fn on_resolved(&mut self, coordinator: GroupId, txn: TxnId, participant: GroupId, r: Response) {
        match r {
            Response::Done { .. } => {}
            Response::Error(ApiError::NotLeader { leader, .. }) => {
                self.learn_leader(participant, leader);
                return;
            }
            _ => return,
        }
        let Some(g) = self.groups.get_mut(&coordinator) else { return };
        if let Some(entry) = g.txns.resolving.get_mut(&txn) {
            entry.0.insert(participant);
        }
    }

    /// A participant's inquiry came back.
    pub(super) fn on_inquired(&mut self, now: TTInterval, gid: GroupId, txn: TxnId, coordinator: GroupId, r: Response) {
        match r {
            Response::Outcome { decision: Some(commit_ts) } => {
                let Some(g) = self.groups.get(&gid) else { return };
                if g.replica.role() == Role::Leader && g.state.prepared.contains_key(&txn) {
                    self.propose_resolve(now, gid, txn, commit_ts, Origin::Internal(0));
                }
            }
            Response::Error(ApiError::NotLeader { leader, .. }) => self.learn_leader(coordinator, leader),
            _ => {}
        }
    }

    fn learn_leader(&mut self, gid: GroupId, leader: Option<NodeId>) {
        match leader {
            Some(l) => {
                self.leader_hints.insert(gid, l);
            }
            None => {
                self.leader_hints.remove(&gid);
            }
        }
    }

    /// A client gave up a transaction that is prepared here: ask its coordinator now to abort
    /// it unless it already decided (the client may have sent the commit, so only the
    /// coordinator's log can say how it ended). Asking as a wound matters: the client's abort
    /// may reach the coordinator's range after this question, and a plain inquiry about a
    /// transaction still alive there is answered "ask again later" — the participant would hold
    /// the transaction's locks until its in-doubt timer, stalling every transaction behind them.
    pub(super) fn inquire_now(&mut self, now: TTInterval, gid: GroupId, txn: TxnId) {
        let Some(g) = self.groups.get_mut(&gid) else { return };
        let Some(p) = g.state.prepared.get(&txn) else { return };
        let coordinator = p.coordinator;
        g.txns.participants.heard(txn, local_of(now));
        tracing::debug!(txn_id = %txn, node = %self.ident.node, range = %gid, coordinator = %coordinator, "participant: asking the coordinator for the outcome");
        let request = Request::TxnInquire { group: coordinator, txn, wound: true };
        self.group_request(now, coordinator, request, Internal::Inquiry { gid, txn, coordinator });
    }

    /// Wound-wait across groups (see `meridian_txn::locks`): every transaction prepared here
    /// that blocks a waiting request of an older one (of `waiter` only, or of any) is asked to
    /// abort at its coordinator, which does so unless it already decided. Re-sent at most every
    /// [`WOUND_RETRY`] while the block lasts.
    pub(super) fn wound_prepared_blockers(&mut self, now: TTInterval, gid: GroupId, waiter: Option<TxnId>) {
        let local = local_of(now);
        let Some(g) = self.groups.get_mut(&gid) else { return };
        let blockers = g.txns.locks.prepared_blockers(waiter);
        g.txns.wounding.retain(|id, _| blockers.contains(id) || waiter.is_some());
        let mut send = Vec::new();
        for id in blockers {
            let Some(p) = g.state.prepared.get(&id) else { continue }; // its record is on its way
            if g.txns.wounding.get(&id).is_some_and(|t| local < t.saturating_add(WOUND_RETRY)) {
                continue;
            }
            g.txns.wounding.insert(id, local);
            send.push((id, p.coordinator));
        }
        for (txn, coordinator) in send {
            let request = Request::TxnInquire { group: coordinator, txn, wound: true };
            self.group_request(now, coordinator, request, Internal::Inquiry { gid, txn, coordinator });
        }
    }

    /// Housekeeping of a leader: ask about transactions in doubt, re-send unacknowledged
    /// decisions, forget old aborts.
    pub(super) fn twopc_housekeeping(&mut self, now: TTInterval, gid: GroupId) {
        let local = local_of(now);
        self.restore_prepared_locks(gid);
        let Some(g) = self.groups.get_mut(&gid) else { return };
        // A new leader tracks what earlier leaders prepared as if just heard of.
        for (id, p) in &g.state.prepared {
            if g.txns.participants.get(*id).is_none() {
                g.txns.participants.on_prepared(*id, p.coordinator, p.prepare_ts, local);
            }
        }
        let ask = g.txns.participants.due_inquiries(local);
        // Participant: repeat prepare timestamps the coordinator may not have (lost, or heard by
        // a leader since replaced) until the outcome arrives.
        let revote: Vec<TxnId> = g
            .state
            .prepared
            .keys()
            .filter(|id| g.txns.voted.get(id).is_none_or(|t| local >= t.saturating_add(VOTE_RESEND)))
            .copied()
            .collect();
        // Coordinator: forget reports nobody committed with, abort commits whose participants
        // never reported.
        g.txns.votes.retain(|_, v| local < v.since.saturating_add(VOTES_KEPT));
        let silent = g.txns.vote_waits_expired(local.saturating_sub(VOTES_WAIT_MAX));
        // Coordinator: prepared somewhere, but no commit came (see COMMIT_AFTER_VOTE_MAX).
        let commit_after_vote_max = self.opts.commit_after_vote_max;
        let orphaned: Vec<(TxnId, Vec<GroupId>)> = g
            .txns
            .votes
            .iter()
            .filter(|(id, v)| {
                local >= v.since.saturating_add(commit_after_vote_max)
                    && !g.state.decisions.contains_key(id)
                    && !g.txns.is_preparing(**id)
                    && !g.txns.has_commit(**id)
            })
            .map(|(id, v)| (*id, v.prepared.keys().copied().collect()))
            .collect();
        let mut resend = Vec::new();
        let mut forget = Vec::new();
        for (id, d) in &g.state.decisions {
            if d.commit_ts.is_some_and(|s| !now.after(s)) {
                continue; // still in commit wait
            }
            let (acked, last) = g.txns.resolving.get(id).map_or((0, Timestamp::ZERO), |r| (r.0.len(), r.1));
            if acked < d.participants.len() {
                if local >= last.saturating_add(RESOLVE_RETRY) {
                    resend.push(*id);
                }
            } else if local >= d.at.saturating_add(self.opts.decision_remembered) {
                forget.push(*id);
            }
        }
        if !forget.is_empty() && propose(g, &GroupCmd::Forget { txns: forget }).is_ok() {
            self.dirty.insert(gid);
        }
        for txn in silent {
            let why = format!("its participants did not all report a prepare within {:?}", VOTES_WAIT_MAX);
            self.abort_txn(now, gid, txn, AbortReason::Deadline, &why);
        }
        for (txn, participants) in orphaned {
            let why = format!("prepared at a participant, but no commit came within {commit_after_vote_max:?}");
            self.abort_txn(now, gid, txn, AbortReason::Deadline, &why);
            // Logged (presumed abort, as for an inquiry), and sent to the participants that
            // reported, so their prepared locks go now.
            let role = CommitRole::Coordinate { participants, first_sent: None };
            self.decide_abort_if_coordinator(now, gid, txn, &role, None);
            if let Some(g) = self.groups.get_mut(&gid) {
                g.txns.votes.remove(&txn);
            }
        }
        for txn in revote {
            self.send_vote(now, gid, txn);
        }
        self.wound_prepared_blockers(now, gid, None);
        for (txn, coordinator) in ask {
            let request = Request::TxnInquire { group: coordinator, txn, wound: false };
            self.group_request(now, coordinator, request, Internal::Inquiry { gid, txn, coordinator });
        }
        for txn in resend {
            self.send_resolves(now, gid, txn);
        }
    }
}
