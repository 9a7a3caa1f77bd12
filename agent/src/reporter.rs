//! The agent's one Session stream to the controller leader.
//!
//! Reports are numbered per agent process (incarnation) from 1 and kept in
//! a bounded buffer until acknowledged; on overflow the oldest is dropped
//! and counted. After Welcome the agent resends, in order, every buffered
//! report after `last_acked_seq`. Without a controller it tries the next
//! configured address, or the leader a follower named, with exponential
//! backoff and jitter; reports keep being taken meanwhile, also while a
//! connection is being set up.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use leitstand_proto::domain::bounds;
use leitstand_proto::tls::ClientTls;
use leitstand_proto::v1::agent_gateway_client::AgentGatewayClient;
use leitstand_proto::v1::{self, agent_message, controller_message};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_stream::wrappers::ReceiverStream;

use crate::collect::HostCollector;
use crate::config::AgentConfig;
use crate::error_chain;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A session that lasted this long resets the backoff.
const HEALTHY_SESSION: Duration = Duration::from_secs(10);
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// Leader hints followed in a row before the agent suspects stale hints
/// (followers naming each other) and falls back to backoff.
const MAX_HINTS_IN_A_ROW: u32 = 3;

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Exponential backoff with jitter: the delay is uniform between the floor
/// and min(max, floor·2^attempt), so agents that lost the same controller
/// do not come back in lockstep; the floor keeps a lost controller from
/// being hammered.
struct Backoff {
    attempt: u32,
}

impl Backoff {
    fn next_delay(&mut self) -> Duration {
        let ceiling = BACKOFF_MIN
            .saturating_mul(1u32.checked_shl(self.attempt.min(16)).unwrap_or(u32::MAX))
            .min(BACKOFF_MAX);
        self.attempt = self.attempt.saturating_add(1);
        let span = ceiling.saturating_sub(BACKOFF_MIN).as_millis() as u64;
        BACKOFF_MIN + Duration::from_millis(fastrand::u64(0..=span))
    }
    fn reset(&mut self) {
        self.attempt = 0;
    }
}

enum SessionEnd {
    Stopped,
    /// A follower answered; go to the leader it named, if any.
    NotLeader {
        hint: Option<String>,
    },
    Failed(String),
}

pub(crate) struct Reporter {
    config: AgentConfig,
    tls: Arc<ClientTls>,
    collector: HostCollector,
    incarnation: u64,
    next_seq: u64,
    buffer: VecDeque<v1::Report>,
    dropped: u64,
}

impl Reporter {
    pub(crate) fn new(config: AgentConfig, tls: Arc<ClientTls>, collector: HostCollector) -> Self {
        Reporter {
            config,
            tls,
            collector,
            incarnation: u64::try_from(unix_ms()).unwrap_or(1).max(1),
            next_seq: 1,
            buffer: VecDeque::new(),
            dropped: 0,
        }
    }

    /// Takes a report and keeps it until acknowledged.
    fn take_report(&mut self) -> v1::Report {
        let report = v1::Report {
            seq: self.next_seq,
            observed_at_unix_ms: unix_ms(),
            host: Some(self.collector.collect()),
            checks: Vec::new(),
        };
        self.next_seq += 1;
        if self.buffer.len() >= self.config.buffer_reports {
            self.buffer.pop_front();
            self.dropped += 1;
            tracing::warn!(
                dropped_total = self.dropped,
                capacity = self.config.buffer_reports,
                "report buffer full; dropped the oldest unacknowledged report"
            );
        }
        self.buffer.push_back(report.clone());
        report
    }

    fn hello(&self) -> v1::AgentMessage {
        v1::AgentMessage {
            kind: Some(agent_message::Kind::Hello(v1::Hello {
                agent_id: self.config.id.to_string(),
                version: leitstand_proto::VERSION.to_owned(),
                checks: Vec::new(),
                actions: Vec::new(),
                report_interval_ms: u32::try_from(self.config.interval.as_millis())
                    .unwrap_or(u32::MAX),
                incarnation: self.incarnation,
            })),
        }
    }

