//! # Transaction identity and priority
//!
//! Every read-write transaction carries a [`TxnMeta`]: a random 128-bit [`TxnId`] minted by the
//! client and the **start timestamp** it took when the transaction first began. The start
//! timestamp is the transaction's wound-wait priority (Spanner §4.2.1: "reads within read-write
//! transactions use wound-wait to avoid deadlocks"; wound-wait ranks transactions by age): the
//! older the start, the higher the priority.
//!
//! ```text
//!   priority order (TxnMeta's Ord):   smaller = older = higher priority
//!
//!   (start=10, id=7) < (start=10, id=9) < (start=20, id=1)
//!        oldest                                youngest
//! ```
//!
//! Ties on the start timestamp are broken by id so that the order is **total**: any two distinct
//! transactions compare, which is what makes the wait-for relation of the lock table acyclic (see
//! [`crate::locks`]). A client that retries a wounded transaction keeps its original `TxnMeta`
//! start so the retry ages and eventually wins (the classic wound-wait starvation argument);
//! whether it also keeps its id is up to the client — the lock table only needs each live
//! transaction to have one id and one start.

use std::cmp::Ordering;
use std::fmt;

use meridian_truetime::Timestamp;

/// A transaction's identity: 128 random bits chosen by the client, printed as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
pub struct TxnId(pub u128);

impl fmt::Display for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "txn({self})")
    }
}

/// What the lock table needs to know about a transaction: who it is and how old it is.
///
/// `Ord` is the **priority order**: `a < b` means `a` is older, i.e. has the higher priority
/// (compares `start`, then `id`). Equality compares both fields.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, serde::Serialize, serde::Deserialize)]
pub struct TxnMeta {
    /// The transaction's identity.
    pub id: TxnId,
    /// When the transaction first started (kept across retries): its wound-wait priority.
    pub start: Timestamp,
}

impl TxnMeta {
    /// A transaction `id` that started at `start`.
    pub const fn new(id: TxnId, start: Timestamp) -> Self {
        TxnMeta { id, start }
    }

    /// Whether `self` has strictly higher priority than `other` (older start, or the same start
    /// and a smaller id). Spanner §4.2.1: the older transaction wounds, the younger waits.
    pub fn is_older_than(&self, other: &TxnMeta) -> bool {
        self < other
    }
}

impl Ord for TxnMeta {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.start, self.id).cmp(&(other.start, other.id))
    }
}

impl PartialOrd for TxnMeta {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for TxnMeta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: u128, start: u64) -> TxnMeta {
        TxnMeta::new(TxnId(id), Timestamp::from_nanos(start))
    }

    #[test]
    fn display_is_32_hex_digits() {
        assert_eq!(TxnId(0xab).to_string(), "000000000000000000000000000000ab");
        assert_eq!(TxnId(u128::MAX).to_string().len(), 32);
    }

    #[test]
    fn older_start_wins_then_smaller_id() {
        assert!(meta(9, 10).is_older_than(&meta(1, 20)), "older start has priority over a smaller id");
        assert!(meta(1, 10).is_older_than(&meta(2, 10)), "same start: smaller id has priority");
        assert!(!meta(1, 10).is_older_than(&meta(1, 10)), "a transaction is not older than itself");
        let mut v = vec![meta(3, 30), meta(2, 10), meta(1, 10)];
        v.sort();
        assert_eq!(v, vec![meta(1, 10), meta(2, 10), meta(3, 30)]);
    }

    #[test]
    fn serde_shape_is_stable() {
        // The id travels in Paxos records; it must round-trip exactly.
        let m = meta(u128::MAX - 5, 42);
        let back: TxnMeta = serde_roundtrip(&m);
        assert_eq!(back, m);
    }

    fn serde_roundtrip<T: serde::Serialize + serde::de::DeserializeOwned>(v: &T) -> T {
        crate::test_codec::roundtrip(v)
    }
}
