//! Applying chosen commands to a range's state, building and installing snapshots, creating and
//! destroying replicas, and serving the meta range.
//!
//! Every replica applies the same commands in the same order, so every decision here depends
//! only on the command and the replica's state: a split key outside the range, a write to keys
//! the range no longer owns, a stale descriptor — each is rejected the same way everywhere.

use bytes::Bytes;
use meridian_shard::GroupId;
use meridian_shard::paxos::{Ballot, Command, InstallSnapshot, NodeId, Replica, Role};
use meridian_shard::range::{self, LeaderHint, META_GROUP, NodeInfo, RangeDescriptor};
use meridian_storage::{Cf, Slot, WriteBatch, log, mvcc};
use meridian_truetime::{TTInterval, Timestamp};
use meridian_txn::Span;
use serde::{Deserialize, Serialize};

use super::api::{ApiError, Request, Response};
use super::cmd::{GroupCmd, Origin, PeerMsg, RangeState, VersionRow};
use super::{Group, NodeCore, local_of, propose, range_state_key, tombstone_key};

/// Everything a replica needs to become a copy of a range at one applied slot.
#[derive(Serialize, Deserialize)]
struct RangeSnapshot {
    state: RangeState,
    versions: Vec<VersionRow>,
}

/// Every MVCC version of keys in `desc`'s span.
pub(super) fn versions_of(core: &NodeCore, desc: &RangeDescriptor) -> Vec<VersionRow> {
    core.mvcc
        .versions(&desc.start, desc.end_bound())
        .expect("reading one's own range succeeds or the node cannot continue")
        .into_iter()
        .map(|(k, v)| (k, v.ts, v.value))
        .collect()
}

/// Applies a committed transaction's `writes` at `ts` to `g`'s range (sizes were checked when
/// the command was proposed).
pub(super) fn write_at(batch: &mut WriteBatch, writes: &[(Vec<u8>, Option<Vec<u8>>)], ts: Timestamp, g: &mut Group) {
    for (k, v) in writes {
        match v {
            Some(v) => mvcc::put(batch, k, ts, v).expect("checked at proposal"),
            None => mvcc::delete(batch, k, ts).expect("checked at proposal"),
        }
    }
    g.state.last_write_ts = g.state.last_write_ts.max(ts);
    // Spanner §4.1.2: timestamps of Paxos writes increase monotonically, even across leaders.
    // Leases keep successive leaders' own timestamps apart; a participant also applies commit
    // timestamps its coordinator chose, so every replica raises its clock past what it applied
    // and a later leader here assigns above it whatever the lease arithmetic.
    g.clock.observe(ts);
    g.writes_recent += 1;
}

fn delete_span(batch: &mut WriteBatch, desc: &RangeDescriptor) {
    let (lo, hi) = mvcc::encoded_range(&desc.start, desc.end_bound());
    batch.delete_range(Cf::Data, lo, hi.unwrap_or_else(|| vec![0xFF; 9]));
}

fn put_versions(batch: &mut WriteBatch, versions: &[VersionRow]) {
    for (k, ts, v) in versions {
        match v {
            Some(v) => mvcc::put(batch, k, *ts, v).expect("versions came from storage within limits"),
            None => mvcc::delete(batch, k, *ts).expect("versions came from storage within limits"),
        }
    }
}

/// Replaces a replica's range data and state with a snapshot's (in the `ready` batch, so it is
/// durable together with the Paxos state that refers to it).
pub(super) fn install_snapshot(batch: &mut WriteBatch, g: &mut Group, snap: &InstallSnapshot) {
    let s: RangeSnapshot = postcard::from_bytes(&snap.data).expect("snapshots come from our own encoder");
    assert_eq!(s.state.applied, snap.slot, "snapshot invariant: data is at the slot it claims");
    delete_span(batch, &g.state.desc);
    delete_span(batch, &s.state.desc);
    put_versions(batch, &s.versions);
    batch.put(Cf::Meta, range_state_key(s.state.desc.id), postcard::to_allocvec(&s.state).expect("encodes"));
    g.state = s.state;
    g.clock.observe(g.state.last_write_ts.max(g.state.clock_floor));
}

