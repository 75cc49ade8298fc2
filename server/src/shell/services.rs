//! The gRPC services: thin translations between protobuf and the node core's requests.
//!
//! Every request about a transaction runs in an info-level span `txn{id=… node=… op=…}` (`op`:
//! `read`, `scan`, `commit`, `prepare`, `coordinate`, `abort`, `keepalive`) and logs its answer
//! at debug level, so a node's log lines for a transaction carry its id; the core's 2PC events
//! (`txn_id=…`) follow the decision on to the participants.

use std::sync::Arc;

use meridian_proto::v1 as pb;
use meridian_shard::GroupId;
use meridian_shard::paxos::NodeId;
use meridian_shard::range::META_GROUP;
use meridian_truetime::{SimTrueTime, Timestamp};
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};
use tracing::Instrument as _;

use super::convert::{error_to_pb, ranges_to_pb, status_to_pb};
use super::fault::Faults;
use super::{CoreHandle, GRPC_MESSAGE_MAX, PEER_FORMAT};
use crate::node::api::CommitRole;
use crate::node::{ApiError, PeerMsg, Request, Response};

/// The services of one node.
#[derive(Clone)]
pub(super) struct Services {
    core: CoreHandle,
    #[allow(dead_code)]
    tt: Arc<SimTrueTime>,
    faults: Arc<Faults>,
}

type R<T> = Result<GrpcResponse<T>, Status>;

fn unexpected(r: &Response) -> ApiError {
    ApiError::Unavailable(format!("unexpected answer from the node: {r:?}"))
}

impl Services {
    pub(super) fn new(core: CoreHandle, tt: Arc<SimTrueTime>, faults: Arc<Faults>) -> Self {
        Services { core, tt, faults }
    }

    pub(super) fn node_service(&self) -> pb::node_server::NodeServer<Services> {
        pb::node_server::NodeServer::new(self.clone())
            .max_decoding_message_size(GRPC_MESSAGE_MAX)
            .max_encoding_message_size(GRPC_MESSAGE_MAX)
    }

    pub(super) fn kv_service(&self) -> pb::kv_server::KvServer<Services> {
        pb::kv_server::KvServer::new(self.clone())
            .max_decoding_message_size(GRPC_MESSAGE_MAX)
            .max_encoding_message_size(GRPC_MESSAGE_MAX)
    }

    pub(super) fn admin_service(&self) -> pb::admin_server::AdminServer<Services> {
        pb::admin_server::AdminServer::new(self.clone())
            .max_decoding_message_size(GRPC_MESSAGE_MAX)
            .max_encoding_message_size(GRPC_MESSAGE_MAX)
    }

    fn check_cluster(&self, from: &Option<pb::Sender>) -> Result<(), Status> {
        match from {
            Some(s) if !s.cluster_id.is_empty() && s.cluster_id != self.core.cluster_id => {
                Err(Status::failed_precondition(format!(
                    "node {} belongs to cluster {}, but this is node {} of cluster {}; a node cannot join another cluster",
                    s.node_id, s.cluster_id, self.core.node, self.core.cluster_id
                )))
            }
            _ => Ok(()),
        }
    }

    async fn admin(&self, request: Request) -> pb::AdminResponse {
        match self.core.call(request).await {
            Response::Done { detail } => pb::AdminResponse { detail, error: None },
            Response::Error(e) => pb::AdminResponse { detail: String::new(), error: Some(error_to_pb(&e)) },
            other => pb::AdminResponse { detail: String::new(), error: Some(error_to_pb(&unexpected(&other))) },
        }
    }
}

#[tonic::async_trait]
impl pb::node_server::Node for Services {
    async fn ping(&self, req: GrpcRequest<pb::PingRequest>) -> R<pb::PingResponse> {
        self.check_cluster(&req.get_ref().from)?;
        Ok(GrpcResponse::new(pb::PingResponse {
            cluster_id: self.core.cluster_id.clone(),
            node_id: self.core.node.0,
            version: env!("CARGO_PKG_VERSION").to_string(),
        }))
    }

