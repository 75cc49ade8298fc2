//! # Meridian integration tests
//!
//! Helpers for tests that need more than one crate or more than one process (DESIGN.md §9):
//! [`process`] runs real `meridian start` processes on loopback. The multi-process tests live
//! next to the binary they run (`cli/tests/`, where cargo provides its path); the seeded
//! simulation binaries live in `src/bin/`.

pub mod cluster_sim;
pub mod process;
pub mod seeds;
