//! # Meridian replication: ranges and Multi-Paxos groups
//!
//! Keys are split into contiguous **ranges**; each range is replicated by its own **Paxos
//! group** of 3 or 5 replicas on different nodes (Spanner §2.1: "each spanserver … implements
//! a single Paxos state machine on top of each tablet").
//!
//! This crate will hold, as synchronous state machines with no I/O (DESIGN.md §5):
//! - range descriptors and key routing;
//! - the Multi-Paxos replica: `step(now, input)` returns effects (persist, send, apply, reply,
//!   timers) that the node's shell carries out — persisting before sending;
//! - TrueTime leader leases (§4.1.1, Appendix A): disjoint lease intervals across leaders;
//! - catch-up by log or snapshot, log compaction, membership change, split/merge/move.
//!
//! Its durable state lives in `meridian-storage` (the Paxos log and hard state, keyed by
//! [`GroupId`]). Built by issue 3 (replication) and issue 4 (ranges).

pub use meridian_storage::{GroupId, Slot};
