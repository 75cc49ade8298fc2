//! A node's HTTP endpoints (`meridian start --http-listen`): `/health`, `/health?ready=1`,
//! `/metrics`, `/status` and `/`, read by a plain HTTP client and by a real headless browser
//! (Debian's chromium, installed by `scripts/prereqs.sh`). One node process per test, or a
//! three-node cluster whose quorum is lost and regained; on loopback, killed when the test
//! ends; every wait is bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meridian_client::Client;
use meridian_tests::process::{NodeArgs, ProcessCluster, run_bounded, serial};

const BIN: &str = env!("CARGO_BIN_EXE_meridian");
/// How long the node may take to print its addresses.
const START_MAX: Duration = Duration::from_secs(60);
/// How long the node may take to become ready (elect itself, learn the meta range).
const READY_MAX: Duration = Duration::from_secs(60);
/// How long one HTTP request may take.
const REQUEST_MAX: Duration = Duration::from_secs(10);
/// How long chromium may take to load and dump the page.
const BROWSER_MAX: Duration = Duration::from_secs(90);

/// A single-node cluster serving HTTP; killed on drop.
struct HttpNode {
    child: Child,
    grpc: String,
    http: String,
    dir: tempfile::TempDir,
}

impl HttpNode {
    /// Starts a node on free loopback ports (port 0) and reads its addresses from its output.
    fn start() -> HttpNode {
        let dir = tempfile::tempdir().expect("temporary directory");
        let log = std::fs::File::create(dir.path().join("node.log")).expect("log file");
        let mut child = Command::new(BIN)
            .args(["start", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--replication", "1"])
            .args(["--lease-ms", "1000", "--epsilon-ms", "2", "--data-dir"])
            .arg(dir.path().join("data"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start meridian");
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + START_MAX;
        let (mut http, mut grpc) = (None, None);
        while grpc.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                let log = std::fs::read_to_string(dir.path().join("node.log")).unwrap_or_default();
                panic!("the node did not print its addresses within {START_MAX:?}; its log:\n{log}");
            };
            if let Some(rest) = line.strip_prefix("HTTP on http://") {
                http = rest.split('/').next().map(str::to_string);
            }
            if let Some((_, addr)) = line.split_once("listening on ") {
                grpc = Some(addr.trim().to_string());
            }
        }
        let http = http.expect("`meridian start --http-listen` prints `HTTP on http://ADDR/` before it listens");
        HttpNode { child, grpc: grpc.expect("loop ends with it"), http, dir }
    }

    fn get(&self, path: &str) -> (u16, String) {
        http_get(&self.http, path)
    }

    /// Polls `/health?ready=1` until it answers 200; every other answer must be 503 with a reason.
    fn wait_ready(&self) {
        let deadline = Instant::now() + READY_MAX;
        loop {
            let (code, body) = self.get("/health?ready=1");
            if code == 200 {
                assert_eq!(body, "ready\n");
                return;
            }
            assert_eq!(code, 503, "not ready must be 503, got {code}: {body}");
            assert!(body.starts_with("not ready: "), "a reason: {body:?}");
            assert!(Instant::now() < deadline, "not ready after {READY_MAX:?}: {body}\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("node.log")).unwrap_or_default()
    }
}

impl Drop for HttpNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 GET (one request per connection): status code and body.
fn http_get(addr: &str, path: &str) -> (u16, String) {
    let what = format!("GET http://{addr}{path}");
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{what}: {e}"));
    s.set_read_timeout(Some(REQUEST_MAX)).expect("set timeout");
    s.set_write_timeout(Some(REQUEST_MAX)).expect("set timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = String::from_utf8(raw).unwrap_or_else(|e| panic!("{what}: not UTF-8: {e}"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("{what}: no header end in {text:?}"));
    let code = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("{what}: {head:?}"));
    assert!(!head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{what}: chunked answers unexpected");
    (code, body.to_string())
}

/// The value of the series `name` (exact, including labels) in Prometheus text.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Each series' name and labels, in the order of the text (values left out: they change).
fn series_order(metrics: &str) -> Vec<&str> {
    metrics.lines().filter(|l| !l.is_empty()).map(|l| l.rsplit_once(' ').map_or(l, |(k, _)| k)).collect()
}

/// Checks that every family in Prometheus text has `# HELP` and `# TYPE` before its series.
fn check_help_and_type(metrics: &str) {
    let mut described = std::collections::BTreeSet::new();
    let mut typed = std::collections::BTreeMap::new();
    for l in metrics.lines() {
        if let Some(rest) = l.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().expect("a name");
            let help = rest.split_once(' ').map_or("", |(_, h)| h);
            assert!(!help.trim().is_empty(), "empty HELP for {name}");
            described.insert(name.to_string());
        } else if let Some(rest) = l.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("`# TYPE name kind`");
            typed.insert(name.to_string(), kind.to_string());
        } else if !l.is_empty() {
            let name = l.split(['{', ' ']).next().expect("a series name");
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| typed.get(*f).is_some_and(|k| k == "histogram")))
                .unwrap_or(name);
            assert!(typed.contains_key(family), "series {name} before (or without) its # TYPE:\n{metrics}");
            assert!(described.contains(family), "family {family} has no # HELP:\n{metrics}");
        }
    }
}

#[test]
fn health_metrics_and_status_over_http() {
    let _serial = serial();
    let node = HttpNode::start();
    let (code, body) = node.get("/health");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    node.wait_ready();

    // A few writes (one-range commits), a read-only transaction, and a transaction over two
    // ranges (two-phase commit), so the histograms have samples.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let status = rt.block_on(async {
        let connect = || async {
            Client::connect([node.grpc.clone()]).await.expect("connect").with_deadline(Duration::from_secs(20))
        };
        let client = connect().await;
        client.split(b"m").await.expect("split at m");
        // Wait until the meta range indexes both halves, so the client routes by them (this
        // test is not about routing).
        let deadline = Instant::now() + READY_MAX;
        while client.cluster_view().await.map_or(true, |(descs, _, _)| descs.len() < 3) {
            assert!(Instant::now() < deadline, "the split never reached the meta range");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let client = connect().await;
        for i in 0..5 {
            client.put(format!("k{i}").as_bytes(), b"v").await.expect("put");
        }
        client
            .read_write(|txn| {
                Box::pin(async move {
                    txn.put(b"a", b"1");
                    txn.put(b"z", b"2");
                    Ok(())
                })
            })
            .await
            .expect("a transaction over two ranges");
        let (v, _) =
            client.read_only(|ro| Box::pin(async move { ro.get(b"k1").await })).await.expect("read-only transaction");
        assert_eq!(v.as_deref(), Some(&b"v"[..]));
        client.node_status(&node.grpc).await.expect("node status")
    });
    // The node tells the cluster where its HTTP endpoints are.
    let me = status.nodes.iter().find(|n| n.id == status.node_id).expect("the node knows itself");
    assert_eq!(me.http_addr, node.http, "NodeInfo.http_addr");

