//! `meridian backup` and `meridian restore` end to end: a backup taken while bank transfers
//! run is one consistent snapshot (Spanner §1, §4.1.3), and restoring it into a fresh cluster
//! gives back the bank's total, the SQL tables, and exactly the manifest's keys. Corrupt and
//! incomplete backups are refused before anything is written. Every wait is bounded.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meridian_client::Client;
use meridian_tests::process::{
    MultiProcessLock, NodeArgs, ProcessCluster, eventually, multi_process_lock, rt, run_bounded, run_sql,
};

const BIN: &str = env!("CARGO_BIN_EXE_meridian");
const ACCOUNTS: usize = 40;
const BALANCE: i64 = 100;
/// The SQL catalog's first key: backups hold it and everything after it.
const BACKUP_START: &[u8] = &[0x00, 0x02];
/// Longest the background bank run may take (it runs for 8 s, then checks its history).
const BANK_RUN_MAX: Duration = Duration::from_secs(120);
/// Longest one `meridian backup`, `restore` or `workload bank init` may take.
const CLI_RUN_MAX: Duration = Duration::from_secs(180);

fn serial() -> MultiProcessLock {
    multi_process_lock()
}

/// A client of `cluster` once every range has three replicas.
async fn ready_client(cluster: &ProcessCluster) -> Client {
    let client = Client::connect(cluster.addrs()).await.expect("connect").with_deadline(Duration::from_secs(20));
    eventually(Duration::from_secs(90), "every range to have three replicas", || async {
        let (descs, _, _) = client.cluster_view().await.ok()?;
        descs.iter().all(|d| d.config.voters.len() == 3 && d.config.learners.is_empty()).then_some(())
    })
    .await;
    client
}

/// Every backed-up key of the cluster (SQL catalog and user keys), in one snapshot.
async fn all_keys(client: &Client) -> Vec<(Vec<u8>, Vec<u8>)> {
    client
        .read_only(|ro| Box::pin(async move { ro.scan(BACKUP_START, b"", 10_000_000).await }))
        .await
        .expect("scan everything")
        .0
}

/// Runs `meridian ARGS`, killed (and the test failed) after [`CLI_RUN_MAX`]; returns (success,
/// stdout + stderr).
fn cli(_cluster: &ProcessCluster, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    let out = run_bounded(cmd, "", CLI_RUN_MAX);
    (out.code == Some(0), format!("{}{}", out.stdout, out.stderr))
}

/// The balances the ledger entries among `rows` imply, from the initial balances.
fn balances_from_ledger(rows: &BTreeMap<Vec<u8>, Vec<u8>>) -> Vec<i64> {
    let mut b = vec![BALANCE; ACCOUNTS];
    for (k, v) in rows.range(b"bank/ledger/".to_vec()..b"bank/ledger0".to_vec()) {
        let text = String::from_utf8_lossy(v);
        let f: Vec<i64> = text.split(',').map(|x| x.parse().expect("ledger entry from,to,amount")).collect();
        assert_eq!(f.len(), 3, "ledger entry {}: {text}", String::from_utf8_lossy(k));
        b[f[0] as usize] -= f[2];
        b[f[1] as usize] += f[2];
    }
    b
}

fn account_balances(rows: &BTreeMap<Vec<u8>, Vec<u8>>) -> Vec<i64> {
    (0..ACCOUNTS)
        .map(|i| {
            let v = rows.get(format!("bank/acct/{i:04}").as_bytes()).expect("every account is there");
            String::from_utf8_lossy(v).parse().expect("a balance")
        })
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
}

