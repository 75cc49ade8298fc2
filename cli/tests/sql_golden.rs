//! SQL end to end on a real cluster: golden scripts through `meridian sql`, fuzzed statements over
//! the PostgreSQL protocol, and stock `psql` and `pgbench` against a node's PostgreSQL port.
//!
//! ## Golden scripts (`sql/testdata/golden/*.sql` → `*.out`)
//!
//! A script is SQL in paragraphs separated by blank lines. Every script runs through the real
//! `meridian sql` binary twice — `--local` (an in-process `MemKv`) and `--url` against a node of a
//! 3-node `ProcessCluster` — and both outputs must equal the `.out` file. `UPDATE_GOLDEN=1`
//! rewrites the `.out` files from the local run (the cluster run must still match); review the
//! diff by eye: it must be what a PostgreSQL user expects.
//!
//! ```text
//!   .out = for each paragraph:  its text, verbatim
//!                               ----
//!                               what `meridian sql` printed for it (stdout, then stderr)
//!                               (a blank line, unless the output ends with one)
//! ```
//!
//! Paragraphs of comments only are echoed and not run. The harness runs `meridian sql
//! --on-error-stop`, which stops at the first error (like `psql -v ON_ERROR_STOP=1`) with exit
//! status 3: it feeds a whole script to one process, with `\timing off` after each paragraph as a
//! marker ("Timing is off." splits the output), and after an error starts a new process at the
//! next paragraph. On the cluster the data is still there; `--local` starts empty, so the harness
//! first replays the paragraphs that succeeded (checking they print the same again). That is only
//! faithful if a failing paragraph committed nothing before its error, so the harness enforces two
//! rules (and says so when one is broken):
//! - a paragraph that fails fails at its first statement, or inside a transaction it opened;
//! - a paragraph that fails does not start inside a transaction left open by an earlier one.
//!
//! Scripts share one cluster, in file-name order: each uses its own table names and drops them at
//! the end. Nothing nondeterministic may appear in a script's output (timestamps, `AS OF SYSTEM
//! TIME` newer than an hour).
//!
//! Because the harness stops the shell at the first error, "a statement in an aborted transaction"
//! (25P02) cannot appear in a golden script;
//! `psql_shows_an_aborted_transaction_and_pgbench_keeps_the_total` shows it with `psql`, and the
//! fuzz tests check it everywhere.

#[path = "../../sql/tests/fuzzgen/mod.rs"]
mod fuzzgen;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meridian_client::Client;
use meridian_tests::process::{NodeArgs, Output, ProcessCluster, rt, run_bounded};
use tokio_postgres::SimpleQueryMessage;

const BIN: &str = env!("CARGO_BIN_EXE_meridian");
/// Longest one `meridian sql` process may run.
const SHELL_TIMEOUT: Duration = Duration::from_secs(60);
/// Most processes one script may need (one per failing paragraph, plus one).
const SHELL_RUNS_MAX: usize = 200;
/// The marker the harness puts after each paragraph, and what the shell prints for it.
const MARKER_INPUT: &str = "\\timing off";
const MARKER_OUTPUT: &str = "Timing is off.";
/// Statements the fuzz run over the PostgreSQL protocol sends: all of them must run (each within
/// [`QUERY_TIMEOUT`], so a stuck cluster fails the test rather than hangs it).
const PG_FUZZ_STEPS: usize = 250;
/// Longest an external tool (psql, pgbench) may run.
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest one statement of the fuzz run (or one read of the observer) may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest a new cluster may take to give every range its three replicas.
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(90);

