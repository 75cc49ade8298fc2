//! Security (issue 9), with the real binary: certificates from `meridian cert`, a three-node
//! cluster with mutual TLS between nodes and a client token, refusals of every missing or wrong
//! credential, a node with a certificate from another CA that cannot join, `psql` over TLS with
//! a SCRAM password, and logs (at trace level) that never show a secret.
//!
//! Every wait is bounded; every process is killed when the test ends.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meridian_client::{Client, ClientError, ClientOptions, ClientTls};
use meridian_proto::auth::Secret;
use meridian_proto::v1 as pb;
use meridian_tests::process::{free_port, listening_line, rt, run_bounded, run_client, serial};

const BIN: &str = env!("CARGO_BIN_EXE_meridian");
/// How long a node may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a node with another CA's certificate may keep trying to join (it gives up after a
/// few rounds refused at the handshake; before, it tried for 60 s).
const EVIL_EXIT_MAX: Duration = Duration::from_secs(30);
/// Longest a CLI command or psql may run.
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `meridian ARGS`, bounded; (success, stdout + stderr).
fn cli(args: &[&str]) -> (bool, String) {
    cli_env(args, &[])
}

/// [`cli`] with environment variables `env`; no credentials or addresses come from the
/// test's own environment.
fn cli_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    run_client(BIN.as_ref(), args, env, TOOL_TIMEOUT)
}

