//! Version orders and the anomalies visible without a dependency graph.
//!
//! Everything here is one pass over the history in index order. The [`Index`] it builds — each
//! key's version order, each element's writer, each state's readers — is what the graph builder
//! turns into edges. Elle §4 calls the property that makes this work *recoverability*: unique
//! appends mean every element names its writer, and a read's last element names the state read.
//!
//! Only `Ok` transactions' reads are evidence: an `Unknown` transaction's reads were never
//! returned, and a `Fail` one's state never existed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::render::{list, txn_line};
use super::{MicroOp, Outcome, Report, Txn, kind};

/// Most conflicting reads of one key spelled out in an `incompatible-order` explanation.
const INCOMPATIBLE_READS_SHOWN_MAX: usize = 4;

/// Everything the graph builder needs to know about keys and elements.
pub(super) struct Index {
    /// Key → version order: the distinct elements of the longest `Ok` read, oldest first.
    order: BTreeMap<u64, Vec<u64>>,
    /// (key, element) → position in `order[key]`.
    position: HashMap<(u64, u64), usize>,
    /// (key, element) → the transaction that appended it (any outcome; unique once
    /// [`malformed`] has passed).
    pub writer: HashMap<(u64, u64), usize>,
    /// (key, last element read, `None` for the empty list) → `Ok` transactions that read that
    /// state, ascending and without repeats.
    readers: HashMap<(u64, Option<u64>), Vec<usize>>,
    /// (key, element) pairs that some `Ok` read showed but the version order lacks: only reads
    /// incompatible with the longest one can show such elements.
    observed_elsewhere: HashSet<(u64, u64)>,
    /// Key → its longest `Ok` read, as read (repeats included), and how many of its first
    /// elements are free of per-element anomalies (repeats, garbage, aborted writers). A read
    /// that is a prefix of it within that length needs no element-by-element check — which is
    /// nearly every read, and the checks would otherwise dominate the running time.
    clean: BTreeMap<u64, (Vec<u64>, usize)>,
}

impl Index {
    /// The element just before `value` in `key`'s version order (`None`: the empty list), and
    /// whether that was inferred because `value` itself was never read. An unread append still
    /// came after every element that was read (Elle's `previously-appended-element`).
    pub fn previous(&self, key: u64, value: u64) -> (Option<u64>, bool) {
        let order = self.order.get(&key).map(Vec::as_slice).unwrap_or(&[]);
        match self.position.get(&(key, value)) {
            Some(&0) => (None, false),
            Some(&p) => (Some(order[p - 1]), false),
            None => (order.last().copied(), true),
        }
    }

    /// Whether `read` of `key` is a prefix of the longest read free of per-element anomalies.
    fn is_clean(&self, key: u64, read: &[u64]) -> bool {
        read.is_empty() || self.clean.get(&key).is_some_and(|(l, n)| read.len() <= *n && l.starts_with(read))
    }

    /// Whether some `Ok` read showed `value` in `key`.
    pub fn observed(&self, key: u64, value: u64) -> bool {
        self.position.contains_key(&(key, value)) || self.observed_elsewhere.contains(&(key, value))
    }

