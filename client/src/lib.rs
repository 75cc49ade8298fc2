//! # Meridian Rust client
//!
//! The typed way into a cluster. A [`Client`] knows a few node addresses to start from and
//! learns the rest: it caches range descriptors (which group holds which keys, and where its
//! replicas are), remembers who leads each range, and sends each request straight to that
//! leader. When the cluster has moved on — a leader changed (`NotLeader` with a hint), a range
//! split or moved (`KeyOutOfRange`), a new leader is still waiting for its lease
//! (`Unavailable`) — it refreshes what it knows and retries, with backoff, until the request's
//! deadline. Errors that retrying cannot fix (invalid input) or must not retry blindly (a write
//! whose outcome is unknown) come back to the caller.
//!
//! ```no_run
//! # async fn demo() -> Result<(), meridian_client::ClientError> {
//! let client = meridian_client::Client::connect(["127.0.0.1:7000"]).await?;
//! client.put(b"acct/1", b"100").await?;
//! let (value, ts) = client.get(b"acct/1").await?;
//! assert_eq!(value.as_deref(), Some(&b"100"[..]));
//! println!("read at {ts}");
//! # Ok(()) }
//! ```
//!
//! A secured cluster (issue 9) wants TLS and a token or client certificate:
//! [`Client::connect_with`] takes them in [`ClientOptions`]; [`Client::connect`] is plaintext
//! without credentials, as before.
//!
//! **Deadlines.** Every request has a deadline ([`DEADLINE_DEFAULT`], [`Client::with_deadline`]),
//! retries included, and every attempt tells the node how long the client will wait for it:
//! gRPC's `grpc-timeout` header, `min(time left, limits::ATTEMPT_TIMEOUT)`, added to every call
//! by the channel's [`Attempt`] interceptor. The node gives up at that deadline instead of
//! working on for nobody (a read waiting for a lock under wound-wait, Spanner §4.2.1, aborts
//! its transaction there) and answers `DEADLINE_EXCEEDED` saying what it waited for. A read
//! is retried while time is left; a commit that may have reached the node becomes
//! [`ClientError::Ambiguous`].
//!
//! **One deadline for several requests.** A SQL statement is several requests (catalog reads,
//! row reads, the commit, an abort after a failure); [`with_statement_deadline`] runs them under
//! one deadline, which every request inside it honours as well as its own. [`ClusterKv`] does so
//! for every statement a SQL session runs, so a statement gives up once, at its deadline, and
//! says so (`gave up after 30s (the statement's deadline) …`).
//!
//! **Errors known at once come at once.** A failed call is classified ([`probe`]): some failures
//! no retry can fix — the address is a PostgreSQL or HTTP port, speaks TLS when the client does
//! not (or the reverse), presents a certificate of another CA, is a gRPC server that is not a
//! Meridian node, or refuses the credentials — and fail the request at once
//! ([`ClientError::WrongAddress`], [`ClientError::Unauthenticated`]). A refused TCP connection
//! (nothing listens) may be a node restarting, so it is retried, but briefly: once every address
//! the client could ask has refused for [`REFUSED_FOR_MAX`] in a row, the request fails with
//! `nothing listens at ADDR (connection refused)`. While any node answers, a refusing one is just
//! a replica down: requests go to the others until their deadline.
//!
//! **Retry loops back off.** Every loop waits between attempts with [`backoff::Backoff`]
//! (bounded exponential, jittered), also after an attempt that could not be made — and says why
//! it could not (`no range holds key …`, `node n3 of range … has no known address`), so a request
//! that gives up names the reason, not "no attempt made".

pub mod backoff;
pub mod limits;
mod probe;
mod read;
mod sqlkv;
mod txn;

pub use read::{ReadOnly, Snapshot, SnapshotOn};
pub use sqlkv::{ClusterKv, ROLLBACK_WAIT_MAX};
pub use txn::{TXN_ATTEMPTS_MAX, Transaction, Txn, TxnFuture, TxnOn};

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use meridian_proto::auth::{Bearer, Secret};
use meridian_proto::v1 as pb;
use meridian_shard::GroupId;
use meridian_shard::paxos::NodeId;
use meridian_shard::range::{self, NodeInfo, RangeCache, RangeDescriptor};
use meridian_truetime::Timestamp;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Largest message the client sends or accepts.
pub const GRPC_MESSAGE_MAX: usize = limits::GRPC_MESSAGE_MAX;
/// Default time a request may take, retries included.
pub const DEADLINE_DEFAULT: Duration = Duration::from_secs(30);
/// Ranges fetched per routing lookup.
const LOOKUP_PREFETCH: u32 = 16;
/// How long every address a request could use must keep refusing connections (nothing listens
/// there) before the request gives up instead of waiting for its deadline: long enough for a
/// node restarting on the same port, far below [`DEADLINE_DEFAULT`].
pub const REFUSED_FOR_MAX: Duration = Duration::from_secs(1);

const _: () = assert!(REFUSED_FOR_MAX.as_nanos() * 10 <= DEADLINE_DEFAULT.as_nanos());

/// A deadline shared by every request made inside [`with_statement_deadline`]: a SQL statement's
/// reads, commit and abort give up together, once.
#[derive(Clone, Copy, Debug)]
pub struct StatementDeadline {
    at: tokio::time::Instant,
    budget: Duration,
}

impl StatementDeadline {
    /// `budget` from now.
    pub fn after(budget: Duration) -> StatementDeadline {
        StatementDeadline { at: tokio::time::Instant::now() + budget, budget }
    }

    /// When it passes.
    pub fn at(&self) -> tokio::time::Instant {
        self.at
    }

    /// The time it gave from its start.
    pub fn budget(&self) -> Duration {
        self.budget
    }
}

tokio::task_local! {
    /// The deadline [`with_statement_deadline`] set for the task, if any.
    static STATEMENT: StatementDeadline;
}

