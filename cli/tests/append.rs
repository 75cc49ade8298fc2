//! `meridian workload append run` end to end: Elle's list-append workload on three real node
//! processes, checked for strict serializability by our checker, and its export by adya (an
//! independent Elle implementation). Every wait is bounded.

use std::process::Command;
use std::time::{Duration, Instant};

use meridian_client::Client;
use meridian_tests::process::{NodeArgs, Output, ProcessCluster, multi_process_lock, run_bounded};

const BIN: &str = env!("CARGO_BIN_EXE_meridian");
/// Longest a new cluster may take to give every range its three replicas.
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(90);
/// Longest the run may take: 5 s of transactions, the splits, the check and slow start-up.
const RUN_MAX: Duration = Duration::from_secs(180);
/// Longest a re-check of the recorded history may take.
const CHECK_MAX: Duration = Duration::from_secs(60);

/// The counts of a verdict line `append: A ok, B unknown, C failed; D anomalies`.
fn verdict(out: &str) -> Option<[u64; 4]> {
    let line = out.lines().find(|l| l.starts_with("append: ") && l.ends_with(" anomalies"))?;
    let numbers: Vec<u64> = line
        .trim_start_matches("append: ")
        .split([',', ';'])
        .map(|part| part.split_whitespace().next().and_then(|n| n.parse().ok()))
        .collect::<Option<_>>()?;
    numbers.try_into().ok()
}

#[test]
fn verdict_lines_parse() {
    let out = "append: valid: 3 txns\nappend: 10 ok, 2 unknown, 3 failed; 0 anomalies\n";
    assert_eq!(verdict(out), Some([10, 2, 3, 0]));
    assert_eq!(verdict("append: 1 ok, garbage; 0 anomalies"), None);
}

fn meridian(args: &[&str], timeout: Duration) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("RUST_LOG", "warn");
    run_bounded(cmd, "", timeout)
}

/// Waits until every range of `cluster` has three voters and no learner.
fn wait_replicated(cluster: &ProcessCluster) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let client = Client::connect(cluster.addrs()).await.expect("connect").with_deadline(Duration::from_secs(20));
        let deadline = Instant::now() + REPLICATION_TIMEOUT;
        while Instant::now() < deadline {
            match client.cluster_view().await {
                Ok((descs, _, _))
                    if descs.iter().all(|d| d.config.voters.len() == 3 && d.config.learners.is_empty()) =>
                {
                    return;
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        cluster.dump_logs();
        panic!("ranges did not get three replicas within {REPLICATION_TIMEOUT:?}");
    });
}

#[test]
fn the_append_workload_on_three_processes_is_strictly_serializable() {
    let _lock = multi_process_lock();
    let cluster = ProcessCluster::start(BIN, 3, NodeArgs::default()).expect("start cluster");
    wait_replicated(&cluster);
    let history = cluster.root().join("append.jsonl");
    let json = cluster.root().join("append.elle.json");
    let (history, json) = (history.to_str().expect("utf-8 path"), json.to_str().expect("utf-8 path"));
    let addr = cluster.nodes[0].addr.clone();
    let run = [
        "workload",
        "append",
        "--addr",
        &addr,
        "run",
        "--seconds",
        "5",
        "--workers",
        "4",
        "--keys",
        "16",
        "--ranges",
        "4",
        "--history",
        history,
        "--elle-json",
        json,
    ];
    let out = meridian(&run, RUN_MAX);
    let shown = format!("meridian {}\n--- stdout ---\n{}\n--- stderr ---\n{}", run.join(" "), out.stdout, out.stderr);
    let Some([ok, _unknown, _failed, anomalies]) = verdict(&out.stdout) else {
        cluster.dump_logs();
        panic!("no verdict ({:?})\n{shown}", out.code)
    };
    assert_eq!(anomalies, 0, "{shown}");
    assert_eq!(out.code, Some(0), "a verdict of 0 anomalies exits with 0\n{shown}");
    assert!(ok > 0, "no transaction committed\n{shown}");

    // adya reads the export and finds it strictly serializable too; `True`, not `Unknown`,
    // also means the history had dependencies to check.
    let text = std::fs::read_to_string(json).expect("the elle-cli export was written");
    let parsed = adya::History::from_json(&text).expect("adya parses the export");
    let opts = adya::Opts {
        models: vec!["strict-serializable".to_string()],
        // Its cycle search is bounded by wall-clock time; make the bound irrelevant.
        timeout: Duration::from_secs(600),
        ..adya::Opts::default()
    };
    let report = adya::check(&parsed, adya::Workload::ListAppend, &opts);
    assert!(matches!(report.valid, adya::Valid::True), "adya: {:?}\n{shown}", report.anomaly_types);

    // Checking the recorded history again gives the same verdict.
    let again = meridian(&["workload", "append", "check", "--history", history], CHECK_MAX);
    assert_eq!(again.code, Some(0), "{}{}", again.stdout, again.stderr);
    assert_eq!(verdict(&again.stdout), verdict(&out.stdout), "{}", again.stdout);
}
