//! # Safe time
//!
//! Every replica (leader or follower) can serve a read at timestamp `t` once it is sure no write
//! at or below `t` can still appear in its data — its **safe time** (Spanner §4.1.3):
//!
//! ```text
//!   t_safe(span) = min( t_paxos_safe,  min over prepared txns overlapping span of (p - 1) )
//!                       ───────────    ─────────────────────────────────────────────────
//!                       highest applied  a prepared txn may still commit at any s ≥ p;
//!                       Paxos write, or  only reads of keys it writes must wait for it
//!                       a MinNextTS promise
//! ```
//!
//! - `t_paxos_safe`: Paxos writes are applied in timestamp order, so once the write at `ts` is
//!   applied no write at or below `ts` can follow; an idle leader advances it with `MinNextTS`
//!   entries (§4.1.3), for which the caller passes `n - 1` to [`SafeTime::advance_paxos`].
//! - `t_tm_safe`: a transaction prepared at `p` and not yet resolved may commit at any `s ≥ p`.
//!   Spanner takes the minimum over *all* prepared transactions of the group; we take it only
//!   over those whose write spans **overlap** the read, so one prepared transaction does not
//!   stall reads of unrelated keys (DESIGN §6, issue 5). This is sound because its outcome only
//!   ever writes inside its spans; the prepare record lists them.
//!
//! `advance_paxos` ignores values below the current one: the outcome record of a prepared
//! transaction carries its commit timestamp `s`, which may be below later unrelated writes
//! already applied; the prepared spans held `t_safe` of its keys back until then.
//!
//! Read timestamps (§4.1.4): a read-only transaction over several groups takes
//! `s_read = TT.now().latest`. Over one group, [`s_read_single_group`] can do better: when no
//! prepared transaction overlaps the read, `LastTS()` (the last committed write of the group)
//! returns the same data as `TT.now().latest` — nothing committed since, and nothing that could
//! still commit touches those keys — so the read need not wait for safe time. Caveat: the
//! returned timestamp may be below that of a transaction already acknowledged on *other* keys
//! of the group; a client must not reuse it as a snapshot timestamp for keys outside the read.

use std::collections::BTreeMap;

use meridian_truetime::{TTInterval, Timestamp};

use crate::{Span, TxnId};

/// Safe-time tracker of one group replica, fed from applied Paxos entries.
#[derive(Clone, Debug, Default)]
pub struct SafeTime {
    paxos_safe: Timestamp,
    prepared: BTreeMap<TxnId, Prepared>,
}

#[derive(Clone, Debug)]
struct Prepared {
    spans: Vec<Span>,
    prepare_ts: Timestamp,
}

impl SafeTime {
    /// A tracker that has applied nothing: nothing above `Timestamp::ZERO` is safe.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every write at or below `ts` has been applied and none can follow (an applied Paxos write
    /// at `ts`, or a `MinNextTS(ts + 1)` promise). Lower values are ignored.
    pub fn advance_paxos(&mut self, ts: Timestamp) {
        self.paxos_safe = self.paxos_safe.max(ts);
    }

    /// A prepare record of `txn` at `prepare_ts` covering `spans` (its writes) was applied.
    /// Idempotent for a replayed record.
    ///
    /// # Panics
    /// If `txn` is already prepared with a different timestamp: one transaction prepares once
    /// per group.
    pub fn prepare(&mut self, txn: TxnId, spans: Vec<Span>, prepare_ts: Timestamp) {
        if let Some(p) = self.prepared.get(&txn) {
            assert_eq!(p.prepare_ts, prepare_ts, "transaction {txn} prepared twice with different timestamps");
            return;
        }
        self.prepared.insert(txn, Prepared { spans, prepare_ts });
    }

    /// The outcome (commit or abort) of `txn` was applied; it no longer holds safe time back.
    /// The caller advances `t_paxos_safe` for the outcome entry itself.
    pub fn resolve(&mut self, txn: TxnId) {
        self.prepared.remove(&txn);
    }

    /// `t_paxos_safe`.
    pub fn paxos_safe(&self) -> Timestamp {
        self.paxos_safe
    }

    /// `t_tm_safe` for `span`: one below the smallest prepare timestamp among unresolved
    /// transactions whose spans overlap it, `Timestamp::MAX` if none.
    pub fn tm_safe(&self, span: &Span) -> Timestamp {
        self.overlapping(span).map(|p| p.prepare_ts.prev()).min().unwrap_or(Timestamp::MAX)
    }

    /// `t_safe(span) = min(t_paxos_safe, t_tm_safe(span))` (§4.1.3).
    pub fn t_safe(&self, span: &Span) -> Timestamp {
        self.paxos_safe.min(self.tm_safe(span))
    }

    /// Whether this replica may serve a read of `span` at `ts` now: `ts ≤ t_safe(span)`.
    pub fn can_serve(&self, span: &Span, ts: Timestamp) -> bool {
        ts <= self.t_safe(span)
    }

    /// Whether an unresolved prepared transaction overlaps `span` (input to
    /// [`s_read_single_group`]).
    pub fn has_prepared_overlapping(&self, span: &Span) -> bool {
        self.overlapping(span).next().is_some()
    }

