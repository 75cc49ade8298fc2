//! `make sim-paxos SEEDS=N` / `make sim-paxos SEED=S`: the seeded Paxos simulation.
//!
//! Runs seeds `0..N` (on every core, each seed deterministic on its own) and ends with
//! `N seeds, K violations`; every failing seed prints itself with the command that replays it.
//! With `--seed S` it runs one seed and prints its full report.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use meridian_shard::paxos::sim::random::{SimConfig, run_seed_catching};
use meridian_tests::seeds::{cores, for_each_seed};

fn usage() -> ! {
    eprintln!("usage: sim-paxos [--seeds N] [--seed S] [--from F]");
    std::process::exit(2)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut seeds, mut one, mut from) = (200u64, None, 0u64);
    while let Some(a) = args.next() {
        let mut val = || args.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or_else(|| usage());
        match a.as_str() {
            "--seeds" => seeds = val(),
            "--seed" => one = Some(val()),
            "--from" => from = val(),
            _ => usage(),
        }
    }
    let cfg = SimConfig::default();
    if let Some(seed) = one {
        let r = run_seed_catching(seed, &cfg);
        println!(
            "seed {seed}: {} replicas, {} ops ok, {} unknown, {} slots chosen, {} leases, {} crashes ({} unsynced entries lost), {} events",
            r.nodes, r.ops_ok, r.ops_unknown, r.slots, r.leases, r.crashes, r.entries_lost, r.events
        );
        for v in &r.violations {
            println!("  violation: {v}");
        }
        println!("1 seeds, {} violations", usize::from(!r.violations.is_empty()));
        std::process::exit(i32::from(!r.violations.is_empty()));
    }
    let failed = Mutex::new(Vec::new());
    let done = AtomicU64::new(0);
    for_each_seed(from..from + seeds, cores(), |seed| {
        let r = run_seed_catching(seed, &cfg);
        if !r.violations.is_empty() {
            let mut f = failed.lock().unwrap_or_else(|p| p.into_inner());
            eprintln!("seed {seed} FAILED — replay with: make sim-paxos SEED={seed}");
            for v in &r.violations {
                eprintln!("  {v}");
            }
            f.push(seed);
        }
        let d = done.fetch_add(1, Ordering::SeqCst) + 1;
        if d.is_multiple_of(500) {
            eprintln!("… {d}/{seeds} seeds");
        }
    });
    let failed = failed.into_inner().unwrap_or_else(|p| p.into_inner());
    println!("{seeds} seeds, {} violations", failed.len());
    std::process::exit(i32::from(!failed.is_empty()));
}
