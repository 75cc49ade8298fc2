//! `meridian backup` and `meridian restore`: a consistent copy of a cluster's data, taken online.
//!
//! ```text
//!   backup  --addr A --out DIR [--at T]
//!     t = --at, or TT.now().latest at a node (what a read-only transaction picks, Spanner §4.1.4)
//!     for every range, up to BACKUP_RANGES_PARALLEL at once:
//!         snapshot scan of the range at t, BACKUP_PAGE_ROWS rows a page ──► DIR/rNNNN-CCC.dat
//!     fsync every data file, then MANIFEST.tmp ──fsync──► rename to MANIFEST ──► fsync DIR
//!   restore --addr NEW --from DIR [--force]
//!     read MANIFEST, read and check every file (size, CRC, record count) ── nothing written yet
//!     refuse a target that holds data (unless --force); split it where the backup's ranges began,
//!     right to left (each split then cuts a range that keeps its leader)
//!     write every record back in read-write transactions of RESTORE_BATCH_KEYS / _BYTES
//! ```
//!
//! **Consistency while transactions run.** Every page is a snapshot read at the one timestamp
//! `t`: a replica serves it only once its safe time has passed `t` (Spanner §4.1.3), so every
//! transaction that committed at or before `t` is in the backup and none after it — whatever
//! commits while the backup runs. That is Spanner's "consistent backups" (§1): a backup is a
//! read-only transaction at `t`, spread over many requests and ranges, and it takes no locks, so
//! it neither blocks nor aborts the writes going on. The one way it can fail is version GC: if
//! `t` falls below the GC horizon (`now − gc_ttl`, one hour by default) before the last page is
//! read, the versions at `t` are gone and the backup stops with an error saying so.
//!
//! **What is backed up.** Every key a client can write: the SQL catalog (`0x00 0x02 …`, in the
//! meta range) and all user keys (`0x01 …` upwards). Not the meta range's own records (range
//! descriptors, node addresses, leader hints, `0x00 0x01 …`): those describe *this* cluster's
//! machines and ranges, and the new cluster has its own. The range boundaries are kept in the
//! manifest as key spans; restore splits the new cluster at them. Only the newest version at `t`
//! of each key is kept: the restored keys get fresh commit timestamps in the new cluster, and
//! `AS OF SYSTEM TIME` reads before the restore see nothing.
//!
//! **Files.** One data file per range, cut into chunks of at most [`DATA_FILE_BYTES_MAX`]:
//!
//! ```text
//!   MAGIC "MRDNBK01" ‖ { key_len u32 ‖ key ‖ value_len u32 ‖ value }* ‖ END 0xFFFFFFFF
//!   ‖ records u64 ‖ crc32 u32          (big-endian; the CRC covers every byte before it)
//! ```
//!
//! and a `MANIFEST` (JSON: format version, cluster id, `t`, and per file its key span, record
//! count, size and CRC), written last and atomically (temporary file, fsync, rename, fsync of the
//! directory): a directory without one is a backup that failed or is still running, and restore
//! refuses it. Restore checks every file against the manifest before writing a single key.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use futures::StreamExt;
use meridian_client::{Client, ClientError};
use meridian_shard::range::{self, RangeDescriptor};
use meridian_truetime::Timestamp;
use serde::{Deserialize, Serialize};

/// The first bytes of every data file.
const MAGIC: &[u8; 8] = b"MRDNBK01";
/// The key-length word that ends the records (no key is that long).
const END: u32 = u32::MAX;
/// Footer after [`END`]: record count (u64) and CRC32 (u32).
const FOOTER_BYTES: usize = 4 + 8 + 4;
/// The manifest's format version; restore refuses others.
pub const FORMAT_VERSION: u32 = 1;
/// The manifest's file name.
pub const MANIFEST: &str = "MANIFEST";
/// A data file is closed and the next chunk begun once it holds this many bytes (so restore
/// holds at most one chunk of each file it writes in memory).
pub const DATA_FILE_BYTES_MAX: u64 = 64 << 20;
/// Rows per snapshot scan page.
pub const BACKUP_PAGE_ROWS: usize = 1_000;
/// Ranges read at once.
pub const BACKUP_RANGES_PARALLEL: usize = 4;
/// Most keys written in one restore transaction.
pub const RESTORE_BATCH_KEYS: usize = 500;
/// Most key and value bytes written in one restore transaction.
pub const RESTORE_BATCH_BYTES: usize = 4 << 20;
/// Data files restored at once.
pub const RESTORE_FILES_PARALLEL: usize = 4;
/// Attempts of a restore batch whose outcome was unknown (writing it again is harmless: the
/// same values).
const RESTORE_BATCH_ATTEMPTS_MAX: u32 = 5;
/// Most data files in one backup (the manifest is read whole).
const FILES_MAX: usize = 1_000_000;
/// Where a backup starts: the SQL catalog; below it lie the meta range's own records.
const BACKUP_START: &[u8] = range::SQL_CATALOG_PREFIX;

