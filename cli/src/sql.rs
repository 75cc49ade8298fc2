//! `meridian sql` — the SQL shell (DESIGN.md §8).
//!
//! ```text
//!   input: -e "…" (repeatable) │ FILE (or - for stdin) │ terminal (rustyline) │ stdin when piped
//!     │ lines
//!     ▼
//!   Splitter: complete statements at ';' outside quotes and comments; `\` lines are commands
//!     │ one statement at a time (as psql sends them)
//!     ▼
//!   Backend ── Remote: tokio-postgres, simple query protocol, any node's PostgreSQL port;
//!           │          TLS checked against the cluster CA (`--certs-dir`, see [`tls`]) and a
//!           │          SCRAM password (`--password-file` or `PGPASSWORD`)
//!           └─ Local (--local): an in-process Session over MemKv, for trying SQL without a cluster
//!     │
//!     ▼
//!   psql-style output: aligned table + "(n rows)", or the command tag; \timing adds "Time: …"
//!   errors: one line on stderr, `ERROR: <message> (SQLSTATE xxxxx)`
//! ```
//!
//! Commands: `\q` quit, `\timing [on|off]`, `\d` and `\dt` (tables), `\d NAME` (a table's columns),
//! `\?` help.
//!
//! Errors, as in `psql`: by default the shell reports an error and goes on with the next
//! statement (inside a failed transaction, statements fail with 25P02 until `ROLLBACK`/`COMMIT`).
//! `--on-error-stop` (psql's `-v ON_ERROR_STOP=1`) stops at the first failing statement or
//! command: non-interactive input ends with exit status 3; at the prompt, the rest of the line is
//! dropped. Exit status: 0 when the input ran to its end (a file or stdin, even with errors, as
//! `psql -f`), 1 when a statement given with `-e` failed (as `psql -c`) or the input could not be
//! read, 3 when `--on-error-stop` stopped it.
//!
//! A lost connection (the node restarted): the shell says so on stderr, naming the address
//! (`the connection to HOST:PORT closed: …`), and connects again before the next statement, for
//! up to [`RECONNECT_WAIT_MAX`] (`… was lost; connected again`). A statement running when the
//! connection was lost is not re-run (its outcome is unknown, and it says so), and a transaction
//! in progress is gone. Every connection error names the address it failed to reach.
//!
//! Over the wire, `tokio-postgres`'s simple query API reports a statement's row count but not its
//! command tag or column types, so the remote backend rebuilds the tag from the statement's verb
//! (it tracks the transaction state to print `ROLLBACK` for the `COMMIT` of a failed transaction)
//! and right-aligns columns whose values are all numbers. The local backend knows both exactly.
//! Timestamps: the local backend knows each statement's commit or read timestamp and `\timing`
//! prints it; the PostgreSQL protocol has no message for it, so remote timestamps wait for the
//! server to offer one (a `SHOW`-style statement) — the hook is in `Backend::run`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use meridian_sql::{MemKv, QueryResult, ResultKind, Session, TxnStatus};
use tokio_postgres::SimpleQueryMessage;

mod tls;

