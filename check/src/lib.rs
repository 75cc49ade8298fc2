//! # Meridian history checkers
//!
//! Pure functions over recorded histories — what clients asked, what they were told, and when
//! (real time) — that decide whether a run of Meridian was correct. They know nothing of how the
//! history was produced: the Paxos simulation, the whole-cluster simulation, a multi-process
//! chaos run and `meridian workload … check` all feed them.
//!
//! - [`linearizability`]: Wing–Gong / Lowe search with memoization (as in Porcupine) over a
//!   sequential model, split per key (P-compositionality).
//! - [`elle`]: Elle-style list-append checking: version orders inferred from reads, dependency
//!   graphs, and the Adya anomalies G0, G1a, G1b, G1c, G-single, G2, plus real-time edges for
//!   strict serializability; cycles are printed; histories export to elle-cli JSON.
//! - [`external`]: external consistency — a transaction acknowledged before another began has
//!   the smaller timestamp.
//!
//! Every checker is shown, in its tests and in the simulations, to reject a history produced by a
//! deliberately broken build.

pub mod elle;
pub mod external;
pub mod linearizability;
