//! # Elle-style list-append isolation checker
//!
//! Given a history of transactions over *lists* — each micro-op either appends a unique element
//! to a key or reads the whole list — decide whether some serial order explains every read, and
//! (with [`CheckOptions::realtime`]) whether that order also respects real time, i.e. whether the
//! run was strictly serializable, which is what Meridian promises (Spanner §4, "external
//! consistency"). The method is Kingsbury & Alvaro, *Elle: Inferring Isolation Anomalies from
//! Experimental Observations* (VLDB 2020), over Adya's dependency graphs (Adya 1999, §4).
//!
//! ## Why lists
//!
//! A read of a register shows one version; a read of a list shows the *whole prefix* of appends
//! before it. So the longest read of a key reveals that key's version order, and every other read
//! must be a prefix of it (Elle §4.1, "recoverability"). From the version orders fall Adya's edges
//! between transactions:
//!
//! ```text
//!   key 3 version order:   [] ── 4 ── 9 ── 2        (from the longest read, [4 9 2])
//!                              T1   T5   T7         (who appended each element)
//!
//!   ww  T1 ─► T5   T5 appended 9 right after T1's 4        (write-write)
//!   wr  T5 ─► T8   T8 read [4 9]: it saw T5's append       (write-read)
//!   rw  T8 ─► T7   T8 read [4 9]; T7's 2 came next         (read-write, anti-dependency)
//!   rt  T1 ─► T8   T1 completed before T8 was invoked      (real time; strict serializability)
//! ```
//!
//! A serializable history has an acyclic ww ∪ wr ∪ rw graph; a strictly serializable one stays
//! acyclic with rt added. Every cycle is a proof of a violation, and the checker prints it.
//!
//! ## What is reported
//!
//! - Malformed histories (`duplicate-appends`, `malformed`): the analysis stops, since every
//!   inference below assumes one writer per element.
//! - Anomalies visible without a graph: `G1a` (aborted read), `G1b` (intermediate read),
//!   `internal` (a read disagrees with the transaction's own earlier ops), `future-read`,
//!   `duplicate-elements`, `garbage-read` (an element nobody appended), `incompatible-order`
//!   (two reads of a key that are not prefixes of one list), `dirty-update` (a committed append
//!   built on an aborted one) and `lost-update` (two committed transactions read the same state
//!   of a key and both appended to it).
//! - Cycles, found with Tarjan's SCC algorithm and then a breadth-first search per SCC for the
//!   shortest cycle of each kind, most severe first (Elle §5): `G0` (ww only), `G1c` (ww and wr,
//!   at least one wr), `G-single` (exactly one rw), `G2` (two or more rw; Elle's G2-item), and
//!   the same four with `-realtime` when the cycle needs a real-time edge. One cycle is reported
//!   per kind per SCC, and a kind implied by one already found there (G0 ⇒ G1c, G-single ⇒ G2,
//!   X ⇒ X-realtime) is not searched for, as in Elle; so an SCC reports at most
//!   [`CYCLES_PER_SCC_MAX`] cycles. An edge carrying several relations counts as its strongest
//!   (ww > wr > rw) for classification, so a write cycle is not also shown as G-single; real time
//!   counts independently.
//!
//! ## Which transactions are in the graph
//!
//! `Ok` transactions always; `Unknown` ones only when some `Ok` read observed one of their
//! appends (then they committed); `Fail` ones never (reading them is G1a). Reads are trusted only
//! from `Ok` transactions. An append that no read ever shows is placed, as in Elle's
//! `previously-appended-element`, *after the last observed element* of its key: it gets a ww edge
//! from that element's writer and rw edges from that state's readers, but no order is invented
//! among unobserved appends themselves. That is what exposes a lost update nobody read back.
//!
//! Real-time edges run from an `Ok` transaction to any graph transaction invoked strictly after
//! it completed. An `Unknown` transaction is a target only: it may have committed at any time
//! after its invocation, so its completion bounds nothing. Only a transitive reduction is stored
//! (each invocation links to the frontier of latest completions, as Elle does), so the edge count
//! stays near-linear; the cycle search closes cycles with a real-time step decided from the
//! clock, so printed cycles stay short anyway.
//!
//! ## Bounds and determinism
//!
//! Output never depends on hash order: transactions are visited in history order and maps that
//! are iterated are `BTree*`. The cycle search spends at most [`SEARCH_STEPS_MAX`] edge
//! traversals in all; past that, each remaining SCC still gets one cycle from a plain BFS,
//! classified by the edges it uses but maybe not the SCC's most severe, and
//! [`Report::search_exhausted`] says so; a cyclic graph is never reported valid. At most
//! [`ANOMALIES_LISTED_PER_KIND_MAX`] anomalies of each kind are listed with explanations, and at
//! most 32 steps of one cycle are printed; [`Report::counts`] counts everything.
//!
//! ## Left out
//!
//! Predicate reads (G2 proper rather than G2-item), process-order ("strong session") variants,
//! and Elle's G-nonadjacent split of G2. The export to Elle's JSON format lets elle-cli or adya
//! check the same history independently.

