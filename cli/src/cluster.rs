//! `meridian start`, `status`, `demo`, `kv …` and `admin …`: running nodes and talking to them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use meridian_client::Client;
use meridian_server::node::NodeOptions;
use meridian_server::shell::{Node, NodeConfig};
use meridian_shard::paxos::{NodeId, Options};
use meridian_shard::range::{self, RangeDescriptor};
use meridian_truetime::Timestamp;

/// Arguments of `meridian start`.
#[derive(clap::Args, Clone)]
pub struct StartArgs {
    /// Data directory (created if missing).
    #[arg(long, env = "MERIDIAN_DATA_DIR")]
    pub data_dir: PathBuf,
    /// gRPC listen address.
    #[arg(long, default_value = "127.0.0.1:7000", env = "MERIDIAN_LISTEN")]
    pub listen: SocketAddr,
    /// Address other nodes use to reach this one (default: the listen address).
    #[arg(long, env = "MERIDIAN_ADVERTISE")]
    pub advertise: Option<String>,
    /// Join the cluster of this node (repeatable). Without it, an empty data directory
    /// bootstraps a new cluster. In MERIDIAN_JOIN, separate addresses with commas.
    #[arg(long, env = "MERIDIAN_JOIN", value_delimiter = ',')]
    pub join: Vec<String>,
    /// TrueTime uncertainty ε in milliseconds.
    #[arg(long, default_value_t = 4, env = "MERIDIAN_EPSILON_MS")]
    pub epsilon_ms: u64,
    /// Leader lease length in milliseconds (Spanner's default is 10 s).
    #[arg(long, default_value_t = 10_000, env = "MERIDIAN_LEASE_MS")]
    pub lease_ms: u64,
    /// Replicas per range.
    #[arg(long, default_value_t = 3, env = "MERIDIAN_REPLICATION")]
    pub replication: usize,
    /// Do not move replicas or leaders around for balance. Ranges are still brought up to
    /// `--replication` and dead nodes' replicas still replaced. For maintenance windows and for
    /// placing replicas by hand (`meridian admin move`).
    #[arg(long, env = "MERIDIAN_NO_REBALANCE")]
    pub no_rebalance: bool,
    /// Serve SQL over the PostgreSQL protocol on this address (`psql`, drivers, `pgbench`).
    #[arg(long, env = "MERIDIAN_PG_LISTEN")]
    pub pg_listen: Option<SocketAddr>,
    /// Serve HTTP for operators on this address: `/health` (`?ready=1`: 503 while the node
    /// cannot serve every range it hosts, naming them), `/status` and `/` (an HTML page of its
    /// ranges and the nodes it sees up or down) and `/metrics` (Prometheus).
    #[arg(long, env = "MERIDIAN_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// FOR CHAOS TESTING ONLY: obey the fault-injection admin API (`FaultInjection` gRPC
    /// service), which cuts this node's links to chosen peers and offsets its TrueTime clock,
    /// even beyond ε. `meridian chaos` starts its nodes with it. Off by default: a node without
    /// it refuses every fault-injection call.
    #[arg(long, env = "MERIDIAN_FAULT_INJECTION")]
    pub fault_injection: bool,
    /// Serve and dial with TLS, using the certificates in this directory (`meridian cert`):
    /// `ca.crt`, and `node.<name>.crt`/`.key` (`--cert-name`), or `node.crt`/`node.key`, or
    /// the only `node.*.crt` there is. Peers must present a node certificate of the same CA.
    /// Without it the node is unencrypted and unauthenticated (it warns at start).
    #[arg(long, env = "MERIDIAN_CERTS_DIR")]
    pub certs_dir: Option<PathBuf>,
    /// Which `node.<name>.crt` of `--certs-dir` this node presents.
    #[arg(long, env = "MERIDIAN_CERT_NAME", requires = "certs_dir")]
    pub cert_name: Option<String>,
    /// Require clients to present the token on the first line of this file (gRPC metadata
    /// `authorization: Bearer <token>`), or a client certificate of the cluster CA. A file,
    /// never a flag value, so the token stays out of `ps` and shell history.
    #[arg(long, env = "MERIDIAN_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Require a password on the PostgreSQL port (SCRAM-SHA-256): a file of `user:password`
    /// lines, or a single password for the user `meridian`.
    #[arg(long, env = "MERIDIAN_PG_PASSWORD_FILE")]
    pub pg_password_file: Option<PathBuf>,
    /// FOR DURABILITY TESTS ONLY: keep writes not yet synced in this process's memory, so that
    /// `kill -9` loses them as a power cut would (`cli/tests/durability.rs`).
    #[arg(long, hide = true)]
    pub test_power_loss: bool,
    /// BROKEN ON PURPOSE, for tests: never sync a write (acknowledged data may be lost).
    #[arg(long, hide = true)]
    pub unsafe_skip_sync: bool,
}

