//! `meridian bench storage`: what the storage layer costs, against this disk's fdatasync floor.
//!
//! - **floor**: 4 KiB `pwrite` + `fdatasync` on a file in the bench directory — the price of one
//!   durable write on this machine; 1/floor is the best a writer that syncs alone can do.
//! - **mvcc put / get / scan**: unsynced single-version writes, point reads at a timestamp,
//!   100-row scans — the apply and read paths.
//! - **synced log appends at 1/4/16 writers**: each writer appends Paxos log entries with
//!   `sync = true`; RocksDB groups concurrent writers into one WAL sync (group commit), so
//!   appends/s must rise well above 1/floor as writers are added.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_storage::{Engine, GroupId, Mvcc, RocksEngine, Slot, WriteBatch, log, mvcc};
use meridian_truetime::Timestamp;
use rand::{Rng, SeedableRng};

use super::{Latency, histogram};

/// Arguments of `meridian bench storage`.
#[derive(clap::Args)]
pub struct StorageArgs {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Directory to benchmark in (default: a temporary directory under $TMPDIR).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Concurrent writers for the synced-append measurement.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    writers: Vec<usize>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

const KEYS: u64 = 100_000;
const VALUE_BYTES: usize = 100;
const SCAN_ROWS: usize = 100;
const LOG_ENTRY_BYTES: usize = 256;

#[derive(serde::Serialize)]
struct Row {
    name: String,
    ops_per_sec: f64,
    latency: Latency,
    note: String,
}

/// Runs `op` repeatedly for `d` (at least once) and returns (ops/s, latency).
fn measure(d: Duration, mut op: impl FnMut(u64) -> anyhow::Result<()>) -> anyhow::Result<(f64, Latency)> {
    let mut h = histogram();
    let start = Instant::now();
    let mut n = 0u64;
    while n == 0 || start.elapsed() < d {
        let t = Instant::now();
        op(n)?;
        h.record(t.elapsed().as_nanos() as u64).ok();
        n += 1;
    }
    Ok((n as f64 / start.elapsed().as_secs_f64(), Latency::of(&h)))
}

fn key(i: u64) -> Vec<u8> {
    format!("bench/{i:08}").into_bytes()
}

pub fn run(args: StorageArgs) -> anyhow::Result<()> {
    let tmp;
    let dir = match args.dir {
        Some(d) => d,
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&dir)?;
    let d = Duration::from_secs_f64(args.seconds);
    let mut rows = Vec::new();
    eprintln!("benchmarking storage in {} ({} s per measurement)", dir.display(), args.seconds);

    // The floor: one durable 4 KiB write.
    let file = OpenOptions::new().create(true).truncate(true).read(true).write(true).open(dir.join("fsync-probe"))?;
    let block = vec![0xA5u8; 4096];
    let (rate, lat) = measure(d, |_| {
        file.write_all_at(&block, 0)?;
        file.sync_data()?;
        Ok(())
    })?;
    let floor_us = lat.p50_us;
    rows.push(Row {
        name: "floor: 4 KiB pwrite + fdatasync".into(),
        ops_per_sec: rate,
        latency: lat,
        note: "1 / fsync".into(),
    });

    let engine: Arc<dyn Engine> = Arc::new(RocksEngine::open(dir.join("db"), &Default::default())?);
    let m = Mvcc::open(engine.clone())?;
    let value = vec![7u8; VALUE_BYTES];
    let ts = Timestamp::from_nanos(1_000);

    let (rate, lat) = measure(d, |i| {
        let mut b = WriteBatch::new();
        mvcc::put(&mut b, &key(i % KEYS), ts.saturating_add(Duration::from_nanos(i / KEYS)), &value)?;
        Ok(engine.write(b, false)?)
    })?;
    rows.push(Row {
        name: "mvcc put (unsynced, 1 writer)".into(),
        ops_per_sec: rate,
        latency: lat,
        note: format!("{VALUE_BYTES} B values"),
    });

    // Make sure every key exists before reading.
    let mut b = WriteBatch::new();
    for i in 0..KEYS {
        mvcc::put(&mut b, &key(i), ts, &value)?;
    }
    engine.write(b, true)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let read_ts = Timestamp::MAX;
    let (rate, lat) = measure(d, |_| {
        let v = m.get(&key(rng.random_range(0..KEYS)), read_ts)?;
        anyhow::ensure!(v.is_some(), "bench key missing");
        Ok(())
    })?;
    rows.push(Row {
        name: "mvcc get at a timestamp".into(),
        ops_per_sec: rate,
        latency: lat,
        note: format!("{KEYS} keys"),
    });

    let (rate, lat) = measure(d, |_| {
        let start = rng.random_range(0..KEYS - SCAN_ROWS as u64);
        let got = m.scan(&key(start), None, read_ts, SCAN_ROWS)?;
        anyhow::ensure!(got.len() == SCAN_ROWS, "short scan");
        Ok(())
    })?;
    rows.push(Row {
        name: format!("mvcc scan of {SCAN_ROWS} rows"),
        ops_per_sec: rate,
        latency: lat,
        note: format!("{:.0} rows/s", rate * SCAN_ROWS as f64),
    });

    for &writers in &args.writers {
        let entry = vec![3u8; LOG_ENTRY_BYTES];
        let results: Vec<anyhow::Result<(u64, hdrhistogram::Histogram<u64>)>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..writers)
                .map(|w| {
                    let (engine, entry) = (&engine, &entry);
                    s.spawn(move || {
                        let mut h = histogram();
                        let start = Instant::now();
                        let mut n = 0u64;
                        while start.elapsed() < d {
                            let t = Instant::now();
                            let mut b = WriteBatch::new();
                            log::put_entry(&mut b, GroupId(w as u64 + 1), Slot(n), entry)?;
                            engine.write(b, true)?;
                            h.record(t.elapsed().as_nanos() as u64).ok();
                            n += 1;
                        }
                        Ok((n, h))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("bench writer thread panicked")).collect()
        });
        let mut total = 0;
        let mut h = histogram();
        for r in results {
            let (n, hw) = r?;
            total += n;
            h.add(&hw).ok();
        }
        let rate = total as f64 / d.as_secs_f64();
        let per_fsync = rate * floor_us / 1e6;
        rows.push(Row {
            name: format!("synced log append, {writers} writer(s)"),
            ops_per_sec: rate,
            latency: Latency::of(&h),
            note: format!("{per_fsync:.1} × 1/fsync"),
        });
    }

    println!("| measurement | ops/s | p50 µs | p99 µs | note |");
    println!("|---|---:|---:|---:|---|");
    for r in &rows {
        println!(
            "| {} | {:.0} | {:.1} | {:.1} | {} |",
            r.name, r.ops_per_sec, r.latency.p50_us, r.latency.p99_us, r.note
        );
    }
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&rows)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
