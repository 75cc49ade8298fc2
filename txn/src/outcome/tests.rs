//! Table tests of the two-phase-commit state machines and records.

use super::*;

fn t(n: u64) -> Timestamp {
    Timestamp::from_nanos(n)
}
fn tt(earliest: u64, latest: u64) -> TTInterval {
    TTInterval::new(t(earliest), t(latest))
}
const G1: GroupId = GroupId(1);
const G2: GroupId = GroupId(2);
const G3: GroupId = GroupId(3);
const TXN: TxnId = TxnId(7);
const LEASE_END: Timestamp = Timestamp::from_nanos(1_000_000);

fn coord() -> Coordinator {
    Coordinator::new(TXN, [G2, G1], tt(90, 100), Duration::from_nanos(500))
}

#[test]
fn commits_once_every_participant_prepared() {
    let mut c = coord();
    let mut clock = LeaderClock::default();
    assert_eq!(c.participants(), vec![G1, G2], "participants in id order");
    assert_eq!(c.on_prepared(G1, t(300), &mut clock, LEASE_END), None, "one vote missing");
    assert_eq!(c.missing_votes(), vec![G2]);
    assert_eq!(c.on_prepared(G3, t(999), &mut clock, LEASE_END), None, "not a participant: ignored");
    assert_eq!(c.on_prepared(G1, t(300), &mut clock, LEASE_END), None, "duplicate vote: ignored");
    // §4.2.1: s ≥ every prepare (300, 250), > now.latest at the commit request (100),
    // > anything assigned: 300.
    assert_eq!(c.on_prepared(G2, t(250), &mut clock, LEASE_END), Some(Decision::Commit(t(300))));
    assert_eq!(c.decision(), Some(Decision::Commit(t(300))));
    assert_eq!(clock.last_assigned, t(300), "the coordinator leader's clock moved");
    assert_eq!(c.abort(), Decision::Commit(t(300)), "a commit stands: abort returns it");
    assert_eq!(c.on_tick(t(10_000)), None, "the timeout no longer matters");
    assert_eq!(
        c.record(vec![(b"k".to_vec(), Some(b"v".to_vec()))]),
        Some(TxnRecord::Committed {
            txn: TXN,
            commit_ts: t(300),
            participants: vec![G1, G2],
            writes: vec![(b"k".to_vec(), Some(b"v".to_vec()))]
        })
    );
}

/// Each commit-timestamp rule with a case where breaking it would change the answer.
#[test]
fn commit_timestamp_rules() {
    // (last assigned by the coordinator leader, now at commit request, prepares, expected s)
    let cases: [(u64, TTInterval, [u64; 2], u64, &str); 3] = [
        (0, tt(90, 100), [20, 30], 101, "s > now.latest at the commit request"),
        (0, tt(90, 100), [20, 400], 400, "s ≥ the largest prepare timestamp"),
        (700, tt(90, 100), [20, 400], 701, "s > every timestamp the coordinator assigned"),
    ];
    for (last, now, [p1, p2], want, rule) in cases {
        let mut c = Coordinator::new(TXN, [G1, G2], now, Duration::from_secs(1));
        let mut clock = LeaderClock::new(t(last));
        c.on_prepared(G1, t(p1), &mut clock, LEASE_END);
        assert_eq!(c.on_prepared(G2, t(p2), &mut clock, LEASE_END), Some(Decision::Commit(t(want))), "{rule}");
    }
}

#[test]
fn aborts_when_the_commit_timestamp_is_outside_the_lease() {
    let mut c = coord();
    let mut clock = LeaderClock::default();
    c.on_prepared(G1, t(300), &mut clock, t(301));
    assert_eq!(c.on_prepared(G2, t(301), &mut clock, t(301)), Some(Decision::Abort), "§4.1.2 s must be < lease end");
}

#[test]
fn aborts_on_refusal_and_never_flips() {
    let mut c = coord();
    let mut clock = LeaderClock::default();
    c.on_prepared(G1, t(300), &mut clock, LEASE_END);
    assert_eq!(c.on_refused(G2), Some(Decision::Abort));
    assert_eq!(c.on_refused(G2), None, "already aborted");
    assert_eq!(c.on_prepared(G2, t(310), &mut clock, LEASE_END), None, "a late vote changes nothing");
    assert_eq!(c.decision(), Some(Decision::Abort));
    assert_eq!(c.record(vec![]), Some(TxnRecord::Aborted { txn: TXN }));
    assert_eq!(clock.last_assigned, Timestamp::ZERO, "no commit timestamp was assigned");
}

#[test]
fn aborts_at_the_prepare_timeout() {
    let mut c = coord(); // deadline = 100 + 500
    let mut clock = LeaderClock::default();
    assert_eq!(c.record(vec![]), None, "undecided: nothing to log");
    c.on_prepared(G1, t(300), &mut clock, LEASE_END);
    assert_eq!(c.on_tick(t(599)), None);
    assert_eq!(c.on_tick(t(600)), Some(Decision::Abort));
    assert_eq!(c.on_tick(t(700)), None, "reported once");
}

#[test]
fn client_abort_before_votes() {
    let mut c = coord();
    assert_eq!(c.abort(), Decision::Abort);
    assert_eq!(c.decision(), Some(Decision::Abort));
}

#[test]
#[should_panic(expected = "a prepared participant cannot refuse")]
fn refusal_after_a_prepared_vote_is_a_bug() {
    let mut c = coord();
    c.on_prepared(G1, t(300), &mut LeaderClock::default(), LEASE_END);
    c.on_refused(G1);
}

