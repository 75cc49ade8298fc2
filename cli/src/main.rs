//! # `meridian` — the command-line entry point
//!
//! One binary for every role: `demo` (the main job on a local embedded setup), `bench` (measure
//! against the physical floor), and — as the issues that build them land — `start`, `sql`,
//! `status`, `workload` and `chaos` (DESIGN.md §8). Logging goes to stderr through `tracing`,
//! filtered by `RUST_LOG` (default `info`).

mod bench;
mod demo;

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
    /// Run the main job end to end on a local embedded setup and say what happened.
    Demo(demo::DemoArgs),
    /// Measure Meridian against the physical floor of this machine.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Bench(cmd) => bench::run(cmd),
    }
}
