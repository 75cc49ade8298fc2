//! # The node core
//!
//! Everything a node decides, as one deterministic state machine: it hosts the replicas of many
//! groups (one per range), routes each request to the right replica, applies chosen commands to
//! the multi-version store, answers clients after commit wait, forwards requests it cannot
//! serve (meta lookups, joins) to the node that can, and manages ranges (split, merge, move,
//! leadership transfer, placement). Like the Paxos replica, it reads no clock and does no I/O
//! besides storage reads and state-machine writes through the [`Engine`]; the tokio shell
//! ([`crate::shell`]) or a simulator feeds it inputs and carries out its outputs in this order:
//!
//! ```text
//!   step(input)… ─► ready() ─► write batch (synced if it holds Paxos state) ─► release()
//!                                                                              │
//!        peer messages (batched per node) ◄── replies to clients ◄── applies ◄─┘
//! ```
//!
//! Nothing leaves `release` until the batch from `ready` is durable: that is where every
//! promise, accepted value and lease vote of every group on the node becomes durable together
//! (group commit across groups).

pub mod api;
mod apply;
pub mod cmd;
pub mod health;
mod manage;
pub mod observe;
mod read;
mod twopc;
mod txn;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use meridian_shard::GroupId;
use meridian_shard::paxos::{self, Command, Config, Event, NodeId, Options, Outbox, ProposeError, Replica, Role};
use meridian_shard::range::{self, META_GROUP, NodeInfo, RangeDescriptor};
use meridian_storage::{Cf, Engine, LogStore, MetaTag, Mvcc, WriteBatch};
use meridian_truetime::{TTInterval, Timestamp};
use serde::{Deserialize, Serialize};

pub use api::{
    ApiError, GroupStatus, InFlightTxn, NodeLiveness, NodeStatus, RangeHealth, Readiness, Request, Response,
};
pub use cmd::{GroupCmd, Origin, PeerMsg, RangeState};
pub use twopc::DECISION_REMEMBERED;

/// Period of two-phase commit's retries while a range this node leads has a transaction in
/// two-phase commit (each retry also has its own pace: `twopc::RESOLVE_RETRY`, `WOUND_RETRY`).
pub const TWOPC_TICK: Duration = Duration::from_millis(100);

/// Errors opening or bootstrapping a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] meridian_storage::Error),
    /// Durable Paxos state could not be read back.
    #[error(transparent)]
    Durable(#[from] paxos::DurableError),
    /// Stored node metadata does not decode.
    #[error("corrupt node metadata: {0}")]
    Corrupt(String),
    /// The data directory already belongs to a node, or to another cluster.
    #[error("{0}")]
    Identity(String),
}

/// Tuning of a node.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// Paxos timing and limits for every group.
    pub paxos: Options,
    /// Replicas per range the placement loop aims for.
    pub replication: usize,
    /// Ranges larger than this (estimated bytes) are split automatically.
    pub split_bytes: u64,
    /// Ranges taking more writes per second than this are split automatically.
    pub split_writes_per_sec: u64,
    /// Whether this node rebalances replicas and leaders of the ranges it leads.
    pub placement: bool,
    /// Whether placement also balances replica and leader counts (off: it only up-replicates
    /// and replaces dead replicas).
    pub rebalance: bool,
    /// How often housekeeping runs (meta refresh, placement, auto-split, meta reconciliation).
    pub housekeeping: Duration,
    /// How long a forwarded request waits for an answer before it is retried elsewhere.
    pub forward_timeout: Duration,
    /// A node unreachable this long is considered dead: its replicas are replaced.
    pub dead_after: Duration,
    /// Versions older than this (and hidden by a newer one) are garbage-collected; reads below
    /// `now − gc_ttl` fail with a clear error.
    pub gc_ttl: Duration,
    /// How long a coordinator remembers a decision after every participant learned it
    /// ([`DECISION_REMEMBERED`] by default). A commit first sent more than half of this
    /// ago is refused as of unknown outcome. Shorter only in simulations, so a client paused
    /// past it fits in a run.
    pub decision_remembered: Duration,
    /// How long a coordinator waits for a transaction's commit after a participant reported it
    /// prepared before it aborts it ([`txn::COMMIT_AFTER_VOTE_MAX`]).
    pub commit_after_vote_max: Duration,
    /// **Unsafe, for tests only**: answer commits without commit wait, breaking external
    /// consistency (the external-consistency checker must then find violations).
    pub unsafe_skip_commit_wait: bool,
    /// **Unsafe, for tests only**: release a transaction's locks as soon as its commit (or
    /// prepare) record is proposed, before it is chosen and applied, breaking strict two-phase
    /// locking (the bank and list-append checkers must then find violations).
    pub unsafe_early_lock_release: bool,
    /// **Unsafe, for tests only**: answer reads as soon as they are served, before `TT.after`
    /// the newest version they show (the simulation's read-answer check must catch it).
    pub unsafe_read_before_commit_wait: bool,
    /// **Unsafe, for tests only**: a leader's read at or below `TT.now().latest` does not raise
    /// its clock or `s_max` (the snapshot-repeatability check must catch it, under clock steps
    /// and hand-offs).
    pub unsafe_reads_promise_nothing: bool,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            paxos: Options::default(),
            replication: 3,
            split_bytes: 64 << 20,
            split_writes_per_sec: 5_000,
            placement: true,
            rebalance: true,
            housekeeping: Duration::from_secs(2),
            forward_timeout: Duration::from_secs(2),
            dead_after: Duration::from_secs(30),
            gc_ttl: Duration::from_secs(3_600),
            decision_remembered: DECISION_REMEMBERED,
            commit_after_vote_max: txn::COMMIT_AFTER_VOTE_MAX,
            unsafe_skip_commit_wait: false,
            unsafe_early_lock_release: false,
            unsafe_read_before_commit_wait: false,
            unsafe_reads_promise_nothing: false,
        }
    }
}

/// A node's identity, stored under [`MetaTag::Node`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdent {
    /// The cluster this node belongs to.
    pub cluster_id: String,
    /// The node.
    pub node: NodeId,
    /// Next counter for minting group ids (persisted before an id is used).
    pub group_counter: u64,
}

const IDENT_KEY: &[u8] = &[MetaTag::Node as u8];
/// The address book and meta range location, cached so a restart can reach the cluster.
const BOOK_KEY: &[u8] = &[MetaTag::Node as u8, b'b'];
const TOMBSTONE_PREFIX: &[u8] = &[MetaTag::Range as u8, b't'];
/// For this long after a split, a member answering "unknown group" for the right half is about
/// to apply the split itself: the leader waits for it rather than sending a snapshot.
const SPLIT_GRACE: Duration = Duration::from_millis(2_000);
/// Most forwards in flight from one node.
const FORWARDS_MAX: usize = 10_000;
/// Most requests parked per range while its leader applies ([`Group::applying`]); beyond it
/// they are refused as before (retryable).
const PARKED_REQUESTS_MAX: usize = 10_000;
/// Longest a request stays parked for a leader to apply its log.
const REQUEST_PARK_MAX: Duration = Duration::from_secs(2);
/// Shortest interval between two ticks.
const TICK_MIN: Duration = Duration::from_micros(100);
/// Most attempts of one forward before it fails.
const FORWARD_ATTEMPTS_MAX: u32 = 8;

