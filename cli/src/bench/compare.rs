//! `meridian bench compare …`: the pieces of `bench/compare` that are easier to get right (and
//! to test) in Rust than in the shell: the etcd transfer driver, the summary of pgbench's
//! per-transaction logs, and the comparison table.
//!
//! `bench/compare` runs one bank-transfer workload against three systems in turn, on the same
//! machine, with the same accounts, opening balances, pair choice, concurrency levels and
//! duration, every commit durable (fsync) before it is acknowledged:
//!
//! ```text
//!   Meridian    meridian bench bank: 3 node processes, 3 replicas per range, ε = 0; a transfer
//!               is one read-write transaction (two reads, two writes; 2PC across ranges)
//!   PostgreSQL  pgbench, compare.d/transfer.sql: BEGIN; two SELECTs; two UPDATEs; COMMIT at
//!               SERIALIZABLE, synchronous_commit = on; serialization failures retried
//!   etcd        meridian bench compare etcd: 3 members; two linearizable Ranges, then a Txn
//!               putting both keys if neither key's mod_revision moved; re-run if one did
//! ```
//!
//! Every system's results are written in one JSON shape (`rows` of concurrency, throughput,
//! latency, retries, failures — the shape `meridian bench bank --json` writes), which
//! `meridian bench compare report` reads back to print the table and the ratios at each
//! system's best concurrency.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{Step, histogram};

/// `meridian bench compare …` (used by `bench/compare`).
#[derive(clap::Subcommand)]
pub enum CompareCommand {
    /// Bank transfers against an etcd cluster, each a compare-and-swap `Txn` on the two keys'
    /// mod revisions, at rising concurrency; checks the bank total at the end.
    Etcd(super::etcd::EtcdArgs),
    /// Summarises pgbench's per-transaction logs, one folder `c<clients>` per concurrency, as
    /// the JSON the report reads.
    Pgbench(PgbenchArgs),
    /// The comparison table (Markdown) and ratios from the systems' JSON results.
    Report(ReportArgs),
}

pub fn run(cmd: CompareCommand) -> anyhow::Result<()> {
    match cmd {
        CompareCommand::Etcd(args) => super::etcd::run(args),
        CompareCommand::Pgbench(args) => pgbench(args),
        CompareCommand::Report(args) => report(args),
    }
}

/// Latency summary in microseconds (the shape of [`super::Latency`], readable back).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Lat {
    pub p50_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
}

/// One concurrency level of one system, as every system's JSON holds it (extra fields, such as
/// `meridian bench bank`'s `gain`, are ignored when read).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Row {
    /// Concurrent clients.
    pub concurrency: usize,
    /// Successful transfers per second.
    pub ops_per_sec: f64,
    /// Attempts that were aborted and run again (wound-wait aborts, serialization failures,
    /// failed compares).
    pub aborts: u64,
    /// Transfers that failed for good.
    pub failed: u64,
    #[serde(default)]
    pub first_error: Option<String>,
    pub latency: Lat,
}

impl Row {
    /// The row of a measured [`Step`].
    pub fn of(concurrency: usize, s: &Step) -> Row {
        let l = s.latency;
        Row {
            concurrency,
            ops_per_sec: s.ops_per_sec,
            aborts: s.aborts,
            failed: s.failed,
            first_error: s.first_error.clone(),
            latency: Lat { p50_us: l.p50_us, p99_us: l.p99_us, mean_us: l.mean_us },
        }
    }
}

/// One system's results.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Series {
    pub rows: Vec<Row>,
}

impl Series {
    /// The row with the highest throughput.
    pub fn best(&self) -> Option<&Row> {
        self.rows.iter().max_by(|a, b| a.ops_per_sec.total_cmp(&b.ops_per_sec))
    }
}

