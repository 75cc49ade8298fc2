//! Multi-process tests: real `meridian start` processes on loopback, real gRPC, real RocksDB.
//! Every loop is bounded in time; every process is killed when its cluster is dropped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use meridian_client::{Client, ClientError};
use meridian_proto::v1 as pb;
use meridian_shard::paxos::NodeId;
use meridian_shard::range::RangeDescriptor;
use meridian_tests::process::{NodeArgs, ProcessCluster, eventually, rt, serial};

const BIN: &str = env!("CARGO_BIN_EXE_meridian");

async fn wait_replicated(client: &Client, n: usize) -> Vec<RangeDescriptor> {
    eventually(Duration::from_secs(90), "every range to have its replicas", || async {
        let (descs, _, _) = client.cluster_view().await.ok()?;
        descs.iter().all(|d| d.config.voters.len() == n && d.config.learners.is_empty()).then_some(descs)
    })
    .await
}

/// A client of `cluster` (20 s deadline per request), once every range has three replicas.
async fn replicated_client(cluster: &ProcessCluster) -> Arc<Client> {
    let client =
        Arc::new(Client::connect(cluster.addrs()).await.expect("connect").with_deadline(Duration::from_secs(20)));
    wait_replicated(&client, 3).await;
    client
}

/// The node (index into the cluster) whose replica holds the lease of the range starting at
/// `start`.
async fn leader_of(cluster: &ProcessCluster, client: &Client, start: &[u8]) -> Option<usize> {
    for (i, n) in cluster.nodes.iter().enumerate() {
        if !n.is_running() {
            continue;
        }
        if let Ok(s) = client.node_status(&n.addr).await
            && s.groups.iter().any(|g| g.lease_end > 0 && g.range.as_ref().is_some_and(|r| r.start == start))
        {
            return Some(i);
        }
    }
    None
}

/// Writers that keep putting fresh keys and remember every acknowledged one.
struct Writers {
    stop: Arc<AtomicBool>,
    /// Writes acknowledged so far, by all writers.
    acks: Arc<AtomicU64>,
    handles: Vec<tokio::task::JoinHandle<BTreeMap<String, String>>>,
}

/// How long the writers may take to get `WRITES_PER_STEP` more writes acknowledged.
const WRITES_STEP_MAX: Duration = Duration::from_secs(60);
/// Acknowledged writes that show the writers make progress at a step of a test.
const WRITES_PER_STEP: u64 = 10;

impl Writers {
    fn start(client: Arc<Client>, tasks: usize, prefix: &'static str) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(AtomicU64::new(0));
        let handles = (0..tasks)
            .map(|t| {
                let (client, stop, acks) = (client.clone(), stop.clone(), acks.clone());
                tokio::spawn(async move {
                    let mut acked = BTreeMap::new();
                    let mut seq = 0u64;
                    // Bounded: stop is set by the test, and every put has the client's deadline.
                    while !stop.load(Ordering::Relaxed) && seq < 100_000 {
                        let k = format!("{prefix}/{t}/{seq:06}");
                        let v = format!("v{seq}");
                        match client.put(k.as_bytes(), v.as_bytes()).await {
                            Ok(_) => {
                                acked.insert(k, v);
                                acks.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(ClientError::Ambiguous(_)) => {} // may or may not have committed
                            Err(e) => panic!("writer {t}: {e}"),
                        }
                        seq += 1;
                    }
                    acked
                })
            })
            .collect();
        Writers { stop, acks, handles }
    }

    /// Waits (bounded) until [`WRITES_PER_STEP`] more writes than now are acknowledged: the
    /// cluster serves writes at this step, however fast.
    async fn progress(&self, step: &str) {
        let from = self.acks.load(Ordering::Relaxed);
        eventually(WRITES_STEP_MAX, &format!("{WRITES_PER_STEP} more writes acknowledged {step}"), || async {
            (self.acks.load(Ordering::Relaxed) >= from + WRITES_PER_STEP).then_some(())
        })
        .await;
    }

    async fn finish(self) -> BTreeMap<String, String> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = BTreeMap::new();
        for h in self.handles {
            all.extend(h.await.expect("writer task"));
        }
        all
    }
}

async fn check_acked(client: &Client, acked: &BTreeMap<String, String>) {
    for (k, v) in acked {
        let (got, _) = client.get(k.as_bytes()).await.expect("read an acknowledged key");
        assert_eq!(got.as_deref(), Some(v.as_bytes()), "acknowledged write {k} must be readable");
    }
}