/// Whether every key of `span` is below `at`.
fn span_below(span: &Span, at: &[u8]) -> bool {
    match span {
        Span::Key(k) => k.as_slice() < at,
        Span::Range { end, .. } => !end.is_empty() && end.as_slice() <= at,
    }
}

/// Whether every key of `span` lies in `desc`.
pub(super) fn span_within(desc: &RangeDescriptor, span: &Span) -> bool {
    match span {
        Span::Key(k) => desc.contains(k),
        Span::Range { start, end } => {
            desc.contains(start) && (desc.end.is_empty() || (!end.is_empty() && *end <= desc.end))
        }
    }
}

/// Above every timestamp a frozen range's leaders promised: they served reads at most 2ε ahead
/// of their clocks (`read::promise_bound`), which are at most 2ε ahead of true time, and
/// stopped serving when the freeze applied, before this answer.
pub(super) fn frozen_floor(now: TTInterval, g: &Group) -> Timestamp {
    now.latest.saturating_add(now.width() * 2).max(g.clock.last_assigned)
}

impl NodeCore {
    /// Builds a snapshot of `gid` at its applied slot for `to` and hands it to the replica.
    pub(super) fn send_snapshot(&mut self, now: TTInterval, gid: GroupId, to: NodeId) {
        let Some(g) = self.groups.get(&gid) else { return };
        let state = g.state.clone();
        let versions = versions_of(self, &state.desc);
        let slot = state.applied;
        let data = Bytes::from(postcard::to_allocvec(&RangeSnapshot { state, versions }).expect("encodes"));
        let g = self.groups.get_mut(&gid).expect("checked above");
        g.replica.snapshot_ready(now, to, slot, data);
        self.dirty.insert(gid);
    }

    /// Applies chosen commands of `gid`, in slot order.
    pub(super) fn apply(&mut self, now: TTInterval, gid: GroupId, entries: Vec<(Slot, Command)>) {
        let mut batch = WriteBatch::new();
        for (slot, cmd) in entries {
            let Some(g) = self.groups.get_mut(&gid) else { return };
            assert!(slot > g.state.applied, "apply invariant: {gid} applies {slot} after {}", g.state.applied);
            g.state.applied = slot;
            match cmd {
                Command::Noop => {}
                Command::Config(c) => {
                    g.state.desc.config = c;
                    g.state.desc.generation += 1;
                }
                Command::App(bytes) => match postcard::from_bytes::<(Ballot, GroupCmd)>(&bytes) {
                    Ok((ballot, _)) if ballot < g.state.leader_ballot => {
                        // Proposed by a leader deposed before this entry was chosen; a newer
                        // leader has served since. Its proposer answered "ambiguous" when it
                        // stepped down; the entry takes no effect anywhere.
                    }
                    Ok((ballot, c)) => {
                        g.state.leader_ballot = ballot;
                        self.apply_cmd(now, gid, c, &mut batch)
                    }
                    Err(e) => {
                        panic!("undecodable command in {gid} slot {slot}: {e}; a node of another version wrote it")
                    }
                },
            }
            if gid == META_GROUP && !batch.is_empty() {
                // The meta range's commands read what earlier ones wrote (the descriptor index).
                self.engine
                    .write(std::mem::take(&mut batch), false)
                    .expect("state-machine writes succeed or the node cannot continue");
            }
        }
        let Some(g) = self.groups.get(&gid) else {
            self.engine.write(batch, false).expect("state-machine writes succeed or the node cannot continue");
            return;
        };
        batch.put(Cf::Meta, range_state_key(gid), postcard::to_allocvec(&g.state).expect("encodes"));
        self.engine.write(batch, false).expect("state-machine writes succeed or the node cannot continue");
    }

    fn mine(&self, from: (NodeId, Origin)) -> Option<Origin> {
        (from.0 == self.ident.node).then_some(from.1)
    }

