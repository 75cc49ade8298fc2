//! `tokio-postgres` against `meridian_pg::serve` over `MemKv`: what a real driver sees.

mod common;

use common::TestServer;
use tokio_postgres::SimpleQueryMessage;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

const CREATE_ALL_TYPES: &str = "CREATE TABLE all_types (id INT PRIMARY KEY, f FLOAT, b BOOL, t TEXT, y BYTEA)";

fn rows(messages: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some((0..row.len()).map(|i| row.get(i).map(str::to_string)).collect()),
            _ => None,
        })
        .collect()
}

fn counts(messages: &[SimpleQueryMessage]) -> Vec<u64> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn simple_query_with_several_statements_returns_each_result() {
    let server = TestServer::start().await;
    let client = server.connect().await;
    let out = client
        .simple_query(
            "CREATE TABLE t (id INT PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, NULL); \
             SELECT id, v FROM t ORDER BY id; UPDATE t SET v = 'z' WHERE id >= 2",
        )
        .await
        .unwrap();
    assert_eq!(counts(&out), vec![0, 3, 3, 2]);
    assert_eq!(
        rows(&out),
        vec![
            vec![Some("1".into()), Some("a".into())],
            vec![Some("2".into()), Some("b".into())],
            vec![Some("3".into()), None]
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn every_type_round_trips_in_text_and_binary() {
    let server = TestServer::start().await;
    let client = server.connect().await;
    client.batch_execute(CREATE_ALL_TYPES).await.unwrap();
    client
        .batch_execute(
            "INSERT INTO all_types VALUES (1, 1.5, TRUE, 'héllo', x'00ff'), (2, -0.25, FALSE, '', x''), \
             (3, NULL, NULL, NULL, NULL), (-9223372036854775808, 1e300, TRUE, 'it''s', x'0a')",
        )
        .await
        .unwrap();

    // Extended protocol: tokio-postgres asks for binary results.
    let got = client.query("SELECT id, f, b, t, y FROM all_types ORDER BY id", &[]).await.unwrap();
    let types: Vec<Type> = got[0].columns().iter().map(|c| c.type_().clone()).collect();
    assert_eq!(types, vec![Type::INT8, Type::FLOAT8, Type::BOOL, Type::TEXT, Type::BYTEA]);
    type Decoded = (i64, Option<f64>, Option<bool>, Option<String>, Option<Vec<u8>>);
    let decoded: Vec<Decoded> = got.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))).collect();
    assert_eq!(
        decoded,
        vec![
            (i64::MIN, Some(1e300), Some(true), Some("it's".into()), Some(vec![10])),
            (1, Some(1.5), Some(true), Some("héllo".into()), Some(vec![0, 255])),
            (2, Some(-0.25), Some(false), Some(String::new()), Some(vec![])),
            (3, None, None, None, None),
        ]
    );

    // Simple protocol: PostgreSQL's text formats.
    let out = client.simple_query("SELECT id, f, b, t, y FROM all_types WHERE id = 1").await.unwrap();
    assert_eq!(
        rows(&out),
        vec![vec![
            Some("1".into()),
            Some("1.5".into()),
            Some("t".into()),
            Some("héllo".into()),
            Some("\\x00ff".into())
        ]]
    );
    server.stop().await;
}

#[tokio::test]
async fn prepared_statements_take_parameters() {
    let server = TestServer::start().await;
    let client = server.connect().await;
    client.batch_execute(CREATE_ALL_TYPES).await.unwrap();

    let insert = client.prepare("INSERT INTO all_types (id, f, b, t, y) VALUES ($1, $2, $3, $4, $5)").await.unwrap();
    assert_eq!(insert.params(), &[Type::INT8, Type::FLOAT8, Type::BOOL, Type::TEXT, Type::BYTEA]);
    assert!(insert.columns().is_empty());
    for i in 0..5i64 {
        let n = client
            .execute(&insert, &[&i, &(i as f64 / 2.0), &(i % 2 == 0), &format!("row {i}"), &vec![i as u8; 3]])
            .await
            .unwrap();
        assert_eq!(n, 1);
    }
    let null_text: Option<&str> = None;
    client.execute(&insert, &[&10i64, &None::<f64>, &None::<bool>, &null_text, &None::<Vec<u8>>]).await.unwrap();

    let select = client.prepare("SELECT t, y FROM all_types WHERE id >= $1 AND id < $2 ORDER BY id").await.unwrap();
    assert_eq!(select.params(), &[Type::INT8, Type::INT8]);
    let got = client.query(&select, &[&1i64, &3i64]).await.unwrap();
    let texts: Vec<String> = got.iter().map(|r| r.get(0)).collect();
    assert_eq!(texts, vec!["row 1", "row 2"]);
    let bytes: Vec<u8> = got[1].get(1);
    assert_eq!(bytes, vec![2, 2, 2]);

    // A driver may declare narrower types; they widen.
    let typed = client.prepare_typed("SELECT count(*) FROM all_types WHERE id < $1", &[Type::INT4]).await.unwrap();
    let count: i64 = client.query_one(&typed, &[&4i32]).await.unwrap().get(0);
    assert_eq!(count, 4);

    // A prepared statement runs many times, and one with no rows still describes its columns.
    let empty = client.query(&select, &[&100i64, &200i64]).await.unwrap();
    assert!(empty.is_empty());
    let updated = client.execute("UPDATE all_types SET f = f + $1 WHERE id = $2", &[&1.0f64, &10i64]).await.unwrap();
    assert_eq!(updated, 1);
    server.stop().await;
}

