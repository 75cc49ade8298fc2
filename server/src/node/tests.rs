//! Whole-node tests on the in-memory cluster: the real node core, deterministic time.

use std::time::Duration;

use meridian_shard::paxos::{NodeId, Options};
use meridian_shard::range::RangeDescriptor;

use super::sim::ClusterSim;
use super::{ApiError, NodeOptions, Request, Response};

pub(super) fn opts() -> NodeOptions {
    NodeOptions {
        paxos: Options::with_lease(Duration::from_millis(1_000)),
        housekeeping: Duration::from_millis(300),
        forward_timeout: Duration::from_millis(500),
        dead_after: Duration::from_secs(5),
        ..NodeOptions::default()
    }
}

/// Sends `request` the way a client would: to the range's leader, following hints.
pub(super) fn route(sim: &mut ClusterSim, key: &[u8], request: Request) -> Response {
    let mut target = NodeId(1);
    let mut last = None;
    for _ in 0..40 {
        if sim.nodes[&target].core.is_none() {
            target = *sim.nodes.iter().find(|(_, n)| n.core.is_some()).map(|(id, _)| id).expect("a node is up");
        }
        let resp = sim.call(target, request.clone(), Duration::from_secs(3));
        match &resp {
            Some(Response::Error(ApiError::NotLeader { leader: Some(l), .. })) if sim.nodes[l].core.is_some() => {
                target = *l
            }
            Some(Response::Error(
                ApiError::KeyOutOfRange { .. }
                | ApiError::NotLeader { .. }
                | ApiError::NoLeader { .. }
                | ApiError::Unavailable(_)
                | ApiError::Timeout(_),
            ))
            | None => {
                // Ask the meta range where the key lives now.
                if let Some(Response::Ranges { descs, leaders, .. }) =
                    sim.call(target, Request::RangeLookup { key: key.to_vec(), limit: 1 }, Duration::from_secs(3))
                    && let Some(d) = descs.first()
                {
                    target = leaders
                        .iter()
                        .find(|(g, _)| *g == d.id)
                        .map(|(_, h)| h.node)
                        .filter(|n| sim.nodes[n].core.is_some())
                        .unwrap_or_else(|| {
                            *d.config.voters.iter().find(|n| sim.nodes[n].core.is_some()).expect("a replica is up")
                        });
                }
                sim.run_for(Duration::from_millis(100));
            }
            Some(r) => return r.clone(),
        }
        last = resp;
    }
    let roles: Vec<String> =
        sim.nodes
            .keys()
            .filter(|n| sim.nodes[n].core.is_some())
            .flat_map(|n| {
                let st = sim.core(*n).status(sim.tt(*n));
                st.groups.into_iter().filter(|g| g.desc.contains(key)).map(move |g| {
                    format!("{n}: {} {} leader {:?} lease {:?}", g.desc.id, g.role, g.leader, g.lease_end)
                })
            })
            .collect();
    panic!("{request:?} not served after 40 attempts; last answer {last:?}; replicas of {key:?}: {roles:#?}");
}

pub(super) fn put(sim: &mut ClusterSim, k: &str, v: &str) {
    match route(
        sim,
        k.as_bytes(),
        Request::Write { writes: vec![(k.as_bytes().to_vec(), Some(v.as_bytes().to_vec()))] },
    ) {
        Response::Written { .. } => {}
        other => panic!("put {k}: {other:?}"),
    }
}

pub(super) fn get(sim: &mut ClusterSim, k: &str) -> Option<String> {
    match route(sim, k.as_bytes(), Request::Get { key: k.as_bytes().to_vec() }) {
        Response::Value { value, .. } => value.map(|v| String::from_utf8(v).expect("utf8 test values")),
        other => panic!("get {k}: {other:?}"),
    }
}

pub(super) fn ranges(sim: &mut ClusterSim) -> Vec<RangeDescriptor> {
    let live = *sim.nodes.iter().find(|(_, n)| n.core.is_some()).map(|(id, _)| id).expect("a node is up");
    match sim.call(live, Request::ClusterView, Duration::from_secs(3)) {
        Some(Response::Ranges { descs, .. }) => descs,
        other => panic!("cluster view: {other:?}"),
    }
}

/// Runs until every range has `n` voters (placement at work), bounded.
pub(super) fn wait_replicated(sim: &mut ClusterSim, n: usize) {
    for _ in 0..200 {
        sim.run_for(Duration::from_millis(200));
        let descs = ranges(sim);
        if descs.iter().all(|d| d.config.voters.len() == n && d.config.learners.is_empty()) {
            return;
        }
    }
    panic!("ranges never reached {n} voters: {:#?}", ranges(sim));
}

#[test]
fn a_single_node_writes_and_reads() {
    let mut sim = ClusterSim::new(1, opts());
    sim.run_for(Duration::from_secs(1));
    put(&mut sim, "a", "1");
    put(&mut sim, "b", "2");
    assert_eq!(get(&mut sim, "a").as_deref(), Some("1"));
    assert_eq!(get(&mut sim, "zz"), None);
    // Bad input is refused, not crashed on.
    let r = sim.call(
        NodeId(1),
        Request::Write { writes: vec![(b"\x00sys".to_vec(), Some(b"x".to_vec()))] },
        Duration::from_secs(1),
    );
    assert!(matches!(r, Some(Response::Error(ApiError::Invalid(_)))), "{r:?}");
    let r = sim.call(NodeId(1), Request::Write { writes: vec![] }, Duration::from_secs(1));
    assert!(matches!(r, Some(Response::Error(ApiError::Invalid(_)))), "{r:?}");
}

#[test]
fn joins_up_replicate_and_survive_a_leader_crash() {
    let mut sim = ClusterSim::new(2, opts());
    sim.run_for(Duration::from_secs(1));
    for _ in 0..2 {
        sim.join(NodeId(1)).expect("join");
    }
    wait_replicated(&mut sim, 3);
    for i in 0..20 {
        put(&mut sim, &format!("k{i:02}"), &format!("v{i}"));
    }
    // Kill the node leading the user range; after its lease runs out the others take over.
    let user = ranges(&mut sim).into_iter().find(|d| d.start == b"\x01").expect("user range");
    let leader = (1..=3)
        .map(NodeId)
        .find(|n| sim.core(*n).status(sim.tt(*n)).groups.iter().any(|g| g.desc.id == user.id && g.role == "Leader"));
    let leader = leader.expect("a leader");
    sim.crash(leader);
    for i in 0..20 {
        assert_eq!(get(&mut sim, &format!("k{i:02}")), Some(format!("v{i}")), "acknowledged write k{i:02} survived");
    }
    put(&mut sim, "after", "crash");
    sim.restart(leader);
    sim.run_for(Duration::from_secs(3));
    assert_eq!(get(&mut sim, "after").as_deref(), Some("crash"));
}

/// Issue 17: readiness follows what a node can serve. With two of three nodes crashed the
/// survivor is not ready, names every range and why, and a request for a range there names the
/// range and how many replicas answer; with both back it is ready again.
#[test]
fn readiness_is_lost_with_the_quorum_and_regained_with_it() {
    let mut sim = ClusterSim::new(12, opts());
    sim.run_for(Duration::from_secs(1));
    for _ in 0..2 {
        sim.join(NodeId(1)).expect("join");
    }
    wait_replicated(&mut sim, 3);
    put(&mut sim, "k", "v");
    let ready = |sim: &ClusterSim, n: NodeId| sim.core(n).readiness(sim.tt(n));
    for _ in 0..50 {
        if (1..=3).all(|n| ready(&sim, NodeId(n)).ready) {
            break;
        }
        sim.run_for(Duration::from_millis(200));
    }
    for n in 1..=3 {
        let r = ready(&sim, NodeId(n));
        assert!(r.ready && r.problems.is_empty() && r.warnings.is_empty(), "n{n} with every node up: {r:?}");
    }
    sim.crash(NodeId(2));
    sim.crash(NodeId(3));
    // Leases last 1 s; the survivor learns within a few heartbeats that its peers are gone.
    sim.run_for(Duration::from_secs(3));
    let r = ready(&sim, NodeId(1));
    let hosted = sim.core(NodeId(1)).group_count();
    assert!(!r.ready, "two of three nodes down, yet ready: {r:?}");
    assert!(r.summary.contains(&format!("{hosted} of {hosted} hosted ranges cannot be served")), "{r:?}");
    assert!(r.summary.contains("lost their quorum"), "{r:?}");
    assert_eq!(r.problems.len(), hosted, "one line per range: {r:?}");
    for p in &r.problems {
        assert!(p.starts_with("range ") && p.ends_with("1 of 3 replicas reachable from node n1"), "{p}");
    }
    let status = sim.core(NodeId(1)).status(sim.tt(NodeId(1)));
    assert!(status.groups.iter().all(|g| !g.health.servable), "{status:#?}");
    assert!(status.liveness.iter().all(|l| !l.up && l.why.starts_with("unreachable")), "{:?}", status.liveness);
    // A client's request names the range and the replicas that answer, not a dead leader.
    let r = sim.call(NodeId(1), Request::Get { key: b"k".to_vec() }, Duration::from_secs(1));
    match r {
        Some(Response::Error(e @ ApiError::NoLeader { replicas: 3, reachable: 1, .. })) => {
            let text = e.to_string();
            assert!(text.contains("no leader with a lease") || text.contains("cannot serve yet"), "{text}");
            assert!(text.ends_with("1 of 3 replicas reachable from node n1"), "{text}");
        }
        other => panic!("a request without a quorum: {other:?}"),
    }
    sim.restart(NodeId(2));
    sim.restart(NodeId(3));
    for _ in 0..100 {
        if ready(&sim, NodeId(1)).ready {
            break;
        }
        sim.run_for(Duration::from_millis(200));
    }
    let r = ready(&sim, NodeId(1));
    assert!(r.ready, "both nodes back, still not ready: {r:?}");
}