    fn apply_cmd(&mut self, now: TTInterval, gid: GroupId, cmd: GroupCmd, batch: &mut WriteBatch) {
        match cmd {
            GroupCmd::Write { ts, writes, from, txn } => {
                if let Some(id) = txn {
                    // Its locks go once the write is applied (after this batch).
                    self.applied_txns.push((gid, id));
                }
                let g = self.groups.get_mut(&gid).expect("applying group exists");
                let mine = (from.0 == self.ident.node).then_some(from.1);
                if let Some(o) = mine {
                    g.proposed.remove(&o);
                }
                if g.state.frozen_into.is_some() || writes.iter().any(|(k, _)| !g.state.desc.contains(k)) {
                    // The range changed between proposal and apply (split, merge freeze): the
                    // write takes no effect anywhere, and the client retries with fresh routes.
                    if let Some(o) = mine {
                        // A commit part may write nothing (a participant that only read).
                        let key = writes.first().map_or_else(|| g.state.desc.start.clone(), |w| w.0.clone());
                        self.fail(
                            now,
                            o,
                            ApiError::KeyOutOfRange { key, desc: Some(Box::new(self.groups[&gid].state.desc.clone())) },
                        );
                    }
                    return;
                }
                write_at(batch, &writes, ts, g);
                if let Some(o) = mine {
                    self.hold_until_after(now, ts, o, Response::Written { ts });
                }
            }
            GroupCmd::Split { at, right, from, width } => self.apply_split(now, gid, (at, right, width), from, batch),
            GroupCmd::Prepare { txn, coordinator, prepare_ts, writes, locks, from } => {
                let p = super::cmd::PreparedTxn { txn, coordinator, prepare_ts, writes, locks };
                self.apply_prepare(now, gid, p, from);
            }
            GroupCmd::Decide { txn, commit_ts, participants, writes, at, from } => {
                let d = super::cmd::Decided { commit_ts, participants, at };
                self.apply_decide(now, gid, d, (txn, writes), from, batch);
            }
            GroupCmd::Resolve { txn, commit_ts, from } => self.apply_resolve(now, gid, txn, commit_ts, from, batch),
            GroupCmd::Forget { txns } => self.apply_forget(gid, txns),
            GroupCmd::Freeze { into, from } => {
                let g = self.groups.get_mut(&gid).expect("applying group exists");
                if !g.state.prepared.is_empty() || !g.state.decisions.is_empty() {
                    // A range in the middle of two-phase commit keeps its id until it is done:
                    // participants ask for outcomes by group.
                    if let Some(o) = self.mine(from) {
                        let e = ApiError::Unavailable(format!("{gid} has transactions in two-phase commit; retry"));
                        self.fail(now, o, e);
                    }
                    return;
                }
                g.state.frozen_into = Some(into);
                if let Some(o) = self.mine(from) {
                    let floor = frozen_floor(now, &self.groups[&gid]);
                    let desc = self.groups[&gid].state.desc.clone();
                    let data = versions_of(self, &desc);
                    self.respond(now, o, Response::Frozen { desc, data, floor });
                }
            }
            GroupCmd::Merge { right, data, from, floor } => {
                self.apply_merge(now, gid, (right, data, floor), from, batch)
            }
            GroupCmd::PutDescriptors { ts, descs, from } => {
                assert_eq!(gid, META_GROUP, "only the meta range indexes descriptors");
                for d in descs {
                    self.index_descriptor(ts, d, batch);
                }
                if let Some(o) = self.mine(from) {
                    self.respond(now, o, Response::Done { detail: "indexed".into() });
                }
            }
            GroupCmd::AddNode { ts, info, from } => {
                assert_eq!(gid, META_GROUP, "only the meta range admits nodes");
                let nodes = self.meta_nodes();
                // Re-joining from the same address gets the same id: a join may be retried.
                let id = nodes
                    .iter()
                    .find(|n| n.addr == info.addr)
                    .map(|n| n.id)
                    .unwrap_or_else(|| NodeId(nodes.iter().map(|n| n.id.0).max().unwrap_or(0) + 1));
                let info = NodeInfo { id, ..info };
                mvcc::put(batch, &range::meta_node_key(id), ts, &postcard::to_allocvec(&info).expect("encodes"))
                    .expect("node entries are small");
                self.nodes.insert(id, info.clone());
                if let Some(o) = self.mine(from) {
                    let mut all = nodes;
                    all.retain(|n| n.id != id);
                    all.push(info);
                    self.respond(now, o, Response::Joined { node: id, nodes: all });
                }
            }
            GroupCmd::PutLeader { ts, group, hint } => {
                assert_eq!(gid, META_GROUP, "only the meta range records leaders");
                let key = range::meta_leader_key(group);
                let newer = match self.mvcc.get(&key, Timestamp::MAX).ok().flatten() {
                    Some(raw) => postcard::from_bytes::<LeaderHint>(&raw).map_or(true, |old| old.round <= hint.round),
                    None => true,
                };
                if newer {
                    mvcc::put(batch, &key, ts, &postcard::to_allocvec(&hint).expect("encodes")).expect("small");
                }
            }
            GroupCmd::Barrier => {} // its ballot, recorded by `apply`, is the point
        }
    }

