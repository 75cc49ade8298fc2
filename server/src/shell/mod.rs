//! # The node's shell
//!
//! Everything with I/O: one thread drives the [`NodeCore`]; tonic serves the client, admin and
//! peer services; one task per peer node batches and sends messages. The shell decides nothing
//! about the protocol. It only keeps the core's order of effects:
//!
//! ```text
//!   gRPC handlers ──► core thread: drain inputs ─► step ─► ready ─► write (+fsync) ─► release
//!                        ▲                                                             │
//!   peer tasks ◄─────────┴──────── messages per node, replies to handlers ◄────────────┘
//! ```
//!
//! All inputs that queue while one batch is being synced are stepped together and persisted by
//! the next single write: group commit across every group on the node.
//!
//! Every [`crate::node::health::NODE_HEARTBEAT`] the core thread also sends each known node an
//! empty peer batch (so every node learns within a second or so which others are up, even
//! without range traffic between them) and logs what changed in its readiness and warnings.
//! A node holds an exclusive lock on its data directory while it runs (`datadir`).
//!
//! With `--http-listen`, the node also serves `/health`, `/status` and `/metrics` over HTTP
//! (`http`); the core only emits measurements through the `metrics` facade, the shell keeps
//! and serves them.
//!
//! With `--fault-injection` (chaos testing only), the shell can also cut peer links and offset
//! the node's clock (`fault`): the core sees nothing but an unreliable network and clock.
//!
//! With `--certs-dir` every connection, node to node and client to node, is TLS, and nodes
//! prove themselves to each other with certificates of the cluster CA; with `--token-file`
//! clients need a bearer token (`tls`). Without either the node is open, and says so at start.

mod convert;
mod datadir;
mod fault;
pub mod http;
mod services;
pub mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::Duration;

use meridian_proto::auth::{Bearer, Secret};
use meridian_proto::v1 as pb;
use meridian_shard::paxos::NodeId;
use meridian_shard::range::NodeInfo;
use meridian_storage::{Engine, PowerLossEngine, RocksEngine, RocksOptions};
use meridian_truetime::{SimTrueTime, TrueTime};
use tokio::sync::oneshot;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig};

use crate::node::{ApiError, Input, NodeCore, NodeOptions, PeerMsg, Readiness, Request, Response, health, observe};

pub use convert::{error_to_pb, ranges_to_pb, status_to_pb};
pub use datadir::{DataDirError, DataDirLock};
pub use tls::NodeTls;

/// Format version of peer batches (postcard of `Vec<PeerMsg>`).
pub const PEER_FORMAT: u32 = 1;
/// Largest gRPC message accepted or sent (snapshots travel in one message).
pub const GRPC_MESSAGE_MAX: usize = 64 << 20;
/// Inputs the core thread queues before handlers see "unavailable" (backpressure).
const CORE_QUEUE_MAX: usize = 65_536;
/// Inputs stepped before one write.
const DRAIN_MAX: usize = 10_000;
/// Batches queued per peer before new ones are dropped (Paxos resends what matters).
const PEER_QUEUE_MAX: usize = 1_024;
/// How long a client request may wait for its answer when its caller waits longer (or sets no
/// deadline).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A node gives up on a request this much before the caller's deadline (gRPC's `grpc-timeout`)
/// passes — a tenth of the caller's time, at most this — so that its answer,
/// `DEADLINE_EXCEEDED` saying what the request waited for, reaches the caller before the
/// caller's own timer fires (tonic's, on both sides, would only say "Timeout expired").
pub const DEADLINE_MARGIN_MAX: Duration = Duration::from_millis(100);

/// When a handler whose caller waits `deadline` (`None`: no deadline) gives up on the core, and
/// how long it then waits for the core's account of what the request was waiting for.
pub(crate) fn give_up_after(deadline: Option<Duration>) -> (Duration, Duration) {
    let d = deadline.unwrap_or(REQUEST_TIMEOUT);
    let margin = (d / 10).min(DEADLINE_MARGIN_MAX);
    ((d - margin).min(REQUEST_TIMEOUT), margin / 2)
}