impl StartArgs {
    fn config(&self) -> anyhow::Result<NodeConfig> {
        anyhow::ensure!(self.lease_ms >= 100, "--lease-ms must be at least 100");
        anyhow::ensure!(
            self.epsilon_ms * 4 < self.lease_ms,
            "ε ({} ms, --epsilon-ms) must be well below the lease ({} ms, --lease-ms): a lease shorter than 4ε cannot be held",
            self.epsilon_ms,
            self.lease_ms
        );
        anyhow::ensure!(self.replication >= 1 && self.replication <= 7, "--replication must be between 1 and 7");
        let options = NodeOptions {
            paxos: Options::with_lease(Duration::from_millis(self.lease_ms)),
            replication: self.replication,
            rebalance: !self.no_rebalance,
            housekeeping: Duration::from_millis((self.lease_ms / 5).clamp(100, 2_000)),
            ..NodeOptions::default()
        };
        Ok(NodeConfig {
            data_dir: self.data_dir.clone(),
            listen: self.listen,
            advertise: self.advertise.clone(),
            join: self.join.clone(),
            epsilon: Duration::from_millis(self.epsilon_ms),
            options,
            rocks: Default::default(),
            pg_advertise: self.pg_listen.map(|a| a.to_string()),
            http_listen: self.http_listen,
            fault_injection: self.fault_injection,
            tls: self.node_tls()?,
            token: self.token()?,
            test_power_loss: self.test_power_loss,
            unsafe_skip_sync: self.unsafe_skip_sync,
        })
    }
}

impl StartArgs {
    fn node_tls(&self) -> anyhow::Result<Option<meridian_server::shell::NodeTls>> {
        let Some(dir) = &self.certs_dir else { return Ok(None) };
        Ok(Some(meridian_server::shell::NodeTls::load(dir, self.cert_name.as_deref())?))
    }

    fn token(&self) -> anyhow::Result<Option<meridian_proto::auth::Secret<String>>> {
        let Some(f) = &self.token_file else { return Ok(None) };
        Ok(Some(meridian_proto::auth::read_secret_file(f).with_context(|| format!("--token-file {}", f.display()))?))
    }

    /// How this node's PostgreSQL gateway reaches the node: over TLS with the node's own
    /// certificate (which the node accepts as a client credential).
    fn gateway_client(&self) -> anyhow::Result<meridian_client::ClientOptions> {
        crate::cert::node_client_options(self.certs_dir.as_deref(), self.cert_name.as_deref())
    }
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// The runtime a node (and its PostgreSQL gateway) runs on. Its workers' stack is the one SQL's
/// bounds are sized for (`meridian_sql::bounds`): a statement's parse, bind and evaluation run on
/// it, and overflowing it aborts the process.
fn node_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(meridian_sql::bounds::SERVER_STACK_BYTES)
        .enable_all()
        .build()
}

/// `meridian start`: runs one node until SIGINT/SIGTERM, then hands its leaderships away.
pub fn start(args: StartArgs) -> anyhow::Result<()> {
    let cfg = args.config()?;
    crate::config::preflight(&args)?;
    let rt = node_runtime()?;
    rt.block_on(async move {
        let node = Node::start(cfg).await.context("starting the node")?;
        let pg = match args.pg_listen {
            Some(listen) => Some(
                PgGateway::start_with(
                    node.addr.to_string(),
                    listen,
                    args.gateway_client()?,
                    crate::cert::pg_security(
                        args.certs_dir.as_deref(),
                        args.cert_name.as_deref(),
                        args.pg_password_file.as_deref(),
                    )?,
                )
                .await?,
            ),
            None => None,
        };
        if let Some(pg) = &pg {
            println!("SQL (PostgreSQL protocol) on {}", pg.url());
        }
        if let Some(http) = node.http_addr {
            println!("HTTP on http://{http}/ (status, metrics, health)");
        }
        // Scripts wait for this line.
        println!("node {} of cluster {} listening on {}", node.node_id, node.cluster_id, node.addr);
        shutdown_signal().await;
        eprintln!("shutting down: handing leaderships to other replicas");
        if let Some(pg) = pg {
            pg.stop().await;
        }
        node.shutdown(Duration::from_secs(5)).await;
        Ok(())
    })
}