/// Runs `f` with every client request it makes (on this task) giving up at `deadline` at the
/// latest, besides its own deadline: one deadline for several requests.
pub async fn with_statement_deadline<F: std::future::Future>(deadline: StatementDeadline, f: F) -> F::Output {
    STATEMENT.scope(deadline, f).await
}

/// A request's deadline: its own (`budget` from `start`), or the statement's it runs in if sooner;
/// with the words that name it in errors.
#[derive(Clone, Copy, Debug)]
struct RequestDeadline {
    at: tokio::time::Instant,
    budget: Duration,
    what: &'static str,
}

impl RequestDeadline {
    fn starting(start: tokio::time::Instant, budget: Duration) -> RequestDeadline {
        let own = RequestDeadline { at: start + budget, budget, what: "the request's deadline" };
        match STATEMENT.try_with(|d| *d) {
            Ok(d) if d.at < own.at => RequestDeadline { at: d.at, budget: d.budget, what: "the statement's deadline" },
            _ => own,
        }
    }

    fn left(&self) -> Duration {
        self.at.saturating_duration_since(tokio::time::Instant::now())
    }
}

/// What went wrong, in terms a caller can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The request can never succeed as written.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A write's outcome is unknown: it may or may not have committed.
    #[error("outcome unknown: {0}")]
    Ambiguous(String),
    /// The transaction was aborted (wounded, timed out, lost its locks): re-run it.
    #[error("transaction aborted, retry it: {0}")]
    Aborted(String),
    /// The cluster could not serve the request before the deadline.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// No node could be reached.
    #[error("cannot reach the cluster: {0}")]
    Transport(String),
    /// The node refused the client's credentials (token or certificate), or its TLS: fix the
    /// credentials, retrying will not help.
    #[error("not authenticated: {0}")]
    Unauthenticated(String),
    /// The address is not a Meridian node's gRPC port (a PostgreSQL or HTTP port, another gRPC
    /// server): give the node's `--listen` address, retrying will not help.
    #[error("wrong address: {0}")]
    WrongAddress(String),
}

/// How to verify the nodes, and which certificate to present (PEM text).
#[derive(Clone, Debug)]
pub struct ClientTls {
    ca_pem: Vec<u8>,
    identity: Option<(Vec<u8>, Secret<Vec<u8>>)>,
    domain: Option<String>,
}

impl ClientTls {
    /// Trust nodes whose certificate the CA `ca_pem` signed.
    pub fn new(ca_pem: Vec<u8>) -> ClientTls {
        ClientTls { ca_pem, identity: None, domain: None }
    }

    /// Present a client certificate (`meridian cert client`) as well.
    pub fn with_identity(mut self, cert_pem: Vec<u8>, key_pem: Secret<Vec<u8>>) -> ClientTls {
        self.identity = Some((cert_pem, key_pem));
        self
    }

    /// Check node certificates for this name instead of the host of each address.
    pub fn with_domain(mut self, domain: String) -> ClientTls {
        self.domain = Some(domain);
        self
    }

    fn config(&self) -> ClientTlsConfig {
        let mut c = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
        if let Some((cert, key)) = &self.identity {
            c = c.identity(Identity::from_pem(cert, key.expose()));
        }
        if let Some(d) = &self.domain {
            c = c.domain_name(d.clone());
        }
        c
    }
}

/// What [`Client::connect_with`] uses to reach a secured cluster.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// TLS to every node (`None`: plaintext).
    pub tls: Option<ClientTls>,
    /// The bearer token the nodes want (`meridian start --token-file`).
    pub token: Option<Secret<String>>,
}

/// A channel to one node that adds the client's token and the attempt's deadline to every call.
pub type NodeChannel = InterceptedService<Channel, Attempt>;

/// What every call to a node carries besides its message: the bearer token, and how long the
/// client waits for this attempt as gRPC's `grpc-timeout` header, so that the node gives up
/// when the client does (tonic's server cancels the call then; Meridian's nodes answer a little
/// earlier, saying what the call waited for). tonic enforces the same value on the client.
#[derive(Clone, Debug)]
pub struct Attempt {
    bearer: Bearer,
    timeout: Duration,
}

impl tonic::service::Interceptor for Attempt {
    fn call(&mut self, req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let mut req = tonic::service::Interceptor::call(&mut self.bearer, req)?;
        req.set_timeout(self.timeout);
        Ok(req)
    }
}