/// Most entries kept in the history file.
const HISTORY_ENTRIES_MAX: usize = 1000;
/// Longest wait for a connection to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the shell tries to connect again, before a statement, after the connection was lost.
const RECONNECT_WAIT_MAX: Duration = Duration::from_secs(15);
/// First wait between those attempts.
const RECONNECT_FIRST: Duration = Duration::from_millis(50);
/// Longest wait between them.
const RECONNECT_MAX: Duration = Duration::from_secs(1);
/// The history file, in the home directory.
const HISTORY_FILE: &str = ".meridian_sql_history";
/// Longest statement the shell buffers, in bytes (the server's own limit is 16 MiB).
const STATEMENT_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Exit status when `-e` statements failed, or the input could not be read (psql's `EXIT_FAILURE`).
const EXIT_FAILED: i32 = 1;
/// Exit status when `--on-error-stop` stopped at an error (psql's `EXIT_USER`).
const EXIT_STOPPED: i32 = 3;

/// `meridian sql` arguments (public so `meridian demo` can open the shell on its cluster).
#[derive(clap::Args, Debug)]
pub struct SqlArgs {
    /// PostgreSQL connection URL or key=value string of any node,
    /// e.g. postgresql://root@127.0.0.1:5432/meridian.
    #[arg(long, env = "MERIDIAN_PG_URL", conflicts_with = "local")]
    pub url: Option<String>,
    /// host:port of any node's PostgreSQL port.
    #[arg(long, default_value = "127.0.0.1:5432", env = "MERIDIAN_PG_ADDR")]
    pub addr: String,
    /// User name to connect as.
    #[arg(long, default_value = "root")]
    pub user: String,
    /// Connect with TLS, verifying the server against the CA certificate `ca.crt` in this
    /// directory (as psql's `sslmode=verify-full`, unless `--url` names another `sslmode`).
    #[arg(long, env = "MERIDIAN_CERTS_DIR")]
    pub certs_dir: Option<PathBuf>,
    /// Connect with TLS, verifying the server against this CA certificate file (instead of
    /// `--certs-dir`; `sslrootcert=` in `--url` does the same).
    #[arg(long, env = "MERIDIAN_CA_CERT", conflicts_with = "certs_dir")]
    pub ca_cert: Option<PathBuf>,
    /// Read the password (SCRAM-SHA-256) from the first line of this file. Without it, the
    /// password in `--url`, else the `PGPASSWORD` environment variable; never a flag value.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Run against an in-process, in-memory store instead of a cluster (data is lost on exit).
    #[arg(long, conflicts_with = "url")]
    pub local: bool,
    /// Statements to run, then exit (repeatable; each may hold several statements).
    #[arg(short = 'e', long = "execute", value_name = "SQL")]
    pub execute: Vec<String>,
    /// A file of statements to run, then exit (`-` reads stdin).
    #[arg(value_name = "FILE", conflicts_with = "execute")]
    pub file: Option<PathBuf>,
    /// Stop at the first failing statement and exit with status 3, like psql's
    /// `-v ON_ERROR_STOP=1`. Without it, an error is reported and the next statement runs; the
    /// exit status is then 0 for a file or stdin (as `psql -f`) and 1 if an `-e` statement failed.
    #[arg(long)]
    pub on_error_stop: bool,
}

/// Runs the shell and exits the process with [`shell`]'s exit status when it is not 0.
pub fn run(args: SqlArgs) -> anyhow::Result<()> {
    let status = shell(args)?;
    if status != 0 {
        let _ = std::io::stdout().flush();
        std::process::exit(status);
    }
    Ok(())
}

/// Runs the shell; returns its exit status: 0, [`EXIT_FAILED`] or [`EXIT_STOPPED`] (see the
/// module documentation). An error is a failure to start (connect, open the file).
fn shell(args: SqlArgs) -> anyhow::Result<i32> {
    // One worker thread: the connection's driver runs while the shell waits for input, so a
    // connection the server closed (a node restarting) is known to be closed before the next
    // statement, which then connects again instead of failing.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let backend = if args.local {
        Backend::Local(Box::new(Session::new(Arc::new(MemKv::new()))))
    } else {
        rt.block_on(connect(&args))?
    };
    let mut shell = Shell {
        rt,
        backend,
        timing: false,
        remote_txn: TxnStatus::Idle,
        on_error_stop: args.on_error_stop,
        failures: 0,
    };
    let stdout = std::io::stdout();
    let ended = if !args.execute.is_empty() {
        // Each -e is complete on its own, like psql's -c: a missing final ';' ends it anyway.
        let mut ended = Ok(Flow::Continue);
        for text in &args.execute {
            ended = shell.feed_all(text.lines().map(|l| Ok(l.to_string())), &mut stdout.lock());
            if !matches!(ended, Ok(Flow::Continue)) {
                break;
            }
        }
        ended
    } else if let Some(path) = &args.file {
        if path.as_os_str() == "-" {
            shell.feed_all(std::io::stdin().lock().lines(), &mut stdout.lock())
        } else {
            let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
            shell.feed_all(std::io::BufReader::new(file).lines(), &mut stdout.lock())
        }
    } else if std::io::stdin().is_terminal() {
        shell.interactive()?;
        return Ok(0);
    } else {
        shell.feed_all(std::io::stdin().lock().lines(), &mut stdout.lock())
    };
    Ok(match ended {
        Err(e) => {
            eprintln!("ERROR: reading input: {e}");
            EXIT_FAILED
        }
        Ok(Flow::Failed) => EXIT_STOPPED,
        Ok(Flow::Continue | Flow::Quit) if shell.failures > 0 && !args.execute.is_empty() => EXIT_FAILED,
        Ok(Flow::Continue | Flow::Quit) => 0,
    })
}

async fn connect(args: &SqlArgs) -> anyhow::Result<Backend> {
    let (mut config, url_tls) = match &args.url {
        Some(url) => {
            // Not echoed in errors: the URL may hold a password.
            let (rest, tls) = tls::split_tls_params(url).context("invalid --url")?;
            let mut config: tokio_postgres::Config = rest.parse().context("invalid --url")?;
            if config.get_user().is_none() {
                config.user(&args.user);
            }
            (config, tls)
        }
        None => {
            let (host, port) =
                args.addr.rsplit_once(':').with_context(|| format!("--addr {:?} is not host:port", args.addr))?;
            let port: u16 = port.parse().with_context(|| format!("--addr {:?}: bad port", args.addr))?;
            let mut config = tokio_postgres::Config::new();
            config
                .host(host.trim_start_matches('[').trim_end_matches(']'))
                .port(port)
                .user(&args.user)
                .dbname("meridian");
            (config, tls::TlsParams::default())
        }
    };
    // The flags (or their variables) win over the URL's `sslrootcert`; a CA and no `sslmode`
    // means psql's `verify-full`.
    let ca_file = crate::cert::ca_file(args.ca_cert.as_deref(), args.certs_dir.as_deref()).or(url_tls.sslrootcert);
    let mode = match (url_tls.sslmode, &ca_file) {
        (Some(mode), _) => mode,
        (None, Some(_)) => tls::SslMode::VerifyFull,
        (None, None) => tls::SslMode::Disable,
    };
    config.ssl_mode(mode.negotiation());
    let ca_pem = match &ca_file {
        Some(f) => Some(std::fs::read(f).with_context(|| format!("reading the CA certificate {}", f.display()))?),
        None => None,
    };
    let connector = tls::MakeRustlsConnect::new(mode, ca_pem.as_deref())?;
    if let Some(f) = &args.password_file {
        let password =
            meridian_proto::auth::read_secret_file(f).with_context(|| format!("--password-file {}", f.display()))?;
        config.password(password.expose().as_bytes());
    } else if config.get_password().is_none()
        && let Some(password) = std::env::var_os("PGPASSWORD")
    {
        config.password(password.as_encoded_bytes());
    }
    let target = Target { where_: target_name(&config), config, connector, mode };
    let client = target.connect().await?;
    Ok(Backend::Remote(Box::new(Remote { client, target })))
}

