//! Randomized histories from a tiny in-memory list database with a known answer.
//!
//! Each transaction gets a commit point inside its [invoke, complete] interval; executing them
//! serially in commit-point order is strictly serializable by construction, so the checker must
//! call every such history valid. Then one deliberate bug is injected into the execution and the
//! checker must name it:
//!
//! - a stale read of one key (the reader misses the latest writer, then appends) → `G-single`;
//! - a lost update (the second of two read-modify-writes overwrites the first) → `lost-update`
//!   plus a data cycle;
//! - two adjacent transactions executed against their real-time order → exactly the one `-realtime`
//!   kind their conflict implies, and valid without real time;
//! - a committed transaction reported as failed → `G1a`.
//!
//! Every history ends with one transaction reading every key, so every committed append is
//! observed and the version orders are complete.

use std::collections::{BTreeMap, BTreeSet};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

/// Keys: few, so transactions conflict often.
const KEYS: u64 = 4;
/// Concurrent clients.
const PROCESSES: u64 = 5;

/// A transaction before execution.
#[derive(Clone, Debug)]
struct Planned {
    txn: Txn,
    /// Where it takes effect in the serial order, if it commits.
    commit_ns: u64,
    applied: bool,
}

/// Generates `count` transactions plus the final read-everything transaction.
fn plan(rng: &mut ChaCha8Rng, count: usize) -> Vec<Planned> {
    let mut out = Vec::with_capacity(count + 1);
    let mut clock = vec![0u64; PROCESSES as usize];
    let mut next_value = 1u64;
    for _ in 0..count {
        let process = rng.random_range(0..PROCESSES);
        let invoke_ns = clock[process as usize] + rng.random_range(0..20) * 1000;
        let duration = rng.random_range(1..60) * 1000;
        let complete_ns = invoke_ns + duration;
        clock[process as usize] = complete_ns;
        let mut ops = Vec::new();
        for _ in 0..rng.random_range(1..=3) {
            let key = rng.random_range(0..KEYS);
            let shape = rng.random_range(0..3);
            if shape != 1 {
                ops.push(MicroOp::Read { key, value: None });
            }
            if shape != 0 {
                ops.push(MicroOp::Append { key, value: next_value });
                next_value += 1;
            }
        }
        let roll = rng.random_range(0..10);
        let (outcome, applied, complete, commit_ns) = match roll {
            0 => (Outcome::Fail, false, Some(complete_ns), 0),
            // Unknown: it may commit, possibly long after the client gave up on it.
            1 => {
                let applied = rng.random_bool(0.5);
                let commit = invoke_ns + rng.random_range(1..200_000);
                (Outcome::Unknown, applied, rng.random_bool(0.5).then_some(complete_ns), commit)
            }
            _ => (Outcome::Ok, true, Some(complete_ns), invoke_ns + rng.random_range(1..duration)),
        };
        out.push(Planned { txn: Txn { process, invoke_ns, complete_ns: complete, outcome, ops }, commit_ns, applied });
    }
    let end = out.iter().map(|p| p.commit_ns.max(p.txn.complete_ns.unwrap_or(0))).max().unwrap_or(0) + 1000;
    let ops = (0..KEYS).map(|key| MicroOp::Read { key, value: None }).collect();
    let txn = Txn { process: PROCESSES, invoke_ns: end, complete_ns: Some(end + 1000), outcome: Outcome::Ok, ops };
    out.push(Planned { txn, commit_ns: end + 500, applied: true });
    out
}

/// Applied transactions in commit order.
fn serial_order(plan: &[Planned]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..plan.len()).filter(|&i| plan[i].applied).collect();
    order.sort_by_key(|&i| (plan[i].commit_ns, i));
    order
}

/// A deliberate bug in the database.
#[derive(Clone, Debug)]
enum Bug {
    None,
    /// `victim` sees `key` as `snapshot` (plus its own appends) instead of the current list.
    StaleRead {
        victim: usize,
        key: u64,
        snapshot: Vec<u64>,
    },
    /// `victim` sees `key` as `snapshot` and, on commit, overwrites `key` with its view.
    LostUpdate {
        victim: usize,
        key: u64,
        snapshot: Vec<u64>,
    },
}