#[test]
#[should_panic(expected = "different prepare timestamps")]
fn two_prepare_timestamps_from_one_group_is_a_bug() {
    let mut c = coord();
    c.on_prepared(G1, t(300), &mut LeaderClock::default(), LEASE_END);
    c.on_prepared(G1, t(301), &mut LeaderClock::default(), LEASE_END);
}

#[test]
#[should_panic(expected = "needs at least one participant")]
fn coordinator_without_participants_is_a_bug() {
    Coordinator::new(TXN, [], tt(1, 2), PREPARE_TIMEOUT);
}

#[test]
fn participant_transitions() {
    use ParticipantState::*;
    // (steps, final state); steps: 'p' prepare at 50, 'c' commit at 60, 'a' abort.
    let ok: [(&str, ParticipantState); 6] = [
        ("", Active),
        ("p", Prepared(t(50))),
        ("pp", Prepared(t(50))),
        ("pc", Committed(t(60))),
        ("pcc", Committed(t(60))),
        ("pa", Aborted),
    ];
    let ok2: [(&str, ParticipantState); 2] = [("a", Aborted), ("paa", Aborted)];
    for (steps, want) in ok.into_iter().chain(ok2) {
        let mut p = Participant::new(TXN, G1, t(0));
        for s in steps.chars() {
            match s {
                'p' => p.prepare(t(50), t(1)),
                'c' => p.commit(t(60)),
                'a' => p.abort(),
                _ => unreachable!(),
            }
        }
        assert_eq!(p.state(), want, "steps {steps:?}");
    }
    // Forbidden transitions panic.
    let bad: [(&str, &str); 6] = [
        ("c", "commit without prepare"),
        ("pac", "commit after abort"),
        ("pca", "abort after commit: never flips"),
        ("ap", "prepare after abort"),
        ("pcp", "prepare after commit"),
        ("pC", "commit below the prepare timestamp (§4.2.1 s ≥ p)"),
    ];
    for (steps, why) in bad {
        let r = std::panic::catch_unwind(|| {
            let mut p = Participant::new(TXN, G1, t(0));
            for s in steps.chars() {
                match s {
                    'p' => p.prepare(t(50), t(1)),
                    'c' => p.commit(t(60)),
                    'C' => p.commit(t(49)),
                    'a' => p.abort(),
                    _ => unreachable!(),
                }
            }
        });
        assert!(r.is_err(), "{why}: {steps:?} must panic");
    }
}

#[test]
fn in_doubt_participants_ask_their_coordinator() {
    let mut ps = Participants::new(Duration::from_nanos(100));
    ps.on_prepared(TxnId(1), G1, t(50), t(1000));
    ps.on_prepared(TxnId(2), G2, t(60), t(1010));
    ps.on_prepared(TxnId(3), G3, t(70), t(1020));
    ps.on_prepared(TxnId(3), G3, t(70), t(1020)); // replayed record
    assert_eq!(ps.due_inquiries(t(1099)), vec![], "nobody silent for 100 yet");
    assert_eq!(ps.due_inquiries(t(1100)), vec![(TxnId(1), G1)]);
    assert_eq!(ps.due_inquiries(t(1105)), vec![], "asked at 1100: next after another period");
    ps.heard(TxnId(2), t(1105)); // the coordinator answered "undecided"
    assert_eq!(ps.due_inquiries(t(1120)), vec![(TxnId(3), G3)]);
    assert_eq!(
        ps.due_inquiries(t(1300)),
        vec![(TxnId(1), G1), (TxnId(2), G2), (TxnId(3), G3)],
        "longest silent first: 1 (last heard 1100), 2 (1105), 3 (1120)"
    );
    assert!(ps.on_committed(TxnId(1), t(80)).is_some());
    assert!(ps.on_committed(TxnId(1), t(80)).is_none(), "replayed outcome: nothing to do");
    assert_eq!(ps.on_aborted(TxnId(2)).map(|p| p.state()), Some(ParticipantState::Aborted));
    assert_eq!(ps.iter().map(Participant::txn).collect::<Vec<_>>(), vec![TxnId(3)]);
    assert_eq!(ps.due_inquiries(t(2000)), vec![(TxnId(3), G3)]);
}

#[test]
fn inquiries_are_bounded() {
    let mut ps = Participants::new(Duration::from_nanos(1));
    for i in 0..(INQUIRIES_MAX as u128 + 10) {
        ps.on_prepared(TxnId(i), G1, t(5), t(0));
    }
    assert_eq!(ps.due_inquiries(t(10)).len(), INQUIRIES_MAX);
    assert_eq!(ps.due_inquiries(t(10)).len(), 10, "the rest come next time");
}

#[test]
fn records_roundtrip_and_name_their_spans() {
    let prepared = TxnRecord::Prepared {
        txn: TxnMeta::new(TXN, t(5)),
        coordinator: G3,
        prepare_ts: t(50),
        writes: vec![(b"a".to_vec(), Some(b"1".to_vec())), (b"b".to_vec(), None)],
        lock_spans: vec![(Span::key("a"), Mode::Exclusive), (Span::range("c", "").expect("valid"), Mode::Shared)],
    };
    assert_eq!(prepared.write_spans(), vec![Span::key("a"), Span::key("b")]);
    assert_eq!(prepared.txn(), TXN);
    let committed = TxnRecord::Committed { txn: TXN, commit_ts: t(60), participants: vec![G1], writes: vec![] };
    for r in [prepared, committed, TxnRecord::Aborted { txn: TXN }] {
        assert_eq!(crate::test_codec::roundtrip(&r), r);
    }
}
