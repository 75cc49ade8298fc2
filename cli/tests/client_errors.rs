//! What client commands say when something is wrong, with the real binary (issue 17): errors
//! known at once come at once and say what they are; retry loops say why they gave up; the
//! SQL shell survives its node's restart; the bank workload says why transfers failed and how
//! far `init` got; options go before or after the subcommand; secrets are never flag values;
//! a backup that cannot start leaves no directory behind.
//!
//! Every process is killed when its test ends; every wait is bounded.

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use meridian_tests::process::{NodeArgs, ProcessCluster, free_port, run_client, serial};

const BIN: &str = env!("CARGO_BIN_EXE_meridian");
/// Longest a CLI command may run (the client's own deadline is 30 s).
const TOOL_TIMEOUT: Duration = Duration::from_secs(90);
/// Longest the SQL shell may take to print a statement's result.
const SHELL_ANSWER_MAX: Duration = Duration::from_secs(60);

/// Runs `meridian ARGS` with no credentials or addresses from the test's environment; returns
/// (success, stdout + stderr).
fn cli(args: &[&str]) -> (bool, String) {
    cli_env(args, &[])
}

/// [`cli`] with the environment variables `env` set.
fn cli_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    run_client(BIN.as_ref(), args, env, TOOL_TIMEOUT)
}

#[test]
fn wrong_addresses_fail_at_once_saying_what_listens_there() {
    let _serial = serial();
    let args = NodeArgs { replication: 1, http: true, ..NodeArgs::default() };
    let cluster = ProcessCluster::start(BIN, 1, args).expect("start a node");
    let node = &cluster.nodes[0];
    let http_addr = node.http_addr.clone().expect("an HTTP port");
    let nothing = format!("127.0.0.1:{}", free_port());
    // The right address works (the node is up).
    let (ok, out) = cli(&["kv", "--addr", &node.addr, "put", "k", "v"]);
    assert!(ok, "{out}");

    for cmd in [&["status"][..], &["kv", "get", "k"], &["admin", "split", "m"], &["backup", "--out", "/nonexistent/b"]]
    {
        let run = |addr: &str| {
            let (ok, out) = cli(&[cmd, &["--addr", addr]].concat());
            assert!(!ok, "{cmd:?} at {addr} must fail: {out}");
            out
        };
        let out = run(&nothing);
        assert!(out.contains(&format!("nothing listens at {nothing} (connection refused)")), "{cmd:?}: {out}");
        assert!(!out.contains("gave up after"), "refused, not timed out: {out}");
        let out = run(&node.pg_addr);
        assert!(
            out.contains(&format!("{} is a PostgreSQL port", node.pg_addr)) && out.contains("--listen"),
            "{cmd:?} at the PostgreSQL port: {out}"
        );
        assert!(!out.contains("h2 protocol error"), "in words, not HTTP/2's: {out}");
        let out = run(&http_addr);
        assert!(
            out.contains(&format!("{http_addr} is an HTTP port")) && out.contains("--listen"),
            "{cmd:?} at the HTTP port: {out}"
        );
    }
    // `status` does not fall back to the node's own view when there is no node to ask.
    let (_, out) = cli(&["status", "--addr", &nothing]);
    assert!(!out.contains("showing"), "no fallback to a node that is not there: {out}");
}

#[test]
fn options_go_before_or_after_the_subcommand_and_the_token_is_never_a_flag() {
    let _serial = serial();
    let cluster = ProcessCluster::start(BIN, 1, NodeArgs { replication: 1, ..NodeArgs::default() }).expect("start");
    let addr = &cluster.nodes[0].addr;
    let (ok, out) = cli(&["kv", "put", "--addr", addr, "after", "1"]);
    assert!(ok, "--addr after the subcommand: {out}");
    let (ok, out) = cli(&["kv", "--addr", addr, "get", "after"]);
    assert!(ok && out.contains("1  (version"), "--addr before it: {out}");
    let (ok, out) = cli(&["admin", "split", "--addr", addr, "m"]);
    assert!(ok, "admin, --addr after: {out}");
    let (ok, out) = cli(&["workload", "bank", "init", "--addr", addr, "--accounts", "2", "--ranges", "1"]);
    assert!(ok, "workload, --addr after: {out}");
    // The token: a file or MERIDIAN_TOKEN, never a flag value (which `ps` shows).
    let (ok, out) = cli(&["kv", "--addr", addr, "--token", "s3cret", "get", "after"]);
    assert!(!ok && out.contains("unexpected argument '--token'"), "--token VALUE is refused: {out}");
    let (ok, out) = cli_env(&["kv", "--addr", addr, "get", "after"], &[("MERIDIAN_TOKEN", "s3cret")]);
    assert!(ok, "MERIDIAN_TOKEN still works (this node wants no token): {out}");
}

