//! String literals take the type their context expects (PostgreSQL's `unknown` type), and values
//! print the way PostgreSQL prints them.

use std::sync::Arc;

use futures::executor::block_on;
use meridian_sql::{MemKv, QueryResult, ResultKind, Session, SqlError, SqlState, Value};

fn session() -> Session {
    let mut s = Session::new(Arc::new(MemKv::new()));
    run(&mut s, "CREATE TABLE t (id INT PRIMARY KEY, n INT, f FLOAT, ok BOOL, b BYTES, s TEXT)").expect("create");
    s
}

/// Runs one statement.
fn run(s: &mut Session, sql: &str) -> Result<QueryResult, SqlError> {
    let mut results = block_on(s.execute(sql));
    assert_eq!(results.len(), 1, "{sql}: one statement, one result");
    results.pop().expect("one result")
}

fn rows(s: &mut Session, sql: &str) -> Vec<Vec<Value>> {
    match run(s, sql) {
        Ok(QueryResult { kind: ResultKind::Rows { rows, .. }, .. }) => rows,
        other => panic!("{sql}: expected rows, got {other:?}"),
    }
}

#[test]
fn string_literals_take_the_type_of_their_column() {
    let mut s = session();
    run(&mut s, r"INSERT INTO t VALUES ('1', '42', '1.5', 'yes', '\x00ff', 'text')").expect("insert");
    run(&mut s, "INSERT INTO t (id, b) VALUES (2, 'abc')").expect("insert bytes as text");
    assert_eq!(
        rows(&mut s, "SELECT * FROM t WHERE id = 1"),
        vec![vec![
            Value::Int(1),
            Value::Int(42),
            Value::Float(1.5),
            Value::Bool(true),
            Value::Bytes(vec![0, 255]),
            Value::Text("text".into())
        ]]
    );
    assert_eq!(rows(&mut s, "SELECT b FROM t WHERE id = 2"), vec![vec![Value::Bytes(b"abc".to_vec())]]);
    run(&mut s, "UPDATE t SET ok = 'off', n = '-7' WHERE id = '1'").expect("update");
    assert_eq!(rows(&mut s, "SELECT ok, n FROM t WHERE id = 1"), vec![vec![Value::Bool(false), Value::Int(-7)]]);
}

#[test]
fn string_literals_take_the_type_of_the_other_operand() {
    let mut s = session();
    run(&mut s, "INSERT INTO t (id, n, b) VALUES (1, 5, x'0a'), (2, 6, x'0b')").expect("insert");
    let ids = |s: &mut Session, sql: &str| -> Vec<Value> { rows(s, sql).into_iter().map(|r| r[0].clone()).collect() };
    assert_eq!(ids(&mut s, "SELECT id FROM t WHERE n = '5'"), vec![Value::Int(1)]);
    assert_eq!(ids(&mut s, "SELECT id FROM t WHERE '6' = n"), vec![Value::Int(2)], "either side");
    assert_eq!(ids(&mut s, r"SELECT id FROM t WHERE b IN ('\x0b', '\x0c')"), vec![Value::Int(2)]);
    assert_eq!(ids(&mut s, "SELECT id FROM t WHERE id BETWEEN '2' AND '9'"), vec![Value::Int(2)]);
    assert_eq!(ids(&mut s, "SELECT n + '1' FROM t WHERE id = 1"), vec![Value::Int(6)]);
    assert_eq!(ids(&mut s, "SELECT id FROM t LIMIT '1'"), vec![Value::Int(1)]);
    // With nothing to say otherwise, a string literal is TEXT.
    assert_eq!(ids(&mut s, "SELECT '5'"), vec![Value::Text("5".into())]);
    assert_eq!(ids(&mut s, "SELECT '5' || '6'"), vec![Value::Text("56".into())]);
    assert_eq!(ids(&mut s, "SELECT s FROM t WHERE s = '5'"), Vec::<Value>::new());
}

#[test]
fn string_literals_that_do_not_read_as_the_type_are_errors() {
    let mut s = session();
    for (sql, message) in [
        ("INSERT INTO t (id) VALUES ('one')", r#"invalid input syntax for type INT: "one""#),
        ("INSERT INTO t (id, ok) VALUES (1, 'maybe')", r#"invalid input syntax for type BOOL: "maybe""#),
        (r"INSERT INTO t (id, b) VALUES (1, '\x0')", r#"invalid input syntax for type BYTES: "\\x0""#),
        ("SELECT * FROM t WHERE n = '1.5'", r#"invalid input syntax for type INT: "1.5""#),
        ("INSERT INTO t (id) VALUES ('99999999999999999999')", r#"value "99999999999999999999" is out of range"#),
    ] {
        let e = run(&mut s, sql).expect_err(sql);
        assert!(
            matches!(e.code, SqlState::InvalidTextRepresentation | SqlState::NumericValueOutOfRange),
            "{sql}: {e:?}"
        );
        assert!(e.message.contains(message), "{sql}: {}", e.message);
    }
    // Other types still do not mix.
    let e = run(&mut s, "INSERT INTO t (id, n) VALUES (1, TRUE)").expect_err("bool into int");
    assert_eq!(e.code, SqlState::DatatypeMismatch);
    assert_eq!(rows(&mut s, "SELECT COUNT(*) FROM t"), vec![vec![Value::Int(0)]], "nothing was inserted");
}

#[test]
fn floats_print_like_postgres() {
    let mut s = session();
    let text = |s: &mut Session, sql: &str| rows(s, sql)[0][0].pg_text().expect("not NULL");
    assert_eq!(text(&mut s, "SELECT 1e300 * 10"), "1e+301");
    assert_eq!(text(&mut s, "SELECT 0.00001"), "1e-05");
    assert_eq!(text(&mut s, "SELECT 2.0"), "2");
    assert_eq!(text(&mut s, "SELECT CAST(1e20 AS TEXT)"), "1e+20");
    assert_eq!(text(&mut s, "SELECT CAST('-Infinity' AS FLOAT)"), "-Infinity");
}

#[test]
fn unsupported_features_are_refused_by_name() {
    let mut s = session();
    for (sql, message) in [
        ("SELECT DISTINCT n FROM t", "Meridian does not support SELECT DISTINCT"),
        ("CREATE TABLE u (id INT PRIMARY KEY, v INT DEFAULT 1)", "Meridian does not support DEFAULT values"),
        ("TRUNCATE t", "Meridian does not support TRUNCATE"),
        ("ALTER TABLE t ADD COLUMN z INT", "Meridian does not support ALTER TABLE"),
    ] {
        let e = run(&mut s, sql).expect_err(sql);
        assert_eq!(e.code, SqlState::FeatureNotSupported, "{sql}");
        assert_eq!(e.message, message, "{sql}");
    }
}
