//! SCRAM-SHA-256 passwords on the PostgreSQL port (issue 9): the right password gets in, a wrong
//! one, a missing one and an unknown user get `28P01`. TLS is covered with `psql` against a
//! real node in `cli/tests/security.rs`.

mod common;

use common::{TestServer, WAIT};
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
    }
    // No password at all: the driver cannot answer the SCRAM challenge, so it gets no session.
    connect(&server, "alice", None).await.expect_err("a client without a password is refused");
}

#[tokio::test]
async fn without_a_password_file_the_port_trusts_as_before() {
    let server = TestServer::start().await;
    connect(&server, "anyone", None).await.expect("trust");
}