/// Errors starting a node.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    /// Storage failed to open.
    #[error("storage: {0}")]
    Storage(#[from] meridian_storage::Error),
    /// The node core refused (identity problems, corrupt metadata).
    #[error(transparent)]
    Node(#[from] crate::node::NodeError),
    /// Binding or serving failed.
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    /// Joining the cluster failed.
    #[error("cannot join: {0}")]
    Join(String),
    /// The TLS material or the token is unusable.
    #[error("TLS: {0}")]
    Tls(String),
    /// Another process uses the data directory.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
}

/// How to run a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Data directory (RocksDB lives in `<dir>/db`).
    pub data_dir: PathBuf,
    /// Address to listen on for gRPC (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Address other nodes and clients use to reach this one (default: the bound address).
    pub advertise: Option<String>,
    /// Nodes of an existing cluster to join through (empty: bootstrap a new cluster, or
    /// restart the one in `data_dir`).
    pub join: Vec<String>,
    /// TrueTime uncertainty ε.
    pub epsilon: Duration,
    /// Node tuning.
    pub options: NodeOptions,
    /// RocksDB tuning.
    pub rocks: RocksOptions,
    /// The address this node serves SQL on (PostgreSQL protocol), told to the cluster when it
    /// joins so tools can find it.
    pub pg_advertise: Option<String>,
    /// Serve `/health`, `/status` and `/metrics` over HTTP on this address (port 0 picks a
    /// free one); told to the cluster like the PostgreSQL address.
    pub http_listen: Option<SocketAddr>,
    /// Obey the `FaultInjection` service (partitions, clock offsets) for chaos testing. Off:
    /// the service refuses every call.
    pub fault_injection: bool,
    /// TLS for every connection, with certificates of the cluster CA between nodes. `None`:
    /// plaintext, as before issue 9 (the node warns once at start).
    pub tls: Option<NodeTls>,
    /// The bearer token clients must present on client-facing services (`None`: no token
    /// needed). Nodes present it to each other too.
    pub token: Option<Secret<String>>,
    /// FOR DURABILITY TESTS ONLY: run on [`PowerLossEngine`] over RocksDB, so that the death
    /// of the process loses every write not yet synced, as a power cut would (`kill -9` alone
    /// keeps them in the page cache).
    pub test_power_loss: bool,
    /// BROKEN ON PURPOSE, for tests: never sync a write, so acknowledged state may be lost (the
    /// power-loss durability test must catch it).
    pub unsafe_skip_sync: bool,
}

enum CoreMsg {
    Input(Input),
    Client {
        id: u64,
        request: Request,
        reply: oneshot::Sender<Response>,
    },
    LeadsAny(oneshot::Sender<bool>),
    /// Whether the node is ready to serve, or why not ([`NodeCore::readiness`]).
    Ready(oneshot::Sender<Readiness>),
    Stop,
}

/// A handle the gRPC services use to reach the core.
#[derive(Clone)]
pub(crate) struct CoreHandle {
    tx: SyncSender<CoreMsg>,
    /// The reply handle of the next client request (the core's `Origin::Client`).
    next_id: Arc<AtomicU64>,
    pub(crate) cluster_id: String,
    pub(crate) node: NodeId,
}

/// Tells the core, when dropped armed, that nobody waits for request `id` any more: a handler
/// future dropped mid-flight (its caller reset the stream, or tonic's own `grpc-timeout` fired)
/// must not leave the request waiting for a lock in the core.
struct CancelOnDrop<'a> {
    tx: &'a SyncSender<CoreMsg>,
    id: Option<u64>,
}

impl CancelOnDrop<'_> {
    /// Sends the cancel now (at most once).
    fn cancel(&mut self) {
        if let Some(id) = self.id.take() {
            // A full queue drops it: the transaction's abort or idle expiry still cleans up.
            let _ = self.tx.try_send(CoreMsg::Input(Input::Cancel { id }));
        }
    }
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        self.cancel();
    }
}

impl CoreHandle {
    /// Runs `request` on the core and waits (at most [`REQUEST_TIMEOUT`]) for the answer.
    pub(crate) async fn call(&self, request: Request) -> Response {
        self.call_within(request, None).await
    }

    /// Runs `request` on the core for a caller who waits `deadline` (gRPC's `grpc-timeout`;
    /// `None`: no deadline). Shortly before it passes ([`give_up_after`], and at most after
    /// [`REQUEST_TIMEOUT`]) the core is told to give up (`Input::Cancel`): a lock wait is
    /// abandoned, and the answer is [`ApiError::DeadlineExceeded`] saying what the request
    /// waited for. Dropped before the answer, it cancels the same way.
    ///
    /// A successful answer to a transaction's request is timed for the latency histogram
    /// ([`observe::latency`]): arrival here to answer, commit wait included.
    pub(crate) async fn call_within(&self, request: Request, deadline: Option<Duration>) -> Response {
        let started = tokio::time::Instant::now();
        let kind = observe::TxnKind::of(&request);
        let answer = self.call_untimed(request, deadline, started).await;
        if let Some(kind) = kind
            && !matches!(answer, Response::Error(_))
        {
            observe::latency(kind, started.elapsed());
        }
        answer
    }