/// One node process; killed on drop.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Starts `meridian start` with `args` in `data_dir`; waits for its listening line if `wait`.
fn start(data_dir: &Path, args: &[String], wait: bool) -> Proc {
    std::fs::create_dir_all(data_dir).expect("data dir");
    let log = data_dir.join("node.log");
    let log_file = std::fs::File::create(&log).expect("log file");
    let mut child = Command::new(BIN)
        .arg("start")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--lease-ms", "1000", "--epsilon-ms", "2"])
        .args(args)
        .env("RUST_LOG", "trace")
        .env_remove("MERIDIAN_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .spawn()
        .expect("spawn meridian start");
    let rx = listening_line(&mut child);
    let p = Proc { child, log };
    if wait {
        assert!(
            rx.recv_timeout(START_TIMEOUT).is_ok(),
            "node in {} did not start within {START_TIMEOUT:?}; its log ends:\n{}",
            data_dir.display(),
            tail(&p.log())
        );
    }
    p
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn ca_tls(dir: &Path) -> ClientTls {
    ClientTls::new(std::fs::read(dir.join("ca.crt")).expect("ca.crt"))
}

/// Fails the test unless `tool` runs: a skipped check must not look like a passed one.
fn require(tool: &str) {
    let found = Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(
        matches!(found, Ok(s) if s.success()),
        "`{tool}` is not installed: run `scripts/prereqs.sh test` (or `apt-get install postgresql-client`)"
    );
}

fn psql(pg_addr: &str, conninfo: &str, password: &str, sql: &str) -> (bool, String) {
    let (host, port) = pg_addr.rsplit_once(':').expect("host:port");
    let mut cmd = Command::new("psql");
    cmd.args(["-X", "-At", "-d"])
        .arg(format!("{conninfo} host={host} port={port} user=alice dbname=meridian"))
        .args(["-c", sql])
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PGPASSWORD", password)
        .env_remove("PGSERVICE")
        .env_remove("PGSSLMODE");
    let out = run_bounded(cmd, "", TOOL_TIMEOUT);
    (out.code == Some(0), format!("{}{}", out.stdout, out.stderr))
}

#[test]
fn cert_command_writes_private_keys_and_refuses_to_overwrite() {
    let d = tempfile::tempdir().expect("tmp");
    let dir = d.path().to_str().expect("utf-8 path");
    assert!(cli(&["cert", "create-ca", "--dir", dir]).0);
    let (ok, out) = cli(&["cert", "node", "--dir", dir, "--name", "n1", "--host", "127.0.0.1", "--host", "localhost"]);
    assert!(ok, "{out}");
    assert!(cli(&["cert", "client", "--dir", dir, "--name", "alice"]).0);
    for f in ["ca.crt", "ca.key", "node.n1.crt", "node.n1.key", "client.alice.crt", "client.alice.key"] {
        assert!(d.path().join(f).exists(), "{f} missing");
    }
    #[cfg(unix)]
    for f in ["ca.key", "node.n1.key", "client.alice.key"] {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(d.path().join(f)).expect("key").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f} must be private");
    }
    let (ok, out) = cli(&["cert", "create-ca", "--dir", dir]);
    assert!(!ok && out.contains("--overwrite"), "a second CA must not replace the first: {out}");
    assert!(cli(&["cert", "create-ca", "--dir", dir, "--overwrite"]).0);
}

#[test]
fn a_secure_cluster_refuses_missing_credentials_and_foreign_nodes() {
    // Before any cluster starts: the psql checks below are part of this test.
    require("psql");
    let _serial = serial();
    let root = tempfile::tempdir().expect("tmp");
    let certs = root.path().join("certs");
    let foreign = root.path().join("foreign");
    let certs_s = certs.to_str().expect("utf-8").to_string();
    let foreign_s = foreign.to_str().expect("utf-8").to_string();
    assert!(cli(&["cert", "create-ca", "--dir", &certs_s]).0);
    for n in ["n1", "n2", "n3"] {
        let (ok, out) =
            cli(&["cert", "node", "--dir", &certs_s, "--name", n, "--host", "127.0.0.1", "--host", "localhost"]);
        assert!(ok, "{out}");
    }
    assert!(cli(&["cert", "client", "--dir", &certs_s, "--name", "alice"]).0);
    assert!(cli(&["cert", "create-ca", "--dir", &foreign_s]).0);
    assert!(cli(&["cert", "node", "--dir", &foreign_s, "--name", "evil", "--host", "127.0.0.1"]).0);

    // Secrets unlikely to appear anywhere by chance.
    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos();
    let token = format!("tok{nonce:x}Q7");
    let password = format!("pw{nonce:x}Z3");
    let token_file = root.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).expect("token file");
    let pw_file = root.path().join("pg-passwords");
    std::fs::write(&pw_file, format!("alice:{password}\n")).expect("password file");
    let token_file_s = token_file.to_str().expect("utf-8").to_string();

    let addrs: Vec<String> = (0..3).map(|_| format!("127.0.0.1:{}", free_port())).collect();
    let pg_addr = format!("127.0.0.1:{}", free_port());
    let node_args = |i: usize| -> Vec<String> {
        let mut a = vec![
            "--listen".into(),
            addrs[i].clone(),
            "--certs-dir".into(),
            certs_s.clone(),
            "--cert-name".into(),
            format!("n{}", i + 1),
            "--token-file".into(),
            token_file_s.clone(),
        ];
        if i == 0 {
            a.extend([
                "--pg-listen".into(),
                pg_addr.clone(),
                "--pg-password-file".into(),
                pw_file.display().to_string(),
            ]);
        } else {
            a.extend(["--join".into(), addrs[0].clone()]);
        }
        a
    };
    let mut nodes = vec![start(&root.path().join("node1"), &node_args(0), true)];
    for i in 1..3 {
        nodes.push(start(&root.path().join(format!("node{}", i + 1)), &node_args(i), true));
    }
    let rt = rt();
    let secure = ClientOptions { tls: Some(ca_tls(&certs)), token: Some(Secret::new(token.clone())) };
    rt.block_on(async {
        // With the token: the cluster forms (three nodes joined over mTLS) and serves.
        let client = Client::connect_with(addrs.clone(), secure.clone())
            .await
            .expect("a client with the CA and the token connects")
            .with_deadline(Duration::from_secs(20));
        client.put(b"sec/k", b"v1").await.expect("put with the token");
        assert_eq!(client.get(b"sec/k").await.expect("get").0.as_deref(), Some(&b"v1"[..]));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, known, _) = client.cluster_view().await.expect("cluster view");
            if known.len() == 3 {
                break;
            }
            assert!(Instant::now() < deadline, "three nodes never joined over mTLS: {known:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // TLS but no token, and a wrong token: refused at once, saying why.
        let no_token = ClientOptions { tls: Some(ca_tls(&certs)), token: None };
        match Client::connect_with(addrs.clone(), no_token).await {
            Err(ClientError::Unauthenticated(m)) => assert!(m.contains("token"), "{m}"),
            Err(e) => panic!("a client without a token must be refused as unauthenticated, got {e}"),
            Ok(_) => panic!("a client without a token was let in"),
        }
        let wrong = ClientOptions { tls: Some(ca_tls(&certs)), token: Some(Secret::new("not-the-token".into())) };
        match Client::connect_with(addrs.clone(), wrong).await {
            Err(ClientError::Unauthenticated(m)) => assert!(m.contains("invalid token"), "{m}"),
            Err(e) => panic!("a wrong token must be refused as unauthenticated, got {e}"),
            Ok(_) => panic!("a client with a wrong token was let in"),
        }
        // A client certificate of the cluster CA is a credential too.
        let alice = ClientOptions {
            tls: Some(ca_tls(&certs).with_identity(
                std::fs::read(certs.join("client.alice.crt")).expect("crt"),
                Secret::new(std::fs::read(certs.join("client.alice.key")).expect("key")),
            )),
            token: None,
        };
        let c = Client::connect_with(addrs.clone(), alice).await.expect("a client certificate is a credential");
        assert_eq!(c.get(b"sec/k").await.expect("get with a client certificate").0.as_deref(), Some(&b"v1"[..]));

        // Plaintext to a TLS port: no answer over HTTP/2 without TLS.
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", addrs[0]))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .connect_lazy();
        let plain = pb::kv_client::KvClient::new(ch)
            .lookup_range(pb::LookupRangeRequest { key: b"sec/k".to_vec(), limit: 1 })
            .await;
        assert!(plain.is_err(), "a plaintext client must not be served by a TLS node: {plain:?}");
        // A client certificate from another CA fails the handshake.
        let evil_ch = tonic::transport::Endpoint::from_shared(format!("https://{}", addrs[0]))
            .expect("endpoint")
            .tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(
                        std::fs::read(certs.join("ca.crt")).expect("ca"),
                    ))
                    .identity(tonic::transport::Identity::from_pem(
                        std::fs::read(foreign.join("node.evil.crt")).expect("crt"),
                        std::fs::read(foreign.join("node.evil.key")).expect("key"),
                    )),
            )
            .expect("tls config")
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .connect_lazy();
        let r = pb::node_client::NodeClient::new(evil_ch).ping(pb::PingRequest { from: None }).await;
        assert!(r.is_err(), "a certificate of another CA must be refused: {r:?}");
        // A client trusting another CA is refused at the handshake, and told so at once (not
        // after its deadline of retries): the cluster's CA has a subject of its own, so the
        // chain names an issuer the client does not know.
        let foreign_ca = ClientOptions { tls: Some(ca_tls(&foreign)), token: Some(Secret::new(token.clone())) };
        match Client::connect_with(addrs.clone(), foreign_ca).await {
            Err(ClientError::Unauthenticated(m)) => {
                assert!(m.contains("UnknownIssuer") && m.contains("CA"), "names the problem and the fix: {m}")
            }
            Err(e) => panic!("a client trusting another CA must be refused at the handshake, got {e}"),
            Ok(_) => panic!("a client trusting another CA connected"),
        }
    });

    // The CLI, with and without the token.
    let (ok, out) =
        cli(&["kv", "--addr", &addrs[1], "--certs-dir", &certs_s, "--token-file", &token_file_s, "get", "sec/k"]);
    assert!(ok && out.contains("v1"), "kv get with the token: {out}");
    let (ok, out) = cli(&["kv", "--addr", &addrs[1], "--certs-dir", &certs_s, "get", "sec/k"]);
    assert!(!ok && out.contains("not authenticated"), "kv get without the token must fail clearly: {out}");
    readme_kv_put_works(&addrs[1], &certs_s, &token_file_s);
    grpc_commands_take_credentials(root.path(), &certs_s, &token_file_s, &addrs[2]);
    sql_takes_tls_and_a_password(root.path(), &certs, &foreign, &pg_addr, &password);

    // A node with a certificate of another CA cannot join: its join fails naming the TLS
    // problem, and the cluster keeps serving its three nodes.
    let evil_addr = format!("127.0.0.1:{}", free_port());
    let evil = start(
        &root.path().join("evil"),
        &[
            "--listen".into(),
            evil_addr,
            "--certs-dir".into(),
            foreign_s.clone(),
            "--token-file".into(),
            token_file_s.clone(),
            "--join".into(),
            addrs[0].clone(),
        ],
        false,
    );
    // It gives up (certificates do not change while it waits) and exits saying why.
    let mut evil = evil;
    let deadline = Instant::now() + EVIL_EXIT_MAX;
    let status = loop {
        if let Some(status) = evil.child.try_wait().expect("wait for the foreign node") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the foreign node still tries to join after {EVIL_EXIT_MAX:?}:\n{}",
            tail(&evil.log())
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let log = evil.log();
    assert!(!status.success(), "the foreign node must fail to start:\n{}", tail(&log));
    assert!(
        log.contains("cannot join") && log.contains("UnknownIssuer") && log.contains("cluster's CA"),
        "the foreign node must say why it cannot join:\n{}",
        tail(&log)
    );
    // And the cluster says it refused a handshake, from where and why.
    let refused = nodes[0].log();
    assert!(
        refused.lines().any(|l| l.contains("refused a TLS handshake from 127.0.0.1:")),
        "the cluster must log the refused handshake:\n{}",
        tail(&refused)
    );
    drop(evil);
    rt.block_on(async {
        let client = Client::connect_with(addrs.clone(), secure.clone()).await.expect("still serving");
        let (_, known, _) = client.cluster_view().await.expect("cluster view");
        assert_eq!(known.len(), 3, "the foreign node must not be a member: {known:?}");
        client.put(b"sec/k2", b"v2").await.expect("the cluster keeps serving");
    });

    // psql over TLS with a SCRAM password; a wrong password is refused (28P01); plaintext is
    // refused too.
    let verify = format!("sslmode=verify-full sslrootcert={}", certs.join("ca.crt").display());
    let localhost = pg_addr.replace("127.0.0.1", "localhost");
    let (ok, out) = psql(&localhost, &verify, &password, "SELECT 1");
    assert!(ok && out.trim() == "1", "psql verify-full with the password: {out}");
    let (ok, out) = psql(&pg_addr, "sslmode=require", &password, "SELECT 1");
    assert!(ok && out.trim() == "1", "psql sslmode=require with the password: {out}");
    let (ok, out) = psql(&pg_addr, "sslmode=require", "wrong-password", "SELECT 1");
    assert!(
        !ok && out.contains("password authentication failed for user \"alice\""),
        "a wrong password must be refused: {out}"
    );
    let (ok, out) = psql(&pg_addr, "sslmode=disable", &password, "SELECT 1");
    assert!(!ok && out.contains("requires TLS"), "plaintext must be refused: {out}");

    // Nothing logged, at trace level, shows the token or the password; and every node said
    // nothing about running insecurely.
    for (i, n) in nodes.iter().enumerate() {
        let log = n.log();
        assert!(log.len() > 1_000, "node {} logged almost nothing: is RUST_LOG=trace on?", i + 1);
        assert!(!log.contains(&token), "node {}'s log shows the token", i + 1);
        assert!(!log.contains(&password), "node {}'s log shows the PostgreSQL password", i + 1);
        assert!(!log.contains("TLS is off"), "node {} warned it runs without TLS", i + 1);
    }
}