#[test]
fn three_processes_serve_writes_reads_scans_and_status() {
    let _serial = serial();
    let cluster = ProcessCluster::start(BIN, 3, NodeArgs::default()).expect("start cluster");
    let rt = rt();
    rt.block_on(async {
        let client = Client::connect(cluster.addrs()).await.expect("connect");
        wait_replicated(&client, 3).await;
        for i in 0..100 {
            client.put(format!("k{i:03}").as_bytes(), format!("{i}").as_bytes()).await.expect("put");
        }
        client.delete(b"k050").await.expect("delete");
        assert_eq!(client.get(b"k007").await.expect("get").0.as_deref(), Some(&b"7"[..]));
        assert_eq!(client.get(b"k050").await.expect("get").0, None);
        assert_eq!(client.get(b"nope").await.expect("get").0, None);
        let rows = client.scan(b"k", b"l", 1000).await.expect("scan");
        assert_eq!(rows.len(), 99);
    });
    let (ok, out) = cluster.run_cli(&["status", "--addr", &cluster.nodes[0].addr]);
    assert!(ok, "status failed: {out}");
    assert!(out.contains("Nodes (3)") && out.contains("Ranges (2)") && out.contains("left"), "status output:\n{out}");
    readme_kv_commands_work(&cluster);
}

/// The README's `meridian kv --addr 127.0.0.1:7001 …` lines, run as written against `cluster`
/// (its address for the README's).
fn readme_kv_commands_work(cluster: &ProcessCluster) {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).expect("README.md");
    let lines: Vec<&str> = readme.lines().filter(|l| l.starts_with("meridian kv --addr 127.0.0.1:7001 ")).collect();
    assert!(lines.len() >= 3, "the README shows kv put, get and scan: {lines:?}");
    for line in lines {
        let args: Vec<&str> = line
            .split_whitespace()
            .skip(1)
            .map(|w| if w == "127.0.0.1:7001" { cluster.nodes[0].addr.as_str() } else { w })
            .collect();
        let (ok, out) = cluster.run_cli(&args);
        assert!(ok, "the README's `{line}` must work as written: {out}");
        if line.contains(" get ") || line.contains(" scan ") {
            assert!(out.contains("100"), "`{line}` reads what the README's put wrote: {out}");
        }
    }
}

#[test]
fn kill_9_of_a_leader_loses_nothing_acknowledged_and_the_node_catches_up() {
    let _serial = serial();
    let mut cluster = ProcessCluster::start(BIN, 3, NodeArgs::default()).expect("start cluster");
    let rt = rt();
    rt.block_on(async {
        let client = replicated_client(&cluster).await;
        let writers = Writers::start(client.clone(), 3, "w");
        writers.progress("before the kill").await;
        let victim =
            eventually(Duration::from_secs(20), "a leader of the user range", || leader_of(&cluster, &client, b"\x01"))
                .await;
        cluster.kill(victim);
        let killed_at = Instant::now();
        // Writes continue once the dead leader's lease (1 s) has expired.
        let before = client.put(b"after-kill", b"1").await;
        assert!(before.is_ok(), "a write after the kill: {before:?}");
        eprintln!("first write after kill -9 took {:?}", killed_at.elapsed());
        writers.progress("with the leader dead").await;
        cluster.restart(victim).expect("restart the killed node");
        writers.progress("after the restart").await;
        let acked = writers.finish().await;
        check_acked(&client, &acked).await;
        // The restarted node caught up: its replica of the user range applied what the leader has.
        let addr = cluster.nodes[victim].addr.clone();
        eventually(Duration::from_secs(30), "the restarted node to catch up", || async {
            let st = client.node_status(&addr).await.ok()?;
            let mine = st.groups.iter().find(|g| g.range.as_ref().is_some_and(|r| r.start == b"\x01"))?.applied;
            let leader = leader_of(&cluster, &client, b"\x01").await?;
            let lst = client.node_status(&cluster.nodes[leader].addr).await.ok()?;
            let theirs = lst.groups.iter().find(|g| g.range.as_ref().is_some_and(|r| r.start == b"\x01"))?.chosen;
            (mine + 2 >= theirs).then_some(())
        })
        .await;
    });
}