    /// Unresolved prepared transactions, in id order, with their prepare timestamps.
    pub fn prepared(&self) -> impl Iterator<Item = (TxnId, Timestamp)> + '_ {
        self.prepared.iter().map(|(id, p)| (*id, p.prepare_ts))
    }

    fn overlapping<'a>(&'a self, span: &'a Span) -> impl Iterator<Item = &'a Prepared> + 'a {
        self.prepared.values().filter(move |p| p.spans.iter().any(|s| s.overlaps(span)))
    }
}

/// `s_read` of a single-group read-only transaction at its leader (§4.1.4): `LastTS()` (the
/// timestamp of the group's last committed write, `last_ts`) if no prepared transaction
/// overlaps the read, otherwise `TT.now().latest`.
pub fn s_read_single_group(now: TTInterval, last_ts: Timestamp, has_prepared_overlapping: bool) -> Timestamp {
    if has_prepared_overlapping { now.latest } else { last_ts }
}

/// `s_read` of a read-only transaction over several groups (§4.1.4): `TT.now().latest`.
pub fn s_read(now: TTInterval) -> Timestamp {
    now.latest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: u64) -> Timestamp {
        Timestamp::from_nanos(n)
    }
    fn k(s: &str) -> Span {
        Span::key(s)
    }
    fn r(a: &str, b: &str) -> Span {
        Span::range(a, b).expect("valid test range")
    }

    #[test]
    fn paxos_safe_only_grows() {
        let mut st = SafeTime::new();
        assert_eq!(st.t_safe(&k("a")), Timestamp::ZERO, "nothing applied: nothing safe");
        st.advance_paxos(t(100));
        st.advance_paxos(t(50)); // e.g. the outcome record of an older prepared txn
        assert_eq!(st.paxos_safe(), t(100));
        assert!(st.can_serve(&k("a"), t(100)));
        assert!(!st.can_serve(&k("a"), t(101)), "§4.1.3: a read above t_paxos_safe waits");
    }

    #[test]
    fn prepared_transaction_holds_back_only_overlapping_reads() {
        let mut st = SafeTime::new();
        st.advance_paxos(t(1000));
        st.prepare(TxnId(1), vec![k("b"), r("m", "p")], t(500));
        // Overlapping reads: t_safe = p - 1 (§4.1.3 t_tm_safe).
        assert_eq!(st.t_safe(&k("b")), t(499));
        assert!(st.can_serve(&k("b"), t(499)));
        assert!(!st.can_serve(&k("b"), t(500)), "the txn may commit at s = p");
        assert_eq!(st.t_safe(&k("n")), t(499), "a key inside a prepared range");
        assert_eq!(st.t_safe(&r("a", "c")), t(499), "a range read covering a prepared key");
        // Unrelated reads are not stalled (issue 5 item 4); Spanner's per-group rule would
        // give 499 here.
        assert_eq!(st.t_safe(&k("c")), t(1000));
        assert_eq!(st.t_safe(&r("c", "m")), t(1000), "touching but not overlapping [m, p)");
        assert!(st.has_prepared_overlapping(&k("b")));
        assert!(!st.has_prepared_overlapping(&k("c")));

        // Two prepared txns: the smaller prepare ts wins where both overlap.
        st.prepare(TxnId(2), vec![k("b")], t(300));
        assert_eq!(st.t_safe(&k("b")), t(299));
        assert_eq!(st.t_safe(&k("n")), t(499));
        st.prepare(TxnId(2), vec![k("b")], t(300)); // replayed record: idempotent

        st.resolve(TxnId(2));
        assert_eq!(st.t_safe(&k("b")), t(499));
        st.resolve(TxnId(1));
        st.advance_paxos(t(600)); // txn 1's commit record at s = 600 < 1000: ignored
        assert_eq!(st.t_safe(&k("b")), t(1000));
        assert_eq!(st.prepared().count(), 0);
    }

    #[test]
    fn t_safe_is_bounded_by_paxos_safe_even_without_prepared() {
        let mut st = SafeTime::new();
        st.advance_paxos(t(10));
        st.prepare(TxnId(1), vec![k("a")], t(500));
        assert_eq!(st.t_safe(&k("a")), t(10), "min(t_paxos_safe, t_tm_safe)");
    }

    #[test]
    #[should_panic(expected = "prepared twice")]
    fn preparing_twice_differently_is_a_bug() {
        let mut st = SafeTime::new();
        st.prepare(TxnId(1), vec![k("a")], t(5));
        st.prepare(TxnId(1), vec![k("a")], t(6));
    }

    #[test]
    fn single_group_read_timestamp() {
        let now = TTInterval::new(t(90), t(100));
        assert_eq!(s_read_single_group(now, t(40), false), t(40), "§4.1.4 LastTS() when nothing prepared overlaps");
        assert_eq!(s_read_single_group(now, t(40), true), t(100), "§4.1.4 TT.now().latest otherwise");
        assert_eq!(s_read(now), t(100));
    }
}