    pub(crate) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.config.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut backoff = Backoff { attempt: 0 };
        let mut next_controller = 0usize;
        let mut leader_hint: Option<String> = None;
        let mut hints_in_a_row = 0u32;
        loop {
            let address = leader_hint.take().unwrap_or_else(|| {
                let a = self.config.controllers[next_controller % self.config.controllers.len()]
                    .clone();
                next_controller = next_controller.wrapping_add(1);
                a
            });
            let started = Instant::now();
            let end = self.session(&address, &mut tick, &mut stop).await;
            if started.elapsed() >= HEALTHY_SESSION {
                backoff.reset();
            }
            let delay = match end {
                SessionEnd::Stopped => return,
                SessionEnd::NotLeader { hint: Some(hint) }
                    if hints_in_a_row < MAX_HINTS_IN_A_ROW =>
                {
                    hints_in_a_row += 1;
                    tracing::info!(controller = %address, leader = %hint, "following the leader hint");
                    leader_hint = Some(hint);
                    continue;
                }
                SessionEnd::NotLeader { .. } => {
                    hints_in_a_row = 0;
                    let delay = backoff.next_delay();
                    tracing::info!(controller = %address, "controller knows no leader; trying the next in {delay:?}");
                    delay
                }
                SessionEnd::Failed(why) => {
                    hints_in_a_row = 0;
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        controller = %address,
                        buffered = self.buffer.len(),
                        "controller unavailable: {why}; retrying in {delay:?}"
                    );
                    delay
                }
            };
            // Keep taking reports while waiting, so the gap can be replayed.
            let until = tokio::time::sleep(delay);
            tokio::pin!(until);
            loop {
                tokio::select! {
                    () = &mut until => break,
                    _ = tick.tick() => { self.take_report(); }
                    () = stopped(&mut stop) => return,
                }
            }
        }
    }

    /// Awaits `work` while taking a report at every tick; `None` on stop.
    async fn reporting_while<T>(
        &mut self,
        tick: &mut tokio::time::Interval,
        stop: &mut watch::Receiver<bool>,
        work: impl Future<Output = T>,
    ) -> Option<T> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return Some(out),
                _ = tick.tick() => { self.take_report(); }
                () = stopped(stop) => return None,
            }
        }
    }

    async fn session(
        &mut self,
        address: &str,
        tick: &mut tokio::time::Interval,
        stop: &mut watch::Receiver<bool>,
    ) -> SessionEnd {
        let tls = self.tls.clone();
        let hello = self.hello();
        let (outbound, outbound_rx) = mpsc::channel::<v1::AgentMessage>(64);
        let opening = async move {
            let channel = tls.channel(address).await.map_err(|e| error_chain(&e))?;
            let mut client = AgentGatewayClient::new(channel)
                .max_decoding_message_size(bounds::MAX_AGENT_MESSAGE_BYTES)
                .max_encoding_message_size(bounds::MAX_AGENT_MESSAGE_BYTES);
            let mut inbound = client
                .session(ReceiverStream::new(outbound_rx))
                .await
                .map_err(|status| format!("{:?}: {}", status.code(), status.message()))?
                .into_inner();
            let first = tokio::time::timeout(WELCOME_TIMEOUT, inbound.message()).await;
            Ok::<_, String>((inbound, first))
        };
        if outbound.send(hello).await.is_err() {
            return SessionEnd::Failed("outbound stream closed".into());
        }
        let (mut inbound, first) = match self.reporting_while(tick, stop, opening).await {
            None => return SessionEnd::Stopped,
            Some(Err(why)) => return SessionEnd::Failed(why),
            Some(Ok(opened)) => opened,
        };
        let welcome = match first {
            Err(_) => return SessionEnd::Failed("no Welcome within 10 s".into()),
            Ok(Err(status)) => {
                return SessionEnd::Failed(format!("{:?}: {}", status.code(), status.message()));
            }
            Ok(Ok(None)) => {
                return SessionEnd::Failed(
                    "the controller closed the stream before Welcome".into(),
                );
            }
            Ok(Ok(Some(v1::ControllerMessage { kind }))) => match kind {
                Some(controller_message::Kind::Welcome(welcome)) => welcome,
                Some(controller_message::Kind::NotLeader(not_leader)) => {
                    let hint =
                        Some(not_leader.leader_hint).filter(|h| !h.is_empty() && h != address);
                    return SessionEnd::NotLeader { hint };
                }
                _ => {
                    return SessionEnd::Failed(
                        "the controller's first message was not Welcome".into(),
                    );
                }
            },
        };
        self.buffer.retain(|r| r.seq > welcome.last_acked_seq);
        tracing::info!(
            controller = %address,
            node_id = welcome.node_id,
            controller_version = %welcome.controller_version,
            resending = self.buffer.len(),
            "connected to controller"
        );
        let mut first_ack_logged = false;
        for report in self.buffer.clone() {
            if outbound.send(report_message(report)).await.is_err() {
                return SessionEnd::Failed("outbound stream closed".into());
            }
        }
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let report = self.take_report();
                    if outbound.send(report_message(report)).await.is_err() {
                        return SessionEnd::Failed("outbound stream closed".into());
                    }
                }
                next = inbound.message() => match next {
                    Ok(Some(v1::ControllerMessage { kind: Some(kind) })) => match kind {
                        controller_message::Kind::Ack(ack) => {
                            while self.buffer.front().is_some_and(|r| r.seq <= ack.seq) {
                                self.buffer.pop_front();
                            }
                            if !first_ack_logged {
                                first_ack_logged = true;
                                tracing::info!(controller = %address, seq = ack.seq, "reports acknowledged");
                            }
                        }
                        controller_message::Kind::ExecuteAction(request) => {
                            let refusal = refuse_action(request);
                            if outbound.send(refusal).await.is_err() {
                                return SessionEnd::Failed("outbound stream closed".into());
                            }
                        }
                        controller_message::Kind::NotLeader(not_leader) => {
                            let hint = Some(not_leader.leader_hint).filter(|h| !h.is_empty());
                            return SessionEnd::NotLeader { hint };
                        }
                        controller_message::Kind::Welcome(_) => {
                            return SessionEnd::Failed("a second Welcome on one session".into());
                        }
                    },
                    Ok(Some(v1::ControllerMessage { kind: None })) => {
                        return SessionEnd::Failed("an empty message from the controller".into());
                    }
                    Ok(None) => return SessionEnd::Failed("the controller closed the stream".into()),
                    Err(status) => return SessionEnd::Failed(format!("{:?}: {}", status.code(), status.message())),
                },
                () = stopped(stop) => return SessionEnd::Stopped,
            }
        }
    }
}

