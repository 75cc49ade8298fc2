//! External consistency (Spanner §4.1.2, §4.2.1): if transaction T1's commit was acknowledged
//! before T2 began, in real time, then T1's commit timestamp is smaller than T2's:
//!
//! ```text
//!   ack(T1) < invoke(T2)   ⇒   s1 < s2
//! ```
//!
//! Commit wait is what makes it hold: the leader answers only once `TT.after(s1)`, so any later
//! transaction, anywhere, picks `s2 > TT.now().latest ≥` true time `> s1`. The check runs in
//! `O(n log n)`: transactions in order of invocation, against the largest timestamp among those
//! acknowledged before each invocation.

use std::fmt;

/// One acknowledged transaction (read-write or read-only) of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// Names it in reports (a client and sequence number, say).
    pub id: String,
    /// Real time the client started it (ns).
    pub invoke_ns: u64,
    /// Real time the client got the acknowledgement (ns).
    pub ack_ns: u64,
    /// Its commit (or read) timestamp (ns).
    pub ts: u64,
}

/// Two transactions ordered one way in real time and the other way in timestamps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Acknowledged first…
    pub earlier: Committed,
    /// …before this one began, yet with a timestamp no smaller.
    pub later: Committed,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "external consistency violated: {} was acknowledged at {} ns (ts {}) before {} began at {} ns, \
             yet {} got ts {} ≤ {}",
            self.earlier.id,
            self.earlier.ack_ns,
            self.earlier.ts,
            self.later.id,
            self.later.invoke_ns,
            self.later.id,
            self.later.ts,
            self.earlier.ts
        )
    }
}

/// An acknowledgement at the same instant as an invocation counts as before it (a client's next
/// transaction may start the moment the previous one is answered).
///
/// Checks every pair of `history` and returns the first violation found (in order of the later
/// transaction's start), if any. Pass committed read-write transactions; a read-only
/// transaction belongs only if no other read in the history may share its timestamp.
pub fn check(history: &[Committed]) -> Result<(), Violation> {
    let mut by_ack: Vec<&Committed> = history.iter().collect();
    by_ack.sort_by_key(|c| c.ack_ns);
    let mut by_invoke: Vec<&Committed> = history.iter().collect();
    by_invoke.sort_by_key(|c| c.invoke_ns);
    let mut i = 0;
    let mut max: Option<&Committed> = None;
    for later in by_invoke {
        while i < by_ack.len() && by_ack[i].ack_ns <= later.invoke_ns {
            if max.is_none_or(|m| by_ack[i].ts > m.ts) {
                max = Some(by_ack[i]);
            }
            i += 1;
        }
        if let Some(earlier) = max
            && earlier.ts >= later.ts
        {
            return Err(Violation { earlier: earlier.clone(), later: later.clone() });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, invoke_ns: u64, ack_ns: u64, ts: u64) -> Committed {
        Committed { id: id.into(), invoke_ns, ack_ns, ts }
    }

    #[test]
    fn overlapping_transactions_may_commit_in_either_order() {
        // T1 and T2 overlap in real time: any timestamps are fine.
        assert_eq!(check(&[c("t1", 0, 10, 50), c("t2", 5, 20, 40)]), Ok(()));
        // Back to back counts as ordered.
        assert!(check(&[c("t1", 0, 10, 50), c("t2", 10, 20, 40)]).is_err());
    }

    #[test]
    fn a_transaction_after_an_acknowledgement_needs_a_larger_timestamp() {
        assert_eq!(check(&[c("t1", 0, 10, 50), c("t2", 11, 20, 51)]), Ok(()));
        let v = check(&[c("t1", 0, 10, 50), c("t2", 11, 20, 49)]).expect_err("s2 < s1");
        assert_eq!((v.earlier.id.as_str(), v.later.id.as_str()), ("t1", "t2"));
        assert!(v.to_string().contains("t1 was acknowledged"), "{v}");
        // Equal timestamps are a violation too.
        assert!(check(&[c("t1", 0, 10, 50), c("t2", 11, 20, 50)]).is_err());
    }

    #[test]
    fn the_largest_earlier_timestamp_is_the_one_that_counts() {
        // t3 starts after t1 and t2 were both acknowledged; t2 has the larger timestamp.
        let h = [c("t1", 0, 10, 30), c("t2", 1, 12, 60), c("t3", 13, 20, 55)];
        let v = check(&h).expect_err("t3 below t2");
        assert_eq!(v.earlier.id, "t2");
    }
}