    async fn deliver(&self, req: GrpcRequest<pb::PeerBatch>) -> R<pb::PeerAck> {
        let batch = req.into_inner();
        self.check_cluster(&batch.from)?;
        let Some(from) = batch.from else {
            return Err(Status::invalid_argument("peer batch without a sender"));
        };
        if self.faults.blocks(NodeId(from.node_id)) {
            return Err(Status::unavailable(format!(
                "node {} is partitioned from node {} (fault injection)",
                self.core.node,
                NodeId(from.node_id)
            )));
        }
        if batch.format != PEER_FORMAT {
            return Err(Status::failed_precondition(format!(
                "peer batch format {} is not supported (this node speaks {PEER_FORMAT}); upgrade the older node",
                batch.format
            )));
        }
        let msgs: Vec<PeerMsg> = postcard::from_bytes(&batch.payload).map_err(|e| {
            Status::invalid_argument(format!("undecodable peer batch ({} bytes): {e}", batch.payload.len()))
        })?;
        if !self.core.deliver(NodeId(from.node_id), msgs) {
            return Err(Status::resource_exhausted("node overloaded: dropped the batch"));
        }
        Ok(GrpcResponse::new(pb::PeerAck {}))
    }
}

#[tonic::async_trait]
impl pb::kv_server::Kv for Services {
    async fn get(&self, req: GrpcRequest<pb::GetRequest>) -> R<pb::GetResponse> {
        let key = req.into_inner().key;
        Ok(GrpcResponse::new(match self.core.call(Request::Get { key }).await {
            Response::Value { value, ts } => pb::GetResponse { value, ts: ts.nanos(), error: None },
            Response::Error(e) => pb::GetResponse { value: None, ts: 0, error: Some(error_to_pb(&e)) },
            other => pb::GetResponse { value: None, ts: 0, error: Some(error_to_pb(&unexpected(&other))) },
        }))
    }

    async fn scan(&self, req: GrpcRequest<pb::ScanRequest>) -> R<pb::ScanResponse> {
        let r = req.into_inner();
        Ok(GrpcResponse::new(
            match self.core.call(Request::Scan { start: r.start, end: r.end, limit: r.limit }).await {
                Response::Rows { rows, desc, truncated } => pb::ScanResponse {
                    rows: rows.into_iter().map(|(key, value)| pb::KeyValue { key, value }).collect(),
                    range: Some((&desc).into()),
                    truncated,
                    error: None,
                },
                Response::Error(e) => pb::ScanResponse { error: Some(error_to_pb(&e)), ..Default::default() },
                other => pb::ScanResponse { error: Some(error_to_pb(&unexpected(&other))), ..Default::default() },
            },
        ))
    }

    async fn write(&self, req: GrpcRequest<pb::WriteRequest>) -> R<pb::WriteResponse> {
        let writes = req.into_inner().mutations.into_iter().map(|m| (m.key, m.value)).collect();
        Ok(GrpcResponse::new(match self.core.call(Request::Write { writes }).await {
            Response::Written { ts } => pb::WriteResponse { ts: ts.nanos(), error: None },
            Response::Error(e) => pb::WriteResponse { ts: 0, error: Some(error_to_pb(&e)) },
            other => pb::WriteResponse { ts: 0, error: Some(error_to_pb(&unexpected(&other))) },
        }))
    }

    async fn txn_get(&self, req: GrpcRequest<pb::TxnGetRequest>) -> R<pb::TxnGetResponse> {
        let r = req.into_inner();
        let txn = match txn_from_pb(r.txn) {
            Ok(t) => t,
            Err(e) => {
                return Ok(GrpcResponse::new(pb::TxnGetResponse {
                    error: Some(error_to_pb(&e)),
                    ..Default::default()
                }));
            }
        };
        Ok(GrpcResponse::new(match self.traced(txn.id, "read", Request::TxnGet { txn, key: r.key }).await {
            Response::TxnValue { value, ts, epoch } => pb::TxnGetResponse { value, ts: ts.nanos(), epoch, error: None },
            Response::Error(e) => pb::TxnGetResponse { error: Some(error_to_pb(&e)), ..Default::default() },
            other => pb::TxnGetResponse { error: Some(error_to_pb(&unexpected(&other))), ..Default::default() },
        }))
    }

