//! The node's request and response types: what clients (through the gRPC shell) and other
//! nodes (through forwarding) ask of a node. Protocol-agnostic; the shell maps them to protobuf.

use meridian_shard::GroupId;
use meridian_shard::paxos::NodeId;
use meridian_shard::range::{LeaderHint, NodeInfo, RangeDescriptor};
use meridian_storage::Slot;
use meridian_truetime::Timestamp;
use serde::{Deserialize, Serialize};

use meridian_txn::{TxnId, TxnMeta};

use super::cmd::{KeyWrite, VersionRow};

/// Most rows a scan returns in one response.
pub const SCAN_ROWS_MAX: u32 = 10_000;
/// Most writes in one write request (the client-wide transaction limit).
pub const WRITE_KEYS_MAX: usize = meridian_proto::limits::TXN_WRITES_MAX;
const _: () = assert!(
    meridian_proto::limits::KEY_SIZE_MAX == meridian_storage::KEY_SIZE_MAX
        && meridian_proto::limits::VALUE_SIZE_MAX == meridian_storage::VALUE_SIZE_MAX,
    "the limits clients check are the ones storage enforces"
);
/// Most prepared transactions a status lists per replica (the count is always exact).
pub const STATUS_PREPARED_MAX: usize = 100;

/// A request to a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// The newest committed value of `key` (served by the range's leader under its lease).
    Get {
        /// The key.
        key: Vec<u8>,
    },
    /// Rows in `[start, end)` of one range (`end` empty: to the range's end), newest committed.
    Scan {
        /// First key.
        start: Vec<u8>,
        /// First key not returned; empty for the end of the range.
        end: Vec<u8>,
        /// Most rows to return (capped at [`SCAN_ROWS_MAX`]).
        limit: u32,
    },
    /// Atomically write keys that all lie in one range (puts, or deletes with `None`).
    Write {
        /// The writes.
        writes: Vec<KeyWrite>,
    },
    /// Descriptors of the range holding `key` and up to `limit - 1` following ranges (meta).
    RangeLookup {
        /// The key.
        key: Vec<u8>,
        /// Most descriptors to return.
        limit: u32,
    },
    /// Every descriptor, node and leader hint (meta).
    ClusterView,
    /// Admit a new node to the cluster (meta).
    Join {
        /// Its addresses; the id is assigned.
        info: NodeInfo,
    },
    /// Index descriptors in the meta range (from range leaders after a change).
    PutDescriptors {
        /// The descriptors.
        descs: Vec<RangeDescriptor>,
    },
    /// Record a range's leader in the meta range.
    PutLeader {
        /// The range.
        group: GroupId,
        /// Its leader.
        hint: LeaderHint,
    },
    /// Split the range containing `key` at `key`.
    Split {
        /// The split key (becomes the first key of the right range).
        key: Vec<u8>,
    },
    /// Merge the range `group` with its right neighbour (same replicas required).
    Merge {
        /// The left range.
        group: GroupId,
    },
    /// Freeze `group` for a merge into `into`; answers with the frozen range's contents.
    Freeze {
        /// The range to freeze (the right one).
        group: GroupId,
        /// The left neighbour that will absorb it.
        into: GroupId,
    },
    /// Move `group`'s replica from node `from` to node `to`.
    MoveReplica {
        /// The range.
        group: GroupId,
        /// The node that gives up its replica.
        from: NodeId,
        /// The node that gains one.
        to: NodeId,
    },
    /// Hand `group`'s leadership to node `to`.
    TransferLeader {
        /// The range.
        group: GroupId,
        /// The new leader.
        to: NodeId,
    },
    /// This node's view of itself and its replicas.
    Status,
    /// Read `key` in read-write transaction `txn`: the range's leader takes a shared lock first
    /// (Spanner §4.2.1), waiting or wounding by wound-wait, then reads the newest version.
    TxnGet {
        /// The transaction.
        txn: TxnMeta,
        /// The key.
        key: Vec<u8>,
    },
    /// Scan `[start, end)` of one range in read-write transaction `txn`: a shared lock on the
    /// whole span (clipped to the range; no phantoms), then the newest rows.
    TxnScan {
        /// The transaction.
        txn: TxnMeta,
        /// First key.
        start: Vec<u8>,
        /// First key not read; empty for the end of the range.
        end: Vec<u8>,
        /// Most rows to return.
        limit: u32,
    },
    /// Commit `txn` when everything it read and writes lies in one range: the single-group fast
    /// path of Spanner §4.2.1 (exclusive locks, one Paxos write, commit wait; no 2PC).
    TxnCommit {
        /// The transaction.
        txn: TxnMeta,
        /// Keys it read (their shared locks must still be held, or it aborts).
        reads: Vec<Vec<u8>>,
        /// Key ranges `[start, end)` it scanned, likewise (as [`Request::TxnScan`] locked them).
        read_spans: Vec<(Vec<u8>, Vec<u8>)>,
        /// The leader epoch its reads saw ([`Response::TxnValue`]), if it read.
        read_epoch: Option<u64>,
        /// Its buffered writes.
        writes: Vec<KeyWrite>,
        /// One range alone, a 2PC participant's prepare, or the coordinator's commit.
        role: CommitRole,
        /// The range the client built this part of the commit for (from its route cache). A
        /// range that is not it (the keys moved by a merge or split since) aborts the commit
        /// (retryable) instead of taking the part for its own. `None`: not checked.
        #[serde(default)]
        range: Option<GroupId>,
    },
    /// Two-phase commit: the coordinator tells participant `group` the outcome of `txn`
    /// (`Some(s)`: committed at `s`). Answered once the participant logged it.
    TxnResolve {
        /// The participant range.
        group: GroupId,
        /// The transaction.
        txn: TxnId,
        /// Commit timestamp, or `None`: aborted.
        commit_ts: Option<Timestamp>,
    },
    /// Two-phase commit: participant `participant` prepared `txn` at `prepare_ts` and tells its
    /// coordinator `group` (Spanner §4.2.1: "each participant leader … then notifies the
    /// coordinator of its prepare timestamp"). The coordinator commits only at `s ≥` the
    /// prepare timestamps it heard this way, never at a value a client reports. Answered with
    /// the outcome if decided ([`Response::Outcome`]), else "undecided" (`decision: None`): the
    /// participant says it again until it hears the outcome.
    TxnPrepared {
        /// The coordinator range.
        group: GroupId,
        /// The transaction.
        txn: TxnId,
        /// The participant range.
        participant: GroupId,
        /// Its prepare timestamp.
        prepare_ts: Timestamp,
    },
    /// Two-phase commit: a participant in doubt asks coordinator `group` for `txn`'s outcome.
    /// A coordinator that never decided logs an abort first (presumed abort).
    TxnInquire {
        /// The coordinator range.
        group: GroupId,
        /// The transaction.
        txn: TxnId,
        /// Wound-wait across groups: `txn` is prepared at the participant and blocks an older
        /// transaction there, so the coordinator aborts it unless it already decided.
        #[serde(default)]
        wound: bool,
    },
    /// A lock-free read at a timestamp (read-only transactions and snapshot reads, Spanner
    /// §4.1.3-4): the key `start` alone, or the rows of `[start, end)` in one range. Served by
    /// any replica whose safe time has reached the read timestamp.
    Read {
        /// The key, or the first key of a scan.
        start: Vec<u8>,
        /// `None`: read `start` only; `Some(end)`: scan to `end` (empty: the range's end).
        end: Option<Vec<u8>>,
        /// Most rows (scans).
        limit: u32,
        /// The read timestamp; `None`: the leader picks `TT.now().latest`.
        ts: Option<Timestamp>,
    },
    /// `txn` is alive: its locks in the range holding `key` must not expire. Fails with
    /// [`ApiError::Aborted`] if the range no longer knows it (wounded, expired, leader changed).
    TxnKeepalive {
        /// The transaction.
        txn: TxnMeta,
        /// Any key of the range.
        key: Vec<u8>,
    },
    /// Give up `txn` in the range holding `key`, releasing its locks there — and in `range`,
    /// if named and led here: the range where the transaction took its locks, which a split
    /// since may have left without `key` (the transaction's locks there would otherwise stay
    /// until it idles out).
    TxnAbort {
        /// The transaction.
        txn: TxnMeta,
        /// Any key of the range.
        key: Vec<u8>,
        /// The range the client knew `key` in when the transaction touched it.
        #[serde(default)]
        range: Option<GroupId>,
    },
}

