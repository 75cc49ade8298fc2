//! Commands a range's Paxos log carries, and the messages nodes exchange.

use std::collections::BTreeMap;

use meridian_shard::GroupId;
use meridian_shard::paxos::{Ballot, Msg, NodeId};
use meridian_shard::range::{LeaderHint, NodeInfo, RangeDescriptor};
use meridian_storage::Slot;
use meridian_truetime::Timestamp;
use meridian_txn::{Mode, Span, TxnId, TxnMeta};
use serde::{Deserialize, Serialize};

use super::api::{Request, Response};

/// Who is waiting for a request's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Origin {
    /// A client connected to this node (the shell's request id).
    Client(u64),
    /// Another node that forwarded the request (its forward id).
    Peer {
        /// The forwarding node.
        node: NodeId,
        /// Its id for the forward.
        fwd: u64,
    },
    /// This node's own housekeeping (the continuation's id).
    Internal(u64),
}

/// One write in a batch: `None` deletes.
pub type KeyWrite = (Vec<u8>, Option<Vec<u8>>);

/// One stored version: key, commit timestamp, value (`None`: a delete).
pub type VersionRow = (Vec<u8>, Timestamp, Option<Vec<u8>>);

/// A state-machine command in a range's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupCmd {
    /// Writes at commit timestamp `ts` (assigned by the leader inside its lease).
    Write {
        /// Commit timestamp.
        ts: Timestamp,
        /// Keys and values.
        writes: Vec<KeyWrite>,
        /// The proposing node and its origin, to answer after apply.
        from: (NodeId, Origin),
        /// The read-write transaction committing here, whose locks the leader releases once
        /// the write is applied (None: a plain write).
        txn: Option<TxnId>,
    },
    /// Split at `at`: this range keeps `[start, at)`; `right` (a new group, same replicas)
    /// takes `[at, end)`.
    Split {
        /// Split key.
        at: Vec<u8>,
        /// The new right-hand range.
        right: RangeDescriptor,
        /// The proposing node and origin.
        from: (NodeId, Origin),
        /// The proposing leader's TrueTime width (2ε): the range's leader promised no read
        /// more than this ahead of its clock, so a replica starts the right half's clock at
        /// `TT.now().latest + 2 × width` when it applies the split (see
        /// [`RangeState::clock_floor`]).
        width: std::time::Duration,
    },
    /// Stop taking writes: this range is being merged into its left neighbour.
    Freeze {
        /// The left neighbour.
        into: GroupId,
        /// The proposing node and origin.
        from: (NodeId, Origin),
    },
    /// Absorb the frozen right neighbour, whose data travels inside the command.
    Merge {
        /// The right neighbour's descriptor as frozen.
        right: RangeDescriptor,
        /// Every MVCC version of the right range (`key`, `ts`, value or tombstone).
        data: Vec<VersionRow>,
        /// The proposing node and origin.
        from: (NodeId, Origin),
        /// Above every timestamp the right range's leaders promised (reads served, writes
        /// assigned): the merged range's clock starts here.
        floor: Timestamp,
    },
    /// Meta range only: index these descriptors (each replaces every older overlapping one).
    PutDescriptors {
        /// Write timestamp.
        ts: Timestamp,
        /// New descriptors.
        descs: Vec<RangeDescriptor>,
        /// The proposing node and origin.
        from: (NodeId, Origin),
    },
    /// Meta range only: admit a node; its id is the smallest unused one (decided at apply).
    AddNode {
        /// Write timestamp.
        ts: Timestamp,
        /// The node's addresses (id filled in at apply).
        info: NodeInfo,
        /// The proposing node and origin.
        from: (NodeId, Origin),
    },
    /// Two-phase commit, at a participant: the transaction prepared here at `prepare_ts`
    /// (Spanner §4.2.1 "logs a prepare record through Paxos"). Its writes wait in the range
    /// state until the outcome; a new leader restores its locks from it.
    Prepare {
        /// The transaction.
        txn: TxnMeta,
        /// The coordinator group to ask for the outcome.
        coordinator: GroupId,
        /// Prepare timestamp (above every timestamp this leader assigned).
        prepare_ts: Timestamp,
        /// Writes to apply at the commit timestamp if it commits.
        writes: Vec<KeyWrite>,
        /// Every lock it holds here.
        locks: Vec<(Span, Mode)>,
        /// The proposing node and origin (answered with the prepare timestamp).
        from: (NodeId, Origin),
    },
    /// Two-phase commit, at the coordinator: the decision. `commit_ts: Some(s)` commits at `s`
    /// (with this group's own writes); `None` aborts (presumed abort after an inquiry). The
    /// first decision logged for a transaction wins; a later one is ignored.
    Decide {
        /// The transaction.
        txn: TxnId,
        /// The commit timestamp, or `None` for abort.
        commit_ts: Option<Timestamp>,
        /// The other groups, told the outcome after commit wait.
        participants: Vec<GroupId>,
        /// This group's writes.
        writes: Vec<KeyWrite>,
        /// Coordinator-local time of the decision (to forget old aborts).
        at: Timestamp,
        /// The proposing node and origin.
        from: (NodeId, Origin),
    },
    /// Two-phase commit, at a participant: the outcome of a prepared transaction.
    Resolve {
        /// The transaction.
        txn: TxnId,
        /// Commit at this timestamp, or abort.
        commit_ts: Option<Timestamp>,
        /// The proposing node and origin.
        from: (NodeId, Origin),
    },
    /// Coordinator: forget decisions every participant has learned (or old aborts).
    Forget {
        /// The transactions.
        txns: Vec<TxnId>,
    },
    /// Meta range only: record who leads `group`.
    PutLeader {
        /// Write timestamp.
        ts: Timestamp,
        /// The range.
        group: GroupId,
        /// Its leader.
        hint: LeaderHint,
    },
    /// A new leader's first entry: once applied, no entry proposed under an older ballot takes
    /// effect (see [`RangeState::leader_ballot`]), and the leader may serve.
    Barrier,
}

