//! `meridian bench …`: measurements, each beside the physical floor it is bounded by.

mod bank;
mod cluster;
mod commit;
mod compare;
mod etcd;
mod paxos;
mod plot;
mod storage;
mod txn;

use std::future::Future;
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use meridian_client::{Client, ClientError, Txn, TxnFuture};

/// Benchmarks.
#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// Storage engine: MVCC point reads/writes, scans, synced Paxos-log appends by concurrency.
    Storage(storage::StorageArgs),
    /// Replicated appends through real Paxos replicas (RocksDB, fsync) in one process.
    Paxos(paxos::PaxosArgs),
    /// Replicated writes through node processes over loopback gRPC, by replica count.
    Replicate(cluster::ReplicateArgs),
    /// CPU use of nodes hosting many idle ranges.
    Idle(cluster::IdleArgs),
    /// Microbenchmarks beside Spanner's Table 3: read-write (one range, two ranges by 2PC),
    /// read-only and snapshot transactions through node processes, at 1, 3 and 5 replicas, with
    /// commit wait on (ε = 4 ms) and off (ε = 0). (`bench txn` is the old name.)
    #[command(alias = "txn")]
    Micro(txn::TxnArgs),
    /// Commit latency by number of ranges written (two-phase commit participants), beside
    /// Spanner's Table 4.
    Commit(commit::CommitArgs),
    /// Bank transfers across ranges at rising concurrency, until throughput stops growing.
    Bank(bank::BankArgs),
    /// The same bank transfers against etcd, pgbench's log summary and the comparison table
    /// with PostgreSQL and etcd (the pieces of `bench/compare`).
    #[command(subcommand)]
    Compare(compare::CompareCommand),
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Storage(args) => storage::run(args),
        BenchCommand::Paxos(args) => paxos::run(args),
        BenchCommand::Replicate(args) => cluster::replicate(args),
        BenchCommand::Idle(args) => cluster::idle(args),
        BenchCommand::Micro(args) => txn::run(args),
        BenchCommand::Commit(args) => commit::run(args),
        BenchCommand::Bank(args) => bank::run(args),
        BenchCommand::Compare(cmd) => compare::run(cmd),
    }
}

/// Latency summary in microseconds from an HDR histogram of nanoseconds.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Latency {
    pub p50_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
}

impl Latency {
    pub fn of(h: &hdrhistogram::Histogram<u64>) -> Self {
        let us = |ns: u64| ns as f64 / 1_000.0;
        Latency {
            p50_us: us(h.value_at_quantile(0.5)),
            p99_us: us(h.value_at_quantile(0.99)),
            mean_us: h.mean() / 1_000.0,
        }
    }
}

/// An HDR histogram for nanosecond latencies from 1 ns to 100 s, 3 significant digits.
pub fn histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("static histogram bounds are valid")
}

/// The runtime the cluster benchmarks drive their clients from: two workers, one per core of
/// the machine in BENCHMARKS.md (the node processes share the same cores).
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

/// Files a cluster benchmark also writes its results to.
#[derive(clap::Args)]
pub struct Outputs {
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Also plot the results as SVG to this file.
    #[arg(long)]
    plot: Option<std::path::PathBuf>,
}

/// Longest one operation of a cluster benchmark may take, all its retries included, before it
/// counts as failed (keeps every step bounded).
const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// The client's own per-request deadline (retries included), below [`OP_TIMEOUT`].
const CLIENT_DEADLINE: Duration = Duration::from_secs(8);
/// Longest to wait for a cluster to replicate, split and place its leaders.
const SETTLE_MAX: Duration = Duration::from_secs(180);
/// How long no range leader may move before measuring.
const LEADERS_STABLE: Duration = Duration::from_secs(4);
/// Unrecorded operations per client task before each measurement (routes, connections).
const WARM_OPS: u64 = 3;
const _: () = assert!(CLIENT_DEADLINE.as_millis() < OP_TIMEOUT.as_millis());

/// Loopback round trips timed for the RTT floor.
const RTT_PROBES: usize = 2_000;

/// The physical floors a cluster benchmark on loopback is set beside, measured by the run.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Floors {
    /// p50 of a 4 KiB `pwrite` + `fdatasync` on the benchmark's filesystem.
    pub fsync_p50_us: f64,
    /// p50 of a 64-byte TCP ping-pong on 127.0.0.1.
    pub loopback_rtt_p50_us: f64,
}

impl Floors {
    /// Measures both floors (about a second) and says so on stderr.
    pub fn measure() -> anyhow::Result<Floors> {
        let probe_dir = tempfile::tempdir()?;
        let f =
            Floors { fsync_p50_us: paxos::fsync_floor_us(probe_dir.path())?, loopback_rtt_p50_us: loopback_rtt_us()? };
        eprintln!(
            "floors: fdatasync p50 {:.0} µs, loopback TCP round trip p50 {:.0} µs",
            f.fsync_p50_us, f.loopback_rtt_p50_us
        );
        Ok(f)
    }
}

/// p50 of a 64-byte TCP ping-pong on 127.0.0.1 (with `TCP_NODELAY`), in microseconds.
fn loopback_rtt_us() -> anyhow::Result<f64> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = [0u8; 64];
        for _ in 0..RTT_PROBES {
            s.read_exact(&mut buf)?;
            s.write_all(&buf)?;
        }
        Ok(())
    });
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let (mut buf, mut h) = ([7u8; 64], histogram());
    for _ in 0..RTT_PROBES {
        let t = Instant::now();
        s.write_all(&buf)?;
        s.read_exact(&mut buf)?;
        h.record(t.elapsed().as_nanos() as u64).ok();
    }
    echo.join().map_err(|_| anyhow::anyhow!("echo thread panicked"))??;
    Ok(h.value_at_quantile(0.5) as f64 / 1_000.0)
}