/// A cluster running fewer nodes than `--replication` serves, and says it is under-replicated.
#[test]
fn under_replication_is_a_warning() {
    let mut sim = ClusterSim::new(13, opts());
    sim.run_for(Duration::from_secs(2));
    let r = sim.core(NodeId(1)).readiness(sim.tt(NodeId(1)));
    assert!(r.ready, "{r:?}");
    assert_eq!(r.warnings.len(), 1, "{r:?}");
    assert!(
        r.warnings[0].starts_with("under-replicated: 2 of 2 ranges here have fewer than 3 replicas (--replication 3) and the cluster has 1 node(s): start 2 more"),
        "{r:?}"
    );
    assert!(r.body().starts_with("ready\nwarning: under-replicated: "), "{}", r.body());
}

fn write_keys(sim: &mut ClusterSim, range: std::ops::Range<u32>, written: &mut Vec<(String, String)>) {
    for i in range {
        let k = format!("key{i:03}");
        put(sim, &k, &i.to_string());
        written.push((k, i.to_string()));
    }
}

fn check_all(sim: &mut ClusterSim, written: &[(String, String)], when: &str) {
    for (k, v) in written {
        assert_eq!(get(sim, k).as_deref(), Some(v.as_str()), "{k} {when}");
    }
}

fn show(sim: &mut ClusterSim) -> Vec<String> {
    ranges(sim).iter().map(|d| d.to_string()).collect()
}

#[test]
fn split_then_merge_keeps_every_acknowledged_write() {
    let mut sim = ClusterSim::new(3, opts());
    sim.run_for(Duration::from_secs(1));
    for _ in 0..2 {
        sim.join(NodeId(1)).expect("join");
    }
    wait_replicated(&mut sim, 3);
    let mut written = Vec::new();
    write_keys(&mut sim, 0..30, &mut written);
    match route(&mut sim, b"key015", Request::Split { key: b"key015".to_vec() }) {
        Response::Done { .. } => {}
        other => panic!("split: {other:?}"),
    }
    sim.run_for(Duration::from_secs(2));
    let view = ranges(&mut sim);
    let right = view.iter().find(|d| d.start == b"key015").expect("meta indexes the right half").clone();
    let left = view.iter().find(|d| d.start == b"\x01").expect("left half").clone();
    assert_eq!(left.end, b"key015");
    write_keys(&mut sim, 30..40, &mut written);
    check_all(&mut sim, &written, "after the split");
    // Splitting at a range's first key is refused.
    match route(&mut sim, b"key015", Request::Split { key: b"key015".to_vec() }) {
        Response::Error(ApiError::Invalid(_)) => {}
        other => panic!("split at a range start: {other:?}"),
    }
    let mut merged = None;
    for _ in 0..20 {
        match route(&mut sim, b"\x01", Request::Merge { group: left.id }) {
            Response::Done { detail } => {
                merged = Some(detail);
                break;
            }
            other => eprintln!("merge attempt: {other:?}"),
        }
        sim.run_for(Duration::from_millis(500));
    }
    assert!(merged.is_some(), "the halves merged: {:#?}", show(&mut sim));
    sim.run_for(Duration::from_secs(2));
    let view = ranges(&mut sim);
    assert!(view.iter().all(|d| d.id != right.id), "meta forgot the right half: {:#?}", show(&mut sim));
    write_keys(&mut sim, 40..45, &mut written);
    check_all(&mut sim, &written, "after the merge");
}

#[test]
fn moves_keep_writes_and_placement_settles() {
    let mut sim = ClusterSim::new(4, opts());
    sim.run_for(Duration::from_secs(1));
    for _ in 0..3 {
        sim.join(NodeId(1)).expect("join");
    }
    wait_replicated(&mut sim, 3);
    let mut written = Vec::new();
    write_keys(&mut sim, 0..20, &mut written);
    let user = ranges(&mut sim).into_iter().find(|d| d.start == b"\x01").expect("user range");
    let to = (1..=4).map(NodeId).find(|n| !user.config.contains(*n)).expect("a node without a replica");
    let from = *user.config.voters.iter().next().expect("a voter");
    let mut done = false;
    for _ in 0..20 {
        match route(&mut sim, b"\x01", Request::MoveReplica { group: user.id, from, to }) {
            Response::Done { .. } => {
                done = true;
                break;
            }
            Response::Error(ApiError::Invalid(e)) if e.contains("already holds") || e.contains("holds no voting") => {
                done = true; // placement or a retry got there first
                break;
            }
            _ => sim.run_for(Duration::from_millis(500)),
        }
        write_keys(&mut sim, 100..101, &mut written);
    }
    assert!(done, "the move completed: {:#?}", show(&mut sim));
    check_all(&mut sim, &written, "after the move");
    // Placement settles: no learners, 3 voters each, replica counts within one of each other.
    let mut settled = false;
    for _ in 0..100 {
        sim.run_for(Duration::from_millis(500));
        let view = ranges(&mut sim);
        let mut counts = std::collections::BTreeMap::new();
        for d in &view {
            for v in &d.config.voters {
                *counts.entry(*v).or_insert(0) += 1;
            }
        }
        let (min, max) = (counts.values().min().copied().unwrap_or(0), counts.values().max().copied().unwrap_or(0));
        if view.iter().all(|d| d.config.voters.len() == 3 && d.config.learners.is_empty())
            && max - min <= 1
            && counts.len() == 4
        {
            settled = true;
            break;
        }
    }
    assert!(settled, "placement did not settle: {:#?}", show(&mut sim));
    check_all(&mut sim, &written, "after placement");
}

#[test]
fn failover_time_after_a_leader_crash_is_about_one_lease() {
    let mut sim = ClusterSim::new(5, opts());
    sim.run_for(Duration::from_secs(1));
    for _ in 0..2 {
        sim.join(NodeId(1)).expect("join");
    }
    wait_replicated(&mut sim, 3);
    put(&mut sim, "x", "1");
    let user = ranges(&mut sim).into_iter().find(|d| d.start == b"\x01").expect("user range");
    let leader = (1..=3)
        .map(NodeId)
        .find(|n| sim.core(*n).status(sim.tt(*n)).groups.iter().any(|g| g.desc.id == user.id && g.role == "Leader"))
        .expect("leader");
    sim.crash(leader);
    let crashed_at = sim.now;
    let other = (1..=3).map(NodeId).find(|n| *n != leader).expect("another node");
    let mut first_ok = None;
    for _ in 0..200 {
        sim.run_for(Duration::from_millis(50));
        for n in (1..=3).map(NodeId).filter(|n| *n != leader) {
            let r = sim.call(
                n,
                Request::Write { writes: vec![(b"y".to_vec(), Some(b"2".to_vec()))] },
                Duration::from_millis(200),
            );
            if let Some(Response::Written { .. }) = r {
                first_ok = Some(sim.now.duration_since(crashed_at));
            }
        }
        if first_ok.is_some() {
            break;
        }
        for n in (1..=3).map(NodeId).filter(|n| *n != leader) {
            let st = sim.core(n).status(sim.tt(n));
            let g = st.groups.iter().find(|g| g.desc.id == user.id).expect("replica");
            eprintln!(
                "+{:?} {n}: {} ballot {} leader {:?} lease {:?}",
                sim.now.duration_since(crashed_at),
                g.role,
                g.ballot,
                g.leader,
                g.lease_end.map(|e| e.duration_since(sim.now))
            );
        }
    }
    let _ = other;
    let took = first_ok.expect("writes resume after the crash");
    eprintln!("writes resumed {took:?} after the leader crashed");
    assert!(took < Duration::from_secs(5), "failover took {took:?} with a 1 s lease");
}

