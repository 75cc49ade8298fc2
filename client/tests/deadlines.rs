//! The client's side of request deadlines (issue 9), against a stub node that records what
//! every call carries and answers `DEADLINE_EXCEEDED` as a node that gave up would:
//! - every call tells the node how long the client waits (`grpc-timeout` = min(time left,
//!   `ATTEMPT_TIMEOUT`)), shrinking with each retry;
//! - a read is retried until the request's deadline, then fails naming the deadline and what
//!   the node waited for;
//! - a single-range commit is never sent twice: its outcome is unknown (`Ambiguous`);
//! - a transaction whose read gave up still sends its abort to that range;
//! - a request that cannot even be attempted (no address for its range's replicas) backs off
//!   and says why, instead of spinning;
//! - a SQL statement has one deadline (its error says so, with SQLSTATE 57P03), and its answer
//!   does not wait for the rollback.
//!
//! The real node's side (it gives up, and no lock waiter is left) is `server/tests/deadlines.rs`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meridian_client::limits::ATTEMPT_TIMEOUT;
use meridian_client::{Client, ClientError};
use meridian_proto::v1 as pb;
use tonic::{Request, Response, Status};

/// What the stub says when it "gives up".
const WAITED: &str = "waited 1ms for a shared lock on key k held by transaction 1 (stub)";
/// What the stub says, in [`Mode::Unavailable`], as a node without a quorum would.
const NO_QUORUM: &str = "range r1 cannot serve: 1 of 3 replicas answer (stub)";

/// Each call the stub saw: the method and its `grpc-timeout`.
type Seen = Arc<Mutex<Vec<(&'static str, Option<Duration>)>>>;

/// How the stub answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Reads give up at the deadline (`DEADLINE_EXCEEDED`); commits are ambiguous.
    GiveUp,
    /// Its routes name a leader (node 2) whose address it never gives: nothing can be sent.
    Unroutable,
    /// Every key is in its one range, every transactional read is `Unavailable` ([`NO_QUORUM`]),
    /// and an abort never gets an answer.
    Unavailable,
}

struct StubNode {
    addr: String,
    seen: Seen,
    mode: Mode,
}

impl StubNode {
    fn note<T>(&self, method: &'static str, req: &Request<T>) {
        let t = meridian_proto::limits::grpc_timeout(req.metadata());
        self.seen.lock().expect("not poisoned").push((method, t));
    }
}

#[tonic::async_trait]
impl pb::kv_server::Kv for StubNode {
    async fn lookup_range(
        &self,
        req: Request<pb::LookupRangeRequest>,
    ) -> Result<Response<pb::LookupRangeResponse>, Status> {
        self.note("lookup_range", &req);
        // One range holding every user key (every key, if Unavailable), led by node 1: this
        // stub — or, if Unroutable, replicated on nodes 1 and 2 and led by node 2, whose address
        // is never given.
        let (start, voters, leader) = match self.mode {
            Mode::GiveUp => (vec![1], vec![1], 1),
            Mode::Unroutable => (vec![1], vec![1, 2], 2),
            Mode::Unavailable => (Vec::new(), vec![1], 1),
        };
        Ok(Response::new(pb::LookupRangeResponse {
            ranges: vec![pb::RangeDescriptor {
                id: 1,
                start,
                end: Vec::new(),
                voters,
                learners: Vec::new(),
                generation: 1,
            }],
            nodes: vec![pb::NodeInfo {
                id: 1,
                addr: self.addr.clone(),
                http_addr: String::new(),
                pg_addr: String::new(),
            }],
            leaders: vec![pb::LeaderHint { group: 1, node: leader, round: 1 }],
            error: None,
        }))
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        self.note("get", &req);
        Err(Status::deadline_exceeded(WAITED))
    }

    async fn txn_get(&self, req: Request<pb::TxnGetRequest>) -> Result<Response<pb::TxnGetResponse>, Status> {
        self.note("txn_get", &req);
        if self.mode == Mode::Unavailable {
            let error = pb::Error {
                kind: pb::error::Kind::Unavailable as i32,
                message: NO_QUORUM.into(),
                ..Default::default()
            };
            return Ok(Response::new(pb::TxnGetResponse { error: Some(error), ..Default::default() }));
        }
        Err(Status::deadline_exceeded(WAITED))
    }

    async fn txn_commit(&self, req: Request<pb::TxnCommitRequest>) -> Result<Response<pb::TxnCommitResponse>, Status> {
        self.note("txn_commit", &req);
        Err(Status::deadline_exceeded("gave up waiting for its write to be chosen; it may still commit (stub)"))
    }

    async fn txn_abort(&self, req: Request<pb::TxnAbortRequest>) -> Result<Response<pb::TxnAbortResponse>, Status> {
        self.note("txn_abort", &req);
        if self.mode == Mode::Unavailable {
            // No answer: the client gives up on it at the abort's own deadline.
            tokio::time::sleep(Duration::from_secs(60)).await;
            self.note("txn_abort answered", &req);
        }
        Ok(Response::new(pb::TxnAbortResponse { error: None }))
    }

