//! `meridian workload append run|check`: Elle's list-append workload against any cluster.
//!
//! ```text
//!   run    K list slots append/list/SSSS, split over R ranges; W workers run read-write
//!          transactions of 1–4 random micro-ops — append a unique integer to a list, or read a
//!          whole list — until the time is up; every transaction goes to a history file
//!          (JSON lines); then `check`
//!   check  the history through meridian_check::elle for strict serializability (ww, wr, rw and
//!          real-time edges); the report, a verdict line, and the export for elle-cli or adya
//! ```
//!
//! A list is one value: its elements in decimal, oldest first, separated by commas. An append
//! reads the value and writes it back one element longer, under the transaction's locks, so it
//! is a locked read plus a buffered write; a transaction whose lists lie in several ranges
//! commits by two-phase commit. Reads of a list show the whole prefix of appends before them,
//! so the longest read of a key gives its version order, and the checker infers every
//! dependency from that (Kingsbury & Alvaro, VLDB 2020; `check/src/elle.rs`).
//!
//! ## Keys
//!
//! Elle's key `k` is slot `k mod K` at generation `k div K`, stored at
//! `append/list/SSSS/RUN-GGGGGG`. A slot moves on to its next generation after
//! [`APPENDS_PER_KEY_MAX`] appends (Elle's `max-writes-per-key`): that bounds every list, so
//! every read and the checker's work. `RUN`, the run's start in ms since the Unix epoch, keeps
//! runs apart: a second run on the same cluster starts from empty lists and never reads the
//! elements of a previous one. The splits are at slot boundaries `append/list/SSSS`, so every
//! generation of a slot stays in its slot's range.
//!
//! ## Outcomes
//!
//! `Ok`: committed, and its reads are known. `Fail`: aborted or refused, so certainly not
//! committed. `Unknown`: the connection was lost, a deadline passed or the commit was
//! ambiguous. An unknown transaction may commit at any time after it began, so the checker gets
//! no completion time for it (the one recorded is when the client gave up); it joins the
//! dependency graph only if some read shows one of its appends.
//!
//! Left out: the lists of finished runs stay in the cluster; scans (predicate reads, G2 proper)
//! are not exercised.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use meridian_check::elle::{self, CheckOptions, MicroOp, Outcome};
use meridian_client::{Client, ClientError, Txn};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::{HistoryWriter, Progress, outcome_of, read_json_lines, split_evenly};

/// Prefix of every list key.
const LIST: &str = "append/list/";
/// Appends a key takes before its slot moves on to a fresh key: bounds a list's length, and so
/// the size of each read and of the history.
const APPENDS_PER_KEY_MAX: u64 = 64;
/// Most micro-ops in one transaction.
const OPS_PER_TXN_MAX: usize = 4;
/// Most list slots (`--keys`): a slot is four digits in the key.
const KEYS_MAX: usize = 10_000;
/// Most concurrent workers (`--workers`).
const WORKERS_MAX: usize = 1_000;
/// The element a stored list shows for what does not parse. No worker appends it (elements
/// count up from 1), so a corrupt list is reported as a `garbage-read`.
const GARBAGE: u64 = u64::MAX;

/// The list-append workload's steps.
#[derive(clap::Subcommand)]
pub enum AppendCommand {
    /// Split the lists over ranges, run transactions, record the history, then check it.
    Run {
        /// How long.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Concurrent workers, each running one transaction at a time.
        #[arg(long, default_value_t = 8)]
        workers: usize,
        /// List slots (each moves on to a fresh key every 64 appends).
        #[arg(long, default_value_t = 16)]
        keys: usize,
        /// Ranges to spread the lists over.
        #[arg(long, default_value_t = 4)]
        ranges: usize,
        /// Where to write the history (JSON lines).
        #[arg(long, default_value = "append-history.jsonl")]
        history: PathBuf,
        /// Where to write the history for elle-cli or adya (Jepsen's JSON).
        #[arg(long, default_value = "append-history.elle.json")]
        elle_json: PathBuf,
    },
    /// Check a recorded history again (no cluster needed).
    Check {
        /// The history written by `run`.
        #[arg(long, default_value = "append-history.jsonl")]
        history: PathBuf,
        /// Also write it for elle-cli or adya (Jepsen's JSON).
        #[arg(long)]
        elle_json: Option<PathBuf>,
    },
}