#[test]
fn a_dead_node_is_replaced_and_never_costs_a_healthy_replica() {
    let mut sim = ClusterSim::new(6, opts());
    sim.run_for(Duration::from_secs(1));
    for _ in 0..3 {
        sim.join(NodeId(1)).expect("join");
    }
    wait_replicated(&mut sim, 3);
    put(&mut sim, "before", "1");
    // Kill a node that holds a replica of the user range (not node 1, which we talk through).
    let user = ranges(&mut sim).into_iter().find(|d| d.start == b"\x01").expect("user range");
    let victim = user.config.voters.iter().copied().find(|n| *n != NodeId(1)).expect("a victim");
    sim.crash(victim);
    // Writes continue right away (a majority is alive) …
    put(&mut sim, "during", "2");
    // … and once the node counts as dead its replicas move to the spare node.
    for _ in 0..100 {
        sim.run_for(Duration::from_millis(500));
        let view = ranges(&mut sim);
        if view.iter().all(|d| !d.config.contains(victim) && d.config.voters.len() == 3 && d.config.learners.is_empty())
        {
            assert_eq!(get(&mut sim, "before").as_deref(), Some("1"));
            assert_eq!(get(&mut sim, "during").as_deref(), Some("2"));
            return;
        }
        // Never fewer than 2 live voters in any range meanwhile.
        for d in &view {
            let live = d.config.voters.iter().filter(|n| **n != victim).count();
            assert!(live >= 2, "placement removed a healthy replica: {d}");
        }
    }
    panic!("the dead node's replicas were not replaced: {:#?}", show(&mut sim));
}

#[test]
fn losing_one_of_three_nodes_keeps_every_range_writable() {
    let mut sim = ClusterSim::new(7, opts());
    sim.run_for(Duration::from_secs(1));
    for _ in 0..2 {
        sim.join(NodeId(1)).expect("join");
    }
    wait_replicated(&mut sim, 3);
    sim.crash(NodeId(3));
    // Long enough for placement to act on an unreachable (and then dead) node many times.
    for round in 0..20 {
        sim.run_for(Duration::from_millis(500));
        put(&mut sim, &format!("k{round}"), "v");
        for d in ranges(&mut sim) {
            let live = d.config.voters.iter().filter(|n| **n != NodeId(3)).count();
            assert!(live >= 2, "placement removed a healthy replica: {d}");
        }
    }
    sim.restart(NodeId(3));
    sim.run_for(Duration::from_secs(3));
    for round in 0..20 {
        assert_eq!(get(&mut sim, &format!("k{round}")).as_deref(), Some("v"));
    }
}

#[test]
fn ranges_split_automatically_by_size_and_by_load() {
    // By size: a tiny threshold, then enough data to cross it.
    let mut sim = ClusterSim::new(8, NodeOptions { split_bytes: 4_000, split_writes_per_sec: u64::MAX, ..opts() });
    sim.run_for(Duration::from_secs(1));
    for i in 0..60 {
        put(&mut sim, &format!("big{i:03}"), &"x".repeat(200));
    }
    sim.run_for(Duration::from_secs(3));
    let n = ranges(&mut sim).len();
    assert!(n >= 3, "size-based splits happened: {:#?}", show(&mut sim));
    for i in 0..60 {
        assert_eq!(get(&mut sim, &format!("big{i:03}")).map(|v| v.len()), Some(200));
    }
    // By load: small values, but more writes per second than the threshold.
    let mut sim = ClusterSim::new(9, NodeOptions { split_bytes: u64::MAX, split_writes_per_sec: 10, ..opts() });
    sim.run_for(Duration::from_secs(1));
    for i in 0..80 {
        put(&mut sim, &format!("hot{i:03}"), "v");
    }
    sim.run_for(Duration::from_secs(1));
    assert!(ranges(&mut sim).len() >= 3, "load-based split happened: {:#?}", show(&mut sim));
    for i in 0..80 {
        assert_eq!(get(&mut sim, &format!("hot{i:03}")).as_deref(), Some("v"));
    }
}

/// Moves a replica of `desc`'s range from `from` to `to`, retrying through leader changes.
fn move_replica(sim: &mut ClusterSim, key: &[u8], from: NodeId, to: NodeId) -> bool {
    for _ in 0..20 {
        let group = ranges(sim).into_iter().find(|d| d.contains(key)).expect("a range holds the key").id;
        match route(sim, key, Request::MoveReplica { group, from, to }) {
            Response::Done { .. } => return true,
            Response::Error(ApiError::Invalid(e)) if e.contains("already holds") => {
                // A previous attempt is still running: let it finish.
                sim.run_for(Duration::from_millis(500));
            }
            _ => sim.run_for(Duration::from_millis(500)),
        }
        let d = ranges(sim).into_iter().find(|d| d.contains(key)).expect("a range holds the key");
        if d.config.voters.contains(&to) && !d.config.contains(from) {
            return true;
        }
    }
    false
}

#[test]
fn a_replica_moved_away_and_back_is_recreated_from_a_newer_descriptor() {
    let mut sim = ClusterSim::new(11, NodeOptions { rebalance: false, ..opts() });
    sim.run_for(Duration::from_secs(1));
    for _ in 0..3 {
        sim.join(NodeId(1)).expect("join");
    }
    wait_replicated(&mut sim, 3);
    let mut written = Vec::new();
    write_keys(&mut sim, 0..20, &mut written);
    let user = ranges(&mut sim).into_iter().find(|d| d.start == b"\x01").expect("user range");
    let spare = (1..=4).map(NodeId).find(|n| !user.config.contains(*n)).expect("a node without a replica");
    let away = *user.config.voters.iter().find(|n| **n != NodeId(1)).expect("a voter other than n1");
    assert!(move_replica(&mut sim, b"\x01", away, spare), "moved away: {:#?}", show(&mut sim));
    write_keys(&mut sim, 20..30, &mut written);
    // Back again: the node holds a tombstone for the group and must accept the newer descriptor.
    assert!(move_replica(&mut sim, b"\x01", spare, away), "moved back: {:#?}", show(&mut sim));
    write_keys(&mut sim, 30..40, &mut written);
    sim.run_for(Duration::from_secs(2)); // the meta index catches up at housekeeping
    let back = ranges(&mut sim).into_iter().find(|d| d.start == b"\x01").expect("user range");
    assert!(back.config.voters.contains(&away) && back.config.learners.is_empty(), "{back:?}");
    let hosted = sim.core(away).status(sim.tt(away)).groups.iter().any(|g| g.desc.id == user.id);
    assert!(hosted, "{away} hosts {} again", user.id);
    check_all(&mut sim, &written, "after moving away and back");
}

/// The node leading the range of `key`.
pub(super) fn leader_of(sim: &mut ClusterSim, key: &[u8]) -> NodeId {
    for _ in 0..40 {
        let d = ranges(sim).into_iter().find(|d| d.contains(key)).expect("a range holds the key");
        let found = d.config.voters.iter().copied().find(|n| {
            sim.nodes[n].core.is_some()
                && sim.core(*n).status(sim.tt(*n)).groups.iter().any(|g| g.desc.id == d.id && g.role == "Leader")
        });
        if let Some(n) = found {
            return n;
        }
        sim.run_for(Duration::from_millis(200));
    }
    panic!("no leader for {key:?}");
}

pub(super) fn txn(id: u128, start_ms: u64) -> meridian_txn::TxnMeta {
    meridian_txn::TxnMeta {
        id: meridian_txn::TxnId(id),
        start: meridian_truetime::Timestamp::from_nanos(start_ms * 1_000_000),
    }
}

