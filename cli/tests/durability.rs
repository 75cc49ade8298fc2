//! Durability on the real write path: every node of a cluster loses power at once, and no
//! acknowledged write may be gone after they come back.
//!
//! `kill -9` alone proves little: RocksDB's write-ahead log tail is in the page cache and
//! survives the process, so a node that never fsyncs would pass. Here the nodes run with
//! `--test-power-loss` (storage that keeps unsynced writes only in the process,
//! `meridian_storage::PowerLossEngine`), so killing every process is a power cut. The second test
//! runs the same with `--unsafe-skip-sync` and must see acknowledged writes lost: the check can
//! fail.

use std::time::{Duration, Instant};

use meridian_client::Client;
use meridian_tests::process::{NodeArgs, ProcessCluster, eventually, rt, serial};

const BIN: &str = env!("CARGO_BIN_EXE_meridian");

/// Writes acknowledged before the power cut.
const WRITES: usize = 60;
/// How long the restarted cluster gets to answer the first read (elections, lease waits).
const RECOVERY_MAX: Duration = Duration::from_secs(60);

/// What a power cut did to the acknowledged writes.
struct Outcome {
    acked: usize,
    /// Acknowledged keys that read back missing or different, or why they could not be read.
    lost: Vec<String>,
}

/// Starts 3 nodes with `flags`, writes [`WRITES`] keys one at a time (each acknowledged), kills
/// every node at once, restarts them and reads every acknowledged key back (printing the nodes'
/// logs if some are lost and `dump_logs_on_loss`).
fn power_cut(flags: &[&str], dump_logs_on_loss: bool) -> Outcome {
    let _serial = serial();
    let mut extra = vec!["--test-power-loss".to_string()];
    extra.extend(flags.iter().map(|f| f.to_string()));
    let args = NodeArgs { extra, ..NodeArgs::default() };
    let mut cluster = ProcessCluster::start(BIN, 3, args).expect("start cluster");
    let rt = rt();
    let acked: Vec<String> = rt.block_on(async {
        let client = Client::connect(cluster.addrs()).await.expect("connect").with_deadline(Duration::from_secs(20));
        eventually(Duration::from_secs(90), "every range to have three replicas", || async {
            let (descs, _, _) = client.cluster_view().await.ok()?;
            descs.iter().all(|d| d.config.voters.len() == 3 && d.config.learners.is_empty()).then_some(())
        })
        .await;
        let mut acked = Vec::new();
        for i in 0..WRITES {
            let key = format!("durable-{i:03}");
            client.put(key.as_bytes(), key.as_bytes()).await.unwrap_or_else(|e| panic!("put {key}: {e}"));
            acked.push(key);
        }
        acked
    });
    // The power cut: every node at once.
    for i in 0..cluster.nodes.len() {
        cluster.kill(i);
    }
    let mut lost = Vec::new();
    for i in 0..cluster.nodes.len() {
        if let Err(e) = cluster.restart(i) {
            lost.push(format!("node {} did not come back: {e}", i + 1));
        }
    }
    if lost.is_empty() {
        rt.block_on(async {
            let client = Client::connect(cluster.addrs()).await.expect("connect").with_deadline(Duration::from_secs(5));
            let start = Instant::now();
            for key in &acked {
                // Bounded: each read has the client's 5 s deadline, and the loop stops at RECOVERY_MAX.
                let got = loop {
                    match client.get(key.as_bytes()).await {
                        Ok((v, _)) => break Ok(v),
                        Err(e) if start.elapsed() < RECOVERY_MAX => {
                            eprintln!("reading {key} after the restart: {e} (retrying)");
                        }
                        Err(e) => break Err(e),
                    }
                };
                match got {
                    Ok(Some(v)) if v == key.as_bytes() => {}
                    Ok(other) => lost.push(format!("{key}: read back {other:?}")),
                    Err(e) => {
                        lost.push(format!("{key}: unreadable {RECOVERY_MAX:?} after the restart: {e}"));
                        break;
                    }
                }
            }
        });
    }
    if dump_logs_on_loss && !lost.is_empty() {
        cluster.dump_logs();
    }
    Outcome { acked: acked.len(), lost }
}

#[test]
fn no_acknowledged_write_is_lost_when_every_node_loses_power() {
    let o = power_cut(&[], true);
    assert!(o.lost.is_empty(), "{} of {} acknowledged writes lost: {:#?}", o.lost.len(), o.acked, o.lost);
}

#[test]
fn the_power_cut_test_catches_a_node_that_skips_its_syncs() {
    let o = power_cut(&["--unsafe-skip-sync"], false);
    assert!(!o.lost.is_empty(), "a cluster that never syncs lost none of {} acknowledged writes", o.acked);
}
