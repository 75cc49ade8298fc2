//! `meridian bench bank`: bank transfers across ranges at rising concurrency, until throughput
//! stops growing.
//!
//! A fresh cluster of three `meridian start` processes on loopback (`--no-rebalance`, three
//! replicas per range), the accounts of `meridian workload bank` (`--accounts` of them, split
//! evenly over `--ranges` ranges as `workload bank init` does), and the ranges' leaders dealt
//! out over the nodes. Each
//! transfer is one read-write transaction: read two distinct random accounts, write both
//! (one unit moves). When the two accounts' ranges differ it commits by two-phase commit —
//! with 64 accounts over 4 ranges, 48 of every 63 pairs.
//!
//! Unlike `bench txn` and `bench commit`, clients contend: a transfer takes shared locks on
//! its reads and exclusive ones at commit, and wound-wait aborts the younger of two that
//! collide; the client re-runs an aborted transfer (counted under aborts). Concurrency rises
//! through `--concurrency`; the run stops after [`FLAT_STEPS_MAX`] steps in a row without
//! [`GAIN_MIN`] more throughput than the best so far.
//!
//! ```text
//!   one transfer       TxnGet a, TxnGet b (RTT each), then
//!     same range       TxnCommit: one Paxos write (‖ 2ε)
//!     two ranges       prepare at b's range, then commit at a's: two Paxos writes (+ 2ε)
//!   ceiling            the two shared cores: nodes, client and disk writes all run on them
//! ```

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use meridian_client::{Client, ClientError};

use super::cluster::{place_leaders, spawn_cluster, split_at, wait_replicated};
use super::plot::{self, Line};
use super::{
    CLIENT_DEADLINE, Floors, LEADERS_STABLE, OP_TIMEOUT, SETTLE_MAX, Step, WARM_OPS, drive, read_write_counted,
};
use crate::workload::acct;

/// Arguments of `meridian bench bank`.
#[derive(clap::Args)]
pub struct BankArgs {
    /// Accounts.
    #[arg(long, default_value_t = 64)]
    accounts: usize,
    /// Ranges the accounts are split over.
    #[arg(long, default_value_t = 4)]
    ranges: usize,
    /// Concurrent transfer clients, one step each, rising; the run stops early once throughput
    /// has stopped growing.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32,64")]
    concurrency: Vec<usize>,
    /// Seconds per step.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// TrueTime ε in milliseconds (0 makes commit wait free).
    #[arg(long, default_value_t = 0)]
    epsilon_ms: u64,
    /// Replicas of every range (the cluster has three nodes, or more if this is larger).
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// `--json` and `--plot` (SVG: latency by participants for `commit`, throughput and p99 by
    /// clients for `bank`).
    #[command(flatten)]
    out: super::Outputs,
}

/// A step counts as growth when its throughput beats the best so far by this fraction.
const GAIN_MIN: f64 = 0.05;
/// Steps in a row without growth after which the run stops.
const FLAT_STEPS_MAX: usize = 2;
/// Every account's opening balance: large enough that one-unit transfers never empty one.
pub(super) const BALANCE: i64 = 1_000_000_000;
/// Nodes of the cluster unless `--replicas` asks for more.
const NODES: usize = 3;
/// Most concurrent clients of one step.
const CONCURRENCY_MAX: usize = 1_024;

#[derive(serde::Serialize)]
struct Row {
    concurrency: usize,
    #[serde(flatten)]
    step: Step,
    /// Throughput over the best of the steps before (none for the first step).
    gain: Option<f64>,
}

#[derive(serde::Serialize)]
struct Report<'a> {
    floors: Floors,
    accounts: usize,
    ranges: usize,
    epsilon_ms: u64,
    rows: &'a [Row],
    /// The concurrency of the step with the highest throughput.
    best_concurrency: Option<usize>,
}

/// A balance as the bank stores it (decimal text).
fn balance(v: Option<Vec<u8>>) -> Result<i64, ClientError> {
    let v = v.unwrap_or_default();
    std::str::from_utf8(&v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ClientError::Invalid(format!("not a balance: {}", String::from_utf8_lossy(&v))))
}