    async fn call_untimed(
        &self,
        request: Request,
        deadline: Option<Duration>,
        started: tokio::time::Instant,
    ) -> Response {
        let (give_up, grace) = give_up_after(deadline);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, mut rx) = oneshot::channel();
        match self.tx.try_send(CoreMsg::Client { id, request, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Response::Error(ApiError::Unavailable("node overloaded: request queue full".into()));
            }
            Err(TrySendError::Disconnected(_)) => {
                return Response::Error(ApiError::Unavailable("node is shutting down".into()));
            }
        }
        let mut cancel = CancelOnDrop { tx: &self.tx, id: Some(id) };
        let shutting_down = || Response::Error(ApiError::Unavailable("node is shutting down".into()));
        match tokio::time::timeout(give_up, &mut rx).await {
            Ok(answer) => {
                cancel.id = None;
                return answer.unwrap_or_else(|_| shutting_down());
            }
            Err(_) => cancel.cancel(),
        }
        let waited = started.elapsed();
        match tokio::time::timeout(grace, rx).await {
            Ok(answer) => answer.unwrap_or_else(|_| shutting_down()),
            Err(_) => Response::Error(ApiError::DeadlineExceeded(match deadline {
                Some(d) if d < REQUEST_TIMEOUT => {
                    format!("no answer within {}ms (the caller's deadline: {}ms)", waited.as_millis(), d.as_millis())
                }
                _ => format!("no answer within {}ms (the node's limit)", waited.as_millis()),
            })),
        }
    }

    /// Whether the node is ready to serve, or why not; a core that does not answer within
    /// `timeout` is not ready (the error says so).
    pub(crate) async fn readiness(&self, timeout: Duration) -> Result<Readiness, String> {
        let (reply, rx) = oneshot::channel();
        match self.tx.try_send(CoreMsg::Ready(reply)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err("the core's request queue is full".into()),
            Err(TrySendError::Disconnected(_)) => return Err("the core thread has stopped".into()),
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) => Err("the core thread has stopped".into()),
            Err(_) => Err(format!("the core thread did not answer within {timeout:?}")),
        }
    }

    /// Hands a batch of peer messages to the core; false if the queue is full.
    pub(crate) fn deliver(&self, from: NodeId, msgs: Vec<PeerMsg>) -> bool {
        self.tx.try_send(CoreMsg::Input(Input::Peer { from, msgs })).is_ok()
    }
}

/// A running node.
pub struct Node {
    /// This node's id.
    pub node_id: NodeId,
    /// Its cluster.
    pub cluster_id: String,
    /// The bound gRPC address.
    pub addr: SocketAddr,
    /// The bound HTTP address (`/health`, `/status`, `/metrics`), if it serves HTTP.
    pub http_addr: Option<SocketAddr>,
    /// Its clock (tests and chaos tooling skew it).
    pub truetime: Arc<SimTrueTime>,
    handle: CoreHandle,
    core_thread: Option<std::thread::JoinHandle<()>>,
    server_stop: Option<oneshot::Sender<()>>,
    server_task: Option<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>>,
    http_stop: Option<oneshot::Sender<()>>,
    http_task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// Held while the node runs: no other process opens its data directory.
    _data_dir: DataDirLock,
}

/// How long shutdown waits for HTTP connections to finish.
const HTTP_DRAIN_MAX: Duration = Duration::from_secs(2);

/// The HTTP address to tell the cluster: the bound one, with the advertised gRPC host when it
/// listens on every interface.
fn http_advertise(bound: SocketAddr, grpc_advertise: &str) -> String {
    if !bound.ip().is_unspecified() {
        return bound.to_string();
    }
    match grpc_advertise.rsplit_once(':') {
        Some((host, _)) => format!("{host}:{}", bound.port()),
        None => bound.to_string(),
    }
}

/// An error with its causes, `a: b: c`: a TLS refusal ("invalid peer certificate: UnknownIssuer")
/// hides behind tonic's bare "transport error".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    // Bounded: error chains are short, but a cyclic one must not hang the node.
    for _ in 0..8 {
        let Some(c) = cause else { break };
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// How this node dials others: TLS with its node certificate, and the token, when it has them.
#[derive(Clone, Debug)]
struct Dialer {
    tls: Option<ClientTlsConfig>,
    bearer: Bearer,
}

/// A channel to another node that adds this node's credentials to every call.
type PeerChannel = InterceptedService<Channel, Bearer>;

impl Dialer {
    fn endpoint(&self, addr: &str) -> Result<tonic::transport::Endpoint, String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let e = tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| format!("bad address {addr}: {e}"))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .tcp_nodelay(true);
        match &self.tls {
            Some(t) => e.tls_config(t.clone()).map_err(|e| format!("TLS for {addr}: {}", error_chain(&e))),
            None => Ok(e),
        }
    }

    async fn connect(&self, addr: &str) -> Result<PeerChannel, String> {
        let ch = self.endpoint(addr)?.connect().await.map_err(|e| format!("{addr}: {}", error_chain(&e)))?;
        Ok(InterceptedService::new(ch, self.bearer.clone()))
    }

    fn connect_lazy(&self, addr: &str) -> Result<PeerChannel, String> {
        Ok(InterceptedService::new(self.endpoint(addr)?.connect_lazy(), self.bearer.clone()))
    }

    async fn admin_client(&self, addr: &str) -> Result<pb::admin_client::AdminClient<PeerChannel>, String> {
        Ok(pb::admin_client::AdminClient::new(self.connect(addr).await?).max_decoding_message_size(GRPC_MESSAGE_MAX))
    }

    /// Asks `addr` which cluster it belongs to.
    async fn ping(&self, addr: &str) -> Result<pb::PingResponse, String> {
        let mut c = pb::node_client::NodeClient::new(self.connect(addr).await?);
        c.ping(pb::PingRequest { from: None })
            .await
            .map(|r| r.into_inner())
            .map_err(|s| format!("{addr}: {}", s.message()))
    }
}

