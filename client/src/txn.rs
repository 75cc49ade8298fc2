//! Read-write transactions from the client (Spanner §4.2.1).
//!
//! ```text
//!   client.read_write(|txn| Box::pin(async move { txn.get(k).await?; txn.put(k, v); Ok(..) }))
//!     attempt: new TxnId, the *same* start timestamp (its wound-wait priority survives retries)
//!       get  ──► TxnGet at the range's leader (shared lock, may wait or wound)
//!       put  ──► buffered here; a later get of the key reads the buffer
//!       end  ──► one range: TxnCommit at the leader: exclusive locks, one Paxos write, commit wait
//!                several: TxnCommit(prepare) at every other range, then TxnCommit(coordinate)
//!     aborted (wounded, expired, leader changed) ──► TxnAbort where it holds locks, back off,
//!       re-run the whole closure — buffered writes are never replayed
//! ```
//!
//! A transaction that wrote to several ranges commits by two-phase commit: the range of its
//! first written key coordinates, the others prepare first. [`Client::begin`] gives the same
//! transaction without the retry loop, for callers (SQL sessions) that drive it themselves.
//!
//! **Tracing.** Each attempt runs in an info-level span `txn{id=… attempt=…}` (the id printed as
//! the nodes print it: 32 hex digits), with debug-level child spans `read`, `scan`, `commit` and
//! `abort`, and a debug event per retry; the nodes log the same id in their own `txn{id=…}`
//! spans and 2PC events, so one grep follows a transaction client → coordinator → participants.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meridian_proto::v1 as pb;
use meridian_shard::GroupId;
use meridian_shard::range::{self, RangeDescriptor};
use meridian_truetime::Timestamp;

use crate::{Client, ClientError, Outcome};

/// Most attempts of one `read_write` call (each after an abort).
pub const TXN_ATTEMPTS_MAX: u32 = 50;
/// Longest backoff between attempts.
const BACKOFF_MAX: Duration = Duration::from_millis(200);

/// What the body of [`Client::read_write`] returns: a boxed, `Send` future borrowing the
/// transaction (boxed so that `read_write` itself stays `Send` and can run in `tokio::spawn`).
pub type TxnFuture<'t, T> = Pin<Box<dyn Future<Output = Result<T, ClientError>> + Send + 't>>;

/// How often a transaction in progress tells the ranges holding its locks that it is alive
/// (they abort one silent for 10 s: its client is gone).
pub const TXN_KEEPALIVE_EVERY: Duration = Duration::from_secs(3);

/// A key of every range that may hold a transaction's locks, shared with its keepalive.
#[derive(Clone, Default)]
struct Touched(Arc<std::sync::Mutex<BTreeMap<GroupId, Vec<u8>>>>);