/// What a [`Request::TxnCommit`] asks of its range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommitRole {
    /// Everything the transaction touched is in this range: commit in one Paxos write.
    Single,
    /// Two-phase commit, participant: prepare (locks, a prepare record) and answer with the
    /// prepare timestamp ([`Response::Prepared`]). `coordinator` decides the outcome.
    Prepare {
        /// The coordinator range.
        coordinator: GroupId,
    },
    /// Two-phase commit, coordinator: take the write locks, wait until every participant
    /// reported its prepare timestamp ([`Request::TxnPrepared`]), decide and commit at `s ≥`
    /// each of them, then tell the participants. The client sends it together with the
    /// prepares (Spanner §4.2.1), and waits for this answer alone.
    Coordinate {
        /// The other ranges, each preparing.
        participants: Vec<GroupId>,
        /// When the client first sent this commit (its clock): a commit first sent longer
        /// than [`meridian_proto::limits::COMMIT_RESEND_MAX`] ago may repeat a decision
        /// already forgotten, and is refused as of unknown outcome. `None`: not checked.
        first_sent: Option<Timestamp>,
    },
}

impl Request {
    /// Whether a node other than a specific range's leader may answer it.
    pub fn is_meta(&self) -> bool {
        matches!(
            self,
            Request::RangeLookup { .. }
                | Request::ClusterView
                | Request::Join { .. }
                | Request::PutDescriptors { .. }
                | Request::PutLeader { .. }
        )
    }
}

