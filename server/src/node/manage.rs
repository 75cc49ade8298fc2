//! Range management: split, merge, replica moves, leadership transfer, graceful drain, and the
//! housekeeping loop that keeps the meta range current and spreads replicas and leaders.
//!
//! Every change to a range is decided in that range's own Paxos log (so all its replicas apply
//! it at the same point among its writes); the meta range is told afterwards, and reconciled by
//! generation, so a late or repeated update never rolls it back.
//!
//! ```text
//!   split:  leader ─Split(at, new id)─► log ─apply─► both halves on every replica ─► meta
//!   merge:  left leader ─Freeze─► right log (no more writes; answers with its data)
//!           left leader ─Merge(right data)─► left log ─apply─► left spans both ─► meta
//!   move:   add learner ─► snapshot ─► caught up ─► promote ─► remove old ─► meta
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use meridian_shard::GroupId;
use meridian_shard::paxos::{NodeId, Role};
use meridian_shard::range::{self, LeaderHint, META_GROUP, NodeInfo, RangeDescriptor};
use meridian_storage::Slot;
use meridian_truetime::{TTInterval, Timestamp};
use meridian_txn::TxnId;

use super::api::{ApiError, Request, Response};
use super::cmd::{GroupCmd, Origin};
use super::{NodeCore, local_of, propose};

/// How long one replica move may take before it is abandoned.
const MOVE_DEADLINE: Duration = Duration::from_secs(60);
/// Most management operations one node runs at a time (placement starts no more).
const OPS_IN_FLIGHT_MAX: usize = 2;
/// Least time between two leadership hand-offs by the leader balancer of one node: the cluster
/// view it balances by is refreshed only by housekeeping, so a node acting again before the
/// view shows its last hand-off would count it twice.
const LEADER_BALANCE_EVERY: Duration = Duration::from_secs(10);

/// The cluster as the meta range last described it.
#[derive(Clone, Debug, Default)]
pub(super) struct ClusterView {
    pub descs: Vec<RangeDescriptor>,
    pub nodes: Vec<NodeInfo>,
    pub leaders: BTreeMap<GroupId, LeaderHint>,
}

/// What to do with the answer to one of this node's own requests.
pub(super) enum Internal {
    /// The meta range indexed `gid`'s descriptor of `generation`.
    MetaSynced { gid: GroupId, generation: u64 },
    /// A fresh cluster view.
    View,
    /// The right neighbour of `left` froze: propose the merge.
    Frozen { left: GroupId, origin: Origin },
    /// A participant's decision came back (two-phase commit).
    Resolved { coordinator: GroupId, txn: TxnId, participant: GroupId },
    /// A coordinator answered an in-doubt participant's inquiry, or its report of a prepare.
    Inquiry { gid: GroupId, txn: TxnId, coordinator: GroupId },
    /// Fire and forget.
    Ignore,
}

enum MoveStep {
    AddLearner,
    CatchUp,
    Promote,
    Remove,
}

struct MoveOp {
    origin: Option<Origin>,
    from: Option<NodeId>,
    to: Option<NodeId>,
    step: MoveStep,
    deadline: Timestamp,
}

/// Operations in flight, per range.
#[derive(Default)]
pub(super) struct Ops {
    moves: BTreeMap<GroupId, MoveOp>,
}

impl Ops {
    /// Forgets operations of a range this node no longer leads (their requesters were told).
    pub(super) fn abort_group(&mut self, gid: GroupId) {
        self.moves.remove(&gid);
    }

    fn len(&self) -> usize {
        self.moves.len()
    }
}

impl NodeCore {
    fn leader_group(&self, gid: GroupId) -> Result<(), ApiError> {
        match self.groups.get(&gid) {
            None => Err(ApiError::RangeNotFound(gid)),
            Some(g) if g.replica.role() != Role::Leader => Err(self.not_leader(gid)),
            Some(_) => Ok(()),
        }
    }

    pub(super) fn internal(&mut self, kind: Internal) -> Origin {
        let id = self.next_internal;
        self.next_internal += 1;
        self.internal.insert(id, kind);
        Origin::Internal(id)
    }

