//! Hand-built histories: one per anomaly kind the checker must find, and valid ones it must pass.
//! Each anomalous history is the smallest that shows its kind, so the expected kind set is exact.
//! The [`catalog`] is shared with the adya cross-check.

use std::collections::BTreeSet;

use super::*;

pub(super) fn ap(key: u64, value: u64) -> MicroOp {
    MicroOp::Append { key, value }
}

pub(super) fn rd(key: u64, value: &[u64]) -> MicroOp {
    MicroOp::Read { key, value: Some(value.to_vec()) }
}

pub(super) fn rq(key: u64) -> MicroOp {
    MicroOp::Read { key, value: None }
}

pub(super) fn ok(process: u64, invoke_ns: u64, complete_ns: u64, ops: Vec<MicroOp>) -> Txn {
    Txn { process, invoke_ns, complete_ns: Some(complete_ns), outcome: Outcome::Ok, ops }
}

pub(super) fn fail(process: u64, invoke_ns: u64, complete_ns: u64, ops: Vec<MicroOp>) -> Txn {
    Txn { process, invoke_ns, complete_ns: Some(complete_ns), outcome: Outcome::Fail, ops }
}

pub(super) fn unknown(process: u64, invoke_ns: u64, ops: Vec<MicroOp>) -> Txn {
    Txn { process, invoke_ns, complete_ns: None, outcome: Outcome::Unknown, ops }
}

fn set(kinds: &[&str]) -> BTreeSet<String> {
    kinds.iter().map(|k| k.to_string()).collect()
}

fn strict(h: &[Txn]) -> Report {
    check(h, CheckOptions::strict_serializable())
}

fn serializable(h: &[Txn]) -> Report {
    check(h, CheckOptions::serializable())
}

#[track_caller]
fn assert_kinds(r: &Report, expected: &[&str]) {
    assert_eq!(r.kinds(), set(expected), "{r}");
}

/// A hand-built history and the exact kinds expected under both models.
pub(super) struct Case {
    /// Short name, for failure messages and lookups.
    pub name: &'static str,
    /// The history.
    pub history: Vec<Txn>,
    /// Kinds expected when checking strict serializability.
    pub strict: &'static [&'static str],
    /// Kinds expected when checking serializability alone.
    pub serializable: &'static [&'static str],
}

