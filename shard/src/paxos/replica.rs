//! The replica: acceptor, learner and (when elected) proposer of one group.
//!
//! Everything here is synchronous and deterministic: time arrives as a [`TTInterval`] argument,
//! randomness from a seeded RNG, and every effect leaves through the [`Outbox`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use meridian_storage::Slot;
use meridian_truetime::{TTInterval, Timestamp};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::options::Options;
use super::outbox::{Event, InstallSnapshot, Outbox};
use super::types::{Accepted, Ballot, Command, Config, HardState, LeaseVote, Msg, NodeId, RejectReason};

/// Why a request to the replica was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// Only the leader takes proposals; `hint` is the leader this replica knows of.
    #[error("not the leader{}", hint.map(|h| format!("; try {h}")).unwrap_or_default())]
    NotLeader {
        /// The leader, if known.
        hint: Option<NodeId>,
    },
    /// The leader's proposal queue is full; retry after a short backoff.
    #[error("proposal queue is full ({0} waiting); retry later")]
    Busy(usize),
    /// A configuration change or leadership transfer is already in progress, or the request is
    /// not valid.
    #[error("{0}")]
    Invalid(String),
}

/// The durable state a replica restarts from.
#[derive(Clone, Debug, Default)]
pub struct Durable {
    /// Promised ballot and lease vote.
    pub hard_state: HardState,
    /// Every log slot still stored.
    pub log: Vec<(Slot, Accepted)>,
    /// The state machine reflects every slot up to this (from its own durable state).
    pub applied: Slot,
    /// Membership as of `applied`.
    pub config: Config,
    /// The replica was created empty on a node that lacks the range's data: it accepts nothing
    /// and never campaigns until a snapshot arrives.
    pub awaiting_snapshot: bool,
}

/// What role the replica plays now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Follows (or waits for) a leader.
    Follower,
    /// Lost its leader; asking whether a majority agrees before raising its ballot.
    Probing,
    /// Running phase 1.
    Candidate,
    /// Completed phase 1; proposes.
    Leader,
}

/// A pre-vote in progress: no state changes anywhere until a majority says there is no leader.
#[derive(Debug)]
struct Probe {
    ballot: Ballot,
    oks: BTreeSet<NodeId>,
}

/// Phase 1 in progress.
#[derive(Debug)]
struct Phase1 {
    ballot: Ballot,
    from: Slot,
    /// Voters whose promise (all chunks) has arrived.
    complete: BTreeSet<NodeId>,
    /// Highest-ballot accepted value per slot among the promises.
    merged: BTreeMap<Slot, Accepted>,
    transfer: bool,
}

/// What the leader knows of one peer.
#[derive(Debug, Clone)]
struct Peer {
    /// Every slot up to this is accepted by the peer at our ballot (or chosen there).
    matched: Slot,
    /// Next slot to send.
    next: Slot,
    /// Lowest slot sent since the last go-back: a reply whose prefix ends below it reveals a
    /// hole no message in flight can fill, so we go back at once instead of on a timer.
    sent_from: Slot,
    last_send: Timestamp,
    /// When `matched` last moved (or we last went back to resend): retransmission is due when
    /// it stands still for `retransmit` while entries are outstanding.
    last_progress: Timestamp,
    /// When we last asked the shell for a snapshot for this peer.
    snapshot_asked: Option<Timestamp>,
}

#[derive(Debug)]
struct Leader {
    ballot: Ballot,
    /// Next slot to assign.
    next: Slot,
    /// Lease reads need every slot up to this chosen and applied: the values re-proposed after
    /// phase 1 include everything chosen by earlier leaders.
    complete_at: Slot,
    peers: BTreeMap<NodeId, Peer>,
    /// Per voter, the latest `lease_at` it granted a vote for (self included).
    votes: BTreeMap<NodeId, Timestamp>,
    /// Our own vote, counted once the outbox carrying it has been handed to the shell.
    self_vote_unpersisted: Option<Timestamp>,
    pending: VecDeque<Command>,
    /// Slot of a configuration change not yet chosen; no slot after it is assigned meanwhile.
    config_inflight: Option<Slot>,
    lease_reported: bool,
    /// Largest timestamp assigned under this leadership (Spanner §4.1.1 `s_max`).
    s_max: Timestamp,
    transfer: Option<(NodeId, Timestamp)>,
}

enum RoleState {
    Follower,
    Probing(Probe),
    Candidate(Phase1),
    Leader(Box<Leader>),
}

/// One replica of a Paxos group. See the module documentation for the protocol.
pub struct Replica {
    id: NodeId,
    opts: Options,
    rng: ChaCha8Rng,
    hs: HardState,
    /// Slots above `log_start - 1`; slots at or below `chosen` are chosen.
    log: BTreeMap<Slot, Accepted>,
    /// The log holds nothing below this (compacted or covered by a snapshot).
    log_start: Slot,
    chosen: Slot,
    applied: Slot,
    /// `applied` as of the last `ready`: the shell has written everything up to it, so the log
    /// below it may be compacted.
    applied_handed: Slot,
    /// Every slot in `(chosen, contiguous]` holds a value accepted at `hs.promised`.
    contiguous: Slot,
    config: Config,
    awaiting_snapshot: bool,
    role: RoleState,
    leader_hint: Option<NodeId>,
    /// Local time we last heard from the leader we follow.
    last_heard: Option<Timestamp>,
    election_deadline: Timestamp,
    max_round_seen: u64,
    out: Outbox,
}

/// Shortest interval between two ticks a leader asks for.
const TICK_MIN: Duration = Duration::from_millis(1);

/// Local time: the midpoint of the interval, i.e. this node's clock reading.
pub(crate) fn local(now: TTInterval) -> Timestamp {
    now.earliest.saturating_add(now.width() / 2)
}