    pub(super) fn on_internal_reply(&mut self, now: TTInterval, id: u64, response: Response) {
        let Some(kind) = self.internal.remove(&id) else { return };
        match (kind, response) {
            (Internal::MetaSynced { gid, generation }, Response::Done { .. }) => {
                if let Some(g) = self.groups.get_mut(&gid) {
                    g.meta_synced_generation = g.meta_synced_generation.max(generation);
                }
            }
            (Internal::View, Response::Ranges { descs, nodes, leaders }) => {
                self.learn_nodes(nodes.iter().cloned());
                if let Some(m) = descs.iter().find(|d| d.id == META_GROUP) {
                    self.learn_meta(m.clone());
                }
                self.view = Some(ClusterView { descs, nodes, leaders: leaders.into_iter().collect() });
            }
            (Internal::Frozen { left, origin }, Response::Frozen { desc, data, floor }) => {
                let me = self.ident.node;
                match self.leader_group(left) {
                    Err(e) => self.fail(now, origin, e),
                    Ok(()) => {
                        let g = self.groups.get_mut(&left).expect("checked leader");
                        let cmd = GroupCmd::Merge { right: desc, data, from: (me, origin), floor };
                        match propose(g, &cmd) {
                            Ok(()) => {
                                self.dirty.insert(left);
                            }
                            Err(e) => self.fail(now, origin, e),
                        }
                    }
                }
            }
            (Internal::Frozen { origin, .. }, Response::Error(e)) => self.fail(now, origin, e),
            (Internal::Resolved { coordinator, txn, participant }, r) => {
                self.on_resolved(coordinator, txn, participant, r)
            }
            (Internal::Inquiry { gid, txn, coordinator }, r) => self.on_inquired(now, gid, txn, coordinator, r),
            _ => {}
        }
    }

    // ----- split -----

    pub(super) fn start_split(&mut self, now: TTInterval, origin: Origin, key: Vec<u8>) {
        if let Err(e) = range::check_user_key(&key) {
            return self.fail(now, origin, ApiError::Invalid(e));
        }
        let Some(gid) = self.group_for_key(&key) else {
            return self.fail(
                now,
                origin,
                ApiError::KeyOutOfRange { desc: self.last_known_desc(&key).map(Box::new), key },
            );
        };
        if let Err(e) = self.leader_group(gid) {
            return self.fail(now, origin, e);
        }
        let me = self.ident.node;
        let g = &self.groups[&gid];
        if g.state.desc.start == key {
            return self.fail(
                now,
                origin,
                ApiError::Invalid(format!("{} already starts at {}", gid, range::show_key(&key))),
            );
        }
        let right_id = range::mint_group_id(me, self.ident.group_counter);
        self.ident.group_counter += 1;
        self.ident_dirty = true;
        let g = self.groups.get_mut(&gid).expect("checked above");
        let right = RangeDescriptor {
            id: right_id,
            start: key.clone(),
            end: g.state.desc.end.clone(),
            config: g.replica.config().clone(),
            generation: g.state.desc.generation + 1,
        };
        match propose(g, &GroupCmd::Split { at: key, right, from: (me, origin), width: now.width() }) {
            Ok(()) => {
                self.dirty.insert(gid);
            }
            Err(e) => self.fail(now, origin, e),
        }
    }

    // ----- merge -----

    pub(super) fn start_merge(&mut self, now: TTInterval, origin: Origin, left: GroupId) {
        if let Err(e) = self.leader_group(left) {
            return self.fail(now, origin, e);
        }
        let ldesc = self.groups[&left].state.desc.clone();
        if ldesc.end.is_empty() {
            return self.fail(
                now,
                origin,
                ApiError::Invalid(format!("{left} is the last range; it has no right neighbour")),
            );
        }
        let Some(view) = &self.view else {
            return self.fail(now, origin, ApiError::Unavailable("no cluster view yet; retry in a moment".into()));
        };
        let Some(right) = view.descs.iter().find(|d| d.start == ldesc.end).cloned() else {
            return self.fail(
                now,
                origin,
                ApiError::Unavailable(format!("the right neighbour of {left} is not indexed yet; retry")),
            );
        };
        let lconfig = self.groups[&left].replica.config().clone();
        if right.config != lconfig {
            return self.fail(
                now,
                origin,
                ApiError::Invalid(format!(
                    "{} and {} have different replicas ({} vs {}); move them together first",
                    left, right.id, lconfig, right.config
                )),
            );
        }
        // Where this node's own replica of the right range says its leader is (fresher than the
        // cluster view, refreshed only by housekeeping: a merge right after a hand-off went to
        // the old leader, which refused it), else the view's.
        let target = self.group_target(right.id).or_else(|| right.config.voters.first().copied());
        let cont = self.internal(Internal::Frozen { left, origin });
        let request = Request::Freeze { group: right.id, into: left };
        if target == Some(self.ident.node) {
            self.handle_request(now, cont, request);
        } else {
            self.forward(now, cont, request, target);
        }
    }

