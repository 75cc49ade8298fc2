//! # The lock table: two-phase locking with wound-wait
//!
//! Every group leader keeps one [`LockTable`] for the keys of its range (Spanner §2.1: "at every
//! replica that is a leader, each spanserver implements a lock table … The lock table contains
//! the state for two-phase locking: it maps ranges of keys to lock states"). Read-write transactions
//! take **shared** locks for their reads as they go and **exclusive** locks for their buffered
//! writes at commit (prepare) time, and hold everything until the outcome is applied (strict
//! two-phase locking). Read-only transactions and snapshot reads never come here (§4.1.4).
//!
//! ## Locks
//!
//! A lock covers a [`Span`] — a point key or a range `[start, end)` — in a [`Mode`]. Two locks
//! **conflict** when they belong to different transactions, their spans overlap, and at least one
//! is exclusive. A transaction re-acquiring a lock it holds is granted at once; asking for
//! `Exclusive` on a span it holds `Shared` is an **upgrade**, which waits like any other request
//! for the *other* readers to go.
//!
//! ## Wound-wait (§4.2.1)
//!
//! Priority is age ([`TxnMeta`]'s order: older start, then smaller id). When a request conflicts
//! with a lock held by another transaction `H`:
//!
//! ```text
//!   requester older than H, H not prepared  →  WOUND H (reported; the caller aborts it), wait
//!   requester older than H, H prepared      →  wait   (a prepared txn may already be committed
//!                                                      at its coordinator: it cannot abort)
//!   requester younger than H                →  wait
//! ```
//!
//! A wounded transaction keeps its locks until the caller [`release`](LockTable::release)s it
//! (the abort is the caller's: it replies "aborted, retry" to the client); meanwhile it may not
//! acquire or prepare ([`Error::Wounded`]). Preparing first protects a transaction: whichever of
//! "wound" and [`mark_prepared`](LockTable::mark_prepared) comes first wins, so the caller must
//! mark a transaction prepared *before* it proposes the prepare record (or the single-group
//! commit record) to Paxos.
//!
//! ## The wait queue
//!
//! All waiting requests form one queue ordered by **priority, then arrival** (FIFO among the
//! requests of one transaction). The grant rule, applied both to a new request and to every
//! waiter whenever locks are released:
//!
//! > a request is granted iff no lock held by another transaction conflicts with it, and no
//! > conflicting request of another transaction is queued ahead of it (i.e. by an older
//! > transaction).
//!
//! Requests of a wounded transaction are never granted (it is about to abort); they keep their
//! place in the queue until its release.
//!
//! So an old transaction is never overtaken by younger ones that arrive later (no starvation of
//! old transactions: a stream of young readers cannot hold off an old writer), and a young one
//! never blocks an old one merely by having queued first. Grants on release are returned in
//! queue order.
//!
//! ## Why no deadlock can form
//!
//! Draw an edge `T → U` when a request of `T` is blocked by a lock `U` holds or by a request of
//! `U` queued ahead of it. Every edge goes
//! - to an **older** transaction (a younger holder was wounded when the older request arrived,
//!   and a younger request cannot be granted or queued ahead of an older conflicting one), or
//! - to a **wounded** one, which the caller is aborting and which waits for nothing of ours, or
//! - to a **prepared** one, which has no outgoing edges: it holds all its locks and asks for no
//!   more ([`Error::Prepared`]).
//!
//! Priority is a total order, so edges of the first kind cannot close a cycle, and the other two
//! end at sinks: the wait-for graph at one leader is acyclic. The property test in
//! `locks/tests.rs` checks exactly this after every step of random schedules.
//!
//! Across groups a prepared transaction is *not* a sink: prepared at group B, it may still wait
//! at group A (its prepare or its coordinator's commit queued there). An older transaction
//! blocked at B by it, and holding at A the lock it waits for, closes a cycle no leader can break
//! by wounding locally. Wound-wait still applies, through the only party that may abort a
//! prepared transaction: its coordinator. [`prepared_blockers`](LockTable::prepared_blockers)
//! names the younger prepared holders that block an older request; the caller asks their
//! coordinators to abort them unless they already decided (a decided transaction waits for
//! nothing, so the edge ends at a sink again). Every edge that survives points to an older
//! transaction or to a sink, so no cycle lasts across groups either.
//!
//! ## Keepalives
//!
//! Clients keep transactions alive; the leader [`touch`](LockTable::touch)es a transaction on
//! every request or keepalive and periodically aborts those [`expired`](LockTable::expired) —
//! idle longer than a timeout and not prepared — so an abandoned transaction cannot hold locks
//! for ever (Spanner §4.2.1: "while a client transaction remains open, it sends keepalive
//! messages to prevent participant leaders from timing out its transaction"). A transaction first seen by `acquire` counts as active
//! from the first sweep after it arrived.
//!
//! ## Leader changes
//!
//! Only leaders have lock tables; a new leader starts empty and, before it grants anything,
//! [`restore`](LockTable::restore)s the locks of every prepared-but-undecided transaction from
//! its prepare record (DESIGN §6.4). Locks of unprepared transactions are lost with the old
//! leader, which is why the caller checks at prepare time that the transaction still
//! [`holds`](LockTable::holds) the shared locks of its reads.
//!
//! ## Data structure and bounds
//!
//! Held locks live in an ordered index: point locks in a `BTreeMap` by key (a point conflict
//! check is one lookup; a range check one ordered scan of the keys inside it), range locks in a
//! second map ordered by start (expected to be few: scans only ranges starting at or before the
//! key). Waiters live in a `BTreeMap` keyed by (priority, arrival). Nothing iterates a hash map,
//! so equal inputs give equal outputs. Limits: [`LOCKS_PER_TXN_MAX`] locks and requests per
//! transaction, [`WAITERS_MAX`] waiting requests, [`TXNS_MAX`] transactions.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::time::Duration;

