//! Agents the harness plays itself, over their own mTLS sessions, for the
//! security drills: one whose clock is skewed, and one that sends what no
//! well-behaved agent sends (oversized, out-of-bounds, replayed, forged).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use leitstand_proto::identity::PeerKind;
use leitstand_proto::pki;
use leitstand_proto::tls::ClientTls;
use leitstand_proto::v1::agent_gateway_client::AgentGatewayClient;
use leitstand_proto::v1::{self, agent_message, controller_message};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

const ANSWER_WITHIN: Duration = Duration::from_secs(3);
const MAX_MESSAGE_BYTES: usize = 8 << 20;

pub(crate) fn tls(
    pki_dir: &std::path::Path,
    kind: PeerKind,
    name: &str,
) -> anyhow::Result<Arc<ClientTls>> {
    let tls = ClientTls::load(pki::peer_files(pki_dir, kind, name))
        .with_context(|| format!("load the {kind:?} certificate {name}"))?;
    Ok(Arc::new(tls))
}

/// One open Session.
pub(crate) struct Session {
    pub(crate) outbound: mpsc::Sender<v1::AgentMessage>,
    pub(crate) inbound: Streaming<v1::ControllerMessage>,
}

pub(crate) fn hello(agent_id: &str, checks: &[&str]) -> v1::AgentMessage {
    v1::AgentMessage {
        kind: Some(agent_message::Kind::Hello(v1::Hello {
            agent_id: agent_id.into(),
            version: "drill".into(),
            checks: checks.iter().map(|c| (*c).to_owned()).collect(),
            actions: vec![],
            report_interval_ms: 200,
            incarnation: super::unix_ms() as u64,
        })),
    }
}

pub(crate) fn report(seq: u64, at_unix_ms: i64, checks: Vec<v1::CheckResult>) -> v1::AgentMessage {
    v1::AgentMessage {
        kind: Some(agent_message::Kind::Report(v1::Report {
            seq,
            observed_at_unix_ms: at_unix_ms,
            host: None,
            checks,
        })),
    }
}

pub(crate) fn check(name: &str, ok: bool, at_unix_ms: i64) -> v1::CheckResult {
    v1::CheckResult {
        name: name.into(),
        status: if ok {
            v1::CheckStatus::Ok as i32
        } else {
            v1::CheckStatus::Critical as i32
        },
        summary: if ok {
            "connected"
        } else {
            "connection refused"
        }
        .into(),
        observed_at_unix_ms: at_unix_ms,
        ..Default::default()
    }
}

/// What the controller answered to the first message.
pub(crate) enum Opening {
    Welcome(Box<Session>),
    NotLeader(String),
    Refused(tonic::Status),
}

/// Opens a Session at `address` and sends `first`.
pub(crate) async fn open(
    tls: &Arc<ClientTls>,
    address: &str,
    first: v1::AgentMessage,
) -> anyhow::Result<Opening> {
    let channel = tls
        .channel(address)
        .await
        .map_err(|e| anyhow!("connect to {address}: {e}"))?;
    let mut client = AgentGatewayClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let (outbound, rx) = mpsc::channel(256);
    outbound
        .send(first)
        .await
        .map_err(|_| anyhow!("the outbound stream closed"))?;
    let call = tokio::time::timeout(ANSWER_WITHIN, client.session(ReceiverStream::new(rx))).await;
    let mut inbound = match call {
        Err(_) => bail!("{address}: no answer to Session within {ANSWER_WITHIN:?}"),
        Ok(Err(status)) => return Ok(Opening::Refused(status)),
        Ok(Ok(response)) => response.into_inner(),
    };
    match tokio::time::timeout(ANSWER_WITHIN, inbound.message()).await {
        Err(_) => bail!("{address}: no first answer within {ANSWER_WITHIN:?}"),
        Ok(Err(status)) => Ok(Opening::Refused(status)),
        Ok(Ok(None)) => Ok(Opening::Refused(tonic::Status::unavailable(
            "closed before Welcome",
        ))),
        Ok(Ok(Some(message))) => match message.kind {
            Some(controller_message::Kind::Welcome(_)) => {
                Ok(Opening::Welcome(Box::new(Session { outbound, inbound })))
            }
            Some(controller_message::Kind::NotLeader(n)) => Ok(Opening::NotLeader(n.leader_hint)),
            other => bail!("{address}: unexpected first answer {other:?}"),
        },
    }
}

/// Opens a Session on the leader, following hints from `first_address`.
pub(crate) async fn open_on_leader(
    tls: &Arc<ClientTls>,
    addresses: &[String],
    agent_id: &str,
    checks: &[&str],
) -> anyhow::Result<Session> {
    let mut tried = Vec::new();
    for start in addresses {
        let mut address = start.clone();
        for _ in 0..3 {
            match open(tls, &address, hello(agent_id, checks)).await {
                Ok(Opening::Welcome(session)) => return Ok(*session),
                Ok(Opening::NotLeader(hint)) if !hint.is_empty() => address = hint,
                Ok(Opening::NotLeader(_)) => {
                    tried.push(format!("{address}: not leader, no hint"));
                    break;
                }
                Ok(Opening::Refused(status)) => {
                    tried.push(format!(
                        "{address}: {:?}: {}",
                        status.code(),
                        status.message()
                    ));
                    break;
                }
                Err(e) => {
                    tried.push(format!("{e:#}"));
                    break;
                }
            }
        }
    }
    bail!("no leader welcomed {agent_id}: {}", tried.join("; "))
}

impl std::fmt::Debug for Opening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Opening::Welcome(_) => f.write_str("Welcome"),
            Opening::NotLeader(hint) => write!(f, "NotLeader({hint:?})"),
            Opening::Refused(status) => {
                write!(f, "Refused({:?}: {})", status.code(), status.message())
            }
        }
    }
}

impl Session {
    /// Sends and waits for the answer to it: an Ack, or the stream's end.
    pub(crate) async fn send(
        &mut self,
        message: v1::AgentMessage,
    ) -> Result<Option<u64>, tonic::Status> {
        self.outbound
            .send(message)
            .await
            .map_err(|_| tonic::Status::unavailable("the outbound stream closed"))?;
        self.next_ack().await
    }

    /// The next Ack's seq; None when the controller answered nothing in time.
    pub(crate) async fn next_ack(&mut self) -> Result<Option<u64>, tonic::Status> {
        loop {
            match tokio::time::timeout(ANSWER_WITHIN, self.inbound.message()).await {
                Err(_) => return Ok(None),
                Ok(Err(status)) => return Err(status),
                Ok(Ok(None)) => {
                    return Err(tonic::Status::unavailable(
                        "the controller closed the stream",
                    ));
                }
                Ok(Ok(Some(m))) => {
                    if let Some(controller_message::Kind::Ack(ack)) = m.kind {
                        return Ok(Some(ack.seq));
                    }
                }
            }
        }
    }
}