/// Arguments of `meridian bench compare pgbench`.
#[derive(clap::Args)]
pub struct PgbenchArgs {
    /// Folder holding one folder `c<clients>` per concurrency, each with the `pgbench_log*`
    /// files of one `pgbench --log` run.
    #[arg(long)]
    dir: PathBuf,
    /// The run's duration (`pgbench -T`), seconds: throughput is successes over it.
    #[arg(long)]
    seconds: f64,
    /// Write the summary as JSON to this file.
    #[arg(long)]
    json: PathBuf,
}

/// What one pgbench per-transaction log holds.
#[derive(Debug, Default, PartialEq)]
struct LogSummary {
    ok: u64,
    failed: u64,
    retries: u64,
}

/// Adds the lines of one pgbench (15) per-transaction log to `h` (latencies in ns) and `sum`.
/// A line is `client_id transaction_no time script_no time_epoch time_us [schedule_lag]
/// [retries]`: `time` is the latency in µs of all tries, or `failed` (or the failure's kind
/// with `--failures-detailed`); `retries` is last, present when `--max-tries` is not 1.
fn read_pgbench_log(text: &str, h: &mut hdrhistogram::Histogram<u64>, sum: &mut LogSummary) -> anyhow::Result<()> {
    for (n, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        anyhow::ensure!(f.len() >= 6, "line {} is not a pgbench transaction log line: {line:?}", n + 1);
        if f.len() >= 7 {
            sum.retries += f[f.len() - 1].parse::<u64>().with_context(|| format!("retries on line {}", n + 1))?;
        }
        match f[2].parse::<u64>() {
            Ok(us) => {
                sum.ok += 1;
                h.record(us.saturating_mul(1_000).max(1)).ok();
            }
            Err(_) => sum.failed += 1,
        }
    }
    Ok(())
}

/// The concurrency of a folder named `c<clients>`.
fn level(dir: &Path) -> Option<usize> {
    dir.file_name()?.to_str()?.strip_prefix('c')?.parse().ok()
}

/// The row of one pgbench run from the logs in `dir`.
fn pgbench_row(dir: &Path, clients: usize, seconds: f64) -> anyhow::Result<Row> {
    let (mut h, mut sum, mut files) = (histogram(), LogSummary::default(), 0);
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("pgbench_log")) {
            let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            read_pgbench_log(&text, &mut h, &mut sum).with_context(|| format!("in {}", p.display()))?;
            files += 1;
        }
    }
    anyhow::ensure!(files > 0, "no pgbench_log* files in {} (was pgbench run with --log?)", dir.display());
    let step = Step {
        ops_per_sec: sum.ok as f64 / seconds,
        aborts: sum.retries,
        failed: sum.failed,
        first_error: (sum.failed > 0).then(|| format!("{} transfers failed after pgbench's --max-tries", sum.failed)),
        latency: super::Latency::of(&h),
    };
    Ok(Row::of(clients, &step))
}

/// `meridian bench compare pgbench`.
fn pgbench(args: PgbenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.seconds > 0.0, "--seconds must be positive");
    let mut levels: Vec<(usize, PathBuf)> = std::fs::read_dir(&args.dir)
        .with_context(|| format!("reading {}", args.dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| level(&p).map(|c| (c, p)))
        .collect();
    levels.sort();
    anyhow::ensure!(!levels.is_empty(), "no c<clients> folders in {}", args.dir.display());
    let rows = levels.iter().map(|(c, p)| pgbench_row(p, *c, args.seconds)).collect::<anyhow::Result<Vec<_>>>()?;
    super::write_json(&args.json, &Series { rows })
}

