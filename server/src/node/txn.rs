//! Read-write transactions at a range's leader: locks and the single-group commit.
//!
//! Spanner §4.2.1, as far as one range goes:
//!
//! ```text
//!   TxnGet(txn, k) ──► shared lock on k (wound-wait) ──granted──► read newest ──► value, epoch
//!                               │ waiting: parked until a release grants it
//!                               └ wounds younger holders: they abort here at once
//!   TxnCommit(txn, reads, writes)
//!       ──► exclusive locks on every written key (waiting as above)
//!       ──► every read lock still held, under the same leader (epoch), txn not aborted here
//!       ──► mark prepared (no longer woundable) ──► s > TT.now().latest, > last assigned,
//!           inside the lease (§4.1.2) ──► one Paxos write ──► applied: locks released
//!       ──► commit wait until TT.after(s) ──► answer
//! ```
//!
//! Plain writes (`Request::Write`) take the same exclusive locks as an implicit transaction, so
//! they never slip under a reader's shared lock.
//!
//! **Aborted stays aborted.** A transaction wounded or expired here is released at once (so the
//! older one proceeds) and remembered for [`ABORTED_TTL`]: any later request of it fails, so it
//! cannot re-read a key after losing its lock and commit on a stale first read. Locks live only
//! in the leader's memory; a new leader knows none of them, so a commit whose reads were taken
//! under another leader (a different *epoch*, the leader's ballot round) aborts.
//!
//! **Deadlines.** A lock wait lasts at most as long as its caller waits: when the shell gives
//! up on a request (the caller's `grpc-timeout` passed, or the caller went away) it sends
//! `Input::Cancel`, and a request still waiting for a lock here aborts its transaction in this
//! range ([`NodeCore::cancel_lock_wait`]), so no waiter is left in the lock table to be granted
//! a lock nobody will use. The caller hears `DEADLINE_EXCEEDED` naming the key and the
//! transaction holding it.
//!
//! Left for the next step: two-phase commit across ranges (the `meridian-txn` coordinator and
//! participant machines), prepare records, lock rebuilding from them, and lock-free read-only
//! transactions at safe time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use meridian_shard::GroupId;
use meridian_shard::paxos::Role;
use meridian_shard::range;
use meridian_truetime::{TTInterval, Timestamp};
use meridian_txn::{Acquired, LockTable, Mode, Span, TxnId, TxnMeta};

use super::api::{ApiError, CommitRole, Response};
use super::cmd::{GroupCmd, KeyWrite, Origin};
use super::observe::{self, AbortReason};
use super::{NodeCore, local_of, propose};

/// A transaction idle this long at a leader (no request) is aborted and its locks released
/// (the client vanished). Clients of long transactions send keepalives more often.
pub const TXN_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an aborted transaction's id is remembered, so its late requests fail.
pub const ABORTED_TTL: Duration = Duration::from_secs(60);
/// Most aborted transactions remembered per range (the oldest are forgotten first).
pub const ABORTED_REMEMBERED_MAX: usize = 100_000;
/// Most keys a transaction reads or writes in one commit request.
pub const TXN_KEYS_MAX: usize = 10_000;
/// Most transactions whose participants' prepare timestamps a coordinator leader remembers
/// (the oldest are forgotten first: their commits then abort, retryably).
pub const VOTES_REMEMBERED_MAX: usize = 100_000;
/// How long a coordinator's commit waits for its participants' prepare timestamps before it
/// aborts (a participant never got its prepare: the client vanished, or could not reach it).
pub const VOTES_WAIT_MAX: Duration = Duration::from_secs(10);
/// How long a coordinator waits for a transaction's commit after a participant reported it
/// prepared. The client sends its prepares and the commit together, so a commit this late was
/// lost or its client is gone: the coordinator logs an abort rather than leave the participant's
/// prepared locks (which hold back reads at later timestamps, Spanner §4.1.3) until the idle
/// timeout. A commit that arrives after it finds the abort decided, and the client re-runs.
pub const COMMIT_AFTER_VOTE_MAX: Duration = Duration::from_secs(2);
/// How long reported prepare timestamps are kept without a commit to use them.
pub const VOTES_KEPT: Duration = Duration::from_secs(60);

/// What a transactional read reads once its shared lock is granted.
#[derive(Clone)]
enum TxnRead {
    Key(Vec<u8>),
    /// `[start, end)` clipped to the range (`end` empty: to its end), at most `limit` rows.
    Scan {
        start: Vec<u8>,
        end: Vec<u8>,
        limit: usize,
    },
}

/// What a commit says it read: keys, spans `[start, end)`, and the leader epoch of those reads.
pub(super) type TxnReads = (Vec<Vec<u8>>, Vec<(Vec<u8>, Vec<u8>)>, Option<u64>);

/// A lock request parked in the lock table.
enum Wait {
    /// A transactional read: answer once the shared lock is granted. Waiting since `since`
    /// (local time).
    Get { origin: Origin, txn: TxnMeta, read: TxnRead, since: Timestamp },
    /// One of a commit's exclusive locks.
    Commit { commit: u64 },
}

/// A commit waiting for its exclusive locks.
struct PendingCommit {
    origin: Origin,
    txn: TxnMeta,
    reads: Vec<Span>,
    read_epoch: Option<u64>,
    writes: Vec<KeyWrite>,
    role: CommitRole,
    outstanding: usize,
    /// When it arrived (local time).
    since: Timestamp,
    /// `TT.now()` when it arrived: a coordinator's commit timestamp is above its `latest`
    /// (Spanner §4.2.1), however long the votes take.
    arrived: TTInterval,
    /// A coordinator's commit holding its locks, waiting for participants' prepare timestamps.
    awaiting_votes: bool,
}