fn range_state_key(group: GroupId) -> Vec<u8> {
    let mut k = vec![MetaTag::Applied as u8];
    k.extend_from_slice(&group.0.to_be_bytes());
    k
}

fn tombstone_key(group: GroupId) -> Vec<u8> {
    let mut k = TOMBSTONE_PREFIX.to_vec();
    k.extend_from_slice(&group.0.to_be_bytes());
    k
}

/// An input to the node core.
#[derive(Clone, Debug)]
pub enum Input {
    /// A client request; `id` is the shell's handle for the reply.
    Client {
        /// Reply handle.
        id: u64,
        /// The request.
        request: Request,
    },
    /// A batch of messages from another node.
    Peer {
        /// The sender.
        from: NodeId,
        /// The messages.
        msgs: Vec<PeerMsg>,
    },
    /// Time passed: run timers.
    Tick,
    /// Hand every leadership to other replicas (graceful shutdown).
    Drain,
    /// The shell could (or could not) reach a node: placement avoids unreachable ones.
    PeerReachable {
        /// The node.
        node: NodeId,
        /// Whether its last exchange succeeded.
        reachable: bool,
    },
    /// The shell stopped waiting for the answer to client request `id`: the caller's deadline
    /// passed, or the caller went away. A lock wait is given up; see
    /// `NodeCore::cancel_request`.
    Cancel {
        /// The request's reply handle.
        id: u64,
    },
}

/// What the shell must write before releasing the rest.
pub struct Ready {
    /// Paxos state (and snapshot installs) of every group that changed.
    pub batch: WriteBatch,
    /// Whether the batch holds Paxos state that must be synced before anything is sent.
    pub sync: bool,
    outboxes: Vec<(GroupId, Outbox)>,
}

/// What the shell must carry out after the write.
#[derive(Default, Debug)]
pub struct Release {
    /// Messages per destination node.
    pub messages: BTreeMap<NodeId, Vec<PeerMsg>>,
    /// Answers to clients of this node.
    pub replies: Vec<(u64, Response)>,
}

struct Group {
    replica: Replica,
    state: RangeState,
    /// The timestamps this replica assigned while leading (monotonic, Spanner §4.1.2).
    clock: meridian_txn::LeaderClock,
    /// Writes proposed here and not yet answered: (origin, commit ts).
    proposed: BTreeMap<Origin, Timestamp>,
    /// Writes applied in the last window, for load-based splitting.
    writes_recent: u64,
    /// Whether the meta range has been told about the current descriptor.
    meta_synced_generation: u64,
    /// Whether the lease's leader hint was sent to the meta range.
    leader_reported: Option<u64>,
    /// When this replica was created by applying a split (local time), if it was.
    split_at: Option<Timestamp>,
    /// Locks and parked requests of read-write transactions (leader only).
    txns: txn::GroupTxns,
    /// Lock-free reads waiting for safe time.
    parked_reads: Vec<read::ParkedRead>,
    /// Requests waiting for this leader to apply entries already chosen ([`Group::applying`]):
    /// (origin, request, deadline in local time).
    parked_requests: Vec<(Origin, Request, Timestamp)>,
    /// Follower: when it last asked the leader to close a timestamp (local time).
    close_asked: Timestamp,
}

struct Forward {
    origin: Origin,
    request: Request,
    target: NodeId,
    attempts: u32,
    deadline: Timestamp,
}

/// The node core. See the module documentation.
pub struct NodeCore {
    ident: NodeIdent,
    ident_dirty: bool,
    opts: NodeOptions,
    engine: Arc<dyn Engine>,
    mvcc: Mvcc,
    groups: BTreeMap<GroupId, Group>,
    /// Groups whose replica left this node, with the descriptor generation it left at
    /// (`u64::MAX`: merged away, never to return). A replica is re-created only from a newer
    /// descriptor, so a stale leader cannot resurrect a removed replica.
    tombstones: BTreeMap<GroupId, u64>,
    /// Address book, from the meta range.
    nodes: BTreeMap<NodeId, NodeInfo>,
    /// The meta range's replicas and leader as far as this node knows.
    pub(crate) meta_desc: Option<RangeDescriptor>,
    meta_leader: Option<NodeId>,
    /// The latest cluster view fetched from the meta range (for placement).
    view: Option<manage::ClusterView>,
    outbound: BTreeMap<NodeId, Vec<PeerMsg>>,
    replies: Vec<(u64, Response)>,
    /// Answers held back until `TT.after(ts)` (commit wait, Spanner §4.1.2), with the local
    /// time they were held at (for the commit-wait metric).
    commit_wait: BTreeMap<(Timestamp, Origin), (Response, Timestamp)>,
    /// Read answers held back until `TT.after(ts)`, `ts` the newest version they return: no
    /// one may see a commit's data before its commit wait ends (Spanner §4.1.2), though the
    /// data is applied (and its locks released) as soon as it is chosen.
    read_wait: BTreeMap<(Timestamp, Origin), Response>,
    forwards: BTreeMap<u64, Forward>,
    next_fwd: u64,
    /// Continuations of this node's own housekeeping requests.
    internal: BTreeMap<u64, manage::Internal>,
    next_internal: u64,
    ops: manage::Ops,
    last_housekeeping: Timestamp,
    /// When two-phase commit's retries last ran (local time; see `twopc_tick`).
    last_twopc_tick: Timestamp,
    /// When this node's leader balancer last handed a range away (local time).
    leader_handed_at: Timestamp,
    /// Groups whose replica has something for `ready`.
    dirty: BTreeSet<GroupId>,
    /// Groups that need a `tick` at or after the given local time.
    ticks: BTreeMap<GroupId, Timestamp>,
    seed: u64,
    draining: bool,
    /// The address book or meta location changed and should be saved.
    book_dirty: bool,
    /// Nodes the shell could not reach, and since when (local time).
    unreachable: BTreeMap<NodeId, Timestamp>,
    /// When each other node last sent something (local time; see `health`).
    heard: BTreeMap<NodeId, Timestamp>,
    /// Last id given to a lock request or commit of a read-write transaction.
    txn_req: u64,
    /// Transactions whose write was applied here: their locks go after the apply.
    applied_txns: Vec<(GroupId, meridian_txn::TxnId)>,
    /// Client commit requests whose coordinator proposed an abort on their behalf: answered as
    /// a commit (written or aborted) once the log's first decision is applied.
    commit_answers: BTreeSet<Origin>,
    /// Coordinator decisions to send to participants once `TT.after(ts)` (commit wait).
    resolve_wait: BTreeSet<(Timestamp, GroupId, meridian_txn::TxnId)>,
    /// Leaders of groups not hosted here, learned from refusals.
    leader_hints: BTreeMap<GroupId, NodeId>,
    /// When versions were last garbage-collected (local time).
    last_gc: Timestamp,
}

