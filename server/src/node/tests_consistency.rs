//! External consistency at the edges (issue 18): reads and writes around commit wait, clock
//! steps within ε, leadership transfers, splits and merges, and reads in the future. Each test
//! states the rule it checks (Spanner §4.1.2, §4.1.3) and failed on the code before its fix.

use std::time::Duration;

use meridian_shard::paxos::NodeId;
use meridian_truetime::Timestamp;

use super::sim::ClusterSim;
use super::tests::{commit_req, get, leader_of, opts, put, ranges, read_at, route, txn, txn_call, wait_replicated};
use super::{ApiError, NodeOptions, Request, Response};

/// Three nodes, one replica of every range on each.
fn three_nodes(seed: u64, epsilon: Duration) -> ClusterSim {
    let mut sim = ClusterSim::new(seed, NodeOptions { rebalance: false, ..opts() });
    sim.set_epsilon(epsilon);
    sim.run_for(Duration::from_secs(1));
    for _ in 0..2 {
        sim.join(NodeId(1)).expect("join");
    }
    wait_replicated(&mut sim, 3);
    sim
}

fn set_offset(sim: &mut ClusterSim, node: NodeId, offset: i64) {
    sim.nodes.get_mut(&node).expect("node exists").offset_ns = offset;
}

fn write(k: &str, v: &str) -> Request {
    Request::Write { writes: vec![(k.as_bytes().to_vec(), Some(v.as_bytes().to_vec()))] }
}

fn written(sim: &mut ClusterSim, k: &str, v: &str) -> Timestamp {
    match route(sim, k.as_bytes(), write(k, v)) {
        Response::Written { ts } => ts,
        other => panic!("write {k}: {other:?}"),
    }
}

/// The node other than `a` and `b`'s choices: some node that is not `not`.
fn other_than(sim: &ClusterSim, not: NodeId) -> NodeId {
    *sim.nodes.keys().find(|n| **n != not).expect("three nodes")
}

/// Runs until `node` leads the range of `key` under a lease, bounded.
fn wait_leads(sim: &mut ClusterSim, node: NodeId, key: &[u8]) {
    for _ in 0..100 {
        let now = sim.tt(node);
        if sim.core(node).status(now).groups.iter().any(|g| g.desc.contains(key) && g.lease_end.is_some()) {
            return;
        }
        sim.run_for(Duration::from_millis(10));
    }
    panic!("{node} never led the range of {key:?} with a lease");
}

/// Writes `k = new` and checks the read served at `s` (which saw `seen`) still holds: the
/// write landed above it and the snapshot at `s` did not change (Spanner §4.1.3).
fn write_after_read(sim: &mut ClusterSim, k: &str, (s, seen): (Timestamp, &str), new: &str, what: &str) {
    let w = written(sim, k, new);
    assert!(w > s, "{what}: the write of {k} took {w}, below the read served at {s}");
    assert_eq!(read_at(sim, k, Some(s)).0.as_deref(), Some(seen), "{what}: the snapshot at {s} changed");
}

fn transfer(sim: &mut ClusterSim, key: &str, to: NodeId) {
    let group = ranges(sim).into_iter().find(|d| d.contains(key.as_bytes())).expect("a range holds the key").id;
    match route(sim, key.as_bytes(), Request::TransferLeader { group, to }) {
        Response::Done { .. } => {}
        r => panic!("transfer {group} to {to}: {r:?}"),
    }
    wait_leads(sim, to, key.as_bytes());
}

