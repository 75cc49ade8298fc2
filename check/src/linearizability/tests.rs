//! Tests: hand-written tables, a brute-force oracle on small random histories, histories
//! generated from real sequential executions (and mutated), a scaling run, and an ignored
//! contention profile.

use std::collections::BTreeMap;
use std::time::Instant;

use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

type KvOp = Operation<KvInput, KvOutput>;

fn put(client: u64, key: u64, value: u64, invoke: u64, response: u64) -> KvOp {
    Operation::completed(client, KvInput::Put { key, value }, invoke, response, KvOutput::Put)
}

fn get(client: u64, key: u64, value: Option<u64>, invoke: u64, response: u64) -> KvOp {
    Operation::completed(client, KvInput::Get { key }, invoke, response, KvOutput::Get(value))
}

fn cas(client: u64, key: u64, expect: Option<u64>, new: u64, swapped: bool, invoke: u64, response: u64) -> KvOp {
    Operation::completed(client, KvInput::Cas { key, expect, new }, invoke, response, KvOutput::Cas(swapped))
}

fn put_unknown(client: u64, key: u64, value: u64, invoke: u64) -> KvOp {
    Operation::unknown(client, KvInput::Put { key, value }, invoke)
}

fn check_kv(history: &[KvOp]) -> Verdict {
    check(&KvModel, history, SearchBudget::DEFAULT)
}