    pub(super) fn serve_freeze(&mut self, now: TTInterval, origin: Origin, gid: GroupId, into: GroupId) {
        if let Err(e) = self.leader_group(gid) {
            return self.fail(now, origin, e);
        }
        let me = self.ident.node;
        let g = self.groups.get_mut(&gid).expect("checked leader");
        if let Some(already) = g.state.frozen_into {
            if already != into {
                return self.fail(now, origin, ApiError::Invalid(format!("{gid} is already frozen into {already}")));
            }
            // Frozen earlier: answer with the same contents again (retried merge).
            let desc = g.state.desc.clone();
            let floor = super::apply::frozen_floor(now, g);
            let data = super::apply::versions_of(self, &desc);
            return self.respond(now, origin, Response::Frozen { desc, data, floor });
        }
        match propose(g, &GroupCmd::Freeze { into, from: (me, origin) }) {
            Ok(()) => {
                self.dirty.insert(gid);
            }
            Err(e) => self.fail(now, origin, e),
        }
    }

    // ----- moves -----

    pub(super) fn start_move(&mut self, now: TTInterval, origin: Origin, gid: GroupId, from: NodeId, to: NodeId) {
        if let Err(e) = self.leader_group(gid) {
            return self.fail(now, origin, e);
        }
        let config = self.groups[&gid].replica.config().clone();
        if !config.voters.contains(&from) {
            return self.fail(now, origin, ApiError::Invalid(format!("{from} holds no voting replica of {gid}")));
        }
        if config.contains(to) {
            return self.fail(now, origin, ApiError::Invalid(format!("{to} already holds a replica of {gid}")));
        }
        if !self.nodes.contains_key(&to) {
            return self.fail(now, origin, ApiError::Invalid(format!("unknown node {to}")));
        }
        if from == self.ident.node {
            // A leader does not remove itself: hand leadership to another replica first and let
            // the caller retry there.
            if let Some(other) = config.voters.iter().copied().find(|n| *n != from) {
                let g = self.groups.get_mut(&gid).expect("checked leader");
                let _ = g.hand_over(now, other);
                self.dirty.insert(gid);
                return self.fail(now, origin, ApiError::NotLeader { group: gid, leader: Some(other), desc: None });
            }
            return self.fail(
                now,
                origin,
                ApiError::Invalid(format!("{gid} has a single replica; add one before moving it")),
            );
        }
        if self.ops.moves.contains_key(&gid) {
            return self.fail(now, origin, ApiError::Unavailable(format!("{gid} is already changing replicas")));
        }
        let deadline = local_of(now).saturating_add(MOVE_DEADLINE);
        let op = MoveOp { origin: Some(origin), from: Some(from), to: Some(to), step: MoveStep::AddLearner, deadline };
        self.ops.moves.insert(gid, op);
        self.advance_ops(now);
    }

    /// Moves every operation forward as far as it can go now.
    pub(super) fn advance_ops(&mut self, now: TTInterval) {
        let gids: Vec<GroupId> = self.ops.moves.keys().copied().collect();
        for gid in gids {
            self.advance_move(now, gid);
        }
    }

