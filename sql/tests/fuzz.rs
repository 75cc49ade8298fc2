//! Property test: random and mutated statements (`fuzzgen`) fed to one [`Session`] over
//! [`MemKv`] never panic, never hit an internal error, and never leave a partial effect.
//!
//! After every call the whole store is compared with what it was before (`MemKv::dump`, committed
//! data only), against what the session says happened:
//!
//! | before     | outcome                                  | the store must                              |
//! |------------|------------------------------------------|---------------------------------------------|
//! | idle       | error                                    | be unchanged; the session stays idle        |
//! | idle       | rows (`SELECT`, `SHOW`, `EXPLAIN`)       | be unchanged                                |
//! | idle       | `INSERT 0 n` (plain `INSERT`)            | gain exactly n rows, lose and change none   |
//! | idle       | `INSERT 0 n` (`UPSERT`, `ON CONFLICT`)   | gain or change at most n rows, lose none    |
//! | idle       | `UPDATE n`                               | touch at most 2n row keys, keep the count   |
//! | idle       | `DELETE n`                               | lose exactly n rows, gain and change none   |
//! | idle       | `BEGIN`, `SET`, a lone `COMMIT`          | be unchanged                                |
//! | in a txn   | anything but a successful `COMMIT`       | be unchanged (nothing leaks early)          |
//! | in a txn   | `ROLLBACK`, or the transaction failed    | equal the snapshot taken at `BEGIN`         |
//! | read-only  | `COMMIT`                                 | equal the snapshot taken at `BEGIN`         |
//! | failed txn | anything                                 | be unchanged; only `ROLLBACK`/`COMMIT` succeed (reporting `ROLLBACK`), the rest say 25P02 |
//!
//! And always: no panic, no `XX000`/`XX001` (an internal error is a bug), at most one error per
//! call and only as its last result, syntax-error positions inside the text.
//!
//! Some statements ([`STRESS_PERCENT`]) are `fuzzgen`'s stress shapes: operator chains, nesting and
//! lists around and far past the bounds of `meridian_sql::bounds`. Each seed runs on a thread with
//! the stack a node runs statements on ([`SERVER_STACK_BYTES`]); a stack overflow aborts the test
//! process, and the thread's name says which seed to replay.
//!
//! The budget is a count: [`SEEDS`] seeds of [`STEPS_PER_SEED`] statements, every one of which
//! must run (about 15 s of CPU in the dev build). Deterministic: one seed, one run.
//! Replay a failure with `MERIDIAN_FUZZ_SEED=<seed>` (add `MERIDIAN_FUZZ_TRACE=1` to print every
//! statement and its outcome); scale up with `MERIDIAN_FUZZ_STEPS=<n>` (statements per seed).

mod fuzzgen;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures::executor::block_on;
use meridian_sql::bounds::{EXPR_DEPTH_MAX, LIST_ITEMS_MAX, SERVER_STACK_BYTES};
use meridian_sql::{MemKv, QueryResult, ResultKind, Session, SqlState, TxnStatus};

/// Seeds run by default.
const SEEDS: u64 = 24;
/// Statements per seed by default.
const STEPS_PER_SEED: usize = 2_500;
/// Share of statements that are stress shapes (chains, nesting, wide lists).
const STRESS_PERCENT: usize = 1;

type Dump = Vec<(Vec<u8>, Vec<u8>)>;

/// Row keys (not the catalog) added, removed and changed between two dumps.
#[derive(Debug, Default, PartialEq, Eq)]
struct Diff {
    added: usize,
    removed: usize,
    changed: usize,
    catalog_changed: bool,
}