    /// Transactions that read `key` in the state ending with `last`.
    pub fn readers_of(&self, key: u64, last: Option<u64>) -> &[usize] {
        self.readers.get(&(key, last)).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Infers version orders from `Ok` reads, reporting `incompatible-order` where reads of a
    /// key are not all prefixes of its longest read.
    pub fn build(history: &[Txn], report: &mut Report) -> Index {
        // key → distinct non-empty read values → first reader.
        let mut reads: BTreeMap<u64, BTreeMap<&[u64], usize>> = BTreeMap::new();
        let mut readers: HashMap<(u64, Option<u64>), Vec<usize>> = HashMap::new();
        let mut writer = HashMap::new();
        for (i, t) in history.iter().enumerate() {
            for op in &t.ops {
                match op {
                    MicroOp::Append { key, value } => {
                        writer.insert((*key, *value), i);
                    }
                    MicroOp::Read { key, value: Some(v) } if t.outcome == Outcome::Ok => {
                        let r = readers.entry((*key, v.last().copied())).or_default();
                        if r.last() != Some(&i) {
                            r.push(i);
                        }
                        if !v.is_empty() {
                            reads.entry(*key).or_default().entry(v.as_slice()).or_insert(i);
                        }
                    }
                    MicroOp::Read { .. } => {}
                }
            }
        }

        let mut order = BTreeMap::new();
        let mut position = HashMap::new();
        let mut clean = BTreeMap::new();
        let mut observed_elsewhere = HashSet::new();
        for (key, values) in reads {
            let mut sorted: Vec<(&[u64], usize)> = values.into_iter().collect();
            // BTreeMap order is lexicographic; a stable sort by length keeps that as the tie-break,
            // so the chosen "longest" read is deterministic.
            sorted.sort_by_key(|(v, _)| v.len());
            let (longest, longest_reader) = *sorted.last().expect("a key enters `reads` with at least one read");
            let bad: Vec<&(&[u64], usize)> = sorted.iter().filter(|(v, _)| !longest.starts_with(v)).collect();
            observed_elsewhere.extend(bad.iter().flat_map(|(v, _)| v.iter().map(move |e| (key, *e))));
            if !bad.is_empty() {
                let mut text = format!(
                    "{}: key {key} was read in orders that no single list explains; the longest read, by T{longest_reader}, is {}",
                    kind::INCOMPATIBLE_ORDER,
                    list(longest)
                );
                let mut txns = vec![longest_reader];
                for (v, reader) in bad.iter().take(INCOMPATIBLE_READS_SHOWN_MAX) {
                    let at = v.iter().zip(longest.iter()).take_while(|(a, b)| a == b).count();
                    let theirs = longest.get(at).map_or("nothing".to_string(), |e| e.to_string());
                    text.push_str(&format!(
                        "\n  T{reader} read {}: at position {at} it has {} where the longest read has {theirs}",
                        list(v),
                        v[at]
                    ));
                    txns.push(*reader);
                }
                if bad.len() > INCOMPATIBLE_READS_SHOWN_MAX {
                    text.push_str(&format!("\n  … and {} more", bad.len() - INCOMPATIBLE_READS_SHOWN_MAX));
                }
                report.push(kind::INCOMPATIBLE_ORDER, txns, text);
            }
            let mut seen = HashSet::new();
            let clean_len = longest
                .iter()
                .position(|e| {
                    let writer = writer.get(&(key, *e)).map(|&w: &usize| history[w].outcome);
                    !seen.insert(*e) || matches!(writer, None | Some(Outcome::Fail))
                })
                .unwrap_or(longest.len());
            clean.insert(key, (longest.to_vec(), clean_len));
            seen.clear();
            let distinct: Vec<u64> = longest.iter().copied().filter(|e| seen.insert(*e)).collect();
            for (p, e) in distinct.iter().enumerate() {
                position.insert((key, *e), p);
            }
            order.insert(key, distinct);
        }
        Index { order, position, writer, readers, observed_elsewhere, clean }
    }
}

/// Reports transactions the analysis cannot reason about; true if there were any, in which case
/// the caller stops: with two writers for one element every later inference would be a guess.
pub(super) fn malformed(history: &[Txn], report: &mut Report) -> bool {
    let mut appended: HashMap<(u64, u64), usize> = HashMap::new();
    let mut bad = false;
    for (i, t) in history.iter().enumerate() {
        let mut problems = Vec::new();
        if t.outcome == Outcome::Ok && t.complete_ns.is_none() {
            problems.push("it is Ok but has no completion time".to_string());
        }
        if let Some(c) = t.complete_ns.filter(|c| *c < t.invoke_ns) {
            problems.push(format!("it completed at {c} ns, before it was invoked at {} ns", t.invoke_ns));
        }
        for op in &t.ops {
            match op {
                MicroOp::Read { key, value: None } if t.outcome == Outcome::Ok => {
                    problems.push(format!("it is Ok but its read of key {key} has no value"));
                }
                MicroOp::Append { key, value } => {
                    if let Some(first) = appended.insert((*key, *value), i) {
                        bad = true;
                        let text = format!(
                            "{}: element {value} was appended to key {key} by both T{first} and T{i}; appends must be \
                             unique, so the analysis stopped\n  {}\n  {}",
                            kind::DUPLICATE_APPENDS,
                            txn_line(history, first),
                            txn_line(history, i)
                        );
                        report.push(kind::DUPLICATE_APPENDS, vec![first, i], text);
                    }
                }
                MicroOp::Read { .. } => {}
            }
        }
        if !problems.is_empty() {
            bad = true;
            let text = format!(
                "{}: T{i} is malformed ({}), so the analysis stopped\n  {}",
                kind::MALFORMED,
                problems.join("; "),
                txn_line(history, i)
            );
            report.push(kind::MALFORMED, vec![i], text);
        }
    }
    bad
}

/// Reports every anomaly that needs no dependency graph.
pub(super) fn anomalies(history: &[Txn], index: &Index, report: &mut Report) {
    for (i, t) in history.iter().enumerate() {
        if t.outcome != Outcome::Ok {
            continue;
        }
        reads(history, index, i, report);
        internal(history, i, report);
    }
    dirty_updates(history, index, report);
    lost_updates(history, report);
}

/// Per-read anomalies of `Ok` transaction `i`: duplicates, garbage, G1a, G1b.
fn reads(history: &[Txn], index: &Index, i: usize, report: &mut Report) {
    for op in &history[i].ops {
        let MicroOp::Read { key, value: Some(v) } = op else { continue };
        let key = *key;
        if !index.is_clean(key, v) {
            read_elements(history, index, i, key, v, report);
        }
        let Some(&last) = v.last() else { continue };
        let Some(&w) = index.writer.get(&(key, last)) else { continue };
        if w == i {
            continue;
        }
        let later = history[w]
            .ops
            .iter()
            .filter_map(|op| match op {
                MicroOp::Append { key: k, value } if *k == key => Some(*value),
                _ => None,
            })
            .skip_while(|x| *x != last)
            .nth(1);
        if let Some(next) = later {
            let text = format!(
                "{}: T{i} read key {key} ending in {last}, an intermediate state: its writer T{w} went on to \
                 append {next} to the same key (intermediate read)\n  {}\n  {}",
                kind::G1B,
                txn_line(history, i),
                txn_line(history, w)
            );
            report.push(kind::G1B, vec![i, w], text);
        }
    }
}

/// Element-by-element anomalies of one read: repeats, garbage, aborted writers.
fn read_elements(history: &[Txn], index: &Index, i: usize, key: u64, v: &[u64], report: &mut Report) {
    let mut seen = BTreeSet::new();
    let dups: BTreeSet<u64> = v.iter().copied().filter(|e| !seen.insert(*e)).collect();
    if !dups.is_empty() {
        let text = format!(
            "{}: T{i} read key {key} as {}, which repeats {:?} though every append is unique\n  {}",
            kind::DUPLICATE_ELEMENTS,
            list(v),
            dups,
            txn_line(history, i)
        );
        report.push(kind::DUPLICATE_ELEMENTS, vec![i], text);
    }
    for e in v {
        match index.writer.get(&(key, *e)) {
            None => {
                let text = format!(
                    "{}: T{i} read element {e} of key {key}, which no transaction appended\n  {}",
                    kind::GARBAGE_READ,
                    txn_line(history, i)
                );
                report.push(kind::GARBAGE_READ, vec![i], text);
            }
            Some(&w) if history[w].outcome == Outcome::Fail => {
                let text = format!(
                    "{}: T{i} read element {e} of key {key}, appended by T{w}, which failed (aborted read)\n  {}\n  {}",
                    kind::G1A,
                    txn_line(history, i),
                    txn_line(history, w)
                );
                report.push(kind::G1A, vec![i, w], text);
            }
            Some(_) => {}
        }
    }
}

/// What a transaction knows a key holds, from its own earlier ops: what it last read (`None`:
/// it has not read the key, so some unknown prefix) followed by what it appended since.
struct Expect<'h> {
    read: Option<&'h [u64]>,
    appended: Vec<u64>,
}