#[test]
fn read_write_transactions_lock_wound_wait_and_commit_in_one_range() {
    let mut sim = ClusterSim::new(21, NodeOptions { rebalance: false, ..opts() });
    sim.run_for(Duration::from_secs(1));
    for _ in 0..2 {
        sim.join(NodeId(1)).expect("join");
    }
    wait_replicated(&mut sim, 3);
    put(&mut sim, "x", "10");
    let l = leader_of(&mut sim, b"x");
    let (old, young) = (txn(1, 1), txn(2, 2));
    let tget = |t, k: &str| Request::TxnGet { txn: t, key: k.as_bytes().to_vec() };
    let commit = |t, reads: &[&str], epoch, writes: &[(&str, &str)]| Request::TxnCommit {
        role: crate::node::api::CommitRole::Single,
        txn: t,
        reads: reads.iter().map(|k| k.as_bytes().to_vec()).collect(),
        read_spans: Vec::new(),
        read_epoch: epoch,
        writes: writes.iter().map(|(k, v)| (k.as_bytes().to_vec(), Some(v.as_bytes().to_vec()))).collect(),
        range: None,
    };
    // The young transaction reads x (shared lock).
    let Some(Response::TxnValue { value, epoch, .. }) = sim.call(l, tget(young, "x"), Duration::from_secs(1)) else {
        panic!("young read x")
    };
    assert_eq!(value.as_deref(), Some(&b"10"[..]));
    // A plain write of x waits for the young reader's lock (it may not slip under it).
    let plain = sim.submit(l, Request::Write { writes: vec![(b"x".to_vec(), Some(b"99".to_vec()))] });
    assert_eq!(sim.reply(plain, Duration::from_millis(500)), None, "the write waits for the shared lock");
    // The old transaction wants to write x: wound-wait wounds the younger holder, so the old one
    // proceeds and the young one is aborted.
    let old_commit = sim.submit(l, commit(old, &[], None, &[("x", "20")]));
    let r = sim.reply(old_commit, Duration::from_secs(2));
    assert!(matches!(r, Some(Response::Written { .. })), "the older transaction commits: {r:?}");
    // The wounded transaction cannot commit, nor read again under its old id.
    let r = sim.call(l, commit(young, &["x"], Some(epoch), &[("y", "1")]), Duration::from_secs(1));
    assert!(matches!(r, Some(Response::Error(ApiError::Aborted(_)))), "wounded: {r:?}");
    let r = sim.call(l, tget(young, "x"), Duration::from_secs(1));
    assert!(matches!(r, Some(Response::Error(ApiError::Aborted(_)))), "aborted stays aborted: {r:?}");
    // The plain write went through after the old transaction's locks were released.
    let r = sim.reply(plain, Duration::from_secs(2));
    assert!(matches!(r, Some(Response::Written { .. })), "the plain write proceeds: {r:?}");
    assert_eq!(get(&mut sim, "x").as_deref(), Some("99"));
    // A younger transaction waits for an older holder instead of wounding it.
    let (a, b) = (txn(3, 3), txn(4, 4));
    let Some(Response::TxnValue { epoch: ea, .. }) = sim.call(l, tget(a, "x"), Duration::from_secs(1)) else {
        panic!("a reads x")
    };
    let b_commit = sim.submit(l, commit(b, &[], None, &[("x", "b")]));
    assert_eq!(sim.reply(b_commit, Duration::from_millis(500)), None, "the younger writer waits");
    let r = sim.call(l, commit(a, &["x"], Some(ea), &[("y", "a")]), Duration::from_secs(2));
    assert!(matches!(r, Some(Response::Written { .. })), "the older reader commits: {r:?}");
    let r = sim.reply(b_commit, Duration::from_secs(2));
    assert!(matches!(r, Some(Response::Written { .. })), "then the younger writer: {r:?}");
    assert_eq!(get(&mut sim, "x").as_deref(), Some("b"));
    assert_eq!(get(&mut sim, "y").as_deref(), Some("a"));
    // A commit naming another leader's epoch aborts (its read locks died with that leader).
    let c = txn(5, 5);
    let Some(Response::TxnValue { epoch: ec, .. }) = sim.call(l, tget(c, "y"), Duration::from_secs(1)) else {
        panic!("c reads y")
    };
    let r = sim.call(l, commit(c, &["y"], Some(ec + 1), &[("y", "c")]), Duration::from_secs(1));
    assert!(matches!(r, Some(Response::Error(ApiError::Aborted(_)))), "stale epoch: {r:?}");
    // An abandoned transaction's locks expire, so a writer is not blocked for ever.
    let d = txn(6, 6);
    let Some(Response::TxnValue { .. }) = sim.call(l, tget(d, "z"), Duration::from_secs(1)) else {
        panic!("d reads z")
    };
    let w = sim.submit(l, Request::Write { writes: vec![(b"z".to_vec(), Some(b"1".to_vec()))] });
    let r = sim.reply(w, super::txn::TXN_IDLE_TIMEOUT * 3);
    assert!(matches!(r, Some(Response::Written { .. })), "the abandoned lock expires: {r:?}");
}

/// A transactional request of `t` to the leader of `key`'s range (following leader changes).
pub(super) fn txn_call(sim: &mut ClusterSim, key: &str, request: Request) -> Response {
    route(sim, key.as_bytes(), request)
}

pub(super) fn commit_req(
    t: meridian_txn::TxnMeta,
    reads: &[&str],
    epoch: Option<u64>,
    writes: &[(&str, &str)],
    role: crate::node::api::CommitRole,
) -> Request {
    Request::TxnCommit {
        txn: t,
        reads: reads.iter().map(|k| k.as_bytes().to_vec()).collect(),
        read_spans: Vec::new(),
        read_epoch: epoch,
        writes: writes.iter().map(|(k, v)| (k.as_bytes().to_vec(), Some(v.as_bytes().to_vec()))).collect(),
        role,
        range: None,
    }
}

/// The value of `k` in a lock-free read at `ts` (None: the leader picks the timestamp).
pub(super) fn read_at(
    sim: &mut ClusterSim,
    k: &str,
    ts: Option<meridian_truetime::Timestamp>,
) -> (Option<String>, meridian_truetime::Timestamp) {
    match route(sim, k.as_bytes(), Request::Read { start: k.as_bytes().to_vec(), end: None, limit: 1, ts }) {
        Response::ReadAt { rows, read_ts, .. } => {
            (rows.into_iter().next().map(|(_, v)| String::from_utf8(v).expect("utf8")), read_ts)
        }
        other => panic!("read {k}: {other:?}"),
    }
}

/// T's locking reads of "a" and "z" (in two ranges): the leader epochs to commit with.
fn read_a_and_z(sim: &mut ClusterSim, t: meridian_txn::TxnMeta) -> (u64, u64) {
    let mut read = |k: &str| match txn_call(sim, k, Request::TxnGet { txn: t, key: k.as_bytes().to_vec() }) {
        Response::TxnValue { epoch, .. } => epoch,
        r => panic!("T reads {k}: {r:?}"),
    };
    (read("a"), read("z"))
}

/// A plain write of z at its leader `zl` commits well before a participant's in-doubt timer:
/// no transaction holds z any more.
fn assert_z_free_soon(sim: &mut ClusterSim, zl: NodeId) {
    let w = sim.submit(zl, Request::Write { writes: vec![(b"z".to_vec(), Some(b"next".to_vec()))] });
    let limit = meridian_txn::outcome::IN_DOUBT_AFTER / 4;
    let r = sim.reply(w, limit);
    assert!(matches!(r, Some(Response::Written { .. })), "z is free within {limit:?}: {r:?}");
}

/// Three nodes, the keyspace split at "m", the two halves led by different nodes. Returns the
/// left and right ranges and the left one's leader.
pub(super) fn two_ranges_apart(sim: &mut ClusterSim) -> (meridian_shard::GroupId, meridian_shard::GroupId, NodeId) {
    sim.run_for(Duration::from_secs(1));
    for _ in 0..2 {
        sim.join(NodeId(1)).expect("join");
    }
    wait_replicated(sim, 3);
    match route(sim, b"m", Request::Split { key: b"m".to_vec() }) {
        Response::Done { .. } => {}
        other => panic!("split: {other:?}"),
    }
    sim.run_for(Duration::from_secs(2));
    let descs = ranges(sim);
    let left = descs.iter().find(|d| d.contains(b"a")).expect("left").id;
    let right = descs.iter().find(|d| d.contains(b"z")).expect("right").id;
    let ll = leader_of(sim, b"a");
    let other = NodeId(if ll.0 == 1 { 2 } else { 1 });
    match route(sim, b"z", Request::TransferLeader { group: right, to: other }) {
        Response::Done { .. } => {}
        r => panic!("transfer: {r:?}"),
    }
    sim.run_for(Duration::from_secs(2));
    assert_ne!(leader_of(sim, b"z"), leader_of(sim, b"a"));
    (left, right, ll)
}