use meridian_truetime::Timestamp;

use crate::{Error, Result, Span, TxnId, TxnMeta};

/// Most locks (held plus waiting requests) one transaction may have at one leader. Matches the
/// classic Cloud Spanner limit of 20,000 mutations per commit.
pub const LOCKS_PER_TXN_MAX: usize = 20_000;
/// Most lock requests that may wait at one leader at once.
pub const WAITERS_MAX: usize = 10_000;
/// Most transactions one lock table tracks at once.
pub const TXNS_MAX: usize = 100_000;

const _: () = assert!(LOCKS_PER_TXN_MAX >= 1 && WAITERS_MAX >= 1 && TXNS_MAX >= 1, "every limit admits something");

/// A lock mode. `Shared < Exclusive`: a stronger mode covers a weaker one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum Mode {
    /// For reads: compatible with other shared locks.
    Shared,
    /// For writes: compatible with nothing of another transaction.
    Exclusive,
}

impl Mode {
    /// Whether locks of two different transactions in these modes on overlapping spans conflict.
    pub fn conflicts_with(self, other: Mode) -> bool {
        self == Mode::Exclusive || other == Mode::Exclusive
    }
}

/// Outcome of [`LockTable::acquire`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acquired {
    /// The lock is held now.
    Granted,
    /// The request waits; a later [`LockTable::release`] reports its grant. `wounded` lists the
    /// younger, unprepared holders this request wounded (each reported once): the caller must
    /// abort and release them.
    Waiting {
        /// Transactions to abort, in id order.
        wounded: Vec<TxnId>,
    },
}

/// The lock table's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most locks plus waiting requests per transaction.
    pub locks_per_txn_max: usize,
    /// Most waiting requests in the table.
    pub waiters_max: usize,
    /// Most transactions in the table.
    pub txns_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { locks_per_txn_max: LOCKS_PER_TXN_MAX, waiters_max: WAITERS_MAX, txns_max: TXNS_MAX }
    }
}

/// What the table knows about one transaction (for status pages and tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnInfo {
    /// Identity and priority.
    pub meta: TxnMeta,
    /// Prepared: cannot be wounded, takes no new locks, never expires.
    pub prepared: bool,
    /// Wounded by an older transaction; the caller is aborting it.
    pub wounded: bool,
    /// Last keepalive or request, if any sweep or touch has seen it.
    pub last_active: Option<Timestamp>,
    /// Locks held.
    pub locks: usize,
    /// Requests waiting.
    pub waits: usize,
}

