//! No statement can crash a node (issue 17): long flat operator chains, deep nesting and very wide
//! statements through parse, bind, plan and evaluation, on threads with the stack a node really
//! runs statements on ([`SERVER_STACK_BYTES`], a tokio worker's).
//!
//! - Every statement one past a bound of `meridian_sql::bounds` (or far past it, as the issue's
//!   2,000- and 20,000-term statements are) is refused with `54000`, on the server's stack.
//! - Every statement *at* the bounds runs, and gives the right answer, on a thread with a quarter
//!   of the server's stack: the margin the bounds were chosen with.
//!
//! A stack overflow is not a panic: it aborts the whole process. So the statements run in a child
//! process (this test binary again, with [`CHILD_ENV`] set), which prints each shape's name before
//! running it; the parent fails naming the shape the child died in.

use std::process::Command;
use std::sync::Arc;

use futures::executor::block_on;
use meridian_sql::bounds::{EXPR_DEPTH_MAX, LIST_ITEMS_MAX, SERVER_STACK_BYTES, STATEMENT_TOKENS_MAX};
use meridian_sql::{MemKv, QueryResult, ResultKind, Session, SqlState, Value};

/// Set in the child process: run the shapes instead of spawning.
const CHILD_ENV: &str = "MERIDIAN_STACK_TEST_CHILD";
/// What the child prints (on stderr) before each shape, and once all are done.
const SHAPE_MARK: &str = "stack-test shape: ";
const DONE_MARK: &str = "stack-test: all shapes done";
/// The stack the at-the-bounds statements run on: the margin they must leave.
const MARGIN_STACK_BYTES: usize = SERVER_STACK_BYTES / 4;

/// What a shape must give.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// `54000`, with a message naming the limit.
    Refused,
    /// Success; for a one-row, one-column result, this value.
    Ok(Option<i64>),
    /// A clean error with this SQLSTATE (a feature Meridian does not have, a type error).
    Error(SqlState),
}

struct Shape {
    name: &'static str,
    sql: String,
    want: Want,
    /// Run through the extended protocol's `describe` as well.
    describe: bool,
}

fn shape(name: &'static str, sql: String, want: Want) -> Shape {
    Shape { name, sql, want, describe: true }
}

/// `first sep item(1) sep item(2) …`, `n` items in all.
fn chain(first: &str, sep: &str, n: usize, item: impl Fn(usize) -> String) -> String {
    let mut s = String::from(first);
    for i in 1..n {
        s.push_str(sep);
        s.push_str(&item(i));
    }
    s
}

fn list(n: usize, item: impl Fn(usize) -> String) -> String {
    (0..n).map(item).collect::<Vec<_>>().join(", ")
}