impl Expect<'_> {
    fn admits(&self, v: &[u64]) -> bool {
        match self.read {
            Some(r) => v.len() == r.len() + self.appended.len() && v.starts_with(r) && v.ends_with(&self.appended),
            None => v.ends_with(&self.appended),
        }
    }

    fn describe(&self) -> String {
        match self.read {
            Some(r) => list(&[r, &self.appended].concat()),
            None => format!("[… {}", &list(&self.appended)[1..]),
        }
    }
}

/// `internal` and `future-read` for `Ok` transaction `i` (at most one of each per transaction).
fn internal(history: &[Txn], i: usize, report: &mut Report) {
    let mut state: BTreeMap<u64, Expect> = BTreeMap::new();
    // Key → the transaction's reads of it so far; appends are few, so scanning these on each
    // append is cheaper than indexing every element read.
    let mut reads: BTreeMap<u64, Vec<&[u64]>> = BTreeMap::new();
    let (mut internal_found, mut future_found) = (false, false);
    for op in &history[i].ops {
        match op {
            MicroOp::Append { key, value } => {
                let seen_before = reads.get(key).is_some_and(|rs| rs.iter().any(|r| r.contains(value)));
                if !future_found && seen_before {
                    future_found = true;
                    let text = format!(
                        "{}: T{i} read element {value} of key {key} before appending it itself\n  {}",
                        kind::FUTURE_READ,
                        txn_line(history, i)
                    );
                    report.push(kind::FUTURE_READ, vec![i], text);
                }
                state.entry(*key).or_insert(Expect { read: None, appended: Vec::new() }).appended.push(*value);
            }
            MicroOp::Read { key, value } => {
                let v = value.as_deref().expect("malformed() rejects Ok reads without values");
                reads.entry(*key).or_default().push(v);
                let expected = state.get(key).filter(|e| !e.admits(v)).map(Expect::describe);
                if let Some(expected) = expected.filter(|_| !internal_found) {
                    internal_found = true;
                    let text = format!(
                        "{}: T{i} read key {key} as {}, but its own earlier reads and appends say it held {expected}\n  {}",
                        kind::INTERNAL,
                        list(v),
                        txn_line(history, i)
                    );
                    report.push(kind::INTERNAL, vec![i], text);
                }
                state.insert(*key, Expect { read: Some(v), appended: Vec::new() });
            }
        }
    }
}

