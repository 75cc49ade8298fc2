//! One transaction followed through the logs: a two-phase commit across two ranges on three
//! node processes logging at debug level, then one grep of its id across the client's and
//! every node's log shows client → coordinator → participants.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meridian_client::Client;
use meridian_tests::process::{NodeArgs, ProcessCluster, multi_process_lock};

const BIN: &str = env!("CARGO_BIN_EXE_meridian");
/// How long the cluster may take to replicate every range, and the logs to show every step.
const WAIT_MAX: Duration = Duration::from_secs(90);

/// The client's log, in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

/// Lines of `log` that mention the transaction `id` and every one of `words`.
fn lines_with<'a>(log: &'a str, id: &str, words: &[&str]) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(id) && words.iter().all(|w| l.contains(w))).collect()
}

#[test]
fn a_two_phase_commit_is_traced_by_its_id_at_the_client_the_coordinator_and_every_participant() {
    let _lock = multi_process_lock();
    let captured = Captured::default();
    let sink = captured.clone();
    tracing_subscriber::fmt()
        .with_env_filter("meridian_client=debug")
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .init();
    // SAFETY: the only test of this binary sets it before starting any thread that reads the
    // environment; the node processes inherit it (`--log` of `meridian start`).
    unsafe { std::env::set_var("MERIDIAN_LOG", "meridian_server=debug,info") };
    let cluster = ProcessCluster::start(BIN, 3, NodeArgs { no_rebalance: true, ..NodeArgs::default() })
        .expect("start the cluster");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let id = rt.block_on(async {
        let client =
            Arc::new(Client::connect(cluster.addrs()).await.expect("connect").with_deadline(Duration::from_secs(20)));
        client.split(b"m").await.expect("split at m");
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            let (descs, _, _) = client.cluster_view().await.expect("cluster view");
            if descs.len() >= 3 && descs.iter().all(|d| d.config.voters.len() == 3 && d.config.learners.is_empty()) {
                break;
            }
            if Instant::now() > deadline {
                cluster.dump_logs();
                panic!("ranges not replicated within {WAIT_MAX:?}: {descs:#?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Bounded retries: an attempt may be aborted by a leader change; each has a new id.
        for attempt in 0..5 {
            let mut txn = client.begin();
            let id = txn.id();
            txn.put(b"a/traced", b"1");
            txn.put(b"z/traced", b"2");
            match txn.commit().await {
                Ok(_) => return id,
                Err(e) if attempt < 4 => eprintln!("attempt {attempt} ({id}) failed, retrying: {e}"),
                Err(e) => panic!("the two-range transaction failed: {e}"),
            }
        }
        unreachable!("the loop returns or panics")
    });
    assert_eq!(id.len(), 32, "ids are 32 hex digits: {id}");

    // The client: one span per transaction, with the two-phase commit inside it.
    let client_log = captured.text();
    let span = format!("txn{{id={id}");
    assert!(
        !lines_with(&client_log, &span, &["two-phase commit: prepares and the coordinator's commit"]).is_empty(),
        "client log lacks the prepare step of {id}:\n{client_log}"
    );
    assert!(
        !lines_with(&client_log, &span, &["two-phase commit: committed"]).is_empty(),
        "client log lacks the commit of {id}:\n{client_log}"
    );

    // The nodes: poll (the participants resolve after the coordinator's commit wait).
    let deadline = Instant::now() + WAIT_MAX;
    let (logs, coordinator, participants) = loop {
        let logs: Vec<String> =
            cluster.nodes.iter().map(|n| std::fs::read_to_string(n.log_path()).unwrap_or_default()).collect();
        let served = |words: &[&str]| -> Vec<usize> {
            (0..logs.len()).filter(|i| !lines_with(&logs[*i], &span, words).is_empty()).collect()
        };
        let coordinator = served(&["op=coordinate", "answered: committed"]);
        let participants = served(&["op=prepare", "answered: prepared"]);
        let resolved = participants.iter().all(|i| {
            !lines_with(&logs[*i], &format!("txn_id={id}"), &["participant: resolve from the coordinator"]).is_empty()
        });
        let applied = logs.iter().all(|log| {
            ["participant: prepared", "coordinator: decided commit", "participant: resolved: committed"]
                .iter()
                .all(|step| !lines_with(log, &format!("txn_id={id}"), &[step]).is_empty())
        });
        if coordinator.len() == 1 && !participants.is_empty() && resolved && applied {
            break (logs, coordinator[0], participants);
        }
        if Instant::now() > deadline {
            cluster.dump_logs();
            panic!("the node logs never showed {id} coordinated by one node and resolved at its participants");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let core = format!("txn_id={id}");
    // The coordinator's leader logged its decision and sent it on.
    assert!(!lines_with(&logs[coordinator], &core, &["coordinator: proposing commit"]).is_empty());
    assert!(
        !lines_with(&logs[coordinator], &core, &["coordinator: sending the decision to the participants"]).is_empty()
    );
    // Each participant's leader prepared, then learnt the outcome from the coordinator.
    for p in &participants {
        assert!(!lines_with(&logs[*p], &core, &["participant: proposing prepare"]).is_empty(), "node {p}");
    }
    // Every node holds a replica of both ranges: every log shows the prepare record and the
    // decision applied, and the commit resolved at the participant.
    for (i, log) in logs.iter().enumerate() {
        for step in ["participant: prepared", "coordinator: decided commit", "participant: resolved: committed"] {
            assert!(!lines_with(log, &core, &[step]).is_empty(), "node {} log lacks `{step}` for {id}", i + 1);
        }
    }
}
