//! # The Meridian node
//!
//! One `meridian start` process, like a Spanner spanserver (§2.1): one RocksDB instance,
//! replicas of many Paxos groups, and the gRPC services.
//!
//! - [`node`]: the node core — every decision the node makes, as a deterministic state machine
//!   over the Paxos replicas of its groups (no clock reads, no network, no threads).
//! - `shell`: tokio tasks that feed the core inputs (gRPC requests, peer messages, timer ticks)
//!   and carry out its outputs in the order durability demands (write, sync, then send and
//!   reply). It makes no protocol decisions of its own.

pub mod node;
pub mod shell;