const _: () = assert!(
    (range::KEY_SIZE_MAX as u64) < END as u64 && (meridian_storage::VALUE_SIZE_MAX as u64) < END as u64,
    "the END word must never be a key or value length"
);
const _: () = assert!(
    RESTORE_BATCH_BYTES >= range::KEY_SIZE_MAX + meridian_storage::VALUE_SIZE_MAX,
    "a restore batch must fit the largest record"
);

/// Arguments of `meridian backup`.
#[derive(clap::Args)]
pub struct BackupArgs {
    /// Any node of the cluster.
    #[arg(long, default_value = "127.0.0.1:7000", env = "MERIDIAN_ADDR")]
    pub addr: String,
    /// TLS and token for a secured cluster.
    #[command(flatten)]
    pub auth: crate::cert::ClientAuthArgs,
    /// Directory to write (created; must be empty if it exists).
    #[arg(long)]
    pub out: PathBuf,
    /// Back up the data as of this timestamp (`seconds.nanos` or nanoseconds since the epoch;
    /// not below the GC horizon). Default: now.
    #[arg(long)]
    pub at: Option<String>,
}

/// Arguments of `meridian restore`.
#[derive(clap::Args)]
pub struct RestoreArgs {
    /// Any node of the cluster to restore into.
    #[arg(long, default_value = "127.0.0.1:7000", env = "MERIDIAN_ADDR")]
    pub addr: String,
    /// TLS and token for a secured cluster.
    #[command(flatten)]
    pub auth: crate::cert::ClientAuthArgs,
    /// The backup directory.
    #[arg(long)]
    pub from: PathBuf,
    /// Write even though the target cluster already holds keys (backed-up keys overwrite theirs;
    /// others stay).
    #[arg(long)]
    pub force: bool,
}

/// The `MANIFEST` of a backup.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// [`FORMAT_VERSION`].
    pub format: u32,
    /// The id of the cluster backed up.
    pub cluster_id: String,
    /// The snapshot timestamp, nanoseconds since the epoch.
    pub timestamp_ns: u64,
    /// The same, readable (`seconds.nanos`).
    pub timestamp: String,
    /// Records in all files.
    pub keys: u64,
    /// Bytes of all files.
    pub bytes: u64,
    /// The data files, in key order.
    pub files: Vec<FileEntry>,
}

/// One data file in the manifest.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// File name inside the backup directory.
    pub name: String,
    /// First key of the span the file covers (hex).
    pub start: String,
    /// First key after the span (hex; empty: the end of the key space).
    pub end: String,
    /// Records in the file.
    pub keys: u64,
    /// The file's size in bytes.
    pub bytes: u64,
    /// CRC32 of the file up to its last four bytes (which hold the same CRC).
    pub crc32: u32,
}

/// A data file that cannot be trusted.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Too short, or cut off in the middle of a record.
    #[error("truncated: {0}")]
    Truncated(String),
    /// The bytes do not match their checksum.
    #[error("CRC mismatch: the file says {stored:08x}, its bytes give {actual:08x}")]
    Crc {
        /// The CRC stored in the file.
        stored: u32,
        /// The CRC of the bytes.
        actual: u32,
    },
    /// Well-formed but not what a data file holds.
    #[error("malformed: {0}")]
    Malformed(String),
}

/// Writes one data file, keeping its CRC and counts as it goes.
struct DataWriter {
    out: std::io::BufWriter<std::fs::File>,
    crc: crc32fast::Hasher,
    records: u64,
    bytes: u64,
}

