//! # Can this node serve? Readiness, range health and node liveness
//!
//! A load balancer asks `/health?ready=1` whether to send this node traffic. Knowing *some*
//! leader is not enough (issue 17: a node answered `ready` with two of three nodes killed, its
//! ranges `Probing` and every lease gone). A node is **ready** while, for every range it hosts,
//! it knows a leader that can serve under a lease, and a majority of the range's replicas is
//! reachable, so writes can be chosen (Spanner §4.1.1: a leader serves, and assigns timestamps,
//! only inside its lease; its lease and its writes both need a majority):
//!
//! | this replica | servable when |
//! |---|---|
//! | Leader | it holds a lease now (`TT.now().latest < end`) and a majority of voters is reachable |
//! | Follower | it knows a leader, that node is reachable and was heard from within the election timeout (`election_timeout_min`: the silence after which the replica itself would look for a new leader), and a majority of voters is reachable |
//! | Probing, Candidate | never: it is looking for a leader |
//!
//! A follower cannot see its leader's lease; a leader heard recently is the best it knows (a
//! leader that lost its lease without losing its followers is rare and brief: it steps down or
//! renews). **Reachable** is the shell's word: its last exchange with the node succeeded. The
//! shell sends every known node an empty peer batch every [`NODE_HEARTBEAT`], so a killed node
//! turns unreachable within about that (connection refused), and one that stops answering
//! within the peer call's timeout.
//!
//! Under-replicated ranges (fewer voters than `--replication`, for instance a cluster running
//! fewer nodes) and ranges with a replica on an unreachable node are **warnings**, not reasons
//! to refuse traffic: the node serves them correctly, with less redundancy. They appear in the
//! readiness body, on `/status`, in `meridian status` and in the log (on change).

use std::time::Duration;

use meridian_shard::GroupId;
use meridian_shard::paxos::{NodeId, Role};
use meridian_truetime::TTInterval;

use super::api::{self, ApiError, NodeLiveness, RangeHealth, Readiness};
use super::{Group, NodeCore, local_of};

/// How often the shell sends every other node an empty peer batch, so each knows the others
/// are alive even when they share no range traffic.
pub const NODE_HEARTBEAT: Duration = Duration::from_secs(1);
/// A node silent this long (nothing received, though sends to it succeed) counts as down.
pub const NODE_SILENCE_MAX: Duration = Duration::from_secs(3);
const _: () = assert!(
    NODE_SILENCE_MAX.as_millis() >= 2 * NODE_HEARTBEAT.as_millis(),
    "a node may miss one heartbeat before it counts as silent"
);
/// Most ranges a summary names (the count is always exact).
const SUMMARY_RANGES_MAX: usize = 8;

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

impl NodeCore {
    /// Whether this node can reach `node` (itself, or the shell's last exchange with it
    /// succeeded).
    pub(super) fn reaches(&self, node: NodeId) -> bool {
        node == self.ident.node || !self.unreachable.contains_key(&node)
    }

    /// How many of `g`'s voters this node reaches (itself included), and how many there are.
    fn reach(&self, g: &Group) -> (usize, usize) {
        let voters = &g.replica.config().voters;
        (voters.iter().filter(|v| self.reaches(**v)).count(), voters.len())
    }

    /// Whether this node can serve `gid` now, and why (not). See the module documentation.
    pub(super) fn range_health(&self, now: TTInterval, gid: GroupId) -> RangeHealth {
        let g = &self.groups[&gid];
        let (reachable, replicas) = self.reach(g);
        let majority = reachable >= g.replica.config().quorum();
        let no_majority = || format!("only {reachable} of {replicas} replicas reachable: no write can be chosen");
        let local = local_of(now);
        let (servable, detail) = match g.replica.role() {
            Role::Leader => match g.replica.lease_end(now) {
                Some(end) if majority => {
                    (true, format!("led here, lease {} left", secs(end.duration_since(now.latest))))
                }
                Some(end) => (false, format!("led here, lease {} left, but {}", secs(end.duration_since(now.latest)), no_majority())),
                None => (false, "no leader with a lease: this replica leads but holds no lease (it waits for a majority's lease votes)".to_string()),
            },
            Role::Probing => (false, "no leader: this replica is Probing (asking the others whether the leader is gone)".to_string()),
            Role::Candidate => (false, "no leader: this replica is a Candidate (an election is under way)".to_string()),
            Role::Follower => match g.replica.leader_hint().filter(|l| *l != self.ident.node) {
                None => (false, "no leader known".to_string()),
                Some(l) if !self.reaches(l) => (false, format!("no leader: its last known leader {l} is unreachable")),
                Some(l) => {
                    let window = self.opts.paxos.election_timeout_min;
                    match self.heard.get(&l) {
                        Some(t) if local < t.saturating_add(window) && majority => (true, format!("led by {l}")),
                        Some(_) if !majority => (false, format!("led by {l}, but {}", no_majority())),
                        Some(t) => (false, format!("no leader: nothing heard from its leader {l} for {}", secs(local.duration_since(*t)))),
                        None => (false, format!("no leader: nothing heard from its leader {l} since this node started")),
                    }
                }
            },
        };
        RangeHealth { servable, detail, replicas, reachable }
    }