/// `host:port` of the first host `config` names, for messages.
fn target_name(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

/// Where the shell connects, and how: kept to connect again after the connection was lost.
struct Target {
    /// `host:port`, for messages.
    where_: String,
    config: tokio_postgres::Config,
    connector: tls::MakeRustlsConnect,
    mode: tls::SslMode,
}

impl Target {
    /// One connection, within [`CONNECT_TIMEOUT`]; its driver runs on a task of its own.
    async fn connect(&self) -> anyhow::Result<tokio_postgres::Client> {
        let (client, connection) =
            match tokio::time::timeout(CONNECT_TIMEOUT, self.config.connect(self.connector.clone())).await {
                Err(_) => anyhow::bail!(
                    "connecting to the PostgreSQL port at {}: no answer within {CONNECT_TIMEOUT:?}",
                    self.where_
                ),
                Ok(Err(e)) => {
                    return Err(connect_error(e, &self.where_, self.mode, self.config.get_password().is_some()));
                }
                Ok(Ok(c)) => c,
            };
        let at = self.where_.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                eprintln!("the connection to {at} closed: {e}");
            }
        });
        Ok(client)
    }
}

/// A node's PostgreSQL port, connected.
struct Remote {
    client: tokio_postgres::Client,
    target: Target,
}

impl Remote {
    /// Connects again if the connection was lost (the node restarted, say): before a statement,
    /// when nothing of it was sent. Ok(true) if it reconnected; an error names the address.
    async fn ensure_connected(&mut self) -> anyhow::Result<bool> {
        if !self.client.is_closed() {
            return Ok(false);
        }
        let mut backoff = meridian_client::backoff::Backoff::new(RECONNECT_FIRST, RECONNECT_MAX);
        let started = Instant::now();
        // Bounded: RECONNECT_WAIT_MAX in all, each attempt within CONNECT_TIMEOUT.
        loop {
            match self.target.connect().await {
                Ok(client) => {
                    self.client = client;
                    return Ok(true);
                }
                Err(e) if started.elapsed() >= RECONNECT_WAIT_MAX => {
                    return Err(e.context(format!(
                        "the connection to {} was lost and connecting again failed for {RECONNECT_WAIT_MAX:?}",
                        self.target.where_
                    )));
                }
                Err(_) => tokio::time::sleep(backoff.next_wait()).await,
            }
        }
    }
}

/// A failed connection to `at`, in words that say what to do: the server's own message and
/// SQLSTATE (`28P01` for a wrong password), and the flag a missing TLS setting or password needs.
fn connect_error(e: tokio_postgres::Error, at: &str, mode: tls::SslMode, has_password: bool) -> anyhow::Error {
    let what = format!("connecting to the PostgreSQL port at {at}");
    if let Some(db) = e.as_db_error() {
        let hint = if mode == tls::SslMode::Disable && db.message().contains("TLS") {
            " (pass --certs-dir DIR or --ca-cert FILE to connect with TLS)"
        } else {
            ""
        };
        return anyhow::anyhow!("{what}: {} (SQLSTATE {}){hint}", db.message(), db.code().code());
    }
    let e = anyhow::Error::new(e).context(what.clone());
    if !has_password && format!("{e:#}").contains("password missing") {
        return anyhow::anyhow!("{what}: the server wants a password: pass --password-file FILE or set PGPASSWORD");
    }
    e
}

/// Where statements run.
enum Backend {
    /// A node's PostgreSQL port.
    Remote(Box<Remote>),
    /// An in-process session (`--local`).
    Local(Box<Session>),
}

/// One statement's result, ready to print.
#[derive(Debug, Clone, PartialEq)]
enum Output {
    Rows { columns: Vec<Header>, rows: Vec<Vec<Option<String>>> },
    Command { tag: String },
    Empty,
}

/// A result column: its name and whether it is right-aligned (numbers, as in psql).
#[derive(Debug, Clone, PartialEq)]
struct Header {
    name: String,
    numeric: bool,
}

/// A failed statement.
#[derive(Debug, Clone, PartialEq)]
struct Failure {
    message: String,
    code: Option<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.code {
            Some(code) => write!(f, "ERROR: {} (SQLSTATE {code})", self.message),
            None => write!(f, "ERROR: {}", self.message),
        }
    }
}