impl DataWriter {
    fn create(path: &Path) -> std::io::Result<DataWriter> {
        let file = std::fs::OpenOptions::new().write(true).create_new(true).open(path)?;
        let mut w =
            DataWriter { out: std::io::BufWriter::new(file), crc: crc32fast::Hasher::new(), records: 0, bytes: 0 };
        w.put(MAGIC)?;
        Ok(w)
    }

    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.crc.update(bytes);
        self.bytes += bytes.len() as u64;
        self.out.write_all(bytes)
    }

    fn record(&mut self, key: &[u8], value: &[u8]) -> std::io::Result<()> {
        assert!(key.len() < END as usize && value.len() < END as usize, "record lengths fit below END");
        self.put(&(key.len() as u32).to_be_bytes())?;
        self.put(key)?;
        self.put(&(value.len() as u32).to_be_bytes())?;
        self.put(value)?;
        self.records += 1;
        Ok(())
    }

    /// Writes the footer and syncs; returns (records, bytes, crc).
    fn finish(mut self) -> std::io::Result<(u64, u64, u32)> {
        self.put(&END.to_be_bytes())?;
        self.put(&self.records.to_be_bytes())?;
        let crc = self.crc.clone().finalize();
        self.out.write_all(&crc.to_be_bytes())?;
        self.bytes += 4;
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok((self.records, self.bytes, crc))
    }
}

/// A whole data file in memory (for tests; `backup` streams through a [`DataWriter`]).
#[cfg(test)]
pub fn encode(records: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for (k, v) in records {
        assert!(k.len() < END as usize && v.len() < END as usize, "record lengths fit below END");
        out.extend_from_slice(&(k.len() as u32).to_be_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(v);
    }
    out.extend_from_slice(&END.to_be_bytes());
    out.extend_from_slice(&(records.len() as u64).to_be_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// One key and its value, as a backup holds it.
pub type Record = (Vec<u8>, Vec<u8>);

/// The records of a data file, after checking its CRC, structure, and that keys ascend.
pub fn decode(bytes: &[u8]) -> Result<Vec<Record>, FormatError> {
    if bytes.len() < MAGIC.len() + FOOTER_BYTES {
        return Err(FormatError::Truncated(format!("{} bytes is shorter than an empty data file", bytes.len())));
    }
    let (body, crc_bytes) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_be_bytes(crc_bytes.try_into().expect("split 4 bytes off"));
    let actual = crc32fast::hash(body);
    if stored != actual {
        return Err(FormatError::Crc { stored, actual });
    }
    if &body[..MAGIC.len()] != MAGIC {
        return Err(FormatError::Malformed("not a Meridian backup data file (bad magic)".into()));
    }
    let mut at = MAGIC.len();
    let word = |at: &mut usize| -> Result<u32, FormatError> {
        let b = body.get(*at..*at + 4).ok_or_else(|| FormatError::Truncated(format!("at byte {at}")))?;
        *at += 4;
        Ok(u32::from_be_bytes(b.try_into().expect("4 bytes")))
    };
    let take = |at: &mut usize, n: usize| -> Result<Vec<u8>, FormatError> {
        let b = body.get(*at..*at + n).ok_or_else(|| FormatError::Truncated(format!("record at byte {at}")))?;
        *at += n;
        Ok(b.to_vec())
    };
    let mut records: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    loop {
        let klen = word(&mut at)?;
        if klen == END {
            break;
        }
        if klen as usize > range::KEY_SIZE_MAX {
            return Err(FormatError::Malformed(format!("a {klen}-byte key exceeds the key limit")));
        }
        let key = take(&mut at, klen as usize)?;
        let vlen = word(&mut at)? as usize;
        if vlen > meridian_storage::VALUE_SIZE_MAX {
            return Err(FormatError::Malformed(format!("a {vlen}-byte value exceeds the value limit")));
        }
        let value = take(&mut at, vlen)?;
        if records.last().is_some_and(|(last, _)| *last >= key) {
            return Err(FormatError::Malformed("keys out of order".into()));
        }
        records.push((key, value));
    }
    let count = body
        .get(at..at + 8)
        .ok_or_else(|| FormatError::Truncated("footer".into()))
        .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))?;
    if at + 8 != body.len() {
        return Err(FormatError::Malformed(format!("{} bytes after the footer", body.len() - at - 8)));
    }
    if count != records.len() as u64 {
        return Err(FormatError::Malformed(format!("footer says {count} records, the file holds {}", records.len())));
    }
    Ok(records)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> anyhow::Result<Vec<u8>> {
    ensure!(text.len().is_multiple_of(2) && text.is_ascii(), "bad hex key {text:?} in the manifest");
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).context("bad hex key")).collect()
}