/// Prepare timestamps participants reported for one transaction ([`Request::TxnPrepared`]).
#[derive(Default)]
pub(super) struct Votes {
    /// Per participant, its prepare timestamp.
    pub(super) prepared: BTreeMap<GroupId, Timestamp>,
    /// When the first arrived (local time), to forget votes of transactions never committed.
    pub(super) since: Timestamp,
}

/// The transaction state of one range's leader.
#[derive(Default)]
pub(super) struct GroupTxns {
    pub(super) locks: LockTable,
    waits: BTreeMap<u64, Wait>,
    commits: BTreeMap<u64, PendingCommit>,
    /// Aborted here, and when (local time).
    aborted: BTreeMap<TxnId, Timestamp>,
    /// The leader epoch whose lock table holds every prepared transaction's locks.
    pub(super) restored_epoch: Option<u64>,
    /// Participant: the prepared transactions and when their coordinator was last heard of
    /// (local time), to ask it once they are in doubt.
    pub(super) participants: meridian_txn::Participants,
    /// Coordinator: participants that acknowledged a decision, and when the decision was last
    /// sent to the others (local time).
    pub(super) resolving: BTreeMap<TxnId, (BTreeSet<GroupId>, Timestamp)>,
    /// Participant: prepared transactions blocking an older one, and when their coordinator was
    /// last asked to abort them (local time).
    pub(super) wounding: BTreeMap<TxnId, Timestamp>,
    /// Participant: what to do once the prepare record of a transaction still preparing here
    /// applies — the coordinator's outcome that arrived first (`Some`), or ask the coordinator
    /// (`None`: its client gave up meanwhile). Without this the transaction would sit prepared,
    /// holding its locks, until a timer (the coordinator's re-send, the in-doubt inquiry).
    pub(super) after_prepare: BTreeMap<TxnId, Option<Option<Timestamp>>>,
    /// Coordinator: prepare timestamps reported by participants, by transaction (memory only: a
    /// new leader hears them again, participants repeat them until they learn the outcome).
    pub(super) votes: BTreeMap<TxnId, Votes>,
    /// Participant: when this leader last reported each prepared transaction's prepare
    /// timestamp to its coordinator (local time).
    pub(super) voted: BTreeMap<TxnId, Timestamp>,
}

impl GroupTxns {
    fn remember_aborted(&mut self, id: TxnId, at: Timestamp) {
        if self.aborted.len() >= ABORTED_REMEMBERED_MAX
            && let Some(oldest) = self.aborted.iter().min_by_key(|(_, t)| **t).map(|(id, _)| *id)
        {
            self.aborted.remove(&oldest);
        }
        self.aborted.insert(id, at);
    }

    /// Whether a coordinator's commit here waits for participants' prepare timestamps.
    pub(super) fn awaiting_votes(&self) -> bool {
        self.commits.values().any(|c| c.awaiting_votes)
    }

    /// The coordinator's commit of `txn` waiting for votes, if any.
    pub(super) fn commit_awaiting_votes(&self, txn: TxnId) -> Option<u64> {
        self.commits.iter().find(|(_, c)| c.awaiting_votes && c.txn.id == txn).map(|(id, _)| *id)
    }

    /// Commits that waited for votes since before `before` (local time): their participants
    /// never reported (the client vanished before sending a prepare).
    pub(super) fn vote_waits_expired(&self, before: Timestamp) -> Vec<TxnId> {
        self.commits.values().filter(|c| c.awaiting_votes && c.since < before).map(|c| c.txn.id).collect()
    }

    /// Records that `participant` prepared `txn` at `prepare_ts`.
    pub(super) fn record_vote(&mut self, txn: TxnId, participant: GroupId, prepare_ts: Timestamp, now: Timestamp) {
        if !self.votes.contains_key(&txn)
            && self.votes.len() >= VOTES_REMEMBERED_MAX
            && let Some(oldest) = self.votes.iter().min_by_key(|(_, v)| v.since).map(|(id, _)| *id)
        {
            self.votes.remove(&oldest);
        }
        let v = self.votes.entry(txn).or_insert_with(|| Votes { since: now, ..Votes::default() });
        v.prepared.insert(participant, prepare_ts);
    }

    /// Whether any transaction holds or waits for locks here.
    pub(super) fn is_idle(&self) -> bool {
        self.locks.is_empty() && self.waits.is_empty() && self.commits.is_empty()
    }

    /// Whether `id` is marked prepared here (its prepare record or decision is on its way).
    pub(super) fn is_preparing(&self, id: TxnId) -> bool {
        self.locks.txn(id).is_some_and(|t| t.prepared)
    }

    /// Whether a commit of `id` is under way here (any role).
    pub(super) fn has_commit(&self, id: TxnId) -> bool {
        self.commits.values().any(|c| c.txn.id == id)
    }

    /// Whether `id` holds locks or waits for them here (a commit not yet decided).
    pub(super) fn is_active(&self, id: TxnId) -> bool {
        self.locks.txn(id).is_some() || self.commits.values().any(|c| c.txn.id == id)
    }