/// A node's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// A value (or its absence) and the commit timestamp of the version read.
    Value {
        /// The value.
        value: Option<Vec<u8>>,
        /// Version timestamp (zero if the key never existed).
        ts: Timestamp,
    },
    /// A transactional read: the value, its version, and the leader's epoch (ballot round)
    /// under which the shared lock was taken.
    TxnValue {
        /// The value.
        value: Option<Vec<u8>>,
        /// Version timestamp (zero if the key never existed).
        ts: Timestamp,
        /// The leader's epoch; the commit names it so a leader change aborts the transaction.
        epoch: u64,
    },
    /// A transactional scan: rows, the range (its end clips the locked span) and the epoch.
    TxnRows {
        /// Rows in key order.
        rows: Vec<(Vec<u8>, Vec<u8>)>,
        /// The range scanned.
        desc: RangeDescriptor,
        /// True if `limit` cut the scan short.
        truncated: bool,
        /// The leader's epoch, as for [`Response::TxnValue`].
        epoch: u64,
    },
    /// Scan results.
    Rows {
        /// Rows in key order.
        rows: Vec<(Vec<u8>, Vec<u8>)>,
        /// The range's descriptor, so the client knows where the next range starts.
        desc: RangeDescriptor,
        /// True if `limit` cut the scan short.
        truncated: bool,
    },
    /// The write committed at `ts` (and `TT.after(ts)` held before this answer).
    Written {
        /// Commit timestamp.
        ts: Timestamp,
    },
    /// Routing information.
    Ranges {
        /// Descriptors, in key order.
        descs: Vec<RangeDescriptor>,
        /// Every node of the cluster.
        nodes: Vec<NodeInfo>,
        /// Known leaders.
        leaders: Vec<(GroupId, LeaderHint)>,
    },
    /// A node joined.
    Joined {
        /// Its id.
        node: NodeId,
        /// Every node of the cluster.
        nodes: Vec<NodeInfo>,
    },
    /// A frozen range's contents (for a merge).
    Frozen {
        /// The range as frozen.
        desc: RangeDescriptor,
        /// Every version in it.
        data: Vec<VersionRow>,
        /// Above every timestamp its leaders promised (see `GroupCmd::Merge`).
        floor: Timestamp,
    },
    /// A participant prepared at `ts` (two-phase commit).
    Prepared {
        /// The prepare timestamp.
        ts: Timestamp,
    },
    /// A coordinator's answer to an inquiry: `None` while still undecided.
    Outcome {
        /// `Some(Some(s))`: committed at `s`; `Some(None)`: aborted; `None`: undecided.
        decision: Option<Option<Timestamp>>,
    },
    /// A lock-free read's rows (deleted keys left out) at `read_ts`.
    ReadAt {
        /// Rows in key order.
        rows: Vec<(Vec<u8>, Vec<u8>)>,
        /// The range's descriptor, so the client knows where the next range starts.
        desc: RangeDescriptor,
        /// True if `limit` cut the scan short.
        truncated: bool,
        /// The timestamp the read saw the database at.
        read_ts: Timestamp,
        /// The newest commit timestamp among the versions the rows reflect (tombstones
        /// included): the node answered only once `TT.after(newest)` (Spanner §4.1.2).
        newest: Timestamp,
    },
    /// An administrative request completed.
    Done {
        /// What happened.
        detail: String,
    },
    /// A node's status.
    Status(NodeStatus),
    /// The request failed.
    Error(ApiError),
}