impl Touched {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<GroupId, Vec<u8>>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Sends keepalives for `txn` to every range it touched, every [`TXN_KEEPALIVE_EVERY`], until
/// dropped. Failures are ignored: a range that aborted the transaction says so at its next
/// request or at commit.
async fn keepalive(client: &Client, txn: pb::Txn, touched: Touched) {
    loop {
        tokio::time::sleep(TXN_KEEPALIVE_EVERY).await;
        let keys: Vec<Vec<u8>> = touched.lock().values().cloned().collect();
        for key in keys {
            let _ = client
                .with_leader(&key, |mut kv, desc| {
                    let key = key.clone();
                    async move {
                        let r = kv
                            .txn_keepalive(pb::TxnAbortRequest { txn: Some(txn), key, range_id: None })
                            .await?
                            .into_inner();
                        Ok(match r.error {
                            None => Outcome::Done(()),
                            Some(e) => client.on_error(&desc, e),
                        })
                    }
                })
                .await;
        }
    }
}

/// What a transaction read in one range, under the leader epoch it read under.
#[derive(Default)]
struct Reads {
    epoch: u64,
    keys: BTreeSet<Vec<u8>>,
    spans: BTreeSet<(Vec<u8>, Vec<u8>)>,
}

/// A read-write transaction's state, whichever way the client is held.
struct TxnState {
    pb: pb::Txn,
    /// What was read, by range.
    reads: BTreeMap<GroupId, Reads>,
    /// Buffered writes (`None` deletes).
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// A key of every range that may hold our locks (to send the abort there).
    touched: Touched,
    /// `txn{id=… attempt=…}`: the parent of every span of this attempt.
    span: tracing::Span,
}

/// A read-write transaction over a client held as `C` (`&Client` or `Arc<Client>`); use the
/// aliases [`Txn`] and [`Transaction`].
pub struct TxnOn<C> {
    client: C,
    state: TxnState,
    /// The keepalive task of an explicit transaction (the closure API runs it alongside).
    keepalive: Option<tokio::task::JoinHandle<()>>,
}

impl<C> Drop for TxnOn<C> {
    fn drop(&mut self) {
        if let Some(k) = self.keepalive.take() {
            k.abort();
        }
    }
}

/// A transaction in progress, handed to the closure of [`Client::read_write`].
pub type Txn<'c> = TxnOn<&'c Client>;

/// An explicitly driven read-write transaction ([`Client::begin`]): the caller commits or rolls
/// back, and re-runs it after [`ClientError::Aborted`] (as SQL sessions do).
pub type Transaction = TxnOn<Arc<Client>>;

/// What a transaction sends one range at commit.
struct Part {
    /// The range it is built for (the node refuses it if another range holds the keys now).
    range: GroupId,
    key: Vec<u8>,
    reads: Vec<Vec<u8>>,
    spans: Vec<pb::KeySpan>,
    read_epoch: Option<u64>,
    writes: Vec<pb::Mutation>,
}

impl Part {
    fn new(range: GroupId, key: Vec<u8>) -> Self {
        Part { range, key, reads: Vec::new(), spans: Vec::new(), read_epoch: None, writes: Vec::new() }
    }
}

impl TxnState {
    fn new(start: u64, attempt: u32) -> Self {
        let id = fresh_id(start, attempt);
        TxnState {
            pb: pb::Txn { id_hi: (id >> 64) as u64, id_lo: id as u64, start },
            reads: BTreeMap::new(),
            writes: BTreeMap::new(),
            touched: Touched::default(),
            span: tracing::info_span!("txn", id = %txn_id_text(id), attempt),
        }
    }

    /// The transaction id as the nodes log it.
    fn id_text(&self) -> String {
        txn_id_text((u128::from(self.pb.id_hi) << 64) | u128::from(self.pb.id_lo))
    }

    /// Records a read in `desc`'s range under `epoch`; a different epoch than earlier reads
    /// there means the leader changed and the earlier read locks are gone.
    fn note_read(&mut self, desc: &RangeDescriptor, epoch: u64, key: &[u8]) -> Result<&mut Reads, ClientError> {
        self.touched.lock().entry(desc.id).or_insert_with(|| key.to_vec());
        let entry = self.reads.entry(desc.id).or_insert_with(|| Reads { epoch, ..Reads::default() });
        if entry.epoch != epoch {
            return Err(ClientError::Aborted(format!(
                "range {} changed leader during the transaction; its read locks are gone",
                desc.id
            )));
        }
        Ok(entry)
    }

    #[tracing::instrument(name = "read", level = "debug", parent = &self.span, skip_all, fields(key = %range::show_key(key)))]
    async fn get(&mut self, client: &Client, key: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        if let Some(v) = self.writes.get(key) {
            return Ok(v.clone());
        }
        range::check_user_key(key).map_err(ClientError::Invalid)?;
        let txn = self.pb;
        let touched = &self.touched;
        let (value, epoch, desc) = client
            .with_leader(key, |mut kv, desc| async move {
                // The read may wait for a lock there, and fail or time out doing so: the
                // transaction's abort must reach that range too.
                touched.lock().entry(desc.id).or_insert_with(|| key.to_vec());
                let r = kv.txn_get(pb::TxnGetRequest { txn: Some(txn), key: key.to_vec() }).await?.into_inner();
                Ok(match r.error {
                    None => Outcome::Done((r.value, r.epoch, desc)),
                    Some(e) => client.on_error(&desc, e),
                })
            })
            .await?;
        self.note_read(&desc, epoch, key)?.keys.insert(key.to_vec());
        Ok(value)
    }