fn report_message(report: v1::Report) -> v1::AgentMessage {
    v1::AgentMessage {
        kind: Some(agent_message::Kind::Report(report)),
    }
}

/// This agent has no actions configured yet, so every request is outside
/// its allowlist (DESIGN.md §7): refuse, and say so.
fn refuse_action(request: v1::ExecuteAction) -> v1::AgentMessage {
    tracing::warn!(
        decision = %request.decision_id,
        service = %request.service,
        action = %request.action,
        "refused an action that is not in this agent's allowlist"
    );
    v1::AgentMessage {
        kind: Some(agent_message::Kind::ActionResult(v1::ActionResult {
            reason: format!(
                "action {:?} is not in this agent's allowlist",
                request.action
            ),
            decision_id: request.decision_id,
            service: request.service,
            action: request.action,
            fencing_token: request.fencing_token,
            outcome: v1::ActionOutcome::Refused as i32,
            ..Default::default()
        })),
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_and_stays_within_it() {
        let mut backoff = Backoff { attempt: 0 };
        for _ in 0..100 {
            let d = backoff.next_delay();
            assert!(
                (BACKOFF_MIN..=BACKOFF_MAX).contains(&d),
                "{d:?} outside its bounds"
            );
        }
        backoff.reset();
        assert!(
            backoff.next_delay() == BACKOFF_MIN,
            "first delay after reset is the minimum"
        );
    }
}