/// Every key's list just before each transaction ran, by transaction.
type Snapshots = BTreeMap<usize, BTreeMap<u64, Vec<u64>>>;

/// Executes the applied transactions serially in `order`; returns the history and the state of
/// every key just before each transaction ran.
fn execute(plan: &[Planned], order: &[usize], bug: &Bug) -> (Vec<Txn>, Snapshots) {
    let mut history: Vec<Txn> = plan.iter().map(|p| p.txn.clone()).collect();
    let mut state: BTreeMap<u64, Vec<u64>> = (0..KEYS).map(|k| (k, Vec::new())).collect();
    let mut before = BTreeMap::new();
    for &i in order {
        before.insert(i, state.clone());
        let (view_key, mut view, overwrite) = match bug {
            Bug::StaleRead { victim, key, snapshot } if *victim == i => (Some(*key), snapshot.clone(), false),
            Bug::LostUpdate { victim, key, snapshot } if *victim == i => (Some(*key), snapshot.clone(), true),
            _ => (None, Vec::new(), false),
        };
        let reads_known = history[i].outcome == Outcome::Ok;
        for op in &mut history[i].ops {
            match op {
                MicroOp::Read { key, value } => {
                    let seen = if view_key == Some(*key) { &view } else { &state[key] };
                    if reads_known {
                        *value = Some(seen.clone());
                    }
                }
                MicroOp::Append { key, value } => {
                    if view_key == Some(*key) {
                        view.push(*value);
                        if overwrite {
                            continue;
                        }
                    }
                    state.get_mut(key).expect("every key starts empty").push(*value);
                }
            }
        }
        if let (Some(k), true) = (view_key, overwrite) {
            state.insert(k, view);
        }
    }
    (history, before)
}

/// The keys `t` reads before first appending to them, and then appends to.
fn read_then_append(t: &Txn) -> BTreeSet<u64> {
    let (mut read, mut appended, mut out) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for op in &t.ops {
        match op {
            MicroOp::Read { key, .. } if !appended.contains(key) => {
                read.insert(*key);
            }
            MicroOp::Read { .. } => {}
            MicroOp::Append { key, .. } => {
                if appended.insert(*key) && read.contains(key) {
                    out.insert(*key);
                }
            }
        }
    }
    out
}

fn appends_to(t: &Txn, key: u64) -> bool {
    t.ops.iter().any(|op| matches!(op, MicroOp::Append { key: k, .. } if *k == key))
}

fn reads_after_appending(t: &Txn, key: u64) -> bool {
    let first_append = t.ops.iter().position(|op| matches!(op, MicroOp::Append { key: k, .. } if *k == key));
    first_append.is_some_and(|p| t.ops[p..].iter().any(|op| matches!(op, MicroOp::Read { key: k, .. } if *k == key)))
}

fn set(kinds: &[&str]) -> BTreeSet<String> {
    kinds.iter().map(|k| k.to_string()).collect()
}

const CYCLE_KINDS: [&str; 8] =
    ["G0", "G1c", "G-single", "G2", "G0-realtime", "G1c-realtime", "G-single-realtime", "G2-realtime"];

/// A strictly serializable history of `count` transactions (plus the final read).
pub(super) fn valid_history(seed: u64, count: usize) -> Vec<Txn> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let plan = plan(&mut rng, count);
    execute(&plan, &serial_order(&plan), &Bug::None).0
}

