//! Input meant to take a node down (issue 17), against a real server on threads with a node's
//! stack: the 2,000- and 20,000-term statements that overflowed a tokio worker's stack and aborted
//! the node are refused with `54000`, and the connection and server answer afterwards; a
//! connection whose task panics is closed, and nothing else is.
//!
//! A stack overflow aborts this whole test process: on code without the bounds, the first test
//! dies with `thread 'tokio-runtime-worker' has overflowed its stack`, which is why these tests
//! have a binary of their own.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{TestServer, WAIT};
use meridian_pg::PgOptions;
use meridian_sql::bounds::SERVER_STACK_BYTES;
use meridian_sql::{KvError, KvStore, KvTxn, MemKv, TxnMode};
use tokio_postgres::error::SqlState;

/// A runtime like a node's: two workers with the stack a node's workers have.
fn node_like_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(SERVER_STACK_BYTES)
        .enable_all()
        .build()
        .expect("a runtime")
}

fn plus_chain(terms: usize) -> String {
    format!("SELECT 1{}", " + 1".repeat(terms - 1))
}

fn or_chain(terms: usize) -> String {
    let ors: String = (1..terms).map(|i| format!(" OR id = {i}")).collect();
    format!("SELECT id FROM t WHERE id = 0{ors}")
}

async fn answers_select_1(client: &tokio_postgres::Client, when: &str) {
    let rows = tokio::time::timeout(WAIT, client.simple_query("SELECT 1"))
        .await
        .unwrap_or_else(|_| panic!("{when}: SELECT 1 timed out"))
        .unwrap_or_else(|e| panic!("{when}: SELECT 1 failed: {e}"));
    assert!(!rows.is_empty(), "{when}: SELECT 1 answered");
}

#[test]
fn the_issues_deep_statements_get_54000_and_the_server_answers_after() {
    node_like_runtime().block_on(async {
        let server = TestServer::start().await;
        let client = server.connect().await;
        client.batch_execute("CREATE TABLE t (id INT PRIMARY KEY, v TEXT)").await.expect("create");
        for (what, sql) in [
            ("2,000-term SELECT 1 + 1 + …", plus_chain(2_000)),
            ("20,000-term SELECT 1 + 1 + …", plus_chain(20_000)),
            ("20,000-term WHERE id = 0 OR id = 1 OR …", or_chain(20_000)),
        ] {
            // The simple protocol, as psql sends it.
            let e = tokio::time::timeout(WAIT, client.simple_query(&sql))
                .await
                .unwrap_or_else(|_| panic!("{what}: no answer"))
                .expect_err("refused");
            let db = e.as_db_error().unwrap_or_else(|| panic!("{what}: a server error, not {e:?}"));
            assert_eq!(db.code(), &SqlState::PROGRAM_LIMIT_EXCEEDED, "{what}: {db:?}");
            assert!(db.message().contains("the limit is"), "{what}: the message names the bound: {}", db.message());
            answers_select_1(&client, what).await;
            // The extended protocol: Parse describes the statement, which binds it.
            let e = tokio::time::timeout(WAIT, client.prepare(&sql))
                .await
                .unwrap_or_else(|_| panic!("{what}: no answer to Parse"))
                .expect_err("refused at Parse");
            assert_eq!(e.code(), Some(&SqlState::PROGRAM_LIMIT_EXCEEDED), "{what} (Parse): {e:?}");
            answers_select_1(&client, what).await;
        }
        answers_select_1(&server.connect().await, "a new connection").await;
        server.stop().await;
    });
}

/// A store that panics on the next `begin` once armed: a bug somewhere below a connection.
struct PanicOnBegin {
    store: MemKv,
    armed: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl KvStore for PanicOnBegin {
    async fn begin(&self, mode: TxnMode) -> Result<Box<dyn KvTxn>, KvError> {
        if self.armed.swap(false, Ordering::SeqCst) {
            panic!("a deliberate panic in a connection's task (test)");
        }
        self.store.begin(mode).await
    }
}

#[test]
fn a_panicking_connection_task_closes_that_connection_and_nothing_else() {
    node_like_runtime().block_on(async {
        let armed = Arc::new(AtomicBool::new(false));
        let store_armed = armed.clone();
        let server = TestServer::start_wrapped(PgOptions::default(), move |store| {
            Arc::new(PanicOnBegin { store, armed: store_armed })
        })
        .await;
        let bystander = server.connect().await;
        bystander.batch_execute("CREATE TABLE t (id INT PRIMARY KEY)").await.expect("create");
        let victim = server.connect().await;
        answers_select_1(&victim, "before the panic").await;

        armed.store(true, Ordering::SeqCst);
        let e = tokio::time::timeout(WAIT, victim.simple_query("SELECT * FROM t"))
            .await
            .expect("the panicking connection ends at once, not after a timeout")
            .expect_err("the connection whose task panicked is closed");
        assert!(e.as_db_error().is_none(), "closed, not answered: {e:?}");
        assert!(victim.is_closed(), "the victim's connection is closed");
        assert!(!armed.load(Ordering::SeqCst), "the panic happened");

        answers_select_1(&bystander, "another connection, after the panic").await;
        bystander.batch_execute("INSERT INTO t VALUES (1)").await.expect("the bystander still writes");
        answers_select_1(&server.connect().await, "a new connection, after the panic").await;
        server.stop().await;
    });
}
