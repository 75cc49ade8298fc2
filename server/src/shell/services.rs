//! The gRPC services: thin translations between protobuf and the node core's requests.
//!
//! Every request about a transaction runs in an info-level span `txn{id=… node=… op=…}` (`op`:
//! `read`, `scan`, `commit`, `prepare`, `coordinate`, `abort`, `keepalive`) and logs its answer
//! at debug level, so a node's log lines for a transaction carry its id; the core's 2PC events
//! (`txn_id=…`) follow the decision on to the participants.
//!
//! **Deadlines.** A client says how long it waits with gRPC's `grpc-timeout` header. tonic's
//! server already races each handler against it and, when it fires, drops the handler future
//! and answers `CANCELLED` "Timeout expired". A handler here gives up a little earlier
//! ([`super::give_up_after`]): it tells the core to abandon the request (a lock wait aborts
//! its transaction in that range) and answers `DEADLINE_EXCEEDED` with what the request waited
//! for ("waited 270ms for a shared lock on key k held by transaction …"). A handler dropped
//! mid-flight cancels the same way, so neither path leaves a waiter in a lock table.

use std::sync::Arc;
use std::time::Duration;

use meridian_proto::limits::grpc_timeout;
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

    async fn admin(&self, deadline: Option<Duration>, request: Request) -> R<pb::AdminResponse> {
        Ok(GrpcResponse::new(match self.call(deadline, request).await? {
            Response::Done { detail } => pb::AdminResponse { detail, error: None },
            Response::Error(e) => pb::AdminResponse { detail: String::new(), error: Some(error_to_pb(&e)) },
            other => pb::AdminResponse { detail: String::new(), error: Some(error_to_pb(&unexpected(&other))) },
        }))
    }

    /// Runs `request` on the core for a caller who waits `deadline`; a request given up at the
    /// deadline becomes the `DEADLINE_EXCEEDED` status, saying what it waited for.
    async fn call(&self, deadline: Option<Duration>, request: Request) -> Result<Response, Status> {
        match self.core.call_within(request, deadline).await {
            Response::Error(ApiError::DeadlineExceeded(what)) => Err(Status::deadline_exceeded(what)),
            r => Ok(r),
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
        let deadline = grpc_timeout(req.metadata());
        let key = req.into_inner().key;
        Ok(GrpcResponse::new(match self.call(deadline, Request::Get { key }).await? {
            Response::Value { value, ts } => pb::GetResponse { value, ts: ts.nanos(), error: None },
            Response::Error(e) => pb::GetResponse { value: None, ts: 0, error: Some(error_to_pb(&e)) },
            other => pb::GetResponse { value: None, ts: 0, error: Some(error_to_pb(&unexpected(&other))) },
        }))
    }

    async fn scan(&self, req: GrpcRequest<pb::ScanRequest>) -> R<pb::ScanResponse> {
        let deadline = grpc_timeout(req.metadata());
        let r = req.into_inner();
        Ok(GrpcResponse::new(
            match self.call(deadline, Request::Scan { start: r.start, end: r.end, limit: r.limit }).await? {
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
        let deadline = grpc_timeout(req.metadata());
        let writes = req.into_inner().mutations.into_iter().map(|m| (m.key, m.value)).collect();
        Ok(GrpcResponse::new(match self.call(deadline, Request::Write { writes }).await? {
            Response::Written { ts } => pb::WriteResponse { ts: ts.nanos(), error: None },
            Response::Error(e) => pb::WriteResponse { ts: 0, error: Some(error_to_pb(&e)) },
            other => pb::WriteResponse { ts: 0, error: Some(error_to_pb(&unexpected(&other))) },
        }))
    }

    async fn txn_get(&self, req: GrpcRequest<pb::TxnGetRequest>) -> R<pb::TxnGetResponse> {
        let deadline = grpc_timeout(req.metadata());
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
        Ok(GrpcResponse::new(
            match self.traced(deadline, txn.id, "read", Request::TxnGet { txn, key: r.key }).await? {
                Response::TxnValue { value, ts, epoch } => {
                    pb::TxnGetResponse { value, ts: ts.nanos(), epoch, error: None }
                }
                Response::Error(e) => pb::TxnGetResponse { error: Some(error_to_pb(&e)), ..Default::default() },
                other => pb::TxnGetResponse { error: Some(error_to_pb(&unexpected(&other))), ..Default::default() },
            },
        ))
    }

    async fn txn_scan(&self, req: GrpcRequest<pb::TxnScanRequest>) -> R<pb::TxnScanResponse> {
        let deadline = grpc_timeout(req.metadata());
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
        Ok(GrpcResponse::new(match self.traced(deadline, txn.id, "scan", request).await? {
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
        let deadline = grpc_timeout(req.metadata());
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
                first_sent: r.first_sent.map(Timestamp::from_nanos),
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
        let range = r.range_id.map(GroupId);
        let request =
            Request::TxnCommit { txn, reads: r.reads, read_spans, read_epoch: r.read_epoch, writes, role, range };
        Ok(GrpcResponse::new(match self.traced(deadline, txn.id, op, request).await? {
            Response::Written { ts } | Response::Prepared { ts } => {
                pb::TxnCommitResponse { ts: ts.nanos(), error: None }
            }
            Response::Error(e) => pb::TxnCommitResponse { ts: 0, error: Some(error_to_pb(&e)) },
            other => pb::TxnCommitResponse { ts: 0, error: Some(error_to_pb(&unexpected(&other))) },
        }))
    }

    async fn txn_abort(&self, req: GrpcRequest<pb::TxnAbortRequest>) -> R<pb::TxnAbortResponse> {
        let deadline = grpc_timeout(req.metadata());
        Ok(GrpcResponse::new(
            self.txn_in_range(deadline, req.into_inner(), "abort", |txn, key, range| Request::TxnAbort {
                txn,
                key,
                range,
            })
            .await?,
        ))
    }

    async fn txn_keepalive(&self, req: GrpcRequest<pb::TxnAbortRequest>) -> R<pb::TxnAbortResponse> {
        let deadline = grpc_timeout(req.metadata());
        let make = |txn, key, _| Request::TxnKeepalive { txn, key };
        Ok(GrpcResponse::new(self.txn_in_range(deadline, req.into_inner(), "keepalive", make).await?))
    }

    async fn read(&self, req: GrpcRequest<pb::ReadRequest>) -> R<pb::ReadResponse> {
        let deadline = grpc_timeout(req.metadata());
        let r = req.into_inner();
        let request = Request::Read { start: r.start, end: r.end, limit: r.limit, ts: r.ts.map(Timestamp::from_nanos) };
        Ok(GrpcResponse::new(match self.call(deadline, request).await? {
            Response::ReadAt { rows, desc, truncated, read_ts, .. } => pb::ReadResponse {
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
        let deadline = grpc_timeout(req.metadata());
        let r = req.into_inner();
        let request = Request::RangeLookup { key: r.key, limit: r.limit.max(1) };
        Ok(GrpcResponse::new(match self.call(deadline, request).await? {
            Response::Ranges { descs, nodes, leaders } => ranges_to_pb(&descs, &nodes, &leaders),
            Response::Error(e) => pb::LookupRangeResponse { error: Some(error_to_pb(&e)), ..Default::default() },
            other => pb::LookupRangeResponse { error: Some(error_to_pb(&unexpected(&other))), ..Default::default() },
        }))
    }
}

impl Services {
    /// Calls the core in a span `txn{id node op}` and logs the answer (debug) inside it.
    async fn traced(
        &self,
        deadline: Option<Duration>,
        id: meridian_txn::TxnId,
        op: &'static str,
        request: Request,
    ) -> Result<Response, Status> {
        let span = tracing::info_span!("txn", id = %id, node = %self.core.node, op = %op);
        async move {
            let r = self.call(deadline, request).await;
            match &r {
                Err(s) => tracing::debug!(error = %s.message(), "deadline exceeded"),
                Ok(Response::Error(e)) => tracing::debug!(error = %e, "refused"),
                Ok(Response::Written { ts }) => tracing::debug!(%ts, "answered: committed"),
                Ok(Response::Prepared { ts }) => tracing::debug!(prepare_ts = %ts, "answered: prepared"),
                Ok(Response::TxnValue { epoch, .. } | Response::TxnRows { epoch, .. }) => {
                    tracing::debug!(epoch, "answered: read under a shared lock")
                }
                Ok(Response::Done { detail }) => tracing::debug!(%detail, "answered"),
                Ok(_) => tracing::debug!("answered"),
            }
            r
        }
        .instrument(span)
        .await
    }

    /// A request about one transaction in the range holding a key, answered with done or error.
    async fn txn_in_range(
        &self,
        deadline: Option<Duration>,
        r: pb::TxnAbortRequest,
        op: &'static str,
        make: fn(meridian_txn::TxnMeta, Vec<u8>, Option<GroupId>) -> Request,
    ) -> Result<pb::TxnAbortResponse, Status> {
        let txn = match txn_from_pb(r.txn) {
            Ok(t) => t,
            Err(e) => return Ok(pb::TxnAbortResponse { error: Some(error_to_pb(&e)) }),
        };
        Ok(match self.traced(deadline, txn.id, op, make(txn, r.key, r.range_id.map(GroupId))).await? {
            Response::Done { .. } => pb::TxnAbortResponse { error: None },
            Response::Error(e) => pb::TxnAbortResponse { error: Some(error_to_pb(&e)) },
            other => pb::TxnAbortResponse { error: Some(error_to_pb(&unexpected(&other))) },
        })
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for Services {
    async fn status(&self, req: GrpcRequest<pb::StatusRequest>) -> R<pb::StatusResponse> {
        Ok(GrpcResponse::new(match self.call(grpc_timeout(req.metadata()), Request::Status).await? {
            Response::Status(s) => status_to_pb(&s),
            Response::Error(e) => pb::StatusResponse { error: Some(error_to_pb(&e)), ..Default::default() },
            other => pb::StatusResponse { error: Some(error_to_pb(&unexpected(&other))), ..Default::default() },
        }))
    }

    async fn cluster_view(&self, req: GrpcRequest<pb::ClusterViewRequest>) -> R<pb::LookupRangeResponse> {
        Ok(GrpcResponse::new(match self.call(grpc_timeout(req.metadata()), Request::ClusterView).await? {
            Response::Ranges { descs, nodes, leaders } => ranges_to_pb(&descs, &nodes, &leaders),
            Response::Error(e) => pb::LookupRangeResponse { error: Some(error_to_pb(&e)), ..Default::default() },
            other => pb::LookupRangeResponse { error: Some(error_to_pb(&unexpected(&other))), ..Default::default() },
        }))
    }

    async fn join(&self, req: GrpcRequest<pb::JoinRequest>) -> R<pb::JoinResponse> {
        let deadline = grpc_timeout(req.metadata());
        let Some(info) = req.into_inner().node else {
            return Err(Status::invalid_argument("join needs the joining node's addresses"));
        };
        if info.addr.is_empty() {
            return Err(Status::invalid_argument("join needs the joining node's gRPC address"));
        }
        let resp = self.call(deadline, Request::Join { info: info.into() }).await?;
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
        let meta = match self.call(deadline, Request::ClusterView).await? {
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
        let deadline = grpc_timeout(req.metadata());
        self.admin(deadline, Request::Split { key: req.into_inner().key }).await
    }

    async fn merge(&self, req: GrpcRequest<pb::MergeRequest>) -> R<pb::AdminResponse> {
        let deadline = grpc_timeout(req.metadata());
        self.admin(deadline, Request::Merge { group: GroupId(req.into_inner().group) }).await
    }

    async fn move_replica(&self, req: GrpcRequest<pb::MoveReplicaRequest>) -> R<pb::AdminResponse> {
        let deadline = grpc_timeout(req.metadata());
        let r = req.into_inner();
        let request =
            Request::MoveReplica { group: GroupId(r.group), from: NodeId(r.from_node), to: NodeId(r.to_node) };
        self.admin(deadline, request).await
    }

    async fn transfer_leader(&self, req: GrpcRequest<pb::TransferLeaderRequest>) -> R<pb::AdminResponse> {
        let deadline = grpc_timeout(req.metadata());
        let r = req.into_inner();
        self.admin(deadline, Request::TransferLeader { group: GroupId(r.group), to: NodeId(r.to_node) }).await
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

#[cfg(test)]
mod tests {
    use super::*;

    fn header(v: Option<&str>) -> tonic::metadata::MetadataMap {
        let mut m = tonic::metadata::MetadataMap::new();
        if let Some(v) = v {
            m.insert("grpc-timeout", v.parse().expect("ASCII"));
        }
        m
    }

    #[test]
    fn grpc_timeout_reads_every_unit_and_refuses_what_tonic_ignores() {
        let ms = Duration::from_millis;
        let table = [
            (Some("1H"), Some(Duration::from_secs(3_600))),
            (Some("2M"), Some(Duration::from_secs(120))),
            (Some("3S"), Some(Duration::from_secs(3))),
            (Some("300m"), Some(ms(300))),
            (Some("99999999u"), Some(Duration::from_micros(99_999_999))),
            (Some("7n"), Some(Duration::from_nanos(7))),
            (Some("0m"), Some(Duration::ZERO)),
            (None, None),
            (Some(""), None),
            (Some("m"), None),
            (Some("123456789m"), None), // more than 8 digits
            (Some("12x"), None),
            (Some("-1m"), None),
            (Some("1.5S"), None),
        ];
        for (v, want) in table {
            assert_eq!(grpc_timeout(&header(v)), want, "grpc-timeout: {v:?}");
        }
    }

    #[test]
    fn grpc_timeout_reads_what_tonic_clients_send() {
        for d in [
            Duration::from_millis(300),
            Duration::from_secs(12),
            Duration::from_nanos(7),
            Duration::from_secs(3 * 3_600),
        ] {
            let mut r = GrpcRequest::new(());
            r.set_timeout(d);
            assert_eq!(grpc_timeout(r.metadata()), Some(d), "{:?}", r.metadata());
        }
    }
}