#[test]
fn a_backup_taken_under_transfers_restores_a_consistent_bank_into_a_new_cluster() {
    let _lock = serial();
    let work = tempfile::tempdir().expect("tempdir");
    let backup_dir = work.path().join("backup");
    let backup = backup_dir.to_str().expect("utf-8 path").to_string();
    let rt = rt();

    // ---- Cluster 1: a bank over 4 ranges and a SQL table, then transfers during the backup.
    let manifest: serde_json::Value = {
        let cluster = ProcessCluster::start(BIN, 3, NodeArgs::default()).expect("start cluster 1");
        let addr = cluster.nodes[0].addr.clone();
        let client = rt.block_on(ready_client(&cluster));
        let (ok, out) = cli(
            &cluster,
            &["workload", "bank", "--addr", &addr, "init", "--accounts", "40", "--balance", "100", "--ranges", "4"],
        );
        assert!(ok, "bank init: {out}");
        let sql = run_sql(
            BIN.as_ref(),
            &[
                "--addr",
                &cluster.nodes[0].pg_addr,
                "-e",
                "CREATE TABLE t (k INT PRIMARY KEY, v TEXT)",
                "-e",
                "INSERT INTO t VALUES (1, 'one'), (2, 'two')",
            ],
            "",
            Duration::from_secs(60),
        );
        assert!(sql.code == Some(0), "sql: {sql:?}");
        // The meta range learns of each split a moment after it is chosen: poll, bounded.
        rt.block_on(eventually(Duration::from_secs(30), "the bank's 4 ranges besides meta", || async {
            let (descs, _, _) = client.cluster_view().await.ok()?;
            (descs.len() >= 5).then_some(())
        }));

        let history = work.path().join("history.jsonl");
        let mut run = Command::new(BIN)
            .args(["workload", "bank", "--addr", &addr, "run", "--seconds", "8", "--workers", "4", "--history"])
            .arg(&history)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start bank run");
        // Back up once transfers are committing.
        rt.block_on(eventually(Duration::from_secs(30), "the first transfers", || async {
            let rows = client.scan(b"bank/ledger/", b"bank/ledger0", 5).await.ok()?;
            (rows.len() >= 5).then_some(())
        }));
        let (ok, out) = cli(&cluster, &["backup", "--addr", &addr, "--out", &backup]);
        assert!(ok, "backup: {out}");
        assert!(out.contains("backup complete"), "{out}");
        // The transfers kept going during the backup, and their history checks out.
        let deadline = Instant::now() + BANK_RUN_MAX;
        let status = loop {
            if let Some(s) = run.try_wait().expect("poll bank run") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = run.kill();
                panic!("bank run did not finish within {BANK_RUN_MAX:?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(run.stderr.as_mut().expect("piped"), &mut err).expect("stderr");
        assert!(status.success(), "bank run failed: {err}");
        let after = rt.block_on(all_keys(&client));
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(backup_dir.join("MANIFEST")).expect("manifest")).expect("json");
        // Not `>`: on a slow machine the run may do all its transfers before t. The bank
        // total after restore is what shows the backup is one snapshot.
        assert!(after.len() as u64 >= m["keys"].as_u64().expect("keys"), "the cluster lost keys the backup holds");
        // A second backup into the same directory is refused.
        let (ok, out) = cli(&cluster, &["backup", "--addr", &addr, "--out", &backup]);
        assert!(!ok && out.contains("not empty"), "{out}");
        m
    };
    // Cluster 1 is gone; only the backup remains.

    // ---- Cluster 2: fresh; corrupt and incomplete backups are refused with nothing written.
    let cluster = ProcessCluster::start(BIN, 3, NodeArgs::default()).expect("start cluster 2");
    let addr = cluster.nodes[0].addr.clone();
    let client = rt.block_on(ready_client(&cluster));
    assert!(rt.block_on(all_keys(&client)).is_empty(), "a fresh cluster holds no keys");

    let corrupt = work.path().join("corrupt");
    copy_dir(&backup_dir, &corrupt);
    let victim = manifest["files"]
        .as_array()
        .expect("files")
        .iter()
        .rev()
        .find(|f| f["keys"].as_u64() > Some(0))
        .expect("a non-empty file")["name"]
        .as_str()
        .expect("name")
        .to_string();
    let path = corrupt.join(&victim);
    let mut bytes = std::fs::read(&path).expect("read data file");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(&path, &bytes).expect("corrupt it");
    let (ok, out) = cli(&cluster, &["restore", "--addr", &addr, "--from", corrupt.to_str().expect("utf-8")]);
    assert!(!ok, "a corrupt backup must be refused: {out}");
    assert!(out.contains(&victim) && out.contains("corrupt"), "the error names the file: {out}");
    assert!(rt.block_on(all_keys(&client)).is_empty(), "nothing is written from a corrupt backup");

    let incomplete = work.path().join("incomplete");
    copy_dir(&backup_dir, &incomplete);
    std::fs::remove_file(incomplete.join("MANIFEST")).expect("drop the manifest");
    let (ok, out) = cli(&cluster, &["restore", "--addr", &addr, "--from", incomplete.to_str().expect("utf-8")]);
    assert!(!ok && out.contains("MANIFEST"), "a manifest-less backup must be refused: {out}");
    assert!(rt.block_on(all_keys(&client)).is_empty(), "nothing is written from an incomplete backup");

    // ---- The real restore.
    let (ok, out) = cli(&cluster, &["restore", "--addr", &addr, "--from", &backup]);
    assert!(ok, "restore: {out}");
    let keys = manifest["keys"].as_u64().expect("keys");
    assert!(out.contains(&format!("restored {keys} keys")), "{out}");
    let rows: BTreeMap<Vec<u8>, Vec<u8>> = rt.block_on(all_keys(&client)).into_iter().collect();
    assert_eq!(rows.len() as u64, keys, "the new cluster holds exactly the manifest's keys");
    let balances = account_balances(&rows);
    assert_eq!(balances.iter().sum::<i64>(), ACCOUNTS as i64 * BALANCE, "the bank total survives the restore");
    // One snapshot: the balances are exactly the initial ones moved by the ledger it holds.
    assert_eq!(balances, balances_from_ledger(&rows), "balances and ledger come from one snapshot");
    assert!(rows.keys().any(|k| k.starts_with(b"bank/ledger/")), "transfers before the backup are in it");
    // The SQL table came along with its catalog entry.
    let sql = run_sql(
        BIN.as_ref(),
        &["--addr", &cluster.nodes[0].pg_addr, "-e", "SELECT k, v FROM t ORDER BY k"],
        "",
        Duration::from_secs(60),
    );
    assert!(
        sql.code == Some(0) && sql.stdout.contains("one") && sql.stdout.contains("two"),
        "sql after restore: {sql:?}"
    );
    // A second restore into the now non-empty cluster is refused.
    let (ok, out) = cli(&cluster, &["restore", "--addr", &addr, "--from", &backup]);
    assert!(!ok && out.contains("already holds data"), "{out}");

    // The same cluster serves the limits' end-to-end checks (a cluster start costs more than them).
    rt.block_on(limits_are_enforced_end_to_end(&cluster));
}

/// Each size limit gives its error through the client, and the node enforces it even for a
/// client that skips the check; the in-flight bound makes the extra transaction wait, then fail.
async fn limits_are_enforced_end_to_end(cluster: &ProcessCluster) {
    use meridian_client::ClientError;
    use meridian_client::limits::{TXN_WRITES_MAX, VALUE_SIZE_MAX};
    use meridian_proto::v1 as pb;
    let client = std::sync::Arc::new(
        Client::connect(cluster.addrs())
            .await
            .expect("connect")
            .with_deadline(Duration::from_secs(1))
            .with_txns_in_flight_max(1),
    );
    let huge = vec![b'v'; VALUE_SIZE_MAX + 1];
    match client.put(b"limits/big", &huge).await {
        Err(ClientError::Invalid(m)) => assert!(m.contains(&format!("limit is {VALUE_SIZE_MAX} bytes")), "{m}"),
        other => panic!("a too-large value must be refused: {other:?}"),
    }
    let r = client
        .read_write(|t| {
            Box::pin(async move {
                for i in 0..=TXN_WRITES_MAX {
                    t.put(format!("limits/{i:05}").as_bytes(), b"x");
                }
                Ok(())
            })
        })
        .await;
    match r {
        Err(ClientError::Invalid(m)) => assert!(m.contains(&format!("at most {TXN_WRITES_MAX} keys")), "{m}"),
        other => panic!("a transaction of too many writes must be refused: {other:?}"),
    }
    // A client that skips the check: the node refuses the value itself.
    let mut refused = None;
    for addr in cluster.addrs() {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).expect("addr").connect_lazy();
        let mut kv = pb::kv_client::KvClient::new(ch).max_encoding_message_size(64 << 20);
        let req = pb::WriteRequest {
            mutations: vec![pb::Mutation { key: b"limits/big".to_vec(), value: Some(huge.clone()) }],
        };
        if let Ok(r) = kv.write(req).await
            && let Some(e) = r.into_inner().error
            && e.message.contains("limit is")
        {
            refused = Some(e.message);
            break;
        }
    }
    let m = refused.expect("some node refuses a too-large value sent around the client's check");
    assert!(m.contains(&format!("limit is {VALUE_SIZE_MAX} bytes")), "{m}");
    // With one transaction in flight allowed, a second waits for the deadline and fails.
    let (entered_tx, entered) = tokio::sync::oneshot::channel::<()>();
    let holder = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut entered_tx = Some(entered_tx);
            client
                .read_write(move |t| {
                    let tx = entered_tx.take();
                    Box::pin(async move {
                        t.put(b"limits/held", b"1");
                        if let Some(tx) = tx {
                            let _ = tx.send(());
                        }
                        tokio::time::sleep(Duration::from_secs(3)).await;
                        Ok(())
                    })
                })
                .await
        })
    };
    tokio::time::timeout(Duration::from_secs(10), entered).await.expect("first transaction starts").expect("sent");
    match client.read_write(|t| Box::pin(async move { t.get(b"limits/held").await })).await {
        Err(ClientError::Unavailable(m)) => assert!(m.contains("in flight"), "{m}"),
        other => panic!("a second transaction beyond the in-flight limit must fail after the deadline: {other:?}"),
    }
    holder.await.expect("holder task").expect("the first transaction commits");
}
