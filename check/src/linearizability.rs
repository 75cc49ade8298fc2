//! # Linearizability checking
//!
//! A history is what clients saw: each operation's input, the real time it was invoked, and —
//! if the client heard back — the real time and content of the response. The history is
//! *linearizable* (Herlihy & Wing, 1990) if every operation can be given a single point in time,
//! somewhere between its invocation and its response, such that executing the operations one by
//! one in the order of those points, against a sequential [`Model`], yields exactly the responses
//! the clients saw. For a replicated register this is the promise "it behaves like one copy that
//! changes instantly": no stale reads after a write completed, no value read before it was
//! written, no two clients seeing concurrent writes in opposite orders.
//!
//! ## The search
//!
//! Deciding linearizability is NP-complete in general, so the checker is a search, the same
//! shape as Porcupine (Athalye, 2017), built from these parts:
//!
//! - **Wing & Gong, with Lowe's just-in-time linearization.** Invocations and responses are put
//!   in one list ordered by time. Scanning from the front, any invocation met before the first
//!   remaining response may be linearized next (real time allows it); a response reached means the
//!   operation it closes had to be linearized already, so the search backtracks.
//!
//!   ```text
//!   time ─────────────────────────────────────────────────────────▶
//!   client 1  [── put(k, 1) ──]            [── get(k) → 1 ──]
//!   client 2        [──────── put(k, 2) ────────]
//!   list:     call₁  call₂    ret₁           call₃  ret₂      ret₃
//!             ▲ candidates: call₁, call₂ (before the first response ret₁)
//!   ```
//!
//! - **Memoization.** A node of the search is (set of operations linearized, model state). Two
//!   different orders that reach the same node have the same future, so each node is explored
//!   once. The set is a bitset over the partition's operations.
//!
//! - **P-compositionality** (Horn & Kroening, 2015). Linearizability is local: a history over
//!   independent objects is linearizable iff each object's sub-history is. [`Model::partition`]
//!   splits the history (per key for [`KvModel`]) and each part is searched on its own, which
//!   turns one exponential search into many small ones.
//!
//! - **Forced reads.** An operation the model calls read-only ([`Model::is_read_only`]) that
//!   real time allows and the current state accepts is linearized at once, with no alternative
//!   tried: if any linearization exists, one exists that takes the read right there. This
//!   removes most of the branching from read-heavy histories (10–100× fewer steps measured).
//!
//! The search module's comment (`linearizability/search.rs`) states the order in which a node
//! tries its children, the pruning rules for unknown operations, and why they are sound.
//!
//! ## Operations with unknown outcome
//!
//! A client that timed out or crashed does not know whether its operation took effect. Such an
//! operation ([`Operation::response`] is `None`) is treated as if its response arrived at +∞ with
//! an output that matches anything ([`Model::step_unknown`]). Its response is therefore never
//! "reached" before the history ends, so the search may linearize it at any point after its
//! invocation — or never: the search succeeds as soon as every operation *with* a response is
//! linearized, and unknown operations may remain.
//!
//! Left at that, each unknown operation stays concurrent with everything after it and the
//! search space doubles with each one. Three rules tame it: unknown candidates are tried only
//! after the known ones (so they are linearized when something observed needs them); an unknown
//! operation that would not change the state is never linearized; and a node is skipped when
//! another with the same known operations and state but a subset of the unknown ones was
//! explored (leaving an unknown operation out never closes a door) — which is what discards "the
//! timed-out put happened, then a known put overwrote it" as soon as it is built.
//!
//! ## Conventions and limits
//!
//! - Operation `a` precedes `b` in real time iff `a` responded strictly before `b` was invoked.
//!   Equal timestamps count as overlapping (invocations sort before responses at the same
//!   instant), the lenient choice for clocks of coarse resolution.
//! - All timestamps come from one clock. A response earlier than its invocation makes the history
//!   [`Verdict::Malformed`]; the checker never panics on any history.
//! - The search is bounded: [`SearchBudget::max_steps`] counts search steps (each at most two
//!   model calls and one memo probe) across all partitions, and the memo table of one partition is capped at [`SEARCH_CACHE_BYTES_MAX`].
//!   Running out yields [`Verdict::Unknown`], never a wrong answer. Partitions are searched
//!   smallest first, so a violation in a small partition is found even when a large one is hard.
//! - Results and reports are deterministic: the memo table is only ever probed, never iterated,
//!   and every ordering the search depends on is a total order on (time, kind, index).
//! - Worst case is exponential in the number of mutually concurrent operations of one partition.
//!   Measured in the debug build (opt-level 1) on generated register histories (40% put, 45%
//!   get, 15% CAS): 5,000 ops over 20 keys with 8 clients, ~3 ms; 2,000 ops on *one* key with
//!   8 clients, ~5 ms, ~0.1 s with 5% and ~0.6 s with 20% unknown outcomes; 16 clients on one
//!   key with 1% unknown, ~0.15 s; 32 clients hammering one key exceed the default budget
//!   (→ [`Verdict::Unknown`]). Spread load over keys, or raise the budget, for such runs.
//! - Without a partition, a multi-key history is one search whose state is the whole map: far
//!   slower. Unknown operations cost most when many of them are pending at once in one
//!   partition (each is a candidate at every dead end after its invocation).