#[test]
fn two_phase_commit_keeps_prepared_transactions_across_leader_failover_and_presumes_abort() {
    use crate::node::api::CommitRole;
    // T's client sends its commit 3 s after its prepare (the participant's leader dies
    // between), longer than a coordinator normally waits for it (COMMIT_AFTER_VOTE_MAX).
    let slow_client = Duration::from_secs(60);
    let mut sim = ClusterSim::new(33, NodeOptions { rebalance: false, commit_after_vote_max: slow_client, ..opts() });
    // Different leaders for the two ranges, so the participant's can die alone.
    let (left, right, _) = two_ranges_apart(&mut sim);
    put(&mut sim, "a", "100");
    put(&mut sim, "z", "100");

    // T moves 50 from z to a: reads both under locks, z's range prepares, a's range coordinates.
    let t = txn(10, 10);
    let Response::TxnValue { epoch: ea, .. } = txn_call(&mut sim, "a", Request::TxnGet { txn: t, key: b"a".to_vec() })
    else {
        panic!("read a")
    };
    let Response::TxnValue { epoch: ez, .. } = txn_call(&mut sim, "z", Request::TxnGet { txn: t, key: b"z".to_vec() })
    else {
        panic!("read z")
    };
    let prep = commit_req(t, &["z"], Some(ez), &[("z", "50")], CommitRole::Prepare { coordinator: left });
    let Response::Prepared { ts: p } = txn_call(&mut sim, "z", prep.clone()) else { panic!("prepare") };
    // A repeated prepare answers with the same prepare timestamp.
    assert_eq!(txn_call(&mut sim, "z", prep), Response::Prepared { ts: p });

    // The participant's leader dies while T is prepared. Its successor restores T's locks from
    // the prepare record: a conflicting write waits instead of slipping in.
    let pl = leader_of(&mut sim, b"z");
    sim.crash(pl);
    sim.run_for(Duration::from_secs(3));
    let pl2 = leader_of(&mut sim, b"z");
    assert_ne!(pl, pl2);
    let w = sim.submit(pl2, Request::Write { writes: vec![(b"z".to_vec(), Some(b"blind".to_vec()))] });
    assert_eq!(sim.reply(w, Duration::from_millis(300)), None, "the write waits for T's restored lock");
    sim.restart(pl);

    // The coordinator commits at s ≥ p; the participant applies at s after commit wait.
    let coord = commit_req(
        t,
        &["a"],
        Some(ea),
        &[("a", "150")],
        CommitRole::Coordinate { participants: vec![right], first_sent: None },
    );
    let r = txn_call(&mut sim, "a", coord.clone());
    let Response::Written { ts: s } = r else { panic!("coordinator commit: {r:?}") };
    assert!(s >= p, "commit ts {s} ≥ prepare ts {p}");
    // A retried commit gets the logged decision, not a second execution.
    assert_eq!(txn_call(&mut sim, "a", coord), Response::Written { ts: s });
    let r = sim.reply(w, Duration::from_secs(5));
    assert!(matches!(r, Some(Response::Written { ts }) if ts > s), "the blind write follows T: {r:?}");
    assert_eq!(read_at(&mut sim, "a", Some(s)).0.as_deref(), Some("150"));
    assert_eq!(read_at(&mut sim, "z", Some(s)).0.as_deref(), Some("50"), "z at T's commit timestamp");
    assert_eq!(read_at(&mut sim, "z", Some(s.prev())).0.as_deref(), Some("100"), "z just before T");
    assert_eq!(get(&mut sim, "z").as_deref(), Some("blind"));

    // U prepares at z's range and its client vanishes before the commit: the participant asks
    // the coordinator, which never decided, logs an abort; U's locks go.
    let u = txn(11, 11);
    let prep = commit_req(u, &[], None, &[("z", "lost")], CommitRole::Prepare { coordinator: left });
    let Response::Prepared { .. } = txn_call(&mut sim, "z", prep) else { panic!("prepare U") };
    let zl = leader_of(&mut sim, b"z");
    let w = sim.submit(zl, Request::Write { writes: vec![(b"z".to_vec(), Some(b"after-u".to_vec()))] });
    let r = sim.reply(w, meridian_txn::outcome::IN_DOUBT_AFTER * 4);
    assert!(matches!(r, Some(Response::Written { .. })), "U is presumed aborted and releases z: {r:?}");
    // A late commit of U finds the abort decision.
    let late =
        commit_req(u, &[], None, &[("a", "u")], CommitRole::Coordinate { participants: vec![right], first_sent: None });
    let r = txn_call(&mut sim, "a", late);
    assert!(matches!(r, Response::Error(ApiError::Aborted(_))), "the decision never flips: {r:?}");
    assert_eq!(get(&mut sim, "z").as_deref(), Some("after-u"));
    assert_eq!(get(&mut sim, "a").as_deref(), Some("150"));
}

#[test]
fn a_new_leader_rebuilds_prepared_locks_only_after_applying_its_predecessors_entries() {
    // Found by `meridian chaos bank` (a lost credit): a new leader already held its lease while
    // its predecessor's last prepare record was chosen but not yet applied here; a housekeeping
    // tick rebuilt the lock table then, without that transaction, and a later transaction read
    // the value from before its commit and overwrote it. Spanner §4.2.1: a prepared transaction
    // keeps its locks across leader changes, so the rebuild must see every earlier entry.
    use crate::node::api::CommitRole;
    let mut sim = ClusterSim::new(36, NodeOptions { rebalance: false, ..opts() });
    let (left, right, _) = two_ranges_apart(&mut sim);
    put(&mut sim, "z", "100");
    let t = txn(30, 30);
    let Response::TxnValue { epoch: tz, .. } = txn_call(&mut sim, "z", Request::TxnGet { txn: t, key: b"z".to_vec() })
    else {
        panic!("T reads z")
    };
    let prep = commit_req(t, &["z"], Some(tz), &[("z", "106")], CommitRole::Prepare { coordinator: left });
    let Response::Prepared { .. } = txn_call(&mut sim, "z", prep) else { panic!("T prepares") };

    // Recreate that moment at z's leader: a fresh lock table (as after a leader change), T's
    // record not yet in the state machine, this leader's barrier not yet applied.
    let zl = leader_of(&mut sim, b"z");
    let now = sim.tt(zl);
    let core = sim.nodes.get_mut(&zl).and_then(|n| n.core.as_mut()).expect("leader is up");
    let g = core.groups.get_mut(&right).expect("leads z's range");
    let record = g.state.prepared.remove(&t.id).expect("T is prepared");
    let barrier = std::mem::take(&mut g.state.leader_ballot);
    g.txns = Default::default();
    core.twopc_housekeeping(now, right); // a housekeeping tick in that moment
    // Then T's record and the barrier are applied.
    let g = core.groups.get_mut(&right).expect("leads z's range");
    g.state.prepared.insert(t.id, record);
    g.state.leader_ballot = barrier;

    // A younger transaction's locking read of z waits for T instead of reading z from before T.
    let u = txn(31, 31);
    let r = sim.submit(zl, Request::TxnGet { txn: u, key: b"z".to_vec() });
    let got = sim.reply(r, Duration::from_millis(300));
    assert_eq!(got, None, "the read waits for prepared T's restored lock");
}

#[test]
fn a_participant_that_asks_hears_a_commit_only_after_commit_wait() {
    // Spanner §4.2.1: the coordinator tells participants the commit timestamp s only once
    // TT.after(s). An inquiring participant (its in-doubt timer, a wound) gets no earlier answer.
    use crate::node::api::CommitRole;
    let mut sim = ClusterSim::new(37, NodeOptions { rebalance: false, ..opts() });
    let (left, right, ll) = two_ranges_apart(&mut sim);
    put(&mut sim, "a", "100");
    put(&mut sim, "z", "100");
    // A wide ε makes commit wait (2ε) long enough to ask inside it.
    sim.set_epsilon(Duration::from_millis(200));
    sim.run_for(Duration::from_secs(2));
    let t = txn(40, 40);
    let (ea, ez) = read_a_and_z(&mut sim, t);
    let prep = commit_req(t, &["z"], Some(ez), &[("z", "90")], CommitRole::Prepare { coordinator: left });
    let Response::Prepared { .. } = txn_call(&mut sim, "z", prep) else { panic!("T prepares") };
    let al = leader_of(&mut sim, b"a");
    assert_eq!(al, ll);
    let role = CommitRole::Coordinate { participants: vec![right], first_sent: None };
    let commit = sim.submit(al, commit_req(t, &["a"], Some(ea), &[("a", "110")], role));
    sim.run_for(Duration::from_millis(100)); // decided and logged; commit wait runs ~400 ms
    let ask = sim.submit(al, Request::TxnInquire { group: left, txn: t.id, wound: false });
    let answer = sim.reply(ask, Duration::from_secs(3));
    let heard_at = sim.now;
    let Some(Response::Written { ts: s }) = sim.reply(commit, Duration::from_secs(3)) else { panic!("T commits") };
    assert_eq!(answer, Some(Response::Outcome { decision: Some(Some(s)) }));
    assert!(heard_at > s, "the participant heard s = {s} at true time {heard_at}, before TT.after(s)");
}

