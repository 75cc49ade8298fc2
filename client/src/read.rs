//! Lock-free reads: read-only transactions and snapshot reads (Spanner §4.1.4).
//!
//! ```text
//!   client.read_only(|ro| Box::pin(async move { ro.get(a).await?; ro.get(b).await }))
//!     first read ──► the range's leader picks s_read = TT.now().latest, serves once safe
//!     every later read ──► at s_read, in whichever range it falls: one consistent snapshot
//!   client.snapshot_at(ts, …)     every read at ts
//!   client.snapshot_stale(d, …)   every read at (now − d): a bounded-staleness snapshot
//! ```
//!
//! No locks are taken, so read-only transactions never block or abort read-write ones. A read
//! waits (at the replica) until the range's safe time reaches its timestamp.

use std::borrow::Borrow;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meridian_proto::v1 as pb;
use meridian_shard::range::{self, RangeDescriptor};
use meridian_truetime::Timestamp;

use crate::{Client, ClientError, Outcome, TxnFuture};

/// A read-only transaction or snapshot over a client held as `C` (`&Client` or
/// `Arc<Client>`); use the aliases [`ReadOnly`] and [`Snapshot`].
pub struct SnapshotOn<C> {
    client: C,
    ts: Option<Timestamp>,
}

/// A read-only transaction or snapshot, handed to the closure of [`Client::read_only`],
/// [`Client::snapshot_at`] or [`Client::snapshot_stale`].
pub type ReadOnly<'c> = SnapshotOn<&'c Client>;

/// A read-only transaction or snapshot driven by the caller ([`Client::snapshot`]).
pub type Snapshot = SnapshotOn<Arc<Client>>;

impl<C: Borrow<Client>> SnapshotOn<C> {
    /// The snapshot's timestamp (once the first read fixed it).
    pub fn ts(&self) -> Option<Timestamp> {
        self.ts
    }

    /// The value of `key` in the snapshot.
    pub async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        get_at(self.client.borrow(), &mut self.ts, key).await
    }

    /// Up to `limit` rows of `[start, end)` in the snapshot (`end` empty: to the end of the
    /// keyspace), across ranges.
    pub async fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, ClientError> {
        scan_at(self.client.borrow(), &mut self.ts, start, end, limit).await
    }
}

async fn get_at(client: &Client, ts: &mut Option<Timestamp>, key: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
    range::check_user_key(key).map_err(ClientError::Invalid)?;
    let (rows, _, _) = read(client, ts, key, None, 1).await?;
    Ok(rows.into_iter().next().map(|kv| kv.value))
}