    /// Meta range: indexes `d` unless an overlapping indexed descriptor is newer; removes every
    /// older overlapping one.
    fn index_descriptor(&mut self, ts: Timestamp, d: RangeDescriptor, batch: &mut WriteBatch) {
        let existing = self.meta_descriptors();
        let overlapping: Vec<&RangeDescriptor> = existing.iter().filter(|e| e.overlaps(&d.start, &d.end)).collect();
        if overlapping.iter().any(|e| e.generation > d.generation || (e.generation == d.generation && **e != d)) {
            return;
        }
        for e in overlapping {
            mvcc::delete(batch, &e.meta_key(), ts).expect("small");
        }
        mvcc::put(batch, &d.meta_key(), ts, &postcard::to_allocvec(&d).expect("encodes")).expect("small");
        if d.id == META_GROUP {
            self.meta_desc = Some(d);
        }
    }

    /// Every descriptor in the local meta replica's applied state (plus what `batch` adds is not
    /// visible: callers apply one command at a time).
    pub(super) fn meta_descriptors(&self) -> Vec<RangeDescriptor> {
        self.meta_records(range::meta_desc_span())
    }

    /// Every node in the local meta replica's applied state.
    pub(super) fn meta_nodes(&self) -> Vec<NodeInfo> {
        self.meta_records(range::meta_node_span())
    }

    /// The newest records of one meta-range table (descriptors, nodes), decoded.
    fn meta_records<T: serde::de::DeserializeOwned>(&self, (lo, hi): (Vec<u8>, Vec<u8>)) -> Vec<T> {
        self.mvcc
            .scan(&lo, Some(&hi), Timestamp::MAX, usize::MAX)
            .expect("meta reads succeed or the node cannot continue")
            .into_iter()
            .filter_map(|(_, v)| postcard::from_bytes(&v).ok())
            .collect()
    }

    fn meta_leaders(&self) -> Vec<(GroupId, LeaderHint)> {
        let (lo, hi) = range::meta_leader_span();
        self.mvcc
            .scan(&lo, Some(&hi), Timestamp::MAX, usize::MAX)
            .expect("meta reads succeed or the node cannot continue")
            .into_iter()
            .filter_map(|(k, v)| {
                let id: [u8; 8] = k[k.len() - 8..].try_into().ok()?;
                Some((GroupId(u64::from_be_bytes(id)), postcard::from_bytes(&v).ok()?))
            })
            .collect()
    }

