//! The search over one partition: Wing & Gong's algorithm with Lowe's just-in-time
//! linearization and memoization of (linearized set, model state), as in Porcupine, plus three
//! prunings that keep timed-out operations and heavy read traffic affordable.
//!
//! ## Lists
//!
//! Every operation with a response contributes two nodes to a doubly linked list ordered by
//! time: its call and its return. Linearizing an operation *lifts* both nodes out of the list;
//! backtracking puts them back in exactly the reverse order (dancing links), which the stack
//! discipline guarantees, so lifting and restoring are O(1). Operations of unknown outcome would
//! have their return at +∞, after every known return; they live in a second list of calls only.
//!
//! ```text
//!   known:    HEAD ⇄ call₀ ⇄ call₁ ⇄ ret₀ ⇄ call₂ ⇄ ret₁ ⇄ ret₂ ⇄ TAIL
//!                    └ candidates ┘   ▲ frontier: the first remaining response
//!   unknown:  HEAD ⇄ call_u ⇄ call_v ⇄ TAIL
//!                    └ candidate if invoked ≤ frontier
//! ```
//!
//! ## Order of children
//!
//! A node of the search (a state reached by linearizing some operations) tries its children in
//! this order, and backtracks when all have failed:
//!
//! 1. **Forced read.** A read-only candidate ([`Model::is_read_only`]) that the state accepts is
//!    the only child tried: if any linearization exists, one exists that takes this read right
//!    now (moving it to the front changes no state and breaks no real-time order, since nothing
//!    remaining had to precede it). If it fails, the node fails.
//! 2. Known candidates, in call order (read-only ones are skipped: they were just rejected).
//! 3. Unknown candidates invoked no later than the frontier, in call order. Trying them last
//!    linearizes a timed-out operation only when something observed needs it, rather than
//!    eagerly at its invocation.
//!
//! ## Pruning
//!
//! - **Memo with dominance** ([`Memo`]): node A *dominates* node B if they have the same known
//!   set and state and A's unknown set is a subset of B's. Every continuation from B is open to
//!   A (an unlinearized unknown operation constrains nothing and may be left out), so B is
//!   skipped if A was explored. With no unknown operations this is plain memoization.
//! - **No-op unknowns**: an unknown operation that would not change the state is never
//!   linearized; leaving it out is equivalent.
//! - **Absorption**: if the last choice was an unknown operation u, and the next operation
//!   reaches the same state with or without u before it (a put overwriting u's put), the child
//!   is dominated by its sibling that leaves u out, so it is skipped without being built.
//!
//! Soundness of all of these, including pruning by a dominating node that is still an ancestor
//! on the stack: suppose the root can reach success but the search ends without it. Among the
//! explored nodes that can reach success, take one, X, with the shortest remaining path. X is
//! not a forced node whose forced child is off every shortest path (the exchange argument above
//! gives a path of equal length through it). So X's next node Y on some shortest path was
//! considered, and was explored (contradiction: shorter) or skipped because an explored node,
//! or by induction one reached through a chain of absorptions with ever fewer unknown
//! operations, dominates Y and so has a path no longer than Y's (contradiction again). The same
//! exchange and domination arguments show that the most known operations any explored prefix
//! linearizes is the most any order can, which the report relies on.

use std::collections::HashMap;
use std::hash::Hash;
use std::mem;

use super::report::{OpReport, StuckOp, StuckReason, Violation};
use super::{Model, Operation, SEARCH_CACHE_BYTES_MAX, SearchStats};

/// How the search of one partition ended.
pub(super) enum Outcome {
    /// Every operation with a known response was linearized.
    Linearizable,
    /// The whole search space was explored without success. `Violation::partition` is left
    /// for the caller to fill in.
    Violation(Violation),
    /// The step budget or the memo-table cap ran out first.
    Exhausted,
}

/// One linearized operation on the search stack, with the state to restore on backtracking.
struct Frame<S> {
    op: usize,
    state_before: S,
    /// Where the parent's scan continues if this choice fails (after a forced choice:
    /// nowhere, the parent fails too).
    resume: Cursor,
}

/// Estimated hash-table overhead per memo key beyond the key itself (control bytes, load
/// factor slack); only used to compare the memo's size with [`SEARCH_CACHE_BYTES_MAX`].
const MEMO_KEY_OVERHEAD_BYTES: usize = 16;