fn diff(before: &Dump, after: &Dump) -> Diff {
    let is_row = |k: &[u8]| k.first() == Some(&meridian_sql::keys::TABLE_ROWS_PREFIX);
    let mut d = Diff::default();
    let (mut i, mut j) = (0, 0);
    loop {
        let (a, b) = (before.get(i), after.get(j));
        let (key, kind) = match (a, b) {
            (None, None) => break,
            (Some((ka, _)), None) => {
                i += 1;
                (ka, 'r')
            }
            (None, Some((kb, _))) => {
                j += 1;
                (kb, 'a')
            }
            (Some((ka, va)), Some((kb, vb))) => match ka.cmp(kb) {
                std::cmp::Ordering::Less => {
                    i += 1;
                    (ka, 'r')
                }
                std::cmp::Ordering::Greater => {
                    j += 1;
                    (kb, 'a')
                }
                std::cmp::Ordering::Equal => {
                    i += 1;
                    j += 1;
                    if va == vb {
                        continue;
                    }
                    (ka, 'c')
                }
            },
        };
        if !is_row(key) {
            d.catalog_changed = true;
            continue;
        }
        match kind {
            'a' => d.added += 1,
            'r' => d.removed += 1,
            _ => d.changed += 1,
        }
    }
    d
}

/// The affected-row count of a DML tag (`INSERT 0 3` → 3).
fn tag_count(tag: &str) -> Option<usize> {
    tag.rsplit(' ').next()?.parse().ok()
}

/// One fuzzing session: the store, the session, and what the checker knows about the transaction.
struct Run {
    seed: u64,
    store: Arc<MemKv>,
    session: Session,
    /// The committed store when the open (or failed) transaction began.
    txn_snapshot: Option<Dump>,
    /// Whether the open transaction is read-only (then even its COMMIT changes nothing).
    txn_read_only: bool,
    /// Print every statement and its outcome (`MERIDIAN_FUZZ_TRACE=1`).
    trace: bool,
    /// Statements run, by outcome, for the summary.
    ok: usize,
    failed: usize,
}

impl Run {
    fn new(seed: u64) -> Run {
        let store = Arc::new(MemKv::new());
        let session = Session::new(store.clone());
        let trace = std::env::var_os("MERIDIAN_FUZZ_TRACE").is_some();
        let mut run = Run { seed, store, session, txn_snapshot: None, txn_read_only: false, trace, ok: 0, failed: 0 };
        for sql in fuzzgen::SETUP {
            let results = block_on(run.session.execute(sql));
            assert!(results.iter().all(Result::is_ok), "setup {sql}: {results:?}");
        }
        run
    }