/// One line of the history: one transaction as its worker saw it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
struct Record {
    /// The worker that ran it (Elle's process: one transaction at a time).
    worker: u64,
    /// How it ended.
    outcome: Outcome,
    /// When the worker began it (ns since the run began; one clock for every worker).
    invoke_ns: u64,
    /// When the worker learned the outcome, or gave up on learning it.
    complete_ns: u64,
    /// Commit timestamp of an `Ok` transaction, to find it in node logs; 0 otherwise.
    ts: u64,
    /// Its micro-ops in order; a read's list is known only when `Ok`.
    ops: Vec<MicroOp>,
    /// Why it failed or its outcome is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl Record {
    /// The transaction as the checker takes it: an `Unknown` one has no completion time.
    fn to_elle(&self) -> elle::Txn {
        elle::Txn {
            process: self.worker,
            invoke_ns: self.invoke_ns,
            complete_ns: (self.outcome != Outcome::Unknown).then_some(self.complete_ns),
            outcome: self.outcome,
            ops: self.ops.clone(),
        }
    }
}

/// Where the lists of one run live.
#[derive(Clone, Copy, Debug)]
struct Lists {
    /// List slots (`--keys`).
    slots: u64,
    /// The run's start, ms since the Unix epoch.
    run: u64,
}

impl Lists {
    /// The first key of slot `slot`: where a split puts a range boundary.
    fn slot_start(slot: usize) -> Vec<u8> {
        format!("{LIST}{slot:04}").into_bytes()
    }

    /// The stored key of Elle's key `key`.
    fn key(&self, key: u64) -> Vec<u8> {
        format!("{LIST}{:04}/{}-{:06}", key % self.slots, self.run, key / self.slots).into_bytes()
    }
}

/// A list as stored.
fn encode(list: &[u64]) -> Vec<u8> {
    list.iter().map(u64::to_string).collect::<Vec<_>>().join(",").into_bytes()
}

/// A stored list; `None` (never written) is the empty list. An element that does not parse
/// reads as [`GARBAGE`].
fn decode(value: Option<&[u8]>) -> Vec<u64> {
    let Some(value) = value else { return Vec::new() };
    let text = String::from_utf8_lossy(value);
    text.split(',').filter(|e| !e.is_empty()).map(|e| e.parse().unwrap_or(GARBAGE)).collect()
}

/// Hands out transactions: which key each slot is at, and fresh elements.
struct Programs {
    /// Each slot's current generation.
    generation: Vec<u64>,
    /// Appends handed out for each slot's current key.
    appends: Vec<u64>,
    /// The last element handed out.
    element: u64,
}

impl Programs {
    fn new(slots: usize) -> Programs {
        Programs { generation: vec![0; slots], appends: vec![0; slots], element: 0 }
    }

    /// A random transaction of 1..=[`OPS_PER_TXN_MAX`] micro-ops, each a read or an append of a
    /// fresh element, on a random slot's current key.
    fn next(&mut self, rng: &mut impl Rng) -> Vec<MicroOp> {
        let slots = self.generation.len();
        (0..rng.random_range(1..=OPS_PER_TXN_MAX))
            .map(|_| {
                let slot = rng.random_range(0..slots);
                let key = self.generation[slot] * slots as u64 + slot as u64;
                if rng.random_bool(0.5) {
                    return MicroOp::Read { key, value: None };
                }
                self.element += 1;
                self.appends[slot] += 1;
                if self.appends[slot] == APPENDS_PER_KEY_MAX {
                    self.generation[slot] += 1;
                    self.appends[slot] = 0;
                }
                MicroOp::Append { key, value: self.element }
            })
            .collect()
    }
}

