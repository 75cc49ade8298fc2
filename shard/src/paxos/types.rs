//! Identities, ballots, log contents and messages of the Multi-Paxos protocol.

use std::collections::BTreeSet;
use std::fmt;

use bytes::Bytes;
use meridian_storage::Slot;
use meridian_truetime::Timestamp;
use serde::{Deserialize, Serialize};

/// Identity of a node; a group has at most one replica per node, so it also names the replica.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// A Paxos ballot (proposal number): `(round, node)`, ordered by round, then node, so two
/// proposers never use the same ballot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ballot {
    /// Increases with every new leadership attempt.
    pub round: u64,
    /// The proposer that owns the ballot.
    pub node: NodeId,
}

impl Ballot {
    /// Lower than every ballot a proposer uses.
    pub const ZERO: Ballot = Ballot { round: 0, node: NodeId(0) };
}

impl fmt::Display for Ballot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.round, self.node.0)
    }
}

/// Voting members and learners of a group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Config {
    /// Replicas whose acceptance and lease votes count towards quorums.
    pub voters: BTreeSet<NodeId>,
    /// Replicas that receive the log but do not vote (being caught up before promotion).
    pub learners: BTreeSet<NodeId>,
}

impl Config {
    /// A configuration of voters only.
    pub fn voters(ids: impl IntoIterator<Item = NodeId>) -> Self {
        Config { voters: ids.into_iter().collect(), learners: BTreeSet::new() }
    }

    /// Size of a majority of the voters.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// Whether `ids` contain a majority of the voters.
    pub fn is_quorum<'a>(&self, ids: impl IntoIterator<Item = &'a NodeId>) -> bool {
        ids.into_iter().filter(|id| self.voters.contains(id)).count() >= self.quorum()
    }

    /// Every member, voter or learner.
    pub fn members(&self) -> BTreeSet<NodeId> {
        self.voters.union(&self.learners).copied().collect()
    }

    /// Whether `id` is a voter or learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }

    /// Checks that `next` differs from `self` by exactly one change (add a learner, promote a
    /// learner, remove a member): majorities of two such configurations always intersect, which
    /// is what makes single-step changes safe without joint consensus.
    pub fn check_single_change(&self, next: &Config) -> Result<(), String> {
        let added_voters: Vec<&NodeId> = next.voters.difference(&self.voters).collect();
        let removed_voters: Vec<&NodeId> = self.voters.difference(&next.voters).collect();
        let added_learners: Vec<&NodeId> = next.learners.difference(&self.learners).collect();
        let removed_learners: Vec<&NodeId> = self.learners.difference(&next.learners).collect();
        let shape = (added_voters.len(), removed_voters.len(), added_learners.len(), removed_learners.len());
        let ok = match shape {
            // Add a learner (not already a voter).
            (0, 0, 1, 0) => !self.voters.contains(added_learners[0]),
            // Remove a learner, or remove a voter.
            (0, 0, 0, 1) | (0, 1, 0, 0) => true,
            // Promote a learner to voter.
            (1, 0, 0, 1) => added_voters[0] == removed_learners[0],
            _ => false,
        };
        if !ok {
            return Err(format!(
                "a configuration change must add a learner, promote a learner or remove one member: {self} → {next}"
            ));
        }
        if next.voters.is_empty() {
            return Err("a group needs at least one voter".to_string());
        }
        Ok(())
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |s: &BTreeSet<NodeId>| s.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",");
        write!(f, "voters[{}]", list(&self.voters))?;
        if !self.learners.is_empty() {
            write!(f, " learners[{}]", list(&self.learners))?;
        }
        Ok(())
    }
}

/// What a log slot holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Command {
    /// Fills a slot that a new leader found empty; changes nothing.
    Noop,
    /// A state-machine command, opaque to Paxos.
    App(Bytes),
    /// The group's new membership; takes effect for every later slot once chosen.
    Config(Config),
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Noop => write!(f, "noop"),
            Command::App(b) => match std::str::from_utf8(b) {
                Ok(s) if s.len() <= 40 => write!(f, "{s:?}"),
                _ => write!(f, "app({} bytes)", b.len()),
            },
            Command::Config(c) => write!(f, "config {c}"),
        }
    }
}

/// A value an acceptor accepted in a slot, with the ballot it was accepted at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// Ballot of the accept.
    pub ballot: Ballot,
    /// The value.
    pub cmd: Command,
}

/// A replica's lease vote (Spanner Appendix A): it promised `ballot`'s leader not to vote for
/// any other leader before `TT.after(end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseVote {
    /// The leader's ballot.
    pub ballot: Ballot,
    /// `TT.now().latest + lease` at the voter when granted.
    pub end: Timestamp,
    /// The leader's `TT.now().earliest` when it asked (echoed so the leader knows which request
    /// this vote answers).
    pub asked_at: Timestamp,
}

/// What an acceptor must never forget: written to disk before any message that depends on it is
/// sent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// The highest ballot promised; no accept or promise below it.
    pub promised: Ballot,
    /// The outstanding lease vote, if any.
    pub vote: Option<LeaseVote>,
}

/// Why an acceptor refused a prepare or an accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectReason {
    /// A higher ballot was promised.
    Ballot,
    /// The candidate knows fewer chosen slots than this acceptor (it could not have compacted
    /// state this acceptor still needs).
    Behind,
    /// This acceptor heard from a live leader within the minimum election timeout; a stable
    /// leader is not deposed by a replica that merely lost contact with it.
    LeaderAlive,
}

