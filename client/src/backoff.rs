//! How the client waits between attempts: bounded exponential backoff with jitter.
//!
//! ```text
//!   attempt   1     2     3     4     5 …
//!   base     10ms  20ms  40ms  80ms … 500ms (BACKOFF_MAX), then 500ms for good
//!   sleep    uniform in [base/2, base]   ("equal jitter": never zero, never in lock-step)
//! ```
//!
//! Every retry loop of the client waits with one of these — the request loop, the routing
//! lookups at connect, a transaction's re-runs, a SQL statement's re-runs — so that no loop can
//! spin: even an attempt that could not be made (no route to the key, no address for its leader)
//! costs at least half a base interval, and a loop of `d` seconds makes at most about
//! `d / (BACKOFF_MAX / 2)` attempts once the base has grown. The jitter comes from the thread's
//! RNG: clients that failed together (a leader died under all of them) do not come back
//! together.

use std::time::Duration;

use rand::Rng as _;

/// First base interval.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(10);
/// Largest base interval.
pub const BACKOFF_MAX: Duration = Duration::from_millis(500);

const _: () = assert!(BACKOFF_FIRST.as_nanos() > 0 && BACKOFF_FIRST.as_nanos() <= BACKOFF_MAX.as_nanos());

/// The waits of one retry loop.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(BACKOFF_FIRST, BACKOFF_MAX)
    }
}

impl Backoff {
    /// Waits starting at `first`, doubling up to `max`.
    pub fn new(first: Duration, max: Duration) -> Backoff {
        assert!(!first.is_zero() && first <= max, "backoff: 0 < first ({first:?}) <= max ({max:?})");
        Backoff { base: first, max }
    }

    /// The next wait, in `[base/2, base]`, and the base doubled (up to the maximum).
    pub fn next_wait(&mut self) -> Duration {
        let base = self.base;
        self.base = (self.base * 2).min(self.max);
        let half = base / 2;
        let jitter_ns = rand::rng().random_range(0..=(base - half).as_nanos() as u64);
        half + Duration::from_nanos(jitter_ns)
    }

    /// Sleeps for the next wait, but never past `left` (the time to the caller's deadline).
    pub async fn wait(&mut self, left: Duration) {
        tokio::time::sleep(self.next_wait().min(left)).await;
    }

    /// The wait before retry number `retry` (1-based) of a loop that keeps only a count: what
    /// the `retry`-th [`Backoff::next_wait`] of a fresh `Backoff::new(first, max)` would be.
    pub fn nth(retry: u32, first: Duration, max: Duration) -> Duration {
        let mut b = Backoff::new(first, max);
        // Bounded: the base reaches `max` after at most 32 doublings (then it stays).
        for _ in 1..retry.min(32) {
            b.base = (b.base * 2).min(b.max);
        }
        b.next_wait()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_to_the_bound_and_are_jittered_within_it() {
        let mut b = Backoff::default();
        let mut base = BACKOFF_FIRST;
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..40 {
            let w = b.next_wait();
            assert!(w >= base / 2 && w <= base, "wait {w:?} outside [{:?}, {base:?}]", base / 2);
            seen.insert(w);
            base = (base * 2).min(BACKOFF_MAX);
        }
        assert!(seen.len() > 20, "jittered, not a fixed sequence: {seen:?}");
        // At the bound, a second's worth of retries is a handful, not thousands.
        let per_second = (0..100).map(|_| b.next_wait()).filter(|w| *w >= BACKOFF_MAX / 2).count();
        assert_eq!(per_second, 100, "once grown, every wait is at least half the bound");
        let ms = Duration::from_millis;
        for (retry, base) in [(1, ms(2)), (2, ms(4)), (8, ms(200)), (1_000, ms(200))] {
            let w = Backoff::nth(retry, ms(2), ms(200));
            assert!(w >= base / 2 && w <= base, "retry {retry}: {w:?} outside [{:?}, {base:?}]", base / 2);
        }
    }
}