/// The nodes explored so far. A node is (known operations linearized, unknown operations
/// linearized, state); for each (known set, state) the memo keeps the minimal unknown sets
/// explored with it (an antichain), so that it can answer "is this node dominated?" (see the
/// module comment).
struct Memo<S> {
    table: HashMap<(Vec<u64>, S), Vec<Vec<u64>>>,
    /// Unknown sets stored, over all keys.
    entries: usize,
    key_bytes: usize,
    set_bytes: usize,
}

impl<S: Clone + Eq + Hash> Memo<S> {
    fn new(known_words: usize, unknown_words: usize) -> Memo<S> {
        Memo {
            table: HashMap::new(),
            entries: 0,
            key_bytes: known_words * 8 + mem::size_of::<((Vec<u64>, S), Vec<Vec<u64>>)>() + MEMO_KEY_OVERHEAD_BYTES,
            set_bytes: unknown_words * 8 + mem::size_of::<Vec<u64>>(),
        }
    }

    /// Records the node; `false` if an explored node dominates it.
    fn visit(&mut self, known: &[u64], unknown: &[u64], state: &S) -> bool {
        let sets = self.table.entry((known.to_vec(), state.clone())).or_default();
        if sets.iter().any(|seen| is_subset(seen, unknown)) {
            return false;
        }
        let before = sets.len();
        sets.retain(|seen| !is_subset(unknown, seen));
        self.entries -= before - sets.len();
        sets.push(unknown.to_vec());
        self.entries += 1;
        true
    }

    /// Estimated heap use (model states' own heap data not counted).
    fn bytes(&self) -> u64 {
        (self.table.len() * self.key_bytes + self.entries * self.set_bytes) as u64
    }
}

fn is_subset(a: &[u64], b: &[u64]) -> bool {
    a.iter().zip(b).all(|(a, b)| a & !b == 0)
}

/// Where the scan for the next operation to linearize stands.
#[derive(Clone, Copy)]
enum Cursor {
    /// Entering a node: look for a read-only candidate to force (see [`Model::is_read_only`]).
    Fresh,
    /// At `node` of the known list: calls before the first return are candidates.
    Known(usize),
    /// Every candidate of the node has been tried (or a forced one failed): backtrack.
    Exhausted,
    /// At `node` of the unknown list: calls invoked no later than `frontier_ns` (the first
    /// remaining known response) are candidates.
    Unknown { node: usize, frontier_ns: u64 },
}

