//! # Meridian replication: ranges and Multi-Paxos groups
//!
//! Keys are split into contiguous **ranges**; each range is replicated by its own **Paxos
//! group** of 3 or 5 replicas on different nodes (Spanner §2.1: "each spanserver … implements
//! a single Paxos state machine on top of each tablet").
//!
//! - [`paxos`]: one replica of a group as a sans-I/O state machine — Multi-Paxos with a stable
//!   leader, pipelining and batching, TrueTime leader leases (§4.1.1, Appendix A), catch-up by
//!   log or snapshot, log compaction, single-step membership change and leadership transfer.
//!   Its durable state lives in `meridian-storage` (the Paxos log and hard state per
//!   [`GroupId`]), written by the shell before any message that depends on it is sent.
//!
//! Range descriptors, routing, split/merge/move arrive with the node (issue 4).

pub mod paxos;
pub mod range;

pub use meridian_storage::{GroupId, Slot};