/// One waiting request (for status pages and tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitInfo {
    /// The waiting transaction.
    pub txn: TxnMeta,
    /// The caller's request id.
    pub req: u64,
    /// What it waits for.
    pub span: Span,
    /// In which mode.
    pub mode: Mode,
}

/// Per-leader lock table: strict 2PL with wound-wait (see the module essay).
#[derive(Debug, Default)]
pub struct LockTable {
    limits: Limits,
    txns: BTreeMap<TxnId, TxnState>,
    held: SpanIndex,
    queue: BTreeMap<WaitKey, Waiter>,
    next_seq: u64,
}

#[derive(Debug)]
struct TxnState {
    meta: TxnMeta,
    prepared: bool,
    wounded: bool,
    last_active: Option<Timestamp>,
    held: BTreeMap<Span, Mode>,
    waits: BTreeMap<u64, WaitKey>,
}

impl TxnState {
    fn new(meta: TxnMeta) -> Self {
        TxnState {
            meta,
            prepared: false,
            wounded: false,
            last_active: None,
            held: BTreeMap::new(),
            waits: BTreeMap::new(),
        }
    }
}

/// Queue position: priority (older first), then arrival.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct WaitKey {
    txn: TxnMeta,
    seq: u64,
}

#[derive(Debug)]
struct Waiter {
    req: u64,
    span: Span,
    mode: Mode,
}

impl LockTable {
    /// An empty table with the default limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty table with the given limits.
    pub fn with_limits(limits: Limits) -> Self {
        assert!(
            limits.locks_per_txn_max >= 1 && limits.waiters_max >= 1 && limits.txns_max >= 1,
            "lock table limits must admit at least one lock, waiter and transaction: {limits:?}"
        );
        LockTable { limits, ..Self::default() }
    }

    /// Asks for `span` in `mode` on behalf of `txn`; `req` is the caller's id for this request,
    /// echoed by [`release`](Self::release) when a waiting request is granted later.
    ///
    /// Re-acquiring a held lock (same span, same or weaker mode) is granted at once, also for a
    /// prepared transaction; repeating a waiting `(txn, req)` with the same span and mode is
    /// idempotent (`Waiting` with nothing wounded); `req` must not be reused for another lock
    /// while it waits. A transaction's priority is fixed when the table first sees it: a later
    /// request carrying a different start timestamp is ranked by the first one.
    ///
    /// # Errors
    /// [`Error::Wounded`], [`Error::Prepared`], [`Error::EmptyRange`], [`Error::TooLarge`],
    /// [`Error::TooManyWaiters`], [`Error::TooManyTxns`]. An error changes nothing.
    pub fn acquire(&mut self, txn: TxnMeta, req: u64, span: Span, mode: Mode) -> Result<Acquired> {
        if let Span::Range { start, end } = &span {
            Span::range(start.clone(), end.clone())?;
        }
        let txn = self.txns.get(&txn.id).map_or(txn, |st| st.meta);
        match self.txns.get(&txn.id) {
            Some(st) => {
                if st.wounded {
                    return Err(Error::Wounded { txn: txn.id });
                }
                if st.held.get(&span).is_some_and(|&m| m >= mode) {
                    return Ok(Acquired::Granted);
                }
                if st.prepared {
                    return Err(Error::Prepared { txn: txn.id });
                }
                if let Some(key) = st.waits.get(&req) {
                    let w = &self.queue[key];
                    assert!(
                        w.span == span && w.mode == mode,
                        "request {req} of {} reused for a different lock ({} {:?} vs {span} {mode:?})",
                        txn.id,
                        w.span,
                        w.mode
                    );
                    return Ok(Acquired::Waiting { wounded: Vec::new() });
                }
                if st.held.len() + st.waits.len() >= self.limits.locks_per_txn_max {
                    return Err(Error::TooLarge { txn: txn.id, max: self.limits.locks_per_txn_max });
                }
            }
            None if self.txns.len() >= self.limits.txns_max => {
                return Err(Error::TooManyTxns { max: self.limits.txns_max });
            }
            None => {}
        }

        let holders = self.held.conflicts(&span, mode, txn.id);
        if holders.is_empty() && !self.queued_ahead(&span, mode, txn) {
            self.txns.entry(txn.id).or_insert_with(|| TxnState::new(txn));
            self.grant(txn.id, span, mode);
            return Ok(Acquired::Granted);
        }
        if self.queue.len() >= self.limits.waiters_max {
            return Err(Error::TooManyWaiters { max: self.limits.waiters_max });
        }

        // Spanner §4.2.1 wound-wait: an older requester wounds younger holders that have not
        // prepared; in every case the requester waits.
        let mut wounded = Vec::new();
        for h in holders {
            let holder = self.txns.get_mut(&h).expect("every holder in the index has a transaction entry");
            if txn.is_older_than(&holder.meta) && !holder.prepared && !holder.wounded {
                holder.wounded = true;
                wounded.push(h);
            }
        }
        let key = WaitKey { txn, seq: self.next_seq };
        self.next_seq += 1;
        self.queue.insert(key, Waiter { req, span, mode });
        self.txns.entry(txn.id).or_insert_with(|| TxnState::new(txn)).waits.insert(req, key);
        Ok(Acquired::Waiting { wounded })
    }