impl Replica {
    /// A new replica of a new group with membership `config`, nothing in its log.
    pub fn new(id: NodeId, opts: Options, seed: u64, config: Config) -> Self {
        Self::restart(id, opts, seed, Durable { config, ..Default::default() })
    }

    /// A replica restarted from its durable state.
    pub fn restart(id: NodeId, opts: Options, seed: u64, durable: Durable) -> Self {
        if let Err(e) = opts.validate() {
            panic!("{e}");
        }
        let log: BTreeMap<Slot, Accepted> = durable.log.into_iter().collect();
        let log_start =
            log.keys().next().copied().unwrap_or(Slot(durable.applied.0 + 1)).min(Slot(durable.applied.0 + 1));
        let max_round_seen = durable.hard_state.promised.round;
        let mut r = Replica {
            id,
            rng: ChaCha8Rng::seed_from_u64(seed),
            opts,
            hs: durable.hard_state,
            log,
            log_start,
            chosen: durable.applied,
            applied: durable.applied,
            applied_handed: durable.applied,
            contiguous: durable.applied,
            config: durable.config,
            awaiting_snapshot: durable.awaiting_snapshot,
            role: RoleState::Follower,
            leader_hint: None,
            last_heard: None,
            election_deadline: Timestamp::ZERO,
            max_round_seen,
            out: Outbox::default(),
        };
        r.advance_contiguous();
        r
    }

    // ----- queries -----

    /// This replica's node.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Current role.
    pub fn role(&self) -> Role {
        match self.role {
            RoleState::Follower => Role::Follower,
            RoleState::Probing(_) => Role::Probing,
            RoleState::Candidate(_) => Role::Candidate,
            RoleState::Leader(_) => Role::Leader,
        }
    }

    /// The ballot this replica leads with, if it leads.
    pub fn leader_ballot(&self) -> Option<Ballot> {
        match &self.role {
            RoleState::Leader(l) => Some(l.ballot),
            _ => None,
        }
    }

    /// The leader this replica believes in (itself if it leads).
    pub fn leader_hint(&self) -> Option<NodeId> {
        match self.role {
            RoleState::Leader(_) => Some(self.id),
            _ => self.leader_hint,
        }
    }

    /// Highest promised ballot.
    pub fn promised(&self) -> Ballot {
        self.hs.promised
    }

    /// Every slot up to this is chosen.
    pub fn chosen(&self) -> Slot {
        self.chosen
    }

    /// Every slot up to this has been handed to the shell for applying.
    pub fn applied(&self) -> Slot {
        self.applied
    }

    /// Current membership (as of the chosen prefix).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// First slot still in the log.
    pub fn log_start(&self) -> Slot {
        self.log_start
    }

    /// The last slot in the log, if any.
    pub fn last_slot(&self) -> Slot {
        self.log.keys().next_back().copied().unwrap_or(Slot(self.log_start.0.saturating_sub(1)))
    }

    /// The value this replica accepted (or knows chosen) in `slot`.
    pub fn entry(&self, slot: Slot) -> Option<&Accepted> {
        self.log.get(&slot)
    }

    /// The leader's view of how far `peer` has accepted (every slot up to it).
    pub fn peer_matched(&self, peer: NodeId) -> Option<Slot> {
        match &self.role {
            RoleState::Leader(l) => l.peers.get(&peer).map(|p| p.matched),
            _ => None,
        }
    }

    /// Whether this replica waits for a snapshot before it can take part.
    pub fn awaiting_snapshot(&self) -> bool {
        self.awaiting_snapshot
    }

    /// Makes the leader send `peer` a snapshot next (the peer's replica was just created empty).
    pub fn force_snapshot(&mut self, peer: NodeId) {
        if let RoleState::Leader(l) = &mut self.role
            && let Some(p) = l.peers.get_mut(&peer)
        {
            p.next = Slot(0);
            p.sent_from = Slot(0);
            p.snapshot_asked = None;
        }
    }

    /// The outstanding lease vote.
    pub fn lease_vote(&self) -> Option<LeaseVote> {
        self.hs.vote
    }

    /// The end of this leader's lease if it holds one at `now` (`TT.now().latest < end`).
    pub fn lease_end(&self, now: TTInterval) -> Option<Timestamp> {
        let RoleState::Leader(l) = &self.role else { return None };
        let end = self.lease_end_of(l)?;
        (now.latest < end).then_some(end)
    }

    /// Whether this leader may serve a lease read at `now`: it holds a lease and has chosen and
    /// handed to the shell every slot up to the end of what it re-proposed after phase 1, so its
    /// state machine includes every write acknowledged before the read (Spanner §4.1.3: reads at
    /// the leader are served within its lease).
    pub fn can_serve_lease_read(&self, now: TTInterval) -> bool {
        if self.opts.unsafe_switches.stale_reads {
            return true;
        }
        match &self.role {
            RoleState::Leader(l) => {
                self.lease_end(now).is_some() && self.applied >= l.complete_at && l.transfer.is_none()
            }
            _ => false,
        }
    }

    /// Whether the leader may assign timestamp `ts` now: inside its lease (Spanner §4.1.1:
    /// timestamps are assigned within the leader's lease interval) and not abdicating.
    pub fn can_assign(&self, now: TTInterval, ts: Timestamp) -> bool {
        match &self.role {
            RoleState::Leader(l) => l.transfer.is_none() && self.lease_end(now).is_some_and(|end| ts < end),
            _ => false,
        }
    }

    /// Records that the leader assigned `ts`; abdication waits until `TT.after(s_max)`.
    ///
    /// # Panics
    /// If this replica does not lead: assigning timestamps without a lease breaks the
    /// disjointness of leaders' timestamps.
    pub fn note_assigned(&mut self, ts: Timestamp) {
        match &mut self.role {
            RoleState::Leader(l) => l.s_max = l.s_max.max(ts),
            _ => panic!("lease invariant: only a leader assigns timestamps (tried {ts:?})"),
        }
    }

