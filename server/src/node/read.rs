//! Lock-free reads at a timestamp: read-only transactions and snapshot reads (Spanner §4.1.3,
//! §4.1.4).
//!
//! A replica may serve a read at `s` once its safe time has reached it:
//! `t_safe = min(t_paxos_safe, t_tm_safe)` where
//! - `t_paxos_safe` is the timestamp of the highest applied Paxos write: later writes in the log
//!   get larger timestamps (the leader assigns them increasing, a new leader above the old
//!   lease); at the leader itself every write is assigned here, so it is safe up to
//!   `TT.now().latest` once nothing it proposed at or below `s` is still unapplied;
//! - `t_tm_safe` is one below the smallest prepare timestamp of a transaction prepared here
//!   that may write the read's span: its commit timestamp may be as low as that. Prepared
//!   transactions elsewhere in the range do not hold the read back (tracked per key span).
//!
//! A read without a timestamp goes to the leader, which picks `s_read = TT.now().latest`
//! (§4.1.4's simple choice, which works across ranges; the client then reads every other range
//! at the same `s_read`). A read that cannot be served yet parks until an apply or a resolution
//! makes it safe, for at most [`READ_PARK_MAX`]; a follower whose safe time lags sends the
//! client to the leader instead. Reads below the GC horizon fail with a clear error.
//!
//! **A leader's read is a promise.** Once a leader served a read at `s`, no write may land at or
//! below `s` (§4.1.3): the leader raises its clock to `s` and counts `s` in `s_max`, so neither
//! it nor (after a hand-off, which waits for `TT.after(s_max)`, §4.1.1) its successor assigns
//! below it — also when `TT.now().latest` steps back, as a clock within ε may. A promise is
//! never more than 2ε (the width of `TT.now()`) ahead of the leader's clock: a read further in
//! the future waits until the clock is that close, up to [`FUTURE_READ_WAIT_MAX`], and beyond
//! that is refused. Splits and merges carry the bound to the range's new owner
//! (`RangeState::clock_floor`).
//!
//! **No one sees a commit before its commit wait ends** (§4.1.2): every read is answered only
//! once `TT.after` the newest version it returns (`NodeCore::respond_visible`).

use std::time::Duration;

use meridian_shard::GroupId;
use meridian_shard::paxos::Role;
use meridian_shard::range;
use meridian_truetime::{TTInterval, Timestamp};
use meridian_txn::Span;

use super::api::{self, ApiError, Response};
use super::cmd::{GroupCmd, Origin, PeerMsg};
use super::{NodeCore, local_of, propose};

/// Longest a read waits for safe time before it fails with a retryable error.
pub const READ_PARK_MAX: Duration = Duration::from_secs(5);
/// Most reads parked per range.
pub const PARKED_READS_MAX: usize = 10_000;
/// How often a follower asks its leader to close a timestamp for reads it could not serve.
pub const CLOSE_ASK_EVERY: Duration = Duration::from_millis(200);
/// Longest a read in the future of the leader's clock waits for it; one further ahead is
/// refused (a snapshot in the future is a mistake; serving it would push every later write of
/// the range that far ahead in commit wait).
pub const FUTURE_READ_WAIT_MAX: Duration = Duration::from_secs(1);

/// A read waiting for safe time.
pub(super) struct ParkedRead {
    origin: Origin,
    start: Vec<u8>,
    end: Option<Vec<u8>>,
    limit: u32,
    ts: Timestamp,
    deadline: Timestamp,
    /// Local time before which retrying is pointless (a read in the future waits for the clock).
    not_before: Timestamp,
}

/// Whether a read at `s` can be served now, and if not why.
enum Safe {
    Yes,
    /// Wait here (an apply or a resolution will make it safe).
    Park,
    /// Wait here until local time reaches this (a read in the near future).
    ParkUntil(Timestamp),
    /// Ask elsewhere.
    No(ApiError),
}