/// SQL over the PostgreSQL protocol, run as transactions through a cluster (this node's own
/// gRPC address: it routes each statement's reads and writes to the ranges' leaders).
pub struct PgGateway {
    /// The bound address.
    pub addr: SocketAddr,
    /// Whether the port requires TLS (the URL then asks for it).
    tls: bool,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl PgGateway {
    /// Binds `listen` and serves until [`PgGateway::stop`].
    pub async fn start(node_addr: String, listen: SocketAddr) -> anyhow::Result<PgGateway> {
        Self::start_with(node_addr, listen, Default::default(), Default::default()).await
    }

    /// [`PgGateway::start`] on a secured node: `client` reaches the node, `security` is the
    /// port's TLS and passwords.
    pub async fn start_with(
        node_addr: String,
        listen: SocketAddr,
        client: meridian_client::ClientOptions,
        security: meridian_pg::PgSecurity,
    ) -> anyhow::Result<PgGateway> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding the PostgreSQL port {listen}"))?;
        let addr = listener.local_addr()?;
        // Not `connect`: a node restarting with the rest of its cluster must serve before any
        // range has a quorum again (cli/tests/durability.rs restarts every node in turn).
        let client = std::sync::Arc::new(Client::unconnected([node_addr], client)?);
        let store = std::sync::Arc::new(meridian_client::ClusterKv::new(client));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let tls = security.has_tls();
        let opts = meridian_pg::PgOptions { security, ..Default::default() };
        let task = tokio::spawn(async move {
            meridian_pg::serve(listener, store, opts, async {
                let _ = stopped.await;
            })
            .await
        });
        Ok(PgGateway { addr, tls, stop, task })
    }

    /// A `postgresql://` URL for `psql` and drivers.
    pub fn url(&self) -> String {
        let sslmode = if self.tls { "require" } else { "disable" };
        format!("postgresql://root@{}/meridian?sslmode={sslmode}", self.addr)
    }

    /// Stops accepting and ends the connections.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Arguments of `meridian status`.
#[derive(clap::Args)]
pub struct StatusArgs {
    /// Any node of the cluster.
    #[arg(long, default_value = "127.0.0.1:7000", env = "MERIDIAN_ADDR")]
    pub addr: String,
    /// TLS and token for a secured cluster.
    #[command(flatten)]
    pub auth: crate::cert::ClientAuthArgs,
}

/// `meridian status`: nodes, ranges, replicas, leaders and lease expiry. When the meta range
/// cannot answer, it shows what the contacted node knows of its own replicas; when the node
/// cannot answer either (nothing listens, a wrong address, refused credentials), the client's
/// error says why.
pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let unavailable: anyhow::Error = match Client::connect_with([args.addr.clone()], args.auth.options()?).await {
            Ok(client) => match render_status(&client).await {
                Ok(s) => {
                    print!("{s}");
                    return Ok(());
                }
                Err(e) => e,
            },
            // Known at once and the same for the node's own view: say it, once.
            Err(
                e @ (meridian_client::ClientError::Unauthenticated(_) | meridian_client::ClientError::WrongAddress(_)),
            ) => return Err(e.into()),
            Err(e) => e.into(),
        };
        match render_node_status_with(&args.addr, &args.auth).await {
            Ok(own) => {
                eprintln!("cluster view unavailable ({unavailable:#}); showing {}'s own replicas", args.addr);
                print!("{own}");
                Ok(())
            }
            // The node does not answer either: the client's words are the clearer ones.
            Err(_) => Err(unavailable),
        }
    })
}

/// One node's view of its replicas (works without the meta range), over plaintext without
/// credentials.
pub async fn render_node_status(addr: &str) -> anyhow::Result<String> {
    render_node_status_with(addr, &crate::cert::ClientAuthArgs::default()).await
}