impl NodeCore {
    /// Bootstraps a new cluster on an empty engine: this node becomes node 1, hosting the meta
    /// range and one user range `[0x01, +∞)`, and campaigns for both.
    pub fn bootstrap(
        engine: Arc<dyn Engine>,
        opts: NodeOptions,
        cluster_id: String,
        info: NodeInfo,
        now: TTInterval,
        seed: u64,
    ) -> Result<NodeCore, NodeError> {
        if engine.get(Cf::Meta, IDENT_KEY)?.is_some() {
            return Err(NodeError::Identity(
                "the data directory already holds a node; start it without bootstrapping".into(),
            ));
        }
        let me = NodeId(1);
        let info = NodeInfo { id: me, ..info };
        let config = Config::voters([me]);
        let meta = RangeDescriptor {
            id: META_GROUP,
            start: vec![0x00],
            end: range::USER_KEYS_START.to_vec(),
            config: config.clone(),
            generation: 1,
        };
        let user = RangeDescriptor {
            id: range::mint_group_id(me, 1),
            start: range::USER_KEYS_START.to_vec(),
            end: Vec::new(),
            config,
            generation: 1,
        };
        let ident = NodeIdent { cluster_id, node: me, group_counter: 2 };
        let mut b = WriteBatch::new();
        b.put(Cf::Meta, IDENT_KEY.to_vec(), postcard::to_allocvec(&ident).expect("ident encodes"));
        // The meta range's initial contents: both descriptors and this node, at "now".
        let ts = now.latest;
        for d in [&meta, &user] {
            meridian_storage::mvcc::put(&mut b, &d.meta_key(), ts, &postcard::to_allocvec(d).expect("encodes"))?;
        }
        meridian_storage::mvcc::put(
            &mut b,
            &range::meta_node_key(me),
            ts,
            &postcard::to_allocvec(&info).expect("encodes"),
        )?;
        for d in [&meta, &user] {
            let st = RangeState::new(d.clone(), ts);
            b.put(Cf::Meta, range_state_key(d.id), postcard::to_allocvec(&st).expect("encodes"));
        }
        engine.write(b, true)?;
        let mut core = Self::open(engine, opts, seed)?.expect("identity was just written");
        for g in [META_GROUP, user.id] {
            core.groups.get_mut(&g).expect("bootstrapped group").replica.campaign(now);
            core.dirty.insert(g);
        }
        Ok(core)
    }

    /// Writes the identity a node received when it joined (see [`Request::Join`]).
    pub fn write_joined_identity(engine: &dyn Engine, cluster_id: String, node: NodeId) -> Result<(), NodeError> {
        if let Some(raw) = engine.get(Cf::Meta, IDENT_KEY)? {
            let old: NodeIdent = postcard::from_bytes(&raw).map_err(|e| NodeError::Corrupt(e.to_string()))?;
            return Err(NodeError::Identity(format!(
                "the data directory already belongs to node {} of cluster {}",
                old.node, old.cluster_id
            )));
        }
        let ident = NodeIdent { cluster_id, node, group_counter: 1 };
        let mut b = WriteBatch::new();
        b.put(Cf::Meta, IDENT_KEY.to_vec(), postcard::to_allocvec(&ident).expect("ident encodes"));
        engine.write(b, true)?;
        Ok(())
    }

    /// The identity stored in `engine`, if it holds a node.
    pub fn stored_identity(engine: &dyn Engine) -> Result<Option<NodeIdent>, NodeError> {
        match engine.get(Cf::Meta, IDENT_KEY)? {
            None => Ok(None),
            Some(raw) => {
                postcard::from_bytes(&raw).map(Some).map_err(|e| NodeError::Corrupt(format!("node identity: {e}")))
            }
        }
    }

    /// Opens the node stored in `engine` (`None` if it holds none), restarting every replica.
    pub fn open(engine: Arc<dyn Engine>, opts: NodeOptions, seed: u64) -> Result<Option<NodeCore>, NodeError> {
        let Some(ident) = Self::stored_identity(&*engine)? else { return Ok(None) };
        let mvcc = Mvcc::open(engine.clone())?;
        let logs = LogStore::new(engine.clone());
        let mut tombstones = BTreeMap::new();
        let mut end = TOMBSTONE_PREFIX.to_vec();
        *end.last_mut().expect("non-empty") += 1;
        for kv in engine.scan(Cf::Meta, TOMBSTONE_PREFIX, Some(&end), meridian_storage::Direction::Forward)? {
            let (k, v) = kv?;
            let id: [u8; 8] =
                k[TOMBSTONE_PREFIX.len()..].try_into().map_err(|_| NodeError::Corrupt("tombstone key".into()))?;
            let generation = match v.len() {
                0 => u64::MAX,
                8 => u64::from_be_bytes(v[..].try_into().expect("length checked")),
                _ => return Err(NodeError::Corrupt("tombstone value".into())),
            };
            tombstones.insert(GroupId(u64::from_be_bytes(id)), generation);
        }
        let mut groups = BTreeMap::new();
        let state_start = [MetaTag::Applied as u8];
        let state_end = [MetaTag::Applied as u8 + 1];
        for kv in engine.scan(Cf::Meta, &state_start, Some(&state_end), meridian_storage::Direction::Forward)? {
            let (_, raw) = kv?;
            let state: RangeState =
                postcard::from_bytes(&raw).map_err(|e| NodeError::Corrupt(format!("range state: {e}")))?;
            let gid = state.desc.id;
            if tombstones.contains_key(&gid) {
                continue;
            }
            let (hard_state, log) = paxos::load(gid, &logs)?;
            let durable = paxos::Durable {
                hard_state,
                log,
                applied: state.applied,
                config: state.desc.config.clone(),
                awaiting_snapshot: false,
            };
            let replica = Replica::restart(ident.node, opts.paxos.clone(), seed ^ gid.0, durable);
            groups.insert(gid, Group::new(replica, state));
        }
        let meta_desc = groups.get(&META_GROUP).map(|g| g.state.desc.clone());
        let mut core = NodeCore {
            ident,
            ident_dirty: false,
            opts,
            engine,
            mvcc,
            groups,
            tombstones,
            nodes: BTreeMap::new(),
            meta_desc,
            meta_leader: None,
            view: None,
            outbound: BTreeMap::new(),
            replies: Vec::new(),
            commit_wait: BTreeMap::new(),
            read_wait: BTreeMap::new(),
            forwards: BTreeMap::new(),
            next_fwd: 1,
            internal: BTreeMap::new(),
            next_internal: 1,
            ops: manage::Ops::default(),
            last_housekeeping: Timestamp::ZERO,
            last_twopc_tick: Timestamp::ZERO,
            leader_handed_at: Timestamp::ZERO,
            dirty: BTreeSet::new(),
            ticks: BTreeMap::new(),
            seed,
            draining: false,
            book_dirty: false,
            unreachable: BTreeMap::new(),
            heard: BTreeMap::new(),
            txn_req: 0,
            applied_txns: Vec::new(),
            commit_answers: BTreeSet::new(),
            resolve_wait: BTreeSet::new(),
            leader_hints: BTreeMap::new(),
            last_gc: Timestamp::ZERO,
        };
        if let Some(raw) = core.engine.get(Cf::Meta, BOOK_KEY)? {
            let (nodes, meta): (Vec<NodeInfo>, Option<RangeDescriptor>) =
                postcard::from_bytes(&raw).map_err(|e| NodeError::Corrupt(format!("address book: {e}")))?;
            core.nodes.extend(nodes.into_iter().map(|n| (n.id, n)));
            if core.meta_desc.is_none() {
                core.meta_desc = meta;
            }
        }
        core.load_nodes_from_local_meta();
        let ids: Vec<GroupId> = core.groups.keys().copied().collect();
        core.dirty.extend(ids);
        Ok(Some(core))
    }