impl NodeCore {
    pub(super) fn serve_read(
        &mut self,
        now: TTInterval,
        origin: Origin,
        start: Vec<u8>,
        end: Option<Vec<u8>>,
        limit: u32,
        ts: Option<Timestamp>,
    ) {
        if let Err(e) = range::check_user_key(&start) {
            return self.fail(now, origin, ApiError::Invalid(e));
        }
        let Some(gid) = self.group_for_key(&start) else {
            return self.fail(
                now,
                origin,
                ApiError::KeyOutOfRange { key: start.clone(), desc: self.last_known_desc(&start).map(Box::new) },
            );
        };
        let g = &self.groups[&gid];
        let leader = g.serves(now);
        let s = match ts {
            Some(s) => s,
            None if leader => now.latest,
            None => return self.fail(now, origin, self.read_refusal(gid)),
        };
        let horizon = self.mvcc.gc_horizon();
        if s < horizon {
            return self.fail(
                now,
                origin,
                ApiError::Invalid(format!(
                    "read timestamp {s} is below the GC horizon {horizon}: versions that old are gone; \
                     read at a later timestamp"
                )),
            );
        }
        let desc = g.state.desc.clone();
        // Clip a scan to the range: the client continues in the next range itself.
        let end = end.map(|e| super::txn::clip_end(&desc, e));
        let span = match &end {
            None => Span::key(start.clone()),
            Some(e) => match Span::range(start.clone(), e.clone()) {
                Ok(sp) => sp,
                Err(_) => {
                    let read_ts = s;
                    return self.respond(
                        now,
                        origin,
                        Response::ReadAt { rows: Vec::new(), desc, truncated: false, read_ts, newest: Timestamp::ZERO },
                    );
                }
            },
        };
        let not_before = match self.read_safety(now, gid, &span, s, leader) {
            Safe::Yes => None,
            Safe::No(e) => return self.fail(now, origin, e),
            Safe::Park => Some(Timestamp::ZERO),
            Safe::ParkUntil(t) => Some(t),
        };
        if let Some(not_before) = not_before {
            {
                let g = self.groups.get_mut(&gid).expect("checked");
                if g.parked_reads.len() >= PARKED_READS_MAX {
                    return self.fail(
                        now,
                        origin,
                        ApiError::Unavailable(format!("range {gid}: too many waiting reads")),
                    );
                }
                let deadline = local_of(now).saturating_add(READ_PARK_MAX);
                g.parked_reads.push(ParkedRead { origin, start, end, limit, ts: s, deadline, not_before });
                return;
            }
        }
        let limit = limit.clamp(1, api::SCAN_ROWS_MAX) as usize;
        let rows = match &end {
            None => self.mvcc.get_version(&start, s).map(|v| match v {
                Some(v) => (v.value.map(|value| vec![(start.clone(), value)]).unwrap_or_default(), v.ts),
                None => (Vec::new(), Timestamp::ZERO),
            }),
            Some(e) => self.mvcc.scan_newest(&start, (!e.is_empty()).then_some(e.as_slice()), s, limit + 1),
        };
        match rows {
            Ok((mut rows, newest)) => {
                let truncated = rows.len() > limit;
                rows.truncate(limit);
                let answer = Response::ReadAt { rows, desc, truncated, read_ts: s, newest };
                self.respond_visible(now, origin, answer, newest);
            }
            Err(meridian_storage::Error::BelowGcHorizon { ts, horizon }) => self.fail(
                now,
                origin,
                ApiError::Invalid(format!("read timestamp {ts} is below the GC horizon {horizon}")),
            ),
            Err(e) => self.fail(now, origin, ApiError::Unavailable(format!("storage: {e}"))),
        }
    }

    /// `t_safe(span) ≥ s` at this replica (Spanner §4.1.3)?
    fn read_safety(&mut self, now: TTInterval, gid: GroupId, span: &Span, s: Timestamp, leader: bool) -> Safe {
        let g = self.groups.get_mut(&gid).expect("caller checked");
        // t_tm_safe: a transaction prepared at p ≤ s that may write the span may commit at ≤ s.
        let blocked =
            g.state.prepared.values().any(|p| p.prepare_ts <= s && p.writes.iter().any(|(k, _)| span.contains_key(k)));
        if let Some(e) = too_far_ahead(now, s) {
            return Safe::No(e);
        }
        if leader {
            if s > promise_bound(now) {
                // Served now, it would push every later write of the range past s: wait until
                // the clock is near enough (at most FUTURE_READ_WAIT_MAX, checked above).
                let wait = s.duration_since(promise_bound(now));
                return Safe::ParkUntil(local_of(now).saturating_add(wait));
            }
            // Later writes must get larger timestamps (Spanner §4.1.3), whatever the clock
            // does next, and a hand-off waits for TT.after(s) (§4.1.1).
            if !g.replica.can_assign(now, s) {
                return Safe::No(ApiError::Unavailable(format!(
                    "range {gid}: read timestamp {s} is beyond the leader's lease"
                )));
            }
            if !(self.opts.unsafe_reads_promise_nothing && s <= now.latest) {
                g.clock.observe(s);
                g.replica.note_assigned(s);
            }
            // Every write assigned a timestamp ≤ s must be applied before the read.
            let in_flight = g.proposed.values().any(|t| *t <= s);
            return if blocked || in_flight { Safe::Park } else { Safe::Yes };
        }
        // A follower: t_paxos_safe is its highest applied write.
        if s <= g.state.last_write_ts {
            return if blocked { Safe::Park } else { Safe::Yes };
        }
        if g.replica.role() == Role::Leader {
            return Safe::No(ApiError::Unavailable(format!("range {gid}: the leader is waiting for its lease")));
        }
        // An idle range's safe time stands still: ask the leader to close the timestamp, so
        // the next reads here can be served (at most every CLOSE_ASK_EVERY per range).
        let local = local_of(now);
        if let Some(leader) = g.replica.leader_hint()
            && local >= g.close_asked.saturating_add(CLOSE_ASK_EVERY)
        {
            g.close_asked = local;
            self.send(leader, PeerMsg::CloseTimestamp { group: gid, ts: s });
        }
        Safe::No(self.not_leader(gid))
    }