/// [`render_node_status`] with TLS and a token as `auth` says.
pub async fn render_node_status_with(addr: &str, auth: &crate::cert::ClientAuthArgs) -> anyhow::Result<String> {
    use meridian_proto::v1 as pb;
    use std::fmt::Write as _;
    let s = auth
        .admin_at(addr)
        .await?
        .status(pb::StatusRequest {})
        .await
        .with_context(|| format!("asking {addr} for its status"))?
        .into_inner();
    let mut out = String::new();
    writeln!(
        out,
        "Node n{} of cluster {} ({} replicas): {}",
        s.node_id,
        s.cluster_id,
        s.groups.len(),
        readiness_line(&s)
    )?;
    for p in &s.problems {
        writeln!(out, "  {p}")?;
    }
    for w in &s.warnings {
        writeln!(out, "  WARNING: {w}")?;
    }
    writeln!(
        out,
        "  {:<16} {:<12} {:<12} {:<10} {:<8} {:<7} {:<9} {:<14} HEALTH",
        "RANGE", "START", "END", "ROLE", "BALLOT", "LEADER", "APPLIED", "LEASE"
    )?;
    for g in s.groups {
        let r: RangeDescriptor = g.range.map(Into::into).unwrap_or(RangeDescriptor {
            id: meridian_shard::GroupId(0),
            start: vec![],
            end: vec![],
            config: Default::default(),
            generation: 0,
        });
        let lease = if g.lease_end > 0 {
            format!(
                "{:.1}s left",
                Timestamp::from_nanos(g.lease_end).duration_since(Timestamp::from_nanos(s.now_latest)).as_secs_f64()
            )
        } else {
            "none".into()
        };
        // A leader is named only while the node can serve the range through it.
        let leader = g.leader.filter(|_| g.servable).map(|l| format!("n{l}")).unwrap_or_else(|| "-".into());
        let health = if g.servable { g.health.clone() } else { format!("CANNOT SERVE: {}", g.health) };
        writeln!(
            out,
            "  {:<16} {:<12} {:<12} {:<10} {:<8} {:<7} {:<9} {lease:<14} {health}",
            r.id.to_string(),
            short(&r.start),
            short_end(&r.end),
            g.role,
            g.ballot,
            leader,
            g.applied
        )?;
    }
    if !s.liveness.is_empty() {
        writeln!(out, "Other nodes as n{} sees them:", s.node_id)?;
        for l in &s.liveness {
            let heard = if l.last_heard == 0 {
                "never heard from".to_string()
            } else {
                let ago = Timestamp::from_nanos(s.now_latest).duration_since(Timestamp::from_nanos(l.last_heard));
                format!("last heard {:.1}s ago", ago.as_secs_f64())
            };
            let state = if l.up { "up".to_string() } else { format!("DOWN ({})", l.why) };
            writeln!(out, "  n{:<3} {state}; {heard}", l.node_id)?;
        }
    }
    Ok(out)
}

/// `ready` or `NOT READY: why`, as the node's `/health?ready=1` would answer.
fn readiness_line(s: &meridian_proto::v1::StatusResponse) -> String {
    if s.ready { "ready".into() } else { format!("NOT READY: {}", s.readiness) }
}