    fn advance_move(&mut self, now: TTInterval, gid: GroupId) {
        let Some(op) = self.ops.moves.get_mut(&gid) else { return };
        let Some(g) = self.groups.get_mut(&gid) else {
            self.ops.moves.remove(&gid);
            return;
        };
        if g.replica.role() != Role::Leader || local_of(now) > op.deadline {
            let op = self.ops.moves.remove(&gid).expect("present");
            if let Some(o) = op.origin {
                self.fail(now, o, ApiError::Timeout(format!("moving a replica of {gid} did not finish")));
            }
            return;
        }
        let config = g.replica.config().clone();
        let chosen = g.replica.chosen();
        let mut next = config.clone();
        let change = match op.step {
            MoveStep::AddLearner => match op.to {
                Some(to) if !config.contains(to) => {
                    next.learners.insert(to);
                    Some(MoveStep::CatchUp)
                }
                Some(_) => {
                    op.step = MoveStep::CatchUp;
                    None
                }
                None => {
                    op.step = MoveStep::Remove;
                    None
                }
            },
            MoveStep::CatchUp => {
                let to = op.to.expect("catch-up only follows an add");
                if g.replica.peer_matched(to).is_some_and(|m| m >= chosen) && config.learners.contains(&to) {
                    op.step = MoveStep::Promote;
                }
                None
            }
            MoveStep::Promote => {
                let to = op.to.expect("promote only follows an add");
                if config.voters.contains(&to) {
                    op.step = MoveStep::Remove;
                    None
                } else {
                    next.learners.remove(&to);
                    next.voters.insert(to);
                    Some(MoveStep::Remove)
                }
            }
            MoveStep::Remove => match op.from {
                Some(from) if config.contains(from) => {
                    next.voters.remove(&from);
                    next.learners.remove(&from);
                    Some(MoveStep::Remove)
                }
                _ => {
                    let op = self.ops.moves.remove(&gid).expect("present");
                    if let Some(o) = op.origin {
                        let detail = format!("{gid} now on {}", self.groups[&gid].replica.config());
                        self.respond(now, o, Response::Done { detail });
                    }
                    return;
                }
            },
        };
        if let Some(step) = change
            && next != config
        {
            // A change still in flight fails here: it is tried again on the next tick.
            if g.replica.change_config(next).is_ok() {
                op.step = step;
                self.dirty.insert(gid);
            }
        }
    }

    pub(super) fn serve_transfer(&mut self, now: TTInterval, origin: Origin, gid: GroupId, to: NodeId) {
        if let Err(e) = self.leader_group(gid) {
            return self.fail(now, origin, e);
        }
        let g = self.groups.get_mut(&gid).expect("checked leader");
        match g.hand_over(now, to) {
            Ok(()) => {
                self.dirty.insert(gid);
                self.respond(now, origin, Response::Done { detail: format!("{gid}: handing leadership to {to}") });
            }
            Err(e) => self.fail(now, origin, ApiError::Invalid(e.to_string())),
        }
    }

    /// Hands every leadership away (graceful shutdown).
    pub(super) fn drain_leadership(&mut self, now: TTInterval) {
        let me = self.ident.node;
        for (gid, g) in self.groups.iter_mut() {
            if g.replica.role() != Role::Leader {
                continue;
            }
            let voters: Vec<NodeId> = g.replica.config().voters.iter().copied().filter(|n| *n != me).collect();
            let best = voters.iter().copied().max_by_key(|n| g.replica.peer_matched(*n).unwrap_or(Slot(0)));
            if let Some(to) = best {
                let _ = g.hand_over(now, to);
                self.dirty.insert(*gid);
            }
        }
    }

    // ----- housekeeping -----

    pub(super) fn housekeeping(&mut self, now: TTInterval) {
        // Refresh the cluster view (routing, placement, address book).
        if self.meta_target().is_some() || self.groups.contains_key(&META_GROUP) {
            let o = self.internal(Internal::View);
            self.handle_request(now, o, Request::ClusterView);
        }
        let me = self.ident.node;
        let leading = self.leading(now);
        for gid in &leading {
            let g = &self.groups[gid];
            // Keep the meta range's index current (after splits, merges, membership changes).
            let stale_meta = g.meta_synced_generation < g.state.desc.generation && g.state.frozen_into.is_none();
            let mut desc = g.state.desc.clone();
            desc.config = g.replica.config().clone();
            let round = g.replica.promised().round;
            let report_leader = g.leader_reported != Some(round);
            if stale_meta {
                let o = self.internal(Internal::MetaSynced { gid: *gid, generation: desc.generation });
                self.handle_request(now, o, Request::PutDescriptors { descs: vec![desc] });
            }
            // Tell the meta range who leads (clients start there).
            if report_leader {
                let o = self.internal(Internal::Ignore);
                self.groups.get_mut(gid).expect("listed").leader_reported = Some(round);
                self.handle_request(now, o, Request::PutLeader { group: *gid, hint: LeaderHint { node: me, round } });
            }
            // A frozen range whose merge was interrupted asks its left neighbour to finish.
            if let Some(into) = self.groups[gid].state.frozen_into {
                let target = self.view.as_ref().and_then(|v| v.leaders.get(&into)).map(|h| h.node);
                let o = self.internal(Internal::Ignore);
                self.forward(now, o, Request::Merge { group: into }, target);
            }
        }
        for gid in &leading {
            self.twopc_housekeeping(now, *gid);
        }
        let parked: Vec<GroupId> = self
            .groups
            .iter()
            .filter(|(_, g)| !g.parked_reads.is_empty() || !g.parked_requests.is_empty())
            .map(|(id, _)| *id)
            .collect();
        for gid in parked {
            self.retry_parked_reads(now, gid);
            self.retry_parked_requests(now, gid);
        }
        self.expire_txns(now);
        self.collect_garbage(now);
        self.auto_split(now, &leading);
        if self.opts.placement && !self.draining {
            self.place(now, &leading);
        }
        for g in self.groups.values_mut() {
            g.writes_recent = 0;
        }
    }

