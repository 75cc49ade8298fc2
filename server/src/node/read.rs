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

/// A read waiting for safe time.
pub(super) struct ParkedRead {
    origin: Origin,
    start: Vec<u8>,
    end: Option<Vec<u8>>,
    limit: u32,
    ts: Timestamp,
    deadline: Timestamp,
}

/// Whether a read at `s` can be served now, and if not why.
enum Safe {
    Yes,
    /// Wait here (an apply or a resolution will make it safe).
    Park,
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
                        Response::ReadAt { rows: Vec::new(), desc, truncated: false, read_ts },
                    );
                }
            },
        };
        match self.read_safety(now, gid, &span, s, leader) {
            Safe::Yes => {}
            Safe::No(e) => return self.fail(now, origin, e),
            Safe::Park => {
                let g = self.groups.get_mut(&gid).expect("checked");
                if g.parked_reads.len() >= PARKED_READS_MAX {
                    return self.fail(
                        now,
                        origin,
                        ApiError::Unavailable(format!("range {gid}: too many waiting reads")),
                    );
                }
                let deadline = local_of(now).saturating_add(READ_PARK_MAX);
                g.parked_reads.push(ParkedRead { origin, start, end, limit, ts: s, deadline });
                return;
            }
        }
        let limit = limit.clamp(1, api::SCAN_ROWS_MAX) as usize;
        let rows = match &end {
            None => self.mvcc.get(&start, s).map(|v| v.map(|v| vec![(start.clone(), v)]).unwrap_or_default()),
            Some(e) => self.mvcc.scan(&start, (!e.is_empty()).then_some(e.as_slice()), s, limit + 1),
        };
        match rows {
            Ok(mut rows) => {
                let truncated = rows.len() > limit;
                rows.truncate(limit);
                self.respond(now, origin, Response::ReadAt { rows, desc, truncated, read_ts: s });
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
        if leader {
            if s > now.latest {
                // A read in the future: later writes must get larger timestamps (MinNextTS).
                if !g.replica.can_assign(now, s) {
                    return Safe::No(ApiError::Unavailable(format!(
                        "range {gid}: read timestamp {s} is beyond the leader's lease"
                    )));
                }
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

    /// Re-tries the reads parked on `gid` (after an apply), failing those past their deadline.
    pub(super) fn retry_parked_reads(&mut self, now: TTInterval, gid: GroupId) {
        let Some(g) = self.groups.get_mut(&gid) else { return };
        if g.parked_reads.is_empty() {
            return;
        }
        let local = local_of(now);
        for r in std::mem::take(&mut g.parked_reads) {
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