    /// Drops every lock and waiting request of `txn` (commit applied, or abort) and forgets it.
    /// Returns the waiting requests now granted, in queue order (priority, then arrival).
    pub fn release(&mut self, txn: TxnId) -> Vec<(TxnId, u64)> {
        let Some(st) = self.txns.remove(&txn) else { return Vec::new() };
        for span in st.held.keys() {
            self.held.remove(txn, span);
        }
        for key in st.waits.values() {
            self.queue.remove(key).expect("a transaction's waits are in the queue");
        }
        self.regrant()
    }

    /// Marks `txn` prepared: from now on it cannot be wounded, takes no new locks and never
    /// expires. Call it *before* proposing the prepare (or single-group commit) record.
    ///
    /// # Errors
    /// [`Error::Wounded`] if an older transaction wounded it first (it must abort instead),
    /// [`Error::StillWaiting`] while any of its requests waits, [`Error::Unknown`] if the table
    /// does not know it (its locks were released: aborted, expired, or the leader changed).
    pub fn mark_prepared(&mut self, txn: TxnId) -> Result<()> {
        let st = self.txns.get_mut(&txn).ok_or(Error::Unknown { txn })?;
        if st.wounded {
            return Err(Error::Wounded { txn });
        }
        if !st.waits.is_empty() {
            return Err(Error::StillWaiting { txn });
        }
        st.prepared = true;
        Ok(())
    }

    /// Re-creates, on a new leader, the locks of a transaction that prepared under an earlier
    /// leader, marked prepared (Spanner §4.2.1; DESIGN §6.4 "a new leader rebuilds its lock
    /// table from prepared records"). Idempotent. Limits do not apply: the record is already
    /// chosen and cannot be refused.
    ///
    /// # Panics
    /// If a restored lock conflicts with a lock of another transaction: prepared transactions
    /// held their locks together under the old leader, so a conflict means the caller granted
    /// new locks before restoring every prepared record.
    pub fn restore(&mut self, txn: TxnMeta, spans: Vec<(Span, Mode)>) {
        let st = self.txns.entry(txn.id).or_insert_with(|| TxnState::new(txn));
        assert_eq!(st.meta, txn, "a restored transaction keeps its start timestamp");
        assert!(st.waits.is_empty(), "a prepared transaction {} has no waiting requests", txn.id);
        assert!(!st.wounded, "a prepared transaction {} cannot have been wounded", txn.id);
        st.prepared = true;
        for (span, mode) in spans {
            let conflicts = self.held.conflicts(&span, mode, txn.id);
            assert!(
                conflicts.is_empty(),
                "restore {} {span} {mode:?}: conflicts with {conflicts:?}; restore every prepared record \
                 before granting new locks",
                txn.id
            );
            self.grant(txn.id, span, mode);
        }
    }