    // `#[instrument]` spells the return type out inside its expansion, which clippy counts.
    #[allow(clippy::type_complexity)]
    #[tracing::instrument(level = "debug", parent = &self.span, skip_all, fields(start = %range::show_key(start), limit = limit))]
    async fn scan(
        &mut self,
        client: &Client,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, ClientError> {
        range::check_user_key(start).map_err(ClientError::Invalid)?;
        let in_span = |k: &[u8]| k >= start && (end.is_empty() || k < end);
        // Buffered deletes may hide stored rows: fetch enough to still fill `limit`.
        let hidden = self.writes.iter().filter(|(k, v)| v.is_none() && in_span(k)).count();
        let mut stored = Vec::new();
        let mut from = start.to_vec();
        let want = limit.saturating_add(hidden);
        while stored.len() < want {
            let txn = self.pb;
            let req = pb::TxnScanRequest {
                txn: Some(txn),
                start: from.clone(),
                end: end.to_vec(),
                limit: (want - stored.len()).min(u32::MAX as usize) as u32,
            };
            let touched = &self.touched;
            let (rows, truncated, epoch, desc) = client
                .with_leader(&from, |mut kv, desc| {
                    let req = req.clone();
                    // As for a read: the abort must reach a range where the scan may wait.
                    touched.lock().entry(desc.id).or_insert_with(|| req.start.clone());
                    async move {
                        let r = kv.txn_scan(req).await?.into_inner();
                        Ok(match r.error {
                            None => Outcome::Done((r.rows, r.truncated, r.epoch, desc)),
                            Some(e) => client.on_error(&desc, e),
                        })
                    }
                })
                .await?;
            // The span the node locked: from `from` to the range's end or `end`, if before.
            let locked_end = match (end.is_empty(), desc.end.is_empty()) {
                (true, _) => desc.end.clone(),
                (false, true) => end.to_vec(),
                (false, false) => end.min(desc.end.as_slice()).to_vec(),
            };
            self.note_read(&desc, epoch, &from)?.spans.insert((from.clone(), locked_end.clone()));
            let last = rows.last().map(|kv| kv.key.clone());
            stored.extend(rows.into_iter().map(|kv| (kv.key, kv.value)));
            match crate::next_page(last, truncated, &locked_end, end) {
                Some(next) => from = next,
                None => break,
            }
        }
        // The transaction sees its own writes.
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = stored.into_iter().collect();
        for (k, v) in self.writes.iter().filter(|(k, _)| in_span(k)) {
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        Ok(merged.into_iter().take(limit).collect())
    }

    /// Commits. One range: the single-group fast path (one Paxos write). Several ranges and
    /// writes: two-phase commit — every range but the coordinator (the range of the first
    /// written key) prepares, then the coordinator commits at `s ≥` every prepare timestamp
    /// and tells the others (Spanner §4.2.1). Several ranges and no writes: each range checks
    /// that its read locks were held throughout and releases them. Returns the timestamp.
    #[tracing::instrument(level = "debug", parent = &self.span, skip_all, fields(writes = self.writes.len()))]
    async fn commit(&mut self, client: &Client) -> Result<Timestamp, ClientError> {
        for k in self.writes.keys() {
            range::check_user_key(k).map_err(ClientError::Invalid)?;
        }
        // The whole transaction, before anything is sent (each range checks its part again).
        crate::limits::check_writes(self.writes.iter().map(|(k, v)| (&k[..], v.as_deref())))
            .map_err(ClientError::Invalid)?;
        // Per range: a key to route by, the reads (with their epoch) and the writes.
        let mut parts: BTreeMap<GroupId, Part> = BTreeMap::new();
        for (gid, r) in &self.reads {
            let key = self.touched.lock().get(gid).cloned().unwrap_or_default();
            let p = parts.entry(*gid).or_insert_with(|| Part::new(*gid, key));
            p.read_epoch = Some(r.epoch);
            p.reads = r.keys.iter().cloned().collect();
            p.spans =
                r.spans.iter().map(|(start, end)| pb::KeySpan { start: start.clone(), end: end.clone() }).collect();
        }
        let mut coordinator = None;
        for (k, v) in &self.writes {
            let d = client.range_for(k).await?;
            coordinator.get_or_insert(d.id);
            parts
                .entry(d.id)
                .or_insert_with(|| Part::new(d.id, k.clone()))
                .writes
                .push(pb::Mutation { key: k.clone(), value: v.clone() });
        }
        if parts.is_empty() {
            return Ok(Timestamp::ZERO); // touched nothing
        }
        for (gid, p) in &parts {
            // Whatever happens next, an abort must reach every range that may hold our locks.
            self.touched.lock().entry(*gid).or_insert_with(|| p.key.clone());
        }
        let txn = self.pb;
        let Some(coordinator) = coordinator.filter(|_| parts.len() > 1) else {
            // One range, or reads only: every range commits on its own.
            tracing::debug!(ranges = parts.len(), "commit without two-phase commit");
            let commits = parts.into_values().map(|p| send_commit(client, txn, p, None, Vec::new()));
            let stamps = futures::future::try_join_all(commits).await?;
            return Ok(stamps.into_iter().max().unwrap_or(Timestamp::ZERO));
        };
        let coord = parts.remove(&coordinator).expect("the coordinator wrote");
        let coord_key = coord.key.clone();
        let participants: Vec<u64> = parts.keys().map(|g| g.0).collect();
        // Spanner §4.2.1: the prepares and the coordinator's commit go out together; each
        // participant reports its prepare timestamp to the coordinator itself, and the
        // coordinator's answer is the outcome. A prepare that fails makes the coordinator abort
        // now instead of waiting for a report that will not come.
        tracing::debug!(coordinator = %coordinator, ?participants, "two-phase commit: prepares and the coordinator's commit");
        let mut prepares: futures::stream::FuturesUnordered<_> =
            parts.into_values().map(|p| send_commit(client, txn, p, Some(coordinator.0), Vec::new())).collect();
        let decided = send_commit(client, txn, coord, None, participants);
        tokio::pin!(decided);
        let mut refused: Option<ClientError> = None;
        let outcome = loop {
            tokio::select! {
                r = &mut decided => break r,
                Some(r) = futures::StreamExt::next(&mut prepares), if !prepares.is_empty() => {
                    if let Err(e) = r
                        && refused.is_none()
                    {
                        tracing::debug!(reason = %e, "two-phase commit: a prepare failed; asking the coordinator to abort");
                        refused = Some(e);
                        abort_at(client, txn, &coord_key, Some(coordinator)).await;
                    }
                }
            }
        };
        match (outcome, refused) {
            (Ok(ts), _) => {
                tracing::debug!(commit_ts = %ts, "two-phase commit: committed");
                Ok(ts)
            }
            // The coordinator aborted because a prepare failed: that failure says why.
            (Err(ClientError::Aborted(_)), Some(why)) => Err(match why {
                ClientError::Aborted(m) => ClientError::Aborted(m),
                other => ClientError::Aborted(format!("a participant could not prepare: {other}")),
            }),
            (Err(e), _) => Err(e),
        }
    }

    /// Releases what the transaction holds (best effort: unreleased locks expire), in every
    /// range at once. A range where it prepared asks the coordinator instead (only the
    /// coordinator decides), and the coordinator's range, one hop closer, has usually released
    /// the transaction by then, so it answers "aborted" at once.
    #[tracing::instrument(level = "debug", parent = &self.span, skip_all)]
    async fn abort(&mut self, client: &Client) {
        let txn = self.pb;
        let touched = std::mem::take(&mut *self.touched.lock());
        let aborts = touched.into_iter().map(|(gid, key)| async move { abort_at(client, txn, &key, Some(gid)).await });
        futures::future::join_all(aborts).await;
    }
}

/// Gives `txn` up in the range holding `key` and in `range`, where it took its locks (a split
/// may have moved `key` out of it since) — best effort. Where it is prepared, the range asks
/// the coordinator instead; at the coordinator, an undecided commit is aborted through its log.
async fn abort_at(client: &Client, txn: pb::Txn, key: &[u8], range: Option<GroupId>) {
    let _ = client
        .with_leader(key, |mut kv, desc| {
            let key = key.to_vec();
            async move {
                let request = pb::TxnAbortRequest { txn: Some(txn), key, range_id: range.map(|g| g.0) };
                let r = kv.txn_abort(request).await?.into_inner();
                Ok(match r.error {
                    None => Outcome::Done(()),
                    Some(e) => client.on_error(&desc, e),
                })
            }
        })
        .await;
}

/// One `TxnCommit` to the leader of `part`'s range.
async fn send_commit(
    client: &Client,
    txn: pb::Txn,
    part: Part,
    coordinator: Option<u64>,
    participants: Vec<u64>,
) -> Result<Timestamp, ClientError> {
    let participants_empty = participants.is_empty();
    let req = pb::TxnCommitRequest {
        txn: Some(txn),
        reads: part.reads,
        read_epoch: part.read_epoch,
        mutations: part.writes,
        coordinator,
        participants,
        prepare_ts_max: 0,
        read_spans: part.spans,
        range_id: Some(part.range.0),
        first_sent: (!participants_empty).then(now_nanos),
    };
    // A single-range commit is answered "aborted" by a new leader even when the first attempt
    // may still commit, so it is sent once. A prepare or a coordinator's commit may be sent
    // again: the participant answers a repeated prepare from its log, and the coordinator
    // answers only with the first decision in its log.
    let not_twice = req.coordinator.is_none() && req.participants.is_empty() && !req.mutations.is_empty();
    let coordinating = !req.participants.is_empty();
    // A coordinator's commit sent once may have been decided (its answer lost). If a retry then
    // finds the keys in another range (the coordinator split), that range cannot know the
    // decision: the outcome is unknown, not "aborted" — re-running would commit twice.
    let tried = std::sync::atomic::AtomicBool::new(false);
    let first = std::time::Instant::now();
    client
        .with_leader_sent(&part.key, not_twice, |mut kv, desc| {
            let req = req.clone();
            let retry = tried.swap(true, std::sync::atomic::Ordering::Relaxed);
            // The coordinator remembers its decision for twice COMMIT_RESEND_MAX (the node
            // refuses a later repeat too, by `first_sent`).
            let too_late = coordinating && retry && first.elapsed() > meridian_proto::limits::COMMIT_RESEND_MAX;
            async move {
                if too_late {
                    return Ok(Outcome::Fail(ClientError::Ambiguous(format!(
                        "the coordinator's commit was first sent more than {:?} ago and its answer was lost; the \
                         transaction may or may not have committed",
                        meridian_proto::limits::COMMIT_RESEND_MAX
                    ))));
                }
                let r = kv.txn_commit(req).await?.into_inner();
                Ok(match r.error {
                    None => Outcome::Done(Timestamp::from_nanos(r.ts)),
                    Some(e) if coordinating && retry && is_range_changed(&e) => {
                        Outcome::Fail(ClientError::Ambiguous(format!(
                            "the coordinator's range changed while its commit was in flight; the transaction may or \
                             may not have committed: {}",
                            e.message
                        )))
                    }
                    Some(e) => client.on_error(&desc, e),
                })
            }
        })
        .await
}

impl<C: Borrow<Client>> TxnOn<C> {
    /// This transaction's id as the nodes log it (32 hex digits): grep the nodes' logs for it to
    /// follow its reads, prepares and commit.
    pub fn id(&self) -> String {
        self.state.id_text()
    }

    /// The start timestamp (ns) that orders this transaction in wound-wait: older wins. Pass it
    /// to [`Client::begin_retry`] to re-run the transaction with the same priority.
    pub fn start(&self) -> u64 {
        self.state.pb.start
    }

    /// The value of `key` as this transaction sees it (its own buffered write first), holding a
    /// shared lock on it until the transaction ends.
    pub async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        self.state.get(self.client.borrow(), key).await
    }

    /// Up to `limit` rows of `[start, end)` (`end` empty: to the end of the keyspace) as this
    /// transaction sees them, holding a shared lock on every range scanned (no phantoms) until
    /// the transaction ends.
    pub async fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, ClientError> {
        self.state.scan(self.client.borrow(), start, end, limit).await
    }

    /// Buffers a write of `key`; it becomes visible to others only when the transaction commits.
    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        self.state.writes.insert(key.to_vec(), Some(value.to_vec()));
    }

