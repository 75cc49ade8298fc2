//! Stock PostgreSQL tools against the server: `psql` and `pgbench` (Debian's `postgresql-client`).
//! A missing tool fails its test, saying how to install it (`scripts/prereqs.sh test`): a skipped
//! check must not look like a passed one.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::TestServer;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Longest a tool may run.
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// Fails the test unless `tool` runs.
fn require(tool: &str) {
    let found = std::process::Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(
        matches!(found, Ok(s) if s.success()),
        "`{tool}` is not installed: run `scripts/prereqs.sh test` (or `apt-get install postgresql-client`)"
    );
}

struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn run(tool: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(tool)
        .args(args)
        .env("PGCONNECT_TIMEOUT", "10")
        .env_remove("PGPASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start {tool}: {e}"));
    let mut input = child.stdin.take().expect("piped stdin");
    input.write_all(stdin.as_bytes()).await.expect("write stdin");
    drop(input);
    let out = tokio::time::timeout(TOOL_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{tool} did not finish in {TOOL_TIMEOUT:?}"))
        .expect("wait");
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn psql_args(server: &TestServer) -> Vec<String> {
    let port = server.addr.port().to_string();
    ["-h", "127.0.0.1", "-p", &port, "-U", "tester", "-d", "meridian", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_runs_a_bank_transfer_script() {
    require("psql");
    let server = TestServer::start().await;
    let args = psql_args(&server);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let script = "\
        CREATE TABLE accounts (id INT PRIMARY KEY, balance INT, owner TEXT);
        INSERT INTO accounts VALUES (1, 100, 'ann'), (2, 100, 'bob');
        BEGIN;
        UPDATE accounts SET balance = balance - 25 WHERE id = 1;
        UPDATE accounts SET balance = balance + 25 WHERE id = 2;
        COMMIT;
        SELECT id, balance, owner FROM accounts ORDER BY id;
        SELECT SUM(balance), COUNT(*) FROM accounts;
    ";
    let out = run("psql", &args, script).await;
    assert_eq!(out.code, Some(0), "psql failed: {}", out.stderr);
    assert_eq!(out.stdout, "1|75|ann\n2|125|bob\n200|2\n", "stderr: {}", out.stderr);

    // An error stops the script with psql's exit code 3 and carries its SQLSTATE.
    let out = run("psql", &args, "\\set VERBOSITY verbose\nSELECT * FROM missing;\nSELECT 1;\n").await;
    assert_eq!(out.code, Some(3), "stdout: {} stderr: {}", out.stdout, out.stderr);
    assert!(out.stderr.contains("42P01"), "{}", out.stderr);
    assert!(out.stdout.is_empty(), "nothing ran after the error: {}", out.stdout);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_runs_prepared_transfers_and_retries_conflicts() {
    require("pgbench");
    const ACCOUNTS: i64 = 10;
    let server = TestServer::start().await;
    let client = server.connect().await;
    client.batch_execute("CREATE TABLE accounts (id INT PRIMARY KEY, balance INT)").await.unwrap();
    let values: Vec<String> = (1..=ACCOUNTS).map(|i| format!("({i}, 100)")).collect();
    client.batch_execute(&format!("INSERT INTO accounts VALUES {}", values.join(", "))).await.unwrap();

    let dir = std::env::temp_dir().join(format!("meridian-pgbench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("transfer.sql");
    std::fs::write(
        &script,
        format!(
            "\\set a random(1, {ACCOUNTS})\n\\set b random(1, {ACCOUNTS})\nBEGIN;\n\
             UPDATE accounts SET balance = balance - 1 WHERE id = :a;\n\
             UPDATE accounts SET balance = balance + 1 WHERE id = :b;\nCOMMIT;\n"
        ),
    )
    .unwrap();
    let port = server.addr.port().to_string();
    let script_path = script.to_str().unwrap();
    let args = [
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-U",
        "tester",
        "-n",
        "-M",
        "prepared",
        "-c",
        "4",
        "-j",
        "1",
        "-t",
        "25",
        "--max-tries",
        "1000",
        "-f",
        script_path,
        "meridian",
    ];
    let out = run("pgbench", &args, "").await;
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("{}", out.stdout);
    assert_eq!(out.code, Some(0), "pgbench failed:\n{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("number of transactions actually processed: 100/100"), "{}", out.stdout);

    let total: i64 = client.query_one("SELECT SUM(balance) FROM accounts", &[]).await.unwrap().get(0);
    assert_eq!(total, 100 * ACCOUNTS, "transfers preserve the total");
    server.stop().await;
}