    /// Largest timestamp this leader assigned.
    pub fn s_max(&self) -> Option<Timestamp> {
        match &self.role {
            RoleState::Leader(l) => Some(l.s_max),
            _ => None,
        }
    }

    fn lease_end_of(&self, l: &Leader) -> Option<Timestamp> {
        let mut asks: Vec<Timestamp> = self.config.voters.iter().filter_map(|v| l.votes.get(v).copied()).collect();
        let q = self.config.quorum();
        if asks.len() < q {
            return None;
        }
        asks.sort_unstable_by(|a, b| b.cmp(a));
        // The q-th newest vote: a quorum voted at or after it (Spanner Appendix A:
        // lease = [.., min over a quorum of v_r + lease_length]).
        Some(asks[q - 1].saturating_add(self.opts.lease))
    }

    // ----- inputs -----

    /// Handles a message from `from`.
    pub fn receive(&mut self, now: TTInterval, from: NodeId, msg: Msg) {
        self.max_round_seen = self.max_round_seen.max(msg.ballot().round);
        match msg {
            Msg::Probe { ballot, from: slot } => self.on_probe(now, from, ballot, slot),
            Msg::ProbeOk { ballot } => self.on_probe_ok(now, from, ballot),
            Msg::Prepare { ballot, from: slot, transfer } => self.on_prepare(now, from, ballot, slot, transfer),
            Msg::Promise { ballot, entries, more } => self.on_promise(now, from, ballot, entries, more),
            Msg::Accept { ballot, entries, chosen, lease_at } => {
                self.on_accept(now, from, ballot, entries, chosen, lease_at)
            }
            Msg::Accepted { ballot, upto, vote, needs_snapshot } => {
                self.on_accepted(now, from, ballot, upto, vote, needs_snapshot)
            }
            Msg::Reject { ballot, promised, chosen, reason } => {
                self.on_reject(now, from, ballot, promised, chosen, reason)
            }
            Msg::Snapshot { ballot, slot, config, data } => self.on_snapshot(now, from, ballot, slot, config, data),
            Msg::TimeoutNow { ballot } => {
                if ballot == self.hs.promised && self.config.voters.contains(&self.id) && !self.awaiting_snapshot {
                    self.campaign_inner(now, true);
                }
            }
            Msg::Release { ballot } => {
                if self.hs.vote.is_some_and(|v| v.ballot == ballot) {
                    self.hs.vote = None;
                    self.persist_hard_state();
                }
            }
        }
    }

    /// Queues `cmd` for a slot. Only the leader accepts proposals; they are assigned slots in
    /// [`Replica::ready`], batched with whatever else arrived meanwhile.
    pub fn propose(&mut self, cmd: Command) -> Result<(), ProposeError> {
        let hint = self.leader_hint();
        let RoleState::Leader(l) = &mut self.role else { return Err(ProposeError::NotLeader { hint }) };
        if l.transfer.is_some() {
            return Err(ProposeError::NotLeader { hint: l.transfer.map(|t| t.0) });
        }
        if l.pending.len() >= self.opts.pending_max {
            return Err(ProposeError::Busy(l.pending.len()));
        }
        if let Command::Config(_) = cmd {
            return Err(ProposeError::Invalid("use change_config for membership changes".into()));
        }
        l.pending.push_back(cmd);
        Ok(())
    }

    /// Proposes a single-step membership change (add a learner, promote one, remove one).
    pub fn change_config(&mut self, next: Config) -> Result<(), ProposeError> {
        let hint = self.leader_hint();
        let current = self.config.clone();
        let RoleState::Leader(l) = &mut self.role else { return Err(ProposeError::NotLeader { hint }) };
        if l.config_inflight.is_some() || l.pending.iter().any(|c| matches!(c, Command::Config(_))) {
            return Err(ProposeError::Invalid("a configuration change is already in progress".into()));
        }
        current.check_single_change(&next).map_err(ProposeError::Invalid)?;
        for promoted in next.voters.difference(&current.voters) {
            // A lagging voter would count towards quorums it cannot yet help form.
            let matched = l.peers.get(promoted).map_or(Slot(0), |p| p.matched);
            if matched < self.chosen {
                return Err(ProposeError::Invalid(format!(
                    "learner {promoted} is not caught up (has slot {} of {}); promote it once it is",
                    matched.0, self.chosen.0
                )));
            }
        }
        l.pending.push_back(Command::Config(next));
        Ok(())
    }

    /// Starts handing leadership to `to`: proposals stop, and once `to` has every slot and
    /// `TT.after(s_max)` holds, this leader releases its lease and tells `to` to campaign.
    pub fn transfer_leadership(&mut self, now: TTInterval, to: NodeId) -> Result<(), ProposeError> {
        let hint = self.leader_hint();
        let deadline = local(now).saturating_add(self.opts.election_timeout_max);
        let RoleState::Leader(l) = &mut self.role else { return Err(ProposeError::NotLeader { hint }) };
        if to == self.id || !self.config.voters.contains(&to) {
            return Err(ProposeError::Invalid(format!("{to} is not another voter of this group")));
        }
        l.transfer = Some((to, deadline));
        Ok(())
    }

    /// Starts an election now (bootstrap, tests).
    pub fn campaign(&mut self, now: TTInterval) {
        if self.config.voters.contains(&self.id) && !self.awaiting_snapshot {
            self.campaign_inner(now, false);
        }
    }

    /// The shell built the snapshot requested for `to` at slot `slot` (its applied slot).
    pub fn snapshot_ready(&mut self, now: TTInterval, to: NodeId, slot: Slot, data: Bytes) {
        assert!(
            slot <= self.applied,
            "snapshot invariant: a snapshot covers only applied slots ({slot} > {})",
            self.applied
        );
        let config = self.config.clone();
        let RoleState::Leader(l) = &mut self.role else { return };
        let ballot = l.ballot;
        if let Some(p) = l.peers.get_mut(&to) {
            p.next = p.next.max(Slot(slot.0 + 1));
            p.sent_from = p.next;
            p.last_send = local(now);
            self.out.messages.push((to, Msg::Snapshot { ballot, slot, config, data }));
        }
    }