    /// This node.
    pub fn node(&self) -> NodeId {
        self.ident.node
    }

    /// Its cluster.
    pub fn cluster_id(&self) -> &str {
        &self.ident.cluster_id
    }

    /// The address book.
    pub fn nodes(&self) -> &BTreeMap<NodeId, NodeInfo> {
        &self.nodes
    }

    /// Adds or updates addresses (from a join, the command line, or the meta range).
    pub fn learn_nodes(&mut self, nodes: impl IntoIterator<Item = NodeInfo>) {
        for n in nodes {
            if self.nodes.get(&n.id) != Some(&n) {
                self.nodes.insert(n.id, n);
                self.book_dirty = true;
            }
        }
    }

    /// Sets where the meta range lives (learned at join).
    pub fn learn_meta(&mut self, desc: RangeDescriptor) {
        if self.meta_desc.as_ref().is_none_or(|d| d.generation < desc.generation) {
            self.meta_desc = Some(desc);
            self.book_dirty = true;
        }
    }

    /// Where the meta range lives, as far as this node knows.
    pub fn meta_descriptor(&self) -> Option<&RangeDescriptor> {
        self.meta_desc.as_ref()
    }

    /// Number of replicas hosted.
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// Whether every hosted range has a known leader (used by `demo` to wait until ready).
    pub fn every_group_has_leader(&self) -> bool {
        self.groups.values().all(|g| g.replica.leader_hint().is_some())
    }

    /// Whether this node still leads any group (used by graceful shutdown).
    pub fn leads_any(&self) -> bool {
        self.groups.values().any(|g| g.replica.role() == Role::Leader)
    }

    fn load_nodes_from_local_meta(&mut self) {
        if !self.groups.contains_key(&META_GROUP) {
            return;
        }
        let (lo, hi) = range::meta_node_span();
        if let Ok(rows) = self.mvcc.scan(&lo, Some(&hi), Timestamp::MAX, usize::MAX) {
            for (_, v) in rows {
                if let Ok(info) = postcard::from_bytes::<NodeInfo>(&v) {
                    self.nodes.insert(info.id, info);
                }
            }
        }
    }

    // ----- inputs -----

    /// Handles one input.
    pub fn step(&mut self, now: TTInterval, input: Input) {
        match input {
            Input::Client { id, request } => self.handle_request(now, Origin::Client(id), request),
            Input::Peer { from, msgs } => {
                self.heard_from(now, from);
                for m in msgs {
                    self.handle_peer(now, from, m);
                }
            }
            Input::Tick => self.tick(now),
            Input::Drain => {
                self.draining = true;
                self.drain_leadership(now);
            }
            Input::PeerReachable { node, reachable } => {
                if reachable {
                    self.unreachable.remove(&node);
                } else {
                    self.unreachable.entry(node).or_insert_with(|| local_of(now));
                }
            }
            Input::Cancel { id } => self.cancel_request(now, Origin::Client(id)),
        }
    }

    /// Nobody waits for `origin`'s answer any more ([`Input::Cancel`]). A lock wait is given up
    /// (its transaction aborts in that range: [`Self::cancel_lock_wait`]) and a request parked
    /// for its leader to apply is dropped, each answered [`ApiError::DeadlineExceeded`]. Work
    /// that cannot be called back goes on — a write proposed to Paxos may still commit, a
    /// commit-waited answer still leaves after `TT.after(s)` — and `origin` is told now what it
    /// waits for (the shell drops the later answer). Unknown requests (already answered) are
    /// ignored.
    fn cancel_request(&mut self, now: TTInterval, origin: Origin) {
        if self.cancel_lock_wait(now, origin) {
            return;
        }
        let parked = self.groups.iter_mut().find_map(|(gid, g)| {
            let i = g.parked_requests.iter().position(|(o, ..)| *o == origin)?;
            g.parked_requests.remove(i);
            Some(*gid)
        });
        let what = if let Some(gid) = parked {
            format!("range {gid}'s new leader to apply its log")
        } else if let Some((gid, ts)) =
            self.groups.iter().find_map(|(gid, g)| g.proposed.get(&origin).map(|ts| (*gid, *ts)))
        {
            format!("its write at {ts} to be chosen and applied by range {gid}'s Paxos group; it may still commit")
        } else if let Some((ts, _)) = self.commit_wait.keys().find(|(_, o)| *o == origin) {
            format!("commit wait until TT.after({ts}) (Spanner §4.1.2); it may have committed")
        } else if let Some((ts, _)) = self.read_wait.keys().find(|(_, o)| *o == origin).copied() {
            self.read_wait.remove(&(ts, origin));
            format!("the commit wait of the version at {ts} it read (Spanner §4.1.2)")
        } else if self.commit_answers.contains(&origin) {
            "its coordinator's decision to be applied; it may have committed".to_string()
        } else if let Some(f) = self.forwards.values().find(|f| f.origin == origin) {
            format!("an answer from node {} (forwarded)", f.target)
        } else {
            return;
        };
        self.fail(now, origin, ApiError::DeadlineExceeded(format!("gave up waiting for {what}")));
    }

    fn handle_peer(&mut self, now: TTInterval, from: NodeId, msg: PeerMsg) {
        match msg {
            PeerMsg::Paxos { group, msg } => match self.groups.get_mut(&group) {
                Some(g) => {
                    g.replica.receive(now, from, msg);
                    self.dirty.insert(group);
                }
                // A removed replica stays silent to what is plainly old traffic (no ballot can
                // re-create it), but tells a leader that may have re-added it.
                None if self.tombstones.get(&group) == Some(&u64::MAX) => {}
                None => self.send(from, PeerMsg::UnknownGroup { group }),
            },
            PeerMsg::UnknownGroup { group } => self.on_unknown_group(now, from, group),
            PeerMsg::InitReplica { desc } => self.init_replica(desc),
            PeerMsg::Forward { fwd, request } => self.handle_request(now, Origin::Peer { node: from, fwd }, request),
            PeerMsg::ForwardReply { fwd, response } => self.on_forward_reply(now, fwd, response),
            PeerMsg::CloseTimestamp { group, ts } => self.close_timestamp(now, group, ts),
        }
    }

    fn send(&mut self, to: NodeId, msg: PeerMsg) {
        self.outbound.entry(to).or_default().push(msg);
    }

    /// Delivers a response to whoever waits for it.
    fn respond(&mut self, now: TTInterval, origin: Origin, response: Response) {
        match origin {
            Origin::Client(id) => self.replies.push((id, response)),
            Origin::Peer { node, fwd } => self.send(node, PeerMsg::ForwardReply { fwd, response }),
            Origin::Internal(id) => self.on_internal_reply(now, id, response),
        }
    }

    fn fail(&mut self, now: TTInterval, origin: Origin, e: ApiError) {
        self.respond(now, origin, Response::Error(e));
    }

    /// The local replica whose range holds `key`.
    fn group_for_key(&self, key: &[u8]) -> Option<GroupId> {
        self.groups.iter().find(|(_, g)| g.state.desc.contains(key) && g.state.frozen_into.is_none()).map(|(id, _)| *id)
    }

