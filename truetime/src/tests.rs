use super::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cell::Cell;

const MS: u64 = 1_000_000;
/// A plausible "today" so saturation at zero never hides a bug.
const T0: Timestamp = Timestamp::from_nanos(1_764_000_000 * 1_000_000_000);

fn manual(eps: Epsilon) -> (ManualClock, SimTrueTime) {
    let clock = ManualClock::new(T0);
    let tt = SimTrueTime::new(Arc::new(clock.clone()), eps);
    (clock, tt)
}

/// Drives a commit-wait future whose sleeps only move a manual clock; no runtime needed.
fn run_manual_commit_wait(clock: &ManualClock, tt: &SimTrueTime, s: Timestamp) -> Duration {
    let slept = Cell::new(Duration::ZERO);
    let fut = commit_wait(tt, s, |d| {
        clock.advance(d);
        slept.set(slept.get() + d);
        std::future::ready(())
    });
    let waited = block_on_ready(fut);
    assert_eq!(waited, slept.get(), "commit_wait reports exactly what it slept");
    waited
}

/// Polls a future whose every await is immediately ready.
fn block_on_ready<F: Future>(fut: F) -> F::Output {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut fut = std::pin::pin!(fut);
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("future with only ready awaits returned Pending"),
    }
}

#[test]
fn now_contains_true_time_while_offset_within_epsilon() {
    for eps in [Epsilon::Fixed(EPSILON_DEFAULT), Epsilon::Fixed(Duration::ZERO), Epsilon::SPANNER_SAWTOOTH] {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (clock, tt) = manual(eps);
        let bound = eps.min().as_nanos() as i64;
        for _ in 0..20_000 {
            clock.advance(Duration::from_nanos(rng.random_range(0..50 * MS)));
            let offset = if bound == 0 { 0 } else { rng.random_range(-bound..=bound) };
            tt.set_offset_ns(offset);
            let truth = clock.now();
            let now = tt.now();
            assert!(now.contains(truth), "{eps:?} offset {offset}: {now:?} misses true time {truth:?}");
            assert!(now.width() <= 2 * eps.max(), "interval wider than 2ε_max: {now:?}");
        }
    }
}

#[test]
fn now_contains_true_time_at_the_exact_edges_of_epsilon() {
    let (clock, tt) = manual(Epsilon::Fixed(EPSILON_DEFAULT));
    let eps = EPSILON_DEFAULT.as_nanos() as i64;
    for offset in [eps, -eps] {
        tt.set_offset_ns(offset);
        assert!(tt.now().contains(clock.now()), "offset {offset} = ±ε must still contain truth");
    }
}

#[test]
fn offset_beyond_epsilon_is_visible_as_a_miss() {
    // The guarantee is tight: one nanosecond past ε and true time falls outside. The unsafe
    // chaos mode relies on this to break external consistency on purpose.
    let (clock, tt) = manual(Epsilon::Fixed(EPSILON_DEFAULT));
    let eps = EPSILON_DEFAULT.as_nanos() as i64;
    tt.set_offset_ns(eps + 1);
    assert!(!tt.now().contains(clock.now()));
    tt.set_offset_ns(-eps - 1);
    assert!(!tt.now().contains(clock.now()));
}

#[test]
fn after_and_before_never_lie_while_offset_within_epsilon() {
    for eps in [Epsilon::Fixed(EPSILON_DEFAULT), Epsilon::SPANNER_SAWTOOTH] {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let (clock, tt) = manual(eps);
        let bound = eps.min().as_nanos() as i64;
        let (mut afters, mut befores) = (0, 0);
        for _ in 0..50_000 {
            clock.advance(Duration::from_nanos(rng.random_range(0..10 * MS)));
            tt.set_offset_ns(rng.random_range(-bound..=bound));
            let truth = clock.now();
            let t = truth.saturating_offset(rng.random_range(-20 * MS as i64..=20 * MS as i64));
            if tt.after(t) {
                afters += 1;
                assert!(truth > t, "after({t:?}) held but true time is {truth:?}");
            }
            if tt.before(t) {
                befores += 1;
                assert!(truth < t, "before({t:?}) held but true time is {truth:?}");
            }
        }
        // Both answers must actually occur, or the test proves nothing.
        assert!(afters > 1_000 && befores > 1_000, "after {afters}, before {befores}");
    }
}

#[test]
fn sawtooth_runs_from_1_to_7_ms_over_30_s() {
    let eps = Epsilon::SPANNER_SAWTOOTH;
    let start = Timestamp::from_nanos(30_000 * MS * 1_000); // a multiple of the period
    assert_eq!(eps.at(start), Duration::from_millis(1));
    assert_eq!(eps.at(start.saturating_add(Duration::from_secs(15))), Duration::from_millis(4));
    let just_before = start.saturating_add(SAWTOOTH_PERIOD).prev();
    let e = eps.at(just_before);
    assert!(e < Duration::from_millis(7) && e > Duration::from_micros(6_999), "{e:?}");
    assert_eq!(eps.at(start.saturating_add(SAWTOOTH_PERIOD)), Duration::from_millis(1), "drops back after a poll");
    assert_eq!((eps.min(), eps.max()), (Duration::from_millis(1), Duration::from_millis(7)));
}

