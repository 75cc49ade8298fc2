//! SCRAM-SHA-256 passwords on the PostgreSQL port (issue 9): the right password gets in, a wrong
//! one, a missing one and an unknown user get `28P01` — for the last two PostgreSQL's very words,
//! naming the user the client sent, and by the same exchange, so that no answer tells a caller
//! which users exist (issue 17). TLS is covered with `psql` against a real node in
//! `cli/tests/security.rs`.

mod common;

use common::{Msg, Raw, TestServer, WAIT, message, startup_packet};
use meridian_pg::{PgOptions, PgPasswords, PgSecurity};

async fn connect(server: &TestServer, user: &str, password: Option<&str>) -> Result<(), tokio_postgres::Error> {
    let mut info = format!("host=127.0.0.1 port={} user={user} dbname=meridian", server.addr.port());
    if let Some(p) = password {
        info.push_str(&format!(" password='{p}'"));
    }
    let (client, connection) = tokio::time::timeout(WAIT, tokio_postgres::connect(&info, tokio_postgres::NoTls))
        .await
        .expect("connect timed out")?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let rows = client.simple_query("SELECT 1").await?;
    assert!(!rows.is_empty());
    Ok(())
}

#[tokio::test]
async fn scram_lets_the_right_password_in_and_refuses_the_rest_with_28p01() {
    let passwords = PgPasswords::parse("alice:correct horse\nbob:battery\n", "test").expect("parses");
    let security = PgSecurity::new(None, Some(passwords)).expect("security");
    let server = TestServer::start_with(PgOptions { security, ..PgOptions::default() }).await;
    connect(&server, "alice", Some("correct horse")).await.expect("alice with her password");
    connect(&server, "bob", Some("battery")).await.expect("bob with his password");
    for (user, password) in [("alice", Some("battery")), ("alice", Some("")), ("mallory", Some("battery"))] {
        let e = connect(&server, user, password).await.expect_err("refused");
        assert_eq!(e.code(), Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD), "{user}: {e}");
        let db = e.as_db_error().expect("a server error");
        assert_eq!(db.message(), format!("password authentication failed for user \"{user}\""), "{user}");
        assert_eq!(db.severity(), "FATAL", "{user}");
    }
    // No password at all: the driver cannot answer the SCRAM challenge, so it gets no session.
    connect(&server, "alice", None).await.expect_err("a client without a password is refused");
}

#[tokio::test]
async fn without_a_password_file_the_port_trusts_as_before() {
    let server = TestServer::start().await;
    connect(&server, "anyone", None).await.expect("trust");
}

/// The server's answers to a SCRAM exchange with a made-up proof, as `user`: every message's type
/// (and authentication code), the salt and iteration count, and the final error's fields.
async fn scram_with_a_wrong_proof(server: &TestServer, user: &str) -> (Vec<String>, String, Vec<String>) {
    let mut raw = Raw::connect(server.addr).await;
    raw.write(&startup_packet(user)).await;
    let mut kinds = Vec::new();
    let describe = |m: &Msg| match m.kind {
        b'R' => format!("R{}", i32::from_be_bytes(m.body[..4].try_into().expect("an auth code"))),
        other => (other as char).to_string(),
    };
    let offer = raw.read().await.expect("the server offers SASL");
    kinds.push(describe(&offer));
    let nonce = "rOprNGfwEbeRWgbNEkqO";
    let first = format!("n,,n=,r={nonce}");
    let mut body = b"SCRAM-SHA-256\0".to_vec();
    body.extend_from_slice(&(first.len() as i32).to_be_bytes());
    body.extend_from_slice(first.as_bytes());
    raw.write(&message(b'p', &body)).await;
    let server_first = raw.read().await.expect("the server answers the first message");
    kinds.push(describe(&server_first));
    let text = String::from_utf8_lossy(&server_first.body[4..]).into_owned();
    let attr =
        |name: &str| text.split(',').find_map(|kv| kv.strip_prefix(name)).map(str::to_string).unwrap_or_default();
    let (server_nonce, salt_and_iterations) = (attr("r="), format!("s={} i={}", attr("s="), attr("i=")));
    // A proof of the right length (32 bytes, base64) that matches nothing.
    let proof = "A".repeat(43) + "=";
    let last = format!("c=biws,r={server_nonce},p={proof}");
    raw.write(&message(b'p', last.as_bytes())).await;
    let answers = raw.until_closed().await;
    kinds.extend(answers.iter().map(describe));
    let error = answers.iter().find(|m| m.kind == b'E').expect("an ErrorResponse");
    let fields = [b'S', b'C', b'M'].map(|f| error.field(f).unwrap_or_default()).to_vec();
    (kinds, salt_and_iterations, fields)
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_user_are_indistinguishable() {
    let passwords = PgPasswords::parse("alice:correct horse\n", "test").expect("parses");
    let security = PgSecurity::new(None, Some(passwords)).expect("security");
    let server = TestServer::start_with(PgOptions { security, ..PgOptions::default() }).await;
    let (alice_kinds, alice_salt, alice_error) = scram_with_a_wrong_proof(&server, "alice").await;
    let (mallory_kinds, mallory_salt, mallory_error) = scram_with_a_wrong_proof(&server, "mallory").await;
    // AuthenticationSASL (10), AuthenticationSASLContinue (11), then the error: the same steps.
    assert_eq!(alice_kinds, vec!["R10", "R11", "E"]);
    assert_eq!(mallory_kinds, alice_kinds, "an unknown user goes through the same exchange");
    assert_eq!(alice_error, vec!["FATAL", "28P01", "password authentication failed for user \"alice\""]);
    assert_eq!(mallory_error, vec!["FATAL", "28P01", "password authentication failed for user \"mallory\""]);
    // Salts: the same on every attempt for either user, as PostgreSQL's mock authentication does.
    assert_eq!(scram_with_a_wrong_proof(&server, "alice").await.1, alice_salt);
    assert_eq!(scram_with_a_wrong_proof(&server, "mallory").await.1, mallory_salt);
    assert_ne!(alice_salt, mallory_salt);
    assert_eq!(alice_salt.rsplit(' ').next(), mallory_salt.rsplit(' ').next(), "the same iteration count");
    server.stop().await;
}