    // Leases are renewed continually; on a loaded machine one may be between terms for a moment.
    let deadline = Instant::now() + READY_MAX;
    let metrics = loop {
        let (code, metrics) = node.get("/metrics");
        assert_eq!(code, 200, "{metrics}");
        if sample(&metrics, "meridian_leases_held") == Some(3.0) || Instant::now() > deadline {
            break metrics;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    for name in [
        "meridian_paxos_proposals_total",
        "meridian_storage_write_seconds_bucket{sync=\"true\",le=",
        "meridian_commit_wait_seconds_bucket",
        "meridian_txn_lock_waits_total",
        "meridian_txn_aborts_total{reason=\"wounded\"}",
        "meridian_txn_aborts_total{reason=\"client\"}",
        "meridian_txn_latency_seconds_bucket{kind=\"1pc\",le=",
        "meridian_txn_latency_seconds_bucket{kind=\"2pc\",le=",
        "meridian_ranges_led",
        "meridian_leases_held",
        "meridian_rocksdb_estimate_keys{cf=\"data\"}",
        "meridian_rocksdb_sst_files_bytes{cf=\"paxos\"}",
        "meridian_truetime_epsilon_seconds",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}:\n{metrics}");
    }
    let positive = |series: &str| {
        let v = sample(&metrics, series).unwrap_or_else(|| panic!("/metrics lacks the series {series}:\n{metrics}"));
        assert!(v > 0.0, "{series} is {v}, expected > 0");
    };
    positive("meridian_paxos_proposals_total");
    positive("meridian_storage_write_seconds_count{sync=\"true\"}");
    positive("meridian_commit_wait_seconds_count");
    positive("meridian_txn_latency_seconds_count{kind=\"1pc\"}");
    positive("meridian_txn_latency_seconds_count{kind=\"2pc\"}");
    positive("meridian_txn_latency_seconds_count{kind=\"read_only\"}");
    // The meta range and both halves of the split user range, all led here under leases.
    assert_eq!(sample(&metrics, "meridian_ranges_led"), Some(3.0), "{metrics}");
    assert_eq!(sample(&metrics, "meridian_leases_held"), Some(3.0), "{metrics}");

    // Issue 17: every family described and typed, in one order on every scrape, and the
    // read-only latency histogram sums real time.
    check_help_and_type(&metrics);
    let (_, again) = node.get("/metrics");
    assert_eq!(series_order(&metrics), series_order(&again), "two scrapes list the series in different orders");
    positive("meridian_txn_latency_seconds_sum{kind=\"read_only\"}");
    positive("meridian_txn_latency_seconds_sum{kind=\"1pc\"}");
    assert_eq!(sample(&metrics, "meridian_node_ready"), Some(1.0), "{metrics}");

    let (code, page) = node.get("/status");
    assert_eq!(code, 200, "{page}");
    assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
    assert!(page.contains("<meta http-equiv=\"refresh\""), "the page reloads itself: {page}");
    assert!(page.contains("<p id=\"readiness\" class=\"ready\">"), "{page}");
    let (code, root) = node.get("/");
    assert_eq!(code, 200, "/ serves the status page: {root}");
    assert!(root.contains("<table id=\"ranges\">"), "{root}");
    assert!(page.contains("<table id=\"ranges\">"), "{page}");
    for g in &status.groups {
        let id = meridian_shard::GroupId(g.range.as_ref().expect("range").id).to_string();
        assert!(page.contains(&format!("id=\"range-{id}\"")), "no row for range {id}:\n{page}");
    }
    assert_eq!(page.matches("<tr class=\"leader\"").count(), 3, "{page}");
    assert!(page.contains(&status.cluster_id), "the page names the cluster");

    let (code, _) = node.get("/nothing-here");
    assert_eq!(code, 404);
}

/// `chromium`, or a failure saying how to get it: the browser check must not pass by skipping.
fn chromium() -> &'static str {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| Path::new(&p).join("chromium").is_file()));
    assert!(
        found,
        "chromium is not installed, so the status page cannot be checked in a browser. Run \
         scripts/prereqs.sh as root (it installs Debian's chromium), or: sudo apt-get install -y chromium"
    );
    "chromium"
}