    /// Why this replica does not serve `gid`: the leader to try, or, when it knows no live one,
    /// why not and how many replicas it reaches ([`ApiError::NoLeader`], see `health`).
    fn not_leader(&self, gid: GroupId) -> ApiError {
        if let Some(e) = self.no_leader(gid) {
            return e;
        }
        let g = &self.groups[&gid];
        ApiError::NotLeader { group: gid, leader: g.replica.leader_hint(), desc: Some(Box::new(g.state.desc.clone())) }
    }

    /// Routes a request: served here, forwarded, or refused with a routing hint.
    fn handle_request(&mut self, now: TTInterval, origin: Origin, request: Request) {
        if request.is_meta() {
            return self.handle_meta_request(now, origin, request);
        }
        if let Some(g) = self.request_group(&request).and_then(|gid| self.groups.get_mut(&gid))
            && g.applying(now)
            && g.parked_requests.len() < PARKED_REQUESTS_MAX
        {
            // Its answer waits for entries on their way to storage: serve it when they apply
            // (`release`) rather than refuse it and have the client back off and ask again.
            g.parked_requests.push((origin, request, local_of(now).saturating_add(REQUEST_PARK_MAX)));
            return;
        }
        match request {
            Request::Get { key } => self.serve_get(now, origin, key),
            Request::Scan { start, end, limit } => self.serve_scan(now, origin, start, end, limit),
            Request::Write { writes } => self.serve_write(now, origin, writes),
            Request::Status => {
                let st = self.status(now);
                self.respond(now, origin, Response::Status(st));
            }
            Request::Split { key } => self.start_split(now, origin, key),
            Request::Merge { group } => self.start_merge(now, origin, group),
            Request::Freeze { group, into } => self.serve_freeze(now, origin, group, into),
            Request::MoveReplica { group, from, to } => self.start_move(now, origin, group, from, to),
            Request::TransferLeader { group, to } => self.serve_transfer(now, origin, group, to),
            Request::TxnGet { txn, key } => self.serve_txn_get(now, origin, txn, key),
            Request::TxnCommit { txn, reads, read_spans, read_epoch, writes, role, range } => {
                self.serve_txn_commit(now, origin, txn, (reads, read_spans, read_epoch), writes, (role, range))
            }
            Request::TxnScan { txn, start, end, limit } => self.serve_txn_scan(now, origin, txn, (start, end, limit)),
            Request::TxnResolve { group, txn, commit_ts } => self.serve_txn_resolve(now, origin, group, txn, commit_ts),
            Request::TxnInquire { group, txn, wound } => self.serve_txn_inquire(now, origin, group, txn, wound),
            Request::TxnPrepared { group, txn, participant, prepare_ts } => {
                self.serve_txn_prepared(now, origin, group, txn, (participant, prepare_ts))
            }
            Request::Read { start, end, limit, ts } => self.serve_read(now, origin, start, end, limit, ts),
            Request::TxnAbort { txn, key, range } => self.serve_txn_abort(now, origin, txn, key, range),
            Request::TxnKeepalive { txn, key } => self.serve_txn_keepalive(now, origin, txn, key),
            Request::RangeLookup { .. }
            | Request::ClusterView
            | Request::Join { .. }
            | Request::PutDescriptors { .. }
            | Request::PutLeader { .. } => unreachable!("meta requests are routed above"),
        }
    }

    /// The range a leader-only request is for, where it says (by group or by key).
    fn request_group(&self, request: &Request) -> Option<GroupId> {
        let key = match request {
            Request::TxnResolve { group, .. }
            | Request::TxnInquire { group, .. }
            | Request::TxnPrepared { group, .. } => {
                return Some(*group);
            }
            Request::Get { key }
            | Request::TxnGet { key, .. }
            | Request::TxnAbort { key, .. }
            | Request::TxnKeepalive { key, .. } => key,
            Request::Scan { start, .. } | Request::TxnScan { start, .. } => start,
            Request::TxnCommit { writes, reads, read_spans, .. } => {
                writes.first().map(|(k, _)| k).or(reads.first()).or(read_spans.first().map(|(start, _)| start))?
            }
            _ => return None,
        };
        self.group_for_key(key)
    }

    /// Serves the requests parked on `gid` while it applied (see [`Group::applying`]) — again
    /// parked if it is still behind — and fails those past their deadline.
    pub(super) fn retry_parked_requests(&mut self, now: TTInterval, gid: GroupId) {
        let Some(g) = self.groups.get_mut(&gid) else { return };
        if g.parked_requests.is_empty() {
            return;
        }
        let local = local_of(now);
        for (origin, request, deadline) in std::mem::take(&mut g.parked_requests) {
            if local >= deadline {
                let e = ApiError::Unavailable(format!(
                    "range {gid}: the leader did not apply its log within {REQUEST_PARK_MAX:?}"
                ));
                self.fail(now, origin, e);
            } else {
                self.handle_request(now, origin, request);
            }
        }
    }

    fn serve_get(&mut self, now: TTInterval, origin: Origin, key: Vec<u8>) {
        if let Err(e) = range::check_user_key(&key) {
            return self.fail(now, origin, ApiError::Invalid(e));
        }
        let Some(gid) = self.group_for_key(&key) else {
            return self.fail(
                now,
                origin,
                ApiError::KeyOutOfRange { key: key.clone(), desc: self.last_known_desc(&key).map(Box::new) },
            );
        };
        if !self.groups[&gid].serves(now) {
            return self.fail(now, origin, self.read_refusal(gid));
        }
        if let Some(e) = self.prepared_refusal(gid, &meridian_txn::Span::key(key.clone())) {
            return self.fail(now, origin, e);
        }
        match self.mvcc.get_version(&key, Timestamp::MAX) {
            Ok(v) => {
                let (value, ts) = match v {
                    Some(v) => (v.value, v.ts),
                    None => (None, Timestamp::ZERO),
                };
                self.respond_visible(now, origin, Response::Value { value, ts }, ts);
            }
            Err(e) => self.fail(now, origin, ApiError::Unavailable(format!("storage: {e}"))),
        }
    }

    /// A newest-value read must not miss a transaction that committed elsewhere and is still
    /// prepared here (its outcome is on its way): the client retries shortly.
    fn prepared_refusal(&self, gid: GroupId, span: &meridian_txn::Span) -> Option<ApiError> {
        let g = &self.groups[&gid];
        let p = g.state.prepared.values().find(|p| p.writes.iter().any(|(k, _)| span.contains_key(k)))?;
        Some(ApiError::Unavailable(format!(
            "range {gid}: transaction {} is committing keys read here; retry",
            p.txn.id
        )))
    }

    /// Why a replica cannot serve a lease read: not the leader, or a leader that cannot serve yet.
    fn read_refusal(&self, gid: GroupId) -> ApiError {
        self.not_leader(gid)
    }