    /// The error for a request this replica cannot serve because no leader it can reach holds
    /// a lease, or `None` if it knows a live leader to send the client to (then
    /// [`ApiError::NotLeader`] is the right answer). Unlike [`Self::range_health`] it needs no
    /// clock: it goes by the replica's role and the shell's reachability alone.
    pub(super) fn no_leader(&self, gid: GroupId) -> Option<ApiError> {
        let g = &self.groups[&gid];
        let why = match g.replica.role() {
            // Asked only when it cannot serve: no lease, its log not yet applied, or abdicating.
            Role::Leader => {
                "the leader here cannot serve yet: it waits for its lease (a majority's votes) or for its log to apply"
                    .to_string()
            }
            Role::Probing => {
                "no leader with a lease: this replica is Probing (asking the others whether the leader is gone)"
                    .to_string()
            }
            Role::Candidate => {
                "no leader with a lease: this replica is a Candidate (an election is under way)".to_string()
            }
            Role::Follower => match g.replica.leader_hint().filter(|l| *l != self.ident.node) {
                None => "no leader with a lease known here".to_string(),
                Some(l) if !self.reaches(l) => {
                    format!("no leader with a lease: its last known leader {l} is unreachable")
                }
                Some(_) => return None,
            },
        };
        let (reachable, replicas) = self.reach(g);
        let count = |n: usize| u32::try_from(n).expect("a range has at most a handful of replicas");
        Some(ApiError::NoLeader {
            group: gid,
            why,
            replicas: count(replicas),
            reachable: count(reachable),
            node: self.ident.node,
        })
    }

    /// Every other node it knows, up or down as seen from here.
    pub(super) fn liveness(&self, now: TTInterval) -> Vec<NodeLiveness> {
        let local = local_of(now);
        self.nodes
            .keys()
            .filter(|n| **n != self.ident.node)
            .map(|&node| {
                let last_heard = self.heard.get(&node).copied();
                let why = match (self.unreachable.get(&node), last_heard) {
                    (Some(since), _) => {
                        format!("unreachable: sending to it fails (for {})", secs(local.duration_since(*since)))
                    }
                    (None, Some(t)) if local >= t.saturating_add(NODE_SILENCE_MAX) => {
                        format!("silent: nothing heard from it for {}", secs(local.duration_since(t)))
                    }
                    _ => String::new(),
                };
                NodeLiveness { node, up: why.is_empty(), last_heard, why }
            })
            .collect()
    }

    /// Whether this node is ready to serve (`/health?ready=1`): it knows where the meta range
    /// lives and, for every range it hosts, a leader with a lease that it can reach, with a
    /// majority of the range's replicas reachable. See the module documentation.
    pub fn readiness(&self, now: TTInterval) -> Readiness {
        let mut problems = Vec::new();
        let mut unservable = Vec::new();
        let (mut quorum_lost, mut degraded, mut under) = (0usize, Vec::new(), 0usize);
        let mut down_in_ranges: std::collections::BTreeSet<NodeId> = std::collections::BTreeSet::new();
        for (gid, g) in &self.groups {
            let h = self.range_health(now, *gid);
            if h.reachable < g.replica.config().quorum() {
                quorum_lost += 1;
            }
            if h.replicas < self.opts.replication {
                under += 1;
            }
            if h.servable {
                if h.reachable < h.replicas {
                    degraded.push(*gid);
                    down_in_ranges.extend(g.replica.config().voters.iter().copied().filter(|v| !self.reaches(*v)));
                }
                continue;
            }
            if problems.len() < api::READINESS_LINES_MAX {
                problems.push(format!(
                    "range {gid}: {}; {} of {} replicas reachable from node {}",
                    h.detail, h.reachable, h.replicas, self.ident.node
                ));
            }
            unservable.push(*gid);
        }
        let mut warnings = Vec::new();
        let n = self.groups.len();
        if under > 0 {
            let r = self.opts.replication;
            let nodes = self.nodes.len();
            warnings.push(if nodes < r {
                format!(
                    "under-replicated: {under} of {n} ranges here have fewer than {r} replicas (--replication {r}) and the cluster has {nodes} node(s): start {} more, or restart the nodes with --replication {nodes}",
                    r - nodes
                )
            } else {
                format!("under-replicated: {under} of {n} ranges here have fewer than {r} replicas (--replication {r}); placement is adding replicas")
            });
        }
        if !degraded.is_empty() {
            warnings.push(format!(
                "{} of {n} ranges here serve with a replica on an unreachable node ({}): one more failure and they lose their quorum",
                degraded.len(),
                names(down_in_ranges.iter())
            ));
        }
        if self.meta_desc.is_none() {
            return Readiness {
                ready: false,
                summary: "the meta range's location is unknown".into(),
                problems,
                warnings,
            };
        }
        if unservable.is_empty() {
            let led = self.groups.values().filter(|g| g.replica.role() == Role::Leader).count();
            let summary = format!("{n} hosted ranges have a leader with a lease ({led} led here)");
            return Readiness { ready: true, summary, problems, warnings };
        }
        let reachable = self.nodes.keys().filter(|id| self.reaches(**id)).count();
        let mut summary = format!(
            "{} of {n} hosted ranges cannot be served from here: {}",
            unservable.len(),
            names(unservable.iter())
        );
        if quorum_lost > 0 {
            summary.push_str(&format!(
                "; {quorum_lost} of them lost their quorum as seen from here ({reachable} of {} nodes reachable)",
                self.nodes.len()
            ));
        }
        Readiness { ready: false, summary, problems, warnings }
    }

    /// Records that `node` sent something (for [`Self::liveness`]).
    pub(super) fn heard_from(&mut self, now: TTInterval, node: NodeId) {
        self.heard.insert(node, local_of(now));
    }
}

/// `a, b, c` for at most [`SUMMARY_RANGES_MAX`] items, then `… and N more`.
fn names<T: std::fmt::Display>(items: impl ExactSizeIterator<Item = T>) -> String {
    let total = items.len();
    let mut v: Vec<String> = items.take(SUMMARY_RANGES_MAX).map(|i| i.to_string()).collect();
    if total > SUMMARY_RANGES_MAX {
        v.push(format!("… and {} more", total - SUMMARY_RANGES_MAX));
    }
    v.join(", ")
}
