//! `meridian chaos bank` end to end: five real node processes under every safe fault (kill -9
//! and restart, SIGSTOP/SIGCONT, partitions, clock skew within ε, leader transfers) while the
//! bank workload runs; then its checks. The run must find no violation and get work done.
//!
//! The fault schedule is seeded (`CHAOS_SEED`), so a failure names a schedule to replay with
//! `meridian chaos bank --seed`; the processes' interleavings still differ from run to run.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meridian_proto::v1 as pb;
use meridian_tests::process::{NodeArgs, ProcessCluster, multi_process_lock};

const BIN: &str = env!("CARGO_BIN_EXE_meridian");
/// The fault schedule of the test.
const CHAOS_SEED: &str = "7";
/// Longest the whole command may take: 45 s of faults, start-up, recovery and checks.
const RUN_MAX: Duration = Duration::from_secs(6 * 60);

/// The counts of a verdict line `chaos bank: A transfers ok, B unknown, C failed, D audits,
/// E faults, F violations`.
fn verdict(out: &str) -> Option<[u64; 6]> {
    let line = out.lines().find(|l| l.starts_with("chaos bank: ") && l.contains(" transfers ok, "))?;
    let numbers: Vec<u64> = line
        .trim_start_matches("chaos bank: ")
        .split(", ")
        .map(|part| part.split_whitespace().next().and_then(|n| n.parse().ok()))
        .collect::<Option<_>>()?;
    numbers.try_into().ok()
}

#[test]
fn verdict_lines_parse() {
    let out =
        "chaos bank: seed 7\nchaos bank: 10 transfers ok, 2 unknown, 3 failed, 4 audits, 5 faults, 0 violations\n";
    assert_eq!(verdict(out), Some([10, 2, 3, 4, 5, 0]));
    assert_eq!(verdict("chaos bank: 1 transfers ok, garbage"), None);
}

#[test]
fn chaos_bank_under_every_safe_fault_keeps_every_invariant() {
    let _lock = multi_process_lock();
    let args = [
        "chaos",
        "bank",
        "--nodes",
        "5",
        "--duration",
        "45s",
        "--faults",
        "kill,pause,partition,skew,leader",
        "--seed",
        CHAOS_SEED,
    ];
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run meridian chaos");
    // Drain both pipes on threads so the child never blocks on a full one.
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + RUN_MAX;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for meridian chaos") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            // Its nodes die with it (PR_SET_PDEATHSIG).
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = out.join().expect("stdout reader");
    let err = err.join().expect("stderr reader");
    let shown = format!("meridian {}\n--- stdout ---\n{out}\n--- stderr ---\n{err}", args.join(" "));
    let Some(status) = status else { panic!("did not finish within {RUN_MAX:?}\n{shown}") };
    let Some([ok, _unknown, _failed, audits, faults, violations]) = verdict(&out) else {
        panic!("no verdict ({status})\n{shown}")
    };
    assert_eq!(violations, 0, "{shown}");
    assert!(status.success(), "a verdict of 0 violations exits with 0 ({status})\n{shown}");
    assert!(ok > 0, "no transfer was acknowledged\n{shown}");
    assert!(audits > 0, "no audit completed\n{shown}");
    assert!(faults > 0, "no fault was injected\n{shown}");
}

#[test]
fn a_node_started_without_the_flag_refuses_fault_injection() {
    let _lock = multi_process_lock();
    let cluster =
        ProcessCluster::start(BIN, 1, NodeArgs { replication: 1, ..NodeArgs::default() }).expect("start a node");
    let addr = format!("http://{}", cluster.nodes[0].addr);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut c = pb::fault_injection_client::FaultInjectionClient::connect(addr).await.expect("connect");
        let e = c.set_partition(pb::SetPartitionRequest { blocked_nodes: vec![2] }).await.expect_err("refused");
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains("--fault-injection"), "the error names the flag: {}", e.message());
        let e = c.set_clock_offset(pb::SetClockOffsetRequest { offset_ns: 1 }).await.expect_err("refused");
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    });
}
