//! Mapping between the node core's API types and the protobuf wire types.

use meridian_proto::v1 as pb;
use meridian_shard::GroupId;
use meridian_shard::paxos::NodeId;
use meridian_shard::range::{self, RangeDescriptor};
use meridian_truetime::Timestamp;

use crate::node::{ApiError, GroupStatus, NodeStatus};

/// The wire form of an API error.
pub fn error_to_pb(e: &ApiError) -> pb::Error {
    use pb::error::Kind;
    let (kind, group, leader, desc): (Kind, GroupId, Option<NodeId>, Option<&RangeDescriptor>) = match e {
        ApiError::NotLeader { group, leader, desc } => (Kind::NotLeader, *group, *leader, desc.as_deref()),
        ApiError::KeyOutOfRange { desc, .. } => (Kind::KeyOutOfRange, GroupId(0), None, desc.as_deref()),
        ApiError::RangeNotFound(g) => (Kind::RangeNotFound, *g, None, None),
        ApiError::Unavailable(_) => (Kind::Unavailable, GroupId(0), None, None),
        ApiError::Ambiguous(_) => (Kind::Ambiguous, GroupId(0), None, None),
        ApiError::Invalid(_) => (Kind::Invalid, GroupId(0), None, None),
        // The caller's deadline passed; gRPC handlers answer it as the DEADLINE_EXCEEDED status.
        ApiError::Timeout(_) | ApiError::DeadlineExceeded(_) => (Kind::Timeout, GroupId(0), None, None),
        ApiError::Aborted(_) => (Kind::Aborted, GroupId(0), None, None),
        // Aborted, with the range as it is now so the client's next attempt routes by it.
        ApiError::RangeChanged { desc, .. } => (Kind::Aborted, GroupId(0), None, desc.as_deref()),
        // Unavailable (retry), naming the range; `replicas`/`replicas_reachable` below say
        // whether a majority answers.
        ApiError::NoLeader { group, .. } => (Kind::Unavailable, *group, None, None),
    };
    let (replicas, replicas_reachable) = match e {
        ApiError::NoLeader { replicas, reachable, .. } => (Some(*replicas), Some(*reachable)),
        _ => (None, None),
    };
    pb::Error {
        kind: kind as i32,
        message: e.to_string(),
        group: group.0,
        leader: leader.map(|l| l.0),
        range: desc.map(Into::into),
        replicas,
        replicas_reachable,
    }
}

/// The wire form of a status.
pub fn status_to_pb(s: &NodeStatus) -> pb::StatusResponse {
    pb::StatusResponse {
        node_id: s.node.0,
        cluster_id: s.cluster_id.clone(),
        nodes: s.nodes.iter().map(Into::into).collect(),
        groups: s.groups.iter().map(group_to_pb).collect(),
        now_earliest: s.now_earliest.nanos(),
        now_latest: s.now_latest.nanos(),
        error: None,
        ready: s.readiness.ready,
        readiness: s.readiness.summary.clone(),
        problems: s.readiness.problems.clone(),
        warnings: s.readiness.warnings.clone(),
        liveness: s
            .liveness
            .iter()
            .map(|l| pb::NodeLiveness {
                node_id: l.node.0,
                up: l.up,
                last_heard: l.last_heard.map_or(0, Timestamp::nanos),
                why: l.why.clone(),
            })
            .collect(),
    }
}

fn group_to_pb(g: &GroupStatus) -> pb::GroupStatus {
    pb::GroupStatus {
        range: Some((&g.desc).into()),
        role: g.role.clone(),
        ballot: g.ballot.clone(),
        leader: g.leader.map(|l| l.0),
        lease_end: g.lease_end.map_or(0, Timestamp::nanos),
        chosen: g.chosen.0,
        applied: g.applied.0,
        last_write_ts: g.last_write_ts.nanos(),
        servable: g.health.servable,
        health: g.health.detail.clone(),
        replicas_reachable: u32::try_from(g.health.reachable).expect("a range has at most a handful of replicas"),
    }
}

/// The wire form of routing information.
pub fn ranges_to_pb(
    descs: &[RangeDescriptor],
    nodes: &[range::NodeInfo],
    leaders: &[(GroupId, range::LeaderHint)],
) -> pb::LookupRangeResponse {
    pb::LookupRangeResponse {
        ranges: descs.iter().map(Into::into).collect(),
        nodes: nodes.iter().map(Into::into).collect(),
        leaders: leaders.iter().map(|(g, h)| range::leader_to_pb(*g, h)).collect(),
        error: None,
    }
}