impl Node {
    /// Opens (or bootstraps, or joins) the node and starts serving.
    pub async fn start(cfg: NodeConfig) -> Result<Node, ShellError> {
        std::fs::create_dir_all(&cfg.data_dir)?;
        let data_dir_lock = DataDirLock::acquire(&cfg.data_dir)?;
        let dialer = Dialer {
            tls: cfg.tls.as_ref().map(NodeTls::client_config),
            bearer: Bearer::new(cfg.token.as_ref()).map_err(ShellError::Tls)?,
        };
        let mut server = tonic::transport::Server::builder().tcp_nodelay(true);
        // TLS handshakes are the node's own (`tls::incoming`), so refused ones are logged.
        let acceptor = cfg.tls.as_ref().map(NodeTls::acceptor).transpose().map_err(ShellError::Tls)?;
        match &cfg.tls {
            Some(_) => {}
            None => tracing::warn!(
                "TLS is off: node-to-node and client traffic is unencrypted and peers are not \
                 authenticated; start with --certs-dir (see `meridian cert`) outside a trusted network"
            ),
        }
        if cfg.token.is_none() {
            tracing::warn!("no --token-file: any client that reaches this port may read and write");
        } else if cfg.tls.is_none() {
            tracing::warn!("a token without TLS travels in plaintext: add --certs-dir");
        }
        let rocks = Arc::new(RocksEngine::open(cfg.data_dir.join("db"), &cfg.rocks)?);
        let mut engine: Arc<dyn Engine> = rocks.clone();
        if cfg.test_power_loss {
            tracing::warn!("test storage: writes not yet synced are lost if this process dies (--test-power-loss)");
            engine = Arc::new(PowerLossEngine::open(engine)?);
        }
        if cfg.unsafe_skip_sync {
            tracing::warn!(
                "UNSAFE: this node never syncs its writes (--unsafe-skip-sync): acknowledged data may be lost"
            );
            engine = Arc::new(NeverSync(engine));
        }
        let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
        let addr = listener.local_addr()?;
        let advertise = cfg.advertise.clone().unwrap_or_else(|| addr.to_string());
        let http_listener = match cfg.http_listen {
            Some(a) => Some(tokio::net::TcpListener::bind(a).await?),
            None => None,
        };
        let http_addr = http_listener.as_ref().map(|l| l.local_addr()).transpose()?;
        let tt = Arc::new(SimTrueTime::system(cfg.epsilon));
        let seed = std::process::id() as u64 ^ tt.now().latest.nanos();
        let me_info = NodeInfo {
            id: NodeId(0),
            addr: advertise.clone(),
            http_addr: http_addr.map(|a| http_advertise(a, &advertise)),
            pg_addr: cfg.pg_advertise.clone(),
        };

        let mut core = match NodeCore::stored_identity(&*engine)? {
            Some(ident) => {
                // Restarting. If told to join somewhere, make sure it is the same cluster.
                for j in &cfg.join {
                    if let Ok(p) = dialer.ping(j).await
                        && p.cluster_id != ident.cluster_id
                    {
                        return Err(ShellError::Join(format!(
                            "this data directory belongs to cluster {} but {j} belongs to cluster {}; use an empty --data-dir to join it",
                            ident.cluster_id, p.cluster_id
                        )));
                    }
                }
                NodeCore::open(engine.clone(), cfg.options.clone(), seed)?.expect("identity exists")
            }
            None if cfg.join.is_empty() => {
                let cluster_id = uuid::Uuid::new_v4().to_string();
                tracing::info!(%cluster_id, %advertise, "bootstrapping a new cluster");
                NodeCore::bootstrap(engine.clone(), cfg.options.clone(), cluster_id, me_info.clone(), tt.now(), seed)?
            }
            None => {
                let joined = join_cluster(&dialer, &cfg.join, &me_info).await?;
                tracing::info!(node = %NodeId(joined.node_id), cluster_id = %joined.cluster_id, "joined");
                NodeCore::write_joined_identity(&*engine, joined.cluster_id.clone(), NodeId(joined.node_id))?;
                let mut core =
                    NodeCore::open(engine.clone(), cfg.options.clone(), seed)?.expect("identity just written");
                core.learn_nodes(joined.nodes.into_iter().map(Into::into));
                if let Some(m) = joined.meta {
                    core.learn_meta(m.into());
                }
                core
            }
        };
        let node_id = core.node();
        let cluster_id = core.cluster_id().to_string();
        core.learn_nodes([NodeInfo { id: node_id, ..me_info }]);

        let (tx, rx) = mpsc::sync_channel(CORE_QUEUE_MAX);
        let handle = CoreHandle {
            tx: tx.clone(),
            next_id: Arc::new(AtomicU64::new(1)),
            cluster_id: cluster_id.clone(),
            node: node_id,
        };
        let rt = tokio::runtime::Handle::current();
        let core_tt = tt.clone();
        let core_engine = engine.clone();
        let faults = Arc::new(fault::Faults::new(cfg.fault_injection));
        if cfg.fault_injection {
            tracing::warn!(node = %node_id, "fault injection is on: this node obeys partition and clock-offset requests");
        }
        let core_faults = faults.clone();
        let core_dialer = dialer.clone();
        let core_thread = std::thread::Builder::new()
            .name(format!("meridian-core-{}", node_id.0))
            .spawn(move || core_loop(core, core_engine, core_tt, core_faults, core_dialer, rx, tx, rt))?;

        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let svc = services::Services::new(handle.clone(), tt.clone(), faults.clone());
        let fault_svc = fault::FaultService::new(faults, tt.clone(), node_id);
        let token = cfg.token.clone().map(Arc::new);
        let tls_on = cfg.tls.is_some();
        let peer_gate = tls::Gate::new(tls::GateKind::Peer, tls_on, token.clone());
        let client_gate = tls::Gate::new(tls::GateKind::Client, tls_on, token);
        let router = server
            .add_service(InterceptedService::new(svc.node_service(), peer_gate))
            .add_service(InterceptedService::new(svc.kv_service(), client_gate.clone()))
            .add_service(InterceptedService::new(svc.admin_service(), client_gate.clone()))
            .add_service(InterceptedService::new(fault_svc.service(), client_gate));
        let stopped = async {
            let _ = stop_rx.await;
        };
        let server_task = tokio::spawn(async move {
            match acceptor {
                Some(acceptor) => router.serve_with_incoming_shutdown(tls::incoming(listener, acceptor), stopped).await,
                None => {
                    // Nagle off on every accepted connection: the builder's tcp_nodelay applies
                    // only to listeners tonic binds itself, not to one handed over.
                    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
                    router.serve_with_incoming_shutdown(incoming, stopped).await
                }
            }
        });
        let (http_stop, http_task) = match http_listener {
            Some(l) => {
                let (stop, stopped) = oneshot::channel::<()>();
                let state = http::HttpState { core: handle.clone(), tt: tt.clone(), rocks };
                (Some(stop), Some(tokio::spawn(http::serve(l, state, stopped))))
            }
            None => (None, None),
        };
        tracing::info!(node = %node_id, %addr, ?http_addr, "node serving");
        Ok(Node {
            node_id,
            cluster_id,
            addr,
            http_addr,
            truetime: tt,
            handle,
            core_thread: Some(core_thread),
            server_stop: Some(stop_tx),
            server_task: Some(server_task),
            http_stop,
            http_task,
            _data_dir: data_dir_lock,
        })
    }