    fn apply_split(
        &mut self,
        now: TTInterval,
        gid: GroupId,
        (at, right, width): (Vec<u8>, RangeDescriptor, std::time::Duration),
        from: (NodeId, Origin),
        batch: &mut WriteBatch,
    ) {
        let me = self.ident.node;
        let g = self.groups.get_mut(&gid).expect("applying group exists");
        let left = &g.state.desc;
        let valid = g.state.frozen_into.is_none()
            && at > left.start
            && left.contains(&at)
            && right.start == at
            && right.end == left.end
            && right.config == left.config
            && right.generation == left.generation + 1
            // A prepared transaction's writes and locks stay in the range that prepared them: a
            // read lock is as binding as a write until the outcome (Spanner §4.2.1).
            && g.state.prepared.values().all(|p| {
                p.writes.iter().all(|(k, _)| *k < at) && p.locks.iter().all(|(span, _)| span_below(span, &at))
            });
        if !valid {
            if let Some(o) = (from.0 == me).then_some(from.1) {
                let detail = format!(
                    "split of {gid} at {} no longer applies to {}",
                    range::show_key(&at),
                    self.groups[&gid].state.desc
                );
                self.fail(now, o, ApiError::Invalid(detail));
            }
            return;
        }
        let g = self.groups.get_mut(&gid).expect("applying group exists");
        g.state.desc.end = at.clone();
        g.state.desc.generation = right.generation;
        let leading = g.replica.role() == Role::Leader;
        let last_ts = g.state.last_write_ts;
        // The right half: same replicas, its data already on this node, an empty log. Its
        // clock starts above every read the range's leader served for its keys: those were at
        // most `width` ahead of that leader's clock, which was at most `width` ahead of true
        // time, and this replica applies the split no earlier than its leader did.
        let mut state = RangeState::new(right.clone(), last_ts);
        state.clock_floor = now.latest.saturating_add(width * 2).max(g.clock.last_assigned);
        batch.put(Cf::Meta, range_state_key(right.id), postcard::to_allocvec(&state).expect("encodes"));
        let durable = meridian_shard::paxos::Durable { config: right.config.clone(), ..Default::default() };
        let mut replica = Replica::restart(me, self.opts.paxos.clone(), self.seed ^ right.id.0, durable);
        if leading {
            // The left leader leads the right half too, at once (no election timeout).
            replica.campaign(now);
        }
        let mut ng = Group::new(replica, state);
        ng.meta_synced_generation = 0;
        ng.split_at = Some(local_of(now));
        self.groups.insert(right.id, ng);
        self.dirty.insert(right.id);
        if let Some(g) = self.groups.get_mut(&gid) {
            g.meta_synced_generation = 0;
        }
        if let Some(o) = (from.0 == me).then_some(from.1) {
            let detail = format!("split {gid} at {}: right half is {}", range::show_key(&at), right.id);
            self.respond(now, o, Response::Done { detail });
        }
    }

    fn apply_merge(
        &mut self,
        now: TTInterval,
        gid: GroupId,
        (right, data, floor): (RangeDescriptor, Vec<VersionRow>, Timestamp),
        from: (NodeId, Origin),
        batch: &mut WriteBatch,
    ) {
        let me = self.ident.node;
        let g = self.groups.get_mut(&gid).expect("applying group exists");
        let left = &g.state.desc;
        let valid = g.state.frozen_into.is_none()
            && !left.end.is_empty()
            && right.start == left.end
            && right.config == left.config;
        if !valid {
            if from.0 == me {
                let detail =
                    format!("merge of {} into {gid} no longer applies to {}", right.id, self.groups[&gid].state.desc);
                self.fail(now, from.1, ApiError::Invalid(detail));
            }
            return;
        }
        g.state.desc.end = right.end.clone();
        g.state.desc.generation = g.state.desc.generation.max(right.generation) + 1;
        g.meta_synced_generation = 0;
        let last = data.iter().map(|(_, ts, _)| *ts).max().unwrap_or_default();
        g.state.last_write_ts = g.state.last_write_ts.max(last);
        g.clock.observe(last);
        // The right range's leaders served reads of these keys up to `floor` (Spanner §4.1.3).
        g.state.clock_floor = g.state.clock_floor.max(floor);
        g.clock.observe(floor);
        // The right range's data travels in the command: this replica does not depend on its
        // own copy of the right range having caught up.
        delete_span(batch, &right);
        put_versions(batch, &data);
        // The right range's group is over on this node (its data now belongs to the left).
        if self.groups.remove(&right.id).is_some() {
            log::delete_group(batch, right.id);
        }
        batch.delete(Cf::Meta, range_state_key(right.id));
        batch.put(Cf::Meta, tombstone_key(right.id), Vec::new());
        self.tombstones.insert(right.id, u64::MAX);
        if from.0 == me {
            let detail = format!("merged {} into {gid}", right.id);
            self.respond(now, from.1, Response::Done { detail });
        }
    }

