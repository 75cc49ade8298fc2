//! `meridian chaos bank`: the bank workload on a local multi-process cluster under faults.
//!
//! ```text
//!   start N nodes            this binary as `meridian start --fault-injection`, loopback only,
//!                            1 s leases, one replica of every range per node (up to 5)
//!   bank init                accounts over ≥ 4 ranges, so transfers cross shards (2PC)
//!   ┌ bank run ─────────┐    transfers, audits, live progress, a history of every operation
//!   └ fault loop ───────┘    kill -9/restart, SIGSTOP/SIGCONT, partitions, clock skew, leader
//!                            transfers; never more than a minority of nodes faulty
//!   heal, wait (bounded)     every node up, no partition or offset, every range led again
//!   bank check + verdict     `chaos bank: … transfers ok, … unknown, … failed, … audits,
//!                            … faults, 0 violations` (exit 0), or the violations (exit 1)
//! ```
//!
//! What the checks prove is in `workload.rs`; a node that dies on its own (an assertion, a
//! panic) is a violation too. `--unsafe-skew-beyond-epsilon` breaks TrueTime's contract on
//! purpose (clock offsets far beyond ε at range leaders) to show that the external-consistency
//! check notices; its violations are expected, and it says so loudly.
//!
//! Left out: network namespaces and nftables (the partitions live in the nodes' transport, so
//! client traffic is never cut), disk faults, and loss of the page cache (kill -9 keeps what
//! the kernel has; the in-memory simulation models lost unsynced writes).

mod faults;
mod procs;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use meridian_client::Client;

use crate::workload::{self, BankReport};
pub(crate) use faults::FaultKind;
use procs::{NodeArgs, Procs};

/// How long the cluster may take to have every range replicated and led.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the cluster may take to serve again once every fault is healed.
const RECOVER_TIMEOUT: Duration = Duration::from_secs(120);
/// Per-request deadline of the workload's client (a fault lasts at most 10 s).
const CLIENT_DEADLINE: Duration = Duration::from_secs(15);
/// How long a node's status may take when a failed run shows it.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts at the final check when the cluster fails to answer it.
const CHECK_ATTEMPTS: usize = 3;
/// Longest run `--duration` accepts.
const DURATION_MAX: Duration = Duration::from_secs(24 * 3600);
/// Initial balance of each account.
const BALANCE: i64 = 100;

/// `meridian chaos …`.
#[derive(clap::Subcommand)]
pub enum ChaosCommand {
    /// The bank workload on a local multi-process cluster while faults are injected, then its
    /// checks and a verdict (exit code 0 only with no violations).
    Bank(BankArgs),
}

/// Arguments of `meridian chaos bank`.
#[derive(clap::Args)]
pub struct BankArgs {
    /// Node processes to start (3 to 9).
    #[arg(long, default_value_t = 5)]
    pub nodes: usize,
    /// How long to run the workload under faults, e.g. 45s, 10m, 1h.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Faults to inject, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "kill,pause,partition,skew,leader")]
    pub faults: Vec<FaultKind>,
    /// Seed of the fault schedule (default: from the clock; printed so a run can be repeated).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Bank accounts.
    #[arg(long, default_value_t = 16)]
    pub accounts: usize,
    /// Ranges to spread the accounts over (at least 4).
    #[arg(long, default_value_t = 4)]
    pub ranges: usize,
    /// Concurrent transfer workers.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Replicas per range (default: one per node, at most 5, so that a faulty minority of
    /// nodes never takes a range's majority).
    #[arg(long)]
    pub replication: Option<usize>,
    /// TrueTime ε of every node, in milliseconds (safe skew stays within ±ε).
    #[arg(long, default_value_t = 4)]
    pub epsilon_ms: u64,
    /// Leader lease in milliseconds (short: failovers are quick).
    #[arg(long, default_value_t = 1_000)]
    pub lease_ms: u64,
    /// UNSAFE: skew clocks far beyond ε (20–250 ms, or 5–50 ε) at range leaders. TrueTime's
    /// contract is then broken, so external consistency may be violated; this mode exists to
    /// show that the checker catches it.
    #[arg(long)]
    pub unsafe_skew_beyond_epsilon: bool,
    /// Keep the data directories, logs and history even when the run passes.
    #[arg(long)]
    pub keep: bool,
}