/// The DOM of `url` as headless chromium parsed it.
fn dump_dom(browser: &str, url: &str) -> String {
    let profile = tempfile::tempdir().expect("browser profile directory");
    let mut cmd = Command::new(browser);
    cmd.args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(url);
    let out = run_bounded(cmd, "", BROWSER_MAX);
    assert_eq!(out.code, Some(0), "chromium failed; its stderr:\n{}", out.stderr);
    out.stdout
}

#[test]
fn status_page_renders_in_headless_chromium() {
    let browser = chromium();
    let _serial = serial();
    let node = HttpNode::start();
    node.wait_ready();
    let dom = dump_dom(browser, &format!("http://{}/status", node.http));
    // The DOM as the browser parsed it (it adds the implicit elements a parser adds).
    assert!(dom.contains("<table id=\"ranges\">"), "no range table in the DOM:\n{dom}");
    assert!(dom.contains("<tbody>"), "{dom}");
    assert!(dom.contains("id=\"range-r0\""), "no row for the meta range:\n{dom}");
    assert!(dom.contains("<td>Leader</td>"), "{dom}");
}

/// How long `meridian status` may take against a cluster without a quorum (it first tries the
/// meta range until the client's deadline, then shows the node's own view).
const STATUS_CLI_MAX: Duration = Duration::from_secs(120);
/// How long the survivor may take to say it is not ready after two of three nodes die (1 s
/// leases here; a kill is seen at the next node heartbeat, within a second or two).
const NOT_READY_MAX: Duration = Duration::from_secs(30);

