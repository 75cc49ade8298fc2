//! Request deadlines reach the node (issue 9). A client says how long it waits with gRPC's
//! `grpc-timeout` header; the node must not work on for nobody. The case that matters is a
//! read-write transaction's read waiting for a lock (wound-wait, Spanner §4.2.1: a younger
//! transaction waits for an older one): it gives up at the caller's deadline with
//! `DEADLINE_EXCEEDED` naming the key and the transaction holding it, and leaves no waiter in
//! the lock table — nor does a read whose caller simply went away. Afterwards the lock holder
//! commits and a fresh read sees its write.
//!
//! One in-process node (replication 1) with two ranges, reached over gRPC exactly as the Rust
//! client reaches it. Transaction A writes `b` in range R and prepares there (two-phase
//! commit, coordinated by range C holding `z`): an exclusive lock, held until A commits.
//! Every wait is bounded.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use meridian_proto::v1 as pb;
use meridian_server::node::{GroupStatus, NodeOptions, Request, Response};
use meridian_server::shell::{Node, NodeConfig};
use meridian_shard::paxos::Options;
use tonic::transport::{Channel, Endpoint};

/// How long the node may take to start, lead its ranges and split.
const START_MAX: Duration = Duration::from_secs(60);
/// How long one step of the scenario may take.
const STEP_MAX: Duration = Duration::from_secs(20);
/// The deadline transaction B's read carries.
const B_DEADLINE: Duration = Duration::from_millis(300);
/// The node's own limit on a request (`REQUEST_TIMEOUT`): a node that ignored the caller's
/// deadline would give up only here.
const NODE_REQUEST_LIMIT: Duration = Duration::from_secs(10);
/// How long a read whose caller went away may stay in the lock table: well below 10 s.
const GONE_CLEANUP_MAX: Duration = Duration::from_secs(5);

/// A data directory removed when the test ends, however it ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("meridian-deadlines-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).expect("clock after 1970")
}

fn txn(id: u64, start: u64) -> Option<pb::Txn> {
    Some(pb::Txn { id_hi: 0xdead_0000, id_lo: id, start })
}

/// A transaction id as the node prints it.
fn txn_text(t: Option<pb::Txn>) -> String {
    let t = t.expect("a transaction");
    format!("{:032x}", (u128::from(t.id_hi) << 64) | u128::from(t.id_lo))
}

/// The milliseconds in a node's "waited 270ms for …" (or "waited 1.2s for …").
fn waited_ms(msg: &str) -> u64 {
    let after = msg.split_once("waited ").unwrap_or_else(|| panic!("no \"waited\" in {msg}")).1;
    let amount = after.split_whitespace().next().unwrap_or_default();
    if let Some(ms) = amount.strip_suffix("ms") {
        ms.parse::<f64>().unwrap_or_else(|_| panic!("not a duration: {amount} in {msg}")) as u64
    } else if let Some(s) = amount.strip_suffix('s') {
        (s.parse::<f64>().unwrap_or_else(|_| panic!("not a duration: {amount} in {msg}")) * 1000.0) as u64
    } else {
        panic!("not a duration: {amount} in {msg}")
    }
}

/// `message` with gRPC's `grpc-timeout` header, as `meridian_client` sends every call.
fn within<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.set_timeout(timeout);
    r
}

async fn kv_client(addr: SocketAddr, local_timeout: Option<Duration>) -> pb::kv_client::KvClient<Channel> {
    let mut e = Endpoint::from_shared(format!("http://{addr}")).expect("address");
    if let Some(t) = local_timeout {
        // Enforced by this client only: the node is not told (no `grpc-timeout` header).
        e = e.timeout(t);
    }
    pb::kv_client::KvClient::new(e.connect().await.expect("connect to the node"))
}

/// The status of the range holding `key` at its leader (this node).
async fn range_status(node: &Node, key: &[u8]) -> Option<GroupStatus> {
    let Response::Status(st) = node.request(Request::Status).await else { return None };
    st.groups.into_iter().find(|g| g.desc.contains(key) && g.role == "Leader")
}

