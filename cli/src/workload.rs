//! `meridian workload bank init|run|check`: the bank workload against any cluster.
//!
//! ```text
//!   init   N accounts bank/acct/NNNN with an initial balance, split over R ranges
//!   run    W workers move money between random accounts (read-write transactions, two-phase
//!          commit when the accounts' ranges differ), each transfer also writing its ledger
//!          entry bank/ledger/RUN/W/SEQ in the same transaction; an auditor sums every account in
//!          lock-free read-only and stale snapshots; every operation goes to a history file
//!   check  replays the history against the final state: the checks below, then a verdict
//! ```
//!
//! `meridian workload append run|check` (Elle's list-append workload, checked for strict
//! serializability) is in [`append`]; the helpers both share are at the bottom of this file.
//!
//! Checks: every audit sums to the initial total and sees no negative balance and every
//! account; every acknowledged transfer is in the ledger and no failed one is; the final
//! balances are exactly the initial ones moved by the ledger's transfers (acknowledged, plus
//! whichever of the unknown ones committed — the ledger tells which); and external consistency
//! (a transfer or strong audit that began after another was acknowledged has the larger
//! timestamp).

mod append;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use meridian_check::elle::Outcome;
use meridian_check::external::Committed;
use meridian_client::{Client, ClientError, ReadOnly, TxnFuture};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

const ACCT: &str = "bank/acct/";
const LEDGER: &str = "bank/ledger/";
const META: &[u8] = b"bank/meta";
/// How far in the past a stale audit reads.
const STALE_AUDIT_BEHIND: Duration = Duration::from_millis(500);
/// Longest wait, when a run starts, for stale snapshots to see the bank.
const STALE_VISIBLE_WAIT_MAX: Duration = Duration::from_secs(10);

/// `meridian workload …`.
#[derive(clap::Subcommand)]
pub enum WorkloadCommand {
    /// Bank transfers between accounts on several ranges, with audits and a ledger.
    Bank {
        /// Any node of the cluster (its --listen address).
        #[arg(long, default_value = "127.0.0.1:7000", env = "MERIDIAN_ADDR", global = true)]
        addr: String,
        /// TLS and token for a secured cluster.
        #[command(flatten)]
        auth: crate::cert::ClientAuthArgs,
        #[command(subcommand)]
        cmd: BankCommand,
    },
    /// Elle's list-append workload: transactions append to and read lists over several ranges;
    /// the history is checked for strict serializability.
    Append {
        /// Any node of the cluster (its --listen address; `run` only).
        #[arg(long, default_value = "127.0.0.1:7000", env = "MERIDIAN_ADDR", global = true)]
        addr: String,
        /// TLS and token for a secured cluster (`run` only).
        #[command(flatten)]
        auth: crate::cert::ClientAuthArgs,
        #[command(subcommand)]
        cmd: append::AppendCommand,
    },
}

/// The bank workload's steps.
#[derive(clap::Subcommand)]
pub enum BankCommand {
    /// Create the accounts (fails if they exist) and split them over ranges.
    Init {
        /// Accounts.
        #[arg(long, default_value_t = 16)]
        accounts: usize,
        /// Initial balance of each.
        #[arg(long, default_value_t = 100)]
        balance: i64,
        /// Ranges to spread them over.
        #[arg(long, default_value_t = 4)]
        ranges: usize,
    },
    /// Run transfers and audits, record the history, then check it.
    Run {
        /// How long.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Concurrent transfer workers.
        #[arg(long, default_value_t = 8)]
        workers: usize,
        /// Where to write the history (JSON lines).
        #[arg(long, default_value = "bank-history.jsonl")]
        history: PathBuf,
    },
    /// Check a recorded history against the cluster's current state.
    Check {
        /// The history written by `run`.
        #[arg(long, default_value = "bank-history.jsonl")]
        history: PathBuf,
    },
}

#[derive(Serialize, Deserialize)]
struct Meta {
    accounts: usize,
    balance: i64,
}