/// A committed append directly after an aborted one in a key's version order: the committed
/// transaction built on state that never existed. `Unknown` writers are skipped over, as in Elle.
fn dirty_updates(history: &[Txn], index: &Index, report: &mut Report) {
    for (key, order) in &index.order {
        // The last writer whose outcome is definite; `None` is the (committed) initial state.
        let mut last: Option<usize> = None;
        for e in order {
            let Some(&w) = index.writer.get(&(*key, *e)) else { break };
            match history[w].outcome {
                Outcome::Unknown => {}
                Outcome::Fail => last = Some(w),
                Outcome::Ok => {
                    if let Some(f) = last.filter(|f| history[*f].outcome == Outcome::Fail) {
                        let text = format!(
                            "{}: on key {key}, T{w} committed an append of {e} on top of state left by T{f}, which \
                             failed\n  {}\n  {}",
                            kind::DIRTY_UPDATE,
                            txn_line(history, f),
                            txn_line(history, w)
                        );
                        report.push(kind::DIRTY_UPDATE, vec![f, w], text);
                    }
                    last = Some(w);
                }
            }
        }
    }
}

/// Committed transactions that read the same state of a key before appending to it: in any
/// serial order the later one would have seen the earlier one's append.
fn lost_updates(history: &[Txn], report: &mut Report) {
    // (key, state read before the first append to key) → transactions.
    let mut groups: BTreeMap<(u64, &[u64]), Vec<usize>> = BTreeMap::new();
    for (i, t) in history.iter().enumerate() {
        if t.outcome != Outcome::Ok {
            continue;
        }
        let mut first_read: BTreeMap<u64, &[u64]> = BTreeMap::new();
        let mut appended = BTreeSet::new();
        for op in &t.ops {
            match op {
                MicroOp::Read { key, value: Some(v) } => {
                    first_read.entry(*key).or_insert(v.as_slice());
                }
                MicroOp::Append { key, .. } if appended.insert(*key) => {
                    if let Some(v) = first_read.get(key) {
                        groups.entry((*key, v)).or_default().push(i);
                    }
                }
                _ => {}
            }
        }
    }
    for ((key, v), txns) in groups {
        if txns.len() < 2 {
            continue;
        }
        let mut text = format!(
            "{}: {} committed transactions read key {key} as {} and then appended to it; all but one of them \
             built on a stale read",
            kind::LOST_UPDATE,
            txns.len(),
            list(v)
        );
        for t in &txns {
            text.push_str(&format!("\n  {}", txn_line(history, *t)));
        }
        report.push(kind::LOST_UPDATE, txns, text);
    }
}