    /// Runs timers: elections, retransmissions, heartbeats, lease renewal, transfer progress.
    pub fn tick(&mut self, now: TTInterval) {
        let t = local(now);
        match &mut self.role {
            RoleState::Follower | RoleState::Probing(_) | RoleState::Candidate(_) => {
                if t >= self.election_deadline && self.config.voters.contains(&self.id) && !self.awaiting_snapshot {
                    if self.election_deadline == Timestamp::ZERO {
                        // First tick after start: arm the timer instead of campaigning at once.
                        self.reset_election_timer(t);
                    } else {
                        self.start_probe(now);
                    }
                }
            }
            RoleState::Leader(l) => {
                for p in l.peers.values_mut() {
                    if self.opts.unsafe_switches.no_retransmit {
                        break;
                    }
                    if p.matched < Slot(p.next.0.saturating_sub(1))
                        && t >= p.last_progress.saturating_add(self.opts.retransmit)
                    {
                        // No progress for a while with entries outstanding: something was lost
                        // (a message, or the peer's unsynced writes in a crash). Go back.
                        p.next = Slot(p.matched.0 + 1);
                        p.sent_from = p.next;
                        p.last_progress = t;
                    }
                }
                if let Some((_, deadline)) = l.transfer
                    && t >= deadline
                {
                    l.transfer = None; // the target did not catch up in time: keep leading
                }
            }
        }
    }

    // ----- acceptor -----

    fn persist_hard_state(&mut self) {
        self.out.hard_state = Some(self.hs.clone());
    }

    fn reject(&mut self, to: NodeId, ballot: Ballot, reason: RejectReason) {
        let msg = Msg::Reject { ballot, promised: self.hs.promised, chosen: self.chosen, reason };
        self.out.messages.push((to, msg));
    }

    /// Adopts a higher ballot: promises it and gives up any leadership or campaign.
    fn adopt(&mut self, ballot: Ballot) {
        if ballot > self.hs.promised {
            self.hs.promised = ballot;
            self.persist_hard_state();
            // Values accepted at the old ballot no longer count as accepted at the new one.
            self.contiguous = self.chosen;
            self.step_down();
        }
    }

    fn step_down(&mut self) {
        match std::mem::replace(&mut self.role, RoleState::Follower) {
            RoleState::Follower | RoleState::Probing(_) => {}
            RoleState::Candidate(p) => self.out.events.push(Event::SteppedDown { ballot: p.ballot }),
            RoleState::Leader(l) => {
                self.out.events.push(Event::SteppedDown { ballot: l.ballot });
                if !l.pending.is_empty() {
                    self.out.events.push(Event::Dropped(l.pending.into_iter().collect()));
                }
            }
        }
    }

    fn reset_election_timer(&mut self, t: Timestamp) {
        let (lo, hi) = (self.opts.election_timeout_min, self.opts.election_timeout_max);
        let span = u64::try_from((hi - lo).as_nanos()).unwrap_or(u64::MAX).max(1);
        self.election_deadline = t.saturating_add(lo + Duration::from_nanos(self.rng.random_range(0..span)));
    }

    fn on_prepare(&mut self, now: TTInterval, from: NodeId, ballot: Ballot, slot: Slot, transfer: bool) {
        let t = local(now);
        if ballot < self.hs.promised {
            return self.reject(from, ballot, RejectReason::Ballot);
        }
        if ballot > self.hs.promised {
            if let Some(reason) = self.refuse_candidate(t, from, slot, transfer) {
                return self.reject(from, ballot, reason);
            }
            self.adopt(ballot);
            self.leader_hint = None;
            self.reset_election_timer(t);
        }
        // ballot == promised: (re)send the promise; duplicates are harmless.
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        let mut more = None;
        for (s, a) in self.log.range(slot..) {
            if bytes > self.opts.promise_bytes_max && !entries.is_empty() {
                more = Some(*s);
                break;
            }
            bytes += command_size(&a.cmd);
            entries.push((*s, a.clone()));
        }
        self.out.messages.push((from, Msg::Promise { ballot, entries, more }));
    }

    /// Why this replica would not support `from`'s candidacy, if it would not.
    fn refuse_candidate(&self, t: Timestamp, from: NodeId, from_slot: Slot, transfer: bool) -> Option<RejectReason> {
        let leader_alive = self.leader_hint().is_some_and(|l| l != from)
            && match self.role {
                RoleState::Leader(_) => true,
                _ => self.last_heard.is_some_and(|h| t < h.saturating_add(self.opts.election_timeout_min)),
            };
        if leader_alive && !transfer {
            return Some(RejectReason::LeaderAlive);
        }
        if from_slot < self.log_start {
            // The candidate needs values from slots we already compacted away; we could not
            // report them in a promise. A more up-to-date replica will win instead.
            return Some(RejectReason::Behind);
        }
        None
    }

    fn on_probe(&mut self, now: TTInterval, from: NodeId, ballot: Ballot, from_slot: Slot) {
        if ballot <= self.hs.promised {
            return self.reject(from, ballot, RejectReason::Ballot);
        }
        match self.refuse_candidate(local(now), from, from_slot, false) {
            Some(reason) => self.reject(from, ballot, reason),
            None => self.out.messages.push((from, Msg::ProbeOk { ballot })),
        }
    }