/// Runs `meridian backup`.
pub fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(backup_async(args))
}

/// Runs `meridian restore`.
pub fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(restore_async(args))
}

/// What one range's scan wrote.
struct RangeFiles {
    index: usize,
    files: Vec<FileEntry>,
}

async fn backup_async(args: BackupArgs) -> anyhow::Result<()> {
    let options = args.auth.options()?;
    check_out_dir(&args.out)?;
    let client = Arc::new(Client::connect_with([args.addr.clone()], options).await?);
    let status = client.node_status(&args.addr).await?;
    // TT.now().latest at a node: the timestamp a read-only transaction starting now would get
    // (Spanner §4.1.4), so the backup holds every transaction acknowledged before it began.
    let now_latest = Timestamp::from_nanos(status.now_latest);
    let t = match &args.at {
        None => now_latest,
        Some(text) => {
            let t = Timestamp::parse(text).with_context(|| format!("--at {text:?}: expected seconds.nanos"))?;
            ensure!(t <= now_latest, "--at {t} is in the future (the cluster's clock says at most {now_latest})");
            t
        }
    };
    let (mut descs, _, _) = client.cluster_view().await.context("listing the ranges")?;
    descs.sort_by(|a, b| a.start.cmp(&b.start));
    // Only now that the cluster answered: a backup that cannot start leaves nothing behind.
    create_out_dir(&args.out)?;
    // The spans to read: every range's, clipped to start at the SQL catalog.
    let spans: Vec<(Vec<u8>, Vec<u8>)> = descs
        .iter()
        .filter(|d| d.end.is_empty() || d.end.as_slice() > BACKUP_START)
        .map(|d: &RangeDescriptor| (d.start.clone().max(BACKUP_START.to_vec()), d.end.clone()))
        .collect();
    println!("backup of cluster {} at {t}: {} ranges", status.cluster_id, spans.len());
    let out = args.out.clone();
    let mut results: Vec<RangeFiles> = futures::stream::iter(spans.into_iter().enumerate())
        .map(|(index, (start, end))| {
            let (client, out) = (client.clone(), out.clone());
            async move { backup_range(&client, t, &out, index, start, end).await }
        })
        .buffer_unordered(BACKUP_RANGES_PARALLEL)
        .collect::<Vec<anyhow::Result<RangeFiles>>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    results.sort_by_key(|r| r.index);
    let files: Vec<FileEntry> = results.into_iter().flat_map(|r| r.files).collect();
    let manifest = Manifest {
        format: FORMAT_VERSION,
        cluster_id: status.cluster_id,
        timestamp_ns: t.nanos(),
        timestamp: t.to_string(),
        keys: files.iter().map(|f| f.keys).sum(),
        bytes: files.iter().map(|f| f.bytes).sum(),
        files,
    };
    write_manifest(&args.out, &manifest)?;
    println!(
        "backup complete: {} keys, {} bytes in {} files at {t} in {}",
        manifest.keys,
        manifest.bytes,
        manifest.files.len(),
        args.out.display()
    );
    Ok(())
}

/// Checks that `dir` is missing, or an empty directory: before anything is asked of the cluster.
fn check_out_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
        ensure!(entries.next().is_none(), "{} is not empty: back up into a new or empty directory", dir.display());
    }
    Ok(())
}