/// What one measurement (one workload at one concurrency) found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Step {
    /// Successful operations per second of wall time.
    pub ops_per_sec: f64,
    /// Attempts the client aborted and ran again (wound-wait, lock timeouts, leader changes),
    /// of successful and failed operations alike; an operation that timed out counts none.
    pub aborts: u64,
    /// Operations that failed (after the client's own retries) or timed out: counted, not
    /// retried, and not in the latency histogram.
    pub failed: u64,
    /// The first failure, in words.
    pub first_error: Option<String>,
    pub latency: Latency,
}

impl Step {
    /// One line for a progress report: throughput in `what`/s, latencies, aborts, failures.
    pub fn summary(&self, what: &str) -> String {
        let l = &self.latency;
        format!(
            "{:>7.0} {what}/s  mean {:>6.2}  p50 {:>6.2}  p99 {:>6.2} ms  aborts {}  failed {}{}",
            self.ops_per_sec,
            l.mean_us / 1e3,
            l.p50_us / 1e3,
            l.p99_us / 1e3,
            self.aborts,
            self.failed,
            self.first_error.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default()
        )
    }
}

/// Runs `op(task, i)` back to back in each of `c` client tasks for `d`, after `warm` unrecorded
/// operations per task (routes, connections), each bounded by `timeout`. `op` returns how many
/// of its attempts were aborted and its result. A progress bar labelled `label` shows the
/// measurement on a terminal (nothing is drawn when stderr is not one).
pub async fn drive<F, Fut>(
    label: &str,
    c: usize,
    d: Duration,
    warm: u64,
    timeout: Duration,
    op: F,
) -> anyhow::Result<Step>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = (u64, anyhow::Result<()>)> + Send + 'static,
{
    let op = Arc::new(op);
    for t in 0..c {
        for i in 0..warm {
            let _ = tokio::time::timeout(timeout, op(t, i)).await;
        }
    }
    let done = Arc::new(AtomicU64::new(0));
    let bar = progress_bar(label, d);
    let ticker = {
        let (bar, done) = (bar.clone(), done.clone());
        tokio::spawn(async move {
            let start = Instant::now();
            loop {
                let elapsed = start.elapsed();
                let ops = done.load(Ordering::Relaxed);
                bar.set_position(elapsed.as_millis().min(d.as_millis()) as u64);
                bar.set_message(format!("{ops} ops, {:.0}/s", ops as f64 / elapsed.as_secs_f64().max(1e-3)));
                tokio::time::sleep(PROGRESS_TICK).await;
            }
        })
    };
    let start = Instant::now();
    let tasks: Vec<_> = (0..c)
        .map(|t| {
            let (op, done) = (op.clone(), done.clone());
            tokio::spawn(async move {
                let mut h = histogram();
                let (mut aborts, mut failed, mut first_error) = (0u64, 0u64, None);
                let mut i = warm;
                while start.elapsed() < d {
                    i += 1;
                    let t0 = Instant::now();
                    match tokio::time::timeout(timeout, op(t, i)).await {
                        Ok((a, Ok(()))) => {
                            aborts += a;
                            h.record(t0.elapsed().as_nanos() as u64).ok();
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok((a, Err(e))) => {
                            aborts += a;
                            failed += 1;
                            first_error.get_or_insert_with(|| e.to_string());
                        }
                        Err(_) => {
                            failed += 1;
                            first_error.get_or_insert_with(|| format!("timed out after {timeout:?}"));
                        }
                    }
                }
                (aborts, failed, first_error, h)
            })
        })
        .collect();
    let (mut aborts, mut failed, mut first_error, mut h) = (0, 0, None, histogram());
    for t in tasks {
        let (a, f, e, ht) = t.await?;
        aborts += a;
        failed += f;
        first_error = first_error.or(e);
        h.add(&ht).ok();
    }
    let wall = start.elapsed().as_secs_f64();
    ticker.abort();
    bar.finish_and_clear();
    Ok(Step { ops_per_sec: h.len() as f64 / wall, aborts, failed, first_error, latency: Latency::of(&h) })
}

/// How often a progress bar is redrawn.
const PROGRESS_TICK: Duration = Duration::from_millis(100);

/// A bar over a measurement of `d`, counting milliseconds, drawn on stderr if it is a terminal.
fn progress_bar(label: &str, d: Duration) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(d.as_millis() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix:>28} [{bar:30}] {elapsed:>3}/{duration:<3} {msg}")
            .expect("the progress template is valid")
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_string());
    bar
}

/// [`Client::read_write`], also returning how many of its attempts were aborted (every attempt
/// but the last; all of them if it gave up).
pub async fn read_write_counted<T, F>(client: &Client, mut body: F) -> (u64, anyhow::Result<T>)
where
    F: for<'t, 'c> FnMut(&'t mut Txn<'c>) -> TxnFuture<'t, T>,
{
    let mut attempts = 0u64;
    let r = client
        .read_write(|txn| {
            attempts += 1;
            body(txn)
        })
        .await;
    let aborted = match &r {
        Err(ClientError::Aborted(_)) => attempts,
        _ => attempts.saturating_sub(1),
    };
    (aborted, r.map(|(v, _)| v).map_err(Into::into))
}

/// A Markdown table after a blank line, if it has rows.
fn print_table(head: &str, rows: &[String]) {
    if rows.is_empty() {
        return;
    }
    println!();
    println!("{head}");
    for r in rows {
        println!("{r}");
    }
}

/// Writes `value` as pretty JSON to `path` and says so.
fn write_json(path: &std::path::Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)?)?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