/// A failed call as text, with its causes: a TLS refusal ("invalid peer certificate:
/// UnknownIssuer") hides behind tonic's "transport error".
fn status_text(status: &tonic::Status) -> String {
    use std::error::Error as _;
    let mut s = status.message().to_string();
    let mut cause = status.source();
    // Bounded: chains are short, but a cyclic one must not hang the client.
    for _ in 0..8 {
        let Some(c) = cause else { break };
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// Where a scan of `[…, end)` continues after one range's page: after the last row if the page
/// was cut short, else at the range's end — or nowhere, once `end` (or the keyspace's end) is
/// reached.
pub(crate) fn next_page(last: Option<Vec<u8>>, truncated: bool, range_end: &[u8], end: &[u8]) -> Option<Vec<u8>> {
    if truncated {
        let mut next = last?;
        next.push(0);
        return Some(next);
    }
    if range_end.is_empty() || (!end.is_empty() && range_end >= end) {
        return None;
    }
    Some(range_end.to_vec())
}

/// What the attempts of one request met, for the error it gives up with.
#[derive(Default)]
struct Attempts {
    /// Attempts sent to a node.
    made: u32,
    /// Turns of the loop that found no node to send to.
    not_made: u32,
    /// Why the last of those found none.
    no_attempt: Option<String>,
    /// The last error a node answered with.
    answer: Option<String>,
    /// Addresses whose last call failed in transport, with its failure.
    unreachable: std::collections::BTreeMap<String, String>,
    /// Addresses whose last call was answered.
    answering: std::collections::BTreeSet<String>,
    /// The range of the last attempt.
    range: Option<RangeDescriptor>,
}

impl Attempts {
    fn answered(&mut self, addr: &str, why: String) {
        self.unreachable.remove(addr);
        self.answering.insert(addr.to_string());
        self.answer = Some(format!("{addr}: {why}"));
    }

    fn unreachable(&mut self, addr: &str, why: String) {
        let why = why.strip_prefix(&format!("{addr}: ")).map(str::to_string).unwrap_or(why);
        let why = why.replace(&format!(" at {addr}"), "");
        self.answering.remove(addr);
        self.unreachable.insert(addr.to_string(), why);
    }

    /// The error once the deadline passed: the attempts, the range and how many of its replicas
    /// answered (`replicas`: each voter's address, if known), what the last node to answer said,
    /// which did not answer, and why attempts could not be made.
    fn gave_up(&self, d: &RequestDeadline, replicas: &[(NodeId, Option<String>)]) -> ClientError {
        let mut m = format!("gave up after {:?} ({}) and {} attempts", d.budget, d.what, self.made);
        if let Some(r) = &self.range {
            let answering = replicas.iter().filter(|(_, a)| a.as_ref().is_some_and(|a| self.answering.contains(a)));
            let names: Vec<String> = replicas.iter().map(|(n, _)| n.to_string()).collect();
            m.push_str(&format!(
                " at range {} [{}, {}) on {}: {} of {} replicas answered",
                r.id,
                range::show_key(&r.start),
                if r.end.is_empty() { "+∞".to_string() } else { range::show_key(&r.end) },
                names.join(", "),
                answering.count(),
                replicas.len()
            ));
        }
        if self.not_made > 0 {
            let why = self.no_attempt.as_deref().unwrap_or("no route");
            m.push_str(&format!(" ({} more could not be made: {why})", self.not_made));
        }
        match &self.answer {
            Some(a) => m.push_str(&format!("; last: {a}")),
            None if self.unreachable.is_empty() && self.no_attempt.is_none() => m.push_str("; last: no attempt made"),
            None => {}
        }
        if !self.unreachable.is_empty() {
            let u: Vec<String> = self.unreachable.iter().map(|(a, why)| format!("{a} ({why})")).collect();
            m.push_str(&format!("; not answering: {}", u.join(", ")));
        }
        ClientError::Unavailable(m)
    }
}

/// One answer from a node, classified for the retry loop.
enum Outcome<T> {
    Done(T),
    /// Worth another attempt; `maybe_done`: the node may have carried the request out
    /// (it timed out inside the node), so a request that must not run twice is ambiguous.
    Retry {
        refresh: bool,
        why: String,
        maybe_done: bool,
    },
    Fail(ClientError),
}

/// Why a routing lookup failed: what each address's call said.
#[derive(Debug, Default)]
struct LookupFailure {
    verdicts: Vec<(String, probe::Verdict)>,
}

impl LookupFailure {
    /// The failure no retry can fix, if there is one: refused credentials at any address (they
    /// are the cluster's), or every address wrong.
    fn final_error(&self) -> Option<ClientError> {
        let finals = || {
            self.verdicts.iter().filter_map(|(_, v)| match v {
                probe::Verdict::Final(e) => Some(e),
                _ => None,
            })
        };
        if let Some(e) = finals().find(|e| matches!(e, ClientError::Unauthenticated(_))) {
            return Some(e.clone());
        }
        let all_final = !self.verdicts.is_empty() && finals().count() == self.verdicts.len();
        all_final.then(|| self.error())
    }

    /// Whether no address could answer at all: each refused the connection or is wrong.
    fn nothing_listens(&self) -> bool {
        !self.verdicts.is_empty()
            && self.verdicts.iter().all(|(_, v)| matches!(v, probe::Verdict::Refused(_) | probe::Verdict::Final(_)))
    }

    /// The failure as the caller sees it.
    fn error(&self) -> ClientError {
        if let [(_, probe::Verdict::Final(e))] = self.verdicts.as_slice() {
            return e.clone();
        }
        if self.verdicts.iter().all(|(_, v)| matches!(v, probe::Verdict::Final(ClientError::WrongAddress(_)))) {
            return ClientError::WrongAddress(self.reasons());
        }
        if self.nothing_listens() {
            return ClientError::Transport(format!("{}: is a node running there?", self.reasons()));
        }
        ClientError::Transport(format!("no node answered a routing lookup ({})", self.reasons()))
    }

    fn reasons(&self) -> String {
        let words: Vec<String> = self
            .verdicts
            .iter()
            .map(|(_, v)| match v {
                probe::Verdict::Refused(why) | probe::Verdict::Retry(why) => why.clone(),
                probe::Verdict::Final(e) => e.to_string(),
            })
            .collect();
        if words.is_empty() { "no address to ask".into() } else { words.join("; ") }
    }
}

/// How long every address has refused connections (nothing listens), for the rule of
/// [`REFUSED_FOR_MAX`].
#[derive(Default)]
struct RefusedSince(Option<tokio::time::Instant>);

impl RefusedSince {
    /// Notes a failed lookup; true once nothing has listened anywhere for [`REFUSED_FOR_MAX`].
    fn too_long(&mut self, f: &LookupFailure) -> bool {
        if !f.nothing_listens() {
            self.0 = None;
            return false;
        }
        let since = *self.0.get_or_insert_with(tokio::time::Instant::now);
        since.elapsed() >= REFUSED_FOR_MAX
    }
}

#[derive(Default)]
struct Routes {
    cache: RangeCache,
    leaders: HashMap<GroupId, NodeId>,
    nodes: HashMap<NodeId, NodeInfo>,
}

/// A connection to a cluster. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Client {
    seeds: Vec<String>,
    routes: Mutex<Routes>,
    channels: Mutex<HashMap<String, Channel>>,
    deadline: Duration,
    tls: Option<ClientTlsConfig>,
    bearer: Bearer,
    /// One permit per read-write transaction in flight ([`limits::TXNS_IN_FLIGHT_MAX`]).
    txn_slots: limits::TxnSlots,
}

fn endpoint(addr: &str, tls: Option<&ClientTlsConfig>) -> Result<Endpoint, ClientError> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let e = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map(|e| e.connect_timeout(Duration::from_secs(2)).timeout(limits::ATTEMPT_TIMEOUT).tcp_nodelay(true))
        .map_err(|e| ClientError::Invalid(format!("bad address {addr}: {e}")))?;
    match tls {
        Some(t) => e.tls_config(t.clone()).map_err(|e| ClientError::Invalid(format!("TLS settings for {addr}: {e}"))),
        None => Ok(e),
    }
}

