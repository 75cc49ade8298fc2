//! The report of a non-linearizable history.
//!
//! A failed search explored every reachable (linearized set, state) node, so the longest
//! sequence of operations it managed to linearize is as far as *any* order gets. The report shows
//! that prefix, the model state it leads to, and the operations real time allowed next — each of
//! which the model rejected. That is usually enough to read the bug off: "get(7) -> 3, but the
//! state is {7: 5}, and put(7, 3) had completed before put(7, 5) was invoked".
//!
//! The report holds strings, not model types, so it is one concrete type for every model and can
//! be printed, compared or serialized without the model at hand.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How many prefix operations (the last ones) [`Violation`]'s `Display` prints; the struct
/// keeps them all.
pub const REPORT_PREFIX_OPS_MAX: usize = 20;

/// How many stuck operations [`Violation`]'s `Display` prints; the struct keeps them all.
pub const REPORT_STUCK_OPS_MAX: usize = 20;

/// One operation as shown in a report.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OpReport {
    /// Index of the operation in the checked history.
    pub index: usize,
    /// The client that issued it.
    pub client: u64,
    /// When it was invoked.
    pub invoke_ns: u64,
    /// When it responded, `None` if the outcome is unknown.
    pub response_ns: Option<u64>,
    /// [`super::Model::describe`] of its input and output.
    pub description: String,
}

impl fmt::Display for OpReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let response = match self.response_ns {
            Some(ns) => format!("{ns}]"),
            None => "?)".to_string(),
        };
        write!(f, "#{} client {} [{}, {}  {}", self.index, self.client, self.invoke_ns, response, self.description)
    }
}

/// Why an operation real time allowed next could not be linearized there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StuckReason {
    /// The model cannot produce the observed output from the state after the prefix.
    OutputImpossible,
    /// The model accepts it, but no linearization of the remaining operations continues from
    /// there. Not expected: a complete search makes the prefix maximal, so this shows up only
    /// for a model that breaks its contract (nondeterministic, or a wrong `is_read_only`).
    DeadEnd,
}

impl fmt::Display for StuckReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StuckReason::OutputImpossible => write!(f, "output impossible from this state"),
            StuckReason::DeadEnd => write!(f, "possible here, but every continuation fails"),
        }
    }
}

/// An operation that could not be linearized after the longest prefix.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StuckOp {
    /// The operation.
    pub op: OpReport,
    /// Why it could not go next.
    pub reason: StuckReason,
}

/// Evidence that a history is not linearizable.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Violation {
    /// Index of the failing part in the order [`super::Model::partition`] returned them (empty
    /// parts included); 0 when the history was checked as one part.
    pub partition: usize,
    /// Number of operations in that part.
    pub partition_ops: usize,
    /// How many of them have a response (must all be linearized).
    pub partition_known_ops: usize,
    /// A sequence of the part's operations that can be linearized and that includes as many
    /// operations with a response as any can, in linearization order. Unknown operations in it
    /// are ones the search chose to let take effect.
    pub longest_prefix: Vec<OpReport>,
    /// `Debug` of the model state after `longest_prefix`.
    pub state_after_prefix: String,
    /// Operations with a response that real time allowed next, none of which could go next;
    /// sorted by invocation time.
    pub stuck: Vec<StuckOp>,
    /// Operations of the part with a response that are neither in the prefix nor in `stuck`
    /// (real time puts them after some stuck operation).
    pub other_remaining_ops: usize,
    /// Operations of the part with unknown outcome not in the prefix (never stuck: they may
    /// always be left out).
    pub unknown_remaining_ops: usize,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known_in_prefix = self.longest_prefix.iter().filter(|op| op.response_ns.is_some()).count();
        writeln!(
            f,
            "not linearizable: partition {} ({} ops, {} with a response): no order linearizes more than {} of those",
            self.partition, self.partition_ops, self.partition_known_ops, known_in_prefix
        )?;
        let shown = self.longest_prefix.len().min(REPORT_PREFIX_OPS_MAX);
        let hidden = self.longest_prefix.len() - shown;
        if self.longest_prefix.is_empty() {
            writeln!(f, "longest linearizable prefix: (empty)")?;
        } else if hidden > 0 {
            writeln!(f, "longest linearizable prefix, in linearization order (last {shown} shown):")?;
            writeln!(f, "  … {hidden} earlier ops")?;
        } else {
            writeln!(f, "longest linearizable prefix, in linearization order:")?;
        }
        for op in &self.longest_prefix[hidden..] {
            writeln!(f, "  {op}")?;
        }
        writeln!(f, "model state after the prefix: {}", self.state_after_prefix)?;
        writeln!(f, "ops real time allows next, none of which can be linearized:")?;
        for stuck in self.stuck.iter().take(REPORT_STUCK_OPS_MAX) {
            writeln!(f, "  {}: {}", stuck.op, stuck.reason)?;
        }
        if self.stuck.len() > REPORT_STUCK_OPS_MAX {
            writeln!(f, "  … {} more", self.stuck.len() - REPORT_STUCK_OPS_MAX)?;
        }
        write!(
            f,
            "also not linearized: {} later ops with a response, {} ops of unknown outcome",
            self.other_remaining_ops, self.unknown_remaining_ops
        )
    }
}