/// Runs `meridian workload append …`.
pub async fn run(addr: String, auth: crate::cert::ClientAuthArgs, cmd: AppendCommand) -> anyhow::Result<()> {
    match cmd {
        AppendCommand::Run { seconds, workers, keys, ranges, history, elle_json } => {
            anyhow::ensure!((1..=KEYS_MAX).contains(&keys), "--keys must be between 1 and {KEYS_MAX}");
            anyhow::ensure!((1..=keys).contains(&ranges), "--ranges must be between 1 and --keys ({keys})");
            anyhow::ensure!((1..=WORKERS_MAX).contains(&workers), "--workers must be between 1 and {WORKERS_MAX}");
            let client = Arc::new(Client::connect_with([addr], auth.options()?).await?);
            split_evenly(&client, keys, ranges, Lists::slot_start).await.context("splitting the lists over ranges")?;
            let run = SystemTime::now().duration_since(UNIX_EPOCH).context("the clock is before 1970")?.as_millis();
            let lists = Lists { slots: keys as u64, run: run as u64 };
            println!("append: {keys} lists over {ranges} ranges, {workers} workers for {seconds} s");
            run_append(&client, lists, Duration::from_secs(seconds), workers, &history).await?;
            check(&history, Some(&elle_json))
        }
        AppendCommand::Check { history, elle_json } => check(&history, elle_json.as_deref()),
    }
}

/// Runs `ops` in `t`; returns them as executed, each read with the list it saw.
async fn execute(t: &mut Txn<'_>, lists: Lists, ops: &[MicroOp]) -> Result<Vec<MicroOp>, ClientError> {
    let mut done = Vec::with_capacity(ops.len());
    for op in ops {
        let (MicroOp::Read { key, .. } | MicroOp::Append { key, .. }) = op;
        let stored = lists.key(*key);
        let mut list = decode(t.get(&stored).await?.as_deref());
        match op {
            MicroOp::Read { .. } => done.push(MicroOp::Read { key: *key, value: Some(list) }),
            MicroOp::Append { value, .. } => {
                list.push(*value);
                t.put(&stored, &encode(&list));
                done.push(op.clone());
            }
        }
    }
    Ok(done)
}

/// Runs `workers` workers for `duration`, printing progress every second and recording every
/// transaction in `history`.
async fn run_append(
    client: &Arc<Client>,
    lists: Lists,
    duration: Duration,
    workers: usize,
    history: &Path,
) -> anyhow::Result<()> {
    let out = HistoryWriter::create(history)?;
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(Progress::new()?);
    let programs = Arc::new(Mutex::new(Programs::new(lists.slots as usize)));
    let mut tasks = Vec::new();
    for w in 0..workers as u64 {
        let (client, stop, out, progress, programs) =
            (client.clone(), stop.clone(), out.clone(), progress.clone(), programs.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(lists.run ^ w.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            while !stop.load(Ordering::Relaxed) {
                let ops = programs.lock().unwrap_or_else(|p| p.into_inner()).next(&mut rng);
                let invoke_ns = epoch.elapsed().as_nanos() as u64;
                let r = client
                    .read_write(|t| {
                        let ops = ops.clone();
                        Box::pin(async move { execute(t, lists, &ops).await })
                    })
                    .await;
                let complete_ns = epoch.elapsed().as_nanos() as u64;
                let reason = r.as_ref().err().map(super::reason_of);
                let (outcome, ops, ts, error) = match r {
                    Ok((done, ts)) => (Outcome::Ok, done, ts.nanos(), None),
                    Err(e) => (outcome_of(&e), ops, 0, Some(e.to_string())),
                };
                let record = Record { worker: w, outcome, invoke_ns, complete_ns, ts, ops, error };
                progress.record(record.outcome, complete_ns - invoke_ns, reason.as_deref());
                out.record(&record);
            }
        }));
    }
    progress.print_every_second(duration, "txns").await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    progress.print_reasons("txns");
    out.finish()
}