fn classify(e: pb::Error) -> (pb::error::Kind, String, Option<NodeId>, Option<RangeDescriptor>) {
    let kind = pb::error::Kind::try_from(e.kind).unwrap_or(pb::error::Kind::Unspecified);
    (kind, e.message, e.leader.map(NodeId), e.range.map(Into::into))
}

impl Client {
    /// Connects through any of `seeds` (node gRPC addresses) and loads the first routes.
    pub async fn connect<S: Into<String>>(seeds: impl IntoIterator<Item = S>) -> Result<Client, ClientError> {
        Client::connect_with(seeds, ClientOptions::default()).await
    }

    /// [`Client::connect`] to a secured cluster: TLS and a token as `options` say.
    pub async fn connect_with<S: Into<String>>(
        seeds: impl IntoIterator<Item = S>,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let c = Client::unconnected(seeds, options)?;
        // A cluster that just started (or lost its meta leader) answers "unavailable" for a
        // moment: keep asking until the deadline. Wrong addresses and credentials fail at once,
        // addresses where nothing listens after REFUSED_FOR_MAX.
        let deadline = RequestDeadline::starting(tokio::time::Instant::now(), c.deadline);
        let mut backoff = backoff::Backoff::default();
        let mut refused = RefusedSince::default();
        loop {
            let failure = match c.refresh(range::USER_KEYS_START, deadline.left()).await {
                Ok(()) => return Ok(c),
                Err(f) => f,
            };
            if let Some(e) = failure.final_error() {
                return Err(e);
            }
            if refused.too_long(&failure) || deadline.left().is_zero() {
                return Err(failure.error());
            }
            backoff.wait(deadline.left()).await;
        }
    }

    /// A client of the cluster at `seeds` that contacts it only at its first request (which
    /// looks up routes then, as after any split). For a node's own PostgreSQL gateway: after
    /// every node of a cluster restarted, no range has a quorum until enough of them are back,
    /// so a node must not wait for the cluster before it serves. Fails only on bad options.
    pub fn unconnected<S: Into<String>>(
        seeds: impl IntoIterator<Item = S>,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let seeds: Vec<String> = seeds.into_iter().map(Into::into).collect();
        if seeds.is_empty() {
            return Err(ClientError::Invalid("at least one node address is needed".into()));
        }
        Ok(Client {
            seeds,
            routes: Mutex::new(Routes::default()),
            channels: Mutex::new(HashMap::new()),
            deadline: DEADLINE_DEFAULT,
            tls: options.tls.as_ref().map(ClientTls::config),
            bearer: Bearer::new(options.token.as_ref()).map_err(ClientError::Invalid)?,
            txn_slots: limits::TxnSlots::new(limits::TXNS_IN_FLIGHT_MAX),
        })
    }

    /// The same client with another per-request deadline.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// A channel to `addr` whose calls tell the node the client waits `left` at most (capped
    /// at [`limits::ATTEMPT_TIMEOUT`]): the one place every call's `grpc-timeout` is set.
    fn channel(&self, addr: &str, left: Duration) -> Result<NodeChannel, ClientError> {
        let attempt = Attempt { bearer: self.bearer.clone(), timeout: limits::attempt_timeout(left) };
        let mut chans = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = chans.get(addr) {
            return Ok(InterceptedService::new(c.clone(), attempt));
        }
        let c = endpoint(addr, self.tls.as_ref())?.connect_lazy();
        chans.insert(addr.to_string(), c.clone());
        Ok(InterceptedService::new(c, attempt))
    }

    /// A KV client for `addr` for one whole request (its deadline is the client's, or the
    /// statement's if sooner).
    fn kv(&self, addr: &str) -> Result<pb::kv_client::KvClient<NodeChannel>, ClientError> {
        self.kv_within(addr, RequestDeadline::starting(tokio::time::Instant::now(), self.deadline).left())
    }

    /// A KV client for `addr` for one attempt of a request with `left` before its deadline.
    fn kv_within(&self, addr: &str, left: Duration) -> Result<pb::kv_client::KvClient<NodeChannel>, ClientError> {
        Ok(pb::kv_client::KvClient::new(self.channel(addr, left)?)
            .max_decoding_message_size(GRPC_MESSAGE_MAX)
            .max_encoding_message_size(GRPC_MESSAGE_MAX))
    }