mod kv;
mod report;
mod search;
#[cfg(test)]
mod tests;

use std::fmt;
use std::hash::Hash;

use serde::{Deserialize, Serialize};

pub use kv::{KvInput, KvModel, KvOutput, KvState};
pub use report::{OpReport, REPORT_PREFIX_OPS_MAX, REPORT_STUCK_OPS_MAX, StuckOp, StuckReason, Violation};

/// Default search budget: enough for histories of tens of thousands of operations with modest
/// concurrency, while bounding a pathological history to seconds, not hours.
pub const SEARCH_STEPS_DEFAULT: u64 = 10_000_000;

/// Cap on the (estimated) memory of one partition's memo table. Each entry is a bitset over the
/// partition plus a model state, so a long unpartitioned history can otherwise exhaust memory
/// well before the step budget runs out.
pub const SEARCH_CACHE_BYTES_MAX: u64 = 1 << 30;

/// How much work [`check`] may do before it gives up with [`Verdict::Unknown`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SearchBudget {
    /// Search steps allowed (each at most two model calls and one memo probe), summed over
    /// all partitions.
    pub max_steps: u64,
}

impl SearchBudget {
    /// The budget [`SEARCH_STEPS_DEFAULT`].
    pub const DEFAULT: SearchBudget = SearchBudget { max_steps: SEARCH_STEPS_DEFAULT };

    /// A budget of `max_steps` search steps.
    pub const fn steps(max_steps: u64) -> SearchBudget {
        SearchBudget { max_steps }
    }
}

impl Default for SearchBudget {
    fn default() -> Self {
        SearchBudget::DEFAULT
    }
}

/// A sequential specification: the behaviour of the object if operations ran one at a time.
///
/// The model must be deterministic: the state after an operation is a function of the state
/// before, the input and the output. Nondeterminism the client observes (which value a read
/// returned) lives in the output; nondeterminism it cannot observe must be folded into `State`
/// (for example a set of possible states).
pub trait Model {
    /// The object's state; hashed and compared to memoize the search, so keep it small.
    type State: Clone + Eq + Hash + fmt::Debug;
    /// What a client asked for.
    type Input: Clone + fmt::Debug;
    /// What a client was told.
    type Output: Clone + fmt::Debug;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// Applies `input` to `state`; returns the new state if `output` is what the sequential spec
    /// would return, `None` if that output is impossible from `state`.
    fn step(&self, state: &Self::State, input: &Self::Input, output: &Self::Output) -> Option<Self::State>;

    /// Applies `input` to `state` for an operation whose output nobody saw (timeout, crash):
    /// the output is unconstrained. Returns `None` if the operation cannot take effect from
    /// `state` at all (it may still never take effect, which the checker always considers).
    fn step_unknown(&self, state: &Self::State, input: &Self::Input) -> Option<Self::State>;

    /// Whether the operation never changes the state: for every state from which `step`
    /// accepts `output`, it returns that same state (a read; a compare-and-set that failed).
    /// The search then linearizes such an operation as soon as real time and the state allow,
    /// without trying alternatives, which removes most branching from read-heavy histories.
    /// Answering `true` wrongly can make the checker reject a linearizable history; `false`
    /// is always safe. Default: `false`.
    fn is_read_only(&self, input: &Self::Input, output: &Self::Output) -> bool {
        let _ = (input, output);
        false
    }

    /// Splits a history into independent sub-histories (P-compositionality), e.g. per key.
    /// Each index of `ops` must appear in exactly one part; if not, the checker falls back to
    /// one part with everything, which is always sound. Default: one part with everything.
    fn partition(&self, ops: &[Operation<Self::Input, Self::Output>]) -> Vec<Vec<usize>> {
        vec![(0..ops.len()).collect()]
    }

    /// Human-readable description of an op for error reports; `output` is `None` when the
    /// outcome is unknown.
    fn describe(&self, input: &Self::Input, output: Option<&Self::Output>) -> String {
        match output {
            Some(output) => format!("{input:?} -> {output:?}"),
            None => format!("{input:?} -> ?"),
        }
    }
}

/// One client operation with real-time bounds (nanoseconds, any epoch, same clock for all ops).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Operation<I, O> {
    /// Who issued it; only used in reports.
    pub client: u64,
    /// What was asked.
    pub input: I,
    /// When the request was sent.
    pub invoke_ns: u64,
    /// `Some(ns, output)` if the client saw a response; `None` if the outcome is unknown (timeout,
    /// crash): the op may have taken effect at any time after `invoke_ns`, or never, and its output
    /// is unconstrained.
    pub response: Option<(u64, O)>,
}

impl<I, O> Operation<I, O> {
    /// An operation whose client saw `output` at `response_ns`.
    pub fn completed(client: u64, input: I, invoke_ns: u64, response_ns: u64, output: O) -> Self {
        Operation { client, input, invoke_ns, response: Some((response_ns, output)) }
    }