    /// Removes this node's replica of `gid` and its data (the group's membership no longer
    /// includes this node).
    pub(super) fn destroy_replica(&mut self, gid: GroupId) {
        let Some(g) = self.groups.remove(&gid) else { return };
        let mut b = WriteBatch::new();
        log::delete_group(&mut b, gid);
        delete_span(&mut b, &g.state.desc);
        b.delete(Cf::Meta, range_state_key(gid));
        let generation = g.state.desc.generation;
        b.put(Cf::Meta, tombstone_key(gid), generation.to_be_bytes().to_vec());
        self.tombstones.insert(gid, generation);
        self.ticks.remove(&gid);
        self.engine.write(b, false).expect("state-machine writes succeed or the node cannot continue");
    }

    /// Creates an empty replica of `desc` that waits for a snapshot (see [`PeerMsg::InitReplica`]).
    pub(super) fn init_replica(&mut self, desc: RangeDescriptor) {
        // Re-created after a removal only from a newer descriptor: at the removal's own
        // generation the applied configuration excluded this node, so a descriptor of that
        // generation naming it carries the leader's newer, not yet applied, configuration.
        let removed_at = self.tombstones.get(&desc.id).copied();
        if self.groups.contains_key(&desc.id)
            || removed_at.is_some_and(|g| g == u64::MAX || desc.generation < g)
            || !desc.config.contains(self.ident.node)
        {
            return;
        }
        if self.groups.values().any(|g| g.state.desc.overlaps(&desc.start, &desc.end)) {
            return; // an older replica of this span is still here; it must go first
        }
        let state = RangeState::new(desc.clone(), Timestamp::ZERO);
        let mut b = WriteBatch::new();
        delete_span(&mut b, &desc);
        b.put(Cf::Meta, range_state_key(desc.id), postcard::to_allocvec(&state).expect("encodes"));
        if removed_at.is_some() {
            b.delete(Cf::Meta, tombstone_key(desc.id));
            self.tombstones.remove(&desc.id);
        }
        self.engine.write(b, true).expect("state-machine writes succeed or the node cannot continue");
        let durable = meridian_shard::paxos::Durable {
            config: desc.config.clone(),
            awaiting_snapshot: true,
            ..Default::default()
        };
        let replica = Replica::restart(self.ident.node, self.opts.paxos.clone(), self.seed ^ desc.id.0, durable);
        self.groups.insert(desc.id, Group::new(replica, state));
        self.dirty.insert(desc.id);
    }

    /// A member of `gid` says it has no replica: if we lead `gid`, create one there and send it
    /// a snapshot.
    pub(super) fn on_unknown_group(&mut self, now: TTInterval, from: NodeId, gid: GroupId) {
        let Some(g) = self.groups.get_mut(&gid) else { return };
        if g.replica.role() != Role::Leader || !g.replica.config().contains(from) {
            return;
        }
        // A member of a fresh split has simply not applied the split yet; it will create the
        // group itself (with the data it already holds) far sooner than a snapshot would.
        if g.split_at.is_some_and(|at| local_of(now) < at.saturating_add(super::SPLIT_GRACE)) {
            return;
        }
        let mut desc = g.state.desc.clone();
        desc.config = g.replica.config().clone();
        g.replica.force_snapshot(from);
        self.dirty.insert(gid);
        self.send(from, PeerMsg::InitReplica { desc });
    }