#[tokio::test]
async fn transactions_commit_and_roll_back() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    client.batch_execute("CREATE TABLE accounts (id INT PRIMARY KEY, balance INT)").await.unwrap();
    client.batch_execute("INSERT INTO accounts VALUES (1, 100), (2, 100)").await.unwrap();

    let txn = client.transaction().await.unwrap();
    txn.execute("UPDATE accounts SET balance = balance - $1 WHERE id = 1", &[&30i64]).await.unwrap();
    txn.execute("UPDATE accounts SET balance = balance + $1 WHERE id = 2", &[&30i64]).await.unwrap();
    txn.commit().await.unwrap();

    let txn = client.transaction().await.unwrap();
    txn.execute("DELETE FROM accounts WHERE id = 1", &[]).await.unwrap();
    txn.rollback().await.unwrap();

    let got = client.query("SELECT id, balance FROM accounts ORDER BY id", &[]).await.unwrap();
    let got: Vec<(i64, i64)> = got.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, vec![(1, 70), (2, 130)]);
    let sum: i64 = client.query_one("SELECT SUM(balance) FROM accounts", &[]).await.unwrap().get(0);
    assert_eq!(sum, 200);
    server.stop().await;
}

#[tokio::test]
async fn errors_carry_their_sqlstate() {
    let server = TestServer::start().await;
    let client = server.connect().await;
    client.batch_execute("CREATE TABLE t (id INT PRIMARY KEY)").await.unwrap();
    client.batch_execute("INSERT INTO t VALUES (1)").await.unwrap();

    let dup = client.batch_execute("INSERT INTO t VALUES (1)").await.unwrap_err();
    assert_eq!(dup.code(), Some(&SqlState::UNIQUE_VIOLATION), "{dup:?}");
    let dup = client.execute("INSERT INTO t VALUES ($1)", &[&1i64]).await.unwrap_err();
    assert_eq!(dup.code(), Some(&SqlState::UNIQUE_VIOLATION), "{dup:?}");

    let syntax = client.batch_execute("SELEC 1").await.unwrap_err();
    assert_eq!(syntax.code(), Some(&SqlState::SYNTAX_ERROR), "{syntax:?}");
    let db = syntax.as_db_error().expect("a database error");
    assert!(db.position().is_some(), "a syntax error has a position: {db:?}");

    let missing = client.batch_execute("SELECT * FROM nope").await.unwrap_err();
    assert_eq!(missing.code(), Some(&SqlState::UNDEFINED_TABLE), "{missing:?}");
    // At Parse time, as in PostgreSQL.
    let missing = client.prepare("SELECT * FROM nope WHERE id = $1").await.unwrap_err();
    assert_eq!(missing.code(), Some(&SqlState::UNDEFINED_TABLE), "{missing:?}");

    let mismatch = client.batch_execute("INSERT INTO t VALUES ('one')").await.unwrap_err();
    let code = mismatch.code().expect("a type mismatch is a database error").code();
    assert!(code.starts_with("22") || code.starts_with("42"), "{mismatch:?}");

    // The connection is still good.
    let n: i64 = client.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(n, 1);
    server.stop().await;
}

