//! Multi-version storage: every write is a new version at its commit timestamp; a read at `ts`
//! sees, for each key, the newest version with `commit_ts ≤ ts` (Spanner §4.1: "Spanner is a
//! multi-version database… reads at a timestamp").
//!
//! Layout in the `data` column family:
//!
//! ```text
//!   key   = escape(user_key) ‖ !commit_ts (8 bytes big-endian, bitwise NOT)
//!   value = record(kind = PUT, bytes) | record(kind = TOMBSTONE, ∅)
//!
//!   "acct/1"‖!30  →  PUT 70       ← newest first: one seek to (key, !ts) finds the
//!   "acct/1"‖!20  →  TOMBSTONE       version visible at ts
//!   "acct/1"‖!10  →  PUT 100
//!   "acct/2"‖!15  →  PUT 50
//! ```
//!
//! Versions are written by the Paxos apply path into a caller's [`WriteBatch`], so the versions
//! of one transaction and the group's applied slot land atomically.
//!
//! Version GC: [`Mvcc::gc`] first records a horizon durably, then removes every version that no
//! read at or above the horizon can see (all but the newest version `≤ horizon`, and that one
//! too if it is a tombstone). Reads below the horizon fail with [`Error::BelowGcHorizon`]
//! instead of silently returning a partial history.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use meridian_truetime::Timestamp;

use crate::engine::{Cf, Direction, Engine, WriteBatch};
use crate::{Error, KEY_SIZE_MAX, MetaTag, Result, VALUE_SIZE_MAX, keycode, record};

const KIND_PUT: u8 = 1;
const KIND_TOMBSTONE: u8 = 2;
/// Deletes per GC write batch.
pub const GC_BATCH_MAX: usize = 1024;

/// One version of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// The commit timestamp that wrote it.
    pub ts: Timestamp,
    /// The value, or `None` for a delete (tombstone).
    pub value: Option<Vec<u8>>,
}

/// What one GC sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcStats {
    /// Distinct user keys looked at.
    pub keys_scanned: u64,
    /// Versions removed.
    pub versions_deleted: u64,
}

/// The encoded data-column-family key of `user_key` at `ts`.
pub fn encode_key(user_key: &[u8], ts: Timestamp) -> Vec<u8> {
    let mut k = keycode::escape(user_key);
    k.extend_from_slice(&(!ts.nanos()).to_be_bytes());
    k
}

/// Splits an encoded key into (escaped user key, timestamp) without copying.
fn split_key(raw: &[u8]) -> Result<(&[u8], Timestamp)> {
    let bad = |d: &str| Error::corrupt(format!("data key {}", show(raw)), d.to_string());
    if raw.len() < 10 {
        return Err(bad("shorter than a terminator and a timestamp"));
    }
    let (enc, ts) = raw.split_at(raw.len() - 8);
    if !enc.ends_with(&[0, 0]) {
        return Err(bad("user key has no terminator"));
    }
    let ts = !u64::from_be_bytes(ts.try_into().expect("split_at leaves exactly 8 bytes"));
    Ok((enc, Timestamp::from_nanos(ts)))
}

/// The encoded range covering every version of every user key in `[start, end)`.
pub fn encoded_range(start: &[u8], end: Option<&[u8]>) -> (Vec<u8>, Option<Vec<u8>>) {
    (keycode::escape(start), end.map(keycode::escape))
}

/// Upper bound (exclusive) of all versions of the user key whose escaped form is `enc`:
/// the terminator `00 00` becomes `00 01`, which no escaped key contains.
fn versions_end(enc: &[u8]) -> Vec<u8> {
    let mut end = enc.to_vec();
    *end.last_mut().expect("escaped keys end with a terminator") = 0x01;
    end
}

fn show(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(&bytes[..bytes.len().min(64)]))
}

/// The user key of an encoded data key, for error messages.
fn show_user_key(raw_key: &[u8]) -> String {
    match keycode::unescape(raw_key) {
        Ok((user_key, _)) => show(&user_key),
        Err(_) => show(raw_key),
    }
}