/// One transfer of one unit from account `from` to account `to`.
async fn transfer(client: &Client, from: usize, to: usize) -> (u64, anyhow::Result<()>) {
    read_write_counted(client, |txn| {
        Box::pin(async move {
            let (a, b) = (acct(from), acct(to));
            let f = balance(txn.get(&a).await?)?;
            let g = balance(txn.get(&b).await?)?;
            txn.put(&a, (f - 1).to_string().as_bytes());
            txn.put(&b, (g + 1).to_string().as_bytes());
            Ok(())
        })
    })
    .await
}

/// Two distinct accounts below `n` for transfer `i` of client `task` (splitmix64: every client
/// draws its own sequence, and the same one in every run).
pub(super) fn pick(n: usize, task: usize, i: u64) -> (usize, usize) {
    let mut x = (task as u64) << 40 ^ i;
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    let from = (x % n as u64) as usize;
    let to = (from + 1 + (x >> 32) as usize % (n - 1)) % n;
    (from, to)
}

/// `meridian bench bank`.
pub fn run(args: BankArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.accounts >= 2, "--accounts must be at least 2");
    anyhow::ensure!((1..=args.accounts).contains(&args.ranges), "--ranges must be between 1 and --accounts");
    anyhow::ensure!(
        args.concurrency.iter().all(|c| (1..=CONCURRENCY_MAX).contains(c)),
        "--concurrency values must be between 1 and {CONCURRENCY_MAX}"
    );
    anyhow::ensure!(args.replicas >= 1, "--replicas must be at least 1");
    let floors = Floors::measure()?;
    let rt = super::runtime()?;
    let tmp = tempfile::tempdir()?;
    let nodes = args.replicas.max(NODES);
    // Dropping `procs` (also on an early return) kills every process started here.
    let procs = spawn_cluster(tmp.path(), nodes, args.replicas, args.epsilon_ms, &["--no-rebalance"])?;
    let rows = rt.block_on(async {
        let client =
            Arc::new(Client::connect(procs.iter().map(|n| n.addr.clone())).await?.with_deadline(CLIENT_DEADLINE));
        wait_replicated(&client, args.replicas, SETTLE_MAX).await?;
        // The first account of each range (where `workload bank init` splits, too).
        let firsts: Vec<Vec<u8>> = (0..args.ranges).map(|r| acct(r * args.accounts / args.ranges)).collect();
        split_at(&client, firsts[1..].to_vec()).await?;
        for a in 0..args.accounts {
            client.put(&acct(a), BALANCE.to_string().as_bytes()).await.context("opening the accounts")?;
        }
        place_leaders(&client, args.replicas, SETTLE_MAX, LEADERS_STABLE, |v| {
            let ids: Vec<_> = firsts.iter().map(|k| v.range(k).map(|d| d.id)).collect::<Option<_>>()?;
            // Every split visible: one range per first account.
            (ids.windows(2).all(|w| w[0] != w[1])).then(|| {
                firsts.iter().enumerate().map(|(r, k)| (k.clone(), v.nodes[(r + 1) % v.nodes.len()])).collect()
            })
        })
        .await?;
        eprintln!(
            "{} accounts over {} ranges on {nodes} nodes, ε = {} ms",
            args.accounts, args.ranges, args.epsilon_ms
        );
        let (mut rows, mut best, mut flat) = (Vec::<Row>::new(), 0.0f64, 0);
        for (step, &c) in args.concurrency.iter().enumerate() {
            let (client, n) = (client.clone(), args.accounts);
            let d = Duration::from_secs_f64(args.seconds);
            let s = drive(&format!("{c} clients"), c, d, WARM_OPS, OP_TIMEOUT, move |t, i| {
                let client = client.clone();
                async move {
                    let (from, to) = pick(n, t, i);
                    transfer(&client, from, to).await
                }
            })
            .await?;
            let gain = (step > 0).then(|| s.ops_per_sec / best);
            eprintln!(
                "  [{}/{}] {c:>4} clients: {}{}",
                step + 1,
                args.concurrency.len(),
                s.summary("transfers"),
                gain.map(|g| format!("  ({:+.0} % on the best before)", (g - 1.0) * 100.0)).unwrap_or_default()
            );
            if s.ops_per_sec >= best * (1.0 + GAIN_MIN) {
                flat = 0;
            } else {
                flat += 1;
            }
            best = best.max(s.ops_per_sec);
            rows.push(Row { concurrency: c, step: s, gain });
            if flat >= FLAT_STEPS_MAX {
                eprintln!(
                    "  throughput stopped growing: {FLAT_STEPS_MAX} steps without {:.0} % more",
                    GAIN_MIN * 100.0
                );
                break;
            }
        }
        anyhow::Ok(rows)
    });
    drop(procs);
    let rows = rows?;
    let best = rows.iter().max_by(|a, b| a.step.ops_per_sec.total_cmp(&b.step.ops_per_sec));
    print_table(&args, &floors, &rows, best);
    if let Some(path) = &args.out.json {
        let report = Report {
            floors,
            accounts: args.accounts,
            ranges: args.ranges,
            epsilon_ms: args.epsilon_ms,
            rows: &rows,
            best_concurrency: best.map(|b| b.concurrency),
        };
        super::write_json(path, &report)?;
    }
    if let Some(path) = &args.out.plot {
        let of = |f: fn(&Row) -> f64| rows.iter().map(|r| (r.concurrency as f64, f(r))).collect();
        let tput = [Line { label: "transfers/s".into(), points: of(|r| r.step.ops_per_sec), reference: false }];
        let p99 = [Line { label: "p99 ms".into(), points: of(|r| r.step.latency.p99_us / 1e3), reference: false }];
        let title = format!(
            "meridian bench bank: {} accounts, {} ranges, {} replicas, ε = {} ms",
            args.accounts, args.ranges, args.replicas, args.epsilon_ms
        );
        plot::two_axes_by_log2(path, &title, "concurrent clients", ("transfers/s", &tput), ("p99 latency, ms", &p99))?;
    }
    Ok(())
}