impl Backend {
    /// Runs one statement (a string that may, if the splitter was fooled, hold several).
    async fn run(&mut self, sql: &str) -> Vec<Result<(Output, Option<String>), Failure>> {
        match self {
            Backend::Local(session) => session
                .execute(sql)
                .await
                .into_iter()
                .map(|r| {
                    r.map(local_output)
                        .map_err(|e| Failure { message: e.message, code: Some(e.code.code().to_string()) })
                })
                .collect(),
            Backend::Remote(remote) => match remote.client.simple_query(sql).await {
                // The timestamp hook: the PostgreSQL protocol does not carry commit timestamps;
                // when the server reports them (a `SHOW meridian.last_commit_ts`-style statement
                // or a NOTICE), fetch them here instead of `None`.
                Ok(messages) => remote_outputs(sql, &messages).into_iter().map(|o| Ok((o, None))).collect(),
                Err(e) => vec![Err(match e.as_db_error() {
                    Some(db) => Failure { message: db.message().to_string(), code: Some(db.code().code().to_string()) },
                    None if e.is_closed() || remote.client.is_closed() => Failure {
                        message: format!(
                            "the connection to {} was lost ({e}); the statement's outcome is unknown, and the next \
                             one connects again",
                            remote.target.where_
                        ),
                        code: None,
                    },
                    None => Failure { message: e.to_string(), code: None },
                })],
            },
        }
    }
}

fn local_output(result: QueryResult) -> (Output, Option<String>) {
    let timestamp = result.timestamp.map(|t| t.to_string());
    let output = match result.kind {
        ResultKind::Rows { columns, rows } => Output::Rows {
            columns: columns.iter().map(|c| Header { name: c.name.clone(), numeric: c.ty.is_numeric() }).collect(),
            rows: rows.iter().map(|r| r.iter().map(|v| v.pg_text()).collect()).collect(),
        },
        ResultKind::Command { tag } => Output::Command { tag },
        ResultKind::Empty => Output::Empty,
    };
    (output, timestamp)
}

/// Turns tokio-postgres's simple query messages into outputs: rows after a RowDescription, else
/// a command whose tag is rebuilt from the statement.
fn remote_outputs(sql: &str, messages: &[SimpleQueryMessage]) -> Vec<Output> {
    let mut outputs = Vec::new();
    let mut columns: Option<Vec<String>> = None;
    let mut rows: Vec<Vec<Option<String>>> = Vec::new();
    for m in messages {
        match m {
            SimpleQueryMessage::RowDescription(cols) => {
                columns = Some(cols.iter().map(|c| c.name().to_string()).collect());
            }
            SimpleQueryMessage::Row(row) => {
                if columns.is_none() {
                    columns = Some(row.columns().iter().map(|c| c.name().to_string()).collect());
                }
                rows.push((0..row.len()).map(|i| row.get(i).map(str::to_string)).collect());
            }
            SimpleQueryMessage::CommandComplete(n) => match columns.take() {
                Some(names) => {
                    let rows = std::mem::take(&mut rows);
                    let columns = names
                        .into_iter()
                        .enumerate()
                        .map(|(i, name)| Header { name, numeric: all_numeric(rows.iter().map(|r| r[i].as_deref())) })
                        .collect();
                    outputs.push(Output::Rows { columns, rows });
                }
                None => outputs.push(Output::Command { tag: command_tag(sql, *n) }),
            },
            _ => {}
        }
    }
    outputs
}

fn all_numeric<'a>(mut values: impl Iterator<Item = Option<&'a str>>) -> bool {
    let mut any = false;
    let numeric = values.all(|v| match v {
        None => true,
        Some(v) => {
            any = true;
            v.parse::<f64>().is_ok() && !v.is_empty()
        }
    });
    numeric && any
}

/// The first `n` words of a statement, upper-cased, skipping leading comments.
fn leading_words(sql: &str, n: usize) -> Vec<String> {
    let mut rest = sql;
    loop {
        let trimmed = rest.trim_start();
        if let Some(after) = trimmed.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, tail)| tail);
        } else if let Some(after) = trimmed.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, tail)| tail);
        } else {
            rest = trimmed;
            break;
        }
    }
    rest.split(|c: char| !c.is_alphanumeric() && c != '_')
        .filter(|w| !w.is_empty())
        .take(n)
        .map(str::to_uppercase)
        .collect()
}

/// PostgreSQL's command tag for a statement that returned no rows and affected `rows` rows.
fn command_tag(sql: &str, rows: u64) -> String {
    let words = leading_words(sql, 2);
    let first = words.first().map(String::as_str).unwrap_or("");
    match first {
        "INSERT" | "UPSERT" => format!("INSERT 0 {rows}"),
        "UPDATE" | "DELETE" => format!("{first} {rows}"),
        "CREATE" | "DROP" => words.join(" "),
        "BEGIN" | "START" => "BEGIN".to_string(),
        "COMMIT" | "END" => "COMMIT".to_string(),
        "ROLLBACK" | "ABORT" => "ROLLBACK".to_string(),
        _ => first.to_string(),
    }
}

/// What a statement does to a transaction, for tracking the remote transaction state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Begin,
    End,
    Other,
}