/// Parses `45s`, `500ms`, `10m`, `1.5h` or a plain number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let v: f64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 45s, 10m or 1h"))?;
    let seconds = match unit {
        "" | "s" => v,
        "ms" => v / 1e3,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("unknown unit {unit:?} in {text:?}: use ms, s, m or h")),
    };
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= DURATION_MAX.as_secs_f64()) {
        return Err(format!("{text:?} must be positive and at most {} h", DURATION_MAX.as_secs() / 3600));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Runs `meridian chaos …`.
pub fn run(cmd: ChaosCommand) -> anyhow::Result<()> {
    let ChaosCommand::Bank(args) = cmd;
    anyhow::ensure!((3..=procs::NODES_MAX).contains(&args.nodes), "--nodes must be between 3 and {}", procs::NODES_MAX);
    anyhow::ensure!(args.ranges >= 4, "--ranges must be at least 4, so transfers cross shards");
    anyhow::ensure!(args.accounts >= args.ranges * 2, "--accounts must be at least twice --ranges");
    anyhow::ensure!((1..=256).contains(&args.workers), "--workers must be between 1 and 256");
    anyhow::ensure!(!args.faults.is_empty(), "--faults names no fault");
    anyhow::ensure!(
        !args.unsafe_skew_beyond_epsilon || args.faults.contains(&FaultKind::Skew),
        "--unsafe-skew-beyond-epsilon needs `skew` in --faults"
    );
    let replication = args.replication.unwrap_or(args.nodes.min(5));
    anyhow::ensure!((1..=args.nodes).contains(&replication), "--replication must be between 1 and --nodes");
    let seed = args.seed.unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        (nanos as u64 ^ u64::from(std::process::id())) % 1_000_000
    });
    let node_args = NodeArgs { lease_ms: args.lease_ms, epsilon_ms: args.epsilon_ms, replication };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let mut procs = Procs::new(node_args.clone())?;
        let result = tokio::select! {
            r = bank(&mut procs, &args, &node_args, seed) => r,
            () = crate::cluster::shutdown_signal() => Err(anyhow::anyhow!("interrupted")),
        };
        procs.kill_all().await;
        let passed = matches!(&result, Ok(v) if v.violations.is_empty());
        if !passed || args.keep {
            println!("chaos bank: data directories, node logs and the history kept in {}", procs.keep().display());
        }
        let v = result?;
        if args.unsafe_skew_beyond_epsilon {
            println!("chaos bank: UNSAFE run: clocks were skewed beyond ε; violations here show the checkers at work");
        }
        println!("chaos bank: faults injected: {}", v.faults_summary);
        println!(
            "chaos bank: {} transfers ok, {} unknown, {} failed, {} audits, {} faults, {} violations",
            v.report.ok,
            v.report.unknown,
            v.report.failed,
            v.report.audits,
            v.faults,
            v.violations.len()
        );
        for line in v.violations.iter().take(workload::VIOLATIONS_SHOWN_MAX) {
            println!("  violation: {line}");
        }
        if v.violations.len() > workload::VIOLATIONS_SHOWN_MAX {
            println!("  … and {} more", v.violations.len() - workload::VIOLATIONS_SHOWN_MAX);
        }
        anyhow::ensure!(v.violations.is_empty(), "{} violations (seed {seed})", v.violations.len());
        Ok(())
    })
}

/// What a run found.
struct Verdict {
    report: BankReport,
    faults: u64,
    faults_summary: String,
    /// The checkers' violations and nodes that died on their own.
    violations: Vec<String>,
}

async fn bank(procs: &mut Procs, args: &BankArgs, node_args: &NodeArgs, seed: u64) -> anyhow::Result<Verdict> {
    let faults: Vec<&str> = args.faults.iter().map(|f| f.name()).collect();
    println!(
        "chaos bank: seed {seed}; {} nodes, replication {}, lease {} ms, ε {} ms; {} accounts over {} ranges, {} workers; faults {} for {:.0} s",
        args.nodes,
        node_args.replication,
        node_args.lease_ms,
        node_args.epsilon_ms,
        args.accounts,
        args.ranges,
        args.workers,
        faults.join(","),
        args.duration.as_secs_f64()
    );
    if args.unsafe_skew_beyond_epsilon {
        println!(
            "chaos bank: UNSAFE MODE: clock offsets far beyond ε; TrueTime no longer holds and violations are expected"
        );
    }
    println!("chaos bank: nodes, logs and history in {}", procs.root().display());
    for _ in 0..args.nodes {
        let i = procs.add_node().await?;
        println!("  node {} on {}", procs.nodes[i].id, procs.nodes[i].addr);
    }
    let client = Arc::new(Client::connect(procs.addrs()).await?.with_deadline(CLIENT_DEADLINE));
    wait_ready(&client, &procs.addrs(), node_args.replication, 1, READY_TIMEOUT).await?;
    workload::init(&client, args.accounts, BALANCE, args.ranges).await.context("creating the bank")?;
    // The bank's ranges and the meta range.
    let want_ranges = args.ranges + 1;
    let ranges = wait_ready(&client, &procs.addrs(), node_args.replication, want_ranges, READY_TIMEOUT).await?;
    println!("chaos bank: {ranges} ranges ready (each replicated and led); running the workload under faults");

    let history = procs.root().join("bank-history.jsonl");
    let t0 = Instant::now();
    let mut chaos = faults::Chaos::new(
        procs,
        client.clone(),
        seed,
        args.faults.clone(),
        args.accounts,
        Duration::from_millis(args.epsilon_ms),
        args.unsafe_skew_beyond_epsilon,
        t0,
    );
    let (ran, injected) =
        tokio::join!(workload::run_bank(&client, args.duration, args.workers, &history), chaos.run(args.duration));
    // Heal first whatever happened, so the checks see a whole cluster.
    injected.context("the fault loop")?;
    ran.context("the bank workload")?;
    chaos.restart_crashed().await?;
    let (faults, faults_summary, mut violations) = (chaos.total(), chaos.summary(), std::mem::take(&mut chaos.crashes));
    drop(chaos);

    // The history's own checks need no cluster; the final state's do.
    let checked = workload::check_history_file(&history, args.accounts, BALANCE)?;
    println!("chaos bank: waiting for the cluster to serve again (at most {} s)", RECOVER_TIMEOUT.as_secs());
    let recovering = Instant::now();
    let recovered = async {
        wait_ready(&client, &procs.addrs(), node_args.replication, want_ranges, RECOVER_TIMEOUT).await?;
        wait_serving(&client, RECOVER_TIMEOUT.saturating_sub(recovering.elapsed())).await
    };
    let report = match recovered.await {
        Ok(()) => {
            println!(
                "chaos bank: serving again after {:.1} s; checking the final state",
                recovering.elapsed().as_secs_f64()
            );
            check_final(&client, &checked).await
        }
        Err(e) => Err(e),
    };
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            // Liveness: a healed cluster must serve again. The history's checks still count.
            println!("chaos bank: the healed cluster does not serve; each node's view of its replicas:");
            for addr in procs.addrs() {
                match tokio::time::timeout(STATUS_TIMEOUT, crate::cluster::render_node_status(&addr)).await {
                    Ok(Ok(status)) => print!("{status}"),
                    Ok(Err(e)) => println!("  {addr}: {e:#}"),
                    Err(_) => println!("  {addr}: no status within {} s", STATUS_TIMEOUT.as_secs()),
                }
            }
            let mut r = checked.report.clone();
            r.violations.push(format!("liveness: after healing every fault, {e:#}"));
            r
        }
    };
    violations.extend(report.violations.iter().cloned());
    Ok(Verdict { report, faults, faults_summary, violations })
}

