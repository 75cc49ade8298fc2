//! # `meridian` — the command-line entry point
//!
//! One binary for every role (DESIGN.md §8): `demo` (a local cluster in one command), `start`
//! (one node), `status`, `kv` and `admin` (talk to a cluster), `bench` (measure against the
//! physical floor), `foundation` (the storage walk-through), `sql` (a SQL shell), `workload`
//! (invariant-checking workloads against any cluster) and `chaos` (a local multi-process
//! cluster under injected faults, checked). Logging goes to stderr through `tracing`,
//! filtered by `RUST_LOG` (default `info`); `start` also takes `--log FILTER` and
//! `--log-format json`, and a configuration file (see [`config`]).
//!
//! Every command that talks to a running cluster takes the same credentials
//! ([`cert::ClientAuthArgs`]: `--certs-dir`/`--ca-cert`, `--cert-name`, `--token-file`): `status`,
//! `kv`, `admin`, `workload`, `backup`, `restore`; `sql` takes `--certs-dir`/`--ca-cert` (TLS,
//! verified as psql's `sslmode=verify-full`) and `--password-file` or `PGPASSWORD`. Commands that
//! start their own local cluster (`demo`, `bench`, `chaos`) need none.

mod backup;
mod bench;
mod cert;
mod chaos;
mod cluster;
mod config;
mod foundation;
mod sql;
mod workload;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Meridian: a Spanner-like, externally consistent, range-sharded SQL-lite database.
#[derive(Parser)]
#[command(name = "meridian", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the cluster's certificate authority and node/client certificates (TLS).
    #[command(subcommand)]
    Cert(cert::CertCommand),
    /// Start a local cluster in one process (real gRPC on loopback) and show its status.
    Demo(cluster::DemoArgs),
    /// Run one node until SIGINT/SIGTERM (graceful: hands its leaderships away first).
    /// Settings come from flags, then MERIDIAN_* environment variables, then `--config FILE`.
    Start {
        #[command(flatten)]
        node: cluster::StartArgs,
        #[command(flatten)]
        config: config::ConfigArgs,
    },
    /// Print a cluster's nodes, ranges, replicas, leaders and lease expiry.
    Status(cluster::StatusArgs),
    /// Read and write keys.
    Kv {
        /// Any node of the cluster (its --listen address).
        #[arg(long, default_value = "127.0.0.1:7000", env = "MERIDIAN_ADDR", global = true)]
        addr: String,
        #[command(flatten)]
        auth: cert::ClientAuthArgs,
        #[command(subcommand)]
        cmd: cluster::KvCommand,
    },
    /// Split, merge and move ranges, transfer leadership.
    Admin {
        /// Any node of the cluster (its --listen address).
        #[arg(long, default_value = "127.0.0.1:7000", env = "MERIDIAN_ADDR", global = true)]
        addr: String,
        #[command(flatten)]
        auth: cert::ClientAuthArgs,
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
    /// Copy a cluster's data, consistent at one timestamp, into a directory, while it serves.
    Backup(backup::BackupArgs),
    /// Write a backup into a (new, empty) cluster.
    Restore(backup::RestoreArgs),
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
    let (matches, effective) = config::parse(Cli::command(), std::env::args_os().collect())?;
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let (filter, json) = match &cli.command {
        Command::Start { config, .. } => (config.log.clone(), config.log_format == "json"),
        _ => (None, false),
    };
    init_logging(filter, json)?;
    match cli.command {
        Command::Cert(cmd) => cert::run(cmd),
        Command::Demo(args) => cluster::demo(args),
        Command::Start { node, config } => match effective {
            Some(e) if config.print_config => {
                print!("{}", e.render());
                Ok(())
            }
            _ => cluster::start(node),
        },
        Command::Status(args) => cluster::status(args),
        Command::Kv { addr, auth, cmd } => cluster::kv(addr, auth.options()?, cmd),
        Command::Admin { addr, auth, cmd } => cluster::admin(addr, auth.options()?, cmd),
        Command::Sql(args) => sql::run(args),
        Command::Foundation(args) => foundation::run(args),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Workload(cmd) => workload::run(cmd),
        Command::Chaos(cmd) => chaos::run(cmd),
        Command::Backup(args) => backup::backup(args),
        Command::Restore(args) => backup::restore(args),
    }
}

/// Logs to stderr, filtered by `filter` (`RUST_LOG` syntax), else `RUST_LOG`, else `info`.
/// Span fields (`txn{id=… node=…}`) appear in every line logged inside the span.
fn init_logging(filter: Option<String>, json: bool) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = match filter {
        Some(f) => EnvFilter::try_new(&f).map_err(|e| anyhow::anyhow!("--log {f:?}: {e}"))?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    // Colours only on a terminal: log files stay greppable (`id=…`, `txn_id=…`).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr);
    if json {
        fmt.json().init()
    } else {
        fmt.init()
    }
    Ok(())
}