#[test]
fn a_scan_from_the_empty_key_starts_at_the_first_user_key() {
    let _serial = serial();
    let cluster = ProcessCluster::start(BIN, 3, NodeArgs::default()).expect("start cluster");
    let addr = &cluster.nodes[0].addr;
    for k in ["a", "m", "z"] {
        let (ok, out) = cli(&["kv", "--addr", addr, "put", k, &format!("v{k}")]);
        assert!(ok, "{out}");
    }
    for args in [&["scan", ""][..], &["scan"], &["scan", "", "n"]] {
        let (ok, out) = cli(&[&["kv", "--addr", addr][..], args].concat());
        assert!(ok, "kv {args:?}: {out}");
        assert!(out.contains("a\tva") && out.contains("m\tvm"), "kv {args:?} lists the keys: {out}");
    }
}

#[test]
fn a_backup_that_cannot_start_leaves_no_directory() {
    let dir = tempfile::tempdir().expect("tmp");
    let out_dir = dir.path().join("backup");
    let nothing = format!("127.0.0.1:{}", free_port());
    let (ok, out) = cli(&["backup", "--addr", &nothing, "--out", out_dir.to_str().expect("utf-8")]);
    assert!(!ok && out.contains("nothing listens"), "{out}");
    assert!(!out_dir.exists(), "the backup directory was created before the cluster answered: {out}");
}

#[test]
fn the_bank_workload_says_how_far_init_got_and_why_transfers_failed() {
    let _serial = serial();
    let cluster = ProcessCluster::start(BIN, 3, NodeArgs::default()).expect("start cluster");
    let addr = &cluster.nodes[0].addr;
    // Empty accounts: every transfer finds too little money and fails, for that reason.
    let (ok, out) =
        cli(&["workload", "bank", "--addr", addr, "init", "--accounts", "6", "--balance", "0", "--ranges", "3"]);
    assert!(ok, "{out}");
    assert!(out.contains("bank: writing 6 accounts"), "init says what it does first: {out}");
    assert!(out.contains("6/6 accounts written"), "and how far it got: {out}");
    assert!(out.contains("split at bank/acct/") && out.contains("(2/2,"), "and each split: {out}");
    let dir = tempfile::tempdir().expect("tmp");
    let history = dir.path().join("bank.jsonl");
    let history = history.to_str().expect("utf-8");
    let (ok, out) =
        cli(&["workload", "bank", "--addr", addr, "run", "--seconds", "2", "--workers", "2", "--history", history]);
    assert!(ok, "{out}");
    assert!(out.contains("transfers not acknowledged, by reason:"), "run groups the failures: {out}");
    assert!(out.contains("insufficient funds (nothing to move)"), "and names the reason: {out}");
    // The history keeps the reasons: `check` groups them again.
    let (ok, out) = cli(&["workload", "bank", "--addr", addr, "check", "--history", history]);
    assert!(ok && out.contains(" 0 violations"), "{out}");
    let failed = out.lines().find(|l| l.trim_start().starts_with("failed ")).unwrap_or_else(|| panic!("{out}"));
    assert!(failed.contains("insufficient funds"), "check names why they failed: {out}");
}

/// `meridian sql` on a pipe, fed a line at a time; its output lines arrive on a channel.
struct Shell {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Shell {
    fn start(pg_addr: &str) -> Shell {
        let mut child = Command::new(BIN)
            .args(["sql", "--addr", pg_addr])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn meridian sql");
        let (tx, lines) = mpsc::channel();
        for stream in [Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>, {
            Box::new(child.stderr.take().expect("stderr"))
        }] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let stdin = child.stdin.take().expect("stdin");
        Shell { child, stdin, lines }
    }