    fn on_accept(
        &mut self,
        now: TTInterval,
        from: NodeId,
        ballot: Ballot,
        entries: Vec<(Slot, Command)>,
        leader_chosen: Slot,
        lease_at: Timestamp,
    ) {
        if ballot < self.hs.promised && !self.opts.unsafe_switches.ignore_promises {
            return self.reject(from, ballot, RejectReason::Ballot);
        }
        self.adopt(ballot);
        match &self.role {
            // Our own ballot never arrives in an Accept from someone else.
            RoleState::Leader(l) => assert_ne!(l.ballot, ballot, "ballot uniqueness: two leaders with ballot {ballot}"),
            RoleState::Candidate(p) => {
                assert_ne!(p.ballot, ballot, "ballot uniqueness: two proposers with ballot {ballot}")
            }
            // A live leader answers the question the probe was asking.
            RoleState::Probing(_) => self.role = RoleState::Follower,
            RoleState::Follower => {}
        }
        let t = local(now);
        self.leader_hint = Some(ballot.node);
        self.last_heard = Some(t);
        self.reset_election_timer(t);
        if self.awaiting_snapshot {
            let vote = self.maybe_vote(now, ballot, lease_at);
            let msg = Msg::Accepted { ballot, upto: self.contiguous, vote, needs_snapshot: true };
            self.out.messages.push((from, msg));
            return;
        }
        for (s, cmd) in entries {
            if s <= self.chosen || s < self.log_start {
                continue; // already chosen here: the value is necessarily the same
            }
            let a = Accepted { ballot, cmd };
            self.out.entries.insert(s, a.clone());
            self.log.insert(s, a);
        }
        self.advance_contiguous();
        self.learn(Slot(leader_chosen.0.min(self.contiguous.0)));
        let vote = self.maybe_vote(now, ballot, lease_at);
        self.out.messages.push((from, Msg::Accepted { ballot, upto: self.contiguous, vote, needs_snapshot: false }));
    }

    /// Grants (and persists) a lease vote for `ballot` if the single-vote rule allows
    /// (Spanner Appendix A): no vote outstanding, or one for the same leader, or one that has
    /// definitely expired (`TT.after(end)`). Returns the vote now held for `ballot`.
    fn maybe_vote(&mut self, now: TTInterval, ballot: Ballot, lease_at: Timestamp) -> Option<LeaseVote> {
        let end = now.latest.saturating_add(self.opts.lease);
        let allowed = match self.hs.vote {
            None => true,
            Some(v) if v.ballot == ballot => true,
            Some(v) => now.after(v.end) || self.opts.unsafe_switches.double_lease_vote,
        };
        if !allowed {
            return None;
        }
        // Re-persisting on every message would add a write per heartbeat for nothing: extend
        // only when the new end moves the old one by a noticeable fraction of the lease.
        let granularity = self.opts.lease / 16;
        match self.hs.vote {
            Some(v) if v.ballot == ballot && end <= v.end.saturating_add(granularity) => Some(v),
            _ => {
                let vote = LeaseVote { ballot, end, asked_at: lease_at };
                self.hs.vote = Some(vote);
                self.persist_hard_state();
                Some(vote)
            }
        }
    }

    fn on_snapshot(&mut self, now: TTInterval, from: NodeId, ballot: Ballot, slot: Slot, config: Config, data: Bytes) {
        if ballot < self.hs.promised {
            return self.reject(from, ballot, RejectReason::Ballot);
        }
        self.adopt(ballot);
        if let RoleState::Probing(_) = self.role {
            self.role = RoleState::Follower;
        }
        let t = local(now);
        self.leader_hint = Some(ballot.node);
        self.last_heard = Some(t);
        self.reset_election_timer(t);
        if slot > self.chosen || self.awaiting_snapshot {
            self.awaiting_snapshot = false;
            self.log = self.log.split_off(&Slot(slot.0 + 1));
            self.out.entries.retain(|s, _| *s > slot);
            self.log_start = Slot(slot.0 + 1);
            self.out.truncate_below = Some(self.log_start);
            self.out.snapshot = Some(InstallSnapshot { slot, config: config.clone(), data });
            // The snapshot replaces whatever the shell had not applied yet.
            self.out.apply.clear();
            self.chosen = slot;
            self.applied = slot;
            self.applied_handed = slot;
            self.contiguous = slot;
            self.config = config;
            self.advance_contiguous();
        }
        let vote = self.hs.vote.filter(|v| v.ballot == ballot);
        self.out.messages.push((from, Msg::Accepted { ballot, upto: self.contiguous, vote, needs_snapshot: false }));
    }

    fn advance_contiguous(&mut self) {
        if self.contiguous < self.chosen {
            self.contiguous = self.chosen;
        }
        while let Some(a) = self.log.get(&Slot(self.contiguous.0 + 1)) {
            if a.ballot != self.hs.promised {
                break;
            }
            self.contiguous = Slot(self.contiguous.0 + 1);
        }
    }

    // ----- learner -----

    /// Marks every slot up to `upto` chosen and hands new ones to the shell for applying.
    fn learn(&mut self, upto: Slot) {
        if upto <= self.chosen {
            return;
        }
        for s in self.chosen.0 + 1..=upto.0 {
            let a = self
                .log
                .get(&Slot(s))
                .unwrap_or_else(|| panic!("learning invariant: slot {s} is chosen but missing from {}'s log", self.id));
            self.out.apply.push((Slot(s), a.cmd.clone()));
            if let Command::Config(c) = &a.cmd {
                self.config = c.clone();
            }
        }
        self.chosen = upto;
        self.applied = upto;
        self.on_config_applied();
    }

    fn on_config_applied(&mut self) {
        if !self.config.contains(self.id) && !self.out.events.contains(&Event::Removed) {
            self.out.events.push(Event::Removed);
        }
        let (me, config) = (self.id, self.config.clone());
        if let RoleState::Leader(l) = &mut self.role {
            if !config.voters.contains(&me) {
                self.step_down();
                return;
            }
            let start = Slot(self.chosen.0 + 1);
            for m in config.members() {
                if m != me {
                    l.peers.entry(m).or_insert(Peer {
                        matched: Slot(0),
                        next: start,
                        sent_from: start,
                        last_send: Timestamp::ZERO,
                        last_progress: Timestamp::ZERO,
                        snapshot_asked: None,
                    });
                }
            }
            l.peers.retain(|id, _| config.contains(*id));
            l.votes.retain(|id, _| config.voters.contains(id));
            if l.config_inflight.is_some_and(|c| c <= self.chosen) {
                l.config_inflight = None;
            }
        }
    }

