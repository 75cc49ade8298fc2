//! `meridian bench commit`: commit latency by the number of ranges a transaction writes —
//! two-phase commit scalability, Spanner OSDI 2012 Table 4 (§5.1).
//!
//! A fresh cluster of three `meridian start` processes on loopback (`--no-rebalance`) for each
//! ε, every range replicated `--replicas` times, the user keyspace split at `commit/001`, …
//! into as many ranges as the largest participant count, and the ranges' leaders dealt out
//! over the nodes in turn (range r on node r mod 3). Then, for each participant count N,
//! client tasks run read-write transactions that each write one 100-byte key in each of N
//! consecutive ranges (the first one rotating), and nothing else: blind writes, so the
//! measurement is the commit alone. Each task writes only its own keys, so nothing contends.
//!
//! ```text
//!   N = 1    TxnCommit at the range's leader: one Paxos write (‖ commit wait)
//!            floor: RTT + fsync + RTT + fsync              (‖ 2ε)
//!   N ≥ 2    TxnCommit(prepare) at N − 1 leaders at once: a Paxos write each
//!            then TxnCommit(coordinate) at the first range's leader: a Paxos write (‖ 2ε)
//!            floor: 2 × (RTT + fsync + RTT + fsync)        (+ 2ε − what the write hides)
//! ```
//!
//! The floor does not grow with N where every leader has its own machine (Spanner's 75
//! spanservers): the prepares run in parallel. Here all participants share two cores and one
//! disk, so each one's CPU and log write add to the wait; what grows with N is that cost.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use meridian_client::Client;

use super::cluster::{place_leaders, spawn_cluster, split_at, wait_replicated};
use super::plot::{self, Line};
use super::{
    CLIENT_DEADLINE, Floors, LEADERS_STABLE, OP_TIMEOUT, SETTLE_MAX, Step, WARM_OPS, drive, read_write_counted,
};

/// Arguments of `meridian bench commit`.
#[derive(clap::Args)]
pub struct CommitArgs {
    /// Participant counts: how many ranges each transaction writes (1 is the single-range
    /// fast path, N ≥ 2 two-phase commit). The keyspace is split into the largest of them.
    #[arg(long, value_delimiter = ',', default_value = "1,2,5,10,25,50")]
    participants: Vec<usize>,
    /// Replicas of every range (the cluster has three nodes, or more if this is larger).
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// TrueTime ε values in milliseconds (a fresh cluster each; 0 makes commit wait free).
    #[arg(long, value_delimiter = ',', default_value = "0,4")]
    epsilon_ms: Vec<u64>,
    /// Seconds per measurement (one participant count).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Concurrent client tasks (1 measures latency without queueing, as Spanner's did).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// `--json` and `--plot` (SVG: latency by participants for `commit`, throughput and p99 by
    /// clients for `bank`).
    #[command(flatten)]
    out: super::Outputs,
}

/// Spanner OSDI 2012, Table 4: participants, mean and 99th-percentile latency in ms (means of
/// 10 runs; 3 zones of 25 spanservers each).
const SPANNER_TABLE_4: [(usize, f64, f64); 8] = [
    (1, 17.0, 75.0),
    (2, 24.5, 87.6),
    (5, 31.5, 104.5),
    (10, 30.0, 95.6),
    (25, 35.5, 100.4),
    (50, 42.7, 93.7),
    (100, 71.4, 131.2),
    (200, 150.5, 320.3),
];
/// Most ranges the benchmark creates (one per participant of the largest count).
const RANGES_MAX: usize = 200;
/// Nodes of the cluster unless `--replicas` asks for more.
const NODES: usize = 3;
/// Keys each client task cycles through per range, so that a transaction never waits for the
/// locks of its task's previous one (a participant holds them until the decision reaches it).
const KEYS_PER_TASK: u64 = 1_000;
const _: () = assert!(SPANNER_TABLE_4[0].0 == 1, "ratios are taken against one participant");

/// Where range `r` (≥ 1) starts; range 0 holds everything below `commit/001`.
fn split_key(r: usize) -> Vec<u8> {
    format!("commit/{r:03}").into_bytes()
}

/// The key that transaction `i` of client task `task` writes in range `r`.
fn key(r: usize, task: usize, i: u64) -> Vec<u8> {
    format!("commit/{r:03}/{task:03}/{:04}", i % KEYS_PER_TASK).into_bytes()
}

/// Spanner's mean and p99 for `n` participants, if Table 4 has that row.
fn spanner(n: usize) -> Option<(f64, f64)> {
    SPANNER_TABLE_4.iter().find(|r| r.0 == n).map(|r| (r.1, r.2))
}