/// Why a request failed, and what the client can do about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ApiError {
    /// This node's replica does not lead the range; `leader` is the one it knows of.
    #[error("not the leader of range {group}{}", leader.map(|l| format!("; try {l}")).unwrap_or_default())]
    NotLeader {
        /// The range.
        group: GroupId,
        /// The leader, if known.
        leader: Option<NodeId>,
        /// The range as this node knows it.
        desc: Option<Box<RangeDescriptor>>,
    },
    /// No replica here holds this key (the range moved or split); `desc` is this node's newest
    /// knowledge of the range that held it.
    #[error("no range on this node holds key {}", meridian_shard::range::show_key(key))]
    KeyOutOfRange {
        /// The key.
        key: Vec<u8>,
        /// What this node knows about where it went.
        desc: Option<Box<RangeDescriptor>>,
    },
    /// This node has no replica of the range.
    #[error("range {0} is not on this node")]
    RangeNotFound(GroupId),
    /// Temporarily unable (no lease yet, range frozen for a merge, overloaded): retry.
    #[error("unavailable, retry: {0}")]
    Unavailable(String),
    /// The write was proposed but leadership changed before its outcome was known.
    #[error("outcome unknown: {0}")]
    Ambiguous(String),
    /// The request can never succeed as written.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// No answer within the deadline.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The transaction is aborted (wounded, idle too long, its locks lost to a leader change):
    /// re-run it from the start.
    #[error("transaction aborted, retry it: {0}")]
    Aborted(String),
    /// The caller's deadline (gRPC's `grpc-timeout`) passed first; the message says what the
    /// request waited for. A lock wait given up this way aborted its transaction in the range;
    /// a write given up while its Paxos write or commit wait was under way may still commit.
    /// Only ever answered to a client of this node (never forwarded): the shell turns it into
    /// the `DEADLINE_EXCEEDED` status. Last, so the encoding of the others does not change.
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
    /// The transaction is aborted because the range it was routed to no longer holds some of
    /// its keys (the range split or merged since the client looked it up): re-run it from the
    /// start. `desc` is the range as it is now, for the client's cache. Last, like the one above.
    #[error("transaction aborted, retry it: {why}")]
    RangeChanged {
        /// What moved.
        why: String,
        /// The range as this node knows it now.
        desc: Option<Box<RangeDescriptor>>,
    },
    /// No replica this node can reach leads the range under a lease: an election is under way,
    /// the last known leader is unreachable, or the range lost its quorum (fewer than a
    /// majority of `replicas` answer). Retry; when `reachable` is below a majority, only
    /// bringing replicas back helps. Last, like the ones above.
    #[error("unavailable, retry: range {group}: {why}; {reachable} of {replicas} replicas reachable from node {node}")]
    NoLeader {
        /// The range.
        group: GroupId,
        /// What this node's replica knows (`no leader with a lease: this replica is Probing …`).
        why: String,
        /// The range's voters.
        replicas: u32,
        /// How many of them this node reaches (itself included).
        reachable: u32,
        /// The node that answers.
        node: NodeId,
    },
}

impl ApiError {
    /// Whether retrying the same request (after refreshing routes) can succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            ApiError::Invalid(_) | ApiError::Ambiguous(_) | ApiError::Aborted(_) | ApiError::RangeChanged { .. }
        )
    }
}