fn verb(sql: &str) -> Verb {
    match leading_words(sql, 1).first().map(String::as_str) {
        Some("BEGIN" | "START") => Verb::Begin,
        Some("COMMIT" | "END" | "ROLLBACK" | "ABORT") => Verb::End,
        _ => Verb::Other,
    }
}

/// The session's transaction state after a statement, as PostgreSQL defines it.
fn next_txn_status(before: TxnStatus, verb: Verb, ok: bool) -> TxnStatus {
    match (before, verb, ok) {
        (_, Verb::End, _) => TxnStatus::Idle,
        (TxnStatus::Idle, Verb::Begin, true) => TxnStatus::InTransaction,
        (TxnStatus::Idle, _, _) => TxnStatus::Idle,
        (_, _, false) => TxnStatus::Failed,
        (status, _, true) => status,
    }
}

/// Splits input into statements at `;` outside string literals, quoted identifiers, dollar
/// quotes and comments.
#[derive(Debug, Default)]
struct Splitter {
    buf: String,
    state: Lex,
    /// Whether `buf` holds anything but whitespace and comments.
    content: bool,
}

#[derive(Debug, Default, Clone, PartialEq)]
enum Lex {
    #[default]
    Normal,
    /// In '…'; `escapes` for E'…' strings, where a backslash escapes the next character.
    Single { escapes: bool, backslash: bool },
    /// In "…".
    Double,
    /// In $tag$…$tag$.
    Dollar(String),
    /// In /* … */, nested to this depth.
    Block(u32),
}

impl Splitter {
    /// Adds a line; returns the statements it completes (without their `;`).
    fn push_line(&mut self, line: &str) -> Vec<String> {
        let mut done = Vec::new();
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let next = chars.get(i + 1).copied();
            match &mut self.state {
                Lex::Normal => match c {
                    '-' if next == Some('-') => {
                        // A line comment: the rest of the line.
                        self.buf.extend(&chars[i..]);
                        break;
                    }
                    '/' if next == Some('*') => {
                        self.state = Lex::Block(1);
                        self.buf.push_str("/*");
                        i += 2;
                        continue;
                    }
                    ';' => {
                        if self.content {
                            done.push(self.buf.trim().to_string());
                        }
                        self.buf.clear();
                        self.content = false;
                        i += 1;
                        continue;
                    }
                    '\'' => {
                        let escapes = i > 0
                            && matches!(chars[i - 1], 'e' | 'E')
                            && (i < 2 || !(chars[i - 2].is_alphanumeric() || chars[i - 2] == '_'));
                        self.state = Lex::Single { escapes, backslash: false };
                    }
                    '"' => self.state = Lex::Double,
                    '$' => {
                        // $tag$ where tag is empty or an identifier not starting with a digit
                        // ($1 is a parameter).
                        let tag: String =
                            chars[i + 1..].iter().take_while(|c| c.is_alphanumeric() || **c == '_').collect();
                        let starts_ok = !tag.starts_with(|c: char| c.is_ascii_digit());
                        if starts_ok && chars.get(i + 1 + tag.chars().count()) == Some(&'$') {
                            let opener = format!("${tag}$");
                            self.buf.push_str(&opener);
                            self.content = true;
                            self.state = Lex::Dollar(opener);
                            i += tag.chars().count() + 2;
                            continue;
                        }
                    }
                    _ => {}
                },
                Lex::Single { escapes, backslash } => {
                    if *backslash {
                        *backslash = false;
                    } else if *escapes && c == '\\' {
                        *backslash = true;
                    } else if c == '\'' {
                        if next == Some('\'') {
                            // A doubled quote stays inside the literal.
                            self.buf.push_str("''");
                            i += 2;
                            continue;
                        }
                        self.state = Lex::Normal;
                    }
                }
                Lex::Double => {
                    if c == '"' {
                        self.state = Lex::Normal;
                    }
                }
                Lex::Dollar(opener) => {
                    if chars[i..].starts_with(&opener.chars().collect::<Vec<_>>()) {
                        let n = opener.chars().count();
                        self.buf.extend(&chars[i..i + n]);
                        self.state = Lex::Normal;
                        i += n;
                        continue;
                    }
                }
                Lex::Block(depth) => {
                    if c == '*' && next == Some('/') {
                        *depth -= 1;
                        if *depth == 0 {
                            self.state = Lex::Normal;
                        }
                        self.buf.push_str("*/");
                        i += 2;
                        continue;
                    }
                    if c == '/' && next == Some('*') {
                        *depth += 1;
                        self.buf.push_str("/*");
                        i += 2;
                        continue;
                    }
                }
            }
            if !c.is_whitespace() && !matches!(self.state, Lex::Block(_)) {
                self.content = true;
            }
            self.buf.push(c);
            i += 1;
        }
        self.buf.push('\n');
        done
    }

    /// Whether a statement has begun and is not yet ended.
    fn pending(&self) -> bool {
        self.content || self.state != Lex::Normal
    }

    /// The unterminated rest, at the end of the input.
    fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.buf);
        let content = std::mem::take(&mut self.content);
        self.state = Lex::Normal;
        content.then(|| rest.trim().to_string())
    }

    fn clear(&mut self) {
        *self = Splitter::default();
    }
}