    /// Runs a request on this node in process (what a gRPC call would do).
    pub async fn request(&self, request: Request) -> Response {
        self.handle.call(request).await
    }

    /// Stops the node. Gracefully: hands every leadership to another replica first (bounded by
    /// `drain_timeout`), so the cluster does not wait out this node's leases.
    pub async fn shutdown(mut self, drain_timeout: Duration) {
        if !drain_timeout.is_zero() {
            let _ = self.handle.tx.try_send(CoreMsg::Input(Input::Drain));
            let deadline = tokio::time::Instant::now() + drain_timeout;
            while tokio::time::Instant::now() < deadline {
                let (tx, rx) = oneshot::channel();
                if self.handle.tx.try_send(CoreMsg::LeadsAny(tx)).is_err() {
                    break;
                }
                match rx.await {
                    Ok(false) => break,
                    Ok(true) => tokio::time::sleep(Duration::from_millis(50)).await,
                    Err(_) => break,
                }
            }
        }
        if let Some(s) = self.server_stop.take() {
            let _ = s.send(());
        }
        if let Some(s) = self.http_stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.http_task.take() {
            // A browser may hold a keep-alive connection open: do not wait on it for long.
            let _ = tokio::time::timeout(HTTP_DRAIN_MAX, t).await;
        }
        if let Some(t) = self.server_task.take() {
            let _ = t.await;
        }
        let _ = self.handle.tx.send(CoreMsg::Stop);
        if let Some(t) = self.core_thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

/// Longest a new node tries to join before it gives up.
const JOIN_WAIT_MAX: Duration = Duration::from_secs(60);
/// Rounds over every join address, each refused at the TLS handshake over the certificates,
/// after which the node gives up: certificates do not change while it waits.
const JOIN_TLS_REFUSED_ROUNDS_MAX: u32 = 3;

/// Whether a failed dial or call was refused over certificates at the TLS handshake (this node
/// does not trust the peer's, or the peer refused this node's).
fn refused_over_certificates(error: &str) -> bool {
    ["invalid peer certificate", "UnknownCA", "BadCertificate", "UnknownIssuer", "BadSignature"]
        .iter()
        .any(|w| error.contains(w))
}

async fn join_cluster(dialer: &Dialer, join: &[String], me: &NodeInfo) -> Result<pb::JoinResponse, ShellError> {
    let deadline = tokio::time::Instant::now() + JOIN_WAIT_MAX;
    const NO_JOIN_ADDRESS: &str = "no join address given";
    let mut last = String::from(NO_JOIN_ADDRESS);
    let mut logged = String::new();
    let mut tls_refused_rounds = 0;
    while tokio::time::Instant::now() < deadline {
        if last != logged && !join.is_empty() && last != NO_JOIN_ADDRESS {
            // Once per distinct error: a certificate problem shows at once, not after 60 s.
            tracing::warn!(error = %last, "join attempt failed; retrying");
            logged = last.clone();
        }
        let mut all_tls_refused = !join.is_empty();
        for addr in join {
            let failed = match dialer.admin_client(addr).await {
                Ok(mut c) => match c.join(pb::JoinRequest { node: Some(me.into()) }).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        match r.error {
                            None => return Ok(r),
                            Some(e) => format!("{addr}: {}", e.message),
                        }
                    }
                    Err(s) => format!("{addr}: {}", error_chain(&s)),
                },
                Err(e) => e,
            };
            all_tls_refused &= refused_over_certificates(&failed);
            last = failed;
        }
        tls_refused_rounds = if all_tls_refused { tls_refused_rounds + 1 } else { 0 };
        if tls_refused_rounds >= JOIN_TLS_REFUSED_ROUNDS_MAX {
            return Err(ShellError::Join(format!(
                "every join address refused the TLS handshake over certificates ({last}): this node's certificates \
                 are not of the cluster's CA, or the cluster's are not of the CA in this node's --certs-dir; give it \
                 the cluster's ca.crt and a node certificate that CA signed (`meridian cert node --dir <the \
                 cluster's certs dir>`)"
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(ShellError::Join(format!("no node admitted us within {JOIN_WAIT_MAX:?}; last error: {last}")))
}

struct PeerSender {
    addr: String,
    tx: tokio::sync::mpsc::Sender<Vec<PeerMsg>>,
}

/// The core thread's senders to other nodes: one task per node, started on first use and
/// replaced when the node's address changes.
struct Peers {
    senders: HashMap<NodeId, PeerSender>,
    rt: tokio::runtime::Handle,
    dialer: Dialer,
    me: NodeId,
    cluster_id: String,
    core: SyncSender<CoreMsg>,
    faults: Arc<fault::Faults>,
}

impl Peers {
    /// Queues `msgs` for node `to`. A full queue drops them: the peer is slow or gone, and
    /// Paxos resends what matters.
    fn send(&mut self, nodes: &std::collections::BTreeMap<NodeId, NodeInfo>, to: NodeId, msgs: Vec<PeerMsg>) {
        let Some(info) = nodes.get(&to) else {
            tracing::debug!(%to, "no address for node; dropping messages");
            return;
        };
        let (rt, dialer, me, cluster_id, core, faults) =
            (&self.rt, &self.dialer, self.me, &self.cluster_id, &self.core, &self.faults);
        let peer = || spawn_peer(rt, dialer, me, cluster_id, to, &info.addr, core.clone(), faults.clone());
        let sender = self.senders.entry(to).or_insert_with(peer);
        if sender.addr != info.addr {
            *sender = peer();
        }
        let _ = sender.tx.try_send(msgs);
    }

    /// An empty batch to every other node ([`health::NODE_HEARTBEAT`]): its delivery, or
    /// failure, keeps each node's view of who is up current even without range traffic.
    fn heartbeat(&mut self, nodes: &std::collections::BTreeMap<NodeId, NodeInfo>) {
        let me = self.me;
        for to in nodes.keys().filter(|n| **n != me) {
            self.send(nodes, *to, Vec::new());
        }
    }
}

/// What the node last logged about its readiness, so it logs only changes.
#[derive(Default)]
struct HealthLog {
    ready: Option<bool>,
    summary: String,
    warnings: Vec<String>,
}

impl HealthLog {
    /// Logs what changed since the last call: readiness (with the ranges it cannot serve) and
    /// each warning that appeared or cleared.
    fn observe(&mut self, me: NodeId, r: &Readiness) {
        if self.ready != Some(r.ready) || (!r.ready && self.summary != r.summary) {
            if r.ready {
                tracing::info!(node = %me, "ready: {}", r.summary);
            } else {
                tracing::warn!(node = %me, problems = ?r.problems, "not ready: {}", r.summary);
            }
        }
        // By kind, not text: "under-replicated: 7 of 9 ranges …" becoming "5 of 9" while
        // placement adds replicas is the same warning, not one cleared and one new.
        let known = |ws: &[String], w: &str| ws.iter().any(|o| warning_kind(o) == warning_kind(w));
        for w in r.warnings.iter().filter(|w| !known(&self.warnings, w)) {
            tracing::warn!(node = %me, "{w}");
        }
        for w in self.warnings.iter().filter(|w| !known(&r.warnings, w)) {
            tracing::info!(node = %me, "no longer: {}", warning_kind(w).trim());
        }
        self.ready = Some(r.ready);
        self.summary.clone_from(&r.summary);
        self.warnings.clone_from(&r.warnings);
    }
}

/// What a readiness warning is about, without its counts: its text up to the first `:` or
/// ` (`, digits left out.
fn warning_kind(w: &str) -> String {
    let end = [w.find(':'), w.find(" (")].into_iter().flatten().min().unwrap_or(w.len());
    w[..end].chars().filter(|c| !c.is_ascii_digit()).collect()
}

/// The core thread: the only owner of the node core.
#[allow(clippy::too_many_arguments)]
fn core_loop(
    mut core: NodeCore,
    engine: Arc<dyn Engine>,
    tt: Arc<SimTrueTime>,
    faults: Arc<fault::Faults>,
    dialer: Dialer,
    rx: Receiver<CoreMsg>,
    self_tx: SyncSender<CoreMsg>,
    rt: tokio::runtime::Handle,
) {
    let mut replies: HashMap<u64, oneshot::Sender<Response>> = HashMap::new();
    let me = core.node();
    let cluster_id = core.cluster_id().to_string();
    let mut peers = Peers { senders: HashMap::new(), rt, dialer, me, cluster_id, core: self_tx.clone(), faults };
    let mut health_log = HealthLog::default();
    let mut last_heartbeat = std::time::Instant::now();
    loop {
        let now = tt.now();
        let local_now = now.earliest.saturating_add(now.width() / 2);
        let wait = core.next_tick(now).duration_since(local_now).min(Duration::from_millis(100));
        let first = match rx.recv_timeout(wait) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let now = tt.now();
        let mut stop = false;
        let mut handle_msg = |core: &mut NodeCore, m: CoreMsg, stop: &mut bool| match m {
            CoreMsg::Input(i) => core.step(now, i),
            CoreMsg::Client { id, request, reply } => {
                replies.insert(id, reply);
                core.step(now, Input::Client { id, request });
            }
            CoreMsg::LeadsAny(reply) => {
                let _ = reply.send(core.leads_any());
            }
            CoreMsg::Ready(reply) => {
                let _ = reply.send(core.readiness(now));
            }
            CoreMsg::Stop => *stop = true,
        };
        if let Some(m) = first {
            handle_msg(&mut core, m, &mut stop);
            for m in rx.try_iter().take(DRAIN_MAX) {
                handle_msg(&mut core, m, &mut stop);
            }
        }
        core.step(now, Input::Tick);
        if last_heartbeat.elapsed() >= health::NODE_HEARTBEAT {
            last_heartbeat = std::time::Instant::now();
            peers.heartbeat(core.nodes());
            health_log.observe(me, &core.readiness(now));
        }
        // Drain the core: write, then release, until it has nothing left.
        for _ in 0..64 {
            let now = tt.now();
            let mut ready = core.ready(now);
            if !ready.batch.is_empty() {
                let batch = std::mem::take(&mut ready.batch);
                let started = std::time::Instant::now();
                if let Err(e) = engine.write(batch, ready.sync) {
                    // Nothing may be sent that depends on a write that did not happen.
                    tracing::error!(error = %e, "storage write failed; stopping the node");
                    return;
                }
                let sync = if ready.sync { "true" } else { "false" };
                metrics::histogram!(http::STORAGE_WRITE, "sync" => sync).record(started.elapsed().as_secs_f64());
            }
            let out = core.release(now, ready);
            for (id, resp) in out.replies {
                if let Some(r) = replies.remove(&id) {
                    let _ = r.send(resp);
                }
            }
            for (to, msgs) in out.messages {
                if to == me {
                    // Forwarded to ourselves: loop back as input.
                    let _ = self_tx.try_send(CoreMsg::Input(Input::Peer { from: me, msgs }));
                    continue;
                }
                peers.send(core.nodes(), to, msgs);
            }
            if !core.has_work() {
                break;
            }
        }
        if stop {
            return;
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn spawn_peer(
    rt: &tokio::runtime::Handle,
    dialer: &Dialer,
    me: NodeId,
    cluster_id: &str,
    to: NodeId,
    addr: &str,
    core: SyncSender<CoreMsg>,
    faults: Arc<fault::Faults>,
) -> PeerSender {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<PeerMsg>>(PEER_QUEUE_MAX);
    let addr_s = addr.to_string();
    let cluster_id = cluster_id.to_string();
    let dialer = dialer.clone();
    rt.spawn(async move {
        let channel = match dialer.connect_lazy(&addr_s) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(%to, addr = %addr_s, error = %e, "bad peer address");
                return;
            }
        };
        let mut client = pb::node_client::NodeClient::new(channel)
            .max_encoding_message_size(GRPC_MESSAGE_MAX)
            .max_decoding_message_size(GRPC_MESSAGE_MAX);
        let mut reachable = true;
        while let Some(mut msgs) = rx.recv().await {
            // Coalesce whatever else is queued for this peer into the same RPC.
            while let Ok(more) = rx.try_recv() {
                msgs.extend(more);
                if msgs.len() > DRAIN_MAX {
                    break;
                }
            }
            // A partition (fault injection) fails the send as an unreachable peer would.
            let ok = if faults.blocks(to) {
                false
            } else {
                let payload = postcard::to_allocvec(&msgs).expect("peer messages encode");
                let batch = pb::PeerBatch {
                    from: Some(pb::Sender { cluster_id: cluster_id.clone(), node_id: me.0 }),
                    payload,
                    format: PEER_FORMAT,
                };
                match client.deliver(batch).await {
                    Ok(_) => true,
                    Err(s) => {
                        tracing::debug!(%to, error = %s.message(), "peer delivery failed");
                        false
                    }
                }
            };
            if ok != reachable {
                reachable = ok;
                let _ = core.try_send(CoreMsg::Input(Input::PeerReachable { node: to, reachable: ok }));
            }
            if !ok {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    PeerSender { addr: addr.to_string(), tx }
}

/// An engine that never syncs: the broken build of [`NodeConfig::unsafe_skip_sync`].
struct NeverSync(Arc<dyn Engine>);

impl Engine for NeverSync {
    fn get(&self, cf: meridian_storage::Cf, key: &[u8]) -> meridian_storage::Result<Option<Vec<u8>>> {
        self.0.get(cf, key)
    }

    fn scan<'a>(
        &'a self,
        cf: meridian_storage::Cf,
        start: &[u8],
        end: Option<&[u8]>,
        dir: meridian_storage::Direction,
    ) -> meridian_storage::Result<meridian_storage::ScanIter<'a>> {
        self.0.scan(cf, start, end, dir)
    }

    fn write(&self, batch: meridian_storage::WriteBatch, _sync: bool) -> meridian_storage::Result<()> {
        self.0.write(batch, false)
    }

    fn sync(&self) -> meridian_storage::Result<()> {
        Ok(())
    }

    fn kind(&self) -> &'static str {
        self.0.kind()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warning_whose_counts_change_is_the_same_warning() {
        let a = "under-replicated: 7 of 9 ranges here have fewer than 3 replicas (--replication 3); placement is adding replicas";
        let b = "under-replicated: 5 of 9 ranges here have fewer than 3 replicas (--replication 3); placement is adding replicas";
        assert_eq!(warning_kind(a), warning_kind(b));
        let c = "2 of 9 ranges here serve with a replica on an unreachable node (n2): one more failure and they lose their quorum";
        let d = "9 of 9 ranges here serve with a replica on an unreachable node (n2, n3): one more failure and they lose their quorum";
        assert_eq!(warning_kind(c), warning_kind(d));
        assert_ne!(warning_kind(a), warning_kind(c));
    }

    #[test]
    fn a_node_answers_before_its_caller_stops_waiting() {
        let ms = Duration::from_millis;
        let table = [
            (None, (REQUEST_TIMEOUT - DEADLINE_MARGIN_MAX, DEADLINE_MARGIN_MAX / 2)),
            (Some(ms(300)), (ms(270), ms(15))),
            (Some(ms(2_000)), (ms(1_900), ms(50))),
            (Some(Duration::from_secs(60)), (REQUEST_TIMEOUT, ms(50))),
            (Some(Duration::ZERO), (Duration::ZERO, Duration::ZERO)),
        ];
        for (deadline, want) in table {
            assert_eq!(give_up_after(deadline), want, "deadline {deadline:?}");
        }
        for d in (1..=20_000u64).step_by(7).map(ms) {
            let (give_up, grace) = give_up_after(Some(d));
            assert!(give_up + grace < d, "{d:?}: the node's answer must leave before the caller's deadline");
            assert!(give_up <= REQUEST_TIMEOUT, "{d:?}: the node's own limit still holds");
        }
    }
}