/// Searches the operations `members` (indices into `history`) for a linearization, spending at
/// most `*steps_left` steps and decrementing it by what it used.
pub(super) fn search<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    members: &[usize],
    steps_left: &mut u64,
    stats: &mut SearchStats,
) -> Outcome {
    let ops: Vec<&Operation<M::Input, M::Output>> = members.iter().map(|&i| &history[i]).collect();
    let n = ops.len();
    let known_total = ops.iter().filter(|op| op.response.is_some()).count();
    if known_total == 0 {
        // Nothing was observed, so "none of them took effect" is a linearization.
        return Outcome::Linearizable;
    }

    let mut list = EntryList::new(&ops);
    // Bit positions: known operations and unknown ones are numbered separately, so the memo can
    // compare the two parts of a node differently (see `Memo`).
    let mut rank = vec![0usize; n];
    let (mut known_count, mut unknown_count) = (0usize, 0usize);
    for (op, slot) in rank.iter_mut().enumerate() {
        let counter = if ops[op].response.is_some() { &mut known_count } else { &mut unknown_count };
        *slot = *counter;
        *counter += 1;
    }
    let mut known_bits = vec![0u64; known_count.div_ceil(64)];
    let mut unknown_bits = vec![0u64; unknown_count.div_ceil(64)];
    let mut memo: Memo<M::State> = Memo::new(known_bits.len(), unknown_bits.len());

    let mut state = model.init();
    let mut stack: Vec<Frame<M::State>> = Vec::new();
    let mut known_done = 0usize;
    let mut longest: Vec<usize> = Vec::new();
    let mut longest_known = 0usize;
    let mut cursor = Cursor::Fresh;

    loop {
        if known_done == known_total {
            stats.cache_entries += memo.entries as u64;
            return Outcome::Linearizable;
        }
        if *steps_left == 0 || memo.bytes() >= SEARCH_CACHE_BYTES_MAX {
            stats.cache_entries += memo.entries as u64;
            return Outcome::Exhausted;
        }
        *steps_left -= 1;
        stats.steps += 1;

        // Known candidates are tried before unknown ones: an unknown operation is then
        // linearized only once some observed operation cannot go on without it, instead of
        // eagerly at its invocation, which would make the search backtrack over every
        // combination of timed-out operations before finding that they took effect late or
        // never.
        let candidate = match cursor {
            Cursor::Fresh => {
                // A read-only operation that real time allows and the state accepts can go first
                // in some linearization if any exists (moving it to the front changes no state
                // and breaks no real-time order), so it is the node's only child worth trying.
                let mut forced = None;
                let mut node = list.known_first();
                while let Some(op) = list.known_call(node, &ops) {
                    node = list.next_after_call(op);
                    let Some(output) = ops[op].output().filter(|_| is_read_only(model, ops[op])) else {
                        continue;
                    };
                    if *steps_left == 0 {
                        stats.cache_entries += memo.entries as u64;
                        return Outcome::Exhausted;
                    }
                    *steps_left -= 1;
                    stats.steps += 1;
                    // A model that misreports an operation as read-only loses only the shortcut.
                    if model.step(&state, &ops[op].input, output).as_ref() == Some(&state) {
                        forced = Some(op);
                        break;
                    }
                }
                match forced {
                    Some(op) => Some(op),
                    None => {
                        cursor = Cursor::Known(list.known_first());
                        continue;
                    }
                }
            }
            Cursor::Known(node) => match list.known_call(node, &ops) {
                // Read-only candidates were all rejected by this state on entering the node.
                Some(op) if is_read_only(model, ops[op]) => {
                    cursor = Cursor::Known(list.next_after_call(op));
                    continue;
                }
                Some(op) => Some(op),
                None => {
                    // The first remaining known response: the end of the known candidates.
                    let frontier_ns = list.response_ns(node, &ops);
                    cursor = Cursor::Unknown { node: list.unknown_first(), frontier_ns };
                    continue;
                }
            },
            Cursor::Exhausted => None,
            Cursor::Unknown { node, frontier_ns } => list.unknown_call(node, frontier_ns, &ops),
        };
        let Some(op) = candidate else {
            // No candidate left: the first remaining response closes an operation that was not
            // linearized before it, so undo the last choice and try the next candidate after it.
            let Some(frame) = stack.pop() else {
                stats.cache_entries += memo.entries as u64;
                return Outcome::Violation(report(model, members, &ops, &longest));
            };
            if ops[frame.op].response.is_some() {
                clear_bit(&mut known_bits, rank[frame.op]);
                known_done -= 1;
            } else {
                clear_bit(&mut unknown_bits, rank[frame.op]);
            }
            list.unlift(frame.op, &ops);
            state = frame.state_before;
            cursor = frame.resume;
            continue;
        };
        let skip = match cursor {
            // A forced candidate that fails makes the whole node fail.
            Cursor::Fresh | Cursor::Exhausted => Cursor::Exhausted,
            Cursor::Known(_) => Cursor::Known(list.next_after_call(op)),
            Cursor::Unknown { frontier_ns, .. } => Cursor::Unknown { node: list.next_after_call(op), frontier_ns },
        };

        let next_state = match &ops[op].response {
            Some((_, output)) => model.step(&state, &ops[op].input, output),
            // An unknown operation that changes nothing can always be left out instead.
            None => model.step_unknown(&state, &ops[op].input).filter(|next| *next != state),
        };
        let Some(next_state) = next_state else {
            cursor = skip;
            continue;
        };
        if let Some(frame) = stack.last().filter(|frame| ops[frame.op].response.is_none()) {
            // Absorption: if the last step linearized an unknown operation u and this one leads
            // to the same state with or without u before it (a put overwriting u's put), the
            // node is dominated by the sibling that leaves u out, which is or will be explored.
            let without = match &ops[op].response {
                Some((_, output)) => model.step(&frame.state_before, &ops[op].input, output),
                None => model.step_unknown(&frame.state_before, &ops[op].input),
            };
            if without.as_ref() == Some(&next_state) {
                cursor = skip;
                continue;
            }
        }
        let bits = if ops[op].response.is_some() { &mut known_bits } else { &mut unknown_bits };
        set_bit(bits, rank[op]);
        if !memo.visit(&known_bits, &unknown_bits, &next_state) {
            // This node, or one that dominates it, was explored before and did not succeed.
            let bits = if ops[op].response.is_some() { &mut known_bits } else { &mut unknown_bits };
            clear_bit(bits, rank[op]);
            cursor = skip;
            continue;
        }
        stack.push(Frame { op, state_before: mem::replace(&mut state, next_state), resume: skip });
        if ops[op].response.is_some() {
            known_done += 1;
        }
        list.lift(op, &ops);
        // The report's prefix is the one linearizing the most operations with a response:
        // unknown operations are optional, so counting them would favour padded prefixes.
        if known_done > longest_known {
            longest_known = known_done;
            longest = stack.iter().map(|frame| frame.op).collect();
        }
        cursor = Cursor::Fresh;
    }
}