    /// Removes versions older than `gc_ttl` that a newer version hides (a few times per TTL).
    /// Reads below the new horizon then fail with a clear error instead of a wrong answer.
    fn collect_garbage(&mut self, now: TTInterval) {
        let local = local_of(now);
        let every = (self.opts.gc_ttl / 4).clamp(Duration::from_millis(500), Duration::from_secs(600));
        if local < self.last_gc.saturating_add(every) {
            return;
        }
        self.last_gc = local;
        let horizon = Timestamp::from_nanos(now.earliest.nanos().saturating_sub(self.opts.gc_ttl.as_nanos() as u64));
        match self.mvcc.gc(horizon) {
            Ok(stats) => tracing::debug!(%horizon, ?stats, "collected old versions"),
            Err(e) => tracing::warn!(%horizon, "version GC failed: {e}"),
        }
    }

    fn auto_split(&mut self, now: TTInterval, leading: &[GroupId]) {
        let secs = self.opts.housekeeping.as_secs_f64().max(0.001);
        for gid in leading {
            if *gid == META_GROUP {
                continue;
            }
            let g = &self.groups[gid];
            if g.state.frozen_into.is_some() {
                continue;
            }
            let desc = g.state.desc.clone();
            let hot = g.writes_recent as f64 / secs > self.opts.split_writes_per_sec as f64;
            let (lo, hi) = meridian_storage::mvcc::encoded_range(&desc.start, desc.end_bound());
            let size = self.engine.approximate_size(meridian_storage::Cf::Data, &lo, hi.as_deref()).unwrap_or(0);
            if !(hot || size > self.opts.split_bytes) {
                continue;
            }
            // Split at the middle key of the range.
            let keys: Vec<Vec<u8>> = self
                .mvcc
                .scan(&desc.start, desc.end_bound(), Timestamp::MAX, 100_000)
                .unwrap_or_default()
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            if keys.len() < 2 {
                continue;
            }
            let at = keys[keys.len() / 2].clone();
            let o = self.internal(Internal::Ignore);
            self.start_split(now, o, at);
        }
    }