fn decode_value(raw_key: &[u8], ts: Timestamp, raw: &[u8]) -> Result<Option<Vec<u8>>> {
    let what = || format!("data value of key {} @ {ts}", show_user_key(raw_key));
    match record::decode(raw, &what)? {
        (KIND_PUT, v) => Ok(Some(v.to_vec())),
        (KIND_TOMBSTONE, []) => Ok(None),
        (kind, _) => Err(Error::corrupt(what(), format!("unknown version kind {kind}"))),
    }
}

fn check_key(key: &[u8]) -> Result<()> {
    if key.len() > KEY_SIZE_MAX {
        return Err(Error::KeyTooLarge { len: key.len(), max: KEY_SIZE_MAX });
    }
    Ok(())
}

/// Adds "`key` = `value` at `ts`" to `batch`.
pub fn put(batch: &mut WriteBatch, key: &[u8], ts: Timestamp, value: &[u8]) -> Result<()> {
    check_key(key)?;
    if value.len() > VALUE_SIZE_MAX {
        return Err(Error::ValueTooLarge { what: "value", len: value.len(), max: VALUE_SIZE_MAX });
    }
    batch.put(Cf::Data, encode_key(key, ts), record::encode(KIND_PUT, value));
    Ok(())
}

/// Adds "`key` deleted at `ts`" (a tombstone) to `batch`.
pub fn delete(batch: &mut WriteBatch, key: &[u8], ts: Timestamp) -> Result<()> {
    check_key(key)?;
    batch.put(Cf::Data, encode_key(key, ts), record::encode(KIND_TOMBSTONE, &[]));
    Ok(())
}

/// A live `(key, value)` pair as a scan returns it.
pub type Row = (Vec<u8>, Vec<u8>);

/// Multi-version reads and GC over an [`Engine`].
pub struct Mvcc {
    engine: Arc<dyn Engine>,
    gc_horizon: AtomicU64,
}

impl Mvcc {
    /// MVCC over `engine`, loading the stored GC horizon.
    pub fn open(engine: Arc<dyn Engine>) -> Result<Self> {
        let horizon = match engine.get(Cf::Meta, &[MetaTag::GcHorizon as u8])? {
            None => Timestamp::ZERO,
            Some(raw) => {
                let (_, p) = record::decode(&raw, &|| "GC horizon".to_string())?;
                let bytes: [u8; 8] =
                    p.try_into().map_err(|_| Error::corrupt("GC horizon", format!("{} bytes, 8 expected", p.len())))?;
                Timestamp::from_be_bytes(bytes)
            }
        };
        Ok(Mvcc { engine, gc_horizon: AtomicU64::new(horizon.nanos()) })
    }

    /// The engine underneath.
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    /// Reads below this timestamp fail: their versions may be gone.
    pub fn gc_horizon(&self) -> Timestamp {
        Timestamp::from_nanos(self.gc_horizon.load(Ordering::SeqCst))
    }

    fn check_ts(&self, ts: Timestamp) -> Result<()> {
        let horizon = self.gc_horizon();
        if ts < horizon {
            return Err(Error::BelowGcHorizon { ts, horizon });
        }
        Ok(())
    }

    /// The value of `key` visible at `ts`.
    pub fn get(&self, key: &[u8], ts: Timestamp) -> Result<Option<Vec<u8>>> {
        Ok(self.get_version(key, ts)?.and_then(|v| v.value))
    }

    /// The newest version of `key` with `commit_ts ≤ ts`, tombstones included.
    pub fn get_version(&self, key: &[u8], ts: Timestamp) -> Result<Option<Version>> {
        self.check_ts(ts)?;
        let start = encode_key(key, ts);
        let end = versions_end(&start[..start.len() - 8]);
        let mut it = self.engine.scan(Cf::Data, &start, Some(&end), Direction::Forward)?;
        match it.next() {
            None => Ok(None),
            Some(kv) => {
                let (raw_key, raw_val) = kv?;
                let (_, vts) = split_key(&raw_key)?;
                assert!(vts <= ts, "MVCC invariant: a seek to (key, !{ts}) lands on a version ≤ it, found {vts}");
                Ok(Some(Version { ts: vts, value: decode_value(&raw_key, vts, &raw_val)? }))
            }
        }
    }