/// The README's own `meridian kv put` line for a secured cluster, run as written (its address,
/// directory and file names replaced by this cluster's).
fn readme_kv_put_works(addr: &str, certs: &str, token_file: &str) {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).expect("README.md");
    let line = readme
        .lines()
        .find(|l| l.starts_with("meridian kv put --addr") && l.contains("--certs-dir"))
        .expect("the README shows `meridian kv put` for a secured cluster");
    let command = line.split(" #").next().expect("a command before its comment");
    let args: Vec<String> = command
        .split_whitespace()
        .skip(1)
        .map(|w| match w {
            "127.0.0.1:7000" => addr.to_string(),
            "certs" => certs.to_string(),
            "token" => token_file.to_string(),
            w => w.to_string(),
        })
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out) = cli(&args);
    assert!(ok && out.contains("committed at"), "the README's `{command}` must work as written: {out}");
}

/// `status`, `workload` and `backup`/`restore` against the secure cluster: each works with the
/// CA and the token, and says "not authenticated" without the token.
fn grpc_commands_take_credentials(root: &Path, certs: &str, token_file: &str, addr: &str) {
    let auth = ["--addr", addr, "--certs-dir", certs, "--token-file", token_file];
    let no_token = ["--addr", addr, "--certs-dir", certs];
    let run = |head: &[&str], auth: &[&str], tail: &[&str]| cli(&[head, auth, tail].concat());
    let refused = |what: &str, (ok, out): (bool, String)| {
        assert!(!ok && out.contains("not authenticated"), "{what} without the token must fail clearly: {out}");
    };

    let (ok, out) = run(&["status"], &auth, &[]);
    assert!(ok && out.contains("Nodes (3):") && out.contains("Ranges ("), "status with the token: {out}");
    refused("status", run(&["status"], &no_token, &[]));
    // No CA at all: a plaintext client at a TLS port is told so — by the probe, which runs at
    // the first failed call, not after its 30 s deadline of HTTP/2 framing errors (which would
    // end in "gave up after" or the framing error's own words).
    let (ok, out) = run(&["status"], &["--addr", addr, "--token-file", token_file], &[]);
    assert!(!ok && out.contains("speaks TLS") && out.contains("--certs-dir"), "status without the CA: {out}");
    assert!(!out.contains("gave up after") && !out.contains("h2 protocol error"), "told at once: {out}");

    let history = root.join("bank.jsonl");
    let history = history.to_str().expect("utf-8");
    let (ok, out) = run(&["workload", "bank"], &auth, &["init", "--accounts", "8", "--ranges", "2"]);
    assert!(ok && out.contains("bank: 8 accounts"), "workload bank init with the token: {out}");
    let (ok, out) =
        run(&["workload", "bank"], &auth, &["run", "--seconds", "2", "--workers", "2", "--history", history]);
    assert!(ok && out.contains("bank check:") && out.contains(" 0 violations"), "workload bank run: {out}");
    let (ok, out) = run(&["workload", "bank"], &auth, &["check", "--history", history]);
    assert!(ok && out.contains(" 0 violations"), "workload bank check with the token: {out}");
    refused("workload bank check", run(&["workload", "bank"], &no_token, &["check", "--history", history]));
    let append_history = root.join("append.jsonl");
    let append_run = ["run", "--seconds", "1", "--history", append_history.to_str().expect("utf-8")];
    refused("workload append run", run(&["workload", "append"], &no_token, &append_run));

    let backup = root.join("backup");
    let backup = backup.to_str().expect("utf-8");
    let (ok, out) = run(&["backup"], &auth, &["--out", backup]);
    assert!(ok && out.contains("backup complete"), "backup with the token: {out}");
    assert!(Path::new(backup).join("MANIFEST").exists(), "the backup has no MANIFEST: {out}");
    let other = root.join("backup-refused");
    refused("backup", run(&["backup"], &no_token, &["--out", other.to_str().expect("utf-8")]));
    // With the token, restore gets as far as the data: this cluster is not empty.
    let (ok, out) = run(&["restore"], &auth, &["--from", backup]);
    assert!(!ok && out.contains("already holds data"), "restore with the token must reach the cluster: {out}");
    refused("restore", run(&["restore"], &no_token, &["--from", backup]));
}