    /// An operation whose outcome the client never learned.
    pub fn unknown(client: u64, input: I, invoke_ns: u64) -> Self {
        Operation { client, input, invoke_ns, response: None }
    }

    /// The output the client saw, if any.
    pub fn output(&self) -> Option<&O> {
        self.response.as_ref().map(|(_, output)| output)
    }

    /// When the client saw the response, if it did.
    pub fn response_ns(&self) -> Option<u64> {
        self.response.as_ref().map(|(ns, _)| *ns)
    }
}

/// The answer of [`check`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// Some order of the operations is consistent with real time and the model.
    Linearizable,
    /// No such order exists; the report shows where every attempt got stuck.
    NotLinearizable(Violation),
    /// The search budget ran out before an answer was found.
    Unknown,
    /// The history itself is inconsistent (a response before its invocation): a harness bug.
    Malformed {
        /// Index of the offending operation in the history.
        op: usize,
        /// What is wrong with it.
        reason: String,
    },
}

impl Verdict {
    /// True only for [`Verdict::Linearizable`].
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }

    /// The violation, if the history was proven not linearizable.
    pub fn violation(&self) -> Option<&Violation> {
        match self {
            Verdict::NotLinearizable(violation) => Some(violation),
            _ => None,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Linearizable => write!(f, "linearizable"),
            Verdict::NotLinearizable(violation) => write!(f, "{violation}"),
            Verdict::Unknown => write!(f, "unknown: search budget exhausted"),
            Verdict::Malformed { op, reason } => write!(f, "malformed history: op #{op}: {reason}"),
        }
    }
}

/// Counters describing how much work a check did, for tuning budgets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchStats {
    /// Non-empty partitions the history was split into.
    pub partitions: usize,
    /// Partitions whose search finished (either way) within the budget.
    pub partitions_searched: usize,
    /// Search steps used, summed over partitions.
    pub steps: u64,
    /// Memo-table entries held when each partition's search ended, summed over partitions.
    pub cache_entries: u64,
}

/// Decides whether `history` is linearizable with respect to `model`, doing at most
/// `budget.max_steps` steps of search.
pub fn check<M: Model>(model: &M, history: &[Operation<M::Input, M::Output>], budget: SearchBudget) -> Verdict {
    check_with_stats(model, history, budget).0
}

/// [`check`], also returning how much work the search did.
pub fn check_with_stats<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    budget: SearchBudget,
) -> (Verdict, SearchStats) {
    let mut stats = SearchStats::default();
    if let Some((op, reason)) = find_malformed(history) {
        return (Verdict::Malformed { op, reason }, stats);
    }
    let partitions = valid_partitions(model, history);
    stats.partitions = partitions.len();

    // Smallest first: with one budget shared by all partitions, a hard partition must not
    // starve the easy ones, where a violation is cheap to find.
    let mut order: Vec<usize> = (0..partitions.len()).collect();
    order.sort_by_key(|&p| (partitions[p].len(), p));

    let mut steps_left = budget.max_steps;
    let mut exhausted = false;
    for p in order {
        match search::search(model, history, &partitions[p], &mut steps_left, &mut stats) {
            search::Outcome::Linearizable => stats.partitions_searched += 1,
            search::Outcome::Exhausted => exhausted = true,
            search::Outcome::Violation(mut violation) => {
                stats.partitions_searched += 1;
                violation.partition = p;
                return (Verdict::NotLinearizable(violation), stats);
            }
        }
    }
    let verdict = if exhausted { Verdict::Unknown } else { Verdict::Linearizable };
    (verdict, stats)
}

/// The first operation whose response precedes its invocation, if any.
fn find_malformed<I, O>(history: &[Operation<I, O>]) -> Option<(usize, String)> {
    history.iter().enumerate().find_map(|(i, op)| match op.response_ns() {
        Some(response_ns) if response_ns < op.invoke_ns => {
            Some((i, format!("response at {response_ns} ns precedes invocation at {} ns", op.invoke_ns)))
        }
        _ => None,
    })
}

/// The model's partition without empty parts, or one part with everything if the model's
/// answer does not cover each operation exactly once (checking the whole history together is
/// always sound, merely slower).
fn valid_partitions<M: Model>(model: &M, history: &[Operation<M::Input, M::Output>]) -> Vec<Vec<usize>> {
    if history.is_empty() {
        return Vec::new();
    }
    let mut parts = model.partition(history);
    parts.retain(|part| !part.is_empty());
    let mut seen = vec![false; history.len()];
    let mut covered = 0usize;
    let mut valid = true;
    'parts: for part in &parts {
        for &i in part {
            match seen.get_mut(i) {
                Some(slot) if !*slot => {
                    *slot = true;
                    covered += 1;
                }
                _ => {
                    valid = false;
                    break 'parts;
                }
            }
        }
    }
    if valid && covered == history.len() { parts } else { vec![(0..history.len()).collect()] }
}