#[test]
fn commit_wait_lasts_2_epsilon_when_s_is_now_latest() {
    let (clock, tt) = manual(Epsilon::Fixed(EPSILON_DEFAULT));
    let start_truth = clock.now();
    let s = tt.now().latest;
    let waited = run_manual_commit_wait(&clock, &tt, s);
    assert!(tt.after(s));
    // At least the uncertainty: true time has moved past s, which was ε ahead of it.
    assert!(clock.now() > s && clock.now().duration_since(start_truth) > EPSILON_DEFAULT);
    // And no more than 2ε (plus the one nanosecond that makes `after` strict).
    assert_eq!(waited, 2 * EPSILON_DEFAULT + Duration::from_nanos(1));
}

#[test]
fn commit_wait_overlaps_work_done_since_s_was_picked() {
    let (clock, tt) = manual(Epsilon::Fixed(EPSILON_DEFAULT));
    for work_ms in [0u64, 1, 3, 7, 8, 20] {
        let s = tt.now().latest;
        clock.advance(Duration::from_millis(work_ms)); // e.g. the Paxos write
        let waited = run_manual_commit_wait(&clock, &tt, s);
        let expect = (2 * EPSILON_DEFAULT + Duration::from_nanos(1)).saturating_sub(Duration::from_millis(work_ms));
        assert_eq!(waited, expect, "work {work_ms} ms");
    }
}

#[test]
fn commit_wait_under_the_sawtooth_stays_between_the_uncertainty_and_2_epsilon_max() {
    let (clock, tt) = manual(Epsilon::SPANNER_SAWTOOTH);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for _ in 0..2_000 {
        clock.advance(Duration::from_nanos(rng.random_range(0..3_000 * MS)));
        let at_request = tt.now();
        let s = at_request.latest;
        let waited = run_manual_commit_wait(&clock, &tt, s);
        let eps_start = at_request.width() / 2;
        assert!(waited > eps_start, "waited {waited:?} < ε at the request {eps_start:?}");
        assert!(waited <= 2 * SAWTOOTH_EPSILON_MAX + Duration::from_nanos(1), "waited {waited:?}");
        assert!(tt.after(s));
    }
}

#[test]
fn commit_wait_with_no_wait_needed_returns_at_once() {
    let (clock, tt) = manual(Epsilon::Fixed(EPSILON_DEFAULT));
    let s = T0.saturating_sub(Duration::from_secs(1));
    assert_eq!(run_manual_commit_wait(&clock, &tt, s), Duration::ZERO);
}

#[tokio::test]
async fn commit_wait_on_the_real_clock_waits_at_least_2_epsilon() {
    // Only the lower bound is asserted: an upper bound on real time fails on a slow machine.
    let tt = SimTrueTime::system(EPSILON_DEFAULT);
    let start = std::time::Instant::now();
    let s = tt.now().latest;
    commit_wait(&tt, s, tokio::time::sleep).await;
    assert!(tt.after(s));
    assert!(start.elapsed() >= 2 * EPSILON_DEFAULT, "elapsed {:?}", start.elapsed());
}

#[test]
fn timestamp_display_and_parse_round_trip() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for _ in 0..10_000 {
        let t = Timestamp::from_nanos(rng.random());
        assert_eq!(Timestamp::parse(&t.to_string()), Ok(t));
        assert_eq!(Timestamp::parse(&t.nanos().to_string()), Ok(t));
    }
    assert_eq!(Timestamp::parse("12.5"), Ok(Timestamp::from_millis(12_500)));
    for bad in ["", "abc", "1.", ".5", "1.1234567890", "1.-5", "99999999999999999999"] {
        assert!(Timestamp::parse(bad).is_err(), "{bad:?} parsed");
    }
}

#[test]
fn timestamp_bytes_order_matches_timestamp_order() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for _ in 0..10_000 {
        let (a, b) = (Timestamp::from_nanos(rng.random()), Timestamp::from_nanos(rng.random()));
        assert_eq!(a.cmp(&b), a.to_be_bytes().cmp(&b.to_be_bytes()));
        assert_eq!(Timestamp::from_be_bytes(a.to_be_bytes()), a);
    }
}

#[test]
#[should_panic(expected = "TTInterval invariant")]
fn an_inverted_interval_is_a_bug() {
    TTInterval::new(Timestamp::from_nanos(2), Timestamp::from_nanos(1));
}

#[test]
fn after_and_before_at_the_interval_edges() {
    // The node's commit wait and lease hand-offs call TTInterval::after directly.
    let t = |n: u64| Timestamp::from_nanos(n);
    let now = TTInterval::new(t(100), t(108));
    assert!(!now.after(t(100)), "earliest == s: s might not have passed yet");
    assert!(now.after(t(99)));
    assert!(!now.after(t(104)), "s inside the interval");
    assert!(!now.before(t(108)), "latest == s: s might have arrived");
    assert!(now.before(t(109)));
}
