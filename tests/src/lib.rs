//! # Meridian integration tests
//!
//! Tests that need more than one crate, or more than one process (DESIGN.md §9): real
//! multi-process clusters on loopback, SQL golden scripts, the deterministic whole-cluster
//! simulation with its checkers (bank invariants, serializability, external consistency,
//! linearizability). Helpers shared by those tests live in this library; the tests themselves
//! live in `tests/tests/`. Filled by issues 3–7.
