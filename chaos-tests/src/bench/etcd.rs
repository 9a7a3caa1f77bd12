//! The few etcd v3 messages `leitstand bench raft` sends, written by hand
//! (field numbers from etcd 3.4's api/etcdserverpb/rpc.proto) so the
//! reference needs neither etcd's protos nor protoc. Fields the bench does
//! not read are left out; prost skips them when decoding.

use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

pub(super) const PUT: &str = "/etcdserverpb.KV/Put";
pub(super) const RANGE: &str = "/etcdserverpb.KV/Range";
pub(super) const STATUS: &str = "/etcdserverpb.Maintenance/Status";

#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct ResponseHeader {
    #[prost(uint64, tag = "1")]
    pub(super) cluster_id: u64,
    #[prost(uint64, tag = "2")]
    pub(super) member_id: u64,
    #[prost(int64, tag = "3")]
    pub(super) revision: i64,
    #[prost(uint64, tag = "4")]
    pub(super) raft_term: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub(super) key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub(super) value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct PutResponse {
    #[prost(message, optional, tag = "1")]
    pub(super) header: Option<ResponseHeader>,
}

/// A linearizable read (serializable = false goes through ReadIndex), the
/// counterpart of our ClusterStatus's `confirmed_by_quorum`.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct RangeRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub(super) key: Vec<u8>,
    #[prost(bool, tag = "7")]
    pub(super) serializable: bool,
    #[prost(bool, tag = "9")]
    pub(super) count_only: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct RangeResponse {
    #[prost(message, optional, tag = "1")]
    pub(super) header: Option<ResponseHeader>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct StatusRequest {}

#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct StatusResponse {
    #[prost(message, optional, tag = "1")]
    pub(super) header: Option<ResponseHeader>,
    #[prost(string, tag = "2")]
    pub(super) version: String,
    #[prost(uint64, tag = "4")]
    pub(super) leader: u64,
    #[prost(uint64, tag = "5")]
    pub(super) raft_index: u64,
    #[prost(uint64, tag = "6")]
    pub(super) raft_term: u64,
}

/// One unary call through tonic's generic client.
pub(super) async fn unary<Req, Resp>(
    channel: &Channel,
    path: &'static str,
    request: Req,
) -> Result<Resp, tonic::Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("channel not ready: {e}")))?;
    grpc.unary(
        tonic::Request::new(request),
        PathAndQuery::from_static(path),
        tonic_prost::ProstCodec::default(),
    )
    .await
    .map(tonic::Response::into_inner)
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    #[test]
    fn messages_use_etcds_field_numbers() {
        let put = PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        };
        assert_eq!(put.encode_to_vec(), [0x0a, 1, b'k', 0x12, 1, b'v']);
        let range = RangeRequest {
            key: b"k".to_vec(),
            serializable: false,
            count_only: true,
        };
        assert_eq!(range.encode_to_vec(), [0x0a, 1, b'k', 0x48, 1]);
        // header { member_id: 7, raft_term: 3 }, version "3.4", dbSize 9 (skipped),
        // leader 7, raftIndex 11, raftTerm 3.
        let status = StatusResponse::decode(
            &[
                0x0a, 4, 0x10, 7, 0x20, 3, 0x12, 3, b'3', b'.', b'4', 0x18, 9, 0x20, 7, 0x28, 11,
                0x30, 3,
            ][..],
        )
        .expect("a StatusResponse");
        assert_eq!(
            (
                status.header.map(|h| (h.member_id, h.raft_term)),
                status.version.as_str(),
                status.leader,
                status.raft_index,
                status.raft_term
            ),
            (Some((7, 3)), "3.4", 7, 11, 3)
        );
    }
}