    async fn txn_scan(&self, req: GrpcRequest<pb::TxnScanRequest>) -> R<pb::TxnScanResponse> {
        let r = req.into_inner();
        let txn = match txn_from_pb(r.txn) {
            Ok(t) => t,
            Err(e) => {
                return Ok(GrpcResponse::new(pb::TxnScanResponse {
                    error: Some(error_to_pb(&e)),
                    ..Default::default()
                }));
            }
        };
        let request = Request::TxnScan { txn, start: r.start, end: r.end, limit: r.limit };
        Ok(GrpcResponse::new(match self.traced(txn.id, "scan", request).await {
            Response::TxnRows { rows, desc, truncated, epoch } => pb::TxnScanResponse {
                rows: rows.into_iter().map(|(key, value)| pb::KeyValue { key, value }).collect(),
                range: Some((&desc).into()),
                truncated,
                epoch,
                error: None,
            },
            Response::Error(e) => pb::TxnScanResponse { error: Some(error_to_pb(&e)), ..Default::default() },
            other => pb::TxnScanResponse { error: Some(error_to_pb(&unexpected(&other))), ..Default::default() },
        }))
    }

    async fn txn_commit(&self, req: GrpcRequest<pb::TxnCommitRequest>) -> R<pb::TxnCommitResponse> {
        let r = req.into_inner();
        let txn = match txn_from_pb(r.txn) {
            Ok(t) => t,
            Err(e) => return Ok(GrpcResponse::new(pb::TxnCommitResponse { ts: 0, error: Some(error_to_pb(&e)) })),
        };
        let writes = r.mutations.into_iter().map(|m| (m.key, m.value)).collect();
        let role = match (r.coordinator, r.participants.is_empty()) {
            (None, true) => CommitRole::Single,
            (Some(c), true) => CommitRole::Prepare { coordinator: GroupId(c) },
            (None, false) => CommitRole::Coordinate {
                participants: r.participants.into_iter().map(GroupId).collect(),
                prepare_ts_max: Timestamp::from_nanos(r.prepare_ts_max),
            },
            (Some(_), false) => {
                let e = ApiError::Invalid("a commit is either a prepare or a coordinator's commit, not both".into());
                return Ok(GrpcResponse::new(pb::TxnCommitResponse { ts: 0, error: Some(error_to_pb(&e)) }));
            }
        };
        let read_spans = r.read_spans.into_iter().map(|s| (s.start, s.end)).collect();
        let op = match role {
            CommitRole::Single => "commit",
            CommitRole::Prepare { .. } => "prepare",
            CommitRole::Coordinate { .. } => "coordinate",
        };
        let request = Request::TxnCommit { txn, reads: r.reads, read_spans, read_epoch: r.read_epoch, writes, role };
        Ok(GrpcResponse::new(match self.traced(txn.id, op, request).await {
            Response::Written { ts } | Response::Prepared { ts } => {
                pb::TxnCommitResponse { ts: ts.nanos(), error: None }
            }
            Response::Error(e) => pb::TxnCommitResponse { ts: 0, error: Some(error_to_pb(&e)) },
            other => pb::TxnCommitResponse { ts: 0, error: Some(error_to_pb(&unexpected(&other))) },
        }))
    }

    async fn txn_abort(&self, req: GrpcRequest<pb::TxnAbortRequest>) -> R<pb::TxnAbortResponse> {
        Ok(GrpcResponse::new(
            self.txn_in_range(req.into_inner(), "abort", |txn, key| Request::TxnAbort { txn, key }).await,
        ))
    }

