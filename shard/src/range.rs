//! Ranges: contiguous key spans, each replicated by one Paxos group, and how keys find them.
//!
//! ```text
//!   key space:  [\x00 ............ \x01) [\x01 ......... m) [m ............ +∞)
//!                 meta range (group 0)     range g1            range g2
//!                 descriptors, nodes       user keys           user keys
//! ```
//!
//! - Keys starting with `0x00` are the system's; user keys start at `0x01`. The **meta range**
//!   (group 0, itself a Paxos group) owns `[0x00, 0x01)` and stores one descriptor per range,
//!   keyed by the range's *end* (so "which range holds k" is "the first descriptor whose end is
//!   after k"), plus the node list.
//! - A descriptor carries a **generation** that grows with every change (split, merge,
//!   membership). The meta index accepts a descriptor only if no overlapping descriptor it holds
//!   is newer, so updates arriving late or twice never roll it back.
//! - Clients cache descriptors ([`RangeCache`]) and refresh on routing errors.
//!
//! Group ids are allocated without coordination: the creating node's id in the high 24 bits and
//! a per-node counter in the low 40.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::GroupId;
use crate::paxos::{Config, NodeId};

/// The meta range's group.
pub const META_GROUP: GroupId = GroupId(0);
/// First user key: everything below belongs to the system.
pub const USER_KEYS_START: &[u8] = &[0x01];
/// Largest key accepted from clients (mirrors the storage limit).
pub const KEY_SIZE_MAX: usize = meridian_storage::KEY_SIZE_MAX;

/// Prefix of descriptor entries in the meta range.
const META_DESC_PREFIX: &[u8] = b"\x00\x01desc\x00";
/// Prefix of node entries in the meta range.
const META_NODE_PREFIX: &[u8] = b"\x00\x01node\x00";
/// Prefix of leader hints in the meta range.
const META_LEADER_PREFIX: &[u8] = b"\x00\x01lead\x00";

/// A group id minted by `node` from its local `counter`.
pub fn mint_group_id(node: NodeId, counter: u64) -> GroupId {
    assert!(node.0 < (1 << 24) && counter < (1 << 40), "group id space: node {node} counter {counter}");
    GroupId((node.0 << 40) | counter)
}

/// A range: a key span `[start, end)` (`end` empty means +∞) and the group replicating it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RangeDescriptor {
    /// The Paxos group (one per range).
    pub id: GroupId,
    /// First key.
    pub start: Vec<u8>,
    /// First key not included; empty for the last range.
    pub end: Vec<u8>,
    /// Replicas.
    pub config: Config,
    /// Grows with every change to this descriptor's span or replicas.
    pub generation: u64,
}

impl RangeDescriptor {
    /// Whether `key` is in `[start, end)`.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && (self.end.is_empty() || key < self.end.as_slice())
    }

    /// Whether `[start, end)` overlaps this range.
    pub fn overlaps(&self, start: &[u8], end: &[u8]) -> bool {
        let starts_before_our_end = self.end.is_empty() || start < self.end.as_slice();
        let ends_after_our_start = end.is_empty() || end > self.start.as_slice();
        starts_before_our_end && ends_after_our_start
    }

    /// The end as an `Option`: `None` for +∞.
    pub fn end_bound(&self) -> Option<&[u8]> {
        (!self.end.is_empty()).then_some(self.end.as_slice())
    }

    /// The meta-index key of this descriptor (ordered by `end`, +∞ last).
    pub fn meta_key(&self) -> Vec<u8> {
        meta_desc_key(self.end_bound())
    }
}

impl fmt::Display for RangeDescriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{}, {}) gen {} {}",
            self.id,
            show_key(&self.start),
            show_end(&self.end),
            self.generation,
            self.config
        )
    }
}

