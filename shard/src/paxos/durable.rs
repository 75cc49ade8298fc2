//! The bridge between a replica's outbox and the storage crate's durable Paxos log: encoding of
//! entries and hard state, and loading them back after a restart.

use meridian_storage::{GroupId, LogStore, Slot, WriteBatch, log};

use super::outbox::Outbox;
use super::types::{Accepted, HardState};

/// Errors reading back durable Paxos state.
#[derive(Debug, thiserror::Error)]
pub enum DurableError {
    /// The storage layer failed (including checksum failures).
    #[error(transparent)]
    Storage(#[from] meridian_storage::Error),
    /// A record passed its checksum but does not decode: written by an incompatible version.
    #[error("undecodable {what} of group {group}: {detail}")]
    Decode {
        /// `log entry` or `hard state`.
        what: &'static str,
        /// The group.
        group: GroupId,
        /// The decoder's message.
        detail: String,
    },
}

/// Adds the outbox's writes for `group` (hard state, accepted entries, log truncation) to
/// `batch`. The snapshot, if any, is the shell's to write: it belongs to the state machine.
pub fn persist(group: GroupId, out: &Outbox, batch: &mut WriteBatch) -> Result<(), meridian_storage::Error> {
    if let Some(below) = out.truncate_below {
        log::truncate_prefix(batch, group, below);
    }
    if let Some(hs) = &out.hard_state {
        log::put_hard_state(batch, group, &postcard::to_allocvec(hs).expect("hard state always encodes"))?;
    }
    for (slot, a) in &out.entries {
        log::put_entry(batch, group, *slot, &postcard::to_allocvec(a).expect("log entries always encode"))?;
    }
    Ok(())
}

/// Loads `group`'s hard state and log.
pub fn load(group: GroupId, logs: &LogStore) -> Result<(HardState, Vec<(Slot, Accepted)>), DurableError> {
    let hs = match logs.hard_state(group)? {
        None => HardState::default(),
        Some(bytes) => postcard::from_bytes(&bytes).map_err(|e| DurableError::Decode {
            what: "hard state",
            group,
            detail: e.to_string(),
        })?,
    };
    let mut entries = Vec::new();
    let mut from = Slot(0);
    loop {
        let chunk = logs.entries(group, from, Slot(u64::MAX), 16 << 20)?;
        let Some((last, _)) = chunk.last() else { break };
        from = Slot(last.0 + 1);
        for (slot, bytes) in chunk {
            let a: Accepted = postcard::from_bytes(&bytes).map_err(|e| DurableError::Decode {
                what: "log entry",
                group,
                detail: e.to_string(),
            })?;
            entries.push((slot, a));
        }
        if from == Slot(0) {
            break; // wrapped past u64::MAX
        }
    }
    Ok((hs, entries))
}