/// Arguments of `meridian bench compare report`.
#[derive(clap::Args)]
pub struct ReportArgs {
    /// `meridian bench bank --json` output.
    #[arg(long)]
    meridian: Option<PathBuf>,
    /// `meridian bench compare pgbench` output.
    #[arg(long)]
    postgres: Option<PathBuf>,
    /// `meridian bench compare etcd --json` output.
    #[arg(long)]
    etcd: Option<PathBuf>,
    /// Also write every system's rows, the best of each and the ratios as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The targets of issue 8: Meridian's best throughput over each other system's best.
const TARGETS: [(&str, f64); 2] = [("PostgreSQL", 0.5), ("etcd", 4.0)];

/// One system's best row and Meridian's throughput over it.
#[derive(Debug, serde::Serialize)]
struct Best<'a> {
    system: &'a str,
    row: &'a Row,
    /// Meridian's best throughput over this system's best (none for Meridian itself or when
    /// either is zero).
    meridian_ratio: Option<f64>,
    /// What issue 8 asks of that ratio, if anything.
    target: Option<f64>,
}

/// Each system's best row and Meridian's ratio against it, in the order given.
fn bests<'a>(systems: &'a [(&'a str, Series)]) -> Vec<Best<'a>> {
    let meridian = systems.iter().find(|(n, _)| *n == "Meridian").and_then(|(_, s)| s.best()).map(|r| r.ops_per_sec);
    systems
        .iter()
        .filter_map(|(name, s)| {
            let row = s.best()?;
            let meridian_ratio = match meridian {
                Some(m) if *name != "Meridian" && row.ops_per_sec > 0.0 => Some(m / row.ops_per_sec),
                _ => None,
            };
            let target = TARGETS.iter().find(|(n, _)| n == name).map(|(_, t)| *t);
            Some(Best { system: name, row, meridian_ratio, target })
        })
        .collect()
}

/// Milliseconds from microseconds, two decimals.
fn ms(us: f64) -> String {
    format!("{:.2}", us / 1e3)
}

/// `meridian bench compare report`.
fn report(args: ReportArgs) -> anyhow::Result<()> {
    let mut systems = Vec::new();
    for (name, path) in [("Meridian", &args.meridian), ("PostgreSQL", &args.postgres), ("etcd", &args.etcd)] {
        if let Some(p) = path {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {name}'s results {}", p.display()))?;
            let s: Series = serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
            systems.push((name, s));
        }
    }
    anyhow::ensure!(!systems.is_empty(), "give at least one of --meridian, --postgres, --etcd");
    let mut lines = Vec::new();
    for (name, s) in &systems {
        for r in &s.rows {
            lines.push(format!(
                "| {name} | {} | {:.0} | {} | {} | {} | {} |",
                r.concurrency,
                r.ops_per_sec,
                ms(r.latency.p50_us),
                ms(r.latency.p99_us),
                r.aborts,
                r.failed
            ));
        }
    }
    super::print_table(
        "| system | clients | transfers/s | p50 ms | p99 ms | retried | failed |\n|---|---:|---:|---:|---:|---:|---:|",
        &lines,
    );
    let bests = bests(&systems);
    let lines: Vec<String> = bests
        .iter()
        .map(|b| {
            let ratio = b.meridian_ratio.map(|r| format!("{r:.2}×")).unwrap_or_else(|| "—".into());
            let target = match (b.target, b.meridian_ratio) {
                (Some(t), Some(r)) => format!("≥ {t}×: {}", if r >= t { "met" } else { "not met" }),
                (Some(t), None) => format!("≥ {t}×: no Meridian result"),
                _ => "—".into(),
            };
            format!(
                "| {} | {} | {:.0} | {} | {} | {ratio} | {target} |",
                b.system,
                b.row.concurrency,
                b.row.ops_per_sec,
                ms(b.row.latency.p50_us),
                ms(b.row.latency.p99_us)
            )
        })
        .collect();
    super::print_table(
        "| system | best at clients | transfers/s | p50 ms | p99 ms | Meridian ÷ system | target |\n\
         |---|---:|---:|---:|---:|---:|---|",
        &lines,
    );
    if let Some(p) = &args.json {
        #[derive(serde::Serialize)]
        struct All<'a> {
            systems: Vec<(&'a str, &'a Series)>,
            best: &'a [Best<'a>],
        }
        super::write_json(p, &All { systems: systems.iter().map(|(n, s)| (*n, s)).collect(), best: &bests })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbench_logs_give_counts_retries_and_percentiles() {
        // 100 successes of 1..=100 ms, two failures; retries in the last column.
        let mut text = String::new();
        for i in 1..=100u64 {
            text.push_str(&format!("0 {i} {} 0 1764000000 {} {}\n", i * 1_000, i, i % 2));
        }
        text.push_str("1 101 failed 0 1764000001 5 99\n1 102 serialization 0 1764000001 6 99\n\n");
        let (mut h, mut sum) = (histogram(), LogSummary::default());
        read_pgbench_log(&text, &mut h, &mut sum).expect("parses");
        assert_eq!(sum, LogSummary { ok: 100, failed: 2, retries: 50 + 2 * 99 });
        let l = super::super::Latency::of(&h);
        assert!((l.p50_us - 50_000.0).abs() < 100.0, "p50 {} µs", l.p50_us);
        assert!((l.p99_us - 99_000.0).abs() < 100.0, "p99 {} µs", l.p99_us);
        // Without --max-tries there is no retries column.
        let (mut h, mut sum) = (histogram(), LogSummary::default());
        read_pgbench_log("3 7 812 0 1764000000 123\n", &mut h, &mut sum).expect("parses");
        assert_eq!(sum, LogSummary { ok: 1, failed: 0, retries: 0 });
        // pgbench's summary output is not a log.
        let (mut h, mut sum) = (histogram(), LogSummary::default());
        assert!(read_pgbench_log("tps = 812.3 (without initial connection time)\n", &mut h, &mut sum).is_err());
    }

    #[test]
    fn pgbench_levels_come_from_folder_names() {
        assert_eq!(level(Path::new("/tmp/x/c16")), Some(16));
        assert_eq!(level(Path::new("/tmp/x/stdout")), None);
        assert_eq!(level(Path::new("/tmp/x/cx")), None);
    }

    fn row(c: usize, tput: f64) -> Row {
        Row {
            concurrency: c,
            ops_per_sec: tput,
            aborts: 0,
            failed: 0,
            first_error: None,
            latency: Lat { p50_us: 1_000.0, p99_us: 2_000.0, mean_us: 1_100.0 },
        }
    }

    #[test]
    fn ratios_are_taken_at_each_systems_best() {
        let systems = vec![
            ("Meridian", Series { rows: vec![row(1, 300.0), row(8, 900.0), row(32, 600.0)] }),
            ("PostgreSQL", Series { rows: vec![row(1, 500.0), row(32, 3_000.0)] }),
            ("etcd", Series { rows: vec![row(1, 100.0), row(16, 200.0)] }),
        ];
        let b = bests(&systems);
        assert_eq!(b.iter().map(|b| b.row.concurrency).collect::<Vec<_>>(), [8, 32, 16]);
        assert_eq!(b[0].meridian_ratio, None);
        assert_eq!(b[1].meridian_ratio, Some(0.3));
        assert_eq!((b[2].meridian_ratio, b[2].target), (Some(4.5), Some(4.0)));
    }

    #[test]
    fn meridian_bank_json_reads_as_a_series() {
        let json = r#"{"floors":{"fsync_p50_us":70.0,"loopback_rtt_p50_us":40.0},"accounts":64,"ranges":4,
            "epsilon_ms":0,"best_concurrency":1,"rows":[{"concurrency":1,"ops_per_sec":327.0,"aborts":0,
            "failed":0,"first_error":null,"latency":{"p50_us":2780.0,"p99_us":14680.0,"mean_us":3000.0},
            "gain":null}]}"#;
        let s: Series = serde_json::from_str(json).expect("bank JSON parses");
        assert_eq!(s.best().map(|r| (r.concurrency, r.ops_per_sec)), Some((1, 327.0)));
    }
}