mod cycles;
mod direct;
mod graph;
mod render;

#[cfg(test)]
mod adya_tests;
#[cfg(test)]
mod sim_tests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

pub use render::to_elle_json;

/// Most anomalies of one kind listed with explanations; [`Report::counts`] still counts them all.
/// A broken run can produce thousands of identical G1a reads; the first few tell the story.
pub const ANOMALIES_LISTED_PER_KIND_MAX: usize = 20;

/// Most cycles reported per strongly connected component. Implication-skipping (G0 ⇒ G1c,
/// G-single ⇒ G2, X ⇒ X-realtime) already leaves at most four kinds; this makes the bound explicit.
pub const CYCLES_PER_SCC_MAX: usize = 4;

/// Edge traversals the typed cycle search may spend over the whole history before falling back to
/// one plain BFS cycle per remaining SCC. Bounds the worst case (a history that is one huge SCC)
/// to seconds while leaving ordinary test histories fully searched.
pub const SEARCH_STEPS_MAX: u64 = 20_000_000;

/// Anomaly kind names, matching Elle's where Elle has one.
pub mod kind {
    /// Write cycle: every edge of the cycle is ww.
    pub const G0: &str = "G0";
    /// Aborted read: an `Ok` read observed an element appended by a `Fail` transaction.
    pub const G1A: &str = "G1a";
    /// Intermediate read: an `Ok` read ended on an element that its writer later followed with
    /// another append to the same key.
    pub const G1B: &str = "G1b";
    /// Circular information flow: a cycle of ww and wr edges with at least one wr.
    pub const G1C: &str = "G1c";
    /// A cycle with exactly one rw (anti-dependency) edge: read skew and friends.
    pub const G_SINGLE: &str = "G-single";
    /// A cycle with two or more rw edges (Elle's G2-item): write skew and friends.
    pub const G2: &str = "G2";
    /// Suffix of a cycle kind whose cycle needs a real-time edge: not strictly serializable.
    pub const REALTIME_SUFFIX: &str = "-realtime";
    /// Two `Ok` reads of one key that are not both prefixes of a single list.
    pub const INCOMPATIBLE_ORDER: &str = "incompatible-order";
    /// A read disagreed with the transaction's own earlier reads and appends of that key.
    pub const INTERNAL: &str = "internal";
    /// A read showed an element the same transaction appends only later.
    pub const FUTURE_READ: &str = "future-read";
    /// A read showed the same element twice, though every append is unique.
    pub const DUPLICATE_ELEMENTS: &str = "duplicate-elements";
    /// A read showed an element that no transaction appended to that key.
    pub const GARBAGE_READ: &str = "garbage-read";
    /// A committed append directly followed, in version order, an aborted transaction's append.
    pub const DIRTY_UPDATE: &str = "dirty-update";
    /// Two committed transactions read the same state of a key and both appended to it.
    pub const LOST_UPDATE: &str = "lost-update";
    /// The same element was appended to a key twice: the history is malformed.
    pub const DUPLICATE_APPENDS: &str = "duplicate-appends";
    /// A transaction is malformed (an `Ok` one without completion time or read values, or one
    /// that completed before it was invoked).
    pub const MALFORMED: &str = "malformed";
}

/// How a transaction ended, as far as its client knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Outcome {
    /// Committed; its reads' values are known.
    Ok,
    /// Definitely did not commit.
    Fail,
    /// May or may not have committed (e.g. the connection died during commit).
    Unknown,
}

/// One step of a transaction.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MicroOp {
    /// Append `value` to the list at `key`. Values are unique per key across the history.
    Append {
        /// The list's key.
        key: u64,
        /// The element appended.
        value: u64,
    },
    /// Read the whole list at `key`; `value` is known only for `Ok` transactions.
    Read {
        /// The list's key.
        key: u64,
        /// The list read, oldest element first; `None` when not known.
        value: Option<Vec<u64>>,
    },
}