    /// Runs `sql` and checks every property of the module essay. Returns whether it was refused
    /// with `54000` (a limit).
    fn step(&mut self, step: usize, sql: &str) -> bool {
        let before = self.store.dump();
        let status_before = self.session.in_transaction();
        let parse = meridian_sql::parse::parse(sql);
        let parsed = parse.is_ok();
        let statements = parse.map(|s| s.len()).unwrap_or(1);
        let session = &mut self.session;
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| block_on(session.execute(sql))));
        let results = match outcome {
            Ok(results) => results,
            Err(_) => {
                panic!("seed {} step {step}: {sql:?} panicked (replay: MERIDIAN_FUZZ_SEED={})", self.seed, self.seed)
            }
        };
        let refused = results.iter().any(|r| matches!(r, Err(e) if e.code == SqlState::ProgramLimitExceeded));
        let after = self.store.dump();
        let status_after = self.session.in_transaction();
        let ctx = format!("seed {} step {step}: {sql:?} → {results:?}", self.seed);

        for r in &results {
            if let Err(e) = r {
                assert!(
                    !matches!(e.code, SqlState::InternalError | SqlState::DataCorrupted),
                    "{ctx}: an internal error is a bug"
                );
                assert!(!e.message.is_empty(), "{ctx}: errors say what went wrong");
                if e.code == SqlState::SyntaxError
                    && let Some(p) = e.position
                {
                    assert!(
                        p >= 1 && p <= sql.chars().count() + 1,
                        "{ctx}: syntax error position {p} is outside the text"
                    );
                }
            }
        }
        let errors = results.iter().filter(|r| r.is_err()).count();
        assert!(
            errors <= 1 && results.last().is_none_or(|r| r.is_err() || errors == 0),
            "{ctx}: execution stops at the first error"
        );
        if self.trace {
            eprintln!("{step} {status_before:?} → {status_after:?}: {sql:?} → {results:?}");
        }
        if errors == 1 {
            self.failed += 1;
        } else {
            self.ok += 1;
        }
        let tags: Vec<&str> = results
            .iter()
            .filter_map(|r| match r {
                Ok(QueryResult { kind: ResultKind::Command { tag }, .. }) => Some(tag.as_str()),
                _ => None,
            })
            .collect();

        match status_before {
            TxnStatus::Idle if statements == 1 || errors == 1 && results.len() == 1 => {
                self.check_idle_single(&ctx, sql, &results, &before, &after, status_after)
            }
            TxnStatus::Idle => {
                // Several statements, each its own implicit transaction: only the failing one is
                // known to have had no effect, and that is checked by the single-statement case.
            }
            TxnStatus::InTransaction => {
                let committed = tags.contains(&"COMMIT");
                if !committed || self.txn_read_only {
                    assert_eq!(diff(&before, &after), Diff::default(), "{ctx}: nothing is visible before COMMIT");
                }
                if status_after != TxnStatus::InTransaction && !committed {
                    let snapshot = self.txn_snapshot.as_ref().expect("a transaction has a snapshot");
                    assert!(after == *snapshot, "{ctx}: a rolled-back or failed transaction leaves no trace");
                }
            }
            TxnStatus::Failed => {
                if statements == 1 {
                    assert_eq!(after, before, "{ctx}: a failed transaction changes nothing");
                    for r in &results {
                        match r {
                            Ok(QueryResult { kind: ResultKind::Command { tag }, .. }) => {
                                assert_eq!(tag, "ROLLBACK", "{ctx}: only ROLLBACK (or COMMIT reporting it) succeeds");
                                assert_eq!(status_after, TxnStatus::Idle, "{ctx}");
                            }
                            Ok(other) => panic!("{ctx}: {other:?} succeeded in a failed transaction"),
                            Err(e) => {
                                // Text that does not parse reports why; a statement that does
                                // reports 25P02, unless it is not supported at all.
                                assert!(
                                    !parsed
                                        || matches!(
                                            e.code,
                                            SqlState::InFailedSqlTransaction
                                                | SqlState::FeatureNotSupported
                                                | SqlState::InvalidParameterValue
                                        ),
                                    "{ctx}: a statement in a failed transaction reports 25P02"
                                );
                                assert_eq!(status_after, TxnStatus::Failed, "{ctx}");
                            }
                        }
                    }
                }
                if status_after == TxnStatus::Idle {
                    let snapshot = self.txn_snapshot.as_ref().expect("a failed transaction has a snapshot");
                    if statements == 1 {
                        assert!(after == *snapshot, "{ctx}: ending a failed transaction restores its snapshot");
                    }
                }
            }
        }
        if status_after == TxnStatus::Failed {
            assert!(errors == 1 || status_before == TxnStatus::Failed, "{ctx}: a transaction fails only on an error");
        }

        // Track the transaction for the next step.
        let txn_ended = tags.iter().any(|t| matches!(*t, "COMMIT" | "ROLLBACK"));
        if status_after == TxnStatus::Idle {
            self.txn_snapshot = None;
        } else if status_before == TxnStatus::Idle || txn_ended {
            // A new transaction: whatever ran before its BEGIN in this call committed already, and
            // its own writes are buffered, so the committed store now is its starting point.
            self.txn_snapshot = Some(after.clone());
            self.txn_read_only = false;
        }
        let upper = sql.trim_start().to_uppercase();
        if status_after == TxnStatus::InTransaction
            && statements == 1
            && errors == 0
            // A nested BEGIN changes nothing (PostgreSQL only warns); SET TRANSACTION does.
            && ((status_before == TxnStatus::Idle && (upper.starts_with("BEGIN") || upper.starts_with("START")))
                || upper.starts_with("SET"))
            && upper.contains("READ ONLY")
        {
            self.txn_read_only = true;
        }
        refused
    }

    fn check_idle_single(
        &mut self,
        ctx: &str,
        sql: &str,
        results: &[Result<QueryResult, meridian_sql::SqlError>],
        before: &Dump,
        after: &Dump,
        status_after: TxnStatus,
    ) {
        let Some(result) = results.first() else {
            assert_eq!(after, before, "{ctx}: an empty statement changes nothing");
            return;
        };
        let d = diff(before, after);
        match result {
            Err(_) => {
                assert!(after == before, "{ctx}: a failed statement has no effect: {d:?}");
                assert_eq!(status_after, TxnStatus::Idle, "{ctx}: an error outside BEGIN opens nothing");
            }
            Ok(QueryResult { kind: ResultKind::Rows { columns, rows }, .. }) => {
                assert!(after == before, "{ctx}: a read changes nothing: {d:?}");
                assert!(rows.iter().all(|r| r.len() == columns.len()), "{ctx}: every row has every column");
            }
            Ok(QueryResult { kind: ResultKind::Empty, .. }) => assert!(after == before, "{ctx}"),
            Ok(QueryResult { kind: ResultKind::Command { tag }, .. }) => {
                let upper = sql.trim_start().to_uppercase();
                let n = tag_count(tag);
                if tag.starts_with("INSERT") {
                    let n = n.expect("INSERT tags carry a count");
                    assert!(!d.catalog_changed, "{ctx}: INSERT leaves the catalog alone");
                    if upper.starts_with("INSERT") && !upper.contains("CONFLICT") {
                        assert_eq!((d.added, d.removed, d.changed), (n, 0, 0), "{ctx}: INSERT adds exactly its rows");
                    } else {
                        assert!(d.added + d.changed <= n && d.removed == 0, "{ctx}: an upsert writes its rows: {d:?}");
                    }
                } else if tag.starts_with("DELETE") {
                    let n = n.expect("DELETE tags carry a count");
                    assert_eq!((d.added, d.removed, d.changed), (0, n, 0), "{ctx}: DELETE removes exactly its rows");
                    assert!(!d.catalog_changed, "{ctx}: DELETE leaves the catalog alone");
                } else if tag.starts_with("UPDATE") {
                    let n = n.expect("UPDATE tags carry a count");
                    assert!(d.added + d.removed + d.changed <= 2 * n, "{ctx}: UPDATE touches only its rows: {d:?}");
                    assert!(d.added == d.removed, "{ctx}: UPDATE keeps the row count: {d:?}");
                    assert!(!d.catalog_changed, "{ctx}: UPDATE leaves the catalog alone");
                } else if matches!(tag.as_str(), "CREATE TABLE" | "DROP TABLE") {
                    assert_eq!(d.added + d.changed, 0, "{ctx}: DDL adds no rows: {d:?}");
                } else {
                    // BEGIN, COMMIT/ROLLBACK outside a transaction, SET: nothing committed.
                    assert!(after == before, "{ctx}: {tag} changes nothing: {d:?}");
                }
            }
        }
    }

    /// Puts the fixed tables back if a mutated statement dropped one.
    fn heal(&mut self) {
        if self.session.in_transaction() != TxnStatus::Idle {
            return;
        }
        for sql in fuzzgen::SETUP {
            let results = block_on(self.session.execute(sql));
            assert!(results.iter().all(Result::is_ok), "seed {}: re-creating a table: {results:?}", self.seed);
        }
    }

    /// Reads every table in full: every stored row must decode.
    fn read_all(&mut self, step: usize) {
        if self.session.in_transaction() != TxnStatus::Idle {
            return;
        }
        for table in fuzzgen::TABLES {
            for r in block_on(self.session.execute(&format!("SELECT * FROM {table}"))) {
                if let Err(e) = r {
                    assert_eq!(
                        e.code,
                        SqlState::UndefinedTable,
                        "seed {} step {step}: reading {table}: {e:?}",
                        self.seed
                    );
                }
            }
        }
    }

    /// Statements through the extended-protocol entry points: they must not panic either.
    fn extended(&mut self, sql: &str) {
        let session = &mut self.session;
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let _ = block_on(session.describe(sql));
        }));
        assert!(outcome.is_ok(), "seed {}: describe({sql:?}) panicked", self.seed);
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")))
}