    // ----- candidate -----

    /// Pre-vote before raising the ballot (see [`Msg::Probe`]).
    fn start_probe(&mut self, now: TTInterval) {
        let t = local(now);
        self.step_down();
        let ballot = Ballot { round: self.max_round_seen.max(self.hs.promised.round) + 1, node: self.id };
        self.reset_election_timer(t);
        let from = Slot(self.chosen.0 + 1);
        for v in self.config.voters.iter().filter(|v| **v != self.id) {
            self.out.messages.push((*v, Msg::Probe { ballot, from }));
        }
        self.role = RoleState::Probing(Probe { ballot, oks: BTreeSet::from([self.id]) });
        self.on_probe_ok(now, self.id, ballot);
    }

    fn on_probe_ok(&mut self, now: TTInterval, from: NodeId, ballot: Ballot) {
        let RoleState::Probing(p) = &mut self.role else { return };
        if p.ballot != ballot {
            return;
        }
        p.oks.insert(from);
        if self.config.is_quorum(&p.oks) {
            self.campaign_inner(now, false);
        }
    }

    fn campaign_inner(&mut self, now: TTInterval, transfer: bool) {
        let t = local(now);
        self.step_down();
        let ballot = Ballot { round: self.max_round_seen.max(self.hs.promised.round) + 1, node: self.id };
        self.max_round_seen = ballot.round;
        self.hs.promised = ballot;
        self.persist_hard_state();
        self.contiguous = self.chosen;
        self.leader_hint = None;
        self.reset_election_timer(t);
        let from = Slot(self.chosen.0 + 1);
        let merged: BTreeMap<Slot, Accepted> = self.log.range(from..).map(|(s, a)| (*s, a.clone())).collect();
        let phase = Phase1 { ballot, from, complete: BTreeSet::from([self.id]), merged, transfer };
        for v in self.config.voters.iter().filter(|v| **v != self.id) {
            self.out.messages.push((*v, Msg::Prepare { ballot, from, transfer }));
        }
        self.role = RoleState::Candidate(phase);
        self.maybe_finish_phase1(now);
    }

    fn on_promise(
        &mut self,
        now: TTInterval,
        from: NodeId,
        ballot: Ballot,
        entries: Vec<(Slot, Accepted)>,
        more: Option<Slot>,
    ) {
        let RoleState::Candidate(p) = &mut self.role else { return };
        if p.ballot != ballot {
            return;
        }
        for (s, a) in entries {
            if s < p.from {
                continue;
            }
            match p.merged.get(&s) {
                Some(cur) if cur.ballot >= a.ballot => {}
                _ => {
                    p.merged.insert(s, a);
                }
            }
        }
        match more {
            Some(next) => {
                let transfer = p.transfer;
                self.out.messages.push((from, Msg::Prepare { ballot, from: next, transfer }));
            }
            None => {
                p.complete.insert(from);
            }
        }
        self.maybe_finish_phase1(now);
    }

    /// Phase 1 is done once complete promises come from a majority of the chosen configuration
    /// and of every configuration found in the promised values: with single-step changes, one
    /// of those majorities intersects whichever majority may have chosen each slot.
    fn maybe_finish_phase1(&mut self, now: TTInterval) {
        let RoleState::Candidate(p) = &self.role else { return };
        if !self.config.is_quorum(&p.complete) {
            return;
        }
        for a in p.merged.values() {
            if let Command::Config(c) = &a.cmd
                && !c.is_quorum(&p.complete)
            {
                return;
            }
        }
        let RoleState::Candidate(p) = std::mem::replace(&mut self.role, RoleState::Follower) else {
            unreachable!("checked above")
        };
        let ballot = p.ballot;
        let last = p.merged.keys().next_back().copied().unwrap_or(Slot(p.from.0 - 1)).max(Slot(p.from.0 - 1));
        // Re-propose every slot from `from` to `last` at our ballot: the highest-ballot value
        // reported, or a no-op for a hole (Paxos phase 2 for each open slot).
        let mut config_inflight = None;
        for s in p.from.0..=last.0 {
            let cmd = p.merged.get(&Slot(s)).map(|a| a.cmd.clone()).unwrap_or(Command::Noop);
            if matches!(cmd, Command::Config(_)) {
                config_inflight = Some(Slot(s));
            }
            let a = Accepted { ballot, cmd };
            self.out.entries.insert(Slot(s), a.clone());
            self.log.insert(Slot(s), a);
        }
        self.contiguous = last.max(self.chosen);
        let t = local(now);
        let peers = self
            .config
            .members()
            .into_iter()
            .filter(|m| *m != self.id)
            .map(|m| {
                (
                    m,
                    Peer {
                        matched: Slot(0),
                        next: p.from,
                        sent_from: p.from,
                        last_send: Timestamp::ZERO,
                        last_progress: t,
                        snapshot_asked: None,
                    },
                )
            })
            .collect();
        self.leader_hint = Some(self.id);
        self.role = RoleState::Leader(Box::new(Leader {
            ballot,
            next: Slot(last.0 + 1),
            complete_at: last.max(self.chosen),
            peers,
            votes: BTreeMap::new(),
            self_vote_unpersisted: None,
            pending: VecDeque::new(),
            config_inflight,
            lease_reported: false,
            s_max: Timestamp::ZERO,
            transfer: None,
        }));
        self.out.events.push(Event::BecameLeader { ballot });
        self.leader_advance_chosen();
    }

