//! # TrueTime for Meridian
//!
//! Spanner orders transactions by timestamps taken from **TrueTime**, a clock API that returns
//! an interval instead of an instant (Spanner paper, OSDI 2012, §3):
//!
//! ```text
//!                 TT.now()
//!        earliest ◄──── 2ε ────► latest
//!   ─────────[═══════════●═══════════]──────────► true time
//!                  (true time is somewhere inside)
//! ```
//!
//! The one guarantee every protocol rule in Meridian leans on: **while a node's clock error stays
//! within ε, true time lies inside `TT.now()`**. From it follow `TT.after(t)` ("t has definitely
//! passed") and `TT.before(t)` ("t has definitely not arrived"), and from those commit wait
//! (§4.1.2): a leader that picks `s ≥ TT.now().latest` and waits until `TT.after(s)` before making
//! a commit visible guarantees that any transaction starting later gets a larger timestamp.
//!
//! What this crate provides:
//! - [`Timestamp`]: nanoseconds since the Unix epoch, the one time type of the system.
//! - [`TTInterval`] and the [`TrueTime`] trait (`now`, `after`, `before`).
//! - [`ClockSource`]: where "physical time" comes from: [`SystemClock`] in production, a
//!   [`ManualClock`] that a test or the deterministic simulator moves by hand.
//! - [`SimTrueTime`]: TrueTime built from a clock source, an uncertainty model ([`Epsilon`]:
//!   fixed, or the 1→7 ms sawtooth of §5.3) and an injectable offset from true time, so tests
//!   can skew a node's clock — within ε (safe) or beyond it (deliberately unsafe).
//! - [`commit_wait`]: waits, on any async runtime, until `TT.after(s)` and reports how long.
//!
//! Deliberately left out: a real GPS/atomic-clock time-master daemon (§5.3). Meridian nodes use
//! the host clock and trust an operator-configured ε. If the host clock is off by more than ε,
//! external consistency can break — exactly as in Spanner when a time master lies.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Default uncertainty bound ε: 4 ms, the mean ε Spanner reports (§5.3: "ε is typically a
/// sawtooth function of time, varying from about 1 to 7 ms over each poll interval").
pub const EPSILON_DEFAULT: Duration = Duration::from_millis(4);
/// Low end of the sawtooth (§5.3): 1 ms of communication delay to the time masters.
pub const SAWTOOTH_EPSILON_MIN: Duration = Duration::from_millis(1);
/// High end of the sawtooth (§5.3): 1 ms + 200 µs/s worst-case drift × 30 s poll interval.
pub const SAWTOOTH_EPSILON_MAX: Duration = Duration::from_millis(7);
/// Time-master poll interval of the sawtooth (§5.3: "the daemon's poll interval is currently 30
/// seconds").
pub const SAWTOOTH_PERIOD: Duration = Duration::from_secs(30);