/// A node's view of itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node.
    pub node: NodeId,
    /// Its cluster.
    pub cluster_id: String,
    /// Every node it knows.
    pub nodes: Vec<NodeInfo>,
    /// Its replicas.
    pub groups: Vec<GroupStatus>,
    /// Its clock's `TT.now()`.
    pub now_earliest: Timestamp,
    /// See `now_earliest`.
    pub now_latest: Timestamp,
    /// Whether it can serve every range it hosts, and its warnings (`/health?ready=1`).
    pub readiness: Readiness,
    /// Every other node it knows, up or down as seen from here.
    pub liveness: Vec<NodeLiveness>,
}

/// Whether a node can serve (`/health?ready=1`): for every range it hosts it knows a leader
/// holding a lease that it can reach, with a majority of the range's replicas reachable. See
/// `node::health`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    /// Whether it can.
    pub ready: bool,
    /// One line: what it serves, or why it cannot (no times in it: it is logged on change).
    pub summary: String,
    /// One line per range it cannot serve, saying why (at most [`READINESS_LINES_MAX`]).
    pub problems: Vec<String>,
    /// What an operator should know while it serves (under-replicated ranges, replicas on
    /// unreachable nodes); stable text, logged on change.
    pub warnings: Vec<String>,
}

/// Most per-range lines a readiness answer lists (the summary counts them all).
pub const READINESS_LINES_MAX: usize = 20;

impl Readiness {
    /// The `/health?ready=1` body: `ready` or `not ready: …` on the first line, then one line
    /// per range it cannot serve and one `warning: …` line per warning.
    pub fn body(&self) -> String {
        let mut out = if self.ready { "ready\n".to_string() } else { format!("not ready: {}\n", self.summary) };
        for p in &self.problems {
            out.push_str(p);
            out.push('\n');
        }
        for w in &self.warnings {
            out.push_str("warning: ");
            out.push_str(w);
            out.push('\n');
        }
        out
    }
}

/// Another node as this one sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLiveness {
    /// The node.
    pub node: NodeId,
    /// Whether it answers: this node's last exchange with it succeeded and it was heard from
    /// within `node::health::NODE_SILENCE_MAX`.
    pub up: bool,
    /// When this node last received anything from it (local time), if ever.
    pub last_heard: Option<Timestamp>,
    /// Why it counts as down, or empty.
    pub why: String,
}

/// Whether a node can serve one of its ranges now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeHealth {
    /// A leader holds a lease (this node's own), or is a live node this replica heard from
    /// recently; and a majority of the replicas is reachable.
    pub servable: bool,
    /// How (`led here, lease 8.1 s left`, `led by n2`), or why not.
    pub detail: String,
    /// The range's voters.
    pub replicas: usize,
    /// How many of them this node reaches (itself included).
    pub reachable: usize,
}

/// One replica's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStatus {
    /// The range.
    pub desc: RangeDescriptor,
    /// `Leader`, `Follower`, `Candidate`, `Probing`.
    pub role: String,
    /// Promised ballot as `round.node`.
    pub ballot: String,
    /// The leader this replica knows.
    pub leader: Option<NodeId>,
    /// End of the lease if this replica leads with one.
    pub lease_end: Option<Timestamp>,
    /// Chosen prefix.
    pub chosen: Slot,
    /// Applied prefix.
    pub applied: Slot,
    /// Largest commit timestamp applied.
    pub last_write_ts: Timestamp,
    /// Transactions prepared here and waiting for their coordinator's decision.
    pub prepared_count: usize,
    /// The first [`STATUS_PREPARED_MAX`] of them, in id order.
    pub prepared: Vec<InFlightTxn>,
    /// Leader only: transactions holding or waiting for locks here (Spanner §4.2.1).
    pub lock_txns: usize,
    /// Leader only: locks held.
    pub locks_held: usize,
    /// Leader only: lock requests waiting (wound-wait: a younger transaction waits for an
    /// older one). A request whose caller gave up is no longer counted.
    pub lock_waits: usize,
    /// Whether this node can serve the range now, and why (not).
    pub health: RangeHealth,
}

/// A transaction prepared at a replica (two-phase commit), waiting for its outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlightTxn {
    /// The transaction.
    pub txn: TxnId,
    /// The range whose leader decides its outcome.
    pub coordinator: GroupId,
    /// Its prepare timestamp (its commit timestamp will be at least this).
    pub prepare_ts: Timestamp,
}