#[test]
fn split_move_and_merge_under_traffic_keep_every_acknowledged_write() {
    let _serial = serial();
    // Rebalancing off: it would keep moving the halves' replicas apart while the test lines
    // them up for the merge.
    let args = NodeArgs { no_rebalance: true, ..NodeArgs::default() };
    let mut cluster = ProcessCluster::start(BIN, 4, args).expect("start cluster");
    let rt = rt();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(async {
            let client = Arc::new(
                Client::connect(cluster.addrs()).await.expect("connect").with_deadline(Duration::from_secs(20)),
            );
            wait_replicated(&client, 3).await;
            let writers = Writers::start(client.clone(), 2, "t");
            writers.progress("before the split").await;
            // Split between the two writers' key spaces.
            client.split(b"t/1").await.expect("split");
            writers.progress("after the split").await;
            // Move a replica of the right half to a node that has none.
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                assert!(Instant::now() < deadline, "no move succeeded within 60 s");
                let right = client.range_of(b"t/1").await.expect("right half");
                let to = cluster
                    .nodes
                    .iter()
                    .enumerate()
                    .map(|(i, _)| NodeId(i as u64 + 1))
                    .find(|n| !right.config.contains(*n));
                let from = right.config.voters.iter().copied().next();
                if let (Some(to), Some(from)) = (to, from) {
                    match client.move_replica(b"t/1", from, to).await {
                        Ok(_) => break,
                        Err(e) => eprintln!("move attempt: {e}"),
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            writers.progress("after the move").await;
            // Merge: the two halves must share replicas; let placement settle, align if needed.
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                assert!(Instant::now() < deadline, "no merge succeeded within 90 s");
                let left = client.range_of(b"\x01").await.expect("left half");
                if left.end.is_empty() {
                    break; // merged
                }
                let right = client.range_of(&left.end).await.expect("right half");
                if left.config == right.config {
                    match client.merge(b"\x01").await {
                        Ok(_) => break,
                        Err(e) => eprintln!("merge attempt: {e}"),
                    }
                } else if let (Some(from), Some(to)) = (
                    right.config.voters.iter().copied().find(|n| !left.config.contains(*n)),
                    left.config.voters.iter().copied().find(|n| !right.config.contains(*n)),
                ) {
                    if let Err(e) = client.move_replica(&right.start, from, to).await {
                        eprintln!("aligning {} ({}) with {} ({}): {e}", right.id, right.config, left.id, left.config);
                    }
                } else {
                    eprintln!("cannot align {} ({}) with {} ({})", right.id, right.config, left.id, left.config);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            writers.progress("after the merge").await;
            let acked = writers.finish().await;
            check_acked(&client, &acked).await;
        })
    }));
    if let Err(panic) = result {
        cluster.dump_logs();
        std::panic::resume_unwind(panic);
    }
    let _ = cluster.stop(0);
}

/// Raw bytes through tonic, to send what a well-behaved client never would.
#[derive(Clone, Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        let mut v = vec![0; src.remaining()];
        src.copy_to_slice(&mut v);
        Ok(Some(v))
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

async fn raw_call(addr: &str, path: &'static str, body: Vec<u8>) -> Result<Vec<u8>, tonic::Status> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await.expect("ready");
    grpc.unary(tonic::Request::new(body), tonic::codegen::http::uri::PathAndQuery::from_static(path), RawCodec)
        .await
        .map(|r| r.into_inner())
}