/// Runs the tests of this file one at a time: each starts several node processes, and on two
/// cores concurrent clusters starve each other's leases into spurious leader changes.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts a 3-node cluster and waits until every range has its three replicas.
fn replicated_cluster(rt: &tokio::runtime::Runtime) -> ProcessCluster {
    // No rebalancing: leaders stay put, so a script's explicit transactions are not aborted by a
    // lease moving for balance.
    let args = NodeArgs { no_rebalance: true, ..NodeArgs::default() };
    let cluster = ProcessCluster::start(BIN, 3, args).expect("start cluster");
    rt.block_on(async {
        let client = Client::connect(cluster.addrs()).await.expect("connect").with_deadline(QUERY_TIMEOUT);
        let deadline = Instant::now() + REPLICATION_TIMEOUT;
        loop {
            if let Ok((descs, _, _)) = client.cluster_view().await
                && descs.iter().all(|d| d.config.voters.len() == 3 && d.config.learners.is_empty())
            {
                break;
            }
            if Instant::now() > deadline {
                cluster.dump_logs();
                panic!("ranges did not get three replicas within {REPLICATION_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    cluster
}

fn pg_url(addr: &str) -> String {
    format!("postgresql://root@{addr}/meridian?sslmode=disable")
}

// ----- golden scripts -----

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql/testdata/golden")
}

fn golden_scripts() -> Vec<PathBuf> {
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .expect("read sql/testdata/golden")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    scripts.sort();
    scripts
}

/// One paragraph of a script.
#[derive(Debug)]
struct Paragraph {
    text: String,
    /// False for a paragraph of comments only.
    runs: bool,
}

fn paragraphs(script: &str, path: &Path) -> Vec<Paragraph> {
    let mut out = Vec::new();
    let mut lines: Vec<&str> = Vec::new();
    for line in script.lines().chain(std::iter::once("")) {
        if !line.trim().is_empty() {
            lines.push(line.trim_end());
            continue;
        }
        if lines.is_empty() {
            continue;
        }
        let code: Vec<&str> = lines.iter().copied().filter(|l| !l.trim_start().starts_with("--")).collect();
        let runs = !code.is_empty();
        if let Some(last) = code.last() {
            assert!(
                last.ends_with(';') || last.starts_with('\\'),
                "{}: a paragraph must end with ';' (or be a \\ command) so the marker after it is not swallowed: {:?}",
                path.display(),
                lines
            );
        }
        assert!(
            !code.iter().any(|l| l.trim_start().starts_with("\\timing")),
            "{}: \\timing prints times, which differ from run to run (and the harness uses it as its marker)",
            path.display()
        );
        out.push(Paragraph { text: lines.join("\n"), runs });
        lines.clear();
    }
    out
}

/// Where `meridian sql` runs.
#[derive(Debug, Clone)]
enum Target {
    Local,
    Remote(String),
}

fn run_shell(target: &Target, input: String) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("sql");
    match target {
        Target::Local => cmd.arg("--local"),
        Target::Remote(url) => cmd.arg("--url").arg(url),
    };
    cmd.args(["--on-error-stop", "-"]).env_remove("MERIDIAN_PG_URL").env_remove("MERIDIAN_PG_ADDR");
    run_bounded(cmd, &input, SHELL_TIMEOUT)
}

/// Splits a shell's stdout at the marker lines: one chunk per completed paragraph, then the rest.
fn split_at_markers(stdout: &str) -> (Vec<String>, String) {
    let mut chunks = Vec::new();
    let mut current = String::new();
    for line in stdout.split_inclusive('\n') {
        if line.trim_end_matches('\n') == MARKER_OUTPUT {
            chunks.push(std::mem::take(&mut current));
        } else {
            current.push_str(line);
        }
    }
    (chunks, current)
}

/// The transaction state after `output`, starting from `open`, read from its command tags.
fn open_after(mut open: bool, output: &str) -> bool {
    for line in output.lines() {
        match line {
            "BEGIN" => open = true,
            "COMMIT" | "ROLLBACK" => open = false,
            _ => {}
        }
    }
    open
}

/// Runs a script's paragraphs against `target`; returns each running paragraph's output.
fn run_paragraphs(target: &Target, paras: &[Paragraph], path: &Path) -> Vec<Option<String>> {
    let name = path.file_name().expect("a file").to_string_lossy().into_owned();
    let mut outputs: Vec<Option<String>> = vec![None; paras.len()];
    let mut succeeded: Vec<usize> = Vec::new();
    let mut next = 0;
    let mut open = false;
    for _ in 0..SHELL_RUNS_MAX {
        let batch: Vec<usize> = (next..paras.len()).filter(|&i| paras[i].runs).collect();
        if batch.is_empty() {
            return outputs;
        }
        let replay: Vec<usize> = match target {
            Target::Local => succeeded.clone(),
            Target::Remote(_) => Vec::new(),
        };
        let fed: Vec<usize> = replay.iter().chain(&batch).copied().collect();
        let input: String = fed.iter().map(|&i| format!("{}\n{MARKER_INPUT}\n", paras[i].text)).collect();
        let run = run_shell(target, input);
        let (chunks, rest) = split_at_markers(&run.stdout);
        assert!(chunks.len() <= fed.len(), "{name}: more markers than paragraphs");
        for (k, chunk) in chunks.iter().enumerate().take(replay.len()) {
            assert_eq!(
                Some(chunk),
                outputs[replay[k]].as_ref(),
                "{name} {target:?}: replaying paragraph {} printed something else",
                replay[k] + 1
            );
        }
        assert!(
            chunks.len() >= replay.len(),
            "{name} {target:?}: replaying the paragraphs that succeeded failed: {}",
            run.stderr
        );
        for (k, chunk) in chunks.into_iter().enumerate().skip(replay.len()) {
            let i = fed[k];
            open = open_after(open, &chunk);
            outputs[i] = Some(chunk);
            succeeded.push(i);
        }
        match run.code {
            Some(0) => {
                assert!(rest.is_empty(), "{name}: output after the last marker: {rest:?}");
                if !run.stderr.is_empty() {
                    // Shows up in the diff against the .out file.
                    let last = *batch.last().expect("a non-empty batch");
                    outputs[last].get_or_insert_with(String::new).push_str(&run.stderr);
                }
                return outputs;
            }
            // `--on-error-stop` stopped at an error.
            Some(3) => {
                let completed = succeeded.iter().filter(|i| batch.contains(i)).count();
                let failing = *batch.get(completed).unwrap_or_else(|| {
                    panic!("{name} {target:?}: the shell failed after the last paragraph: {}", run.stderr)
                });
                assert!(
                    !open,
                    "{name}: paragraph {} failed inside a transaction an earlier paragraph opened; put BEGIN and \
                     the failing statement in one paragraph (the harness restarts the shell after an error)",
                    failing + 1
                );
                // Before the error: nothing, or a transaction the paragraph opened and had not ended.
                assert!(
                    rest.is_empty() || (rest.starts_with("BEGIN\n") && open_after(false, &rest)),
                    "{name}: paragraph {} failed after statements that committed ({rest:?}); split it so the error \
                     comes first, or inside a transaction the paragraph opened",
                    failing + 1
                );
                outputs[failing] = Some(format!("{rest}{}", run.stderr));
                open = false;
                next = failing + 1;
            }
            other => panic!("{name} {target:?}: meridian sql exited with {other:?}: {}", run.stderr),
        }
    }
    panic!("{name}: more than {SHELL_RUNS_MAX} shell runs");
}

/// The `.out` text for a script's paragraphs and their outputs.
fn render(paras: &[Paragraph], outputs: &[Option<String>]) -> String {
    let mut out = String::new();
    for (p, o) in paras.iter().zip(outputs) {
        out.push_str(&p.text);
        out.push('\n');
        if p.runs {
            out.push_str("----\n");
            let o = o.as_deref().unwrap_or("(not run)\n");
            out.push_str(o);
            if !o.is_empty() && !o.ends_with('\n') {
                out.push('\n');
            }
            if o.ends_with("\n\n") {
                continue;
            }
        }
        out.push('\n');
    }
    out
}

fn run_golden(target: &Target, path: &Path) -> String {
    let script = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let paras = paragraphs(&script, path);
    let outputs = run_paragraphs(target, &paras, path);
    render(&paras, &outputs)
}

/// Saves a mismatching output next to the build, for `diff` against the `.out` file.
fn save_actual(script: &Path, target: &str, actual: &str) -> PathBuf {
    let name = script.file_stem().expect("a file").to_string_lossy();
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("golden-{name}.{target}.out"));
    std::fs::write(&path, actual).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// A short report of where `actual` departs from `expected`.
fn first_difference(expected: &str, actual: &str) -> String {
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    let at = e.iter().zip(&a).position(|(x, y)| x != y).unwrap_or(e.len().min(a.len()));
    let from = at.saturating_sub(6);
    let show = |lines: &[&str]| -> String {
        lines.iter().enumerate().skip(from).take(14).map(|(i, l)| format!("{:>5} {l}\n", i + 1)).collect()
    };
    format!("first difference at line {}\n--- expected\n{}--- actual\n{}", at + 1, show(&e), show(&a))
}

#[test]
fn golden_scripts_print_the_same_locally_and_on_a_cluster() {
    let _serial = serial();
    let scripts = golden_scripts();
    assert!(!scripts.is_empty(), "no scripts in {}", golden_dir().display());
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v != "0");
    let mut failures = Vec::new();
    let started = Instant::now();
    for path in &scripts {
        let actual = run_golden(&Target::Local, path);
        let out_path = path.with_extension("out");
        if update {
            std::fs::write(&out_path, &actual).unwrap_or_else(|e| panic!("write {}: {e}", out_path.display()));
            continue;
        }
        let expected = std::fs::read_to_string(&out_path).unwrap_or_default();
        if actual != expected {
            let saved = save_actual(path, "local", &actual);
            failures.push(format!(
                "{} --local (all of it: {}): {}",
                path.display(),
                saved.display(),
                first_difference(&expected, &actual)
            ));
        }
    }
    eprintln!("golden: {} scripts --local in {:?}", scripts.len(), started.elapsed());

    let rt = rt();
    let cluster = replicated_cluster(&rt);
    let started = Instant::now();
    for (i, path) in scripts.iter().enumerate() {
        // Each script through another node: every node is a gateway.
        let target = Target::Remote(pg_url(&cluster.nodes[i % cluster.nodes.len()].pg_addr));
        let actual = run_golden(&target, path);
        let expected = std::fs::read_to_string(path.with_extension("out")).unwrap_or_default();
        if actual != expected {
            let saved = save_actual(path, "cluster", &actual);
            failures.push(format!(
                "{} on the cluster (all of it: {}): {}",
                path.display(),
                saved.display(),
                first_difference(&expected, &actual)
            ));
        }
    }
    eprintln!("golden: {} scripts on a 3-node cluster in {:?}", scripts.len(), started.elapsed());
    if !failures.is_empty() {
        cluster.dump_logs();
        panic!(
            "{} golden mismatches (UPDATE_GOLDEN=1 rewrites the .out files from --local; review the diff):\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
}

// ----- fuzzed statements over the PostgreSQL protocol -----

/// What the checker knows about the fuzzed session's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Txn {
    Idle,
    Open,
    Failed,
}

/// The first word of `sql` after whitespace and comments, upper-cased.
fn leading_keyword(sql: &str) -> String {
    let mut rest = sql;
    loop {
        let trimmed = rest.trim_start();
        if let Some(after) = trimmed.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, tail)| tail);
        } else if let Some(after) = trimmed.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, tail)| tail);
        } else {
            rest = trimmed;
            break;
        }
    }
    rest.chars().take_while(|c| c.is_ascii_alphabetic()).collect::<String>().to_uppercase()
}

