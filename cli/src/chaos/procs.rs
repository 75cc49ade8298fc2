//! The node processes of a chaos cluster: children of this process, each running this same
//! binary as `meridian start --fault-injection` on loopback, in its own data directory under
//! one temporary root (kept when a run fails, for its logs and history).
//!
//! Every child is killed with SIGKILL when the cluster is dropped, and (Linux) when this
//! process dies (`PR_SET_PDEATHSIG`), so no run leaves a node behind.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use meridian_proto::v1 as pb;
use meridian_shard::paxos::NodeId;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a node may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one fault-injection call may take (a paused node never answers).
const FAULT_RPC_TIMEOUT: Duration = Duration::from_secs(3);
/// Most nodes a chaos cluster runs (ports, processes, and two cores' worth of patience).
pub(crate) const NODES_MAX: usize = 9;

/// How every node of the cluster is started.
#[derive(Clone, Debug)]
pub(crate) struct NodeArgs {
    /// Leader lease (short: failovers are quick).
    pub lease_ms: u64,
    /// TrueTime ε.
    pub epsilon_ms: u64,
    /// Replicas per range.
    pub replication: usize,
}

/// One node process.
pub(crate) struct ProcNode {
    /// Its id in the cluster (from its listening line).
    pub id: NodeId,
    /// Its gRPC address, the same across restarts.
    pub addr: String,
    data_dir: PathBuf,
    join: Vec<String>,
    child: Option<Child>,
    paused: bool,
}

impl ProcNode {
    /// Running and not paused: it answers.
    pub fn is_up(&self) -> bool {
        self.child.is_some() && !self.paused
    }
}

/// The cluster's processes.
pub(crate) struct Procs {
    binary: PathBuf,
    root: Option<tempfile::TempDir>,
    root_path: PathBuf,
    args: NodeArgs,
    /// The nodes, in start order.
    pub nodes: Vec<ProcNode>,
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding an ephemeral port")?;
    Ok(l.local_addr()?.port())
}

/// Sends `signal` to the process `pid`.
fn signal(pid: u32, signal: libc::c_int) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| std::io::Error::other("pid out of range"))?;
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    if unsafe { libc::kill(pid, signal) } == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// Starts one node and waits for its listening line; returns the child and its node id.
async fn spawn(
    binary: &Path,
    args: &NodeArgs,
    data_dir: &Path,
    addr: &str,
    join: &[String],
) -> anyhow::Result<(Child, NodeId)> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let log_path = data_dir.join("node.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let mut cmd = Command::new(binary);
    cmd.arg("start")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", addr])
        .args(["--lease-ms", &args.lease_ms.to_string()])
        .args(["--epsilon-ms", &args.epsilon_ms.to_string()])
        .args(["--replication", &args.replication.to_string()])
        .arg("--fault-injection")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(true);
    for j in join {
        cmd.args(["--join", j]);
    }
    #[cfg(target_os = "linux")]
    // SAFETY: the closure runs in the forked child before exec and only makes one
    // async-signal-safe system call. The death signal follows the thread that forked; we spawn
    // from the runtime's worker threads, which live as long as the chaos run.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().with_context(|| format!("spawning {}", binary.display()))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let listening = tokio::time::timeout(START_TIMEOUT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("listening on") {
                return Some(line);
            }
        }
        None
    })
    .await;
    let Ok(Some(line)) = listening else {
        let _ = child.start_kill();
        let _ = child.wait().await;
        anyhow::bail!(
            "node at {addr} did not start within {START_TIMEOUT:?} (log: {}):\n{}",
            log_path.display(),
            tail(&log_path, 20)
        );
    };
    // Keep draining stdout so the node never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    // "node n3 of cluster … listening on …"
    let id = line
        .split_whitespace()
        .nth(1)
        .and_then(|w| w.strip_prefix('n'))
        .and_then(|n| n.parse().ok())
        .map(NodeId)
        .with_context(|| format!("no node id in the listening line {line:?}"))?;
    Ok((child, id))
}

/// The last `n` lines of a log file.
pub(crate) fn tail(path: &Path, n: usize) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

async fn fault_client(
    addr: &str,
) -> anyhow::Result<pb::fault_injection_client::FaultInjectionClient<tonic::transport::Channel>> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(FAULT_RPC_TIMEOUT)
        .timeout(FAULT_RPC_TIMEOUT)
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    Ok(pb::fault_injection_client::FaultInjectionClient::new(ch))
}

impl Procs {
    /// An empty cluster rooted in a new temporary directory.
    pub fn new(args: NodeArgs) -> anyhow::Result<Procs> {
        let binary = std::env::current_exe().context("finding this binary to start nodes with")?;
        let root =
            tempfile::Builder::new().prefix("meridian-chaos-").tempdir().context("creating a temporary directory")?;
        let root_path = root.path().to_path_buf();
        Ok(Procs { binary, root: Some(root), root_path, args, nodes: Vec::new() })
    }