    /// Up to `limit` live `(key, value)` pairs with keys in `[start, end)`, as of `ts`, in key
    /// order.
    pub fn scan(&self, start: &[u8], end: Option<&[u8]>, ts: Timestamp, limit: usize) -> Result<Vec<Row>> {
        Ok(self.scan_newest(start, end, ts, limit)?.0)
    }

    /// [`Mvcc::scan`], plus the newest commit timestamp among the versions the result reflects
    /// (tombstones of deleted keys included; `Timestamp::ZERO` if none): a reader must not be
    /// answered before `TT.after` of it (Spanner §4.1.2, commit wait).
    pub fn scan_newest(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        ts: Timestamp,
        limit: usize,
    ) -> Result<(Vec<Row>, Timestamp)> {
        self.check_ts(ts)?;
        let (lo, hi) = encoded_range(start, end);
        let mut out = Vec::new();
        let mut newest = Timestamp::ZERO;
        let mut done_with: Option<Vec<u8>> = None; // escaped key whose visible version was seen
        for kv in self.engine.scan(Cf::Data, &lo, hi.as_deref(), Direction::Forward)? {
            if out.len() >= limit {
                break;
            }
            let (raw_key, raw_val) = kv?;
            let (enc, vts) = split_key(&raw_key)?;
            if vts > ts || done_with.as_deref() == Some(enc) {
                continue;
            }
            done_with = Some(enc.to_vec());
            newest = newest.max(vts);
            if let Some(v) = decode_value(&raw_key, vts, &raw_val)? {
                let (user_key, _) = keycode::unescape(enc)?;
                out.push((user_key, v));
            }
        }
        Ok((out, newest))
    }

    /// Every stored version of keys in `[start, end)` (newest first per key): the raw material
    /// of a range snapshot, and a debugging aid.
    pub fn versions(&self, start: &[u8], end: Option<&[u8]>) -> Result<Vec<(Vec<u8>, Version)>> {
        let (lo, hi) = encoded_range(start, end);
        let mut out = Vec::new();
        for kv in self.engine.scan(Cf::Data, &lo, hi.as_deref(), Direction::Forward)? {
            let (raw_key, raw_val) = kv?;
            let (enc, ts) = split_key(&raw_key)?;
            let (user_key, _) = keycode::unescape(enc)?;
            let value = decode_value(&raw_key, ts, &raw_val)?;
            out.push((user_key, Version { ts, value }));
        }
        Ok(out)
    }

    /// Raises the GC horizon to `horizon` (durably, before anything is deleted) and removes every
    /// version no read at or above the horizon can see. Never lowers the horizon.
    pub fn gc(&self, horizon: Timestamp) -> Result<GcStats> {
        let horizon = horizon.max(self.gc_horizon());
        let mut hb = WriteBatch::new();
        hb.put(Cf::Meta, vec![MetaTag::GcHorizon as u8], record::encode(1, &horizon.to_be_bytes()));
        self.engine.write(hb, true)?;
        self.gc_horizon.store(horizon.nanos(), Ordering::SeqCst);

        let mut stats = GcStats::default();
        let mut batch = WriteBatch::new();
        // State for the user key being swept: its escaped form, and whether its newest version
        // ≤ horizon has been seen (everything older than that is invisible to allowed reads).
        let mut current: Option<Vec<u8>> = None;
        let mut kept_visible = false;
        for kv in self.engine.scan(Cf::Data, &[], None, Direction::Forward)? {
            let (raw_key, raw_val) = kv?;
            let (enc, ts) = split_key(&raw_key)?;
            if current.as_deref() != Some(enc) {
                current = Some(enc.to_vec());
                kept_visible = false;
                stats.keys_scanned += 1;
            }
            if ts > horizon {
                continue;
            }
            let doomed = if kept_visible {
                true
            } else {
                kept_visible = true;
                // The visible version at the horizon: a tombstone hides nothing older either.
                decode_value(&raw_key, ts, &raw_val)?.is_none()
            };
            if doomed {
                batch.delete(Cf::Data, raw_key);
                stats.versions_deleted += 1;
                if batch.len() >= GC_BATCH_MAX {
                    self.engine.write(std::mem::take(&mut batch), false)?;
                }
            }
        }
        if !batch.is_empty() {
            self.engine.write(batch, false)?;
        }
        Ok(stats)
    }
}