#[test]
fn no_reader_sees_a_write_before_its_commit_wait_ends() {
    // Spanner §4.1.2: no one may see the data of a commit at s before TT.after(s). With ε =
    // 100 ms a write is applied (and its locks released) ~200 ms before its commit wait ends;
    // every kind of read polls the key meanwhile, and any that returns the new value must be
    // answered after true time passed s. Otherwise a reader sees the write, finishes, and a
    // later read-only transaction at a node whose clock is behind picks s_read < s and misses it.
    let mut sim = three_nodes(81, Duration::from_millis(100));
    put(&mut sim, "k", "old");
    sim.run_for(Duration::from_millis(500));
    let l = leader_of(&mut sim, b"k");
    let f = other_than(&sim, l);
    let w = sim.submit(l, write("k", "new"));
    let mut pending: Vec<(u64, &'static str)> = Vec::new();
    let mut seen: Vec<(&'static str, Timestamp)> = Vec::new(); // (kind, true time before the reply)
    let mut acked = None;
    let step = Duration::from_micros(250);
    let end = sim.now.saturating_add(Duration::from_secs(3));
    let mut i = 0u64;
    while sim.now < end && !(acked.is_some() && pending.is_empty()) {
        if acked.is_none() && i.is_multiple_of(4) {
            let key = b"k".to_vec();
            let young = txn(10_000 + u128::from(i), 3_000_000_000_000);
            pending.push((
                sim.submit(l, Request::Read { start: key.clone(), end: None, limit: 1, ts: None }),
                "read-only",
            ));
            pending.push((sim.submit(l, Request::Get { key: key.clone() }), "get"));
            pending.push((sim.submit(l, Request::TxnGet { txn: young, key: key.clone() }), "locking read"));
            pending.push((sim.submit(l, Request::Scan { start: key.clone(), end: b"l".to_vec(), limit: 10 }), "scan"));
            let at = sim.tt(f).latest;
            pending.push((sim.submit(f, Request::Read { start: key, end: None, limit: 1, ts: Some(at) }), "follower"));
        }
        i += 1;
        let before = sim.now;
        sim.run_for(step);
        if acked.is_none()
            && let Some(r) = sim.replies.remove(&w)
        {
            let Response::Written { ts } = r else { panic!("the write: {r:?}") };
            acked = Some(ts);
        }
        pending.retain(|(id, kind)| {
            let Some(r) = sim.replies.remove(id) else { return true };
            let new = match r {
                Response::ReadAt { rows, .. } | Response::Rows { rows, .. } => rows.iter().any(|(_, v)| v == b"new"),
                Response::Value { value, .. } | Response::TxnValue { value, .. } => value.as_deref() == Some(b"new"),
                _ => false,
            };
            if new {
                seen.push((kind, before));
            }
            false
        });
    }
    let s = acked.expect("the write is acknowledged");
    assert!(!seen.is_empty(), "some reader saw the write after its commit wait");
    let early: Vec<String> =
        seen.iter().filter(|(_, t)| *t <= s).map(|(kind, t)| format!("{kind} at true time {t}")).collect();
    assert!(early.is_empty(), "readers saw the write at {s} before true time passed it: {early:?}");
}

#[test]
fn a_read_far_in_the_future_is_refused_and_leaves_the_leaders_clock_alone() {
    // A snapshot in the future (`AS OF SYSTEM TIME '<now + 8 s>'`) used to be served at once by
    // raising the leader's clock to it: every later write to the range then waited out 8 s of
    // commit wait. It is refused, saying why; a timestamp only a little ahead is served.
    let mut sim = three_nodes(82, Duration::from_millis(4));
    put(&mut sim, "k", "1");
    sim.run_for(Duration::from_millis(500));
    let l = leader_of(&mut sim, b"k");
    let f = other_than(&sim, l);
    let far = sim.tt(l).latest.saturating_add(Duration::from_secs(8));
    let read = |ts| Request::Read { start: b"k".to_vec(), end: None, limit: 1, ts: Some(ts) };
    for node in [l, f] {
        match sim.call(node, read(far), Duration::from_secs(2)) {
            Some(Response::Error(ApiError::Invalid(m))) => assert!(m.contains("future"), "{m}"),
            // A follower sends the client to the leader (which refuses, above) …
            Some(Response::Error(ApiError::NotLeader { .. })) if node == f => {}
            other => panic!("a read 8 s ahead at {node}: {other:?}"),
        }
    }
    sim.run_for(Duration::from_millis(500)); // … and must not have the leader close `far`
    let before = sim.tt(l).latest;
    let w = written(&mut sim, "k", "2");
    assert!(w < before.saturating_add(Duration::from_secs(1)), "the write took {w}, pushed towards {far}");
    // 300 ms ahead: served once the leader's clock is there, without pushing it further.
    let near = sim.tt(l).latest.saturating_add(Duration::from_millis(300));
    match sim.call(l, read(near), Duration::from_secs(2)) {
        Some(Response::ReadAt { rows, read_ts, .. }) => {
            assert_eq!(read_ts, near);
            assert_eq!(rows, vec![(b"k".to_vec(), b"2".to_vec())]);
        }
        other => panic!("a read 300 ms ahead: {other:?}"),
    }
}

#[test]
fn a_leaders_read_binds_later_writes_across_a_backward_clock_step() {
    // Spanner §4.1.3: once a leader served a read at s, no later write may take a timestamp
    // ≤ s. TT.now().latest is not monotonic: a clock may step back by up to 2ε within its
    // bound. A read at s = latest must raise the leader's clock like a read in the future does.
    let mut sim = three_nodes(83, Duration::from_millis(50));
    put(&mut sim, "k", "old");
    let l = leader_of(&mut sim, b"k");
    set_offset(&mut sim, l, 45_000_000);
    sim.run_for(Duration::from_millis(100));
    let (v, s) = read_at(&mut sim, "k", None);
    assert_eq!(v.as_deref(), Some("old"));
    set_offset(&mut sim, l, -45_000_000);
    write_after_read(&mut sim, "k", (s, "old"), "new", "after a backward clock step");
}

#[test]
fn a_read_before_a_leadership_transfer_binds_the_new_leaders_writes() {
    // Spanner §4.1.1: a leader abdicates only once TT.after(s_max), s_max covering every
    // timestamp it served reads at, not only the writes it assigned.
    let mut sim = three_nodes(84, Duration::from_millis(50));
    put(&mut sim, "k", "old");
    let a = leader_of(&mut sim, b"k");
    let b = other_than(&sim, a);
    set_offset(&mut sim, a, 45_000_000);
    set_offset(&mut sim, b, -45_000_000);
    sim.run_for(Duration::from_millis(100));
    let (v, s) = read_at(&mut sim, "k", None);
    assert_eq!(v.as_deref(), Some("old"));
    transfer(&mut sim, "k", b);
    write_after_read(&mut sim, "k", (s, "old"), "new", "the new leader");
}

#[test]
fn a_read_before_a_split_binds_the_right_halfs_writes() {
    // The right half of a split is a new Paxos group with a clock of its own: it must start
    // above every read the whole range's leader served for its keys (here one a little in the
    // future, as a read-only transaction's later ranges are read), on its leader and on the
    // replica the leadership moves to.
    let mut sim = three_nodes(85, Duration::from_millis(50));
    put(&mut sim, "x", "old");
    let a = leader_of(&mut sim, b"x");
    let b = other_than(&sim, a);
    set_offset(&mut sim, b, -45_000_000);
    sim.run_for(Duration::from_millis(100));
    let ahead = sim.tt(a).latest.saturating_add(Duration::from_millis(80));
    let (v, s) = read_at(&mut sim, "x", Some(ahead));
    assert_eq!((v.as_deref(), s), (Some("old"), ahead));
    split(&mut sim, "m");
    write_after_read(&mut sim, "x", (s, "old"), "new", "the right half's leader");
    // Again, with the right half handed to a node whose clock is behind.
    let ahead = sim.tt(a).latest.saturating_add(Duration::from_millis(80));
    let (_, s2) = read_at(&mut sim, "x", Some(ahead));
    split(&mut sim, "t");
    transfer(&mut sim, "x", b);
    write_after_read(&mut sim, "x", (s2, "new"), "newer", "the right half's next leader");
}

#[test]
fn a_read_before_a_merge_binds_the_merged_ranges_writes() {
    // After a merge the left range serves the right range's keys: its clock must start above
    // every read the right range's leader served, though another node led it.
    let mut sim = three_nodes(86, Duration::from_millis(50));
    split(&mut sim, "m");
    put(&mut sim, "x", "old");
    let a = leader_of(&mut sim, b"a");
    let r = other_than(&sim, a);
    if leader_of(&mut sim, b"x") != r {
        transfer(&mut sim, "x", r);
    }
    set_offset(&mut sim, r, 45_000_000);
    set_offset(&mut sim, a, -45_000_000);
    sim.run_for(Duration::from_millis(100));
    let (v, s) = read_at(&mut sim, "x", None);
    assert_eq!(v.as_deref(), Some("old"));
    let left = ranges(&mut sim).into_iter().find(|d| d.contains(b"a")).expect("left range").id;
    match route(&mut sim, b"a", Request::Merge { group: left }) {
        Response::Done { .. } => {}
        other => panic!("merge: {other:?}"),
    }
    write_after_read(&mut sim, "x", (s, "old"), "new", "the merged range");
    assert_eq!(get(&mut sim, "x").as_deref(), Some("new"));
}

fn split(sim: &mut ClusterSim, at: &str) {
    match route(sim, at.as_bytes(), Request::Split { key: at.as_bytes().to_vec() }) {
        Response::Done { .. } => {}
        other => panic!("split at {at}: {other:?}"),
    }
    // Until the meta range indexes the new range (clients route by it).
    for _ in 0..50 {
        sim.run_for(Duration::from_millis(100));
        if ranges(sim).iter().any(|d| d.start == at.as_bytes()) {
            return;
        }
    }
    panic!("the range starting at {at} was never indexed: {:#?}", ranges(sim));
}

fn group_of(sim: &mut ClusterSim, key: &str) -> meridian_shard::GroupId {
    ranges(sim).into_iter().find(|d| d.contains(key.as_bytes())).expect("a range holds the key").id
}

#[test]
fn a_split_keeps_a_prepared_transactions_read_locks() {
    // Spanner §4.2.1: a prepared transaction keeps every lock until it is resolved, read locks
    // included. A split used to check only a prepared transaction's writes: the right half
    // started with no prepared record and an empty lock table, so a writer of a key T had read
    // committed under T, below T's commit timestamp — T's read was no longer true at its own
    // timestamp.
    use crate::node::api::CommitRole;
    let mut sim = three_nodes(87, Duration::from_millis(4));
    split(&mut sim, "m");
    put(&mut sim, "x", "old");
    let (coordinator, participant) = (group_of(&mut sim, "a"), group_of(&mut sim, "p"));
    let t = txn(20, 20);
    let Response::TxnValue { epoch, .. } = txn_call(&mut sim, "x", Request::TxnGet { txn: t, key: b"x".to_vec() })
    else {
        panic!("T reads x")
    };
    let prep = commit_req(t, &["x"], Some(epoch), &[("p", "t")], CommitRole::Prepare { coordinator });
    let Response::Prepared { .. } = txn_call(&mut sim, "p", prep) else { panic!("prepare") };
    // Split between T's write (p) and its read (x); refusing is fine, losing the lock is not.
    let _ = route(&mut sim, b"t", Request::Split { key: b"t".to_vec() });
    sim.run_for(Duration::from_millis(300));
    let xl = leader_of(&mut sim, b"x");
    let w = sim.submit(xl, write("x", "w"));
    sim.run_for(Duration::from_millis(300));
    let coord = commit_req(
        t,
        &[],
        None,
        &[("a", "t")],
        CommitRole::Coordinate { participants: vec![participant], first_sent: None },
    );
    let Response::Written { ts: s } = txn_call(&mut sim, "a", coord) else { panic!("T commits") };
    match sim.reply(w, Duration::from_secs(5)) {
        Some(Response::Written { ts }) => assert!(ts > s, "x was written at {ts}, under T's read lock (T at {s})"),
        // The write was sent to a replica that no longer leads x (the split was refused): fine.
        Some(Response::Error(_)) | None => {}
        Some(other) => panic!("the write: {other:?}"),
    }
    assert_eq!(read_at(&mut sim, "x", Some(s)).0.as_deref(), Some("old"), "x at T's timestamp is what T read");
}

#[test]
fn a_prepare_routed_by_a_merged_away_range_is_refused() {
    // A client groups a commit into parts by its cached ranges. After B absorbed C, the part
    // for C reaches B's leader, where the transaction is already prepared (B's part): it was
    // answered "prepared" from B's record without C's writes, which were then lost although
    // the transaction committed. A part names the range it was built for.
    use crate::node::api::CommitRole;
    let mut sim = three_nodes(88, Duration::from_millis(4));
    split(&mut sim, "m");
    split(&mut sim, "t");
    let (a, b, c) = (group_of(&mut sim, "a"), group_of(&mut sim, "p"), group_of(&mut sim, "x"));
    let t = txn(21, 21);
    let part = |key: &str, range| {
        let mut r = commit_req(t, &[], None, &[(key, "t")], CommitRole::Prepare { coordinator: a });
        if let Request::TxnCommit { range: r, .. } = &mut r {
            *r = Some(range);
        }
        r
    };
    let Response::Prepared { ts: p } = txn_call(&mut sim, "p", part("p", b)) else { panic!("prepare at B") };
    match route(&mut sim, b"m", Request::Merge { group: b }) {
        Response::Done { .. } => {}
        other => panic!("merge B and C: {other:?}"),
    }
    sim.run_for(Duration::from_millis(500));
    let r = txn_call(&mut sim, "x", part("x", c));
    assert!(
        matches!(r, Response::Error(ApiError::RangeChanged { .. } | ApiError::Aborted(_))),
        "the part for {c}, now merged into {b}: {r:?}"
    );
    let _ = p;
}

#[test]
fn a_commit_repeated_after_its_decision_was_forgotten_is_of_unknown_outcome() {
    // A coordinator forgets a decision DECISION_REMEMBERED after every participant learned it.
    // A client that resends the commit after that (it was paused between sending and hearing
    // the answer) used to have it decided afresh: here T's read lock is gone, so the fresh
    // decision was "aborted" for a committed transaction, and its client would run it again.
    use super::twopc::DECISION_REMEMBERED;
    use crate::node::api::CommitRole;
    let mut sim = ClusterSim::new(89, NodeOptions { rebalance: false, ..opts() });
    let (_, right, _) = super::tests::two_ranges_apart(&mut sim);
    put(&mut sim, "a", "1");
    let t = txn(22, 22);
    let Response::TxnValue { epoch, .. } = txn_call(&mut sim, "a", Request::TxnGet { txn: t, key: b"a".to_vec() })
    else {
        panic!("T reads a")
    };
    let prep = commit_req(t, &[], None, &[("z", "t")], CommitRole::Prepare { coordinator: group_of(&mut sim, "a") });
    let Response::Prepared { .. } = txn_call(&mut sim, "z", prep) else { panic!("prepare") };
    let first_sent = Some(sim.tt(NodeId(1)).latest);
    let coord = commit_req(
        t,
        &["a"],
        Some(epoch),
        &[("a", "2")],
        CommitRole::Coordinate { participants: vec![right], first_sent },
    );
    let Response::Written { ts: s } = txn_call(&mut sim, "a", coord.clone()) else { panic!("T commits") };
    // Within the window a repeat meets the decision.
    sim.run_for(Duration::from_secs(30));
    assert_eq!(txn_call(&mut sim, "a", coord.clone()), Response::Written { ts: s });
    sim.run_for(DECISION_REMEMBERED + Duration::from_secs(10));
    let r = txn_call(&mut sim, "a", coord);
    assert!(matches!(r, Response::Error(ApiError::Ambiguous(_))), "a commit repeated after 160 s: {r:?}");
    assert_eq!(get(&mut sim, "a").as_deref(), Some("2"));
    assert_eq!(get(&mut sim, "z").as_deref(), Some("t"));
}

#[test]
fn a_coordinator_commits_above_every_prepare_it_heard_whatever_the_client_says() {
    // Spanner §4.2.1: s ≥ every prepare timestamp. The coordinator used to take the largest
    // prepare timestamp from the client's word; a client that sent a low one (or named fewer
    // participants than it prepared at) made it commit below a prepare timestamp, and the
    // participant applied there (or its leader panicked on the check). Participants now report
    // their prepare timestamps to the coordinator themselves, and one the client did not name
    // joins the decision.
    use crate::node::api::CommitRole;
    let mut sim = three_nodes(90, Duration::from_millis(50));
    split(&mut sim, "m");
    split(&mut sim, "t");
    let (a, b, c) = (group_of(&mut sim, "a"), group_of(&mut sim, "p"), group_of(&mut sim, "x"));
    let nodes: Vec<NodeId> = sim.nodes.keys().copied().collect();
    for (key, node) in [("a", nodes[0]), ("p", nodes[1]), ("x", nodes[2])] {
        if leader_of(&mut sim, key.as_bytes()) != node {
            transfer(&mut sim, key, node);
        }
    }
    // The coordinator's clock behind, the unnamed participant's ahead.
    set_offset(&mut sim, nodes[0], -45_000_000);
    set_offset(&mut sim, nodes[2], 45_000_000);
    sim.run_for(Duration::from_millis(100));
    let t = txn(23, 23);
    let prep = |k: &str| commit_req(t, &[], None, &[(k, "t")], CommitRole::Prepare { coordinator: a });
    let Response::Prepared { ts: pb } = txn_call(&mut sim, "p", prep("p")) else { panic!("prepare at B") };
    let Response::Prepared { ts: pc } = txn_call(&mut sim, "x", prep("x")) else { panic!("prepare at C") };
    sim.run_for(Duration::from_millis(100)); // both reports reach the coordinator
    // The client names B only, and reports no prepare timestamp at all.
    let coord =
        commit_req(t, &[], None, &[("a", "t")], CommitRole::Coordinate { participants: vec![b], first_sent: None });
    let Response::Written { ts: s } = txn_call(&mut sim, "a", coord) else { panic!("T commits") };
    assert!(s >= pb && s >= pc, "T committed at {s}, below a prepare timestamp ({pb} at {b}, {pc} at {c})");
    sim.run_for(Duration::from_secs(1));
    for k in ["a", "p", "x"] {
        assert_eq!(read_at(&mut sim, k, Some(s)).0.as_deref(), Some("t"), "{k} at T's timestamp");
        assert_eq!(read_at(&mut sim, k, Some(s.prev())).0, None, "{k} just below T's timestamp");
    }
}

#[test]
fn a_prepare_whose_commit_never_comes_is_aborted_by_its_coordinator() {
    // The client prepared at B and vanished before its commit reached the coordinator A. B's
    // prepared write holds back every read of it at a later timestamp (Spanner §4.1.3), so the
    // coordinator, which heard B's report, logs an abort COMMIT_AFTER_VOTE_MAX after it instead
    // of waiting for the idle timeout of the transaction's locks there.
    use crate::node::api::CommitRole;
    use crate::node::txn::COMMIT_AFTER_VOTE_MAX;
    let mut sim = three_nodes(91, Duration::from_millis(2));
    split(&mut sim, "m");
    let a = group_of(&mut sim, "a");
    let t = txn(24, 24);
    // T holds a lock at A, so A counts it alive and a participant's plain inquiry waits.
    let read = txn_call(&mut sim, "a", Request::TxnGet { txn: t, key: b"a".to_vec() });
    assert!(matches!(read, Response::TxnValue { .. }), "T reads a: {read:?}");
    let prep = commit_req(t, &[], None, &[("p", "t")], CommitRole::Prepare { coordinator: a });
    let Response::Prepared { ts: p } = txn_call(&mut sim, "p", prep) else { panic!("prepare at B") };
    sim.run_for(COMMIT_AFTER_VOTE_MAX + Duration::from_secs(1));
    // A read above the prepare timestamp is answered at once: B's prepare was resolved as
    // aborted (before, the read waited for the transaction's locks to expire at A).
    let after = p.saturating_add(Duration::from_millis(1));
    let leader = leader_of(&mut sim, b"p");
    let read = Request::Read { start: b"p".to_vec(), end: None, limit: 1, ts: Some(after) };
    let r = sim.call(leader, read, Duration::from_millis(500));
    assert!(
        matches!(&r, Some(Response::ReadAt { rows, .. }) if rows.is_empty()),
        "a read of p at {after} is answered, p unwritten: {r:?}"
    );
    // And the client's late commit finds the abort.
    let coord = commit_req(
        t,
        &[],
        None,
        &[("a", "t")],
        CommitRole::Coordinate { participants: vec![group_of(&mut sim, "p")], first_sent: None },
    );
    let r = txn_call(&mut sim, "a", coord);
    assert!(matches!(r, Response::Error(ApiError::Aborted(_))), "a late commit is refused as aborted: {r:?}");
}
