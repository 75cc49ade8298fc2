//! Crash test: a child process writes synced batches to a `RocksEngine` and reports each
//! acknowledgement on stdout; the parent kills it with SIGKILL mid-stream, reopens the data
//! directory and checks that every acknowledged batch is present and that no batch is torn.
#![cfg(feature = "rocksdb")]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meridian_storage::{Cf, Direction, Engine, RocksEngine, WriteBatch};

const KEYS_PER_BATCH: usize = 8;
const CHILD_ENV: &str = "MERIDIAN_CRASH_CHILD_DIR";
/// Acknowledgements to wait for before the kill.
const ACKS_BEFORE_KILL: u64 = 300;
const CHILD_DEADLINE: Duration = Duration::from_secs(60);

/// Runs only as the child (re-executed with the env var set); a no-op in a normal test run.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let engine = RocksEngine::open(&dir, &Default::default()).expect("child opens engine");
    let mut out = std::io::stdout().lock();
    // Bounded: the parent kills us long before this many batches.
    for batch_id in 0u64..10_000_000 {
        let mut b = WriteBatch::new();
        for k in 0..KEYS_PER_BATCH {
            // Spread keys across column families so atomicity across them is tested too.
            let cf = Cf::ALL[k % Cf::ALL.len()];
            b.put(cf, format!("b{batch_id:012}/{k}").into_bytes(), batch_id.to_be_bytes().to_vec());
        }
        // Every other batch is unsynced: it may vanish, but only whole and only after the
        // acknowledged ones.
        let sync = batch_id % 2 == 0;
        engine.write(b, sync).expect("child write");
        if sync {
            writeln!(out, "ack {batch_id}").and_then(|_| out.flush()).expect("stdout");
        }
    }
}

#[test]
fn kill_9_loses_no_acknowledged_batch_and_tears_none() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().unwrap();
    let mut acked: Option<u64> = None;
    let start = Instant::now();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("child stdout");
        if let Some(n) = line.strip_prefix("ack ") {
            acked = Some(n.parse().expect("ack number"));
            if acked.unwrap() >= ACKS_BEFORE_KILL * 2 {
                break;
            }
        }
        assert!(start.elapsed() < CHILD_DEADLINE, "child too slow to acknowledge");
    }
    child.kill().expect("SIGKILL the child"); // std's kill() is SIGKILL on Unix
    child.wait().expect("reap child");
    let acked = acked.expect("child acknowledged batches before the kill");

    let engine = RocksEngine::open(dir.path(), &Default::default()).expect("reopen after kill -9");
    let mut present = std::collections::BTreeMap::<u64, usize>::new();
    for cf in Cf::ALL {
        for kv in engine.scan(cf, b"", None, Direction::Forward).unwrap() {
            let (k, v) = kv.unwrap();
            let id = u64::from_be_bytes(v.try_into().expect("8-byte batch id"));
            assert!(k.starts_with(format!("b{id:012}/").as_bytes()), "value matches its key");
            *present.entry(id).or_default() += 1;
        }
    }
    for (id, n) in &present {
        assert_eq!(*n, KEYS_PER_BATCH, "batch {id} is torn: {n} of {KEYS_PER_BATCH} keys");
    }
    for id in 0..=acked {
        assert!(present.contains_key(&id), "batch {id} was acknowledged (≤ {acked}) but is gone");
    }
    // What survived is a prefix: no batch after a missing one.
    let max = present.keys().next_back().copied().unwrap_or(0);
    assert_eq!(present.len() as u64, max + 1, "surviving batches form a prefix");
}