/// What a node sends another (inside one batch per destination).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum PeerMsg {
    /// A Paxos message for one group.
    Paxos {
        /// The group.
        group: GroupId,
        /// The message.
        msg: Msg,
    },
    /// "I host no replica of `group`": its leader may create one here with [`PeerMsg::InitReplica`].
    UnknownGroup {
        /// The group.
        group: GroupId,
    },
    /// Create an empty replica of the range (it is then filled by a snapshot).
    InitReplica {
        /// The range.
        desc: RangeDescriptor,
    },
    /// Run `request` here and answer with [`PeerMsg::ForwardReply`].
    Forward {
        /// The sender's id for this forward.
        fwd: u64,
        /// The request.
        request: Request,
    },
    /// A follower could not serve a read at `ts` (its safe time lags: the range is idle): the
    /// leader logs an empty write at or above `ts` (MinNextTS, Spanner §4.1.3), after which the
    /// followers can.
    CloseTimestamp {
        /// The range.
        group: GroupId,
        /// The read timestamp wanted.
        ts: Timestamp,
    },
    /// The answer to a [`PeerMsg::Forward`].
    ForwardReply {
        /// The forward's id.
        fwd: u64,
        /// The answer.
        response: Response,
    },
}

/// Durable per-range state, written with every apply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeState {
    /// The range as of `applied`.
    pub desc: RangeDescriptor,
    /// Every slot up to this is applied.
    pub applied: Slot,
    /// Largest commit timestamp applied (Spanner's LastTS for this group).
    pub last_write_ts: Timestamp,
    /// Set once the range froze for a merge into this group.
    pub frozen_into: Option<GroupId>,
    /// Transactions prepared here, waiting for their outcome (participant side of 2PC).
    pub prepared: BTreeMap<TxnId, PreparedTxn>,
    /// Outcomes this range decided as coordinator, kept until every participant learned them.
    pub decisions: BTreeMap<TxnId, Decided>,
    /// The newest ballot under which an applied entry was proposed. An entry proposed under an
    /// older ballot and chosen only later (a deposed leader's write, found in a minority and
    /// re-proposed by a later leader's phase 1) has no effect: its timestamp was assigned
    /// under a lease that has ended, and newer leaders may already have served reads above it
    /// (Spanner §4.1.3: a read at `t_safe` must see every write at or below it).
    #[serde(default)]
    pub leader_ballot: Ballot,
    /// No leader of this range assigns a timestamp at or below this: set when the range was
    /// created by a split or absorbed a merged neighbour, above every read the range's previous
    /// owner served for these keys (Spanner §4.1.3: reads promise that later writes land above
    /// them). A replica's clock starts here; it differs between replicas (each computes it when
    /// it applies the split) and is never a safe time for reads.
    #[serde(default)]
    pub clock_floor: Timestamp,
}

impl RangeState {
    /// A fresh state for `desc` with nothing applied.
    pub fn new(desc: RangeDescriptor, last_write_ts: Timestamp) -> Self {
        RangeState {
            desc,
            applied: Slot(0),
            last_write_ts,
            frozen_into: None,
            prepared: BTreeMap::new(),
            decisions: BTreeMap::new(),
            leader_ballot: Ballot::default(),
            clock_floor: Timestamp::ZERO,
        }
    }
}

/// A prepared transaction at a participant (from [`GroupCmd::Prepare`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedTxn {
    /// The transaction.
    pub txn: TxnMeta,
    /// Where its outcome is decided.
    pub coordinator: GroupId,
    /// Its prepare timestamp: its commit timestamp will be at least this.
    pub prepare_ts: Timestamp,
    /// Writes to apply if it commits.
    pub writes: Vec<KeyWrite>,
    /// Its locks, restored by a new leader.
    pub locks: Vec<(Span, Mode)>,
}

/// A coordinator's logged decision (from [`GroupCmd::Decide`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decided {
    /// Commit timestamp, or `None`: aborted.
    pub commit_ts: Option<Timestamp>,
    /// The participants to tell.
    pub participants: Vec<GroupId>,
    /// Coordinator-local time of the decision.
    pub at: Timestamp,
}