/// Renders rows as psql's aligned format: centred headers, numbers right-aligned, `NULL` for
/// NULL, and a `(n rows)` footer.
fn render_table(columns: &[Header], rows: &[Vec<Option<String>>]) -> String {
    let cell = |v: &Option<String>| -> String {
        match v {
            None => "NULL".to_string(),
            Some(s) => s.replace('\n', "\\n").replace('\t', "\\t").replace('\r', "\\r"),
        }
    };
    let cells: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(cell).collect()).collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, h)| {
            cells
                .iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
                .max(h.name.chars().count())
        })
        .collect();
    let mut out = String::new();
    let header: Vec<String> = columns
        .iter()
        .zip(&widths)
        .map(|(h, &w)| {
            let n = h.name.chars().count();
            let left = (w - n) / 2;
            format!("{}{}{}", " ".repeat(left), h.name, " ".repeat(w - n - left))
        })
        .collect();
    out.push_str(format!(" {} ", header.join(" | ")).trim_end());
    out.push('\n');
    out.push_str(&widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("+"));
    out.push('\n');
    for row in &cells {
        let line: Vec<String> = columns
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (h, &w))| {
                let c = row.get(i).map_or("", String::as_str);
                if h.numeric { format!("{c:>w$}") } else { format!("{c:<w$}") }
            })
            .collect();
        out.push_str(format!(" {} ", line.join(" | ")).trim_end());
        out.push('\n');
    }
    out.push_str(&match rows.len() {
        1 => "(1 row)\n\n".to_string(),
        n => format!("({n} rows)\n\n"),
    });
    out
}

/// What to do after a statement, command or line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// Go on (after a success, or after an error without `--on-error-stop`).
    Continue,
    /// Stop: something failed and `--on-error-stop` is set.
    Failed,
    /// `\q`.
    Quit,
}

struct Shell {
    rt: tokio::runtime::Runtime,
    backend: Backend,
    timing: bool,
    /// The transaction state of a remote session, tracked from statements and their outcomes.
    remote_txn: TxnStatus,
    /// `--on-error-stop`: a failure stops the input instead of being reported and passed over.
    on_error_stop: bool,
    /// Statements and commands that failed so far.
    failures: usize,
}

const HELP: &str = "\
Statements end with ';' and may span lines.
  \\d, \\dt       list tables
  \\d NAME       describe table NAME
  \\timing [on|off]  toggle printing each statement's elapsed time (and timestamp)
  \\q            quit
  \\?            this help
";

impl Shell {
    fn txn_status(&self) -> TxnStatus {
        match &self.backend {
            Backend::Local(session) => session.in_transaction(),
            Backend::Remote(_) => self.remote_txn,
        }
    }

    /// Runs one statement and prints its results (errors to stderr).
    fn run_statement(&mut self, sql: &str, out: &mut dyn Write) -> Flow {
        if sql.len() > STATEMENT_BYTES_MAX {
            eprintln!("ERROR: statement of {} bytes is over the limit of {STATEMENT_BYTES_MAX} bytes", sql.len());
            return self.failed();
        }
        if let Backend::Remote(remote) = &mut self.backend {
            match self.rt.block_on(remote.ensure_connected()) {
                Ok(false) => {}
                Ok(true) => {
                    eprintln!("the connection to {} was lost; connected again", remote.target.where_);
                    if self.remote_txn != TxnStatus::Idle {
                        eprintln!("the transaction in progress was lost with the connection (rolled back)");
                        self.remote_txn = TxnStatus::Idle;
                    }
                }
                Err(e) => {
                    eprintln!("ERROR: {e:#}");
                    return self.failed();
                }
            }
        }
        let started = Instant::now();
        let results = self.rt.block_on(self.backend.run(sql));
        let elapsed = started.elapsed();
        let failed = results.iter().any(Result::is_err);
        // The server answers the COMMIT of a failed transaction with ROLLBACK; over tokio-postgres
        // the shell only knows that from its own tracking.
        let mut rolled_back = false;
        if let Backend::Remote(_) = self.backend {
            rolled_back = self.remote_txn == TxnStatus::Failed && verb(sql) == Verb::End;
            self.remote_txn = next_txn_status(self.remote_txn, verb(sql), !failed);
        }
        for result in results {
            match result {
                Ok((output, timestamp)) => {
                    let text = match output {
                        Output::Rows { columns, rows } => render_table(&columns, &rows),
                        Output::Command { tag } if tag == "COMMIT" && rolled_back => "ROLLBACK\n".to_string(),
                        Output::Command { tag } => format!("{tag}\n"),
                        Output::Empty => String::new(),
                    };
                    let _ = out.write_all(text.as_bytes());
                    if self.timing {
                        let ts = timestamp.map(|t| format!(" (timestamp {t})")).unwrap_or_default();
                        let _ = writeln!(out, "Time: {:.3} ms{ts}", elapsed.as_secs_f64() * 1000.0);
                    }
                }
                Err(failure) => {
                    let _ = out.flush();
                    eprintln!("{failure}");
                }
            }
        }
        let _ = out.flush();
        if failed { self.failed() } else { Flow::Continue }
    }

