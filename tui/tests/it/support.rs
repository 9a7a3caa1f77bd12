//! Fixtures: a PKI in a temp dir, operator.toml, and stand-in controllers
//! serving the Operator API over real mTLS with a scripted answer to writes.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use leitstand_proto::identity::{PeerKind, require_kind};
use leitstand_proto::pki::{self, IssueRequest, Validity};
use leitstand_proto::tls::{ServerTls, incoming};
use leitstand_proto::v1::operator_server::{Operator, OperatorServer};
use leitstand_proto::v1::{self};
use leitstand_tui::{OperatorClient, OperatorConfig};
use tonic::{Request, Response, Status};

pub const TRUST_DOMAIN: &str = "test.leitstand.invalid";

/// A CA with controller certificates "1" and "2" for 127.0.0.1, and an
/// operator "alice".
pub struct TestPki {
    pub root: tempfile::TempDir,
}

impl TestPki {
    pub fn new() -> Self {
        let root = tempfile::tempdir().expect("temp dir");
        pki::init(&root.path().join("pki"), TRUST_DOMAIN, false).expect("pki init");
        let pki = TestPki { root };
        pki.issue(PeerKind::Controller, "1");
        pki.issue(PeerKind::Controller, "2");
        pki.issue(PeerKind::Operator, "alice");
        pki
    }

    pub fn dir(&self) -> PathBuf {
        self.root.path().join("pki")
    }

    pub fn issue(&self, kind: PeerKind, name: &str) {
        let controller = kind == PeerKind::Controller;
        pki::issue(
            &self.dir(),
            &IssueRequest {
                kind,
                name: name.to_owned(),
                dns: vec![],
                ips: if controller {
                    vec![std::net::Ipv4Addr::LOCALHOST.into()]
                } else {
                    vec![]
                },
                validity: Validity::days_from_now(1),
                force: true,
            },
        )
        .expect("pki issue");
    }

    /// Writes operator.toml for `<kind>-<name>` listing `controllers`.
    pub fn operator_config(&self, kind: &str, name: &str, controllers: &[&str]) -> OperatorConfig {
        let path = self.root.path().join("operator.toml");
        let listed = controllers
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", ");
        std::fs::write(
            &path,
            format!(
                "controllers = [{listed}]\n[tls]\nca = \"pki/ca.pem\"\ncert = \"pki/{kind}-{name}.pem\"\nkey = \"pki/{kind}-{name}.key\"\ncrl = \"pki/crl.pem\"\n"
            ),
        )
        .expect("write operator.toml");
        OperatorConfig::load(&path).expect("valid operator.toml")
    }

    /// A client for operator alice.
    pub fn client(&self, controllers: &[&str]) -> OperatorClient {
        OperatorClient::new(&self.operator_config("operator", "alice", controllers))
            .expect("operator client")
    }
}

/// How a stand-in answers writes (AddMember, RemoveMember, TransferLeader, Probe).
#[derive(Clone, Debug)]
pub enum Writes {
    /// As the leader.
    Serve,
    /// As a follower: `not_leader(id, address)`.
    NotLeader(Option<u64>, Option<String>),
    /// With this status.
    Fail(Status),
}

/// A stand-in controller `node_id`: reads are answered with its own view,
/// writes as `writes` says; every call is counted.
pub struct StandIn {
    pub address: String,
    node_id: u64,
    writes: Arc<Mutex<Writes>>,
    calls: Arc<AtomicUsize>,
    server: tokio::task::JoinHandle<()>,
}

impl StandIn {
    /// An ephemeral port to `serve` on later, so that two stand-ins can
    /// name each other's address.
    pub async fn listener() -> (tokio::net::TcpListener, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        (listener, address)
    }