/// Creates `dir` (it may exist, empty: [`check_out_dir`] said so).
fn create_out_dir(dir: &Path) -> anyhow::Result<()> {
    check_out_dir(dir)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

/// Reads `[start, end)` at `t` in pages into data files `r{index}-{chunk}.dat`.
async fn backup_range(
    client: &Arc<Client>,
    t: Timestamp,
    dir: &Path,
    index: usize,
    start: Vec<u8>,
    end: Vec<u8>,
) -> anyhow::Result<RangeFiles> {
    let mut snap = client.snapshot(Some(t));
    let mut files = Vec::new();
    let mut chunk_start = start.clone();
    let mut cursor = start.clone();
    let open = |chunk: usize| -> anyhow::Result<(String, DataWriter)> {
        let name = format!("r{index:05}-{chunk:04}.dat");
        let w = DataWriter::create(&dir.join(&name)).with_context(|| format!("creating {name}"))?;
        Ok((name, w))
    };
    let (mut name, mut w) = open(0)?;
    // Bounded: every page but the last is full and advances the cursor past its last key.
    loop {
        let page = snap.scan(&cursor, &end, BACKUP_PAGE_ROWS).await.map_err(|e| read_failed(e, t))?;
        let full = page.len() == BACKUP_PAGE_ROWS;
        for (k, v) in &page {
            if w.bytes >= DATA_FILE_BYTES_MAX {
                // Cut the chunk before `k`: the next chunk's span starts there.
                let (keys, bytes, crc32) = w.finish().with_context(|| format!("writing {name}"))?;
                files.push(FileEntry { name, start: hex(&chunk_start), end: hex(k), keys, bytes, crc32 });
                chunk_start = k.clone();
                (name, w) = open(files.len())?;
            }
            w.record(k, v).with_context(|| format!("writing {name}"))?;
        }
        match page.last() {
            Some((last, _)) if full => {
                cursor = last.clone();
                cursor.push(0);
            }
            _ => break,
        }
    }
    let (keys, bytes, crc32) = w.finish().with_context(|| format!("writing {name}"))?;
    files.push(FileEntry { name, start: hex(&chunk_start), end: hex(&end), keys, bytes, crc32 });
    Ok(RangeFiles { index, files })
}

/// A failed snapshot read, explained.
fn read_failed(e: ClientError, t: Timestamp) -> anyhow::Error {
    match &e {
        ClientError::Invalid(m) if m.contains("GC horizon") => anyhow::anyhow!(
            "the backup timestamp {t} fell below the GC horizon while the backup ran ({m}); the versions at {t} \
             are gone, so this backup cannot be completed: run it again (it picks a newer timestamp), or lengthen \
             the nodes' GC TTL for very long backups"
        ),
        _ => anyhow::Error::new(e).context(format!("snapshot read at {t}")),
    }
}

/// Writes the manifest atomically: a temporary file, fsync, rename, fsync of the directory.
fn write_manifest(dir: &Path, m: &Manifest) -> anyhow::Result<()> {
    let tmp = dir.join(format!("{MANIFEST}.tmp"));
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(&serde_json::to_vec_pretty(m)?)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(MANIFEST)).context("renaming the manifest into place")?;
    std::fs::File::open(dir)?.sync_all().context("syncing the backup directory")?;
    Ok(())
}

/// Reads and checks the manifest of `dir`.
pub fn read_manifest(dir: &Path) -> anyhow::Result<Manifest> {
    let path = dir.join(MANIFEST);
    let raw = match std::fs::read(&path) {
        Ok(raw) => raw,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "{} has no {MANIFEST}: it is not a complete backup (a backup that failed or is still running has \
             none); nothing was restored",
            dir.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let m: Manifest = serde_json::from_slice(&raw).with_context(|| format!("{} is corrupt", path.display()))?;
    ensure!(
        m.format == FORMAT_VERSION,
        "{} has format version {}; this meridian reads version {FORMAT_VERSION}",
        path.display(),
        m.format
    );
    ensure!(m.files.len() <= FILES_MAX, "the manifest lists more than {FILES_MAX} files");
    for f in &m.files {
        ensure!(
            !f.name.is_empty() && !f.name.contains(['/', '\\']) && f.name != "." && f.name != "..",
            "the manifest names a file outside the backup directory: {:?}",
            f.name
        );
    }
    ensure!(m.keys == m.files.iter().map(|f| f.keys).sum::<u64>(), "the manifest's key total does not add up");
    Ok(m)
}

/// Reads data file `f` of `dir` and checks it against its manifest entry.
pub fn read_file(dir: &Path, f: &FileEntry) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let path = dir.join(&f.name);
    let bytes = std::fs::read(&path).with_context(|| format!("backup file {} cannot be read", f.name))?;
    let bad = |why: String| anyhow::anyhow!("backup file {} is corrupt: {why}; nothing was restored", f.name);
    if bytes.len() as u64 != f.bytes {
        return Err(bad(format!("it has {} bytes, the manifest says {}", bytes.len(), f.bytes)));
    }
    let records = decode(&bytes).map_err(|e| bad(e.to_string()))?;
    let crc = u32::from_be_bytes(bytes[bytes.len() - 4..].try_into().expect("decode checked the length"));
    if crc != f.crc32 {
        return Err(bad(format!("its CRC {crc:08x} differs from the manifest's {:08x}", f.crc32)));
    }
    if records.len() as u64 != f.keys {
        return Err(bad(format!("{} records, the manifest says {}", records.len(), f.keys)));
    }
    let (start, end) = (unhex(&f.start)?, unhex(&f.end)?);
    if let Some((k, _)) = records.iter().find(|(k, _)| *k < start || (!end.is_empty() && *k >= end)) {
        return Err(bad(format!("key {} lies outside the file's span", String::from_utf8_lossy(k))));
    }
    Ok(records)
}

