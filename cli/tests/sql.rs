//! `meridian sql` end to end: the real binary against `meridian_pg::serve` on loopback (over an
//! in-memory store, so no cluster is needed) and in `--local` mode. Both must print the same.

use std::sync::Arc;
use std::time::Duration;

use meridian_tests::process::{Output, run_sql};

const BIN: &str = env!("CARGO_BIN_EXE_meridian");
/// Longest one `meridian sql` run may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `meridian sql ARGS` with `stdin`, killing it after [`RUN_TIMEOUT`].
fn meridian_sql(args: &[&str], stdin: &str) -> Output {
    run_sql(BIN.as_ref(), args, stdin, RUN_TIMEOUT)
}

/// A PostgreSQL-protocol server over `MemKv` on loopback, running until the runtime is dropped.
fn pg_server() -> (tokio::runtime::Runtime, String) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let store = Arc::new(meridian_sql::MemKv::new());
    rt.spawn(meridian_pg::serve(listener, store, meridian_pg::PgOptions::default(), std::future::pending()));
    (rt, addr)
}

const BANK: &str = "CREATE TABLE accounts (id INT PRIMARY KEY, balance INT, owner TEXT); \
                    INSERT INTO accounts VALUES (1, 100, 'ann'), (2, 100, 'bob');";
const TRANSFER: &str = "BEGIN; UPDATE accounts SET balance = balance - 30 WHERE id = 1; \
                        UPDATE accounts SET balance = balance + 30 WHERE id = 2; COMMIT; \
                        SELECT id, balance, owner FROM accounts ORDER BY id";
const EXPECTED: &str = "\
CREATE TABLE
INSERT 0 2
BEGIN
UPDATE 1
UPDATE 1
COMMIT
 id | balance | owner
----+---------+-------
  1 |      70 | ann
  2 |     130 | bob
(2 rows)

";

#[test]
fn remote_and_local_print_the_same() {
    let (_rt, addr) = pg_server();
    let remote = meridian_sql(&["--addr", &addr, "-e", BANK, "-e", TRANSFER], "");
    assert_eq!(remote.code, Some(0), "{}", remote.stderr);
    assert_eq!(remote.stdout, EXPECTED);
    let local = meridian_sql(&["--local", "-e", BANK, "-e", TRANSFER], "");
    assert_eq!(local.code, Some(0), "{}", local.stderr);
    assert_eq!(local.stdout, EXPECTED);
}

#[test]
fn errors_are_one_line_and_on_error_stop_stops_non_interactive_input() {
    let (_rt, addr) = pg_server();
    let url = format!("postgresql://tester@{addr}/meridian");
    for args in [vec!["--url", url.as_str()], vec!["--local"]] {
        let mut all = args.clone();
        all.extend(["--on-error-stop", "-e", "SELECT * FROM missing", "-e", "SELECT 1"]);
        let run = meridian_sql(&all, "");
        assert_eq!(run.code, Some(3), "{args:?}: {}", run.stderr);
        assert_eq!(run.stdout, "", "{args:?}: nothing after the error runs");
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: {}", run.stderr);
        assert!(lines[0].starts_with("ERROR: ") && lines[0].ends_with("(SQLSTATE 42P01)"), "{}", lines[0]);
    }

    // An error inside a transaction, from a script on stdin: the statement after it is refused
    // (25P02) and the COMMIT rolls back, on both backends, unless --on-error-stop stops at it.
    let script = "CREATE TABLE t (id INT PRIMARY KEY);\nBEGIN;\nINSERT INTO t VALUES (1);\n\
                  INSERT INTO t VALUES (1);\nINSERT INTO t VALUES (2);\nCOMMIT;\n";
    for args in [vec!["--addr", addr.as_str()], vec!["--local"]] {
        let run = meridian_sql(&args, script);
        assert_eq!(run.code, Some(0), "{args:?}: {}", run.stderr);
        assert_eq!(run.stdout, "CREATE TABLE\nBEGIN\nINSERT 0 1\nROLLBACK\n", "{args:?}");
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 2, "{args:?}: {}", run.stderr);
        assert!(lines[0].ends_with("(SQLSTATE 23505)") && lines[1].ends_with("(SQLSTATE 25P02)"), "{lines:?}");

        let mut stop = args.clone();
        stop.push("--on-error-stop");
        let run = meridian_sql(&stop, script.replace("TABLE t", "TABLE u").replace("INTO t", "INTO u").as_str());
        assert_eq!(run.code, Some(3), "{args:?}: {}", run.stderr);
        assert_eq!(run.stdout, "CREATE TABLE\nBEGIN\nINSERT 0 1\n", "{args:?}");
        assert!(run.stderr.contains("(SQLSTATE 23505)"), "{}", run.stderr);
    }
}

#[test]
fn stdin_files_and_commands() {
    let (_rt, addr) = pg_server();
    let script = "\
-- a script with a statement over several lines, a command, and no final ';'
CREATE TABLE t (id INT PRIMARY KEY, note TEXT);
INSERT INTO t VALUES
  (1, 'one; with a semicolon'),
  (2, NULL);
\\dt
\\d t
SELECT count(*) FROM t
";
    let expected = "\
CREATE TABLE
INSERT 0 2
 table_name
------------
 t
(1 row)

 column_name | data_type | nullable | primary_key
-------------+-----------+----------+-------------
 id          | INT       | f        |           1
 note        | TEXT      | t        |        NULL
(2 rows)

 count
-------
     2
(1 row)

";
    let remote = meridian_sql(&["--addr", &addr], script);
    assert_eq!((remote.code, remote.stderr.as_str()), (Some(0), ""));
    assert_eq!(remote.stdout, expected);

    let dir = std::env::temp_dir().join(format!("meridian-sql-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("script.sql");
    std::fs::write(&file, script).unwrap();
    let local = meridian_sql(&["--local", file.to_str().unwrap()], "");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!((local.code, local.stderr.as_str()), (Some(0), ""));
    assert_eq!(local.stdout, expected);

    let timed = meridian_sql(&["--local", "-e", "\\timing on", "-e", "SELECT 1"], "");
    assert!(timed.stdout.starts_with("Timing is on.\n"), "{}", timed.stdout);
    assert!(timed.stdout.contains("Time: ") && timed.stdout.contains("(timestamp "), "{}", timed.stdout);
}
