//! The durable Paxos log and hard state of every group on a node.
//!
//! ```text
//!   paxos cf:  group (u64 BE) ‖ slot (u64 BE)  →  record(entry bytes)
//!   meta  cf:  'h' ‖ group (u64 BE)            →  record(hard state bytes)
//! ```
//!
//! The bytes are opaque here: the replica (`meridian-shard`) defines what an entry and the hard
//! state contain. This module only stores them durably, checks their checksums on the way back,
//! and supports the operations Multi-Paxos needs: write any slot (slots can be accepted out of
//! order), read a range, drop a prefix after a snapshot, drop a suffix, and list the groups
//! that exist on the node after a restart.

use std::sync::Arc;

use crate::engine::{Cf, Direction, Engine, WriteBatch};
use crate::{Error, GroupId, LOG_RECORD_SIZE_MAX, MetaTag, Result, Slot, record};

const KIND_ENTRY: u8 = 1;
const KIND_HARD_STATE: u8 = 2;

fn entry_key(group: GroupId, slot: Slot) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&group.0.to_be_bytes());
    k[8..].copy_from_slice(&slot.0.to_be_bytes());
    k
}

fn hard_state_key(group: GroupId) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = MetaTag::HardState as u8;
    k[1..].copy_from_slice(&group.0.to_be_bytes());
    k
}

fn group_start(group: GroupId) -> [u8; 8] {
    group.0.to_be_bytes()
}

/// End (exclusive) of `group`'s part of the log column family.
fn group_end(group: GroupId) -> Vec<u8> {
    match group.0.checked_add(1) {
        Some(next) => next.to_be_bytes().to_vec(),
        None => vec![0xFF; 17], // beyond every 16-byte key of the last group
    }
}

fn parse_slot(group: GroupId, key: &[u8]) -> Result<Slot> {
    let bytes: [u8; 16] = key.try_into().map_err(|_| {
        Error::corrupt(format!("log key of group {}", group.0), format!("{} bytes, 16 expected", key.len()))
    })?;
    Ok(Slot(u64::from_be_bytes(bytes[8..].try_into().expect("8 bytes"))))
}

/// Adds "slot `slot` of `group` holds `entry`" to `batch`.
pub fn put_entry(batch: &mut WriteBatch, group: GroupId, slot: Slot, entry: &[u8]) -> Result<()> {
    if entry.len() > LOG_RECORD_SIZE_MAX {
        return Err(Error::ValueTooLarge { what: "log record", len: entry.len(), max: LOG_RECORD_SIZE_MAX });
    }
    batch.put(Cf::Log, entry_key(group, slot).to_vec(), record::encode(KIND_ENTRY, entry));
    Ok(())
}

/// Adds "drop every slot of `group` below `below`" to `batch` (log compaction after a snapshot).
pub fn truncate_prefix(batch: &mut WriteBatch, group: GroupId, below: Slot) {
    batch.delete_range(Cf::Log, group_start(group).to_vec(), entry_key(group, below).to_vec());
}

/// Adds "drop every slot of `group` from `from` on" to `batch`.
pub fn truncate_suffix(batch: &mut WriteBatch, group: GroupId, from: Slot) {
    batch.delete_range(Cf::Log, entry_key(group, from).to_vec(), group_end(group));
}

/// Adds "the hard state of `group` is `state`" to `batch`.
pub fn put_hard_state(batch: &mut WriteBatch, group: GroupId, state: &[u8]) -> Result<()> {
    if state.len() > LOG_RECORD_SIZE_MAX {
        return Err(Error::ValueTooLarge { what: "hard state", len: state.len(), max: LOG_RECORD_SIZE_MAX });
    }
    batch.put(Cf::Meta, hard_state_key(group).to_vec(), record::encode(KIND_HARD_STATE, state));
    Ok(())
}

/// Adds "remove `group`'s log and hard state" to `batch` (the replica left this node).
pub fn delete_group(batch: &mut WriteBatch, group: GroupId) {
    batch.delete_range(Cf::Log, group_start(group).to_vec(), group_end(group));
    batch.delete(Cf::Meta, hard_state_key(group).to_vec());
}