/// A history where one transaction read a key stale (missing the latest writer W) and then
/// appended to it; with the kinds expected and the victim. `None` if the seed offers no victim.
pub(super) fn stale_read_history(seed: u64) -> Option<(Vec<Txn>, BTreeSet<String>, usize)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let plan = plan(&mut rng, 150);
    let order = serial_order(&plan);
    let (_, before) = execute(&plan, &order, &Bug::None);
    // Victim: an Ok txn that reads a key, then appends to it, with some earlier writer W.
    let mut candidates = Vec::new();
    for (pos, &t) in order.iter().enumerate() {
        if plan[t].txn.outcome != Outcome::Ok {
            continue;
        }
        for key in read_then_append(&plan[t].txn) {
            // Reading its own append back would show it after the stale prefix: an
            // incompatible order rather than the G-single this is about.
            if reads_after_appending(&plan[t].txn, key) {
                continue;
            }
            if let Some(&w) = order[..pos].iter().rev().find(|&&w| appends_to(&plan[w].txn, key)) {
                candidates.push((t, key, w));
            }
        }
    }
    if candidates.is_empty() {
        return None;
    }
    let (victim, key, w) = candidates[rng.random_range(0..candidates.len())];
    let bug = Bug::StaleRead { victim, key, snapshot: before[&w][&key].clone() };
    let (history, _) = execute(&plan, &order, &bug);
    // W read the same state before appending too: then it is also a lost update.
    let mut expected = set(&[kind::G_SINGLE]);
    if plan[w].txn.outcome == Outcome::Ok && read_then_append(&plan[w].txn).contains(&key) {
        expected.insert(kind::LOST_UPDATE.to_string());
    }
    Some((history, expected, victim))
}

/// A history where of two adjacent read-modify-writes of a key the second overwrote the first;
/// with the two transactions. `None` if the seed offers no such pair.
pub(super) fn lost_update_history(seed: u64) -> Option<(Vec<Txn>, usize, usize)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let plan = plan(&mut rng, 150);
    let order = serial_order(&plan);
    let (_, before) = execute(&plan, &order, &Bug::None);
    // The first must not read its own append back (that read would reveal the lost element and
    // make this an incompatible order instead).
    let mut candidates = Vec::new();
    for pair in order.windows(2) {
        let (first, second) = (pair[0], pair[1]);
        if plan[first].txn.outcome != Outcome::Ok || plan[second].txn.outcome != Outcome::Ok {
            continue;
        }
        let shared = read_then_append(&plan[first].txn);
        for key in shared.intersection(&read_then_append(&plan[second].txn)) {
            if !reads_after_appending(&plan[first].txn, *key) {
                candidates.push((first, second, *key));
            }
        }
    }
    if candidates.is_empty() {
        return None;
    }
    let (first, second, key) = candidates[rng.random_range(0..candidates.len())];
    let bug = Bug::LostUpdate { victim: second, key, snapshot: before[&first][&key].clone() };
    Some((execute(&plan, &order, &bug).0, first, second))
}

/// A history where two adjacent Ok transactions T1, T2, T1 done before T2 began, executed in the
/// order T2, T1; with the kinds expected. `None` if the seed offers no conflicting pair.
pub(super) fn realtime_swap_history(seed: u64) -> Option<(Vec<Txn>, BTreeSet<String>)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let plan = plan(&mut rng, 150);
    let mut order = serial_order(&plan);
    for pos in 0..order.len() - 1 {
        let (t1, t2) = (&plan[order[pos]].txn, &plan[order[pos + 1]].txn);
        if t1.outcome != Outcome::Ok || t2.outcome != Outcome::Ok || t1.complete_ns >= Some(t2.invoke_ns) {
            continue;
        }
        let expected = expected_after_swap(t1, t2);
        if !expected.is_empty() {
            order.swap(pos, pos + 1);
            return Some((execute(&plan, &order, &Bug::None).0, expected));
        }
    }
    None
}

/// A valid history in which one committed transaction with an append is reported as failed.
pub(super) fn failed_liar_history(seed: u64) -> Option<(Vec<Txn>, usize)> {
    let mut history = valid_history(seed, 150);
    // The final read-everything txn observes every committed append.
    let last = history.len() - 1;
    let liar = (0..last).find(|&i| {
        history[i].outcome == Outcome::Ok && history[i].ops.iter().any(|op| matches!(op, MicroOp::Append { .. }))
    })?;
    history[liar].outcome = Outcome::Fail;
    Some((history, liar))
}

