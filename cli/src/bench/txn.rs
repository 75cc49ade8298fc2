//! `meridian bench micro` (formerly `bench txn`): transactions through the Rust client against a cluster of
//! `meridian start` processes on loopback (issue 5; compare Spanner OSDI 2012, Table 3).
//!
//! For each replica count and each ε, a fresh cluster whose user keyspace is split at
//! [`SPLIT_KEY`], so that `txn/a/…` and `txn/b/…` live in two ranges (two Paxos groups). Each
//! client task touches only its own keys: transactions never contend, so this measures the
//! protocol, not wound-wait. The nodes run with `--no-rebalance` and the benchmark puts the two
//! ranges' leaders on two nodes other than the meta range's leader (where there are enough
//! nodes), so that two-phase commit spans two leader processes and no leader moves mid-run.
//!
//! ```text
//!   workload            one operation                        floor (in sequence)
//!   rw-one-range        get a; put a; commit                 RTT (TxnGet) + RTT (TxnCommit)
//!                                                            + fsync + RTT + fsync (Paxos) ‖ 2ε
//!   rw-two-ranges       get a; get b; put a, b; commit       2 RTT (gets) + prepare at b's range
//!                       by two-phase commit                  (RTT + Paxos) + commit at a's range
//!                                                            (RTT + Paxos ‖ 2ε)
//!   rw-two-ranges-hot   the same, on the same two keys       + the previous transaction's resolve
//!                       every time                           at b's range (message + Paxos)
//!   read-only           read_only { get a }                  RTT: the leader picks TT.now().latest
//!   stale               snapshot_stale(1 s) { get a }        RTT, at the replicas in turn
//!   follower-snap       Read at a follower of a's range,     RTT, at a follower
//!                       at a timestamp it has applied
//!   follower-stale      Read at that follower at now − 1 s   RTT; refusals are counted as failed
//! ```
//!
//! `‖ 2ε`: commit wait runs while the Paxos write is in flight, so a commit costs about
//! `max(Paxos, 2ε)`, not their sum. The read-write workloads cycle through
//! [`KEYS_PER_TASK`] keys per client so that no transaction waits for its predecessor's locks —
//! except `rw-two-ranges-hot`, which shows that wait: a participant holds its locks until the
//! coordinator's decision reaches it and is logged there, after the client has its answer.
//!
//! The client sends a read at a fixed timestamp (a snapshot's) to the replicas in turn; a
//! follower serves it up to its highest applied write (`t_paxos_safe`), or refuses, asks the
//! leader to close the timestamp (an empty Paxos write) and the client goes to the leader.
//! `follower-snap` sends `Read` straight to one follower at a timestamp it has applied, to
//! measure a follower read alone; `follower-stale` sends it reads at `now − 1 s` of the then
//! idle range and counts how many it refuses. (`--staleness-ms` changes the 1 s.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use meridian_client::{Client, ReadOnly, TxnFuture};
use meridian_proto::v1 as pb;
use meridian_shard::paxos::NodeId;
use meridian_shard::range::{META_GROUP, RangeDescriptor};
use tonic::transport::Channel;

use super::cluster::{View, place_leaders, spawn_cluster, wait_replicated};
use super::plot::{self, Line};
use super::{CLIENT_DEADLINE, Floors, LEADERS_STABLE, Latency, OP_TIMEOUT, SETTLE_MAX, WARM_OPS, drive, print_table};

/// Arguments of `meridian bench micro`.
#[derive(clap::Args)]
pub struct TxnArgs {
    /// Replica counts (a cluster of that many nodes each).
    #[arg(long, value_delimiter = ',', default_value = "1,3,5")]
    replicas: Vec<usize>,
    /// TrueTime ε values in milliseconds (a fresh cluster each; 0 makes commit wait free).
    #[arg(long, value_delimiter = ',', default_value = "0,4")]
    epsilon_ms: Vec<u64>,
    /// Concurrent clients (1 for latency, more for throughput).
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    concurrency: Vec<usize>,
    /// Workloads to run.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "rw-one-range,rw-two-ranges,rw-two-ranges-hot,read-only,stale,follower-snap,follower-stale"
    )]
    workloads: Vec<Workload>,
    /// Seconds per measurement (one workload at one concurrency).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// How old the `stale` and `follower-stale` reads are, in milliseconds.
    #[arg(long, default_value_t = 1_000)]
    staleness_ms: u64,
    #[command(flatten)]
    out: super::Outputs,
}