    fn on_reject(
        &mut self,
        now: TTInterval,
        from: NodeId,
        ballot: Ballot,
        promised: Ballot,
        _chosen: Slot,
        reason: RejectReason,
    ) {
        let _ = from;
        let ours = match &self.role {
            RoleState::Probing(p) => p.ballot,
            RoleState::Candidate(p) => p.ballot,
            RoleState::Leader(l) => l.ballot,
            RoleState::Follower => return,
        };
        if ballot != ours {
            return;
        }
        self.max_round_seen = self.max_round_seen.max(promised.round);
        match reason {
            RejectReason::Ballot if matches!(self.role, RoleState::Probing(_)) => {
                // Someone promised a ballot at least as high: probe again later, above it.
                self.step_down();
            }
            RejectReason::Ballot => {
                if promised > ours {
                    self.adopt(promised);
                    self.leader_hint = Some(promised.node);
                }
            }
            RejectReason::Behind | RejectReason::LeaderAlive => {
                if matches!(self.role, RoleState::Probing(_) | RoleState::Candidate(_)) {
                    // Someone else is better placed; back off and let them win.
                    self.step_down();
                    self.reset_election_timer(local(now));
                }
            }
        }
    }

    // ----- leader -----

    fn on_accepted(
        &mut self,
        now: TTInterval,
        from: NodeId,
        ballot: Ballot,
        upto: Slot,
        vote: Option<LeaseVote>,
        needs_snapshot: bool,
    ) {
        let RoleState::Leader(l) = &mut self.role else { return };
        if l.ballot != ballot {
            return;
        }
        let t = local(now);
        if needs_snapshot
            && let Some(p) = l.peers.get_mut(&from)
            && p.next != Slot(0)
        {
            p.next = Slot(0);
            p.sent_from = Slot(0);
        }
        if let Some(p) = l.peers.get_mut(&from) {
            if upto > p.matched {
                p.matched = upto;
                p.last_progress = t;
            }
            // A replica waiting for a snapshot keeps `next` at 0 (a snapshot is due), also when
            // it has accepted nothing yet: moving it to `matched + 1` would send it log entries
            // it refuses, forever.
            if p.next <= p.matched && !needs_snapshot {
                p.next = Slot(p.matched.0 + 1);
            }
            if Slot(upto.0 + 1) < p.sent_from && !self.opts.unsafe_switches.no_retransmit {
                p.next = Slot(upto.0 + 1);
                p.sent_from = p.next;
            }
        }
        if let Some(v) = vote
            && v.ballot == ballot
            && self.config.voters.contains(&from)
        {
            let e = l.votes.entry(from).or_insert(v.asked_at);
            *e = (*e).max(v.asked_at);
        }
        self.leader_advance_chosen();
    }

    /// Advances the chosen prefix: slot `s` is chosen once a majority of the configuration in
    /// effect at `s` accepted it at our ballot.
    fn leader_advance_chosen(&mut self) {
        let RoleState::Leader(l) = &self.role else { return };
        let mut running = self.config.clone();
        let mut s = Slot(self.chosen.0 + 1);
        while s < l.next {
            let acked = running
                .voters
                .iter()
                .filter(|v| {
                    if **v == self.id { s <= self.contiguous } else { l.peers.get(v).is_some_and(|p| p.matched >= s) }
                })
                .count();
            if acked < running.quorum() {
                break;
            }
            if let Some(Accepted { cmd: Command::Config(c), .. }) = self.log.get(&s) {
                running = c.clone();
            }
            s = Slot(s.0 + 1);
        }
        self.learn(Slot(s.0 - 1));
    }

    /// Assigns slots to queued proposals while the leader may: phase 2 under a lease, inside the
    /// window, no configuration change in flight, not abdicating.
    fn assign_pending(&mut self, now: TTInterval) {
        let has_lease = self.lease_end(now).is_some();
        let chosen = self.chosen;
        let window = self.opts.window_slots;
        let RoleState::Leader(l) = &mut self.role else { return };
        while let Some(cmd) = l.pending.front() {
            let app = matches!(cmd, Command::App(_));
            if l.transfer.is_some() || l.config_inflight.is_some() || (app && !has_lease) {
                break;
            }
            if l.next.0 - chosen.0 > window {
                break;
            }
            let cmd = l.pending.pop_front().expect("front() was Some");
            let slot = l.next;
            if matches!(cmd, Command::Config(_)) {
                l.config_inflight = Some(slot);
            }
            let a = Accepted { ballot: l.ballot, cmd };
            self.out.entries.insert(slot, a.clone());
            self.log.insert(slot, a);
            l.next = Slot(slot.0 + 1);
            self.contiguous = slot;
        }
    }