/// What one seed's run counted.
#[derive(Debug, Default)]
struct Counts {
    ok: usize,
    failed: usize,
    stress: usize,
    /// Statements refused with 54000 (a bound of `meridian_sql::bounds`, or another limit).
    refused: usize,
}

/// Runs one seed: `steps` statements and the checks of the module essay.
fn run_seed(seed: u64, steps: usize) -> Counts {
    let mut run = Run::new(seed);
    let mut generator = fuzzgen::Gen::new(seed, true);
    let mut counts = Counts::default();
    for step in 0..steps {
        // A failed transaction only says 25P02 until it ends: end it sooner than chance would.
        let sql = if run.session.in_transaction() == TxnStatus::Failed && generator.rng.percent(30) {
            generator.rng.pick(&["ROLLBACK", "COMMIT"]).to_string()
        } else if generator.rng.percent(STRESS_PERCENT) {
            counts.stress += 1;
            generator.stress(EXPR_DEPTH_MAX, LIST_ITEMS_MAX)
        } else {
            generator.next_sql()
        };
        if step % 7 == 3 {
            run.extended(&sql);
        }
        if run.step(step, &sql) {
            counts.refused += 1;
        }
        if step % 50 == 49 {
            run.read_all(step);
            run.heal();
        }
    }
    // End any transaction and check the store once more.
    run.step(steps, "ROLLBACK");
    run.read_all(steps);
    counts.ok = run.ok;
    counts.failed = run.failed;
    counts
}