/// Messages between replicas of one group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// Pre-vote: "would you promise `ballot` now?" A replica that lost contact with the leader
    /// probes first and raises its ballot only if a majority agrees there is no live leader,
    /// so a partitioned replica cannot come back with a huge ballot and depose a healthy
    /// leader (Raft's PreVote, applied to Paxos ballots).
    Probe {
        /// The ballot the prober would use.
        ballot: Ballot,
        /// First slot the prober does not know to be chosen.
        from: Slot,
    },
    /// Answer to a probe: no live leader here, and the prober is up to date.
    ProbeOk {
        /// The probed ballot.
        ballot: Ballot,
    },
    /// Phase 1a: promise `ballot` and report accepted values from slot `from` on.
    Prepare {
        /// The candidate's ballot.
        ballot: Ballot,
        /// First slot the candidate does not know to be chosen.
        from: Slot,
        /// Whether the current leader asked for this campaign (leadership transfer): skip
        /// the live-leader check.
        transfer: bool,
    },
    /// Phase 1b.
    Promise {
        /// The promised ballot.
        ballot: Ballot,
        /// The accepted values with slot ≥ the prepare's `from`, in slot order (bounded).
        entries: Vec<(Slot, Accepted)>,
        /// `Some(s)`: the reply was cut short; ask again from `s`.
        more: Option<Slot>,
    },
    /// Phase 2a: accept these values at `ballot`; also a heartbeat, a learn message (`chosen`)
    /// and a lease request.
    Accept {
        /// The leader's ballot.
        ballot: Ballot,
        /// Slots and values, in slot order.
        entries: Vec<(Slot, Command)>,
        /// The leader's chosen prefix: every slot up to it is chosen.
        chosen: Slot,
        /// The leader's `TT.now().earliest` when it sent this: a lease-vote request.
        lease_at: Timestamp,
    },
    /// Phase 2b.
    Accepted {
        /// The ballot accepted.
        ballot: Ballot,
        /// Every slot up to this holds a value accepted at `ballot` (or is known chosen).
        upto: Slot,
        /// The lease vote this replica holds for `ballot`, if any.
        vote: Option<LeaseVote>,
        /// This replica was created empty and needs a snapshot before any log entry.
        needs_snapshot: bool,
    },
    /// A refusal; `promised` tells the proposer how high to go.
    Reject {
        /// The ballot refused.
        ballot: Ballot,
        /// The acceptor's promised ballot.
        promised: Ballot,
        /// The acceptor's chosen prefix.
        chosen: Slot,
        /// Why.
        reason: RejectReason,
    },
    /// The state machine at `slot`, for a replica whose log is behind the leader's compaction.
    Snapshot {
        /// The leader's ballot.
        ballot: Ballot,
        /// Every slot up to this is reflected in `data`.
        slot: Slot,
        /// Membership as of `slot`.
        config: Config,
        /// State-machine contents, opaque to Paxos.
        data: Bytes,
    },
    /// From the leader during a leadership transfer: campaign now.
    TimeoutNow {
        /// The outgoing leader's ballot.
        ballot: Ballot,
    },
    /// From an abdicating leader after `TT.after(s_max)`: lease votes for `ballot` may be
    /// dropped, so the next leader need not wait for them to expire.
    Release {
        /// The outgoing leader's ballot.
        ballot: Ballot,
    },
}

impl Msg {
    /// The ballot the message speaks for.
    pub fn ballot(&self) -> Ballot {
        match self {
            Msg::Probe { ballot, .. }
            | Msg::ProbeOk { ballot }
            | Msg::Prepare { ballot, .. }
            | Msg::Promise { ballot, .. }
            | Msg::Accept { ballot, .. }
            | Msg::Accepted { ballot, .. }
            | Msg::Reject { ballot, .. }
            | Msg::Snapshot { ballot, .. }
            | Msg::TimeoutNow { ballot }
            | Msg::Release { ballot } => *ballot,
        }
    }
}

impl fmt::Display for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Msg::Probe { ballot, from } => write!(f, "Probe b={ballot} from={}", from.0),
            Msg::ProbeOk { ballot } => write!(f, "ProbeOk b={ballot}"),
            Msg::Prepare { ballot, from, transfer } => {
                write!(f, "Prepare b={ballot} from={}{}", from.0, if *transfer { " transfer" } else { "" })
            }
            Msg::Promise { ballot, entries, more } => {
                write!(f, "Promise b={ballot} [")?;
                for (i, (s, a)) in entries.iter().enumerate() {
                    write!(f, "{}{}@{}:{}", if i > 0 { " " } else { "" }, s.0, a.ballot, a.cmd)?;
                }
                write!(f, "]")?;
                if let Some(m) = more {
                    write!(f, " more={}", m.0)?;
                }
                Ok(())
            }
            Msg::Accept { ballot, entries, chosen, .. } => {
                write!(f, "Accept b={ballot} chosen={} [", chosen.0)?;
                for (i, (s, c)) in entries.iter().enumerate() {
                    write!(f, "{}{}:{}", if i > 0 { " " } else { "" }, s.0, c)?;
                }
                write!(f, "]")
            }
            Msg::Accepted { ballot, upto, vote, needs_snapshot } => write!(
                f,
                "Accepted b={ballot} upto={}{}{}",
                upto.0,
                if vote.is_some() { " +vote" } else { "" },
                if *needs_snapshot { " needs-snapshot" } else { "" }
            ),
            Msg::Reject { ballot, promised, chosen, reason } => {
                write!(f, "Reject b={ballot} promised={promised} chosen={} {reason:?}", chosen.0)
            }
            Msg::Snapshot { ballot, slot, config, data } => {
                write!(f, "Snapshot b={ballot} slot={} {config} ({} bytes)", slot.0, data.len())
            }
            Msg::TimeoutNow { ballot } => write!(f, "TimeoutNow b={ballot}"),
            Msg::Release { ballot } => write!(f, "Release b={ballot}"),
        }
    }
}