/// Statements past the bounds: refused on the server's stack.
fn over_the_bounds() -> Vec<Shape> {
    let far = 20_000;
    let refused = Want::Refused;
    vec![
        // The statements: 2,000 and 20,000 terms.
        shape("2,000-term + chain", format!("SELECT {}", chain("1", " + ", 2_000, |_| "1".into())), refused),
        shape("20,000-term + chain", format!("SELECT {}", chain("1", " + ", far, |_| "1".into())), refused),
        shape(
            "20,000-term OR chain",
            format!("SELECT id FROM t WHERE {}", chain("id = 0", " OR ", far, |i| format!("id = {i}"))),
            refused,
        ),
        shape(
            "20,000-term AND chain",
            format!("SELECT id FROM t WHERE {}", chain("id >= 0", " AND ", far, |i| format!("id >= -{i}"))),
            refused,
        ),
        shape("20,000-term || chain", format!("SELECT {}", chain("'a'", " || ", far, |_| "'a'".into())), refused),
        shape("20,000-term comparison chain", format!("SELECT {}", chain("1", " < ", far, |_| "1".into())), refused),
        shape("20,000 casts", format!("SELECT 1{}", "::INT".repeat(far)), refused),
        shape("20,000 IS NULLs", format!("SELECT 1{}", " IS NULL".repeat(far)), refused),
        shape("20,000 unary minuses", format!("SELECT {}1", "- ".repeat(far)), refused),
        shape("20,000 NOTs", format!("SELECT {}TRUE", "NOT ".repeat(far)), refused),
        shape("20,000 parentheses", format!("SELECT {}1{}", "(".repeat(far), ")".repeat(far)), refused),
        shape(
            "one past the depth bound",
            format!("SELECT {}", chain("1", " + ", EXPR_DEPTH_MAX + 1, |_| "1".into())),
            refused,
        ),
        shape(
            "chains inside parentheses past the bound",
            format!("SELECT {}", nested_chains(EXPR_DEPTH_MAX / 20 + 1, 20)),
            refused,
        ),
        shape(
            "a deep chain in a CASE",
            format!("SELECT CASE WHEN {} THEN 1 END", chain("1 = 1", " AND ", far, |_| "1 = 1".into())),
            refused,
        ),
        shape(
            "IN list one past the list bound",
            format!("SELECT id FROM t WHERE id IN ({})", list(LIST_ITEMS_MAX + 1, |i| i.to_string())),
            refused,
        ),
        shape(
            "select list one past the list bound",
            format!("SELECT {}", list(LIST_ITEMS_MAX + 1, |_| "1".into())),
            refused,
        ),
        shape(
            "VALUES one row past the list bound",
            format!("INSERT INTO t VALUES {}", list(LIST_ITEMS_MAX + 1, |i| format!("({i}, 'v')"))),
            refused,
        ),
        shape(
            "CASE one branch past the list bound",
            format!(
                "SELECT CASE {} END",
                chain("WHEN id = 0 THEN 0", " ", LIST_ITEMS_MAX / 2 + 1, |i| format!("WHEN id = {i} THEN {i}"))
            ),
            refused,
        ),
        // Rows of 12 tokens (`(i, 1, 1, 1, 1)` and a comma), fewer than the list bound allows.
        shape(
            "a statement one past the token bound",
            format!("INSERT INTO w VALUES {}", list(STATEMENT_TOKENS_MAX / 12 + 1, |i| format!("({i}, 1, 1, 1, 1)"))),
            refused,
        ),
    ]
}

/// `depth` levels of parentheses, each holding a chain of `ops` additions around the next.
fn nested_chains(depth: usize, ops: usize) -> String {
    let mut s = String::from("1");
    for _ in 0..depth {
        s = format!("({s}{})", " + 1".repeat(ops));
    }
    s
}

