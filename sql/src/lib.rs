//! # Meridian SQL-lite
//!
//! How people use Meridian (DESIGN.md §7): tables with a primary key, one row per key-value
//! pair (`/table_id/pk → encoded row`), a catalog stored in the meta range, and statements run
//! as transactions: single statements as implicit transactions, `BEGIN … COMMIT` as read-write
//! transactions, `BEGIN READ ONLY` as lock-free snapshot reads (Spanner §4.1.4).
//!
//! Parsing uses the `sqlparser` crate (PostgreSQL dialect); a binder rejects what Meridian does
//! not support with a message saying so. Built by issue 6.