    /// Spreads replicas and leaders evenly over live nodes, one change at a time.
    ///
    /// The target is the configured replication (capped by the cluster's size), never "the
    /// number of nodes that answer right now": a node that is briefly unreachable must not make
    /// the loop remove a healthy replica. A node unreachable for `dead_after` is dead, and its
    /// replicas are *replaced* (a live replica is added before the dead one is removed).
    fn place(&mut self, now: TTInterval, leading: &[GroupId]) {
        let Some(view) = self.view.clone() else { return };
        let local = local_of(now);
        let all: BTreeSet<NodeId> = view.nodes.iter().map(|n| n.id).collect();
        let live: BTreeSet<NodeId> = all.iter().copied().filter(|n| !self.unreachable.contains_key(n)).collect();
        let dead: BTreeSet<NodeId> = self
            .unreachable
            .iter()
            .filter(|(_, since)| local >= since.saturating_add(self.opts.dead_after))
            .map(|(n, _)| *n)
            .collect();
        if live.is_empty() {
            return;
        }
        let mut replicas: BTreeMap<NodeId, usize> = all.iter().map(|n| (*n, 0)).collect();
        for d in &view.descs {
            for v in d.config.voters.iter() {
                *replicas.entry(*v).or_default() += 1;
            }
        }
        let mut leaders: BTreeMap<NodeId, usize> = live.iter().map(|n| (*n, 0)).collect();
        for h in view.leaders.values() {
            if let Some(c) = leaders.get_mut(&h.node) {
                *c += 1;
            }
        }
        let want = self.opts.replication.min(all.len()).max(1);
        let me = self.ident.node;
        for gid in leading {
            if self.ops.len() >= OPS_IN_FLIGHT_MAX || self.ops.moves.contains_key(gid) {
                continue;
            }
            let g = &self.groups[gid];
            if g.state.frozen_into.is_some() {
                continue;
            }
            let config = g.replica.config().clone();
            let voters: Vec<NodeId> = config.voters.iter().copied().collect();
            let candidates: Vec<NodeId> = live.iter().copied().filter(|n| !config.contains(*n)).collect();
            let least = |set: &[NodeId], counts: &BTreeMap<NodeId, usize>| {
                set.iter().copied().min_by_key(|n| (counts.get(n).copied().unwrap_or(0), n.0))
            };
            let deadline = local.saturating_add(MOVE_DEADLINE);
            let add = |to| MoveOp { origin: None, from: None, to: Some(to), step: MoveStep::AddLearner, deadline };
            // A dead voter is replaced by a live node first.
            if let Some(gone) = voters.iter().copied().find(|n| dead.contains(n)) {
                if let Some(to) = least(&candidates, &replicas) {
                    *replicas.entry(to).or_default() += 1;
                    self.ops.moves.insert(*gid, MoveOp { from: Some(gone), ..add(to) });
                } else if voters.len() > want.min(live.len()).max(1) {
                    // Nowhere to re-replicate: drop the dead replica only if the live ones still
                    // make the target (a smaller cluster).
                    self.ops.moves.insert(
                        *gid,
                        MoveOp { origin: None, from: Some(gone), to: None, step: MoveStep::Remove, deadline },
                    );
                }
                continue;
            }
            if voters.len() < want {
                if let Some(to) = least(&candidates, &replicas) {
                    *replicas.entry(to).or_default() += 1;
                    self.ops.moves.insert(*gid, add(to));
                }
                continue;
            }
            if voters.iter().any(|n| !live.contains(n)) {
                continue; // a member is unreachable: change nothing until it returns or dies
            }
            if voters.len() > want {
                let victim = voters
                    .iter()
                    .copied()
                    .filter(|n| *n != me)
                    .max_by_key(|n| (replicas.get(n).copied().unwrap_or(0), n.0));
                if let Some(from) = victim {
                    self.ops.moves.insert(
                        *gid,
                        MoveOp { origin: None, from: Some(from), to: None, step: MoveStep::Remove, deadline },
                    );
                }
                continue;
            }
            if !self.opts.rebalance {
                continue;
            }
            // Replica balance: move from the fullest member to the emptiest non-member.
            let fullest = voters
                .iter()
                .copied()
                .filter(|n| *n != me)
                .max_by_key(|n| (replicas.get(n).copied().unwrap_or(0), n.0));
            if let (Some(from), Some(to)) = (fullest, least(&candidates, &replicas)) {
                let (cf, ct) = (replicas.get(&from).copied().unwrap_or(0), replicas.get(&to).copied().unwrap_or(0));
                if cf >= ct + 2 {
                    *replicas.entry(from).or_default() -= 1;
                    *replicas.entry(to).or_default() += 1;
                    self.ops.moves.insert(*gid, MoveOp { from: Some(from), ..add(to) });
                    continue;
                }
            }
            // Leader balance: hand this range to a replica with fewer leaderships. Only the
            // node leading the most ranges sheds one, and at most one every
            // LEADER_BALANCE_EVERY: every node balances by the same possibly stale view, and
            // nodes that all shed at once onto the least loaded one made leadership flap under
            // load (each hand-off aborts the transactions holding locks at the old leader).
            let mine = leaders.get(&me).copied().unwrap_or(0);
            let busiest = leaders.iter().max_by_key(|(n, c)| (**c, n.0)).map(|(n, _)| *n);
            let others: Vec<NodeId> = voters.iter().copied().filter(|n| *n != me && live.contains(n)).collect();
            if let Some(to) = least(&others, &leaders)
                && leaders.get(&to).copied().unwrap_or(0) + 2 <= mine
                && *gid != META_GROUP
                && busiest == Some(me)
                && local >= self.leader_handed_at.saturating_add(LEADER_BALANCE_EVERY)
            {
                *leaders.entry(me).or_default() -= 1;
                *leaders.entry(to).or_default() += 1;
                let g = self.groups.get_mut(gid).expect("listed");
                if g.hand_over(now, to).is_ok() {
                    self.leader_handed_at = local;
                    self.dirty.insert(*gid);
                }
            }
        }
        self.advance_ops(now);
    }

    /// Called when a chosen configuration no longer includes this node: its replica goes.
    pub(super) fn on_removed(&mut self, gid: GroupId) {
        let me = self.ident.node;
        if let Some(g) = self.groups.get(&gid)
            && !g.replica.config().contains(me)
        {
            self.destroy_replica(gid);
        }
    }
}