/// Every fuzz table's rows as text, read through `observer` (another connection, on another
/// node): the committed state of the database.
async fn committed_state(observer: &tokio_postgres::Client) -> Vec<String> {
    let mut state = Vec::new();
    for table in fuzzgen::TABLES {
        let sql = format!("SELECT * FROM {table}");
        let query = observer.simple_query(&sql);
        match tokio::time::timeout(QUERY_TIMEOUT, query).await.expect("an observer read answers in time") {
            Ok(messages) => {
                for m in messages {
                    if let SimpleQueryMessage::Row(row) = m {
                        let values: Vec<&str> = (0..row.len()).map(|i| row.get(i).unwrap_or("NULL")).collect();
                        state.push(format!("{table}: {}", values.join(" | ")));
                    }
                }
            }
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
                state.push(format!("{table}: (no table)"));
            }
            Err(e) => panic!("observer reading {table}: {e:?}"),
        }
    }
    state
}

async fn pg_connect(addr: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&pg_url(addr), tokio_postgres::NoTls).await.expect("connect over pg");
    tokio::spawn(conn);
    client
}

#[test]
fn fuzzed_statements_over_pg_leave_no_partial_effects() {
    let _serial = serial();
    let rt = rt();
    let cluster = replicated_cluster(&rt);
    let seed: u64 = std::env::var("MERIDIAN_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20_251_124);
    rt.block_on(async {
        let session = pg_connect(&cluster.nodes[0].pg_addr).await;
        let observer = pg_connect(&cluster.nodes[1].pg_addr).await;
        for sql in fuzzgen::SETUP {
            session.batch_execute(sql).await.expect("setup");
        }
        let mut generator = fuzzgen::Gen::new(seed, false);
        let mut txn = Txn::Idle;
        let mut txn_snapshot: Vec<String> = Vec::new();
        let mut state = committed_state(&observer).await;
        let (mut sent, mut failed) = (0, 0);
        let started = Instant::now();
        // Statements of several commands are not sent; a bounded number may be generated.
        for _ in 0..4 * PG_FUZZ_STEPS {
            if sent == PG_FUZZ_STEPS {
                break;
            }
            let sql = if txn == Txn::Failed && generator.rng.percent(30) {
                generator.rng.pick(&["ROLLBACK", "COMMIT"]).to_string()
            } else {
                generator.next_sql()
            };
            // One statement per call (or none, or one that does not parse), so the model of the
            // session's transaction below stays exact.
            let parsed = meridian_sql::parse::parse(&sql).map(|s| s.len());
            if matches!(parsed, Ok(n) if n > 1) {
                continue;
            }
            sent += 1;
            let ctx = format!("seed {seed} statement {sent} ({txn:?}): {sql:?}");
            let result = tokio::time::timeout(QUERY_TIMEOUT, session.simple_query(&sql))
                .await
                .unwrap_or_else(|_| panic!("{ctx}: no answer within {QUERY_TIMEOUT:?}"));
            let code = match &result {
                Ok(_) => None,
                Err(e) => {
                    let db = e.as_db_error().unwrap_or_else(|| panic!("{ctx}: not a database error: {e:?}"));
                    Some(db.code().code().to_string())
                }
            };
            if code.is_some() {
                failed += 1;
            }
            let ctx = format!("{ctx} → {code:?}");
            assert!(!matches!(code.as_deref(), Some("XX000" | "XX001")), "{ctx}: an internal error is a bug");
            let after = committed_state(&observer).await;
            let keyword = leading_keyword(&sql);
            let (ok, unsupported) = (code.is_none(), code.as_deref() == Some("0A000"));
            let next = match (txn, parsed.is_ok(), keyword.as_str()) {
                // No statement at all (only whitespace or comments): nothing happens.
                _ if parsed == Ok(0) => {
                    assert!(ok, "{ctx}: an empty query is not an error");
                    txn
                }
                (Txn::Failed, true, "COMMIT" | "END" | "ROLLBACK" | "ABORT") if !unsupported => Txn::Idle,
                (Txn::Failed, _, _) => {
                    assert!(
                        !ok && (parsed.is_err() || matches!(code.as_deref(), Some("25P02" | "0A000" | "22023"))),
                        "{ctx}: a statement in a failed transaction reports 25P02"
                    );
                    Txn::Failed
                }
                (Txn::Open, true, "COMMIT" | "END" | "ROLLBACK" | "ABORT") if !unsupported => Txn::Idle,
                (Txn::Open, _, _) if ok => Txn::Open,
                (Txn::Open, _, _) => Txn::Failed,
                (Txn::Idle, true, "BEGIN" | "START") if ok => Txn::Open,
                (Txn::Idle, _, _) => Txn::Idle,
            };
            let committed = txn == Txn::Open && ok && matches!(keyword.as_str(), "COMMIT" | "END");
            match code.as_deref() {
                // The outcome of the commit is unknown: start checking afresh.
                Some("40003") => {}
                _ if txn == Txn::Idle && (!ok || matches!(keyword.as_str(), "SELECT" | "SHOW" | "EXPLAIN")) => {
                    assert_eq!(after, state, "{ctx}: a failed statement or a read changes nothing");
                }
                _ if txn != Txn::Idle && !committed => {
                    assert_eq!(after, txn_snapshot, "{ctx}: nothing is visible before COMMIT");
                }
                _ => {}
            }
            if txn == Txn::Idle && next != Txn::Idle {
                txn_snapshot = after.clone();
            }
            txn = next;
            state = after;
        }
        eprintln!(
            "pg fuzz: {sent} statements ({failed} failed cleanly) in {:?}, seed {seed} (MERIDIAN_FUZZ_SEED replays)",
            started.elapsed()
        );
        assert_eq!(sent, PG_FUZZ_STEPS, "every statement of the budget ran (of {} generated)", 4 * PG_FUZZ_STEPS);
        // Every node still serves SQL.
        for node in &cluster.nodes {
            let c = pg_connect(&node.pg_addr).await;
            c.simple_query("SELECT 1").await.unwrap_or_else(|e| panic!("node {} after fuzzing: {e}", node.pg_addr));
        }
    });
}

// ----- psql and pgbench -----

/// Fails the test unless `tool` runs: a skipped check must not look like a passed one.
fn require(tool: &str) {
    let found = Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(
        matches!(found, Ok(s) if s.success()),
        "`{tool}` is not installed: run `scripts/prereqs.sh test` (or `apt-get install postgresql-client`)"
    );
}

const BANK_ACCOUNTS: i64 = 10;
const BANK_BALANCE: i64 = 100;

/// pgbench's bank transfer between two random accounts, in an explicit transaction.
fn bank_script() -> String {
    format!(
        "\\set a random(1, {BANK_ACCOUNTS})\n\\set b random(1, {BANK_ACCOUNTS})\nBEGIN;\n\
         UPDATE bench_accounts SET balance = balance - 1 WHERE id = :a;\n\
         UPDATE bench_accounts SET balance = balance + 1 WHERE id = :b;\nEND;\n"
    )
}

fn psql(addr: &str, args: &[&str], stdin: &str) -> Output {
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let mut cmd = Command::new("psql");
    cmd.args(["-X", "-h", host, "-p", port, "-U", "root", "-d", "meridian"])
        .args(args)
        .env("PGCONNECT_TIMEOUT", "10")
        .env_remove("PGPASSWORD")
        .env_remove("PGSERVICE");
    run_bounded(cmd, stdin, TOOL_TIMEOUT)
}

#[test]
fn psql_shows_an_aborted_transaction_and_pgbench_keeps_the_total() {
    require("psql");
    require("pgbench");
    let _serial = serial();
    let rt = rt();
    let cluster = replicated_cluster(&rt);
    let (a, b) = (&cluster.nodes[1].pg_addr, &cluster.nodes[2].pg_addr);
    let total = BANK_ACCOUNTS * BANK_BALANCE;
    rt.block_on(async {
        let c = pg_connect(a).await;
        c.batch_execute("CREATE TABLE bench_accounts (id INT PRIMARY KEY, balance INT)").await.expect("create");
        let rows: Vec<String> = (1..=BANK_ACCOUNTS).map(|i| format!("({i}, {BANK_BALANCE})")).collect();
        c.batch_execute(&format!("INSERT INTO bench_accounts VALUES {}", rows.join(", "))).await.expect("insert");
    });
    let sum_line = format!("{total}|{BANK_ACCOUNTS}\n");

    // psql goes on after an error (no ON_ERROR_STOP): the statement after it is refused with
    // 25P02, COMMIT answers ROLLBACK, and nothing of the transaction remains.
    let script = "BEGIN;\n\
                  UPDATE bench_accounts SET balance = balance - 5 WHERE id = 1;\n\
                  INSERT INTO bench_accounts VALUES (2, 0);\n\
                  SELECT SUM(balance) FROM bench_accounts;\n\
                  COMMIT;\n\
                  SELECT SUM(balance), COUNT(*) FROM bench_accounts;\n";
    let out = psql(a, &["-A", "-t", "-v", "VERBOSITY=verbose", "-f", "-"], script);
    assert_eq!(out.code, Some(0), "psql: {}", out.stderr);
    assert_eq!(out.stdout, format!("BEGIN\nUPDATE 1\nROLLBACK\n{sum_line}"), "stderr: {}", out.stderr);
    assert_eq!(
        out.stderr,
        "psql:<stdin>:3: ERROR:  23505: duplicate key value violates unique constraint \"bench_accounts_pkey\": \
         Key (id)=(2) already exists\n\
         psql:<stdin>:4: ERROR:  25P02: current transaction is aborted, commands ignored until end of \
         transaction block\n"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("transfer.sql");
    std::fs::write(&script, bank_script()).expect("write the pgbench script");
    let (host, port) = a.rsplit_once(':').expect("host:port");
    let mut cmd = Command::new("pgbench");
    cmd.args(["-n", "-f"])
        .arg(&script)
        .args(["-c", "4", "-t", "25", "--max-tries", "50", "-h", host, "-p", port, "-U", "root", "meridian"])
        .env("PGCONNECT_TIMEOUT", "10");
    let out = run_bounded(cmd, "", TOOL_TIMEOUT);
    eprintln!("{}", out.stdout);
    assert_eq!(out.code, Some(0), "pgbench failed:\n{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("number of transactions actually processed: 100/100"), "{}", out.stdout);
    assert!(out.stdout.contains("number of failed transactions: 0 "), "{}", out.stdout);

    // The total is unchanged, seen through another node.
    let out = psql(b, &["-A", "-t", "-c", "SELECT SUM(balance), COUNT(*) FROM bench_accounts"], "");
    assert_eq!(out.code, Some(0), "psql: {}", out.stderr);
    assert_eq!(out.stdout, sum_line, "transfers keep the total");
}