    fn serve_scan(&mut self, now: TTInterval, origin: Origin, start: Vec<u8>, end: Vec<u8>, limit: u32) {
        let Some(gid) = self.group_for_key(&start) else {
            return self.fail(
                now,
                origin,
                ApiError::KeyOutOfRange { key: start.clone(), desc: self.last_known_desc(&start).map(Box::new) },
            );
        };
        if !self.groups[&gid].serves(now) {
            return self.fail(now, origin, self.read_refusal(gid));
        }
        if let Some(e) =
            self.prepared_refusal(gid, &meridian_txn::Span::Range { start: start.clone(), end: end.clone() })
        {
            return self.fail(now, origin, e);
        }
        let desc = self.groups[&gid].state.desc.clone();
        // Clip to the range: the client continues in the next range itself.
        let end_clipped = txn::clip_end(&desc, end);
        let limit = limit.clamp(1, api::SCAN_ROWS_MAX) as usize;
        let end_opt = (!end_clipped.is_empty()).then_some(end_clipped.as_slice());
        match self.mvcc.scan_newest(&start, end_opt, Timestamp::MAX, limit + 1) {
            Ok((mut rows, newest)) => {
                let truncated = rows.len() > limit;
                rows.truncate(limit);
                self.respond_visible(now, origin, Response::Rows { rows, desc, truncated }, newest);
            }
            Err(e) => self.fail(now, origin, ApiError::Unavailable(format!("storage: {e}"))),
        }
    }

    fn serve_write(&mut self, now: TTInterval, origin: Origin, writes: Vec<cmd::KeyWrite>) {
        if writes.is_empty() || writes.len() > api::WRITE_KEYS_MAX {
            return self.fail(
                now,
                origin,
                ApiError::Invalid(format!("a write needs 1 to {} keys", api::WRITE_KEYS_MAX)),
            );
        }
        for (k, _) in &writes {
            if let Err(e) = range::check_user_key(k) {
                return self.fail(now, origin, ApiError::Invalid(e));
            }
        }
        if let Err(e) = meridian_proto::limits::check_writes(writes.iter().map(|(k, v)| (&k[..], v.as_deref()))) {
            return self.fail(now, origin, ApiError::Invalid(e));
        }
        let Some(gid) = self.group_for_key(&writes[0].0) else {
            let key = writes[0].0.clone();
            return self.fail(
                now,
                origin,
                ApiError::KeyOutOfRange { desc: self.last_known_desc(&key).map(Box::new), key },
            );
        };
        let desc = self.groups[&gid].state.desc.clone();
        if let Some((k, _)) = writes.iter().find(|(k, _)| !desc.contains(k)) {
            return self.fail(
                now,
                origin,
                ApiError::Invalid(format!(
                    "keys {} and {} are in different ranges; write them separately",
                    range::show_key(&writes[0].0),
                    range::show_key(k)
                )),
            );
        }
        // A plain write is an implicit transaction: it takes the exclusive locks a read-write
        // transaction would, so it never slips under a reader's shared lock (Spanner §4.2.1).
        self.txn_req += 1;
        let id = meridian_txn::TxnId((u128::from(self.ident.node.0) << 64) | u128::from(self.txn_req));
        let txn = meridian_txn::TxnMeta { id, start: now.latest };
        let single = (api::CommitRole::Single, None);
        self.serve_txn_commit(now, origin, txn, (Vec::new(), Vec::new(), None), writes, single);
    }

    /// What this node last knew about the range that held `key` (a replica it no longer has
    /// may have been split or moved; the meta range knows better).
    fn last_known_desc(&self, key: &[u8]) -> Option<RangeDescriptor> {
        self.groups.values().map(|g| &g.state.desc).find(|d| d.contains(key)).cloned()
    }

    // ----- the ready / release cycle -----

    /// Collects the durable writes of every group with something to do.
    pub fn ready(&mut self, now: TTInterval) -> Ready {
        let mut batch = WriteBatch::new();
        let mut sync = false;
        let mut outboxes = Vec::new();
        for gid in std::mem::take(&mut self.dirty) {
            let Some(g) = self.groups.get_mut(&gid) else { continue };
            let out = g.replica.ready(now);
            if let Some(t) = out.next_tick {
                self.ticks.insert(gid, t);
            }
            if out.is_empty() {
                continue;
            }
            if out.needs_write() {
                sync = true;
            }
            if let Some(snap) = &out.snapshot {
                apply::install_snapshot(&mut batch, g, snap);
            }
            paxos::persist(gid, &out, &mut batch).expect("Paxos records stay within storage limits");
            outboxes.push((gid, out));
        }
        if self.book_dirty {
            let nodes: Vec<&NodeInfo> = self.nodes.values().collect();
            batch.put(Cf::Meta, BOOK_KEY.to_vec(), postcard::to_allocvec(&(nodes, &self.meta_desc)).expect("encodes"));
            self.book_dirty = false;
        }
        if self.ident_dirty {
            batch.put(Cf::Meta, IDENT_KEY.to_vec(), postcard::to_allocvec(&self.ident).expect("ident encodes"));
            self.ident_dirty = false;
            sync = true;
        }
        Ready { batch, sync, outboxes }
    }

    /// After the `ready` batch is durable: sends, applies, answers.
    pub fn release(&mut self, now: TTInterval, ready: Ready) -> Release {
        for (gid, out) in ready.outboxes {
            for (to, msg) in out.messages {
                self.send(to, PeerMsg::Paxos { group: gid, msg });
            }
            if !out.apply.is_empty() {
                observe::applied(out.apply.len());
                self.apply(now, gid, out.apply);
                for (g, id) in std::mem::take(&mut self.applied_txns) {
                    self.release_txn(now, g, id);
                }
                self.retry_parked_reads(now, gid);
                self.retry_parked_requests(now, gid);
            }
            for ev in out.events {
                self.on_event(now, gid, ev);
            }
            for to in out.build_snapshot_for {
                self.send_snapshot(now, gid, to);
            }
        }
        self.release_commit_waits(now);
        Release { messages: std::mem::take(&mut self.outbound), replies: std::mem::take(&mut self.replies) }
    }

    /// Whether `ready` has anything to do right now.
    pub fn has_work(&self) -> bool {
        !self.dirty.is_empty()
            || self.ident_dirty
            || self.book_dirty
            || !self.outbound.is_empty()
            || !self.replies.is_empty()
    }

    /// When `Tick` is next due, in local time.
    pub fn next_tick(&self, now: TTInterval) -> Timestamp {
        let local = now.earliest.saturating_add(now.width() / 2);
        let mut next = local.saturating_add(self.opts.housekeeping.min(Duration::from_millis(500)));
        if self.twopc_pending() {
            next = next.min(self.last_twopc_tick.saturating_add(TWOPC_TICK).max(local));
        }
        if let Some(t) = self.ticks.values().min() {
            next = next.min(*t);
        }
        let first_wait = self.commit_wait.first_key_value().map(|((ts, _), _)| *ts);
        let first_read = self.read_wait.first_key_value().map(|((ts, _), _)| *ts);
        let waits = first_wait.into_iter().chain(first_read).chain(self.resolve_wait.first().map(|w| w.0));
        if let Some(ts) = waits.min() {
            // TT.after(ts) holds once earliest > ts: that is local time ts + 1ns + ε.
            next = next.min(ts.next().saturating_add(now.width() / 2));
        }
        if let Some(f) = self.forwards.values().map(|f| f.deadline).min() {
            next = next.min(f);
        }
        if let Some(r) = self.parked_reads_due() {
            next = next.min(r);
        }
        // Something due now is handled by this tick; never ask to be woken at the same instant.
        next.max(local.saturating_add(TICK_MIN))
    }