/// Polls until there are at least `ranges` ranges, each with `replication` voters and a leader
/// holding its lease; returns the number of ranges.
async fn wait_ready(
    client: &Client,
    addrs: &[String],
    replication: usize,
    ranges: usize,
    limit: Duration,
) -> anyhow::Result<usize> {
    let deadline = Instant::now() + limit;
    let mut why = String::from("not asked yet");
    // Bounded by the deadline; each pass takes at least the sleep.
    while Instant::now() < deadline {
        match ready(client, addrs, replication, ranges).await {
            Ok(n) => return Ok(n),
            Err(e) => why = e,
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    anyhow::bail!("the cluster was not ready within {} s: {why}", limit.as_secs())
}

async fn ready(client: &Client, addrs: &[String], replication: usize, ranges: usize) -> Result<usize, String> {
    let ask = Duration::from_secs(5);
    let (descs, _, _) = match tokio::time::timeout(ask, client.cluster_view()).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return Err(format!("no cluster view: {e}")),
        Err(_) => return Err("no cluster view within 5 s".into()),
    };
    if descs.len() < ranges {
        return Err(format!("{} ranges, want {ranges}", descs.len()));
    }
    if let Some(d) = descs.iter().find(|d| d.config.voters.len() != replication || !d.config.learners.is_empty()) {
        return Err(format!(
            "range {} has {} voters and {} learners, want {replication} voters",
            d.id,
            d.config.voters.len(),
            d.config.learners.len()
        ));
    }
    let mut led = std::collections::BTreeSet::new();
    for a in addrs {
        if let Ok(Ok(s)) = tokio::time::timeout(ask, client.node_status(a)).await {
            led.extend(s.groups.iter().filter(|g| g.lease_end > 0).filter_map(|g| g.range.as_ref().map(|r| r.id)));
        }
    }
    match descs.iter().find(|d| !led.contains(&d.id.0)) {
        Some(d) => Err(format!("range {} has no leader holding a lease", d.id)),
        None => Ok(descs.len()),
    }
}

/// Polls a strong read of every account until it succeeds, for at most `limit`.
async fn wait_serving(client: &Client, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    let mut why = String::from("not asked yet");
    while Instant::now() < deadline {
        match tokio::time::timeout(CLIENT_DEADLINE, client.read_only(workload::balances)).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => why = e.to_string(),
            Err(_) => why = format!("no answer within {} s", CLIENT_DEADLINE.as_secs()),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    anyhow::bail!("the cluster did not serve a read of every account within {} s of healing: {why}", limit.as_secs())
}

/// The check against the final state, retried (boundedly) when the cluster does not answer.
async fn check_final(client: &Client, checked: &workload::Checked) -> anyhow::Result<BankReport> {
    let mut last = None;
    for attempt in 0..CHECK_ATTEMPTS {
        match workload::check_final_state(client, checked).await {
            Ok(r) => return Ok(r),
            Err(e) => {
                println!("chaos bank: the final state could not be read (attempt {}): {e:#}", attempt + 1);
                last = Some(e);
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
    Err(last.expect("at least one attempt").context("reading the final balances and ledger"))
}