    /// Counts a failed statement or command and says whether to go on (psql's `ON_ERROR_STOP`).
    fn failed(&mut self) -> Flow {
        self.failures += 1;
        if self.on_error_stop { Flow::Failed } else { Flow::Continue }
    }

    /// A backslash command.
    fn command(&mut self, line: &str, out: &mut dyn Write) -> Flow {
        let mut words = line.split_whitespace();
        let name = words.next().unwrap_or("");
        let arg = words.next();
        match (name, arg) {
            ("\\q", _) => Flow::Quit,
            ("\\?", _) => {
                let _ = out.write_all(HELP.as_bytes());
                Flow::Continue
            }
            ("\\timing", arg) => {
                self.timing = match arg.map(str::to_ascii_lowercase).as_deref() {
                    Some("on") => true,
                    Some("off") => false,
                    _ => !self.timing,
                };
                let _ = writeln!(out, "Timing is {}.", if self.timing { "on" } else { "off" });
                Flow::Continue
            }
            ("\\d" | "\\dt", None) => self.run_statement("SHOW TABLES", out),
            ("\\d", Some(table)) => {
                let table = table.trim_matches('"');
                self.run_statement(&format!("SHOW COLUMNS FROM \"{}\"", table.replace('"', "\"\"")), out)
            }
            _ => {
                eprintln!("ERROR: unknown command {name:?}; try \\? for help");
                self.failed()
            }
        }
    }

    /// Handles one input line: a backslash command, or statement text. With `--on-error-stop`,
    /// the statements after a failing one on the same line do not run.
    fn feed_line(&mut self, splitter: &mut Splitter, line: &str, out: &mut dyn Write) -> Flow {
        if !splitter.pending() && line.trim_start().starts_with('\\') {
            return self.command(line.trim(), out);
        }
        let mut flow = Flow::Continue;
        let statements = splitter.push_line(line);
        if splitter.buf.len() > STATEMENT_BYTES_MAX {
            eprintln!("ERROR: statement is over the limit of {STATEMENT_BYTES_MAX} bytes; discarded");
            splitter.clear();
            return self.failed();
        }
        for statement in statements {
            flow = self.run_statement(&statement, out);
            if flow != Flow::Continue {
                break;
            }
        }
        flow
    }

    /// Non-interactive input: runs everything, until `\q` or, with `--on-error-stop`, the first
    /// failure ([`Flow::Failed`]). An error is input that could not be read.
    fn feed_all(
        &mut self,
        lines: impl Iterator<Item = std::io::Result<String>>,
        out: &mut dyn Write,
    ) -> std::io::Result<Flow> {
        let mut splitter = Splitter::default();
        for line in lines {
            let flow = self.feed_line(&mut splitter, &line?, out);
            if flow != Flow::Continue {
                return Ok(flow);
            }
        }
        Ok(match splitter.finish() {
            Some(rest) => self.run_statement(&rest, out),
            None => Flow::Continue,
        })
    }

