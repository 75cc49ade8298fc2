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
//!   `t_safe = min(t_paxos_safe, t_tm_safe)` has passed the read timestamp (§4.1.3, §4.1.4).
//!
//! Like the Paxos replica, every piece is a synchronous state machine driven by the node's
//! shell. Built by issue 5.