/// Polls `/health?ready=1` on `http` until `want` says yes, for at most `limit`; returns the
/// last answer and how long it took.
fn poll_ready(http: &str, limit: Duration, want: impl Fn(u16, &str) -> bool) -> ((u16, String), Duration) {
    let start = Instant::now();
    loop {
        let (code, body) = http_get(http, "/health?ready=1");
        if want(code, &body) {
            return ((code, body), start.elapsed());
        }
        assert!(start.elapsed() < limit, "no wanted readiness answer within {limit:?}; last: {code} {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Issue 17, items 2, 3 and 5: with two of three nodes killed the survivor's readiness turns
/// 503 and names every range; `/status` (plain and in a browser) shows the dead nodes down and
/// every range red without a leader; `meridian status` says the same; a request names the range
/// and how many of its replicas answer. With the nodes back, readiness returns to 200.
#[test]
fn readiness_and_status_follow_a_lost_quorum() {
    let browser = chromium();
    let _serial = serial();
    let mut cluster = ProcessCluster::start(BIN, 3, NodeArgs { http: true, ..NodeArgs::default() }).expect("start");
    let http: Vec<String> = cluster.nodes.iter().map(|n| n.http_addr.clone().expect("--http-listen")).collect();
    // Ready, fully replicated (no under-replication warning), on every node.
    for h in &http {
        poll_ready(h, READY_MAX * 2, |code, body| code == 200 && body == "ready\n");
    }
    let (_, page) = http_get(&http[0], "/status");
    assert!(!page.contains("class=\"unservable\"") && !page.contains("class=\"down\""), "{page}");

    cluster.kill(1);
    cluster.kill(2);
    let ((code, body), took) = poll_ready(&http[0], NOT_READY_MAX, |code, _| code == 503);
    eprintln!("readiness turned 503 {took:?} after two of three nodes were killed (1 s leases)");
    assert_eq!(code, 503);
    let mut lines = body.lines();
    let first = lines.next().expect("a first line");
    assert!(first.starts_with("not ready: ") && first.contains("hosted ranges cannot be served from here: "), "{body}");
    let ranges: Vec<&str> = lines.clone().filter(|l| l.starts_with("range ")).collect();
    assert!(!ranges.is_empty(), "the ranges it cannot serve are named:\n{body}");
    // Once both kills are seen, every range is named with its reachable replicas.
    let ((_, body), _) = poll_ready(&http[0], NOT_READY_MAX, |code, body| {
        code == 503
            && body.contains("lost their quorum")
            && body
                .lines()
                .filter(|l| l.starts_with("range "))
                .all(|l| l.ends_with("1 of 3 replicas reachable from node n1"))
    });
    let named = body.lines().filter(|l| l.starts_with("range ")).count();
    assert!(body.lines().next().expect("first line").contains(&format!("{named} of {named} hosted ranges")), "{body}");

    // The status page: both dead nodes down, every range red, no leader named.
    let (code, page) = http_get(&http[0], "/status");
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("<p id=\"readiness\" class=\"not-ready\">NOT READY: "), "{page}");
    for id in ["n2", "n3"] {
        assert!(page.contains(&format!("<tr class=\"down\" id=\"node-{id}\">")), "{id} not shown down:\n{page}");
    }
    let rows: Vec<&str> = page.lines().filter(|l| l.starts_with("<tr class=") && l.contains("id=\"range-")).collect();
    assert_eq!(rows.len(), named, "{page}");
    for row in &rows {
        assert!(row.starts_with("<tr class=\"unservable\""), "a range still shown servable: {row}");
        assert!(!row.contains("<td>n2</td>") && !row.contains("<td>n3</td>"), "a dead node named as leader: {row}");
    }
    let dom = dump_dom(browser, &format!("http://{}/", http[0]));
    assert!(
        dom.contains("class=\"unservable\"") && dom.contains("class=\"down\""),
        "no red markers in the DOM:\n{dom}"
    );
    assert!(dom.contains("NOT READY"), "{dom}");

    // `meridian status` falls back to the node's own view and says the same.
    let mut cmd = Command::new(BIN);
    cmd.args(["status", "--addr", cluster.nodes[0].addr.as_str()]);
    let out = run_bounded(cmd, "", STATUS_CLI_MAX);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains("NOT READY: ") && text.contains("CANNOT SERVE: ") && text.contains("DOWN (unreachable"),
        "{text}"
    );

    // A request names the range and how many of its replicas answer (not a dead leader).
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let err = rt.block_on(async {
        use meridian_proto::v1 as pb;
        let mut kv =
            pb::kv_client::KvClient::connect(format!("http://{}", cluster.nodes[0].addr)).await.expect("connect");
        let r = kv.get(pb::GetRequest { key: b"somekey".to_vec() }).await.expect("an answer").into_inner();
        r.error.expect("an error without a quorum")
    });
    assert_eq!(err.kind, meridian_proto::v1::error::Kind::Unavailable as i32, "{err:?}");
    assert_eq!((err.replicas, err.replicas_reachable), (Some(3), Some(1)), "{err:?}");
    assert!(err.group != 0 && err.message.ends_with("1 of 3 replicas reachable from node n1"), "{err:?}");

    cluster.restart(1).expect("restart n2");
    cluster.restart(2).expect("restart n3");
    let (_, took) = poll_ready(&http[0], READY_MAX * 2, |code, _| code == 200);
    eprintln!("readiness returned to 200 {took:?} after both nodes restarted");
    let (_, page) = http_get(&http[0], "/status");
    assert!(page.contains("<p id=\"readiness\" class=\"ready\">"), "{page}");
}
