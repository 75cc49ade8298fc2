//! # Timestamp rules
//!
//! The rules that make Spanner's timestamps externally consistent, as small pure functions.
//! None reads a clock: the caller passes `TT.now()` taken at the moment the rule names.
//!
//! ```text
//!   single group          s > last_assigned, s > TT.now().latest, s ≥ floor      §4.1.2
//!   prepare (participant) p > last_assigned, p > TT.now().latest, p ≥ floor      §4.2.1
//!   commit (coordinator)  s ≥ every p, s > TT.now().latest at the commit request,
//!                         s > last_assigned                                       §4.2.1
//!   every assigned ts     s < lease_end of the assigning leader (Replica::can_assign)  §4.1.2
//!   reply / unlock        only once TT.after(s) (TTInterval::after)                   §4.1.2
//! ```
//!
//! Why each matters:
//! - **Monotonicity** (`> last_assigned`, §4.1.2): "Spanner assigns timestamps to Paxos writes in
//!   monotonically increasing order, even across leaders"; within one leader [`LeaderClock`]
//!   keeps it, across leaders the disjoint leases do (below).
//! - **Start** (`> TT.now().latest`, §4.1.2): the commit timestamp is no less than true time when
//!   the commit request arrived, so a transaction that starts after this one commits gets a
//!   larger timestamp. Spanner's start rule says `≥` (its coordinator rule `>`); we use `>`
//!   everywhere (one nanosecond of extra wait).
//! - **Commit wait** (§4.1.2, `TTInterval::after`): no client sees the data before `TT.after(s)`,
//!   so `s` is in the past for everyone who observes the commit.
//! - **Leases** (§4.1.1, `meridian_shard`'s `Replica::can_assign`): a leader assigns timestamps only inside its lease, and
//!   leases of successive leaders are disjoint, so timestamps of different leaders of one group
//!   never interleave. `s > TT.now().latest` already puts `s` after the lease start; only the end
//!   needs a check.
//! - **Prepare above now** is our addition: Spanner requires only monotonicity of the prepare
//!   timestamp; keeping it above `TT.now().latest` too places it inside the lease without a
//!   separate check of the lease start, and costs little, since the coordinator's `s` is above
//!   its own `TT.now().latest` at the commit request anyway.
//! - **Floor**: the smallest timestamp the leader may still use for this write, e.g. one above a
//!   `MinNextTS` promise or the highest read it served (§4.1.3); [`LeaderClock::observe`] raises it
//!   for good.

use meridian_truetime::{TTInterval, Timestamp};

/// The timestamps one group leader has handed out: `last_assigned` only grows.
///
/// A new leader may start from `Timestamp::ZERO`: its lease begins after the previous leader's
/// ended (§4.1.1), and every rule here keeps `s > TT.now().latest`, which is past that lease.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaderClock {
    /// The largest timestamp this leader assigned or promised not to go below (`s_max` of
    /// §4.1.1 for abdication).
    pub last_assigned: Timestamp,
}

impl LeaderClock {
    /// A clock that will assign only above `last_assigned`.
    pub const fn new(last_assigned: Timestamp) -> Self {
        LeaderClock { last_assigned }
    }

    /// Timestamp of a single-group read-write transaction (one Paxos write; §4.1.2):
    /// `s > last_assigned`, `s > now.latest`, `s ≥ floor`. `now` is `TT.now()` taken after the
    /// commit request arrived and the write locks were taken.
    pub fn assign_write(&mut self, now: TTInterval, floor: Timestamp) -> Timestamp {
        self.assign(self.last_assigned.next().max(now.latest.next()).max(floor))
    }

    /// Prepare timestamp of a participant leader (§4.2.1: "larger than any timestamps it has
    /// assigned to previous transactions"): `p > last_assigned`, `p > now.latest`, `p ≥ floor`.
    pub fn assign_prepare(&mut self, now: TTInterval, floor: Timestamp) -> Timestamp {
        self.assign(self.last_assigned.next().max(now.latest.next()).max(floor))
    }

    /// Commit timestamp at the coordinator leader (§4.2.1): `s ≥` every prepare timestamp,
    /// `s > now_at_commit_request.latest` (`TT.now()` when the coordinator received the client's
    /// commit message), `s > last_assigned`.
    pub fn assign_commit(&mut self, now_at_commit_request: TTInterval, prepares: &[Timestamp]) -> Timestamp {
        let max_prepare = prepares.iter().copied().max().unwrap_or(Timestamp::ZERO);
        self.assign(self.last_assigned.next().max(now_at_commit_request.latest.next()).max(max_prepare))
    }