async fn restore_async(args: RestoreArgs) -> anyhow::Result<()> {
    let m = read_manifest(&args.from)?;
    // Everything is checked before anything is written.
    for f in &m.files {
        read_file(&args.from, f)?;
    }
    let t = Timestamp::from_nanos(m.timestamp_ns);
    let client = Arc::new(Client::connect_with([args.addr.clone()], args.auth.options()?).await?);
    let (first, _) = client
        .read_only(|ro| Box::pin(async move { ro.scan(BACKUP_START, b"", 1).await }))
        .await
        .context("checking that the target cluster is empty")?;
    if let Some((k, _)) = first.first()
        && !args.force
    {
        bail!(
            "the target cluster already holds data (first key {:?}); restore into an empty cluster, or pass --force \
             to write over it; nothing was restored",
            String::from_utf8_lossy(k)
        );
    }
    // Recreate the backup's range boundaries in the user key space, so the data spreads as it did.
    let (descs, _, _) = client.cluster_view().await.context("listing the target's ranges")?;
    let existing: std::collections::BTreeSet<Vec<u8>> = descs.into_iter().map(|d| d.start).collect();
    let mut points = std::collections::BTreeSet::new();
    for f in &m.files {
        let start = unhex(&f.start)?;
        if start.as_slice() >= range::USER_KEYS_START && !existing.contains(&start) {
            points.insert(start);
        }
    }
    let started = std::time::Instant::now();
    // Right to left: each split cuts the range that keeps its leader and lease (the left half),
    // so it is one round trip. Left to right, each would land in the right half just made, and
    // wait for that half's first leader to get its lease.
    for start in points.iter().rev() {
        // Best effort: the data is correct whatever the ranges; only its spread differs.
        if let Err(e) = client.split(start).await {
            eprintln!("warning: could not split the target at {}: {e}", String::from_utf8_lossy(start));
        }
    }
    println!("split the target at {} keys in {:.1} s", points.len(), started.elapsed().as_secs_f64());
    let dir = args.from.clone();
    let written: Vec<(u64, u64)> = futures::stream::iter(m.files.clone())
        .map(|f| {
            let (client, dir) = (client.clone(), dir.clone());
            async move { restore_file(&client, &dir, &f).await }
        })
        .buffer_unordered(RESTORE_FILES_PARALLEL)
        .collect::<Vec<anyhow::Result<(u64, u64)>>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let keys: u64 = written.iter().map(|w| w.0).sum();
    let bytes: u64 = written.iter().map(|w| w.1).sum();
    println!(
        "restored {keys} keys ({bytes} bytes of keys and values) from the backup of cluster {} at {t}",
        m.cluster_id
    );
    Ok(())
}

/// Writes one data file's records in bounded transactions; returns (keys, key+value bytes).
async fn restore_file(client: &Client, dir: &Path, f: &FileEntry) -> anyhow::Result<(u64, u64)> {
    let records = read_file(dir, f)?;
    let (mut keys, mut bytes) = (0u64, 0u64);
    let mut batch: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut batch_bytes = 0usize;
    let mut rest = records.into_iter().peekable();
    while let Some((k, v)) = rest.next() {
        batch_bytes += k.len() + v.len();
        batch.push((k, v));
        let next_fits = rest.peek().is_some_and(|(k, v)| batch_bytes + k.len() + v.len() <= RESTORE_BATCH_BYTES);
        if batch.len() < RESTORE_BATCH_KEYS && next_fits {
            continue;
        }
        keys += batch.len() as u64;
        bytes += batch_bytes as u64;
        write_batch(client, Arc::new(std::mem::take(&mut batch)))
            .await
            .with_context(|| format!("restoring {} (some keys may have been written)", f.name))?;
        batch_bytes = 0;
    }
    Ok((keys, bytes))
}