/// Polls `f` until it returns `Some`, for at most `limit`.
async fn until<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A node with ranges R = [.., "m") and C = ["m", ..), each led here and serving.
async fn start_node(dir: &TempDir) -> Node {
    let cfg = NodeConfig {
        data_dir: dir.0.clone(),
        listen: "127.0.0.1:0".parse().expect("address"),
        advertise: None,
        join: Vec::new(),
        epsilon: Duration::from_millis(2),
        options: NodeOptions {
            paxos: Options::with_lease(Duration::from_millis(1_000)),
            replication: 1,
            housekeeping: Duration::from_millis(200),
            ..NodeOptions::default()
        },
        rocks: Default::default(),
        pg_advertise: None,
        http_listen: None,
        fault_injection: false,
        tls: None,
        token: None,
        test_power_loss: false,
        unsafe_skip_sync: false,
    };
    let node = Node::start(cfg).await.expect("the node starts");
    until(START_MAX, "split at m, both halves led here and serving", || async {
        let (Some(r), Some(c)) = (range_status(&node, b"b").await, range_status(&node, b"z").await) else {
            return None;
        };
        if r.desc.id == c.desc.id {
            // Not split yet (or the first answer was lost): ask (again).
            let _ = node.request(Request::Split { key: b"m".to_vec() }).await;
            return None;
        }
        for key in [&b"b"[..], b"z"] {
            if !matches!(node.request(Request::Get { key: key.to_vec() }).await, Response::Value { .. }) {
                return None;
            }
        }
        Some(())
    })
    .await;
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_wait_gives_up_at_the_callers_deadline_and_leaves_no_waiter() {
    let dir = TempDir::new();
    let node = start_node(&dir).await;
    let mut kv = kv_client(node.addr, None).await;
    let r = range_status(&node, b"b").await.expect("R is led here").desc.id;
    let c = range_status(&node, b"z").await.expect("C is led here").desc.id;
    assert_ne!(r, c, "b and z are in different ranges");

    // A (oldest) reads z at its coordinator C, then writes b and prepares at R: an exclusive
    // lock on b that only A's commit (or its coordinator's abort) releases.
    let now = now_nanos();
    let a = txn(0xa, now - 2_000_000_000);
    let read = kv.txn_get(within(pb::TxnGetRequest { txn: a, key: b"z".to_vec() }, STEP_MAX)).await;
    let read = read.expect("A reads z").into_inner();
    assert_eq!(read.error, None, "A reads z");
    let prepare = pb::TxnCommitRequest {
        txn: a,
        mutations: vec![pb::Mutation { key: b"b".to_vec(), value: Some(b"from A".to_vec()) }],
        coordinator: Some(c.0),
        ..Default::default()
    };
    let prepared = kv.txn_commit(within(prepare, STEP_MAX)).await.expect("A prepares").into_inner();
    assert_eq!(prepared.error, None, "A prepares at R");

    // B (younger) reads b with a 300 ms deadline: it waits for A's lock, and gives up.
    let b = txn(0xb, now - 1_000_000_000);
    let t0 = Instant::now();
    let got = kv.txn_get(within(pb::TxnGetRequest { txn: b, key: b"b".to_vec() }, B_DEADLINE)).await;
    let took = t0.elapsed();
    let status = got.expect_err("B must give up waiting for A's lock");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "the node answers DEADLINE_EXCEEDED: {status:?}");
    let msg = status.message();
    assert!(msg.contains("lock on key b") && msg.contains(&txn_text(a)), "names the key and its holder: {msg}");
    assert!(msg.contains("aborted"), "says B is aborted there: {msg}");
    // Which deadline the node kept, in its own words ("waited 270ms for …"): the caller's, not
    // its own limit. (How long the call took on this machine is not the point.)
    let waited = waited_ms(msg);
    assert!(
        waited < NODE_REQUEST_LIMIT.as_millis() as u64,
        "the node gave up at its own limit, not at the caller's deadline of {B_DEADLINE:?}: {msg}"
    );
    assert!(took >= B_DEADLINE / 2, "B gave up before its deadline ({took:?}): {msg}");

    // Nothing of B is left at R: A alone holds a lock, nobody waits.
    let st = range_status(&node, b"b").await.expect("R is led here");
    assert_eq!((st.lock_txns, st.lock_waits), (1, 0), "only A's lock is left at R: {st:?}");
    let again = kv.txn_get(within(pb::TxnGetRequest { txn: b, key: b"b".to_vec() }, STEP_MAX)).await;
    let again = again.expect("an answer").into_inner().error.expect("B is aborted at R");
    assert_eq!(again.kind, pb::error::Kind::Aborted as i32, "B stays aborted: {again:?}");

    // B2's caller goes away (its own timer, no header): the node hears the stream reset, and
    // the waiter goes too — long before the node's own limit or B2's idle timeout.
    let b2 = txn(0xb2, now - 500_000_000);
    let mut impatient = kv_client(node.addr, Some(B_DEADLINE)).await;
    let gone = impatient.txn_get(pb::TxnGetRequest { txn: b2, key: b"b".to_vec() }).await;
    assert!(gone.is_err(), "B2's caller gives up: {gone:?}");
    until(GONE_CLEANUP_MAX, "B2's abandoned lock wait is dropped", || async {
        range_status(&node, b"b").await.filter(|st| st.lock_waits == 0 && st.lock_txns == 1)
    })
    .await;

    // A commits (its coordinator C decides; R applies and releases b).
    let commit = pb::TxnCommitRequest {
        txn: a,
        reads: vec![b"z".to_vec()],
        read_epoch: Some(read.epoch),
        mutations: vec![pb::Mutation { key: b"z".to_vec(), value: Some(b"from A".to_vec()) }],
        participants: vec![r.0],
        prepare_ts_max: prepared.ts,
        ..Default::default()
    };
    let committed = kv.txn_commit(within(commit, STEP_MAX)).await.expect("A commits").into_inner();
    assert_eq!(committed.error, None, "A commits");

    // A fresh transaction reads A's write (waiting, if need be, for R to apply A's outcome).
    let d = txn(0xd, now_nanos());
    let fresh = kv.txn_get(within(pb::TxnGetRequest { txn: d, key: b"b".to_vec() }, STEP_MAX)).await;
    let fresh = fresh.expect("D reads b").into_inner();
    assert_eq!((fresh.error, fresh.value.as_deref()), (None, Some(&b"from A"[..])), "D sees A's write");
    let done = pb::TxnCommitRequest {
        txn: d,
        reads: vec![b"b".to_vec()],
        read_epoch: Some(fresh.epoch),
        ..Default::default()
    };
    let done = kv.txn_commit(within(done, STEP_MAX)).await.expect("D ends").into_inner();
    assert_eq!(done.error, None, "D ends");

    // Every lock table is empty again.
    for key in [&b"b"[..], b"z"] {
        until(STEP_MAX, "the lock tables empty", || async {
            range_status(&node, key)
                .await
                .filter(|st| (st.lock_txns, st.locks_held, st.lock_waits, st.prepared_count) == (0, 0, 0, 0))
        })
        .await;
    }
    node.shutdown(Duration::ZERO).await;
}