/// A key for people: printable ASCII as is, the rest as `\xNN`.
pub fn show_key(k: &[u8]) -> String {
    let mut s = String::new();
    for &b in k {
        if b.is_ascii_graphic() && b != b'\\' {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

fn show_end(e: &[u8]) -> String {
    if e.is_empty() { "+∞".to_string() } else { show_key(e) }
}

/// Meta key of the descriptor whose range ends at `end` (`None`: +∞).
pub fn meta_desc_key(end: Option<&[u8]>) -> Vec<u8> {
    let mut k = META_DESC_PREFIX.to_vec();
    match end {
        Some(e) => {
            k.push(0x01);
            meridian_storage::keycode::escape_into(&mut k, e);
        }
        None => k.push(0x02),
    }
    k
}

/// The span of all descriptor entries in the meta range.
pub fn meta_desc_span() -> (Vec<u8>, Vec<u8>) {
    let mut end = META_DESC_PREFIX.to_vec();
    *end.last_mut().expect("prefix is not empty") += 1;
    (META_DESC_PREFIX.to_vec(), end)
}

/// Where to start scanning the meta index for the range containing `key`: descriptors whose
/// end is after `key` sort at or after this.
pub fn meta_lookup_start(key: &[u8]) -> Vec<u8> {
    let mut k = meta_desc_key(Some(key));
    // Strictly after `key`'s own entry: a range ending at `key` does not contain it.
    k.push(0x00);
    k
}

/// Meta key of a node entry.
pub fn meta_node_key(node: NodeId) -> Vec<u8> {
    let mut k = META_NODE_PREFIX.to_vec();
    k.extend_from_slice(&node.0.to_be_bytes());
    k
}

/// The span of all node entries in the meta range.
pub fn meta_node_span() -> (Vec<u8>, Vec<u8>) {
    let mut end = META_NODE_PREFIX.to_vec();
    *end.last_mut().expect("prefix is not empty") += 1;
    (META_NODE_PREFIX.to_vec(), end)
}

/// Meta key of a range's leader hint.
pub fn meta_leader_key(group: GroupId) -> Vec<u8> {
    let mut k = META_LEADER_PREFIX.to_vec();
    k.extend_from_slice(&group.0.to_be_bytes());
    k
}

/// The span of all leader hints in the meta range.
pub fn meta_leader_span() -> (Vec<u8>, Vec<u8>) {
    let mut end = META_LEADER_PREFIX.to_vec();
    *end.last_mut().expect("prefix is not empty") += 1;
    (META_LEADER_PREFIX.to_vec(), end)
}

/// A node as the cluster knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Identity.
    pub id: NodeId,
    /// gRPC address (`host:port`).
    pub addr: String,
    /// HTTP status address, if it serves one.
    pub http_addr: Option<String>,
    /// PostgreSQL-wire address, if it serves one.
    pub pg_addr: Option<String>,
}

/// A leader as the meta range records it (a hint: it may be out of date).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderHint {
    /// The leader's node.
    pub node: NodeId,
    /// Its ballot round, to prefer newer hints.
    pub round: u64,
}

/// A client's cache of range descriptors, by end key.
#[derive(Clone, Debug, Default)]
pub struct RangeCache {
    /// Keyed by the meta key of each descriptor's end (so +∞ sorts last).
    by_end: BTreeMap<Vec<u8>, RangeDescriptor>,
}

impl RangeCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The cached range containing `key`.
    pub fn lookup(&self, key: &[u8]) -> Option<&RangeDescriptor> {
        self.by_end.range(meta_lookup_start(key)..).next().map(|(_, d)| d).filter(|d| d.contains(key))
    }

    /// Adds `desc`, evicting every cached descriptor it overlaps that is not newer.
    /// Returns false (and changes nothing) if an overlapping cached descriptor is newer.
    pub fn insert(&mut self, desc: RangeDescriptor) -> bool {
        let overlapping: Vec<Vec<u8>> =
            self.by_end.iter().filter(|(_, d)| d.overlaps(&desc.start, &desc.end)).map(|(k, _)| k.clone()).collect();
        if overlapping.iter().any(|k| self.by_end[k].generation > desc.generation) {
            return false;
        }
        for k in overlapping {
            self.by_end.remove(&k);
        }
        self.by_end.insert(desc.meta_key(), desc);
        true
    }

    /// Forgets the descriptor of `group`.
    pub fn evict(&mut self, group: GroupId) {
        self.by_end.retain(|_, d| d.id != group);
    }

    /// Every cached descriptor overlapping `[start, end)`, in key order.
    pub fn overlapping(&self, start: &[u8], end: &[u8]) -> Vec<&RangeDescriptor> {
        self.by_end.values().filter(|d| d.overlaps(start, end)).collect()
    }

    /// Number of cached descriptors.
    pub fn len(&self) -> usize {
        self.by_end.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.by_end.is_empty()
    }
}