#[test]
fn bad_input_gets_clear_errors_and_never_hurts_the_node() {
    let _serial = serial();
    let cluster = ProcessCluster::start(BIN, 1, NodeArgs { replication: 1, ..NodeArgs::default() }).expect("start");
    let addr = cluster.nodes[0].addr.clone();
    let rt = rt();
    rt.block_on(async {
        let client = Client::connect([addr.clone()]).await.expect("connect");
        let ping = || async {
            let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .expect("uri")
                .connect()
                .await
                .expect("connect");
            pb::node_client::NodeClient::new(ch)
                .ping(pb::PingRequest { from: None })
                .await
                .expect("node still answers")
                .into_inner()
        };
        let cluster_id = ping().await.cluster_id;
        // Unknown range ids.
        let mut admin = client.admin_at(&addr).expect("admin");
        let r = admin.merge(pb::MergeRequest { group: 424_242 }).await.expect("rpc").into_inner();
        let e = r.error.expect("unknown range is an error");
        assert!(e.message.contains("not on this node"), "{}", e.message);
        let r = admin
            .move_replica(pb::MoveReplicaRequest { group: 424_242, from_node: 1, to_node: 2 })
            .await
            .expect("rpc")
            .into_inner();
        assert!(r.error.is_some());
        // Garbage and truncated peer payloads.
        let mut node = pb::node_client::NodeClient::new(
            tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .expect("uri")
                .connect()
                .await
                .expect("connect"),
        );
        let garbage = pb::PeerBatch {
            from: Some(pb::Sender { cluster_id: cluster_id.clone(), node_id: 9 }),
            payload: vec![0xFF; 64],
            format: 1,
        };
        let s = node.deliver(garbage).await.expect_err("garbage payload refused");
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert!(s.message().contains("undecodable peer batch"), "{}", s.message());
        let wrong_format = pb::PeerBatch {
            from: Some(pb::Sender { cluster_id: cluster_id.clone(), node_id: 9 }),
            payload: vec![],
            format: 99,
        };
        let s = node.deliver(wrong_format).await.expect_err("unknown format refused");
        assert_eq!(s.code(), tonic::Code::FailedPrecondition);
        let foreign = pb::PeerBatch {
            from: Some(pb::Sender { cluster_id: "some-other-cluster".into(), node_id: 9 }),
            payload: vec![],
            format: 1,
        };
        let s = node.deliver(foreign).await.expect_err("foreign cluster refused");
        assert!(s.message().contains("belongs to cluster some-other-cluster"), "{}", s.message());
        // A protobuf message cut short.
        let full = prost::Message::encode_to_vec(&pb::GetRequest { key: b"a-fairly-long-key".to_vec() });
        let s = raw_call(&addr, "/meridian.v1.Kv/Get", full[..full.len() / 2].to_vec())
            .await
            .expect_err("truncated protobuf refused");
        assert!(s.message().to_lowercase().contains("decode"), "{}", s.message());
        // An oversized message (over the 64 MiB gRPC limit).
        let big = prost::Message::encode_to_vec(&pb::WriteRequest {
            mutations: vec![pb::Mutation { key: b"big".to_vec(), value: Some(vec![7; 65 << 20]) }],
        });
        let s = raw_call(&addr, "/meridian.v1.Kv/Write", big).await.expect_err("oversized message refused");
        assert!(
            matches!(s.code(), tonic::Code::ResourceExhausted | tonic::Code::OutOfRange | tonic::Code::Internal),
            "{s:?}"
        );
        // Values and keys over the storage limits; reserved keys; empty writes.
        let e = client.put(b"k", &vec![1u8; 2 << 20]).await.expect_err("2 MiB value refused");
        assert!(e.to_string().contains("limit is 1048576 bytes"), "{e}");
        assert!(matches!(client.put(&vec![b'k'; 9000], b"v").await, Err(ClientError::Invalid(_))));
        assert!(matches!(client.put(b"\x00meta", b"v").await, Err(ClientError::Invalid(_))));
        // Raw garbage on the TCP port.
        {
            use tokio::io::AsyncWriteExt;
            let mut s = tokio::net::TcpStream::connect(&addr).await.expect("connect");
            let _ = s.write_all(b"GET / HTTP/1.1\r\n\r\n\x00\x01\x02 not http/2 at all").await;
        }
        // Through all of that the node kept serving.
        assert_eq!(ping().await.cluster_id, cluster_id);
        client.put(b"still", b"alive").await.expect("writes still work");
    });
}

#[test]
fn a_node_of_another_cluster_cannot_join() {
    let _serial = serial();
    let a = ProcessCluster::start(BIN, 1, NodeArgs { replication: 1, ..NodeArgs::default() }).expect("cluster a");
    let mut b = ProcessCluster::start(BIN, 1, NodeArgs { replication: 1, ..NodeArgs::default() }).expect("cluster b");
    b.stop(0).expect("stop b");
    let b_dir = b.nodes[0].data_dir.to_string_lossy().into_owned();
    let (ok, out) = a.run_cli(&["start", "--data-dir", &b_dir, "--listen", "127.0.0.1:0", "--join", &a.nodes[0].addr]);
    assert!(!ok, "a node of cluster b must not start joined to cluster a:\n{out}");
    assert!(out.contains("belongs to cluster") && out.contains("empty --data-dir"), "clear error expected:\n{out}");
}

