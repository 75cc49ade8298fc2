//! Fault injection for chaos testing (`meridian start --fault-injection`, `meridian chaos`).
//!
//! Two faults, both in the shell so the node core sees them only as the world it lives in:
//!
//! - **Partitions.** The transport drops peer batches to a blocked node (the peer task counts
//!   the send as failed, exactly as for an unreachable peer) and refuses batches from one
//!   (`UNAVAILABLE`). Either side alone cuts the link both ways, so a partition holds even when
//!   the other side of it is paused and could not be told.
//! - **Clock offsets.** The TrueTime source the shell feeds the core is offset from the
//!   machine's clock ([`SimTrueTime::set_offset_ns`]). Every node of a loopback cluster shares
//!   one machine clock, so an offset is exactly that node's error: within ε it is the clock
//!   trouble TrueTime is designed for; beyond ε it breaks TrueTime's contract on purpose.
//!
//! A node started without the flag serves the service but refuses every call, so a chaos tool
//! pointed at a production node fails loudly instead of silently partitioning it. Faults are
//! in memory only: a restarted node comes back healed.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use meridian_proto::v1 as pb;
use meridian_shard::paxos::NodeId;
use meridian_truetime::SimTrueTime;
use tonic::{Request, Response, Status};

/// Most peers one partition request may name.
const BLOCKED_NODES_MAX: usize = 1_024;

/// The faults a node currently suffers. Shared by the peer senders, the peer service and the
/// fault-injection service.
#[derive(Debug)]
pub(crate) struct Faults {
    enabled: bool,
    blocked: Mutex<BTreeSet<NodeId>>,
}

impl Faults {
    /// No faults; `enabled` says whether the fault-injection service may set any.
    pub(crate) fn new(enabled: bool) -> Faults {
        Faults { enabled, blocked: Mutex::new(BTreeSet::new()) }
    }

    /// Whether traffic to and from `peer` is dropped.
    pub(crate) fn blocks(&self, peer: NodeId) -> bool {
        self.enabled && self.blocked.lock().unwrap_or_else(|p| p.into_inner()).contains(&peer)
    }

    fn set_blocked(&self, peers: BTreeSet<NodeId>) {
        *self.blocked.lock().unwrap_or_else(|p| p.into_inner()) = peers;
    }
}

/// The `FaultInjection` gRPC service of one node.
#[derive(Clone)]
pub(super) struct FaultService {
    faults: Arc<Faults>,
    tt: Arc<SimTrueTime>,
    node: NodeId,
}

impl FaultService {
    pub(super) fn new(faults: Arc<Faults>, tt: Arc<SimTrueTime>, node: NodeId) -> FaultService {
        FaultService { faults, tt, node }
    }

    pub(super) fn service(&self) -> pb::fault_injection_server::FaultInjectionServer<FaultService> {
        pb::fault_injection_server::FaultInjectionServer::new(self.clone())
    }

    fn check_enabled(&self) -> Result<(), Status> {
        if self.faults.enabled {
            Ok(())
        } else {
            Err(Status::failed_precondition(format!(
                "node {} refuses fault injection: it was not started with `meridian start --fault-injection`",
                self.node
            )))
        }
    }
}

#[tonic::async_trait]
impl pb::fault_injection_server::FaultInjection for FaultService {
    async fn set_partition(
        &self,
        req: Request<pb::SetPartitionRequest>,
    ) -> Result<Response<pb::FaultResponse>, Status> {
        self.check_enabled()?;
        let r = req.into_inner();
        if r.blocked_nodes.len() > BLOCKED_NODES_MAX {
            return Err(Status::invalid_argument(format!(
                "{} blocked nodes named; at most {BLOCKED_NODES_MAX}",
                r.blocked_nodes.len()
            )));
        }
        let peers: BTreeSet<NodeId> = r.blocked_nodes.into_iter().map(NodeId).filter(|n| *n != self.node).collect();
        let detail = if peers.is_empty() {
            "partition healed: talking to every peer".to_string()
        } else {
            let names: Vec<String> = peers.iter().map(ToString::to_string).collect();
            format!("dropping peer traffic to and from {}", names.join(", "))
        };
        tracing::warn!(node = %self.node, "fault injection: {detail}");
        self.faults.set_blocked(peers);
        Ok(Response::new(pb::FaultResponse { detail }))
    }

    async fn set_clock_offset(
        &self,
        req: Request<pb::SetClockOffsetRequest>,
    ) -> Result<Response<pb::FaultResponse>, Status> {
        self.check_enabled()?;
        let offset_ns = req.into_inner().offset_ns;
        self.tt.set_offset_ns(offset_ns);
        let epsilon = self.tt.epsilon_now();
        let beyond = u128::from(offset_ns.unsigned_abs()) > epsilon.as_nanos();
        let detail = format!(
            "clock offset {:+.3} ms, ε {:.3} ms{}",
            offset_ns as f64 / 1e6,
            epsilon.as_secs_f64() * 1e3,
            if beyond { ": BEYOND ε, TrueTime no longer holds (unsafe)" } else { "" }
        );
        tracing::warn!(node = %self.node, "fault injection: {detail}");
        Ok(Response::new(pb::FaultResponse { detail }))
    }
}