/// A point in time: nanoseconds since the Unix epoch (1970-01-01T00:00:00Z).
///
/// Every commit, read and lease timestamp in Meridian is one of these. `u64` nanoseconds last
/// until the year 2554.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The smallest timestamp; reads at `ZERO` see nothing.
    pub const ZERO: Timestamp = Timestamp(0);
    /// The largest timestamp; a read at `MAX` sees the newest version of everything.
    pub const MAX: Timestamp = Timestamp(u64::MAX);

    /// A timestamp `nanos` nanoseconds after the Unix epoch.
    pub const fn from_nanos(nanos: u64) -> Self {
        Timestamp(nanos)
    }

    /// A timestamp `micros` microseconds after the Unix epoch (saturating).
    pub const fn from_micros(micros: u64) -> Self {
        Timestamp(micros.saturating_mul(1_000))
    }

    /// A timestamp `millis` milliseconds after the Unix epoch (saturating).
    pub const fn from_millis(millis: u64) -> Self {
        Timestamp(millis.saturating_mul(1_000_000))
    }

    /// Nanoseconds since the Unix epoch.
    pub const fn nanos(self) -> u64 {
        self.0
    }

    /// The timestamp `d` later, saturating at [`Timestamp::MAX`].
    pub fn saturating_add(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(duration_nanos(d)))
    }

    /// The timestamp `d` earlier, saturating at [`Timestamp::ZERO`].
    pub fn saturating_sub(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_sub(duration_nanos(d)))
    }

    /// The timestamp moved by a signed number of nanoseconds, saturating at both ends.
    pub fn saturating_offset(self, offset_ns: i64) -> Self {
        Timestamp(self.0.saturating_add_signed(offset_ns))
    }

    /// The next representable timestamp (one nanosecond later), saturating.
    pub fn next(self) -> Self {
        Timestamp(self.0.saturating_add(1))
    }

    /// The previous representable timestamp (one nanosecond earlier), saturating.
    pub fn prev(self) -> Self {
        Timestamp(self.0.saturating_sub(1))
    }

    /// Time from `earlier` to `self`, or zero if `earlier` is not earlier.
    pub fn duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// Big-endian bytes: byte order equals timestamp order.
    pub const fn to_be_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// Inverse of [`Timestamp::to_be_bytes`].
    pub const fn from_be_bytes(bytes: [u8; 8]) -> Self {
        Timestamp(u64::from_be_bytes(bytes))
    }

    /// Parses the forms [`Timestamp`]'s `Display` prints (`1732450000.123456789`, seconds with up
    /// to nine fractional digits) and plain integer nanoseconds (`1732450000123456789`).
    pub fn parse(text: &str) -> Result<Timestamp, ParseTimestampError> {
        let text = text.trim();
        let bad = || ParseTimestampError(text.to_string());
        match text.split_once('.') {
            None => text.parse::<u64>().map(Timestamp).map_err(|_| bad()),
            Some((secs, frac)) => {
                if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                let secs: u64 = secs.parse().map_err(|_| bad())?;
                let frac_ns: u64 = format!("{frac:0<9}").parse().map_err(|_| bad())?;
                secs.checked_mul(1_000_000_000).and_then(|ns| ns.checked_add(frac_ns)).map(Timestamp).ok_or_else(bad)
            }
        }
    }
}

/// Prints `seconds.nanoseconds` since the epoch, e.g. `1732450000.123456789`.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:09}", self.0 / 1_000_000_000, self.0 % 1_000_000_000)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ts({self})")
    }
}

/// A string that is not a timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a timestamp: {0:?}; write seconds since the Unix epoch with up to nine decimals \
     (1732450000.123456789) or integer nanoseconds"
)]
pub struct ParseTimestampError(String);

fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// An interval of time guaranteed (while the clock error is within ε) to contain true time.
///
/// Invariant: `earliest <= latest`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct TTInterval {
    /// No earlier than this has true time passed.
    pub earliest: Timestamp,
    /// True time has not yet reached beyond this.
    pub latest: Timestamp,
}

impl TTInterval {
    /// An interval from `earliest` to `latest`.
    ///
    /// # Panics
    /// If `earliest > latest` — an interval that is empty is a bug in the clock model.
    pub fn new(earliest: Timestamp, latest: Timestamp) -> Self {
        assert!(earliest <= latest, "TTInterval invariant: earliest {earliest:?} <= latest {latest:?}");
        TTInterval { earliest, latest }
    }

    /// Whether `t` lies inside the interval (both ends included).
    pub fn contains(&self, t: Timestamp) -> bool {
        self.earliest <= t && t <= self.latest
    }

    /// `latest - earliest`, i.e. 2ε.
    pub fn width(&self) -> Duration {
        self.latest.duration_since(self.earliest)
    }

    /// `TT.after(t)` as of this reading: `t` has definitely passed (`earliest > t`). Commit
    /// wait (Spanner §4.1.2) is over for a commit at `t` once this holds.
    pub fn after(&self, t: Timestamp) -> bool {
        self.earliest > t
    }

    /// `TT.before(t)` as of this reading: `t` has definitely not arrived (`latest < t`).
    pub fn before(&self, t: Timestamp) -> bool {
        self.latest < t
    }
}

impl fmt::Debug for TTInterval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {}]", self.earliest, self.latest)
    }
}

/// The TrueTime API of Spanner §3 (Table 1).
pub trait TrueTime: Send + Sync {
    /// `TT.now()`: an interval that contains the true time of the call.
    fn now(&self) -> TTInterval;

