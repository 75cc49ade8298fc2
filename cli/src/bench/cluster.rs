//! `meridian bench replicate` and `meridian bench idle`: a real cluster of `meridian start`
//! processes on loopback.
//!
//! - **replicate**: single-key writes through the Rust client over gRPC, each committed by a
//!   range leader through Paxos on 1, 3 or 5 replicas, with commit wait (ε as given). The floor
//!   is two fsyncs in sequence (leader, then a follower) plus two loopback round trips
//!   (client→leader, leader→follower), plus commit wait (2ε) unless ε = 0.
//! - **idle**: a 3-node cluster split into many ranges, then left alone; reports each node's CPU
//!   use (user + system time from `/proc/<pid>/stat`) per second of wall time.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use meridian_client::Client;
use meridian_shard::GroupId;
use meridian_shard::paxos::NodeId;
use meridian_shard::range::RangeDescriptor;

use super::{Latency, histogram};

/// Arguments of `meridian bench replicate`.
#[derive(clap::Args)]
pub struct ReplicateArgs {
    /// Replica counts (a cluster of that many nodes each).
    #[arg(long, value_delimiter = ',', default_value = "1,3,5")]
    replicas: Vec<usize>,
    /// Concurrent writers.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// TrueTime ε in milliseconds (0 disables commit wait's cost).
    #[arg(long, default_value_t = 0)]
    epsilon_ms: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
}

/// Arguments of `meridian bench idle`.
#[derive(clap::Args)]
pub struct IdleArgs {
    /// Ranges to create.
    #[arg(long, default_value_t = 1000)]
    groups: usize,
    /// Seconds to measure once the cluster is idle.
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
}

