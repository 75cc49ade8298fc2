//! Real `meridian start` processes on loopback, for multi-process tests.
//!
//! Each node runs in its own temporary data directory; its stderr goes to a log file there (the
//! path is printed when a test fails). Nodes are killed with SIGKILL when the cluster is
//! dropped, so a failing test leaves no process behind.
//!
//! Tests that start processes hold [`multi_process_lock`], so that clusters of different test
//! binaries (or of two `cargo test` runs) never share the machine's cores: on two cores, two
//! clusters starve each other's leases into spurious leader changes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a node may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a test waits for another to release the multi-process lock.
const LOCK_WAIT_MAX: Duration = Duration::from_secs(30 * 60);

/// Held while a test runs node processes; released when dropped (or when the process dies).
pub struct MultiProcessLock {
    _file: std::fs::File,
}

/// Waits (at most [`LOCK_WAIT_MAX`]) until no other test, in this or any other process, holds
/// the multi-process lock, then takes it: an exclusive `flock` on a file in the temporary
/// directory.
pub fn multi_process_lock() -> MultiProcessLock {
    use std::os::fd::AsRawFd;
    let path = std::env::temp_dir().join("meridian-multi-process-tests.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("opening the test lock {}: {e}", path.display()));
    let deadline = Instant::now() + LOCK_WAIT_MAX;
    loop {
        // SAFETY: flock(2) on a descriptor we own and keep open; it touches no memory.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return MultiProcessLock { _file: file };
        }
        let e = std::io::Error::last_os_error();
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "locking {}: {e}", path.display());
        assert!(Instant::now() < deadline, "another test held {} for {LOCK_WAIT_MAX:?}", path.display());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Options for the nodes of a test cluster.
#[derive(Clone, Debug)]
pub struct NodeArgs {
    /// Lease length (short leases make failover tests fast).
    pub lease_ms: u64,
    /// TrueTime ε.
    pub epsilon_ms: u64,
    /// Replicas per range.
    pub replication: usize,
    /// Turn the placement loop off (`--no-rebalance`).
    pub no_rebalance: bool,
    /// Serve `/health`, `/status` and `/metrics` (`--http-listen`, on a fixed port per node).
    pub http: bool,
    /// More `meridian start` flags (e.g. the hidden test switches `--test-power-loss`).
    pub extra: Vec<String>,
}

impl Default for NodeArgs {
    fn default() -> Self {
        NodeArgs { lease_ms: 1_000, epsilon_ms: 2, replication: 3, no_rebalance: false, http: false, extra: Vec::new() }
    }
}

/// One node process.
pub struct ProcessNode {
    /// Its gRPC address (fixed across restarts).
    pub addr: String,
    /// Its PostgreSQL-protocol address (fixed across restarts).
    pub pg_addr: String,
    /// Its HTTP address (fixed across restarts), with [`NodeArgs::http`].
    pub http_addr: Option<String>,
    /// Its data directory.
    pub data_dir: PathBuf,
    child: Option<Child>,
    join: Vec<String>,
}

impl ProcessNode {
    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The log file of this node.
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join("node.log")
    }
}

/// A cluster of node processes.
pub struct ProcessCluster {
    binary: PathBuf,
    _root: tempfile::TempDir,
    root_path: PathBuf,
    args: NodeArgs,
    /// The nodes, in start order.
    pub nodes: Vec<ProcessNode>,
}

/// A port on 127.0.0.1 free a moment ago (another process may take it before it is used).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("bound").port()
}

fn spawn(
    binary: &Path,
    args: &NodeArgs,
    data_dir: &Path,
    (addr, pg_addr, http_addr): (&str, &str, Option<&str>),
    join: &[String],
) -> Result<Child, String> {
    std::fs::create_dir_all(data_dir).map_err(|e| e.to_string())?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data_dir.join("node.log"))
        .map_err(|e| e.to_string())?;
    let mut cmd = Command::new(binary);
    cmd.arg("start")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--listen")
        .arg(addr)
        .arg("--pg-listen")
        .arg(pg_addr)
        .arg("--lease-ms")
        .arg(args.lease_ms.to_string())
        .arg("--epsilon-ms")
        .arg(args.epsilon_ms.to_string())
        .arg("--replication")
        .arg(args.replication.to_string())
        .args(args.no_rebalance.then_some("--no-rebalance"))
        .args(&args.extra)
        .args(http_addr.into_iter().flat_map(|a| ["--http-listen", a]))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    for j in join {
        cmd.arg("--join").arg(j);
    }
    let mut child = cmd.spawn().map_err(|e| format!("spawning {}: {e}", binary.display()))?;
    match listening_line(&mut child).recv_timeout(START_TIMEOUT) {
        Ok(_) => Ok(child),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(data_dir.join("node.log")).unwrap_or_default();
            Err(format!("node at {addr} did not start within {START_TIMEOUT:?}; its log:\n{log}"))
        }
    }
}

impl ProcessCluster {
    /// Starts `n` nodes of a new cluster: the first bootstraps, the others join it.
    pub fn start(binary: impl Into<PathBuf>, n: usize, args: NodeArgs) -> Result<ProcessCluster, String> {
        let root = tempfile::tempdir().map_err(|e| e.to_string())?;
        let root_path = root.path().to_path_buf();
        let mut c = ProcessCluster { binary: binary.into(), _root: root, root_path, args, nodes: Vec::new() };
        for _ in 0..n {
            c.add_node()?;
        }
        Ok(c)
    }