/// One line of the history.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Event {
    /// A transfer: `ok` (acknowledged), `fail` (certainly not committed) or `unknown`, and why
    /// when it is not `ok` (a history written before reasons were recorded has none).
    Transfer {
        id: String,
        from: usize,
        to: usize,
        amount: i64,
        outcome: String,
        invoke_ns: u64,
        ack_ns: u64,
        ts: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// An audit: the sum and the smallest balance seen in one snapshot.
    Audit { stale: bool, sum: i64, min: i64, rows: usize, invoke_ns: u64, ack_ns: u64, ts: u64 },
}

/// The key of account `i`.
pub(crate) fn acct(i: usize) -> Vec<u8> {
    format!("{ACCT}{i:04}").into_bytes()
}

fn number(v: &[u8]) -> Result<i64, ClientError> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ClientError::Invalid(format!("not a balance: {}", String::from_utf8_lossy(v))))
}

/// Runs `meridian workload …`.
pub fn run(cmd: WorkloadCommand) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    match cmd {
        WorkloadCommand::Bank { addr, auth, cmd } => rt.block_on(bank(addr, auth.options()?, cmd)),
        WorkloadCommand::Append { addr, auth, cmd } => rt.block_on(append::run(addr, auth, cmd)),
    }
}

async fn bank(addr: String, options: meridian_client::ClientOptions, cmd: BankCommand) -> anyhow::Result<()> {
    let client = Arc::new(Client::connect_with([addr], options).await?);
    match cmd {
        BankCommand::Init { accounts, balance, ranges } => init(&client, accounts, balance, ranges).await,
        BankCommand::Run { seconds, workers, history } => {
            run_bank(&client, Duration::from_secs(seconds), workers, &history).await?;
            check(&client, &history).await
        }
        BankCommand::Check { history } => check(&client, &history).await,
    }
}

/// Creates the bank: `accounts` accounts of `balance` over `ranges` ranges.
pub(crate) async fn init(client: &Client, accounts: usize, balance: i64, ranges: usize) -> anyhow::Result<()> {
    anyhow::ensure!((2..=100_000).contains(&accounts), "--accounts must be between 2 and 100000");
    anyhow::ensure!(balance >= 0, "--balance must not be negative");
    anyhow::ensure!(client.get(META).await?.0.is_none(), "the bank exists already (bank/meta is set)");
    println!("bank: writing {accounts} accounts of {balance}, {INIT_BATCH_KEYS} per transaction");
    let started = Instant::now();
    let mut last_report = Instant::now();
    for first in (0..accounts).step_by(INIT_BATCH_KEYS) {
        let batch: Vec<usize> = (first..accounts.min(first + INIT_BATCH_KEYS)).collect();
        let value = balance.to_string();
        client
            .read_write(|t| {
                let (batch, value) = (batch.clone(), value.clone());
                Box::pin(async move {
                    for i in batch {
                        t.put(&acct(i), value.as_bytes());
                    }
                    Ok(())
                })
            })
            .await
            .with_context(|| format!("writing accounts {first}..{}", first + batch.len()))?;
        let done = first + batch.len();
        if done == accounts || last_report.elapsed() >= INIT_PROGRESS_EVERY {
            println!("  {done}/{accounts} accounts written ({:.1} s)", started.elapsed().as_secs_f64());
            last_report = Instant::now();
        }
    }
    split_evenly(client, accounts, ranges, acct).await?;
    client.put(META, &serde_json::to_vec(&Meta { accounts, balance })?).await?;
    println!("bank: {accounts} accounts of {balance} over {ranges} ranges ({:.1} s)", started.elapsed().as_secs_f64());
    Ok(())
}

/// Accounts `init` writes per transaction (well within the limit of writes per transaction).
const INIT_BATCH_KEYS: usize = 500;
/// How often `init` reports how far it got.
const INIT_PROGRESS_EVERY: Duration = Duration::from_secs(1);

const _: () = assert!(INIT_BATCH_KEYS <= meridian_client::limits::TXN_WRITES_MAX);

async fn meta(client: &Client) -> anyhow::Result<Meta> {
    let raw = client.get(META).await?.0.context("no bank here: run `meridian workload bank init` first")?;
    serde_json::from_slice(&raw).context("bank/meta is corrupt")
}

/// Every account's balance in `ro`'s snapshot.
pub(crate) fn balances<'t>(ro: &'t mut ReadOnly<'_>) -> TxnFuture<'t, Vec<i64>> {
    Box::pin(async move {
        let rows = ro.scan(ACCT.as_bytes(), format!("{ACCT}~").as_bytes(), 1_000_000).await?;
        rows.iter().map(|(_, v)| number(v)).collect()
    })
}