    async fn txn_keepalive(&self, req: Request<pb::TxnAbortRequest>) -> Result<Response<pb::TxnAbortResponse>, Status> {
        self.note("txn_keepalive", &req);
        Ok(Response::new(pb::TxnAbortResponse { error: None }))
    }

    async fn scan(&self, _: Request<pb::ScanRequest>) -> Result<Response<pb::ScanResponse>, Status> {
        Err(Status::unimplemented("stub"))
    }

    async fn write(&self, _: Request<pb::WriteRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        Err(Status::unimplemented("stub"))
    }

    async fn txn_scan(&self, _: Request<pb::TxnScanRequest>) -> Result<Response<pb::TxnScanResponse>, Status> {
        Err(Status::unimplemented("stub"))
    }

    async fn read(&self, _: Request<pb::ReadRequest>) -> Result<Response<pb::ReadResponse>, Status> {
        Err(Status::unimplemented("stub"))
    }
}

/// Starts a stub node on a free loopback port; returns its address and what it sees.
async fn stub() -> (String, Seen, tokio::task::JoinHandle<()>) {
    stub_in(Mode::GiveUp).await
}

/// [`stub`], answering as `mode` says.
async fn stub_in(mode: Mode) -> (String, Seen, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound").to_string();
    let seen = Seen::default();
    let node = StubNode { addr: addr.clone(), seen: seen.clone(), mode };
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(pb::kv_server::KvServer::new(node))
            .serve_with_incoming(incoming)
            .await;
    });
    (addr, seen, task)
}

fn calls(seen: &Seen, method: &str) -> Vec<Option<Duration>> {
    seen.lock().expect("not poisoned").iter().filter(|(m, _)| *m == method).map(|(_, t)| *t).collect()
}

#[tokio::test]
async fn a_read_is_retried_until_the_deadline_and_every_attempt_tells_the_node_the_time_left() {
    let (addr, seen, node) = stub().await;
    let deadline = Duration::from_millis(300);
    let client = Client::connect([addr]).await.expect("connect").with_deadline(deadline);
    let t0 = Instant::now();
    let e = client.get(b"k").await.expect_err("the node keeps giving up");
    let took = t0.elapsed();
    let ClientError::Unavailable(msg) = &e else { panic!("a read past its deadline is unavailable: {e:?}") };
    assert!(msg.contains("300ms") && msg.contains(WAITED), "names the deadline and what the node waited for: {msg}");
    // It gave up because of the deadline, not before it (how long after is the machine's
    // business: what bounds it is that no attempt is told more than the time left, below).
    assert!(took >= deadline, "gave up after {took:?}, before its deadline of {deadline:?}");

    let gets = calls(&seen, "get");
    assert!(gets.len() >= 2, "retried while time was left: {gets:?}");
    let sent: Vec<Duration> = gets.iter().map(|t| t.expect("every attempt carries grpc-timeout")).collect();
    assert!(sent[0] <= deadline && sent[0] >= deadline / 2, "the first attempt has (nearly) all the time: {sent:?}");
    assert!(sent.windows(2).all(|w| w[1] < w[0]), "each retry has less time left: {sent:?}");
    for t in calls(&seen, "lookup_range") {
        assert!(t.is_some_and(|t| t <= ATTEMPT_TIMEOUT), "a routing lookup carries grpc-timeout too: {t:?}");
    }
    node.abort();
}

#[tokio::test]
async fn a_commit_the_node_gave_up_on_is_ambiguous_and_sent_once() {
    let (addr, seen, node) = stub().await;
    let client = Client::connect([addr]).await.expect("connect");
    let e = client
        .read_write(|txn| {
            Box::pin(async move {
                txn.put(b"k", b"v");
                Ok(())
            })
        })
        .await
        .expect_err("the node gave up on the commit");
    assert!(matches!(&e, ClientError::Ambiguous(m) if m.contains("may still commit")), "{e:?}");
    let commits = calls(&seen, "txn_commit");
    // The default deadline (30 s) is longer than one attempt: the node is told ATTEMPT_TIMEOUT.
    assert_eq!(commits, vec![Some(ATTEMPT_TIMEOUT)], "one commit, never re-sent");
    node.abort();
}

#[tokio::test]
async fn a_transaction_whose_read_gave_up_still_aborts_where_it_waited() {
    let (addr, seen, node) = stub().await;
    let client = Client::connect([addr]).await.expect("connect").with_deadline(Duration::from_millis(300));
    let e = client
        .read_write(|txn| Box::pin(async move { txn.get(b"k").await }))
        .await
        .expect_err("the node keeps giving up");
    assert!(matches!(&e, ClientError::Unavailable(m) if m.contains(WAITED)), "{e:?}");
    assert!(!calls(&seen, "txn_get").is_empty(), "the read reached the node");
    // The node may hold the transaction's lock wait (or, granted later, its lock): release it.
    assert!(!calls(&seen, "txn_abort").is_empty(), "the abort reached the range: {:?}", seen.lock().expect("ok"));
    node.abort();
}

