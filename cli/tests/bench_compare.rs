//! `meridian bench compare …` without PostgreSQL or etcd: the etcd driver pointed at a port where
//! nothing listens fails at once saying what to do, and the report reads the systems' JSON and
//! prints the ratios against issue 8's targets. (`bench/compare` itself needs both servers and
//! is run by hand; see BENCHMARKS.md.)

use std::process::Command;
use std::time::Duration;

use meridian_tests::process::run_bounded;

const BIN: &str = env!("CARGO_BIN_EXE_meridian");
/// Longest one command may take (the etcd connect timeout is 3 s).
const RUN_MAX: Duration = Duration::from_secs(30);

#[test]
fn etcd_driver_without_etcd_says_what_to_do() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind").port();
    let ep = format!("http://127.0.0.1:{port}");
    let mut cmd = Command::new(BIN);
    cmd.args(["bench", "compare", "etcd", "--endpoints", &ep, "--concurrency", "1", "--seconds", "1"]);
    let out = run_bounded(cmd, "", RUN_MAX);
    assert_eq!(out.code, Some(1), "stdout: {}\nstderr: {}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(&format!("cannot reach etcd at {ep}")) && out.stderr.contains("--endpoints"),
        "stderr: {}",
        out.stderr
    );
}

#[test]
fn report_prints_every_row_and_the_ratios_at_each_best() {
    let dir = tempfile::tempdir().expect("tempdir");
    let series = |rows: &[(usize, f64)]| {
        let rows: Vec<String> = rows
            .iter()
            .map(|(c, t)| {
                format!(
                    r#"{{"concurrency":{c},"ops_per_sec":{t},"aborts":1,"failed":0,
                    "latency":{{"p50_us":1500.0,"p99_us":9000.0,"mean_us":2000.0}}}}"#
                )
            })
            .collect();
        format!(r#"{{"rows":[{}]}}"#, rows.join(","))
    };
    let write = |name: &str, json: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, json).expect("write");
        p.to_str().expect("utf-8 path").to_string()
    };
    let m = write("m.json", series(&[(1, 300.0), (8, 1200.0)]));
    let p = write("p.json", series(&[(1, 1000.0), (8, 2000.0)]));
    let e = write("e.json", series(&[(1, 100.0), (8, 250.0)]));
    let all = dir.path().join("all.json");
    let mut cmd = Command::new(BIN);
    cmd.args(["bench", "compare", "report", "--meridian", &m, "--postgres", &p, "--etcd", &e, "--json"]).arg(&all);
    let out = run_bounded(cmd, "", RUN_MAX);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert!(out.stdout.contains("| PostgreSQL | 8 | 2000 | 1.50 | 9.00 | 1 | 0 |"), "stdout: {}", out.stdout);
    assert!(
        out.stdout.contains("| PostgreSQL | 8 | 2000 | 1.50 | 9.00 | 0.60× | ≥ 0.5×: met |"),
        "stdout: {}",
        out.stdout
    );
    assert!(out.stdout.contains("| etcd | 8 | 250 | 1.50 | 9.00 | 4.80× | ≥ 4×: met |"), "stdout: {}", out.stdout);
    assert!(std::fs::read_to_string(&all).expect("report JSON written").contains("\"meridian_ratio\""));
}