    /// An admin client for `addr`; each call waits at most the client's deadline (capped at
    /// [`limits::ATTEMPT_TIMEOUT`]).
    pub fn admin_at(&self, addr: &str) -> Result<pb::admin_client::AdminClient<NodeChannel>, ClientError> {
        Ok(pb::admin_client::AdminClient::new(self.channel(addr, self.deadline)?)
            .max_decoding_message_size(GRPC_MESSAGE_MAX)
            .max_encoding_message_size(GRPC_MESSAGE_MAX))
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every address the client knows, seeds first.
    fn all_addrs(&self) -> Vec<String> {
        let mut v = self.seeds.clone();
        for n in self.routes().nodes.values() {
            if !v.contains(&n.addr) {
                v.push(n.addr.clone());
            }
        }
        v
    }

    fn learn(&self, r: pb::LookupRangeResponse) {
        let mut routes = self.routes();
        for n in r.nodes {
            let n: NodeInfo = n.into();
            routes.nodes.insert(n.id, n);
        }
        for h in r.leaders {
            let (g, h) = range::leader_from_pb(h);
            routes.leaders.insert(g, h.node);
        }
        for d in r.ranges {
            routes.cache.insert(d.into());
        }
    }

    /// Reloads the routes for `key` (and the ranges after it) from the meta range, asking every
    /// address the client knows in turn; each call waits at most `left`.
    async fn refresh(&self, key: &[u8], left: Duration) -> Result<(), LookupFailure> {
        let mut failure = LookupFailure::default();
        for addr in self.all_addrs() {
            let mut kv = match self.kv_within(&addr, left) {
                Ok(kv) => kv,
                Err(e) => {
                    failure.verdicts.push((addr, probe::Verdict::Final(e)));
                    continue;
                }
            };
            let verdict =
                match kv.lookup_range(pb::LookupRangeRequest { key: key.to_vec(), limit: LOOKUP_PREFETCH }).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        match r.error {
                            None if !r.ranges.is_empty() => {
                                self.learn(r);
                                return Ok(());
                            }
                            None => probe::Verdict::Retry(format!("{addr}: no range found")),
                            Some(e) => probe::Verdict::Retry(format!("{addr}: {}", e.message)),
                        }
                    }
                    Err(s) => probe::diagnose(&addr, &s, self.tls.is_some()).await,
                };
            failure.verdicts.push((addr, verdict));
        }
        Err(failure)
    }

    /// Where to send a request about `key`: the range, and the address of its (likely) leader.
    fn target(&self, key: &[u8], attempt: u32) -> Option<(RangeDescriptor, String)> {
        let routes = self.routes();
        let d = routes.cache.lookup(key)?.clone();
        let voters: Vec<NodeId> = d.config.voters.iter().copied().collect();
        let node = match routes.leaders.get(&d.id) {
            Some(l) if attempt % 4 != 3 => *l,
            // Every fourth attempt, or with no hint, try the replicas in turn.
            _ => *voters.get(attempt as usize % voters.len().max(1))?,
        };
        let addr = routes.nodes.get(&node)?.addr.clone();
        Some((d, addr))
    }

    /// Runs `op` against the leader of the range holding `key`, following the cluster's hints
    /// until it succeeds, fails for good, or the deadline passes.
    async fn with_leader<T, F, Fut>(&self, key: &[u8], op: F) -> Result<T, ClientError>
    where
        F: FnMut(pb::kv_client::KvClient<NodeChannel>, RangeDescriptor) -> Fut,
        Fut: std::future::Future<Output = Result<Outcome<T>, tonic::Status>>,
    {
        self.with_leader_sent(key, false, op).await
    }

    /// [`Self::with_leader`] for a request that must not run twice: once it may have reached a
    /// node (the call failed in transport after connecting, or timed out — on either side,
    /// `DEADLINE_EXCEEDED` included), its outcome is unknown and it fails with
    /// [`ClientError::Ambiguous`] instead of being sent again (a single-range commit sent again
    /// to a new leader would be refused as aborted although the first one may still commit).
    ///
    /// Each attempt tells the node the time left, at most [`limits::ATTEMPT_TIMEOUT`].
    pub(crate) async fn with_leader_sent<T, F, Fut>(
        &self,
        key: &[u8],
        not_twice: bool,
        mut op: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(pb::kv_client::KvClient<NodeChannel>, RangeDescriptor) -> Fut,
        Fut: std::future::Future<Output = Result<Outcome<T>, tonic::Status>>,
    {
        let deadline = RequestDeadline::starting(tokio::time::Instant::now(), self.deadline);
        let mut backoff = backoff::Backoff::default();
        let mut tally = Attempts::default();
        // Since when every attempt's connection was refused (nothing listens), if they all were.
        let mut refused_since: Option<tokio::time::Instant> = None;
        let mut lookups_refused = RefusedSince::default();
        loop {
            let left = deadline.left();
            if left.is_zero() {
                let replicas = tally.range.as_ref().map(|r| self.replica_addrs(r)).unwrap_or_default();
                return Err(tally.gave_up(&deadline, &replicas));
            }
            let Some((desc, addr)) = self.target(key, tally.made + tally.not_made) else {
                match self.refresh(key, left).await {
                    Ok(()) if self.target(key, 0).is_some() => continue,
                    Ok(()) => tally.no_attempt = Some(self.why_no_target(key)),
                    Err(f) => {
                        if let Some(e) = f.final_error() {
                            return Err(e);
                        }
                        if lookups_refused.too_long(&f) {
                            return Err(f.error());
                        }
                        tally.no_attempt = Some(format!("no route to it: {}", f.error()));
                    }
                }
                tally.not_made += 1;
                backoff.wait(deadline.left()).await;
                continue;
            };
            let kv = self.kv_within(&addr, left)?;
            tally.made += 1;
            tally.range = Some(desc.clone());
            match op(kv, desc.clone()).await {
                Ok(Outcome::Done(v)) => return Ok(v),
                Ok(Outcome::Fail(e)) => return Err(e),
                Ok(Outcome::Retry { why, maybe_done: true, .. }) if not_twice => {
                    return Err(ClientError::Ambiguous(format!(
                        "{addr}: {why}; the request may or may not have taken effect"
                    )));
                }
                Ok(Outcome::Retry { refresh, why, .. }) => {
                    refused_since = None;
                    tally.answered(&addr, why);
                    if refresh {
                        self.routes().cache.evict(desc.id);
                        let _ = self.refresh(key, deadline.left()).await;
                    }
                }
                Err(status) => {
                    if not_twice && !never_sent(&status) {
                        return Err(ClientError::Ambiguous(format!(
                            "{addr} did not answer ({}); the request may or may not have taken effect",
                            status_text(&status)
                        )));
                    }
                    if status.code() == tonic::Code::DeadlineExceeded {
                        // The node gave up at our deadline: it is up, and its message says
                        // what it waited for.
                        refused_since = None;
                        tally.answered(&addr, status.message().to_string());
                    } else {
                        // Maybe it is down: forget the leader hint so other replicas are tried.
                        self.routes().leaders.remove(&desc.id);
                        match probe::diagnose(&addr, &status, self.tls.is_some()).await {
                            probe::Verdict::Final(e) => return Err(e),
                            probe::Verdict::Refused(why) => {
                                let since = *refused_since.get_or_insert_with(tokio::time::Instant::now);
                                tally.unreachable(&addr, why);
                                // Every replica tried refused for a while: if no address the
                                // client knows listens any more, nothing will answer.
                                if since.elapsed() >= REFUSED_FOR_MAX
                                    && let Err(f) = self.refresh(key, deadline.left()).await
                                    && f.nothing_listens()
                                {
                                    return Err(f.error());
                                }
                            }
                            probe::Verdict::Retry(why) => {
                                refused_since = None;
                                tally.unreachable(&addr, why);
                            }
                        }
                    }
                }
            }
            backoff.wait(deadline.left()).await;
        }
    }

    /// The voters of `r`, each with its address if the client knows it.
    fn replica_addrs(&self, r: &RangeDescriptor) -> Vec<(NodeId, Option<String>)> {
        let routes = self.routes();
        r.config.voters.iter().map(|n| (*n, routes.nodes.get(n).map(|i| i.addr.clone()))).collect()
    }

    /// Why no attempt at `key` can be made with the routes the client has.
    fn why_no_target(&self, key: &[u8]) -> String {
        let routes = self.routes();
        let Some(d) = routes.cache.lookup(key) else {
            return format!("no range holds key {} in the routes the meta range gave", range::show_key(key));
        };
        let unknown: Vec<String> =
            d.config.voters.iter().filter(|n| !routes.nodes.contains_key(n)).map(|n| n.to_string()).collect();
        if d.config.voters.is_empty() {
            format!("range {} has no replicas", d.id)
        } else {
            format!("no address is known for {} of range {} (replicas {})", unknown.join(", "), d.id, d.config)
        }
    }

    /// One attempt of `op` at some replica of `key`'s range — replicas in turn, so reads spread
    /// over followers. `None` if the route is unknown, the replica refused or is unreachable:
    /// the caller then goes to the leader.
    async fn at_some_replica<T, F, Fut>(&self, key: &[u8], op: F) -> Option<T>
    where
        F: FnOnce(pb::kv_client::KvClient<NodeChannel>, RangeDescriptor) -> Fut,
        Fut: std::future::Future<Output = Result<Outcome<T>, tonic::Status>>,
    {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let (desc, addr) = {
            let routes = self.routes();
            let desc = routes.cache.lookup(key)?.clone();
            let voters: Vec<NodeId> = desc.config.voters.iter().copied().collect();
            let i = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % voters.len().max(1);
            let addr = routes.nodes.get(voters.get(i)?)?.addr.clone();
            (desc, addr)
        };
        match op(self.kv(&addr).ok()?, desc).await {
            Ok(Outcome::Done(v)) => Some(v),
            _ => None,
        }
    }

    /// Turns a node's error into a retry decision, learning from its hints.
    fn on_error<T>(&self, desc: &RangeDescriptor, e: pb::Error) -> Outcome<T> {
        use pb::error::Kind;
        let (kind, message, leader, range) = classify(e);
        match kind {
            Kind::NotLeader => {
                let mut routes = self.routes();
                match leader {
                    Some(l) => {
                        routes.leaders.insert(desc.id, l);
                    }
                    None => {
                        routes.leaders.remove(&desc.id);
                    }
                }
                if let Some(r) = range {
                    routes.cache.insert(r);
                }
                Outcome::Retry { refresh: false, why: message, maybe_done: false }
            }
            Kind::KeyOutOfRange | Kind::RangeNotFound => {
                // The node's own descriptor of the range holding the key, if it has one, is at
                // least as new as the meta range's (which learns of a split a moment later).
                let learned = range.is_some_and(|r| self.routes().cache.insert(r));
                Outcome::Retry { refresh: !learned, why: message, maybe_done: false }
            }
            Kind::Unavailable | Kind::Unspecified => Outcome::Retry { refresh: false, why: message, maybe_done: false },
            // Timed out inside the node (a node before deadlines answered its own 10 s limit
            // this way): a commit may still be on its way through Paxos.
            Kind::Timeout => Outcome::Retry { refresh: false, why: message, maybe_done: true },
            Kind::Ambiguous => Outcome::Fail(ClientError::Ambiguous(message)),
            Kind::Aborted => {
                // Aborted because the range split or merged under the transaction: the node
                // sends the range as it is now, so the next attempt routes by it.
                if let Some(r) = range {
                    self.routes().cache.insert(r);
                }
                Outcome::Fail(ClientError::Aborted(message))
            }
            Kind::Invalid => Outcome::Fail(ClientError::Invalid(message)),
        }
    }

    /// The newest committed value of `key` and the commit timestamp of that version.
    pub async fn get(&self, key: &[u8]) -> Result<(Option<Vec<u8>>, Timestamp), ClientError> {
        range::check_user_key(key).map_err(ClientError::Invalid)?;
        self.with_leader(key, |mut kv, desc| async move {
            let r = kv.get(pb::GetRequest { key: key.to_vec() }).await?.into_inner();
            Ok(match r.error {
                None => Outcome::Done((r.value, Timestamp::from_nanos(r.ts))),
                Some(e) => self.on_error(&desc, e),
            })
        })
        .await
    }

    /// Writes `key = value`; returns the commit timestamp.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<Timestamp, ClientError> {
        self.write(vec![(key.to_vec(), Some(value.to_vec()))]).await
    }

    /// Deletes `key`; returns the commit timestamp.
    pub async fn delete(&self, key: &[u8]) -> Result<Timestamp, ClientError> {
        self.write(vec![(key.to_vec(), None)]).await
    }

    /// Atomically writes keys of one range (`None` deletes).
    ///
    /// Sent at most once where it may have arrived: a write retried after a lost answer could
    /// apply twice, the second time above another client's later write of the same key (a lost
    /// update). So after a failure that may have delivered it (a connection dropped mid-call, a
    /// leader that changed before the write was known to commit) the answer is
    /// [`ClientError::Ambiguous`]: read the key to learn whether it took effect. Refusals that
    /// prove nothing was written (not the leader, the range moved) are retried.
    pub async fn write(&self, writes: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<Timestamp, ClientError> {
        let Some((first, _)) = writes.first() else { return Err(ClientError::Invalid("nothing to write".into())) };
        for (k, _) in &writes {
            range::check_user_key(k).map_err(ClientError::Invalid)?;
        }
        limits::check_writes(writes.iter().map(|(k, v)| (&k[..], v.as_deref()))).map_err(ClientError::Invalid)?;
        let first = first.clone();
        let mutations: Vec<pb::Mutation> = writes.into_iter().map(|(key, value)| pb::Mutation { key, value }).collect();
        self.with_leader_sent(&first, true, |mut kv, desc| {
            let mutations = mutations.clone();
            async move {
                let r = kv.write(pb::WriteRequest { mutations }).await?.into_inner();
                Ok(match r.error {
                    None => Outcome::Done(Timestamp::from_nanos(r.ts)),
                    Some(e) => self.on_error(&desc, e),
                })
            }
        })
        .await
    }

    /// Rows with keys in `[start, end)` (`end` empty: to the end), across ranges, up to `limit`.
    /// Each range is read at its leader; the result is not one snapshot across ranges (that is
    /// what read-only transactions are for). A `start` that is no key a client may use (empty,
    /// or a system key) begins at the first user key.
    pub async fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>, ClientError> {
        let mut out = Vec::new();
        let start = match range::check_user_key(start) {
            Ok(()) => start,
            Err(_) if start < range::USER_KEYS_START => range::USER_KEYS_START,
            Err(e) => return Err(ClientError::Invalid(e)),
        };
        let mut cursor = start.to_vec();
        while out.len() < limit {
            let want = (limit - out.len()).min(10_000) as u32;
            let cur = cursor.clone();
            let end_v = end.to_vec();
            let (rows, desc, truncated) = self
                .with_leader(&cursor, |mut kv, d| {
                    let (cur, end_v) = (cur.clone(), end_v.clone());
                    async move {
                        let r = kv.scan(pb::ScanRequest { start: cur, end: end_v, limit: want }).await?.into_inner();
                        Ok(match r.error {
                            None => {
                                let desc: RangeDescriptor = r.range.map(Into::into).unwrap_or(d);
                                Outcome::Done((r.rows, desc, r.truncated))
                            }
                            Some(e) => self.on_error(&d, e),
                        })
                    }
                })
                .await?;
            let last_key = rows.last().map(|kv| kv.key.clone());
            out.extend(rows.into_iter().map(|kv| (kv.key, kv.value)));
            match next_page(last_key, truncated, &desc.end, end) {
                Some(next) => cursor = next,
                None => break,
            }
        }
        Ok(out)
    }

    /// Every range, node and leader the meta range knows.
    pub async fn cluster_view(
        &self,
    ) -> Result<(Vec<RangeDescriptor>, Vec<NodeInfo>, Vec<(GroupId, NodeId)>), ClientError> {
        let mut failure = LookupFailure::default();
        for addr in self.all_addrs() {
            let mut a = match self.admin_at(&addr) {
                Ok(a) => a,
                Err(e) => {
                    failure.verdicts.push((addr, probe::Verdict::Final(e)));
                    continue;
                }
            };
            let verdict = match a.cluster_view(pb::ClusterViewRequest {}).await {
                Ok(r) => {
                    let r = r.into_inner();
                    if let Some(e) = r.error {
                        failure.verdicts.push((addr.clone(), probe::Verdict::Retry(format!("{addr}: {}", e.message))));
                        continue;
                    }
                    let descs = r.ranges.iter().cloned().map(Into::into).collect();
                    let nodes = r.nodes.iter().cloned().map(Into::into).collect();
                    let leaders = r.leaders.iter().map(|h| (GroupId(h.group), NodeId(h.node))).collect();
                    self.learn(r);
                    return Ok((descs, nodes, leaders));
                }
                Err(s) => probe::diagnose(&addr, &s, self.tls.is_some()).await,
            };
            if let probe::Verdict::Final(e @ ClientError::Unauthenticated(_)) = &verdict {
                return Err(e.clone());
            }
            failure.verdicts.push((addr, verdict));
        }
        Err(failure.final_error().unwrap_or_else(|| match failure.error() {
            ClientError::Transport(m) => {
                ClientError::Transport(m.replace("a routing lookup", "a cluster view request"))
            }
            e => e,
        }))
    }

    /// Runs an admin request at the leader of the range holding `key`.
    async fn admin_at_leader<F, Fut>(&self, key: &[u8], op: F) -> Result<String, ClientError>
    where
        F: Fn(pb::admin_client::AdminClient<NodeChannel>) -> Fut,
        Fut: std::future::Future<Output = Result<pb::AdminResponse, tonic::Status>>,
    {
        self.with_leader(key, |kv, desc| {
            // Same node, admin service.
            let _ = kv;
            let addr = self.target(key, 0).map(|(_, a)| a);
            let client = addr.and_then(|a| self.admin_at(&a).ok());
            let fut = client.map(&op);
            async move {
                let Some(fut) = fut else {
                    return Ok(Outcome::Retry { refresh: true, why: "no route".into(), maybe_done: false });
                };
                let r = fut.await?;
                Ok(match r.error {
                    None => Outcome::Done(r.detail),
                    Some(e) => self.on_error(&desc, e),
                })
            }
        })
        .await
    }

    /// Splits the range holding `key` at `key`.
    pub async fn split(&self, key: &[u8]) -> Result<String, ClientError> {
        let k = key.to_vec();
        self.admin_at_leader(key, move |mut a| {
            let k = k.clone();
            async move { a.split(pb::SplitRequest { key: k }).await.map(|r| r.into_inner()) }
        })
        .await
    }

    /// Merges the range starting at or containing `key` with its right neighbour.
    pub async fn merge(&self, key: &[u8]) -> Result<String, ClientError> {
        let group = self.range_of(key).await?.id;
        self.admin_at_leader(key, move |mut a| async move {
            a.merge(pb::MergeRequest { group: group.0 }).await.map(|r| r.into_inner())
        })
        .await
    }

    /// Moves the replica of the range holding `key` from node `from` to node `to`.
    pub async fn move_replica(&self, key: &[u8], from: NodeId, to: NodeId) -> Result<String, ClientError> {
        let group = self.range_of(key).await?.id;
        self.admin_at_leader(key, move |mut a| async move {
            a.move_replica(pb::MoveReplicaRequest { group: group.0, from_node: from.0, to_node: to.0 })
                .await
                .map(|r| r.into_inner())
        })
        .await
    }

    /// Hands the leadership of the range holding `key` to node `to`.
    pub async fn transfer_leader(&self, key: &[u8], to: NodeId) -> Result<String, ClientError> {
        let group = self.range_of(key).await?.id;
        self.admin_at_leader(key, move |mut a| async move {
            a.transfer_leader(pb::TransferLeaderRequest { group: group.0, to_node: to.0 }).await.map(|r| r.into_inner())
        })
        .await
    }

    /// The range holding `key`, as the meta range describes it now.
    ///
    /// Asked again (with backoff, within the client's deadline) while no node can answer: the
    /// meta range may be electing a leader, and each range's leader indexes its own descriptor,
    /// so right after a split the index can briefly hold the left half without the right one
    /// ("no range found"). Wrong addresses and credentials fail at once.
    pub async fn range_of(&self, key: &[u8]) -> Result<RangeDescriptor, ClientError> {
        let deadline = RequestDeadline::starting(tokio::time::Instant::now(), self.deadline);
        let mut backoff = backoff::Backoff::default();
        // Bounded by the deadline: every turn waits at least half a backoff step.
        loop {
            let failure = match self.refresh(key, deadline.left()).await {
                Ok(()) => match self.routes().cache.lookup(key).cloned() {
                    Some(d) => return Ok(d),
                    None => None,
                },
                Err(f) => Some(f),
            };
            if let Some(e) = failure.as_ref().and_then(LookupFailure::final_error) {
                return Err(e);
            }
            if deadline.left().is_zero() {
                return Err(match failure {
                    Some(f) => f.error(),
                    None => ClientError::Unavailable("no range holds the key".into()),
                });
            }
            backoff.wait(deadline.left()).await;
        }
    }

    /// The status of the node at `addr`.
    pub async fn node_status(&self, addr: &str) -> Result<pb::StatusResponse, ClientError> {
        let mut a = self.admin_at(addr)?;
        match a.status(pb::StatusRequest {}).await {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => Err(match probe::diagnose(addr, &s, self.tls.is_some()).await {
                probe::Verdict::Final(e) => e,
                probe::Verdict::Refused(why) => ClientError::Transport(why),
                probe::Verdict::Retry(why) => ClientError::Transport(why),
            }),
        }
    }
}