#[test]
fn serial_executions_in_commit_order_are_strictly_serializable() {
    let mut totals = EdgeCounts::default();
    for seed in 0..40 {
        let history = valid_history(seed, 150);
        let r = check(&history, CheckOptions::strict_serializable());
        assert!(r.is_valid(), "seed {seed}: {r}");
        assert!(r.edges.ww > 0 && r.edges.wr > 0 && r.edges.rw > 0 && r.edges.realtime > 0, "seed {seed}: {r}");
        totals.rw += r.edges.rw;
        totals.realtime += r.edges.realtime;
    }
    assert!(totals.rw > 1000 && totals.realtime > 1000, "the histories must be dense in dependencies: {totals:?}");
}

#[test]
fn a_long_valid_history_is_fully_searched() {
    // No timing assertion (that would fail on a slow machine); it must finish, fully searched.
    let history = valid_history(7, 5000);
    let r = check(&history, CheckOptions::strict_serializable());
    assert!(r.is_valid(), "{r}");
    assert!(!r.search_exhausted);
}

#[test]
fn a_stale_read_before_an_append_is_g_single() {
    let mut cases = 0;
    for seed in 1000..1030 {
        let Some((history, expected, victim)) = stale_read_history(seed) else { continue };
        let r = check(&history, CheckOptions::strict_serializable());
        assert_eq!(r.kinds(), expected, "seed {seed}, victim T{victim}: {r}");
        let cycle = r.anomalies.iter().find(|a| a.kind == kind::G_SINGLE).expect("checked above");
        assert!(cycle.txns.contains(&victim), "the cycle runs through the victim: {}", cycle.explanation);
        cases += 1;
    }
    assert!(cases >= 20, "only {cases} seeds had a stale-read victim");
}

#[test]
fn a_lost_update_is_reported_with_a_cycle() {
    let mut cases = 0;
    for seed in 2000..2030 {
        let Some((history, first, second)) = lost_update_history(seed) else { continue };
        let r = check(&history, CheckOptions::strict_serializable());
        let lost = r.anomalies.iter().find(|a| a.kind == kind::LOST_UPDATE);
        let lost = lost.unwrap_or_else(|| panic!("seed {seed}, T{first} and T{second}: {r}"));
        assert!(lost.txns.contains(&first) && lost.txns.contains(&second), "{}", lost.explanation);
        // The lost append is placed after the last observed element, which closes a data cycle
        // through the first transaction; real time is not needed to see it.
        let data = |a: &&Anomaly| CYCLE_KINDS[..4].contains(&a.kind.as_str()) && a.txns.contains(&first);
        assert!(r.anomalies.iter().any(|a| data(&a)), "seed {seed}: {r}");
        assert!(!check(&history, CheckOptions::serializable()).is_valid());
        cases += 1;
    }
    assert!(cases >= 15, "only {cases} seeds had a lost-update pair");
}

#[test]
fn executing_against_real_time_is_caught_only_with_realtime_edges() {
    let mut cases = 0;
    for seed in 3000..3040 {
        let Some((history, expected)) = realtime_swap_history(seed) else { continue };
        let r = check(&history, CheckOptions::strict_serializable());
        assert_eq!(r.kinds(), expected, "seed {seed}: {r}");
        let r = check(&history, CheckOptions::serializable());
        assert!(r.is_valid(), "seed {seed}: still serializable: {r}");
        cases += 1;
    }
    assert!(cases >= 20, "only {cases} seeds had a swappable pair");
}