#[test]
fn table_of_small_histories() {
    let cases: Vec<(&str, bool, Vec<KvOp>)> = vec![
        ("empty history", true, vec![]),
        ("sequential put then get", true, vec![put(0, 1, 1, 0, 10), get(1, 1, Some(1), 20, 30)]),
        ("initial read is nil", true, vec![get(0, 1, None, 0, 10)]),
        (
            "stale read after completed write",
            false,
            vec![put(0, 1, 1, 0, 10), put(0, 1, 2, 20, 30), get(1, 1, Some(1), 40, 50)],
        ),
        ("nil read after completed write", false, vec![put(0, 1, 1, 0, 10), get(1, 1, None, 20, 30)]),
        ("nil read concurrent with write", true, vec![put(0, 1, 1, 0, 100), get(1, 1, None, 10, 20)]),
        ("new value read concurrent with write", true, vec![put(0, 1, 1, 0, 100), get(1, 1, Some(1), 10, 20)]),
        ("read of a value never written", false, vec![put(0, 1, 1, 0, 10), get(1, 1, Some(7), 20, 30)]),
        ("read of a value never written, concurrent", false, vec![put(0, 1, 1, 0, 100), get(1, 1, Some(7), 0, 100)]),
        (
            "concurrent writes, later read sees the first",
            true,
            vec![put(0, 1, 1, 0, 100), put(1, 1, 2, 10, 90), get(2, 1, Some(1), 110, 120)],
        ),
        (
            "concurrent writes, later read sees the second",
            true,
            vec![put(0, 1, 1, 0, 100), put(1, 1, 2, 10, 90), get(2, 1, Some(2), 110, 120)],
        ),
        (
            "concurrent writes, two later reads disagree",
            false,
            vec![
                put(0, 1, 1, 0, 100),
                put(1, 1, 2, 10, 90),
                get(2, 1, Some(1), 110, 120),
                get(3, 1, Some(2), 130, 140),
            ],
        ),
        (
            "concurrent writes observed in opposite orders",
            false,
            vec![
                put(0, 1, 1, 0, 100),
                put(1, 1, 2, 0, 100),
                get(2, 1, Some(1), 10, 20),
                get(2, 1, Some(2), 30, 40),
                get(3, 1, Some(2), 10, 20),
                get(3, 1, Some(1), 30, 40),
            ],
        ),
        (
            "concurrent writes observed in the same order",
            true,
            vec![
                put(0, 1, 1, 0, 100),
                put(1, 1, 2, 0, 100),
                get(2, 1, Some(1), 10, 20),
                get(2, 1, Some(2), 30, 40),
                get(3, 1, Some(1), 10, 20),
                get(3, 1, Some(2), 30, 40),
            ],
        ),
        ("touching intervals overlap", true, vec![put(0, 1, 1, 0, 10), get(1, 1, None, 10, 20)]),
        ("write visible before it was invoked", false, vec![get(1, 1, Some(1), 0, 10), put(0, 1, 1, 11, 20)]),
        ("unknown write visible", true, vec![put_unknown(0, 1, 1, 0), get(1, 1, Some(1), 50, 60)]),
        ("unknown write never visible", true, vec![put_unknown(0, 1, 1, 0), get(1, 1, None, 50, 60)]),
        (
            "unknown write visible then gone",
            false,
            vec![put_unknown(0, 1, 1, 0), get(1, 1, Some(1), 50, 60), get(1, 1, None, 70, 80)],
        ),
        (
            "unknown write takes effect late",
            true,
            vec![put_unknown(0, 1, 1, 0), get(1, 1, None, 50, 60), get(1, 1, Some(1), 1000, 1010)],
        ),
        ("unknown write read before its invocation", false, vec![get(1, 1, Some(1), 0, 10), put_unknown(0, 1, 1, 20)]),
        (
            "unknown write takes effect after a later write",
            true,
            vec![put(0, 1, 1, 0, 10), put_unknown(1, 1, 2, 20), put(0, 1, 3, 30, 40), get(2, 1, Some(2), 50, 60)],
        ),
        (
            "unknown write cannot take effect twice",
            false,
            vec![
                put_unknown(1, 1, 2, 0),
                get(2, 1, Some(2), 10, 20),
                put(0, 1, 3, 30, 40),
                get(2, 1, Some(3), 50, 60),
                get(2, 1, Some(2), 70, 80),
            ],
        ),
        ("only unknown ops", true, vec![put_unknown(0, 1, 1, 0), put_unknown(1, 2, 2, 5)]),
        (
            "unknown read is unconstrained",
            true,
            vec![Operation::unknown(0, KvInput::Get { key: 1 }, 0), put(1, 1, 1, 0, 10), get(1, 1, Some(1), 20, 30)],
        ),
        ("cas from nil succeeds once", false, vec![cas(0, 1, None, 1, true, 0, 10), cas(1, 1, None, 2, true, 20, 30)]),
        (
            "concurrent cas both succeed from nil",
            false,
            vec![cas(0, 1, None, 1, true, 0, 100), cas(1, 1, None, 2, true, 0, 100)],
        ),
        (
            "concurrent cas, one wins and is read",
            true,
            vec![cas(0, 1, None, 1, true, 0, 100), cas(1, 1, None, 2, false, 0, 100), get(2, 1, Some(1), 110, 120)],
        ),
        (
            "concurrent cas, loser's value read",
            false,
            vec![cas(0, 1, None, 1, true, 0, 100), cas(1, 1, None, 2, false, 0, 100), get(2, 1, Some(2), 110, 120)],
        ),
        ("cas fails although it should swap", false, vec![put(0, 1, 1, 0, 10), cas(1, 1, Some(1), 2, false, 20, 30)]),
        ("cas swaps although it should fail", false, vec![put(0, 1, 1, 0, 10), cas(1, 1, Some(5), 2, true, 20, 30)]),
        (
            "cas chain",
            true,
            vec![
                put(0, 1, 1, 0, 10),
                cas(1, 1, Some(1), 2, true, 20, 30),
                cas(2, 1, Some(2), 3, true, 40, 50),
                get(0, 1, Some(3), 60, 70),
            ],
        ),
        (
            "unknown cas that swapped",
            true,
            vec![
                put(0, 1, 1, 0, 10),
                Operation::unknown(1, KvInput::Cas { key: 1, expect: Some(1), new: 2 }, 20),
                get(2, 1, Some(2), 30, 40),
            ],
        ),
        (
            "unknown cas whose expectation never held",
            false,
            vec![
                put(0, 1, 1, 0, 10),
                Operation::unknown(1, KvInput::Cas { key: 1, expect: Some(5), new: 2 }, 20),
                get(2, 1, Some(2), 30, 40),
            ],
        ),
        (
            "independent keys",
            true,
            vec![put(0, 1, 1, 0, 10), put(1, 2, 2, 5, 15), get(2, 1, Some(1), 20, 30), get(3, 2, Some(2), 20, 30)],
        ),
        (
            "keys do not leak into each other",
            false,
            vec![put(0, 1, 1, 0, 10), put(1, 2, 2, 5, 15), get(2, 1, Some(2), 20, 30)],
        ),
    ];
    let mut failures = Vec::new();
    for (name, expected, history) in &cases {
        let verdict = check_kv(history);
        if verdict.is_linearizable() != *expected {
            failures.push(format!("{name}: expected linearizable={expected}, got:\n{verdict}"));
        }
        assert!(!matches!(verdict, Verdict::Unknown | Verdict::Malformed { .. }), "{name}: {verdict}");
        // The verdict must not depend on the order the history is listed in.
        let reversed: Vec<KvOp> = history.iter().rev().cloned().collect();
        assert_eq!(check_kv(&reversed).is_linearizable(), verdict.is_linearizable(), "{name}: reversed");
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn report_names_the_stale_read() {
    let history = vec![put(0, 1, 1, 0, 10), put(0, 1, 2, 20, 30), get(1, 1, Some(1), 40, 50)];
    let verdict = check_kv(&history);
    let violation = verdict.violation().expect("stale read is not linearizable");
    println!("{violation}");
    assert_eq!(violation.partition, 0);
    assert_eq!(violation.partition_ops, 3);
    let prefix: Vec<&str> = violation.longest_prefix.iter().map(|op| op.description.as_str()).collect();
    assert_eq!(prefix, ["put(1, 1) -> ok", "put(1, 2) -> ok"]);
    assert_eq!(violation.state_after_prefix, "{1: 2}");
    assert_eq!(violation.stuck.len(), 1);
    assert_eq!(violation.stuck[0].op.index, 2);
    assert_eq!(violation.stuck[0].op.description, "get(1) -> 1");
    assert_eq!(violation.stuck[0].reason, StuckReason::OutputImpossible);
    let text = violation.to_string();
    assert!(text.contains("#2 client 1 [40, 50]  get(1) -> 1: output impossible from this state"), "{text}");
}

#[test]
fn report_names_the_failing_key_among_many() {
    let history = vec![
        put(0, 10, 1, 0, 10),
        put(1, 20, 1, 0, 10),
        put(2, 30, 1, 0, 10),
        get(0, 10, Some(1), 20, 30),
        get(1, 20, Some(9), 20, 30),
        put_unknown(2, 20, 5, 25),
        get(2, 30, Some(1), 20, 30),
    ];
    let verdict = check_kv(&history);
    let violation = verdict.violation().expect("read of 9 on key 20 is not linearizable");
    println!("{violation}");
    // Partitions come in key order: 10, 20, 30.
    assert_eq!(violation.partition, 1);
    assert_eq!(violation.stuck.len(), 1);
    assert_eq!(violation.stuck[0].op.index, 4);
    assert_eq!(violation.unknown_remaining_ops, 1);
    assert!(violation.longest_prefix.iter().all(|op| op.description.starts_with("put(20")));
}

#[test]
fn malformed_history_is_reported() {
    let history = vec![put(0, 1, 1, 0, 10), get(1, 1, Some(1), 30, 20)];
    assert_eq!(
        check_kv(&history),
        Verdict::Malformed { op: 1, reason: "response at 20 ns precedes invocation at 30 ns".to_string() }
    );
}

#[test]
fn extreme_timestamps_do_not_panic() {
    let history = vec![
        put(0, 1, 1, u64::MAX, u64::MAX),
        get(1, 1, Some(1), u64::MAX, u64::MAX),
        put_unknown(2, 1, 2, u64::MAX),
        get(3, 1, None, 0, 0),
    ];
    assert_eq!(check_kv(&history), Verdict::Linearizable);
}

#[test]
fn exhausted_budget_is_unknown() {
    let history = vec![put(0, 1, 1, 0, 10), get(1, 1, Some(1), 20, 30), get(1, 2, None, 20, 30)];
    let (verdict, stats) = check_with_stats(&KvModel, &history, SearchBudget::DEFAULT);
    assert_eq!(verdict, Verdict::Linearizable);
    assert_eq!((stats.partitions, stats.partitions_searched), (2, 2));
    // Exactly the steps used suffice; one fewer does not, and nothing is claimed then.
    let (verdict, used) = check_with_stats(&KvModel, &history, SearchBudget::steps(stats.steps));
    assert_eq!((verdict, used), (Verdict::Linearizable, stats));
    let (verdict, short) = check_with_stats(&KvModel, &history, SearchBudget::steps(stats.steps - 1));
    assert_eq!(verdict, Verdict::Unknown);
    assert!(short.steps < stats.steps && short.partitions_searched < 2, "{short:?}");
    assert_eq!(check(&KvModel, &history, SearchBudget::steps(0)), Verdict::Unknown);
    // The same holds for a violation: a short budget must not turn into a verdict.
    let stale = vec![put(0, 1, 1, 0, 10), put(0, 1, 2, 20, 30), get(1, 1, Some(1), 40, 50)];
    let (verdict, stats) = check_with_stats(&KvModel, &stale, SearchBudget::DEFAULT);
    assert!(verdict.violation().is_some());
    assert_eq!(check(&KvModel, &stale, SearchBudget::steps(stats.steps - 1)), Verdict::Unknown);
    // Histories with nothing to linearize need no steps.
    assert_eq!(check(&KvModel, &[put_unknown(0, 1, 1, 0)], SearchBudget::steps(0)), Verdict::Linearizable);
}

/// [`KvModel`] with a given partition (possibly breaking the contract) and without the
/// read-only shortcut: the plain search, to cross-check the optimized one.
struct KvWithPartition(Vec<Vec<usize>>);

impl Model for KvWithPartition {
    type State = KvState;
    type Input = KvInput;
    type Output = KvOutput;
    fn init(&self) -> KvState {
        KvModel.init()
    }
    fn step(&self, state: &KvState, input: &KvInput, output: &KvOutput) -> Option<KvState> {
        KvModel.step(state, input, output)
    }
    fn step_unknown(&self, state: &KvState, input: &KvInput) -> Option<KvState> {
        KvModel.step_unknown(state, input)
    }
    fn partition(&self, _ops: &[KvOp]) -> Vec<Vec<usize>> {
        self.0.clone()
    }
}

#[test]
fn invalid_partition_falls_back_to_whole_history() {
    let stale = vec![put(0, 1, 1, 0, 10), put(0, 1, 2, 20, 30), get(1, 1, Some(1), 40, 50)];
    // Splitting the write from the read would hide the violation; each of these is rejected as
    // a partition and the whole history is checked instead.
    let bad = [
        vec![],
        vec![vec![0, 1], vec![2, 99]],
        vec![vec![0, 1], vec![1, 2]],
        vec![vec![0, 1]],
        vec![vec![0, 2], vec![1]],
    ];
    for partition in bad.iter().take(4) {
        let verdict = check(&KvWithPartition(partition.clone()), &stale, SearchBudget::DEFAULT);
        assert!(verdict.violation().is_some(), "{partition:?}: {verdict}");
    }
    // A valid but wrong partition is the model's responsibility: the checker trusts it.
    assert!(check(&KvWithPartition(bad[4].clone()), &stale, SearchBudget::DEFAULT).is_linearizable());
}

/// A counter with the trait's default `partition` and `describe`.
struct Counter;

impl Model for Counter {
    type State = u64;
    type Input = &'static str;
    type Output = u64;
    fn init(&self) -> u64 {
        0
    }
    fn step(&self, state: &u64, input: &&'static str, output: &u64) -> Option<u64> {
        match *input {
            "inc" => Some(state + 1),
            _ => (output == state).then_some(*state),
        }
    }
    fn step_unknown(&self, state: &u64, input: &&'static str) -> Option<u64> {
        Some(if *input == "inc" { state + 1 } else { *state })
    }
}

#[test]
fn default_model_methods() {
    let inc = |client, invoke, response| Operation::completed(client, "inc", invoke, response, 0);
    let read = |client, value, invoke, response| Operation::completed(client, "read", invoke, response, value);
    let ok =
        vec![inc(0, 0, 10), inc(1, 0, 10), read(2, 2, 20, 30), Operation::unknown(0, "inc", 40), read(1, 3, 50, 60)];
    assert!(check(&Counter, &ok, SearchBudget::DEFAULT).is_linearizable());
    let lost_increment = vec![inc(0, 0, 10), inc(1, 0, 10), read(2, 1, 20, 30)];
    let verdict = check(&Counter, &lost_increment, SearchBudget::DEFAULT);
    let text = verdict.to_string();
    assert!(text.contains("\"read\" -> 1: output impossible"), "{text}");
    assert!(text.contains("model state after the prefix: 2"), "{text}");
}

/// Brute-force oracle: tries every subset of the unknown operations and every order of the
/// chosen ones, extending an order only while it respects real time and the model. Shares no
/// code with the checker beyond [`KvModel::apply`].
fn brute_force_linearizable(history: &[KvOp]) -> bool {
    let unknown: Vec<usize> = (0..history.len()).filter(|&i| history[i].response.is_none()).collect();
    let known: Vec<usize> = (0..history.len()).filter(|&i| history[i].response.is_some()).collect();
    (0u32..1 << unknown.len()).any(|mask| {
        let mut chosen = known.clone();
        chosen.extend(unknown.iter().enumerate().filter(|(bit, _)| mask & (1 << bit) != 0).map(|(_, &i)| i));
        any_order(history, &KvState::new(), &chosen)
    })
}

fn any_order(history: &[KvOp], state: &KvState, rest: &[usize]) -> bool {
    rest.is_empty()
        || rest.iter().any(|&i| {
            // `i` may go next unless some op still to place responded before `i` was invoked.
            let allowed =
                rest.iter().all(|&j| history[j].response_ns().is_none_or(|response| response >= history[i].invoke_ns));
            let (next, output) = KvModel::apply(state, &history[i].input);
            let matches = history[i].output().is_none_or(|seen| *seen == output);
            let others: Vec<usize> = rest.iter().copied().filter(|&j| j != i).collect();
            allowed && matches && any_order(history, &next, &others)
        })
}

fn random_small_history(rng: &mut ChaCha8Rng) -> Vec<KvOp> {
    let len = rng.random_range(1..=8);
    (0..len)
        .map(|_| {
            let key = rng.random_range(0..2);
            let small =
                |rng: &mut ChaCha8Rng| -> Option<u64> { rng.random_bool(0.75).then(|| rng.random_range(1..=3)) };
            let (input, output) = match rng.random_range(0..3) {
                0 => (KvInput::Put { key, value: rng.random_range(1..=3) }, KvOutput::Put),
                1 => (KvInput::Get { key }, KvOutput::Get(small(rng))),
                _ => {
                    let expect = small(rng);
                    (KvInput::Cas { key, expect, new: rng.random_range(1..=3) }, KvOutput::Cas(rng.random_bool(0.5)))
                }
            };
            let invoke = rng.random_range(0..20);
            let client = rng.random_range(0..4);
            if rng.random_bool(0.2) {
                Operation::unknown(client, input, invoke)
            } else {
                Operation::completed(client, input, invoke, invoke + rng.random_range(0..10), output)
            }
        })
        .collect()
}

#[test]
fn agrees_with_brute_force_on_small_random_histories() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let (mut linearizable, mut total) = (0, 0);
    for round in 0..10000 {
        let history = random_small_history(&mut rng);
        let expected = brute_force_linearizable(&history);
        let verdict = check_kv(&history);
        assert!(
            !matches!(verdict, Verdict::Unknown | Verdict::Malformed { .. }),
            "round {round}: {verdict} for {history:?}"
        );
        assert_eq!(verdict.is_linearizable(), expected, "round {round}: {verdict}\nhistory: {history:#?}");
        // Without partitioning the answer must be the same.
        let whole = check(&KvWithPartition(vec![(0..history.len()).collect()]), &history, SearchBudget::DEFAULT);
        assert_eq!(whole.is_linearizable(), expected, "round {round}, unpartitioned: {whole}");
        total += 1;
        linearizable += usize::from(expected);
    }
    println!("{linearizable} of {total} random histories linearizable");
    assert!(linearizable > total / 10 && linearizable < total * 9 / 10, "both answers are exercised");
}

/// Shape of a generated history.
struct Workload {
    clients: u64,
    keys: u64,
    ops: usize,
    /// Probability that an operation's outcome is unknown to its client.
    unknown: f64,
}

/// Sentinel base for values no generated operation ever writes.
const NEVER_WRITTEN: u64 = 1 << 40;

/// A history from a real sequential execution: every operation gets a linearization point
/// inside its real-time window (unknown operations: any time after invocation, or never), the
/// operations are applied in point order to [`KvModel`], and clients are told the results.
fn generate(rng: &mut ChaCha8Rng, workload: &Workload) -> Vec<KvOp> {
    let mut cursor: Vec<u64> = (0..workload.clients).map(|_| rng.random_range(0..100)).collect();
    let mut written: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut next_value = 1u64;
    let mut history = Vec::with_capacity(workload.ops);
    let mut points: Vec<(u64, usize)> = Vec::new();
    for i in 0..workload.ops {
        // The client that is free earliest goes next, so clients overlap as in a closed loop.
        let client = (0..workload.clients).min_by_key(|&c| (cursor[c as usize], c)).expect("at least one client");
        let key = rng.random_range(0..workload.keys);
        let values = written.entry(key).or_default();
        let input = match rng.random_range(0..100) {
            0..40 => {
                next_value += 1;
                values.push(next_value);
                KvInput::Put { key, value: next_value }
            }
            40..85 => KvInput::Get { key },
            _ => {
                next_value += 1;
                values.push(next_value);
                let expect = if rng.random_bool(0.2) { None } else { values.choose(rng).copied() };
                KvInput::Cas { key, expect, new: next_value }
            }
        };
        let invoke = cursor[client as usize] + rng.random_range(0..50);
        if rng.random_bool(workload.unknown) {
            // Timed out: the client moves on; the operation may land much later, or never.
            if rng.random_bool(0.5) {
                points.push((invoke + rng.random_range(0..3000), i));
            }
            cursor[client as usize] = invoke + 300;
            history.push(Operation::unknown(client, input, invoke));
        } else {
            let point = invoke + rng.random_range(0..100);
            let response = point + rng.random_range(0..100);
            points.push((point, i));
            cursor[client as usize] = response + rng.random_range(0..20);
            history.push(Operation::completed(client, input, invoke, response, KvOutput::Put));
        }
    }
    points.sort_unstable();
    let mut state = KvState::new();
    for (_, i) in points {
        let (next, output) = KvModel::apply(&state, &history[i].input);
        state = next;
        if let Some((_, seen)) = &mut history[i].response {
            *seen = output;
        }
    }
    history
}

#[test]
fn generated_histories_pass_and_mutated_reads_fail() {
    let (mut mutations, mut rejected_written, mut total_written) = (0, 0, 0);
    for seed in 0..300 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let workload = Workload {
            clients: rng.random_range(1..=6),
            keys: rng.random_range(1..=3),
            ops: rng.random_range(1..=80),
            unknown: [0.0, 0.05, 0.2][seed as usize % 3],
        };
        let mut history = generate(&mut rng, &workload);
        history.shuffle(&mut rng);
        let verdict = check_kv(&history);
        assert_eq!(verdict, Verdict::Linearizable, "seed {seed}");
        let plain = KvWithPartition(vec![(0..history.len()).collect()]);
        let small = history.len() <= 40;
        if small {
            assert_eq!(check(&plain, &history, SearchBudget::DEFAULT), Verdict::Linearizable, "seed {seed}: plain");
        }

        let reads: Vec<usize> = (0..history.len())
            .filter(|&i| matches!(history[i].input, KvInput::Get { .. }) && history[i].response.is_some())
            .collect();
        let Some(&read) = reads.choose(&mut rng) else { continue };
        let key = history[read].input.key();
        let original = history[read].response.expect("reads were chosen with a response");

        // A value never written to the key can never be read.
        history[read].response = Some((original.0, KvOutput::Get(Some(NEVER_WRITTEN + seed))));
        let verdict = check_kv(&history);
        let violation =
            verdict.violation().unwrap_or_else(|| panic!("seed {seed}: never-written value read: {verdict}"));
        assert!(violation.longest_prefix.iter().all(|op| op.index != read), "seed {seed}: {violation}");
        mutations += 1;

        // Another value that was written to the key: usually, not always, impossible.
        let candidates: Vec<u64> = history
            .iter()
            .filter_map(|op| match op.input {
                KvInput::Put { key: k, value } | KvInput::Cas { key: k, new: value, .. } if k == key => Some(value),
                _ => None,
            })
            .filter(|&value| KvOutput::Get(Some(value)) != original.1)
            .collect();
        if let Some(&value) = candidates.choose(&mut rng) {
            history[read].response = Some((original.0, KvOutput::Get(Some(value))));
            total_written += 1;
            let verdict = check_kv(&history);
            rejected_written += usize::from(!verdict.is_linearizable());
            if small {
                let plain = check(&plain, &history, SearchBudget::DEFAULT);
                assert_eq!(
                    plain.is_linearizable(),
                    verdict.is_linearizable(),
                    "seed {seed}: {verdict}\nplain: {plain}"
                );
            }
        }
    }
    println!(
        "{mutations} never-written mutations all rejected; {rejected_written} of {total_written} \
         written-value mutations rejected"
    );
    assert!(mutations > 200);
    assert!(rejected_written * 2 > total_written, "most reads of another written value are caught");
}