    /// Records activity of `txn` at `now` (a request or keepalive). Returns whether the table
    /// knows the transaction; a keepalive for an unknown one tells the caller it was aborted.
    pub fn touch(&mut self, txn: TxnId, now: Timestamp) -> bool {
        match self.txns.get_mut(&txn) {
            Some(st) => {
                st.last_active = Some(st.last_active.map_or(now, |t| t.max(now)));
                true
            }
            None => false,
        }
    }

    /// Transactions, not prepared, idle for longer than `timeout` at `now`, in id order; the
    /// caller aborts and releases them. A transaction not yet seen by a touch or an earlier
    /// sweep starts its idle time now.
    pub fn expired(&mut self, now: Timestamp, timeout: Duration) -> Vec<TxnId> {
        let mut out = Vec::new();
        for (id, st) in self.txns.iter_mut().filter(|(_, st)| !st.prepared) {
            match st.last_active {
                None => st.last_active = Some(now),
                Some(t) if now.duration_since(t) > timeout => out.push(*id),
                Some(_) => {}
            }
        }
        out
    }

    /// Whether `txn` holds exactly `span` in `mode` or stronger. Before preparing, the caller
    /// checks this for every span the transaction read under a shared lock.
    pub fn holds(&self, txn: TxnId, span: &Span, mode: Mode) -> bool {
        self.txns.get(&txn).and_then(|st| st.held.get(span)).is_some_and(|&m| m >= mode)
    }

    /// The locks `txn` holds, in span order: what its prepare record carries for
    /// [`restore`](Self::restore).
    pub fn locks_of(&self, txn: TxnId) -> Vec<(Span, Mode)> {
        self.txns.get(&txn).map(|st| st.held.iter().map(|(s, m)| (s.clone(), *m)).collect()).unwrap_or_default()
    }

    /// What the table knows about `txn`.
    pub fn txn(&self, txn: TxnId) -> Option<TxnInfo> {
        self.txns.get(&txn).map(|st| TxnInfo {
            meta: st.meta,
            prepared: st.prepared,
            wounded: st.wounded,
            last_active: st.last_active,
            locks: st.held.len(),
            waits: st.waits.len(),
        })
    }

    /// The prepared transactions that hold a lock blocking a waiting request of an *older*
    /// transaction (of `txn` only, or of every waiter), in id order: wound-wait would wound
    /// them, but a prepared transaction can only be aborted by its coordinator (see the essay).
    pub fn prepared_blockers(&self, txn: Option<TxnId>) -> BTreeSet<TxnId> {
        let mut out = BTreeSet::new();
        let waits: Vec<&WaitKey> = match txn {
            Some(t) => self.txns.get(&t).map(|st| st.waits.values().collect()).unwrap_or_default(),
            None => self.queue.keys().collect(),
        };
        for key in waits {
            let w = &self.queue[key];
            for h in self.held.conflicts(&w.span, w.mode, key.txn.id) {
                let holder = &self.txns[&h];
                if holder.prepared && key.txn.is_older_than(&holder.meta) {
                    out.insert(h);
                }
            }
        }
        out
    }

