//! Commands a range's Paxos log carries, and the messages nodes exchange.

use meridian_shard::GroupId;
use meridian_shard::paxos::{Msg, NodeId};
use meridian_shard::range::{LeaderHint, NodeInfo, RangeDescriptor};
use meridian_storage::Slot;
use meridian_truetime::Timestamp;
use meridian_txn::TxnId;
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
    /// Meta range only: record who leads `group`.
    PutLeader {
        /// Write timestamp.
        ts: Timestamp,
        /// The range.
        group: GroupId,
        /// Its leader.
        hint: LeaderHint,
    },
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
}
