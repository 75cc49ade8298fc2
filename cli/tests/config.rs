//! `meridian start` configuration: a TOML file, `MERIDIAN_*` variables and flags (flag > env >
//! file > default), and the checks made at start. Each test runs the real binary, bounded in
//! time, with a clean environment (no `MERIDIAN_*` variables inherited from the caller).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meridian_tests::process::{Output, free_port, listening_line, run_bounded};

const BIN: &str = env!("CARGO_BIN_EXE_meridian");
/// Every command here either prints and exits or fails its checks at once; a node start
/// (one test) prints its listening line within this too.
const COMMAND_MAX: Duration = Duration::from_secs(60);

/// `meridian start ARGS` with only `env` in its environment.
fn start(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("start").args(args).env_clear().envs(env.iter().copied());
    run_bounded(cmd, "", COMMAND_MAX)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write the config file");
    p.to_str().expect("utf-8 temp path").to_string()
}

/// The line of `--print-config` output for `key`.
fn line<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(&format!("{key} =")))
        .unwrap_or_else(|| panic!("no `{key}` in the effective configuration:\n{out}"))
}

#[test]
fn a_flag_beats_the_environment_which_beats_the_file_which_beats_the_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let file = write(
        dir.path(),
        "meridian.toml",
        &format!(
            "# a node\ndata-dir = \"{}\"\nepsilon-ms = 7\nlease-ms = 3000\nreplication = 2\njoin = [\"10.0.0.1:7000\", \"10.0.0.2:7000\"]\nno-rebalance = true\n",
            data.display()
        ),
    );
    let out = start(
        &["--config", &file, "--replication", "5", "--print-config"],
        &[("MERIDIAN_LEASE_MS", "4000"), ("MERIDIAN_REPLICATION", "1")],
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    let text = &out.stdout;
    assert_eq!(line(text, "replication"), "replication = 5  # flag, MERIDIAN_REPLICATION", "{text}");
    assert_eq!(line(text, "lease-ms"), "lease-ms = 4000  # env, MERIDIAN_LEASE_MS", "{text}");
    assert_eq!(line(text, "epsilon-ms"), "epsilon-ms = 7  # file, MERIDIAN_EPSILON_MS", "{text}");
    assert_eq!(line(text, "data-dir"), format!("data-dir = \"{}\"  # file, MERIDIAN_DATA_DIR", data.display()));
    assert_eq!(line(text, "join"), "join = [\"10.0.0.1:7000\", \"10.0.0.2:7000\"]  # file, MERIDIAN_JOIN");
    assert_eq!(line(text, "no-rebalance"), "no-rebalance = true  # file, MERIDIAN_NO_REBALANCE");
    assert_eq!(line(text, "listen"), "listen = \"127.0.0.1:7000\"  # default, MERIDIAN_LISTEN");
    // The configuration file is found through MERIDIAN_CONFIG as well.
    let out = start(&["--print-config"], &[("MERIDIAN_CONFIG", &file)]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(line(&out.stdout, "lease-ms"), "lease-ms = 3000  # file, MERIDIAN_LEASE_MS");
    // Nothing was started: the data directory was not created.
    assert!(!data.exists(), "--print-config must not touch the data directory");
}

#[test]
fn a_node_started_from_a_file_listens_where_the_environment_says() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (file_port, env_port) = (free_port(), free_port());
    let file = write(
        dir.path(),
        "node.toml",
        &format!(
            "data-dir = \"{}\"\nlisten = \"127.0.0.1:{file_port}\"\nlease-ms = 1000\nepsilon-ms = 2\n",
            dir.path().join("data").display()
        ),
    );
    let log = std::fs::File::create(dir.path().join("node.log")).expect("log file");
    let mut child = Command::new(BIN)
        .args(["start", "--config", &file])
        .env_clear()
        .env("MERIDIAN_LISTEN", format!("127.0.0.1:{env_port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn meridian start");
    let got = listening_line(&mut child).recv_timeout(COMMAND_MAX);
    let _ = child.kill();
    let _ = child.wait();
    let l = got.unwrap_or_else(|_| {
        panic!("no listening line; log:\n{}", std::fs::read_to_string(dir.path().join("node.log")).unwrap_or_default())
    });
    assert!(l.ends_with(&format!("listening on 127.0.0.1:{env_port}")), "env must beat the file: {l}");
}

#[test]
fn an_unknown_key_is_refused_naming_the_key_the_file_and_the_nearest_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "bad.toml", "data-dir = \"/tmp/x\"\nepsilon_ms = 4\n");
    let out = start(&["--config", &file], &[]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains(&format!("config {file}, line 2: unknown key `epsilon_ms`")), "{}", out.stderr);
    assert!(out.stderr.contains("did you mean `epsilon-ms`?"), "{}", out.stderr);
    // Settings about the configuration itself are not keys.
    let file = write(dir.path(), "self.toml", "config = \"other.toml\"\n");
    let out = start(&["--config", &file, "--data-dir", "/tmp/x"], &[]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("unknown key `config`"), "{}", out.stderr);
}