/// Runs transfers and audits for `duration`, printing progress every second and recording every
/// operation in `history`.
pub(crate) async fn run_bank(
    client: &Arc<Client>,
    duration: Duration,
    workers: usize,
    history: &Path,
) -> anyhow::Result<()> {
    let m = meta(client).await?;
    // A stale audit reads STALE_AUDIT_BEHIND in the past: just after `init`, that past holds
    // no bank or part of one, which breaks no invariant. Start once such a snapshot sees
    // bank/meta, which `init` writes after every account.
    let deadline = Instant::now() + STALE_VISIBLE_WAIT_MAX;
    loop {
        let seen = client.snapshot_stale(STALE_AUDIT_BEHIND, |ro| Box::pin(async move { ro.get(META).await })).await;
        if matches!(seen, Ok((Some(_), _))) {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "snapshots {STALE_AUDIT_BEHIND:?} old still miss the bank after {STALE_VISIBLE_WAIT_MAX:?}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = HistoryWriter::create(history)?;
    let epoch = Instant::now();
    // Ledger ids carry the run (its start in ms), so runs on one bank never reuse an id.
    let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(Progress::new()?);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (client, stop, out, progress) = (client.clone(), stop.clone(), out.clone(), progress.clone());
        let n = m.accounts;
        tasks.push(tokio::spawn(async move {
            let mut x = 0x9E37_79B9_7F4A_7C15u64
                ^ (w as u64).wrapping_mul(0x2545_F491_4F6C_DD1D)
                ^ epoch.elapsed().as_nanos() as u64;
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let from = (x % n as u64) as usize;
                let to = (from + 1 + (x >> 16) as usize % (n - 1)) % n;
                let amount = 1 + (x >> 32) as i64 % 10;
                let id = format!("{LEDGER}{run}/{w:03}/{seq:09}");
                let entry = format!("{from},{to},{amount}");
                let invoke_ns = epoch.elapsed().as_nanos() as u64;
                let r = client
                    .read_write(|t| {
                        let (id, entry) = (id.clone(), entry.clone());
                        Box::pin(async move {
                            let f = number(&t.get(&acct(from)).await?.unwrap_or_default())?;
                            let g = number(&t.get(&acct(to)).await?.unwrap_or_default())?;
                            if f < amount {
                                return Ok(false);
                            }
                            t.put(&acct(from), (f - amount).to_string().as_bytes());
                            t.put(&acct(to), (g + amount).to_string().as_bytes());
                            t.put(id.as_bytes(), entry.as_bytes());
                            Ok(true)
                        })
                    })
                    .await;
                let ack_ns = epoch.elapsed().as_nanos() as u64;
                let (outcome, ts, reason) = match r {
                    Ok((true, ts)) => (Outcome::Ok, ts.nanos(), None),
                    // Nothing written.
                    Ok((false, _)) => (Outcome::Fail, 0, Some(INSUFFICIENT_FUNDS.to_string())),
                    Err(e) => (outcome_of(&e), 0, Some(reason_of(&e))),
                };
                progress.record(outcome, ack_ns - invoke_ns, reason.as_deref());
                let outcome = outcome_name(outcome).into();
                out.record(&Event::Transfer { id, from, to, amount, outcome, invoke_ns, ack_ns, ts, reason });
                seq += 1;
            }
        }));
    }
    let auditor = {
        let (client, stop, out) = (client.clone(), stop.clone(), out.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let stale = n.is_multiple_of(3);
                let invoke_ns = epoch.elapsed().as_nanos() as u64;
                let r = if stale {
                    client.snapshot_stale(STALE_AUDIT_BEHIND, balances).await
                } else {
                    client.read_only(balances).await
                };
                if let Ok((b, ts)) = r {
                    let ack_ns = epoch.elapsed().as_nanos() as u64;
                    let (sum, min) = (b.iter().sum(), b.iter().copied().min().unwrap_or(0));
                    out.record(&Event::Audit { stale, sum, min, rows: b.len(), invoke_ns, ack_ns, ts: ts.nanos() });
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    progress.print_every_second(duration, "transfers").await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    auditor.await?;
    progress.print_reasons("transfers");
    out.finish()
}

/// Why a transfer wrote nothing although the cluster served it.
const INSUFFICIENT_FUNDS: &str = "insufficient funds (nothing to move)";

/// What checking a history found.
#[derive(Clone)]
pub(crate) struct BankReport {
    /// Acknowledged transfers.
    pub ok: usize,
    /// Transfers whose outcome the client did not learn.
    pub unknown: u64,
    /// Of those, how many the ledger shows committed.
    pub unknown_committed: usize,
    /// Transfers that certainly did not commit (aborted, or refused for lack of funds).
    pub failed: u64,
    /// Why transfers failed or have an unknown outcome: `(outcome, reason)` → count.
    pub reasons: BTreeMap<(String, String), u64>,
    /// Audits (strong and stale).
    pub audits: u64,
    /// Every broken invariant, in words.
    pub violations: Vec<String>,
}

async fn check(client: &Client, history: &Path) -> anyhow::Result<()> {
    let r = check_history(client, history).await?;
    println!(
        "bank check: {} transfers ok, {} unknown ({} of them committed), {} failed, {} audits, {} violations",
        r.ok,
        r.unknown,
        r.unknown_committed,
        r.failed,
        r.audits,
        r.violations.len()
    );
    for line in reason_lines(&r.reasons) {
        println!("  {line}");
    }
    for v in r.violations.iter().take(VIOLATIONS_SHOWN_MAX) {
        println!("  violation: {v}");
    }
    anyhow::ensure!(r.violations.is_empty(), "{} violations", r.violations.len());
    Ok(())
}

/// Violations printed (the count is always exact).
pub(crate) const VIOLATIONS_SHOWN_MAX: usize = 20;

/// Checks a recorded history against the cluster's current state. An error means the check
/// could not be made (the cluster did not answer, the history is unreadable); broken
/// invariants are in the report.
pub(crate) async fn check_history(client: &Client, history: &Path) -> anyhow::Result<BankReport> {
    let m = meta(client).await?;
    let checked = check_events(&read_json_lines::<Event>(history)?, m.accounts, m.balance);
    check_final_state(client, &checked).await
}

/// A history checked on its own, ready for the check against the final state.
pub(crate) struct Checked {
    /// The report so far: counts, and the violations the history shows by itself.
    pub report: BankReport,
    ok: Vec<String>,
    failed: Vec<String>,
    accounts: usize,
    balance: i64,
}

/// The checks that need only the history of a bank of `accounts` accounts of `balance`
/// (`Err`: the history file is unreadable): every audit sees the whole, non-negative total,
/// and external consistency.
pub(crate) fn check_history_file(history: &Path, accounts: usize, balance: i64) -> anyhow::Result<Checked> {
    Ok(check_events(&read_json_lines::<Event>(history)?, accounts, balance))
}

fn check_events(events: &[Event], accounts: usize, balance: i64) -> Checked {
    let total = balance * accounts as i64;
    let mut violations = Vec::new();
    let mut order = Vec::new();
    let (mut ok, mut unknown, mut audits) = (Vec::new(), 0u64, 0u64);
    let mut failed = Vec::new();
    let mut reasons = BTreeMap::new();
    for e in events {
        match e {
            Event::Transfer { id, outcome, invoke_ns, ack_ns, ts, reason, .. } => {
                if outcome != "ok" {
                    let why = reason.clone().unwrap_or_else(|| "no reason recorded".into());
                    *reasons.entry((outcome.clone(), why)).or_insert(0) += 1;
                }
                match outcome.as_str() {
                    "ok" => {
                        ok.push(id.clone());
                        order.push(Committed { id: id.clone(), invoke_ns: *invoke_ns, ack_ns: *ack_ns, ts: *ts });
                    }
                    "unknown" => unknown += 1,
                    _ => failed.push(id.clone()),
                }
            }
            Event::Audit { stale, sum, min, rows, invoke_ns, ack_ns, ts } => {
                audits += 1;
                if *sum != total || *min < 0 || *rows != accounts {
                    violations.push(format!("audit at {ts}: sum {sum} (want {total}), min {min}, {rows} accounts"));
                }
                if !stale {
                    let id = format!("audit at {ts}");
                    order.push(Committed { id, invoke_ns: *invoke_ns, ack_ns: *ack_ns, ts: *ts });
                }
            }
        }
    }
    if let Err(v) = meridian_check::external::check(&order) {
        violations.push(v.to_string());
    }
    let report = BankReport {
        ok: ok.len(),
        unknown,
        unknown_committed: 0,
        failed: failed.len() as u64,
        reasons,
        audits,
        violations,
    };
    Checked { report, ok, failed, accounts, balance }
}

/// Completes `checked` with the checks against the cluster's final state, read in one
/// snapshot: the ledger holds every acknowledged transfer and no failed one, and the balances
/// are the initial ones moved by the ledger's transfers. `Err`: the cluster did not answer.
pub(crate) async fn check_final_state(client: &Client, checked: &Checked) -> anyhow::Result<BankReport> {
    let Checked { report, ok, failed, accounts, balance } = checked;
    let (accounts, balance, mut report) = (*accounts, *balance, report.clone());
    let (final_state, _) = client
        .read_only(|ro| {
            Box::pin(async move {
                let b = balances(ro).await?;
                let l = ro.scan(LEDGER.as_bytes(), format!("{LEDGER}~").as_bytes(), usize::MAX).await?;
                Ok((b, l))
            })
        })
        .await?;
    let violations = &mut report.violations;
    let (balances, ledger) = final_state;
    let ledger: BTreeMap<Vec<u8>, Vec<u8>> = ledger.into_iter().collect();
    for id in ok {
        if !ledger.contains_key(id.as_bytes()) {
            violations.push(format!("acknowledged transfer {id} is not in the ledger (lost)"));
        }
    }
    for id in failed {
        if ledger.contains_key(id.as_bytes()) {
            violations.push(format!("transfer {id} was reported failed but is in the ledger (it committed)"));
        }
    }
    let mut expect = vec![balance; accounts];
    for (k, v) in &ledger {
        let f: Vec<i64> = String::from_utf8_lossy(v).split(',').filter_map(|p| p.parse().ok()).collect();
        match f.as_slice() {
            [from, to, amount] if (*from as usize) < accounts && (*to as usize) < accounts => {
                expect[*from as usize] -= amount;
                expect[*to as usize] += amount;
            }
            _ => violations.push(format!("malformed ledger entry {}", String::from_utf8_lossy(k))),
        }
    }
    if balances.len() != accounts {
        violations.push(format!("{} accounts, {} expected", balances.len(), accounts));
    }
    for (i, (got, want)) in balances.iter().zip(&expect).enumerate() {
        if got != want {
            violations.push(format!("account {i}: balance {got}, but the ledger says {want}"));
        }
    }
    // This history's unknown transfers that committed: its run's ledger entries it did not see
    // acknowledged (earlier runs on the same bank have other run prefixes).
    let run_of = |id: &str| id.rsplitn(3, '/').nth(2).map(str::to_owned);
    let runs: BTreeSet<String> = ok.iter().chain(failed).filter_map(|i| run_of(i)).collect();
    let acknowledged: BTreeSet<&str> = ok.iter().map(String::as_str).collect();
    report.unknown_committed = ledger
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .filter(|k| !acknowledged.contains(k.as_str()) && run_of(k).is_some_and(|r| runs.contains(&r)))
        .count();
    Ok(report)
}

// ----- shared by the workloads -----

/// Splits the key space so that the keys `key(0..n)` spread over `ranges` ranges: at
/// `key(r·n / ranges)` for `r` in `1..ranges` (`ranges` capped at `n`), right to left. A split point that
/// already starts a range is left alone, so splitting again later is harmless. (The meta range
/// learns of a split a moment after it is made, so the ranges are listed once, up front.)
pub(crate) async fn split_evenly(
    client: &Client,
    n: usize,
    ranges: usize,
    key: impl Fn(usize) -> Vec<u8>,
) -> anyhow::Result<()> {
    let (descs, _, _) = client.cluster_view().await.context("listing the ranges")?;
    let starts: BTreeSet<Vec<u8>> = descs.into_iter().map(|d| d.start).collect();
    let ranges = ranges.clamp(1, n.max(1));
    // Right to left: each split then cuts the range that keeps its leader and lease, instead of
    // the right half just made, which waits for its first leader's lease.
    let points: Vec<Vec<u8>> =
        (1..ranges).rev().map(|r| key(r * n / ranges)).filter(|at| !starts.contains(at)).collect();
    for (i, at) in points.iter().enumerate() {
        let started = Instant::now();
        client.split(at).await.with_context(|| format!("splitting at {}", String::from_utf8_lossy(at)))?;
        println!(
            "  split at {} ({}/{}, {:.1} s)",
            String::from_utf8_lossy(at),
            i + 1,
            points.len(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Why a transaction failed, in words that group alike failures: the error's first clause,
/// with the numbers and ids that differ between otherwise equal failures replaced by `N`.
pub(crate) fn reason_of(e: &ClientError) -> String {
    let text = e.to_string();
    let head = match text.split_once("; ") {
        Some((head, _)) => head,
        None => &text,
    };
    let mut out = String::new();
    let mut in_number = false;
    for c in head.chars() {
        // Digits, and hex ids (transaction ids, addresses' ports) glued to them.
        if c.is_ascii_digit() || (in_number && c.is_ascii_hexdigit()) {
            if !in_number {
                out.push('N');
            }
            in_number = true;
        } else {
            in_number = false;
            out.push(c);
        }
    }
    if out.chars().count() > REASON_CHARS_MAX {
        out = out.chars().take(REASON_CHARS_MAX).chain(std::iter::once('…')).collect();
    }
    out
}

/// Longest reason kept, in characters.
const REASON_CHARS_MAX: usize = 120;
/// Most distinct reasons printed per outcome (the counts always add up: the rest is summed).
const REASONS_SHOWN_MAX: usize = 10;

/// `failed: N — why (count); …` and `unknown: …` lines, most frequent reasons first.
pub(crate) fn reason_lines(reasons: &BTreeMap<(String, String), u64>) -> Vec<String> {
    let mut lines = Vec::new();
    for outcome in ["fail", "unknown"] {
        let mut of: Vec<(&String, u64)> =
            reasons.iter().filter(|((o, _), _)| o == outcome).map(|((_, why), n)| (why, *n)).collect();
        if of.is_empty() {
            continue;
        }
        of.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let total: u64 = of.iter().map(|(_, n)| n).sum();
        let mut parts: Vec<String> = of.iter().take(REASONS_SHOWN_MAX).map(|(why, n)| format!("{n} {why}")).collect();
        let rest: u64 = of.iter().skip(REASONS_SHOWN_MAX).map(|(_, n)| n).sum();
        if rest > 0 {
            parts.push(format!("{rest} for other reasons"));
        }
        let name = if outcome == "fail" { "failed" } else { "unknown" };
        lines.push(format!("{name} {total}: {}", parts.join("; ")));
    }
    lines
}

/// How a failed transaction ended, as far as the client knows: aborted or refused means it
/// certainly did not commit; anything else (a lost connection, a deadline, an ambiguous
/// commit) may hide a commit.
pub(crate) fn outcome_of(e: &ClientError) -> Outcome {
    match e {
        ClientError::Aborted(_)
        | ClientError::Invalid(_)
        | ClientError::Unauthenticated(_)
        | ClientError::WrongAddress(_) => Outcome::Fail,
        ClientError::Ambiguous(_) | ClientError::Unavailable(_) | ClientError::Transport(_) => Outcome::Unknown,
    }
}

/// The name of an outcome in history files and progress lines.
pub(crate) fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Ok => "ok",
        Outcome::Fail => "fail",
        Outcome::Unknown => "unknown",
    }
}

/// A history file being written, one JSON object a line; cheap to clone into every task.
/// Write errors are kept, not lost: [`HistoryWriter::finish`] reports the first.
#[derive(Clone)]
pub(crate) struct HistoryWriter(Arc<Mutex<HistoryOut>>);

struct HistoryOut {
    file: std::io::BufWriter<std::fs::File>,
    /// The first write that failed.
    error: Option<std::io::Error>,
}

impl HistoryWriter {
    /// Creates (or truncates) `path`.
    pub fn create(path: &Path) -> anyhow::Result<HistoryWriter> {
        let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(HistoryWriter(Arc::new(Mutex::new(HistoryOut { file: std::io::BufWriter::new(file), error: None }))))
    }

    fn out(&self) -> std::sync::MutexGuard<'_, HistoryOut> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends one line.
    pub fn record(&self, event: &impl Serialize) {
        let mut out = self.out();
        let written = serde_json::to_writer(&mut out.file, event).map_err(std::io::Error::from);
        if let Err(e) = written.and_then(|()| out.file.write_all(b"\n")) {
            out.error.get_or_insert(e);
        }
    }

    /// Flushes; the first error of any write, if there was one.
    pub fn finish(&self) -> anyhow::Result<()> {
        let mut out = self.out();
        if let Some(e) = out.error.take() {
            return Err(e).context("writing the history");
        }
        out.file.flush().context("writing the history")
    }
}

/// The lines of a history file, each a JSON `T`; blank lines are skipped. An error names the
/// file, and the line that does not parse.
pub(crate) fn read_json_lines<T: DeserializeOwned>(path: &Path) -> anyhow::Result<Vec<T>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut events = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let event = serde_json::from_str(&line).with_context(|| format!("{} line {}", path.display(), i + 1))?;
        events.push(event);
    }
    Ok(events)
}

/// A workload's outcome counts and latencies, shared by its workers and printed every second.
pub(crate) struct Progress {
    ok: AtomicU64,
    failed: AtomicU64,
    unknown: AtomicU64,
    /// Latency of acknowledged transactions (ns).
    latency_ns: Mutex<hdrhistogram::Histogram<u64>>,
    /// Why transactions failed or have an unknown outcome: `(outcome, reason)` → count.
    reasons: Mutex<BTreeMap<(String, String), u64>>,
}

impl Progress {
    /// Nothing counted yet.
    pub fn new() -> anyhow::Result<Progress> {
        Ok(Progress {
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            unknown: AtomicU64::new(0),
            latency_ns: Mutex::new(hdrhistogram::Histogram::new(3)?),
            reasons: Mutex::new(BTreeMap::new()),
        })
    }

    /// Counts one transaction that took `latency_ns`, and why it failed if it did.
    pub fn record(&self, outcome: Outcome, latency_ns: u64, reason: Option<&str>) {
        if outcome != Outcome::Ok {
            let why = reason.unwrap_or("no reason given").to_string();
            let mut reasons = self.reasons.lock().unwrap_or_else(|p| p.into_inner());
            *reasons.entry((outcome_name(outcome).to_string(), why)).or_insert(0) += 1;
        }
        let counter = match outcome {
            Outcome::Ok => {
                let _ = self.latency_ns.lock().unwrap_or_else(|p| p.into_inner()).record(latency_ns);
                &self.ok
            }
            Outcome::Fail => &self.failed,
            Outcome::Unknown => &self.unknown,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Prints why `what` failed or have an unknown outcome, grouped, most frequent first.
    pub fn print_reasons(&self, what: &str) {
        let reasons = self.reasons.lock().unwrap_or_else(|p| p.into_inner());
        let lines = reason_lines(&reasons);
        if !lines.is_empty() {
            println!("{what} not acknowledged, by reason:");
        }
        for line in lines {
            println!("  {line}");
        }
    }

    /// Prints a line a second for `duration`: acknowledged `what` per second, latency
    /// percentiles and the counts so far.
    pub async fn print_every_second(&self, duration: Duration, what: &str) {
        let start = Instant::now();
        let mut last = 0;
        while start.elapsed() < duration {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = self.ok.load(Ordering::Relaxed);
            let h = self.latency_ns.lock().unwrap_or_else(|p| p.into_inner()).clone();
            println!(
                "{:>4.0}s  {:>6} {what}/s  p50 {:>7.2} ms  p99 {:>7.2} ms  ok {now}  failed {}  unknown {}",
                start.elapsed().as_secs_f64(),
                now - last,
                h.value_at_quantile(0.5) as f64 / 1e6,
                h.value_at_quantile(0.99) as f64 / 1e6,
                self.failed.load(Ordering::Relaxed),
                self.unknown.load(Ordering::Relaxed)
            );
            last = now;
        }
    }
}