/// Read-write transactions through the client against real processes: concurrent
/// read-modify-write increments never lose an update (shared locks, wound-wait, commit), and
/// concurrent transfers between two accounts never change their sum as audits see it.
#[test]
fn read_write_transactions_lose_no_update_and_keep_the_sum() {
    let _serial = serial();
    let cluster = ProcessCluster::start(BIN, 3, NodeArgs::default()).expect("start cluster");
    let rt = rt();
    rt.block_on(async {
        let client = replicated_client(&cluster).await;
        client.put(b"acct/a", b"500").await.expect("seed a");
        client.put(b"acct/b", b"500").await.expect("seed b");
        let num = |v: Option<Vec<u8>>| -> i64 {
            v.map(|v| String::from_utf8(v).expect("utf8").parse().expect("a number")).unwrap_or(0)
        };
        let mut tasks = Vec::new();
        for w in 0..4u64 {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                let mut done = (0u64, 0u64);
                for i in 0..15u64 {
                    // Increment a shared counter.
                    client
                        .read_write(|t| {
                            Box::pin(async move {
                                let n = num(t.get(b"acct/counter").await?);
                                t.put(b"acct/counter", (n + 1).to_string().as_bytes());
                                Ok(())
                            })
                        })
                        .await
                        .expect("increment commits");
                    done.0 += 1;
                    // Move money one way or the other.
                    let (from, to): (&[u8], &[u8]) =
                        if (w + i) % 2 == 0 { (b"acct/a", b"acct/b") } else { (b"acct/b", b"acct/a") };
                    client
                        .read_write(|t| {
                            Box::pin(async move {
                                let (f, g) = (num(t.get(from).await?), num(t.get(to).await?));
                                t.put(from, (f - 7).to_string().as_bytes());
                                t.put(to, (g + 7).to_string().as_bytes());
                                Ok(())
                            })
                        })
                        .await
                        .expect("transfer commits");
                    // Audit: both balances in one transaction.
                    let (sum, _) = client
                        .read_write(|t| {
                            Box::pin(async move { Ok(num(t.get(b"acct/a").await?) + num(t.get(b"acct/b").await?)) })
                        })
                        .await
                        .expect("audit commits");
                    assert_eq!(sum, 1000, "an audit saw money appear or vanish");
                    done.1 += 1;
                }
                done
            }));
        }
        let mut increments = 0;
        for t in tasks {
            increments += t.await.expect("worker").0;
        }
        let (counter, _) = client.get(b"acct/counter").await.expect("read counter");
        assert_eq!(num(counter) as u64, increments, "every committed increment is counted once");
        let (a, _) = client.get(b"acct/a").await.expect("a");
        let (b, _) = client.get(b"acct/b").await.expect("b");
        assert_eq!(num(a) + num(b), 1000);
        // A transaction that thinks for longer than the 10 s idle timeout between its read and
        // its commit stays alive: the client sends keepalives while the body runs.
        let (_, ts) = client
            .read_write(|t| {
                Box::pin(async move {
                    let n = num(t.get(b"acct/slow").await?);
                    tokio::time::sleep(Duration::from_secs(12)).await;
                    t.put(b"acct/slow", (n + 1).to_string().as_bytes());
                    Ok(())
                })
            })
            .await
            .expect("a slow transaction commits");
        assert!(ts > meridian_truetime::Timestamp::ZERO);
    });
}

/// Longest the bank test waits for its transfers or audits to reach the next step.
const STEP_MAX: Duration = Duration::from_secs(90);

/// Accounts of the bank test, spread over four ranges so most transfers cross ranges.
const ACCOUNTS: usize = 16;
const INITIAL: i64 = 100;

fn account(i: usize) -> Vec<u8> {
    format!("bank/{i:02}").into_bytes()
}

fn balance(v: Option<Vec<u8>>) -> i64 {
    v.map(|v| String::from_utf8(v).expect("utf8").parse().expect("a number")).unwrap_or(0)
}

/// Every account's balance summed, and the smallest, read in `ro`'s snapshot.
fn sum_accounts<'t>(ro: &'t mut meridian_client::ReadOnly<'_>) -> meridian_client::TxnFuture<'t, (i64, i64)> {
    Box::pin(async move {
        let rows = ro.scan(b"bank/", b"bank/~", ACCOUNTS + 1).await?;
        assert_eq!(rows.len(), ACCOUNTS, "every account is in the snapshot");
        let balances: Vec<i64> = rows.into_iter().map(|(_, v)| balance(Some(v))).collect();
        Ok((balances.iter().sum(), balances.iter().copied().min().unwrap_or(0)))
    })
}

/// Sums every account in one lock-free snapshot (`stale`: a bounded-staleness one).
async fn audit(client: &Client, stale: bool) -> Result<((i64, i64), meridian_truetime::Timestamp), ClientError> {
    if stale {
        client.snapshot_stale(Duration::from_millis(500), sum_accounts).await
    } else {
        client.read_only(sum_accounts).await
    }
}