/// The real-time kind exposed by executing `t2` right before `t1` although `t1` completed
/// before `t2` was invoked: the data edge t2 → t1 closes the cycle t2 → t1 -rt-> t2, reported once
/// under its most severe relation.
fn expected_after_swap(t1: &Txn, t2: &Txn) -> BTreeSet<String> {
    let keys = |t: &Txn| -> BTreeSet<u64> {
        t.ops.iter().filter_map(|op| if let MicroOp::Append { key, .. } = op { Some(*key) } else { None }).collect()
    };
    let (a1, a2) = (keys(t1), keys(t2));
    let ww = !a1.is_disjoint(&a2);
    // t1 reads, before appending to it, a key t2 appended to: it sees t2's last append.
    let mut wr = false;
    let mut appended = BTreeSet::new();
    for op in &t1.ops {
        match op {
            MicroOp::Read { key, .. } if !appended.contains(key) && a2.contains(key) => wr = true,
            MicroOp::Read { .. } => {}
            MicroOp::Append { key, .. } => {
                appended.insert(*key);
            }
        }
    }
    // t2 reads a key t1 appends to, and does not append to it afterwards: t1's append is next.
    let rw = t2.ops.iter().enumerate().any(|(i, op)| match op {
        MicroOp::Read { key, .. } => {
            a1.contains(key) && !t2.ops[i..].iter().any(|o| matches!(o, MicroOp::Append { key: k, .. } if k == key))
        }
        MicroOp::Append { .. } => false,
    });
    let kind = if ww {
        "G0-realtime"
    } else if wr {
        "G1c-realtime"
    } else if rw {
        "G-single-realtime"
    } else {
        return BTreeSet::new();
    };
    set(&[kind])
}

#[test]
fn a_committed_txn_reported_as_failed_is_an_aborted_read() {
    let mut cases = 0;
    for seed in 4000..4020 {
        let Some((history, liar)) = failed_liar_history(seed) else { continue };
        let r = check(&history, CheckOptions::strict_serializable());
        assert!(r.kinds().contains(kind::G1A), "seed {seed}, T{liar} reported failed: {r}");
        cases += 1;
    }
    assert!(cases >= 15);
}

#[test]
fn one_long_range_stale_read_is_drawn_as_a_two_step_cycle() {
    // A lone read, late in a long history, returns its key's initial (empty) state: it missed the
    // key's first writer, which finished long before. Real-time edges are a reduction, so only the
    // implicit real-time closing step keeps the drawn cycle from crossing the whole history.
    let mut history = valid_history(5, 5000);
    let victim = (0..history.len())
        .rev()
        .find(|&i| {
            let t = &history[i];
            t.outcome == Outcome::Ok && matches!(&t.ops[..], [MicroOp::Read { value: Some(v), .. }] if v.len() > 10)
        })
        .expect("a long history has a late single-read transaction");
    let MicroOp::Read { value: Some(v), .. } = &mut history[victim].ops[0] else { unreachable!("matched above") };
    v.clear();
    let r = check(&history, CheckOptions::strict_serializable());
    assert_eq!(r.kinds(), set(&["G-single-realtime"]), "{r}");
    let cycle = &r.anomalies[0];
    assert_eq!(cycle.txns.len(), 2, "{}", cycle.explanation);
    assert_eq!(cycle.txns[0], victim, "{}", cycle.explanation);
    // A read-only transaction reading the initial state can be serialized first.
    assert!(check(&history, CheckOptions::serializable()).is_valid());
}

#[test]
fn a_long_heavily_broken_history_is_fully_searched() {
    // Truncate 5% of the reads of a long valid history to a random prefix (stale reads).
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let mut history = valid_history(5, 5000);
    for t in history.iter_mut().filter(|t| t.outcome == Outcome::Ok) {
        for op in t.ops.iter_mut() {
            if let MicroOp::Read { value: Some(v), .. } = op
                && !v.is_empty()
                && rng.random_bool(0.05)
            {
                v.truncate(rng.random_range(0..v.len()));
            }
        }
    }
    let r = check(&history, CheckOptions::strict_serializable());
    assert!(r.kinds().contains(kind::G_SINGLE), "{r}");
    assert!(!r.search_exhausted, "{r}");
    assert!(r.anomalies.len() <= r.counts.len() * ANOMALIES_LISTED_PER_KIND_MAX);
}
