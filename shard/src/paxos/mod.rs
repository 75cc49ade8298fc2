//! # Multi-Paxos with TrueTime leader leases
//!
//! Each range is replicated by a Paxos group (Spanner §2.1). This module is one replica of a
//! group as a pure state machine: inputs are messages, proposals and ticks, each with the current
//! `TT.now()`; outputs collect in an [`Outbox`] the shell drains with [`Replica::ready`]. No
//! clock reads, no I/O, no threads; randomness (election timeouts) comes from a seeded RNG.
//!
//! ## The protocol
//!
//! ```text
//!  follower ──election timeout──► probing ──majority "no leader"──► candidate
//!      ▲                                                          │ Prepare(b, from)
//!      │ higher ballot seen                                       ▼ Promise(accepted ≥ from)
//!      └──────────────────────────────────────────────────── leader (phase 2)
//!                                                               │ Accept(b, slots, chosen,
//!                                                               │        lease request)
//!                                                               ▼ Accepted(b, upto, vote)
//! ```
//!
//! - **Ballots** are `(round, node)`. Phase 1 runs once per leadership for every slot the
//!   candidate does not know to be chosen; the highest-ballot value reported for each slot is
//!   re-proposed, holes get a no-op. Then phase 2 runs per slot, pipelined (up to
//!   `window_slots` unchosen) and batched (many slots per message, one disk write per `ready`).
//! - **Learning.** Accept messages carry the leader's chosen prefix; a follower marks a slot
//!   chosen once it holds the leader's value for it (accepted at the leader's ballot).
//! - **Stability.** A replica that lost its leader first *probes* (pre-vote); it raises its
//!   ballot only if a majority has not heard from a leader recently, so a replica returning from
//!   a partition does not depose a healthy leader. Acceptors refuse candidates that know fewer
//!   chosen slots than they do.
//! - **Leases** (Spanner §4.1.1 and Appendix A). Every Accept carries a lease request stamped
//!   with the leader's `TT.now().earliest`. An acceptor grants a vote lasting until its own
//!   `TT.now().latest + lease`, persisted before it replies, and grants no vote to another
//!   leader until `TT.after(end)` (the single-vote rule). The leader's lease ends at the
//!   quorum-th newest request time plus the lease length; it holds the lease while
//!   `TT.now().latest` is below that. Hence successive leaders' lease intervals are disjoint in
//!   true time. A leader proposes state-machine commands and assigns timestamps only inside its
//!   lease, records the largest timestamp it assigned (`s_max`), and on a voluntary hand-off
//!   waits for `TT.after(s_max)` before releasing its votes.
//! - **Durability.** Promises, accepted values and lease votes go to the outbox's write set;
//!   the shell makes them durable before sending any message of the same outbox.
//! - **Catch-up and compaction.** A follower missing slots gets them again after `retransmit`
//!   without progress; one missing slots the leader compacted gets a snapshot of the state
//!   machine (built by the shell) at the leader's applied slot.
//! - **Membership.** One change at a time through the log (add a learner, promote it, remove a
//!   member); a change takes effect for later slots once chosen, and the leader assigns no slot
//!   after an unchosen change. Phase 1 needs a majority of every configuration it learns of.
//!
//! ## Left out, deliberately
//! - Spanner's Paxos leader also runs the lock table and transaction manager (§2.2); those live
//!   in `meridian-txn`, driven by the same shell.
//! - No joint consensus: single-step membership changes suffice to move a replica.

mod durable;
mod options;
mod outbox;
mod replica;
mod types;

pub use durable::{DurableError, load, persist};
pub use options::{LEASE_DEFAULT, Options, UnsafeSwitches};
pub use outbox::{Event, InstallSnapshot, Outbox};
pub use replica::{Durable, ProposeError, Replica, Role};
pub use types::{Accepted, Ballot, Command, Config, HardState, LeaseVote, Msg, NodeId, RejectReason};

#[cfg(any(test, feature = "sim"))]
pub mod sim;