/// What one operation of a measurement is (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
enum Workload {
    /// A read-write transaction reading and writing one key.
    RwOneRange,
    /// A read-write transaction reading and writing a key in each of two ranges (2PC).
    RwTwoRanges,
    /// `rw-two-ranges` on the same two keys every time: each transaction first waits for the
    /// previous one's locks to be released at the participant (after its commit is resolved there).
    RwTwoRangesHot,
    /// A read-only transaction of one key.
    ReadOnly,
    /// A snapshot read of one key, `--staleness-ms` old, through the client (replicas in turn).
    Stale,
    /// A snapshot read of one key at a follower, at a timestamp the follower has applied.
    FollowerSnap,
    /// A read of one key `--staleness-ms` old sent to a follower only; refusals count as failed.
    FollowerStale,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::RwOneRange => "rw-one-range",
            Workload::RwTwoRanges => "rw-two-ranges",
            Workload::RwTwoRangesHot => "rw-two-ranges-hot",
            Workload::ReadOnly => "read-only",
            Workload::Stale => "stale",
            Workload::FollowerSnap => "follower-snap",
            Workload::FollowerStale => "follower-stale",
        }
    }
}

/// Where the keyspace is split: `txn/a/…` below, `txn/b/…` above.
const SPLIT_KEY: &[u8] = b"txn/b";
/// Keys each client task cycles through in the read-write workloads (but `rw-two-ranges-hot`).
const KEYS_PER_TASK: u64 = 1_000;

/// The key client task `task` reads in range a (seeded before the measurements).
fn key_a(task: usize) -> Vec<u8> {
    format!("txn/a/{task:04}").into_bytes()
}

/// The key client task `task` reads in range b (seeded before the measurements).
fn key_b(task: usize) -> Vec<u8> {
    format!("txn/b/{task:04}").into_bytes()
}

/// The key in range a (`b`: in range b) that operation `i` of client task `task` updates: one of
/// [`KEYS_PER_TASK`], so that it never waits for its own previous transaction's locks.
fn key_rw(b: bool, task: usize, i: u64) -> Vec<u8> {
    format!("txn/{}/{task:04}/{:04}", if b { 'b' } else { 'a' }, i % KEYS_PER_TASK).into_bytes()
}

/// What the operations of one cluster share.
struct Ctx {
    client: Client,
    /// What the read-write workloads write.
    value: Vec<u8>,
    /// How old the `stale` and `follower-stale` reads are.
    staleness: Duration,
    /// A follower of `txn/a`'s range, and a timestamp every seeded key was written at or below.
    follower: Option<(pb::kv_client::KvClient<Channel>, u64)>,
}

#[derive(serde::Serialize)]
struct Row {
    replicas: usize,
    epsilon_ms: u64,
    workload: Workload,
    concurrency: usize,
    ops_per_sec: f64,
    /// Operations that failed (after the client's own retries) or timed out: counted, not
    /// retried, and not in the latency histogram.
    failed: u64,
    first_error: Option<String>,
    latency: Latency,
}

/// A snapshot's read of `key` (a fn item: closures returning a borrowing future do not infer).
fn get_body<'t>(ro: &'t mut ReadOnly<'_>, key: Vec<u8>) -> TxnFuture<'t, Option<Vec<u8>>> {
    Box::pin(async move { ro.get(&key).await })
}

/// Operation `i` of workload `w` by client task `task`.
async fn op(ctx: &Ctx, w: Workload, task: usize, i: u64) -> anyhow::Result<()> {
    let value = &ctx.value;
    let (a, b) = match w {
        Workload::RwOneRange | Workload::RwTwoRanges => (key_rw(false, task, i), key_rw(true, task, i)),
        _ => (key_a(task), key_b(task)),
    };
    match w {
        Workload::RwOneRange => {
            ctx.client
                .read_write(|txn| {
                    let (a, value) = (a.clone(), value.clone());
                    Box::pin(async move {
                        txn.get(&a).await?;
                        txn.put(&a, &value);
                        Ok(())
                    })
                })
                .await?;
        }
        Workload::RwTwoRanges | Workload::RwTwoRangesHot => {
            ctx.client
                .read_write(|txn| {
                    let (a, b, value) = (a.clone(), b.clone(), value.clone());
                    Box::pin(async move {
                        txn.get(&a).await?;
                        txn.get(&b).await?;
                        txn.put(&a, &value);
                        txn.put(&b, &value);
                        Ok(())
                    })
                })
                .await?;
        }
        Workload::ReadOnly => {
            let (v, _) = ctx.client.read_only(|ro| get_body(ro, a)).await?;
            // A seeded key missing means the read saw the wrong snapshot.
            anyhow::ensure!(v.is_some(), "a read-only transaction did not see a seeded key");
        }
        Workload::Stale => {
            // The key may be younger than the snapshot: any answer will do.
            ctx.client.snapshot_stale(ctx.staleness, |ro| get_body(ro, a)).await?;
        }
        Workload::FollowerSnap => {
            let (kv, ts) = ctx.follower.as_ref().context("no follower (one replica)")?;
            let r = follower_read(kv.clone(), a, *ts).await?;
            anyhow::ensure!(r.rows.len() == 1, "follower returned {} rows for a seeded key", r.rows.len());
        }
        Workload::FollowerStale => {
            let (kv, _) = ctx.follower.as_ref().context("no follower (one replica)")?;
            follower_read(kv.clone(), a, Client::stale_ts(ctx.staleness).nanos()).await?;
        }
    }
    Ok(())
}