    fn tick(&mut self, now: TTInterval) {
        let local = now.earliest.saturating_add(now.width() / 2);
        let due: Vec<GroupId> = self.ticks.iter().filter(|(_, t)| **t <= local).map(|(g, _)| *g).collect();
        for gid in due {
            self.ticks.remove(&gid);
            if let Some(g) = self.groups.get_mut(&gid) {
                g.replica.tick(now);
                self.dirty.insert(gid);
            }
        }
        self.retry_forwards(now);
        self.retry_due_reads(now);
        self.release_commit_waits(now);
        if local >= self.last_housekeeping.saturating_add(self.opts.housekeeping) {
            self.last_housekeeping = local;
            self.last_twopc_tick = local;
            self.housekeeping(now);
        } else if self.twopc_pending() && local >= self.last_twopc_tick.saturating_add(TWOPC_TICK) {
            self.last_twopc_tick = local;
            self.twopc_tick(now);
        }
        self.advance_ops(now);
    }

    /// Whether a range this node leads is in the middle of two-phase commit (something to
    /// resolve, re-send or ask about).
    fn twopc_pending(&self) -> bool {
        self.groups.values().any(|g| {
            g.replica.role() == Role::Leader
                && (!g.state.prepared.is_empty()
                    || !g.txns.resolving.is_empty()
                    || !g.txns.after_prepare.is_empty()
                    || g.txns.awaiting_votes())
        })
    }

    /// Two-phase commit's retries (in-doubt inquiries, re-sent decisions, wounds of prepared
    /// blockers) on their own short period: tied to housekeeping (2 s with the default lease),
    /// every lost or refused message of a commit held its locks that long.
    fn twopc_tick(&mut self, now: TTInterval) {
        for gid in self.leading(now) {
            self.twopc_housekeeping(now, gid);
        }
    }