    /// `TT.after(t)`: true only if `t` has definitely passed.
    fn after(&self, t: Timestamp) -> bool {
        self.now().after(t)
    }

    /// `TT.before(t)`: true only if `t` has definitely not arrived.
    fn before(&self, t: Timestamp) -> bool {
        self.now().before(t)
    }
}

impl<T: TrueTime + ?Sized> TrueTime for Arc<T> {
    fn now(&self) -> TTInterval {
        (**self).now()
    }
}

impl<T: TrueTime + ?Sized> TrueTime for &T {
    fn now(&self) -> TTInterval {
        (**self).now()
    }
}

/// Where physical time comes from. In production the host clock; in tests and simulation a
/// clock that only moves when told to.
pub trait ClockSource: Send + Sync {
    /// The current physical time as this source sees it.
    fn now(&self) -> Timestamp;
}

/// The host's wall clock (`SystemTime::now`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl ClockSource for SystemClock {
    fn now(&self) -> Timestamp {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the host clock is set before 1970; Meridian needs a sane wall clock");
        Timestamp(duration_nanos(since_epoch))
    }
}

/// A clock that moves only when [`ManualClock::advance`] or [`ManualClock::set`] is called.
/// Cloning shares the same clock, so a simulator can hand it to many nodes and move them all.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A manual clock that reads `start`.
    pub fn new(start: Timestamp) -> Self {
        ManualClock(Arc::new(AtomicU64::new(start.0)))
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(duration_nanos(d), Ordering::SeqCst);
    }

    /// Sets the clock to `t`. Moving it backwards is allowed: tests of clock trouble need it.
    pub fn set(&self, t: Timestamp) {
        self.0.store(t.0, Ordering::SeqCst);
    }
}

impl ClockSource for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

/// How large the uncertainty ε is at a given local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Epsilon {
    /// The same ε at every instant.
    Fixed(Duration),
    /// Spanner's sawtooth (§5.3): ε grows linearly from `min` to `max` over each `period` (local
    /// drift accumulates between polls of the time masters), then drops back to `min`.
    Sawtooth {
        /// ε just after a poll.
        min: Duration,
        /// ε just before the next poll.
        max: Duration,
        /// Time between polls.
        period: Duration,
    },
}

impl Epsilon {
    /// The paper's sawtooth: 1 → 7 ms over a 30 s poll interval.
    pub const SPANNER_SAWTOOTH: Epsilon =
        Epsilon::Sawtooth { min: SAWTOOTH_EPSILON_MIN, max: SAWTOOTH_EPSILON_MAX, period: SAWTOOTH_PERIOD };

    /// ε at local time `local`.
    pub fn at(&self, local: Timestamp) -> Duration {
        match *self {
            Epsilon::Fixed(eps) => eps,
            Epsilon::Sawtooth { min, max, period } => {
                let period_ns = duration_nanos(period).max(1);
                let phase_ns = local.0 % period_ns;
                let span_ns = duration_nanos(max.saturating_sub(min));
                // phase/period of the way from min to max; u128 keeps the product exact.
                let grown = (u128::from(span_ns) * u128::from(phase_ns) / u128::from(period_ns)) as u64;
                min + Duration::from_nanos(grown)
            }
        }
    }

    /// The largest ε this model ever reports.
    pub fn max(&self) -> Duration {
        match *self {
            Epsilon::Fixed(eps) => eps,
            Epsilon::Sawtooth { max, .. } => max,
        }
    }

    /// The smallest ε this model ever reports.
    pub fn min(&self) -> Duration {
        match *self {
            Epsilon::Fixed(eps) => eps,
            Epsilon::Sawtooth { min, .. } => min,
        }
    }
}

/// TrueTime built from a [`ClockSource`] ("true time"), an [`Epsilon`] model and an injectable
/// offset of this node's clock from true time.
///
/// ```text
///   local = source.now() + offset          (what this node's clock reads)
///   now() = [local − ε(local), local + ε(local)]
/// ```
///
/// `now()` contains true time exactly when `|offset| ≤ ε(local)`. Tests keep the offset within
/// ε to model a healthy clock, or push it beyond to show that the checkers notice.
pub struct SimTrueTime {
    source: Arc<dyn ClockSource>,
    epsilon: Epsilon,
    offset_ns: AtomicI64,
}