fn is_read_only<M: Model>(model: &M, op: &Operation<M::Input, M::Output>) -> bool {
    op.output().is_some_and(|output| model.is_read_only(&op.input, output))
}

fn set_bit(bits: &mut [u64], i: usize) {
    bits[i / 64] |= 1 << (i % 64);
}

fn clear_bit(bits: &mut [u64], i: usize) {
    bits[i / 64] &= !(1 << (i % 64));
}

/// Two time-ordered lists threaded through one pair of link arrays. Node `2i` is operation
/// `i`'s call and `2i + 1` its return. The *known* list holds calls and returns of operations
/// with a response; the *unknown* list holds only the calls of operations without one (their
/// returns would sort at +∞, after everything, so they are never reached and not stored).
/// Nodes `2n`, `2n + 1` are the known list's head and tail sentinels, `2n + 2`, `2n + 3` the
/// unknown list's.
struct EntryList {
    next: Vec<usize>,
    prev: Vec<usize>,
    n: usize,
}

impl EntryList {
    fn new<I, O>(ops: &[&Operation<I, O>]) -> EntryList {
        let n = ops.len();
        // Sort key: (time, returns after calls at the same instant, node). Calls first on ties
        // makes touching intervals overlap; the node index makes the order total.
        let mut known: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
        let mut unknown: Vec<(u64, bool, usize)> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            match op.response_ns() {
                Some(response_ns) => {
                    known.push((op.invoke_ns, false, 2 * i));
                    known.push((response_ns, true, 2 * i + 1));
                }
                None => unknown.push((op.invoke_ns, false, 2 * i)),
            }
        }
        known.sort_unstable();
        unknown.sort_unstable();
        let mut list = EntryList { next: vec![usize::MAX; 2 * n + 4], prev: vec![usize::MAX; 2 * n + 4], n };
        for (head, nodes) in [(2 * n, known), (2 * n + 2, unknown)] {
            let mut last = head;
            for (_, _, node) in nodes {
                list.next[last] = node;
                list.prev[node] = last;
                last = node;
            }
            list.next[last] = head + 1;
            list.prev[head + 1] = last;
        }
        list
    }

    fn known_first(&self) -> usize {
        self.next[2 * self.n]
    }

    fn unknown_first(&self) -> usize {
        self.next[2 * self.n + 2]
    }

    /// The operation whose call is `node` of the known list, or `None` at a return or the end.
    fn known_call<I, O>(&self, node: usize, ops: &[&Operation<I, O>]) -> Option<usize> {
        (node < 2 * self.n && node.is_multiple_of(2) && ops[node / 2].response.is_some()).then_some(node / 2)
    }

    /// The response time of the known list's `node`, a return; `u64::MAX` at the end (then no
    /// known operation remains and the search has already succeeded).
    fn response_ns<I, O>(&self, node: usize, ops: &[&Operation<I, O>]) -> u64 {
        if node < 2 * self.n { ops[node / 2].response_ns().unwrap_or(u64::MAX) } else { u64::MAX }
    }

    /// The operation whose call is `node` of the unknown list, if it was invoked by
    /// `frontier_ns`; `None` past that or at the end.
    fn unknown_call<I, O>(&self, node: usize, frontier_ns: u64, ops: &[&Operation<I, O>]) -> Option<usize> {
        (node < 2 * self.n && ops[node / 2].invoke_ns <= frontier_ns).then_some(node / 2)
    }

    fn next_after_call(&self, op: usize) -> usize {
        self.next[2 * op]
    }

    /// Removes operation `op`'s nodes; the call node keeps its own links so that
    /// [`EntryList::next_after_call`] and [`EntryList::unlift`] still work.
    fn lift<I, O>(&mut self, op: usize, ops: &[&Operation<I, O>]) {
        let nodes: &[usize] = if ops[op].response.is_some() { &[2 * op, 2 * op + 1] } else { &[2 * op] };
        for &node in nodes {
            let (p, n) = (self.prev[node], self.next[node]);
            self.next[p] = n;
            self.prev[n] = p;
        }
    }

    /// Undoes the most recent [`EntryList::lift`] still in effect, which must be of `op`.
    fn unlift<I, O>(&mut self, op: usize, ops: &[&Operation<I, O>]) {
        let nodes: &[usize] = if ops[op].response.is_some() { &[2 * op + 1, 2 * op] } else { &[2 * op] };
        for &node in nodes {
            let (p, n) = (self.prev[node], self.next[node]);
            assert!(
                self.next[p] == n && self.prev[n] == p,
                "dancing links: operations are restored in the reverse order they were lifted"
            );
            self.next[p] = node;
            self.prev[n] = node;
        }
    }
}