    /// Buffers a delete of `key`.
    pub fn delete(&mut self, key: &[u8]) {
        self.state.writes.insert(key.to_vec(), None);
    }
}

impl Transaction {
    /// Commits and returns the commit timestamp. On failure whatever the transaction held is
    /// released; [`ClientError::Aborted`] means: run the whole transaction again.
    pub async fn commit(mut self) -> Result<Timestamp, ClientError> {
        let r = self.state.commit(&self.client).await;
        if r.is_err() {
            self.state.abort(&self.client).await;
        }
        r
    }

    /// Gives the transaction up, releasing its locks.
    pub async fn rollback(mut self) {
        self.state.abort(&self.client).await;
    }
}

impl Client {
    /// Starts a read-write transaction driven by the caller (see [`Transaction`]). Prefer
    /// [`Client::read_write`], which also retries.
    pub fn begin(self: &Arc<Self>) -> Transaction {
        self.begin_retry(now_nanos(), 0)
    }

    /// Attempt `attempt` of a transaction that first started at `start` ([`TxnOn::start`]):
    /// a new transaction (a new id) that keeps the first attempt's wound-wait priority, so an
    /// application's re-run ages rather than starves (Spanner §4.2.1). [`Client::read_write`]
    /// does this itself; SQL's implicit re-runs use it through `KvStore::begin_retry`.
    pub fn begin_retry(self: &Arc<Self>, start: u64, attempt: u32) -> Transaction {
        let state = TxnState::new(start, attempt);
        let keepalive = tokio::runtime::Handle::try_current().ok().map(|rt| {
            let (client, txn, touched) = (self.clone(), state.pb, state.touched.clone());
            rt.spawn(async move { keepalive(&client, txn, touched).await })
        });
        TxnOn { client: self.clone(), state, keepalive }
    }

