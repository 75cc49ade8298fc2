//! # Meridian's PostgreSQL wire protocol
//!
//! Stock PostgreSQL tools talk to Meridian (DESIGN.md §8): `psql`, `pgbench` and drivers such as
//! `tokio-postgres` connect to a node's PostgreSQL port, and every connection gets its own
//! [`meridian_sql::Session`] over the node's [`KvStore`]. The protocol itself (framing, message
//! decoding, portals) is the `pgwire` crate's; this crate maps it onto sessions.
//!
//! ```text
//!   psql / pgbench / driver
//!        │ TCP (protocol 3.0)
//!        ▼
//!   serve: accept ── over connections_max? ──► FATAL 53300 after the startup packet
//!        │ one task per connection
//!        ▼
//!   GuardedStream (guard.rs): every message's length checked before it is buffered
//!        ▼
//!   pgwire framing + process_message ──► Handler (handler.rs) ──► Session ──► KvStore
//!        ▲                                  │ startup: trust; SSLRequest → 'N'
//!        └── ReadyForQuery status ◄─────────┘ Session::in_transaction after every message
//! ```
//!
//! ## What a client gets
//! - **Simple query protocol.** A query string may hold several statements; each gets its own
//!   RowDescription/DataRows or CommandComplete (`INSERT 0 3`, `SELECT 5`, `BEGIN`, …), and
//!   execution stops at the first error, whose ErrorResponse is the last answer.
//! - **Extended protocol.** Parse (which also describes, so an unknown table fails at Parse, as in
//!   PostgreSQL), Bind with parameters in text or binary format, Describe, Execute (with row limits
//!   and portal suspension), Close, Sync. Types on the wire: `int8`, `float8`, `bool`, `text`,
//!   `bytea` (see `convert.rs`); `int2`/`int4`/`float4`/`varchar` parameters are accepted.
//! - **Transaction status** in every ReadyForQuery — `I` idle, `T` in a transaction, `E` failed
//!   — taken from the session, so drivers and `psql` prompts see the truth.
//! - **Errors** carry the SQL layer's SQLSTATE, message, and for syntax errors the position:
//!   `23505` duplicate key, `42601` syntax, `42P01` unknown table, `25P02` in a failed
//!   transaction, and `40001` for aborts to retry, which drivers and `pgbench --max-tries` act on.
//! - **Broken input** (garbage bytes, a truncated or oversized message, a startup that never
//!   completes) gets a FATAL ErrorResponse saying what was wrong and a closed connection; other
//!   connections are not affected. A panic in one connection's task ends only that connection.
//!
//! ## Limits
//! [`PgOptions::connections_max`] connections are served (default [`CONNECTIONS_MAX_DEFAULT`]);
//! beyond that up to [`REJECTING_CONNECTIONS_MAX`] more are told `53300 sorry, too many clients
//! already`, and the rest are dropped on accept. Messages are at most [`MESSAGE_BYTES_MAX`] bytes
//! and statement texts [`STATEMENT_BYTES_MAX`]. A startup must finish within
//! [`PgOptions::startup_timeout`]. On shutdown the server stops accepting, each connection ends
//! after its current message, and stragglers are aborted after [`PgOptions::shutdown_grace`].
//!
//! ## Left out, deliberately (for now)
//! - **TLS and passwords**: authentication is *trust*; SSL and GSS encryption requests are refused
//!   with `N`, after which `psql` (sslmode=prefer) continues in plaintext. Issue 9 adds SCRAM and
//!   TLS (the length guard must then wrap the decrypted stream).
//! - **Cancel requests** are accepted and ignored; `COPY` and the `pg_catalog` tables are not
//!   there, so `psql`'s `\d` does not work — `meridian sql` has its own `\d`.
//! - **Implicit transactions in the extended protocol**: outside `BEGIN`, each Execute is its own
//!   transaction (PostgreSQL groups everything up to Sync into one).
//! - **Errors in Parse or Bind** (unknown table, bad parameter) inside `BEGIN` do not fail the
//!   transaction, because `Session::describe` does not; PostgreSQL would fail it. Statements
//!   that run (Execute, simple queries) follow PostgreSQL's rule.
//! - **Commit timestamps** are known to the handler (`QueryResult::timestamp`) but not sent: there
//!   is no standard message for them. A `SHOW`-style statement or a NOTICE can report them later.
//! - The number of prepared statements per connection is not bounded (PostgreSQL does not bound
//!   it either); their memory is bounded by the connection limit times what a client prepares.

mod auth;
mod convert;
pub mod guard;
mod handler;
mod server;

use std::sync::Arc;
use std::time::Duration;

use meridian_sql::KvStore;

pub use auth::{AuthError, DEFAULT_USER, PgPasswords, PgSecurity, USERS_MAX};
pub use handler::server_version;

/// Default for [`PgOptions::connections_max`] (PostgreSQL's default `max_connections`).
pub const CONNECTIONS_MAX_DEFAULT: usize = 100;
/// Connections over the limit that are told so at once; more are dropped on accept.
pub const REJECTING_CONNECTIONS_MAX: usize = 16;
/// Longest statement text accepted, in bytes: the SQL layer's own limit.
pub const STATEMENT_BYTES_MAX: usize = meridian_sql::parse::SQL_TEXT_BYTES_MAX;
/// Longest frontend message accepted, in bytes (a statement plus its parameters or framing).
pub const MESSAGE_BYTES_MAX: u64 = STATEMENT_BYTES_MAX as u64 + 1024 * 1024;
/// Default for [`PgOptions::startup_timeout`].
pub const STARTUP_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Default for [`PgOptions::shutdown_grace`].
pub const SHUTDOWN_GRACE_DEFAULT: Duration = Duration::from_secs(5);

const _: () = assert!(MESSAGE_BYTES_MAX > STATEMENT_BYTES_MAX as u64, "a message must be able to carry a statement");
const _: () = assert!(MESSAGE_BYTES_MAX < (1 << 30), "pgwire refuses messages of 1 GiB and more itself");

/// How [`serve`] runs.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Most connections served at once; at least 1.
    pub connections_max: usize,
    /// Longest a client may take from connecting to finishing its startup.
    pub startup_timeout: Duration,
    /// How long shutdown waits for connections to finish their current message.
    pub shutdown_grace: Duration,
    /// TLS and passwords (default: neither).
    pub security: PgSecurity,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            connections_max: CONNECTIONS_MAX_DEFAULT,
            startup_timeout: STARTUP_TIMEOUT_DEFAULT,
            shutdown_grace: SHUTDOWN_GRACE_DEFAULT,
            security: PgSecurity::default(),
        }
    }
}

/// Serves the PostgreSQL protocol on `listener` until `shutdown` completes, with one SQL session
/// per connection over `store`; then stops accepting, ends each connection after its current
/// message (FATAL `57P01`), waits up to `opts.shutdown_grace` and aborts the rest. Accept errors
/// are logged and do not stop the server.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:5432").await?;
/// let store = std::sync::Arc::new(meridian_sql::MemKv::new());
/// meridian_pg::serve(listener, store, meridian_pg::PgOptions::default(), async {
///     let _ = tokio::signal::ctrl_c().await;
/// })
/// .await;
/// # Ok(())
/// # }
/// ```
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Arc<dyn KvStore>,
    opts: PgOptions,
    shutdown: impl Future<Output = ()>,
) {
    server::serve(listener, store, opts, shutdown).await
}