    /// Every transaction the table knows, in id order.
    pub fn txn_ids(&self) -> impl Iterator<Item = TxnId> + '_ {
        self.txns.keys().copied()
    }

    /// Every waiting request, in queue order (priority, then arrival).
    pub fn waiting(&self) -> impl Iterator<Item = WaitInfo> + '_ {
        self.queue.iter().map(|(k, w)| WaitInfo { txn: k.txn, req: w.req, span: w.span.clone(), mode: w.mode })
    }

    /// Number of transactions, held locks and waiting requests (for status pages).
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.txns.len(), self.txns.values().map(|st| st.held.len()).sum(), self.queue.len())
    }

    /// Whether the table knows no transaction.
    pub fn is_empty(&self) -> bool {
        self.txns.is_empty()
    }

    /// Whether a conflicting request of another, older transaction is queued.
    fn queued_ahead(&self, span: &Span, mode: Mode, txn: TxnMeta) -> bool {
        self.queue
            .iter()
            .take_while(|(k, _)| k.txn.is_older_than(&txn))
            .any(|(_, w)| w.mode.conflicts_with(mode) && w.span.overlaps(span))
    }

    fn grant(&mut self, txn: TxnId, span: Span, mode: Mode) {
        self.held.insert(txn, &span, mode);
        let st = self.txns.get_mut(&txn).expect("granting to a known transaction");
        let m = st.held.entry(span).or_insert(mode);
        *m = (*m).max(mode);
    }

    /// One pass over the queue in order, granting every request that the grant rule allows.
    /// A grant only adds held locks, so a request skipped earlier in the pass cannot become
    /// grantable later in it; `ahead` indexes the requests still waiting, already passed.
    fn regrant(&mut self) -> Vec<(TxnId, u64)> {
        let mut granted = Vec::new();
        let mut ahead = SpanIndex::default();
        let keys: Vec<WaitKey> = self.queue.keys().copied().collect();
        for key in keys {
            let w = &self.queue[&key];
            let id = key.txn.id;
            let wounded = self.txns[&id].wounded;
            if !wounded
                && self.held.conflicts(&w.span, w.mode, id).is_empty()
                && ahead.conflicts(&w.span, w.mode, id).is_empty()
            {
                let w = self.queue.remove(&key).expect("key taken from the queue");
                let st = self.txns.get_mut(&id).expect("a waiter's transaction is known");
                st.waits.remove(&w.req).expect("a waiter is listed by its transaction");
                self.grant(id, w.span, w.mode);
                granted.push((id, w.req));
            } else {
                ahead.insert(id, &w.span, w.mode);
            }
        }
        granted
    }
}

/// Spans by (span, transaction) with the strongest mode, ordered for conflict lookups.
#[derive(Debug, Default)]
struct SpanIndex {
    points: BTreeMap<Vec<u8>, BTreeMap<TxnId, Mode>>,
    /// Keyed by (start, end, txn); ordered by start, so a lookup scans only ranges that start at
    /// or before the end of what it looks for.
    ranges: BTreeMap<(Vec<u8>, Vec<u8>, TxnId), Mode>,
}

impl SpanIndex {
    fn insert(&mut self, txn: TxnId, span: &Span, mode: Mode) {
        let m = match span {
            Span::Key(k) => self.points.entry(k.clone()).or_default().entry(txn).or_insert(mode),
            Span::Range { start, end } => self.ranges.entry((start.clone(), end.clone(), txn)).or_insert(mode),
        };
        *m = (*m).max(mode);
    }

    fn remove(&mut self, txn: TxnId, span: &Span) {
        match span {
            Span::Key(k) => {
                let holders = self.points.get_mut(k).expect("removing an indexed point lock");
                holders.remove(&txn).expect("removing an indexed point lock");
                if holders.is_empty() {
                    self.points.remove(k);
                }
            }
            Span::Range { start, end } => {
                self.ranges.remove(&(start.clone(), end.clone(), txn)).expect("removing an indexed range lock");
            }
        }
    }

    /// Transactions other than `me` with an entry conflicting with `span` in `mode`.
    fn conflicts(&self, span: &Span, mode: Mode, me: TxnId) -> BTreeSet<TxnId> {
        let mut out = BTreeSet::new();
        let mut add = |txn: TxnId, m: Mode| {
            if txn != me && m.conflicts_with(mode) {
                out.insert(txn);
            }
        };
        let (lo, hi): (&[u8], Bound<&[u8]>) = match span {
            Span::Key(k) => (k, Bound::Included(k)),
            Span::Range { start, end } if end.is_empty() => (start, Bound::Unbounded),
            Span::Range { start, end } => (start, Bound::Excluded(end)),
        };
        for (_, holders) in self.points.range::<[u8], _>((Bound::Included(lo), hi)) {
            holders.iter().for_each(|(t, m)| add(*t, *m));
        }
        let starts_before_hi = |s: &[u8]| match hi {
            Bound::Included(h) => s <= h,
            Bound::Excluded(h) => s < h,
            Bound::Unbounded => true,
        };
        for ((s, e, t), m) in self.ranges.iter().take_while(|((s, _, _), _)| starts_before_hi(s)) {
            if e.is_empty() || lo < e.as_slice() {
                debug_assert!(span.overlaps(&Span::Range { start: s.clone(), end: e.clone() }));
                add(*t, *m);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
