//! The protocol byte by byte: command tags, type OIDs, ReadyForQuery status, text-format
//! parameters, SSL refusal, and broken input that must neither panic nor disturb other clients.

mod common;

use std::time::Duration;

use common::{Raw, TestServer, error_codes, message, startup_packet, status, tags};
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn command_tags_and_row_descriptions_are_postgres_shaped() {
    let server = TestServer::start().await;
    let mut raw = Raw::startup(server.addr).await;
    let out = raw
        .query(
            "CREATE TABLE t (id INT PRIMARY KEY, f FLOAT, b BOOL, s TEXT, y BYTES); \
             INSERT INTO t VALUES (1, 0.5, TRUE, 'x', x'01'), (2, 1, FALSE, 'y', x''), (3, NULL, NULL, NULL, NULL); \
             SELECT * FROM t; UPDATE t SET s = 'z' WHERE id < 3; DELETE FROM t WHERE id = 3; \
             BEGIN; COMMIT; ROLLBACK; DROP TABLE t",
        )
        .await;
    assert_eq!(
        tags(&out),
        vec![
            "CREATE TABLE",
            "INSERT 0 3",
            "SELECT 3",
            "UPDATE 2",
            "DELETE 1",
            "BEGIN",
            "COMMIT",
            "ROLLBACK",
            "DROP TABLE"
        ]
    );
    let desc = out.iter().find(|m| m.kind == b'T').expect("a RowDescription");
    assert_eq!(
        desc.columns(),
        vec![("id".into(), 20), ("f".into(), 701), ("b".into(), 16), ("s".into(), 25), ("y".into(), 17)]
    );
    let first = out.iter().find(|m| m.kind == b'D').expect("a DataRow");
    assert_eq!(
        first.values(),
        vec![Some("1".into()), Some("0.5".into()), Some("t".into()), Some("x".into()), Some("\\x01".into())]
    );
    assert_eq!(status(&out), b'I');

    // An empty query string, and one that is only a comment.
    for empty in ["", "  ;; ", "-- nothing"] {
        let out = raw.query(empty).await;
        assert_eq!(out.iter().map(|m| m.kind).collect::<Vec<_>>(), vec![b'I', b'Z'], "{empty:?}: {out:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn floats_are_sent_in_postgres_text_format() {
    let server = TestServer::start().await;
    let mut raw = Raw::startup(server.addr).await;
    let out = raw
        .query(
            "SELECT 2.0, CAST(7 AS FLOAT), 1e300 * 10, 1e15, 0.0001, 0.00001, 1.5e-7, -0.0 * 1.0, \
             CAST('Infinity' AS FLOAT), CAST('-Infinity' AS FLOAT), CAST('NaN' AS FLOAT)",
        )
        .await;
    let row = out.iter().find(|m| m.kind == b'D').expect("a DataRow");
    let want = ["2", "7", "1e+301", "1e+15", "0.0001", "1e-05", "1.5e-07", "-0", "Infinity", "-Infinity", "NaN"];
    assert_eq!(row.values(), want.map(|w| Some(w.to_string())).to_vec(), "{out:?}");
    server.stop().await;
}

#[tokio::test]
async fn ready_for_query_reports_the_transaction_status() {
    let server = TestServer::start().await;
    let mut raw = Raw::startup(server.addr).await;
    assert_eq!(status(&raw.query("CREATE TABLE t (id INT PRIMARY KEY)").await), b'I');
    assert_eq!(status(&raw.query("BEGIN").await), b'T');
    assert_eq!(status(&raw.query("INSERT INTO t VALUES (1)").await), b'T');
    let dup = raw.query("INSERT INTO t VALUES (1)").await;
    assert_eq!((error_codes(&dup), status(&dup)), (vec!["23505".to_string()], b'E'));
    let refused = raw.query("SELECT * FROM t").await;
    assert_eq!((error_codes(&refused), status(&refused)), (vec!["25P02".to_string()], b'E'));
    // COMMIT of a failed transaction rolls back, as in PostgreSQL.
    let commit = raw.query("COMMIT").await;
    assert_eq!((tags(&commit), status(&commit)), (vec!["ROLLBACK".to_string()], b'I'));

    // Statements after an error in one query string do not run.
    let out = raw.query("BEGIN; INSERT INTO t VALUES (2); SELEC; INSERT INTO t VALUES (3)").await;
    assert_eq!(error_codes(&out), vec!["42601"]);
    assert!(tags(&out).is_empty(), "a syntax error anywhere runs nothing: {out:?}");
    assert_eq!(status(&out), b'I');
    let out = raw.query("BEGIN; INSERT INTO t VALUES (2); INSERT INTO t VALUES (2); INSERT INTO t VALUES (3)").await;
    assert_eq!(tags(&out), vec!["BEGIN", "INSERT 0 1"]);
    assert_eq!((error_codes(&out), status(&out)), (vec!["23505".to_string()], b'E'));
    assert_eq!(status(&raw.query("ROLLBACK").await), b'I');
    let out = raw.query("SELECT count(*) FROM t").await;
    assert_eq!(
        out.iter().find(|m| m.kind == b'D').unwrap().values(),
        vec![Some("0".into())],
        "both transactions rolled back"
    );
    server.stop().await;
}

fn cstring(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// Parse / Bind (text parameters) / Describe portal / Execute / Sync, as pgbench's prepared mode
/// and psql's `\bind` send them.
#[tokio::test]
async fn extended_protocol_with_text_parameters() {
    let server = TestServer::start().await;
    let mut raw = Raw::startup(server.addr).await;
    raw.query("CREATE TABLE t (id INT PRIMARY KEY, v FLOAT, s TEXT)").await;

    let mut parse = cstring("ins");
    parse.extend(cstring("INSERT INTO t VALUES ($1, $2, $3)"));
    parse.extend(0i16.to_be_bytes());
    let mut bind = cstring("");
    bind.extend(cstring("ins"));
    bind.extend(0i16.to_be_bytes()); // all parameters in text
    bind.extend(3i16.to_be_bytes());
    for value in ["7", "2.5", "seven"] {
        bind.extend((value.len() as i32).to_be_bytes());
        bind.extend(value.as_bytes());
    }
    bind.extend(0i16.to_be_bytes()); // results in text
    let mut execute = cstring("");
    execute.extend(0i32.to_be_bytes());
    let mut bytes = message(b'P', &parse);
    bytes.extend(message(b'B', &bind));
    bytes.extend(message(b'E', &execute));
    bytes.extend(message(b'S', &[]));
    raw.write(&bytes).await;
    let out = raw.until_ready().await;
    assert_eq!(out.iter().map(|m| m.kind).collect::<Vec<_>>(), b"12CZ".to_vec(), "{out:?}");
    assert_eq!(tags(&out), vec!["INSERT 0 1"]);

    // A bad text parameter is an error, then everything up to Sync is skipped.
    let mut bad = cstring("");
    bad.extend(cstring("ins"));
    bad.extend(0i16.to_be_bytes());
    bad.extend(3i16.to_be_bytes());
    for value in ["eight", "1", "x"] {
        bad.extend((value.len() as i32).to_be_bytes());
        bad.extend(value.as_bytes());
    }
    bad.extend(0i16.to_be_bytes());
    let mut bytes = message(b'B', &bad);
    bytes.extend(message(b'E', &execute));
    bytes.extend(message(b'E', &execute));
    bytes.extend(message(b'S', &[]));
    raw.write(&bytes).await;
    let out = raw.until_ready().await;
    assert_eq!(error_codes(&out), vec!["22P02"], "{out:?}");
    assert_eq!(status(&out), b'I');

    // Describe of a statement with parameters and no result: ParameterDescription, NoData.
    let mut describe = vec![b'S'];
    describe.extend(cstring("ins"));
    let mut bytes = message(b'D', &describe);
    bytes.extend(message(b'S', &[]));
    raw.write(&bytes).await;
    let out = raw.until_ready().await;
    assert_eq!(out.iter().map(|m| m.kind).collect::<Vec<_>>(), b"tnZ".to_vec(), "{out:?}");
    assert_eq!(&out[0].body[..2], &3i16.to_be_bytes());

    let out = raw.query("SELECT id, v, s FROM t").await;
    let row = out.iter().find(|m| m.kind == b'D').unwrap().values();
    assert_eq!(row, vec![Some("7".into()), Some("2.5".into()), Some("seven".into())]);
    server.stop().await;
}

#[tokio::test]
async fn ssl_is_refused_and_the_client_continues_in_plaintext() {
    let server = TestServer::start().await;
    let mut raw = Raw::connect(server.addr).await;
    let mut ssl = 8u32.to_be_bytes().to_vec();
    ssl.extend(80_877_103u32.to_be_bytes());
    raw.write(&ssl).await;
    let mut answer = [0u8; 1];
    tokio::time::timeout(common::WAIT, tokio::io::AsyncReadExt::read_exact(&mut raw.stream, &mut answer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&answer, b"N");
    raw.write(&startup_packet("ssl")).await;
    raw.until_ready().await;
    assert_eq!(tags(&raw.query("SELECT 1").await), vec!["SELECT 1"]);
    server.stop().await;
}

/// After each kind of broken input, the server answers (an ErrorResponse) or just closes — and
/// keeps serving a well-behaved client.
#[tokio::test]
async fn broken_input_closes_only_that_connection() {
    let opts = meridian_pg::PgOptions { startup_timeout: Duration::from_millis(300), ..Default::default() };
    let server = TestServer::start_with(opts).await;
    let mut good = Raw::startup(server.addr).await;
    good.query("CREATE TABLE t (id INT PRIMARY KEY)").await;

    let mut garbage = Vec::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..4096 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        garbage.push(x as u8);
    }
    let mut typed_garbage = startup_packet("g");
    typed_garbage.extend(&garbage);
    let mut unknown_type = startup_packet("u");
    unknown_type.extend(message(b'@', b"hello"));
    let mut huge = startup_packet("h");
    huge.extend([b'Q', 0x7f, 0xff, 0xff, 0xff]);
    let mut bad_length = startup_packet("l");
    bad_length.extend([b'Q', 0, 0, 0, 1]);
    let mut bad_bind = startup_packet("b");
    bad_bind.extend(message(b'B', &[0, 0, 0xff, 0xff, 0xff]));
    bad_bind.extend(message(b'S', &[]));
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("random bytes", garbage.clone(), true),
        ("random bytes after startup", typed_garbage, true),
        ("unknown message type", unknown_type, true),
        ("a 2 GiB message", huge, true),
        ("a message length below 4", bad_length, true),
        ("a malformed Bind", bad_bind, true),
        ("a truncated startup packet, then EOF", vec![0, 0, 0, 100, 0, 3, 0, 0, b'u'], true),
        ("a truncated startup packet, then silence", vec![0, 0, 0, 100, 0, 3, 0, 0, b'u'], false),
        (
            "a startup packet with a bad protocol version",
            {
                let mut p = startup_packet("v");
                p[4] = 9;
                p
            },
            true,
        ),
    ];
    for (what, bytes, then_eof) in cases {
        let mut raw = Raw::connect(server.addr).await;
        raw.write(&bytes).await;
        if then_eof {
            raw.stream.shutdown().await.unwrap();
        }
        let answers = raw.until_closed().await;
        for m in &answers {
            if m.kind == b'E' {
                assert_eq!(m.field(b'S').as_deref(), Some("FATAL"), "{what}: {answers:?}");
            }
        }
        if let Some(first_error) = answers.iter().position(|m| m.kind == b'E') {
            assert!(
                !answers[first_error..].iter().any(|m| m.kind == b'Z'),
                "{what}: an error must not be followed by a usable session: {answers:?}"
            );
        }
        assert_eq!(
            tags(&good.query("INSERT INTO t VALUES (1); DELETE FROM t").await),
            vec!["INSERT 0 1", "DELETE 1"],
            "{what}"
        );
    }

    // An oversized message is refused from its header and the reason is given.
    let mut raw = Raw::startup(server.addr).await;
    raw.write(&[b'Q', 0x10, 0, 0, 0]).await;
    let answers = raw.until_closed().await;
    assert_eq!(error_codes(&answers), vec!["54000"], "{answers:?}");
    server.stop().await;
}

#[tokio::test]
async fn avg_of_integers_is_numeric_as_in_postgres() {
    let server = TestServer::start().await;
    let mut raw = Raw::startup(server.addr).await;
    raw.query("CREATE TABLE a (id INT PRIMARY KEY, x INT, f FLOAT)").await;
    raw.query("INSERT INTO a VALUES (1, 1, 1.5), (2, 2, 2.0), (3, 3, NULL), (4, 4, NULL)").await;
    let out = raw.query("SELECT AVG(x), AVG(f), AVG(x) + 1, CAST(AVG(x) AS INT) FROM a").await;
    let desc = out.iter().find(|m| m.kind == b'T').expect("a RowDescription");
    // numeric (1700), float8 (701): what PostgreSQL reports for AVG(int8) and AVG(float8).
    assert_eq!(desc.columns().iter().map(|c| c.1).collect::<Vec<_>>(), vec![1700, 701, 701, 20]);
    let row = out.iter().find(|m| m.kind == b'D').expect("a DataRow");
    // PostgreSQL 15: 2.5000000000000000 | 1.75 | 3.5000000000000000 | 3 (arithmetic on a numeric is
    // FLOAT in Meridian: `numeric.rs`).
    let want = ["2.5000000000000000", "1.75", "3.5", "3"];
    assert_eq!(row.values(), want.map(|w| Some(w.to_string())).to_vec(), "{out:?}");
    let out = raw.query("SELECT x FROM a GROUP BY x HAVING AVG(x) > 2.5 ORDER BY AVG(x) DESC").await;
    let rows: Vec<_> = out.iter().filter(|m| m.kind == b'D').map(|m| m.values()).collect();
    assert_eq!(rows, vec![vec![Some("4".to_string())], vec![Some("3".to_string())]], "{out:?}");
    server.stop().await;
}