    /// What a waiting request of `txn` waits for, in words: the lock (request `req`, or else
    /// the transaction's first waiting one) and who holds it — or, when nobody holds a
    /// conflicting lock, the older requests queued ahead of it.
    fn blocked_on(&self, txn: TxnMeta, req: Option<u64>) -> String {
        let Some(w) = self.locks.waiting().find(|w| w.txn.id == txn.id && req.is_none_or(|r| r == w.req)) else {
            return "a lock".into();
        };
        let (span, mode) = (&w.span, w.mode);
        let lock = match (mode, span) {
            (Mode::Shared, Span::Key(_)) => format!("a shared lock on key {span}"),
            (Mode::Shared, _) => format!("a shared lock on keys {span}"),
            (Mode::Exclusive, _) => format!("the exclusive lock on key {span}"),
        };
        let mut holders = Vec::new();
        let mut more = 0usize;
        for id in self.locks.txn_ids().filter(|id| *id != txn.id).take(BLOCKERS_SCANNED_MAX) {
            if !self.locks.locks_of(id).iter().any(|(s, m)| s.overlaps(span) && m.conflicts_with(mode)) {
                continue;
            }
            let Some(h) = self.locks.txn(id) else { continue };
            if holders.len() == BLOCKERS_NAMED_MAX {
                more += 1;
                continue;
            }
            let how = match (h.meta.is_older_than(&txn), h.prepared) {
                (true, true) => "older, prepared",
                (true, false) => "older",
                (false, true) => "younger but prepared: only its coordinator may abort it",
                (false, false) => "younger, wounded and aborting",
            };
            holders.push(format!("transaction {id} ({how})"));
        }
        let and_more = if more > 0 { format!(" and {more} more") } else { String::new() };
        if !holders.is_empty() {
            return format!(
                "{lock} held by {}{and_more}: under wound-wait (Spanner §4.2.1) a younger transaction waits for an older one",
                holders.join(", ")
            );
        }
        let ahead: Vec<String> = self
            .locks
            .waiting()
            .take_while(|a| a.txn.is_older_than(&txn))
            .filter(|a| a.txn.id != txn.id && a.mode.conflicts_with(mode) && a.span.overlaps(span))
            .take(BLOCKERS_NAMED_MAX)
            .map(|a| format!("transaction {}", a.txn.id))
            .collect();
        match ahead.is_empty() {
            true => lock,
            false => format!("{lock}, queued behind older {} (wound-wait, Spanner §4.2.1)", ahead.join(", ")),
        }
    }
}

/// Most lock holders a deadline message names.
const BLOCKERS_NAMED_MAX: usize = 3;
/// Most transactions a deadline message looks through for the holders of a lock.
const BLOCKERS_SCANNED_MAX: usize = 10_000;

/// A duration in whole milliseconds (`270ms`), as deadline messages show it.
fn show_ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

impl NodeCore {
    /// The range `key` belongs to, if this node leads it under a lease; else the error to answer.
    fn txn_leader(&mut self, now: TTInterval, key: &[u8]) -> Result<GroupId, ApiError> {
        range::check_user_key(key).map_err(ApiError::Invalid)?;
        let Some(gid) = self.group_for_key(key) else {
            return Err(ApiError::KeyOutOfRange { key: key.to_vec(), desc: self.last_known_desc(key).map(Box::new) });
        };
        if !self.groups[&gid].serves(now) {
            return Err(self.read_refusal(gid));
        }
        self.restore_prepared_locks(gid);
        Ok(gid)
    }

    /// A leader able to serve (every earlier leader's entry applied) first takes back the locks
    /// of every transaction prepared here (Spanner §4.2.1: prepared transactions stay prepared
    /// across leader changes), before it grants any new lock.
    ///
    /// Only once the leader's state machine holds every earlier leader's entry (its barrier is
    /// applied): a prepare record chosen by an earlier leader but applied after the restore
    /// would leave its transaction prepared without locks here, and a later reader would see
    /// the value from before its commit and overwrite it (a lost update, found by `meridian
    /// chaos bank`: housekeeping of a leader that held a lease but had not yet applied its
    /// predecessor's last prepare).
    pub(super) fn restore_prepared_locks(&mut self, gid: GroupId) {
        let Some(g) = self.groups.get_mut(&gid) else { return };
        let epoch = g.replica.promised().round;
        if g.txns.restored_epoch == Some(epoch) || g.replica.role() != Role::Leader || !g.caught_up() {
            return;
        }
        for p in g.state.prepared.values() {
            if g.txns.locks.txn(p.txn.id).is_none() {
                g.txns.locks.restore(p.txn, p.locks.clone());
            }
        }
        g.txns.restored_epoch = Some(epoch);
    }