    fn leader_send(&mut self, now: TTInterval) {
        let t = local(now);
        let log_start = self.log_start;
        let chosen = self.chosen;
        let renew = {
            let RoleState::Leader(l) = &self.role else { return };
            // Ask for fresh votes once half the lease is used up.
            match self.lease_end_of(l) {
                None => true,
                Some(end) => now.latest.saturating_add(self.opts.lease / 2) >= end,
            }
        };
        // Our own vote, by the same rule as everyone's; counted next round, once persisted. It
        // is renewed only while enough others renew theirs: a leader cut off from its group
        // must not keep itself from voting for the next leader once it could.
        let ballot = self.leader_ballot().expect("leader_send runs only at a leader");
        let others_renewing = {
            let RoleState::Leader(l) = &self.role else { return };
            let recent = now.earliest.saturating_sub(self.opts.lease / 2);
            l.votes.iter().filter(|(id, at)| **id != self.id && **at >= recent).count() + 1 >= self.config.quorum()
        };
        let first_vote = self.hs.vote.is_none_or(|v| v.ballot != ballot);
        let self_vote = if self.config.voters.contains(&self.id) && (first_vote || others_renewing) {
            self.maybe_vote(now, ballot, now.earliest)
        } else {
            None
        };
        let RoleState::Leader(l) = &mut self.role else { return };
        if let Some(asked) = l.self_vote_unpersisted.take() {
            let e = l.votes.entry(self.id).or_insert(asked);
            *e = (*e).max(asked);
        }
        if let Some(v) = self_vote {
            l.self_vote_unpersisted = Some(v.asked_at);
        }
        for (id, p) in l.peers.iter_mut() {
            if p.next < log_start {
                let due = p.snapshot_asked.is_none_or(|a| t >= a.saturating_add(self.opts.retransmit));
                if due {
                    p.snapshot_asked = Some(t);
                    self.out.build_snapshot_for.push(*id);
                }
                continue;
            }
            let mut entries = Vec::new();
            let mut bytes = 0usize;
            for (s, a) in self.log.range(p.next..l.next.max(p.next)) {
                if entries.len() >= self.opts.batch_entries_max
                    || (bytes >= self.opts.batch_bytes_max && !entries.is_empty())
                {
                    break;
                }
                bytes += command_size(&a.cmd);
                entries.push((*s, a.cmd.clone()));
            }
            // Lease renewal asks more often than the heartbeat, but never more than once per
            // `retransmit`, or a leader without a lease would ping-pong at network speed.
            let interval = if renew { self.opts.retransmit.min(self.opts.heartbeat) } else { self.opts.heartbeat };
            if entries.is_empty() && t < p.last_send.saturating_add(interval) {
                continue;
            }
            if let (Some((first, _)), Some((last, _))) = (entries.first(), entries.last()) {
                p.sent_from = p.sent_from.min(*first);
                p.next = Slot(last.0 + 1);
            }
            p.last_send = t;
            let msg = Msg::Accept { ballot: l.ballot, entries, chosen, lease_at: now.earliest };
            self.out.messages.push((*id, msg));
        }
    }

    fn leader_transfer(&mut self, now: TTInterval) {
        let RoleState::Leader(l) = &self.role else { return };
        let Some((to, _)) = l.transfer else { return };
        let caught_up = l.peers.get(&to).is_some_and(|p| p.matched >= Slot(l.next.0 - 1));
        // Spanner §4.1.1: a leader abdicates only once TT.after(s_max).
        if !caught_up || !now.after(l.s_max) {
            return;
        }
        let ballot = l.ballot;
        for v in self.config.voters.iter().filter(|v| **v != self.id) {
            self.out.messages.push((*v, Msg::Release { ballot }));
        }
        if self.hs.vote.is_some_and(|v| v.ballot == ballot) {
            self.hs.vote = None;
            self.persist_hard_state();
        }
        self.out.messages.push((to, Msg::TimeoutNow { ballot }));
        self.step_down();
        self.leader_hint = Some(to);
        self.last_heard = Some(local(now));
        self.reset_election_timer(local(now));
    }

    fn maybe_compact(&mut self) {
        let upto = self.applied_handed;
        if upto.0 < self.log_start.0 + self.opts.compact_threshold {
            return;
        }
        let new_start = Slot(upto.0 + 1 - self.opts.compact_keep);
        self.log = self.log.split_off(&new_start);
        self.log_start = new_start;
        self.out.truncate_below = Some(new_start);
    }

    /// Drains everything the replica wants done: assigns queued proposals, sends accepts,
    /// heartbeats and lease requests, and returns the outbox with the time of the next tick.
    pub fn ready(&mut self, now: TTInterval) -> Outbox {
        if let RoleState::Leader(_) = self.role {
            self.leader_transfer(now);
        }
        if let RoleState::Leader(_) = self.role {
            self.assign_pending(now);
            self.leader_advance_chosen();
            self.leader_send(now);
            let lease = self.lease_end(now);
            if let RoleState::Leader(l) = &mut self.role {
                match lease {
                    Some(end) if !l.lease_reported => {
                        l.lease_reported = true;
                        self.out.events.push(Event::LeaseAcquired { ballot: l.ballot, end });
                    }
                    None => l.lease_reported = false,
                    _ => {}
                }
            }
        }
        self.maybe_compact();
        self.applied_handed = self.applied;
        self.out.next_tick = Some(self.next_tick(now));
        self.out.send_before_persist = self.opts.unsafe_switches.ack_before_persist;
        std::mem::take(&mut self.out)
    }

    fn next_tick(&self, now: TTInterval) -> Timestamp {
        let t = local(now);
        match &self.role {
            RoleState::Follower | RoleState::Probing(_) | RoleState::Candidate(_) => {
                if !self.config.voters.contains(&self.id) || self.awaiting_snapshot {
                    // Cannot campaign: nothing to time out on.
                    t.saturating_add(self.opts.election_timeout_max)
                } else if self.election_deadline == Timestamp::ZERO {
                    t
                } else {
                    self.election_deadline.max(t.saturating_add(TICK_MIN))
                }
            }
            RoleState::Leader(l) => {
                let mut next = t.saturating_add(self.opts.heartbeat);
                let renewing =
                    self.lease_end_of(l).is_none_or(|end| now.latest.saturating_add(self.opts.lease / 2) >= end);
                let interval =
                    if renewing { self.opts.retransmit.min(self.opts.heartbeat) } else { self.opts.heartbeat };
                for p in l.peers.values() {
                    next = next.min(p.last_send.saturating_add(interval));
                    if p.matched < Slot(p.next.0.saturating_sub(1)) {
                        next = next.min(p.last_progress.saturating_add(self.opts.retransmit));
                    }
                }
                if !l.pending.is_empty() || l.transfer.is_some() || l.self_vote_unpersisted.is_some() {
                    next = next.min(t.saturating_add(self.opts.retransmit.min(Duration::from_millis(10))));
                }
                // Never ask to be ticked again at the same instant: a tick that changes nothing
                // would otherwise spin.
                next.max(t.saturating_add(TICK_MIN))
            }
        }
    }
}

fn command_size(cmd: &Command) -> usize {
    match cmd {
        Command::App(b) => b.len(),
        Command::Noop => 1,
        Command::Config(c) => 16 * (c.voters.len() + c.learners.len()),
    }
}