/// Whether a failed call surely never reached a node: the connection could not be made.
/// Anything else (a reset connection, a deadline) may have delivered the request.
fn never_sent(status: &tonic::Status) -> bool {
    use std::error::Error as _;
    if status.code() != tonic::Code::Unavailable {
        return false;
    }
    let mut source = status.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::AddrNotAvailable
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
            );
        }
        source = e.source();
    }
    status.message().contains("error trying to connect") || status.message().contains("tcp connect error")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_tells_the_node_the_time_left_up_to_one_attempt() {
        use tonic::service::Interceptor as _;
        let ms = Duration::from_millis;
        let token = Secret::new("s3cret".to_string());
        for (left, sent) in [
            (ms(300), ms(300)),
            (ms(1), ms(1)),
            (limits::ATTEMPT_TIMEOUT, limits::ATTEMPT_TIMEOUT),
            (limits::ATTEMPT_TIMEOUT + ms(1), limits::ATTEMPT_TIMEOUT),
            (DEADLINE_DEFAULT, limits::ATTEMPT_TIMEOUT),
        ] {
            assert_eq!(limits::attempt_timeout(left), sent, "time left {left:?}");
            let mut a =
                Attempt { bearer: Bearer::new(Some(&token)).expect("token"), timeout: limits::attempt_timeout(left) };
            let r = a.call(tonic::Request::new(())).expect("nothing to refuse");
            assert_eq!(
                meridian_proto::limits::grpc_timeout(r.metadata()),
                Some(sent),
                "time left {left:?}: {:?}",
                r.metadata()
            );
            let auth = r.metadata().get("authorization").and_then(|v| v.to_str().ok());
            assert_eq!(auth, Some("Bearer s3cret"), "the token still travels");
        }
    }

    #[tokio::test]
    async fn a_refused_connection_was_never_sent_and_a_silent_node_may_have_read_it() {
        let get = || pb::GetRequest { key: b"k".to_vec() };
        // Nobody listens on a port just released: the connection is refused.
        let addr = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind");
        let mut kv = pb::kv_client::KvClient::new(endpoint(&addr.to_string(), None).expect("addr").connect_lazy());
        let st = kv.get(get()).await.expect_err("nobody listens");
        assert!(never_sent(&st), "refused: {st:?}");
        // A node that accepts and never answers may have read the request.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("bound");
        let silent = tokio::spawn(async move {
            let _conn = l.accept().await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let ep = Endpoint::from_shared(format!("http://{addr}")).expect("addr").timeout(Duration::from_millis(300));
        let mut kv = pb::kv_client::KvClient::new(ep.connect_lazy());
        let st = kv.get(get()).await.expect_err("no answer");
        assert!(!never_sent(&st), "silent: {st:?}");
        silent.abort();
    }
}