/// The status report as text.
pub async fn render_status(client: &Client) -> anyhow::Result<String> {
    use std::fmt::Write as _;
    let (descs, nodes, leaders) = client.cluster_view().await?;
    let leaders: BTreeMap<_, _> = leaders.into_iter().collect();
    // Lease ends come from each node's own view of its replicas.
    let mut leases = BTreeMap::new();
    let mut node_now = BTreeMap::new();
    let mut readiness = BTreeMap::new();
    let mut warnings: Vec<String> = Vec::new();
    for n in &nodes {
        if let Ok(s) = client.node_status(&n.addr).await {
            node_now.insert(n.id, Timestamp::from_nanos(s.now_latest));
            readiness.insert(n.id, readiness_line(&s));
            for w in &s.warnings {
                let w = format!("{}: {w}", n.id);
                if !warnings.contains(&w) {
                    warnings.push(w);
                }
            }
            for g in s.groups {
                if g.lease_end > 0
                    && let Some(r) = g.range
                {
                    leases.insert(
                        meridian_shard::GroupId(r.id),
                        (n.id, Timestamp::from_nanos(g.lease_end), Timestamp::from_nanos(s.now_latest)),
                    );
                }
            }
        }
    }
    let mut out = String::new();
    writeln!(out, "Nodes ({}):", nodes.len())?;
    for n in &nodes {
        let replicas = descs.iter().filter(|d| d.config.voters.contains(&n.id)).count();
        let led = descs.iter().filter(|d| leases.get(&d.id).map(|l| l.0) == Some(n.id)).count();
        let up = if node_now.contains_key(&n.id) { "up" } else { "UNREACHABLE" };
        let ready = readiness.get(&n.id).map_or(String::new(), |r| format!("; {r}"));
        writeln!(out, "  {:<4} {:<22} {:<12} {replicas} replicas, {led} leaders{ready}", n.id.to_string(), n.addr, up)?;
    }
    for w in &warnings {
        writeln!(out, "WARNING: {w}")?;
    }
    writeln!(out, "Ranges ({}):", descs.len())?;
    writeln!(out, "  {:<16} {:<12} {:<12} {:<14} {:<7} LEASE", "RANGE", "START", "END", "REPLICAS", "LEADER")?;
    for d in &descs {
        let replicas = fmt_config(d);
        let (leader, lease) = match leases.get(&d.id) {
            Some((n, end, now)) => (n.to_string(), format!("{:.1}s left", end.duration_since(*now).as_secs_f64())),
            // No node reports a lease: name the meta range's hint only if that node answers.
            None => (
                leaders.get(&d.id).filter(|n| node_now.contains_key(n)).map_or("-".into(), |n| format!("{n}?")),
                "NONE".into(),
            ),
        };
        writeln!(
            out,
            "  {:<16} {:<12} {:<12} {:<14} {:<7} {lease}",
            d.id.to_string(),
            short(&d.start),
            short_end(&d.end),
            replicas,
            leader
        )?;
    }
    Ok(out)
}

fn fmt_config(d: &RangeDescriptor) -> String {
    let mut s: Vec<String> = d.config.voters.iter().map(|n| n.0.to_string()).collect();
    s.extend(d.config.learners.iter().map(|n| format!("{}(l)", n.0)));
    format!("n{}", s.join(",n"))
}

fn short(k: &[u8]) -> String {
    let s = range::show_key(k);
    if s.len() > 12 { format!("{}…", &s[..11]) } else { s }
}

fn short_end(k: &[u8]) -> String {
    if k.is_empty() { "+∞".into() } else { short(k) }
}

/// Arguments of `meridian demo`.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Nodes to start.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// User ranges to split the key space into.
    #[arg(long, default_value_t = 8)]
    pub ranges: usize,
    /// Print the status and exit once every range has a leader (for scripts).
    #[arg(long)]
    pub exit_after_ready: bool,
    /// Keep the data here instead of a temporary directory.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// First gRPC port (nodes use consecutive ports; 0 picks free ones).
    #[arg(long, default_value_t = 0)]
    pub base_port: u16,
    /// First PostgreSQL port (nodes use consecutive ports; 0 picks free ones).
    #[arg(long, default_value_t = 0)]
    pub pg_port: u16,
    /// Statements to run in the SQL shell, then exit (repeatable), instead of an interactive
    /// shell.
    #[arg(short = 'e', long = "execute", value_name = "SQL")]
    pub execute: Vec<String>,
}

/// The demo's sample table, split across ranges by id.
const DEMO_TABLE: &str = "CREATE TABLE accounts (id INT PRIMARY KEY, owner TEXT, balance INT)";
const DEMO_OWNERS: [&str; 8] = ["ann", "bob", "cat", "dan", "eve", "fay", "gus", "hal"];

/// Split points spreading `n` ranges over lowercase-letter keys.
fn split_points(n: usize) -> Vec<Vec<u8>> {
    (1..n).map(|i| vec![b'a' + (i * 26 / n) as u8]).collect()
}