/// A `Read` of `key` at `ts` sent to one node, whichever role it has.
async fn follower_read(
    mut kv: pb::kv_client::KvClient<Channel>,
    key: Vec<u8>,
    ts: u64,
) -> anyhow::Result<pb::ReadResponse> {
    let r = kv.read(pb::ReadRequest { start: key, end: None, limit: 1, ts: Some(ts) }).await?.into_inner();
    if let Some(e) = &r.error {
        let kind = pb::error::Kind::try_from(e.kind).unwrap_or(pb::error::Kind::Unspecified);
        anyhow::bail!("{kind:?}: {}", e.message);
    }
    Ok(r)
}

/// Runs `w` with `c` concurrent clients for `d`.
async fn measure(ctx: &Arc<Ctx>, w: Workload, c: usize, d: Duration) -> anyhow::Result<super::Step> {
    let ctx = ctx.clone();
    drive(&format!("{} ×{c}", w.name()), c, d, WARM_OPS, OP_TIMEOUT, move |t, i| {
        let ctx = ctx.clone();
        async move { (0, op(&ctx, w, t, i).await) }
    })
    .await
}

/// The range holding `txn/a/…`, the leaders of it and of `txn/b/…`'s range, in `v`.
fn benchmark_ranges(v: &View) -> Option<(RangeDescriptor, NodeId, NodeId)> {
    let (da, db) = (v.range(&key_a(0))?, v.range(&key_b(0))?);
    if da.id == db.id {
        return None; // the split is not visible yet
    }
    Some((da.clone(), v.leader(&key_a(0))?, v.leader(&key_b(0))?))
}

/// Puts the leaders of the two benchmark ranges on different nodes, neither leading the meta
/// range, as far as the cluster's size allows (the nodes run with `--no-rebalance`, so they
/// stay there), and waits until they have not moved for [`LEADERS_STABLE`].
async fn place_two_leaders(client: &Client, replicas: usize) -> anyhow::Result<(RangeDescriptor, NodeId, NodeId)> {
    let view = place_leaders(client, replicas, SETTLE_MAX, LEADERS_STABLE, |v| {
        let (_, la, lb) = benchmark_ranges(v)?;
        let meta = v.leaders.get(&META_GROUP).copied();
        let pick = |avoid: &[Option<NodeId>]| v.nodes.iter().copied().find(|n| !avoid.contains(&Some(*n)));
        let want_a = pick(&[meta]).unwrap_or(la);
        let want_b = pick(&[meta, Some(want_a)]).or_else(|| pick(&[Some(want_a)])).unwrap_or(lb);
        Some(vec![(key_a(0), want_a), (key_b(0), want_b)])
    })
    .await?;
    benchmark_ranges(&view).context("the benchmark ranges vanished")
}

/// A follower of `desc` (a voter that does not lead it) and its address.
async fn follower_of(
    client: &Client,
    desc: &RangeDescriptor,
    leader: NodeId,
) -> anyhow::Result<Option<(NodeId, String)>> {
    let Some(f) = desc.config.voters.iter().copied().find(|n| *n != leader) else { return Ok(None) };
    let (_, nodes, _) = client.cluster_view().await?;
    let addr = nodes.iter().find(|n| n.id == f).map(|n| n.addr.clone()).context("follower address unknown")?;
    Ok(Some((f, addr)))
}