#[test]
fn a_client_abort_releases_a_prepared_participant_at_once() {
    // The client gives up T (another participant refused, say) and its abort reaches a range
    // where T is prepared before it reaches the coordinator's range, where T still holds a read
    // lock. The participant asks the coordinator to abort T unless decided, so T's locks go
    // now, not after the in-doubt timer (found by `meridian bench bank`: 2 s stalls).
    use crate::node::api::CommitRole;
    let mut sim = ClusterSim::new(38, NodeOptions { rebalance: false, ..opts() });
    let (left, _right, _) = two_ranges_apart(&mut sim);
    put(&mut sim, "a", "100");
    put(&mut sim, "z", "100");
    let t = txn(50, 50);
    let (_, ez) = read_a_and_z(&mut sim, t);
    let prep = commit_req(t, &["z"], Some(ez), &[("z", "90")], CommitRole::Prepare { coordinator: left });
    let Response::Prepared { .. } = txn_call(&mut sim, "z", prep) else { panic!("T prepares") };
    let r = txn_call(&mut sim, "z", Request::TxnAbort { txn: t, key: b"z".to_vec(), range: None });
    assert!(matches!(r, Response::Done { .. }), "abort at the participant: {r:?}");

    let zl = leader_of(&mut sim, b"z");
    assert_z_free_soon(&mut sim, zl);
    assert_eq!(get(&mut sim, "z").as_deref(), Some("next"));
}

#[test]
fn a_client_abort_that_overtakes_a_prepare_still_releases_it_at_once() {
    // The client gives up T while T's prepare record is still on its way through Paxos (the
    // prepare's answer is what the client stopped waiting for). Once the record applies, the
    // participant asks T's coordinator at once instead of holding T's locks until a timer
    // (found by `meridian bench bank`: 2 s stalls after aborts).
    use crate::node::api::CommitRole;
    let mut sim = ClusterSim::new(39, NodeOptions { rebalance: false, ..opts() });
    let (left, _right, _) = two_ranges_apart(&mut sim);
    put(&mut sim, "a", "100");
    put(&mut sim, "z", "100");
    let t = txn(60, 60);
    let (_, ez) = read_a_and_z(&mut sim, t);
    let zl = leader_of(&mut sim, b"z");
    let prep = commit_req(t, &["z"], Some(ez), &[("z", "90")], CommitRole::Prepare { coordinator: left });
    let p = sim.submit(zl, prep);
    let abort = sim.submit(zl, Request::TxnAbort { txn: t, key: b"z".to_vec(), range: None });
    assert!(matches!(sim.reply(abort, Duration::from_secs(1)), Some(Response::Done { .. })));
    assert!(matches!(sim.reply(p, Duration::from_secs(1)), Some(Response::Prepared { .. })), "T prepared");
    assert_z_free_soon(&mut sim, zl);
}

#[test]
fn an_older_transaction_wounds_a_younger_one_prepared_in_another_range() {
    // The cycle wound-wait must break across groups (meridian_txn::locks): young U is prepared
    // at z's range and its coordinator's commit waits at a's range behind old T's read lock;
    // T then reads z, blocked by prepared U. Only U's coordinator can abort U: the participant
    // asks it to, instead of everyone waiting for an idle timeout.
    use crate::node::api::CommitRole;
    let mut sim = ClusterSim::new(35, NodeOptions { rebalance: false, ..opts() });
    let (left, right, _) = two_ranges_apart(&mut sim);
    put(&mut sim, "a", "100");
    put(&mut sim, "z", "100");
    let (t, u) = (txn(20, 20), txn(21, 21));
    let get = |t, k: &str| Request::TxnGet { txn: t, key: k.as_bytes().to_vec() };
    let Response::TxnValue { epoch: ta, .. } = txn_call(&mut sim, "a", get(t, "a")) else { panic!("T reads a") };
    let Response::TxnValue { epoch: ua, .. } = txn_call(&mut sim, "a", get(u, "a")) else { panic!("U reads a") };
    let Response::TxnValue { epoch: uz, .. } = txn_call(&mut sim, "z", get(u, "z")) else { panic!("U reads z") };
    let prep = commit_req(u, &["z"], Some(uz), &[("z", "u")], CommitRole::Prepare { coordinator: left });
    let Response::Prepared { .. } = txn_call(&mut sim, "z", prep) else { panic!("U prepares") };
    let coord = commit_req(
        u,
        &["a"],
        Some(ua),
        &[("a", "u")],
        CommitRole::Coordinate { participants: vec![right], first_sent: None },
    );
    let al = leader_of(&mut sim, b"a");
    let u_commit = sim.submit(al, coord);
    assert_eq!(sim.reply(u_commit, Duration::from_millis(300)), None, "U's commit waits for T's read lock");
    let zl = leader_of(&mut sim, b"z");
    let t_read = sim.submit(zl, get(t, "z"));
    // Well inside the idle timeout that would otherwise break the cycle.
    let r = sim.reply(t_read, Duration::from_secs(2));
    let Some(Response::TxnValue { value, epoch: tz, .. }) = r else { panic!("T's read of z is answered: {r:?}") };
    assert_eq!(value.as_deref(), Some(&b"100"[..]), "U was aborted, so T reads the old z");
    assert!(super::txn::TXN_IDLE_TIMEOUT > Duration::from_secs(2));
    let r = sim.reply(u_commit, Duration::from_secs(2));
    assert!(matches!(r, Some(Response::Error(ApiError::Aborted(_)))), "U was wounded: {r:?}");
    // T commits across both ranges.
    let prep = commit_req(t, &["z"], Some(tz), &[("z", "t")], CommitRole::Prepare { coordinator: left });
    let Response::Prepared { ts: pt } = txn_call(&mut sim, "z", prep) else { panic!("T prepares") };
    let coord = commit_req(
        t,
        &["a"],
        Some(ta),
        &[("a", "t")],
        CommitRole::Coordinate { participants: vec![right], first_sent: None },
    );
    let r = txn_call(&mut sim, "a", coord);
    assert!(matches!(r, Response::Written { ts } if ts >= pt), "T commits at or above its prepare {pt}: {r:?}");
    sim.run_for(Duration::from_secs(1));
    assert_eq!(super::tests::get(&mut sim, "a"), Some("t".into()));
    assert_eq!(super::tests::get(&mut sim, "z"), Some("t".into()));
}

#[test]
fn a_deposed_leaders_unchosen_write_never_appears_below_a_later_leaders_reads() {
    // Found by the whole-cluster simulation (seed 786): an isolated leader assigns a write a
    // timestamp inside its lease, but cannot get it chosen; a new leader serves a read above
    // that timestamp; later the old leader leads again and its phase 1 finds its own write in
    // its log, with nothing newer at that slot — Paxos lets it choose the write, whose old
    // timestamp then lands below the read already served.
    let mut sim = ClusterSim::new(41, NodeOptions { rebalance: false, ..opts() });
    let (_, group, left_leader) = two_ranges_apart(&mut sim);
    put(&mut sim, "x", "1");
    // x's range led by a node that leads neither the meta range nor the left range, so routing
    // still works while it is cut off.
    let meta = meridian_shard::range::META_GROUP;
    let meta_leader = *sim
        .nodes
        .keys()
        .find(|n| sim.core(**n).status(sim.tt(**n)).groups.iter().any(|g| g.desc.id == meta && g.role == "Leader"))
        .expect("the meta range has a leader");
    let old = *sim.nodes.keys().find(|n| **n != meta_leader && **n != left_leader).expect("a third node");
    if leader_of(&mut sim, b"x") != old {
        match route(&mut sim, b"x", Request::TransferLeader { group, to: old }) {
            Response::Done { .. } => {}
            r => panic!("transfer: {r:?}"),
        }
        sim.run_for(Duration::from_secs(2));
    }
    assert_eq!(leader_of(&mut sim, b"x"), old);
    let others: Vec<NodeId> = sim.nodes.keys().copied().filter(|n| *n != old).collect();
    sim.cut = others.iter().map(|n| (old, *n)).collect();
    let lost = sim.submit(old, Request::Write { writes: vec![(b"x".to_vec(), Some(b"2".to_vec()))] });
    sim.run_for(Duration::from_secs(3));
    let new_leads = |sim: &ClusterSim| {
        others
            .iter()
            .any(|n| sim.core(*n).status(sim.tt(*n)).groups.iter().any(|g| g.desc.id == group && g.lease_end.is_some()))
    };
    assert!(new_leads(&sim), "another node leads x's range with a lease");
    let (v, s) = read_at(&mut sim, "x", None);
    assert_eq!(v.as_deref(), Some("1"), "the isolated leader's write was not chosen");
    sim.cut.clear();
    sim.run_for(Duration::from_secs(1));
    match route(&mut sim, b"x", Request::TransferLeader { group, to: old }) {
        Response::Done { .. } => {}
        r => panic!("transfer back: {r:?}"),
    }
    sim.run_for(Duration::from_secs(3));
    assert_eq!(leader_of(&mut sim, b"x"), old, "the old leader leads again");
    assert_eq!(read_at(&mut sim, "x", Some(s)).0.as_deref(), Some("1"), "the read at {s} stays as served");
    assert_eq!(get(&mut sim, "x").as_deref(), Some("1"), "the deposed write took no effect");
    assert!(!matches!(sim.replies.get(&lost), Some(Response::Written { .. })), "it was never acknowledged");
}

