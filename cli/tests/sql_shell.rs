//! `meridian sql` on a script with an error in the middle, run by the real binary in `--local`
//! mode: by default it reports the error and goes on, like `psql -f`; with `--on-error-stop` it
//! stops there and exits with status 3, like `psql -v ON_ERROR_STOP=1`.

use std::process::Command;
use std::time::Duration;

use meridian_tests::process::{Output, run_sql};

const BIN: &str = env!("CARGO_BIN_EXE_meridian");
/// Longest one `meridian sql` run may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// A script whose third statement fails (a duplicate key).
const SCRIPT: &str = "\
CREATE TABLE t (id INT PRIMARY KEY);
INSERT INTO t VALUES (1);
INSERT INTO t VALUES (1);
INSERT INTO t VALUES (2);
SELECT count(*) FROM t;
";
/// What the statements before the error print.
const BEFORE_THE_ERROR: &str = "CREATE TABLE\nINSERT 0 1\n";
/// What the statements after the error print.
const AFTER_THE_ERROR: &str = "INSERT 0 1\n count\n-------\n     2\n(1 row)\n\n";

/// Runs `meridian sql --local ARGS` with `stdin`, killing it after [`RUN_TIMEOUT`].
fn local_sql(args: &[&str], stdin: &str) -> Output {
    let args: Vec<&str> = ["--local"].iter().chain(args).copied().collect();
    run_sql(BIN.as_ref(), &args, stdin, RUN_TIMEOUT)
}

/// The SQLSTATEs of the error lines on stderr, checking each is one `ERROR: … (SQLSTATE x)` line.
fn sqlstates(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .map(|line| {
            assert!(line.starts_with("ERROR: "), "not an error line: {line:?}");
            let (_, code) = line.rsplit_once("(SQLSTATE ").unwrap_or_else(|| panic!("no SQLSTATE: {line:?}"));
            code.trim_end_matches(')').to_string()
        })
        .collect()
}

/// The script as a file (`FILE`), as `-` (stdin) and piped without an argument.
fn each_input(test: impl Fn(&str, Output)) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("script.sql");
    std::fs::write(&file, SCRIPT).expect("write the script");
    let file = file.to_str().expect("a UTF-8 path");
    for (how, args, stdin) in [("file", vec![file], ""), ("-", vec!["-"], SCRIPT), ("piped", vec![], SCRIPT)] {
        test(how, local_sql(&args, stdin));
        test(&format!("{how} --on-error-stop"), {
            let mut stop = vec!["--on-error-stop"];
            stop.extend(&args);
            local_sql(&stop, stdin)
        });
    }
}

#[test]
fn a_script_goes_on_after_an_error_unless_on_error_stop() {
    each_input(|how, run| {
        assert_eq!(sqlstates(&run.stderr), vec!["23505"], "{how}: {run:?}");
        if how.ends_with("--on-error-stop") {
            assert_eq!(run.code, Some(3), "{how}: {run:?}");
            assert_eq!(run.stdout, BEFORE_THE_ERROR, "{how}: nothing after the error runs");
        } else {
            assert_eq!(run.code, Some(0), "{how}: like psql -f, errors in a script exit 0: {run:?}");
            assert_eq!(run.stdout, format!("{BEFORE_THE_ERROR}{AFTER_THE_ERROR}"), "{how}");
        }
    });
}

#[test]
fn after_an_error_in_a_transaction_statements_fail_until_it_ends() {
    let script = "\
CREATE TABLE t (id INT PRIMARY KEY);
BEGIN;
INSERT INTO t VALUES (1);
INSERT INTO t VALUES (1);
INSERT INTO t VALUES (2);
COMMIT;
\\nosuchcommand
SELECT count(*) FROM t;
";
    let run = local_sql(&[], script);
    assert_eq!(run.code, Some(0), "{run:?}");
    // The failed transaction's COMMIT rolls it back, as in PostgreSQL: nothing was inserted.
    assert_eq!(run.stdout, "CREATE TABLE\nBEGIN\nINSERT 0 1\nROLLBACK\n count\n-------\n     0\n(1 row)\n\n");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{run:?}");
    assert!(lines[0].ends_with("(SQLSTATE 23505)"), "{}", lines[0]);
    assert!(lines[1].ends_with("(SQLSTATE 25P02)"), "{}", lines[1]);
    assert_eq!(lines[2], "ERROR: unknown command \"\\\\nosuchcommand\"; try \\? for help");

    let stopped = local_sql(&["--on-error-stop"], script);
    assert_eq!(stopped.code, Some(3), "{stopped:?}");
    assert_eq!(stopped.stdout, "CREATE TABLE\nBEGIN\nINSERT 0 1\n");
    assert_eq!(sqlstates(&stopped.stderr), vec!["23505"]);
}

#[test]
fn execute_statements_go_on_and_exit_1_like_psql_c() {
    let args = ["-e", "SELECT * FROM missing", "-e", "SELECT 1 AS one"];
    let run = local_sql(&args, "");
    assert_eq!(run.code, Some(1), "{run:?}");
    assert_eq!(run.stdout, " one\n-----\n   1\n(1 row)\n\n");
    assert_eq!(sqlstates(&run.stderr), vec!["42P01"]);

    let stopped = local_sql(&[&["--on-error-stop"][..], &args].concat(), "");
    assert_eq!(stopped.code, Some(3), "{stopped:?}");
    assert_eq!(stopped.stdout, "", "nothing after the error runs");
    assert_eq!(sqlstates(&stopped.stderr), vec!["42P01"]);
}

#[test]
fn help_documents_on_error_stop() {
    let out = Command::new(BIN).args(["sql", "--help"]).output().expect("meridian sql --help");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{help}");
    assert!(help.contains("--on-error-stop") && help.contains("exit with status 3"), "{help}");
}