/// The steps as a Markdown table, and the best.
fn print_table(args: &BankArgs, floors: &Floors, rows: &[Row], best: Option<&Row>) {
    println!(
        "{} nodes, {} replicas per range; {} accounts over {} ranges; transfers read two distinct random \
         accounts and write both; ε = {} ms. Floors in this run: fdatasync p50 {:.0} µs, loopback TCP round \
         trip p50 {:.0} µs; commit wait 2ε = {} ms.",
        args.replicas.max(NODES),
        args.replicas,
        args.accounts,
        args.ranges,
        args.epsilon_ms,
        floors.fsync_p50_us,
        floors.loopback_rtt_p50_us,
        2 * args.epsilon_ms
    );
    let lines: Vec<String> = rows
        .iter()
        .map(|r| {
            let ms = |us: f64| if r.step.ops_per_sec > 0.0 { format!("{:.2}", us / 1e3) } else { "—".into() };
            format!(
                "| {} | {:.0} | {} | {} | {} | {} | {} |",
                r.concurrency,
                r.step.ops_per_sec,
                ms(r.step.latency.p50_us),
                ms(r.step.latency.p99_us),
                r.step.aborts,
                r.step.failed,
                r.gain.map(|g| format!("{:+.0} %", (g - 1.0) * 100.0)).unwrap_or_else(|| "—".into())
            )
        })
        .collect();
    super::print_table(
        "| clients | transfers/s | p50 ms | p99 ms | aborts | failed | vs best before |\n|---:|---:|---:|---:|---:|---:|---:|",
        &lines,
    );
    if let Some(b) = best {
        println!();
        println!(
            "Best: {:.0} transfers/s at {} clients (p50 {:.2} ms, p99 {:.2} ms).",
            b.step.ops_per_sec,
            b.concurrency,
            b.step.latency.p50_us / 1e3,
            b.step.latency.p99_us / 1e3
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfers_pick_two_distinct_accounts_and_reach_every_one() {
        let n = 64;
        let mut seen = vec![false; n];
        for task in 0..8 {
            for i in 0..500 {
                let (from, to) = pick(n, task, i);
                assert!(from < n && to < n && from != to, "pick({n}, {task}, {i}) = ({from}, {to})");
                seen[from] = true;
            }
        }
        assert!(seen.iter().all(|&s| s), "some account is never debited");
        assert_eq!(pick(2, 0, 7).0 + pick(2, 0, 7).1, 1, "two accounts: always both");
    }
}