/// A node process started by a benchmark; dropping it kills the process.
pub(super) struct Proc {
    child: Child,
    /// gRPC address on 127.0.0.1.
    pub(super) addr: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn spawn_node(
    dir: &std::path::Path,
    join: Option<&str>,
    epsilon_ms: u64,
    replication: usize,
    extra: &[&str],
) -> anyhow::Result<Proc> {
    use std::io::BufRead;
    let addr = format!("127.0.0.1:{}", free_port()?);
    let log = std::fs::File::create(dir.with_extension("log"))?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args([
        "start",
        "--listen",
        &addr,
        "--epsilon-ms",
        &epsilon_ms.to_string(),
        "--replication",
        &replication.to_string(),
    ])
    .arg("--data-dir")
    .arg(dir)
    .env("RUST_LOG", "warn")
    .stdout(Stdio::piped())
    .stderr(Stdio::from(log));
    if let Some(j) = join {
        cmd.args(["--join", j]);
    }
    cmd.args(extra);
    let mut child = cmd.spawn()?;
    let out = child.stdout.take().context("stdout")?;
    let mut line = String::new();
    std::io::BufReader::new(out).read_line(&mut line)?;
    anyhow::ensure!(line.contains("listening on"), "node did not start: {line:?}");
    Ok(Proc { child, addr })
}

/// `n` node processes under `root`, the first bootstrapping and the others joining it, each
/// started with `extra` added to its `meridian start` arguments; every range gets
/// `replication` replicas (at most `n`).
pub(super) fn spawn_cluster(
    root: &std::path::Path,
    n: usize,
    replication: usize,
    epsilon_ms: u64,
    extra: &[&str],
) -> anyhow::Result<Vec<Proc>> {
    assert!((1..=n).contains(&replication), "a range cannot have more replicas than there are nodes");
    let mut nodes = vec![spawn_node(&root.join("n1"), None, epsilon_ms, replication, extra)?];
    let first = nodes[0].addr.clone();
    for i in 1..n {
        nodes.push(spawn_node(&root.join(format!("n{}", i + 1)), Some(&first), epsilon_ms, replication, extra)?);
    }
    Ok(nodes)
}

/// Waits until every range has `replicas` voters and no learners.
pub(super) async fn wait_replicated(client: &Client, replicas: usize, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if View::fetch(client, replicas).await.is_some() {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "ranges not replicated {replicas}× within {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Splits the keyspace at each of `keys`, from the largest down: each split then cuts the
/// original range, whose replicas are all in place, never a right half just made (its followers
/// create it only when they learn the split is chosen, up to a heartbeat later, and a split of
/// it waits for them — seconds each).
pub(super) async fn split_at(client: &Client, mut keys: Vec<Vec<u8>>) -> anyhow::Result<()> {
    keys.sort();
    for at in keys.iter().rev() {
        client.split(at).await.with_context(|| format!("split at {}", String::from_utf8_lossy(at)))?;
    }
    Ok(())
}

/// The cluster as the meta range shows it, once every range has the wanted replica count.
pub(super) struct View {
    pub(super) ranges: Vec<RangeDescriptor>,
    /// Every node, in id order.
    pub(super) nodes: Vec<NodeId>,
    pub(super) leaders: BTreeMap<GroupId, NodeId>,
}

impl View {
    /// The cluster view, or `None` while a range lacks `replicas` voters or has learners (a
    /// split or a replica move is still in progress) or no node answers.
    pub(super) async fn fetch(client: &Client, replicas: usize) -> Option<View> {
        let (ranges, nodes, leaders) = client.cluster_view().await.ok()?;
        if !ranges.iter().all(|d| d.config.voters.len() == replicas && d.config.learners.is_empty()) {
            return None;
        }
        let mut nodes: Vec<NodeId> = nodes.iter().map(|n| n.id).collect();
        nodes.sort();
        Some(View { ranges, nodes, leaders: leaders.into_iter().collect() })
    }

    /// The range holding `key`.
    pub(super) fn range(&self, key: &[u8]) -> Option<&RangeDescriptor> {
        self.ranges.iter().find(|d| d.contains(key))
    }

    /// The leader of the range holding `key`.
    pub(super) fn leader(&self, key: &[u8]) -> Option<NodeId> {
        self.leaders.get(&self.range(key)?.id).copied()
    }
}

/// Hands range leaderships over until `plan` — for a view, the node that should lead the range
/// of each key, or `None` while the view is not ready (a split not yet visible) — holds and no
/// leader has moved for `stable`. The nodes must run with `--no-rebalance`, or the leader
/// balancer moves them again (see BENCHMARKS.md). Returns the view it settled on.
pub(super) async fn place_leaders(
    client: &Client,
    replicas: usize,
    limit: Duration,
    stable: Duration,
    plan: impl Fn(&View) -> Option<Vec<(Vec<u8>, NodeId)>>,
) -> anyhow::Result<View> {
    let deadline = Instant::now() + limit;
    let (mut last, mut since) = (None, Instant::now());
    loop {
        anyhow::ensure!(Instant::now() < deadline, "leaders not placed within {limit:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Some(view) = View::fetch(client, replicas).await else { continue };
        let Some(wanted) = plan(&view) else { continue };
        let mut placed = true;
        for (key, want) in &wanted {
            if view.leader(key) != Some(*want) {
                placed = false;
                // Refused while a hand-over is still in flight; asked again on the next round.
                let _ = client.transfer_leader(key, *want).await;
            }
        }
        if !placed || last.as_ref() != Some(&view.leaders) {
            last = Some(view.leaders.clone());
            since = Instant::now();
            continue;
        }
        if since.elapsed() >= stable {
            return Ok(view);
        }
    }
}

#[derive(serde::Serialize)]
struct Row {
    replicas: usize,
    concurrency: usize,
    writes_per_sec: f64,
    /// Writes that failed or whose outcome is unknown (leader changes, splits): counted, not
    /// retried, and not in the latency histogram.
    errors: u64,
    latency: Latency,
}

/// `meridian bench replicate`.
pub fn replicate(args: ReplicateArgs) -> anyhow::Result<()> {
    let rt = super::runtime()?;
    let mut rows = Vec::new();
    for &r in &args.replicas {
        let tmp = tempfile::tempdir()?;
        let nodes = spawn_cluster(tmp.path(), r, r.min(5), args.epsilon_ms, &[])?;
        eprintln!("cluster of {r} node(s) up; measuring");
        rt.block_on(async {
            let client = Arc::new(Client::connect(nodes.iter().map(|n| n.addr.clone())).await?);
            wait_replicated(&client, r, Duration::from_secs(120)).await?;
            // Warm the leader and the client's routes.
            for i in 0..50 {
                client.put(format!("warm{i}").as_bytes(), b"x").await?;
            }
            for &c in &args.concurrency {
                let d = Duration::from_secs_f64(args.seconds);
                let value = vec![7u8; args.value_bytes];
                let tasks: Vec<_> = (0..c)
                    .map(|t| {
                        let (client, value) = (client.clone(), value.clone());
                        tokio::spawn(async move {
                            let mut h = histogram();
                            let start = Instant::now();
                            let (mut n, mut errors, mut i) = (0u64, 0u64, 0u64);
                            while start.elapsed() < d {
                                let key = format!("bench/{t}/{}", i % 1000);
                                i += 1;
                                let t0 = Instant::now();
                                match client.put(key.as_bytes(), &value).await {
                                    Ok(_) => {
                                        h.record(t0.elapsed().as_nanos() as u64).ok();
                                        n += 1;
                                    }
                                    Err(_) => errors += 1,
                                }
                            }
                            anyhow::Ok((n, errors, h))
                        })
                    })
                    .collect();
                let (mut total, mut errors) = (0, 0);
                let mut h = histogram();
                for t in tasks {
                    let (n, e, ht) = t.await??;
                    total += n;
                    errors += e;
                    h.add(&ht).ok();
                }
                let row = Row {
                    replicas: r,
                    concurrency: c,
                    writes_per_sec: total as f64 / args.seconds,
                    errors,
                    latency: Latency::of(&h),
                };
                eprintln!("  {c} writers: {:.0} writes/s, p50 {:.2} ms", row.writes_per_sec, row.latency.p50_us / 1e3);
                rows.push(row);
            }
            anyhow::Ok(())
        })?;
        drop(nodes);
    }
    println!("ε = {} ms; single-key writes through the client over loopback gRPC", args.epsilon_ms);
    println!();
    println!("| replicas | writers | writes/s | p50 ms | p99 ms | failed |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {} |",
            r.replicas,
            r.concurrency,
            r.writes_per_sec,
            r.latency.p50_us / 1e3,
            r.latency.p99_us / 1e3,
            r.errors
        );
    }
    Ok(())
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')').context("malformed /proc stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    // Linux reports these in USER_HZ ticks, 100 per second on every architecture it supports.
    Ok(ticks / 100.0)
}

/// `meridian bench idle`.
pub fn idle(args: IdleArgs) -> anyhow::Result<()> {
    let rt = super::runtime()?;
    let tmp = tempfile::tempdir()?;
    let nodes = spawn_cluster(tmp.path(), 3, 3, 4, &[])?;
    let started = Instant::now();
    rt.block_on(async {
        let client = Client::connect(nodes.iter().map(|n| n.addr.clone())).await?;
        wait_replicated(&client, 3, Duration::from_secs(120)).await?;
        for i in 1..args.groups {
            let key = format!("g{i:06}");
            client.split(key.as_bytes()).await.with_context(|| format!("split {i}"))?;
            if i % 100 == 0 {
                eprintln!("  {i} ranges created");
            }
        }
        wait_replicated(&client, 3, Duration::from_secs(600)).await?;
        anyhow::Ok(())
    })?;
    eprintln!("{} ranges on 3 nodes after {:.0?}; letting it settle", args.groups + 1, started.elapsed());
    std::thread::sleep(Duration::from_secs(15));
    let before: Vec<f64> = nodes.iter().map(|n| cpu_seconds(n.child.id())).collect::<anyhow::Result<_>>()?;
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(args.seconds));
    let wall = t0.elapsed().as_secs_f64();
    let after: Vec<f64> = nodes.iter().map(|n| cpu_seconds(n.child.id())).collect::<anyhow::Result<_>>()?;
    println!("{} ranges (×3 replicas) on 3 nodes, idle for {wall:.0} s:", args.groups + 1);
    println!();
    println!("| node | CPU (% of one core) |");
    println!("|---:|---:|");
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        println!("| n{} | {:.1} % |", i + 1, (a - b) / wall * 100.0);
    }
    Ok(())
}