/// Every hand-built history, valid ones first.
pub(super) fn catalog() -> Vec<Case> {
    let case = |name, history, strict, serializable| Case { name, history, strict, serializable };
    const NONE: &[&str] = &[];
    vec![
        case(
            "serial",
            vec![
                ok(0, 0, 10, vec![ap(1, 1), rd(2, &[])]),
                ok(1, 20, 30, vec![rd(1, &[1]), ap(1, 2), ap(2, 1)]),
                ok(0, 40, 50, vec![rd(1, &[1, 2]), rd(2, &[1]), ap(2, 2)]),
                ok(1, 60, 70, vec![rd(2, &[1, 2]), rd(1, &[1, 2])]),
            ],
            NONE,
            NONE,
        ),
        // Serial order T1, T0, T2; all three overlap, so real time allows it.
        case(
            "concurrent",
            vec![
                ok(0, 0, 100, vec![ap(1, 1)]),
                ok(1, 10, 90, vec![rd(1, &[]), ap(2, 1)]),
                ok(2, 20, 80, vec![rd(2, &[1]), rd(1, &[1])]),
            ],
            NONE,
            NONE,
        ),
        case(
            "unknown-observed",
            vec![
                unknown(0, 0, vec![ap(1, 5), rq(2)]),
                ok(1, 10, 20, vec![rd(1, &[5]), ap(1, 6)]),
                ok(2, 30, 40, vec![rd(1, &[5, 6])]),
            ],
            NONE,
            NONE,
        ),
        case(
            "unknown-and-failed-unobserved",
            vec![
                unknown(0, 0, vec![ap(1, 5)]),
                fail(1, 0, 5, vec![ap(1, 7), rq(1)]),
                ok(2, 10, 20, vec![rd(1, &[])]),
                ok(2, 30, 40, vec![ap(1, 8)]),
                ok(3, 50, 60, vec![rd(1, &[8])]),
            ],
            NONE,
            NONE,
        ),
        case(
            "G0",
            vec![
                ok(0, 0, 100, vec![ap(1, 1), ap(2, 2)]),
                ok(1, 0, 100, vec![ap(1, 3), ap(2, 4)]),
                ok(2, 200, 300, vec![rd(1, &[1, 3]), rd(2, &[4, 2])]),
            ],
            &["G0"],
            &["G0"],
        ),
        case(
            "G1c",
            vec![ok(0, 0, 100, vec![ap(1, 1), rd(2, &[2])]), ok(1, 0, 100, vec![ap(2, 2), rd(1, &[1])])],
            &["G1c"],
            &["G1c"],
        ),
        // T1 saw T0's append to key 2 but not the one to key 1: read skew.
        case(
            "G-single",
            vec![
                ok(0, 0, 100, vec![ap(1, 1), ap(2, 1)]),
                ok(1, 0, 100, vec![rd(1, &[]), rd(2, &[1])]),
                ok(2, 200, 300, vec![rd(1, &[1]), rd(2, &[1])]),
            ],
            &["G-single"],
            &["G-single"],
        ),
        // T0 -ww(k=2)-> T1 also carries rw(k=1); with T1 -ww(k=3)-> T0 that is a write cycle,
        // and not also a G-single cycle through the same edge read as rw.
        case(
            "G0-over-a-ww-and-rw-edge",
            vec![
                ok(0, 0, 100, vec![rd(1, &[]), ap(2, 3), ap(3, 6)]),
                ok(1, 0, 100, vec![ap(1, 1), ap(2, 4), ap(3, 5)]),
                ok(2, 200, 300, vec![rd(1, &[1]), rd(2, &[3, 4]), rd(3, &[5, 6])]),
            ],
            &["G0"],
            &["G0"],
        ),
        // Write skew.
        case(
            "G2",
            vec![
                ok(0, 0, 100, vec![rd(1, &[]), rd(2, &[]), ap(1, 1)]),
                ok(1, 0, 100, vec![rd(1, &[]), rd(2, &[]), ap(2, 1)]),
                ok(2, 200, 300, vec![rd(1, &[1]), rd(2, &[1])]),
            ],
            &["G2"],
            &["G2"],
        ),
        // T1 began after T0 finished, yet its append precedes T0's.
        case(
            "G0-realtime",
            vec![ok(0, 0, 10, vec![ap(1, 1)]), ok(1, 20, 30, vec![ap(1, 2)]), ok(2, 40, 50, vec![rd(1, &[2, 1])])],
            &["G0-realtime"],
            NONE,
        ),
        // T0 read an append that was only invoked after T0 completed.
        case(
            "G1c-realtime",
            vec![ok(0, 0, 10, vec![rd(1, &[2])]), ok(1, 20, 30, vec![ap(1, 2)])],
            &["G1c-realtime"],
            NONE,
        ),
        // An Unknown writer is a real-time target: T0 finished before T1 began, yet read T1's
        // append (so T1 committed, and after T0).
        case(
            "G1c-realtime-unknown-writer",
            vec![ok(0, 0, 10, vec![rd(1, &[5])]), unknown(1, 20, vec![ap(1, 5)])],
            &["G1c-realtime"],
            NONE,
        ),
        // ...but never a real-time source: T0's client gave up at 10, yet T0 may have committed
        // after T1 read the empty list.
        case(
            "unknown-completion-bounds-nothing",
            vec![
                Txn { complete_ns: Some(10), ..unknown(0, 0, vec![ap(1, 1)]) },
                ok(1, 20, 30, vec![rd(1, &[])]),
                ok(2, 40, 50, vec![rd(1, &[1])]),
            ],
            NONE,
            NONE,
        ),
        // Completing at the instant another is invoked is not "before" it: they may overlap.
        case(
            "same-instant-is-concurrent",
            vec![ok(0, 0, 10, vec![ap(1, 1)]), ok(1, 10, 20, vec![rd(1, &[])]), ok(2, 30, 40, vec![rd(1, &[1])])],
            NONE,
            NONE,
        ),
        // A stale read: T1 began after T0's append completed, and missed it.
        case(
            "G-single-realtime",
            vec![ok(0, 0, 10, vec![ap(1, 1)]), ok(1, 20, 30, vec![rd(1, &[])]), ok(2, 40, 50, vec![rd(1, &[1])])],
            &["G-single-realtime"],
            NONE,
        ),
        // T1 -rw-> T2 -rw-> T0 -rt-> T1; T2 overlaps both.
        case(
            "G2-realtime",
            vec![
                ok(0, 0, 10, vec![ap(2, 1)]),
                ok(1, 20, 30, vec![rd(1, &[])]),
                ok(2, 0, 30, vec![rd(2, &[]), ap(1, 1)]),
            ],
            &["G2-realtime"],
            NONE,
        ),
        // T0's append of 1 was lost: no read shows it, so it is placed after 2.
        case(
            "lost-update",
            vec![
                ok(0, 0, 100, vec![rd(1, &[]), ap(1, 1)]),
                ok(1, 0, 100, vec![rd(1, &[]), ap(1, 2)]),
                ok(2, 200, 300, vec![rd(1, &[2])]),
            ],
            &["G-single", "lost-update"],
            &["G-single", "lost-update"],
        ),
        case("G1a", vec![fail(0, 0, 10, vec![ap(1, 1)]), ok(1, 20, 30, vec![rd(1, &[1])])], &["G1a"], &["G1a"]),
        // Reading T0's first append but not its second is also a cycle: T1 -rw-> T0 -wr-> T1.
        case(
            "G1b",
            vec![
                ok(0, 0, 100, vec![ap(1, 1), ap(1, 2)]),
                ok(1, 0, 100, vec![rd(1, &[1])]),
                ok(2, 200, 300, vec![rd(1, &[1, 2])]),
            ],
            &["G-single", "G1b"],
            &["G-single", "G1b"],
        ),
        case(
            "incompatible-order",
            vec![
                ok(0, 0, 100, vec![ap(1, 1)]),
                ok(1, 0, 100, vec![ap(1, 2)]),
                ok(2, 0, 100, vec![rd(1, &[1, 2])]),
                ok(3, 0, 100, vec![rd(1, &[2, 1])]),
            ],
            &["incompatible-order"],
            &["incompatible-order"],
        ),
        case("internal", vec![ok(0, 0, 10, vec![ap(1, 1), rd(1, &[])])], &["internal"], &["internal"]),
        // An unknown prefix before the transaction's own append is fine.
        case(
            "internal-unknown-prefix",
            vec![ok(0, 0, 10, vec![ap(1, 1), rd(1, &[7, 1])]), ok(1, 0, 10, vec![ap(1, 7)])],
            NONE,
            NONE,
        ),
        case("future-read", vec![ok(0, 0, 10, vec![rd(1, &[1]), ap(1, 1)])], &["future-read"], &["future-read"]),
        case(
            "duplicate-elements",
            vec![ok(0, 0, 10, vec![ap(1, 1)]), ok(1, 20, 30, vec![rd(1, &[1, 1])])],
            &["duplicate-elements"],
            &["duplicate-elements"],
        ),
        case("garbage-read", vec![ok(0, 0, 10, vec![rd(1, &[9])])], &["garbage-read"], &["garbage-read"]),
        case(
            "dirty-update",
            vec![
                fail(0, 0, 10, vec![ap(1, 1)]),
                ok(1, 20, 30, vec![rd(1, &[1]), ap(1, 2)]),
                ok(2, 40, 50, vec![rd(1, &[1, 2])]),
            ],
            &["G1a", "dirty-update"],
            &["G1a", "dirty-update"],
        ),
        case(
            "duplicate-appends",
            vec![ok(0, 0, 10, vec![ap(1, 1)]), ok(1, 0, 10, vec![ap(1, 1)])],
            &["duplicate-appends"],
            &["duplicate-appends"],
        ),
    ]
}