    /// Requests only the meta range answers: served here if this node leads it, else forwarded
    /// (client requests) or refused with a hint (forwarded requests, so the forwarder chases).
    pub(super) fn handle_meta_request(&mut self, now: TTInterval, origin: Origin, request: Request) {
        let Some(g) = self.groups.get(&META_GROUP) else {
            return match origin {
                Origin::Peer { .. } => self.fail(
                    now,
                    origin,
                    ApiError::NotLeader { group: META_GROUP, leader: self.meta_leader, desc: None },
                ),
                _ => self.forward(now, origin, request, None),
            };
        };
        if g.replica.role() != Role::Leader {
            let leader = g.replica.leader_hint().filter(|l| *l != self.ident.node);
            return match origin {
                Origin::Peer { .. } => self.fail(
                    now,
                    origin,
                    ApiError::NotLeader { group: META_GROUP, leader, desc: Some(Box::new(g.state.desc.clone())) },
                ),
                _ => {
                    if leader.is_some() {
                        self.meta_leader = leader;
                    }
                    self.forward(now, origin, request, leader)
                }
            };
        }
        if !g.serves(now) {
            return self.fail(
                now,
                origin,
                ApiError::Unavailable("the meta range's leader is waiting for its lease".into()),
            );
        }
        match request {
            Request::RangeLookup { key, limit } => {
                let start = range::meta_lookup_start(&key);
                let (_, hi) = range::meta_desc_span();
                let limit = limit.clamp(1, 1000) as usize;
                let descs: Vec<RangeDescriptor> = self
                    .mvcc
                    .scan(&start, Some(&hi), Timestamp::MAX, limit)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|(_, v)| postcard::from_bytes(&v).ok())
                    .collect();
                let nodes = self.meta_nodes();
                let leaders = self.meta_leaders();
                self.respond(now, origin, Response::Ranges { descs, nodes, leaders });
            }
            Request::ClusterView => {
                let descs = self.meta_descriptors();
                let nodes = self.meta_nodes();
                let leaders = self.meta_leaders();
                self.respond(now, origin, Response::Ranges { descs, nodes, leaders });
            }
            Request::Join { info } => self.propose_meta(now, origin, |ts, from| GroupCmd::AddNode { ts, info, from }),
            Request::PutDescriptors { descs } => {
                self.propose_meta(now, origin, |ts, from| GroupCmd::PutDescriptors { ts, descs, from })
            }
            Request::PutLeader { group, hint } => {
                let me = self.ident.node;
                let g = self.groups.get_mut(&META_GROUP).expect("caller checked the meta replica");
                let ts = g.clock.assign_write(now, Timestamp::ZERO);
                let outcome = if g.replica.can_assign(now, ts) {
                    propose(g, &GroupCmd::PutLeader { ts, group, hint }).map(|()| g.replica.note_assigned(ts))
                } else {
                    Err(ApiError::Unavailable("the meta range's leader has no lease".into()))
                };
                let _ = me;
                self.dirty.insert(META_GROUP);
                match outcome {
                    Ok(()) => self.respond(now, origin, Response::Done { detail: "leader recorded".into() }),
                    Err(e) => self.fail(now, origin, e),
                }
            }
            _ => unreachable!("only meta requests are routed here"),
        }
    }

    fn propose_meta(
        &mut self,
        now: TTInterval,
        origin: Origin,
        make: impl FnOnce(Timestamp, (NodeId, Origin)) -> GroupCmd,
    ) {
        let me = self.ident.node;
        let g = self.groups.get_mut(&META_GROUP).expect("caller checked the meta replica");
        let ts = g.clock.assign_write(now, Timestamp::ZERO);
        if !g.replica.can_assign(now, ts) {
            return self.fail(now, origin, ApiError::Unavailable("the meta range's leader has no lease".into()));
        }
        let cmd = make(ts, (me, origin));
        match propose(g, &cmd) {
            Ok(()) => {
                g.replica.note_assigned(ts);
                self.dirty.insert(META_GROUP);
            }
            Err(e) => self.fail(now, origin, e),
        }
    }
}