/// Sequential writes alternating between two ranges led by different nodes, the left leader's
/// clock `offset_ns` off true time (ε = 50 ms): each write starts after the previous one was
/// acknowledged, so external consistency demands increasing timestamps.
fn alternating_writes(seed: u64, skip_commit_wait: bool, offset_ns: i64) -> Vec<meridian_check::external::Committed> {
    let mut sim =
        ClusterSim::new(seed, NodeOptions { rebalance: false, unsafe_skip_commit_wait: skip_commit_wait, ..opts() });
    sim.set_epsilon(Duration::from_millis(50));
    let (_, _, ll) = two_ranges_apart(&mut sim);
    sim.nodes.get_mut(&ll).expect("left leader").offset_ns = offset_ns;
    sim.run_for(Duration::from_millis(500));
    let mut history = Vec::new();
    for i in 0..30u64 {
        let k = if i % 2 == 0 { "a" } else { "z" };
        let invoke_ns = sim.now.nanos();
        let w = Request::Write { writes: vec![(k.as_bytes().to_vec(), Some(i.to_string().into_bytes()))] };
        let Response::Written { ts } = route(&mut sim, k.as_bytes(), w) else { panic!("write {i}") };
        history.push(meridian_check::external::Committed {
            id: format!("w{i}@{k}"),
            invoke_ns,
            ack_ns: sim.now.nanos(),
            ts: ts.nanos(),
        });
    }
    history
}

#[test]
fn commit_wait_gives_external_consistency_and_the_checker_catches_its_absence() {
    use meridian_check::external::check;
    // Clocks within ε: every write acknowledged before the next began has the smaller timestamp.
    let good = alternating_writes(41, false, -40_000_000);
    assert_eq!(check(&good), Ok(()), "correct build");
    // Commit wait skipped (test-only switch): a write answered before TT.after(s) lets the next
    // write, at a node whose clock is behind, take a smaller timestamp.
    let v = check(&alternating_writes(41, true, -40_000_000)).expect_err("no commit wait must be caught");
    eprintln!("{v}");
    // A clock further off than ε breaks it even with commit wait.
    let v = check(&alternating_writes(41, false, -150_000_000)).expect_err("clock beyond ε must be caught");
    eprintln!("{v}");
}

#[test]
fn a_transactional_scan_locks_its_span_against_phantoms() {
    let mut sim = ClusterSim::new(51, NodeOptions { rebalance: false, ..opts() });
    sim.run_for(Duration::from_secs(1));
    put(&mut sim, "b1", "1");
    let l = leader_of(&mut sim, b"b1");
    let t = txn(20, 20);
    let scan = Request::TxnScan { txn: t, start: b"b".to_vec(), end: b"c".to_vec(), limit: 10 };
    let Some(Response::TxnRows { rows, epoch, .. }) = sim.call(l, scan, Duration::from_secs(1)) else { panic!("scan") };
    assert_eq!(rows.len(), 1);
    // A new key inside the scanned span (a phantom) waits for the scan's lock; one outside does not.
    let phantom = sim.submit(l, Request::Write { writes: vec![(b"b2".to_vec(), Some(b"2".to_vec()))] });
    let outside = sim.submit(l, Request::Write { writes: vec![(b"d".to_vec(), Some(b"4".to_vec()))] });
    assert!(matches!(sim.reply(outside, Duration::from_secs(1)), Some(Response::Written { .. })));
    assert_eq!(sim.reply(phantom, Duration::from_millis(300)), None, "the phantom waits for the span lock");
    // T commits naming the span it scanned; then the phantom goes in.
    let commit = Request::TxnCommit {
        txn: t,
        reads: Vec::new(),
        read_spans: vec![(b"b".to_vec(), b"c".to_vec())],
        read_epoch: Some(epoch),
        writes: vec![(b"count".to_vec(), Some(b"1".to_vec()))],
        role: crate::node::api::CommitRole::Single,
        range: None,
    };
    let r = sim.call(l, commit, Duration::from_secs(2));
    assert!(matches!(r, Some(Response::Written { .. })), "commit with the span: {r:?}");
    assert!(matches!(sim.reply(phantom, Duration::from_secs(2)), Some(Response::Written { .. })));
    // A commit naming a span it never locked aborts.
    let u = txn(21, 21);
    let commit = Request::TxnCommit {
        txn: u,
        reads: Vec::new(),
        read_spans: vec![(b"b".to_vec(), b"c".to_vec())],
        read_epoch: Some(epoch),
        writes: vec![(b"count".to_vec(), Some(b"2".to_vec()))],
        role: crate::node::api::CommitRole::Single,
        range: None,
    };
    let r = sim.call(l, commit, Duration::from_secs(2));
    assert!(matches!(r, Some(Response::Error(ApiError::Aborted(_)))), "unlocked span: {r:?}");
}

#[test]
fn reads_below_the_gc_horizon_fail_clearly() {
    let mut sim = ClusterSim::new(61, NodeOptions { gc_ttl: Duration::from_secs(2), ..opts() });
    sim.run_for(Duration::from_secs(1));
    put(&mut sim, "k", "old");
    let (_, then) = read_at(&mut sim, "k", None);
    put(&mut sim, "k", "new");
    assert_eq!(read_at(&mut sim, "k", Some(then)).0.as_deref(), Some("old"), "inside the GC TTL");
    sim.run_for(Duration::from_secs(5));
    match route(&mut sim, b"k", Request::Read { start: b"k".to_vec(), end: None, limit: 1, ts: Some(then) }) {
        Response::Error(ApiError::Invalid(m)) => assert!(m.contains("GC horizon"), "{m}"),
        other => panic!("a read below the horizon must fail: {other:?}"),
    }
    assert_eq!(read_at(&mut sim, "k", None).0.as_deref(), Some("new"));
}

#[test]
fn followers_serve_reads_up_to_their_safe_time() {
    use crate::node::api::CommitRole;
    let mut sim = ClusterSim::new(71, NodeOptions { rebalance: false, ..opts() });
    let (left, _right, _) = two_ranges_apart(&mut sim);
    put(&mut sim, "k", "1");
    let Response::Written { ts: w } =
        route(&mut sim, b"k", Request::Write { writes: vec![(b"k".to_vec(), Some(b"2".to_vec()))] })
    else {
        panic!("write")
    };
    sim.run_for(Duration::from_millis(500)); // followers apply
    let leader = leader_of(&mut sim, b"k");
    let follower = *sim.nodes.keys().find(|n| **n != leader).expect("a follower");
    let read = |ts| Request::Read { start: b"k".to_vec(), end: None, limit: 1, ts: Some(ts) };
    // At or below its highest applied write, a follower answers itself.
    match sim.call(follower, read(w), Duration::from_secs(1)) {
        Some(Response::ReadAt { rows, read_ts, .. }) => {
            assert_eq!(rows, vec![(b"k".to_vec(), b"2".to_vec())]);
            assert_eq!(read_ts, w);
        }
        other => panic!("follower read at {w}: {other:?}"),
    }
    match sim.call(follower, read(w.prev()), Duration::from_secs(1)) {
        Some(Response::ReadAt { rows, .. }) => assert_eq!(rows, vec![(b"k".to_vec(), b"1".to_vec())]),
        other => panic!("follower read below {w}: {other:?}"),
    }
    // Above it, the follower cannot know what the leader assigned since: it sends the client on.
    let later = sim.tt(follower).latest;
    let r = sim.call(follower, read(later), Duration::from_secs(1));
    assert!(matches!(r, Some(Response::Error(ApiError::NotLeader { .. }))), "{r:?}");
    // It also asked the leader to close that timestamp (MinNextTS): the range is idle, yet soon
    // the follower serves the read itself.
    sim.run_for(Duration::from_millis(300));
    let r = sim.call(follower, read(later), Duration::from_secs(1));
    assert!(matches!(r, Some(Response::ReadAt { .. })), "after the leader closed {later}: {r:?}");
    // A transaction prepared here holds back reads of its keys at or above its prepare timestamp
    // (t_tm_safe), at every replica — and only of its keys.
    let t = txn(30, 30);
    let prep = commit_req(t, &[], None, &[("k", "3")], CommitRole::Prepare { coordinator: _right });
    let _ = left;
    let Response::Prepared { ts: p } = txn_call(&mut sim, "k", prep) else { panic!("prepare") };
    put(&mut sim, "j", "x"); // advances the follower's t_paxos_safe past p
    sim.run_for(Duration::from_millis(500));
    let held = sim.submit(follower, read(p));
    assert_eq!(sim.reply(held, Duration::from_millis(300)), None, "a read at p waits for the outcome");
    let other = Request::Read { start: b"j".to_vec(), end: None, limit: 1, ts: Some(p) };
    assert!(matches!(sim.call(follower, other, Duration::from_secs(1)), Some(Response::ReadAt { .. })));
    assert!(
        matches!(sim.call(follower, read(p.prev()), Duration::from_secs(1)), Some(Response::ReadAt { .. })),
        "below p the prepared transaction cannot commit"
    );
}