    /// The root directory (data directories, logs, the history).
    pub fn root(&self) -> &Path {
        &self.root_path
    }

    /// Keeps the root directory after the run, for its logs.
    pub fn keep(&mut self) -> &Path {
        if let Some(root) = self.root.take() {
            let _ = root.keep();
        }
        &self.root_path
    }

    /// Starts one more node; the first bootstraps the cluster, the others join it.
    pub async fn add_node(&mut self) -> anyhow::Result<usize> {
        anyhow::ensure!(self.nodes.len() < NODES_MAX, "at most {NODES_MAX} nodes");
        let i = self.nodes.len();
        let addr = format!("127.0.0.1:{}", free_port()?);
        let data_dir = self.root_path.join(format!("node{}", i + 1));
        let join: Vec<String> = self.nodes.first().map(|n| vec![n.addr.clone()]).unwrap_or_default();
        let (child, id) = spawn(&self.binary, &self.args, &data_dir, &addr, &join).await?;
        self.nodes.push(ProcNode { id, addr, data_dir, join, child: Some(child), paused: false });
        Ok(i)
    }

    /// The log file of node `i`.
    pub fn log_path(&self, i: usize) -> PathBuf {
        self.nodes[i].data_dir.join("node.log")
    }

    /// Every node's gRPC address.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    /// SIGKILL node `i` and reap it: no graceful shutdown, unsynced writes may be lost.
    pub async fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
        self.nodes[i].paused = false;
    }

    /// SIGSTOP node `i`: it keeps its sockets but answers nothing.
    pub fn pause(&mut self, i: usize) -> anyhow::Result<()> {
        let pid = self.nodes[i].child.as_ref().and_then(Child::id).context("pausing a node that is not running")?;
        signal(pid, libc::SIGSTOP).with_context(|| format!("SIGSTOP to {pid}"))?;
        self.nodes[i].paused = true;
        Ok(())
    }

    /// SIGCONT node `i`.
    pub fn resume(&mut self, i: usize) -> anyhow::Result<()> {
        let pid = self.nodes[i].child.as_ref().and_then(Child::id).context("resuming a node that is not running")?;
        signal(pid, libc::SIGCONT).with_context(|| format!("SIGCONT to {pid}"))?;
        self.nodes[i].paused = false;
        Ok(())
    }

    /// Restarts the killed node `i` from its data directory, on the same address.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        assert!(self.nodes[i].child.is_none(), "chaos: restart only a killed node");
        let n = &self.nodes[i];
        let (child, id) = spawn(&self.binary, &self.args, &n.data_dir, &n.addr, &n.join).await?;
        anyhow::ensure!(id == n.id, "node {} came back as {id}", n.id);
        self.nodes[i].child = Some(child);
        Ok(())
    }

    /// Nodes that exited on their own since the last look (a panic, an abort), with how.
    pub fn reap_exited(&mut self) -> Vec<(usize, String)> {
        let mut exited = Vec::new();
        for (i, n) in self.nodes.iter_mut().enumerate() {
            if let Some(c) = n.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                n.child = None;
                n.paused = false;
                exited.push((i, status.to_string()));
            }
        }
        exited
    }

    /// Whether node `i` is running (possibly paused).
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    /// Kills every node.
    pub async fn kill_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i).await;
        }
    }

    /// Cuts node `i` off from `blocked` (both directions; empty heals).
    pub async fn set_partition(&self, i: usize, blocked: &[NodeId]) -> anyhow::Result<String> {
        let mut c = fault_client(&self.nodes[i].addr).await?;
        let req = pb::SetPartitionRequest { blocked_nodes: blocked.iter().map(|n| n.0).collect() };
        Ok(c.set_partition(req).await.map_err(|s| anyhow::anyhow!("{}", s.message()))?.into_inner().detail)
    }

    /// Offsets node `i`'s TrueTime clock by `offset_ns`.
    pub async fn set_clock_offset(&self, i: usize, offset_ns: i64) -> anyhow::Result<String> {
        let mut c = fault_client(&self.nodes[i].addr).await?;
        let req = pb::SetClockOffsetRequest { offset_ns };
        Ok(c.set_clock_offset(req).await.map_err(|s| anyhow::anyhow!("{}", s.message()))?.into_inner().detail)
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        // SIGKILL works on stopped processes too; tokio reaps them in the background.
        for n in &mut self.nodes {
            if let Some(c) = n.child.as_mut() {
                let _ = c.start_kill();
            }
        }
    }
}