/// The catalog history named `name`.
fn history(name: &str) -> Vec<Txn> {
    catalog().into_iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no case {name}")).history
}

#[test]
fn catalog_histories_show_exactly_their_kinds() {
    for c in catalog() {
        let r = strict(&c.history);
        assert_eq!(r.kinds(), set(c.strict), "{} (strict): {r}", c.name);
        let r = serializable(&c.history);
        assert_eq!(r.kinds(), set(c.serializable), "{} (serializable): {r}", c.name);
    }
}

#[test]
fn serial_history_exercises_every_edge_type() {
    let r = strict(&history("serial"));
    assert_eq!(r.graph_txns, 4);
    let e = r.edges;
    assert!(e.ww > 0 && e.wr > 0 && e.rw > 0 && e.realtime > 0, "a serial history exercises every edge: {e:?}");
    let r = strict(&history("concurrent"));
    assert_eq!(r.edges.realtime, 0);
    assert!(r.edges.rw > 0 && r.edges.wr > 0);
}

#[test]
fn only_observed_unknown_txns_join_the_graph() {
    assert_eq!(strict(&history("unknown-observed")).graph_txns, 3, "the unknown txn committed: its append was read");
    assert_eq!(strict(&history("unknown-and-failed-unobserved")).graph_txns, 3);
}

