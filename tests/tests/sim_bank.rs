//! The whole-cluster simulation in `make test`: 200 seeds of bank transfers, audits and list
//! appends under faults with zero violations, and each checker shown to catch a build that
//! breaks one protocol rule (`meridian_tests::cluster_sim`).

use std::sync::Mutex;

use meridian_tests::cluster_sim::{SeedReport, SimConfig, Unsafe, run_seed};
use meridian_tests::seeds::for_each_seed;

/// Runs seeds `0..n` on two threads; the reports in seed order.
fn run_seeds(n: u64, cfg: &SimConfig) -> Vec<SeedReport> {
    let out = Mutex::new(Vec::new());
    for_each_seed(0..n, 2, |seed| {
        let r = run_seed(seed, cfg);
        out.lock().unwrap_or_else(|p| p.into_inner()).push(r);
    });
    let mut v = out.into_inner().unwrap_or_else(|p| p.into_inner());
    v.sort_by_key(|r| r.seed);
    v
}

#[test]
fn two_hundred_seeds_of_faults_break_no_invariant() {
    let reports = run_seeds(200, &SimConfig::default());
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.violations.is_empty())
        .map(|r| format!("seed {} (replay: make sim-bank SEED={}): {:#?}", r.seed, r.seed, r.violations))
        .collect();
    assert!(failed.is_empty(), "{} of 200 seeds failed:\n{}", failed.len(), failed.join("\n"));
    // The run must have done something worth checking.
    let transfers: u64 = reports.iter().map(|r| r.transfers.ok).sum();
    let appends: u64 = reports.iter().map(|r| r.appends.ok).sum();
    let audits: u64 = reports.iter().map(|r| r.audits).sum();
    let faults: usize = reports.iter().map(|r| r.faults.len()).sum();
    let crashes = reports.iter().flat_map(|r| &r.faults).filter(|f| f.contains("crash") || f.contains("power")).count();
    println!("200 seeds: {transfers} transfers, {appends} list appends, {audits} audits, {faults} faults");
    assert!(transfers > 20_000 && appends > 10_000 && audits > 10_000, "too little work was checked");
    assert!(faults > 800 && crashes > 100, "too few faults were injected: {faults}, {crashes} crashes");
    assert!(reports.iter().all(|r| r.transfers_after_heal > 0), "every seed commits after healing");
}

/// Runs seeds with `rule` broken, one after another, until `caught` holds for the violations
/// found so far (at most `n` seeds); returns them. A broken build can wreck a cluster enough to
/// make a seed slow, so the search stops as soon as the checkers have spoken.
fn violations_with(rule: Unsafe, n: u64, caught: impl Fn(&[String]) -> bool) -> Vec<String> {
    let cfg = SimConfig { unsafe_switch: rule, ..SimConfig::default() };
    let mut found = Vec::new();
    for seed in 0..n {
        found.extend(run_seed(seed, &cfg).violations);
        if caught(&found) {
            break;
        }
    }
    found
}

fn any(v: &[String], prefix: &str) -> bool {
    v.iter().any(|v| v.starts_with(prefix))
}

#[test]
fn the_external_consistency_check_catches_skipped_commit_wait() {
    let v = violations_with(Unsafe::SkipCommitWait, 40, |v| any(v, "external consistency violated"));
    assert!(any(&v, "external consistency violated"), "not caught: {v:#?}");
}

#[test]
fn the_bank_and_list_append_checks_catch_early_lock_release() {
    let caught = |v: &[String]| any(v, "bank:") && any(v, "list-append:");
    let v = violations_with(Unsafe::EarlyLockRelease, 20, caught);
    assert!(caught(&v), "bank and list-append checks: {v:#?}");
}

#[test]
fn the_checkers_catch_acknowledgements_before_durability() {
    let caught = |v: &[String]| any(v, "bank:") || any(v, "list-append:");
    let v = violations_with(Unsafe::AckBeforePersist, 40, caught);
    assert!(caught(&v), "not caught: {v:#?}");
}

#[test]
fn the_read_answer_check_catches_reads_before_commit_wait() {
    // ClusterSim checks every answer: a read showing a version before true time passed it
    // panics the seed (reported as a violation).
    let caught = |v: &[String]| v.iter().any(|v| v.contains("before its commit wait ended"));
    let v = violations_with(Unsafe::ReadBeforeCommitWait, 20, caught);
    assert!(caught(&v), "not caught: {v:#?}");
}

#[test]
fn the_snapshot_repeatability_check_catches_reads_that_promise_nothing() {
    let caught = |v: &[String]| any(v, "snapshot:") || any(v, "external consistency violated");
    let v = violations_with(Unsafe::ReadsPromiseNothing, 60, caught);
    assert!(caught(&v), "not caught: {v:#?}");
}