#[test]
fn bank_transfers_across_ranges_keep_the_total_while_leaders_are_killed() {
    let _serial = serial();
    let mut cluster = ProcessCluster::start(BIN, 3, NodeArgs::default()).expect("start cluster");
    let rt = rt();
    rt.block_on(async {
        let client = replicated_client(&cluster).await;
        for i in 0..ACCOUNTS {
            client.put(&account(i), INITIAL.to_string().as_bytes()).await.expect("seed an account");
        }
        for i in [4, 8, 12] {
            client.split(&account(i)).await.expect("split the accounts");
        }
        eventually(Duration::from_secs(30), "the accounts to span four ranges", || async {
            let descs = wait_replicated(&client, 3).await;
            (descs
                .iter()
                .filter(|d| {
                    d.start.as_slice() < &b"bank/~"[..] && (d.end.is_empty() || d.end.as_slice() > &b"bank/"[..])
                })
                .count()
                >= 4)
                .then_some(())
        })
        .await;

        let stop = Arc::new(AtomicBool::new(false));
        // Transfers acknowledged, transfers ended (any outcome) and audits done, so far.
        let (acks, ended, audited) =
            (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        // Real time of the run, for the external-consistency check.
        let epoch = Instant::now();
        let mut workers = Vec::new();
        for w in 0..4u64 {
            let (client, stop, acks, ended) = (client.clone(), stop.clone(), acks.clone(), ended.clone());
            workers.push(tokio::spawn(async move {
                // Ledger keys of acknowledged transfers, their real-time spans and timestamps.
                let mut acked = Vec::new();
                let mut history = Vec::new();
                let mut unknown = 0u64;
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ w;
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) && seq < 10_000 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let from = (x % ACCOUNTS as u64) as usize;
                    let to = (from + 1 + (x >> 8) as usize % (ACCOUNTS - 1)) % ACCOUNTS;
                    let amount = 1 + (x >> 20) as i64 % 10;
                    // Each transfer also writes its ledger entry, in the same transaction.
                    let ledger = format!("ledger/{w}/{seq:06}");
                    let entry = format!("{from},{to},{amount}");
                    let invoke_ns = epoch.elapsed().as_nanos() as u64;
                    let r = client
                        .read_write(|t| {
                            let (ledger, entry) = (ledger.clone(), entry.clone());
                            Box::pin(async move {
                                let f = balance(t.get(&account(from)).await?);
                                let g = balance(t.get(&account(to)).await?);
                                if f >= amount {
                                    t.put(&account(from), (f - amount).to_string().as_bytes());
                                    t.put(&account(to), (g + amount).to_string().as_bytes());
                                    t.put(ledger.as_bytes(), entry.as_bytes());
                                }
                                Ok(f >= amount)
                            })
                        })
                        .await;
                    match r {
                        Ok((true, ts)) => {
                            history.push(meridian_check::external::Committed {
                                id: ledger.clone(),
                                invoke_ns,
                                ack_ns: epoch.elapsed().as_nanos() as u64,
                                ts: ts.nanos(),
                            });
                            acked.push(ledger);
                            acks.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok((false, _)) => {}
                        // The outcome of these is unknown to the client: the ledger says.
                        Err(ClientError::Ambiguous(_) | ClientError::Unavailable(_) | ClientError::Transport(_)) => {
                            unknown += 1
                        }
                        Err(ClientError::Aborted(_)) => {}
                        Err(e) => panic!("transfer: {e:?}"),
                    }
                    ended.fetch_add(1, Ordering::Relaxed);
                    seq += 1;
                }
                (acked, unknown, history)
            }));
        }
        let auditor = {
            let (client, stop, audited) = (client.clone(), stop.clone(), audited.clone());
            tokio::spawn(async move {
                let mut audits = 0;
                let mut history = Vec::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) && n < 100_000 {
                    n += 1;
                    let stale = n.is_multiple_of(3);
                    let invoke_ns = epoch.elapsed().as_nanos() as u64;
                    match audit(&client, stale).await {
                        Ok(((sum, min), ts)) => {
                            assert_eq!(sum, ACCOUNTS as i64 * INITIAL, "an audit saw money appear or vanish");
                            assert!(min >= 0, "an audit saw a negative balance");
                            audits += 1;
                            audited.fetch_add(1, Ordering::Relaxed);
                            if !stale {
                                let ack_ns = epoch.elapsed().as_nanos() as u64;
                                let id = format!("audit {n}");
                                history.push(meridian_check::external::Committed {
                                    id,
                                    invoke_ns,
                                    ack_ns,
                                    ts: ts.nanos(),
                                });
                            }
                        }
                        Err(ClientError::Unavailable(_) | ClientError::Transport(_)) => {}
                        Err(e) => panic!("audit: {e}"),
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (audits, history)
            })
        };
        // At least `n` more of `counter` than now, within STEP_MAX.
        let grows = |counter: &Arc<AtomicU64>, n: u64, what: &'static str| {
            let (counter, from) = (counter.clone(), counter.load(Ordering::Relaxed));
            eventually(STEP_MAX, what, move || {
                let counter = counter.clone();
                async move { (counter.load(Ordering::Relaxed) >= from + n).then_some(()) }
            })
        };
        grows(&acks, 10, "transfers acknowledged before the kills").await;
        grows(&audited, 2, "audits before the kills").await;
        // Kill the leaders of two of the accounts' ranges in turn (each is a coordinator of some
        // transfers and a participant of others), and bring them back. Transfers run while the
        // node is down (each worker's ends, whatever its outcome) and after it is back.
        for start in [account(4), account(12)] {
            let victim = eventually(Duration::from_secs(20), "a leader of an accounts range", || {
                leader_of(&cluster, &client, &start)
            })
            .await;
            cluster.kill(victim);
            grows(&ended, 4, "transfers ended with a leader dead").await;
            cluster.restart(victim).expect("restart the killed node");
            grows(&ended, 4, "transfers ended after the restart").await;
        }
        stop.store(true, Ordering::Relaxed);
        let mut acked = Vec::new();
        let mut unknown = 0;
        let (audits, mut history) = auditor.await.expect("auditor");
        for w in workers {
            let (a, u, h) = w.await.expect("worker");
            acked.extend(a);
            unknown += u;
            history.extend(h);
        }
        // Every transfer or audit that began after another was acknowledged has the larger
        // timestamp (commit wait, Spanner §4.1.2).
        if let Err(v) = meridian_check::external::check(&history) {
            panic!("{v}");
        }
        eprintln!("bank: {} transfers acknowledged, {unknown} unknown, {audits} audits", acked.len());

        // Every acknowledged transfer is in the ledger, and the balances are exactly the initial
        // ones moved by the ledger's transfers (acknowledged, plus whichever unknown committed).
        // Known liveness problem (see DESIGN-NOTES, "Open problems"): after a leader is killed
        // and restarted, a range was seen with no leader able to serve for 20+ s. The ledger
        // read below is about safety, so it waits up to four client deadlines, printing the
        // replicas' state after each failure for the diagnosis.
        let mut ledger = None;
        for attempt in 1..=4 {
            match client
                .read_only(|ro| Box::pin(async move { ro.scan(b"ledger/", b"ledger/~", 1_000_000).await }))
                .await
            {
                Ok((l, _)) => {
                    ledger = Some(l);
                    break;
                }
                Err(e) => {
                    eprintln!("reading the ledger, attempt {attempt}: {e}");
                    for n in &cluster.nodes {
                        match client.node_status(&n.addr).await {
                            Ok(s) => {
                                for g in s.groups {
                                    let r = g.range.as_ref().map(|r| (r.id, r.start.clone()));
                                    eprintln!(
                                        "n{} {:?} role {} ballot {} leader {:?} lease {} chosen {} applied {}",
                                        s.node_id, r, g.role, g.ballot, g.leader, g.lease_end, g.chosen, g.applied
                                    );
                                }
                            }
                            Err(e) => eprintln!("{}: {e}", n.addr),
                        }
                    }
                }
            }
        }
        let Some(ledger) = ledger else {
            cluster.dump_logs();
            panic!("the ledger stayed unreadable for four client deadlines");
        };
        let entries: BTreeMap<Vec<u8>, Vec<u8>> = ledger.into_iter().collect();
        for k in &acked {
            assert!(entries.contains_key(k.as_bytes()), "acknowledged transfer {k} is lost");
        }
        let mut expect = [INITIAL; ACCOUNTS];
        for v in entries.values() {
            let f: Vec<i64> =
                String::from_utf8(v.clone()).expect("utf8").split(',').map(|p| p.parse().expect("n")).collect();
            expect[f[0] as usize] -= f[2];
            expect[f[1] as usize] += f[2];
        }
        for (i, want) in expect.iter().enumerate() {
            let (v, _) = client.get(&account(i)).await.expect("read an account");
            assert_eq!(balance(v), *want, "account {i} matches the ledger");
        }
    });
}