/// Statements at the bounds: they run on a quarter of the server's stack.
fn at_the_bounds() -> Vec<Shape> {
    let n = EXPR_DEPTH_MAX;
    // `x = 0 OR … OR x = k` counts k ORs, one comparison and one: k + 2 levels.
    let or_terms = n - 1;
    vec![
        shape(
            "+ chain at the depth bound",
            format!("SELECT {}", chain("1", " + ", n, |_| "1".into())),
            Want::Ok(Some(n as i64)),
        ),
        shape(
            "+ chain over a column",
            format!("SELECT {} FROM t WHERE id = 1", chain("id", " + ", n, |_| "id".into())),
            Want::Ok(Some(n as i64)),
        ),
        shape(
            "OR chain at the depth bound",
            format!("SELECT COUNT(*) FROM t WHERE {}", chain("id = 0", " OR ", or_terms, |i| format!("id = {i}"))),
            Want::Ok(Some(3)),
        ),
        shape(
            "AND chain at the depth bound",
            format!(
                "SELECT COUNT(*) FROM t WHERE {}",
                chain("id >= 0", " AND ", or_terms, |i| format!("id <= {}", i + 3))
            ),
            Want::Ok(Some(3)),
        ),
        shape(
            "|| chain at the depth bound",
            format!("SELECT {}", chain("'a'", " || ", n, |_| "'a'".into())),
            Want::Ok(None),
        ),
        shape(
            "comparison chain at the depth bound",
            format!("SELECT {}", chain("1 < 2", " = ", n - 2, |_| "TRUE".into())),
            Want::Ok(None),
        ),
        shape("casts at the depth bound", format!("SELECT 1{}", "::INT".repeat(n - 1)), Want::Ok(Some(1))),
        shape(
            "chains inside parentheses at the bound",
            format!("SELECT {}", nested_chains(n / 22, 20)),
            Want::Ok(Some(1 + 20 * (n / 22) as i64)),
        ),
        shape(
            "a deep GROUP BY expression",
            format!(
                "SELECT {e}, COUNT(*) FROM t GROUP BY {e} ORDER BY 1 LIMIT 1",
                e = chain("id", " + ", n / 2, |_| "1".into())
            ),
            Want::Ok(None),
        ),
        shape(
            "an aggregate in a deep chain",
            format!("SELECT {} FROM t", chain("SUM(id)", " + ", n - 2, |_| "1".into())),
            Want::Ok(Some(6 + (n - 3) as i64)),
        ),
        shape(
            "UPDATE with deep SET and WHERE",
            format!(
                "UPDATE t SET v = {} WHERE {}",
                chain("v", " || ", n - 1, |_| "''".into()),
                chain("id = 100", " OR ", or_terms, |i| format!("id = {}", 100 + i))
            ),
            Want::Ok(None),
        ),
        shape(
            "DELETE with a deep WHERE",
            format!("DELETE FROM t WHERE {}", chain("id = 100", " OR ", or_terms, |i| format!("id = {}", 100 + i))),
            Want::Ok(None),
        ),
        shape(
            "EXPLAIN of a deep SELECT",
            format!("EXPLAIN SELECT id FROM t WHERE {}", chain("id = 0", " OR ", or_terms, |i| format!("id = {i}"))),
            Want::Ok(None),
        ),
        shape(
            "a deep VALUES row",
            format!("INSERT INTO t VALUES ({}, 'deep')", chain("1000", " + ", n - 2, |_| "1".into())),
            Want::Ok(None),
        ),
        shape(
            "a deep CASE (not supported)",
            format!("SELECT CASE WHEN {} THEN 1 END", chain("1 = 1", " AND ", n - 3, |_| "1 = 1".into())),
            Want::Error(SqlState::FeatureNotSupported),
        ),
        shape(
            "a deep table function argument (not supported)",
            format!("SELECT * FROM t({})", chain("1", " + ", n - 3, |_| "1".into())),
            Want::Error(SqlState::FeatureNotSupported),
        ),
        shape(
            "a deep DEFAULT in CREATE TABLE (not supported)",
            format!("CREATE TABLE d (id INT PRIMARY KEY, v INT DEFAULT {})", chain("1", " + ", n - 8, |_| "1".into())),
            Want::Error(SqlState::FeatureNotSupported),
        ),
        shape(
            "a type error deep in a chain",
            format!("SELECT {} + 'x'::TEXT", chain("1", " + ", n - 3, |_| "1".into())),
            Want::Error(SqlState::DatatypeMismatch),
        ),
        shape(
            "IN list at the list bound",
            format!("SELECT COUNT(*) FROM t WHERE id IN ({})", list(LIST_ITEMS_MAX, |i| i.to_string())),
            Want::Ok(Some(3)),
        ),
        Shape {
            name: "select list at the list bound",
            sql: format!("SELECT {}", list(LIST_ITEMS_MAX, |_| "1".into())),
            want: Want::Ok(None),
            describe: false,
        },
        Shape {
            name: "VALUES at the list bound",
            sql: format!("INSERT INTO t VALUES {}", list(LIST_ITEMS_MAX, |i| format!("({}, 'v')", i + 4))),
            want: Want::Ok(None),
            describe: false,
        },
    ]
}