#[tokio::test]
async fn a_failed_transaction_refuses_statements_until_rollback() {
    let server = TestServer::start().await;
    let client = server.connect().await;
    client.batch_execute("CREATE TABLE t (id INT PRIMARY KEY)").await.unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    client.batch_execute("INSERT INTO t VALUES (1)").await.unwrap();
    assert!(client.batch_execute("INSERT INTO t VALUES (1)").await.is_err());
    let aborted = client.batch_execute("SELECT * FROM t").await.unwrap_err();
    assert_eq!(aborted.code(), Some(&SqlState::IN_FAILED_SQL_TRANSACTION), "{aborted:?}");
    let aborted = client.query("SELECT * FROM t WHERE id = $1", &[&1i64]).await.unwrap_err();
    assert_eq!(aborted.code(), Some(&SqlState::IN_FAILED_SQL_TRANSACTION), "{aborted:?}");
    client.batch_execute("ROLLBACK").await.unwrap();
    let n: i64 = client.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(n, 0, "the failed transaction's insert was rolled back");
    server.stop().await;
}

#[tokio::test]
async fn conflicting_transactions_get_40001() {
    let server = TestServer::start().await;
    let a = server.connect().await;
    let b = server.connect().await;
    a.batch_execute("CREATE TABLE t (id INT PRIMARY KEY, v INT)").await.unwrap();
    a.batch_execute("INSERT INTO t VALUES (1, 0)").await.unwrap();
    a.batch_execute("BEGIN").await.unwrap();
    b.batch_execute("BEGIN").await.unwrap();
    let va: i64 = a.query_one("SELECT v FROM t WHERE id = 1", &[]).await.unwrap().get(0);
    let vb: i64 = b.query_one("SELECT v FROM t WHERE id = 1", &[]).await.unwrap().get(0);
    a.execute("UPDATE t SET v = $1 WHERE id = 1", &[&(va + 1)]).await.unwrap();
    b.execute("UPDATE t SET v = $1 WHERE id = 1", &[&(vb + 1)]).await.unwrap();
    a.batch_execute("COMMIT").await.unwrap();
    let conflict = b.batch_execute("COMMIT").await.unwrap_err();
    assert_eq!(conflict.code(), Some(&SqlState::T_R_SERIALIZATION_FAILURE), "{conflict:?}");
    // The session is usable again and the lost update did not happen.
    let v: i64 = b.query_one("SELECT v FROM t WHERE id = 1", &[]).await.unwrap().get(0);
    assert_eq!(v, 1);
    server.stop().await;
}

#[tokio::test]
async fn the_connection_limit_is_enforced_and_released() {
    let opts = meridian_pg::PgOptions { connections_max: 2, ..Default::default() };
    let server = TestServer::start_with(opts).await;
    let first = server.connect().await;
    let second = server.connect().await;
    let refused = server.try_connect().await.expect_err("a third connection is refused");
    assert_eq!(refused.code(), Some(&SqlState::TOO_MANY_CONNECTIONS), "{refused:?}");
    first.simple_query("SELECT 1").await.unwrap();
    drop(first);
    // The permit returns when the server notices the close: poll with a deadline.
    let deadline = tokio::time::Instant::now() + common::WAIT;
    let third = loop {
        match server.try_connect().await {
            Ok(c) => break c,
            Err(e) if tokio::time::Instant::now() < deadline => {
                assert_eq!(e.code(), Some(&SqlState::TOO_MANY_CONNECTIONS), "{e:?}");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("no connection slot freed up: {e:?}"),
        }
    };
    third.simple_query("SELECT 1").await.unwrap();
    second.simple_query("SELECT 1").await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn shutdown_ends_open_connections() {
    let server = TestServer::start().await;
    let client = server.connect().await;
    client.batch_execute("BEGIN").await.unwrap();
    server.stop().await;
    assert!(client.simple_query("SELECT 1").await.is_err());
}

#[tokio::test]
async fn portals_return_rows_in_batches() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    client.batch_execute("CREATE TABLE t (id INT PRIMARY KEY)").await.unwrap();
    client.batch_execute("INSERT INTO t VALUES (1), (2), (3), (4), (5)").await.unwrap();
    let txn = client.transaction().await.unwrap();
    let portal = txn.bind("SELECT id FROM t WHERE id > $1 ORDER BY id", &[&0i64]).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..10 {
        let batch = txn.query_portal(&portal, 2).await.unwrap();
        if batch.is_empty() {
            break;
        }
        assert!(batch.len() <= 2);
        seen.extend(batch.iter().map(|r| r.get::<_, i64>(0)));
    }
    assert_eq!(seen, vec![1, 2, 3, 4, 5]);
    txn.commit().await.unwrap();
    server.stop().await;
}