    async fn txn_keepalive(&self, req: GrpcRequest<pb::TxnAbortRequest>) -> R<pb::TxnAbortResponse> {
        Ok(GrpcResponse::new(
            self.txn_in_range(req.into_inner(), "keepalive", |txn, key| Request::TxnKeepalive { txn, key }).await,
        ))
    }

    async fn read(&self, req: GrpcRequest<pb::ReadRequest>) -> R<pb::ReadResponse> {
        let r = req.into_inner();
        let request = Request::Read { start: r.start, end: r.end, limit: r.limit, ts: r.ts.map(Timestamp::from_nanos) };
        Ok(GrpcResponse::new(match self.core.call(request).await {
            Response::ReadAt { rows, desc, truncated, read_ts } => pb::ReadResponse {
                rows: rows.into_iter().map(|(key, value)| pb::KeyValue { key, value }).collect(),
                range: Some((&desc).into()),
                truncated,
                read_ts: read_ts.nanos(),
                error: None,
            },
            Response::Error(e) => pb::ReadResponse { error: Some(error_to_pb(&e)), ..Default::default() },
            other => pb::ReadResponse { error: Some(error_to_pb(&unexpected(&other))), ..Default::default() },
        }))
    }

    async fn lookup_range(&self, req: GrpcRequest<pb::LookupRangeRequest>) -> R<pb::LookupRangeResponse> {
        let r = req.into_inner();
        Ok(GrpcResponse::new(match self.core.call(Request::RangeLookup { key: r.key, limit: r.limit.max(1) }).await {
            Response::Ranges { descs, nodes, leaders } => ranges_to_pb(&descs, &nodes, &leaders),
            Response::Error(e) => pb::LookupRangeResponse { error: Some(error_to_pb(&e)), ..Default::default() },
            other => pb::LookupRangeResponse { error: Some(error_to_pb(&unexpected(&other))), ..Default::default() },
        }))
    }
}

impl Services {
    /// Calls the core in a span `txn{id node op}` and logs the answer (debug) inside it.
    async fn traced(&self, id: meridian_txn::TxnId, op: &'static str, request: Request) -> Response {
        let span = tracing::info_span!("txn", id = %id, node = %self.core.node, op = %op);
        async move {
            let r = self.core.call(request).await;
            match &r {
                Response::Error(e) => tracing::debug!(error = %e, "refused"),
                Response::Written { ts } => tracing::debug!(%ts, "answered: committed"),
                Response::Prepared { ts } => tracing::debug!(prepare_ts = %ts, "answered: prepared"),
                Response::TxnValue { epoch, .. } | Response::TxnRows { epoch, .. } => {
                    tracing::debug!(epoch, "answered: read under a shared lock")
                }
                Response::Done { detail } => tracing::debug!(%detail, "answered"),
                _ => tracing::debug!("answered"),
            }
            r
        }
        .instrument(span)
        .await
    }