    /// Sends `sql`; returns every line up to the one containing `until` (bounded).
    fn run(&mut self, sql: &str, until: &str) -> Vec<String> {
        writeln!(self.stdin, "{sql}").expect("write to the shell");
        self.stdin.flush().expect("flush");
        let deadline = Instant::now() + SHELL_ANSWER_MAX;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let done = line.contains(until);
                    seen.push(line);
                    if done {
                        return seen;
                    }
                }
                Err(_) => panic!("no {until:?} after {sql:?} within {SHELL_ANSWER_MAX:?}; the shell printed {seen:?}"),
            }
        }
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_sql_shell_connects_again_after_its_node_restarts() {
    let _serial = serial();
    let mut cluster = ProcessCluster::start(BIN, 1, NodeArgs { replication: 1, ..NodeArgs::default() }).expect("start");
    let pg_addr = cluster.nodes[0].pg_addr.clone();
    let mut shell = Shell::start(&pg_addr);
    shell.run("SELECT 1 AS one;", "(1 row)");
    cluster.kill(0);
    cluster.restart(0).expect("restart the node");
    let seen = shell.run("SELECT 2 AS two;", "(1 row)");
    assert!(
        seen.iter().any(|l| l.contains(&format!("the connection to {pg_addr} was lost; connected again"))),
        "the shell says it reconnected, naming the address: {seen:?}"
    );
    assert!(!seen.iter().any(|l| l.starts_with("ERROR")), "the statement after the restart ran: {seen:?}");
    drop(shell);
    // Where nothing listens, the error names the address.
    let nothing = format!("127.0.0.1:{}", free_port());
    let (ok, out) = cli(&["sql", "--addr", &nothing, "-e", "SELECT 1"]);
    assert!(!ok && out.contains(&format!("PostgreSQL port at {nothing}")), "{out}");
}

#[test]
fn a_write_with_its_quorum_lost_gives_up_once_with_57p03_naming_the_range() {
    let _serial = serial();
    let mut cluster = ProcessCluster::start(BIN, 3, NodeArgs::default()).expect("start cluster");
    let rt = meridian_tests::process::rt();
    rt.block_on(async {
        let url = format!("postgresql://root@{}/meridian?sslmode=disable", cluster.nodes[0].pg_addr);
        let (pg, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect over pg");
        let conn = tokio::spawn(conn);
        // Every range replicated three times, so that two kills leave each without a quorum.
        let client = meridian_client::Client::connect(cluster.addrs()).await.expect("connect");
        meridian_tests::process::eventually(Duration::from_secs(90), "three replicas everywhere", || async {
            let (descs, _, _) = client.cluster_view().await.ok()?;
            descs.iter().all(|d| d.config.voters.len() == 3 && d.config.learners.is_empty()).then_some(())
        })
        .await;
        pg.batch_execute("CREATE TABLE t (id INT PRIMARY KEY, v INT); INSERT INTO t VALUES (1, 1)")
            .await
            .expect("create and insert");
        cluster.kill(1);
        cluster.kill(2);
        let started = Instant::now();
        let e = pg.batch_execute("INSERT INTO t VALUES (2, 2)").await.expect_err("no quorum");
        let took = started.elapsed();
        let db = e.as_db_error().unwrap_or_else(|| panic!("an error from the server, the connection is fine: {e}"));
        // Recorded for the README ("what a client sees when a quorum is lost"), not asserted.
        eprintln!("quorum lost: the INSERT failed after {took:?}: {} {}", db.code().code(), db.message());
        assert_eq!(db.code().code(), "57P03", "cannot serve now, not a connection failure: {}", db.message());
        let m = db.message();
        assert!(m.contains("gave up after 30s (the statement's deadline)"), "one deadline, the statement's: {m}");
        assert!(m.contains("1 of 3 replicas answered"), "names the range and how many replicas answered: {m}");
        assert!(m.contains("nothing listens"), "and why the others did not: {m}");
        // The connection is fine: the same session answers the next statement.
        assert!(pg.simple_query("SELECT 1").await.is_ok(), "the session survives");
        conn.abort();
    });
}