/// The attempts and the turns without one, from "gave up after … and N attempts (M more could
/// not be made: …)".
fn attempt_counts(msg: &str) -> (u64, u64) {
    let number_before = |marker: &str| -> u64 {
        let head = &msg[..msg.find(marker).unwrap_or_else(|| panic!("no {marker:?} in {msg}"))];
        let digits: String = head.chars().rev().skip_while(|c| *c == ' ').take_while(char::is_ascii_digit).collect();
        digits.chars().rev().collect::<String>().parse().unwrap_or_else(|_| panic!("no count before {marker:?}: {msg}"))
    };
    let made = number_before(" attempts");
    let not_made = if msg.contains(" more could not be made") { number_before(" more could not be made") } else { 0 };
    (made, not_made)
}

#[tokio::test]
async fn a_request_that_cannot_be_sent_anywhere_backs_off_and_says_why() {
    let (addr, seen, node) = stub_in(Mode::Unroutable).await;
    let deadline = Duration::from_millis(500);
    let client = Client::connect([addr]).await.expect("connect").with_deadline(deadline);
    let e = client.get(b"k").await.expect_err("no replica of the range has an address");
    let ClientError::Unavailable(msg) = &e else { panic!("unavailable: {e:?}") };
    assert!(
        msg.contains("could not be made: no address is known for n2 of range"),
        "says why no attempt could be made: {msg}"
    );
    assert!(!msg.contains("last: no attempt made"), "a reason, not a shrug: {msg}");
    let (made, not_made) = attempt_counts(msg);
    assert_eq!(made, 0, "nothing could be sent: {msg}");
    // Backed off: waits grow from BACKOFF_FIRST towards BACKOFF_MAX (at least half of each
    // base), so 500 ms hold a dozen turns at most — not thousands.
    assert!((1..=20).contains(&not_made), "{not_made} turns in {deadline:?}: {msg}");
    assert!(calls(&seen, "lookup_range").len() <= 25, "routing lookups backed off too: {:?}", seen.lock().expect("ok"));
    assert!(calls(&seen, "get").is_empty(), "nothing reached the node");
    node.abort();
}

#[tokio::test]
async fn connection_refused_is_known_soon_and_another_seed_is_tried() {
    // Nobody listens on a port just released.
    let free = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind").to_string();
    // Before the connect deadline (30 s) is near, the refusal rule (REFUSED_FOR_MAX) ends it.
    let e = match Client::connect_with([free.clone()], Default::default()).await {
        Ok(_) => panic!("nothing listens at {free}"),
        Err(e) => e,
    };
    assert!(
        matches!(&e, ClientError::Transport(m) if m.contains(&format!("nothing listens at {free} (connection refused)"))),
        "names the address and the refusal: {e}"
    );
    // One seed refusing, another answering: the client connects through the other.
    let (addr, _seen, node) = stub().await;
    let client = Client::connect([free.clone(), addr]).await.expect("the second seed answers");
    assert!(client.range_of(b"k").await.is_ok(), "and uses it");
    node.abort();
}

#[tokio::test]
async fn a_sql_statement_gives_up_once_with_57p03_and_does_not_wait_for_its_rollback() {
    let (addr, seen, node) = stub_in(Mode::Unavailable).await;
    let deadline = Duration::from_millis(300);
    let client = Arc::new(Client::connect([addr]).await.expect("connect").with_deadline(deadline));
    let mut session = meridian_sql::Session::new(Arc::new(meridian_client::ClusterKv::new(client)));
    let results = session.execute("INSERT INTO t VALUES (1)").await;
    // Nothing has run since `execute` returned (a current-thread runtime): what the stub saw
    // is what the statement waited for.
    let aborts_before_the_answer = calls(&seen, "txn_abort").len();
    let e = match results.as_slice() {
        [Err(e)] => e.clone(),
        other => panic!("one failed statement: {other:?}"),
    };
    assert_eq!(e.code.code(), "57P03", "cannot serve now, the connection is fine: {e:?}");
    assert!(e.message.contains("the statement's deadline"), "one deadline, the statement's: {}", e.message);
    assert!(e.message.contains(NO_QUORUM), "the node's words are passed on: {}", e.message);
    assert!(e.message.contains("1 of 1 replicas answered"), "and the client's count: {}", e.message);
    assert!(!calls(&seen, "txn_get").is_empty(), "the statement read");
    assert_eq!(aborts_before_the_answer, 0, "the answer waited for the rollback: {:?}", seen.lock().expect("ok"));
    // The rollback still happens, in the background, with a deadline of its own.
    let sent = tokio::time::timeout(Duration::from_secs(30), async {
        while calls(&seen, "txn_abort").is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(sent.is_ok(), "the rollback reached the range");
    let abort_deadlines = calls(&seen, "txn_abort");
    assert!(
        abort_deadlines.iter().all(|t| t.is_some_and(|t| t <= meridian_client::ROLLBACK_WAIT_MAX)),
        "a rollback is bounded: {abort_deadlines:?}"
    );
    node.abort();
}