/// `meridian demo`: a local cluster in one process (real gRPC on loopback), ready to use.
pub fn demo(args: DemoArgs) -> anyhow::Result<()> {
    anyhow::ensure!((1..=9).contains(&args.nodes), "--nodes must be between 1 and 9");
    anyhow::ensure!((1..=26).contains(&args.ranges), "--ranges must be between 1 and 26");
    let rt = node_runtime()?;
    rt.block_on(async move {
        let tmp;
        let root = match &args.data_dir {
            Some(d) => d.clone(),
            None => {
                tmp = tempfile::tempdir()?;
                tmp.path().to_path_buf()
            }
        };
        println!("Starting a {}-node Meridian cluster in {}", args.nodes, root.display());
        let lease = Duration::from_secs(2);
        let mk = |i: usize, join: Vec<String>| {
            let port = if args.base_port == 0 { 0 } else { args.base_port + i as u16 };
            StartArgs {
                data_dir: root.join(format!("node{}", i + 1)),
                listen: SocketAddr::from(([127, 0, 0, 1], port)),
                advertise: None,
                join,
                epsilon_ms: 4,
                lease_ms: lease.as_millis() as u64,
                replication: 3.min(args.nodes),
                no_rebalance: false,
                pg_listen: None,
                http_listen: None,
                fault_injection: false,
                certs_dir: None,
                cert_name: None,
                token_file: None,
                pg_password_file: None,
                test_power_loss: false,
                unsafe_skip_sync: false,
            }
        };
        let mut nodes = vec![Node::start(mk(0, vec![]).config()?).await?];
        let first = nodes[0].addr.to_string();
        for i in 1..args.nodes {
            nodes.push(Node::start(mk(i, vec![first.clone()]).config()?).await?);
        }
        for n in &nodes {
            println!("  node {} listening on {}", n.node_id, n.addr);
        }
        let client = Client::connect(nodes.iter().map(|n| n.addr.to_string())).await?;
        // Right to left: each split cuts a range that keeps its leader (see `restore`).
        for at in split_points(args.ranges).into_iter().rev() {
            client.split(&at).await.with_context(|| format!("splitting at {}", range::show_key(&at)))?;
        }
        let want = 3.min(args.nodes);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let (descs, _, _) = client.cluster_view().await?;
            let mut led = 0;
            for n in &nodes {
                if let Ok(s) = client.node_status(&n.addr.to_string()).await {
                    led += s.groups.iter().filter(|g| g.lease_end > 0).count();
                }
            }
            let replicated = descs.iter().all(|d| d.config.voters.len() == want && d.config.learners.is_empty());
            if replicated && led == descs.len() && descs.len() == args.ranges + 1 {
                break;
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "the cluster did not become ready within 120 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if args.exit_after_ready {
            print!("{}", render_status(&client).await?);
        }
        println!(
            "Cluster ready: {} nodes, {} user ranges + the meta range, each replicated {want}× with a leader holding its lease.",
            args.nodes, args.ranges
        );
        let mut gateways = Vec::new();
        for (i, n) in nodes.iter().enumerate() {
            let port = if args.pg_port == 0 { 0 } else { args.pg_port + i as u16 };
            gateways.push(PgGateway::start(n.addr.to_string(), SocketAddr::from(([127, 0, 0, 1], port))).await?);
        }
        let shell_result = if args.exit_after_ready {
            Ok(())
        } else {
            let client = std::sync::Arc::new(client);
            create_demo_table(&client).await?;
            let url = gateways[0].url();
            println!("SQL: the table `accounts` is spread over {} ranges. Connect with psql too:", DEMO_OWNERS.len() / 2);
            println!("  psql \"{url}\"");
            println!("Status: meridian status --addr {first}");
            let sql = crate::sql::SqlArgs {
                url: Some(url),
                addr: String::new(),
                user: "root".into(),
                local: false,
                execute: args.execute.clone(),
                file: None,
                on_error_stop: false,
                certs_dir: None,
                ca_cert: None,
                password_file: None,
            };
            // The shell runs its own runtime on its own thread; the nodes keep running on this one.
            let shell = std::thread::spawn(move || crate::sql::run(sql));
            tokio::task::spawn_blocking(move || shell.join())
                .await
                .context("the SQL shell")?
                .map_err(|_| anyhow::anyhow!("the SQL shell panicked"))?
        };
        println!("Stopping: handing leaderships away and shutting down.");
        for g in gateways {
            g.stop().await;
        }
        for n in nodes {
            n.shutdown(Duration::from_secs(2)).await;
        }
        shell_result
    })
}