/// Keys of the SQL catalog (table schemas): system keys in the meta range that clients may read
/// and write in transactions like their own, so DDL is transactional and cluster-wide.
pub const SQL_CATALOG_PREFIX: &[u8] = &[0x00, 0x02];

/// Refuses keys a client may not use: empty, system (`0x00…`, except the SQL catalog's) or too
/// large.
pub fn check_user_key(key: &[u8]) -> Result<(), String> {
    if key.is_empty() {
        return Err("empty keys are not allowed".into());
    }
    if key[0] == 0x00 && !key.starts_with(SQL_CATALOG_PREFIX) {
        return Err("keys starting with byte 0x00 are reserved for the system".into());
    }
    if key.len() > KEY_SIZE_MAX {
        return Err(format!("key is {} bytes; the limit is {KEY_SIZE_MAX} bytes", key.len()));
    }
    Ok(())
}

/// Conversions to and from the wire types of `meridian-proto`.
mod wire {
    use meridian_proto::v1 as pb;

    use super::{LeaderHint, NodeInfo, RangeDescriptor};
    use crate::GroupId;
    use crate::paxos::{Config, NodeId};

    impl From<&RangeDescriptor> for pb::RangeDescriptor {
        fn from(d: &RangeDescriptor) -> Self {
            pb::RangeDescriptor {
                id: d.id.0,
                start: d.start.clone(),
                end: d.end.clone(),
                voters: d.config.voters.iter().map(|n| n.0).collect(),
                learners: d.config.learners.iter().map(|n| n.0).collect(),
                generation: d.generation,
            }
        }
    }

    impl From<pb::RangeDescriptor> for RangeDescriptor {
        fn from(d: pb::RangeDescriptor) -> Self {
            RangeDescriptor {
                id: GroupId(d.id),
                start: d.start,
                end: d.end,
                config: Config {
                    voters: d.voters.into_iter().map(NodeId).collect(),
                    learners: d.learners.into_iter().map(NodeId).collect(),
                },
                generation: d.generation,
            }
        }
    }

    impl From<&NodeInfo> for pb::NodeInfo {
        fn from(n: &NodeInfo) -> Self {
            pb::NodeInfo {
                id: n.id.0,
                addr: n.addr.clone(),
                http_addr: n.http_addr.clone().unwrap_or_default(),
                pg_addr: n.pg_addr.clone().unwrap_or_default(),
            }
        }
    }

    impl From<pb::NodeInfo> for NodeInfo {
        fn from(n: pb::NodeInfo) -> Self {
            let opt = |s: String| (!s.is_empty()).then_some(s);
            NodeInfo { id: NodeId(n.id), addr: n.addr, http_addr: opt(n.http_addr), pg_addr: opt(n.pg_addr) }
        }
    }

    /// A leader hint on the wire carries its group.
    pub fn leader_to_pb(group: GroupId, h: &LeaderHint) -> pb::LeaderHint {
        pb::LeaderHint { group: group.0, node: h.node.0, round: h.round }
    }