/// Puts `batch` in one read-write transaction, again if its outcome was unknown.
async fn write_batch(client: &Client, batch: Arc<Vec<(Vec<u8>, Vec<u8>)>>) -> Result<(), ClientError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let b = batch.clone();
        let r = client
            .read_write(move |t| {
                let b = b.clone();
                Box::pin(async move {
                    for (k, v) in b.iter() {
                        t.put(k, v);
                    }
                    Ok(())
                })
            })
            .await;
        match r {
            Err(ClientError::Ambiguous(_) | ClientError::Unavailable(_)) if attempt < RESTORE_BATCH_ATTEMPTS_MAX => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            r => return r.map(|_| ()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records in key order, as a backup writes them.
    fn records() -> Vec<(Vec<u8>, Vec<u8>)> {
        vec![
            (b"\x00\x02table/t".to_vec(), b"{}".to_vec()),
            (vec![0x01; 300], vec![0xFF; 5000]),
            (b"a".to_vec(), Vec::new()),
            (b"bank/acct/0001".to_vec(), b"100".to_vec()),
        ]
    }

    #[test]
    fn encode_and_decode_round_trip() {
        for recs in [Vec::new(), records()] {
            let bytes = encode(&recs);
            assert_eq!(decode(&bytes).expect("decodes"), recs);
        }
        let mut unordered = records();
        unordered.swap(0, 1);
        assert!(matches!(decode(&encode(&unordered)), Err(FormatError::Malformed(_))), "keys must ascend");
    }

    #[test]
    fn the_streaming_writer_writes_what_encode_does() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.dat");
        let mut w = DataWriter::create(&path).expect("create");
        let recs = records();
        for (k, v) in &recs {
            w.record(k, v).expect("write");
        }
        let (n, bytes, crc) = w.finish().expect("finish");
        let on_disk = std::fs::read(&path).expect("read");
        assert_eq!(on_disk, encode(&recs));
        assert_eq!((n, bytes), (recs.len() as u64, on_disk.len() as u64));
        assert_eq!(crc, crc32fast::hash(&on_disk[..on_disk.len() - 4]));
    }

    #[test]
    fn every_flipped_byte_and_every_truncation_is_detected() {
        let bytes = encode(&records());
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(decode(&bad).is_err(), "a flipped byte {i} must be detected");
        }
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "a file cut to {len} bytes must be refused");
        }
        let mut bad = bytes.clone();
        bad[10] ^= 0x40;
        assert!(matches!(decode(&bad), Err(FormatError::Crc { .. })), "a body byte flip is a CRC mismatch");
    }

    #[test]
    fn a_well_checksummed_file_with_a_lying_footer_is_refused() {
        let mut bytes = encode(&records());
        // Rewrite the record count and fix up the CRC: structure checks must still catch it.
        let n = bytes.len();
        bytes[n - 12..n - 4].copy_from_slice(&7u64.to_be_bytes());
        let crc = crc32fast::hash(&bytes[..n - 4]);
        bytes[n - 4..].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(decode(&bytes), Err(FormatError::Malformed(_))));
    }

    #[test]
    fn manifests_round_trip_and_missing_ones_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = read_manifest(dir.path()).expect_err("no manifest").to_string();
        assert!(err.contains("has no MANIFEST"), "{err}");
        let data = encode(&records()[1..]);
        std::fs::write(dir.path().join("r0.dat"), &data).expect("write");
        let m = Manifest {
            format: FORMAT_VERSION,
            cluster_id: "c".into(),
            timestamp_ns: 5,
            timestamp: "0.000000005".into(),
            keys: 3,
            bytes: data.len() as u64,
            files: vec![FileEntry {
                name: "r0.dat".into(),
                start: hex(&[0x01]),
                end: String::new(),
                keys: 3,
                bytes: data.len() as u64,
                crc32: crc32fast::hash(&data[..data.len() - 4]),
            }],
        };
        write_manifest(dir.path(), &m).expect("write manifest");
        assert_eq!(read_manifest(dir.path()).expect("read"), m);
        assert_eq!(read_file(dir.path(), &m.files[0]).expect("file").len(), 3);
        let mut outside = m.files[0].clone();
        outside.start = hex(b"b");
        let err = read_file(dir.path(), &outside).expect_err("keys before the span").to_string();
        assert!(err.contains("r0.dat") && err.contains("outside"), "{err}");
        assert_eq!(unhex(&hex(&[0, 1, 0xab, 0xff])).expect("hex"), vec![0, 1, 0xab, 0xff]);
    }
}