#[test]
fn keepalives_keep_a_transaction_past_the_idle_timeout() {
    let mut sim = ClusterSim::new(81, opts());
    sim.run_for(Duration::from_secs(1));
    let l = leader_of(&mut sim, b"x");
    let t = txn(40, 40);
    let Some(Response::TxnValue { epoch, .. }) =
        sim.call(l, Request::TxnGet { txn: t, key: b"x".to_vec() }, Duration::from_secs(1))
    else {
        panic!("read x")
    };
    let idle = super::txn::TXN_IDLE_TIMEOUT;
    for _ in 0..4 {
        sim.run_for(idle / 3);
        let r = sim.call(l, Request::TxnKeepalive { txn: t, key: b"x".to_vec() }, Duration::from_secs(1));
        assert!(matches!(r, Some(Response::Done { .. })), "keepalive: {r:?}");
    }
    let commit = commit_req(t, &["x"], Some(epoch), &[("x", "kept")], crate::node::api::CommitRole::Single);
    let r = sim.call(l, commit, Duration::from_secs(2));
    assert!(matches!(r, Some(Response::Written { .. })), "alive after {:?}: {r:?}", idle * 4 / 3);
    // Without keepalives it expires, and the next keepalive says so.
    let u = txn(41, 41);
    let Some(Response::TxnValue { .. }) =
        sim.call(l, Request::TxnGet { txn: u, key: b"x".to_vec() }, Duration::from_secs(1))
    else {
        panic!("read x")
    };
    sim.run_for(idle * 2);
    let r = sim.call(l, Request::TxnKeepalive { txn: u, key: b"x".to_vec() }, Duration::from_secs(1));
    assert!(matches!(r, Some(Response::Error(ApiError::Aborted(_)))), "expired: {r:?}");
}

#[test]
fn writes_over_the_size_limits_are_refused_on_every_write_path() {
    use crate::node::api::CommitRole;
    use meridian_proto::limits::{TXN_BYTES_MAX, TXN_WRITES_MAX, VALUE_SIZE_MAX};
    let mut sim = ClusterSim::new(83, opts());
    sim.run_for(Duration::from_secs(1));
    let invalid = |r: Response, what: &str, needle: &str| match r {
        Response::Error(ApiError::Invalid(m)) => assert!(m.contains(needle), "{what}: {m}"),
        other => panic!("{what} must be refused as invalid: {other:?}"),
    };
    let huge = vec![b'v'; VALUE_SIZE_MAX + 1];
    let w = Request::Write { writes: vec![(b"k".to_vec(), Some(huge.clone()))] };
    invalid(route(&mut sim, b"k", w), "a write of a too-large value", &format!("limit is {VALUE_SIZE_MAX} bytes"));
    let many: Vec<super::cmd::KeyWrite> =
        (0..=TXN_WRITES_MAX).map(|i| (format!("k{i:05}").into_bytes(), None)).collect();
    invalid(route(&mut sim, b"k", Request::Write { writes: many.clone() }), "too many writes", "keys");
    let roles = [CommitRole::Single, CommitRole::Prepare { coordinator: meridian_shard::GroupId(1) }];
    for (i, role) in roles.into_iter().enumerate() {
        let what = format!("{role:?}");
        let t = txn(9_000 + i as u128, 1);
        let mut big = commit_req(t, &[], None, &[], role.clone());
        if let Request::TxnCommit { writes, .. } = &mut big {
            *writes = vec![(b"k".to_vec(), Some(huge.clone()))];
        }
        invalid(txn_call(&mut sim, "k", big), &what, &format!("limit is {VALUE_SIZE_MAX} bytes"));
        // 17 values of 1 MiB: each allowed, together more than a transaction may write.
        let mut bulky = commit_req(txn(9_100 + i as u128, 1), &[], None, &[], role);
        if let Request::TxnCommit { writes, .. } = &mut bulky {
            *writes = (0..17).map(|j| (format!("k{j:02}").into_bytes(), Some(vec![b'v'; VALUE_SIZE_MAX]))).collect();
        }
        invalid(txn_call(&mut sim, "k", bulky), &what, &format!("at most {TXN_BYTES_MAX} bytes"));
    }
    // Nothing of it was written; a write at the limit is fine.
    assert_eq!(get(&mut sim, "k"), None);
    let at_limit = Request::Write { writes: vec![(b"k".to_vec(), Some(vec![b'v'; VALUE_SIZE_MAX]))] };
    assert!(matches!(route(&mut sim, b"k", at_limit), Response::Written { .. }));
}

#[test]
fn a_leader_parks_requests_while_it_applies_its_log_instead_of_refusing_them() {
    // The shell steps a batch of inputs, then writes and applies: a request stepped after an
    // `Accepted` that chose entries meets a leader whose state machine is behind its log until
    // the batch is released. Batching like the shell makes that happen here.
    let mut sim = ClusterSim::new(7, opts());
    sim.run_for(Duration::from_secs(1));
    for _ in 0..2 {
        sim.join(NodeId(1)).expect("join");
    }
    wait_replicated(&mut sim, 3);
    put(&mut sim, "b", "0");
    let leader = leader_of(&mut sim, b"b");
    sim.batch_us = 400;
    let mut gets = Vec::new();
    for i in 0..300u32 {
        let k = format!("k{i:04}").into_bytes();
        sim.submit(leader, Request::Write { writes: vec![(k, Some(b"v".to_vec()))] });
        let t = txn(1_000 + u128::from(i), 10_000 + u64::from(i));
        gets.push(sim.submit(leader, Request::TxnGet { txn: t, key: b"b".to_vec() }));
        sim.run_for(Duration::from_micros(150));
    }
    let refused: Vec<Response> = gets
        .into_iter()
        .filter_map(|id| match sim.reply(id, Duration::from_secs(3)) {
            Some(Response::TxnValue { .. }) => None,
            other => Some(other.unwrap_or(Response::Error(ApiError::Timeout("no answer".into())))),
        })
        .collect();
    assert!(refused.is_empty(), "{} of 300 locking reads at the leader refused, e.g. {:?}", refused.len(), refused[0]);
}

#[test]
fn a_commit_routed_by_a_range_that_split_since_aborts_and_tells_the_range_as_it_is_now() {
    let mut sim = ClusterSim::new(5, NodeOptions { rebalance: false, ..opts() });
    sim.run_for(Duration::from_secs(1));
    put(&mut sim, "a", "1");
    put(&mut sim, "z", "2");
    // T reads a and z while one range holds both, so its client would commit in one range.
    let t = txn(1, 1);
    let (ea, ez) = read_a_and_z(&mut sim, t);
    assert_eq!(ea, ez, "one range, one leader epoch");
    match route(&mut sim, b"m", Request::Split { key: b"m".to_vec() }) {
        Response::Done { .. } => {}
        other => panic!("split: {other:?}"),
    }
    sim.run_for(Duration::from_secs(1));
    // The commit still names both keys in the left range: a retryable abort with the new
    // range (the client re-runs the transaction and routes by it), not "invalid request".
    let single = crate::node::api::CommitRole::Single;
    match txn_call(&mut sim, "a", commit_req(t, &["a", "z"], Some(ea), &[("a", "0"), ("z", "3")], single)) {
        Response::Error(ApiError::RangeChanged { why, desc: Some(desc) }) => {
            assert!(desc.contains(b"a") && !desc.contains(b"z"), "the range as it is now: {desc}");
            assert!(why.contains("no longer holds key z"), "{why}");
        }
        other => panic!("a commit across the split: {other:?}"),
    }
    // Nothing was written, and T's lock on a is gone at once (a plain write does not wait).
    assert_eq!(get(&mut sim, "a").as_deref(), Some("1"));
    assert_eq!(get(&mut sim, "z").as_deref(), Some("2"));
    let l = leader_of(&mut sim, b"a");
    let w = sim.submit(l, Request::Write { writes: vec![(b"a".to_vec(), Some(b"next".to_vec()))] });
    let r = sim.reply(w, Duration::from_millis(500));
    assert!(matches!(r, Some(Response::Written { .. })), "a is free: {r:?}");
}