/// One transaction as its client saw it. Its name in reports is `T{i}`, `i` its history index.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Txn {
    /// The client (logical process) that ran it.
    pub process: u64,
    /// When the client sent it, in nanoseconds on the one clock all clients share.
    pub invoke_ns: u64,
    /// When the client learned the outcome; `None` if it never did.
    pub complete_ns: Option<u64>,
    /// How it ended.
    pub outcome: Outcome,
    /// Its micro-ops, in execution order.
    pub ops: Vec<MicroOp>,
}

/// What to check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckOptions {
    /// Add real-time edges: check strict serializability rather than plain serializability.
    pub realtime: bool,
}

impl CheckOptions {
    /// Strict serializability (external consistency): what Meridian promises.
    pub fn strict_serializable() -> CheckOptions {
        CheckOptions { realtime: true }
    }

    /// Serializability alone: real time is ignored.
    pub fn serializable() -> CheckOptions {
        CheckOptions { realtime: false }
    }
}

impl Default for CheckOptions {
    fn default() -> CheckOptions {
        CheckOptions::strict_serializable()
    }
}

/// One anomaly found in a history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    /// Its kind, one of the names in [`kind`] (cycle kinds possibly with `-realtime`).
    pub kind: String,
    /// What happened, over several lines; cycles are drawn as `T1 -ww(k=3)-> T5 -rw(k=7)-> T1`.
    pub explanation: String,
    /// History indices of the transactions involved (for cycles, in cycle order).
    pub txns: Vec<usize>,
}

/// How many dependency edges of each type the graph had; zero everywhere means the history said
/// nothing about isolation, which a test should treat as a test bug, not a pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeCounts {
    /// Write-write (version order) edges.
    pub ww: usize,
    /// Write-read (read observes append) edges.
    pub wr: usize,
    /// Read-write (anti-dependency) edges.
    pub rw: usize,
    /// Real-time edges (transitively reduced).
    pub realtime: usize,
}

/// The verdict on a history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Anomalies found, at most [`ANOMALIES_LISTED_PER_KIND_MAX`] per kind, in discovery order:
    /// malformations, then direct anomalies, then cycles by SCC.
    pub anomalies: Vec<Anomaly>,
    /// Number of anomalies of each kind, including those not listed.
    pub counts: BTreeMap<String, usize>,
    /// Transactions in the history.
    pub txns: usize,
    /// Transactions in the dependency graph (`Ok`, plus `Unknown` ones whose appends were read).
    pub graph_txns: usize,
    /// Dependency edges found, by type.
    pub edges: EdgeCounts,
    /// Whether the typed cycle search ran out of [`SEARCH_STEPS_MAX`]; cycles are still reported,
    /// but maybe not the most severe kind in every component.
    pub search_exhausted: bool,
}

impl Report {
    fn new(txns: usize) -> Report {
        Report { txns, ..Report::default() }
    }

    /// True if no anomaly of any kind was found.
    pub fn is_valid(&self) -> bool {
        self.counts.is_empty()
    }

    /// The kinds of anomaly found, e.g. `{"G0", "G1a", "G-single-realtime"}`.
    pub fn kinds(&self) -> BTreeSet<String> {
        self.counts.keys().cloned().collect()
    }

    fn push(&mut self, kind: &str, txns: Vec<usize>, explanation: String) {
        let count = self.counts.entry(kind.to_string()).or_insert(0);
        *count += 1;
        if *count <= ANOMALIES_LISTED_PER_KIND_MAX {
            self.anomalies.push(Anomaly { kind: kind.to_string(), explanation, txns });
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.edges;
        let graph = format!(
            "{} txns, {} in the graph; edges ww {} wr {} rw {} realtime {}",
            self.txns, self.graph_txns, e.ww, e.wr, e.rw, e.realtime
        );
        if self.is_valid() {
            return writeln!(f, "valid: {graph}");
        }
        let counts: Vec<String> = self.counts.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
        writeln!(f, "INVALID: {} ({graph})", counts.join(", "))?;
        if self.search_exhausted {
            writeln!(f, "(cycle search budget exhausted: some components show a fallback cycle)")?;
        }
        for a in &self.anomalies {
            writeln!(f, "\n{}", a.explanation)?;
        }
        Ok(())
    }
}

/// Checks a list-append history; see the module docs for what is reported.
pub fn check(history: &[Txn], opts: CheckOptions) -> Report {
    let mut report = Report::new(history.len());
    if direct::malformed(history, &mut report) {
        return report;
    }
    let index = direct::Index::build(history, &mut report);
    direct::anomalies(history, &index, &mut report);
    let graph = graph::Graph::build(history, &index, opts);
    report.graph_txns = graph.len();
    report.edges = graph.edge_counts();
    cycles::search(history, &graph, &mut report);
    report
}