    /// The ranges this node leads under a lease.
    fn leading(&self, now: TTInterval) -> Vec<GroupId> {
        self.groups
            .iter()
            .filter(|(_, g)| g.replica.role() == Role::Leader && g.replica.lease_end(now).is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Holds `response` to `origin` until `TT.after(ts)` (commit wait, Spanner §4.1.2).
    fn hold_until_after(&mut self, now: TTInterval, ts: Timestamp, origin: Origin, response: Response) {
        self.commit_wait.insert((ts, origin), (response, local_of(now)));
    }

    fn release_commit_waits(&mut self, now: TTInterval) {
        // Spanner §4.1.2: no one may see the effects of a commit at s before TT.after(s).
        while let Some(((ts, _), _)) = self.commit_wait.first_key_value() {
            if !now.after(*ts) && !self.opts.unsafe_skip_commit_wait {
                break;
            }
            let ((_, origin), (resp, held)) = self.commit_wait.pop_first().expect("checked non-empty");
            observe::commit_waited(now, held);
            self.respond(now, origin, resp);
        }
        while let Some(((ts, _), _)) = self.read_wait.first_key_value() {
            if !now.after(*ts) && !self.opts.unsafe_skip_commit_wait {
                break;
            }
            let ((_, origin), resp) = self.read_wait.pop_first().expect("checked non-empty");
            self.respond(now, origin, resp);
        }
        self.release_resolve_waits(now);
    }

    /// Answers a read whose newest returned version (tombstones included) is at `newest` once
    /// `TT.after(newest)`: a reader must not see a commit before its commit wait ends (Spanner
    /// §4.1.2), or it could finish before true time reaches the commit timestamp, and a later
    /// read-only transaction at a node whose clock is behind would pick `s_read` below it and
    /// miss what the first one saw. Data is applied, and locks released, as soon as a write is
    /// chosen; so only readers of versions younger than ~2ε wait, and never longer than that.
    fn respond_visible(&mut self, now: TTInterval, origin: Origin, response: Response, newest: Timestamp) {
        if now.after(newest) || self.opts.unsafe_skip_commit_wait || self.opts.unsafe_read_before_commit_wait {
            return self.respond(now, origin, response);
        }
        self.read_wait.insert((newest, origin), response);
    }

    fn on_event(&mut self, now: TTInterval, gid: GroupId, ev: Event) {
        match ev {
            Event::SteppedDown { .. } => {
                let Some(g) = self.groups.get_mut(&gid) else { return };
                for origin in std::mem::take(&mut g.proposed).into_keys() {
                    self.fail(
                        now,
                        origin,
                        ApiError::Ambiguous(format!("range {gid} changed leader before the write was known to commit")),
                    );
                }
                self.ops.abort_group(gid);
                self.txns_lost_leadership(now, gid);
            }
            Event::Dropped(_) => {}
            Event::LeaseAcquired { ballot, .. } => {
                if let Some(g) = self.groups.get_mut(&gid) {
                    g.leader_reported = None;
                    let _ = ballot;
                }
            }
            Event::Removed => self.on_removed(gid),
            Event::BecameLeader { .. } => {
                // Serving waits for this barrier: entries of deposed leaders that a later phase 1
                // might still choose then have no effect (RangeState::leader_ballot).
                if let Some(g) = self.groups.get_mut(&gid)
                    && propose(g, &GroupCmd::Barrier).is_ok()
                {
                    self.dirty.insert(gid);
                }
            }
        }
    }

    /// Status of this node.
    pub fn status(&self, now: TTInterval) -> NodeStatus {
        NodeStatus {
            node: self.ident.node,
            cluster_id: self.ident.cluster_id.clone(),
            nodes: self.nodes.values().cloned().collect(),
            groups: self
                .groups
                .values()
                .map(|g| {
                    let (lock_txns, locks_held, lock_waits) = g.txns.locks.counts();
                    GroupStatus {
                        desc: g.state.desc.clone(),
                        role: format!("{:?}", g.replica.role()),
                        ballot: g.replica.promised().to_string(),
                        leader: g.replica.leader_hint(),
                        lease_end: g.replica.lease_end(now),
                        chosen: g.replica.chosen(),
                        applied: g.state.applied,
                        last_write_ts: g.state.last_write_ts,
                        prepared_count: g.state.prepared.len(),
                        prepared: g
                            .state
                            .prepared
                            .values()
                            .take(api::STATUS_PREPARED_MAX)
                            .map(|p| InFlightTxn {
                                txn: p.txn.id,
                                coordinator: p.coordinator,
                                prepare_ts: p.prepare_ts,
                            })
                            .collect(),
                        lock_txns,
                        locks_held,
                        lock_waits,
                        health: self.range_health(now, g.state.desc.id),
                    }
                })
                .collect(),
            now_earliest: now.earliest,
            now_latest: now.latest,
            readiness: self.readiness(now),
            liveness: self.liveness(now),
        }
    }

    // ----- forwarding -----

    /// Sends `request` to `target` (or the meta leader when `target` is `None`) and routes the
    /// answer to `origin`.
    fn forward(&mut self, now: TTInterval, origin: Origin, request: Request, target: Option<NodeId>) {
        if self.forwards.len() >= FORWARDS_MAX {
            return self.fail(now, origin, ApiError::Unavailable("too many forwarded requests in flight".into()));
        }
        let Some(target) = target.or_else(|| self.meta_target()) else {
            return self.fail(now, origin, ApiError::Unavailable("the meta range's location is unknown here".into()));
        };
        let fwd = self.next_fwd;
        self.next_fwd += 1;
        let deadline = local_of(now).saturating_add(self.opts.forward_timeout);
        self.send(target, PeerMsg::Forward { fwd, request: request.clone() });
        self.forwards.insert(fwd, Forward { origin, request, target, attempts: 1, deadline });
    }

    /// Where to send a meta request: the known meta leader, else a meta replica.
    fn meta_target(&self) -> Option<NodeId> {
        if let Some(l) = self.meta_leader {
            return Some(l);
        }
        let desc = self.meta_desc.as_ref()?;
        desc.config.voters.iter().copied().find(|n| *n != self.ident.node).or(desc.config.voters.first().copied())
    }

    fn on_forward_reply(&mut self, now: TTInterval, fwd: u64, response: Response) {
        let Some(f) = self.forwards.remove(&fwd) else { return };
        if let Response::Error(ApiError::NotLeader { leader, .. }) = &response
            && f.request.is_meta()
        {
            // Chase the meta leader.
            if let Some(l) = *leader {
                self.meta_leader = Some(l);
            } else {
                self.meta_leader = None;
            }
            if f.attempts < FORWARD_ATTEMPTS_MAX {
                return self.reforward(now, f, *leader);
            }
        }
        if let Response::Error(ApiError::Unavailable(_)) = &response
            && f.request.is_meta()
            && f.attempts < FORWARD_ATTEMPTS_MAX
        {
            return self.reforward(now, f, None);
        }
        if f.request.is_meta() && !matches!(response, Response::Error(_)) {
            self.meta_leader = Some(f.target);
        }
        self.respond(now, f.origin, response);
    }

    fn reforward(&mut self, now: TTInterval, mut f: Forward, hint: Option<NodeId>) {
        let target = hint.or_else(|| self.meta_target_other_than(f.target));
        let Some(target) = target else {
            return self.fail(now, f.origin, ApiError::Unavailable("no meta replica reachable".into()));
        };
        let fwd = self.next_fwd;
        self.next_fwd += 1;
        f.attempts += 1;
        f.target = target;
        f.deadline = local_of(now).saturating_add(self.opts.forward_timeout);
        self.send(target, PeerMsg::Forward { fwd, request: f.request.clone() });
        self.forwards.insert(fwd, f);
    }

    fn meta_target_other_than(&self, not: NodeId) -> Option<NodeId> {
        let desc = self.meta_desc.as_ref()?;
        let voters: Vec<NodeId> = desc.config.voters.iter().copied().collect();
        let i = voters.iter().position(|n| *n == not).map_or(0, |i| i + 1);
        (0..voters.len()).map(|k| voters[(i + k) % voters.len()]).find(|n| *n != not).or(voters.first().copied())
    }

    fn retry_forwards(&mut self, now: TTInterval) {
        let local = local_of(now);
        let expired: Vec<u64> = self.forwards.iter().filter(|(_, f)| f.deadline <= local).map(|(id, _)| *id).collect();
        for id in expired {
            let f = self.forwards.remove(&id).expect("listed above");
            if f.request.is_meta() && f.attempts < FORWARD_ATTEMPTS_MAX {
                self.meta_leader = None;
                self.reforward(now, f, None);
            } else {
                self.fail(
                    now,
                    f.origin,
                    ApiError::Timeout(format!("no answer from {} after {} attempt(s)", f.target, f.attempts)),
                );
            }
        }
    }
}

impl Group {
    /// Whether this replica may serve as the range's leader now: it holds a lease, every entry
    /// of earlier leaders is chosen (Spanner §4.1.3), its own barrier entry is applied (so no
    /// deposed leader's write can take effect after this point), **and this node's state
    /// machine applied every entry the replica learned**. The replica counts an entry applied once it hands it
    /// over; inputs stepped before the next `ready`/`release` must not see state (locks,
    /// prepared transactions, values) from before those entries.
    fn serves(&self, now: TTInterval) -> bool {
        self.replica.can_serve_lease_read(now) && self.caught_up()
    }

    /// A leader under a lease whose state machine is behind its log only until the next
    /// `release`: entries are chosen (and handed over) but wait for the batch in flight to be
    /// durable before they apply. Under load that is most of the time, so a request it cannot
    /// serve yet is parked, not refused.
    fn applying(&self, now: TTInterval) -> bool {
        self.replica.role() == Role::Leader
            && self.state.applied < self.replica.applied()
            && self.replica.can_serve_lease_read(now)
    }

    /// The state-machine half of [`Group::serves`]: every entry the replica learned is applied
    /// here, and this leader's barrier is among them.
    fn caught_up(&self) -> bool {
        self.state.applied >= self.replica.applied() && self.state.leader_ballot == self.replica.promised()
    }

    /// Hands the leadership to `to` once `TT.after(s_max)` (Spanner §4.1.1), `s_max` covering
    /// everything this leader's clock promised — reads it served, floors inherited from a
    /// split or merge — not only the timestamps it assigned to writes.
    fn hand_over(&mut self, now: TTInterval, to: NodeId) -> Result<(), ProposeError> {
        if self.replica.role() == Role::Leader {
            self.replica.note_assigned(self.clock.last_assigned);
        }
        self.replica.transfer_leadership(now, to)
    }

    fn new(replica: Replica, state: RangeState) -> Self {
        Group {
            replica,
            // Unknown: whether the meta range indexed this descriptor was in memory only. A split
            // applied just before a crash (or power loss) left a range the meta range never
            // heard of, and every node then assumed it had: clients could not find it. Leaders
            // index their ranges again after a restart (idempotent at the meta range).
            meta_synced_generation: 0,
            clock: meridian_txn::LeaderClock::new(state.last_write_ts.max(state.clock_floor)),
            state,
            proposed: BTreeMap::new(),
            writes_recent: 0,
            leader_reported: None,
            split_at: None,
            txns: txn::GroupTxns::default(),
            parked_reads: Vec::new(),
            parked_requests: Vec::new(),
            close_asked: Timestamp::ZERO,
        }
    }
}

/// Proposes a command in `g`'s log.
/// Proposes `cmd` in `g`'s log, stamped with the proposing leader's ballot (see
/// [`RangeState::leader_ballot`]).
fn propose(g: &mut Group, cmd: &GroupCmd) -> Result<(), ApiError> {
    let ballot = g.replica.promised();
    let bytes = Bytes::from(postcard::to_allocvec(&(ballot, cmd)).expect("group commands encode"));
    let proposed = g.replica.propose(Command::App(bytes));
    if proposed.is_ok() {
        observe::proposed();
    }
    proposed.map_err(|e| match e {
        ProposeError::NotLeader { hint } => {
            ApiError::NotLeader { group: g.state.desc.id, leader: hint, desc: Some(Box::new(g.state.desc.clone())) }
        }
        ProposeError::Busy(n) => ApiError::Unavailable(format!("range {} has {n} proposals queued", g.state.desc.id)),
        ProposeError::Invalid(s) => ApiError::Invalid(s),
    })
}

/// A node's local clock reading: the middle of `TT.now()`.
pub(crate) fn local_of(now: TTInterval) -> Timestamp {
    now.earliest.saturating_add(now.width() / 2)
}

#[cfg(any(test, feature = "sim"))]
pub mod sim;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_consistency;