/// The key of row `id` of the first table SQL creates (for splitting a table across ranges).
fn row_key(id: i64) -> Vec<u8> {
    let mut k = meridian_sql::keys::table_prefix(meridian_sql::keys::FIRST_TABLE_ID);
    meridian_sql::encoding::key::encode(&mut k, &meridian_sql::Value::Int(id));
    k
}

async fn pg(addr: &str) -> tokio_postgres::Client {
    let url = format!("postgresql://root@{addr}/meridian?sslmode=disable");
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect over pg");
    tokio::spawn(conn);
    client
}

async fn sum_balances(c: &tokio_postgres::Client) -> i64 {
    let row = c.query_one("SELECT SUM(balance) FROM accounts", &[]).await.expect("sum");
    row.get::<_, i64>(0)
}

#[test]
fn sql_over_the_cluster_is_transactional_across_ranges_and_nodes() {
    let _serial = serial();
    let cluster = ProcessCluster::start(BIN, 3, NodeArgs::default()).expect("start cluster");
    let rt = rt();
    rt.block_on(async {
        let client = replicated_client(&cluster).await;
        let a = pg(&cluster.nodes[0].pg_addr).await;
        let b = pg(&cluster.nodes[1].pg_addr).await;
        a.batch_execute("CREATE TABLE accounts (id INT PRIMARY KEY, balance INT, owner TEXT)").await.expect("create");
        let values: Vec<String> = (0..20).map(|i| format!("({i}, 100, 'owner{i}')")).collect();
        a.batch_execute(&format!("INSERT INTO accounts VALUES {}", values.join(", "))).await.expect("insert");
        for id in [5, 10, 15] {
            client.split(&row_key(id)).await.expect("split the table");
        }
        // The table and its rows are visible through another node, in one snapshot.
        assert_eq!(sum_balances(&b).await, 2_000);
        // Transfers across ranges from two nodes at once; aborted ones (40001) are re-run.
        let mut tasks = Vec::new();
        for (w, c) in [a, b].into_iter().enumerate() {
            tasks.push(tokio::spawn(async move {
                let mut done = 0;
                for i in 0..10i64 {
                    let (from, to) = ((i * 7 + w as i64) % 20, (i * 11 + 13) % 20);
                    if from == to {
                        continue;
                    }
                    for attempt in 0..50 {
                        let sql = format!(
                            "BEGIN; UPDATE accounts SET balance = balance - 3 WHERE id = {from}; \
                             UPDATE accounts SET balance = balance + 3 WHERE id = {to}; COMMIT"
                        );
                        match c.batch_execute(&sql).await {
                            Ok(()) => {
                                done += 1;
                                break;
                            }
                            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::T_R_SERIALIZATION_FAILURE) => {
                                let _ = c.batch_execute("ROLLBACK").await;
                                assert!(attempt < 49, "transfer never committed: {e}");
                                tokio::time::sleep(Duration::from_millis(5 << attempt.min(5))).await;
                            }
                            Err(e) => panic!("transfer: {e:?}"),
                        }
                    }
                }
                (c, done)
            }));
        }
        let mut conns = Vec::new();
        let mut done = 0;
        for t in tasks {
            let (c, d) = t.await.expect("worker");
            conns.push(c);
            done += d;
        }
        assert!(done >= 15, "transfers committed ({done})");
        let c = &conns[0];
        assert_eq!(sum_balances(c).await, 2_000, "transfers keep the total");
        c.batch_execute("BEGIN READ ONLY").await.expect("begin read only");
        assert_eq!(sum_balances(c).await, 2_000);
        c.batch_execute("COMMIT").await.expect("end read only");
        // Bad input is a clear error, and the table is unharmed.
        let e = c.batch_execute("INSERT INTO accounts VALUES (3, 1, 'dup')").await.expect_err("duplicate key");
        assert_eq!(e.code(), Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION), "{e}");
        let e = c.batch_execute("SELECT * FROM nowhere").await.expect_err("unknown table");
        assert_eq!(e.code(), Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE), "{e}");
        assert_eq!(sum_balances(&conns[1]).await, 2_000);
        // DDL is transactional and cluster-wide.
        c.batch_execute("DROP TABLE accounts").await.expect("drop");
        let e = conns[1].query("SELECT * FROM accounts", &[]).await.expect_err("dropped everywhere");
        assert_eq!(e.code(), Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE), "{e}");
    });
}