    fn interactive(&mut self) -> anyhow::Result<()> {
        use rustyline::error::ReadlineError;
        let config =
            rustyline::Config::builder().max_history_size(HISTORY_ENTRIES_MAX)?.auto_add_history(false).build();
        let mut editor = rustyline::DefaultEditor::with_config(config)?;
        let history = std::env::var_os("HOME").map(|home| PathBuf::from(home).join(HISTORY_FILE));
        if let Some(path) = &history {
            let _ = editor.load_history(path);
        }
        let target = match &self.backend {
            Backend::Local(_) => "an in-memory store (--local; nothing is kept)".to_string(),
            Backend::Remote(_) => "Meridian".to_string(),
        };
        println!("meridian sql: connected to {target}. Type \\? for help, \\q to quit.");
        let mut splitter = Splitter::default();
        let mut entry = String::new();
        let stdout = std::io::stdout();
        loop {
            let prompt = match (splitter.pending(), self.txn_status()) {
                (true, _) => "meridian-> ",
                (false, TxnStatus::Idle) => "meridian=> ",
                (false, TxnStatus::InTransaction) => "meridian=*> ",
                (false, TxnStatus::Failed) => "meridian=!> ",
            };
            match editor.readline(prompt) {
                Ok(line) => {
                    if !entry.is_empty() {
                        entry.push('\n');
                    }
                    entry.push_str(&line);
                    let flow = self.feed_line(&mut splitter, &line, &mut stdout.lock());
                    if !splitter.pending() {
                        if !entry.trim().is_empty() {
                            let _ = editor.add_history_entry(entry.as_str());
                        }
                        entry.clear();
                    }
                    if flow == Flow::Quit {
                        break;
                    }
                }
                Err(ReadlineError::Interrupted) => {
                    splitter.clear();
                    entry.clear();
                }
                Err(ReadlineError::Eof) => break,
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(path) = &history {
            let _ = editor.save_history(path);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(input: &str) -> (Vec<String>, Option<String>) {
        let mut splitter = Splitter::default();
        let mut out = Vec::new();
        for line in input.lines() {
            out.extend(splitter.push_line(line));
        }
        (out, splitter.finish())
    }

    #[test]
    fn splits_at_semicolons_outside_quotes_and_comments() {
        let (stmts, rest) = split("SELECT 1; SELECT 2;\nSELECT\n  3\n;");
        assert_eq!(stmts, vec!["SELECT 1", "SELECT 2", "SELECT\n  3"]);
        assert_eq!(rest, None);

        let (stmts, rest) = split(
            "INSERT INTO t VALUES ('a;b', 'it''s;', E'x\\';y'); SELECT \"we;ird\" FROM t -- c;omment\n; \
             SELECT $$a;b$$, $tag$ $$; $tag$ /* x; /* nested; */ still; */ ; SELECT $1;",
        );
        assert_eq!(
            stmts,
            vec![
                "INSERT INTO t VALUES ('a;b', 'it''s;', E'x\\';y')",
                "SELECT \"we;ird\" FROM t -- c;omment",
                "SELECT $$a;b$$, $tag$ $$; $tag$ /* x; /* nested; */ still; */",
                "SELECT $1",
            ]
        );
        assert_eq!(rest, None);
    }

    #[test]
    fn empty_statements_and_comments_are_skipped_and_the_rest_is_kept() {
        let (stmts, rest) = split(";;\n-- only a comment;\n/* and; this */;\nSELECT 'open\nstill open;' ");
        assert!(stmts.is_empty(), "{stmts:?}");
        assert_eq!(rest.as_deref(), Some("SELECT 'open\nstill open;'"));

        let mut splitter = Splitter::default();
        assert!(!splitter.pending());
        splitter.push_line("-- a comment");
        assert!(!splitter.pending(), "a comment alone starts no statement");
        splitter.push_line("SELECT");
        assert!(splitter.pending());
        assert_eq!(splitter.push_line("1;"), vec!["-- a comment\nSELECT\n1"]);
        assert!(!splitter.pending());
        splitter.push_line("SELECT 'x");
        assert!(splitter.pending());
    }

    #[test]
    fn renders_like_psql() {
        let columns = vec![
            Header { name: "id".into(), numeric: true },
            Header { name: "balance".into(), numeric: true },
            Header { name: "owner".into(), numeric: false },
        ];
        let rows = vec![
            vec![Some("1".into()), Some("75".into()), Some("ann".into())],
            vec![Some("2".into()), None, Some("line\nbreak".into())],
        ];
        assert_eq!(
            render_table(&columns, &rows),
            " id | balance |    owner\n\
             ----+---------+-------------\n  \
             1 |      75 | ann\n  \
             2 |    NULL | line\\nbreak\n\
             (2 rows)\n\n"
        );
        let one = render_table(&[Header { name: "count".into(), numeric: true }], &[vec![Some("7".into())]]);
        assert_eq!(one, " count\n-------\n     7\n(1 row)\n\n");
        let none = render_table(&[Header { name: "x".into(), numeric: false }], &[]);
        assert_eq!(none, " x\n---\n(0 rows)\n\n");
    }

    #[test]
    fn command_tags_are_rebuilt_from_the_statement() {
        assert_eq!(command_tag("insert into t values (1)", 3), "INSERT 0 3");
        assert_eq!(command_tag("-- why\n/* how */ UPSERT INTO t VALUES (1)", 1), "INSERT 0 1");
        assert_eq!(command_tag("UPDATE t SET v = 1", 2), "UPDATE 2");
        assert_eq!(command_tag("delete from t", 0), "DELETE 0");
        assert_eq!(command_tag("create table t (id int primary key)", 0), "CREATE TABLE");
        assert_eq!(command_tag("DROP TABLE t", 0), "DROP TABLE");
        assert_eq!(command_tag("START TRANSACTION READ ONLY", 0), "BEGIN");
        assert_eq!(command_tag("end", 0), "COMMIT");
        assert_eq!(command_tag("abort", 0), "ROLLBACK");
        assert_eq!(command_tag("set x = 1", 0), "SET");
    }

    #[test]
    fn the_remote_transaction_state_follows_postgres() {
        use TxnStatus::*;
        assert_eq!(next_txn_status(Idle, Verb::Begin, true), InTransaction);
        assert_eq!(next_txn_status(Idle, Verb::Other, false), Idle);
        assert_eq!(next_txn_status(InTransaction, Verb::Other, true), InTransaction);
        assert_eq!(next_txn_status(InTransaction, Verb::Other, false), Failed);
        assert_eq!(next_txn_status(Failed, Verb::Other, false), Failed);
        assert_eq!(next_txn_status(Failed, Verb::End, true), Idle);
        assert_eq!(next_txn_status(InTransaction, Verb::End, false), Idle, "a failed COMMIT still ends it");
        assert_eq!(verb("  begin;"), Verb::Begin);
        assert_eq!(verb("Rollback"), Verb::End);
    }

    #[test]
    fn numeric_columns_are_right_aligned() {
        assert!(all_numeric([Some("1"), None, Some("-2.5e3")].into_iter()));
        assert!(!all_numeric([Some("1"), Some("x")].into_iter()));
        assert!(!all_numeric([None, None].into_iter()));
        assert!(!all_numeric(std::iter::empty()));
    }
}