/// What checking a history found.
struct Checked {
    /// The checker's report.
    report: elle::Report,
    /// `append: A ok, B unknown, C failed; D anomalies`.
    verdict: String,
}

/// Checks the history in `history` for strict serializability, and writes it to `elle_json`
/// for elle-cli or adya. `Err`: a file could not be read or written.
fn check_file(history: &Path, elle_json: Option<&Path>) -> anyhow::Result<Checked> {
    let records: Vec<Record> = read_json_lines(history)?;
    let txns: Vec<elle::Txn> = records.iter().map(Record::to_elle).collect();
    if let Some(path) = elle_json {
        let json = elle::to_elle_json(&txns).to_string();
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    let report = elle::check(&txns, CheckOptions::strict_serializable());
    let count = |o: Outcome| records.iter().filter(|r| r.outcome == o).count();
    let verdict = format!(
        "append: {} ok, {} unknown, {} failed; {} anomalies",
        count(Outcome::Ok),
        count(Outcome::Unknown),
        count(Outcome::Fail),
        report.counts.values().sum::<usize>()
    );
    Ok(Checked { report, verdict })
}

/// Checks a history and prints the report (every anomaly with its explanation or cycle) and
/// the verdict; `Err` on any anomaly.
fn check(history: &Path, elle_json: Option<&Path>) -> anyhow::Result<()> {
    let Checked { report, verdict } = check_file(history, elle_json)?;
    print!("append: {report}");
    println!("{verdict}");
    if let Some(path) = elle_json {
        println!("append: history for elle-cli in {}", path.display());
    }
    anyhow::ensure!(report.is_valid(), "the history in {} is not strictly serializable", history.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// `records` written to `dir/name` the way `run` writes them.
    fn write(dir: &Path, name: &str, records: &[Record]) -> PathBuf {
        let path = dir.join(name);
        let out = HistoryWriter::create(&path).expect("create the history");
        for r in records {
            out.record(r);
        }
        out.finish().expect("write the history");
        path
    }

    /// `n` transactions run one after another against lists in memory, by three workers: every
    /// 11th fails (nothing applied), every 11th from the 7th is unknown (applied or not: either
    /// is consistent), the rest commit.
    fn serial_history(n: usize) -> Vec<Record> {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut programs = Programs::new(3);
        let mut lists: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        let mut records = Vec::new();
        for i in 0..n {
            let ops = programs.next(&mut rng);
            let outcome = match i % 11 {
                3 => Outcome::Fail,
                7 => Outcome::Unknown,
                _ => Outcome::Ok,
            };
            let mut after = lists.clone();
            let done = ops
                .iter()
                .map(|op| match op {
                    MicroOp::Read { key, .. } => {
                        MicroOp::Read { key: *key, value: Some(after.get(key).cloned().unwrap_or_default()) }
                    }
                    MicroOp::Append { key, value } => {
                        after.entry(*key).or_default().push(*value);
                        op.clone()
                    }
                })
                .collect();
            if outcome == Outcome::Ok || (outcome == Outcome::Unknown && i % 2 == 0) {
                lists = after;
            }
            let ops = if outcome == Outcome::Ok { done } else { ops };
            let (invoke_ns, complete_ns) = (i as u64 * 10, i as u64 * 10 + 5);
            records.push(Record { worker: i as u64 % 3, outcome, invoke_ns, complete_ns, ts: 0, ops, error: None });
        }
        records
    }

    #[test]
    fn a_recorded_history_round_trips_through_check() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let records = serial_history(300);
        let path = write(dir.path(), "h.jsonl", &records);
        assert_eq!(read_json_lines::<Record>(&path).expect("read back"), records);

        let json = dir.path().join("h.elle.json");
        let Checked { report, verdict } = check_file(&path, Some(&json)).expect("check");
        assert!(report.is_valid(), "{report}");
        let e = report.edges;
        assert!(e.ww > 0 && e.wr > 0 && e.rw > 0 && e.realtime > 0, "the history says little: {report}");
        assert_eq!(verdict, "append: 246 ok, 27 unknown, 27 failed; 0 anomalies");
        check(&path, None).expect("a valid history passes");

        // The export: an invocation and a completion per transaction (adya reads it in
        // cli/tests/append.rs; check/src/elle/adya_tests.rs compares verdicts).
        let exported: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).expect("export")).expect("JSON");
        assert_eq!(exported.as_array().map(Vec::len), Some(2 * records.len()));
    }

    #[test]
    fn check_reports_a_cycle() {
        // Each reads the other's append: circular information flow (G1c).
        let t = |worker: u64, mine: u64, theirs: u64| Record {
            worker,
            outcome: Outcome::Ok,
            invoke_ns: 10,
            complete_ns: 20,
            ts: 0,
            ops: vec![
                MicroOp::Append { key: mine, value: mine + 100 },
                MicroOp::Read { key: theirs, value: Some(vec![theirs + 100]) },
            ],
            error: None,
        };
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = write(dir.path(), "g1c.jsonl", &[t(0, 1, 2), t(1, 2, 1)]);
        let Checked { report, verdict } = check_file(&path, None).expect("check");
        assert!(report.kinds().contains(elle::kind::G1C), "{report}");
        assert!(verdict.ends_with("2 ok, 0 unknown, 0 failed; 1 anomalies"), "{verdict}");
        let shown = report.to_string();
        assert!(shown.contains("T0") && shown.contains("T1") && shown.contains("-wr("), "the cycle is shown: {shown}");
        let e = check(&path, None).expect_err("an anomaly fails the check");
        assert!(e.to_string().contains("not strictly serializable"), "{e}");
    }

    #[test]
    fn bad_history_files_get_clear_errors() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let missing = dir.path().join("missing.jsonl");
        let e = format!("{:#}", check(&missing, None).expect_err("no file"));
        assert!(e.contains("opening") && e.contains("missing.jsonl"), "{e}");

        let path = write(dir.path(), "bad.jsonl", &serial_history(2));
        let mut text = std::fs::read_to_string(&path).expect("read");
        text.push_str("\n{\"worker\": 0, \"outcome\": \"Maybe\"}\n");
        std::fs::write(&path, text).expect("write");
        let e = format!("{:#}", check(&path, None).expect_err("malformed"));
        assert!(e.contains("bad.jsonl line 4"), "the line is named: {e}");
    }

    #[test]
    fn programs_hand_out_unique_elements_and_rotate_keys() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut programs = Programs::new(4);
        let mut elements = std::collections::BTreeSet::new();
        let mut appends: BTreeMap<u64, u64> = BTreeMap::new();
        for _ in 0..5_000 {
            let ops = programs.next(&mut rng);
            assert!((1..=OPS_PER_TXN_MAX).contains(&ops.len()));
            for op in ops {
                if let MicroOp::Append { key, value } = op {
                    assert!(elements.insert(value), "element {value} handed out twice");
                    *appends.entry(key).or_default() += 1;
                }
            }
        }
        assert!(appends.values().all(|n| *n <= APPENDS_PER_KEY_MAX), "{appends:?}");
        assert!(appends.len() > 4 * 10, "slots moved on to fresh keys: {appends:?}");
        assert!(!elements.contains(&GARBAGE));
    }

    #[test]
    fn lists_are_stored_as_decimals_in_their_slot() {
        for list in [vec![], vec![7], vec![1, 20, 300]] {
            assert_eq!(decode(Some(&encode(&list))), list);
        }
        assert_eq!(decode(None), Vec::<u64>::new());
        assert_eq!(decode(Some(b"1,x,3")), vec![1, GARBAGE, 3]);

        let lists = Lists { slots: 16, run: 5 };
        assert_eq!(lists.key(16 * 2 + 3), b"append/list/0003/5-000002");
        // Every generation of slot 3 sorts between the boundaries of slots 3 and 4.
        for generation in [0, 1, 999_999] {
            let key = lists.key(generation * 16 + 3);
            assert!(Lists::slot_start(3) <= key && key < Lists::slot_start(4));
        }
    }
}