    /// Records that the leader must not assign `ts` or below from now on (a `MinNextTS(n)`
    /// promise is `observe(n.prev())`, a timestamp seen in the log is `observe(ts)`).
    pub fn observe(&mut self, ts: Timestamp) {
        self.last_assigned = self.last_assigned.max(ts);
    }

    fn assign(&mut self, s: Timestamp) -> Timestamp {
        assert!(s > self.last_assigned, "timestamps exhausted: cannot assign above {:?}", self.last_assigned);
        self.last_assigned = s;
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: u64) -> Timestamp {
        Timestamp::from_nanos(n)
    }
    fn tt(earliest: u64, latest: u64) -> TTInterval {
        TTInterval::new(t(earliest), t(latest))
    }

    /// (last_assigned, now, floor, expected s, the rule that decides it)
    #[test]
    fn assign_write_table() {
        let cases = [
            (0, tt(90, 100), 0, 101, "s > now.latest"),
            (100, tt(90, 100), 0, 101, "s > now.latest and > last_assigned (equal)"),
            (500, tt(90, 100), 0, 501, "s > last_assigned (monotonic)"),
            (0, tt(90, 100), 700, 700, "s ≥ floor"),
            (700, tt(90, 100), 700, 701, "floor already used: still > last_assigned"),
        ];
        for (last, now, floor, want, rule) in cases {
            let mut c = LeaderClock::new(t(last));
            let s = c.assign_write(now, t(floor));
            assert_eq!(s, t(want), "{rule}");
            assert_eq!(c.last_assigned, s, "assigning updates last_assigned");
            // Each rule, stated as the property it protects:
            assert!(s > now.latest, "{rule}: start rule §4.1.2");
            assert!(s > t(last), "{rule}: monotonic §4.1.2");
            assert!(s >= t(floor), "{rule}: floor");
        }
    }

    #[test]
    fn successive_writes_strictly_increase_even_with_a_clock_stepping_back() {
        let mut c = LeaderClock::default();
        let a = c.assign_write(tt(90, 100), Timestamp::ZERO);
        let b = c.assign_write(tt(50, 60), Timestamp::ZERO); // a clock reading from the past
        assert!(b > a, "§4.1.2 monotonicity within a leader: {a:?} then {b:?}");
    }

    #[test]
    fn prepare_is_above_anything_assigned() {
        let mut c = LeaderClock::default();
        let w = c.assign_write(tt(900, 1000), Timestamp::ZERO);
        let p = c.assign_prepare(tt(10, 20), Timestamp::ZERO);
        assert!(p > w, "§4.2.1 prepare ts larger than any the participant assigned");
        let p2 = c.assign_prepare(tt(10, 20), t(5000));
        assert_eq!(p2, t(5000), "prepare honours the floor");
        assert_eq!(c.assign_prepare(tt(6000, 7000), Timestamp::ZERO), t(7001), "and stays above now.latest");
    }

    /// (last_assigned, now at commit request, prepares, expected s, rule)
    #[test]
    fn assign_commit_table() {
        let cases: [(u64, TTInterval, &[u64], u64, &str); 5] = [
            (0, tt(90, 100), &[50, 60], 101, "s > now.latest at the commit request"),
            (0, tt(90, 100), &[50, 300], 300, "s ≥ every prepare ts (equal allowed)"),
            (400, tt(90, 100), &[50, 300], 401, "s > any ts the coordinator assigned"),
            (0, tt(90, 100), &[], 101, "no prepares: still above now.latest"),
            (0, tt(90, 100), &[100], 101, "prepare equal to now.latest: s still > now.latest"),
        ];
        for (last, now, prepares, want, rule) in cases {
            let mut c = LeaderClock::new(t(last));
            let ps: Vec<Timestamp> = prepares.iter().map(|&p| t(p)).collect();
            let s = c.assign_commit(now, &ps);
            assert_eq!(s, t(want), "{rule}");
            assert!(ps.iter().all(|&p| s >= p), "{rule}: §4.2.1 s ≥ every prepare");
            assert!(s > now.latest, "{rule}: §4.2.1 s > TT.now().latest at commit request");
            assert!(s > t(last), "{rule}: §4.2.1 s > anything assigned");
            assert_eq!(c.last_assigned, s);
        }
    }

    #[test]
    fn observe_raises_the_floor_for_good() {
        let mut c = LeaderClock::default();
        c.observe(t(1000)); // e.g. a MinNextTS(1001) promise
        c.observe(t(10)); // observing something lower changes nothing
        assert_eq!(c.assign_write(tt(1, 2), Timestamp::ZERO), t(1001));
    }

    #[test]
    #[should_panic(expected = "timestamps exhausted")]
    fn exhausting_timestamps_is_a_bug() {
        let mut c = LeaderClock::new(Timestamp::MAX);
        c.assign_write(tt(1, 2), Timestamp::ZERO);
    }
}