/// Measures every workload on one fresh cluster of `r` nodes at ε = `eps` ms. Returns the rows
/// and a note on where the two ranges' leaders were.
fn run_cluster(
    rt: &tokio::runtime::Runtime,
    args: &TxnArgs,
    r: usize,
    eps: u64,
) -> anyhow::Result<(Vec<Row>, Vec<String>)> {
    let tmp = tempfile::tempdir()?;
    // Dropping `nodes` (also on an early return) kills every process started here.
    // Without rebalancing: the leader balancer would move the benchmark ranges' leaders while
    // they are measured (see BENCHMARKS.md); `place_leaders` places them instead.
    let nodes = spawn_cluster(tmp.path(), r, r.min(5), eps, &["--no-rebalance"])?;
    let c_max = args.concurrency.iter().copied().max().unwrap_or(1);
    let d = Duration::from_secs_f64(args.seconds);
    let out = rt.block_on(async {
        let client = Client::connect(nodes.iter().map(|n| n.addr.clone())).await?.with_deadline(CLIENT_DEADLINE);
        wait_replicated(&client, r, SETTLE_MAX).await?;
        client.split(SPLIT_KEY).await.context("split at txn/b")?;
        let (da, la, lb) = place_two_leaders(&client, r).await?;
        eprintln!("{r} node(s), ε = {eps} ms: range {} (txn/a) led by {la}, range of txn/b led by {lb}", da.id);
        let value = vec![7u8; args.value_bytes];
        // `seeded`: the newest write to txn/a's range, the one its follower must have applied.
        let mut seeded = 0;
        for t in 0..c_max {
            client.put(&key_b(t), &value).await?;
            seeded = seeded.max(client.put(&key_a(t), &value).await?.nanos());
        }
        // The follower serves reads at `seeded` once it has applied the seed writes.
        let follower = match follower_of(&client, &da, la).await? {
            None => None,
            Some((f, addr)) => {
                let kv = pb::kv_client::KvClient::new(Channel::from_shared(format!("http://{addr}"))?.connect().await?);
                let deadline = Instant::now() + Duration::from_secs(10);
                while let Err(e) = follower_read(kv.clone(), key_a(c_max - 1), seeded).await {
                    anyhow::ensure!(Instant::now() < deadline, "follower {f} never served the seeded keys: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Some((kv, seeded))
            }
        };
        let ctx = Arc::new(Ctx { client, value, staleness: Duration::from_millis(args.staleness_ms), follower });
        let mut rows = Vec::new();
        for &w in &args.workloads {
            if matches!(w, Workload::FollowerSnap | Workload::FollowerStale) && ctx.follower.is_none() {
                continue;
            }
            for &c in &args.concurrency {
                let super::Step { ops_per_sec, failed, first_error, latency, .. } = measure(&ctx, w, c, d).await?;
                eprintln!(
                    "  {:<17} ×{c:<3} {ops_per_sec:>8.0} ops/s  p50 {:>6.2} ms  p99 {:>6.2} ms  failed {failed}{}",
                    w.name(),
                    latency.p50_us / 1e3,
                    latency.p99_us / 1e3,
                    first_error.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default()
                );
                rows.push(Row {
                    replicas: r,
                    epsilon_ms: eps,
                    workload: w,
                    concurrency: c,
                    ops_per_sec,
                    failed,
                    first_error,
                    latency,
                });
            }
        }
        let mut notes = Vec::new();
        let after = View::fetch(&ctx.client, r).await.and_then(|v| benchmark_ranges(&v)).map(|(_, a, b)| (a, b));
        notes.push(format!(
            "{r} replica(s), ε = {eps} ms: txn/a led by {la}, txn/b by {lb}{}",
            match after {
                Some(ab) if ab == (la, lb) => ", the same after the measurements".to_string(),
                Some((a, b)) => format!("; after the measurements by {a} and {b}"),
                None => String::new(),
            }
        ));
        anyhow::Ok((rows, notes))
    });
    drop(nodes);
    out
}

/// `meridian bench micro`.
pub fn run(args: TxnArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.concurrency.iter().all(|&c| c >= 1), "--concurrency values must be at least 1");
    let floors = Floors::measure()?;
    let rt = super::runtime()?;
    let (mut rows, mut notes) = (Vec::new(), Vec::new());
    for &r in &args.replicas {
        for &eps in &args.epsilon_ms {
            let (rs, ns) = run_cluster(&rt, &args, r, eps)?;
            rows.extend(rs);
            notes.extend(ns);
        }
    }
    print_tables(&rows, &args, floors.fsync_p50_us, floors.loopback_rtt_p50_us);
    println!();
    for n in &notes {
        println!("- {n}");
    }
    if let Some(path) = &args.out.json {
        super::write_json(path, &rows)?;
    }
    if let Some(path) = &args.out.plot {
        plot_rows(path, &rows)?;
    }
    Ok(())
}

/// Two plots by replica count, one line per workload and ε: p50 latency at one client (to
/// `path`) and throughput at the highest concurrency measured (beside it, `…-throughput.svg`).
fn plot_rows(path: &std::path::Path, rows: &[Row]) -> anyhow::Result<()> {
    let c_max = rows.iter().map(|r| r.concurrency).max().unwrap_or(1);
    let lines = |c: usize, y: fn(&Row) -> f64| {
        let mut lines: Vec<Line> = Vec::new();
        for r in rows.iter().filter(|r| r.concurrency == c && r.ops_per_sec > 0.0) {
            let label = format!("{}, ε = {} ms", r.workload.name(), r.epsilon_ms);
            match lines.iter_mut().find(|l| l.label == label) {
                Some(l) => l.points.push((r.replicas as f64, y(r))),
                None => lines.push(Line { label, points: vec![(r.replicas as f64, y(r))], reference: false }),
            }
        }
        lines
    };
    plot::latency_by(
        path,
        "p50 latency at one client, by replicas",
        "replicas",
        &lines(1, |r| r.latency.p50_us / 1e3),
    )?;
    let tput = path.with_file_name(format!(
        "{}-throughput.svg",
        path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "micro".into())
    ));
    plot::log_y_by(
        &tput,
        &format!("throughput at {c_max} clients, by replicas"),
        "replicas",
        "operations/s (log scale)",
        &lines(c_max, |r| r.ops_per_sec),
    )
}