    /// A request about one transaction in the range holding a key, answered with done or error.
    async fn txn_in_range(
        &self,
        r: pb::TxnAbortRequest,
        op: &'static str,
        make: fn(meridian_txn::TxnMeta, Vec<u8>) -> Request,
    ) -> pb::TxnAbortResponse {
        let txn = match txn_from_pb(r.txn) {
            Ok(t) => t,
            Err(e) => return pb::TxnAbortResponse { error: Some(error_to_pb(&e)) },
        };
        match self.traced(txn.id, op, make(txn, r.key)).await {
            Response::Done { .. } => pb::TxnAbortResponse { error: None },
            Response::Error(e) => pb::TxnAbortResponse { error: Some(error_to_pb(&e)) },
            other => pb::TxnAbortResponse { error: Some(error_to_pb(&unexpected(&other))) },
        }
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for Services {
    async fn status(&self, _: GrpcRequest<pb::StatusRequest>) -> R<pb::StatusResponse> {
        Ok(GrpcResponse::new(match self.core.call(Request::Status).await {
            Response::Status(s) => status_to_pb(&s),
            Response::Error(e) => pb::StatusResponse { error: Some(error_to_pb(&e)), ..Default::default() },
            other => pb::StatusResponse { error: Some(error_to_pb(&unexpected(&other))), ..Default::default() },
        }))
    }

    async fn cluster_view(&self, _: GrpcRequest<pb::ClusterViewRequest>) -> R<pb::LookupRangeResponse> {
        Ok(GrpcResponse::new(match self.core.call(Request::ClusterView).await {
            Response::Ranges { descs, nodes, leaders } => ranges_to_pb(&descs, &nodes, &leaders),
            Response::Error(e) => pb::LookupRangeResponse { error: Some(error_to_pb(&e)), ..Default::default() },
            other => pb::LookupRangeResponse { error: Some(error_to_pb(&unexpected(&other))), ..Default::default() },
        }))
    }

    async fn join(&self, req: GrpcRequest<pb::JoinRequest>) -> R<pb::JoinResponse> {
        let Some(info) = req.into_inner().node else {
            return Err(Status::invalid_argument("join needs the joining node's addresses"));
        };
        if info.addr.is_empty() {
            return Err(Status::invalid_argument("join needs the joining node's gRPC address"));
        }
        let resp = self.core.call(Request::Join { info: info.into() }).await;
        let (node, nodes) = match resp {
            Response::Joined { node, nodes } => (node, nodes),
            Response::Error(e) => {
                return Ok(GrpcResponse::new(pb::JoinResponse { error: Some(error_to_pb(&e)), ..Default::default() }));
            }
            other => {
                return Ok(GrpcResponse::new(pb::JoinResponse {
                    error: Some(error_to_pb(&unexpected(&other))),
                    ..Default::default()
                }));
            }
        };
        // Tell the newcomer where the meta range lives.
        let meta = match self.core.call(Request::ClusterView).await {
            Response::Ranges { descs, .. } => descs.into_iter().find(|d| d.id == META_GROUP),
            _ => None,
        };
        Ok(GrpcResponse::new(pb::JoinResponse {
            node_id: node.0,
            cluster_id: self.core.cluster_id.clone(),
            nodes: nodes.iter().map(Into::into).collect(),
            meta: meta.as_ref().map(Into::into),
            error: None,
        }))
    }

    async fn split(&self, req: GrpcRequest<pb::SplitRequest>) -> R<pb::AdminResponse> {
        Ok(GrpcResponse::new(self.admin(Request::Split { key: req.into_inner().key }).await))
    }

    async fn merge(&self, req: GrpcRequest<pb::MergeRequest>) -> R<pb::AdminResponse> {
        Ok(GrpcResponse::new(self.admin(Request::Merge { group: GroupId(req.into_inner().group) }).await))
    }

    async fn move_replica(&self, req: GrpcRequest<pb::MoveReplicaRequest>) -> R<pb::AdminResponse> {
        let r = req.into_inner();
        Ok(GrpcResponse::new(
            self.admin(Request::MoveReplica {
                group: GroupId(r.group),
                from: NodeId(r.from_node),
                to: NodeId(r.to_node),
            })
            .await,
        ))
    }

    async fn transfer_leader(&self, req: GrpcRequest<pb::TransferLeaderRequest>) -> R<pb::AdminResponse> {
        let r = req.into_inner();
        Ok(GrpcResponse::new(
            self.admin(Request::TransferLeader { group: GroupId(r.group), to: NodeId(r.to_node) }).await,
        ))
    }
}

/// A transaction's identity from the wire; a missing one is a client bug, not a panic.
fn txn_from_pb(t: Option<pb::Txn>) -> Result<meridian_txn::TxnMeta, ApiError> {
    let t = t.ok_or_else(|| ApiError::Invalid("the request names no transaction".into()))?;
    Ok(meridian_txn::TxnMeta {
        id: meridian_txn::TxnId((u128::from(t.id_hi) << 64) | u128::from(t.id_lo)),
        start: Timestamp::from_nanos(t.start),
    })
}