#[test]
fn empty_and_read_only_histories_are_valid() {
    assert!(strict(&[]).is_valid());
    let h = vec![ok(0, 0, 10, vec![rd(1, &[])]), ok(1, 5, 15, vec![rd(1, &[])])];
    assert!(strict(&h).is_valid());
}

#[test]
fn cycles_are_drawn_with_keys_and_relations() {
    let drawn = [
        ("G0", "G0", "T0 -ww(k=1)-> T1 -ww(k=2)-> T0"),
        ("G1c", "G1c", "T0 -wr(k=1)-> T1 -wr(k=2)-> T0"),
        ("G-single", "G-single", "T1 -rw(k=1)-> T0 -wr(k=2)-> T1"),
        ("G2", "G2", "T0 -rw(k=2)-> T1 -rw(k=1)-> T0"),
        ("G0-realtime", "G0-realtime", "T0 -rt-> T1 -ww(k=1)-> T0"),
        ("G1c-realtime", "G1c-realtime", "T1 -wr(k=1)-> T0 -rt-> T1"),
        ("G-single-realtime", "G-single-realtime", "T1 -rw(k=1)-> T0 -rt-> T1"),
        ("G2-realtime", "G2-realtime", "T0 -rt-> T1 -rw(k=1)-> T2 -rw(k=2)-> T0"),
        ("lost-update", "G-single", "T0 -rw(k=1)-> T1 -ww(k=1)-> T0"),
    ];
    for (case, kind, cycle) in drawn {
        let r = strict(&history(case));
        let a = r.anomalies.iter().find(|a| a.kind == kind).unwrap_or_else(|| panic!("no {kind}: {r}"));
        assert!(a.explanation.contains(cycle), "{case}: expected {cycle:?} in:\n{}", a.explanation);
    }
}

#[test]
fn unread_appends_are_explained_as_placed_after_the_last_observed_element() {
    let r = strict(&history("lost-update"));
    let cycle = r.anomalies.iter().find(|a| a.kind == kind::G_SINGLE).expect("catalog says G-single");
    assert!(cycle.explanation.contains("no read shows 1, so it follows 2"), "{}", cycle.explanation);
}

#[test]
fn incompatible_order_names_the_first_difference() {
    let r = strict(&history("incompatible-order"));
    assert!(r.anomalies[0].explanation.contains("T2 read [1, 2]: at position 0 it has 1"), "{r}");
}

#[test]
fn dirty_update_counts_every_aborted_read() {
    assert_eq!(strict(&history("dirty-update")).counts[kind::G1A], 2, "both readers of the aborted element");
}