/// Creates the demo's `accounts` table (unless it exists) and splits it across ranges.
async fn create_demo_table(client: &std::sync::Arc<Client>) -> anyhow::Result<()> {
    let store = std::sync::Arc::new(meridian_client::ClusterKv::new(client.clone()));
    let mut session = meridian_sql::Session::new(store);
    let exists = session.execute("SELECT COUNT(*) FROM accounts").await.into_iter().all(|r| r.is_ok());
    if !exists {
        let rows: Vec<String> =
            DEMO_OWNERS.iter().enumerate().map(|(i, o)| format!("({}, '{o}', 100)", i + 1)).collect();
        for stmt in [DEMO_TABLE.to_string(), format!("INSERT INTO accounts VALUES {}", rows.join(", "))] {
            if let Some(Err(e)) = session.execute(&stmt).await.into_iter().next() {
                anyhow::bail!("creating the demo table: {e}");
            }
        }
    }
    session.close().await;
    // Rows of the first table are keyed by its id and the primary key: split between owners.
    for id in (3..=DEMO_OWNERS.len() as i64).rev().filter(|id| id % 2 == 1) {
        let mut key = meridian_sql::keys::table_prefix(meridian_sql::keys::FIRST_TABLE_ID);
        meridian_sql::encoding::key::encode(&mut key, &meridian_sql::Value::Int(id));
        // Already split (a reused --data-dir) is fine.
        let _ = client.split(&key).await;
    }
    Ok(())
}

/// `meridian kv …`: the key-value API from the command line.
#[derive(clap::Subcommand)]
pub enum KvCommand {
    /// Print a key's value.
    Get {
        /// The key.
        key: String,
    },
    /// Set a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Delete a key.
    Delete {
        /// The key.
        key: String,
    },
    /// Print keys in `[start, end)`.
    Scan {
        /// First key (empty: the first user key).
        #[arg(default_value = "")]
        start: String,
        /// First key not printed (empty: to the end).
        #[arg(default_value = "")]
        end: String,
        /// Most rows.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

/// `meridian admin …`: range management.
#[derive(clap::Subcommand)]
pub enum AdminCommand {
    /// Split the range holding KEY at KEY.
    Split {
        /// The split key.
        key: String,
    },
    /// Merge the range holding KEY with its right neighbour.
    Merge {
        /// A key of the left range.
        key: String,
    },
    /// Move the replica of the range holding KEY from one node to another.
    Move {
        /// A key of the range.
        key: String,
        /// Node losing the replica (e.g. 2).
        #[arg(long)]
        from: u64,
        /// Node gaining it.
        #[arg(long)]
        to: u64,
    },
    /// Hand the leadership of the range holding KEY to a node.
    Transfer {
        /// A key of the range.
        key: String,
        /// The new leader.
        #[arg(long)]
        to: u64,
    },
}

/// Runs a `kv` command against `addr`.
pub fn kv(addr: String, auth: meridian_client::ClientOptions, cmd: KvCommand) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let c = Client::connect_with([addr], auth).await?;
        match cmd {
            KvCommand::Get { key } => match c.get(key.as_bytes()).await? {
                (Some(v), ts) => println!("{}  (version {ts})", String::from_utf8_lossy(&v)),
                (None, _) => println!("(not found)"),
            },
            KvCommand::Put { key, value } => {
                println!("committed at {}", c.put(key.as_bytes(), value.as_bytes()).await?)
            }
            KvCommand::Delete { key } => println!("committed at {}", c.delete(key.as_bytes()).await?),
            KvCommand::Scan { start, end, limit } => {
                for (k, v) in c.scan(start.as_bytes(), end.as_bytes(), limit).await? {
                    println!("{}\t{}", range::show_key(&k), String::from_utf8_lossy(&v));
                }
            }
        }
        Ok(())
    })
}

/// Runs an `admin` command against `addr`.
pub fn admin(addr: String, auth: meridian_client::ClientOptions, cmd: AdminCommand) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let c = Client::connect_with([addr], auth).await?;
        let detail = match cmd {
            AdminCommand::Split { key } => c.split(key.as_bytes()).await?,
            AdminCommand::Merge { key } => c.merge(key.as_bytes()).await?,
            AdminCommand::Move { key, from, to } => c.move_replica(key.as_bytes(), NodeId(from), NodeId(to)).await?,
            AdminCommand::Transfer { key, to } => c.transfer_leader(key.as_bytes(), NodeId(to)).await?,
        };
        println!("{detail}");
        Ok(())
    })
}