/// The results as Markdown: every measurement, then the ratios of medians at one client.
fn print_tables(rows: &[Row], args: &TxnArgs, fsync_us: f64, rtt_us: f64) {
    let epsilons = &args.epsilon_ms;
    println!(
        "Floors in this run: fdatasync p50 {fsync_us:.0} µs; loopback TCP round trip p50 {rtt_us:.0} µs; \
         commit wait 2ε. Stale reads are {} ms old. Failed operations are not in the latencies; for \
         follower-stale, failed means refused by the follower.",
        args.staleness_ms
    );
    println!();
    println!("| replicas | ε ms | workload | clients | ops/s | p50 ms | p99 ms | mean ms | failed |");
    println!("|---:|---:|---|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        // No operation succeeded: no latency to show.
        let ms = |us: f64| if r.ops_per_sec > 0.0 { format!("{:.2}", us / 1e3) } else { "—".into() };
        println!(
            "| {} | {} | {} | {} | {:.0} | {} | {} | {} | {} |",
            r.replicas,
            r.epsilon_ms,
            r.workload.name(),
            r.concurrency,
            r.ops_per_sec,
            ms(r.latency.p50_us),
            ms(r.latency.p99_us),
            ms(r.latency.mean_us),
            r.failed
        );
    }
    // Ratios of medians at one client, within this run.
    let p50 = |r: usize, e: u64, w: Workload| {
        rows.iter()
            .find(|x| {
                x.replicas == r && x.epsilon_ms == e && x.workload == w && x.concurrency == 1 && x.latency.p50_us > 0.0
            })
            .map(|x| x.latency.p50_us / 1e3)
    };
    let (mut replicas, mut workloads) = (Vec::new(), Vec::new());
    for r in rows {
        if !replicas.contains(&r.replicas) {
            replicas.push(r.replicas);
        }
        if !workloads.contains(&r.workload) {
            workloads.push(r.workload);
        }
    }
    let mut cross = Vec::new();
    for &r in &replicas {
        for &e in epsilons {
            if let (Some(one), Some(two)) = (p50(r, e, Workload::RwOneRange), p50(r, e, Workload::RwTwoRanges)) {
                cross.push(format!("| {r} | {e} | {:.2} × ({two:.2} / {one:.2} ms) |", two / one));
            }
        }
    }
    print_table("| replicas | ε ms | two ranges / one range (p50, 1 client) |\n|---:|---:|---:|", &cross);
    let Some(&e0) = epsilons.iter().min() else { return };
    let mut wait = Vec::new();
    for &r in &replicas {
        for &w in &workloads {
            for &e in epsilons.iter().filter(|&&e| e != e0) {
                if let (Some(base), Some(x)) = (p50(r, e0, w), p50(r, e, w)) {
                    wait.push(format!("| {r} | {} | {e} | {:+.2} ms | {} ms |", w.name(), x - base, 2 * (e - e0)));
                }
            }
        }
    }
    let head = format!("| replicas | workload | ε ms | p50 − p50 at ε = {e0} ms | 2ε |\n|---:|---|---:|---:|---:|");
    print_table(&head, &wait);
}