#[test]
fn malformed_histories_stop_the_analysis() {
    assert_eq!(strict(&history("duplicate-appends")).graph_txns, 0);
    let h = vec![Txn { complete_ns: None, ..ok(0, 0, 10, vec![ap(1, 1)]) }];
    assert_kinds(&strict(&h), &[kind::MALFORMED]);
    let h = vec![ok(0, 0, 10, vec![rq(1)])];
    assert_kinds(&strict(&h), &[kind::MALFORMED]);
    let h = vec![ok(0, 10, 5, vec![])];
    assert_kinds(&strict(&h), &[kind::MALFORMED]);
}

// ---- reporting ----

#[test]
fn listed_anomalies_are_bounded_but_all_counted() {
    let mut h = vec![fail(0, 0, 10, vec![ap(1, 1)])];
    h.extend((1..=30).map(|p| ok(p, 20, 30, vec![rd(1, &[1])])));
    let r = strict(&h);
    assert_eq!(r.counts[kind::G1A], 30);
    assert_eq!(r.anomalies.len(), ANOMALIES_LISTED_PER_KIND_MAX);
}

#[test]
fn report_prints_verdict_cycle_and_transactions() {
    let h = history("G-single-realtime");
    let text = strict(&h).to_string();
    assert!(text.starts_with("INVALID: G-single-realtime ×1"), "{text}");
    assert!(text.contains("T0 (process 0, ok, 0..10 ns): [append(1, 1)]"), "{text}");
    assert!(text.contains("T0 completed at 10 ns, before T1 was invoked at 20 ns"), "{text}");
    assert!(strict(&h[..1]).to_string().starts_with("valid: 1 txns"));
}

#[test]
fn elle_json_export_pairs_ops_per_process_in_time_order() {
    // T0's outcome is unknown, so its process is still open when T1 starts: T1 gets process 1.
    let h =
        vec![unknown(0, 0, vec![ap(1, 1), rq(2)]), ok(0, 10, 20, vec![rd(1, &[1])]), fail(3, 12, 15, vec![ap(2, 5)])];
    let json = to_elle_json(&h);
    let ops = json.as_array().expect("an array of ops");
    let summary: Vec<(String, u64, u64)> = ops
        .iter()
        .map(|op| {
            let s = |f: &str| op[f].as_str().expect("string field").to_string();
            assert_eq!(s("f"), "txn");
            (s("type"), op["process"].as_u64().expect("process"), op["time"].as_u64().expect("time"))
        })
        .collect();
    let expected =
        [("invoke", 0, 0), ("invoke", 4, 10), ("invoke", 3, 12), ("fail", 3, 15), ("ok", 4, 20), ("info", 0, 20)];
    let expected: Vec<(String, u64, u64)> = expected.iter().map(|(t, p, n)| (t.to_string(), *p, *n)).collect();
    assert_eq!(summary, expected);
    assert_eq!(ops[0]["value"], serde_json::json!([["append", 1, 1], ["r", 2, null]]));
    assert_eq!(ops[1]["value"], serde_json::json!([["r", 1, null]]));
    assert_eq!(ops[4]["value"], serde_json::json!([["r", 1, [1]]]));
    for (i, op) in ops.iter().enumerate() {
        assert_eq!(op["index"].as_u64(), Some(i as u64));
    }
}

#[test]
fn history_types_round_trip_through_serde() {
    let h = vec![unknown(0, 0, vec![ap(1, 1), rq(2)]), ok(0, 10, 20, vec![rd(1, &[1])])];
    let text = serde_json::to_string(&h).expect("serializable");
    let back: Vec<Txn> = serde_json::from_str(&text).expect("deserializable");
    assert_eq!(back, h);
}

#[test]
fn checking_is_deterministic() {
    let h = vec![
        ok(0, 0, 100, vec![ap(1, 1), ap(2, 2), rd(3, &[])]),
        ok(1, 0, 100, vec![ap(1, 3), ap(2, 4), rd(3, &[])]),
        ok(2, 150, 160, vec![ap(3, 1)]),
        ok(3, 200, 300, vec![rd(1, &[1, 3]), rd(2, &[4, 2]), rd(3, &[])]),
    ];
    let first = strict(&h);
    assert!(!first.is_valid());
    for _ in 0..5 {
        assert_eq!(strict(&h), first);
    }
}
