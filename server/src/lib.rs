//! # The Meridian node
//!
//! One `meridian start` process, like a Spanner spanserver (§2.1): one RocksDB instance,
//! replicas of many Paxos groups, and the gRPC, PostgreSQL-wire and HTTP services.
//!
//! The node is a thin shell around the synchronous cores of `meridian-shard` and
//! `meridian-txn`: tokio tasks feed them messages and timer ticks, carry out the effects they
//! return (persist through the storage `Engine`, then send), and make no protocol decisions of
//! their own. Built by issue 4 onwards.