#[test]
fn random_and_mutated_statements_never_panic_or_leave_partial_effects() {
    let seeds: Vec<u64> = match env_u64("MERIDIAN_FUZZ_SEED") {
        Some(seed) => vec![seed],
        None => (0..SEEDS).collect(),
    };
    let steps = env_u64("MERIDIAN_FUZZ_STEPS").map_or(STEPS_PER_SEED, |n| n as usize);
    let started = Instant::now();
    let mut total = Counts::default();
    let mut seeds_run = 0;
    for &seed in &seeds {
        // On a thread with a node's stack: a statement that overflows it aborts this process, and
        // the message names the thread, so the seed to replay.
        let counts = std::thread::Builder::new()
            .name(format!("fuzz seed {seed} (replay: MERIDIAN_FUZZ_SEED={seed} MERIDIAN_FUZZ_TRACE=1)"))
            .stack_size(SERVER_STACK_BYTES)
            .spawn(move || run_seed(seed, steps))
            .expect("spawn a fuzz thread")
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        total.ok += counts.ok;
        total.failed += counts.failed;
        total.stress += counts.stress;
        total.refused += counts.refused;
        seeds_run += 1;
    }
    eprintln!(
        "fuzz: {seeds_run} seeds × {steps} statements: {} succeeded, {} failed cleanly ({} stress shapes, {} refused \
         with 54000), in {:?}",
        total.ok,
        total.failed,
        total.stress,
        total.refused,
        started.elapsed()
    );
    assert_eq!(seeds_run, seeds.len(), "every seed of the budget ran");
    assert!(total.ok > 0 && total.failed > 0, "the generator produces both good and bad statements");
    if steps >= STEPS_PER_SEED {
        assert!(total.refused > 0, "stress shapes reach the bounds: {total:?}");
    }
}

#[test]
fn the_generator_is_deterministic_and_varied() {
    let a: Vec<String> = {
        let mut g = fuzzgen::Gen::new(42, true);
        (0..200).map(|_| g.next_sql()).collect()
    };
    let b: Vec<String> = {
        let mut g = fuzzgen::Gen::new(42, true);
        (0..200).map(|_| g.next_sql()).collect()
    };
    assert_eq!(a, b, "one seed, one sequence");
    let distinct: std::collections::BTreeSet<&String> = a.iter().collect();
    assert!(distinct.len() > 150, "statements vary: {} distinct of 200", distinct.len());
    let mut g = fuzzgen::Gen::new(7, false);
    assert!((0..2_000).all(|_| !g.next_sql().contains('\0')), "no NUL when it is not allowed");
}
