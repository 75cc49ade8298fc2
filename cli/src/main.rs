//! # `meridian` — the command-line entry point
//!
//! One binary for every role (DESIGN.md §8): `demo` (a local cluster in one command), `start`
//! (one node), `status`, `kv` and `admin` (talk to a cluster), `bench` (measure against the
//! physical floor), `foundation` (the storage walk-through), `sql` (a SQL shell), `workload`
//! (invariant-checking workloads against any cluster) and `chaos` (a local multi-process
//! cluster under injected faults, checked). Logging goes to stderr through `tracing`,
//! filtered by `RUST_LOG` (default `info`).

mod bench;
mod chaos;
mod cluster;
mod foundation;
mod sql;
mod workload;

use clap::{Parser, Subcommand};

/// Meridian: a Spanner-like, externally consistent, range-sharded SQL-lite database.
#[derive(Parser)]
#[command(name = "meridian", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a local cluster in one process (real gRPC on loopback) and show its status.
    Demo(cluster::DemoArgs),
    /// Run one node until SIGINT/SIGTERM (graceful: hands its leaderships away first).
    Start(cluster::StartArgs),
    /// Print a cluster's nodes, ranges, replicas, leaders and lease expiry.
    Status(cluster::StatusArgs),
    /// Read and write keys.
    Kv {
        /// Any node of the cluster.
        #[arg(long, default_value = "127.0.0.1:7000", env = "MERIDIAN_ADDR")]
        addr: String,
        #[command(subcommand)]
        cmd: cluster::KvCommand,
    },
    /// Split, merge and move ranges, transfer leadership.
    Admin {
        /// Any node of the cluster.
        #[arg(long, default_value = "127.0.0.1:7000", env = "MERIDIAN_ADDR")]
        addr: String,
        #[command(subcommand)]
        cmd: cluster::AdminCommand,
    },
    /// SQL shell over the PostgreSQL protocol (`--addr`/`--url`), or `--local` in memory: interactive, `-e`, a file or stdin.
    Sql(sql::SqlArgs),
    /// Walk through the storage foundation: TrueTime, MVCC on RocksDB, the Paxos log.
    Foundation(foundation::DemoArgs),
    /// Workloads that check invariants against a running cluster (`workload bank init|run|check`,
    /// `workload append run|check`).
    #[command(subcommand)]
    Workload(workload::WorkloadCommand),
    /// Measure Meridian against the physical floor of this machine.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Run a workload on a local multi-process cluster while injecting faults, then check it
    /// (`chaos bank`).
    #[command(subcommand)]
    Chaos(chaos::ChaosCommand),
}

fn main() {
    if let Err(e) = run() {
        // The chain of causes, not a backtrace: errors here are for people.
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Demo(args) => cluster::demo(args),
        Command::Start(args) => cluster::start(args),
        Command::Status(args) => cluster::status(args),
        Command::Kv { addr, cmd } => cluster::kv(addr, cmd),
        Command::Admin { addr, cmd } => cluster::admin(addr, cmd),
        Command::Sql(args) => sql::run(args),
        Command::Foundation(args) => foundation::run(args),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Workload(cmd) => workload::run(cmd),
        Command::Chaos(cmd) => chaos::run(cmd),
    }
}
