//! `make sim-bank SEEDS=N` / `make sim-bank SEED=S`: the whole-cluster simulation (real node
//! cores, simulated network, disks and clocks) with bank and list-append checkers.
//!
//! Runs seeds `0..N` on every core, each deterministic on its own, and ends with
//! `N seeds, K violations`; every failing seed prints itself with the command that replays it.
//! `--seed S` runs one seed and prints its faults and counts; with `RUST_LOG` set (e.g.
//! `RUST_LOG=meridian_server=debug`) it also prints the node cores' events (two-phase commit
//! steps with transaction ids, leader changes) on stderr. `--unsafe RULE` breaks one rule
//! on purpose (skip-commit-wait, early-lock-release, ack-before-persist) to see the checkers
//! catch it.

use std::sync::Mutex;

use meridian_tests::cluster_sim::{SeedReport, SimConfig, Unsafe, run_seed};
use meridian_tests::seeds::{cores, for_each_seed};

fn usage() -> ! {
    eprintln!("usage: sim-bank [--seeds N] [--from F] [--seed S] [--unsafe RULE] [--no-faults]");
    std::process::exit(2)
}

fn summary(r: &SeedReport) -> String {
    let (t, a) = (r.transfers, r.appends);
    format!(
        "seed {}: transfers {} ok / {} failed / {} unknown ({} after healing), appends {} ok / {} failed / {} unknown, {} audits, {} faults",
        r.seed,
        t.ok,
        t.failed,
        t.unknown,
        r.transfers_after_heal,
        a.ok,
        a.failed,
        a.unknown,
        r.audits,
        r.faults.len()
    )
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut seeds, mut one, mut from) = (200u64, None, 0u64);
    let mut cfg = SimConfig::default();
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--seeds" => seeds = val().parse().unwrap_or_else(|_| usage()),
            "--seed" => one = Some(val().parse().unwrap_or_else(|_| usage())),
            "--from" => from = val().parse().unwrap_or_else(|_| usage()),
            "--unsafe" => {
                cfg.unsafe_switch = val().parse::<Unsafe>().unwrap_or_else(|e| {
                    eprintln!("{e}");
                    usage()
                })
            }
            "--no-faults" => cfg.faults = false,
            _ => usage(),
        }
    }
    if cfg.unsafe_switch != Unsafe::None {
        println!("UNSAFE build: {:?} — violations are expected", cfg.unsafe_switch);
    }
    if let Some(seed) = one {
        if std::env::var_os("RUST_LOG").is_some() {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_writer(std::io::stderr)
                .without_time()
                .with_ansi(false)
                .init();
        }
        let r = run_seed(seed, &cfg);
        for f in &r.faults {
            println!("  fault {f}");
        }
        println!("{}", summary(&r));
        for v in &r.violations {
            println!("  violation: {v}");
        }
        println!("1 seeds, {} violations", usize::from(!r.violations.is_empty()));
        std::process::exit(i32::from(!r.violations.is_empty()));
    }
    let failed = Mutex::new(Vec::new());
    let totals = Mutex::new((0u64, 0u64, 0u64));
    for_each_seed(from..from + seeds, cores(), |seed| {
        let r = run_seed(seed, &cfg);
        {
            let mut t = totals.lock().unwrap_or_else(|p| p.into_inner());
            t.0 += r.transfers.ok;
            t.1 += r.appends.ok;
            t.2 += r.faults.len() as u64;
        }
        if !r.violations.is_empty() {
            let mut f = failed.lock().unwrap_or_else(|p| p.into_inner());
            eprintln!("seed {seed} FAILED — replay with: make sim-bank SEED={seed}");
            eprintln!("  {}", summary(&r));
            for v in &r.violations {
                eprintln!("  {v}");
            }
            f.push(seed);
        }
    });
    let failed = failed.into_inner().unwrap_or_else(|p| p.into_inner());
    let (transfers, appends, faults) = totals.into_inner().unwrap_or_else(|p| p.into_inner());
    println!("({transfers} transfers and {appends} list appends committed under {faults} faults)");
    println!("{seeds} seeds, {} violations", failed.len());
    std::process::exit(i32::from(!failed.is_empty()));
}