/// Builds the report of a failed search from the longest linearizable prefix it found.
fn report<M: Model>(
    model: &M,
    members: &[usize],
    ops: &[&Operation<M::Input, M::Output>],
    longest: &[usize],
) -> Violation {
    let describe = |op: usize| -> OpReport {
        let operation = ops[op];
        OpReport {
            index: members[op],
            client: operation.client,
            invoke_ns: operation.invoke_ns,
            response_ns: operation.response_ns(),
            description: model.describe(&operation.input, operation.output()),
        }
    };

    // Replay the prefix; each step succeeded during the search, and the model is deterministic.
    let mut state = Some(model.init());
    for &op in longest {
        state = state.and_then(|state| match &ops[op].response {
            Some((_, output)) => model.step(&state, &ops[op].input, output),
            None => model.step_unknown(&state, &ops[op].input),
        });
    }

    let mut in_prefix = vec![false; ops.len()];
    for &op in longest {
        in_prefix[op] = true;
    }
    let remaining: Vec<usize> = (0..ops.len()).filter(|&op| !in_prefix[op]).collect();
    // Real time allows an operation next iff it was invoked no later than the earliest response
    // among the rest (equal times overlap). Unknown operations can always be skipped, so only
    // operations with a response are reported as stuck.
    let earliest_response = remaining.iter().filter_map(|&op| ops[op].response_ns()).min();
    let mut stuck_ops: Vec<usize> = remaining
        .iter()
        .copied()
        .filter(|&op| ops[op].response.is_some() && Some(ops[op].invoke_ns) <= earliest_response)
        .collect();
    stuck_ops.sort_by_key(|&op| (ops[op].invoke_ns, members[op]));
    let stuck = stuck_ops
        .iter()
        .map(|&op| {
            let accepted = match (&state, &ops[op].response) {
                (Some(state), Some((_, output))) => model.step(state, &ops[op].input, output).is_some(),
                _ => false,
            };
            let reason = if accepted { StuckReason::DeadEnd } else { StuckReason::OutputImpossible };
            StuckOp { op: describe(op), reason }
        })
        .collect::<Vec<_>>();

    let unknown_remaining = remaining.iter().filter(|&&op| ops[op].response.is_none()).count();
    Violation {
        partition: 0,
        partition_ops: ops.len(),
        partition_known_ops: ops.iter().filter(|op| op.response.is_some()).count(),
        longest_prefix: longest.iter().map(|&op| describe(op)).collect(),
        state_after_prefix: match &state {
            Some(state) => format!("{state:?}"),
            None => "(model is not deterministic: replaying the prefix failed)".to_string(),
        },
        stuck,
        other_remaining_ops: remaining.len() - unknown_remaining - stuck_ops.len(),
        unknown_remaining_ops: unknown_remaining,
    }
}
