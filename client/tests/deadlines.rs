//! The client's side of request deadlines (issue 9), against a stub node that records what
//! every call carries and answers `DEADLINE_EXCEEDED` as a node that gave up would:
//! - every call tells the node how long the client waits (`grpc-timeout` = min(time left,
//!   `ATTEMPT_TIMEOUT`)), shrinking with each retry;
//! - a read is retried until the request's deadline, then fails naming the deadline and what
//!   the node waited for;
//! - a single-range commit is never sent twice: its outcome is unknown (`Ambiguous`);
//! - a transaction whose read gave up still sends its abort to that range.
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
/// Generous bound on a request whose deadline is 300 ms.
const TOOK_MAX: Duration = Duration::from_secs(3);

/// Each call the stub saw: the method and its `grpc-timeout`.
type Seen = Arc<Mutex<Vec<(&'static str, Option<Duration>)>>>;

struct StubNode {
    addr: String,
    seen: Seen,
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
        // One range holding every user key, led by node 1: this stub.
        Ok(Response::new(pb::LookupRangeResponse {
            ranges: vec![pb::RangeDescriptor {
                id: 1,
                start: vec![1],
                end: Vec::new(),
                voters: vec![1],
                learners: Vec::new(),
                generation: 1,
            }],
            nodes: vec![pb::NodeInfo {
                id: 1,
                addr: self.addr.clone(),
                http_addr: String::new(),
                pg_addr: String::new(),
            }],
            leaders: vec![pb::LeaderHint { group: 1, node: 1, round: 1 }],
            error: None,
        }))
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        self.note("get", &req);
        Err(Status::deadline_exceeded(WAITED))
    }

    async fn txn_get(&self, req: Request<pb::TxnGetRequest>) -> Result<Response<pb::TxnGetResponse>, Status> {
        self.note("txn_get", &req);
        Err(Status::deadline_exceeded(WAITED))
    }

    async fn txn_commit(&self, req: Request<pb::TxnCommitRequest>) -> Result<Response<pb::TxnCommitResponse>, Status> {
        self.note("txn_commit", &req);
        Err(Status::deadline_exceeded("gave up waiting for its write to be chosen; it may still commit (stub)"))
    }

    async fn txn_abort(&self, req: Request<pb::TxnAbortRequest>) -> Result<Response<pb::TxnAbortResponse>, Status> {
        self.note("txn_abort", &req);
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound").to_string();
    let seen = Seen::default();
    let node = StubNode { addr: addr.clone(), seen: seen.clone() };
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
    assert!(took >= deadline && took < TOOK_MAX, "took {took:?} with a deadline of {deadline:?}");

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