/// A port that answers PostgreSQL's `SSLRequest` with "no TLS here", as a node started without
/// `--certs-dir` does, for one connection.
fn plaintext_pg_port() -> String {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let mut request = [0u8; 8];
            if s.read_exact(&mut request).is_ok() {
                let _ = s.write_all(b"N");
            }
        }
    });
    addr
}

/// `meridian sql` against the secure PostgreSQL port: TLS verified against the cluster CA and a
/// SCRAM password work (flags, or a URL with `sslmode=verify-full` and `PGPASSWORD`); a wrong
/// or missing password, no CA, another CA, and a server without TLS each fail saying why.
fn sql_takes_tls_and_a_password(root: &Path, certs: &Path, foreign: &Path, pg_addr: &str, password: &str) {
    let pw_file = root.join("alice.password");
    std::fs::write(&pw_file, format!("{password}\n")).expect("password file");
    let wrong_file = root.join("wrong.password");
    let wrong = "not-the-password-8d1";
    std::fs::write(&wrong_file, wrong).expect("password file");
    let (certs, pw_file, wrong_file) =
        (certs.to_str().expect("utf-8"), pw_file.to_str().expect("utf-8"), wrong_file.to_str().expect("utf-8"));
    let foreign_ca = foreign.join("ca.crt");
    let sql = |args: &[&str], env: &[(&str, &str)]| {
        let (ok, out) = cli_env(&[&["sql", "--user", "alice"], args, &["-e", "SELECT 1"]].concat(), env);
        assert!(!out.contains(password) && !out.contains(wrong), "meridian sql printed a password: {out}");
        (ok, out)
    };

    let (ok, out) = sql(&["--addr", pg_addr, "--certs-dir", certs, "--password-file", pw_file], &[]);
    assert!(ok && out.contains("(1 row)"), "sql with the CA and the password: {out}");
    let port = pg_addr.rsplit_once(':').expect("host:port").1;
    let ca = format!("{certs}/ca.crt");
    let url = format!("postgresql://alice@localhost:{port}/meridian?sslmode=verify-full&sslrootcert={ca}");
    let (ok, out) = sql(&["--url", &url], &[("PGPASSWORD", password)]);
    assert!(ok && out.contains("(1 row)"), "sql --url with sslmode=verify-full and PGPASSWORD: {out}");

    let (ok, out) = sql(&["--addr", pg_addr, "--certs-dir", certs, "--password-file", wrong_file], &[]);
    assert!(
        !ok && out.to_lowercase().contains("password authentication failed") && out.contains("28P01"),
        "a wrong password must be refused, naming authentication: {out}"
    );
    let (ok, out) = sql(&["--addr", pg_addr, "--certs-dir", certs], &[]);
    assert!(!ok && out.contains("wants a password") && out.contains("--password-file"), "no password: {out}");
    let (ok, out) = sql(&["--addr", pg_addr, "--password-file", pw_file], &[]);
    assert!(!ok && out.contains("requires TLS") && out.contains("--certs-dir"), "sql without the CA: {out}");
    let (ok, out) =
        sql(&["--addr", pg_addr, "--ca-cert", foreign_ca.to_str().expect("utf-8"), "--password-file", pw_file], &[]);
    assert!(
        // Each CA has a subject of its own: the chain names an issuer the client does not know.
        !ok && out.contains("invalid peer certificate") && out.contains("UnknownIssuer"),
        "a server certificate of another CA must fail verification: {out}"
    );
    let (ok, out) = sql(&["--addr", &plaintext_pg_port(), "--certs-dir", certs, "--password-file", pw_file], &[]);
    assert!(!ok && out.contains("server does not support TLS"), "a CA given, a server without TLS: {out}");
}
