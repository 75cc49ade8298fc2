//! `meridian bench …`: measurements, each beside the physical floor it is bounded by.

mod cluster;
mod paxos;
mod storage;
mod txn;

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
    /// Read-write (one range, two ranges by 2PC), read-only and snapshot transactions through
    /// node processes, by replica count and ε.
    Txn(txn::TxnArgs),
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Storage(args) => storage::run(args),
        BenchCommand::Paxos(args) => paxos::run(args),
        BenchCommand::Replicate(args) => cluster::replicate(args),
        BenchCommand::Idle(args) => cluster::idle(args),
        BenchCommand::Txn(args) => txn::run(args),
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