impl SimTrueTime {
    /// TrueTime over `source` with uncertainty model `epsilon` and no offset.
    pub fn new(source: Arc<dyn ClockSource>, epsilon: Epsilon) -> Self {
        SimTrueTime { source, epsilon, offset_ns: AtomicI64::new(0) }
    }

    /// TrueTime over the host clock with a fixed ε: what a production node runs.
    pub fn system(epsilon: Duration) -> Self {
        SimTrueTime::new(Arc::new(SystemClock), Epsilon::Fixed(epsilon))
    }

    /// Sets how far this node's clock is from true time (positive: ahead).
    pub fn set_offset_ns(&self, offset_ns: i64) {
        self.offset_ns.store(offset_ns, Ordering::SeqCst);
    }

    /// How far this node's clock is from true time (positive: ahead).
    pub fn offset_ns(&self) -> i64 {
        self.offset_ns.load(Ordering::SeqCst)
    }

    /// The uncertainty model.
    pub fn epsilon(&self) -> Epsilon {
        self.epsilon
    }

    /// ε right now.
    pub fn epsilon_now(&self) -> Duration {
        self.epsilon.at(self.local_now())
    }

    /// What this node's clock reads: true time plus the offset.
    pub fn local_now(&self) -> Timestamp {
        self.source.now().saturating_offset(self.offset_ns())
    }
}

impl fmt::Debug for SimTrueTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimTrueTime").field("epsilon", &self.epsilon).field("offset_ns", &self.offset_ns()).finish()
    }
}

impl TrueTime for SimTrueTime {
    fn now(&self) -> TTInterval {
        let local = self.local_now();
        let eps = self.epsilon.at(local);
        TTInterval::new(local.saturating_sub(eps), local.saturating_add(eps))
    }
}

/// Bound on the sleeps of one [`commit_wait`]: ε can change while we wait (sawtooth, offset
/// changes), so the wait re-checks `TT.after(s)` after each sleep; a wait that needs more rounds
/// than this means the clock is not advancing and is a bug in the clock source.
pub const COMMIT_WAIT_ROUNDS_MAX: u32 = 10_000;

/// How long, by this node's clock, until `TT.after(s)` can hold; `None` when it already holds.
pub fn commit_wait_remaining<T: TrueTime + ?Sized>(tt: &T, s: Timestamp) -> Option<Duration> {
    let now = tt.now();
    if now.earliest > s {
        None
    } else {
        // earliest must pass s strictly: wait until earliest = s + 1ns.
        Some(s.next().duration_since(now.earliest).max(Duration::from_nanos(1)))
    }
}

/// Commit wait (Spanner §4.1.2): resolves once `TT.after(s)` holds, sleeping with the caller's
/// `sleep` so it runs on any runtime (tokio in the server, simulated time in tests). Returns how
/// long it slept in total.
///
/// With `s = TT.now().latest` taken at the commit request, the wait is about 2ε; work done in the
/// meantime (the Paxos write, §4.2.1) overlaps it and shortens what remains.
///
/// # Panics
/// If `TT.after(s)` still does not hold after [`COMMIT_WAIT_ROUNDS_MAX`] sleeps, i.e. the clock
/// source does not advance while `sleep` runs.
pub async fn commit_wait<T, S, F>(tt: &T, s: Timestamp, mut sleep: S) -> Duration
where
    T: TrueTime + ?Sized,
    S: FnMut(Duration) -> F,
    F: Future<Output = ()>,
{
    let mut slept = Duration::ZERO;
    for _ in 0..COMMIT_WAIT_ROUNDS_MAX {
        match commit_wait_remaining(tt, s) {
            None => return slept,
            Some(d) => {
                sleep(d).await;
                slept += d;
            }
        }
    }
    panic!(
        "commit wait for {s:?}: TT.after never held after {COMMIT_WAIT_ROUNDS_MAX} sleeps; the clock source is not advancing"
    );
}

#[cfg(test)]
mod tests;