/// Reads of the Paxos log and hard state.
#[derive(Clone)]
pub struct LogStore {
    engine: Arc<dyn Engine>,
}

impl LogStore {
    /// Log reads over `engine`.
    pub fn new(engine: Arc<dyn Engine>) -> Self {
        LogStore { engine }
    }

    fn decode_entry(group: GroupId, slot: Slot, raw: &[u8]) -> Result<Vec<u8>> {
        let what = || format!("Paxos log entry of group {} slot {}", group.0, slot.0);
        match record::decode(raw, &what)? {
            (KIND_ENTRY, e) => Ok(e.to_vec()),
            (kind, _) => Err(Error::corrupt(what(), format!("record kind {kind}, expected {KIND_ENTRY}"))),
        }
    }

    /// The entry in `slot`, if stored.
    pub fn entry(&self, group: GroupId, slot: Slot) -> Result<Option<Vec<u8>>> {
        match self.engine.get(Cf::Log, &entry_key(group, slot))? {
            None => Ok(None),
            Some(raw) => Self::decode_entry(group, slot, &raw).map(Some),
        }
    }

    /// Stored entries with slots in `[from, to)`, in slot order, stopping once `max_bytes` is
    /// exceeded (the first entry is always returned, however large).
    pub fn entries(&self, group: GroupId, from: Slot, to: Slot, max_bytes: usize) -> Result<Vec<(Slot, Vec<u8>)>> {
        let (lo, hi) = (entry_key(group, from), entry_key(group, to));
        let mut out = Vec::new();
        let mut bytes = 0;
        for kv in self.engine.scan(Cf::Log, &lo, Some(&hi), Direction::Forward)? {
            let (k, v) = kv?;
            let slot = parse_slot(group, &k)?;
            let e = Self::decode_entry(group, slot, &v)?;
            bytes += e.len();
            out.push((slot, e));
            if bytes > max_bytes {
                break;
            }
        }
        Ok(out)
    }

    fn edge_slot(&self, group: GroupId, dir: Direction) -> Result<Option<Slot>> {
        let (lo, hi) = (group_start(group), group_end(group));
        match self.engine.scan(Cf::Log, &lo, Some(&hi), dir)?.next() {
            None => Ok(None),
            Some(kv) => parse_slot(group, &kv?.0).map(Some),
        }
    }

    /// The lowest stored slot of `group`.
    pub fn first_slot(&self, group: GroupId) -> Result<Option<Slot>> {
        self.edge_slot(group, Direction::Forward)
    }

    /// The highest stored slot of `group`.
    pub fn last_slot(&self, group: GroupId) -> Result<Option<Slot>> {
        self.edge_slot(group, Direction::Reverse)
    }

    /// The stored hard state of `group`.
    pub fn hard_state(&self, group: GroupId) -> Result<Option<Vec<u8>>> {
        match self.engine.get(Cf::Meta, &hard_state_key(group))? {
            None => Ok(None),
            Some(raw) => {
                let what = || format!("hard state of group {}", group.0);
                match record::decode(&raw, &what)? {
                    (KIND_HARD_STATE, s) => Ok(Some(s.to_vec())),
                    (kind, _) => Err(Error::corrupt(what(), format!("record kind {kind}, expected {KIND_HARD_STATE}"))),
                }
            }
        }
    }

    /// Every group with a stored hard state, in id order: the replicas to restart.
    pub fn groups(&self) -> Result<Vec<GroupId>> {
        let tag = MetaTag::HardState as u8;
        let mut out = Vec::new();
        for kv in self.engine.scan(Cf::Meta, &[tag], Some(&[tag + 1]), Direction::Forward)? {
            let (k, _) = kv?;
            let id: [u8; 8] = k[1..]
                .try_into()
                .map_err(|_| Error::corrupt("hard-state key", format!("{} bytes, 9 expected", k.len())))?;
            out.push(GroupId(u64::from_be_bytes(id)));
        }
        Ok(out)
    }
}