    /// Runs `body` as a serializable read-write transaction and commits it, re-running the whole
    /// body (with backoff) when the transaction is aborted — wounded by an older transaction,
    /// idle too long, or its range's leader changed. Buffered writes are never replayed: each
    /// attempt starts empty. Returns the body's result and the commit timestamp.
    ///
    /// ```no_run
    /// # async fn f(client: meridian_client::Client) -> Result<(), meridian_client::ClientError> {
    /// let (old, ts) = client
    ///     .read_write(|txn| {
    ///         Box::pin(async move {
    ///             let old = txn.get(b"k").await?;
    ///             txn.put(b"k", b"new");
    ///             Ok(old)
    ///         })
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn read_write<T, F>(&self, mut body: F) -> Result<(T, Timestamp), ClientError>
    where
        F: for<'t, 'c> FnMut(&'t mut Txn<'c>) -> TxnFuture<'t, T>,
    {
        // Bounded in-flight transactions per client: wait for a slot, at most the deadline.
        let _slot = match tokio::time::timeout(self.deadline, self.txn_slots.sem.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => unreachable!("the client never closes its transaction semaphore"),
            Err(_) => {
                return Err(ClientError::Unavailable(format!(
                    "{} read-write transactions are already in flight on this client (the limit) and none \
                     finished within the deadline of {:?}; wait for some to finish, or use more clients",
                    self.txn_slots.max, self.deadline
                )));
            }
        };
        let start = now_nanos();
        let mut backoff = crate::backoff::Backoff::new(Duration::from_millis(2), BACKOFF_MAX);
        let mut last = String::new();
        for attempt in 0..TXN_ATTEMPTS_MAX {
            let mut txn = TxnOn { client: self, state: TxnState::new(start, attempt), keepalive: None };
            let alive = keepalive(self, txn.state.pb, txn.state.touched.clone());
            let ran = tokio::select! {
                r = body(&mut txn) => r,
                () = alive => unreachable!("the keepalive loop never ends"),
            };
            let outcome = match ran {
                Ok(v) => txn.state.commit(self).await.map(|ts| (v, ts)),
                Err(e) => Err(e),
            };
            match outcome {
                Ok(done) => return Ok(done),
                Err(ClientError::Aborted(why)) => {
                    tracing::debug!(parent: &txn.state.span, reason = %why, ?backoff, "aborted; retrying");
                    last = why;
                    txn.state.abort(self).await;
                    // Jittered exponential backoff, so retried rivals do not collide again.
                    backoff.wait(BACKOFF_MAX).await;
                }
                Err(e) => {
                    txn.state.abort(self).await;
                    return Err(e);
                }
            }
        }
        Err(ClientError::Aborted(format!("gave up after {TXN_ATTEMPTS_MAX} attempts; last: {last}")))
    }

    /// The range of `key` from the route cache, or from the meta range ([`Client::range_of`],
    /// which asks again while the index cannot answer).
    async fn range_for(&self, key: &[u8]) -> Result<RangeDescriptor, ClientError> {
        if let Some(d) = self.routes().cache.lookup(key).cloned() {
            return Ok(d);
        }
        self.range_of(key).await
    }
}

/// A node's answer that the keys of a part now belong to another range (it split or merged
/// since the client looked it up): an abort that carries the range as it is now.
fn is_range_changed(e: &pb::Error) -> bool {
    e.kind == pb::error::Kind::Aborted as i32 && e.range.is_some()
}

/// A transaction id as `meridian_txn::TxnId` displays it (the nodes' logs).
fn txn_id_text(id: u128) -> String {
    format!("{id:032x}")
}

fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// A transaction id unique across clients with overwhelming probability: the start time, the
/// attempt, the process and a per-process counter, mixed.
fn fresh_id(start: u64, attempt: u32) -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let hi = start ^ (u64::from(std::process::id()) << 32);
    let lo = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(attempt) ^ now_nanos();
    (u128::from(hi) << 64) | u128::from(lo)
}