#[test]
fn checker_is_deterministic() {
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let mut history = generate(&mut rng, &Workload { clients: 5, keys: 4, ops: 400, unknown: 0.05 });
    let read = (0..history.len())
        .rev()
        .find(|&i| matches!(history[i].input, KvInput::Get { .. }) && history[i].response.is_some())
        .expect("a 400-op workload has a completed read");
    if let Some((_, output)) = &mut history[read].response {
        *output = KvOutput::Get(Some(NEVER_WRITTEN));
    }
    let first = check_with_stats(&KvModel, &history, SearchBudget::DEFAULT);
    let second = check_with_stats(&KvModel, &history, SearchBudget::DEFAULT);
    assert_eq!(first, second);
    assert_eq!(first.0.to_string(), second.0.to_string());
    assert!(first.0.violation().is_some());
    let json = serde_json::to_string(&first.0).expect("verdicts serialize");
    let back: Verdict = serde_json::from_str(&json).expect("verdicts deserialize");
    assert_eq!(back, first.0);
}

#[test]
fn scaling_5000_ops_20_keys_8_clients() {
    let mut rng = ChaCha8Rng::seed_from_u64(2024);
    let mut history = generate(&mut rng, &Workload { clients: 8, keys: 20, ops: 5000, unknown: 0.01 });
    let start = Instant::now();
    let (verdict, stats) = check_with_stats(&KvModel, &history, SearchBudget::DEFAULT);
    println!("5000 ops, 20 keys, 8 clients: {verdict} in {:?}, {stats:?}", start.elapsed());
    assert_eq!(verdict, Verdict::Linearizable);

    let read = (0..history.len())
        .find(|&i| matches!(history[i].input, KvInput::Get { .. }) && history[i].response.is_some())
        .expect("a 5000-op workload has a completed read");
    if let Some((_, output)) = &mut history[read].response {
        *output = KvOutput::Get(Some(NEVER_WRITTEN));
    }
    let start = Instant::now();
    let (verdict, stats) = check_with_stats(&KvModel, &history, SearchBudget::DEFAULT);
    println!("same with one bad read: rejected in {:?}, {stats:?}", start.elapsed());
    let violation = verdict.violation().expect("a read of a never-written value is caught");
    assert!(violation.longest_prefix.iter().all(|op| op.index != read), "{violation}");
    println!("{violation}");
}

/// Search cost under growing contention on one key; a profile, not a test. Run with
/// `cargo test -p meridian-check contention_profile -- --ignored --nocapture`.
#[test]
#[ignore = "profile: prints timings only"]
fn contention_profile() {
    let configs = [
        (8, 1, 2000, 0.0),
        (8, 1, 2000, 0.05),
        (8, 1, 2000, 0.2),
        (16, 1, 2000, 0.01),
        (32, 1, 2000, 0.0),
        (32, 4, 5000, 0.02),
    ];
    for (clients, keys, ops, unknown) in configs {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let history = generate(&mut rng, &Workload { clients, keys, ops, unknown });
        let start = Instant::now();
        let (verdict, stats) = check_with_stats(&KvModel, &history, SearchBudget::DEFAULT);
        println!(
            "{clients} clients, {keys} keys, {ops} ops, {unknown} unknown: {verdict} in {:?}, {stats:?}",
            start.elapsed()
        );
    }
}
