//! What a step asks of the shell, and the order in which the shell must do it.
//!
//! ```text
//!   1. snapshot + hard state + entries + truncation   → one write batch, synced
//!   2. messages                                        → only after (1) is durable
//!   3. apply                                           → state machine, in slot order
//!   4. build_snapshot_for, events                      → shell bookkeeping
//! ```
//!
//! Step 1 before step 2 is the whole of Paxos durability: a promise or an accept that reaches
//! another replica must survive this replica's crash. The shell may merge the outboxes of many
//! groups into one write and one sync (group commit) as long as no message leaves before the
//! write that produced it is durable.

use std::collections::BTreeMap;

use bytes::Bytes;
use meridian_storage::Slot;
use meridian_truetime::Timestamp;

use super::types::{Accepted, Ballot, Command, Config, HardState, Msg, NodeId};

/// A state-machine snapshot to install before anything else in the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallSnapshot {
    /// Every slot up to this is in `data`.
    pub slot: Slot,
    /// Membership as of `slot`.
    pub config: Config,
    /// State-machine contents.
    pub data: Bytes,
}

/// Things that happened, for the shell's bookkeeping (metrics, failing requests, routing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Phase 1 completed: this replica leads at `ballot`.
    BecameLeader {
        /// The ballot.
        ballot: Ballot,
    },
    /// This replica stopped leading (or campaigning). Commands it had accepted may still be
    /// chosen by the next leader: their outcome is unknown until they are applied or the slot
    /// is filled with something else.
    SteppedDown {
        /// The ballot it led or campaigned with.
        ballot: Ballot,
    },
    /// A quorum of lease votes was reached; timestamps may be assigned and lease reads served
    /// until `end` (Spanner §4.1.1).
    LeaseAcquired {
        /// The leader's ballot.
        ballot: Ballot,
        /// The lease ends when `TT.now().latest` reaches this.
        end: Timestamp,
    },
    /// Proposals that never got a slot and never will (the leader stepped down).
    Dropped(Vec<Command>),
    /// The chosen membership no longer includes this replica.
    Removed,
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::BecameLeader { ballot } => write!(f, "became leader at {ballot}"),
            Event::SteppedDown { ballot } => write!(f, "stepped down from {ballot}"),
            Event::LeaseAcquired { ballot, end } => write!(f, "lease acquired at {ballot} until {end}"),
            Event::Dropped(cmds) => write!(f, "dropped {} queued proposal(s)", cmds.len()),
            Event::Removed => write!(f, "removed from the group"),
        }
    }
}

/// Effects of one or more steps, drained by [`super::Replica::ready`].
#[derive(Clone, Debug, Default)]
pub struct Outbox {
    /// A snapshot to install (replaces the state machine) before the log writes below.
    pub snapshot: Option<InstallSnapshot>,
    /// New hard state to persist.
    pub hard_state: Option<HardState>,
    /// Log slots to write (a later write to the same slot replaces an earlier one).
    pub entries: BTreeMap<Slot, Accepted>,
    /// Drop every log slot below this.
    pub truncate_below: Option<Slot>,
    /// Messages to send once the writes above are durable.
    pub messages: Vec<(NodeId, Msg)>,
    /// Chosen commands to apply, in slot order, contiguous with the previous outbox's.
    pub apply: Vec<(Slot, Command)>,
    /// Peers that need a snapshot of the state machine at the applied slot: build it and call
    /// [`super::Replica::snapshot_ready`].
    pub build_snapshot_for: Vec<NodeId>,
    /// What happened.
    pub events: Vec<Event>,
    /// When to call `tick` next, in local time (`TT.now()` midpoint), at the latest.
    pub next_tick: Option<Timestamp>,
    /// Set only by the test switch [`super::UnsafeSwitches::ack_before_persist`]: the shell sends
    /// the messages before the writes are durable. A broken build for the checkers to catch.
    pub send_before_persist: bool,
}

impl Outbox {
    /// Whether anything must be written.
    pub fn needs_write(&self) -> bool {
        self.snapshot.is_some()
            || self.hard_state.is_some()
            || !self.entries.is_empty()
            || self.truncate_below.is_some()
    }

    /// Whether there is nothing at all to do.
    pub fn is_empty(&self) -> bool {
        !self.needs_write()
            && self.messages.is_empty()
            && self.apply.is_empty()
            && self.build_snapshot_for.is_empty()
            && self.events.is_empty()
    }
}