#[test]
fn the_bank_workload_command_runs_and_checks_its_history() {
    let _serial = serial();
    let cluster = ProcessCluster::start(BIN, 3, NodeArgs::default()).expect("start cluster");
    let rt = rt();
    rt.block_on(async {
        replicated_client(&cluster).await;
    });
    let addr = cluster.nodes[0].addr.clone();
    let history = cluster.root().join("bank.jsonl");
    let history = history.to_str().expect("utf-8 path");
    let (ok, out) =
        cluster.run_cli(&["workload", "bank", "--addr", &addr, "init", "--accounts", "12", "--ranges", "3"]);
    assert!(ok, "init: {out}");
    let (ok, out) = cluster.run_cli(&[
        "workload",
        "bank",
        "--addr",
        &addr,
        "run",
        "--seconds",
        "4",
        "--workers",
        "3",
        "--history",
        history,
    ]);
    if !(ok && out.contains(" 0 violations")) {
        cluster.dump_logs();
        panic!("run: {out}");
    }
    // A second run on the same bank checks clean too: ledger ids carry their run.
    let second = cluster.root().join("bank2.jsonl");
    let second = second.to_str().expect("utf-8 path");
    let run = ["workload", "bank", "--addr", &addr, "run", "--seconds", "2", "--workers", "3", "--history", second];
    let (ok, out) = cluster.run_cli(&run);
    if !(ok && out.contains(" 0 violations")) {
        cluster.dump_logs();
        panic!("second run: {out}");
    }
    // Tampering with a balance behind the workload's back is caught by the ledger check.
    let (ok, out) = cluster.run_cli(&["kv", "--addr", &addr, "put", "bank/acct/0003", "1000000"]);
    assert!(ok, "{out}");
    let (ok, out) = cluster.run_cli(&["workload", "bank", "--addr", &addr, "check", "--history", history]);
    assert!(!ok && out.contains("the ledger says"), "check after tampering: {out}");
}
