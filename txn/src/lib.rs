//! # Meridian transactions
//!
//! The transaction layer of DESIGN.md §6, rule by rule from Spanner §4:
//! - read-write transactions: reads take shared locks at the group leader, **wound-wait**
//!   (older transactions wound younger holders, younger ones wait) so no deadlock forms;
//!   writes are buffered at the client; commit through one Paxos write (one group) or
//!   **two-phase commit** driven by a coordinator group (§4.2.1);
//! - timestamps: prepare timestamps above any the participant assigned; the commit timestamp at
//!   least every prepare timestamp and above `TT.now().latest` at the commit request; **commit
//!   wait** until `TT.after(s)` (§4.1.2);
//! - read-only transactions and snapshot reads served at any replica whose safe time
//!   `t_safe = min(t_paxos_safe, t_tm_safe)` has passed the read timestamp (§4.1.3, §4.1.4) —
//!   served by the node itself (`server::node::read`), where its rules are tested.
//!
//! Like the Paxos replica, every piece is a synchronous state machine driven by the node's
//! shell. Built by issue 5.
//!
//! ## The pieces
//!
//! ```text
//!                  group leader only
//!   ┌──────────────────────────────────────────┐
//!   │ locks::LockTable   2PL + wound-wait,     │
//!   │   restored from prepare records          │
//!   │ timestamps::LeaderClock  s, p rules      │
//!   │ outcome::Participants  in-doubt inquiries│
//!   └──────────────────────────────────────────┘
//! ```
//!
//! - [`meta`]: [`TxnId`] and [`TxnMeta`], whose order is the wound-wait priority.
//! - [`span`]: [`Span`], a point key or a key range, shared by locks and prepare records.
//! - [`locks`]: the lock table; a new leader restores prepared transactions' locks.
//! - [`timestamps`]: [`LeaderClock`], the rules every assigned timestamp follows.
//! - [`outcome`]: two-phase commit's participants and when one in doubt asks its coordinator
//!   (the records and the coordinator live in the node, `server::node::twopc`).
//!
//! ## Conventions
//!
//! - No piece reads a clock: `TT.now()` is an argument where a rule needs the interval, and
//!   local timers (keepalives, in-doubt inquiries) take `now: Timestamp`, for
//!   which the node passes `TT.now().latest`.
//! - Output order never depends on a hash map: every collection is a `BTreeMap`/`BTreeSet` or a
//!   queue with an explicit order.
//! - Every queue has a named bound (`locks::WAITERS_MAX`, `outcome::INQUIRIES_MAX`, …); a bound
//!   hit is an [`Error`] the user can act on, a broken invariant is a panic saying which.
//!
//! Deliberately left out here (in the node, or later): the client-side retry loop, buffering
//! writes, and routing; applying writes to storage; read-only transactions across groups
//! negotiating `s_read` from every group's `LastTS()` (§4.1.4; like Spanner we take the simpler
//! `TT.now().latest`);
//! schema-change transactions (§4.2.3).

pub mod error;
pub mod locks;
pub mod meta;
pub mod outcome;
pub mod span;
pub mod timestamps;

pub use error::{Error, Result};
pub use locks::{Acquired, LockTable, Mode};
pub use meta::{TxnId, TxnMeta};
pub use outcome::{Participant, ParticipantState, Participants};
pub use span::Span;
pub use timestamps::LeaderClock;

#[cfg(test)]
pub(crate) mod test_codec {
    /// Serialises with postcard (the node's record encoding) and back.
    pub fn roundtrip<T: serde::Serialize + serde::de::DeserializeOwned>(v: &T) -> T {
        let bytes = postcard::to_allocvec(v).expect("serialisable");
        postcard::from_bytes(&bytes).expect("deserialisable")
    }
}