    /// Leader: a follower wants to serve reads at `ts`. Log an empty write at `max(ts, next)`
    /// inside the lease: no later write can take a smaller timestamp (MinNextTS, Spanner
    /// §4.1.3), and every replica that applies it has `t_paxos_safe ≥ ts`.
    pub(super) fn close_timestamp(&mut self, now: TTInterval, gid: GroupId, ts: Timestamp) {
        let me = self.ident.node;
        let Some(g) = self.groups.get_mut(&gid) else { return };
        if g.replica.role() != Role::Leader || ts <= g.state.last_write_ts || !g.proposed.is_empty() {
            return; // not ours, already closed, or a write in flight will close it
        }
        if ts > promise_bound(now) {
            return; // too far ahead to promise (the follower's read goes to the leader, and waits)
        }
        if g.state.frozen_into.is_some() {
            return;
        }
        let at = g.clock.assign_write(now, ts);
        if !g.replica.can_assign(now, at) {
            return;
        }
        let cmd = GroupCmd::Write { ts: at, writes: Vec::new(), from: (me, Origin::Internal(0)), txn: None };
        if propose(g, &cmd).is_ok() {
            g.replica.note_assigned(at);
            self.dirty.insert(gid);
        }
    }

    /// When the next parked read is due for a retry by time alone (a read in the future whose
    /// wait is over, or one past its deadline), in local time.
    pub(super) fn parked_reads_due(&self) -> Option<Timestamp> {
        let waiting = self.groups.values().flat_map(|g| g.parked_reads.iter());
        waiting.map(|r| if r.not_before > Timestamp::ZERO { r.not_before.min(r.deadline) } else { r.deadline }).min()
    }

    /// Re-tries the parked reads that are due by time ([`Self::parked_reads_due`]).
    pub(super) fn retry_due_reads(&mut self, now: TTInterval) {
        let local = local_of(now);
        let due: Vec<GroupId> = self
            .groups
            .iter()
            .filter(|(_, g)| {
                g.parked_reads
                    .iter()
                    .any(|r| local >= r.deadline || (r.not_before > Timestamp::ZERO && local >= r.not_before))
            })
            .map(|(gid, _)| *gid)
            .collect();
        for gid in due {
            self.retry_parked_reads(now, gid);
        }
    }

    /// Re-tries the reads parked on `gid` (after an apply), failing those past their deadline.
    pub(super) fn retry_parked_reads(&mut self, now: TTInterval, gid: GroupId) {
        let Some(g) = self.groups.get_mut(&gid) else { return };
        if g.parked_reads.is_empty() {
            return;
        }
        let local = local_of(now);
        let (due, waiting): (Vec<ParkedRead>, Vec<ParkedRead>) =
            std::mem::take(&mut g.parked_reads).into_iter().partition(|r| local >= r.not_before || local >= r.deadline);
        g.parked_reads = waiting;
        for r in due {
            if local >= r.deadline {
                self.fail(
                    now,
                    r.origin,
                    ApiError::Unavailable(format!(
                        "range {gid}: safe time did not reach {} within {READ_PARK_MAX:?}",
                        r.ts
                    )),
                );
            } else {
                self.serve_read(now, r.origin, r.start, r.end, r.limit, Some(r.ts));
            }
        }
    }
}

/// The furthest a leader promises ahead of its clock: `TT.now().latest + 2ε`. A read-only
/// transaction picks `s_read = TT.now().latest` at its first range's leader and reads the
/// others at `s_read`; their leaders' clocks may be up to 2ε behind.
pub(super) fn promise_bound(now: TTInterval) -> Timestamp {
    now.latest.saturating_add(now.width())
}

/// A read so far in the future of this node's clock that it is refused rather than waited for.
fn too_far_ahead(now: TTInterval, s: Timestamp) -> Option<ApiError> {
    let limit = promise_bound(now).saturating_add(FUTURE_READ_WAIT_MAX);
    (s > limit).then(|| {
        ApiError::Invalid(format!(
            "read timestamp {s} is {:?} in the future of this node's clock (TT.now().latest = {}); a snapshot \
             may be at most {FUTURE_READ_WAIT_MAX:?} ahead — read at a past or present timestamp",
            s.duration_since(now.latest),
            now.latest
        ))
    })
}