    pub fn serve(
        pki: &TestPki,
        node_id: u64,
        listener: tokio::net::TcpListener,
        writes: Writes,
    ) -> StandIn {
        let address = listener.local_addr().expect("address").to_string();
        let tls = Arc::new(
            ServerTls::load(pki::peer_files(
                &pki.dir(),
                PeerKind::Controller,
                &node_id.to_string(),
            ))
            .expect("server TLS"),
        );
        let writes = Arc::new(Mutex::new(writes));
        let calls = Arc::new(AtomicUsize::new(0));
        let service = Service {
            node_id,
            address: address.clone(),
            writes: writes.clone(),
            calls: calls.clone(),
        };
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(OperatorServer::new(service))
                .serve_with_incoming(incoming(listener, tls))
                .await;
        });
        StandIn {
            address,
            node_id,
            writes,
            calls,
            server,
        }
    }

    pub async fn start(pki: &TestPki, node_id: u64, writes: Writes) -> StandIn {
        let (listener, _) = StandIn::listener().await;
        StandIn::serve(pki, node_id, listener, writes)
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn set_writes(&self, writes: Writes) {
        *self.writes.lock().expect("writes") = writes;
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// An address nothing listens on: bound, then released.
pub async fn refused_address() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address: SocketAddr = listener.local_addr().expect("address");
    drop(listener);
    address.to_string()
}

struct Service {
    node_id: u64,
    address: String,
    writes: Arc<Mutex<Writes>>,
    calls: Arc<AtomicUsize>,
}

impl Service {
    fn view(&self, leader: bool) -> v1::ClusterStatusReply {
        v1::ClusterStatusReply {
            members: vec![v1::Member {
                node_id: self.node_id,
                address: self.address.clone(),
                voter: true,
                match_index: 7,
                lag: 0,
                last_contact_ms_ago: -1,
                outgoing_voter: false,
                catching_up: false,
            }],
            leader_id: if leader { self.node_id } else { 0 },
            term: 1,
            commit_index: 7,
            applied_index: 7,
            answered_by: self.node_id,
            confirmed_by_quorum: leader,
            joint_configuration: false,
            snapshot_index: 0,
            first_index: 1,
            last_index: 7,
            state_digest: String::new(),
            digest_applied_index: 0,
        }
    }

    /// Counts the call, requires an operator certificate, and answers a
    /// write as scripted.
    fn write<T>(&self, request: &Request<T>) -> Result<(), Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        require_kind(request, PeerKind::Operator)?;
        match self.writes.lock().expect("writes").clone() {
            Writes::Serve => Ok(()),
            Writes::NotLeader(id, address) => Err(leitstand_proto::operator::not_leader(
                id,
                address.as_deref(),
            )),
            Writes::Fail(status) => Err(status),
        }
    }
}

type Stream<T> = tokio_stream::Empty<Result<T, Status>>;

#[tonic::async_trait]
impl Operator for Service {
    type WatchStream = Stream<v1::WatchEvent>;
    type AuditStream = Stream<v1::AuditEntry>;

    async fn cluster_status(
        &self,
        request: Request<v1::ClusterStatusRequest>,
    ) -> Result<Response<v1::ClusterStatusReply>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        require_kind(&request, PeerKind::Operator)?;
        let leader = matches!(*self.writes.lock().expect("writes"), Writes::Serve);
        Ok(Response::new(self.view(leader)))
    }

    async fn add_member(
        &self,
        request: Request<v1::AddMemberRequest>,
    ) -> Result<Response<v1::ClusterStatusReply>, Status> {
        self.write(&request)?;
        let mut view = self.view(true);
        let added = request.into_inner();
        view.members.push(v1::Member {
            node_id: added.node_id,
            address: added.address,
            voter: false,
            match_index: 0,
            lag: 7,
            last_contact_ms_ago: 5,
            outgoing_voter: false,
            catching_up: true,
        });
        Ok(Response::new(view))
    }

    async fn remove_member(
        &self,
        request: Request<v1::RemoveMemberRequest>,
    ) -> Result<Response<v1::ClusterStatusReply>, Status> {
        self.write(&request)?;
        Ok(Response::new(self.view(true)))
    }

    async fn transfer_leader(
        &self,
        request: Request<v1::TransferLeaderRequest>,
    ) -> Result<Response<v1::ClusterStatusReply>, Status> {
        self.write(&request)?;
        Ok(Response::new(self.view(true)))
    }

    async fn probe(
        &self,
        request: Request<v1::ProbeRequest>,
    ) -> Result<Response<v1::ProbeReply>, Status> {
        self.write(&request)?;
        Ok(Response::new(v1::ProbeReply {
            committed_index: 8,
            leader_id: self.node_id,
            payload: request.into_inner().payload,
        }))
    }

    async fn watch(
        &self,
        _: Request<v1::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn status(&self, _: Request<v1::StatusRequest>) -> Result<Response<v1::View>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn approve(
        &self,
        _: Request<v1::ApproveRequest>,
    ) -> Result<Response<v1::OperatorActionReply>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn reject(
        &self,
        _: Request<v1::RejectRequest>,
    ) -> Result<Response<v1::OperatorActionReply>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn switch(
        &self,
        _: Request<v1::SwitchRequest>,
    ) -> Result<Response<v1::OperatorActionReply>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn freeze(
        &self,
        _: Request<v1::FreezeRequest>,
    ) -> Result<Response<v1::OperatorActionReply>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn unfreeze(
        &self,
        _: Request<v1::UnfreezeRequest>,
    ) -> Result<Response<v1::OperatorActionReply>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn apply_runbook(
        &self,
        _: Request<v1::ApplyRunbookRequest>,
    ) -> Result<Response<v1::ApplyRunbookReply>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn runbook(
        &self,
        _: Request<v1::RunbookRequest>,
    ) -> Result<Response<v1::RunbookReply>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn audit(
        &self,
        _: Request<v1::AuditRequest>,
    ) -> Result<Response<Self::AuditStream>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
}
