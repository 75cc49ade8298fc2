//! Table tests of two-phase commit's participant state machine and in-doubt inquiries.

use super::*;

fn t(n: u64) -> Timestamp {
    Timestamp::from_nanos(n)
}
const G1: GroupId = GroupId(1);
const G2: GroupId = GroupId(2);
const G3: GroupId = GroupId(3);
const TXN: TxnId = TxnId(7);

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