#[test]
fn a_value_of_the_wrong_type_or_syntax_is_refused_with_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "type.toml", "data-dir = \"/tmp/x\"\n\nepsilon-ms = \"four\"\n");
    let out = start(&["--config", &file], &[]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains(&format!("config {file}, line 3: key `epsilon-ms`: expected an integer, found a string")),
        "{}",
        out.stderr
    );
    let file = write(dir.path(), "addr.toml", "listen = \"nowhere\"\n");
    let out = start(&["--config", &file], &[]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("key `listen`: invalid value \"nowhere\""), "{}", out.stderr);
    let file = write(dir.path(), "syntax.toml", "data-dir = \"/tmp/x\"\nlease-ms = 1000\nepsilon-ms = = 4\n");
    let out = start(&["--config", &file], &[]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains(&format!("config {file}: TOML parse error at line 3")), "{}", out.stderr);
}

#[test]
fn epsilon_too_large_for_the_lease_is_refused_from_flags_and_from_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8");
    let out = start(&["--data-dir", data, "--epsilon-ms", "500", "--lease-ms", "1000"], &[]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("ε (500 ms, --epsilon-ms) must be well below the lease (1000 ms"), "{}", out.stderr);
    let file = write(dir.path(), "eps.toml", "epsilon-ms = 300\nlease-ms = 1000\n");
    let out = start(&["--data-dir", data, "--config", &file], &[]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("ε (300 ms"), "{}", out.stderr);
    assert!(!Path::new(data).exists(), "a refused configuration must not create the data directory");
}

#[test]
fn an_unreachable_join_address_is_refused_quickly_before_the_data_dir_is_made() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let addr = format!("127.0.0.1:{}", free_port()); // bound then released: nobody listens
    let began = Instant::now();
    let out = start(&["--data-dir", data.to_str().expect("utf-8"), "--join", &addr], &[]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("cannot reach join address {addr}: connection refused — is a node running there?")),
        "{}",
        out.stderr
    );
    assert!(!data.exists(), "the data directory must not be created for a node that cannot join");
    // Not a speed assertion: without the check, `start` retries joining for 60 s.
    eprintln!("refused after {:?}", began.elapsed());
}

#[test]
fn a_listen_address_in_use_and_an_unusable_data_dir_are_refused_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("bound").to_string();
    let data = dir.path().join("data");
    let out = start(&["--data-dir", data.to_str().expect("utf-8"), "--listen", &addr], &[]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains(&format!("--listen {addr}: the address is already in use")), "{}", out.stderr);
    // A data directory under a regular file cannot be created.
    let blocker = write(dir.path(), "a-file", "");
    let out = start(&["--data-dir", &format!("{blocker}/data")], &[]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains(&format!("data directory {blocker}/data: cannot create it")), "{}", out.stderr);
}

/// Issue 17: a second `start` on a running node's data directory stops at once, naming the
/// directory and the process that uses it, not with RocksDB's raw lock error (printed twice).
#[test]
fn a_data_directory_in_use_is_refused_naming_the_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data_s = data.to_str().expect("utf-8 temp path");
    let log = std::fs::File::create(dir.path().join("node.log")).expect("log file");
    let mut first = Command::new(BIN)
        .args(["start", "--data-dir", data_s, "--listen", "127.0.0.1:0", "--replication", "1"])
        .args(["--lease-ms", "1000", "--epsilon-ms", "2"])
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn meridian start");
    let got = listening_line(&mut first).recv_timeout(COMMAND_MAX);
    let pid = first.id();
    let out = start(&["--data-dir", data_s, "--listen", "127.0.0.1:0"], &[]);
    let _ = first.kill();
    let _ = first.wait();
    got.unwrap_or_else(|_| {
        panic!("no listening line; log:\n{}", std::fs::read_to_string(dir.path().join("node.log")).unwrap_or_default())
    });
    assert_eq!(out.code, Some(1), "{out:?}");
    let want = format!("data directory {data_s} is in use by another meridian process (pid {pid})");
    assert_eq!(out.stderr.matches(&want).count(), 1, "said once: {}", out.stderr);
    assert!(!out.stderr.to_lowercase().contains("lock"), "no raw lock error: {}", out.stderr);
}