    /// The inverse of [`leader_to_pb`].
    pub fn leader_from_pb(h: pb::LeaderHint) -> (GroupId, LeaderHint) {
        (GroupId(h.group), LeaderHint { node: NodeId(h.node), round: h.round })
    }
}

pub use wire::{leader_from_pb, leader_to_pb};

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(id: u64, start: &[u8], end: &[u8], generation: u64) -> RangeDescriptor {
        RangeDescriptor {
            id: GroupId(id),
            start: start.to_vec(),
            end: end.to_vec(),
            config: Config::voters([NodeId(1)]),
            generation,
        }
    }

    #[test]
    fn contains_and_overlaps() {
        let d = desc(1, b"b", b"d", 1);
        assert!(d.contains(b"b") && d.contains(b"c\xff") && !d.contains(b"d") && !d.contains(b"a"));
        let last = desc(2, b"d", b"", 1);
        assert!(last.contains(b"d") && last.contains(b"\xff\xff\xff"));
        assert!(d.overlaps(b"a", b"c") && d.overlaps(b"c", b"") && !d.overlaps(b"d", b"e") && !d.overlaps(b"a", b"b"));
    }

    #[test]
    fn meta_keys_sort_by_end_with_infinity_last() {
        let ends: Vec<Option<&[u8]>> =
            vec![Some(b"\x01"), Some(b"a"), Some(b"a\x00"), Some(b"b"), Some(b"\xff\xff\xff"), None];
        let keys: Vec<Vec<u8>> = ends.iter().map(|e| meta_desc_key(*e)).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        let (lo, hi) = meta_desc_span();
        assert!(keys.iter().all(|k| *k >= lo && *k < hi));
        // The lookup start for key k sorts after the entry of a range ending at k and before
        // the entry of any range ending after k.
        for (i, e) in ends.iter().enumerate().take(ends.len() - 1) {
            let start = meta_lookup_start(e.expect("finite"));
            assert!(start > keys[i] && start < keys[i + 1]);
        }
    }

    #[test]
    fn cache_lookup_split_and_stale_updates() {
        let mut c = RangeCache::new();
        assert!(c.insert(desc(1, b"\x01", b"", 1)));
        assert_eq!(c.lookup(b"m").map(|d| d.id), Some(GroupId(1)));
        // Split: the new halves replace the old descriptor.
        assert!(c.insert(desc(1, b"\x01", b"m", 2)));
        assert!(c.insert(desc(7, b"m", b"", 2)));
        assert_eq!(c.len(), 2);
        assert_eq!(c.lookup(b"a").map(|d| d.id), Some(GroupId(1)));
        assert_eq!(c.lookup(b"m").map(|d| d.id), Some(GroupId(7)));
        assert_eq!(c.lookup(b"\x00x"), None);
        // A late copy of the pre-split descriptor does not roll the cache back.
        assert!(!c.insert(desc(1, b"\x01", b"", 1)));
        assert_eq!(c.lookup(b"z").map(|d| d.id), Some(GroupId(7)));
        // Merge: one descriptor replaces both.
        assert!(c.insert(desc(1, b"\x01", b"", 3)));
        assert_eq!(c.len(), 1);
        assert_eq!(c.overlapping(b"a", b"z").len(), 1);
    }

    #[test]
    fn user_keys_are_checked() {
        assert!(check_user_key(b"").is_err());
        assert!(check_user_key(b"\x00meta").is_err());
        assert!(check_user_key(&vec![1u8; KEY_SIZE_MAX + 1]).is_err());
        assert!(check_user_key(b"acct/1").is_ok());
    }

    #[test]
    fn minted_ids_are_unique_per_node_and_counter() {
        assert_ne!(mint_group_id(NodeId(1), 2), mint_group_id(NodeId(2), 1));
        assert_eq!(mint_group_id(NodeId(1), 1), GroupId((1 << 40) | 1));
    }
}