#[derive(serde::Serialize)]
struct Row {
    epsilon_ms: u64,
    replicas: usize,
    participants: usize,
    concurrency: usize,
    #[serde(flatten)]
    step: Step,
    /// This row's p50 over the p50 at one participant in the same cluster.
    p50_over_one: Option<f64>,
}

#[derive(serde::Serialize)]
struct Report<'a> {
    floors: Floors,
    ranges: usize,
    rows: &'a [Row],
}

/// Every participant count on one fresh cluster at ε = `eps` ms.
fn run_cluster(rt: &tokio::runtime::Runtime, args: &CommitArgs, ranges: usize, eps: u64) -> anyhow::Result<Vec<Row>> {
    let tmp = tempfile::tempdir()?;
    let nodes = args.replicas.max(NODES);
    // Dropping `procs` (also on an early return) kills every process started here.
    let procs = spawn_cluster(tmp.path(), nodes, args.replicas, eps, &["--no-rebalance"])?;
    let out = rt.block_on(async {
        let client =
            Arc::new(Client::connect(procs.iter().map(|n| n.addr.clone())).await?.with_deadline(CLIENT_DEADLINE));
        wait_replicated(&client, args.replicas, SETTLE_MAX).await?;
        split_at(&client, (1..ranges).map(split_key).collect()).await?;
        eprintln!("ε = {eps} ms: {ranges} ranges on {nodes} nodes; placing leaders");
        place_leaders(&client, args.replicas, SETTLE_MAX, LEADERS_STABLE, |v| {
            (1..ranges)
                .all(|r| v.range(&split_key(r)).is_some_and(|d| d.start == split_key(r)))
                .then(|| (0..ranges).map(|r| (key(r, 0, 0), v.nodes[r % v.nodes.len()])).collect::<Vec<_>>())
        })
        .await?;
        let value = Arc::new(vec![7u8; args.value_bytes]);
        let mut rows = Vec::new();
        for (step, &n) in args.participants.iter().enumerate() {
            let (client, value) = (client.clone(), value.clone());
            let d = Duration::from_secs_f64(args.seconds);
            let s = drive(
                &format!("ε {eps} ms, {n} participants"),
                args.concurrency,
                d,
                WARM_OPS,
                OP_TIMEOUT,
                move |t, i| {
                    let first = (t * 7 + i as usize) % ranges;
                    let keys: Vec<Vec<u8>> = (0..n).map(|j| key((first + j) % ranges, t, i)).collect();
                    let (client, value) = (client.clone(), value.clone());
                    async move {
                        read_write_counted(&client, |txn| {
                            for k in &keys {
                                txn.put(k, &value);
                            }
                            Box::pin(async { Ok(()) })
                        })
                        .await
                    }
                },
            )
            .await?;
            eprintln!(
                "  [{}/{}] ε = {eps} ms, {n:>3} participant(s): {}",
                step + 1,
                args.participants.len(),
                s.summary("commits")
            );
            rows.push(Row {
                epsilon_ms: eps,
                replicas: args.replicas,
                participants: n,
                concurrency: args.concurrency,
                step: s,
                p50_over_one: None,
            });
        }
        anyhow::Ok(rows)
    });
    drop(procs);
    let mut rows = out?;
    let one = rows.iter().find(|r| r.participants == 1 && r.step.ops_per_sec > 0.0).map(|r| r.step.latency.p50_us);
    for r in &mut rows {
        r.p50_over_one = one.filter(|_| r.step.ops_per_sec > 0.0).map(|one| r.step.latency.p50_us / one);
    }
    Ok(rows)
}

/// `meridian bench commit`.
pub fn run(args: CommitArgs) -> anyhow::Result<()> {
    let ranges = args.participants.iter().copied().max().context("--participants is empty")?;
    anyhow::ensure!(
        args.participants.iter().all(|&n| n >= 1) && ranges <= RANGES_MAX,
        "--participants must be between 1 and {RANGES_MAX}"
    );
    anyhow::ensure!(args.concurrency >= 1 && args.concurrency <= 999, "--concurrency must be between 1 and 999");
    anyhow::ensure!(args.replicas >= 1, "--replicas must be at least 1");
    let floors = Floors::measure()?;
    let rt = super::runtime()?;
    let mut rows = Vec::new();
    for &eps in &args.epsilon_ms {
        rows.extend(run_cluster(&rt, &args, ranges, eps)?);
    }
    print_tables(&args, &floors, ranges, &rows);
    if let Some(path) = &args.out.json {
        super::write_json(path, &Report { floors, ranges, rows: &rows })?;
    }
    if let Some(path) = &args.out.plot {
        plot_rows(path, &args, &rows)?;
    }
    Ok(())
}