    /// Invariants, checked by the simulations after every step:
    /// - every replica's clock is past every write it applied, so it assigns above them if it
    ///   leads (Spanner §4.1.2: monotonic across leaders);
    /// - a leader whose lock table was rebuilt holds the locks of every transaction prepared in
    ///   its state machine, marked prepared (Spanner §4.2.1: a prepared transaction keeps its
    ///   locks until it is resolved, across leader changes). Broken on purpose by
    ///   `unsafe_early_lock_release`.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (gid, g) in &self.groups {
            if g.clock.last_assigned < g.state.last_write_ts {
                return Err(format!(
                    "{}: {gid} applied a write at {} but would assign from {}",
                    self.ident.node, g.state.last_write_ts, g.clock.last_assigned
                ));
            }
        }
        if self.opts.unsafe_early_lock_release {
            return Ok(());
        }
        for (gid, g) in &self.groups {
            if g.replica.role() != Role::Leader || g.txns.restored_epoch != Some(g.replica.promised().round) {
                continue;
            }
            for id in g.state.prepared.keys() {
                if !g.txns.locks.txn(*id).is_some_and(|t| t.prepared) {
                    return Err(format!(
                        "{}: leader of {gid} at {} has transaction {id} prepared but not its locks",
                        self.ident.node,
                        g.replica.promised()
                    ));
                }
            }
        }
        Ok(())
    }

    /// Fails `txn`'s request if the transaction was aborted here; records its activity.
    fn txn_admit(&mut self, now: TTInterval, gid: GroupId, txn: TxnMeta) -> Result<(), ApiError> {
        let t = &mut self.groups.get_mut(&gid).expect("caller checked").txns;
        if t.aborted.contains_key(&txn.id) {
            return Err(ApiError::Aborted(format!("transaction {} was aborted in range {gid}", txn.id)));
        }
        t.locks.touch(txn.id, local_of(now));
        Ok(())
    }

    pub(super) fn serve_txn_get(&mut self, now: TTInterval, origin: Origin, txn: TxnMeta, key: Vec<u8>) {
        self.serve_txn_read(now, origin, txn, TxnRead::Key(key));
    }

    pub(super) fn serve_txn_scan(
        &mut self,
        now: TTInterval,
        origin: Origin,
        txn: TxnMeta,
        (start, end, limit): (Vec<u8>, Vec<u8>, u32),
    ) {
        let limit = limit.clamp(1, super::api::SCAN_ROWS_MAX) as usize;
        self.serve_txn_read(now, origin, txn, TxnRead::Scan { start, end, limit });
    }

    fn serve_txn_read(&mut self, now: TTInterval, origin: Origin, txn: TxnMeta, read: TxnRead) {
        let first = match &read {
            TxnRead::Key(k) => k.clone(),
            TxnRead::Scan { start, .. } => start.clone(),
        };
        let gid = match self.txn_leader(now, &first) {
            Ok(g) => g,
            Err(e) => return self.fail(now, origin, e),
        };
        if let Err(e) = self.txn_admit(now, gid, txn) {
            return self.fail(now, origin, e);
        }
        let read = match read {
            TxnRead::Scan { start, end, limit } => {
                TxnRead::Scan { end: clip_end(&self.groups[&gid].state.desc, end), start, limit }
            }
            k => k,
        };
        let span = match &read {
            TxnRead::Key(k) => Span::key(k.clone()),
            TxnRead::Scan { start, end, .. } => match Span::range(start.clone(), end.clone()) {
                Ok(s) => s,
                Err(e) => return self.fail(now, origin, ApiError::Invalid(e.to_string())),
            },
        };
        let req = self.next_txn_req();
        let t = &mut self.groups.get_mut(&gid).expect("checked").txns;
        match t.locks.acquire(txn, req, span, Mode::Shared) {
            Ok(Acquired::Granted) => self.answer_txn_read(now, gid, origin, read),
            Ok(Acquired::Waiting { wounded }) => {
                observe::lock_waited();
                t.waits.insert(req, Wait::Get { origin, txn, read, since: local_of(now) });
                for w in wounded {
                    self.abort_txn(now, gid, w, AbortReason::Wounded, "wounded by an older transaction (wound-wait)");
                }
                self.wound_prepared_blockers(now, gid, Some(txn.id));
            }
            Err(e) => self.txn_refused(now, gid, origin, txn.id, e),
        }
    }

    fn answer_txn_read(&mut self, now: TTInterval, gid: GroupId, origin: Origin, read: TxnRead) {
        let g = &self.groups[&gid];
        let epoch = g.replica.promised().round;
        match read {
            TxnRead::Key(key) => match self.mvcc.get_version(&key, Timestamp::MAX) {
                Ok(v) => {
                    let (value, ts) = v.map_or((None, Timestamp::ZERO), |v| (v.value, v.ts));
                    self.respond_visible(now, origin, Response::TxnValue { value, ts, epoch }, ts);
                }
                Err(e) => self.fail(now, origin, ApiError::Unavailable(format!("storage: {e}"))),
            },
            TxnRead::Scan { start, end, limit } => {
                let desc = g.state.desc.clone();
                let end = (!end.is_empty()).then_some(end.as_slice());
                match self.mvcc.scan_newest(&start, end, Timestamp::MAX, limit + 1) {
                    Ok((mut rows, newest)) => {
                        let truncated = rows.len() > limit;
                        rows.truncate(limit);
                        self.respond_visible(now, origin, Response::TxnRows { rows, desc, truncated, epoch }, newest);
                    }
                    Err(e) => self.fail(now, origin, ApiError::Unavailable(format!("storage: {e}"))),
                }
            }
        }
    }

    /// A commit the lock table refused. A coordinator logs the abort and answers from the log
    /// ([`Self::decide_abort_if_coordinator`]); others answer as [`Self::txn_refused`] does.
    fn refuse_commit(
        &mut self,
        now: TTInterval,
        gid: GroupId,
        origin: Origin,
        id: TxnId,
        role: &CommitRole,
        e: meridian_txn::Error,
    ) {
        if matches!(role, CommitRole::Coordinate { .. }) {
            self.abort_txn(now, gid, id, AbortReason::Refused, &e.to_string());
            if self.decide_abort_if_coordinator(now, gid, id, role, Some(origin)) {
                return;
            }
            return self.fail(now, origin, ApiError::Aborted(e.to_string()));
        }
        self.txn_refused(now, gid, origin, id, e)
    }

    /// A lock-table refusal: a wounded transaction aborts; limits are reported as they are.
    fn txn_refused(&mut self, now: TTInterval, gid: GroupId, origin: Origin, id: TxnId, e: meridian_txn::Error) {
        if matches!(e, meridian_txn::Error::Wounded { .. }) {
            self.abort_txn(now, gid, id, AbortReason::Wounded, "wounded by an older transaction (wound-wait)");
            return self.fail(now, origin, ApiError::Aborted(e.to_string()));
        }
        if e.retryable() {
            return self.fail(now, origin, ApiError::Unavailable(e.to_string()));
        }
        self.fail(now, origin, ApiError::Invalid(e.to_string()))
    }

    pub(super) fn serve_txn_keepalive(&mut self, now: TTInterval, origin: Origin, txn: TxnMeta, key: Vec<u8>) {
        let gid = match self.txn_leader(now, &key) {
            Ok(g) => g,
            Err(e) => return self.fail(now, origin, e),
        };
        if let Err(e) = self.txn_admit(now, gid, txn) {
            return self.fail(now, origin, e);
        }
        if !self.groups[&gid].txns.is_active(txn.id) {
            let why = format!("transaction {} holds nothing in range {gid} (expired, or the leader changed)", txn.id);
            return self.fail(now, origin, ApiError::Aborted(why));
        }
        self.respond(now, origin, Response::Done { detail: format!("transaction {} kept alive", txn.id) });
    }

    pub(super) fn serve_txn_abort(
        &mut self,
        now: TTInterval,
        origin: Origin,
        txn: TxnMeta,
        key: Vec<u8>,
        range: Option<GroupId>,
    ) {
        let gid = match self.txn_leader(now, &key) {
            Ok(g) => g,
            Err(e) => return self.fail(now, origin, e),
        };
        // The range the transaction locked in, if a split since gave `key` to another range:
        // its leader is usually this node too (a split's halves start with one leader).
        if let Some(r) = range.filter(|r| *r != gid)
            && self.groups.get(&r).is_some_and(|g| g.serves(now))
        {
            self.abort_in(now, r, txn);
        }
        self.abort_in(now, gid, txn);
        self.respond(now, origin, Response::Done { detail: format!("transaction {} aborted", txn.id) });
    }

    /// A client's abort of `txn` in `gid`, which this node leads: its locks are released, unless
    /// it is prepared there (only its coordinator may say it aborted; the client may have sent
    /// the commit and lost the answer), in which case the coordinator is asked now rather than
    /// after the in-doubt timeout.
    fn abort_in(&mut self, now: TTInterval, gid: GroupId, txn: TxnMeta) {
        self.restore_prepared_locks(gid);
        let g = self.groups.get_mut(&gid).expect("caller checked the range is led here");
        if !g.state.prepared.contains_key(&txn.id) && g.txns.is_preparing(txn.id) {
            // Its prepare record is on its way: ask the coordinator once it applies.
            g.txns.after_prepare.entry(txn.id).or_insert(None);
        }
        if g.state.prepared.contains_key(&txn.id) || g.txns.is_preparing(txn.id) {
            self.inquire_now(now, gid, txn.id);
            return;
        }
        self.abort_txn(now, gid, txn.id, AbortReason::Client, "aborted by its client");
    }

    /// Commits `txn` through one Paxos write, or writes `writes` as an implicit transaction
    /// (`reads` empty). Answers `origin` after the write is applied and commit-waited.
    pub(super) fn serve_txn_commit(
        &mut self,
        now: TTInterval,
        origin: Origin,
        txn: TxnMeta,
        (read_keys, read_spans, read_epoch): TxnReads,
        writes: Vec<KeyWrite>,
        (role, range): (CommitRole, Option<GroupId>),
    ) {
        let mut reads: Vec<Span> = read_keys.into_iter().map(Span::key).collect();
        for (start, end) in read_spans {
            match Span::range(start, end) {
                Ok(s) => reads.push(s),
                Err(e) => return self.fail(now, origin, ApiError::Invalid(e.to_string())),
            }
        }
        if reads.len() + writes.len() > TXN_KEYS_MAX {
            return self.fail(
                now,
                origin,
                ApiError::Invalid(format!("a transaction reads and writes at most {TXN_KEYS_MAX} keys per range")),
            );
        }
        for k in reads.iter().map(Span::start).chain(writes.iter().map(|(k, _)| k.as_slice())) {
            if let Err(e) = range::check_user_key(k) {
                return self.fail(now, origin, ApiError::Invalid(e));
            }
        }
        // Value size, writes and bytes, for every role (one range, prepare, coordinator's commit).
        if let Err(e) = meridian_proto::limits::check_writes(writes.iter().map(|(k, v)| (&k[..], v.as_deref()))) {
            return self.fail(now, origin, ApiError::Invalid(e));
        }
        let first =
            writes.first().map(|(k, _)| k.clone()).or(reads.first().map(|s| s.start().to_vec())).unwrap_or_default();
        let gid = match self.txn_leader(now, &first) {
            Ok(g) => g,
            Err(e) => return self.fail(now, origin, e),
        };
        let desc = self.groups[&gid].state.desc.clone();
        let outside = |s: &Span| match s {
            Span::Key(k) => !desc.contains(k),
            Span::Range { start, end } => {
                !desc.contains(start) || (!desc.end.is_empty() && (end.is_empty() || *end > desc.end))
            }
        };
        let moved = reads
            .iter()
            .find(|s| outside(s))
            .map(|s| s.start().to_vec())
            .or(writes.iter().map(|(k, _)| k.clone()).find(|k| !desc.contains(k)))
            // Built for another range whose keys this one now holds (a merge): its reads were
            // locked, and its prepare would be recorded, under that range's id, not this one's.
            .or(range.filter(|r| *r != gid).map(|_| first.clone()));
        let other_range = range.is_some_and(|r| r != gid);
        // A repeated request (the client retried after a lost answer) gets the logged answer.
        let st = &self.groups[&gid].state;
        match &role {
            CommitRole::Single => {}
            CommitRole::Prepare { coordinator } => {
                if *coordinator == gid {
                    return self.fail(now, origin, ApiError::Invalid("a coordinator does not prepare".into()));
                }
                if let Some(p) = st.prepared.get(&txn.id).filter(|_| !other_range) {
                    if p.writes != writes {
                        let e = format!(
                            "transaction {} is already prepared in range {gid} with other writes; a part of a commit is \
                             sent to one range only",
                            txn.id
                        );
                        return self.fail(now, origin, ApiError::Invalid(e));
                    }
                    let ts = p.prepare_ts;
                    return self.respond(now, origin, Response::Prepared { ts });
                }
            }
            CommitRole::Coordinate { participants, first_sent, .. } => {
                if participants.is_empty() || participants.contains(&gid) {
                    return self.fail(
                        now,
                        origin,
                        ApiError::Invalid("two-phase commit needs participants other than the coordinator".into()),
                    );
                }
                if let Some(d) = st.decisions.get(&txn.id) {
                    return match d.commit_ts {
                        Some(ts) => {
                            self.hold_until_after(now, ts, origin, Response::Written { ts });
                        }
                        None => self.fail(now, origin, ApiError::Aborted(format!("transaction {} aborted", txn.id))),
                    };
                }
                // Decisions are forgotten `decision_remembered` after they were made: a commit
                // first sent longer ago than the client may resend one cannot tell a decision
                // forgotten from none — deciding afresh could commit a blind part twice, or call
                // a committed transaction aborted (and its client would run it again).
                let limit = meridian_proto::limits::COMMIT_RESEND_MAX.min(self.opts.decision_remembered / 2);
                if let Some(t) = first_sent.filter(|t| now.earliest.duration_since(*t) > limit) {
                    let e = format!(
                        "transaction {}: this commit was first sent {:?} ago (by the client's clock), more than the {limit:?} \
                         a commit may be repeated; whether it committed can no longer be known here",
                        txn.id,
                        now.earliest.duration_since(t)
                    );
                    return self.fail(now, origin, ApiError::Ambiguous(e));
                }
            }
        }
        if let Some(k) = moved {
            // The client routed by a range that has since split or merged: the keys it read
            // here may now belong to another range (whose leader holds no locks for them), so
            // the transaction cannot commit as sent. Abort it here and tell the client the
            // range as it is now; the next attempt reads and routes afresh.
            let why = format!(
                "range {gid} no longer holds key {} (it is now {desc}: it split or merged since the transaction \
                 looked it up)",
                range::show_key(&k),
            );
            // A transaction prepared here (another part of it, sent to this range) keeps its locks:
            // only its coordinator may end it.
            let g = &self.groups[&gid];
            if !g.state.prepared.contains_key(&txn.id) && !g.txns.is_preparing(txn.id) {
                self.abort_txn(now, gid, txn.id, AbortReason::RangeChanged, &why);
            }
            // Only the coordinator's own range may log its decision: a coordinator's commit that
            // reached another range (the coordinator split, and the client routed by a key now
            // in the other half) must not decide an abort here, where the real coordinator may
            // have decided a commit.
            if !other_range && self.decide_abort_if_coordinator(now, gid, txn.id, &role, Some(origin)) {
                return; // answered from the log
            }
            return self.fail(now, origin, ApiError::RangeChanged { why, desc: Some(Box::new(desc)) });
        }
        if let Err(e) = self.txn_admit(now, gid, txn) {
            if self.decide_abort_if_coordinator(now, gid, txn.id, &role, Some(origin)) {
                return; // answered from the log
            }
            return self.fail(now, origin, e);
        }
        let commit = self.next_txn_req();
        let mut outstanding = 0;
        let mut wounded = Vec::new();
        for (k, _) in &writes {
            let req = self.next_txn_req();
            let t = &mut self.groups.get_mut(&gid).expect("checked").txns;
            match t.locks.acquire(txn, req, Span::key(k.clone()), Mode::Exclusive) {
                Ok(Acquired::Granted) => {}
                Ok(Acquired::Waiting { wounded: w }) => {
                    observe::lock_waited();
                    t.waits.insert(req, Wait::Commit { commit });
                    outstanding += 1;
                    wounded.extend(w);
                }
                Err(e) => {
                    // Locks taken so far stay until the abort or expiry releases them.
                    return self.refuse_commit(now, gid, origin, txn.id, &role, e);
                }
            }
        }
        let t = &mut self.groups.get_mut(&gid).expect("checked").txns;
        let since = local_of(now);
        let pending = PendingCommit {
            origin,
            txn,
            reads,
            read_epoch,
            writes,
            role,
            outstanding,
            since,
            arrived: now,
            awaiting_votes: false,
        };
        t.commits.insert(commit, pending);
        for w in wounded {
            self.abort_txn(now, gid, w, AbortReason::Wounded, "wounded by an older transaction (wound-wait)");
        }
        if outstanding == 0 {
            return self.finish_commit(now, gid, commit);
        }
        self.wound_prepared_blockers(now, gid, Some(txn.id));
    }

    /// Every exclusive lock of a commit is held: check the reads and propose the write (one
    /// range), the prepare record (participant) or — once every participant reported its
    /// prepare timestamp — the decision (coordinator).
    pub(super) fn finish_commit(&mut self, now: TTInterval, gid: GroupId, commit: u64) {
        let me = self.ident.node;
        let g = self.groups.get_mut(&gid).expect("caller checked");
        let Some(mut c) = g.txns.commits.remove(&commit) else { return };
        let epoch = g.replica.promised().round;
        let why = if c.read_epoch.is_some_and(|e| e != epoch) && !c.reads.is_empty() {
            Some("the range's leader changed since the transaction read (its read locks are gone)")
        } else if c.reads.iter().any(|s| !g.txns.locks.holds(c.txn.id, s, Mode::Shared)) {
            Some("a read lock was lost (wounded, expired or the leader changed)")
        } else {
            None
        };
        if let Some(why) = why {
            self.abort_txn(now, gid, c.txn.id, AbortReason::LockLost, why);
            if self.decide_abort_if_coordinator(now, gid, c.txn.id, &c.role, Some(c.origin)) {
                return; // answered from the log
            }
            return self.fail(now, c.origin, ApiError::Aborted(format!("transaction {}: {why}", c.txn.id)));
        }
        if let CommitRole::Coordinate { participants, .. } = &mut c.role {
            // Spanner §4.2.1: the coordinator commits at s ≥ every prepare timestamp, which it
            // hears from the participants themselves — never from the client. A participant
            // the client did not name but which reported a prepare joins the decision (it is
            // told the outcome, and s covers it too).
            let votes = g.txns.votes.get(&c.txn.id);
            let heard = |p: &GroupId| votes.is_some_and(|v| v.prepared.contains_key(p));
            if !participants.iter().all(heard) {
                c.awaiting_votes = true;
                g.txns.commits.insert(commit, c);
                return;
            }
            if let Some(v) = votes {
                for p in v.prepared.keys() {
                    if !participants.contains(p) && *p != gid {
                        participants.push(*p);
                    }
                }
            }
        }
        if c.writes.is_empty() && c.role == CommitRole::Single {
            // Read-only use of a read-write transaction: its reads were consistent under its
            // locks; release them (Spanner §4.2.1: locks are held until commit).
            let ts = g.state.last_write_ts;
            self.release_txn(now, gid, c.txn.id);
            return self.respond(now, c.origin, Response::Written { ts });
        }
        if let Err(e) = g.txns.locks.mark_prepared(c.txn.id) {
            return self.refuse_commit(now, gid, c.origin, c.txn.id, &c.role, e);
        }
        if g.replica.role() != Role::Leader {
            let e = self.not_leader(gid);
            self.release_txn(now, gid, c.txn.id);
            return self.fail(now, c.origin, e);
        }
        // Spanner §4.1.2 (start rule): s > TT.now().latest and above every timestamp this leader
        // assigned, inside its lease (§4.1.1). A prepare timestamp is above every timestamp the
        // participant assigned; a commit timestamp is at least every prepare timestamp (§4.2.1).
        let ts = match &c.role {
            CommitRole::Single => g.clock.assign_write(now, Timestamp::ZERO),
            CommitRole::Prepare { .. } => g.clock.assign_prepare(now, Timestamp::ZERO),
            CommitRole::Coordinate { .. } => {
                let prepares: Vec<Timestamp> =
                    g.txns.votes.get(&c.txn.id).map(|v| v.prepared.values().copied().collect()).unwrap_or_default();
                g.clock.assign_commit(c.arrived, &prepares)
            }
        };
        if !g.replica.can_assign(now, ts) {
            self.release_txn(now, gid, c.txn.id);
            self.decide_abort_if_coordinator(now, gid, c.txn.id, &c.role, None);
            return self.fail(
                now,
                c.origin,
                ApiError::Unavailable(format!("range {gid}: the leader has no lease covering {ts}")),
            );
        }
        let g = self.groups.get_mut(&gid).expect("checked");
        let from = (me, c.origin);
        let cmd = match c.role {
            CommitRole::Single => GroupCmd::Write { ts, writes: c.writes, from, txn: Some(c.txn.id) },
            CommitRole::Prepare { coordinator } => GroupCmd::Prepare {
                txn: c.txn,
                coordinator,
                prepare_ts: ts,
                writes: c.writes,
                locks: g.txns.locks.locks_of(c.txn.id),
                from,
            },
            CommitRole::Coordinate { participants, .. } => GroupCmd::Decide {
                txn: c.txn.id,
                commit_ts: Some(ts),
                participants,
                writes: c.writes,
                at: local_of(now),
                from,
            },
        };
        let step = match &cmd {
            GroupCmd::Prepare { .. } => "participant: proposing prepare",
            GroupCmd::Decide { .. } => "coordinator: proposing commit",
            _ => "single range: proposing commit",
        };
        tracing::debug!(txn_id = %c.txn.id, node = %me, range = %gid, %ts, "{step}");
        match propose(g, &cmd) {
            Ok(()) => {
                g.replica.note_assigned(ts);
                g.proposed.insert(c.origin, ts);
                self.dirty.insert(gid);
                if self.opts.unsafe_early_lock_release {
                    self.release_txn(now, gid, c.txn.id);
                }
            }
            Err(e) => {
                self.release_txn(now, gid, c.txn.id);
                self.fail(now, c.origin, e)
            }
        }
    }

    /// Releases `id`'s locks here (committed or aborted) and serves what that unblocks.
    pub(super) fn release_txn(&mut self, now: TTInterval, gid: GroupId, id: TxnId) {
        let Some(g) = self.groups.get_mut(&gid) else { return };
        let granted = g.txns.locks.release(id);
        self.on_granted(now, gid, granted);
    }

    /// Aborts `id` here: remembered as aborted, its parked requests failed, its locks released.
    pub(super) fn abort_txn(&mut self, now: TTInterval, gid: GroupId, id: TxnId, reason: AbortReason, why: &str) {
        let Some(g) = self.groups.get_mut(&gid) else { return };
        tracing::debug!(txn_id = %id, node = %self.ident.node, range = %gid, ?reason, why, "aborted here");
        observe::aborted(reason);
        g.txns.remember_aborted(id, local_of(now));
        g.txns.after_prepare.remove(&id);
        let mut failed = Vec::new();
        let commits: Vec<u64> = g.txns.commits.iter().filter(|(_, c)| c.txn.id == id).map(|(k, _)| *k).collect();
        let mut coordinating = Vec::new();
        for c in commits {
            let pc = g.txns.commits.remove(&c).expect("listed");
            match pc.role {
                CommitRole::Coordinate { .. } => coordinating.push((pc.origin, pc.role)),
                _ => failed.push(pc.origin),
            }
        }
        let gets: Vec<u64> = g
            .txns
            .waits
            .iter()
            .filter(|(_, w)| matches!(w, Wait::Get { txn, .. } if txn.id == id))
            .map(|(k, _)| *k)
            .collect();
        for r in gets {
            if let Some(Wait::Get { origin, .. }) = g.txns.waits.remove(&r) {
                failed.push(origin);
            }
        }
        // Commit waits of an aborted commit are dropped with it.
        let live: std::collections::BTreeSet<u64> = g.txns.commits.keys().copied().collect();
        g.txns.waits.retain(|_, w| !matches!(w, Wait::Commit { commit } if !live.contains(commit)));
        for o in failed {
            self.fail(now, o, ApiError::Aborted(format!("transaction {id}: {why}")));
        }
        self.release_txn(now, gid, id);
        for (origin, role) in coordinating {
            // A coordinator's client hears the logged decision, never an abort straight away.
            if !self.decide_abort_if_coordinator(now, gid, id, &role, Some(origin)) {
                self.fail(now, origin, ApiError::Aborted(format!("transaction {id}: {why}")));
            }
        }
    }

    /// The caller of `origin` stopped waiting: its deadline (gRPC's `grpc-timeout`) passed, or
    /// it went away. If the request waits for a lock here, the wait is given up and `true`
    /// returned; anything else goes on (see [`NodeCore::cancel_request`]).
    ///
    /// The lock table cannot withdraw one request, so the transaction is aborted in this range,
    /// which drops everything it holds or waits for here. That is always allowed: the waiter
    /// has prepared nothing (a prepared transaction asks for no locks), and under wound-wait
    /// (Spanner §4.2.1) it is the younger one, or a wounded one. A read is answered
    /// [`ApiError::DeadlineExceeded`] saying what it waited for; a commit waiting for its
    /// exclusive locks has proposed nothing, so it is answered as aborted (a coordinator's
    /// from its log, like every abort of a coordinator's commit).
    pub(super) fn cancel_lock_wait(&mut self, now: TTInterval, origin: Origin) -> bool {
        let found = self.groups.iter().find_map(|(gid, g)| {
            let get = g.txns.waits.iter().find_map(|(req, w)| match w {
                Wait::Get { origin: o, txn, since, .. } if *o == origin => Some((*gid, *txn, Some(*req), *since)),
                _ => None,
            });
            get.or_else(|| g.txns.commits.values().find(|c| c.origin == origin).map(|c| (*gid, c.txn, None, c.since)))
        });
        let Some((gid, txn, get, since)) = found else { return false };
        let waited = local_of(now).duration_since(since);
        let g = self.groups.get_mut(&gid).expect("found above");
        let blocked = if get.is_none() && g.txns.commit_awaiting_votes(txn.id).is_some() {
            "its participants to report their prepare timestamps (Spanner §4.2.1)".to_string()
        } else {
            g.txns.blocked_on(txn, get)
        };
        match get {
            Some(req) => {
                g.txns.waits.remove(&req);
                let what = format!(
                    "waited {} for {blocked}; transaction {} is aborted in range {gid}, retry it",
                    show_ms(waited),
                    txn.id
                );
                self.fail(now, origin, ApiError::DeadlineExceeded(what));
                self.abort_txn(now, gid, txn.id, AbortReason::Deadline, "its read's deadline passed in a lock wait");
            }
            None => {
                let why = format!("the commit's deadline passed after waiting {} for {blocked}", show_ms(waited));
                self.abort_txn(now, gid, txn.id, AbortReason::Deadline, &why);
            }
        }
        true
    }

    /// Serves lock requests the lock table granted.
    fn on_granted(&mut self, now: TTInterval, gid: GroupId, granted: Vec<(TxnId, u64)>) {
        for (_, req) in granted {
            let Some(g) = self.groups.get_mut(&gid) else { return };
            match g.txns.waits.remove(&req) {
                Some(Wait::Get { origin, read, .. }) => {
                    if g.serves(now) {
                        self.answer_txn_read(now, gid, origin, read);
                    } else {
                        let e = self.read_refusal(gid);
                        self.fail(now, origin, e);
                    }
                }
                Some(Wait::Commit { commit }) => {
                    let done = g.txns.commits.get_mut(&commit).map(|c| {
                        c.outstanding -= 1;
                        c.outstanding == 0
                    });
                    if done == Some(true) {
                        self.finish_commit(now, gid, commit);
                    }
                }
                None => {}
            }
        }
    }

    /// The range's leader stepped down: its locks are gone (a new leader knows none), so every
    /// parked request and every transaction holding locks here is aborted.
    pub(super) fn txns_lost_leadership(&mut self, now: TTInterval, gid: GroupId) {
        let Some(g) = self.groups.get_mut(&gid) else { return };
        let t = std::mem::take(&mut g.txns);
        // Prepared transactions survive in the log (the new leader restores their locks).
        for _ in t.locks.txn_ids().filter(|id| !t.locks.txn(*id).is_some_and(|i| i.prepared)) {
            observe::aborted(AbortReason::LeaderChange);
        }
        for (_, w) in t.waits {
            if let Wait::Get { origin, .. } = w {
                self.fail(now, origin, ApiError::Aborted(format!("range {gid} changed leader; its locks are gone")));
            }
        }
        for (_, c) in t.commits {
            let e = match c.role {
                // Only the log may say a coordinator's transaction aborted: ask the new leader.
                CommitRole::Coordinate { .. } => ApiError::Unavailable(format!("range {gid} changed leader; retry")),
                _ => ApiError::Aborted(format!("range {gid} changed leader; its locks are gone")),
            };
            self.fail(now, c.origin, e);
        }
    }

    /// Housekeeping: abort transactions idle past [`TXN_IDLE_TIMEOUT`], forget old aborts.
    pub(super) fn expire_txns(&mut self, now: TTInterval) {
        let local = local_of(now);
        let gids: Vec<GroupId> = self
            .groups
            .iter()
            .filter(|(_, g)| !g.txns.is_idle() || !g.txns.aborted.is_empty())
            .map(|(id, _)| *id)
            .collect();
        for gid in gids {
            let g = self.groups.get_mut(&gid).expect("listed");
            g.txns.aborted.retain(|_, at| local < at.saturating_add(ABORTED_TTL));
            let expired = g.txns.locks.expired(local, TXN_IDLE_TIMEOUT);
            for id in expired {
                self.abort_txn(now, gid, id, AbortReason::Idle, "idle too long; its client is gone");
            }
        }
    }

    fn next_txn_req(&mut self) -> u64 {
        self.txn_req += 1;
        self.txn_req
    }
}

/// `end` clipped to `desc` (empty: the range's end).
pub(super) fn clip_end(desc: &meridian_shard::range::RangeDescriptor, end: Vec<u8>) -> Vec<u8> {
    match (end.is_empty(), desc.end.is_empty()) {
        (true, _) => desc.end.clone(),
        (false, true) => end,
        (false, false) => end.min(desc.end.clone()),
    }
}