async fn scan_at(
    client: &Client,
    ts: &mut Option<Timestamp>,
    start: &[u8],
    end: &[u8],
    limit: usize,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>, ClientError> {
    range::check_user_key(start).map_err(ClientError::Invalid)?;
    let mut out = Vec::new();
    let mut from = start.to_vec();
    while out.len() < limit {
        let want = (limit - out.len()).min(u32::MAX as usize) as u32;
        let (rows, range_end, truncated) = read(client, ts, &from, Some(end.to_vec()), want).await?;
        let last = rows.last().map(|kv| kv.key.clone());
        out.extend(rows.into_iter().map(|kv| (kv.key, kv.value)));
        match crate::next_page(last, truncated, &range_end, end) {
            Some(next) => from = next,
            None => break,
        }
    }
    out.truncate(limit);
    Ok(out)
}

/// One `Read` at the snapshot's timestamp (fixing it on the first read).
async fn read(
    client: &Client,
    ts: &mut Option<Timestamp>,
    start: &[u8],
    end: Option<Vec<u8>>,
    limit: u32,
) -> Result<(Vec<pb::KeyValue>, Vec<u8>, bool), ClientError> {
    let req = pb::ReadRequest { start: start.to_vec(), end, limit, ts: ts.map(Timestamp::nanos) };
    let op = |mut kv: pb::kv_client::KvClient<crate::NodeChannel>, desc: RangeDescriptor| {
        let req = req.clone();
        async move {
            let r = kv.read(req).await?.into_inner();
            Ok(match r.error {
                None => {
                    let end = r.range.map(|d| d.end).unwrap_or_default();
                    Outcome::Done((r.rows, end, r.truncated, Timestamp::from_nanos(r.read_ts)))
                }
                Some(e) => client.on_error(&desc, e),
            })
        }
    };
    // With its timestamp fixed, a read may be served by any replica whose safe time reached it
    // (a follower read); one that has not sends the client to the leader.
    let follower = match ts {
        Some(_) => client.at_some_replica(start, op).await,
        None => None,
    };
    let (rows, range_end, truncated, read_ts) = match follower {
        Some(r) => r,
        None => client.with_leader(start, op).await?,
    };
    ts.get_or_insert(read_ts);
    Ok((rows, range_end, truncated))
}

impl Client {
    /// Runs `body` as a lock-free read-only transaction: every read sees one consistent
    /// snapshot at a timestamp the first read's range leader picks (`TT.now().latest`, so the
    /// snapshot includes every transaction committed before this call). Returns the body's
    /// result and the snapshot timestamp.
    ///
    /// ```no_run
    /// # async fn f(client: meridian_client::Client) -> Result<(), meridian_client::ClientError> {
    /// let ((a, b), ts) = client
    ///     .read_only(|ro| Box::pin(async move { Ok((ro.get(b"a").await?, ro.get(b"b").await?)) }))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn read_only<T, F>(&self, body: F) -> Result<(T, Timestamp), ClientError>
    where
        F: for<'t, 'c> FnOnce(&'t mut ReadOnly<'c>) -> TxnFuture<'t, T>,
    {
        self.run_snapshot(None, body).await
    }

    /// Like [`Client::read_only`], reading the snapshot at `ts` (which must not be below the
    /// cluster's GC horizon).
    pub async fn snapshot_at<T, F>(&self, ts: Timestamp, body: F) -> Result<(T, Timestamp), ClientError>
    where
        F: for<'t, 'c> FnOnce(&'t mut ReadOnly<'c>) -> TxnFuture<'t, T>,
    {
        self.run_snapshot(Some(ts), body).await
    }

    /// Like [`Client::read_only`], reading a snapshot `staleness` old (by this machine's clock):
    /// it waits for nothing recent, at the price of missing the newest commits.
    pub async fn snapshot_stale<T, F>(&self, staleness: Duration, body: F) -> Result<(T, Timestamp), ClientError>
    where
        F: for<'t, 'c> FnOnce(&'t mut ReadOnly<'c>) -> TxnFuture<'t, T>,
    {
        self.run_snapshot(Some(Self::stale_ts(staleness)), body).await
    }

    /// Starts a read-only transaction driven by the caller: at `ts`, or (`None`) at the
    /// timestamp its first read's leader picks.
    pub fn snapshot(self: &Arc<Self>, ts: Option<Timestamp>) -> Snapshot {
        SnapshotOn { client: self.clone(), ts }
    }

    /// This machine's clock minus `staleness`: the timestamp of a bounded-staleness snapshot.
    pub fn stale_ts(staleness: Duration) -> Timestamp {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        Timestamp::from_nanos(now.saturating_sub(staleness.as_nanos() as u64))
    }

    async fn run_snapshot<T, F>(&self, ts: Option<Timestamp>, body: F) -> Result<(T, Timestamp), ClientError>
    where
        F: for<'t, 'c> FnOnce(&'t mut ReadOnly<'c>) -> TxnFuture<'t, T>,
    {
        let mut ro = SnapshotOn { client: self, ts };
        let v = body(&mut ro).await?;
        Ok((v, ro.ts.unwrap_or(Timestamp::ZERO)))
    }
}