    /// Starts one more node (joining the first).
    pub fn add_node(&mut self) -> Result<usize, String> {
        let i = self.nodes.len();
        let addr = format!("127.0.0.1:{}", free_port());
        let pg_addr = format!("127.0.0.1:{}", free_port());
        let http_addr = self.args.http.then(|| format!("127.0.0.1:{}", free_port()));
        let data_dir = self.root_path.join(format!("node{}", i + 1));
        let join: Vec<String> = self.nodes.first().map(|n| vec![n.addr.clone()]).unwrap_or_default();
        let child = spawn(&self.binary, &self.args, &data_dir, (&addr, &pg_addr, http_addr.as_deref()), &join)?;
        self.nodes.push(ProcessNode { addr, pg_addr, http_addr, data_dir, child: Some(child), join });
        Ok(i)
    }

    /// Every node address.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    /// Kills node `i` with SIGKILL (no graceful shutdown, unsynced writes may be lost).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops node `i` with SIGTERM and waits (bounded) for it to exit.
    pub fn stop(&mut self, i: usize) -> Result<(), String> {
        let Some(mut c) = self.nodes[i].child.take() else { return Ok(()) };
        let pid = c.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        Err(format!("node {} did not exit within 20 s of SIGTERM", i + 1))
    }

    /// Restarts node `i` from its data directory, on the same address.
    pub fn restart(&mut self, i: usize) -> Result<(), String> {
        assert!(self.nodes[i].child.is_none(), "harness: restart only a stopped node");
        let n = &self.nodes[i];
        let child =
            spawn(&self.binary, &self.args, &n.data_dir, (&n.addr, &n.pg_addr, n.http_addr.as_deref()), &n.join)?;
        self.nodes[i].child = Some(child);
        Ok(())
    }

    /// Runs `meridian` with `args` to completion; returns (success, stdout + stderr).
    pub fn run_cli(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(&self.binary).args(args).output().expect("run the meridian binary");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    /// The root directory (for extra data directories).
    pub fn root(&self) -> &Path {
        &self.root_path
    }

    /// Prints every node's log (call from a failing test).
    pub fn dump_logs(&self) {
        for (i, n) in self.nodes.iter().enumerate() {
            let log = std::fs::read_to_string(n.log_path()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("----- node {} ({}) last log lines -----", i + 1, n.addr);
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// What a finished command printed.
#[derive(Debug)]
pub struct Output {
    /// Exit status (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// The environment variables that give a client command an address or credentials.
const CLIENT_ENV: [&str; 9] = [
    "MERIDIAN_TOKEN",
    "MERIDIAN_TOKEN_FILE",
    "MERIDIAN_CERTS_DIR",
    "MERIDIAN_CA_CERT",
    "MERIDIAN_CLIENT_CERT_NAME",
    "MERIDIAN_ADDR",
    "MERIDIAN_PG_URL",
    "MERIDIAN_PG_ADDR",
    "PGPASSWORD",
];

/// Runs `binary ARGS` with the variables `env` and none of [`CLIENT_ENV`] from the test's own
/// environment, killing it after `timeout` (see [`run_bounded`]); returns (exit status 0,
/// stdout + stderr).
pub fn run_client(binary: &Path, args: &[&str], env: &[(&str, &str)], timeout: Duration) -> (bool, String) {
    let mut cmd = Command::new(binary);
    cmd.args(args);
    for var in CLIENT_ENV {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    let out = run_bounded(cmd, "", timeout);
    (out.code == Some(0), format!("{}{}", out.stdout, out.stderr))
}

/// Runs `binary sql ARGS` with `stdin` (and no connection settings from the environment), killing
/// it after `timeout`; see [`run_bounded`].
pub fn run_sql(binary: &Path, args: &[&str], stdin: &str, timeout: Duration) -> Output {
    let mut cmd = Command::new(binary);
    cmd.arg("sql").args(args).env_remove("MERIDIAN_PG_URL").env_remove("MERIDIAN_PG_ADDR");
    run_bounded(cmd, stdin, timeout)
}

/// Runs `cmd` with `stdin` to completion; past `timeout` it is killed and the test fails. Both
/// output pipes are drained while it runs, so a chatty command never blocks on a full pipe. The
/// command may stop (at an error) before reading all of `stdin`: a broken pipe is not a failure.
pub fn run_bounded(mut cmd: Command, stdin: &str, timeout: Duration) -> Output {
    use std::io::{Read, Write};
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"));
    let mut input = child.stdin.take().expect("piped stdin");
    let stdin = stdin.to_string();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(stdin.as_bytes());
    });
    let read = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let stdout = read(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = read(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = writer.join();
    Output {
        code: status.code(),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// A two-worker tokio runtime for a test's client side (the node processes are separate).
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// Polls `f` every 200 ms until it returns `Some`, for at most `limit`; panics naming `what`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The line "node … listening on …" that `meridian start` prints once it serves, as soon as it
/// comes: a thread reads `child`'s piped stdout (taken here) to its end.
pub fn listening_line(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("meridian start's stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("listening on") {
                let _ = tx.send(line);
            }
        }
    });
    rx
}

/// One multi-process test at a time in this test binary (a mutex), and none of another test
/// binary's clusters alongside ([`multi_process_lock`]).
pub fn serial() -> (std::sync::MutexGuard<'static, ()>, MultiProcessLock) {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    (serial, multi_process_lock())
}