/// Runs `shape` in a fresh session (with table `t` holding ids 1–3, and `w` empty) on a thread
/// with `stack` bytes, and checks its outcome. Panics say what was wrong.
fn run_shape(shape: Shape, stack: usize) {
    let name = shape.name;
    let handle = std::thread::Builder::new()
        .name(format!("stack test: {name}"))
        .stack_size(stack)
        .spawn(move || {
            let store = Arc::new(MemKv::new());
            let mut session = Session::new(store);
            for setup in [
                "CREATE TABLE t (id INT PRIMARY KEY, v TEXT)",
                "INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')",
                "CREATE TABLE w (a INT PRIMARY KEY, b INT, c INT, d INT, e INT)",
            ] {
                let results = block_on(session.execute(setup));
                assert!(results.iter().all(Result::is_ok), "setup {setup}: {results:?}");
            }
            let check = |what: &str, result: Result<Option<Value>, meridian_sql::SqlError>| match (shape.want, result) {
                (Want::Refused, Err(e)) => {
                    assert_eq!(e.code, SqlState::ProgramLimitExceeded, "{name} ({what}): {e:?}");
                    assert!(
                        e.message.contains("the limit is") || e.message.contains("nested too deeply"),
                        "{name} ({what}): the message names the bound: {}",
                        e.message
                    );
                }
                (Want::Error(code), Err(e)) => assert_eq!(e.code, code, "{name} ({what}): {e:?}"),
                (Want::Ok(want), Ok(value)) => {
                    if let Some(want) = want {
                        assert_eq!(value, Some(Value::Int(want)), "{name} ({what})");
                    }
                }
                (Want::Ok(_), Err(e)) => panic!("{name} ({what}): expected success, got {e:?}"),
                (want, Ok(v)) => panic!("{name} ({what}): expected {want:?}, got success ({v:?})"),
            };
            if shape.describe {
                // Describe only reports errors the binder finds, not evaluation's.
                let described = block_on(session.describe(&shape.sql)).map(|_| None);
                if !matches!(shape.want, Want::Ok(_)) || described.is_err() {
                    check("describe", described);
                }
            }
            let mut results = block_on(session.execute(&shape.sql));
            assert_eq!(results.len(), 1, "{name}: one statement, one result");
            let result = results.pop().expect("one result").map(|r| match r {
                QueryResult { kind: ResultKind::Rows { rows, .. }, .. } if rows.len() == 1 && rows[0].len() == 1 => {
                    Some(rows[0][0].clone())
                }
                _ => None,
            });
            check("execute", result);
        })
        .expect("spawn a thread");
    if let Err(panic) = handle.join() {
        std::panic::resume_unwind(panic);
    }
}

fn child() {
    for (shapes, stack) in [(over_the_bounds(), SERVER_STACK_BYTES), (at_the_bounds(), MARGIN_STACK_BYTES)] {
        for shape in shapes {
            // On stderr, which is not buffered: the line must be out before a crash.
            eprintln!("{SHAPE_MARK}{} ({} bytes, on a {} KiB stack)", shape.name, shape.sql.len(), stack / 1024);
            run_shape(shape, stack);
        }
    }
    eprintln!("{DONE_MARK}");
}

#[test]
fn deep_and_wide_statements_are_refused_or_run_without_crashing_the_process() {
    if std::env::var_os(CHILD_ENV).is_some() {
        child();
        return;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let output = Command::new(exe)
        .args(["--exact", "deep_and_wide_statements_are_refused_or_run_without_crashing_the_process", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(CHILD_ENV, "1")
        .output()
        .expect("run the child test process");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last_shape = stderr.lines().rev().find_map(|l| l.strip_prefix(SHAPE_MARK)).unwrap_or("(none started)");
    let tail: String =
        stderr.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    let why = match output.status.code() {
        // 101: a failed assertion in the child, reported normally.
        Some(_) => "failed",
        None => "was killed by a signal (a stack overflow aborts the process: it would take a node down)",
    };
    assert!(
        output.status.success() && stderr.contains(DONE_MARK),
        "the child process {why} ({}) while running shape {last_shape:?}. Its stderr ends:\n{tail}",
        output.status
    );
}
