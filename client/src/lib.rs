//! # Meridian Rust client
//!
//! The typed way into a cluster: a routing cache of range descriptors, `read_write` /
//! `read_only` / `snapshot` transactions that retry on abort with backoff (re-running the whole
//! transaction body, never replaying buffered writes), and a SQL session. It speaks the gRPC
//! API of `meridian-proto`. Built by issues 4–6.