/// One Markdown table per ε, Spanner's Table 4 beside ours, and the scaling targets.
fn print_tables(args: &CommitArgs, floors: &Floors, ranges: usize, rows: &[Row]) {
    println!(
        "{} nodes, {} replicas per range, {ranges} ranges, leaders dealt over the nodes; {} client task(s); \
         blind writes of {} bytes, one key per range. Floors in this run: fdatasync p50 {:.0} µs, loopback \
         TCP round trip p50 {:.0} µs; commit wait 2ε.",
        args.replicas.max(NODES),
        args.replicas,
        args.concurrency,
        args.value_bytes,
        floors.fsync_p50_us,
        floors.loopback_rtt_p50_us
    );
    let spanner_one = SPANNER_TABLE_4[0].1;
    for &eps in &args.epsilon_ms {
        println!();
        println!("ε = {eps} ms (2ε = {} ms):", 2 * eps);
        let mut lines = Vec::new();
        for r in rows.iter().filter(|r| r.epsilon_ms == eps) {
            let l = &r.step.latency;
            // No transaction succeeded: no latency to show.
            let ms = |us: f64| if r.step.ops_per_sec > 0.0 { format!("{:.2}", us / 1e3) } else { "—".into() };
            let (sp_mean, sp_p99, sp_ratio) = match spanner(r.participants) {
                Some((m, p)) => (format!("{m:.1}"), format!("{p:.1}"), format!("{:.2} ×", m / spanner_one)),
                None => ("—".into(), "—".into(), "—".into()),
            };
            lines.push(format!(
                "| {} | {:.0} | {} | {} | {} | {} | {} | {} | {sp_mean} | {sp_p99} | {sp_ratio} |",
                r.participants,
                r.step.ops_per_sec,
                ms(l.mean_us),
                ms(l.p50_us),
                ms(l.p99_us),
                r.p50_over_one.map(|x| format!("{x:.2} ×")).unwrap_or_else(|| "—".into()),
                r.step.aborts,
                r.step.failed,
            ));
        }
        super::print_table(
            "| participants | commits/s | mean ms | p50 ms | p99 ms | p50 / p50 at 1 participant | aborts | failed \
             | Spanner mean ms | Spanner p99 ms | Spanner mean / mean at 1 |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            &lines,
        );
        println!();
        for (n, target) in [(10, 1.5), (50, 2.5)] {
            let Some(x) = rows.iter().find(|r| r.epsilon_ms == eps && r.participants == n).and_then(|r| r.p50_over_one)
            else {
                continue;
            };
            let verdict = if x <= target { "met" } else { "missed" };
            println!("- p50 at {n} participants: {x:.2} × the 1-participant p50 (target ≤ {target} ×): {verdict}");
        }
    }
}

/// p50 and p99 against participants for each ε, and Spanner's means.
fn plot_rows(path: &std::path::Path, args: &CommitArgs, rows: &[Row]) -> anyhow::Result<()> {
    let mut lines = Vec::new();
    for &eps in &args.epsilon_ms {
        let of = |f: fn(&Row) -> f64| {
            rows.iter()
                .filter(|r| r.epsilon_ms == eps && r.step.ops_per_sec > 0.0)
                .map(|r| (r.participants as f64, f(r)))
                .collect()
        };
        lines.push(Line {
            label: format!("p50, ε = {eps} ms"),
            points: of(|r| r.step.latency.p50_us / 1e3),
            reference: false,
        });
        lines.push(Line {
            label: format!("p99, ε = {eps} ms"),
            points: of(|r| r.step.latency.p99_us / 1e3),
            reference: false,
        });
    }
    let most = args.participants.iter().copied().max().unwrap_or(1);
    lines.push(Line {
        label: "Spanner mean (OSDI 2012, Table 4)".into(),
        points: SPANNER_TABLE_4.iter().filter(|r| r.0 <= most).map(|r| (r.0 as f64, r.1)).collect(),
        reference: true,
    });
    let title = format!(
        "meridian bench commit: {} nodes, {} replicas, {} client task(s)",
        args.replicas.max(NODES),
        args.replicas,
        args.concurrency
    );
    plot::latency_by(path, &title, "participants (ranges written)", &lines)
}
