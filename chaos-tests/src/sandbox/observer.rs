//! Watches every controller directly, ten times a second: who it says
//! leads in which term, and its state digest at its applied index. The
//! samples are the evidence for election safety and replica convergence.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leitstand_proto::tls::ClientTls;
use leitstand_proto::v1::ClusterStatusRequest;
use leitstand_proto::v1::operator_client::OperatorClient;
use tonic::transport::Channel;

const EVERY: Duration = Duration::from_millis(100);
const ANSWER_WITHIN: Duration = Duration::from_millis(400);
/// Enough for a long drill; older samples are dropped first.
const MAX_SAMPLES: usize = 200_000;

#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Sample {
    pub(crate) unix_ms: i64,
    pub(crate) node: u64,
    pub(crate) term: u64,
    pub(crate) leader: u64,
    pub(crate) confirmed: bool,
    pub(crate) applied: u64,
    pub(crate) digest_index: u64,
    pub(crate) digest: String,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Observations(Arc<Mutex<Vec<Sample>>>);

impl Observations {
    fn push(&self, sample: Sample) {
        if let Ok(mut samples) = self.0.lock() {
            if samples.len() >= MAX_SAMPLES {
                samples.drain(..MAX_SAMPLES / 10);
            }
            samples.push(sample);
        }
    }

    /// Every sample so far, leaving none.
    pub(crate) fn take(&self) -> Vec<Sample> {
        self.0
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default()
    }

    pub(crate) fn samples(&self) -> Vec<Sample> {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The latest sample of each node, in words.
    pub(crate) fn describe_latest(&self) -> String {
        let mut latest: BTreeMap<u64, Sample> = BTreeMap::new();
        for s in self.samples() {
            latest.insert(s.node, s);
        }
        if latest.is_empty() {
            return "none".into();
        }
        latest
            .values()
            .map(|s| {
                format!(
                    "c{}: term {} leader {} applied {}{}",
                    s.node,
                    s.term,
                    s.leader,
                    s.applied,
                    if s.confirmed { " (confirmed)" } else { "" }
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// One polling task per controller; abort the handle to stop them all.
pub(super) fn spawn(
    channels: Vec<(u64, Option<Channel>)>,
    tls: Arc<ClientTls>,
    addresses: Vec<(u64, SocketAddr)>,
    observations: Observations,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for (node, channel) in channels {
            let observations = observations.clone();
            let tls = tls.clone();
            let address = addresses
                .iter()
                .find(|(id, _)| *id == node)
                .map(|(_, a)| a.to_string())
                .unwrap_or_default();
            tasks.spawn(async move {
                let mut channel = channel;
                let mut tick = tokio::time::interval(EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(current) = channel.clone() else {
                        channel = tls.channel(&address).await.ok();
                        continue;
                    };
                    let mut client = OperatorClient::new(current);
                    let answer = tokio::time::timeout(
                        ANSWER_WITHIN,
                        client.cluster_status(ClusterStatusRequest {}),
                    )
                    .await;
                    if let Ok(Ok(reply)) = answer {
                        let r = reply.into_inner();
                        observations.push(Sample {
                            unix_ms: super::unix_ms(),
                            node,
                            term: r.term,
                            leader: r.leader_id,
                            confirmed: r.confirmed_by_quorum,
                            applied: r.applied_index,
                            digest_index: r.digest_applied_index,
                            digest: r.state_digest,
                        });
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    })
}
